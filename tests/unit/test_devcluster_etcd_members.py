"""`deploy/devcluster up --etcd-members 3`: the plan and each member's command line."""

from __future__ import annotations

import pytest

from computed.devcluster.etcd_members import etcd_member_argvs
from computed.devcluster.plan import PlanError, make_plan


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_three_members_each_have_their_own_ports_and_data_directory():
    plan = make_plan(etcd_members=3, etcd_port=2379, state_dir="/var/tmp/cdx")
    assert plan.etcd_endpoints == ("10.213.0.1:2379", "10.213.0.1:2381", "10.213.0.1:2383")
    members = etcd_member_argvs(plan, "/usr/bin/etcd")
    assert [name for name, _ in members] == ["etcd-m0", "etcd-m1", "etcd-m2"]
    data_dirs = {_flag(argv, "--data-dir") for _, argv in members}
    assert data_dirs == {f"/var/tmp/cdx/etcd/m{i}" for i in range(3)}
    peers = [_flag(argv, "--listen-peer-urls") for _, argv in members]
    assert peers == [f"http://127.0.0.1:{p}" for p in (2380, 2382, 2384)]  # peers on loopback
    for _, argv in members:
        assert _flag(argv, "--initial-cluster").count("=http://127.0.0.1:") == 3
    # Agents in their namespaces reach a member on the bridge; tools on loopback.
    assert _flag(members[1][1], "--listen-client-urls") == (
        "http://10.213.0.1:2381,http://127.0.0.1:2381"
    )


def test_one_member_keeps_the_single_endpoint():
    plan = make_plan()
    assert plan.etcd_members == 1 and plan.etcd_endpoints == ("10.213.0.1:2379",)


def test_an_even_member_count_is_refused():
    with pytest.raises(PlanError, match="--etcd-members 2"):
        make_plan(etcd_members=2)
