"""An instance as the API shows it: the scheduler's record with its host's report. Pure.

The scheduler writes `/computed/instances/<uuid>` (what was decided); the
hosting agent writes `/computed/reports/<host>/<uuid>` (what runs). These
rules say which report counts and what the scheduler must remove with a
record, so that no report outlives the record it described.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from computed import status
from computed.store import keys
from computed.store.ops import Delete, Op
from computed.store.records import InstanceRecord, InstanceReport


def merged(record: InstanceRecord, reports: Mapping[str, InstanceReport]) -> InstanceRecord:
    """`record` with what its current host reports (`reports`: host id -> report).

    Only the report of the host the record names counts: a host the instance
    was moved away from (evacuated, a failed build the scheduler went past)
    may still have an old report that nobody has removed yet, and must not
    speak for the instance. Without a report, the record's own status (the
    scheduler's: BUILD, ACTIVE after the spawn answered, ERROR) stands.
    """
    report = reports.get(record.host) if record.host else None
    if report is None:
        return record
    if report.status == status.BUILD and record.status != status.BUILD:
        # The agent's "spawning" report, seen after the scheduler recorded the spawn's
        # outcome (ACTIVE or ERROR, from the Spawn answer): stale; its next report says
        # what runs. Without this a server just answered ACTIVE would list as BUILD.
        return record
    return dataclasses.replace(
        record,
        status=report.status,
        power_state=report.power_state,
        fault=report.fault,
        pid=report.pid,
        updated_at=max(record.updated_at, report.updated_at),
    )


def removed_with(record: InstanceRecord) -> list[Op]:
    """What a server delete removes, in one transaction: the record, its host's
    report (the host may be down and unable to) and its fixed address."""
    ops: list[Op] = [Delete(keys.instance(record.spec.uuid))]
    ops += report_left_behind(record, "")
    if record.spec.ip:
        ops.append(Delete(keys.ip(record.spec.ip.split("/")[0])))
    return ops


def report_left_behind(record: InstanceRecord, new_host: str) -> list[Op]:
    """The old host's report to remove when the record moves from record.host to
    `new_host` ("" when it is deleted or left without a host): written in the same
    transaction as the move, so that host's agent can never report against the
    new record (its writes compare the record's revision)."""
    if not record.host or record.host == new_host:
        return []
    return [Delete(keys.report(record.host, record.spec.uuid))]
