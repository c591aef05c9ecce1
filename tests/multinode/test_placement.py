"""Scenario 1: server groups across three hosts, each host its own namespace and agent."""

from __future__ import annotations

import grpc
import pytest

from computed.api import compute_pb2
from tests.multinode.conftest import status

pytestmark = pytest.mark.multinode


def _group(stub, name: str, policy: int) -> None:
    stub.CreateServerGroup(
        compute_pb2.CreateServerGroupRequest(name=name, policy=policy), timeout=10
    )


@pytest.mark.timeout(180)
def test_anti_affinity_spreads_one_per_host_and_affinity_packs(devcluster):
    stub = devcluster.stub
    all_hosts = {h.host_id for h in devcluster.hosts}

    _group(stub, "ha", compute_pb2.GROUP_POLICY_ANTI_AFFINITY)
    spread = devcluster.create_active("ha", count=3, group="ha")
    assert sorted(s.instance.host for s in spread) == sorted(all_hosts), "one per host"
    with pytest.raises(grpc.RpcError) as e:
        devcluster.create("ha4", group="ha")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ServerGroupFilter" in e.value.details(), e.value.details()
    assert "anti-affinity" in e.value.details(), e.value.details()
    group = next(
        g
        for g in stub.ListServerGroups(compute_pb2.ListServerGroupsRequest(), timeout=10).groups
        if g.name == "ha"
    )
    assert sorted(group.members) == sorted(s.instance.spec.uuid for s in spread)

    _group(stub, "pack", compute_pb2.GROUP_POLICY_AFFINITY)
    packed = devcluster.create_active("pack", count=3, group="pack")
    assert len({s.instance.host for s in packed}) == 1, [s.instance.host for s in packed]
    # A later member joins the others.
    more = devcluster.create("pack4", group="pack")
    assert more[0].instance.host == packed[0].instance.host

    # What the API reports matches where the instances actually run.
    listed = devcluster.servers()
    assert len(listed) == 7 and all(status(s) == "ACTIVE" for s in listed)
    for host in devcluster.hosts:
        on_host = devcluster.servers(host=host.host_id)
        assert {s.instance.host for s in on_host} <= {host.host_id}
    assert all(s.instance.pid > 0 for s in listed)
