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


# Instance stats are read in 16 slices (by the uuid's first hex digit): one read of all of
# them passes gRPC's 4 MiB message limit at about 6,000 instances (~650 bytes each); a
# slice stays under it up to about 100,000.
_SLICES = "0123456789abcdef"


def read_stats(store: Store) -> tuple[dict[str, Stats], dict[str, Stats]]:
    """Every instance's and every host's latest sample, by uuid and by host id. A value
    that is not a JSON object is skipped."""
    entries = store.get_prefix(keys.HOST_STATS)[0]
    for digit in _SLICES:
        entries += store.get_prefix(keys.INSTANCE_STATS + digit)[0]
    instances: dict[str, Stats] = {}
    hosts: dict[str, Stats] = {}
    for entry in entries:
        if entry.key.startswith(keys.INSTANCE_STATS):
            table, name = instances, entry.key[len(keys.INSTANCE_STATS) :]
        elif entry.key.startswith(keys.HOST_STATS):
            table, name = hosts, entry.key[len(keys.HOST_STATS) :]
        else:
            continue
        try:
            value = json.loads(entry.value)
        except ValueError:
            log.warning("ignoring malformed stats at %s", entry.key)
            continue
        if isinstance(value, dict):
            table[name] = value
    return instances, hosts
