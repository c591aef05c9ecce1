"""The warm VMM parent (a zygote): one per host, started and supervised by the agent.

It pays for the interpreter and every import of computed-vmm once, freezes
its heap (`gc.freeze()`) so its children share those pages copy-on-write,
and then hands each request to a VMM process of its own making. Each is a
full computed-vmm from argument parsing on: it owns its VM (a KVM VM belongs
to the process that created it), confines itself and runs, exactly as a VMM
started by exec does.

Most requests go to a standby (standby.py): a child forked ahead of time that
has already made the slow, instance-independent part of a VM and waits. The
pool is topped up once requests pause (an empty one at once, between requests);
a burst beyond it is served by forking on demand, as is everything when
standbys cannot be made.

A VMM must not depend on this process: it is forked by an intermediate child
that exits at once, so the VMM is re-parented to the nearest subreaper, which
is the agent (PR_SET_CHILD_SUBREAPER). The intermediate shares this process's
memory while it lives (detach.py), so the VMM's fork is the only copy of it.
The agent then sees its exit status as its own child's; the zygote's crash,
restart or upgrade never touches a running VMM.

The protocol is one SOCK_SEQPACKET message per request on a unix socket that
only root may use (handoff.py has its format). The answer is {"pid": N} or
{"error": "..."}, with "ended": the standbys let go since the last answer, for
the agent to reap. A VMM forked on demand sends its answer itself, so that this
process forks the next request meanwhile; a connection closed unanswered means
that no VMM runs. Requests may come concurrently: they wait in the listen
backlog, and each is answered on its own connection.

The process title of each child is its own qemu-like command line
(setproctitle rewrites the argument area in place; PR_SET_MM would need
CAP_SYS_RESOURCE), so `ps` reads as it does for an exec'd VMM.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import NoReturn

import setproctitle

# Everything a VMM imports, imported here once so children share it.
from computed.vmm import boot, confine, detach, handoff, page_merging, seccomp, standby
from computed.vmm._confine import ffi as confine_ffi
from computed.vmm._kvm import ffi as kvm_ffi
from computed.vmm.code_version import code_version
from computed.vmm.errors import VmmError
from computed.vmm.kvm import Kvm
from computed.vmm.prepared import Prepared, VmShape, option_value

ZYGOTE_TITLE = "computed-vmm-zygote"
STANDBYS = 2  # standby VMMs kept ready when no count is given (the agent gives its own)
DEFAULT_SHAPE = VmShape(128)  # qemu's default -m, -smp 1, -cpu host, until a request says
_TAKE_TIMEOUT = 5.0  # a standby installs fds and takes a title: milliseconds
_STANDBY_RETRY = 5.0  # after a standby dies unused (no /dev/kvm?), fork on demand for this long
# An empty pool is topped up at once, in the gaps between requests, so that launches one
# after another each find a standby; beyond this reserve, only once requests have paused
# for _TOP_UP_AFTER seconds: a burst's CPU goes to the VMMs it asked for, and the
# standbys it used are made again after it.
_RESERVE = 1
_TOP_UP_AFTER = 1.0


def _run_detached(grandchild: Callable[[], NoReturn]) -> None:
    """Run `grandchild` in a process forked through an intermediate child that starts a
    session and exits at once (detach.py), so the grandchild's parent is the agent (the
    subreaper), never this process. Returns once the intermediate is reaped."""
    forked = detach.fork_detached()
    if forked.in_child:
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _await_exit_of(forked.intermediate)
            grandchild()
        finally:
            os._exit(1)
    os.waitpid(forked.intermediate, 0)  # it is exiting: the clone was a vfork


def _await_exit_of(parent: int) -> None:
    """Wait until `parent` (the intermediate child) has exited, so that this process is
    the subreaper's child before anyone is given its pid (whoever is, waits for it). A
    pidfd turns readable only once the kernel has re-parented the exiting process's
    children; while getppid() still names it, it has not, and its pid is not free."""
    try:
        fd = os.pidfd_open(parent)
    except ProcessLookupError:
        return  # exited and reaped: we were re-parented first
    except OSError:  # no pidfds (Linux < 5.3): look until the parent is another
        while os.getppid() == parent:
            time.sleep(0.0002)
        return
    try:
        if os.getppid() == parent:
            select.select([fd], [], [])
    finally:
        os.close(fd)


def _fork_detached(grandchild: Callable[[handoff.Announcer], NoReturn]) -> int:
    """A detached grandchild (`_run_detached`); its pid, once it has announced itself."""
    r, w = os.pipe()

    def announced_on_w() -> NoReturn:
        os.close(r)
        grandchild(handoff.Announcer(w, str(os.getpid()).encode()))

    try:
        _run_detached(announced_on_w)
    except OSError:
        os.close(r)
        raise
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as pipe:
        text = pipe.read()  # until the grandchild has announced itself, or died
    if not text:
        raise OSError("the process could not be forked")
    return int(text)


def _fork_vmm(
    request: dict, received: list[int], conn: socket.socket, ended: list[int], kvm: Kvm | None
) -> None:
    """Fork the VMM of a request no standby took, and go on at once: the VMM answers the
    client itself on the client's connection ({"pid": N, "ended": [...]}), once its
    title and fds are in place, so that this process never waits for a VMM to set up and
    a burst's requests are forked back to back. A VMM that dies before it answers
    closes the connection unanswered: the client knows then that none runs (and the
    standbys in `ended` are left to its sweep for strays)."""
    _run_detached(
        lambda: handoff.become_vmm(
            request,
            received,
            handoff.Announcer(conn.detach(), _answer_text(os.getpid(), ended)),
            Prepared(kvm) if kvm is not None else None,
        )
    )


def _answer_text(pid: int, ended: list[int]) -> bytes:
    return json.dumps({"pid": pid, "ended": ended}).encode()


class Standby:
    __slots__ = ("conn", "pid", "ready", "shape")

    def __init__(self, pid: int, conn: socket.socket, shape: VmShape) -> None:
        self.pid, self.conn, self.shape = pid, conn, shape
        self.ready = False  # its VM is made (it said so)

    def take(self, request: dict, received: list[int]) -> bool:
        """Pass the request on and wait for the standby to say it took it; whether it
        did. One that does not answer in time is killed (the request is then forked)."""
        try:
            handoff.send_request(self.conn, request, received)
            self.conn.settimeout(_TAKE_TIMEOUT)
            if self.conn.recv(16) == standby.TAKEN:
                return True
        except OSError:
            pass
        finally:
            self.conn.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return False


class StandbyPool:
    """The standby VMMs (standby.py) ready to become an instance's VMM. Their shapes
    (RAM, -smp, -cpu) follow the requests: the pool holds the shapes of the last `size`
    requests, so a host that runs one flavor has every standby fit, and a mix gets a
    mix. A new standby reads ahead the image the newest request named."""

    def __init__(self, size: int, kvm: Kvm | None = None) -> None:
        self.size = size
        self.kvm = kvm  # the warm /dev/kvm handle every VMM forked here uses (None: its own)
        self.standbys: list[Standby] = []
        self.recent: collections.deque[VmShape] = collections.deque(maxlen=size)
        self.kernel: str | None = None  # the newest request's -kernel
        self._quiet_until = 0.0  # no standby is forked before then: standbys died unused
        self._burst_until = 0.0  # none beyond the reserve before then (see top_up_due)
        self._ended: list[int] = []  # standbys let go since the last answer (see take_ended)

    def hand(self, request: dict, received: list[int]) -> int | None:
        """Give the request to a standby of the right shape (or any): its pid, or None
        when none is left alive."""
        self._burst_until = time.monotonic() + _TOP_UP_AFTER
        shape = VmShape.of_request(request["argv"])
        if shape is not None and self.size:
            self.recent.append(shape)
        self.kernel = option_value(request["argv"], "-kernel") or self.kernel
        candidates = sorted(
            (s for s in self.standbys if s.ready), key=lambda s: s.shape != shape
        )  # a fitting one first
        try:
            for candidate in candidates:
                self.standbys.remove(candidate)
                if candidate.take(request, received):
                    return candidate.pid
                self._ended.append(candidate.pid)  # killed
            return None
        finally:
            self._retire_unwanted()

    def _wanted(self) -> collections.Counter[VmShape]:
        """The last requests' shapes, the newest repeated to fill the pool."""
        newest = self.recent[-1] if self.recent else DEFAULT_SHAPE
        return collections.Counter([*self.recent, *[newest] * (self.size - len(self.recent))])

    def _made(self) -> collections.Counter[VmShape]:
        return collections.Counter(s.shape for s in self.standbys)

    def _missing(self) -> collections.Counter[VmShape]:
        return self._wanted() - self._made()

    def _retire_unwanted(self) -> None:
        """End standbys of shapes no longer asked for (they see EOF and exit)."""
        extra = self._made() - self._wanted()
        for old in list(self.standbys):
            if extra[old.shape] > 0:
                extra[old.shape] -= 1
                old.conn.close()
                self.standbys.remove(old)
                self._ended.append(old.pid)

    def take_ended(self) -> list[int]:
        """The pids of the standbys let go (retired, killed, or dead unused) since the last
        call. They are the agent's children, not ours: each answer names them so that it
        reaps them at once, not as strays at its next power-state sync."""
        ended, self._ended = self._ended, []
        return ended

    def sockets(self) -> list[socket.socket]:
        return [s.conn for s in self.standbys]

    def hear(self, readable: list) -> None:
        """A standby's socket turns readable when it is ready, or when it died unused."""
        for waiting in [s for s in self.standbys if s.conn in readable]:
            try:
                said = waiting.conn.recv(16)
            except OSError:
                said = b""
            if said == standby.READY:
                waiting.ready = True
                continue
            waiting.conn.close()
            self.standbys.remove(waiting)
            self._ended.append(waiting.pid)
            self._quiet_until = time.monotonic() + _STANDBY_RETRY

    def top_up_due(self) -> float | None:
        """Seconds until a standby may be forked (0: now), or None while the pool is full.
        Below the reserve that is now; above it, a moment after the last request (see
        _RESERVE). After standbys died unused (no /dev/kvm?) it is the end of that quiet
        period, so an idle warm parent sleeps instead of waking to find it may not fork."""
        if not self._missing():
            return None
        now = time.monotonic()
        due = self._quiet_until
        if len(self.standbys) >= min(_RESERVE, self.size):
            due = max(due, self._burst_until)
        return max(0.0, due - now)

    def top_up_one(self) -> bool:
        """Fork one standby if one is missing and may be made now; whether one was."""
        if self.top_up_due() != 0.0:  # None: nothing missing
            return False
        shape, kernel = next(iter(self._missing())), self.kernel
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = _fork_detached(
                lambda announce: standby.serve_standby(theirs, shape, kernel, announce, self.kvm)
            )
        except OSError:
            ours.close()
            self._quiet_until = time.monotonic() + _STANDBY_RETRY
            return False
        finally:
            theirs.close()
        ours.setblocking(True)
        self.standbys.append(Standby(pid, ours, shape))
        return True

    def close(self) -> None:
        for s in self.standbys:
            s.conn.close()  # each standby sees EOF and exits
        self.standbys.clear()


def _read_confinement_inputs() -> None:
    """What every confined VMM reads before it pivots into its jail, read once here: the
    seccomp programs, the kernel's last capability and the modules it imports late (a
    VMM's own reads cost 0.5 ms on nested hosts, its imports 0.7). A host without the
    programs still serves unconfined VMMs; a confined one reads them itself and says
    what is missing."""
    confine.last_capability()
    confine.preload_for_jail()
    try:
        seccomp.load_filters()
    except seccomp.SeccompError:
        pass


def _build_c_types() -> None:
    """cffi builds each struct type of a module the first time a process uses it: built
    here once, no VMM builds them again (12 `ffi.new` calls of a confined VMM's set-up
    took 0.37 ms in each VMM, 0.08 ms once built here)."""
    for ffi in (kvm_ffi, confine_ffi):
        _typedefs, structs, unions = ffi.list_types()
        for kind, names in (("struct", structs), ("union", unions)):
            for name in names:
                ffi.sizeof(f"{kind} {name}")  # lays it out
                ffi.typeof(f"{kind} {name} *")  # and the types ffi.new is asked for
                ffi.typeof(f"{kind} {name}[]")


def _warm_kvm() -> Kvm | None:
    """The /dev/kvm handle every VMM forked here shares, opened and asked once: its API
    version and capability checks and KVM_GET_SUPPORTED_CPUID took 0.17 ms of each
    VMM's start (one at a time; more in a burst). The handle holds no VM (each VMM
    creates its own, which belongs to its own process), and keeps the kvm module
    loaded, so the host's CPUID it caches stays true. None where /dev/kvm cannot be
    used: each VMM then opens its own and says why it cannot, as an exec'd one does."""
    try:
        kvm = Kvm()
        kvm.supported_cpuid()
        kvm.max_vcpus()
    except VmmError:
        return None
    return kvm


def serve(path: str, standbys: int = STANDBYS) -> None:
    """Answer requests on `path` until SIGTERM. Single-threaded: it forks."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old_umask = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(0))
    boot.page_tables(4)  # the identity map of every guest under 4 GiB, built once
    _read_confinement_inputs()
    _build_c_types()
    kvm = _warm_kvm()
    gc.collect()
    gc.freeze()  # what is here now is shared with every child, never touched again
    # What the children copy anyway (reference counts), the host may merge back.
    page_merging.offer_interpreter_memory()
    pool = StandbyPool(standbys, kvm)
    print(f"{ZYGOTE_TITLE}: ready on {path}", flush=True)
    try:
        while True:
            timeout = pool.top_up_due()
            # Requests first: a standby is forked only when select finds none waiting.
            ready, _, _ = select.select([listener, sys.stdin, *pool.sockets()], [], [], timeout)
            if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
                return  # the agent is gone (its end of our stdin closed): so are we
            pool.hear(ready)
            if listener in ready:
                conn, _ = listener.accept()
                with conn:
                    _answer(conn, pool)
            elif not ready:
                pool.top_up_one()
    finally:
        pool.close()


def _answer(conn: socket.socket, pool: StandbyPool) -> None:
    """One request. Nothing a client sends (or fails to send) may end this process."""
    try:
        uid = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[4:8]
        if int.from_bytes(uid, sys.byteorder) != 0:
            conn.send(b'{"error": "only root may start VMMs"}')
            return
        try:
            request, received = handoff.receive_request(conn)
        except EOFError:
            return  # a readiness probe: connected and left
        except (OSError, ValueError) as e:
            conn.send(json.dumps({"error": str(e)}).encode())
            return
        ended: list[int] = []
        try:
            pid = pool.hand(request, received)
            ended = pool.take_ended()
            if pid is None:
                _fork_vmm(request, received, conn, ended, pool.kvm)  # the VMM answers
            else:
                conn.send(_answer_text(pid, ended))
        except OSError as e:
            conn.send(json.dumps({"error": f"fork: {e.strerror}", "ended": ended}).encode())
        finally:
            for fd in received:
                os.close(fd)
    except OSError as e:  # the client went away before its answer
        print(f"{ZYGOTE_TITLE}: request dropped: {e}", file=sys.stderr, flush=True)


def main() -> None:
    """SOCKET [STANDBYS [PADDING]]: PADDING is room for the VMMs' titles (see above)."""
    usage = f"usage: python -m computed.vmm.zygote SOCKET [STANDBYS [PADDING]]\n\n{__doc__}"
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(usage)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    try:
        standbys = int(sys.argv[2]) if len(sys.argv) > 2 else STANDBYS
    except ValueError:
        standbys = -1
    if standbys < 0:
        sys.exit(f"{ZYGOTE_TITLE}: STANDBYS must be a count, not {sys.argv[2]!r}")
    setproctitle.setproctitle(f"{ZYGOTE_TITLE} {sys.argv[1]} version={code_version()}")
    serve(sys.argv[1], standbys)
    os.unlink(sys.argv[1])


if __name__ == "__main__":
    main()
