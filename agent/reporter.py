"""Everything the agent tells etcd: host record, liveness, instance reports, stats.

Every key it writes names its own host (docs/keyspace.md), so etcd's RBAC can
confine a host's credential to that host's keys.

- Host record (no lease) and liveness key (on the host's lease) are written
  whenever a lease is (re)granted, so a host whose agent stops goes down
  within the TTL, and comes back by itself after an etcd outage.
- Instance reports (`/computed/reports/<host>/<uuid>`): every change is
  queued, and an entry leaves the queue only once written, so an etcd outage
  loses nothing. The scheduler's record is read and agent/report_rules.py
  decides; a report is written only while that record is unchanged (one
  transaction), so it never lands after the scheduler moved or deleted it.
- Stats: one sample per instance per interval plus the host's, on the lease,
  under `/computed/stats/<host>/`, in one batched write (chunked by the
  store under etcd's --max-txn-ops). Schedulers do not watch them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

import orjson

from agent import report_rules as rules
from agent.config import AgentConfig
from agent.host_facts import KvmFacts
from agent.vmm_stats import ProcessGone, VmmStats, host_stats
from computed.capacity import Capacity, Usage
from computed.status import DELETED
from computed.store import keys
from computed.store.client import Store
from computed.store.errors import StoreError, StoreUnavailable
from computed.store.lease import LeaseKeeper
from computed.store.ops import Delete, Op, Put
from computed.store.records import HostRecord, InstanceRecord, InstanceReport, LivenessRecord
from computed.store.records import KvmFacts as KvmFactsRecord

if TYPE_CHECKING:
    from agent.supervisor import InstanceSupervisor, InstanceView

log = logging.getLogger("computed.agent.reporter")
_GATHER = 0.05  # seconds a change waits for others to report with it
_CAS_ATTEMPTS = 5


def instance_report(view: InstanceView) -> InstanceReport:
    return InstanceReport(
        status=view.state.status,
        power_state=view.state.power_state,
        fault=view.state.fault,
        pid=view.pid,
        updated_at=view.updated_at,
    )


class Reporter:
    def __init__(self, config: AgentConfig, capacity: Capacity, kvm: KvmFacts) -> None:
        self.config = config
        self.capacity = capacity
        self.kvm = kvm
        self.started_at = time.time()
        self.store = Store(config.etcd, tls=config.etcd_tls)
        self.supervisor: InstanceSupervisor | None = None
        self.lease: LeaseKeeper | None = None
        self._pending: dict[str, InstanceView] = {}
        self._pending_lock = threading.Lock()
        self._collectors: dict[str, _Collector] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-reporter", daemon=True)
        self._etcd_down_since: float | None = None
        self._refused_logged_at = float("-inf")
        # Adopted at start and not yet written: if etcd has no record of one, it was
        # deleted while this agent was away, and its VMM must go.
        self._adopted: set[str] = set()
        self._stale: set[str] = set()  # being removed here: etcd hears nothing more of them
        # Instances whose scheduler record this agent has read: if it vanishes, it was deleted.
        self._placed: set[str] = set()

    def attach(self, supervisor: InstanceSupervisor) -> None:
        self.supervisor = supervisor

    def instance_changed(self, view: InstanceView) -> None:
        """Queue a state change for etcd; called from any thread, never blocks on etcd."""
        with self._pending_lock:
            self._pending[view.spec.uuid] = view
        self._wake.set()

    def start(self) -> None:
        assert self.supervisor is not None
        for view in self.supervisor.list():  # adopted instances: make etcd agree
            self._adopted.add(view.spec.uuid)
            self.instance_changed(view)
        self.lease = LeaseKeeper(self.store, self.config.lease_ttl, self._on_new_lease)
        self._thread.start()

    def close(self) -> None:
        """Flush what we can, then give up the lease (our liveness and stats go at once)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        if self.lease is not None:
            self.lease.close(revoke=True)
        self.store.close()

    # --- the loop ---------------------------------------------------------------
    def _run(self) -> None:
        next_stats = 0.0
        while not self._stop.is_set():
            if self._wake.wait(max(0.0, next_stats - time.monotonic())):
                # A change: let the ones right behind it join (a burst of spawns), so
                # that one read and one write to etcd carry them all.
                self._stop.wait(_GATHER)
            self._wake.clear()
            try:
                self._flush_instances()
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + self.config.stats_interval
                    self._write_stats()
                self._etcd_back()
            except StoreUnavailable as e:
                self._etcd_down(e)
                self._stop.wait(0.5)
            except StoreError as e:  # refused (NOSPACE, permission): one line, not a traceback
                self._refused(e)
                self._stop.wait(0.5)
            except Exception:
                log.exception("reporting to etcd failed")
                self._stop.wait(0.5)

    def _refused(self, error: StoreError) -> None:
        """etcd refuses writes for a while (its NOSPACE alarm, a missing permission): say
        so once a minute, not at every retry."""
        now = time.monotonic()
        if now - self._refused_logged_at >= 60:
            self._refused_logged_at = now
            log.error("etcd refuses the reports: %s (retrying; VMs keep running)", error)

    def _etcd_down(self, error: Exception) -> None:
        if self._etcd_down_since is None:
            self._etcd_down_since = time.monotonic()
            log.warning("etcd unreachable (%s): VMs keep running; catching up later", error)

    def _etcd_back(self) -> None:
        if self._etcd_down_since is not None:
            log.info("etcd reachable again after %.1fs", time.monotonic() - self._etcd_down_since)
            self._etcd_down_since = None

    def _on_new_lease(self, lease_id: int) -> None:
        """Runs on every new lease: the host record, and liveness on the lease."""
        host = self.config.host_id
        record = HostRecord(
            host_id=host,
            address=self.config.listen,
            availability_zone=self.config.availability_zone,
            vcpus=self.capacity.vcpus,
            memory_mb=self.capacity.memory_mb,
            cpu_allocation_ratio=self.capacity.cpu_ratio,
            ram_allocation_ratio=self.capacity.ram_ratio,
            kvm=KvmFactsRecord(
                self.kvm.api_version,
                self.kvm.vendor_module,
                self.kvm.vhost,
                self.kvm.guest_kernel_emulated,
            ),
            started_at=self.started_at,
        )
        self.store.put_many([
            Put(keys.host(host), record, lease=0),
            Put(keys.liveness(host), LivenessRecord(host, self.started_at), lease=lease_id),
        ])  # fmt: skip
        log.info("host %s registered, lease %x", host, lease_id)
        if self.supervisor is not None:
            # A new lease means this host was seen down: its instances may have been
            # evacuated meanwhile. Writing each again finds out (and removes such copies).
            for view in self.supervisor.list():
                self.instance_changed(view)

    def _flush_instances(self) -> None:
        with self._pending_lock:
            pending = list(self._pending.values())
        if not pending:
            return
        for view in self._write_together(pending):
            self._write_instance(view)
        with self._pending_lock:
            for view in pending:
                if self._pending.get(view.spec.uuid) is view:
                    del self._pending[view.spec.uuid]

    def _write_together(self, views: list[InstanceView]) -> list[InstanceView]:
        """Decide on many views with one read of their records, and write every report
        decided on in one transaction: under a burst of spawns, two requests to etcd
        where one per view would read and one more would write. Returns the views left
        to `_write_instance`, one at a time: those it reads more for (adopted, being
        removed here), and all the writes when a record moved meanwhile."""
        alone = [v for v in views if v.spec.uuid in self._stale or v.spec.uuid in self._adopted]
        together = [v for v in views if v not in alone]
        found = self.store.get_many([keys.instance(v.spec.uuid) for v in together])
        writes: list[tuple[InstanceView, int, Put]] = []
        for view, entry in zip(together, found, strict=True):
            current = entry.record(InstanceRecord) if entry is not None else None
            decision = self._decide(view, current)
            if isinstance(decision, rules.Write):
                revision = entry.mod_revision if entry is not None else 0
                writes.append((view, revision, self._report(view, decision)))
            else:
                self._act_locally(view, decision)
        size = self.store.max_txn_ops
        for start in range(0, len(writes), size):
            chunk = writes[start : start + size]
            expect = {keys.instance(view.spec.uuid): revision for view, revision, _ in chunk}
            if self.store.transaction(expect, [put for _, _, put in chunk]) is None:
                alone += [view for view, _, _ in chunk]  # read and decide again, one by one
        return alone

    def _write_instance(self, view: InstanceView) -> None:
        """Decide by the rules in `report_rules`, then apply; retry when the record moved."""
        uuid = view.spec.uuid
        if uuid in self._stale:
            self._act_locally(view, rules.while_removing(view.state.status))
            return
        key = keys.instance(uuid)
        for _ in range(_CAS_ATTEMPTS):
            found = self.store.get_record(key, InstanceRecord)
            current, revision = found if found is not None else (None, 0)
            decision = self._decide(view, current)
            if isinstance(decision, rules.Write):
                if self.store.transaction({key: revision}, [self._report(view, decision)]) is None:
                    continue  # the scheduler wrote the record meanwhile: read and decide again
            else:
                self._act_locally(view, decision)
            self._adopted.discard(uuid)  # etcd and this host agree on it now
            return
        raise StoreError(f"instance {uuid}: its record kept changing")

    def _report(self, view: InstanceView, decision: rules.Write) -> Put:
        return Put(keys.report(self.config.host_id, view.spec.uuid), decision.report, lease=0)

    def _decide(self, view: InstanceView, current: InstanceRecord | None) -> rules.Decision:
        """The rules' decision on `view`, given the record just read (None: absent)."""
        uuid = view.spec.uuid
        host = self.config.host_id
        adopted = uuid in self._adopted
        if current is not None:
            self._placed.add(uuid)
        # Asked only now, after the read: see report_rules on why the order matters.
        superseded = self._superseded(view)
        reported = (
            adopted and current is None and self.store.get(keys.report(host, uuid)) is not None
        )
        return rules.reconcile(
            instance_report(view),
            host,
            current,
            adopted=adopted,
            superseded=superseded,
            placed=view.placed or uuid in self._placed,
            reported=reported,
        )

    def _superseded(self, view: InstanceView) -> bool:
        """A newer view of the same instance is queued (it will be written in its turn)."""
        with self._pending_lock:
            return self._pending.get(view.spec.uuid) is not view

    def _act_locally(self, view: InstanceView, decision: rules.Decision) -> None:
        """Carry out a decision that writes nothing to etcd."""
        match decision:
            case rules.RemoveLocally(reason=reason):
                log.warning("instance %s %s: removing it here", view.spec.uuid, reason)
                self._remove_locally(view)
            case rules.DeleteReport():
                self.store.delete(keys.report(self.config.host_id, view.spec.uuid))
                self._placed.discard(view.spec.uuid)
            case rules.RemovalFinished():
                self.store.delete(keys.report(self.config.host_id, view.spec.uuid))
                self._stale.discard(view.spec.uuid)
                self._placed.discard(view.spec.uuid)
            case rules.Skip(reason=reason):
                log.debug("instance %s: not reported (%s)", view.spec.uuid, reason)

    def _remove_locally(self, view: InstanceView) -> None:
        """Delete an instance that is no longer this host's, off the reporter's thread."""
        self._stale.add(view.spec.uuid)
        if self.supervisor is not None and view.state.status != DELETED:
            threading.Thread(
                target=self.supervisor.delete,
                args=(view.spec.uuid,),
                name="stale-instance-cleanup",
                daemon=True,
            ).start()

    def _write_stats(self) -> None:
        lease_id = self.lease.lease_id if self.lease is not None else None
        if lease_id is None or self.supervisor is None:
            return
        now = time.time()
        views = self.supervisor.list()
        ops: list[Op] = []
        live: set[str] = set()
        for view in views:
            sample = self._sample(view, now)
            if sample is not None:
                live.add(view.spec.uuid)
                ops.append(Put(self._collectors[view.spec.uuid].key, _json(sample)))
        for uuid in set(self._collectors) - live:  # stopped or deleted: its stats go
            self._collectors.pop(uuid).stats.close()
            ops.append(Delete(keys.instance_stats(self.config.host_id, uuid)))
        used = Usage.of(view.spec for view in views)  # the views sampled, not a second list
        host = host_stats(
            self.capacity.vcpus, self.capacity.memory_mb, used.vcpus, used.memory_mb, used.instances
        )
        host["timestamp"] = now
        ops.append(Put(keys.host_stats(self.config.host_id), _json(host)))
        self.store.put_many(ops, lease=lease_id)

    def _sample(self, view: InstanceView, now: float) -> dict | None:
        uuid = view.spec.uuid
        if view.pid is None:
            return None
        collector = self._collectors.get(uuid)
        try:
            if collector is None or collector.stats.pid != view.pid:
                if collector is not None:
                    collector.stats.close()
                stats = VmmStats(view.pid, pss=self.config.stats_pss, running_at=now)
                key = keys.instance_stats(self.config.host_id, uuid)
                collector = self._collectors[uuid] = _Collector(stats, key)
            sample = collector.stats.sample(now)
        except ProcessGone:
            return None  # not live: _write_stats closes its collector and deletes its key
        sample["uuid"] = uuid
        sample["timestamp"] = now
        return sample


class _Collector(NamedTuple):
    """An instance's stats collector and its etcd key, built once (the key is validated)."""

    stats: VmmStats
    key: str


# orjson: a thousand samples a second took 13-20 µs each with the json module, 1 µs here.
_json = orjson.dumps
