"""Placing instances: decide on the cached view, claim in one etcd transaction, and on a
conflict decide again on the fresher view (Nomad's optimistic plan apply).

The decision itself is the pure placement core's (scheduler/decide.py over
scheduler/host_table.py); this module owns the I/O around it: the view
and table under the cache's lock, the holds that keep concurrent requests in
this process apart, and the claim transaction with the records it carries.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid as uuidlib
from collections.abc import Sequence
from typing import NamedTuple

from computed import status
from computed.errors import Refused
from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Op, Put
from computed.store.records import (
    AddressRecord,
    FlavorRecord,
    InstanceRecord,
    InstanceSpec,
    ServerGroupRecord,
)
from scheduler import metrics, server_groups
from scheduler.addresses import InstanceNetwork, mac_for
from scheduler.catalog import Catalog
from scheduler.claims import Placement, claim, release_ops
from scheduler.cluster_view import ClusterView
from scheduler.decide import Decision, choose_hosts, group_member_hosts
from scheduler.host_cache import HostCache
from scheduler.host_table import HostTable
from scheduler.instance_reports import report_left_behind
from scheduler.lookup import synced_view
from scheduler.placement import NoValidHost, PlacementConfig, Request

log = logging.getLogger("computed.scheduler.placer")
CLAIM_ROUNDS = 10
_CONFLICT_PAUSE = 0.01


class Placed(NamedTuple):
    """An instance to build: its record as claimed, the hosts to try if the first
    fails, and the revision the claim wrote the record at (the build's first write of
    it compares that, with no read before)."""

    record: InstanceRecord
    alternates: tuple[str, ...]
    revision: int


@dataclasses.dataclass(frozen=True)
class NewServers:
    """What a create asks for, beside the resources in its Request."""

    names: Sequence[str]  # instance-%08x, for the VMM
    shown: Sequence[str]  # what the user called them
    flavor: FlavorRecord
    image: str
    cmdline: str
    availability_zone: str
    group: ServerGroupRecord | None
    group_revision: int
    image_digest: str = ""  # an uploaded image's "sha256:<hex>"; "" for bundled guests


class Placer:
    def __init__(
        self,
        store: Store,
        cache: HostCache,
        catalog: Catalog,
        config: PlacementConfig,
        network: InstanceNetwork | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.catalog = catalog
        self.config = config
        self.network = network
        self.table = HostTable()  # guarded by cache.lock, like the view it mirrors

    @metrics.counts_decisions
    def decide(self, ask: Request) -> tuple[ClusterView, list[Decision], dict]:
        """Decisions on the current view, and the allocation records (with revisions) they
        saw, which the claim's transaction compares. Raises NoValidHost."""
        view = synced_view(self.cache)
        with self.cache.lock:
            self.table.sync(view)
            ask = dataclasses.replace(
                ask, group_hosts=group_member_hosts(view.instances, ask.group)
            )
            decisions = choose_hosts(self.table, ask, self.config)
            self.table.hold([d.host for d in decisions], ask.vcpus, ask.memory_mb)
            seen = {
                d.host: (view.allocations.get(d.host),
                         view.revisions.get(keys.allocation(d.host), 0))
                for d in decisions
            }  # fmt: skip
        return view, decisions, seen

    def claim(
        self,
        ask: Request,
        decisions: list[Decision],
        placements: list[Placement],
        view: ClusterView,
        extra: list[Op],
        seen: dict,
        expect: dict[str, int] | None = None,
    ) -> int | None:
        """Claim what `decide` chose, then stop holding it: from now on the view's own
        allocation records (updated at once on success) say what is taken. The revision
        the claim was written at; None if it conflicted."""
        claimed = None
        try:
            claimed = claim(self.store, placements, view.hosts, extra, seen, expect)
            metrics.claimed(claimed is not None)
            return claimed.revision if claimed is not None else None
        finally:
            with self.cache.lock:
                if claimed is not None:
                    self.cache.note_claim(claimed.allocations, claimed.revision)
                self.table.hold([d.host for d in decisions], ask.vcpus, ask.memory_mb, -1)

    @metrics.timed_placement
    def place_new(self, ask: Request, new: NewServers) -> list[Placed]:
        """Claim hosts, names' records and addresses for a create, all in one transaction."""
        group, group_revision = new.group, new.group_revision
        for _ in range(CLAIM_ROUNDS):
            view, decisions, seen = self.decide(ask)
            addresses = self._free_addresses(view, len(decisions))
            now = time.time()
            placed: list[tuple[InstanceRecord, tuple[str, ...]]] = []
            placements: list[Placement] = []
            for i, (name, shown, decision) in enumerate(
                zip(new.names, new.shown, decisions, strict=False)
            ):
                uid = str(uuidlib.uuid4())
                spec = InstanceSpec(
                    uid, name, new.image, new.flavor.vcpus, new.flavor.memory_mb, new.cmdline,
                    image_digest=new.image_digest,
                    **self._network_fields(addresses[i] if addresses else None),
                )  # fmt: skip
                record = InstanceRecord(
                    spec=spec, status=status.BUILD, host=decision.host, created_at=now,
                    updated_at=now, display_name=shown, flavor=new.flavor.name,
                    availability_zone=new.availability_zone,
                    group=group.name if group else "",
                )  # fmt: skip
                placed.append((record, decision.alternates))
                placements.append(Placement(uid, decision.host, spec.vcpus, spec.memory_mb))
            extra: list[Op] = [Put(keys.instance(r.spec.uuid), r, lease=0) for r, _ in placed]
            expect: dict[str, int] = {}
            for address, (r, _) in zip(addresses, placed, strict=False):
                extra.append(Put(keys.ip(address), AddressRecord(r.spec.uuid), lease=0))
                expect[keys.ip(address)] = 0  # still free: no two instances get one address
            if group is not None:
                uuids = [r.spec.uuid for r, _ in placed]
                extra.append(server_groups.with_members(self.catalog, group, uuids))
                expect[keys.server_group(group.id)] = group_revision
            revision = self.claim(ask, decisions, placements, view, extra, seen, expect)
            if revision is not None:
                return [Placed(record, alternates, revision) for record, alternates in placed]
            if group is not None:  # the group may have changed: decide on its latest members
                group, group_revision = self.catalog.group(group.id)
                ask = dataclasses.replace(ask, group=group)
            log.info("claim conflict: deciding again on a fresh view")
            time.sleep(_CONFLICT_PAUSE)
        raise Refused("too many concurrent claims on the same hosts; try again")

    @metrics.timed_placement
    def move(self, record: InstanceRecord, ask: Request) -> Decision | None:
        """Claim a new host for an existing instance (evacuation), release its claim on
        the old host and point its record at the new one as BUILD, all in one
        transaction; None if the claim kept conflicting. So no failure after it can
        leave the instance counted on two hosts, or on none."""
        spec = record.spec
        for _ in range(CLAIM_ROUNDS):
            view, (decision,), seen = self.decide(ask)
            moved = dataclasses.replace(
                record, host=decision.host, status=status.BUILD, power_state=status.NOSTATE,
                pid=None, fault="", updated_at=time.time(), evacuated_from=record.host,
            )  # fmt: skip
            released, expect = release_ops(self.store, record.host, spec.uuid)
            extra: list[Op] = [
                Put(keys.instance(spec.uuid), moved, lease=0),
                *released,
                *report_left_behind(record, decision.host),  # the down host cannot
            ]
            placement = Placement(spec.uuid, decision.host, spec.vcpus, spec.memory_mb)
            if self.claim(ask, [decision], [placement], view, extra, seen, expect) is not None:
                return decision
        return None

    def _free_addresses(self, view: ClusterView, n: int) -> list[str]:
        """n free fixed IPs (none without an instance network), or NoValidHost."""
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
