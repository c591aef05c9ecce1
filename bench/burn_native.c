/*
 * burn_native: run the burn guest's unit of work natively on the host.
 *
 *   gcc -O2 -I computed/guests -o burn_native bench/burn_native.c
 *   ./burn_native [SECONDS]      (default 5)
 *
 * Prints `native: <N> loops/s` once a second, N = burn_loop() calls completed
 * in that second, for comparison with the guest's `burn: <N> loops/s duty=100`.
 * The clock is read once per loop, like the guest reads its TSC.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "burn_loop.h"

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long seconds = 5;
	if (argc > 1) {
		char *end;
		seconds = strtol(argv[1], &end, 10);
		if (*end || seconds < 1) {
			fprintf(stderr, "usage: %s [SECONDS]\n", argv[0]);
			return 2;
		}
	}
	uint64_t state = 1, next = now_ns() + 1000000000u;
	for (long s = 0; s < seconds; s++) {
		uint64_t loops = 0, t;
		do {
			state = burn_loop(state);
			loops++;
		} while ((t = now_ns()) < next);
		next += 1000000000u;
		printf("native: %llu loops/s\n", (unsigned long long)loops);
		fflush(stdout);
	}
	return state == 0; /* use the result so the work cannot be dropped */
}
