/* Tests of the work-stealing scheduler: fork-join, exactly-once, cancellation, errors, yield,
 * blocking, resizing, shutdown, parking and wake-ups, producer tokens, argument errors. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "marble/base.h"
#include "marble/sched.h"
#include "marble_test.h"

static marble_sched *make(int threads)
{
    marble_sched_options o;
    marble_sched_options_init(&o);
    o.threads = threads;
    marble_sched *s = NULL;
    marble_error err;
    int rc = marble_sched_create(&o, &s, &err);
    if (rc != MARBLE_OK) FAIL("marble_sched_create: %s", err.message);
    return s;
}

/* ---- fork-join ------------------------------------------------------------------------------ */

typedef struct fib_arg {
    int n;
    long result;
} fib_arg;

static marble_task_status fib_task(marble_task_ctx *ctx, void *p)
{
    fib_arg *a = p;
    if (a->n < 2) {
        a->result = a->n;
        return MARBLE_TASK_DONE;
    }
    fib_arg left = {a->n - 1, 0}, right = {a->n - 2, 0};
    marble_group g;
    marble_group_init(&g, marble_task_sched(ctx), NULL);
    if (marble_group_spawn(&g, fib_task, &left) != MARBLE_OK)
        return marble_task_fail(ctx, MARBLE_ERR_INTERNAL, "spawn failed");
    fib_task(ctx, &right);
    int rc = marble_group_wait(&g, NULL);
    marble_group_destroy(&g);
    if (rc != MARBLE_OK) return marble_task_fail(ctx, rc, "wait failed");
    a->result = left.result + right.result;
    return MARBLE_TASK_DONE;
}

static long run_fib(marble_sched *s, int n)
{
    fib_arg a = {n, -1};
    marble_group g;
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&g, fib_task, &a));
    ASSERT_OK(marble_group_wait(&g, NULL));
    return a.result;
}

TEST(fib25_nested_groups)
{
    for (int threads = 1; threads <= 4; threads *= 2) {
        marble_sched *s = make(threads);
        ASSERT_EQ_INT(run_fib(s, 25), 75025);
        marble_sched_stats st;
        marble_sched_get_stats(s, &st);
        /* fib(25) makes 242785 calls, 121392 of them with n >= 2, each spawning one task; plus
         * the root task. */
        ASSERT_EQ_U64(st.executed, 121392 + 1);
        ASSERT_EQ_INT(st.threads, threads);
        marble_sched_destroy(s);
    }
}

/* ---- exactly once --------------------------------------------------------------------------- */

#define MILLION 1000000
static _Atomic unsigned char runs[MILLION];

static marble_task_status mark_task(marble_task_ctx *ctx, void *p)
{
    (void)ctx;
    atomic_fetch_add_explicit(&runs[(uintptr_t)p], 1, memory_order_relaxed);
    return MARBLE_TASK_DONE;
}

static void check_all_once(int n)
{
    for (int i = 0; i < n; i++)
        if (atomic_load(&runs[i]) != 1) FAIL("task %d ran %d times", i, atomic_load(&runs[i]));
}

TEST(million_outside_tasks_run_exactly_once)
{
    memset(runs, 0, sizeof runs);
    marble_sched *s = make(2);
    marble_group g;
    marble_group_init(&g, s, NULL);
    for (uintptr_t i = 0; i < MILLION; i++)
        ASSERT_OK(marble_group_spawn(&g, mark_task, (void *)i));
    ASSERT_OK(marble_group_wait(&g, NULL));
    check_all_once(MILLION);
    marble_sched_stats st;
    marble_sched_get_stats(s, &st);
    ASSERT_EQ_U64(st.executed, MILLION);
    ASSERT_EQ_U64(st.injected, MILLION);
    marble_sched_destroy(s);
}

typedef struct spawner_arg {
    marble_group *g;
    int from, to;
} spawner_arg;

/* Splits [from, to) recursively so tasks spread over workers by stealing. */
static marble_task_status range_task(marble_task_ctx *ctx, void *p)
{
    spawner_arg *a = p;
    if (a->to - a->from <= 1024) {
        for (int i = a->from; i < a->to; i++)
            if (marble_group_spawn(a->g, mark_task, (void *)(uintptr_t)i) != MARBLE_OK)
                return marble_task_fail(ctx, MARBLE_ERR_INTERNAL, "spawn %d failed", i);
        free(a);
        return MARBLE_TASK_DONE;
    }
    int mid = a->from + (a->to - a->from) / 2;
    spawner_arg *l = malloc(sizeof *l), *r = malloc(sizeof *r);
    *l = (spawner_arg){a->g, a->from, mid};
    *r = (spawner_arg){a->g, mid, a->to};
    free(a);
    if (marble_group_spawn(l->g, range_task, l) != MARBLE_OK ||
        marble_group_spawn(r->g, range_task, r) != MARBLE_OK)
        return marble_task_fail(ctx, MARBLE_ERR_INTERNAL, "spawn failed");
    return MARBLE_TASK_DONE;
}

TEST(million_worker_spawned_tasks_run_exactly_once_and_are_stolen)
{
    memset(runs, 0, sizeof runs);
    marble_sched *s = make(4);
    marble_group g;
    marble_group_init(&g, s, NULL);
    spawner_arg *root = malloc(sizeof *root);
    *root = (spawner_arg){&g, 0, MILLION};
    ASSERT_OK(marble_group_spawn(&g, range_task, root));
    ASSERT_OK(marble_group_wait(&g, NULL));
    check_all_once(MILLION);
    marble_sched_stats st;
    marble_sched_get_stats(s, &st);
    ASSERT_GT_INT(st.stolen, 0);
    ASSERT_EQ_U64(st.injected, 1);
    marble_sched_destroy(s);
}

TEST(producer_token_tasks_run_exactly_once)
{
    enum { N = 300000 };
    memset(runs, 0, sizeof runs);
    marble_sched *s = make(2);
    marble_producer_token *tok;
    ASSERT_OK(marble_producer_token_create(s, &tok, NULL));
    marble_group g;
    marble_group_init(&g, s, NULL);
    for (uintptr_t i = 0; i < N / 2; i++)
        ASSERT_OK(marble_producer_submit(tok, &g, mark_task, (void *)i));
    void *args[1000];
    for (uintptr_t i = N / 2; i < N; i += 1000) {
        for (int j = 0; j < 1000; j++)
            args[j] = (void *)(i + (uintptr_t)j);
        ASSERT_OK(marble_producer_submit_many(tok, &g, mark_task, args, 1000));
    }
    ASSERT_OK(marble_group_wait(&g, NULL));
    check_all_once(N);
    marble_producer_token_destroy(tok);
    /* A second token reuses the slot. */
    ASSERT_OK(marble_producer_token_create(s, &tok, NULL));
    ASSERT_EQ_INT(marble_producer_submit(tok, &g, NULL, NULL), MARBLE_ERR_INVALID_ARGUMENT);
    marble_producer_token_destroy(tok);
    marble_sched_stats st;
    marble_sched_get_stats(s, &st);
    ASSERT_EQ_U64(st.injected, N);
    ASSERT_EQ_U64(st.executed, N);
    marble_sched_destroy(s);
}

/* ---- cancellation and errors ---------------------------------------------------------------- */

static _Atomic int counter;
static _Atomic int gate;

static marble_task_status count_task(marble_task_ctx *ctx, void *p)
{
    (void)ctx;
    (void)p;
    atomic_fetch_add(&counter, 1);
    return MARBLE_TASK_DONE;
}

/* Runs until its group is cancelled; tells the test it started through `gate`. */
static marble_task_status wait_cancel_task(marble_task_ctx *ctx, void *p)
{
    (void)p;
    atomic_store(&gate, 1);
    while (!marble_task_cancelled(ctx))
        marble_sleep_ns(100000);
    atomic_fetch_add(&counter, 1);
    return MARBLE_TASK_DONE;
}

TEST(cancel_skips_pending_tasks_and_wait_reports_cancelled)
{
    marble_sched *s = make(1);
    atomic_store(&counter, 0);
    atomic_store(&gate, 0);
    marble_group g;
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&g, wait_cancel_task, NULL));
    while (!atomic_load(&gate))
        marble_sleep_ns(100000);
    /* The only worker is busy, so these stay queued until the cancel. */
    for (int i = 0; i < 1000; i++)
        ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
    marble_group_cancel(&g);
    marble_error err;
    ASSERT_EQ_INT(marble_group_wait(&g, &err), MARBLE_ERR_CANCELLED);
    ASSERT_EQ_INT(err.code, MARBLE_ERR_CANCELLED);
    ASSERT_EQ_INT(atomic_load(&counter), 1);
    marble_sched_stats st;
    marble_sched_get_stats(s, &st);
    ASSERT_EQ_U64(st.skipped, 1000);
    ASSERT_EQ_U64(st.executed, 1);
    marble_sched_destroy(s);
}

TEST(parent_token_cancels_child_tokens_and_groups)
{
    marble_cancel_token *root, *child;
    ASSERT_OK(marble_cancel_token_create(NULL, &root, NULL));
    ASSERT_OK(marble_cancel_token_create(root, &child, NULL));
    ASSERT_FALSE(marble_cancel_token_is_cancelled(child));
    ASSERT_FALSE(marble_cancel_token_is_cancelled(NULL));

    marble_sched *s = make(1);
    atomic_store(&counter, 0);
    atomic_store(&gate, 0);
    marble_group g;
    marble_group_init(&g, s, child);
    ASSERT_OK(marble_group_spawn(&g, wait_cancel_task, NULL));
    while (!atomic_load(&gate))
        marble_sleep_ns(100000);
    for (int i = 0; i < 10; i++)
        ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
    marble_cancel_token_cancel(root);
    ASSERT_TRUE(marble_cancel_token_is_cancelled(child));
    ASSERT_TRUE(marble_cancel_token_is_cancelled(marble_group_token(&g)));
    ASSERT_EQ_INT(marble_group_wait(&g, NULL), MARBLE_ERR_CANCELLED);
    ASSERT_EQ_INT(atomic_load(&counter), 1);
    /* A group under a cancelled token skips everything. */
    marble_group g2;
    marble_group_init(&g2, s, child);
    ASSERT_OK(marble_group_spawn(&g2, count_task, NULL));
    ASSERT_EQ_INT(marble_group_wait(&g2, NULL), MARBLE_ERR_CANCELLED);
    ASSERT_EQ_INT(atomic_load(&counter), 1);
    marble_sched_destroy(s);
    marble_cancel_token_destroy(child);
    marble_cancel_token_destroy(root);
}

static marble_task_status fail_task(marble_task_ctx *ctx, void *p)
{
    return marble_task_fail(ctx, MARBLE_ERR_IO, "reading disk %d", (int)(uintptr_t)p);
}

static marble_task_status fail_silently_task(marble_task_ctx *ctx, void *p)
{
    (void)ctx;
    (void)p;
    return MARBLE_TASK_ERROR;
}

TEST(first_error_wins_and_cancels_the_rest)
{
    marble_sched *s = make(1);
    atomic_store(&counter, 0);
    atomic_store(&gate, 0);
    marble_group g;
    marble_group_init(&g, s, NULL);
    /* Hold the only worker so the queue order is known: fail(7), fail(8), then 100 counters. */
    marble_cancel_token *hold;
    ASSERT_OK(marble_cancel_token_create(NULL, &hold, NULL));
    marble_group hg;
    marble_group_init(&hg, s, hold);
    ASSERT_OK(marble_group_spawn(&hg, wait_cancel_task, NULL));
    while (!atomic_load(&gate))
        marble_sleep_ns(100000);
    ASSERT_OK(marble_group_spawn(&g, fail_task, (void *)7));
    ASSERT_OK(marble_group_spawn(&g, fail_task, (void *)8));
    for (int i = 0; i < 100; i++)
        ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
    marble_cancel_token_cancel(hold);
    marble_error err;
    ASSERT_EQ_INT(marble_group_wait(&g, &err), MARBLE_ERR_IO);
    ASSERT_EQ_INT(err.code, MARBLE_ERR_IO);
    ASSERT_EQ_STR(err.message, "reading disk 7");
    ASSERT_EQ_INT(marble_group_wait(&hg, NULL), MARBLE_ERR_CANCELLED);
    ASSERT_EQ_INT(atomic_load(&counter), 1); /* only the holder counted */

    marble_group g2;
    marble_group_init(&g2, s, NULL);
    ASSERT_OK(marble_group_spawn(&g2, fail_silently_task, NULL));
    ASSERT_EQ_INT(marble_group_wait(&g2, &err), MARBLE_ERR_TASK_FAILED);
    ASSERT_CONTAINS(err.message, "without a message");
    marble_sched_destroy(s);
    marble_cancel_token_destroy(hold);
}

static marble_task_status nested_fail_task(marble_task_ctx *ctx, void *p)
{
    int depth = (int)(uintptr_t)p;
    if (depth == 0) return marble_task_fail(ctx, MARBLE_ERR_CORRUPTION, "leaf failed");
    marble_group g;
    marble_group_init(&g, marble_task_sched(ctx), marble_group_token(marble_task_group(ctx)));
    marble_group_spawn(&g, nested_fail_task, (void *)(uintptr_t)(depth - 1));
    marble_error err;
    int rc = marble_group_wait(&g, &err);
    if (rc != MARBLE_OK) return marble_task_fail(ctx, rc, "depth %d: %s", depth, err.message);
    return MARBLE_TASK_DONE;
}

TEST(errors_propagate_through_nested_groups)
{
    marble_sched *s = make(2);
    marble_group g;
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&g, nested_fail_task, (void *)3));
    marble_error err;
    ASSERT_EQ_INT(marble_group_wait(&g, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_EQ_STR(err.message, "depth 3: depth 2: depth 1: leaf failed");
    /* The group is reusable after a wait. */
    atomic_store(&counter, 0);
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_EQ_INT(atomic_load(&counter), 2);
    marble_sched_destroy(s);
}

/* ---- yield and blocked tasks ---------------------------------------------------------------- */

static char order[64];
static _Atomic int order_len;

static void log_char(char c)
{
    int i = atomic_fetch_add(&order_len, 1);
    if (i < (int)sizeof order - 1) order[i] = c;
}

static marble_task_status yielding_task(marble_task_ctx *ctx, void *p)
{
    int *left = p;
    (void)ctx;
    log_char('A');
    return (*left)-- > 0 ? MARBLE_TASK_YIELD : MARBLE_TASK_DONE;
}

static marble_task_status b_task(marble_task_ctx *ctx, void *p)
{
    (void)ctx;
    (void)p;
    log_char('B');
    return MARBLE_TASK_DONE;
}

TEST(yield_requeues_behind_other_tasks)
{
    marble_sched *s = make(1);
    memset(order, 0, sizeof order);
    atomic_store(&order_len, 0);
    atomic_store(&gate, 0);
    marble_cancel_token *hold;
    ASSERT_OK(marble_cancel_token_create(NULL, &hold, NULL));
    marble_group hg, g;
    marble_group_init(&hg, s, hold);
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&hg, wait_cancel_task, NULL));
    while (!atomic_load(&gate))
        marble_sleep_ns(100000);
    int left = 2;
    ASSERT_OK(marble_group_spawn(&g, yielding_task, &left));
    ASSERT_OK(marble_group_spawn(&g, b_task, NULL));
    ASSERT_OK(marble_group_spawn(&g, b_task, NULL));
    marble_cancel_token_cancel(hold);
    ASSERT_OK(marble_group_wait(&g, NULL));
    marble_group_wait(&hg, NULL);
    /* The yielding task runs three times; each yield lets queued tasks go first. */
    ASSERT_EQ_STR(order, "ABBAA");
    marble_sched_destroy(s);
    marble_cancel_token_destroy(hold);
}

typedef struct block_arg {
    _Atomic(marble_task_handle *) handle;
    _Atomic int calls;
    int resume_early;
} block_arg;

static marble_task_status blocking_task(marble_task_ctx *ctx, void *p)
{
    block_arg *a = p;
    if (atomic_fetch_add(&a->calls, 1) > 0) return MARBLE_TASK_DONE;
    marble_task_handle *h = marble_task_block(ctx);
    if (a->resume_early)
        marble_task_resume(h);
    else
        atomic_store(&a->handle, h);
    return MARBLE_TASK_BLOCKED;
}

static marble_task_status bad_block_task(marble_task_ctx *ctx, void *p)
{
    (void)ctx;
    (void)p;
    return MARBLE_TASK_BLOCKED;
}

TEST(blocked_task_runs_again_after_resume)
{
    marble_sched *s = make(2);
    block_arg a = {NULL, 0, 0};
    marble_group g;
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&g, blocking_task, &a));
    marble_task_handle *h;
    while (!(h = atomic_load(&a.handle)))
        marble_sleep_ns(100000);
    marble_sleep_ns(2000000);
    ASSERT_EQ_INT(marble_group_pending(&g), 1);
    ASSERT_EQ_INT(atomic_load(&a.calls), 1);
    marble_task_resume(h);
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_EQ_INT(atomic_load(&a.calls), 2);

    block_arg early = {NULL, 0, 1};
    ASSERT_OK(marble_group_spawn(&g, blocking_task, &early));
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_EQ_INT(atomic_load(&early.calls), 2);

    marble_error err;
    ASSERT_OK(marble_group_spawn(&g, bad_block_task, NULL));
    ASSERT_EQ_INT(marble_group_wait(&g, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "marble_task_block");
    marble_sched_destroy(s);
}

/* ---- resizing ------------------------------------------------------------------------------- */

static _Atomic int resizing;
static _Atomic int resizes;

static void *resizer(void *p)
{
    marble_sched *s = p;
    int n = 1;
    while (atomic_load(&resizing)) {
        n = n % 4 + 1;
        if (marble_sched_set_threads(s, n, NULL) != MARBLE_OK) abort();
        atomic_fetch_add(&resizes, 1);
        marble_sleep_ns(200000);
    }
    return NULL;
}

static marble_task_status mark_slow_task(marble_task_ctx *ctx, void *p)
{
    for (volatile int i = 0; i < 50; i++) {
    }
    return mark_task(ctx, p);
}

TEST(resize_while_running_loses_and_duplicates_nothing)
{
    enum { N = 200000 };
    marble_sched *s = make(2);
    pthread_t th;
    atomic_store(&resizing, 1);
    atomic_store(&resizes, 0);
    ASSERT_OK(pthread_create(&th, NULL, resizer, s));
    /* Rounds of work until the pool has been resized at least 40 times while tasks ran. */
    int rounds = 0;
    while (atomic_load(&resizes) < 40 && rounds < 1000) {
        memset(runs, 0, sizeof runs);
        int before = atomic_load(&resizes);
        marble_group g;
        marble_group_init(&g, s, NULL);
        spawner_arg *root = malloc(sizeof *root);
        *root = (spawner_arg){&g, 0, N / 2};
        ASSERT_OK(marble_group_spawn(&g, range_task, root));
        for (uintptr_t i = N / 2; i < N; i++)
            ASSERT_OK(marble_group_spawn(&g, mark_slow_task, (void *)i));
        ASSERT_OK(marble_group_wait(&g, NULL));
        check_all_once(N);
        if (atomic_load(&resizes) > before) rounds++;
    }
    atomic_store(&resizing, 0);
    pthread_join(th, NULL);
    ASSERT_GE_INT(atomic_load(&resizes), 40);
    ASSERT_OK(marble_sched_set_threads(s, 3, NULL));
    ASSERT_EQ_INT(marble_sched_threads(s), 3);
    ASSERT_EQ_INT(run_fib(s, 18), 2584);
    marble_sched_destroy(s);
}

static marble_task_status resize_from_worker_task(marble_task_ctx *ctx, void *p)
{
    int n = (int)(uintptr_t)p;
    int rc = marble_sched_set_threads(marble_task_sched(ctx), n, NULL);
    if (rc != MARBLE_OK) return marble_task_fail(ctx, rc, "set_threads(%d)", n);
    return MARBLE_TASK_DONE;
}

TEST(resize_from_inside_a_task)
{
    marble_sched *s = make(3);
    marble_group g;
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&g, resize_from_worker_task, (void *)1));
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_EQ_INT(marble_sched_threads(s), 1);
    ASSERT_EQ_INT(run_fib(s, 15), 610);
    ASSERT_OK(marble_group_spawn(&g, resize_from_worker_task, (void *)4));
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_EQ_INT(marble_sched_threads(s), 4);
    ASSERT_EQ_INT(run_fib(s, 15), 610);
    marble_sched_destroy(s);
}

/* ---- shutdown ------------------------------------------------------------------------------- */

static marble_task_status spawn_more_task(marble_task_ctx *ctx, void *p)
{
    (void)p;
    atomic_fetch_add(&counter, 1);
    marble_group *g = marble_task_group(ctx);
    for (int i = 0; i < 10; i++)
        if (marble_group_spawn(g, count_task, NULL) != MARBLE_OK)
            return marble_task_fail(ctx, MARBLE_ERR_INTERNAL, "spawn during drain failed");
    return MARBLE_TASK_DONE;
}

TEST(shutdown_drain_runs_pending_work)
{
    marble_sched *s = make(2);
    atomic_store(&counter, 0);
    marble_group g;
    marble_group_init(&g, s, NULL);
    for (int i = 0; i < 10000; i++)
        ASSERT_OK(marble_group_spawn(&g, spawn_more_task, NULL));
    marble_error err;
    ASSERT_OK(marble_sched_shutdown(s, MARBLE_SHUTDOWN_DRAIN, &err));
    /* Every queued task ran, and so did the 10 each of them spawned while draining. */
    ASSERT_EQ_INT(atomic_load(&counter), 10000 * 11);
    ASSERT_EQ_INT(marble_group_pending(&g), 0);
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_EQ_INT(marble_group_spawn(&g, count_task, NULL), MARBLE_ERR_SHUTDOWN);
    ASSERT_EQ_INT(marble_sched_set_threads(s, 2, &err), MARBLE_ERR_SHUTDOWN);
    ASSERT_OK(marble_sched_shutdown(s, MARBLE_SHUTDOWN_DRAIN, NULL)); /* idempotent */
    marble_sched_destroy(s);
}

TEST(shutdown_cancel_skips_pending_work)
{
    marble_sched *s = make(1);
    atomic_store(&counter, 0);
    atomic_store(&gate, 0);
    marble_group g;
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&g, wait_cancel_task, NULL));
    while (!atomic_load(&gate))
        marble_sleep_ns(100000);
    for (int i = 0; i < 5000; i++)
        ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
    ASSERT_OK(marble_sched_shutdown(s, MARBLE_SHUTDOWN_CANCEL, NULL));
    ASSERT_EQ_INT(atomic_load(&counter), 1); /* the running task saw the cancel and finished */
    ASSERT_EQ_INT(marble_group_wait(&g, NULL), MARBLE_ERR_CANCELLED);
    marble_sched_stats st;
    marble_sched_get_stats(s, &st);
    ASSERT_EQ_U64(st.skipped, 5000);
    marble_sched_destroy(s);
}

TEST(destroy_with_pending_work_drains_it)
{
    marble_sched *s = make(2);
    atomic_store(&counter, 0);
    marble_group g;
    marble_group_init(&g, s, NULL);
    for (int i = 0; i < 20000; i++)
        ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
    marble_sched_destroy(s);
    ASSERT_EQ_INT(atomic_load(&counter), 20000);
    marble_sched_destroy(NULL);
}

/* ---- parking and wake-ups ------------------------------------------------------------------- */

static void wait_parked(marble_sched *s, uint64_t parks_at_least)
{
    marble_sched_stats st;
    for (int i = 0; i < 20000; i++) {
        marble_sched_get_stats(s, &st);
        if (st.parks >= parks_at_least) return;
        marble_sleep_ns(100000);
    }
    FAIL("workers did not park within 2 s (parks %ju, wanted %ju)", (uintmax_t)st.parks,
         (uintmax_t)parks_at_least);
}

TEST(idle_workers_park_and_a_submit_wakes_one)
{
    marble_sched *s = make(2);
    wait_parked(s, 2);
    marble_sched_stats before, after;
    marble_sched_get_stats(s, &before);
    atomic_store(&counter, 0);
    marble_group g;
    marble_group_init(&g, s, NULL);
    ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_EQ_INT(atomic_load(&counter), 1);
    marble_sched_get_stats(s, &after);
    ASSERT_GT_INT(after.wakeups, before.wakeups);
    /* And they park again: the idle scheduler sleeps. */
    wait_parked(s, before.parks + 1);
    marble_sched_destroy(s);
}

TEST(no_lost_wakeups_under_park_submit_races)
{
    /* Workers park after a single spin round, so most submissions race with a worker going to
     * sleep. A lost wake-up leaves the wait hanging and CTest's time limit fails the test. */
    marble_sched_options o;
    marble_sched_options_init(&o);
    o.threads = 2;
    o.spin_rounds = 1;
    marble_sched *s;
    ASSERT_OK(marble_sched_create(&o, &s, NULL));
    marble_producer_token *tok;
    ASSERT_OK(marble_producer_token_create(s, &tok, NULL));
    atomic_store(&counter, 0);
    int rounds = 20000;
    for (int i = 0; i < rounds; i++) {
        marble_group g;
        marble_group_init(&g, s, NULL);
        if (i % 2)
            ASSERT_OK(marble_group_spawn(&g, count_task, NULL));
        else
            ASSERT_OK(marble_producer_submit(tok, &g, count_task, NULL));
        ASSERT_OK(marble_group_wait(&g, NULL));
        if (i % 1000 == 0) marble_sleep_ns(1000000);
    }
    ASSERT_EQ_INT(atomic_load(&counter), rounds);
    marble_sched_stats st;
    marble_sched_get_stats(s, &st);
    ASSERT_GT_INT(st.parks, 0);
    marble_producer_token_destroy(tok);
    marble_sched_destroy(s);
}

/* ---- arguments and introspection ------------------------------------------------------------ */

static marble_task_status index_task(marble_task_ctx *ctx, void *p)
{
    int *out = p;
    *out = marble_sched_worker_index(marble_task_sched(ctx));
    if (*out != marble_task_worker(ctx)) return marble_task_fail(ctx, MARBLE_ERR_INTERNAL, "index");
    return MARBLE_TASK_DONE;
}

TEST(bad_arguments_are_clear_errors)
{
    marble_sched_options o;
    marble_sched_options_init(&o);
    o.threads = -1;
    marble_sched *s = NULL;
    marble_error err;
    ASSERT_EQ_INT(marble_sched_create(&o, &s, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "threads -1");
    ASSERT_NULL(s);
    o.threads = 8;
    o.max_threads = 4;
    ASSERT_EQ_INT(marble_sched_create(&o, &s, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "max_threads (4)");
    ASSERT_EQ_INT(marble_sched_create(NULL, NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);

    s = make(2);
    ASSERT_EQ_INT(marble_sched_set_threads(s, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "0 threads");
    ASSERT_EQ_INT(marble_sched_set_threads(s, 100000, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_sched_shutdown(s, (marble_shutdown_mode)9, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    marble_group g;
    marble_group_init(&g, s, NULL);
    ASSERT_EQ_INT(marble_group_spawn(&g, NULL, NULL), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_group_spawn(NULL, count_task, NULL), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_group_wait(NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_sched_worker_index(s), -1);
    int idx = -2;
    ASSERT_OK(marble_group_spawn(&g, index_task, &idx));
    ASSERT_OK(marble_group_wait(&g, NULL));
    ASSERT_TRUE(idx == 0 || idx == 1);
    marble_sched_destroy(s);
}

/* ---- outside threads and their implicit producer queues ------------------------------------- */

typedef struct outsider {
    marble_sched *a, *b;
    int n;
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *stage;
} outsider;

static void *outside_spawner(void *p)
{
    outsider *o = p;
    for (int round = 0; round < 4; round++) {
        /* Alternating schedulers hands this thread's queue back and takes another each time. */
        marble_sched *s = (round % 2 || !o->b) ? o->a : o->b;
        marble_group g;
        marble_group_init(&g, s, NULL);
        for (int i = 0; i < o->n; i++)
            if (marble_group_spawn(&g, count_task, NULL) != MARBLE_OK) return (void *)1;
        if (marble_group_wait(&g, NULL) != MARBLE_OK) return (void *)1;
    }
    if (o->mu) {
        /* Wait until the scheduler is destroyed, then exit: the thread-exit hook must notice
         * that its queue's scheduler is gone and leave it alone. */
        pthread_mutex_lock(o->mu);
        *o->stage = 1;
        pthread_cond_broadcast(o->cv);
        while (*o->stage != 2)
            pthread_cond_wait(o->cv, o->mu);
        pthread_mutex_unlock(o->mu);
    }
    return NULL;
}

TEST(outside_threads_come_and_go)
{
    marble_sched *a = make(2), *b = make(1);
    atomic_store(&counter, 0);
    for (int wave = 0; wave < 4; wave++) {
        pthread_t th[8];
        outsider o = {a, b, 500, NULL, NULL, NULL};
        for (int i = 0; i < 8; i++)
            ASSERT_OK(pthread_create(&th[i], NULL, outside_spawner, &o));
        for (int i = 0; i < 8; i++) {
            void *rv;
            pthread_join(th[i], &rv);
            ASSERT_NULL(rv);
        }
    }
    ASSERT_EQ_INT(atomic_load(&counter), 4 * 8 * 4 * 500);
    marble_sched_stats st;
    marble_sched_get_stats(a, &st);
    ASSERT_EQ_U64(st.injected, 4 * 8 * 2 * 500);
    marble_sched_destroy(b);

    /* A thread outlives the scheduler it spawned into. */
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int stage = 0;
    outsider o = {a, NULL, 100, &mu, &cv, &stage};
    pthread_t th;
    ASSERT_OK(pthread_create(&th, NULL, outside_spawner, &o));
    pthread_mutex_lock(&mu);
    while (stage != 1)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    marble_sched_destroy(a);
    pthread_mutex_lock(&mu);
    stage = 2;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    void *rv;
    pthread_join(th, &rv);
    ASSERT_NULL(rv);
    /* A new scheduler (perhaps at the same address) starts from a clean slate. */
    a = make(2);
    ASSERT_EQ_INT(run_fib(a, 15), 610);
    marble_sched_destroy(a);
}
