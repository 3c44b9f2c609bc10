/* Tests of asynchronous reads: io_uring and thread backends, EOF, routing, errors, concurrency. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "marble/vfs.h"
#include "marble_test.h"
#include "vfs_test.h"

#define FILE_SIZE ((size_t)8 << 20)
#define READ_SIZE 4096
#define NREADS 1000

static uint8_t pattern(uint64_t off)
{
    return (uint8_t)((((off >> 3) + 1) * 0x9E3779B97F4A7C15ull) >> (8 * (off & 7)));
}

static marble_fs *make_fs(void)
{
    marble_fs *fs = NULL;
    marble_error err;
    int rc = marble_fs_create(&fs, &err);
    if (rc != MARBLE_OK) FAIL("marble_fs_create: %s", err.message);
    return fs;
}

/* Writes `size` pattern bytes to `uri` and opens it with `flags`. */
static marble_file *make_file(marble_fs *fs, const char *uri, size_t size, int flags)
{
    uint8_t *data = malloc(size ? size : 1);
    ASSERT_NOT_NULL(data);
    for (size_t i = 0; i < size; i++)
        data[i] = pattern(i);
    marble_error err;
    int rc = marble_fs_write_all(fs, uri, data, size, 0, &err);
    free(data);
    if (rc != MARBLE_OK) FAIL("write_all %s: %s", uri, err.message);
    marble_file *f = NULL;
    rc = marble_fs_open(fs, uri, flags, &f, &err);
    if (rc != MARBLE_OK) FAIL("open %s: %s", uri, err.message);
    return f;
}

static void local_uri(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", marble_test_tmpdir(), name);
}

static marble_aio *make_aio(marble_aio_backend backend, unsigned depth, marble_sched *sched)
{
    marble_aio_options o = {backend, depth, sched};
    marble_aio *aio = NULL;
    marble_error err;
    int rc = marble_aio_create(&o, &aio, &err);
    if (rc != MARBLE_OK) FAIL("marble_aio_create(%d): %s", (int)backend, err.message);
    return aio;
}

/* An io_uring marble_aio, or NULL after a note when the kernel refuses io_uring (then AUTO must
 * fall back to threads). */
static marble_aio *make_uring(unsigned depth, marble_sched *sched)
{
    marble_aio_options o = {MARBLE_AIO_URING, depth, sched};
    marble_aio *aio = NULL;
    marble_error err;
    int rc = marble_aio_create(&o, &aio, &err);
    if (rc == MARBLE_OK) {
        ASSERT_EQ_INT(marble_aio_get_backend(aio), MARBLE_AIO_URING);
        return aio;
    }
    ASSERT_EQ_INT(rc, MARBLE_ERR_UNSUPPORTED);
    ASSERT_NULL(aio);
    printf("note: io_uring is unavailable here (%s); checking that AUTO falls back\n", err.message);
    aio = make_aio(MARBLE_AIO_AUTO, depth, sched);
    ASSERT_EQ_INT(marble_aio_get_backend(aio), MARBLE_AIO_THREADS);
    marble_aio_destroy(aio);
    return NULL;
}

typedef struct counts {
    _Atomic int *calls; /* per request */
    _Atomic int total;
} counts;

static void count_cb(void *ud, marble_aio_req *req)
{
    counts *c = ud;
    atomic_fetch_add(&c->calls[(size_t)(uintptr_t)req->user], 1);
    atomic_fetch_add(&c->total, 1);
}

static void check_reads(const marble_aio_req *reqs, size_t n, uint64_t file_size)
{
    for (size_t i = 0; i < n; i++) {
        const marble_aio_req *r = &reqs[i];
        ASSERT_EQ_INT(r->status, MARBLE_OK);
        uint64_t want = r->off >= file_size ? 0 : file_size - r->off;
        if (want > r->len) want = r->len;
        ASSERT_EQ_U64(r->nread, want);
        const uint8_t *b = r->buf;
        for (size_t k = 0; k < r->nread; k++)
            if (b[k] != pattern(r->off + k))
                FAIL("request %zu: byte %zu at offset %llu is 0x%02x, expected 0x%02x", i, k,
                     (unsigned long long)(r->off + k), b[k], pattern(r->off + k));
    }
}

/* NREADS random READ_SIZE reads at unaligned offsets, checked byte for byte, each callback
 * exactly once. */
static void random_reads(marble_aio *aio, marble_file *f, uint64_t seed)
{
    marble_aio_req *reqs = calloc(NREADS, sizeof(*reqs));
    uint8_t *bufs = malloc((size_t)NREADS * READ_SIZE);
    _Atomic int *calls = calloc(NREADS, sizeof(*calls));
    ASSERT_TRUE(reqs && bufs && calls);
    memset(bufs, 0xEE, (size_t)NREADS * READ_SIZE);
    uint64_t s = seed;
    for (size_t i = 0; i < NREADS; i++) {
        reqs[i].file = f;
        reqs[i].off = rng_next(&s) % (FILE_SIZE - READ_SIZE + 1);
        reqs[i].buf = bufs + i * READ_SIZE;
        reqs[i].len = READ_SIZE;
        reqs[i].user = (void *)(uintptr_t)i;
        reqs[i].status = -1;
    }
    counts c = {calls, 0};
    marble_aio_batch *b = NULL;
    marble_error err;
    int rc = marble_aio_submit(aio, reqs, NREADS, count_cb, &c, &b, &err);
    if (rc != MARBLE_OK) FAIL("submit: %s", err.message);
    ASSERT_NOT_NULL(b);
    rc = marble_aio_wait(b, &err);
    if (rc != MARBLE_OK) FAIL("wait: %s", err.message);
    ASSERT_EQ_INT(atomic_load(&c.total), NREADS);
    for (size_t i = 0; i < NREADS; i++)
        ASSERT_EQ_INT(atomic_load(&calls[i]), 1);
    check_reads(reqs, NREADS, FILE_SIZE);
    free(reqs);
    free(bufs);
    free(calls);
}

static void random_reads_on(marble_aio *aio)
{
    marble_fs *fs = make_fs();
    char uri[600];
    local_uri(uri, sizeof(uri), "data");
    marble_file *f = make_file(fs, uri, FILE_SIZE, MARBLE_OPEN_READ);
    random_reads(aio, f, 0x1234567u);
    random_reads(aio, f, 0xfeedbeefu);
    ASSERT_OK(marble_file_close(f, NULL));
    close_fs(fs);
}

TEST(aio_uring_random_reads)
{
    marble_aio *aio = make_uring(0, NULL);
    if (!aio) aio = make_aio(MARBLE_AIO_AUTO, 0, NULL);
    random_reads_on(aio);
    marble_aio_destroy(aio);
}

TEST(aio_threads_random_reads)
{
    marble_aio *aio = make_aio(MARBLE_AIO_THREADS, 0, NULL);
    ASSERT_EQ_INT(marble_aio_get_backend(aio), MARBLE_AIO_THREADS);
    random_reads_on(aio);
    marble_aio_destroy(aio);
}

TEST(aio_auto_prefers_uring)
{
    marble_aio *u = make_uring(0, NULL);
    marble_aio *aio = make_aio(MARBLE_AIO_AUTO, 0, NULL);
    ASSERT_EQ_INT(marble_aio_get_backend(aio), u ? MARBLE_AIO_URING : MARBLE_AIO_THREADS);
    marble_aio_destroy(aio);
    marble_aio_destroy(u);
    marble_aio_destroy(NULL);
}

TEST(aio_batch_larger_than_queue_depth)
{
    marble_aio *aio = make_uring(8, NULL);
    if (!aio) return;
    random_reads_on(aio);
    marble_aio_destroy(aio);
}

/* Reads across, at and past the end of a 10000-byte file, and an empty read. */
static void eof_reads(marble_aio *aio, const char *uri_or_null)
{
    marble_fs *fs = make_fs();
    char uri[600];
    if (uri_or_null)
        snprintf(uri, sizeof(uri), "%s", uri_or_null);
    else
        local_uri(uri, sizeof(uri), "short");
    const size_t size = 10000;
    marble_file *f = make_file(fs, uri, size, MARBLE_OPEN_READ);
    static uint8_t bufs[6][8192];
    marble_aio_req reqs[6] = {
        {f, 6000, bufs[0], 8192, NULL, -1, 99},  /* crosses the end: 4000 bytes */
        {f, 10000, bufs[1], 4096, NULL, -1, 99}, /* at the end: 0 */
        {f, 50000, bufs[2], 4096, NULL, -1, 99}, /* past the end: 0 */
        {f, 9999, bufs[3], 100, NULL, -1, 99},   /* the last byte */
        {f, 0, bufs[4], 0, NULL, -1, 99},        /* empty */
        {f, 0, bufs[5], 8192, NULL, -1, 99},     /* whole */
    };
    marble_aio_batch *b;
    marble_error err;
    ASSERT_OK(marble_aio_submit(aio, reqs, 6, NULL, NULL, &b, &err));
    int rc = marble_aio_wait(b, &err);
    if (rc != MARBLE_OK) FAIL("wait: %s", err.message);
    ASSERT_EQ_U64(reqs[0].nread, 4000);
    ASSERT_EQ_U64(reqs[1].nread, 0);
    ASSERT_EQ_U64(reqs[2].nread, 0);
    ASSERT_EQ_U64(reqs[3].nread, 1);
    ASSERT_EQ_U64(reqs[4].nread, 0);
    ASSERT_EQ_U64(reqs[5].nread, 8192);
    check_reads(reqs, 6, size);
    ASSERT_OK(marble_file_close(f, NULL));
    close_fs(fs);
}

TEST(aio_uring_eof)
{
    marble_aio *aio = make_uring(0, NULL);
    if (!aio) return;
    eof_reads(aio, NULL);
    marble_aio_destroy(aio);
}

TEST(aio_threads_eof)
{
    marble_aio *aio = make_aio(MARBLE_AIO_THREADS, 0, NULL);
    eof_reads(aio, NULL);
    eof_reads(aio, "mem://eof");
    marble_aio_destroy(aio);
}

/* A mem:// file has no descriptor: through the io_uring backend its reads run on the
 * scheduler's workers, while the local file's complete on the ring's thread. */
typedef struct where {
    marble_sched *sched;
    marble_file *mem;
    _Atomic int mem_on_worker, mem_elsewhere, local_on_worker, local_elsewhere;
} where;

static void where_cb(void *ud, marble_aio_req *req)
{
    where *w = ud;
    int on_worker = marble_sched_worker_index(w->sched) >= 0;
    if (req->file == w->mem)
        atomic_fetch_add(on_worker ? &w->mem_on_worker : &w->mem_elsewhere, 1);
    else
        atomic_fetch_add(on_worker ? &w->local_on_worker : &w->local_elsewhere, 1);
}

TEST(aio_uring_mem_file_goes_to_threads)
{
    marble_sched_options so;
    marble_sched_options_init(&so);
    so.threads = 2;
    marble_sched *s = NULL;
    ASSERT_OK(marble_sched_create(&so, &s, NULL));
    marble_aio *aio = make_uring(0, s);
    if (!aio) {
        marble_sched_destroy(s);
        return;
    }
    marble_fs *fs = make_fs();
    char uri[600];
    local_uri(uri, sizeof(uri), "local");
    marble_file *lf = make_file(fs, uri, 1 << 20, MARBLE_OPEN_READ);
    marble_file *mf = make_file(fs, "mem://file", 1 << 20, MARBLE_OPEN_READ);
    enum { N = 200 };
    static uint8_t bufs[N][READ_SIZE];
    marble_aio_req reqs[N];
    uint64_t seed = 99;
    for (int i = 0; i < N; i++) {
        marble_aio_req r = {i % 2 ? mf : lf,
                            rng_next(&seed) % ((1 << 20) - READ_SIZE),
                            bufs[i],
                            READ_SIZE,
                            NULL,
                            -1,
                            0};
        reqs[i] = r;
    }
    where w = {s, mf, 0, 0, 0, 0};
    marble_aio_batch *b;
    marble_error err;
    ASSERT_OK(marble_aio_submit(aio, reqs, N, where_cb, &w, &b, &err));
    int rc = marble_aio_wait(b, &err);
    if (rc != MARBLE_OK) FAIL("wait: %s", err.message);
    check_reads(reqs, N, 1 << 20);
    ASSERT_EQ_INT(atomic_load(&w.mem_on_worker), N / 2);
    ASSERT_EQ_INT(atomic_load(&w.mem_elsewhere), 0);
    ASSERT_EQ_INT(atomic_load(&w.local_on_worker), 0);
    ASSERT_EQ_INT(atomic_load(&w.local_elsewhere), N / 2);
    ASSERT_OK(marble_file_close(lf, NULL));
    ASSERT_OK(marble_file_close(mf, NULL));
    close_fs(fs);
    marble_aio_destroy(aio);
    marble_sched_destroy(s);
}

TEST(aio_mem_file_threads)
{
    marble_aio *aio = make_aio(MARBLE_AIO_THREADS, 0, NULL);
    marble_fs *fs = make_fs();
    marble_file *f = make_file(fs, "mem://big", FILE_SIZE, MARBLE_OPEN_READ);
    random_reads(aio, f, 42);
    ASSERT_OK(marble_file_close(f, NULL));
    close_fs(fs);
    marble_aio_destroy(aio);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void invalid_requests(marble_aio *aio)
{
    marble_fs *fs = make_fs();
    char uri[600];
    local_uri(uri, sizeof(uri), "inv");
    marble_file *f = make_file(fs, uri, 100, MARBLE_OPEN_READ);
    uint8_t buf[64];
    marble_aio_req reqs[2] = {{f, 0, buf, 64, NULL, -1, 0}, {NULL, 0, buf, 64, NULL, -1, 0}};
    marble_aio_batch *b = (marble_aio_batch *)&b;
    marble_error err;
    counts c = {NULL, 0};
    ASSERT_EQ_INT(marble_aio_submit(aio, reqs, 2, count_cb, &c, &b, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(b);
    ASSERT_CONTAINS(err.message, "request 1");
    reqs[1].file = f;
    reqs[1].buf = NULL;
    ASSERT_EQ_INT(marble_aio_submit(aio, reqs, 2, count_cb, &c, &b, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "NULL buffer");
    ASSERT_CONTAINS(err.message, uri);
    ASSERT_EQ_INT(atomic_load(&c.total), 0);
    ASSERT_EQ_INT(reqs[0].status, -1);
    ASSERT_EQ_INT(marble_aio_submit(NULL, reqs, 1, NULL, NULL, &b, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_aio_submit(aio, reqs, 1, NULL, NULL, NULL, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_aio_submit(aio, NULL, 1, NULL, NULL, &b, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_aio_wait(NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);

    /* An empty batch, and a NULL buffer for an empty read, are fine. */
    ASSERT_OK(marble_aio_submit(aio, NULL, 0, NULL, NULL, &b, &err));
    ASSERT_OK(marble_aio_wait(b, &err));
    reqs[1].len = 0;
    ASSERT_OK(marble_aio_submit(aio, reqs, 2, NULL, NULL, &b, &err));
    ASSERT_OK(marble_aio_wait(b, &err));
    ASSERT_EQ_U64(reqs[0].nread, 64);
    ASSERT_EQ_U64(reqs[1].nread, 0);
    ASSERT_OK(marble_file_close(f, NULL));
    close_fs(fs);
}

TEST(aio_invalid_requests)
{
    marble_aio *aio = make_aio(MARBLE_AIO_THREADS, 0, NULL);
    invalid_requests(aio);
    marble_aio_destroy(aio);
    aio = make_uring(0, NULL);
    if (aio) invalid_requests(aio);
    marble_aio_destroy(aio);

    marble_aio_options o = {(marble_aio_backend)7, 0, NULL};
    marble_error err;
    ASSERT_EQ_INT(marble_aio_create(&o, &aio, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "backend");
    o.backend = MARBLE_AIO_AUTO;
    o.queue_depth = 1u << 20;
    ASSERT_EQ_INT(marble_aio_create(&o, &aio, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "queue_depth");
    ASSERT_EQ_INT(marble_aio_create(&o, NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
}

/* A read of a write-only local file fails (EBADF) on either path; the batch reports the first
 * failed request with a message naming the file, and the others succeed. */
static void failing_reads(marble_aio *aio)
{
    marble_fs *fs = make_fs();
    char good_uri[600], bad_uri[600];
    local_uri(good_uri, sizeof(good_uri), "good");
    local_uri(bad_uri, sizeof(bad_uri), "writeonly");
    marble_file *good = make_file(fs, good_uri, 8192, MARBLE_OPEN_READ);
    marble_file *bad = make_file(fs, bad_uri, 8192, MARBLE_OPEN_WRITE);
    static uint8_t bufs[4][4096];
    marble_aio_req reqs[4] = {{good, 0, bufs[0], 4096, (void *)0, -1, 0},
                              {bad, 0, bufs[1], 4096, (void *)1, -1, 0},
                              {good, 4096, bufs[2], 4096, (void *)2, -1, 0},
                              {bad, 4096, bufs[3], 4096, (void *)3, -1, 0}};
    _Atomic int calls[4] = {0, 0, 0, 0};
    counts c = {calls, 0};
    marble_aio_batch *b;
    marble_error err;
    ASSERT_OK(marble_aio_submit(aio, reqs, 4, count_cb, &c, &b, &err));
    int rc = marble_aio_wait(b, &err);
    ASSERT_EQ_INT(rc, MARBLE_ERR_IO);
    ASSERT_EQ_INT(err.code, MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, bad_uri);
    ASSERT_EQ_INT(reqs[0].status, MARBLE_OK);
    ASSERT_EQ_INT(reqs[2].status, MARBLE_OK);
    ASSERT_EQ_INT(reqs[1].status, MARBLE_ERR_IO);
    ASSERT_EQ_INT(reqs[3].status, MARBLE_ERR_IO);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ_INT(atomic_load(&calls[i]), 1);
    check_reads(&reqs[0], 1, 8192);
    check_reads(&reqs[2], 1, 8192);
    ASSERT_OK(marble_file_close(good, NULL));
    ASSERT_OK(marble_file_close(bad, NULL));
    close_fs(fs);
}

TEST(aio_uring_read_error)
{
    marble_aio *aio = make_uring(0, NULL);
    if (!aio) return;
    failing_reads(aio);
    marble_aio_destroy(aio);
}

TEST(aio_threads_read_error)
{
    marble_aio *aio = make_aio(MARBLE_AIO_THREADS, 0, NULL);
    failing_reads(aio);
    marble_aio_destroy(aio);
}

/* A scheduler that was shut down refuses the thread path's tasks: the requests fail, each
 * callback still runs once, and nothing hangs. */
TEST(aio_threads_sched_shut_down)
{
    marble_sched *s = NULL;
    ASSERT_OK(marble_sched_create(NULL, &s, NULL));
    ASSERT_OK(marble_sched_shutdown(s, MARBLE_SHUTDOWN_DRAIN, NULL));
    marble_aio *aio = make_aio(MARBLE_AIO_THREADS, 0, s);
    marble_fs *fs = make_fs();
    marble_file *f = make_file(fs, "mem://x", 4096, MARBLE_OPEN_READ);
    static uint8_t bufs[3][100];
    marble_aio_req reqs[3] = {{f, 0, bufs[0], 100, (void *)0, -1, 0},
                              {f, 100, bufs[1], 100, (void *)1, -1, 0},
                              {f, 200, bufs[2], 100, (void *)2, -1, 0}};
    _Atomic int calls[3] = {0, 0, 0};
    counts c = {calls, 0};
    marble_aio_batch *b;
    marble_error err;
    ASSERT_OK(marble_aio_submit(aio, reqs, 3, count_cb, &c, &b, &err));
    ASSERT_EQ_INT(marble_aio_wait(b, &err), MARBLE_ERR_SHUTDOWN);
    ASSERT_CONTAINS(err.message, "mem://x");
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ_INT(atomic_load(&calls[i]), 1);
        ASSERT_EQ_INT(reqs[i].status, MARBLE_ERR_SHUTDOWN);
    }
    ASSERT_OK(marble_file_close(f, NULL));
    close_fs(fs);
    marble_aio_destroy(aio);
    marble_sched_destroy(s);
}

/* ---- concurrency and lifetimes -------------------------------------------------------------- */

#define SUBMITTERS 4
#define ROUNDS 40
#define PER_BATCH 50

typedef struct submitter {
    marble_aio *aio;
    marble_file *file;
    uint64_t seed;
    int failed;
    char why[300];
} submitter;

static void *submit_main(void *arg)
{
    submitter *t = arg;
    uint8_t(*bufs)[READ_SIZE] = malloc(sizeof(uint8_t[PER_BATCH][READ_SIZE]));
    if (!bufs) {
        snprintf(t->why, sizeof(t->why), "out of memory");
        t->failed = 1;
        return NULL;
    }
    marble_aio_req reqs[PER_BATCH];
    _Atomic int calls[PER_BATCH];
    for (int round = 0; round < ROUNDS && !t->failed; round++) {
        for (int i = 0; i < PER_BATCH; i++) {
            marble_aio_req r = {t->file,
                                rng_next(&t->seed) % (FILE_SIZE - READ_SIZE),
                                bufs[i],
                                READ_SIZE,
                                (void *)(uintptr_t)i,
                                -1,
                                0};
            reqs[i] = r;
            atomic_init(&calls[i], 0);
        }
        counts c = {calls, 0};
        marble_aio_batch *b;
        marble_error err;
        if (marble_aio_submit(t->aio, reqs, PER_BATCH, count_cb, &c, &b, &err) != MARBLE_OK ||
            marble_aio_wait(b, &err) != MARBLE_OK) {
            snprintf(t->why, sizeof(t->why), "%s", err.message);
            t->failed = 1;
            break;
        }
        for (int i = 0; i < PER_BATCH; i++) {
            const uint8_t *p = reqs[i].buf;
            if (atomic_load(&calls[i]) != 1 || reqs[i].status != MARBLE_OK ||
                reqs[i].nread != READ_SIZE || p[0] != pattern(reqs[i].off) ||
                p[READ_SIZE - 1] != pattern(reqs[i].off + READ_SIZE - 1)) {
                snprintf(t->why, sizeof(t->why), "round %d request %d is wrong", round, i);
                t->failed = 1;
            }
        }
    }
    free(bufs);
    return NULL;
}

static void concurrent_submitters(marble_aio *aio)
{
    marble_fs *fs = make_fs();
    char uri[600];
    local_uri(uri, sizeof(uri), "shared");
    marble_file *lf = make_file(fs, uri, FILE_SIZE, MARBLE_OPEN_READ);
    marble_file *mf = make_file(fs, "mem://shared", FILE_SIZE, MARBLE_OPEN_READ);
    pthread_t th[SUBMITTERS];
    submitter ts[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        ts[i] = (submitter){aio, i == 3 ? mf : lf, 1000u + (uint64_t)i, 0, ""};
        ASSERT_OK(pthread_create(&th[i], NULL, submit_main, &ts[i]));
    }
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < SUBMITTERS; i++)
        if (ts[i].failed) FAIL("submitter %d: %s", i, ts[i].why);
    ASSERT_OK(marble_file_close(lf, NULL));
    ASSERT_OK(marble_file_close(mf, NULL));
    close_fs(fs);
}

TEST(aio_uring_concurrent_submitters)
{
    marble_aio *aio = make_uring(16, NULL);
    if (!aio) return;
    concurrent_submitters(aio);
    marble_aio_destroy(aio);
}

TEST(aio_threads_concurrent_submitters)
{
    marble_aio *aio = make_aio(MARBLE_AIO_THREADS, 0, NULL);
    concurrent_submitters(aio);
    marble_aio_destroy(aio);
}

/* Destroy waits for batches nobody waited for (and frees them). */
static void destroy_with_batches(marble_aio *aio)
{
    marble_fs *fs = make_fs();
    char uri[600];
    local_uri(uri, sizeof(uri), "pending");
    marble_file *lf = make_file(fs, uri, FILE_SIZE, MARBLE_OPEN_READ);
    marble_file *mf = make_file(fs, "mem://pending", FILE_SIZE, MARBLE_OPEN_READ);
    enum { N = 300 };
    marble_aio_req *reqs = calloc(2 * N, sizeof(*reqs));
    uint8_t *bufs = malloc((size_t)2 * N * READ_SIZE);
    _Atomic int *calls = calloc(2 * N, sizeof(*calls));
    ASSERT_TRUE(reqs && bufs && calls);
    uint64_t seed = 5;
    for (size_t i = 0; i < 2 * N; i++) {
        marble_aio_req r = {i % 3 ? lf : mf,
                            rng_next(&seed) % (FILE_SIZE - READ_SIZE),
                            bufs + i * READ_SIZE,
                            READ_SIZE,
                            (void *)(uintptr_t)i,
                            -1,
                            0};
        reqs[i] = r;
    }
    counts c = {calls, 0};
    marble_aio_batch *b1, *b2;
    ASSERT_OK(marble_aio_submit(aio, reqs, N, count_cb, &c, &b1, NULL));
    ASSERT_OK(marble_aio_submit(aio, reqs + N, N, count_cb, &c, &b2, NULL));
    marble_aio_destroy(aio);
    ASSERT_EQ_INT(atomic_load(&c.total), 2 * N);
    for (size_t i = 0; i < 2 * N; i++)
        ASSERT_EQ_INT(atomic_load(&calls[i]), 1);
    check_reads(reqs, 2 * N, FILE_SIZE);
    free(reqs);
    free(bufs);
    free(calls);
    ASSERT_OK(marble_file_close(lf, NULL));
    ASSERT_OK(marble_file_close(mf, NULL));
    close_fs(fs);
}

TEST(aio_uring_destroy_waits)
{
    marble_aio *aio = make_uring(32, NULL);
    if (aio) destroy_with_batches(aio);
}

TEST(aio_threads_destroy_waits)
{
    destroy_with_batches(make_aio(MARBLE_AIO_THREADS, 0, NULL));
}

/* A callback may submit to the same marble_aio (even with the ring full); the chained batches
 * are waited for afterwards. */
typedef struct chain {
    marble_aio *aio;
    marble_file *file;
    marble_aio_req next[64];
    uint8_t bufs[64][READ_SIZE];
    marble_aio_batch *batch;
    int rc;
    _Atomic int fired;
} chain;

static void chain_cb(void *ud, marble_aio_req *req)
{
    chain *ch = ud;
    (void)req;
    if (atomic_fetch_add(&ch->fired, 1) != 0) return;
    for (int i = 0; i < 64; i++) {
        marble_aio_req r = {ch->file, (uint64_t)i * 7919, ch->bufs[i], READ_SIZE, NULL, -1, 0};
        ch->next[i] = r;
    }
    ch->rc = marble_aio_submit(ch->aio, ch->next, 64, NULL, NULL, &ch->batch, NULL);
}

TEST(aio_uring_submit_from_callback)
{
    marble_aio *aio = make_uring(4, NULL);
    if (!aio) return;
    marble_fs *fs = make_fs();
    char uri[600];
    local_uri(uri, sizeof(uri), "chain");
    marble_file *f = make_file(fs, uri, FILE_SIZE, MARBLE_OPEN_READ);
    chain *ch = calloc(1, sizeof(*ch));
    ASSERT_NOT_NULL(ch);
    ch->aio = aio;
    ch->file = f;
    static uint8_t bufs[32][READ_SIZE];
    marble_aio_req reqs[32];
    for (int i = 0; i < 32; i++) {
        marble_aio_req r = {f, (uint64_t)i * 12345, bufs[i], READ_SIZE, NULL, -1, 0};
        reqs[i] = r;
    }
    marble_aio_batch *b;
    ASSERT_OK(marble_aio_submit(aio, reqs, 32, chain_cb, ch, &b, NULL));
    ASSERT_OK(marble_aio_wait(b, NULL));
    ASSERT_OK(ch->rc);
    ASSERT_NOT_NULL(ch->batch);
    ASSERT_OK(marble_aio_wait(ch->batch, NULL));
    check_reads(reqs, 32, FILE_SIZE);
    check_reads(ch->next, 64, FILE_SIZE);
    free(ch);
    ASSERT_OK(marble_file_close(f, NULL));
    close_fs(fs);
    marble_aio_destroy(aio);
}

/* A single read far larger than a page, and many reads into one file through a user scheduler
 * that is also waited on from one of its own workers. */
typedef struct nested {
    marble_aio *aio;
    marble_file *file;
    int rc;
} nested;

static marble_task_status nested_task(marble_task_ctx *ctx, void *arg)
{
    (void)ctx;
    nested *n = arg;
    enum { N = 64 };
    static uint8_t bufs[N][READ_SIZE];
    marble_aio_req reqs[N];
    for (int i = 0; i < N; i++) {
        marble_aio_req r = {n->file, (uint64_t)i * 4096, bufs[i], READ_SIZE, NULL, -1, 0};
        reqs[i] = r;
    }
    marble_aio_batch *b;
    n->rc = marble_aio_submit(n->aio, reqs, N, NULL, NULL, &b, NULL);
    if (n->rc == MARBLE_OK) n->rc = marble_aio_wait(b, NULL);
    for (int i = 0; i < N && n->rc == MARBLE_OK; i++)
        if (reqs[i].nread != READ_SIZE || bufs[i][5] != pattern((uint64_t)i * 4096 + 5))
            n->rc = MARBLE_ERR_CORRUPTION;
    return MARBLE_TASK_DONE;
}

TEST(aio_wait_from_worker_and_large_read)
{
    marble_sched_options so;
    marble_sched_options_init(&so);
    so.threads = 1;
    marble_sched *s = NULL;
    ASSERT_OK(marble_sched_create(&so, &s, NULL));
    marble_fs *fs = make_fs();
    marble_file *mf = make_file(fs, "mem://nested", FILE_SIZE, MARBLE_OPEN_READ);
    char uri[600];
    local_uri(uri, sizeof(uri), "large");
    marble_file *lf = make_file(fs, uri, FILE_SIZE, MARBLE_OPEN_READ);
    for (int backend = MARBLE_AIO_AUTO; backend <= MARBLE_AIO_THREADS; backend++) {
        if (backend == MARBLE_AIO_URING) continue;
        marble_aio *aio = make_aio((marble_aio_backend)backend, 0, s);
        nested n = {aio, mf, -1};
        marble_group g;
        marble_group_init(&g, s, NULL);
        ASSERT_OK(marble_group_spawn(&g, nested_task, &n));
        ASSERT_OK(marble_group_wait(&g, NULL));
        marble_group_destroy(&g);
        ASSERT_OK(n.rc);

        uint8_t *big = malloc(FILE_SIZE + 100);
        ASSERT_NOT_NULL(big);
        marble_aio_req r[1] = {{lf, 0, big, FILE_SIZE + 100, NULL, -1, 0}};
        marble_aio_batch *b;
        ASSERT_OK(marble_aio_submit(aio, r, 1, NULL, NULL, &b, NULL));
        ASSERT_OK(marble_aio_wait(b, NULL));
        check_reads(r, 1, FILE_SIZE);
        free(big);
        marble_aio_destroy(aio);
    }
    ASSERT_OK(marble_file_close(mf, NULL));
    ASSERT_OK(marble_file_close(lf, NULL));
    close_fs(fs);
    marble_sched_destroy(s);
}
