"""etcd with TLS, --client-cert-auth and computed's users and roles (computed/store/etcd_auth.py).

A real etcd, real certificates (a throwaway CA): each client is the user its
certificate's CN names, and etcd itself refuses what that user's role does
not allow.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from agent.config import AgentConfig
from agent.host_facts import KvmFacts
from agent.instance_state import State
from agent.reporter import Reporter
from agent.supervisor import InstanceView
from computed import status
from computed.capacity import Capacity
from computed.store import etcd_auth, keys
from computed.store.client import Store
from computed.store.errors import PermissionDenied, StoreUnavailable
from computed.store.lease import LeaseKeeper
from computed.store.ops import Put
from computed.store.records import (
    AllocationRecord,
    Claim,
    FlavorRecord,
    HostRecord,
    InstanceRecord,
    InstanceReport,
    InstanceSpec,
    LivenessRecord,
)
from computed.store.records import (
    KvmFacts as KvmFactsRecord,
)
from scheduler.catalog import Catalog
from scheduler.claims import Placement, claim, release
from scheduler.host_cache import HostCache
from scheduler.instance_reports import removed_with
from scheduler.naming import allocate_names
from tests.etcd_harness import EtcdServer, EtcdStartError, ThrowawayPki
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

UUID = "5c0f0000-0000-4000-8000-0000000000c1"
SPEC = InstanceSpec(UUID, "instance-000000c1", "heartbeat", 1, 64)
HOSTS = ["h1", "h2"]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    """One TLS etcd with auth on for the module (the tests write disjoint keys)."""
    try:
        server = EtcdServer(secure=True)
    except EtcdStartError as e:
        pytest.fail(str(e), pytrace=False)
    with server:
        server.provision(HOSTS, schedulers=("scheduler-1",))
        yield server


def store_as(etcd: EtcdServer, cn: str, ou: str | None = None) -> Store:
    return Store(etcd.endpoint, timeout=3.0, tls=etcd.client_tls(cn, ou))


@pytest.fixture(scope="module")
def scheduler(etcd) -> Iterator[Store]:
    with store_as(etcd, "scheduler-1", "scheduler") as s:
        yield s


@pytest.fixture(scope="module")
def agent(etcd) -> Iterator[Store]:
    with store_as(etcd, etcd_auth.agent_user("h1"), "agent") as s:
        yield s


def host_record(host_id: str) -> HostRecord:
    kvm = KvmFactsRecord(12, "kvm_intel", "userspace", True)
    return HostRecord(host_id, "127.0.0.1:1", "nova", 2, 2048, 16.0, 1.5, kvm)


# --- what an agent may do -------------------------------------------------------------------


def test_an_agent_writes_its_own_host_record_liveness_stats_and_reports(agent, scheduler):
    scheduler.put(keys.instance(UUID), InstanceRecord(SPEC, status.BUILD, host="h1"))
    agent.put(keys.host("h1"), host_record("h1"))
    lease = agent.grant_lease(5)
    agent.put_many(
        [
            Put(keys.liveness("h1"), LivenessRecord("h1", 1.0)),
            Put(keys.host_stats("h1"), "{}"),
            Put(keys.instance_stats("h1", UUID), "{}"),
        ],
        lease=lease,
    )
    # A report is written against the record's revision, which the agent may read.
    _, revision = agent.get_record(keys.instance(UUID), InstanceRecord)
    report = Put(keys.report("h1", UUID), InstanceReport(status.ACTIVE, status.RUNNING, pid=7))
    assert agent.transaction({keys.instance(UUID): revision}, [report]) is not None
    assert scheduler.get(keys.report("h1", UUID)) is not None
    agent.delete(keys.report("h1", UUID))
    agent.revoke_lease(lease)  # etcd checks write permission on every key on the lease
    assert scheduler.get(keys.liveness("h1")) is None
    assert scheduler.get(keys.instance_stats("h1", UUID)) is None


@pytest.mark.parametrize(
    "key,value",
    [
        (keys.host("h2"), host_record("h2")),
        (keys.liveness("h2"), LivenessRecord("h2", 1.0)),
        (keys.report("h2", UUID), InstanceReport(status.ACTIVE)),
        (keys.instance_stats("h2", UUID), "{}"),
        (keys.host_stats("h2"), "{}"),
        (keys.allocation("h1"), AllocationRecord("h1", {UUID: Claim(1, 64)})),
        (keys.instance(UUID), InstanceRecord(SPEC, status.ACTIVE, host="h1")),
        (keys.flavor("m1.huge"), FlavorRecord("m1.huge", 64, 1 << 20)),
        (keys.host_admin("h1"), "{}"),
        (keys.ip("10.0.0.9"), '{"uuid": "x"}'),
        (keys.counter(keys.INSTANCE_NAME_COUNTER), "1"),
    ],
)
def test_an_agent_cannot_put_anything_but_its_own_hosts_keys(agent, scheduler, key, value):
    before = scheduler.get(key)
    with pytest.raises(PermissionDenied):
        agent.put(key, value)
    with pytest.raises(PermissionDenied):
        agent.transaction({}, [Put(key, value)])
    with pytest.raises(PermissionDenied):
        agent.delete(key)
    assert scheduler.get(key) == before


def test_an_agent_cannot_read_claims_or_another_hosts_keys(agent, scheduler):
    scheduler.put(keys.allocation("h2"), AllocationRecord("h2"))
    for key in (keys.allocation("h2"), keys.host("h2"), keys.flavor("m1.tiny")):
        with pytest.raises(PermissionDenied):
            agent.get(key)


def test_no_user_can_be_assumed_by_password(etcd):
    """Users have no password: a certificate's CN is the only way to be one."""
    from pyetcd import etcdrpc  # the raw Auth service, as an attacker would call it

    tls = etcd.client_tls(etcd_auth.agent_user("h1"), "agent")
    ca, cert, key = tls.read()
    channel = grpc.secure_channel(etcd.endpoint, grpc.ssl_channel_credentials(ca, key, cert))
    try:
        for name in ("scheduler-1", "root", "agent-h2"):
            with pytest.raises(grpc.RpcError) as refused:
                etcdrpc.AuthStub(channel).Authenticate(
                    etcdrpc.AuthenticateRequest(name=name, password=""), timeout=5
                )
            assert "authentication failed" in refused.value.details(), refused.value
    finally:
        channel.close()


# --- the real agent and scheduler code under their users ------------------------------------


class _Supervisor:
    """The reporter's view of a host with one instance and no VMM."""

    def __init__(self, view: InstanceView) -> None:
        self.views = [view]

    def list(self) -> list[InstanceView]:
        return list(self.views)


def test_the_reporter_and_the_host_cache_work_under_their_users(etcd, scheduler):
    """An agent confined to h2's keys registers, reports and writes stats; a scheduler's
    cache sees the host up and the instance as h2 reports it."""
    uuid = "5c0f0000-0000-4000-8000-0000000000c2"
    spec = InstanceSpec(uuid, "instance-000000c2", "heartbeat", 1, 64)
    scheduler.put(keys.instance(uuid), InstanceRecord(spec, status.BUILD, host="h2"))
    config = AgentConfig(
        host_id="h2",
        etcd=(etcd.endpoint,),
        etcd_tls=etcd.client_tls("agent-h2", "agent"),
        lease_ttl=3,
        stats_interval=0.2,
    )
    reporter = Reporter(config, Capacity(2, 2048), KvmFacts(12, "kvm_intel", "userspace", True))
    view = InstanceView(spec, State(status.PAUSED, status.PAUSED), None, 1.0, time.time())
    reporter.attach(_Supervisor(view))  # type: ignore[arg-type]
    cache = HostCache(scheduler)
    changed = threading.Event()
    cache.on_change = changed.set
    try:
        reporter.start()
        cache.start()
        assert cache.wait_synced(10)
        wait_until(lambda: "h2" in cache.view.live, what="h2 up in the scheduler's view")
        shown = wait_until(
            lambda: (i := cache.view.instances.get(uuid)) and i.status == status.PAUSED and i,
            what="the instance as h2 reports it",
        )
        assert shown.host == "h2"
        wait_until(lambda: scheduler.get(keys.host_stats("h2")), what="h2's stats")
    finally:
        cache.close()
        reporter.close()  # revokes the lease: liveness and stats go at once
    assert scheduler.get(keys.liveness("h2")) is None
    assert scheduler.get(keys.host_stats("h2")) is None
    assert scheduler.get(keys.report("h2", uuid)) is not None  # reports outlive a restart


def test_a_scheduler_claims_names_catalogs_and_cleans_up_under_its_user(scheduler):
    """The scheduler's own code paths, as the scheduler-1 user."""
    uuid = "5c0f0000-0000-4000-8000-0000000000c3"
    Catalog(scheduler).seed_flavors()
    (name,) = allocate_names(scheduler, 1)
    spec = InstanceSpec(uuid, name, "heartbeat", 1, 64)
    record = InstanceRecord(spec, status.BUILD, host="h1")
    hosts = {"h1": host_record("h1")}
    placed = claim(scheduler, [Placement(uuid, "h1", 1, 64)], hosts,
                   [Put(keys.instance(uuid), record, lease=0)])  # fmt: skip
    assert placed is not None
    scheduler.put(keys.report("h1", uuid), InstanceReport(status.ACTIVE))  # as h1 would
    release(scheduler, "h1", uuid)
    scheduler.put_many(removed_with(record))
    assert scheduler.get(keys.instance(uuid)) is None
    assert scheduler.get(keys.report("h1", uuid)) is None
    entries, _ = scheduler.get_range(keys.WATCHED_START, keys.WATCHED_END)
    assert keys.flavor("m1.tiny") in {e.key for e in entries}


# --- who etcd refuses at the door ------------------------------------------------------------


def test_a_client_without_a_certificate_is_refused(etcd):
    context = ssl.create_default_context(cafile=etcd.pki.ca_path)  # trusts etcd, shows nothing
    with pytest.raises(OSError):
        urllib.request.urlopen(f"https://{etcd.endpoint}/health", timeout=5, context=context)


def test_a_certificate_from_another_ca_is_refused(etcd, tmp_path):
    stranger = ThrowawayPki(str(tmp_path / "other-ca")).client("scheduler-1", "scheduler")
    ours = etcd.client_tls("scheduler-1")
    # Their certificate, but trusting our CA so that only the client side is wrong.
    with (
        Store(
            etcd.endpoint, timeout=2.0, tls=type(ours)(ours.ca, stranger.cert, stranger.key)
        ) as s,
        pytest.raises(StoreUnavailable),
    ):
        s.get(keys.flavor("m1.tiny"))


def test_a_plaintext_client_is_refused(etcd):
    with Store(etcd.endpoint, timeout=2.0) as s, pytest.raises(StoreUnavailable):
        s.get(keys.flavor("m1.tiny"))


def test_provisioning_again_and_adding_a_host_later(etcd):
    root = etcd.client_tls("root")
    etcd_auth.provision([etcd.endpoint], root, HOSTS, ("scheduler-1",))  # idempotent
    etcd_auth.grant_host([etcd.endpoint], root, "h3")
    with store_as(etcd, "agent-h3", "agent") as h3:
        h3.put(keys.host("h3"), host_record("h3"))
        with pytest.raises(PermissionDenied):
            h3.put(keys.host("h1"), host_record("h1"))
    keeper = LeaseKeeper(store_as(etcd, "agent-h3"), ttl=3)
    try:
        assert keeper.wait(10) is not None
    finally:
        keeper.close(revoke=True)
        keeper.store.close()


def test_the_provisioning_command_adds_a_host_and_refuses_without_root(etcd):
    root = etcd.client_tls("root")
    common = ["--etcd", etcd.endpoint, "--cacert", root.ca]
    etcd_auth.main([*common, "--cert", root.cert, "--key", root.key, "grant-host", "h4"])
    with store_as(etcd, "agent-h4", "agent") as h4:
        h4.put(keys.liveness("h4"), LivenessRecord("h4", 1.0))
    h1 = etcd.client_tls("agent-h1")
    with pytest.raises(SystemExit, match="permission denied"):
        etcd_auth.main([*common, "--cert", h1.cert, "--key", h1.key, "grant-host", "h1"])
