"""virtio-net over a tap device, with three data paths.

- vhost (`-netdev tap,...,vhost=on`): the guest's queue kicks arrive on
  ioeventfds (KVM_IOEVENTFD on the QueueNotify register: no vCPU exit to
  userspace) and interrupts leave through an irqfd (KVM_IRQFD). Where
  /dev/vhost-net (or `vhostdev=`) can serve the device, the queues are handed
  to the kernel, whose `vhost-<pid>` worker moves the packets
  (`vhost_kernel.py`; query-vm says `"vhost": "kernel"`). Elsewhere (these
  hosts) a worker thread of ours named `vhost-<pid>` serves the same queues
  from the same eventfds (`"vhost": "userspace"`, with the reason).
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
from computed.vmm.devices.vhost_kernel import VhostError, VhostNet, VhostUnavailable
from computed.vmm.devices.virtio_mmio import (
    F_VERSION_1,
    INT_USED_BUFFER,
    REG_QUEUE_NOTIFY,
    VirtioMmio,
)
from computed.vmm.devices.virtqueue import Virtqueue, VirtqueueError
from computed.vmm.errors import UsageError
from computed.vmm.kvm import ioctl
from computed.vmm.memory import GuestMemory

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from collections.abc import Callable

F_MAC = 1 << 5
HDR_SIZE = 12  # struct virtio_net_hdr_v1
RX, TX = 0, 1
_NUM_BUFFERS = struct.Struct("<H")


class VirtioNet:
    device_id = 1
    features = F_VERSION_1 | F_MAC
    queue_max = lib.COMPUTED_VIRTIO_QUEUE_MAX

    def __init__(
        self,
        ifname: str,
        mac: bytes,
        vhost: bool,
        vhost_device: str,
        memory: GuestMemory,
        log: Callable[[str], None],
    ) -> None:
        self.ifname, self.mac, self.vhost = ifname, mac, vhost
        fd = lib.vmm_tap_open(ifname.encode(), HDR_SIZE)
        if fd < 0:
            raise UsageError(f"-netdev tap,ifname={ifname}: {os.strerror(-fd)}")
        self.tap = fd
        self.kernel: VhostNet | None = None
        self.vhost_note = ""  # why the kernel's vhost-net is not in use
        if vhost:
            try:
                self.kernel = VhostNet(vhost_device, memory, fd)
            except VhostUnavailable as e:
                self.vhost_note = str(e)
                if os.path.exists(vhost_device):  # there but refused: worth a log line
                    log(f"{ifname}: kernel vhost-net refused ({e}); the userspace worker serves")
        self.transport: VirtioMmio | None = None
        self.queues: list[Virtqueue] = []
        self.active = False
        self.generation = 0  # bumped by each reset: a ring error from before is stale
        self.rx_packets = self.tx_packets = self.rx_bytes = self.tx_bytes = 0
        self.rx_kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.tx_kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # irqfd (vhost path)
        self.ring_error = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # kernel vhost's
        self._stop = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread: threading.Thread | None = None

    @property
    def vhost_kind(self) -> str:
        if not self.vhost:
            return "off"
        return "kernel" if self.kernel is not None else "userspace"

    @property
    def data_path(self) -> str:
        return "vcpu-exits" if not self.vhost else f"vhost-{self.vhost_kind}"

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
        if self.kernel is not None:
            transport.isr_sticky = INT_USED_BUFFER  # the kernel signals without setting it

    def start(self) -> None:
        if self.kernel is not None:
            target, name = self._watch_ring_errors, "vhost-errors"
        else:
            target, name = self._serve, f"vhost-{os.getpid()}" if self.vhost else "net-rx"
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            os.eventfd_write(self._stop, 1)
            self._thread.join(timeout=2)
        if self.kernel is not None:
            self.kernel.close()
        for fd in (self.tap, self.rx_kick, self.tx_kick, self.call, self.ring_error, self._stop):
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
        if self.kernel is None:
            os.eventfd_write(self.rx_kick, 1)  # receive buffers may be waiting already
            return
        t = self.transport
        assert t is not None  # attached before the guest runs
        try:
            self.kernel.start(
                queues,
                t.driver_features,
                [self.rx_kick, self.tx_kick],
                self.call,
                self.ring_error,
            )
        except (VhostError, VirtqueueError) as e:
            t.fail(str(e))

    def kick(self, queue: int) -> None:
        """A QueueNotify that came as an MMIO exit (the plain path)."""
        if queue == TX:
            self._transmit()
        elif queue == RX:
            os.eventfd_write(self.rx_kick, 1)

    def reset(self) -> None:
        self.active = False
        self.queues = []
        self.generation += 1
        if self.kernel is not None:
            self.kernel.stop()  # returns once the kernel's worker is off the rings
            _drain(self.ring_error)

    def _watch_ring_errors(self) -> None:
        """Kernel path: a ring the kernel refused becomes DEVICE_NEEDS_RESET, as elsewhere."""
        lib.vmm_set_thread_name(threading.current_thread().name.encode())
        poller = select.poll()
        for fd in (self.ring_error, self._stop):
            poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop in ready:
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
        counted = self.kernel is None  # the kernel's worker keeps no counters for us
        return {
            "ifname": self.ifname,
            "mac": ":".join(f"{b:02x}" for b in self.mac),
            "data_path": self.data_path,
            "vhost": self.vhost_kind,
            "vhost_note": self.vhost_note,
            "broken": t.broken if t is not None else "",
            "notify_exits": t.notify_exits if t is not None else 0,
            "rx_packets": self.rx_packets if counted else None,
            "tx_packets": self.tx_packets if counted else None,
            "rx_bytes": self.rx_bytes if counted else None,
            "tx_bytes": self.tx_bytes if counted else None,
        }


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass
