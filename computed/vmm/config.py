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
                    [-netdev tap,id=ID,ifname=TAP[,vhost=on|off][,vhostdev=PATH]
                     -device virtio-net,netdev=ID[,mac=52:54:00:XX:XX:XX]]...

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
        "nics",
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
        nics: list[NicConfig] | None = None,
    ) -> None:
        self.nics = nics or []
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
_REPEATED_FLAGS = {"-netdev", "-device"}
MAX_NICS = 2  # COMPUTED_MAX_NICS in the guest ABI


DEFAULT_VHOST_DEVICE = "/dev/vhost-net"


class NicConfig:
    """One virtio-net NIC: `-netdev tap,id=ID,ifname=TAP,vhost=on` + `-device virtio-net,...`.

    `vhost_device` is where the kernel's vhost-net is looked for (qemu's
    `vhostdev=`); without it the VMM's userspace vhost worker serves the queues.
    """

    __slots__ = ("ifname", "mac", "vhost", "vhost_device")

    def __init__(
        self, ifname: str, mac: bytes, vhost: bool, vhost_device: str = DEFAULT_VHOST_DEVICE
    ) -> None:
        self.ifname, self.mac, self.vhost, self.vhost_device = ifname, mac, vhost, vhost_device


def parse_args(argv: Sequence[str], resolve_image: Callable[[str], str]) -> VmConfig:
    """Turn argv (without the program name) into a validated VmConfig.

    Raises UsageError with a message naming the flag at fault.
    """
    values: dict[str, str] = {}
    repeated: dict[str, list[str]] = {"-netdev": [], "-device": []}
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            arg = arg[1:]  # accept --flag as qemu does
        if arg in _BOOL_FLAGS:
            flags.add(arg)
            i += 1
        elif arg in _VALUE_FLAGS or arg in _REPEATED_FLAGS:
            if i + 1 >= len(argv):
                raise UsageError(f"{arg} needs a value")
            if arg in _REPEATED_FLAGS:
                repeated[arg].append(argv[i + 1])
            else:
                values[arg] = argv[i + 1]
            i += 2
        else:
            raise UsageError(f"unknown option {argv[i]!r}")
    if "-kernel" not in values:
        raise UsageError("-kernel IMAGE is required")
    uuid = _parse_uuid(values.get("-uuid", NIL_UUID))
    return VmConfig(
        nics=parse_nics(repeated["-netdev"], repeated["-device"], uuid),
        kernel=resolve_image(values["-kernel"]),
        name=_parse_name(values.get("-name", "computed")),
        uuid=uuid,
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


def _options(flag: str, text: str, kind: str) -> dict[str, str]:
    """`kind,key=value,...` → {key: value}; UsageError naming the flag otherwise."""
    head, *rest = text.split(",")
    if head != kind:
        raise UsageError(f"{flag} {text!r}: only {kind} is supported")
    options: dict[str, str] = {}
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or not value or key in options:
            raise UsageError(f"{flag} {text!r}: expected {kind},key=value,...")
        options[key] = value
    return options


def _unknown(flag: str, options: dict[str, str], known: set[str]) -> None:
    extra = sorted(set(options) - known)
    if extra:
        raise UsageError(f"{flag}: unknown option {extra[0]!r}")


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and _HEX.issuperset(p) for p in parts):
        raise UsageError(f"mac={text!r}: expected six hex bytes like 52:54:00:12:34:56")
    mac = bytes(int(p, 16) for p in parts)
    if mac[0] & 1:
        raise UsageError(f"mac={text!r}: a multicast address cannot be a NIC's")
    return mac


def default_mac(uuid: str, index: int) -> bytes:
    """52:54:00 (QEMU's locally administered prefix) + bytes from the uuid and NIC index."""
    tail = bytes.fromhex(uuid.replace("-", "")[-6:])
    return b"\x52\x54\x00" + bytes((tail[0], tail[1], (tail[2] + index) & 0xFF))


def parse_nics(netdevs: list[str], devices: list[str], uuid: str) -> list[NicConfig]:
    """Pair each `-device virtio-net,netdev=ID` with its `-netdev tap,id=ID,...`."""
    backends: dict[str, dict[str, str]] = {}
    for text in netdevs:
        options = _options("-netdev", text, "tap")
        _unknown("-netdev", options, {"id", "ifname", "vhost", "vhostdev"})
        if "id" not in options or "ifname" not in options:
            raise UsageError(f"-netdev {text!r}: id= and ifname= are required")
        if not 0 < len(options["ifname"]) < 16 or "/" in options["ifname"]:
            raise UsageError(f"-netdev {text!r}: ifname must be 1..15 characters, no '/'")
        if options.get("vhost", "off") not in ("on", "off"):
            raise UsageError(f"-netdev {text!r}: vhost=on or vhost=off")
        if "vhostdev" in options:
            if options.get("vhost") != "on":
                raise UsageError(f"-netdev {text!r}: vhostdev= needs vhost=on")
            if not options["vhostdev"].startswith("/"):
                raise UsageError(f"-netdev {text!r}: vhostdev= must be an absolute path")
        if options["id"] in backends:
            raise UsageError(f"-netdev {text!r}: id {options['id']!r} used twice")
        backends[options["id"]] = options
    if len(devices) > MAX_NICS:
        raise UsageError(f"-device: at most {MAX_NICS} network interfaces")
    nics: list[NicConfig] = []
    used: set[str] = set()
    for text in devices:
        options = _options("-device", text, "virtio-net")
        _unknown("-device", options, {"netdev", "mac"})
        backend = backends.get(options.get("netdev", ""))
        if backend is None:
            raise UsageError(f"-device {text!r}: netdev= must name a -netdev id")
        if backend["id"] in used:
            raise UsageError(f"-device {text!r}: netdev {backend['id']!r} used twice")
        used.add(backend["id"])
        mac = parse_mac(options["mac"]) if "mac" in options else default_mac(uuid, len(nics))
        vhost = backend.get("vhost", "off") == "on"
        device = backend.get("vhostdev", DEFAULT_VHOST_DEVICE)
        nics.append(NicConfig(backend["ifname"], mac, vhost, device))
    if set(backends) - used:
        raise UsageError(f"-netdev id {sorted(set(backends) - used)[0]!r} has no -device")
    return nics


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
