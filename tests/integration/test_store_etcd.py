"""computed.store against a real etcd server: records, batches, leases, CAS, watches, outages."""

from __future__ import annotations

import collections
import threading
import time

import pytest

from computed.store import keys
from computed.store.client import Store, WatchEvent
from computed.store.errors import StoreError, StoreUnavailable
from computed.store.lease import LeaseKeeper
from computed.store.ops import Delete, Put
from computed.store.records import HostAdminRecord, LivenessRecord
from tests.etcd_harness import EtcdCluster
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

UUID = "5c0f0000-0000-4000-8000-000000000001"


# --- records ------------------------------------------------------------------


def test_put_get_delete_a_record(store):
    key = keys.liveness("node-1")
    record = LivenessRecord("node-1", 1700000000.5)
    revision = store.put(key, record)
    got, mod_revision = store.get_record(key, LivenessRecord)
    assert got == record and mod_revision == revision
    assert store.delete(key) is True
    assert store.get(key) is None and store.get_record(key, LivenessRecord) is None
    assert store.delete(key) is False  # deleting twice is fine


def test_get_prefix_returns_sorted_entries_and_the_read_revision(store):
    for host_id in ("b", "a", "c"):
        store.put(keys.host_admin(host_id), HostAdminRecord(enabled=host_id != "b"))
    store.put(keys.host("a"), "not under host-admin/")
    entries, revision = store.get_prefix(keys.HOST_ADMIN)
    assert [keys.last_segment(keys.HOST_ADMIN, e.key) for e in entries] == ["a", "b", "c"]
    assert [e.record(HostAdminRecord).enabled for e in entries] == [True, False, True]
    assert revision == max(e.mod_revision for e in entries) + 1  # the later put to hosts/a


# --- batches ------------------------------------------------------------------


def test_put_many_writes_300_ops_as_three_transactions(store):
    ops = [Put(keys.instance_stats("h", f"inst-{i:03d}"), f'{{"n":{i}}}') for i in range(300)]
    revisions = store.put_many(ops)

    entries, _ = store.get_prefix(keys.instance_stats_prefix("h"))
    assert {e.key: e.value for e in entries} == {op.key: op.value.encode() for op in ops}
    by_revision = collections.Counter(e.mod_revision for e in entries)
    # Each chunk landed whole at one revision: one transaction per chunk.
    assert sorted(by_revision.values(), reverse=True) == [128, 128, 44]
    assert sorted(by_revision) == revisions
    assert revisions == sorted(set(revisions))


def test_put_many_attaches_the_batch_lease_and_mixes_deletes(store):
    store.put("/t/old", "x")
    lease, own = store.grant_lease(30), store.grant_lease(30)
    store.put_many(
        [Put("/t/a", "1"), Put("/t/b", b"2", lease=0), Put("/t/c", b"3", own), Delete("/t/old")],
        lease=lease,
    )
    assert store.get("/t/a").lease == lease
    assert store.get("/t/b").lease == lease  # 0 means "no lease of its own"
    assert store.get("/t/c").lease == own
    assert store.get("/t/old") is None


def test_etcd_really_refuses_more_than_128_ops_in_one_transaction(etcd):
    """Why put_many chunks: the server's default limit, not a guess."""
    with Store(etcd.endpoint, timeout=2.0, max_txn_ops=129) as store:
        with pytest.raises(StoreError, match="too many operations") as info:
            store.put_many([Put(f"/t/{i}", "v") for i in range(129)])
        assert not isinstance(info.value, StoreUnavailable)


# --- compare-and-swap ---------------------------------------------------------


def test_compare_and_swap_detects_a_conflicting_writer(store):
    key = keys.instance(UUID)
    assert store.compare_and_swap(key, "v1", 0)  # create: only if absent
    assert not store.compare_and_swap(key, "other", 0)  # exists now

    rev = store.get(key).mod_revision
    store.put(key, "someone else")  # another writer gets in first
    assert not store.compare_and_swap(key, "v2", rev)  # stale revision: refused
    assert store.get(key).value == b"someone else"

    fresh = store.get(key).mod_revision
    assert store.compare_and_swap(key, "v2", fresh)
    assert store.get(key).value == b"v2"


def test_transaction_is_all_or_nothing(store):
    rev_a = store.put(keys.allocation("a"), "{}")
    rev_b = store.put(keys.allocation("b"), "{}")
    store.put(keys.allocation("b"), '{"raced":1}')
    claims = [Put(keys.allocation("a"), '{"x":1}'), Put(keys.allocation("b"), '{"x":1}')]
    assert (
        store.transaction({keys.allocation("a"): rev_a, keys.allocation("b"): rev_b}, claims)
        is None
    )
    assert store.get(keys.allocation("a")).value == b"{}"  # nothing written

    rev_b = store.get(keys.allocation("b")).mod_revision
    revision = store.transaction({keys.allocation("a"): rev_a, keys.allocation("b"): rev_b}, claims)
    assert revision is not None
    assert store.get(keys.allocation("a")).mod_revision == revision
    assert store.get(keys.allocation("b")).mod_revision == revision


# --- leases -------------------------------------------------------------------


def test_lease_expiry_removes_attached_keys(store):
    lease = store.grant_lease(2)  # etcd's minimum TTL
    store.put(keys.liveness("node-1"), LivenessRecord("node-1", 1.0), lease=lease)
    store.put_many([Put(keys.instance_stats("node-1", UUID), "{}")], lease=lease)
    store.put(keys.host("node-1"), "{}")  # not on the lease
    wait_until(lambda: store.get(keys.liveness("node-1")) is None, what="lease expiry")
    assert store.get(keys.instance_stats("node-1", UUID)) is None
    assert store.get(keys.host("node-1")) is not None


def test_lease_keeper_keeps_keys_past_the_ttl_and_revokes_on_close(store):
    granted = []
    keeper = LeaseKeeper(store, ttl=2, on_new_lease=granted.append)
    try:
        lease = keeper.wait(5)
        assert lease is not None and granted == [lease]
        store.put(keys.liveness("node-1"), "{}", lease=lease)
        time.sleep(4)  # twice the TTL
        assert store.get(keys.liveness("node-1")) is not None
    finally:
        keeper.close(revoke=True)
    assert store.get(keys.liveness("node-1")) is None  # at once, not after the TTL
    assert keeper.lease_id is None


def test_lease_keeper_replaces_a_lost_lease_and_says_so(store):
    granted: list[int] = []

    def reattach(lease: int) -> None:
        granted.append(lease)
        store.put(keys.liveness("node-1"), "{}", lease=lease)

    keeper = LeaseKeeper(store, ttl=3, on_new_lease=reattach)
    try:
        first = keeper.wait(5)
        store.revoke_lease(first)  # as if it had expired during an outage
        # lease_id shows the new lease once on_new_lease has re-attached the keys.
        wait_until(lambda: len(granted) == 2 and keeper.lease_id == granted[1], timeout=5)
        assert granted[1] != first
        assert store.get(keys.liveness("node-1")).lease == granted[1]
    finally:
        keeper.close()


def test_revoking_a_lease_twice_is_fine(store):
    lease = store.grant_lease(10)
    store.revoke_lease(lease)
    store.revoke_lease(lease)


# --- watches ------------------------------------------------------------------


def test_watch_prefix_sees_puts_and_deletes_from_a_revision(store):
    store.put(keys.host("before"), "0")
    _, revision = store.get_prefix(keys.HOSTS)
    events: list[WatchEvent] = []
    errors = []
    watch = store.watch_prefix(
        keys.HOSTS, lambda evs, rev: events.extend(evs), errors.append, start_revision=revision + 1
    )
    try:
        store.put(keys.host("a"), "1")
        store.put(keys.liveness("a"), "elsewhere")
        store.delete(keys.host("a"))
        wait_until(lambda: len(events) == 2, timeout=5)
    finally:
        watch.cancel()
    assert [(e.kind, e.key, e.value) for e in events] == [
        ("put", keys.host("a"), b"1"),
        ("delete", keys.host("a"), b""),
    ]
    assert not errors


def test_watch_reports_once_when_etcd_goes_away(etcd, store):
    errors = []
    watch = store.watch_prefix(keys.HOSTS, lambda evs, rev: None, errors.append)
    try:
        etcd.stop()
        wait_until(lambda: errors, timeout=10)
        time.sleep(0.5)
        assert len(errors) == 1 and isinstance(errors[0], StoreUnavailable)
    finally:
        watch.cancel()


# --- outages ------------------------------------------------------------------


def test_every_call_raises_store_unavailable_when_etcd_is_stopped(etcd, store):
    etcd.stop()
    calls = {
        "get": lambda: store.get("/k"),
        "get_prefix": lambda: store.get_prefix("/k/"),
        "put": lambda: store.put("/k", "v"),
        "delete": lambda: store.delete("/k"),
        "put_many": lambda: store.put_many([Put("/k", "v")]),
        "compare_and_swap": lambda: store.compare_and_swap("/k", "v", 0),
        "grant_lease": lambda: store.grant_lease(5),
        "refresh_lease": lambda: store.refresh_lease(1),
        "watch_prefix": lambda: store.watch_prefix("/k/", print, print),
    }
    for name, call in calls.items():
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"unavailable"):
            call()
        assert time.monotonic() - start < 3, f"{name} took too long to fail"


def test_a_hung_etcd_is_unavailable_after_the_deadline(etcd, store):
    store.put("/k", "v")  # connected
    etcd.pause()
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get("/k")
        assert 1.5 < time.monotonic() - start < 4  # the Store's 2 s deadline
    finally:
        etcd.resume()


def test_the_same_store_recovers_when_etcd_restarts(etcd, store):
    store.put(keys.host("node-1"), "kept")
    etcd.stop()
    with pytest.raises(StoreUnavailable):
        store.get(keys.host("node-1"))
    etcd.start()

    def works() -> bool:
        try:
            return store.get(keys.host("node-1")).value == b"kept"
        except StoreUnavailable:
            return False

    wait_until(works, interval=0.1, what="the store to reconnect")
    store.put(keys.host("node-2"), "new")
    assert store.get(keys.host("node-2")).value == b"new"


def test_a_short_outage_keeps_the_lease_and_its_keys(etcd, store):
    keeper = LeaseKeeper(store, ttl=5)
    try:
        lease = keeper.wait(5)
        store.put(keys.liveness("node-1"), "{}", lease=lease)
        etcd.stop()
        time.sleep(1)
        etcd.start()  # etcd extends unexpired leases when it comes back
        time.sleep(6)  # longer than the TTL: only the keeper's refreshes keep it
        assert keeper.lease_id == lease
        assert store.get(keys.liveness("node-1")).lease == lease
    finally:
        keeper.close()


def test_watch_can_be_restarted_after_an_outage(etcd, store):
    etcd.stop()
    etcd.start()
    seen = threading.Event()
    watch = None
    deadline = time.monotonic() + 10
    while watch is None:
        try:
            watch = store.watch_prefix(keys.HOSTS, lambda evs, rev: seen.set(), print)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        store.put(keys.host("node-1"), "x")
        assert seen.wait(5)
    finally:
        watch.cancel()


def test_a_read_is_answered_by_another_member_when_the_one_in_use_is_killed():
    """With one of three members gone, the first read after it must not fail: two
    members can answer it (an API request failed UNAVAILABLE here before)."""
    with EtcdCluster(3) as cluster, Store(cluster.endpoints, timeout=5.0) as s:
        s.put("/computed/test/k", "v")
        in_use = s._client.endpoint_in_use.netloc  # pyetcd picks a member at random
        cluster.kill_member(cluster.endpoints.index(in_use))
        assert s.get("/computed/test/k").value == b"v"
        assert [e.key for e in s.scan("/computed/test/", "/computed/test0")] == ["/computed/test/k"]


def test_a_batch_write_moves_to_another_member_once_the_one_in_use_is_killed():
    """Batch writes build their own etcd requests; a member gone away must still be
    marked failed, or every later write would go to it until the store's end."""
    with EtcdCluster(3) as cluster, Store(cluster.endpoints, timeout=5.0) as s:
        s.put_many([Put("/computed/test/a", "1")])
        in_use = s._client.endpoint_in_use.netloc
        cluster.kill_member(cluster.endpoints.index(in_use))
        # Writes are not retried: ask again, as callers do, while the survivors elect.
        wait_until(
            lambda: s.put_many([Put("/computed/test/b", "2")]),
            60,
            interval=0.2,
            what="a batch write that does not go to the killed member",
            ignoring=(StoreUnavailable,),
        )
        assert s._client.endpoint_in_use.netloc != in_use
        assert s.get("/computed/test/b").value == b"2"
