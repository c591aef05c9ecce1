"""RamFilter: enough unclaimed memory, after the RAM allocation ratio and host reserve."""

from __future__ import annotations

from scheduler.placement import Candidates, HostFilter, Mask, PlacementConfig, Request


def passes(c: Candidates, r: Request, cfg: PlacementConfig) -> Mask:
    return c.free_memory_mb >= r.memory_mb


def why(r: Request, cfg: PlacementConfig) -> str:
    return f"insufficient memory (need {r.memory_mb} MiB)"


FILTER = HostFilter("RamFilter", passes, why)
