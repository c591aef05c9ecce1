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
    assert keys.instance_stats(UUID) == f"/computed/stats/instances/{UUID}"
    assert keys.host_stats("node-1") == "/computed/stats/hosts/node-1"
    assert keys.allocation("node-1") == "/computed/allocations/node-1"
    assert keys.counter(keys.INSTANCE_NAME_COUNTER) == "/computed/counters/instance-name"


def test_no_prefix_is_a_prefix_of_another():
    prefixes = [
        keys.HOSTS, keys.HOST_ADMIN, keys.LIVENESS, keys.INSTANCES,
        keys.INSTANCE_STATS, keys.HOST_STATS, keys.ALLOCATIONS, keys.COUNTERS,
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
    assert keys.last_segment(keys.INSTANCE_STATS, keys.instance_stats(UUID)) == UUID


@pytest.mark.parametrize(
    "key", ["/computed/liveness/node-1", "/computed/hosts/node-1/extra", "/computed/hosts/"]
)
def test_last_segment_refuses_keys_from_elsewhere(key):
    with pytest.raises(ValueError):
        keys.last_segment(keys.HOSTS, key)
