"""What the VMM hands the kernel's vhost-net: addresses, features, and the refusals.

The ioctl sequence itself runs only where /dev/vhost-net exists (the
`vhost-kernel` integration tests); these hosts lack it, so here the pure parts
are checked against real guest memory, and the refusals against real files.
"""

import os

import pytest
from computed.vmm._kvm import ffi

from computed.vmm.devices import vhost_kernel
from computed.vmm.devices.virtio_mmio import F_VERSION_1
from computed.vmm.devices.virtqueue import Virtqueue, VirtqueueError
from computed.vmm.memory import HIGH_RAM_BASE, LOW_RAM_LIMIT, GuestMemory

F_MAC = 1 << 5
F_EVENT_IDX = 1 << 29


@pytest.fixture
def memory():
    m = GuestMemory(LOW_RAM_LIMIT + (64 << 20))  # two regions: below 3 GiB and from 4 GiB
    yield m
    m.close()


def test_memory_table_maps_each_region_to_its_host_memory(memory):
    table = vhost_kernel.memory_table(memory)
    assert [(gpa, size) for gpa, size, _ in table] == [
        (0, LOW_RAM_LIMIT),
        (HIGH_RAM_BASE, 64 << 20),
    ]
    for (gpa, _, host), region in zip(table, memory.regions, strict=True):
        assert host == int(ffi.cast("uintptr_t", ffi.from_buffer(region.host)))
        assert host % 4096 == 0  # vhost wants page-aligned regions
        # The kernel will read guest byte `gpa + 123` at `host + 123`: write it and look.
        memory.write(gpa + 123, b"vhost")
        assert ffi.buffer(ffi.cast("char *", host + 123), 5)[:] == b"vhost"


def test_ring_addresses_point_at_the_rings_in_host_memory(memory):
    q = Virtqueue(memory)
    q.size, q.desc, q.avail, q.used = 256, 0x10000, HIGH_RAM_BASE + 0x2000, 0x30000
    q.activate()
    desc, avail, used = vhost_kernel.ring_addresses(q)
    low = int(ffi.cast("uintptr_t", ffi.from_buffer(memory.regions[0].host)))
    high = int(ffi.cast("uintptr_t", ffi.from_buffer(memory.regions[1].host)))
    assert (desc, avail, used) == (low + 0x10000, high + 0x2000, low + 0x30000)


def test_ring_addresses_of_a_ring_outside_ram_are_refused(memory):
    q = Virtqueue(memory)
    q.size, q.desc, q.avail, q.used = 256, 0x10000, 0x11000, LOW_RAM_LIMIT - 0x100
    with pytest.raises(VirtqueueError, match="outside guest RAM"):
        vhost_kernel.ring_addresses(q)


def test_kernel_gets_only_the_features_it_offered_and_the_driver_took():
    offered = F_VERSION_1 | F_EVENT_IDX | (1 << 27)
    assert vhost_kernel.kernel_features(offered, F_VERSION_1 | F_MAC) == F_VERSION_1


def test_a_missing_device_is_unavailable_with_the_reason(memory):
    with pytest.raises(vhost_kernel.VhostUnavailable, match=r"^/nonexistent: No such file"):
        vhost_kernel.VhostNet("/nonexistent", memory, tap=-1)


def test_a_device_that_is_not_vhost_net_is_refused_and_closed(memory):
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(vhost_kernel.VhostUnavailable, match=r"^/dev/null: VHOST_SET_OWNER failed"):
        vhost_kernel.VhostNet("/dev/null", memory, tap=-1)
    assert set(os.listdir("/proc/self/fd")) <= before, "the refused device's fd was closed"
