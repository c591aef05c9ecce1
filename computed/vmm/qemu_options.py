"""Which qemu options computed-vmm takes, and how qemu spells their values.

`scan` sorts argv into options given once, repeated options and switches, and
refuses by name, with the reason, each qemu option that asks for something we
do not model; `split_devices` does the same for -device drivers.
`check_platform` accepts -machine, -accel, -rtc, -display, -vga and -global
only where they ask for what we are anyway. `keyvals` reads qemu's
`[value,]key=value,...`. Pure; docs/vmm.md has the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from computed.vmm.errors import UsageError

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


def scan(argv: Sequence[str]) -> tuple[dict[str, str], dict[str, list[str]], set[str]]:
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


def check_platform(once: dict[str, str], globals_: list[str]) -> None:
    """The options that name the platform: accepted where they ask for what we are."""
    if "-machine" in once:
        text = once["-machine"]
        options = keyvals("-machine", text, implied="type")
        machine = options.pop("type", "microvm")
        if machine not in MACHINE_TYPES:
            raise UsageError(f"-machine {machine}: not supported: {_MACHINE_REFUSAL}")
        check_no_ops("-machine", options, _MACHINE_KEYS)
    if "-accel" in once:
        options = keyvals("-accel", once["-accel"], implied="accel")
        check_no_ops("-accel", options, _MACHINE_KEYS)
    if "-rtc" in once:
        check_no_ops("-rtc", keyvals("-rtc", once["-rtc"]), _RTC_KEYS)
    for option in ("-display", "-vga"):
        if once.get(option, "none") != "none":
            raise UsageError(f"{option} {once[option]}: not supported: no display is modelled")
    for text in globals_:
        if text not in ("kvm-pit.lost_tick_policy=discard", "kvm-pit.lost_tick_policy=delay"):
            raise UsageError(
                f"-global {text}: not supported: the one device property modelled is "
                "kvm-pit.lost_tick_policy=discard|delay"
            )


def check_no_ops(
    flag: str, options: dict[str, str], table: dict[str, tuple[tuple[str, ...], str]]
) -> None:
    """Each key must ask for what we are anyway (`table`: key → (such values, why))."""
    for key, value in options.items():
        if key not in table:
            raise UsageError(f"{flag} {key}={value}: not supported")
        values, reason = table[key]
        if value not in values:
            raise UsageError(f"{flag} {key}={value}: not supported: {reason}")


def keyvals(
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


def refuse_unknown_keys(flag: str, options: dict[str, str], known: set[str]) -> None:
    """Refuse, naming it, the first key of `options` that `flag` does not take."""
    extra = sorted(set(options) - known)
    if extra:
        raise UsageError(f"{flag}: unknown option {extra[0]!r}")


def split_devices(texts: list[str]) -> tuple[list[str], list[str]]:
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
