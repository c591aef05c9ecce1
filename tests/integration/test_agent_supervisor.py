"""InstanceSupervisor over real VMM processes (no gRPC, no etcd here)."""

import contextlib
import dataclasses
import json
import logging
import os
import signal
import uuid

import pytest

from agent.instance_state import ActionRefused
from agent.supervisor import HostFull, InstanceSupervisor
from agent.vmm_process import InstancePaths
from agent.warm_parent import WarmParent
from computed import status
from computed.capacity import Capacity
from computed.errors import NotFound
from computed.store.records import InstanceSpec
from computed.vmm.control import MAX_CLIENTS
from computed.vmm.control_client import ControlClient, ControlError, execute
from tests.agent_harness import alive, close_supervisors
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def new_spec(image="heartbeat", cmdline="", vcpus=1, memory_mb=64):
    u = str(uuid.uuid4())
    return InstanceSpec(u, f"instance-{u[:8]}", image, vcpus, memory_mb, cmdline)


@pytest.fixture
def supervisors(short_tmp):
    """Supervisors over one state dir; every VMM they know is killed at teardown."""
    made = []

    def make(capacity=None):
        sup = InstanceSupervisor(short_tmp, capacity or Capacity(8, 4096), stop_timeout=5)
        made.append(sup)
        return sup

    yield make
    close_supervisors(made)


def test_spawn_is_active_with_a_live_vmm_and_is_idempotent(supervisors):
    sup = supervisors()
    spec = new_spec()
    view = sup.spawn(spec)
    assert (view.state.status, view.state.power_state) == (status.ACTIVE, status.RUNNING)
    with open(f"/proc/{view.pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert any(a.endswith(b"/computed-vmm") for a in argv[:2]) and spec.uuid.encode() in argv
    again = sup.spawn(spec)
    assert again.pid == view.pid and len(sup.list()) == 1


def test_a_pause_by_anyone_on_the_control_socket_is_seen_at_once(supervisors):
    """No power-state sync runs here: only the VMM's QMP events can tell the supervisor."""
    sup = supervisors()
    spec = new_spec()
    sup.spawn(spec)
    control = InstancePaths.of(sup.state_dir, spec.uuid).control
    execute(control, "stop")  # an operator with qmp-shell, say
    wait_until(lambda: sup.get(spec.uuid).state.status == status.PAUSED, what="PAUSED")
    assert sup.get(spec.uuid).state.power_state == status.POWER_PAUSED
    execute(control, "cont")
    wait_until(lambda: sup.get(spec.uuid).state.status == status.ACTIVE, what="ACTIVE again")


def test_the_power_state_sync_asks_only_vmms_whose_events_may_have_been_missed(supervisors):
    """Asking every VMM each interval was most of a dense idle host's agent CPU."""
    sup = supervisors()
    spec = new_spec()
    sup.spawn(spec)
    asked = []
    real_control = sup.driver.control

    def counting_control(paths, command, timeout=None):
        if command == "query-status":
            asked.append(command)
        return real_control(paths, command, timeout)

    sup.driver.control = counting_control
    sup.sync_power_states()
    sup.sync_power_states()
    assert asked == []  # launched by us and heard since: nothing to ask
    control = InstancePaths.of(sup.state_dir, spec.uuid).control
    # A full VMM drops its longest-idle client: the agent's event connection. (The agent's
    # reconnection may push out one of ours mid-handshake in turn: that one fails.)
    crowd = []
    for _ in range(MAX_CLIENTS):
        with contextlib.suppress(ControlError):
            crowd.append(ControlClient(control))
    for client in crowd:
        client.close()

    def was_asked() -> bool:
        sup.sync_power_states()
        return len(asked) > 0

    wait_until(was_asked, what="the sync asking once the connection dropped")
    execute(control, "stop")  # maybe while the agent is reconnecting: no event then,

    def paused() -> bool:  # but the next sync asks once the connection is back
        sup.sync_power_states()
        return sup.get(spec.uuid).state.status == status.PAUSED

    wait_until(paused, what="PAUSED")


def test_lifecycle_stop_start_pause_resume_reboot_delete(supervisors):
    sup = supervisors()
    spec = new_spec()
    first = sup.spawn(spec)
    assert sup.pause(spec.uuid).state.status == status.PAUSED
    with pytest.raises(ActionRefused):
        sup.pause(spec.uuid)
    assert sup.resume(spec.uuid).state.status == status.ACTIVE
    assert sup.reboot(spec.uuid, hard=False).pid == first.pid
    hard = sup.reboot(spec.uuid, hard=True)
    assert hard.state.status == status.ACTIVE and hard.pid != first.pid
    stopped = sup.stop(spec.uuid)
    assert (stopped.state.status, stopped.pid) == (status.SHUTOFF, None)
    assert "power button" in sup.console_tail(spec.uuid, 5)
    assert sup.start(spec.uuid).state.status == status.ACTIVE
    pid = sup.get(spec.uuid).pid
    sup.delete(spec.uuid)
    sup.delete(spec.uuid)
    with pytest.raises(NotFound):
        sup.get(spec.uuid)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"))


def test_killed_vmm_is_crashed_with_its_reason(supervisors):
    sup = supervisors()
    spec = new_spec()
    pid = sup.spawn(spec).pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: sup.get(spec.uuid).state.power_state == status.CRASHED)
    assert sup.get(spec.uuid).state.fault == "VMM process killed by SIGKILL"


def test_guest_crash_is_reported_with_the_vmm_reason(supervisors):
    sup = supervisors()
    spec = new_spec(image="crash")
    sup.spawn(spec)
    wait_until(lambda: sup.get(spec.uuid).state.status == status.ERROR)
    assert "triple fault" in sup.get(spec.uuid).state.fault


def test_vmm_that_fails_to_start_is_error_with_its_message(supervisors, tmp_path):
    sup = supervisors()
    bogus = tmp_path / "not-an-elf"
    bogus.write_text("hello")
    view = sup.spawn(new_spec(image=str(bogus)))
    assert view.state.status == status.ERROR and "not an ELF" in view.state.fault
    assert view.pid is None


def test_full_host_is_refused(supervisors):
    sup = supervisors(Capacity(4, 100, cpu_ratio=1.0, ram_ratio=1.0))
    sup.spawn(new_spec(memory_mb=64))
    with pytest.raises(HostFull, match="memory"):
        sup.spawn(new_spec(memory_mb=64))


def test_a_new_supervisor_adopts_running_vmms_without_restarting_them(supervisors):
    old = supervisors()
    running, paused, doomed = new_spec(), new_spec(), new_spec()
    pids = {s.uuid: old.spawn(s).pid for s in (running, paused, doomed)}
    old.pause(paused.uuid)
    old.close()  # the agent goes away; its VMMs do not
    os.kill(pids[doomed.uuid], signal.SIGKILL)  # one dies while nobody watches
    wait_until(lambda: not alive(pids[doomed.uuid]), what="the killed VMM gone")
    new = supervisors()
    adopted = {v.spec.uuid: v for v in new.adopt_all()}
    assert adopted[running.uuid].pid == pids[running.uuid]
    assert adopted[running.uuid].state.status == status.ACTIVE
    assert adopted[paused.uuid].state.status == status.PAUSED
    assert adopted[doomed.uuid].state.status == status.ERROR
    os.kill(pids[running.uuid], signal.SIGKILL)  # adopted VMMs are watched through pidfds
    wait_until(lambda: new.get(running.uuid).state.power_state == status.CRASHED)


def test_an_agent_gone_mid_build_leaves_instances_the_next_one_adopts_or_fails(supervisors):
    """The first state is written when a build ends: an agent gone before that leaves
    the spec alone. A VMM that got started is adopted as it runs; one that never did
    is an instance whose build failed, not one that vanishes from the host."""
    old = supervisors()
    started, never = new_spec(), new_spec()
    pid = old.spawn(started).pid
    old.close()
    os.unlink(InstancePaths.of(old.state_dir, started.uuid).state)  # as if gone mid-build
    os.makedirs(InstancePaths.of(old.state_dir, never.uuid).root)
    with open(InstancePaths.of(old.state_dir, never.uuid).spec, "w") as f:
        json.dump(dataclasses.asdict(never), f)
    new = supervisors()
    adopted = {v.spec.uuid: v for v in new.adopt_all()}
    assert (adopted[started.uuid].pid, adopted[started.uuid].state.status) == (pid, status.ACTIVE)
    assert adopted[never.uuid].state.status == status.ERROR


def test_vmm_that_cannot_be_executed_is_error_not_stuck_in_build(supervisors, monkeypatch):
    from agent import vmm_process

    monkeypatch.setattr(vmm_process, "VMM_BINARY", "/nonexistent/computed-vmm")
    sup = supervisors()
    view = sup.spawn(new_spec())
    assert view.state.status == status.ERROR and "cannot start the VMM" in view.state.fault


def test_a_vmm_is_execd_when_the_warm_parent_cannot_start(supervisors, short_tmp, caplog):
    """The warm parent's socket path is too long for a unix socket: it exits at start, and
    the instance still comes up, exec'd, with the reason in the agent's log."""
    unusable = os.path.join(short_tmp, "w" * 120)
    os.makedirs(unusable)
    sup = supervisors()
    sup.driver.warm = WarmParent(unusable, dict(os.environ))
    with caplog.at_level(logging.WARNING, logger="computed.agent"):
        view = sup.spawn(new_spec())
    assert view.state.status == status.ACTIVE
    assert "starting the VMM by exec instead" in caplog.text
    with open(f"/proc/{view.pid}/cmdline", "rb") as f:
        assert b"\0-uuid\0" in f.read()  # exec'd: its own argv, not a forked title
