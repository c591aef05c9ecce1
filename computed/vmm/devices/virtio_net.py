"""virtio-net over a tap device, with two data paths.

- vhost (`-netdev tap,...,vhost=on`): a worker thread named `vhost-<pid>`
  serves both queues. The guest's queue kicks reach it through ioeventfds
  (KVM_IOEVENTFD on the QueueNotify register: no vCPU exit to userspace)
  and it interrupts the guest through an irqfd (KVM_IRQFD), which is what the
  kernel's vhost-net worker does where /dev/vhost-net exists. These hosts have
  no /dev/vhost-net, so the worker is ours; query-vm says `"vhost": "userspace"`.
- plain (`vhost=off`): transmit kicks are served on the vCPU's MMIO exit,
  the receive side by an I/O thread (`net-rx`), interrupts by KVM_IRQ_LINE.

The tap carries a 12-byte virtio_net_hdr_v1 before each frame
(IFF_VNET_HDR), so frames move between tap and guest buffers with readv and
writev straight from and into guest memory, header included.
"""

from __future__ import annotations

import os
import select
import struct
import threading

from computed.vmm._kvm import ffi, lib
from computed.vmm.devices.virtio_mmio import (
    F_VERSION_1,
    REG_QUEUE_NOTIFY,
    VirtioMmio,
)
from computed.vmm.devices.virtqueue import Virtqueue, VirtqueueError
from computed.vmm.errors import UsageError
from computed.vmm.kvm import ioctl

F_MAC = 1 << 5
HDR_SIZE = 12  # struct virtio_net_hdr_v1
RX, TX = 0, 1
_NUM_BUFFERS = struct.Struct("<H")


class VirtioNet:
    device_id = 1
    features = F_VERSION_1 | F_MAC
    queue_max = lib.COMPUTED_VIRTIO_QUEUE_MAX

    def __init__(self, ifname: str, mac: bytes, vhost: bool) -> None:
        self.ifname, self.mac, self.vhost = ifname, mac, vhost
        fd = lib.vmm_tap_open(ifname.encode(), HDR_SIZE)
        if fd < 0:
            raise UsageError(f"-netdev tap,ifname={ifname}: {os.strerror(-fd)}")
        self.tap = fd
        self.transport: VirtioMmio | None = None
        self.queues: list[Virtqueue] = []
        self.active = False
        self.rx_packets = self.tx_packets = self.rx_bytes = self.tx_bytes = 0
        self.rx_kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.tx_kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # irqfd (vhost path)
        self._stop = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread: threading.Thread | None = None

    @property
    def data_path(self) -> str:
        return "vhost-userspace" if self.vhost else "vcpu-exits"

    # --- wiring into the VM --------------------------------------------------------
    def attach(self, vm_fd: int, transport: VirtioMmio, mmio_gpa: int, irq: int) -> None:
        """With vhost: kicks by ioeventfd and interrupts by irqfd, set up in KVM."""
        self.transport = transport
        if not self.vhost:
            return
        for queue, fd in ((RX, self.rx_kick), (TX, self.tx_kick)):
            ev = ffi.new("struct kvm_ioeventfd *", {
                "datamatch": queue, "addr": mmio_gpa + REG_QUEUE_NOTIFY, "len": 4, "fd": fd,
                "flags": lib.KVM_IOEVENTFD_FLAG_DATAMATCH,
            })  # fmt: skip
            ioctl(vm_fd, lib.KVM_IOEVENTFD, ev, "KVM_IOEVENTFD")
        irqfd = ffi.new("struct kvm_irqfd *", {"fd": self.call, "gsi": irq})
        ioctl(vm_fd, lib.KVM_IRQFD, irqfd, "KVM_IRQFD")

    def start(self) -> None:
        name = f"vhost-{os.getpid()}" if self.vhost else "net-rx"
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            os.eventfd_write(self._stop, 1)
            self._thread.join(timeout=2)
        for fd in (self.tap, self.rx_kick, self.tx_kick, self.call, self._stop):
            os.close(fd)

    def signal_guest(self) -> None:
        """The vhost path's interrupt: the irqfd KVM turns into an edge on the IRQ."""
        os.eventfd_write(self.call, 1)

    # --- the transport's calls -----------------------------------------------------
    def config(self) -> bytes:
        return self.mac

    def activate(self, queues: list[Virtqueue]) -> None:
        self.queues = queues
        self.active = True
        os.eventfd_write(self.rx_kick, 1)  # receive buffers may be waiting already

    def kick(self, queue: int) -> None:
        """A QueueNotify that came as an MMIO exit (the plain path)."""
        if queue == TX:
            self._transmit()
        elif queue == RX:
            os.eventfd_write(self.rx_kick, 1)

    def reset(self) -> None:
        self.active = False
        self.queues = []

    # --- the data path -------------------------------------------------------------
    def _serve(self) -> None:
        lib.vmm_set_thread_name(threading.current_thread().name.encode())
        poller = select.poll()
        for fd in (self.rx_kick, self.tx_kick, self._stop):
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
            if self._stop in ready:
                return
            for fd in ready & {self.rx_kick, self.tx_kick}:
                _drain(fd)
            if self.tx_kick in ready:
                self._transmit()
            if self.tap in ready or self.rx_kick in ready:
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
        t = self.transport
        if t is None:
            return
        sent = 0
        with t.lock:
            if not self.active or t.broken:
                return
            q = self.queues[TX]
            try:
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
            except VirtqueueError as e:
                t.fail(f"transmit queue: {e}")
                return
            if sent and q.wants_interrupt():
                t.interrupt()

    def _receive(self) -> None:
        t = self.transport
        if t is None:
            return
        received = 0
        with t.lock:
            if not self.active or t.broken:
                return
            q = self.queues[RX]
            try:
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
                    views[0][10:12] = _NUM_BUFFERS.pack(1)
                    q.push(head, n)
                    received += 1
                    self.rx_packets += 1
                    self.rx_bytes += max(0, n - HDR_SIZE)
            except VirtqueueError as e:
                t.fail(f"receive queue: {e}")
                return
            if received and q.wants_interrupt():
                t.interrupt()

    def describe(self) -> dict[str, object]:
        t = self.transport
        return {
            "ifname": self.ifname,
            "mac": ":".join(f"{b:02x}" for b in self.mac),
            "data_path": self.data_path,
            "vhost": "userspace" if self.vhost else "off",
            "broken": t.broken if t is not None else "",
            "notify_exits": t.notify_exits if t is not None else 0,
            "rx_packets": self.rx_packets,
            "tx_packets": self.tx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_bytes": self.tx_bytes,
        }


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass
