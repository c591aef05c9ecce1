"""Write a guest's interrupt descriptor table into its image when it is built.

Guest ring 0 is emulated on PVM hosts, at about a million instructions a second,
and the runtime's rt_idt_init() built its 49 gates at every boot: 1.1 ms of the
heartbeat's vCPU time, the largest part of its start once its first line was one
exit. Every gate is known once the image is linked, since the handlers' addresses
are. So computed-guest-cc writes them into the image: the table `rt_idt` is in
.data, the runtime's plan `rt_idt_plan` (handler, vector, DPL) in .rodata, and
`rt_idt_prebuilt` set to 1 tells rt_idt_init() that only `lidt` is left. An image
linked by another build system keeps `rt_idt_prebuilt` 0 and builds the table at
boot, as it always did; a reset reloads the image, table included.

Pure and stdlib only, as the rest of the SDK driver.
"""

from __future__ import annotations

import struct

from computed.guest_image import ELF_HEADER, PROGRAM_HEADER, PT_LOAD

_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_SLOT = struct.Struct("<QBB6x")  # struct rt_idt_slot in rt.c
_GATE = struct.Struct("<QQ")
_SHT_SYMTAB = 2
_KERNEL_CODE = 0x08  # COMPUTED_SEL_KCODE
_INTERRUPT_GATE = 0x8E  # present, 64-bit interrupt gate, DPL 0
GATES = 256

TABLE, PLAN, FLAG = "rt_idt", "rt_idt_plan", "rt_idt_prebuilt"


class PrebuildError(ValueError):
    """The image has the runtime's symbols but they are not what this expects."""


def gate(handler: int, dpl: int) -> bytes:
    """A 64-bit interrupt gate to `handler` in the kernel code segment."""
    low = (
        (handler & 0xFFFF)
        | _KERNEL_CODE << 16
        | (_INTERRUPT_GATE | (dpl & 3) << 5) << 40
        | (handler >> 16 & 0xFFFF) << 48
    )
    return _GATE.pack(low, handler >> 32)


def symbols(blob: bytes) -> dict[str, tuple[int, int]]:
    """name → (address, size) from the image's symbol table (empty if stripped)."""
    fields = ELF_HEADER.unpack_from(blob)
    shoff, shentsize, shnum = fields[6], fields[11], fields[12]
    if shoff == 0 or shentsize != _SHDR.size:
        return {}
    sections = [_SHDR.unpack_from(blob, shoff + i * _SHDR.size) for i in range(shnum)]
    found: dict[str, tuple[int, int]] = {}
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, _entsize in sections:
        if kind != _SHT_SYMTAB:
            continue
        strings_at = sections[link][4]
        for at in range(offset, offset + size, _SYM.size):
            name_at, _info, _other, _shndx, value, sym_size = _SYM.unpack_from(blob, at)
            end = blob.index(b"\0", strings_at + name_at)
            found[blob[strings_at + name_at : end].decode(errors="replace")] = (value, sym_size)
    return found


def file_offset(blob: bytes, address: int, length: int) -> int:
    """Where [address, address+length) of the loaded image is in the file."""
    fields = ELF_HEADER.unpack_from(blob)
    phoff, phnum = fields[5], fields[10]
    for i in range(phnum):
        kind, _flags, offset, vaddr, _paddr, filesz, _memsz, _align = PROGRAM_HEADER.unpack_from(
            blob, phoff + i * PROGRAM_HEADER.size
        )
        if kind == PT_LOAD and vaddr <= address and address + length <= vaddr + filesz:
            return offset + address - vaddr
    raise PrebuildError(f"{address:#x}+{length:#x} is not in the file's contents")


def prebuild(blob: bytes) -> bytes | None:
    """The image with its IDT written in, or None if it has no runtime IDT to write
    (linked with --no-runtime)."""
    found = symbols(blob)
    if not {TABLE, PLAN, FLAG} <= found.keys():
        return None
    (table, table_size), (plan, plan_size), (flag, flag_size) = (
        found[TABLE], found[PLAN], found[FLAG]
    )  # fmt: skip
    if table_size != GATES * _GATE.size or plan_size % _SLOT.size or flag_size != 4:
        raise PrebuildError(f"the runtime's {TABLE}, {PLAN} or {FLAG} has an unexpected size")
    out = bytearray(blob)
    table_at = file_offset(blob, table, table_size)
    plan_at = file_offset(blob, plan, plan_size)
    for handler, vector, dpl in _SLOT.iter_unpack(blob[plan_at : plan_at + plan_size]):
        at = table_at + vector * _GATE.size
        out[at : at + _GATE.size] = gate(handler, dpl)
    flag_at = file_offset(blob, flag, 4)
    out[flag_at : flag_at + 4] = (1).to_bytes(4, "little")
    return bytes(out)


def write_into(path: str) -> bool:
    """Prebuild the IDT of the image at `path` in place; whether it had one to write."""
    with open(path, "rb") as f:
        blob = f.read()
    patched = prebuild(blob)
    if patched is None:
        return False
    with open(path, "r+b") as f:
        f.write(patched)
    return True
