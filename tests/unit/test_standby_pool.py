"""The warm parent's standby pool (computed/vmm/zygote.py): when it makes standbys."""

from __future__ import annotations

import pytest

from computed.vmm import zygote
from computed.vmm.prepared import VmShape

ARGV = ["computed-vmm", "-name", "instance-00000001", "-m", "64"]


def test_a_new_pool_fills_at_once_and_an_empty_one_never():
    assert zygote.StandbyPool(4).top_up_due() == 0.0
    assert zygote.StandbyPool(0).top_up_due() is None


def test_beyond_its_reserve_the_pool_is_topped_up_once_requests_pause(monkeypatch):
    """A burst's CPU goes to the VMMs it asked for: the standbys it used beyond the
    reserve are made again only once no request has come for a moment. Below the
    reserve the pool is topped up at once, so launches one after another find one."""
    now = [100.0]
    monkeypatch.setattr(zygote.time, "monotonic", lambda: now[0])
    pool = zygote.StandbyPool(4)
    pool.standbys = [_Made() for _ in range(zygote._RESERVE)]  # the reserve, no more
    assert pool.hand({"argv": ARGV}, []) is None  # none ready: forked on demand
    assert pool.top_up_due() == pytest.approx(zygote._TOP_UP_AFTER)
    assert not pool.top_up_one()
    now[0] += zygote._TOP_UP_AFTER / 2
    pool.hand({"argv": ARGV}, [])  # the burst goes on
    assert pool.top_up_due() == pytest.approx(zygote._TOP_UP_AFTER)
    now[0] += zygote._TOP_UP_AFTER
    assert pool.top_up_due() == 0.0
    pool.hand({"argv": ARGV}, [])
    pool.standbys.pop()  # one taken: below the reserve
    assert pool.top_up_due() == 0.0


class _Made:
    """A standby still making its VM (not ready: never handed a request here)."""

    ready = False
    shape = VmShape(64)
