"""The WatchServers stream: each server's current state first, then every change.

Fed by the host cache's change callback: a change wakes every open stream,
which then compares what it last sent with the view, so a burst of etcd
events costs one comparison per stream rather than one message per event.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Iterator

from computed.api import compute_pb2
from computed.store.records import InstanceRecord
from scheduler.host_cache import HostCache

_IDLE_CHECK = 1.0  # seconds between checks that the caller is still there


class ServerWatch:
    def __init__(self, cache: HostCache) -> None:
        self.cache = cache
        self._streams: list[queue.Queue] = []
        self._lock = threading.Lock()

    def notify(self) -> None:
        """The view changed: wake every open stream."""
        with self._lock:
            streams = list(self._streams)
        for q in streams:
            q.put_nowait(True)

    def stream(
        self,
        uuids: Collection[str],
        is_active: Callable[[], bool],
        render: Callable[[InstanceRecord], compute_pb2.Server],
    ) -> Iterator[compute_pb2.ServerEvent]:
        """Events for `uuids` (every server when empty) until `is_active` says the caller left."""
        wanted = set(uuids)
        changes: queue.Queue = queue.Queue()
        with self._lock:
            self._streams.append(changes)
        sent: dict[str, tuple] = {}
        try:
            while is_active():
                with self.cache.lock:
                    current = {
                        u: r
                        for u, r in self.cache.view.instances.items()
                        if not wanted or u in wanted
                    }
                for uid, record in current.items():
                    mark = (record.status, record.power_state, record.host, record.fault)
                    if sent.get(uid) != mark:
                        sent[uid] = mark
                        yield compute_pb2.ServerEvent(server=render(record))
                for uid in [u for u in sent if u not in current]:
                    del sent[uid]
                    yield compute_pb2.ServerEvent(deleted=True, server=compute_pb2.Server())
                try:
                    changes.get(timeout=_IDLE_CHECK)
                except queue.Empty:
                    pass
        finally:
            with self._lock:
                self._streams.remove(changes)
