"""What watching the fleet costs. Prints figures; asserts nothing.

    .venv/bin/python bench/observe_bench.py [--instances 1000,10000] [--rounds 7]

For N instances on N/20 hosts (synthetic records and stats samples):
- read:     the scheduler's per-interval stats read for one `computectl top` stream
            (one prefix read of every stats key, scheduler/stats_source.py), from a
            real etcd started for the run;
- snapshot: building the TopSnapshot from the cache and those samples (scheduler/top.py);
- client:   the CLI's side of one refresh: rates from counters, sort, and drawing
            the screen with rich into a string (computed/cli/top*.py);
- scrape:   an agent's /metrics collect for 50 instances (agent/metrics.py).
Medians with min-max over the rounds, beside `python -c pass` in the same run.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from agent.metrics import AgentCollector, ReportingStore
from computed.cli import top as top_view
from computed.cli import top_model as model
from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Put
from computed.store.records import (
    HostRecord,
    InstanceRecord,
    InstanceSpec,
    KvmFacts,
    LivenessRecord,
)
from scheduler import top
from scheduler.cluster_view import ClusterView
from scheduler.stats_source import read_stats

FACTS = KvmFacts(12, "kvm_intel", "userspace", False)


def sample(uuid_: str, at: float, i: int) -> dict:
    return {
        "uuid": uuid_, "timestamp": at, "pid": 1000 + i, "cpu.time": 3_000_000_000 + i,
        "cpu.user": 2_000_000_000, "cpu.system": 1_000_000_000, "cpu.percent": 12.5,
        "vcpu.count": 2, "vcpu.0.tid": 1, "vcpu.0.time": 1_500_000_000 + i, "vcpu.1.tid": 2,
        "vcpu.1.time": 1_400_000_000, "helper.kvm-pit.pid": 3, "helper.kvm-pit.time": 2_000_000,
        "helper.vhost.kind": "userspace", "helper.vhost.pid": 4, "helper.vhost.time": 900_000,
        "memory.rss": 9_437_184, "threads": 5, "ctx_switches.voluntary": 100,
        "ctx_switches.involuntary": 7, "uptime": 30.5,
    }  # fmt: skip


def cluster(n: int) -> tuple[ClusterView, dict, dict]:
    view = ClusterView()
    hosts = max(1, n // 20)
    for h in range(hosts):
        host_id = f"node-{h}"
        view.hosts[host_id] = HostRecord(host_id, f"10.0.{h // 250}.{h % 250}:8775", "nova", 64,
                                         262144, 16.0, 1.5, FACTS)  # fmt: skip
        view.live[host_id] = LivenessRecord(host_id, 1.0)
    samples, host_samples = {}, {}
    rnd = random.Random(n)
    for i in range(n):
        uid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))  # spread as uuid4s are
        spec = InstanceSpec(uid, f"instance-{i:08x}", "heartbeat", 1, 64)
        view.instances[uid] = InstanceRecord(spec, "ACTIVE", "RUNNING", f"node-{i % hosts}",
                                             pid=1000 + i, display_name=f"web-{i}")  # fmt: skip
        samples[uid] = sample(uid, 100.0, i)
    for host_id in view.hosts:
        host_samples[host_id] = {"timestamp": 100.0, "cpu.percent": 40.0, "load.1": 1.0,
                                 "memory.total": 1 << 36, "memory.used": 1 << 34}  # fmt: skip
    return view, samples, host_samples


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def show(label: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"  {label:<34} median {statistics.median(ms):9.2f} ms  "
          f"(min {min(ms):.2f}, max {max(ms):.2f}, n={len(ms)})")  # fmt: skip


def client(shot):
    """One refresh of the CLI for `shot`, drawn into a string."""
    rates = model.Rates()
    rates.rows(top_view.samples_from(shot))
    state = model.ViewState()

    def refresh() -> None:
        console = Console(file=io.StringIO(), width=160, height=50, force_terminal=True)
        rows = rates.rows(top_view.samples_from(shot))
        hosts = top_view.hosts_from(shot)
        console.print(top_view.screen(shot.at, hosts, rows, state, 50, "bench"))

    return refresh


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--instances", default="1000,10000")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    show("python -c pass", timed(lambda: subprocess.run([sys.executable, "-c", "pass"]),
                                 args.rounds))  # fmt: skip
    from tests.etcd_harness import EtcdServer

    for n in (int(x) for x in args.instances.split(",")):
        print(f"{n} instances on {max(1, n // 20)} hosts")
        view, samples, host_samples = cluster(n)
        with EtcdServer() as etcd, Store(etcd.endpoint) as store:
            ops = [Put(keys.instance_stats(u), json.dumps(s)) for u, s in samples.items()]
            ops += [Put(keys.host_stats(h), json.dumps(s)) for h, s in host_samples.items()]
            store.put_many(ops)
            show("read: stats prefix from etcd", timed(lambda: read_stats(store), args.rounds))
        shot = top.snapshot(view, samples, host_samples, 101.0)
        show(
            "snapshot: build TopSnapshot",
            timed(functools.partial(top.snapshot, view, samples, host_samples, 101.0), args.rounds),
        )
        show("client: rates, sort, draw 50 lines", timed(client(shot), args.rounds))

    class Supervisor:
        def __init__(self, views):
            self.views = views

        def list(self):
            return self.views

    from agent.instance_state import State
    from agent.supervisor import InstanceView

    view, samples, host_samples = cluster(50)
    views = [InstanceView(r.spec, State("ACTIVE", "RUNNING"), r.pid, 1.0, 1.0)
             for r in view.instances.values()]  # fmt: skip

    class Written:
        def put_many(self, ops, lease=None):
            return [1]

    store = ReportingStore(Written())
    store.put_many([Put(keys.instance_stats(u), json.dumps(s)) for u, s in samples.items()])
    registry = CollectorRegistry()
    registry.register(AgentCollector("node-0", Supervisor(views), store))
    show("scrape: agent /metrics, 50 instances", timed(lambda: generate_latest(registry),
                                                       args.rounds))  # fmt: skip


if __name__ == "__main__":
    main()
