"""computed.sdnotify against a real unix datagram socket standing in for systemd's."""

import os
import socket
import threading
import time
import uuid

import pytest

from computed import sdnotify


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A real datagram socket bound in a temp dir, named by $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def quiet_for(sock: socket.socket, seconds: float) -> bool:
    """True if nothing arrives on `sock` for `seconds`."""
    sock.settimeout(seconds)
    try:
        sock.recv(1024)
    except TimeoutError:
        return True
    return False


def test_ready_status_stopping_watchdog(notify_socket):
    assert sdnotify.ready() is True
    assert notify_socket.recv(1024) == b"READY=1"
    assert sdnotify.ready("serving on 127.0.0.1:8775")
    assert notify_socket.recv(1024) == b"READY=1\nSTATUS=serving on 127.0.0.1:8775"
    assert sdnotify.status("adopting 3 instance(s)")
    assert notify_socket.recv(1024) == b"STATUS=adopting 3 instance(s)"
    assert sdnotify.watchdog() and notify_socket.recv(1024) == b"WATCHDOG=1"
    assert sdnotify.stopping() and notify_socket.recv(1024) == b"STOPPING=1"
    assert sdnotify.notify("RELOADING=1\nMONOTONIC_USEC=1")
    assert notify_socket.recv(1024) == b"RELOADING=1\nMONOTONIC_USEC=1"


def test_status_stays_one_line(notify_socket):
    # A multi-line status (say an error message) must not smuggle in READY=1.
    assert sdnotify.status("etcd down\nREADY=1")
    assert notify_socket.recv(1024) == b"STATUS=etcd down READY=1"
    assert sdnotify.ready("a\nb")
    assert notify_socket.recv(1024) == b"READY=1\nSTATUS=a b"


def test_abstract_socket(monkeypatch):
    name = f"computed-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready("up")
        assert sock.recv(1024) == b"READY=1\nSTATUS=up"
        assert sdnotify.watchdog() and sock.recv(1024) == b"WATCHDOG=1"


def test_no_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready("x") is False
    assert sdnotify.status("x") is False
    assert sdnotify.watchdog() is False
    assert sdnotify.stopping() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.ready() is False


@pytest.mark.parametrize("value", ["relative/notify", "vsock:2:1234"])
def test_unsupported_address_is_false(monkeypatch, value):
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.ready() is False


def test_nobody_listening_is_false_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "@computed-test-nobody-" + uuid.uuid4().hex)
    assert sdnotify.watchdog() is False


@pytest.mark.parametrize(
    "usec,pid,expected",
    [
        ("30000000", None, 15.0),  # WatchdogSec=30 → ping every 15 s
        ("1000000", "self", 0.5),  # WATCHDOG_PID is us
        ("4000000", "1", None),  # WATCHDOG_PID is another process (we are its child)
        ("4000000", "not-a-pid", None),
        ("0", None, None),
        ("", None, None),
        (None, None, None),
        ("-5", None, None),
        ("abc", None, None),
        ("²", None, None),  # str.isdigit() says yes, int() says no
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert sdnotify.watchdog_interval() == expected


def test_watchdog_thread_pings_at_half_the_interval(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # pings every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    dog = sdnotify.Watchdog()
    assert dog.interval == 0.1
    start = time.monotonic()
    dog.start()
    try:
        for _ in range(3):
            assert notify_socket.recv(1024) == b"WATCHDOG=1"
        elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 1.5, elapsed
    finally:
        dog.stop()
    assert not any(t.name == "sd-watchdog" for t in threading.enumerate())


def test_watchdog_thread_pings_only_while_healthy(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # pings every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    healthy = threading.Event()
    healthy.set()
    dog = sdnotify.Watchdog(healthy=healthy.is_set)
    dog.start()
    try:
        assert notify_socket.recv(1024) == b"WATCHDOG=1"
        healthy.clear()
        time.sleep(0.1)  # a ping may already be on its way
        while not quiet_for(notify_socket, 0.01):
            pass
        assert quiet_for(notify_socket, 0.4)  # 8 intervals without a ping
        healthy.set()
        notify_socket.settimeout(2)
        assert notify_socket.recv(1024) == b"WATCHDOG=1"  # pings resume
    finally:
        dog.stop()


def test_watchdog_health_check_that_raises_withholds_pings(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise RuntimeError("bug in the health check")

    dog = sdnotify.Watchdog(healthy=broken)
    dog.start()
    try:
        assert quiet_for(notify_socket, 0.4)
        assert len(calls) >= 3  # the thread survived each failure and kept checking
    finally:
        dog.stop()


def test_watchdog_without_systemd_does_nothing(notify_socket, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    dog = sdnotify.Watchdog()
    assert dog.interval is None
    dog.start()
    assert dog._thread is None
    dog.stop()
    assert quiet_for(notify_socket, 0.1)
