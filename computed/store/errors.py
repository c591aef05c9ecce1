"""What can go wrong talking to etcd, as the callers need to tell it apart."""

from __future__ import annotations

from computed.errors import Exhausted, Unavailable


class StoreError(Exception):
    """etcd answered, but refused the request; the message says why."""


class StoreUnavailable(StoreError, Unavailable):
    """etcd could not be reached or did not answer in time.

    Callers treat this as transient: keep running, retry later, catch up when
    etcd is back. Nothing about the request is known to have happened, except
    for put_many, where earlier chunks may have been applied.
    """


class PermissionDenied(StoreError):
    """etcd's auth refused the request: this client's user (its certificate's CN) may
    not touch that key. Not transient: retrying with the same certificate fails again."""


class StoreFull(StoreError, Exhausted):
    """etcd's NOSPACE alarm is raised: it refuses every write until an operator clears it.

    Reads still work, so VMs and reads carry on; nothing new can be created, deleted,
    claimed or leased. Not transient: it needs compaction, defragmentation and a
    disarm (docs/operations.md, "etcd space").
    """

    ADVICE = (
        "etcd's NOSPACE alarm is raised and etcd refuses writes: compact, defragment and "
        "disarm it (docs/operations.md, 'etcd space')"
    )


class LeaseNotFound(StoreError):
    """The lease expired or was revoked; grant a new one and re-attach its keys."""


class RecordError(ValueError):
    """A stored value does not decode into the record type asked for."""
