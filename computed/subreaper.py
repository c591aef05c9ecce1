"""Make this process the subreaper of its descendants (PR_SET_CHILD_SUBREAPER).

The agent's warm parent forks each VMM through an intermediate process that
exits at once; the orphaned VMM is then re-parented to the nearest subreaper,
the agent, which can wait() for it and learn its exit status, signal deaths
included, as it does for a VMM it exec'd itself.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from computed._host import ffi, lib
from computed.procfs import stat_fields


def become_subreaper() -> None:
    if lib.prctl(lib.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ffi.errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ffi.errno)}")


def reap_strays(known: Collection[int]) -> list[int]:
    """Reap every child of ours that has ended and that nobody waits for: a subreaper
    inherits orphans it never started (say, the warm parent's short-lived
    intermediate child when the warm parent dies between its fork and its wait).
    Children in `known` are left to whoever waits for them. The pids reaped."""
    reaped = []
    for pid in _children():
        if pid in known or _state(pid) != "Z":
            continue
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                reaped.append(pid)
        except ChildProcessError:
            continue
    return reaped


def _children() -> set[int]:
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            continue
    return pids


def _state(pid: int) -> str:
    try:
        return stat_fields(f"/proc/{pid}/stat")[0]
    except (OSError, IndexError):
        return ""
