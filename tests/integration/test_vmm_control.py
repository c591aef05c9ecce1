"""Every control-socket command against a real VM, and the fuzzing findings it survives."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from computed.vmm.control_client import ControlClient, ControlError
from computed.vmm.errors import ExitCode
from tests.vmm_harness import VMM

pytestmark = pytest.mark.integration


def tick_count(vm) -> int:
    ticks = re.findall(r"tick (\d+)", vm.output())
    return int(ticks[-1]) if ticks else 0


def test_stop_halts_ticks_and_cont_resumes_them(vmm):
    vm = vmm("heartbeat").wait_ready()
    vm.wait_output(r"tick 1\n")
    assert vm.qmp("stop") == {}
    assert vm.qmp("query-status") == {"status": "paused", "singlestep": False, "running": False}
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
    assert vm.qmp("__org.computed_query-vm")["resets"] == 1
    assert set(vm.threads()) == set(threads), "same vCPU threads after reset"


def test_quit_stops_with_the_host_code(vmm):
    vm = vmm("heartbeat").wait_ready()
    vm.qmp("quit")
    assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST


def raw_client(vm) -> tuple[socket.socket, object]:
    """A client that speaks QMP by hand; the greeting is read, nothing negotiated."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(vm.control))
    f = s.makefile("rwb")
    assert json.loads(f.readline())["QMP"]["version"]["qemu"]["major"] >= 8
    return s, f


def send(f, data: bytes) -> dict:
    f.write(data)
    f.flush()
    return json.loads(f.readline())


def test_bad_requests_get_errors_and_the_vmm_keeps_serving(vmm):
    vm = vmm("heartbeat").wait_ready()
    with pytest.raises(ControlError, match="has not been found") as e:
        vm.qmp("format-disk")
    assert e.value.error_class == "CommandNotFound"
    s, f = raw_client(vm)
    with s:
        for junk in [b'{"execute": }\n', b"[]\n", b'{"execute": 5}\n', b"\xff\xfe\n"]:
            assert send(f, junk)["error"]["class"] == "GenericError"
        f.write(b"x" * 200_000)  # no newline: refused and dropped, not buffered forever
        f.flush()
        assert "longer than" in json.loads(f.readline())["error"]["desc"]
    assert vm.qmp("query-status")["status"] == "running"


def test_a_line_of_1100_brackets_is_refused_and_the_guest_runs_on(vmm):
    """Fuzzing found this killed the VMM: RecursionError escaped the JSON parser."""
    vm = vmm("heartbeat").wait_ready()
    vm.wait_output(r"tick 1\n")
    s, f = raw_client(vm)
    with s:
        assert send(f, b"[" * 1100 + b"\n")["error"] == {
            "class": "GenericError",
            "desc": "JSON nesting depth limit exceeded",
        }
        # qmp-spec's reset (0xFF) ends the unbalanced request; the connection serves on.
        assert "stray" in send(f, b"\xff")["error"]["desc"]
        assert send(f, b"[" * 5000 + b"]" * 5000)["error"]["desc"].startswith("JSON nesting")
        assert send(f, b'{"execute": "qmp_capabilities"}') == {"return": {}}
    ticks = tick_count(vm)
    vm.wait_output(rf"tick {ticks + 2}\n", timeout=5)
    assert vm.qmp("query-status")["status"] == "running"


@pytest.mark.parametrize("negotiate", [False, True], ids=["negotiating", "negotiated"])
def test_idle_clients_cannot_lock_the_agent_out(vmm, negotiate):
    """Fuzzing found 32 idle clients locked every new client out, the agent included."""
    vm = vmm("heartbeat").wait_ready()
    idle = []
    try:
        for _ in range(40):
            s, f = raw_client(vm)
            if negotiate:
                assert send(f, b'{"execute": "qmp_capabilities"}') == {"return": {}}
            idle.append(s)
        for _ in range(3):
            assert vm.qmp("query-status")["status"] == "running"
    finally:
        for s in idle:
            s.close()


def test_arguments_that_are_not_an_object_are_refused(vmm):
    """Fuzzing found `"arguments": []` was ignored: `stop` stopped."""
    vm = vmm("heartbeat").wait_ready()
    with ControlClient(str(vm.control)) as client:
        for arguments in ([], "now", 1):
            with pytest.raises(ControlError, match="'arguments' must be an object") as e:
                client.execute("stop", arguments)
            assert e.value.error_class == "GenericError"
        assert client.execute("query-status")["running"] is True
        with pytest.raises(ControlError, match="Parameter 'force' is unexpected"):
            client.execute("stop", {"force": True})
        assert client.execute("query-status")["running"] is True


def test_commands_and_events_wait_for_capabilities_negotiation(vmm):
    vm = vmm("heartbeat").wait_ready()
    s, f = raw_client(vm)
    with s:
        assert send(f, b'{"execute": "query-status", "id": 1}') == {
            "error": {
                "class": "CommandNotFound",
                "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
            },
            "id": 1,
        }
        vm.qmp("stop")  # a STOP this client must not see
        assert send(f, b'{"execute": "qmp_capabilities"}') == {"return": {}}
        vm.qmp("cont")
        assert json.loads(f.readline())["event"] == "RESUME"


def test_quit_announces_a_host_shutdown_then_closes(vmm):
    vm = vmm("heartbeat").wait_ready()
    with ControlClient(str(vm.control)) as client:
        assert client.execute("quit") == {}
        events = list(client.events())  # ends when the VMM closes the socket
    assert [(e.name, e.data) for e in events] == [
        ("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    ]
    assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST


def test_sigterm_on_a_paused_guest_stops_with_host_signal(vmm):
    vm = vmm("heartbeat", "-shutdown-timeout", "0.5").wait_ready()
    with ControlClient(str(vm.control)) as client:
        client.execute("stop")  # a paused guest cannot answer: no button, only the deadline
        assert client.read_event(timeout=0).name == "STOP", "it came before the reply: kept"
        assert client.read_event(timeout=0) is None
        vm.proc.send_signal(signal.SIGTERM)
        shutdown = client.read_event(timeout=5)
    assert shutdown.name == "SHUTDOWN"
    assert shutdown.data == {"guest": False, "reason": "host-signal"}
    assert abs(shutdown.timestamp - time.time()) < 60
    assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST


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


def _listening(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(8)
    return sock


def _vmm_on_handed_monitor(fd: int) -> list[str]:
    monitor = f"socket,id=m,fd={fd},server=on,wait=off"
    return [VMM, "-m", "64", "-kernel", "heartbeat", "-append", "hz=0",
            "-chardev", monitor, "-mon", "chardev=m,mode=control"]  # fmt: skip


def test_a_monitor_socket_handed_in_greets_the_client_that_came_first_once_the_guest_runs(
    short_tmp,
):
    """As libvirt hands qemu its monitor socket: whoever made it connects before the VMM
    runs, and the greeting is the readiness (no path to poll for). The VMM leaves the
    path to the socket's maker."""
    path = f"{short_tmp}/c.sock"
    listener = _listening(path)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)  # before the VMM exists: it waits in the listen backlog
    fd = listener.fileno()
    vmm = subprocess.Popen(
        _vmm_on_handed_monitor(fd), pass_fds=(fd,), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    listener.close()
    try:
        client.settimeout(30)
        with client.makefile("rb") as replies:
            assert "QMP" in json.loads(replies.readline())
        with ControlClient(path, timeout=10) as control:
            assert control.execute("query-status")["status"] == "running"
    finally:
        client.close()
        vmm.send_signal(signal.SIGTERM)
        assert vmm.wait(timeout=30) == ExitCode.POWERED_OFF
    assert os.path.exists(path), "the maker's path, left to the maker"


@pytest.mark.parametrize(
    "what, words",
    [
        ("socket", "not listening"),
        ("file", "Socket operation on non-socket"),
        ("closed", "Bad file"),
    ],
)
def test_a_monitor_fd_that_is_no_listening_socket_is_refused_in_one_line(short_tmp, what, words):
    handed = None
    if what == "socket":
        handed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    elif what == "file":
        handed = open(f"{short_tmp}/f", "w")  # noqa: SIM115
    fd = handed.fileno() if handed is not None else 63  # 63: not open in the VMM
    try:
        done = subprocess.run(
            _vmm_on_handed_monitor(fd), pass_fds=(fd,) if handed is not None else (),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        if handed is not None:
            handed.close()
    assert done.returncode == ExitCode.BAD_INPUT
    assert done.stderr.startswith(f"computed-vmm: error: -chardev socket,fd={fd}: {words}")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
