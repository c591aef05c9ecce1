"""One cgroup per instance, on cgroup v1 or v2: CPU quota, memory limit, pids limit.

The agent makes the cgroup before the VMM starts and the VMM joins it itself
(`-cgroup DIR`, its first privileged act), so everything it allocates is
charged there. The name is the instance's uuid under a configured parent, so
an agent restart finds every cgroup again by name; delete removes it.

- v1 (one hierarchy per controller, as on these dev hosts):
  `<cpu mount>/<parent>/<uuid>`, `<memory mount>/<parent>/<uuid>`,
  `<pids mount>/<parent>/<uuid>`; `cpu.cfs_quota_us`/`cpu.cfs_period_us`,
  `memory.limit_in_bytes`, `pids.max`.
- v2 (one hierarchy, production hosts): `<mount>/<parent>/<uuid>`, with
  cpu, memory and pids enabled in `cgroup.subtree_control` of the root and
  of every directory down to the parent; `cpu.max`, `memory.max`, `pids.max`.

A parent beginning with `./` is taken under the agent's own cgroup in each
hierarchy (a dev host inside a container, a test) rather than under the root.
Under systemd on v2 the parent should be a delegated subtree (a slice with
`Delegate=yes`), as libvirt keeps its machines in machine.slice.

The decisions (layout, limits, which file gets which value) are pure
functions, so v2's layout is tested against a temp dir standing in for
/sys/fs/cgroup; `InstanceCgroups` is the thin layer that does the writes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import subprocess
import time

from computed.limits import MIB

CONTROLLERS = ("cpu", "memory", "pids")
CGROUP_ROOT = "/sys/fs/cgroup"
DEFAULT_PARENT = "computed"

CPU_PERIOD_US = 100_000  # the kernel's default CFS period
# One CPU per vCPU, and half a CPU more for the VMM's other threads: its main loop,
# the userspace vhost-net worker on these hosts, the kernel's vhost-<pid> worker where
# it serves (charged to the owner's cgroup). So a guest saturating its NIC does not
# starve its own vCPUs (a 1-vCPU net guest under a UDP flood was never throttled at
# 1.5 CPUs), while a guest spinning all its vCPUs is held to its flavor, plus that half.
VMM_CPU_ALLOWANCE_US = CPU_PERIOD_US // 2
# Guest RAM is charged as the guest touches it; the VMM's own memory on top of it.
# Measured here (v1, a sandboxed VMM; "charged" is the cgroup's max_usage, which
# excludes the interpreter's start-up pages, charged before the VMM joins):
#   1 vCPU, idle heartbeat:                RSS 13.8 MiB, charged 1.3 MiB
#   1 vCPU, net guest after a UDP flood:   RSS 14.1 MiB, charged 1.8 MiB (+0.3 MiB RSS)
#   8 vCPUs, 1 GiB heartbeat:              RSS 14.0 MiB, charged 7.1 MiB
# So: a fixed 32 MiB (twice the whole process's RSS, so the limit still holds where
# the interpreter itself is charged here, e.g. a process placed before exec; plus the
# tap's 4 MiB send buffer per NIC on the kernel vhost path), 1 MiB per vCPU (KVM's
# per-vCPU kernel memory, ~0.8 MiB measured, and the thread's stack), and the guest's
# page tables, ~2 MiB per GiB of RAM it touches (8-byte EPT entries per 4 KiB page).
VMM_MEMORY_ALLOWANCE = 32 * MIB
VMM_MEMORY_PER_VCPU = 1 * MIB
PAGE_TABLES_PER_GIB = 2 * MIB
# Tasks: main, one per vCPU, one per NIC of ours, the kernel's vhost and KVM workers
# (user workers count as tasks here); the margin bounds a fork bomb, not real use.
PIDS_ALLOWANCE = 16

_MS_REMOUNT = 32
_MOUNT_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024,
                "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}  # fmt: skip


class CgroupError(RuntimeError):
    """A cgroup could not be made, limited or removed; the message names the file."""


@dataclasses.dataclass(frozen=True)
class CgroupLimits:
    cpu_quota_us: int
    cpu_period_us: int
    memory_bytes: int
    pids_max: int


@dataclasses.dataclass(frozen=True)
class CgroupLayout:
    """Where each controller's hierarchy is mounted: v1, one mount per controller
    (co-mounted ones share it); v2, the one mount for all."""

    version: int
    mounts: dict[str, str]  # controller → mount point


# --- pure: layout, places, limits, writes ------------------------------------------------
def detect_layout(mountinfo: str) -> CgroupLayout:
    """From /proc/self/mountinfo: v1 when cpu, memory and pids each have a v1 hierarchy
    (a hybrid host's empty unified mount is ignored), else v2 on its cgroup2 mount."""
    v1: dict[str, str] = {}
    v2: list[str] = []
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mount_point, fstype = _unescape(fields[4]), tail[0]
        if fstype == "cgroup2":
            v2.append(mount_point)
        elif fstype == "cgroup":
            for option in tail[2].split(","):
                if option in CONTROLLERS:
                    v1[option] = mount_point
    if all(c in v1 for c in CONTROLLERS):
        return CgroupLayout(1, {c: v1[c] for c in CONTROLLERS})
    if v1:
        missing = sorted(set(CONTROLLERS) - set(v1))
        raise CgroupError(f"cgroup v1 hierarchies lack {', '.join(missing)}: not supported")
    if not v2:
        raise CgroupError("no cgroup file system is mounted")
    mount = CGROUP_ROOT if CGROUP_ROOT in v2 else v2[0]
    return CgroupLayout(2, {c: mount for c in CONTROLLERS})


def cgroup2_mount(mountinfo: str) -> tuple[str, list[str], list[str]] | None:
    """The first cgroup2 mount: (mount point, its mount options, its superblock options)."""
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if sep and len(fields) >= 6 and len(tail) >= 3 and tail[0] == "cgroup2":
            return _unescape(fields[4]), fields[5].split(","), tail[2].split(",")
    return None


def favordynmods_target(mountinfo: str) -> str | None:
    """The cgroup2 mount to remount with `favordynmods`, or None: it has it already, or
    no cgroup2 is mounted (a pure v1 host: the option is then out of our reach).

    Why: moving a task into a cgroup takes cgroup_threadgroup_rwsem for writing,
    which waits out an RCU grace period unless the rwsem is kept in its slow mode,
    and that is what the flag does, for every hierarchy, v1 ones included. Each
    VMM joins a new cgroup at launch, so without it a confined launch waited
    4-20 ms here (nested KVM) for the join alone, with it 0.15 ms. The kernel's
    price is a little more work in every fork and exit on the host."""
    mount = cgroup2_mount(mountinfo)
    if mount is None or "favordynmods" in mount[2]:
        return None
    return mount[0]


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def own_cgroups(proc_self_cgroup: str, layout: CgroupLayout) -> dict[str, str]:
    """Each controller's cgroup of this process, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in proc_self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if layout.version == 2 and hierarchy == "0" and names == "":
            return {c: path for c in CONTROLLERS}
        for name in names.split(","):
            if name in CONTROLLERS:
                own[name] = path
    return own


def parent_parts(parent: str) -> list[str]:
    """`computed`, `machine.slice/computed` or `./computed` → its path parts."""
    parts = [p for p in parent.removeprefix("./").split("/") if p]
    if not parts or parent.startswith("/") or any(p in (".", "..") for p in parts):
        raise CgroupError(f"cgroup parent {parent!r}: a relative path such as {DEFAULT_PARENT}")
    return parts


def parent_dirs(layout: CgroupLayout, parent: str, own: dict[str, str]) -> dict[str, str]:
    """controller → the absolute parent directory instance cgroups go under."""
    parts = parent_parts(parent)
    dirs = {}
    for c in CONTROLLERS:
        base = layout.mounts[c]
        if parent.startswith("./"):
            base = os.path.join(base, own.get(c, "/").lstrip("/"))
        dirs[c] = os.path.join(base, *parts)
    return dirs


def instance_dirs(parents: dict[str, str], uuid: str) -> dict[str, str]:
    """controller → the instance's cgroup directory."""
    return {c: os.path.join(d, uuid) for c, d in parents.items()}


def distinct(dirs: dict[str, str]) -> list[str]:
    """The directories, each once, in controller order (co-mounted controllers and v2
    share one): what the VMM gets as `-cgroup` flags."""
    return list(dict.fromkeys(dirs[c] for c in CONTROLLERS))


def limits_for(vcpus: int, memory_mb: int) -> CgroupLimits:
    guest = memory_mb * MIB
    tables = -(-guest // (1024 * MIB)) * PAGE_TABLES_PER_GIB
    return CgroupLimits(
        cpu_quota_us=vcpus * CPU_PERIOD_US + VMM_CPU_ALLOWANCE_US,
        cpu_period_us=CPU_PERIOD_US,
        memory_bytes=guest + VMM_MEMORY_ALLOWANCE + vcpus * VMM_MEMORY_PER_VCPU + tables,
        pids_max=vcpus + PIDS_ALLOWANCE,
    )


def limit_writes(version: int, dirs: dict[str, str], limits: CgroupLimits) -> list[tuple[str, str]]:
    """(file, value) in the order to write them."""
    cpu, memory, pids = (dirs[c] for c in CONTROLLERS)
    if version == 1:
        return [
            (os.path.join(cpu, "cpu.cfs_period_us"), str(limits.cpu_period_us)),
            (os.path.join(cpu, "cpu.cfs_quota_us"), str(limits.cpu_quota_us)),
            (os.path.join(memory, "memory.limit_in_bytes"), str(limits.memory_bytes)),
            (os.path.join(pids, "pids.max"), str(limits.pids_max)),
        ]
    return [
        (os.path.join(cpu, "cpu.max"), f"{limits.cpu_quota_us} {limits.cpu_period_us}"),
        (os.path.join(memory, "memory.max"), str(limits.memory_bytes)),
        (os.path.join(pids, "pids.max"), str(limits.pids_max)),
    ]


def subtree_control_writes(mount: str, parent: str) -> list[tuple[str, str]]:
    """v2: enable the controllers for children at the root and at each level down to
    `parent` (a controller reaches a cgroup only through every ancestor)."""
    enable = " ".join(f"+{c}" for c in CONTROLLERS)
    rel = os.path.relpath(parent, mount)
    levels = [mount]
    for part in [] if rel == "." else rel.split("/"):
        levels.append(os.path.join(levels[-1], part))
    return [(os.path.join(level, "cgroup.subtree_control"), enable) for level in levels]


# --- I/O -------------------------------------------------------------------------------------
def read_layout() -> CgroupLayout:
    with open("/proc/self/mountinfo") as f:
        return detect_layout(f.read())


def favor_dynamic_changes() -> str | None:
    """Remount the cgroup2 hierarchy with favordynmods if it lacks it (see
    `favordynmods_target`); the mount point remounted, or None when it had it already.
    mount(8) keeps the mount's other options. CgroupError when there is no cgroup2
    mount or the remount fails."""
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    if cgroup2_mount(mountinfo) is None:
        raise CgroupError("no cgroup2 hierarchy is mounted: favordynmods cannot be set")
    target = favordynmods_target(mountinfo)
    if target is None:
        return None
    done = subprocess.run(
        ["mount", "-o", "remount,favordynmods", target], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise CgroupError(f"remount {target} with favordynmods: {done.stderr.strip()}")
    return target


def stop_favoring_dynamic_changes() -> None:
    """Remount cgroup2 without favordynmods, every other option kept: for benchmarks and
    tests that compare both (mount(8) keeps the options a mount has, so this goes
    through mount(2) with them all but that one). OSError when the remount fails."""
    with open("/proc/self/mountinfo") as f:
        mount = cgroup2_mount(f.read())
    if mount is None:
        return
    point, mount_options, super_options = mount
    keep = [o for o in super_options if o not in ("rw", "ro", "favordynmods")]
    flags = _MS_REMOUNT
    for option in mount_options:
        flags |= _MOUNT_FLAGS.get(option, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(None, point.encode(), None, flags, ",".join(keep).encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"remount {point} without favordynmods: {os.strerror(err)}")


class InstanceCgroups:
    """Makes, finds and removes instance cgroups under one parent."""

    def __init__(self, parent: str = DEFAULT_PARENT, layout: CgroupLayout | None = None) -> None:
        self.layout = layout or read_layout()
        own: dict[str, str] = {}
        if parent.startswith("./"):
            with open("/proc/self/cgroup") as f:
                own = own_cgroups(f.read(), self.layout)
        self.parents = parent_dirs(self.layout, parent, own)

    def dirs(self, uuid: str) -> list[str]:
        """The instance's cgroup directories (whether they exist or not): by name."""
        return distinct(instance_dirs(self.parents, uuid))

    def create(self, uuid: str, vcpus: int, memory_mb: int) -> list[str]:
        """Make (or keep) the instance's cgroups and set their limits; the directories."""
        dirs = instance_dirs(self.parents, uuid)
        try:
            if self.layout.version == 2:
                mount = self.layout.mounts["cpu"]
                os.makedirs(self.parents["cpu"], exist_ok=True)
                for path, value in subtree_control_writes(mount, self.parents["cpu"]):
                    _write(path, value)
            for d in distinct(dirs):
                os.makedirs(d, exist_ok=True)
            limits = limits_for(vcpus, memory_mb)
            for path, value in limit_writes(self.layout.version, dirs, limits):
                _write(path, value)
        except OSError as e:
            raise CgroupError(f"cgroup for {uuid}: {e.filename}: {e.strerror}") from None
        return distinct(dirs)

    def tasks(self, uuid: str) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs(uuid):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids.update(int(line) for line in f if line.strip())
            except FileNotFoundError:
                continue
        return pids

    def remove(self, uuid: str, timeout: float = 5.0) -> None:
        """Remove the instance's cgroups; a cgroup still holding a (dying) task is
        retried until `timeout`, then CgroupError. Gone already is fine."""
        deadline = time.monotonic() + timeout
        for d in self.dirs(uuid):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {d}: {e.strerror}") from None
                    time.sleep(0.02)

    def instances(self) -> set[str]:
        """The uuids that have a cgroup under this parent (whether or not they run)."""
        found: set[str] = set()
        for d in distinct(self.parents):
            try:
                found.update(e.name for e in os.scandir(d) if e.is_dir())
            except FileNotFoundError:
                continue
        return found

    def remove_all(self) -> None:
        """Tear-down of a whole parent (a dev cluster's host, a test's agent): every
        instance cgroup under it, then the parent itself. Its VMMs must be gone."""
        for uuid in self.instances():
            try:
                self.remove(uuid)
            except CgroupError:
                pass  # a task that will not die: the others still go
        self.remove_parent_if_empty()

    def remove_parent_if_empty(self) -> None:
        """For tests and tear-down: the parent directories, if nothing is left in them."""
        for d in distinct(self.parents):
            try:
                os.rmdir(d)
            except OSError:
                pass


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
