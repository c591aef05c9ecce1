"""The chardev options: which unix socket is the QMP monitor, and where the console goes.

`-chardev` defines a backend by id; `-mon`, `-serial chardev:ID` and `-device
isa-serial` each use one. `-qmp` and our `-control` are shorthands for the
monitor, `-serial file:|stdio|null` for the console. No I/O: paths are only checked.

The monitor's socket is either bound by the VMM (`path=`) or handed in already
listening (`fd=N`, as libvirt hands qemu its monitor socket): then whoever made it
can connect before the VMM runs, and its connection is answered (QMP's greeting)
the moment the VMM's main loop, which runs the guest, starts; no polling for a path.
"""

from __future__ import annotations

from computed.vmm.errors import UsageError
from computed.vmm.qemu_options import keyvals, refuse_unknown_keys

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from computed.vmm.config import VmConfig

_CHARDEV_KEYS = {
    "socket": {"id", "path", "fd", "server", "wait"},
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
            options = keyvals("-chardev", text, implied="backend", booleans=_SOCKET_BOOLEANS)
            backend = options.pop("backend")
            if backend not in _CHARDEV_KEYS:
                raise UsageError(
                    f"-chardev {backend}: not supported: the chardevs modelled are socket "
                    "(a QMP monitor), file, stdio and null (a console)"
                )
            if backend == "file" and "path" not in options:
                raise UsageError(f"-chardev {text}: path= is required (files)")
            if backend == "socket" and ("path" in options) == ("fd" in options):
                raise UsageError(f"-chardev {text}: path= or fd= is required (unix sockets)")
            refuse_unknown_keys(f"-chardev {backend}", options, _CHARDEV_KEYS[backend])
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


def attach_chardevs(
    config: VmConfig,
    once: dict[str, str],
    repeated: dict[str, list[str]],
    switches: set[str],
    serial_devices: list[str],
) -> None:
    """Set the control socket (-mon/-qmp/-control) and the console (-serial/isa-serial)."""
    chardevs = _Chardevs(repeated["-chardev"])
    monitors: list[tuple[str, str | int]] = []  # (source, path or handed-in fd)
    for text in repeated["-mon"]:
        options = keyvals("-mon", text, implied="chardev")
        refuse_unknown_keys("-mon", options, {"chardev", "mode", "id", "pretty"})
        if options.get("mode", "readline") != "control" or options.get("pretty", "off") != "off":
            raise UsageError(f"-mon {text}: not supported: only QMP is modelled (mode=control)")
        backend, chardev = chardevs.take("-mon", options.get("chardev", ""))
        if backend != "socket":
            raise UsageError(f"-mon {text}: the monitor's chardev must be a socket")
        source = "-chardev socket,fd=" if "fd" in chardev else "-chardev socket,path="
        monitors.append((source, _monitor_socket(chardev)))
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
        source, where = monitors[0]
        config.sources["control"] = source
        if isinstance(where, int):
            config.control_fd = where
        else:
            config.control = where
    if consoles:
        config.sources["serial"], config.serial = consoles[0]


def _check_listening(flag: str, options: dict[str, str]) -> None:
    """A listening unix socket, as qemu's `server=on,wait=off`: we listen, never connect
    out, and never hold the guest until a client comes."""
    if options.get("server", "off") != "on":
        raise UsageError(f"{flag}: server=on is required: the VMM listens, never connects out")
    if options.get("wait", "on") != "off":
        raise UsageError(f"{flag}: wait=off is required: the VMM never waits for a client")


def _monitor_socket(options: dict[str, str]) -> str | int:
    """The -mon's socket chardev: its path, or the fd it is handed in as (`fd=N`)."""
    _check_listening("-chardev", options)
    if "path" in options:
        return options["path"]
    if not options["fd"].isdigit() or int(options["fd"]) < 3:
        raise UsageError(f"-chardev fd={options['fd']}: expected an open fd number, 3 or more")
    return int(options["fd"])


def _parse_qmp(text: str) -> str:
    """`-qmp unix:PATH,server=on,wait=off`: qemu's shorthand for -chardev socket + -mon."""
    if not text.startswith("unix:"):
        raise UsageError(f"-qmp {text}: not supported: only unix:PATH sockets are modelled")
    options = keyvals("-qmp", text[5:], implied="path", booleans=_SOCKET_BOOLEANS)
    refuse_unknown_keys("-qmp", options, _CHARDEV_KEYS["socket"] - {"fd"})
    _check_listening("-qmp", options)
    return options["path"]


def _serial_device(text: str, chardevs: _Chardevs) -> tuple[str, str | None]:
    flag = "-device isa-serial"
    options = keyvals("-device", text, implied="driver")
    refuse_unknown_keys(flag, options, {"driver", "chardev", "id"})
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


def _parse_prefixed(flag: str, text: str, prefix: str) -> str:
    if not text.startswith(prefix) or len(text) == len(prefix):
        raise UsageError(f"{flag} {text!r}: expected {prefix}PATH")
    return text[len(prefix) :]
