"""ELF64 x86-64 guest image reading and loading.

The rules (what an image must look like) live in computed/guest_image.py,
shared with the scheduler's upload check and the SDK, so an image refused at
upload is refused for the same reason the VMM would give. This module adds
the VMM's I/O: reading the file and copying segments into guest RAM. Every
segment is checked against the guest's RAM before a byte is copied, so a bad
image is refused as a whole.
"""

from __future__ import annotations

from computed.guest_image import (
    MAX_IMAGE_BYTES,
    GuestImage,
    ImageFormatError,
    Segment,
    check_placement,
)
from computed.guest_image import parse_elf as _parse_elf
from computed.vmm.errors import GuestMemoryError, ImageError
from computed.vmm.memory import GuestMemory

__all__ = ["MAX_IMAGE_BYTES", "GuestImage", "Segment", "load_image", "parse_elf", "read_image"]


def parse_elf(blob: bytes, what: str = "image") -> GuestImage:
    """Parse an ELF64 x86-64 executable; raise ImageError saying what is wrong."""
    try:
        return _parse_elf(blob, what)
    except ImageFormatError as e:
        raise ImageError(str(e)) from None


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
    try:
        check_placement(image, min_gpa)
    except ImageFormatError as e:
        raise ImageError(str(e)) from None
    for seg in image.segments:
        try:
            memory.view(seg.paddr, seg.memsz)
        except GuestMemoryError:
            raise ImageError(
                f"segment {seg.paddr:#x}+{seg.memsz:#x} does not fit in "
                f"{memory.size >> 20} MiB of guest RAM"
            ) from None
    for seg in image.segments:
        memory.write(seg.paddr, seg.data)
