"""Limits every part of computed agrees on: what a VM may be and what its names may hold.

One home, cheap to import (no imports at all), because the VMM checks its
command line against these at every launch, the agent checks the specs it is
handed, and the scheduler checks flavors and requests before anything is
placed. A limit written twice drifts.
"""

from __future__ import annotations

MIB = 1 << 20
MIN_MEMORY_MIB = 2
MAX_MEMORY_MIB = 64 * 1024
MAX_VCPUS = 32
NAME_MAX = 63
CMDLINE_MAX = 2047

# Plain character checks rather than `re`: the VMM pays every import at each start.
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_UUID_GROUPS = (8, 4, 4, 4, 12)


def is_valid_name(text: str) -> bool:
    """1..NAME_MAX of [A-Za-z0-9._-], starting with a letter or digit."""
    return 0 < len(text) <= NAME_MAX and _NAME_CHARS.issuperset(text) and text[0].isalnum()


def is_valid_uuid(text: str) -> bool:
    """8-4-4-4-12 hex digits."""
    groups = text.split("-")
    return tuple(map(len, groups)) == _UUID_GROUPS and HEX_DIGITS.issuperset("".join(groups))


def mac_problem(text: str) -> str | None:
    """Why `text` cannot be a NIC's MAC address, or None when it can."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and HEX_DIGITS.issuperset(p) for p in parts):
        return "expected six hex bytes like 52:54:00:12:34:56"
    if int(parts[0], 16) & 1:
        return "a multicast address cannot be a NIC's"
    return None
