"""VMM diagnostics on stderr, with a rate limit a hostile guest cannot defeat."""

from __future__ import annotations

import os
import sys
import time


class RateLimitedLog:
    """At most `burst` messages per `interval` seconds; the rest are counted."""

    def __init__(self, prefix: str, burst: int = 10, interval: float = 5.0) -> None:
        self.prefix = prefix
        self.burst = burst
        self.interval = interval
        self._window_start = 0.0
        self._in_window = 0
        self.suppressed = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.interval:
            if self.suppressed:
                self._emit(f"{self.suppressed} similar messages suppressed")
                self.suppressed = 0
            self._window_start = now
            self._in_window = 0
        if self._in_window < self.burst:
            self._in_window += 1
            self._emit(message)
        else:
            self.suppressed += 1

    def _emit(self, message: str) -> None:
        emit(f"{self.prefix}: {message}")


def emit(line: str) -> None:
    """One line on stderr, written whole and unbuffered."""
    try:
        os.write(sys.stderr.fileno(), (line + "\n").encode(errors="replace"))
    except OSError:
        pass
