"""Records from etcd → the public API's messages. Pure."""

from __future__ import annotations

import json
from collections.abc import Sequence

from computed.api import compute_pb2, types_pb2
from computed.capacity import host_capacity
from computed.store.records import (
    FlavorRecord,
    HostAdminRecord,
    HostRecord,
    ImageRecord,
    InstanceRecord,
    ServerGroupRecord,
)
from computed.wire import spec_to_proto

_POLICIES = {
    "affinity": compute_pb2.GROUP_POLICY_AFFINITY,
    "anti-affinity": compute_pb2.GROUP_POLICY_ANTI_AFFINITY,
}


def server(
    record: InstanceRecord, host_up: bool | None, stats: bytes | None, host_zone: str = ""
) -> compute_pb2.Server:
    """host_up: None when the instance has no host yet. The zone shown is the one asked
    for, else its host's (as Nova shows the host's availability zone)."""
    s = record.spec
    instance = types_pb2.Instance(
        spec=spec_to_proto(s),
        status=types_pb2.InstanceStatus.Value(f"STATUS_{record.status}"),
        power_state=types_pb2.PowerState.Value(f"POWER_STATE_{record.power_state}"),
        fault=record.fault,
        host=record.host,
        pid=record.pid or 0,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
    host_status = "" if host_up is None else ("UP" if host_up else "UNKNOWN")
    return compute_pb2.Server(
        instance=instance,
        name=record.display_name or s.name,
        flavor=record.flavor,
        availability_zone=record.availability_zone or host_zone,
        group=record.group,
        host_status=host_status,
        stats=server_stats(stats),
    )


def server_stats(raw: bytes | None) -> compute_pb2.ServerStats:
    if not raw:
        return compute_pb2.ServerStats()
    try:
        data = json.loads(raw)
    except ValueError:
        return compute_pb2.ServerStats()
    helpers = [
        compute_pb2.HelperThread(
            name=f"kvm-pit/{data.get('pid')}" if name == "kvm-pit" else f"vhost-{data.get('pid')}",
            pid=int(data.get(f"helper.{name}.pid") or 0),
            cpu_time_ns=int(data.get(f"helper.{name}.time") or 0),
        )
        for name in ("kvm-pit", "vhost")
        if f"helper.{name}.pid" in data
    ]
    return compute_pb2.ServerStats(
        cpu_percent=float(data.get("cpu.percent") or 0.0),
        cpu_time_ns=int(data.get("cpu.time") or 0),
        memory_rss=int(data.get("memory.rss") or 0),
        helpers=helpers,
        sampled_at=float(data.get("timestamp") or 0.0),
    )


def host(
    record: HostRecord,
    up: bool,
    admin: HostAdminRecord | None,
    allocated_vcpus: int,
    allocated_memory_mb: int,
    instances: list[str],
    stats: bytes | None,
) -> compute_pb2.Host:
    cap = host_capacity(record)
    info = types_pb2.HostInfo(
        host_id=record.host_id, availability_zone=record.availability_zone,
        vcpus=record.vcpus, memory_mb=record.memory_mb,
        cpu_allocation_ratio=cap.cpu_ratio, ram_allocation_ratio=cap.ram_ratio,
        allocated_vcpus=allocated_vcpus, allocated_memory_mb=allocated_memory_mb,
        instances=len(instances), agent_address=record.address,
        kvm=types_pb2.KvmFacts(api_version=record.kvm.api_version,
                               vendor_module=record.kvm.vendor_module, vhost=record.kvm.vhost,
                               guest_kernel_emulated=record.kvm.guest_kernel_emulated),
    )  # fmt: skip
    numbers: dict[str, float] = {}
    if stats:
        try:
            numbers = {
                k: float(v) for k, v in json.loads(stats).items() if isinstance(v, int | float)
            }
        except ValueError:
            numbers = {}
    enabled = admin is None or admin.enabled
    return compute_pb2.Host(
        info=info,
        up=up,
        enabled=enabled,
        disabled_reason="" if enabled else admin.reason,
        instances=sorted(instances),
        stats=numbers,
    )


def flavor(f: FlavorRecord) -> compute_pb2.Flavor:
    return compute_pb2.Flavor(name=f.name, vcpus=f.vcpus, memory_mb=f.memory_mb)


def image(i: ImageRecord, used_by: Sequence[str] = ()) -> compute_pb2.Image:
    return compute_pb2.Image(
        name=i.name,
        path=i.path,
        min_memory_mb=i.min_memory_mb,
        required_traits=list(i.required_traits),
        bundled=not i.path and not i.digest,
        digest=i.digest,
        size=i.size,
        properties=i.properties,
        used_by=list(used_by),
        created_at=i.created_at,
    )


def group(g: ServerGroupRecord) -> compute_pb2.ServerGroup:
    return compute_pb2.ServerGroup(
        id=g.id, name=g.name, policy=_POLICIES[g.policy], soft=g.soft, members=list(g.members)
    )


def policy_name(policy: int) -> str | None:
    for name, value in _POLICIES.items():
        if value == policy:
            return name
    return None
