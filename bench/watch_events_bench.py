"""How many watch events a scheduler receives per second while agents write stats.

    .venv/bin/python bench/watch_events_bench.py [--instances 200] [--hosts 10]
        [--interval 1.0] [--seconds 20] [--changes-per-s 0]

A real etcd (tests/etcd_harness.py) and `--hosts` simulated agents, each
writing its instances' and its own stats every `--interval` seconds on its
lease, exactly as agent/reporter.py does (one put_many per host per interval,
the same keys). `--changes-per-s` instance reports change state as well.

Two watchers run side by side on the same traffic:
- before: a watch on all of /computed/, which is what every scheduler's
  cache used to follow;
- after: the scheduler's HostCache as it is now (the range [/computed/,
  /computed/stats/)), counted at its event callback.

Prints events/s for each, per second of the run (median and spread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from computed import status
from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Put
from computed.store.records import InstanceRecord, InstanceReport, InstanceSpec
from scheduler.host_cache import HostCache
from tests.etcd_harness import EtcdServer


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def add(self, k: int) -> None:
        with self.lock:
            self.n += k

    def take(self) -> int:
        with self.lock:
            n, self.n = self.n, 0
            return n


def stats_sample(uuid_: str, now: float) -> str:
    """A sample shaped like agent/vmm_stats.py's (same size order: ~450 bytes)."""
    sample = {"uuid": uuid_, "timestamp": now, "pid": 4242, "cpu.time": 3_000_000_000,
              "cpu.user": 2_000_000_000, "cpu.system": 1_000_000_000, "cpu.percent": 1.5,
              "vcpu.count": 1, "vcpu.0.tid": 4244, "vcpu.0.time": 1_500_000_000,
              "helper.kvm-pit.pid": 4243, "helper.kvm-pit.time": 2_000_000,
              "memory.rss": 9_437_184, "threads": 4, "ctx_switches.voluntary": 100,
              "ctx_switches.involuntary": 7, "uptime": now % 1000}  # fmt: skip
    return json.dumps(sample, separators=(",", ":"))


def run(args: argparse.Namespace) -> None:
    per_host = args.instances // args.hosts
    hosts = {f"bench-{h}": [str(uuid.uuid4()) for _ in range(per_host)] for h in range(args.hosts)}
    with EtcdServer() as etcd, Store(etcd.endpoint) as store:
        for host_id, uuids in hosts.items():  # the scheduler's records, as after a create
            store.put_many(
                Put(keys.instance(u), InstanceRecord(
                    InstanceSpec(u, f"instance-{i:08x}", "heartbeat", 1, 64),
                    status.ACTIVE, status.RUNNING, host=host_id))
                for i, u in enumerate(uuids)
            )  # fmt: skip
        before, after = Counter(), Counter()
        watch = store.watch_prefix(
            keys.ROOT, lambda events, _rev: before.add(len(events)), lambda _e: None
        )
        cache = HostCache(store)
        on_events = cache._on_events

        def counted(events, revision) -> None:
            after.add(len(events))
            on_events(events, revision)

        cache._on_events = counted  # type: ignore[method-assign]
        cache.start()
        assert cache.wait_synced(10)
        stop = threading.Event()
        writers = [
            threading.Thread(target=agent_loop, args=(store, h, u, args, stop), daemon=True)
            for h, u in hosts.items()
        ]
        for w in writers:
            w.start()
        time.sleep(2 * args.interval)  # every writer running
        before.take(), after.take()
        per_second: list[tuple[int, int]] = []
        for _ in range(args.seconds):
            time.sleep(1.0)
            per_second.append((before.take(), after.take()))
        stop.set()
        for w in writers:
            w.join()
        watch.cancel()
        cache.close()
    report(args, per_second)


def agent_loop(
    store: Store, host_id: str, uuids: list[str], args: argparse.Namespace, stop: threading.Event
) -> None:
    """One agent's etcd traffic: stats for all its instances each interval, on its lease;
    now and then one of its instances changes state (a report)."""
    lease = store.grant_lease(10)
    changes_per_host = args.changes_per_s / args.hosts
    owed = 0.0
    while not stop.is_set():
        now = time.time()
        ops = [Put(keys.instance_stats(host_id, u), stats_sample(u, now)) for u in uuids]
        ops.append(Put(keys.host_stats(host_id), json.dumps({"timestamp": now})))
        store.put_many(ops, lease=lease)
        store.refresh_lease(lease)
        owed += changes_per_host * args.interval
        while owed >= 1:
            owed -= 1
            u = uuids[int(now * 1000) % len(uuids)]
            state = status.PAUSED if int(now) % 2 else status.ACTIVE
            store.put(keys.report(host_id, u), InstanceReport(state, status.RUNNING, pid=1))
        stop.wait(max(0.0, args.interval - (time.time() - now)))
    store.revoke_lease(lease)


def report(args: argparse.Namespace, per_second: list[tuple[int, int]]) -> None:
    def line(name: str, values: list[int]) -> str:
        return (f"  {name:<34} median {statistics.median(values):7.1f}/s   "
                f"mean {statistics.mean(values):7.1f}/s   "
                f"min {min(values):5d}   max {max(values):5d}")  # fmt: skip

    print(f"{args.instances} instances on {args.hosts} hosts, stats every {args.interval:g} s, "
          f"{args.changes_per_s:g} state changes/s, {args.seconds} one-second samples")  # fmt: skip
    print(line("before: watch on all of /computed/", [b for b, _ in per_second]))
    print(line("after: scheduler HostCache watch", [a for _, a in per_second]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--hosts", type=int, default=10)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--changes-per-s", type=float, default=0.0)
    run(p.parse_args())


if __name__ == "__main__":
    main()
