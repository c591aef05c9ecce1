"""Small clusters for placement tests: a view of hosts given as tuples, and the placement
table synced from it as the servicer keeps it. Shared by the decide, filter and weigher tests."""

from __future__ import annotations

from computed.store.records import (
    HostAdminRecord,
    HostRecord,
    KvmFacts,
    LivenessRecord,
    ServerGroupRecord,
)
from scheduler.cluster_view import ClusterView
from scheduler.host_table import HostTable


def table_of(v):
    """The placement table synced from view `v`, as the servicer keeps it."""
    table = HostTable()
    table.sync(v)
    return table


def view(*specs, down=(), disabled=(), allocations=None, instances=None):
    """Hosts given as (id, vcpus, memory_mb[, zone]); ratios 1.0 so numbers read plainly."""
    v = ClusterView()
    for spec in specs:
        host_id, vcpus, mem, *zone = spec
        v.hosts[host_id] = HostRecord(
            host_id,
            "x:1",
            zone[0] if zone else "nova",
            vcpus,
            mem,
            1.0,
            1.0,
            KvmFacts(12, "kvm_intel", "userspace", False),
        )
        if host_id not in down:
            v.live[host_id] = LivenessRecord(host_id, 0.0)
    for host_id in disabled:
        v.admin[host_id] = HostAdminRecord(False, "maintenance")
    v.allocations.update(allocations or {})
    v.instances.update(instances or {})
    return v


def group(policy, soft=False, members=()):
    return ServerGroupRecord("g1", "grp", policy, soft, tuple(members))
