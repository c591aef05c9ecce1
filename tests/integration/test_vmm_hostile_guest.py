"""A guest that does everything wrong cannot crash, grow or wedge the VMM."""

import re
import time
from pathlib import Path

import pytest

from computed.vmm.errors import ExitCode
from tests.vmm_harness import again_if_the_guest_triple_faults

pytestmark = pytest.mark.integration


def rss_kib(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])


def test_chaos_guest_leaves_the_vmm_alive_and_responsive(vmm):
    def run() -> None:
        vm = vmm("chaos", "-append", "seed=7").wait_ready()
        vm.wait_output(r"chaos: round 3\n", timeout=30)
        rss_early = rss_kib(vm.pid)
        for _ in range(10):
            assert vm.qmp("query-status")["status"] == "running"
            time.sleep(0.3)
        vm.wait_output(r"chaos: round 10\n", timeout=60)
        info = vm.qmp("__org.computed_query-vm")
        assert info["unclaimed-accesses"] > 0 and info["exits"]["mmio"] > 0
        assert rss_kib(vm.pid) < rss_early + 8 * 1024, "VMM memory grew under a hostile guest"
        assert vm.stderr().count("\n") < 100, "unclaimed-access logging is not rate-limited"
        vm.qmp("quit")
        assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST

    again_if_the_guest_triple_faults(run, lambda: vmm.started)


def test_chaos_guest_finishes_its_rounds_and_powers_off(vmm):
    def run() -> None:
        vm = vmm("chaos", "-append", "seed=3 rounds=5")
        assert vm.wait_exit(timeout=60) == ExitCode.POWERED_OFF
        assert "chaos: done" in vm.output()

    again_if_the_guest_triple_faults(run, lambda: vmm.started)


def test_guest_crash_during_pause_and_reset_is_clean(vmm):
    def run() -> None:
        vm = vmm("chaos", "-append", "seed=9", "-smp", "2").wait_ready()
        vm.wait_output(r"chaos: round 1\n", timeout=30)
        for _ in range(3):
            vm.qmp("stop")
            vm.qmp("cont")
            vm.qmp("system_reset")
        assert vm.qmp("__org.computed_query-vm")["resets"] == 3
        vm.qmp("quit")
        assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST

    again_if_the_guest_triple_faults(run, lambda: vmm.started)
