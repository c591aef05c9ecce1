"""Key builders: one place, safe segments, prefixes that do not overlap."""

from __future__ import annotations

import pytest

from computed.store import keys

UUID = "5c0f0000-0000-4000-8000-000000000001"


def test_each_key_sits_under_its_prefix():
    assert keys.host("node-1") == "/computed/hosts/node-1"
    assert keys.host_admin("node-1") == "/computed/host-admin/node-1"
    assert keys.liveness("node-1") == "/computed/liveness/node-1"
    assert keys.instance(UUID) == f"/computed/instances/{UUID}"
    assert keys.report("node-1", UUID) == f"/computed/reports/node-1/{UUID}"
    assert keys.instance_stats("node-1", UUID) == f"/computed/stats/node-1/instances/{UUID}"
    assert keys.host_stats("node-1") == "/computed/stats/node-1/host"
    assert keys.allocation("node-1") == "/computed/allocations/node-1"
    assert keys.counter(keys.INSTANCE_NAME_COUNTER) == "/computed/counters/instance-name"


def test_no_prefix_is_a_prefix_of_another():
    prefixes = [
        keys.HOSTS, keys.HOST_ADMIN, keys.LIVENESS, keys.INSTANCES,
        keys.REPORTS, keys.STATS, keys.ALLOCATIONS, keys.COUNTERS, keys.BUILD_FAILURES,
        keys.IPS, keys.FLAVORS, keys.IMAGES, keys.SERVER_GROUPS,
    ]  # fmt: skip
    for a in prefixes:
        assert a.endswith("/")
        for b in prefixes:
            assert a == b or not b.startswith(a), (a, b)


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "has space", "-leading", "x" * 254, "é"])
def test_unsafe_ids_are_refused_with_what_they_are(bad):
    with pytest.raises(ValueError, match="host id"):
        keys.host(bad)


def test_fqdn_and_uuid_ids_are_accepted():
    assert keys.host("compute-7.rack3.example.org").endswith("compute-7.rack3.example.org")
    assert keys.instance(UUID).endswith(UUID)


def test_last_segment_turns_keys_back_into_ids():
    assert keys.last_segment(keys.HOSTS, b"/computed/hosts/node-1") == "node-1"
    stats = keys.instance_stats("h", UUID)
    assert keys.last_segment(keys.instance_stats_prefix("h"), stats) == UUID
    assert keys.report_key_ids(keys.report("node-1", UUID)) == ("node-1", UUID)


@pytest.mark.parametrize("key", ["/computed/reports/node-1", "/computed/hosts/a/b", "/x"])
def test_report_key_ids_refuses_other_keys(key):
    with pytest.raises(ValueError):
        keys.report_key_ids(key)


def test_every_key_an_agent_writes_names_its_host_first():
    """What etcd RBAC confines an agent to: its host's keys and prefixes."""
    mine = [
        keys.host("h1"), keys.liveness("h1"), keys.report("h1", UUID),
        keys.host_stats("h1"), keys.instance_stats("h1", UUID),
    ]  # fmt: skip
    for key in mine:
        assert "/h1" in key and "/h10" not in key
    assert not keys.report("h1", UUID).startswith(keys.reports("h10"))
    assert not keys.host_stats("h10").startswith(keys.host_stats_prefix("h1"))


def test_the_schedulers_watch_covers_what_it_caches_and_no_stats():
    from scheduler.cluster_view import CACHED_PREFIXES

    def watched(key: str) -> bool:
        return keys.WATCHED_START <= key < keys.WATCHED_END

    for prefix in CACHED_PREFIXES:
        assert watched(prefix) and watched(keys.prefix_end(prefix)[:-1] + "\uffff"), prefix
    assert not watched(keys.host_stats("node-1"))
    assert not watched(keys.instance_stats("zz", UUID))


def test_prefix_end_is_the_first_key_past_the_prefix():
    assert keys.prefix_end("/computed/") == "/computed0"
    assert keys.prefix_end(keys.reports("a")) == "/computed/reports/a0"


@pytest.mark.parametrize(
    "key", ["/computed/liveness/node-1", "/computed/hosts/node-1/extra", "/computed/hosts/"]
)
def test_last_segment_refuses_keys_from_elsewhere(key):
    with pytest.raises(ValueError):
        keys.last_segment(keys.HOSTS, key)
