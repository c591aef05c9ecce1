"""The systemd units are valid, and the agent speaks sd_notify as Type=notify expects.

`systemd-analyze verify` (Debian package `systemd`) works offline, without
systemd as PID 1. It checks that each Exec*= program exists and is executable,
so the test verifies a copy of each unit whose programs point at real ones.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent_harness import AgentProcess

pytestmark = pytest.mark.integration
UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
AGENT_UNIT = UNITS / "computed-agent.service"
SCHEDULER_UNIT = UNITS / "computed-scheduler.service"

# ExecStart=, ExecStartPre=, ...: optional special prefixes (-@:+!), then the program.
_EXEC = re.compile(r"^(Exec[A-Za-z]*=)([-@:+!]*)(\S+)", re.MULTILINE)


def _real_program(program: str) -> str:
    """The same-named console script in this venv if there is one, else this Python."""
    candidate = Path(sys.executable).parent / Path(program).name
    return str(candidate) if os.access(candidate, os.X_OK) else sys.executable


def _verify(unit: Path, tmp_path: Path) -> tuple[int, list[str], list[str]]:
    """Run verify on a copy of `unit`; (returncode, lines about the unit, other lines)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    copy = tmp_path / unit.name
    copy.write_text(
        _EXEC.sub(lambda m: m[1] + m[2] + _real_program(m[3]), unit.read_text()),
    )
    result = subprocess.run(
        # --man=no: do not look up Documentation=man: pages;
        # --recursive-errors=no: only this unit's errors set the exit code
        # (a broken unrelated unit on the machine must not fail this test).
        [analyze, "verify", "--man=no", "--recursive-errors=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "cat"},
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    ours = [line for line in lines if unit.name in line]
    return result.returncode, ours, [line for line in lines if unit.name not in line]


@pytest.mark.parametrize("unit", [AGENT_UNIT, SCHEDULER_UNIT], ids=lambda u: u.name)
def test_unit_file_verifies_without_warnings(unit, tmp_path):
    returncode, ours, others = _verify(unit, tmp_path)
    assert ours == [], "\n".join(ours)
    assert returncode == 0, "\n".join(ours + others)
    if others:  # about other units on this machine: shown, not our failure
        print("\n".join(others))


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above would notice a mistake: a typo'd key and a bad value."""
    broken = tmp_path / "src" / AGENT_UNIT.name
    broken.parent.mkdir()
    broken.write_text(
        AGENT_UNIT.read_text()
        .replace("WatchdogSec=30", "WatchdogSek=30")
        .replace("KillMode=process", "KillMode=proces")
    )
    returncode, ours, _ = _verify(broken, tmp_path)
    assert any("WatchdogSek" in line for line in ours), ours
    assert any("proces" in line for line in ours), ours


def _settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_agent_unit_keeps_vms_across_agent_restarts():
    s = _settings(AGENT_UNIT)
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30"]
    assert s["KillMode"] == ["process"]  # stopping the agent leaves the VMMs running
    assert s["Restart"] == ["on-failure"]
    assert s["OOMPolicy"] == ["continue"]  # a VMM's OOM kill does not stop the agent
    assert s["StateDirectory"] == ["computed"]
    assert s["ExecStart"][0].split()[0].endswith("/computed-agent")


def test_agent_hardening_leaves_vm_management_possible():
    s = _settings(AGENT_UNIT)
    assert s["DevicePolicy"] == ["closed"]
    assert {"/dev/kvm rw", "/dev/net/tun rw"} <= set(s["DeviceAllow"])
    for breaking in ("PrivateDevices", "PrivateNetwork", "ProtectKernelTunables", "DynamicUser"):
        assert breaking not in s, f"{breaking}= would stop the agent managing VMs"
    assert s["ProtectSystem"] in (["full"], ["yes"]) or "ReadWritePaths" in s
    caps = s["CapabilityBoundingSet"][0].split()
    assert {"CAP_NET_ADMIN", "CAP_KILL"} <= set(caps)
    families = s["RestrictAddressFamilies"][0].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} <= set(families)


def test_scheduler_unit_is_notify_with_normal_kill_mode():
    s = _settings(SCHEDULER_UNIT)
    assert s["Type"] == ["notify"]
    assert s.get("KillMode", ["control-group"]) == ["control-group"]
    assert s["ExecStart"][0].split()[0].endswith("/computed-scheduler")


def test_agent_sends_ready_watchdog_and_stopping(etcd, short_tmp):
    """The real agent under a fake systemd: READY=1, pings at WatchdogSec/2, STOPPING=1."""
    path = f"{short_tmp}/notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    agent = AgentProcess(f"{short_tmp}/state", etcd.endpoint)
    try:
        agent.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        assert sock.recv(4096).decode().startswith("READY=1\nSTATUS=serving on")
        assert sock.recv(4096) == b"WATCHDOG=1"  # every WatchdogSec/2 = 0.5 s
        agent.kill(signal.SIGTERM)
        while (msg := sock.recv(4096)) == b"WATCHDOG=1":
            pass
        assert msg == b"STOPPING=1"
    finally:
        agent.cleanup()
        sock.close()
