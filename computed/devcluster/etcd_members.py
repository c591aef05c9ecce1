"""The command line of one member of an etcd cluster on loopback. Pure.

A real 3-member cluster on one machine, as the dev cluster (`--etcd-members 3`),
the scale run and the multi-node tests use it: each member has its own data
directory and its own client and peer ports, and --initial-cluster names
every member. A restarted member finds its data directory and ignores the
--initial-* flags, so the same command restarts it.
"""

from __future__ import annotations

import os


def member_names(members: int) -> list[str]:
    return [f"m{i}" for i in range(members)]


def etcd_member_command(
    names: list[str],
    client_ports: list[int],
    peer_ports: list[int],
    i: int,
    root: str,
    host: str = "127.0.0.1",
) -> list[str]:
    """etcd's flags (without the binary) for member `i`; its data goes in <root>/<name>."""
    if not len(names) == len(client_ports) == len(peer_ports):
        raise ValueError("one name, client port and peer port per member")
    client = f"http://{host}:{client_ports[i]}"
    peer = f"http://{host}:{peer_ports[i]}"
    cluster = ",".join(f"{n}=http://{host}:{p}" for n, p in zip(names, peer_ports, strict=True))
    return [
        "--name", names[i],
        "--data-dir", os.path.join(root, names[i]),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster,
        "--initial-cluster-token", f"computed-{os.path.basename(root.rstrip('/'))}",
        "--initial-cluster-state", "new",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]  # fmt: skip
