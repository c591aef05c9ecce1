"""ComputeFilter: only hosts that are up (liveness lease alive) and are enabled."""

from __future__ import annotations

from scheduler.placement import Candidates, HostFilter, Mask, PlacementConfig, Request


def passes(c: Candidates, r: Request, cfg: PlacementConfig) -> Mask:
    return c.up & c.enabled


def why(r: Request, cfg: PlacementConfig) -> str:
    return "host is down or disabled"


FILTER = HostFilter("ComputeFilter", passes, why)
