"""Protobuf messages → plain dicts of display fields. Pure.

Raw values (bytes, seconds) go in the dicts so JSON and value output stay exact for
scripts; tables humanize them through the *_HUMAN renderers.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from computed.cli import format as fmt

SERVER_FIELDS = (
    "id", "name", "instance_name", "status", "power_state", "host", "host_status", "flavor",
    "image", "ip", "mac", "az", "group", "vcpus", "memory_mb", "pid", "cpu_percent", "memory",
    "cpu_time", "helpers", "cmdline", "created", "updated", "fault",
)  # fmt: skip
SERVER_LIST_COLUMNS = ("id", "name", "status", "host", "ip", "flavor", "image")
SERVER_HUMAN = {
    "memory": fmt.human_bytes,
    "cpu_time": fmt.human_seconds,
    "cpu_percent": fmt.human_percent,
    "helpers": fmt.human_helpers,
}

HOST_FIELDS = (
    "host", "az", "state", "status", "disabled_reason", "vcpus", "vcpus_used", "memory_mb",
    "memory_mb_used", "instances", "cpu_allocation_ratio", "ram_allocation_ratio",
    "kvm_api_version", "kvm_module", "vhost", "guest_kernel_emulated", "agent_address",
    "cert_expires", "servers", "stats",
)  # fmt: skip
HOST_LIST_COLUMNS = (
    "host", "az", "state", "status", "vcpus_used", "vcpus", "memory_mb_used", "memory_mb",
    "instances",
)  # fmt: skip
HOST_HUMAN = {"servers": fmt.human_lines, "stats": fmt.human_mapping}

FLAVOR_FIELDS = ("name", "vcpus", "ram_mb")
IMAGE_FIELDS = (
    "name", "bundled", "digest", "size", "min_memory_mb", "required_traits", "properties",
    "used_by", "path",
)  # fmt: skip
IMAGE_LIST_COLUMNS = ("name", "bundled", "digest", "size", "min_memory_mb")
IMAGE_HUMAN = {"properties": fmt.human_mapping, "used_by": fmt.human_lines}
GROUP_FIELDS = ("id", "name", "policy", "soft", "members")
GROUP_HUMAN = {"members": fmt.human_lines}

EVENT_FIELDS = ("time", "action", "result", "requester", "host", "message")

# Every resource's fields, so -c can be checked before a request is sent.
FIELDS = {
    "event": EVENT_FIELDS,
    "server": SERVER_FIELDS,
    "host": HOST_FIELDS,
    "flavor": FLAVOR_FIELDS,
    "image": IMAGE_FIELDS,
    "server-group": GROUP_FIELDS,
}

STATUSES = ("BUILD", "ACTIVE", "PAUSED", "SHUTOFF", "ERROR", "DELETED")
_POWER = ("UNSPECIFIED", "NOSTATE", "RUNNING", "PAUSED", "SHUTDOWN", "CRASHED")
_POLICIES = {1: "affinity", 2: "anti-affinity"}


def status_name(value: int) -> str:
    """InstanceStatus enum value → ACTIVE etc. (the enum's order is fixed by the proto)."""
    names = ("UNSPECIFIED", *STATUSES)
    return names[value] if 0 <= value < len(names) else f"UNKNOWN({value})"


def power_name(value: int) -> str:
    return _POWER[value] if 0 <= value < len(_POWER) else f"UNKNOWN({value})"


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds") if seconds else ""


def server(s: Any) -> dict[str, Any]:
    """A compute_pb2.Server → its display fields (stats are zero unless from GetServer)."""
    inst, spec, stats = s.instance, s.instance.spec, s.stats
    return {
        "id": spec.uuid,
        "name": s.name,
        "instance_name": spec.name,
        "status": status_name(inst.status),
        "power_state": power_name(inst.power_state),
        "host": inst.host,
        "host_status": s.host_status,
        "flavor": s.flavor,
        "image": spec.image,
        "ip": spec.ip.split("/")[0],
        "mac": spec.mac,
        "az": s.availability_zone,
        "group": s.group,
        "vcpus": spec.vcpus,
        "memory_mb": spec.memory_mb,
        "pid": inst.pid or None,
        "cpu_percent": round(stats.cpu_percent, 2),
        "memory": stats.memory_rss,
        "cpu_time": round(stats.cpu_time_ns / 1e9, 3),
        "helpers": {h.name: round(h.cpu_time_ns / 1e9, 3) for h in stats.helpers},
        "cmdline": spec.cmdline,
        "created": timestamp(inst.created_at),
        "updated": timestamp(inst.updated_at),
        "fault": inst.fault,
    }


def server_show_columns(row: dict[str, Any]) -> tuple[str, ...]:
    """Every field, but the fault only when there is one (always for ERROR)."""
    keep_fault = bool(row["fault"]) or row["status"] == "ERROR"
    return tuple(c for c in SERVER_FIELDS if c != "fault" or keep_fault)


def host(h: Any) -> dict[str, Any]:
    """A compute_pb2.Host → its display fields."""
    info = h.info
    return {
        "host": info.host_id,
        "az": info.availability_zone,
        "state": "up" if h.up else "down",
        "status": "enabled" if h.enabled else "disabled",
        "disabled_reason": h.disabled_reason,
        "vcpus": info.vcpus,
        "vcpus_used": info.allocated_vcpus,
        "memory_mb": info.memory_mb,
        "memory_mb_used": info.allocated_memory_mb,
        "instances": info.instances,
        "cpu_allocation_ratio": round(info.cpu_allocation_ratio, 3),
        "ram_allocation_ratio": round(info.ram_allocation_ratio, 3),
        "kvm_api_version": info.kvm.api_version,
        "kvm_module": info.kvm.vendor_module,
        "vhost": info.kvm.vhost,
        "guest_kernel_emulated": info.kvm.guest_kernel_emulated,
        "agent_address": info.agent_address,
        "cert_expires": cert_expires(h.stats.get(CERT_STAT)),
        "servers": list(h.instances),
        "stats": dict(sorted(h.stats.items())),
    }


CERT_STAT = "tls.cert_not_after"  # published by the agent (computed/mtls/cert_expiry.py)
CERT_WARNING_DAYS = 30


def cert_expires(not_after: float | None, now: float | None = None) -> str:
    """When the agent's certificate runs out, flagged within 30 days; '' without TLS."""
    if not not_after:
        return ""
    now = time.time() if now is None else now
    days = (not_after - now) / 86400
    when = datetime.fromtimestamp(not_after, UTC)
    text = f"{when:%Y-%m-%d %H:%M} UTC"
    if days <= 0:
        return f"{text} (EXPIRED)"
    if days <= CERT_WARNING_DAYS:
        return f"{text} (in {int(days)} days: renew it)"
    return text


def flavor(f: Any) -> dict[str, Any]:
    return {"name": f.name, "vcpus": f.vcpus, "ram_mb": f.memory_mb}


def image(i: Any) -> dict[str, Any]:
    return {
        "name": i.name,
        "bundled": i.bundled,
        "path": i.path,
        "min_memory_mb": i.min_memory_mb,
        "required_traits": list(i.required_traits),
        "digest": i.digest,
        "size": i.size,
        "properties": dict(i.properties),
        "used_by": list(i.used_by),
    }


def group(g: Any) -> dict[str, Any]:
    return {
        "id": g.id,
        "name": g.name,
        "policy": _POLICIES.get(g.policy, "unspecified"),
        "soft": g.soft,
        "members": list(g.members),
    }


def event(e: Any) -> dict[str, Any]:
    """A compute_pb2.ServerEventEntry → its display fields."""
    return {
        "time": datetime.fromtimestamp(e.at, UTC).isoformat(timespec="milliseconds"),
        "action": e.action,
        "result": e.result,
        "requester": e.requester,
        "host": e.host,
        "message": e.message,
    }
