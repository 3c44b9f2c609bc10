/* marble-bench db: db_bench-style workloads (fillseq, fillrandom, overwrite, readrandom,
 * readmissing, seekrandom, scan) plus Arrow batch ingest (batchinsert) and a one-column
 * projection over a 20-column table (projscan), on Marble, RocksDB and LevelDB with matched
 * settings. Engines run one after another, each on its own databases, so that no engine's
 * background work overlaps another's timed loop; the table is printed at the end. */
#include "bench_db.h"

#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef MARBLE_BENCH_DB_MARBLE
#include "marble/db.h"
#include "marble/marble.h"
#endif

#ifndef MARBLE_BENCH_HAVE_ROCKSDB
const bench_db_engine *const bench_db_rocksdb = NULL;
#endif
#ifndef MARBLE_BENCH_HAVE_LEVELDB
const bench_db_engine *const bench_db_leveldb = NULL;
#endif

#define BATCH_ROWS 1000     /* rows per write batch (batchinsert, and the peers' projscan load) */
#define SEEK_NEXTS 100      /* entries read after each seek */
#define SEEK_DIVISOR 10     /* seekrandom does num / 10 seeks */
#define WIDE_COLUMNS 19     /* projscan: int64 key + 19 value columns */
#define WIDE_LOAD_ROWS 4096 /* rows per marble_db_put when loading the projscan table */
#define POOL_BYTES (1u << 20)

const char *const bench_db_workload_names[BDB_COUNT] = {"fillseq",    "fillrandom",  "overwrite",
                                                        "readrandom", "readmissing", "seekrandom",
                                                        "scan",       "batchinsert", "projscan"};

const char *const bench_db_engine_names[BDB_ENGINES] = {"marble", "rocksdb", "leveldb"};

void bench_db_options_init(bench_db_options *o)
{
    memset(o, 0, sizeof *o);
    o->num = 1000000;
    o->key_size = 16;
    o->value_size = 100;
    for (int e = 0; e < BDB_ENGINES; e++)
        o->engine_on[e] = 1;
    for (int w = 0; w < BDB_COUNT; w++)
        o->workload_on[w] = 1;
    o->settings.write_buffer_bytes = (size_t)64 << 20;
    o->settings.bloom_bits = 10;
    o->settings.cache_bytes = (size_t)64 << 20;
    o->settings.compression_lz4 = 0;
    o->settings.sync_every = 0;
    o->settings.target_file_bytes = (uint64_t)64 << 20;
}

/* ---- Marble ---------------------------------------------------------------------------------- */

#ifdef MARBLE_BENCH_DB_MARBLE

typedef struct mdb {
    marble_db *db;
    marble_write_options wo;
} mdb;

static int merr(const char *what, const marble_error *e, char *err, size_t errlen)
{
    snprintf(err, errlen, "marble %s: %s", what, e->message[0] ? e->message : "failed");
    return -1;
}

static const char *mdb_unsupported(const bench_db_settings *s)
{
    (void)s;
    return NULL;
}

static int mdb_open(const char *dir, const bench_db_settings *s, void **h, char *err, size_t errlen)
{
    marble_error e = {0};
    mdb *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "marble: out of memory");
        return -1;
    }
    marble_db_options opts;
    marble_db_options_init(&opts);
    opts.create_if_missing = 1;
    opts.error_if_exists = 1;
    opts.sync = s->sync_every ? MARBLE_SYNC_EVERY : MARBLE_SYNC_NONE;
    opts.write_buffer_size = s->write_buffer_bytes;
    opts.max_immutable_memtables = 2;
    opts.target_file_size = s->target_file_bytes;
    opts.level1_max_bytes = (uint64_t)256 << 20;
    opts.level0_compaction_trigger = 4;
    opts.level0_slowdown_trigger = 20;
    opts.level0_stop_trigger = 36;
    opts.background_threads = 2;
    opts.compression = s->compression_lz4 ? MARBLE_IPC_LZ4_FRAME : MARBLE_IPC_UNCOMPRESSED;
    opts.bloom_bits_per_key = s->bloom_bits;
    if (marble_db_open(dir, &opts, &m->db, &e)) {
        free(m);
        return merr("open", &e, err, errlen);
    }
    m->wo.sync = -1;
    *h = m;
    return 0;
}

static int mdb_close(void *h, char *err, size_t errlen)
{
    mdb *m = h;
    marble_error e = {0};
    int rc = marble_db_close(m->db, &e);
    free(m);
    return rc ? merr("close", &e, err, errlen) : 0;
}

static int mdb_put(void *h, const void *k, size_t klen, const void *v, size_t vlen, char *err,
                   size_t errlen)
{
    mdb *m = h;
    marble_error e;
    if (marble_db_kv_put(m->db, k, klen, v, vlen, &m->wo, &e)) return merr("put", &e, err, errlen);
    return 0;
}

static int mdb_get(void *h, const void *k, size_t klen, int *found, size_t *vlen, char *err,
                   size_t errlen)
{
    mdb *m = h;
    marble_error e;
    void *v = NULL;
    size_t n = 0;
    int rc = marble_db_kv_get(m->db, NULL, k, klen, &v, &n, &e);
    if (rc == MARBLE_ERR_NOT_FOUND) {
        *found = 0;
        *vlen = 0;
        return 0;
    }
    if (rc) return merr("get", &e, err, errlen);
    *found = 1;
    *vlen = n;
    marble_free(v);
    return 0;
}

static int mdb_del(void *h, const void *k, size_t klen, char *err, size_t errlen)
{
    mdb *m = h;
    marble_error e;
    if (marble_db_kv_delete(m->db, k, klen, &m->wo, &e)) return merr("delete", &e, err, errlen);
    return 0;
}

static int mdb_batch_create(void *h, void **b, char *err, size_t errlen)
{
    mdb *m = h;
    marble_error e;
    marble_write_batch *wb;
    if (marble_write_batch_create(m->db, &wb, &e)) return merr("write batch", &e, err, errlen);
    *b = wb;
    return 0;
}

static int mdb_batch_put(void *b, const void *k, size_t klen, const void *v, size_t vlen, char *err,
                         size_t errlen)
{
    marble_error e;
    if (marble_write_batch_kv_put(b, k, klen, v, vlen, &e))
        return merr("write batch put", &e, err, errlen);
    return 0;
}

static int mdb_batch_write(void *h, void *b, char *err, size_t errlen)
{
    mdb *m = h;
    marble_error e;
    if (marble_db_write(m->db, b, &m->wo, &e)) return merr("write", &e, err, errlen);
    return 0;
}

static void mdb_batch_clear(void *b)
{
    marble_write_batch_clear(b);
}

static void mdb_batch_destroy(void *b)
{
    marble_write_batch_destroy(b);
}

static int mdb_iter_create(void *h, void **it, char *err, size_t errlen)
{
    mdb *m = h;
    marble_error e;
    marble_kv_iter *i;
    if (marble_kv_iter_create(m->db, NULL, &i, &e)) return merr("iterator", &e, err, errlen);
    *it = i;
    return 0;
}

static void mdb_iter_seek(void *it, const void *k, size_t klen)
{
    marble_kv_iter_seek(it, k, klen);
}

static void mdb_iter_seek_first(void *it)
{
    marble_kv_iter_seek_to_first(it);
}

static int mdb_iter_valid(void *it)
{
    return marble_kv_iter_valid(it);
}

static void mdb_iter_next(void *it)
{
    marble_kv_iter_next(it);
}

static const void *mdb_iter_key(void *it, size_t *klen)
{
    return marble_kv_iter_key(it, klen);
}

static const void *mdb_iter_value(void *it, size_t *vlen)
{
    return marble_kv_iter_value(it, vlen);
}

static int mdb_iter_status(void *it, char *err, size_t errlen)
{
    marble_error e;
    if (marble_kv_iter_status(it, &e)) return merr("iterator", &e, err, errlen);
    return 0;
}

static void mdb_iter_destroy(void *it)
{
    marble_kv_iter_destroy(it);
}

static int mdb_scan(void *h, uint64_t *rows, uint64_t *bytes, char *err, size_t errlen)
{
    void *it;
    if (mdb_iter_create(h, &it, err, errlen)) return -1;
    uint64_t n = 0, b = 0;
    for (marble_kv_iter_seek_to_first(it); marble_kv_iter_valid(it); marble_kv_iter_next(it)) {
        size_t kl, vl;
        marble_kv_iter_key(it, &kl);
        marble_kv_iter_value(it, &vl);
        n++;
        b += kl + vl;
    }
    int rc = mdb_iter_status(it, err, errlen);
    marble_kv_iter_destroy(it);
    *rows = n;
    *bytes = b;
    return rc;
}

static int mdb_compact(void *h, char *err, size_t errlen)
{
    mdb *m = h;
    marble_error e;
    if (marble_db_compact(m->db, NULL, &e)) return merr("compact", &e, err, errlen);
    return 0;
}

static uint64_t mdb_disk_size(void *h)
{
    mdb *m = h;
    return marble_db_disk_size(m->db);
}

static const bench_db_engine marble_engine = {
    "marble",
    "no block cache yet (--cache-mb does not apply; reads go through the page cache); "
    "SSTables are Arrow IPC files of 4096-row batches; KV workloads use the built-in "
    "key-value table",
    mdb_unsupported,
    mdb_open,
    mdb_close,
    mdb_put,
    mdb_get,
    mdb_del,
    mdb_batch_create,
    mdb_batch_put,
    mdb_batch_write,
    mdb_batch_clear,
    mdb_batch_destroy,
    mdb_iter_create,
    mdb_iter_seek,
    mdb_iter_seek_first,
    mdb_iter_valid,
    mdb_iter_next,
    mdb_iter_key,
    mdb_iter_value,
    mdb_iter_status,
    mdb_iter_destroy,
    mdb_scan,
    mdb_compact,
    mdb_disk_size,
};
#define MARBLE_ENGINE (&marble_engine)
#else
#define MARBLE_ENGINE NULL
#endif

/* ---- the driver ------------------------------------------------------------------------------ */

typedef struct run {
    int done;
    uint64_t ops;
    uint64_t bytes;
    double seconds;
} run;

typedef struct disk {
    int done;
    uint64_t dir_bytes;  /* every file under the database directory after close */
    uint64_t live_bytes; /* the engine's own count while open */
    const char *db;
} disk;

typedef struct db_ref {
    void *h;
    char path[4096];
} db_ref;

typedef struct ctx {
    const bench_db_options *o;
    const bench_db_engine *e;
    int ei; /* e's index in runs and disks */
    char root[3072];
    char err[1024];
    char *pool;
    uint64_t pool_pos;
    uint64_t *perm; /* a permutation of 0..num-1: fillrandom's and batchinsert's key order */
    run runs[BDB_ENGINES][BDB_COUNT];
    disk disks[BDB_ENGINES];
} ctx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static uint64_t rand_below(uint64_t *s, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)splitmix(s) * n) >> 64);
}

/* db_bench's key: the key number in zero-padded decimal, key_size bytes. */
static void make_key(char *buf, int key_size, uint64_t n)
{
    for (int i = key_size - 1; i >= 0; i--) {
        buf[i] = (char)('0' + n % 10);
        n /= 10;
    }
}

/* The next value: value_size bytes of the pool, which repeats each 32 random bytes once (about
 * half compressible). */
static const char *next_value(ctx *c)
{
    const char *v = c->pool + c->pool_pos;
    c->pool_pos += (uint64_t)c->o->value_size;
    if (c->pool_pos >= POOL_BYTES) c->pool_pos -= POOL_BYTES;
    return v;
}

static int fail(ctx *c, const char *workload, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "marble-bench db: %s %s: ", c->e->name, workload);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    c->err[0] = '\0';
    return -1;
}

static int engine_fail(ctx *c, const char *workload)
{
    return fail(c, workload, "%s", c->err);
}

static uint64_t walk_bytes;

static int walk_sum(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F) walk_bytes += (uint64_t)st->st_size;
    return 0;
}

static int walk_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static uint64_t dir_bytes(const char *path)
{
    walk_bytes = 0;
    nftw(path, walk_sum, 16, FTW_PHYS);
    return walk_bytes;
}

static int remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    return nftw(path, walk_remove, 16, FTW_DEPTH | FTW_PHYS);
}

/* Opens a fresh database at root/<engine>-<label>. */
static int db_create(ctx *c, const char *label, db_ref *d)
{
    snprintf(d->path, sizeof d->path, "%s/%s-%s", c->root, c->e->name, label);
    d->h = NULL;
    if (remove_tree(d->path) || mkdir(d->path, 0755)) {
        c->err[0] = '\0';
        return fail(c, label, "cannot make %s", d->path);
    }
    if (c->e->open(d->path, &c->o->settings, &d->h, c->err, sizeof c->err)) {
        d->h = NULL;
        return engine_fail(c, label);
    }
    return 0;
}

/* Closes and removes a database; with `record`, its sizes become the engine's disk line. */
static int db_drop(ctx *c, db_ref *d, const char *record)
{
    if (!d->h) return 0;
    uint64_t live = record ? c->e->disk_size(d->h) : 0;
    int rc = c->e->close(d->h, c->err, sizeof c->err);
    d->h = NULL;
    if (rc) return engine_fail(c, "close");
    if (record) {
        disk *k = &c->disks[c->ei];
        k->done = 1;
        k->live_bytes = live;
        k->dir_bytes = dir_bytes(d->path);
        k->db = record;
    }
    if (remove_tree(d->path)) return fail(c, "close", "cannot remove %s", d->path);
    return 0;
}

static void progress(const ctx *c, const char *workload, double seconds)
{
    fprintf(stderr, "marble-bench db: %-8s %-12s %8.3f s\n", c->e->name, workload, seconds);
}

/* fillseq / fillrandom / overwrite: num puts. order: keys[i] if given, else i; with `uniform`,
 * keys drawn uniformly from [0, num). */
static int w_put(ctx *c, void *h, const uint64_t *keys, int uniform, uint64_t seed, run *r)
{
    const bench_db_options *o = c->o;
    char key[1024];
    uint64_t s = seed;
    double t0 = now_s();
    for (uint64_t i = 0; i < o->num; i++) {
        uint64_t k = uniform ? rand_below(&s, o->num) : keys ? keys[i] : i;
        make_key(key, o->key_size, k);
        const char *v = next_value(c);
        if (c->e->put(h, key, (size_t)o->key_size, v, (size_t)o->value_size, c->err, sizeof c->err))
            return -1;
    }
    r->seconds = now_s() - t0;
    r->ops = o->num;
    r->bytes = o->num * (uint64_t)(o->key_size + o->value_size);
    return 0;
}

/* readrandom (every key present) and readmissing (keys between present ones: a key's last
 * digit replaced by '.', which sorts below '0'). */
static int w_read(ctx *c, void *h, int missing, run *r, const char *name)
{
    const bench_db_options *o = c->o;
    char key[1024];
    uint64_t s = missing ? 303 : 202, found = 0, bytes = 0;
    double t0 = now_s();
    for (uint64_t i = 0; i < o->num; i++) {
        make_key(key, o->key_size, rand_below(&s, o->num));
        if (missing) key[o->key_size - 1] = '.';
        int f;
        size_t vlen;
        if (c->e->get(h, key, (size_t)o->key_size, &f, &vlen, c->err, sizeof c->err)) return -1;
        if (f) {
            found++;
            bytes += (uint64_t)o->key_size + vlen;
            if (vlen != (size_t)o->value_size)
                return fail(c, name, "a value of %zu bytes, not %d", vlen, o->value_size);
        } else {
            bytes += (uint64_t)o->key_size;
        }
    }
    r->seconds = now_s() - t0;
    uint64_t want = missing ? 0 : o->num;
    if (found != want)
        return fail(c, name, "found %" PRIu64 " of %" PRIu64 " keys, expected %" PRIu64, found,
                    o->num, want);
    r->ops = o->num;
    r->bytes = bytes;
    return 0;
}

/* seekrandom: num / 10 seeks to present keys, each followed by reading 100 entries. */
static int w_seek(ctx *c, void *h, run *r)
{
    const bench_db_options *o = c->o;
    char key[1024];
    uint64_t s = 404, seeks = o->num / SEEK_DIVISOR, bytes = 0;
    if (seeks == 0) seeks = 1;
    void *it;
    if (c->e->iter_create(h, &it, c->err, sizeof c->err)) return -1;
    double t0 = now_s();
    for (uint64_t i = 0; i < seeks; i++) {
        uint64_t k = rand_below(&s, o->num);
        make_key(key, o->key_size, k);
        c->e->iter_seek(it, key, (size_t)o->key_size);
        size_t kl, vl;
        if (!c->e->iter_valid(it) || memcmp(c->e->iter_key(it, &kl), key, (size_t)o->key_size) ||
            kl != (size_t)o->key_size) {
            if (c->e->iter_status(it, c->err, sizeof c->err) == 0)
                snprintf(c->err, sizeof c->err, "seek to key %" PRIu64 " did not land on it", k);
            c->e->iter_destroy(it);
            return -1;
        }
        uint64_t want = o->num - k < SEEK_NEXTS ? o->num - k : SEEK_NEXTS, got = 0;
        for (; got < SEEK_NEXTS && c->e->iter_valid(it); got++, c->e->iter_next(it)) {
            c->e->iter_key(it, &kl);
            c->e->iter_value(it, &vl);
            bytes += kl + vl;
        }
        if (got != want) {
            if (c->e->iter_status(it, c->err, sizeof c->err) == 0)
                snprintf(c->err, sizeof c->err,
                         "read %" PRIu64 " entries after key %" PRIu64 ", expected %" PRIu64, got,
                         k, want);
            c->e->iter_destroy(it);
            return -1;
        }
    }
    r->seconds = now_s() - t0;
    int rc = c->e->iter_status(it, c->err, sizeof c->err);
    c->e->iter_destroy(it);
    r->ops = seeks;
    r->bytes = bytes;
    return rc;
}

static int w_scan(ctx *c, void *h, run *r)
{
    uint64_t rows, bytes;
    double t0 = now_s();
    if (c->e->scan(h, &rows, &bytes, c->err, sizeof c->err)) return -1;
    r->seconds = now_s() - t0;
    if (rows != c->o->num)
        return fail(c, "scan", "%" PRIu64 " rows, expected %" PRIu64, rows, c->o->num);
    r->ops = rows;
    r->bytes = bytes;
    return 0;
}

/* Fills the staging area with batch b's rows (keys in perm order): key_size + value_size each. */
static uint64_t stage_rows(ctx *c, uint64_t b, char *stage)
{
    const bench_db_options *o = c->o;
    uint64_t first = b * BATCH_ROWS, n = o->num - first < BATCH_ROWS ? o->num - first : BATCH_ROWS;
    size_t row = (size_t)(o->key_size + o->value_size);
    for (uint64_t i = 0; i < n; i++) {
        make_key(stage + i * row, o->key_size, c->perm[first + i]);
        memcpy(stage + i * row + o->key_size, next_value(c), (size_t)o->value_size);
    }
    return n;
}

/* batchinsert on a peer: write batches of 1000 rows from staged data; the timed part fills the
 * engine's write batch and writes it. */
static int w_batchinsert_kv(ctx *c, void *h, char *stage, run *r)
{
    const bench_db_options *o = c->o;
    size_t row = (size_t)(o->key_size + o->value_size);
    void *b;
    if (c->e->batch_create(h, &b, c->err, sizeof c->err)) return -1;
    double secs = 0.0;
    uint64_t nb = (o->num + BATCH_ROWS - 1) / BATCH_ROWS;
    for (uint64_t bi = 0; bi < nb; bi++) {
        uint64_t n = stage_rows(c, bi, stage);
        double t0 = now_s();
        for (uint64_t i = 0; i < n; i++) {
            const char *p = stage + i * row;
            if (c->e->batch_put(b, p, (size_t)o->key_size, p + o->key_size, (size_t)o->value_size,
                                c->err, sizeof c->err)) {
                c->e->batch_destroy(b);
                return -1;
            }
        }
        if (c->e->batch_write(h, b, c->err, sizeof c->err)) {
            c->e->batch_destroy(b);
            return -1;
        }
        c->e->batch_clear(b);
        secs += now_s() - t0;
    }
    c->e->batch_destroy(b);
    r->seconds = secs;
    r->ops = o->num;
    r->bytes = o->num * row;
    return 0;
}

/* projscan's row: the 19 value columns of row i, as Marble's table holds them (odd columns
 * float64, even int64), packed little-endian for the peers. */
static double wide_double(uint64_t i, int col)
{
    return (double)((i * (uint64_t)col) % 10007) / 7.0;
}

static int64_t wide_int(uint64_t i, int col)
{
    return (int64_t)(i * (uint64_t)col);
}

/* projscan on a peer: the rows go in as values of 152 bytes under 8-byte big-endian keys (the
 * size and order of Marble's int64 key); the timed scan reads whole entries and decodes
 * nothing. */
static int w_projscan_kv(ctx *c, void *h, run *r)
{
    const bench_db_options *o = c->o;
    void *b;
    if (c->e->batch_create(h, &b, c->err, sizeof c->err)) return -1;
    unsigned char key[8], val[WIDE_COLUMNS * 8];
    for (uint64_t i = 0; i < o->num; i++) {
        for (int k = 0; k < 8; k++)
            key[k] = (unsigned char)(i >> (56 - 8 * k));
        for (int col = 1; col <= WIDE_COLUMNS; col++) {
            if (col % 2) {
                double d = wide_double(i, col);
                memcpy(val + (col - 1) * 8, &d, 8);
            } else {
                int64_t v = wide_int(i, col);
                memcpy(val + (col - 1) * 8, &v, 8);
            }
        }
        if (c->e->batch_put(b, key, sizeof key, val, sizeof val, c->err, sizeof c->err)) goto fail;
        if ((i + 1) % BATCH_ROWS == 0 || i + 1 == o->num) {
            if (c->e->batch_write(h, b, c->err, sizeof c->err)) goto fail;
            c->e->batch_clear(b);
        }
    }
    c->e->batch_destroy(b);
    if (c->e->compact(h, c->err, sizeof c->err)) return -1;
    uint64_t rows, bytes;
    double t0 = now_s();
    if (c->e->scan(h, &rows, &bytes, c->err, sizeof c->err)) return -1;
    r->seconds = now_s() - t0;
    if (rows != o->num)
        return fail(c, "projscan", "%" PRIu64 " rows, expected %" PRIu64, rows, o->num);
    r->ops = rows;
    r->bytes = rows * (8 + WIDE_COLUMNS * 8);
    return 0;
fail:
    c->e->batch_destroy(b);
    return -1;
}

#ifdef MARBLE_BENCH_DB_MARBLE
/* batchinsert on Marble: the staged rows as an Arrow record batch (key binary not null, value
 * binary), built outside the timed part (Arrow is the input format), written with
 * marble_db_put. */
static int w_batchinsert_marble(ctx *c, void *h, char *stage, run *r)
{
    const bench_db_options *o = c->o;
    marble_db *db = ((mdb *)h)->db;
    const marble_write_options *wo = &((mdb *)h)->wo;
    size_t row = (size_t)(o->key_size + o->value_size);
    marble_error e;
    marble_field_spec fields[] = {{"key", "z", 0}, {"value", "z", 1}};
    const char *keys[] = {"key"};
    struct ArrowSchema schema;
    marble_batch_builder *bb = NULL;
    int rc = -1;
    if (marble_arrow_schema_make(&schema, fields, 2, NULL, NULL, 0, &e))
        return merr("schema", &e, c->err, sizeof c->err);
    if (marble_db_create_table(db, "kv", &schema, keys, 1, &e)) {
        merr("create_table", &e, c->err, sizeof c->err);
        goto cleanup;
    }
    if (marble_batch_builder_create(&schema, &bb, &e)) {
        merr("batch builder", &e, c->err, sizeof c->err);
        goto cleanup;
    }
    double secs = 0.0;
    uint64_t nb = (o->num + BATCH_ROWS - 1) / BATCH_ROWS;
    for (uint64_t bi = 0; bi < nb; bi++) {
        uint64_t n = stage_rows(c, bi, stage);
        for (uint64_t i = 0; i < n; i++) {
            const char *p = stage + i * row;
            if (marble_builder_append_bytes(bb, 0, p, (size_t)o->key_size, &e) ||
                marble_builder_append_bytes(bb, 1, p + o->key_size, (size_t)o->value_size, &e)) {
                merr("append", &e, c->err, sizeof c->err);
                goto cleanup;
            }
        }
        struct ArrowArray batch;
        if (marble_batch_builder_finish(bb, &batch, &e)) {
            merr("finish", &e, c->err, sizeof c->err);
            goto cleanup;
        }
        double t0 = now_s();
        int prc = marble_db_put(db, "kv", &schema, &batch, wo, &e);
        secs += now_s() - t0;
        marble_arrow_array_release(&batch);
        if (prc) {
            merr("put", &e, c->err, sizeof c->err);
            goto cleanup;
        }
    }
    r->seconds = secs;
    r->ops = o->num;
    r->bytes = o->num * row;
    rc = 0;
cleanup:
    marble_batch_builder_destroy(bb);
    marble_arrow_schema_release(&schema);
    return rc;
}

/* projscan on Marble: a table of key int64 + c01..c19 (odd float64, even int64), loaded in
 * 4096-row batches and compacted; the timed scan projects c01 and sums it. */
static int w_projscan_marble(ctx *c, void *h, run *r)
{
    const bench_db_options *o = c->o;
    marble_db *db = ((mdb *)h)->db;
    const marble_write_options *wo = &((mdb *)h)->wo;
    marble_error e;
    marble_field_spec fields[1 + WIDE_COLUMNS];
    char names[WIDE_COLUMNS][8];
    fields[0] = (marble_field_spec){"key", "l", 0};
    for (int col = 1; col <= WIDE_COLUMNS; col++) {
        snprintf(names[col - 1], sizeof names[0], "c%02d", col);
        fields[col] = (marble_field_spec){names[col - 1], col % 2 ? "g" : "l", 1};
    }
    const char *keys[] = {"key"};
    struct ArrowSchema schema;
    struct ArrowArrayStream st = {0};
    marble_batch_builder *bb = NULL;
    int rc = -1;
    if (marble_arrow_schema_make(&schema, fields, 1 + WIDE_COLUMNS, NULL, NULL, 0, &e))
        return merr("schema", &e, c->err, sizeof c->err);
    if (marble_db_create_table(db, "wide", &schema, keys, 1, &e)) {
        merr("create_table", &e, c->err, sizeof c->err);
        goto cleanup;
    }
    if (marble_batch_builder_create(&schema, &bb, &e)) {
        merr("batch builder", &e, c->err, sizeof c->err);
        goto cleanup;
    }
    for (uint64_t i = 0; i < o->num; i++) {
        int bad = marble_builder_append_int(bb, 0, (int64_t)i, &e);
        for (int col = 1; col <= WIDE_COLUMNS && !bad; col++)
            bad = col % 2 ? marble_builder_append_double(bb, col, wide_double(i, col), &e)
                          : marble_builder_append_int(bb, col, wide_int(i, col), &e);
        if (bad) {
            merr("append", &e, c->err, sizeof c->err);
            goto cleanup;
        }
        if ((i + 1) % WIDE_LOAD_ROWS == 0 || i + 1 == o->num) {
            struct ArrowArray batch;
            if (marble_batch_builder_finish(bb, &batch, &e)) {
                merr("finish", &e, c->err, sizeof c->err);
                goto cleanup;
            }
            int prc = marble_db_put(db, "wide", &schema, &batch, wo, &e);
            marble_arrow_array_release(&batch);
            if (prc) {
                merr("put", &e, c->err, sizeof c->err);
                goto cleanup;
            }
        }
    }
    if (marble_db_compact(db, NULL, &e)) {
        merr("compact", &e, c->err, sizeof c->err);
        goto cleanup;
    }
    const char *cols[] = {"c01"};
    marble_read_options ro = {NULL, cols, 1, 0};
    uint64_t rows = 0;
    double sum = 0.0, want = 0.0;
    for (uint64_t i = 0; i < o->num; i++)
        want += wide_double(i, 1);
    double t0 = now_s();
    if (marble_db_scan(db, "wide", NULL, &ro, &st, &e)) {
        merr("scan", &e, c->err, sizeof c->err);
        goto cleanup;
    }
    for (;;) {
        struct ArrowArray a;
        int src = st.get_next(&st, &a);
        if (src) {
            const char *m = st.get_last_error(&st);
            snprintf(c->err, sizeof c->err, "marble scan: %s", m ? m : strerror(src));
            goto cleanup;
        }
        if (!a.release) break;
        if (a.n_children != 1) {
            marble_arrow_array_release(&a);
            snprintf(c->err, sizeof c->err, "marble scan: %" PRId64 " columns, expected 1",
                     a.n_children);
            goto cleanup;
        }
        const struct ArrowArray *col = a.children[0];
        const double *d = (const double *)col->buffers[1] + col->offset;
        for (int64_t k = 0; k < col->length; k++)
            sum += d[k];
        rows += (uint64_t)a.length;
        marble_arrow_array_release(&a);
    }
    r->seconds = now_s() - t0;
    if (rows != o->num || sum != want) {
        snprintf(c->err, sizeof c->err,
                 "marble scan: %" PRIu64 " rows (expected %" PRIu64 "), sum %.17g (expected %.17g)",
                 rows, o->num, sum, want);
        goto cleanup;
    }
    r->ops = rows;
    r->bytes = rows * (8 + WIDE_COLUMNS * 8);
    rc = 0;
cleanup:
    if (st.release) st.release(&st);
    marble_batch_builder_destroy(bb);
    marble_arrow_schema_release(&schema);
    return rc;
}
#endif

/* The fillrandom database: made by w_put in perm order (timed only when fillrandom is asked
 * for), then overwritten when asked for. */
static int need_random_db(const bench_db_options *o)
{
    for (int w = BDB_FILLRANDOM; w <= BDB_SCAN; w++)
        if (o->workload_on[w]) return 1;
    return 0;
}

static int run_engine(ctx *c, int ei)
{
    const bench_db_options *o = c->o;
    run *runs = c->runs[ei];
    db_ref d = {0};
    char *stage = NULL;
    int rc = -1;
    const char *w = "";

    if (o->workload_on[BDB_FILLSEQ]) {
        w = "fillseq";
        if (db_create(c, w, &d)) goto cleanup;
        if (w_put(c, d.h, NULL, 0, 0, &runs[BDB_FILLSEQ])) goto engine_err;
        runs[BDB_FILLSEQ].done = 1;
        progress(c, w, runs[BDB_FILLSEQ].seconds);
        if (db_drop(c, &d, NULL)) goto cleanup;
    }
    if (need_random_db(o)) {
        w = "fillrandom";
        run tmp = {0};
        run *fr = o->workload_on[BDB_FILLRANDOM] ? &runs[BDB_FILLRANDOM] : &tmp;
        if (db_create(c, w, &d)) goto cleanup;
        if (w_put(c, d.h, c->perm, 0, 0, fr)) goto engine_err;
        fr->done = 1;
        progress(c, o->workload_on[BDB_FILLRANDOM] ? w : "(fillrandom, setup)", fr->seconds);
        if (o->workload_on[BDB_OVERWRITE]) {
            w = "overwrite";
            if (w_put(c, d.h, NULL, 1, 101, &runs[BDB_OVERWRITE])) goto engine_err;
            runs[BDB_OVERWRITE].done = 1;
            progress(c, w, runs[BDB_OVERWRITE].seconds);
        }
        int reads = 0;
        for (int k = BDB_READRANDOM; k <= BDB_SCAN; k++)
            reads |= o->workload_on[k];
        if (reads) {
            w = "compact";
            double t0 = now_s();
            if (c->e->compact(d.h, c->err, sizeof c->err)) goto engine_err;
            progress(c, "(compact)", now_s() - t0);
        }
        if (o->workload_on[BDB_READRANDOM]) {
            w = "readrandom";
            if (w_read(c, d.h, 0, &runs[BDB_READRANDOM], w)) goto engine_err;
            runs[BDB_READRANDOM].done = 1;
            progress(c, w, runs[BDB_READRANDOM].seconds);
        }
        if (o->workload_on[BDB_READMISSING]) {
            w = "readmissing";
            if (w_read(c, d.h, 1, &runs[BDB_READMISSING], w)) goto engine_err;
            runs[BDB_READMISSING].done = 1;
            progress(c, w, runs[BDB_READMISSING].seconds);
        }
        if (o->workload_on[BDB_SEEKRANDOM]) {
            w = "seekrandom";
            if (w_seek(c, d.h, &runs[BDB_SEEKRANDOM])) goto engine_err;
            runs[BDB_SEEKRANDOM].done = 1;
            progress(c, w, runs[BDB_SEEKRANDOM].seconds);
        }
        if (o->workload_on[BDB_SCAN]) {
            w = "scan";
            if (w_scan(c, d.h, &runs[BDB_SCAN])) goto engine_err;
            runs[BDB_SCAN].done = 1;
            progress(c, w, runs[BDB_SCAN].seconds);
        }
        static const char *const labels[2][2] = {
            {"fillrandom", "fillrandom, compacted"},
            {"fillrandom+overwrite", "fillrandom+overwrite, compacted"}};
        if (db_drop(c, &d, labels[o->workload_on[BDB_OVERWRITE]][reads])) goto cleanup;
    }
    if (o->workload_on[BDB_BATCHINSERT]) {
        w = "batchinsert";
        stage = malloc((size_t)BATCH_ROWS * (size_t)(o->key_size + o->value_size));
        if (!stage) {
            fail(c, w, "out of memory");
            goto cleanup;
        }
        if (db_create(c, w, &d)) goto cleanup;
        int r;
#ifdef MARBLE_BENCH_DB_MARBLE
        if (c->e == &marble_engine)
            r = w_batchinsert_marble(c, d.h, stage, &runs[BDB_BATCHINSERT]);
        else
#endif
            r = w_batchinsert_kv(c, d.h, stage, &runs[BDB_BATCHINSERT]);
        if (r) goto engine_err;
        runs[BDB_BATCHINSERT].done = 1;
        progress(c, w, runs[BDB_BATCHINSERT].seconds);
        if (db_drop(c, &d, c->disks[ei].done ? NULL : "batchinsert")) goto cleanup;
    }
    if (o->workload_on[BDB_PROJSCAN]) {
        w = "projscan";
        if (db_create(c, w, &d)) goto cleanup;
        int r;
#ifdef MARBLE_BENCH_DB_MARBLE
        if (c->e == &marble_engine)
            r = w_projscan_marble(c, d.h, &runs[BDB_PROJSCAN]);
        else
#endif
            r = w_projscan_kv(c, d.h, &runs[BDB_PROJSCAN]);
        if (r) goto engine_err;
        runs[BDB_PROJSCAN].done = 1;
        progress(c, w, runs[BDB_PROJSCAN].seconds);
        if (db_drop(c, &d, c->disks[ei].done ? NULL : "projscan")) goto cleanup;
    }
    rc = 0;
    goto cleanup;
engine_err:
    if (c->err[0]) fail(c, w, "%s", c->err);
cleanup:
    if (d.h) {
        char ignored[256];
        c->e->close(d.h, ignored, sizeof ignored);
        remove_tree(d.path);
    }
    free(stage);
    return rc;
}

/* marble's ops/s over the best peer's at workload w; < 0 when there is nothing to compare. */
static double vs_best_peer(const ctx *c, int w)
{
    const run *m = &c->runs[BDB_MARBLE][w];
    double best = 0.0;
    for (int e = BDB_ROCKSDB; e < BDB_ENGINES; e++) {
        const run *p = &c->runs[e][w];
        if (p->done && p->seconds > 0.0 && (double)p->ops / p->seconds > best)
            best = (double)p->ops / p->seconds;
    }
    if (!m->done || m->seconds <= 0.0 || best <= 0.0) return -1.0;
    return (double)m->ops / m->seconds / best;
}

static void human_bytes(uint64_t b, char *buf, size_t n)
{
    if (b >= (uint64_t)1 << 30)
        snprintf(buf, n, "%.2f GiB", (double)b / 1073741824.0);
    else
        snprintf(buf, n, "%.1f MiB", (double)b / 1048576.0);
}

static void print_results(const ctx *c, const bench_db_engine *const *engines)
{
    const bench_db_options *o = c->o;
    const bench_db_settings *s = &o->settings;
    const char *comp = s->compression_lz4 ? "lz4" : "none";
    const char *sync = s->sync_every ? "every" : "none";
    if (o->json) {
        for (int w = 0; w < BDB_COUNT; w++) {
            for (int e = 0; e < BDB_ENGINES; e++) {
                const run *r = &c->runs[e][w];
                if (!r->done) continue;
                double secs = r->seconds > 0.0 ? r->seconds : 1e-9;
                printf("{\"area\":\"db\",\"engine\":\"%s\",\"workload\":\"%s\",\"ops\":%" PRIu64
                       ",\"seconds\":%.6f,\"ops_per_sec\":%.1f,\"mb_per_sec\":%.2f,\"num\":%" PRIu64
                       ",\"key_size\":%d,\"value_size\":%d,\"compression\":\"%s\",\"sync\":\"%s\","
                       "\"write_buffer_mb\":%zu,\"bloom_bits\":%d,\"cache_mb\":%zu,",
                       bench_db_engine_names[e], bench_db_workload_names[w], r->ops, r->seconds,
                       (double)r->ops / secs, (double)r->bytes / secs / 1e6, o->num, o->key_size,
                       o->value_size, comp, sync, s->write_buffer_bytes >> 20, s->bloom_bits,
                       s->cache_bytes >> 20);
                double v = e == BDB_MARBLE ? vs_best_peer(c, w) : -1.0;
                if (v >= 0.0)
                    printf("\"marble_vs_best_peer\":%.4f}\n", v);
                else
                    printf("\"marble_vs_best_peer\":null}\n");
            }
        }
        for (int e = 0; e < BDB_ENGINES; e++) {
            const disk *k = &c->disks[e];
            if (!k->done) continue;
            printf("{\"area\":\"db\",\"engine\":\"%s\",\"disk_bytes\":%" PRIu64
                   ",\"live_bytes\":%" PRIu64 ",\"db\":\"%s\",\"num\":%" PRIu64
                   ",\"key_size\":%d,\"value_size\":%d,\"compression\":\"%s\"}\n",
                   bench_db_engine_names[e], k->dir_bytes, k->live_bytes, k->db, o->num,
                   o->key_size, o->value_size, comp);
        }
        fflush(stdout);
        return;
    }
    printf("\n%-12s %-8s %12s %10s %10s %18s\n", "workload", "engine", "ops/s", "MB/s", "seconds",
           "marble/best-peer");
    for (int w = 0; w < BDB_COUNT; w++) {
        for (int e = 0; e < BDB_ENGINES; e++) {
            const run *r = &c->runs[e][w];
            if (!r->done) continue;
            double secs = r->seconds > 0.0 ? r->seconds : 1e-9;
            char ratio[32] = "-";
            double v = e == BDB_MARBLE ? vs_best_peer(c, w) : -1.0;
            if (v >= 0.0) snprintf(ratio, sizeof ratio, "%.2f", v);
            printf("%-12s %-8s %12.0f %10.1f %10.3f %18s\n", bench_db_workload_names[w],
                   bench_db_engine_names[e], (double)r->ops / secs, (double)r->bytes / secs / 1e6,
                   r->seconds, ratio);
        }
    }
    int any = 0;
    for (int e = 0; e < BDB_ENGINES; e++) {
        const disk *k = &c->disks[e];
        if (!k->done) continue;
        if (!any++)
            printf("\nbytes on disk (every file in the directory after close; live: the "
                   "engine's own count while open)\n");
        char a[32], b[32];
        human_bytes(k->dir_bytes, a, sizeof a);
        human_bytes(k->live_bytes, b, sizeof b);
        printf("  %-8s %12s  (live %s)  %s\n", bench_db_engine_names[e], a, b, k->db);
    }
    printf("\nnotes:\n");
    for (int e = 0; e < BDB_ENGINES; e++)
        if (engines[e] && o->engine_on[e])
            printf("  %-8s %s\n", engines[e]->name, engines[e]->note);
    printf("  MB/s counts 10^6 bytes of keys + values moved (readmissing: keys; projscan: the\n"
           "  160-byte logical row, though marble reads one column and the peers whole values).\n"
           "  marble/best-peer: marble's ops/s / the best peer's (above 1: marble is faster).\n");
    fflush(stdout);
}

int bench_db_area(const bench_db_options *o)
{
    const bench_db_engine *engines[BDB_ENGINES] = {MARBLE_ENGINE, bench_db_rocksdb,
                                                   bench_db_leveldb};
    static const char *const why[BDB_ENGINES] = {
        "not built in (src/lsm/db.c was missing at configure time, or "
        "-DMARBLE_BENCH_DB_MARBLE=OFF)",
        "unavailable (librocksdb and rocksdb/c.h not found at configure time; "
        "scripts/deps.sh installs librocksdb-dev)",
        "unavailable (libleveldb and leveldb/c.h not found at configure time; "
        "scripts/deps.sh installs libleveldb-dev)"};
    int on[BDB_ENGINES], n_on = 0;
    for (int e = 0; e < BDB_ENGINES; e++) {
        on[e] = o->engine_on[e];
        if (!on[e]) continue;
        const char *skip = NULL;
        if (!engines[e])
            skip = why[e];
        else if (engines[e]->unsupported(&o->settings))
            skip = engines[e]->unsupported(&o->settings);
        if (skip) {
            fprintf(stderr, "marble-bench db: %s: %s\n", bench_db_engine_names[e], skip);
            if (o->engines_chosen) return 1;
            on[e] = 0;
        }
        n_on += on[e];
    }
    if (n_on == 0) {
        fprintf(stderr, "marble-bench db: no engine to run\n");
        return 1;
    }

    ctx *c = calloc(1, sizeof *c);
    if (!c) return 1;
    c->o = o;
    int rc = 1;
    const char *base = o->dir;
    if (!base) {
        const char *t = getenv("TMPDIR");
        base = t && *t ? t : "/tmp";
    }
    snprintf(c->root, sizeof c->root, "%s/marble-bench-db-XXXXXX", base);
    c->pool = malloc(POOL_BYTES + (size_t)o->value_size);
    c->perm = malloc(o->num * sizeof *c->perm);
    if (!c->pool || !c->perm) {
        fprintf(stderr, "marble-bench db: out of memory\n");
        goto done;
    }
    if (!mkdtemp(c->root)) {
        fprintf(stderr, "marble-bench db: cannot make a directory under %s\n", base);
        c->root[0] = '\0';
        goto done;
    }
    uint64_t s = 42;
    for (size_t i = 0; i < POOL_BYTES + (size_t)o->value_size; i += 64) {
        for (size_t k = 0; k < 32 && i + k < POOL_BYTES + (size_t)o->value_size; k++)
            c->pool[i + k] = (char)(' ' + splitmix(&s) % 95);
        for (size_t k = 32; k < 64 && i + k < POOL_BYTES + (size_t)o->value_size; k++)
            c->pool[i + k] = c->pool[i + k - 32];
    }
    for (uint64_t i = 0; i < o->num; i++)
        c->perm[i] = i;
    for (uint64_t i = o->num - 1; i > 0; i--) {
        uint64_t j = rand_below(&s, i + 1), t = c->perm[i];
        c->perm[i] = c->perm[j];
        c->perm[j] = t;
    }

    const bench_db_settings *st = &o->settings;
    if (!o->json) {
        printf("marble-bench db: %" PRIu64 " keys of %d bytes, values of %d bytes (half "
               "compressible); %ld CPUs; databases under %s\n",
               o->num, o->key_size, o->value_size, sysconf(_SC_NPROCESSORS_ONLN), c->root);
        printf("settings for every engine: write buffer %zu MiB, bloom %d bits/key, compression "
               "%s, WAL on, sync %s, target file %" PRIu64 " MiB, block cache %zu MiB (rocksdb, "
               "leveldb; marble has none yet)\n",
               st->write_buffer_bytes >> 20, st->bloom_bits, st->compression_lz4 ? "lz4" : "none",
               st->sync_every ? "every write" : "none", st->target_file_bytes >> 20,
               st->cache_bytes >> 20);
        printf("reads, seeks and scan run on the fillrandom(+overwrite) database after a flush and "
               "a full compaction; seekrandom: %" PRIu64 " seeks of %d entries\n",
               o->num / SEEK_DIVISOR ? o->num / SEEK_DIVISOR : 1, SEEK_NEXTS);
        fflush(stdout);
    }
    for (int e = 0; e < BDB_ENGINES; e++) {
        if (!on[e]) continue;
        c->e = engines[e];
        c->ei = e;
        c->pool_pos = 0;
        if (run_engine(c, e)) goto done;
    }
    print_results(c, engines);
    rc = 0;
done:
    if (c->root[0]) remove_tree(c->root);
    free(c->pool);
    free(c->perm);
    free(c);
    return rc;
}
