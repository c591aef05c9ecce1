"""LeaseKeeper: one lease kept alive from a background thread, replaced when lost.

An agent's liveness key and stats hang on its lease, so a stopped agent's
host goes down within the TTL and its stats vanish. The keeper must
survive etcd outages: while etcd is unreachable it retries; if the lease
expired meanwhile (outage longer than the TTL), it grants a new one and
calls `on_new_lease` so the owner re-attaches its keys (the old ones are
gone with the old lease). A restarted etcd keeps unexpired leases and
extends them, so a short outage needs no new lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from computed.store.client import Store
from computed.store.errors import LeaseNotFound, StoreUnavailable

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.5  # while etcd is unreachable


class LeaseKeeper:
    """Holds a lease of `ttl` seconds; refreshes it every ttl/3 (as etcd's own clients do)."""

    def __init__(
        self,
        store: Store,
        ttl: int,
        on_new_lease: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._on_new_lease = on_new_lease
        self._lease_id: int | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-lease-keeper", daemon=True)
        self._thread.start()

    @property
    def lease_id(self) -> int | None:
        """The lease now held, or None while there is none (etcd unreachable at start)."""
        return self._lease_id if self._ready.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until a lease is held and on_new_lease has run for it."""
        self._ready.wait(timeout)
        return self.lease_id

    def close(self, revoke: bool = True) -> None:
        """Stop refreshing; with `revoke`, delete the lease's keys now instead of at expiry."""
        self._stop.set()
        self._thread.join()
        lease_id, self._lease_id = self._lease_id, None
        self._ready.clear()
        if revoke and lease_id is not None:
            try:
                self.store.revoke_lease(lease_id)
            except StoreUnavailable:
                log.warning("etcd unreachable: lease %x will expire on its own", lease_id)

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            delay = self.ttl / 3
            try:
                self._tick()
            except StoreUnavailable as e:
                log.info("lease keeper: %s; retrying", e)
                delay = min(delay, RETRY_INTERVAL)
            except LeaseNotFound:
                log.warning("lease %x expired; granting a new one", self._lease_id or 0)
                self._ready.clear()
                self._lease_id = None
                delay = 0.0
            except Exception:  # on_new_lease may raise anything; keep going
                log.exception("lease keeper: unexpected error; retrying")
                delay = min(delay, RETRY_INTERVAL)

    def _tick(self) -> None:
        if self._lease_id is None:
            self._lease_id = self.store.grant_lease(self.ttl)
        else:
            self.store.refresh_lease(self._lease_id)
        if not self._ready.is_set():
            if self._on_new_lease is not None:
                self._on_new_lease(self._lease_id)
            self._ready.set()
