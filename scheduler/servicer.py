"""The public Compute service. Reads come from the watch-fed cache; writes go to etcd
(claims, records) and to the agents; decisions are scheduler/decide.py's."""

from __future__ import annotations

import dataclasses
import logging
import queue
import time
import uuid as uuidlib
from collections.abc import Iterator
from concurrent import futures

from computed.api import agent_pb2, compute_pb2, compute_pb2_grpc, types_pb2
from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Delete, Put
from computed.store.records import (
    AddressRecord,
    FlavorRecord,
    HostAdminRecord,
    InstanceRecord,
    InstanceSpec,
)
from computed.vmm.config import CMDLINE_MAX
from scheduler import views
from scheduler.addresses import InstanceNetwork, mac_for
from scheduler.build import AgentClients, build
from scheduler.catalog import Catalog, CatalogError
from scheduler.claims import Placement, claim, release
from scheduler.decide import DEFAULT_CONFIG, Decision, choose_hosts, group_member_hosts
from scheduler.errors import Invalid, NotFound, NoValidHost, Refused, maps_errors
from scheduler.host_cache import ClusterView, HostCache
from scheduler.host_table import HostTable
from scheduler.naming import allocate_names
from scheduler.placement import PlacementConfig, Request

log = logging.getLogger("computed.scheduler")
MAX_COUNT = 1000
_CLAIM_ROUNDS = 10
_AGENT_TIMEOUT = 30.0


def merge_agent_reply(record: InstanceRecord, reply: types_pb2.Instance) -> InstanceRecord:
    """The record as the agent's answer says it is now."""
    return dataclasses.replace(
        record,
        status=types_pb2.InstanceStatus.Name(reply.status).removeprefix("STATUS_"),
        power_state=types_pb2.PowerState.Name(reply.power_state).removeprefix("POWER_STATE_"),
        pid=reply.pid or None,
        fault=reply.fault,
        updated_at=reply.updated_at or record.updated_at,
    )


class ComputeServicer(compute_pb2_grpc.ComputeServicer):
    def __init__(
        self,
        store: Store,
        cache: HostCache,
        agents: AgentClients,
        placement: PlacementConfig = DEFAULT_CONFIG,
        network: InstanceNetwork | None = None,
    ) -> None:
        self.network = network
        self.store = store
        self.cache = cache
        self.agents = agents
        self.placement = placement
        self.table = HostTable()  # guarded by cache.lock, like the view it mirrors
        self.catalog = Catalog(store)
        self.builders = futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="build")
        self._watchers: list[queue.Queue] = []
        cache.on_change = self._notify_watchers

    # --- lookups ---------------------------------------------------------------
    def _synced_view(self):
        if not self.cache.wait_synced(10):
            raise Refused("the scheduler has no current view of the cluster (etcd unreachable?)")
        return self.cache.view

    def _decide(self, ask: Request) -> tuple[ClusterView, list[Decision], dict]:
        """Decisions on the current view, and the allocation records (with revisions) they
        saw, which the claim's transaction compares. NoValidHost → RESOURCE_EXHAUSTED."""
        view = self._synced_view()
        with self.cache.lock:
            self.table.sync(view)
            ask = dataclasses.replace(
                ask, group_hosts=group_member_hosts(view.instances, ask.group)
            )
            decisions = choose_hosts(self.table, ask, self.placement)
            self.table.hold([d.host for d in decisions], ask.vcpus, ask.memory_mb)
            seen = {
                d.host: (view.allocations.get(d.host),
                         view.revisions.get(keys.allocation(d.host), 0))
                for d in decisions
            }  # fmt: skip
        return view, decisions, seen

    def _claim(self, ask: Request, decisions: list[Decision], placements, view, extra, seen,
               expect=None):  # fmt: skip
        """Claim what `_decide` chose, then stop holding it: from now on the view's own
        allocation records (updated at once on success) say what is taken."""
        claimed = None
        try:
            claimed = claim(self.store, placements, view.hosts, extra, seen, expect)
            return claimed
        finally:
            with self.cache.lock:
                if claimed is not None:
                    self.cache.note_claim(claimed.allocations, claimed.revision)
                self.table.hold([d.host for d in decisions], ask.vcpus, ask.memory_mb, -1)

    def _instance(self, name_or_id: str) -> InstanceRecord:
        view = self._synced_view()
        with self.cache.lock:
            if name_or_id in view.instances:
                return view.instances[name_or_id]
            matches = [
                r for r in view.instances.values() if name_or_id in (r.display_name, r.spec.name)
            ]
        if not matches:
            raise NotFound(f"server {name_or_id!r} not found")
        if len(matches) > 1:
            raise Refused(f"{len(matches)} servers are named {name_or_id!r}: use the id")
        return matches[0]

    def _server(self, record: InstanceRecord, with_stats: bool = False) -> compute_pb2.Server:
        host_up = None if not record.host else record.host in self.cache.view.live
        stats = None
        if with_stats:
            entry = self.store.get(keys.instance_stats(record.spec.uuid))
            stats = entry.value if entry is not None else None
        host = self.cache.view.hosts.get(record.host)
        return views.server(record, host_up, stats, host.availability_zone if host else "")

    def _agent(self, record: InstanceRecord):
        host = self.cache.view.hosts.get(record.host)
        if host is None:
            raise Refused(f"server {record.spec.name} is not on a host")
        if record.host not in self.cache.view.live:
            raise Refused(f"host {record.host} of server {record.spec.name} is down")
        return self.agents.stub(host.address)

    # --- servers ----------------------------------------------------------------
    @maps_errors
    def CreateServers(self, request, context):  # gRPC method names are CamelCase
        flavor = self.catalog.flavor(request.flavor) if request.flavor else None
        if flavor is None:
            raise Invalid("flavor", "is required")
        image = self.catalog.image(request.image) if request.image else None
        if image is None:
            raise Invalid("image", "is required")
        count = request.count or 1
        min_count = request.min_count or count
        if not 1 <= count <= MAX_COUNT:
            raise Invalid("count", f"must be 1..{MAX_COUNT}")
        if not 1 <= min_count <= count:
            raise Invalid("min_count", "must be between 1 and count")
        if len(request.cmdline.encode()) > CMDLINE_MAX:
            raise Invalid("cmdline", f"longer than {CMDLINE_MAX} bytes")
        if not request.name:
            raise Invalid("name", "is required")
        group, group_revision = self.catalog.group(request.group) if request.group else (None, 0)
        ask = Request(
            vcpus=flavor.vcpus, memory_mb=max(flavor.memory_mb, image.min_memory_mb),
            count=count, min_count=min_count,
            availability_zone=request.availability_zone or None,
            required_traits=tuple(image.required_traits), group=group,
        )  # fmt: skip
        records = self._place_and_claim(
            ask, request, flavor, image.path or image.name, group, group_revision
        )
        results = list(self.builders.map(self._build_one, records))
        return compute_pb2.CreateServersResponse(servers=[self._server(r) for r in results])

    def _place_and_claim(self, ask, request, flavor, image, group, group_revision):
        """Decide on the cached view, claim in one transaction; on conflict, decide again."""
        names = allocate_names(self.store, ask.count)  # instance-%08x, for the VMM
        shown = (
            [request.name]
            if ask.count == 1
            else [f"{request.name}-{i + 1}" for i in range(ask.count)]
        )
        for _ in range(_CLAIM_ROUNDS):
            view, decisions, seen = self._decide(ask)
            addresses = self._free_addresses(view, len(decisions))
            now = time.time()
            records, placements = [], []
            for i, (name, display, decision) in enumerate(
                zip(names, shown, decisions, strict=False)
            ):
                uid = str(uuidlib.uuid4())
                spec = InstanceSpec(
                    uid, name, image, flavor.vcpus, flavor.memory_mb, request.cmdline,
                    **self._network_fields(addresses[i] if addresses else None),
                )  # fmt: skip
                records.append((InstanceRecord(
                    spec=spec, status="BUILD", host=decision.host, created_at=now,
                    updated_at=now, display_name=display, flavor=flavor.name,
                    availability_zone=request.availability_zone,
                    group=group.name if group else "",
                ), decision.alternates))  # fmt: skip
                placements.append(Placement(uid, decision.host, flavor.vcpus, flavor.memory_mb))
            extra = [Put(keys.instance(r.spec.uuid), r, lease=0) for r, _ in records]
            expect = {}
            for address, (r, _) in zip(addresses, records, strict=False):
                extra.append(Put(keys.ip(address), AddressRecord(r.spec.uuid), lease=0))
                expect[keys.ip(address)] = 0  # still free: no two instances get one address
            if group is not None:
                extra.append(self._group_with(group, [r.spec.uuid for r, _ in records]))
                expect[keys.server_group(group.id)] = group_revision
            if self._claim(ask, decisions, placements, view, extra, seen, expect) is not None:
                return records
            if group is not None:  # the group may have changed: decide on its latest members
                group, group_revision = self.catalog.group(group.id)
                ask = dataclasses.replace(ask, group=group)
            log.info("claim conflict: deciding again on a fresh view")
            time.sleep(0.01)
        raise Refused("too many concurrent claims on the same hosts; try again")

    def _free_addresses(self, view: ClusterView, n: int) -> list[str]:
        """n free fixed IPs (none without an instance network), or RESOURCE_EXHAUSTED."""
        if self.network is None:
            return []
        with self.cache.lock:
            free = self.network.pick(view.ips, n)
        if len(free) < n:
            raise NoValidHost(
                f"the instance network {self.network.network} has {len(free)} free "
                f"address(es) in {self.network.first}-{self.network.last}; {n} needed"
            )
        return free

    def _network_fields(self, address: str | None) -> dict[str, str]:
        if address is None or self.network is None:
            return {}
        return {
            "ip": self.network.interface(address),
            "gateway": str(self.network.gateway),
            "mac": mac_for(address),
        }

    def _group_with(self, group, uuids):
        record, _ = self.catalog.group(group.id)
        return Put(
            keys.server_group(record.id),
            type(record)(
                record.id,
                record.name,
                record.policy,
                record.soft,
                tuple(record.members) + tuple(uuids),
            ),
            lease=0,
        )

    def _build_one(self, item) -> InstanceRecord:
        record, alternates = item
        return build(
            self.store, self.agents, record.spec, [record.host, *alternates], self.cache.view.hosts
        ).record

    @maps_errors
    def GetServer(self, request, context):
        return self._server(self._instance(request.name_or_id), with_stats=True)

    @maps_errors
    def ListServers(self, request, context):
        view = self._synced_view()
        with self.cache.lock:
            records = list(view.instances.values())
        chosen = [
            r for r in records
            if r.status != "DELETED"
            and (not request.host or r.host == request.host)
            and (not request.status or r.status == request.status.upper())
            and (not request.name or request.name in (r.display_name or r.spec.name))
        ]  # fmt: skip
        chosen.sort(key=lambda r: (r.created_at, r.spec.name))
        return compute_pb2.ListServersResponse(servers=[self._server(r) for r in chosen])

    @maps_errors
    def DeleteServer(self, request, context):
        record = self._instance(request.name_or_id)
        if record.host and record.host in self.cache.view.live:
            self._agent(record).Delete(
                agent_pb2.InstanceRef(uuid=record.spec.uuid), timeout=_AGENT_TIMEOUT
            )
        if record.host:
            release(self.store, record.host, record.spec.uuid)
        if record.group:
            self._leave_group(record.group, record.spec.uuid)
        gone = [Delete(keys.instance(record.spec.uuid))]
        if record.spec.ip:
            gone.append(Delete(keys.ip(record.spec.ip.split("/")[0])))
        self.store.put_many(gone)
        return compute_pb2.DeleteServerResponse()

    def _leave_group(self, name_or_id: str, uuid: str) -> None:
        """A deleted member no longer counts for its group's (anti-)affinity."""
        for _ in range(_CLAIM_ROUNDS):
            try:
                group, revision = self.catalog.group(name_or_id)
            except LookupError:
                return  # the group itself is gone
            if uuid not in group.members:
                return
            left = dataclasses.replace(group, members=tuple(m for m in group.members if m != uuid))
            key = keys.server_group(group.id)
            if self.store.transaction({key: revision}, [Put(key, left, lease=0)]) is not None:
                return

    def _forward(self, name_or_id: str, call: str, message) -> compute_pb2.Server:
        """Ask the hosting agent; answer with its reply (etcd catches up a moment later)."""
        record = self._instance(name_or_id)
        reply = getattr(self._agent(record), call)(message, timeout=_AGENT_TIMEOUT)
        return self._server(merge_agent_reply(record, reply))

    @maps_errors
    def StopServer(self, request, context):
        uid = self._instance(request.name_or_id).spec.uuid
        return self._forward(request.name_or_id, "Stop", agent_pb2.StopRequest(uuid=uid))

    @maps_errors
    def StartServer(self, request, context):
        uid = self._instance(request.name_or_id).spec.uuid
        return self._forward(request.name_or_id, "Start", agent_pb2.InstanceRef(uuid=uid))

    @maps_errors
    def RebootServer(self, request, context):
        uid = self._instance(request.name_or_id).spec.uuid
        return self._forward(
            request.name_or_id, "Reboot", agent_pb2.RebootRequest(uuid=uid, hard=request.hard)
        )

    @maps_errors
    def PauseServer(self, request, context):
        uid = self._instance(request.name_or_id).spec.uuid
        return self._forward(request.name_or_id, "Pause", agent_pb2.InstanceRef(uuid=uid))

    @maps_errors
    def ResumeServer(self, request, context):
        uid = self._instance(request.name_or_id).spec.uuid
        return self._forward(request.name_or_id, "Resume", agent_pb2.InstanceRef(uuid=uid))

    @maps_errors
    def GetConsoleOutput(self, request, context):
        record = self._instance(request.name_or_id)
        reply = self._agent(record).GetConsoleOutput(
            agent_pb2.ConsoleRequest(uuid=record.spec.uuid, lines=request.lines),
            timeout=_AGENT_TIMEOUT,
        )
        return compute_pb2.ConsoleOutputResponse(output=reply.output)

    def WatchServers(self, request, context) -> Iterator[compute_pb2.ServerEvent]:
        """Current state of each server first, then every change, until the caller leaves."""
        wanted = set(request.uuids)
        changes: queue.Queue = queue.Queue()
        self._watchers.append(changes)
        seen: dict[str, tuple] = {}
        try:
            self._synced_view()
            while context.is_active():
                with self.cache.lock:
                    current = {
                        u: r
                        for u, r in self.cache.view.instances.items()
                        if not wanted or u in wanted
                    }
                for uid, record in current.items():
                    mark = (record.status, record.power_state, record.host, record.fault)
                    if seen.get(uid) != mark:
                        seen[uid] = mark
                        yield compute_pb2.ServerEvent(server=self._server(record))
                for uid in [u for u in seen if u not in current]:
                    del seen[uid]
                    yield compute_pb2.ServerEvent(deleted=True, server=compute_pb2.Server())
                try:
                    changes.get(timeout=1.0)
                except queue.Empty:
                    pass
        finally:
            self._watchers.remove(changes)

    def _notify_watchers(self) -> None:
        for q in list(self._watchers):
            q.put_nowait(True)

    # --- hosts -----------------------------------------------------------------
    def _host(self, host_id: str):
        view = self._synced_view()
        with self.cache.lock:
            record = view.hosts.get(host_id)
            if record is None:
                raise NotFound(f"host {host_id!r} not found")
            allocation = view.allocations.get(host_id)
            instances = [
                u for u, r in view.instances.items() if r.host == host_id and r.status != "DELETED"
            ]
            up, admin = host_id in view.live, view.admin.get(host_id)
        entry = self.store.get(keys.host_stats(host_id))
        return views.host(
            record,
            up,
            admin,
            allocation.vcpus if allocation else 0,
            allocation.memory_mb if allocation else 0,
            instances,
            entry.value if entry else None,
        )

    @maps_errors
    def ListHosts(self, request, context):
        view = self._synced_view()
        with self.cache.lock:
            ids = sorted(view.hosts)
        return compute_pb2.ListHostsResponse(hosts=[self._host(h) for h in ids])

    @maps_errors
    def GetHost(self, request, context):
        return self._host(request.host_id)

    @maps_errors
    def EnableHost(self, request, context):
        self._host(request.host_id)
        self.store.put(keys.host_admin(request.host_id), HostAdminRecord(True, "", time.time()))
        return self._host_after_write(request.host_id)

    @maps_errors
    def DisableHost(self, request, context):
        self._host(request.host_id)
        record = HostAdminRecord(False, request.reason or "disabled by the operator", time.time())
        self.store.put(keys.host_admin(request.host_id), record)
        return self._host_after_write(request.host_id)

    def _host_after_write(self, host_id: str) -> compute_pb2.Host:
        deadline = time.monotonic() + 2
        target = self.store.get_prefix(keys.HOST_ADMIN)[1]
        while self.cache.view.revision < target and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._host(host_id)

    @maps_errors
    def EvacuateHost(self, request, context):
        """Rebuild a down host's instances elsewhere: same uuid and name, new claim."""
        self._host(request.host_id)
        view = self._synced_view()
        if request.host_id in view.live:
            raise Refused(f"host {request.host_id} is up: only a down host can be evacuated")
        with self.cache.lock:
            victims = [
                r
                for r in view.instances.values()
                if r.host == request.host_id and r.status != "DELETED"
            ]
        moved = list(self.builders.map(self._evacuate_one, victims))
        return compute_pb2.EvacuateHostResponse(servers=[self._server(r) for r in moved])

    def _evacuate_one(self, record: InstanceRecord) -> InstanceRecord:
        spec = record.spec
        group = self.catalog.group(record.group)[0] if record.group else None
        ask = Request(
            vcpus=spec.vcpus,
            memory_mb=spec.memory_mb,
            group=group,
            availability_zone=record.availability_zone or None,
        )
        source = record.host
        for _ in range(_CLAIM_ROUNDS):
            view, (decision,), seen = self._decide(ask)  # the source is down: never chosen
            moved = dataclasses.replace(
                record,
                host=decision.host,
                status="BUILD",
                power_state="NOSTATE",
                pid=None,
                fault="",
                updated_at=time.time(),
            )
            extra = [Put(keys.instance(spec.uuid), moved, lease=0)]
            placement = Placement(spec.uuid, decision.host, spec.vcpus, spec.memory_mb)
            if self._claim(ask, [decision], [placement], view, extra, seen) is not None:
                release(self.store, source, spec.uuid)
                return build(
                    self.store, self.agents, spec, [decision.host, *decision.alternates], view.hosts
                ).record
        raise Refused(f"could not claim a new host for {spec.name}: too much contention")

    # --- catalog -----------------------------------------------------------------
    @maps_errors
    def ListFlavors(self, request, context):
        return compute_pb2.ListFlavorsResponse(
            flavors=[views.flavor(f) for f in self.catalog.flavors()]
        )

    @maps_errors
    def CreateFlavor(self, request, context):
        record = FlavorRecord(request.name, request.vcpus, request.memory_mb)
        return views.flavor(self.catalog.create_flavor(record))

    @maps_errors
    def DeleteFlavor(self, request, context):
        self.catalog.delete_flavor(request.name)
        return compute_pb2.DeleteFlavorResponse()

    @maps_errors
    def ListImages(self, request, context):
        return compute_pb2.ListImagesResponse(
            images=[views.image(i) for i in self.catalog.images()]
        )

    @maps_errors
    def GetImage(self, request, context):
        return views.image(self.catalog.image(request.name))

    @maps_errors
    def CreateServerGroup(self, request, context):
        policy = views.policy_name(request.policy)
        if policy is None:
            raise CatalogError("policy", "must be affinity or anti-affinity")
        return views.group(self.catalog.create_group(request.name, policy, request.soft))

    @maps_errors
    def ListServerGroups(self, request, context):
        return compute_pb2.ListServerGroupsResponse(
            groups=[views.group(g) for g, _ in self.catalog.groups()]
        )

    @maps_errors
    def DeleteServerGroup(self, request, context):
        self.catalog.delete_group(request.name_or_id)
        return compute_pb2.DeleteServerGroupResponse()
