"""computectl end to end: the real binary as a subprocess, against a real scheduler, two real
agents and real VMMs. One cluster serves the whole module (starting it costs seconds); each
test deletes what it created, and the fixture's teardown kills everything even on failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
import pytest

from computed.api import compute_pb2, compute_pb2_grpc
from tests import pki_harness
from tests.agent_harness import AgentProcess, free_port
from tests.etcd_harness import EtcdServer, EtcdStartError
from tests.scheduler_harness import SchedulerProcess

pytestmark = pytest.mark.integration

COMPUTECTL = os.path.join(os.path.dirname(sys.executable), "computectl")


@pytest.fixture(scope="module")
def shared_cluster():
    """Hosts h1 and h2, 4 vCPUs and 512 MiB each at ratio 1: room for 4 m1.tiny apiece."""
    tmp = tempfile.mkdtemp(prefix="cd-")  # short: unix socket paths must fit in 108 bytes
    try:
        etcd = EtcdServer()
    except EtcdStartError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(str(e), pytrace=False)
    agents: list[AgentProcess] = []
    scheduler = None
    try:
        etcd.start()
        agents = [
            AgentProcess(f"{tmp}/{h}", etcd.endpoint, h, "--vcpus", "4", "--memory-mb", "512",
                         "--cpu-allocation-ratio", "1", "--ram-allocation-ratio", "1")
            for h in ("h1", "h2")
        ]  # fmt: skip
        for a in agents:
            a.start()
        scheduler = SchedulerProcess(etcd.endpoint, tmp)
        scheduler.start()
        deadline = time.monotonic() + 15
        while sum(h.up for h in scheduler.stub.ListHosts(compute_pb2.ListHostsRequest()).hosts) < 2:
            assert time.monotonic() < deadline, "hosts not up"
            time.sleep(0.1)
        yield scheduler
    finally:
        if scheduler is not None:
            scheduler.stop()
        for a in agents:
            a.cleanup()
        etcd.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def cluster(shared_cluster):
    """The shared cluster, left as it was found: no servers, no groups, every host enabled."""
    yield shared_cluster
    stub = shared_cluster.stub
    for s in stub.ListServers(compute_pb2.ListServersRequest()).servers:
        stub.DeleteServer(compute_pb2.ServerRef(name_or_id=s.instance.spec.uuid), timeout=30)
    for g in stub.ListServerGroups(compute_pb2.ListServerGroupsRequest()).groups:
        stub.DeleteServerGroup(compute_pb2.ServerGroupRef(name_or_id=g.id))
    for h in stub.ListHosts(compute_pb2.ListHostsRequest()).hosts:
        if not h.enabled:
            stub.EnableHost(compute_pb2.HostRef(host_id=h.info.host_id))


def ctl(*args: str, address: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run computectl as the session PKI's admin (through OS_CACERT/OS_CERT/OS_KEY); never
    lets a developer's $COMPUTED_SCHEDULER leak in."""
    env = {k: v for k, v in os.environ.items() if k != "COMPUTED_SCHEDULER"}
    admin = pki_harness.admin()
    env.update(OS_CACERT=admin.ca, OS_CERT=admin.cert, OS_KEY=admin.key)
    argv = [COMPUTECTL, *(["--scheduler", address] if address else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def ok(scheduler, *args: str) -> str:
    done = ctl(*args, address=scheduler.address)
    assert done.returncode == 0, f"{args}: {done.returncode} {done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def as_json(scheduler, *args: str):
    return json.loads(ok(scheduler, *args, "-f", "json"))


def value(scheduler, *args: str) -> str:
    return ok(scheduler, *args, "-f", "value").strip()


def failed(scheduler_or_address, *args: str, status: int = 1) -> str:
    address = getattr(scheduler_or_address, "address", scheduler_or_address)
    done = ctl(*args, address=address)
    assert done.returncode == status, f"{args}: {done.returncode} {done.stdout} {done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stderr


# --- no cluster needed --------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        (),
        ("server",),
        ("server", "create", "web"),  # --flavor and --image are required
        ("server", "create", "web", "--flavor", "m1.tiny", "--image", "h", "--count", "0"),
        ("server", "create", "w", "--flavor", "f", "--image", "i", "--count", "2",
         "--min-count", "3"),
        ("server", "list", "--status", "sleepy"),
        ("server", "list", "-c", "nonsense"),
        ("server", "list", "-f", "yaml"),
        ("server", "frobnicate"),
        ("server-group", "create", "g", "--policy", "random"),
    ],
)  # fmt: skip
def test_bad_usage_exits_2_with_usage_and_no_traceback(args):
    done = ctl(*args, address=f"127.0.0.1:{free_port()}")
    assert done.returncode == 2, done
    assert "usage:" in done.stderr and "error:" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_unreachable_scheduler_says_so():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    stderr = failed(address, "server", "list")
    words = f"cannot reach the scheduler at {address}: connection refused"
    assert stderr == f"computectl: error: {words}\n"


# --- against the cluster ------------------------------------------------------------
def test_create_wait_show_every_verb_and_delete(cluster):
    created = as_json(
        cluster, "server", "create", "web", "--flavor", "m1.tiny", "--image", "heartbeat", "--wait"
    )
    assert created["status"] == "ACTIVE" and created["name"] == "web"
    assert created["instance_name"].startswith("instance-") and created["host"] in ("h1", "h2")
    uid = created["id"]
    listed = as_json(cluster, "server", "list")
    assert [(s["id"], s["name"], s["status"]) for s in listed] == [(uid, "web", "ACTIVE")]
    assert value(cluster, "server", "show", "web", "-c", "status") == "ACTIVE"
    assert value(cluster, "server", "show", uid, "-c", "name", "-c", "status") == "web ACTIVE"
    assert value(cluster, "server", "list", "--status", "active", "-c", "name") == "web"
    assert value(cluster, "server", "list", "--host", "nowhere") == ""

    for verb, want in (("stop", "SHUTOFF"), ("start", "ACTIVE"), ("pause", "PAUSED"),
                       ("resume", "ACTIVE")):  # fmt: skip
        assert value(cluster, "server", verb, "web", "--wait", "-c", "status") == want, verb
        assert value(cluster, "server", "show", "web", "-c", "status") == want, verb
    assert value(cluster, "server", "reboot", "web", "--hard", "--wait", "-c", "status") == "ACTIVE"

    deadline = time.monotonic() + 20
    while True:  # the console and the agent's stats sample both take a moment after a reboot
        console = ok(cluster, "server", "console", "web", "--lines", "50")
        shown = as_json(cluster, "server", "show", "web")
        fresh = f"kvm-pit/{shown['pid']}" in shown["helpers"]  # sampled since the reboot
        if "heartbeat: 100 Hz" in console and shown["memory"] > 0 and fresh:
            break
        assert time.monotonic() < deadline, (console, shown)
        time.sleep(0.5)
    assert shown["pid"] > 0 and shown["host_status"] == "UP" and shown["flavor"] == "m1.tiny"
    assert "fault" not in shown  # only shown when there is one
    table = ok(cluster, "server", "show", "web")
    assert table.startswith("+") and "| Field" in table
    assert "MiB" in table and f"kvm-pit/{shown['pid']}:" in table

    assert ok(cluster, "server", "delete", "web") == ""
    done = ctl("server", "show", "web", address=cluster.address)
    assert done.returncode == 1
    assert done.stderr == "computectl: error: server 'web' not found\n"
    time.sleep(1.5)  # past the agent's next report: a late DELETED must not bring it back
    assert ctl("server", "show", uid, address=cluster.address).returncode == 1
    assert as_json(cluster, "server", "list") == []


def test_count_wait_spreads_and_delete_takes_several(cluster):
    done = ctl("server", "create", "spread", "--flavor", "m1.small", "--image", "heartbeat",
               "--count", "3", "--wait", "-f", "json", address=cluster.address)  # fmt: skip
    assert done.returncode == 0, done.stderr
    servers = json.loads(done.stdout)
    assert [s["name"] for s in servers] == ["spread-1", "spread-2", "spread-3"]
    assert {s["status"] for s in servers} == {"ACTIVE"}
    assert {s["host"] for s in servers} == {"h1", "h2"}
    assert "3/3 ACTIVE" in done.stderr
    names = value(cluster, "server", "list", "--name", "spread", "-c", "name").split()
    assert sorted(names) == ["spread-1", "spread-2", "spread-3"]
    stderr = failed(cluster, "server", "delete", "spread-1", "spread-2", "ghost", "spread-3")
    assert "ghost" in stderr and "1 of 4 servers not deleted" in stderr
    assert as_json(cluster, "server", "list") == []


def test_refused_create_is_one_line(cluster):
    stderr = failed(cluster, "server", "create", "x", "--flavor", "m1.huge", "--image", "heartbeat")
    assert stderr.startswith("computectl: error: ") and stderr.count("\n") == 1
    assert "m1.huge" in stderr or "flavor" in stderr
    stderr = failed(cluster, "server", "create", "x", "--flavor", "m1.tiny", "--image", "heartbeat",
                    "--count", "9")  # fmt: skip  # room for 8
    assert stderr.startswith("computectl: error: no valid host") and stderr.count("\n") == 1
    assert as_json(cluster, "server", "list") == []


def test_wait_fails_listing_each_error_reason(cluster):
    done = ctl("server", "create", "boom", "--flavor", "m1.tiny", "--image", "crash", "--wait",
               "--timeout", "60", address=cluster.address)  # fmt: skip
    assert "Traceback" not in done.stderr
    if done.returncode == 1:  # the usual case: the guest crashes during the build
        assert "0/1 ACTIVE (1 ERROR)" in done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith("computectl: error: 1 of 1 servers in ERROR: boom (")
        assert "guest crashed" in last
    else:  # on a loaded machine the agent may report ACTIVE before the triple fault
        assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 20
    while value(cluster, "server", "show", "boom", "-c", "status") != "ERROR":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert "guest crashed" in value(cluster, "server", "show", "boom", "-c", "fault")


class _NeverAnswers(compute_pb2_grpc.ComputeServicer):
    """A scheduler that takes ListServers and holds it until told to let go."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.release = threading.Event()

    def ListServers(self, request, context):
        self.called.set()
        self.release.wait(60)
        return compute_pb2.ListServersResponse()


def test_ctrl_c_exits_130_without_traceback():
    """Interrupted while its request is in flight (the server has it, and holds it)."""
    servicer = _NeverAnswers()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    compute_pb2_grpc.add_ComputeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        proc = subprocess.Popen(
            [COMPUTECTL, "--scheduler", f"127.0.0.1:{port}", "--insecure", "server", "list"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # as a terminal would start it: a runner started in the background by a shell
            # without job control ignores SIGINT, and its children inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert servicer.called.wait(60), "computectl's request never arrived"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        servicer.release.set()
        server.stop(None)
    assert proc.returncode == 130, err
    # gRPC's C core (1.85) sometimes logs its poller's "epoll_wait error: Bad file
    # descriptor" at ^C, in about 1 run in 15 here, GRPC_VERBOSITY=NONE or not: a known
    # wart of ours, left out of the count. computectl's own output is one line.
    ours = [line for line in err.splitlines() if not re.match(r"[EWI]\d{4} [\d:.]+ +\d+ ", line)]
    assert out == "" and "Traceback" not in err and ours == ["computectl: interrupted"], err


def test_hosts(cluster):
    assert value(cluster, "host", "list", "-c", "host", "-c", "state", "-c", "status") == (
        "h1 up enabled\nh2 up enabled"
    )
    shown = as_json(cluster, "host", "show", "h1")
    assert shown["vcpus"] == 4 and shown["memory_mb"] == 512 and shown["agent_address"]
    try:
        disabled = as_json(cluster, "host", "disable", "h1", "--reason", "maintenance")
        assert disabled["status"] == "disabled" and disabled["disabled_reason"] == "maintenance"
        assert value(cluster, "host", "show", "h1", "-c", "disabled_reason") == "maintenance"
    finally:
        enabled = as_json(cluster, "host", "enable", "h1")
    assert enabled["status"] == "enabled"
    assert "not found" in failed(cluster, "host", "show", "h9")
    assert "is up" in failed(cluster, "host", "evacuate", "h1")
    assert ok(cluster, "host", "list").startswith("+")


def test_flavors_and_images(cluster):
    created = as_json(cluster, "flavor", "create", "c1.test", "--vcpus", "2", "--ram", "96")
    assert created == {"name": "c1.test", "vcpus": 2, "ram_mb": 96}
    assert "c1.test 2 96" in value(cluster, "flavor", "list").splitlines()
    assert "m1.tiny 1 64" in value(cluster, "flavor", "list").splitlines()
    assert ok(cluster, "flavor", "delete", "c1.test") == ""
    assert "c1.test" not in ok(cluster, "flavor", "list")
    failed(cluster, "flavor", "delete", "c1.test")
    names = value(cluster, "image", "list", "-c", "name").split()
    assert {"heartbeat", "hello"} <= set(names)
    shown = as_json(cluster, "image", "show", "heartbeat")
    assert shown["name"] == "heartbeat" and shown["bundled"] is True
    assert "not found" in failed(cluster, "image", "show", "nonesuch")


def test_server_groups(cluster):
    group = as_json(cluster, "server-group", "create", "ha", "--policy", "anti-affinity")
    assert group["policy"] == "anti-affinity" and group["soft"] is False and group["members"] == []
    try:
        servers = as_json(cluster, "server", "create", "ha", "--flavor", "m1.tiny", "--image",
                          "heartbeat", "--count", "2", "--group", "ha", "--wait")  # fmt: skip
        assert {s["host"] for s in servers} == {"h1", "h2"}
        (listed,) = as_json(cluster, "server-group", "list")
        assert sorted(listed["members"]) == sorted(s["id"] for s in servers)
        stderr = failed(cluster, "server", "create", "ha3", "--flavor", "m1.tiny", "--image",
                        "heartbeat", "--group", "ha")  # fmt: skip
        assert "anti-affinity" in stderr
        ok(cluster, "server", "delete", *(s["id"] for s in servers))
    finally:
        ctl("server", "delete", "ha-1", "ha-2", address=cluster.address)
        ok(cluster, "server-group", "delete", "ha")
    assert as_json(cluster, "server-group", "list") == []


def test_certificate_required_and_a_reader_may_not_create(cluster, tmp_path):
    """No certificate anywhere: a one-line usage error. A reader's: lists, but create is
    refused with the role it needs. A plaintext try against the TLS scheduler: refused."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "COMPUTED_"))}

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
        argv = [COMPUTECTL, "--scheduler", cluster.address, *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)

    done = run({**base, "HOME": str(tmp_path)}, "server", "list")
    assert done.returncode == 2 and "no client certificate" in done.stderr, done.stderr
    reader = pki_harness.identity("reader", "cli")
    as_reader = {**base, "OS_CACERT": reader.ca, "OS_CERT": reader.cert, "OS_KEY": reader.key}
    assert run(as_reader, "server", "list").returncode == 0
    done = run(as_reader, "server", "create", "r", "--flavor", "m1.tiny", "--image", "heartbeat")
    assert done.returncode == 1, done.stderr
    assert "permission denied" in done.stderr and "needs role admin" in done.stderr
    assert "Traceback" not in done.stderr
    done = run({**base, "HOME": str(tmp_path)}, "--insecure", "server", "list")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
