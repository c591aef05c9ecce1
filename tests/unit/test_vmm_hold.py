"""The vCPU hold protocol (computed/vmm/machine.py): a vCPU that never parks delays the
main thread by _PARK_TIMEOUT at most, and says so in the VMM's log."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from computed.vmm import machine


class _Kicked:
    def __init__(self) -> None:
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1


def test_a_vcpu_that_never_parks_is_given_up_on_after_the_timeout_and_logged(monkeypatch):
    monkeypatch.setattr(machine, "_PARK_TIMEOUT", 0.05)
    warned: list[str] = []
    vcpus = [_Kicked(), _Kicked()]
    held = SimpleNamespace(
        _cond=threading.Condition(), _hold=False, _parked=1, exit_cause=None, vcpus=vcpus,
        log=SimpleNamespace(warn=warned.append),
    )  # fmt: skip
    machine.Machine._hold_vcpus(held)  # one parked, one never does
    assert held._hold and [v.kicks for v in vcpus] == [1, 1]
    assert warned == ["1 of 2 vCPUs did not stop within 0.05s; going on without them"]
    held._parked, warned[:] = 2, []
    machine.Machine._hold_vcpus(held)  # all parked: nothing to say
    assert warned == []
