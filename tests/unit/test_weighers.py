"""Each host weigher on its own: the order it puts hosts in, and which way its multiplier turns it.

Every test runs one weigher alone (PlacementConfig.weighers) over three hosts
and reads the order back from the decision: the chosen host, then its two
alternates.
"""

import pytest

from computed.store.records import AllocationRecord, BuildFailuresRecord, Claim
from scheduler import decide, weighers
from scheduler.placement import PlacementConfig, Request
from tests.placement_tables import group, table_of, view


def order(v, name, r=None, **config):
    """Hosts best first when `name` is the only weigher."""
    cfg = PlacementConfig(weighers=(name,), **config)
    (d,) = decide.choose_hosts(table_of(v), r or Request(1, 64), cfg)
    return [d.host, *d.alternates]


def instances(**counts):
    """Allocation records holding `counts[host]` small claims each."""
    records = {}
    for host_id, n in counts.items():
        record = AllocationRecord(host_id)
        for i in range(n):
            record = record.with_claim(f"{host_id}{i}", Claim(0, 1))
        records[host_id] = record
    return records


def test_ram_weigher_spreads_by_free_memory_and_packs_when_negative():
    v = view(("a", 8, 1024), ("b", 8, 4096), ("c", 8, 2048))
    assert order(v, "RAMWeigher") == ["b", "c", "a"]
    assert order(v, "RAMWeigher", ram_weight_multiplier=-1.0) == ["a", "c", "b"]


def test_cpu_weigher_spreads_by_free_vcpus_and_packs_when_negative():
    v = view(("a", 2, 4096), ("b", 8, 4096), ("c", 4, 4096))
    assert order(v, "CPUWeigher") == ["b", "c", "a"]
    assert order(v, "CPUWeigher", cpu_weight_multiplier=-1.0) == ["a", "c", "b"]


def test_num_instances_weigher_is_off_by_default_and_prefers_fewer_when_negative():
    v = view(("a", 8, 4096), ("b", 8, 4096), ("c", 8, 4096), allocations=instances(a=2, c=1))
    name = "NumInstancesWeigher"
    assert order(v, name) == ["a", "b", "c"]  # multiplier 0: table order
    assert order(v, name, num_instances_weight_multiplier=-1.0) == ["b", "c", "a"]
    assert order(v, name, num_instances_weight_multiplier=1.0) == ["a", "c", "b"]


def test_build_failure_weigher_puts_failing_hosts_last():
    v = view(("a", 8, 4096), ("b", 8, 4096), ("c", 8, 4096))
    v.build_failures["a"] = BuildFailuresRecord(3, 0.0)
    v.build_failures["c"] = BuildFailuresRecord(1, 0.0)
    assert order(v, "BuildFailureWeigher") == ["b", "c", "a"]


def test_server_group_soft_weigher_follows_soft_policies_only():
    v = view(("a", 8, 4096), ("b", 8, 4096), ("c", 8, 4096))
    members = ("a", "a", "b")  # the host of each existing member
    soft_anti = Request(1, 64, group=group("anti-affinity", soft=True), group_hosts=members)
    assert order(v, "ServerGroupSoftWeigher", soft_anti) == ["c", "b", "a"]
    soft_with = Request(1, 64, group=group("affinity", soft=True), group_hosts=members)
    assert order(v, "ServerGroupSoftWeigher", soft_with) == ["a", "b", "c"]
    hard = Request(1, 64, group=group("affinity"), group_hosts=("c",))
    assert order(v, "ServerGroupSoftWeigher", hard, filters=()) == ["a", "b", "c"]  # not weighed


def test_weighers_are_normalised_so_units_do_not_decide():
    """RAM's spread is thousands of MiB, CPU's a few vCPUs: each counts 0..1 all the same."""
    v = view(("a", 8, 1000), ("b", 2, 100_000), ("c", 6, 40_000))
    # RAM: a 0, b 1, c 0.39; CPU: a 1, b 0, c 0.67. c is best at both together.
    cfg = PlacementConfig(weighers=("RAMWeigher", "CPUWeigher"))
    assert decide.choose_hosts(table_of(v), Request(1, 64), cfg)[0].host == "c"


def test_weighers_are_chosen_by_name():
    names = ("CPUWeigher", "RAMWeigher")
    assert tuple(w.name for w in weighers.named(names)) == names
    assert weighers.named(None) == weighers.DEFAULT
    v = view(("a", 8, 1024), ("b", 2, 4096), ("c", 7, 4000))
    assert decide.choose_hosts(table_of(v), Request(1, 64))[0].host == "c"  # all weighers
    assert order(v, "CPUWeigher")[0] == "a"
    with pytest.raises(ValueError, match=r"unknown weigher\(s\) NoSuchWeigher; known: RAMWeigher,"):
        weighers.named(("NoSuchWeigher",))
