"""One vCPU: its KVM file descriptor, boot state, and the run loop on its own thread.

The loop is the only place that calls KVM_RUN (the GIL is released for the
call: cffi drops it around C calls). Each exit is turned into a bus access or
a lifecycle event; the loop knows no device. The host interrupts a running
vCPU the way QEMU and Firecracker do: set `immediate_exit`, then signal the
thread, so KVM_RUN returns EINTR whether the vCPU is in the guest or about
to enter it.
"""

from __future__ import annotations

import errno
import mmap
import signal
import threading
from collections import Counter

from computed.vmm import seccomp
from computed.vmm._kvm import ffi, lib
from computed.vmm.boot import BOOT_CR0, BOOT_CR4, BOOT_EFER, GDT_ENTRIES, VcpuBoot
from computed.vmm.bus import Bus
from computed.vmm.kvm import ioctl

KICK_SIGNAL = signal.SIGUSR1
_HOST_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}

X86_EFLAGS_FIXED = 0x2  # <asm/processor-flags.h>: RFLAGS bit 1 always reads as set
# The FPU as FNINIT and a CPU reset leave it (the kernel's MXCSR_DEFAULT for SSE).
FCW_DEFAULT = 0x37F  # x87 exceptions masked, 64-bit precision, round to nearest
MXCSR_DEFAULT = 0x1F80  # SSE exceptions masked, round to nearest
GDT_DESCRIPTOR_BYTES = 8
# Flat segments: base 0, limit 4 GiB (page granular), type code execute/read or
# data read/write, accessed.
_SEGMENT_LIMIT = 0xFFFFFFFF
_SEGMENT_TYPE_CODE, _SEGMENT_TYPE_DATA = 0xB, 0x3


TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from typing import Any, Protocol

    class VcpuHost(Protocol):
        """What a vCPU needs from its machine."""

        pio: Bus
        mmio: Bus
        exits: Counter[str]

        def park_if_held(self, vcpu: Vcpu) -> bool: ...

        def guest_crashed(self, reason: str) -> None: ...

        def guest_reset(self) -> None: ...

        def guest_power_off(self) -> None: ...


class Vcpu:
    """A vCPU the VM shell made (vm_shell.VmShell.make_vcpus: fd, APIC ID, CPUID), run
    for `host`."""

    def __init__(self, fd: int, index: int, apic_id: int, mmap_size: int, host: VcpuHost) -> None:
        self.index = index
        self.host = host
        self.apic_id = apic_id
        self.fd = fd
        self._run_map = mmap.mmap(self.fd, mmap_size, mmap.MAP_SHARED)
        self.run = ffi.cast("struct kvm_run *", ffi.from_buffer(self._run_map))
        self._run_base = ffi.cast("char *", self.run)
        self.thread: threading.Thread | None = None
        self.thread_id = 0  # host TID, for query-cpus and the agent's stats
        self._lapic0: Any = None
        self._events0: Any = None

    # --- set-up -------------------------------------------------------
    def capture_reset_state(self) -> None:
        """Remember the LAPIC and event state KVM gave us, for system_reset."""
        self._lapic0 = ffi.new("struct kvm_lapic_state *")
        ioctl(self.fd, lib.KVM_GET_LAPIC, self._lapic0, "KVM_GET_LAPIC")
        self._events0 = ffi.new("struct kvm_vcpu_events *")
        ioctl(self.fd, lib.KVM_GET_VCPU_EVENTS, self._events0, "KVM_GET_VCPU_EVENTS")

    def load_boot_state(self, boot: VcpuBoot) -> None:
        """64-bit long mode at the image's entry point, as the guest ABI promises."""
        if self._lapic0 is not None:
            ioctl(self.fd, lib.KVM_SET_LAPIC, self._lapic0, "KVM_SET_LAPIC")
            ioctl(self.fd, lib.KVM_SET_VCPU_EVENTS, self._events0, "KVM_SET_VCPU_EVENTS")
        sregs = ffi.new("struct kvm_sregs *")
        ioctl(self.fd, lib.KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        _flat_segment(sregs.cs, lib.COMPUTED_SEL_KCODE, code=True)
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            _flat_segment(seg, lib.COMPUTED_SEL_KDATA, code=False)
        sregs.gdt.base = lib.COMPUTED_GDT_GPA
        sregs.gdt.limit = len(GDT_ENTRIES) * GDT_DESCRIPTOR_BYTES - 1
        sregs.idt.base = 0
        sregs.idt.limit = 0
        sregs.cr0, sregs.cr2, sregs.cr3 = BOOT_CR0, 0, lib.COMPUTED_PML4_GPA
        sregs.cr4, sregs.cr8, sregs.efer = BOOT_CR4, 0, BOOT_EFER
        ioctl(self.fd, lib.KVM_SET_SREGS, sregs, "KVM_SET_SREGS")

        regs = ffi.new("struct kvm_regs *")
        regs.rip, regs.rdi, regs.rsp = boot.rip, boot.rdi, boot.rsp
        regs.rflags = X86_EFLAGS_FIXED
        ioctl(self.fd, lib.KVM_SET_REGS, regs, "KVM_SET_REGS")

        fpu = ffi.new("struct kvm_fpu *")
        fpu.fcw, fpu.mxcsr = FCW_DEFAULT, MXCSR_DEFAULT
        ioctl(self.fd, lib.KVM_SET_FPU, fpu, "KVM_SET_FPU")

        # Every vCPU starts running at once; no INIT/SIPI dance for the APs.
        mp = ffi.new("struct kvm_mp_state *", {"mp_state": lib.KVM_MP_STATE_RUNNABLE})
        ioctl(self.fd, lib.KVM_SET_MP_STATE, mp, "KVM_SET_MP_STATE")

    def rip(self) -> int:
        regs = ffi.new("struct kvm_regs *")
        if lib.vmm_ioctl(self.fd, lib.KVM_GET_REGS, regs) < 0:
            return 0
        return int(regs.rip)

    # --- running --------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._thread_main, name=f"CPU {self.index}/KVM", daemon=True
        )
        self.thread.start()

    def kick(self) -> None:
        """Make KVM_RUN return to the loop promptly, wherever the thread is."""
        self.run.immediate_exit = 1
        if self.thread is not None and self.thread.ident is not None and self.thread.is_alive():
            try:
                signal.pthread_kill(self.thread.ident, KICK_SIGNAL)
            except ProcessLookupError:
                pass

    def _thread_main(self) -> None:
        # Host signals belong to the main thread; this one only takes kicks.
        signal.pthread_sigmask(signal.SIG_BLOCK, _HOST_SIGNALS)
        lib.vmm_set_thread_name(f"CPU {self.index}/KVM".encode())
        self.thread_id = threading.get_native_id()
        try:
            seccomp.confine("vcpu")  # after naming: prctl is not in the vcpu role
            self._loop()
        except Exception as e:  # a VMM bug must end the VM visibly, not hang it
            self.host.guest_crashed(f"vCPU {self.index} thread failed: {e!r}")

    def _loop(self) -> None:
        host, run, exits = self.host, self.run, self.host.exits
        while host.park_if_held(self):
            r = lib.vmm_ioctl_val(self.fd, lib.KVM_RUN, 0)
            if r < 0:
                if r in (-errno.EINTR, -errno.EAGAIN):
                    run.immediate_exit = 0
                    exits["intr"] += 1
                    continue
                host.guest_crashed(f"KVM_RUN failed on vCPU {self.index}: errno {-r}")
                return
            reason = run.exit_reason
            if reason == lib.KVM_EXIT_IO:
                exits["io"] += 1
                self._io(run.io)
            elif reason == lib.KVM_EXIT_MMIO:
                exits["mmio"] += 1
                self._mmio(run.mmio)
            elif reason == lib.KVM_EXIT_HLT:
                exits["hlt"] += 1
            elif reason == lib.KVM_EXIT_INTR:
                run.immediate_exit = 0
                exits["intr"] += 1
            elif not self._fatal_exit(reason):
                return

    def _io(self, io: Any) -> None:
        size, count, port = io.size, io.count, io.port
        data = ffi.buffer(self._run_base + io.data_offset, size * count)
        bus = self.host.pio
        if io.direction == lib.KVM_EXIT_IO_OUT:
            for i in range(0, size * count, size):
                bus.write(port, data[i : i + size])
        else:
            for i in range(0, size * count, size):
                data[i : i + size] = bus.read(port, size)

    def _mmio(self, mmio: Any) -> None:
        length = min(mmio.len, len(mmio.data))  # the kernel's bound: data[8]
        if mmio.is_write:
            self.host.mmio.write(mmio.phys_addr, bytes(ffi.buffer(mmio.data, length)))
        else:
            ffi.memmove(mmio.data, self.host.mmio.read(mmio.phys_addr, length), length)

    def _fatal_exit(self, reason: int) -> bool:
        """Exits that end or reset the guest. Returns True if the loop may go on."""
        exits, host, run = self.host.exits, self.host, self.run
        where = f"vCPU {self.index} at rip={self.rip():#x}"
        if reason == lib.KVM_EXIT_SHUTDOWN:
            exits["shutdown"] += 1
            host.guest_crashed(f"triple fault (KVM_EXIT_SHUTDOWN) on {where}")
        elif reason == lib.KVM_EXIT_INTERNAL_ERROR:
            exits["internal_error"] += 1
            kind = (
                "emulation failure"
                if run.internal.suberror == lib.KVM_INTERNAL_ERROR_EMULATION
                else f"suberror {run.internal.suberror}"
            )
            host.guest_crashed(f"KVM internal error ({kind}) on {where}")
        elif reason == lib.KVM_EXIT_FAIL_ENTRY:
            exits["fail_entry"] += 1
            code = run.fail_entry.hardware_entry_failure_reason
            host.guest_crashed(f"VM entry failed (hardware reason {code:#x}) on {where}")
        elif reason == lib.KVM_EXIT_SYSTEM_EVENT:
            exits["system_event"] += 1
            kind = run.system_event.type
            if kind == lib.KVM_SYSTEM_EVENT_RESET:
                host.guest_reset()
                return True
            if kind == lib.KVM_SYSTEM_EVENT_SHUTDOWN:
                host.guest_power_off()
            else:
                host.guest_crashed(f"guest crash event {kind} on {where}")
        else:
            exits["unknown"] += 1
            host.guest_crashed(f"unexpected KVM exit reason {reason} on {where}")
        return False


def _flat_segment(seg: Any, selector: int, code: bool) -> None:
    seg.base, seg.limit, seg.selector = 0, _SEGMENT_LIMIT, selector
    seg.type = _SEGMENT_TYPE_CODE if code else _SEGMENT_TYPE_DATA
    seg.present, seg.dpl, seg.s, seg.g, seg.avl, seg.unusable = 1, 0, 1, 1, 0, 0
    seg.l, seg.db = (1, 0) if code else (0, 1)
