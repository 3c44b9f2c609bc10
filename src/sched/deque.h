/*
 * Chase–Lev work-stealing deque, with the C11 memory orderings of Lê, Pop, Cohen and Zappa
 * Nardelli, "Correct and Efficient Work-Stealing for Weak Memory Models" (PPoPP 2013).
 *
 * Thread safety: one owner thread calls push and pop; any thread may call steal. steal_batch is
 * valid only on a deque whose owner never pops (the single-producer queues of producer tokens).
 *
 * Invariants: top <= bottom + 1 transiently (inside pop), top only grows (by CAS); slots in
 * [top, bottom) hold the queued items; the ring grows by doubling and old rings are kept until
 * destroy, because a thief may still read a slot of the ring it loaded (the slot's value is
 * identical in every ring that holds it).
 *
 * One deviation from the paper: the stores of `bottom` are release stores instead of a release
 * fence followed by a relaxed store. That is at least as strong, compiles to the same code on
 * x86-64 and AArch64, and lets ThreadSanitizer (which ignores standalone fences) see the
 * happens-before edge from push to steal.
 */
#ifndef MARBLE_SCHED_DEQUE_H
#define MARBLE_SCHED_DEQUE_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct marble__deque_ring {
    int64_t mask;
    struct marble__deque_ring *older;
    _Atomic(void *) slots[];
} marble__deque_ring;

typedef struct marble__deque {
    _Alignas(64) _Atomic int64_t top;
    _Alignas(64) _Atomic int64_t bottom;
    _Atomic(marble__deque_ring *) ring;
} marble__deque;

/* Capacity starts at 2^log2_capacity and doubles as needed. Returns MARBLE_ERR_NO_MEMORY. */
int marble__deque_init(marble__deque *dq, int log2_capacity);
void marble__deque_destroy(marble__deque *dq);
/* Owner only. Returns MARBLE_OK or MARBLE_ERR_NO_MEMORY (the ring could not grow). */
int marble__deque_push(marble__deque *dq, void *item);
/* Owner only. Newest item, or NULL if empty. */
void *marble__deque_pop(marble__deque *dq);
/* Any thread. Oldest item, or NULL if empty or if another thread won the race (then *lost is set
 * to 1, so the caller may retry). */
void *marble__deque_steal(marble__deque *dq, int *lost);
/* Any thread; only on deques whose owner never pops. Takes up to max oldest items (about half of
 * what is queued, at least one) into out[] with one CAS. Returns how many, 0 if empty, -1 if it
 * lost a race. */
int marble__deque_steal_batch(marble__deque *dq, void **out, int max);
/* Approximate number of queued items (exact when no one else touches the deque). */
int64_t marble__deque_size(marble__deque *dq);

#endif
