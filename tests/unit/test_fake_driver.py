"""The fake driver, and the real supervisor running instances over it (no KVM needed)."""

from __future__ import annotations

import uuid as uuidlib

import pytest

from agent.drivers.fake import FakeDriver, FakeVmmStats
from agent.instance_state import ActionRefused
from agent.supervisor import HostFull, InstanceSupervisor
from agent.vmm_stats import ProcessGone
from computed import status
from computed.capacity import Capacity
from computed.exit_codes import ExitCode
from computed.store.records import InstanceSpec


def new_spec(vcpus: int = 1, memory_mb: int = 64) -> InstanceSpec:
    uid = str(uuidlib.uuid4())
    return InstanceSpec(uid, f"instance-{uid[:8]}", "heartbeat", vcpus, memory_mb)


@pytest.fixture
def supervisor(short_tmp):
    changes = []
    sup = InstanceSupervisor(
        short_tmp, Capacity(4, 1024, 1.0, 1.0), changes.append, stop_timeout=1, driver=FakeDriver()
    )
    sup.changes = changes
    yield sup
    sup.close()


def test_a_spawned_fake_instance_is_active_with_a_pid_no_process_has(supervisor):
    view = supervisor.spawn(new_spec())
    assert view.state.status == status.ACTIVE and view.state.power_state == status.RUNNING
    assert view.pid is not None and view.pid > 4_194_304  # above any pid_max
    # BUILD is where a new instance starts: not a change (etcd's record says it already)
    assert [c.state.status for c in supervisor.changes] == [status.ACTIVE]


def test_pause_and_resume_go_through_qmp_events_as_with_a_real_vmm(supervisor):
    uid = supervisor.spawn(new_spec()).spec.uuid
    assert supervisor.pause(uid).state.status == status.PAUSED
    assert supervisor.resume(uid).state.status == status.ACTIVE
    with pytest.raises(ActionRefused):
        supervisor.resume(uid)


def test_stop_powers_off_then_start_brings_a_new_pid(supervisor):
    first = supervisor.spawn(new_spec())
    stopped = supervisor.stop(first.spec.uuid)
    assert stopped.state.status == status.SHUTOFF and stopped.pid is None
    started = supervisor.start(first.spec.uuid)
    assert started.state.status == status.ACTIVE and started.pid not in (None, first.pid)


def test_delete_forgets_the_instance_and_frees_its_capacity(supervisor):
    specs = [new_spec(vcpus=2), new_spec(vcpus=2)]
    for spec in specs:
        supervisor.spawn(spec)
    with pytest.raises(HostFull):
        supervisor.spawn(new_spec(vcpus=1))
    supervisor.delete(specs[0].uuid)
    supervisor.delete(specs[0].uuid)  # twice is fine
    assert supervisor.spawn(new_spec(vcpus=2)).state.status == status.ACTIVE
    assert supervisor.changes[-2].state.status == status.DELETED  # then the new one: ACTIVE


def test_a_launch_set_to_fail_ends_in_error_with_the_reason(short_tmp):
    sup = InstanceSupervisor(short_tmp, Capacity(4, 1024), driver=FakeDriver(fail_every=1))
    view = sup.spawn(new_spec())
    assert view.state.status == status.ERROR and "set to fail" in view.state.fault


def test_powerdown_and_kill_report_exit_codes_like_a_vmm():
    exits = []
    driver = FakeDriver()
    driver.bind(lambda u, p, c: exits.append(c), lambda u, e: None, lambda u, p: True)
    a, b = new_spec(), new_spec()
    vm_a = driver.launch(a, _paths(a))
    vm_b = driver.launch(b, _paths(b))
    driver.control(_paths(a), "system_powerdown")
    driver.kill(vm_b.pid)
    assert exits == [int(ExitCode.POWERED_OFF), -9]
    assert not driver.is_ours(vm_a.pid, a.uuid) and not driver.is_ours(vm_b.pid, b.uuid)


def test_fake_stats_have_vmm_stats_keys_and_end_with_the_vm():
    driver = FakeDriver()
    spec = new_spec(vcpus=2)
    vm = driver.launch(spec, _paths(spec))
    stats = FakeVmmStats(vm.pid)
    sample = stats.sample(vm.started + 10)
    for key in ("cpu.time", "cpu.percent", "memory.rss", "threads", "uptime", "vcpu.1.time"):
        assert key in sample
    assert sample["uptime"] == 10 and sample["cpu.time"] > 0
    driver.kill(vm.pid)
    with pytest.raises(ProcessGone):
        stats.sample()
    with pytest.raises(ProcessGone):
        FakeVmmStats(vm.pid)


def _paths(spec: InstanceSpec):
    from agent.vmm_process import InstancePaths

    return InstancePaths.of("/nonexistent", spec.uuid)
