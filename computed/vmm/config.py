"""The VMM's command line, in qemu-kvm's own syntax, parsed into a `VmConfig`.

Pure: no I/O except resolving `-kernel NAME` against the bundled images,
which the caller passes in as a function. Every qemu option computed-vmm
models is spoken as qemu speaks it, so `ps` on a computed host reads like `ps`
on a Nova host. An option that asks for something we do not model is refused
in one line naming it, never ignored; the few that ask for nothing we lack
(`-nodefaults`, `-display none`, `-rtc base=utc`) are accepted as no-ops.
docs/vmm.md has the table.
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
        self.pit_reinjection, self.shutdown_timeout = pit_reinjection, shutdown_timeout
        self.start_paused, self.no_shutdown = start_paused, no_shutdown
        # The option each path came from, for messages: "-serial file:", "-chardev file,path=".
        self.sources = {"serial": "-serial file:", "control": "-control unix:"}

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


# --- the options --------------------------------------------------------------

# Options with a value, given once (a later one replaces an earlier one, as in qemu)...
_ONCE = frozenset(
    (
        "-kernel", "-name", "-uuid", "-m", "-smp", "-cpu", "-append", "-pidfile",
        "-machine", "-accel", "-rtc", "-display", "-vga", "-qmp", "-sandbox", "-run-with",
        "-control", "-shutdown-timeout", "-exit-record",
    )
)  # fmt: skip
# ...or repeatable, and options without a value.
_REPEATED = frozenset(("-netdev", "-device", "-chardev", "-mon", "-serial", "-global", "-cgroup"))
_SWITCHES = frozenset(
    (
        "-S", "-no-shutdown", "-nodefaults", "-no-user-config", "-enable-kvm", "-nographic",
        "-no-hpet", "-no-acpi", "-no-kvm-pit-reinjection",
    )
)  # fmt: skip
_ALIASES = {"-M": "-machine"}

# qemu options that ask for something computed-vmm does not model: refused by name.
_NOT_MODELLED = (
    (("-vnc", "-spice", "-sdl", "-curses", "-full-screen", "-k", "-g"),
     "no display or keyboard is modelled (the console is the serial port)"),
    (("-usb", "-usbdevice"), "no USB is modelled"),
    (("-soundhw", "-audio", "-audiodev"), "no sound device is modelled"),
    (("-drive", "-blockdev", "-hda", "-hdb", "-hdc", "-hdd", "-cdrom", "-fda", "-fdb", "-sd",
      "-mtdblock", "-pflash", "-snapshot", "-virtfs", "-fsdev"), "no disks are modelled yet"),
    (("-bios", "-boot", "-option-rom", "-L"), "no firmware: the guest boots from -kernel"),
    (("-initrd", "-dtb"), "a guest image is one ELF kernel"),
    (("-smbios", "-acpitable"), "no firmware tables (SMBIOS, ACPI) are modelled"),
    (("-monitor",), "only a QMP monitor is modelled (-mon mode=control, -qmp)"),
    (("-daemonize",), "the VMM never forks: its supervisor starts it in a session of its own"),
    (("-incoming", "-loadvm"), "no migration or snapshots are modelled"),
    (("-numa", "-mem-path", "-mem-prealloc", "-object"), "guest RAM is one anonymous mapping"),
    (("-net", "-nic"), "use -netdev tap with -device virtio-net"),
    (("-no-reboot",), "a guest reset always reboots in place"),
    (("-action",), "a guest power-off ends the VMM, or pauses it with -no-shutdown"),
    (("-watchdog", "-watchdog-action"), "no watchdog is modelled"),
    (("-gdb", "-s"), "no debugger stub is modelled"),
    (("-parallel",), "no parallel port is modelled"),
    (("-balloon",), "no balloon device is modelled"),
)  # fmt: skip
# -device drivers we refuse, by name prefix; anything else gets the last reason.
_DEVICES_NOT_MODELLED = (
    (("usb-", "piix3-usb", "piix4-usb", "ich9-usb", "qemu-xhci", "nec-usb-xhci", "pci-ohci"),
     "no USB is modelled"),
    (("virtio-balloon",), "no balloon device is modelled"),
    (("ide-", "virtio-blk", "scsi-", "virtio-scsi", "nvme", "floppy", "ahci", "megasas", "lsi"),
     "no disks are modelled yet"),
    (("VGA", "cirrus-vga", "qxl", "virtio-gpu", "virtio-vga", "bochs-display", "ramfb",
      "secondary-vga", "vmware-svga"), "no display is modelled"),
    (("e1000", "rtl8139", "vmxnet3", "ne2k", "pcnet", "i825"), "the only NIC is virtio-net"),
    (("intel-hda", "hda-", "ac97", "AC97", "sb16", "ES1370"), "no sound device is modelled"),
    (("i6300esb", "ib700"), "no watchdog is modelled"),
    (("virtio-serial", "virtserialport", "virtconsole", "pci-serial"),
     "the only serial port is isa-serial (COM1)"),
    (("",), "computed-vmm's devices are isa-serial and virtio-net"),
)  # fmt: skip
_NIC_DRIVERS = ("virtio-net-pci", "virtio-net-device", "virtio-net")  # all virtio-mmio here

# Option keys that are fine when they ask for what we are anyway: key -> (values, why no other).
_MACHINE_KEYS = {
    "accel": (("kvm",), "computed-vmm runs guests on KVM only"),
    "usb": (("off",), "no USB is modelled"),
    "hpet": (("off",), "no HPET is modelled"),
    "acpi": (("off",), "no ACPI is modelled"),
    "vmport": (("off",), "no VMware I/O port is modelled"),
    "rtc": (("off",), "no RTC is modelled"),
    "kernel-irqchip": (("on",), "the irqchip is always KVM's in-kernel one"),
    "pic": (("on",), "the PIC is always KVM's in-kernel one"),
    "pit": (("on",), "the PIT is always KVM's in-kernel one"),
    "isa-serial": (("on",), "COM1 is always there"),
}
_RTC_KEYS = {  # no RTC is modelled: only what asks for nothing of one
    "base": (("utc",), "no RTC is modelled (the guest reads no wall clock)"),
    "clock": (("host",), "no RTC is modelled"),
    "driftfix": (("none", "slew"), "no RTC is modelled"),
}
MACHINE_TYPES = ("microvm",)
_MACHINE_REFUSAL = (
    "computed-vmm's machine is microvm-like (virtio-mmio, in-kernel PIC, IOAPIC and PIT, "
    "COM1; no PCI, ACPI or firmware): use -machine microvm or name no type"
)


def parse_args(argv: Sequence[str], resolve_image: Callable[[str], str]) -> VmConfig:
    """Turn argv (without the program name) into a validated VmConfig.

    Raises UsageError with one line naming the option at fault.
    """
    once, repeated, switches = _scan(argv)
    if "-kernel" not in once:
        raise UsageError("-kernel IMAGE is required")
    _check_platform(once, repeated["-global"])
    uuid = _parse_uuid(once.get("-uuid", NIL_UUID))
    nic_devices, serial_devices = _split_devices(repeated["-device"])
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
    _attach_chardevs(config, once, repeated, switches, serial_devices)
    if "-run-with" in once:
        config.run_as, config.chroot = parse_run_with(once["-run-with"])
    check_sandbox(config)
    return config


def _scan(argv: Sequence[str]) -> tuple[dict[str, str], dict[str, list[str]], set[str]]:
    """argv → (options given once, repeated options, switches); refuses what we lack."""
    once: dict[str, str] = {}
    repeated: dict[str, list[str]] = {option: [] for option in _REPEATED}
    switches: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        option = arg[1:] if arg.startswith("--") else arg  # qemu takes --flag too
        option = _ALIASES.get(option, option)
        if option in _SWITCHES:
            switches.add(option)
            i += 1
            continue
        if option not in _ONCE and option not in _REPEATED:
            raise UsageError(_refusal(arg, option))
        if i + 1 >= len(argv):
            raise UsageError(f"{option} needs a value")
        if option in _REPEATED:
            repeated[option].append(argv[i + 1])
        else:
            once[option] = argv[i + 1]
        i += 2
    return once, repeated, switches


def _refusal(arg: str, option: str) -> str:
    if not arg.startswith("-"):
        return f"{arg}: not an option (qemu would take it as a disk image; no disks are modelled)"
    for options, reason in _NOT_MODELLED:
        if option in options:
            return f"{option}: not supported: {reason}"
    return f"{arg}: unknown option"


def _check_platform(once: dict[str, str], globals_: list[str]) -> None:
    """The options that name the platform: accepted where they ask for what we are."""
    if "-machine" in once:
        text = once["-machine"]
        options = _keyvals("-machine", text, implied="type")
        machine = options.pop("type", "microvm")
        if machine not in MACHINE_TYPES:
            raise UsageError(f"-machine {machine}: not supported: {_MACHINE_REFUSAL}")
        _check_no_ops("-machine", options, _MACHINE_KEYS)
    if "-accel" in once:
        options = _keyvals("-accel", once["-accel"], implied="accel")
        _check_no_ops("-accel", options, _MACHINE_KEYS)
    if "-rtc" in once:
        _check_no_ops("-rtc", _keyvals("-rtc", once["-rtc"]), _RTC_KEYS)
    for option in ("-display", "-vga"):
        if once.get(option, "none") != "none":
            raise UsageError(f"{option} {once[option]}: not supported: no display is modelled")
    for text in globals_:
        if text not in ("kvm-pit.lost_tick_policy=discard", "kvm-pit.lost_tick_policy=delay"):
            raise UsageError(
                f"-global {text}: not supported: the one device property modelled is "
                "kvm-pit.lost_tick_policy=discard|delay"
            )


def _check_no_ops(
    flag: str, options: dict[str, str], table: dict[str, tuple[tuple[str, ...], str]]
) -> None:
    """Each key must ask for what we are anyway (`table`: key → (such values, why))."""
    for key, value in options.items():
        if key not in table:
            raise UsageError(f"{flag} {key}={value}: not supported")
        values, reason = table[key]
        if value not in values:
            raise UsageError(f"{flag} {key}={value}: not supported: {reason}")


def _keyvals(
    flag: str, text: str, implied: str | None = None, booleans: Sequence[str] = ()
) -> dict[str, str]:
    """qemu's `[value,]key=value,...` → {key: value}. The first item may omit its key
    (`implied`); a boolean may be written bare (`server` = server=on, `nowait` = wait=off,
    qemu's short form); `,,` is a literal comma."""
    options: dict[str, str] = {}
    items = text.replace(",,", "\0").split(",")
    for n, item in enumerate(items):
        key, eq, value = item.replace("\0", ",").partition("=")
        if not eq:
            if n == 0 and implied is not None:
                key, value = implied, key
            elif key in booleans:
                value = "on"
            elif key[:2] == "no" and key[2:] in booleans:
                key, value = key[2:], "off"
        if not key or not value or key in options:
            raise UsageError(f"{flag} {text!r}: expected key=value,... (each key once)")
        options[key] = value
    return options


def _unknown(flag: str, options: dict[str, str], known: set[str]) -> None:
    extra = sorted(set(options) - known)
    if extra:
        raise UsageError(f"{flag}: unknown option {extra[0]!r}")


# --- chardevs: the control socket and the console ------------------------------

_CHARDEV_KEYS = {
    "socket": {"id", "path", "server", "wait"},
    "file": {"id", "path", "append"},
    "stdio": {"id"},
    "null": {"id"},
}
_SOCKET_BOOLEANS = ("server", "wait")


class _Chardevs:
    """`-chardev` definitions by id; each is used by exactly one -mon, -serial or isa-serial
    (an unused one would be a socket or file nothing serves: refused)."""

    def __init__(self, texts: list[str]) -> None:
        self.defs: dict[str, tuple[str, dict[str, str]]] = {}
        self.used: set[str] = set()
        for text in texts:
            options = _keyvals("-chardev", text, implied="backend", booleans=_SOCKET_BOOLEANS)
            backend = options.pop("backend")
            if backend not in _CHARDEV_KEYS:
                raise UsageError(
                    f"-chardev {backend}: not supported: the chardevs modelled are socket "
                    "(a QMP monitor), file, stdio and null (a console)"
                )
            if backend in ("socket", "file") and "path" not in options:
                raise UsageError(f"-chardev {text}: path= is required (unix sockets, files)")
            _unknown(f"-chardev {backend}", options, _CHARDEV_KEYS[backend])
            if "id" not in options or options["id"] in self.defs:
                raise UsageError(f"-chardev {text}: each chardev needs an id= of its own")
            self.defs[options["id"]] = (backend, options)

    def take(self, flag: str, chardev_id: str) -> tuple[str, dict[str, str]]:
        if chardev_id not in self.defs:
            raise UsageError(f"{flag}: chardev {chardev_id!r}: no -chardev has that id")
        if chardev_id in self.used:
            raise UsageError(f"{flag}: chardev {chardev_id!r} is already in use")
        self.used.add(chardev_id)
        return self.defs[chardev_id]

    def check_all_used(self) -> None:
        for chardev_id in self.defs:
            if chardev_id not in self.used:
                raise UsageError(f"-chardev id {chardev_id!r}: nothing uses it")


def _attach_chardevs(
    config: VmConfig,
    once: dict[str, str],
    repeated: dict[str, list[str]],
    switches: set[str],
    serial_devices: list[str],
) -> None:
    """Set the control socket (-mon/-qmp/-control) and the console (-serial/isa-serial)."""
    chardevs = _Chardevs(repeated["-chardev"])
    monitors: list[tuple[str, str]] = []  # (source, path)
    for text in repeated["-mon"]:
        options = _keyvals("-mon", text, implied="chardev")
        _unknown("-mon", options, {"chardev", "mode", "id", "pretty"})
        if options.get("mode", "readline") != "control" or options.get("pretty", "off") != "off":
            raise UsageError(f"-mon {text}: not supported: only QMP is modelled (mode=control)")
        backend, chardev = chardevs.take("-mon", options.get("chardev", ""))
        if backend != "socket":
            raise UsageError(f"-mon {text}: the monitor's chardev must be a socket")
        monitors.append(("-chardev socket,path=", _socket_path("-chardev", chardev)))
    if "-qmp" in once:
        monitors.append(("-qmp unix:", _parse_qmp(once["-qmp"])))
    if "-control" in once:
        monitors.append(("-control unix:", _parse_prefixed("-control", once["-control"], "unix:")))
    if len(monitors) > 1:
        raise UsageError(f"{monitors[1][0]}: only one control monitor is modelled")
    consoles = [_serial_device(text, chardevs) for text in serial_devices]
    consoles += [_serial(text, chardevs) for text in repeated["-serial"] if text != "none"]
    if len(consoles) > 1:
        raise UsageError(f"{consoles[1][0]}: only one serial port (COM1) is modelled")
    chardevs.check_all_used()
    if not consoles and "-nographic" in switches and "-nodefaults" not in switches:
        consoles = [("-serial stdio", "-")]  # qemu: -nographic puts COM1 on stdio
    if monitors:
        config.sources["control"], config.control = monitors[0]
    if consoles:
        config.sources["serial"], config.serial = consoles[0]


def _socket_path(flag: str, options: dict[str, str]) -> str:
    """A listening unix socket, as qemu's `server=on,wait=off`: we listen, never connect
    out, and never hold the guest until a client comes."""
    if options.get("server", "off") != "on":
        raise UsageError(f"{flag}: server=on is required: the VMM listens, never connects out")
    if options.get("wait", "on") != "off":
        raise UsageError(f"{flag}: wait=off is required: the VMM never waits for a client")
    return options["path"]


def _parse_qmp(text: str) -> str:
    """`-qmp unix:PATH,server=on,wait=off`: qemu's shorthand for -chardev socket + -mon."""
    if not text.startswith("unix:"):
        raise UsageError(f"-qmp {text}: not supported: only unix:PATH sockets are modelled")
    options = _keyvals("-qmp", text[5:], implied="path", booleans=_SOCKET_BOOLEANS)
    _unknown("-qmp", options, _CHARDEV_KEYS["socket"])
    return _socket_path("-qmp", options)


def _serial_device(text: str, chardevs: _Chardevs) -> tuple[str, str | None]:
    flag = "-device isa-serial"
    options = _keyvals("-device", text, implied="driver")
    _unknown(flag, options, {"driver", "chardev", "id"})
    return _console(flag, *chardevs.take(flag, options.get("chardev", "")))


def _serial(text: str, chardevs: _Chardevs) -> tuple[str, str | None]:
    """`-serial file:PATH|stdio|null|chardev:ID` (qemu's truncating file: see docs)."""
    if text in ("stdio", "null"):
        return f"-serial {text}", "-" if text == "stdio" else None
    if text.startswith("chardev:"):
        return _console("-serial chardev:", *chardevs.take("-serial", text[8:]))
    if text.startswith("file:") and len(text) > 5:
        return "-serial file:", text[5:]
    raise UsageError(f"-serial {text!r}: expected file:PATH, stdio, null, none or chardev:ID")


def _console(flag: str, backend: str, options: dict[str, str]) -> tuple[str, str | None]:
    if backend == "file":
        if options.get("append", "on") != "on":
            raise UsageError(f"{flag}: append=off: not supported: the console log is appended to")
        return "-chardev file,path=", options["path"]
    if backend == "socket":
        raise UsageError(f"{flag}: a socket console is not supported (file, stdio or null)")
    return f"-chardev {backend}", "-" if backend == "stdio" else None


# --- devices -----------------------------------------------------------------------

MAX_NICS = 2  # COMPUTED_MAX_NICS in the guest ABI
DEFAULT_VHOST_DEVICE = "/dev/vhost-net"


def _split_devices(texts: list[str]) -> tuple[list[str], list[str]]:
    """-device values → (NICs, isa-serial ports); any other driver is refused by name."""
    nics: list[str] = []
    serials: list[str] = []
    for text in texts:
        driver = text.partition(",")[0]
        if driver in _NIC_DRIVERS:
            nics.append(text)
        elif driver == "isa-serial":
            serials.append(text)
        else:
            reason = next(r for prefixes, r in _DEVICES_NOT_MODELLED if driver.startswith(prefixes))
            raise UsageError(f"-device {driver}: not supported: {reason}")
    return nics, serials


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
    options = _keyvals("-netdev", text, implied="type")
    if options["type"] != "tap":
        raise UsageError(f"-netdev {options['type']}: not supported: only tap is modelled")
    _check_no_ops("-netdev tap", {k: options.pop(k) for k in list(options) if k in _TAP_NO_OPS},
                  _TAP_NO_OPS)  # fmt: skip
    _unknown("-netdev", options, _TAP_KEYS)
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
        options = _keyvals("-device", text, implied="driver")
        for key in ("bus", "addr"):
            if key in options:
                raise UsageError(
                    f"-device {options['driver']}: {key}=: not supported: "
                    "there is no PCI bus (virtio devices sit on virtio-mmio)"
                )
        _unknown("-device", options, {"driver", "netdev", "mac", "id"})
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


# --- memory and vCPUs ----------------------------------------------------------------


def parse_memory(text: str) -> int:
    """`-m 128`, `-m 128M`, `-m 2G`, `-m size=2G` → MiB, within [MIN_MEMORY_MIB, MAX_MEMORY_MIB]."""
    digits, unit = text.strip(), 1
    if "=" in digits:
        options = _keyvals("-m", digits)
        _unknown("-m", options, {"size"})  # slots=, maxmem=: no memory hot-plug
        digits = options["size"]
    if digits[-1:] in ("M", "m", "G", "g"):
        digits, unit = digits[:-1], 1024 if digits[-1] in "Gg" else 1
    if not digits.isascii() or not digits.isdigit():
        raise UsageError(f"-m {text!r}: expected a size in MiB such as 128, 128M or 2G")
    mib = int(digits) * unit
    if not MIN_MEMORY_MIB <= mib <= MAX_MEMORY_MIB:
        raise UsageError(f"-m {text!r}: memory must be {MIN_MEMORY_MIB}..{MAX_MEMORY_MIB} MiB")
    return mib


def _width(count: int) -> int:
    """Bits an APIC ID field needs for `count` values (qemu's apicid_bitwidth_for_count)."""
    return (count - 1).bit_length()


class SmpTopology:
    """`-smp`: how many vCPUs, in how many sockets of dies of cores of threads.

    APIC IDs are laid out as on qemu's x86 machines: each level gets the bits its
    count needs, threads lowest, so a guest can decode them with CPUID leaf 0xB.
    vCPU `index` is thread `index % threads` of core `index // threads % cores`...
    """

    __slots__ = ("cores", "cpus", "dies", "maxcpus", "sockets", "threads")

    def __init__(
        self, cpus: int, sockets: int = 1, dies: int = 1, cores: int = 1, threads: int = 1
    ) -> None:
        self.cpus, self.sockets, self.dies = cpus, sockets, dies
        self.cores, self.threads = cores, threads
        self.maxcpus = sockets * dies * cores * threads

    @property
    def threads_per_package(self) -> int:
        return self.dies * self.cores * self.threads

    @property
    def core_shift(self) -> int:
        return _width(self.threads)

    @property
    def die_shift(self) -> int:
        return self.core_shift + _width(self.cores)

    @property
    def package_shift(self) -> int:
        return self.die_shift + _width(self.dies)

    def ids(self, index: int) -> tuple[int, int, int, int]:
        """vCPU `index` → (socket, die, core, thread)."""
        t, c, d = self.threads, self.cores, self.dies
        return index // (t * c * d), index // (t * c) % d, index // t % c, index % t

    def apic_id(self, index: int) -> int:
        socket, die, core, thread = self.ids(index)
        return (
            socket << self.package_shift | die << self.die_shift | core << self.core_shift | thread
        )

    def __str__(self) -> str:  # qemu's words, for its error messages and ours
        return (
            f"sockets ({self.sockets}) * dies ({self.dies}) * cores ({self.cores}) * "
            f"threads ({self.threads})"
        )


_SMP_KEYS = ("cpus", "maxcpus", "sockets", "dies", "cores", "threads")
_SMP_ONLY_ONE = ("clusters", "modules", "books", "drawers")  # levels x86 has not


def parse_smp(text: str) -> SmpTopology:
    """`-smp [cpus=]N[,maxcpus=M][,sockets=S][,dies=1][,cores=C][,threads=T]` with qemu's
    rules (since 6.2): omitted levels are computed preferring cores over sockets over
    threads; the product must equal maxcpus. We do not hot-plug, so maxcpus = N."""
    options = _keyvals("-smp", text.strip(), implied="cpus")
    _unknown("-smp", options, {*_SMP_KEYS, *_SMP_ONLY_ONE})
    if not all(v.isascii() and v.isdigit() for v in options.values()):
        raise UsageError(f"-smp {text!r}: expected a vCPU count, and counts for its topology")
    given = {key: int(value) for key, value in options.items()}
    if 0 in given.values():
        raise UsageError(f"-smp {text}: CPU topology parameters must be greater than zero")
    for key in ("dies", *_SMP_ONLY_ONE):
        if given.get(key, 1) > 1:
            raise UsageError(f"-smp {text}: {key} > 1 not supported by this machine's topology")
    cpus, maxcpus = given.get("cpus", 0), given.get("maxcpus", 0)
    sockets, cores, threads = (given.get(k, 0) for k in ("sockets", "cores", "threads"))
    if cpus or maxcpus:
        maxcpus = maxcpus or cpus
        if not cores:
            sockets, threads = sockets or 1, threads or 1
            cores = maxcpus // (sockets * threads)
        elif not sockets:
            threads = threads or 1
            sockets = maxcpus // (cores * threads)
        threads = threads or maxcpus // (sockets * cores)
    topology = SmpTopology(max(cpus, 1), sockets or 1, 1, cores or 1, threads or 1)
    topology.cpus = cpus or maxcpus or topology.maxcpus
    maxcpus = maxcpus or topology.maxcpus
    if topology.maxcpus != maxcpus:
        raise UsageError(
            f"-smp {text}: Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"{topology} != maxcpus ({maxcpus})"
        )
    if maxcpus < topology.cpus:
        raise UsageError(f"-smp {text}: maxcpus ({maxcpus}) must be at least the vCPU count")
    if not 1 <= topology.cpus <= MAX_VCPUS:
        raise UsageError(f"-smp {text!r}: vCPU count must be 1..{MAX_VCPUS}")
    if maxcpus > topology.cpus:
        raise UsageError(
            f"-smp {text}: maxcpus ({maxcpus}) > {topology.cpus} vCPUs: "
            "not supported: computed-vmm does not hot-plug vCPUs"
        )
    return topology


# --- -cpu: which CPUID features the guest sees ------------------------------------------

# A feature word: (CPUID leaf, subleaf, register 0..3 = EAX, EBX, ECX, EDX).
CPUID_1_ECX = (0x1, 0, 2)
CPUID_1_EDX = (0x1, 0, 3)
CPUID_7_EBX = (0x7, 0, 1)
CPUID_7_ECX = (0x7, 0, 2)
CPUID_7_EDX = (0x7, 0, 3)
CPUID_80000001_ECX = (0x80000001, 0, 2)
CPUID_80000001_EDX = (0x80000001, 0, 3)
# qemu's flag names per word, bit 0 first ("-": none we name; "a|b": b is another name
# for a). Written as qemu spells them; "_" and "." are read as "-" (sse4_2 = sse4.2).
FEATURE_FLAGS = (
    (CPUID_1_EDX, "fpu vme de pse tsc msr pae mce cx8 apic - sep mtrr pge mca cmov "
                  "pat pse36 pn clflush - ds acpi mmx fxsr sse sse2 ss ht tm ia64 pbe"),
    (CPUID_1_ECX, "pni|sse3 pclmulqdq|pclmuldq dtes64 monitor ds-cpl vmx smx est tm2 ssse3 cid - "
                  "fma cx16 xtpr pdcm - pcid dca sse4.1 sse4.2 x2apic movbe popcnt tsc-deadline "
                  "aes xsave - avx f16c rdrand hypervisor"),
    (CPUID_7_EBX, "fsgsbase tsc-adjust sgx bmi1 hle avx2 - smep bmi2 erms invpcid rtm - - mpx - "
                  "avx512f avx512dq rdseed adx smap avx512ifma pcommit clflushopt clwb intel-pt "
                  "avx512pf avx512er avx512cd sha-ni avx512bw avx512vl"),
    (CPUID_7_ECX, "- avx512vbmi umip pku - waitpkg avx512vbmi2 - gfni vaes vpclmulqdq avx512vnni "
                  "avx512bitalg - avx512-vpopcntdq - la57 - - - - - rdpid - bus-lock-detect "
                  "cldemote - movdiri movdir64b - sgxlc pks"),
    (CPUID_7_EDX, "- - avx512-4vnniw avx512-4fmaps fsrm - - - avx512-vp2intersect - md-clear - - - "
                  "serialize - tsx-ldtrk - pconfig arch-lbr - - amx-bf16 avx512-fp16 amx-tile "
                  "amx-int8 spec-ctrl stibp - arch-capabilities core-capability ssbd"),
    (CPUID_80000001_ECX, "lahf-lm cmp-legacy svm extapic cr8legacy abm sse4a misalignsse "
                         "3dnowprefetch osvw ibs xop skinit wdt - lwp fma4 tce - nodeid-msr - tbm "
                         "topoext perfctr-core perfctr-nb - - - - - - -"),
    (CPUID_80000001_EDX, "- - - - - - - - - - - syscall - - - - - - - - nx|xd - mmxext - - "
                         "fxsr-opt|ffxsr pdpe1gb rdtscp - lm|i64 3dnowext 3dnow"),
)  # fmt: skip
FEATURE_WORDS = tuple(word for word, _names in FEATURE_FLAGS)
# Leaf-1 EDX bits that AMD repeats in 0x80000001 EDX: a flag there names both.
AMD_EDX_ALIASES = 0x0183F3FF
# Named models: host CPUID masked to the model's features (see docs/vmm.md). qemu adds
# x2apic and hypervisor to every named model under KVM.
CPU_MODELS = {
    "host": None,
    "max": None,  # under KVM, qemu's max is host
    "Penryn": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
    "clflush mmx fxsr sse sse2 pni ssse3 cx16 sse4.1 syscall nx lm lahf-lm x2apic hypervisor",
}
_CPU_PROPERTIES = ("check", "enforce")
_flag_table: dict[str, tuple[tuple[int, int, int], int]] = {}


def _flags() -> dict[str, tuple[tuple[int, int, int], int]]:
    """name → (feature word, bit), built on first use (only -cpu with flags or a model needs it)."""
    if not _flag_table:
        for word, names in FEATURE_FLAGS:
            for bit, spellings in enumerate(names.split()):
                for name in spellings.split("|"):
                    if name != "-":
                        _flag_table[_flag_key(name)] = (word, bit)
    return _flag_table


def _flag_key(name: str) -> str:
    return name.replace("_", "-").replace(".", "-")


def flag_name(word: tuple[int, int, int], bit: int) -> str | None:
    """The name qemu gives bit `bit` of `word` (for messages), or None."""
    for w, names in FEATURE_FLAGS:
        if w == word:
            name = names.split()[bit].split("|")[0]
            return None if name == "-" else name
    return None


def _set_flag(masks: dict[tuple[int, int, int], int], name: str, flag: str) -> None:
    where = _flags().get(_flag_key(name))
    if where is None:
        raise UsageError(f"{flag}: unknown CPU flag {name!r}")
    word, bit = where
    masks[word] = masks.get(word, 0) | 1 << bit
    if word == CPUID_1_EDX and AMD_EDX_ALIASES >> bit & 1:
        masks[CPUID_80000001_EDX] = masks.get(CPUID_80000001_EDX, 0) | 1 << bit


class CpuModel:
    """`-cpu`: the features the guest sees, as masks over what KVM supports on this host.

    `features` is None for host/max (all of it), else per feature word the model's
    bits; `enable`/`disable` are the flags named with +/-/=on/off. `check` warns about
    features the host lacks (qemu's default), `enforce` refuses to start instead.
    """

    __slots__ = ("check", "disable", "enable", "enforce", "features", "name")

    def __init__(
        self,
        name: str = "host",
        features: dict[tuple[int, int, int], int] | None = None,
        enable: dict[tuple[int, int, int], int] | None = None,
        disable: dict[tuple[int, int, int], int] | None = None,
        check: bool = True,
        enforce: bool = False,
    ) -> None:
        self.name, self.features = name, features
        self.enable, self.disable = enable or {}, disable or {}
        self.check, self.enforce = check, enforce


def parse_cpu(text: str) -> CpuModel:
    """`-cpu MODEL[,+flag][,-flag][,flag=on|off][,check][,enforce]`."""
    model, *items = text.split(",")
    if model not in CPU_MODELS:
        raise UsageError(f"-cpu {model}: not supported: the CPU models are {', '.join(CPU_MODELS)}")
    cpu = CpuModel(model)
    if CPU_MODELS[model] is not None:
        cpu.features = {}
        for name in CPU_MODELS[model].split():
            _set_flag(cpu.features, name, "-cpu")
    for item in items:
        if item[:1] in ("+", "-"):
            name, on = item[1:], item[0] == "+"
        else:
            name, _eq, value = item.partition("=")
            if value not in ("", "on", "off"):
                raise UsageError(f"-cpu {item}: expected +FLAG, -FLAG or FLAG=on|off")
            on = value != "off"
            if name in _CPU_PROPERTIES:
                setattr(cpu, name, on)
                continue
        _set_flag(cpu.enable if on else cpu.disable, name, "-cpu")
    for word, bits in cpu.enable.items():
        both = bits & cpu.disable.get(word, 0)
        if both:
            name = flag_name(word, both.bit_length() - 1)
            raise UsageError(f"-cpu {text}: flag {name!r} is both enabled and disabled")
    return cpu


# --- the rest ---------------------------------------------------------------------------


def _parse_name(text: str) -> str:
    """`-name NAME` or qemu's `-name guest=NAME[,debug-threads=on]` (our vCPU threads are
    always named `CPU n/KVM`, so debug-threads=on asks for nothing more)."""
    options = _keyvals("-name", text, implied="guest")
    _unknown("-name", options, {"guest", "debug-threads"})
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


def _parse_prefixed(flag: str, text: str, prefix: str) -> str:
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
