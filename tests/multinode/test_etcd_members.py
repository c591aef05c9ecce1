"""`deploy/devcluster up --etcd-members 3`: the dev cluster on a real 3-member etcd, which
keeps serving with one member killed."""

from __future__ import annotations

import os
import signal

import pytest

from computed.devcluster import processes
from tests.multinode.conftest import _free_ports, wait_for

pytestmark = pytest.mark.multinode


@pytest.mark.timeout(300)
def test_a_dev_cluster_on_three_etcd_members_survives_losing_one(make_cluster):
    node = make_cluster(hosts=2, etcd_members=3, etcd_port=_free_ports(6))
    cluster = node.cluster
    assert sorted(n for n in cluster.pids if n.startswith("etcd")) == [
        "etcd-m0", "etcd-m1", "etcd-m2"
    ]  # fmt: skip
    node.create_active("before")
    victim = cluster.pids["etcd-m0"]
    os.kill(victim, signal.SIGKILL)
    wait_for("etcd-m0 gone", lambda: not processes.alive(victim), 30)
    wait_for("another member to answer healthy", cluster.etcd_healthy, 30)
    after = node.create_active("after", count=2)
    assert {s.instance.host for s in after} <= {h.host_id for h in node.hosts}
    node.wait_all_up()
