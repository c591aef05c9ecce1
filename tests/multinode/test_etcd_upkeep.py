"""etcd kept bounded by the product, and the cluster recovering by itself from its upkeep:
history compacted as hard as possible during churn, and a full backend quota (NOSPACE)
surfaced, then cleared by the operator's steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import grpc
import pytest

from computed.devcluster import processes
from computed.store import keys
from computed.store.errors import StoreError, StoreFull
from tests.multinode.conftest import MultiNode, wait_for
from tests.multinode.test_churn import Churn, churn_rounds

pytestmark = pytest.mark.multinode

JUNK = keys.ROOT + "junk-test"  # in the schedulers' watch range (before stats/); not in their view
CTL = os.path.join(os.path.dirname(sys.executable), "computectl")


def _log(node: MultiNode, name: str) -> str:
    with open(node.plan.log(name), errors="replace") as f:
        return f.read()


def _compact_to_head(node: MultiNode, stop: threading.Event, done: list[int]) -> None:
    """Compact etcd's whole history every 0.2 s: no watcher can resume from the past."""
    with node.store() as store:
        while not stop.wait(0.2):
            try:
                revision = store.status().revision
                if store.compact(revision):
                    done.append(revision)
            except StoreError:
                continue  # etcd busy: next time


def _slow_watchers(node: MultiNode) -> float:
    """etcd's own count of watchers it has stopped sending to (unsynced or victims)."""
    text = node.cluster.etcd_http(node.plan.etcd_endpoint, "/metrics", timeout=10).decode()
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_slow_watcher_total "):
            return float(line.split()[1])
    raise AssertionError("etcd reports no etcd_debugging_mvcc_slow_watcher_total")


def _strand_watches(node: MultiNode) -> None:
    """Make every scheduler's watch fall behind a compaction, deterministically.

    The schedulers are frozen while changes go past their watches until etcd
    counts both watchers as slow (their connections and etcd's per-watcher
    buffer are full, so etcd has stopped sending to them). History is then
    compacted past everything they have seen, so when they thaw etcd can only
    tell them "compacted": they must re-read.
    """
    pids = [node.cluster.pids[f"scheduler-{i + 1}"] for i in range(len(node.stubs))]
    blob = os.urandom(64 * 1024)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        with node.store() as store:
            for n in range(1, 4001):  # ~250 MB at most; about 40 MB suffice here
                store.put(JUNK, blob)
                if n % 50 == 0 and _slow_watchers(node) >= len(pids):
                    break
            else:
                pytest.fail("etcd kept sending to frozen schedulers")
            store.compact(store.status().revision)
            store.delete(JUNK)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_schedulers_and_agents_recover_from_compaction_under_churn(make_cluster):
    node = make_cluster(hosts=3, schedulers=2)
    stop, compactions = threading.Event(), []
    compactor = threading.Thread(target=_compact_to_head, args=(node, stop, compactions))
    compactor.start()
    try:
        _strand_watches(node)
        for name in ("scheduler-1", "scheduler-2"):
            wait_for(
                f"{name} to meet the compaction and re-read",
                lambda n=name: "watch ended (revision compacted" in _log(node, n),
                60,
            )
        churn_rounds(node, rounds=2, evacuate_in=1)
    finally:
        stop.set()
        compactor.join()
    assert len(compactions) > 10, compactions
    for name in ("scheduler-1", "scheduler-2"):
        assert _log(node, name).count("cache synced") >= 2, processes.tail(node.plan.log(name))


def test_nospace_is_surfaced_and_the_cluster_works_again_once_cleared(make_cluster):
    node = make_cluster(hosts=1, etcd_quota_mb=8)
    host = node.hosts[0].host_id
    with node.store() as store:
        blob = os.urandom(512 * 1024)
        for _ in range(100):  # 8 MiB of history, at most: etcd raises NOSPACE well before
            try:
                store.put(JUNK, blob)
            except StoreFull:
                break
        else:
            pytest.fail("etcd took 50 MiB under an 8 MiB quota")

        # Surfaced: in host list (API and CLI), in the scheduler's and the agent's logs,
        # and in what a refused create says.
        alarms = wait_for(
            "the alarm in host list",
            lambda: node.stub.ListHosts(_hosts(), timeout=10).store_alarms,
            30,
        )
        assert all(a.startswith("NOSPACE on member ") for a in alarms), alarms
        shown = subprocess.run(
            [CTL, "--scheduler", node.plan.scheduler_addresses[0], "host", "list"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "WARNING: etcd alarm NOSPACE" in shown.stderr and host in shown.stdout
        with pytest.raises(grpc.RpcError) as refused:
            node.create("while-full")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "NOSPACE" in refused.value.details()
        wait_for("the scheduler's log", lambda: "etcd alarm raised: NOSPACE" in
                 _log(node, "scheduler-1"), 30)  # fmt: skip
        wait_for("the agent's log", lambda: "NOSPACE" in _log(node, f"agent-{host}"), 30)

        # The operator's steps (docs/operations.md, "etcd space").
        store.delete(JUNK)
        store.compact(store.status().revision)
        store.defragment()
        assert store.disarm_alarms() >= 1

    wait_for("no alarm", lambda: not node.stub.ListHosts(_hosts(), timeout=10).store_alarms, 30)
    node.wait_all_up(timeout=60)
    churn = Churn(node)
    (server,) = churn.create("after", 1)
    churn.delete(server.instance.spec.uuid)
    with node.store() as store:
        churn.assert_clean(store, "after the alarm was cleared")
    wait_for("the scheduler's log", lambda: "etcd alarms cleared" in _log(node, "scheduler-1"), 30)


def _hosts():
    from computed.api import compute_pb2

    return compute_pb2.ListHostsRequest()
