"""BuildFailureWeigher: steer away from hosts whose recent builds failed.

The count is Nova's `failed_builds` (computed/store BuildFailuresRecord),
reset by the host's next successful build. Its large default multiplier makes
a failing host the last choice without filtering it out: if it is the only
host left, the build is still tried there.
"""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostWeigher, PlacementConfig, Request


def raw(c: Candidates, r: Request, cfg: PlacementConfig) -> np.ndarray:
    return -c.failures


def multiplier(r: Request, cfg: PlacementConfig) -> float:
    return cfg.build_failure_weight_multiplier


WEIGHER = HostWeigher("BuildFailureWeigher", raw, multiplier)
