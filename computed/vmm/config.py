"""The VMM's command line, in qemu-kvm's own syntax, parsed into a `VmConfig`.

Pure: no I/O except resolving `-kernel NAME` against the bundled images,
which the caller passes in as a function. Every qemu option computed-vmm
models is spoken as qemu speaks it, so `ps` on a computed host reads like `ps`
on a Nova host. An option that asks for something we do not model is refused
in one line naming it, never ignored; the few that ask for nothing we lack
(`-nodefaults`, `-display none`, `-rtc base=utc`) are accepted as no-ops.
docs/vmm.md has the table.

Here: `VmConfig`, `parse_args` and the options of one value each (-m, -name,
-netdev/-device virtio-net, -run-with...). Which options exist and which are
refused: qemu_options.py; the monitor and console chardevs: chardevs.py;
-smp and -cpu: cpu_model.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from computed.limits import (
    CMDLINE_MAX,
    MAX_MEMORY_MIB,
    MIB,
    MIN_MEMORY_MIB,
    NAME_MAX,
    is_valid_name,
    is_valid_uuid,
    mac_problem,
)
from computed.vmm.chardevs import attach_chardevs
from computed.vmm.cpu_model import CpuModel, SmpTopology, parse_cpu, parse_smp
from computed.vmm.errors import UsageError
from computed.vmm.qemu_options import (
    check_no_ops,
    check_platform,
    keyvals,
    refuse_unknown_keys,
    scan,
    split_devices,
)

DEFAULT_SHUTDOWN_TIMEOUT = 10.0
NIL_UUID = "00000000-0000-0000-0000-000000000000"

USAGE = """\
usage: computed-vmm -kernel IMAGE [-name NAME] [-uuid UUID] [-m MiB] [-append CMDLINE]
         [-smp N[,sockets=S][,cores=C][,threads=T][,maxcpus=N]]
         [-cpu host|max|Penryn[,+FLAG][,-FLAG][,FLAG=on|off]...[,enforce]]
         [-S] [-no-shutdown] [-pidfile PATH]
         [-chardev socket,id=ID,path=PATH,server=on,wait=off -mon chardev=ID,mode=control]
         [-chardev file,id=ID,path=PATH[,append=on] -device isa-serial,chardev=ID]
         [-serial file:PATH|stdio|null|none|chardev:ID]
         [-netdev tap,id=ID,ifname=TAP|fd=N[,vhost=on|off][,vhostdev=PATH|,vhostfd=M]
          -device virtio-net-pci|virtio-net-device|virtio-net,netdev=ID[,mac=MAC]]...
         [-machine [microvm][,accel=kvm]] [-enable-kvm] [-rtc base=utc] [-nodefaults]
         [-no-user-config] [-display none] [-vga none] [-nographic]
         [-global kvm-pit.lost_tick_policy=discard|delay]
         [-sandbox on|off] [-run-with user=UID:GID,chroot=DIR]
       computed-vmm's own: [-control unix:PATH] [-no-kvm-pit-reinjection]
         [-shutdown-timeout SECONDS] [-exit-record PATH] [-cgroup DIR]...

IMAGE is a path to an ELF64 guest image, or the name of a bundled guest.
-S            start with the vCPUs held ("prelaunch") until QMP `cont`
-no-shutdown  a guest power-off pauses the VM ("shutdown") instead of ending the VMM
-cgroup DIR   join cgroup DIR (our pid into DIR/cgroup.procs) first; once per v1 hierarchy
-sandbox on   once set up, pivot_root into the -run-with chroot DIR (the console, control
              socket, pidfile and exit record must be inside it), become UID:GID, drop
              every capability and set no_new_privs; needs root and -run-with
fd=N          a tap opened by whoever started us (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, 12-byte
              headers), instead of ifname= (which needs root)
Options qemu has and computed-vmm does not model are refused by name (docs/vmm.md)."""


class VmConfig:
    """One VM's settings. A plain slotted class, not a dataclass or NamedTuple:
    the VMM process pays for every import (dataclasses, typing) at each launch."""

    __slots__ = (
        "append",
        "cgroups",
        "chroot",
        "control",
        "control_fd",
        "cpu",
        "exit_record",
        "kernel",
        "memory_mib",
        "name",
        "nics",
        "no_shutdown",
        "pidfile",
        "pit_reinjection",
        "run_as",
        "sandbox",
        "serial",
        "shutdown_timeout",
        "sources",
        "start_paused",
        "topology",
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
        topology: SmpTopology | None = None,  # -smp; default one socket of `vcpus` cores
        cpu: CpuModel | None = None,  # -cpu; default host
        start_paused: bool = False,  # -S
        no_shutdown: bool = False,  # -no-shutdown
    ) -> None:
        self.nics = nics or []
        self.sandbox, self.run_as, self.chroot = sandbox, run_as, chroot
        self.cgroups = cgroups or []
        self.exit_record = exit_record
        self.kernel, self.name, self.uuid = kernel, name, uuid
        self.memory_mib, self.append = memory_mib, append
        self.topology = topology or SmpTopology(vcpus, cores=vcpus)
        self.vcpus = self.topology.cpus
        self.cpu = cpu or CpuModel()
        self.serial, self.control, self.pidfile = serial, control, pidfile
        self.control_fd: int | None = None  # the monitor socket handed in listening (fd=N)
        self.pit_reinjection, self.shutdown_timeout = pit_reinjection, shutdown_timeout
        self.start_paused, self.no_shutdown = start_paused, no_shutdown
        # The option each path came from, for messages: "-serial file:", "-chardev file,path=".
        self.sources = {"serial": "-serial file:", "control": "-control unix:"}

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


# --- the command line ---------------------------------------------------------


def parse_args(argv: Sequence[str], resolve_image: Callable[[str], str]) -> VmConfig:
    """Turn argv (without the program name) into a validated VmConfig.

    Raises UsageError with one line naming the option at fault.
    """
    once, repeated, switches = scan(argv)
    if "-kernel" not in once:
        raise UsageError("-kernel IMAGE is required")
    check_platform(once, repeated["-global"])
    uuid = _parse_uuid(once.get("-uuid", NIL_UUID))
    nic_devices, serial_devices = split_devices(repeated["-device"])
    config = VmConfig(
        nics=parse_nics(repeated["-netdev"], nic_devices, uuid),
        kernel=resolve_image(once["-kernel"]),
        name=_parse_name(once.get("-name", "computed")),
        uuid=uuid,
        memory_mib=parse_memory(once.get("-m", "128")),
        topology=parse_smp(once.get("-smp", "1")),
        cpu=parse_cpu(once.get("-cpu", "host")),
        append=_parse_append(once.get("-append", "")),
        pidfile=once.get("-pidfile") or None,
        pit_reinjection="-no-kvm-pit-reinjection" not in switches
        and "kvm-pit.lost_tick_policy=discard" not in repeated["-global"],
        shutdown_timeout=_parse_timeout(once.get("-shutdown-timeout")),
        exit_record=once.get("-exit-record") or None,
        sandbox=_parse_on_off("-sandbox", once.get("-sandbox", "off")),
        cgroups=[_parse_cgroup(text) for text in repeated["-cgroup"]],
        start_paused="-S" in switches,
        no_shutdown="-no-shutdown" in switches,
    )
    attach_chardevs(config, once, repeated, switches, serial_devices)
    if "-run-with" in once:
        config.run_as, config.chroot = parse_run_with(once["-run-with"])
    check_sandbox(config)
    return config


# --- NICs: -netdev tap + -device virtio-net -----------------------------------------

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


def parse_mac(text: str) -> bytes:
    problem = mac_problem(text)
    if problem is not None:
        raise UsageError(f"mac={text!r}: {problem}")
    return bytes(int(p, 16) for p in text.split(":"))


def default_mac(uuid: str, index: int) -> bytes:
    """52:54:00 (QEMU's locally administered prefix) + bytes from the uuid and NIC index."""
    tail = bytes.fromhex(uuid.replace("-", "")[-6:])
    return b"\x52\x54\x00" + bytes((tail[0], tail[1], (tail[2] + index) & 0xFF))


_TAP_KEYS = {"type", "id", "ifname", "fd", "vhost", "vhostdev", "vhostfd"}
_TAP_NO_OPS = {  # what qemu does unless told otherwise, and we never do
    "script": (("no",), "the VMM runs no scripts: its supervisor sets the tap up"),
    "downscript": (("no",), "the VMM runs no scripts: its supervisor sets the tap up"),
    "vnet_hdr": (("on",), "the tap always carries virtio-net headers"),
}


def _parse_netdev(text: str, handed: set[int]) -> dict[str, str]:
    options = keyvals("-netdev", text, implied="type")
    if options["type"] != "tap":
        raise UsageError(f"-netdev {options['type']}: not supported: only tap is modelled")
    check_no_ops("-netdev tap", {k: options.pop(k) for k in list(options) if k in _TAP_NO_OPS},
                  _TAP_NO_OPS)  # fmt: skip
    refuse_unknown_keys("-netdev", options, _TAP_KEYS)
    if "id" not in options or ("ifname" in options) == ("fd" in options):
        raise UsageError(f"-netdev {text!r}: id= and either fd= or ifname= are required")
    if "ifname" in options and (not 0 < len(options["ifname"]) < 16 or "/" in options["ifname"]):
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
    return options


def parse_nics(netdevs: list[str], devices: list[str], uuid: str) -> list[NicConfig]:
    """Pair each `-device virtio-net[-pci|-device],netdev=ID` with its `-netdev tap,id=ID,...`."""
    backends: dict[str, dict[str, str]] = {}
    handed: set[int] = set()
    for text in netdevs:
        options = _parse_netdev(text, handed)
        if options["id"] in backends:
            raise UsageError(f"-netdev {text!r}: id {options['id']!r} used twice")
        backends[options["id"]] = options
    if len(devices) > MAX_NICS:
        raise UsageError(f"-device: at most {MAX_NICS} network interfaces")
    nics: list[NicConfig] = []
    used: set[str] = set()
    for text in devices:
        options = keyvals("-device", text, implied="driver")
        for key in ("bus", "addr"):
            if key in options:
                raise UsageError(
                    f"-device {options['driver']}: {key}=: not supported: "
                    "there is no PCI bus (virtio devices sit on virtio-mmio)"
                )
        refuse_unknown_keys("-device", options, {"driver", "netdev", "mac", "id"})
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


# --- memory -------------------------------------------------------------------------


def parse_memory(text: str) -> int:
    """`-m 128`, `-m 128M`, `-m 2G`, `-m size=2G` → MiB, within [MIN_MEMORY_MIB, MAX_MEMORY_MIB]."""
    digits, unit = text.strip(), 1
    if "=" in digits:
        options = keyvals("-m", digits)
        refuse_unknown_keys("-m", options, {"size"})  # slots=, maxmem=: no memory hot-plug
        digits = options["size"]
    if digits[-1:] in ("M", "m", "G", "g"):
        digits, unit = digits[:-1], 1024 if digits[-1] in "Gg" else 1
    if not digits.isascii() or not digits.isdigit():
        raise UsageError(f"-m {text!r}: expected a size in MiB such as 128, 128M or 2G")
    mib = int(digits) * unit
    if not MIN_MEMORY_MIB <= mib <= MAX_MEMORY_MIB:
        raise UsageError(f"-m {text!r}: memory must be {MIN_MEMORY_MIB}..{MAX_MEMORY_MIB} MiB")
    return mib


# --- the rest ---------------------------------------------------------------------------


def _parse_name(text: str) -> str:
    """`-name NAME` or qemu's `-name guest=NAME[,debug-threads=on]` (our vCPU threads are
    always named `CPU n/KVM`, so debug-threads=on asks for nothing more)."""
    options = keyvals("-name", text, implied="guest")
    refuse_unknown_keys("-name", options, {"guest", "debug-threads"})
    if options.get("debug-threads", "on") != "on":
        raise UsageError("-name debug-threads=off: not supported: vCPU threads are always named")
    name = options["guest"]
    if not is_valid_name(name):
        raise UsageError(f"-name {text!r}: use 1..{NAME_MAX} letters, digits, '.', '_' or '-'")
    return name


def _parse_uuid(text: str) -> str:
    if not is_valid_uuid(text):
        raise UsageError(f"-uuid {text!r}: not a UUID (expected 8-4-4-4-12 hex digits)")
    return text.lower()


def _parse_append(text: str) -> str:
    if len(text.encode()) > CMDLINE_MAX or "\0" in text:
        raise UsageError(f"-append: command line longer than {CMDLINE_MAX} bytes")
    return text


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
    refuse_unknown_keys("-run-with", options, {"user", "chroot"})
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
        config.sources["serial"]: config.serial if config.serial != "-" else None,
        config.sources["control"]: config.control,
        "-pidfile ": config.pidfile,
        "-exit-record ": config.exit_record,
    }
    for flag, path in files.items():
        if path is not None and not _is_inside(path, config.chroot):
            raise UsageError(f"{flag}{path}: must be inside the -run-with chroot {config.chroot}")


def _is_inside(path: str, directory: str) -> bool:
    return path.startswith("/") and os.path.normpath(path).startswith(directory.rstrip("/") + "/")
