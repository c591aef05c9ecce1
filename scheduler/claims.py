"""Atomic resource claims in etcd: no host is ever over-committed, whatever runs at once.

A placement batch is claimed in ONE etcd transaction that compares the
mod_revision of every touched host's allocation record (Placement's
generation; Nomad's optimistic plan apply). The capacity check is made
against those same fresh records, so if another scheduler claimed anything on
one of the hosts in between, the transaction fails and the caller re-reads
and re-decides. `check_claims` is the pure half; `claim` and `release` do I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from computed.capacity import host_capacity
from computed.errors import Exhausted
from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Op, Put
from computed.store.records import AllocationRecord, Claim, HostRecord

_RELEASE_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class Placement:
    uuid: str
    host_id: str
    vcpus: int
    memory_mb: int


@dataclasses.dataclass(frozen=True)
class Claimed:
    allocations: dict[str, AllocationRecord]  # the touched hosts' records as written
    revision: int


class Overcommit(Exhausted):
    """The batch does not fit any more (the host state the decision used was stale)."""


def check_claims(
    placements: Sequence[Placement],
    allocations: Mapping[str, AllocationRecord],
    hosts: Mapping[str, HostRecord],
) -> dict[str, AllocationRecord]:
    """The allocation records after the batch; Overcommit if any host would exceed its
    usable capacity (physical size times allocation ratio). Pure."""
    after = dict(allocations)
    for p in placements:
        host = hosts.get(p.host_id)
        if host is None:
            raise Overcommit(f"host {p.host_id} is not known")
        cap = host_capacity(host)
        current = after.get(p.host_id, AllocationRecord(p.host_id))
        updated = current.with_claim(p.uuid, Claim(p.vcpus, p.memory_mb))
        if updated.vcpus > cap.usable_vcpus or updated.memory_mb > cap.usable_memory_mb:
            raise Overcommit(
                f"host {p.host_id}: {updated.vcpus}/{cap.usable_vcpus} vCPUs, "
                f"{updated.memory_mb}/{cap.usable_memory_mb} MiB after the claim"
            )
        after[p.host_id] = updated
    return after


def claim(
    store: Store,
    placements: Sequence[Placement],
    hosts: Mapping[str, HostRecord],
    extra: Sequence[Op] = (),
    seen: Mapping[str, tuple[AllocationRecord | None, int]] | None = None,
    also_expect: Mapping[str, int] | None = None,
) -> Claimed | None:
    """Claim the batch (and write `extra`, e.g. the instance records) atomically.

    `seen`: the allocation records and mod_revisions the decision was made on
    (host id → (record or None, revision or 0)); the transaction compares those,
    so a decision on a stale view can never commit. Without it the records are
    read now. `also_expect`: more keys whose revisions must not have moved
    (e.g. the server group the decision honoured).

    Returns the committed allocation records and the revision they were written at
    (for the caller's own view), or None on a conflict: refresh the view and decide
    again. Overcommit when even the records compared show the batch cannot fit.
    """
    involved = sorted({p.host_id for p in placements})
    current: dict[str, AllocationRecord] = {}
    expect: dict[str, int] = dict(also_expect or {})
    for host_id in involved:
        key = keys.allocation(host_id)
        if seen is not None and host_id in seen:
            record, revision = seen[host_id]
        else:
            found = store.get_record(key, AllocationRecord)
            record, revision = found if found else (None, 0)
        current[host_id] = record or AllocationRecord(host_id)
        expect[key] = revision
    after = check_claims(placements, current, hosts)
    ops: list[Op] = [Put(keys.allocation(h), after[h], lease=0) for h in involved]
    revision = store.transaction(expect, [*ops, *extra])
    if revision is None:
        return None
    return Claimed({h: after[h] for h in involved}, revision)


def release_ops(store: Store, host_id: str, uuid: str) -> tuple[list[Op], dict[str, int]]:
    """The write that removes one instance's claim from its host, and the revision it
    must be applied at, for a caller's own transaction (([], {}) if there is none)."""
    key = keys.allocation(host_id)
    found = store.get_record(key, AllocationRecord)
    if found is None or uuid not in found[0].claims:
        return [], {}
    record, revision = found
    return [Put(key, record.without(uuid), lease=0)], {key: revision}


def release(store: Store, host_id: str, uuid: str) -> None:
    """Remove one instance's claim from its host (idempotent), retrying on contention."""
    for _ in range(_RELEASE_ATTEMPTS):
        ops, expect = release_ops(store, host_id, uuid)
        if not ops or store.transaction(expect, ops):
            return
    raise Overcommit(f"could not release {uuid} on {host_id}: too much contention")
