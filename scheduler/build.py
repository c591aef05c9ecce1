"""Starting a placed instance on its host, with retries on alternates (as Nova does).

The first host's claim is made with the whole batch (scheduler/claims.py);
if its agent cannot spawn the instance, that claim is released, the next
alternate is claimed and tried, up to MAX_ATTEMPTS hosts. Every failure's
reason is kept; the instance ends ERROR with all of them if none succeeds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping, Sequence

import grpc

from computed import status
from computed.api import agent_pb2, agent_pb2_grpc, types_pb2
from computed.mtls.credentials import open_channel
from computed.store import keys
from computed.store.client import Store
from computed.store.errors import StoreError
from computed.store.ops import Delete, Op, Put
from computed.store.records import BuildFailuresRecord, HostRecord, InstanceRecord, InstanceSpec
from computed.wire import spec_to_proto
from scheduler import metrics
from scheduler.claims import Overcommit, Placement, claim, release
from scheduler.instance_reports import report_left_behind

log = logging.getLogger("computed.scheduler.build")
MAX_ATTEMPTS = 3
SPAWN_TIMEOUT = 30.0


class AgentClients:
    """One gRPC channel per agent address, reused across requests.

    With credentials (mTLS, the scheduler's own certificate) every channel checks the
    agent's certificate against the cluster CA and the address dialled. `renew` (on
    SIGHUP) makes later calls use new channels with the renewed certificate; the old
    channels are closed only after a grace period, so spawns in flight finish."""

    OLD_CHANNEL_GRACE = 4 * SPAWN_TIMEOUT

    def __init__(self, credentials: grpc.ChannelCredentials | None = None) -> None:
        self._credentials = credentials
        self._stubs: dict[str, agent_pb2_grpc.AgentStub] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def stub(self, address: str) -> agent_pb2_grpc.AgentStub:
        with self._lock:
            if address not in self._stubs:
                self._channels[address] = open_channel(address, self._credentials)
                self._stubs[address] = agent_pb2_grpc.AgentStub(self._channels[address])
            return self._stubs[address]

    def renew(self, credentials: grpc.ChannelCredentials) -> None:
        with self._lock:
            old = list(self._channels.values())
            self._credentials = credentials
            self._channels.clear()
            self._stubs.clear()
        closer = threading.Timer(self.OLD_CHANNEL_GRACE, lambda: [c.close() for c in old])
        closer.daemon = True
        closer.start()

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._stubs.clear()


@dataclasses.dataclass(frozen=True)
class BuildResult:
    record: InstanceRecord
    attempts: tuple[str, ...]  # hosts tried, in order


@metrics.counts_builds
def build(
    store: Store,
    agents: AgentClients,
    spec: InstanceSpec,
    candidates: Sequence[str],
    hosts: Mapping[str, HostRecord],
    claimed: tuple[InstanceRecord, int] | None = None,
) -> BuildResult:
    """Spawn `spec` on the first candidate that takes it; the record says how it went.

    The record must already name candidates[0], as BUILD: the placer's claim (or an
    evacuation's move) wrote it; `claimed`, the record as the claim wrote it and the
    revision it wrote it at, spares the first write a read. The build then owns the
    record only while it still names the host the build last wrote: a spawn can hang
    on a host that stops answering, be overtaken by an evacuation of that host or by
    a delete, and answer long after. Its late write must not point the record back at
    that host (the instance would then run on two hosts with its claim on the other),
    nor bring a deleted instance back; it yields instead (`_superseded`)."""
    faults: list[str] = []
    tried: list[str] = []
    owner = candidates[0]  # the host the record names
    for attempt, host_id in enumerate(candidates[:MAX_ATTEMPTS]):
        placement = Placement(spec.uuid, host_id, spec.vcpus, spec.memory_mb)
        if attempt > 0:
            try:
                if not _claim_retrying(store, placement, hosts):
                    faults.append(f"{host_id}: claim kept conflicting")
                    continue
            except Overcommit as e:
                faults.append(f"{host_id}: {e}")
                continue
        tried.append(host_id)
        metrics.build_attempt(attempt)
        if attempt > 0:  # else the claim wrote it BUILD on this host
            if _record(store, spec, owner, status.BUILD, host_id, "") is None:
                _release_quietly(store, host_id, spec.uuid)
                return _superseded(store, agents, spec, None, tried)
            owner = host_id
        reply, fault = _spawn(agents, hosts[host_id], spec)
        if reply is not None:
            active = (status.ACTIVE, host_id, "", status.RUNNING, reply.pid)
            # A success ends the host's run of failed builds (Nova's failed_builds), in
            # the same transaction: no write of its own (a no-op when there was none).
            reset = Delete(keys.build_failures(host_id))
            known = claimed if attempt == 0 else None
            record = _record(store, spec, owner, *active, also=(reset,), known=known)
            if record is None:
                return _superseded(store, agents, spec, hosts[host_id], tried)
            return BuildResult(record, tuple(tried))
        log.warning("build of %s on %s failed: %s", spec.name, host_id, fault)
        _count_failure(store, host_id, fault)
        faults.append(f"{host_id}: {fault}")
        _release_quietly(store, host_id, spec.uuid)
    reason = "; ".join(faults) or "no host to try"
    fault = f"build failed after {len(tried)} attempt(s): {reason}"
    record = _record(store, spec, owner, status.ERROR, "", fault)
    if record is None:
        return _superseded(store, agents, spec, None, tried)
    return BuildResult(record, tuple(tried))


def _superseded(
    store: Store,
    agents: AgentClients,
    spec: InstanceSpec,
    spawned_on: HostRecord | None,
    tried: list[str],
) -> BuildResult:
    """The record moved on without this build (evacuated elsewhere, or deleted): leave it
    as it is, remove the copy this build started on `spawned_on` (it runs where the
    record no longer names; the agent would also find that out by itself), and answer
    with the record as it now stands."""
    log.warning("build of %s overtaken (evacuated or deleted meanwhile): yielding", spec.name)
    if spawned_on is not None:
        try:
            agents.stub(spawned_on.address).Delete(
                agent_pb2.InstanceRef(uuid=spec.uuid), timeout=10
            )
        except grpc.RpcError as e:
            log.warning("could not remove %s's overtaken copy on %s: %s",
                        spec.name, spawned_on.host_id, e.details())  # fmt: skip
    found = store.get_record(keys.instance(spec.uuid), InstanceRecord)
    if found is None:
        gone = InstanceRecord(spec=spec, status=status.DELETED, updated_at=time.time())
        return BuildResult(gone, tuple(tried))
    return BuildResult(found[0], tuple(tried))


def _claim_retrying(store: Store, placement: Placement, hosts: Mapping[str, HostRecord]) -> bool:
    """Claim one placement, re-reading on conflicts a few times."""
    return any(claim(store, [placement], hosts) for _ in range(5))


def _spawn(
    agents: AgentClients, host: HostRecord, spec: InstanceSpec
) -> tuple[types_pb2.Instance | None, str]:
    """(the agent's reply, "") when the instance is ACTIVE there; (None, why) otherwise."""
    try:
        reply = agents.stub(host.address).Spawn(
            agent_pb2.SpawnRequest(spec=spec_to_proto(spec), placed=True), timeout=SPAWN_TIMEOUT
        )
    except grpc.RpcError as e:
        return None, f"{e.code().name}: {e.details()}"
    if reply.status == types_pb2.STATUS_ACTIVE:
        return reply, ""
    if reply.status == types_pb2.STATUS_ERROR:
        # Leave nothing behind on a host that failed the build.
        try:
            agents.stub(host.address).Delete(agent_pb2.InstanceRef(uuid=spec.uuid), timeout=10)
        except grpc.RpcError:
            pass
    return None, reply.fault or f"instance is {types_pb2.InstanceStatus.Name(reply.status)}"


def _count_failure(store: Store, host_id: str, fault: str) -> None:
    """One more failed build on the host (a success resets the count: `build`).

    Best effort: the count only weighs hosts, so losing an update to etcd
    trouble is logged and never fails the build.
    """
    key = keys.build_failures(host_id)
    try:
        for _ in range(5):
            found = store.get_record(key, BuildFailuresRecord)
            count = found[0].count + 1 if found else 1
            record = BuildFailuresRecord(count, time.time(), fault[:500])
            if store.compare_and_swap(key, record, found[1] if found else 0):
                return
    except StoreError as e:
        log.warning("could not record build result on %s: %s", host_id, e)


def _release_quietly(store: Store, host_id: str, uuid: str) -> None:
    try:
        release(store, host_id, uuid)
    except Exception as e:  # a leaked claim is logged; the next evacuate/cleanup fixes it
        log.error("could not release claim of %s on %s: %s", uuid, host_id, e)


def _record(
    store: Store,
    spec: InstanceSpec,
    owner: str,
    new_status: str,
    host: str,
    fault: str,
    power_state: str = status.NOSTATE,
    pid: int | None = None,
    also: Sequence[Op] = (),
    known: tuple[InstanceRecord, int] | None = None,
) -> InstanceRecord | None:
    """Write the scheduler's view of the instance, if its record still names `owner`
    (the host this build last wrote); None if it does not, or is gone: the build was
    overtaken. CAS: other schedulers write records too. `also`: more writes for the
    same transaction. `known`: the record and its revision, if the caller wrote it
    last (the first try compares that instead of reading).

    Moving it off a host (the next alternate, or ERROR without one) removes that
    host's report in the same transaction, so it can never speak for the new record."""
    key = keys.instance(spec.uuid)
    for _ in range(10):
        found, known = known or store.get_record(key, InstanceRecord), None
        if found is None or found[0].host != owner:
            return None
        base, revision = found
        record = dataclasses.replace(
            base,
            status=new_status,
            host=host,
            fault=fault,
            power_state=power_state,
            pid=pid,
            updated_at=time.time(),
        )
        ops = [Put(key, record, lease=0), *report_left_behind(base, host), *also]
        if store.transaction({key: revision}, ops) is not None:
            return record
    raise RuntimeError(f"instance {spec.uuid}: record kept changing under the build")
