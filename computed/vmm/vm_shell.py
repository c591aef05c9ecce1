"""The part of a VM that does not depend on its configuration, made ahead of time.

Creating a VM's kernel objects is most of a warm launch's cost on these hosts:
KVM_SET_USER_MEMORY_REGION waits for an SRCU grace period (5-9 ms nested under
kvm_pvm, whatever the size) and KVM_CREATE_PIT2 starts the kvm-pit kernel thread
(3-4 ms). None of it depends on anything but the RAM size, so a standby VMM
(computed/vmm/standby.py) makes a shell while it waits for an instance, and the
instance's Machine is built around it. A Machine started without a shell (exec'd
VMMs, a size the standby did not guess) makes its own: the result is identical.

The shell belongs to the process that made it (a KVM VM belongs to the mm that
created it): it is never made before a fork and used after one.
"""

from __future__ import annotations

import os
from typing import Any

from computed.vmm._kvm import ffi, lib
from computed.vmm.kvm import Kvm, ioctl, ioctl_val
from computed.vmm.memory import GuestMemory

# Addresses KVM needs for its real-mode helpers on Intel; outside guest RAM.
TSS_ADDR = 0xFFFBD000
IDENTITY_MAP_ADDR = 0xFFFBC000


class VmShell:
    """A VM fd with its RAM mapped, the in-kernel irqchip and the PIT (and its kvm-pit
    thread): everything of a VM that only the RAM size decides."""

    def __init__(self, kvm: Kvm, memory_bytes: int) -> None:
        self.vm_fd = kvm.create_vm()
        self.memory = GuestMemory(memory_bytes)
        for region in self.memory.regions:
            _map_region(self.vm_fd, region)
        ioctl_val(self.vm_fd, lib.KVM_SET_TSS_ADDR, TSS_ADDR, "KVM_SET_TSS_ADDR")
        ioctl(
            self.vm_fd,
            lib.KVM_SET_IDENTITY_MAP_ADDR,
            ffi.new("uint64_t *", IDENTITY_MAP_ADDR),
            "KVM_SET_IDENTITY_MAP_ADDR",
        )
        ioctl(self.vm_fd, lib.KVM_CREATE_IRQCHIP, None, "KVM_CREATE_IRQCHIP")
        # Creating the PIT starts the kernel's kvm-pit/<pid> worker thread.
        pit = ffi.new("struct kvm_pit_config *", {"flags": lib.KVM_PIT_SPEAKER_DUMMY})
        ioctl(self.vm_fd, lib.KVM_CREATE_PIT2, pit, "KVM_CREATE_PIT2")

    def fits(self, memory_bytes: int) -> bool:
        return self.memory.size == memory_bytes

    def close(self) -> None:
        """Destroy the VM (and its kvm-pit thread) and unmap its RAM: a shell of the wrong
        size must not linger beside the instance's own, with a second kvm-pit/<pid>."""
        os.close(self.vm_fd)
        for region in self.memory.regions:
            region.host.close()


def _map_region(vm_fd: int, region: Any) -> None:
    host = ffi.from_buffer(region.host)
    mr = ffi.new(
        "struct kvm_userspace_memory_region *",
        {
            "slot": region.slot,
            "guest_phys_addr": region.gpa,
            "memory_size": region.size,
            "userspace_addr": int(ffi.cast("uintptr_t", host)),
        },
    )
    ioctl(vm_fd, lib.KVM_SET_USER_MEMORY_REGION, mr, "KVM_SET_USER_MEMORY_REGION")
