"""ServerGroupAffinityFilter / AntiAffinityFilter: hard group policies.

Anti-affinity: no host already holding a member (the batch's own placements
count, so `--count 3` lands on three hosts or is refused). Affinity: the host
the group is on; if it is on none yet, any host, and then the rest of the
batch follows the first placement. Soft policies never filter; a weigher
prefers instead.
"""

from __future__ import annotations

from scheduler.placement import Candidates, HostFilter, Mask, PlacementConfig, Request


def passes(c: Candidates, r: Request, cfg: PlacementConfig) -> Mask | None:
    g = r.group
    if g is None or g.soft:
        return None
    if g.policy == "anti-affinity":
        return c.group_members == 0
    return c.group_members > 0 if c.group_members.any() else None


def why(r: Request, cfg: PlacementConfig) -> str:
    g = r.group
    if g is not None and g.policy == "anti-affinity":
        return f"already holds a member of anti-affinity group {g.name}"
    return f"not where affinity group {g.name if g else ''} is"


FILTER = HostFilter("ServerGroupFilter", passes, why)
