"""Evacuation: rebuild a down host's instances elsewhere, keeping uuid and name (Nova's
`host evacuate`). Each instance gets a new claim before its old one is released, so
capacity is never counted on both hosts at once for someone else's decision."""

from __future__ import annotations

from computed.errors import Refused
from computed.store.records import InstanceRecord
from scheduler.build import AgentClients, build
from scheduler.claims import release
from scheduler.placement import Request
from scheduler.placer import Placer


def evacuate_one(placer: Placer, agents: AgentClients, record: InstanceRecord) -> InstanceRecord:
    spec = record.spec
    group = placer.catalog.group(record.group)[0] if record.group else None
    ask = Request(
        vcpus=spec.vcpus,
        memory_mb=spec.memory_mb,
        group=group,
        availability_zone=record.availability_zone or None,
    )
    decision = placer.move(record, ask)  # the source is down: never chosen
    if decision is None:
        raise Refused(f"could not claim a new host for {spec.name}: too much contention")
    release(placer.store, record.host, spec.uuid)
    candidates = [decision.host, *decision.alternates]
    return build(placer.store, agents, spec, candidates, placer.cache.view.hosts).record
