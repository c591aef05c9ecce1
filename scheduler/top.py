"""The WatchTop stream behind `computectl top`: every host and instance with its latest
stats, once per interval per subscriber.

Records (hosts, liveness, admin, allocations, instances) come from the watch-fed
cache, so they cost nothing per stream. Stats are not watched (they change every
interval on every host); each stream reads them once per its interval with one
prefix read (scheduler/stats_source.py). So the cost is bounded by
(subscribers / interval) prefix reads, whatever the number of agents writing.
Building a snapshot from plain records and samples is pure (`snapshot`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from computed import status
from computed.api import compute_pb2
from computed.store.errors import StoreError
from scheduler.cluster_view import ClusterView
from scheduler.host_cache import HostCache
from scheduler.lookup import synced_view
from scheduler.stats_source import read_stats

log = logging.getLogger("computed.scheduler.top")
DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.5  # a client cannot make this scheduler read all stats faster than this


def interval_of(asked: float) -> float:
    return DEFAULT_INTERVAL if asked <= 0 else max(MIN_INTERVAL, asked)


def _int(sample: Mapping[str, Any], key: str) -> int:
    value = sample.get(key)
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def _float(sample: Mapping[str, Any], key: str) -> float:
    value = sample.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def instance_row(record, sample: Mapping[str, Any] | None) -> compute_pb2.TopInstance:
    """One instance as top shows it; helper and vCPU times are cumulative ns."""
    row = compute_pb2.TopInstance(
        uuid=record.spec.uuid, name=record.display_name or record.spec.name,
        instance_name=record.spec.name, host=record.host, status=record.status,
        power_state=record.power_state, vcpus=record.spec.vcpus,
        memory_mb=record.spec.memory_mb,
    )  # fmt: skip
    if not sample:
        return row
    vcpus = _int(sample, "vcpu.count")
    percent = sample.get("cpu.percent")
    row.has_cpu_percent = isinstance(percent, int | float)
    row.cpu_percent = float(percent) if row.has_cpu_percent else 0.0
    row.cpu_time_ns = _int(sample, "cpu.time")
    row.vcpu_time_ns = sum(_int(sample, f"vcpu.{i}.time") for i in range(vcpus))
    row.kvm_pit_time_ns = _int(sample, "helper.kvm-pit.time")
    row.vhost_time_ns = _int(sample, "helper.vhost.time")
    kind = sample.get("helper.vhost.kind")
    row.vhost_kind = kind if isinstance(kind, str) else ""
    row.memory_rss = _int(sample, "memory.rss")
    row.sampled_at = _float(sample, "timestamp")
    return row


def host_row(
    view: ClusterView, host_id: str, sample: Mapping[str, Any] | None, instances: int
) -> compute_pb2.TopHost:
    record = view.hosts[host_id]
    allocation = view.allocations.get(host_id)
    admin = view.admin.get(host_id)
    up = host_id in view.live
    row = compute_pb2.TopHost(
        host_id=host_id, up=up, enabled=admin is None or admin.enabled,
        vcpus=record.vcpus, memory_mb=record.memory_mb,
        allocated_vcpus=allocation.vcpus if allocation else 0,
        allocated_memory_mb=allocation.memory_mb if allocation else 0, instances=instances,
    )  # fmt: skip
    if sample and up:
        row.cpu_percent = _float(sample, "cpu.percent")
        row.memory_total = _int(sample, "memory.total")
        row.memory_used = _int(sample, "memory.used")
        row.load1 = _float(sample, "load.1")
        row.sampled_at = _float(sample, "timestamp")
    return row


def snapshot(
    view: ClusterView,
    instance_stats: Mapping[str, Mapping[str, Any]],
    host_stats: Mapping[str, Mapping[str, Any]],
    now: float,
) -> compute_pb2.TopSnapshot:
    """The whole cluster as top shows it. Pure; call with the cache's lock held."""
    records = [r for r in view.instances.values() if r.status != status.DELETED]
    records.sort(key=lambda r: (r.created_at, r.spec.name))
    per_host: dict[str, int] = {}
    for r in records:
        per_host[r.host] = per_host.get(r.host, 0) + 1
    # A sample outlives its VMM by up to an interval: show stats only for running ones.
    rows = [instance_row(r, instance_stats.get(r.spec.uuid) if r.pid else None) for r in records]
    hosts = [host_row(view, h, host_stats.get(h), per_host.get(h, 0)) for h in sorted(view.hosts)]
    return compute_pb2.TopSnapshot(at=now, hosts=hosts, instances=rows)


class Snapshots:
    """The latest snapshot, shared by every open stream: a snapshot younger than half a
    stream's interval is reused, so ten `computectl top`s cost about what one does (at
    10,000 instances a snapshot takes a few hundred ms of this scheduler's CPU)."""

    def __init__(self, store, cache: HostCache) -> None:
        self.store = store
        self.cache = cache
        self._lock = threading.Lock()
        self._latest: tuple[float, compute_pb2.TopSnapshot] | None = None
        self._stats: tuple[dict, dict] = ({}, {})

    def latest(self, max_age: float) -> compute_pb2.TopSnapshot:
        with self._lock:  # one builder at a time; the others then reuse its snapshot
            if self._latest is not None and time.monotonic() - self._latest[0] < max_age:
                return self._latest[1]
            try:
                self._stats = read_stats(self.store)
            except StoreError as e:
                log.warning("top: cannot read stats (%s); showing the last ones", e)
            with self.cache.lock:
                shot = snapshot(self.cache.view, *self._stats, time.time())
            self._latest = (time.monotonic(), shot)
            return shot


def stream(
    snapshots: Snapshots, asked_interval: float, is_active: Callable[[], bool]
) -> Iterator[compute_pb2.TopSnapshot]:
    """A snapshot now, then one per interval until the caller leaves. An etcd hiccup
    shows the last stats read rather than ending the stream."""
    interval = interval_of(asked_interval)
    synced_view(snapshots.cache)
    pause = threading.Event()
    while is_active():
        started = time.monotonic()
        yield snapshots.latest(max_age=interval / 2)
        pause.wait(max(0.0, interval - (time.monotonic() - started)))
