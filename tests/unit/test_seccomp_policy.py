"""The seccomp policy file: it parses, every name in it resolves, and no role allows
what the VMM must never do once confined (computed/seccomp_policy.toml)."""

from __future__ import annotations

import errno
import re
import tomllib

import pytest
from computed.vmm._kvm import ffi
from computed.vmm._kvm import lib as kvm

from computed import seccomp_build
from computed.seccomp_build import ArgCheck, PolicyError, constant, load_policy, syscall_number
from computed.vmm import seccomp

# Kept here, apart from the policy's own [never] list, so that editing the policy
# cannot quietly allow one of them.
FORBIDDEN_CALLS = {
    "execve", "execveat", "fork", "vfork",
    "open", "openat", "openat2", "creat",
    "socket", "socketpair", "connect", "bind", "listen",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "bpf", "kexec_load", "kexec_file_load", "init_module", "finit_module", "reboot",
    "prctl", "seccomp", "setuid", "setresuid", "capset",
}  # fmt: skip
FORBIDDEN_IOCTLS = {"TUNSETIFF", "TUNSETPERSIST", "KVM_CREATE_VM", "KVM_CREATE_VCPU"}


@pytest.fixture(scope="module")
def policy() -> seccomp_build.Policy:
    return load_policy()


@pytest.fixture(scope="module")
def raw() -> dict:
    with open(seccomp_build.POLICY, "rb") as f:
        return tomllib.load(f)


def _allowed(role: seccomp_build.Role) -> set[str]:
    return set(role.calls) | set(role.checked)


def test_the_policy_has_one_filter_per_vmm_thread_role(policy):
    assert set(policy.roles) == set(seccomp.ROLES)
    for role in policy.roles.values():
        assert role.threads, f"{role.name}: say which threads take this filter"


def test_every_group_says_why(raw):
    for name, group in raw["groups"].items():
        assert group.get("why"), f"groups.{name}: why does the VMM need these calls?"


def test_every_system_call_name_resolves_on_x86_64(policy, raw):
    names = set(raw["never"]["calls"]) | set(policy.errno)
    for role in policy.roles.values():
        names |= _allowed(role)
    for name in sorted(names):
        assert syscall_number(name) >= 0
    assert syscall_number("execve") == 59  # the table is x86_64's


def test_every_ioctl_name_resolves_from_the_vmm_cffi_module(raw):
    names = {n for g in raw["groups"].values() for n in g.get("ioctls", [])}
    names |= set(raw["never"]["ioctls"])
    kvm_names = {n for n in names if n.startswith(("KVM_", "VHOST_"))}
    assert "KVM_RUN" in kvm_names
    for name in kvm_names:
        assert isinstance(getattr(kvm, name), int), name  # <linux/kvm.h>, <linux/vhost.h>
        assert constant(name) == getattr(kvm, name)
    for name in names - kvm_names:  # FIONBIO, TUNSETIFF...: from the compiler's own module
        assert constant(name) > 0, name


def test_every_constant_in_an_argument_check_resolves(raw):
    for group in raw["groups"].values():
        for entry in group.get("when", []):
            for key in ("set", "clear", "one_of", "ignore"):
                for expr in entry.get(key, []):
                    assert constant(expr) >= 0, expr


def test_no_role_allows_a_forbidden_call(policy):
    for role in policy.roles.values():
        assert not _allowed(role) & FORBIDDEN_CALLS, role.name


def test_no_role_allows_a_forbidden_ioctl(policy):
    for role in policy.roles.values():
        requests = role.ioctl_requests()
        assert all(constant(name) not in requests for name in FORBIDDEN_IOCTLS), role.name


def test_the_policy_never_list_covers_the_forbidden_calls(policy):
    assert policy.never_calls >= FORBIDDEN_CALLS
    assert set(policy.never_ioctls) >= FORBIDDEN_IOCTLS


def test_vcpu_threads_get_kvm_run_and_little_else(policy):
    vcpu = policy.roles["vcpu"]
    assert kvm.KVM_RUN in vcpu.ioctl_requests()
    assert "accept4" not in _allowed(vcpu) and "clone" not in _allowed(vcpu)
    assert kvm.KVM_RUN not in policy.roles["main"].ioctl_requests()
    assert kvm.KVM_RUN not in policy.roles["vhost"].ioctl_requests()


def test_only_main_may_start_threads_and_only_with_clone_thread(policy):
    clone_thread = constant("CLONE_THREAD")
    assert policy.roles["main"].checked["clone"] == (ArgCheck(0, clone_thread, (clone_thread,)),)
    assert not any("clone" in _allowed(policy.roles[r]) for r in ("vcpu", "vhost"))
    assert policy.errno == {"clone3": errno.ENOSYS}  # glibc then falls back to clone


def test_no_role_may_map_executable_memory(policy):
    prot_exec = constant("PROT_EXEC")
    for role in policy.roles.values():
        for call in ("mmap", "mprotect"):
            assert role.checked[call] == (ArgCheck(2, prot_exec, (0,)),), (role.name, call)


def test_each_role_compiles_to_a_bpf_program(policy):
    for role in seccomp.ROLES:
        program = seccomp_build.compile_role(policy, role)
        assert len(program) % 8 == 0 and 0 < len(program) // 8 <= 4096


def test_the_sigsys_handler_names_calls_from_the_kernel_headers():
    assert ffi.string(kvm.vmm_syscall_name(59)) == b"execve"
    assert ffi.string(kvm.vmm_syscall_name(syscall_number("openat"))) == b"openat"
    assert ffi.string(kvm.vmm_syscall_name(100_000)) == b"unknown"


def _policy_with(tmp_path, old: str, new: str):
    text = seccomp_build.POLICY.read_text()
    assert old in text
    path = tmp_path / "policy.toml"
    path.write_text(text.replace(old, new, 1))
    return load_policy(path)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('"brk", ', '"brk", "execve", ', "allows what no role may: execve"),
        ('ioctls = ["FIONBIO"]', 'ioctls = ["FIONBIO", "TUNSETIFF"]', "TUNSETIFF"),
        ('"KVM_RUN", ', '"KVM_RUNN", ', "KVM_RUNN: no such constant"),
        ('"brk", ', '"brkk", ', "brkk: not a system call"),
        ('"brk", ', '"clone3", ', "answered by [errno]"),
        ('why = "any CPython', 'whyy = "any CPython', "unknown key(s) whyy"),
        ('"mmap", arg = 2, clear', '"mmap", arg = 2, one_of = ["PROT_READ"], clear', "one_of"),
        ('"brk", ', '"brk", "mmap", ', "both checked and unchecked"),
    ],
)
def test_the_compiler_refuses_a_wrong_policy(tmp_path, old, new, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        _policy_with(tmp_path, old, new)
