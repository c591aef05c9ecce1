"""The systemd units are valid, and the agent speaks sd_notify as Type=notify expects.

`systemd-analyze verify` (Debian package `systemd`) works offline, without
systemd as PID 1. It checks that each Exec*= program exists and is executable,
so the test verifies a copy of each unit whose programs point at real ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from computed.api import agent_pb2, types_pb2
from computed.procfs import stat_fields
from computed.store import keys
from tests.agent_harness import AGENT, AgentProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
AGENT_UNIT = UNITS / "computed-agent.service"

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


@pytest.mark.parametrize("unit", ["computed-agent.service", "computed-scheduler.service"])
def test_unit_file_verifies_without_warnings(tmp_path, unit):
    returncode, ours, others = _verify(UNITS / unit, tmp_path)
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
    _, ours, _ = _verify(broken, tmp_path)
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


def _confined(args: list[str]) -> list[str]:
    """`args` run as the unit runs them, as far as is possible without systemd as PID 1.

    The unit's CapabilityBoundingSet= and NoNewPrivileges= (setpriv), and in a
    mount namespace of its own, like systemd gives each start of the service:
    ProtectSystem=full (/usr, /boot, /efi, /etc read-only), PrivateTmp= (a fresh
    /tmp) and ProtectHome= (empty /home and /root, unless this test's Python
    lives there). Not emulated: DevicePolicy=, RestrictAddressFamilies= and the
    other seccomp-based settings.
    """
    s = _settings(AGENT_UNIT)
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["full"]
    caps = ",".join(
        "+" + c.removeprefix("CAP_").lower() for c in s["CapabilityBoundingSet"][0].split()
    )
    read_only = [d for d in ("/usr", "/boot", "/efi", "/etc") if os.path.isdir(d)]
    hidden = ["/tmp"]  # PrivateTmp
    if s.get("ProtectHome") == ["yes"]:
        hidden += ["/home", "/root"]
    # A real install lives under /usr/local; this test runs the agent from its
    # checkout, which may sit under /tmp or /root (CI clones anywhere): keep
    # whatever holds the agent and its Python visible.
    needed = [os.path.realpath(sys.executable), os.path.realpath(AGENT), str(Path(__file__))]
    hidden = [d for d in hidden if not any(n.startswith(d + "/") for n in needed)]
    script = "set -e\n"
    for d in read_only:
        script += f"mount --bind {d} {d}; mount -o remount,bind,ro {d}\n"
    for d in hidden:
        script += f"mount -t tmpfs -o mode=0755 tmpfs {d}\n"
    script += f'exec setpriv --bounding-set -all,{caps} --no-new-privs -- "$@"\n'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *args]


def _alive(pid: int) -> bool:
    try:
        return stat_fields(f"/proc/{pid}/stat")[0] != "Z"
    except FileNotFoundError:
        return False


def test_agent_manages_vms_under_the_units_confinement(etcd, store):
    """Spawn, stats, stop/start and a restart that re-adopts, all inside the unit's limits."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs root, unshare and setpriv (util-linux) to confine like systemd")
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm")
    help_text = subprocess.run([AGENT, "--help"], capture_output=True, text=True).stdout
    extra = ["--stats-pss"] if "--stats-pss" in help_text else []
    # Not under /tmp, which the confined agent sees as an empty private tmpfs.
    state = tempfile.mkdtemp(prefix="cd-", dir="/var/tmp")
    agent = AgentProcess(state, etcd.endpoint, "confined-host", *extra)
    agent.args = _confined(agent.args)
    try:
        agent.start()
        with open(f"/proc/{agent.proc.pid}/status") as f:
            status = f.read()
        assert "NoNewPrivs:\t1" in status
        assert os.readlink(f"/proc/{agent.proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        u = str(uuid.uuid4())
        spec = types_pb2.InstanceSpec(
            uuid=u, name=f"instance-{u[:8]}", image="heartbeat", vcpus=2, memory_mb=64
        )
        inst = agent.stub.Spawn(agent_pb2.SpawnRequest(spec=spec), timeout=15)
        assert inst.status == types_pb2.STATUS_ACTIVE, inst.fault

        def stats():
            entry = store.get(keys.instance_stats("confined-host", u))
            return entry and json.loads(entry.value)

        got = wait_until(lambda: (s := stats()) and "vcpu.1.tid" in s and s, what="stats in etcd")
        assert got["pid"] == inst.pid
        assert {got["vcpu.0.tid"], got["vcpu.1.tid"]} <= {
            int(t) for t in os.listdir(f"/proc/{inst.pid}/task")
        }
        assert "helper.kvm-pit.pid" in got, got
        if extra:
            wait_until(
                lambda: "memory.pss" in (stats() or {}), what="memory.pss read under the caps"
            )
        ref = agent_pb2.InstanceRef(uuid=u)
        stopped = agent.stub.Stop(agent_pb2.StopRequest(uuid=u), timeout=30)
        assert stopped.status == types_pb2.STATUS_SHUTOFF
        started = agent.stub.Start(ref, timeout=15)
        assert started.status == types_pb2.STATUS_ACTIVE
        # Stop the service (KillMode=process: SIGTERM to the agent only): the VM runs on,
        # and the next start — in a new mount namespace, as systemd does — adopts it.
        assert agent.kill(signal.SIGTERM) == 0
        assert _alive(started.pid), "the VMM died with its agent"
        agent.start()
        assert agent.stub.Get(ref).pid == started.pid, "re-adopted with the same PID"
        agent.stub.Delete(ref, timeout=30)
        wait_until(lambda: not _alive(started.pid), what="VMM gone after delete")
    finally:
        agent.cleanup()
        shutil.rmtree(state, ignore_errors=True)
