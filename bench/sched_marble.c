/* The scheduler benchmark's workloads on Marble's work-stealing scheduler (marble/sched.h). */
#include "bench_sched.h"
#include "bench_tree.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "marble/sched.h"

#define MB_SUM_GRAIN 32768u
#define MB_BATCH_CHILDREN 8u

static atomic_int mb_failed;
static bench_slot *mb_slots;
static int mb_nslots;
static atomic_uint_fast64_t mb_stray;

static void mb_fail(const char *what, int rc)
{
    if (!atomic_exchange(&mb_failed, 1))
        fprintf(stderr, "marble-bench: marble: %s failed: %s\n", what, marble_status_name(rc));
}

static void mb_spawn(marble_group *g, marble_task_fn fn, void *arg)
{
    int rc = marble_group_spawn(g, fn, arg);
    if (rc != MARBLE_OK) mb_fail("marble_group_spawn", rc);
}

static void mb_wait(marble_group *g)
{
    marble_error err;
    int rc = marble_group_wait(g, &err);
    if (rc != MARBLE_OK) mb_fail("marble_group_wait", rc);
}

static void mb_count(const marble_task_ctx *ctx)
{
    int w = marble_task_worker(ctx);
    if (w >= 0 && w < mb_nslots)
        mb_slots[w].n++;
    else
        atomic_fetch_add_explicit(&mb_stray, 1, memory_order_relaxed);
}

static uint64_t mb_counted(void)
{
    return bench_slots_sum(mb_slots, mb_nslots) + atomic_load(&mb_stray);
}

static void mb_clear_counts(void)
{
    bench_slots_clear(mb_slots, mb_nslots);
    atomic_store(&mb_stray, 0);
}

/* Creates a scheduler of exactly `threads` workers, and the task counters when `slots`. */
static marble_sched *mb_start(int threads, int slots)
{
    atomic_store(&mb_failed, 0);
    marble_sched_options opts;
    marble_sched_options_init(&opts);
    opts.threads = threads;
    opts.max_threads = threads;
    marble_sched *s = NULL;
    marble_error err;
    int rc = marble_sched_create(&opts, &s, &err);
    if (rc != MARBLE_OK) {
        fprintf(stderr, "marble-bench: marble: cannot create a scheduler of %d threads: %s\n",
                threads, err.message);
        return NULL;
    }
    if (slots) {
        mb_nslots = threads;
        mb_slots = bench_slots_new(threads);
        if (!mb_slots) {
            fprintf(stderr, "marble-bench: marble: out of memory\n");
            marble_sched_destroy(s);
            return NULL;
        }
        mb_clear_counts();
    }
    return s;
}

static int mb_finish(marble_sched *s)
{
    marble_sched_destroy(s);
    bench_slots_free(mb_slots);
    mb_slots = NULL;
    mb_nslots = 0;
    return atomic_load(&mb_failed) ? -1 : 0;
}

typedef struct mb_fib_arg {
    int n;
    uint64_t result;
} mb_fib_arg;

static uint64_t mb_fib_rec(marble_sched *s, int n);

static marble_task_status mb_fib_task(marble_task_ctx *ctx, void *arg)
{
    mb_fib_arg *a = arg;
    a->result = mb_fib_rec(marble_task_sched(ctx), a->n);
    return MARBLE_TASK_DONE;
}

static uint64_t mb_fib_rec(marble_sched *s, int n)
{
    if (n < 2) return (uint64_t)n;
    marble_group g;
    marble_group_init(&g, s, NULL);
    mb_fib_arg child = {n - 1, 0};
    mb_spawn(&g, mb_fib_task, &child);
    uint64_t b = mb_fib_rec(s, n - 2);
    mb_wait(&g);
    marble_group_destroy(&g);
    return child.result + b;
}

static int mb_bench_fib(int threads, int reps, int n, bench_result *out)
{
    marble_sched *s = mb_start(threads, 0);
    if (!s) return -1;
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        marble_group g;
        marble_group_init(&g, s, NULL);
        mb_fib_arg root = {n, 0};
        mb_spawn(&g, mb_fib_task, &root);
        mb_wait(&g);
        marble_group_destroy(&g);
        bench_result_add(out, r, bench_now() - t0, root.result);
    }
    return mb_finish(s);
}

static marble_task_status mb_count_task(marble_task_ctx *ctx, void *arg)
{
    (void)arg;
    mb_count(ctx);
    return MARBLE_TASK_DONE;
}

static int mb_bench_spawn_common(int threads, int reps, uint64_t ntasks, int token,
                                 bench_result *out)
{
    marble_sched *s = mb_start(threads, 1);
    if (!s) return -1;
    marble_producer_token *tok = NULL;
    if (token) {
        marble_error err;
        int rc = marble_producer_token_create(s, &tok, &err);
        if (rc != MARBLE_OK) {
            fprintf(stderr, "marble-bench: marble: cannot create a producer token: %s\n",
                    err.message);
            mb_finish(s);
            return -1;
        }
    }
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        mb_clear_counts();
        double t0 = bench_now();
        marble_group g;
        marble_group_init(&g, s, NULL);
        if (token) {
            for (uint64_t i = 0; i < ntasks; i++) {
                int rc = marble_producer_submit(tok, &g, mb_count_task, NULL);
                if (rc != MARBLE_OK) {
                    mb_fail("marble_producer_submit", rc);
                    break;
                }
            }
        } else {
            for (uint64_t i = 0; i < ntasks; i++) {
                int rc = marble_group_spawn(&g, mb_count_task, NULL);
                if (rc != MARBLE_OK) {
                    mb_fail("marble_group_spawn", rc);
                    break;
                }
            }
        }
        mb_wait(&g);
        double dt = bench_now() - t0;
        marble_group_destroy(&g);
        bench_result_add(out, r, dt, mb_counted());
    }
    if (tok) marble_producer_token_destroy(tok);
    return mb_finish(s);
}

static int mb_bench_spawn(int threads, int reps, uint64_t ntasks, bench_result *out)
{
    return mb_bench_spawn_common(threads, reps, ntasks, 0, out);
}

static int mb_bench_spawn_token(int threads, int reps, uint64_t ntasks, bench_result *out)
{
    return mb_bench_spawn_common(threads, reps, ntasks, 1, out);
}

static void mb_tree_visit(marble_sched *s, const marble_task_ctx *ctx, uint64_t id);

static marble_task_status mb_tree_task(marble_task_ctx *ctx, void *arg)
{
    mb_tree_visit(marble_task_sched(ctx), ctx, *(const uint64_t *)arg);
    return MARBLE_TASK_DONE;
}

static void mb_tree_visit(marble_sched *s, const marble_task_ctx *ctx, uint64_t id)
{
    for (;;) {
        uint64_t h;
        uint32_t k = bench_tree_expand(id, &h);
        mb_count(ctx);
        if (k == 0) return;
        if (k == 1) {
            id = bench_tree_child(h, 0);
            continue;
        }
        uint64_t local[MB_BATCH_CHILDREN];
        uint64_t *ids = k - 1 <= MB_BATCH_CHILDREN ? local : malloc((k - 1) * sizeof(uint64_t));
        if (!ids) {
            mb_fail("malloc", MARBLE_ERR_NO_MEMORY);
            return;
        }
        marble_group g;
        marble_group_init(&g, s, NULL);
        for (uint32_t i = 0; i + 1 < k; i++) {
            ids[i] = bench_tree_child(h, i);
            mb_spawn(&g, mb_tree_task, &ids[i]);
        }
        mb_tree_visit(s, ctx, bench_tree_child(h, k - 1));
        mb_wait(&g);
        marble_group_destroy(&g);
        if (ids != local) free(ids);
        return;
    }
}

static int mb_bench_tree(int threads, int reps, bench_result *out)
{
    marble_sched *s = mb_start(threads, 1);
    if (!s) return -1;
    uint64_t root = BENCH_TREE_ROOT;
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        mb_clear_counts();
        double t0 = bench_now();
        marble_group g;
        marble_group_init(&g, s, NULL);
        mb_spawn(&g, mb_tree_task, &root);
        mb_wait(&g);
        double dt = bench_now() - t0;
        marble_group_destroy(&g);
        bench_result_add(out, r, dt, mb_counted());
    }
    return mb_finish(s);
}

typedef struct mb_sum_arg {
    const uint32_t *data;
    size_t n;
    uint64_t result;
} mb_sum_arg;

static marble_task_status mb_sum_task(marble_task_ctx *ctx, void *arg)
{
    mb_sum_arg *a = arg;
    if (a->n <= MB_SUM_GRAIN) {
        uint64_t sum = 0;
        for (size_t i = 0; i < a->n; i++)
            sum += a->data[i];
        a->result = sum;
        return MARBLE_TASK_DONE;
    }
    size_t half = a->n / 2;
    mb_sum_arg right = {a->data + half, a->n - half, 0};
    mb_sum_arg left = {a->data, half, 0};
    marble_group g;
    marble_group_init(&g, marble_task_sched(ctx), NULL);
    mb_spawn(&g, mb_sum_task, &right);
    mb_sum_task(ctx, &left);
    mb_wait(&g);
    marble_group_destroy(&g);
    a->result = left.result + right.result;
    return MARBLE_TASK_DONE;
}

static int mb_bench_sum(int threads, int reps, const uint32_t *data, size_t n, bench_result *out)
{
    marble_sched *s = mb_start(threads, 0);
    if (!s) return -1;
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
        marble_group g;
        marble_group_init(&g, s, NULL);
        mb_sum_arg root = {data, n, 0};
        mb_spawn(&g, mb_sum_task, &root);
        mb_wait(&g);
        double dt = bench_now() - t0;
        marble_group_destroy(&g);
        bench_result_add(out, r, dt, root.result);
    }
    return mb_finish(s);
}

static double mb_bench_idle(int threads, double seconds)
{
    marble_sched *s = mb_start(threads, 1);
    if (!s) return -1.0;
    marble_group g;
    marble_group_init(&g, s, NULL);
    for (int i = 0; i < 10000; i++)
        mb_spawn(&g, mb_count_task, NULL);
    mb_wait(&g);
    marble_group_destroy(&g);
    double pct = bench_idle_cpu_pct(seconds);
    return mb_finish(s) == 0 ? pct : -1.0;
}

const bench_sched_impl bench_marble_impl = {
    .name = "marble",
    .fib = mb_bench_fib,
    .spawn = mb_bench_spawn,
    .spawn_token = mb_bench_spawn_token,
    .tree = mb_bench_tree,
    .sum = mb_bench_sum,
    .idle = mb_bench_idle,
};
