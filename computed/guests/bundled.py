"""Where the bundled guest images live, for the VMM (`-kernel NAME`), the agent and the
scheduler's image catalog alike.

os.path rather than pathlib: the VMM imports this at every start, where imports are paid.
"""

from __future__ import annotations

import os

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images")


def bundled_dir() -> str:
    return os.environ.get("COMPUTED_GUEST_DIR", BUNDLED_DIR)


def bundled_names() -> list[str]:
    d = bundled_dir()
    if not os.path.isdir(d):
        return []
    return sorted(n for n in os.listdir(d) if os.path.isfile(os.path.join(d, n)))
