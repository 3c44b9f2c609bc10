/* Memory budgets: an atomic byte counter with a limit and a high-water mark, shared by query
 * operators (and by whatever else the embedder charges to it), plus chunked accounting for
 * operators that grow. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "exec/pipeline_internal.h"

struct marble_mem_budget {
    uint64_t limit;
    _Atomic uint64_t used;
    _Atomic uint64_t peak;
};

int marble_mem_budget_create(uint64_t limit, marble_mem_budget **out, marble_error *err)
{
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "mem budget: out is NULL");
    marble_mem_budget *b = calloc(1, sizeof *b);
    if (!b) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "mem budget: out of memory");
    b->limit = limit;
    *out = b;
    return MARBLE_OK;
}

void marble_mem_budget_destroy(marble_mem_budget *b)
{
    free(b);
}

int marble_mem_budget_reserve(marble_mem_budget *b, uint64_t bytes, const char *what,
                              marble_error *err)
{
    if (!b) return MARBLE_OK;
    uint64_t cur = atomic_load_explicit(&b->used, memory_order_relaxed);
    uint64_t next;
    do {
        next = cur + bytes;
        if (next < cur || (b->limit && next > b->limit))
            return marble_error_set(err, MARBLE_ERR_LIMIT,
                                    "query needs more memory than its budget allows: %s asked for "
                                    "%" PRIu64 " more bytes with %" PRIu64 " of %" PRIu64 " in use",
                                    what ? what : "an operator", bytes, cur, b->limit);
    } while (!atomic_compare_exchange_weak_explicit(&b->used, &cur, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    uint64_t peak = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (peak < next && !atomic_compare_exchange_weak_explicit(
                              &b->peak, &peak, next, memory_order_relaxed, memory_order_relaxed)) {
    }
    return MARBLE_OK;
}

void marble_mem_budget_charge(marble_mem_budget *b, uint64_t bytes)
{
    if (!b) return;
    uint64_t next = atomic_fetch_add_explicit(&b->used, bytes, memory_order_relaxed) + bytes;
    uint64_t peak = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (peak < next && !atomic_compare_exchange_weak_explicit(
                              &b->peak, &peak, next, memory_order_relaxed, memory_order_relaxed)) {
    }
}

void marble_mem_budget_release(marble_mem_budget *b, uint64_t bytes)
{
    if (b) atomic_fetch_sub_explicit(&b->used, bytes, memory_order_relaxed);
}

uint64_t marble_mem_budget_used(const marble_mem_budget *b)
{
    return b ? atomic_load_explicit(&((marble_mem_budget *)b)->used, memory_order_relaxed) : 0;
}

uint64_t marble_mem_budget_limit(const marble_mem_budget *b)
{
    return b ? b->limit : 0;
}

uint64_t marble_mem_budget_peak(const marble_mem_budget *b)
{
    return b ? atomic_load_explicit(&((marble_mem_budget *)b)->peak, memory_order_relaxed) : 0;
}

int marble__mem_need(marble__memacct *m, uint64_t in_use, marble_error *err)
{
    if (!m->budget || in_use <= m->charged) return MARBLE_OK;
    uint64_t want =
        (in_use - m->charged + MARBLE__MEM_CHUNK - 1) / MARBLE__MEM_CHUNK * MARBLE__MEM_CHUNK;
    int rc = marble_mem_budget_reserve(m->budget, want, m->what, err);
    if (rc == MARBLE_OK) m->charged += want;
    return rc;
}

void marble__mem_release_all(marble__memacct *m)
{
    if (m->budget && m->charged) marble_mem_budget_release(m->budget, m->charged);
    m->charged = 0;
}
