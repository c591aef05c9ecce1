import pytest

from computed.store.records import AllocationRecord, Claim, HostRecord, KvmFacts
from scheduler.claims import Overcommit, Placement, check_claims


def host(host_id, vcpus=2, memory_mb=1024, cpu_ratio=1.0, ram_ratio=1.0):
    return HostRecord(
        host_id,
        "127.0.0.1:1",
        "nova",
        vcpus,
        memory_mb,
        cpu_ratio,
        ram_ratio,
        KvmFacts(12, "kvm_intel", "userspace", False),
    )


HOSTS = {"a": host("a"), "b": host("b", vcpus=1, memory_mb=512)}


def test_claims_accumulate_per_host():
    after = check_claims(
        [Placement("u1", "a", 1, 256), Placement("u2", "a", 1, 256), Placement("u3", "b", 1, 512)],
        {},
        HOSTS,
    )
    assert (after["a"].vcpus, after["a"].memory_mb, after["b"].memory_mb) == (2, 512, 512)


def test_existing_claims_count():
    existing = {"a": AllocationRecord("a").with_claim("old", Claim(2, 100))}
    with pytest.raises(Overcommit, match="host a: 3/2 vCPUs"):
        check_claims([Placement("u1", "a", 1, 10)], existing, HOSTS)


def test_batch_that_overflows_a_host_is_refused_whole():
    with pytest.raises(Overcommit, match="host b"):
        check_claims([Placement("u1", "b", 1, 256), Placement("u2", "b", 1, 256)], {}, HOSTS)


def test_allocation_ratios_widen_capacity():
    roomy = {"a": host("a", vcpus=1, cpu_ratio=4.0)}
    after = check_claims([Placement(f"u{i}", "a", 1, 1) for i in range(4)], {}, roomy)
    assert after["a"].vcpus == 4


def test_unknown_host_is_refused():
    with pytest.raises(Overcommit, match="not known"):
        check_claims([Placement("u1", "zzz", 1, 1)], {}, HOSTS)
