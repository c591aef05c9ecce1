"""Waiting on events in tests: poll until something holds, with a generous deadline.

Tests run on shared, noisy machines where a step that takes 50 ms today can
take 5 s tomorrow, so they wait for what they need to see rather than sleep
for a fixed time, and a deadline only marks a test as failed, never as slow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """predicate()'s first truthy result; AssertionError naming `what` after `timeout` s.
    Exceptions of the `ignoring` types while waiting count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = predicate()
            if last:
                return last  # type: ignore[return-value]
        except ignoring as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: {last!r}")
        time.sleep(interval)
