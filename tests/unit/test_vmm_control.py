"""The QMP protocol of the VMM's control socket, without a VM: Session, splitter, server."""

import json
import selectors
import socket

import pytest

from computed.vmm import control, qmp_events
from computed.vmm.control import ControlServer, QmpError, Session, event_message, parse
from computed.vmm.qmp_stream import MessageSplitter


class FakeConfig:
    name = "instance-0000004a"
    uuid = "4f2a9c1e-0d3b-4c55-9a7e-0123456789ab"


class FakeVm:
    """A plain stand-in for the Machine (the real VMM is tested in integration)."""

    def __init__(self):
        self.status = "running"
        self.config = FakeConfig()
        self.on_event = None
        self.calls = []

    def pause(self):
        self.calls.append("pause")
        self.status = "paused"

    def resume(self):
        self.calls.append("resume")
        self.status = "running"

    def press_power_button(self):
        self.calls.append("powerdown")

    def reset(self):
        self.calls.append("reset")

    def stop_by_host(self, reason, cause=qmp_events.HOST_SIGNAL):
        self.calls.append(("quit", cause))

    def cpus(self):
        return [{"cpu-index": 0, "thread-id": 123}, {"cpu-index": 1, "thread-id": 124}]

    def cpu_props(self, index):  # one socket of two cores
        return {"core-id": index, "thread-id": 0, "socket-id": 0}

    def describe(self):
        return {"name": "x"}


def negotiated() -> Session:
    session = Session()
    assert session.handle(b'{"execute": "qmp_capabilities"}', FakeVm()) == {"return": {}}
    return session


def run(request, vm=None, session=None):
    text = request if isinstance(request, bytes) else json.dumps(request).encode()
    return (session or negotiated()).handle(text, vm or FakeVm())


def error(reply):
    return reply["error"]["class"], reply["error"]["desc"]


# --- greeting and capabilities negotiation --------------------------------------------
def test_greeting_carries_qemus_version_structure():
    version = control.GREETING["QMP"]["version"]
    assert set(version["qemu"]) == {"major", "minor", "micro"}
    assert version["package"].startswith("computed-")
    assert control.GREETING["QMP"]["capabilities"] == []


def test_only_qmp_capabilities_runs_before_negotiation():
    vm, session = FakeVm(), Session()
    for command in ("query-status", "stop", "no-such-command"):
        reply = run({"execute": command, "id": 1}, vm, session)
        assert error(reply) == (
            "CommandNotFound",
            "Expecting capabilities negotiation with 'qmp_capabilities'",
        )
        assert reply["id"] == 1
    assert vm.calls == [] and not session.negotiated
    assert run({"execute": "qmp_capabilities", "arguments": {}}, vm, session) == {"return": {}}
    assert session.negotiated
    assert error(run({"execute": "qmp_capabilities"}, vm, session)) == (
        "CommandNotFound",
        "Capabilities negotiation is already complete, command ignored",
    )


def test_capabilities_we_do_not_offer_are_refused():
    session = Session()
    assert error(
        run({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}, None, session)
    ) == (
        "GenericError",
        "Capability oob not available",
    )
    assert (
        "expected: array"
        in error(
            run({"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}, None, session)
        )[1]
    )
    assert (
        "does not accept value 'x'"
        in error(
            run({"execute": "qmp_capabilities", "arguments": {"enable": ["x"]}}, None, session)
        )[1]
    )
    assert not session.negotiated


# --- commands ------------------------------------------------------------------------------
def test_query_commands_have_qemus_shapes():
    assert run({"execute": "query-status"})["return"] == {
        "status": "running",
        "singlestep": False,
        "running": True,
    }
    assert run({"execute": "query-kvm"})["return"] == {"enabled": True, "present": True}
    assert run({"execute": "query-name"})["return"] == {"name": "instance-0000004a"}
    assert run({"execute": "query-uuid"})["return"] == {"UUID": FakeConfig.uuid}
    assert run({"execute": "query-version"})["return"] == control.VERSION_INFO
    assert run({"execute": "query-cpus-fast"})["return"][1] == {
        "cpu-index": 1,
        "qom-path": "/machine/unattached/device[1]",
        "thread-id": 124,
        "props": {"core-id": 1, "thread-id": 0, "socket-id": 0},
        "target": "x86_64",
    }
    names = {c["name"] for c in run({"execute": "query-commands"})["return"]}
    assert names == {"qmp_capabilities", *control.COMMANDS}
    assert "__org.computed_query-vm" in names


def test_commands_reach_the_vm_and_ids_are_echoed():
    vm, session = FakeVm(), negotiated()
    for cmd in ["stop", "cont", "system_powerdown", "system_reset", "quit"]:
        assert run({"execute": cmd, "id": [cmd]}, vm, session) == {"return": {}, "id": [cmd]}
    assert vm.calls == ["pause", "resume", "powerdown", "reset", ("quit", "host-qmp-quit")]


def test_lifecycle_commands_refused_after_shutdown():
    vm = FakeVm()
    vm.status = "shutdown"
    assert "shut down" in error(run({"execute": "cont"}, vm))[1]
    assert vm.calls == []


# --- malformed requests: qemu's words, and never a crash ----------------------------------
def test_arguments_that_are_not_an_object_are_refused_not_ignored():
    vm = FakeVm()
    for arguments in ([], "x", 5, None, True):
        reply = run({"execute": "stop", "arguments": arguments, "id": 7}, vm)
        assert reply == {
            "error": {
                "class": "GenericError",
                "desc": "QMP input member 'arguments' must be an object",
            },
            "id": 7,
        }
    assert vm.calls == [] and vm.status == "running"


def test_unexpected_arguments_and_members_are_refused():
    vm = FakeVm()
    assert error(run({"execute": "stop", "arguments": {"force": True}}, vm)) == (
        "GenericError",
        "Parameter 'force' is unexpected",
    )
    assert error(run({"execute": "stop", "exec-oob": "x"}, vm))[1] == (
        "QMP input member 'exec-oob' is unexpected"
    )
    assert vm.calls == []


def test_bad_requests_get_qemus_error_replies():
    assert error(run(b'{ "execute": }')) == ("GenericError", "JSON parse error, expecting value")
    assert error(run(b"\xff\xfe"))[1] == "JSON parse error, invalid UTF-8 sequence"
    assert error(run(b'{"execute": "stop", "id": NaN}'))[1].startswith("JSON parse error")
    assert error(run(b"[1, 2]")) == ("GenericError", "QMP input must be a JSON object")
    assert error(run({"execute": 5}))[1] == "QMP input member 'execute' must be a string"
    assert error(run({"id": 3})) == ("GenericError", "QMP input lacks member 'execute'")
    assert error(run({"execute": "format-disk"})) == (
        "CommandNotFound",
        "The command format-disk has not been found",
    )
    assert "id" not in run(b"[1]")


def test_recursion_in_the_parser_is_an_error_reply():
    with pytest.raises(QmpError, match="nesting depth"):
        parse(b"[" * 100_000 + b"]" * 100_000)


# --- events ----------------------------------------------------------------------------------
def test_events_are_timestamped_and_carry_data_only_when_they_have_some():
    ns = 1_267_040_730_682_951_123
    assert event_message("STOP", None, ns) == {
        "event": "STOP",
        "timestamp": {"seconds": 1267040730, "microseconds": 682951},
    }
    shutdown = event_message("SHUTDOWN", qmp_events.cause_data("guest-shutdown"), ns)
    assert shutdown["data"] == {"guest": True, "reason": "guest-shutdown"}
    assert qmp_events.cause_data("host-qmp-quit") == {"guest": False, "reason": "host-qmp-quit"}


# --- the stream splitter --------------------------------------------------------------------
def split(*chunks, max_size=1000, max_depth=8):
    splitter = MessageSplitter(max_size, max_depth)
    out = []
    for chunk in chunks:
        out += [(r.text, r.error) for r in splitter.feed(chunk)]
    return out, splitter.overflowed


def test_requests_need_no_newline_and_may_arrive_in_pieces():
    assert split(b'{"execute":"stop"}{"execute":"cont"}')[0] == [
        (b'{"execute":"stop"}', ""),
        (b'{"execute":"cont"}', ""),
    ]
    assert split(b'{"exe', b'cute": "a\\', b'"}]{"}\r\n')[0] == [(b'{"execute": "a\\"}]{"}', "")]


def test_stray_bytes_between_requests_are_one_bad_request_per_line():
    assert split(b"nope\n  5 \n[]\n")[0] == [(b"nope", ""), (b"5 ", ""), (b"[]", "")]


def test_deep_nesting_is_refused_before_parsing_and_skipped_unbuffered():
    out, overflowed = split(b"[" * 1100 + b"\n", max_size=100)
    assert out == [(b"", "JSON nesting depth limit exceeded")] and not overflowed
    out, _ = split(b"[" * 10, b'"]]"' + b"]" * 10 + b'{"execute":"x"}')
    assert out == [(b"", "JSON nesting depth limit exceeded"), (b'{"execute":"x"}', "")]


def test_a_control_byte_forces_the_parser_back_to_a_known_state():
    out, _ = split(b'{"execute": "sto', b"\xff", b'{"execute":"cont"}')
    assert out == [(b"", "JSON parse error, stray '\\xff'"), (b'{"execute":"cont"}', "")]


def test_an_endless_request_overflows():
    assert split(b"{" + b" " * 2000) == ([], True)
    assert split(b"x" * 2000) == ([], True)


# --- the server: client slots and event delivery, over a real socket ------------------------
class Pump:
    """Runs the server's selector in the test's thread, as the VMM's main loop does."""

    def __init__(self, tmp_path):
        self.sel = selectors.DefaultSelector()
        self.vm = FakeVm()
        self.server = ControlServer(str(tmp_path / "c.sock"), self.vm, self.sel)

    def run(self):
        for _ in range(200):
            ready = self.sel.select(0)
            if not ready:
                return
            for key, _mask in ready:
                key.data()

    def connect(self, negotiate=False):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        s.connect(self.server.path)
        self.run()
        f = s.makefile("rb")
        assert "QMP" in json.loads(f.readline())
        if negotiate:
            s.sendall(b'{"execute":"qmp_capabilities"}')
            self.run()
            assert json.loads(f.readline()) == {"return": {}}
        return s, f


def is_open(s) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    finally:
        s.setblocking(True)


def test_idle_clients_never_lock_out_a_new_one(tmp_path):
    pump = Pump(tmp_path)
    idle = [pump.connect() for _ in range(control.MAX_CLIENTS)]
    s, f = pump.connect(negotiate=True)  # the 33rd gets in, and can work
    s.sendall(b'{"execute":"query-status"}')
    pump.run()
    assert json.loads(f.readline())["return"]["running"] is True
    assert not is_open(idle[0][0]), "the oldest idle client made room"
    assert all(is_open(c) for c, _ in idle[1:])
    pump.server.close()


def test_clients_still_negotiating_make_room_before_negotiated_ones(tmp_path):
    pump = Pump(tmp_path)
    working = [pump.connect(negotiate=True) for _ in range(control.MAX_CLIENTS - 1)]
    fresh, _ = pump.connect()  # the newest, but still negotiating
    pump.connect()
    assert not is_open(fresh)
    assert all(is_open(c) for c, _ in working)
    pump.server.close()


def test_events_go_to_negotiated_clients_only(tmp_path):
    pump = Pump(tmp_path)
    waiting, waiting_f = pump.connect()
    _ready, ready_f = pump.connect(negotiate=True)
    pump.vm.on_event("RESET", qmp_events.cause_data("guest-reset"))
    event = json.loads(ready_f.readline())
    assert event["event"] == "RESET" and event["data"] == {"guest": True, "reason": "guest-reset"}
    assert set(event["timestamp"]) == {"seconds", "microseconds"}
    waiting.sendall(b'{"execute":"qmp_capabilities"}')
    pump.run()
    assert json.loads(waiting_f.readline()) == {"return": {}}, "no event before negotiation"
    pump.server.close()
    assert pump.vm.on_event is None
