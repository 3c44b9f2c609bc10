/* Tests of the Chase–Lev deque: single-thread semantics and concurrent exactly-once stress. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "marble_test.h"
#include "sched/deque.h"

#define ITEM(i) ((void *)(uintptr_t)(i))
#define VAL(p) ((uintptr_t)(p))

TEST(single_thread_lifo_pop_fifo_steal)
{
    marble__deque dq;
    ASSERT_OK(marble__deque_init(&dq, 2));
    ASSERT_NULL(marble__deque_pop(&dq));
    ASSERT_NULL(marble__deque_steal(&dq, NULL));
    for (uintptr_t i = 1; i <= 1000; i++)
        ASSERT_OK(marble__deque_push(&dq, ITEM(i)));
    ASSERT_EQ_INT(marble__deque_size(&dq), 1000);
    for (uintptr_t i = 1; i <= 10; i++)
        ASSERT_EQ_U64(VAL(marble__deque_steal(&dq, NULL)), i);
    for (uintptr_t i = 1000; i > 10; i--)
        ASSERT_EQ_U64(VAL(marble__deque_pop(&dq)), i);
    ASSERT_NULL(marble__deque_pop(&dq));
    ASSERT_NULL(marble__deque_steal(&dq, NULL));
    ASSERT_EQ_INT(marble__deque_size(&dq), 0);
    marble__deque_destroy(&dq);
}

TEST(interleaved_push_pop_steal_wraps_ring)
{
    marble__deque dq;
    ASSERT_OK(marble__deque_init(&dq, 3));
    uintptr_t next = 1, oldest = 1;
    /* Keep a few items queued while indices run far past the ring size. */
    for (int round = 0; round < 10000; round++) {
        ASSERT_OK(marble__deque_push(&dq, ITEM(next++)));
        ASSERT_OK(marble__deque_push(&dq, ITEM(next++)));
        ASSERT_EQ_U64(VAL(marble__deque_steal(&dq, NULL)), oldest++);
        if (round % 3 == 0) {
            uintptr_t v = VAL(marble__deque_pop(&dq));
            ASSERT_EQ_U64(v, next - 1);
            ASSERT_OK(marble__deque_push(&dq, ITEM(v)));
        }
    }
    int64_t left = marble__deque_size(&dq);
    ASSERT_EQ_INT(left, (int64_t)(next - oldest));
    for (int64_t i = 0; i < left; i++)
        ASSERT_NOT_NULL(marble__deque_pop(&dq));
    ASSERT_NULL(marble__deque_pop(&dq));
    marble__deque_destroy(&dq);
}

TEST(steal_batch_takes_about_half)
{
    marble__deque dq;
    void *out[64];
    ASSERT_OK(marble__deque_init(&dq, 2));
    ASSERT_EQ_INT(marble__deque_steal_batch(&dq, out, 64), 0);
    for (uintptr_t i = 1; i <= 10; i++)
        ASSERT_OK(marble__deque_push(&dq, ITEM(i)));
    ASSERT_EQ_INT(marble__deque_steal_batch(&dq, out, 64), 5);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ_U64(VAL(out[i]), (uint64_t)i + 1);
    ASSERT_EQ_INT(marble__deque_steal_batch(&dq, out, 2), 2);
    ASSERT_EQ_U64(VAL(out[0]), 6);
    ASSERT_EQ_INT(marble__deque_steal_batch(&dq, out, 64), 2);
    ASSERT_EQ_INT(marble__deque_steal_batch(&dq, out, 64), 1);
    ASSERT_EQ_U64(VAL(out[0]), 10);
    ASSERT_EQ_INT(marble__deque_steal_batch(&dq, out, 64), 0);
    marble__deque_destroy(&dq);
}

/* ---- concurrent stress ---------------------------------------------------------------------- */

#define STRESS_ITEMS 300000
#define THIEVES 3

static marble__deque sdq;
static _Atomic unsigned char taken[STRESS_ITEMS + 1];
static _Atomic int owner_done;
static _Atomic int64_t total_taken;

static void take(void *p)
{
    uintptr_t v = VAL(p);
    if (v < 1 || v > STRESS_ITEMS) FAIL("item %ju out of range", (uintmax_t)v);
    atomic_fetch_add(&taken[v], 1);
    atomic_fetch_add(&total_taken, 1);
}

static void *thief(void *arg)
{
    int batch = arg != NULL;
    void *out[16];
    for (;;) {
        int done = atomic_load(&owner_done);
        if (batch) {
            int n = marble__deque_steal_batch(&sdq, out, 16);
            for (int i = 0; i < n; i++)
                take(out[i]);
            if (n == 0 && done) break;
        } else {
            int lost = 0;
            void *p = marble__deque_steal(&sdq, &lost);
            if (p)
                take(p);
            else if (!lost && done)
                break;
        }
    }
    return NULL;
}

static void stress(int owner_pops)
{
    pthread_t th[THIEVES];
    memset(taken, 0, sizeof taken);
    atomic_store(&owner_done, 0);
    atomic_store(&total_taken, 0);
    ASSERT_OK(marble__deque_init(&sdq, 1));
    for (int i = 0; i < THIEVES; i++)
        ASSERT_OK(pthread_create(&th[i], NULL, thief, owner_pops ? NULL : (void *)1));
    uint64_t rng = 88172645463325252ull;
    for (uintptr_t i = 1; i <= STRESS_ITEMS; i++) {
        ASSERT_OK(marble__deque_push(&sdq, ITEM(i)));
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        if (owner_pops && rng % 3 == 0) {
            void *p = marble__deque_pop(&sdq);
            if (p) take(p);
        }
    }
    if (owner_pops) {
        void *p;
        while ((p = marble__deque_pop(&sdq)))
            take(p);
    }
    atomic_store(&owner_done, 1);
    for (int i = 0; i < THIEVES; i++)
        pthread_join(th[i], NULL);
    ASSERT_EQ_INT(atomic_load(&total_taken), STRESS_ITEMS);
    for (uintptr_t i = 1; i <= STRESS_ITEMS; i++)
        if (atomic_load(&taken[i]) != 1)
            FAIL("item %ju taken %d times", (uintmax_t)i, atomic_load(&taken[i]));
    marble__deque_destroy(&sdq);
}

TEST(concurrent_owner_and_thieves_take_each_item_once)
{
    stress(1);
}

TEST(concurrent_batch_thieves_take_each_item_once)
{
    stress(0);
}
