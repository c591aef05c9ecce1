"""This process's own certificate expiry, published for its host stats.

The agent sets it when it loads (and on SIGHUP reloads) its certificate; the
host sample it writes to etcd each interval carries it as `tls.cert_not_after`
(unix seconds), so the scheduler's GetHost and `computectl host show` can say
when the host's certificate runs out without another RPC or record field.
"""

from __future__ import annotations

import datetime

STAT_NAME = "tls.cert_not_after"
_not_after: float | None = None


def publish(not_after: datetime.datetime) -> None:
    global _not_after
    _not_after = not_after.timestamp()


def stats() -> dict[str, float]:
    """{STAT_NAME: unix seconds}, or {} when serving without TLS."""
    return {} if _not_after is None else {STAT_NAME: _not_after}
