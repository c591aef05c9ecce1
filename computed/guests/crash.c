/*
 * crash: triple-fault on purpose. Load an IDT with limit 0 and execute int3:
 * the #BP cannot be delivered -> #GP -> #DF -> shutdown (KVM_EXIT_SHUTDOWN).
 *
 * The int3 runs in ring 3: KVM's instruction emulator does not implement INT n
 * in long mode, so where ring-0 code is emulated (nested virtualisation) an
 * int3 there ends as a KVM emulation failure instead of a triple fault. In
 * ring 3 the CPU itself raises the faults. Every PIC input is masked first, so
 * no interrupt can get there before the int3 does.
 */
#include <computed_rt.h>

static uint8_t user_stack[4096] __attribute__((aligned(16)));

static void crash_user(void)
{
	__asm__ volatile("int3");
	rt_puts("crash: still alive?!\n");
	rt_debug_exit(1);
}

void guest_main(const struct computed_boot_info *boot)
{
	static const struct __attribute__((packed)) {
		uint16_t limit;
		uint64_t base;
	} empty = {0, 0};

	rt_puts("crash: triple fault now\n");
	rt_cpu_init(boot);
	rt_pic_init();
	__asm__ volatile("lidt %0" : : "m"(empty));
	rt_enter_user(crash_user, user_stack + sizeof(user_stack));
}
