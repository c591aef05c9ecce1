"""Each host filter on its own: which hosts it lets through, and the words for the rest."""

import dataclasses

from computed.store.records import AllocationRecord, Claim
from scheduler import filters
from scheduler.placement import Candidates, PlacementConfig, Request
from tests.placement_tables import group, table_of, view

CFG = PlacementConfig()


def candidates(v, r):
    return Candidates(table_of(v), r)


def by_name(name):
    (f,) = filters.named((name,))
    return f


def passes(name, v, r, cfg=CFG):
    """The filter's answer as a list (None: it does not constrain this request)."""
    mask = by_name(name).passes(candidates(v, r), r, cfg)
    return None if mask is None else mask.tolist()


def why(name, r, cfg=CFG):
    return by_name(name).why(r, cfg)


def test_compute_filter_turns_away_hosts_down_or_disabled():
    v = view(("up", 1, 64), ("down", 1, 64), ("off", 1, 64), down=("down",), disabled=("off",))
    r = Request(1, 64)
    assert passes("ComputeFilter", v, r) == [True, False, False]
    assert why("ComputeFilter", r) == "host is down or disabled"


def test_availability_zone_filter_keeps_the_zone_asked_for():
    v = view(("a", 1, 64, "az1"), ("b", 1, 64, "az2"))
    assert passes("AvailabilityZoneFilter", v, Request(1, 64)) is None
    in_az2 = Request(1, 64, availability_zone="az2")
    assert passes("AvailabilityZoneFilter", v, in_az2) == [False, True]
    nowhere = Request(1, 64, availability_zone="az9")
    assert passes("AvailabilityZoneFilter", v, nowhere) == [False, False]
    assert why("AvailabilityZoneFilter", nowhere) == "not in zone az9"


def test_image_properties_filter_needs_every_required_trait():
    v = view(("user", 1, 64), ("kern", 1, 64))
    kern = v.hosts["kern"]
    v.hosts["kern"] = dataclasses.replace(kern, kvm=dataclasses.replace(kern.kvm, vhost="kernel"))
    assert passes("ImagePropertiesFilter", v, Request(1, 64)) is None
    r = Request(1, 64, required_traits=("vhost:kernel", "kvm:kvm_intel"))
    assert passes("ImagePropertiesFilter", v, r) == [False, True]
    never_offered = Request(1, 64, required_traits=("vhost:dpdk",))
    assert passes("ImagePropertiesFilter", v, never_offered) == [False, False]
    assert why("ImagePropertiesFilter", r) == "lacks vhost:kernel, kvm:kvm_intel"


def test_ram_filter_counts_claims_and_the_batch_so_far():
    alloc = {"a": AllocationRecord("a").with_claim("x", Claim(1, 512))}
    v = view(("a", 8, 1024), ("b", 8, 1024), allocations=alloc)
    r = Request(1, 512)
    c = candidates(v, r)
    ram = by_name("RamFilter")
    assert ram.passes(c, r, CFG).tolist() == [True, True]  # a: exactly 512 MiB left
    c.place(1, Request(1, 600))  # an earlier instance of the batch went to b
    assert ram.passes(c, r, CFG).tolist() == [True, False]
    assert why("RamFilter", r) == "insufficient memory (need 512 MiB)"


def test_core_filter_needs_enough_unclaimed_vcpus():
    alloc = {"a": AllocationRecord("a").with_claim("x", Claim(3, 64))}
    v = view(("a", 4, 4096), ("b", 2, 4096), allocations=alloc)
    r = Request(2, 64)
    assert passes("CoreFilter", v, r) == [False, True]
    assert why("CoreFilter", r) == "insufficient vCPUs (need 2)"


def test_num_instances_filter_caps_instances_per_host():
    two = AllocationRecord("a").with_claim("x", Claim(1, 64)).with_claim("y", Claim(1, 64))
    v = view(("a", 8, 4096), ("b", 8, 4096), allocations={"a": two})
    cfg = PlacementConfig(max_instances_per_host=2)
    assert passes("NumInstancesFilter", v, Request(1, 64), cfg) == [False, True]
    assert why("NumInstancesFilter", Request(1, 64), cfg) == "already runs 2 instances"


def test_server_group_filter_enforces_hard_policies_only():
    v = view(("a", 8, 4096), ("b", 8, 4096))
    on_a = ("a",)
    anti = Request(1, 64, group=group("anti-affinity"), group_hosts=on_a)
    assert passes("ServerGroupFilter", v, anti) == [False, True]
    assert why("ServerGroupFilter", anti) == "already holds a member of anti-affinity group grp"
    together = Request(1, 64, group=group("affinity"), group_hosts=on_a)
    assert passes("ServerGroupFilter", v, together) == [True, False]
    assert why("ServerGroupFilter", together) == "not where affinity group grp is"
    first = Request(1, 64, group=group("affinity"))  # no member placed yet: anywhere
    assert passes("ServerGroupFilter", v, first) is None
    soft = Request(1, 64, group=group("anti-affinity", soft=True), group_hosts=on_a)
    assert passes("ServerGroupFilter", v, soft) is None
    assert passes("ServerGroupFilter", v, Request(1, 64)) is None
