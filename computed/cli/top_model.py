"""What `computectl top` shows, apart from how: rows, percentages from cumulative counters,
sorting, filtering and what each key does. Pure: no terminal, no gRPC.

The scheduler sends cumulative CPU times (ns) with the time of the agent's sample;
the percentages of the vCPU, kvm-pit and vhost threads come from the difference
between two samples of the same instance (100 % = one host CPU), as top does with
/proc. The VMM's own CPU % is the agent's, over its last interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STATUS_ORDER = ("ACTIVE", "BUILD", "PAUSED", "SHUTOFF", "ERROR")


@dataclasses.dataclass(frozen=True)
class HostRow:
    host_id: str
    up: bool
    enabled: bool
    vcpus: int
    memory_mb: int
    allocated_vcpus: int
    allocated_memory_mb: int
    cpu_percent: float | None  # None: no sample (down)
    memory_used: int
    memory_total: int
    instances: int
    load1: float

    @property
    def memory_percent(self) -> float | None:
        return 100.0 * self.memory_used / self.memory_total if self.memory_total else None


@dataclasses.dataclass(frozen=True)
class Sample:
    """One instance as one snapshot has it (the cumulative counters)."""

    uuid: str
    name: str
    instance_name: str
    host: str
    status: str
    power_state: str
    vcpus: int
    memory_mb: int
    cpu_percent: float | None
    cpu_time_ns: int
    vcpu_time_ns: int
    kvm_pit_time_ns: int
    vhost_time_ns: int
    vhost_kind: str
    memory_rss: int
    sampled_at: float  # 0: no sample


@dataclasses.dataclass(frozen=True)
class InstanceRow:
    sample: Sample
    vcpu_percent: float | None
    kvm_pit_percent: float | None
    vhost_percent: float | None

    def __getattr__(self, name: str) -> Any:  # row.host, row.status, ... from the sample
        if name == "sample":
            raise AttributeError(name)
        return getattr(self.sample, name)


def percent(before_ns: int, after_ns: int, before_at: float, after_at: float) -> float | None:
    """CPU % between two cumulative readings (100 = one CPU); None when it cannot be said
    (no earlier reading, no time between them, or a counter that went back: a new VMM)."""
    elapsed = after_at - before_at
    if elapsed <= 0 or after_ns < before_ns:
        return None
    return 100.0 * (after_ns - before_ns) / 1e9 / elapsed


class Rates:
    """Keeps each instance's previous sample and turns counters into percentages."""

    def __init__(self) -> None:
        self._previous: dict[str, tuple[Sample, InstanceRow]] = {}

    def rows(self, samples: Iterable[Sample]) -> list[InstanceRow]:
        rows, seen = [], {}
        for s in samples:
            kept = self._previous.get(s.uuid)
            if kept is not None and kept[0].sampled_at == s.sampled_at:
                row = dataclasses.replace(kept[1], sample=s)  # no new sample: same rates
            elif kept is not None and s.sampled_at and kept[0].sampled_at:
                p = kept[0]
                row = InstanceRow(
                    s,
                    percent(p.vcpu_time_ns, s.vcpu_time_ns, p.sampled_at, s.sampled_at),
                    percent(p.kvm_pit_time_ns, s.kvm_pit_time_ns, p.sampled_at, s.sampled_at),
                    percent(p.vhost_time_ns, s.vhost_time_ns, p.sampled_at, s.sampled_at),
                )
            else:
                row = InstanceRow(s, None, None, None)
            rows.append(row)
            seen[s.uuid] = (s, row)
        self._previous = seen
        return rows


# --- columns, sorting and filtering --------------------------------------------------

# (key, heading): the instance table's columns, in order; sorting cycles through them.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "NAME"),
    ("host", "HOST"),
    ("status", "STATUS"),
    ("vcpus", "VCPU"),
    ("cpu_percent", "CPU%"),
    ("vcpu_time_ns", "VCPU TIME"),
    ("vcpu_percent", "VCPU%"),
    ("kvm_pit_time_ns", "PIT TIME"),
    ("kvm_pit_percent", "PIT%"),
    ("vhost_time_ns", "VHOST TIME"),
    ("vhost_percent", "VHOST%"),
    ("memory_rss", "RSS"),
)
_TEXT_COLUMNS = frozenset({"name", "host", "status"})


def sort_rows(rows: Sequence[InstanceRow], column: str, descending: bool) -> list[InstanceRow]:
    """Rows by `column`; unknown values (None) always last, ties by name."""
    if column not in dict(COLUMNS):
        raise ValueError(f"unknown column {column!r}")
    known = [r for r in rows if getattr(r, column) is not None]
    unknown = [r for r in rows if getattr(r, column) is None]
    known.sort(key=lambda r: r.name)
    known.sort(key=lambda r: getattr(r, column), reverse=descending)
    unknown.sort(key=lambda r: r.name)
    return known + unknown


@dataclasses.dataclass(frozen=True)
class ViewState:
    sort: str = "cpu_percent"
    descending: bool = True
    host: str | None = None  # show only this host's instances
    status: str | None = None  # show only instances in this status
    quit: bool = False

    def select(self, rows: Iterable[InstanceRow]) -> list[InstanceRow]:
        chosen = [
            r for r in rows
            if (self.host is None or r.host == self.host)
            and (self.status is None or r.status == self.status)
        ]  # fmt: skip
        return sort_rows(chosen, self.sort, self.descending)

    def describe(self) -> str:
        heading = dict(COLUMNS)[self.sort]
        parts = [f"sort {heading} {'desc' if self.descending else 'asc'}"]
        if self.host:
            parts.append(f"host={self.host}")
        if self.status:
            parts.append(f"status={self.status}")
        return ", ".join(parts)


def _cycle(current: str | None, choices: Sequence[str]) -> str | None:
    """None → first → … → last → None."""
    if not choices:
        return None
    if current not in choices:
        return choices[0]
    i = choices.index(current)
    return choices[i + 1] if i + 1 < len(choices) else None


def _sort_by(state: ViewState, column: str) -> ViewState:
    if state.sort == column:
        return dataclasses.replace(state, descending=not state.descending)
    return dataclasses.replace(state, sort=column, descending=column not in _TEXT_COLUMNS)


KEYS_HELP = (
    "q quit  </> sort column  r reverse  P cpu  M memory  N name  "
    "h host filter  s status filter  c clear"
)


def on_key(state: ViewState, key: str, hosts: Sequence[str], statuses: Sequence[str]) -> ViewState:
    """The view after pressing `key` (unknown keys change nothing)."""
    order = [c for c, _ in COLUMNS]
    match key:
        case "q" | "Q" | "\x03" | "\x1b":
            return dataclasses.replace(state, quit=True)
        case ">" | "." | "\x1b[C":
            return _sort_by(state, order[(order.index(state.sort) + 1) % len(order)])
        case "<" | "," | "\x1b[D":
            return _sort_by(state, order[(order.index(state.sort) - 1) % len(order)])
        case "r" | "R":
            return dataclasses.replace(state, descending=not state.descending)
        case "P":
            return dataclasses.replace(state, sort="cpu_percent", descending=True)
        case "M":
            return dataclasses.replace(state, sort="memory_rss", descending=True)
        case "N":
            return dataclasses.replace(state, sort="name", descending=False)
        case "h" | "H":
            return dataclasses.replace(state, host=_cycle(state.host, sorted(hosts)))
        case "s" | "S":
            ordered = [s for s in STATUS_ORDER if s in statuses]
            ordered += sorted(s for s in statuses if s not in STATUS_ORDER)
            return dataclasses.replace(state, status=_cycle(state.status, ordered))
        case "c" | "C":
            return dataclasses.replace(state, host=None, status=None)
    return state


def busiest_hosts(hosts: Sequence[HostRow], limit: int) -> list[HostRow]:
    """The hosts worth a line when not all fit: down ones first, then by CPU, in name order."""
    ranked = sorted(hosts, key=lambda h: (h.up, -(h.cpu_percent or 0.0), h.host_id))[:limit]
    return sorted(ranked, key=lambda h: h.host_id)


# --- JSON -------------------------------------------------------------------------


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def host_json(h: HostRow) -> dict[str, Any]:
    return {
        "host": h.host_id, "state": "up" if h.up else "down",
        "status": "enabled" if h.enabled else "disabled",
        "vcpus": h.vcpus, "vcpus_used": h.allocated_vcpus,
        "memory_mb": h.memory_mb, "memory_mb_used": h.allocated_memory_mb,
        "cpu_percent": _round(h.cpu_percent), "memory_used": h.memory_used,
        "memory_total": h.memory_total, "memory_percent": _round(h.memory_percent),
        "instances": h.instances, "load1": _round(h.load1),
    }  # fmt: skip


def instance_json(r: InstanceRow) -> dict[str, Any]:
    s = r.sample
    return {
        "id": s.uuid, "name": s.name, "instance_name": s.instance_name, "host": s.host,
        "status": s.status, "power_state": s.power_state, "vcpus": s.vcpus,
        "memory_mb": s.memory_mb, "cpu_percent": _round(s.cpu_percent),
        "cpu_time": round(s.cpu_time_ns / 1e9, 3),
        "vcpu_time": round(s.vcpu_time_ns / 1e9, 3), "vcpu_percent": _round(r.vcpu_percent),
        "helpers": {
            "kvm-pit": {"cpu_time": round(s.kvm_pit_time_ns / 1e9, 3),
                        "cpu_percent": _round(r.kvm_pit_percent)},
            "vhost": {"kind": s.vhost_kind, "cpu_time": round(s.vhost_time_ns / 1e9, 3),
                      "cpu_percent": _round(r.vhost_percent)},
        },
        "memory_rss": s.memory_rss, "sampled_at": s.sampled_at or None,
    }  # fmt: skip


def snapshot_json(
    at: float, hosts: Sequence[HostRow], rows: Sequence[InstanceRow]
) -> dict[str, Any]:
    return {
        "at": at,
        "hosts": [host_json(h) for h in hosts],
        "instances": [instance_json(r) for r in rows],
    }


def summary(hosts: Sequence[HostRow], rows: Sequence[InstanceRow]) -> Mapping[str, int]:
    """Counts for the header line: hosts up/down, instances by status."""
    counts: dict[str, int] = {"hosts": len(hosts), "up": sum(h.up for h in hosts)}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
