"""Where the scheduler reads the agents' stats from: one small function, so the layout of
the stats keys is known here only (the scheduler does not watch stats; it reads them
when asked: `server show`, `host show`, and each `computectl top` stream per interval)."""

from __future__ import annotations

import json
import logging
from typing import Any

from computed.store import keys
from computed.store.client import Store

log = logging.getLogger("computed.scheduler.stats")

Stats = dict[str, Any]


def read_stats(store: Store) -> tuple[dict[str, Stats], dict[str, Stats]]:
    """Every instance's and every host's latest sample, by uuid and by host id, read in
    pages (one reply of all of them passes gRPC's 4 MiB at about 6,000 instances). A
    value that is not a JSON object is skipped."""
    instances: dict[str, Stats] = {}
    hosts: dict[str, Stats] = {}
    for entry in store.scan(keys.STATS, keys.prefix_end(keys.STATS)):
        where = stats_key_ids(entry.key)
        if where is None:
            continue
        try:
            value = json.loads(entry.value)
        except ValueError:
            log.warning("ignoring malformed stats at %s", entry.key)
            continue
        if isinstance(value, dict):
            host_id, uuid = where
            if uuid is None:
                hosts[host_id] = value
            else:
                instances[uuid] = value
    return instances, hosts


def stats_key_ids(key: str) -> tuple[str, str | None] | None:
    """(host id, None) for a host's stats key, (host id, uuid) for an instance's; None
    for anything else under the stats prefix."""
    parts = key[len(keys.STATS) :].split("/")
    if len(parts) == 2 and parts[1] == "host":
        return parts[0], None
    if len(parts) == 3 and parts[1] == "instances":
        return parts[0], parts[2]
    return None
