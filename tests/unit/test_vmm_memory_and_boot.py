import struct

import pytest
from computed.vmm._kvm import lib

from computed.vmm import boot
from computed.vmm.config import VmConfig
from computed.vmm.errors import GuestMemoryError
from computed.vmm.memory import GIB, HIGH_RAM_BASE, GuestMemory, ram_layout


def test_small_ram_is_one_region_from_zero():
    assert ram_layout(128 << 20) == [(0, 128 << 20)]


def test_large_ram_skips_the_mmio_hole():
    assert ram_layout(5 * GIB) == [(0, 3 * GIB), (HIGH_RAM_BASE, 2 * GIB)]


@pytest.mark.parametrize("gpa,length", [(-1, 1), (0, -1), ((4 << 20) - 1, 2), (1 << 50, 1)])
def test_view_refuses_ranges_outside_ram(gpa, length):
    mem = GuestMemory(4 << 20)
    with pytest.raises(GuestMemoryError):
        mem.view(gpa, length)


def test_view_refuses_ranges_spanning_the_hole():
    mem = GuestMemory(3 * GIB + (2 << 20))
    mem.view(HIGH_RAM_BASE, 4096)
    with pytest.raises(GuestMemoryError):
        mem.view(3 * GIB - 4096, 8192)


def test_clear_zeroes_ram():
    mem = GuestMemory(4 << 20)
    mem.write(0x1000, b"dirty")
    mem.clear()
    assert mem.read(0x1000, 5) == bytes(5)


def test_page_tables_identity_map_with_2m_pages():
    tables = dict(boot.page_tables(2))
    (pml4e,) = struct.unpack_from("<Q", tables[lib.COMPUTED_PML4_GPA])
    assert pml4e & ~0xFFF == lib.COMPUTED_PDPT_GPA
    pdpt = struct.unpack("<2Q", tables[lib.COMPUTED_PDPT_GPA])
    assert [e & ~0xFFF for e in pdpt] == [lib.COMPUTED_PD_GPA, lib.COMPUTED_PD_GPA + 0x1000]
    second_gib = struct.unpack("<512Q", tables[lib.COMPUTED_PD_GPA + 0x1000])
    assert second_gib[3] & ~0xFFF == GIB + 3 * (2 << 20)
    assert second_gib[3] & 0x87 == 0x87  # present, writable, user, 2 MiB page


def test_page_tables_refuse_more_than_the_reserved_area_holds():
    with pytest.raises(ValueError):
        boot.page_tables(lib.COMPUTED_MAX_PD_PAGES + 1)


def test_identity_map_covers_high_ram():
    assert boot.identity_map_gib(GuestMemory(4 * GIB)) == 5


def test_boot_info_per_vcpu_follows_the_header():
    mem = GuestMemory(8 << 20)
    config = VmConfig(
        kernel="k",
        name="instance-0000004a",
        uuid="5c0f" + "0" * 4 + "-0000-4000-8000-000000000001",
        vcpus=2,
        append="ticks=3",
    )
    starts = boot.write_boot_structures(config, mem, 0x100000, 2_000_000)
    assert [s.rdi for s in starts] == [
        lib.COMPUTED_BOOT_INFO_GPA,
        lib.COMPUTED_BOOT_INFO_GPA + lib.COMPUTED_BOOT_INFO_STRIDE,
    ]
    assert starts[1].rsp == lib.COMPUTED_STACKS_GPA + 2 * lib.COMPUTED_STACK_STRIDE
    magic, version, ram, below, count, index, tsc = struct.unpack_from(
        "<IIQQIIQ", mem.read(starts[1].rdi, 40)
    )
    assert (magic, version, ram, below, count, index, tsc) == (
        lib.COMPUTED_BOOT_MAGIC,
        lib.COMPUTED_ABI_VERSION,
        8 << 20,
        8 << 20,
        2,
        1,
        2_000_000,
    )
    raw = mem.read(starts[0].rdi, 4096)
    assert b"instance-0000004a\0" in raw and b"ticks=3\0" in raw
