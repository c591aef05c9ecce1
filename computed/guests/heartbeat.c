/*
 * heartbeat: the PIT at 100 Hz on IRQ 0 drives a tick counter; print
 * `tick N` every second (every 100 interrupts). `ticks=N` powers off after
 * `tick N`; the power button powers off at once.
 */
#include "rt/rt.h"

#define HZ 100u

static volatile uint64_t timer_irqs;

/* Increment, EOI: a handful of ring-0 instructions. */
RT_ISR static void timer_isr(struct rt_iframe *f)
{
	(void)f;
	timer_irqs++;
	rt_eoi_master();
}

void guest_main(const struct computed_boot_info *boot)
{
	(void)boot;
	uint64_t limit = rt_cmdline_uint("ticks", 0); /* 0: forever */

	rt_idt_init();
	rt_pic_init();
	rt_irq_set(0, timer_isr);
	rt_power_button_init();
	rt_pit_hz(HZ);
	rt_irq_unmask(0);
	rt_printf("heartbeat: %u Hz\n", HZ);

	uint64_t seconds = 0, next = HZ;
	for (;;) {
		/* Interrupts are off here except inside sti;hlt, so no wake-up is missed. */
		if (rt_power_button_pressed()) {
			rt_puts("heartbeat: power button, shutting down\n");
			rt_poweroff();
		}
		if (timer_irqs >= next) {
			next += HZ;
			seconds++;
			rt_printf("tick %lu\n", seconds);
			if (limit && seconds >= limit)
				rt_poweroff();
			continue;
		}
		rt_sti_hlt_cli();
	}
}
