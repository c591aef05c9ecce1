"""Where a request's instances go: filters, then weighers, over the placement table. Pure.

A batch (`--count N`) is placed one instance at a time, each placement
counted in the candidate columns before the next is decided, and each
instance gets up to ALTERNATES more hosts for build retries. Every step is
an array operation over all hosts (scheduler/placement.py explains the
filter and weigher interface), so a decision among 10,000 hosts costs
microseconds per filter, not a Python loop.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping

import numpy as np

from computed.store.records import InstanceRecord, ServerGroupRecord
from scheduler import filters, weighers
from scheduler.host_table import HostTable
from scheduler.placement import (
    Candidates,
    HostFilter,
    HostWeigher,
    NoValidHost,
    PlacementConfig,
    Request,
)

ALTERNATES = 2
DEFAULT_CONFIG = PlacementConfig()


@dataclasses.dataclass(frozen=True)
class Decision:
    host: str
    alternates: tuple[str, ...]


def choose_hosts(
    table: HostTable,
    r: Request,
    cfg: PlacementConfig = DEFAULT_CONFIG,
    rng: random.Random | None = None,
) -> list[Decision]:
    """One Decision per instance (at least min_count of them), or NoValidHost saying why."""
    active = filters.named(cfg.filters)
    weighing = weighers.named(cfg.weighers)
    c = Candidates(table, r)
    decisions: list[Decision] = []
    for _ in range(r.count):
        mask = _passing(c, r, cfg, active)
        ranked = _best(c, r, cfg, weighing, mask, cfg.host_subset_size + ALTERNATES)
        if not ranked:
            if len(decisions) >= (r.min_count or r.count):
                break
            raise NoValidHost(_explain(c, r, cfg, active, len(decisions)))
        pick = 0
        if cfg.host_subset_size > 1:
            pick = (rng or random).randrange(min(cfg.host_subset_size, len(ranked)))
        chosen = ranked[pick]
        others = [i for i in ranked if i != chosen][:ALTERNATES]
        decisions.append(Decision(c.ids[chosen], tuple(c.ids[i] for i in others)))
        c.place(chosen, r)
    return decisions


def _passing(
    c: Candidates, r: Request, cfg: PlacementConfig, active: tuple[HostFilter, ...]
) -> np.ndarray:
    mask = c.known.copy()
    for f in active:
        result = f.passes(c, r, cfg)
        if result is not None:
            mask &= result
    return mask


def _best(
    c: Candidates,
    r: Request,
    cfg: PlacementConfig,
    weighing: tuple[HostWeigher, ...],
    mask: np.ndarray,
    n: int,
) -> list[int]:
    """Row indices of up to n passing hosts, best first.

    Each weigher's raw numbers are normalised to 0..1 over the passing hosts
    and scaled by its multiplier; as only the order matters, that is one
    multiply per weigher: multiplier / (max - min) times the raw numbers.
    """
    everyone = bool(mask.all())
    rows = None if everyone else np.flatnonzero(mask)
    if rows is not None and rows.size == 0:
        return []
    total: np.ndarray | None = None
    for w in weighing:
        m = w.multiplier(r, cfg)
        if m == 0.0:
            continue
        raw = w.raw(c, r, cfg)
        values = raw if rows is None else raw[rows]
        lo, hi = values.min(), values.max()
        if hi == lo:
            continue
        term = values * (m / float(hi - lo))
        total = term if total is None else total + term
    size = len(c) if rows is None else rows.size
    if total is None:  # nothing tells the hosts apart: keep table order
        order = list(range(min(n, size)))
    elif n == 1:
        order = [int(np.argmax(total))]
    elif size > 4 * n:
        top = np.argpartition(-total, n - 1)[:n]
        order = top[np.argsort(-total[top], kind="stable")].tolist()
    else:
        order = np.argsort(-total, kind="stable")[:n].tolist()
    return order if rows is None else rows[order].tolist()


def _explain(
    c: Candidates,
    r: Request,
    cfg: PlacementConfig,
    active: tuple[HostFilter, ...],
    placed: int,
) -> str:
    """Why no host passed: how many hosts each filter turned away (the first that did)."""
    remaining = c.known.copy()
    reasons: Counter[str] = Counter()
    for f in active:
        result = f.passes(c, r, cfg)
        if result is None:
            continue
        failed = int(np.count_nonzero(remaining & ~result))
        if failed:
            reasons[f"{f.name} ({f.why(r, cfg)})"] += failed
        remaining &= result
    detail = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    known = int(np.count_nonzero(c.known))
    return (
        f"{placed} of {r.min_count or r.count} instance(s) placeable; "
        f"0/{known} hosts available for the next: {detail or 'no hosts'}"
    )


def group_member_hosts(
    instances: Mapping[str, InstanceRecord], group: ServerGroupRecord | None
) -> tuple[str, ...]:
    """The host of each placed member of `group` (Request.group_hosts)."""
    if group is None:
        return ()
    placed = (instances.get(uuid) for uuid in group.members)
    return tuple(rec.host for rec in placed if rec is not None and rec.host)
