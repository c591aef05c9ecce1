"""Client side of the VMM control socket (used by the agent, tests and the demo)."""

from __future__ import annotations

import json
import socket
from typing import Any


class ControlError(Exception):
    """The VMM answered with an error, or could not be reached."""


class ControlClient:
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ControlError(f"cannot connect to {path}: {e.strerror}") from None
        self._file = self.sock.makefile("rb")
        self._read()  # greeting

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except OSError as e:
            raise ControlError(f"control socket: {e}") from None
        if not line:
            raise ControlError("the VMM closed the control socket")
        return json.loads(line)

    def execute(self, command: str) -> Any:
        try:
            self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        except OSError as e:
            raise ControlError(f"control socket: {e}") from None
        reply = self._read()
        if "error" in reply:
            raise ControlError(reply["error"].get("desc", "error"))
        return reply.get("return")

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def execute(path: str, command: str, timeout: float = 5.0) -> Any:
    """One command on a fresh connection."""
    with ControlClient(path, timeout) as client:
        return client.execute(command)
