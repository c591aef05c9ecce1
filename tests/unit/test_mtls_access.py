"""The access table: complete (every RPC in the protos is listed), fail-closed, and the
roles the issue names."""

from __future__ import annotations

from computed.api import agent_pb2, compute_pb2
from computed.mtls.access import AGENT_ACCESS, SCHEDULER_ACCESS, refusal


def _methods(module, service: str) -> set[str]:
    desc = module.DESCRIPTOR.services_by_name[service]
    return {f"/{desc.full_name}/{m.name}" for m in desc.methods}


def test_every_rpc_in_the_protos_is_in_its_table():
    assert _methods(compute_pb2, "Compute") <= set(SCHEDULER_ACCESS)
    assert _methods(agent_pb2, "Agent") <= set(AGENT_ACCESS)


def test_a_method_missing_from_the_table_is_refused_to_everyone():
    for role in ("admin", "reader", "scheduler", "agent", ""):
        why = refusal(SCHEDULER_ACCESS, "/computed.v1.Compute/NewThing", role)
        assert why and "not in this server's access table" in why


def test_admin_may_do_everything_on_the_public_api():
    for method in _methods(compute_pb2, "Compute"):
        assert refusal(SCHEDULER_ACCESS, method, "admin") is None, method


def test_reader_lists_and_shows_only():
    allowed = {m.rsplit("/", 1)[1] for m in _methods(compute_pb2, "Compute")
               if refusal(SCHEDULER_ACCESS, m, "reader") is None}  # fmt: skip
    assert allowed == {"GetServer", "ListServers", "WatchServers", "ListHosts", "GetHost",
                       "ListFlavors", "ListImages", "GetImage", "ListServerGroups", "WatchTop",
                       "ListServerEvents"}  # fmt: skip
    why = refusal(SCHEDULER_ACCESS, "/computed.v1.Compute/CreateServers", "reader")
    assert why == ("/computed.v1.Compute/CreateServers needs role admin; "
                   "your certificate's role is reader")  # fmt: skip
    assert refusal(SCHEDULER_ACCESS, "/computed.v1.Compute/GetConsoleOutput", "reader")


def test_agent_and_scheduler_certificates_get_nothing_on_the_public_api_but_health():
    for role in ("agent", "scheduler", "etcd-root", ""):
        for method in _methods(compute_pb2, "Compute"):
            assert refusal(SCHEDULER_ACCESS, method, role), (role, method)
        assert refusal(SCHEDULER_ACCESS, "/grpc.health.v1.Health/Check", role) is None or role in (
            "etcd-root", "")  # fmt: skip


def test_an_agent_accepts_only_the_scheduler_role():
    for method in _methods(agent_pb2, "Agent") | {"/grpc.health.v1.Health/Check"}:
        assert refusal(AGENT_ACCESS, method, "scheduler") is None
        for role in ("admin", "reader", "agent", "etcd-root", ""):
            why = refusal(AGENT_ACCESS, method, role)
            assert why and "needs role scheduler" in why, (role, method)
