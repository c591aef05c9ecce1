"""computed-vmm speaks qemu's command line: a Nova host's line boots a guest, -S holds it
until `cont`, -no-shutdown keeps the process after a guest power-off, and what we do not
model is refused by name. (The CPUID the guest sees is tested on the table the VMM
builds, in tests/unit/test_vmm_cpu_model.py: no bundled guest prints CPUID.)"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from computed.vmm.control_client import ControlClient, ControlError
from computed.vmm.errors import ExitCode
from tests.unit.test_vmm_cpu_model import PENRYN
from tests.vmm_harness import VMM, VmmProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def seed_line(workdir: Path, *extra: str) -> list[str]:
    """The seed's `/usr/bin/kvm -name instance-00000074 …` line, less what we do not
    model (USB, VGA, VNC, balloon, disks, SMBIOS, -boot), with paths in `workdir`."""
    return [
        "-name", "instance-00000074", "-uuid", str(uuid.uuid4()), "-m", "2048",
        "-smp", "2,sockets=2,cores=1,threads=1", "-cpu", PENRYN,
        "-rtc", "base=utc,driftfix=slew", "-nodefaults", "-no-user-config", "-enable-kvm",
        "-machine", "accel=kvm,usb=off", "-global", "kvm-pit.lost_tick_policy=discard",
        "-no-hpet", "-display", "none", "-vga", "none",
        "-chardev", f"socket,id=charmonitor,path={workdir}/control.sock,server=on,wait=off",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-chardev", f"file,id=charserial0,path={workdir}/console.log",
        "-device", "isa-serial,chardev=charserial0,id=serial0",
        "-pidfile", f"{workdir}/vmm.pid", "-kernel", "heartbeat", *extra,
    ]  # fmt: skip


@pytest.fixture
def seed_vm(tmp_path):
    started: list[VmmProcess] = []

    def start(*extra: str) -> VmmProcess:
        workdir = tmp_path / f"vm{len(started) + 1}"
        workdir.mkdir()
        started.append(VmmProcess(workdir, seed_line(workdir, *extra)))
        return started[-1].wait_ready()

    try:
        yield start
    finally:
        for vm in started:
            vm.kill()


def status(vm: VmmProcess) -> str:
    return vm.qmp("query-status")["status"]


def test_the_seed_command_line_boots_a_guest_as_libvirt_drives_it(seed_vm):
    """libvirt's order: start with -S, `cont`; -no-shutdown keeps qemu after power-off."""
    vm = seed_vm("-S", "-no-shutdown", "-append", "ticks=1")
    assert status(vm) == "prelaunch"
    assert "tick" not in vm.output()
    described = vm.qmp("__org.computed_query-vm")
    assert described["cpu-model"] == "Penryn" and described["vcpus"] == 2
    assert described["topology"] == {"sockets": 2, "dies": 1, "cores": 1, "threads": 1}
    assert not described["pit-reinjection"]  # kvm-pit.lost_tick_policy=discard
    with ControlClient(str(vm.control)) as client:
        client.execute("cont")
        vm.wait_output(r"tick 1")
        events = [client.read_event(timeout=5) for _ in range(3)]
        assert [(e.name, e.data) for e in events] == [
            ("RESUME", {}),
            ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"}),
            ("STOP", {}),
        ]
        assert status(vm) == "shutdown" and vm.proc.poll() is None
        client.execute("quit")
    assert vm.wait_exit() == ExitCode.POWERED_OFF  # the guest had powered off
    assert "warning: -cpu Penryn: the host lacks" in vm.stderr()  # e.g. +pbe: KVM has none


def test_S_holds_the_guest_until_cont(vmm):
    vm = vmm("heartbeat", "-S").wait_ready()
    assert vm.qmp("query-status") == {"status": "prelaunch", "singlestep": False, "running": False}
    vm.qmp("stop")  # qemu's `stop` outside `running` changes nothing
    time.sleep(0.3)
    assert status(vm) == "prelaunch" and vm.output() == ""
    with ControlClient(str(vm.control)) as client:
        assert client.execute("cont") == {}
        assert client.read_event(timeout=5).name == "RESUME"
    vm.wait_output(r"tick 1")
    assert status(vm) == "running"


def test_a_signal_ends_a_guest_never_started_at_once(vmm):
    vm = vmm("heartbeat", "-S", "-shutdown-timeout", "30").wait_ready()
    vm.proc.send_signal(signal.SIGTERM)
    assert vm.wait_exit(timeout=5) == ExitCode.STOPPED_BY_HOST


def test_no_shutdown_keeps_the_vmm_after_a_guest_power_off(vmm):
    vm = vmm("heartbeat", "-append", "ticks=1", "-no-shutdown").wait_ready()
    vm.wait_output(r"tick 1")
    deadline = time.monotonic() + 5
    while status(vm) != "shutdown" and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert status(vm) == "shutdown" and vm.proc.poll() is None
    with pytest.raises(ControlError):
        vm.qmp("cont")  # as in qemu: a powered-off guest needs a reset first
    with ControlClient(str(vm.control)) as client:
        client.execute("quit")
        events = list(client.events())
    assert [(e.name, e.data) for e in events] == [
        ("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    ]
    assert vm.wait_exit() == ExitCode.POWERED_OFF


def test_no_shutdown_then_system_reset_and_cont_boot_the_guest_again(vmm):
    vm = vmm("heartbeat", "-append", "ticks=1", "-no-shutdown").wait_ready()
    with ControlClient(str(vm.control)) as client:
        vm.wait_output(r"tick 1")
        assert [client.read_event(timeout=5).name for _ in range(2)] == ["SHUTDOWN", "STOP"]
        client.execute("system_reset")
        assert status(vm) == "prelaunch"  # qemu's state after a reset while not running
        client.execute("cont")
        wait_until(lambda: vm.output().count("tick 1") >= 2, what="the guest booted again")
    assert vm.output().count("heartbeat:") == 2 and vm.output().count("tick 1") == 2


def test_a_signal_ends_a_vmm_held_by_no_shutdown(vmm):
    vm = vmm("heartbeat", "-no-shutdown", "-shutdown-timeout", "30").wait_ready()
    vm.wait_output(r"tick 1")
    vm.proc.send_signal(signal.SIGTERM)  # the button; the guest's power-off then ends us
    assert vm.wait_exit(timeout=10) == ExitCode.POWERED_OFF


def run_vmm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VMM, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "args, line",
    [
        (["-vnc", "127.0.0.1:1"], "computed-vmm: error: -vnc: not supported: no display"),
        (["-usb"], "computed-vmm: error: -usb: not supported: no USB is modelled"),
        (["-device", "usb-tablet,id=input0"], "error: -device usb-tablet: not supported"),
        (["-device", "virtio-balloon-pci,id=balloon0"], "-device virtio-balloon-pci: not supp"),
        (["-drive", "file=/x.qcow2"], "computed-vmm: error: -drive: not supported"),
        (["-machine", "pc-i440fx-trusty"], "error: -machine pc-i440fx-trusty: not supported"),
        (["-cpu", "host,+pbe,enforce"], "error: -cpu host,enforce: the host lacks pbe"),
    ],
)
def test_what_we_do_not_model_is_refused_in_one_line(args, line):
    result = run_vmm("-kernel", "hello", *args)
    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    assert line in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
