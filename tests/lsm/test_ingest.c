/* Tests for bulk ingestion and file import (marble_db_ingest, marble_db_import_file): sorted
 * input straight into SSTables (sequence numbers, level placement, memtable overlap flushes,
 * reopen without WAL replay), unsorted fallback, order errors, cancellation at random points,
 * injected write failures, and imports of Arrow and CSV files, plain and compressed. */
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "marble/db.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

static const char *SCHEMA = "id:int64!,name:utf8,v:float64";

static char g_dir[256];

static const char *tmpdir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/marble-test-ingest-XXXXXX");
    if (!mkdtemp(g_dir)) FAIL("mkdtemp");
    return g_dir;
}

static void rmdir_all(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) FAIL("rm -rf %s", dir);
}

static int count_arrow(void *ud, const char *name, int is_dir)
{
    size_t n = strlen(name);
    if (!is_dir && n > 6 && !strcmp(name + n - 6, ".arrow")) ++*(int *)ud;
    return 0;
}

static int fs_arrow_files(marble_fs *fs, const char *dir)
{
    int n = 0;
    marble_error err = {0};
    CHECK_OK(marble_fs_list(fs, dir, count_arrow, &n, &err));
    return n;
}

static marble_db_options opts_small(void)
{
    marble_db_options o;
    marble_db_options_init(&o);
    o.write_buffer_size = 1 << 20;
    o.target_file_size = 64 << 10;
    o.batch_rows = 256;
    o.sync = MARBLE_SYNC_NONE;
    o.disable_auto_compaction = 1;
    return o;
}

static marble_db *open_db(const char *dir, const marble_db_options *o, int create)
{
    marble_error err = {0};
    marble_db *db = NULL;
    marble_db_options oo = *o;
    oo.create_if_missing = 1;
    CHECK_OK(marble_db_open(dir, &oo, &db, &err));
    if (create) {
        struct ArrowSchema s;
        CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
        const char *key[] = {"id"};
        CHECK_OK(marble_db_create_table(db, "t", &s, key, 1, &err));
        marble_arrow_schema_release(&s);
    }
    return db;
}

/* One batch: ids[i] for i < n, v = id * mult (+ name). */
static void make_batch(const int64_t *ids, int64_t n, double mult, struct ArrowArray *out)
{
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (int64_t i = 0; i < n; i++) {
        char name[32];
        int len = snprintf(name, sizeof name, "n%" PRId64, ids[i]);
        CHECK_OK(marble_builder_append_int(b, 0, ids[i], &err));
        if (ids[i] % 5 == 2)
            CHECK_OK(marble_builder_append_null(b, 1, &err));
        else
            CHECK_OK(marble_builder_append_bytes(b, 1, name, (size_t)len, &err));
        CHECK_OK(marble_builder_append_double(b, 2, (double)ids[i] * mult, &err));
    }
    CHECK_OK(marble_batch_builder_finish(b, out, &err));
    marble_batch_builder_destroy(b);
    marble_arrow_schema_release(&s);
}

/* A stream of generated batches: batch i holds ids from `ids` (n_batches * per rows). */
typedef struct gen {
    int64_t *ids;
    int64_t n_batches, per, next;
    double mult;
    int delay_us;
    int fail_at; /* get_next of this batch fails (-1: never) */
} gen;

static int gen_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    (void)st;
    return marble_arrow_schema_parse(SCHEMA, out, NULL) == MARBLE_OK ? 0 : 22;
}

static int gen_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    gen *g = st->private_data;
    memset(out, 0, sizeof *out);
    if (g->delay_us) usleep((useconds_t)g->delay_us);
    if (g->next == g->fail_at) return 5;
    if (g->next >= g->n_batches) return 0;
    make_batch(g->ids + g->next * g->per, g->per, g->mult, out);
    g->next++;
    return 0;
}

static const char *gen_error(struct ArrowArrayStream *st)
{
    (void)st;
    return "the generator failed on purpose";
}

static void gen_release(struct ArrowArrayStream *st)
{
    gen *g = st->private_data;
    free(g->ids);
    free(g);
    st->release = NULL;
}

/* ids first, first+step, ... (n_batches * per of them). */
static void gen_stream(int64_t first, int64_t step, int64_t n_batches, int64_t per, double mult,
                       struct ArrowArrayStream *out)
{
    gen *g = calloc(1, sizeof *g);
    g->ids = malloc((size_t)(n_batches * per) * sizeof *g->ids);
    for (int64_t i = 0; i < n_batches * per; i++)
        g->ids[i] = first + i * step;
    g->n_batches = n_batches;
    g->per = per;
    g->mult = mult;
    g->fail_at = -1;
    out->get_schema = gen_schema;
    out->get_next = gen_next;
    out->get_last_error = gen_error;
    out->release = gen_release;
    out->private_data = g;
}

static int64_t scan_count(marble_db *db)
{
    marble_error err = {0};
    struct ArrowArrayStream st;
    CHECK_OK(marble_db_scan(db, "t", NULL, NULL, &st, &err));
    int64_t n = 0;
    for (;;) {
        struct ArrowArray a;
        if (st.get_next(&st, &a) != 0) FAIL("scan: %s", st.get_last_error(&st));
        if (!a.release) break;
        n += a.length;
        a.release(&a);
    }
    st.release(&st);
    return n;
}

/* v of row id (NAN-free: -1e300 when absent). */
static double get_v(marble_db *db, int64_t id)
{
    marble_error err = {0};
    marble_value kv = {MARBLE_VALUE_INT, id, 0, 0, NULL, 0};
    marble_key k = {&kv, 1};
    struct ArrowSchema s;
    struct ArrowArray a;
    int rc = marble_db_get(db, "t", k, NULL, &s, &a, &err);
    if (rc == MARBLE_ERR_NOT_FOUND) return -1e300;
    if (rc != MARBLE_OK) FAIL("get %" PRId64 ": %s", id, err.message);
    double v = marble_arrow_get_double(s.children[2], a.children[2], 0);
    a.release(&a);
    s.release(&s);
    return v;
}

static void put_one(marble_db *db, int64_t id, double v)
{
    marble_error err = {0};
    struct ArrowSchema s;
    struct ArrowArray a;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    make_batch(&id, 1, 1.0, &a);
    double *vals = (double *)(uintptr_t)a.children[2]->buffers[1];
    vals[0] = v;
    CHECK_OK(marble_db_put(db, "t", &s, &a, NULL, &err));
    a.release(&a);
    s.release(&s);
}

/* Sorted names of the *.arrow files in dir, joined by spaces. */
static void arrow_files(const char *dir, char *out, size_t cap)
{
    char *names[4096];
    int n = 0;
    DIR *d = opendir(dir);
    ASSERT_NOT_NULL(d);
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        size_t l = strlen(e->d_name);
        if (l > 6 && !strcmp(e->d_name + l - 6, ".arrow")) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        strncat(out, names[i], cap - strlen(out) - 2);
        strncat(out, " ", cap - strlen(out) - 1);
        free(names[i]);
    }
}

static int count_words(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == ' ';
    return n;
}

static uint64_t wal_bytes(const char *dir)
{
    char w[512];
    snprintf(w, sizeof w, "%s/wal", dir);
    DIR *d = opendir(w);
    if (!d) return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", w, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

TEST(ingest_sorted_shadows_and_is_shadowed)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    put_one(db, 5, -5.0);      /* older than the ingest: shadowed */
    put_one(db, 100000, 42.0); /* outside the range */
    uint64_t before = marble_db_latest_sequence(db);
    struct ArrowArrayStream in;
    gen_stream(0, 1, 20, 500, 2.0, &in);
    marble_ingest_options io;
    marble_ingest_options_init(&io);
    io.assume_sorted = 1;
    marble_ingest_stats st;
    CHECK_OK(marble_db_ingest(db, "t", &in, &io, &st, &err));
    ASSERT_TRUE(in.release == NULL);
    ASSERT_EQ_INT(st.rows, 10000);
    ASSERT_EQ_INT(st.rows_put, 0);
    ASSERT_TRUE(st.wal_bypassed);
    ASSERT_TRUE(st.flushed);    /* key 5 was in the memtable */
    ASSERT_GT_INT(st.files, 1); /* cut at target_file_size */
    ASSERT_GT_INT(st.sequence, before);
    ASSERT_GE_INT(marble_db_latest_sequence(db), st.sequence);
    ASSERT_TRUE(get_v(db, 5) == 10.0);
    ASSERT_TRUE(get_v(db, 9999) == 19998.0);
    ASSERT_TRUE(get_v(db, 100000) == 42.0);
    ASSERT_EQ_INT(scan_count(db), 10001);
    put_one(db, 7, -7.0); /* newer than the ingest */
    ASSERT_TRUE(get_v(db, 7) == -7.0);
    ASSERT_GT_INT(marble_db_latest_sequence(db), st.sequence);
    /* the same after a flush and a full compaction */
    CHECK_OK(marble_db_compact(db, "t", &err));
    ASSERT_TRUE(get_v(db, 5) == 10.0);
    ASSERT_TRUE(get_v(db, 7) == -7.0);
    ASSERT_EQ_INT(scan_count(db), 10001);
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

TEST(ingest_survives_reopen_without_wal)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    o.sync = MARBLE_SYNC_GROUP;
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    uint64_t wal0 = wal_bytes(dir);
    struct ArrowArrayStream in;
    gen_stream(1000, 3, 10, 1000, 1.5, &in);
    marble_ingest_stats st;
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_TRUE(st.wal_bypassed);
    ASSERT_EQ_INT(st.rows, 10000);
    ASSERT_EQ_U64(wal_bytes(dir), wal0); /* nothing went through the WAL */
    char files[8192];
    arrow_files(dir, files, sizeof files);
    ASSERT_EQ_INT(count_words(files), st.files);
    CHECK_OK(marble_db_close(db, &err));
    db = open_db(dir, &o, 0);
    ASSERT_EQ_INT(scan_count(db), 10000);
    ASSERT_TRUE(get_v(db, 1003) == 1003 * 1.5);
    ASSERT_GE_INT(marble_db_latest_sequence(db), st.sequence);
    put_one(db, 1003, -1.0); /* a new write after reopen still wins */
    ASSERT_TRUE(get_v(db, 1003) == -1.0);
    CHECK_OK(marble_db_close(db, &err));
    db = open_db(dir, &o, 0);
    ASSERT_TRUE(get_v(db, 1003) == -1.0);
    ASSERT_TRUE(get_v(db, 1006) == 1006 * 1.5);
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

TEST(ingest_level_placement)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    struct ArrowArrayStream in;
    marble_ingest_stats st;
    gen_stream(0, 1, 4, 250, 1.0, &in);
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_EQ_INT(st.level, 6);           /* an empty table: the bottom level */
    gen_stream(500, 1, 4, 250, 2.0, &in); /* overlaps L6 only */
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_EQ_INT(st.level, 5);
    gen_stream(5000, 1, 1, 100, 3.0, &in); /* overlaps nothing */
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_EQ_INT(st.level, 6);
    put_one(db, 620, -1.0);
    CHECK_OK(marble_db_flush(db, &err)); /* an L0 file in the range */
    gen_stream(600, 1, 1, 50, 4.0, &in);
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_EQ_INT(st.level, 0);
    ASSERT_FALSE(st.flushed);
    ASSERT_TRUE(get_v(db, 100) == 100.0);
    ASSERT_TRUE(get_v(db, 550) == 1100.0);
    ASSERT_TRUE(get_v(db, 620) == 2480.0);
    ASSERT_TRUE(get_v(db, 1200) == 2400.0);
    ASSERT_TRUE(get_v(db, 5050) == 15150.0);
    ASSERT_EQ_INT(scan_count(db), 1500 + 100);
    CHECK_OK(marble_db_close(db, &err));
    db = open_db(dir, &o, 0);
    ASSERT_TRUE(get_v(db, 620) == 2480.0);
    CHECK_OK(marble_db_compact(db, "t", &err));
    ASSERT_TRUE(get_v(db, 620) == 2480.0);
    ASSERT_TRUE(get_v(db, 550) == 1100.0);
    ASSERT_EQ_INT(scan_count(db), 1600);
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

TEST(ingest_flushes_only_overlapping_memtables)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    put_one(db, -50, 1.0); /* below the range */
    struct ArrowArrayStream in;
    marble_ingest_stats st;
    gen_stream(0, 1, 2, 100, 1.0, &in);
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_FALSE(st.flushed);
    char files[8192];
    arrow_files(dir, files, sizeof files);
    ASSERT_EQ_INT(count_words(files), st.files); /* no flush output */
    put_one(db, 150, -1.0);
    gen_stream(100, 1, 2, 100, 3.0, &in);
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_TRUE(st.flushed);
    ASSERT_TRUE(get_v(db, 150) == 450.0);
    ASSERT_TRUE(get_v(db, -50) == 1.0);
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

TEST(ingest_unsorted_falls_back)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    /* batches 0..99, 100..199, then 50..149 again (new values), then 300..399 */
    gen *g = calloc(1, sizeof *g);
    g->ids = malloc(400 * sizeof *g->ids);
    for (int i = 0; i < 200; i++)
        g->ids[i] = i;
    for (int i = 0; i < 100; i++)
        g->ids[200 + i] = 50 + i;
    for (int i = 0; i < 100; i++)
        g->ids[300 + i] = 300 + i;
    g->n_batches = 4;
    g->per = 100;
    g->mult = 1.0;
    g->fail_at = -1;
    struct ArrowArrayStream in = {gen_schema, gen_next, gen_error, gen_release, g};
    marble_ingest_stats st;
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_FALSE(st.wal_bypassed);
    ASSERT_EQ_INT(st.rows, 400);
    ASSERT_EQ_INT(st.rows_put, 200);
    ASSERT_GE_INT(st.files, 1);
    ASSERT_EQ_INT(scan_count(db), 300);
    ASSERT_TRUE(get_v(db, 120) == 120.0);
    ASSERT_TRUE(get_v(db, 399) == 399.0);
    /* wholly unsorted: everything through the write path */
    int64_t ids[6] = {9005, 9003, 9001, 9004, 9002, 9000};
    g = calloc(1, sizeof *g);
    g->ids = malloc(sizeof ids);
    memcpy(g->ids, ids, sizeof ids);
    g->n_batches = 2;
    g->per = 3;
    g->mult = 1.0;
    g->fail_at = -1;
    in = (struct ArrowArrayStream){gen_schema, gen_next, gen_error, gen_release, g};
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    ASSERT_EQ_INT(st.files, 0);
    ASSERT_EQ_INT(st.rows_put, 6);
    ASSERT_EQ_INT(scan_count(db), 306);
    CHECK_OK(marble_db_close(db, &err));
    db = open_db(dir, &o, 0);
    ASSERT_EQ_INT(scan_count(db), 306);
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

TEST(ingest_out_of_order_names_the_row)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    char before[8192], after[8192];
    arrow_files(dir, before, sizeof before);
    gen *g = calloc(1, sizeof *g);
    g->ids = malloc(300 * sizeof *g->ids);
    for (int i = 0; i < 300; i++)
        g->ids[i] = i;
    g->ids[150] = 149; /* a duplicate: not strictly ascending */
    g->n_batches = 3;
    g->per = 100;
    g->mult = 1.0;
    g->fail_at = -1;
    struct ArrowArrayStream in = {gen_schema, gen_next, gen_error, gen_release, g};
    marble_ingest_options io;
    marble_ingest_options_init(&io);
    io.assume_sorted = 1;
    int rc = marble_db_ingest(db, "t", &in, &io, NULL, &err);
    ASSERT_EQ_INT(rc, MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "row 150");
    ASSERT_EQ_INT(scan_count(db), 0);
    arrow_files(dir, after, sizeof after);
    ASSERT_EQ_STR(after, before);
    /* a failing input stream: its message, nothing visible */
    gen_stream(0, 1, 5, 100, 1.0, &in);
    ((gen *)in.private_data)->fail_at = 3;
    rc = marble_db_ingest(db, "t", &in, &io, NULL, &err);
    ASSERT_EQ_INT(rc, MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, "failed on purpose");
    ASSERT_EQ_INT(scan_count(db), 0);
    arrow_files(dir, after, sizeof after);
    ASSERT_EQ_STR(after, before);
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

TEST(ingest_bad_input)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    struct ArrowArrayStream in;
    gen_stream(0, 1, 1, 10, 1.0, &in);
    ASSERT_EQ_INT(marble_db_ingest(db, "nope", &in, NULL, NULL, &err), MARBLE_ERR_NOT_FOUND);
    ASSERT_TRUE(in.release == NULL);
    ASSERT_EQ_INT(marble_db_ingest(db, "t", NULL, NULL, NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
    /* a table whose v column has another type */
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("id:int64!,name:utf8,v:int32", &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "u", &s, key, 1, &err));
    marble_arrow_schema_release(&s);
    gen_stream(0, 1, 1, 10, 1.0, &in);
    ASSERT_EQ_INT(marble_db_ingest(db, "u", &in, NULL, NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'v'");
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

typedef struct canceller {
    marble_cancel_token *tok;
    int delay_us;
} canceller;

static void *cancel_thread(void *arg)
{
    canceller *c = arg;
    usleep((useconds_t)c->delay_us);
    marble_cancel_token_cancel(c->tok);
    return NULL;
}

TEST(ingest_cancel_at_random_points)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    o.target_file_size = 16 << 10;
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    uint64_t rng = (uint64_t)time(NULL) * 2654435761u + 7;
    int64_t expect = 0, base = 0;
    int done = 0, cancelled = 0;
    for (int it = 0; it < 8; it++) {
        char before[8192], after[8192];
        arrow_files(dir, before, sizeof before);
        marble_cancel_token *tok;
        CHECK_OK(marble_cancel_token_create(NULL, &tok, &err));
        struct ArrowArrayStream in;
        gen_stream(base, 1, 40, 200, 1.0, &in);
        ((gen *)in.private_data)->delay_us = 300;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        /* the first is cancelled at once, the last never, the others at random points */
        canceller c = {tok, it == 0 ? 0 : it == 7 ? 5000000 : (int)((rng >> 33) % 20000)};
        pthread_t th;
        if (it < 7) ASSERT_EQ_INT(pthread_create(&th, NULL, cancel_thread, &c), 0);
        marble_ingest_options io;
        marble_ingest_options_init(&io);
        io.cancel = tok;
        io.assume_sorted = 1;
        marble_ingest_stats st;
        int rc = marble_db_ingest(db, "t", &in, &io, &st, &err);
        if (it < 7) pthread_join(th, NULL);
        marble_cancel_token_destroy(tok);
        arrow_files(dir, after, sizeof after);
        if (rc == MARBLE_OK) {
            expect += 8000;
            done++;
            ASSERT_EQ_INT(count_words(after), count_words(before) + st.files);
        } else {
            ASSERT_EQ_INT(rc, MARBLE_ERR_CANCELLED);
            ASSERT_EQ_STR(after, before); /* no partial file left */
            cancelled++;
        }
        ASSERT_EQ_INT(scan_count(db), expect);
        base += 10000;
    }
    CHECK_OK(marble_db_close(db, &err));
    db = open_db(dir, &o, 0);
    ASSERT_EQ_INT(scan_count(db), expect);
    CHECK_OK(marble_db_close(db, &err));
    ASSERT_GE_INT(done, 1);
    ASSERT_GE_INT(cancelled, 1);
    rmdir_all(dir);
}

TEST(ingest_write_failures_leave_nothing)
{
    marble_error err = {0};
    marble_fs *fs;
    CHECK_OK(marble_fs_create(&fs, &err));
    marble_vfs *fault;
    CHECK_OK(marble_vfs_fault_create(marble_fs_backend(fs, "mem"), &fault, &err));
    CHECK_OK(marble_fs_register(fs, "fault", fault, &err));
    marble_db_options o = opts_small();
    o.fs = fs;
    o.target_file_size = 8 << 10;
    o.create_if_missing = 1;
    marble_db *db;
    CHECK_OK(marble_db_open("fault://db", &o, &db, &err));
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "t", &s, key, 1, &err));
    marble_arrow_schema_release(&s);
    /* count the writes of one ingest (its SSTables come before the manifest edit) */
    struct ArrowArrayStream in;
    uint64_t w0 = marble_fault_count(fault, MARBLE_FAULT_WRITE);
    gen_stream(0, 1, 6, 200, 1.0, &in);
    marble_ingest_stats st;
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
    uint64_t writes = marble_fault_count(fault, MARBLE_FAULT_WRITE) - w0;
    ASSERT_GE_INT(st.files, 3);
    ASSERT_GT_INT(writes, (int64_t)st.files); /* the files', then the manifest's */
    int64_t expect = 1200;
    for (uint64_t n = 1; n < writes && n < 12; n++) {
        int files = fs_arrow_files(fs, "fault://db");
        marble_fault_fail_nth(fault, MARBLE_FAULT_WRITE, n, 5);
        gen_stream(10000 * (int64_t)n, 1, 6, 200, 1.0, &in);
        int rc = marble_db_ingest(db, "t", &in, NULL, NULL, &err);
        marble_fault_fail_nth(fault, MARBLE_FAULT_ALL, 0, 0);
        ASSERT_EQ_INT(rc, MARBLE_ERR_IO);
        ASSERT_EQ_INT(fs_arrow_files(fs, "fault://db"), files); /* partial files removed */
        ASSERT_EQ_INT(scan_count(db), expect);
        /* the database still takes writes and ingests */
        put_one(db, -(int64_t)n, 1.0);
        expect++;
        gen_stream(10000 * (int64_t)n + 5000, 1, 1, 10, 1.0, &in);
        CHECK_OK(marble_db_ingest(db, "t", &in, NULL, NULL, &err));
        expect += 10;
        ASSERT_EQ_INT(scan_count(db), expect);
    }
    CHECK_OK(marble_db_close(db, &err));
    CHECK_OK(marble_db_open("fault://db", &o, &db, &err));
    ASSERT_EQ_INT(scan_count(db), expect);
    CHECK_OK(marble_db_close(db, &err));
    CHECK_OK(marble_fs_destroy(fs, &err));
}

static void export_table(marble_db *db, const char *uri)
{
    marble_error err = {0};
    CHECK_OK(marble_db_export_table(db, "t", uri, NULL, NULL, &err));
}

TEST(import_files_of_every_format)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    struct ArrowArrayStream in;
    gen_stream(0, 2, 10, 300, 0.5, &in);
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, NULL, &err));
    const char *names[] = {"x.arrow",     "x.arrows",  "x.csv",        "x.arrow.zst",
                           "x.arrows.gz", "x.csv.zst", "x.feather.lz4"};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    const char *key[] = {"id"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char uri[512], table[32];
        snprintf(uri, sizeof uri, "%s/%s", dir, names[i]);
        snprintf(table, sizeof table, "c%zu", i);
        export_table(db, uri);
        CHECK_OK(marble_db_create_table(db, table, &s, key, 1, &err));
        marble_import_options io;
        marble_import_options_init(&io);
        marble_import_stats st;
        CHECK_OK(marble_db_import_file(db, table, uri, &io, &st, &err));
        ASSERT_EQ_INT(st.ingest.rows, 3000);
        ASSERT_TRUE(st.ingest.wal_bypassed);
        /* same rows, same values */
        struct ArrowArrayStream a, b;
        CHECK_OK(marble_db_scan(db, "t", NULL, NULL, &a, &err));
        CHECK_OK(marble_db_scan(db, table, NULL, NULL, &b, &err));
        char p1[512], p2[512];
        snprintf(p1, sizeof p1, "%s/cmp1.csv", dir);
        snprintf(p2, sizeof p2, "%s/cmp2.csv", dir);
        marble_fs *fs;
        CHECK_OK(marble_fs_create(&fs, &err));
        CHECK_OK(marble_export_stream(fs, &a, p1, NULL, NULL, &err));
        CHECK_OK(marble_export_stream(fs, &b, p2, NULL, NULL, &err));
        void *d1, *d2;
        size_t n1, n2;
        CHECK_OK(marble_fs_read_all(fs, p1, &d1, &n1, &err));
        CHECK_OK(marble_fs_read_all(fs, p2, &d2, &n2, &err));
        ASSERT_EQ_U64(n1, n2);
        ASSERT_TRUE(memcmp(d1, d2, n1) == 0);
        free(d1);
        free(d2);
        CHECK_OK(marble_fs_destroy(fs, &err));
    }
    marble_arrow_schema_release(&s);
    /* errors name the file */
    char uri[512];
    snprintf(uri, sizeof uri, "%s/missing.arrow", dir);
    ASSERT_NE_INT(marble_db_import_file(db, "t", uri, NULL, NULL, &err), MARBLE_OK);
    ASSERT_CONTAINS(err.message, "missing.arrow");
    snprintf(uri, sizeof uri, "%s/bad.csv", dir);
    FILE *f = fopen(uri, "w");
    fputs("id,name,v\n1,a,1.5\n2,b,notanumber\n3,c,2\n", f);
    fclose(f);
    ASSERT_EQ_INT(marble_db_import_file(db, "c0", uri, NULL, NULL, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "bad.csv: line 3, column 3");
    marble_import_options io;
    marble_import_options_init(&io);
    io.csv.skip_bad_rows = 1;
    marble_import_stats st;
    CHECK_OK(marble_db_import_file(db, "c0", uri, &io, &st, &err));
    ASSERT_EQ_INT(st.ingest.rows, 2);
    ASSERT_EQ_INT(st.bad_rows, 1);
    ASSERT_EQ_INT(st.first_bad_line, 3);
    snprintf(uri, sizeof uri, "%s/x.txt", dir);
    ASSERT_EQ_INT(marble_db_import_file(db, "t", uri, NULL, NULL, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

TEST(import_truncated_arrow_stream)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    struct ArrowArrayStream in;
    gen_stream(0, 1, 4, 100, 1.0, &in);
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, NULL, &err));
    char uri[512];
    snprintf(uri, sizeof uri, "%s/x.arrows", dir);
    export_table(db, uri);
    struct stat sb;
    ASSERT_EQ_INT(stat(uri, &sb), 0);
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "c", &s, key, 1, &err));
    marble_arrow_schema_release(&s);
    for (off_t cut = 1; cut < sb.st_size - 8; cut += sb.st_size / 23) {
        ASSERT_EQ_INT(truncate(uri, cut), 0);
        int rc = marble_db_import_file(db, "c", uri, NULL, NULL, &err);
        ASSERT_NE_INT(rc, MARBLE_OK);
        export_table(db, uri);
    }
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

typedef struct writer_arg {
    marble_db *db;
    atomic_int stop;
    int64_t written;
} writer_arg;

static void *writer_thread(void *arg)
{
    writer_arg *w = arg;
    while (!atomic_load(&w->stop)) {
        put_one(w->db, -1 - w->written, 1.0);
        w->written++;
    }
    return NULL;
}

TEST(ingest_with_concurrent_writers)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    o.write_buffer_size = 32 << 10; /* memtables rotate and flush while the ingests run */
    o.disable_auto_compaction = 0;
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    writer_arg w;
    w.db = db;
    atomic_init(&w.stop, 0);
    w.written = 0;
    pthread_t th;
    ASSERT_EQ_INT(pthread_create(&th, NULL, writer_thread, &w), 0);
    int64_t ingested = 0;
    for (int i = 0; i < 6; i++) {
        struct ArrowArrayStream in;
        gen_stream(i * 10000, 1, 10, 300, 1.0, &in);
        marble_ingest_stats st;
        CHECK_OK(marble_db_ingest(db, "t", &in, NULL, &st, &err));
        ASSERT_TRUE(st.wal_bypassed);
        ingested += st.rows;
        ASSERT_TRUE(get_v(db, i * 10000 + 17) == (double)(i * 10000 + 17));
    }
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    ASSERT_EQ_INT(scan_count(db), ingested + w.written);
    CHECK_OK(marble_db_close(db, &err));
    db = open_db(dir, &o, 0);
    ASSERT_EQ_INT(scan_count(db), ingested + w.written);
    put_one(db, 5, -2.0);
    ASSERT_TRUE(get_v(db, 5) == -2.0);
    CHECK_OK(marble_db_close(db, &err));
    rmdir_all(dir);
}

/* A snapshot taken while an ingest runs must not see its rows appear later: the ingest refuses
 * to install (MARBLE_ERR_BUSY, nothing visible) while such a snapshot lives. */
typedef struct snap_during {
    marble_db *db;
    marble_snapshot *snap;
} snap_during;

static void snap_progress(void *ud, int64_t rows, int64_t bytes)
{
    (void)rows;
    (void)bytes;
    snap_during *sd = ud;
    marble_error err = {0};
    if (!sd->snap) {
        put_one(sd->db, 200000, 1.0); /* a write after the ingest started */
        CHECK_OK(marble_db_snapshot_create(sd->db, &sd->snap, &err));
    }
}

TEST(ingest_refuses_to_change_a_snapshot_taken_during_it)
{
    const char *dir = tmpdir();
    marble_db_options o = opts_small();
    marble_db *db = open_db(dir, &o, 1);
    marble_error err = {0};
    snap_during sd = {db, NULL};
    struct ArrowArrayStream in;
    gen_stream(0, 1, 4, 100, 2.0, &in);
    marble_ingest_options io;
    marble_ingest_options_init(&io);
    io.assume_sorted = 1;
    io.progress = snap_progress;
    io.progress_ud = &sd;
    ASSERT_EQ_INT(marble_db_ingest(db, "t", &in, &io, NULL, &err), MARBLE_ERR_BUSY);
    ASSERT_TRUE(strstr(err.message, "snapshot") != NULL);
    ASSERT_NOT_NULL(sd.snap);
    ASSERT_TRUE(get_v(db, 1) == -1e300); /* nothing visible */
    marble_read_options ro = {0};
    ro.snapshot = sd.snap;
    marble_value kv = {MARBLE_VALUE_INT, 1, 0, 0, NULL, 0};
    struct ArrowSchema s;
    struct ArrowArray a;
    ASSERT_EQ_INT(marble_db_get(db, "t", (marble_key){&kv, 1}, &ro, &s, &a, &err),
                  MARBLE_ERR_NOT_FOUND);
    marble_db_snapshot_release(sd.snap);
    /* with the snapshot gone, the same ingest installs */
    gen_stream(0, 1, 4, 100, 2.0, &in);
    io.progress = NULL;
    CHECK_OK(marble_db_ingest(db, "t", &in, &io, NULL, &err));
    ASSERT_TRUE(get_v(db, 1) == 2.0);
    CHECK_OK(marble_db_close(db, &err));
}
