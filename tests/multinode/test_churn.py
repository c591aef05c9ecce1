"""Churn: rounds of create (--count), stop/start, reboot, evacuate and delete on a small
cluster, and after every round nothing is left of any server that is gone
(tests/leftovers.py lists every kind looked for).

`churn_rounds` is shared with test_etcd_upkeep.py, which runs the same rounds while
compacting etcd's history as hard as it can.
"""

from __future__ import annotations

import pytest

from computed.api import compute_pb2
from computed.store import keys
from tests import leftovers
from tests.multinode.conftest import MultiNode, status, wait_for

pytestmark = pytest.mark.multinode


class Churn:
    """The servers a test made and deleted, and what leftovers.find expects of them."""

    def __init__(self, node: MultiNode) -> None:
        self.node = node
        self.alive: set[str] = set()
        self.gone: dict[str, compute_pb2.Server] = {}
        self.ended_pids: set[int] = set()

    def handles(self, store) -> leftovers.Cluster:
        return leftovers.Cluster(self.node.plan, self.node.stubs, store)

    def wanted(self) -> leftovers.Wanted:
        servers = {u: self.node.get(u) for u in self.alive}
        return leftovers.Wanted(servers, dict(self.gone), frozenset(self.ended_pids))

    def create(self, name: str, count: int, group: str = "") -> list[compute_pb2.Server]:
        servers = self.node.create_active(name, count, group=group)
        self.alive |= {s.instance.spec.uuid for s in servers}
        return servers

    def delete(self, uuid: str) -> None:
        last = self.node.get(uuid)
        self.node.stub.DeleteServer(compute_pb2.ServerRef(name_or_id=uuid), timeout=60)
        self.alive.discard(uuid)
        self.gone[uuid] = last
        if last.instance.pid:
            self.ended_pids.add(last.instance.pid)

    def stop_start(self, uuid: str) -> None:
        ref = compute_pb2.ServerRef(name_or_id=uuid)
        pid = self.node.get(uuid).instance.pid
        self.node.stub.StopServer(ref, timeout=60)
        wait_for("SHUTOFF", lambda: status(self.node.get(uuid)) == "SHUTOFF", 30)
        self.ended_pids.add(pid)
        self.node.stub.StartServer(ref, timeout=60)
        wait_for("ACTIVE again", lambda: self.node.get(uuid).instance.pid not in (0, pid), 30)

    def reboot(self, uuid: str, hard: bool) -> None:
        pid = self.node.get(uuid).instance.pid
        request = compute_pb2.RebootServerRequest(name_or_id=uuid, hard=hard)
        self.node.stub.RebootServer(request, timeout=60)
        if hard:  # a new VMM process; the old one and its helper threads must go
            self.ended_pids.add(pid)
            wait_for("a new VMM", lambda: self.node.get(uuid).instance.pid not in (0, pid), 30)
        wait_for("ACTIVE", lambda: status(self.node.get(uuid)) == "ACTIVE", 30)

    def evacuate(self, host_id: str) -> None:
        """Kill a host's agent, evacuate it, bring the agent back: its copies must go."""
        node = self.node
        host = node.host(host_id)
        before = {u: node.get(u).instance.pid for u in self.alive}
        node.cluster.kill_agent(host)
        node.wait_host(host_id, up=False, timeout=node.plan.lease_ttl + 15)
        moved = node.stub.EvacuateHost(compute_pb2.HostRef(host_id=host_id), timeout=120).servers
        assert all(s.instance.host != host_id for s in moved), [s.instance.host for s in moved]
        self.ended_pids |= {before[s.instance.spec.uuid] for s in moved}
        node.cluster.start_agent(host)
        node.wait_host(host_id, up=True, timeout=30)

    def assert_clean(self, store, what: str, timeout: float = 60.0) -> None:
        found: list[str] = []

        def clean() -> bool:
            found[:] = leftovers.find(self.handles(store), self.wanted())
            return not found

        try:
            wait_for(f"no leftovers {what}", clean, timeout, interval=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}; still there: {found}") from None

    def find(self, store) -> list[str]:
        return leftovers.find(self.handles(store), self.wanted())


def churn_rounds(node: MultiNode, rounds: int, evacuate_in: int | None = 1) -> Churn:
    """`rounds` rounds of churn, each checked for leftovers; everything deleted at the end."""
    churn = Churn(node)
    node.stub.CreateServerGroup(
        compute_pb2.CreateServerGroupRequest(
            name="churn", policy=compute_pb2.GROUP_POLICY_ANTI_AFFINITY, soft=True
        ),
        timeout=10,
    )
    with node.store() as store:
        for r in range(rounds):
            made = [s.instance.spec.uuid for s in churn.create(f"c{r}", 6, group="churn")]
            made += [s.instance.spec.uuid for s in churn.create(f"solo{r}", 1)]
            churn.stop_start(made[0])
            churn.reboot(made[1], hard=False)
            churn.reboot(made[2], hard=True)
            if r == evacuate_in:
                churn.evacuate(node.get(made[3]).instance.host)
            for uuid in made[::2]:  # half of this round's servers; the rest live on
                churn.delete(uuid)
            churn.assert_clean(store, f"after round {r + 1}")
        for uuid in sorted(churn.alive):
            churn.delete(uuid)
        churn.assert_clean(store, "after deleting everything")
    return churn


def test_churn_leaves_nothing_behind(make_cluster):
    node = make_cluster(hosts=3)
    churn = churn_rounds(node, rounds=3)
    assert len(churn.gone) == 21 and not churn.alive


def test_the_leftover_checks_see_every_kind_of_leftover(make_cluster):
    """A running server the checks are told is gone shows up under every kind that
    should hold it: the churn test's "nothing left" is not vacuous."""
    node = make_cluster(hosts=1)
    node.stub.CreateServerGroup(
        compute_pb2.CreateServerGroupRequest(
            name="g", policy=compute_pb2.GROUP_POLICY_ANTI_AFFINITY, soft=True
        ),
        timeout=10,
    )
    (server,) = node.create_active("probe", group="g")
    uuid = server.instance.spec.uuid
    with node.store() as store:
        handles = leftovers.Cluster(node.plan, node.stubs, store)
        host = server.instance.host
        wait_for("its stats", lambda: store.get(keys.instance_stats(host, uuid)), 15)
        assert leftovers.find(handles, leftovers.Wanted({uuid: node.get(uuid)}, {})) == []
        found = leftovers.find(handles, leftovers.Wanted({}, {uuid: node.get(uuid)}))
    kinds = {line.split(":")[0] for line in found}
    assert kinds >= {"VMM processes", "taps", "cgroups", "instance and jail directories",
                     "etcd keys", "scheduler view", "names"}, found  # fmt: skip
    text = "\n".join(found)
    for what in ("instance key", "stats key", "address", "claim", "server group g member"):
        assert what in text, found
