"""Scheduler benchmarks. Prints figures; asserts nothing.

    .venv/bin/python bench/scheduler_bench.py [decide|commit] ...

- decide: one instance placed among 1,000 and 10,000 synthetic hosts of mixed
          sizes and usage with the default filters and weighers, on the
          placement table (scheduler/decide.py): decisions/s.
- commit: placements committed per second into a real etcd, as the servicer
          commits them (decide on the watch-fed cache, hold, claim the batch
          and write its instance records in one transaction), with 1 and with
          2 scheduler processes at once, for single-instance requests and for
          `--count 10` requests; agents not involved. A fresh etcd per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Put
from computed.store.records import (
    AllocationRecord,
    BuildFailuresRecord,
    Claim,
    HostAdminRecord,
    HostRecord,
    InstanceRecord,
    InstanceSpec,
    KvmFacts,
    LivenessRecord,
)
from scheduler.claims import Placement, claim
from scheduler.cluster_view import ClusterView
from scheduler.decide import choose_hosts
from scheduler.host_cache import HostCache
from scheduler.host_table import HostTable
from scheduler.placement import PlacementConfig, Request

FACTS = KvmFacts(12, "kvm_intel", "userspace", False)


def synthetic_view(n: int, seed: int = 1) -> ClusterView:
    """n hosts of mixed sizes, partly used, a few down or disabled: every filter and
    weigher has something to tell apart (identical empty hosts would let the weighers
    short-cut and flatter the figure)."""
    rnd = random.Random(seed)
    v = ClusterView()
    for i in range(n):
        h = f"node-{i:05d}"
        vcpus, memory_mb = rnd.choice(((16, 65536), (32, 131072), (64, 262144), (128, 524288)))
        v.hosts[h] = HostRecord(h, "x:1", f"az{i % 3}", vcpus, memory_mb, 16.0, 1.5, FACTS)
        if rnd.random() > 0.01:
            v.live[h] = LivenessRecord(h, 0.0)
        if rnd.random() < 0.01:
            v.admin[h] = HostAdminRecord(False, "maintenance")
        alloc = AllocationRecord(h)
        for j in range(rnd.randrange(0, 20)):
            alloc = alloc.with_claim(
                f"{h}-{j}", Claim(rnd.choice((1, 2, 4)), rnd.choice((512, 2048, 4096)))
            )
        v.allocations[h] = alloc
        if rnd.random() < 0.005:
            v.build_failures[h] = BuildFailuresRecord(1, 0.0)
    return v


def bench_decide(sizes: list[int], seconds: float, rounds: int) -> None:
    for n in sizes:
        view = synthetic_view(n)
        table = HostTable()
        t0 = time.perf_counter()
        table.sync(view)
        built = time.perf_counter() - t0
        rates = []
        for _ in range(rounds):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                choose_hosts(table, Request(2, 2048))
                count += 1
            rates.append(count / (time.perf_counter() - start))
        print(
            f"decide: 1 instance among {n:,} hosts: p50 {statistics.median(rates):,.0f} "
            f"decisions/s (spread {min(rates):,.0f}-{max(rates):,.0f}, {rounds} runs); "
            f"table built from the view in {built * 1000:.0f} ms"
        )


def _committer(
    endpoint: str, seconds: float, cfg: CommitConfig, out: multiprocessing.Queue
) -> None:
    """One scheduler: request threads deciding and claiming batches, as the servicer does
    (decide and hold under the cache lock, claim in one transaction, then note and unhold)."""
    store = Store(endpoint)
    cache = HostCache(store)
    cache.start()
    cache.wait_synced(10)
    table = HostTable()
    placement = PlacementConfig(host_subset_size=cfg.subset)
    ask = Request(1, 64, count=cfg.batch)
    spec = InstanceSpec("", "instance-00000000", "heartbeat", 1, 64)
    counts = {"committed": 0, "conflicts": 0}
    start = time.perf_counter()

    def worker() -> None:
        while time.perf_counter() - start < seconds:
            with cache.lock:
                view = cache.view
                table.sync(view)
                chosen = [d.host for d in choose_hosts(table, ask, placement)]
                table.hold(chosen, 1, 64)
                seen = {
                    h: (view.allocations.get(h), view.revisions.get(keys.allocation(h), 0))
                    for h in chosen
                }
            uids = [str(uuid.uuid4()) for _ in chosen]
            extra = [
                Put(keys.instance(u), InstanceRecord(dataclasses.replace(spec, uuid=u), "BUILD",
                                                     host=h), lease=0)
                for u, h in zip(uids, chosen, strict=True)
            ]  # fmt: skip
            batch = [Placement(u, h, 1, 64) for u, h in zip(uids, chosen, strict=True)]
            claimed = claim(store, batch, view.hosts, extra, seen)
            with cache.lock:
                if claimed is not None:
                    cache.note_claim(claimed.allocations, claimed.revision)
                    counts["committed"] += len(batch)
                else:
                    counts["conflicts"] += 1
                table.hold(chosen, 1, 64, -1)

    pool = [threading.Thread(target=worker) for _ in range(cfg.threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((counts["committed"], counts["conflicts"], time.perf_counter() - start))
    cache.close()
    store.close()


@dataclasses.dataclass(frozen=True)
class CommitConfig:
    threads: int  # request threads per scheduler process
    subset: int  # host_subset_size
    batch: int  # instances per request (--count): one claim transaction each


def bench_commit(hosts: int, seconds: float, rounds: int, cfg: CommitConfig) -> None:
    from tests.etcd_harness import EtcdServer

    for procs in (1, 2):
        rates, conflicts = [], 0
        for _ in range(rounds):
            with EtcdServer() as etcd, Store(etcd.endpoint) as store:  # empty hosts each round
                store.put_many(
                    op
                    for i in range(hosts)
                    for h in [f"node-{i:05d}"]
                    for op in (
                        Put(keys.host(h), HostRecord(h, "x:1", "nova", 64, 262144, 16, 1.5, FACTS)),
                        Put(keys.liveness(h), LivenessRecord(h, 0.0)),
                    )
                )
                out: multiprocessing.Queue = multiprocessing.Queue()
                args = (etcd.endpoint, seconds, cfg, out)
                workers = [
                    multiprocessing.Process(target=_committer, args=args) for _ in range(procs)
                ]
                for w in workers:
                    w.start()
                results = [out.get(timeout=seconds + 60) for _ in workers]
                for w in workers:
                    w.join()
            rates.append(sum(r[0] for r in results) / max(r[2] for r in results))
            conflicts += sum(r[1] for r in results)
        print(
            f"commit: {procs} scheduler(s) x {cfg.threads} threads, requests of {cfg.batch}, "
            f"{hosts} hosts, host subset {cfg.subset}: p50 {statistics.median(rates):,.0f} "
            f"placements/s (spread {min(rates):,.0f}-{max(rates):,.0f}, {rounds} runs of "
            f"{seconds:.0f}s; {conflicts} claim conflicts re-decided in all)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="*", default=["decide", "commit"])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=8, help="request threads per scheduler")
    ap.add_argument("--subset", type=int, default=8, help="host_subset_size")
    ap.add_argument("--batches", default="1,10", help="instances per request, comma-separated")
    a = ap.parse_args()
    for which in a.which:
        if which == "decide":
            bench_decide([1000, 10000], a.seconds, a.rounds)
        else:
            for batch in (int(b) for b in a.batches.split(",")):
                bench_commit(a.hosts, a.seconds, a.rounds, CommitConfig(a.threads, a.subset, batch))


if __name__ == "__main__":
    main()
