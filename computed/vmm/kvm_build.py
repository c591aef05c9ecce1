"""Build the cffi extension `computed.vmm._kvm` against the system's <linux/kvm.h>.

API mode: the C compiler checks every declaration below against the real
headers, so struct layouts and ioctl numbers come from the kernel's uapi
headers (Debian package linux-libc-dev), never from hand-written numbers.
Structs are declared partially (`...;`): only the fields the VMM touches.

Run: python -m computed.vmm.kvm_build  (the Makefile does this at install).
"""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sysconfig

import cffi

HERE = pathlib.Path(__file__).resolve().parent
GUESTS = HERE.parent / "guests" / "sdk" / "include"

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
#define KVM_SYSTEM_EVENT_SHUTDOWN ...
#define KVM_SYSTEM_EVENT_RESET ...
#define KVM_SYSTEM_EVENT_CRASH ...
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
#define COMPUTED_PORT_CONSOLE ...
#define COMPUTED_CONSOLE_WRITE_MAX ...
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

struct computed_console_write {
    uint64_t gpa;
    uint32_t len;
    uint32_t reserved;
};

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

/* --- seccomp (computed/vmm/seccomp.py): load a prebuilt BPF program into the
   calling thread; a SIGSYS handler names the call a filter blocked. --- */
int vmm_seccomp_install(const char *role, const char *program, size_t size);
const char *vmm_syscall_name(int nr);
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

"""


# The seccomp half of the C helpers. A filter's default action is SECCOMP_RET_TRAP:
# the kernel sends the offending thread SIGSYS, and the handler below writes one
# line naming the call and the thread's role to stderr (the agent reports the
# VMM's last stderr line as its reason), then ends the whole process.
SECCOMP_SOURCE = r"""
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

static const char *const vmm_syscall_names[] = {
@SYSCALL_NAMES@
};

static const char *vmm_syscall_name(int nr)
{
    if (nr < 0 || (size_t)nr >= sizeof(vmm_syscall_names) / sizeof(vmm_syscall_names[0])
        || vmm_syscall_names[nr] == NULL)
        return "unknown";
    return vmm_syscall_names[nr];
}

/* Which role each confined thread has, by TID: the handler finds its own with
   gettid(2), which every role allows. A table rather than thread-local storage:
   a dlopen'ed module's TLS may be allocated (malloc) on first touch, which a
   signal handler must not do. A thread that never called install (it inherited
   its creator's filter) is not in it. */
#define VMM_SECCOMP_THREADS 256
static struct { int tid; char role[16]; } vmm_seccomp_threads[VMM_SECCOMP_THREADS];
static int vmm_seccomp_nthreads;

static size_t vmm_cat(char *buf, size_t at, size_t cap, const char *s)
{
    while (*s && at + 1 < cap)
        buf[at++] = *s++;
    return at;
}

static size_t vmm_cat_int(char *buf, size_t at, size_t cap, long v)
{
    char digits[24];
    size_t n = 0;
    unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u && n < sizeof(digits));
    if (v < 0 && at + 1 < cap)
        buf[at++] = '-';
    while (n && at + 1 < cap)
        buf[at++] = digits[--n];
    return at;
}

/* Async-signal-safe: no stdio, no malloc, no locks; write(2), gettid(2) and
   exit_group(2) are allowed by every role's filter. */
static void vmm_seccomp_sigsys(int signo, siginfo_t *info, void *context)
{
    char line[192];
    size_t n = 0, cap = sizeof(line);
    const char *role = NULL;
    int tid = (int)syscall(SYS_gettid), i, count;
    (void)signo;
    (void)context;
    count = __atomic_load_n(&vmm_seccomp_nthreads, __ATOMIC_ACQUIRE);
    for (i = 0; i < count && i < VMM_SECCOMP_THREADS; i++)
        if (__atomic_load_n(&vmm_seccomp_threads[i].tid, __ATOMIC_ACQUIRE) == tid)
            role = vmm_seccomp_threads[i].role;
    n = vmm_cat(line, n, cap, "computed-vmm: error: ");
    if (info->si_code <= 0) { /* SI_USER, SI_TKILL...: sent by a process, not by seccomp */
        n = vmm_cat(line, n, cap, "SIGSYS sent by pid ");
        n = vmm_cat_int(line, n, cap, info->si_pid);
    } else {
        n = vmm_cat(line, n, cap, "seccomp: blocked system call ");
        n = vmm_cat_int(line, n, cap, info->si_syscall);
        n = vmm_cat(line, n, cap, " (");
        n = vmm_cat(line, n, cap, vmm_syscall_name(info->si_syscall));
        n = vmm_cat(line, n, cap, ")");
        if (role != NULL) {
            n = vmm_cat(line, n, cap, " in a ");
            n = vmm_cat(line, n, cap, role);
            n = vmm_cat(line, n, cap, " thread");
        } else {
            n = vmm_cat(line, n, cap, " in a thread that inherited its filter");
        }
    }
    line[n++] = '\n';
    for (size_t done = 0; done < n;) {
        ssize_t w = write(2, line + done, n - done);
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    /* exit_group, not death by SIGSYS: a signal death dumps core, and guest RAM
       must not land in a core file. 128 + SIGSYS is what a shell shows for it. */
    syscall(SYS_exit_group, 128 + SIGSYS);
}

/* Load `program` (struct sock_filter[], as the compiler wrote it) into the
   calling thread. NO_NEW_PRIVS is per thread and required for an unprivileged
   filter, so it is set here too. Filters stack: this thread keeps any it
   inherited. 0 or -errno. */
static int vmm_seccomp_install(const char *role, const char *program, size_t size)
{
    struct sigaction sa;
    struct sock_fprog prog;
    int slot;
    if (size == 0 || size % sizeof(struct sock_filter) != 0
        || size / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return -EINVAL;
    slot = __atomic_fetch_add(&vmm_seccomp_nthreads, 1, __ATOMIC_ACQ_REL);
    if (slot >= VMM_SECCOMP_THREADS)
        return -ENOSPC;
    strncpy(vmm_seccomp_threads[slot].role, role, sizeof(vmm_seccomp_threads[slot].role) - 1);
    /* the role before the TID: a handler that finds the TID finds the role */
    __atomic_store_n(&vmm_seccomp_threads[slot].tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = vmm_seccomp_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigfillset(&sa.sa_mask); /* no kick or host signal in the middle of the report */
    if (sigaction(SIGSYS, &sa, NULL) < 0)
        return -errno;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    prog.len = (unsigned short)(size / sizeof(struct sock_filter));
    prog.filter = (struct sock_filter *)program;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -errno;
    return 0;
}
"""


def syscall_name_table() -> str:
    """C initialisers `[__NR_read] = "read",` for each call <asm/unistd_64.h> defines.

    Only the names come from here (the preprocessor's list of __NR_ macros); the
    numbers stay the header's, placed by the C compiler.
    """
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    macros = subprocess.run(
        [*cc, "-E", "-dM", "-include", "asm/unistd_64.h", "-x", "c", "/dev/null"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    names = sorted(set(re.findall(r"^#define __NR_(\w+) ", macros, re.MULTILINE)))
    return "\n".join(f'    [__NR_{name}] = "{name}",' for name in names)


SOURCE += SECCOMP_SOURCE.replace("@SYSCALL_NAMES@", syscall_name_table())


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
