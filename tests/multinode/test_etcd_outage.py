"""Scenario 4: etcd gone for 30 s. Instances run on untouched; everything resyncs after."""

from __future__ import annotations

import time

import pytest

from tests.multinode.conftest import pid_alive, status, wait_for

pytestmark = pytest.mark.multinode

OUTAGE = 30.0


@pytest.mark.timeout(240)
def test_etcd_outage_leaves_vmms_alone_and_everything_resyncs(devcluster):
    servers = devcluster.create_active("steady", count=3)
    pids = {s.instance.spec.uuid: s.instance.pid for s in servers}
    hosts = {s.instance.spec.uuid: s.instance.host for s in servers}

    devcluster.cluster.stop_etcd()
    assert not devcluster.cluster.etcd_healthy()
    deadline = time.monotonic() + OUTAGE
    while time.monotonic() < deadline:
        dead = [p for p in pids.values() if not pid_alive(p)]
        assert not dead, f"VMMs {dead} died during the etcd outage"
        time.sleep(1.0)
    # The agents and the scheduler ride out the outage rather than exiting.
    for name in ["scheduler-1", *(h.host_id for h in devcluster.hosts)]:
        assert devcluster.cluster.running(name), f"{name} exited during the etcd outage"
    devcluster.cluster.start_etcd()

    devcluster.wait_all_up(timeout=45)

    def settled():
        listed = devcluster.servers()
        seen = {s.instance.spec.uuid: s for s in listed}
        if len(listed) != len(seen) or set(seen) != set(pids):
            return None
        if any(status(s) != "ACTIVE" or s.host_status != "UP" for s in listed):
            return None
        return listed

    listed = wait_for("every instance listed once, ACTIVE, host UP", settled, 30)
    for s in listed:
        uuid = s.instance.spec.uuid
        assert (s.instance.host, s.instance.pid) == (hosts[uuid], pids[uuid])
        assert pid_alive(pids[uuid])

    fresh = wait_for("a create after the outage", lambda: devcluster.create("after"), 30)
    assert status(fresh[0]) == "ACTIVE"
    # ListServers answers from the scheduler's watch cache: give it a moment to see it.
    wait_for("the new server listed", lambda: len(devcluster.servers()) == 4, 10)
    assert fresh[0].instance.pid > 0 and pid_alive(fresh[0].instance.pid)
