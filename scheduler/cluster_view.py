"""The cached cluster state the scheduler decides on: plain records by id. Pure.

scheduler/host_cache.py fills and replaces it from etcd; scheduler/host_table.py
turns it into the placement table. It lives apart from the cache so the
placement core can read it without importing the etcd client.
"""

from __future__ import annotations

import dataclasses
import logging

from computed.store import keys
from computed.store.errors import RecordError
from computed.store.records import (
    AddressRecord,
    AllocationRecord,
    BuildFailuresRecord,
    HostAdminRecord,
    HostRecord,
    InstanceRecord,
    InstanceReport,
    LivenessRecord,
    Record,
)
from scheduler.instance_reports import merged

log = logging.getLogger("computed.scheduler.cache")

# Which records live under which prefix (the rest of the keyspace is not cached).
_KINDS: dict[str, type[Record]] = {
    keys.HOSTS: HostRecord,
    keys.LIVENESS: LivenessRecord,
    keys.HOST_ADMIN: HostAdminRecord,
    keys.ALLOCATIONS: AllocationRecord,
    keys.INSTANCES: InstanceRecord,
    keys.REPORTS: InstanceReport,
    keys.BUILD_FAILURES: BuildFailuresRecord,
    keys.IPS: AddressRecord,
}
# Every prefix the view is built from: the scheduler's watch must cover them all.
CACHED_PREFIXES = tuple(_KINDS)
# Prefixes whose records are one host's state: a change marks that host dirty.
_HOST_SCOPED = frozenset(
    {keys.HOSTS, keys.LIVENESS, keys.HOST_ADMIN, keys.ALLOCATIONS, keys.BUILD_FAILURES}
)


@dataclasses.dataclass
class ClusterView:
    """Plain dicts by id; replaced wholesale on resync, mutated in place by watch events."""

    hosts: dict[str, HostRecord] = dataclasses.field(default_factory=dict)
    live: dict[str, LivenessRecord] = dataclasses.field(default_factory=dict)
    admin: dict[str, HostAdminRecord] = dataclasses.field(default_factory=dict)
    allocations: dict[str, AllocationRecord] = dataclasses.field(default_factory=dict)
    # Each instance as the API shows it: its record merged with its host's report
    # (scheduler/instance_reports.py). Kept current by apply(); read, never written.
    instances: dict[str, InstanceRecord] = dataclasses.field(default_factory=dict)
    # The scheduler's records as stored, and every host's reports: uuid -> host -> report.
    records: dict[str, InstanceRecord] = dataclasses.field(default_factory=dict)
    reports: dict[str, dict[str, InstanceReport]] = dataclasses.field(default_factory=dict)
    build_failures: dict[str, BuildFailuresRecord] = dataclasses.field(default_factory=dict)
    ips: dict[str, AddressRecord] = dataclasses.field(default_factory=dict)
    revision: int = 0
    # mod_revision of every cached key: a claim compares the revisions its decision saw.
    revisions: dict[str, int] = dataclasses.field(default_factory=dict)
    # Hosts changed since the placement table last synced (scheduler/host_table.py).
    dirty: set[str] = dataclasses.field(default_factory=set)

    def table(self, prefix: str) -> dict:
        return {
            keys.HOSTS: self.hosts,
            keys.LIVENESS: self.live,
            keys.HOST_ADMIN: self.admin,
            keys.ALLOCATIONS: self.allocations,
            keys.INSTANCES: self.records,
            keys.BUILD_FAILURES: self.build_failures,
            keys.IPS: self.ips,
        }[prefix]

    def apply(self, key: str, value: bytes | None, mod_revision: int = 0) -> None:
        """One put (value) or delete (None) under a cached prefix; others are ignored.

        A change older than what the view already holds is dropped: our own claims are
        applied (note_claim) before their watch events arrive, and an event of an
        earlier claim must not roll a host back to the state before it.
        """
        if mod_revision and self.revisions.get(key, 0) > mod_revision:
            return
        if key.startswith(keys.REPORTS):
            self._apply_report(key, value, mod_revision)
            return
        for prefix, kind in _KINDS.items():
            if key.startswith(prefix):
                name = key[len(prefix) :]
                if prefix in _HOST_SCOPED:
                    self.dirty.add(name)
                if value is None:
                    self.table(prefix).pop(name, None)
                    self.revisions.pop(key, None)
                else:
                    try:
                        self.table(prefix)[name] = kind.from_json(value)
                        self.revisions[key] = mod_revision
                    except RecordError as e:
                        log.warning("ignoring malformed %s: %s", key, e)
                if prefix == keys.INSTANCES:
                    self._merge(name)
                return

    def _apply_report(self, key: str, value: bytes | None, mod_revision: int) -> None:
        try:
            host_id, uuid = keys.report_key_ids(key)
            report = None if value is None else InstanceReport.from_json(value)
        except (ValueError, RecordError) as e:  # RecordError is a ValueError too
            log.warning("ignoring malformed %s: %s", key, e)
            return
        by_host = self.reports.setdefault(uuid, {})
        if report is None:
            by_host.pop(host_id, None)
            self.revisions.pop(key, None)
            if not by_host:
                del self.reports[uuid]
        else:
            by_host[host_id] = report
            self.revisions[key] = mod_revision
        self._merge(uuid)

    def _merge(self, uuid: str) -> None:
        """Recompute how the API shows `uuid`; a report without a record shows nothing."""
        record = self.records.get(uuid)
        if record is None:
            self.instances.pop(uuid, None)
        else:
            self.instances[uuid] = merged(record, self.reports.get(uuid, {}))
