"""The cluster's network: a bridge in the root namespace, one namespace per host joined to
it by a veth pair. Everything through `ip`; removal is idempotent."""

from __future__ import annotations

import json
import os
import subprocess

from computed.devcluster.plan import ClusterPlan, HostPlan

HOST_BRIDGE = "br0"  # each host's bridge for its instances' taps


class NetError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def namespaces() -> list[str]:
    done = ip("-json", "netns", "list", check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(done.stdout)]


def links(prefix: str) -> list[str]:
    done = ip("-json", "link", "show", check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return []
    return [entry["ifname"] for entry in json.loads(done.stdout)
            if entry["ifname"].startswith(prefix)]  # fmt: skip


def create_bridge(plan: ClusterPlan) -> None:
    if not link_exists(plan.bridge):
        ip("link", "add", plan.bridge, "type", "bridge")
    ip("addr", "replace", f"{plan.bridge_address}/{plan.prefixlen}", "dev", plan.bridge)
    ip("link", "set", plan.bridge, "up")


def create_host(plan: ClusterPlan, host: HostPlan) -> None:
    """The host's namespace, with eth0 on the cluster subnet and lo up."""
    if host.netns not in namespaces():
        ip("netns", "add", host.netns)
    peer = f"{host.veth}p"
    if not link_exists(host.veth):
        ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", host.netns)
        ip("-n", host.netns, "link", "set", peer, "name", "eth0")
    ip("link", "set", host.veth, "master", plan.bridge)
    ip("link", "set", host.veth, "up")
    # Inside, a bridge (as on a compute host) holding eth0 and, later, the instances'
    # taps: instances on any host share the cluster subnet through the root bridge.
    ns = ("-n", host.netns)
    if ip(*ns, "link", "show", "dev", HOST_BRIDGE, check=False).returncode != 0:
        ip(*ns, "link", "add", HOST_BRIDGE, "type", "bridge")
    ip(*ns, "link", "set", "eth0", "master", HOST_BRIDGE)
    ip(*ns, "addr", "replace", f"{host.address}/{plan.prefixlen}", "dev", HOST_BRIDGE)
    for dev in ("eth0", HOST_BRIDGE, "lo"):
        ip(*ns, "link", "set", dev, "up")
    ip(*ns, "route", "replace", "default", "via", plan.bridge_address)


def remove_all(plan: ClusterPlan) -> list[str]:
    """Every namespace, veth and the bridge this cluster's names cover; what was removed."""
    removed = []
    for ns in namespaces():
        if ns.startswith(plan.netns_prefix):
            ip("netns", "delete", ns, check=False)
            removed.append(f"netns {ns}")
    for name in links(f"{plan.tag}v"):  # a veth whose namespace is gone already went with it
        ip("link", "delete", name, check=False)
        removed.append(f"link {name}")
    if link_exists(plan.bridge):
        ip("link", "delete", plan.bridge, check=False)
        removed.append(f"bridge {plan.bridge}")
    return removed


def ensure_tun() -> None:
    """/dev/net/tun, for the VMMs' tap backends (missing in some containers)."""
    if not os.path.exists("/dev/net/tun"):
        os.makedirs("/dev/net", exist_ok=True)
        subprocess.run(["mknod", "/dev/net/tun", "c", "10", "200"], check=False)
