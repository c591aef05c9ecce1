"""The part of a VM that its instance does not decide, made ahead of time.

Creating a VM's kernel objects is most of a warm launch's cost on these hosts:
KVM_SET_USER_MEMORY_REGION waits for an SRCU grace period (5-9 ms nested under
kvm_pvm, whatever the size), KVM_CREATE_PIT2 starts the kvm-pit kernel thread
(3-4 ms), and the vCPUs with their CPUID table are another millisecond of
ioctls and table-building. None of it depends on more than the VM's shape (RAM,
-smp, -cpu), so a standby VMM (computed/vmm/standby.py, prepared.py) makes a
shell for the shape the last requests had while it waits for an instance, and the
instance's Machine is built around it. A Machine started without a shell (exec'd
VMMs, a shape the standby did not guess) makes its own: the result is identical.

The shell belongs to the process that made it (a KVM VM belongs to the mm that
created it): it is never made before a fork and used after one.
"""

from __future__ import annotations

import os

from computed.procfs import find_kernel_thread, last_pid
from computed.vmm._kvm import ffi, lib
from computed.vmm.cpu_model import CpuModel, SmpTopology, cpuid_for_vcpu, guest_cpuid
from computed.vmm.errors import UsageError
from computed.vmm.kvm import Kvm, ioctl, ioctl_val, new_cpuid
from computed.vmm.memory import GuestMemory

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from typing import Any

    from computed.vmm.config import VmConfig

# Addresses KVM needs for its real-mode helpers on Intel; outside guest RAM.
TSS_ADDR = 0xFFFBD000
IDENTITY_MAP_ADDR = 0xFFFBC000
IRQCHIPS = (lib.KVM_IRQCHIP_PIC_MASTER, lib.KVM_IRQCHIP_PIC_SLAVE, lib.KVM_IRQCHIP_IOAPIC)


class VmShell:
    """A VM fd with its RAM mapped, the in-kernel irqchip and the PIT (and its kvm-pit
    thread), their state as created (for system_reset), and, once `make_vcpus` ran, the
    vCPUs with their CPUID table set (their kvm_run areas are mapped by the Machine, so
    the shell holds nothing but fds, which a standby renumbers at hand-over)."""

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
        # Creating the PIT starts the kernel's kvm-pit/<pid> worker thread: its pid is
        # looked up now, among the threads made since (query-vm names it; a confined
        # VMM's jail has no /proc to look later).
        pit = ffi.new("struct kvm_pit_config *", {"flags": lib.KVM_PIT_SPEAKER_DUMMY})
        before = last_pid()
        ioctl(self.vm_fd, lib.KVM_CREATE_PIT2, pit, "KVM_CREATE_PIT2")
        self.pit_thread = find_kernel_thread(f"kvm-pit/{os.getpid()}", made_after=before)
        self.initial_irqchips = [self._get_irqchip(chip) for chip in IRQCHIPS]
        self.initial_pit = ffi.new("struct kvm_pit_state2 *")
        ioctl(self.vm_fd, lib.KVM_GET_PIT2, self.initial_pit, "KVM_GET_PIT2")
        # Set by make_vcpus: what they were made for, and what they are.
        self.topology: SmpTopology | None = None
        self.cpu: CpuModel | None = None
        self.vcpu_fds: list[int] = []
        self.cpuid_missing: list[str] = []  # features -cpu asked for that the host lacks
        self.tsc_khz = 0

    def _get_irqchip(self, chip_id: int) -> Any:
        chip = ffi.new("struct kvm_irqchip *", {"chip_id": chip_id})
        ioctl(self.vm_fd, lib.KVM_GET_IRQCHIP, chip, "KVM_GET_IRQCHIP")
        return chip

    def make_vcpus(self, kvm: Kvm, topology: SmpTopology, cpu: CpuModel) -> None:
        """Create the vCPUs of `topology` (KVM's vCPU id is the APIC ID, as in qemu, so
        the LAPIC and CPUID agree) and give each the CPUID table of `cpu` with its own
        IDs patched in. Once only: KVM cannot take a vCPU back out of a VM."""
        assert not self.vcpu_fds, "the vCPUs are made once"
        if topology.cpus > kvm.max_vcpus():
            raise UsageError(f"-smp {topology.cpus}: this host allows {kvm.max_vcpus()} vCPUs")
        table, self.cpuid_missing = guest_cpuid(kvm.supported_cpuid(), cpu, topology)
        self.topology, self.cpu = topology, cpu
        for index in range(topology.cpus):
            apic_id = topology.apic_id(index)
            fd = ioctl_val(self.vm_fd, lib.KVM_CREATE_VCPU, apic_id, "KVM_CREATE_VCPU")
            self.vcpu_fds.append(fd)
            _set_cpuid(fd, cpuid_for_vcpu(table, topology, index))
        self.tsc_khz = max(lib.vmm_ioctl_val(self.vcpu_fds[0], lib.KVM_GET_TSC_KHZ, 0), 0)

    def fits(self, config: VmConfig) -> bool:
        """Whether this shell can be `config`'s VM: the same RAM, and vCPUs not yet made
        or made for the same -smp and -cpu."""
        if self.memory.size != config.memory_bytes:
            return False
        return not self.vcpu_fds or (self.topology == config.topology and self.cpu == config.cpu)

    def fds(self) -> list[int]:
        return [self.vm_fd, *self.vcpu_fds]

    def renumber(self, renumbered: Any) -> None:
        """Give every fd a new number: `renumbered(fd)` → the new one (the old is closed)."""
        self.vm_fd = renumbered(self.vm_fd)
        self.vcpu_fds = [renumbered(fd) for fd in self.vcpu_fds]

    def close(self) -> None:
        """Destroy the VM (its vCPUs and its kvm-pit thread) and unmap its RAM: a shell
        of the wrong shape must not linger beside the instance's own, with a second
        kvm-pit/<pid>."""
        for fd in self.vcpu_fds:
            os.close(fd)
        os.close(self.vm_fd)
        for region in self.memory.regions:
            region.host.close()


def _set_cpuid(fd: int, entries: list[list[int]]) -> None:
    cpuid = new_cpuid(len(entries))
    for i, values in enumerate(entries):
        e = cpuid.entries[i]
        e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx = values
    ioctl(fd, lib.KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2")


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
