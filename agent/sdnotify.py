"""The systemd notify protocol (sd_notify), without a dependency.

With Type=notify systemd waits for READY=1 before it considers the agent
started, and with WatchdogSec it restarts an agent that stops pinging.
Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op returning False.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable


def notify(state: str) -> bool:
    """Send one datagram of `state` lines to $NOTIFY_SOCKET; False if there is none."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec), or None when no watchdog is asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class Watchdog:
    """Pings the systemd watchdog at half its interval while `healthy()` says so."""

    def __init__(self, healthy: Callable[[], bool] = lambda: True) -> None:
        self.healthy = healthy
        self.interval = watchdog_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval is None:
            return
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            if self.healthy():
                watchdog()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
