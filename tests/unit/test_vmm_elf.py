import struct

import pytest

from computed.vmm.elf import load_image, parse_elf
from computed.vmm.errors import ImageError
from computed.vmm.memory import GuestMemory

MIN_GPA = 0x100000


def make_elf(segments, entry=0x100000, machine=62, etype=2):
    """A minimal ELF64 with the given (paddr, data, memsz) PT_LOAD segments."""
    phoff = 64
    offset = phoff + 56 * len(segments)
    phdrs, blobs = b"", b""
    for paddr, data, memsz in segments:
        phdrs += struct.pack(
            "<IIQQQQQQ", 1, 5, offset + len(blobs), paddr, paddr, len(data), memsz, 0x1000
        )
        blobs += data
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH",
        ident,
        etype,
        machine,
        1,
        entry,
        phoff,
        0,
        0,
        64,
        56,
        len(segments),
        64,
        0,
        0,
    )
    return ehdr + phdrs + blobs


def test_parses_segments_and_entry():
    image = parse_elf(make_elf([(0x100000, b"\x90" * 16, 0x2000)]))
    assert image.entry == 0x100000
    assert image.segments[0].paddr == 0x100000
    assert image.end == 0x102000


@pytest.mark.parametrize(
    "blob,match",
    [
        (b"", "not an ELF"),
        (b"MZ" + bytes(100), "not an ELF"),
        (make_elf([(0x100000, b"x", 1)], machine=3), "x86-64"),
        (make_elf([(0x100000, b"x", 1)], etype=3), "ET_EXEC"),
        (make_elf([(0x100000, b"x", 1)], entry=0x5000), "entry point"),
        (make_elf([(0x100000, b"xx", 1)]), "truncated"),
    ],
)
def test_bad_images_are_refused(blob, match):
    with pytest.raises(ImageError, match=match):
        parse_elf(blob)


def test_truncated_file_is_refused():
    blob = make_elf([(0x100000, b"\x90" * 64, 64)])
    with pytest.raises(ImageError):
        parse_elf(blob[:-10])


def test_load_copies_data_and_leaves_bss_zero():
    mem = GuestMemory(4 << 20)
    load_image(parse_elf(make_elf([(0x100000, b"abc", 0x1000)])), mem, MIN_GPA)
    assert mem.read(0x100000, 4) == b"abc\0"


@pytest.mark.parametrize("paddr", [0x1000, (4 << 20) - 8, 1 << 40])
def test_segments_outside_ram_or_in_reserved_memory_are_refused(paddr):
    mem = GuestMemory(4 << 20)
    image = parse_elf(make_elf([(paddr, b"\x90" * 16, 16)], entry=paddr))
    with pytest.raises(ImageError):
        load_image(image, mem, MIN_GPA)
    assert mem.read(0x100000, 16) == bytes(16)
