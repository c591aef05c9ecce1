/*
 * One unit of work ("one loop") for the burn guest and bench/burn_native.c.
 *
 * Both include this header and are built with the same -O2, so the guest's
 * ring-3 loop and the host-native loop run the same instructions and their
 * rates can be compared directly. A loop is BURN_LOOP_ITERS rounds of a
 * xorshift-multiply step on one 64-bit value; every round depends on the
 * last, so the compiler can neither vectorise nor shortcut it. About 1 µs on
 * a current x86-64 core.
 */
#ifndef COMPUTED_BURN_LOOP_H
#define COMPUTED_BURN_LOOP_H

#include <stdint.h>

#define BURN_LOOP_ITERS 384u

static inline uint64_t burn_loop(uint64_t x)
{
	for (unsigned i = 0; i < BURN_LOOP_ITERS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		x *= 0x2545F4914F6CDD1Dull;
		__asm__("" : "+r"(x)); /* keep the loop as written */
	}
	return x;
}

#endif
