"""The scale run's after-the-faults checks, over hand-made records."""

from __future__ import annotations

from computed.devcluster.fleet_checks import (
    FleetState,
    lost_or_duplicated,
    over_capacity,
    reused_names_or_ips,
)
from computed.store.records import (
    AllocationRecord,
    Claim,
    HostRecord,
    InstanceRecord,
    InstanceSpec,
    KvmFacts,
)


def host(host_id: str, vcpus: int = 2, memory_mb: int = 1024) -> HostRecord:
    return HostRecord(host_id, "127.0.0.1:1", "nova", vcpus, memory_mb, 1.0, 1.0,
                      KvmFacts(0, "fake", "none", False))  # fmt: skip


def instance(uid: str, host_id: str, name: str = "", ip: str = "") -> InstanceRecord:
    spec = InstanceSpec(uid, name or f"instance-{uid}", "heartbeat", 1, 64, ip=ip)
    return InstanceRecord(spec=spec, status="ACTIVE", host=host_id)


def state(instances, claims) -> FleetState:
    allocations = {
        h: AllocationRecord(h, {u: Claim(1, 64) for u in uids}) for h, uids in claims.items()
    }
    return FleetState({h: host(h) for h in ("a", "b")}, allocations,
                      {r.spec.uuid: r for r in instances})  # fmt: skip


def test_a_consistent_fleet_passes_every_check():
    s = state([instance("1", "a"), instance("2", "b")], {"a": ["1"], "b": ["2"]})
    assert over_capacity(s, 50) == []
    assert lost_or_duplicated(s, ["1", "2"], {"1": ["a"], "2": ["b"]}) == []
    assert reused_names_or_ips(s) == []


def test_claims_beyond_a_hosts_size_or_the_instance_limit_are_over_capacity():
    s = state([], {"a": ["1", "2", "3"], "b": ["4", "5"]})
    problems = over_capacity(s, 1)
    assert any("a: 3 vCPUs claimed > 2" in p for p in problems)
    assert any("b: 2 instances > limit 1" in p for p in problems)


def test_lost_claimed_twice_and_running_twice_are_each_named():
    s = state([instance("1", "a"), instance("2", "a")], {"a": ["1", "2"], "b": ["2"]})
    problems = lost_or_duplicated(s, ["1", "2", "3"], {"1": ["a", "b"], "2": ["a"]})
    assert any(p.startswith("3:") and "lost" in p for p in problems)
    assert any(p.startswith("2:") and "claims on ['a', 'b']" in p for p in problems)
    assert any(p.startswith("1:") and "runs on ['a', 'b']" in p for p in problems)


def test_a_name_or_address_used_twice_is_reported():
    s = state([instance("1", "a", name="x", ip="10.0.0.2/24"),
               instance("2", "b", name="x", ip="10.0.0.2/24")], {})  # fmt: skip
    assert reused_names_or_ips(s) == [
        "IP 10.0.0.2 used by 2 instances",
        "name x used by 2 instances",
    ]
