"""Instance status and power state, and the rules for changing them. Pure.

Names follow Nova: a status (what the user asked for and got) and a power
state (what the hypervisor sees). The supervisor asks `check_action` before
doing anything and `state_after_exit` when a VMM process ends.
"""

from __future__ import annotations

import dataclasses
import signal

from computed.errors import Refused
from computed.exit_codes import ExitCode
from computed.status import ACTIVE, CRASHED, ERROR, PAUSED, POWER_PAUSED, RUNNING, SHUTDOWN, SHUTOFF


@dataclasses.dataclass(frozen=True)
class State:
    status: str
    power_state: str
    fault: str = ""


class ActionRefused(Refused):
    """The instance is not in a status that allows the action (FAILED_PRECONDITION)."""


# Which statuses each action may start from.
_ALLOWED: dict[str, frozenset[str]] = {
    "stop": frozenset({ACTIVE, PAUSED}),
    "start": frozenset({SHUTOFF, ERROR}),
    "reboot_soft": frozenset({ACTIVE}),
    "reboot_hard": frozenset({ACTIVE, PAUSED, SHUTOFF, ERROR}),
    "pause": frozenset({ACTIVE}),
    "resume": frozenset({PAUSED}),
}


def check_action(action: str, current: State) -> None:
    """Raise ActionRefused, with words an operator can act on, if `action` is not allowed."""
    allowed = _ALLOWED[action]
    if current.status not in allowed:
        verb = action.replace("_", " ")
        raise ActionRefused(
            f"cannot {verb} an instance in status {current.status} "
            f"(allowed from: {', '.join(sorted(allowed))})"
        )


def state_after_exit(code: int | None, reason: str, expected: bool) -> State:
    """What a VMM's end means for its instance.

    `code` is the exit status (negative: killed by that signal; None: unknown,
    e.g. it ended while the agent was down and left no record). `expected` is
    True when the agent itself stopped it (Stop, hard reboot, delete).
    """
    if code in (ExitCode.POWERED_OFF, ExitCode.STOPPED_BY_HOST) or (expected and code is not None):
        return State(SHUTOFF, SHUTDOWN)
    if code is None:
        return State(ERROR, CRASHED, reason or "the VMM process ended while unsupervised")
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return State(ERROR, CRASHED, reason or f"VMM process killed by {name}")
    if code == ExitCode.GUEST_FAILED:
        return State(ERROR, CRASHED, reason or "the guest reported failure")
    return State(ERROR, CRASHED, reason or f"VMM exited with status {code}")


def state_from_vmm_status(vmm_status: str) -> State:
    """The control socket's query-status answer for a live VMM ("prelaunch": held before
    its first instruction, -S or a reset while stopped: paused, as far as a user sees)."""
    if vmm_status in ("paused", "prelaunch"):
        return State(PAUSED, POWER_PAUSED)
    if vmm_status == "running":
        return State(ACTIVE, RUNNING)
    return State(SHUTOFF, SHUTDOWN)


# What a VMM's QMP event means for its instance, and from which statuses it applies:
# an end (SHUTDOWN) is left to the exit watcher, which knows the exit status.
_EVENTS: dict[str, tuple[State, frozenset[str]]] = {
    "STOP": (State(PAUSED, POWER_PAUSED), frozenset({ACTIVE})),
    "RESUME": (State(ACTIVE, RUNNING), frozenset({PAUSED})),
}


def state_after_event(event: str, current: State) -> State | None:
    """The instance's state after a QMP event of its VMM; None when it changes nothing
    (a late STOP must not pause an instance that is stopping or already SHUTOFF)."""
    entry = _EVENTS.get(event)
    if entry is None or current.status not in entry[1] or current == entry[0]:
        return None
    return entry[0]
