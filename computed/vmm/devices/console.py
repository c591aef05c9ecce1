"""Where the guest's serial output goes: an unbuffered file with a size cap.

Unbuffered so a reader (the agent's console RPC, `tail -f`) sees bytes as the
guest writes them. Capped so a guest that prints forever cannot fill the
host's disk: past `max_bytes` the file is rotated to `<path>.0` (one backup,
like virtlogd's rotation of QEMU console logs). A confined VMM touches no
path, so it starts the file again in place instead (`confined()`).
"""

from __future__ import annotations

import os

DEFAULT_MAX_BYTES = 4 << 20


class ConsoleSink:
    def __init__(self, path: str | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fd = -1
        self._written = 0
        self._in_place = False
        self._at_line_start = True  # did the last byte written end a line?
        if path == "-":
            self._fd = os.dup(1)
        elif path is not None:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            self._written = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            return
        if self.path != "-" and self._written + len(data) > self.max_bytes:
            self._rotate()
        try:
            os.write(self._fd, data)
        except OSError:
            return  # a full disk must not take the guest down; output is lost
        self._written += len(data)
        if data:
            self._at_line_start = data.endswith(b"\n")

    def line(self, text: str) -> None:
        """A VMM line in the console (exit reasons), on a line of its own: a newline first
        only if the guest's last output did not end its line, so the guest's text is
        never changed and no blank line appears (docs/guest-abi.md, "VMM exit codes")."""
        start = b"" if self._at_line_start else b"\n"
        self.write(start + f"[computed-vmm] {text}\n".encode())

    def confined(self) -> None:
        """From now on the file is capped by truncating it through its fd: no rename."""
        self._in_place = True

    def _rotate(self) -> None:
        assert self.path is not None
        if self._in_place:
            try:
                os.ftruncate(self._fd, 0)  # O_APPEND: the next write lands at 0
                self._written = 0
            except OSError:
                pass
            return
        try:
            os.replace(self.path, self.path + ".0")
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        except OSError:
            return
        os.close(self._fd)
        self._fd = fd
        self._written = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
