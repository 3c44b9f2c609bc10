/* io_uring backend of marble_aio (liburing): one ring, a submission lock, a completion thread. */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "vfs/aio_internal.h"
#include "vfs/vfs_internal.h"

#define REAP_MAX 64
#define READ_MAX (1u << 30)
#define SUBMIT_RETRIES 10000
#define SUBMIT_BACKOFF_NS 100000L

/*
 * The ring. The kernel signals `efd` whenever it posts a completion; the completion thread sleeps
 * on it, so waking it for shutdown needs no entry in the ring.
 *
 * Thread safety: `lock` (the submission lock) guards the submission queue, the queue of runs
 * waiting for room (head, tail), `dead` and the orphans. The completion queue is read by the
 * completion thread only. `inflight` grows only under `lock` and shrinks on the completion thread
 * without it; `queued` says, without the lock, whether runs are waiting. The completion thread
 * takes `lock` only to continue short reads or to move waiting runs into freed slots.
 *
 * Invariants: `inflight` (ops handed to the ring and not yet completed) never exceeds `depth`, so
 * the completion queue (twice the ring) cannot overflow and a short read can always be continued
 * in the slot it holds; each critical section ends with the submission queue flushed, unless the
 * ring is dead; every op is completed exactly once, with marble__aio_complete called outside
 * `lock`; runs wait in the queue only while `queued` is 1.
 *
 * Lock order: `lock` is taken alone; it is never held while calling back into aio.c.
 */
struct marble__uring {
    struct io_uring ring;
    unsigned depth;
    int efd;
    pthread_t thread;
    pthread_mutex_t lock;
    _Atomic unsigned inflight;
    _Atomic int queued;
    marble__aio_run *head, *tail;
    int dead;           /* 0, or the errno that killed the ring */
    _Atomic int broken; /* a lock-free copy of dead != 0, for marble__uring_usable */
    _Atomic int stop;
    marble__aio_op **orphans; /* prepared but never taken by the kernel when the ring died */
    unsigned norphans;
    marble__aio_run *dead_queue; /* runs still queued when the ring died */
};

typedef struct finished {
    marble__aio_op *op;
    int os_errno;
} finished;

static void complete_op(marble__aio_op *op, int os_errno)
{
    marble_aio_req *r = op->req;
    if (!os_errno) {
        marble__aio_complete(op->batch, op->index, MARBLE_OK, op->done, NULL);
        return;
    }
    char what[512];
    snprintf(what, sizeof(what), "%s at offset %llu", marble_file_uri(r->file),
             (unsigned long long)(r->off + op->done));
    marble_error e;
    int code = marble__vfs_os_error(&e, os_errno, "io_uring read", what);
    marble__aio_complete(op->batch, op->index, code, op->done, &e);
}

static void prep(marble__uring *u, marble__aio_op *op, struct io_uring_sqe *sqe)
{
    marble_aio_req *r = op->req;
    size_t left = r->len - op->done;
    unsigned n = left > READ_MAX ? READ_MAX : (unsigned)left;
    io_uring_prep_read(sqe, op->fd, (char *)r->buf + op->done, n, r->off + op->done);
    io_uring_sqe_set_data(sqe, op);
}

/* Under lock: the ring failed for good. The ops the kernel never took and the queued runs are
 * handed to the caller's fail_dead (after unlocking); nothing is submitted any more. */
static void kill_ring(marble__uring *u, int os_errno)
{
    u->dead = os_errno;
    atomic_store_explicit(&u->broken, 1, memory_order_relaxed);
    unsigned head = *u->ring.sq.khead;
    for (unsigned pos = head; pos != u->ring.sq.sqe_tail; pos++) {
        struct io_uring_sqe *sqe = &u->ring.sq.sqes[pos & u->ring.sq.ring_mask];
        u->orphans[u->norphans++] = (marble__aio_op *)(uintptr_t)sqe->user_data;
    }
    /* seq_cst: every change of inflight takes part in the queued/inflight handshake (pump). */
    atomic_fetch_sub_explicit(&u->inflight, u->norphans, memory_order_seq_cst);
    u->dead_queue = u->head;
    u->head = u->tail = NULL;
    atomic_store_explicit(&u->queued, 0, memory_order_seq_cst);
}

/* Completes the ops of `run` not yet handed to the kernel with `os_errno`. Any completion may be
 * the batch's last (its other ops may have completed on the completion thread meanwhile), after
 * which its owner may free the batch and `run` with it: the fields of `run` are read before the
 * first one, and each op only until it is completed (an op not yet completed keeps the batch). */
static void fail_rest(marble__aio_run *run, int os_errno)
{
    marble__aio_op *ops = run->ops;
    size_t i = run->next, n = run->n;
    run->next = n;
    for (; i < n; i++)
        complete_op(&ops[i], os_errno);
}

/* Outside lock, by the one thread whose flush killed the ring. */
static void fail_dead(marble__uring *u)
{
    for (unsigned i = 0; i < u->norphans; i++)
        complete_op(u->orphans[i], u->dead);
    u->norphans = 0;
    for (marble__aio_run *run = u->dead_queue; run;) {
        marble__aio_run *link = run->link;
        fail_rest(run, u->dead);
        run = link;
    }
    u->dead_queue = NULL;
}

/* Under lock: hands every prepared entry to the kernel. Returns 1 if the ring died here. */
static int flush(marble__uring *u)
{
    int tries = 0;
    while (io_uring_sq_ready(&u->ring) > 0) {
        int rc = io_uring_submit(&u->ring);
        if (rc > 0) continue;
        int transient = rc == 0 || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY;
        if (transient && ++tries < SUBMIT_RETRIES) {
            struct timespec ts = {0, SUBMIT_BACKOFF_NS};
            nanosleep(&ts, NULL);
            continue;
        }
        kill_ring(u, rc < 0 ? -rc : EAGAIN);
        return 1;
    }
    return 0;
}

/*
 * Under lock: moves queued ops into free slots, then flushes. Returns 1 if the ring died.
 *
 * The handshake that keeps a queued run from waiting forever: a submitter sets `queued` and then
 * reads `inflight` here; the completion thread lowers `inflight` and then reads `queued`. Both
 * sides use seq_cst, so at least one of them sees the other's write and pumps.
 */
static int pump(marble__uring *u)
{
    /* seq_cst: the submitter's side of the handshake above. */
    unsigned used = atomic_load_explicit(&u->inflight, memory_order_seq_cst);
    unsigned added = 0;
    while (u->head && used + added < u->depth) {
        marble__aio_run *run = u->head;
        while (run->next < run->n && used + added < u->depth) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
            if (!sqe) {
                atomic_fetch_add_explicit(&u->inflight, added, memory_order_seq_cst);
                added = 0;
                if (flush(u)) return 1;
                used = atomic_load_explicit(&u->inflight, memory_order_seq_cst);
                continue;
            }
            prep(u, &run->ops[run->next++], sqe);
            added++;
        }
        if (run->next == run->n) {
            u->head = run->link;
            if (!u->head) u->tail = NULL;
        }
    }
    /* seq_cst: publishes the ops just prepared to the completion thread (its acquire load in
     * handle) and takes part in the handshake. */
    atomic_fetch_add_explicit(&u->inflight, added, memory_order_seq_cst);
    if (!u->head) atomic_store_explicit(&u->queued, 0, memory_order_seq_cst);
    return flush(u);
}

int marble__uring_usable(marble__uring *u)
{
    return u && !atomic_load_explicit(&u->broken, memory_order_relaxed);
}

void marble__uring_submit(marble__uring *u, marble__aio_run *run)
{
    run->link = NULL;
    pthread_mutex_lock(&u->lock);
    int dead = u->dead;
    int killed = 0;
    if (!dead) {
        if (u->tail)
            u->tail->link = run;
        else
            u->head = run;
        u->tail = run;
        /* seq_cst: the submitter's side of the handshake described at pump. */
        atomic_store_explicit(&u->queued, 1, memory_order_seq_cst);
        killed = pump(u);
    }
    pthread_mutex_unlock(&u->lock);
    if (dead) fail_rest(run, dead);
    if (killed) fail_dead(u);
}

/* Handles reaped completions: continues short reads and retries interrupted ones in the slot
 * they hold, frees the slots of finished ops (moving queued runs in), then completes them. */
static void handle(marble__uring *u, const finished *got, unsigned k)
{
    finished fin[REAP_MAX];
    marble__aio_op *cont[REAP_MAX];
    unsigned nfin = 0, ncont = 0;
    /* acquire: pairs with the seq_cst fetch_add in pump that followed the filling of these ops. */
    (void)atomic_load_explicit(&u->inflight, memory_order_acquire);
    for (unsigned i = 0; i < k; i++) {
        marble__aio_op *op = got[i].op;
        int res = got[i].os_errno;
        int again;
        if (res > 0) {
            op->done += (size_t)res;
            again = op->done < op->req->len;
        } else {
            again = res == -EINTR || res == -EAGAIN;
        }
        if (again) {
            cont[ncont++] = op;
        } else {
            fin[nfin].op = op;
            fin[nfin].os_errno = res < 0 ? -res : 0;
            nfin++;
        }
    }
    int killed = 0;
    if (ncont) {
        pthread_mutex_lock(&u->lock);
        for (unsigned i = 0; i < ncont; i++) {
            struct io_uring_sqe *sqe = u->dead ? NULL : io_uring_get_sqe(&u->ring);
            if (sqe) {
                prep(u, cont[i], sqe);
                continue;
            }
            fin[nfin].op = cont[i];
            fin[nfin].os_errno = u->dead ? u->dead : EBUSY;
            nfin++;
        }
        if (!u->dead) killed = flush(u);
        pthread_mutex_unlock(&u->lock);
    }
    if (nfin) {
        /* seq_cst: the completion thread's side of the handshake described at pump. */
        atomic_fetch_sub_explicit(&u->inflight, nfin, memory_order_seq_cst);
        if (atomic_load_explicit(&u->queued, memory_order_seq_cst)) {
            pthread_mutex_lock(&u->lock);
            if (!u->dead) killed |= pump(u);
            pthread_mutex_unlock(&u->lock);
        }
    }
    for (unsigned i = 0; i < nfin; i++)
        complete_op(fin[i].op, fin[i].os_errno);
    if (killed) fail_dead(u);
}

static void drain(marble__uring *u)
{
    struct io_uring_cqe *cqes[REAP_MAX];
    finished got[REAP_MAX];
    for (;;) {
        unsigned k = io_uring_peek_batch_cqe(&u->ring, cqes, REAP_MAX);
        if (!k) return;
        for (unsigned i = 0; i < k; i++) {
            got[i].op = io_uring_cqe_get_data(cqes[i]);
            got[i].os_errno = cqes[i]->res;
        }
        io_uring_cq_advance(&u->ring, k);
        handle(u, got, k);
    }
}

static void *completion_main(void *arg)
{
    marble__uring *u = arg;
    for (;;) {
        uint64_t v;
        if (read(u->efd, &v, sizeof(v)) < 0 && errno != EINTR) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
        drain(u);
        /* acquire: pairs with the release in marble__uring_destroy; stop is set only once no op
         * is in flight. */
        if (atomic_load_explicit(&u->stop, memory_order_acquire)) return NULL;
    }
}

int marble__uring_create(unsigned depth, marble__uring **out, marble_error *err)
{
    *out = NULL;
    marble__uring *u = calloc(1, sizeof(*u));
    if (!u) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "io_uring: out of memory");
    u->depth = depth;
    u->efd = -1;
    int rc = io_uring_queue_init(depth, &u->ring, 0);
    if (rc < 0) {
        free(u);
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "io_uring_queue_init(%u): %s", depth,
                                strerror(-rc));
    }
    u->orphans = calloc(depth, sizeof(*u->orphans));
    if (!u->orphans) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "io_uring: out of memory");
        goto fail;
    }
    u->efd = eventfd(0, EFD_CLOEXEC);
    if (u->efd < 0) {
        rc = marble__vfs_os_error(err, errno, "create", "the io_uring eventfd");
        goto fail;
    }
    rc = io_uring_register_eventfd(&u->ring, u->efd);
    if (rc < 0) {
        rc = marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "io_uring_register_eventfd: %s",
                              strerror(-rc));
        goto fail;
    }
    pthread_mutex_init(&u->lock, NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&u->thread, NULL, completion_main, u);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&u->lock);
        rc = marble__vfs_os_error(err, rc, "start", "the io_uring completion thread");
        goto fail;
    }
    *out = u;
    return MARBLE_OK;

fail:
    if (u->efd >= 0) close(u->efd);
    io_uring_queue_exit(&u->ring);
    free(u->orphans);
    free(u);
    return rc;
}

void marble__uring_destroy(marble__uring *u)
{
    if (!u) return;
    /* release: pairs with the completion thread's acquire load after the wake-up below. */
    atomic_store_explicit(&u->stop, 1, memory_order_release);
    uint64_t one = 1;
    while (write(u->efd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
    pthread_join(u->thread, NULL);
    close(u->efd);
    io_uring_queue_exit(&u->ring);
    pthread_mutex_destroy(&u->lock);
    free(u->orphans);
    free(u);
}
