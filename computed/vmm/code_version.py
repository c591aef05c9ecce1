"""What identifies the installed VMM code, so the agent can tell when its warm parent runs
old code: a changed file means a new warm parent, and new VMMs run the new code while
running ones keep theirs. Stdlib only: the agent asks before every warm spawn.
"""

from __future__ import annotations

import hashlib
import os
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The VMM's own code and the shared modules it imports (docs/architecture.md).
_WATCHED = ("vmm", "vmm/devices", "vmm/seccomp", "guests", ".")
_SUFFIXES = (".py", ".so", ".bpf")


def code_version() -> str:
    """What identifies the installed VMM code: a changed file means a new warm parent,
    so new VMMs run new code while running ones keep theirs."""
    digest = hashlib.sha256()
    for base in _WATCHED:
        folder = os.path.join(_ROOT, base)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            if name.endswith(_SUFFIXES):
                st = os.stat(os.path.join(folder, name))
                digest.update(f"{base}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


MAX_AGE = 1.0  # seconds: how late the agent may notice an install
_last: tuple[float, str] | None = None


def recent_code_version() -> str:
    """code_version(), computed at most once a second. The agent asks before every warm
    spawn, under the lock that serialises them: at 100 spawns a second, stat-ing ~100
    installed files each time was a fifth of the agent's CPU. An install is noticed at
    the first spawn a second after it."""
    global _last
    now = time.monotonic()
    if _last is None or now - _last[0] >= MAX_AGE:
        _last = (now, code_version())
    return _last[1]
