"""Guest RAM: anonymous host memory and the one checked guest→host translation.

Every guest-physical address the VMM touches on a guest's behalf goes through
`GuestMemory.view`, which refuses any range not wholly inside one RAM region.
This is the single place where a hostile guest's pointers meet host memory.
"""

from __future__ import annotations

import mmap

# The layout is part of the image rules (a segment may not sit in the hole).
from computed.guest_image import GIB, HIGH_RAM_BASE, LOW_RAM_LIMIT
from computed.vmm.errors import GuestMemoryError

__all__ = ["GIB", "HIGH_RAM_BASE", "LOW_RAM_LIMIT", "GuestMemory", "RamRegion", "ram_layout"]
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


class RamRegion:
    __slots__ = ("gpa", "host", "size", "slot")

    def __init__(self, slot: int, gpa: int, size: int, host: mmap.mmap) -> None:
        self.slot, self.gpa, self.size, self.host = slot, gpa, size, host

    @property
    def end(self) -> int:
        return self.gpa + self.size


def ram_layout(size: int) -> list[tuple[int, int]]:
    """(guest-physical base, size) of each RAM region for `size` bytes of RAM."""
    low = min(size, LOW_RAM_LIMIT)
    regions = [(0, low)]
    if size > low:
        regions.append((HIGH_RAM_BASE, size - low))
    return regions


class GuestMemory:
    """Guest RAM backed by MAP_NORESERVE anonymous memory: untouched pages cost nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.regions = [
            RamRegion(slot, gpa, length, _anonymous_map(length))
            for slot, (gpa, length) in enumerate(ram_layout(size))
        ]

    @property
    def below_4g(self) -> int:
        return self.regions[0].size

    @property
    def top(self) -> int:
        """One past the highest guest-physical RAM address."""
        return self.regions[-1].end

    def view(self, gpa: int, length: int) -> memoryview:
        """A writable view of guest RAM [gpa, gpa+length), or GuestMemoryError."""
        if length < 0 or gpa < 0:
            raise GuestMemoryError(f"bad guest range {gpa:#x}+{length:#x}")
        for region in self.regions:
            if region.gpa <= gpa and gpa + length <= region.end:
                start = gpa - region.gpa
                return memoryview(region.host)[start : start + length]
        raise GuestMemoryError(f"guest range {gpa:#x}+{length:#x} is outside guest RAM")

    def write(self, gpa: int, data: bytes) -> None:
        self.view(gpa, len(data))[:] = data

    def read(self, gpa: int, length: int) -> bytes:
        return bytes(self.view(gpa, length))

    def clear(self) -> None:
        """Give every page back to the host; the guest sees zeros afterwards."""
        for region in self.regions:
            region.host.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        for region in self.regions:
            region.host.close()


def _anonymous_map(length: int) -> mmap.mmap:
    return mmap.mmap(
        -1,
        length,
        flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE,
        prot=mmap.PROT_READ | mmap.PROT_WRITE,
    )
