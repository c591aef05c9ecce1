"""The tickless guest (`heartbeat hz=0`): idle means no timer, no wake-ups, no host CPU.

Costs are judged by counts that do not depend on how busy the host is: the vCPU
thread's voluntary context switches (one per wake-up from HLT) and the kvm-pit
worker's run time, which stays exactly zero while the PIT is disarmed. A 100 Hz
heartbeat measured over the same window shows the measure does see ticks.
"""

import os
import re
import signal
import time

import pytest

from agent.vmm_stats import VmmStats
from computed.vmm.errors import ExitCode

pytestmark = pytest.mark.integration

WINDOW_S = 5.0
BANNER = r"heartbeat: tickless \(hz=0\)"


def vcpu_wakeups(pid: int, tid: int) -> int:
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for thread {tid}")


def test_tickless_guest_sleeps_without_timer_wakeups(vmm):
    idle = vmm("heartbeat", "-append", "hz=0").wait_ready(timeout=30)
    ticking = vmm("heartbeat").wait_ready(timeout=30)
    idle.wait_output(BANNER, timeout=30)
    ticking.wait_output(r"tick 1\n", timeout=30)
    samplers = {vm: VmmStats(vm.pid) for vm in (idle, ticking)}
    before = {vm: s.sample() for vm, s in samplers.items()}
    wakes = {vm: vcpu_wakeups(vm.pid, before[vm]["vcpu.0.tid"]) for vm in samplers}
    time.sleep(WINDOW_S)
    after = {vm: s.sample() for vm, s in samplers.items()}

    def grew(vm, key: str) -> int:
        return after[vm][key] - before[vm][key]

    woke = {vm: vcpu_wakeups(vm.pid, after[vm]["vcpu.0.tid"]) - wakes[vm] for vm in samplers}
    assert woke[ticking] > 100, "the 100 Hz heartbeat should wake its vCPU ~500 times"
    assert woke[idle] <= 5, f"tickless vCPU woke {woke[idle]} times in {WINDOW_S:g}s"
    assert grew(idle, "helper.kvm-pit.time") == 0, "the PIT fired for a tickless guest"
    assert grew(idle, "vcpu.0.time") < 5_000_000  # ns: nothing runs between events
    assert grew(idle, "cpu.time") < 30_000_000  # the whole VMM, in 10 ms clock ticks
    assert not re.search(r"tick \d", idle.output())


def test_tickless_guest_powers_off_on_system_powerdown(vmm):
    vm = vmm("heartbeat", "-append", "hz=0").wait_ready(timeout=30)
    vm.wait_output(BANNER, timeout=30)
    vm.qmp("system_powerdown")
    assert vm.wait_exit() == ExitCode.POWERED_OFF
    assert "heartbeat: power button, shutting down\n" in vm.output()


def test_tickless_guest_powers_off_on_sigterm(vmm):
    vm = vmm("heartbeat", "-append", "hz=0").wait_ready(timeout=30)
    vm.wait_output(BANNER, timeout=30)
    os.kill(vm.pid, signal.SIGTERM)
    assert vm.wait_exit() == ExitCode.POWERED_OFF
    assert "heartbeat: power button, shutting down\n" in vm.output()
