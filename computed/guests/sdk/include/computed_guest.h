/*
 * computed guest ABI, version 3 (version 1 plus network interfaces in version 2,
 * plus the console write port in version 3; the boot info only grew at its end,
 * so an older reader still reads it right).
 *
 * A computed guest image is an ELF64 x86-64 executable (ET_EXEC). The VMM
 * loads its PT_LOAD segments at their physical addresses (p_paddr), which
 * must lie in guest RAM at or above COMPUTED_IMAGE_MIN_GPA, and starts
 * every vCPU at e_entry in 64-bit long mode:
 *
 *   CS = COMPUTED_SEL_KCODE, DS/ES/SS/FS/GS = COMPUTED_SEL_KDATA, ring 0
 *   CR0 = PE|MP|ET|NE|WP|PG, CR4 = PAE|OSFXSR|OSXMMEXCPT, EFER = LME|LMA|NXE
 *   CR3 = COMPUTED_PML4_GPA: an identity map of guest-physical [0, N GiB) with
 *         N = max(4, ceil(top / 1 GiB)), where top is one past the highest RAM
 *         address (RAM beyond ram_below_4g sits from 4 GiB up): so all RAM and
 *         at least the first 4 GiB (the device windows below 4 GiB) are mapped,
 *         at most COMPUTED_MAX_PD_PAGES GiB. 2 MiB pages, present|writable|user
 *         on every level, so ring 3 needs no page tables of its own
 *   RFLAGS = 0x2 (interrupts disabled), no IDT loaded
 *   RDI = guest-physical address of this vCPU's struct computed_boot_info
 *   RSP = top of a per-vCPU 8 KiB stack inside VMM-reserved memory, 16-byte
 *         aligned. Note: that is RSP % 16 == 0 at the first instruction, while
 *         a C function expects RSP % 16 == 8 (a return address pushed); an
 *         entry written in C must realign (the SDK's crt0 does: and $-16; call)
 *
 * No SSE in ring 0: CR4.OSFXSR is set, but on PVM hosts guest ring 0 is
 * emulated and the emulator has no vector instructions, so one SSE
 * instruction in ring 0 ends the VM (exit 4). Build with -mgeneral-regs-only
 * (computed-guest-cc does), or keep vector code in ring 3.
 *
 * Guest-physical memory below COMPUTED_IMAGE_MIN_GPA belongs to the VMM
 * (GDT, page tables, boot info, stacks). RAM is mapped from address 0 up to
 * ram_below_4g; any RAM beyond that is mapped from 4 GiB upward.
 *
 * Interrupts: the platform has the PC's in-kernel 8259 PIC pair, IOAPIC,
 * LAPICs and an 8254 PIT on IRQ 0. ISA interrupts are delivered to vCPU 0
 * through the PIC (its LAPIC LINT0 is in ExtINT mode at reset).
 * Platform events (the power button) raise ISA IRQ COMPUTED_IRQ_EVENTS.
 *
 * Build an image with the guest SDK, which passes every flag this needs:
 *   computed-guest-cc guest.c -o guest.elf      (or python -m computed.guests.sdk)
 *   computed-guest-cc --print-cflags            (for your own build system)
 * The flags that matter: -ffreestanding -nostdlib -static -fno-pic -no-pie
 * -mno-red-zone -mgeneral-regs-only -fno-stack-protector (no TLS canary), linked
 * at 0x100000 (the SDK's guest.ld; see docs/guest-abi.md for a bare build).
 *
 * On every exit but a clean power-off the VMM appends one line of its own to the
 * console, "[computed-vmm] <reason>\n" (e.g. "guest exited with code 7"), starting
 * a new line first if the guest's output did not end with one.
 *
 * At entry, RAM outside the image's file contents is zero (.bss included),
 * the PIC and PIT are in their reset state (PIT channel 0 not counting), and
 * guest-physical addresses inside the identity map that no RAM or device
 * backs read as all-ones and ignore writes. tsc_khz may be 0 where the host
 * cannot tell.
 */
#ifndef COMPUTED_GUEST_H
#define COMPUTED_GUEST_H

#include <stdint.h>

#define COMPUTED_ABI_VERSION 3u
#define COMPUTED_BOOT_MAGIC 0x44504d43u /* "CMPD" little-endian */

/* Guest-physical layout owned by the VMM. */
#define COMPUTED_GDT_GPA 0x1000u
#define COMPUTED_PML4_GPA 0x2000u
#define COMPUTED_PDPT_GPA 0x3000u
#define COMPUTED_PD_GPA 0x10000u /* one 4 KiB page directory per GiB mapped */
#define COMPUTED_BOOT_INFO_GPA 0x80000u /* + vcpu_index * COMPUTED_BOOT_INFO_STRIDE */
#define COMPUTED_BOOT_INFO_STRIDE 0x1000u
#define COMPUTED_STACKS_GPA 0xA0000u /* vCPU i's stack top: + (i + 1) * stride */
#define COMPUTED_STACK_STRIDE 0x2000u
#define COMPUTED_IMAGE_MIN_GPA 0x100000u
#define COMPUTED_MAX_VCPUS 32u
#define COMPUTED_MAX_PD_PAGES 65u /* maps up to 65 GiB of guest-physical space */

/* GDT selectors installed by the VMM. */
#define COMPUTED_SEL_KCODE 0x08u
#define COMPUTED_SEL_KDATA 0x10u

/* I/O ports of the platform. */
#define COMPUTED_PORT_COM1 0x3F8u       /* 16550 UART (transmit side) -> console */
#define COMPUTED_PORT_I8042_CMD 0x64u   /* write 0xFE: system reset (reboot) */
#define COMPUTED_PORT_POWEROFF 0x500u   /* write anything: power off, exit 0 */
#define COMPUTED_PORT_DEBUG_EXIT 0x504u /* write code: exit; 0 = success, else VMM exit 5.
	* Any width (1, 2, 4) at 0x504..0x507: the value written, zero-extended, is the
	* code (so use a 4-byte write at 0x504 to send all 32 bits); reads return 0. */
#define COMPUTED_PORT_EVENTS 0x508u     /* read u32: pending events; write: ack bits */
#define COMPUTED_PORT_CONSOLE 0x50Cu    /* version 3: write u32, see below */

#define COMPUTED_EVENT_POWER_BUTTON 0x1u
#define COMPUTED_IRQ_EVENTS 5u /* ISA IRQ raised (edge) when an event is pending */

/*
 * Network interfaces: virtio-net devices on the virtio-mmio transport
 * (virtio 1.x, "modern", MMIO register layout version 2; device id 1).
 * NIC i's registers are at COMPUTED_VIRTIO_MMIO_GPA + i * COMPUTED_VIRTIO_MMIO_STRIDE
 * and it raises ISA IRQ COMPUTED_IRQ_NIC0 + i (edge) when it has used buffers
 * or a configuration change; InterruptStatus/InterruptACK work as the spec
 * says. Queue 0 receives, queue 1 transmits, at most COMPUTED_VIRTIO_QUEUE_MAX
 * entries each. Offered features: VIRTIO_F_VERSION_1 (32) and VIRTIO_NET_F_MAC
 * (5); every buffer starts with the 12-byte struct virtio_net_hdr_v1 (all
 * zero on transmit; num_buffers = 1 on receive). boot_info.nics says which
 * exist, with their MAC (also in the device's config space at offset 0x100).
 */
#define COMPUTED_MAX_NICS 2u
#define COMPUTED_VIRTIO_MMIO_GPA 0xD0000000u
#define COMPUTED_VIRTIO_MMIO_STRIDE 0x1000u
#define COMPUTED_IRQ_NIC0 10u
#define COMPUTED_VIRTIO_QUEUE_MAX 256u

/*
 * The console write port (version 3): a whole string in one exit. A 4-byte write
 * to COMPUTED_PORT_CONSOLE gives the guest-physical address of a struct
 * computed_console_write; the VMM sends its `len` bytes from `gpa` to the console,
 * as if written to COM1 one by one. (A `rep outsb` to COM1 costs an exit per byte
 * where KVM emulates string I/O, as it does on PVM hosts.) A request with the
 * descriptor or the bytes outside guest RAM, or len over COMPUTED_CONSOLE_WRITE_MAX,
 * writes nothing. Check boot_info.abi_version >= 3 before using it.
 */
#define COMPUTED_CONSOLE_WRITE_MAX 4096u
struct computed_console_write {
	uint64_t gpa;      /* the bytes */
	uint32_t len;      /* 0 .. COMPUTED_CONSOLE_WRITE_MAX */
	uint32_t reserved; /* 0 */
};

#define COMPUTED_NAME_MAX 64
#define COMPUTED_UUID_MAX 40
#define COMPUTED_CMDLINE_MAX 2048

/* One per vCPU, read-only for the guest. Strings are NUL-terminated. */
struct computed_boot_info {
	uint32_t magic;        /* COMPUTED_BOOT_MAGIC */
	uint32_t abi_version;  /* COMPUTED_ABI_VERSION */
	uint64_t ram_size;     /* bytes of guest RAM in all */
	uint64_t ram_below_4g; /* bytes of RAM mapped from guest-physical 0 */
	uint32_t vcpu_count;
	uint32_t vcpu_index;   /* 0 .. vcpu_count-1; vCPU 0 receives ISA interrupts */
	uint64_t tsc_khz;      /* guest TSC frequency */
	char name[COMPUTED_NAME_MAX];
	char uuid[COMPUTED_UUID_MAX];
	char cmdline[COMPUTED_CMDLINE_MAX];
	/* ---- version 2 ---- */
	uint32_t nic_count;    /* 0 .. COMPUTED_MAX_NICS */
	uint32_t reserved0;
	struct computed_nic {
		uint64_t mmio_gpa;  /* its virtio-mmio registers */
		uint32_t mmio_size;
		uint32_t irq;       /* ISA IRQ */
		uint8_t mac[6];
		uint16_t reserved;
	} nics[COMPUTED_MAX_NICS];
};

#endif
