"""Instances on the cluster network: fixed IPs, taps on each host's bridge, pings across hosts."""

from __future__ import annotations

import subprocess

import pytest

from computed.api import compute_pb2
from computed.store import keys
from tests.multinode.conftest import wait_for

pytestmark = pytest.mark.multinode


def ping(address: str, netns: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run(
        [*prefix, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", address],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def taps(netns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", netns, "-o", "link"], capture_output=True, text=True).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": tap" in line]


@pytest.mark.timeout(180)
def test_instances_get_unique_addresses_and_answer_across_hosts(make_cluster):
    mn = make_cluster(hosts=2)
    group = "net"
    mn.stub.CreateServerGroup(
        compute_pb2.CreateServerGroupRequest(
            name=group, policy=compute_pb2.GROUP_POLICY_ANTI_AFFINITY
        ),
        timeout=10,
    )
    a, b = mn.create_active("web", count=2, image="net", group=group)
    assert a.instance.host != b.instance.host
    ips = [s.instance.spec.ip.split("/")[0] for s in (a, b)]
    assert len(set(ips)) == 2 and all(ip.startswith(mn.plan.subnet.rsplit(".", 1)[0]) for ip in ips)
    assert {s.instance.spec.mac for s in (a, b)} == {
        "52:54:00:" + ":".join(f"{int(o):02x}" for o in ip.split(".")[1:]) for ip in ips
    }
    for host in mn.hosts:
        assert len(taps(host.netns)) == 1, taps(host.netns)

    # From the root namespace (the cluster bridge) to each instance, and from a host's
    # namespace to the instance on the other host.
    for ip in ips:
        done = ping(ip)
        assert done.returncode == 0, done.stdout + done.stderr
    other = next(h for h in mn.hosts if h.host_id != a.instance.host)
    done = ping(ips[0], other.netns)
    assert done.returncode == 0, done.stdout + done.stderr

    # One instance pings the other from inside the guest.
    mn.create_active("pinger", image="net", cmdline=f"ping={ips[1]},3")

    def ping_summary():
        request = compute_pb2.ConsoleOutputRequest(name_or_id="pinger")
        text = mn.stub.GetConsoleOutput(request, timeout=10).output
        return text if "3 received" in text else None

    console = wait_for("the guest's ping summary", ping_summary, timeout=20)
    assert console.count(f"reply from {ips[1]}") == 3

    # Stats carry the vhost worker beside kvm-pit.
    def with_vhost_stats():
        server = mn.get("web-1")
        names = {h.name for h in server.stats.helpers}
        return server if f"vhost-{server.instance.pid}" in names else None

    shown = wait_for("stats with the vhost worker", with_vhost_stats, timeout=10)
    assert f"kvm-pit/{shown.instance.pid}" in {h.name for h in shown.stats.helpers}

    # Delete: the tap goes from its host and the address is free again.
    for name in ("web-1", "web-2", "pinger"):
        mn.stub.DeleteServer(compute_pb2.ServerRef(name_or_id=name), timeout=30)
    for host in mn.hosts:
        assert taps(host.netns) == []
    with mn.store() as store:
        entries, _ = store.get_prefix(keys.IPS)
        assert entries == []
    (again,) = mn.create_active("again", image="net")
    assert again.instance.spec.ip.split("/")[0] == min(ips, key=lambda i: int(i.split(".")[-1]))
