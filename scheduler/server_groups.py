"""Server-group membership: compare-and-swap updates of a group's member list.

A group's members decide where the next member may go ((anti-)affinity), so
every change to the list is a transaction on the group's revision: two
creates into one group, or a create and a delete, never lose each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Put
from computed.store.records import ServerGroupRecord
from scheduler.catalog import Catalog

_ROUNDS = 10


def with_members(catalog: Catalog, group: ServerGroupRecord, uuids: Sequence[str]) -> Put:
    """The write that adds `uuids` to the group as it is now (for the claim's transaction,
    which compares the group's revision)."""
    record, _ = catalog.group(group.id)
    joined = dataclasses.replace(record, members=tuple(record.members) + tuple(uuids))
    return Put(keys.server_group(record.id), joined, lease=0)


def leave(store: Store, catalog: Catalog, name_or_id: str, uuid: str) -> None:
    """A deleted member no longer counts for its group's (anti-)affinity."""
    for _ in range(_ROUNDS):
        try:
            group, revision = catalog.group(name_or_id)
        except LookupError:
            return  # the group itself is gone
        if uuid not in group.members:
            return
        left = dataclasses.replace(group, members=tuple(m for m in group.members if m != uuid))
        key = keys.server_group(group.id)
        if store.transaction({key: revision}, [Put(key, left, lease=0)]) is not None:
            return
