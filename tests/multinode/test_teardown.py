"""Scenario 6: `down` leaves nothing behind: no process, namespace, interface or directory.

(Every other test's fixture checks the same after its own teardown.)"""

from __future__ import annotations

import os

import pytest

from computed.devcluster import netns, processes
from tests import ksm_host
from tests.multinode.conftest import leftovers, pid_alive

pytestmark = pytest.mark.multinode


@pytest.mark.timeout(120)
def test_down_removes_everything_and_is_idempotent(make_cluster):
    ksm_found = ksm_host.read("run") if ksm_host.available() else None
    node = make_cluster(hosts=2)
    plan = node.plan
    servers = node.create_active("gone", count=2)
    vmm_pids = [s.instance.pid for s in servers]
    marked = set(processes.marked(plan.state_dir))
    # Everything the cluster runs carries its mark: etcd, scheduler, agents and the VMMs.
    assert set(node.cluster.pids.values()) | set(vmm_pids) <= marked
    assert len(marked) >= 1 + 1 + 2 + 2
    assert {h.netns for h in plan.hosts} <= set(netns.namespaces())
    assert plan.bridge in netns.links(plan.tag)
    assert os.path.isdir(plan.state_dir)

    if ksm_found is not None:
        assert ksm_host.read("run") == "1"  # the agents started it, as on a compute host

    removed = node.cluster.down()
    assert leftovers(plan) == []
    if ksm_found is not None:  # a host-wide setting: back as `up` found it
        assert ksm_host.read("run") == ksm_found
    assert not any(pid_alive(p) for p in marked)
    assert any("process" in r for r in removed) and f"directory {plan.state_dir}" in removed
    # A second down (or one after a crash) finds nothing and does not fail.
    assert node.cluster.down() == []
    assert leftovers(plan) == []
