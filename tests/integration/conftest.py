"""Fixtures for integration tests only: a real etcd server and a Store connected to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.etcd_harness import EtcdServer, EtcdStartError


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh single-member etcd (about 1 s to start); stopped and wiped at teardown.

    Tests may stop()/start() or pause()/resume() it: nothing else shares it.
    """
    try:
        server = EtcdServer()
    except EtcdStartError as e:
        pytest.fail(str(e), pytrace=False)
    with server:
        yield server


@pytest.fixture
def store(etcd: EtcdServer) -> Iterator[object]:
    """A computed.store.client.Store on `etcd`, with a short deadline so outage tests are quick."""
    from computed.store.client import Store  # gRPC and pyetcd only for tests that use etcd

    s = Store(etcd.endpoint, timeout=2.0)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def agent(etcd, short_tmp):
    """A real computed-agent on `etcd` (4 vCPUs, 2 GiB advertised); it and every VMM,
    cgroup and warm parent it made are gone at teardown."""
    from tests.agent_harness import AGENT_HOST, AgentProcess

    proc = AgentProcess(short_tmp, etcd.endpoint, AGENT_HOST, "--vcpus", "4", "--memory-mb", "2048")
    try:
        yield proc.start()
    finally:
        proc.cleanup()
