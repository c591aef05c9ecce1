"""The agent's systemd unit is valid, and the agent speaks sd_notify as Type=notify expects."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.agent_harness import AGENT, AgentProcess

pytestmark = pytest.mark.integration
UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "computed-agent.service"


def test_unit_file_verifies_without_warnings(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    unit = tmp_path / UNIT.name
    # verify checks that ExecStart's program exists: point it at the real agent.
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/computed-agent", AGENT))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_unit_keeps_vms_across_agent_restarts():
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "KillMode=process",
        "Restart=on-failure",
        "WatchdogSec=",
        "DeviceAllow=/dev/kvm rw",
    ):
        assert line in text


def test_agent_sends_ready_watchdog_and_stopping(etcd, short_tmp):
    path = f"{short_tmp}/notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    agent = AgentProcess(f"{short_tmp}/state", etcd.endpoint)
    try:
        agent.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        messages = [sock.recv(4096).decode()]
        assert messages[0].startswith("READY=1\nSTATUS=serving on")
        assert sock.recv(4096) == b"WATCHDOG=1"  # every WatchdogSec/2 = 0.5 s
        agent.kill(signal.SIGTERM)
        while (msg := sock.recv(4096)) == b"WATCHDOG=1":
            pass
        assert msg == b"STOPPING=1"
    finally:
        agent.cleanup()
        sock.close()
