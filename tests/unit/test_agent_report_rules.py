"""The reporter's reconciliation rules (agent/report_rules.py), one test per rule,
and a replay of the churn-and-soak delete race through the real Reporter."""

from __future__ import annotations

import dataclasses

from agent.config import AgentConfig
from agent.host_facts import KvmFacts
from agent.instance_state import State
from agent.report_rules import (
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
from computed.store.records import InstanceRecord, InstanceSpec

UUID = "5c0f0000-0000-4000-8000-0000000000aa"
HERE, ELSEWHERE = "host-a", "host-b"
SPEC = InstanceSpec(uuid=UUID, name="instance-000000aa", image="heartbeat", vcpus=1, memory_mb=64)


def ours(state: str = status.ACTIVE, host: str = HERE) -> InstanceRecord:
    """The agent's view as a record: it knows nothing of the scheduler-owned fields."""
    return InstanceRecord(spec=SPEC, status=state, power_state=status.RUNNING, host=host, pid=42)


def scheduler(state: str = status.ACTIVE, host: str = HERE) -> InstanceRecord:
    return InstanceRecord(
        spec=SPEC,
        status=state,
        host=host,
        display_name="web-1",
        flavor="m1.tiny",
        availability_zone="az1",
        group="web",
    )


def decide(mine: InstanceRecord, current: InstanceRecord | None, **kw: bool):
    return reconcile(mine, current, **{"adopted": False, "superseded": False, **kw})


# --- being removed here -------------------------------------------------------------------


def test_an_instance_being_removed_here_is_never_reported():
    assert isinstance(while_removing(status.SHUTOFF), Skip)


def test_the_deleted_view_ends_the_local_removal_so_a_later_spawn_is_new():
    assert while_removing(status.DELETED) == RemovalFinished()


# --- etcd has no record -------------------------------------------------------------------


def test_an_adopted_instance_deleted_while_this_agent_was_away_is_removed_here():
    decision = decide(ours(), None, adopted=True)
    assert isinstance(decision, RemoveLocally) and "away" in decision.reason


def test_late_deleted_never_recreates_a_record_the_scheduler_removed():
    assert isinstance(decide(ours(status.DELETED), None), Skip)
    assert isinstance(decide(ours(status.DELETED), None, adopted=True), Skip)


def test_a_superseded_view_never_recreates_a_record_the_scheduler_removed():
    assert isinstance(decide(ours(status.SHUTOFF), None, superseded=True), Skip)


def test_the_latest_view_creates_the_record_when_no_scheduler_wrote_one():
    assert decide(ours(), None) == Write(ours())


# --- etcd has a record --------------------------------------------------------------------


def test_late_deleted_never_overwrites_a_record_moved_to_another_host():
    assert isinstance(decide(ours(status.DELETED), scheduler(host=ELSEWHERE)), Skip)


def test_late_deleted_never_overwrites_a_failed_build_the_scheduler_left_without_host():
    assert isinstance(decide(ours(status.DELETED), scheduler(status.ERROR, host="")), Skip)


def test_deleted_here_ends_the_record_this_host_still_holds():
    decision = decide(ours(status.DELETED), scheduler())
    assert isinstance(decision, Write) and decision.record.status == status.DELETED


def test_an_instance_evacuated_to_another_host_is_removed_here():
    decision = decide(ours(), scheduler(host=ELSEWHERE))
    assert isinstance(decision, RemoveLocally) and ELSEWHERE in decision.reason


def test_the_agent_keeps_the_scheduler_owned_fields():
    decision = decide(ours(status.PAUSED), scheduler(status.BUILD, host=""))
    expected = dataclasses.replace(
        ours(status.PAUSED),
        display_name="web-1",
        flavor="m1.tiny",
        availability_zone="az1",
        group="web",
    )
    assert decision == Write(expected)


def test_a_superseded_view_still_updates_an_existing_record():
    # Harmless (the newer view follows), and it keeps etcd moving under a burst of changes.
    decision = decide(ours(status.SHUTOFF), scheduler(), superseded=True)
    assert isinstance(decision, Write) and decision.record.status == status.SHUTOFF


# --- the churn-and-soak race, replayed through the Reporter -------------------------------


class _RacingStore:
    """etcd holding one scheduler record, deleted (as DeleteServer does) during the first read.

    That read is where the race bites: the agent's Delete has queued the DELETED
    view and returned, and the scheduler removes the key, while the reporter is
    still writing the SHUTOFF view the VMM's exit queued a moment earlier.
    """

    def __init__(self, on_first_read) -> None:
        self.data: dict[str, tuple[InstanceRecord, int]] = {keys.instance(UUID): (scheduler(), 7)}
        self.revision = 7
        self._on_first_read = on_first_read

    def get_record(self, key: str, cls: type) -> tuple[InstanceRecord, int] | None:
        if self._on_first_read is not None:
            self._on_first_read()
            self._on_first_read = None
            self.data.pop(key, None)
        return self.data.get(key)

    def compare_and_swap(self, key: str, record: InstanceRecord, revision: int) -> bool:
        found = self.data.get(key)
        if (found[1] if found else 0) != revision:
            return False
        self.revision += 1
        self.data[key] = (record, self.revision)
        return True


def view(state: State) -> InstanceView:
    return InstanceView(SPEC, state, None, created_at=1.0, updated_at=2.0)


def test_a_delete_racing_a_late_report_leaves_no_record_behind():
    reporter = Reporter(
        AgentConfig(host_id=HERE),
        Capacity(vcpus=4, memory_mb=2048),
        KvmFacts(12, "kvm_intel", "kernel", False),
    )
    reporter.store.close()
    deleted = view(State(status.DELETED, status.NOSTATE))
    store = _RacingStore(on_first_read=lambda: reporter.instance_changed(deleted))
    reporter.store = store  # type: ignore[assignment]
    reporter.instance_changed(view(State(status.SHUTOFF, status.SHUTDOWN)))

    reporter._flush_instances()  # the SHUTOFF view, while the delete happens
    reporter._flush_instances()  # then the DELETED view

    assert store.data == {}
    assert reporter._pending == {}
