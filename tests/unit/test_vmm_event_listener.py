"""The agent's QMP event listener (agent/vmm_events.py) on a connection it is handed:
the launch's, which may already hold an event read along with a reply."""

from __future__ import annotations

import json
import os
import socket
import threading

from agent.vmm_events import VmmEventListener
from computed.vmm.control_client import ControlClient
from tests.waiting import wait_until


def _qmp_server(path: str, after_status: list[dict]) -> threading.Thread:
    """One client: greeting, capabilities, then the query-status reply sent in the same
    write as `after_status` (as a VMM's events may follow a reply at once)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        listener.close()
        with conn:
            lines = conn.makefile("rb")
            conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            lines.readline()
            conn.sendall(b'{"return": {}, "id": 1}\n')
            lines.readline()
            reply = [{"return": {"status": "running"}, "id": 2}, *after_status]
            conn.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in reply))
            lines.readline()  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_an_event_read_with_the_launchs_reply_still_reaches_the_handler(tmp_path):
    path = os.path.join(tmp_path, "qmp.sock")
    event = {"event": "SHUTDOWN", "data": {"guest": True}, "timestamp": {"seconds": 1}}
    server = _qmp_server(path, [event])
    heard: list[tuple[str, str]] = []
    listener = VmmEventListener(lambda uuid, e: heard.append((uuid, e.name)), lambda u, p: False)
    try:
        client = ControlClient(path)
        assert client.execute("query-status") == {"status": "running"}
        assert client.buffered(), "the event came in the reply's read: no selector wakes for it"
        assert listener.watch("u1", path, 42, client=client)
        wait_until(lambda: heard == [("u1", "SHUTDOWN")], what="the event handed on", timeout=10)
        assert listener.covers("u1", 42)
    finally:
        listener.stop()
        client.close()
        server.join(timeout=10)
