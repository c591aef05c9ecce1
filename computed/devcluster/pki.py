"""The dev cluster's PKI: a CA and every identity the cluster needs, in <state-dir>/pki/.

Made by `up` when missing (kept when present, so a second `up` reuses it), removed
with the state directory by `down`. Which identity each process uses is decided
here from the plan alone, so `agent_config` and the tests agree without state.
"""

from __future__ import annotations

import os

from computed.devcluster.plan import ClusterPlan, HostPlan
from computed.pki import certs
from computed.pki.directory import PkiDirectory
from computed.tls_files import TlsFiles

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


def operator_dir() -> str:
    """Where computectl looks last (computed/cli/tls.py): ~/.config/computed/."""
    return os.path.join(os.path.expanduser("~"), ".config", "computed")


def link_operator_config(plan: ClusterPlan, config_dir: str | None = None) -> str:
    """Point ~/.config/computed/{ca,cert,key}.pem at this cluster's admin files (symlinks),
    so computectl needs no flags. Files there that are not our links are left alone."""
    config_dir = config_dir or operator_dir()
    admin = admin_files(plan)
    os.makedirs(config_dir, mode=0o700, exist_ok=True)
    for name in OPERATOR_LINKS:  # an operator's own files win: change nothing then
        path = os.path.join(config_dir, name)
        if os.path.lexists(path) and not os.path.islink(path):
            return (
                f"{path} exists and is not a link: computectl uses it, not the dev cluster's admin"
            )
    for name, target in zip(OPERATOR_LINKS, (admin.ca, admin.cert, admin.key), strict=True):
        path = os.path.join(config_dir, name)
        if os.path.islink(path):
            os.unlink(path)
        os.symlink(target, path)
    return f"computectl's certificate: {config_dir} → {os.path.dirname(admin.cert)}"


def unlink_operator_config(plan: ClusterPlan, config_dir: str | None = None) -> None:
    """Remove the links `up` made (only links into this cluster's PKI)."""
    config_dir = config_dir or operator_dir()
    ours = directory(plan).root + os.sep
    for name in OPERATOR_LINKS:
        path = os.path.join(config_dir, name)
        if os.path.islink(path) and os.readlink(path).startswith(ours):
            os.unlink(path)
    if os.path.isdir(config_dir) and not os.listdir(config_dir):
        os.rmdir(config_dir)  # `up` made it; an empty one is no one's
