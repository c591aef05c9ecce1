/*
 * heartbeat: the PIT at `hz=N` (default 100) on IRQ 0 drives a tick counter;
 * print `tick N` every second (every N interrupts). `ticks=N` powers off
 * after `tick N`; the power button powers off at once.
 *
 * `hz=0` is tickless, as an idle NO_HZ Linux guest: the PIT is never
 * programmed (KVM's stays disarmed from reset, so its kvm-pit worker never
 * runs) and IRQ 0 stays masked. vCPU 0 sleeps in `hlt` until an interrupt
 * that means work, here only the power button, so an idle instance costs its
 * host nothing between events.
 */
#include <computed_rt.h>

#define DEFAULT_HZ 100u
#define MIN_HZ 19u   /* the PIT's slowest rate is 18.2 Hz (divisor 65536) */
#define MAX_HZ 1000u

static volatile uint64_t timer_irqs;

/* Increment, EOI: a handful of ring-0 instructions. */
RT_ISR static void timer_isr(struct rt_iframe *f)
{
	(void)f;
	timer_irqs++;
	rt_eoi_master();
}

static RT_NORETURN void power_button(void)
{
	rt_puts("heartbeat: power button, shutting down\n");
	rt_poweroff();
}

/* No timer: wake only for the power button. */
static RT_NORETURN void tickless(void)
{
	rt_puts("heartbeat: tickless (hz=0), idle until the power button\n");
	for (;;) {
		/* Interrupts are off here except inside sti;hlt, so no wake-up is missed. */
		if (rt_power_button_pressed())
			power_button();
		rt_sti_hlt_cli();
	}
}

void guest_main(const struct computed_boot_info *boot)
{
	(void)boot;
	uint64_t limit = rt_cmdline_uint("ticks", 0); /* 0: forever */
	uint64_t hz = rt_cmdline_uint("hz", DEFAULT_HZ);
	if (hz > MAX_HZ)
		hz = MAX_HZ;
	else if (hz && hz < MIN_HZ)
		hz = MIN_HZ;

	rt_idt_init();
	rt_pic_init();
	rt_power_button_init();
	if (hz == 0)
		tickless();
	rt_irq_set(0, timer_isr);
	rt_pit_hz((unsigned)hz);
	rt_irq_unmask(0);
	rt_printf("heartbeat: %lu Hz\n", hz);

	uint64_t seconds = 0, next = hz;
	for (;;) {
		/* Interrupts are off here except inside sti;hlt, so no wake-up is missed. */
		if (rt_power_button_pressed())
			power_button();
		if (timer_irqs >= next) {
			next += hz;
			seconds++;
			rt_printf("tick %lu\n", seconds);
			if (limit && seconds >= limit)
				rt_poweroff();
			continue;
		}
		rt_sti_hlt_cli();
	}
}
