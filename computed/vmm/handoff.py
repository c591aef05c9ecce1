"""Handing a VMM request from the agent to a new VMM process: the request's wire
format, and the child's side of taking it over.

A request is one SOCK_SEQPACKET message: a JSON object {"argv": [...], "fds": [n, ...]}
with the file descriptors to install carried as SCM_RIGHTS, in the order of "fds" (the
i-th received fd becomes fd fds[i] in the VMM: its stdout and stderr, a tap). The warm
parent (zygote.py) receives it from the agent and passes it on, unchanged, to a standby
(standby.py); a forked or standby child then becomes the VMM through `become_vmm`.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import socket
from collections.abc import Iterable
from typing import NoReturn

import setproctitle

from computed.vmm import main as vmm_main
from computed.vmm.prepared import Prepared

MAX_REQUEST = 64 * 1024
MAX_FDS = 16


def receive_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """One request from `conn`: (the JSON object, the fds received). EOFError when the
    peer connected and left (a readiness probe) or closed; ValueError when malformed,
    with every received fd closed."""
    fds = array.array("i")
    msg, ancdata, flags, _ = conn.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    received = list(fds)
    if not msg and not received:
        raise EOFError
    try:
        return _checked(msg, flags, received), received
    except ValueError:
        for fd in received:  # refused: nothing of it may stay open here (or reach a VMM)
            os.close(fd)
        raise


def _checked(msg: bytes, flags: int, received: list[int]) -> dict:
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise ValueError("request too large")
    request = json.loads(msg)
    if not isinstance(request, dict) or not isinstance(request.get("argv"), list):
        raise ValueError("a request is {'argv': [...], 'fds': [...]}")
    targets = request.get("fds", [])
    if len(targets) != len(received) or not all(isinstance(n, int) and n >= 0 for n in targets):
        raise ValueError(f"{len(received)} fds received for targets {targets!r}")
    return request


def send_request(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Pass a request on (to a standby), with its fds."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    conn.sendmsg([json.dumps(request).encode()], ancillary if fds else [])


def become_vmm(
    request: dict,
    received: list[int],
    announce: Announcer,
    prepared: Prepared | None = None,
) -> NoReturn:
    """In the VMM's own process: install the fds where argv expects them, close every
    other fd, take the VMM's title, `announce()` (only now may the agent be given our
    pid: /proc/<pid>/cmdline reads as this VMM's), and run. Never returns. `prepared`
    (a standby's, or the warm parent's /dev/kvm handle) is kept open, out of the way of
    the numbers argv names."""
    argv, targets = request["argv"], request.get("fds", [])
    try:
        highest = max(targets, default=2)
        announce.fd = _renumbered(announce.fd, highest)
        if prepared is not None:
            _move_above(prepared, highest)
        # Move every received fd out of the way first, so installing one never
        # clobbers another that is still to be installed.
        moved = [os.dup(fd) for fd in received]
        for fd in received:
            os.close(fd)
        for fd, target in zip(moved, targets, strict=True):
            os.dup2(fd, target, inheritable=True)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        # Nothing of the warm parent's reaches the VMM: only stdio and what was handed in.
        wanted = {0, 1, 2, *targets, announce.fd}
        if prepared is not None:
            wanted.update(prepared.fds())
        close_fds_except(wanted)
        setproctitle.setproctitle(" ".join(argv))
        setproctitle.setthreadtitle(os.path.basename(argv[0]))  # comm, as an exec'd VMM has
        announce()
        vmm_main.main(argv[1:], prepared)  # exits with the VMM's code
    finally:
        os._exit(1)  # only if installing the fds failed


def close_fds_except(keep: Iterable[int]) -> None:
    """Close every fd but `keep`, a range at a time (close_range(2) where the kernel has
    it): in a forked child, listing /proc/self/fd and closing one by one took 0.3 ms,
    against 0.1 ms. An empty range is never passed: Python 3.11's os.closerange(0, 0)
    hands close_range() the last fd -1, read as the highest, and closes every fd."""
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(low + 1, os.sysconf("SC_OPEN_MAX")))


class Announcer:
    """How a new VMM tells the warm parent it is presentable: one write on an fd that
    it closes after (the warm parent reads until EOF)."""

    def __init__(self, fd: int, message: bytes) -> None:
        self.fd, self.message = fd, message

    def __call__(self) -> None:
        os.write(self.fd, self.message)
        os.close(self.fd)


def _move_above(prepared: Prepared, highest: int) -> None:
    """Renumber the /dev/kvm, VM and vCPU fds above every number argv names."""
    prepared.kvm.fd = _renumbered(prepared.kvm.fd, highest)
    if prepared.shell is not None:
        prepared.shell.renumber(lambda fd: _renumbered(fd, highest))


def _renumbered(fd: int, highest: int) -> int:
    if fd > highest:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, highest + 1)
    os.close(fd)
    return new
