/* Tests of parallel compaction: subcompactions against the single merge (visible data, every
 * snapshot's view, and the internal entries with their versions and tombstones), compaction
 * beside writers and readers, cancellation at random points (no leftover files, data intact,
 * reopen), the rate limiter, progress and the threads=1 path. Uses the private headers to look
 * at the installed version and the internal iterator. */
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/db_internal.h"
#include "marble/base.h"
#include "marble/db.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

#define NKEYS 3000

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static marble_db_options test_opts(void)
{
    marble_db_options o;
    marble_db_options_init(&o);
    o.write_buffer_size = 1 << 20;
    o.target_file_size = 64 << 20;
    o.level1_max_bytes = 64 << 20;
    o.batch_rows = 64;
    o.sync = MARBLE_SYNC_NONE;
    o.disable_auto_compaction = 1;
    o.background_threads = 4;
    return o;
}

static char *subdir(const char *name)
{
    char *p = malloc(1024);
    snprintf(p, 1024, "%s/%s", marble_test_tmpdir(), name);
    return p;
}

static void key_of(int i, char *k)
{
    snprintf(k, 16, "k%05d", i);
}

static size_t val_of(int i, int ver, char *v)
{
    return (size_t)snprintf(v, 128, "v%05d-%08d-%s", i, ver,
                            "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz");
}

/* ver[i]: the version of key i's value, 0 when absent. Applies n random puts and deletes. */
static void apply_random(marble_db *const *dbs, int ndb, int *ver, int n, uint64_t *rng, int *next)
{
    marble_error err = {0};
    marble_write_batch *wb[2];
    for (int d = 0; d < ndb; d++)
        CHECK_OK(marble_write_batch_create(dbs[d], &wb[d], &err));
    for (int op = 0; op < n; op++) {
        int i = (int)(rnd(rng) % NKEYS);
        char k[16], v[128];
        key_of(i, k);
        int del = rnd(rng) % 5 == 0;
        size_t vl = 0;
        if (del)
            ver[i] = 0;
        else
            vl = val_of(i, ver[i] = ++*next, v);
        for (int d = 0; d < ndb; d++) {
            if (del)
                CHECK_OK(marble_write_batch_kv_delete(wb[d], k, 6, &err));
            else
                CHECK_OK(marble_write_batch_kv_put(wb[d], k, 6, v, vl, &err));
        }
        if (op % 500 == 499 || op == n - 1)
            for (int d = 0; d < ndb; d++) {
                CHECK_OK(marble_db_write(dbs[d], wb[d], NULL, &err));
                marble_write_batch_clear(wb[d]);
            }
    }
    for (int d = 0; d < ndb; d++)
        marble_write_batch_destroy(wb[d]);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* Every visible key=value of the key-value table, at snap (NULL: latest). */
static char *dump(marble_db *db, const marble_snapshot *snap)
{
    marble_error err = {0};
    marble_read_options ro = {0};
    ro.snapshot = snap;
    marble_kv_iter *it;
    sbuf b = {0};
    sb_add(&b, "", 0);
    CHECK_OK(marble_kv_iter_create(db, &ro, &it, &err));
    for (marble_kv_iter_seek_to_first(it); marble_kv_iter_valid(it); marble_kv_iter_next(it)) {
        size_t kl, vl;
        const void *k = marble_kv_iter_key(it, &kl);
        const void *v = marble_kv_iter_value(it, &vl);
        sb_add(&b, k, kl);
        sb_add(&b, "=", 1);
        sb_add(&b, v, vl);
        sb_add(&b, "\n", 1);
    }
    CHECK_OK(marble_kv_iter_status(it, &err));
    marble_kv_iter_destroy(it);
    return b.p;
}

static char *model_dump(const int *ver)
{
    sbuf b = {0};
    sb_add(&b, "", 0);
    for (int i = 0; i < NKEYS; i++) {
        if (!ver[i]) continue;
        char k[16], v[128];
        key_of(i, k);
        size_t vl = val_of(i, ver[i], v);
        sb_add(&b, k, 6);
        sb_add(&b, "=", 1);
        sb_add(&b, v, vl);
        sb_add(&b, "\n", 1);
    }
    return b.p;
}

/* Every internal entry (key, seq, op, value) of the key-value table: versions and tombstones. */
static char *dump_internal(marble_db *db)
{
    marble_error err = {0};
    marble__readview rv;
    marble__db_readview_acquire(db, NULL, &rv);
    marble__iter *it;
    sbuf b = {0};
    sb_add(&b, "", 0);
    CHECK_OK(marble__db_table_iter(db, db->kv, &rv, &it, &err));
    for (marble__iter_seek_to_first(it); marble__iter_valid(it); marble__iter_next(it)) {
        size_t kl, vl = 0;
        const void *k = marble__iter_key(it, &kl);
        char head[64];
        int op = marble__iter_op(it);
        int n = snprintf(head, sizeof head, " %" PRIu64 " %d ", marble__iter_seq(it), op);
        sb_add(&b, k, kl);
        sb_add(&b, head, (size_t)n);
        if (op) {
            const void *v = marble__iter_value(it, &vl);
            sb_add(&b, v, vl);
        }
        sb_add(&b, "\n", 1);
    }
    CHECK_OK(marble__iter_status(it, &err));
    marble__iter_destroy(it);
    marble__db_readview_release(&rv);
    return b.p;
}

static void expect_same(const char *what, const char *got, const char *want)
{
    if (strcmp(got, want) == 0) return;
    size_t i = 0;
    while (got[i] && got[i] == want[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    FAIL("%s differs at byte %zu: got '%.80s' want '%.80s'", what, i, got + from, want + from);
}

static int arrow_files(const char *dir, uint64_t *nums, int cap)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 6 && strcmp(e->d_name + l - 6, ".arrow") == 0 && n < cap)
            nums[n++] = strtoull(e->d_name, NULL, 10);
    }
    closedir(d);
    return n;
}

/* The files on disk are exactly those of the installed version. */
static void expect_live_files(marble_db *db, const char *dir)
{
    uint64_t disk[4096], live[4096];
    int nd = arrow_files(dir, disk, 4096), nl = 0;
    pthread_mutex_lock(&db->mu);
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < marble__version_num_files(db->current, l) && nl < 4096; i++)
            live[nl++] = marble__version_file(db->current, l, i)->number;
    pthread_mutex_unlock(&db->mu);
    for (int i = 0; i < nd; i++) {
        int found = 0;
        for (int j = 0; j < nl && !found; j++)
            found = disk[i] == live[j];
        if (!found) FAIL("%06" PRIu64 ".arrow is on disk but not in the manifest", disk[i]);
    }
    ASSERT_EQ_INT(nd, nl);
}

/* ---- subcompactions against the single merge ------------------------------------------------ */

TEST(compact_parallel_same_data_as_single_merge)
{
    marble_error err = {0};
    char *da = subdir("a"), *dbb = subdir("b");
    marble_db_options o = test_opts();
    marble_db *db[2];
    CHECK_OK(marble_db_open(da, &o, &db[0], &err));
    CHECK_OK(marble_db_open(dbb, &o, &db[1], &err));
    int ver[NKEYS] = {0}, next = 0;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    marble_snapshot *snaps[2][3];
    char *snap_dump[3];
    int nsnap = 0;
    marble_compact_options one, four;
    marble_compact_options_init(&one);
    marble_compact_options_init(&four);
    one.threads = 1;
    four.threads = 4;
    for (int round = 0; round < 6; round++) {
        apply_random(db, 2, ver, 2500, &rng, &next);
        if (round % 2 == 1) { /* a live snapshot between writes */
            CHECK_OK(marble_db_snapshot_create(db[0], &snaps[0][nsnap], &err));
            CHECK_OK(marble_db_snapshot_create(db[1], &snaps[1][nsnap], &err));
            snap_dump[nsnap] = model_dump(ver);
            nsnap++;
        }
        CHECK_OK(marble_db_flush(db[0], &err));
        CHECK_OK(marble_db_flush(db[1], &err));
        if (round == 2) { /* so that the last compaction merges L0 into an existing L1 */
            CHECK_OK(marble_db_compact_ex(db[0], NULL, &one, &err));
            CHECK_OK(marble_db_compact_ex(db[1], NULL, &four, &err));
        }
    }
    CHECK_OK(marble_db_compact_ex(db[0], NULL, &one, &err));
    CHECK_OK(marble_db_compact_ex(db[1], NULL, &four, &err));
    uint64_t nums[256];
    ASSERT_EQ_INT(arrow_files(da, nums, 256), 1);  /* one merge, one file */
    ASSERT_GE_INT(arrow_files(dbb, nums, 256), 3); /* one file per piece at least */
    char *want = model_dump(ver);
    for (int d = 0; d < 2; d++) {
        char *got = dump(db[d], NULL);
        expect_same("latest", got, want);
        free(got);
        for (int s = 0; s < nsnap; s++) {
            got = dump(db[d], snaps[d][s]);
            expect_same("snapshot", got, snap_dump[s]);
            free(got);
        }
    }
    char *ia = dump_internal(db[0]), *ib = dump_internal(db[1]);
    expect_same("internal entries", ib, ia);
    free(ia);
    free(ib);
    /* without snapshots the old versions and the tombstones go, the same way in both */
    for (int s = 0; s < nsnap; s++) {
        marble_db_snapshot_release(snaps[0][s]);
        marble_db_snapshot_release(snaps[1][s]);
        free(snap_dump[s]);
    }
    CHECK_OK(marble_db_compact_ex(db[0], NULL, &one, &err));
    CHECK_OK(marble_db_compact_ex(db[1], NULL, &four, &err));
    ia = dump_internal(db[0]);
    ib = dump_internal(db[1]);
    expect_same("internal entries without snapshots", ib, ia);
    ASSERT_TRUE(strstr(ia, " 0 \n") == NULL); /* no tombstone left at the bottom */
    free(ia);
    free(ib);
    for (int d = 0; d < 2; d++) {
        char *got = dump(db[d], NULL);
        expect_same("latest after the second compaction", got, want);
        free(got);
        expect_live_files(db[d], d ? dbb : da);
        CHECK_OK(marble_db_close(db[d], &err));
    }
    free(want);
    free(da);
    free(dbb);
}

/* ---- progress, threads = 1, bad options ------------------------------------------------------ */

typedef struct prog {
    uint64_t done, total;
    int calls, backwards;
} prog;

static void on_progress(void *ud, uint64_t done, uint64_t total)
{
    prog *p = ud;
    if (done < p->done || done > total) p->backwards = 1;
    p->done = done;
    p->total = total;
    p->calls++;
}

TEST(compact_parallel_progress_and_options)
{
    marble_error err = {0};
    char *dir = subdir("p");
    marble_db_options o = test_opts();
    o.target_file_size = 16 << 10; /* many cuts: finished on other threads when threads > 1 */
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    int ver[NKEYS] = {0}, next = 0;
    uint64_t rng = 42;
    for (int threads = 1; threads <= 3; threads += 2) {
        for (int r = 0; r < 3; r++) {
            apply_random(&db, 1, ver, 3000, &rng, &next);
            CHECK_OK(marble_db_flush(db, &err));
        }
        prog p = {0};
        marble_compact_options co;
        marble_compact_options_init(&co);
        co.threads = threads;
        co.progress = on_progress;
        co.progress_ud = &p;
        CHECK_OK(marble_db_compact_ex(db, NULL, &co, &err));
        ASSERT_FALSE(p.backwards);
        ASSERT_GT_INT(p.calls, 1);
        ASSERT_GT_INT(p.total, 0);
        ASSERT_EQ_U64(p.done, p.total);
        char *got = dump(db, NULL), *want = model_dump(ver);
        expect_same("after compaction", got, want);
        free(got);
        free(want);
        expect_live_files(db, dir);
    }
    marble_compact_options co;
    marble_compact_options_init(&co);
    co.threads = -1;
    ASSERT_EQ_INT(marble_db_compact_ex(db, NULL, &co, &err), MARBLE_ERR_INVALID_ARGUMENT);
    co.threads = 1000;
    ASSERT_EQ_INT(marble_db_compact_ex(db, NULL, &co, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_db_compact_ex(db, "no_such_table", NULL, &err), MARBLE_ERR_NOT_FOUND);
    CHECK_OK(marble_db_compact_ex(db, NULL, NULL, &err));
    CHECK_OK(marble_db_close(db, &err));
    free(dir);
}

/* ---- cancellation ---------------------------------------------------------------------------- */

typedef struct canceller {
    marble_cancel_token *tok;
    uint64_t delay_ns;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    marble_sleep_ns(c->delay_ns);
    marble_cancel_token_cancel(c->tok);
    return NULL;
}

TEST(compact_parallel_cancel_at_random_points)
{
    marble_error err = {0};
    char *dir = subdir("c");
    marble_db_options o = test_opts();
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    int ver[NKEYS] = {0}, next = 0;
    uint64_t rng = 7, span_ns = 20000000;
    int cancelled = 0, completed = 0;
    for (int iter = 0; iter < 80 && (iter < 24 || cancelled < 4 || completed < 2); iter++) {
        for (int r = 0; r < 2; r++) {
            apply_random(&db, 1, ver, 1500, &rng, &next);
            CHECK_OK(marble_db_flush(db, &err));
        }
        marble_cancel_token *tok;
        CHECK_OK(marble_cancel_token_create(NULL, &tok, &err));
        canceller c = {tok, rnd(&rng) % (span_ns + 1)};
        pthread_t th;
        pthread_create(&th, NULL, cancel_later, &c);
        marble_compact_options co;
        marble_compact_options_init(&co);
        co.threads = 1 + iter % 3;
        co.cancel = tok;
        uint64_t t0 = marble_now_ns();
        int rc = marble_db_compact_ex(db, NULL, &co, &err);
        uint64_t took = marble_now_ns() - t0;
        pthread_join(th, NULL);
        marble_cancel_token_destroy(tok);
        if (rc == MARBLE_OK) {
            completed++;
            span_ns = took + took / 2; /* aim the next delays inside a whole run */
        } else if (rc == MARBLE_ERR_CANCELLED) {
            cancelled++;
            if (c.delay_ns * 2 > span_ns) span_ns *= 2; /* a slow build: reach further */
        } else {
            FAIL("compaction returned %d: %s", rc, err.message);
        }
        expect_live_files(db, dir);
        char *got = dump(db, NULL), *want = model_dump(ver);
        expect_same("after a cancelled compaction", got, want);
        free(got);
        free(want);
    }
    ASSERT_GT_INT(cancelled, 0);
    ASSERT_GT_INT(completed, 0);
    CHECK_OK(marble_db_close(db, &err));
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    char *got = dump(db, NULL), *want = model_dump(ver);
    expect_same("after reopening", got, want);
    free(got);
    free(want);
    expect_live_files(db, dir);
    CHECK_OK(marble_db_compact(db, NULL, &err));
    expect_live_files(db, dir);
    CHECK_OK(marble_db_close(db, &err));
    free(dir);
}

/* Loads ~16000 writes over NKEYS keys (~260 KB of files after a compaction) into dir without a
 * rate limit, as several L0 files, and closes. */
static void load_big(const char *dir, int *ver)
{
    marble_error err = {0};
    marble_db_options o = test_opts();
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    int next = 0;
    uint64_t rng = 99;
    for (int r = 0; r < 4; r++) {
        apply_random(&db, 1, ver, 4000, &rng, &next);
        CHECK_OK(marble_db_flush(db, &err));
    }
    CHECK_OK(marble_db_close(db, &err));
}

TEST(compact_parallel_cancel_while_rate_limited)
{
    marble_error err = {0};
    char *dir = subdir("r");
    int ver[NKEYS] = {0};
    load_big(dir, ver);
    marble_db_options o = test_opts();
    o.compaction_rate_limit = 128 << 10; /* the whole compaction would take several seconds */
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    marble_cancel_token *tok;
    CHECK_OK(marble_cancel_token_create(NULL, &tok, &err));
    canceller c = {tok, 100000000};
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &c);
    marble_compact_options co;
    marble_compact_options_init(&co);
    co.threads = 2;
    co.cancel = tok;
    ASSERT_EQ_INT(marble_db_compact_ex(db, NULL, &co, &err), MARBLE_ERR_CANCELLED);
    pthread_join(th, NULL);
    marble_cancel_token_destroy(tok);
    expect_live_files(db, dir);
    char *got = dump(db, NULL), *want = model_dump(ver);
    expect_same("after cancelling", got, want);
    free(got);
    free(want);
    CHECK_OK(marble_db_close(db, &err)); /* close cancels nothing left: it returns at once */
    free(dir);
}

/* ---- rate limit ------------------------------------------------------------------------------ */

static int cancel_after_first(void *ud)
{
    return ++*(int *)ud > 1;
}

TEST(compact_rate_limiter_paces_and_cancels)
{
    marble__rate_limiter rl;
    marble__rate_limiter_init(&rl, 4 << 20);
    uint64_t t0 = marble_now_ns();
    for (int i = 0; i < 16; i++)
        ASSERT_OK(marble__rate_limiter_request(&rl, 64 << 10, NULL, NULL));
    double s = (double)(marble_now_ns() - t0) / 1e9;
    if (s < 0.15) FAIL("1 MiB at 4 MiB/s took %.3f s", s);
    int calls = 0;
    t0 = marble_now_ns();
    ASSERT_EQ_INT(marble__rate_limiter_request(&rl, 64 << 20, cancel_after_first, &calls),
                  MARBLE_ERR_CANCELLED);
    ASSERT_EQ_INT(calls, 2);
    marble__rate_limiter_destroy(&rl);
    marble__rate_limiter unlimited;
    marble__rate_limiter_init(&unlimited, 0);
    ASSERT_OK(marble__rate_limiter_request(&unlimited, (uint64_t)1 << 40, NULL, NULL));
    marble__rate_limiter_destroy(&unlimited);
}

TEST(compact_rate_limit_limits_compaction)
{
    marble_error err = {0};
    char *dir = subdir("l");
    int ver[NKEYS] = {0};
    load_big(dir, ver);
    marble_db_options o = test_opts();
    uint64_t limit = 1 << 20;
    o.compaction_rate_limit = limit;
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    uint64_t before = atomic_load(&db->st_bytes_compacted_written);
    marble_compact_options co;
    marble_compact_options_init(&co);
    co.threads = 2;
    uint64_t t0 = marble_now_ns();
    CHECK_OK(marble_db_compact_ex(db, NULL, &co, &err));
    double s = (double)(marble_now_ns() - t0) / 1e9;
    uint64_t bytes = atomic_load(&db->st_bytes_compacted_written) - before;
    ASSERT_GT_INT(bytes, 200 << 10);
    double floor_s = 0.5 * (double)bytes / (double)limit; /* generous slack */
    if (s < floor_s)
        FAIL("%" PRIu64 " bytes at %" PRIu64 " B/s took %.3f s (< %.3f)", bytes, limit, s, floor_s);
    char *got = dump(db, NULL), *want = model_dump(ver);
    expect_same("after a rate-limited compaction", got, want);
    free(got);
    free(want);
    CHECK_OK(marble_db_close(db, &err));
    free(dir);
}

/* ---- beside writers and readers ------------------------------------------------------------- */

typedef struct stress {
    marble_db *db;
    atomic_int stop;
    atomic_int failures;
} stress;

typedef struct writer_arg {
    stress *s;
    int id, n, last[500];
} writer_arg;

static void *writer(void *p)
{
    writer_arg *w = p;
    marble_error err = {0};
    for (int i = 0; i < w->n; i++) {
        int k = i % 500;
        char key[32], val[128];
        snprintf(key, sizeof key, "w%d-%03d", w->id, k);
        int vl = snprintf(val, sizeof val, "%s=%06d-padding-padding-padding-padding", key, i);
        if (marble_db_kv_put(w->s->db, key, strlen(key), val, (size_t)vl, NULL, &err) != MARBLE_OK)
            atomic_fetch_add(&w->s->failures, 1);
        w->last[k] = i;
    }
    return NULL;
}

static void *reader(void *p)
{
    stress *s = p;
    marble_error err = {0};
    uint64_t rng = 5;
    while (!atomic_load(&s->stop)) {
        char key[32];
        snprintf(key, sizeof key, "w%d-%03d", (int)(rnd(&rng) % 2), (int)(rnd(&rng) % 500));
        void *v;
        size_t vl;
        int rc = marble_db_kv_get(s->db, NULL, key, strlen(key), &v, &vl, &err);
        if (rc == MARBLE_OK) {
            if (vl < strlen(key) || memcmp(v, key, strlen(key)) != 0)
                atomic_fetch_add(&s->failures, 1);
            marble_free(v);
        } else if (rc != MARBLE_ERR_NOT_FOUND) {
            atomic_fetch_add(&s->failures, 1);
        }
        marble_kv_iter *it;
        if (marble_kv_iter_create(s->db, NULL, &it, &err) != MARBLE_OK) {
            atomic_fetch_add(&s->failures, 1);
            continue;
        }
        char prev[64] = "";
        int n = 0;
        for (marble_kv_iter_seek_to_first(it); marble_kv_iter_valid(it) && n < 300;
             marble_kv_iter_next(it), n++) {
            size_t kl;
            const char *k = marble_kv_iter_key(it, &kl);
            if (kl >= sizeof prev || strncmp(prev, k, kl) >= 0) atomic_fetch_add(&s->failures, 1);
            memcpy(prev, k, kl < sizeof prev ? kl : sizeof prev - 1);
            prev[kl < sizeof prev ? kl : sizeof prev - 1] = 0;
        }
        if (marble_kv_iter_status(it, &err) != MARBLE_OK) atomic_fetch_add(&s->failures, 1);
        marble_kv_iter_destroy(it);
    }
    return NULL;
}

TEST(compact_parallel_beside_writers_and_readers)
{
    marble_error err = {0};
    char *dir = subdir("s");
    marble_db_options o = test_opts();
    o.disable_auto_compaction = 0;
    o.write_buffer_size = 32 << 10;
    o.level0_compaction_trigger = 2;
    o.level1_max_bytes = 96 << 10;
    o.target_file_size = 32 << 10;
    o.background_threads = 4;
    o.max_background_compactions = 1; /* so that a background job has idle threads to split on */
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    stress s = {.db = db};
    writer_arg w[2] = {{.s = &s, .id = 0, .n = 6000}, {.s = &s, .id = 1, .n = 6000}};
    pthread_t tw[2], tr[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&tw[i], NULL, writer, &w[i]);
        pthread_create(&tr[i], NULL, reader, &s);
    }
    marble_compact_options co;
    marble_compact_options_init(&co);
    for (int i = 0; i < 4; i++) {
        co.threads = 2 + i % 2;
        CHECK_OK(marble_db_compact_ex(db, NULL, &co, &err));
    }
    for (int i = 0; i < 2; i++)
        pthread_join(tw[i], NULL);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(tr[i], NULL);
    ASSERT_EQ_INT(atomic_load(&s.failures), 0);
    CHECK_OK(marble_db_wait_idle(db, &err));
    CHECK_OK(marble_db_compact_ex(db, NULL, &co, &err));
    for (int id = 0; id < 2; id++)
        for (int k = 0; k < 500; k++) {
            char key[32], want[128];
            snprintf(key, sizeof key, "w%d-%03d", id, k);
            int wl = snprintf(want, sizeof want, "%s=%06d-padding-padding-padding-padding", key,
                              w[id].last[k]);
            void *v;
            size_t vl;
            CHECK_OK(marble_db_kv_get(db, NULL, key, strlen(key), &v, &vl, &err));
            if (vl != (size_t)wl || memcmp(v, want, vl) != 0)
                FAIL("%s: got '%.*s' want '%s'", key, (int)vl, (const char *)v, want);
            marble_free(v);
        }
    expect_live_files(db, dir);
    CHECK_OK(marble_db_close(db, &err));
    free(dir);
}
