"""The KVM driver: computed-vmm processes, confined by the Jailer, forked by the warm
parent, watched through pidfds and QMP events. The code that does this lives in
agent/vmm_process.py, jail.py, taps and the QMP client; this class only gathers it
behind the Driver interface."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from agent.drivers.base import DriverError, EventHandler, ExitHandler
from agent.jail import Jailer, JailError
from agent.vmm_events import VmmEventListener
from agent.vmm_process import (
    ExitWatcher,
    InstancePaths,
    VmmStartError,
    is_our_vmm,
    read_exit_record,
    read_pid,
    spawn_ready,
    vmm_error,
)
from agent.warm_parent import VmmChild, WarmParent
from computed.store.records import InstanceSpec
from computed.taps import TapError, ensure_tap, remove_tap, tap_name
from computed.vmm.control_client import ControlClient, execute


class KvmDriver:
    name = "kvm"

    def __init__(
        self,
        bridge: str | None = None,
        jailer: Jailer | None = None,
        warm: WarmParent | None = None,
    ) -> None:
        """`bridge`: the instance network's bridge on this host (None: no network);
        `jailer`: confine every VMM (None: unconfined, development); `warm`: fork VMMs
        from the warm parent (None: exec each)."""
        self.bridge = bridge
        self.jailer = jailer
        self.warm = warm
        self._watcher: ExitWatcher | None = None
        self._events: VmmEventListener | None = None
        # The QMP connection each launch was found ready on, until `watch` listens on it.
        self._ready: dict[tuple[str, int], ControlClient] = {}
        self._ready_lock = threading.Lock()

    def bind(
        self, on_exit: ExitHandler, on_event: EventHandler, alive: Callable[[str, int], bool]
    ) -> None:
        self._watcher = ExitWatcher(on_exit)
        self._events = VmmEventListener(on_event, alive)

    def launch(self, spec: InstanceSpec, paths: InstancePaths) -> VmmChild:
        try:
            if spec.ip:
                if not self.bridge:
                    raise DriverError("this host has no instance network (agent --bridge)")
                ensure_tap(tap_name(spec.uuid), self.bridge)
            confinement = self.jailer.prepare(spec, paths) if self.jailer else None
            child, control = spawn_ready(spec, paths, confinement=confinement, warm=self.warm)
        except (VmmStartError, TapError, JailError) as e:
            raise DriverError(str(e)) from e
        with self._ready_lock:
            self._ready[(spec.uuid, child.pid)] = control
        return child

    def watch(
        self, uuid: str, pid: int, paths: InstancePaths, child: VmmChild | None = None
    ) -> bool:
        assert self._watcher is not None and self._events is not None, "bind() first"
        with self._ready_lock:
            control = self._ready.pop((uuid, pid), None)
        if not self._watcher.watch(uuid, pid, child):
            if control is not None:
                control.close()
            return False
        self._events.watch(uuid, paths.control, pid, client=control)
        return True

    def events_cover(self, uuid: str, pid: int) -> bool:
        return self._events is not None and self._events.covers(uuid, pid)

    def control(self, paths: InstancePaths, command: str, timeout: float | None = None) -> object:
        if timeout is None:
            return execute(paths.control, command)
        return execute(paths.control, command, timeout=timeout)

    def kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def is_ours(self, pid: int, uuid: str) -> bool:
        return is_our_vmm(pid, uuid)

    def read_pid(self, paths: InstancePaths) -> int | None:
        return read_pid(paths)

    def exit_record(self, paths: InstancePaths) -> tuple[int, str] | None:
        return read_exit_record(paths)

    def failure_reason(self, paths: InstancePaths) -> str:
        return vmm_error(paths)

    def release(self, spec: InstanceSpec, paths: InstancePaths) -> None:
        if self.jailer is not None:  # JailError: the Delete fails and may be retried
            self.jailer.release(spec.uuid, paths)
        if spec.ip:
            remove_tap(tap_name(spec.uuid))

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._events is not None:
            self._events.stop()
