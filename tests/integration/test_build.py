"""The build loop against real agents: retry on alternates, release claims, ERROR with reasons."""

import time
import uuid

import pytest

from computed.mtls.credentials import channel_credentials
from computed.store import keys
from computed.store.records import (
    AllocationRecord,
    BuildFailuresRecord,
    HostRecord,
    InstanceRecord,
    InstanceSpec,
    KvmFacts,
)
from scheduler.build import AgentClients, build
from scheduler.claims import Placement, claim
from tests import pki_harness
from tests.agent_harness import AgentProcess, free_port

pytestmark = pytest.mark.integration


def host_record(host_id, address):
    return HostRecord(
        host_id, address, "nova", 4, 2048, 1.0, 1.0, KvmFacts(12, "kvm_pvm", "userspace", True)
    )


@pytest.fixture
def cluster(etcd, store, short_tmp):
    """One real agent ("good") and one host record whose agent is not there ("dead")."""
    agent = AgentProcess(
        f"{short_tmp}/good", etcd.endpoint, "good", "--vcpus", "4", "--memory-mb", "2048"
    )
    agents = AgentClients(channel_credentials(pki_harness.scheduler()))
    try:
        agent.start()
        hosts = {
            "good": host_record("good", agent.address),
            "dead": host_record("dead", f"127.0.0.1:{free_port()}"),
        }
        yield store, agents, hosts, agent
    finally:
        agents.close()
        agent.cleanup()


def new_spec(image="heartbeat"):
    u = str(uuid.uuid4())
    return InstanceSpec(u, f"instance-{u[:8]}", image, 1, 64)


def placed(store, spec, host_id, hosts) -> tuple[InstanceRecord, int]:
    """As the placer leaves an instance for its build: claimed on `host_id`, its record
    BUILD there; the record and the revision it was written at."""
    assert claim(store, [Placement(spec.uuid, host_id, 1, 64)], hosts)
    record = InstanceRecord(spec=spec, status="BUILD", host=host_id)
    return record, store.put(keys.instance(spec.uuid), record)


def claims_on(store, host_id):
    found = store.get_record(keys.allocation(host_id), AllocationRecord)
    return set(found[0].claims) if found else set()


def test_failed_host_is_released_and_the_alternate_builds_it(cluster):
    store, agents, hosts, agent = cluster
    spec = new_spec()
    placed(store, spec, "dead", hosts)
    result = build(store, agents, spec, ["dead", "good"], hosts)
    assert result.attempts == ("dead", "good")
    assert (result.record.status, result.record.host) == ("ACTIVE", "good")
    assert claims_on(store, "dead") == set() and claims_on(store, "good") == {spec.uuid}
    assert result.record.pid and agent.vmm_pids() == [result.record.pid]
    failed = store.get_record(keys.build_failures("dead"), BuildFailuresRecord)
    assert failed and failed[0].count == 1 and "UNAVAILABLE" in failed[0].last_fault
    assert store.get(keys.build_failures("good")) is None


def test_a_build_given_the_claims_revision_writes_active_without_reading_first(cluster):
    store, agents, hosts, _ = cluster
    spec = new_spec()
    claimed = placed(store, spec, "good", hosts)
    reads = []
    real_get_record = store.get_record
    store.get_record = lambda key, cls: reads.append(key) or real_get_record(key, cls)
    try:
        result = build(store, agents, spec, ["good"], hosts, claimed)
    finally:
        del store.get_record
    assert (result.record.status, result.record.host) == ("ACTIVE", "good")
    assert keys.instance(spec.uuid) not in reads
    assert store.get_record(keys.instance(spec.uuid), InstanceRecord)[0].status == "ACTIVE"


def test_a_success_clears_the_hosts_build_failures(cluster, tmp_path):
    store, agents, hosts, _ = cluster
    bogus = tmp_path / "bogus"
    bogus.write_text("not an image")
    for _ in range(2):
        spec = new_spec(image=str(bogus))
        placed(store, spec, "good", hosts)
        assert build(store, agents, spec, ["good"], hosts).record.status == "ERROR"
    failed = store.get_record(keys.build_failures("good"), BuildFailuresRecord)
    assert failed and failed[0].count == 2 and "not an ELF" in failed[0].last_fault
    spec = new_spec()
    placed(store, spec, "good", hosts)
    assert build(store, agents, spec, ["good"], hosts).record.status == "ACTIVE"
    assert store.get(keys.build_failures("good")) is None


def test_no_host_takes_it_then_error_with_every_reason(cluster, tmp_path):
    store, agents, hosts, agent = cluster
    bogus = tmp_path / "bogus"
    bogus.write_text("not an image")
    spec = new_spec(image=str(bogus))
    placed(store, spec, "good", hosts)
    result = build(store, agents, spec, ["good", "dead"], hosts)
    assert result.record.status == "ERROR"
    assert "good: " in result.record.fault and "not an ELF" in result.record.fault
    assert "dead: UNAVAILABLE" in result.record.fault
    assert claims_on(store, "good") == set() and claims_on(store, "dead") == set()
    assert agent.vmm_pids() == []  # the failed build left nothing on the host
    time.sleep(1.5)  # the agent's report of its own delete comes later: it must not win
    final = store.get_record(keys.instance(spec.uuid), InstanceRecord)
    assert final and final[0].status == "ERROR" and "not an ELF" in final[0].fault
    assert store.get(keys.report("good", spec.uuid)) is None, "a failed host's report stayed"


def test_a_build_overtaken_by_an_evacuation_leaves_the_record_where_it_was_moved(cluster):
    """The spawn answered after the record had moved on (its host hung mid-spawn, was
    evacuated, and came back): the late build must not point the record back at its
    host, which would run the instance twice with its claim elsewhere."""
    store, agents, hosts, agent = cluster
    spec = new_spec()
    placed(store, spec, "good", hosts)
    moved = InstanceRecord(spec=spec, status="BUILD", host="dead", evacuated_from="good")
    store.put(keys.instance(spec.uuid), moved)  # the evacuation's move, before the answer
    result = build(store, agents, spec, ["good"], hosts)
    assert (result.record.host, result.record.status) == ("dead", "BUILD")
    final = store.get_record(keys.instance(spec.uuid), InstanceRecord)
    assert final and (final[0].host, final[0].evacuated_from) == ("dead", "good")
    assert agent.vmm_pids() == []  # its copy on the host it was moved from is removed


def test_a_build_overtaken_by_a_delete_does_not_bring_the_instance_back(cluster, tmp_path):
    store, agents, hosts, agent = cluster
    for image in ("heartbeat", str(tmp_path / "missing")):  # spawn answering ACTIVE, ERROR
        spec = new_spec(image=image)
        placed(store, spec, "good", hosts)
        store.delete(keys.instance(spec.uuid))  # deleted while the spawn was in flight
        result = build(store, agents, spec, ["good", "dead"], hosts)
        assert result.record.status == "DELETED"
        assert store.get(keys.instance(spec.uuid)) is None
        assert agent.vmm_pids() == []
