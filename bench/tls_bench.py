"""What mTLS costs, end to end: the same dev cluster with TLS on and with TLS off, measured
in one run, rounds interleaved so both see the same machine. Prints figures; asserts nothing.

    .venv/bin/python bench/tls_bench.py [--rounds 3] [--singles 10] [--burst 12]

Two clusters run side by side (tags "tb1"/"tb0", subnets 10.216.{1,0}.0/24), each with
3 hosts and 2 schedulers. Per round and per cluster:
- single: one CreateServers call per instance, which returns once the instance is
          ACTIVE on its host: create→ACTIVE latency (a fresh channel, so a fresh
          handshake, every 5 calls);
- rpc:    100 ListFlavors calls alternating between the two clusters (TLS's per-call
          cost with nothing else in the figure);
- burst:  4 client threads, 2 per scheduler, create single-instance servers at once
          until `--burst` are ACTIVE: committed placements/s with 2 schedulers;
then everything is deleted. `python -c pass` is timed before each round, so the
figures can be read against how loaded the machine was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc

from computed.api import compute_pb2, compute_pb2_grpc
from computed.devcluster.cluster import Cluster
from computed.devcluster.plan import ClusterPlan, make_plan

CLIENTS_PER_SCHEDULER = 2


def channel(plan: ClusterPlan, tls: bool, address: str) -> grpc.Channel:
    """As the admin of the cluster `plan` describes: mTLS, or plaintext for tls=False."""
    return Cluster(plan, tls=tls).admin_channel(address)


def python_pass_ms(n: int = 5) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def delete_all(stub: compute_pb2_grpc.ComputeStub) -> None:
    for s in stub.ListServers(compute_pb2.ListServersRequest(), timeout=30).servers:
        stub.DeleteServer(compute_pb2.ServerRef(name_or_id=s.instance.spec.uuid), timeout=60)


def wait_hosts(stub: compute_pb2_grpc.ComputeStub, n: int) -> None:
    deadline = time.monotonic() + 60
    while sum(h.up for h in stub.ListHosts(compute_pb2.ListHostsRequest(), timeout=10).hosts) < n:
        if time.monotonic() > deadline:
            raise SystemExit("hosts did not come up")
        time.sleep(0.2)


def create_one(stub: compute_pb2_grpc.ComputeStub, name: str) -> None:
    reply = stub.CreateServers(
        compute_pb2.CreateServersRequest(name=name, flavor="m1.tiny", image="heartbeat"),
        timeout=120,
    )
    if reply.servers[0].instance.pid <= 0:
        raise RuntimeError(f"{name}: not ACTIVE: {reply.servers[0].instance.fault}")


def singles(plan: ClusterPlan, tls: bool, n: int, tag: str) -> list[float]:
    out = []
    ch = channel(plan, tls, plan.scheduler_addresses[0])
    for i in range(n):
        if i % 5 == 0:  # a new connection now and then: handshakes are part of the cost
            ch.close()
            ch = channel(plan, tls, plan.scheduler_addresses[0])
        stub = compute_pb2_grpc.ComputeStub(ch)
        start = time.perf_counter()
        create_one(stub, f"{tag}-s{i}")
        out.append(time.perf_counter() - start)
    ch.close()
    return out


def burst(plan: ClusterPlan, tls: bool, total: int, tag: str) -> float:
    """Placements/s with every scheduler serving CLIENTS_PER_SCHEDULER client threads."""
    channels = [channel(plan, tls, a) for a in plan.scheduler_addresses]
    stubs = [compute_pb2_grpc.ComputeStub(c) for c in channels]
    counter = iter(range(total))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(stub: compute_pb2_grpc.ComputeStub) -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                create_one(stub, f"{tag}-b{i}")
            except Exception as e:  # counted, shown, and the rate is then not printed
                errors.append(e)
                return

    threads = [threading.Thread(target=client, args=(s,)) for s in stubs
               for _ in range(CLIENTS_PER_SCHEDULER)]  # fmt: skip
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in channels:
        c.close()
    if errors:
        raise RuntimeError(f"burst failed: {errors[0]}")
    return total / elapsed


def rpc_pairs(plans: dict[bool, ClusterPlan], n: int) -> dict[bool, list[float]]:
    """A cheap unary RPC (ListFlavors) on an open channel, alternating TLS on and off call by
    call, so both see the same moment of a noisy machine: TLS's per-call cost alone."""
    out: dict[bool, list[float]] = {True: [], False: []}
    channels = {tls: channel(plan, tls, plan.scheduler_addresses[0]) for tls, plan in plans.items()}
    stubs = {tls: compute_pb2_grpc.ComputeStub(c) for tls, c in channels.items()}
    for stub in stubs.values():
        stub.ListFlavors(compute_pb2.ListFlavorsRequest(), timeout=30)  # connect, handshake
    for i in range(n):
        for tls in (True, False) if i % 2 == 0 else (False, True):
            start = time.perf_counter()
            stubs[tls].ListFlavors(compute_pb2.ListFlavorsRequest(), timeout=30)
            out[tls].append(time.perf_counter() - start)
    for c in channels.values():
        c.close()
    return out


def spread(xs: list[float], scale: float = 1.0, unit: str = "") -> str:
    return (f"{statistics.median(xs) * scale:.1f}{unit} "
            f"(min {min(xs) * scale:.1f}, max {max(xs) * scale:.1f}, n={len(xs)})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--singles", type=int, default=10)
    ap.add_argument("--burst", type=int, default=12)
    a = ap.parse_args()
    clusters: dict[bool, Cluster] = {}
    for tls, k, port in ((True, 1, 18900), (False, 0, 18950)):
        plan = make_plan(
            hosts=3, schedulers=2, subnet=f"10.216.{k}.0/24", state_dir=f"/var/tmp/cdtb{k}",
            tag=f"tb{k}", scheduler_port=port, etcd_port=port + 10, agent_port=8775,
            host_memory_mb=8192,
        )  # fmt: skip
        clusters[tls] = Cluster(plan, tls=tls)
    latency: dict[bool, list[float]] = {True: [], False: []}
    rates: dict[bool, list[float]] = {True: [], False: []}
    py: list[float] = []
    rpc: dict[bool, list[float]] = {True: [], False: []}
    try:
        for tls, cluster in clusters.items():
            cluster.down()
            cluster.up()
            with channel(cluster.plan, tls, cluster.plan.scheduler_addresses[0]) as ch:
                wait_hosts(compute_pb2_grpc.ComputeStub(ch), 3)
        for r in range(a.rounds):
            py.append(python_pass_ms())
            for tls, xs in rpc_pairs({t: c.plan for t, c in clusters.items()}, 100).items():
                rpc[tls] += xs
            order = (True, False) if r % 2 == 0 else (False, True)
            for tls in order:
                plan = clusters[tls].plan
                latency[tls] += singles(plan, tls, a.singles, f"r{r}")
                rates[tls].append(burst(plan, tls, a.burst, f"r{r}"))
                with channel(plan, tls, plan.scheduler_addresses[0]) as ch:
                    delete_all(compute_pb2_grpc.ComputeStub(ch))
        print(f"python -c pass: median {spread(py, 1, ' ms')} (before each round)")
        for tls in (False, True):
            name = "TLS on " if tls else "TLS off"
            print(f"{name}: ListFlavors on an open channel, p50 = {spread(rpc[tls], 1000, ' ms')}")
            print(f"{name}: create→ACTIVE latency, p50 = {spread(latency[tls], 1000, ' ms')}")
            print(f"{name}: placements/s with 2 schedulers, {a.burst} per round: median "
                  f"{spread(rates[tls])}")  # fmt: skip
        on, off = statistics.median(latency[True]), statistics.median(latency[False])
        r_on, r_off = statistics.median(rates[True]), statistics.median(rates[False])
        q_on, q_off = statistics.median(rpc[True]), statistics.median(rpc[False])
        print(f"TLS on vs off: ListFlavors p50 {100 * (q_on / q_off - 1):+.1f} %, "
              f"create latency p50 {100 * (on / off - 1):+.1f} %, "
              f"placements/s {100 * (r_on / r_off - 1):+.1f} %")  # fmt: skip
    finally:
        for cluster in clusters.values():
            cluster.down()


if __name__ == "__main__":
    from tests.ksm_host import ksm_settings

    with ksm_settings():  # its agents start KSM, as the product does: put back as found
        main()
