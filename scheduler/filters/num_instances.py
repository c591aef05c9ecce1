"""NumInstancesFilter: fewer than max_instances_per_host instances already (Nova's 50)."""

from __future__ import annotations

from scheduler.placement import Candidates, HostFilter, Mask, PlacementConfig, Request


def passes(c: Candidates, r: Request, cfg: PlacementConfig) -> Mask:
    return c.instances < cfg.max_instances_per_host


def why(r: Request, cfg: PlacementConfig) -> str:
    return f"already runs {cfg.max_instances_per_host} instances"


FILTER = HostFilter("NumInstancesFilter", passes, why)
