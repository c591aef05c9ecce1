"""Fixtures for the multi-node tests: a whole dev cluster (computed.devcluster) per test.

Each cluster gets its own tag (mn<k>), subnet (10.214.<k>.0/24), state directory
(/var/tmp/cdmn<k>) and free ports, so it never meets the demo cluster (tag "cd",
10.213.0.0/24) or anything else on the machine. Teardown always runs `down()`
and then checks that nothing of the cluster is left: no marked process, no host
namespace, no interface carrying the tag, no state directory.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import socket
from collections.abc import Callable, Iterator

import grpc
import pytest

from computed.api import compute_pb2, compute_pb2_grpc, types_pb2
from computed.devcluster import netns, processes
from computed.devcluster import pki as cluster_pki
from computed.devcluster.cluster import Cluster
from computed.devcluster.plan import ClusterPlan, HostPlan, make_plan
from computed.store.client import Store
from computed.store.errors import StoreError
from tests.ksm_host import ksm_settings
from tests.waiting import wait_until

# Start above any k a previous (crashed) run in this process could not have reused;
# the pid spreads concurrent sessions apart a little. k stays within 1..99 (two digits).
_K = itertools.count(10 + os.getpid() % 40)


def _next_k() -> int:
    return (next(_K) - 1) % 99 + 1


def _port_free(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _free_ports(n: int) -> int:
    """The first of `n` consecutive free TCP ports."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


def leftovers(plan: ClusterPlan) -> list[str]:
    """Whatever of the cluster still exists (empty after a clean `down`)."""
    left = [f"process {p}" for p in processes.marked(plan.state_dir)]
    left += [f"netns {n}" for n in netns.namespaces() if n.startswith(plan.netns_prefix)]
    left += [f"link {name}" for name in netns.links(plan.tag)]
    if os.path.exists(plan.state_dir):
        left.append(f"directory {plan.state_dir}")
    return left


def status(server: compute_pb2.Server) -> str:
    return types_pb2.InstanceStatus.Name(server.instance.status).removeprefix("STATUS_")


def pid_alive(pid: int) -> bool:
    return pid > 0 and processes.alive(pid)


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 0.2):
    """check()'s first truthy result; AssertionError naming `what` after `timeout` s.
    gRPC and etcd errors while waiting count as "not yet"."""
    return wait_until(check, timeout, interval, what, ignoring=(grpc.RpcError, OSError, StoreError))


class MultiNode:
    """A running dev cluster and the test's handles on it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.plan = cluster.plan
        # The cluster runs mTLS (its own PKI in <state-dir>/pki): the tests call as its admin.
        self._channels = [cluster.admin_channel(a) for a in self.plan.scheduler_addresses]
        self.stubs = [compute_pb2_grpc.ComputeStub(c) for c in self._channels]
        self.stub = self.stubs[0]

    def close(self) -> None:
        for c in self._channels:
            c.close()

    @property
    def hosts(self) -> tuple[HostPlan, ...]:
        return self.plan.hosts

    def store(self) -> Store:
        """A new Store on the cluster's etcd (use as a context manager), as etcd's root."""
        return self.cluster.admin_store()

    # --- hosts ------------------------------------------------------------------
    def hosts_up(self, stub=None) -> dict[str, bool]:
        listed = (stub or self.stub).ListHosts(compute_pb2.ListHostsRequest(), timeout=5).hosts
        return {h.info.host_id: h.up for h in listed}

    def wait_all_up(self, timeout: float = 30.0) -> None:
        want = {h.host_id for h in self.hosts}
        for stub in self.stubs:
            wait_for(
                "every host up",
                lambda s=stub: {h for h, up in self.hosts_up(s).items() if up} >= want,
                timeout,
            )

    def wait_host(self, host_id: str, up: bool, timeout: float) -> None:
        wait_for(
            f"{host_id} {'up' if up else 'down'}",
            lambda: self.hosts_up().get(host_id) is up,
            timeout,
        )

    # --- servers ----------------------------------------------------------------
    def create(self, name: str, count: int = 1, stub=None, **kw) -> list[compute_pb2.Server]:
        request = compute_pb2.CreateServersRequest(
            name=name,
            flavor=kw.pop("flavor", "m1.tiny"),
            image=kw.pop("image", "heartbeat"),
            count=count,
            **kw,
        )
        return list((stub or self.stub).CreateServers(request, timeout=90).servers)

    def create_active(self, name: str, count: int = 1, **kw) -> list[compute_pb2.Server]:
        """create(), asserting every server came up ACTIVE (with the schedulers' log on failure)."""
        servers = self.create(name, count, **kw)
        states = [status(s) for s in servers]
        if states != ["ACTIVE"] * len(servers):
            logs = "".join(
                processes.tail(self.plan.log(f"scheduler-{i + 1}"), 5)
                for i in range(len(self.stubs))
            )
            raise AssertionError(f"{name}: {states}, not all ACTIVE; scheduler log:\n{logs}")
        return servers

    def get(self, name_or_id: str) -> compute_pb2.Server:
        return self.stub.GetServer(compute_pb2.ServerRef(name_or_id=name_or_id), timeout=10)

    def servers(self, **kw) -> list[compute_pb2.Server]:
        request = compute_pb2.ListServersRequest(**kw)
        return list(self.stub.ListServers(request, timeout=10).servers)

    def host(self, host_id: str) -> HostPlan:
        return next(h for h in self.hosts if h.host_id == host_id)


LOG_KEEP_DIR = "/tmp/computed-multinode-logs"  # a failed test's cluster logs are copied here


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item._multinode_failed = True


@pytest.fixture
def make_cluster(request, monkeypatch) -> Iterator[Callable[..., MultiNode]]:
    """make_cluster(**make_plan options) → a MultiNode, up with every host up.

    `computectl` run by the test finds the (last) cluster's admin certificate through
    OS_CACERT/OS_CERT/OS_KEY, as an operator's shell would have them. Every cluster
    made is torn down at the end of the test, failed or not, and the teardown is
    checked to have left nothing behind."""
    if os.geteuid() != 0 or not os.path.exists("/dev/kvm"):
        pytest.skip("multi-node tests need root and /dev/kvm")
    made: list[MultiNode | Cluster] = []

    def make(**options) -> MultiNode:
        k = _next_k()
        schedulers = options.get("schedulers", 1)
        defaults = dict(
            hosts=3,
            tag=f"mn{k:02d}",
            subnet=f"10.214.{k}.0/24",
            state_dir=f"/var/tmp/cdmn{k:02d}",
            scheduler_port=_free_ports(schedulers),
            etcd_port=_free_ports(2),
            lease_ttl=3,
        )
        plan = make_plan(**{**defaults, **options})
        cluster = Cluster(plan)
        cluster.down()  # whatever a crashed earlier run with this tag left
        made.append(cluster)
        cluster.up()
        admin = cluster_pki.admin_files(plan)
        for name, path in (("OS_CACERT", admin.ca), ("OS_CERT", admin.cert), ("OS_KEY", admin.key)):
            monkeypatch.setenv(name, path)
        node = MultiNode(cluster)
        made.append(node)
        node.wait_all_up()
        return node

    with ksm_settings():  # the clusters' agents start KSM, as shipped: put back after
        try:
            yield make
        finally:
            problems = []
            for thing in reversed(made):
                if isinstance(thing, MultiNode):
                    with contextlib.suppress(Exception):
                        thing.close()
                    continue
                if getattr(request.node, "_multinode_failed", False):
                    keep = os.path.join(LOG_KEEP_DIR, f"{request.node.name}-{thing.plan.tag}")
                    shutil.rmtree(keep, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        shutil.copytree(thing.plan.log_dir, keep)
                try:
                    thing.down()
                except Exception as e:  # still check what is left, and report both
                    problems.append(f"{thing.plan.tag}: down() raised {e!r}")
                left = leftovers(thing.plan)
                if left:
                    thing.down()  # try once more so the machine stays clean, but fail the test
                    problems.append(f"{thing.plan.tag}: left behind after down(): {left}")
            if problems:
                pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def devcluster(make_cluster) -> MultiNode:
    """Three hosts (2 vCPUs, 4 GiB each), one scheduler, liveness lease 3 s."""
    return make_cluster()
