"""The guest image rules: what makes an ELF file a loadable computed guest. Pure, stdlib only.

One home for the rules, shared by everything that judges an image:
- the VMM (computed/vmm/elf.py) before it copies a byte into guest RAM,
- the scheduler when an image is uploaded, so a bad image is refused at upload
  with the loader's own words, not at boot on some host,
- the SDK (computed-guest-cc) on the file it has just linked.
It imports nothing from computed.vmm (whose KVM module the scheduler must not load).

The layout constants mirror computed_guest.h (COMPUTED_IMAGE_MIN_GPA) and the VMM's
RAM layout; tests/unit/test_guest_image.py checks them against the header.
"""

from __future__ import annotations

import struct

# ELF64 layouts, shared with the SDK (computed/guests/sdk/prebuilt_idt.py).
ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_ET_EXEC = 2
_EM_X86_64 = 62
PT_LOAD = 1

MAX_IMAGE_BYTES = 256 << 20  # what the VMM reads at most
MAX_SEGMENTS = 64
IMAGE_MIN_GPA = 0x100000  # COMPUTED_IMAGE_MIN_GPA: below it is the VMM's (GDT, tables, stacks)
GIB = 1 << 30
LOW_RAM_LIMIT = 3 * GIB  # RAM above this is mapped from 4 GiB, leaving an MMIO hole
HIGH_RAM_BASE = 4 * GIB
MIB = 1 << 20


class ImageFormatError(ValueError):
    """The file is not a guest image the VMM would load; the message says why."""


class Segment:
    __slots__ = ("data", "memsz", "paddr")

    def __init__(self, paddr: int, data: bytes, memsz: int) -> None:
        self.paddr = paddr
        self.data = data  # file contents; the rest up to memsz is zero
        self.memsz = memsz


class GuestImage:
    __slots__ = ("entry", "segments")

    def __init__(self, entry: int, segments: tuple[Segment, ...]) -> None:
        self.entry = entry
        self.segments = segments

    @property
    def end(self) -> int:
        return max(s.paddr + s.memsz for s in self.segments)


def parse_elf(blob: bytes, what: str = "image") -> GuestImage:
    """Parse an ELF64 x86-64 executable; ImageFormatError saying what is wrong."""
    if len(blob) < ELF_HEADER.size or blob[:4] != b"\x7fELF":
        raise ImageFormatError(f"{what}: not an ELF file")
    (
        ident,
        e_type,
        e_machine,
        _ver,
        e_entry,
        e_phoff,
        _shoff,
        _flags,
        _ehsize,
        e_phentsize,
        e_phnum,
        _shentsize,
        _shnum,
        _shstrndx,
    ) = ELF_HEADER.unpack_from(blob)
    if ident[4] != 2 or ident[5] != 1:
        raise ImageFormatError(f"{what}: not a 64-bit little-endian ELF")
    if e_machine != _EM_X86_64:
        raise ImageFormatError(f"{what}: not an x86-64 ELF (e_machine={e_machine})")
    if e_type != _ET_EXEC:
        raise ImageFormatError(
            f"{what}: not a static executable (ET_EXEC); PIE/shared not supported"
        )
    if e_phentsize != PROGRAM_HEADER.size or not 0 < e_phnum <= MAX_SEGMENTS:
        raise ImageFormatError(f"{what}: bad program header table")
    if e_phoff + e_phnum * PROGRAM_HEADER.size > len(blob):
        raise ImageFormatError(f"{what}: program headers run past the end of the file")
    segments = []
    for i in range(e_phnum):
        (p_type, _pflags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align) = (
            PROGRAM_HEADER.unpack_from(blob, e_phoff + i * PROGRAM_HEADER.size)
        )
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(blob):
            raise ImageFormatError(f"{what}: segment {i} is truncated or malformed")
        segments.append(Segment(p_paddr, blob[p_offset : p_offset + p_filesz], p_memsz))
    if not segments:
        raise ImageFormatError(f"{what}: no loadable segments")
    image = GuestImage(e_entry, tuple(segments))
    if not any(s.paddr <= e_entry < s.paddr + s.memsz for s in segments):
        raise ImageFormatError(f"{what}: entry point {e_entry:#x} is outside every segment")
    return image


def check_placement(image: GuestImage, min_gpa: int = IMAGE_MIN_GPA) -> None:
    """Every segment above the VMM's memory and clear of the MMIO hole at 3-4 GiB."""
    for seg in image.segments:
        if seg.paddr < min_gpa:
            raise ImageFormatError(
                f"segment at {seg.paddr:#x} overlaps VMM-reserved memory (images load at "
                f">= {min_gpa:#x})"
            )
        end = seg.paddr + seg.memsz
        if seg.paddr < HIGH_RAM_BASE and end > LOW_RAM_LIMIT:
            raise ImageFormatError(
                f"segment {seg.paddr:#x}+{seg.memsz:#x} reaches into the device hole at "
                f"{LOW_RAM_LIMIT:#x}-{HIGH_RAM_BASE:#x}, where there is never RAM"
            )


def required_ram(image: GuestImage) -> int:
    """The least guest RAM (bytes) in which every segment fits, by the VMM's RAM layout."""
    need = 0
    for seg in image.segments:
        end = seg.paddr + seg.memsz
        need = max(need, end if end <= LOW_RAM_LIMIT else LOW_RAM_LIMIT + end - HIGH_RAM_BASE)
    return need


def validate(blob: bytes, what: str = "image") -> GuestImage:
    """Everything the VMM checks before loading that does not depend on the flavor's RAM."""
    if len(blob) > MAX_IMAGE_BYTES:
        raise ImageFormatError(f"{what}: larger than {MAX_IMAGE_BYTES >> 20} MiB")
    image = parse_elf(blob, what)
    check_placement(image)
    return image
