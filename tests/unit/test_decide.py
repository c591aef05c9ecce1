import dataclasses
import random

import pytest

from computed.store.records import (
    AllocationRecord,
    BuildFailuresRecord,
    Claim,
    InstanceRecord,
    InstanceSpec,
    LivenessRecord,
)
from scheduler import decide
from scheduler.cluster_view import ClusterView
from scheduler.placement import NoValidHost, PlacementConfig, Request
from tests.placement_tables import group, table_of, view

RAM_ONLY = PlacementConfig(cpu_weight_multiplier=0.0)


def choose_hosts(v, r, cfg=decide.DEFAULT_CONFIG, rng=None):
    """Decide as the servicer does: sync a table from the view, members' hosts from it."""
    group_hosts = decide.group_member_hosts(v.instances, r.group)
    return decide.choose_hosts(
        table_of(v), dataclasses.replace(r, group_hosts=group_hosts), cfg, rng
    )


def test_spreads_by_free_ram_and_counts_each_placement():
    v = view(("a", 4, 1024), ("b", 4, 512))
    hosts = [d.host for d in choose_hosts(v, Request(1, 256, count=4), RAM_ONLY)]
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
    assert "2 ComputeFilter (host is down or disabled)" in text
    assert "1 AvailabilityZoneFilter (not in zone nova)" in text
    assert "1 RamFilter (insufficient memory (need 256 MiB))" in text


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


def test_pack_by_configuration():
    v = view(("a", 4, 1024), ("b", 4, 512))
    pack = PlacementConfig(ram_weight_multiplier=-1.0, cpu_weight_multiplier=0.0)
    assert [d.host for d in choose_hosts(v, Request(1, 256, count=2), pack)] == ["b", "b"]


def test_cpu_weigher_spreads_by_free_vcpus():
    v = view(("a", 2, 1024), ("b", 8, 1024))
    cpu_only = PlacementConfig(ram_weight_multiplier=0.0)
    assert choose_hosts(v, Request(1, 64), cpu_only)[0].host == "b"


def test_num_instances_weigher_prefers_emptier_hosts():
    alloc = {"a": AllocationRecord("a").with_claim("x", Claim(0, 1)).with_claim("y", Claim(0, 1))}
    v = view(("a", 8, 4096), ("b", 8, 2048), allocations=alloc)
    assert choose_hosts(v, Request(1, 64))[0].host == "a"  # more free RAM wins by default
    fewer = PlacementConfig(num_instances_weight_multiplier=-10.0)
    assert choose_hosts(v, Request(1, 64), fewer)[0].host == "b"


def test_build_failures_make_a_host_last_choice_but_not_excluded():
    v = view(("a", 8, 4096), ("b", 8, 1024))
    v.build_failures["a"] = BuildFailuresRecord(1, 0.0, "spawn failed")
    d = choose_hosts(v, Request(1, 64))[0]
    assert (d.host, d.alternates) == ("b", ("a",))
    only_a = view(("a", 8, 4096))
    only_a.build_failures["a"] = BuildFailuresRecord(3, 0.0)
    assert choose_hosts(only_a, Request(1, 64))[0].host == "a"


def test_max_instances_per_host():
    alloc = {"a": AllocationRecord("a").with_claim("x", Claim(1, 64))}
    v = view(("a", 8, 4096), allocations=alloc)
    cfg = PlacementConfig(max_instances_per_host=2)
    assert len(choose_hosts(v, Request(1, 64), cfg)) == 1
    with pytest.raises(NoValidHost, match=r"NumInstancesFilter \(already runs 2 instances\)"):
        choose_hosts(v, Request(1, 64, count=2), cfg)


def test_only_the_configured_filters_run():
    v = view(("a", 8, 4096), disabled=("a",))
    with pytest.raises(NoValidHost):
        choose_hosts(v, Request(1, 64))
    assert choose_hosts(v, Request(1, 64), PlacementConfig(filters=("RamFilter",)))
    with pytest.raises(ValueError, match="unknown filter"):
        choose_hosts(v, Request(1, 64), PlacementConfig(filters=("NoSuchFilter",)))


def test_a_deleted_host_is_never_chosen_whatever_the_filters():
    v = view(("a", 8, 4096), ("b", 8, 1024))
    table = table_of(v)
    del v.hosts["a"]
    v.dirty.add("a")
    table.sync(v)
    d = decide.choose_hosts(table, Request(1, 64), PlacementConfig(filters=()))
    assert (d[0].host, d[0].alternates) == ("b", ())


def test_host_subset_size_picks_among_the_best():
    v = view(*[(f"h{i}", 8, 4096 - i) for i in range(10)])
    cfg = PlacementConfig(host_subset_size=3, cpu_weight_multiplier=0.0)
    picks = {choose_hosts(v, Request(1, 64), cfg, random.Random(s))[0].host for s in range(40)}
    assert picks == {"h0", "h1", "h2"}


def test_soft_affinity_prefers_the_groups_host():
    spec = InstanceSpec("u1", "instance-1", "heartbeat", 1, 64)
    v = view(
        ("a", 8, 1024), ("b", 8, 4096), instances={"u1": InstanceRecord(spec, "ACTIVE", host="a")}
    )
    g = group("affinity", soft=True, members=["u1"])
    assert [d.host for d in choose_hosts(v, Request(1, 64, count=2, group=g))] == ["a", "a"]


def test_table_follows_view_changes_row_by_row():
    v = view(("a", 8, 4096), ("b", 8, 4096))
    table = table_of(v)
    v.hosts["c"] = v.hosts["a"].__class__(**{**v.hosts["a"].__dict__, "host_id": "c"})
    v.live["c"] = LivenessRecord("c", 0.0)
    v.allocations["a"] = AllocationRecord("a").with_claim("x", Claim(2, 1000))
    v.dirty.update({"a", "c"})
    table.sync(v)
    assert table.ids == ["a", "b", "c"] and not v.dirty
    assert table.column("used_memory_mb").tolist() == [1000, 0, 0]
    assert table.column("instances").tolist() == [1, 0, 0]
    fresh = view(("z", 1, 128))  # a resync hands over a new view: the table starts again
    table.sync(fresh)
    assert table.ids == ["z"]


def test_table_grows_past_its_initial_size():
    table = table_of(view(*[(f"h{i:03d}", 8, 4096) for i in range(300)]))
    assert len(table) == 300 and table.column("up").all()
    assert decide.choose_hosts(table, Request(1, 64, count=5))


def test_view_ignores_events_older_than_what_it_holds():
    """Our own claim is applied before its watch event; an older event must not undo it."""
    v = ClusterView()
    key = "/computed/allocations/a"
    newer = AllocationRecord("a").with_claim("x", Claim(1, 64)).with_claim("y", Claim(1, 64))
    v.apply(key, newer.to_json().encode(), mod_revision=12)
    v.apply(key, AllocationRecord("a").with_claim("x", Claim(1, 64)).to_json().encode(), 11)
    assert set(v.allocations["a"].claims) == {"x", "y"} and v.revisions[key] == 12
    v.apply(key, None, 13)
    assert "a" not in v.allocations and v.dirty == {"a"}


def test_instance_network_hands_out_the_lowest_free_addresses():
    from scheduler.addresses import InstanceNetwork, mac_for

    net = InstanceNetwork.parse("10.213.0.0/24", "10.213.0.1", "10.213.0.100-10.213.0.103")
    assert net.pick({"10.213.0.100", "10.213.0.102"}, 3) == ["10.213.0.101", "10.213.0.103"]
    assert net.interface("10.213.0.101") == "10.213.0.101/24"
    assert mac_for("10.213.0.101") == "52:54:00:d5:00:65"
    for bad in (
        ("10.213.0.0/33", "10.213.0.1", "10.213.0.100-10.213.0.200"),
        ("10.213.0.0/24", "10.9.0.1", "10.213.0.100-10.213.0.200"),
        ("10.213.0.0/24", "10.213.0.1", "10.213.0.200-10.213.0.100"),
        ("10.213.0.0/24", "10.213.0.150", "10.213.0.100-10.213.0.200"),
        ("10.213.0.0/24", "10.213.0.1", "10.213.0.100-10.213.0.255"),
    ):
        with pytest.raises(ValueError, match="--instance"):
            InstanceNetwork.parse(*bad)
