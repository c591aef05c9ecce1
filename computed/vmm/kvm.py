"""Thin, checked access to /dev/kvm and VM file descriptors.

Every ioctl goes through `ioctl()`, which turns a failure into a KvmCallError
naming the call. Capabilities the VMM needs are checked once, up front, so a
host without them is refused with a clear message instead of failing later.
"""

from __future__ import annotations

import os

from computed.vmm._kvm import ffi, lib
from computed.vmm.errors import KvmCallError, KvmUnavailableError

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from typing import Any

KVM_API_VERSION = 12
KVM_DEVICE = os.environ.get("COMPUTED_KVM_DEVICE", "/dev/kvm")  # override for tests

# Capabilities every VM needs, by the name an operator can look up.
REQUIRED_CAPS = {
    "KVM_CAP_USER_MEMORY": lib.KVM_CAP_USER_MEMORY,
    "KVM_CAP_SET_TSS_ADDR": lib.KVM_CAP_SET_TSS_ADDR,
    "KVM_CAP_SET_IDENTITY_MAP_ADDR": lib.KVM_CAP_SET_IDENTITY_MAP_ADDR,
    "KVM_CAP_IRQCHIP": lib.KVM_CAP_IRQCHIP,
    "KVM_CAP_PIT2": lib.KVM_CAP_PIT2,
    "KVM_CAP_EXT_CPUID": lib.KVM_CAP_EXT_CPUID,
    "KVM_CAP_IMMEDIATE_EXIT": lib.KVM_CAP_IMMEDIATE_EXIT,
    "KVM_CAP_MP_STATE": lib.KVM_CAP_MP_STATE,
    "KVM_CAP_VCPU_EVENTS": lib.KVM_CAP_VCPU_EVENTS,
}
_CPUID_MAX_ENTRIES = 256


def ioctl(fd: int, request: int, arg: Any, what: str) -> int:
    """Issue an ioctl with a pointer argument (or NULL); raise KvmCallError on failure."""
    r = lib.vmm_ioctl(fd, request, ffi.NULL if arg is None else arg)
    if r < 0:
        raise KvmCallError(f"{what} failed: {os.strerror(-r)}")
    return r


def ioctl_val(fd: int, request: int, value: int, what: str) -> int:
    """Issue an ioctl with an integer argument; raise KvmCallError on failure."""
    r = lib.vmm_ioctl_val(fd, request, value)
    if r < 0:
        raise KvmCallError(f"{what} failed: {os.strerror(-r)}")
    return r


def new_cpuid(entries: int) -> Any:
    """A zeroed struct kvm_cpuid2 with room for `entries` entries (a flexible array)."""
    size = ffi.sizeof("struct kvm_cpuid2") + entries * ffi.sizeof("struct kvm_cpuid_entry2")
    cpuid = ffi.from_buffer("struct kvm_cpuid2 *", bytearray(size))  # keeps the buffer alive
    cpuid.nent = entries
    return cpuid


class Kvm:
    """The /dev/kvm system handle, checked for API version and capabilities."""

    def __init__(self, device: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmUnavailableError(f"cannot open {device}: {e.strerror}") from None
        version = lib.vmm_ioctl_val(self.fd, lib.KVM_GET_API_VERSION, 0)
        if version != KVM_API_VERSION:
            raise KvmUnavailableError(
                f"{device}: KVM API version {version}, this VMM needs {KVM_API_VERSION}"
            )
        self._supported_cpuid: list[list[int]] | None = None
        self._max_vcpus: int | None = None
        missing = [name for name, cap in REQUIRED_CAPS.items() if self.check(cap) <= 0]
        if missing:
            raise KvmUnavailableError(f"{device}: missing capabilities: {', '.join(missing)}")

    def check(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION: 0 when absent, else a positive value."""
        return max(lib.vmm_ioctl_val(self.fd, lib.KVM_CHECK_EXTENSION, cap), 0)

    def max_vcpus(self) -> int:
        if self._max_vcpus is None:
            self._max_vcpus = (
                self.check(lib.KVM_CAP_MAX_VCPUS) or self.check(lib.KVM_CAP_NR_VCPUS) or 4
            )
        return self._max_vcpus

    def vcpu_mmap_size(self) -> int:
        return ioctl_val(self.fd, lib.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def supported_cpuid(self) -> list[list[int]]:
        """KVM_GET_SUPPORTED_CPUID's entries as [function, index, flags, eax, ebx, ecx,
        edx] lists. Asked once per handle (half a millisecond nested): the warm parent
        asks before it forks, and its VMMs share its handle."""
        if self._supported_cpuid is None:
            cpuid = new_cpuid(_CPUID_MAX_ENTRIES)
            ioctl(self.fd, lib.KVM_GET_SUPPORTED_CPUID, cpuid, "KVM_GET_SUPPORTED_CPUID")
            self._supported_cpuid = [
                [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx]
                for e in (cpuid.entries[i] for i in range(cpuid.nent))
            ]
        return self._supported_cpuid

    def create_vm(self) -> int:
        return ioctl_val(self.fd, lib.KVM_CREATE_VM, 0, "KVM_CREATE_VM")

    def close(self) -> None:
        os.close(self.fd)
