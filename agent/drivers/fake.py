"""The fake driver: instances that "run" without KVM, for hollow hosts and tests.

Nova's fake virt driver and kubemark's hollow kubelet are the model: the
agent around it is the real one (gRPC servicer, supervisor, instance
directories, reporter, lease), only the hypervisor is pretend. A fake
instance has a plausible pid (never a real process of ours: drawn above the
pids this machine hands out), answers the QMP commands the supervisor uses,
announces pause and resume as a VMM would, and "exits" when told to power
off, quit or be killed. Its stats (FakeVmmStats) grow as a running VM's
would. Nothing here sleeps or spawns: a fake instance costs a dict entry.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.drivers.base import DriverError, EventHandler, ExitHandler
from agent.host_facts import KvmFacts
from agent.vmm_process import InstancePaths
from computed.exit_codes import ExitCode
from computed.store.records import InstanceSpec
from computed.vmm.control_client import ControlError, QmpEvent

# Fake pids start above Linux's default pid_max (4194304 on 64-bit is the ceiling,
# most machines use 32768..4194304): close to real numbers, never a live process.
_PIDS = itertools.count(4_200_000 + random.randrange(100_000))
_SIGKILL = 9

# What a hollow host says of its hypervisor (host record, GetHostInfo): no KVM at all.
FAKE_KVM_FACTS = KvmFacts(
    api_version=0, vendor_module="fake", vhost="none", guest_kernel_emulated=False
)


@dataclasses.dataclass
class FakeVm:
    """One pretend VMM: its spec, pid and what `query-status` would say."""

    spec: InstanceSpec
    pid: int
    started: float
    status: str = "running"  # or "paused"


# pid → FakeVm for every fake VM of this process: FakeVmmStats finds its VM by pid,
# as VmmStats finds its process. Pids are unique per process, so one table serves
# every hollow host the process runs.
_LIVE: dict[int, FakeVm] = {}
_LIVE_LOCK = threading.Lock()


class FakeDriver:
    name = "fake"

    def __init__(self, fail_every: int = 0) -> None:
        """`fail_every`: refuse every n-th launch (0: never), to exercise the
        scheduler's retry on alternates without a real fault."""
        self.fail_every = fail_every
        self._launches = 0
        self._vms: dict[str, FakeVm] = {}  # uuid → its current VM
        self._lock = threading.Lock()
        self._on_exit: ExitHandler = lambda uuid, pid, code: None
        self._on_event: EventHandler = lambda uuid, event: None

    def bind(
        self, on_exit: ExitHandler, on_event: EventHandler, alive: Callable[[str, int], bool]
    ) -> None:
        self._on_exit, self._on_event = on_exit, on_event

    def launch(self, spec: InstanceSpec, paths: InstancePaths) -> FakeVm:
        with self._lock:
            self._launches += 1
            if self.fail_every and self._launches % self.fail_every == 0:
                raise DriverError("fake driver: this launch was set to fail")
            vm = FakeVm(spec, next(_PIDS), time.time())
            self._vms[spec.uuid] = vm
        with _LIVE_LOCK:
            _LIVE[vm.pid] = vm
        return vm

    def watch(self, uuid: str, pid: int, paths: InstancePaths, child: object | None = None) -> bool:
        return self.is_ours(pid, uuid)  # exits are reported where they happen (_end)

    def events_cover(self, uuid: str, pid: int) -> bool:
        return False  # no events: the sync asks, which costs a dict lookup here

    def control(self, paths: InstancePaths, command: str, timeout: float | None = None) -> object:
        uuid = _uuid_of(paths)
        with self._lock:
            vm = self._vms.get(uuid)
        if vm is None:
            raise ControlError(f"fake instance {uuid} is not running")
        if command == "query-status":
            return {"status": vm.status, "running": vm.status == "running"}
        if command in ("stop", "cont"):
            vm.status = "paused" if command == "stop" else "running"
            self._on_event(
                uuid, QmpEvent("STOP" if command == "stop" else "RESUME", {}, time.time())
            )
            return {}
        if command == "system_powerdown":
            self._end(uuid, vm, int(ExitCode.POWERED_OFF))
            return {}
        if command == "quit":
            self._end(uuid, vm, int(ExitCode.STOPPED_BY_HOST))
            return {}
        if command == "system_reset":
            return {}
        raise ControlError(f"fake driver: command {command!r} not modelled")

    def kill(self, pid: int) -> None:
        with self._lock:
            found = next(((u, vm) for u, vm in self._vms.items() if vm.pid == pid), None)
        if found is not None:
            self._end(found[0], found[1], -_SIGKILL)

    def is_ours(self, pid: int, uuid: str) -> bool:
        with self._lock:
            vm = self._vms.get(uuid)
        return vm is not None and vm.pid == pid

    def read_pid(self, paths: InstancePaths) -> int | None:
        return None  # a fake VM never outlives its process: nothing to adopt

    def exit_record(self, paths: InstancePaths) -> tuple[int, str] | None:
        return None

    def failure_reason(self, paths: InstancePaths) -> str:
        return ""

    def release(self, spec: InstanceSpec, paths: InstancePaths) -> None:
        pass  # no jail, no tap

    def close(self) -> None:
        pass

    def _end(self, uuid: str, vm: FakeVm, code: int) -> None:
        """The VM's process ends: forget it, then tell the supervisor (outside our lock,
        as an exit watcher thread would)."""
        with self._lock:
            if self._vms.get(uuid) is vm:
                del self._vms[uuid]
        with _LIVE_LOCK:
            _LIVE.pop(vm.pid, None)
        self._on_exit(uuid, vm.pid, code)


def _uuid_of(paths: InstancePaths) -> str:
    return paths.root.rstrip("/").rpartition("/")[2]


class FakeVmmStats:
    """VmmStats' interface over a fake VM: the same keys, values a busy-ish guest gives
    (CPU time that grows with uptime, RSS a fraction of its RAM). Raises ProcessGone
    once the VM has ended, as VmmStats does."""

    def __init__(self, pid: int, pss: bool = False, running_at: float | None = None) -> None:
        """`running_at`: VmmStats' bound for its kernel-thread lookups (none here)."""
        from agent.vmm_stats import ProcessGone

        with _LIVE_LOCK:
            vm = _LIVE.get(pid)
        if vm is None:
            raise ProcessGone(f"fake VMM {pid} is gone")
        self.pid = pid
        self.pss = pss
        self._vm = vm
        self._load = 0.05 + random.random() * 0.3  # share of its vCPUs it keeps busy

    def sample(self, now: float | None = None) -> dict[str, Any]:
        from agent.vmm_stats import ProcessGone

        now = time.time() if now is None else now
        with _LIVE_LOCK:
            if _LIVE.get(self.pid) is not self._vm:
                raise ProcessGone(f"fake VMM {self.pid} is gone")
        spec = self._vm.spec
        uptime = max(0.0, now - self._vm.started)
        cpu_ns = int(uptime * self._load * spec.vcpus * 1e9)
        out: dict[str, Any] = {
            "pid": self.pid,
            "cpu.time": cpu_ns,
            "cpu.user": cpu_ns * 9 // 10,
            "cpu.system": cpu_ns // 10,
            "cpu.percent": round(self._load * spec.vcpus * 100, 1),
            "memory.rss": spec.memory_mb * 1024 * 1024 // 8,
            "threads": spec.vcpus + 3,
            "ctx_switches.voluntary": int(uptime * 50),
            "ctx_switches.involuntary": int(uptime * 2),
            "uptime": round(uptime, 3),
            "vcpu.count": spec.vcpus,
        }
        if self.pss:
            out["memory.pss"] = out["memory.rss"]
        for n in range(spec.vcpus):
            out[f"vcpu.{n}.tid"] = self.pid + 1 + n
            out[f"vcpu.{n}.time"] = cpu_ns // spec.vcpus
        return out

    def close(self) -> None:
        pass


def use_fake_stats() -> None:
    """Make this process's etcd reporter sample fake VMs (FakeVmmStats) instead of /proc.

    The reporter (agent/reporter.py) builds `VmmStats(pid, pss=…)` for each instance;
    a process whose agents all run the fake driver swaps that one name. Called once
    at start by `computed-agent --driver fake` and the hollow-host runner, never in
    a process that runs real VMMs.
    """
    import agent.reporter

    agent.reporter.VmmStats = FakeVmmStats  # type: ignore[assignment,misc]
