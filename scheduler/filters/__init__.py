"""Host filters: one module each, all with the HostFilter interface (scheduler/placement.py).

DEFAULT is the order they run in when the operator names none (PlacementConfig.filters);
cheap, selective ones first only matters for the reasons reported on failure.
"""

from __future__ import annotations

from scheduler.filters import (
    availability_zone,
    compute,
    core,
    image_properties,
    num_instances,
    ram,
    server_group,
)
from scheduler.placement import HostFilter, Registry

_IN_ORDER = (compute, availability_zone, image_properties, ram, core, num_instances, server_group)
REGISTRY: Registry[HostFilter] = Registry("filter", tuple(m.FILTER for m in _IN_ORDER))
DEFAULT = REGISTRY.default
named = REGISTRY.named  # the filters PlacementConfig.filters names
