"""The Driver interface the supervisor talks to, and its one error type.

A driver owns what differs between hypervisors: starting an instance's
process, its control channel, how its exit and pause/resume events reach the
supervisor, and what must be undone when the instance is deleted. The
supervisor keeps everything else: instance table, locks, state rules, the
instance directory and the reports to etcd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from agent.vmm_process import InstancePaths
from computed.store.records import InstanceSpec
from computed.vmm.control_client import QmpEvent

# (uuid, pid, exit status or None when unknown)
ExitHandler = Callable[[str, int, "int | None"], None]
# (uuid, QMP event)
EventHandler = Callable[[str, QmpEvent], None]


class DriverError(Exception):
    """The instance could not be started; the message is the reason users read."""


class Launched(Protocol):
    """What a launch hands back: the instance's pid (and, for KVM, its child handle)."""

    pid: int


class Driver(Protocol):
    name: str

    def bind(
        self, on_exit: ExitHandler, on_event: EventHandler, alive: Callable[[str, int], bool]
    ) -> None:
        """Where exits and QMP events go; called once, before anything is launched."""

    def launch(self, spec: InstanceSpec, paths: InstancePaths) -> Launched:
        """Start the instance; DriverError (or OSError) when it cannot run."""

    def watch(self, uuid: str, pid: int, paths: InstancePaths, child: object | None = None) -> bool:
        """Report this process's exit and events; False if it is already gone."""

    def events_cover(self, uuid: str, pid: int) -> bool:
        """Have this process's pause/resume events all reached us since this was last
        asked? Then the power-state sync need not ask the process itself."""

    def control(self, paths: InstancePaths, command: str, timeout: float | None = None) -> object:
        """One QMP command (query-status, stop, cont, system_powerdown, quit, system_reset);
        ControlError when the instance does not answer."""

    def kill(self, pid: int) -> None:
        """SIGKILL, or what stands for it; a missing process is not an error."""

    def is_ours(self, pid: int, uuid: str) -> bool:
        """Is `pid` alive and this instance's process?"""

    def read_pid(self, paths: InstancePaths) -> int | None:
        """The pid an earlier agent left for this instance (adoption), if any."""

    def exit_record(self, paths: InstancePaths) -> tuple[int, str] | None:
        """(exit status, reason) the process left behind, if any."""

    def failure_reason(self, paths: InstancePaths) -> str:
        """Why the process ended, from what it left (its log), for a fault message."""

    def release(self, spec: InstanceSpec, paths: InstancePaths) -> None:
        """Undo per-instance host set-up (jail, tap) once its process has gone."""

    def close(self) -> None:
        """Stop watching; running instances are left as they are."""
