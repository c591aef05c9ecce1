"""The control plane at fleet scale: hollow hosts, a 3-member etcd, several schedulers,
faults during the load, then the checks. Prints a report; asserts nothing; never in
`make test`.

    .venv/bin/python bench/fleet_bench.py --hosts 1000 --instances 20000 --schedulers 3

Setup: N hollow hosts (agent/hollow.py: the real agent over the fake driver, many
per process, stats every 10 s), S computed-scheduler processes, a real 3-member
etcd cluster on loopback. M instances are created through the public gRPC API by
concurrent clients, half in requests of --batch, half singly.

Faults during the load (by progress): kill -9 the etcd leader, restart it after
--etcd-down seconds; kill -9 one scheduler (restarted after 5 s); SIGSTOP one
group of --pause-hosts hollow hosts past their lease, evacuate them through the
API, then let them go on (their stale copies must remove themselves).

Measured: sustained placements/s (ACTIVE instances per second, and per 10-s
window), create → ACTIVE p50/p99 (a CreateServers call returns when its instances
are ACTIVE), etcd writes/s (revisions) and keys put/s, DB size, watch lag at each
scheduler (a DisableHost through scheduler 1, timed until each scheduler shows
it), scheduler and etcd RSS/CPU, hollow-host CPU per host, and `python -c pass`
in the same run for how quiet the machine was.

Checks against etcd afterwards (computed/devcluster/fleet_checks.py): no host over
capacity; every acknowledged create exists exactly once, on one host (records,
claims, and each agent's own list); no name or IP used twice.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc
import psutil

from computed.api import compute_pb2, compute_pb2_grpc, types_pb2
from computed.devcluster import fleet_checks
from computed.devcluster.fleet import HollowGroup, SchedulerProcess, running_on
from computed.store.client import Store
from tests.etcd_harness import EtcdCluster

MAX_INSTANCES_PER_HOST = 50  # the scheduler's default, checked afterwards

# Evacuation failures an operator retries: the store or the scheduler was briefly away.
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port_block(n: int) -> int:
    """The first of n consecutive free ports, below the kernel's ephemeral range (where
    etcd's and every client's own ports come from) so that none is taken meanwhile."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(100):
        base = random.randrange(10000, low - n)
        if all(port_free(base + i) for i in range(n)):
            return base
    raise SystemExit(f"no {n} consecutive free ports below {low}")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def python_pass_ms(runs: int = 5) -> float:
    """Median wall time of `python -c pass` now: how busy the machine is."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def etcd_status(endpoint: str) -> dict | None:
    """The member's /v3/maintenance/status (JSON gateway): dbSize, revision, leader."""
    try:
        req = urllib.request.Request(
            f"http://{endpoint}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(req, timeout=2) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


def etcd_metric(endpoint: str, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=2) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except (OSError, ValueError):
        return None
    return None


class Sampler(threading.Thread):
    """Samples CPU and RSS of named processes every second."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="sampler")
        self.procs: dict[str, psutil.Process] = {}
        self.cpu: dict[str, list[float]] = {}
        self.rss: dict[str, list[float]] = {}
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def track(self, name: str, pid: int | None) -> None:
        if pid is None:
            return
        with self._lock:
            p = psutil.Process(pid)
            p.cpu_percent(None)
            self.procs[name] = p

    def run(self) -> None:
        while not self.stop.wait(1.0):
            with self._lock:
                items = list(self.procs.items())
            for name, p in items:
                try:
                    with p.oneshot():
                        self.cpu.setdefault(name, []).append(p.cpu_percent(None))
                        self.rss.setdefault(name, []).append(p.memory_info().rss / 2**20)
                except psutil.Error:
                    with self._lock:
                        if self.procs.get(name) is p:
                            del self.procs[name]


class Load:
    """Concurrent clients creating instances through the schedulers' public API."""

    def __init__(self, schedulers: list[SchedulerProcess], target: int, batch: int, workers: int):
        self.schedulers = schedulers
        self.target = target
        self.batch = batch
        self.workers = workers
        self.channels = {s.address: grpc.insecure_channel(s.address) for s in schedulers}
        self.lock = threading.Lock()
        self.acknowledged: list[str] = []  # uuids, ACTIVE in a successful reply
        self.done_at: list[float] = []  # completion time of each acknowledged instance
        self.latency_single: list[float] = []
        self.latency_batch: list[float] = []
        self.errors: dict[str, int] = {}
        self.not_active = 0
        self.requested = 0
        self.names = itertools.count()
        self.stop = threading.Event()

    @property
    def progress(self) -> float:
        return len(self.acknowledged) / self.target

    def _stub(self, k: int) -> compute_pb2_grpc.ComputeStub:
        alive = [s for s in self.schedulers if s.serving] or self.schedulers
        return compute_pb2_grpc.ComputeStub(self.channels[alive[k % len(alive)].address])

    def _one(self, k: int) -> None:
        with self.lock:
            if self.requested >= self.target:
                self.stop.set()
                return
            # Half the instances in requests of `batch`, half singly (alternating).
            count = self.batch if (k % 2 == 0 and self.target - self.requested >= self.batch) else 1
            self.requested += count
        request = compute_pb2.CreateServersRequest(
            name=f"fleet-{next(self.names)}", flavor="m1.tiny", image="heartbeat", count=count
        )
        t = time.monotonic()
        try:
            reply = self._stub(k).CreateServers(request, timeout=120)
        except grpc.RpcError as e:
            with self.lock:
                key = f"{e.code().name}: {(e.details() or '')[:80]}"
                self.errors[key] = self.errors.get(key, 0) + 1
                self.requested -= count  # not placed: ask again
            time.sleep(0.2)  # e.g. its scheduler was just killed: the next pick avoids it
            return
        now = time.monotonic()
        ok = [
            s.instance.spec.uuid
            for s in reply.servers
            if s.instance.status == types_pb2.InstanceStatus.Value("STATUS_ACTIVE")
        ]
        with self.lock:
            self.acknowledged.extend(ok)
            self.done_at.extend([now] * len(ok))
            self.not_active += len(reply.servers) - len(ok)
            (self.latency_batch if count > 1 else self.latency_single).extend([now - t] * len(ok))

    def run(self) -> None:
        def worker(w: int) -> None:
            for k in itertools.count(w, self.workers):
                if self.stop.is_set():
                    return
                self._one(k)

        threads = [
            threading.Thread(target=worker, args=(w,), daemon=True) for w in range(self.workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self) -> None:
        for c in self.channels.values():
            c.close()


def watch_lag_probe(
    schedulers: list[SchedulerProcess], host_id: str, stop: threading.Event, out: dict
) -> None:
    """Toggle a host's enabled flag through scheduler 1; time until each scheduler shows it."""
    enabled = True
    channels = {s.name: grpc.insecure_channel(s.address) for s in schedulers}
    try:
        while not stop.wait(5.0):
            first = compute_pb2_grpc.ComputeStub(channels[schedulers[0].name])
            try:
                if enabled:
                    first.DisableHost(
                        compute_pb2.DisableHostRequest(host_id=host_id, reason="lag probe"),
                        timeout=10,
                    )
                else:
                    first.EnableHost(compute_pb2.HostRef(host_id=host_id), timeout=10)
            except grpc.RpcError:
                continue
            t0 = time.monotonic()
            enabled = not enabled
            for s in schedulers:
                if not s.serving:
                    continue
                stub = compute_pb2_grpc.ComputeStub(channels[s.name])
                while time.monotonic() - t0 < 30:
                    try:
                        h = stub.GetHost(compute_pb2.HostRef(host_id=host_id), timeout=5)
                        if h.enabled == enabled:
                            out.setdefault(s.name, []).append(time.monotonic() - t0)
                            break
                    except grpc.RpcError:
                        break
                    time.sleep(0.005)
    finally:
        for c in channels.values():
            c.close()


def leader_index(cluster: EtcdCluster) -> int | None:
    for i, ep in enumerate(cluster.endpoints):
        st = etcd_status(ep)
        if st and st.get("leader") == st.get("header", {}).get("member_id"):
            return i
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--hosts-per-process", type=int, default=250)
    ap.add_argument("--pause-hosts", type=int, default=20, help="hosts in the group SIGSTOPped")
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--schedulers", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--clients", type=int, default=24, help="concurrent API clients")
    ap.add_argument("--etcd-members", type=int, default=3)
    ap.add_argument(
        "--etcd-down", type=float, default=10.0, help="seconds a killed member stays down"
    )
    ap.add_argument("--lease-ttl", type=int, default=10)
    ap.add_argument("--stats-interval", type=float, default=10.0)
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument(
        "--no-network", action="store_true", help="no instance network: no IPs to claim"
    )
    ap.add_argument("--port", type=int, default=0, help="first port (default: random)")
    ap.add_argument(
        "--host-subset-size",
        type=int,
        default=1,
        help="the schedulers' --host-subset-size: each picks at random among its best N "
        "hosts, so replicas race for the same host less often (default 1, the product's)",
    )
    a = ap.parse_args()

    root = tempfile.mkdtemp(prefix="fl-", dir="/dev/shm")
    base = a.port or free_port_block(a.hosts + a.schedulers)
    report: dict[str, object] = {}
    print(
        f"fleet: {a.hosts} hollow hosts, {a.schedulers} schedulers, {a.instances} instances, "
        f"etcd {a.etcd_members} members; logs in {root}",
        flush=True,
    )
    report["python -c pass (ms), before"] = round(python_pass_ms(), 1)

    sampler = Sampler()
    groups: list[HollowGroup] = []
    schedulers: list[SchedulerProcess] = []
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(EtcdCluster(a.etcd_members))
        stack.callback(shutil.rmtree, root, True)
        for i in range(a.etcd_members):
            sampler.track(f"etcd-{i}", cluster.pid(i))
        # Hollow groups: the last one is the group that will be paused.
        sizes = []
        rest = a.hosts - (a.pause_hosts if not a.no_faults else 0)
        while rest > 0:
            sizes.append(min(a.hosts_per_process, rest))
            rest -= sizes[-1]
        if not a.no_faults:
            sizes.append(a.pause_hosts)
        first = 0
        t0 = time.monotonic()
        for gi, size in enumerate(sizes):
            g = HollowGroup(
                f"g{gi}", size, first, base + first, cluster.endpoint, root,
                vcpus=32, memory_mb=131072, stats_interval=a.stats_interval, lease_ttl=a.lease_ttl,
            )  # fmt: skip
            groups.append(g)
            stack.callback(g.stop)
            first += size
        registered = 0
        for g in groups:  # one group at a time: a start-up burst expired leases at 1,000 hosts
            g.start()
            registered += g.wait_ready()
        report["hollow hosts registered"] = registered
        report["hollow start-up (s)"] = round(time.monotonic() - t0, 1)
        for g in groups:
            sampler.track(g.name, g.pid)
        network = ["--instance-network", "10.64.0.0/10", "--instance-gateway", "10.64.0.1",
                   "--instance-range", "10.64.0.2-10.127.255.254"]  # fmt: skip
        if a.no_network:
            network = []
        extra = [*network, "--host-subset-size", str(a.host_subset_size)]
        for si in range(a.schedulers):
            s = SchedulerProcess(f"scheduler-{si + 1}", base + a.hosts + si, cluster.endpoint, root,
                                 extra)  # fmt: skip
            schedulers.append(s)
            stack.callback(s.stop)
        for s in schedulers:
            s.start(timeout=180)
            sampler.track(s.name, s.pid)
        sampler.track("bench", os.getpid())
        sampler.start()
        stack.callback(sampler.stop.set)
        # Every scheduler must see every host before the load starts.
        with grpc.insecure_channel(schedulers[-1].address) as ch:
            stub = compute_pb2_grpc.ComputeStub(ch)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                up = sum(
                    h.up for h in stub.ListHosts(compute_pb2.ListHostsRequest(), timeout=30).hosts
                )
                if up >= registered:
                    break
                time.sleep(1)
        report["hosts up at scheduler"] = up

        ep0 = cluster.endpoints[0]
        status0 = etcd_status(ep0) or {}
        rev0 = int(status0.get("header", {}).get("revision", 0))
        puts0 = etcd_metric(ep0, "etcd_mvcc_put_total") or 0
        txn0 = etcd_metric(ep0, "etcd_mvcc_txn_total") or 0
        load = Load(schedulers, a.instances, a.batch, a.clients)
        probe_host = groups[0].host_ids[0]
        lag: dict[str, list[float]] = {}
        probe_stop = threading.Event()
        probe = threading.Thread(
            target=watch_lag_probe, args=(schedulers, probe_host, probe_stop, lag), daemon=True
        )
        faults: list[str] = []
        pass_during: list[float] = []

        def fault_plan() -> None:
            def at(fraction: float) -> bool:
                while load.progress < fraction:
                    if load.stop.is_set():
                        return False
                    time.sleep(0.2)
                return True

            if at(0.15):
                pass_during.append(python_pass_ms())
            if a.no_faults:
                return
            if at(0.25):
                leader = leader_index(cluster)
                victim = 0 if leader is None else leader
                when = load.progress
                t = time.monotonic()
                cluster.kill_member(victim)
                time.sleep(a.etcd_down)
                cluster.start_member(victim)
                sampler.track(f"etcd-{victim}", cluster.pid(victim))
                role = "the leader" if leader is not None else "leader unknown"
                faults.append(f"etcd member m{victim} ({role}) kill -9 at {when:.0%}, "
                              f"healthy again after {time.monotonic() - t:.1f} s")  # fmt: skip
            if at(0.45):
                s = schedulers[-1]
                when = load.progress
                s.kill()
                time.sleep(5)
                t = time.monotonic()
                s.start(timeout=180)
                sampler.track(s.name, s.pid)
                faults.append(f"{s.name} kill -9 at {when:.0%}, serving again "
                              f"{time.monotonic() - t + 5:.1f} s later")  # fmt: skip
            if at(0.6):
                g = groups[-1]
                when = load.progress
                t = time.monotonic()
                g.pause()
                try:
                    down_after, moved, failed, evac_s = evacuate_group(g, t)
                finally:
                    g.resume()
                faults.append(
                    f"{g.hosts} hollow hosts SIGSTOPped at {when:.0%}: down at the "
                    f"scheduler after {down_after:.1f} s; {moved} instances evacuated in "
                    f"{evac_s:.1f} s ({failed} evacuations failed); then SIGCONT"
                )
            if at(0.8):
                pass_during.append(python_pass_ms())

        def evacuate_group(g: HollowGroup, t: float) -> tuple[float, int, int, float]:
            with grpc.insecure_channel(schedulers[0].address) as ch:
                stub = compute_pb2_grpc.ComputeStub(ch)
                ids = set(g.host_ids)
                while time.monotonic() - t < 180:
                    try:  # a loaded scheduler may not answer in time: ask again
                        reply = stub.ListHosts(compute_pb2.ListHostsRequest(), timeout=60)
                    except grpc.RpcError:
                        continue
                    if all(not h.up for h in reply.hosts if h.info.host_id in ids):
                        break
                    time.sleep(0.5)
                down_after = time.monotonic() - t
                moved, failed = 0, 0
                te = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(8) as pool:

                    def evacuate(h: str) -> int:
                        """As an operator would: an evacuation that failed part-way (etcd
                        lost its leader) is asked again, and resumes where it stopped."""
                        for attempt in range(5):
                            try:
                                r = stub.EvacuateHost(compute_pb2.HostRef(host_id=h), timeout=300)
                                return len(r.servers)
                            except grpc.RpcError as e:
                                if attempt == 4 or e.code() not in _RETRIED:
                                    raise
                                faults.append(f"evacuate {h}: {e.code().name}, asked again")
                                time.sleep(2 * (attempt + 1))
                        return 0

                    for job in [pool.submit(evacuate, h) for h in g.host_ids]:
                        try:
                            moved += job.result()
                        except grpc.RpcError as e:
                            failed += 1
                            faults.append(f"evacuate failed: {e.code().name} {e.details()[:100]}")
                evac_s = time.monotonic() - te
            return down_after, moved, failed, evac_s

        def progress_line() -> None:
            last = 0
            while not load.stop.wait(30):
                n = len(load.acknowledged)
                print(f"  {time.strftime('%H:%M:%S')} {n} ACTIVE ({(n - last) / 30:.1f}/s), "
                      f"{sum(load.errors.values())} errors", flush=True)  # fmt: skip
                last = n

        threading.Thread(target=progress_line, daemon=True).start()
        load_start = time.monotonic()
        cpu_start = {n: p.cpu_times() for n, p in sampler.procs.items()}
        probe.start()
        planner = threading.Thread(target=fault_plan, daemon=True)
        planner.start()
        load.run()
        load_end = time.monotonic()
        probe_stop.set()
        planner.join(timeout=300)
        probe.join(timeout=60)
        duration = load_end - load_start
        status1 = etcd_status(ep0) or etcd_status(cluster.endpoints[1]) or {}
        rev1 = int(status1.get("header", {}).get("revision", 0))
        puts1 = etcd_metric(ep0, "etcd_mvcc_put_total") or 0
        txn1 = etcd_metric(ep0, "etcd_mvcc_txn_total") or 0
        report["python -c pass (ms), during load"] = [round(x, 1) for x in pass_during]

        n_ok = len(load.acknowledged)
        report["instances acknowledged ACTIVE"] = n_ok
        report["replies with non-ACTIVE instances"] = load.not_active
        report["API errors (not acknowledged, retried)"] = load.errors
        report["load duration (s)"] = round(duration, 1)
        report["placements/s (mean over the load)"] = round(n_ok / duration, 1)
        windows = []
        done = sorted(load.done_at)
        w = load_start
        while w + 10 <= load_end:
            windows.append(sum(1 for x in done if w <= x < w + 10) / 10)
            w += 10
        if windows:
            report["placements/s per 10-s window: median, min, max"] = (
                round(statistics.median(windows), 1), round(min(windows), 1), round(max(windows), 1)
            )  # fmt: skip
        for name, lat in (("single", load.latency_single), ("batch", load.latency_batch)):
            report[f"create→ACTIVE {name} p50/p99 (s)"] = (
                round(pct(lat, 0.5), 3),
                round(pct(lat, 0.99), 3),
            )
        both = load.latency_single + load.latency_batch
        report["create→ACTIVE all p50/p99 (s)"] = (
            round(pct(both, 0.5), 3),
            round(pct(both, 0.99), 3),
        )
        report["etcd revisions (write txns)/s"] = round((rev1 - rev0) / duration, 1)
        report["etcd keys put/s (member m0)"] = round((puts1 - puts0) / duration, 1)
        report["etcd txns/s (member m0)"] = round((txn1 - txn0) / duration, 1)
        report["etcd DB size / in use (MiB)"] = (
            round(int(status1.get("dbSize", 0)) / 2**20, 1),
            round(int(status1.get("dbSizeInUse", 0)) / 2**20, 1),
        )
        report["watch lag at each scheduler p50/max (ms)"] = {
            n: (round(pct(v, 0.5) * 1000), round(max(v) * 1000)) for n, v in sorted(lag.items())
        }
        cpu_use = {}
        for n, p in list(sampler.procs.items()):
            try:
                before = cpu_start.get(n)
                now_t = p.cpu_times()
                if before is not None:
                    cpu_use[n] = round(
                        100
                        * ((now_t.user + now_t.system) - (before.user + before.system))
                        / duration
                    )
            except psutil.Error:
                pass
        report["CPU % of one core, mean over the load"] = cpu_use
        report["RSS MiB, peak"] = {n: round(max(v)) for n, v in sorted(sampler.rss.items())}
        hollow_cpu = sum(v for n, v in cpu_use.items() if n.startswith("g") and n[1:].isdigit())
        report["hollow hosts: CPU ms/s per host"] = round(10 * hollow_cpu / max(1, a.hosts), 2)
        report["faults"] = faults
        conflicts = {}
        for sched in schedulers:
            with contextlib.suppress(OSError), open(sched.log_path, errors="replace") as f:
                conflicts[sched.name] = sum("claim conflict" in line for line in f)
        report["claim conflicts (re-decisions) per scheduler"] = conflicts

        # Quiesce: the paused hosts come back and remove what was evacuated from them.
        time.sleep(a.lease_ttl + 5)
        with Store(cluster.endpoints, timeout=30) as store:
            state = fleet_checks.read_fleet(store)
        running = running_on(groups)
        over = fleet_checks.over_capacity(state, MAX_INSTANCES_PER_HOST)
        lost = fleet_checks.lost_or_duplicated(state, load.acknowledged, running)
        reused = fleet_checks.reused_names_or_ips(state)
        unacked = len(set(state.instances) - set(load.acknowledged))
        report["check: hosts over capacity"] = over[:5] or "none"
        report["check: acknowledged creates lost or duplicated"] = (
            f"{len(lost)}: {lost[:5]}" if lost else "none"
        )
        report["check: names or IPs used twice"] = reused[:5] or "none"
        report["instance records not acknowledged (failed calls)"] = unacked
        report["python -c pass (ms), after"] = round(python_pass_ms(), 1)
        load.close()

    print("\n=== fleet report ===")
    for k, v in report.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    from tests.ksm_host import ksm_settings

    with ksm_settings():  # its agents start KSM, as the product does: put back as found
        main()
