/*
 * chaos: a hostile guest for testing the VMM. Every round, from ring 3:
 *   - random single port reads/writes of 1, 2 and 4 bytes,
 *   - rep ins/outs of 4096 bytes to random ports,
 *   - random MMIO reads/writes of 1..8 bytes just beyond RAM (inside the
 *     identity map, where nothing is backed),
 *   - all under an interrupt storm: PIT channel 0 at divisor 2 on IRQ 0,
 *     with a handler that only EOIs, plus a few halts through the system call
 *     gate so interrupts also land on a halted vCPU.
 * It leaves alone the ports that would end or reset the VM and those that
 * would break its own timer, PIC and console (see port_ok).
 *
 * Command line: seed=S (xorshift seed, default 1), rounds=N (0 = forever;
 * after N rounds print `chaos: done` and power off). Prints
 * `chaos: round <n>` after each round. The power button powers off.
 */
#include <computed_rt.h>

#define PORT_OPS 256u   /* single port accesses per round */
#define STRING_OPS 8u   /* rep ins/outs per round */
#define STRING_BYTES 4096u
#define MMIO_OPS 64u    /* MMIO accesses per round */
#define HALTS 16u       /* int $0x80 per round */

static uint64_t rng, rounds;
static uint64_t mmio_lo[2], mmio_hi[2]; /* [lo, hi) ranges, hi - lo >= 8 when used */
static unsigned mmio_ranges;
static uint8_t buf[STRING_BYTES] __attribute__((aligned(64)));
static uint8_t user_stack[16384] __attribute__((aligned(16)));

static inline uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Just EOI: the storm's only cost should be the interrupts themselves. */
RT_ISR static void storm_isr(struct rt_iframe *f)
{
	(void)f;
	rt_eoi_master();
}

static int overlaps(unsigned p, unsigned size, unsigned lo, unsigned hi)
{
	return p <= hi && p + size - 1 >= lo;
}

/* May [p, p+size) be touched? */
static int port_ok(unsigned p, unsigned size, int write)
{
	return !(overlaps(p, size, 0x20, 0x21) ||    /* master PIC */
		 overlaps(p, size, 0x40, 0x43) ||    /* PIT */
		 overlaps(p, size, 0x64, 0x64) ||    /* i8042 command: 0xFE resets */
		 overlaps(p, size, 0x92, 0x92) ||    /* system control A: bit 0 resets a PC */
		 overlaps(p, size, 0xA0, 0xA1) ||    /* slave PIC */
		 overlaps(p, size, 0x4D0, 0x4D1) ||  /* ELCR: would make IRQ 0/5 level-triggered */
		 overlaps(p, size, 0x500, 0x50B) ||  /* power off, debug exit, events */
		 overlaps(p, size, 0xCF9, 0xCF9) ||  /* reset control register on a PC */
		 (write && overlaps(p, size, COMPUTED_PORT_COM1, COMPUTED_PORT_COM1 + 7)) ||
		 p + size > 0x10000);
}

static unsigned random_port(unsigned size, int write)
{
	unsigned p;
	do
		p = (unsigned)(rnd() & 0xFFFF);
	while (!port_ok(p, size, write));
	return p;
}

static void port_op(void)
{
	uint64_t r = rnd();
	unsigned size = 1u << (r % 3), write = (r >> 2) & 1;
	uint16_t p = (uint16_t)random_port(size, (int)write);
	if (write)
		rt_port_out(p, size, (uint32_t)(r >> 32));
	else
		(void)rt_port_in(p, size);
}

static void string_op(void)
{
	uint64_t r = rnd();
	unsigned size = 1u << (r % 3), write = (r >> 2) & 1;
	uint16_t p = (uint16_t)random_port(size, (int)write);
	if (write) {
		for (unsigned i = 0; i < 8; i++) /* fresh garbage, cheaply */
			((uint64_t *)buf)[(r >> (8 + i * 5)) % (STRING_BYTES / 8)] = rnd();
		rt_port_outs(p, size, buf, STRING_BYTES / size);
	} else {
		rt_port_ins(p, size, buf, STRING_BYTES / size);
	}
}

static void mmio_op(void)
{
	uint64_t r = rnd(), x = rnd();
	unsigned k = (unsigned)(r & 1) % mmio_ranges;
	unsigned size = 1u << ((r >> 1) & 3), write = (r >> 3) & 1;
	uint64_t a = mmio_lo[k] + (x % (mmio_hi[k] - mmio_lo[k] - 7)); /* any alignment */
	if ((r >> 4) & 1) /* half of them near the start of the hole */
		a = mmio_lo[k] + (x & 0xFFF);
	if (write) {
		switch (size) {
		case 1: __asm__ volatile("movb %b1, (%0)" : : "r"(a), "r"(r >> 8) : "memory"); break;
		case 2: __asm__ volatile("movw %w1, (%0)" : : "r"(a), "r"(r >> 8) : "memory"); break;
		case 4: __asm__ volatile("movl %k1, (%0)" : : "r"(a), "r"(r >> 8) : "memory"); break;
		default: __asm__ volatile("movq %1, (%0)" : : "r"(a), "r"(x) : "memory"); break;
		}
	} else {
		uint64_t v;
		switch (size) {
		case 1: __asm__ volatile("movzbl (%1), %k0" : "=r"(v) : "r"(a) : "memory"); break;
		case 2: __asm__ volatile("movzwl (%1), %k0" : "=r"(v) : "r"(a) : "memory"); break;
		case 4: __asm__ volatile("movl (%1), %k0" : "=r"(v) : "r"(a) : "memory"); break;
		default: __asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(a) : "memory"); break;
		}
		(void)v;
	}
}

static void check_power_button(void)
{
	if (rt_power_button_pressed()) {
		rt_puts("chaos: power button, shutting down\n");
		rt_poweroff();
	}
}

static void chaos_user(void)
{
	for (uint64_t round = 1; !rounds || round <= rounds; round++) {
		/* Re-arm the storm: channel 0, mode 2, divisor 2 (the fastest). */
		rt_port_out(0x43, 1, 0x34);
		rt_port_out(0x40, 1, 2);
		rt_port_out(0x40, 1, 0);
		for (unsigned i = 0; i < PORT_OPS; i++) {
			port_op();
			if (i % 32 == 0) {
				string_op();
				if (mmio_ranges)
					for (unsigned j = 0; j < MMIO_OPS / 8; j++)
						mmio_op();
				check_power_button();
			}
			if (i % (PORT_OPS / HALTS) == 0)
				rt_sys_halt();
		}
		check_power_button();
		rt_printf("chaos: round %lu\n", round);
	}
	rt_puts("chaos: done\n");
	rt_poweroff();
}

static uint64_t gib_up(uint64_t a) { return (a + (1ull << 30) - 1) & ~((1ull << 30) - 1); }

static void add_mmio_range(uint64_t lo, uint64_t hi)
{
	if (hi > lo && hi - lo >= 0x10000) {
		mmio_lo[mmio_ranges] = lo;
		mmio_hi[mmio_ranges] = hi;
		mmio_ranges++;
	}
}

void guest_main(const struct computed_boot_info *boot)
{
	rng = rt_cmdline_uint("seed", 1);
	if (!rng)
		rng = 1;
	uint64_t seed = rng;
	rounds = rt_cmdline_uint("rounds", 0);

	/* Unbacked guest-physical space inside the identity map (which covers
	 * ceil(top / 1 GiB) GiB): above low RAM, and above high RAM if any. Stay
	 * clear of 0xFE000000..4 GiB (IOAPIC, LAPIC) so the timer keeps working. */
	uint64_t high = boot->ram_size - boot->ram_below_4g;
	uint64_t top = high ? (4ull << 30) + high : boot->ram_below_4g;
	uint64_t low_end = high ? 4ull << 30 : gib_up(top);
	add_mmio_range(boot->ram_below_4g, low_end < 0xFE000000ull ? low_end : 0xFE000000ull);
	if (high)
		add_mmio_range(top, gib_up(top));

	rt_cpu_init(boot);
	rt_idt_init();
	rt_pic_init();
	rt_irq_set(0, storm_isr);
	rt_power_button_init();
	rt_pit_divisor(2);
	rt_irq_unmask(0);
	rt_printf("chaos: seed=%lu rounds=%lu mmio", seed, rounds);
	for (unsigned k = 0; k < mmio_ranges; k++)
		rt_printf(" %lx-%lx", mmio_lo[k], mmio_hi[k]);
	rt_puts(mmio_ranges ? "\n" : " none\n");
	rt_enter_user(chaos_user, user_stack + sizeof(user_stack));
}
