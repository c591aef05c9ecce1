/*
 * burn: spin in ring 3 at `duty=P` percent (1..100, default 100) of every
 * 10 ms window, timed with the TSC; halt (rt_sys_halt) until the next 100 Hz
 * PIT tick once the window's share is used. Reports `burn: <N> loops/s
 * duty=<P>` once a second, N = burn_loop() calls that second. `seconds=S`
 * powers off after S reports; the power button powers off at once.
 * At duty=100 the PIT stays off and IRQ 0 masked: nothing interrupts the loop.
 */
#include "burn_loop.h"
#include <computed_rt.h>

#define HZ 100u

static volatile uint64_t timer_irqs;
static unsigned duty;
static uint64_t tsc_khz, report_limit;
static uint8_t user_stack[16384] __attribute__((aligned(16)));

RT_ISR static void timer_isr(struct rt_iframe *f)
{
	(void)f;
	timer_irqs++;
	rt_eoi_master();
}

static void burn_user(void)
{
	const uint64_t second = tsc_khz * 1000u;
	const uint64_t busy = tsc_khz * (1000u / HZ) * duty / 100u; /* TSC ticks per window */
	uint64_t state = 1, loops = 0, reports = 0;
	uint64_t now = rt_rdtsc(), window = now, next_report = now + second;

	for (;;) {
		state = burn_loop(state);
		loops++;
		now = rt_rdtsc();
		if (duty < 100 && now - window >= busy) {
			rt_sys_halt(); /* until the next PIT tick starts a window */
			now = window = rt_rdtsc();
		}
		if (rt_power_button_pressed()) {
			rt_puts("burn: power button, shutting down\n");
			rt_poweroff();
		}
		if (now >= next_report) {
			rt_printf("burn: %lu loops/s duty=%u\n", loops, duty);
			loops = 0;
			next_report += second;
			if (now >= next_report) /* more than a second late (host paused us) */
				next_report = now + second;
			if (report_limit && ++reports >= report_limit)
				rt_poweroff();
		}
		__asm__ volatile("" : : "r"(state)); /* the work must not be dropped */
	}
}

/* Only if the VMM could not tell us the TSC rate: count TSC ticks over 10 PIT ticks. */
static uint64_t calibrate_tsc_khz(void)
{
	rt_pit_hz(HZ);
	rt_irq_unmask(0);
	uint64_t s = timer_irqs;
	while (timer_irqs == s)
		rt_sti_hlt_cli();
	uint64_t t0 = rt_rdtsc();
	s = timer_irqs;
	while (timer_irqs < s + 10)
		rt_sti_hlt_cli();
	uint64_t khz = (rt_rdtsc() - t0) / (10u * 1000u / HZ);
	rt_irq_mask(0);
	return khz ? khz : 1;
}

void guest_main(const struct computed_boot_info *boot)
{
	uint64_t d = rt_cmdline_uint("duty", 100);
	duty = d < 1 ? 1 : d > 100 ? 100 : (unsigned)d;
	report_limit = rt_cmdline_uint("seconds", 0);

	rt_cpu_init(boot);
	rt_idt_init();
	rt_pic_init();
	rt_irq_set(0, timer_isr);
	rt_power_button_init();
	tsc_khz = boot->tsc_khz ? boot->tsc_khz : calibrate_tsc_khz();
	if (duty < 100) {
		rt_pit_hz(HZ);
		rt_irq_unmask(0);
	}
	rt_printf("burn: duty=%u tsc_khz=%lu\n", duty, tsc_khz);
	rt_enter_user(burn_user, user_stack + sizeof(user_stack));
}
