"""Starting the cluster's processes as systemd would, and finding every one of them again.

Every process started here carries COMPUTED_DEVCLUSTER=<state dir> in its
environment, and the agents pass their environment on to their VMMs, so
`down` finds all of them by that mark even after a crash that lost the
cluster's state file, and never touches anything else on the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence

import psutil

MARK = "COMPUTED_DEVCLUSTER"


class StartError(RuntimeError):
    """A process exited or never said READY=1; the message ends with its log's tail."""


def start(
    name: str,
    argv: Sequence[str],
    state_dir: str,
    log_path: str,
    notify: bool,
    netns: str | None = None,
    timeout: float = 30.0,
) -> int:
    """Start `argv` in its own session (in `netns` if given), logging to `log_path`;
    with `notify`, return only once it has sent READY=1 (Type=notify). Returns its pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env = {k: v for k, v in env.items() if not k.startswith("ETCD_")}
    env[MARK] = state_dir
    command = [*in_netns(netns), *argv] if netns else list(argv)
    sock = None
    if notify:
        sock_path = os.path.join(state_dir, "notify", f"{name}.sock")
        os.makedirs(os.path.dirname(sock_path), exist_ok=True)
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(sock_path)
        sock.settimeout(0.1)
        env["NOTIFY_SOCKET"] = sock_path
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        if sock is not None:
            _wait_ready(name, proc, sock, log_path, timeout)
        return proc.pid
    finally:
        if sock is not None:
            sock.close()
            os.unlink(env["NOTIFY_SOCKET"])


def _wait_ready(
    name: str, proc: subprocess.Popen, sock: socket.socket, log_path: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096).decode(errors="replace")
            if "READY=1" in message.split("\n"):
                return
        except TimeoutError:
            pass
        if proc.poll() is not None:
            raise StartError(f"{name} exited with status {proc.returncode}:\n{tail(log_path)}")
    kill([proc.pid])
    raise StartError(f"{name} did not report READY=1 within {timeout:.0f}s:\n{tail(log_path)}")


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def in_netns(netns: str) -> list[str]:
    """The prefix that runs a command in network namespace `netns` and nothing else.

    Not `ip netns exec`: that also gives the command a mount namespace of its own
    with a fresh /sys, where the cgroup hierarchies an agent confines its VMMs
    with are not mounted. Entering only the network namespace keeps the host's
    mounts, as an agent on a real host has them.
    """
    return ["nsenter", f"--net=/run/netns/{netns}", "--"]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def marked(state_dir: str) -> list[int]:
    """Pids of every live process of this cluster (agents, VMMs, etcd, ...): those carrying
    its mark in their environment, and VMMs whose command line names its state directory
    (a VMM forked by the warm parent has its title where its environment was)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or ())
            if state_dir + "/" in title or proc.environ().get(MARK) == state_dir:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def kill(pids: Sequence[int], grace: float = 0.0) -> None:
    """SIGTERM (if `grace`) then SIGKILL each, and wait until they are gone (reaped by
    their parent or by us)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    if grace:
        for p in procs:
            _signal(p, signal.SIGTERM)
        _, procs = psutil.wait_procs(procs, timeout=grace)
    for p in procs:
        _signal(p, signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


def _signal(p: psutil.Process, signo: int) -> None:
    try:
        p.send_signal(signo)
    except psutil.Error:
        pass
