/* Asynchronous reads: the public marble_aio API, batch bookkeeping and the thread path. */
#include "marble/vfs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vfs/aio_internal.h"
#include "vfs/vfs_internal.h"

#define AIO_DEFAULT_DEPTH 256u
#define AIO_PRIVATE_THREADS 2
#define AIO_TASK_MAX_REQS 16
#define AIO_TASKS_PER_THREAD 4
#define AIO_MAX_BATCH ((size_t)1 << 28)

/* A task of the thread path: requests [first, first + count) of the batch's thread list. */
typedef struct aio_task {
    marble_aio_batch *batch;
    size_t first;
    size_t count;
    int ran; /* set by the task, or by submit when the spawn failed; read after the group wait */
} aio_task;

/*
 * One submitted batch. Allocated in one piece: the batch, then (io_uring only) its ring ops and
 * its thread list, then its tasks.
 *
 * Thread safety: the submitting thread fills everything before the first request can complete;
 * afterwards completions (from the ring's thread, workers, or the submitter) touch only their
 * own request, `remaining`, and under `lock` the first failure and `done`. `prev`/`next` are
 * guarded by the owning marble_aio's lock.
 *
 * Invariants: `remaining` counts the requests not yet completed; each request completes exactly
 * once (marble__aio_complete); `done` is set under `lock` when `remaining` reaches 0, and the
 * batch is freed only by whoever waits for it after that.
 */
struct marble_aio_batch {
    marble_group group; /* first, for its 64-byte alignment */
    marble_aio *aio;
    marble_aio_req *reqs;
    size_t n;
    marble_aio_cb cb;
    void *ud;
    _Atomic size_t remaining;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;         /* under lock */
    size_t err_index; /* under lock: the lowest failed request, n if none */
    marble_error err; /* under lock: its status and message */
    marble__aio_run run;
    size_t *thread_idx; /* the requests of the thread path; NULL: all of them, in order */
    size_t nthread;
    aio_task *tasks;
    size_t ntasks;
    int spawned; /* the group was initialised */
    marble_aio_batch *prev, *next;
};

/*
 * Thread safety: submit and wait may be called from any thread; `lock` guards the list of
 * batches not yet waited for and the lazily created private scheduler.
 *
 * Lock order: no function of the async read code holds two locks at once. marble_aio.lock,
 * marble_aio_batch.lock and the ring's submission lock (uring_linux.c) are each taken alone, and
 * none is held while a callback runs or while calling into the scheduler's wait.
 */
struct marble_aio {
    marble_aio_backend backend;
    marble__uring *uring;
    pthread_mutex_t lock;
    marble_sched *sched; /* under lock until set; then fixed */
    int own_sched;
    marble_aio_batch *batches; /* under lock */
};

static int make_private_sched(marble_sched **out, marble_error *err)
{
    marble_sched_options o;
    marble_sched_options_init(&o);
    o.threads = AIO_PRIVATE_THREADS;
    marble_error e;
    int rc = marble_sched_create(&o, out, &e);
    if (rc != MARBLE_OK)
        marble_error_set(err, rc, "marble_aio: creating its private scheduler: %s", e.message);
    return rc;
}

int marble_aio_create(const marble_aio_options *opts, marble_aio **out, marble_error *err)
{
    marble_aio_options o = {MARBLE_AIO_AUTO, 0, NULL};
    if (opts) o = *opts;
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "marble_aio_create: out is NULL");
    *out = NULL;
    if (o.backend != MARBLE_AIO_AUTO && o.backend != MARBLE_AIO_URING &&
        o.backend != MARBLE_AIO_THREADS)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_aio_create: unknown backend %d", (int)o.backend);
    if (o.queue_depth == 0) o.queue_depth = AIO_DEFAULT_DEPTH;
    if (o.queue_depth > MARBLE__URING_MAX_DEPTH)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_aio_create: queue_depth %u is above %u", o.queue_depth,
                                MARBLE__URING_MAX_DEPTH);

    marble_aio *aio = calloc(1, sizeof(*aio));
    if (!aio)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "marble_aio_create: out of memory");
    pthread_mutex_init(&aio->lock, NULL);
    aio->sched = o.sched;
    aio->backend = MARBLE_AIO_THREADS;
    int rc = MARBLE_OK;
    if (o.backend != MARBLE_AIO_THREADS) {
        marble_error uerr;
        rc = marble__uring_create(o.queue_depth, &aio->uring, &uerr);
        if (rc == MARBLE_OK) {
            aio->backend = MARBLE_AIO_URING;
        } else if (o.backend == MARBLE_AIO_URING || rc != MARBLE_ERR_UNSUPPORTED) {
            marble_error_set(err, rc, "marble_aio_create: %s", uerr.message);
            goto fail;
        }
        rc = MARBLE_OK;
    }
    if (aio->backend == MARBLE_AIO_THREADS && !aio->sched) {
        rc = make_private_sched(&aio->sched, err);
        if (rc != MARBLE_OK) goto fail;
        aio->own_sched = 1;
    }
    *out = aio;
    return MARBLE_OK;

fail:
    pthread_mutex_destroy(&aio->lock);
    free(aio);
    return rc;
}

marble_aio_backend marble_aio_get_backend(const marble_aio *aio)
{
    return aio ? aio->backend : MARBLE_AIO_THREADS;
}

static void record_failure(marble_aio_batch *b, size_t index, int status, const marble_error *err)
{
    pthread_mutex_lock(&b->lock);
    if (index < b->err_index) {
        b->err_index = index;
        if (err && err->code != MARBLE_OK && err->message[0]) {
            b->err = *err;
            b->err.code = status;
        } else {
            const marble_aio_req *r = &b->reqs[index];
            marble_error_set(&b->err, status, "read %s at offset %llu: %s",
                             marble_file_uri(r->file), (unsigned long long)r->off,
                             marble_strerror(status));
        }
    }
    pthread_mutex_unlock(&b->lock);
}

void marble__aio_complete(marble_aio_batch *b, size_t index, int status, size_t nread,
                          const marble_error *err)
{
    marble_aio_req *r = &b->reqs[index];
    r->status = status;
    r->nread = nread;
    if (status != MARBLE_OK) record_failure(b, index, status, err);
    if (b->cb) b->cb(b->ud, r);
    /* acq_rel: the last completer must see the others' request writes before the waiter may
     * read them and free the batch (the waiter synchronises with it through `lock`). */
    if (atomic_fetch_sub_explicit(&b->remaining, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_lock(&b->lock);
        b->done = 1;
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
    }
}

static size_t thread_req(const marble_aio_batch *b, size_t k)
{
    return b->thread_idx ? b->thread_idx[k] : k;
}

static void fail_task(aio_task *t, int code, const char *why)
{
    marble_aio_batch *b = t->batch;
    for (size_t k = t->first; k < t->first + t->count; k++) {
        size_t i = thread_req(b, k);
        marble_error e;
        marble_error_set(&e, code, "read %s at offset %llu: %s", marble_file_uri(b->reqs[i].file),
                         (unsigned long long)b->reqs[i].off, why);
        marble__aio_complete(b, i, code, 0, &e);
    }
}

static marble_task_status read_task(marble_task_ctx *ctx, void *arg)
{
    (void)ctx;
    aio_task *t = arg;
    marble_aio_batch *b = t->batch;
    t->ran = 1;
    for (size_t k = t->first; k < t->first + t->count; k++) {
        size_t i = thread_req(b, k);
        marble_aio_req *r = &b->reqs[i];
        marble_error e;
        marble_error_clear(&e);
        size_t got = 0;
        int rc = marble_file_read(r->file, r->off, r->buf, r->len, &got, &e);
        marble__aio_complete(b, i, rc, got, &e);
    }
    return MARBLE_TASK_DONE;
}

/* The request can go to the ring: its file has an OS descriptor and its range fits an off_t. */
static int ring_fd(const marble_aio_req *r, int *fd)
{
    if (r->off > (uint64_t)INT64_MAX || (uint64_t)r->len > (uint64_t)INT64_MAX - r->off) return 0;
    int d = -1;
    if (marble_file_control(r->file, MARBLE_FCNTL_GET_FD, &d) != MARBLE_OK || d < 0) return 0;
    *fd = d;
    return 1;
}

static int validate(const marble_aio *aio, const marble_aio_req *reqs, size_t n,
                    marble_aio_batch **out, marble_error *err)
{
    if (!aio)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "marble_aio_submit: aio is NULL");
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "marble_aio_submit: out is NULL");
    if (n && !reqs)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_aio_submit: reqs is NULL for %zu requests", n);
    if (n > AIO_MAX_BATCH)
        return marble_error_set(err, MARBLE_ERR_LIMIT,
                                "marble_aio_submit: %zu requests in one batch (at most %zu)", n,
                                AIO_MAX_BATCH);
    for (size_t i = 0; i < n; i++) {
        if (!reqs[i].file)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "marble_aio_submit: request %zu has no file", i);
        if (!reqs[i].buf && reqs[i].len)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "marble_aio_submit: request %zu (%s) has a NULL buffer", i,
                                    marble_file_uri(reqs[i].file));
    }
    return MARBLE_OK;
}

static marble_aio_batch *batch_alloc(int uring, size_t n)
{
    size_t head = (sizeof(marble_aio_batch) + 63) & ~(size_t)63;
    size_t per = sizeof(aio_task) + (uring ? sizeof(marble__aio_op) + sizeof(size_t) : 0);
    size_t bytes = (head + n * per + 63) & ~(size_t)63;
    unsigned char *p = aligned_alloc(64, bytes);
    if (!p) return NULL;
    memset(p, 0, head);
    marble_aio_batch *b = (marble_aio_batch *)p;
    unsigned char *q = p + head;
    if (uring) {
        b->run.ops = (marble__aio_op *)q;
        q += n * sizeof(marble__aio_op);
        b->thread_idx = (size_t *)q;
        q += n * sizeof(size_t);
    }
    b->tasks = (aio_task *)q;
    return b;
}

static void batch_free(marble_aio_batch *b)
{
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static void unlink_batch(marble_aio *aio, marble_aio_batch *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        aio->batches = b->next;
    if (b->next) b->next->prev = b->prev;
    b->prev = b->next = NULL;
}

/* Splits the thread list into tasks and spawns them; a task that cannot be spawned fails its
 * requests at once. */
static void spawn_tasks(marble_aio_batch *b, marble_sched *sched)
{
    int threads = marble_sched_threads(sched);
    size_t chunk = b->nthread / ((size_t)(threads > 0 ? threads : 1) * AIO_TASKS_PER_THREAD);
    if (chunk < 1) chunk = 1;
    if (chunk > AIO_TASK_MAX_REQS) chunk = AIO_TASK_MAX_REQS;
    b->ntasks = (b->nthread + chunk - 1) / chunk;
    for (size_t t = 0; t < b->ntasks; t++) {
        aio_task *task = &b->tasks[t];
        task->batch = b;
        task->first = t * chunk;
        task->count = b->nthread - task->first < chunk ? b->nthread - task->first : chunk;
    }
    marble_group_init(&b->group, sched, NULL);
    b->spawned = 1;
    for (size_t t = 0; t < b->ntasks; t++) {
        int rc = marble_group_spawn(&b->group, read_task, &b->tasks[t]);
        if (rc != MARBLE_OK) {
            b->tasks[t].ran = 1;
            fail_task(&b->tasks[t], rc, "the scheduler refused the read task");
        }
    }
}

int marble_aio_submit(marble_aio *aio, marble_aio_req *reqs, size_t n, marble_aio_cb cb, void *ud,
                      marble_aio_batch **out, marble_error *err)
{
    if (out) *out = NULL;
    MARBLE_RETURN_NOT_OK(validate(aio, reqs, n, out, err));
    int uring = aio->backend == MARBLE_AIO_URING;
    marble_aio_batch *b = batch_alloc(uring, n);
    if (!b)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                "marble_aio_submit: out of memory for %zu requests", n);
    b->aio = aio;
    b->reqs = reqs;
    b->n = n;
    b->cb = cb;
    b->ud = ud;
    b->err_index = n;
    atomic_init(&b->remaining, n);
    b->done = n == 0;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);

    if (uring && marble__uring_usable(aio->uring)) {
        for (size_t i = 0; i < n; i++) {
            int fd;
            if (ring_fd(&reqs[i], &fd)) {
                marble__aio_op *op = &b->run.ops[b->run.n++];
                op->batch = b;
                op->req = &reqs[i];
                op->index = i;
                op->fd = fd;
                op->done = 0;
            } else {
                b->thread_idx[b->nthread++] = i;
            }
        }
    } else if (uring) {
        for (size_t i = 0; i < n; i++)
            b->thread_idx[i] = i;
        b->nthread = n;
    } else {
        b->nthread = n;
    }

    marble_sched *sched;
    pthread_mutex_lock(&aio->lock);
    int rc = MARBLE_OK;
    if (b->nthread && !aio->sched) {
        rc = make_private_sched(&aio->sched, err);
        if (rc == MARBLE_OK) aio->own_sched = 1;
    }
    sched = aio->sched;
    if (rc == MARBLE_OK) {
        b->next = aio->batches;
        if (b->next) b->next->prev = b;
        aio->batches = b;
    }
    pthread_mutex_unlock(&aio->lock);
    if (rc != MARBLE_OK) {
        batch_free(b);
        return rc;
    }

    if (b->run.n) marble__uring_submit(aio->uring, &b->run);
    if (b->nthread) spawn_tasks(b, sched);
    *out = b;
    return MARBLE_OK;
}

/* Waits until every request of `b` has completed; requests whose task the scheduler skipped
 * (a cancelling shutdown) are failed here. */
static void batch_finish(marble_aio_batch *b)
{
    if (b->spawned) {
        (void)marble_group_wait(&b->group, NULL);
        for (size_t t = 0; t < b->ntasks; t++)
            if (!b->tasks[t].ran)
                fail_task(&b->tasks[t], MARBLE_ERR_CANCELLED,
                          "the scheduler shut down before the read ran");
        marble_group_destroy(&b->group);
        b->spawned = 0;
    }
    pthread_mutex_lock(&b->lock);
    while (!b->done)
        pthread_cond_wait(&b->cond, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

int marble_aio_wait(marble_aio_batch *b, marble_error *err)
{
    if (!b)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "marble_aio_wait: batch is NULL");
    batch_finish(b);
    marble_aio *aio = b->aio;
    pthread_mutex_lock(&aio->lock);
    unlink_batch(aio, b);
    pthread_mutex_unlock(&aio->lock);
    pthread_mutex_lock(&b->lock);
    int rc = b->err_index < b->n ? b->err.code : MARBLE_OK;
    if (rc != MARBLE_OK && err) *err = b->err;
    pthread_mutex_unlock(&b->lock);
    batch_free(b);
    return rc;
}

void marble_aio_destroy(marble_aio *aio)
{
    if (!aio) return;
    for (;;) {
        pthread_mutex_lock(&aio->lock);
        marble_aio_batch *b = aio->batches;
        if (b) unlink_batch(aio, b);
        pthread_mutex_unlock(&aio->lock);
        if (!b) break;
        batch_finish(b);
        batch_free(b);
    }
    marble__uring_destroy(aio->uring);
    if (aio->own_sched) marble_sched_destroy(aio->sched);
    pthread_mutex_destroy(&aio->lock);
    free(aio);
}
