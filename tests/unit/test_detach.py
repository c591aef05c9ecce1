"""The warm parent's detached fork (computed/vmm/detach.py): the child is re-parented to
the subreaper in a session of its own, the intermediate is gone and reapable, and the
interpreter and the C library are whole on both sides."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import uuid

import pytest

from agent.cgroups import InstanceCgroups
from computed.subreaper import become_subreaper
from computed.vmm import detach

_LIBC = ctypes.CDLL(None, use_errno=True)
_SYS_RSEQ, _SYS_ARCH_PRCTL, _ARCH_GET_FS = 334, 158, 0x1003
_RSEQ_SIG, _RSEQ_AREA_BYTES = 0x53053053, 32


def _rseq_registered() -> bool | None:
    """Whether this thread has glibc's rseq area registered with the kernel (registering
    it again is refused with EBUSY); None where glibc registers none."""
    try:
        size = ctypes.c_uint.in_dll(_LIBC, "__rseq_size").value
        offset = ctypes.c_long.in_dll(_LIBC, "__rseq_offset").value
    except ValueError:
        return None
    if size == 0:
        return None
    fs = ctypes.c_ulong()
    assert _LIBC.syscall(_SYS_ARCH_PRCTL, _ARCH_GET_FS, ctypes.byref(fs)) == 0
    area = ctypes.c_void_p(fs.value + offset)
    r = _LIBC.syscall(_SYS_RSEQ, area, _RSEQ_AREA_BYTES, 0, _RSEQ_SIG)
    if r == 0:  # it was not: leave it as found
        _LIBC.syscall(_SYS_RSEQ, area, _RSEQ_AREA_BYTES, 1, _RSEQ_SIG)  # RSEQ_FLAG_UNREGISTER
        return False
    return ctypes.get_errno() == errno.EBUSY


def _in_a_subreaper(warm_parent) -> dict:
    """Run `warm_parent(report)` in a process whose parent is a subreaper, as the agent
    is the warm parent's; `report(**facts)` may be called from it or from its detached
    child. Returns every report, merged, once the subreaper has reaped everyone."""
    r, w = os.pipe()
    subreaper = os.fork()
    if subreaper == 0:
        try:
            os.close(r)
            become_subreaper()

            def report(**facts) -> None:
                os.write(w, (json.dumps(facts) + "\n").encode())

            report(subreaper=os.getpid())
            zygote = os.fork()
            if zygote == 0:
                try:
                    warm_parent(report)
                finally:
                    os._exit(0)
            while True:  # the warm parent, then whatever is re-parented to us
                try:
                    os.wait()
                except ChildProcessError:
                    break
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as lines:
        facts = {}
        for line in lines:
            facts.update(json.loads(line))
    os.waitpid(subreaper, 0)
    return facts


def _forks_a_detached_child(report) -> None:
    calls = []
    os.register_at_fork(
        before=lambda: calls.append("before"),
        after_in_parent=lambda: calls.append("parent"),
        after_in_child=lambda: calls.append("child"),
    )
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    mask = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    r, w = os.pipe()
    forked = detach.fork_detached()
    if forked.in_child:
        try:
            os.close(w)
            os.read(r, 1)  # until the warm parent has reaped the intermediate
            report(
                child_parent=os.getppid(),
                child_session=os.getsid(0),
                child_intermediate=forked.intermediate,
                child_calls=calls,
                child_mask=sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
                child_rseq=_rseq_registered(),
            )
        finally:
            os._exit(0)
    os.close(r)
    # vfork resumes us when the intermediate lets go of our memory, a moment before it
    # is a zombie: on a loaded host WNOHANG saw it still exiting (CI). A bounded wait.
    with contextlib.suppress(ProcessLookupError):
        pidfd = os.pidfd_open(forked.intermediate)
        select.select([pidfd], [], [], 30)
        os.close(pidfd)
    pid, status = os.waitpid(forked.intermediate, os.WNOHANG)
    report(
        intermediate=forked.intermediate,
        intermediate_reaped=pid == forked.intermediate,
        intermediate_status=os.waitstatus_to_exitcode(status) if pid else None,
        parent_session=os.getsid(0),
        parent_calls=calls,
        parent_mask=sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        mask=mask,
        parent_rseq=_rseq_registered(),
    )
    os.close(w)


def test_the_child_is_the_subreapers_in_a_session_of_its_own():
    facts = _in_a_subreaper(_forks_a_detached_child)
    assert facts["child_parent"] == facts["subreaper"]  # not the warm parent's
    assert facts["child_session"] == facts["intermediate"] == facts["child_intermediate"]
    assert facts["child_session"] != facts["parent_session"]
    # The intermediate was exiting when the call returned: reaped, status 0.
    assert facts["intermediate_reaped"] is True and facts["intermediate_status"] == 0


def test_the_interpreter_and_libc_are_whole_on_both_sides():
    facts = _in_a_subreaper(_forks_a_detached_child)
    # os.register_at_fork hooks ran as for os.fork (the child's copy was taken in between).
    assert facts["parent_calls"] == ["before", "parent"]
    assert facts["child_calls"] == ["before", "child"]
    # Signals were blocked only while the intermediate lived.
    assert facts["parent_mask"] == facts["mask"] == facts["child_mask"]
    assert signal.SIGUSR1 in facts["child_mask"]  # (the test run may block others)
    # glibc's rseq area is registered in the child as in the parent (the kernel drops it
    # for a CLONE_VM child and its forks).
    assert facts["child_rseq"] == facts["parent_rseq"]


def _forks_with_no_room_for_the_child(dirs: list[str], pids_dir: str):
    def warm_parent(report) -> None:
        for d in dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        with open(os.path.join(pids_dir, "pids.max"), "w") as f:
            f.write("2")  # this process and the intermediate: no room for the child
        try:
            forked = detach.fork_detached()
        except OSError as e:
            report(errno=e.errno, message=str(e), children=_children_left())
            return
        if forked.in_child:
            os._exit(0)
        report(errno=None)

    return warm_parent


def _children_left() -> int:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return 0
    return 1


def test_a_child_that_cannot_be_forked_is_an_oserror_and_leaves_no_intermediate():
    cgroups = InstanceCgroups(f"computed-test-detach-{os.getpid()}")
    if "pids" not in cgroups.parents:
        pytest.skip("no pids controller")
    instance = str(uuid.uuid4())
    dirs = cgroups.create(instance, 1, 64)
    try:
        pids_dir = next(d for d in dirs if os.path.exists(os.path.join(d, "pids.max")))
        facts = _in_a_subreaper(_forks_with_no_room_for_the_child(dirs, pids_dir))
    finally:
        cgroups.remove(instance, timeout=30)
        cgroups.remove_parent_if_empty()
    assert facts["errno"] == errno.EAGAIN
    assert "fork" in facts["message"]
    assert facts["children"] == 0  # the intermediate was reaped
