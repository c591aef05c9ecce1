"""The scheduler's view of the cluster: kept current by an etcd watch, not re-read per request.

One read of the keys it caches at revision R, then a watch from R + 1 applies
every change in order. Both cover one key range, [keys.WATCHED_START,
keys.WATCHED_END): every prefix the view caches, and none of the stats that
each agent rewrites every interval (those are read on demand by `server
show` and `host show`), so a scheduler's watch traffic grows with changes of
state, not with the number of instances times the stats rate. If the watch ends (etcd unreachable,
history compacted) the cache re-reads and watches again; until that
succeeds `synced` is False and decisions wait rather than use stale data.
Claims never trust the cache alone: they re-check the allocation records
inside their transaction (scheduler/claims.py). The view itself, and how
one etcd event changes it, is scheduler/cluster_view.py: pure, so the
placement core reads it without this module's etcd client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from computed.store import keys
from computed.store.client import PrefixWatch, Store, WatchEvent
from computed.store.errors import StoreError
from computed.store.records import AllocationRecord
from scheduler import metrics
from scheduler.cluster_view import ClusterView

log = logging.getLogger("computed.scheduler.cache")
_RESYNC_DELAY = 0.5


class HostCache:
    def __init__(self, store: Store, on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.view = ClusterView()
        self.lock = threading.RLock()
        self.synced = threading.Event()
        self.on_change = on_change
        self._watch: PrefixWatch | None = None
        self._stopped = False
        self._wanted = threading.Event()  # set: a (re)sync is needed
        self._resync_thread: threading.Thread | None = None

    def start(self) -> None:
        self._resync_thread = threading.Thread(
            target=self._resync_loop, name="cache-resync", daemon=True
        )
        self._wanted.set()
        self._resync_thread.start()

    def close(self) -> None:
        self._stopped = True
        if self._watch is not None:
            self._watch.cancel()
        if self._resync_thread is not None:
            self._wanted.set()
            self._resync_thread.join(timeout=2)

    def note_claim(self, allocations: dict[str, AllocationRecord], revision: int) -> None:
        """Our own committed claim, applied now rather than when its watch event arrives,
        so the next decision does not start from a view we already know is stale."""
        with self.lock:
            for host_id, record in allocations.items():
                key = keys.allocation(host_id)
                if self.view.revisions.get(key, 0) < revision:
                    self.view.allocations[host_id] = record
                    self.view.revisions[key] = revision
                    self.view.dirty.add(host_id)

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    def _resync_loop(self) -> None:
        while not self._stopped:
            self._wanted.wait()
            if self._stopped:
                return
            try:
                self._resync()
                self._wanted.clear()
            except StoreError as e:
                log.warning("cache resync failed (%s); retrying", e)
                time.sleep(_RESYNC_DELAY)

    def _resync(self) -> None:
        entries, revision = self.store.get_range(keys.WATCHED_START, keys.WATCHED_END)
        fresh = ClusterView(revision=revision)
        for entry in entries:
            fresh.apply(entry.key, entry.value, entry.mod_revision)
        with self.lock:
            self.view = fresh
        self._watch = self.store.watch_range(
            keys.WATCHED_START,
            keys.WATCHED_END,
            self._on_events,
            self._on_watch_error,
            start_revision=revision + 1,
        )
        self.synced.set()
        log.info("cache synced at revision %d: %d hosts", revision, len(fresh.hosts))
        self.on_change()

    def _on_events(self, events: list[WatchEvent], revision: int) -> None:
        with self.lock:
            for event in events:
                value = event.value if event.kind == "put" else None
                self.view.apply(event.key, value, event.mod_revision)
            self.view.revision = revision
            metrics.watch_applied(self.view, events)
        self.on_change()

    def _on_watch_error(self, error: StoreError) -> None:
        log.warning("watch ended (%s): resyncing", error)
        self.synced.clear()
        self._wanted.set()
