"""How `-kernel NAME` finds a bundled guest image."""

from __future__ import annotations

import os

from computed.guests.bundled import bundled_dir, bundled_names
from computed.vmm.errors import ImageError


def resolve_image(spec: str) -> str:
    """A path is used as given; a bare name is looked up among the bundled guests."""
    if "/" in spec:
        return spec
    path = os.path.join(bundled_dir(), spec)
    if not os.path.isfile(path):
        names = ", ".join(bundled_names()) or "none built; run `make install`"
        raise ImageError(f"no bundled guest named {spec!r} (available: {names})")
    return path
