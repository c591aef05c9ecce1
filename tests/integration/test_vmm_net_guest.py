"""The bundled `net` guest on a real virtio-net NIC backed by a tap device.

Each test gets its own network namespace holding a tap (10.99.0.1/24 on the
host side); the VMM runs inside that namespace (`ip netns exec` execs it, so
the pid is the VMM's). The guest is 10.99.0.2/24. Needs root, /dev/kvm and
/dev/net/tun. The kernel vhost-net data path also needs /dev/vhost-net, which
these hosts lack: its tests skip there, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent.vmm_stats import VmmStats
from computed.procfs import find_kernel_thread
from computed.vmm.errors import ExitCode
from tests.vmm_harness import VmmProcess

pytestmark = pytest.mark.integration

HOST_IP = "10.99.0.1"
GUEST_IP = "10.99.0.2"
GUEST_MAC = "52:54:00:12:34:56"
# The -netdev options that select each data path.
DATA_PATHS = {
    "vcpu-exits": "vhost=off",
    "vhost-userspace": "vhost=on,vhostdev=/nonexistent/vhost-net",
    "vhost-kernel": "vhost=on",
}


def _need(condition: bool, why: str) -> None:
    if not condition:
        pytest.skip(why)


class NetnsVmm(VmmProcess):
    """A VmmProcess started inside a network namespace."""

    def __init__(self, workdir: Path, netns: str, args: list[str]) -> None:
        super().__init__(workdir, args, prefix=("ip", "netns", "exec", netns))


class Netns:
    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.base = base
        self.vms: list[NetnsVmm] = []

    def run(
        self, *cmd: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def boot(self, cmdline: str, path: str = "vcpu-exits") -> NetnsVmm:
        if path == "vhost-kernel":
            _need(os.path.exists("/dev/vhost-net"), "needs /dev/vhost-net (CONFIG_VHOST_NET)")
        return self.boot_with(cmdline, DATA_PATHS[path])

    def boot_with(self, cmdline: str, netdev_options: str) -> NetnsVmm:
        workdir = self.base / f"vm{len(self.vms) + 1}"
        workdir.mkdir()
        args = [
            "-name", f"instance-{len(self.vms) + 1:08x}",
            "-uuid", str(uuid.uuid4()),
            "-m", "64",
            "-kernel", "net",
            "-append", cmdline,
            "-pidfile", str(workdir / "vmm.pid"),
            "-control", f"unix:{workdir / 'control.sock'}",
            "-serial", f"file:{workdir / 'console.log'}",
            "-netdev", f"tap,id=n0,ifname=tap0,{netdev_options}",
            "-device", f"virtio-net,netdev=n0,mac={GUEST_MAC}",
        ]  # fmt: skip
        vm = NetnsVmm(workdir, self.name, args)
        self.vms.append(vm)
        return vm


@pytest.fixture
def netns(tmp_path):
    _need(os.geteuid() == 0, "needs root (network namespaces, tap devices)")
    _need(shutil.which("ip") is not None, "needs iproute2's ip")
    _need(os.path.exists("/dev/kvm"), "needs /dev/kvm")
    _need(os.path.exists("/dev/net/tun"), "needs /dev/net/tun")
    name = f"cdnet-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name, tmp_path)
    try:
        for cmd in (
            ["tuntap", "add", "tap0", "mode", "tap"],
            ["addr", "add", f"{HOST_IP}/24", "dev", "tap0"],
            ["link", "set", "tap0", "up"],
            ["link", "set", "lo", "up"],
        ):
            subprocess.run(["ip", "-n", name, *cmd], check=True, capture_output=True)
        yield ns
    finally:
        for vm in ns.vms:
            vm.kill()
        r = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
        assert r.returncode == 0, f"ip netns del {name}: {r.stderr}"


def _up(vm: NetnsVmm) -> None:
    vm.wait_output(r"net: up mac=52:54:00:12:34:56 ip=10\.99\.0\.2/24 ")


@pytest.mark.parametrize("path", DATA_PATHS)
def test_namespace_pings_the_guest(netns, path):
    vm = netns.boot(f"ip={GUEST_IP}/24 gw={HOST_IP}", path)
    _up(vm)
    r = netns.run("ping", "-c", "3", "-i", "0.2", "-W", "2", GUEST_IP)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 received" in r.stdout
    # Full-size echo (1500-byte IP packets) comes back intact too.
    r = netns.run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", "1472", GUEST_IP)
    assert r.returncode == 0, r.stdout + r.stderr
    neigh = netns.run("ip", "neigh", "show", GUEST_IP).stdout
    assert GUEST_MAC in neigh, "the guest answered ARP with its MAC"
    assert vm.proc.poll() is None
    # Which path served the queues: with vhost, the guest's kicks reach the vhost-<pid>
    # worker through ioeventfds, so not one of them was a vCPU exit into the VMM.
    (nic,) = vm.qmp("__org.computed_query-vm")["net"]
    assert nic["data_path"] == path, nic
    worker = f"vhost-{vm.pid}"
    if path == "vcpu-exits":
        assert nic["notify_exits"] >= 5, nic
        assert worker not in vm.threads().values()
    else:
        assert nic["notify_exits"] == 0, nic
        assert worker in vm.threads().values() or find_kernel_thread(worker)
    if path == "vhost-kernel":
        assert nic["vhost"] == "kernel" and nic["rx_packets"] is None, nic
    else:
        assert nic["rx_packets"] >= 5 and nic["tx_packets"] >= 5, nic
    if path == "vhost-userspace":
        assert nic["vhost_note"] == "/nonexistent/vhost-net: No such file or directory", nic
    # The agent's stats find the same worker and tell whose it is.
    stats = VmmStats(vm.pid).sample()
    if path == "vcpu-exits":
        assert "helper.vhost.kind" not in stats
    else:
        assert stats["helper.vhost.kind"] == nic["vhost"], stats


def test_a_vhost_device_that_refuses_leaves_the_userspace_worker_serving(netns):
    """/dev/null opens but is no vhost-net: VHOST_SET_OWNER fails, the VMM logs why,
    and its own vhost-<pid> worker serves the queues."""
    vm = netns.boot_with(f"ip={GUEST_IP}/24 gw={HOST_IP}", "vhost=on,vhostdev=/dev/null")
    _up(vm)
    r = netns.run("ping", "-c", "2", "-i", "0.2", "-W", "2", GUEST_IP)
    assert r.returncode == 0, r.stdout + r.stderr
    (nic,) = vm.qmp("__org.computed_query-vm")["net"]
    assert (nic["vhost"], nic["notify_exits"]) == ("userspace", 0), nic
    assert nic["vhost_note"].startswith("/dev/null: VHOST_SET_OWNER failed: "), nic
    logged = vm.stderr_path.read_text()
    assert "tap0: kernel vhost-net refused (/dev/null: VHOST_SET_OWNER" in logged


def test_guest_pings_the_namespace(netns):
    vm = netns.boot(f"ip={GUEST_IP}/24 gw={HOST_IP} ping={HOST_IP},3")
    vm.wait_output(r"net: ping 10\.99\.0\.1: 3 sent, \d+ received\n", timeout=20)
    out = vm.output()
    replies = re.findall(r"net: reply from 10\.99\.0\.1 seq=(\d+) time=\d+\.\d{3} ms\n", out)
    assert replies == ["1", "2", "3"], out
    assert "net: ping 10.99.0.1: 3 sent, 3 received\n" in out
    # It keeps answering traffic afterwards.
    r = netns.run("ping", "-c", "1", "-W", "2", GUEST_IP)
    assert r.returncode == 0, r.stdout + r.stderr


_UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
for msg in (b"hello computed", b"", bytes(range(256)) * 5):
    s.sendto(msg, (sys.argv[1], int(sys.argv[2])))
    data, addr = s.recvfrom(4096)
    assert data == msg and addr == (sys.argv[1], int(sys.argv[2])), (data[:20], addr)
s.sendto(b"not the echo port", (sys.argv[1], int(sys.argv[2]) + 1))
try:
    s.recvfrom(4096)
    raise SystemExit("a datagram to another port was answered")
except socket.timeout:
    pass
print("udp ok")
"""


@pytest.mark.parametrize("port", [None, 5007])
def test_guest_echoes_udp(netns, port):
    cmdline = f"ip={GUEST_IP}/24" + (f" udp={port}" if port else "")
    vm = netns.boot(cmdline)
    _up(vm)
    r = netns.run(sys.executable, "-c", _UDP_CLIENT, GUEST_IP, str(port or 7))
    assert r.returncode == 0 and "udp ok" in r.stdout, r.stdout + r.stderr


def test_guest_that_cannot_reach_its_ping_target_reports_it(netns):
    vm = netns.boot(f"ip={GUEST_IP}/24 ping=10.99.0.77,2")
    vm.wait_output(r"net: ping 10\.99\.0\.77: 0 sent, 0 received\n", timeout=30)
    assert "no ARP reply from 10.99.0.77" in vm.output()
    r = netns.run("ping", "-c", "1", "-W", "2", GUEST_IP)
    assert r.returncode == 0, r.stdout + r.stderr


def test_power_button_shuts_the_guest_down(netns):
    vm = netns.boot(f"ip={GUEST_IP}/24")
    _up(vm)
    vm.wait_ready()
    vm.proc.terminate()  # SIGTERM: the VMM presses the power button
    assert vm.wait_exit(timeout=15) == ExitCode.POWERED_OFF
    assert "net: power button, shutting down\n" in vm.output()


def test_missing_ip_is_an_error_exit(vmm):
    vm = vmm("net", "-append", "gw=10.99.0.1")
    assert vm.wait_exit() == ExitCode.GUEST_FAILED
    assert "net: missing ip=" in vm.output()


def test_no_nic_is_an_error_exit(vmm):
    vm = vmm("net", "-append", f"ip={GUEST_IP}/24")
    assert vm.wait_exit() == ExitCode.GUEST_FAILED
    assert "net: no network interface\n" in vm.output()


@pytest.mark.parametrize("kind", ["loop", "oob", "huge", "head", "indirect"])
@pytest.mark.parametrize("path", DATA_PATHS)
def test_a_hostile_ring_breaks_the_device_not_the_vmm(netns, kind, path):
    """The guest offers a malformed transmit chain: the device says DEVICE_NEEDS_RESET and
    logs why, the VMM lives on, and after the driver resets it the NIC works again."""
    vm = netns.boot(f"ip={GUEST_IP}/24 gw={HOST_IP} hostile={kind}", path)
    vm.wait_output(rf"net: hostile ring {kind}: device status [0-9a-f]+ \(needs reset\)\n")
    _up(vm)
    r = netns.run("ping", "-c", "2", "-i", "0.2", "-W", "2", GUEST_IP)
    assert r.returncode == 0, r.stdout + r.stderr
    assert vm.proc.poll() is None
    assert "virtio device broken" in vm.stderr_path.read_text()


def test_the_kernel_path_takes_the_tap_off_batched_transmit(netns):
    """At INT_MAX (tun's default) the kernel's vhost-net batches transmits and retries a
    too-short frame for ever; the kernel path sets the send buffer below that."""
    code = (
        "from computed.taps import open_tap\n"
        "from computed.vmm._kvm import ffi, lib\n"
        "from computed.vmm.devices.vhost_kernel import unbatch_tap\n"
        "fd = open_tap('tap0')\n"
        "value = ffi.new('int *')\n"
        "for step in ('before', 'after'):\n"
        "    assert lib.vmm_ioctl(fd, lib.TUNGETSNDBUF, value) == 0\n"
        "    print(value[0])\n"
        "    unbatch_tap(fd)\n"
    )
    r = netns.run(sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(2**31 - 1), str(4 << 20)]


@pytest.mark.parametrize("path", DATA_PATHS)
def test_the_nic_works_again_after_a_vm_reset(netns, path):
    """system_reset resets the NIC before RAM is cleared; the rebooted driver sets it up anew."""
    vm = netns.boot(f"ip={GUEST_IP}/24 gw={HOST_IP}", path)
    _up(vm)
    assert netns.run("ping", "-c", "2", "-i", "0.2", "-W", "2", GUEST_IP).returncode == 0
    vm.qmp("system_reset")
    vm.wait_output(r"(net: up mac=[^\n]*\n)(.|\n)*\1")  # the guest came up a second time
    r = netns.run("ping", "-c", "2", "-i", "0.2", "-W", "2", GUEST_IP)
    assert r.returncode == 0, r.stdout + r.stderr
    (nic,) = vm.qmp("__org.computed_query-vm")["net"]
    assert nic["broken"] == "" and vm.qmp("__org.computed_query-vm")["resets"] == 1, nic
