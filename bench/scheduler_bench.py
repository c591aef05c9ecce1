"""Scheduler benchmarks. Prints figures; asserts nothing.

    .venv/bin/python bench/scheduler_bench.py [decide|commit] ...

- decide: one instance placed among 1,000 and 10,000 synthetic hosts with the
          default filters and weigher (scheduler/decide.py): decisions/s.
- commit: placements committed per second into a real etcd (decide on the
          watch-fed cache, claim in one transaction), with 1 and with 2
          scheduler processes at once; agents not involved.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Put
from computed.store.records import HostRecord, KvmFacts, LivenessRecord
from scheduler.claims import Placement, claim
from scheduler.decide import Request, choose_hosts
from scheduler.host_cache import ClusterView, HostCache

FACTS = KvmFacts(12, "kvm_intel", "userspace", False)


def synthetic_view(n: int) -> ClusterView:
    v = ClusterView()
    for i in range(n):
        h = f"node-{i:05d}"
        v.hosts[h] = HostRecord(h, "x:1", f"az{i % 3}", 64, 262144, 16.0, 1.5, FACTS)
        v.live[h] = LivenessRecord(h, 0.0)
    return v


def bench_decide(sizes: list[int], seconds: float, rounds: int) -> None:
    for n in sizes:
        view = synthetic_view(n)
        rates = []
        for _ in range(rounds):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                choose_hosts(view, Request(2, 2048))
                count += 1
            rates.append(count / (time.perf_counter() - start))
        print(
            f"decide: 1 instance among {n:,} hosts: p50 {statistics.median(rates):,.0f} "
            f"decisions/s (spread {min(rates):,.0f}-{max(rates):,.0f}, {rounds} runs)"
        )


def _committer(endpoint: str, seconds: float, out: multiprocessing.Queue) -> None:
    store = Store(endpoint)
    cache = HostCache(store)
    cache.start()
    cache.wait_synced(10)
    committed = conflicts = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        with cache.lock:
            view = cache.view
            d = choose_hosts(view, Request(1, 64))[0]
            seen = {
                d.host: (
                    view.allocations.get(d.host),
                    view.revisions.get(keys.allocation(d.host), 0),
                )
            }
        claimed = claim(store, [Placement(str(uuid.uuid4()), d.host, 1, 64)], view.hosts, (), seen)
        if claimed is not None:
            cache.note_claim(claimed.allocations, claimed.revision)
            committed += 1
        else:
            conflicts += 1
    out.put((committed, conflicts, time.perf_counter() - start))
    cache.close()
    store.close()


def bench_commit(hosts: int, seconds: float) -> None:
    from tests.etcd_harness import EtcdServer

    with EtcdServer() as etcd, Store(etcd.endpoint) as store:
        ops = []
        for i in range(hosts):
            h = f"node-{i:05d}"
            ops.append(
                Put(keys.host(h), HostRecord(h, "x:1", "nova", 64, 262144, 16.0, 1.5, FACTS))
            )
            ops.append(Put(keys.liveness(h), LivenessRecord(h, 0.0)))
        store.put_many(ops)
        for procs in (1, 2):
            out: multiprocessing.Queue = multiprocessing.Queue()
            workers = [
                multiprocessing.Process(target=_committer, args=(etcd.endpoint, seconds, out))
                for _ in range(procs)
            ]
            for w in workers:
                w.start()
            results = [out.get(timeout=seconds + 60) for _ in workers]
            for w in workers:
                w.join()
            committed = sum(r[0] for r in results)
            conflicts = sum(r[1] for r in results)
            elapsed = max(r[2] for r in results)
            print(
                f"commit: {procs} scheduler process(es), {hosts} hosts: "
                f"{committed / elapsed:,.0f} placements/s committed "
                f"({conflicts} conflicts re-decided) over {elapsed:.1f}s"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["decide", "commit"])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=100)
    a = ap.parse_args()
    for which in a.which:
        if which == "decide":
            bench_decide([1000, 10000], a.seconds, a.rounds)
        else:
            bench_commit(a.hosts, a.seconds * 2)


if __name__ == "__main__":
    main()
