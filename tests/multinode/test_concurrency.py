"""Scenario 5: two schedulers racing many creates onto small hosts never over-commit."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

from computed.api import compute_pb2
from computed.capacity import host_capacity
from computed.store import keys
from computed.store.records import AllocationRecord, HostRecord
from tests.multinode.conftest import pid_alive, status, wait_for

pytestmark = pytest.mark.multinode

REQUESTS = 12
SMALL = (1, 128)  # m1.small: vCPUs, MiB


@pytest.mark.timeout(240)
def test_two_schedulers_racing_never_overcommit(make_cluster):
    # 256 MiB x 1.5 = 384 MiB usable (no reserve: the size is configured), 1 vCPU x 16:
    # three m1.small per host, nine in all, for twelve requests.
    node = make_cluster(hosts=3, schedulers=2, host_vcpus=1, host_memory_mb=256)
    with node.store() as s:
        caps = {
            h.host_id: host_capacity(s.get_record(keys.host(h.host_id), HostRecord)[0])
            for h in node.hosts
        }
    room = sum(
        min(c.usable_vcpus // SMALL[0], c.usable_memory_mb // SMALL[1]) for c in caps.values()
    )
    assert room == 9, caps

    barrier = threading.Barrier(REQUESTS)

    def one(i: int) -> tuple[str, str]:
        stub = node.stubs[i % 2]
        request = compute_pb2.CreateServersRequest(
            name=f"race{i}", flavor="m1.small", image="heartbeat"
        )
        barrier.wait(timeout=30)
        try:
            servers = stub.CreateServers(request, timeout=120).servers
        except grpc.RpcError as e:
            return "refused", f"{e.code().name}: {e.details()}"
        server = servers[0]
        return "placed", f"{server.instance.spec.uuid} {status(server)} {server.instance.fault}"

    with futures.ThreadPoolExecutor(REQUESTS) as pool:
        outcomes = list(pool.map(one, range(REQUESTS)))

    placed = [detail.split()[0] for kind, detail in outcomes if kind == "placed"]
    assert all(detail.split()[1] == "ACTIVE" for kind, detail in outcomes if kind == "placed"), (
        outcomes
    )
    refused = [detail for kind, detail in outcomes if kind == "refused"]
    for detail in refused:
        assert detail.startswith("RESOURCE_EXHAUSTED: "), detail
        assert "RamFilter" in detail, detail  # the reason names the filter that ran out
    assert len(placed) + len(refused) == REQUESTS
    assert len(placed) == room, outcomes  # every slot used, none twice

    with node.store() as s:
        allocations = {
            h: (s.get_record(keys.allocation(h), AllocationRecord) or (AllocationRecord(h), 0))[0]
            for h in caps
        }
    claimed = set()
    for h, alloc in allocations.items():
        assert alloc.vcpus <= caps[h].usable_vcpus, (h, alloc)
        assert alloc.memory_mb <= caps[h].usable_memory_mb, (h, alloc)
        assert not claimed & set(alloc.claims), "a uuid claimed on two hosts"
        claimed |= set(alloc.claims)
    assert claimed == set(placed)

    def all_active(stub):
        listed = stub.ListServers(compute_pb2.ListServersRequest(status="ACTIVE"), timeout=10)
        return len(listed.servers) == len(claimed) and list(listed.servers)

    for stub in node.stubs:  # both schedulers agree, once their caches caught up
        active = wait_for(
            "every placed server ACTIVE in ListServers", lambda st=stub: all_active(st), 15
        )
        assert {s.instance.spec.uuid for s in active} == claimed
        for s in active:
            assert status(s) == "ACTIVE" and pid_alive(s.instance.pid)
            assert s.instance.spec.uuid in allocations[s.instance.host].claims
    assert node.servers() and len(node.servers()) == len(claimed), "no ERROR leftovers"
