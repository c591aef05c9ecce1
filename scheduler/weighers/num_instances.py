"""NumInstancesWeigher: instances on the host; a negative multiplier prefers emptier hosts."""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostWeigher, PlacementConfig, Request


def raw(c: Candidates, r: Request, cfg: PlacementConfig) -> np.ndarray:
    return c.instances


def multiplier(r: Request, cfg: PlacementConfig) -> float:
    return cfg.num_instances_weight_multiplier


WEIGHER = HostWeigher("NumInstancesWeigher", raw, multiplier)
