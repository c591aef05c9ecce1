import os
import socket

import pytest

from agent import sdnotify


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A real datagram socket standing in for systemd's."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_ready_status_stopping_watchdog(notify_socket):
    assert sdnotify.ready("serving")
    assert notify_socket.recv(1024) == b"READY=1\nSTATUS=serving"
    assert sdnotify.watchdog() and notify_socket.recv(1024) == b"WATCHDOG=1"
    assert sdnotify.stopping() and notify_socket.recv(1024) == b"STOPPING=1"


def test_abstract_socket(monkeypatch):
    name = f"computed-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert sock.recv(1024) == b"READY=1"


def test_no_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False


@pytest.mark.parametrize(
    "usec,pid,expected",
    [("30000000", None, 15.0), ("0", None, None), ("", None, None), ("4000000", "1", None)],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert sdnotify.watchdog_interval() == expected


def test_watchdog_thread_pings_only_while_healthy(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    healthy = [True]
    dog = sdnotify.Watchdog(healthy=lambda: healthy[0])
    dog.start()
    try:
        assert notify_socket.recv(1024) == b"WATCHDOG=1"
        healthy[0] = False
        while True:  # drain pings already sent
            notify_socket.settimeout(0.3)
            try:
                notify_socket.recv(1024)
            except TimeoutError:
                break
    finally:
        dog.stop()
