/*
 * rt: the tiny runtime shared by the bundled computed guests.
 *
 * Ring-0 code on some hosts is emulated instruction by instruction (KVM on a
 * PVM paravirtual hypervisor: ~1M instructions/s), so the runtime keeps every
 * ring-0 path short: interrupt handlers are a handful of instructions, a line
 * of console output is one exit (the console write port of ABI 3; a `rep
 * outsb` to COM1 may exit once per byte), and hot loops are
 * meant to run in ring 3 (rt_enter_user), where they run natively.
 *
 * Ring 3 and the platform: rt_enter_user sets IOPL=3, but a PVM host does not
 * honour it (port I/O and CLI/STI in ring 3 raise #GP) and does not virtualise
 * `int $n` from ring 3 (#UD). So ring-3 code reaches ring 0 through `int3`
 * (RT_SYS_* below), and the rt_port_* / rt_write / rt_poweroff helpers work
 * in either ring: directly when they may, else through that gate.
 *
 * Entry (crt0.S): vCPU 0 calls guest_main(boot) and powers off if it
 * returns; every other vCPU calls guest_ap_main(boot), which by default
 * parks forever with `cli; hlt`. A guest may define either.
 */
#ifndef COMPUTED_RT_H
#define COMPUTED_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "computed_guest.h"

#define RT_NORETURN __attribute__((noreturn))
#define RT_ISR __attribute__((interrupt))
#define RT_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Selectors of the runtime's own GDT (rt_cpu_init). The kernel ones equal the
 * VMM's, so code running before rt_cpu_init and after it agrees. */
#define RT_SEL_KCODE COMPUTED_SEL_KCODE
#define RT_SEL_KDATA COMPUTED_SEL_KDATA
#define RT_SEL_UDATA (0x18u | 3u)
#define RT_SEL_UCODE (0x20u | 3u)
#define RT_SEL_TSS 0x28u

/* Interrupt vectors: the 8259 pair is remapped to 0x20..0x2F. */
#define RT_VEC_IRQ0 0x20u
#define RT_VEC_BP 3u         /* int3: the system call gate (DPL 3) */
#define RT_VEC_SYSCALL 0x80u /* the same gate, for hosts where `int $0x80` works */

/* System calls: `int3` with RAX = number (see crt0.S for the registers). */
#define RT_SYS_HALT 0u  /* sti; hlt: return after the next interrupt */
#define RT_SYS_WRITE 1u /* RSI = buf, RCX = len: to the console (rt_write in ring 0) */
#define RT_SYS_OUT 2u   /* EDX = port, ECX = size (1/2/4), ESI = value */
#define RT_SYS_IN 3u    /* EDX = port, ECX = size -> EAX */
#define RT_SYS_OUTS 4u  /* EDX = port, RSI = buf, RCX = count, R8D = size: rep outs */
#define RT_SYS_INS 5u   /* EDX = port, RDI = buf, RCX = count, R8D = size: rep ins */

#define RT_PIT_HZ 1193182u

/* What the CPU pushes for an interrupt; what __attribute__((interrupt)) takes. */
struct rt_iframe {
	uint64_t rip, cs, rflags, rsp, ss;
};
typedef void (*rt_isr_t)(struct rt_iframe *);

/* The boot info of the vCPU that called guest_main (vCPU 0). */
extern const struct computed_boot_info *rt_boot;

/* Entry points a guest provides. guest_ap_main is optional. */
void guest_main(const struct computed_boot_info *boot);
void guest_ap_main(const struct computed_boot_info *boot);

/* ---- raw port I/O: ring 0 (or ring 3 where IOPL=3 is honoured) ----------- */
static inline void rt_outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void rt_outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void rt_outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t rt_inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint16_t rt_inw(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint32_t rt_inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline uint64_t rt_rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}
static inline void rt_pause(void) { __asm__ volatile("pause"); }
static inline void rt_cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void rt_sti(void) { __asm__ volatile("sti" ::: "memory"); }
/* Ring 0 only: enable interrupts and wait for one atomically, then disable them. */
static inline void rt_sti_hlt_cli(void) { __asm__ volatile("sti; hlt; cli" ::: "memory"); }
/* Ring 3: wait for the next interrupt (the system call gate's sti; hlt). */
static inline void rt_sys_halt(void) { __asm__ volatile("int3" : : "a"(RT_SYS_HALT) : "memory"); }

/* May the running code do port I/O itself? Ring 0, or ring 3 with IOPL=3 in
 * effect (reading RFLAGS back tells: a PVM host clears IOPL). */
static inline int rt_direct_io(void)
{
	uint16_t cs;
	uint64_t fl;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	if (!(cs & 3))
		return 1;
	__asm__ volatile("pushfq; popq %0" : "=r"(fl));
	return (fl & 0x3000) == 0x3000;
}

/* ---- port I/O from either ring (through the gate when needed) ------------- */
void rt_port_out(uint16_t port, unsigned size, uint32_t value); /* size 1, 2 or 4 */
uint32_t rt_port_in(uint16_t port, unsigned size);
void rt_port_outs(uint16_t port, unsigned size, const void *buf, size_t count); /* rep outs */
void rt_port_ins(uint16_t port, unsigned size, void *buf, size_t count);        /* rep ins */

/* ---- console: one I/O exit per call (the console port), from either ring --- */
void rt_write(const char *s, size_t n);
void rt_puts(const char *s); /* no newline added */
/* %s %c %d %u %x %p and %%, with l/ll/z modifiers, '0' flag and a width. One
 * console write per call unless the output exceeds the 512-byte buffer. */
void rt_printf(const char *fmt, ...) RT_PRINTF(1, 2);
void rt_vprintf(const char *fmt, va_list ap);
void rt_putu(uint64_t v);
void rt_putx(uint64_t v);

/* ---- strings and the command line (rt_boot->cmdline) --------------------- */
size_t rt_strlen(const char *s);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
/* Value of the first `key=value` word; NULL if absent. *len gets its length. */
const char *rt_cmdline_get(const char *key, size_t *len);
/* 1 if key is present as `key` or `key=...`. */
int rt_cmdline_has(const char *key);
/* Copy the value (NUL-terminated, truncated to size-1); returns 1 if found. */
int rt_cmdline_str(const char *key, char *out, size_t size);
/* Decimal or 0x-hex value; def if absent or malformed. */
uint64_t rt_cmdline_uint(const char *key, uint64_t def);

/* ---- platform ----------------------------------------------------------- */
RT_NORETURN void rt_poweroff(void);            /* either ring */
RT_NORETURN void rt_debug_exit(uint32_t code); /* either ring; 0 = success */
RT_NORETURN void rt_park(void);                /* ring 0: cli; hlt forever */

/* ---- CPU tables (vCPU-local GDT+TSS, shared IDT) -------------------------- */
/* This vCPU's own GDT (the VMM's kernel segments plus user code/data) and TSS. */
void rt_cpu_init(const struct computed_boot_info *boot);
/* Exceptions -> report and debug-exit 0x100+vector; PIC vectors -> EOI; the
 * system call gate at vectors 3 and 0x80 (DPL 3). */
void rt_idt_init(void);
void rt_idt_set(unsigned vector, void *handler, unsigned dpl);
/* Drop to ring 3 at fn(), stack at user_stack_top, IF=1 and IOPL=3. Interrupts
 * from ring 3 land on the caller's kernel stack (TSS.RSP0 = current RSP), so
 * this never returns. If fn returns, the guest powers off. Runs rt_cpu_init
 * for vCPU 0 if needed; another vCPU must call rt_cpu_init itself first. */
RT_NORETURN void rt_enter_user(void (*fn)(void), void *user_stack_top);

/* ---- 8259 PIC and 8254 PIT: ring 0 ----------------------------------------- */
void rt_pic_init(void); /* remap to 0x20/0x28, every IRQ masked but the cascade (IRQ 2) */
void rt_irq_unmask(unsigned irq);
void rt_irq_mask(unsigned irq);
void rt_irq_set(unsigned irq, rt_isr_t handler); /* vector 0x20 + irq, DPL 0 */
static inline void rt_eoi_master(void) { rt_outb(0x20, 0x20); }
static inline void rt_eoi(unsigned irq)
{
	if (irq >= 8)
		rt_outb(0xA0, 0x20);
	rt_outb(0x20, 0x20);
}
/* Channel 0, mode 2 (rate generator) with the given divisor (0 = 65536) or Hz. */
void rt_pit_divisor(uint16_t divisor);
void rt_pit_hz(unsigned hz);

/* ---- power button: ring 0 set-up, the flag is readable anywhere ------------- */
/* Handler on IRQ COMPUTED_IRQ_EVENTS: reads the event port, acks the same bits,
 * ORs them into rt_events, EOIs. Installs it and unmasks the IRQ. */
void rt_power_button_init(void);
extern volatile uint32_t rt_events;
static inline int rt_power_button_pressed(void)
{
	return (rt_events & COMPUTED_EVENT_POWER_BUTTON) != 0;
}

#endif
