"""Which mappings a VMM offers to KSM, and how the agent starts it."""

from __future__ import annotations

from agent.ksm import start_merging
from computed.vmm.page_merging import mergeable_ranges

MAPS = """\
55d0c0000000-55d0c0001000 r--p 00000000 fe:01 1234  /usr/bin/python3.11
55d0c0400000-55d0c0402000 rw-p 00400000 fe:01 1234  /usr/bin/python3.11
55d0c1000000-55d0c1200000 rw-p 00000000 00:00 0  [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000200000-7f0000300000 rw-s 00000000 00:01 99  /dev/zero (deleted)
7f0000400000-7f0000401000 ---p 00000000 00:00 0
7f0000500000-7f0000510000 r-xp 00000000 fe:01 42  /usr/lib/libpython3.11.so.1.0
7f0000600000-7f0000640000 rw-p 00100000 fe:01 42  /usr/lib/libpython3.11.so.1.0
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0  [stack]
7ffc00100000-7ffc00104000 r--p 00000000 00:00 0  [vvar]
7ffc00104000-7ffc00106000 r-xp 00000000 00:00 0  [vdso]
"""


def test_only_private_writable_non_stack_memory_is_offered():
    assert mergeable_ranges(MAPS) == [
        (0x55D0C0400000, 0x55D0C0402000),  # the executable's data
        (0x55D0C1000000, 0x55D0C1200000),  # the heap
        (0x7F0000000000, 0x7F0000100000),  # anonymous: the allocator's arenas
        (0x7F0000600000, 0x7F0000640000),  # libpython's data
    ]  # not: code, read-only, guard pages, shared memory, the stack, the kernel's pages


def test_the_agent_starts_ksm_only_where_it_is_off(tmp_path):
    run = tmp_path / "run"
    for was, started in (("0\n", True), ("2\n", True), ("1\n", False)):
        run.write_text(was)
        assert start_merging(str(run)) is started
        assert run.read_text().strip() == "1"
