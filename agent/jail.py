"""The agent's side of confining a VMM: the jail directory, the ids, the cgroup.

`<instance dir>/jail/` is what the VMM's root becomes after it pivots (its
`-run-with chroot=`). It is root-owned, 0755, and holds only the VMM's runtime
files: its console log (and the rotated `.0`), control socket, pidfile, exit
record and its own stderr log (JAIL_FILES). The VMM opens or binds all of
them as root before it confines itself and uses them through fds after, so
none needs to be writable by the instance's uid, and the VMM mounts the jail
read-only for itself.

Not in the jail, on purpose:
- /dev/kvm: the VMM opens it once, before the drop; the VM, vCPU and device fds it
  needs after are anonymous inodes made from that fd. A device node in the jail
  would only be something more to reach.
- the guest image: read into memory before the drop; a reset reloads it from the
  copy in memory, not from the file.
- /proc, /dev, libraries: the VMM imports everything before the drop and execs
  nothing.

`Jailer` bundles the three per-instance resources the agent prepares before a
confined spawn (ids, cgroup, jail directory) and releases at delete, the way
Firecracker's jailer prepares chroot, uid and cgroups around Firecracker.
"""

from __future__ import annotations

import os
import shutil
import stat

from agent.cgroups import CgroupError, InstanceCgroups
from agent.vmm_process import Confinement, InstancePaths
from agent.vmm_users import IdRange, UidRangeError, VmmIdAllocator
from computed.store.records import InstanceSpec

JAIL_MODE = 0o755
JAIL_FILES = frozenset(
    {"console.log", "console.log.0", "control.sock", "vmm.pid", "exit.json", "vmm.log"}
)


class JailError(RuntimeError):
    """The jail, ids or cgroup for an instance could not be prepared; says which."""


def prepare_jail_dir(path: str) -> None:
    """Make `path` a root-owned 0755 directory holding nothing beyond JAIL_FILES.

    A symlink (or anything but a directory) in its place is refused: the VMM
    pivots into this path as root."""
    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    try:
        os.mkdir(path, JAIL_MODE)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise JailError(f"jail {path} exists and is not a directory")
    os.chown(path, 0, 0)
    os.chmod(path, JAIL_MODE)
    for entry in os.scandir(path):
        if entry.name not in JAIL_FILES:
            remove_entry(entry.path)


def remove_entry(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def remove_jail_dir(path: str) -> None:
    """The jail and everything in it; gone already is fine."""
    shutil.rmtree(path, ignore_errors=True)


def jail_entries(path: str) -> set[str]:
    return {entry.name for entry in os.scandir(path)}


class Jailer:
    """Per-instance ids, cgroup and jail directory for confined VMMs."""

    def __init__(self, state_dir: str, uid_range: IdRange, cgroup_parent: str) -> None:
        self.ids = VmmIdAllocator(uid_range, os.path.join(state_dir, "instances"))
        try:
            self.cgroups = InstanceCgroups(cgroup_parent)
        except (CgroupError, OSError) as e:
            raise JailError(f"cgroups: {e}") from None

    def prepare(self, spec: InstanceSpec, paths: InstancePaths) -> Confinement:
        """Before each spawn: idempotent (a restart reuses the same ids and cgroup)."""
        try:
            ids = self.ids.claim(spec.uuid)
            cgroups = self.cgroups.create(spec.uuid, spec.vcpus, spec.memory_mb)
            prepare_jail_dir(paths.jail)
        except (UidRangeError, CgroupError) as e:
            raise JailError(str(e)) from None
        except OSError as e:
            raise JailError(f"jail for {spec.uuid}: {e}") from None
        return Confinement(ids.uid, ids.gid, tuple(cgroups))

    def release(self, uuid: str, paths: InstancePaths) -> None:
        """At delete, once the VMM has exited: cgroup, jail, ids. Raises JailError if
        the cgroup still holds a task after a short wait (the ids stay taken then)."""
        try:
            self.cgroups.remove(uuid)
        except CgroupError as e:
            raise JailError(str(e)) from None
        remove_jail_dir(paths.jail)
        self.ids.release(uuid)
