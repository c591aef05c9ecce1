"""Where bundled guest images live and how `-kernel NAME` finds them."""

from __future__ import annotations

import os
import pathlib

from computed.vmm.errors import ImageError

BUNDLED_DIR = pathlib.Path(__file__).resolve().parent.parent / "guests" / "images"


def bundled_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("COMPUTED_GUEST_DIR", BUNDLED_DIR))


def bundled_names() -> list[str]:
    d = bundled_dir()
    return sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []


def resolve_image(spec: str) -> str:
    """A path is used as given; a bare name is looked up among the bundled guests."""
    if "/" in spec:
        return spec
    path = bundled_dir() / spec
    if not path.is_file():
        names = ", ".join(bundled_names()) or "none built; run `make install`"
        raise ImageError(f"no bundled guest named {spec!r} (available: {names})")
    return str(path)
