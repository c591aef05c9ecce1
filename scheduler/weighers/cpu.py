"""CPUWeigher: free vCPUs; positive spreads, negative packs."""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostWeigher, PlacementConfig, Request


def raw(c: Candidates, r: Request) -> np.ndarray:
    return c.free_vcpus


def multiplier(cfg: PlacementConfig, r: Request) -> float:
    return cfg.cpu_weight_multiplier


WEIGHER = HostWeigher("CPUWeigher", raw, multiplier)
