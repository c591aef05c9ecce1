/* rt: the tiny runtime shared by the bundled computed guests (see rt.h). */
#include "computed_rt.h"

const struct computed_boot_info *rt_boot;
volatile uint32_t rt_events;
/* The newest boot-info fields this runtime reads (version 2's NICs). A VMM of
 * an older version is refused; features of newer ones are used when present. */
#define RT_BOOT_INFO_VERSION 2u
static int rt_console_port; /* the VMM has the console write port (version 3) */

extern void rt_syscall_isr(void); /* crt0.S */
RT_NORETURN void rt_start(const struct computed_boot_info *boot);

/* ---- entry ------------------------------------------------------------- */

__attribute__((weak)) void guest_ap_main(const struct computed_boot_info *boot)
{
	(void)boot;
	rt_park();
}

RT_NORETURN void rt_start(const struct computed_boot_info *boot)
{
	if (boot->vcpu_index != 0) {
		guest_ap_main(boot);
		rt_park();
	}
	rt_boot = boot;
	if (boot->magic != COMPUTED_BOOT_MAGIC || boot->abi_version < RT_BOOT_INFO_VERSION) {
		rt_puts("rt: bad boot info (magic or ABI version)\n");
		rt_debug_exit(0xBAD);
	}
	rt_console_port = boot->abi_version >= 3u;
	guest_main(boot);
	rt_poweroff();
}

/* ---- platform ------------------------------------------------------------ */

static inline unsigned rt_cpl(void)
{
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	return cs & 3u;
}

static RT_NORETURN void rt_stop(void)
{
	/* The VMM stops this vCPU on the exit; this only guards against a VMM that
	 * lets it run on. HLT is privileged, so ring 3 spins. */
	for (;;) {
		if (rt_cpl() == 0)
			__asm__ volatile("cli; hlt");
		else
			rt_pause();
	}
}

RT_NORETURN void rt_poweroff(void)
{
	rt_port_out(COMPUTED_PORT_POWEROFF, 1, 0);
	rt_stop();
}

RT_NORETURN void rt_debug_exit(uint32_t code)
{
	rt_port_out(COMPUTED_PORT_DEBUG_EXIT, 4, code);
	rt_stop();
}

/* ---- port I/O from either ring --------------------------------------------------- */

void rt_port_out(uint16_t port, unsigned size, uint32_t value)
{
	if (rt_direct_io()) {
		if (size == 1)
			rt_outb(port, (uint8_t)value);
		else if (size == 2)
			rt_outw(port, (uint16_t)value);
		else
			rt_outl(port, value);
		return;
	}
	uint32_t nr = RT_SYS_OUT;
	__asm__ volatile("int3" : "+a"(nr) : "d"(port), "c"(size), "S"(value) : "memory");
}

uint32_t rt_port_in(uint16_t port, unsigned size)
{
	if (rt_direct_io())
		return size == 1 ? rt_inb(port) : size == 2 ? rt_inw(port) : rt_inl(port);
	uint32_t v = RT_SYS_IN;
	__asm__ volatile("int3" : "+a"(v) : "d"(port), "c"(size) : "memory");
	return v;
}

void rt_port_outs(uint16_t port, unsigned size, const void *buf, size_t count)
{
	if (rt_direct_io()) {
		if (size == 1)
			__asm__ volatile("rep outsb" : "+S"(buf), "+c"(count) : "d"(port) : "memory");
		else if (size == 2)
			__asm__ volatile("rep outsw" : "+S"(buf), "+c"(count) : "d"(port) : "memory");
		else
			__asm__ volatile("rep outsl" : "+S"(buf), "+c"(count) : "d"(port) : "memory");
		return;
	}
	uint32_t nr = RT_SYS_OUTS;
	register uint32_t sz __asm__("r8") = size;
	__asm__ volatile("int3" : "+a"(nr), "+S"(buf), "+c"(count) : "d"(port), "r"(sz) : "memory");
}

void rt_port_ins(uint16_t port, unsigned size, void *buf, size_t count)
{
	if (rt_direct_io()) {
		if (size == 1)
			__asm__ volatile("rep insb" : "+D"(buf), "+c"(count) : "d"(port) : "memory");
		else if (size == 2)
			__asm__ volatile("rep insw" : "+D"(buf), "+c"(count) : "d"(port) : "memory");
		else
			__asm__ volatile("rep insl" : "+D"(buf), "+c"(count) : "d"(port) : "memory");
		return;
	}
	uint32_t nr = RT_SYS_INS;
	register uint32_t sz __asm__("r8") = size;
	__asm__ volatile("int3" : "+a"(nr), "+D"(buf), "+c"(count) : "d"(port), "r"(sz) : "memory");
}

RT_NORETURN void rt_park(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* ---- strings --------------------------------------------------------------- */

size_t rt_strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

void *memset(void *d, int c, size_t n)
{
	void *r = d;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return r;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *r = d;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	return r;
}

/* ---- console ------------------------------------------------------------------ */

/* Through the console write port, in pieces of at most COMPUTED_CONSOLE_WRITE_MAX:
 * one exit each. Its descriptor lives on this stack, and the port takes a 32-bit
 * address: on a stack above 4 GiB, 0 (nothing written) and the caller falls back. */
static int console_port_write(const char *s, size_t n)
{
	struct computed_console_write w = {0, 0, 0};
	uintptr_t at = (uintptr_t)&w;
	if (at >> 32)
		return 0;
	while (n) {
		size_t piece = n < COMPUTED_CONSOLE_WRITE_MAX ? n : COMPUTED_CONSOLE_WRITE_MAX;
		w.gpa = (uint64_t)(uintptr_t)s;
		w.len = (uint32_t)piece;
		__asm__ volatile("outl %0, %1"
				 : : "a"((uint32_t)at), "Nd"((uint16_t)COMPUTED_PORT_CONSOLE)
				 : "memory");
		s += piece;
		n -= piece;
	}
	return 1;
}

void rt_write(const char *s, size_t n)
{
	if (rt_direct_io()) {
		if (rt_console_port && console_port_write(s, n))
			return;
		/* One instruction, but where KVM emulates string I/O an exit per byte. */
		__asm__ volatile("rep outsb" : "+S"(s), "+c"(n) : "d"((uint16_t)COMPUTED_PORT_COM1) : "memory");
	} else {
		uint32_t nr = RT_SYS_WRITE;
		__asm__ volatile("int3" : "+a"(nr), "+S"(s), "+c"(n) : : "rdx", "memory");
	}
}

void rt_puts(const char *s) { rt_write(s, rt_strlen(s)); }

struct outbuf {
	char b[512];
	size_t n;
};

static void ob_putc(struct outbuf *o, char c)
{
	if (o->n == sizeof(o->b)) {
		rt_write(o->b, o->n);
		o->n = 0;
	}
	o->b[o->n++] = c;
}

static void ob_num(struct outbuf *o, uint64_t v, unsigned base, int neg, unsigned width, char pad)
{
	char tmp[24];
	unsigned n = 0;
	do {
		unsigned d = (unsigned)(v % base);
		tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	while (width > n) {
		ob_putc(o, pad);
		width--;
	}
	while (n)
		ob_putc(o, tmp[--n]);
}

void rt_vprintf(const char *fmt, va_list ap)
{
	struct outbuf o;
	o.n = 0;
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			ob_putc(&o, *fmt);
			continue;
		}
		char pad = ' ';
		unsigned width = 0, lng = 0;
		fmt++;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned)(*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			while (*s)
				ob_putc(&o, *s++);
			break;
		}
		case 'c':
			ob_putc(&o, (char)va_arg(ap, int));
			break;
		case 'd': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			ob_num(&o, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, v < 0, width, pad);
			break;
		}
		case 'u':
			ob_num(&o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, 0, width, pad);
			break;
		case 'x':
			ob_num(&o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, 0, width, pad);
			break;
		case 'p':
			ob_putc(&o, '0');
			ob_putc(&o, 'x');
			ob_num(&o, (uintptr_t)va_arg(ap, void *), 16, 0, width, pad);
			break;
		case '\0':
			fmt--;
			break;
		default:
			ob_putc(&o, *fmt);
			break;
		}
	}
	if (o.n)
		rt_write(o.b, o.n);
}

void rt_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	rt_vprintf(fmt, ap);
	va_end(ap);
}

void rt_putu(uint64_t v) { rt_printf("%lu", v); }
void rt_putx(uint64_t v) { rt_printf("%lx", v); }

/* ---- command line ------------------------------------------------------------------ */

static const char *word_match(const char *w, const char *key)
{
	while (*key && *w == *key) {
		w++;
		key++;
	}
	return *key ? NULL : w; /* where the key ended in the word */
}

const char *rt_cmdline_get(const char *key, size_t *len)
{
	const char *p = rt_boot ? rt_boot->cmdline : "";
	while (*p) {
		while (*p == ' ')
			p++;
		if (!*p)
			break;
		const char *end = word_match(p, key);
		if (end && *end == '=') {
			const char *v = end + 1;
			size_t n = 0;
			while (v[n] && v[n] != ' ')
				n++;
			if (len)
				*len = n;
			return v;
		}
		while (*p && *p != ' ')
			p++;
	}
	return NULL;
}

int rt_cmdline_has(const char *key)
{
	if (rt_cmdline_get(key, NULL))
		return 1;
	const char *p = rt_boot ? rt_boot->cmdline : "";
	while (*p) {
		while (*p == ' ')
			p++;
		const char *end = word_match(p, key);
		if (end && (*end == ' ' || *end == '\0') && end != p)
			return 1;
		while (*p && *p != ' ')
			p++;
	}
	return 0;
}

int rt_cmdline_str(const char *key, char *out, size_t size)
{
	size_t n;
	const char *v = rt_cmdline_get(key, &n);
	if (!v)
		return 0;
	if (size) {
		if (n > size - 1)
			n = size - 1;
		memcpy(out, v, n);
		out[n] = '\0';
	}
	return 1;
}

uint64_t rt_cmdline_uint(const char *key, uint64_t def)
{
	size_t n;
	const char *v = rt_cmdline_get(key, &n);
	if (!v || n == 0)
		return def;
	unsigned base = 10;
	if (n > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
		base = 16;
		v += 2;
		n -= 2;
	}
	uint64_t r = 0;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return def;
		if (r > (UINT64_MAX - d) / base)
			return def;
		r = r * base + d;
	}
	return r;
}

/* ---- IDT ------------------------------------------------------------------------------ */

struct idt_gate {
	uint16_t off0, sel;
	uint8_t ist, attr;
	uint16_t off1;
	uint32_t off2, zero;
};

struct __attribute__((packed)) dtr {
	uint16_t limit;
	uint64_t base;
};

/* In .data, not .bss: computed-guest-cc writes the gates of rt_idt_plan into the image
 * (computed/guests/sdk/prebuilt_idt.py) and sets rt_idt_prebuilt, so that a boot only
 * loads it: built here, 49 gates were 1.1 ms of emulated ring 0 at every boot. */
struct idt_gate rt_idt[256] __attribute__((aligned(16), section(".data.rt_idt")));
volatile uint32_t rt_idt_prebuilt __attribute__((section(".data.rt_idt"))) = 0;

void rt_idt_set(unsigned vector, void *handler, unsigned dpl)
{
	uint64_t a = (uint64_t)(uintptr_t)handler;
	struct idt_gate *g = &rt_idt[vector & 0xFF];
	g->off0 = (uint16_t)a;
	g->sel = RT_SEL_KCODE;
	g->ist = 0;
	g->attr = (uint8_t)(0x8E | (dpl & 3) << 5); /* present, 64-bit interrupt gate */
	g->off1 = (uint16_t)(a >> 16);
	g->off2 = (uint32_t)(a >> 32);
	g->zero = 0;
}

static RT_NORETURN void exception(unsigned vec, struct rt_iframe *f, uint64_t err)
{
	uint64_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	rt_printf("rt: exception %u err=%lx rip=%lx cs=%lx rflags=%lx rsp=%lx cr2=%lx\n", vec, err,
		  f->rip, f->cs, f->rflags, f->rsp, cr2);
	rt_debug_exit(0x100u + vec);
}

#define EXC(n)                                                                   \
	RT_ISR static void exc##n(struct rt_iframe *f) { exception(n, f, 0); }
#define EXC_ERR(n)                                                               \
	RT_ISR static void exc##n(struct rt_iframe *f, unsigned long err) { exception(n, f, err); }
/* No #BP (3): it is the system call gate. */
EXC(0) EXC(1) EXC(2) EXC(4) EXC(5) EXC(6) EXC(7) EXC_ERR(8) EXC(9)
EXC_ERR(10) EXC_ERR(11) EXC_ERR(12) EXC_ERR(13) EXC_ERR(14) EXC(15) EXC(16)
EXC_ERR(17) EXC(18) EXC(19) EXC(20) EXC_ERR(21) EXC(22) EXC(23) EXC(24) EXC(25)
EXC(26) EXC(27) EXC(28) EXC_ERR(29) EXC_ERR(30) EXC(31)

/* Unclaimed PIC vectors: acknowledge and return. IRQ 7 and 15 are where the
 * 8259 delivers spurious interrupts; a spurious IRQ 7 must not be EOI'd and a
 * spurious IRQ 15 only needs the master's. (Both stay masked, so any arrival
 * there is spurious.) */
RT_ISR static void irq_master_default(struct rt_iframe *f) { (void)f; rt_eoi(0); }
RT_ISR static void irq_slave_default(struct rt_iframe *f) { (void)f; rt_eoi(8); }
RT_ISR static void irq_spurious_master(struct rt_iframe *f) { (void)f; }
RT_ISR static void irq_spurious_slave(struct rt_iframe *f) { (void)f; rt_eoi_master(); }

/* Every gate rt_idt_init() installs, one per vector; prebuilt_idt.py reads it (its
 * layout is that file's _SLOT). */
struct rt_idt_slot {
	void *handler;
	uint8_t vector, dpl;
};

#define EXC_SLOT(n) {exc##n, n, 0}
#define IRQ_SLOT(n, h) {h, RT_VEC_IRQ0 + (n), 0}
const struct rt_idt_slot rt_idt_plan[] = {
	EXC_SLOT(0), EXC_SLOT(1), EXC_SLOT(2), {rt_syscall_isr, RT_VEC_BP, 3}, EXC_SLOT(4),
	EXC_SLOT(5), EXC_SLOT(6), EXC_SLOT(7), EXC_SLOT(8), EXC_SLOT(9), EXC_SLOT(10),
	EXC_SLOT(11), EXC_SLOT(12), EXC_SLOT(13), EXC_SLOT(14), EXC_SLOT(15), EXC_SLOT(16),
	EXC_SLOT(17), EXC_SLOT(18), EXC_SLOT(19), EXC_SLOT(20), EXC_SLOT(21), EXC_SLOT(22),
	EXC_SLOT(23), EXC_SLOT(24), EXC_SLOT(25), EXC_SLOT(26), EXC_SLOT(27), EXC_SLOT(28),
	EXC_SLOT(29), EXC_SLOT(30), EXC_SLOT(31),
	IRQ_SLOT(0, irq_master_default), IRQ_SLOT(1, irq_master_default),
	IRQ_SLOT(2, irq_master_default), IRQ_SLOT(3, irq_master_default),
	IRQ_SLOT(4, irq_master_default), IRQ_SLOT(5, irq_master_default),
	IRQ_SLOT(6, irq_master_default), IRQ_SLOT(7, irq_spurious_master),
	IRQ_SLOT(8, irq_slave_default), IRQ_SLOT(9, irq_slave_default),
	IRQ_SLOT(10, irq_slave_default), IRQ_SLOT(11, irq_slave_default),
	IRQ_SLOT(12, irq_slave_default), IRQ_SLOT(13, irq_slave_default),
	IRQ_SLOT(14, irq_slave_default), IRQ_SLOT(15, irq_spurious_slave),
	{rt_syscall_isr, RT_VEC_SYSCALL, 3},
};

void rt_idt_init(void)
{
	if (!rt_idt_prebuilt) /* an image not built by computed-guest-cc */
		for (unsigned i = 0; i < sizeof(rt_idt_plan) / sizeof(rt_idt_plan[0]); i++)
			rt_idt_set(rt_idt_plan[i].vector, rt_idt_plan[i].handler, rt_idt_plan[i].dpl);
	struct dtr d = {sizeof(rt_idt) - 1, (uint64_t)(uintptr_t)rt_idt};
	__asm__ volatile("lidt %0" : : "m"(d) : "memory");
}


/* ---- GDT and TSS, one per vCPU ---------------------------------------------------------- */

struct __attribute__((packed)) tss64 {
	uint32_t rsv0;
	uint64_t rsp[3];
	uint64_t rsv1;
	uint64_t ist[7];
	uint64_t rsv2;
	uint16_t rsv3, iomap_base;
};

#define GDT_ENTRIES 8
static uint64_t gdt[COMPUTED_MAX_VCPUS][GDT_ENTRIES] __attribute__((aligned(16)));
static struct tss64 tss[COMPUTED_MAX_VCPUS] __attribute__((aligned(16)));

void rt_cpu_init(const struct computed_boot_info *boot)
{
	unsigned i = boot->vcpu_index % COMPUTED_MAX_VCPUS;
	struct tss64 *t = &tss[i];
	uint64_t base = (uint64_t)(uintptr_t)t, limit = sizeof(*t) - 1;
	t->iomap_base = sizeof(*t); /* no I/O bitmap: ring 3 relies on IOPL=3 */
	uint64_t *g = gdt[i];
	g[0] = 0;
	g[1] = 0x00AF9B000000FFFFull; /* 0x08 kernel code, 64-bit */
	g[2] = 0x00CF93000000FFFFull; /* 0x10 kernel data */
	g[3] = 0x00CFF3000000FFFFull; /* 0x18 user data, DPL 3 */
	g[4] = 0x00AFFB000000FFFFull; /* 0x20 user code, 64-bit, DPL 3 */
	g[5] = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | 0x89ull << 40 |
	       ((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56; /* 0x28 TSS */
	g[6] = base >> 32;
	g[7] = 0;

	struct dtr gd = {sizeof(gdt[0]) - 1, (uint64_t)(uintptr_t)g};
	__asm__ volatile("lgdt %0\n\t"
			 "pushq %1\n\t"
			 "leaq 1f(%%rip), %%rax\n\t"
			 "pushq %%rax\n\t"
			 "lretq\n"
			 "1:\n\t"
			 "mov %2, %%ds\n\t"
			 "mov %2, %%es\n\t"
			 "mov %2, %%ss\n\t"
			 "mov %2, %%fs\n\t"
			 "mov %2, %%gs\n\t"
			 "ltr %w3"
			 :
			 : "m"(gd), "i"((uint64_t)RT_SEL_KCODE), "r"(RT_SEL_KDATA), "r"(RT_SEL_TSS)
			 : "rax", "memory");
}

static RT_NORETURN void user_return(void) { rt_poweroff(); }

/* Index of this vCPU's runtime GDT, or -1 if rt_cpu_init has not run here. */
static int current_cpu(void)
{
	struct dtr g;
	__asm__ volatile("sgdt %0" : "=m"(g));
	uint64_t off = g.base - (uint64_t)(uintptr_t)gdt;
	return off < sizeof(gdt) ? (int)(off / sizeof(gdt[0])) : -1;
}

RT_NORETURN void rt_enter_user(void (*fn)(void), void *user_stack_top)
{
	int i = current_cpu();
	if (i < 0) {
		rt_cpu_init(rt_boot);
		i = current_cpu();
	}
	uint64_t rsp;
	__asm__ volatile("mov %%rsp, %0" : "=r"(rsp));
	/* Everything below this frame is free for good: we never come back. */
	tss[i].rsp[0] = rsp & ~15ull;

	uint64_t *usp = (uint64_t *)(((uintptr_t)user_stack_top & ~15ull) - 8);
	*usp = (uint64_t)(uintptr_t)user_return; /* as if fn had been called */
	__asm__ volatile("pushq %0\n\t"
			 "pushq %1\n\t"
			 "pushq %2\n\t"
			 "pushq %3\n\t"
			 "pushq %4\n\t"
			 "iretq"
			 :
			 : "i"((uint64_t)RT_SEL_UDATA), "r"(usp), "i"(0x3202ull /* IOPL=3 IF */),
			   "i"((uint64_t)RT_SEL_UCODE), "r"(fn)
			 : "memory");
	__builtin_unreachable();
}

/* ---- 8259 PIC and 8254 PIT ---------------------------------------------------------------- */

static uint16_t pic_mask = 0xFFFF; /* bit n = IRQ n masked; cached to save I/O exits */

static void pic_write_mask(unsigned irq)
{
	if (irq < 8)
		rt_outb(0x21, (uint8_t)pic_mask);
	else
		rt_outb(0xA1, (uint8_t)(pic_mask >> 8));
}

void rt_pic_init(void)
{
	rt_outb(0x20, 0x11); /* ICW1: edge, cascade, ICW4 needed */
	rt_outb(0xA0, 0x11);
	rt_outb(0x21, RT_VEC_IRQ0);     /* ICW2: vector base */
	rt_outb(0xA1, RT_VEC_IRQ0 + 8);
	rt_outb(0x21, 0x04);            /* ICW3: slave on IRQ 2 */
	rt_outb(0xA1, 0x02);
	rt_outb(0x21, 0x01);            /* ICW4: 8086 mode, normal EOI */
	rt_outb(0xA1, 0x01);
	pic_mask = 0xFFFF & ~(1u << 2); /* all masked but the cascade */
	rt_outb(0x21, (uint8_t)pic_mask);
	rt_outb(0xA1, (uint8_t)(pic_mask >> 8));
}

void rt_irq_unmask(unsigned irq)
{
	pic_mask &= (uint16_t)~(1u << (irq & 15));
	pic_write_mask(irq & 15);
}

void rt_irq_mask(unsigned irq)
{
	pic_mask |= (uint16_t)(1u << (irq & 15));
	pic_write_mask(irq & 15);
}

void rt_irq_set(unsigned irq, rt_isr_t handler) { rt_idt_set(RT_VEC_IRQ0 + (irq & 15), (void *)handler, 0); }

void rt_pit_divisor(uint16_t divisor)
{
	rt_outb(0x43, 0x34); /* channel 0, lobyte/hibyte, mode 2, binary */
	rt_outb(0x40, (uint8_t)divisor);
	rt_outb(0x40, (uint8_t)(divisor >> 8));
}

void rt_pit_hz(unsigned hz)
{
	uint32_t div = hz ? (RT_PIT_HZ + hz / 2) / hz : 0;
	if (div < 2)
		div = 2;
	if (div > 0xFFFF)
		div = 0; /* 65536: the slowest rate, ~18.2 Hz */
	rt_pit_divisor((uint16_t)div);
}

/* ---- power button ----------------------------------------------------------------------- */

RT_ISR static void events_isr(struct rt_iframe *f)
{
	(void)f;
	uint32_t ev = rt_inl(COMPUTED_PORT_EVENTS);
	rt_outl(COMPUTED_PORT_EVENTS, ev); /* ack exactly what we saw */
	rt_events |= ev;
	rt_eoi(COMPUTED_IRQ_EVENTS);
}

void rt_power_button_init(void)
{
	rt_irq_set(COMPUTED_IRQ_EVENTS, events_isr);
	rt_irq_unmask(COMPUTED_IRQ_EVENTS);
	/* An edge raised before the PIC was programmed is lost (ICW1 clears IRR),
	 * so look once for an event that is already pending. */
	uint32_t ev = rt_inl(COMPUTED_PORT_EVENTS);
	if (ev) {
		rt_outl(COMPUTED_PORT_EVENTS, ev);
		rt_events |= ev;
	}
}
