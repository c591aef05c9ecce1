/*
 * hello: a guest built outside the project's tree with the guest SDK alone.
 *
 *   computed-guest-cc hello.c -o hello.elf
 *
 * It greets from every vCPU's boot info, counts PIT ticks in ring 3 (where a
 * PVM host runs code natively), and powers off; `ticks=N` on the command line
 * changes how many ticks it waits for.
 */
#include <computed_rt.h>

static volatile uint64_t ticks;
static uint8_t user_stack[4096] __attribute__((aligned(16)));

RT_ISR static void on_tick(struct rt_iframe *f)
{
	(void)f;
	ticks++;
	rt_eoi(0);
}

static void wait_in_ring3(void)
{
	uint64_t want = rt_cmdline_uint("ticks", 10);
	while (ticks < want)
		rt_sys_halt(); /* sti; hlt through the runtime's gate: ring 3 may not hlt */
	rt_printf("example-hello: waited %lu ticks in ring 3, goodbye\n", want);
	rt_poweroff();
}

void guest_main(const struct computed_boot_info *boot)
{
	rt_printf("example-hello: hello from %s (%u vCPU%s, %lu MiB)\n", boot->name,
		  boot->vcpu_count, boot->vcpu_count == 1 ? "" : "s", boot->ram_size >> 20);
	rt_idt_init();
	rt_pic_init();
	rt_irq_set(0, on_tick);
	rt_pit_hz(100);
	rt_irq_unmask(0);
	rt_enter_user(wait_in_ring3, user_stack + sizeof(user_stack));
}
