"""CoreFilter: enough unclaimed vCPUs, after the CPU allocation ratio."""

from __future__ import annotations

from scheduler.placement import Candidates, HostFilter, Mask, PlacementConfig, Request


def passes(c: Candidates, r: Request, cfg: PlacementConfig) -> Mask:
    return c.free_vcpus >= r.vcpus


def why(r: Request, cfg: PlacementConfig) -> str:
    return f"insufficient vCPUs (need {r.vcpus})"


FILTER = HostFilter("CoreFilter", passes, why)
