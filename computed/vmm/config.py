"""The VMM's command line, modelled on qemu-kvm, parsed into a `VmConfig`.

Pure: no I/O except resolving `-kernel NAME` against the bundled images,
which the caller passes in as a function. Keeping the flags qemu-like means
`ps` on a computed host reads like `ps` on a Nova host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from computed.limits import (
    CMDLINE_MAX,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MIB,
    MIN_MEMORY_MIB,
    NAME_MAX,
    is_valid_name,
    is_valid_uuid,
    mac_problem,
)
from computed.vmm.errors import UsageError

DEFAULT_SHUTDOWN_TIMEOUT = 10.0
NIL_UUID = "00000000-0000-0000-0000-000000000000"

USAGE = """\
usage: computed-vmm -kernel IMAGE [-name NAME] [-uuid UUID] [-m MiB] [-smp N]
                    [-append CMDLINE] [-serial file:PATH|stdio|none]
                    [-control unix:PATH] [-pidfile PATH]
                    [-no-kvm-pit-reinjection] [-shutdown-timeout SECONDS]
                    [-exit-record PATH] [-cgroup DIR]...
                    [-sandbox on|off] [-run-with user=UID:GID,chroot=DIR]
                    [-netdev tap,id=ID,ifname=TAP|fd=N[,vhost=on|off][,vhostdev=PATH|,vhostfd=M]
                     -device virtio-net,netdev=ID[,mac=52:54:00:XX:XX:XX]]...

IMAGE is a path to an ELF64 guest image, or the name of a bundled guest.
-cgroup DIR   join cgroup DIR (our pid into DIR/cgroup.procs) first; once per v1 hierarchy
-sandbox on   once set up, pivot_root into the -run-with chroot DIR (the -serial, -control,
              -pidfile and -exit-record files must be inside it), become UID:GID, drop
              every capability and set no_new_privs; needs root and -run-with
fd=N          a tap opened by whoever started us (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, 12-byte
              headers), instead of ifname= (which needs root)"""


class VmConfig:
    """One VM's settings. A plain slotted class, not a dataclass or NamedTuple:
    the VMM process pays for every import (dataclasses, typing) at each launch."""

    __slots__ = (
        "append",
        "cgroups",
        "chroot",
        "control",
        "exit_record",
        "kernel",
        "memory_mib",
        "name",
        "nics",
        "pidfile",
        "pit_reinjection",
        "run_as",
        "sandbox",
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
        sandbox: bool = False,  # confine ourselves once set up (confine.py)
        run_as: tuple[int, int] | None = None,  # -run-with user=UID:GID
        chroot: str | None = None,  # -run-with chroot=DIR: the jail
        cgroups: list[str] | None = None,  # cgroup directories to join before anything else
    ) -> None:
        self.nics = nics or []
        self.sandbox, self.run_as, self.chroot = sandbox, run_as, chroot
        self.cgroups = cgroups or []
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
    "-sandbox",
    "-run-with",
}
_BOOL_FLAGS = {"-no-kvm-pit-reinjection"}
_REPEATED_FLAGS = {"-netdev", "-device", "-cgroup"}
MAX_NICS = 2  # COMPUTED_MAX_NICS in the guest ABI


DEFAULT_VHOST_DEVICE = "/dev/vhost-net"


class NicConfig:
    """One virtio-net NIC: `-netdev tap,id=ID,ifname=TAP|fd=N,vhost=on` + `-device virtio-net,...`.

    The tap is either opened by name (`ifname=`, needs root) or handed in open
    (`fd=N`, as libvirt hands qemu its taps); for a handed-in tap `ifname` is
    None until the VMM has asked the fd for its name. `vhost_device` is where
    the kernel's vhost-net is looked for (qemu's `vhostdev=`), or `vhost_fd` is
    /dev/vhost-net already open (`vhostfd=M`); without either the VMM's
    userspace vhost worker serves the queues.
    """

    __slots__ = ("ifname", "mac", "tap_fd", "vhost", "vhost_device", "vhost_fd")

    def __init__(
        self,
        ifname: str | None,
        mac: bytes,
        vhost: bool,
        vhost_device: str = DEFAULT_VHOST_DEVICE,
        tap_fd: int | None = None,
        vhost_fd: int | None = None,
    ) -> None:
        self.ifname, self.mac, self.vhost, self.vhost_device = ifname, mac, vhost, vhost_device
        self.tap_fd, self.vhost_fd = tap_fd, vhost_fd


def parse_args(argv: Sequence[str], resolve_image: Callable[[str], str]) -> VmConfig:
    """Turn argv (without the program name) into a validated VmConfig.

    Raises UsageError with a message naming the flag at fault.
    """
    values: dict[str, str] = {}
    repeated: dict[str, list[str]] = {flag: [] for flag in _REPEATED_FLAGS}
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
    config = VmConfig(
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
        sandbox=_parse_on_off("-sandbox", values.get("-sandbox", "off")),
        cgroups=[_parse_cgroup(text) for text in repeated["-cgroup"]],
    )
    if "-run-with" in values:
        config.run_as, config.chroot = parse_run_with(values["-run-with"])
    check_sandbox(config)
    return config


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
    problem = mac_problem(text)
    if problem is not None:
        raise UsageError(f"mac={text!r}: {problem}")
    return bytes(int(p, 16) for p in text.split(":"))


def default_mac(uuid: str, index: int) -> bytes:
    """52:54:00 (QEMU's locally administered prefix) + bytes from the uuid and NIC index."""
    tail = bytes.fromhex(uuid.replace("-", "")[-6:])
    return b"\x52\x54\x00" + bytes((tail[0], tail[1], (tail[2] + index) & 0xFF))


def parse_nics(netdevs: list[str], devices: list[str], uuid: str) -> list[NicConfig]:
    """Pair each `-device virtio-net,netdev=ID` with its `-netdev tap,id=ID,...`."""
    backends: dict[str, dict[str, str]] = {}
    handed: set[int] = set()
    for text in netdevs:
        options = _options("-netdev", text, "tap")
        _unknown("-netdev", options, {"id", "ifname", "fd", "vhost", "vhostdev", "vhostfd"})
        if "id" not in options or ("ifname" in options) == ("fd" in options):
            raise UsageError(f"-netdev {text!r}: id= and either fd= or ifname= are required")
        if "ifname" in options and (
            not 0 < len(options["ifname"]) < 16 or "/" in options["ifname"]
        ):
            raise UsageError(f"-netdev {text!r}: ifname must be 1..15 characters, no '/'")
        if options.get("vhost", "off") not in ("on", "off"):
            raise UsageError(f"-netdev {text!r}: vhost=on or vhost=off")
        for key in ("vhostdev", "vhostfd"):
            if key in options and options.get("vhost") != "on":
                raise UsageError(f"-netdev {text!r}: {key}= needs vhost=on")
        if "vhostdev" in options and "vhostfd" in options:
            raise UsageError(f"-netdev {text!r}: vhostdev= or vhostfd=, not both")
        if "vhostdev" in options and not options["vhostdev"].startswith("/"):
            raise UsageError(f"-netdev {text!r}: vhostdev= must be an absolute path")
        for key in ("fd", "vhostfd"):
            if key in options:
                fd = _parse_fd(f"-netdev {text!r}: {key}=", options[key])
                if fd in handed:
                    raise UsageError(f"-netdev {text!r}: fd {fd} handed in twice")
                handed.add(fd)
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
        tap_fd, vhost_fd = (int(backend[k]) if k in backend else None for k in ("fd", "vhostfd"))
        nics.append(NicConfig(backend.get("ifname"), mac, vhost, device, tap_fd, vhost_fd))
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


def _parse_fd(what: str, text: str) -> int:
    """A file descriptor handed in: a number past stdin, stdout and stderr."""
    if not text.isascii() or not text.isdigit() or not 3 <= int(text) < 1 << 20:
        raise UsageError(f"{what}{text}: expected an open file descriptor number, 3 or more")
    return int(text)


def _parse_on_off(flag: str, text: str) -> bool:
    if text not in ("on", "off"):
        raise UsageError(f"{flag} {text!r}: expected on or off")
    return text == "on"


def _parse_cgroup(text: str) -> str:
    if not text.startswith("/") or "\0" in text:
        raise UsageError(f"-cgroup {text!r}: expected an absolute cgroup directory")
    return text


def parse_run_with(text: str) -> tuple[tuple[int, int] | None, str | None]:
    """qemu's `-run-with user=UID:GID,chroot=DIR` → ((uid, gid), DIR).

    Only numeric ids: there is no user database to look a name up in (the
    jail holds none, and the agent allocates ids, not names)."""
    options: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if not eq or not value or key in options:
            raise UsageError(f"-run-with {text!r}: expected user=UID:GID,chroot=DIR")
        options[key] = value
    _unknown("-run-with", options, {"user", "chroot"})
    run_as = None
    if "user" in options:
        uid, colon, gid = options["user"].partition(":")
        if not colon or not all(v.isascii() and v.isdigit() for v in (uid, gid)):
            raise UsageError(f"-run-with user={options['user']}: expected numeric UID:GID")
        run_as = (int(uid), int(gid))
        if 0 in run_as or max(run_as) >= (1 << 32) - 1:
            raise UsageError(f"-run-with user={options['user']}: not root, below 4294967295")
    chroot = options.get("chroot")
    if chroot is not None and (not chroot.startswith("/") or os.path.normpath(chroot) == "/"):
        raise UsageError(f"-run-with chroot={chroot}: expected an absolute directory, not /")
    return run_as, None if chroot is None else os.path.normpath(chroot)


def check_sandbox(config: VmConfig) -> None:
    """-sandbox on and -run-with come together, and the files live inside the jail:
    after the drop nothing outside it is reachable, so nothing may be expected there."""
    if not config.sandbox:
        if config.run_as is not None or config.chroot is not None:
            raise UsageError("-run-with needs -sandbox on (the VMM confines itself as a whole)")
        return
    if config.run_as is None or config.chroot is None:
        raise UsageError("-sandbox on needs -run-with user=UID:GID,chroot=DIR")
    files = {
        "-serial file:": config.serial if config.serial != "-" else None,
        "-control unix:": config.control,
        "-pidfile ": config.pidfile,
        "-exit-record ": config.exit_record,
    }
    for flag, path in files.items():
        if path is not None and not _is_inside(path, config.chroot):
            raise UsageError(f"{flag}{path}: must be inside the -run-with chroot {config.chroot}")


def _is_inside(path: str, directory: str) -> bool:
    return path.startswith("/") and os.path.normpath(path).startswith(directory.rstrip("/") + "/")
