"""End to end: real etcd, two real agents on loopback, a real scheduler process, real VMMs."""

from __future__ import annotations

import time

import grpc
import pytest

from computed.api import compute_pb2
from computed.capacity import host_capacity
from computed.store import keys
from computed.store.client import Store
from computed.store.records import AllocationRecord, HostRecord
from tests.agent_harness import AgentProcess
from tests.scheduler_harness import SchedulerProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(etcd, short_tmp):
    """Hosts h1 and h2, 2 vCPUs x 1.0 and 256 MiB x 1.0 each: room for two m1.small apiece."""
    agents = [
        AgentProcess(
            f"{short_tmp}/{h}",
            etcd.endpoint,
            h,
            "--vcpus",
            "2",
            "--memory-mb",
            "256",
            "--cpu-allocation-ratio",
            "1",
            "--ram-allocation-ratio",
            "1",
        )
        for h in ("h1", "h2")
    ]
    scheduler = SchedulerProcess(etcd.endpoint, short_tmp)
    try:
        for a in agents:
            a.start()
        scheduler.start()
        wait_hosts_up(scheduler, 2)
        yield scheduler, agents, etcd
    finally:
        scheduler.stop()
        for a in agents:
            a.cleanup()


def wait_hosts_up(scheduler, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        hosts = scheduler.stub.ListHosts(compute_pb2.ListHostsRequest()).hosts
        if sum(h.up for h in hosts) >= n:
            return hosts
        if time.monotonic() > deadline:
            raise AssertionError(f"hosts not up: {hosts}")
        time.sleep(0.1)


def create(scheduler, name, count=1, **kw):
    return scheduler.stub.CreateServers(
        compute_pb2.CreateServersRequest(
            name=name,
            flavor=kw.pop("flavor", "m1.small"),
            image=kw.pop("image", "heartbeat"),
            count=count,
            **kw,
        ),
        timeout=60,
    ).servers


def status(server) -> str:
    from computed.api import types_pb2

    return types_pb2.InstanceStatus.Name(server.instance.status).removeprefix("STATUS_")


def test_create_spreads_and_every_verb_works(cluster):
    scheduler, _, _ = cluster
    servers = create(scheduler, "web", count=2)
    assert [status(s) for s in servers] == ["ACTIVE", "ACTIVE"]
    assert {s.instance.host for s in servers} == {"h1", "h2"}, "RAM spread"
    assert [s.name for s in servers] == ["web-1", "web-2"]
    assert all(s.instance.spec.name.startswith("instance-") for s in servers)
    stub = scheduler.stub
    ref = compute_pb2.ServerRef(name_or_id="web-1")
    assert status(stub.PauseServer(ref, timeout=30)) == "PAUSED"
    assert status(stub.ResumeServer(ref, timeout=30)) == "ACTIVE"
    assert status(stub.StopServer(ref, timeout=30)) == "SHUTOFF"
    assert status(stub.StartServer(ref, timeout=30)) == "ACTIVE"
    stub.RebootServer(compute_pb2.RebootServerRequest(name_or_id="web-1", hard=True), timeout=30)
    console = stub.GetConsoleOutput(
        compute_pb2.ConsoleOutputRequest(name_or_id="web-1", lines=50)
    ).output
    assert "heartbeat: 100 Hz" in console

    def sampled_since_the_reboot() -> compute_pb2.Server | None:
        shown = stub.GetServer(ref)
        helpers = [h.name for h in shown.stats.helpers]
        # Its memory too: CI once saw the first sample of the new VMM (its kvm-pit found,
        # 10 ms of CPU) with an RSS of 0, which /proc/<pid>/statm reads while a process
        # has no mm. Not explained yet; a later sample shows the memory.
        new = f"kvm-pit/{shown.instance.pid}" in helpers and shown.stats.memory_rss > 0
        return shown if new else None

    shown = wait_until(sampled_since_the_reboot, what="stats of the rebooted VMM")
    assert shown.instance.pid > 0 and shown.host_status == "UP"
    assert [h.name for h in shown.stats.helpers] == [f"kvm-pit/{shown.instance.pid}"]
    listed = stub.ListServers(compute_pb2.ListServersRequest(host="h1")).servers
    assert len(listed) == 1
    stub.DeleteServer(ref, timeout=30)
    with pytest.raises(grpc.RpcError) as e:
        stub.GetServer(ref)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_count_is_all_or_nothing_and_claims_never_exceed_capacity(cluster):
    scheduler, _, etcd = cluster
    with pytest.raises(grpc.RpcError) as e:
        create(scheduler, "big", count=5)  # room for 4
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "RamFilter" in e.value.details() or "CoreFilter" in e.value.details()
    assert scheduler.stub.ListServers(compute_pb2.ListServersRequest()).servers == []
    servers = create(scheduler, "fit", count=5, min_count=3)
    assert len(servers) == 4 and all(status(s) == "ACTIVE" for s in servers)
    with Store(etcd.endpoint) as s:
        for h in ("h1", "h2"):
            alloc, _ = s.get_record(keys.allocation(h), AllocationRecord)
            host, _ = s.get_record(keys.host(h), HostRecord)
            cap = host_capacity(host)
            assert alloc.vcpus <= cap.usable_vcpus and alloc.memory_mb <= cap.usable_memory_mb


def test_anti_affinity_spreads_and_refuses_when_it_cannot(cluster):
    scheduler, _, _ = cluster
    scheduler.stub.CreateServerGroup(
        compute_pb2.CreateServerGroupRequest(
            name="ha", policy=compute_pb2.GROUP_POLICY_ANTI_AFFINITY
        )
    )
    servers = create(scheduler, "ha", count=2, group="ha", flavor="m1.tiny")
    assert {s.instance.host for s in servers} == {"h1", "h2"}
    with pytest.raises(grpc.RpcError) as e:
        create(scheduler, "ha3", group="ha", flavor="m1.tiny")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "anti-affinity" in e.value.details()
    # A deleted member frees its host for the group.
    scheduler.stub.DeleteServer(
        compute_pb2.ServerRef(name_or_id=servers[0].instance.spec.uuid), timeout=30
    )
    group = scheduler.stub.ListServerGroups(compute_pb2.ListServerGroupsRequest()).groups[0]
    assert list(group.members) == [servers[1].instance.spec.uuid]
    again = create(scheduler, "ha3", group="ha", flavor="m1.tiny")
    assert again[0].instance.host == servers[0].instance.host


def test_bad_requests(cluster):
    scheduler, _, _ = cluster
    for kw, code in [
        (dict(flavor="m9.huge"), grpc.StatusCode.NOT_FOUND),
        (dict(image="windows"), grpc.StatusCode.NOT_FOUND),
        (dict(count=0, min_count=2), grpc.StatusCode.INVALID_ARGUMENT),
        (dict(group="nope"), grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            create(scheduler, "bad", **kw)
        assert e.value.code() == code, kw


def test_two_schedulers_racing_never_overcommit(cluster, short_tmp):
    from concurrent import futures

    first, _, etcd = cluster
    second = SchedulerProcess(etcd.endpoint, short_tmp).start()
    try:

        def one(i):
            stub = (first if i % 2 else second).stub
            try:
                stub.CreateServers(
                    compute_pb2.CreateServersRequest(
                        name=f"race{i}", flavor="m1.tiny", image="heartbeat"
                    ),
                    timeout=60,
                )
                return "placed"
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
                assert "CoreFilter" in e.details()
                return "refused"

        with futures.ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(one, range(12)))
        # 2 hosts x 2 vCPUs (ratio 1): exactly four m1.tiny fit.
        assert outcomes.count("placed") == 4 and outcomes.count("refused") == 8
        with Store(etcd.endpoint) as s:
            for h in ("h1", "h2"):
                alloc, _ = s.get_record(keys.allocation(h), AllocationRecord)
                assert alloc.vcpus == 2
        active = first.stub.ListServers(compute_pb2.ListServersRequest(status="ACTIVE")).servers
        assert len(active) == 4
    finally:
        second.stop()


def test_a_dead_host_is_skipped_and_shows_down(cluster):
    scheduler, agents, _ = cluster
    agents[0].kill()  # h1's agent dies: its liveness lease (3 s) runs out
    deadline = time.monotonic() + 10
    while any(
        h.up
        for h in scheduler.stub.ListHosts(compute_pb2.ListHostsRequest()).hosts
        if h.info.host_id == "h1"
    ):
        assert time.monotonic() < deadline, "h1 still up"
        time.sleep(0.2)
    servers = create(scheduler, "after", count=2, flavor="m1.tiny")
    assert {s.instance.host for s in servers} == {"h2"}


def test_evacuate_a_down_host_and_clean_up_when_it_returns(cluster):
    import os

    scheduler, agents, _ = cluster
    servers = create(scheduler, "ev", count=2, flavor="m1.tiny")
    on_h1 = next(s for s in servers if s.instance.host == "h1")
    old_pid = on_h1.instance.pid
    ref = compute_pb2.HostRef(host_id="h1")
    with pytest.raises(grpc.RpcError) as e:
        scheduler.stub.EvacuateHost(ref)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # h1 is still up
    agents[0].kill()  # the host "fails"; its VMM is left running, as after a crash
    deadline = time.monotonic() + 10
    while next(
        h
        for h in scheduler.stub.ListHosts(compute_pb2.ListHostsRequest()).hosts
        if h.info.host_id == "h1"
    ).up:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    shown = scheduler.stub.GetServer(compute_pb2.ServerRef(name_or_id=on_h1.instance.spec.uuid))
    assert shown.host_status == "UNKNOWN"
    moved = scheduler.stub.EvacuateHost(ref, timeout=60).servers
    assert [s.instance.spec.uuid for s in moved] == [on_h1.instance.spec.uuid]
    assert (status(moved[0]), moved[0].instance.host) == ("ACTIVE", "h2")
    assert moved[0].instance.spec.name == on_h1.instance.spec.name
    assert os.path.exists(f"/proc/{old_pid}")  # the old copy still runs on the down host
    agents[0].start()  # the host returns: its agent removes the evacuated copy
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{old_pid}") or os.path.exists(
        f"{agents[0].state_dir}/instances/{on_h1.instance.spec.uuid}"
    ):
        assert time.monotonic() < deadline, "evacuated VMM not cleaned up"
        time.sleep(0.2)
    again = scheduler.stub.GetServer(compute_pb2.ServerRef(name_or_id=on_h1.instance.spec.uuid))
    assert (again.instance.host, status(again)) == ("h2", "ACTIVE")


def test_an_evacuation_stopped_after_its_move_is_resumed_by_the_next(cluster):
    """An evacuation moves each instance (new claim, old claim released, record on the
    new host as BUILD) in one transaction and builds after; if it stops in between (etcd
    lost, the scheduler killed), the instance runs nowhere. Evacuating the host again
    builds it where it was moved, and it is counted on exactly one host throughout."""
    import dataclasses

    from computed.store.ops import Put
    from computed.store.records import InstanceRecord
    from scheduler.claims import Placement, claim, release_ops

    scheduler, agents, etcd = cluster
    (server,) = create(scheduler, "resume", flavor="m1.tiny")
    uuid, old_host = server.instance.spec.uuid, server.instance.host
    new_host = "h2" if old_host == "h1" else "h1"
    agents[0 if old_host == "h1" else 1].kill()
    deadline = time.monotonic() + 30
    while next(
        h for h in scheduler.stub.ListHosts(compute_pb2.ListHostsRequest()).hosts
        if h.info.host_id == old_host
    ).up:  # fmt: skip
        assert time.monotonic() < deadline, f"{old_host} never went down"
        time.sleep(0.2)
    with Store(etcd.endpoint) as store:
        record, _ = store.get_record(keys.instance(uuid), InstanceRecord)
        moved = dataclasses.replace(
            record, host=new_host, status="BUILD", power_state="NOSTATE", pid=None,
            evacuated_from=old_host,
        )  # fmt: skip
        released, expect = release_ops(store, old_host, uuid)
        hosts = {h: store.get_record(keys.host(h), HostRecord)[0] for h in ("h1", "h2")}
        spec = record.spec
        done = claim(
            store,
            [Placement(uuid, new_host, spec.vcpus, spec.memory_mb)],
            hosts,
            [Put(keys.instance(uuid), moved, lease=0), *released],
            None,
            expect,
        )  # fmt: skip: what the evacuation's move writes, and then it stopped
        assert done is not None
    stuck = scheduler.stub.GetServer(compute_pb2.ServerRef(name_or_id=uuid))
    assert (status(stuck), stuck.instance.host) == ("BUILD", new_host)

    resumed = scheduler.stub.EvacuateHost(compute_pb2.HostRef(host_id=old_host), timeout=60)
    assert [(s.instance.spec.uuid, s.instance.host, status(s)) for s in resumed.servers] == [
        (uuid, new_host, "ACTIVE")
    ]
    with Store(etcd.endpoint) as store:
        counted = {
            h: uuid in (store.get_record(keys.allocation(h), AllocationRecord) or
                        (AllocationRecord(h), 0))[0].claims
            for h in ("h1", "h2")
        }  # fmt: skip
    assert counted == {old_host: False, new_host: True}
    again = scheduler.stub.EvacuateHost(compute_pb2.HostRef(host_id=old_host), timeout=60)
    assert list(again.servers) == []  # nothing left to do: built, so not resumed twice
