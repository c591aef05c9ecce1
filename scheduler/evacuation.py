"""Evacuation: rebuild a down host's instances elsewhere, keeping uuid and name (Nova's
`host evacuate`).

Each instance is moved in one transaction (new claim, old claim released, record
pointed at the new host as BUILD, `evacuated_from` set), then built there. The move
and the build cannot be one transaction, so an evacuation can stop between them
(etcd unreachable, the scheduler killed): the instance then sits in BUILD on its new
host with its claim, running nowhere. Evacuating the old host again finds it by
`evacuated_from` and resumes: the build only. An evacuation is therefore safe to
repeat until it succeeds, and none loses an instance.
"""

from __future__ import annotations

from computed import status
from computed.errors import Refused
from computed.store.records import InstanceRecord
from scheduler.build import AgentClients, build
from scheduler.cluster_view import ClusterView
from scheduler.placement import Request
from scheduler.placer import Placer


def to_evacuate(view: ClusterView, host_id: str) -> list[InstanceRecord]:
    """The instances an evacuation of `host_id` must see to: those still on it, and
    those an earlier evacuation of it moved but did not build. Pure; call with the
    cache's lock held."""
    return [
        r
        for r in view.instances.values()
        if r.status != status.DELETED
        and (r.host == host_id or (r.evacuated_from == host_id and r.status == status.BUILD))
    ]


def evacuate_one(placer: Placer, agents: AgentClients, record: InstanceRecord) -> InstanceRecord:
    spec = record.spec
    if record.status == status.BUILD and record.evacuated_from and record.host:
        candidates = [record.host]  # moved by an evacuation that stopped: build it there
    else:
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
        candidates = [decision.host, *decision.alternates]
    return build(placer.store, agents, spec, candidates, placer.cache.view.hosts).record
