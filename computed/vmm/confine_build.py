"""Build the cffi extension `computed.vmm._confine`: what the VMM needs to confine itself.

API mode, as `kvm_build.py`: every constant and struct below is checked by the
C compiler against the system headers (<sched.h>, <sys/mount.h>,
<sys/prctl.h>, <linux/capability.h>, <linux/securebits.h>, <sys/syscall.h>,
<linux/if_tun.h>), so no flag value or struct layout is written by hand.
Python 3.11 has no os.unshare, no pivot_root, no capset and no prctl; each
helper here is one system call that returns -errno on failure (prctl and
syscall are variadic, so they need typed wrappers anyway).

Run: python -m computed.vmm.confine_build  (the Makefile does this at install).
"""

from __future__ import annotations

import pathlib

import cffi

HERE = pathlib.Path(__file__).resolve().parent

CDEF = r"""
/* <sched.h> */
#define CLONE_NEWNS ...

/* <sys/mount.h> */
#define MS_BIND ...
#define MS_REC ...
#define MS_PRIVATE ...
#define MS_REMOUNT ...
#define MS_RDONLY ...
#define MS_NOSUID ...
#define MS_NODEV ...
#define MS_NOEXEC ...
#define MNT_DETACH ...

/* <sys/prctl.h> */
#define PR_CAPBSET_READ ...
#define PR_CAPBSET_DROP ...
#define PR_GET_SECUREBITS ...
#define PR_SET_SECUREBITS ...
#define PR_CAP_AMBIENT ...
#define PR_CAP_AMBIENT_IS_SET ...
#define PR_CAP_AMBIENT_CLEAR_ALL ...
#define PR_SET_NO_NEW_PRIVS ...
#define PR_GET_NO_NEW_PRIVS ...
#define PR_GET_DUMPABLE ...

/* <linux/capability.h> */
#define CAP_LAST_CAP ...
#define _LINUX_CAPABILITY_VERSION_3 ...
#define _LINUX_CAPABILITY_U32S_3 ...

struct __user_cap_header_struct {
    uint32_t version;
    int pid;
};

struct __user_cap_data_struct {
    uint32_t effective;
    uint32_t permitted;
    uint32_t inheritable;
};

/* <linux/securebits.h> */
#define SECBIT_NOROOT ...
#define SECBIT_NOROOT_LOCKED ...
#define SECBIT_NO_SETUID_FIXUP ...
#define SECBIT_NO_SETUID_FIXUP_LOCKED ...
#define SECBIT_KEEP_CAPS ...
#define SECBIT_KEEP_CAPS_LOCKED ...
#define SECBIT_NO_CAP_AMBIENT_RAISE ...
#define SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED ...

/* <linux/if_tun.h>, <net/if.h>: what a handed-in tap fd is */
#define IFF_TAP ...
#define IFF_NO_PI ...
#define IFF_VNET_HDR ...
#define IFNAMSIZ ...

int confine_unshare(int flags);
int confine_mount(const char *source, const char *target, const char *fstype,
                  unsigned long flags);
int confine_umount2(const char *target, int flags);
int confine_pivot_root(const char *new_root, const char *put_old);
int confine_prctl(int option, unsigned long arg2, unsigned long arg3,
                  unsigned long arg4, unsigned long arg5);
int confine_drop_bounding_set(int last_cap, int *failed_cap);
int confine_capability_sets_left(int last_cap);
int confine_capget(struct __user_cap_header_struct *header,
                   struct __user_cap_data_struct *data);
int confine_capset(struct __user_cap_header_struct *header,
                   struct __user_cap_data_struct *data);
int confine_tap_info(int fd, char *name, int *flags, int *vnet_hdr_size);
"""

SOURCE = r"""
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <net/if.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <linux/if_tun.h>

static int confine_unshare(int flags)
{
    return unshare(flags) < 0 ? -errno : 0;
}

static int confine_mount(const char *source, const char *target, const char *fstype,
                         unsigned long flags)
{
    return mount(source, target, fstype, flags, NULL) < 0 ? -errno : 0;
}

static int confine_umount2(const char *target, int flags)
{
    return umount2(target, flags) < 0 ? -errno : 0;
}

/* glibc has no pivot_root wrapper. */
static int confine_pivot_root(const char *new_root, const char *put_old)
{
    return syscall(SYS_pivot_root, new_root, put_old) < 0 ? -errno : 0;
}

static int confine_prctl(int option, unsigned long arg2, unsigned long arg3,
                         unsigned long arg4, unsigned long arg5)
{
    int r = prctl(option, arg2, arg3, arg4, arg5);
    return r < 0 ? -errno : r;
}

/* Every capability 0..last_cap out of the bounding set: one call from Python, not one
   per capability (the loop is on every confined VMM's launch path). On failure the
   capability is in *failed_cap. */
static int confine_drop_bounding_set(int last_cap, int *failed_cap)
{
    for (int cap = 0; cap <= last_cap; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            *failed_cap = cap;
            return -errno;
        }
    }
    return 0;
}

/* What is left of capabilities 0..last_cap once dropped: bit 0 set if any is still in
   the bounding set, bit 1 if any is in the ambient set. */
static int confine_capability_sets_left(int last_cap)
{
    int left = 0;
    for (int cap = 0; cap <= last_cap; cap++) {
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 0)
            left |= 1;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) != 0)
            left |= 2;
    }
    return left;
}

/* Raw system calls: glibc wraps neither (libcap does). Per thread, as all
   capability state is. */
static int confine_capget(struct __user_cap_header_struct *header,
                          struct __user_cap_data_struct *data)
{
    return syscall(SYS_capget, header, data) < 0 ? -errno : 0;
}

static int confine_capset(struct __user_cap_header_struct *header,
                          struct __user_cap_data_struct *data)
{
    return syscall(SYS_capset, header, data) < 0 ? -errno : 0;
}

/* The interface name, IFF_* flags and vnet header size of a tun/tap fd. */
static int confine_tap_info(int fd, char *name, int *flags, int *vnet_hdr_size)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (ioctl(fd, TUNGETIFF, &ifr) < 0)
        return -errno;
    if (ioctl(fd, TUNGETVNETHDRSZ, vnet_hdr_size) < 0)
        return -errno;
    memcpy(name, ifr.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = 0;
    *flags = ifr.ifr_flags;
    return 0;
}
"""


def build() -> None:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("computed.vmm._confine", SOURCE)
    ffi.compile(tmpdir=str(HERE.parent.parent), verbose=False)


if __name__ == "__main__":
    build()
