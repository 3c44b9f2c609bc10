/*
 * The work-stealing scheduler: workers with Chase–Lev deques, an injection queue for outside
 * threads, producer-token queues, futex parking, task groups with helping waits, cancellation,
 * yielding and blocked tasks, resizing and shutdown. The public contract is in marble/sched.h.
 *
 * Thread safety and lock order: s->mu (worker slots, resizing, shutdown) -> s->inj_mu
 * (injection queue, outside-thread task cache, shutdown flag) -> s->pool_mu (global task free
 * list and slabs). s->tok_mu (producer-token slot list) is never held with another lock.
 * Everything else is lock-free; each non-relaxed atomic says why.
 *
 * Parking is an eventcount: a worker reads s->epoch, announces itself in s->sleepers (seq_cst),
 * re-checks every queue, and only then sleeps on s->epoch. Anyone who publishes work that could
 * otherwise be missed (outside submissions, yields, resumes) issues a seq_cst fence and wakes a
 * sleeper if s->sleepers > 0; either the waker sees the sleeper or the sleeper's re-check sees the
 * work. A worker spawning into its own deque reads s->sleepers relaxed, without the fence: a
 * sleeper missed there is no lost wake-up, because the spawning worker itself runs or hands out
 * the task (it never parks while its deque holds work); parallelism is restored by the next wake.
 */
#include "marble/sched.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "marble/base.h"
#include "sched/deque.h"
#include "sched/park.h"

#define TASK_SLAB 1024      /* tasks per slab allocation */
#define CACHE_REFILL 256    /* tasks moved from the global pool to a cache at once */
#define CACHE_MAX 2048      /* a cache holding more returns half to the global pool */
#define STEAL_BATCH 32      /* most tasks taken at once from the injection queue or a token */
#define FAIR_TICKS 61       /* a worker checks the injection queue first every this many tasks */
#define HELP_PARK_NS 200000 /* a helping waiter re-checks for work at least this often */

enum { BLOCK_RUNNING = 0, BLOCK_PARKED = 1, BLOCK_RESUMED_EARLY = 2 };
enum { SLOT_NONE = 0, SLOT_RUNNING = 1, SLOT_EXITED = 2 };
enum { RUNNING = 0, SHUT_DRAIN = 1, SHUT_CANCEL = 2 };

struct marble_cancel_token {
    _Atomic int cancelled;
    marble_cancel_token *parent;
};

typedef struct group_impl {
    marble_sched *s;
    /* pending << 1 | waiter-sleeping bit; the completer that brings pending to 0 wakes the waiter
     * and touches nothing of the group after its decrement, so the group may then vanish. */
    _Atomic uint32_t state;
    _Atomic int status; /* first task error code, 0 if none */
    marble_cancel_token token;
    char message[MARBLE_ERROR_MESSAGE_SIZE];
} group_impl;

_Static_assert(sizeof(group_impl) <= sizeof(marble_group), "marble_group too small");

typedef struct task {
    union {
        struct { /* while queued or running */
            marble_task_fn fn;
            void *arg;
            group_impl *g;
        };
        struct { /* while free, the head of a batch in the global pool */
            struct task *batch_next;
            size_t batch_n;
        };
    };
    struct task *next;
    _Atomic uint32_t block_state;
} task;

/* A FIFO of tasks under s->inj_mu; `count` may be read without it as a hint. */
typedef struct task_list {
    task *head, *tail;
    _Atomic int64_t count;
} task_list;

typedef struct task_cache {
    task *head;
    int n;
} task_cache;

typedef struct worker worker;

struct marble_task_ctx {
    marble_sched *s;
    worker *w;
    task *t;
    bool blocked;
};

typedef struct counter {
    _Atomic uint64_t v; /* single writer (the owning worker): relaxed load + store */
} counter;

struct worker {
    marble__deque dq;
    marble_sched *s;
    int index;
    _Atomic int slot_state; /* written under s->mu; read without it by quiescent() */
    pthread_t thread;
    uint64_t rng;
    unsigned tick;
    int depth; /* nesting of helping waits */
    task_cache cache;
    /* Completions of tasks of one group, not yet subtracted from its pending count (see
     * complete_task). */
    group_impl *defer_g;
    uint32_t defer_n;
    _Atomic int parked;
    counter executed, stolen, skipped, parks, wakeups;
};

typedef struct token_slot {
    marble__deque dq; /* single producer: the token's owner pushes, workers steal_batch */
    _Atomic int in_use;
    struct token_slot *next;
    marble_sched *s;
    task_cache cache;
    counter submitted;
} token_slot;

struct marble_producer_token {
    token_slot slot;
};

struct marble_sched {
    int max_threads;
    int spin_rounds;
    worker **workers;
    _Atomic int nslots; /* high-water mark of started slots; acquire/release: publishes workers[] */
    _Atomic int target;
    _Atomic int state; /* RUNNING, SHUT_DRAIN or SHUT_CANCEL */
    _Atomic int stopping;
    /* Workers are gone, leftovers are skipped. Set under inj_mu (so enqueue sees it there) with a
     * seq_cst store (so sweep_if_joined sees it without the lock; see there). */
    _Atomic int joined;
    uint64_t id;             /* unique over the process's life, for implicit producer slots */
    struct marble_sched *live_next; /* under live_mu */
    bool shut_done;                 /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;

    pthread_mutex_t inj_mu;
    task_list inj;     /* the injection queue */
    task_list yielded; /* yielded tasks: behind every other queue */
    task_cache ext_cache;
    _Atomic uint64_t injected;
    _Atomic uint64_t ext_skipped;

    pthread_mutex_t pool_mu;
    task *pool_batches; /* chains of free tasks, linked through their heads' batch_next */
    void **slabs;
    size_t nslabs, cap_slabs;

    pthread_mutex_t tok_mu;
    _Atomic(token_slot *) tokens;

    _Alignas(64) _Atomic uint32_t epoch;
    _Atomic int sleepers;  /* workers parked or about to park */
    _Atomic int searching; /* workers spinning for work: while one is, nobody needs waking */
};

/* initial-exec: a single %fs-relative load, also in the shared library (no __tls_get_addr). */
static _Thread_local worker *tls_worker __attribute__((tls_model("initial-exec")));

static inline group_impl *G(marble_group *g)
{
    return (group_impl *)(void *)g->opaque_;
}

static inline void bump(counter *c)
{
    atomic_store_explicit(&c->v, atomic_load_explicit(&c->v, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static inline worker *self_in(const marble_sched *s)
{
    worker *w = tls_worker;
    return (w && w->s == s) ? w : NULL;
}

/* ---- task memory --------------------------------------------------------------------------- */

/* The global pool holds whole chains ("batches") of free tasks, so moving CACHE_REFILL tasks
 * between a cache and the pool is a pointer swap under pool_mu: the nodes themselves, last
 * touched on another core, are not walked while the lock is held. */
static bool pool_refill(marble_sched *s, task_cache *c)
{
    pthread_mutex_lock(&s->pool_mu);
    task *b = s->pool_batches;
    if (b) s->pool_batches = b->batch_next;
    pthread_mutex_unlock(&s->pool_mu);
    if (!b) {
        task *slab = aligned_alloc(64, TASK_SLAB * sizeof(task));
        if (!slab) return false;
        for (int i = 0; i < TASK_SLAB; i++)
            slab[i].next = (i + 1) % CACHE_REFILL ? &slab[i + 1] : NULL;
        pthread_mutex_lock(&s->pool_mu);
        if (s->nslabs == s->cap_slabs) {
            size_t cap = s->cap_slabs ? s->cap_slabs * 2 : 16;
            void **n = realloc(s->slabs, cap * sizeof *n);
            if (!n) {
                pthread_mutex_unlock(&s->pool_mu);
                free(slab);
                return false;
            }
            s->slabs = n;
            s->cap_slabs = cap;
        }
        s->slabs[s->nslabs++] = slab;
        for (int i = CACHE_REFILL; i < TASK_SLAB; i += CACHE_REFILL) {
            slab[i].batch_n = CACHE_REFILL;
            slab[i].batch_next = s->pool_batches;
            s->pool_batches = &slab[i];
        }
        pthread_mutex_unlock(&s->pool_mu);
        b = slab;
        b->batch_n = CACHE_REFILL;
    }
    /* The cache is empty here; the batch's chain ends in NULL. */
    c->head = b;
    c->n = (int)b->batch_n;
    return true;
}

/* Gives back all but `keep` tasks, in batches of at most CACHE_REFILL. */
static void pool_return(marble_sched *s, task_cache *c, int keep)
{
    while (c->n > keep) {
        int give = c->n - keep < CACHE_REFILL ? c->n - keep : CACHE_REFILL;
        task *first = c->head, *last = first;
        for (int i = 1; i < give; i++)
            last = last->next;
        c->head = last->next;
        c->n -= give;
        last->next = NULL;
        first->batch_n = (size_t)give;
        pthread_mutex_lock(&s->pool_mu);
        first->batch_next = s->pool_batches;
        s->pool_batches = first;
        pthread_mutex_unlock(&s->pool_mu);
    }
}

static inline task *cache_alloc(marble_sched *s, task_cache *c)
{
    if (!c->head && !pool_refill(s, c)) return NULL;
    task *t = c->head;
    c->head = t->next;
    c->n--;
    return t;
}

static inline void cache_free(marble_sched *s, task_cache *c, task *t)
{
    t->next = c->head;
    c->head = t;
    if (++c->n > CACHE_MAX) pool_return(s, c, CACHE_MAX / 2);
}

static inline void task_fill(task *t, group_impl *g, marble_task_fn fn, void *arg)
{
    t->fn = fn;
    t->arg = arg;
    t->g = g;
    t->next = NULL;
    atomic_store_explicit(&t->block_state, BLOCK_RUNNING, memory_order_relaxed);
}

/* ---- parking ------------------------------------------------------------------------------- */

static void wake_one(marble_sched *s)
{
    /* Release: orders the epoch bump after the published work for a sleeper's acquire load. */
    atomic_fetch_add_explicit(&s->epoch, 1, memory_order_release);
    marble__park_wake(&s->epoch, 1);
}

static void wake_all(marble_sched *s)
{
    atomic_fetch_add_explicit(&s->epoch, 1, memory_order_release);
    marble__park_wake(&s->epoch, INT_MAX);
}

/* Whether published work should wake a sleeper: some worker sleeps and none is searching (a
 * searching worker finds the work, or sees it in park()'s re-check, which follows its decrement
 * of `searching` and a seq_cst fence). */
static inline bool want_wake(marble_sched *s)
{
    return atomic_load_explicit(&s->sleepers, memory_order_relaxed) > 0 &&
           atomic_load_explicit(&s->searching, memory_order_relaxed) == 0;
}

/* After publishing work that no running worker is sure to see (see the file comment). */
static void notify(marble_sched *s)
{
    /* Seq_cst fence: the store-load barrier of the eventcount protocol. */
    atomic_thread_fence(memory_order_seq_cst);
    if (want_wake(s)) wake_one(s);
}

static bool visible_work(marble_sched *s)
{
    if (atomic_load_explicit(&s->inj.count, memory_order_relaxed) > 0) return true;
    if (atomic_load_explicit(&s->yielded.count, memory_order_relaxed) > 0) return true;
    int n = atomic_load_explicit(&s->nslots, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (marble__deque_size(&s->workers[i]->dq) > 0) return true;
    /* Acquire: the list is append-only; publishes each slot's fields. */
    for (token_slot *k = atomic_load_explicit(&s->tokens, memory_order_acquire); k; k = k->next)
        if (marble__deque_size(&k->dq) > 0) return true;
    return false;
}

/* ---- queues -------------------------------------------------------------------------------- */

static void skip_task(marble_sched *s, worker *w, task *t);
static token_slot *slot_acquire(marble_sched *s, marble_error *err);
static void slot_release(token_slot *k);
static int token_push(token_slot *k, group_impl *g, marble_task_fn fn, void *arg);
static token_slot *implicit_get(marble_sched *s);
static void sweep_if_joined(marble_sched *s, token_slot *k);
static void live_add(marble_sched *s);
static void live_remove(marble_sched *s);

/* Appends one task. Caller holds inj_mu. */
static void list_append_locked(task_list *l, task *t)
{
    t->next = NULL;
    if (l->tail)
        l->tail->next = t;
    else
        l->head = t;
    l->tail = t;
    atomic_fetch_add_explicit(&l->count, 1, memory_order_relaxed);
}

/* Removes the first task, or returns NULL. Caller holds inj_mu. */
static task *list_pop_locked(task_list *l)
{
    task *t = l->head;
    if (t) {
        l->head = t->next;
        if (!l->head) l->tail = NULL;
        atomic_fetch_sub_explicit(&l->count, 1, memory_order_relaxed);
    }
    return t;
}

/* Queues a task on `l` from any thread (resumed, yielded, or handed over by a retiring worker),
 * or skips it when the workers are gone. */
static void enqueue(marble_sched *s, task_list *l, task *t)
{
    pthread_mutex_lock(&s->inj_mu);
    if (atomic_load_explicit(&s->joined, memory_order_relaxed)) {
        pthread_mutex_unlock(&s->inj_mu);
        skip_task(s, NULL, t);
        return;
    }
    list_append_locked(l, t);
    pthread_mutex_unlock(&s->inj_mu);
    notify(s);
}

static void inject(marble_sched *s, task *t)
{
    enqueue(s, &s->inj, t);
}

static task *take_yielded(worker *w)
{
    marble_sched *s = w->s;
    if (atomic_load_explicit(&s->yielded.count, memory_order_relaxed) == 0) return NULL;
    pthread_mutex_lock(&s->inj_mu);
    task *t = list_pop_locked(&s->yielded);
    pthread_mutex_unlock(&s->inj_mu);
    return t;
}

/* Pushes onto the worker's own deque, falling back to the injection queue if the ring cannot
 * grow. */
static void push_local(worker *w, task *t)
{
    if (marble__deque_push(&w->dq, t) != MARBLE_OK) inject(w->s, t);
}

/* Runs the first of n tasks now and queues the rest on the worker's deque. */
static task *keep_batch(worker *w, task **batch, int n)
{
    for (int i = n - 1; i >= 1; i--)
        push_local(w, batch[i]);
    if (n > 1 && want_wake(w->s)) wake_one(w->s);
    return batch[0];
}

static task *take_injected(worker *w)
{
    marble_sched *s = w->s;
    if (atomic_load_explicit(&s->inj.count, memory_order_relaxed) == 0) return NULL;
    task *batch[STEAL_BATCH];
    int n = 0;
    pthread_mutex_lock(&s->inj_mu);
    int64_t avail = atomic_load_explicit(&s->inj.count, memory_order_relaxed);
    int64_t want = avail / atomic_load_explicit(&s->target, memory_order_relaxed) + 1;
    if (want > STEAL_BATCH) want = STEAL_BATCH;
    task *t;
    while (n < want && (t = list_pop_locked(&s->inj)))
        batch[n++] = t;
    pthread_mutex_unlock(&s->inj_mu);
    if (n == 0) return NULL;
    return keep_batch(w, batch, n);
}

static task *steal_workers(worker *w)
{
    marble_sched *s = w->s;
    int n = atomic_load_explicit(&s->nslots, memory_order_acquire);
    if (n <= 1) return NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        int lost = 0;
        int start = (int)(rng_next(&w->rng) % (uint64_t)n);
        for (int i = 0; i < n; i++) {
            int v = start + i < n ? start + i : start + i - n;
            if (v == w->index) continue;
            task *t = marble__deque_steal(&s->workers[v]->dq, &lost);
            if (t) {
                bump(&w->stolen);
                return t;
            }
        }
        if (!lost) break;
    }
    return NULL;
}

static task *steal_tokens(worker *w)
{
    task *batch[STEAL_BATCH];
    for (token_slot *k = atomic_load_explicit(&w->s->tokens, memory_order_acquire); k;
         k = k->next) {
        int n;
        while ((n = marble__deque_steal_batch(&k->dq, (void **)batch, STEAL_BATCH)) < 0)
            cpu_relax();
        if (n > 0) {
            for (int i = 0; i < n; i++)
                bump(&w->stolen);
            return keep_batch(w, batch, n);
        }
    }
    return NULL;
}

/* Own deque, then outside submissions, then other workers, then yielded tasks. Every
 * FAIR_TICKS tasks the shared queues go first, so a worker busy with its own fork-join tree does
 * not starve them. */
static task *find_work(worker *w)
{
    task *t;
    if (++w->tick % FAIR_TICKS == 0 &&
        ((t = take_injected(w)) || (t = steal_tokens(w)) || (t = take_yielded(w))))
        return t;
    if ((t = marble__deque_pop(&w->dq))) return t;
    if ((t = take_injected(w))) return t;
    if ((t = steal_tokens(w))) return t;
    if ((t = steal_workers(w))) return t;
    return take_yielded(w);
}

/* ---- running tasks ------------------------------------------------------------------------- */

static bool token_cancelled(const marble_cancel_token *k)
{
    for (; k; k = k->parent)
        /* Acquire: pairs with the release in cancel (a cancel may publish a reason). */
        if (atomic_load_explicit(&k->cancelled, memory_order_acquire)) return true;
    return false;
}

static void group_complete_n(group_impl *g, uint32_t n)
{
    /* Acq_rel: the waiter that sees pending reach 0 must see every effect of every task. */
    uint32_t old = atomic_fetch_sub_explicit(&g->state, 2 * n, memory_order_acq_rel);
    if ((old >> 1) == n && (old & 1)) marble__park_wake(&g->state, INT_MAX);
}

static void group_complete(group_impl *g)
{
    group_complete_n(g, 1);
}

static void flush_completions(worker *w)
{
    if (w->defer_n) {
        group_complete_n(w->defer_g, w->defer_n);
        w->defer_n = 0;
        w->defer_g = NULL;
    }
}

/* A worker that finishes a task of the group whose completions it is already holding adds one
 * to the held count instead of touching the group's shared counter; the count is flushed before
 * the worker runs a task of another group, looks for work, waits, parks or exits, and every 64
 * tasks. Delaying it never delays a wait: while the worker holds a count it is running (or about
 * to run) another task of the same group, so the group cannot finish before the flush anyway. */
static void complete_task(worker *w, group_impl *g)
{
    if (w->defer_g != g) {
        flush_completions(w);
        w->defer_g = g;
    }
    if (++w->defer_n >= 64) flush_completions(w);
}

static void task_release(marble_sched *s, worker *w, task *t)
{
    if (w) {
        cache_free(s, &w->cache, t);
    } else {
        pthread_mutex_lock(&s->inj_mu);
        cache_free(s, &s->ext_cache, t);
        pthread_mutex_unlock(&s->inj_mu);
    }
}

static void skip_task(marble_sched *s, worker *w, task *t)
{
    group_impl *g = t->g;
    /* Release: a skipped task makes its group's wait report cancellation. */
    atomic_store_explicit(&g->token.cancelled, 1, memory_order_release);
    task_release(s, w, t);
    if (w) {
        bump(&w->skipped);
        complete_task(w, g);
    } else {
        atomic_fetch_add_explicit(&s->ext_skipped, 1, memory_order_relaxed);
        group_complete(g);
    }
}

static void record_error(group_impl *g, int code, const char *fmt, va_list ap)
{
    int expected = 0;
    if (code == MARBLE_OK) code = MARBLE_ERR_TASK_FAILED;
    /* Relaxed CAS: only the winner writes the message; the acq_rel decrement in group_complete
     * publishes it to the waiter. */
    if (atomic_compare_exchange_strong_explicit(&g->status, &expected, code, memory_order_relaxed,
                                                memory_order_relaxed)) {
        if (fmt)
            vsnprintf(g->message, sizeof g->message, fmt, ap);
        else
            snprintf(g->message, sizeof g->message, "a task failed without a message");
    }
    atomic_store_explicit(&g->token.cancelled, 1, memory_order_release);
}

static void fail_nomsg(group_impl *g, int code, const char *msg)
{
    int expected = 0;
    if (atomic_compare_exchange_strong_explicit(&g->status, &expected, code, memory_order_relaxed,
                                                memory_order_relaxed))
        snprintf(g->message, sizeof g->message, "%s", msg);
    atomic_store_explicit(&g->token.cancelled, 1, memory_order_release);
}

static void run_task(worker *w, task *t)
{
    marble_sched *s = w->s;
    group_impl *g = t->g;
    if (w->defer_n && w->defer_g != g) flush_completions(w);
    if (atomic_load_explicit(&s->state, memory_order_relaxed) == SHUT_CANCEL ||
        token_cancelled(&g->token)) {
        skip_task(s, w, t);
        return;
    }
    marble_task_ctx ctx = {s, w, t, false};
    bump(&w->executed);
    marble_task_status st = t->fn(&ctx, t->arg);
    switch (st) {
    case MARBLE_TASK_DONE:
        cache_free(s, &w->cache, t);
        complete_task(w, g);
        return;
    case MARBLE_TASK_YIELD:
        enqueue(s, &s->yielded, t);
        return;
    case MARBLE_TASK_BLOCKED:
        if (ctx.blocked) {
            uint32_t exp = BLOCK_RUNNING;
            /* Acq_rel: hands the task to whoever resumes it (or takes it back from an early
             * resume). */
            if (!atomic_compare_exchange_strong_explicit(&t->block_state, &exp, BLOCK_PARKED,
                                                         memory_order_acq_rel,
                                                         memory_order_acquire)) {
                atomic_store_explicit(&t->block_state, BLOCK_RUNNING, memory_order_relaxed);
                push_local(w, t);
            }
            return;
        }
        fail_nomsg(g, MARBLE_ERR_INVALID_ARGUMENT,
                   "a task returned MARBLE_TASK_BLOCKED without calling marble_task_block");
        break;
    case MARBLE_TASK_ERROR:
        /* marble_task_fail recorded the reason; without it, this fills one in. */
        fail_nomsg(g, MARBLE_ERR_TASK_FAILED, "a task failed without a message");
        break;
    default:
        fail_nomsg(g, MARBLE_ERR_INVALID_ARGUMENT, "a task returned an unknown status");
        break;
    }
    cache_free(s, &w->cache, t);
    complete_task(w, g);
}

/* ---- workers ------------------------------------------------------------------------------- */

/* Spinning workers burn CPU that running tasks or outside producers could use: at most half the
 * pool (at least one) spins; the others park at once. */
static inline int max_searchers(marble_sched *s)
{
    int t = atomic_load_explicit(&s->target, memory_order_relaxed);
    return t > 1 ? t / 2 : 1;
}

/* Called by a searching worker that found nothing; returns searching again. */
static void park(worker *w)
{
    marble_sched *s = w->s;
    /* Acquire: if a waker bumped the epoch before we read it, we see its published work. */
    uint32_t key = atomic_load_explicit(&s->epoch, memory_order_acquire);
    atomic_fetch_add_explicit(&s->sleepers, 1, memory_order_seq_cst);
    atomic_fetch_sub_explicit(&s->searching, 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    if (visible_work(s) || atomic_load_explicit(&s->stopping, memory_order_relaxed) ||
        w->index >= atomic_load_explicit(&s->target, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&s->searching, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_relaxed);
        return;
    }
    /* Release: a shutdown that reads parked == 1 sees everything this worker did. */
    atomic_store_explicit(&w->parked, 1, memory_order_release);
    bump(&w->parks);
    marble__park_wait(&s->epoch, key, 0);
    atomic_store_explicit(&w->parked, 0, memory_order_release);
    if (atomic_load_explicit(&s->epoch, memory_order_relaxed) != key) bump(&w->wakeups);
    atomic_fetch_add_explicit(&s->searching, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_relaxed);
}

static void retire(worker *w)
{
    marble_sched *s = w->s;
    task *t;
    flush_completions(w);
    while ((t = marble__deque_pop(&w->dq)))
        inject(s, t);
    pool_return(s, &w->cache, 0);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    marble_sched *s = w->s;
    tls_worker = w;
    int idle = 0; /* > 0: this worker counts in s->searching */
    for (;;) {
        bool stop = atomic_load_explicit(&s->stopping, memory_order_acquire);
        if (!stop && w->index >= atomic_load_explicit(&s->target, memory_order_relaxed)) {
            retire(w);
            pthread_mutex_lock(&s->mu);
            if (w->index >= atomic_load_explicit(&s->target, memory_order_relaxed)) {
                if (idle) atomic_fetch_sub_explicit(&s->searching, 1, memory_order_relaxed);
                atomic_store(&w->slot_state, SLOT_EXITED);
                pthread_cond_broadcast(&s->cv);
                pthread_mutex_unlock(&s->mu);
                break;
            }
            pthread_mutex_unlock(&s->mu);
        }
        task *t = find_work(w);
        if (t) {
            if (idle) {
                idle = 0;
                /* The last searcher to find work wakes a sleeper for what else is queued, so a
                 * skipped notify (want_wake saw it searching) costs no parallelism. */
                if (atomic_fetch_sub_explicit(&s->searching, 1, memory_order_seq_cst) == 1 &&
                    atomic_load_explicit(&s->sleepers, memory_order_relaxed) > 0 && visible_work(s))
                    wake_one(s);
            }
            if (marble__deque_size(&w->dq) > 0 && want_wake(s)) wake_one(s);
            run_task(w, t);
            continue;
        }
        flush_completions(w);
        if (stop) {
            if (idle) atomic_fetch_sub_explicit(&s->searching, 1, memory_order_relaxed);
            retire(w);
            break;
        }
        if (idle++ == 0 &&
            atomic_fetch_add_explicit(&s->searching, 1, memory_order_relaxed) >= max_searchers(s))
            idle = s->spin_rounds + 4; /* enough workers are spinning already: park */
        if (idle < s->spin_rounds) {
            for (int i = 0; i < 32; i++)
                cpu_relax();
            continue;
        }
        if (idle < s->spin_rounds + 4) {
            sched_yield();
            continue;
        }
        park(w);
        idle = 1;
    }
    tls_worker = NULL;
    return NULL;
}

static int start_worker(marble_sched *s, int i, marble_error *err)
{
    worker *w = s->workers[i];
    if (!w) {
        w = aligned_alloc(64, (sizeof *w + 63) & ~(size_t)63);
        if (!w) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating worker %d", i);
        memset(w, 0, sizeof *w);
        if (marble__deque_init(&w->dq, 10) != MARBLE_OK) {
            free(w);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating worker %d's deque", i);
        }
        w->s = s;
        w->index = i;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1) | 1;
        s->workers[i] = w;
        if (i + 1 > atomic_load_explicit(&s->nslots, memory_order_relaxed))
            /* Release: thieves that read nslots see the initialised worker. */
            atomic_store_explicit(&s->nslots, i + 1, memory_order_release);
    }
    atomic_store(&w->slot_state, SLOT_RUNNING);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        atomic_store(&w->slot_state, SLOT_NONE);
        return marble_error_set(err, MARBLE_ERR_LIMIT, "starting worker thread %d: %s", i,
                                strerror(rc));
    }
    return MARBLE_OK;
}

/* ---- scheduler ----------------------------------------------------------------------------- */

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void marble_sched_options_init(marble_sched_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
}

int marble_sched_create(const marble_sched_options *opts, marble_sched **out, marble_error *err)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_sched_create: out is NULL");
    *out = NULL;
    marble_sched_options o;
    marble_sched_options_init(&o);
    if (opts) o = *opts;
    int cpus = online_cpus();
    if (o.threads < 0 || o.max_threads < 0 || o.spin_rounds < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_sched_create: negative option (threads %d, max_threads %d, "
                                "spin_rounds %d)",
                                o.threads, o.max_threads, o.spin_rounds);
    int threads = o.threads ? o.threads : cpus;
    int max = o.max_threads;
    if (!max) {
        max = 4 * cpus > 64 ? 4 * cpus : 64;
        if (threads > max) max = threads;
    }
    if (threads > max)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_sched_create: threads (%d) exceeds max_threads (%d)",
                                threads, max);
    marble_sched *s = calloc(1, sizeof *s);
    if (!s) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the scheduler");
    s->workers = calloc((size_t)max, sizeof *s->workers);
    if (!s->workers) {
        free(s);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating %d worker slots", max);
    }
    s->max_threads = max;
    s->spin_rounds = o.spin_rounds ? o.spin_rounds : 64;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->inj_mu, NULL);
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_mutex_init(&s->tok_mu, NULL);
    atomic_init(&s->target, threads);
    live_add(s);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < threads; i++) {
        int rc = start_worker(s, i, err);
        if (rc != MARBLE_OK) {
            atomic_store(&s->target, i);
            pthread_mutex_unlock(&s->mu);
            marble_sched_destroy(s);
            return rc;
        }
    }
    pthread_mutex_unlock(&s->mu);
    *out = s;
    return MARBLE_OK;
}

int marble_sched_threads(const marble_sched *s)
{
    return s ? atomic_load_explicit(&s->target, memory_order_relaxed) : 0;
}

int marble_sched_worker_index(const marble_sched *s)
{
    worker *w = self_in(s);
    return w ? w->index : -1;
}

static void join_exited(marble_sched *s, int from)
{
    int n = atomic_load_explicit(&s->nslots, memory_order_relaxed);
    for (int i = from; i < n; i++) {
        worker *w = s->workers[i];
        while (atomic_load(&w->slot_state) == SLOT_RUNNING)
            pthread_cond_wait(&s->cv, &s->mu);
        if (atomic_load(&w->slot_state) == SLOT_EXITED) {
            pthread_join(w->thread, NULL);
            atomic_store(&w->slot_state, SLOT_NONE);
        }
    }
}

int marble_sched_set_threads(marble_sched *s, int n, marble_error *err)
{
    if (!s)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_sched_set_threads: scheduler is NULL");
    if (n < 1 || n > s->max_threads)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_sched_set_threads: %d threads is outside [1, %d]", n,
                                s->max_threads);
    bool from_worker = self_in(s) != NULL;
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->state) != RUNNING || s->shut_done) {
        pthread_mutex_unlock(&s->mu);
        return marble_error_set(err, MARBLE_ERR_SHUTDOWN,
                                "marble_sched_set_threads: the scheduler is shut down");
    }
    atomic_store(&s->target, n);
    int rc = MARBLE_OK;
    for (int i = 0; i < n && rc == MARBLE_OK; i++) {
        worker *w = s->workers[i];
        if (w && atomic_load(&w->slot_state) == SLOT_RUNNING) continue;
        if (w && atomic_load(&w->slot_state) == SLOT_EXITED) {
            pthread_join(w->thread, NULL);
            atomic_store(&w->slot_state, SLOT_NONE);
        }
        rc = start_worker(s, i, err);
        if (rc != MARBLE_OK) atomic_store(&s->target, i);
    }
    wake_all(s);
    if (!from_worker) join_exited(s, atomic_load(&s->target));
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void marble_sched_get_stats(const marble_sched *s, marble_sched_stats *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!s) return;
    int n = atomic_load_explicit(&s->nslots, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        worker *w = s->workers[i];
        out->executed += atomic_load_explicit(&w->executed.v, memory_order_relaxed);
        out->stolen += atomic_load_explicit(&w->stolen.v, memory_order_relaxed);
        out->skipped += atomic_load_explicit(&w->skipped.v, memory_order_relaxed);
        out->parks += atomic_load_explicit(&w->parks.v, memory_order_relaxed);
        out->wakeups += atomic_load_explicit(&w->wakeups.v, memory_order_relaxed);
    }
    out->injected = atomic_load_explicit(&s->injected, memory_order_relaxed);
    for (token_slot *k = atomic_load_explicit(&s->tokens, memory_order_acquire); k; k = k->next)
        out->injected += atomic_load_explicit(&k->submitted.v, memory_order_relaxed);
    out->skipped += atomic_load_explicit(&s->ext_skipped, memory_order_relaxed);
    out->threads = atomic_load_explicit(&s->target, memory_order_relaxed);
}

/* True when no task is queued and every live worker is parked. Reads parked flags, then queues,
 * then the flags again: a worker that woke in between shows up in the second read. */
static bool quiescent(marble_sched *s)
{
    int n = atomic_load_explicit(&s->nslots, memory_order_acquire);
    uint64_t before = 0, after = 0;
    for (int i = 0; i < n; i++) {
        worker *w = s->workers[i];
        if (atomic_load(&w->slot_state) != SLOT_RUNNING) continue;
        if (!atomic_load_explicit(&w->parked, memory_order_acquire)) return false;
        before += atomic_load_explicit(&w->parks.v, memory_order_relaxed);
    }
    if (visible_work(s)) return false;
    for (int i = 0; i < n; i++) {
        worker *w = s->workers[i];
        if (atomic_load(&w->slot_state) != SLOT_RUNNING) continue;
        if (!atomic_load_explicit(&w->parked, memory_order_acquire)) return false;
        after += atomic_load_explicit(&w->parks.v, memory_order_relaxed);
    }
    return before == after;
}

int marble_sched_shutdown(marble_sched *s, marble_shutdown_mode mode, marble_error *err)
{
    if (!s)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_sched_shutdown: scheduler is NULL");
    if (mode != MARBLE_SHUTDOWN_DRAIN && mode != MARBLE_SHUTDOWN_CANCEL)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_sched_shutdown: unknown mode %d", (int)mode);
    if (self_in(s))
        return marble_error_set(
            err, MARBLE_ERR_INVALID_ARGUMENT,
            "marble_sched_shutdown: called from one of the scheduler's workers");
    pthread_mutex_lock(&s->mu);
    if (s->shut_done) {
        pthread_mutex_unlock(&s->mu);
        return MARBLE_OK;
    }
    pthread_mutex_lock(&s->inj_mu);
    int want = mode == MARBLE_SHUTDOWN_CANCEL ? SHUT_CANCEL : SHUT_DRAIN;
    if (atomic_load(&s->state) < want) atomic_store(&s->state, want);
    pthread_mutex_unlock(&s->inj_mu);
    wake_all(s);
    /* Workers run (or skip) what is queued and park; then they are told to stop. */
    pthread_mutex_unlock(&s->mu);
    while (!quiescent(s))
        marble_sleep_ns(200000);
    pthread_mutex_lock(&s->mu);
    atomic_store_explicit(&s->stopping, 1, memory_order_release);
    wake_all(s);
    int n = atomic_load(&s->nslots);
    for (int i = 0; i < n; i++) {
        worker *w = s->workers[i];
        if (atomic_load(&w->slot_state) != SLOT_NONE) {
            pthread_join(w->thread, NULL);
            atomic_store(&w->slot_state, SLOT_NONE);
        }
    }
    /* Anything queued after the workers' last look (a late resume) is skipped. */
    pthread_mutex_lock(&s->inj_mu);
    atomic_store(&s->joined, 1);
    task_list left = {NULL, NULL, 0};
    task *t;
    while ((t = list_pop_locked(&s->inj)) || (t = list_pop_locked(&s->yielded)))
        list_append_locked(&left, t);
    pthread_mutex_unlock(&s->inj_mu);
    while ((t = list_pop_locked(&left)))
        skip_task(s, NULL, t);
    for (token_slot *k = atomic_load(&s->tokens); k; k = k->next) {
        void *batch[STEAL_BATCH];
        int got;
        while ((got = marble__deque_steal_batch(&k->dq, batch, STEAL_BATCH)) != 0)
            for (int i = 0; i < got; i++)
                skip_task(s, NULL, batch[i]);
    }
    s->shut_done = true;
    pthread_mutex_unlock(&s->mu);
    return MARBLE_OK;
}

void marble_sched_destroy(marble_sched *s)
{
    if (!s) return;
    marble_sched_shutdown(s, MARBLE_SHUTDOWN_DRAIN, NULL);
    live_remove(s);
    int n = atomic_load(&s->nslots);
    for (int i = 0; i < n; i++) {
        if (!s->workers[i]) continue;
        marble__deque_destroy(&s->workers[i]->dq);
        free(s->workers[i]);
    }
    free(s->workers);
    token_slot *k = atomic_load(&s->tokens);
    while (k) {
        token_slot *next = k->next;
        marble__deque_destroy(&k->dq);
        free(k);
        k = next;
    }
    for (size_t i = 0; i < s->nslabs; i++)
        free(s->slabs[i]);
    free(s->slabs);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->inj_mu);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_mutex_destroy(&s->tok_mu);
    free(s);
}

/* ---- cancellation tokens ------------------------------------------------------------------- */

int marble_cancel_token_create(marble_cancel_token *parent, marble_cancel_token **out,
                               marble_error *err)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_cancel_token_create: out is NULL");
    marble_cancel_token *t = calloc(1, sizeof *t);
    if (!t) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating a cancellation token");
    t->parent = parent;
    *out = t;
    return MARBLE_OK;
}

void marble_cancel_token_destroy(marble_cancel_token *t)
{
    free(t);
}

void marble_cancel_token_cancel(marble_cancel_token *t)
{
    /* Release: whatever the canceller wrote before is visible to tasks that see the flag. */
    if (t) atomic_store_explicit(&t->cancelled, 1, memory_order_release);
}

int marble_cancel_token_is_cancelled(const marble_cancel_token *t)
{
    return token_cancelled(t);
}

/* ---- groups -------------------------------------------------------------------------------- */

void marble_group_init(marble_group *g, marble_sched *s, marble_cancel_token *parent)
{
    group_impl *gi = G(g);
    /* Field by field: fork-join creates a group per call, and the message buffer is only
     * written by a failing task. */
    gi->s = s;
    atomic_init(&gi->state, 0);
    atomic_init(&gi->status, 0);
    atomic_init(&gi->token.cancelled, 0);
    gi->token.parent = parent;
    gi->message[0] = '\0';
}

static int group_reserve(group_impl *g)
{
    uint32_t old = atomic_fetch_add_explicit(&g->state, 2, memory_order_relaxed);
    if ((old >> 1) >= (1u << 30)) {
        atomic_fetch_sub_explicit(&g->state, 2, memory_order_relaxed);
        return MARBLE_ERR_LIMIT;
    }
    return MARBLE_OK;
}

int marble_group_spawn(marble_group *g, marble_task_fn fn, void *arg)
{
    if (!g || !fn) return MARBLE_ERR_INVALID_ARGUMENT;
    group_impl *gi = G(g);
    marble_sched *s = gi->s;
    if (!s) return MARBLE_ERR_INVALID_ARGUMENT;
    worker *w = self_in(s);
    if (w) {
        task *t = cache_alloc(s, &w->cache);
        if (!t) return MARBLE_ERR_NO_MEMORY;
        int rc = group_reserve(gi);
        if (rc != MARBLE_OK) {
            cache_free(s, &w->cache, t);
            return rc;
        }
        task_fill(t, gi, fn, arg);
        push_local(w, t);
        if (want_wake(s)) wake_one(s);
        return MARBLE_OK;
    }
    if (atomic_load_explicit(&s->state, memory_order_relaxed) != RUNNING)
        return MARBLE_ERR_SHUTDOWN;
    token_slot *k = implicit_get(s);
    if (k) {
        int rc = token_push(k, gi, fn, arg);
        if (rc != MARBLE_OK) return rc;
        bump(&k->submitted);
        notify(s);
        sweep_if_joined(s, k);
        return MARBLE_OK;
    }
    /* No slot could be allocated: the injection queue needs no memory beyond the task. */
    pthread_mutex_lock(&s->inj_mu);
    if (atomic_load_explicit(&s->state, memory_order_relaxed) != RUNNING) {
        pthread_mutex_unlock(&s->inj_mu);
        return MARBLE_ERR_SHUTDOWN;
    }
    task *t = cache_alloc(s, &s->ext_cache);
    int rc = t ? group_reserve(gi) : MARBLE_ERR_NO_MEMORY;
    if (rc != MARBLE_OK) {
        if (t) cache_free(s, &s->ext_cache, t);
        pthread_mutex_unlock(&s->inj_mu);
        return rc;
    }
    task_fill(t, gi, fn, arg);
    list_append_locked(&s->inj, t);
    atomic_fetch_add_explicit(&s->injected, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->inj_mu);
    notify(s);
    return MARBLE_OK;
}

static int group_result(group_impl *g, marble_error *err)
{
    int code = atomic_load_explicit(&g->status, memory_order_relaxed);
    if (code) {
        marble_error_set(err, code, "%s", g->message);
        atomic_store_explicit(&g->status, 0, memory_order_relaxed);
        return code;
    }
    if (token_cancelled(&g->token))
        return marble_error_set(err, MARBLE_ERR_CANCELLED, "task group cancelled");
    marble_error_clear(err);
    return MARBLE_OK;
}

/* Sets the waiter bit and sleeps while pending is nonzero; returns when pending may be 0. */
static void group_sleep(group_impl *g, uint64_t timeout_ns)
{
    uint32_t v = atomic_load_explicit(&g->state, memory_order_acquire);
    if ((v >> 1) == 0) return;
    if (!(v & 1)) {
        if (!atomic_compare_exchange_weak_explicit(&g->state, &v, v | 1, memory_order_acquire,
                                                   memory_order_acquire))
            return;
        v |= 1;
    }
    marble__park_wait(&g->state, v, timeout_ns);
}

int marble_group_wait(marble_group *g, marble_error *err)
{
    if (!g || !G(g)->s)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_group_wait: group is NULL or not initialised");
    group_impl *gi = G(g);
    worker *w = self_in(gi->s);
    if (w) {
        int spins = 0;
        w->depth++;
        flush_completions(w);
        for (;;) {
            /* Completions this worker holds for the awaited group count now. */
            if (w->defer_g == gi) flush_completions(w);
            /* Acquire: see every effect of the finished tasks. */
            if (!(atomic_load_explicit(&gi->state, memory_order_acquire) >> 1)) break;
            task *t = find_work(w);
            if (t) {
                run_task(w, t);
                spins = 0;
                continue;
            }
            flush_completions(w);
            if (++spins < 64) {
                cpu_relax();
                continue;
            }
            if (spins < 72) {
                sched_yield();
                continue;
            }
            group_sleep(gi, HELP_PARK_NS);
        }
        w->depth--;
    } else {
        while (atomic_load_explicit(&gi->state, memory_order_acquire) >> 1)
            group_sleep(gi, 0);
    }
    /* Clear a leftover waiter bit so a reused group does not wake needlessly. */
    uint32_t one = 1;
    atomic_compare_exchange_strong_explicit(&gi->state, &one, 0, memory_order_relaxed,
                                            memory_order_relaxed);
    return group_result(gi, err);
}

void marble_group_cancel(marble_group *g)
{
    if (g) marble_cancel_token_cancel(&G(g)->token);
}

marble_cancel_token *marble_group_token(marble_group *g)
{
    return g ? &G(g)->token : NULL;
}

uint32_t marble_group_pending(const marble_group *g)
{
    const group_impl *gi = (const group_impl *)(const void *)g->opaque_;
    return atomic_load_explicit(&((group_impl *)gi)->state, memory_order_relaxed) >> 1;
}

void marble_group_destroy(marble_group *g)
{
    (void)g;
}

/* ---- inside a task ------------------------------------------------------------------------- */

int marble_task_cancelled(const marble_task_ctx *ctx)
{
    return atomic_load_explicit(&ctx->s->state, memory_order_relaxed) == SHUT_CANCEL ||
           token_cancelled(&ctx->t->g->token);
}

marble_task_status marble_task_fail(marble_task_ctx *ctx, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_error(ctx->t->g, code, fmt, ap);
    va_end(ap);
    return MARBLE_TASK_ERROR;
}

marble_group *marble_task_group(const marble_task_ctx *ctx)
{
    return (marble_group *)(void *)ctx->t->g;
}

marble_sched *marble_task_sched(const marble_task_ctx *ctx)
{
    return ctx->s;
}

int marble_task_worker(const marble_task_ctx *ctx)
{
    return ctx->w->index;
}

marble_task_handle *marble_task_block(marble_task_ctx *ctx)
{
    ctx->blocked = true;
    return (marble_task_handle *)ctx->t;
}

void marble_task_resume(marble_task_handle *h)
{
    task *t = (task *)h;
    uint32_t exp = BLOCK_RUNNING;
    /* Acq_rel: either the running task sees our early resume, or we take the parked task. */
    if (atomic_compare_exchange_strong_explicit(&t->block_state, &exp, BLOCK_RESUMED_EARLY,
                                                memory_order_acq_rel, memory_order_acquire))
        return;
    atomic_store_explicit(&t->block_state, BLOCK_RUNNING, memory_order_relaxed);
    marble_sched *s = t->g->s;
    worker *w = self_in(s);
    if (w) {
        push_local(w, t);
        notify(s);
    } else {
        inject(s, t);
    }
}

/* ---- implicit producer slots --------------------------------------------------------------- */

/* An outside thread that spawns without a token gets a producer slot of its own, kept in
 * thread-local storage, so plain marble_group_spawn from outside costs what a token submit does
 * (no lock). The slot goes back when the thread exits (a pthread key destructor) or starts
 * spawning into another scheduler. live_mu and the list of live schedulers make that safe when
 * the scheduler is gone first: a slot is only touched if its scheduler's id is still live. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static marble_sched *live_list;
static uint64_t live_next_id = 1;

typedef struct implicit_slot {
    marble_sched *s;
    uint64_t id;
    token_slot *slot;
} implicit_slot;

static _Thread_local implicit_slot tls_slot __attribute__((tls_model("initial-exec")));
static pthread_key_t implicit_key;
static pthread_once_t implicit_once = PTHREAD_ONCE_INIT;

static bool live_locked(uint64_t id)
{
    for (marble_sched *x = live_list; x; x = x->live_next)
        if (x->id == id) return true;
    return false;
}

static void live_add(marble_sched *s)
{
    pthread_mutex_lock(&live_mu);
    s->id = live_next_id++;
    s->live_next = live_list;
    live_list = s;
    pthread_mutex_unlock(&live_mu);
}

static void live_remove(marble_sched *s)
{
    pthread_mutex_lock(&live_mu);
    marble_sched **pp = &live_list;
    while (*pp && *pp != s)
        pp = &(*pp)->live_next;
    if (*pp) *pp = s->live_next;
    pthread_mutex_unlock(&live_mu);
}

static void implicit_drop(implicit_slot *is)
{
    if (!is->slot) return;
    pthread_mutex_lock(&live_mu);
    if (live_locked(is->id)) slot_release(is->slot);
    pthread_mutex_unlock(&live_mu);
    is->slot = NULL;
    is->s = NULL;
    is->id = 0;
}

static void implicit_dtor(void *p)
{
    implicit_drop(p);
}

static void implicit_init(void)
{
    pthread_key_create(&implicit_key, implicit_dtor);
}

static token_slot *implicit_get(marble_sched *s)
{
    implicit_slot *is = &tls_slot;
    if (is->slot && is->s == s && is->id == s->id) return is->slot;
    implicit_drop(is);
    pthread_once(&implicit_once, implicit_init);
    token_slot *k = slot_acquire(s, NULL);
    if (!k) return NULL;
    is->s = s;
    is->id = s->id;
    is->slot = k;
    pthread_setspecific(implicit_key, is);
    return k;
}

/* After a submission from outside: if the workers are already gone (a submission racing with
 * shutdown), skip what is left in the slot so its groups finish. The seq_cst fence in notify()
 * pairs with the seq_cst store of joined before shutdown's own sweep: one of the two sees
 * the task. */
static void sweep_if_joined(marble_sched *s, token_slot *k)
{
    if (!atomic_load(&s->joined)) return;
    void *batch[STEAL_BATCH];
    int got;
    while ((got = marble__deque_steal_batch(&k->dq, batch, STEAL_BATCH)) != 0)
        for (int i = 0; i < got; i++)
            skip_task(s, NULL, batch[i]);
}

/* ---- producer tokens ----------------------------------------------------------------------- */

int marble_producer_token_create(marble_sched *s, marble_producer_token **out, marble_error *err)
{
    if (!s || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_producer_token_create: %s is NULL",
                                s ? "out" : "scheduler");
    *out = NULL;
    token_slot *k = slot_acquire(s, err);
    if (!k) return MARBLE_ERR_NO_MEMORY;
    *out = (marble_producer_token *)k;
    return MARBLE_OK;
}

static token_slot *slot_acquire(marble_sched *s, marble_error *err)
{
    for (token_slot *k = atomic_load_explicit(&s->tokens, memory_order_acquire); k; k = k->next) {
        int expected = 0;
        /* Acquire: the previous owner's destroy (release) happens before our use. */
        if (atomic_compare_exchange_strong_explicit(&k->in_use, &expected, 1, memory_order_acquire,
                                                    memory_order_relaxed))
            return k;
    }
    token_slot *k = calloc(1, sizeof *k);
    if (!k) {
        marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating a producer token");
        return NULL;
    }
    if (marble__deque_init(&k->dq, 10) != MARBLE_OK) {
        free(k);
        marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating a producer token's queue");
        return NULL;
    }
    k->s = s;
    atomic_init(&k->in_use, 1);
    pthread_mutex_lock(&s->tok_mu);
    k->next = atomic_load_explicit(&s->tokens, memory_order_relaxed);
    /* Release: publishes the initialised slot to workers walking the list. */
    atomic_store_explicit(&s->tokens, k, memory_order_release);
    pthread_mutex_unlock(&s->tok_mu);
    return k;
}

static void slot_release(token_slot *k)
{
    pool_return(k->s, &k->cache, 0);
    /* Release: hands the slot (and what is still queued in it) to the next owner. Workers keep
     * stealing from it meanwhile; the queue stays single-producer because owners take turns. */
    atomic_store_explicit(&k->in_use, 0, memory_order_release);
}

void marble_producer_token_destroy(marble_producer_token *t)
{
    if (t) slot_release(&t->slot);
}

static int token_push(token_slot *k, group_impl *g, marble_task_fn fn, void *arg)
{
    task *t = cache_alloc(k->s, &k->cache);
    if (!t) return MARBLE_ERR_NO_MEMORY;
    int rc = group_reserve(g);
    if (rc == MARBLE_OK) {
        task_fill(t, g, fn, arg);
        rc = marble__deque_push(&k->dq, t);
        if (rc != MARBLE_OK) atomic_fetch_sub_explicit(&g->state, 2, memory_order_relaxed);
    }
    if (rc != MARBLE_OK) cache_free(k->s, &k->cache, t);
    return rc;
}

int marble_producer_submit_many(marble_producer_token *tok, marble_group *g, marble_task_fn fn,
                                void *const *args, size_t n)
{
    if (!tok || !g || !fn || (n && !args)) return MARBLE_ERR_INVALID_ARGUMENT;
    token_slot *k = &tok->slot;
    group_impl *gi = G(g);
    if (gi->s != k->s) return MARBLE_ERR_INVALID_ARGUMENT;
    if (atomic_load_explicit(&k->s->state, memory_order_relaxed) != RUNNING)
        return MARBLE_ERR_SHUTDOWN;
    int rc = MARBLE_OK;
    for (size_t i = 0; i < n && rc == MARBLE_OK; i++) {
        rc = token_push(k, gi, fn, args[i]);
        if (rc == MARBLE_OK) bump(&k->submitted);
    }
    notify(k->s);
    sweep_if_joined(k->s, k);
    return rc;
}

int marble_producer_submit(marble_producer_token *tok, marble_group *g, marble_task_fn fn,
                           void *arg)
{
    return marble_producer_submit_many(tok, g, fn, &arg, 1);
}
