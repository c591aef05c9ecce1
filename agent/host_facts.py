"""What this host's KVM is, for GetHostInfo and the host record."""

from __future__ import annotations

import dataclasses
import os

from computed.vmm.errors import KvmUnavailableError
from computed.vmm.kvm import Kvm

_VENDOR_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm")
# Hosts where guest kernel mode is emulated rather than run natively.
_EMULATED_KERNEL_MODULES = frozenset({"kvm_pvm"})


@dataclasses.dataclass(frozen=True)
class KvmFacts:
    api_version: int
    vendor_module: str
    vhost: str  # "kernel" or "userspace"
    guest_kernel_emulated: bool


def detect_kvm_facts(sys_module: str = "/sys/module", dev: str = "/dev") -> KvmFacts:
    try:
        kvm = Kvm()
        api_version = 12
        kvm.close()
    except KvmUnavailableError:
        api_version = 0
    vendor = next((m for m in _VENDOR_MODULES if os.path.isdir(os.path.join(sys_module, m))), "")
    vhost = "kernel" if os.path.exists(os.path.join(dev, "vhost-net")) else "userspace"
    return KvmFacts(api_version, vendor, vhost, vendor in _EMULATED_KERNEL_MODULES)
