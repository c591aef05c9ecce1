"""Density benchmarks: what an idle VMM costs the host, and what confinement costs a busy
guest. Prints figures; asserts nothing; not part of `make test`. Needs root and /dev/kvm.

    .venv/bin/python bench/density_bench.py [pss] [many] [burn] [ping] [--rounds 3] ...

- pss:  N idle VMMs at once (the tickless heartbeat, `-append hz=0`, where the installed
        guest has it; else the 100 Hz heartbeat, and it says so), warm-forked by the warm
        parent (from a subreaper driver, as the agent does; bench/launch_bench.py) and
        cold-exec'd; after a settle time, psutil memory_full_info().pss summed over the N
        and divided by N (also with the warm parent's own PSS added), USS and RSS p50;
        next to a bare idle `python` for scale. With --ksm on (the default, as the agent
        sets the host: agent/ksm.py) the same is read again once ksmd has merged what it
        will (pages_sharing steady over two full scans), with the time that took and
        ksmd's CPU meanwhile; --ksm off unmerges everything and stops ksmd for the run.
        /sys/kernel/mm/ksm/run is put back as found at the end.
- many: one real agent on a real etcd, N idle instances (64 MiB each) spawned over gRPC
        in batches, all ACTIVE: host memory used (psutil.virtual_memory before/after, the
        whole host, so others' work shows too) and the VMMs' summed PSS; the agent's CPU
        (psutil cpu_times) over a window at 1 Hz stats, per second; then the latency of one
        more Spawn and one Delete while they all run. Stops early, saying so, if the host's
        available memory runs low. --ksm-wait S: after the memory figures, wait up to S
        seconds for the KSM the agent started to settle, and read them again.
- burn: the burn guest at duty=100 (its own loops/s reports, as bench/vmm_bench.py
        measures it), confined (jail + cgroup, as the agent) vs unconfined, in pairs.
- ping: the `net` guest's ICMP round trip from the host side of its tap, in a network
        namespace of our own (as tests/integration/test_vmm_net_guest.py sets it up),
        confined vs unconfined, in pairs.

Every figure is a median with its spread over rounds, next to the same run's
`python -c pass`. Everything started is removed at the end, on failure too.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.launch_bench import (
    AgentRig,
    Driver,
    Launcher,
    Workspace,
    idle_cmdline,
    machine_load,
    per_round,
    reference,
    spread,
)

MIB = 2**20


def memory_of(pids: list[int]) -> tuple[list[float], list[float], list[float]]:
    """PSS, USS, RSS in MiB of each pid."""
    pss, uss, rss = [], [], []
    for pid in pids:
        full = psutil.Process(pid).memory_full_info()
        pss.append(full.pss / MIB)
        uss.append(full.uss / MIB)
        rss.append(full.rss / MIB)
    return pss, uss, rss


def bare_python_pss(settle: float) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        time.sleep(min(settle, 2.0))
        return psutil.Process(proc.pid).memory_full_info().pss / MIB
    finally:
        proc.kill()
        proc.wait()


# --- KSM -----------------------------------------------------------------------------------
class Ksm:
    """The host's same-page merging for the run: on as the agent starts it (agent/ksm.py),
    or off with everything unmerged; `restore` puts /sys/kernel/mm/ksm back as found."""

    def __init__(self, on: bool) -> None:
        from agent.ksm import start_merging
        from tests.ksm_host import available, ksm_settings

        self.on = on and available()
        self._held = ksm_settings(**({} if on else {"run": "2"}))  # 2: stop and unmerge
        self._held.__enter__()
        if self.on:
            start_merging()

    @staticmethod
    def read(name: str) -> int:
        from tests.ksm_host import read

        return int(read(name))

    def restore(self) -> None:
        self._held.__exit__(None, None, None)


def ksmd_cpu_seconds() -> float:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "ksmd":
            return cpu_seconds(proc)
    return 0.0


def wait_merged(timeout: float = 900.0) -> tuple[float, float]:
    """Wait until KSM's pages_sharing holds steady (within 1 %) over two full scans;
    (seconds waited, ksmd's CPU meanwhile in % of a core)."""
    start, cpu0 = time.monotonic(), ksmd_cpu_seconds()
    scans = Ksm.read("full_scans")
    seen: list[int] = []
    while time.monotonic() - start < timeout:
        time.sleep(0.5)
        now = Ksm.read("full_scans")
        if now == scans:
            continue
        scans = now
        seen.append(Ksm.read("pages_sharing"))
        if len(seen) >= 3 and seen[-1] <= seen[-3] * 1.01:
            break
    elapsed = time.monotonic() - start
    return elapsed, (ksmd_cpu_seconds() - cpu0) / elapsed * 100


# --- pss ----------------------------------------------------------------------------------
def bench_pss(n: int, rounds: int, settle: float, confine: str, workers: int, ksm: bool) -> None:
    cmdline, guest = idle_cmdline()
    ws = Workspace("db-")
    merging = Ksm(ksm)
    try:
        driver = Driver(ws)
        per_vm: dict[str, list[float]] = {"warm": [], "cold": []}
        merged: dict[str, list[float]] = {"warm": [], "cold": []}
        waited: list[float] = []
        ksmd_cpu: list[float] = []
        with_parent: list[float] = []
        uss: dict[str, list[list[float]]] = {"warm": [], "cold": []}
        rss: dict[str, list[list[float]]] = {"warm": [], "cold": []}
        parent_pss: list[float] = []
        state = "on, as the agent starts it" if merging.on else "off"
        print(f"PSS of {n} idle VMMs at once ({guest}, 64 MiB, confinement {confine}, KSM "
              f"{state}), read {settle:g} s after all run:")  # fmt: skip
        print(f"  reference: {reference()}; an idle bare `python` PSS "
              f"{bare_python_pss(settle):.1f} MiB")  # fmt: skip
        for r in range(rounds):
            for how in ("warm", "cold") if r % 2 == 0 else ("cold", "warm"):
                held = driver.call(
                    "hold", n=n, how=how, confine=confine, kernel="heartbeat", append=cmdline,
                    workers=workers,
                )  # fmt: skip
                try:
                    time.sleep(settle)
                    pss, u, s = memory_of(held["pids"])
                    per_vm[how].append(sum(pss) / n)
                    uss[how].append(u)
                    rss[how].append(s)
                    if merging.on:
                        seconds, cpu = wait_merged()
                        waited.append(seconds)
                        ksmd_cpu.append(cpu)
                        pss = memory_of(held["pids"])[0]
                        merged[how].append(sum(pss) / n)
                    if how == "warm" and held["warm_pid"]:
                        parent = memory_of([held["warm_pid"]])[0][0]
                        parent_pss.append(parent)
                        with_parent.append((sum(pss) + parent) / n)
                finally:
                    driver.call("release")
        for how, what in (("warm", "warm-forked"), ("cold", "cold exec")):
            print(
                f"  {what}: PSS per VMM (sum/N) {per_round(per_vm[how], 'MiB', 2)}; "
                f"USS {spread(uss[how], 'MiB', 2)}; RSS p50 "
                f"{statistics.median(v for x in rss[how] for v in x):.1f} MiB"
                + ("  (target ≤ 3 MiB)" if how == "warm" and not merging.on else "")
            )
            if merging.on:
                print(f"    once KSM merged: PSS per VMM {per_round(merged[how], 'MiB', 2)}"
                      + ("  (target ≤ 3 MiB)" if how == "warm" else ""))  # fmt: skip
        if merging.on:
            print(f"  KSM settled {per_round(waited, 's', 0, of='reads')} after the read; "
                  f"ksmd meanwhile "
                  f"{per_round(ksmd_cpu, '% of a core', 1, of='reads')} (pages_to_scan "
                  f"{merging.read('pages_to_scan')}, sleep {merging.read('sleep_millisecs')} "
                  f"ms: the host's settings)")  # fmt: skip
        if with_parent:
            print(f"  warm-forked with the warm parent's own PSS "
                  f"({statistics.median(parent_pss):.1f} MiB) shared out: "
                  f"{per_round(with_parent, 'MiB', 2)} per VMM")  # fmt: skip
        print(f"  reference after: {reference()}")
    finally:
        ws.close()
        merging.restore()


# --- many instances on one agent -----------------------------------------------------------
def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def bench_many(
    n: int, batch: int, window: int, probes: int, min_free_mib: int, uid_range: str,
    ksm_wait: float,
) -> None:  # fmt: skip
    from computed.api import agent_pb2, types_pb2
    from computed.store import keys
    from computed.store.client import Store
    from tests.etcd_harness import EtcdServer

    cmdline, guest = idle_cmdline()
    ws = Workspace("db-")
    etcd = EtcdServer()
    try:
        etcd.__enter__()
        print(f"{n} idle instances on one agent ({guest}, 64 MiB each, confined, warm parent, "
              f"stats at 1 Hz), Spawn in batches of {batch} at once:")  # fmt: skip
        print(f"  reference: {reference()}; {machine_load()}")
        rig = AgentRig(ws, etcd.endpoint, "m", [], uid_range, interval=1.0)
        agent = psutil.Process(rig.agent.proc.pid)
        time.sleep(3)
        c0 = cpu_seconds(agent)
        time.sleep(10)
        idle_pct = (cpu_seconds(agent) - c0) / 10 * 100
        before = psutil.virtual_memory()
        started, rates, stopped_early = 0, [], ""
        while started < n:
            avail = psutil.virtual_memory().available / MIB
            if avail < min_free_mib:
                stopped_early = f"stopped at {started}: {avail:.0f} MiB available"
                break
            k = min(batch, n - started)
            elapsed, _, _ = rig.spawn_at_once(k, "heartbeat", cmdline)
            rates.append(k / elapsed)
            started += k
        active = rig.active()
        t0 = time.monotonic()
        with Store(etcd.endpoint) as store:
            while sum("/instances/" in e.key for e in store.get_prefix(keys.STATS)[0]) < started:
                if time.monotonic() - t0 > 300:
                    break
                time.sleep(0.5)
        stats_after = time.monotonic() - t0
        time.sleep(5)
        after = psutil.virtual_memory()
        listed = rig.stub.List(agent_pb2.ListRequest(), timeout=60).instances
        pids = [i.pid for i in listed if i.pid]
        vmm_pss = sum(memory_of(pids)[0])
        warm = [c.pid for c in agent.children() if "zygote" in " ".join(_cmdline(c))]
        warm_pss = sum(memory_of(warm)[0]) if warm else 0.0
        print(f"  all {started} spawned{' (' + stopped_early + ')' if stopped_early else ''}; "
              f"{active} listed ACTIVE; stats of all in etcd {stats_after:.1f} s after the "
              f"last spawn; batch rates {per_round(rates, 'Spawns/s', of='batches')}; first batch "
              f"{rates[0]:.1f}/s, last {rates[-1]:.1f}/s")  # fmt: skip
        used = (after.used - before.used) / MIB
        print(f"  host memory used: +{used:.0f} MiB ({used / max(started, 1):.2f} MiB per "
              f"instance; whole host, {before.used / MIB:.0f} → {after.used / MIB:.0f} MiB, "
              f"available {after.available / MIB:.0f} MiB); the VMMs' summed PSS "
              f"{vmm_pss:.0f} MiB ({vmm_pss / max(len(pids), 1):.2f} MiB each) + the warm "
              f"parent's {warm_pss:.1f} MiB")  # fmt: skip
        if ksm_wait > 0:  # the agent started KSM (--ksm, its default): what it merges
            seconds, ksmd = wait_merged(timeout=ksm_wait)
            merged = psutil.virtual_memory()
            merged_pss = sum(memory_of(pids)[0])
            used = (merged.used - before.used) / MIB
            state = "settled" if seconds < ksm_wait else "still merging"
            print(f"  {seconds:.0f} s later (KSM {state}; ksmd {ksmd:.1f}% of a core "
                  f"meanwhile): host memory used +"
                  f"{used:.0f} MiB ({used / max(started, 1):.2f} MiB per instance); the VMMs' "
                  f"summed PSS {merged_pss:.0f} MiB ({merged_pss / max(len(pids), 1):.2f} MiB "
                  f"each)")  # fmt: skip
        per_second = []
        host0 = psutil.cpu_times()
        c0 = cpu_seconds(agent)
        start = last = time.monotonic()
        prev = c0
        for i in range(window):
            time.sleep(max(0.0, start + i + 1 - time.monotonic()))
            now, cur = time.monotonic(), cpu_seconds(agent)
            per_second.append((cur - prev) / (now - last) * 100)
            prev, last = cur, now
        total = (cpu_seconds(agent) - c0) / (time.monotonic() - start) * 100
        host1 = psutil.cpu_times()
        busy = sum(getattr(host1, f) - getattr(host0, f) for f in ("user", "system", "nice",
                   "irq", "softirq", "steal", "guest"))  # fmt: skip
        idle = (host1.idle - host0.idle) + (host1.iowait - host0.iowait)
        print(f"  agent CPU over {window} s: {total:.1f}% of a core (1-s samples "
              f"p50 {statistics.median(per_second):.1f}%, min-max {min(per_second):.1f}-"
              f"{max(per_second):.1f}%); the same agent idle before: {idle_pct:.1f}%; "
              f"whole host busy {busy / (busy + idle) * 100:.0f}% of "
              f"{psutil.cpu_count()} CPUs")  # fmt: skip
        spawn_ms, delete_ms = [], []
        for _ in range(probes):
            s = AgentRig.spec("heartbeat", cmdline)
            t = time.perf_counter()
            reply = rig.stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=120)
            spawn_ms.append((time.perf_counter() - t) * 1000)
            if reply.status != types_pb2.STATUS_ACTIVE:
                raise SystemExit(f"probe spawn: {reply.fault}")
            time.sleep(1.0)
            t = time.perf_counter()
            rig.stub.Delete(agent_pb2.InstanceRef(uuid=s.uuid), timeout=120)
            delete_ms.append((time.perf_counter() - t) * 1000)
            time.sleep(1.0)
        print(f"  with {started} running: one more Spawn → ACTIVE "
              f"{spread([spawn_ms], 'ms', 0)}; its Delete {spread([delete_ms], 'ms', 0)}  "
              f"(target ≤ 200 ms)")  # fmt: skip
        print(f"  reference after: {reference()}; {machine_load()}")
    finally:
        ws.close()
        etcd.close()


# --- burn and ping, confined vs unconfined ---------------------------------------------------
def run_burn(launcher: Launcher, confine: str, seconds: int) -> list[float]:
    vm = launcher.prepare(confine)
    r, w = os.pipe()
    try:
        launcher.start(vm, "cold", "burn", f"duty=100 seconds={seconds}", stdout=w)
        os.close(w)
        w = -1
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
        vm.child.wait(timeout=30)
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
        launcher.stop(vm)
    text = b"".join(chunks).decode(errors="replace")
    rates = [float(x) for x in re.findall(r"burn: (\d+) loops/s", text)][1:]
    if not rates:
        raise SystemExit(f"burn confine={confine}: no rates: {text[-300:]!r}")
    return rates


def bench_burn(rounds: int, seconds: int) -> None:
    ws = Workspace("db-")
    try:
        launcher = Launcher(ws.tmp, ws.cgroup_parent, warm=False)
        ws.closers.append(launcher.close)
        rates: dict[str, list[float]] = {"off": [], "on": []}
        ratios = []
        print(f"burn duty=100 ({seconds} s per run, first report dropped), confined "
              f"(jail + cgroup of 1 vCPU) vs unconfined, in pairs:")  # fmt: skip
        print(f"  reference: {reference()}")
        for r in range(rounds):
            got = {}
            for level in ("off", "on") if r % 2 == 0 else ("on", "off"):
                got[level] = statistics.median(run_burn(launcher, level, seconds))
                rates[level].append(got[level])
            ratios.append(got["on"] / got["off"])
        for level, what in (("off", "unconfined"), ("on", "confined")):
            print(f"  {what}: {per_round(rates[level], 'loops/s', 0)}")
        print(f"  confined / unconfined (paired): {per_round(ratios, '', 3)}  "
              f"(target: 1.00, confinement must not slow the guest)")  # fmt: skip
        print(f"  reference after: {reference()}")
    finally:
        ws.close()


HOST_IP, GUEST_IP, GUEST_MAC = "10.96.0.1", "10.96.0.2", "52:54:00:12:34:56"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def wait_console(path: str, pattern: str, proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                if re.search(pattern, f.read()):
                    return
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"net VMM exited {proc.returncode}")
        time.sleep(0.05)
    raise SystemExit(f"{pattern!r} not on the console in {timeout:g}s")


def ping_rtts(netns: str, count: int, interval: float) -> list[float]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ping", "-n", "-c", str(count), "-i", str(interval),
         "-W", "1", GUEST_IP],
        capture_output=True, text=True, timeout=count * interval + 30,
    ).stdout  # fmt: skip
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def open_tap_in(netns: str, name: str) -> int:
    """The agent's open_tap (computed.taps), from a thread that has joined `netns`:
    setns(CLONE_NEWNET) moves only the calling thread, and the fd stays usable here."""
    import ctypes

    from computed.taps import open_tap

    got: dict[str, object] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(f"/run/netns/{netns}") as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            got["fd"] = open_tap(name)
        except Exception as e:
            got["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in got:
        raise SystemExit(f"tap {name} in {netns}: {got['error']}")
    return int(got["fd"])  # type: ignore[call-overload]


CLONE_NEWNET = 0x40000000


def bench_ping(rounds: int, count: int, interval: float) -> None:
    for tool in ("ip", "ping"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            print(f"ping: skipped: no `{tool}`")
            return
    if not os.path.exists("/dev/net/tun"):
        print("ping: skipped: no /dev/net/tun")
        return
    ws = Workspace("db-")
    netns = f"cdbench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", netns)
        ws.closers.append(lambda: ip("netns", "del", netns))
        for cmd in (
            ["tuntap", "add", "tap0", "mode", "tap"],
            ["addr", "add", f"{HOST_IP}/24", "dev", "tap0"],
            ["link", "set", "tap0", "up"],
            ["link", "set", "lo", "up"],
        ):
            ip("-n", netns, *cmd)
        launcher = Launcher(ws.tmp, ws.cgroup_parent, warm=False)
        ws.closers.append(launcher.close)
        rtts: dict[str, list[list[float]]] = {"off": [], "on": []}
        lost: dict[str, int] = {"off": 0, "on": 0}
        ratios = []
        print(f"ICMP echo host → `net` guest over its tap (fd=N, vhost=on, as the agent), {count} "
              f"pings every {interval:g} s per run, confined vs unconfined, in pairs:")  # fmt: skip
        print(f"  reference: {reference()}")
        for r in range(rounds):
            got = {}
            for level in ("off", "on") if r % 2 == 0 else ("on", "off"):
                vm = launcher.prepare(level)
                tap = open_tap_in(netns, "tap0")  # handed in as fd=N, as the agent does
                try:
                    nic = ["-netdev", f"tap,id=n0,fd={tap},vhost=on",
                           "-device", f"virtio-net,netdev=n0,mac={GUEST_MAC}"]  # fmt: skip
                    try:
                        launcher.start(vm, "cold", "net", f"ip={GUEST_IP}/24 gw={HOST_IP}",
                                       extra=nic, pass_fds=(tap,))  # fmt: skip
                    finally:
                        os.close(tap)  # the VMM has its own
                    console = os.path.join(vm.jail, "console.log")
                    try:
                        wait_console(console, r"net: up ", vm.child)
                    except SystemExit as e:
                        raise SystemExit(f"confine={level}: {e}: {launcher.log(vm)}") from None
                    ping_rtts(netns, 5, 0.05)  # ARP, caches
                    times = ping_rtts(netns, count, interval)
                finally:
                    launcher.stop(vm)
                lost[level] += count - len(times)
                if not times:
                    raise SystemExit(f"ping confine={level}: no replies")
                rtts[level].append(times)
                got[level] = statistics.median(times)
            ratios.append(got["on"] / got["off"])
        for level, what in (("off", "unconfined"), ("on", "confined")):
            print(f"  {what}: RTT {spread(rtts[level], 'ms', 3)}; lost {lost[level]}")
        print(f"  confined / unconfined RTT p50 (paired): {per_round(ratios, '', 3)}")
        print(f"  reference after: {reference()}")
    finally:
        ws.close()


def _cmdline(proc: psutil.Process) -> list[str]:
    """A child's command line; [] for one that has just ended (a replaced standby)."""
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ap.add_argument("which", nargs="*", default=["pss", "many", "burn", "ping"],
                    help="pss, many, burn, ping (default: all)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vms", type=int, default=20, help="pss: idle VMMs at once")
    ap.add_argument("--settle", type=float, default=10.0, help="pss: seconds before reading")
    ap.add_argument("--confine", default="on", choices=("on", "off"), help="pss: confinement")
    ap.add_argument("--workers", type=int, default=16, help="pss: concurrent warm requests")
    ap.add_argument(
        "--ksm",
        default="on",
        choices=("on", "off"),
        help="pss: the host's same-page merging on, as the agent starts it, or off",
    )
    ap.add_argument("--instances", type=int, default=50, help="many: instances on the agent")
    ap.add_argument("--batch", type=int, default=50, help="many: Spawn RPCs at once")
    ap.add_argument("--window", type=int, default=30, help="many: agent CPU window, seconds")
    ap.add_argument("--probes", type=int, default=5, help="many: Spawn+Delete probes")
    ap.add_argument("--min-free-mib", type=int, default=3072, help="many: stop below this")
    ap.add_argument("--uid-range", default="284000-285999", help="many: the agent's VMM uids")
    ap.add_argument(
        "--ksm-wait",
        type=float,
        default=0.0,
        help="many: then wait up to this long for KSM to merge, and read again",
    )
    ap.add_argument("--seconds", type=int, default=6, help="burn: seconds per run")
    ap.add_argument("--pings", type=int, default=100, help="ping: echoes per run")
    ap.add_argument("--interval", type=float, default=0.02, help="ping: seconds between")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (jails, cgroups, the warm parent, network namespaces)")
    print(f"density_bench: {machine_load()}")
    for which in a.which:
        {
            "pss": lambda: bench_pss(
                a.vms, a.rounds, a.settle, a.confine, a.workers, a.ksm == "on"
            ),
            "many": lambda: bench_many(
                a.instances,
                a.batch,
                a.window,
                a.probes,
                a.min_free_mib,
                a.uid_range,
                a.ksm_wait,
            ),
            "burn": lambda: bench_burn(a.rounds, a.seconds),
            "ping": lambda: bench_ping(a.rounds, a.pings, a.interval),
        }[which]()
    print(f"density_bench done: {machine_load()}")


if __name__ == "__main__":
    main()
