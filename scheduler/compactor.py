"""The scheduler's etcd upkeep: compaction rounds and watching for etcd's alarms.

The policy (when, how far, and why that keeps watches resumable) is
computed/store/maintenance.py; this module does its I/O on a thread of its
own. It also asks etcd for raised alarms every check, so a NOSPACE alarm
shows in the scheduler's log as soon as etcd raises it (and is repeated while
it lasts), not only as refused writes. Under NOSPACE a round cannot claim its
mark (a put), so it compacts without the claim: compaction is allowed in that
state, is idempotent, and is the first step of the operator's recovery.
"""

from __future__ import annotations

import logging
import threading
import time

from computed.store.client import Store
from computed.store.errors import RecordError, StoreError, StoreFull, StoreUnavailable
from computed.store.maintenance import (
    COMPACTION_MARK,
    DEFAULT_RETENTION,
    CompactionMark,
    check_interval,
    next_round,
)
from computed.store.ops import Put

log = logging.getLogger("computed.scheduler.compactor")
_ALARM_REPEAT = 60.0  # seconds between log lines while an alarm stays raised
_ALARM_CHECK = 5.0  # seconds between asking etcd for alarms (one small RPC)


class Compactor:
    def __init__(self, store: Store, retention: float = DEFAULT_RETENTION) -> None:
        self.store = store
        self.retention = retention
        self.interval = check_interval(retention)
        self.alarms: list[str] = []  # as of the last check
        self.compacted_to = 0  # the last revision this scheduler compacted to
        self._alarm_logged_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-compactor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        next_round_check = time.monotonic() + self.interval
        while not self._stop.wait(min(_ALARM_CHECK, self.interval)):
            try:
                self.check_alarms()
                if time.monotonic() >= next_round_check:
                    next_round_check = time.monotonic() + self.interval
                    self.run_round(time.time())
            except StoreUnavailable as e:  # the host cache already says etcd is away
                log.debug("etcd upkeep: %s", e)
            except StoreError as e:
                log.warning("etcd upkeep: %s", e)
            except Exception:
                log.exception("etcd upkeep failed")

    def check_alarms(self) -> list[str]:
        """Ask etcd for raised alarms; log them when they appear, every minute while they
        last, and once when they are cleared."""
        alarms = self.store.alarms()
        now = time.monotonic()
        if alarms and (alarms != self.alarms or now - self._alarm_logged_at >= _ALARM_REPEAT):
            self._alarm_logged_at = now
            log.error(
                "etcd alarm raised: %s: etcd refuses writes (no create, delete, claim or "
                "lease) until an operator compacts, defragments and disarms it "
                "(docs/operations.md, 'etcd space')",
                "; ".join(alarms),
            )
        elif self.alarms and not alarms:
            log.info("etcd alarms cleared: writes accepted again")
        self.alarms = alarms
        return alarms

    def run_round(self, now: float) -> int | None:
        """Claim and run a compaction round if one is due; the revision compacted to, if any."""
        entry = self.store.get(COMPACTION_MARK)
        last, mark_revision = None, 0
        if entry is not None:
            mark_revision = entry.mod_revision
            try:
                last = CompactionMark.from_json(entry.value)
            except RecordError as e:
                log.warning("replacing unreadable %s: %s", COMPACTION_MARK, e)
        head = self.store.status().revision
        due = next_round(last, head, now, self.retention)
        if due is None:
            return None
        try:
            claimed = self.store.transaction({COMPACTION_MARK: mark_revision},
                                             [Put(COMPACTION_MARK, due.mark)])  # fmt: skip
        except StoreFull:
            claimed = None
            if due.compact_to is not None:  # no claim possible: compact anyway (idempotent)
                self._compact(due.compact_to)
                return due.compact_to
        if claimed is None or due.compact_to is None:
            return None  # another scheduler took this round, or it was the first
        return due.compact_to if self._compact(due.compact_to) else None

    def _compact(self, revision: int) -> bool:
        done = self.store.compact(revision)
        if done:
            self.compacted_to = revision
            log.info("compacted etcd history up to revision %d", revision)
        return done
