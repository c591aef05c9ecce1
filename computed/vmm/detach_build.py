"""Build the cffi extension `computed.vmm._detach`: the warm parent's detached fork.

A VMM the warm parent forks must end up the agent's child, never the warm
parent's: an intermediate child starts a session, forks the VMM and exits, and
the kernel re-parents the VMM to the agent (the subreaper). Done with two
`os.fork()`s, the intermediate is a full copy of the warm parent: its page
tables are copied and torn down again for nothing: a detached child cost 2.16 ms
of CPU that way here, 1.28 ms with the intermediate below.

`detach_fork` makes the intermediate with clone(CLONE_VM | CLONE_VFORK), as
glibc's posix_spawn does: it runs on a stack of its own, in the warm parent's
memory, while the warm parent waits; it calls setsid() and fork() and exits.
Its fork is the only copy of the warm parent's memory. The VMM, that copy,
returns to Python on the copy of the warm parent's own stack by longjmp(), and
the interpreter's fork bookkeeping runs on both sides as os.fork() runs it
(PyOS_BeforeFork, PyOS_AfterFork_Parent/_Child), with the GIL held, as os.fork()
holds it. Signals stay blocked while the intermediate shares the warm parent's
memory, so no handler runs there.

Two things a fork from a CLONE_VM child does not carry over are put back in the
VMM: the kernel does not register glibc's restartable-sequence area for a
CLONE_VM child, so neither does it for that child's fork (the VMM re-registers
it, so sched_getcpu() stays right); and the signal mask is restored.

Run: python -m computed.vmm.detach_build  (the Makefile does this at install).
"""

from __future__ import annotations

import pathlib

import cffi

HERE = pathlib.Path(__file__).resolve().parent

CDEF = r"""
int detach_fork(int *intermediate, int *error);
"""

SOURCE = r"""
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>
#include <sys/rseq.h>
#include <sys/syscall.h>

/* The intermediate's stack. The warm parent is single-threaded, and the
   intermediate has exited before the warm parent runs again (CLONE_VFORK). */
static char intermediate_stack[64 * 1024] __attribute__((aligned(16)));

struct detach {
    jmp_buf resume;      /* where the VMM goes on: detach_fork, on its stack's copy */
    pid_t intermediate;  /* the intermediate's pid, for the VMM */
    int error;           /* the intermediate's errno (setsid, fork), for the parent */
};

static int run_intermediate(void *arg)
{
    struct detach *d = arg;
    d->intermediate = getpid();
    if (setsid() < 0) {
        d->error = errno;
        _exit(1);
    }
    pid_t vmm = fork();
    if (vmm == 0)
        longjmp(d->resume, 1);  /* onto the copy of the warm parent's stack (higher) */
    if (vmm < 0)
        d->error = errno;
    _exit(0);
}

/* A CLONE_VM child has no rseq area registered, and a fork inherits that: register
   glibc's again, as glibc does for every thread it starts (best effort: without
   it only sched_getcpu() in this thread falls back to a system call). */
static void reregister_rseq(void)
{
#ifdef RSEQ_SIG
    if (__rseq_size > 0)
        syscall(SYS_rseq, (char *)__builtin_thread_pointer() + __rseq_offset,
                (unsigned int)sizeof(struct rseq), 0, RSEQ_SIG);
#endif
}

/* In the warm parent: the intermediate's pid (> 0, exited, to be reaped), with
   *error the errno of its setsid() or fork() (0: the VMM was forked); or -errno
   when no intermediate could be made. In the VMM: 0, with *intermediate set. */
static int detach_fork(int *intermediate, int *error)
{
    struct detach d;
    sigset_t all, old;
    d.intermediate = 0;
    d.error = 0;
    PyGILState_STATE gil = PyGILState_Ensure();  /* cffi released it for the call */
    sigfillset(&all);
    PyOS_BeforeFork();
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (setjmp(d.resume)) {
        /* the VMM */
        reregister_rseq();
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        PyOS_AfterFork_Child();
        PyGILState_Release(gil);
        *intermediate = d.intermediate;
        *error = 0;
        return 0;
    }
    pid_t pid = clone(run_intermediate, intermediate_stack + sizeof(intermediate_stack),
                      CLONE_VM | CLONE_VFORK | SIGCHLD, &d);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    PyOS_AfterFork_Parent();
    PyGILState_Release(gil);
    if (pid < 0)
        return -clone_errno;
    *intermediate = pid;
    *error = d.error;
    return pid;
}
"""


def build() -> None:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    # The full C API: PyOS_BeforeFork and its kin are not in the limited one.
    ffi.set_source(
        "computed.vmm._detach",
        SOURCE,
        py_limited_api=False,
        define_macros=[("_CFFI_NO_LIMITED_API", None)],
    )
    ffi.compile(tmpdir=str(HERE.parent.parent), verbose=False)


if __name__ == "__main__":
    build()
