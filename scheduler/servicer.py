"""The public Compute service: a thin gRPC adapter, as the agent's servicer is.

Each method checks its request, calls the module that does the work and
turns the answer into a message. Reads come from the watch-fed cache
(scheduler/lookup.py); placement and claims are scheduler/placer.py's,
builds scheduler/build.py's, evacuation scheduler/evacuation.py's and group
membership scheduler/server_groups.py's. Errors become status codes in one
place (computed/grpc_status.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from concurrent import futures

from computed import status
from computed.api import agent_pb2, compute_pb2, compute_pb2_grpc, types_pb2
from computed.errors import AlreadyExists, Invalid, NotFound, Refused
from computed.grpc_status import maps_errors
from computed.guests.bundled import bundled_names
from computed.limits import CMDLINE_MAX
from computed.store import keys
from computed.store.client import Store
from computed.store.records import FlavorRecord, HostAdminRecord, ImageRecord, InstanceRecord
from scheduler import images, server_groups, top, views
from scheduler.action_log import ActionLog, CrashWatch, logged, server_events
from scheduler.addresses import InstanceNetwork
from scheduler.build import AgentClients, build
from scheduler.catalog import Catalog
from scheduler.claims import release
from scheduler.decide import DEFAULT_CONFIG
from scheduler.evacuation import evacuate_one, to_evacuate
from scheduler.host_cache import HostCache
from scheduler.instance_reports import removed_with
from scheduler.lookup import find_instance, instances_on, synced_view
from scheduler.naming import allocate_names
from scheduler.placement import PlacementConfig, Request
from scheduler.placer import NewServers, Placed, Placer
from scheduler.server_watch import ServerWatch

MAX_COUNT = 1000
_AGENT_TIMEOUT = 30.0
_WRITE_VISIBLE_WAIT = 2.0


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


def _lifecycle(agent_call: str, message: type, **fields: str):
    """A servicer method that forwards a lifecycle action (stop, start, ...) to the
    instance's agent; `fields` maps agent request fields to this request's fields."""

    @maps_errors
    @logged(agent_call.lower())
    def method(self: ComputeServicer, request, context) -> compute_pb2.Server:
        record = find_instance(self.cache, request.name_or_id)
        extra = {name: getattr(request, source) for name, source in fields.items()}
        ask = message(uuid=record.spec.uuid, **extra)
        reply = getattr(self._agent(record), agent_call)(ask, timeout=_AGENT_TIMEOUT)
        return self._server(merge_agent_reply(record, reply))  # etcd catches up a moment later

    method.__name__ = f"{agent_call}Server"
    return method


class ComputeServicer(compute_pb2_grpc.ComputeServicer):
    def __init__(
        self,
        store: Store,
        cache: HostCache,
        agents: AgentClients,
        placement: PlacementConfig = DEFAULT_CONFIG,
        network: InstanceNetwork | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.agents = agents
        self.catalog = Catalog(store)
        self.placer = Placer(store, cache, self.catalog, placement, network)
        self.builders = futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="build")
        self.watch = ServerWatch(cache)
        self.actions = ActionLog(store)
        crashes = CrashWatch(cache, self.actions)  # logs VMMs that died unasked
        cache.on_change = lambda: (self.watch.notify(), crashes.notify())
        self.top = top.Snapshots(store, cache)

    # --- answers ------------------------------------------------------------------
    def _server(self, record: InstanceRecord, with_stats: bool = False) -> compute_pb2.Server:
        host_up = None if not record.host else record.host in self.cache.view.live
        stats = None
        if with_stats:
            entry = None
            if record.host:  # stats sit under the host that runs it; read on demand
                entry = self.store.get(keys.instance_stats(record.host, record.spec.uuid))
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

    # --- servers ------------------------------------------------------------------
    @maps_errors
    def CreateServers(self, request, context):  # gRPC method names are CamelCase
        asked_at = time.time()
        flavor = self.catalog.flavor(request.flavor) if request.flavor else None
        if flavor is None:
            raise Invalid("flavor", "is required")
        image = self.catalog.image(request.image) if request.image else None
        if image is None:
            raise Invalid("image", "is required")
        if flavor.memory_mb < image.min_memory_mb:  # Nova's FlavorMemoryTooSmall
            raise Invalid(
                "flavor", f"{flavor.name} has {flavor.memory_mb} MiB; image {image.name} needs "
                f"at least {image.min_memory_mb} MiB",
            )  # fmt: skip
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
            vcpus=flavor.vcpus, memory_mb=flavor.memory_mb,
            count=count, min_count=min_count,
            availability_zone=request.availability_zone or None,
            required_traits=tuple(image.required_traits), group=group,
        )  # fmt: skip
        shown = [request.name] if count == 1 else [f"{request.name}-{i + 1}" for i in range(count)]
        new = NewServers(
            names=allocate_names(self.store, count), shown=shown, flavor=flavor,
            image=image.path or image.name, image_digest=image.digest, cmdline=request.cmdline,
            availability_zone=request.availability_zone, group=group,
            group_revision=group_revision,
        )  # fmt: skip
        placed = self.placer.place_new(ask, new)
        results = list(self.builders.map(self._build_one, placed))
        self.actions.built(results, asked_at, context)
        return compute_pb2.CreateServersResponse(servers=[self._server(r) for r in results])

    def _build_one(self, item: Placed) -> InstanceRecord:
        candidates = [item.record.host, *item.alternates]
        hosts = self.cache.view.hosts
        claimed = (item.record, item.revision)
        return build(self.store, self.agents, item.record.spec, candidates, hosts, claimed).record

    @maps_errors
    def GetServer(self, request, context):
        return self._server(find_instance(self.cache, request.name_or_id), with_stats=True)

    @maps_errors
    def ListServers(self, request, context):
        view = synced_view(self.cache)
        with self.cache.lock:
            records = list(view.instances.values())
        chosen = [
            r for r in records
            if r.status != status.DELETED
            and (not request.host or r.host == request.host)
            and (not request.status or r.status == request.status.upper())
            and (not request.name or request.name in (r.display_name or r.spec.name))
        ]  # fmt: skip
        chosen.sort(key=lambda r: (r.created_at, r.spec.name))
        return compute_pb2.ListServersResponse(servers=[self._server(r) for r in chosen])

    @maps_errors
    @logged("delete", deleted=True)
    def DeleteServer(self, request, context):
        record = find_instance(self.cache, request.name_or_id)
        if record.host and record.host in self.cache.view.live:
            self._agent(record).Delete(
                agent_pb2.InstanceRef(uuid=record.spec.uuid), timeout=_AGENT_TIMEOUT
            )
        if record.host:
            release(self.store, record.host, record.spec.uuid)
        if record.group:
            server_groups.leave(self.store, self.catalog, record.group, record.spec.uuid)
        self.store.put_many(removed_with(record))
        return compute_pb2.DeleteServerResponse()

    StopServer = _lifecycle("Stop", agent_pb2.StopRequest)
    StartServer = _lifecycle("Start", agent_pb2.InstanceRef)
    RebootServer = _lifecycle("Reboot", agent_pb2.RebootRequest, hard="hard")
    PauseServer = _lifecycle("Pause", agent_pb2.InstanceRef)
    ResumeServer = _lifecycle("Resume", agent_pb2.InstanceRef)

    @maps_errors
    def GetConsoleOutput(self, request, context):
        record = find_instance(self.cache, request.name_or_id)
        reply = self._agent(record).GetConsoleOutput(
            agent_pb2.ConsoleRequest(uuid=record.spec.uuid, lines=request.lines),
            timeout=_AGENT_TIMEOUT,
        )
        return compute_pb2.ConsoleOutputResponse(output=reply.output)

    def WatchServers(self, request, context):
        """Current state of each server first, then every change, until the caller leaves."""
        synced_view(self.cache)
        yield from self.watch.stream(request.uuids, context.is_active, self._server)

    # --- hosts --------------------------------------------------------------------
    def _host(self, host_id: str) -> compute_pb2.Host:
        view = synced_view(self.cache)
        with self.cache.lock:
            record = view.hosts.get(host_id)
            if record is None:
                raise NotFound(f"host {host_id!r} not found")
            allocation = view.allocations.get(host_id)
            instances = [r.spec.uuid for r in instances_on(view, host_id)]
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
        view = synced_view(self.cache)
        with self.cache.lock:
            ids = sorted(view.hosts)
        return compute_pb2.ListHostsResponse(
            hosts=[self._host(h) for h in ids], store_alarms=self.store.alarms()
        )

    @maps_errors
    def GetHost(self, request, context):
        return self._host(request.host_id)

    @maps_errors
    def EnableHost(self, request, context):
        return self._set_admin(request.host_id, HostAdminRecord(True, "", time.time()))

    @maps_errors
    def DisableHost(self, request, context):
        reason = request.reason or "disabled by the operator"
        return self._set_admin(request.host_id, HostAdminRecord(False, reason, time.time()))

    def _set_admin(self, host_id: str, record: HostAdminRecord) -> compute_pb2.Host:
        """Write the operator's switch, and answer once this scheduler's view shows it."""
        self._host(host_id)
        self.store.put(keys.host_admin(host_id), record)
        deadline = time.monotonic() + _WRITE_VISIBLE_WAIT
        target = self.store.get_prefix(keys.HOST_ADMIN)[1]
        while self.cache.view.revision < target and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._host(host_id)

    @maps_errors
    def EvacuateHost(self, request, context):
        """Rebuild a down host's instances elsewhere: same uuid and name, new claim."""
        self._host(request.host_id)
        view = synced_view(self.cache)
        if request.host_id in view.live:
            raise Refused(f"host {request.host_id} is up: only a down host can be evacuated")
        with self.cache.lock:
            victims = to_evacuate(view, request.host_id)
        asked_at = time.time()
        moved = list(
            self.builders.map(lambda r: evacuate_one(self.placer, self.agents, r), victims)
        )
        self.actions.evacuated(victims, moved, asked_at, context)
        return compute_pb2.EvacuateHostResponse(servers=[self._server(r) for r in moved])

    # --- catalog ------------------------------------------------------------------
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
            images=[self._image(i) for i in self.catalog.images()]
        )

    @maps_errors
    def GetImage(self, request, context):
        return self._image(self.catalog.image(request.name))

    def _image(self, record: ImageRecord) -> compute_pb2.Image:
        if not record.digest:
            return views.image(record)
        with self.cache.lock:
            instances = list(self.cache.view.instances.values())
        used = [i.display_name or i.spec.name for i in images.users(record, instances)]
        return views.image(record, used)

    @maps_errors
    def CreateImage(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise Invalid("header", "the first message of an upload must name the image")
        name = first.header.name
        if name in bundled_names():
            raise AlreadyExists(f"image {name!r} is a bundled guest")
        pieces = itertools.chain([first.data], (m.data for m in request_iterator))
        data = images.receive(pieces)
        record = images.check_image(name, data, dict(first.header.properties))
        return self._image(images.create_image(self.store, record, data))

    @maps_errors
    def DeleteImage(self, request, context):
        if request.name in bundled_names():
            raise Refused(f"image {request.name!r} is a bundled guest: it cannot be deleted")
        with self.cache.lock:
            instances = list(self.cache.view.instances.values())
        images.delete_image(self.store, request.name, request.force, instances)
        return compute_pb2.DeleteImageResponse()

    @maps_errors
    def CreateServerGroup(self, request, context):
        policy = views.policy_name(request.policy)
        if policy is None:
            raise Invalid("policy", "must be affinity or anti-affinity")
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

    # --- observing ------------------------------------------------------------------
    def WatchTop(self, request, context):
        """A snapshot of the cluster every interval (computectl top); scheduler/top.py."""
        yield from top.stream(self.top, request.interval, context.is_active)

    @maps_errors
    def ListServerEvents(self, request, context):
        return server_events(self.cache, self.actions, request.name_or_id)
