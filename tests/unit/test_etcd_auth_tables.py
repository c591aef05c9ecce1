"""The etcd permission tables (computed/store/etcd_auth.py): each agent's grants cover its
own host's keys and nothing another host or a scheduler owns. Pure: no etcd here; the
same rules are proved against a real etcd in tests/integration/test_etcd_auth.py."""

from __future__ import annotations

import pytest

from computed.store import etcd_auth, keys
from computed.store.etcd_auth import READ, READWRITE, Grant

UUID = "5c0f0000-0000-4000-8000-0000000000e1"


def allowed(grants: list[Grant], key: str, write: bool) -> bool:
    """etcd's rule: a grant covers `key` exactly (no range_end) or key in [key, range_end)."""
    for g in grants:
        covers = key == g.key if not g.range_end else g.key <= key < g.range_end
        if covers and (g.perm == READWRITE or (not write and g.perm == READ) or
                       (write and g.perm == "write")):  # fmt: skip
            return True
    return False


@pytest.mark.parametrize(
    "key",
    [
        keys.host("h1"), keys.liveness("h1"), keys.report("h1", UUID),
        keys.host_stats("h1"), keys.instance_stats("h1", UUID),
    ],
)  # fmt: skip
def test_an_agent_may_write_its_own_keys(key):
    assert allowed(etcd_auth.agent_permissions("h1"), key, write=True)


@pytest.mark.parametrize(
    "key",
    [
        keys.host("h10"), keys.host("h"), keys.liveness("h10"), keys.report("h10", UUID),
        keys.host_stats("h10"), keys.instance_stats("h10", UUID), keys.instance(UUID),
        keys.allocation("h1"), keys.host_admin("h1"), keys.build_failures("h1"),
        keys.flavor("m1.tiny"), keys.image("x"), keys.ip("10.0.0.1"),
        keys.counter(keys.INSTANCE_NAME_COUNTER), keys.server_group("g"),
    ],
)  # fmt: skip
def test_an_agent_may_write_nothing_else(key):
    assert not allowed(etcd_auth.agent_permissions("h1"), key, write=True)


def test_an_agent_reads_the_records_it_reports_against_and_no_claims():
    grants = etcd_auth.agent_permissions("h1")
    assert allowed(grants, keys.instance(UUID), write=False)
    assert not allowed(grants, keys.allocation("h2"), write=False)
    assert not allowed(grants, keys.report("h2", UUID), write=False)


def test_a_scheduler_may_write_all_of_computed_and_nothing_outside():
    grants = etcd_auth.scheduler_permissions()
    for key in (keys.allocation("h1"), keys.instance(UUID), keys.report("h9", UUID)):
        assert allowed(grants, key, write=True)
    assert not allowed(grants, "/computed0", write=False)
    assert not allowed(grants, "/other/key", write=False)


def test_users_and_roles_follow_the_certificate_convention():
    assert etcd_auth.agent_user("node-1") == "agent-node-1"
    assert etcd_auth.agent_role("node-1") == "computed-agent-node-1"
    with pytest.raises(ValueError, match="host id"):
        etcd_auth.agent_user("a/b")
