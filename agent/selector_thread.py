"""One thread waiting on many file descriptors at once, for the agent's per-VMM watches
(a pidfd per VMM for its exit, a QMP connection per VMM for its events).

A thread per VMM would cost a thousand threads on a dense host; one selector
costs one. Subclasses say what a ready descriptor means (`ready`); adding and
removing descriptors is safe from any thread (a pipe wakes the selector), and so is
asking for a call on the thread itself (`call_soon`).
"""

from __future__ import annotations

import os
import selectors
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class SelectorThread:
    def __init__(self, name: str) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopped = False
        self._calls: deque[Callable[[], object]] = deque()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, fileobj: Any, data: Any) -> None:
        with self._lock:
            self._sel.register(fileobj, selectors.EVENT_READ, data)
        os.write(self._wake_w, b"!")

    def remove(self, fileobj: Any) -> None:
        with self._lock:
            self._sel.unregister(fileobj)

    def call_soon(self, call: Callable[[], object]) -> None:
        """Run `call` on this thread, among the `ready` calls (so never beside one)."""
        self._calls.append(call)
        os.write(self._wake_w, b"!")

    def ready(self, fileobj: Any, data: Any) -> None:
        """`fileobj` can be read; runs on this thread. Must not raise."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stopped:
            for key, _ in self._sel.select():
                if key.data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    while self._calls:
                        self._calls.popleft()()
                    continue
                self.ready(key.fileobj, key.data)

    def stop(self) -> None:
        self._stopped = True
        os.write(self._wake_w, b"!")
        self._thread.join(timeout=2)
