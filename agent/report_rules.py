"""What the reporter does with one local instance view against etcd's record. Pure.

The instance record has two writers: the scheduler creates it, places it,
evacuates and deletes it; the hosting agent reports what its VMM does. When
the agent's view and etcd's record disagree, these rules say who is right,
so the reporter's compare-and-swap loop only reads, asks, and applies.

The reporter must read the record *before* it asks whether its view was
superseded: the scheduler deletes a record only after this agent's Delete
returned, and that Delete queued the newer (DELETED) view first. Reading
first therefore guarantees that a view read against a deleted record sees
that it was superseded.
"""

from __future__ import annotations

import dataclasses

from computed.status import DELETED
from computed.store.records import InstanceRecord


@dataclasses.dataclass(frozen=True)
class Write:
    """Compare-and-swap `record` onto the key (create it when etcd has none)."""

    record: InstanceRecord


@dataclasses.dataclass(frozen=True)
class Skip:
    """Tell etcd nothing of this view; `reason` says why, for the log."""

    reason: str


@dataclasses.dataclass(frozen=True)
class RemoveLocally:
    """The instance is no longer this host's: delete its VMM here, tell etcd nothing."""

    reason: str


@dataclasses.dataclass(frozen=True)
class RemovalFinished:
    """The local removal has ended: a later spawn of this uuid is a new instance."""


Decision = Write | Skip | RemoveLocally | RemovalFinished


def while_removing(status: str) -> Decision:
    """An instance being removed here is no longer this host's to report, ever.

    Only its DELETED view ends that: the removal is then done, and the uuid is
    free to be spawned here again (as a new instance the scheduler placed).
    """
    if status == DELETED:
        return RemovalFinished()
    return Skip("being removed here")


def reconcile(
    ours: InstanceRecord,
    current: InstanceRecord | None,
    *,
    adopted: bool,
    superseded: bool,
) -> Decision:
    """What to do with `ours` (the agent's view as a record) given etcd's `current`.

    `adopted`: the agent found the instance running at start and has not yet
    written it since. `superseded`: a newer view of the instance is already
    queued, read after `current` (see the module docstring).
    """
    if current is None:
        return _absent(ours, adopted=adopted, superseded=superseded)
    if ours.status == DELETED and current.host != ours.host:
        # A failed build the scheduler moved on from (placed elsewhere, or ERROR
        # with no host): the record is no longer ours to end.
        return Skip("no longer this host's record")
    if current.host not in ("", ours.host):
        # Evacuated while this host was down: it runs elsewhere now, so the copy
        # here must go (as nova-compute cleans up evacuated instances).
        return RemoveLocally(f"was evacuated to {current.host}")
    # The scheduler owns what the user asked for: the agent never changes it.
    return Write(
        dataclasses.replace(
            ours,
            display_name=current.display_name,
            flavor=current.flavor,
            availability_zone=current.availability_zone,
            group=current.group,
        )
    )


def _absent(ours: InstanceRecord, *, adopted: bool, superseded: bool) -> Decision:
    """etcd has no record: it never had one, or the scheduler deleted it."""
    if ours.status == DELETED:
        return Skip("already removed by the scheduler's delete")
    if adopted:
        # Deleted through the API while this agent was away (the scheduler could
        # not reach it): remove it here, as Nova reaps running deleted instances.
        return RemoveLocally("was deleted while this agent was away")
    if superseded:
        # The scheduler deleted it after this agent's Delete queued the newer
        # (DELETED) view; creating the record from this stale view would bring
        # it back, and that DELETED view would then land on it.
        return Skip("superseded, and its record is gone: creating it would resurrect it")
    # No scheduler wrote it (an agent used on its own): the agent's view is all there is.
    return Write(ours)
