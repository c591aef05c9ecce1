"""Who may touch which etcd keys, and turning that on in a cluster.

etcd started with --client-cert-auth takes a client certificate's CN as its
user name. computed's certificates follow one convention (docs/keyspace.md):

| CN                | etcd user        | role(s)                                    |
|-------------------|------------------|--------------------------------------------|
| `root`            | root             | root (provisioning only)                   |
| `scheduler-<n>`   | scheduler-<n>    | computed-scheduler: readwrite /computed/   |
| `agent-<host-id>` | agent-<host-id>  | computed-agent-<host-id>: that host's keys |

An agent's role can write its host record, its liveness key, its reports and
its stats, and read the instance records it reports against; nothing else.
A stolen agent certificate can therefore neither claim capacity, place or
change an instance, touch a flavor, nor speak for another host.

The permission tables are pure; `provision` and `grant_host` do the I/O,
idempotently, so running them again (or after adding a host) is safe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from computed.store import keys
from computed.store.errors import StoreError
from computed.tls_files import TlsFiles

READ, WRITE, READWRITE = "read", "write", "readwrite"
ROOT_USER = ROOT_ROLE = "root"
SCHEDULER_ROLE = "computed-scheduler"
DEFAULT_SCHEDULERS = ("scheduler-1", "scheduler-2", "scheduler-3")


@dataclasses.dataclass(frozen=True)
class Grant:
    """`perm` on the key `key` alone (range_end "") or on every key in [key, range_end)."""

    key: str
    range_end: str
    perm: str


def _prefix(prefix: str, perm: str) -> Grant:
    return Grant(prefix, keys.prefix_end(prefix), perm)


def agent_user(host_id: str) -> str:
    """The etcd user (and certificate CN) of a host's agent."""
    return "agent-" + keys.segment(host_id, "host id")


def agent_role(host_id: str) -> str:
    return "computed-agent-" + keys.segment(host_id, "host id")


def agent_permissions(host_id: str) -> list[Grant]:
    """What one host's agent may do: write its own keys, read the records it reports on."""
    return [
        Grant(keys.host(host_id), "", READWRITE),
        Grant(keys.liveness(host_id), "", READWRITE),
        _prefix(keys.reports(host_id), READWRITE),
        _prefix(keys.host_stats_prefix(host_id), READWRITE),
        _prefix(keys.INSTANCES, READ),
        # images, fetched by digest when an instance first needs one (agent/image_cache.py)
        _prefix(keys.IMAGE_BLOBS, READ),
        _prefix(keys.IMAGE_CHUNKS, READ),
    ]


def scheduler_permissions() -> list[Grant]:
    """Schedulers read everything and write claims, records, catalog and cleanups."""
    return [_prefix(keys.ROOT, READWRITE), _prefix(keys.IMAGE_CHUNKS, READWRITE)]


def provision(
    endpoints: list[str],
    root: TlsFiles,
    host_ids: list[str],
    schedulers: Sequence[str] = DEFAULT_SCHEDULERS,
) -> None:
    """Create the root user and role, the scheduler role and users, one role and user
    per agent host, then enable auth. Idempotent: run it again to add hosts.

    `root`: a client pair whose CN is `root` (etcd takes the user from it once
    auth is on; before that, any client of the cluster CA may do this).
    """
    from computed.store.client import Store  # the etcd client only for callers that do I/O

    with Store(endpoints, tls=root) as store:
        admin = store.auth_admin()
        admin.add_user(ROOT_USER)
        admin.add_role(ROOT_ROLE)
        admin.grant_role(ROOT_USER, ROOT_ROLE)
        admin.add_role(SCHEDULER_ROLE)
        for grant in scheduler_permissions():
            admin.grant_permission(SCHEDULER_ROLE, grant.key, grant.range_end, grant.perm)
        for name in schedulers:
            admin.add_user(name)
            admin.grant_role(name, SCHEDULER_ROLE)
        for host_id in host_ids:
            _grant_host(admin, host_id)
        admin.enable()


def grant_host(endpoints: list[str], root: TlsFiles, host_id: str) -> None:
    """Add one agent host's role and user to a cluster whose auth is already on."""
    from computed.store.client import Store

    with Store(endpoints, tls=root) as store:
        _grant_host(store.auth_admin(), host_id)


def grant_scheduler(endpoints: list[str], root: TlsFiles, name: str) -> None:
    """Add one more scheduler user (CN `name`) to the scheduler role."""
    from computed.store.client import Store

    with Store(endpoints, tls=root) as store:
        admin = store.auth_admin()
        admin.add_user(name)
        admin.grant_role(name, SCHEDULER_ROLE)


def _grant_host(admin, host_id: str) -> None:  # admin: computed.store.client.AuthAdmin
    role = agent_role(host_id)
    admin.add_role(role)
    for grant in agent_permissions(host_id):
        admin.grant_permission(role, grant.key, grant.range_end, grant.perm)
    admin.add_user(agent_user(host_id))
    admin.grant_role(agent_user(host_id), role)


def main(argv: list[str] | None = None) -> None:
    """python -m computed.store.etcd_auth --etcd EP --cacert CA --cert ROOT.pem --key ROOT-key.pem
    provision HOST... | grant-host HOST | grant-scheduler NAME"""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m computed.store.etcd_auth",
        description="Create computed's etcd users and roles (as root) and turn auth on.",
    )
    p.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated")
    p.add_argument("--cacert", required=True, help="the cluster CA")
    p.add_argument("--cert", required=True, help="a client certificate with CN root")
    p.add_argument("--key", required=True, help="its private key")
    p.add_argument("action", choices=("provision", "grant-host", "grant-scheduler"))
    p.add_argument("names", nargs="*", help="host ids (provision, grant-host) or a user name")
    args = p.parse_args(argv)
    endpoints = [e.strip() for e in args.etcd.split(",") if e.strip()]
    root = TlsFiles(args.cacert, args.cert, args.key)
    if args.action != "provision" and len(args.names) != 1:
        p.error(f"{args.action} takes exactly one name")
    try:
        if args.action == "provision":
            provision(endpoints, root, args.names)
        elif args.action == "grant-host":
            grant_host(endpoints, root, args.names[0])
        else:
            grant_scheduler(endpoints, root, args.names[0])
    except (StoreError, OSError, ValueError) as e:  # a bad id, a missing file, etcd's refusal
        raise SystemExit(f"{p.prog}: error: {e}") from None


if __name__ == "__main__":
    main()
