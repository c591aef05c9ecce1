"""computed-vmm's exit codes: its contract with whoever started it.

The VMM exits with these, the agent turns them into an instance's state, and
docs/guest-abi.md documents them; one definition keeps the three from drifting.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    POWERED_OFF = 0  # the guest powered off (or wrote 0 to the debug-exit port)
    INTERNAL = 1  # a bug in the VMM: unexpected exception
    BAD_INPUT = 2  # bad command line or guest image
    KVM_UNAVAILABLE = 3  # /dev/kvm missing, unusable, or lacks a capability
    GUEST_CRASHED = 4  # triple fault, KVM internal or emulation error
    GUEST_FAILED = 5  # the guest wrote a non-zero code to the debug-exit port
    STOPPED_BY_HOST = 6  # `quit`, or the powerdown grace period ran out
