"""The agent listening to its VMMs' QMP events, instead of asking them.

One connection per running VMM, negotiated once, and one thread with one
selector over all of them: a guest paused or resumed by anyone (an operator
with qmp-shell included), reset, or shutting down is known at once, where
the periodic power-state sync (Nova's _sync_power_states) would take up to
its whole interval. The sync stays as the safety net for a lost connection:
it asks only a VMM whose events may have gone missed (`covers`), so a
thousand quiet VMMs cost the sync nothing.

A connection the VMM closes while it is still running (it keeps a bounded
number of clients and closes the longest idle when full) is opened again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.selector_thread import SelectorThread
from computed.vmm.control_client import ControlClient, ControlClosed, ControlError, QmpEvent

log = logging.getLogger("computed.agent.events")
_CONNECT_TIMEOUT = 2.0
_RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 0.0)  # ~40 s in all

# on_event(uuid, event); on_gone(uuid): the connection ended and was not reopened.
EventHandler = Callable[[str, QmpEvent], None]


class VmmEventListener(SelectorThread):
    def __init__(self, on_event: EventHandler, alive: Callable[[str, int], bool]) -> None:
        """`alive(uuid, pid)`: is that VMM still the instance's, and running (reconnect
        if so; a connection to a VMM the instance has replaced is simply dropped)."""
        self._on_event = on_event
        self._alive = alive
        self._connected: dict[str, int] = {}  # uuid → pid of its open event connection
        self._unasked: set[str] = set()  # reopened since the sync last asked: ask once
        super().__init__("vmm-events")

    def covers(self, uuid: str, pid: int) -> bool:
        """Have `pid`'s events reached us without a gap since this was last asked?

        False while it has no connection, and once after each reconnection:
        what happened while it was closed was not heard, so the caller asks the
        VMM once, and events keep it right from then on. A first connection
        needs no such ask: the supervisor knows the state of a VMM it has just
        launched, and asks a VMM it adopts itself."""
        with self._lock:
            if self._connected.get(uuid) != pid:
                return False
            if uuid in self._unasked:
                self._unasked.discard(uuid)
                return False
            return True

    def watch(
        self,
        uuid: str,
        control_path: str,
        pid: int,
        *,
        again: bool = False,
        client: ControlClient | None = None,
    ) -> bool:
        """Listen to `uuid`'s VMM `pid`; False if its control socket does not answer.
        `client`: a connection already negotiated (the launch's); else one is opened.
        `again`: a reconnection, after which `covers` says False once."""
        if client is None:
            try:
                client = ControlClient(control_path, timeout=_CONNECT_TIMEOUT)
            except (ControlError, OSError) as e:
                log.info("no QMP events from %s: %s", uuid, e)
                return False
        client.sock.setblocking(False)
        # The path and pid travel with their connection: a replaced VMM's connection
        # closing never touches the one a newer VMM (a hard reboot's) registered.
        data = (uuid, control_path, pid)
        self.add(client, data)
        with self._lock:
            self._connected[uuid] = pid
            if again:
                self._unasked.add(uuid)
        if client.buffered():  # read along with a reply: no selector would wake for it
            self.call_soon(lambda: client.fileno() >= 0 and self.ready(client, data))
        return True

    def ready(self, fileobj: Any, data: Any) -> None:
        uuid, path, pid = data
        try:
            while (event := fileobj.read_event(0)) is not None:
                try:
                    self._on_event(uuid, event)
                except Exception:  # a handler bug must not stop all listening
                    log.exception("QMP event %s of %s", event.name, uuid)
        except (ControlClosed, ControlError):
            self.remove(fileobj)
            fileobj.close()
            with self._lock:
                if self._connected.get(uuid) == pid:
                    del self._connected[uuid]
            if self._alive(uuid, pid):
                # Closed by a VMM that still runs (to make room for another client):
                # open again, off this thread, whose selector serves every VMM.
                threading.Thread(
                    target=self._reconnect, args=(uuid, path, pid), daemon=True
                ).start()

    def _reconnect(self, uuid: str, path: str, pid: int) -> None:
        """Open `pid`'s event connection again, retrying while it runs: a crowd of other
        clients can push the new connection out again before its handshake is done.
        After the last try its state is left to the power-state sync, which asks a VMM
        that has no event connection."""
        for delay in _RECONNECT_DELAYS:
            if (
                self._stopped
                or not self._alive(uuid, pid)
                or self.watch(uuid, path, pid, again=True)
            ):
                return
            time.sleep(delay)
