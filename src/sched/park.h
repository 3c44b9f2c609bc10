/*
 * Parking primitives for the scheduler: wait on a 32-bit atomic word while it holds an expected
 * value, and wake waiters of a word. On Linux a futex (park_linux.c); elsewhere a hashed table of
 * mutex+condvar pairs (park_portable.c).
 *
 * Waits may return spuriously; callers re-check their condition. Waking an address nobody waits
 * on, or whose memory has been reused, is harmless (a spurious wake-up for the new owner).
 */
#ifndef MARBLE_SCHED_PARK_H
#define MARBLE_SCHED_PARK_H

#include <stdatomic.h>
#include <stdint.h>

/* Blocks while *addr == expected, for at most timeout_ns (0: no limit). */
void marble__park_wait(_Atomic uint32_t *addr, uint32_t expected, uint64_t timeout_ns);
/* Wakes up to n waiters of addr (n = INT32_MAX wakes all). */
void marble__park_wake(_Atomic uint32_t *addr, int n);

#endif
