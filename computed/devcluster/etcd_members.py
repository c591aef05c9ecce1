"""The command line of one member of an etcd cluster on loopback. Pure.

A real 3-member cluster on one machine, as the dev cluster (`--etcd-members 3`),
the scale run and the multi-node tests use it: each member has its own data
directory and its own client and peer ports, and --initial-cluster names
every member. A restarted member finds its data directory and ignores the
--initial-* flags, so the same command restarts it. History older than five
minutes is compacted away.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from computed.devcluster.plan import ClusterPlan
    from computed.tls_files import TlsFiles


def member_names(members: int) -> list[str]:
    return [f"m{i}" for i in range(members)]


def etcd_member_command(
    names: list[str],
    client_ports: list[int],
    peer_ports: list[int],
    i: int,
    root: str,
    client_host: str = "127.0.0.1",
    scheme: str = "http",
) -> list[str]:
    """etcd's flags (without the binary) for member `i`; its data goes in <root>/<name>.
    Peers talk on loopback; clients reach a member on `client_host` (and on loopback)."""
    if not len(names) == len(client_ports) == len(peer_ports):
        raise ValueError("one name, client port and peer port per member")
    client = f"{scheme}://{client_host}:{client_ports[i]}"
    listen = client
    if client_host != "127.0.0.1":
        listen += f",{scheme}://127.0.0.1:{client_ports[i]}"
    peer = f"http://127.0.0.1:{peer_ports[i]}"
    cluster = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports, strict=True))
    return [
        "--name", names[i],
        "--data-dir", os.path.join(root, names[i]),
        "--listen-client-urls", listen,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster,
        "--initial-cluster-token", f"computed-{os.path.basename(root.rstrip('/'))}",
        "--initial-cluster-state", "new",
        # Keep 5 minutes of history: without compaction every stats write stays in the
        # database and a fleet reaches etcd's 2 GiB quota within hours (docs/scale.md).
        # A watcher that falls further behind gets WatchCompacted and re-reads.
        "--auto-compaction-mode", "periodic",
        "--auto-compaction-retention", "5m",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]  # fmt: skip


def etcd_member_argvs(
    plan: ClusterPlan, binary: str, tls: TlsFiles | None = None
) -> list[tuple[str, list[str]]]:
    """(process name, argv) of each member of a dev cluster's etcd (`--etcd-members N`):
    member i's clients on the plan's i-th endpoint, its peer port right after it, its
    data in <state-dir>/etcd/m<i>. `tls`: the members' server pair; clients then need
    https and a certificate of the cluster CA (peers stay on loopback, plaintext)."""
    hosts_ports = [e.rsplit(":", 1) for e in plan.etcd_endpoints]
    client_ports = [int(port) for _, port in hosts_ports]
    names = member_names(len(client_ports))
    root = plan.etcd_data_dir
    return [
        (
            f"etcd-{names[i]}",
            [
                binary,
                *etcd_member_command(
                    names,
                    client_ports,
                    [p + 1 for p in client_ports],
                    i,
                    root,
                    hosts_ports[i][0],
                    "https" if tls else "http",
                ),
                *(
                    [
                        "--cert-file",
                        tls.cert,
                        "--key-file",
                        tls.key,
                        "--trusted-ca-file",
                        tls.ca,
                        "--client-cert-auth",
                    ]
                    if tls
                    else []
                ),
                # as the single-member dev etcd: a backend quota, memory bounded by snapshots
                "--quota-backend-bytes",
                str(plan.etcd_quota_mb * 1024 * 1024),
                "--snapshot-count",
                str(plan.etcd_snapshot_count),
            ],
        )
        for i in range(len(names))
    ]
