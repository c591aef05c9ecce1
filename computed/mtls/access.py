"""Who may call what: one table per gRPC server, method → roles allowed. Pure.

The only place access is decided. It fails closed: a method missing from its
table is refused to everyone (a new RPC is unusable until someone decides who
may call it; tests/unit/test_mtls_access.py checks every RPC in the protos is
listed). Roles come from the caller's certificate (computed/caller.py).

- admin: everything on the public API.
- reader: list, show, get, watch; no create, delete, console or lifecycle.
- scheduler: the only role an agent accepts.
- agent: nothing on the public API beyond health (an agent never calls the
  scheduler; a stolen agent certificate must not place or change anything).
"""

from __future__ import annotations

from collections.abc import Mapping

COMPUTE = "computed.v1.Compute"
AGENT = "computed.v1.Agent"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"

ADMIN = frozenset({"admin"})
READERS = frozenset({"admin", "reader"})
SCHEDULER = frozenset({"scheduler"})
ANY_ROLE = frozenset({"admin", "reader", "scheduler", "agent"})

AccessTable = Mapping[str, frozenset[str]]

_COMPUTE_READ = (
    "GetServer", "ListServers", "WatchServers", "ListHosts", "GetHost",
    "ListFlavors", "ListImages", "GetImage", "ListServerGroups", "WatchTop", "ListServerEvents",
)  # fmt: skip
_COMPUTE_ADMIN = (
    "CreateServers", "DeleteServer", "StopServer", "StartServer", "RebootServer",
    "PauseServer", "ResumeServer", "GetConsoleOutput", "EnableHost", "DisableHost",
    "EvacuateHost", "CreateFlavor", "DeleteFlavor", "CreateServerGroup", "DeleteServerGroup",
    "CreateImage", "DeleteImage",
)  # fmt: skip
_AGENT_RPCS = (
    "Spawn", "Stop", "Start", "Reboot", "Pause", "Resume", "Delete", "Get", "List",
    "GetConsoleOutput", "GetHostInfo",
)  # fmt: skip


def _health(roles: frozenset[str]) -> dict[str, frozenset[str]]:
    return {f"/{HEALTH}/Check": roles, f"/{HEALTH}/Watch": roles}


def _reflection(roles: frozenset[str]) -> dict[str, frozenset[str]]:
    return {f"/{REFLECTION}/ServerReflectionInfo": roles}


SCHEDULER_ACCESS: AccessTable = {
    **{f"/{COMPUTE}/{m}": READERS for m in _COMPUTE_READ},
    **{f"/{COMPUTE}/{m}": ADMIN for m in _COMPUTE_ADMIN},
    **_health(ANY_ROLE),
    **_reflection(READERS),
}

AGENT_ACCESS: AccessTable = {
    **{f"/{AGENT}/{m}": SCHEDULER for m in _AGENT_RPCS},
    **_health(SCHEDULER),
    **_reflection(SCHEDULER),
}


def refusal(table: AccessTable, method: str, role: str) -> str | None:
    """None if `role` may call `method`; else the PERMISSION_DENIED message, naming the
    role(s) the method needs."""
    allowed = table.get(method)
    if allowed is None:
        return f"{method} is not in this server's access table: refused to every role"
    if role in allowed:
        return None
    needs = " or ".join(sorted(allowed))
    return f"{method} needs role {needs}; your certificate's role is {role or 'none'}"
