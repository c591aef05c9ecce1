"""Instance names, `instance-%08x` as Nova's, from one counter in etcd.

A request for N names takes a block of N with one compare-and-swap on the
counter key, so concurrent schedulers never hand out the same name.
"""

from __future__ import annotations

from computed.store import keys
from computed.store.client import Store
from computed.store.errors import StoreError

NAME_FORMAT = "instance-{:08x}"
_ATTEMPTS = 50


def format_names(first: int, count: int) -> list[str]:
    return [NAME_FORMAT.format(first + i) for i in range(count)]


def allocate_names(store: Store, count: int) -> list[str]:
    """Take `count` fresh names; the first instance ever is instance-00000001."""
    key = keys.counter(keys.INSTANCE_NAME_COUNTER)
    for _ in range(_ATTEMPTS):
        entry = store.get(key)
        last = int(entry.value) if entry is not None else 0
        revision = entry.mod_revision if entry is not None else 0
        if store.compare_and_swap(key, str(last + count), revision):
            return format_names(last + 1, count)
    raise StoreError("could not allocate instance names: too much contention")
