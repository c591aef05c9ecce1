"""RAMWeigher: free memory. A positive multiplier spreads (the default), a negative one packs."""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostWeigher, PlacementConfig, Request


def raw(c: Candidates, r: Request, cfg: PlacementConfig) -> np.ndarray:
    return c.free_memory_mb


def multiplier(r: Request, cfg: PlacementConfig) -> float:
    return cfg.ram_weight_multiplier


WEIGHER = HostWeigher("RAMWeigher", raw, multiplier)
