"""Host filters: one module each, all with the HostFilter interface (scheduler/placement.py).

DEFAULT is the order they run in when the operator names none; cheap,
selective ones first only matters for the reasons reported on failure.
"""

from __future__ import annotations

import functools

from scheduler.filters import (
    availability_zone,
    compute,
    core,
    image_properties,
    num_instances,
    ram,
    server_group,
)
from scheduler.placement import HostFilter

DEFAULT: tuple[HostFilter, ...] = tuple(
    m.FILTER
    for m in (compute, availability_zone, image_properties, ram, core, num_instances, server_group)
)
BY_NAME: dict[str, HostFilter] = {f.name: f for f in DEFAULT}


@functools.cache  # every decision asks; the answer for one configuration never changes
def named(names: tuple[str, ...] | None) -> tuple[HostFilter, ...]:
    """The filters to run; ValueError naming any that does not exist."""
    if names is None:
        return DEFAULT
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown filter(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return tuple(BY_NAME[n] for n in names)
