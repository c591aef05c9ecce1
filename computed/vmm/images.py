"""Where bundled guest images live and how `-kernel NAME` finds them."""

from __future__ import annotations

import os

from computed.vmm.errors import ImageError

# os.path rather than pathlib: this runs at every VMM start, where imports are paid.
BUNDLED_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "guests", "images"
)


def bundled_dir() -> str:
    return os.environ.get("COMPUTED_GUEST_DIR", BUNDLED_DIR)


def bundled_names() -> list[str]:
    d = bundled_dir()
    if not os.path.isdir(d):
        return []
    return sorted(n for n in os.listdir(d) if os.path.isfile(os.path.join(d, n)))


def resolve_image(spec: str) -> str:
    """A path is used as given; a bare name is looked up among the bundled guests."""
    if "/" in spec:
        return spec
    path = os.path.join(bundled_dir(), spec)
    if not os.path.isfile(path):
        names = ", ".join(bundled_names()) or "none built; run `make install`"
        raise ImageError(f"no bundled guest named {spec!r} (available: {names})")
    return path
