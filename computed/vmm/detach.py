"""A fork whose child is re-parented at once: the warm parent's way to make a VMM that
is the agent's child, never its own (see detach_build.py for how and why)."""

from __future__ import annotations

import os
from typing import NamedTuple

from computed.vmm._detach import ffi, lib


class Forked(NamedTuple):
    """What `fork_detached` returns on each side."""

    in_child: bool
    intermediate: int  # the intermediate's pid: exiting; the parent reaps it, the child
    # waits until it is no longer its parent


def fork_detached() -> Forked:
    """Fork a child in a session of its own, through an intermediate that is exiting by
    the time this returns in the parent: it has let go of our memory (a vfork), and may
    not be a zombie yet. The caller reaps the intermediate (waitpid without WNOHANG). Raises
    OSError in the parent when no child could be made (the intermediate, if any, is
    reaped then)."""
    intermediate, error = ffi.new("int *"), ffi.new("int *")
    r = lib.detach_fork(intermediate, error)
    if r == 0:
        return Forked(True, intermediate[0])
    if r < 0:
        raise OSError(-r, f"clone: {os.strerror(-r)}")
    if error[0]:
        os.waitpid(r, 0)
        raise OSError(error[0], f"fork: {os.strerror(error[0])}")
    return Forked(False, r)
