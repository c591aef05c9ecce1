import pytest

from computed.store.records import (
    AllocationRecord,
    Claim,
    HostAdminRecord,
    HostRecord,
    InstanceRecord,
    InstanceSpec,
    KvmFacts,
    LivenessRecord,
    ServerGroupRecord,
)
from scheduler.decide import Request, choose_hosts
from scheduler.errors import NoValidHost
from scheduler.host_cache import ClusterView


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


def test_spreads_by_free_ram_and_counts_each_placement():
    v = view(("a", 4, 1024), ("b", 4, 512))
    hosts = [d.host for d in choose_hosts(v, Request(1, 256, count=4))]
    assert hosts == ["a", "a", "a", "b"]  # a: 1024, 768, then 512 ties b and host order wins


def test_filters_give_aggregated_reasons():
    v = view(
        ("up", 1, 128),
        ("down", 8, 4096),
        ("off", 8, 4096),
        ("far", 8, 4096, "az2"),
        down=("down",),
        disabled=("off",),
    )
    with pytest.raises(NoValidHost) as e:
        choose_hosts(v, Request(2, 256, availability_zone="nova"))
    text = str(e.value)
    assert "0/4 hosts available" in text
    assert "ComputeFilter (host is down)" in text and "ComputeFilter (host is disabled)" in text
    assert "RamFilter" in text and "AvailabilityZoneFilter (not in zone nova)" in text


def test_existing_allocations_count():
    alloc = {"a": AllocationRecord("a").with_claim("old", Claim(1, 900))}
    v = view(("a", 2, 1024), ("b", 2, 512), allocations=alloc)
    assert choose_hosts(v, Request(1, 200))[0].host == "b"


def test_all_or_nothing_and_min_count():
    v = view(("a", 2, 256))
    with pytest.raises(NoValidHost, match="2 of 3"):
        choose_hosts(v, Request(1, 128, count=3))
    assert len(choose_hosts(v, Request(1, 128, count=3, min_count=2))) == 2


def test_alternates_are_the_next_best_hosts():
    v = view(("a", 4, 1024), ("b", 4, 900), ("c", 4, 800), ("d", 4, 100))
    d = choose_hosts(v, Request(1, 200))[0]
    assert (d.host, d.alternates) == ("a", ("b", "c"))


def test_image_traits():
    v = view(("a", 4, 1024))
    with pytest.raises(NoValidHost, match="lacks vhost:kernel"):
        choose_hosts(v, Request(1, 64, required_traits=("vhost:kernel",)))
    assert choose_hosts(v, Request(1, 64, required_traits=("vhost:userspace",)))


def group(policy, soft=False, members=()):
    return ServerGroupRecord("g1", "grp", policy, soft, tuple(members))


def test_anti_affinity_spreads_and_refuses():
    v = view(("a", 8, 4096), ("b", 8, 4096))
    assert {
        d.host for d in choose_hosts(v, Request(1, 64, count=2, group=group("anti-affinity")))
    } == {"a", "b"}
    with pytest.raises(NoValidHost, match="anti-affinity group grp"):
        choose_hosts(v, Request(1, 64, count=3, group=group("anti-affinity")))


def test_anti_affinity_counts_existing_members():
    spec = InstanceSpec("u1", "instance-1", "heartbeat", 1, 64)
    v = view(
        ("a", 8, 4096), ("b", 8, 1024), instances={"u1": InstanceRecord(spec, "ACTIVE", host="a")}
    )
    d = choose_hosts(v, Request(1, 64, group=group("anti-affinity", members=["u1"])))
    assert d[0].host == "b"


def test_affinity_packs_onto_one_host():
    v = view(("a", 8, 4096), ("b", 8, 4096))
    hosts = {d.host for d in choose_hosts(v, Request(1, 64, count=3, group=group("affinity")))}
    assert len(hosts) == 1


def test_soft_anti_affinity_prefers_but_does_not_refuse():
    v = view(("a", 8, 4096), ("b", 8, 128))
    hosts = [
        d.host
        for d in choose_hosts(v, Request(1, 64, count=3, group=group("anti-affinity", soft=True)))
    ]
    assert hosts[:2] in (["a", "b"], ["b", "a"]) and len(hosts) == 3
