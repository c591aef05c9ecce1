"""What a dev cluster consists of, decided from its options before anything is created. Pure.

Every name, address, port and path of a cluster comes from here, so `up`,
`status`, `down` and the tests agree on them, and `down` can find
everything again from the options alone (after a crash, without state).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re

DEFAULT_SUBNET = "10.213.0.0/24"
DEFAULT_STATE_DIR = "/var/tmp/computed-dev"
DEFAULT_TAG = "cd"
MAX_HOSTS = 32
# Half etcd's default (2 GiB): the schedulers' compaction keeps a dev cluster far below
# it (see docs/operations.md, "etcd space"); a leak shows up sooner than on a real one.
DEFAULT_ETCD_QUOTA_MB = 1024
# etcd holds every raft entry since its last snapshot in memory (and 5000 more): one
# entry per stats batch, ~23 KB at 33 instances a host. etcd's default (100000) lets
# that reach gigabytes before the first snapshot; with kubeadm's 10000 a 30-minute
# soak's etcd still grew at the end, with 2000 it held at 155-175 MiB.
DEFAULT_ETCD_SNAPSHOT_COUNT = 2000
_FIRST_HOST_OFFSET = 10  # hosts at .11, .12, ...; .1 is the bridge
_FIRST_INSTANCE_OFFSET = 99  # instances from .100 to the end of the subnet
_TAG = re.compile(r"[a-z][a-z0-9]{0,5}")


class PlanError(ValueError):
    """Options that cannot make a cluster; the message names the option."""


@dataclasses.dataclass(frozen=True)
class HostPlan:
    index: int  # 1-based
    host_id: str
    netns: str
    veth: str  # root-namespace end, on the bridge; the other end is eth0 in the netns
    address: str  # in the netns, on the cluster subnet
    agent_address: str  # host:port its Agent gRPC service listens on
    state_dir: str
    zone: str
    vcpus: int
    memory_mb: int


@dataclasses.dataclass(frozen=True)
class ClusterPlan:
    tag: str  # prefix of every interface and namespace-name part
    subnet: str
    prefixlen: int
    bridge: str
    bridge_address: str  # the root namespace's address on the subnet
    state_dir: str
    etcd_endpoint: str  # what agents (in their namespaces) and schedulers use
    etcd_peer_url: str
    scheduler_addresses: tuple[str, ...]
    hosts: tuple[HostPlan, ...]
    lease_ttl: int
    instance_range: str  # FIRST-LAST: the schedulers hand these out to instances
    etcd_quota_mb: int = DEFAULT_ETCD_QUOTA_MB  # etcd's --quota-backend-bytes, in MiB
    etcd_snapshot_count: int = DEFAULT_ETCD_SNAPSHOT_COUNT  # etcd's --snapshot-count
    # More than one: a real etcd cluster on this machine (computed/devcluster/etcd_members.py),
    # member i serving clients on etcd port + 2i (bridge and loopback), peers on + 2i + 1.
    etcd_members: int = 1

    @property
    def etcd_endpoints(self) -> tuple[str, ...]:
        """Every etcd member's client address (etcd_endpoint names them all, comma-separated)."""
        return tuple(self.etcd_endpoint.split(","))

    @property
    def netns_prefix(self) -> str:
        """Every host namespace's name starts with this (and nothing else's does)."""
        return "computed-host-" if self.tag == DEFAULT_TAG else f"computed-{self.tag}-host-"

    @property
    def etcd_data_dir(self) -> str:
        return os.path.join(self.state_dir, "etcd")

    @property
    def log_dir(self) -> str:
        return os.path.join(self.state_dir, "logs")

    @property
    def state_file(self) -> str:
        return os.path.join(self.state_dir, "cluster.json")

    def log(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")


def make_plan(
    hosts: int = 3,
    subnet: str = DEFAULT_SUBNET,
    state_dir: str = DEFAULT_STATE_DIR,
    tag: str = DEFAULT_TAG,
    schedulers: int = 1,
    scheduler_port: int = 8774,
    etcd_port: int = 2379,
    agent_port: int = 8775,
    zones: int = 1,
    host_vcpus: int = 2,
    host_memory_mb: int = 4096,
    lease_ttl: int = 10,
    etcd_members: int = 1,
    etcd_quota_mb: int = DEFAULT_ETCD_QUOTA_MB,
    etcd_snapshot_count: int = DEFAULT_ETCD_SNAPSHOT_COUNT,
) -> ClusterPlan:
    """The cluster these options describe, or PlanError naming the bad option."""
    if not _TAG.fullmatch(tag):
        raise PlanError(f"--tag {tag!r}: 1-6 lowercase letters and digits, starting with a letter")
    if not 1 <= hosts <= MAX_HOSTS:
        raise PlanError(f"--hosts {hosts}: must be 1..{MAX_HOSTS}")
    if not 1 <= schedulers <= 4:
        raise PlanError(f"--schedulers {schedulers}: must be 1..4")
    if not 1 <= zones <= hosts:
        raise PlanError(f"--zones {zones}: must be 1..{hosts} (the number of hosts)")
    if host_vcpus < 1 or host_memory_mb < 256:
        raise PlanError("--host-vcpus must be >= 1 and --host-memory-mb >= 256")
    if etcd_members not in (1, 3, 5):
        raise PlanError(f"--etcd-members {etcd_members}: 1, 3 or 5 (a quorum needs an odd size)")
    if not 2 <= lease_ttl <= 60:
        raise PlanError(f"--lease-ttl {lease_ttl}: must be 2..60 seconds")
    if not 1 <= etcd_quota_mb <= 8192:
        raise PlanError(f"--etcd-quota-mb {etcd_quota_mb}: must be 1..8192 (etcd's maximum)")
    for name, port in (("--scheduler-port", scheduler_port), ("--etcd-port", etcd_port),
                       ("--agent-port", agent_port)):  # fmt: skip
        if not 1024 <= port <= 65535 - 4:
            raise PlanError(f"{name} {port}: must be 1024..65531")
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as e:
        raise PlanError(f"--subnet {subnet!r}: {e}") from None
    if not net.is_private or net.prefixlen > 26:
        raise PlanError(f"--subnet {subnet}: must be a private IPv4 network of /26 or larger")
    if not os.path.isabs(state_dir) or len(state_dir) > 40:
        # VMM control sockets live below it and unix socket paths are short (108 bytes).
        raise PlanError(f"--state-dir {state_dir!r}: must be an absolute path of at most 40 chars")
    state_dir = os.path.normpath(state_dir)
    addresses = list(net.hosts())
    bridge_address = str(addresses[0])
    plan_hosts = []
    for i in range(1, hosts + 1):
        host_id = f"host-{i}" if tag == DEFAULT_TAG else f"{tag}-host-{i}"
        address = str(addresses[_FIRST_HOST_OFFSET + i - 1])
        plan_hosts.append(HostPlan(
            index=i, host_id=host_id, netns=f"computed-{host_id}",
            veth=f"{tag}v{i}", address=address, agent_address=f"{address}:{agent_port}",
            state_dir=os.path.join(state_dir, "hosts", host_id),
            zone="nova" if zones == 1 else f"az{(i - 1) % zones + 1}",
            vcpus=host_vcpus, memory_mb=host_memory_mb,
        ))  # fmt: skip
    return ClusterPlan(
        tag=tag,
        subnet=str(net),
        prefixlen=net.prefixlen,
        bridge=f"{tag}br0",
        bridge_address=bridge_address,
        state_dir=state_dir,
        etcd_endpoint=",".join(
            f"{bridge_address}:{etcd_port + 2 * i}" for i in range(etcd_members)
        ),
        etcd_peer_url=f"http://127.0.0.1:{etcd_port + 1}",
        scheduler_addresses=tuple(f"127.0.0.1:{scheduler_port + i}" for i in range(schedulers)),
        hosts=tuple(plan_hosts),
        lease_ttl=lease_ttl,
        instance_range=f"{addresses[_FIRST_INSTANCE_OFFSET]}-{addresses[-1]}",
        etcd_members=etcd_members,
        etcd_quota_mb=etcd_quota_mb,
        etcd_snapshot_count=etcd_snapshot_count,
    )
