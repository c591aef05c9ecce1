"""KSM for the VMMs' interpreter memory (computed/vmm/page_merging.py, agent/ksm.py):
every VMM offers its interpreter's pages and never its guest's RAM, identical pages
of warm-forked VMMs really merge, and the agent starts KSM unless told not to.

KSM is host-wide: each test that changes /sys/kernel/mm/ksm puts it back as found."""

from __future__ import annotations

import textwrap

import pytest

from tests.agent_harness import AgentProcess
from tests.ksm_host import available, ksm_settings, read
from tests.smaps import merge_marks
from tests.warm_driver import drive

pytestmark = pytest.mark.integration

if not available():
    pytest.skip("this kernel has no KSM", allow_module_level=True)


def test_an_exec_vmm_offers_its_interpreter_memory_but_never_the_guest_ram(vmm):
    vm = vmm("heartbeat", "-append", "hz=0", memory="48").wait_ready(timeout=30)
    marks = merge_marks(vm.pid, 48)
    assert marks["heap"][0] is True  # what grows later is a mapping of its own, not offered
    assert marks["guest_ram"] == [False]


def test_an_agent_starts_ksm_unless_told_not_to(etcd, short_tmp):
    """The test harness's agents run with --no-ksm; --ksm is the product's default."""
    agents = []
    with ksm_settings(run="0"):
        try:
            told_not_to = AgentProcess(f"{short_tmp}/a", etcd.endpoint, "ksm-a")  # --no-ksm
            agents.append(told_not_to)
            told_not_to.start()
            assert read("run") == "0"
            default = AgentProcess(f"{short_tmp}/b", etcd.endpoint, "ksm-b", "--ksm")
            agents.append(default)
            default.start()  # serving means its driver, and so KSM, is set up
            assert read("run") == "1"
            assert "started the host's same-page merging" in default.log()
        finally:
            for agent in agents:
                agent.cleanup()


MERGE_DRIVER = textwrap.dedent(
    """
    from tests.smaps import merge_marks

    parent = WarmParent(state, dict(os.environ), standbys=2)


    def merged_pages(pid):
        with open(f"/proc/{pid}/ksm_stat") as f:
            return int(dict(line.split() for line in f if " " in line)["ksm_merging_pages"])


    def run():
        for n in range(4):
            console = os.path.join(state, f"{n}.log")
            argv = [os.path.join(os.path.dirname(sys.executable), "computed-vmm"),
                    "-name", f"instance-{n:08x}", "-uuid", UUID.format(n), "-m", "48",
                    "-kernel", "heartbeat", "-append", "hz=0", "-serial", f"file:{console}"]
            started.append(parent.spawn(argv, {1: log, 2: log}))
            wait_until(lambda: os.path.getsize(console) > 0, what="output", timeout=30,
                       ignoring=(OSError,))
        out["marks"] = [merge_marks(pid, 48) for pid in started]
        # a quarter of a MiB of each VMM's pages merged (most of it, once ksmd is done)
        wait_until(lambda: min(merged_pages(pid) for pid in started) >= 64,
                   what="identical pages merged", timeout=180, interval=0.5)
        out["merged"] = [merged_pages(pid) for pid in started]

    """
)


def test_identical_pages_of_warm_forked_vmms_merge_and_guest_ram_stays_their_own(short_tmp):
    """Runs ksmd briskly for the test's sake (other tests' VMMs are mergeable too)."""
    with ksm_settings(run="1", pages_to_scan="2000", sleep_millisecs="10"):
        out = drive(MERGE_DRIVER, short_tmp, timeout=300)
    for marks in out["marks"]:  # forked VMMs carry the warm parent's mark
        assert marks["heap"][0] is True and marks["guest_ram"] == [False]
    assert min(out["merged"]) >= 64, out["merged"]
