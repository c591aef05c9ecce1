"""The VMM confining itself (`-sandbox on`), Firecracker's jailer done in-process.

A VMM needs root for very little: opening /dev/kvm and a tap, creating the VM,
binding its control socket, writing its pidfile, joining its cgroup. Once all
of that is done (everything after it goes through file descriptors) the VMM
gives up everything a compromised VMM could use:

1. `unshare(CLONE_NEWNS)`, then `/` made recursively private, so nothing we
   mount or unmount reaches the host (and nothing the host mounts reaches us).
2. The jail directory bind-mounted on itself (pivot_root needs a mount point),
   read-only, nosuid, nodev, noexec: the VMM creates nothing there after the
   drop, and no device node or program in it could be used.
3. `pivot_root(".", ".")` inside it and the old root detached: the host's file
   system is no longer reachable by any path (chroot alone can be escaped by a
   process that keeps a directory fd or is root; this cannot). `chdir("/")`.
4. Every capability out of the bounding set (up to the kernel's last, read
   from /proc/sys/kernel/cap_last_cap before the pivot: /proc is not in the
   jail), the ambient set cleared.
5. Securebits set and locked: NOROOT (uid 0 gets no capabilities back through
   execve), NO_CAP_AMBIENT_RAISE (the ambient set stays empty), KEEP_CAPS off
   (capabilities are not kept across the uid change) and NO_SETUID_FIXUP off
   (the kernel's own rule then clears the permitted and effective sets when
   the uids leave 0: a second guarantee behind the explicit capset below).
   Off-and-locked matters as much as on-and-locked: nothing after us can turn
   the bit on.
6. `setgroups([])`, `setresgid`, `setresuid` to the instance's own ids (the
   kernel also marks us non-dumpable: no core file of guest RAM, no ptrace by
   another process of that uid).
7. `capset` with every set empty (the inheritable set survives the uid change
   otherwise), then `PR_SET_NO_NEW_PRIVS`. Then, in the caller, seccomp.

Capabilities, securebits and no_new_privs are per thread, and `unshare`
changes only the caller's view: so this must run while the VMM is single
threaded, before any vCPU or I/O thread starts; every thread made later
inherits the result.

/proc is not mounted in the jail: vCPU threads name themselves with
prctl(PR_SET_NAME) from inside the thread, the kvm-pit worker is looked up
before the drop, and the agent reads stats from its own /proc, outside.

`-cgroup DIR` is computed's own flag: qemu has none (libvirt places qemu from
outside, after the fork). Writing our own pid into `DIR/cgroup.procs` as the
very first privileged act means guest RAM, vCPUs and the kernel memory KVM
charges are all accounted to the instance, with no window where the process
runs unplaced; and it is one flag that fits both v1 (one DIR per controller
hierarchy, the flag repeated) and v2 (one DIR).
"""

from __future__ import annotations

import functools
import os
import threading

from computed.exit_codes import ExitCode
from computed.limits import MIB
from computed.taps import VNET_HDR_SIZE
from computed.vmm._confine import ffi, lib
from computed.vmm.errors import UsageError, VmmError

CAP_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"
# Set and locked: see the module docstring, step 5. NO_SETUID_FIXUP and KEEP_CAPS are
# deliberately absent from the bits (off) and present among the locks.
SECUREBITS = (
    lib.SECBIT_NOROOT
    | lib.SECBIT_NOROOT_LOCKED
    | lib.SECBIT_NO_SETUID_FIXUP_LOCKED
    | lib.SECBIT_KEEP_CAPS_LOCKED
    | lib.SECBIT_NO_CAP_AMBIENT_RAISE
    | lib.SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
)
# The jail's mount: nothing in it may be written, executed or used as a device.
JAIL_MOUNT_FLAGS = lib.MS_RDONLY | lib.MS_NOSUID | lib.MS_NODEV | lib.MS_NOEXEC
# No file the confined VMM writes may grow past this: the console cannot rotate by
# rename in a read-only jail, so this is what keeps a guest printing forever (or a
# compromised VMM) from filling the host's disk. Past it, writes fail with EFBIG.
MAX_FILE_BYTES = 64 * MIB


class ConfinementError(VmmError):
    """The VMM could not confine itself; the message names the step and the errno."""

    exit_code = ExitCode.BAD_INPUT


def _check(r: int, what: str) -> int:
    if r < 0:
        raise ConfinementError(f"-sandbox on: {what}: {os.strerror(-r)}")
    return r


# --- before set-up: the cgroup --------------------------------------------------------
def join_cgroups(directories: list[str]) -> None:
    """Move this process into each cgroup directory (one per v1 hierarchy, one on v2)."""
    pid = str(os.getpid()).encode()
    for directory in directories:
        path = os.path.join(directory, "cgroup.procs")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        except OSError as e:
            raise ConfinementError(f"-cgroup {directory}: cannot join: {e.strerror}") from None


def check_jail(jail: str) -> None:
    """Before any set-up: a missing jail is reported at once, not after the VM is built."""
    if not os.path.isdir(jail):
        raise ConfinementError(f"-run-with chroot={jail}: no such directory")


# --- handed-in file descriptors ---------------------------------------------------------
def tap_name_of(fd: int) -> str:
    """The interface name of a tap handed in as `fd=N`, once it is checked to be one
    this VMM can use (tap, no packet-info prefix, 12-byte virtio-net headers)."""
    name = ffi.new("char[]", lib.IFNAMSIZ)
    flags, hdr = ffi.new("int *"), ffi.new("int *")
    r = lib.confine_tap_info(fd, name, flags, hdr)
    if r < 0:
        raise UsageError(f"-netdev fd={fd}: not an open tap: {os.strerror(-r)}")
    wanted = lib.IFF_TAP | lib.IFF_NO_PI | lib.IFF_VNET_HDR
    if flags[0] & wanted != wanted or hdr[0] != VNET_HDR_SIZE:
        raise UsageError(
            f"-netdev fd={fd}: the tap must be IFF_TAP|IFF_NO_PI|IFF_VNET_HDR with "
            f"{VNET_HDR_SIZE}-byte headers (flags {flags[0]:#x}, header {hdr[0]} bytes)"
        )
    return ffi.string(name).decode()


# --- the confinement itself ----------------------------------------------------------------
@functools.cache
def last_capability() -> int:
    """The running kernel's highest capability number (it may know more than our headers).
    Constant while the kernel runs: the warm parent asks once, its VMMs inherit it."""
    try:
        with open(CAP_LAST_CAP_FILE) as f:
            return int(f.read())
    except (OSError, ValueError):
        pass
    cap = lib.CAP_LAST_CAP  # no /proc: probe upwards from what the headers know
    while lib.confine_prctl(lib.PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0:
        cap += 1
    return cap


def preload_for_jail() -> None:
    """Import now what is otherwise imported on first use: in the jail there is no
    file system to import from. The warm parent calls it once, for every VMM it forks
    (an import in the child costs 0.7 ms and copies the parent's pages it touches)."""
    import json  # control socket replies, the exit record
    import resource  # limit_file_size

    if os.environ.get("COMPUTED_DEBUG"):
        import traceback  # main's internal-error report

        del traceback
    del json, resource


def confine(jail: str, uid: int, gid: int) -> None:
    """Steps 1-7 of the module docstring, in that order; raises ConfinementError."""
    if threading.active_count() != 1:
        raise ConfinementError("-sandbox on: threads already running; confine before starting")
    last_cap = last_capability()
    preload_for_jail()
    limit_file_size()
    enter_jail(jail)
    drop_privileges(uid, gid, last_cap)
    check_confined(uid, gid, last_cap)


def enter_jail(jail: str) -> None:
    _check(lib.confine_unshare(lib.CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    private = lib.MS_REC | lib.MS_PRIVATE
    _check(lib.confine_mount(ffi.NULL, b"/", ffi.NULL, private), "make / recursively private")
    path = jail.encode()
    _check(lib.confine_mount(path, path, ffi.NULL, lib.MS_BIND), f"bind-mount {jail}")
    remount = lib.MS_REMOUNT | lib.MS_BIND | JAIL_MOUNT_FLAGS
    _check(lib.confine_mount(ffi.NULL, path, ffi.NULL, remount), f"remount {jail} read-only")
    try:
        os.chdir(jail)
    except OSError as e:
        raise ConfinementError(f"-sandbox on: chdir {jail}: {e.strerror}") from None
    # new_root == put_old: the old root ends up stacked on "." and is detached at once,
    # so the jail needs no old-root directory (pivot_root(2), NOTES).
    _check(lib.confine_pivot_root(b".", b"."), f"pivot_root into {jail}")
    _check(lib.confine_umount2(b".", lib.MNT_DETACH), "detach the old root")
    os.chdir("/")


def limit_file_size() -> None:
    import resource  # a small C module, paid only by sandboxed VMMs (preload_for_jail)

    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))


def drop_privileges(uid: int, gid: int, last_cap: int) -> None:
    failed = ffi.new("int *")
    if (r := lib.confine_drop_bounding_set(last_cap, failed)) < 0:
        _check(r, f"drop capability {failed[0]}")
    clear = lib.PR_CAP_AMBIENT_CLEAR_ALL
    _check(lib.confine_prctl(lib.PR_CAP_AMBIENT, clear, 0, 0, 0), "clear ambient capabilities")
    _check(lib.confine_prctl(lib.PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0), "set securebits")
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise ConfinementError(f"-sandbox on: become {uid}:{gid}: {e.strerror}") from None
    header, data = _cap_structs()
    _check(lib.confine_capset(header, data), "capset (all sets empty)")
    _check(lib.confine_prctl(lib.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")


def check_confined(uid: int, gid: int, last_cap: int) -> None:
    """Read every result back: a guest must never run in a half-confined VMM."""
    header, data = _cap_structs()
    _check(lib.confine_capget(header, data), "capget")
    words = lib._LINUX_CAPABILITY_U32S_3
    sets = [(d.effective, d.permitted, d.inheritable) for d in (data[i] for i in range(words))]
    problems = []
    if any(any(s) for s in sets):
        problems.append("capabilities remain")
    left = lib.confine_capability_sets_left(last_cap)
    if left & 1:
        problems.append("the bounding set is not empty")
    if left & 2:
        problems.append("the ambient set is not empty")
    if lib.confine_prctl(lib.PR_GET_SECUREBITS, 0, 0, 0, 0) != SECUREBITS:
        problems.append("securebits differ")
    if lib.confine_prctl(lib.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        problems.append("no_new_privs is off")
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        problems.append("ids differ")
    if problems:
        raise ConfinementError(f"-sandbox on: after the drop: {', '.join(problems)}")


def _cap_structs():  # -> (header, data[_LINUX_CAPABILITY_U32S_3]), every set empty
    header = ffi.new(
        "struct __user_cap_header_struct *", {"version": lib._LINUX_CAPABILITY_VERSION_3}
    )
    data = ffi.new("struct __user_cap_data_struct[]", lib._LINUX_CAPABILITY_U32S_3)
    return header, data
