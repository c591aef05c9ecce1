"""The `vhost-kernel` data path: the kernel's vhost-net moves the frames.

The queues, their ioeventfd kicks and irqfd call are handed to /dev/vhost-net
at DRIVER_OK (`vhost_kernel.VhostNet` does the ioctls) and the kernel's
`vhost-<pid>` worker serves them without this process. What is left here:

- InterruptStatus: the kernel signals the irqfd and never sets virtio-mmio's
  used-buffer bit, so the transport keeps it up (`isr_sticky`).
- A ring the kernel refuses: it signals the error eventfd, and a
  `vhost-errors` thread turns that into DEVICE_NEEDS_RESET, as on the other
  paths. A reset drains that eventfd and bumps a generation, so an error from
  before the reset never breaks the driver's next session.
- Counters: the kernel's worker keeps none for us; query-vm says null.
"""

from __future__ import annotations

import os
import select

from computed.vmm.devices.net_path import (
    COUNTERS,
    PathThread,
    VhostEventfds,
    drain,
    new_eventfd,
)
from computed.vmm.devices.vhost_kernel import VhostError, VhostNet
from computed.vmm.devices.virtio_mmio import INT_USED_BUFFER
from computed.vmm.devices.virtqueue import Virtqueue, VirtqueueError

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from computed.vmm.devices.virtio_mmio import VirtioMmio


class KernelVhostPath:
    kind, name = "kernel", "vhost-kernel"

    def __init__(self, kernel: VhostNet) -> None:
        self.kernel = kernel
        self.eventfds = VhostEventfds()
        self.ring_error = new_eventfd()  # VHOST_SET_VRING_ERR's: the kernel refused a ring
        self.transport: VirtioMmio | None = None
        self.active = False
        self.generation = 0  # bumped by each reset: a ring error from before is stale
        self.thread = PathThread()

    def attach(self, vm_fd: int, transport: VirtioMmio, mmio_gpa: int, irq: int) -> None:
        self.transport = transport
        self.eventfds.attach(vm_fd, mmio_gpa, irq)
        transport.isr_sticky = INT_USED_BUFFER  # the kernel signals without setting it

    def start(self) -> None:
        self.thread.start("vhost-errors", self._watch_ring_errors)

    def activate(self, queues: list[Virtqueue]) -> None:
        self.active = True
        t = self.transport
        assert t is not None  # attached before the guest runs
        e = self.eventfds
        try:
            self.kernel.start(queues, t.driver_features, e.kicks, e.call, self.ring_error)
        except (VhostError, VirtqueueError) as err:
            t.fail(str(err))

    def kick(self, queue: int) -> None:
        """Kicks reach the kernel by ioeventfd; one that came as an exit is passed on."""
        self.eventfds.kick(queue)

    def reset(self) -> None:
        self.active = False
        self.generation += 1
        self.kernel.stop()  # returns once the kernel's worker is off the rings
        drain(self.ring_error)

    def counters(self) -> dict[str, int | None]:
        return dict.fromkeys(COUNTERS)  # the kernel's worker keeps none for us

    def signal_guest(self) -> None:
        self.eventfds.signal_guest()

    def close(self) -> None:
        self.thread.close()
        self.kernel.close()  # closing the fd ends the kernel's worker
        self.eventfds.close()
        os.close(self.ring_error)

    def _watch_ring_errors(self) -> None:
        """A ring the kernel refused becomes DEVICE_NEEDS_RESET, as on the other paths."""
        stop = self.thread.stop_fd
        poller = select.poll()
        for fd in (self.ring_error, stop):
            poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if stop in ready:
                return
            generation = self.generation  # before the read: a reset meanwhile drains it
            try:
                os.eventfd_read(self.ring_error)
            except BlockingIOError:
                continue
            t = self.transport
            if t is not None:
                with t.lock:
                    if self.active and self.generation == generation:
                        t.fail("the kernel's vhost-net stopped a queue: malformed ring")
