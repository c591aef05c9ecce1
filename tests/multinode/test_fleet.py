"""The scale run in small (bench/fleet_bench.py is the large one): 200 hollow hosts, a real
3-member etcd, two schedulers; one etcd member is killed -9 and restarted while instances
are being created. Afterwards: no host over capacity, every acknowledged create exists
exactly once on one host (records, claims and the agents' own lists), no name or IP twice.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import tempfile
import threading
import time

import grpc
import pytest

from computed.api import compute_pb2, compute_pb2_grpc, types_pb2
from computed.devcluster import fleet_checks
from computed.devcluster.fleet import HollowGroup, SchedulerProcess, running_on
from computed.store.client import Store
from tests.etcd_harness import EtcdCluster
from tests.multinode.conftest import _free_ports, wait_for

pytestmark = pytest.mark.multinode

HOSTS = 200
GROUPS = 2
SCHEDULERS = 2
BATCHES = 15  # of 10 instances
SINGLES = 60
WANTED = BATCHES * 10 + SINGLES
NETWORK = ["--instance-network", "10.80.0.0/16", "--instance-gateway", "10.80.0.1",
           "--instance-range", "10.80.0.2-10.80.255.254"]  # fmt: skip


@pytest.fixture
def fleet():
    """Etcd cluster, hollow host groups and schedulers; everything stopped at the end."""
    root = tempfile.mkdtemp(prefix="flt-", dir="/dev/shm")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        cluster = stack.enter_context(EtcdCluster(3))
        base = _free_ports(HOSTS + SCHEDULERS)
        per_group = HOSTS // GROUPS
        groups = [
            HollowGroup(
                f"g{i}",
                per_group,
                i * per_group,
                base + i * per_group,
                cluster.endpoint,
                root,
                vcpus=8,
                memory_mb=16384,
                lease_ttl=10,
            )
            for i in range(GROUPS)
        ]
        for g in groups:
            stack.callback(g.stop)
            g.start()
        assert sum(g.wait_ready() for g in groups) == HOSTS
        schedulers = [
            SchedulerProcess(
                f"scheduler-{i + 1}", base + HOSTS + i, cluster.endpoint, root, NETWORK
            )
            for i in range(SCHEDULERS)
        ]
        for s in schedulers:
            stack.callback(s.stop)
            s.start(timeout=120)
        yield cluster, groups, schedulers


def _hosts_up(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        hosts = compute_pb2_grpc.ComputeStub(channel).ListHosts(
            compute_pb2.ListHostsRequest(), timeout=30
        )
    return sum(h.up for h in hosts.hosts)


@pytest.mark.timeout(1200)
def test_200_hollow_hosts_lose_nothing_when_an_etcd_member_is_killed(fleet):
    cluster, groups, schedulers = fleet
    for s in schedulers:
        wait_for(f"{s.name} sees every host up", lambda s=s: _hosts_up(s.address) == HOSTS, 120, 1)
    channels = [grpc.insecure_channel(s.address) for s in schedulers]
    stubs = [compute_pb2_grpc.ComputeStub(c) for c in channels]
    acknowledged: list[str] = []
    lock = threading.Lock()
    started = threading.Event()  # a third of the requests have been answered

    def create(k: int, count: int) -> None:
        """Ask until the API acknowledges (a call cut off by the fault is asked again)."""
        request = compute_pb2.CreateServersRequest(
            name=f"t{k}", flavor="m1.tiny", image="heartbeat", count=count
        )
        for attempt in range(20):
            try:
                reply = stubs[(k + attempt) % len(stubs)].CreateServers(request, timeout=120)
            except grpc.RpcError:
                time.sleep(1)  # e.g. etcd has no leader yet: ask again shortly
                continue
            statuses = {s.instance.status for s in reply.servers}
            assert statuses == {types_pb2.STATUS_ACTIVE}, reply
            with lock:
                acknowledged.extend(s.instance.spec.uuid for s in reply.servers)
                if len(acknowledged) >= WANTED // 3:
                    started.set()
            return
        raise AssertionError(f"request t{k} was never acknowledged")

    work = [10] * BATCHES + [1] * SINGLES
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        jobs = [pool.submit(create, k, count) for k, count in enumerate(work)]
        assert started.wait(600), "the load never got going"
        cluster.kill_member(0)  # kill -9, mid-load
        wait_for(
            "another third of the load done without m0",
            lambda: len(acknowledged) >= 2 * WANTED // 3,
            600,
            0.5,
        )
        cluster.start_member(0)
        for job in jobs:
            job.result()
    for c in channels:
        c.close()
    assert cluster.member_healthy(0)

    assert len(acknowledged) == len(set(acknowledged)) == WANTED
    with Store(cluster.endpoints, timeout=30) as store:
        state = fleet_checks.read_fleet(store)
    assert fleet_checks.over_capacity(state, max_instances_per_host=50) == []
    assert fleet_checks.lost_or_duplicated(state, acknowledged, running_on(groups)) == []
    assert fleet_checks.reused_names_or_ips(state) == []
