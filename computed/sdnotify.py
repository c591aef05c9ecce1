"""The systemd notify protocol (sd_notify(3)), without a dependency.

With Type=notify systemd waits for READY=1 before it considers the daemon (agent or scheduler)
started (so units ordered after it start only once it serves), and with
WatchdogSec it restarts an agent that stops pinging WATCHDOG=1. The protocol
is one datagram of newline-separated KEY=VALUE lines sent to the unix socket
named by $NOTIFY_SOCKET: a path, or "@name" for the abstract namespace.
Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op returning False,
so the agent runs the same under systemd, in tests and by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("computed.sdnotify")

# A notification must never hang the agent (e.g. a full receive queue while
# systemd is busy): give up after this long; systemd treats a lost ping like a
# late one.
_SEND_TIMEOUT = 1.0


def notify(state: str) -> bool:
    """Send `state` (KEY=VALUE lines) to $NOTIFY_SOCKET as one datagram.

    Returns False, and never raises, when there is no socket or sending fails:
    supervision by systemd is optional, the agent's work is not.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):  # abstract namespace: leading NUL byte
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # unset, or a form we do not speak (e.g. vsock:)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            sock.sendto(state.encode(), address)
    except (OSError, ValueError):  # ValueError: embedded NUL in a path
        return False
    return True


def _one_line(text: str) -> str:
    """STATUS= is one line: a newline in it would start another assignment."""
    return " ".join(text.splitlines())


def ready(status: str = "") -> bool:
    """Tell systemd start-up is complete (Type=notify), with an optional status line."""
    return notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))


def stopping() -> bool:
    """Tell systemd a clean shutdown has begun, so it is not mistaken for a crash."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line status `systemctl status` shows."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog() -> bool:
    """One keep-alive ping; WatchdogSec without one restarts the service."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec, as sd_watchdog_enabled(3) advises).

    None when systemd asked for no watchdog, or asked another process: a child
    that inherited the environment sees WATCHDOG_PID naming its parent.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    if usec <= 0:
        return None
    return usec / 2_000_000


class Watchdog:
    """A daemon thread pinging the systemd watchdog at half its interval.

    It pings only while `healthy()` is true, so a process that is alive but no
    longer doing its job is restarted by systemd instead of kept on life
    support by this thread. Without a watchdog (`interval` None) it does nothing.
    """

    def __init__(self, healthy: Callable[[], bool] = lambda: True) -> None:
        self.healthy = healthy
        self.interval = watchdog_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            try:
                ok = self.healthy()
            except Exception:  # a broken health check means unhealthy, not a dead thread
                log.exception("health check failed; withholding the watchdog ping")
                ok = False
            if ok:
                watchdog()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
