"""Starting, recognising and watching computed-vmm processes.

A VMM runs in its own session so that the agent's death or restart never
reaches it (systemd KillMode=process does the rest). The agent never forks
itself (gRPC and fork do not mix): `subprocess` execs the VMM directly.
Exits are noticed through pidfds, which work for adopted VMMs (not our
children) as well as for the ones we started.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from agent.taps import tap_name
from computed.store.records import InstanceSpec
from computed.vmm.control_client import ControlError, execute

VMM_BINARY = (
    os.environ.get("COMPUTED_VMM")
    or shutil.which("computed-vmm")
    or os.path.join(os.path.dirname(sys.executable), "computed-vmm")
)


@dataclasses.dataclass(frozen=True)
class InstancePaths:
    """Files of one instance under <state-dir>/instances/<uuid>/."""

    root: str

    @classmethod
    def of(cls, state_dir: str, uuid: str) -> InstancePaths:
        return cls(os.path.join(state_dir, "instances", uuid))

    spec = property(lambda self: os.path.join(self.root, "spec.json"))
    state = property(lambda self: os.path.join(self.root, "state.json"))
    console = property(lambda self: os.path.join(self.root, "console.log"))
    control = property(lambda self: os.path.join(self.root, "control.sock"))
    pidfile = property(lambda self: os.path.join(self.root, "vmm.pid"))
    exit_record = property(lambda self: os.path.join(self.root, "exit.json"))
    log = property(lambda self: os.path.join(self.root, "vmm.log"))


def vmm_command(spec: InstanceSpec, paths: InstancePaths, binary: str | None = None) -> list[str]:
    """The qemu-like command line, so `ps` on a host reads like Nova's. A networked
    instance gets a virtio-net NIC on its tap (vhost data path) and `ip=… gw=…`
    appended to its command line, as the kernel's `ip=` boot parameter does."""
    cmdline = spec.cmdline
    network: list[str] = []
    if spec.ip:
        cmdline = f"{cmdline} ip={spec.ip} gw={spec.gateway}".strip()
        network = [
            "-netdev", f"tap,id=net0,ifname={tap_name(spec.uuid)},vhost=on",
            "-device", f"virtio-net,netdev=net0,mac={spec.mac}",
        ]  # fmt: skip
    return [
        binary or VMM_BINARY,
        "-name", spec.name,
        "-uuid", spec.uuid,
        "-m", str(spec.memory_mb),
        "-smp", str(spec.vcpus),
        "-kernel", spec.image,
        "-append", cmdline,
        *network,
        "-serial", f"file:{paths.console}",
        "-control", f"unix:{paths.control}",
        "-pidfile", paths.pidfile,
        "-exit-record", paths.exit_record,
    ]  # fmt: skip


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


def spawn(spec: InstanceSpec, paths: InstancePaths, timeout: float = 10.0) -> subprocess.Popen:
    """Start a VMM and return once its control socket says `running`.

    On failure the process is gone (killed and reaped) and VmmStartError
    carries the VMM's own last stderr line.
    """
    clear_runtime_files(paths)
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen(
            vmm_command(spec, paths),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env=vmm_environment(),
        )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise VmmStartError(last_log_line(paths) or f"VMM exited with status {proc.returncode}")
        if os.path.exists(paths.pidfile):
            try:
                if execute(paths.control, "query-status", timeout=2.0)["status"] == "running":
                    return proc
            except (ControlError, OSError, KeyError, TypeError):
                pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise VmmStartError(f"VMM not ready within {timeout:g}s")
        time.sleep(0.005)


def last_log_line(paths: InstancePaths) -> str:
    try:
        with open(paths.log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    line = lines[-1] if lines else ""
    return line.removeprefix("computed-vmm: error: ")


def read_pid(paths: InstancePaths) -> int | None:
    try:
        with open(paths.pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def is_our_vmm(pid: int, uuid: str) -> bool:
    """Is `pid` alive and a VMM for `uuid`? (Its cmdline carries the uuid.)"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
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


class ExitWatcher:
    """One thread, one selector over pidfds: calls back once per VMM that ends.

    Children are reaped here (no zombies) and their exit status is passed on;
    for adopted processes the status is unknown (None) and the caller reads
    the VMM's exit record instead.
    """

    def __init__(self, on_exit: Callable[[str, int, int | None], None]) -> None:
        self._on_exit = on_exit
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="vmm-exit-watcher", daemon=True)
        self._thread.start()

    def watch(self, key: str, pid: int, child: subprocess.Popen | None = None) -> bool:
        """Watch `pid`; False if it is already gone."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            if child is not None:
                child.wait()
                self._on_exit(key, pid, child.returncode)
            return False
        with self._lock:
            self._sel.register(fd, selectors.EVENT_READ, (key, pid, child))
        os.write(self._wake_w, b"!")
        return True

    def _run(self) -> None:
        while not self._stopped:
            for sel_key, _ in self._sel.select():
                if sel_key.data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                key, pid, child = sel_key.data
                with self._lock:
                    self._sel.unregister(sel_key.fd)
                os.close(sel_key.fd)
                code = child.wait() if child is not None else None
                try:
                    self._on_exit(key, pid, code)
                except Exception as e:  # a callback bug must not stop all watching
                    print(f"computed-agent: exit handler for {key} failed: {e!r}", file=sys.stderr)

    def stop(self) -> None:
        self._stopped = True
        os.write(self._wake_w, b"!")
        self._thread.join(timeout=2)
