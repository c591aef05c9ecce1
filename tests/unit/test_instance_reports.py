"""Which host's report speaks for an instance, and what moves and deletes remove
(scheduler/instance_reports.py)."""

from __future__ import annotations

from computed import status
from computed.store import keys
from computed.store.ops import Delete
from computed.store.records import InstanceRecord, InstanceReport, InstanceSpec
from scheduler.cluster_view import ClusterView
from scheduler.instance_reports import merged, removed_with, report_left_behind

UUID = "5c0f0000-0000-4000-8000-0000000000bb"
SPEC = InstanceSpec(uuid=UUID, name="instance-000000bb", image="heartbeat", vcpus=1, memory_mb=64)


def record(host: str = "a", state: str = status.ACTIVE) -> InstanceRecord:
    return InstanceRecord(spec=SPEC, status=state, host=host, updated_at=10.0, display_name="w")


def report(state: str = status.SHUTOFF, pid: int | None = None) -> InstanceReport:
    return InstanceReport(state, status.SHUTDOWN, "stopped by hand", pid, updated_at=20.0)


def test_the_current_hosts_report_wins_the_observed_fields():
    shown = merged(record(), {"a": report()})
    assert (shown.status, shown.power_state, shown.fault, shown.pid) == (
        status.SHUTOFF,
        status.SHUTDOWN,
        "stopped by hand",
        None,
    )
    assert (shown.host, shown.display_name, shown.updated_at) == ("a", "w", 20.0)


def test_a_spawning_report_never_hides_the_spawns_recorded_outcome():
    """The agent reports BUILD while it spawns; the scheduler records ACTIVE from the
    Spawn answer. Seen in that order, the server shows ACTIVE, not BUILD again."""
    spawning = InstanceReport(status.BUILD, status.NOSTATE, "", None, updated_at=20.0)
    assert merged(record(state=status.ACTIVE), {"a": spawning}).status == status.ACTIVE
    assert merged(record(state=status.ERROR), {"a": spawning}).status == status.ERROR
    assert merged(record(state=status.BUILD), {"a": spawning}).status == status.BUILD


def test_a_report_from_a_host_the_instance_left_is_ignored():
    assert merged(record(host="b", state=status.BUILD), {"a": report()}) == record(
        "b", status.BUILD
    )


def test_without_a_host_no_report_counts():
    assert merged(record(host="", state=status.ERROR), {"": report(), "a": report()}).status == (
        status.ERROR
    )


def test_without_a_report_the_schedulers_record_stands():
    assert merged(record(), {}) == record()


def test_a_move_removes_the_old_hosts_report_only():
    assert report_left_behind(record("a"), "b") == [Delete(keys.report("a", UUID))]
    assert report_left_behind(record("a"), "a") == []
    assert report_left_behind(record(""), "b") == []
    assert report_left_behind(record("a"), "") == [Delete(keys.report("a", UUID))]


def test_a_delete_removes_the_record_and_its_hosts_report():
    assert removed_with(record("a")) == [
        Delete(keys.instance(UUID)),
        Delete(keys.report("a", UUID)),
    ]


def test_the_view_follows_record_and_report_in_any_order():
    v = ClusterView()
    v.apply(keys.report("b", UUID), report(pid=7).to_json().encode(), 3)
    assert v.instances == {}, "a report alone shows no server"
    v.apply(keys.instance(UUID), record("a", status.ACTIVE).to_json().encode(), 4)
    assert v.instances[UUID].status == status.ACTIVE, "b's report does not speak for a"
    v.apply(keys.instance(UUID), record("b", status.BUILD).to_json().encode(), 5)
    assert (v.instances[UUID].status, v.instances[UUID].pid) == (status.SHUTOFF, 7)
    v.apply(keys.report("b", UUID), None, 6)
    assert v.instances[UUID].status == status.BUILD
    assert v.records[UUID].status == status.BUILD


def test_a_malformed_report_key_is_ignored():
    v = ClusterView()
    v.apply(keys.REPORTS + "no-uuid", b"{}", 3)
    v.apply(keys.report("a", UUID), b"not json", 4)
    assert v.reports == {} and v.instances == {}
