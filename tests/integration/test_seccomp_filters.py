"""The compiled seccomp filters, loaded into real processes.

Calls outside a role's filter end the process with exit status 159 and a last
stderr line naming the call and the role; the calls each role's threads make
pass. The filters are compiled afresh from the policy into a temp directory,
so these tests judge the policy as it is, not a stale build.

The last tests run a real VMM with every thread confined. computed-vmm does not
install the filters itself yet, so DRIVER does from outside, at the points the
VMM's own wiring will use: a vCPU or NIC thread right after it names itself,
the main thread right after its pidfile (its last open).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from computed import seccomp_build
from computed.seccomp_build import constant, syscall_number
from computed.vmm import seccomp
from computed.vmm.errors import ExitCode
from tests.integration.test_vmm_net_guest import GUEST_IP, GUEST_MAC, HOST_IP, netns  # noqa: F401
from tests.vmm_harness import VmmProcess, again_if_the_guest_triple_faults

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def filter_dir(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("seccomp")
    seccomp_build.write_filters(seccomp_build.compile_all(seccomp_build.load_policy()), directory)
    return str(directory)


def run_confined(
    filter_dir: str, role: str, setup: str, calls: str
) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter runs `setup`, installs `role`'s filter, then runs `calls`
    and ends with os._exit(0), as the VMM ends (no interpreter finalisation)."""
    code = "\n".join(
        [
            "import os, sys",
            "from computed.vmm import seccomp",
            textwrap.dedent(setup),
            f"programs = seccomp.load_filters({filter_dir!r})",
            f"seccomp.install({role!r}, programs[{role!r}])",
            textwrap.dedent(calls),
            "os._exit(0)",
        ]
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def assert_blocked(r: subprocess.CompletedProcess[str], call: str, role: str) -> None:
    assert r.returncode == seccomp.BLOCKED_EXIT_STATUS, (r.returncode, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    nr = syscall_number(call)
    assert last == f"{REASON} {nr} ({call}) in a {role} thread"


REASON = "computed-vmm: error: seccomp: blocked system call"
LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)"
BLOCKED = {
    "execve": ("vcpu", "", "os.execv('/bin/true', ['true'])"),
    "openat": ("main", "", "open('/etc/shadow')"),
    "socket": ("vhost", "import socket", "socket.socket(socket.AF_INET, socket.SOCK_STREAM)"),
    "ptrace": ("main", f"{LIBC}\nptrace = libc.ptrace", "ptrace(0, 0, None, None)"),
    "mount": (
        "vcpu",
        f"{LIBC}\nmount = libc.mount",
        "mount(b'none', b'/nowhere', b'tmpfs', 0, None)",
    ),
    "unshare": ("main", f"{LIBC}\nunshare = libc.unshare", "unshare({CLONE_NEWUSER})"),
    "clone": ("main", "", "os.fork()"),  # a process, not a thread: no CLONE_THREAD
}


@pytest.mark.parametrize("call", BLOCKED)
def test_a_call_outside_the_filter_ends_the_process_and_names_the_call(filter_dir, call):
    role, setup, calls = BLOCKED[call]
    calls = calls.format(CLONE_NEWUSER=constant("CLONE_NEWUSER"))
    assert_blocked(run_confined(filter_dir, role, setup, calls), call, role)


@pytest.mark.parametrize("role", seccomp.ROLES)
def test_no_role_may_make_a_tap(filter_dir, role):
    """TUNSETIFF on a /dev/net/tun fd opened before the filter."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")
    setup = "import fcntl\nfd = os.open('/dev/net/tun', os.O_RDWR)"
    calls = f"fcntl.ioctl(fd, {constant('TUNSETIFF')}, bytes(40))"
    assert_blocked(run_confined(filter_dir, role, setup, calls), "ioctl", role)


def test_vcpu_threads_may_run_the_guest(filter_dir):
    """A real KVM_RUN (a one-page real-mode guest that halts), KVM_GET_REGS, the kick
    signal, a timed futex, a write to stderr."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    setup = """
        import mmap, signal, threading
        from computed.vmm._kvm import ffi, lib
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = lib.vmm_ioctl_val(kvm, lib.KVM_CREATE_VM, 0)
        assert lib.vmm_ioctl_val(vm, lib.KVM_SET_TSS_ADDR, 0xFFFBD000) == 0
        ram = mmap.mmap(-1, mmap.PAGESIZE)
        ram[0] = 0xF4  # hlt
        host = int(ffi.cast("uintptr_t", ffi.from_buffer(ram)))
        region = {"memory_size": mmap.PAGESIZE, "userspace_addr": host}
        mr = ffi.new("struct kvm_userspace_memory_region *", region)
        assert lib.vmm_ioctl(vm, lib.KVM_SET_USER_MEMORY_REGION, mr) == 0
        cpu = lib.vmm_ioctl_val(vm, lib.KVM_CREATE_VCPU, 0)
        area = mmap.mmap(cpu, lib.vmm_ioctl_val(kvm, lib.KVM_GET_VCPU_MMAP_SIZE, 0))
        run = ffi.from_buffer("struct kvm_run *", area)
        sregs = ffi.new("struct kvm_sregs *")
        assert lib.vmm_ioctl(cpu, lib.KVM_GET_SREGS, sregs) == 0
        sregs.cs.base = sregs.cs.selector = 0
        assert lib.vmm_ioctl(cpu, lib.KVM_SET_SREGS, sregs) == 0
        regs = ffi.new("struct kvm_regs *", {"rip": 0, "rflags": 2})
        assert lib.vmm_ioctl(cpu, lib.KVM_SET_REGS, regs) == 0
        lib.vmm_install_kick_handler(signal.SIGUSR1)
        lock = threading.Lock()
        lock.acquire()
        """
    calls = """
        assert lib.vmm_ioctl_val(cpu, lib.KVM_RUN, 0) == 0
        assert run.exit_reason == lib.KVM_EXIT_HLT, run.exit_reason
        assert lib.vmm_ioctl(cpu, lib.KVM_GET_REGS, regs) == 0 and regs.rip == 1
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        assert not lock.acquire(timeout=0.05)
        os.write(2, b"vcpu ok\\n")
        """
    r = run_confined(filter_dir, "vcpu", setup, calls)
    assert (r.returncode, r.stderr) == (0, "vcpu ok\n")


def test_net_threads_may_move_frames(filter_dir):
    """poll, eventfds, readv/writev (a pipe stands in for the tap)."""
    setup = """
        import select
        kick = os.eventfd(0, os.EFD_NONBLOCK)
        r, w = os.pipe()
        """
    calls = """
        os.eventfd_write(kick, 1)
        poller = select.poll()
        poller.register(kick, select.POLLIN)
        assert poller.poll(1000) == [(kick, select.POLLIN)]
        assert os.eventfd_read(kick) == 1
        assert os.writev(w, [b"hdr", b"frame"]) == 8
        buf = [bytearray(3), bytearray(5)]
        assert os.readv(r, buf) == 8 and buf == [b"hdr", b"frame"]
        os.write(2, b"vhost ok\\n")
        """
    r = run_confined(filter_dir, "vhost", setup, calls)
    assert (r.returncode, r.stderr) == (0, "vhost ok\n")


def test_main_may_start_threads_whose_clone3_falls_back_to_clone(filter_dir):
    """As in the VMM, a thread is started before main confines itself (glibc sets
    up its thread signal on the first one); later ones pass the CLONE_THREAD check."""
    setup = """
        import threading
        first = threading.Thread(target=lambda: None)
        first.start()
        first.join()
        """
    calls = """
        later = threading.Thread(target=lambda: os.write(2, b"thread ok\\n"))
        later.start()
        later.join()
        """
    r = run_confined(filter_dir, "main", setup, calls)
    assert (r.returncode, r.stderr) == (0, "thread ok\n")


# --- a real VMM, every thread confined ----------------------------------------------------

_JAIL_UID = 200_000 + os.getpid() % 10_000  # within the agent's default range


def confined_vmm(workdir, filter_dir: str, args: list[str], netns_name: str = "") -> VmmProcess:
    """A VMM with `-sandbox on`, its files in `workdir`, which is its jail (root-owned, as
    the agent makes it). `filter_dir` only ensures the filters are built."""
    prefix = ("ip", "netns", "exec", netns_name) if netns_name else ()
    os.chmod(workdir, 0o755)
    base = [
        "-name", f"instance-{uuid.uuid4().hex[:8]}", "-uuid", str(uuid.uuid4()), "-m", "64",
        "-pidfile", str(workdir / "vmm.pid"), "-control", f"unix:{workdir / 'control.sock'}",
        "-serial", f"file:{workdir / 'console.log'}",
        "-sandbox", "on", "-run-with", f"user={_JAIL_UID}:{_JAIL_UID},chroot={workdir}",
    ]  # fmt: skip
    return VmmProcess(workdir, [*base, *args], prefix=prefix)


def qmp_session(vm: VmmProcess, *commands: str) -> list[dict]:
    """Greeting, capabilities, then each command's reply (events skipped)."""
    replies = []
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(vm.control))
            f = s.makefile("rwb")
            assert "QMP" in json.loads(f.readline())
            for command in ("qmp_capabilities", *commands):
                f.write(json.dumps({"execute": command}).encode() + b"\n")
                f.flush()
                while "event" in (reply := json.loads(f.readline() or b"{}")):
                    pass
                replies.append(reply)
                time.sleep(0.2)
    except OSError as e:
        raise AssertionError(f"control session: {e}; VMM stderr: {vm.stderr()}") from None
    return replies[1:]


def assert_every_thread_filtered(vm: VmmProcess) -> set[str]:
    names = set()
    for tid, name in vm.threads().items():
        with open(f"/proc/{vm.pid}/task/{tid}/status") as f:
            assert "\nSeccomp:\t2\n" in f.read(), name  # SECCOMP_MODE_FILTER
        names.add(name)
    return names


def assert_not_blocked(vm: VmmProcess) -> None:
    assert "seccomp" not in vm.stderr(), vm.stderr()


@pytest.fixture
def vmm_dir(tmp_path):
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    return tmp_path


def test_a_confined_vmm_serves_a_whole_control_session(vmm_dir, filter_dir):
    vm = confined_vmm(vmm_dir, filter_dir, ["-kernel", "heartbeat", "-smp", "2"]).wait_ready()
    try:
        vm.wait_output(r"tick 1\n")
        assert_every_thread_filtered(vm)
        replies = qmp_session(
            vm,
            "query-status",
            "stop",
            "__org.computed_query-vm",
            "query-cpus-fast",
            "cont",
            "system_reset",
        )
        assert all("return" in r for r in replies), replies
        vm.wait_output(r"heartbeat: 100 Hz\n(.|\n)*heartbeat: 100 Hz\n(.|\n)*tick 1\n")
        qmp_session(vm, "system_powerdown")
        assert vm.wait_exit() == ExitCode.POWERED_OFF
        assert_not_blocked(vm)
    finally:
        vm.kill()


def test_a_confined_vmm_powers_down_on_sigterm_and_quits(vmm_dir, filter_dir):
    started = []
    try:
        (vmm_dir / "term").mkdir()
        vm = confined_vmm(vmm_dir / "term", filter_dir, ["-kernel", "heartbeat"])
        started.append(vm)
        vm.wait_ready().wait_output(r"tick 1\n")
        vm.proc.terminate()
        assert vm.wait_exit() == ExitCode.POWERED_OFF
        assert_not_blocked(vm)
        # The hostile guest pokes at everything, under its own interrupt storm, while the
        # host stops, resets, resumes, queries and quits it.
        commands = ("stop", "system_reset", "cont", "__org.computed_query-vm", "quit")

        def run() -> None:
            workdir = vmm_dir / f"quit{len(started)}"
            workdir.mkdir()
            vm = confined_vmm(workdir, filter_dir, ["-kernel", "chaos", "-append", "seed=9"])
            started.append(vm)
            vm.wait_ready().wait_output(r"chaos: round 2\n", timeout=60)
            qmp_session(vm, *commands)
            assert vm.wait_exit() == ExitCode.STOPPED_BY_HOST, vm.stderr()
            assert_not_blocked(vm)

        again_if_the_guest_triple_faults(run, lambda: started)
    finally:
        for vm in started:
            vm.kill()


@pytest.mark.parametrize("path", ["vhost=off", "vhost=on,vhostdev=/nonexistent/vhost-net"])
def test_a_confined_vmm_moves_packets(netns, filter_dir, path):  # noqa: F811
    workdir = netns.base / "confined"
    workdir.mkdir()
    args = [
        "-kernel", "net", "-append", f"ip={GUEST_IP}/24 gw={HOST_IP}",
        "-netdev", f"tap,id=n0,ifname=tap0,{path}",
        "-device", f"virtio-net,netdev=n0,mac={GUEST_MAC}",
    ]  # fmt: skip
    vm = confined_vmm(workdir, filter_dir, args, netns.name)
    try:
        vm.wait_output(r"net: up mac=52:54:00:12:34:56 ")
        assert {"net-rx", f"vhost-{vm.pid}"} & assert_every_thread_filtered(vm)
        r = netns.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1472", GUEST_IP)
        assert r.returncode == 0, r.stdout + r.stderr
        (nic,) = qmp_session(vm, "__org.computed_query-vm")[0]["return"]["net"]
        assert nic["rx_packets"] >= 3 and nic["tx_packets"] >= 3, nic
        vm.proc.terminate()
        assert vm.wait_exit() == ExitCode.POWERED_OFF
        assert_not_blocked(vm)
    finally:
        vm.kill()
