"""The lingering DELETED record, replayed on a real etcd: the agent's late report racing
the scheduler's delete, at each point where the delete can land, deterministically.

agent/report_rules.py explains the rule; tests/unit/test_agent_report_rules.py replays
it over a dict. Here the Reporter talks to a real etcd through the real Store, and the
scheduler's side (DeleteServer removing the key after the agent's Delete queued the
DELETED view) is done with a second Store at the chosen moment.
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from agent.config import AgentConfig
from agent.host_facts import KvmFacts
from agent.instance_state import State
from agent.reporter import Reporter
from agent.supervisor import InstanceView
from computed import status
from computed.capacity import Capacity
from computed.store import keys
from computed.store.client import Store
from computed.store.records import InstanceRecord, InstanceSpec
from scheduler.instance_reports import removed_with

pytestmark = pytest.mark.integration

UUID = "5c0f0000-0000-4000-8000-0000000000bb"
HOST = "host-a"
SPEC = InstanceSpec(uuid=UUID, name="instance-000000bb", image="heartbeat", vcpus=1, memory_mb=64)


def _view(state: str, power: str) -> InstanceView:
    return InstanceView(SPEC, State(state, power), None, created_at=1.0, updated_at=2.0)


def _race(etcd, moment: str) -> Store:
    """Run the race with the scheduler's delete landing at `moment`; etcd's store after."""
    scheduler = Store(etcd.endpoint, timeout=5)
    key = keys.instance(UUID)
    record = InstanceRecord(spec=SPEC, status=status.ACTIVE, host=HOST, display_name="web")
    scheduler.put(key, record)
    reporter = Reporter(
        AgentConfig(host_id=HOST, etcd=(etcd.endpoint,)),
        Capacity(vcpus=4, memory_mb=2048),
        KvmFacts(12, "kvm_intel", "kernel", False),
    )
    real = reporter.store
    deleted = _view(status.DELETED, status.NOSTATE)

    def scheduler_deletes() -> None:
        reporter.instance_changed(deleted)  # the agent's Delete queued its view and returned
        scheduler.put_many(removed_with(record))  # then DeleteServer removed record and report

    class Racing:
        """The reporter's Store, with the scheduler's delete at the chosen moment, once."""

        armed = True

        def get_record(self, k, cls):
            self._before_the_read()
            return real.get_record(k, cls)

        def get_many(self, ks):  # the reporter reads a burst's records together
            self._before_the_read()
            return real.get_many(ks)

        def _before_the_read(self):
            if moment == "before the read" and self.armed:
                self.armed = False
                scheduler_deletes()

        def transaction(self, expect, ops):
            if moment == "between the read and the write" and self.armed:
                self.armed = False
                scheduler_deletes()
            return real.transaction(expect, ops)

        def __getattr__(self, name):
            return getattr(real, name)

    racing = reporter.store = Racing()  # type: ignore[assignment]
    try:
        reporter.instance_changed(_view(status.SHUTOFF, status.SHUTDOWN))  # the VMM's exit
        reporter._flush_instances()  # the SHUTOFF view, while the delete lands
        reporter._flush_instances()  # the DELETED view, in its turn
        assert not racing.armed, f"the delete never landed {moment}"
        assert reporter._pending == {}
    finally:
        real.close()
    return scheduler


@pytest.mark.parametrize("moment", ["before the read", "between the read and the write"])
def test_a_delete_racing_a_late_report_leaves_no_record_in_etcd(etcd, moment):
    scheduler = _race(etcd, moment)
    try:
        assert scheduler.get(keys.instance(UUID)) is None
        assert scheduler.get_prefix(keys.ROOT)[0] == []
    finally:
        scheduler.close()


def test_a_vmm_that_ends_between_two_samples_leaves_no_stats_key(etcd):
    vmm = subprocess.Popen(["sleep", "300"])  # stands in for the VMM: sampled as any process
    reporter = Reporter(
        AgentConfig(host_id=HOST, etcd=(etcd.endpoint,)),
        Capacity(vcpus=4, memory_mb=2048),
        KvmFacts(12, "kvm_intel", "kernel", False),
    )
    key = keys.instance_stats(HOST, UUID)
    views = [InstanceView(SPEC, State(status.ACTIVE, status.RUNNING), vmm.pid, 1.0, 2.0)]
    reporter.supervisor = SimpleNamespace(list=lambda: list(views))  # type: ignore[assignment]
    reporter.lease = SimpleNamespace(lease_id=reporter.store.grant_lease(60))  # type: ignore[assignment]
    try:
        reporter._write_stats()
        assert reporter.store.get(key) is not None
        vmm.kill()  # the VMM ends (a delete, a stop, a crash) ...
        vmm.wait()
        reporter._write_stats()  # ... and is sampled once more before the supervisor drops it
        views.clear()
        reporter._write_stats()
        assert reporter.store.get(key) is None
    finally:
        vmm.kill()
        vmm.wait()
        reporter.store.close()
