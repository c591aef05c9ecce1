"""The agent's spawn path with uploaded images: a real VMM from a fetched, verified copy;
an unreachable store or wrong bytes end the build in ERROR with the reason, before any VMM
(no gRPC or etcd here: the cache's source is a function)."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from agent.image_cache import ImageCache
from agent.supervisor import InstanceSupervisor
from computed import status
from computed.capacity import Capacity
from computed.guests.bundled import bundled_dir
from computed.store.errors import StoreUnavailable
from computed.store.records import InstanceSpec
from tests.agent_harness import close_supervisors

pytestmark = pytest.mark.integration

with open(os.path.join(bundled_dir(), "heartbeat"), "rb") as _f:  # runs until stopped
    GUEST = _f.read()
DIGEST = "sha256:" + hashlib.sha256(GUEST).hexdigest()


def spec_for(digest: str) -> InstanceSpec:
    u = str(uuid.uuid4())
    return InstanceSpec(u, f"instance-{u[:8]}", "mine", 1, 64, image_digest=digest)


@pytest.fixture
def supervisor_with(short_tmp):
    made = []

    def make(source) -> InstanceSupervisor:
        images = ImageCache(short_tmp, source)
        sup = InstanceSupervisor(short_tmp, Capacity(4, 2048), stop_timeout=5, images=images)
        made.append(sup)
        return sup

    yield make
    close_supervisors(made)


def test_an_uploaded_image_runs_from_the_hosts_verified_copy(supervisor_with):
    sup = supervisor_with(lambda digest: [GUEST])
    view = sup.spawn(spec_for(DIGEST))
    assert view.state.status == status.ACTIVE, view.state.fault
    with open(f"/proc/{view.pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    cached = sup.images.path(DIGEST)
    assert cached.encode() in argv  # -kernel <state-dir>/images/sha256/<hex>


def test_an_unreachable_store_ends_the_build_in_error_with_the_reason(supervisor_with):
    def down(digest):
        raise StoreUnavailable("get /computed/image-blobs/…: etcd at 10.0.0.9:2379 unavailable")

    view = supervisor_with(down).spawn(spec_for(DIGEST))
    assert view.state.status == status.ERROR and view.pid is None
    assert "cannot fetch image" in view.state.fault and "unavailable" in view.state.fault


def test_wrong_bytes_end_the_build_in_error_and_are_not_kept(supervisor_with):
    sup = supervisor_with(lambda digest: [GUEST + b"!"])
    view = sup.spawn(spec_for(DIGEST))
    assert view.state.status == status.ERROR and "do not match its digest" in view.state.fault
    assert not os.path.exists(sup.images.path(DIGEST))
