"""computed-agent benchmarks against a real etcd and real VMMs. Prints figures; asserts nothing.

    .venv/bin/python bench/agent_bench.py [spawn|stats|adopt] ...

- spawn: N heartbeat instances requested at once over gRPC → all ACTIVE;
         instances/s and p50/p90 Spawn latency.
- stats: agent CPU per instance per sample with N idle instances at 1 Hz
         (agent CPU with N instances minus the same agent idle, over a window,
         once every instance has its first stats). `--cmdline hz=0` makes them
         tickless (no guest CPU to compete with); `--py-spy FILE` records where
         the agent's time goes meanwhile.
- adopt: N running VMMs, kill -9 the agent, start it again → seconds until
         it serves and lists all N ACTIVE with their old PIDs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.vmm_bench import pct, summary
from computed.api import agent_pb2, types_pb2
from computed.store import keys
from computed.store.client import Store
from tests.agent_harness import AgentProcess
from tests.etcd_harness import EtcdServer


def spec(image: str = "heartbeat", cmdline: str = "") -> types_pb2.InstanceSpec:
    u = str(uuid.uuid4())
    return types_pb2.InstanceSpec(
        uuid=u, name=f"instance-{u[:8]}", image=image, cmdline=cmdline, vcpus=1, memory_mb=64
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
            "--ram-allocation-ratio",
            "4",  # room for 1,000 instances of 64 MiB
        )
        self.agent.args[self.agent.args.index("--stats-interval") + 1] = str(interval)
        if "--vmm-uid-range" in self.agent.args:  # a uid per VMM: room for 2,000
            self.agent.args[self.agent.args.index("--vmm-uid-range") + 1] = "250000-251999"
        self.agent.start()

    def spawn_all(
        self, n: int, workers: int = 32, image: str = "heartbeat", cmdline: str = ""
    ) -> list[float]:
        latencies = []

        def one(s: types_pb2.InstanceSpec) -> float:
            t = time.perf_counter()
            reply = self.agent.stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=120)
            if reply.status != types_pb2.STATUS_ACTIVE:
                raise SystemExit(f"spawn failed: {reply.fault}")
            return (time.perf_counter() - t) * 1000

        with futures.ThreadPoolExecutor(workers) as pool:
            latencies = list(pool.map(one, [spec(image, cmdline) for _ in range(n)]))
        return latencies

    def wait_stats(self, n: int, timeout: float = 300.0) -> float:
        """Seconds until etcd holds stats for n instances."""
        start = time.monotonic()
        with Store(self.etcd.endpoint) as store:
            while sum("/instances/" in e.key for e in store.get_prefix(keys.STATS)[0]) < n:
                if time.monotonic() - start > timeout:
                    raise SystemExit(f"no stats for all {n} instances after {timeout:g}s")
                time.sleep(0.2)
        return time.monotonic() - start

    def close(self) -> None:
        """Agent and every VMM gone, whatever the harness's idea of the instance layout."""
        try:
            listed = self.agent.stub.List(agent_pb2.ListRequest(), timeout=30).instances
            pids = [i.pid for i in listed if i.pid]
        except (grpc.RpcError, AttributeError):  # no agent to ask: the harness cleans up
            pids = []
        self.agent.cleanup()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
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


def agent_cpu_ns(pid: int) -> int:
    """CPU time of every live thread of `pid`, in ns (schedstat: psutil's clock ticks are
    10 ms, too coarse for a few tens of ms per window)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass  # the thread ended meanwhile
    return total


def agent_cpu_over(pid: int, seconds: float) -> float:
    before = agent_cpu_ns(pid)
    time.sleep(seconds)
    return (agent_cpu_ns(pid) - before) / 1e9


def py_spy(pid: int, seconds: float, out: str) -> subprocess.Popen:
    """Sample the agent's Python stacks for `seconds` (collapsed stacks, for flamegraph.pl
    or a quick `sort | uniq`): where its CPU goes, gRPC and protobuf included."""
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
         "--nonblocking", "--format", "raw", "--output", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip


def bench_stats(
    n: int, window: float, rounds: int, image: str, cmdline: str, workers: int, profile: str
) -> None:
    rig = Rig(interval=1.0)
    try:
        pid = rig.agent.proc.pid
        time.sleep(2)
        idle = [agent_cpu_over(pid, window) for _ in range(rounds)]
        rig.spawn_all(n, workers, image, cmdline)
        first = rig.wait_stats(n)  # every collector made: measure the steady state
        time.sleep(2)
        spy = py_spy(pid, window * rounds, profile) if profile else None
        busy = [agent_cpu_over(pid, window) for _ in range(rounds)]
        if spy is not None:
            spy.wait()
        per = [(b - statistics.median(idle)) / (n * window) * 1e6 for b in busy]
        busy_pct = statistics.median(busy) / window * 100
        idle_pct = statistics.median(idle) / window * 100
        guest = f"{image} {cmdline}".strip()
        print(
            f"stats with {n} idle instances ({guest}) at 1 Hz: agent CPU {busy_pct:.1f}% of a "
            f"core (idle agent {idle_pct:.1f}%); "
            f"per instance per sample p50 {statistics.median(per):.0f} µs, spread "
            f"{min(per):.0f}-{max(per):.0f} µs over {rounds} windows of {window:g}s "
            f"(target ≤ 50 µs); stats of all {n} in etcd {first:.1f}s after the last spawn"
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
    ap.add_argument("--image", default="heartbeat", help="guest of the stats instances")
    ap.add_argument("--cmdline", default="", help="their command line (hz=0: tickless)")
    ap.add_argument("--py-spy", default="", help="stats: profile the agent into this file")
    ap.add_argument("--workers", type=int, default=32, help="concurrent Spawn RPCs")
    a = ap.parse_args()
    for which in a.which:
        {
            "spawn": lambda: bench_spawn(a.spawn),
            "stats": lambda: bench_stats(
                a.stats, a.window, a.rounds, a.image, a.cmdline, a.workers, a.py_spy
            ),
            "adopt": lambda: bench_adopt(a.adopt, a.rounds),
        }[which]()


if __name__ == "__main__":
    from tests.ksm_host import ksm_settings

    with ksm_settings():  # its agents start KSM, as the product does: put back as found
        main()
