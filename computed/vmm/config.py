"""The VMM's command line, modelled on qemu-kvm, parsed into a `VmConfig`.

Pure: no I/O except resolving `-kernel NAME` against the bundled images,
which the caller passes in as a function. Keeping the flags qemu-like means
`ps` on a computed host reads like `ps` on a Nova host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from computed.vmm.errors import UsageError

MIB = 1 << 20
MIN_MEMORY_MIB = 2
MAX_MEMORY_MIB = 64 * 1024
MAX_VCPUS = 32
NAME_MAX = 63
CMDLINE_MAX = 2047
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
NIL_UUID = "00000000-0000-0000-0000-000000000000"

# Plain character checks rather than `re`: the VMM pays every import at each start.
_HEX = frozenset("0123456789abcdefABCDEF")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_UUID_GROUPS = (8, 4, 4, 4, 12)

USAGE = """\
usage: computed-vmm -kernel IMAGE [-name NAME] [-uuid UUID] [-m MiB] [-smp N]
                    [-append CMDLINE] [-serial file:PATH|stdio|none]
                    [-control unix:PATH] [-pidfile PATH]
                    [-no-kvm-pit-reinjection] [-shutdown-timeout SECONDS]
                    [-exit-record PATH]

IMAGE is a path to an ELF64 guest image, or the name of a bundled guest."""


class VmConfig:
    """One VM's settings. A plain slotted class, not a dataclass or NamedTuple:
    the VMM process pays for every import (dataclasses, typing) at each launch."""

    __slots__ = (
        "append",
        "control",
        "exit_record",
        "kernel",
        "memory_mib",
        "name",
        "pidfile",
        "pit_reinjection",
        "serial",
        "shutdown_timeout",
        "uuid",
        "vcpus",
    )

    def __init__(
        self,
        kernel: str,
        name: str = "computed",
        uuid: str = NIL_UUID,
        memory_mib: int = 128,
        vcpus: int = 1,
        append: str = "",
        serial: str | None = None,  # a file path, "-" for stdout, None for no console
        control: str | None = None,  # unix socket path
        pidfile: str | None = None,
        pit_reinjection: bool = True,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        exit_record: str | None = None,  # JSON file written at exit: why the VM ended
    ) -> None:
        self.exit_record = exit_record
        self.kernel, self.name, self.uuid = kernel, name, uuid
        self.memory_mib, self.vcpus, self.append = memory_mib, vcpus, append
        self.serial, self.control, self.pidfile = serial, control, pidfile
        self.pit_reinjection, self.shutdown_timeout = pit_reinjection, shutdown_timeout

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


_VALUE_FLAGS = {
    "-kernel",
    "-name",
    "-uuid",
    "-m",
    "-smp",
    "-append",
    "-serial",
    "-control",
    "-pidfile",
    "-shutdown-timeout",
    "-exit-record",
}
_BOOL_FLAGS = {"-no-kvm-pit-reinjection"}


def parse_args(argv: Sequence[str], resolve_image: Callable[[str], str]) -> VmConfig:
    """Turn argv (without the program name) into a validated VmConfig.

    Raises UsageError with a message naming the flag at fault.
    """
    values: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            arg = arg[1:]  # accept --flag as qemu does
        if arg in _BOOL_FLAGS:
            flags.add(arg)
            i += 1
        elif arg in _VALUE_FLAGS:
            if i + 1 >= len(argv):
                raise UsageError(f"{arg} needs a value")
            values[arg] = argv[i + 1]
            i += 2
        else:
            raise UsageError(f"unknown option {argv[i]!r}")
    if "-kernel" not in values:
        raise UsageError("-kernel IMAGE is required")
    return VmConfig(
        kernel=resolve_image(values["-kernel"]),
        name=_parse_name(values.get("-name", "computed")),
        uuid=_parse_uuid(values.get("-uuid", NIL_UUID)),
        memory_mib=parse_memory(values.get("-m", "128")),
        vcpus=parse_smp(values.get("-smp", "1")),
        append=_parse_append(values.get("-append", "")),
        serial=_parse_serial(values.get("-serial", "none")),
        control=_parse_prefixed("-control", values.get("-control"), "unix:"),
        pidfile=values.get("-pidfile") or None,
        pit_reinjection="-no-kvm-pit-reinjection" not in flags,
        shutdown_timeout=_parse_timeout(values.get("-shutdown-timeout")),
        exit_record=values.get("-exit-record") or None,
    )


def parse_memory(text: str) -> int:
    """`-m 128`, `-m 128M`, `-m 2G` → MiB, within [MIN_MEMORY_MIB, MAX_MEMORY_MIB]."""
    digits, unit = text.strip(), 1
    if digits[-1:] in ("M", "m", "G", "g"):
        digits, unit = digits[:-1], 1024 if digits[-1] in "Gg" else 1
    if not digits.isascii() or not digits.isdigit():
        raise UsageError(f"-m {text!r}: expected a size in MiB such as 128, 128M or 2G")
    mib = int(digits) * unit
    if not MIN_MEMORY_MIB <= mib <= MAX_MEMORY_MIB:
        raise UsageError(f"-m {text!r}: memory must be {MIN_MEMORY_MIB}..{MAX_MEMORY_MIB} MiB")
    return mib


def parse_smp(text: str) -> int:
    """`-smp 2` or `-smp cpus=2` → vCPU count within [1, MAX_VCPUS]."""
    value = text.strip()
    if value.startswith("cpus="):
        value = value[5:]
    if not value.isascii() or not value.isdigit():
        raise UsageError(f"-smp {text!r}: expected a vCPU count")
    n = int(value)
    if not 1 <= n <= MAX_VCPUS:
        raise UsageError(f"-smp {text!r}: vCPU count must be 1..{MAX_VCPUS}")
    return n


def is_valid_name(text: str) -> bool:
    """1..NAME_MAX of [A-Za-z0-9._-], starting with a letter or digit."""
    return 0 < len(text) <= NAME_MAX and _NAME_CHARS.issuperset(text) and text[0].isalnum()


def is_valid_uuid(text: str) -> bool:
    """8-4-4-4-12 hex digits."""
    groups = text.split("-")
    return tuple(map(len, groups)) == _UUID_GROUPS and _HEX.issuperset("".join(groups))


def _parse_name(text: str) -> str:
    if not is_valid_name(text):
        raise UsageError(f"-name {text!r}: use 1..{NAME_MAX} letters, digits, '.', '_' or '-'")
    return text


def _parse_uuid(text: str) -> str:
    if not is_valid_uuid(text):
        raise UsageError(f"-uuid {text!r}: not a UUID (expected 8-4-4-4-12 hex digits)")
    return text.lower()


def _parse_append(text: str) -> str:
    if len(text.encode()) > CMDLINE_MAX or "\0" in text:
        raise UsageError(f"-append: command line longer than {CMDLINE_MAX} bytes")
    return text


def _parse_serial(text: str) -> str | None:
    if text == "none":
        return None
    if text == "stdio":
        return "-"
    return _parse_prefixed("-serial", text, "file:")


def _parse_prefixed(flag: str, text: str | None, prefix: str) -> str | None:
    if text is None:
        return None
    if not text.startswith(prefix) or len(text) == len(prefix):
        raise UsageError(f"{flag} {text!r}: expected {prefix}PATH")
    return text[len(prefix) :]


def _parse_timeout(text: str | None) -> float:
    if text is None:
        return DEFAULT_SHUTDOWN_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise UsageError(f"-shutdown-timeout {text!r}: expected seconds, 0..3600")
    return value
