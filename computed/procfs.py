"""Small /proc look-ups shared by the VMM and the agent (stdlib only: the VMM imports it)."""

from __future__ import annotations

import os


def stat_fields(path: str) -> list[str]:
    """The fields of a /proc/<pid>[/task/<tid>]/stat from `state` on (proc(5) field 3 is
    index 0). Split after the last ')': the command name may hold spaces and parentheses."""
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()


def read_comm(where: int | str) -> str | None:
    """The comm of /proc/<where>: a pid, or "<pid>/task/<tid>"; None if it is gone."""
    try:
        with open(f"/proc/{where}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def kernel_thread_pids() -> list[str]:
    """Every kernel thread's pid, oldest first: kthreadd's children, a few dozen, rather
    than every process of a host running a thousand VMMs; all of /proc where the
    kernel lacks CONFIG_PROC_CHILDREN."""
    if read_comm(2) == "kthreadd":
        try:
            with open("/proc/2/task/2/children") as f:
                return f.read().split()
        except OSError:
            pass
    return sorted((e.name for e in os.scandir("/proc") if e.name.isdigit()), key=int)


def last_pid() -> int:
    """The pid the kernel handed out last in our pid namespace (0: unknown). A thread
    made after this is read has a higher pid, until pids wrap around."""
    try:
        with open("/proc/sys/kernel/ns_last_pid") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def find_kernel_thread(comm: str, made_after: int = 0) -> int | None:
    """PID of the kernel thread whose comm is `comm` (kvm-pit/<pid>, vhost-<pid>), newest
    first: the one asked for was usually made a moment ago. With `made_after` (a
    last_pid() read before the thread was made), only the threads made since are read
    at first: in a burst of launches a VMM read 17 others' comm before its own (a third
    of a millisecond nested). All are read if none of those is it (pids wrapped)."""
    pids = kernel_thread_pids()
    if made_after:
        for pid in reversed(pids):
            if int(pid) <= made_after:
                break  # kthreadd's children are in the order they were made
            if read_comm(pid) == comm:
                return int(pid)
    for pid in reversed(pids):
        if read_comm(pid) == comm:
            return int(pid)
    return None
