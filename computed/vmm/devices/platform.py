"""The guest ABI's platform ports: power off, debug exit, events; and i8042 reset.

These devices only report what the guest asked for to a `Lifecycle`; the
machine decides what that means (stop the vCPUs, reset, exit with a code).
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from typing import Protocol

    class Lifecycle(Protocol):
        def guest_power_off(self) -> None: ...

        def guest_debug_exit(self, code: int) -> None: ...

        def guest_reset(self) -> None: ...


class PowerOffPort:
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def write(self, offset: int, data: bytes) -> None:
        self.lifecycle.guest_power_off()


class DebugExitPort:
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def write(self, offset: int, data: bytes) -> None:
        self.lifecycle.guest_debug_exit(int.from_bytes(data, "little"))


class EventPort:
    """Pending platform events (the power button); read to see, write bits to ack.

    `raise_event` is called by the host side (control socket, SIGTERM); `notify`
    pulses the event IRQ so an idle guest wakes up.
    """

    def __init__(self) -> None:
        self._pending = 0
        self._lock = threading.Lock()

    def raise_event(self, bits: int) -> None:
        with self._lock:
            self._pending |= bits

    def clear(self) -> None:
        with self._lock:
            self._pending = 0

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            value = self._pending
        return value.to_bytes(4, "little")[:size].ljust(size, b"\0")

    def write(self, offset: int, data: bytes) -> None:
        with self._lock:
            self._pending &= ~int.from_bytes(data, "little")


class I8042:
    """Just enough of the keyboard controller for the classic reset: 0xFE to port 0x64.

    Claims ports 0x60-0x64 (port 0x61 never arrives: the in-kernel PIT owns it);
    only the command port (offset 4) acts, so data written to 0x60 is ignored.
    """

    BASE = 0x60
    PORTS = 5
    COMMAND_OFFSET = 4
    RESET_COMMAND = 0xFE

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)  # status: output buffer empty, input buffer empty

    def write(self, offset: int, data: bytes) -> None:
        if offset == self.COMMAND_OFFSET and data[0] == self.RESET_COMMAND:
            self.lifecycle.guest_reset()
