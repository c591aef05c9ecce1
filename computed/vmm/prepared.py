"""What a standby VMM makes before its instance is known (computed/vmm/standby.py):
a VM shell of the shape it guesses (vm_shell.VmShell, with its vCPUs) and the guest
image the last request named, read ahead. The instance's VMM uses each only if it
fits: the same shape, the same unchanged image file; otherwise it makes its own.
"""

from __future__ import annotations

import collections
import os

from computed.vmm.config import MIB, parse_memory
from computed.vmm.cpu_model import parse_cpu, parse_smp
from computed.vmm.elf import GuestImage, read_image
from computed.vmm.errors import UsageError, VmmError
from computed.vmm.images import resolve_image
from computed.vmm.kvm import Kvm
from computed.vmm.vm_shell import VmShell


class VmShape(collections.namedtuple("VmShape", "memory_mib smp cpu", defaults=("1", "host"))):
    """What a standby guesses of the next VM: its RAM and its -smp and -cpu, spelled as
    the last requests spelled them (the warm parent's pool is keyed by it). A tuple, so
    that the pool's bookkeeping at every request hashes and compares in C: as a class
    with Python-level __eq__ and __hash__ it was half the warm parent's profiled time in
    a burst of 200 requests."""

    __slots__ = ()

    @classmethod
    def of_request(cls, argv: list[str]) -> VmShape | None:
        """The shape a VMM command line asks for; None when its -m is absent or malformed
        (the VMM itself will say what is wrong with it)."""
        try:
            memory = parse_memory(argv[argv.index("-m") + 1])
        except (ValueError, IndexError, UsageError):
            return None
        return cls(memory, option_value(argv, "-smp") or "1", option_value(argv, "-cpu") or "host")

    def __str__(self) -> str:  # the standby's title: "64M smp=1 cpu=host"
        return f"{self.memory_mib}M smp={self.smp} cpu={self.cpu}"


def option_value(argv: list[str], option: str) -> str | None:
    """The word after `option` in a command line (None: not there)."""
    try:
        return argv[argv.index(option) + 1]
    except (ValueError, IndexError):
        return None


class PreparedImage:
    """A guest image read ahead (by a standby, for the image the last request named),
    with what identifies the file it came from: used only while the file at that path
    is still the same file, unchanged (an upload replaces it)."""

    __slots__ = ("identity", "image", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = _identity(path)  # before the read: a change after it is seen
        self.image = read_image(path)

    def image_for(self, path: str) -> GuestImage | None:
        try:
            same = path == self.path and _identity(path) == self.identity
        except OSError:
            return None  # gone: the VMM's own read says so
        return self.image if same else None


def _identity(path: str) -> tuple[int, ...]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class Prepared:
    """What was made before an instance was known: the /dev/kvm handle, and for a standby
    a VM shell and the guest image (None if it read none). A VMM the warm parent forks
    on demand has the warm parent's handle only."""

    __slots__ = ("image", "kvm", "shell")

    def __init__(
        self, kvm: Kvm, shell: VmShell | None = None, image: PreparedImage | None = None
    ) -> None:
        self.kvm, self.shell, self.image = kvm, shell, image

    def fds(self) -> list[int]:
        return [self.kvm.fd, *(self.shell.fds() if self.shell is not None else [])]

    def image_for(self, path: str) -> GuestImage | None:
        return self.image.image_for(path) if self.image is not None else None


def prepare(kvm: Kvm, shape: VmShape, kernel: str | None) -> Prepared:
    """A standby's work: a shell of `shape` with its vCPUs, and the image `kernel` names
    (a bundled name or a path). A shape or image that cannot be prepared is left to the
    instance's VMM, which says what is wrong with it: the shell then has no vCPUs, or
    no image is read."""
    kvm.supported_cpuid()  # asked ahead even where this shape's vCPUs cannot be made
    shell = VmShell(kvm, shape.memory_mib * MIB)
    try:
        shell.make_vcpus(kvm, parse_smp(shape.smp), parse_cpu(shape.cpu))
    except VmmError:
        shell.close()  # a half-made set of vCPUs cannot be taken back out
        shell = VmShell(kvm, shape.memory_mib * MIB)
    image = None
    if kernel is not None:
        try:
            image = PreparedImage(resolve_image(kernel))
        except (VmmError, OSError):
            pass
    return Prepared(kvm, shell, image)
