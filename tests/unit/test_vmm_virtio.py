"""The virtqueue and virtio-mmio transport against guest memory, including hostile rings."""

import struct

import pytest

from computed.vmm.devices import virtio_mmio as mmio
from computed.vmm.devices.virtqueue import DESC_F_NEXT, DESC_F_WRITE, Virtqueue, VirtqueueError
from computed.vmm.memory import GuestMemory

DESC, AVAIL, USED = 0x10000, 0x11000, 0x12000
SIZE = 8


@pytest.fixture
def memory():
    m = GuestMemory(4 << 20)
    yield m
    m.close()


def queue(memory, size=SIZE):
    q = Virtqueue(memory)
    q.size, q.desc, q.avail, q.used = size, DESC, AVAIL, USED
    q.activate()
    return q


def put_desc(memory, i, addr, length, flags=0, nxt=0):
    memory.write(DESC + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))


def offer(memory, heads, start=0):
    for k, head in enumerate(heads):
        memory.write(AVAIL + 4 + 2 * ((start + k) % SIZE), struct.pack("<H", head))
    memory.write(AVAIL + 2, struct.pack("<H", start + len(heads)))


def test_chain_is_read_and_returned_through_the_used_ring(memory):
    q = queue(memory)
    put_desc(memory, 0, 0x20000, 12, DESC_F_NEXT, 1)
    put_desc(memory, 1, 0x21000, 100, DESC_F_WRITE)
    offer(memory, [0])
    head, chain = q.pop()
    assert head == 0 and chain == [(0x20000, 12, False), (0x21000, 100, True)]
    assert q.pop() is None
    q.push(head, 42)
    assert struct.unpack_from("<HH", memory.read(USED, 4)) == (0, 1)
    assert struct.unpack("<II", memory.read(USED + 4, 8)) == (0, 42)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda m: put_desc(m, 0, 0x20000, 10, DESC_F_NEXT, 0), "longer than the queue"),
        (lambda m: put_desc(m, 0, (4 << 20) - 4, 64), "outside guest RAM"),
        (lambda m: put_desc(m, 0, 0x20000, 10, DESC_F_NEXT, 99), "outside a 8-entry table"),
        (lambda m: put_desc(m, 0, 0x20000, 0xFFFFFFFF), "claims more than"),
        (lambda m: put_desc(m, 0, 0x20000, 10, 4), "indirect"),
    ],
)
def test_hostile_chains_are_refused(memory, setup, message):
    q = queue(memory)
    setup(memory)
    offer(memory, [0])
    with pytest.raises(VirtqueueError, match=message):
        q.pop()


def test_available_index_running_ahead_is_refused(memory):
    q = queue(memory)
    memory.write(AVAIL + 2, struct.pack("<H", SIZE + 1))
    with pytest.raises(VirtqueueError, match="ahead"):
        q.pending()


def test_rings_outside_ram_or_odd_sizes_do_not_activate(memory):
    q = Virtqueue(memory)
    q.size, q.desc, q.avail, q.used = 6, DESC, AVAIL, USED
    with pytest.raises(VirtqueueError, match="power of two"):
        q.activate()
    q.size, q.used = 8, 1 << 40
    with pytest.raises(VirtqueueError, match="outside guest RAM"):
        q.activate()


class Backend:
    """A device behind the transport that records what the transport tells it."""

    device_id = 1
    features = mmio.F_VERSION_1 | (1 << 5)
    queue_max = 256

    def __init__(self):
        self.calls = []

    def config(self):
        return bytes.fromhex("525400123456")

    def activate(self, queues):
        self.calls.append(("activate", len(queues)))

    def kick(self, queue):
        self.calls.append(("kick", queue))

    def reset(self):
        self.calls.append(("reset",))


def transport(memory):
    interrupts = []
    t = mmio.VirtioMmio(Backend(), memory, 2, lambda: interrupts.append(1), lambda m: None)
    return t, interrupts


def reg(t, offset):
    return struct.unpack("<I", t.read(offset, 4))[0]


def wr(t, offset, value):
    t.write(offset, struct.pack("<I", value))


def negotiate(t, high=1, low=1 << 5):
    wr(t, 0x70, mmio.STATUS_ACKNOWLEDGE | mmio.STATUS_DRIVER)
    wr(t, 0x24, 0)
    wr(t, 0x20, low)
    wr(t, 0x24, 1)
    wr(t, 0x20, high)
    wr(t, 0x70, mmio.STATUS_ACKNOWLEDGE | mmio.STATUS_DRIVER | mmio.STATUS_FEATURES_OK)
    return reg(t, 0x70) & mmio.STATUS_FEATURES_OK


def test_identity_registers_and_config_space(memory):
    t, _ = transport(memory)
    assert (reg(t, 0x0), reg(t, 0x4), reg(t, 0x8)) == (0x74726976, 2, 1)
    wr(t, 0x14, 1)
    assert reg(t, 0x10) == 1  # VIRTIO_F_VERSION_1 is bit 32
    assert t.read(0x100, 6) == bytes.fromhex("525400123456")
    assert t.read(0x104, 4) == bytes.fromhex("34560000")  # past the config: zeros


def test_features_the_device_lacks_or_a_legacy_driver_are_refused(memory):
    t, _ = transport(memory)
    assert not negotiate(t, low=1 << 6)  # a feature not offered
    wr(t, 0x70, 0)
    assert not negotiate(t, high=0)  # no VERSION_1: legacy drivers are not served
    wr(t, 0x70, 0)
    assert negotiate(t)


def test_driver_ok_activates_and_notify_kicks_then_reset(memory):
    t, interrupts = transport(memory)
    assert negotiate(t)
    for q in (0, 1):
        wr(t, 0x30, q)
        wr(t, 0x38, SIZE)
        wr(t, 0x80, DESC + q * 0x4000)
        wr(t, 0x90, AVAIL + q * 0x4000)
        wr(t, 0xA0, USED + q * 0x4000)
        wr(t, 0x44, 1)
        assert reg(t, 0x44) == 1
    wr(t, 0x70, reg(t, 0x70) | mmio.STATUS_DRIVER_OK)
    wr(t, 0x50, 1)
    t.interrupt()
    assert reg(t, 0x60) == 1 and interrupts == [1]
    wr(t, 0x64, 1)
    assert reg(t, 0x60) == 0
    wr(t, 0x70, 0)
    assert t.backend.calls == [("activate", 2), ("kick", 1), ("reset",)]
    assert reg(t, 0x70) == 0 and not any(q.ready for q in t.queues)


def test_a_broken_ring_marks_the_device_until_reset(memory):
    t, interrupts = transport(memory)
    assert negotiate(t)
    wr(t, 0x30, 0)
    wr(t, 0x38, 6)  # not a power of two
    wr(t, 0x44, 1)
    assert t.broken and reg(t, 0x70) & mmio.STATUS_NEEDS_RESET
    assert reg(t, 0x60) & mmio.INT_CONFIG_CHANGE and interrupts
    wr(t, 0x70, 0)
    assert not t.broken and reg(t, 0x70) == 0


def test_sticky_interrupt_status_survives_acknowledge_and_reset(memory):
    """The kernel vhost path signals the irqfd without setting InterruptStatus: the
    used-buffer bit stays up so the driver always looks at its used rings."""
    t, _ = transport(memory)
    t.isr_sticky = mmio.INT_USED_BUFFER
    assert reg(t, 0x60) == mmio.INT_USED_BUFFER
    t.interrupt(mmio.INT_CONFIG_CHANGE)
    wr(t, 0x64, mmio.INT_USED_BUFFER | mmio.INT_CONFIG_CHANGE)
    assert reg(t, 0x60) == mmio.INT_USED_BUFFER
    wr(t, 0x70, 0)
    assert reg(t, 0x60) == mmio.INT_USED_BUFFER


def test_driver_features_are_what_the_driver_accepted(memory):
    t, _ = transport(memory)
    assert negotiate(t)
    assert t.driver_features == mmio.F_VERSION_1 | (1 << 5)
