"""A split virtqueue (virtio 1.x, 2.7), served from guest memory with every access checked.

The guest owns the rings; everything read from them is hostile input. Each
descriptor's address and length must lie inside guest RAM (GuestMemory.view
checks), a chain may not be longer than the queue (which catches loops), its
total length is capped, and the available index may not run ahead by more
than the queue size. Any violation raises VirtqueueError; the device then
marks itself broken (DEVICE_NEEDS_RESET) and stops touching the queue.
"""

from __future__ import annotations

import struct

from computed.vmm.memory import GuestMemory, GuestMemoryError

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1
MAX_CHAIN_BYTES = 1 << 20  # far above any frame; a bound on what one chain may claim

_DESC = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")


class VirtqueueError(Exception):
    """The guest's ring is malformed; the message says how."""


class Virtqueue:
    __slots__ = ("avail", "desc", "last_avail", "memory", "ready", "size", "used", "used_idx")

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        self.size = 0
        self.desc = self.avail = self.used = 0
        self.ready = False
        self.last_avail = 0  # next available-ring slot to take
        self.used_idx = 0

    def reset(self) -> None:
        self.size = 0
        self.desc = self.avail = self.used = 0
        self.ready = False
        self.last_avail = self.used_idx = 0

    def activate(self) -> None:
        """Check the ring addresses the driver set (QueueReady = 1)."""
        n = self.size
        if not n or n & (n - 1):
            raise VirtqueueError(f"queue size {n} is not a power of two")
        self.rings()
        self.ready = True

    def rings(self) -> tuple[memoryview, memoryview, memoryview]:
        """The descriptor table, available ring and used ring, each checked in guest RAM."""
        n = self.size
        try:
            return (
                self.memory.view(self.desc, 16 * n),
                self.memory.view(self.avail, 6 + 2 * n),
                self.memory.view(self.used, 6 + 8 * n),
            )
        except GuestMemoryError as e:
            raise VirtqueueError(f"ring outside guest RAM: {e}") from None

    def pending(self) -> int:
        """Chains the driver has made available and we have not taken."""
        avail_idx = self._u16(self.avail + 2)
        ahead = (avail_idx - self.last_avail) & 0xFFFF
        if ahead > self.size:
            raise VirtqueueError(f"available index ran {ahead} ahead of a {self.size}-entry ring")
        return ahead

    def pop(self) -> tuple[int, list[tuple[int, int, bool]]] | None:
        """(head, [(gpa, length, device_writable), ...]) of the next chain, or None."""
        if not self.ready or not self.pending():
            return None
        slot = self.last_avail % self.size
        head = self._u16(self.avail + 4 + 2 * slot)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return head, self._chain(head)

    def _chain(self, head: int) -> list[tuple[int, int, bool]]:
        chain = []
        total = 0
        index = head
        for _ in range(self.size):
            if index >= self.size:
                raise VirtqueueError(f"descriptor index {index} outside a {self.size}-entry table")
            addr, length, flags, nxt = _DESC.unpack(self.memory.view(self.desc + 16 * index, 16))
            if flags & DESC_F_INDIRECT:
                raise VirtqueueError("indirect descriptors were not negotiated")
            total += length
            if total > MAX_CHAIN_BYTES:
                raise VirtqueueError(f"chain at {head} claims more than {MAX_CHAIN_BYTES} bytes")
            try:
                self.memory.view(addr, length)
            except GuestMemoryError as e:
                raise VirtqueueError(f"descriptor {index}: {e}") from None
            chain.append((addr, length, bool(flags & DESC_F_WRITE)))
            if not flags & DESC_F_NEXT:
                return chain
            index = nxt
        raise VirtqueueError(f"chain at {head} is longer than the queue (a loop?)")

    def unpop(self) -> None:
        """Give back the chain `pop` just returned (the device had nothing to put in it)."""
        self.last_avail = (self.last_avail - 1) & 0xFFFF

    def push(self, head: int, written: int) -> None:
        """Return a chain to the driver with `written` bytes filled in."""
        slot = self.used_idx % self.size
        self.memory.view(self.used + 4 + 8 * slot, 8)[:] = _USED_ELEM.pack(head, written)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.memory.view(self.used + 2, 2)[:] = _U16.pack(self.used_idx)

    def wants_interrupt(self) -> bool:
        return not self._u16(self.avail) & AVAIL_F_NO_INTERRUPT

    def _u16(self, gpa: int) -> int:
        return _U16.unpack(self.memory.view(gpa, 2))[0]
