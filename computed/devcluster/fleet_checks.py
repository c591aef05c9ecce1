"""What must hold after a scale run, whatever faults it met. Pure: records in, problems out.

- No host over capacity: each host's claims fit its vCPUs and RAM times the
  allocation ratios, and its instance count is within the scheduler's limit.
- Every acknowledged create exists exactly once, on one host: its instance
  record names a host, exactly one host's allocation holds its claim (that
  host), and, where the agents were asked, exactly one agent runs it (that host).
- No instance name and no IP address is used twice.

`read_fleet` reads what these need from etcd; the checks themselves take plain
records so the unit tests can hand them any situation.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping

from computed.store import keys
from computed.store.client import Store
from computed.store.records import AllocationRecord, HostRecord, InstanceRecord


@dataclasses.dataclass(frozen=True)
class FleetState:
    hosts: dict[str, HostRecord]
    allocations: dict[str, AllocationRecord]
    instances: dict[str, InstanceRecord]


def read_fleet(store: Store) -> FleetState:
    hosts, _ = store.get_prefix(keys.HOSTS)
    allocations, _ = store.get_prefix(keys.ALLOCATIONS)
    instances, _ = store.get_prefix(keys.INSTANCES)
    return FleetState(
        hosts={e.key.removeprefix(keys.HOSTS): e.record(HostRecord) for e in hosts},
        allocations={
            e.key.removeprefix(keys.ALLOCATIONS): e.record(AllocationRecord) for e in allocations
        },
        instances={e.key.removeprefix(keys.INSTANCES): e.record(InstanceRecord) for e in instances},
    )


def over_capacity(state: FleetState, max_instances_per_host: int) -> list[str]:
    problems = []
    for host_id, alloc in sorted(state.allocations.items()):
        host = state.hosts.get(host_id)
        if host is None:
            if alloc.claims:
                problems.append(f"{host_id}: {len(alloc.claims)} claim(s) on an unknown host")
            continue
        vcpu_limit = host.vcpus * host.cpu_allocation_ratio
        ram_limit = host.memory_mb * host.ram_allocation_ratio
        if alloc.vcpus > vcpu_limit:
            problems.append(f"{host_id}: {alloc.vcpus} vCPUs claimed > {vcpu_limit:g}")
        if alloc.memory_mb > ram_limit:
            problems.append(f"{host_id}: {alloc.memory_mb} MiB claimed > {ram_limit:g}")
        if len(alloc.claims) > max_instances_per_host:
            problems.append(
                f"{host_id}: {len(alloc.claims)} instances > limit {max_instances_per_host}"
            )
    return problems


def lost_or_duplicated(
    state: FleetState,
    acknowledged: Iterable[str],
    running_on: Mapping[str, list[str]] | None = None,
) -> list[str]:
    """`acknowledged`: uuids whose create the API answered with success; `running_on`:
    uuid → hosts whose agent lists it (None: the agents were not asked)."""
    claimed_on: dict[str, list[str]] = {}
    for host_id, alloc in state.allocations.items():
        for uuid in alloc.claims:
            claimed_on.setdefault(uuid, []).append(host_id)
    problems = []
    for uuid in sorted(acknowledged):
        record = state.instances.get(uuid)
        if record is None:
            problems.append(f"{uuid}: acknowledged but has no instance record (lost)")
            continue
        claims = claimed_on.get(uuid, [])
        if claims != [record.host]:
            problems.append(f"{uuid}: record says host {record.host!r}, claims on {claims}")
        if running_on is not None:
            agents = running_on.get(uuid, [])
            if agents != [record.host]:
                problems.append(f"{uuid}: record says host {record.host!r}, runs on {agents}")
    return problems


def reused_names_or_ips(state: FleetState) -> list[str]:
    names = Counter(r.spec.name for r in state.instances.values())
    ips = Counter(r.spec.ip.partition("/")[0] for r in state.instances.values() if r.spec.ip)
    problems = [f"name {n} used by {c} instances" for n, c in names.items() if c > 1]
    problems += [f"IP {ip} used by {c} instances" for ip, c in ips.items() if c > 1]
    return sorted(problems)
