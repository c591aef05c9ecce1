"""Host weighers: one module each, all with the HostWeigher interface (scheduler/placement.py).

All of them always run; a multiplier of 0 (from PlacementConfig) turns one off.
"""

from __future__ import annotations

from scheduler.placement import HostWeigher
from scheduler.weighers import build_failure, cpu, num_instances, ram, server_group

DEFAULT: tuple[HostWeigher, ...] = tuple(
    m.WEIGHER for m in (ram, cpu, num_instances, build_failure, server_group)
)
