"""Confined VMMs, started as the agent starts them: real /dev/kvm, real cgroups, real
mount namespaces, real taps.

Each VMM gets what the agent would give it: a jail prepared by agent/jail.py,
a cgroup from agent/cgroups.py (under a unique parent nested in this test's own
cgroup, so nothing leaves the cgroups we were started in), a uid from the
range, and where networked a tap. Everything is removed at teardown, on
failure too. Needs root and /dev/kvm.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from agent.cgroups import limits_for
from agent.jail import JAIL_FILES, Jailer, jail_entries
from agent.vmm_process import (
    Confinement,
    InstancePaths,
    read_exit_record,
    spawn_ready,
    vmm_command,
)
from agent.vmm_users import DEFAULT_UID_RANGE, parse_id_range
from agent.warm_parent import VmmChild
from computed.store.records import InstanceSpec
from computed.taps import tap_name
from computed.vmm.control_client import execute
from computed.vmm.errors import ExitCode
from tests.vmm_harness import again_if_the_guest_triple_faults
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

HOST_IP, GUEST_IP = "10.98.0.1", "10.98.0.2"
# What a confined VMM may hold an fd on outside its jail: /dev/kvm (opened before
# the drop; VM, vCPU and eventfds are anonymous inodes), its tap, stdin.
DEVICES_OUTSIDE = {"/dev/kvm", "/dev/net/tun", "/dev/vhost-net", "/dev/null"}
FD_KINDS_OUTSIDE = ("anon_inode:", "pipe:", "socket:")


class Confined:
    """One confined VMM and what the agent prepared for it."""

    def __init__(self, spec: InstanceSpec, paths: InstancePaths, confinement: Confinement):
        self.spec, self.paths, self.confinement = spec, paths, confinement
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def console(self) -> str:
        try:
            with open(self.paths.console, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_console(self, pattern: str, timeout: float = 30.0) -> None:
        wait_until(lambda: re.search(pattern, self.console()), timeout, what=f"{pattern!r}")

    def qmp(self, command: str):
        return execute(self.paths.control, command, timeout=10.0)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def status(self) -> dict[str, str]:
        with open(f"/proc/{self.pid}/status") as f:
            return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)

    def stderr(self) -> str:  # as a VmmProcess's: the VMM's own words
        return self.log()

    def log(self) -> str:
        try:
            with open(self.paths.log) as f:
                return f.read()[-2000:]
        except FileNotFoundError:
            return ""


class Host:
    """The agent's side: a Jailer over a private state dir, and every VMM started."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        parent = f"./cdtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.jailer = Jailer(state_dir, parse_id_range(DEFAULT_UID_RANGE), parent)
        self.vms: list[Confined] = []

    def prepare(self, image: str, vcpus: int = 1, memory_mb: int = 64, **net: str) -> Confined:
        u = str(uuid.uuid4())
        spec = InstanceSpec(
            uuid=u, name=f"instance-{u[:8]}", image=image, vcpus=vcpus, memory_mb=memory_mb, **net
        )
        paths = InstancePaths.of(self.state_dir, u)
        os.makedirs(paths.root, mode=0o750)
        vm = Confined(spec, paths, self.jailer.prepare(spec, paths))
        self.vms.append(vm)
        return vm

    def start(self, image: str, cmdline: str = "", **kw) -> Confined:
        """As the agent starts a VMM: agent.vmm_process.spawn_ready, ready when `running`."""
        vm = self.prepare(image, **kw)
        if cmdline:
            vm.spec = InstanceSpec(**{**vm.spec.__dict__, "cmdline": cmdline})
        vm.proc = launch(vm.spec, vm.paths, vm.confinement)
        return vm

    def cleanup(self) -> None:
        for vm in self.vms:
            if vm.proc is not None and vm.proc.poll() is None:
                vm.proc.kill()
                vm.proc.wait()
        problems = []
        for vm in self.vms:
            try:
                self.jailer.release(vm.spec.uuid, vm.paths)
            except Exception as e:  # keep going: every other resource must go too
                problems.append(str(e))
        self.jailer.cgroups.remove_parent_if_empty()
        assert not problems, problems


def launch(spec: InstanceSpec, paths: InstancePaths, confinement: Confinement) -> VmmChild:
    """Start a confined VMM as the agent does; the QMP connection it was found running on
    is closed (the agent keeps it for events; the tests open their own)."""
    child, control = spawn_ready(spec, paths, timeout=60.0, confinement=confinement)
    control.close()
    return child


@pytest.fixture
def host(short_tmp) -> Iterator[Host]:
    if os.geteuid() != 0 or not os.path.exists("/dev/kvm"):
        pytest.skip("needs root and /dev/kvm")
    h = Host(short_tmp)
    try:
        yield h
    finally:
        h.cleanup()
    leftovers = [d for vm in h.vms for d in h.jailer.cgroups.dirs(vm.spec.uuid)]
    assert not any(os.path.exists(d) for d in leftovers), "an instance cgroup was left"
    assert not any(os.path.exists(p) for p in h.jailer.cgroups.parents.values())


# --- what every confined VMM must show -------------------------------------------------
def assert_confined(vm: Confined) -> None:
    uid, gid = vm.confinement.uid, vm.confinement.gid
    status = vm.status()
    assert status["Uid"].split() == [str(uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(gid)] * 4, status["Gid"]
    assert status["Groups"].strip() == ""
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, f"{caps} {status[caps]}"
    assert status["NoNewPrivs"] == "1"

    # Its root is the jail (same inode), the only mount it has, read-only.
    root, jail = os.stat(f"/proc/{vm.pid}/root"), os.stat(vm.paths.jail)
    assert (root.st_dev, root.st_ino) == (jail.st_dev, jail.st_ino)
    with open(f"/proc/{vm.pid}/mountinfo") as f:
        mounts = f.read().splitlines()
    assert len(mounts) == 1, mounts
    assert mounts[0].split()[4] == "/" and "ro" in mounts[0].split()[5].split(",")
    assert jail_entries(vm.paths.jail) <= JAIL_FILES

    # It sits in its cgroups, with the limits for its flavor.
    limits = limits_for(vm.spec.vcpus, vm.spec.memory_mb)
    for directory in vm.confinement.cgroups:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            assert str(vm.pid) in f.read().split()
    expected = {
        "cpu.cfs_quota_us": str(limits.cpu_quota_us),
        "memory.limit_in_bytes": str(limits.memory_bytes),
        "cpu.max": f"{limits.cpu_quota_us} {limits.cpu_period_us}",
        "memory.max": str(limits.memory_bytes),
        "pids.max": str(limits.pids_max),
    }
    seen = {}
    for directory in vm.confinement.cgroups:
        for name, value in expected.items():
            path = os.path.join(directory, name)
            if os.path.exists(path):
                with open(path) as f:
                    seen[name] = f.read().strip()
                assert seen[name] == value, name
    assert "pids.max" in seen and ("memory.max" in seen or "memory.limit_in_bytes" in seen)

    # Every fd is in the jail, or a device it opened before the drop, or anonymous.
    for fd in os.listdir(f"/proc/{vm.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{vm.pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        assert (
            target.startswith(vm.paths.jail + "/")
            or target in DEVICES_OUTSIDE
            or target.startswith(FD_KINDS_OUTSIDE)
        ), f"fd {fd} -> {target}"


# --- the tests -----------------------------------------------------------------------------
def test_a_confined_vmm_has_its_own_uid_no_capabilities_its_jail_and_its_cgroup(host):
    vm = host.start("heartbeat", vcpus=2)
    assert_confined(vm)
    vm.wait_console(r"tick 2\n")
    # Its threads are named from inside (no /proc in the jail) and the control socket
    # serves every command through fds opened before the drop.
    names = set()
    for tid in os.listdir(f"/proc/{vm.pid}/task"):
        with open(f"/proc/{vm.pid}/task/{tid}/comm") as f:
            names.add(f.read().strip())
    assert {"CPU 0/KVM", "CPU 1/KVM"} <= names
    info = vm.qmp("__org.computed_query-vm")
    assert info["pid"] == vm.pid and info["pit-thread-pid"], info
    assert [c["cpu-index"] for c in vm.qmp("query-cpus-fast")] == [0, 1]
    vm.qmp("stop")
    assert vm.qmp("query-status")["status"] == "paused"
    vm.qmp("cont")
    vm.qmp("system_reset")
    vm.wait_console(r"heartbeat: 100 Hz\n(.|\n)*heartbeat: 100 Hz\n")
    assert vm.qmp("__org.computed_query-vm")["resets"] == 1
    assert_confined(vm)

    os.kill(vm.pid, signal.SIGTERM)  # the power button; the guest powers off
    assert vm.wait_exit() == ExitCode.POWERED_OFF, vm.log()
    assert "power button" in vm.console()
    assert read_exit_record(vm.paths) == (ExitCode.POWERED_OFF, "guest powered off")
    assert jail_entries(vm.paths.jail) <= JAIL_FILES


def test_a_confined_vmm_stopped_by_the_host_still_leaves_its_exit_status(host):
    vm = host.start("heartbeat")
    vm.wait_console(r"tick 1\n")
    vm.qmp("quit")
    assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST
    with open(vm.paths.exit_record) as f:  # written through the fd opened before the drop
        record = json.load(f)
    assert (record["code"], record["cause"]) == (ExitCode.STOPPED_BY_HOST, "stopped_by_host")

    killed = host.start("heartbeat")
    killed.wait_console(r"tick 1\n")
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait_exit() == -signal.SIGKILL  # what the agent's wait() reports
    assert read_exit_record(killed.paths) is None  # and no stale record misleads it


def test_a_guest_that_powers_off_by_itself_exits_cleanly_when_confined(host):
    vm = host.start("heartbeat", cmdline="ticks=2")
    assert vm.wait_exit() == ExitCode.POWERED_OFF, vm.log()
    assert re.findall(r"tick (\d+)", vm.console()) == ["1", "2"]
    assert read_exit_record(vm.paths) == (ExitCode.POWERED_OFF, "guest powered off")


def test_a_hostile_guest_cannot_crash_a_confined_vmm(host):
    def hostile() -> None:
        vm = host.start("chaos", cmdline="seed=11", vcpus=2)
        vm.wait_console(r"chaos: round 3\n", timeout=60)
        for _ in range(5):
            assert vm.qmp("query-status")["status"] == "running"
        assert vm.qmp("__org.computed_query-vm")["unclaimed-accesses"] > 0
        assert_confined(vm)
        vm.qmp("quit")
        assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST, vm.log()

    def rounds() -> None:
        done = host.start("chaos", cmdline="seed=5 rounds=3")
        assert done.wait_exit(timeout=90) == ExitCode.POWERED_OFF, done.log()
        assert "chaos: done" in done.console()

    again_if_the_guest_triple_faults(hostile, lambda: host.vms)
    again_if_the_guest_triple_faults(rounds, lambda: host.vms)


def test_the_jailer_releases_cgroup_jail_and_uid_at_delete(host):
    a = host.prepare("heartbeat")
    b = host.prepare("heartbeat")
    assert a.confinement.uid != b.confinement.uid
    assert all(os.path.isdir(d) for d in a.confinement.cgroups)
    host.jailer.release(a.spec.uuid, a.paths)
    assert not any(os.path.exists(d) for d in a.confinement.cgroups)
    assert not os.path.exists(a.paths.jail)
    assert a.spec.uuid not in host.jailer.ids.in_use()
    again = Jailer(host.state_dir, parse_id_range(DEFAULT_UID_RANGE), "./unused-parent")
    assert again.ids.in_use() == {b.spec.uuid: b.confinement.uid}  # found after a restart


# --- networked ------------------------------------------------------------------------------
@pytest.fixture
def netns() -> Iterator[str]:
    name = f"cdconf-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def plug_into(netns: str, tap: str) -> None:
    """Move the VMM's tap (host namespace, already attached) into the test's namespace,
    so the test's addresses never touch the host's network."""
    ip("link", "set", tap, "netns", netns)
    ip("-n", netns, "addr", "add", f"{HOST_IP}/24", "dev", tap)
    ip("-n", netns, "link", "set", tap, "up")


def ping_guest(netns: str) -> None:
    r = subprocess.run(
        ["ip", "netns", "exec", netns, "ping", "-c", "3", "-i", "0.2", "-W", "5", GUEST_IP],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "3 received" in r.stdout, r.stdout + r.stderr


NET = {"ip": f"{GUEST_IP}/24", "gateway": HOST_IP, "mac": "52:54:00:12:34:56"}


def test_a_confined_networked_vmm_serves_a_tap_it_opened_by_name(host, netns):
    vm = host.prepare("net", **NET)
    tap = tap_name(vm.spec.uuid)
    ip("tuntap", "add", tap, "mode", "tap")
    try:
        argv = vmm_command(vm.spec, vm.paths, confinement=vm.confinement)  # ifname=<tap>
        with open(vm.paths.log, "ab") as log:
            vm.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        wait_until(lambda: os.path.exists(vm.paths.pidfile) or vm.proc.poll() is not None)
        assert vm.proc.poll() is None, vm.log()
        plug_into(netns, tap)
    finally:
        subprocess.run(["ip", "link", "del", tap], capture_output=True)  # if still ours
    vm.wait_console(r"net: up ")
    ping_guest(netns)
    assert_confined(vm)
    assert vm.qmp("__org.computed_query-vm")["net"][0]["ifname"] == tap
    vm.qmp("system_powerdown")
    assert vm.wait_exit() == ExitCode.POWERED_OFF, vm.log()


def test_a_confined_networked_vmm_serves_the_tap_the_agent_handed_in(host, netns):
    vm = host.prepare("net", **NET)
    tap = tap_name(vm.spec.uuid)
    try:
        vm.proc = launch(vm.spec, vm.paths, vm.confinement)
        plug_into(netns, tap)
    finally:
        subprocess.run(["ip", "link", "del", tap], capture_output=True)
    with open(f"/proc/{vm.pid}/cmdline") as f:
        assert any(a.startswith("tap,id=net0,fd=") for a in f.read().split("\0"))
    vm.wait_console(r"net: up ")
    ping_guest(netns)
    assert_confined(vm)
    vm.qmp("system_powerdown")
    assert vm.wait_exit() == ExitCode.POWERED_OFF, vm.log()
