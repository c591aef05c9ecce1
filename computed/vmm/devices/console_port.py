"""The guest ABI's console write port (version 3): a whole string in one exit.

Where KVM emulates string I/O (the PVM hosts we run on), a `rep outsb` to COM1
exits to this process once per byte: the heartbeat's first line was 56 exits and
about 1.5 ms of its vCPU's time at every boot. Through this port the guest
writes, with one 32-bit `out`, the guest-physical address of a
struct computed_console_write {gpa, len, reserved}; its bytes go to the same
console as COM1's.

A request this cannot honour (not one 4-byte write, the descriptor or the bytes
outside guest RAM, len over COMPUTED_CONSOLE_WRITE_MAX) writes nothing and is
counted in `refused` (query-vm): the guest loses only that output.
"""

from __future__ import annotations

import struct

from computed.vmm._kvm import ffi, lib
from computed.vmm.devices.console import ConsoleSink
from computed.vmm.memory import GuestMemory, GuestMemoryError

_DESCRIPTOR = struct.Struct("<QII")  # struct computed_console_write
assert _DESCRIPTOR.size == ffi.sizeof("struct computed_console_write")


class ConsoleWritePort:
    def __init__(self, memory: GuestMemory, sink: ConsoleSink) -> None:
        self.memory, self.sink = memory, sink
        self.refused = 0

    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def write(self, offset: int, data: bytes) -> None:
        text = self._text(offset, data)
        if text is None:
            self.refused += 1
        else:
            self.sink.write(text)

    def _text(self, offset: int, data: bytes) -> bytes | None:
        if offset != 0 or len(data) != 4:
            return None
        try:
            descriptor = self.memory.view(int.from_bytes(data, "little"), _DESCRIPTOR.size)
            gpa, length, _reserved = _DESCRIPTOR.unpack(descriptor)
            if length > lib.COMPUTED_CONSOLE_WRITE_MAX:
                return None
            return bytes(self.memory.view(gpa, length))
        except GuestMemoryError:
            return None
