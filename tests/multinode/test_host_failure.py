"""Scenarios 2 and 3: an agent killed with -9 and restarted; a host lost for good and evacuated."""

from __future__ import annotations

import json
import os
import signal
import time

import grpc
import pytest

from computed.api import compute_pb2
from computed.store import keys
from tests.multinode.conftest import pid_alive, status, wait_for

pytestmark = pytest.mark.multinode


def _stats_timestamp(node, uuid: str, host: str) -> float | None:
    with node.store() as s:
        entry = s.get(keys.instance_stats(host, uuid))
    return None if entry is None else float(json.loads(entry.value)["timestamp"])


@pytest.mark.timeout(180)
def test_agent_killed_and_restarted_readopts_its_vmms(devcluster):
    servers = devcluster.create_active("keep", count=3)
    victim = devcluster.host(servers[0].instance.host)
    mine = [s for s in servers if s.instance.host == victim.host_id]
    pids = {s.instance.spec.uuid: s.instance.pid for s in mine}
    others = {s.instance.spec.uuid: s.instance.pid for s in servers if s not in mine}
    for uuid in pids:
        wait_for(
            f"stats of {uuid}", lambda u=uuid: _stats_timestamp(devcluster, u, victim.host_id), 15
        )

    devcluster.cluster.kill_agent(victim)  # SIGKILL: the VMMs run on without it
    assert not devcluster.cluster.running(victim.host_id)
    devcluster.wait_host(victim.host_id, up=False, timeout=devcluster.plan.lease_ttl + 7)
    assert all(pid_alive(p) for p in pids.values()), "VMMs died with their agent"
    shown = devcluster.get(mine[0].instance.spec.uuid)
    assert shown.host_status == "UNKNOWN"

    restarted_at = time.time()
    devcluster.cluster.start_agent(victim)
    devcluster.wait_host(victim.host_id, up=True, timeout=20)
    for uuid, pid in pids.items():
        again = wait_for(
            f"{uuid} ACTIVE on {victim.host_id} again",
            lambda u=uuid: (s := devcluster.get(u)).host_status == "UP" and s,
            20,
        )
        assert (again.instance.host, status(again), again.instance.pid) == (
            victim.host_id,
            "ACTIVE",
            pid,
        ), "not re-adopted with the same pid"
        assert pid_alive(pid)
        # Stats resume: a sample taken after the restart.
        wait_for(
            f"fresh stats of {uuid}",
            lambda u=uuid: (_stats_timestamp(devcluster, u, victim.host_id) or 0) > restarted_at,
            20,
        )
        assert devcluster.get(uuid).stats.sampled_at > restarted_at
    # The other hosts' instances were never touched.
    for uuid, pid in others.items():
        s = devcluster.get(uuid)
        assert (status(s), s.instance.pid) == ("ACTIVE", pid) and pid_alive(pid)
    assert len(devcluster.servers()) == 3


@pytest.mark.timeout(180)
def test_down_host_is_evacuated_and_cleans_up_when_it_returns(devcluster):
    servers = devcluster.create_active("ev", count=3)
    victim = devcluster.host(servers[0].instance.host)
    doomed = {s.instance.spec.uuid: s for s in servers if s.instance.host == victim.host_id}
    old_pids = {u: s.instance.pid for u, s in doomed.items()}
    ref = compute_pb2.HostRef(host_id=victim.host_id)
    with pytest.raises(grpc.RpcError) as e:
        devcluster.stub.EvacuateHost(ref, timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, "an up host is not evacuated"

    devcluster.cluster.kill_agent(victim)
    started = time.monotonic()
    devcluster.wait_host(victim.host_id, up=False, timeout=devcluster.plan.lease_ttl + 7)
    assert time.monotonic() - started < devcluster.plan.lease_ttl + 7
    assert all(pid_alive(p) for p in old_pids.values())

    moved = list(devcluster.stub.EvacuateHost(ref, timeout=90).servers)
    assert sorted(s.instance.spec.uuid for s in moved) == sorted(doomed)
    for s in moved:
        assert status(s) == "ACTIVE", s
        assert s.instance.host != victim.host_id
        assert s.name == doomed[s.instance.spec.uuid].name
        assert s.instance.pid not in old_pids.values()
    new_pids = {s.instance.spec.uuid: s.instance.pid for s in moved}
    assert all(pid_alive(p) for p in new_pids.values())
    # Still one of each, all ACTIVE, none on the dead host.
    listed = devcluster.servers()
    assert sorted(s.instance.spec.uuid for s in listed) == sorted(
        s.instance.spec.uuid for s in servers
    )
    assert all(status(s) == "ACTIVE" and s.instance.host != victim.host_id for s in listed)

    devcluster.cluster.start_agent(victim)  # the host returns: it drops the evacuated copies
    devcluster.wait_host(victim.host_id, up=True, timeout=20)
    wait_for(
        "the evacuated copies' VMMs to be gone",
        lambda: not any(pid_alive(p) for p in old_pids.values()),
        15,
    )
    for uuid, pid in new_pids.items():
        s = devcluster.get(uuid)
        assert s.instance.host != victim.host_id and status(s) == "ACTIVE"
        assert s.instance.pid == pid and pid_alive(pid)
    assert len(devcluster.servers()) == 3


@pytest.mark.timeout(120)
def test_a_server_deleted_while_its_host_is_down_is_removed_when_the_host_returns(make_cluster):
    node = make_cluster(hosts=1)
    (server,) = node.create_active("gone")
    host = node.hosts[0]
    pid = server.instance.pid
    node.cluster.kill_agent(host)
    node.wait_host(host.host_id, up=False, timeout=node.plan.lease_ttl + 7)
    node.stub.DeleteServer(compute_pb2.ServerRef(name_or_id="gone"), timeout=30)
    assert pid_alive(pid), "nothing could reach the VMM while its agent was down"

    node.cluster.start_agent(host)
    wait_for("the deleted server's VMM gone", lambda: not pid_alive(pid), 60)
    time.sleep(1.5)  # the agent's reports since: none may bring the record back
    with node.store() as s:
        assert s.get(keys.instance(server.instance.spec.uuid)) is None
        assert s.get(keys.report(host.host_id, server.instance.spec.uuid)) is None
    assert node.servers() == []


@pytest.mark.timeout(120)
def test_a_server_deleted_while_its_agent_is_frozen_is_removed_when_it_thaws(make_cluster):
    """No restart: the agent is cut off past its lease, the server is deleted meanwhile
    (no Delete can reach it), and on thawing it finds the record it knew gone."""
    node = make_cluster(hosts=1)
    (server,) = node.create_active("frozen-gone")
    host = node.hosts[0]
    uuid = server.instance.spec.uuid
    agent_pid = node.cluster.pids[host.host_id]
    os.kill(agent_pid, signal.SIGSTOP)
    try:
        node.wait_host(host.host_id, up=False, timeout=node.plan.lease_ttl + 7)
        node.stub.DeleteServer(compute_pb2.ServerRef(name_or_id="frozen-gone"), timeout=30)
    finally:
        os.kill(agent_pid, signal.SIGCONT)
    wait_for("the deleted server's VMM gone", lambda: not pid_alive(server.instance.pid), 60)

    def nothing_left() -> bool:
        with node.store() as s:
            return (
                s.get(keys.instance(uuid)) is None
                and s.get(keys.report(host.host_id, uuid)) is None
            )

    wait_for("no record and no report left", nothing_left, 10)
    assert node.servers() == []


@pytest.mark.timeout(120)
def test_a_frozen_agent_that_comes_back_removes_its_evacuated_copies(make_cluster):
    """No restart this time: the agent is frozen (a partition, say) past its lease, its
    instance is evacuated, and when it thaws it gets a new lease and cleans up."""
    node = make_cluster(hosts=2)
    (server,) = node.create_active("moved")
    source = node.host(server.instance.host)
    old_pid = server.instance.pid
    agent_pid = node.cluster.pids[source.host_id]
    os.kill(agent_pid, signal.SIGSTOP)
    try:
        node.wait_host(source.host_id, up=False, timeout=node.plan.lease_ttl + 7)
        moved = node.stub.EvacuateHost(
            compute_pb2.HostRef(host_id=source.host_id), timeout=60
        ).servers
        assert [s.instance.host != source.host_id for s in moved] == [True]
    finally:
        os.kill(agent_pid, signal.SIGCONT)
    node.wait_host(source.host_id, up=True, timeout=20)
    wait_for("the evacuated copy gone from the old host", lambda: not pid_alive(old_pid), 15)
    shown = node.get("moved")
    assert (status(shown), shown.instance.host) == ("ACTIVE", moved[0].instance.host)
    assert pid_alive(shown.instance.pid)
    with node.store() as s:
        assert s.get(keys.report(source.host_id, server.instance.spec.uuid)) is None
