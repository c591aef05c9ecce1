"""Exit codes of computed-vmm and the errors that lead to them.

Each failure a user can meet has one exception type carrying the words they
will read; `main` maps them to exit codes in one place. The codes are part of
the VMM's contract with the agent and are documented in docs/guest-abi.md.
"""

from __future__ import annotations

from computed.exit_codes import ExitCode


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
