"""Host weighers: one module each, all with the HostWeigher interface (scheduler/placement.py).

All of them run unless the operator names some (PlacementConfig.weighers); a
multiplier of 0 (from PlacementConfig) also turns one off.
"""

from __future__ import annotations

from scheduler.placement import HostWeigher, Registry
from scheduler.weighers import build_failure, cpu, num_instances, ram, server_group

_IN_ORDER = (ram, cpu, num_instances, build_failure, server_group)
REGISTRY: Registry[HostWeigher] = Registry("weigher", tuple(m.WEIGHER for m in _IN_ORDER))
DEFAULT = REGISTRY.default
named = REGISTRY.named  # the weighers PlacementConfig.weighers names
