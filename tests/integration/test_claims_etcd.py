"""Claims against a real etcd: concurrent claimers never over-commit a host."""

import threading

import pytest

from computed.store import keys
from computed.store.client import Store
from computed.store.records import AllocationRecord
from scheduler.claims import Overcommit, Placement, claim, release
from tests.unit.test_claims import host

pytestmark = pytest.mark.integration


def test_claim_and_release(store):
    hosts = {"a": host("a")}
    assert claim(store, [Placement("u1", "a", 1, 256)], hosts)
    assert claim(store, [Placement("u2", "a", 1, 256)], hosts)
    with pytest.raises(Overcommit):
        claim(store, [Placement("u3", "a", 1, 256)], hosts)
    release(store, "a", "u1")
    release(store, "a", "u1")  # idempotent
    assert claim(store, [Placement("u3", "a", 1, 256)], hosts)
    record, _ = store.get_record(keys.allocation("a"), AllocationRecord)
    assert set(record.claims) == {"u2", "u3"}


def test_racing_claimers_never_overcommit(etcd):
    """8 threads, each with its own client, race for 2 small hosts (4 slots in all)."""
    hosts = {"a": host("a", vcpus=2), "b": host("b", vcpus=2)}
    won: list[str] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        with Store(etcd.endpoint) as s:
            for i in range(10):
                uuid = f"t{n}-{i}"
                for host_id in ("a", "b"):
                    try:
                        while not claim(s, [Placement(uuid, host_id, 1, 1)], hosts):
                            pass  # conflict: re-read and try again
                    except Overcommit:
                        continue
                    with lock:
                        won.append(uuid)
                    break

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Store(etcd.endpoint) as s:
        totals = {h: s.get_record(keys.allocation(h), AllocationRecord)[0].vcpus for h in hosts}
    assert totals == {"a": 2, "b": 2} and len(won) == 4
