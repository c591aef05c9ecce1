"""The real computed-agent process: gRPC on loopback, a real etcd, real VMMs."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import grpc
import pytest

from computed.api import agent_pb2, types_pb2
from computed.procfs import stat_fields
from computed.store import keys
from computed.store.records import InstanceRecord, InstanceSpec
from tests.agent_harness import AGENT_HOST as HOST
from tests.agent_harness import alive
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def spec(image="heartbeat", vcpus=1, memory_mb=64, cmdline=""):
    u = str(uuid.uuid4())
    return types_pb2.InstanceSpec(
        uuid=u,
        name=f"instance-{u[:8]}",
        image=image,
        vcpus=vcpus,
        memory_mb=memory_mb,
        cmdline=cmdline,
    )


def ref(u):
    return agent_pb2.InstanceRef(uuid=u)


def status(instance) -> str:
    return types_pb2.InstanceStatus.Name(instance.status)


def power(instance) -> str:
    return types_pb2.PowerState.Name(instance.power_state)


def etcd_json(store, key):
    entry = store.get(key)
    return None if entry is None else json.loads(entry.value)


def test_spawn_is_active_and_its_stats_carry_the_real_threads(agent, store):
    s = spec(vcpus=2)
    inst = agent.stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=15)
    assert (status(inst), power(inst), inst.host) == ("STATUS_ACTIVE", "POWER_STATE_RUNNING", HOST)
    stats = wait_until(lambda: etcd_json(store, keys.instance_stats(HOST, s.uuid)), what="stats")
    assert stats["pid"] == inst.pid
    tids = {int(t) for t in os.listdir(f"/proc/{inst.pid}/task")}
    assert {stats["vcpu.0.tid"], stats["vcpu.1.tid"]} <= tids
    with open(f"/proc/{stats['helper.kvm-pit.pid']}/comm") as f:
        assert f.read().strip() == f"kvm-pit/{inst.pid}"
    report = wait_until(lambda: etcd_json(store, keys.report(HOST, s.uuid)), what="report")
    assert (report["status"], report["pid"]) == ("ACTIVE", inst.pid)
    assert etcd_json(store, keys.liveness(HOST))["host_id"] == HOST
    assert etcd_json(store, keys.host(HOST))["kvm"]["api_version"] == 12


def test_the_warm_parent_and_its_standbys_are_made_before_the_first_spawn(agent):
    """The agent starts its warm VMM parent as it starts, so the first create after an
    agent (re)start does not wait for the parent's imports and standbys."""
    socket_path = os.path.join(agent.state_dir, "vmm-zygote.sock")

    def titles() -> list[str]:
        found = []
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().split(b"\0")[0].decode(errors="replace")
                if stat_fields(f"/proc/{pid}/stat")[1] == str(agent.proc.pid):  # ppid
                    found.append(title)
            except (OSError, ValueError, IndexError):
                continue
        return found

    wait_until(
        lambda: (
            any(t.startswith(f"computed-vmm-zygote {socket_path}") for t in titles())
            and sum(t.startswith("computed-vmm-standby") for t in titles()) == 2
        ),
        what="the warm parent and the harness's 2 standbys, with no Spawn yet",
        timeout=60,
    )


def test_every_lifecycle_rpc(agent, store):
    s = spec()
    stub = agent.stub
    first = stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=15)
    assert stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=15).pid == first.pid  # idempotent
    assert [i.spec.uuid for i in stub.List(agent_pb2.ListRequest()).instances] == [s.uuid]
    assert status(stub.Pause(ref(s.uuid))) == "STATUS_PAUSED"
    assert status(stub.Resume(ref(s.uuid))) == "STATUS_ACTIVE"
    assert stub.Reboot(agent_pb2.RebootRequest(uuid=s.uuid), timeout=15).pid == first.pid
    hard = stub.Reboot(agent_pb2.RebootRequest(uuid=s.uuid, hard=True), timeout=30)
    assert hard.pid != first.pid and status(hard) == "STATUS_ACTIVE"
    stopped = stub.Stop(agent_pb2.StopRequest(uuid=s.uuid), timeout=30)
    assert (status(stopped), power(stopped), stopped.pid) == (
        "STATUS_SHUTOFF",
        "POWER_STATE_SHUTDOWN",
        0,
    )
    console = stub.GetConsoleOutput(agent_pb2.ConsoleRequest(uuid=s.uuid, lines=1)).output
    assert console == "heartbeat: power button, shutting down\n"
    started = stub.Start(ref(s.uuid), timeout=15)
    assert status(started) == "STATUS_ACTIVE" and alive(started.pid)
    assert stub.Get(ref(s.uuid)).pid == started.pid
    wait_until(
        lambda: (etcd_json(store, keys.report(HOST, s.uuid)) or {}).get("pid") == started.pid,
        what="the report of the new pid",
    )
    stub.Delete(ref(s.uuid), timeout=30)
    stub.Delete(ref(s.uuid), timeout=30)  # idempotent
    assert not os.path.exists(os.path.join(agent.state_dir, "instances", s.uuid))
    wait_until(lambda: not alive(started.pid), what="VMM gone after delete")
    wait_until(lambda: store.get(keys.report(HOST, s.uuid)) is None, what="report removed")
    wait_until(lambda: store.get(keys.instance_stats(HOST, s.uuid)) is None, what="stats removed")
    info = stub.GetHostInfo(agent_pb2.HostInfoRequest())
    assert (info.vcpus, info.memory_mb, info.instances) == (4, 2048, 0)
    assert info.kvm.api_version == 12 and info.kvm.vhost in ("kernel", "userspace")


def test_killed_vmm_is_crashed_with_its_reason_within_an_interval(agent, store):
    s = spec()
    pid = agent.stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=15).pid
    os.kill(pid, signal.SIGKILL)
    crashed = wait_until(
        lambda: (
            (i := agent.stub.Get(ref(s.uuid))).power_state == types_pb2.POWER_STATE_CRASHED and i
        ),
        timeout=1.0,
    )
    assert crashed.fault == "VMM process killed by SIGKILL"
    wait_until(
        lambda: (etcd_json(store, keys.report(HOST, s.uuid)) or {}).get("power_state") == "CRASHED"
    )


def place(store, s) -> None:
    """Write the instance record a scheduler writes before it asks for a spawn: an adopted
    instance without one counts as deleted while its agent was away."""
    record = InstanceRecord(spec=InstanceSpec(s.uuid, s.name, s.image, s.vcpus, s.memory_mb),
                            status="BUILD", host=HOST)  # fmt: skip
    store.put(keys.instance(s.uuid), record)


def test_kill_9_agent_leaves_vms_running_and_restart_adopts_them(agent, store):
    specs = [spec() for _ in range(3)]
    for s in specs:
        place(store, s)
    pids = {s.uuid: agent.stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=15).pid for s in specs}
    agent.stub.Pause(ref(specs[0].uuid))
    agent.kill(signal.SIGKILL)
    assert all(alive(p) for p in pids.values()), "a VMM died with its agent"
    time.sleep(0.5)
    assert all(alive(p) for p in pids.values())
    agent.start()
    listed = {i.spec.uuid: i for i in agent.stub.List(agent_pb2.ListRequest()).instances}
    assert {u: i.pid for u, i in listed.items()} == pids, "re-adopted with the same PIDs"
    assert status(listed[specs[0].uuid]) == "STATUS_PAUSED"
    assert status(listed[specs[1].uuid]) == "STATUS_ACTIVE"
    os.kill(pids[specs[1].uuid], signal.SIGKILL)  # adopted VMMs are still watched
    wait_until(
        lambda: agent.stub.Get(ref(specs[1].uuid)).power_state == types_pb2.POWER_STATE_CRASHED
    )


def test_host_goes_down_within_the_lease_ttl_when_the_agent_dies(agent, store):
    assert store.get(keys.liveness(HOST)) is not None
    agent.kill(signal.SIGKILL)
    wait_until(
        lambda: store.get(keys.liveness(HOST)) is None, timeout=3 + 2, what="liveness key gone"
    )
    assert store.get(keys.host_stats(HOST)) is None, "stats live on the lease too"
    assert store.get(keys.host(HOST)) is not None, "the host record stays"


def test_etcd_outage_leaves_vms_alone_and_reporting_resumes(agent, store, etcd):
    s = spec()
    inst = agent.stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=15)
    etcd.stop()
    time.sleep(2)
    # The agent keeps serving and its VM keeps running; a change made now is not lost.
    assert alive(inst.pid)
    assert status(agent.stub.Pause(ref(s.uuid), timeout=5)) == "STATUS_PAUSED"
    etcd.start()
    wait_until(
        lambda: (etcd_json(store, keys.report(HOST, s.uuid)) or {}).get("status") == "PAUSED",
        timeout=15,
        what="state written after etcd returned",
    )

    def stats_time() -> float:
        # The stats key lives on the lease, which may have expired during the outage:
        # it is absent until the agent's new lease carries it again.
        return (etcd_json(store, keys.instance_stats(HOST, s.uuid)) or {}).get("timestamp", 0.0)

    before = wait_until(stats_time, what="stats written again")
    wait_until(lambda: stats_time() > before, what="stats resumed")
    assert store.get(keys.liveness(HOST)) is not None
    assert agent.stub.Get(ref(s.uuid)).pid == inst.pid


@pytest.mark.parametrize(
    "call,request_,code,words",
    [
        ("Spawn", agent_pb2.SpawnRequest(), grpc.StatusCode.INVALID_ARGUMENT, "spec"),
        (
            "Spawn",
            agent_pb2.SpawnRequest(spec=types_pb2.InstanceSpec(uuid="x")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.uuid",
        ),
        (
            "Spawn",
            agent_pb2.SpawnRequest(
                spec=types_pb2.InstanceSpec(
                    uuid=str(uuid.uuid4()), name="instance-1", image="nope", vcpus=1, memory_mb=64
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.image",
        ),
        (
            "Spawn",
            agent_pb2.SpawnRequest(
                spec=types_pb2.InstanceSpec(
                    uuid=str(uuid.uuid4()),
                    name="instance-1",
                    image="hello",
                    vcpus=1,
                    memory_mb=65536,
                )
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "memory",
        ),
        ("Get", ref(str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND, "no instance"),
        ("Pause", ref("bad"), grpc.StatusCode.INVALID_ARGUMENT, "uuid"),
        (
            "Stop",
            agent_pb2.StopRequest(uuid=str(uuid.uuid4()), timeout_seconds=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "timeout_seconds",
        ),
    ],
)
def test_bad_requests_get_their_status_codes(agent, call, request_, code, words):
    with pytest.raises(grpc.RpcError) as e:
        getattr(agent.stub, call)(request_, timeout=10)
    assert e.value.code() == code and words in e.value.details()


def test_actions_in_the_wrong_status_are_failed_precondition(agent):
    s = spec()
    agent.stub.Spawn(agent_pb2.SpawnRequest(spec=s), timeout=15)
    with pytest.raises(grpc.RpcError) as e:
        agent.stub.Resume(ref(s.uuid))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "status ACTIVE" in e.value.details()


def test_sigterm_stops_serving_but_not_the_vms(agent):
    pid = agent.stub.Spawn(agent_pb2.SpawnRequest(spec=spec()), timeout=15).pid
    assert agent.kill(signal.SIGTERM) == 0
    assert alive(pid)


def test_health_and_reflection_list_the_agent_service(agent):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    services = ProtoReflectionDescriptorDatabase(agent.channel).get_services()
    assert "computed.v1.Agent" in services and "grpc.health.v1.Health" in services
    check = health_pb2_grpc.HealthStub(agent.channel).Check(
        health_pb2.HealthCheckRequest(service="computed.v1.Agent"), timeout=5
    )
    assert check.status == health_pb2.HealthCheckResponse.SERVING
