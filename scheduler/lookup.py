"""Finding the servers and hosts an API call names, in the watch-fed view of the cluster."""

from __future__ import annotations

from computed import status
from computed.errors import NotFound, Refused
from computed.store.records import InstanceRecord
from scheduler.cluster_view import ClusterView
from scheduler.host_cache import HostCache

_SYNC_WAIT = 10.0


def synced_view(cache: HostCache) -> ClusterView:
    """The current view, once the cache has one; Refused while etcd cannot be read."""
    if not cache.wait_synced(_SYNC_WAIT):
        raise Refused("the scheduler has no current view of the cluster (etcd unreachable?)")
    return cache.view


def find_instance(cache: HostCache, name_or_id: str) -> InstanceRecord:
    """By uuid, else by display or instance name; a name two servers share is refused."""
    view = synced_view(cache)
    with cache.lock:
        if name_or_id in view.instances:
            return view.instances[name_or_id]
        matches = [
            r for r in view.instances.values() if name_or_id in (r.display_name, r.spec.name)
        ]
    if not matches:
        raise NotFound(f"server {name_or_id!r} not found")
    if len(matches) > 1:
        raise Refused(f"{len(matches)} servers are named {name_or_id!r}: use the id")
    return matches[0]


def instances_on(view: ClusterView, host_id: str) -> list[InstanceRecord]:
    """The host's instances that still exist (a DELETED record is only on its way out).
    Call with the cache's lock held."""
    return [r for r in view.instances.values() if r.host == host_id and r.status != status.DELETED]
