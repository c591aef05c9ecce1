"""ELF64 x86-64 guest image parsing and loading.

Parsing is pure (bytes → `GuestImage`); every segment is checked against the
guest's RAM before a byte is copied, so a bad image is refused as a whole.
"""

from __future__ import annotations

import struct

from computed.vmm.errors import GuestMemoryError, ImageError
from computed.vmm.memory import GuestMemory

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_ET_EXEC = 2
_EM_X86_64 = 62
_PT_LOAD = 1
MAX_IMAGE_BYTES = 256 << 20
MAX_SEGMENTS = 64


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
    """Parse an ELF64 x86-64 executable; raise ImageError saying what is wrong."""
    if len(blob) < _EHDR.size or blob[:4] != b"\x7fELF":
        raise ImageError(f"{what}: not an ELF file")
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
    ) = _EHDR.unpack_from(blob)
    if ident[4] != 2 or ident[5] != 1:
        raise ImageError(f"{what}: not a 64-bit little-endian ELF")
    if e_machine != _EM_X86_64:
        raise ImageError(f"{what}: not an x86-64 ELF (e_machine={e_machine})")
    if e_type != _ET_EXEC:
        raise ImageError(f"{what}: not a static executable (ET_EXEC); PIE/shared not supported")
    if e_phentsize != _PHDR.size or not 0 < e_phnum <= MAX_SEGMENTS:
        raise ImageError(f"{what}: bad program header table")
    if e_phoff + e_phnum * _PHDR.size > len(blob):
        raise ImageError(f"{what}: program headers run past the end of the file")
    segments = []
    for i in range(e_phnum):
        (p_type, _pflags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align) = _PHDR.unpack_from(
            blob, e_phoff + i * _PHDR.size
        )
        if p_type != _PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(blob):
            raise ImageError(f"{what}: segment {i} is truncated or malformed")
        segments.append(Segment(p_paddr, blob[p_offset : p_offset + p_filesz], p_memsz))
    if not segments:
        raise ImageError(f"{what}: no loadable segments")
    image = GuestImage(e_entry, tuple(segments))
    if not any(s.paddr <= e_entry < s.paddr + s.memsz for s in segments):
        raise ImageError(f"{what}: entry point {e_entry:#x} is outside every segment")
    return image


def read_image(path: str) -> GuestImage:
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise ImageError(f"cannot read guest image {path!r}: {e.strerror}") from None
    if len(blob) > MAX_IMAGE_BYTES:
        raise ImageError(f"{path}: larger than {MAX_IMAGE_BYTES >> 20} MiB")
    return parse_elf(blob, path)


def load_image(image: GuestImage, memory: GuestMemory, min_gpa: int) -> None:
    """Copy every segment into guest RAM; all are checked before any is copied.

    Guest RAM is zero when this runs (fresh, or cleared on reset), so the
    zero-filled tail of a segment (.bss) is left untouched and costs no memory.
    """
    for seg in image.segments:
        if seg.paddr < min_gpa:
            raise ImageError(
                f"segment at {seg.paddr:#x} overlaps VMM-reserved memory (images load at "
                f">= {min_gpa:#x})"
            )
        try:
            memory.view(seg.paddr, seg.memsz)
        except GuestMemoryError:
            raise ImageError(
                f"segment {seg.paddr:#x}+{seg.memsz:#x} does not fit in "
                f"{memory.size >> 20} MiB of guest RAM"
            ) from None
    for seg in image.segments:
        memory.write(seg.paddr, seg.data)
