/*
 * Marble's work-stealing task scheduler.
 *
 * A scheduler owns a pool of worker threads (default: one per online CPU). Each worker owns a
 * Chase–Lev deque: tasks spawned by a worker go to the bottom of its own deque and it pops them
 * LIFO; idle workers steal FIFO from the top of a randomly chosen victim's deque. Tasks submitted
 * from threads outside the pool go into a single-producer queue owned by the submitting thread
 * (its producer token, or one made for it implicitly on its first submission and given back when
 * the thread exits), from which workers steal in batches; no lock is taken per task. A shared,
 * locked injection queue takes resumed tasks, the queues of retiring workers, and submissions
 * when no producer queue can be allocated.
 *
 * Tasks are always spawned into a task group (marble_group). Waiting for a group from a worker
 * thread runs other tasks meanwhile ("helping"), so nested fork-join never deadlocks; waiting from
 * an outside thread blocks. The first error returned by a task of a group is what the group's
 * wait returns, and the group's not-yet-started tasks are then skipped.
 *
 * Task functions return a marble_task_status:
 *   MARBLE_TASK_DONE     finished;
 *   MARBLE_TASK_YIELD    not finished: the task is re-queued behind every other queued task
 *                        and called again later (execution budgets; long work yields so that
 *                        cancellation and other work stay prompt);
 *   MARBLE_TASK_BLOCKED  parked: the task must have called marble_task_block() first and will be
 *                        called again after someone calls marble_task_resume() on that handle;
 *   MARBLE_TASK_ERROR    failed: record the reason with marble_task_fail() (which returns
 *                        MARBLE_TASK_ERROR); the group is cancelled.
 *
 * Cancellation: a marble_cancel_token can be cancelled at any time; tokens form a tree and a token
 * is cancelled when any ancestor is. Each group has a token of its own whose parent is the token
 * given at marble_group_init. Once it is cancelled, the group's tasks that have not started are
 * skipped, running tasks see it through marble_task_cancelled(), and the wait returns
 * MARBLE_ERR_CANCELLED (unless a task failed first: then its error).
 *
 * Idle workers spin briefly, then park on a futex (an idle scheduler uses ~0% CPU); submissions
 * wake a parked worker. The pool can be resized while tasks run (marble_sched_set_threads).
 *
 * Memory: task records come from per-worker free lists backed by slabs, so spawning does not call
 * malloc on the hot path. Slabs are kept until marble_sched_destroy; the footprint is bounded by
 * the peak number of queued tasks (64 bytes each).
 *
 * Shutdown policy: marble_sched_shutdown(s, MARBLE_SHUTDOWN_DRAIN), which marble_sched_destroy
 * performs if it was not called, refuses new submissions from outside threads
 * (MARBLE_ERR_SHUTDOWN), runs every task already queued, including tasks those tasks spawn, and
 * joins the workers. MARBLE_SHUTDOWN_CANCEL instead skips every task that has not started (their
 * groups' waits return MARBLE_ERR_CANCELLED) and waits only for the running ones. Blocked tasks
 * that are never resumed keep their group waiting; resuming one after shutdown skips it.
 *
 * Thread safety: every function may be called from any thread, except where noted (a producer
 * token is used by one thread at a time; a group is waited on by one thread at a time).
 * marble_sched_destroy must not be called from a worker thread or while other threads still use
 * the scheduler.
 */
#ifndef MARBLE_SCHED_H
#define MARBLE_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct marble_sched marble_sched;
typedef struct marble_task_ctx marble_task_ctx;
typedef struct marble_task_handle marble_task_handle;
typedef struct marble_cancel_token marble_cancel_token;
typedef struct marble_producer_token marble_producer_token;

typedef enum marble_task_status {
    MARBLE_TASK_DONE = 0,
    MARBLE_TASK_YIELD = 1,
    MARBLE_TASK_BLOCKED = 2,
    MARBLE_TASK_ERROR = 3
} marble_task_status;

typedef marble_task_status (*marble_task_fn)(marble_task_ctx *ctx, void *arg);

/* ---- Scheduler ------------------------------------------------------------------------------- */

typedef struct marble_sched_options {
    /* Worker threads to start. 0 (the default) means one per online CPU. */
    int threads;
    /* Upper bound for marble_sched_set_threads. 0 means max(threads, 4 * online CPUs, 64). */
    int max_threads;
    /* Rounds an idle worker spends looking for work before it parks. 0 means the default (64). */
    int spin_rounds;
} marble_sched_options;

/* Fills `opts` with the defaults documented above. */
MARBLE_API void marble_sched_options_init(marble_sched_options *opts);

/* Creates a scheduler and starts its workers. `opts` may be NULL (defaults). */
MARBLE_API int marble_sched_create(const marble_sched_options *opts, marble_sched **out,
                                   marble_error *err);

typedef enum marble_shutdown_mode {
    MARBLE_SHUTDOWN_DRAIN = 0,
    MARBLE_SHUTDOWN_CANCEL = 1
} marble_shutdown_mode;

/* Stops the scheduler as the shutdown policy above describes and joins the workers. Idempotent.
 * Must not be called from a worker thread (MARBLE_ERR_INVALID_ARGUMENT). */
MARBLE_API int marble_sched_shutdown(marble_sched *s, marble_shutdown_mode mode, marble_error *err);

/* Shuts down (DRAIN) if needed and frees the scheduler. Accepts NULL. */
MARBLE_API void marble_sched_destroy(marble_sched *s);

/* Number of workers the pool is currently set to run. */
MARBLE_API int marble_sched_threads(const marble_sched *s);

/* Changes the number of workers while tasks run; no task is lost or run twice. Growing starts
 * workers at once. Shrinking asks the surplus workers to stop: each finishes its current task,
 * hands its queued tasks to the others, and exits. Called from an outside thread, the call
 * returns after they exited; called from a worker, it returns at once. `n` must be in
 * [1, max_threads]. */
MARBLE_API int marble_sched_set_threads(marble_sched *s, int n, marble_error *err);

/* Index of the calling worker thread in [0, max_threads), or -1 if the caller is not a worker of
 * `s`. */
MARBLE_API int marble_sched_worker_index(const marble_sched *s);

typedef struct marble_sched_stats {
    uint64_t executed; /* task runs (a yielded task counts once per run) */
    uint64_t stolen;   /* tasks taken from another worker's deque or a producer token's queue */
    uint64_t injected; /* tasks submitted from outside threads (injection queue + tokens) */
    uint64_t skipped;  /* tasks not run because their group was cancelled */
    uint64_t parks;    /* times a worker parked (slept on the futex) */
    uint64_t wakeups;  /* times a parked worker was woken */
    int threads;       /* current pool size */
} marble_sched_stats;

/* Sums the counters over all workers. Counters are read without stopping the workers, so the
 * sum is a consistent snapshot only when the scheduler is quiet. */
MARBLE_API void marble_sched_get_stats(const marble_sched *s, marble_sched_stats *out);

/* ---- Cancellation tokens --------------------------------------------------------------------- */

/* Creates a token. If `parent` is not NULL, the new token is cancelled whenever the parent is;
 * the parent must outlive the child. */
MARBLE_API int marble_cancel_token_create(marble_cancel_token *parent, marble_cancel_token **out,
                                          marble_error *err);
/* Accepts NULL. Destroy children before their parent. */
MARBLE_API void marble_cancel_token_destroy(marble_cancel_token *t);
/* Cancels the token (and so every descendant). Idempotent; safe from any thread or a signal
 * handler (a single atomic store). */
MARBLE_API void marble_cancel_token_cancel(marble_cancel_token *t);
/* 1 if the token or an ancestor is cancelled. NULL is never cancelled. */
MARBLE_API int marble_cancel_token_is_cancelled(const marble_cancel_token *t);

/* ---- Task groups ----------------------------------------------------------------------------- */

/* Caller-allocated (for example on the stack, so that fork-join costs no malloc). Treat as
 * opaque. */
typedef struct marble_group {
    _Alignas(64) unsigned char opaque_[384];
} marble_group;

/* Prepares a group on `s`. `parent` (may be NULL) becomes the parent of the group's own token.
 * A group may be reused after a wait returned. */
MARBLE_API void marble_group_init(marble_group *g, marble_sched *s, marble_cancel_token *parent);

/* Spawns fn(ctx, arg) into the group. From a worker of the group's scheduler the task goes to the
 * worker's own deque; from any other thread, to the injection queue. Errors:
 * MARBLE_ERR_INVALID_ARGUMENT (NULL fn), MARBLE_ERR_SHUTDOWN (outside thread after shutdown),
 * MARBLE_ERR_LIMIT (over 2^30 tasks pending in one group). */
MARBLE_API int marble_group_spawn(marble_group *g, marble_task_fn fn, void *arg);

/* Waits until every task of the group has finished or been skipped. From a worker thread it runs
 * other tasks meanwhile; from an outside thread it blocks. Returns MARBLE_OK, the first task
 * error (its code, and its message in `err`), or MARBLE_ERR_CANCELLED. Resets the error state so
 * the group can be reused; a cancellation stays. */
MARBLE_API int marble_group_wait(marble_group *g, marble_error *err);

/* Cancels the group: its tasks that have not started are skipped; running ones can poll. */
MARBLE_API void marble_group_cancel(marble_group *g);

/* The group's own token (valid while the group is), e.g. as the parent of nested groups. */
MARBLE_API marble_cancel_token *marble_group_token(marble_group *g);

/* Number of tasks spawned into the group that have not finished. A worker that finishes several
 * tasks of one group in a row reports them together (before it runs a task of another group,
 * waits, or idles), so the count may lag by those; a wait never returns early or late because of
 * it. */
MARBLE_API uint32_t marble_group_pending(const marble_group *g);

/* Nothing to release today; call it when a group's life ends so later versions can. The group
 * must have no pending tasks. */
MARBLE_API void marble_group_destroy(marble_group *g);

/* ---- Inside a task --------------------------------------------------------------------------- */

/* 1 if the running task's group (or an ancestor token) is cancelled. */
MARBLE_API int marble_task_cancelled(const marble_task_ctx *ctx);
/* Records the task's failure (the first failure of a group wins) and returns MARBLE_TASK_ERROR,
 * so a task can `return marble_task_fail(ctx, MARBLE_ERR_IO, "reading %s", path);`. */
MARBLE_API marble_task_status marble_task_fail(marble_task_ctx *ctx, int code, const char *fmt, ...)
    MARBLE_PRINTF(3, 4);
MARBLE_API marble_group *marble_task_group(const marble_task_ctx *ctx);
MARBLE_API marble_sched *marble_task_sched(const marble_task_ctx *ctx);
MARBLE_API int marble_task_worker(const marble_task_ctx *ctx);

/* Returns a handle for the running task, which must then return MARBLE_TASK_BLOCKED. Exactly
 * one marble_task_resume(handle) must follow (from any thread, even before the task has
 * returned); the task is then queued and called again. */
MARBLE_API marble_task_handle *marble_task_block(marble_task_ctx *ctx);
MARBLE_API void marble_task_resume(marble_task_handle *h);

/* ---- Producer tokens ------------------------------------------------------------------------- */

/* A producer token gives one outside thread a queue of its own: submitting is a store into a
 * single-producer queue (no lock), and workers steal from it in batches. marble_group_spawn from
 * an outside thread already uses such a queue made implicitly for that thread; an explicit token
 * lets one thread keep several, or hand one to another thread. A token is used by one thread at a
 * time. Tasks still queued when it is destroyed run as usual. */
MARBLE_API int marble_producer_token_create(marble_sched *s, marble_producer_token **out,
                                            marble_error *err);
MARBLE_API void marble_producer_token_destroy(marble_producer_token *t);
/* Spawns fn(ctx, arg) into `g` through the token. Errors as marble_group_spawn. */
MARBLE_API int marble_producer_submit(marble_producer_token *t, marble_group *g, marble_task_fn fn,
                                      void *arg);
/* Spawns n tasks fn(ctx, args[i]) with a single wake-up of the workers. */
MARBLE_API int marble_producer_submit_many(marble_producer_token *t, marble_group *g,
                                           marble_task_fn fn, void *const *args, size_t n);

#ifdef __cplusplus
}
#endif
#endif
