"""Every control-socket command against a real VM."""

import json
import re
import socket
import time

import pytest

from computed.vmm.control_client import ControlError
from computed.vmm.errors import ExitCode

pytestmark = pytest.mark.integration


def tick_count(vm) -> int:
    ticks = re.findall(r"tick (\d+)", vm.output())
    return int(ticks[-1]) if ticks else 0


def test_stop_halts_ticks_and_cont_resumes_them(vmm):
    vm = vmm("heartbeat").wait_ready()
    vm.wait_output(r"tick 1\n")
    assert vm.qmp("stop") == {}
    assert vm.qmp("query-status") == {"status": "paused", "running": False}
    paused_at = tick_count(vm)
    time.sleep(2.5)
    assert tick_count(vm) <= paused_at + 1, "ticks went on while paused"
    frozen = tick_count(vm)
    vm.qmp("cont")
    assert vm.qmp("query-status")["status"] == "running"
    vm.wait_output(rf"tick {frozen + 2}\n", timeout=5)


def test_paused_guest_gets_no_backlog_of_ticks_on_resume(vmm):
    vm = vmm("heartbeat").wait_ready()
    vm.wait_output(r"tick 1\n")
    vm.qmp("stop")
    time.sleep(3)
    before = tick_count(vm)
    vm.qmp("cont")
    time.sleep(0.5)
    assert tick_count(vm) <= before + 1


def test_system_powerdown_exits_0_through_the_guest(vmm):
    vm = vmm("heartbeat").wait_ready()
    vm.wait_output(r"tick 1\n")
    vm.qmp("system_powerdown")
    assert vm.wait_exit() == ExitCode.POWERED_OFF
    assert "heartbeat: power button, shutting down" in vm.output()


def test_system_reset_reboots_in_the_same_process(vmm):
    vm = vmm("heartbeat", "-smp", "2").wait_ready()
    vm.wait_output(r"tick 2\n")
    threads = vm.threads()
    vm.qmp("system_reset")
    vm.wait_output(r"heartbeat: 100 Hz\n(.|\n)*heartbeat: 100 Hz\n(.|\n)*tick 1\n")
    assert vm.proc.poll() is None
    assert vm.qmp("query-vm")["resets"] == 1
    assert set(vm.threads()) == set(threads), "same vCPU threads after reset"


def test_quit_stops_with_the_host_code(vmm):
    vm = vmm("heartbeat").wait_ready()
    vm.qmp("quit")
    assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST


def test_bad_requests_get_errors_and_the_vmm_keeps_serving(vmm):
    vm = vmm("heartbeat").wait_ready()
    with pytest.raises(ControlError, match="has not been found"):
        vm.qmp("format-disk")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(vm.control))
        f = s.makefile("rwb")
        json.loads(f.readline())  # greeting
        for junk in [b"{{{\n", b"[]\n", b'{"execute": 5}\n', b"\xff\xfe\n"]:
            f.write(junk)
            f.flush()
            assert "error" in json.loads(f.readline())
        f.write(b"x" * 200_000)  # no newline: refused and dropped, not buffered forever
        f.flush()
        assert "longer than" in json.loads(f.readline())["error"]["desc"]
    assert vm.qmp("query-status")["status"] == "running"


def test_many_clients_cannot_exhaust_the_vmm(vmm):
    vm = vmm("heartbeat").wait_ready()
    socks = []
    try:
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(vm.control))
            socks.append(s)
        time.sleep(0.2)
    finally:
        for s in socks:
            s.close()
    assert vm.qmp("query-status")["status"] == "running"
