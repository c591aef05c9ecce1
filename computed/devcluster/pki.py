"""The dev cluster's PKI: a CA and every identity the cluster needs, in <state-dir>/pki/.

Made by `up` when missing (kept when present, so a second `up` reuses it), removed
with the state directory by `down`. Which identity each process uses is decided
here from the plan alone, so `agent_config` and the tests agree without state.
"""

from __future__ import annotations

import os

from computed.pki import certs
from computed.pki.directory import PkiDirectory
from computed.tls_files import TlsFiles
from computed.devcluster.plan import ClusterPlan, HostPlan

OPERATOR_LINKS = ("ca.pem", "cert.pem", "key.pem")  # ~/.config/computed/<name> → admin's


def directory(plan: ClusterPlan) -> PkiDirectory:
    return PkiDirectory(os.path.join(plan.state_dir, "pki"))


def scheduler_files(plan: ClusterPlan, i: int) -> TlsFiles:
    return directory(plan).files(certs.identity_for("scheduler", str(i + 1)))


def agent_files(plan: ClusterPlan, host: HostPlan) -> TlsFiles:
    return directory(plan).files(certs.identity_for("agent", host.host_id))


def admin_files(plan: ClusterPlan) -> TlsFiles:
    return directory(plan).files("admin")


def etcd_files(plan: ClusterPlan, role: str) -> TlsFiles:
    """etcd's server pair ("etcd-server") or the provisioning root's ("etcd-root")."""
    return directory(plan).files(certs.identity_for(role, "devcluster"))


def ensure(plan: ClusterPlan) -> PkiDirectory:
    """The CA and one certificate per process and role; existing ones are kept."""
    pki = directory(plan)
    if not pki.exists():
        pki.init()
    wanted: list[tuple[str, str | None, list[str]]] = [
        ("admin", None, []),
        ("reader", "devcluster", []),
        ("etcd-root", None, []),
        ("etcd-server", "devcluster", [plan.bridge_address, "127.0.0.1"]),
    ]
    for i, _ in enumerate(plan.scheduler_addresses):
        wanted.append(("scheduler", str(i + 1), ["127.0.0.1", plan.bridge_address]))
    for host in plan.hosts:
        wanted.append(("agent", host.host_id, [host.address]))
    for role, name, sans in wanted:
        if not os.path.exists(pki.files(certs.identity_for(role, name)).cert):
            pki.issue(role, name, sans)
    return pki
