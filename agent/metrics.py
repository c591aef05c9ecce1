"""The agent's Prometheus metrics: its instances (CPU seconds by thread kind, memory,
state), its host (capacity and usage), and its own work (spawn latency, etcd write
latency, VMM exits by cause). Names are listed in docs/operations.md.

Instance and host figures are what the agent last *reported to etcd*: the
reporter's store is wrapped (`ReportingStore`) so every write is timed and the
last stats values are kept, as written, to be decoded only when scraped. So
/metrics and `server show` agree by construction, /proc is read once per
interval whether or not anyone scrapes, and the reporter knows nothing of it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from computed.exit_codes import ExitCode
from computed.store.ops import Delete, Put, encode_value

F = TypeVar("F", bound=Callable[..., Any])

SPAWN_SECONDS = Histogram(
    "computed_agent_spawn_seconds",
    "From a Spawn request to its answer: the VMM started and answering on its control socket",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ETCD_WRITE_SECONDS = Histogram(
    "computed_agent_etcd_write_seconds",
    "One write to etcd by the reporter: a stats batch (put_many), an instance report (txn), "
    "a report removed (delete)",
    ["op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
VMM_EXITS = Counter(
    "computed_agent_vmm_exits",
    "VMM processes that ended, by cause (exit code name, signal, unknown) and whether the "
    "agent had asked them to stop",
    ["cause", "requested"],
)


# Decorates the servicer's Spawn (a new timer per call: thread-safe).
timed_spawn = SPAWN_SECONDS.time()


def exit_cause(code: int | None) -> str:
    """`powered_off`, `guest_crashed`, … (the VMM's exit codes), `SIGKILL`, … or `unknown`."""
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal_{-code}"
    try:
        return ExitCode(code).name.lower()
    except ValueError:
        return f"status_{code}"


def vmm_exited(code: int | None, requested: bool) -> None:
    """Called by the supervisor when one of its VMMs has ended."""
    VMM_EXITS.labels(exit_cause(code), "yes" if requested else "no").inc()


class ReportingStore:
    """The reporter's Store, timed, remembering the last value written to each key."""

    def __init__(self, store) -> None:
        self._store = store
        self._written: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def put_many(self, ops: Iterable, lease: int | None = None) -> list[int]:
        ops = list(ops)
        with ETCD_WRITE_SECONDS.labels("put_many").time():
            revisions = self._store.put_many(ops, lease)
        with self._lock:
            for op in ops:
                if isinstance(op, Put):
                    self._written[op.key] = encode_value(op.value)
                elif isinstance(op, Delete):
                    self._written.pop(op.key, None)
        return revisions

    def transaction(self, *args, **kwargs) -> int | None:
        with ETCD_WRITE_SECONDS.labels("txn").time():
            return self._store.transaction(*args, **kwargs)

    def delete(self, key: str) -> bool:
        with ETCD_WRITE_SECONDS.labels("delete").time():
            return self._store.delete(key)

    def last_stats(self) -> tuple[dict[str, dict], dict | None]:
        """The instance samples (by uuid) and the host sample last written."""
        with self._lock:
            values = list(self._written.values())
        instances: dict[str, dict] = {}
        host = None
        for raw in values:
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(value, dict):
                continue
            if isinstance(value.get("uuid"), str) and "cpu.time" in value:
                instances[value["uuid"]] = value
            elif "capacity.vcpus" in value:
                host = value
        return instances, host


def _ns(sample: dict, key: str) -> float | None:
    value = sample.get(key)
    return value / 1e9 if isinstance(value, int | float) else None


class AgentCollector(Collector):
    """Per-instance and per-host figures, read at scrape time."""

    def __init__(self, host_id: str, supervisor, store: ReportingStore) -> None:
        self.host_id = host_id
        self.supervisor = supervisor
        self.store = store

    def collect(self):
        labels = ["uuid", "name", "host"]
        cpu = CounterMetricFamily(
            "computed_instance_cpu_seconds",
            "CPU time of the threads working for an instance, by kind: vcpu (its CPU n/KVM "
            "threads), kvm-pit (the kernel's kvm-pit/<pid>), vhost (vhost-<pid>)",
            labels=[*labels, "kind"],
        )
        process = CounterMetricFamily(
            "computed_instance_process_cpu_seconds",
            "CPU time of the whole VMM process (vCPU and userspace threads; not kernel workers)",
            labels=labels,
        )
        rss = GaugeMetricFamily("computed_instance_memory_rss_bytes", "VMM RSS", labels=labels)
        size = GaugeMetricFamily(
            "computed_instance_memory_bytes", "Guest memory (flavor)", labels=labels
        )
        vcpus = GaugeMetricFamily("computed_instance_vcpus", "vCPUs (flavor)", labels=labels)
        state = GaugeMetricFamily(
            "computed_instance_state",
            "1 for the instance's current status and power state",
            labels=[*labels, "status", "power_state"],
        )
        samples, host = self.store.last_stats()
        for view in self.supervisor.list():
            who = [view.spec.uuid, view.spec.name, self.host_id]
            state.add_metric([*who, view.state.status, view.state.power_state], 1.0)
            size.add_metric(who, view.spec.memory_mb * 1024 * 1024)
            vcpus.add_metric(who, view.spec.vcpus)
            sample = samples.get(view.spec.uuid) if view.pid else None
            if not sample:
                continue
            vcpu_s = [
                _ns(sample, f"vcpu.{i}.time") for i in range(int(sample.get("vcpu.count", 0)))
            ]
            cpu.add_metric([*who, "vcpu"], sum(s for s in vcpu_s if s is not None))
            for kind in ("kvm-pit", "vhost"):
                seconds = _ns(sample, f"helper.{kind}.time")
                if seconds is not None:
                    cpu.add_metric([*who, kind], seconds)
            if (total := _ns(sample, "cpu.time")) is not None:
                process.add_metric(who, total)
            if isinstance(sample.get("memory.rss"), int):
                rss.add_metric(who, sample["memory.rss"])
        yield from (cpu, process, rss, size, vcpus, state)
        yield from self._host(host)

    def _host(self, sample: dict | None):
        if not sample:
            return
        h = [self.host_id]
        figures = (
            ("computed_host_capacity_vcpus", "vCPUs the host advertises", "capacity.vcpus", 1),
            ("computed_host_capacity_memory_bytes", "Memory advertised", "capacity.memory_mb",
             1024 * 1024),
            ("computed_host_allocated_vcpus", "vCPUs of its instances", "allocated.vcpus", 1),
            ("computed_host_allocated_memory_bytes", "Memory of its instances",
             "allocated.memory_mb", 1024 * 1024),
            ("computed_host_instances", "Instances on the host", "instances", 1),
            ("computed_host_cpu_percent", "Host CPU busy, 100 = every CPU", "cpu.percent", 1),
            ("computed_host_memory_used_bytes", "Host memory used", "memory.used", 1),
            ("computed_host_memory_total_bytes", "Host memory", "memory.total", 1),
            ("computed_host_load1", "1-minute load average", "load.1", 1),
        )  # fmt: skip
        for name, text, key, scale in figures:
            value = sample.get(key)
            if isinstance(value, int | float):
                family = GaugeMetricFamily(name, text, labels=["host"])
                family.add_metric(h, value * scale)
                yield family
        age = GaugeMetricFamily(
            "computed_host_stats_age_seconds",
            "Since the agent's last stats sample",
            labels=["host"],
        )
        if isinstance(sample.get("timestamp"), int | float):
            age.add_metric(h, max(0.0, time.time() - sample["timestamp"]))
            yield age
