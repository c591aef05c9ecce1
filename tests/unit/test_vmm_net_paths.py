"""The virtio-net data paths behind one interface, and the choice between them.

The tap is stood in for by a datagram socket pair: like a tap it keeps each
frame whole and takes readv/writev. Guest memory, virtqueues, the virtio-mmio
transport, eventfds and threads are the real ones. Wiring into KVM
(ioeventfds, irqfd) needs /dev/kvm and is skipped without it.
"""

import os
import socket
import struct
import threading
import time

import pytest
from computed.vmm._kvm import ffi, lib

from computed.vmm.devices.net_path import COUNTERS, HDR_SIZE, RX, TX
from computed.vmm.devices.net_path_kernel import KernelVhostPath
from computed.vmm.devices.net_path_userspace import UserspaceVhostPath, VcpuExitPath
from computed.vmm.devices.vhost_kernel import VhostError
from computed.vmm.devices.virtio_mmio import INT_USED_BUFFER, REG_QUEUE_NOTIFY, VirtioMmio
from computed.vmm.devices.virtio_net import choose_data_path
from computed.vmm.devices.virtqueue import DESC_F_WRITE
from computed.vmm.kvm import Kvm, ioctl
from computed.vmm.memory import GuestMemory

SIZE = 8
RINGS = {RX: 0x10000, TX: 0x14000}  # each queue's descriptor table; avail and used follow
BUFFER = 0x20000
FRAME = bytes(HDR_SIZE) + b"a frame of the guest's"
WAIT = 2.0  # seconds for a worker thread to act


@pytest.fixture
def memory():
    m = GuestMemory(4 << 20)
    yield m
    m.close()


@pytest.fixture
def tap():
    """(our end, the host's end) of a frame-keeping pair standing in for the tap."""
    ours, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    host.settimeout(WAIT)
    yield ours.fileno(), host
    ours.close()
    host.close()


@pytest.fixture
def vm_fd():
    """A real KVM VM with an in-kernel irqchip, for the ioeventfds and the irqfd."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("needs /dev/kvm")
    kvm = Kvm()
    fd = kvm.create_vm()
    ioctl(fd, lib.KVM_CREATE_IRQCHIP, None, "KVM_CREATE_IRQCHIP")
    yield fd
    os.close(fd)
    kvm.close()


def transport_for(path, memory):
    """The transport a NIC's path serves, with its rings set up and ready."""
    interrupts = []
    t = VirtioMmio(path, memory, 2, lambda: interrupts.append(1), lambda message: None)
    for index, q in enumerate(t.queues):
        base = RINGS[index]
        q.size, q.desc, q.avail, q.used = SIZE, base, base + 0x1000, base + 0x2000
        q.activate()
    return t, interrupts


def offer(q, addr, length, flags=0):
    """Put one single-descriptor chain in the queue's next available slot."""
    memory, slot = q.memory, q.last_avail % SIZE
    memory.write(q.desc + 16 * slot, struct.pack("<QIHH", addr, length, flags, 0))
    memory.write(q.avail + 4 + 2 * slot, struct.pack("<H", slot))
    memory.write(q.avail + 2, struct.pack("<H", q.last_avail + 1))


def used(q):
    """(used index, (head, length) of the first used element)."""
    return struct.unpack("<H", q.memory.read(q.used + 2, 2))[0], struct.unpack(
        "<II", q.memory.read(q.used + 4, 8)
    )


def until(condition):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the worker did not act in time"
        time.sleep(0.01)


def thread_names():
    return {t.name for t in threading.enumerate()}


# --- the choice ----------------------------------------------------------------------
def test_vhost_off_is_served_on_vcpu_exits_with_no_note(memory):
    logged = []
    path, note = choose_data_path("tap0", -1, False, "/dev/vhost-net", memory, logged.append)
    assert isinstance(path, VcpuExitPath)
    assert (path.kind, path.name, note, logged) == ("off", "vcpu-exits", "", [])
    path.close()


def test_no_kernel_vhost_net_leaves_the_userspace_worker_with_the_reason(memory):
    logged = []
    path, note = choose_data_path("tap0", -1, True, "/nonexistent/vhost-net", memory, logged.append)
    assert isinstance(path, UserspaceVhostPath)
    assert (path.kind, path.name) == ("userspace", "vhost-userspace")
    assert note == "/nonexistent/vhost-net: No such file or directory"
    assert logged == [], "a device that is not there is not worth a log line"
    path.close()


def test_a_device_that_refuses_is_logged_and_the_userspace_worker_serves(memory):
    logged = []
    before = set(os.listdir("/proc/self/fd"))
    path, note = choose_data_path("tap0", -1, True, "/dev/null", memory, logged.append)
    assert isinstance(path, UserspaceVhostPath)
    assert note.startswith("/dev/null: VHOST_SET_OWNER failed: ")
    assert logged == [f"tap0: kernel vhost-net refused ({note}); the userspace worker serves"]
    path.close()
    assert set(os.listdir("/proc/self/fd")) <= before, "the path closed what it opened"


# --- vcpu-exits ----------------------------------------------------------------------
def test_a_handed_in_vhost_fd_is_used_and_a_refusing_one_falls_back(memory):
    """`vhostfd=M`, as the agent hands /dev/vhost-net to a confined VMM: the VMM uses that
    fd, not a path (here /dev/null, which refuses VHOST_SET_OWNER)."""
    logged = []
    fd = os.open("/dev/null", os.O_RDWR)
    path, note = choose_data_path(
        "tap0", -1, True, "/nonexistent/vhost-net", memory, logged.append, vhost_fd=fd
    )
    assert isinstance(path, UserspaceVhostPath)
    assert note.startswith(f"vhostfd={fd}: VHOST_SET_OWNER failed: ")
    assert logged and "kernel vhost-net refused" in logged[0]
    path.close()


def test_vcpu_exit_path_transmits_on_the_kick_and_counts(memory, tap):
    ours, host = tap
    path = VcpuExitPath(ours)
    t, interrupts = transport_for(path, memory)
    path.attach(-1, t, 0, 0)  # kicks come as exits: nothing to wire into KVM
    path.activate(t.queues)
    memory.write(BUFFER, FRAME)
    offer(t.queues[TX], BUFFER, len(FRAME))
    path.kick(TX)  # on the caller's (the vCPU's) thread
    assert host.recv(4096) == FRAME
    assert used(t.queues[TX]) == (1, (0, 0)) and interrupts == [1]
    assert path.counters() == dict(zip(COUNTERS, (0, 1, 0, len(FRAME) - HDR_SIZE), strict=True))
    path.close()


def test_vcpu_exit_path_receives_on_its_net_rx_thread_and_stops_at_reset(memory, tap):
    ours, host = tap
    path = VcpuExitPath(ours)
    t, interrupts = transport_for(path, memory)
    path.attach(-1, t, 0, 0)
    path.start()
    assert "net-rx" in thread_names()
    with t.lock:
        path.activate(t.queues)
    offer(t.queues[RX], BUFFER, 2048, DESC_F_WRITE)
    host.send(FRAME)
    until(lambda: used(t.queues[RX])[0] == 1)
    assert memory.read(BUFFER, len(FRAME)) == FRAME[:10] + b"\x01\x00" + FRAME[HDR_SIZE:]
    assert used(t.queues[RX])[1] == (0, len(FRAME)) and interrupts == [1]
    assert path.counters()["rx_packets"] == 1
    t.reset()  # the transport resets its path first, then the queues
    assert not path.active and path.queues == []
    path.kick(TX)  # a kick after the reset touches nothing
    path.close()
    assert "net-rx" not in thread_names()


# --- vhost-userspace -----------------------------------------------------------------
def test_userspace_vhost_thread_serves_kicks_from_its_eventfds(memory, tap, vm_fd):
    ours, host = tap
    path = UserspaceVhostPath(ours)
    path.signal_guest()  # before the irqfd is wired: the call eventfd holds it
    assert os.eventfd_read(path.eventfds.call) == 1
    t, interrupts = transport_for(path, memory)
    path.attach(vm_fd, t, 0xD0000000, lib.COMPUTED_IRQ_NIC0)
    again = ffi.new("struct kvm_ioeventfd *", {
        "datamatch": TX, "addr": 0xD0000000 + REG_QUEUE_NOTIFY, "len": 4,
        "fd": path.kicks[TX], "flags": lib.KVM_IOEVENTFD_FLAG_DATAMATCH,
    })  # fmt: skip
    assert lib.vmm_ioctl(vm_fd, lib.KVM_IOEVENTFD, again) < 0, "attach wired the kick already"
    path.start()
    assert f"vhost-{os.getpid()}" in thread_names()
    with t.lock:
        path.activate(t.queues)
    memory.write(BUFFER, FRAME)
    offer(t.queues[TX], BUFFER, len(FRAME))
    os.eventfd_write(path.kicks[TX], 1)  # what KVM does on the guest's QueueNotify
    assert host.recv(4096) == FRAME
    until(lambda: interrupts == [1])
    assert (path.kind, path.name, path.counters()["tx_packets"]) == (
        "userspace", "vhost-userspace", 1
    )  # fmt: skip
    path.close()
    assert f"vhost-{os.getpid()}" not in thread_names()


# --- vhost-kernel --------------------------------------------------------------------
class VhostNetStandIn:
    """Stands in for /dev/vhost-net, which these hosts lack; its ioctls are tested
    where it exists (the vhost-kernel integration tests). Records what it is told."""

    def __init__(self, refusal=""):
        self.calls = []
        self.refusal = refusal

    def start(self, queues, negotiated, kicks, call, error):
        self.calls.append(("start", len(queues), len(kicks)))
        if self.refusal:
            raise VhostError(self.refusal)

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


def kernel_path(memory, vm_fd, kernel):
    path = KernelVhostPath(kernel)
    t, _ = transport_for(path, memory)
    path.attach(vm_fd, t, 0xD0000000, lib.COMPUTED_IRQ_NIC0)
    path.start()
    return path, t


def test_kernel_path_keeps_no_counters_and_reads_used_buffers_as_always_set(memory, vm_fd):
    kernel = VhostNetStandIn()
    path, t = kernel_path(memory, vm_fd, kernel)
    assert (path.kind, path.name) == ("kernel", "vhost-kernel")
    assert path.counters() == dict.fromkeys(COUNTERS)
    assert t.isr_sticky == INT_USED_BUFFER
    with t.lock:
        path.activate(t.queues)
    t.reset()
    path.close()
    assert kernel.calls == [("start", 2, 2), "stop", "close"]


def test_kernel_refusing_the_queues_breaks_the_device(memory, vm_fd):
    path, t = kernel_path(memory, vm_fd, VhostNetStandIn("VHOST_SET_VRING_ADDR failed"))
    with t.lock:
        path.activate(t.queues)
    assert t.broken == "VHOST_SET_VRING_ADDR failed"
    path.close()


def test_a_ring_error_breaks_the_device_but_not_after_a_reset(memory, vm_fd):
    path, t = kernel_path(memory, vm_fd, VhostNetStandIn())
    with t.lock:
        path.activate(t.queues)
        os.eventfd_write(path.ring_error, 1)  # the kernel refused a ring; then a reset
        path.reset()
        path.activate(t.queues)  # the driver's next session
    time.sleep(0.1)
    assert t.broken == "", "an error from before the reset is stale"
    os.eventfd_write(path.ring_error, 1)
    until(lambda: t.broken == "the kernel's vhost-net stopped a queue: malformed ring")
    path.close()
