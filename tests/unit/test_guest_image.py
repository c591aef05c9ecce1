"""The image rules shared by the VMM, the scheduler's upload check and the SDK."""

from __future__ import annotations

import pytest
from computed.vmm._kvm import lib

from computed.guest_image import (
    IMAGE_MIN_GPA,
    ImageFormatError,
    parse_elf,
    required_ram,
    validate,
)
from tests.unit.test_vmm_elf import make_elf


def test_layout_constants_match_the_header():
    assert lib.COMPUTED_IMAGE_MIN_GPA == IMAGE_MIN_GPA


def test_a_segment_below_the_image_base_is_refused_without_any_ram():
    with pytest.raises(ImageFormatError, match="VMM-reserved"):
        validate(make_elf([(0x1000, b"x", 1)], entry=0x1000))


def test_a_segment_in_the_device_hole_is_refused():
    paddr = (3 << 30) - 0x1000
    with pytest.raises(ImageFormatError, match="device hole"):
        validate(make_elf([(paddr, b"x", 0x2000)], entry=paddr))


def test_required_ram_follows_the_vmm_layout():
    assert required_ram(parse_elf(make_elf([(0x100000, b"x", 0x2000)]))) == 0x102000
    high = parse_elf(make_elf([(4 << 30, b"x", 1 << 20)], entry=4 << 30))
    assert required_ram(high) == (3 << 30) + (1 << 20)


def test_the_vmm_and_the_upload_check_give_the_same_reason():
    from computed.vmm.elf import parse_elf as vmm_parse
    from computed.vmm.errors import ImageError

    blob = make_elf([(0x100000, b"x", 1)], machine=3)
    with pytest.raises(ImageFormatError) as shared:
        validate(blob, "upload")
    with pytest.raises(ImageError) as vmm:
        vmm_parse(blob, "upload")
    assert str(shared.value) == str(vmm.value) == "upload: not an x86-64 ELF (e_machine=3)"
