"""The virtio-mmio transport (virtio 1.x, 4.2.2, register layout version 2).

Generic over the device behind it (a `VirtioBackend`: virtio-net here): the
transport keeps the status, feature negotiation, queue configuration and the
interrupt status register, and tells the backend when the driver is ready,
kicks a queue or resets. The queue-notify register may be bypassed by an
ioeventfd (the vhost data path): then kicks reach the backend's worker
without a vCPU exit through here.
"""

from __future__ import annotations

import struct
import threading

from computed.vmm.devices.virtqueue import Virtqueue, VirtqueueError
from computed.vmm.memory import GuestMemory

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class VirtioBackend(Protocol):
        device_id: int
        features: int
        queue_max: int

        def config(self) -> bytes: ...

        def activate(self, queues: list[Virtqueue]) -> None: ...

        def kick(self, queue: int) -> None: ...

        def reset(self) -> None: ...


MAGIC = 0x74726976  # "virt"
VERSION = 2
VENDOR = 0x434D5044  # "CMPD"
STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK = 1, 2, 4
STATUS_FEATURES_OK, STATUS_NEEDS_RESET, STATUS_FAILED = 8, 64, 128
INT_USED_BUFFER, INT_CONFIG_CHANGE = 1, 2
F_VERSION_1 = 1 << 32
REG_QUEUE_NOTIFY = 0x50
CONFIG_OFFSET = 0x100

_U32 = struct.Struct("<I")
# QueueNum, QueueReady, and the rings' addresses: writable while the queue is not ready.
_QUEUE_REGISTERS = frozenset((0x38, 0x44, 0x80, 0x84, 0x90, 0x94, 0xA0, 0xA4))


class VirtioMmio:
    def __init__(
        self,
        backend: VirtioBackend,
        memory: GuestMemory,
        queue_count: int,
        signal: Callable[[], None],
        log: Callable[[str], None],
    ) -> None:
        self.backend = backend
        self.queues = [Virtqueue(memory) for _ in range(queue_count)]
        self._signal = signal  # raise the device's interrupt line (edge)
        self._log = log
        self.lock = threading.Lock()  # vCPU threads, the main thread and the worker
        self.status = 0
        self.isr = 0
        self.isr_sticky = 0  # bits always read as set (the kernel vhost path's used-buffer)
        self.broken = ""
        self.notify_exits = 0  # kicks that came as vCPU exits (0 on the vhost path)
        self._device_sel = self._driver_sel = 0
        self._driver_features = 0
        self._queue_sel = 0

    # --- the guest's register accesses (vCPU threads) --------------------------
    def read(self, offset: int, size: int) -> bytes:
        if offset >= CONFIG_OFFSET:
            config = self.backend.config()
            start = offset - CONFIG_OFFSET
            return config[start : start + size].ljust(size, b"\0")
        if size != 4 or offset & 3:
            return b"\xff" * size
        return _U32.pack(self._register(offset) & 0xFFFFFFFF)

    def _register(self, offset: int) -> int:
        q = self.queues[self._queue_sel] if self._queue_sel < len(self.queues) else None
        if offset == 0x00:
            return MAGIC
        if offset == 0x04:
            return VERSION
        if offset == 0x08:
            return self.backend.device_id
        if offset == 0x0C:
            return VENDOR
        if offset == 0x10:
            return self.backend.features >> (32 * self._device_sel) if self._device_sel < 2 else 0
        if offset == 0x34:
            return self.backend.queue_max if q is not None else 0
        if offset == 0x44:
            return int(q.ready) if q is not None else 0
        if offset == 0x60:
            return self.isr | self.isr_sticky
        if offset == 0x70:
            return self.status
        if offset == 0xFC:
            return 0  # config generation: the config never changes
        return 0

    def write(self, offset: int, data: bytes) -> None:
        if offset >= CONFIG_OFFSET or len(data) != 4 or offset & 3:
            return  # the net config space is read-only
        value = _U32.unpack(data)[0]
        with self.lock:
            self._write_register(offset, value)

    def _write_register(self, offset: int, value: int) -> None:
        q = self.queues[self._queue_sel] if self._queue_sel < len(self.queues) else None
        if offset == 0x14:
            self._device_sel = value
        elif offset == 0x20 and self._driver_sel < 2:
            shift = 32 * self._driver_sel
            self._driver_features = (self._driver_features & ~(0xFFFFFFFF << shift)) | (
                value << shift
            )
        elif offset == 0x24:
            self._driver_sel = value
        elif offset == 0x30:
            self._queue_sel = value
        elif q is not None and not q.ready and offset in _QUEUE_REGISTERS:
            self._queue_register(q, offset, value)
        elif offset == 0x44 and q is not None and value == 0:
            q.ready = False
        elif offset == REG_QUEUE_NOTIFY:
            self.notify_exits += 1
            if self.status & STATUS_DRIVER_OK and not self.broken:
                self._lock_free_kick(value)
        elif offset == 0x64:
            self.isr &= ~value
        elif offset == 0x70:
            self._set_status(value)

    @property
    def driver_features(self) -> int:
        """What the driver accepted (valid once FEATURES_OK stuck)."""
        return self._driver_features

    def _queue_register(self, q: Virtqueue, offset: int, value: int) -> None:
        if offset == 0x38:
            q.size = value if value <= self.backend.queue_max else 0
        elif offset == 0x44 and value == 1:
            try:
                q.activate()
            except VirtqueueError as e:
                self.fail(str(e))
        elif offset in (0x80, 0x84, 0x90, 0x94, 0xA0, 0xA4):
            attr = {0x80: "desc", 0x90: "avail", 0xA0: "used"}[offset & ~4]
            old = getattr(q, attr)
            if offset & 4:
                setattr(q, attr, (old & 0xFFFFFFFF) | (value << 32))
            else:
                setattr(q, attr, (old & ~0xFFFFFFFF) | value)

    def _set_status(self, value: int) -> None:
        if value == 0:
            self._reset()
            return
        if value & STATUS_FEATURES_OK and not self.status & STATUS_FEATURES_OK:
            acceptable = self._driver_features & ~self.backend.features == 0
            if not acceptable or not self._driver_features & F_VERSION_1:
                value &= ~STATUS_FEATURES_OK  # the driver reads it back and gives up
        became_ok = value & STATUS_DRIVER_OK and not self.status & STATUS_DRIVER_OK
        self.status = value | (self.status & STATUS_NEEDS_RESET)
        if became_ok and not self.broken:
            self.backend.activate(self.queues)

    def _reset(self) -> None:
        self.backend.reset()
        for q in self.queues:
            q.reset()
        self.status = self.isr = 0
        self.broken = ""
        self._driver_features = self._device_sel = self._driver_sel = self._queue_sel = 0

    def reset(self) -> None:
        """The VM was reset: the device forgets the driver, as on a real reset line."""
        with self.lock:
            self._reset()

    def _lock_free_kick(self, queue: int) -> None:
        # Kicks are served with the lock released: the backend takes it per batch.
        self.lock.release()
        try:
            self.backend.kick(queue)
        finally:
            self.lock.acquire()

    # --- the backend's side -----------------------------------------------------
    def interrupt(self, reason: int = INT_USED_BUFFER) -> None:
        self.isr |= reason
        self._signal()

    def fail(self, why: str) -> None:
        """A malformed ring: stop serving the device until the driver resets it."""
        if not self.broken:
            self.broken = why
            self._log(f"virtio device broken: {why}")
            self.status |= STATUS_NEEDS_RESET
            self.interrupt(INT_CONFIG_CHANGE)
