"""The vocabulary of placement decisions: the request, the configuration, the candidate
columns one decision works on, and the one interface every filter and weigher has.

Filters and weighers are called the same way: what looks at hosts takes
(candidates, request, config) and answers one value per host; what depends
only on the request takes (request, config) and is asked once per decision.
A filter answers a boolean array (True: the host may take the next instance)
— or None when the request does not constrain it, which saves the array
operation — and says in words what a host it turns away lacks. A weigher
answers raw numbers, higher meaning preferred, and its multiplier; the
decision normalises each weigher's numbers to 0..1 over the hosts that
passed and adds them up times their multipliers, as Nova's weighers do.
Neither does any I/O. Both are chosen by name through a Registry.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from computed.errors import Exhausted
from computed.store.records import ServerGroupRecord
from scheduler.host_table import HostTable


class NoValidHost(Exhausted):
    """No host (or not enough hosts) fits the request; the message says why per filter."""


@dataclasses.dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mb: int
    count: int = 1
    min_count: int | None = None  # None: all of count or nothing
    availability_zone: str | None = None
    required_traits: tuple[str, ...] = ()
    group: ServerGroupRecord | None = None
    group_hosts: tuple[str, ...] = ()  # the host of each existing member of `group`


@dataclasses.dataclass(frozen=True)
class PlacementConfig:
    """The operator's knobs (computed-scheduler flags); defaults follow Nova's."""

    filters: tuple[str, ...] | None = None  # names to run, in order; None: all defaults
    weighers: tuple[str, ...] | None = None  # names to run; None: all defaults
    max_instances_per_host: int = 50
    ram_weight_multiplier: float = 1.0  # > 0 spreads by free RAM, < 0 packs
    cpu_weight_multiplier: float = 1.0
    num_instances_weight_multiplier: float = 0.0  # < 0 prefers hosts running fewer
    build_failure_weight_multiplier: float = 1_000_000.0
    # Soft (anti-)affinity outweighs the resource weighers so the policy holds where it can.
    soft_affinity_weight_multiplier: float = 10.0
    host_subset_size: int = 1  # pick at random among the best N (fewer scheduler races)


class Candidates:
    """One decision's columns: the table's rows, minus what this batch has placed so far.

    The resource and count columns are copies the batch updates after each
    placement; the rest are read-only views of the table.
    """

    def __init__(self, table: HostTable, request: Request) -> None:
        self.table = table
        col = table.column
        self.ids = table.ids
        self.known, self.up, self.enabled = col("known"), col("up"), col("enabled")
        self.zone, self.traits, self.failures = col("zone"), col("traits"), col("failures")
        self.free_vcpus = col("usable_vcpus") - col("used_vcpus") - col("held_vcpus")
        self.free_memory_mb = (
            col("usable_memory_mb") - col("used_memory_mb") - col("held_memory_mb")
        )
        self.instances = col("instances") + col("held_instances")
        self.group_members = np.zeros(len(table), dtype=np.int32)
        for host_id in request.group_hosts:
            i = table.index.get(host_id)
            if i is not None:
                self.group_members[i] += 1

    def __len__(self) -> int:
        return len(self.ids)

    def place(self, i: int, request: Request) -> None:
        """Count one instance of `request` on row i before the next is decided."""
        self.free_vcpus[i] -= request.vcpus
        self.free_memory_mb[i] -= request.memory_mb
        self.instances[i] += 1
        self.group_members[i] += 1


Mask = np.ndarray  # bool, one per row


@dataclasses.dataclass(frozen=True)
class HostFilter:
    name: str  # as operators name it: RamFilter, ...
    passes: Callable[[Candidates, Request, PlacementConfig], Mask | None]
    why: Callable[[Request, PlacementConfig], str]  # what a host that fails it lacks


@dataclasses.dataclass(frozen=True)
class HostWeigher:
    name: str  # as operators name it: RAMWeigher, ...
    raw: Callable[[Candidates, Request, PlacementConfig], np.ndarray]  # higher: preferred
    # 0 skips the weigher without computing `raw`; < 0 turns its preference round.
    multiplier: Callable[[Request, PlacementConfig], float]


Plugin = TypeVar("Plugin", HostFilter, HostWeigher)


class Registry(Generic[Plugin]):
    """The filters or weighers there are, by name, in the order they run by default."""

    def __init__(self, kind: str, default: tuple[Plugin, ...]) -> None:
        self.kind = kind  # "filter", "weigher": for the error message
        self.default = default
        self.by_name: dict[str, Plugin] = {p.name: p for p in default}
        # Every decision asks; the answer for one configuration never changes.
        self.named: Callable[[tuple[str, ...] | None], tuple[Plugin, ...]] = functools.cache(
            self._named
        )

    def _named(self, names: tuple[str, ...] | None) -> tuple[Plugin, ...]:
        """The ones to run, in the order named; ValueError naming any that does not exist."""
        if names is None:
            return self.default
        unknown = [n for n in names if n not in self.by_name]
        if unknown:
            raise ValueError(
                f"unknown {self.kind}(s) {', '.join(unknown)}; known: {', '.join(self.by_name)}"
            )
        return tuple(self.by_name[n] for n in names)
