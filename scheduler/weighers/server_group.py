"""ServerGroupSoftAffinityWeigher / SoftAntiAffinityWeigher: soft group policies.

Soft affinity prefers hosts holding more of the group, soft anti-affinity
fewer; hard policies are the filter's job, so they weigh nothing here.
"""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostWeigher, PlacementConfig, Request


def raw(c: Candidates, r: Request, cfg: PlacementConfig) -> np.ndarray:
    if r.group is not None and r.group.policy == "anti-affinity":
        return -c.group_members
    return c.group_members


def multiplier(r: Request, cfg: PlacementConfig) -> float:
    if r.group is None or not r.group.soft:
        return 0.0
    return cfg.soft_affinity_weight_multiplier


WEIGHER = HostWeigher("ServerGroupSoftWeigher", raw, multiplier)
