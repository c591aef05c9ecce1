"""The data paths on which this process moves the frames: `vcpu-exits` and `vhost-userspace`.

Both move frames between the tap and guest buffers with readv and writev
straight from and into guest memory, header included (the tap carries a
virtio_net_hdr_v1 before each frame: IFF_VNET_HDR), and both only read the
tap while the guest has receive buffers posted, so a guest that stops posting
them leaves packets queued in the tap, never a busy loop. They differ only in
how kicks and interrupts travel and in their thread's name:

- `vcpu-exits` (`vhost=off`): transmit kicks are served on the vCPU's MMIO
  exit, the receive side by a `net-rx` thread, interrupts by KVM_IRQ_LINE;
- `vhost-userspace` (`vhost=on` where the kernel's vhost-net cannot serve):
  kicks arrive on ioeventfds and interrupts leave through an irqfd, and a
  thread named like the kernel's worker, `vhost-<pid>`, serves both queues.
"""

from __future__ import annotations

import os
import select
import struct

from computed.vmm.devices.net_path import (
    COUNTERS,
    HDR_SIZE,
    RX,
    TX,
    PathThread,
    VhostEventfds,
    drain,
    queue_kicks,
)
from computed.vmm.devices.virtqueue import Virtqueue, VirtqueueError

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from collections.abc import Callable

    from computed.vmm.devices.virtio_mmio import VirtioMmio

_NUM_BUFFERS = struct.Struct("<H")
_NUM_BUFFERS_OFFSET = 10  # of virtio_net_hdr_v1.num_buffers


class TapWorker:
    """Serves a NIC's queues from a thread of this process; the paths below differ in wiring."""

    kind = name = ""  # set by each path

    def __init__(self, tap: int, kicks: list[int]) -> None:
        self.tap = tap
        self.kicks = kicks  # by queue: what wakes the thread for it (the path owns them)
        self.transport: VirtioMmio | None = None
        self.queues: list[Virtqueue] = []
        self.active = False
        self.rx_packets = self.tx_packets = self.rx_bytes = self.tx_bytes = 0
        self.thread = PathThread()

    def thread_name(self) -> str:
        raise NotImplementedError

    def attach(self, vm_fd: int, transport: VirtioMmio, mmio_gpa: int, irq: int) -> None:
        self.transport = transport

    def start(self) -> None:
        self.thread.start(self.thread_name(), self._serve)

    def activate(self, queues: list[Virtqueue]) -> None:
        self.queues = queues
        self.active = True
        os.eventfd_write(self.kicks[RX], 1)  # receive buffers may be waiting already

    def kick(self, queue: int) -> None:
        if queue == TX:
            self._transmit()
        elif queue == RX:
            os.eventfd_write(self.kicks[RX], 1)

    def reset(self) -> None:
        self.active = False
        self.queues = []

    def counters(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in COUNTERS}

    def close(self) -> None:
        self.thread.close()  # before the path closes the eventfds the thread uses

    # --- the thread ------------------------------------------------------------------
    def _serve(self) -> None:
        stop, rx_kick, tx_kick = self.thread.stop_fd, self.kicks[RX], self.kicks[TX]
        poller = select.poll()
        for fd in (rx_kick, tx_kick, stop):
            poller.register(fd, select.POLLIN)
        watching_tap = False
        while True:
            want_tap = self._rx_room()
            if want_tap != watching_tap:
                if want_tap:
                    poller.register(self.tap, select.POLLIN)
                else:
                    poller.unregister(self.tap)
                watching_tap = want_tap
            ready = {fd for fd, _ in poller.poll()}
            if stop in ready:
                return
            for fd in ready & {rx_kick, tx_kick}:
                drain(fd)
            if tx_kick in ready:
                self._transmit()
            if self.tap in ready or rx_kick in ready:
                self._receive()

    def _rx_room(self) -> bool:
        t, queues = self.transport, self.queues  # one look: a reset may swap them meanwhile
        if not self.active or t is None or t.broken or not queues:
            return False
        try:
            return queues[RX].ready and queues[RX].pending() > 0
        except VirtqueueError as e:
            t.fail(f"receive queue: {e}")
            return False

    def _transmit(self) -> None:
        self._serve_queue(TX, "transmit queue", self._send)

    def _receive(self) -> None:
        self._serve_queue(RX, "receive queue", self._fill)

    def _serve_queue(self, index: int, what: str, move: Callable[[Virtqueue], int]) -> None:
        """Move a batch under the transport lock, then one interrupt if the driver wants it.
        A malformed ring breaks the device instead (and raises no used-buffer interrupt)."""
        t = self.transport
        if t is None:
            return
        with t.lock:
            if not self.active or t.broken:
                return
            q = self.queues[index]
            try:
                moved = move(q)
            except VirtqueueError as e:
                t.fail(f"{what}: {e}")
                return
            if moved and q.wants_interrupt():
                t.interrupt()

    def _send(self, q: Virtqueue) -> int:
        """Write each transmit chain to the tap; returns how many chains were used."""
        sent = 0
        while (chain := q.pop()) is not None:
            head, parts = chain
            views = [q.memory.view(a, n) for a, n, w in parts if not w]
            size = sum(len(v) for v in views)
            if size > HDR_SIZE:
                try:
                    os.writev(self.tap, views)
                    self.tx_packets += 1
                    self.tx_bytes += size - HDR_SIZE
                except OSError:
                    pass  # tap full or down: dropped, as a NIC drops
            q.push(head, 0)
            sent += 1
        return sent

    def _fill(self, q: Virtqueue) -> int:
        """Read a frame from the tap into each receive chain until either runs out."""
        received = 0
        while (chain := q.pop()) is not None:
            head, parts = chain
            views = [q.memory.view(a, n) for a, n, w in parts if w]
            if not views or len(views[0]) < HDR_SIZE:
                raise VirtqueueError("receive buffer shorter than the virtio-net header")
            try:
                n = os.readv(self.tap, views)
            except BlockingIOError:
                q.unpop()
                break
            views[0][_NUM_BUFFERS_OFFSET:HDR_SIZE] = _NUM_BUFFERS.pack(1)
            q.push(head, n)
            received += 1
            self.rx_packets += 1
            self.rx_bytes += max(0, n - HDR_SIZE)
        return received


class VcpuExitPath(TapWorker):
    """`vhost=off`: kicks come as vCPU exits; the `net-rx` thread waits for the tap."""

    kind, name = "off", "vcpu-exits"

    def __init__(self, tap: int) -> None:
        super().__init__(tap, queue_kicks())

    def thread_name(self) -> str:
        return "net-rx"

    def close(self) -> None:
        super().close()
        for fd in self.kicks:
            os.close(fd)


class UserspaceVhostPath(TapWorker):
    """`vhost=on` without the kernel's vhost-net: our `vhost-<pid>` thread, same eventfds."""

    kind, name = "userspace", "vhost-userspace"

    def __init__(self, tap: int) -> None:
        self.eventfds = VhostEventfds()
        super().__init__(tap, self.eventfds.kicks)

    def thread_name(self) -> str:
        return f"vhost-{os.getpid()}"  # as the kernel names its worker for this process

    def attach(self, vm_fd: int, transport: VirtioMmio, mmio_gpa: int, irq: int) -> None:
        super().attach(vm_fd, transport, mmio_gpa, irq)
        self.eventfds.attach(vm_fd, mmio_gpa, irq)

    def signal_guest(self) -> None:
        self.eventfds.signal_guest()

    def close(self) -> None:
        super().close()
        self.eventfds.close()
