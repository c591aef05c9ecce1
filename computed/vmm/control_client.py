"""Client side of the VMM's QMP control socket (the agent, tests, the demo).

    execute(path, "query-status")            one command on a fresh connection

    with ControlClient(path) as vm:          one connection, kept
        vm.execute("stop")                   events arriving meanwhile are kept…
        event = vm.read_event(timeout=1.0)   …and handed out here (None: none came)
        for event in vm.events():            every event until the VMM closes the socket
            ...                              (after SHUTDOWN, when it exits)

Each connection reads the greeting and negotiates capabilities before its
first command, as qmp-spec requires. `fileno()` lets a selector wait on the
socket; after it reports readable, call `read_event(0)` until it returns None
(events already read into the buffer do not wake a selector).
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple


class ControlError(Exception):
    """The VMM answered with an error, or could not be reached.

    `error_class` is QMP's class ("GenericError", "CommandNotFound") when the
    VMM answered, None when the socket failed.
    """

    def __init__(self, message: str, error_class: str | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class


class ControlClosed(ControlError):
    """The VMM closed the connection: it is exiting (or evicted an idle client)."""


class QmpEvent(NamedTuple):
    """One asynchronous event: `name` as in computed.vmm.qmp_events, `data` ({} if none)."""

    name: str
    data: dict[str, Any]
    timestamp: float  # seconds since the epoch, when the VMM saw it happen


class ControlClient:
    def __init__(
        self, path: str, timeout: float = 5.0, greeting_timeout: float | None = None
    ) -> None:
        """`timeout` bounds each command; `greeting_timeout` (default: the same) the wait
        for the greeting, which a VMM handed its socket listening sends only once its
        main loop, which runs the guest, has started."""
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ControlError(f"cannot connect to {path}: {e.strerror or e}") from None
        self._buf = bytearray()
        self._events: deque[QmpEvent] = deque()
        self._last_id = 0
        try:
            deadline = time.monotonic() + (
                timeout if greeting_timeout is None else greeting_timeout
            )
            greeting = self._read(deadline)
            if not isinstance(greeting.get("QMP"), dict):
                raise ControlError(f"control socket: not a QMP greeting: {greeting!r:.80}")
            self.greeting: dict[str, Any] = greeting["QMP"]
            self._run("qmp_capabilities", None, deadline)
        except TimeoutError:
            self.sock.close()
            raise ControlError(f"control socket: no greeting from {path}") from None
        except BaseException:
            self.sock.close()
            raise

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command; its `return` value, or ControlError with the VMM's words."""
        return self._run(command, arguments, time.monotonic() + self.timeout)

    def read_event(self, timeout: float | None = None) -> QmpEvent | None:
        """The next event; None if none arrives within `timeout` (None: wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            try:
                self._keep_if_event(self._read(deadline))
            except TimeoutError:
                return None
        return self._events.popleft()

    def events(self) -> Iterator[QmpEvent]:
        """Every event, as it comes, until the VMM closes the connection."""
        while True:
            try:
                event = self.read_event()
            except ControlClosed:
                return
            if event is not None:
                yield event

    def fileno(self) -> int:
        return self.sock.fileno()

    def buffered(self) -> bool:
        """Has an event (or a whole message) been read that `read_event` has not handed
        out yet? A selector does not wake for those."""
        return bool(self._events) or b"\n" in self._buf

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the wire ---------------------------------------------------------
    def _run(self, command: str, arguments: dict[str, Any] | None, deadline: float) -> Any:
        self._last_id += 1
        request: dict[str, Any] = {"execute": command, "id": self._last_id}
        if arguments is not None:
            request["arguments"] = arguments
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as e:
            raise ControlError(f"control socket: {e}") from None
        while True:
            try:
                reply = self._read(deadline)
            except TimeoutError:
                raise ControlError(f"control socket: no reply to {command}") from None
            if self._keep_if_event(reply):
                continue
            if reply.get("id", self._last_id) != self._last_id:
                continue  # qmp-spec: drop replies with an unknown id
            if "error" in reply:
                error = reply["error"]
                raise ControlError(error.get("desc", "error"), error.get("class"))
            return reply.get("return")

    def _keep_if_event(self, message: dict[str, Any]) -> bool:
        if "event" not in message:
            return False
        stamp = message.get("timestamp", {})
        when = stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6
        self._events.append(QmpEvent(message["event"], message.get("data", {}), when))
        return True

    def _read(self, deadline: float | None) -> dict[str, Any]:
        """One message (a line); TimeoutError past the deadline, ControlClosed at EOF."""
        while (nl := self._buf.find(b"\n")) < 0:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.sock.settimeout(left)  # 0: take only what has already arrived
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                raise TimeoutError from None
            except OSError as e:
                raise ControlError(f"control socket: {e}") from None
            if not chunk:
                raise ControlClosed("the VMM closed the control socket")
            self._buf += chunk
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        try:
            message = json.loads(line)
        except ValueError:
            raise ControlError(f"control socket: not JSON: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise ControlError(f"control socket: not a QMP message: {line[:80]!r}")
        return message


def execute(
    path: str, command: str, arguments: dict[str, Any] | None = None, timeout: float = 5.0
) -> Any:
    """One command on a fresh connection (events that arrive meanwhile are dropped)."""
    with ControlClient(path, timeout) as client:
        return client.execute(command, arguments)
