"""Small /proc look-ups shared by the VMM and the agent (stdlib only: the VMM imports it)."""

from __future__ import annotations

import os


def stat_fields(path: str) -> list[str]:
    """The fields of a /proc/<pid>[/task/<tid>]/stat from `state` on (proc(5) field 3 is
    index 0). Split after the last ')': the command name may hold spaces and parentheses."""
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()


def find_kernel_thread(comm: str) -> int | None:
    """PID of the task whose comm is `comm` (kvm-pit/<pid>, vhost-<pid>), by one /proc scan."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                if f.read().rstrip("\n") == comm:
                    return int(entry.name)
        except OSError:
            continue
    return None
