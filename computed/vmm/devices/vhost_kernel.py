"""The kernel's vhost-net: hand a virtio-net device's queues to /dev/vhost-net.

This is what qemu does with `vhost=on`. At start: VHOST_SET_OWNER (the kernel
starts its `vhost-<pid>` worker for this process), the feature check and the
guest-RAM table. When the driver sets DRIVER_OK, each queue gets its size,
base, ring addresses, kick eventfd (the KVM_IOEVENTFD on QueueNotify) and call
eventfd (the KVM_IRQFD), then the tap as its backend; from then on packets move
without this process. A device reset takes the backend away again.

`VhostNet(...)` raises VhostUnavailable when the kernel cannot serve the
device (no device node, an ioctl refused, no VIRTIO_F_VERSION_1);
`virtio_net.choose_data_path` then falls back to the VMM's own userspace
`vhost-<pid>` worker and says why. The data path built on this class is
`net_path_kernel.KernelVhostPath`.

The tap's send buffer is set below INT_MAX: with INT_MAX (the default) the
kernel batches transmits through a path that, for a frame shorter than the
virtio-net header, puts the descriptor back and retries for ever (a hostile
guest would pin the worker); below it, tun refuses such a frame and the kernel
consumes the descriptor, as our own worker drops it.

Things the kernel leaves to us, or does its own way:
- virtio-mmio's InterruptStatus: the kernel signals the irqfd and never sets
  it, so the transport keeps the used-buffer bit up (`isr_sticky`); a driver
  then always looks at its used rings, and a spurious look costs nothing.
- a malformed ring: the kernel stops serving the queue and signals the error
  eventfd; the data path turns that into DEVICE_NEEDS_RESET, as on the others.
  The kernel judges rings itself: loops, heads and descriptors out of range
  and addresses outside RAM are errors, but it serves indirect descriptors
  the driver did not negotiate and drops (without an error) a frame that
  does not fit the receive buffer.
- num_buffers in a received header: kernels since late 2024 write 1 for
  VERSION_1 as our worker does; older ones write it only with MRG_RXBUF (not
  offered), leaving what the guest's buffer held.
"""

from __future__ import annotations

import os

from computed.vmm._kvm import ffi, lib
from computed.vmm.devices.virtio_mmio import F_VERSION_1
from computed.vmm.devices.virtqueue import Virtqueue
from computed.vmm.memory import GuestMemory

# Any value below INT_MAX turns off the kernel's transmit batching (see above).
TAP_SNDBUF = 4 << 20


class VhostError(Exception):
    """A vhost-net ioctl failed; the message names it."""


class VhostUnavailable(VhostError):
    """The kernel's vhost-net cannot serve this device; the message says why."""


def host_address(view: memoryview) -> int:
    """The host virtual address of a (checked) view of guest RAM."""
    return int(ffi.cast("uintptr_t", ffi.from_buffer(view)))


def memory_table(memory: GuestMemory) -> list[tuple[int, int, int]]:
    """(guest-physical base, size, host address) of each RAM region, for VHOST_SET_MEM_TABLE."""
    return [(r.gpa, r.size, host_address(memory.view(r.gpa, r.size))) for r in memory.regions]


def ring_addresses(queue: Virtqueue) -> tuple[int, int, int]:
    """Host addresses of a ready queue's descriptor table, available and used rings."""
    desc, avail, used = queue.rings()
    return host_address(desc), host_address(avail), host_address(used)


def kernel_features(offered: int, negotiated: int) -> int:
    """The feature bits to give VHOST_SET_FEATURES: what the driver took and the kernel has.

    Device-level bits the kernel knows nothing of (VIRTIO_NET_F_MAC: the
    config space is ours) are dropped, as qemu drops them.
    """
    return negotiated & offered


def unbatch_tap(tap: int) -> None:
    """Set the tap's send buffer below INT_MAX (see above); VhostError if refused."""
    r = lib.vmm_ioctl(tap, lib.TUNSETSNDBUF, ffi.new("int *", TAP_SNDBUF))
    if r < 0:
        raise VhostError(f"the tap's TUNSETSNDBUF failed: {os.strerror(-r)}")


class VhostNet:
    """One /dev/vhost-net instance serving one NIC's receive and transmit queues."""

    def __init__(self, path: str, memory: GuestMemory, tap: int, fd: int | None = None) -> None:
        """`fd`: /dev/vhost-net opened by the agent and handed in (`vhostfd=`); else the
        VMM opens `path` itself."""
        if fd is not None:
            self.fd, path = fd, f"vhostfd={fd}"
        else:
            try:
                self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise VhostUnavailable(f"{path}: {e.strerror}") from None
        self.path = path
        self.tap = tap
        self.started: list[int] = []  # queue indices handed to the kernel
        try:
            self._ioctl_val(lib.VHOST_SET_OWNER, 0, "VHOST_SET_OWNER")
            offered = ffi.new("uint64_t *")
            self._ioctl(lib.VHOST_GET_FEATURES, offered, "VHOST_GET_FEATURES")
            self.offered = int(offered[0])
            if not self.offered & F_VERSION_1:
                raise VhostUnavailable(f"{path}: the kernel's vhost-net lacks VIRTIO_F_VERSION_1")
            self._set_mem_table(memory_table(memory))
            unbatch_tap(tap)
        except VhostError as e:
            os.close(self.fd)
            raise VhostUnavailable(str(e)) from None

    def _ioctl(self, request: int, arg: object, what: str) -> None:
        r = lib.vmm_ioctl(self.fd, request, arg)
        if r < 0:
            raise VhostError(f"{self.path}: {what} failed: {os.strerror(-r)}")

    def _ioctl_val(self, request: int, value: int, what: str) -> None:
        r = lib.vmm_ioctl_val(self.fd, request, value)
        if r < 0:
            raise VhostError(f"{self.path}: {what} failed: {os.strerror(-r)}")

    def _set_mem_table(self, regions: list[tuple[int, int, int]]) -> None:
        n = len(regions)
        table = ffi.new("struct vhost_memory *", {"nregions": n, "regions": n})
        for slot, (gpa, size, host) in zip(table.regions, regions, strict=True):
            slot.guest_phys_addr, slot.memory_size, slot.userspace_addr = gpa, size, host
        self._ioctl(lib.VHOST_SET_MEM_TABLE, table, "VHOST_SET_MEM_TABLE")

    def _vring_file(self, request: int, index: int, fd: int, what: str) -> None:
        file = ffi.new("struct vhost_vring_file *", {"index": index, "fd": fd})
        self._ioctl(request, file, what)

    def start(
        self,
        queues: list[Virtqueue],
        negotiated: int,
        kicks: list[int],
        call: int,
        error: int,
    ) -> None:
        """Hand the ready queues to the kernel (at DRIVER_OK); VhostError if it refuses.

        A queue the driver did not make ready is left alone, as our worker leaves it.
        """
        ready = [
            (i, q, kick) for i, (q, kick) in enumerate(zip(queues, kicks, strict=True)) if q.ready
        ]
        self.started = [index for index, _, _ in ready]  # what stop() undoes, even mid-way
        features = ffi.new("uint64_t *", kernel_features(self.offered, negotiated))
        self._ioctl(lib.VHOST_SET_FEATURES, features, "VHOST_SET_FEATURES")
        for index, queue, kick in ready:
            state = ffi.new("struct vhost_vring_state *", {"index": index, "num": queue.size})
            self._ioctl(lib.VHOST_SET_VRING_NUM, state, "VHOST_SET_VRING_NUM")
            state.num = queue.last_avail
            self._ioctl(lib.VHOST_SET_VRING_BASE, state, "VHOST_SET_VRING_BASE")
            desc, avail, used = ring_addresses(queue)
            addr = ffi.new("struct vhost_vring_addr *", {
                "index": index, "desc_user_addr": desc, "avail_user_addr": avail,
                "used_user_addr": used,
            })  # fmt: skip
            self._ioctl(lib.VHOST_SET_VRING_ADDR, addr, "VHOST_SET_VRING_ADDR")
            self._vring_file(lib.VHOST_SET_VRING_KICK, index, kick, "VHOST_SET_VRING_KICK")
            self._vring_file(lib.VHOST_SET_VRING_CALL, index, call, "VHOST_SET_VRING_CALL")
            self._vring_file(lib.VHOST_SET_VRING_ERR, index, error, "VHOST_SET_VRING_ERR")
        for index in self.started:
            self._vring_file(lib.VHOST_NET_SET_BACKEND, index, self.tap, "VHOST_NET_SET_BACKEND")

    def stop(self) -> None:
        """Take the backend away (device reset). Each call returns once the kernel's
        worker has finished with that queue (vhost_net_set_backend flushes it)."""
        for index in self.started:
            try:
                self._vring_file(lib.VHOST_NET_SET_BACKEND, index, -1, "VHOST_NET_SET_BACKEND")
            except VhostError:
                pass  # a start that failed before this queue had a backend
        self.started = []

    def close(self) -> None:
        """Closing the fd ends the kernel's worker."""
        os.close(self.fd)
