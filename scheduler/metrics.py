"""The scheduler's Prometheus metrics: its own work (decisions, claims, builds, how far its
watch lags) and the cluster as its watch-fed view sees it (hosts' capacity and claims,
instances by status). Names are listed in docs/operations.md.

The counters and histograms are module-level (one process, one scheduler); the
placer, the builder and the cache call the small functions below, one line each.
The cluster figures are read from the view at scrape time (ClusterCollector), so
they cost nothing between scrapes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from computed import status
from computed.store import keys
from scheduler.placement import NoValidHost

F = TypeVar("F", bound=Callable[..., Any])

DECISIONS = Counter(
    "computed_scheduler_decisions",
    "Placement decisions, by result (placed, no_valid_host)",
    ["result"],
)
CLAIM_CONFLICTS = Counter(
    "computed_scheduler_claim_conflicts",
    "Claim transactions refused because another claim changed a chosen host first",
)
PLACEMENT_SECONDS = Histogram(
    "computed_scheduler_placement_seconds",
    "From the start of a placement to its committed claim (decide, claim, conflicts)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BUILDS = Counter(
    "computed_scheduler_builds", "Builds finished, by result (active, error)", ["result"]
)
BUILD_RETRIES = Counter(
    "computed_scheduler_build_retries",
    "Builds tried again on an alternate host after a spawn failed or its claim did not hold",
)
WATCH_LAG = Histogram(
    "computed_scheduler_watch_lag_seconds",
    "From an agent's write of an instance report (its updated_at) to this scheduler's "
    "watch applying it; across hosts this includes their clock offset",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


# Decorates Placer.place_new / Placer.move: the placement-latency histogram.
timed_placement = PLACEMENT_SECONDS.time()


def counts_decisions(method: F) -> F:
    """Decorates Placer.decide: a decision either places or raises NoValidHost."""

    @functools.wraps(method)
    def inner(*args, **kwargs):
        try:
            result = method(*args, **kwargs)
        except NoValidHost:
            DECISIONS.labels("no_valid_host").inc()
            raise
        DECISIONS.labels("placed").inc()
        return result

    return inner  # type: ignore[return-value]


def counts_builds(function: F) -> F:
    """Decorates build(): how each build ended."""

    @functools.wraps(function)
    def inner(*args, **kwargs):
        result = function(*args, **kwargs)
        ok = result.record.status == status.ACTIVE
        BUILDS.labels("active" if ok else "error").inc()
        return result

    return inner  # type: ignore[return-value]


def claimed(committed: bool) -> None:
    if not committed:
        CLAIM_CONFLICTS.inc()


def build_attempt(attempt: int) -> None:
    if attempt > 0:
        BUILD_RETRIES.inc()


def watch_applied(view, events: Iterable, now: float | None = None) -> None:
    """Called by the cache after applying watch events: the lag of each agent report
    (from the agent's write, its updated_at, to this scheduler applying it)."""
    now = time.time() if now is None else now
    for event in events:
        if event.kind != "put" or not event.key.startswith(keys.REPORTS):
            continue
        host_id, uuid = keys.report_key_ids(event.key)
        report = view.reports.get(uuid, {}).get(host_id)
        if report is not None and report.updated_at:
            WATCH_LAG.observe(max(0.0, now - report.updated_at))


class ClusterCollector(Collector):
    """Hosts and instances as this scheduler's view has them, read at scrape time."""

    def __init__(self, cache) -> None:
        self.cache = cache

    def collect(self):
        view = self.cache.view
        up = GaugeMetricFamily(
            "computed_scheduler_host_up", "1: the host's lease is alive", labels=["host"]
        )
        enabled = GaugeMetricFamily(
            "computed_scheduler_host_enabled", "1: placements allowed", labels=["host"]
        )
        cap_cpu = GaugeMetricFamily(
            "computed_scheduler_host_capacity_vcpus",
            "vCPUs placeable (size x allocation ratio)",
            labels=["host"],
        )
        cap_mem = GaugeMetricFamily(
            "computed_scheduler_host_capacity_memory_mb",
            "MiB placeable (size x ratio)",
            labels=["host"],
        )
        used_cpu = GaugeMetricFamily(
            "computed_scheduler_host_allocated_vcpus", "vCPUs claimed", labels=["host"]
        )
        used_mem = GaugeMetricFamily(
            "computed_scheduler_host_allocated_memory_mb", "MiB claimed", labels=["host"]
        )
        by_status = GaugeMetricFamily(
            "computed_scheduler_instances", "Instances by status", labels=["status"]
        )
        synced = GaugeMetricFamily(
            "computed_scheduler_cache_synced", "1: the watch-fed view is current"
        )
        with self.cache.lock:
            for host_id, record in view.hosts.items():
                admin = view.admin.get(host_id)
                allocation = view.allocations.get(host_id)
                up.add_metric([host_id], 1.0 if host_id in view.live else 0.0)
                enabled.add_metric([host_id], 0.0 if admin and not admin.enabled else 1.0)
                cap_cpu.add_metric([host_id], record.vcpus * record.cpu_allocation_ratio)
                cap_mem.add_metric([host_id], record.memory_mb * record.ram_allocation_ratio)
                used_cpu.add_metric([host_id], allocation.vcpus if allocation else 0)
                used_mem.add_metric([host_id], allocation.memory_mb if allocation else 0)
            counts: dict[str, int] = {}
            for r in view.instances.values():
                counts[r.status] = counts.get(r.status, 0) + 1
        for name, n in sorted(counts.items()):
            by_status.add_metric([name], n)
        synced.add_metric([], 1.0 if self.cache.synced.is_set() else 0.0)
        yield from (up, enabled, cap_cpu, cap_mem, used_cpu, used_mem, by_status, synced)
