"""The etcd harness cleans up after itself, whatever happens."""

from __future__ import annotations

import os

import pytest

from computed.store.client import Store
from computed.store.ops import Put
from tests.etcd_harness import EtcdServer, EtcdStartError

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_close_stops_the_server_and_removes_its_dir():
    with EtcdServer() as server:
        assert server.healthy()
        pid, data_dir = server.proc.pid, server.dir
    assert not os.path.exists(data_dir)
    assert not _alive(pid)  # stopped and reaped


def test_a_server_that_fails_to_start_leaves_nothing(tmp_path):
    fake = tmp_path / "etcd"
    fake.write_text("#!/bin/sh\necho 'etcd: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = EtcdServer(binary=str(fake), startup_timeout=5)
    with pytest.raises(EtcdStartError, match=r"(?s)status 3.*cannot start"), server:
        pass
    assert not os.path.exists(server.dir)


def test_cleanup_happens_when_the_test_body_fails():
    server = EtcdServer()
    with pytest.raises(RuntimeError, match="boom"), server:
        raise RuntimeError("boom")
    assert not os.path.exists(server.dir) and server.proc is None


def test_etcd_variables_in_the_environment_do_not_reach_the_server(monkeypatch):
    """etcd reads ETCD_* as flags; a stray one must not change the server under test."""
    monkeypatch.setenv("ETCD_MAX_TXN_OPS", "2")
    with EtcdServer() as server, Store(server.endpoint, timeout=2.0) as store:
        assert len(store.put_many([Put(f"/k/{i}", "v") for i in range(128)])) == 1
