"""A standby VMM: a process forked by the warm parent before any instance asks for
it, which makes the slow, instance-independent part of a VM (a VmShell: RAM mapped,
irqchip, PIT and its kvm-pit thread, the vCPUs with their CPUID table) and reads the
guest image the last request named (prepared.prepare), and then waits.

When the warm parent hands it a request it becomes that instance's VMM, exactly as
a child forked on demand would (handoff.become_vmm), and the VM it built is the
instance's VM: its pid is the VMM's pid, so the kvm-pit/<pid> thread is already
named after it. The fork and the VM's creation are then off the launch path.

A standby guesses the VM's shape (RAM, -smp, -cpu: those of the last requests the
warm parent saw); a request for another shape drops the shell and makes its own (no
slower than a fork on demand), and one for another image reads its own. It is the
agent's child (re-parented to the subreaper, as every VMM is), and exits as soon as
the warm parent closes its end of the socket pair: when the warm parent retires it
or is itself gone. What it makes before the instance's cgroup is joined is charged
to the warm parent's cgroup: the kernel objects (the VM, its vCPUs, the kvm-pit
thread) and the image it read (tens of KiB of heap); the guest's RAM, faulted in
later, is charged to the instance.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import NoReturn

import setproctitle

from computed.vmm import handoff
from computed.vmm.kvm import Kvm
from computed.vmm.prepared import VmShape, prepare

STANDBY_TITLE = "computed-vmm-standby"
READY = b"ready"  # to the warm parent: my VM is made, hand me a request
TAKEN = b"taken"  # to the warm parent: I am the instance's VMM now (title and fds in place)


def serve_standby(
    conn: socket.socket,
    shape: VmShape,
    kernel: str | None,
    announce: handoff.Announcer,
    kvm: Kvm | None = None,
) -> NoReturn:
    """The standby's whole life, in its own process. Never returns. `kernel` is the
    -kernel the last request named (None: read no image ahead); `kvm` the warm parent's
    /dev/kvm handle (None: open one)."""
    try:
        announce()  # to the warm parent: forked (readiness comes later, on `conn`)
        _keep_only(conn.fileno(), *([kvm.fd] if kvm is not None else []))
        setproctitle.setproctitle(f"{STANDBY_TITLE} {shape}")
        prepared = prepare(kvm or Kvm(), shape, kernel)
        conn.send(READY)
    except Exception as e:  # the warm parent sees our end close and forks on demand instead
        print(f"{STANDBY_TITLE}: cannot prepare a VM: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    try:
        request, received = handoff.receive_request(conn)
    except (EOFError, OSError, ValueError):
        os._exit(0)  # retired, or the warm parent is gone: nothing was asked of us
    handoff.become_vmm(request, received, handoff.Announcer(conn.detach(), TAKEN), prepared)


def _keep_only(*keep: int) -> None:
    """Close every fd of the warm parent's but `keep` and stdout/stderr (its log): a
    standby must not hold the listener, the agent's pipe or another standby's socket."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    handoff.close_fds_except((0, 1, 2, *keep))
