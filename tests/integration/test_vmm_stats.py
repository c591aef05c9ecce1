"""Stats of real VMM processes: threads found once, CPU attributed, gone when gone."""

import time

import pytest

from agent.vmm_stats import ProcessGone, VmmStats

pytestmark = pytest.mark.integration


def test_sample_names_the_real_vcpu_and_pit_threads(vmm):
    vm = vmm("heartbeat", "-smp", "2").wait_ready()
    stats = VmmStats(vm.pid, pss=True)
    sample = stats.sample()
    cpus = {c["cpu-index"]: c["thread-id"] for c in vm.qmp("query-cpus")}
    assert (sample["vcpu.0.tid"], sample["vcpu.1.tid"]) == (cpus[0], cpus[1])
    assert sample["helper.kvm-pit.pid"] == vm.qmp("query-vm")["pit-thread-pid"]
    assert sample["pid"] == vm.pid and sample["vcpu.count"] == 2
    assert sample["memory.rss"] > 0 and 0 < sample["memory.pss"] <= sample["memory.rss"]
    assert sample["threads"] >= 3 and "helper.vhost.pid" not in sample


def test_cpu_time_of_a_burning_guest_grows_on_its_vcpu(vmm):
    vm = vmm("burn", "-append", "duty=100").wait_ready()
    stats = VmmStats(vm.pid)
    first = stats.sample()
    time.sleep(1.0)
    second = stats.sample()
    assert second["vcpu.0.time"] - first["vcpu.0.time"] > 0.5e9
    assert second["cpu.percent"] > 50


def test_gone_process_raises(vmm):
    vm = vmm("heartbeat").wait_ready()
    stats = VmmStats(vm.pid)
    vm.kill()
    with pytest.raises(ProcessGone):
        stats.sample()
