"""Where a request's instances go, decided on the cache's view of the cluster. Pure.

Filters (each returns the reason a host fails, or None) then a RAM-spread
weigher; a batch is placed one instance at a time, each placement counted
before the next, and gets up to two alternates for build retries. This is
the plain version, O(hosts) Python per instance; the vectorised placement
core replaces its insides for large clusters without changing its interface.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable

from computed.store.records import ServerGroupRecord
from scheduler.claims import host_capacity
from scheduler.errors import NoValidHost
from scheduler.host_cache import ClusterView

ALTERNATES = 2


@dataclasses.dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mb: int
    count: int = 1
    min_count: int | None = None  # None: all of count or nothing
    availability_zone: str | None = None
    required_traits: tuple[str, ...] = ()
    group: ServerGroupRecord | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    host: str
    alternates: tuple[str, ...]


@dataclasses.dataclass
class _Host:
    """One host's state for this decision; usage changes as the batch is placed."""

    host_id: str
    up: bool
    enabled: bool
    zone: str
    traits: frozenset[str]
    free_vcpus: int
    free_memory_mb: int
    group_members: int  # instances of the request's server group already here


Filter = Callable[[_Host, Request], str | None]


def _compute(h: _Host, r: Request) -> str | None:
    if not h.up:
        return "host is down"
    return None if h.enabled else "host is disabled"


def _ram(h: _Host, r: Request) -> str | None:
    free = h.free_memory_mb
    return None if free >= r.memory_mb else f"insufficient memory (need {r.memory_mb} MiB)"


def _vcpu(h: _Host, r: Request) -> str | None:
    return None if h.free_vcpus >= r.vcpus else f"insufficient vCPUs (need {r.vcpus})"


def _zone(h: _Host, r: Request) -> str | None:
    if r.availability_zone and h.zone != r.availability_zone:
        return f"not in zone {r.availability_zone}"
    return None


def _traits(h: _Host, r: Request) -> str | None:
    missing = set(r.required_traits) - h.traits
    return f"lacks {', '.join(sorted(missing))}" if missing else None


def _group(h: _Host, r: Request) -> str | None:
    g = r.group
    if g is None or g.soft:
        return None
    if g.policy == "anti-affinity" and h.group_members:
        return f"already has a member of anti-affinity group {g.name}"
    return None


FILTERS: tuple[tuple[str, Filter], ...] = (
    ("ComputeFilter", _compute), ("RamFilter", _ram), ("CoreFilter", _vcpu),
    ("AvailabilityZoneFilter", _zone), ("ImagePropertiesFilter", _traits),
    ("ServerGroupFilter", _group),
)  # fmt: skip


def _hosts(view: ClusterView, r: Request) -> list[_Host]:
    members = set(r.group.members) if r.group else set()
    per_host = Counter(
        rec.host for uid, rec in view.instances.items() if uid in members and rec.host
    )
    out = []
    for host_id, rec in view.hosts.items():
        cap = host_capacity(rec)
        alloc = view.allocations.get(host_id)
        admin = view.admin.get(host_id)
        traits = frozenset({f"vhost:{rec.kvm.vhost}", f"kvm:{rec.kvm.vendor_module}"})
        out.append(_Host(
            host_id, host_id in view.live, admin is None or admin.enabled,
            rec.availability_zone, traits,
            cap.usable_vcpus - (alloc.vcpus if alloc else 0),
            cap.usable_memory_mb - (alloc.memory_mb if alloc else 0),
            per_host[host_id],
        ))  # fmt: skip
    return out


def choose_hosts(view: ClusterView, r: Request) -> list[Decision]:
    """One Decision per instance (at least min_count of them), or NoValidHost saying why."""
    hosts = _hosts(view, r)
    decisions: list[Decision] = []
    # Hard affinity: where the group already is, or wherever its first instance goes.
    settled = [h.host_id for h in hosts if h.group_members]
    affinity_host: str | None = settled[0] if settled else None
    for _ in range(r.count):
        reasons: Counter[str] = Counter()
        passing = []
        for h in hosts:
            why = next(((name, msg) for name, f in FILTERS if (msg := f(h, r))), None)
            if (
                why is None
                and affinity_host
                and r.group
                and not r.group.soft
                and r.group.policy == "affinity"
                and h.host_id != affinity_host
            ):
                why = ("ServerGroupFilter", f"affinity group {r.group.name} is on {affinity_host}")
            if why is None:
                passing.append(h)
            else:
                reasons[f"{why[0]} ({why[1]})"] += 1
        if not passing:
            if len(decisions) >= (r.min_count or r.count):
                break
            detail = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            raise NoValidHost(
                f"{len(decisions)} of {r.min_count or r.count} instance(s) placeable; "
                f"0/{len(hosts)} hosts available for the next: {detail or 'no hosts'}"
            )
        ranked = sorted(passing, key=lambda h: _weight(h, r), reverse=True)
        chosen = ranked[0]
        decisions.append(
            Decision(chosen.host_id, tuple(h.host_id for h in ranked[1 : 1 + ALTERNATES]))
        )
        chosen.free_vcpus -= r.vcpus
        chosen.free_memory_mb -= r.memory_mb
        chosen.group_members += 1
        if r.group and r.group.policy == "affinity":
            affinity_host = affinity_host or chosen.host_id
    return decisions


def _weight(h: _Host, r: Request) -> tuple[float, float]:
    """Spread by free RAM; a soft group policy weighs first."""
    group = 0.0
    if r.group is not None and r.group.soft:
        group = -h.group_members if r.group.policy == "anti-affinity" else h.group_members
    return (group, h.free_memory_mb)
