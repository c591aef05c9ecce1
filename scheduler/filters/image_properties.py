"""ImagePropertiesFilter: the host has every trait the image requires (e.g. vhost:kernel)."""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostFilter, Mask, PlacementConfig, Request


def passes(c: Candidates, r: Request, cfg: PlacementConfig) -> Mask | None:
    if not r.required_traits:
        return None
    need = 0
    for trait in r.required_traits:
        bit = c.table.trait_bits.get(trait)
        if bit is None:  # no host has ever offered it
            return np.zeros(len(c), dtype=bool)
        need |= 1 << bit
    want = np.uint64(need)
    return (c.traits & want) == want


def why(r: Request, cfg: PlacementConfig) -> str:
    return f"lacks {', '.join(r.required_traits)}"


FILTER = HostFilter("ImagePropertiesFilter", passes, why)
