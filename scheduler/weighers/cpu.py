"""CPUWeigher: free vCPUs; positive spreads, negative packs."""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostWeigher, PlacementConfig, Request


def raw(c: Candidates, r: Request, cfg: PlacementConfig) -> np.ndarray:
    return c.free_vcpus


def multiplier(r: Request, cfg: PlacementConfig) -> float:
    return cfg.cpu_weight_multiplier


WEIGHER = HostWeigher("CPUWeigher", raw, multiplier)
