"""AvailabilityZoneFilter: only hosts in the requested zone, if one was asked for."""

from __future__ import annotations

import numpy as np

from scheduler.placement import Candidates, HostFilter, Mask, PlacementConfig, Request


def passes(c: Candidates, r: Request, cfg: PlacementConfig) -> Mask | None:
    if not r.availability_zone:
        return None
    code = c.table.zone_codes.get(r.availability_zone)
    return np.zeros(len(c), dtype=bool) if code is None else c.zone == code


def why(r: Request, cfg: PlacementConfig) -> str:
    return f"not in zone {r.availability_zone}"


FILTER = HostFilter("AvailabilityZoneFilter", passes, why)
