"""The QMP events the VMM sends, with qemu's names and data (qapi/run-state.json).

One vocabulary for the three places that meet it: the Machine reports them,
the control server timestamps and delivers them, and the agent reads them
through `control_client`. No imports: the VMM loads this at every launch.

    STOP, RESUME, POWERDOWN      no data
    RESET, SHUTDOWN              {"guest": bool, "reason": <ShutdownCause>}
"""

from __future__ import annotations

STOP = "STOP"  # the vCPUs were paused (`stop`)
RESUME = "RESUME"  # the vCPUs run again (`cont`)
POWERDOWN = "POWERDOWN"  # the power button was pressed (`system_powerdown`, SIGTERM)
RESET = "RESET"  # the machine was reset in place (`system_reset`, or the guest)
SHUTDOWN = "SHUTDOWN"  # the machine has stopped for good; the VMM is about to exit

# qemu's ShutdownCause words that can happen here.
HOST_ERROR = "host-error"  # the VMM itself failed
HOST_QMP_QUIT = "host-qmp-quit"  # `quit`
HOST_QMP_SYSTEM_RESET = "host-qmp-system-reset"  # `system_reset`
HOST_SIGNAL = "host-signal"  # SIGTERM/SIGINT/SIGHUP and the guest ignored the power button
GUEST_SHUTDOWN = "guest-shutdown"  # the guest powered off (power-off or debug-exit port)
GUEST_RESET = "guest-reset"  # the guest reset itself (i8042)
GUEST_PANIC = "guest-panic"  # the guest crashed (triple fault, failed VM entry…)

_GUEST_CAUSES = frozenset({GUEST_SHUTDOWN, GUEST_RESET, GUEST_PANIC})


def cause_data(reason: str) -> dict[str, object]:
    """RESET's and SHUTDOWN's data: `guest` is true when the guest asked for it."""
    return {"guest": reason in _GUEST_CAUSES, "reason": reason}
