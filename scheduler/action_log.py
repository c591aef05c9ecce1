"""The instance action log in etcd: record an action, read a log, keep deleted servers' logs
for a while, and log crashes the scheduler sees in the watch.

One key per instance (`/computed/actions/<uuid>`, an ActionLogRecord), appended by
compare-and-swap, so any number of schedulers can write it. The rules (bound,
order, what a crash is, crash de-duplication) are scheduler/actions.py's.

Deleted servers: Nova keeps their actions for ever; here the log moves onto a
lease when the server is deleted (DELETED_RETENTION, one day), so
`server event list` answers for a deleted server until then and the keyspace stays
bounded. One lease serves every deletion in a LEASE_SHARING window, so a mass
delete costs one lease, not one per server.

A failure to write the log never fails the action it describes: it is logged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from computed.api import compute_pb2
from computed.caller import caller_of
from computed.errors import ComputedError, NotFound
from computed.store import keys
from computed.store.client import Store
from computed.store.errors import StoreError
from computed.store.ops import Put
from computed.store.records import ActionEntry, ActionLogRecord, InstanceRecord
from scheduler import actions
from scheduler.lookup import find_instance

log = logging.getLogger("computed.scheduler.actions")
DELETED_RETENTION = 24 * 3600  # seconds a deleted server's log is kept
LEASE_SHARING = 3600  # deletions within this window share one lease
_CAS_ATTEMPTS = 8
_BATCH = 128  # etcd's default --max-txn-ops
_CRASH_SCAN_PERIOD = 0.5  # seconds: crash scans are batched, not run per watch event


def requester(context: grpc.ServicerContext | None) -> str:
    return caller_of(context).identity if context is not None else actions.SYSTEM


class ActionLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lease: tuple[int, float] | None = None  # (id, monotonic time it was granted)
        self._lease_lock = threading.Lock()

    # --- writing --------------------------------------------------------------------
    def add(self, record: InstanceRecord, new: ActionEntry, deleted: bool = False) -> bool:
        """Append `new` to the instance's log; False if it was there already (same ref).
        `deleted`: the server is gone, so the log goes onto the retention lease, with its
        names pointing at it (/computed/deleted-servers/<name>)."""
        key = keys.actions(record.spec.uuid)
        for _ in range(_CAS_ATTEMPTS):
            found = self.store.get_record(key, ActionLogRecord)
            current, revision = found if found is not None else (None, 0)
            updated = actions.appended(current, record, new, record.spec.uuid)
            if updated is None:
                return False
            lease = self._retention_lease() if deleted else None
            ops = [Put(key, updated, lease)]
            if deleted:
                ops += [Put(k, record.spec.uuid, lease) for k in _name_keys(record)]
            if self.store.transaction({key: revision}, ops) is not None:
                return True
        raise StoreError(f"action log of {record.spec.uuid}: too many concurrent writers")

    def add_quietly(self, record: InstanceRecord, new: ActionEntry, deleted: bool = False) -> None:
        try:
            self.add(record, new, deleted)
        except (StoreError, ValueError) as e:
            log.warning("could not log %s of %s: %s", new.action, record.spec.uuid, e)

    @contextlib.contextmanager
    def recording(
        self, record: InstanceRecord, action: str, context: grpc.ServicerContext | None,
        deleted: bool = False, message: str = "",
    ) -> Iterator[None]:  # fmt: skip
        """Log `action` on `record` when the block ends: success, or the error it raised
        (re-raised). What the servicer wraps each lifecycle call in."""
        at = time.time()
        who = requester(context)
        try:
            yield
        except ComputedError as e:
            self.add_quietly(record, actions.entry(action, at, who, str(e), record.host))
            raise
        except grpc.RpcError as e:
            detail = e.details() if hasattr(e, "details") else str(e)
            self.add_quietly(record, actions.entry(action, at, who, detail, record.host))
            raise
        ok = actions.entry(action, at, who, None, record.host, note=message)
        self.add_quietly(record, ok, deleted)

    def built(self, records: list[InstanceRecord], at: float, context) -> None:
        """A create's outcome per instance: success once ACTIVE, else its fault. New logs
        are written in transactions of up to _BATCH (a create of 1000 servers costs 8
        writes, not 2000 round trips); a log that exists already (a crash was logged
        first) is appended to one by one."""
        who = requester(context)
        entries = []
        for r in records:
            error = None if r.status == "ACTIVE" else (r.fault or f"ended in {r.status}")
            entries.append((r, actions.entry("create", at, who, error, r.host)))
        for i in range(0, len(entries), _BATCH):
            chunk = entries[i : i + _BATCH]
            ops = [
                Put(keys.actions(r.spec.uuid), actions.appended(None, r, e, r.spec.uuid))
                for r, e in chunk
            ]
            expect = {keys.actions(r.spec.uuid): 0 for r, _ in chunk}
            try:
                if self.store.transaction(expect, ops) is not None:
                    continue
            except StoreError as e:
                log.warning("could not log %d creates: %s", len(chunk), e)
                continue
            for r, e in chunk:
                self.add_quietly(r, e)

    def evacuated(
        self, before: list[InstanceRecord], after: list[InstanceRecord], at: float, context
    ) -> None:
        who = requester(context)
        for old, new in zip(before, after, strict=False):
            error = None if new.status == "ACTIVE" else (new.fault or f"ended in {new.status}")
            note = f"from {old.evacuated_from or old.host} to {new.host}"  # resumed: moved before
            self.add_quietly(new, actions.entry("evacuate", at, who, error, new.host, note=note))

    def crashed(self, record: InstanceRecord) -> None:
        """The agent reported a VMM that ended without being asked to."""
        ref = actions.crash_ref(record)
        entry = actions.entry("crash", time.time(), actions.SYSTEM, record.fault or "crashed",
                              record.host, ref)  # fmt: skip
        self.add_quietly(record, entry)

    def _retention_lease(self) -> int:
        with self._lease_lock:
            now = time.monotonic()
            if self._lease is None or now - self._lease[1] > LEASE_SHARING:
                lease = self.store.grant_lease(DELETED_RETENTION + LEASE_SHARING)
                self._lease = (lease, now)
            return self._lease[0]

    # --- reading --------------------------------------------------------------------
    def get(self, uuid: str) -> ActionLogRecord | None:
        found = self.store.get_record(keys.actions(uuid), ActionLogRecord)
        return found[0] if found is not None else None

    def find_deleted(self, name_or_id: str) -> ActionLogRecord:
        """A deleted server's log, by uuid, or by name through its deleted-servers key."""
        found = self._get_quietly(name_or_id)
        if found is None:
            uuid = self._deleted_uuid(name_or_id)
            found = self._get_quietly(uuid) if uuid else None
        if found is None:
            raise NotFound(f"server {name_or_id!r} not found")
        return found

    def _get_quietly(self, uuid: str) -> ActionLogRecord | None:
        try:
            return self.get(uuid)
        except ValueError:  # not a valid key segment: there is no such log
            return None

    def _deleted_uuid(self, name: str) -> str | None:
        try:
            entry = self.store.get(keys.deleted_server(name))
        except ValueError:
            return None
        return entry.value.decode() if entry is not None else None


def _name_keys(record: InstanceRecord) -> list[str]:
    """The deleted-servers keys of a record's names (a display name that cannot be a key
    segment is left out: the log is still found by uuid or instance name)."""
    found = []
    for name in dict.fromkeys((record.display_name, record.spec.name)):
        with contextlib.suppress(ValueError):
            if name:
                found.append(keys.deleted_server(name))
    return found


def server_events(cache, action_log: ActionLog, name_or_id: str):
    """ListServerEvents' answer: a live server's log, else a deleted one's (if still kept)."""
    try:
        record = find_instance(cache, name_or_id)
        found = action_log.get(record.spec.uuid) or ActionLogRecord(
            uuid=record.spec.uuid, name=record.display_name or record.spec.name
        )
    except NotFound:
        found = action_log.find_deleted(name_or_id)
    return compute_pb2.ListServerEventsResponse(
        uuid=found.uuid, name=found.name, deleted=found.deleted,
        events=[
            compute_pb2.ServerEventEntry(
                action=e.action, at=e.at, requester=e.requester, result=e.result,
                message=e.message, host=e.host,
            )
            for e in found.entries
        ],
    )  # fmt: skip


def logged(action: str, deleted: bool = False) -> Callable:
    """Wraps a servicer method (inside @maps_errors) whose request names one server, so
    its outcome goes into that server's action log. The servicer has `cache`, `actions`."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def inner(self, request, context):
            try:
                record = find_instance(self.cache, request.name_or_id)
            except ComputedError:
                return method(self, request, context)  # it fails the same way, unlogged
            note = "hard" if getattr(request, "hard", False) else ""
            if action == "reboot" and not note:
                note = "soft"
            with self.actions.recording(record, action, context, deleted, note):
                return method(self, request, context)

        return inner

    return wrap


class CrashWatch:
    """Logs crashes seen in the watch-fed view. `notify` is called on every view change
    (it only sets a flag); a thread scans at most every _CRASH_SCAN_PERIOD."""

    def __init__(self, cache, action_log: ActionLog) -> None:
        self.cache = cache
        self.action_log = action_log
        self._seen: dict[str, str] = {}
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crash-watch", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._changed.set()

    def _run(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()
            try:
                self.scan()
            except Exception:
                log.exception("crash scan failed")
            time.sleep(_CRASH_SCAN_PERIOD)

    def scan(self) -> None:
        with self.cache.lock:
            instances = dict(self.cache.view.instances)
        for record in actions.new_crashes(instances, self._seen):
            self.action_log.crashed(record)
