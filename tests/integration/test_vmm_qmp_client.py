"""qemu's own QMP client library, qemu.qmp, against a real VMM.

If QMPClient connects, negotiates, runs every command and hears every event,
the control socket is QMP as qemu speaks it, not something QMP-like.
"""

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from computed.vmm import control
from computed.vmm.errors import ExitCode

qmp = pytest.importorskip("qemu.qmp")

pytestmark = pytest.mark.integration

QMP_SHELL = os.path.join(os.path.dirname(sys.executable), "qmp-shell")


def arg(vm, option: str) -> str:
    return vm.args[vm.args.index(option) + 1]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def connect(vm) -> "qmp.QMPClient":
    client = qmp.QMPClient(arg(vm, "-name"))
    await client.connect(str(vm.control))
    return client


async def disconnect(client) -> None:
    """After the VMM exits, qemu.qmp reports the server's hang-up as EOFError, as for qemu."""
    try:
        await client.disconnect()
    except EOFError:
        pass


async def next_event(client, timeout: float = 10.0) -> dict:
    event = await asyncio.wait_for(client.events.get(), timeout)
    assert set(event["timestamp"]) == {"seconds", "microseconds"}
    return event


def test_qmp_client_negotiates_and_runs_every_command(vmm):
    vm = vmm("heartbeat", "-smp", "2").wait_ready()
    vm.wait_output(r"tick 1\n")

    async def session():
        client = await connect(vm)
        try:
            assert client.greeting.QMP.version == control.VERSION_INFO
            assert client.greeting.QMP.capabilities == []
            names = {c["name"] for c in await client.execute("query-commands")}
            assert {"qmp_capabilities", "query-status", "query-cpus-fast", "quit"} <= names
            assert await client.execute("query-version") == control.VERSION_INFO
            assert await client.execute("query-name") == {"name": arg(vm, "-name")}
            assert await client.execute("query-uuid") == {"UUID": arg(vm, "-uuid")}
            assert await client.execute("query-kvm") == {"enabled": True, "present": True}
            assert await client.execute("query-status") == {
                "status": "running",
                "singlestep": False,
                "running": True,
            }
            cpus = await client.execute("query-cpus-fast")
            assert [c["cpu-index"] for c in cpus] == [0, 1]
            assert set(cpus[1]) == {"cpu-index", "qom-path", "thread-id", "props", "target"}
            assert {c["thread-id"] for c in cpus} <= set(vm.threads())
            assert cpus[1]["target"] == "x86_64"
            info = await client.execute("__org.computed_query-vm")
            assert info["vcpus"] == 2 and info["status"] == "running"
            with pytest.raises(qmp.ExecuteError) as e:
                await client.execute("migrate")
            assert e.value.error_class == "CommandNotFound"
        finally:
            await client.disconnect()

    run(session())
    vm.qmp("quit")


def test_qmp_client_hears_every_lifecycle_event(vmm):
    vm = vmm("heartbeat").wait_ready()
    vm.wait_output(r"tick 1\n")

    async def session():
        client = await connect(vm)
        try:
            await client.execute("stop")
            assert (await next_event(client))["event"] == "STOP"
            assert (await client.execute("query-status"))["status"] == "paused"
            await client.execute("cont")
            assert (await next_event(client))["event"] == "RESUME"
            await client.execute("system_reset")
            reset = await next_event(client)
            assert reset["event"] == "RESET"
            assert reset["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
            await client.execute("system_powerdown")
            assert (await next_event(client))["event"] == "POWERDOWN"
            shutdown = await next_event(client)
            assert shutdown["event"] == "SHUTDOWN"
            assert shutdown["data"] == {"guest": True, "reason": "guest-shutdown"}
        finally:
            await disconnect(client)

    run(session())
    assert vm.wait_exit() == ExitCode.POWERED_OFF


def test_qmp_client_hears_a_guest_power_off_nobody_asked_for(vmm):
    vm = vmm("heartbeat", "-append", "ticks=2").wait_ready()  # powers off by itself

    async def session():
        client = await connect(vm)
        try:
            shutdown = await next_event(client)
        finally:
            await disconnect(client)
        return shutdown

    shutdown = run(session())
    assert (shutdown["event"], shutdown["data"]) == (
        "SHUTDOWN",
        {"guest": True, "reason": "guest-shutdown"},
    )
    assert vm.wait_exit() == ExitCode.POWERED_OFF


def test_qmp_client_hears_sigterm_press_the_power_button(vmm):
    vm = vmm("heartbeat").wait_ready()
    vm.wait_output(r"tick 1\n")

    async def session():
        client = await connect(vm)
        try:
            vm.proc.send_signal(signal.SIGTERM)
            return [await next_event(client), await next_event(client)]
        finally:
            await disconnect(client)

    powerdown, shutdown = run(session())
    assert powerdown["event"] == "POWERDOWN"
    assert shutdown["data"] == {"guest": True, "reason": "guest-shutdown"}
    assert vm.wait_exit() == ExitCode.POWERED_OFF


def test_qmp_client_quit(vmm):
    vm = vmm("heartbeat").wait_ready()

    async def session():
        client = await connect(vm)
        try:
            assert await client.execute("quit") == {}
            return await next_event(client)
        finally:
            await disconnect(client)

    shutdown = run(session())
    assert shutdown["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST


@pytest.mark.skipif(not os.path.exists(QMP_SHELL), reason="qemu.qmp's qmp-shell is not installed")
def test_qmp_shell_runs_piped_commands(vmm):
    vm = vmm("heartbeat").wait_ready()
    # An empty line makes qmp-shell print the events it has received.
    script = "query-status\nstop\n\nquery-name\n"
    out = subprocess.run(
        [QMP_SHELL, str(vm.control)], input=script, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    qemu = control.VERSION_INFO["qemu"]
    assert f"Connected to QEMU {qemu['major']}.{qemu['minor']}.{qemu['micro']}" in out.stdout
    assert '"singlestep": false, "running": true' in out.stdout
    assert "'event': 'STOP'" in out.stdout
    assert f'{{"return": {{"name": "{arg(vm, "-name")}"}}}}' in out.stdout
    assert vm.qmp("query-status")["status"] == "paused"
