"""Stats of real VMM processes: threads found once, CPU attributed, gone when gone."""

import os
import time

import psutil
import pytest

from agent.vmm_stats import NS, ProcessGone, VmmStats

pytestmark = pytest.mark.integration


def test_sample_names_the_real_vcpu_and_pit_threads(vmm):
    vm = vmm("heartbeat", "-smp", "2").wait_ready()
    stats = VmmStats(vm.pid, pss=True)
    sample = stats.sample()
    cpus = {c["cpu-index"]: c["thread-id"] for c in vm.qmp("query-cpus-fast")}
    assert (sample["vcpu.0.tid"], sample["vcpu.1.tid"]) == (cpus[0], cpus[1])
    assert sample["helper.kvm-pit.pid"] == vm.qmp("__org.computed_query-vm")["pit-thread-pid"]
    assert sample["pid"] == vm.pid and sample["vcpu.count"] == 2
    assert sample["memory.rss"] > 0 and 0 < sample["memory.pss"] <= sample["memory.rss"]
    assert sample["threads"] >= 3 and "helper.vhost.pid" not in sample


def test_cpu_time_of_a_burning_guest_grows_on_its_vcpu(vmm):
    vm = vmm("burn", "-append", "duty=100").wait_ready()
    stats = VmmStats(vm.pid)
    first = stats.sample()
    time.sleep(1.0)
    second = stats.sample()
    # What the VMM gets depends on the host's load; what it spends it on does not:
    # nearly all of a burning guest's CPU time is its vCPU thread's.
    vcpu = second["vcpu.0.time"] - first["vcpu.0.time"]
    process = second["cpu.time"] - first["cpu.time"]
    assert vcpu > 0 and second["cpu.percent"] > 0
    assert vcpu >= 0.8 * process, (vcpu, process)


def test_gone_process_raises(vmm):
    vm = vmm("heartbeat").wait_ready()
    stats = VmmStats(vm.pid)
    vm.kill()
    with pytest.raises(ProcessGone):
        stats.sample()


def test_sample_agrees_with_psutil(vmm):
    """Read from kept-open /proc files, the figures are psutil's (within a clock tick)."""
    vm = vmm("heartbeat").wait_ready()
    vm.wait_output(r"tick 1\n")
    stats = VmmStats(vm.pid)
    proc = psutil.Process(vm.pid)

    def psutil_view():
        with proc.oneshot():
            return proc.cpu_times(), proc.memory_info(), proc.num_threads(), proc.num_ctx_switches()

    cpu0, mem0, threads0, ctx0 = psutil_view()
    sample = stats.sample()
    cpu1, mem1, threads1, ctx1 = psutil_view()
    tick = NS // os.sysconf("SC_CLK_TCK")
    assert cpu0.user * NS - tick <= sample["cpu.user"] <= cpu1.user * NS + tick
    assert cpu0.system * NS - tick <= sample["cpu.system"] <= cpu1.system * NS + tick
    assert sample["cpu.time"] == sample["cpu.user"] + sample["cpu.system"]
    assert min(mem0.rss, mem1.rss) <= sample["memory.rss"] <= max(mem0.rss, mem1.rss)
    assert threads0 == sample["threads"] == threads1
    assert ctx0.voluntary <= sample["ctx_switches.voluntary"] <= ctx1.voluntary
    assert ctx0.involuntary <= sample["ctx_switches.involuntary"] <= ctx1.involuntary
