"""Launch benchmarks: how fast a VMM starts, cold and warm, confined and not. Prints
figures; asserts nothing; not part of `make test`. Needs root and /dev/kvm.

    .venv/bin/python bench/launch_bench.py [first-byte] [burst] [agent] [--rounds 3] ...

- first-byte: a heartbeat VMM from its start to the first byte on its serial console
  (-serial stdio, a pipe), interleaved launch by launch with `python -c pass` (exec →
  exit), the same run's yardstick:
    cold: `computed-vmm` exec'd (subprocess.Popen);
    warm: a request to the warm VMM parent (agent/warm_parent.WarmParent → the zygote
          forks the VMM), from a driver subprocess that is a subreaper, as the agent is;
    each with confinement off and on. On is what the agent does: a jail from
    agent.jail.prepare_jail_dir, a cgroup from agent.cgroups.InstanceCgroups (under a
    parent of our own, removed at the end), `-sandbox on -run-with user=U:G,chroot=JAIL
    -cgroup DIR`; `cg` (the -cgroup only) and `jail` (-sandbox on only) split it in two.
    The confinement's cost per launch is the median of paired (on - off) differences;
    the agent-side preparation (jail dir + cgroup) is outside the timed launch and
    printed on its own. The warm ways are timed again with a guest whose first
    instructions write the byte (one_instruction_guest): the VMM alone, without the
    heartbeat's ring-0 set-up, which these nested hosts emulate.
- burst: N VMMs requested at once → every one verified running (pidfile written, QMP
  query-status says running), CHECKERS VMMs checked at a time; VMMs/s, warm-forked and
  cold-exec'd, confinement off and on, with the whole host's CPU per VMM and the share
  of the host's CPUs busy, idle and stolen by the hypervisor during each round.
- agent: N Spawn RPCs at once to a real computed-agent on a real etcd → all ACTIVE;
  Spawns/s for the default agent (confined, warm parent), --no-warm-parent, --no-confine.
burst and agent use the tickless heartbeat (`-append hz=0`) where the installed guest has
it, so the VMMs already running cost the host nothing while the others start.

The instances' files (jail, console log, pidfile, monitor socket) go under /tmp, or
--workdir. This sandbox's ext4 has no journal, and ext4 without one scans the recently
deleted inodes at every create, so a burst that follows the last one's clean-up pays
for the file system's churn (17.9 ms of host CPU per confined VMM on /tmp against 12.6
on /dev/shm, the same hour); `--workdir /dev/shm` (tmpfs) shows the launch without it,
as a journaled file system would. Each run names the file system.

Each figure: median (p50) and the spread over rounds. Everything this starts (VMMs, warm
parents, agents, etcd, cgroups, temp dirs) is removed at the end, on failure too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.cgroups import (  # noqa: E402
    InstanceCgroups,
    favor_dynamic_changes,
    favordynmods_target,
    stop_favoring_dynamic_changes,
)
from agent.jail import prepare_jail_dir  # noqa: E402
from computed.procfs import read_text  # noqa: E402
from computed.vmm.control_client import ControlError, execute  # noqa: E402

VMM = os.path.join(os.path.dirname(sys.executable), "computed-vmm")
HERE = os.path.abspath(__file__)
# uids of the confined VMMs this file starts directly (one per VMM slot, gid = uid); apart
# from the agent's default range (200000-209999) and the tests' (300000 and up).
UID_BASE, UID_SPAN = 270_000, 4096
CHECKERS = 8  # burst: VMMs checked at once for running (see _start_many)
CHECK_EVERY = 0.005  # s: how often each checker looks for its VMM's pidfile


def idle_cmdline() -> tuple[str, str]:
    """(-append, description) of the idle guest: the tickless heartbeat (`hz=0`) where the
    installed heartbeat has it (VMMs already started then cost the host nothing while the
    rest start), else the 100 Hz heartbeat."""
    from computed.guests.bundled import bundled_dir

    try:
        with open(os.path.join(bundled_dir(), "heartbeat"), "rb") as f:
            if b"tickless (hz=0)" in f.read():
                return "hz=0", "tickless heartbeat (hz=0)"
    except OSError:
        pass
    return "", "heartbeat at 100 Hz (the installed guest has no hz=0)"


# --- figures ---------------------------------------------------------------------------------
def spread(rounds: list[list[float]], unit: str, digits: int = 1) -> str:
    """p50 of every sample; the per-round p50s (their min-max is the round-to-round spread);
    the min-max of every sample."""
    allv = [v for r in rounds for v in r]
    meds = [statistics.median(r) for r in rounds if r]
    f = f"{{:.{digits}f}}"
    return (
        f"p50 {f.format(statistics.median(allv))} {unit} (round p50s "
        f"{f.format(min(meds))}-{f.format(max(meds))}; all {f.format(min(allv))}-"
        f"{f.format(max(allv))}; n={len(allv)} in {len(rounds)} rounds)"
    )


def per_round(values: list[float], unit: str, digits: int = 1, of: str = "rounds") -> str:
    """One value per round: median and min-max."""
    f = f"{{:.{digits}f}}"
    return (
        f"p50 {f.format(statistics.median(values))} {unit} (min-max "
        f"{f.format(min(values))}-{f.format(max(values))}, {len(values)} {of})"
    )


def python_pass_ms() -> float:
    """One `python -c pass` (the venv's interpreter), exec → exit, in ms."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - start) * 1000


def reference(n: int = 10, times: list[float] | None = None) -> str:
    """The same run's yardstick, to print next to a figure (`times`: measured already)."""
    times = times or [python_pass_ms() for _ in range(n)]
    return (
        f"`python -c pass` p50 {statistics.median(times):.1f} ms "
        f"(min-max {min(times):.1f}-{max(times):.1f}, n={len(times)})"
    )


class HostCpu(NamedTuple):
    """The whole host's CPU seconds since boot, all CPUs (/proc/stat). Busy time is the
    cost of a burst, whatever process paid it, less sensitive to the host's noise than a
    rate (a starved burst is slower but costs the same CPU). Idle time in a burst is a
    stall of ours; stolen time is the hypervisor's, which runs these hosts' vCPUs on
    shared cores."""

    busy: float
    idle: float  # idle and iowait
    stolen: float

    @classmethod
    def now(cls) -> HostCpu:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
        tick = os.sysconf("SC_CLK_TCK")
        return cls((user + nice + system + irq + softirq) / tick, (idle + iowait) / tick,
                   steal / tick)  # fmt: skip

    def __sub__(self, before: HostCpu) -> HostCpu:  # type: ignore[override]
        return HostCpu(*(a - b for a, b in zip(self, before, strict=True)))

    def shares(self) -> str:
        whole = sum(self) or 1.0
        return f"busy {self.busy / whole:.0%}, idle {self.idle / whole:.0%}, " \
               f"stolen {self.stolen / whole:.0%}"  # fmt: skip


def process_cpu_seconds(pid: int) -> float:
    """The CPU a process's threads have used, from the scheduler's own count in ns
    (/proc/<pid>/task/*/schedstat). /proc/<pid>/stat's utime and stime, in ticks,
    showed a third of it for VMMs forked in a burst on these nested hosts (4.2 ms
    against 11.9, where the host's busy time agreed with the latter)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int(read_text(f"/proc/{pid}/task/{tid}/schedstat").split()[0])
    return total / 1e9


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    others = subprocess.run(
        ["pgrep", "-fc", "computed-vmm -name"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"load average {one:.2f} {five:.2f} {fifteen:.2f}; "
        f"computed-vmm processes on the host: {others}"
    )


# --- clean-up --------------------------------------------------------------------------------
def pids_marked(marker: str) -> list[int]:
    """Processes whose command line (or process title) names `marker`, ours excepted."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def kill_and_wait(pids: Iterable[int], timeout: float = 10.0) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break  # a zombie of someone else's: it holds nothing
            except OSError:
                break
            time.sleep(0.01)


class Workspace:
    """A temp dir and a cgroup parent of our own; close() kills every process that names
    the temp dir (VMMs, warm parents, agents, drivers), removes the cgroups and the dir."""

    base = "/tmp"  # launch_bench --workdir

    def __init__(self, prefix: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=self.base)
        self.cgroup_parent = f"./{prefix}{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.extra_cgroup_parents: list[str] = []
        self.closers: list[Callable[[], None]] = []

    def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception as e:  # clean-up goes on whatever one step says
                print(f"clean-up: {e!r}", file=sys.stderr)
        recorded = []
        with contextlib.suppress(OSError), open(os.path.join(self.tmp, "pids")) as f:
            recorded = [int(line) for line in f if line.strip()]
        kill_and_wait(p for p in recorded if self.tmp.encode() in _cmdline(p))
        kill_and_wait(pids_marked(self.tmp))
        for parent in [self.cgroup_parent, *self.extra_cgroup_parents]:
            with contextlib.suppress(Exception):
                InstanceCgroups(parent).remove_all()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


# --- launching VMMs as the agent does, minus gRPC ------------------------------------------
# Confinement levels: "off"; "on" as the agent confines (jail + cgroup); and, to tell the
# two parts apart, "cg" (the cgroup only) and "jail" (-sandbox on without a cgroup).
LEVELS = ("off", "on", "cg", "jail")


def level(confine: bool | str) -> str:
    value = {True: "on", False: "off"}.get(confine, confine)  # type: ignore[call-overload]
    if value not in LEVELS:
        raise ValueError(f"confinement {confine!r}: one of {', '.join(LEVELS)}")
    return value


class Vm:
    def __init__(self, index: int, root: str, confine: bool | str) -> None:
        self.index, self.root, self.confine = index, root, level(confine)
        self.uuid = str(uuid.uuid4())
        self.cgroups: list[str] = []
        self.child = None  # subprocess.Popen | agent.warm_parent.ForkedVmm

    jail = property(lambda self: os.path.join(self.root, "jail"))
    pidfile = property(lambda self: os.path.join(self.jail, "vmm.pid"))
    control = property(lambda self: os.path.join(self.jail, "control.sock"))

    @property
    def pid(self) -> int:
        return self.child.pid


class Launcher:
    """Per-VMM directories, confinement as the agent prepares it, a cold exec or a warm
    fork. Every VMM pid is appended to <tmp>/pids for the clean-up's sake. With warm=True
    it must run in a subreaper (the forked VMMs are re-parented to it)."""

    def __init__(self, tmp: str, cgroup_parent: str, warm: bool) -> None:
        self.tmp = tmp
        self.cgroups = InstanceCgroups(cgroup_parent)
        self._pidlog = open(os.path.join(tmp, "pids"), "a")  # noqa: SIM115
        self._lock = threading.Lock()
        self._count = 0
        self.warm = None
        if warm:
            from agent.vmm_process import vmm_environment
            from agent.warm_parent import WarmParent

            os.makedirs(os.path.join(tmp, "w"), exist_ok=True)
            self.warm = WarmParent(os.path.join(tmp, "w"), vmm_environment())

    def prepare(self, confine: bool | str) -> Vm:
        with self._lock:
            index, self._count = self._count, self._count + 1
        vm = Vm(index, os.path.join(self.tmp, f"{index:x}"), confine)
        os.makedirs(vm.root, mode=0o750)
        if vm.confine in ("on", "jail"):
            prepare_jail_dir(vm.jail)
        else:
            os.mkdir(vm.jail)
        if vm.confine in ("on", "cg"):
            vm.cgroups = self.cgroups.create(vm.uuid, 1, 64)
        return vm

    def argv(self, vm: Vm, kernel: str, append: str, serial: str, extra: list[str]) -> list[str]:
        argv = [VMM, "-name", f"instance-{vm.uuid[:8]}", "-uuid", vm.uuid, "-m", "64",
                "-smp", "1", "-kernel", kernel]  # fmt: skip
        if append:
            argv += ["-append", append]
        argv += ["-serial", serial, "-control", f"unix:{vm.control}", "-pidfile", vm.pidfile]
        argv += extra
        if vm.confine in ("on", "jail"):
            uid = UID_BASE + vm.index % UID_SPAN
            argv += ["-sandbox", "on", "-run-with", f"user={uid}:{uid},chroot={vm.jail}"]
        for directory in vm.cgroups:
            argv += ["-cgroup", directory]
        return argv

    def start(
        self,
        vm: Vm,
        how: str,
        kernel: str = "heartbeat",
        append: str = "",
        stdout: int | None = None,
        extra: list[str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        """Start the VMM (how: "cold" or "warm"); its console goes to `stdout` if given
        (-serial stdio), else to jail/console.log. A cold VMM inherits `pass_fds` (a tap
        handed in as `fd=N`, as the agent hands it to a confined VMM)."""
        from agent.vmm_process import vmm_environment

        err = os.open(os.path.join(vm.root, "vmm.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            serial = "stdio" if stdout is not None else f"file:{vm.jail}/console.log"
            argv = self.argv(vm, kernel, append, serial, extra or [])
            out = err if stdout is None else stdout
            if how == "warm":
                from agent.warm_parent import ForkedVmm

                vm.child = ForkedVmm(self.warm.spawn(argv, {1: out, 2: err}))
            else:
                vm.child = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    start_new_session=True, close_fds=True, pass_fds=pass_fds,
                    env=vmm_environment(),
                )  # fmt: skip
        finally:
            os.close(err)
        with self._lock:
            self._pidlog.write(f"{vm.pid}\n")
            self._pidlog.flush()

    @staticmethod
    def running(vm: Vm) -> bool:
        if not os.path.exists(vm.pidfile):
            return False
        try:
            return execute(vm.control, "query-status", timeout=2.0)["status"] == "running"
        except (ControlError, OSError, KeyError, TypeError):
            return False

    def stop(self, vm: Vm) -> None:
        """Kill, reap, remove its cgroup and directory."""
        if vm.child is not None:
            vm.child.kill()
            vm.child.wait()
        if vm.cgroups:
            self.cgroups.remove(vm.uuid)
        shutil.rmtree(vm.root, ignore_errors=True)

    def describe(self, vm: Vm) -> str:
        """Where a VMM that is not running yet stands, for an error message."""
        if vm.child is None:
            return f"{vm.root}: not started"
        try:
            with open(f"/proc/{vm.pid}/wchan") as f:
                wchan = f.read()
            with open(f"/proc/{vm.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = wchan = "gone"
        try:
            status = execute(vm.control, "query-status", timeout=2.0)
        except (ControlError, OSError) as e:
            status = repr(e)
        return (
            f"pid {vm.pid} state {state} wchan {wchan} pidfile "
            f"{os.path.exists(vm.pidfile)} control {status} log {self.log(vm)[-200:]!r}"
        )

    def log(self, vm: Vm) -> str:
        try:
            with open(os.path.join(vm.root, "vmm.log")) as f:
                return f.read()[-1000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.warm is not None:
            self.warm.stop()
        self._pidlog.close()


# --- the driver: a subreaper subprocess that runs a warm Launcher --------------------------
class Driver:
    """`launch_bench.py --driver TMP CGROUP_PARENT` in a subprocess: it makes itself a
    subreaper (computed.subreaper, as the agent does) and answers one JSON line per
    request. Warm-forked VMMs are re-parented to it, never to this process."""

    def __init__(self, ws: Workspace) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, HERE, "--driver", ws.tmp, ws.cgroup_parent],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        ws.closers.append(self.close)

    def call(self, op: str, **kw: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the driver exited ({self.proc.wait()}) during {op}")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit(f"driver: {op}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DriverServer:
    """The driver's side."""

    def __init__(self, tmp: str, cgroup_parent: str) -> None:
        self.launcher = Launcher(tmp, cgroup_parent, warm=True)
        self.held: list[Vm] = []
        self.restarts = 0

    def _warm_pid(self) -> int | None:
        return self.launcher.warm.pid if self.launcher.warm is not None else None

    def _timed_first_byte(self, how: str, confine: str, kernel: str, append: str) -> dict:
        L = self.launcher
        t0 = time.perf_counter()
        vm = L.prepare(confine)
        prep = (time.perf_counter() - t0) * 1000
        r, w = os.pipe()
        try:
            before = self._warm_pid()
            start = time.perf_counter()
            L.start(vm, how, kernel, append, stdout=w)
            started = (time.perf_counter() - start) * 1000
            os.close(w)
            w = -1
            first = os.read(r, 1)
            ms = (time.perf_counter() - start) * 1000
            restarted = how == "warm" and before is not None and self._warm_pid() != before
            if not first:
                raise RuntimeError(f"{how} confine={confine}: no console output: {L.log(vm)}")
        finally:
            if w >= 0:
                os.close(w)
            os.close(r)
            t1 = time.perf_counter()
            L.stop(vm)
            release = (time.perf_counter() - t1) * 1000
        return {"ms": ms, "started": started, "prep": prep, "release": release,
                "restarted": restarted}  # fmt: skip

    def op_first_byte(self, n: int, kernel: str, append: str, modes: list[str]) -> dict:
        out: dict[str, list] = {m: [] for m in modes}  # None: a dropped launch
        started: dict[str, list] = {m: [] for m in modes}
        prep, release, restarts = [], [], 0
        for m in modes:  # warm-up: page cache, the warm parent started
            if m != "ref":
                how, on = m.split("-")
                self._timed_first_byte(how, on, kernel, append)
        for i in range(n):
            for m in modes[i % len(modes) :] + modes[: i % len(modes)]:  # rotate the order
                if m == "ref":
                    out[m].append(python_pass_ms())
                    continue
                how, on = m.split("-")
                got = self._timed_first_byte(how, on, kernel, append)
                if got["restarted"]:
                    restarts += 1  # installed code changed: a new warm parent; not a sample
                    out[m].append(None)
                    continue
                out[m].append(got["ms"])
                started[m].append(got["started"])
                if on == "on":
                    prep.append(got["prep"])
                    release.append(got["release"])
        return {"times": out, "started": started, "prep": prep, "release": release,
                "restarts": restarts}  # fmt: skip

    def _start_many(
        self, n: int, how: str, confine: bool | str, kernel: str, append: str, workers: int
    ) -> tuple[list[Vm], float, float, HostCpu]:
        """n VMMs requested at once; seconds until every one is verified running, the CPU
        seconds this process spent meanwhile (its requests, polls and QMP checks), and the
        whole host's."""
        L = self.launcher
        vms = [L.prepare(confine) for _ in range(n)]
        if how == "warm" and L.warm is not None:
            L.warm._ensure_current()  # a (re)start of the warm parent is not a launch
        failures: list[BaseException] = []
        deadline = time.monotonic() + 120

        def submit() -> None:
            try:
                if how == "warm":
                    with futures.ThreadPoolExecutor(workers) as pool:
                        list(pool.map(lambda vm: L.start(vm, how, kernel, append), vms))
                else:
                    for vm in vms:
                        L.start(vm, how, kernel, append)
            except BaseException as e:
                failures.append(e)

        def await_running(vm: Vm) -> None:
            while not failures and not (vm.child is not None and L.running(vm)):
                if vm.child is not None and vm.child.poll() is not None:
                    failures.append(RuntimeError(f"exited {vm.child.returncode}: {L.log(vm)}"))
                elif time.monotonic() > deadline:
                    failures.append(RuntimeError(f"not running in 120 s: {L.describe(vm)}"))
                else:
                    time.sleep(CHECK_EVERY)

        start = time.perf_counter()
        cpu_before = time.process_time()
        host_before = HostCpu.now()
        thread = threading.Thread(target=submit)
        thread.start()
        verified = False
        try:
            # CHECKERS at a time: a check is three QMP round trips, each waiting for a
            # VMM that a saturated host schedules late. One checker fell 0.3 s behind
            # VMMs already running (a scheduler trace of 200 confined: the last one
            # ran at 1.41 s, the check ended at 1.73 s, the CPUs mostly idle between).
            with futures.ThreadPoolExecutor(CHECKERS) as checkers:
                list(checkers.map(await_running, vms))  # each returns at the first failure
            if failures:
                raise RuntimeError(f"a start failed: {failures[0]}")
            elapsed = time.perf_counter() - start
            checking = time.process_time() - cpu_before
            host = HostCpu.now() - host_before
            verified = True
        finally:
            thread.join()
            if not verified:
                for vm in vms:
                    L.stop(vm)
        return vms, elapsed, checking, host

    def op_burst(
        self, n: int, how: str, confine: bool | str, kernel: str, append: str, workers: int
    ):
        if how == "warm" and self.launcher.warm is not None:
            self.launcher.warm._ensure_current()  # a (re)start of the warm parent is not a launch
        warm = self._warm_pid()
        warm_before = process_cpu_seconds(warm) if how == "warm" and warm else 0.0
        vms, elapsed, checking, host = self._start_many(n, how, confine, kernel, append, workers)
        vmms = sum(process_cpu_seconds(vm.pid) for vm in vms)  # each VMM until it runs
        warm_cpu = process_cpu_seconds(warm) - warm_before if warm_before else 0.0
        for vm in vms:
            self.launcher.stop(vm)
        return {"seconds": elapsed, "per_second": n / elapsed, "checking_cpu": checking,
                "host_cpu": host.busy, "host_shares": host.shares(), "vmm_cpu": vmms,
                "warm_cpu": warm_cpu}  # fmt: skip

    def op_hold(
        self, n: int, how: str, confine: bool | str, kernel: str, append: str, workers: int
    ):
        vms, elapsed, _, _ = self._start_many(n, how, confine, kernel, append, workers)
        self.held += vms
        return {"seconds": elapsed, "pids": [vm.pid for vm in vms], "warm_pid": self._warm_pid()}

    def op_release(self) -> dict:
        held, self.held = self.held, []
        for vm in held:
            self.launcher.stop(vm)
        return {"released": len(held)}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.op_release()
        self.launcher.close()


def driver_main(tmp: str, cgroup_parent: str) -> None:
    from computed.subreaper import become_subreaper

    become_subreaper()
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # nothing else may write on the reply channel
    server = DriverServer(tmp, cgroup_parent)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request.pop("op")
            if op == "quit":
                break
            try:
                reply = getattr(server, f"op_{op}")(**request)
            except Exception as e:
                reply = {"error": f"{e!r}"}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
    finally:
        server.close()


# --- the benches -----------------------------------------------------------------------------
LABELS = {
    "off": "unconfined",
    "on": "confined (jail + cgroup)",
    "cg": "cgroup only (-cgroup, no -sandbox)",
    "jail": "jail only (-sandbox on, no -cgroup)",
}


def one_instruction_guest(path: str) -> str:
    """Write a guest image whose first instructions write '!' to COM1 and halt: its first
    byte times the VMM alone. The heartbeat's comes after its ring-0 set-up (IDT, PIC,
    power button), which these nested hosts emulate at about a million instructions a
    second, so a share of its figure is the host's, not the VMM's."""
    import struct

    base, ehdr_size, phdr_size = 0x100000, 64, 56  # COMPUTED_IMAGE_MIN_GPA; ELF64 sizes
    code = bytes.fromhex("66baf803b021eef4ebfd")  # mov $0x3f8,%dx; mov $'!',%al;
    size = ehdr_size + phdr_size + len(code)  # out %al,%dx; 1: hlt; jmp 1b
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, v1
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 62, 1, base + ehdr_size + phdr_size,
                       ehdr_size, 0, 0, ehdr_size, phdr_size, 1, 64, 0, 0)  # fmt: skip
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, R+X
    with open(path, "wb") as f:
        f.write(ehdr + phdr + code)
    return path


def bench_first_byte(n: int, rounds: int, ways: list[str]) -> None:
    ws = Workspace("lb-")
    try:
        driver = Driver(ws)
        _first_byte(driver, "heartbeat", "heartbeat", n, rounds, ways)
        alone = one_instruction_guest(os.path.join(ws.tmp, "one-instruction.elf"))
        warm = [w for w in ways if w.startswith("warm-")]
        if warm:
            _first_byte(driver, alone, "a one-instruction guest (the VMM alone)", n, rounds, warm)
    finally:
        ws.close()


def _first_byte(
    driver: Driver, kernel: str, what: str, n: int, rounds: int, ways: list[str]
) -> None:
    """Time `ways` with one guest image, interleaved with `python -c pass`; print."""
    modes = ["ref", *ways]
    rs = [driver.call("first_byte", n=n, kernel=kernel, append="", modes=modes)
          for _ in range(rounds)]  # fmt: skip
    times = {m: [[v for v in r["times"][m] if v is not None] for r in rs] for m in modes}
    print(f"first console byte of {what} ({n} launches per round and way, interleaved):")
    print(f"  reference `python -c pass` exec→exit: {spread(times['ref'], 'ms')}")
    ref = statistics.median([v for r in times["ref"] for v in r])
    for m in ways:
        how, on = m.split("-")
        launch = "cold exec" if how == "cold" else "warm request"
        p50 = statistics.median([v for r in times[m] for v in r])
        target = "  (target ≤ 5 ms)" if how == "warm" else ""
        print(f"  {launch} → first byte, {LABELS[on]}: {spread(times[m], 'ms')}; "
              f"{p50 / ref:.2f}x python -c pass{target}")  # fmt: skip
        if how == "warm":
            forked = [r["started"][m] for r in rs]
            print(f"    of which request → pid answered (fork done): {spread(forked, 'ms')}")
    for m in ways:
        how, on = m.split("-")
        if on == "off" or f"{how}-off" not in ways:
            continue
        diffs = [
            [
                x - y
                for x, y in zip(r[m], r[f"{how}-off"], strict=True)
                if x is not None and y is not None
            ]
            for r in (res["times"] for res in rs)
        ]
        target = "  (target ≤ 2 ms)" if on == "on" else ""
        print(f"  cost per {how} launch of {LABELS[on]}, paired with unconfined: "
              f"{spread(diffs, 'ms', 2)}{target}")  # fmt: skip
    prep = [r["prep"] for r in rs]
    release = [r["release"] for r in rs]
    if any(prep):
        print(f"  agent-side jail dir + cgroup create (outside the timed launch): "
              f"{spread(prep, 'ms', 2)}")  # fmt: skip
        print(f"  then kill + reap + cgroup and jail removal: {spread(release, 'ms', 2)}")
    restarts = sum(r["restarts"] for r in rs)
    if restarts:
        print(f"  ({restarts} warm launches dropped: the installed code changed, so the "
              "warm parent restarted)")  # fmt: skip


def bench_burst(n: int, rounds: int, workers: int, ways: list[str]) -> None:
    append, guest = idle_cmdline()
    ws = Workspace("lb-")
    try:
        driver = Driver(ws)
        rates: dict[str, list[float]] = {w: [] for w in ways}
        checking: dict[str, list[float]] = {w: [] for w in ways}
        host: dict[str, list[float]] = {w: [] for w in ways}
        shares: dict[str, list[str]] = {w: [] for w in ways}
        vmm: dict[str, list[float]] = {w: [] for w in ways}
        warm: dict[str, list[float]] = {w: [] for w in ways}
        print(f"{n} VMMs ({guest}) requested at once → all running (pidfile + QMP "
              f"query-status); warm: {workers} concurrent requests:")  # fmt: skip
        before = [python_pass_ms() for _ in range(10)]
        print(f"  reference: {reference(times=before)}")
        for _ in range(rounds):
            for way in ways:
                how, on = way.split("-")
                r = driver.call("burst", n=n, how=how, confine=on, kernel="heartbeat",
                                append=append, workers=workers)  # fmt: skip
                rates[way].append(r["per_second"])
                checking[way].append(r["checking_cpu"] / n * 1e3)
                host[way].append(r["host_cpu"] / n * 1e3)
                shares[way].append(r["host_shares"])
                vmm[way].append(r["vmm_cpu"] / n * 1e3)
                warm[way].append(r["warm_cpu"] / n * 1e3)
        after = [python_pass_ms() for _ in range(10)]
        yardstick = statistics.median(before + after)
        for way in ways:
            how, on = way.split("-")
            what = f"{'warm parent' if how == 'warm' else 'cold exec'}, {LABELS[on]}"
            target = "  (target ≥ 150/s)" if how == "warm" else ""
            print(f"  {what}: {per_round(rates[way], 'VMMs/s')}{target}")
            print(
                f"    the whole host's CPU meanwhile: {per_round(host[way], 'ms per VMM')}; "
                f"{statistics.median(host[way]) / yardstick:.2f}x python -c pass"
            )
            print(f"    the host's CPUs meanwhile, round by round: {'; '.join(shares[way])}")
            print(f"    each VMM's own, until it runs: {per_round(vmm[way], 'ms CPU')}")
            if how == "warm":
                print(f"    the warm parent's own (not its intermediates', which fork each VMM): "
                      f"{per_round(warm[way], 'ms CPU per VMM')}")  # fmt: skip
            print(f"    the bench's own requests and checks meanwhile: "
                  f"{per_round(checking[way], 'ms CPU per VMM')}")  # fmt: skip
        print(f"  reference after: {reference(times=after)}")
    finally:
        ws.close()


# --- agent over gRPC -------------------------------------------------------------------------
class AgentRig:
    """One real computed-agent on an etcd, room for ~1,000 instances of 64 MiB; its
    VMMs, cgroups and state are removed by close() (or by the Workspace). It runs as the
    product's default does, with --ksm (the test harness's agents say --no-ksm); the host's
    KSM setting is put back as found at close()."""

    def __init__(
        self, ws: Workspace, etcd_endpoint: str, name: str, extra: list[str],
        uid_range: str, interval: float = 1.0,
    ) -> None:  # fmt: skip
        from tests.agent_harness import AgentProcess
        from tests.ksm_host import ksm_settings

        self._ksm = ksm_settings()  # the agent may start KSM: put back at close()
        self._ksm.__enter__()
        self.agent = AgentProcess(
            os.path.join(ws.tmp, name), etcd_endpoint, f"bench-{name}",
            "--vcpus", "64", "--memory-mb", "24000", "--ram-allocation-ratio", "4",
            "--cpu-allocation-ratio", "32", "--ksm", *extra,
        )  # fmt: skip
        args = self.agent.args
        args[args.index("--stats-interval") + 1] = str(interval)
        args[args.index("--vmm-uid-range") + 1] = uid_range
        ws.extra_cgroup_parents.append(self.agent.cgroup_parent)
        ws.closers.append(self.close)
        self.agent.start()
        self.stub = self.agent.stub

    @staticmethod
    def spec(image: str = "heartbeat", cmdline: str = ""):
        from computed.api import types_pb2

        u = str(uuid.uuid4())
        return types_pb2.InstanceSpec(
            uuid=u, name=f"instance-{u[:8]}", image=image, cmdline=cmdline, vcpus=1, memory_mb=64
        )

    def spawn_at_once(
        self, n: int, image: str = "heartbeat", cmdline: str = ""
    ) -> tuple[float, list[float], list[str]]:
        """n Spawn RPCs issued at once (gRPC futures); seconds until every reply, the
        latencies (ms) and the uuids. Raises unless every one is ACTIVE."""
        from computed.api import agent_pb2, types_pb2

        specs = [self.spec(image, cmdline) for _ in range(n)]
        done: list[float] = [0.0] * n
        start = time.perf_counter()
        calls = []
        for i, s in enumerate(specs):
            call = self.stub.Spawn.future(agent_pb2.SpawnRequest(spec=s), timeout=600)
            call.add_done_callback(lambda _c, i=i: done.__setitem__(i, time.perf_counter()))
            calls.append(call)
        replies = [c.result() for c in calls]
        elapsed = max(done) - start
        bad = [r for r in replies if r.status != types_pb2.STATUS_ACTIVE]
        if bad:
            raise SystemExit(f"{len(bad)} of {n} not ACTIVE: {bad[0].fault}")
        return elapsed, [(t - start) * 1000 for t in done], [s.uuid for s in specs]

    def active(self) -> int:
        from computed.api import agent_pb2, types_pb2

        listed = self.stub.List(agent_pb2.ListRequest(), timeout=60).instances
        return sum(i.status == types_pb2.STATUS_ACTIVE for i in listed)

    def delete(self, uuids: list[str], workers: int = 16) -> None:
        from computed.api import agent_pb2

        with futures.ThreadPoolExecutor(workers) as pool:
            list(
                pool.map(
                    lambda u: self.stub.Delete(agent_pb2.InstanceRef(uuid=u), timeout=60), uuids
                )
            )

    def close(self) -> None:
        """The agent, then every VMM it may have left (by List and by pidfile)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        import grpc

        from computed.api import agent_pb2

        pids = []
        with contextlib.suppress(grpc.RpcError, AttributeError):
            pids = [
                i.pid
                for i in self.stub.List(agent_pb2.ListRequest(), timeout=30).instances
                if i.pid
            ]
        self.agent.kill()
        pids += self.agent.vmm_pids()
        kill_and_wait(p for p in pids if self.agent.state_dir.encode() in _cmdline(p))
        kill_and_wait(pids_marked(self.agent.state_dir))
        self.agent.cleanup()
        self._ksm.__exit__(None, None, None)


AGENT_CONFIGS = {
    "default": ([], "confined, warm parent (the default)"),
    "no-warm": (["--no-warm-parent"], "--no-warm-parent (confined, exec)"),
    "no-confine": (["--no-confine"], "--no-confine (warm parent)"),
}


AGENT_FLAGS: list[str] = []  # for every agent: --no-cgroup-favordynmods with --favordynmods off


def bench_agent(n: int, rounds: int, configs: list[str]) -> None:
    from tests.etcd_harness import EtcdServer

    append, guest = idle_cmdline()
    ws = Workspace("lb-")
    etcd = EtcdServer()
    try:
        etcd.__enter__()
        rates: dict[str, list[float]] = {c: [] for c in configs}
        lat: dict[str, list[list[float]]] = {c: [] for c in configs}
        print(f"agent: {n} Spawn RPCs at once ({guest}, 64 MiB) → all ACTIVE, real etcd:")
        print(f"  reference: {reference()}")
        k = 0
        for _ in range(rounds):
            for c in configs:
                k += 1
                flags = AGENT_CONFIGS[c][0] + AGENT_FLAGS
                rig = AgentRig(ws, etcd.endpoint, f"a{k}", flags, "282000-283999")
                try:
                    time.sleep(1.0)  # its start-up done
                    elapsed, latencies, _ = rig.spawn_at_once(n, "heartbeat", append)
                    if rig.active() != n:
                        raise SystemExit(f"{c}: not all {n} listed ACTIVE")
                    rates[c].append(n / elapsed)
                    lat[c].append(latencies)
                finally:
                    rig.close()
        for c in configs:
            print(f"  {AGENT_CONFIGS[c][1]}: {per_round(rates[c], 'Spawns/s')}; Spawn latency "
                  f"{spread(lat[c], 'ms', 0)}  (target ≥ 100/s)")  # fmt: skip
        print(f"  reference after: {reference()}")
    finally:
        ws.close()
        etcd.close()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--driver":
        driver_main(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ap.add_argument("which", nargs="*", default=["first-byte", "burst", "agent"],
                    help="first-byte, burst, agent (default: all)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--launches", type=int, default=10, help="first-byte: per round and way")
    ap.add_argument(
        "--ways",
        default="cold-off,cold-on,warm-off,warm-on,warm-cg,warm-jail",
        help="first-byte: cold|warm - off|on|cg|jail (cg, jail: the two parts of on)",
    )
    ap.add_argument("--burst", type=int, default=50, help="burst: VMMs at once")
    ap.add_argument("--burst-ways", default="warm-off,warm-on,cold-off,cold-on")
    ap.add_argument("--workers", type=int, default=16, help="burst: concurrent warm requests")
    ap.add_argument("--spawns", type=int, default=30, help="agent: Spawn RPCs at once")
    ap.add_argument("--agents", default="default,no-warm,no-confine")
    ap.add_argument(
        "--favordynmods",
        choices=("on", "off"),
        default="on",
        help="cgroup2 mounted with favordynmods, as the agent sets it (on), or without "
        "it for this run (off: each cgroup join waits out an RCU grace period)",
    )
    ap.add_argument(
        "--workdir",
        default=Workspace.base,
        help="where the instances' files go. A file system without a journal (this "
        "sandbox's ext4) scans the recently deleted inodes at every create: under churn "
        "that cost is the file system's, not the launch's (tmpfs, e.g. /dev/shm, has none)",
    )
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (jails, cgroups, the warm parent)")
    Workspace.base = a.workdir
    if a.favordynmods == "off":
        AGENT_FLAGS.append("--no-cgroup-favordynmods")
    with favordynmods(a.favordynmods == "on"):
        print(f"launch_bench: {machine_load()}; favordynmods {a.favordynmods}; "
              f"files in {a.workdir} ({file_system_of(a.workdir)})")  # fmt: skip
        for which in a.which:
            {
                "first-byte": lambda: bench_first_byte(a.launches, a.rounds, a.ways.split(",")),
                "burst": lambda: bench_burst(a.burst, a.rounds, a.workers, a.burst_ways.split(",")),
                "agent": lambda: bench_agent(a.spawns, a.rounds, a.agents.split(",")),
            }[which]()
        print(f"launch_bench done: {machine_load()}")


def file_system_of(path: str) -> str:
    """The type of the file system `path` is on, and whether an ext4 one has a journal."""
    best, fs_type, device = "", "?", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mount_point, kind = line.split()[:3]
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > len(best):
                best, fs_type, device = mount_point, kind, os.path.basename(dev)
    if fs_type == "ext4":
        journal = os.path.exists(f"/proc/fs/jbd2/{device}-8")
        return f"ext4, {'with' if journal else 'no'} journal"
    return fs_type


@contextlib.contextmanager
def favordynmods(on: bool) -> Iterator[None]:
    """The cgroup2 mount with favordynmods (as the agent makes it) or without (remounted
    for the run, put back as it was at the end). Agents started meanwhile (ours with
    --no-cgroup-favordynmods excepted) would turn it on again."""
    with open("/proc/self/mountinfo") as f:
        was_off = favordynmods_target(f.read()) is not None
    if on:
        favor_dynamic_changes()
    elif not was_off:
        stop_favoring_dynamic_changes()
    try:
        yield
    finally:
        if on and was_off:
            stop_favoring_dynamic_changes()
        elif not on and not was_off:
            favor_dynamic_changes()


if __name__ == "__main__":
    from tests.ksm_host import ksm_settings

    with ksm_settings():  # its agents start KSM, as the product does: put back as found
        main()
