"""The scheduler's host cache follows etcd through a watch, and resyncs after an outage."""

import pytest

from computed.store import keys
from computed.store.client import Store
from computed.store.records import AllocationRecord, Claim, LivenessRecord
from scheduler.host_cache import HostCache
from tests.unit.test_claims import host
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def cache(store):
    c = HostCache(store)
    c.start()
    assert c.wait_synced(10)
    yield c
    c.close()


def test_initial_read_and_watched_changes(store, cache):
    store.put(keys.host("a"), host("a"))
    store.put(keys.liveness("a"), LivenessRecord("a", 1.0))
    wait_until(lambda: "a" in cache.view.hosts and "a" in cache.view.live)
    store.put(keys.allocation("a"), AllocationRecord("a").with_claim("u1", Claim(1, 64)))
    wait_until(lambda: cache.view.allocations.get("a", AllocationRecord("a")).vcpus == 1)
    store.delete(keys.liveness("a"))
    wait_until(lambda: "a" not in cache.view.live)
    store.put(keys.host("bad"), "{not json")  # malformed records are skipped, not fatal
    store.put(keys.host("b"), host("b"))
    wait_until(lambda: "b" in cache.view.hosts)
    assert "bad" not in cache.view.hosts


def test_resync_after_etcd_restart(etcd, cache):
    with Store(etcd.endpoint) as s:
        s.put(keys.host("a"), host("a"))
    wait_until(lambda: "a" in cache.view.hosts)
    etcd.stop()
    wait_until(lambda: not cache.synced.is_set())
    etcd.start()
    with Store(etcd.endpoint) as s:
        s.put(keys.host("c"), host("c"))
    wait_until(lambda: cache.synced.is_set() and "c" in cache.view.hosts, timeout=20)
    assert "a" in cache.view.hosts
