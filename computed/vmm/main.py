"""computed-vmm: one KVM virtual machine per process.

The main thread owns everything that is not the guest: the control socket,
host signals (SIGTERM = power button, then a hard stop after a grace period),
guest reset requests, the pidfile and the exit status. It sleeps in one
selector until one of those needs it, so an idle VMM costs no CPU.

Start-up order: join the cgroups (`-cgroup`), then everything that needs
root (/dev/kvm, the VM, RAM, vCPUs, devices, taps, the console file, the
control socket); with `-sandbox on` then the pidfile and the exit record's fd,
then `confine.confine` (jail, ids, no capabilities, no_new_privs); only then
do the vCPU and I/O threads start and the guest runs. After confinement the
VMM touches no path: files it still writes, it writes through fds opened
before, and what it would unlink at exit is left to the agent.
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import time

from computed.vmm import page_merging, seccomp
from computed.vmm.config import USAGE, VmConfig, parse_args
from computed.vmm.confine import check_jail, confine, join_cgroups, tap_name_of
from computed.vmm.control import ControlServer, listening_socket_problem
from computed.vmm.elf import read_image
from computed.vmm.errors import ExitCode, UsageError, VmmError
from computed.vmm.images import resolve_image
from computed.vmm.kvm import Kvm
from computed.vmm.log import emit
from computed.vmm.machine import ExitCause, Machine
from computed.vmm.prepared import Prepared

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Supervisor:
    """Runs a started Machine until it exits; returns the exit cause."""

    def __init__(self, machine: Machine, config: VmConfig) -> None:
        self.machine = machine
        self.config = config
        self.sel = selectors.DefaultSelector()
        self.sel.register(machine.wakeup_r, selectors.EVENT_READ, self._drain_wakeups)
        where = config.control if config.control is not None else config.control_fd
        self.control = ControlServer(where, machine, self.sel) if where is not None else None
        self._signals: list[int] = []
        self._powerdown_deadline: float | None = None

    def run(self) -> ExitCause:
        for signo in _STOP_SIGNALS:
            signal.signal(signo, lambda s, _f: self._signals.append(s))
        signal.set_wakeup_fd(self.machine.wakeup_w, warn_on_full_buffer=False)
        self.machine.start()
        if self.config.pidfile and not self.config.sandbox:  # sandboxed: written before
            write_pidfile(self.config.pidfile)
        # Last: every vCPU and I/O thread has started under its own role's filter, and
        # nothing is left to open or import (a no-op without -sandbox on).
        seccomp.confine("main")
        machine = self.machine
        while machine.exit_cause is None:
            for key, _mask in self.sel.select(self._timeout()):
                key.data()
            if machine.power_off_requested:  # -no-shutdown
                machine.park_powered_off()
            if machine.reset_requested:
                machine.reset()
            while self._signals:
                self._on_stop_signal(self._signals.pop(0))
            if (
                self._powerdown_deadline is not None
                and time.monotonic() >= self._powerdown_deadline
            ):
                machine.stop_by_host(
                    f"guest did not power off within {self.config.shutdown_timeout:g}s"
                )
        return machine.exit_cause

    def _timeout(self) -> float | None:
        if self._powerdown_deadline is None:
            return None
        return max(0.0, self._powerdown_deadline - time.monotonic())

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.machine.wakeup_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _on_stop_signal(self, signo: int) -> None:
        """Press the power button, then stop hard after the grace period. A signal ends
        the VMM even under -no-shutdown (as in qemu); a guest that is already off, or
        was never started (-S), has nothing to shut down, so it ends at once."""
        if self._powerdown_deadline is not None:
            return  # already powering down; the deadline stands
        name = signal.Signals(signo).name
        machine = self.machine
        machine.exit_on_power_off = True
        if machine.status == "shutdown":  # -no-shutdown, after the guest's power-off
            machine.stop_by_host(f"{name} after the guest powered off")
            return
        if machine.status == "prelaunch":  # -S, never `cont`ed
            machine.stop_by_host(f"{name} before the guest started")
            return
        emit(f"computed-vmm[{self.config.name}]: {name}: powering down")
        self._powerdown_deadline = time.monotonic() + self.config.shutdown_timeout
        if machine.status == "running":
            machine.press_power_button()

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        if self.config.sandbox:
            return  # no paths in the jail: the kernel closes the sockets, the agent the files
        if self.control is not None:
            self.control.close()
        if self.config.pidfile:
            try:
                os.unlink(self.config.pidfile)
            except FileNotFoundError:
                pass


def write_atomically(path: str, text: str) -> None:
    """A reader sees either no file or the whole text. Plain fds: open()'s buffered
    text layer would add a stat, a tty check and a seek to every VMM's start."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_pidfile(path: str) -> None:
    write_atomically(path, f"{os.getpid()}\n")


def exit_record(cause: ExitCause, when: float) -> str:
    """Why the VM ended, for a supervisor that cannot wait() for us (an adopted VMM)."""
    import json  # only at exit

    record = {
        "code": int(cause.code),
        "cause": cause.code.name.lower(),
        "reason": cause.reason,
        "time": when,
    }
    return json.dumps(record) + "\n"


def check_handed_fds(config: VmConfig) -> None:
    """A tap handed in as `fd=N` is checked, and named after its interface (query-vm,
    logs); a `vhostfd=M` must be open; a monitor socket handed in must be listening."""
    if config.control_fd is not None:
        problem = listening_socket_problem(config.control_fd)
        if problem is not None:
            raise UsageError(f"-chardev socket,fd={config.control_fd}: {problem}")
    for nic in config.nics:
        if nic.tap_fd is not None:
            nic.ifname = tap_name_of(nic.tap_fd)
        if nic.vhost_fd is not None:
            try:
                os.fstat(nic.vhost_fd)
            except OSError as e:
                raise UsageError(f"-netdev vhostfd={nic.vhost_fd}: {e.strerror}") from None


def confine_after_set_up(machine: Machine, config: VmConfig) -> int | None:
    """The last acts by path (pidfile, the exit record's fd, the kvm-pit look-up in
    /proc), then the confinement itself. Returns the exit record's fd, if any."""
    assert config.chroot is not None and config.run_as is not None  # parse_args checked
    if config.pidfile:
        write_pidfile(config.pidfile)
    exit_fd = None
    if config.exit_record:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        exit_fd = os.open(config.exit_record, flags, 0o644)
    machine.console.confined()
    seccomp.arm()  # the jail has no files: every thread's filter is read now
    confine(config.chroot, *config.run_as)
    return exit_fd


def run(argv: list[str], prepared: Prepared | None = None) -> int:
    """Run one VMM. `prepared` is what was made before this instance was known: a
    standby's /dev/kvm handle, VM shell and guest image (computed/vmm/standby.py), or
    the warm parent's /dev/kvm handle alone."""
    if argv and argv[0] in ("-h", "-help", "--help"):
        print(USAGE)
        return 0
    try:
        config = parse_args(argv, resolve_image)
        join_cgroups(config.cgroups)  # first: everything after is charged to the instance
        if config.sandbox:
            check_jail(config.chroot)
        check_handed_fds(config)
        if prepared is None:
            machine = Machine(config, read_image(config.kernel), Kvm())
        else:
            image = prepared.image_for(config.kernel) or read_image(config.kernel)
            machine = Machine(config, image, prepared.kvm, prepared.shell)
        supervisor = Supervisor(machine, config)
        exit_fd = confine_after_set_up(machine, config) if config.sandbox else None
    except VmmError as e:
        emit(f"computed-vmm: error: {e}")
        return e.exit_code
    except OSError as e:  # control socket path, console file, pidfile
        emit(f"computed-vmm: error: {e.strerror}: {e.filename or ''}".rstrip(": "))
        return ExitCode.BAD_INPUT
    try:
        cause = supervisor.run()
    finally:
        machine.shutdown()
        supervisor.close()
    if cause.code != ExitCode.POWERED_OFF:
        emit(f"computed-vmm[{config.name}]: {cause.reason}")
    if config.exit_record:
        try:
            record = exit_record(cause, time.time())
            if exit_fd is None:
                write_atomically(config.exit_record, record)
            else:  # one write through the fd opened before confinement; the agent reads
                os.write(exit_fd, record.encode())  # it only once we have exited
                os.close(exit_fd)
        except OSError as e:
            emit(f"computed-vmm[{config.name}]: cannot write exit record: {e.strerror}")
    return cause.code


def main(argv: list[str] | None = None, prepared: Prepared | None = None) -> None:
    """Run one VMM and exit with its code. `argv` (without the program name) is given by
    the warm parent, whose forked child has no command line of its own."""
    if argv is None:  # exec'd: a forked VMM has the mark from its warm parent
        page_merging.offer_interpreter_memory()
    try:
        code = run(sys.argv[1:] if argv is None else argv, prepared)
    except Exception as e:  # a VMM bug: one line, the traceback only when asked
        emit(f"computed-vmm: internal error: {e!r}")
        if os.environ.get("COMPUTED_DEBUG"):
            import traceback

            traceback.print_exc()
        code = ExitCode.INTERNAL
    sys.stdout.flush()
    os._exit(int(code))  # vCPU threads are joined; don't wait on anything else


if __name__ == "__main__":
    main()
