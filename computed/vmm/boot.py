"""Boot structures the guest ABI promises: GDT, identity page tables, boot info.

Written into guest RAM below COMPUTED_IMAGE_MIN_GPA; see computed_guest.h for
the contract. Pure apart from writing into a `GuestMemory`.
"""

from __future__ import annotations

import functools
import struct

from computed.vmm._kvm import ffi, lib
from computed.vmm.config import VmConfig
from computed.vmm.memory import GIB, GuestMemory

PAGE_2M = 2 << 20
_PTE_PRESENT, _PTE_WRITE, _PTE_USER, _PTE_HUGE = 0x1, 0x2, 0x4, 0x80
_TABLE_FLAGS = _PTE_PRESENT | _PTE_WRITE | _PTE_USER
# Flat 64-bit segments: code (L=1, DPL 0, type execute/read) and data (read/write).
GDT_ENTRIES = (0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF)

CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1, 2, 0x10, 0x20, 1 << 16, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 0x20, 0x200, 0x400
EFER_LME, EFER_LMA, EFER_NXE = 0x100, 0x400, 0x800
BOOT_CR0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
BOOT_CR4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
BOOT_EFER = EFER_LME | EFER_LMA | EFER_NXE


class VcpuBoot:
    """Where one vCPU starts: the register values the ABI promises it."""

    __slots__ = ("rdi", "rip", "rsp")

    def __init__(self, rip: int, rdi: int, rsp: int) -> None:
        self.rip, self.rdi, self.rsp = rip, rdi, rsp


def identity_map_gib(memory: GuestMemory) -> int:
    """How many GiB of guest-physical space the identity map covers: all RAM, and at
    least the first 4 GiB, where the device windows (virtio-mmio) live."""
    return max(4, -(-memory.top // GIB))


@functools.lru_cache(maxsize=8)
def page_tables(gib: int) -> tuple[tuple[int, bytes], ...]:
    """(guest-physical address, bytes) of the PML4, PDPT and page directories mapping
    [0, gib GiB) with 2 MiB pages. Cached: the warm parent builds the usual ones once
    (half a millisecond of Python) and every VMM it forks shares them."""
    if not 1 <= gib <= lib.COMPUTED_MAX_PD_PAGES:
        raise ValueError(f"cannot identity-map {gib} GiB")
    tables = {
        lib.COMPUTED_PML4_GPA: struct.pack("<Q", lib.COMPUTED_PDPT_GPA | _TABLE_FLAGS),
        lib.COMPUTED_PDPT_GPA: struct.pack(
            f"<{gib}Q", *(lib.COMPUTED_PD_GPA + i * 0x1000 | _TABLE_FLAGS for i in range(gib))
        ),
    }
    leaf = _TABLE_FLAGS | _PTE_HUGE
    for i in range(gib):
        base = i * GIB
        tables[lib.COMPUTED_PD_GPA + i * 0x1000] = struct.pack(
            "<512Q", *(base + j * PAGE_2M | leaf for j in range(512))
        )
    return tuple(tables.items())


def boot_info(config: VmConfig, memory: GuestMemory, index: int, tsc_khz: int) -> bytes:
    """The computed_boot_info struct for vCPU `index`, laid out by the C header."""
    info = ffi.new("struct computed_boot_info *")
    info.magic = lib.COMPUTED_BOOT_MAGIC
    info.abi_version = lib.COMPUTED_ABI_VERSION
    info.ram_size = memory.size
    info.ram_below_4g = memory.below_4g
    info.vcpu_count = config.vcpus
    info.vcpu_index = index
    info.tsc_khz = tsc_khz
    _put_string(info.name, config.name)
    _put_string(info.uuid, config.uuid)
    _put_string(info.cmdline, config.append)
    info.nic_count = len(config.nics)
    for i, nic in enumerate(config.nics):
        slot = info.nics[i]
        slot.mmio_gpa = nic_mmio_gpa(i)
        slot.mmio_size = lib.COMPUTED_VIRTIO_MMIO_STRIDE
        slot.irq = lib.COMPUTED_IRQ_NIC0 + i
        ffi.memmove(slot.mac, nic.mac, 6)
    return bytes(ffi.buffer(info))


def nic_mmio_gpa(index: int) -> int:
    return lib.COMPUTED_VIRTIO_MMIO_GPA + index * lib.COMPUTED_VIRTIO_MMIO_STRIDE


def _put_string(field: ffi.CData, text: str) -> None:
    data = text.encode()[: len(field) - 1]
    ffi.memmove(field, data, len(data))


def write_boot_structures(
    config: VmConfig, memory: GuestMemory, entry: int, tsc_khz: int
) -> list[VcpuBoot]:
    """Write GDT, page tables and per-vCPU boot info; return each vCPU's start state."""
    memory.write(lib.COMPUTED_GDT_GPA, struct.pack(f"<{len(GDT_ENTRIES)}Q", *GDT_ENTRIES))
    for gpa, table in page_tables(identity_map_gib(memory)):
        memory.write(gpa, table)
    starts = []
    for index in range(config.vcpus):
        info_gpa = lib.COMPUTED_BOOT_INFO_GPA + index * lib.COMPUTED_BOOT_INFO_STRIDE
        memory.write(info_gpa, boot_info(config, memory, index, tsc_khz))
        stack_top = lib.COMPUTED_STACKS_GPA + (index + 1) * lib.COMPUTED_STACK_STRIDE
        starts.append(VcpuBoot(rip=entry, rdi=info_gpa, rsp=stack_top))
    return starts
