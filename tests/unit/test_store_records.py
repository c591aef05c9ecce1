"""JSON records of the etcd keyspace: round trips, tolerant decoding, named errors."""

import json

import pytest

from computed.store.records import (
    AllocationRecord,
    Claim,
    HostAdminRecord,
    HostRecord,
    InstanceRecord,
    InstanceSpec,
    KvmFacts,
    LivenessRecord,
    RecordError,
)

UUID = "5c0f0000-0000-4000-8000-000000000001"
INSTANCE = InstanceRecord(
    spec=InstanceSpec(UUID, "instance-0000004a", "heartbeat", 2, 128, "ticks=10"),
    status="ACTIVE",
    power_state="RUNNING",
    host="node-1",
    pid=4242,
    created_at=1.5,
    updated_at=2.5,
)
HOST = HostRecord(
    host_id="node-1",
    address="10.213.0.11:8775",
    availability_zone="nova",
    vcpus=2,
    memory_mb=24000,
    cpu_allocation_ratio=16.0,
    ram_allocation_ratio=1.5,
    kvm=KvmFacts(12, "kvm_intel", "userspace", False),
    started_at=3.0,
)
ALL = [
    INSTANCE,
    HOST,
    LivenessRecord("node-1", 3.0),
    HostAdminRecord(False, "maintenance", 4.0),
    AllocationRecord("node-1").with_claim(UUID, Claim(2, 128)),
]


@pytest.mark.parametrize("record", ALL, ids=lambda r: type(r).__name__)
def test_round_trip(record):
    text = record.to_json()
    assert type(record).from_json(text) == record
    assert type(record).from_json(text.encode()) == record  # etcd hands back bytes


def test_encoding_is_stable_so_equal_records_give_equal_bytes():
    assert INSTANCE.to_json() == InstanceRecord.from_json(INSTANCE.to_json()).to_json()
    assert " " not in HOST.to_json()


def test_instance_record_shape():
    data = json.loads(INSTANCE.to_json())
    assert data["spec"]["uuid"] == UUID
    assert data["status"] == "ACTIVE" and data["pid"] == 4242


def test_defaults_fill_fields_an_older_writer_did_not_know():
    data = json.loads(INSTANCE.to_json())
    for name in ("fault", "pid", "host", "created_at", "updated_at", "power_state"):
        del data[name]
    record = InstanceRecord.from_dict(data)
    assert (record.fault, record.pid, record.host, record.power_state) == ("", None, "", "NOSTATE")


def test_unknown_fields_from_a_newer_writer_are_ignored():
    data = json.loads(HOST.to_json()) | {"gpu_count": 4}
    assert HostRecord.from_dict(data) == HOST


def test_ints_are_accepted_where_floats_are_expected():
    data = json.loads(HOST.to_json()) | {"cpu_allocation_ratio": 16}
    assert HostRecord.from_dict(data).cpu_allocation_ratio == 16.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": None}, r"InstanceRecord\.status: expected a string"),
        ({"pid": "4242"}, r"InstanceRecord\.pid: expected an integer"),
        ({"pid": True}, r"InstanceRecord\.pid: expected an integer"),
        ({"spec": {"uuid": UUID}}, r"InstanceRecord\.spec\.name: missing"),
        ({"spec": [1]}, r"InstanceRecord\.spec: expected an object"),
    ],
)
def test_bad_fields_are_named(change, message):
    data = json.loads(INSTANCE.to_json()) | change
    with pytest.raises(RecordError, match=message):
        InstanceRecord.from_dict(data)


def test_nested_records_in_dicts_are_checked():
    with pytest.raises(RecordError, match=r"claims\.u1\.vcpus: expected an integer"):
        AllocationRecord.from_dict(
            {"host_id": "n", "claims": {"u1": {"vcpus": 1.5, "memory_mb": 1}}}
        )


def test_not_json_is_a_record_error():
    with pytest.raises(RecordError, match="not JSON"):
        HostRecord.from_json(b"\xff{")


def test_allocation_claims_add_and_release():
    alloc = AllocationRecord("node-1").with_claim("a", Claim(2, 128)).with_claim("b", Claim(1, 64))
    assert (alloc.vcpus, alloc.memory_mb) == (3, 192)
    assert alloc.without("a").claims == {"b": Claim(1, 64)}
    assert alloc.without("missing") == alloc
