"""Build the cffi extension `computed.vmm._kvm` against the system's <linux/kvm.h>.

API mode: the C compiler checks every declaration below against the real
headers, so struct layouts and ioctl numbers come from the kernel's uapi
headers (Debian package linux-libc-dev), never from hand-written numbers.
Structs are declared partially (`...;`): only the fields the VMM touches.

Run: python -m computed.vmm.kvm_build  (the Makefile does this at install).
"""

from __future__ import annotations

import pathlib

import cffi

HERE = pathlib.Path(__file__).resolve().parent
GUESTS = HERE.parent / "guests"

CDEF = r"""
/* --- system ioctls and constants --- */
#define KVM_GET_API_VERSION ...
#define KVM_CREATE_VM ...
#define KVM_CHECK_EXTENSION ...
#define KVM_GET_VCPU_MMAP_SIZE ...
#define KVM_GET_SUPPORTED_CPUID ...

/* --- VM ioctls --- */
#define KVM_SET_USER_MEMORY_REGION ...
#define KVM_SET_TSS_ADDR ...
#define KVM_SET_IDENTITY_MAP_ADDR ...
#define KVM_CREATE_IRQCHIP ...
#define KVM_CREATE_PIT2 ...
#define KVM_REINJECT_CONTROL ...
#define KVM_CREATE_VCPU ...
#define KVM_IRQ_LINE ...
#define KVM_GET_IRQCHIP ...
#define KVM_SET_IRQCHIP ...
#define KVM_GET_PIT2 ...
#define KVM_SET_PIT2 ...
#define KVM_IOEVENTFD ...
#define KVM_IRQFD ...
#define KVM_IOEVENTFD_FLAG_DATAMATCH ...
#define KVM_IOEVENTFD_FLAG_DEASSIGN ...
#define KVM_IRQFD_FLAG_DEASSIGN ...

/* --- vCPU ioctls --- */
#define KVM_RUN ...
#define KVM_GET_REGS ...
#define KVM_SET_REGS ...
#define KVM_GET_SREGS ...
#define KVM_SET_SREGS ...
#define KVM_SET_FPU ...
#define KVM_SET_CPUID2 ...
#define KVM_GET_TSC_KHZ ...
#define KVM_GET_LAPIC ...
#define KVM_SET_LAPIC ...
#define KVM_SET_MP_STATE ...
#define KVM_GET_VCPU_EVENTS ...
#define KVM_SET_VCPU_EVENTS ...

/* --- capabilities --- */
#define KVM_CAP_IRQCHIP ...
#define KVM_CAP_PIT2 ...
#define KVM_CAP_USER_MEMORY ...
#define KVM_CAP_SET_TSS_ADDR ...
#define KVM_CAP_SET_IDENTITY_MAP_ADDR ...
#define KVM_CAP_IMMEDIATE_EXIT ...
#define KVM_CAP_EXT_CPUID ...
#define KVM_CAP_REINJECT_CONTROL ...
#define KVM_CAP_GET_TSC_KHZ ...
#define KVM_CAP_MP_STATE ...
#define KVM_CAP_VCPU_EVENTS ...
#define KVM_CAP_NR_VCPUS ...
#define KVM_CAP_MAX_VCPUS ...
#define KVM_CAP_IOEVENTFD ...
#define KVM_CAP_IRQFD ...

/* --- exits --- */
#define KVM_EXIT_UNKNOWN ...
#define KVM_EXIT_IO ...
#define KVM_EXIT_HLT ...
#define KVM_EXIT_MMIO ...
#define KVM_EXIT_SHUTDOWN ...
#define KVM_EXIT_FAIL_ENTRY ...
#define KVM_EXIT_INTR ...
#define KVM_EXIT_INTERNAL_ERROR ...
#define KVM_EXIT_SYSTEM_EVENT ...
#define KVM_EXIT_IO_IN ...
#define KVM_EXIT_IO_OUT ...
#define KVM_INTERNAL_ERROR_EMULATION ...
#define KVM_MP_STATE_RUNNABLE ...
#define KVM_PIT_SPEAKER_DUMMY ...
#define KVM_IRQCHIP_PIC_MASTER ...
#define KVM_IRQCHIP_PIC_SLAVE ...
#define KVM_IRQCHIP_IOAPIC ...

struct kvm_userspace_memory_region {
    uint32_t slot;
    uint32_t flags;
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
};

struct kvm_segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type;
    uint8_t present, dpl, db, s, l, g, avl;
    uint8_t unusable;
    ...;
};

struct kvm_dtable {
    uint64_t base;
    uint16_t limit;
    ...;
};

struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss;
    struct kvm_segment tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;
    ...;
};

struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx;
    uint64_t rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11;
    uint64_t r12, r13, r14, r15;
    uint64_t rip, rflags;
};

struct kvm_fpu {
    uint16_t fcw;
    uint32_t mxcsr;
    ...;
};

struct kvm_cpuid_entry2 {
    uint32_t function;
    uint32_t index;
    uint32_t flags;
    uint32_t eax;
    uint32_t ebx;
    uint32_t ecx;
    uint32_t edx;
    ...;
};

struct kvm_cpuid2 {
    uint32_t nent;
    struct kvm_cpuid_entry2 entries[];
    ...;
};

struct kvm_pit_config {
    uint32_t flags;
    ...;
};

struct kvm_reinject_control {
    uint8_t pit_reinject;
    ...;
};

struct kvm_ioeventfd {
    uint64_t datamatch;
    uint64_t addr;
    uint32_t len;
    int32_t fd;
    uint32_t flags;
    ...;
};

struct kvm_irqfd {
    uint32_t fd;
    uint32_t gsi;
    uint32_t flags;
    ...;
};

struct kvm_irq_level {
    union {
        uint32_t irq;
        int32_t status;
    };
    uint32_t level;
};

struct kvm_irqchip {
    uint32_t chip_id;
    ...;
};

struct kvm_pit_channel_state {
    uint32_t count;
    uint8_t mode;
    uint8_t gate;
    ...;
};

struct kvm_pit_state2 {
    struct kvm_pit_channel_state channels[3];
    uint32_t flags;
    ...;
};

struct kvm_lapic_state { ...; };
struct kvm_vcpu_events { ...; };

struct kvm_mp_state {
    uint32_t mp_state;
};

struct kvm_run {
    uint8_t request_interrupt_window;
    uint8_t immediate_exit;
    uint32_t exit_reason;
    union {
        struct {
            uint64_t hardware_exit_reason;
        } hw;
        struct {
            uint64_t hardware_entry_failure_reason;
            uint32_t cpu;
        } fail_entry;
        struct {
            uint8_t direction;
            uint8_t size;
            uint16_t port;
            uint32_t count;
            uint64_t data_offset;
        } io;
        struct {
            uint64_t phys_addr;
            uint8_t data[8];
            uint32_t len;
            uint8_t is_write;
        } mmio;
        struct {
            uint32_t suberror;
            uint32_t ndata;
            uint64_t data[16];
        } internal;
        struct {
            uint32_t type;
            uint32_t ndata;
            uint64_t data[16];
        } system_event;
        ...;
    };
    ...;
};

/* --- the guest ABI's boot-info struct, from computed_guest.h --- */
#define COMPUTED_ABI_VERSION ...
#define COMPUTED_BOOT_MAGIC ...
#define COMPUTED_GDT_GPA ...
#define COMPUTED_PML4_GPA ...
#define COMPUTED_PDPT_GPA ...
#define COMPUTED_PD_GPA ...
#define COMPUTED_BOOT_INFO_GPA ...
#define COMPUTED_BOOT_INFO_STRIDE ...
#define COMPUTED_STACKS_GPA ...
#define COMPUTED_STACK_STRIDE ...
#define COMPUTED_IMAGE_MIN_GPA ...
#define COMPUTED_MAX_VCPUS ...
#define COMPUTED_MAX_PD_PAGES ...
#define COMPUTED_SEL_KCODE ...
#define COMPUTED_SEL_KDATA ...
#define COMPUTED_PORT_COM1 ...
#define COMPUTED_PORT_I8042_CMD ...
#define COMPUTED_PORT_POWEROFF ...
#define COMPUTED_PORT_DEBUG_EXIT ...
#define COMPUTED_PORT_EVENTS ...
#define COMPUTED_EVENT_POWER_BUTTON ...
#define COMPUTED_IRQ_EVENTS ...
#define COMPUTED_NAME_MAX ...
#define COMPUTED_UUID_MAX ...
#define COMPUTED_CMDLINE_MAX ...
#define COMPUTED_MAX_NICS ...
#define COMPUTED_VIRTIO_MMIO_GPA ...
#define COMPUTED_VIRTIO_MMIO_STRIDE ...
#define COMPUTED_IRQ_NIC0 ...
#define COMPUTED_VIRTIO_QUEUE_MAX ...

struct computed_nic {
    uint64_t mmio_gpa;
    uint32_t mmio_size;
    uint32_t irq;
    uint8_t mac[6];
    ...;
};

struct computed_boot_info {
    uint32_t magic;
    uint32_t abi_version;
    uint64_t ram_size;
    uint64_t ram_below_4g;
    uint32_t vcpu_count;
    uint32_t vcpu_index;
    uint64_t tsc_khz;
    char name[...];
    char uuid[...];
    char cmdline[...];
    uint32_t nic_count;
    struct computed_nic nics[...];
    ...;
};

/* --- the kernel's vhost-net (<linux/vhost.h>), where /dev/vhost-net exists --- */
#define VHOST_SET_OWNER ...
#define VHOST_GET_FEATURES ...
#define VHOST_SET_FEATURES ...
#define VHOST_SET_MEM_TABLE ...
#define VHOST_SET_VRING_NUM ...
#define VHOST_SET_VRING_ADDR ...
#define VHOST_SET_VRING_BASE ...
#define VHOST_SET_VRING_KICK ...
#define VHOST_SET_VRING_CALL ...
#define VHOST_SET_VRING_ERR ...
#define VHOST_NET_SET_BACKEND ...
#define TUNSETSNDBUF ...
#define TUNGETSNDBUF ...

struct vhost_vring_state {
    unsigned int index;
    unsigned int num;
};

struct vhost_vring_file {
    unsigned int index;
    int fd;
};

struct vhost_vring_addr {
    unsigned int index;
    unsigned int flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};

struct vhost_memory_region {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t flags_padding;
};

struct vhost_memory {
    uint32_t nregions;
    uint32_t padding;
    struct vhost_memory_region regions[];
};

/* --- small C helpers: typed ioctl wrappers (ioctl is variadic) that
   return -errno, the vCPU kick signal handler, thread naming. --- */
int vmm_ioctl(int fd, unsigned long request, void *arg);
int vmm_ioctl_val(int fd, unsigned long request, unsigned long arg);
int vmm_install_kick_handler(int signo);
int vmm_set_thread_name(const char *name);
int vmm_tap_open(const char *name, int vnet_hdr_size);
int vmm_tap_plug(const char *name, const char *bridge);
int vmm_tap_remove(const char *name);
"""

SOURCE = r"""
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/socket.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/kvm.h>
#include <linux/vhost.h>
#include "computed_guest.h"

static int vmm_ioctl(int fd, unsigned long request, void *arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

static int vmm_ioctl_val(int fd, unsigned long request, unsigned long arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

/* The kick signal only has to interrupt KVM_RUN; the handler does nothing. */
static void vmm_kick_noop(int signo) { (void)signo; }

static int vmm_install_kick_handler(int signo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = vmm_kick_noop;
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL) < 0 ? -errno : 0;
}

static int vmm_set_thread_name(const char *name)
{
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0) < 0 ? -errno : 0;
}

static void vmm_ifr(struct ifreq *ifr, const char *name)
{
    memset(ifr, 0, sizeof(*ifr));
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
}

/* An fd attached to tap `name` (created if absent): no packet-info prefix, a
   virtio_net_hdr before each frame. Then `request(arg)` on it. fd or -errno. */
static int vmm_tap_fd(const char *name, int oflags, unsigned long request, void *arg)
{
    struct ifreq ifr;
    int fd, err;
    if (strlen(name) >= IFNAMSIZ)
        return -ENAMETOOLONG;
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | oflags);
    if (fd < 0)
        return -errno;
    vmm_ifr(&ifr, name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, request, arg) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* The VMM's tap backend: a non-blocking fd with vnet_hdr_size-byte headers. */
static int vmm_tap_open(const char *name, int vnet_hdr_size)
{
    return vmm_tap_fd(name, O_NONBLOCK, TUNSETVNETHDRSZ, &vnet_hdr_size);
}

/* Make the tap persistent (on) or let it go with this fd (off). 0 or -errno. */
static int vmm_tap_persist(const char *name, unsigned long on)
{
    int fd = vmm_tap_fd(name, 0, TUNSETPERSIST, (void *)on);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

/* The agent's tap for an instance, without forking `ip`: a persistent tap with a
   vnet header, enslaved to `bridge` (SIOCBRADDIF) and up. Idempotent. 0 or -errno. */
static int vmm_tap_plug(const char *name, const char *bridge)
{
    struct ifreq ifr;
    int sock, index, err;
    if (strlen(bridge) >= IFNAMSIZ)
        return -ENAMETOOLONG;
    err = vmm_tap_persist(name, 1);
    if (err)
        return err;
    sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -errno;
    vmm_ifr(&ifr, name);
    if (ioctl(sock, SIOCGIFINDEX, &ifr) < 0)
        goto fail;
    index = ifr.ifr_ifindex;
    vmm_ifr(&ifr, bridge);
    ifr.ifr_ifindex = index;
    if (ioctl(sock, SIOCBRADDIF, &ifr) < 0 && errno != EBUSY) /* EBUSY: already a port */
        goto fail;
    vmm_ifr(&ifr, name);
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
static int vmm_tap_remove(const char *name)
{
    return vmm_tap_persist(name, 0);
}
"""


def make_builder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "computed.vmm._kvm",
        SOURCE,
        include_dirs=[str(GUESTS)],
        extra_compile_args=["-O2"],
    )
    return ffi


def main() -> None:
    # tmpdir is the repository root, so the module lands next to this file.
    make_builder().compile(tmpdir=str(HERE.parent.parent), verbose=False)


if __name__ == "__main__":
    main()
