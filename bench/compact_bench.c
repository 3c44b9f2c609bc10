/* marble-bench compact: a full manual compaction of the same database with 1 and 2 threads on
 * Marble (marble_db_compact_ex) and RocksDB (CompactRange with max_subcompactions 1 and 2), each
 * run on a fresh copy of one pre-compaction state per engine (several overlapping L0 files of
 * keys written in random order). MB/s is the input bytes the compaction reads (the sizes of the
 * table files it merges, 10^6 bytes per MB) divided by the wall time of the call. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "marble/base.h"
#include "marble/db.h"

#ifdef MARBLE_BENCH_HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif

#define KEY_SIZE 16
#define VALUE_SIZE 100
#define BATCH 1000
#define WRITE_BUFFER ((size_t)16 << 20)
#define POOL_BYTES (1 << 20)

int bench_compact_area(int argc, char **argv);

typedef struct cb {
    int json;
    int reps;
    uint64_t rows;
    char root[1024];
    char *pool;
    int failed;
} cb;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Row i: a 16-byte key from a bijective scramble of i (random order, no repeats) and a 100-byte
 * value from the pool (half random, half repeated: compressible like db_bench's). */
static void row(const cb *c, uint64_t i, char *k, const char **v)
{
    uint64_t x = i * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    snprintf(k, KEY_SIZE + 1, "%016" PRIx64, x);
    *v = c->pool + (i * 97) % (POOL_BYTES - VALUE_SIZE);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void remove_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = -1, rc = -1;
    char *buf = malloc(1 << 20);
    if (in < 0 || !buf) goto done;
    out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) goto done;
    for (;;) {
        ssize_t n = read(in, buf, 1 << 20);
        if (n < 0) goto done;
        if (n == 0) break;
        if (write(out, buf, (size_t)n) != n) goto done;
    }
    rc = 0;
done:
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    free(buf);
    return rc;
}

static int copy_tree(const char *from, const char *to)
{
    if (mkdir(to, 0755) != 0) return -1;
    DIR *d = opendir(from);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char a[2048], b[2048];
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        struct stat st;
        if (stat(a, &st) != 0) {
            rc = -1;
            break;
        }
        rc = S_ISDIR(st.st_mode) ? copy_tree(a, b) : copy_file(a, b);
    }
    closedir(d);
    return rc;
}

static void report(cb *c, const char *engine, int threads, double seconds, double cpu,
                   uint64_t bytes, uint64_t rows_after)
{
    double mbs = seconds > 0 ? (double)bytes / 1e6 / seconds : 0;
    if (c->json)
        printf("{\"bench\":\"compact\",\"engine\":\"%s\",\"threads\":%d,\"rows\":%" PRIu64
               ",\"bytes\":%" PRIu64 ",\"seconds\":%.4f,\"cpu_seconds\":%.4f,"
               "\"mb_per_sec\":%.1f}\n",
               engine, threads, c->rows, bytes, seconds, cpu, mbs);
    else
        printf("%-8s %7d %12" PRIu64 " %9.3f %9.3f %9.1f %12" PRIu64 "\n", engine, threads, bytes,
               seconds, cpu, mbs, rows_after);
    fflush(stdout);
    if (rows_after != c->rows) {
        fprintf(stderr, "marble-bench compact: %s read back %" PRIu64 " rows, wrote %" PRIu64 "\n",
                engine, rows_after, c->rows);
        c->failed = 1;
    }
}

/* ---- Marble ---------------------------------------------------------------------------------- */

static void marble_opts(marble_db_options *o)
{
    marble_db_options_init(o);
    o->write_buffer_size = WRITE_BUFFER;
    o->sync = MARBLE_SYNC_NONE;
    o->disable_auto_compaction = 1;
    o->background_threads = 2;
}

static uint64_t stat_u64(const char *json, const char *name)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", name);
    const char *p = strstr(json, pat);
    return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

static int marble_fail(cb *c, const char *what, const marble_error *e)
{
    fprintf(stderr, "marble-bench compact: marble %s: %s\n", what, e->message);
    c->failed = 1;
    return -1;
}

static int marble_load(cb *c, const char *dir)
{
    marble_db_options o;
    marble_opts(&o);
    marble_db *db;
    marble_error e = {0};
    if (marble_db_open(dir, &o, &db, &e)) return marble_fail(c, "open", &e);
    marble_write_batch *wb = NULL;
    int rc = marble_write_batch_create(db, &wb, &e);
    for (uint64_t i = 0; rc == MARBLE_OK && i < c->rows; i++) {
        char k[KEY_SIZE + 1];
        const char *v;
        row(c, i, k, &v);
        rc = marble_write_batch_kv_put(wb, k, KEY_SIZE, v, VALUE_SIZE, &e);
        if (rc == MARBLE_OK && (i % BATCH == BATCH - 1 || i == c->rows - 1)) {
            rc = marble_db_write(db, wb, NULL, &e);
            marble_write_batch_clear(wb);
        }
    }
    marble_write_batch_destroy(wb);
    if (rc == MARBLE_OK) rc = marble_db_flush(db, &e);
    if (rc != MARBLE_OK) {
        marble_db_close(db, NULL);
        return marble_fail(c, "load", &e);
    }
    if (marble_db_close(db, &e)) return marble_fail(c, "close", &e);
    return 0;
}

typedef struct outcome {
    double seconds, cpu;
    uint64_t bytes, rows;
} outcome;

static double cpu_now(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

static int marble_run(cb *c, const char *dir, int threads, outcome *out)
{
    marble_db_options o;
    marble_opts(&o);
    marble_db *db;
    marble_error e = {0};
    if (marble_db_open(dir, &o, &db, &e)) return marble_fail(c, "open", &e);
    marble_compact_options co;
    marble_compact_options_init(&co);
    co.threads = threads;
    double c0 = cpu_now(), t0 = (double)marble_now_ns();
    int rc = marble_db_compact_ex(db, NULL, &co, &e);
    double s = ((double)marble_now_ns() - t0) / 1e9, cpu = cpu_now() - c0;
    char *json = NULL;
    uint64_t bytes = 0, rows = 0;
    if (rc == MARBLE_OK) rc = marble_db_stats_json(db, &json, &e);
    if (rc == MARBLE_OK) bytes = stat_u64(json, "compaction_read_bytes");
    marble_free(json);
    marble_kv_iter *it = NULL;
    if (rc == MARBLE_OK) rc = marble_kv_iter_create(db, NULL, &it, &e);
    if (rc == MARBLE_OK) {
        for (marble_kv_iter_seek_to_first(it); marble_kv_iter_valid(it); marble_kv_iter_next(it))
            rows++;
        rc = marble_kv_iter_status(it, &e);
        marble_kv_iter_destroy(it);
    }
    if (rc != MARBLE_OK) {
        marble_db_close(db, NULL);
        return marble_fail(c, "compact", &e);
    }
    if (marble_db_close(db, &e)) return marble_fail(c, "close", &e);
    out->seconds = s;
    out->cpu = cpu;
    out->bytes = bytes;
    out->rows = rows;
    return 0;
}

/* ---- RocksDB --------------------------------------------------------------------------------- */

#ifdef MARBLE_BENCH_HAVE_ROCKSDB
static rocksdb_options_t *rocks_opts(int subcompactions)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_write_buffer_size(o, WRITE_BUFFER);
    rocksdb_options_set_max_write_buffer_number(o, 3);
    rocksdb_options_set_target_file_size_base(o, (uint64_t)64 << 20);
    rocksdb_options_set_disable_auto_compactions(o, 1);
    rocksdb_options_set_level0_slowdown_writes_trigger(o, 1000);
    rocksdb_options_set_level0_stop_writes_trigger(o, 1000);
    rocksdb_options_set_compression(o, rocksdb_no_compression);
    rocksdb_options_set_bottommost_compression(o, rocksdb_no_compression);
    rocksdb_options_set_max_subcompactions(o, (uint32_t)subcompactions);
    rocksdb_options_set_max_background_jobs(o, 2);
    return o;
}

static int rocks_fail(cb *c, const char *what, char *e)
{
    fprintf(stderr, "marble-bench compact: rocksdb %s: %s\n", what, e ? e : "failed");
    rocksdb_free(e);
    c->failed = 1;
    return -1;
}

static rocksdb_t *rocks_open(cb *c, const char *dir, int subcompactions,
                             rocksdb_block_based_table_options_t **topts, rocksdb_options_t **opts)
{
    *opts = rocks_opts(subcompactions);
    *topts = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_filter_policy(*topts,
                                                  rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_options_set_block_based_table_factory(*opts, *topts);
    char *e = NULL;
    rocksdb_t *db = rocksdb_open(*opts, dir, &e);
    if (!db) rocks_fail(c, "open", e);
    return db;
}

static void rocks_close(rocksdb_t *db, rocksdb_block_based_table_options_t *t, rocksdb_options_t *o)
{
    if (db) rocksdb_close(db);
    rocksdb_options_destroy(o);
    rocksdb_block_based_options_destroy(t);
}

static int rocks_load(cb *c, const char *dir)
{
    rocksdb_options_t *o;
    rocksdb_block_based_table_options_t *t;
    rocksdb_t *db = rocks_open(c, dir, 1, &t, &o);
    if (!db) {
        rocks_close(NULL, t, o);
        return -1;
    }
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    char *e = NULL;
    for (uint64_t i = 0; !e && i < c->rows; i++) {
        char k[KEY_SIZE + 1];
        const char *v;
        row(c, i, k, &v);
        rocksdb_writebatch_put(wb, k, KEY_SIZE, v, VALUE_SIZE);
        if (i % BATCH == BATCH - 1 || i == c->rows - 1) {
            rocksdb_write(db, wo, wb, &e);
            rocksdb_writebatch_clear(wb);
        }
    }
    rocksdb_writebatch_destroy(wb);
    rocksdb_writeoptions_destroy(wo);
    if (!e) {
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        rocksdb_flushoptions_set_wait(fo, 1);
        rocksdb_flush(db, fo, &e);
        rocksdb_flushoptions_destroy(fo);
    }
    rocks_close(db, t, o);
    return e ? rocks_fail(c, "load", e) : 0;
}

static int rocks_run(cb *c, const char *dir, int threads, outcome *out)
{
    rocksdb_options_t *o;
    rocksdb_block_based_table_options_t *t;
    rocksdb_t *db = rocks_open(c, dir, threads, &t, &o);
    if (!db) {
        rocks_close(NULL, t, o);
        return -1;
    }
    char *p = rocksdb_property_value(db, "rocksdb.total-sst-files-size");
    uint64_t bytes = p ? strtoull(p, NULL, 10) : 0;
    rocksdb_free(p);
    double c0 = cpu_now(), t0 = (double)marble_now_ns();
    rocksdb_compact_range(db, NULL, 0, NULL, 0);
    double s = ((double)marble_now_ns() - t0) / 1e9, cpu = cpu_now() - c0;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    uint64_t rows = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it))
        rows++;
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocks_close(db, t, o);
    out->seconds = s;
    out->cpu = cpu;
    out->bytes = bytes;
    out->rows = rows;
    return 0;
}
#endif

/* ---- driver ---------------------------------------------------------------------------------- */

typedef int (*run_fn)(cb *c, const char *dir, int threads, outcome *out);

/* Times `reps` runs per thread count, each on a fresh copy of src, and reports the fastest. */
static void run_engine(cb *c, const char *engine, const char *src, const char *run, run_fn fn)
{
    for (int th = 1; th <= 2; th++) {
        outcome best = {0};
        int ok = 0;
        for (int r = 0; r < c->reps; r++) {
            if (copy_tree(src, run) != 0) {
                fprintf(stderr, "marble-bench compact: copying %s failed\n", src);
                c->failed = 1;
                remove_tree(run);
                return;
            }
            sync(); /* the copy's writeback does not land in the timed run */
            outcome o;
            if (fn(c, run, th, &o) == 0 && (!ok || o.seconds < best.seconds)) {
                best = o;
                ok = 1;
            }
            remove_tree(run);
        }
        if (ok) report(c, engine, th, best.seconds, best.cpu, best.bytes, best.rows);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: marble-bench compact [--json] [--rows N] [--reps R] [--dir DIR]\n"
            "  a full manual compaction of N rows (default 1000000) of 16-byte keys and\n"
            "  100-byte values written in random order (several overlapping L0 files, 16 MiB\n"
            "  write buffer, no compression, bloom 10 bits/key) with 1 and 2 threads, on Marble\n"
            "  (marble_db_compact_ex) and RocksDB (CompactRange, max_subcompactions 1 and 2),\n"
            "  each on a fresh copy of the same pre-compaction state. MB/s: input bytes read by\n"
            "  the compaction (table files merged, 10^6 bytes per MB) / wall seconds.\n"
            "  --reps R   timed runs per row, the fastest reported (default 3)\n"
            "  --dir DIR  where the databases go (default $TMPDIR or /tmp); removed afterwards\n");
}

int bench_compact_area(int argc, char **argv)
{
    cb c;
    memset(&c, 0, sizeof c);
    c.rows = 1000000;
    c.reps = 3;
    const char *base = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            c.json = 1;
        } else if (!strcmp(argv[i], "--rows") && i + 1 < argc) {
            c.rows = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            c.reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            base = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "marble-bench compact: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (c.rows == 0 || c.reps < 1) {
        fprintf(stderr, "marble-bench compact: --rows and --reps must be at least 1\n");
        return 2;
    }
    if (!base) {
        const char *t = getenv("TMPDIR");
        base = t && *t ? t : "/tmp";
    }
    snprintf(c.root, sizeof c.root, "%s/marble-bench-compact-XXXXXX", base);
    if (!mkdtemp(c.root)) {
        fprintf(stderr, "marble-bench compact: cannot make a directory under %s\n", base);
        return 1;
    }
    c.pool = malloc(POOL_BYTES);
    if (!c.pool) return 1;
    uint64_t s = 42;
    for (size_t i = 0; i < POOL_BYTES; i += 64)
        for (size_t k = 0; k < 64 && i + k < POOL_BYTES; k++)
            c.pool[i + k] = k < 32 ? (char)(' ' + splitmix(&s) % 95) : c.pool[i + k - 32];
    if (!c.json) {
        printf("marble-bench compact: %" PRIu64 " rows (16-byte keys in random order, 100-byte "
               "values), %ld CPUs, under %s\n",
               c.rows, sysconf(_SC_NPROCESSORS_ONLN), c.root);
        printf("best of %d runs, each on a fresh copy of the pre-compaction state\n", c.reps);
        printf("%-8s %7s %12s %9s %9s %9s %12s\n", "engine", "threads", "input_bytes", "seconds",
               "cpu_s", "MB/s", "rows_after");
    }
    char src[1200], run[1200];
    snprintf(src, sizeof src, "%s/marble", c.root);
    snprintf(run, sizeof run, "%s/run", c.root);
    if (marble_load(&c, src) == 0) run_engine(&c, "marble", src, run, marble_run);
    remove_tree(src);
#ifdef MARBLE_BENCH_HAVE_ROCKSDB
    snprintf(src, sizeof src, "%s/rocksdb", c.root);
    if (rocks_load(&c, src) == 0) run_engine(&c, "rocksdb", src, run, rocks_run);
    remove_tree(src);
#else
    if (!c.json) printf("(rocksdb not built in: its rows are skipped)\n");
#endif
    remove_tree(c.root);
    free(c.pool);
    return c.failed ? 1 : 0;
}
