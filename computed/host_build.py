"""Build the cffi extension `computed._host`: the host-side calls the agent and the VMM
share, against the system's headers.

- Tap devices (<linux/if_tun.h>, <linux/sockios.h>): the agent plugs a tap into the
  host bridge and opens it for the VMM; a VMM run by hand opens one itself.
- PR_SET_CHILD_SUBREAPER (<sys/prctl.h>): the agent becomes the parent of the VMMs
  its warm parent forks, so it learns their exit status as its own children's.
- madvise(MADV_MERGEABLE) (<sys/mman.h>): VMMs offer their interpreter's pages to the
  host's same-page merging (computed/vmm/page_merging.py).

API mode, as for KVM (computed/vmm/kvm_build.py): layouts and request numbers
come from the kernel's uapi headers, never from hand-written numbers.

Run: python -m computed.host_build  (the Makefile does this at install).
"""

from __future__ import annotations

import pathlib

import cffi

HERE = pathlib.Path(__file__).resolve().parent

CDEF = r"""
#define PR_SET_CHILD_SUBREAPER ...
#define PR_GET_CHILD_SUBREAPER ...
int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
          unsigned long arg5);

#define MADV_MERGEABLE ...
int madvise(void *addr, size_t length, int advice);

int host_tap_open(const char *name, int vnet_hdr_size);
int host_tap_plug(const char *name, const char *bridge);
int host_tap_remove(const char *name);
"""

SOURCE = r"""
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/socket.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>

static void host_ifr(struct ifreq *ifr, const char *name)
{
    memset(ifr, 0, sizeof(*ifr));
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
}

/* An fd attached to tap `name` (created if absent): no packet-info prefix, a
   virtio_net_hdr before each frame. Then `request(arg)` on it. fd or -errno. */
static int host_tap_fd(const char *name, int oflags, unsigned long request, void *arg)
{
    struct ifreq ifr;
    int fd, err;
    if (strlen(name) >= IFNAMSIZ)
        return -ENAMETOOLONG;
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | oflags);
    if (fd < 0)
        return -errno;
    host_ifr(&ifr, name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, request, arg) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* A VMM's tap backend: a non-blocking fd with vnet_hdr_size-byte headers. */
static int host_tap_open(const char *name, int vnet_hdr_size)
{
    return host_tap_fd(name, O_NONBLOCK, TUNSETVNETHDRSZ, &vnet_hdr_size);
}

/* Make the tap persistent (on) or let it go with this fd (off). 0 or -errno. */
static int host_tap_persist(const char *name, unsigned long on)
{
    int fd = host_tap_fd(name, 0, TUNSETPERSIST, (void *)on);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

/* The agent's tap for an instance, without forking `ip`: a persistent tap with a
   vnet header, enslaved to `bridge` (SIOCBRADDIF) and up. Idempotent. 0 or -errno. */
static int host_tap_plug(const char *name, const char *bridge)
{
    struct ifreq ifr;
    int sock, index, err;
    if (strlen(bridge) >= IFNAMSIZ)
        return -ENAMETOOLONG;
    err = host_tap_persist(name, 1);
    if (err)
        return err;
    sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -errno;
    host_ifr(&ifr, name);
    if (ioctl(sock, SIOCGIFINDEX, &ifr) < 0)
        goto fail;
    index = ifr.ifr_ifindex;
    host_ifr(&ifr, bridge);
    ifr.ifr_ifindex = index;
    if (ioctl(sock, SIOCBRADDIF, &ifr) < 0 && errno != EBUSY) /* EBUSY: already a port */
        goto fail;
    host_ifr(&ifr, name);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
        goto fail;
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
        goto fail;
    close(sock);
    return 0;
fail:
    err = -errno;
    close(sock);
    return err;
}

/* Delete the tap: attach, drop persistence, close. A missing tap is fine. */
static int host_tap_remove(const char *name)
{
    return host_tap_persist(name, 0);
}
"""


def make_builder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("computed._host", SOURCE, extra_compile_args=["-O2"])
    return ffi


def main() -> None:
    # tmpdir is the repository root, so the module lands next to this file.
    make_builder().compile(tmpdir=str(HERE.parent), verbose=False)


if __name__ == "__main__":
    main()
