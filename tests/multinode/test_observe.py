"""Seeing the fleet on a live dev cluster: `computectl top`, /metrics, the action log.

Everything real: the dev cluster's agents in their namespaces, real VMMs, the
computectl console script in a subprocess (under a real pseudo-terminal for the
live view), /metrics over HTTP parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from computed import metrics
from computed.api import compute_pb2
from computed.devcluster.cluster import metrics_urls, scheduler_metrics_address
from computed.store import keys
from tests.multinode.conftest import pid_alive, status
from tests.waiting import wait_until

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(600)]
COMPUTECTL = os.path.join(os.path.dirname(sys.executable), "computectl")


def computectl(node, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [COMPUTECTL, "--scheduler", node.plan.scheduler_addresses[0], *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def top_json(node) -> dict:
    done = computectl(node, "top", "-n", "1", "-f", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample at `url`: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, metric: str, /, **labels: str) -> float | None:
    for (n, found), v in samples.items():
        if n == metric and all(dict(found).get(k) == want for k, want in labels.items()):
            return v
    return None


def helper_ns(server: compute_pb2.Server, prefix: str) -> int | None:
    return next((h.cpu_time_ns for h in server.stats.helpers if h.name.startswith(prefix)), None)


# --- computectl top ----------------------------------------------------------------


def test_top_snapshot_and_live_view(devcluster):
    node = devcluster
    servers = node.create_active("obs", count=3)
    uuids = {s.instance.spec.uuid for s in servers}

    def sampled():
        shot = top_json(node)
        rows = {r["id"]: r for r in shot["instances"]}
        ok = uuids <= set(rows) and all(
            rows[u]["sampled_at"] and rows[u]["helpers"]["kvm-pit"]["cpu_time"] > 0 for u in uuids
        )
        return shot if ok else None

    shot = wait_until(sampled, timeout=60, interval=0.5, what="every instance sampled")
    rows = {r["id"]: r for r in shot["instances"]}
    for s in servers:
        row = rows[s.instance.spec.uuid]
        assert row["name"] == s.name and row["status"] == "ACTIVE"
        assert row["host"] == s.instance.host
        assert row["vcpu_time"] > 0
        assert row["helpers"]["vhost"]["kind"] in ("kernel", "userspace")  # it has a NIC
    assert {h["host"] for h in shot["hosts"]} == {h.host_id for h in node.hosts}
    assert all(h["state"] == "up" and h["cpu_percent"] is not None for h in shot["hosts"])
    # Filters and sorting apply to the snapshot too.
    one_host = servers[0].instance.host
    done = computectl(node, "top", "-n", "2", "-f", "json", "--host", one_host, "-d", "0.5")
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout.splitlines()[1])
    assert {r["host"] for r in second["instances"]} == {one_host}
    # The second snapshot has rates from counters: a number, or None when no new sample.
    assert all("cpu_percent" in r["helpers"]["kvm-pit"] for r in second["instances"])
    # Not a terminal and no -n: one table, then exit.
    done = computectl(node, "top")
    assert done.returncode == 0, done.stderr
    assert "PIT TIME" in done.stdout and "obs-1" in done.stdout

    _live_view_under_a_pty(node, [s.name for s in servers])


def _live_view_under_a_pty(node, names: list[str]) -> None:
    """The full-screen view starts, redraws as snapshots arrive, obeys keys, and quits
    with the terminal given back."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    proc = subprocess.Popen(
        [COMPUTECTL, "--scheduler", node.plan.scheduler_addresses[0], "top", "-d", "0.5"],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    seen = bytearray()

    def read_some() -> bytes:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen.extend(os.read(master, 65536))
            except OSError:
                pass
        return bytes(seen)

    try:

        def drawn_with_every_name() -> bool:
            text = read_some()
            return b"\x1b[?1049h" in text and all(n.encode() in text for n in names)

        wait_until(drawn_with_every_name, timeout=60, what="the live view drawn")
        drawn = bytes(seen).count(b"computectl top")
        wait_until(lambda: read_some().count(b"computectl top") >= drawn + 3,
                   timeout=60, what="the view redrawn with new snapshots")  # fmt: skip
        os.write(master, b"N")  # sort by name
        wait_until(lambda: b"NAME ^" in read_some(), timeout=30, what="sorted by name")
        os.write(master, b"q")
        wait_until(lambda: proc.poll() is not None or (read_some() and None),
                   timeout=30, what="top to quit")  # fmt: skip
        assert proc.returncode == 0, bytes(seen)[-2000:]
        wait_until(
            lambda: b"\x1b[?1049l" in read_some(), timeout=10, what="the alternate screen left"
        )  # fmt: skip: all of its output drained
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


# --- /metrics -----------------------------------------------------------------------


def test_metrics_match_server_show(devcluster):
    node = devcluster
    (server,) = node.create_active("met")
    uuid, host_id = server.instance.spec.uuid, server.instance.host
    host = node.host(host_id)
    agent_url = f"http://{metrics.agent_default(host.agent_address)}/metrics"
    assert agent_url in metrics_urls(node.plan)

    def consistent():
        """show, scrape, show: the scrape lies between; equal when no new sample came."""
        before = node.get(uuid)
        scraped = scrape(agent_url)
        after = node.get(uuid)
        pit = value(scraped, "computed_instance_cpu_seconds_total", uuid=uuid, kind="kvm-pit")
        if not before.stats.sampled_at or pit is None or helper_ns(before, "kvm-pit") is None:
            return None
        assert helper_ns(before, "kvm-pit") / 1e9 <= pit <= helper_ns(after, "kvm-pit") / 1e9
        if before.stats.sampled_at != after.stats.sampled_at:
            return None  # a sample landed in between: try again for an exact comparison
        return before, scraped

    shown, scraped = wait_until(consistent, timeout=60, interval=0.2, what="a steady sample")
    who = {"uuid": uuid, "name": shown.instance.spec.name, "host": host_id}
    assert value(scraped, "computed_instance_cpu_seconds_total", kind="kvm-pit", **who) == (
        helper_ns(shown, "kvm-pit") / 1e9
    )
    assert value(scraped, "computed_instance_cpu_seconds_total", kind="vhost", **who) == (
        helper_ns(shown, "vhost") / 1e9
    )
    assert value(scraped, "computed_instance_process_cpu_seconds_total", **who) == (
        shown.stats.cpu_time_ns / 1e9
    )
    assert value(scraped, "computed_instance_memory_rss_bytes", **who) == shown.stats.memory_rss
    assert value(scraped, "computed_instance_cpu_seconds_total", kind="vcpu", **who) > 0
    assert value(scraped, "computed_instance_state", status="ACTIVE", power_state="RUNNING",
                 **who) == 1  # fmt: skip
    assert value(scraped, "computed_instance_memory_bytes", **who) == (
        shown.instance.spec.memory_mb * 1024 * 1024
    )
    shown_host = node.stub.GetHost(compute_pb2.HostRef(host_id=host_id), timeout=10)
    assert value(scraped, "computed_host_capacity_vcpus", host=host_id) == shown_host.info.vcpus
    assert value(scraped, "computed_host_allocated_vcpus", host=host_id) == (
        shown.instance.spec.vcpus
    )
    assert value(scraped, "computed_host_instances", host=host_id) == 1
    assert value(scraped, "computed_agent_spawn_seconds_count") >= 1
    assert value(scraped, "computed_agent_etcd_write_seconds_count", op="put_many") >= 1
    assert value(scraped, "computed_agent_etcd_write_seconds_count", op="txn") >= 1

    sched = scrape(f"http://{scheduler_metrics_address(node.plan, 0)}/metrics")
    assert value(sched, "computed_scheduler_decisions_total", result="placed") >= 1
    assert value(sched, "computed_scheduler_placement_seconds_count") >= 1
    assert value(sched, "computed_scheduler_builds_total", result="active") >= 1
    assert value(sched, "computed_scheduler_watch_lag_seconds_count") >= 1
    for h in node.hosts:
        assert value(sched, "computed_scheduler_host_up", host=h.host_id) == 1
    assert value(sched, "computed_scheduler_host_allocated_vcpus", host=host_id) == (
        shown_host.info.allocated_vcpus
    )
    assert value(sched, "computed_scheduler_instances", status="ACTIVE") == 1
    assert value(sched, "computed_scheduler_cache_synced") == 1
    # No new placement was refused, and asking for the impossible counts as refused.
    refused = value(sched, "computed_scheduler_decisions_total", result="no_valid_host") or 0
    big = compute_pb2.CreateServersRequest(name="huge", flavor="m1.tiny", image="heartbeat",
                                           count=500)  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017 - the RPC error's type is grpc's
        node.stub.CreateServers(big, timeout=60)
    sched = scrape(f"http://{scheduler_metrics_address(node.plan, 0)}/metrics")
    assert value(sched, "computed_scheduler_decisions_total", result="no_valid_host") > refused


# --- the action log -----------------------------------------------------------------


def events(node, name: str) -> compute_pb2.ListServerEventsResponse:
    return node.stub.ListServerEvents(compute_pb2.ServerRef(name_or_id=name), timeout=10)


def test_lifecycle_leaves_the_action_log_in_order(devcluster):
    node = devcluster
    (server,) = node.create_active("life")
    uuid = server.instance.spec.uuid

    def act(method: str, want: str) -> None:
        request = compute_pb2.ServerRef(name_or_id="life")
        if method == "RebootServer":
            request = compute_pb2.RebootServerRequest(name_or_id="life")
        getattr(node.stub, method)(request, timeout=60)
        wait_until(lambda: status(node.get(uuid)) == want, timeout=60, what=f"{method}: {want}")

    act("StopServer", "SHUTOFF")
    act("StartServer", "ACTIVE")
    act("RebootServer", "ACTIVE")
    act("PauseServer", "PAUSED")
    act("ResumeServer", "ACTIVE")
    # Refused (already ACTIVE): logged as an error, with the agent's words.
    with pytest.raises(Exception):  # noqa: B017 - grpc's RpcError
        node.stub.ResumeServer(compute_pb2.ServerRef(name_or_id="life"), timeout=30)

    # Killed from outside: nobody asked, the log says crash.
    pid = wait_until(lambda: node.get(uuid).instance.pid, timeout=30, what="the VMM's pid")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=30, what="the VMM gone")
    wait_until(lambda: status(node.get(uuid)) == "ERROR", timeout=60, what="ERROR after kill")
    wait_until(lambda: any(e.action == "crash" for e in events(node, "life").events),
               timeout=30, what="the crash logged")  # fmt: skip
    act("StartServer", "ACTIVE")
    node.stub.DeleteServer(compute_pb2.ServerRef(name_or_id="life"), timeout=60)

    log = events(node, "life")  # a deleted server's log is still there, by name
    assert log.deleted and log.uuid == uuid and log.name == "life"
    got = [(e.action, e.result) for e in log.events]
    assert got == [
        ("create", "success"), ("stop", "success"), ("start", "success"),
        ("reboot", "success"), ("pause", "success"), ("resume", "success"),
        ("resume", "error"), ("crash", "error"), ("start", "success"), ("delete", "success"),
    ]  # fmt: skip
    times = [e.at for e in log.events]
    assert times == sorted(times)
    by_action = {e.action: e for e in log.events}
    assert by_action["crash"].requester == "system" and "SIGKILL" in by_action["crash"].message
    assert all(e.requester == "admin" for e in log.events if e.action != "crash")
    assert by_action["reboot"].message == "soft"
    assert "cannot resume" in next(e for e in log.events if e.result == "error").message
    assert all(e.host == server.instance.host for e in log.events)

    # The CLI shows the same, as a table and as JSON.
    done = computectl(node, "server", "event", "list", "life", "-f", "json")
    assert done.returncode == 0, done.stderr
    assert [r["action"] for r in json.loads(done.stdout)] == [a for a, _ in got]
    done = computectl(node, "server", "event", "list", "nosuch")
    assert done.returncode == 1 and "not found" in done.stderr

    # The kill shows in the host's agent's metrics as an exit nobody asked for.
    url = f"http://{metrics.agent_default(node.host(server.instance.host).agent_address)}/metrics"
    scraped = scrape(url)
    assert value(scraped, "computed_agent_vmm_exits_total", cause="SIGKILL", requested="no") == 1
    # The log of a deleted server lives on a lease, so it goes by itself.
    with node.store() as store:
        entry = store.get(keys.actions(uuid))
        assert entry is not None and entry.lease != 0
        for name in ("life", server.instance.spec.name):  # how it is found by name
            index = store.get(keys.deleted_server(name))
            assert index.value.decode() == uuid and index.lease == entry.lease


def test_evacuation_is_logged(devcluster):
    node = devcluster
    (server,) = node.create_active("moved")
    source = node.host(server.instance.host)
    node.cluster.kill_agent(source)  # its VMM runs on, but the host goes down
    node.wait_host(source.host_id, up=False, timeout=node.plan.lease_ttl + 30)
    node.stub.EvacuateHost(compute_pb2.HostRef(host_id=source.host_id), timeout=120)
    moved = node.get(server.instance.spec.uuid)
    assert moved.instance.host != source.host_id
    log = events(node, "moved")
    assert [(e.action, e.result) for e in log.events] == [
        ("create", "success"), ("evacuate", "success"),
    ]  # fmt: skip
    assert log.events[1].message == f"from {source.host_id} to {moved.instance.host}"
    assert log.events[1].host == moved.instance.host
