"""Soak: N servers running, continuous churn, stats at 1 Hz, for a long time. Not a test.

    .venv/bin/python bench/soak.py [--instances 100] [--duration 1800] [--out DIR]

On a private dev cluster (tag "sk", subnet 10.217.0.0/24, /var/tmp/computed-soak,
free ports; never the default dev cluster): 3 hosts of 4 vCPUs and 8 GiB, agents
writing stats every second, one scheduler with its default history retention.
It fills the cluster to --instances servers, then churns until --duration is up:
every --churn-interval seconds one single create (its latency is "create
latency"), a --count batch, as many deletes of the oldest servers, a stop and
start, and a soft reboot. Every --sample-interval seconds it records each
daemon's RSS and open fds (etcd, scheduler, agents, their warm VMM parents),
etcd's DB size and revision, and the watch lag (a probe key put, and seen on a
whole-/computed/ watch held by this process, shaped like the scheduler's).

Writes soak.csv, creates.csv and soak.png in --out, prints a verdict per curve
(bench/soak_report.py says what "plateau" means), the figures, and the
leftovers (tests/leftovers.py) with the population up and after deleting
everything. Exit status 0 only if every curve plateaus and nothing is left.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc
import psutil

from bench import soak_report as report
from bench.launch_bench import idle_cmdline
from computed.api import compute_pb2, compute_pb2_grpc, types_pb2
from computed.devcluster.cluster import Cluster
from computed.devcluster.plan import DEFAULT_ETCD_SNAPSHOT_COUNT, make_plan
from computed.store import keys
from computed.store.client import Store, WatchEvent
from tests import leftovers

PROBE = keys.ROOT + "soak-probe"  # ignored by the scheduler's view; deleted at the end


def free_ports(n: int) -> int:
    for _ in range(200):
        base = random.randrange(30000, 60000 - n)
        ok = True
        for port in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("0.0.0.0", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("no free ports")


class Workload:
    """The churn: keeps about `instances` servers, creating and deleting all the time."""

    def __init__(self, stub, instances: int, batch: int, cmdline: str = "") -> None:
        self.stub = stub
        self.cmdline = cmdline
        self.instances = instances
        self.batch = batch
        self.population: collections.deque[compute_pb2.Server] = collections.deque()
        self.gone: dict[str, compute_pb2.Server] = {}
        self.ended_pids: set[int] = set()
        self.creates: list[tuple[float, float]] = []  # (monotonic end, seconds) of single creates
        self.errors: collections.Counter[str] = collections.Counter()
        self.cycle = 0

    def create(self, count: int) -> list[compute_pb2.Server]:
        self.cycle += 1
        request = compute_pb2.CreateServersRequest(
            name=f"s{self.cycle}", flavor="m1.tiny", image="heartbeat", count=count,
            cmdline=self.cmdline,
        )  # fmt: skip
        try:
            servers = list(self.stub.CreateServers(request, timeout=300).servers)
        except grpc.RpcError as e:
            self.errors[f"create: {e.code().name}: {e.details()[:80]}"] += 1
            return []
        for s in servers:
            if s.instance.status != types_pb2.STATUS_ACTIVE:
                self.errors[f"create: {types_pb2.InstanceStatus.Name(s.instance.status)}"] += 1
            self.population.append(s)
        return servers

    def create_one_timed(self) -> None:
        start = time.monotonic()
        if self.create(1):
            self.creates.append((time.monotonic(), time.monotonic() - start))

    def delete(self, server: compute_pb2.Server) -> None:
        uuid = server.instance.spec.uuid
        try:
            latest = self.stub.GetServer(compute_pb2.ServerRef(name_or_id=uuid), timeout=30)
            self.stub.DeleteServer(compute_pb2.ServerRef(name_or_id=uuid), timeout=60)
        except grpc.RpcError as e:
            self.errors[f"delete: {e.code().name}"] += 1
            return
        self.gone[uuid] = latest
        if latest.instance.pid:
            self.ended_pids.add(latest.instance.pid)

    def lifecycle(self) -> None:
        """A stop and start of one server and a soft reboot of another."""
        if len(self.population) < 2:
            return
        a, b = random.sample(list(self.population), 2)
        ref = compute_pb2.ServerRef(name_or_id=a.instance.spec.uuid)
        try:
            before = self.stub.GetServer(ref, timeout=30).instance.pid
            self.stub.StopServer(ref, timeout=60)
            self.stub.StartServer(ref, timeout=60)
            self.ended_pids.add(before)
            self.stub.RebootServer(
                compute_pb2.RebootServerRequest(name_or_id=b.instance.spec.uuid), timeout=60
            )
        except grpc.RpcError as e:
            self.errors[f"lifecycle: {e.code().name}: {e.details()[:60]}"] += 1

    def fill(self) -> None:
        while len(self.population) < self.instances:
            self.create(min(10, self.instances - len(self.population)))

    def churn_once(self) -> None:
        self.create_one_timed()
        self.create(self.batch - 1)
        while len(self.population) > self.instances:
            self.delete(self.population.popleft())
        self.lifecycle()

    def delete_all(self) -> None:
        while self.population:
            self.delete(self.population.popleft())


class WatchLag:
    """Put a probe key; time until it arrives on a whole-/computed/ watch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._arrived: dict[str, float] = {}
        self._cond = threading.Condition()
        _, revision = store.get_prefix(PROBE)
        self._watch = store.watch_prefix(keys.ROOT, self._on_events, self._on_error, revision + 1)
        self.broken = False

    def _on_events(self, events: list[WatchEvent], revision: int) -> None:
        now = time.monotonic()
        with self._cond:
            for e in events:
                if e.key == PROBE and e.kind == "put":
                    self._arrived[e.value.decode()] = now
            self._cond.notify_all()

    def _on_error(self, error: Exception) -> None:
        self.broken = True

    def measure(self, timeout: float = 10.0) -> float | None:
        token = f"{time.time():.6f}"
        start = time.monotonic()
        self.store.put(PROBE, token)
        with self._cond:
            self._cond.wait_for(lambda: token in self._arrived, timeout)
            arrived = self._arrived.pop(token, None)
        return None if arrived is None else (arrived - start) * 1000

    def close(self) -> None:
        self._watch.cancel()
        self.store.delete(PROBE)


def daemons(cluster: Cluster) -> dict[str, psutil.Process]:
    """etcd, the schedulers, each agent and its warm VMM parent, by a short name."""
    found = {}
    for name, pid in cluster.pids.items():
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            continue
        short = name if name in ("etcd",) or name.startswith("scheduler") else f"agent{name[-1]}"
        found[short] = proc
        if short.startswith("agent"):
            for child in proc.children():
                try:
                    if "zygote" in " ".join(child.cmdline()):
                        found[f"warm{name[-1]}"] = child
                except psutil.Error:
                    continue
    return found


def sample(procs: dict[str, psutil.Process], store: Store, stub) -> dict[str, object]:
    row: dict[str, object] = {}
    for host in stub.ListHosts(compute_pb2.ListHostsRequest(), timeout=30).hosts:
        row[f"agent{host.info.host_id[-1]}_instances"] = len(host.instances)
    for name, proc in procs.items():
        try:
            row[f"{name}_rss_mb"] = round(proc.memory_info().rss / 2**20, 2)
            row[f"{name}_fds"] = proc.num_fds()
        except psutil.Error:
            row[f"{name}_rss_mb"] = row[f"{name}_fds"] = ""
    status = store.status()
    row["etcd_db_mb"] = round(status.db_size / 2**20, 3)
    row["etcd_revision"] = status.revision
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--duration", type=float, default=1800, help="seconds of churn")
    ap.add_argument("--batch", type=int, default=5, help="servers created per churn cycle")
    ap.add_argument("--churn-interval", type=float, default=10.0)
    ap.add_argument("--sample-interval", type=float, default=5.0)
    ap.add_argument(
        "--cmdline",
        default=None,
        help="the guests' command line (default: the tickless heartbeat, hz=0, "
        "so N idle guests cost the host nothing and the control plane is measured)",
    )
    ap.add_argument(
        "--etcd-snapshot-count",
        type=int,
        default=DEFAULT_ETCD_SNAPSHOT_COUNT,
        help="etcd's --snapshot-count (default: the dev cluster's, %(default)s)",
    )
    ap.add_argument("--out", default="/tmp/computed-soak")
    ap.add_argument("--keep", action="store_true", help="leave the cluster up at the end")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    plan = make_plan(
        hosts=3, subnet="10.217.0.0/24", state_dir="/var/tmp/computed-soak", tag="sk",
        scheduler_port=free_ports(1), etcd_port=free_ports(2), host_vcpus=4,
        host_memory_mb=8192, etcd_snapshot_count=a.etcd_snapshot_count,
    )  # fmt: skip
    cluster = Cluster(plan)
    cluster.down()
    code = 1
    try:
        cluster.up()
        code = run(a, cluster)
    finally:
        if not a.keep:
            cluster.down()
    sys.exit(code)


def run(a: argparse.Namespace, cluster: Cluster) -> int:
    plan = cluster.plan
    channel = cluster.admin_channel()  # the cluster runs mTLS, and etcd TLS with auth
    stub = compute_pb2_grpc.ComputeStub(channel)
    store = cluster.admin_store(timeout=10)
    deadline = time.monotonic() + 60
    while sum(h.up for h in stub.ListHosts(compute_pb2.ListHostsRequest()).hosts) < 3:
        if time.monotonic() > deadline:
            raise SystemExit("hosts did not come up")
        time.sleep(0.5)
    cmdline = a.cmdline if a.cmdline is not None else idle_cmdline()[0]
    work = Workload(stub, a.instances, a.batch, cmdline)
    print(f"soak: filling to {a.instances} servers", flush=True)
    fill_start = time.monotonic()
    work.fill()
    print(f"soak: filled in {time.monotonic() - fill_start:.0f}s; churning for {a.duration:.0f}s",
          flush=True)  # fmt: skip
    lag = WatchLag(store)
    procs = daemons(cluster)
    rows: list[dict[str, object]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sampler() -> None:
        last = None
        while not stop.is_set():
            now = time.monotonic()
            try:
                row = {"elapsed_s": round(now - t0, 1), "instances": len(work.population)}
                row.update(sample(procs, store, stub))
                if last is not None:
                    dt = now - last[0]
                    row["revisions_per_s"] = round((row["etcd_revision"] - last[1]) / dt, 2)
                last = (now, row["etcd_revision"])
                row["watch_lag_ms"] = lag.measure()
                rows.append(row)
            except Exception as e:  # a sample lost is recorded, not fatal
                work.errors[f"sample: {type(e).__name__}"] += 1
            stop.wait(max(0.0, a.sample_interval - (time.monotonic() - now)))

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    next_report = t0 + 60
    ending = threading.Event()  # SIGINT/SIGTERM: end the churn now, report and clean up
    for signo in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signo, lambda *_: ending.set())
    while time.monotonic() - t0 < a.duration and not ending.is_set():
        started = time.monotonic()
        work.churn_once()
        if time.monotonic() >= next_report and rows:
            next_report += 60
            r = rows[-1]
            print(f"soak: {r['elapsed_s'] / 60:.0f} min, {r['instances']} servers, "
                  f"etcd {r['etcd_db_mb']} MiB rev {r['etcd_revision']}, "
                  f"lag {r['watch_lag_ms']} ms, errors {dict(work.errors)}",
                  flush=True)  # fmt: skip
        ending.wait(max(0.0, a.churn_interval - (time.monotonic() - started)))
    stop.set()
    thread.join()
    lag.close()

    handles = leftovers.Cluster(plan, [stub], store)
    up_now = {s.instance.spec.uuid: s for s in stub.ListServers(
        compute_pb2.ListServersRequest(), timeout=30).servers}  # fmt: skip
    wanted = leftovers.Wanted(up_now, dict(work.gone), frozenset(work.ended_pids))
    during = leftovers.find(handles, wanted)
    for s in up_now.values():
        if s.instance.pid:
            work.ended_pids.add(s.instance.pid)
    work.population = collections.deque(up_now.values())
    work.delete_all()
    after: list[str] = []
    end = time.monotonic() + 60
    while True:
        after = leftovers.find(handles, leftovers.Wanted({}, work.gone, frozenset(work.ended_pids)))
        if not after or time.monotonic() > end:
            break
        time.sleep(2)
    return summarize(a, rows, work, procs, during, after)


def summarize(a, rows, work: Workload, procs, during: list[str], after: list[str]) -> int:
    t = [float(r["elapsed_s"]) for r in rows]
    names = sorted(procs)
    verdicts = []
    for n in names:
        verdicts.append(report.plateau(f"{n} RSS", t, [r.get(f"{n}_rss_mb") or None for r in rows],
                                       floor=8, unit=" MiB"))  # fmt: skip
        if n.startswith("agent"):  # an agent holds a few fds per VMM: judge fds per VMM
            per = [_ratio(r.get(f"{n}_fds"), r.get(f"{n}_instances")) for r in rows]
            verdicts.append(report.plateau(f"{n} fds per instance", t, per, floor=0.5))
        else:
            fds = [r.get(f"{n}_fds") or None for r in rows]
            verdicts.append(report.plateau(f"{n} fds", t, fds, floor=8))
    verdicts.append(report.plateau("etcd DB size", t, [r["etcd_db_mb"] for r in rows], floor=16,
                                   unit=" MiB"))  # fmt: skip
    verdicts.append(report.plateau("watch lag", t, [r.get("watch_lag_ms") for r in rows],
                                   floor=50, unit=" ms"))  # fmt: skip
    t0 = work.creates[0][0] if work.creates else 0
    end = work.creates[-1][0] if work.creates else 0
    first = [v for when, v in work.creates if when - t0 <= 60]
    last = [v for when, v in work.creates if end - when <= 60]
    verdicts.append(report.latency_steady("create latency", first, last, floor=0.5))
    report.write_csv(os.path.join(a.out, "soak.csv"), rows)
    report.write_csv(
        os.path.join(a.out, "creates.csv"),
        [{"t_s": round(w - t0, 2), "latency_s": round(v, 4)} for w, v in work.creates],
    )
    problem = report.write_plot(os.path.join(a.out, "soak.png"), rows,
                                [(w - t0, v) for w, v in work.creates], names,
                                f"soak: {a.instances} servers, "
                                f"{a.duration / 60:.0f} min")  # fmt: skip
    print(f"\nsoak: {a.instances} servers, {len(rows)} samples over {t[-1] / 60:.1f} min; "
          f"{len(work.creates)} timed creates, {len(work.gone)} deletes")  # fmt: skip
    for n in names:
        col = f"{n}_rss_mb"
        print(f"  {n:<11} RSS {rows[0].get(col)} -> {rows[-1].get(col)} MiB, "
              f"fds {rows[0].get(f'{n}_fds')} -> {rows[-1].get(f'{n}_fds')}")  # fmt: skip
    print(f"  etcd DB    {rows[0]['etcd_db_mb']} -> {rows[-1]['etcd_db_mb']} MiB, revision "
          f"{rows[0]['etcd_revision']} -> {rows[-1]['etcd_revision']}")  # fmt: skip
    rates = [r["revisions_per_s"] for r in rows if "revisions_per_s" in r]
    if rates:
        print(
            f"  revisions/s median {statistics.median(rates):.1f} "
            f"(p10 {sorted(rates)[len(rates) // 10]}, p90 {sorted(rates)[9 * len(rates) // 10]})"
        )
    lags = sorted(r["watch_lag_ms"] for r in rows if r.get("watch_lag_ms") is not None)
    if lags:
        p50, p99 = lags[len(lags) // 2], lags[99 * len(lags) // 100]
        print(f"  watch lag p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    if first and last:
        print(f"  create p50 first minute {statistics.median(first):.3f}s (n={len(first)}), "
              f"last minute {statistics.median(last):.3f}s (n={len(last)})")  # fmt: skip
    print(f"  errors: {dict(work.errors) or 'none'}")
    print("\nplateau:")
    for v in verdicts:
        print(f"  {'PASS' if v.ok else 'FAIL'}  {v.name}: {v.detail}")
    print(f"\nleftovers with the population up: {len(during)}")
    for line in during[:20]:
        print(f"  {line}")
    print(f"leftovers after deleting everything: {len(after)}")
    for line in after[:20]:
        print(f"  {line}")
    print(f"\nwrote {a.out}/soak.csv, creates.csv" + (f"; {problem}" if problem else ", soak.png"))
    ok = all(v.ok for v in verdicts) and not during and not after
    print("SOAK PASS" if ok else "SOAK FAIL")
    return 0 if ok else 1


def _ratio(a: object, b: object) -> float | None:
    try:
        return float(a) / float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None


if __name__ == "__main__":
    from tests.ksm_host import ksm_settings

    with ksm_settings():  # its agents start KSM, as the product does: put back as found
        main()
