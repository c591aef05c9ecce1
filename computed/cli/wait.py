"""--wait: follow WatchServers until every named server reaches a status, or fails.

Tracker is the pure part (events in, progress and verdict out); watch() drives it
from the server-streaming RPC, which sends each server's current state first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from computed.cli.convert import status_name
from computed.cli.errors import CliError

_FAILED = ("ERROR", "DELETED")  # statuses that end a wait for anything else


class Tracker:
    """The latest status of each awaited server, and whether the wait is over."""

    def __init__(self, uuids: Iterable[str], want: str) -> None:
        self.uuids = list(dict.fromkeys(uuids))
        self.want = want
        self.latest: dict[str, Any] = {}  # uuid → compute_pb2.Server
        self.deleted = False

    def feed(self, event: Any) -> None:
        if event.deleted:
            self.deleted = True  # the event names no server; any of ours is a failure
            return
        uid = event.server.instance.spec.uuid
        if uid in self.uuids:
            self.latest[uid] = event.server

    def status(self, uid: str) -> str:
        s = self.latest.get(uid)
        return status_name(s.instance.status) if s is not None else "UNKNOWN"

    @property
    def errors(self) -> list[str]:
        return [u for u in self.uuids if self.status(u) in _FAILED]

    @property
    def finished(self) -> bool:
        """Every server reached the wanted status or ERROR (or one vanished)."""
        return self.deleted or all(
            self.status(u) == self.want or self.status(u) in _FAILED for u in self.uuids
        )

    def progress(self) -> str:
        """'3/20 ACTIVE' plus counts of the other statuses, for stderr."""
        counts: dict[str, int] = {}
        for u in self.uuids:
            counts[self.status(u)] = counts.get(self.status(u), 0) + 1
        done = counts.pop(self.want, 0)
        others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        text = f"{done}/{len(self.uuids)} {self.want}"
        return f"{text} ({others})" if others else text

    def verdict(self) -> list[Any]:
        """The final servers in request order; a CliError naming each failed one."""
        if self.deleted:
            raise CliError(f"a server was deleted while waiting for {self.want}")
        failed = self.errors
        if failed:
            reasons = "; ".join(
                f"{self.latest[u].name or u} ({u}): {self.latest[u].instance.fault or 'no reason'}"
                for u in failed
            )
            raise CliError(f"{len(failed)} of {len(self.uuids)} servers in ERROR: {reasons}")
        return [self.latest[u] for u in self.uuids]


def watch(
    stub: Any,
    uuids: list[str],
    want: str,
    timeout: float,
    progress: Callable[[str], None],
) -> list[Any]:
    """Block until every server in `uuids` is `want`; return their final Server messages."""
    import grpc

    from computed.api import compute_pb2

    tracker = Tracker(uuids, want)
    call = stub.WatchServers(compute_pb2.WatchServersRequest(uuids=tracker.uuids), timeout=timeout)
    shown = ""
    try:
        for event in call:
            tracker.feed(event)
            now = tracker.progress()
            if now != shown and len(tracker.latest) == len(tracker.uuids):
                progress(now)
                shown = now
            if tracker.finished:
                return tracker.verdict()
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise CliError(
                f"timed out after {timeout:g} s waiting for {want}: {tracker.progress()}"
            ) from None
        raise
    finally:
        call.cancel()
    raise CliError(f"the scheduler ended the watch early: {tracker.progress()}")
