"""What every virtio-net data path is, and the parts two or three of them share.

A data path moves a NIC's frames between its tap and the guest's queues. The
device model (`virtio_net.py`: config space, features, the transport's calls)
is the same for all of them and hands each call on to its data path, so no
method branches on which path serves. There are three (the way Firecracker
keeps `net/device.rs` apart from `net/vhost/device.rs`):

- `vcpu-exits` (`net_path_userspace.VcpuExitPath`): kicks as vCPU exits, a
  `net-rx` thread, interrupts by KVM_IRQ_LINE;
- `vhost-userspace` (`net_path_userspace.UserspaceVhostPath`): kicks on
  ioeventfds, interrupts by irqfd, a `vhost-<pid>` thread of ours;
- `vhost-kernel` (`net_path_kernel.KernelVhostPath`): the same eventfds
  handed to the kernel's vhost-net, whose own `vhost-<pid>` worker serves.
"""

from __future__ import annotations

import os
import threading

from computed.vmm import seccomp
from computed.vmm._kvm import ffi, lib
from computed.vmm.devices.virtio_mmio import REG_QUEUE_NOTIFY
from computed.vmm.kvm import ioctl

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from computed.vmm.devices.virtio_mmio import VirtioMmio
    from computed.vmm.devices.virtqueue import Virtqueue

    class NetDataPath(Protocol):
        kind: str  # query-vm's "vhost": "kernel", "userspace" or "off"
        name: str  # query-vm's "data_path": "vhost-kernel", "vhost-userspace", "vcpu-exits"

        def attach(self, vm_fd: int, transport: VirtioMmio, mmio_gpa: int, irq: int) -> None:
            """Wire into KVM, before the guest runs."""

        def start(self) -> None:
            """Start the path's thread (the VM starts)."""

        def activate(self, queues: list[Virtqueue]) -> None:
            """The driver set DRIVER_OK: serve these queues (called under the transport lock)."""

        def kick(self, queue: int) -> None:
            """A QueueNotify that came as a vCPU exit."""

        def reset(self) -> None:
            """Device reset (under the transport lock): returns once nothing touches the rings."""

        def counters(self) -> dict[str, int | None]:
            """query-vm's packet and byte counters, in COUNTERS order."""

        def close(self) -> None:
            """Stop the thread and release what the path opened (not the tap)."""

    class VhostDataPath(NetDataPath, Protocol):
        def signal_guest(self) -> None:
            """The guest's interrupt through the irqfd (machine.py routes only these here)."""


RX, TX = 0, 1  # queue indices; also each queue's QueueNotify value
HDR_SIZE = 12  # struct virtio_net_hdr_v1, before every frame on the tap
COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")
_JOIN_TIMEOUT = 2.0  # seconds a closing path waits for its thread


def new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def drain(fd: int) -> None:
    """Take whatever an eventfd holds, if anything."""
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass


def queue_kicks() -> list[int]:
    """An eventfd per queue (RX, TX): what wakes whoever serves that queue."""
    return [new_eventfd() for _ in (RX, TX)]


class VhostEventfds:
    """The eventfds KVM serves a vhost path with: a kick per queue (KVM_IOEVENTFD on
    QueueNotify, matched by queue index: no vCPU exit) and a call (KVM_IRQFD)."""

    def __init__(self) -> None:
        self.kicks = queue_kicks()
        self.call = new_eventfd()

    def attach(self, vm_fd: int, mmio_gpa: int, irq: int) -> None:
        for queue, fd in enumerate(self.kicks):
            ev = ffi.new("struct kvm_ioeventfd *", {
                "datamatch": queue, "addr": mmio_gpa + REG_QUEUE_NOTIFY, "len": 4, "fd": fd,
                "flags": lib.KVM_IOEVENTFD_FLAG_DATAMATCH,
            })  # fmt: skip
            ioctl(vm_fd, lib.KVM_IOEVENTFD, ev, "KVM_IOEVENTFD")
        irqfd = ffi.new("struct kvm_irqfd *", {"fd": self.call, "gsi": irq})
        ioctl(vm_fd, lib.KVM_IRQFD, irqfd, "KVM_IRQFD")

    def kick(self, queue: int) -> None:
        """Pass on a kick that came another way, as the ioeventfd would have."""
        if queue in (RX, TX):
            os.eventfd_write(self.kicks[queue], 1)

    def signal_guest(self) -> None:
        """The irqfd KVM turns into an edge on the NIC's IRQ."""
        os.eventfd_write(self.call, 1)

    def close(self) -> None:
        for fd in (*self.kicks, self.call):
            os.close(fd)


class PathThread:
    """A data path's daemon thread and the eventfd that makes its poll loop return."""

    def __init__(self) -> None:
        self.stop_fd = new_eventfd()
        self._thread: threading.Thread | None = None

    def start(self, name: str, loop: Callable[[], None]) -> None:
        def main() -> None:
            lib.vmm_set_thread_name(name.encode())  # what ps and the agent's stats see
            seccomp.confine("vhost")  # after naming: prctl is not in the vhost role
            loop()

        self._thread = threading.Thread(target=main, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            os.eventfd_write(self.stop_fd, 1)
            self._thread.join(timeout=_JOIN_TIMEOUT)
        os.close(self.stop_fd)
