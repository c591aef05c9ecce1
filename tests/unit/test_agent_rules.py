import os
import signal

import pytest

from agent.instance_state import (
    ActionRefused,
    State,
    check_action,
    state_after_event,
    state_after_exit,
)
from agent.validation import validate_spec
from agent.vmm_process import InstancePaths, InstanceSpec, vmm_command, vmm_error
from computed import status
from computed.capacity import Capacity, Usage, shortfall
from computed.errors import Invalid
from computed.vmm.config import parse_args

UUID = "5c0f0000-0000-4000-8000-000000000001"
ACTIVE = State(status.ACTIVE, status.RUNNING)


def spec(**kw):
    base = dict(uuid=UUID, name="instance-0000004a", image="heartbeat", vcpus=1, memory_mb=64)
    return InstanceSpec(**{**base, **kw})


@pytest.mark.parametrize(
    "action,current,ok",
    [
        ("stop", status.ACTIVE, True),
        ("stop", status.SHUTOFF, False),
        ("start", status.SHUTOFF, True),
        ("start", status.ACTIVE, False),
        ("start", status.ERROR, True),
        ("pause", status.ACTIVE, True),
        ("pause", status.PAUSED, False),
        ("resume", status.PAUSED, True),
        ("resume", status.ACTIVE, False),
        ("reboot_soft", status.SHUTOFF, False),
        ("reboot_hard", status.SHUTOFF, True),
    ],
)
def test_actions_allowed_by_status(action, current, ok):
    if ok:
        check_action(action, State(current, status.NOSTATE))
    else:
        with pytest.raises(ActionRefused, match=f"status {current}"):
            check_action(action, State(current, status.NOSTATE))


def test_clean_exits_mean_shutoff():
    assert state_after_exit(0, "guest powered off", expected=False) == State(
        status.SHUTOFF, status.SHUTDOWN
    )
    assert state_after_exit(6, "quit", expected=False).status == status.SHUTOFF
    assert state_after_exit(-signal.SIGKILL, "", expected=True).status == status.SHUTOFF


def test_unexpected_ends_are_crashes_with_reasons():
    crash = state_after_exit(4, "guest crashed: triple fault", expected=False)
    assert crash == State(status.ERROR, status.CRASHED, "guest crashed: triple fault")
    killed = state_after_exit(-signal.SIGKILL, "", expected=False)
    assert (killed.power_state, killed.fault) == (status.CRASHED, "VMM process killed by SIGKILL")
    gone = state_after_exit(None, "", expected=False)
    assert gone.status == status.ERROR and "unsupervised" in gone.fault


def test_capacity_with_allocation_ratios():
    cap = Capacity(vcpus=2, memory_mb=1000, cpu_ratio=2.0, ram_ratio=1.5)
    assert shortfall(cap, Usage(3, 1000, 3), 1, 500) is None
    assert "vCPUs" in shortfall(cap, Usage(4, 0, 4), 1, 1)
    assert "memory" in shortfall(cap, Usage(0, 1400, 1), 1, 101)


@pytest.mark.parametrize(
    "bad,field",
    [
        (dict(uuid="nope"), "spec.uuid"),
        (dict(name="bad name"), "spec.name"),
        (dict(vcpus=0), "spec.vcpus"),
        (dict(vcpus=99), "spec.vcpus"),
        (dict(memory_mb=1), "spec.memory_mb"),
        (dict(image=""), "spec.image"),
        (dict(image="windows"), "spec.image"),
        (dict(image="relative/path"), "spec.image"),
        (dict(cmdline="x" * 3000), "spec.cmdline"),
    ],
)
def test_bad_specs_name_the_field(bad, field):
    with pytest.raises(Invalid) as e:
        validate_spec(spec(**bad), available_images=["heartbeat", "hello"])
    assert e.value.field == field


def test_good_spec_is_normalised():
    assert validate_spec(spec(uuid=UUID.upper()), ["heartbeat"]).uuid == UUID


def test_vmm_command_reads_like_qemu_and_carries_the_uuid():
    cmd = vmm_command(spec(vcpus=2, cmdline="ticks=5"), InstancePaths("/s/i/u"), binary="vmm")
    assert cmd[:9] == ["vmm", "-name", "instance-0000004a", "-uuid", UUID, "-m", "64", "-smp",
                       "2,sockets=2,cores=1,threads=1"]  # fmt: skip
    assert "-control" not in cmd and "-serial" not in cmd
    assert cmd[cmd.index("-mon") + 1] == "chardev=charmonitor,id=monitor,mode=control"
    assert (
        "socket,id=charmonitor,path=/s/i/u/jail/control.sock,server=on,wait=off" in cmd
        and "file,id=charserial0,path=/s/i/u/jail/console.log,append=on" in cmd
        and "isa-serial,chardev=charserial0,id=serial0" in cmd
    )


def test_vmm_command_parses_as_the_vmm_reads_it():
    """The agent's line and the VMM's parser agree: every option is one the VMM models."""
    s = validate_spec(spec(vcpus=2, cmdline="ticks=5", **NET))
    cmd = vmm_command(s, InstancePaths("/s/i/u,v"), binary="vmm", tap_fd=7)
    config = parse_args(cmd[1:], lambda image: f"/images/{image}")
    assert (config.name, config.uuid, config.vcpus) == ("instance-0000004a", UUID, 2)
    assert (config.topology.sockets, config.topology.cores, config.cpu.name) == (2, 1, "host")
    assert config.control == "/s/i/u,v/jail/control.sock"  # the comma written twice, read once
    assert config.serial == "/s/i/u,v/jail/console.log"
    assert [(nic.tap_fd, nic.vhost, nic.mac.hex(":")) for nic in config.nics] == [
        (7, True, NET["mac"])
    ]


def test_a_monitor_socket_handed_in_is_named_by_its_fd():
    cmd = vmm_command(validate_spec(spec()), InstancePaths("/s/i/u"), binary="vmm", control_fd=5)
    assert "socket,id=charmonitor,fd=5,server=on,wait=off" in cmd
    config = parse_args(cmd[1:], lambda image: f"/images/{image}")
    assert (config.control, config.control_fd) == (None, 5)


NET = {"ip": "10.213.0.100/24", "gateway": "10.213.0.1", "mac": "52:54:00:d5:00:64"}


def test_a_networked_spec_gets_a_tap_nic_and_its_address_on_the_command_line():
    s = validate_spec(spec(cmdline="udp=9", **NET))
    argv = vmm_command(s, InstancePaths("/r"), binary="vmm")
    tap = "tap" + s.uuid.replace("-", "")[:11]
    assert argv[argv.index("-netdev") + 1] == f"tap,id=net0,ifname={tap},vhost=on"
    nic = "virtio-net-device,netdev=net0,mac=52:54:00:d5:00:64"
    assert argv[argv.index("-device", argv.index("-netdev")) + 1] == nic
    assert argv[argv.index("-append") + 1] == "udp=9 ip=10.213.0.100/24 gw=10.213.0.1"
    assert "-netdev" not in vmm_command(validate_spec(spec()), InstancePaths("/r"), binary="vmm")


@pytest.mark.parametrize(
    "network, field",
    [
        ({"ip": "10.213.0.100"}, "spec.ip"),  # /32: no room for a gateway
        ({"ip": "10.213.0.0/24"}, "spec.ip"),
        ({"ip": "nonsense"}, "spec.ip"),
        ({"gateway": "10.9.9.9"}, "spec.gateway"),
        ({"gateway": "10.213.0.100"}, "spec.gateway"),
        ({"mac": "ff:ff:ff:ff:ff:ff"}, "spec.mac"),
        ({"mac": ""}, "spec.mac"),
    ],
)
def test_bad_network_fields_name_the_field(network, field):
    with pytest.raises(Invalid) as e:
        validate_spec(spec(**{**NET, **network}))
    assert e.value.field == field


def test_qmp_stop_and_resume_pause_and_resume_only_a_running_instance():
    running, paused = (
        State(status.ACTIVE, status.RUNNING),
        State(status.PAUSED, status.POWER_PAUSED),
    )
    assert state_after_event("STOP", running) == paused
    assert state_after_event("RESUME", paused) == running
    assert state_after_event("STOP", paused) is None  # already so: nothing to write
    assert state_after_event("STOP", State(status.SHUTOFF, status.SHUTDOWN)) is None
    assert state_after_event("SHUTDOWN", running) is None  # the exit watcher's business


def test_a_vmm_ended_by_its_seccomp_filter_is_crashed_with_the_call_named(tmp_path):
    paths = InstancePaths(str(tmp_path))
    os.makedirs(paths.jail)
    with open(paths.log, "w") as f:
        f.write("computed-vmm[instance-1]: SIGTERM: powering down\n")
        f.write("computed-vmm: error: seccomp: blocked system call 59 (execve) in a vcpu thread\n")
    reason = vmm_error(paths)
    assert reason == "seccomp: blocked system call 59 (execve) in a vcpu thread"
    assert state_after_exit(159, reason, expected=False) == State(
        status.ERROR, status.CRASHED, reason
    )
    with open(paths.log, "a") as f:  # a VMM's ordinary last words are no reason
        f.write("computed-vmm[instance-1]: guest did not power off within 10s\n")
    assert vmm_error(paths) == ""
