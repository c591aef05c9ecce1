"""computed-agent benchmarks against a real etcd and real VMMs. Prints figures; asserts nothing.

    .venv/bin/python bench/agent_bench.py [spawn|stats|adopt] ...

- spawn: N heartbeat instances requested at once over gRPC → all ACTIVE;
         instances/s and p50/p90 Spawn latency.
- stats: agent CPU per instance per sample with N idle instances at 1 Hz
         (agent CPU with N instances minus the same agent idle, over a window).
- adopt: N running VMMs, kill -9 the agent, start it again → seconds until
         it serves and lists all N ACTIVE with their old PIDs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from concurrent import futures

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.vmm_bench import pct, summary
from computed.api import agent_pb2, types_pb2
from tests.agent_harness import AgentProcess
from tests.etcd_harness import EtcdServer


def spec() -> types_pb2.InstanceSpec:
    u = str(uuid.uuid4())
    return types_pb2.InstanceSpec(
        uuid=u, name=f"instance-{u[:8]}", image="heartbeat", vcpus=1, memory_mb=64
    )


class Rig:
    """etcd + one agent with room for many instances; everything removed at exit."""

    def __init__(self, interval: float = 1.0) -> None:
        self.tmp = tempfile.mkdtemp(prefix="cd-b-")
        self.etcd = EtcdServer()
        self.etcd.__enter__()
        self.agent = AgentProcess(
            f"{self.tmp}/s",
            self.etcd.endpoint,
            "bench-host",
            "--vcpus",
            "64",
            "--memory-mb",
            "20000",
        )
        self.agent.args[self.agent.args.index("--stats-interval") + 1] = str(interval)
        self.agent.start()

    def spawn_all(self, n: int, workers: int = 32) -> list[float]:
        latencies = []

        def one(s: types_pb2.InstanceSpec) -> float:
            t = time.perf_counter()
            reply = self.agent.stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=120)
            if reply.status != types_pb2.STATUS_ACTIVE:
                raise SystemExit(f"spawn failed: {reply.fault}")
            return (time.perf_counter() - t) * 1000

        with futures.ThreadPoolExecutor(workers) as pool:
            latencies = list(pool.map(one, [spec() for _ in range(n)]))
        return latencies

    def close(self) -> None:
        self.agent.cleanup()
        self.etcd.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)


def bench_spawn(n: int) -> None:
    rig = Rig()
    try:
        start = time.perf_counter()
        latencies = rig.spawn_all(n)
        elapsed = time.perf_counter() - start
        print(
            f"spawn {n} heartbeat instances at once (32 concurrent RPCs, agent 16 workers): "
            f"{n / elapsed:.1f} instances/s; Spawn latency {summary(latencies, 'ms')}"
        )
    finally:
        rig.close()


def agent_cpu_over(proc: psutil.Process, seconds: float) -> float:
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    return (after.user + after.system) - (before.user + before.system)


def bench_stats(n: int, window: float, rounds: int) -> None:
    rig = Rig(interval=1.0)
    try:
        proc = psutil.Process(rig.agent.proc.pid)
        time.sleep(2)
        idle = [agent_cpu_over(proc, window) for _ in range(rounds)]
        rig.spawn_all(n)
        time.sleep(3)  # collectors made, first samples taken
        busy = [agent_cpu_over(proc, window) for _ in range(rounds)]
        per = [(b - statistics.median(idle)) / (n * window) * 1e6 for b in busy]
        busy_pct = statistics.median(busy) / window * 100
        idle_pct = statistics.median(idle) / window * 100
        print(
            f"stats with {n} idle instances at 1 Hz: agent CPU {busy_pct:.1f}% of a core "
            f"(idle agent {idle_pct:.1f}%); "
            f"per instance per sample p50 {statistics.median(per):.0f} µs, spread "
            f"{min(per):.0f}-{max(per):.0f} µs over {rounds} windows of {window:g}s "
            f"(target ≤ 50 µs)"
        )
    finally:
        rig.close()


def bench_adopt(n: int, rounds: int) -> None:
    rig = Rig()
    try:
        rig.spawn_all(n)
        before = {
            i.spec.uuid: i.pid for i in rig.agent.stub.List(agent_pb2.ListRequest()).instances
        }
        times = []
        for _ in range(rounds):
            rig.agent.kill(signal.SIGKILL)
            start = time.perf_counter()
            rig.agent.start()
            listed = rig.agent.stub.List(agent_pb2.ListRequest()).instances
            elapsed = time.perf_counter() - start
            pids = {i.spec.uuid: i.pid for i in listed}
            active = sum(i.status == types_pb2.STATUS_ACTIVE for i in listed)
            if pids != before or active != n:
                raise SystemExit(f"adoption lost something: {active}/{n} active")
            times.append(elapsed)
        print(
            f"re-adopt {n} running VMMs after kill -9: p50 {statistics.median(times):.2f} s, "
            f"p90 {pct(times, 90):.2f} s, min {min(times):.2f}, max {max(times):.2f} "
            f"(n={rounds}; agent exec → serving → all listed ACTIVE, same PIDs; target ≤ 2 s)"
        )
    finally:
        rig.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["spawn", "stats", "adopt"])
    ap.add_argument("--spawn", type=int, default=100)
    ap.add_argument("--stats", type=int, default=200)
    ap.add_argument("--adopt", type=int, default=100)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    for which in a.which:
        {
            "spawn": lambda: bench_spawn(a.spawn),
            "stats": lambda: bench_stats(a.stats, a.window, a.rounds),
            "adopt": lambda: bench_adopt(a.adopt, a.rounds),
        }[which]()


if __name__ == "__main__":
    main()
