"""Per-VMM and per-host statistics, named after `virsh domstats`.

A collector is made once per VMM process and finds that VMM's threads then:
its vCPU threads (`CPU n/KVM`), and the helper threads that work for it from
outside the process, the kernel's `kvm-pit/<pid>` worker and a `vhost-<pid>`
worker (a kernel thread, or a thread of the VMM itself where the data path is
in userspace). Their CPU time is attributed to the instance.

Sampling is paid every interval for every instance (a thousand on a dense
host), so a sample opens nothing: it re-reads files the collector keeps open
with pread, the fewest that give psutil's figures —

- `/proc/<pid>/stat`: CPU times and the thread count;
- `/proc/<pid>/statm`: RSS, as psutil's `memory_info().rss` (stat has an RSS
  field too, but it comes from per-CPU counters that may lag the exact count:
  by 128 KiB on the development host);
- `/proc/<pid>/status`, only every `CTX_SWITCHES_EVERY` samples: the context
  switches (psutil's `num_ctx_switches()`, the main thread's). The kernel
  formats some fifty lines for it, which makes it the dearest file here;
- each vCPU's and helper's `schedstat`.

psutil still makes the collector (threads, start time), reads PSS when asked
(smaps_rollup, costly), and gives the host's figures. Helper threads are
found through one shared index of kernel threads rather than a /proc scan per
collector: a scan costs tens of ms on a host with a thousand VMMs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import psutil

from computed.mtls import cert_expiry
from computed.procfs import kernel_thread_pids, read_comm, stat_fields

NS = 1_000_000_000
CTX_SWITCHES_EVERY = 10  # samples between two reads of /proc/<pid>/status
_PF_USER_WORKER = 0x4000  # a kernel-made thread in a user process (include/linux/sched.h)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_NS_PER_TICK = NS // _CLOCK_TICKS
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_STAT_BYTES = 1024  # /proc/<pid>/stat is ~300 bytes; its comm is at most 64
_STATUS_BYTES = 4096
_HELPER_GRACE_S = 30.0  # a missing kvm-pit worker is looked for this long after the VMM starts


class ProcessGone(Exception):
    """The VMM process no longer exists."""


def cpu_percent(
    prev_cpu_s: float | None, prev_at: float | None, cpu_s: float, at: float
) -> float | None:
    """CPU use over the interval, 100 = one host CPU; None before there is an interval."""
    if prev_cpu_s is None or prev_at is None or at <= prev_at:
        return None
    return round(100.0 * max(0.0, cpu_s - prev_cpu_s) / (at - prev_at), 2)


class ProcStat(NamedTuple):
    """The figures a sample takes from /proc/<pid>/stat."""

    utime_ticks: int
    stime_ticks: int
    threads: int


def parse_stat(raw: bytes) -> ProcStat:
    """proc(5) fields 14, 15 and 20. Split after the last ')': the command name may
    hold spaces and parentheses."""
    f = raw[raw.rindex(b")") + 2 :].split(None, 18)
    # f[0] is field 3 (state), so field n is f[n - 3].
    return ProcStat(int(f[11]), int(f[12]), int(f[17]))


def parse_statm_rss(raw: bytes) -> int:
    """Resident pages: the second field of /proc/<pid>/statm."""
    return int(raw.split(None, 2)[1])


def parse_ctx_switches(raw: bytes) -> tuple[int, int]:
    """(voluntary, involuntary) from /proc/<pid>/status (near its end: search from there)."""
    return _status_number(raw, b"\nvoluntary_ctxt_switches:"), _status_number(
        raw, b"\nnonvoluntary_ctxt_switches:"
    )


def _status_number(raw: bytes, label: bytes) -> int:
    start = raw.rindex(label) + len(label)
    end = raw.find(b"\n", start)
    return int(raw[start : end if end >= 0 else len(raw)])


class ThreadClock:
    """CPU time of one thread, read from a kept-open /proc/<pid>/task/<tid>/schedstat.

    schedstat's first field is the thread's run time in ns. Keeping the file
    open and re-reading it with pread spares an open and a close per sample,
    which matters where syscalls are expensive (nested virtualisation).
    """

    def __init__(self, pid: int, tid: int) -> None:
        self.tid = tid
        self._fd = os.open(f"/proc/{pid}/task/{tid}/schedstat", os.O_RDONLY | os.O_CLOEXEC)

    def read_ns(self) -> int | None:
        try:
            return int(os.pread(self._fd, 128, 0).split(maxsplit=1)[0])
        except (OSError, ValueError, IndexError):
            return None  # the thread is gone

    def close(self) -> None:
        """Idempotent: a closed descriptor's number may already be another file's."""
        fd, self._fd = getattr(self, "_fd", -1), -1
        _close_quietly(fd)

    def __del__(self) -> None:
        self.close()


def _close_quietly(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def open_clock(pid: int | None, tid: int | None) -> ThreadClock | None:
    if not pid or not tid:
        return None
    try:
        return ThreadClock(pid, tid)
    except OSError:
        return None


class KernelThreads:
    """comm → pid of the kernel threads, from one scan that every collector shares.

    A new collector asks for its `kvm-pit/<pid>` (and, on kernels before 6.4,
    its `vhost-<pid>`). Scanning /proc for each costs tens of ms with a thousand
    VMMs: 200 new instances waited two minutes for their first stats. Here a
    missing name rescans only if the last scan is older than `max_age` seconds
    or than `since` (the asking VMM's start), so a round of new collectors
    shares one scan. A hit is checked against the thread's comm: pids are reused.
    """

    def __init__(
        self,
        max_age: float = 1.0,
        list_pids: Callable[[], list[str]] = kernel_thread_pids,
        read_comm: Callable[[int | str], str | None] = read_comm,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_age = max_age
        self._list_pids, self.read_comm, self._clock = list_pids, read_comm, clock
        self._by_comm: dict[str, int] = {}
        self._scanned_at = float("-inf")
        self._lock = threading.Lock()

    def find(self, comm: str, since: float = float("-inf")) -> int | None:
        with self._lock:
            pid = self._by_comm.get(comm)
            if pid is not None and self.read_comm(pid) == comm:
                return pid
            now = self._clock()
            if self._scanned_at >= max(since, now - self.max_age):
                return None  # a scan recent enough did not see it: it is not there
            self._by_comm = {}
            for p in self._list_pids():
                name = self.read_comm(p)
                if name is not None:
                    self._by_comm[name] = int(p)
            self._scanned_at = now
            return self._by_comm.get(comm)


kernel_threads = KernelThreads()


class VmmStats:
    """Samples one VMM process; create once per VMM pid."""

    def __init__(
        self,
        pid: int,
        pit_pid: int | None = None,
        pss: bool = False,
        helpers: KernelThreads = kernel_threads,
        running_at: float | None = None,
    ) -> None:
        """`running_at`: a time by which the VMM's VM, and so its kvm-pit worker,
        existed (default: now). A kernel-thread scan older than that cannot
        speak for the worker. psutil's start time is no bound: it is counted
        from a boot time in whole seconds, so it may read up to 1 s early, and
        a scan taken before the VMM started then passed for one taken after."""
        self.pid = pid
        self.pss = pss
        self.helpers = helpers
        self._helpers_since = time.time() if running_at is None else running_at
        try:
            self.proc = psutil.Process(pid)
            self.started = self.proc.create_time()
            self._stat = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            self._statm = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            self._status = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
            comms = self._thread_comms()
        except (psutil.Error, OSError):
            self._close_files()
            raise ProcessGone(f"VMM {pid} is gone") from None
        self.vcpus = {
            int(name[4:-4]): ThreadClock(pid, tid)
            for tid, name in comms.items()
            if name.startswith("CPU ") and name.endswith("/KVM")
        }
        self._vcpu_keys = [
            (f"vcpu.{index}.tid", f"vcpu.{index}.time", clock)
            for index, clock in sorted(self.vcpus.items())
        ]
        self.pit_pid = pit_pid or helpers.find(f"kvm-pit/{pid}", self._helpers_since)
        self.pit = open_clock(self.pit_pid, self.pit_pid)
        vhost = self._find_vhost(comms)
        self.vhost_kind = vhost[0] if vhost else None
        self.vhost = open_clock(*vhost[1:]) if vhost else None
        self._prev_cpu: float | None = None
        self._prev_at: float | None = None
        self._ctx = (0, 0)
        # Spread the status reads of many collectors over the rounds.
        self._ctx_countdown = 0
        self._ctx_phase = pid % CTX_SWITCHES_EVERY

    def _thread_comms(self) -> dict[int, str]:
        """tid → comm of the VMM's threads, read once."""
        found = {}
        for t in self.proc.threads():
            name = read_comm(f"{self.pid}/task/{t.id}")
            if name is not None:
                found[t.id] = name
        return found

    def _find_vhost(self, comms: dict[int, str]) -> tuple[str, int, int] | None:
        """(kind, pid-for-/proc, tid) of the vhost worker, kernel or userspace.

        Since Linux 6.4 the kernel's vhost-net worker is a thread in the VMM's own
        thread group (a vhost_task, flagged PF_USER_WORKER); before, and for the
        VMM's fallback worker thread, the comm alone cannot tell them apart.
        """
        comm = f"vhost-{self.pid}"
        for tid, name in comms.items():
            if name != comm:
                continue
            try:
                flags = int(stat_fields(f"/proc/{self.pid}/task/{tid}/stat")[6])
            except (OSError, ValueError, IndexError):
                continue
            return ("kernel" if flags & _PF_USER_WORKER else "userspace", self.pid, tid)
        kernel = self.helpers.find(comm, self._helpers_since)
        return ("kernel", kernel, kernel) if kernel else None

    def _read_pit(self, now: float) -> int | None:
        """The kvm-pit worker's CPU ns. Looked up again once if it went away, and while
        it is missing from a young VMM (a scan taken while the VMM was starting)."""
        ns = self.pit.read_ns() if self.pit is not None else None
        if ns is None and (self.pit is not None or now - self.started < _HELPER_GRACE_S):
            self.pit_pid = self.helpers.find(f"kvm-pit/{self.pid}", self._helpers_since)
            self.pit = open_clock(self.pit_pid, self.pit_pid)
            ns = self.pit.read_ns() if self.pit is not None else None
        return ns

    def _read_ctx_switches(self) -> tuple[int, int]:
        """The last figures read, re-read every CTX_SWITCHES_EVERY samples (and on the first)."""
        if self._ctx_countdown <= 0:
            self._ctx = parse_ctx_switches(os.pread(self._status, _STATUS_BYTES, 0))
            self._ctx_countdown = CTX_SWITCHES_EVERY - self._ctx_phase
            self._ctx_phase = 0
        self._ctx_countdown -= 1
        return self._ctx

    def sample(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        try:
            st = parse_stat(os.pread(self._stat, _STAT_BYTES, 0))
            rss_pages = parse_statm_rss(os.pread(self._statm, 128, 0))
            voluntary, involuntary = self._read_ctx_switches()
            if self.pss:
                with self.proc.oneshot():
                    pss = self.proc.memory_full_info().pss
        except (OSError, ValueError, psutil.Error):
            raise ProcessGone(f"VMM {self.pid} is gone") from None
        cpu_s = (st.utime_ticks + st.stime_ticks) / _CLOCK_TICKS
        out: dict[str, Any] = {
            "pid": self.pid,
            "cpu.time": (st.utime_ticks + st.stime_ticks) * _NS_PER_TICK,
            "cpu.user": st.utime_ticks * _NS_PER_TICK,
            "cpu.system": st.stime_ticks * _NS_PER_TICK,
            "cpu.percent": cpu_percent(self._prev_cpu, self._prev_at, cpu_s, now),
            "memory.rss": rss_pages * _PAGE_SIZE,
            "threads": st.threads,
            "ctx_switches.voluntary": voluntary,
            "ctx_switches.involuntary": involuntary,
            "uptime": round(now - self.started, 3),
            "vcpu.count": len(self.vcpus),
        }
        self._prev_cpu, self._prev_at = cpu_s, now
        if self.pss:
            out["memory.pss"] = pss
        for tid_key, time_key, clock in self._vcpu_keys:
            out[tid_key] = clock.tid
            out[time_key] = clock.read_ns()
        pit_ns = self._read_pit(now)
        if pit_ns is not None:
            out["helper.kvm-pit.pid"] = self.pit_pid
            out["helper.kvm-pit.time"] = pit_ns
        if self.vhost is not None:
            vhost_ns = self.vhost.read_ns()
            if vhost_ns is not None:
                out["helper.vhost.pid"] = self.vhost.tid
                out["helper.vhost.time"] = vhost_ns
            out["helper.vhost.kind"] = self.vhost_kind
        return out

    def _close_files(self) -> None:
        for name in ("_stat", "_statm", "_status"):
            _close_quietly(getattr(self, name, None))
            setattr(self, name, None)

    def close(self) -> None:
        """Give back every kept-open file now rather than when collected."""
        self._close_files()
        for clock in (*self.vcpus.values(), self.pit, self.vhost):
            if clock is not None:
                clock.close()

    def __del__(self) -> None:
        self._close_files()


def host_stats(
    vcpus: int, memory_mb: int, used_vcpus: int, used_memory_mb: int, instances: int
) -> dict[str, Any]:
    """Host-level figures for /computed/stats/hosts/<id>."""
    vm = psutil.virtual_memory()
    load1, load5, load15 = os.getloadavg()
    return {
        "cpu.percent": psutil.cpu_percent(interval=None),
        "load.1": load1,
        "load.5": load5,
        "load.15": load15,
        "memory.total": vm.total,
        "memory.available": vm.available,
        "memory.used": vm.used,
        "instances": instances,
        "capacity.vcpus": vcpus,
        "capacity.memory_mb": memory_mb,
        "allocated.vcpus": used_vcpus,
        "allocated.memory_mb": used_memory_mb,
        **cert_expiry.stats(),
    }
