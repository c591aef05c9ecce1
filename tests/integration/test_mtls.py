"""mTLS on both gRPC hops, for real: a scheduler and an agent on loopback with the session
PKI (tests/pki_harness.py), a real etcd and real VMMs. Who gets in, who gets which
RPCs, and a SIGHUP with renewed certificates that disturbs nothing."""

from __future__ import annotations

import datetime
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from computed.api import agent_pb2, agent_pb2_grpc, compute_pb2, compute_pb2_grpc
from computed.mtls.cert_expiry import STAT_NAME
from computed.mtls.credentials import channel_credentials
from computed.pki.directory import PkiDirectory
from tests import pki_harness
from tests.scheduler_harness import SchedulerProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
COMPUTECTL = os.path.join(os.path.dirname(sys.executable), "computectl")
_ONE = compute_pb2.CreateServersRequest(name="x", flavor="m1.tiny", image="heartbeat", count=1)


@pytest.fixture
def scheduler(etcd, agent, short_tmp):
    """A TLS scheduler in front of the TLS `agent` (test-host), the host up."""
    proc = SchedulerProcess(etcd.endpoint, short_tmp)
    try:
        proc.start()
        wait_until(
            lambda: any(h.up for h in proc.stub.ListHosts(compute_pb2.ListHostsRequest()).hosts),
            what="the agent's host up",
        )
        yield proc
    finally:
        proc.stop()


def _compute(channel: grpc.Channel) -> compute_pb2_grpc.ComputeStub:
    return compute_pb2_grpc.ComputeStub(channel)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _list(address: str, creds: grpc.ChannelCredentials | None):
    channel = grpc.secure_channel(address, creds) if creds else grpc.insecure_channel(address)
    with channel:
        return _compute(channel).ListServers(compute_pb2.ListServersRequest(), timeout=10)


def test_no_certificate_another_ca_or_expired_are_refused(scheduler, tmp_path):
    ca = Path(pki_harness.admin().ca).read_bytes()
    address = scheduler.address
    refused = [
        ("plaintext", None),
        ("no client certificate", grpc.ssl_channel_credentials(root_certificates=ca)),
    ]
    other = PkiDirectory(str(tmp_path / "other"))
    other.init()
    foreign = other.issue("admin")
    # Trusts our CA (so only the server's check of the client can fail), presents theirs.
    refused.append(("another CA", grpc.ssl_channel_credentials(
        ca, Path(foreign.key).read_bytes(), Path(foreign.cert).read_bytes()
    )))  # fmt: skip
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = pki_harness.session_pki().issue("admin", "expired", [], days=1, not_before=long_ago)
    refused.append(("expired", channel_credentials(expired)))
    for what, creds in refused:
        err = _code(lambda c=creds: _list(address, c))
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (what, err)
    assert _list(address, channel_credentials(pki_harness.admin())) is not None  # the control


def test_computectl_names_a_key_that_is_not_its_certificates(scheduler, tmp_path):
    """computectl parses its pair only once a connection fails (cryptography's import
    would cost every command ~25 ms): the failure then names the file at fault."""
    admin, other = pki_harness.admin(), pki_harness.session_pki().issue("admin", "other")
    env = {"OS_CACERT": admin.ca, "OS_CERT": admin.cert, "OS_KEY": other.key}
    done = subprocess.run(
        [COMPUTECTL, "--scheduler", scheduler.address, "server", "list"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr.strip() == f"computectl: error: {other.key} is not the key of {admin.cert}"
    good = {**env, "OS_KEY": admin.key}
    done = subprocess.run(
        [COMPUTECTL, "--scheduler", scheduler.address, "server", "list"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **good},
    )  # fmt: skip
    assert done.returncode == 0, done


def test_reader_lists_but_may_not_create(scheduler):
    with scheduler.open_channel("reader", "ops") as channel:
        stub = _compute(channel)
        stub.ListServers(compute_pb2.ListServersRequest(), timeout=10)
        stub.ListHosts(compute_pb2.ListHostsRequest(), timeout=10)
        err = _code(lambda: stub.CreateServers(_ONE, timeout=10))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs role admin" in err.details() and "reader" in err.details()


def test_agent_certificate_gets_no_scheduler_admin_rpcs(scheduler):
    with scheduler.open_channel("agent", "test-host") as channel:
        stub = _compute(channel)
        calls = {
            "CreateServers": lambda: stub.CreateServers(_ONE, timeout=10),
            "DisableHost": lambda: stub.DisableHost(
                compute_pb2.DisableHostRequest(host_id="test-host"), timeout=10
            ),
            "EvacuateHost": lambda: stub.EvacuateHost(compute_pb2.HostRef(host_id="x"), timeout=10),
            "CreateFlavor": lambda: stub.CreateFlavor(
                compute_pb2.Flavor(name="f", vcpus=1, memory_mb=64), timeout=10
            ),
        }
        for name, call in calls.items():
            err = _code(call)
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, name
            assert f"{name} needs role admin" in err.details()


def test_agent_accepts_only_a_scheduler_certificate(agent):
    request = agent_pb2.ListRequest()
    for role, name in (("admin", None), ("reader", "ops"), ("agent", "test-host")):
        with agent.open_channel(role, name) as channel:
            err = _code(lambda c=channel: agent_pb2_grpc.AgentStub(c).List(request, timeout=10))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, role
            assert "needs role scheduler" in err.details()
    with agent.open_channel("scheduler", "test") as channel:
        agent_pb2_grpc.AgentStub(channel).List(request, timeout=10)


def _drain(stream, into: queue.Queue) -> None:
    try:
        for event in stream:
            into.put(event)
    except grpc.RpcError:
        pass  # cancelled at the end of the test


def _served_certificate(address: str) -> x509.Certificate:
    """The certificate a new TLS connection to `address` is shown (a fresh handshake)."""
    admin = pki_harness.admin()
    context = ssl.create_default_context(cafile=admin.ca)
    context.load_cert_chain(admin.cert, admin.key)
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def test_sighup_with_renewed_certificates_keeps_vms_and_watches(scheduler, agent):
    admin = scheduler.stub
    create = compute_pb2.CreateServersRequest(
        name="before", flavor="m1.tiny", image="heartbeat", count=1
    )
    before = admin.CreateServers(create, timeout=90).servers[0]
    assert before.instance.pid > 0, before
    events: queue.Queue = queue.Queue()
    watch = admin.WatchServers(compute_pb2.WatchServersRequest(), timeout=300)
    threading.Thread(target=_drain, args=(watch, events), daemon=True).start()
    old_scheduler = _served_certificate(scheduler.address).serial_number
    old_agent = _served_certificate(agent.address).serial_number

    pki = pki_harness.session_pki()  # renew both daemons' certificates in place, then SIGHUP
    renewed_scheduler = pki.issue("scheduler", "test", pki_harness.LOOPBACK_SANS)
    renewed_agent = pki.issue("agent", "test-host", pki_harness.LOOPBACK_SANS, days=20)
    scheduler.proc.send_signal(signal.SIGHUP)
    agent.proc.send_signal(signal.SIGHUP)

    def serial(path: str) -> int:
        return x509.load_pem_x509_certificate(Path(path).read_bytes()).serial_number

    for proc, renewed in ((scheduler, renewed_scheduler), (agent, renewed_agent)):
        wait_until(
            lambda p=proc, r=renewed: (
                _served_certificate(p.address).serial_number == serial(r.cert)
            ),
            what=f"{proc.address} serving its renewed certificate",
        )
    assert old_scheduler != serial(renewed_scheduler.cert) and old_agent != serial(
        renewed_agent.cert
    )
    assert "expires in 19 day(s)" in wait_until(
        lambda: "expires in" in agent.log() and agent.log(), what="the agent's expiry warning"
    )

    # Nothing was disturbed: the VM runs on, the old connection's watch still streams, and a
    # new create goes through the scheduler's renewed client channel to the agent.
    assert scheduler.proc.poll() is None and agent.proc.poll() is None
    show = admin.GetServer(compute_pb2.ServerRef(name_or_id="before"), timeout=10)
    assert (
        show.instance.pid == before.instance.pid and show.instance.status == before.instance.status
    )
    after = admin.CreateServers(
        compute_pb2.CreateServersRequest(
            name="after", flavor="m1.tiny", image="heartbeat", count=1
        ),
        timeout=90,
    ).servers[0]
    assert after.instance.pid > 0, after

    def watched_after() -> bool:
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                return False
            if event.server.instance.spec.uuid == after.instance.spec.uuid:
                return True

    wait_until(watched_after, what="the pre-SIGHUP watch reporting the post-SIGHUP server")
    watch.cancel()  # (the reader thread ends with CANCELLED)
    # host show says when the agent's (renewed) certificate runs out.
    end = x509.load_pem_x509_certificate(Path(renewed_agent.cert).read_bytes()).not_valid_after_utc
    wait_until(
        lambda: (
            admin.GetHost(compute_pb2.HostRef(host_id="test-host"), timeout=10).stats.get(STAT_NAME)
            == end.timestamp()
        ),
        what="the host's stats carrying the renewed certificate's expiry",
    )
