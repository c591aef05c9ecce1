import json

from computed.vmm.control import dispatch


class FakeVm:
    """A plain stand-in for the pure dispatch logic (the real VMM is tested in integration)."""

    def __init__(self):
        self.status = "running"
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

    def stop_by_host(self, reason):
        self.calls.append("quit")

    def cpus(self):
        return [{"cpu-index": 0, "thread-id": 123}]

    def describe(self):
        return {"name": "x"}


def run(line, vm=None):
    return dispatch(line if isinstance(line, bytes) else line.encode(), vm or FakeVm())


def test_query_status_reports_running():
    assert run('{"execute": "query-status"}') == {"return": {"status": "running", "running": True}}


def test_commands_reach_the_vm_and_ids_are_echoed():
    vm = FakeVm()
    for cmd in ["stop", "cont", "system_powerdown", "system_reset", "quit"]:
        assert run(json.dumps({"execute": cmd, "id": cmd}), vm) == {"return": {}, "id": cmd}
    assert vm.calls == ["pause", "resume", "powerdown", "reset", "quit"]
    assert run('{"execute": "query-cpus"}', vm)["return"] == [{"cpu-index": 0, "thread-id": 123}]


def test_bad_requests_get_error_replies():
    assert run("{nope")["error"]["desc"] == "request is not valid JSON"
    assert run(b"\xff\xfe")["error"]["class"] == "GenericError"
    assert "execute" in run("[1, 2]")["error"]["desc"]
    assert run('{"execute": "format-disk"}')["error"]["class"] == "CommandNotFound"


def test_lifecycle_commands_refused_after_shutdown():
    vm = FakeVm()
    vm.status = "shutdown"
    assert "shut down" in run('{"execute": "cont"}', vm)["error"]["desc"]
    assert vm.calls == []
