"""The warm VMM parent (a zygote): one per host, started and supervised by the agent.

It pays for the interpreter and every import of computed-vmm once, freezes
its heap (`gc.freeze()`) so its children share those pages copy-on-write,
and then forks one VMM per request. Each child is a full computed-vmm from
argument parsing on: it creates its VM itself (a KVM VM belongs to the
process that created it), confines itself and runs, exactly as a VMM started
by exec does.

A VMM must not depend on this process: the child forks once more and its
intermediate parent exits at once, so the VMM is re-parented to the nearest
subreaper, which is the agent (PR_SET_CHILD_SUBREAPER). The agent then sees
its exit status as its own child's; the zygote's crash, restart or upgrade
never touches a running VMM.

The protocol is one SOCK_SEQPACKET message per request on a unix socket that
only root may use: a JSON object {"argv": [...], "fds": [n, ...]} with the
file descriptors to install carried as SCM_RIGHTS, in the order of "fds"
(the child dup2()s the i-th received fd to fds[i]: its stdout and stderr, a
tap). The answer is {"pid": N} or {"error": "..."}.

The process title of each child is its own qemu-like command line
(setproctitle rewrites the argument area in place; PR_SET_MM would need
CAP_SYS_RESOURCE), so `ps` reads as it does for an exec'd VMM.
"""

from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import sys

import setproctitle

# Everything a VMM imports, imported here once so children share it.
from computed.vmm import main as vmm_main
from computed.vmm.code_version import code_version

MAX_REQUEST = 64 * 1024
MAX_FDS = 16
ZYGOTE_TITLE = "computed-vmm-zygote"


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    msg, ancdata, flags, _ = conn.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    received = list(fds)
    if not msg and not received:
        raise EOFError
    try:
        return _checked(msg, flags, received), received
    except ValueError:
        for fd in received:  # refused: nothing of it may stay open here (or reach a VMM)
            os.close(fd)
        raise


def _checked(msg: bytes, flags: int, received: list[int]) -> dict:
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise ValueError("request too large")
    request = json.loads(msg)
    if not isinstance(request, dict) or not isinstance(request.get("argv"), list):
        raise ValueError("a request is {'argv': [...], 'fds': [...]}")
    targets = request.get("fds", [])
    if len(targets) != len(received) or not all(isinstance(n, int) and n >= 0 for n in targets):
        raise ValueError(f"{len(received)} fds received for targets {targets!r}")
    return request


def _become_vmm(argv: list[str], received: list[int], targets: list[int], keep: list[int]) -> None:
    """In the grandchild: install the fds where argv expects them, and run. Never returns."""
    try:
        for fd in keep:
            os.close(fd)
        # Move every received fd out of the way first, so installing one never
        # clobbers another that is still to be installed.
        moved = [os.dup(fd) for fd in received]
        for fd in received:
            os.close(fd)
        for fd, target in zip(moved, targets, strict=True):
            os.dup2(fd, target, inheritable=True)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        # Nothing of the warm parent's reaches the VMM: only stdio and what was handed in.
        wanted = {0, 1, 2, *targets}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in wanted:
                try:
                    os.close(int(name))
                except OSError:
                    pass  # the directory listing's own fd, already closed
        setproctitle.setproctitle(" ".join(argv))
        setproctitle.setthreadtitle(os.path.basename(argv[0]))  # comm, as an exec'd VMM has
        vmm_main.main(argv[1:])  # exits with the VMM's code
    finally:
        os._exit(1)  # only if installing the fds failed


def _spawn(request: dict, received: list[int], keep: list[int]) -> int:
    """Fork twice: the intermediate child starts a session, forks the VMM and exits, so the
    VMM's parent becomes the agent (the subreaper) and never this process."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.setsid()
            vmm = os.fork()
            if vmm == 0:
                os.close(w)
                _become_vmm(request["argv"], received, request.get("fds", []), keep)
            os.write(w, str(vmm).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    with os.fdopen(r, "rb") as pipe:
        text = pipe.read()
    if not text:
        raise OSError("the VMM could not be forked")
    return int(text)


def serve(path: str) -> None:
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
    gc.collect()
    gc.freeze()  # what is here now is shared with every child, never touched again
    print(f"{ZYGOTE_TITLE}: ready on {path}", flush=True)
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
            return  # the agent is gone (its end of our stdin closed): so are we
        if listener in ready:
            conn, _ = listener.accept()
            with conn:
                _answer(conn, [listener.fileno(), sys.stdin.fileno()])


def _answer(conn: socket.socket, keep: list[int]) -> None:
    """One request. Nothing a client sends (or fails to send) may end this process."""
    try:
        uid = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[4:8]
        if int.from_bytes(uid, sys.byteorder) != 0:
            conn.send(b'{"error": "only root may start VMMs"}')
            return
        try:
            request, received = _receive(conn)
        except EOFError:
            return  # a readiness probe: connected and left
        except (OSError, ValueError) as e:
            conn.send(json.dumps({"error": str(e)}).encode())
            return
        try:
            pid = _spawn(request, received, [*keep, conn.fileno()])
            conn.send(json.dumps({"pid": pid}).encode())
        except OSError as e:
            conn.send(json.dumps({"error": f"fork: {e.strerror}"}).encode())
        finally:
            for fd in received:
                os.close(fd)
    except OSError as e:  # the client went away before its answer
        print(f"{ZYGOTE_TITLE}: request dropped: {e}", file=sys.stderr, flush=True)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: python -m computed.vmm.zygote SOCKET [PADDING]\n\n{__doc__}")
        sys.exit(0 if len(sys.argv) > 1 else 2)
    setproctitle.setproctitle(f"{ZYGOTE_TITLE} {sys.argv[1]} version={code_version()}")
    serve(sys.argv[1])
    os.unlink(sys.argv[1])


if __name__ == "__main__":
    main()
