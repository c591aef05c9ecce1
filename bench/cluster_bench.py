"""End to end on a 3-host dev cluster (namespaces, agents, scheduler, real VMMs). Prints
figures; asserts nothing.

    .venv/bin/python bench/cluster_bench.py [--rounds 3] [--singles 30]

- batch:  `computectl server create --count 30 --wait` until all are ACTIVE:
          instances/s (the CLI's own start-up included), then all deleted.
- single: one CreateServers call per instance (it returns when the instance is
          ACTIVE on its host): create→ACTIVE latency p50/p90, and the same
          through `computectl server create --wait` (a fresh CLI process each).
A private cluster (tag "bn", subnet 10.215.0.0/24) so a running demo is untouched.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from computed.api import compute_pb2, compute_pb2_grpc
from computed.devcluster import pki as cluster_pki
from computed.devcluster.cluster import Cluster
from computed.devcluster.plan import make_plan

CTL = os.path.join(os.path.dirname(sys.executable), "computectl")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def delete_all(stub: compute_pb2_grpc.ComputeStub) -> None:
    for s in stub.ListServers(compute_pb2.ListServersRequest()).servers:
        stub.DeleteServer(compute_pb2.ServerRef(name_or_id=s.instance.spec.uuid), timeout=30)


def wait_hosts(stub: compute_pb2_grpc.ComputeStub, n: int) -> None:
    deadline = time.monotonic() + 30
    while sum(h.up for h in stub.ListHosts(compute_pb2.ListHostsRequest()).hosts) < n:
        if time.monotonic() > deadline:
            raise SystemExit("hosts did not come up")
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=30)
    ap.add_argument("--singles", type=int, default=30)
    a = ap.parse_args()
    plan = make_plan(
        hosts=3, subnet="10.215.0.0/24", state_dir="/var/tmp/computed-bench", tag="bn",
        scheduler_port=18874, etcd_port=12479, host_memory_mb=8192,
    )  # fmt: skip
    cluster = Cluster(plan)
    cluster.down()
    try:
        cluster.up()
        address = plan.scheduler_addresses[0]
        admin = cluster_pki.admin_files(plan)  # the cluster runs mTLS
        env = {**os.environ, "COMPUTED_SCHEDULER": address,
               "OS_CACERT": admin.ca, "OS_CERT": admin.cert, "OS_KEY": admin.key}  # fmt: skip
        with cluster.admin_channel(address) as channel:
            stub = compute_pb2_grpc.ComputeStub(channel)
            wait_hosts(stub, 3)
            rates = []
            for r in range(a.rounds):
                start = time.perf_counter()
                subprocess.run(
                    [CTL, "server", "create", f"b{r}", "--flavor", "m1.tiny", "--image",
                     "heartbeat", "--count", str(a.count), "--wait", "-f", "value", "-c", "id"],
                    env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                rates.append(a.count / (time.perf_counter() - start))
                delete_all(stub)
            print(
                f"batch: create --count {a.count} --wait → all ACTIVE: p50 "
                f"{statistics.median(rates):.1f} instances/s (spread {min(rates):.1f}-"
                f"{max(rates):.1f}, {a.rounds} rounds)"
            )
            api, cli = [], []
            for i in range(a.singles):
                start = time.perf_counter()
                reply = stub.CreateServers(
                    compute_pb2.CreateServersRequest(
                        name=f"s{i}", flavor="m1.tiny", image="heartbeat"
                    ),
                    timeout=60,
                )
                api.append(time.perf_counter() - start)
                assert reply.servers[0].instance.pid > 0
                start = time.perf_counter()
                subprocess.run(
                    [CTL, "server", "create", f"c{i}", "--flavor", "m1.tiny", "--image",
                     "heartbeat", "--wait", "-f", "value", "-c", "id"],
                    env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                cli.append(time.perf_counter() - start)
            delete_all(stub)
            for what, xs in (("API CreateServers", api), ("computectl create --wait", cli)):
                print(
                    f"single: {what} → ACTIVE: p50 {statistics.median(xs) * 1000:.0f} ms, "
                    f"p90 {pct(xs, 0.9) * 1000:.0f} ms (min {min(xs) * 1000:.0f}, max "
                    f"{max(xs) * 1000:.0f}, n={len(xs)})"
                )
    finally:
        cluster.down()


if __name__ == "__main__":
    from tests.ksm_host import ksm_settings

    with ksm_settings():  # its agents start KSM, as the product does: put back as found
        main()
