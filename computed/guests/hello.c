/* hello: print who we are and our command line (one write), then power off. */
#include <computed_rt.h>

void guest_main(const struct computed_boot_info *boot)
{
	rt_printf("Hello from %s (%s)\ncmdline: %s\n", boot->name, boot->uuid, boot->cmdline);
}
