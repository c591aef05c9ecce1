"""What the reporter does with one local instance view against the scheduler's record. Pure.

The scheduler alone writes an instance's record (`/computed/instances/<uuid>`:
spec, host, build outcome); this agent alone writes its report of it
(`/computed/reports/<this host>/<uuid>`: status, power state, fault, pid).
These rules read the record and say whether to write the report, delete it,
leave etcd alone, or remove the instance here, so the reporter only reads,
asks and applies.

A report is written in a transaction that compares the record's mod_revision
with the one these rules decided on. The scheduler deletes or moves a record
in one transaction with this host's report, so a report decided before that
can no longer land after it: a late report never outlives the delete.

The reporter must read the record *before* it asks whether its view was
superseded: the scheduler deletes a record only after this agent's Delete
returned, and that Delete queued the newer (DELETED) view first. Reading
first therefore guarantees that a view read against a deleted record sees
that it was superseded.
"""

from __future__ import annotations

import dataclasses

from computed.status import BUILD, DELETED
from computed.store.records import InstanceRecord, InstanceReport


@dataclasses.dataclass(frozen=True)
class Write:
    """Put `report` under this host's prefix, if the record is still as it was read."""

    report: InstanceReport


@dataclasses.dataclass(frozen=True)
class DeleteReport:
    """The instance is gone from this host: remove this host's report of it (idempotent)."""


@dataclasses.dataclass(frozen=True)
class Skip:
    """Tell etcd nothing of this view; `reason` says why, for the log."""

    reason: str


@dataclasses.dataclass(frozen=True)
class RemoveLocally:
    """The instance is no longer this host's: delete its VMM here, report nothing more."""

    reason: str


@dataclasses.dataclass(frozen=True)
class RemovalFinished:
    """The local removal has ended: drop the report; a later spawn of this uuid is new."""


Decision = Write | DeleteReport | Skip | RemoveLocally | RemovalFinished


def while_removing(status: str) -> Decision:
    """An instance being removed here is no longer this host's to report, ever.

    Only its DELETED view ends that: the removal is then done, and the uuid is
    free to be spawned here again (as a new instance the scheduler placed).
    """
    if status == DELETED:
        return RemovalFinished()
    return Skip("being removed here")


def reconcile(
    ours: InstanceReport,
    host: str,
    current: InstanceRecord | None,
    *,
    adopted: bool,
    superseded: bool,
    placed: bool = False,
    reported: bool = False,
) -> Decision:
    """What to do with `ours` (this host's view as a report) given the scheduler's `current`.

    `host`: this agent's host id. `adopted`: the agent found the instance
    running at start and has not yet reported it since. `superseded`: a newer
    view of the instance is already queued, read after `current` (see the
    module docstring). `placed`: a scheduler placed it (its Spawn said so, or this
    agent has read its record before), so an absent record now means it was deleted.
    `reported`: this host's report of it is in etcd (asked only for an adopted
    instance without a record; a scheduler's delete removes that report with
    the record, so a report still there means no scheduler ever placed it).
    """
    if ours.status == DELETED:
        # Gone from this host, whatever the record says: our report of it goes too.
        # (A failed build the scheduler moved on from, a delete, an evacuated copy.)
        return DeleteReport()
    if current is None:
        return _absent(ours, adopted=adopted and not reported, superseded=superseded, placed=placed)
    if current.host not in ("", host):
        # Evacuated while this host was down: it runs elsewhere now, so the copy
        # here must go (as nova-compute cleans up evacuated instances).
        return RemoveLocally(f"was evacuated to {current.host}")
    if ours.status == BUILD and current.status == BUILD and current.host == host:
        # The record already says it is being built here, and this host has no report
        # of it (a record becomes BUILD on a host only with that host's report gone:
        # a new instance, or a move, removes it in the same transaction). "BUILD" would
        # tell nothing; the outcome (ACTIVE or ERROR) is what gets written.
        return Skip("its record already says it is being built here")
    return Write(ours)


def _absent(ours: InstanceReport, *, adopted: bool, superseded: bool, placed: bool) -> Decision:
    """The scheduler has no record: it never wrote one, or it deleted it."""
    if superseded:
        # The scheduler deleted it after this agent's Delete queued the newer
        # (DELETED) view: reporting this stale view would only leave a report behind.
        return Skip("superseded, and its record is gone")
    if adopted:
        # Deleted through the API while this agent was away (the scheduler could
        # not reach it, and removed this host's report with the record): remove it
        # here, as Nova reaps running deleted instances.
        return RemoveLocally("was deleted while this agent was away")
    if placed:
        # Deleted through the API while this host was cut off from etcd and seen
        # down (no Delete reached it): the same, without a restart in between.
        return RemoveLocally("was deleted while this host was cut off")
    # No scheduler placed it (an agent used on its own): the report is all there is,
    # and a scheduler ignores a report without a record.
    return Write(ours)
