"""Compile computed-vmm's seccomp policy into one BPF program per thread role.

The policy is one readable file, computed/seccomp_policy.toml: system call
names, and argument checks written with C constant names (ioctl requests such
as KVM_RUN, flags such as CLONE_THREAD). Every name is resolved here, at
compile time: system calls by libseccomp for x86_64; constants from the VMM's
cffi module `computed.vmm._kvm` (<linux/kvm.h>, <linux/vhost.h>) or, for the
few that are not KVM's, from this compiler's own cffi module
`computed._seccomp`, built below in API mode against <seccomp.h> and the
headers that define them. libseccomp then writes each role's filter as raw
BPF (struct sock_filter[]) to computed/vmm/seccomp/<role>.bpf.

This runs once, at install, never at a VM launch: the VMM only reads the files
(computed/vmm/seccomp.py) and does not link libseccomp.

Run: python -m computed.seccomp_build [--pfc ROLE]   (--pfc: print libseccomp's
pseudo-code of one role's filter instead of writing the files)
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from typing import Any

import cffi

HERE = pathlib.Path(__file__).resolve().parent
POLICY = HERE / "seccomp_policy.toml"
OUT_DIR = HERE / "vmm" / "seccomp"
_INT_MASK = 0xFFFFFFFF  # `one_of` compares what the kernel reads of an int argument
_IOCTL_REQUEST_ARG = 1
_TOP_PRIORITY = 255

CDEF = r"""
typedef void *scmp_filter_ctx;
typedef uint64_t scmp_datum_t;
enum scmp_compare { SCMP_CMP_MASKED_EQ, ... };
enum scmp_filter_attr { SCMP_FLTATR_ACT_BADARCH, ... };
struct scmp_arg_cmp {
    unsigned int arg;
    enum scmp_compare op;
    scmp_datum_t datum_a;
    scmp_datum_t datum_b;
};
#define SCMP_ARCH_X86_64 ...
#define SCMP_ACT_ALLOW ...
#define SCMP_ACT_TRAP ...
#define SCMP_ACT_KILL_PROCESS ...
uint32_t seccomp_arch_native(void);
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
int seccomp_attr_set(scmp_filter_ctx ctx, enum scmp_filter_attr attr, uint32_t value);
int seccomp_rule_add_exact_array(scmp_filter_ctx ctx, uint32_t action, int syscall,
                                 unsigned int arg_cnt, const struct scmp_arg_cmp *arg_array);
int seccomp_syscall_priority(scmp_filter_ctx ctx, int syscall, uint8_t priority);
int seccomp_syscall_resolve_name_arch(uint32_t arch_token, const char *name);
int seccomp_export_bpf(const scmp_filter_ctx ctx, int fd);
int seccomp_export_pfc(const scmp_filter_ctx ctx, int fd);
uint32_t computed_act_errno(uint16_t error);

/* The policy's constants that are not KVM's. */
#define CLONE_THREAD ...
#define CLONE_NEWUSER ...
#define PROT_EXEC ...
#define MADV_DONTNEED ...
#define FUTEX_WAIT ...
#define FUTEX_WAKE ...
#define FUTEX_WAIT_BITSET ...
#define FUTEX_WAKE_BITSET ...
#define FUTEX_PRIVATE_FLAG ...
#define FUTEX_CLOCK_REALTIME ...
#define FIONBIO ...
#define TIOCSTI ...
#define TUNSETIFF ...
#define TUNSETPERSIST ...
#define SIGUSR1 ...
"""

SOURCE = r"""
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/futex.h>
#include <linux/if_tun.h>
#include <seccomp.h>

static uint32_t computed_act_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }
"""

ACTIONS = {"trap": "SCMP_ACT_TRAP", "kill_process": "SCMP_ACT_KILL_PROCESS"}
ARCHES = {"x86_64": "SCMP_ARCH_X86_64"}


def make_builder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("computed._seccomp", SOURCE, libraries=["seccomp"], extra_compile_args=["-O2"])
    return ffi


def build_extension() -> None:
    # tmpdir is the repository root, so the module lands next to this file.
    make_builder().compile(tmpdir=str(HERE.parent), verbose=False)


def seccomp_lib() -> Any:
    """The compiler's cffi module (libseccomp and constants), built if absent."""
    try:
        from computed import _seccomp
    except ImportError:
        build_extension()
        from computed import _seccomp
    return _seccomp


class PolicyError(Exception):
    """The policy file is wrong; the message says where."""


@dataclass(frozen=True)
class ArgCheck:
    """Passes when (argument `arg` & `mask`) equals one of `values`."""

    arg: int
    mask: int
    values: tuple[int, ...]


@dataclass(frozen=True)
class Role:
    name: str
    threads: str
    calls: frozenset[str]  # allowed whatever the arguments
    checked: dict[str, tuple[ArgCheck, ...]]  # allowed when one of the checks passes
    hot: tuple[str, ...]  # tested first in the filter

    def ioctl_requests(self) -> set[int]:
        return {v for c in self.checked.get("ioctl", ()) for v in c.values}


@dataclass(frozen=True)
class Policy:
    arch: str
    default: str
    bad_arch: str
    roles: dict[str, Role]
    errno: dict[str, int]  # answered with this errno, in every role
    never_calls: frozenset[str]
    never_ioctls: dict[str, int]


def constant(expr: str) -> int:
    """A C constant by name ("A|B" ORs names), from the VMM's cffi module or ours."""
    from computed.vmm.seccomp import kvm_constant

    value = 0
    for name in expr.split("|"):
        name = name.strip()
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise PolicyError(f"{expr!r}: {name!r} is not a C constant's name")
        found = kvm_constant(name)
        if found is None:
            found = getattr(seccomp_lib().lib, name, None)
        if not isinstance(found, int):
            raise PolicyError(f"{name}: no such constant in computed.vmm._kvm or computed._seccomp")
        value |= found
    return value


def syscall_number(name: str, arch: str = "x86_64") -> int:
    m = seccomp_lib()
    nr = m.lib.seccomp_syscall_resolve_name_arch(getattr(m.lib, ARCHES[arch]), name.encode())
    if nr < 0:
        raise PolicyError(f"{name}: not a system call on {arch}")
    return nr


def _keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _or(names: list[str]) -> int:
    return constant("|".join(names)) if names else 0


def _when(entry: dict[str, Any], where: str) -> tuple[str, ArgCheck]:
    _keys(entry, {"call", "arg", "set", "clear", "one_of", "ignore"}, where)
    call, arg = entry.get("call"), entry.get("arg")
    if not isinstance(call, str) or not isinstance(arg, int) or not 0 <= arg <= 5:
        raise PolicyError(f"{where}: needs call = NAME and arg = 0..5")
    if "one_of" in entry:
        if "set" in entry or "clear" in entry:
            raise PolicyError(f"{where}: one_of does not combine with set/clear")
        mask = _INT_MASK & ~_or(entry.get("ignore", []))
        values = tuple(constant(v) for v in entry["one_of"])
        if any(v & ~mask for v in values):
            raise PolicyError(f"{where}: a value has bits the check ignores")
        return call, ArgCheck(arg, mask, values)
    if "ignore" in entry or not ("set" in entry or "clear" in entry):
        raise PolicyError(f"{where}: needs one_of (with optional ignore), or set and/or clear")
    must, must_not = _or(entry.get("set", [])), _or(entry.get("clear", []))
    if must & must_not:
        raise PolicyError(f"{where}: a flag is both set and clear")
    return call, ArgCheck(arg, must | must_not, (must,))


def _merge(checks: list[ArgCheck]) -> tuple[ArgCheck, ...]:
    """Checks of one call on the same argument and mask become one, values united."""
    merged: dict[tuple[int, int], list[int]] = {}
    for c in checks:
        values = merged.setdefault((c.arg, c.mask), [])
        values.extend(v for v in c.values if v not in values)
    return tuple(ArgCheck(arg, mask, tuple(v)) for (arg, mask), v in merged.items())


def _role(name: str, spec: dict[str, Any], groups: dict[str, Any]) -> Role:
    _keys(spec, {"threads", "groups", "hot"}, f"roles.{name}")
    calls: set[str] = set()
    checks: dict[str, list[ArgCheck]] = {}
    for g in spec.get("groups", []):
        if g not in groups:
            raise PolicyError(f"roles.{name}: no group {g!r}")
        group = groups[g]
        _keys(group, {"why", "calls", "ioctls", "when"}, f"groups.{g}")
        calls.update(group.get("calls", []))
        if group.get("ioctls"):
            requests = tuple(constant(r) for r in group["ioctls"])
            checks.setdefault("ioctl", []).append(ArgCheck(_IOCTL_REQUEST_ARG, _INT_MASK, requests))
        for i, entry in enumerate(group.get("when", [])):
            call, check = _when(entry, f"groups.{g}.when[{i}]")
            checks.setdefault(call, []).append(check)
    both = calls & set(checks)
    if both:
        raise PolicyError(f"roles.{name}: {', '.join(sorted(both))} both checked and unchecked")
    hot = tuple(spec.get("hot", []))
    if set(hot) - calls - set(checks):
        raise PolicyError(f"roles.{name}: hot calls must be allowed calls")
    checked = {call: _merge(c) for call, c in checks.items()}
    return Role(name, spec.get("threads", ""), frozenset(calls), checked, hot)


def load_policy(path: pathlib.Path = POLICY) -> Policy:
    """Parse and check the policy; every name resolved. Raises PolicyError."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    _keys(data, {"policy", "errno", "never", "groups", "roles"}, str(path))
    head = data.get("policy", {})
    _keys(head, {"arch", "default", "bad_arch"}, "policy")
    arch, default, bad_arch = head.get("arch"), head.get("default"), head.get("bad_arch")
    if arch not in ARCHES or default not in ACTIONS or bad_arch not in ACTIONS:
        raise PolicyError(f"policy: arch is one of {list(ARCHES)}, actions of {list(ACTIONS)}")
    errnos = {}
    for call, name in data.get("errno", {}).items():
        if not isinstance(getattr(errno, name, None), int):
            raise PolicyError(f"errno.{call}: {name} is not an errno name")
        errnos[call] = getattr(errno, name)
    never = data.get("never", {})
    _keys(never, {"calls", "ioctls"}, "never")
    groups = data.get("groups", {})
    roles = {n: _role(n, spec, groups) for n, spec in data.get("roles", {}).items()}
    used = {g for spec in data.get("roles", {}).values() for g in spec.get("groups", [])}
    unused = set(groups) - used
    if unused:
        raise PolicyError(f"groups not used by any role: {', '.join(sorted(unused))}")
    policy = Policy(
        arch,
        default,
        bad_arch,
        roles,
        errnos,
        frozenset(never.get("calls", [])),
        {name: constant(name) for name in never.get("ioctls", [])},
    )
    _check_policy(policy)
    return policy


def _check_policy(policy: Policy) -> None:
    for call in sorted(policy.never_calls):
        syscall_number(call, policy.arch)  # a misspelt name here would forbid nothing
    for role in policy.roles.values():
        allowed = role.calls | set(role.checked)
        for call in sorted(allowed | set(policy.errno)):
            syscall_number(call, policy.arch)
        if allowed & policy.never_calls:
            bad = ", ".join(sorted(allowed & policy.never_calls))
            raise PolicyError(f"roles.{role.name} allows what no role may: {bad}")
        if allowed & set(policy.errno):
            raise PolicyError(f"roles.{role.name} allows a call answered by [errno]")
        bad_ioctls = [n for n, v in policy.never_ioctls.items() if v in role.ioctl_requests()]
        if bad_ioctls:
            raise PolicyError(f"roles.{role.name} allows ioctls no role may: {bad_ioctls}")


def _ok(r: int, what: str) -> None:
    if r < 0:
        raise PolicyError(f"libseccomp: {what}: {os.strerror(-r)}")


def _filter(policy: Policy, role: Role) -> Any:
    """A libseccomp filter context for `role` (the caller releases it)."""
    m = seccomp_lib()
    ffi, lib = m.ffi, m.lib
    if lib.seccomp_arch_native() != getattr(lib, ARCHES[policy.arch]):
        raise PolicyError(f"this policy is for {policy.arch}; compile it on such a host")
    ctx = lib.seccomp_init(getattr(lib, ACTIONS[policy.default]))
    if ctx == ffi.NULL:
        raise PolicyError("libseccomp: seccomp_init failed")
    try:
        bad_arch = getattr(lib, ACTIONS[policy.bad_arch])
        _ok(lib.seccomp_attr_set(ctx, lib.SCMP_FLTATR_ACT_BADARCH, bad_arch), "bad-arch action")
        for call in sorted(role.calls):
            nr = syscall_number(call, policy.arch)
            _ok(lib.seccomp_rule_add_exact_array(ctx, lib.SCMP_ACT_ALLOW, nr, 0, ffi.NULL), call)
        for call, checks in sorted(role.checked.items()):
            nr = syscall_number(call, policy.arch)
            for check in checks:
                for value in check.values:
                    cmp = ffi.new("struct scmp_arg_cmp[1]")
                    cmp[0].arg, cmp[0].op = check.arg, lib.SCMP_CMP_MASKED_EQ
                    cmp[0].datum_a, cmp[0].datum_b = check.mask, value
                    _ok(lib.seccomp_rule_add_exact_array(ctx, lib.SCMP_ACT_ALLOW, nr, 1, cmp), call)
        for call, error in sorted(policy.errno.items()):
            nr = syscall_number(call, policy.arch)
            action = lib.computed_act_errno(error)
            _ok(lib.seccomp_rule_add_exact_array(ctx, action, nr, 0, ffi.NULL), call)
        for i, call in enumerate(role.hot):
            nr = syscall_number(call, policy.arch)
            _ok(lib.seccomp_syscall_priority(ctx, nr, _TOP_PRIORITY - i), f"priority of {call}")
    except BaseException:
        lib.seccomp_release(ctx)
        raise
    return ctx


def _export(policy: Policy, role: Role, pfc: bool) -> bytes:
    lib = seccomp_lib().lib
    ctx = _filter(policy, role)
    try:
        with tempfile.TemporaryFile() as f:
            export = lib.seccomp_export_pfc if pfc else lib.seccomp_export_bpf
            _ok(export(ctx, f.fileno()), "export")
            f.seek(0)
            return f.read()
    finally:
        lib.seccomp_release(ctx)


def compile_role(policy: Policy, role: str) -> bytes:
    """The role's filter as the kernel takes it: struct sock_filter[], native byte order."""
    return _export(policy, policy.roles[role], pfc=False)


def compile_all(policy: Policy) -> dict[str, bytes]:
    from computed.vmm.seccomp import ROLES

    if set(policy.roles) != set(ROLES):
        raise PolicyError(f"the policy's roles {sorted(policy.roles)} are not the VMM's {ROLES}")
    return {role: compile_role(policy, role) for role in ROLES}


def write_filters(programs: dict[str, bytes], out_dir: pathlib.Path = OUT_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for role, program in programs.items():
        tmp = out_dir / f".{role}.bpf.tmp"
        tmp.write_bytes(program)
        tmp.replace(out_dir / f"{role}.bpf")


def main(argv: list[str]) -> int:
    build_extension()  # at install: never a stale one
    try:
        policy = load_policy()
        if argv[:1] == ["--pfc"] and len(argv) == 2 and argv[1] in policy.roles:
            sys.stdout.write(_export(policy, policy.roles[argv[1]], pfc=True).decode())
            return 0
        if argv:
            print(f"usage: python -m computed.seccomp_build [--pfc {'|'.join(policy.roles)}]")
            return 2
        programs = compile_all(policy)
        write_filters(programs)
    except PolicyError as e:
        print(f"seccomp_build: {e}", file=sys.stderr)
        return 1
    for role, program in programs.items():
        r = policy.roles[role]
        print(
            f"{OUT_DIR.relative_to(HERE.parent)}/{role}.bpf: {len(r.calls)} calls, "
            f"{len(r.checked)} with argument checks, {len(r.ioctl_requests())} ioctls, "
            f"{len(program) // 8} BPF instructions"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
