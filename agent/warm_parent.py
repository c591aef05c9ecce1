"""The agent's side of the warm VMM parent (computed/vmm/zygote.py): start it, keep it
running the installed code, and ask it for VMMs.

The agent never forks (gRPC and fork do not mix); the warm parent is a plain
exec'd process that forks for it. When its code is older than what is
installed, the next spawn starts a new one first and retires the old one, so
new VMMs run new code while running VMMs, which depend on nothing of their
parent, keep theirs. When it cannot be used, `spawn` raises
WarmParentUnavailable and the caller execs computed-vmm itself.
"""

from __future__ import annotations

import array
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from computed.vmm.code_version import recent_code_version

log = logging.getLogger("computed.agent.warm_parent")
_START_TIMEOUT = 20.0
_REQUEST_TIMEOUT = 10.0
# Room for each child's process title: setproctitle rewrites the argument and
# environment area the warm parent was exec'd with, and a VMM's qemu-like
# command line must fit there whole for `ps` and re-adoption by uuid.
_TITLE_ROOM = 4096
# Standby VMMs a warm parent keeps made: a burst of up to this many spawns forks nothing.
# Nova's max_concurrent_builds (10) is the burst one compute host takes at once.
DEFAULT_STANDBYS = 10


class ForkedVmm:
    """A VMM the warm parent forked, as the agent (its subreaper, hence its parent)
    waits for it: the few calls of subprocess.Popen the supervisor uses. The agent
    uses the warm parent only once it is a subreaper (computed/subreaper.py).

    Its status can be lost (reaped by someone else: ChildProcessError): `wait`
    then answers None, as for an adopted VMM, and the caller reads the exit
    record; `poll` answers LOST_STATUS, so a start that waits on it still ends."""

    LOST_STATUS = 1  # ExitCode.INTERNAL: we cannot say better

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lost = False

    def poll(self) -> int | None:
        self._reap(os.WNOHANG)
        return self.LOST_STATUS if self._lost else self.returncode

    def wait(self) -> int | None:
        self._reap(0)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None and not self._lost:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _reap(self, options: int) -> None:
        if self.returncode is not None or self._lost:
            return
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:
            self._lost = True
            return
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)


# What the agent waits on: a VMM it exec'd, or one the warm parent forked for it.
VmmChild = subprocess.Popen | ForkedVmm


class WarmParentUnavailable(Exception):
    """The warm parent cannot start a VMM now, and started none; the message says why."""


class WarmParentLost(Exception):
    """The warm parent took a request and gave no answer: a VMM may have started."""


class WarmParent:
    def __init__(
        self,
        state_dir: str,
        environment: Mapping[str, str],
        installed_version: Callable[[], str] = recent_code_version,
        standbys: int = DEFAULT_STANDBYS,
    ) -> None:
        """`standbys`: how many standby VMMs it keeps made (computed/vmm/standby.py)."""
        self.installed_version = installed_version
        self.standbys = standbys
        self.socket_path = os.path.join(state_dir, "vmm-zygote.sock")
        self.log_path = os.path.join(state_dir, "vmm-zygote.log")
        self.environment = dict(environment)
        self.version: str | None = None
        # Standbys the warm parent let go (retired, or dead unused): re-parented to us, as
        # its VMMs are, so they are our children to reap, here rather than as strays.
        self._ended: set[int] = set()
        self._proc: subprocess.Popen | None = None
        self._lock = threading.RLock()  # guards the above; stop (also from spawn) takes it
        # Requests on their way: a warm parent is replaced only once none is left.
        self._in_flight = 0
        self._settled = threading.Condition(self._lock)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def spawn(self, argv: list[str], fds: Mapping[int, int]) -> int:
        """Start a VMM with `argv`, the fds installed at the given numbers
        ({number in the VMM: fd here}); its pid.

        WarmParentUnavailable means no VMM was started (the caller may exec one);
        WarmParentLost means one may have been, and nothing of it is known.
        Requests from many threads go at once (the warm parent forks the next while
        a VMM sets up and answers); none is ever cut off by a replacement, which
        waits until none is on its way."""
        targets, sources = list(fds), list(fds.values())
        request = json.dumps({"argv": argv, "fds": targets}).encode()
        with self._lock:
            self._ensure_current()
            self._in_flight += 1
        try:
            reply = self._ask(request, sources)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._settled.notify_all()
        self.reap_ended(reply.get("ended", []))
        if "pid" not in reply:
            raise WarmParentUnavailable(f"warm parent: {reply.get('error', 'no answer')}")
        return int(reply["pid"])

    def _ask(self, request: bytes, fds: list[int]) -> dict:
        """One request and its answer ({} when the connection closed unanswered: the
        warm parent, or the VMM it forked, ended before answering, and none runs)."""
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conn.settimeout(_REQUEST_TIMEOUT)
            conn.connect(self.socket_path)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            conn.sendmsg([request], ancillary if fds else [])
        except OSError as e:
            conn.close()
            raise WarmParentUnavailable(f"warm parent at {self.socket_path}: {e}") from e
        try:
            return json.loads(conn.recv(4096) or b"{}")
        except (OSError, ValueError) as e:
            raise WarmParentLost(f"warm parent took the request but did not answer: {e}") from e
        finally:
            conn.close()

    def prestart(self) -> None:
        """Start the warm parent now (it makes its standbys meanwhile), so that the first
        launch after the agent starts does not wait for it. A failure is only logged:
        each launch tries again, and falls back to exec."""
        try:
            with self._lock:
                self._ensure_current()
        except WarmParentUnavailable as e:
            log.warning("warm VMM parent not started: %s (each launch will try again)", e)

    def reap_ended(self, more: Iterable[int] = ()) -> set[int]:
        """Reap the standbys the warm parent said it let go (`more`, from a reply, and
        those still running when last tried); the pids still to reap. Only pids it named
        are waited for, so no VMM's exit status is ever taken here."""
        with self._lock:
            self._ended.update(p for p in more if isinstance(p, int) and p > 0)
            for pid in list(self._ended):
                try:
                    done = os.waitpid(pid, os.WNOHANG)[0]
                except ChildProcessError:
                    done = pid  # not ours (any more): nothing to reap
                if done:
                    self._ended.discard(pid)
            return set(self._ended)

    def _ensure_current(self) -> None:
        """A running warm parent with the installed code, started or replaced as needed."""
        current = self.installed_version()
        if self._proc is not None and self._proc.poll() is None and self.version == current:
            return
        if self._proc is not None:
            why = "exited" if self._proc.poll() is not None else "runs older code"
            log.info("warm VMM parent %d %s: starting a new one", self._proc.pid, why)
            self._settled.wait_for(lambda: self._in_flight == 0, timeout=_REQUEST_TIMEOUT)
            self.stop()
        self._start(current)

    def _start(self, version: str) -> None:
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "computed.vmm.zygote", self.socket_path,
                 str(self.standbys), " " * _TITLE_ROOM],
                stdin=subprocess.PIPE,  # its end of this pipe closing tells it we are gone
                stdout=out,
                stderr=out,
                start_new_session=True,
                close_fds=True,
                env=self.environment,
            )  # fmt: skip
        self.version = version
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if self._proc.poll() is not None:
                self.stop()  # reaped, and our end of its stdin closed
                raise WarmParentUnavailable(f"warm parent exited at start; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise WarmParentUnavailable(f"warm parent not ready in {_START_TIMEOUT:g}s")
            time.sleep(0.01)
        log.info("warm VMM parent %d ready (code %s)", self._proc.pid, version)

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
                probe.connect(self.socket_path)
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """End the warm parent (never its VMMs: they are not its children)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
