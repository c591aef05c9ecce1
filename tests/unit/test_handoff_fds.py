"""What a VMM made by the warm parent keeps of its parent's fds (handoff.close_fds_except)."""

import json
import os
from collections.abc import Callable

from computed.vmm.handoff import close_fds_except


def _open_fds() -> list[int]:
    listing_fd = os.open(os.devnull, os.O_RDONLY)  # the lowest free: the listing's own
    os.close(listing_fd)
    return sorted(int(name) for name in os.listdir("/proc/self/fd") if int(name) != listing_fd)


def _left_open(keep_of: Callable[[list[int], int], list[int]]) -> tuple[list[int], list[int]]:
    """In a forked child: with six more fds open, keep those `keep_of(opened, pipe)`
    names and report what is open then. Returns (what was kept and open before, what was
    left open); stdio may be closed where the tests run."""
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(6)]
    r, w = os.pipe()
    keep = keep_of(opened, w)
    kept = sorted(set(keep) & set(_open_fds()))
    pid = os.fork()
    if pid == 0:
        try:
            close_fds_except(keep)
            os.write(w, json.dumps(_open_fds()).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as pipe:
            left = json.loads(pipe.read() or b"null")
    finally:
        os.waitpid(pid, 0)
        for fd in opened:
            os.close(fd)
    return kept, left


def test_only_the_kept_fds_stay_open_with_gaps_between_them():
    kept, left = _left_open(lambda opened, w: [0, 1, 2, opened[1], opened[4], w])
    assert left == kept


def test_with_fd_0_not_kept_the_ones_kept_still_stay():
    """Python 3.11's os.closerange(0, 0) closes every fd: it must never be called."""
    kept, left = _left_open(lambda opened, w: [opened[0], w])
    assert left == kept
