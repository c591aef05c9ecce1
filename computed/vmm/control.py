"""The VMM's control socket: QMP-like JSON lines over a unix socket.

A client sends one JSON object per line, `{"execute": "query-status"}` (with
optional "arguments" and "id"); each gets one reply line, `{"return": …}` or
`{"error": {"class": …, "desc": …}}`. A greeting line is sent on connect, as
QMP does. Bad JSON, unknown commands and oversized lines get an error reply,
never a crash. `dispatch` is pure over a `ControlTarget`; `ControlServer`
does the socket I/O from the main thread's selector.
"""

from __future__ import annotations

import os
import selectors
import socket
from collections.abc import Callable

MAX_LINE = 64 * 1024
MAX_CLIENTS = 32
GREETING = {"QMP": {"version": {"computed": "0.1.0"}, "capabilities": []}}


TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from typing import Any, Protocol

    class ControlTarget(Protocol):
        status: str

        def pause(self) -> None: ...

        def resume(self) -> None: ...

        def press_power_button(self) -> None: ...

        def reset(self) -> None: ...

        def stop_by_host(self, reason: str) -> None: ...

        def cpus(self) -> list[dict[str, int]]: ...

        def describe(self) -> dict[str, Any]: ...


def _status(t: ControlTarget) -> dict[str, Any]:
    return {"status": t.status, "running": t.status == "running"}


def _while_up(action: Callable[[ControlTarget], None]) -> Callable[[ControlTarget], dict]:
    def run(t: ControlTarget) -> dict:
        if t.status == "shutdown":
            raise CommandError("the guest has shut down")
        action(t)
        return {}

    return run


COMMANDS: dict[str, Callable[[ControlTarget], Any]] = {
    "qmp_capabilities": lambda t: {},
    "query-status": _status,
    "stop": _while_up(lambda t: t.pause()),
    "cont": _while_up(lambda t: t.resume()),
    "system_powerdown": _while_up(lambda t: t.press_power_button()),
    "system_reset": _while_up(lambda t: t.reset()),
    "quit": lambda t: t.stop_by_host("quit requested on the control socket") or {},
    "query-cpus": lambda t: t.cpus(),
    "query-vm": lambda t: t.describe(),
}


class CommandError(Exception):
    pass


def _error(klass: str, desc: str) -> dict[str, Any]:
    return {"error": {"class": klass, "desc": desc}}


def _json():
    """json (and the `re` it imports) is loaded at the first client, not at launch."""
    import json

    return json


def dispatch(line: bytes, target: ControlTarget) -> dict[str, Any]:
    """One request line → one reply object."""
    json = _json()
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return _error("GenericError", "request is not valid JSON")
    if not isinstance(request, dict) or not isinstance(request.get("execute"), str):
        return _error("GenericError", 'expected an object with an "execute" string')
    command = COMMANDS.get(request["execute"])
    if command is None:
        reply = _error("CommandNotFound", f"the command {request['execute']} has not been found")
    else:
        try:
            reply = {"return": command(target)}
        except CommandError as e:
            reply = _error("GenericError", str(e))
    if "id" in request:
        reply["id"] = request["id"]
    return reply


class ControlServer:
    """Serves `dispatch` on a unix socket, driven by the caller's selector."""

    def __init__(self, path: str, target: ControlTarget, sel: selectors.BaseSelector) -> None:
        self.path = path
        self.target = target
        self.sel = sel
        self.clients: dict[socket.socket, bytearray] = {}
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)  # stale socket from a previous run of this instance
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        if len(self.clients) >= MAX_CLIENTS:
            conn.close()
            return
        conn.setblocking(False)
        self.clients[conn] = bytearray()
        self.sel.register(conn, selectors.EVENT_READ, lambda c=conn: self._readable(c))
        self._send(conn, GREETING)

    def _readable(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        buf = self.clients[conn]
        buf += data
        while (nl := buf.find(b"\n")) >= 0:
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            if line.strip():
                self._send(conn, dispatch(line, self.target))
        if len(buf) > MAX_LINE:
            self._send(conn, _error("GenericError", f"request longer than {MAX_LINE} bytes"))
            self._drop(conn)

    def _send(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)  # a client that never reads cannot stall the VMM
            conn.sendall(_json().dumps(reply).encode() + b"\n")
            conn.setblocking(False)
        except OSError:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        if conn in self.clients:
            del self.clients[conn]
            self.sel.unregister(conn)
            conn.close()

    def close(self) -> None:
        for conn in list(self.clients):
            self._drop(conn)
        self.sel.unregister(self.sock)
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
