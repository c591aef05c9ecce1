"""The warm parent's standby pool (computed/vmm/zygote.py): when it makes standbys."""

from __future__ import annotations

import pytest

from computed.vmm import zygote

ARGV = ["computed-vmm", "-name", "instance-00000001", "-m", "64"]


def test_a_new_pool_fills_at_once_and_an_empty_one_never():
    assert zygote.StandbyPool(4).top_up_due() == 0.0
    assert zygote.StandbyPool(0).top_up_due() is None


def test_a_request_holds_the_top_up_back_until_requests_pause(monkeypatch):
    """A burst's CPU goes to the VMMs it asked for: the standbys it used are made
    again only once no request has come for a moment."""
    now = [100.0]
    monkeypatch.setattr(zygote.time, "monotonic", lambda: now[0])
    pool = zygote.StandbyPool(4)
    assert pool.hand({"argv": ARGV}, []) is None  # none made yet: forked on demand
    assert pool.top_up_due() == pytest.approx(zygote._TOP_UP_AFTER)
    assert not pool.top_up_one()
    now[0] += zygote._TOP_UP_AFTER / 2
    pool.hand({"argv": ARGV}, [])  # the burst goes on
    assert pool.top_up_due() == pytest.approx(zygote._TOP_UP_AFTER)
    now[0] += zygote._TOP_UP_AFTER
    assert pool.top_up_due() == 0.0
