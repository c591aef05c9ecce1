"""Starting, recognising and watching computed-vmm processes.

A VMM runs in its own session so that the agent's death or restart never
reaches it (systemd KillMode=process does the rest). The agent never forks
itself (gRPC and fork do not mix): `subprocess` execs the VMM directly.
Exits are noticed through pidfds, which work for adopted VMMs (not our
children) as well as for the ones we started.

A confined VMM (the default; `Confinement`) is started with `-sandbox on
-run-with user=U:G,chroot=<jail> -cgroup …`, and a networked one gets its tap
already open (`fd=N`) rather than by name. Unconfined (`--no-confine`, for
development) the command line is what it always was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from agent.selector_thread import SelectorThread
from agent.warm_parent import (
    ForkedVmm,
    VmmChild,
    WarmParent,
    WarmParentLost,
    WarmParentUnavailable,
)
from computed.store.records import InstanceSpec
from computed.taps import open_tap, tap_name
from computed.vmm.control import bind_listening
from computed.vmm.control_client import ControlClient, ControlError

VMM_BINARY = (
    os.environ.get("COMPUTED_VMM")
    or shutil.which("computed-vmm")
    or os.path.join(os.path.dirname(sys.executable), "computed-vmm")
)


@dataclasses.dataclass(frozen=True)
class InstancePaths:
    """Files of one instance under <state-dir>/instances/<uuid>/.

    The agent's own files sit at the top; the VMM's runtime files in `jail/`,
    which becomes the VMM's root when it confines itself (agent/jail.py)."""

    root: str

    @classmethod
    def of(cls, state_dir: str, uuid: str) -> InstancePaths:
        return cls(os.path.join(state_dir, "instances", uuid))

    spec = property(lambda self: os.path.join(self.root, "spec.json"))
    state = property(lambda self: os.path.join(self.root, "state.json"))
    jail = property(lambda self: os.path.join(self.root, "jail"))
    console = property(lambda self: os.path.join(self.jail, "console.log"))
    control = property(lambda self: os.path.join(self.jail, "control.sock"))
    pidfile = property(lambda self: os.path.join(self.jail, "vmm.pid"))
    exit_record = property(lambda self: os.path.join(self.jail, "exit.json"))
    log = property(lambda self: os.path.join(self.jail, "vmm.log"))


@dataclasses.dataclass(frozen=True)
class Confinement:
    """How a VMM confines itself: its own ids and the cgroup directories it joins
    (agent/jail.py prepares them; the jail is the instance's `paths.jail`)."""

    uid: int
    gid: int
    cgroups: tuple[str, ...]


def vmm_command(
    spec: InstanceSpec,
    paths: InstancePaths,
    binary: str | None = None,
    confinement: Confinement | None = None,
    tap_fd: int | None = None,
    vhost_fd: int | None = None,
    control_fd: int | None = None,
) -> list[str]:
    """The VMM's command line in qemu's own syntax, as libvirt writes qemu's for Nova, so
    `ps` on a host reads like a Nova host's. A networked instance gets a virtio-net NIC
    on its tap (vhost data path; the tap handed in as `tap_fd` if given, else by name)
    and `ip=… gw=…` appended to its command line, as the kernel's `ip=` boot parameter
    does. `-uuid` stays an argument of its own: re-adoption looks for it. The monitor
    socket is handed in listening as `control_fd` if given (as libvirt hands qemu its
    own), else bound by the VMM at paths.control."""
    cmdline = spec.cmdline
    network: list[str] = []
    if spec.ip:
        cmdline = f"{cmdline} ip={spec.ip} gw={spec.gateway}".strip()
        tap = f"fd={tap_fd}" if tap_fd is not None else f"ifname={tap_name(spec.uuid)}"
        if vhost_fd is not None:
            tap += f",vhostfd={vhost_fd}"
        network = [
            "-netdev", f"tap,id=net0,{tap},vhost=on",
            "-device", f"virtio-net-device,netdev=net0,mac={spec.mac}",
        ]  # fmt: skip
    confine: list[str] = []
    if confinement is not None:
        confine = [
            "-sandbox", "on",
            "-run-with", f"user={confinement.uid}:{confinement.gid},chroot={paths.jail}",
        ]  # fmt: skip
        for directory in confinement.cgroups:
            confine += ["-cgroup", directory]
    where = f"fd={control_fd}" if control_fd is not None else f"path={_qemu_value(paths.control)}"
    monitor = f"socket,id=charmonitor,{where},server=on,wait=off"
    console = f"file,id=charserial0,path={_qemu_value(paths.console)},append=on"
    return [
        binary or VMM_BINARY,
        "-name", spec.name,
        "-uuid", spec.uuid,
        "-m", str(spec.memory_mb),
        "-smp", f"{spec.vcpus},sockets={spec.vcpus},cores=1,threads=1",  # libvirt's default
        "-cpu", "host",
        "-machine", "microvm,accel=kvm",
        "-nodefaults", "-no-user-config",
        "-kernel", spec.image,
        "-append", cmdline,
        "-chardev", monitor, "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-chardev", console, "-device", "isa-serial,chardev=charserial0,id=serial0",
        *network,
        "-pidfile", paths.pidfile,
        "-exit-record", paths.exit_record,
        *confine,
    ]  # fmt: skip


def _qemu_value(text: str) -> str:
    """A value inside qemu's `key=value,...`: a comma is written twice."""
    return text.replace(",", ",,")


class VmmStartError(Exception):
    """The VMM did not come up; the message is its own one-line reason."""


def vmm_environment() -> dict[str, str]:
    """The agent's environment minus systemd's notify/watchdog variables: a VMM is
    not the agent and must never speak for the agent's unit."""
    return {
        k: v
        for k, v in os.environ.items()
        if k != "NOTIFY_SOCKET" and not k.startswith("WATCHDOG_")
    }


def clear_runtime_files(paths: InstancePaths) -> None:
    for path in (paths.pidfile, paths.exit_record, paths.control):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# Where a VMM forked by the warm parent finds its tap and vhost-net (0-2 are its stdio),
# and its monitor socket.
_CHILD_FDS = (3, 4)
_CHILD_CONTROL_FD = 5
VHOST_NET_DEVICE = "/dev/vhost-net"


def spawn_ready(
    spec: InstanceSpec,
    paths: InstancePaths,
    timeout: float = 10.0,
    confinement: Confinement | None = None,
    warm: WarmParent | None = None,
) -> tuple[VmmChild, ControlClient]:
    """Start a VMM and return it once its control socket says `running`, with that
    connection still open: the agent goes on listening to the VMM's events on it, so
    one QMP handshake serves both, and no event falls between readiness and listening.
    The agent makes the monitor socket and hands it in listening, so it connects at once
    and the VMM's greeting, sent when its main loop (which runs the guest) starts, is
    the readiness itself: nothing is polled while a VMM starts.

    Forked by the warm parent when there is one; exec'd as a new process when
    there is none or it cannot serve (the log says why). Confined, a networked
    VMM's tap is opened here and handed over (our copy is closed once the VMM
    has its own). On failure the process is gone (killed and reaped) and
    VmmStartError carries the VMM's own last stderr line.
    """
    os.makedirs(paths.jail, mode=0o755, exist_ok=True)  # confined: prepared by the Jailer
    clear_runtime_files(paths)
    handed = _open_handed_fds(spec) if confinement is not None else HandedFds()
    try:
        handed.control = bind_listening(paths.control).detach()  # the VMM's monitor socket
        with open(paths.log, "ab") as log:
            child = _start(spec, paths, confinement, warm, log.fileno(), handed)
    finally:
        handed.close()  # the VMM has its own copies: its exit closes the socket
    deadline = time.monotonic() + timeout
    while True:
        # Blocks until the VMM greets: its main loop runs, so does the guest. A VMM that
        # ends before closes the socket, and the connection fails at once.
        control = _running_control(paths, greeting_timeout=max(0.0, deadline - time.monotonic()))
        if control is not None:
            return child, control
        if child.poll() is not None or _exited_within(child, 1.0):
            raise VmmStartError(
                last_log_line(paths) or f"VMM exited with status {child.returncode}"
            )
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            raise VmmStartError(f"VMM not ready within {timeout:g}s")


def _exited_within(child: VmmChild, seconds: float) -> bool:
    """Whether the child ends within `seconds` (a VMM whose socket closed is ending)."""
    deadline = time.monotonic() + seconds
    while child.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _running_control(paths: InstancePaths, greeting_timeout: float) -> ControlClient | None:
    """A QMP connection to a VMM whose guest runs; None if it is not (yet) so."""
    try:
        control = ControlClient(paths.control, timeout=2.0, greeting_timeout=greeting_timeout)
    except (ControlError, OSError):
        return None
    try:
        if control.execute("query-status")["status"] == "running":
            return control
    except (ControlError, OSError, KeyError, TypeError):
        pass
    control.close()
    return None


@dataclasses.dataclass
class HandedFds:
    """What a VMM gets open rather than opens itself, as libvirt hands qemu its monitor
    socket, tap and vhost-net (the last two to confined VMMs): the agent's copies,
    closed once the VMM has its own."""

    tap: int | None = None
    vhost: int | None = None
    control: int | None = None  # the monitor socket, listening

    def close(self) -> None:
        for fd in (self.tap, self.vhost, self.control):
            if fd is not None:
                os.close(fd)


def _open_handed_fds(spec: InstanceSpec) -> HandedFds:
    if not spec.ip:
        return HandedFds()
    handed = HandedFds(tap=open_tap(tap_name(spec.uuid)))
    try:  # the kernel's vhost-net where the host has it; the VMM falls back without
        handed.vhost = os.open(VHOST_NET_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        pass
    return handed


def _start(
    spec: InstanceSpec,
    paths: InstancePaths,
    confinement: Confinement | None,
    warm: WarmParent | None,
    log: int,
    handed: HandedFds,
) -> VmmChild:
    if warm is not None:
        tap_no = _CHILD_FDS[0] if handed.tap is not None else None
        vhost_no = _CHILD_FDS[1] if handed.vhost is not None else None
        control_no = _CHILD_CONTROL_FD if handed.control is not None else None
        argv = vmm_command(
            spec, paths, confinement=confinement, tap_fd=tap_no, vhost_fd=vhost_no,
            control_fd=control_no,
        )  # fmt: skip
        fds = {1: log, 2: log}
        fds |= {
            n: fd
            for n, fd in (
                (tap_no, handed.tap),
                (vhost_no, handed.vhost),
                (control_no, handed.control),
            )
            if n is not None
        }
        try:
            return ForkedVmm(warm.spawn(argv, fds))
        except WarmParentUnavailable as e:
            log_line = f"computed-agent: {e}: starting the VMM by exec instead"
            logging.getLogger("computed.agent").warning("%s", log_line)
        except WarmParentLost as e:  # never a second VMM for one instance: end any first
            _kill_unknown_vmm(spec, paths)
            raise VmmStartError(str(e)) from None
    passed = tuple(fd for fd in (handed.tap, handed.vhost, handed.control) if fd is not None)
    return subprocess.Popen(
        vmm_command(
            spec,
            paths,
            confinement=confinement,
            tap_fd=handed.tap,
            vhost_fd=handed.vhost,
            control_fd=handed.control,
        ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        close_fds=True,
        pass_fds=passed,
        env=vmm_environment(),
    )


_ERROR_PREFIX = "computed-vmm: error: "


def _kill_unknown_vmm(spec: InstanceSpec, paths: InstancePaths, wait: float = 5.0) -> None:
    """A VMM the warm parent may have started without telling us: once it has written its
    pidfile (or `wait` has passed), kill it, so that nothing of this instance runs
    untracked."""
    deadline = time.monotonic() + wait
    while (pid := read_pid(paths)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid is not None and is_our_vmm(pid, spec.uuid):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # ours as its subreaper: no zombie
        except (ProcessLookupError, ChildProcessError):
            pass


def last_log_line(paths: InstancePaths) -> str:
    try:
        with open(paths.log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    line = lines[-1] if lines else ""
    return line.removeprefix(_ERROR_PREFIX)


def vmm_error(paths: InstancePaths) -> str:
    """Why a VMM that left no exit record ended, if its last words say so: a call its
    seccomp filter blocked ("seccomp: blocked system call 59 (execve) in a vcpu
    thread"), or any other error it wrote on its way out; "" otherwise."""
    line = last_log_line(paths)
    return "" if line.startswith("computed-vmm") else line


def read_pid(paths: InstancePaths) -> int | None:
    try:
        with open(paths.pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def is_our_vmm(pid: int, uuid: str) -> bool:
    """Is `pid` alive and a VMM for `uuid`? (Its cmdline carries the uuid: as separate
    arguments when exec'd, as one process title when forked by the warm parent.)"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().replace(b"\0", b" ").split()
    except OSError:
        return False
    return b"-uuid" in argv and uuid.encode() in argv


def read_exit_record(paths: InstancePaths) -> tuple[int, str] | None:
    try:
        with open(paths.exit_record) as f:
            record = json.load(f)
        return int(record["code"]), str(record.get("reason", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ExitWatcher(SelectorThread):
    """Pidfds of every VMM in one selector: calls back once per VMM that ends.

    Children are reaped here (no zombies) and their exit status is passed on;
    for adopted processes the status is unknown (None) and the caller reads
    the VMM's exit record instead.
    """

    def __init__(self, on_exit: Callable[[str, int, int | None], None]) -> None:
        self._on_exit = on_exit
        super().__init__("vmm-exit-watcher")

    def watch(self, key: str, pid: int, child: VmmChild | None = None) -> bool:
        """Watch `pid`; False if it is already gone."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            if child is not None:
                child.wait()
                self._on_exit(key, pid, child.returncode)
            return False
        self.add(fd, (key, pid, child))
        return True

    def ready(self, fileobj: Any, data: Any) -> None:
        key, pid, child = data
        self.remove(fileobj)
        os.close(fileobj)
        code = child.wait() if child is not None else None
        try:
            self._on_exit(key, pid, code)
        except Exception as e:  # a callback bug must not stop all watching
            print(f"computed-agent: exit handler for {key} failed: {e!r}", file=sys.stderr)
