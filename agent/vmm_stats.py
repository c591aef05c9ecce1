"""Per-VMM and per-host statistics with psutil, named after `virsh domstats`.

A collector is made once per VMM process and finds that VMM's threads then:
its vCPU threads (`CPU n/KVM`), and the helper threads that work for it from
outside the process, the kernel's `kvm-pit/<pid>` worker and a `vhost-<pid>`
worker (a kernel thread, or a thread of the VMM itself where the data path is
in userspace). Their CPU time is attributed to the instance. Nothing scans
/proc per sample: helpers are looked up once, and again only if one vanishes.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from computed.procfs import find_kernel_thread, stat_fields

NS = 1_000_000_000
_PF_USER_WORKER = 0x4000  # a kernel-made thread in a user process (include/linux/sched.h)


class ProcessGone(Exception):
    """The VMM process no longer exists."""


def cpu_percent(
    prev_cpu_s: float | None, prev_at: float | None, cpu_s: float, at: float
) -> float | None:
    """CPU use over the interval, 100 = one host CPU; None before there is an interval."""
    if prev_cpu_s is None or prev_at is None or at <= prev_at:
        return None
    return round(100.0 * max(0.0, cpu_s - prev_cpu_s) / (at - prev_at), 2)


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
        os.close(self._fd)

    def __del__(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


def open_clock(pid: int | None, tid: int | None) -> ThreadClock | None:
    if not pid or not tid:
        return None
    try:
        return ThreadClock(pid, tid)
    except OSError:
        return None


class VmmStats:
    """Samples one VMM process; create once per VMM pid."""

    def __init__(self, pid: int, pit_pid: int | None = None, pss: bool = False) -> None:
        try:
            self.proc = psutil.Process(pid)
            self.started = self.proc.create_time()
        except psutil.Error:
            raise ProcessGone(f"VMM {pid} is gone") from None
        self.pid = pid
        self.pss = pss
        self.vcpus = {i: ThreadClock(pid, tid) for i, tid in self._vcpu_threads().items()}
        self.pit_pid = pit_pid or find_kernel_thread(f"kvm-pit/{pid}")
        self.pit = open_clock(self.pit_pid, self.pit_pid)
        vhost = self._find_vhost()
        self.vhost_kind = vhost[0] if vhost else None
        self.vhost = open_clock(*vhost[1:]) if vhost else None
        self._prev_cpu: float | None = None
        self._prev_at: float | None = None

    def _vcpu_threads(self) -> dict[int, int]:
        """vCPU index → tid, from thread names (`CPU n/KVM`)."""
        found = {}
        for t in self.proc.threads():
            try:
                with open(f"/proc/{self.pid}/task/{t.id}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            if name.startswith("CPU ") and name.endswith("/KVM"):
                found[int(name[4:-4])] = t.id
        return found

    def _find_vhost(self) -> tuple[str, int, int] | None:
        """(kind, pid-for-/proc, tid) of the vhost worker, kernel or userspace.

        Since Linux 6.4 the kernel's vhost-net worker is a thread in the VMM's own
        thread group (a vhost_task, flagged PF_USER_WORKER); before, and for the
        VMM's fallback worker thread, the comm alone cannot tell them apart.
        """
        comm = f"vhost-{self.pid}"
        for t in self.proc.threads():
            try:
                with open(f"/proc/{self.pid}/task/{t.id}/comm") as f:
                    if f.read().strip() != comm:
                        continue
                flags = int(stat_fields(f"/proc/{self.pid}/task/{t.id}/stat")[6])
            except (OSError, ValueError, IndexError):
                continue
            return ("kernel" if flags & _PF_USER_WORKER else "userspace", self.pid, t.id)
        kernel = find_kernel_thread(comm)
        return ("kernel", kernel, kernel) if kernel else None

    def sample(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        try:
            with self.proc.oneshot():
                cpu = self.proc.cpu_times()
                mem = self.proc.memory_info()
                ctx = self.proc.num_ctx_switches()
                threads = self.proc.num_threads()
                pss = self.proc.memory_full_info().pss if self.pss else None
        except psutil.Error:
            raise ProcessGone(f"VMM {self.pid} is gone") from None
        cpu_s = cpu.user + cpu.system
        out: dict[str, Any] = {
            "pid": self.pid,
            "cpu.time": int(cpu_s * NS),
            "cpu.user": int(cpu.user * NS),
            "cpu.system": int(cpu.system * NS),
            "cpu.percent": cpu_percent(self._prev_cpu, self._prev_at, cpu_s, now),
            "memory.rss": mem.rss,
            "threads": threads,
            "ctx_switches.voluntary": ctx.voluntary,
            "ctx_switches.involuntary": ctx.involuntary,
            "uptime": round(now - self.started, 3),
            "vcpu.count": len(self.vcpus),
        }
        self._prev_cpu, self._prev_at = cpu_s, now
        if pss is not None:
            out["memory.pss"] = pss
        for index, clock in sorted(self.vcpus.items()):
            out[f"vcpu.{index}.tid"] = clock.tid
            out[f"vcpu.{index}.time"] = clock.read_ns()
        pit_ns = self.pit.read_ns() if self.pit is not None else None
        if self.pit is not None and pit_ns is None:  # the worker went away: look again, once
            self.pit_pid = find_kernel_thread(f"kvm-pit/{self.pid}")
            self.pit = open_clock(self.pit_pid, self.pit_pid)
            pit_ns = self.pit.read_ns() if self.pit is not None else None
        vhost_ns = self.vhost.read_ns() if self.vhost is not None else None
        for name, clock, cpu_ns in (("kvm-pit", self.pit, pit_ns), ("vhost", self.vhost, vhost_ns)):
            if clock is not None and cpu_ns is not None:
                out[f"helper.{name}.pid"] = clock.tid
                out[f"helper.{name}.time"] = cpu_ns
        if self.vhost is not None:
            out["helper.vhost.kind"] = self.vhost_kind
        return out


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
    }
