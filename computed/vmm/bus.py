"""Address-range buses for port I/O and MMIO exits.

Devices register the ranges they claim; overlapping claims are refused when
inserted. The vCPU loop hands every exit to a bus and never grows a branch per
device. Accesses nobody claims are counted, logged (rate-limited) and answered
like an empty ISA bus: reads return all-ones, writes are dropped.
"""

from __future__ import annotations

import bisect

from computed.vmm.log import RateLimitedLog

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from typing import Protocol

    class Device(Protocol):
        """A device model: knows its registers, nothing about KVM or guest memory."""

        def read(self, offset: int, size: int) -> bytes: ...

        def write(self, offset: int, data: bytes) -> None: ...


class BusOverlapError(ValueError):
    pass


class Bus:
    def __init__(self, name: str, log: RateLimitedLog) -> None:
        self.name = name
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, Device]] = []
        self._log = log
        self.unclaimed = 0

    def insert(self, start: int, length: int, device: Device) -> None:
        end = start + length
        i = bisect.bisect_left(self._starts, start)
        if (i > 0 and self._ranges[i - 1][1] > start) or (
            i < len(self._ranges) and self._ranges[i][0] < end
        ):
            raise BusOverlapError(f"{self.name} range {start:#x}+{length:#x} overlaps a device")
        self._starts.insert(i, start)
        self._ranges.insert(i, (start, end, device))

    def _find(self, addr: int) -> tuple[int, Device] | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            start, end, device = self._ranges[i]
            if addr < end:
                return addr - start, device
        return None

    def read(self, addr: int, size: int) -> bytes:
        hit = self._find(addr)
        if hit is None:
            self._unclaimed("read", addr, size)
            return b"\xff" * size
        return hit[1].read(hit[0], size)

    def write(self, addr: int, data: bytes) -> None:
        hit = self._find(addr)
        if hit is None:
            self._unclaimed("write", addr, len(data))
            return
        hit[1].write(hit[0], data)

    def _unclaimed(self, op: str, addr: int, size: int) -> None:
        self.unclaimed += 1
        self._log.warn(f"unclaimed {self.name} {op} at {addr:#x} (size {size})")
