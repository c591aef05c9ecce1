"""`computed-agent --driver fake`: the real agent process, etcd and gRPC, no KVM involved."""

from __future__ import annotations

import json
import uuid as uuidlib

import pytest

from computed.api import agent_pb2, types_pb2
from computed.store import keys
from computed.store.client import Store
from computed.store.records import HostRecord, InstanceRecord, InstanceReport, InstanceSpec
from tests.agent_harness import AgentProcess
from tests.etcd_harness import EtcdServer
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def fake_agent(short_tmp):
    with EtcdServer() as etcd:
        agent = AgentProcess(short_tmp, etcd.endpoint, "fake-host", "--driver", "fake")
        try:
            agent.start()
            with Store(etcd.endpoint) as store:
                yield agent, store
        finally:
            agent.cleanup()


def test_a_fake_host_registers_runs_and_reports_an_instance(fake_agent):
    agent, store = fake_agent
    host = wait_until(lambda: store.get_record(keys.host("fake-host"), HostRecord), 30)[0]
    assert host.kvm.vendor_module == "fake"
    uid = str(uuidlib.uuid4())
    spec = types_pb2.InstanceSpec(
        uuid=uid, name="instance-00000001", image="heartbeat", vcpus=2, memory_mb=128
    )
    # the record a scheduler writes before it asks for a spawn (the agent reports against it)
    placed = InstanceRecord(
        spec=InstanceSpec(uid, "instance-00000001", "heartbeat", 2, 128),
        status="BUILD",
        host="fake-host",
    )
    store.put(keys.instance(uid), placed)
    reply = agent.stub.Spawn(agent_pb2.SpawnRequest(spec=spec), timeout=30)
    assert reply.status == types_pb2.STATUS_ACTIVE and reply.pid > 0
    report = wait_until(
        lambda: (
            (found := store.get_record(keys.report("fake-host", uid), InstanceReport))
            and found[0].status == "ACTIVE"
            and found[0]
        ),
        30,
        what="the ACTIVE instance report",
    )
    assert report.pid == reply.pid
    stats = wait_until(
        lambda: store.get(keys.instance_stats("fake-host", uid)), 30, what="instance stats"
    )
    sample = json.loads(stats.value)
    assert sample["pid"] == reply.pid and sample["vcpu.count"] == 2
    paused = agent.stub.Pause(agent_pb2.InstanceRef(uuid=uid), timeout=10)
    assert paused.status == types_pb2.STATUS_PAUSED
    stopped = agent.stub.Stop(agent_pb2.StopRequest(uuid=uid), timeout=30)
    assert stopped.status == types_pb2.STATUS_SHUTOFF
    agent.stub.Delete(agent_pb2.InstanceRef(uuid=uid), timeout=30)
    assert agent.instance_uuids() == []
