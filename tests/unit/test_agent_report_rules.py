"""The reporter's reconciliation rules (agent/report_rules.py), one test per rule,
and replays of the churn-and-soak delete race through the real Reporter against a
store that keeps etcd's transaction semantics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from agent.config import AgentConfig
from agent.host_facts import KvmFacts
from agent.instance_state import State
from agent.report_rules import (
    DeleteReport,
    RemovalFinished,
    RemoveLocally,
    Skip,
    Write,
    reconcile,
    while_removing,
)
from agent.reporter import Reporter
from agent.supervisor import InstanceView
from computed import status
from computed.capacity import Capacity
from computed.store import keys
from computed.store.ops import Delete, Op, Put
from computed.store.records import InstanceRecord, InstanceReport, InstanceSpec
from scheduler.cluster_view import ClusterView
from scheduler.instance_reports import removed_with

UUID = "5c0f0000-0000-4000-8000-0000000000aa"
HERE, ELSEWHERE = "host-a", "host-b"
SPEC = InstanceSpec(uuid=UUID, name="instance-000000aa", image="heartbeat", vcpus=1, memory_mb=64)


def ours(state: str = status.ACTIVE) -> InstanceReport:
    return InstanceReport(status=state, power_state=status.RUNNING, pid=42)


def scheduler(state: str = status.ACTIVE, host: str = HERE) -> InstanceRecord:
    return InstanceRecord(spec=SPEC, status=state, host=host, display_name="web-1")


def decide(mine: InstanceReport, current: InstanceRecord | None, **kw: bool):
    return reconcile(mine, HERE, current, **{"adopted": False, "superseded": False, **kw})


# --- being removed here -------------------------------------------------------------------


def test_an_instance_being_removed_here_is_never_reported():
    assert isinstance(while_removing(status.SHUTOFF), Skip)


def test_the_deleted_view_ends_the_local_removal_so_a_later_spawn_is_new():
    assert while_removing(status.DELETED) == RemovalFinished()


# --- the scheduler has no record -----------------------------------------------------------


def test_an_adopted_instance_deleted_while_this_agent_was_away_is_removed_here():
    decision = decide(ours(), None, adopted=True)
    assert isinstance(decision, RemoveLocally) and "away" in decision.reason


def test_an_adopted_instance_no_scheduler_ever_placed_keeps_running():
    # Its own report is still there: a scheduler's delete would have removed it.
    assert decide(ours(), None, adopted=True, reported=True) == Write(ours())


def test_deleted_here_removes_this_hosts_report_whatever_the_record_says():
    assert decide(ours(status.DELETED), None) == DeleteReport()
    assert decide(ours(status.DELETED), None, adopted=True) == DeleteReport()
    assert decide(ours(status.DELETED), scheduler()) == DeleteReport()
    assert decide(ours(status.DELETED), scheduler(host=ELSEWHERE)) == DeleteReport()


def test_a_superseded_view_is_not_reported_once_the_record_is_gone():
    assert isinstance(decide(ours(status.SHUTOFF), None, superseded=True), Skip)


def test_a_record_this_agent_saw_that_is_gone_was_deleted():
    decision = decide(ours(), None, placed=True)
    assert isinstance(decision, RemoveLocally) and "cut off" in decision.reason


def test_without_any_scheduler_the_report_is_written():
    assert decide(ours(), None) == Write(ours())


# --- the scheduler has a record ------------------------------------------------------------


def test_an_instance_evacuated_to_another_host_is_removed_here():
    decision = decide(ours(), scheduler(host=ELSEWHERE))
    assert isinstance(decision, RemoveLocally) and ELSEWHERE in decision.reason


def test_this_hosts_instance_is_reported():
    assert decide(ours(status.PAUSED), scheduler(status.BUILD)) == Write(ours(status.PAUSED))


def test_a_build_the_record_already_shows_here_is_not_written_but_its_outcome_is():
    assert isinstance(decide(ours(status.BUILD), scheduler(status.BUILD)), Skip)
    assert decide(ours(), scheduler(status.BUILD)) == Write(ours())
    assert decide(ours(status.ERROR), scheduler(status.BUILD)) == Write(ours(status.ERROR))


def test_a_rebuild_of_an_active_instance_is_written():
    # A hard reboot: the record says ACTIVE, so BUILD is news to the API.
    assert decide(ours(status.BUILD), scheduler()) == Write(ours(status.BUILD))


def test_a_superseded_view_still_reports_while_the_record_exists():
    # Harmless (the newer view follows), and it keeps etcd moving under a burst of changes.
    decision = decide(ours(status.SHUTOFF), scheduler(), superseded=True)
    assert decision == Write(ours(status.SHUTOFF))


# --- the churn-and-soak race, replayed through the Reporter -------------------------------


class _Entry:
    """What Store.get_many hands back for one key (the record itself is kept decoded)."""

    def __init__(self, value: object, mod_revision: int) -> None:
        self.value, self.mod_revision = value, mod_revision

    def record(self, cls: type) -> object:
        return self.value


class _Etcd:
    """A keyspace with etcd's mod_revisions and all-or-nothing comparing transactions,
    plus a hook run once just after the first read of the instance record (alone or
    among others)."""

    def __init__(self, after_first_read: Callable[[], None] | None = None) -> None:
        self.data: dict[str, tuple[object, int]] = {}
        self.revision = 0
        self._hook = after_first_read

    def put(self, key: str, value: object) -> None:
        self.revision += 1
        self.data[key] = (value, self.revision)

    def get(self, key: str) -> object | None:
        return self.data.get(key)

    def get_record(self, key: str, cls: type) -> tuple[object, int] | None:
        found = self.data.get(key)
        if self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        return found

    max_txn_ops = 128

    def get_many(self, keys: Sequence[str]) -> list[_Entry | None]:
        found = [self.data.get(k) for k in keys]
        if self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        return [_Entry(*f) if f is not None else None for f in found]

    def transaction(self, expect: Mapping[str, int], ops: Sequence[Op]) -> int | None:
        if any((self.data.get(k, (None, 0))[1]) != rev for k, rev in expect.items()):
            return None
        self.revision += 1
        for op in ops:
            if isinstance(op, Put):
                self.data[op.key] = (op.value, self.revision)
            else:
                self.data.pop(op.key, None)
        return self.revision

    def put_many(self, ops: Sequence[Op]) -> None:
        self.transaction({}, ops)

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None


def view(state: State) -> InstanceView:
    return InstanceView(SPEC, state, None, created_at=1.0, updated_at=2.0)


def reporter_on(etcd: _Etcd) -> Reporter:
    reporter = Reporter(
        AgentConfig(host_id=HERE),
        Capacity(vcpus=4, memory_mb=2048),
        KvmFacts(12, "kvm_intel", "kernel", False),
    )
    reporter.store.close()
    reporter.store = etcd  # type: ignore[assignment]
    return reporter


def scheduler_view(etcd: _Etcd) -> ClusterView:
    """What a scheduler's watch-fed view holds once it has seen every key."""
    v = ClusterView()
    for key, (value, revision) in sorted(etcd.data.items()):
        raw = value.to_json().encode() if hasattr(value, "to_json") else value
        v.apply(key, raw, revision)
    return v


def test_a_delete_racing_a_late_report_leaves_nothing_behind():
    """The agent's Delete has queued the DELETED view and returned; the scheduler
    removes the record (and this host's report) while the reporter is still on the
    SHUTOFF view the VMM's exit queued a moment earlier."""
    record = scheduler()
    etcd = _Etcd()
    etcd.put(keys.instance(UUID), record)
    etcd.put(keys.report(HERE, UUID), ours())
    reporter = reporter_on(etcd)
    deleted = view(State(status.DELETED, status.NOSTATE))

    def delete_server() -> None:
        reporter.instance_changed(deleted)  # the agent's Delete RPC
        etcd.put_many(removed_with(record))  # then the scheduler's DeleteServer

    etcd._hook = delete_server
    reporter.instance_changed(view(State(status.SHUTOFF, status.SHUTDOWN)))
    reporter._flush_instances()  # the SHUTOFF view, while the delete happens
    reporter._flush_instances()  # then the DELETED view

    assert etcd.data == {}
    assert reporter._pending == {}


def test_a_report_decided_before_the_delete_cannot_land_after_it():
    """The reporter read the record and decided to report SHUTOFF; the delete lands
    between that read and the write, and no Delete reached this agent (the host was
    seen down). The write compares the record's revision, so it is refused; the
    re-read finds the record gone, and the instance is removed here."""
    record = scheduler()
    etcd = _Etcd()
    etcd.put(keys.instance(UUID), record)
    reporter = reporter_on(etcd)
    etcd._hook = lambda: etcd.put_many(removed_with(record))  # no DELETED view queued
    reporter.instance_changed(view(State(status.SHUTOFF, status.SHUTDOWN)))
    reporter._flush_instances()

    assert keys.report(HERE, UUID) not in etcd.data, "the late report landed"
    assert etcd.data == {}
    assert UUID in reporter._stale, "a deleted instance must not keep running here"


class _CountingEtcd(_Etcd):
    def __init__(self, after_first_read: Callable[[], None] | None = None) -> None:
        super().__init__(after_first_read)
        self.calls: list[str] = []

    def get_many(self, keys: Sequence[str]) -> list[_Entry | None]:
        self.calls.append("get_many")
        return super().get_many(keys)

    def get_record(self, key: str, cls: type) -> tuple[object, int] | None:
        self.calls.append("get_record")
        return super().get_record(key, cls)

    def transaction(self, expect: Mapping[str, int], ops: Sequence[Op]) -> int | None:
        self.calls.append("transaction")
        return super().transaction(expect, ops)


def _burst(etcd: _Etcd, n: int) -> tuple[Reporter, list[str]]:
    """`n` instances ACTIVE here by the scheduler's records, each with a view queued."""
    reporter = reporter_on(etcd)
    uuids = [f"5c0f0000-0000-4000-8000-0000000001{i:02x}" for i in range(n)]
    for uuid in uuids:
        spec = InstanceSpec(uuid, "instance-1", "heartbeat", 1, 64)
        etcd.put(keys.instance(uuid), InstanceRecord(spec=spec, status=status.ACTIVE, host=HERE))
        reporter.instance_changed(InstanceView(spec, State(status.ACTIVE, status.RUNNING), 9, 1, 2))
    return reporter, uuids


def test_a_burst_of_views_is_read_once_and_written_once():
    etcd = _CountingEtcd()
    reporter, uuids = _burst(etcd, 5)
    reporter._flush_instances()
    assert etcd.calls == ["get_many", "transaction"]
    assert all(keys.report(HERE, u) in etcd.data for u in uuids)
    assert reporter._pending == {}


def test_when_one_record_moves_during_a_burst_each_view_is_decided_again_alone():
    etcd = _CountingEtcd()
    reporter, uuids = _burst(etcd, 3)
    moved = InstanceRecord(spec=InstanceSpec(uuids[1], "instance-1", "heartbeat", 1, 64),
                           status=status.ACTIVE, host=ELSEWHERE)  # fmt: skip
    etcd._hook = lambda: etcd.put(keys.instance(uuids[1]), moved)  # evacuated meanwhile
    reporter._flush_instances()
    assert etcd.calls[:2] == ["get_many", "transaction"]
    assert etcd.calls.count("get_record") == 3, "each view read again on its own"
    assert {u for u in uuids if keys.report(HERE, u) in etcd.data} == {uuids[0], uuids[2]}
    assert reporter._stale == {uuids[1]}, "the evacuated one is removed here"


def test_an_instance_a_scheduler_placed_is_removed_once_its_record_is_gone_unread():
    """Frozen (or cut off) right after the spawn, before the reporter read the record once,
    and deleted meanwhile: the Spawn's word that a scheduler placed it is enough."""
    etcd = _Etcd()
    reporter = reporter_on(etcd)
    placed = InstanceView(SPEC, State(status.ACTIVE, status.RUNNING), 9, 1, 2, placed=True)
    reporter.instance_changed(placed)
    reporter._flush_instances()
    assert reporter._stale == {UUID} and etcd.data == {}


def test_a_stray_report_without_a_record_never_shows_a_server():
    """Even a report that somehow outlived its record (a host that never came back)
    brings no server back in any scheduler's view."""
    etcd = _Etcd()
    etcd.put(keys.report(HERE, UUID), ours())
    assert scheduler_view(etcd).instances == {}
    etcd.put(keys.instance(UUID), scheduler(status.BUILD))
    assert scheduler_view(etcd).instances[UUID].status == status.ACTIVE
    etcd.put_many(removed_with(scheduler()))
    assert scheduler_view(etcd).instances == {}


def test_deleting_a_record_in_the_view_drops_the_server_even_before_the_report():
    v = ClusterView()
    v.apply(keys.instance(UUID), scheduler().to_json().encode(), 5)
    v.apply(keys.report(HERE, UUID), ours().to_json().encode(), 6)
    v.apply(keys.instance(UUID), None, 7)
    assert v.instances == {}
    v.apply(keys.report(HERE, UUID), None, 7)
    assert v.instances == {} and v.reports == {}


def test_removed_with_covers_record_report_and_address():
    record = InstanceRecord(
        spec=InstanceSpec(UUID, "instance-1", "heartbeat", 1, 64, ip="10.0.0.5/24"),
        status=status.ACTIVE,
        host=HERE,
    )
    assert removed_with(record) == [
        Delete(keys.instance(UUID)),
        Delete(keys.report(HERE, UUID)),
        Delete(keys.ip("10.0.0.5")),
    ]


def test_after_a_restart_an_instance_deleted_while_away_goes_and_an_unplaced_one_stays():
    """Adopted at start, no record in etcd: the scheduler's delete took this host's
    report with the record, so a report still there means no scheduler placed it."""
    deleted_away, standalone = "5c0f0000-0000-4000-8000-0000000000d1", UUID
    etcd = _Etcd()
    etcd.put(keys.report(HERE, standalone), ours())
    reporter = reporter_on(etcd)
    for uuid in (deleted_away, standalone):
        reporter._adopted.add(uuid)
        spec = InstanceSpec(uuid, "instance-1", "heartbeat", 1, 64)
        reporter.instance_changed(InstanceView(spec, State(status.ACTIVE, status.RUNNING), 9, 1, 2))
    reporter._flush_instances()

    assert reporter._stale == {deleted_away}
    assert set(etcd.data) == {keys.report(HERE, standalone)}
    assert reporter._adopted == set()
