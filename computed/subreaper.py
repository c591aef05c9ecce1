"""Make this process the subreaper of its descendants (PR_SET_CHILD_SUBREAPER).

The agent's warm parent forks each VMM through an intermediate process that
exits at once; the orphaned VMM is then re-parented to the nearest subreaper,
the agent, which can wait() for it and learn its exit status, signal deaths
included, as it does for a VMM it exec'd itself.
"""

from __future__ import annotations

import os

from computed._host import ffi, lib


def become_subreaper() -> None:
    if lib.prctl(lib.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ffi.errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ffi.errno)}")
