"""The agent listening to its VMMs' QMP events, instead of asking them.

One connection per running VMM, negotiated once, and one thread with one
selector over all of them: a guest paused or resumed by anyone (an operator
with qmp-shell included), reset, or shutting down is known at once, where
the periodic power-state sync (Nova's _sync_power_states) would take up to
its whole interval. The sync stays as the safety net for a lost connection.

A connection the VMM closes while it is still running (it keeps a bounded
number of clients and closes the longest idle when full) is opened again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.selector_thread import SelectorThread
from computed.vmm.control_client import ControlClient, ControlClosed, ControlError, QmpEvent

log = logging.getLogger("computed.agent.events")
_CONNECT_TIMEOUT = 2.0

# on_event(uuid, event); on_gone(uuid): the connection ended and was not reopened.
EventHandler = Callable[[str, QmpEvent], None]


class VmmEventListener(SelectorThread):
    def __init__(self, on_event: EventHandler, alive: Callable[[str, int], bool]) -> None:
        """`alive(uuid, pid)`: is that VMM still the instance's, and running (reconnect
        if so; a connection to a VMM the instance has replaced is simply dropped)."""
        self._on_event = on_event
        self._alive = alive
        super().__init__("vmm-events")

    def watch(self, uuid: str, control_path: str, pid: int) -> bool:
        """Listen to `uuid`'s VMM `pid`; False if its control socket does not answer."""
        try:
            client = ControlClient(control_path, timeout=_CONNECT_TIMEOUT)
        except (ControlError, OSError) as e:
            log.info("no QMP events from %s: %s", uuid, e)
            return False
        client.sock.setblocking(False)
        # The path and pid travel with their connection: a replaced VMM's connection
        # closing never touches the one a newer VMM (a hard reboot's) registered.
        self.add(client, (uuid, control_path, pid))
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
            if self._alive(uuid, pid):
                # Closed by a VMM that still runs (to make room for another client):
                # open again, off this thread, whose selector serves every VMM.
                threading.Thread(target=self.watch, args=(uuid, path, pid), daemon=True).start()
