"""NumInstancesWeigher: instances on the host; a negative multiplier prefers emptier hosts."""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostWeigher, PlacementConfig, Request


def raw(c: Candidates, r: Request) -> np.ndarray:
    return c.instances


def multiplier(cfg: PlacementConfig, r: Request) -> float:
    return cfg.num_instances_weight_multiplier


WEIGHER = HostWeigher("NumInstancesWeigher", raw, multiplier)
