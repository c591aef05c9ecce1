"""Confine each VMM thread with its role's seccomp filter, compiled at install.

`python -m computed.seccomp_build` compiles computed/seccomp_policy.toml once
into one BPF program per role (main, vcpu, vhost) in computed/vmm/seccomp/.
Here the VMM only reads those bytes and hands them to the kernel; it never
parses the policy nor links libseccomp.

Order (filters are per thread, stack, and are inherited at thread creation):
1. Main thread, while it may still open files: `arm()`, which reads the programs
   (or takes those the warm parent read before it forked this VMM) and makes
   `confine` install them. Nothing can be read from disk once a filter is on (no
   role allows open). A VMM that never arms (-sandbox off) installs no filter,
   whoever read the programs before it.
2. Each vCPU and NIC thread, first thing after naming itself (prctl is not
   allowed afterwards): `confine("vcpu")` or `confine("vhost")`.
3. Main thread, last: `confine("main")`, once it has started every other thread
   and done its last open (pidfile) and import (json). A thread started after
   this inherits main's filter, and a thread's own filter only narrows what it
   inherited: started after main's, a vCPU thread could never run KVM_RUN.

A call outside a thread's filter ends the VMM: the SIGSYS handler in the cffi
module writes, as the last line on stderr,
    computed-vmm: error: seccomp: blocked system call 59 (execve) in a vcpu thread
and exits with BLOCKED_EXIT_STATUS, without a core dump (guest RAM would be in it).
"""

from __future__ import annotations

import os

from computed.vmm._kvm import lib
from computed.vmm.errors import VmmError

ROLES = ("main", "vcpu", "vhost")
FILTER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp")
BLOCKED_EXIT_STATUS = 128 + 31  # 128 + SIGSYS, as a shell shows a death by SIGSYS
_SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k

_read: dict[str, bytes] | None = None  # the programs, once read (by us or the warm parent)
_armed: dict[str, bytes] | None = None  # the programs `confine` installs: set by arm()


class SeccompError(VmmError):
    """A filter is missing, malformed, or the kernel refused it."""


def load_filters(directory: str = FILTER_DIR) -> dict[str, bytes]:
    """Read every role's program (before anything forbids open). Reading installs
    nothing and arms nothing: the warm parent reads them once for every VMM it forks,
    confined or not."""
    global _read
    programs = {}
    for role in ROLES:
        path = os.path.join(directory, f"{role}.bpf")
        try:
            with open(path, "rb") as f:
                program = f.read()
        except OSError as e:
            raise SeccompError(
                f"seccomp filter {path}: {e.strerror} (run python -m computed.seccomp_build)"
            ) from None
        if not program or len(program) % _SOCK_FILTER_SIZE:
            raise SeccompError(f"seccomp filter {path}: not a BPF program")
        programs[role] = program
    _read = programs
    return programs


def arm() -> dict[str, bytes]:
    """From now on `confine` installs each role's filter (-sandbox on). The programs are
    those read already (by the warm parent, before it forked this VMM: it is restarted
    when they change), else read now."""
    global _armed
    _armed = _read if _read is not None else load_filters()
    return _armed


def install(role: str, program: bytes) -> None:
    """Load `program` into the calling thread (on top of any filter it inherited)."""
    r = lib.vmm_seccomp_install(role.encode(), program, len(program))
    if r < 0:
        raise SeccompError(f"cannot install the {role} seccomp filter: {os.strerror(-r)}")


def kvm_constant(name: str) -> int | None:
    """A constant of the VMM's cffi module by name, or None: how the policy compiler
    (computed.seccomp_build) resolves KVM_RUN and its kin without reaching into _kvm."""
    value = getattr(lib, name, None)
    return value if isinstance(value, int) else None


def confine(role: str) -> None:
    """Install `role`'s filter into the calling thread once `arm()` was called; nothing
    otherwise (the VMM runs unconfined: -sandbox off)."""
    if _armed is not None:
        install(role, _armed[role])
