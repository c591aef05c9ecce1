"""Everything a server can leave behind on a dev cluster, looked for in one place.

The churn test and the soak benchmark ask one question after each round:
given the servers that should exist now, is anything else still there? Every
kind of leftover is one small function below, listed in `KINDS`, so a new
kind (or a new key layout) is one edit here:

- VMM processes (one per running server, on its host, none for the rest) and
  their helper threads (`kvm-pit/<pid>`, `vhost-<pid>`) after the VMM ended;
- taps, cgroups, instance and jail directories on each host;
- etcd: instance records (and none DELETED), instance stats (only for running
  servers), fixed IPs, claims, server-group members, and any key or value
  anywhere under /computed/ that still names a server that is gone;
- the scheduler's view, and names: a gone server's names no longer resolve.

etcd prefixes come from computed/store/keys.py only (`_INSTANCE_PREFIXES`,
`_STATS_PREFIXES`); a whole-keyspace scan for deleted uuids backs them up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterable

import grpc
import psutil

from computed.api import compute_pb2, types_pb2
from computed.devcluster import processes
from computed.devcluster.cluster import cgroup_parent
from computed.devcluster.plan import ClusterPlan
from computed.store import keys
from computed.store.client import Entry, Store
from computed.store.records import AddressRecord, AllocationRecord, ServerGroupRecord
from computed.taps import tap_name

_UUID_ARG = re.compile(r"-uuid\s+([0-9a-f-]{36})")
_HELPER = re.compile(r"^(?:kvm-pit/|vhost-)(\d+)$")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Where instance records and instance stats live; whatever keys.py names today.
_INSTANCE_PREFIXES = (keys.INSTANCES, keys.REPORTS)  # records, and the agents' reports
_STATS_PREFIXES = (keys.STATS,)  # /computed/stats/<host>/instances/<uuid> (and each host's)
# What a deleted server leaves on purpose, for `server event list` (about a day, on a lease).
_RETAINED = (keys.ACTIONS, keys.DELETED_SERVERS)


@dataclasses.dataclass(frozen=True)
class Wanted:
    """What should exist: servers by uuid (running ones have a VMM), and what must not."""

    servers: dict[str, compute_pb2.Server]  # uuid -> the server as last seen
    gone: dict[str, compute_pb2.Server]  # deleted servers, as last seen before their delete
    ended_pids: frozenset[int] = frozenset()  # VMMs that ended (stop, hard reboot, delete)

    def running(self) -> dict[str, str]:
        """uuid -> host of every server that should have a VMM now (its record has a pid)."""
        return {u: s.instance.host for u, s in self.servers.items() if s.instance.pid > 0}

    def on(self, host_id: str) -> set[str]:
        return {u for u, s in self.servers.items() if s.instance.host == host_id}


@dataclasses.dataclass
class Cluster:
    """The handles the checks need: the plan, a scheduler stub per scheduler, etcd."""

    plan: ClusterPlan
    stubs: list
    store: Store


Check = Callable[[Cluster, Wanted], list[str]]


# --- processes and threads ------------------------------------------------------------
def vmm_processes(cluster: Cluster) -> dict[int, str]:
    """pid -> uuid of every VMM of the cluster (found by its mark, as `down` finds them)."""
    found = {}
    for pid in processes.marked(cluster.plan.state_dir):
        try:
            title = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        match = _UUID_ARG.search(title)
        if match:
            found[pid] = match.group(1)
    return found


def vmms(cluster: Cluster, wanted: Wanted) -> list[str]:
    running = wanted.running()
    seen: dict[str, list[int]] = {}
    for pid, uuid in vmm_processes(cluster).items():
        seen.setdefault(uuid, []).append(pid)
    problems = [f"VMM pid {p} of {_who(wanted, u)}" for u, pids in seen.items()
                if u not in running for p in pids]  # fmt: skip
    problems += [f"{len(pids)} VMMs for {_who(wanted, u)}: {pids}"
                 for u, pids in seen.items() if u in running and len(pids) > 1]  # fmt: skip
    problems += [f"no VMM for running {_who(wanted, u)}" for u in running if u not in seen]
    return problems


def helper_threads(cluster: Cluster, wanted: Wanted) -> list[str]:
    """Kernel or VMM threads named after a VMM that ended."""
    if not wanted.ended_pids:
        return []
    found = []
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        match = _HELPER.match(name)
        if not match:
            continue
        owner = int(match.group(1))
        # A live owner means the pid was reused (a VMM still running is `vmms`' business).
        if owner in wanted.ended_pids and not processes.alive(owner):
            found.append(f"thread {name} (pid {proc.pid}) outlived its VMM")
    return found


# --- host resources ---------------------------------------------------------------------
def taps(cluster: Cluster, wanted: Wanted) -> list[str]:
    problems = []
    for host in cluster.plan.hosts:
        allowed = {tap_name(u) for u in wanted.on(host.host_id)}
        done = subprocess.run(["ip", "-n", host.netns, "-json", "link", "show"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            problems.append(f"{host.host_id}: cannot list links: {done.stderr.strip()}")
            continue
        for link in json.loads(done.stdout or "[]"):
            name = link["ifname"]
            if name.startswith("tap") and name not in allowed:
                problems.append(f"tap {name} on {host.host_id}")
    return problems


def cgroups(cluster: Cluster, wanted: Wanted) -> list[str]:
    from agent.cgroups import InstanceCgroups  # the agent's own reading of its layout

    problems = []
    for host in cluster.plan.hosts:
        allowed = wanted.on(host.host_id)
        for uuid in InstanceCgroups(cgroup_parent(host)).instances() - allowed:
            problems.append(f"cgroup of {_who(wanted, uuid)} on {host.host_id}")
    return problems


def instance_dirs(cluster: Cluster, wanted: Wanted) -> list[str]:
    """Instance directories, with the jail inside each."""
    problems = []
    for host in cluster.plan.hosts:
        base = os.path.join(host.state_dir, "instances")
        allowed = wanted.on(host.host_id)
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            continue
        for name in sorted(set(names) - allowed):
            jail = " (with its jail)" if os.path.isdir(os.path.join(base, name, "jail")) else ""
            problems.append(f"directory {base}/{name}{jail}")
    return problems


# --- etcd -------------------------------------------------------------------------------
def _scan(cluster: Cluster) -> list[Entry]:
    return cluster.store.get_prefix(keys.ROOT)[0]


def _under(entries: Iterable[Entry], prefixes: Iterable[str]) -> list[Entry]:
    prefixes = tuple(prefixes)
    return [e for e in entries if prefixes and e.key.startswith(prefixes)]


def _uuid_of(entry: Entry) -> str:
    return entry.key.rstrip("/").rsplit("/", 1)[-1]


def etcd_keys(cluster: Cluster, wanted: Wanted) -> list[str]:
    entries = _scan(cluster)
    problems = []
    for e in _under(entries, _INSTANCE_PREFIXES):
        uuid = _uuid_of(e)
        if not _UUID.fullmatch(uuid):
            continue
        if uuid not in wanted.servers:
            status = json.loads(e.value).get("status", "?")
            problems.append(f"instance key {e.key} ({status})")
        elif json.loads(e.value).get("status") == "DELETED":
            problems.append(f"instance key {e.key} is DELETED but the server should exist")
    running = wanted.running()
    for e in _under(entries, _STATS_PREFIXES):  # instance stats: keys ending in a uuid
        if _UUID.fullmatch(_uuid_of(e)) and _uuid_of(e) not in running:
            problems.append(f"stats key {e.key} of a server with no VMM")
    for e in _under(entries, [keys.IPS]):
        uuid = AddressRecord.from_json(e.value).uuid
        if uuid not in wanted.servers:
            problems.append(f"address {e.key} held by {_who(wanted, uuid)}")
    for e in _under(entries, [keys.ALLOCATIONS]):
        record = AllocationRecord.from_json(e.value)
        for uuid in record.claims:
            if wanted.servers.get(uuid) is None:
                problems.append(f"claim of {_who(wanted, uuid)} on {record.host_id}")
            elif wanted.servers[uuid].instance.host != record.host_id:
                problems.append(f"claim of {_who(wanted, uuid)} on {record.host_id}, "
                                f"which is not its host")  # fmt: skip
    for e in _under(entries, [keys.SERVER_GROUPS]):
        group = ServerGroupRecord.from_json(e.value)
        for uuid in group.members:
            if uuid not in wanted.servers:
                problems.append(f"server group {group.name} member {_who(wanted, uuid)}")
    gone = set(wanted.gone) - set(wanted.servers)
    for e in entries:  # whatever the layout: nothing may name a server that is gone ...
        if e.key.startswith(_RETAINED) and e.lease:
            continue  # ... but its action log, kept on a retention lease (bounded) by design
        named = set(_UUID.findall(e.key)) | set(_UUID.findall(e.value.decode(errors="replace")))
        for uuid in sorted(named & gone):
            problems.append(f"key {e.key} still names deleted {_who(wanted, uuid)}")
    return sorted(set(problems))


# --- the scheduler's view and names -----------------------------------------------------
def scheduler_views(cluster: Cluster, wanted: Wanted) -> list[str]:
    problems = []
    for i, stub in enumerate(cluster.stubs):
        listed = stub.ListServers(compute_pb2.ListServersRequest(), timeout=10).servers
        shown = {s.instance.spec.uuid for s in listed}
        problems += [f"scheduler-{i + 1} lists {_who(wanted, u)}"
                     for u in shown - set(wanted.servers)]  # fmt: skip
        problems += [f"scheduler-{i + 1} does not list {_who(wanted, u)}"
                     for u in set(wanted.servers) - shown]  # fmt: skip
    return problems


def names(cluster: Cluster, wanted: Wanted) -> list[str]:
    """Every name of a gone server that no live server carries must not resolve."""
    live = {n for s in wanted.servers.values() for n in (s.name, s.instance.spec.name)}
    problems = []
    for server in wanted.gone.values():
        for name in {server.name, server.instance.spec.name} - live - {""}:
            try:
                found = cluster.stubs[0].GetServer(
                    compute_pb2.ServerRef(name_or_id=name), timeout=10
                )
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            state = types_pb2.InstanceStatus.Name(found.instance.status)
            problems.append(f"name {name} still resolves ({state})")
    return problems


KINDS: dict[str, Check] = {
    "VMM processes": vmms,
    "helper threads": helper_threads,
    "taps": taps,
    "cgroups": cgroups,
    "instance and jail directories": instance_dirs,
    "etcd keys": etcd_keys,
    "scheduler view": scheduler_views,
    "names": names,
}


def find(cluster: Cluster, wanted: Wanted) -> list[str]:
    """Every leftover of every kind, as lines a person can act on (empty: clean)."""
    found = []
    for kind, check in KINDS.items():
        found += [f"{kind}: {line}" for line in check(cluster, wanted)]
    return found


def _who(wanted: Wanted, uuid: str) -> str:
    server = wanted.servers.get(uuid) or wanted.gone.get(uuid)
    return f"{server.name or server.instance.spec.name} ({uuid})" if server else uuid
