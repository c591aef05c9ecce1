"""Exit codes of computed-vmm and the errors that lead to them.

Each failure a user can meet has one exception type carrying the words they
will read; `main` maps them to exit codes in one place. The codes are part of
the VMM's contract with the agent and are documented in docs/guest-abi.md.
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


class VmmError(Exception):
    """A failure with a message meant for the operator and a fixed exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(VmmError):
    """The command line is wrong."""

    exit_code = ExitCode.BAD_INPUT


class ImageError(VmmError):
    """The guest image cannot be loaded."""

    exit_code = ExitCode.BAD_INPUT


class KvmUnavailableError(VmmError):
    """KVM cannot be used on this host (device, API version or capability)."""

    exit_code = ExitCode.KVM_UNAVAILABLE


class KvmCallError(VmmError):
    """An ioctl the VMM relies on failed; names the ioctl and the errno text."""

    exit_code = ExitCode.INTERNAL


class GuestMemoryError(Exception):
    """A guest-physical range falls outside guest RAM (never fatal for the VMM)."""
