"""Offer a VMM's interpreter memory to the host's same-page merging (KSM).

Python writes reference counts into the objects it only reads, so a VMM forked
by the warm parent copies most pages of the interpreter's heap it touches,
though it never changes what they hold for its own purposes. Measured on 100
idle warm-forked VMMs: 3.6 of each one's 3.8 MiB of private pages were such
copies, and 3.1 MiB of them were byte-identical to a sibling's page at the same
address. KSM, which KVM hosts run to merge qemu's guest RAM, merges identical
pages back into one copy-on-write page; the agent turns it on (agent/ksm.py).

Only the interpreter's memory is offered: the private writable mappings present
when `offer_interpreter_memory` runs (heap, allocator arenas, the data of the
libraries), which is before any guest RAM is mapped. What a VMM maps or grows
later is its own (about 0.2 MiB each, measured) and is not offered. A guest's
RAM is never merged: a guest could otherwise learn, by timing its own writes,
what another tenant's pages hold (the page-fusion side channel), and that is
not ours to trade for density. On a host without KSM, or with it stopped, the advice
changes nothing.
"""

from __future__ import annotations

from computed._host import ffi, lib

_NEVER = ("[stack]", "[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]")


def mergeable_ranges(maps: str) -> list[tuple[int, int]]:
    """The [start, end) ranges of /proc/self/maps text worth offering: private and
    writable (what a fork copies on write), not a stack (rewritten all the time), not
    the kernel's own pages, and not shared memory (KSM merges private pages only)."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        perms = fields[1]
        name = fields[5].strip() if len(fields) == 6 else ""
        if perms[1] != "w" or perms[3] != "p" or name in _NEVER or name.startswith("[stack:"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        ranges.append((start, end))
    return ranges


def offer_interpreter_memory() -> None:
    """Mark this process's interpreter memory mergeable (a kernel without KSM refuses
    the advice: nothing changes). Children forked after inherit the mark."""
    with open("/proc/self/maps") as f:
        ranges = mergeable_ranges(f.read())
    for start, end in ranges:
        lib.madvise(ffi.cast("void *", start), end - start, lib.MADV_MERGEABLE)
