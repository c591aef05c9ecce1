"""The VMM's control socket: QMP, as qemu's docs/interop/qmp-spec.rst defines it.

On connect the server greets with a qemu version; the client is then in
capabilities negotiation mode, where only `qmp_capabilities` runs and no
events arrive. After it, commands run (`{"execute": …, "arguments": {…},
"id": …}` → `{"return": …}` or `{"error": {"class", "desc"}}`, `id` echoed)
and the Machine's events (STOP, RESUME, POWERDOWN, RESET, SHUTDOWN) arrive
timestamped. Replies and events are one JSON object per CRLF-terminated line;
requests are cut from the stream by `qmp_stream`, newline or not.

We answer as qemu 8.2.2 would for every command we model (see VERSION_INFO);
our own commands carry QMP's downstream prefix, `__org.computed_`.

`Session` is the pure protocol (one per client); `ControlServer` does the
socket I/O from the main thread's selector: no threads, no new files or
sockets after start, and it never blocks on a client.
"""

from __future__ import annotations

import os
import selectors
import socket
import time

from computed.vmm import qmp_events
from computed.vmm.qmp_stream import MessageSplitter

MAX_MESSAGE = 64 * 1024
# qemu allows 1024 levels; Python's parser recurses per level and would hit its
# recursion limit first. Our deepest request needs 3.
MAX_DEPTH = 64
MAX_CLIENTS = 32
# The qemu whose QMP we mirror: Ubuntu 24.04's qemu-kvm, the hypervisor of a
# current Nova host. Every command and event shape here is 8.2's, including
# query-status's `singlestep` (deprecated in 8.1, gone in later releases).
VERSION_INFO = {"qemu": {"major": 8, "minor": 2, "micro": 2}, "package": "computed-0.1.0"}
GREETING = {"QMP": {"version": VERSION_INFO, "capabilities": []}}
EXTENSION = "__org.computed_"  # qmp-spec: downstream names are __RFQDN_<name>

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    class ControlTarget(Protocol):
        status: str  # running | paused | shutdown
        config: Any  # .name, .uuid
        on_event: Callable[[str, dict[str, Any] | None], None] | None

        def pause(self) -> None: ...

        def resume(self) -> None: ...

        def press_power_button(self) -> None: ...

        def reset(self) -> None: ...

        def cpu_props(self, index: int) -> dict[str, int]: ...

        def stop_by_host(self, reason: str, cause: str = ...) -> None: ...

        def cpus(self) -> list[dict[str, int]]: ...

        def describe(self) -> dict[str, Any]: ...


class QmpError(Exception):
    """A command's failure, in qemu's words and error class."""

    def __init__(self, desc: str, klass: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc, self.klass = desc, klass


def _while_up(action: Callable[[ControlTarget], None]) -> Callable[[ControlTarget], dict]:
    def run(t: ControlTarget) -> dict:
        if t.status == "shutdown":
            raise QmpError("the guest has shut down")
        action(t)
        return {}

    return run


def _status(t: ControlTarget) -> dict[str, Any]:
    return {"status": t.status, "singlestep": False, "running": t.status == "running"}


def _cpus_fast(t: ControlTarget) -> list[dict[str, Any]]:
    """qemu's shape on an 8.2 machine type, with each vCPU's place in the -smp topology."""
    return [
        {
            "cpu-index": cpu["cpu-index"],
            "qom-path": f"/machine/unattached/device[{cpu['cpu-index']}]",
            "thread-id": cpu["thread-id"],
            "props": t.cpu_props(cpu["cpu-index"]),
            "target": "x86_64",
        }
        for cpu in t.cpus()
    ]


def _quit(t: ControlTarget) -> dict:
    t.stop_by_host("quit requested on the control socket", qmp_events.HOST_QMP_QUIT)
    return {}


def _commands(_t: ControlTarget) -> list[dict[str, str]]:
    return [{"name": name} for name in ("qmp_capabilities", *COMMANDS)]


# Every command takes no arguments, except qmp_capabilities (see Session).
COMMANDS: dict[str, Callable[[ControlTarget], Any]] = {
    "query-version": lambda t: VERSION_INFO,
    "query-commands": _commands,
    "query-name": lambda t: {"name": t.config.name},
    "query-uuid": lambda t: {"UUID": t.config.uuid},
    "query-status": _status,
    "query-cpus-fast": _cpus_fast,
    "query-kvm": lambda t: {"enabled": True, "present": True},
    "stop": _while_up(lambda t: t.pause()),
    "cont": _while_up(lambda t: t.resume()),
    "system_powerdown": _while_up(lambda t: t.press_power_button()),
    # Allowed from `shutdown` too: with -no-shutdown a reset starts the guest again (qemu).
    "system_reset": lambda t: t.reset() or {},
    "quit": _quit,
    f"{EXTENSION}query-vm": lambda t: t.describe(),
}


def _json():
    """json (and the `re` it imports) is loaded at the first client, not at launch."""
    import json

    return json


def _no_constant(name: str) -> None:
    raise ValueError(f"invalid keyword '{name}'")  # NaN, Infinity: not JSON


def parse(text: bytes) -> Any:
    """One request's bytes → a JSON value; QmpError in qemu's words if it is not JSON."""
    json = _json()
    try:
        return json.loads(text.decode(), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise QmpError("JSON parse error, invalid UTF-8 sequence") from None
    except json.JSONDecodeError as e:
        raise QmpError(f"JSON parse error, {e.msg[:1].lower()}{e.msg[1:]}") from None
    except ValueError as e:
        raise QmpError(f"JSON parse error, {e}") from None
    except RecursionError:  # MessageSplitter bounds the depth; this is the backstop
        raise QmpError("JSON nesting depth limit exceeded") from None


def _check_request(request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """qemu's qmp_dispatch_check_obj: the request's own members, in order."""
    for key, value in request.items():
        if key == "execute":
            if not isinstance(value, str):
                raise QmpError("QMP input member 'execute' must be a string")
        elif key == "arguments":
            if not isinstance(value, dict):
                raise QmpError("QMP input member 'arguments' must be an object")
        elif key != "id":
            raise QmpError(f"QMP input member '{key}' is unexpected")
    if "execute" not in request:
        raise QmpError("QMP input lacks member 'execute'")
    return request["execute"], request.get("arguments", {})


def _check_capabilities(args: dict[str, Any]) -> None:
    """qmp_capabilities' one optional argument: `enable`, capabilities we never offer."""
    for key in args:
        if key != "enable":
            raise QmpError(f"Parameter '{key}' is unexpected")
    enable = args.get("enable", [])
    if not isinstance(enable, list):
        raise QmpError("Invalid parameter type for 'enable', expected: array")
    for i, cap in enumerate(enable):
        if not isinstance(cap, str):
            raise QmpError(f"Invalid parameter type for 'enable[{i}]', expected: string")
        if cap != "oob":  # QMPCapability's only value
            raise QmpError(f"Parameter 'enable[{i}]' does not accept value '{cap}'")
    if enable:
        raise QmpError(f"Capability {', '.join(enable)} not available")


class Session:
    """One client's protocol state: capabilities negotiation, then command mode."""

    def __init__(self) -> None:
        self.negotiated = False

    def handle(self, text: bytes, target: ControlTarget) -> dict[str, Any]:
        """One request's bytes → its reply object."""
        request = None
        try:
            request = parse(text)
            if not isinstance(request, dict):
                raise QmpError("QMP input must be a JSON object")
            reply = {"return": self._run(request, target)}
        except QmpError as e:
            reply = error_reply(e.klass, e.desc)
        if isinstance(request, dict) and "id" in request:
            reply["id"] = request["id"]
        return reply

    def _run(self, request: dict[str, Any], target: ControlTarget) -> Any:
        name, args = _check_request(request)
        if name == "qmp_capabilities":
            _check_capabilities(args)
            if self.negotiated:
                raise QmpError(
                    "Capabilities negotiation is already complete, command ignored",
                    "CommandNotFound",
                )
            self.negotiated = True
            return {}
        if not self.negotiated:
            raise QmpError(
                "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound"
            )
        command = COMMANDS.get(name)
        if command is None:
            raise QmpError(f"The command {name} has not been found", "CommandNotFound")
        if args:
            raise QmpError(f"Parameter '{next(iter(args))}' is unexpected")
        return command(target)


def error_reply(klass: str, desc: str) -> dict[str, Any]:
    return {"error": {"class": klass, "desc": desc}}


def event_message(name: str, data: dict[str, Any] | None, now_ns: int) -> dict[str, Any]:
    """An event as qmp-spec sends it; events without data carry no `data` member."""
    us = now_ns // 1000
    message: dict[str, Any] = {"event": name}
    if data is not None:
        message["data"] = data
    message["timestamp"] = {"seconds": us // 1_000_000, "microseconds": us % 1_000_000}
    return message


def _encode(message: dict[str, Any]) -> bytes:
    return _json().dumps(message).encode() + b"\r\n"  # ASCII: json escapes the rest


class _Client:
    __slots__ = ("last_active", "session", "sock", "splitter")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.session = Session()
        self.splitter = MessageSplitter(MAX_MESSAGE, MAX_DEPTH)
        self.last_active = time.monotonic()


def bind_listening(path: str) -> socket.socket:
    """A unix stream socket bound at `path` (its owner's only: 0600) and listening. The
    VMM binds its own with `-control`; the agent binds the one it hands a VMM."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(8)
    except OSError:
        sock.close()
        raise
    return sock


def listening_socket_problem(fd: int) -> str | None:
    """What is wrong with `fd` as a handed-in monitor socket (None: a listening unix
    stream socket)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        return e.strerror or str(e)
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            return "not a unix stream socket"
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return "not listening"
        return None
    finally:
        sock.detach()  # looked at, not taken


class ControlServer:
    """Serves QMP on a unix socket, driven by the caller's selector.

    Client slots: at most MAX_CLIENTS. A new client always gets in; when the
    table is full the client idle the longest makes room, one still in
    negotiation first (it can neither run commands nor receive events).
    """

    def __init__(
        self, where: str | int, target: ControlTarget, sel: selectors.BaseSelector
    ) -> None:
        """`where`: the socket's path, bound here (and unlinked by close), or the fd of a
        unix socket handed in already listening (its maker owns the path)."""
        self.path = where if isinstance(where, str) else None
        self.target = target
        self.sel = sel
        self.clients: dict[socket.socket, _Client] = {}
        if isinstance(where, int):
            self.sock = socket.socket(fileno=where)  # checked by listening_socket_problem
        else:
            if os.path.exists(where) and not os.path.isdir(where):
                os.unlink(where)  # stale socket from a previous run of this instance
            self.sock = bind_listening(where)
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ, self._accept)
        target.on_event = self.send_event

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        if len(self.clients) >= MAX_CLIENTS:
            victim = min(self.clients.values(), key=lambda c: (c.session.negotiated, c.last_active))
            self._drop(victim)
        conn.setblocking(False)
        client = _Client(conn)
        self.clients[conn] = client
        self.sel.register(conn, selectors.EVENT_READ, lambda: self._readable(client))
        self._send(client, _encode(GREETING))

    def _readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.last_active = time.monotonic()
        for request in client.splitter.feed(data):
            if request.error:
                reply = error_reply("GenericError", request.error)
            else:
                reply = client.session.handle(request.text, self.target)
            if not self._send(client, _encode(reply)):
                return
        if client.splitter.overflowed:
            desc = f"request longer than {MAX_MESSAGE} bytes"
            self._send(client, _encode(error_reply("GenericError", desc)))
            self._drop(client)

    def send_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """The Machine's event listener (main thread): to every negotiated client."""
        payload = _encode(event_message(name, data, time.time_ns()))
        for client in list(self.clients.values()):
            if client.session.negotiated:
                self._send(client, payload)

    def _send(self, client: _Client, payload: bytes) -> bool:
        """Never blocks: a client whose socket buffer is full is not reading; drop it."""
        if client.sock not in self.clients:
            return False  # dropped while its request ran (an event it could not take)
        try:
            sent = client.sock.send(payload)
        except OSError:
            sent = -1
        if sent != len(payload):
            self._drop(client)
            return False
        return True

    def _drop(self, client: _Client) -> None:
        if self.clients.pop(client.sock, None) is not None:
            self.sel.unregister(client.sock)
            client.sock.close()

    def close(self) -> None:
        if self.target.on_event == self.send_event:
            self.target.on_event = None
        for client in list(self.clients.values()):
            self._drop(client)
        self.sel.unregister(self.sock)
        self.sock.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
