"""The schedulers' etcd upkeep on a real etcd: compaction rounds shared by several
schedulers, and what NOSPACE looks like through the Store (scheduler/compactor.py)."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from computed.store.client import Store
from computed.store.errors import StoreFull
from computed.store.maintenance import COMPACTION_MARK, CompactionMark
from scheduler.compactor import Compactor
from tests.etcd_harness import EtcdServer

pytestmark = pytest.mark.integration


def _history_readable(store: Store, revision: int) -> bool:
    """Whether etcd still holds the keyspace as it was at `revision`."""
    try:
        store._client.get_response("/computed/x", revision=revision)
    except Exception as e:
        assert "compacted" in str(e)
        return False
    return True


def test_of_several_schedulers_exactly_one_compacts_each_round(store):
    for i in range(20):
        store.put("/computed/x", str(i))
    schedulers = [Compactor(store, retention=60) for _ in range(4)]
    start = time.time()
    assert [c.run_round(start) for c in schedulers] == [None] * 4  # the first only records
    mark = CompactionMark.from_json(store.get(COMPACTION_MARK).value)
    for i in range(20):
        store.put("/computed/x", f"later {i}")

    results: list[int | None] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.run_round(start + 61)))
               for c in schedulers]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(results, key=lambda r: r or 0) == [None, None, None, mark.revision]
    assert not _history_readable(store, mark.revision - 1)
    assert _history_readable(store, mark.revision)  # what a watcher may still resume from
    assert store.compact(mark.revision) is False  # again: refused by etcd, and harmless


class _SmallEtcd(EtcdServer):
    """A test etcd with a 4 MiB backend quota."""

    def _command(self) -> list[str]:
        return [*super()._command(), "--quota-backend-bytes", str(4 * 1024 * 1024)]


def test_nospace_refuses_writes_with_advice_and_compaction_still_runs(caplog):
    caplog.set_level(logging.INFO, logger="computed.scheduler.compactor")
    with _SmallEtcd() as etcd, Store(etcd.endpoint, timeout=5) as store:
        compactor = Compactor(store, retention=1)
        for i in range(5):
            store.put("/computed/x", str(i))
        compactor.run_round(time.time())  # the mark, before etcd is full
        blob = os.urandom(256 * 1024)
        with pytest.raises(StoreFull, match="NOSPACE") as full:
            for _ in range(100):
                store.put("/computed/x", blob)
        assert "docs/operations.md" in str(full.value)
        assert [a.split(" on member ")[0] for a in compactor.check_alarms()] == ["NOSPACE"]
        assert "etcd alarm raised: NOSPACE" in caplog.text

        # Under NOSPACE the round cannot write its mark, and compacts anyway.
        compacted = compactor.run_round(time.time() + 2)
        assert compacted is not None and compactor.compacted_to == compacted

        store.delete("/computed/x")
        store.compact(store.status().revision)
        store.defragment()
        assert store.disarm_alarms() == 1
        assert compactor.check_alarms() == []
        assert "etcd alarms cleared" in caplog.text
        store.put("/computed/x", "writable again")
