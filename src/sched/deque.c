/* The Chase–Lev work-stealing deque (see deque.h for the algorithm and its orderings). */
#include "sched/deque.h"

#include <stdlib.h>

#include "marble/error.h"

static marble__deque_ring *ring_new(int64_t capacity)
{
    marble__deque_ring *r = malloc(sizeof *r + (size_t)capacity * sizeof(_Atomic(void *)));
    if (!r) return NULL;
    r->mask = capacity - 1;
    r->older = NULL;
    for (int64_t i = 0; i < capacity; i++)
        atomic_init(&r->slots[i], NULL);
    return r;
}

int marble__deque_init(marble__deque *dq, int log2_capacity)
{
    marble__deque_ring *r = ring_new((int64_t)1 << log2_capacity);
    if (!r) return MARBLE_ERR_NO_MEMORY;
    atomic_init(&dq->top, 0);
    atomic_init(&dq->bottom, 0);
    atomic_init(&dq->ring, r);
    return MARBLE_OK;
}

void marble__deque_destroy(marble__deque *dq)
{
    marble__deque_ring *r = atomic_load_explicit(&dq->ring, memory_order_relaxed);
    while (r) {
        marble__deque_ring *older = r->older;
        free(r);
        r = older;
    }
    atomic_store_explicit(&dq->ring, NULL, memory_order_relaxed);
}

static marble__deque_ring *grow(marble__deque *dq, marble__deque_ring *r, int64_t t, int64_t b)
{
    marble__deque_ring *n = ring_new((r->mask + 1) * 2);
    if (!n) return NULL;
    for (int64_t i = t; i < b; i++)
        atomic_store_explicit(&n->slots[i & n->mask],
                              atomic_load_explicit(&r->slots[i & r->mask], memory_order_relaxed),
                              memory_order_relaxed);
    n->older = r;
    /* Release: a thief that loads the new ring must see the copied slots. */
    atomic_store_explicit(&dq->ring, n, memory_order_release);
    return n;
}

int marble__deque_push(marble__deque *dq, void *item)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    /* Acquire: slots below top were read by thieves before their CAS; we may overwrite them. */
    int64_t t = atomic_load_explicit(&dq->top, memory_order_acquire);
    marble__deque_ring *r = atomic_load_explicit(&dq->ring, memory_order_relaxed);
    if (b - t > r->mask) {
        r = grow(dq, r, t, b);
        if (!r) return MARBLE_ERR_NO_MEMORY;
    }
    atomic_store_explicit(&r->slots[b & r->mask], item, memory_order_relaxed);
    /* Release: publishes the item (and what it points to) to thieves that read bottom. */
    atomic_store_explicit(&dq->bottom, b + 1, memory_order_release);
    return MARBLE_OK;
}

void *marble__deque_pop(marble__deque *dq)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed) - 1;
    marble__deque_ring *r = atomic_load_explicit(&dq->ring, memory_order_relaxed);
    atomic_store_explicit(&dq->bottom, b, memory_order_release);
    /* Seq_cst fence: orders the bottom store before the top load against a thief's top load
     * before bottom load (the store-load pair at the heart of the algorithm). */
    atomic_thread_fence(memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&dq->top, memory_order_relaxed);
    void *item = NULL;
    if (t <= b) {
        item = atomic_load_explicit(&r->slots[b & r->mask], memory_order_relaxed);
        if (t == b) {
            /* Last item: race thieves for it with the same CAS they use. */
            if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1, memory_order_seq_cst,
                                                         memory_order_relaxed))
                item = NULL;
            atomic_store_explicit(&dq->bottom, b + 1, memory_order_release);
        }
    } else {
        atomic_store_explicit(&dq->bottom, b + 1, memory_order_release);
    }
    return item;
}

void *marble__deque_steal(marble__deque *dq, int *lost)
{
    int64_t t = atomic_load_explicit(&dq->top, memory_order_acquire);
    atomic_thread_fence(memory_order_seq_cst);
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_acquire);
    if (t >= b) return NULL;
    /* Acquire: pairs with the release in grow, so the slots of a new ring are visible. */
    marble__deque_ring *r = atomic_load_explicit(&dq->ring, memory_order_acquire);
    void *item = atomic_load_explicit(&r->slots[t & r->mask], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1, memory_order_seq_cst,
                                                 memory_order_relaxed)) {
        if (lost) *lost = 1;
        return NULL;
    }
    return item;
}

int marble__deque_steal_batch(marble__deque *dq, void **out, int max)
{
    int64_t t = atomic_load_explicit(&dq->top, memory_order_acquire);
    atomic_thread_fence(memory_order_seq_cst);
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_acquire);
    int64_t n = b - t;
    if (n <= 0) return 0;
    int64_t k = (n + 1) / 2;
    if (k > max) k = max;
    marble__deque_ring *r = atomic_load_explicit(&dq->ring, memory_order_acquire);
    /* The owner never pops, so bottom only grows and slots [t, t+k) stay as read until top moves
     * past them, which would make the CAS below fail. */
    for (int64_t i = 0; i < k; i++)
        out[i] = atomic_load_explicit(&r->slots[(t + i) & r->mask], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + k, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return -1;
    return (int)k;
}

int64_t marble__deque_size(marble__deque *dq)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&dq->top, memory_order_relaxed);
    return b > t ? b - t : 0;
}
