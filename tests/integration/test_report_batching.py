"""The reporter's batching on a real etcd: changes that arrive together (a burst of
spawns) wait a moment for each other (agent/reporter.py `_GATHER`) and reach etcd in
one read and one write, not one of each per instance."""

from __future__ import annotations

import time
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
from computed.store.records import InstanceRecord, InstanceReport, InstanceSpec
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

HOST = "host-a"
BURST = 10
SPACING = 0.002  # seconds between two builds' ends: 18 ms in all, under _GATHER


def _spec(i: int) -> InstanceSpec:
    uuid = f"5c0f0000-0000-4000-8000-{i:012x}"
    return InstanceSpec(
        uuid=uuid, name=f"instance-{i:08x}", image="heartbeat", vcpus=1, memory_mb=64
    )


class CountingStore:
    """The reporter's own Store, counting the requests it sends to etcd."""

    def __init__(self, real: Store) -> None:
        self.real, self.reads, self.writes = real, 0, 0

    def get_many(self, ks):
        self.reads += 1
        return self.real.get_many(ks)

    def get_record(self, k, cls):
        self.reads += 1
        return self.real.get_record(k, cls)

    def transaction(self, expect, ops):
        self.writes += 1
        return self.real.transaction(expect, ops)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_burst_of_changes_reaches_etcd_in_one_read_and_one_write(etcd):
    scheduler = Store(etcd.endpoint, timeout=5)
    specs = [_spec(i) for i in range(BURST)]
    for s in specs:  # placed on this host and building, as the scheduler leaves them
        scheduler.put(keys.instance(s.uuid), InstanceRecord(spec=s, status=status.BUILD, host=HOST))
    reporter = Reporter(
        AgentConfig(host_id=HOST, etcd=(etcd.endpoint,)),
        Capacity(vcpus=4, memory_mb=2048),
        KvmFacts(12, "kvm_intel", "kernel", False),
    )
    counting = reporter.store = CountingStore(reporter.store)  # type: ignore[assignment]
    reporter.attach(SimpleNamespace(list=lambda: []))  # type: ignore[arg-type]
    reporter.start()
    try:
        active = State(status.ACTIVE, status.RUNNING)
        for s in specs:  # the builds end one after another, a few ms apart, as in a burst
            reporter.instance_changed(InstanceView(s, active, 4242, 1.0, 2.0, placed=True))
            time.sleep(SPACING)

        def all_active() -> bool:
            found = scheduler.get_many([keys.report(HOST, s.uuid) for s in specs])
            return all(e is not None and e.record(InstanceReport).status == status.ACTIVE
                       for e in found)  # fmt: skip

        wait_until(all_active, what="every instance reported ACTIVE")
        # One of each: the first change waited for the rest. A machine that stalls this
        # loop for longer than the gathering moment splits the burst, which is still far
        # from the one read and one write per instance of a reporter that does not wait.
        assert counting.reads <= 3 and counting.writes <= 3, (counting.reads, counting.writes)
    finally:
        reporter.close()
        scheduler.close()
