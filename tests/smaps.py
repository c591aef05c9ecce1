"""Which of a process's mappings are marked for the host's same-page merging (the `mg`
flag of /proc/<pid>/smaps), for the tests of computed/vmm/page_merging.py."""

from __future__ import annotations


def merge_marks(pid: int, guest_ram_mib: int) -> dict[str, list[bool]]:
    """{"heap": [...], "guest_ram": [...]}: the marks of the [heap] mappings (in address
    order: what grew later is a mapping of its own) and of every anonymous mapping of
    exactly the guest's RAM size (the guest RAM is one)."""
    marks: dict[str, list[bool]] = {"heap": [], "guest_ram": []}
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header line
                start, end = (int(x, 16) for x in fields[0].split("-"))
                name = fields[5] if len(fields) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif not name and end - start == guest_ram_mib << 20:
                    kind = "guest_ram"
                else:
                    kind = None
            elif fields[0] == "VmFlags:" and kind is not None:
                marks[kind].append("mg" in fields[1:])
    return marks
