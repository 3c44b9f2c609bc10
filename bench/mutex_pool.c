/* Baseline for the scheduler benchmark: one global mutex+condvar FIFO queue shared by N workers. */
#include "bench_sched.h"
#include "bench_tree.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * The design the work-stealing scheduler replaces: every spawn mallocs a task record and appends
 * it to one global FIFO list under one mutex; idle workers pop from its head under the same mutex
 * and sleep on a condvar when it is empty. A group is an atomic pending counter; the task that
 * brings it to zero takes the mutex and broadcasts to whoever waits for a group.
 *
 * Nested fork-join (fib, tree, sum): a worker that waits for a group helps instead of blocking.
 * First it runs its own group's tasks that are still queued, newest first (each task is also on
 * its group's list, so it can be unlinked from the middle of the global queue). When none is
 * left it runs the oldest queued task of any group, but only up to MP_HELP_DEPTH such foreign
 * tasks nested on its stack: unlimited helping from a FIFO nests ever older, ever larger tasks
 * and overflows the stack. Past that depth, or with nothing queued, it sleeps on help_cv until a
 * group completes or a task is queued. No deadlock: a sleeping waiter's group has no queued task,
 * so its pending tasks run on other workers, and a task only waits for tasks it spawned. An
 * outside thread waiting for a group just sleeps on done_cv. A task record that cannot be
 * allocated is not run; the run is then reported as failed.
 */

#define MP_STACK_BYTES (64u << 20)
#define MP_HELP_DEPTH 16
#define MP_BATCH 64
#define MP_SUM_GRAIN 32768u

typedef struct mp_pool mp_pool;
typedef struct mp_task mp_task;

typedef struct mp_group {
    mp_pool *pool;
    atomic_uint_fast32_t pending;
    mp_task *first; /* the group's queued tasks, oldest first (under the pool mutex) */
    mp_task *last;
} mp_group;

struct mp_task {
    mp_task *prev; /* global queue */
    mp_task *next;
    mp_task *gprev; /* the group's queued tasks */
    mp_task *gnext;
    void (*fn)(void *arg);
    void *arg;
    mp_group *group;
};

struct mp_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* idle workers */
    pthread_cond_t help_cv; /* workers waiting for a group */
    pthread_cond_t done_cv; /* outside threads waiting for a group */
    mp_task *head;
    mp_task *tail;
    int idle;
    int helpers;
    int outside;
    int stop;
    int nthreads;
    pthread_t *threads;
};

static _Thread_local mp_pool *mp_self;
static _Thread_local int mp_index = -1;
static _Thread_local int mp_help_depth;
static atomic_int mp_failed;

typedef struct mp_start {
    mp_pool *pool;
    int index;
} mp_start;

static void mp_unlink_locked(mp_pool *p, mp_task *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        p->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        p->tail = t->prev;
    mp_group *g = t->group;
    if (t->gprev)
        t->gprev->gnext = t->gnext;
    else
        g->first = t->gnext;
    if (t->gnext)
        t->gnext->gprev = t->gprev;
    else
        g->last = t->gprev;
}

static void mp_run(mp_task *t)
{
    mp_group *g = t->group;
    mp_pool *p = g->pool;
    t->fn(t->arg);
    free(t);
    if (atomic_fetch_sub_explicit(&g->pending, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_lock(&p->mu);
        if (p->helpers > 0) pthread_cond_broadcast(&p->help_cv);
        if (p->outside > 0) pthread_cond_broadcast(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

static void *mp_worker(void *arg)
{
    mp_start *st = arg;
    mp_pool *p = st->pool;
    mp_self = p;
    mp_index = st->index;
    free(st);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        mp_task *t = p->head;
        if (t) {
            mp_unlink_locked(p, t);
            pthread_mutex_unlock(&p->mu);
            mp_run(t);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (p->stop) break;
        p->idle++;
        pthread_cond_wait(&p->work_cv, &p->mu);
        p->idle--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void mp_pool_destroy(mp_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->help_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

static mp_pool *mp_pool_create(int threads)
{
    mp_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->threads = calloc((size_t)threads, sizeof(pthread_t));
    if (!p->threads) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->help_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, MP_STACK_BYTES);
    for (int i = 0; i < threads; i++) {
        mp_start *st = malloc(sizeof(*st));
        if (st) {
            st->pool = p;
            st->index = i;
        }
        if (!st || pthread_create(&p->threads[i], &attr, mp_worker, st) != 0) {
            free(st);
            fprintf(stderr, "marble-bench: mutex_pool: cannot start worker %d\n", i);
            pthread_attr_destroy(&attr);
            mp_pool_destroy(p);
            return NULL;
        }
        p->nthreads = i + 1;
    }
    pthread_attr_destroy(&attr);
    return p;
}

static void mp_group_init(mp_group *g, mp_pool *p)
{
    g->pool = p;
    atomic_init(&g->pending, 0);
    g->first = NULL;
    g->last = NULL;
}

/* Queues fn(args[i]) for i < n with one lock acquisition; the records are allocated and linked
 * before the lock is taken. */
static void mp_spawn_list(mp_group *g, void (*fn)(void *), void *const *args, size_t n)
{
    mp_task *first = NULL, *last = NULL;
    size_t queued = 0;
    for (size_t i = 0; i < n; i++) {
        mp_task *t = malloc(sizeof(*t));
        if (!t) {
            atomic_store(&mp_failed, 1);
            continue;
        }
        t->fn = fn;
        t->arg = args[i];
        t->group = g;
        t->prev = t->gprev = last;
        t->next = t->gnext = NULL;
        if (last)
            last->next = last->gnext = t;
        else
            first = t;
        last = t;
        queued++;
    }
    if (!queued) return;
    mp_pool *p = g->pool;
    atomic_fetch_add_explicit(&g->pending, (uint_fast32_t)queued, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    first->prev = p->tail;
    if (p->tail)
        p->tail->next = first;
    else
        p->head = first;
    p->tail = last;
    first->gprev = g->last;
    if (g->last)
        g->last->gnext = first;
    else
        g->first = first;
    g->last = last;
    if (queued == 1 && p->idle > 0)
        pthread_cond_signal(&p->work_cv);
    else if (p->idle > 0)
        pthread_cond_broadcast(&p->work_cv);
    if (p->helpers > 0) pthread_cond_broadcast(&p->help_cv);
    pthread_mutex_unlock(&p->mu);
}

static void mp_group_spawn(mp_group *g, void (*fn)(void *), void *arg)
{
    mp_spawn_list(g, fn, &arg, 1);
}

static void mp_group_wait(mp_group *g)
{
    if (atomic_load_explicit(&g->pending, memory_order_acquire) == 0) return;
    mp_pool *p = g->pool;
    pthread_mutex_lock(&p->mu);
    if (mp_self != p) {
        while (atomic_load_explicit(&g->pending, memory_order_acquire) != 0) {
            p->outside++;
            pthread_cond_wait(&p->done_cv, &p->mu);
            p->outside--;
        }
        pthread_mutex_unlock(&p->mu);
        return;
    }
    while (atomic_load_explicit(&g->pending, memory_order_acquire) != 0) {
        mp_task *t = g->last;
        int foreign = 0;
        if (!t && p->head && mp_help_depth < MP_HELP_DEPTH) {
            t = p->head;
            foreign = 1;
        }
        if (t) {
            mp_unlink_locked(p, t);
            pthread_mutex_unlock(&p->mu);
            mp_help_depth += foreign;
            mp_run(t);
            mp_help_depth -= foreign;
            pthread_mutex_lock(&p->mu);
            continue;
        }
        p->helpers++;
        pthread_cond_wait(&p->help_cv, &p->mu);
        p->helpers--;
    }
    pthread_mutex_unlock(&p->mu);
}

/* ---- workloads --------------------------------------------------------------------------- */

typedef struct mp_fib_arg {
    int n;
    uint64_t result;
} mp_fib_arg;

static uint64_t mp_fib_rec(mp_pool *p, int n);

static void mp_fib_task(void *arg)
{
    mp_fib_arg *a = arg;
    a->result = mp_fib_rec(mp_self, a->n);
}

static uint64_t mp_fib_rec(mp_pool *p, int n)
{
    if (n < 2) return (uint64_t)n;
    mp_group g;
    mp_group_init(&g, p);
    mp_fib_arg child = {n - 1, 0};
    mp_group_spawn(&g, mp_fib_task, &child);
    uint64_t b = mp_fib_rec(p, n - 2);
    mp_group_wait(&g);
    return child.result + b;
}

static mp_pool *mp_start_pool(int threads)
{
    atomic_store(&mp_failed, 0);
    mp_pool *p = mp_pool_create(threads);
    if (!p)
        fprintf(stderr, "marble-bench: mutex_pool: cannot create a pool of %d threads\n", threads);
    return p;
}

static int mp_finish(mp_pool *p)
{
    mp_pool_destroy(p);
    if (atomic_load(&mp_failed)) {
        fprintf(stderr, "marble-bench: mutex_pool: out of memory while spawning\n");
        return -1;
    }
    return 0;
}

static int mp_bench_fib(int threads, int reps, int n, bench_result *out)
{
    mp_pool *p = mp_start_pool(threads);
    if (!p) return -1;
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        mp_group g;
        mp_group_init(&g, p);
        mp_fib_arg root = {n, 0};
        mp_group_spawn(&g, mp_fib_task, &root);
        mp_group_wait(&g);
        bench_result_add(out, r, bench_now() - t0, root.result);
    }
    return mp_finish(p);
}

static void mp_count_task(void *arg)
{
    bench_slot *slots = arg;
    slots[mp_index].n++;
}

static int mp_bench_spawn_common(int threads, int reps, uint64_t ntasks, int batched,
                                 bench_result *out)
{
    bench_slot *slots = bench_slots_new(threads);
    mp_pool *p = slots ? mp_start_pool(threads) : NULL;
    if (!p) {
        bench_slots_free(slots);
        return -1;
    }
    void *args[MP_BATCH];
    for (int i = 0; i < MP_BATCH; i++)
        args[i] = slots;
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        bench_slots_clear(slots, threads);
        double t0 = bench_now();
        mp_group g;
        mp_group_init(&g, p);
        if (batched) {
            for (uint64_t i = 0; i < ntasks; i += MP_BATCH) {
                uint64_t left = ntasks - i;
                mp_spawn_list(&g, mp_count_task, args, left < MP_BATCH ? left : MP_BATCH);
            }
        } else {
            for (uint64_t i = 0; i < ntasks; i++)
                mp_group_spawn(&g, mp_count_task, slots);
        }
        mp_group_wait(&g);
        double dt = bench_now() - t0;
        bench_result_add(out, r, dt, bench_slots_sum(slots, threads));
    }
    int rc = mp_finish(p);
    bench_slots_free(slots);
    return rc;
}

static int mp_bench_spawn(int threads, int reps, uint64_t ntasks, bench_result *out)
{
    return mp_bench_spawn_common(threads, reps, ntasks, 0, out);
}

/* The pool has no producer token; its closest equivalent is producer-side batching: the producer
 * links MP_BATCH task records privately and queues them with one lock acquisition. */
static int mp_bench_spawn_token(int threads, int reps, uint64_t ntasks, bench_result *out)
{
    return mp_bench_spawn_common(threads, reps, ntasks, 1, out);
}

static bench_slot *mp_tree_slots;

static void mp_tree_visit(uint64_t id);

static void mp_tree_task(void *arg)
{
    mp_tree_visit(*(const uint64_t *)arg);
}

static void mp_tree_visit(uint64_t id)
{
    for (;;) {
        uint64_t h;
        uint32_t k = bench_tree_expand(id, &h);
        mp_tree_slots[mp_index].n++;
        if (k == 0) return;
        if (k == 1) {
            id = bench_tree_child(h, 0);
            continue;
        }
        uint64_t local[8];
        uint64_t *ids = k - 1 <= 8 ? local : malloc((k - 1) * sizeof(uint64_t));
        if (!ids) {
            atomic_store(&mp_failed, 1);
            return;
        }
        mp_group g;
        mp_group_init(&g, mp_self);
        for (uint32_t i = 0; i + 1 < k; i++) {
            ids[i] = bench_tree_child(h, i);
            mp_group_spawn(&g, mp_tree_task, &ids[i]);
        }
        mp_tree_visit(bench_tree_child(h, k - 1));
        mp_group_wait(&g);
        if (ids != local) free(ids);
        return;
    }
}

static int mp_bench_tree(int threads, int reps, bench_result *out)
{
    bench_slot *slots = bench_slots_new(threads);
    mp_pool *p = slots ? mp_start_pool(threads) : NULL;
    if (!p) {
        bench_slots_free(slots);
        return -1;
    }
    mp_tree_slots = slots;
    uint64_t root = BENCH_TREE_ROOT;
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        bench_slots_clear(slots, threads);
        double t0 = bench_now();
        mp_group g;
        mp_group_init(&g, p);
        mp_group_spawn(&g, mp_tree_task, &root);
        mp_group_wait(&g);
        double dt = bench_now() - t0;
        bench_result_add(out, r, dt, bench_slots_sum(slots, threads));
    }
    int rc = mp_finish(p);
    bench_slots_free(slots);
    return rc;
}

typedef struct mp_sum_arg {
    const uint32_t *data;
    size_t n;
    uint64_t result;
} mp_sum_arg;

static void mp_sum_task(void *arg)
{
    mp_sum_arg *a = arg;
    if (a->n <= MP_SUM_GRAIN) {
        uint64_t s = 0;
        for (size_t i = 0; i < a->n; i++)
            s += a->data[i];
        a->result = s;
        return;
    }
    size_t half = a->n / 2;
    mp_sum_arg right = {a->data + half, a->n - half, 0};
    mp_sum_arg left = {a->data, half, 0};
    mp_group g;
    mp_group_init(&g, mp_self);
    mp_group_spawn(&g, mp_sum_task, &right);
    mp_sum_task(&left);
    mp_group_wait(&g);
    a->result = left.result + right.result;
}

static int mp_bench_sum(int threads, int reps, const uint32_t *data, size_t n, bench_result *out)
{
    mp_pool *p = mp_start_pool(threads);
    if (!p) return -1;
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        mp_group g;
        mp_group_init(&g, p);
        mp_sum_arg root = {data, n, 0};
        mp_group_spawn(&g, mp_sum_task, &root);
        mp_group_wait(&g);
        bench_result_add(out, r, bench_now() - t0, root.result);
    }
    return mp_finish(p);
}

static void mp_nop_task(void *arg)
{
    (void)arg;
}

static double mp_bench_idle(int threads, double seconds)
{
    mp_pool *p = mp_start_pool(threads);
    if (!p) return -1.0;
    mp_group g;
    mp_group_init(&g, p);
    for (int i = 0; i < 10000; i++)
        mp_group_spawn(&g, mp_nop_task, NULL);
    mp_group_wait(&g);
    double pct = bench_idle_cpu_pct(seconds);
    return mp_finish(p) == 0 ? pct : -1.0;
}

const bench_sched_impl bench_mutex_pool_impl = {
    .name = "mutex_pool",
    .fib = mp_bench_fib,
    .spawn = mp_bench_spawn,
    .spawn_token = mp_bench_spawn_token,
    .tree = mp_bench_tree,
    .sum = mp_bench_sum,
    .idle = mp_bench_idle,
};
