"""A KVM virtual machine: RAM, in-kernel irqchip and PIT, devices, vCPUs, lifecycle.

Threads: one per vCPU plus the main thread (control socket and signals). The
vCPU threads only run the guest; everything that stops or rewinds them (pause,
reset, exit) is driven from the main thread by *holding* the vCPUs: set the
hold flag, kick every vCPU out of KVM_RUN, wait until all are parked.
Guest-initiated lifecycle events (power off, reset, crash) are recorded here
and announced to the main thread through `wakeup_fd`. Every change of run
state is reported as a QMP event (`qmp_events`) to `on_event`, always from the
main thread: the control server registers itself there.

Run states, in qemu's words (query-status): `prelaunch` (started with -S, or
reset while not running), `running`, `paused` (`stop`), `shutdown` (the guest
powered off under -no-shutdown: the vCPUs are held until `system_reset` or the
end). Without -no-shutdown a guest power-off ends the machine.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

from computed.vmm import boot, qmp_events
from computed.vmm._kvm import ffi, lib
from computed.vmm.bus import Bus
from computed.vmm.config import NicConfig, VmConfig
from computed.vmm.devices.console import ConsoleSink
from computed.vmm.devices.console_port import ConsoleWritePort
from computed.vmm.devices.platform import I8042, DebugExitPort, EventPort, PowerOffPort
from computed.vmm.devices.serial import PORT_COUNT as UART_PORTS
from computed.vmm.devices.serial import Uart16550
from computed.vmm.devices.virtio_mmio import VirtioMmio
from computed.vmm.devices.virtio_net import VirtioNet
from computed.vmm.elf import GuestImage, load_image
from computed.vmm.errors import ExitCode, UsageError
from computed.vmm.kvm import Kvm, ioctl
from computed.vmm.log import RateLimitedLog, emit
from computed.vmm.vcpu import KICK_SIGNAL, Vcpu
from computed.vmm.vm_shell import VmShell

TYPE_CHECKING = False  # not `typing`: the VMM pays every import at each launch
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_PARK_TIMEOUT = 5.0


class ExitCause:
    """Why the machine stopped: exit code, words for the log, and qemu's ShutdownCause."""

    __slots__ = ("code", "reason", "shutdown_cause")

    def __init__(
        self, code: ExitCode, reason: str, shutdown_cause: str = qmp_events.HOST_ERROR
    ) -> None:
        self.code, self.reason, self.shutdown_cause = code, reason, shutdown_cause


class Machine:
    def __init__(
        self, config: VmConfig, image: GuestImage, kvm: Kvm, shell: VmShell | None = None
    ) -> None:
        self.config = config
        self.image = image
        self.kvm = kvm
        self.status = "prelaunch"  # prelaunch | running | paused | shutdown
        self.exits: Counter[str] = Counter()
        self.resets = 0
        self.started_at = time.time()
        self.exit_cause: ExitCause | None = None
        self.log = RateLimitedLog(f"computed-vmm[{config.name}]")
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._cond = threading.Condition()
        self._hold = True  # vCPUs start held; `start()` releases them
        self._parked = 0
        self.reset_requested = False
        self.power_off_requested = False  # -no-shutdown: the guest powered off; park it
        # Whether a guest power-off ends the VMM: always, except under -no-shutdown until
        # the host asks for an end (a stop signal), as qemu lets a signal override it.
        self.exit_on_power_off = not config.no_shutdown
        self.on_event: Callable[[str, dict[str, Any] | None], None] | None = None
        self._shutdown_announced = False

        if shell is not None and not shell.fits(config):
            shell.close()  # a standby's guess at the shape was wrong
            shell = None
        if shell is None:
            shell = VmShell(kvm, config.memory_bytes)
        if not shell.vcpu_fds:
            shell.make_vcpus(kvm, config.topology, config.cpu)
        self._check_cpuid(shell.cpuid_missing)
        self.vm_fd = shell.vm_fd
        self.memory = shell.memory
        if not config.pit_reinjection:
            ctl = ffi.new("struct kvm_reinject_control *", {"pit_reinject": 0})
            ioctl(self.vm_fd, lib.KVM_REINJECT_CONTROL, ctl, "KVM_REINJECT_CONTROL")
        self.pit_thread = shell.pit_thread
        if self.pit_thread is None:
            emit(f"computed-vmm: kernel thread kvm-pit/{os.getpid()} not found")
        self._paused_pit: Any = None

        self.console = ConsoleSink(config.serial)
        self.events = EventPort()
        self.pio = Bus("port", self.log)
        self.mmio = Bus("mmio", self.log)
        self._attach_devices()

        mmap_size = kvm.vcpu_mmap_size()
        self.vcpus = [
            Vcpu(fd, i, config.topology.apic_id(i), mmap_size, self)
            for i, fd in enumerate(shell.vcpu_fds)
        ]
        self.tsc_khz = shell.tsc_khz
        self._initial_irqchips = shell.initial_irqchips
        self._initial_pit = shell.initial_pit
        for vcpu in self.vcpus:
            vcpu.capture_reset_state()
        self._load_guest()

    # --- set-up -------------------------------------------------------
    def _check_cpuid(self, missing: list[str]) -> None:
        """The -cpu features the host lacks were left out of the CPUID table: say so
        (qemu's `check`), or refuse to start (`enforce`)."""
        cpu = self.config.cpu
        if missing and cpu.enforce:
            raise UsageError(f"-cpu {cpu.name},enforce: the host lacks {', '.join(missing)}")
        if missing and cpu.check:
            emit(f"computed-vmm[{self.config.name}]: warning: -cpu {cpu.name}: the host "
                 f"lacks {', '.join(missing)}: left out")  # fmt: skip

    def _attach_devices(self) -> None:
        self.pio.insert(lib.COMPUTED_PORT_COM1, UART_PORTS, Uart16550(self.console))
        self.pio.insert(lib.COMPUTED_PORT_POWEROFF, 4, PowerOffPort(self))
        self.pio.insert(lib.COMPUTED_PORT_DEBUG_EXIT, 4, DebugExitPort(self))
        self.pio.insert(lib.COMPUTED_PORT_EVENTS, 4, self.events)
        self.console_port = ConsoleWritePort(self.memory, self.console)
        self.pio.insert(lib.COMPUTED_PORT_CONSOLE, 4, self.console_port)
        self.pio.insert(I8042.BASE, I8042.PORTS, I8042(self))
        self.nics: list[VirtioNet] = []
        self.nic_transports: list[VirtioMmio] = []
        try:
            for i, nic in enumerate(self.config.nics):
                self._attach_nic(i, nic)
        except BaseException:
            self.close_nics()
            raise

    def _attach_nic(self, index: int, nic: NicConfig) -> None:
        net = VirtioNet(
            nic.ifname or "", nic.mac, nic.vhost, nic.vhost_device, self.memory, self.log.warn,
            tap=nic.tap_fd, vhost_fd=nic.vhost_fd,
        )  # fmt: skip
        self.nics.append(net)
        irq = lib.COMPUTED_IRQ_NIC0 + index
        signal = net.signal_guest if nic.vhost else lambda: self.irq_pulse(irq)
        transport = VirtioMmio(net, self.memory, 2, signal, self.log.warn)
        self.nic_transports.append(transport)
        gpa = boot.nic_mmio_gpa(index)
        self.mmio.insert(gpa, lib.COMPUTED_VIRTIO_MMIO_STRIDE, transport)
        net.attach(self.vm_fd, transport, gpa, irq)

    def close_nics(self) -> None:
        for net in self.nics:
            net.close()
        self.nics = []

    def _load_guest(self) -> None:
        """Image, boot structures and boot register state: at start and on reset."""
        load_image(self.image, self.memory, lib.COMPUTED_IMAGE_MIN_GPA)
        starts = boot.write_boot_structures(
            self.config, self.memory, self.image.entry, self.tsc_khz
        )
        for vcpu, start in zip(self.vcpus, starts, strict=True):
            vcpu.load_boot_state(start)

    # --- in-kernel irqchip and PIT state ------------------------------------
    def _get_pit(self) -> Any:
        state = ffi.new("struct kvm_pit_state2 *")
        ioctl(self.vm_fd, lib.KVM_GET_PIT2, state, "KVM_GET_PIT2")
        return state

    def _set_pit(self, state: Any) -> None:
        ioctl(self.vm_fd, lib.KVM_SET_PIT2, state, "KVM_SET_PIT2")

    def irq_pulse(self, irq: int) -> None:
        """An edge on an ISA interrupt line of the in-kernel PIC/IOAPIC."""
        for level in (1, 0):
            line = ffi.new("struct kvm_irq_level *", {"irq": irq, "level": level})
            ioctl(self.vm_fd, lib.KVM_IRQ_LINE, line, "KVM_IRQ_LINE")

    # --- vCPU hold protocol -------------------------------------------------
    def park_if_held(self, vcpu: Vcpu) -> bool:
        """Called by a vCPU before each KVM_RUN: wait while held. False = exit the loop."""
        if not self._hold:
            return self.exit_cause is None
        with self._cond:
            self._parked += 1
            self._cond.notify_all()
            while self._hold and self.exit_cause is None:
                self._cond.wait()
            self._parked -= 1
        return self.exit_cause is None

    def _hold_vcpus(self) -> None:
        with self._cond:
            self._hold = True
        for vcpu in self.vcpus:
            vcpu.kick()
        deadline = time.monotonic() + _PARK_TIMEOUT
        with self._cond:
            while self._parked < len(self.vcpus) and self.exit_cause is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.log.warn(
                        f"{len(self.vcpus) - self._parked} of {len(self.vcpus)} vCPUs did not "
                        f"stop within {_PARK_TIMEOUT:g}s; going on without them"
                    )
                    break
                self._cond.wait(left)

    def _release_vcpus(self) -> None:
        with self._cond:
            self._hold = False
            self._cond.notify_all()

    # --- lifecycle, host side (main thread) ---------------------------------
    def start(self) -> None:
        """Start every thread; the vCPUs run at once, or stay held (`prelaunch`) with -S."""
        lib.vmm_install_kick_handler(KICK_SIGNAL)
        for net in self.nics:
            net.start()
        for vcpu in self.vcpus:
            vcpu.start()
        if not self.config.start_paused:
            self.status = "running"
            self._release_vcpus()

    def pause(self) -> None:
        if self.status != "running":
            return  # qemu's `stop` outside `running` changes nothing
        self._hold_vcpus()
        self._quiet_pit()
        self.status = "paused"
        self._event(qmp_events.STOP)

    def _quiet_pit(self) -> None:
        """Stop the PIT too, so a held guest gets no backlog of ticks and the kvm-pit
        worker sleeps: park channel 0 in one-shot mode until resume."""
        self._paused_pit = self._get_pit()
        quiet = self._get_pit()
        quiet.channels[0].mode = 0
        quiet.channels[0].count = 0
        self._set_pit(quiet)

    def resume(self) -> None:
        """`cont`, from `paused` or `prelaunch`; a powered-off guest needs a reset first."""
        if self.status not in ("paused", "prelaunch"):
            return
        if self._paused_pit is not None:
            self._set_pit(self._paused_pit)  # reloads the counters from now
            self._paused_pit = None
        self.status = "running"
        self._release_vcpus()
        self._event(qmp_events.RESUME)

    def reset(self) -> None:
        """Reboot in place: same process, same threads, RAM and devices from scratch.

        A held machine stays held: `paused` stays paused, `prelaunch` stays prelaunch,
        and a powered-off one (`shutdown`, -no-shutdown) becomes `prelaunch`, as in qemu,
        for `cont` to boot it again."""
        if self.exit_cause is not None:
            return  # ending: nothing to reboot
        by_guest = self.reset_requested
        was = self.status
        self._hold_vcpus()
        self.reset_requested = self.power_off_requested = False
        # NICs first: their workers (ours or the kernel's vhost-net) run while the
        # vCPUs are held, and must not write into the cleared RAM or raise an
        # interrupt into the restored irqchip.
        for transport in self.nic_transports:
            transport.reset()
        self.memory.clear()
        for chip in self._initial_irqchips:
            ioctl(self.vm_fd, lib.KVM_SET_IRQCHIP, chip, "KVM_SET_IRQCHIP")
        self._set_pit(self._initial_pit)
        self.events.clear()
        self._load_guest()
        self.resets += 1
        self._paused_pit = None
        self.status = "prelaunch" if was == "shutdown" else was
        if self.status == "running":
            self._release_vcpus()
        cause = qmp_events.GUEST_RESET if by_guest else qmp_events.HOST_QMP_SYSTEM_RESET
        self._event(qmp_events.RESET, qmp_events.cause_data(cause))

    def press_power_button(self) -> None:
        self.events.raise_event(lib.COMPUTED_EVENT_POWER_BUTTON)
        self.irq_pulse(lib.COMPUTED_IRQ_EVENTS)
        self._event(qmp_events.POWERDOWN)

    def stop_by_host(self, reason: str, cause: str = qmp_events.HOST_SIGNAL) -> None:
        """`cause`: qemu's ShutdownCause; the other host stop is a signal's grace period.
        A guest that had powered off (-no-shutdown) ends as powered off: the host only
        ended the process it was parked in."""
        if self.status == "shutdown":
            self._finish(ExitCause(ExitCode.POWERED_OFF, "guest powered off", cause))
        else:
            self._finish(ExitCause(ExitCode.STOPPED_BY_HOST, reason, cause))

    def park_powered_off(self) -> None:
        """-no-shutdown: the guest powered off; hold it in `shutdown` as qemu stops the
        VM (SHUTDOWN, then STOP). `system_reset` then `cont` boot it again; `quit` or a
        signal end the VMM."""
        self.power_off_requested = False
        if self.exit_cause is not None or self.status == "shutdown":
            return
        self._hold_vcpus()
        if self.status == "running":
            self._quiet_pit()
        self.status = "shutdown"
        self._event(qmp_events.SHUTDOWN, qmp_events.cause_data(_GUEST_OFF))
        self._event(qmp_events.STOP)

    def shutdown(self) -> None:
        """Stop and join every vCPU thread (after an exit cause is set)."""
        with self._cond:
            self._cond.notify_all()
        for vcpu in self.vcpus:
            vcpu.kick()
        for vcpu in self.vcpus:
            if vcpu.thread is not None:
                vcpu.thread.join(timeout=_PARK_TIMEOUT)
        self.status = "shutdown"
        if not self._shutdown_announced:
            self._shutdown_announced = True
            cause = self.exit_cause.shutdown_cause if self.exit_cause else qmp_events.HOST_ERROR
            self._event(qmp_events.SHUTDOWN, qmp_events.cause_data(cause))
        self.close_nics()
        self.console.close()

    # --- lifecycle, guest side (vCPU threads) -------------------------------
    def guest_power_off(self) -> None:
        if self.exit_on_power_off:
            self._finish(ExitCause(ExitCode.POWERED_OFF, "guest powered off", _GUEST_OFF))
            return
        self._hand_to_main("power_off_requested")  # -no-shutdown: park the machine

    def guest_debug_exit(self, code: int) -> None:
        if code == 0:
            self._finish(ExitCause(ExitCode.POWERED_OFF, "guest exited with code 0", _GUEST_OFF))
        else:
            reason = f"guest exited with code {code}"
            self._finish(ExitCause(ExitCode.GUEST_FAILED, reason, _GUEST_OFF))

    def guest_crashed(self, reason: str) -> None:
        reason = f"guest crashed: {reason}"
        self._finish(ExitCause(ExitCode.GUEST_CRASHED, reason, qmp_events.GUEST_PANIC))

    def guest_reset(self) -> None:
        self._hand_to_main("reset_requested")

    def _hand_to_main(self, request: str) -> None:
        """Hold the vCPUs and let the main thread act on `request` (it owns the hold)."""
        with self._cond:
            setattr(self, request, True)
            self._hold = True
        for vcpu in self.vcpus:
            vcpu.kick()
        self._wake_main()

    def _finish(self, cause: ExitCause) -> None:
        with self._cond:
            if self.exit_cause is not None:
                return  # the first cause wins
            self.exit_cause = cause
            self._cond.notify_all()
        if cause.code != ExitCode.POWERED_OFF:
            self.console.line(cause.reason)
        for vcpu in self.vcpus:
            vcpu.kick()
        self._wake_main()

    def _event(self, name: str, data: dict[str, Any] | None = None) -> None:
        if self.on_event is not None:
            self.on_event(name, data)

    def _wake_main(self) -> None:
        try:
            os.write(self.wakeup_w, b"!")
        except BlockingIOError:
            pass  # already pending

    # --- introspection ------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        topology = self.config.topology
        return {
            "name": self.config.name,
            "uuid": self.config.uuid,
            "status": self.status,
            "memory-mb": self.config.memory_mib,
            "vcpus": self.config.vcpus,
            "cpu-model": self.config.cpu.name,
            "topology": {
                "sockets": topology.sockets,
                "dies": topology.dies,
                "cores": topology.cores,
                "threads": topology.threads,
            },
            "kernel": self.config.kernel,
            "pid": os.getpid(),
            "pit-thread-pid": self.pit_thread,
            "pit-reinjection": self.config.pit_reinjection,
            "tsc-khz": self.tsc_khz,
            "resets": self.resets,
            "uptime": round(time.time() - self.started_at, 3),
            "exits": dict(self.exits),
            "unclaimed-accesses": self.pio.unclaimed + self.mmio.unclaimed,
            "console-refused": self.console_port.refused,
            "net": [net.describe() for net in self.nics],
        }

    def cpus(self) -> list[dict[str, int]]:
        return [{"cpu-index": v.index, "thread-id": v.thread_id} for v in self.vcpus]

    def cpu_props(self, index: int) -> dict[str, int]:
        """query-cpus-fast's `props` for vCPU `index`: where -smp put it."""
        socket, die, core, thread = self.config.topology.ids(index)
        return {"socket-id": socket, "die-id": die, "core-id": core, "thread-id": thread}


_GUEST_OFF = qmp_events.GUEST_SHUTDOWN  # the power-off port, and the debug-exit port
