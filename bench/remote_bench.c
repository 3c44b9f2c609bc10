/* marble-bench remote: reads through the HTTP and S3 backends (with and without the block cache)
 * beside the same reads from a local file, and a database scan on S3 beside one on local disk.
 * The servers (nginx, s3rver) are started on 127.0.0.1 by bench/remote.sh. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "marble/marble.h"

#define SEQ_CHUNK ((size_t)1 << 20)
#define RAND_SIZE ((size_t)4096)
#define MIB ((double)(1 << 20))

int bench_remote_run(int json, const char *http_url, const char *s3_endpoint, const char *s3_bucket,
                     uint64_t size_mb, uint64_t reads, int threads, int reps, uint64_t db_rows,
                     const char *tmp_parent);

typedef struct target {
    const char *backend; /* "local", "http", "s3" */
    const char *cache;   /* "none", "cold", "warm" */
    char uri[1024];
    marble_vfs *counted;    /* the backend whose requests are counted; NULL: none */
    int counted_s3;         /* counted is an S3 backend */
    marble_block_cache *bc; /* the block cache in front, or NULL */
} target;

typedef struct row {
    const char *workload, *backend, *cache;
    int threads;
    double seconds;
    uint64_t ops, bytes;
    int64_t requests; /* -1: n/a */
    int64_t fetches;  /* block cache fetches, -1: no cache */
    double ratio;     /* < 0: none */
    const char *vs;
    char note[160];
} row;

typedef struct rb {
    int json;
    int failed;
    marble_fs *fs;
    unsigned char *data;
    size_t size;
    uint64_t reads;
    int threads;
    int reps;
    uint64_t db_rows;
    char dir[512];
    const char *bucket;
    char s3_prefix[256]; /* "bucket/marble-bench-remote-PID" */
    marble_vfs *http, *s3;
    marble_block_cache *hcache, *scache;
    uint64_t *offsets;
    /* local baselines, for the ratios */
    double local_seq_mbps, local_rand_ops, local_scan_rows;
} rb;

static double now_s(void)
{
    return (double)marble_now_ns() / 1e9;
}

static int fail(rb *b, const char *what, const marble_error *err)
{
    fprintf(stderr, "marble-bench remote: %s: %s\n", what, err ? err->message : "");
    b->failed = 1;
    return 1;
}

static int64_t requests_of(marble_vfs *v, int is_s3)
{
    if (!v) return -1;
    if (is_s3) {
        marble_s3_stats s;
        if (v->control(v, MARBLE_S3_CTL_GET_STATS, &s) != MARBLE_OK) return -1;
        return (int64_t)s.requests;
    }
    marble_http_stats s;
    if (v->control(v, MARBLE_HTTP_CONTROL_GET_STATS, &s) != MARBLE_OK) return -1;
    return (int64_t)s.requests;
}

static int64_t fetches_of(marble_block_cache *c)
{
    if (!c) return -1;
    marble_block_cache_stats s;
    marble_block_cache_get_stats(c, &s);
    return (int64_t)s.fetches;
}

/* Checks the first and last 8 bytes of a read against the source (cheap, catches wrong
 * offsets and short reads). */
static int check_read(const rb *b, uint64_t off, const unsigned char *buf, size_t n, size_t got)
{
    size_t want = off + n > b->size ? (size_t)(b->size - off) : n;
    if (got != want) return -1;
    size_t k = got < 8 ? got : 8;
    if (memcmp(buf, b->data + off, k) || memcmp(buf + got - k, b->data + off + got - k, k))
        return -1;
    return 0;
}

/* ---- workloads ---------------------------------------------------------------------------------
 */

typedef struct counters {
    int64_t req, fetch;
} counters;

static counters counters_now(const target *t)
{
    counters c = {requests_of(t->counted, t->counted_s3), fetches_of(t->bc)};
    return c;
}

static void row_finish(row *r, const target *t, counters before, double seconds)
{
    counters after = counters_now(t);
    r->seconds = seconds;
    r->requests = before.req >= 0 && after.req >= 0 ? after.req - before.req : -1;
    r->fetches = before.fetch >= 0 ? after.fetch - before.fetch : -1;
}

static int run_seq(rb *b, const target *t, row *r)
{
    marble_error err;
    marble_file *f;
    if (marble_fs_open(b->fs, t->uri, MARBLE_OPEN_READ, &f, &err)) return fail(b, t->uri, &err);
    unsigned char *buf = malloc(SEQ_CHUNK);
    counters c0 = counters_now(t);
    double t0 = now_s();
    int rc = 0;
    for (uint64_t off = 0; off < b->size; off += SEQ_CHUNK) {
        size_t got;
        if (marble_file_read(f, off, buf, SEQ_CHUNK, &got, &err)) {
            rc = fail(b, "sequential read", &err);
            break;
        }
        if (check_read(b, off, buf, SEQ_CHUNK, got)) {
            fprintf(stderr, "marble-bench remote: %s: wrong bytes at %" PRIu64 "\n", t->uri, off);
            rc = b->failed = 1;
            break;
        }
        r->ops++;
        r->bytes += got;
    }
    row_finish(r, t, c0, now_s() - t0);
    free(buf);
    marble_file_close(f, NULL);
    return rc;
}

static int run_rand(rb *b, const target *t, row *r)
{
    marble_error err;
    marble_file *f;
    if (marble_fs_open(b->fs, t->uri, MARBLE_OPEN_READ, &f, &err)) return fail(b, t->uri, &err);
    unsigned char buf[RAND_SIZE];
    counters c0 = counters_now(t);
    double t0 = now_s();
    int rc = 0;
    for (uint64_t i = 0; i < b->reads; i++) {
        size_t got;
        uint64_t off = b->offsets[i];
        if (marble_file_read(f, off, buf, RAND_SIZE, &got, &err)) {
            rc = fail(b, "random read", &err);
            break;
        }
        if (check_read(b, off, buf, RAND_SIZE, got)) {
            fprintf(stderr, "marble-bench remote: %s: wrong bytes at %" PRIu64 "\n", t->uri, off);
            rc = b->failed = 1;
            break;
        }
        r->ops++;
        r->bytes += got;
    }
    row_finish(r, t, c0, now_s() - t0);
    marble_file_close(f, NULL);
    return rc;
}

typedef struct par_arg {
    rb *b;
    const target *t;
    uint64_t from, to;
    marble_file *f;
    pthread_barrier_t *start;
    uint64_t ops, bytes;
    double t0, t1;
    int rc;
    marble_error err;
} par_arg;

static void *par_main(void *p)
{
    par_arg *a = p;
    unsigned char *buf = malloc(SEQ_CHUNK);
    pthread_barrier_wait(a->start);
    a->t0 = now_s();
    for (uint64_t off = a->from; off < a->to && buf; off += SEQ_CHUNK) {
        size_t n = a->to - off < SEQ_CHUNK ? (size_t)(a->to - off) : SEQ_CHUNK;
        size_t got;
        if (marble_file_read(a->f, off, buf, n, &got, &a->err)) {
            a->rc = 1;
            break;
        }
        if (check_read(a->b, off, buf, n, got)) {
            snprintf(a->err.message, sizeof a->err.message, "wrong bytes at %" PRIu64, off);
            a->rc = 1;
            break;
        }
        a->ops++;
        a->bytes += got;
    }
    a->t1 = now_s();
    free(buf);
    return NULL;
}

/* `n` threads, each with its own handle, read disjoint ranges of the file in 1 MiB reads. */
static int run_par(rb *b, const target *t, int n, row *r)
{
    par_arg *a = calloc((size_t)n, sizeof *a);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    uint64_t chunks = (b->size + SEQ_CHUNK - 1) / SEQ_CHUNK;
    int rc = 0, opened = 0;
    marble_error err;
    for (int i = 0; i < n; i++) {
        a[i].b = b;
        a[i].t = t;
        a[i].from = chunks * (uint64_t)i / (uint64_t)n * SEQ_CHUNK;
        a[i].to = chunks * (uint64_t)(i + 1) / (uint64_t)n * SEQ_CHUNK;
        if (a[i].to > b->size) a[i].to = b->size;
        a[i].start = &start;
        if (marble_fs_open(b->fs, t->uri, MARBLE_OPEN_READ, &a[i].f, &err)) {
            rc = fail(b, t->uri, &err);
            break;
        }
        opened++;
    }
    if (!rc) {
        for (int i = 0; i < n; i++)
            pthread_create(&th[i], NULL, par_main, &a[i]);
        counters c0 = counters_now(t);
        pthread_barrier_wait(&start);
        for (int i = 0; i < n; i++)
            pthread_join(th[i], NULL);
        /* Wall time from the first thread's start to the last one's end (each thread takes
         * its own clock: the main thread may be descheduled when the barrier opens). */
        double t0 = a[0].t0, t1 = a[0].t1;
        for (int i = 1; i < n; i++) {
            if (a[i].t0 < t0) t0 = a[i].t0;
            if (a[i].t1 > t1) t1 = a[i].t1;
        }
        row_finish(r, t, c0, t1 - t0);
        for (int i = 0; i < n; i++) {
            if (a[i].rc && !rc) rc = fail(b, "parallel read", &a[i].err);
            r->ops += a[i].ops;
            r->bytes += a[i].bytes;
        }
    }
    for (int i = 0; i < opened; i++)
        marble_file_close(a[i].f, NULL);
    pthread_barrier_destroy(&start);
    free(th);
    free(a);
    return rc;
}

/* ---- output ------------------------------------------------------------------------------------
 */

static double mbps(const row *r)
{
    return r->seconds > 0.0 ? (double)r->bytes / r->seconds / 1e6 : 0.0;
}

static double opsps(const row *r)
{
    return r->seconds > 0.0 ? (double)r->ops / r->seconds : 0.0;
}

static void print_header(const rb *b)
{
    if (b->json) return;
    printf("marble-bench remote: %ld CPUs; a %.1f MiB file; servers on 127.0.0.1; local file in "
           "%s (page cache warm)\n",
           sysconf(_SC_NPROCESSORS_ONLN), (double)b->size / MIB, b->dir);
    printf("seqread: the whole file in 1 MiB reads; randread: %" PRIu64
           " random 4 KiB-aligned 4 KiB reads; parallel: N threads, own handles, disjoint "
           "ranges in 1 MiB reads\n",
           b->reads);
    printf("cache: none = the backend itself; cold = through the block cache (1 MiB blocks) "
           "right after invalidating the file; warm = the same reads again; best of %d runs "
           "per row\n",
           b->reps);
    printf("dbscan: %" PRIu64 " KV rows (16 B keys, 100 B values) loaded, flushed, compacted, "
           "closed; seconds = reopen + full KV-iterator scan, once (cold: first open through "
           "the cache)\n",
           b->db_rows);
    printf("req/op: backend requests per read (seqread: per MiB); dbscan ops are rows; ratio: "
           "MB/s (randread, dbscan: ops/s) over the `vs` row's\n\n");
    printf("%-9s %-6s %-5s %3s %9s %9s %11s %8s %7s %7s %-9s %s\n", "workload", "backend", "cache",
           "thr", "seconds", "MB/s", "ops/s", "requests", "req/op", "ratio", "vs", "note");
    fflush(stdout);
}

static void print_row(const rb *b, const row *r)
{
    double rpo = r->requests >= 0 && r->ops ? (double)r->requests / (double)r->ops : -1.0;
    if (b->json) {
        printf("{\"area\":\"remote\",\"workload\":\"%s\",\"backend\":\"%s\",\"cache\":\"%s\","
               "\"threads\":%d,\"seconds\":%.9g,\"ops\":%" PRIu64 ",\"bytes\":%" PRIu64
               ",\"ops_per_sec\":%.6g,\"mb_per_sec\":%.6g,",
               r->workload, r->backend, r->cache, r->threads, r->seconds, r->ops, r->bytes,
               opsps(r), mbps(r));
        if (r->requests >= 0)
            printf("\"requests\":%" PRId64 ",\"requests_per_op\":%.6g,\"requests_per_mib\":%.6g,",
                   r->requests, rpo,
                   r->bytes ? (double)r->requests / ((double)r->bytes / MIB) : 0.0);
        else
            printf("\"requests\":null,\"requests_per_op\":null,\"requests_per_mib\":null,");
        if (r->fetches >= 0)
            printf("\"cache_fetches\":%" PRId64 ",", r->fetches);
        else
            printf("\"cache_fetches\":null,");
        if (r->ratio >= 0.0)
            printf("\"ratio\":%.6g,\"vs\":\"%s\",", r->ratio, r->vs);
        else
            printf("\"ratio\":null,\"vs\":null,");
        printf("\"note\":\"%s\"}\n", r->note);
    } else {
        char req[32] = "-", rp[32] = "-", ratio[32] = "-";
        if (r->requests >= 0) {
            snprintf(req, sizeof req, "%" PRId64, r->requests);
            snprintf(rp, sizeof rp, "%.3g", rpo);
        }
        if (r->ratio >= 0.0) snprintf(ratio, sizeof ratio, "%.3f", r->ratio);
        printf("%-9s %-6s %-5s %3d %9.4f %9.1f %11.0f %8s %7s %7s %-9s %s\n", r->workload,
               r->backend, r->cache, r->threads, r->seconds, mbps(r), opsps(r), req, rp, ratio,
               r->ratio >= 0.0 ? r->vs : "-", r->note);
    }
    fflush(stdout);
}

static void row_init(row *r, const char *workload, const target *t, int threads)
{
    memset(r, 0, sizeof *r);
    r->workload = workload;
    r->backend = t->backend;
    r->cache = t->cache;
    r->threads = threads;
    r->ratio = -1.0;
    r->requests = -1;
    r->fetches = -1;
}

static void add_fetch_note(row *r)
{
    if (r->fetches >= 0)
        snprintf(r->note, sizeof r->note, "block cache fetches %" PRId64, r->fetches);
}

/* ---- one backend: seqread, randread (each without and with the cache), parallel ----------------
 */

enum { W_SEQ, W_RAND, W_PAR };

/* Best (least seconds) of b->reps runs; a cold row invalidates the file's blocks before each. */
static int measure(rb *b, int w, const target *t, int nthreads, row *best)
{
    const char *name = w == W_SEQ ? "seqread" : w == W_RAND ? "randread" : "parallel";
    for (int rep = 0; rep < b->reps; rep++) {
        row r;
        row_init(&r, name, t, nthreads);
        if (t->bc && !strcmp(t->cache, "cold")) marble_block_cache_invalidate(t->bc, t->uri);
        int rc = w == W_SEQ    ? run_seq(b, t, &r)
                 : w == W_RAND ? run_rand(b, t, &r)
                               : run_par(b, t, nthreads, &r);
        if (rc) return rc;
        if (rep == 0 || r.seconds < best->seconds) *best = r;
    }
    return 0;
}

static void bench_backend(rb *b, const char *backend, const char *uri, const char *cached_uri,
                          marble_vfs *counted, int counted_s3, marble_block_cache *bc)
{
    int is_local = !strcmp(backend, "local");
    target plain = {backend, "none", "", counted, counted_s3, NULL};
    snprintf(plain.uri, sizeof plain.uri, "%s", uri);
    target cached[2] = {{backend, "cold", "", counted, counted_s3, bc},
                        {backend, "warm", "", counted, counted_s3, bc}};
    for (int k = 0; k < 2 && cached_uri; k++)
        snprintf(cached[k].uri, sizeof cached[k].uri, "%s", cached_uri);

    for (int w = 0; w < 2; w++) {
        row r;
        if (measure(b, w, &plain, 1, &r) == 0) {
            if (is_local) {
                if (w == 0)
                    b->local_seq_mbps = mbps(&r);
                else
                    b->local_rand_ops = opsps(&r);
            } else {
                double base = w == 0 ? b->local_seq_mbps : b->local_rand_ops;
                if (base > 0.0) {
                    r.ratio = (w == 0 ? mbps(&r) : opsps(&r)) / base;
                    r.vs = "local";
                }
            }
            print_row(b, &r);
        }
        if (!cached_uri) continue;
        for (int k = 0; k < 2; k++) {
            if (measure(b, w, &cached[k], 1, &r)) continue;
            double base = w == 0 ? b->local_seq_mbps : b->local_rand_ops;
            if (base > 0.0) {
                r.ratio = (w == 0 ? mbps(&r) : opsps(&r)) / base;
                r.vs = "local";
            }
            add_fetch_note(&r);
            print_row(b, &r);
        }
    }

    double one = 0.0;
    int counts[2] = {1, b->threads};
    for (int k = 0; k < (b->threads > 1 ? 2 : 1); k++) {
        row r;
        if (measure(b, W_PAR, &plain, counts[k], &r)) continue;
        if (k == 0) {
            one = mbps(&r);
        } else if (one > 0.0) {
            r.ratio = mbps(&r) / one;
            r.vs = "1 thread";
        }
        print_row(b, &r);
    }
}

/* ---- database scan -----------------------------------------------------------------------------
 */

#define KEY_LEN 16
#define VALUE_LEN 100

static void make_kv(uint64_t i, char *key, unsigned char *value)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%016" PRIu64, i);
    memcpy(key, tmp, KEY_LEN);
    uint64_t h = marble_hash64(&i, sizeof i, 42);
    for (int k = 0; k < VALUE_LEN; k++) {
        value[k] = k < VALUE_LEN / 2 ? (unsigned char)(h >> ((k % 8) * 8)) : (unsigned char)'v';
        if (k % 8 == 7) h = h * 6364136223846793005ull + 1442695040888963407ull;
    }
}

static void db_opts(rb *b, marble_db_options *o, const char *wal)
{
    marble_db_options_init(o);
    o->fs = b->fs;
    o->sync = MARBLE_SYNC_NONE;
    o->wal_uri = wal;
}

static int db_load(rb *b, const char *uri, const char *wal)
{
    marble_error err;
    marble_db_options o;
    db_opts(b, &o, wal);
    o.create_if_missing = 1;
    o.error_if_exists = 1;
    marble_db *db;
    if (marble_db_open(uri, &o, &db, &err)) return fail(b, uri, &err);
    marble_write_batch *wb;
    if (marble_write_batch_create(db, &wb, &err)) {
        marble_db_close(db, NULL);
        return fail(b, "write batch", &err);
    }
    int rc = 0;
    char key[KEY_LEN];
    unsigned char value[VALUE_LEN];
    for (uint64_t i = 0; i < b->db_rows && !rc; i++) {
        make_kv(i, key, value);
        if (marble_write_batch_kv_put(wb, key, KEY_LEN, value, VALUE_LEN, &err))
            rc = fail(b, "kv put", &err);
        if (!rc && (marble_write_batch_count(wb) == 1000 || i + 1 == b->db_rows)) {
            if (marble_db_write(db, wb, NULL, &err)) rc = fail(b, "write", &err);
            marble_write_batch_clear(wb);
        }
    }
    marble_write_batch_destroy(wb);
    if (!rc && marble_db_flush(db, &err)) rc = fail(b, "flush", &err);
    if (!rc && marble_db_compact(db, NULL, &err)) rc = fail(b, "compact", &err);
    if (marble_db_close(db, &err) && !rc) rc = fail(b, "close", &err);
    return rc;
}

/* Reopens the database and scans every row with a KV iterator; both are timed (*open_s: the
 * open alone). */
static int db_scan(rb *b, const target *t, const char *wal, row *r, double *open_s)
{
    marble_error err;
    marble_db_options o;
    db_opts(b, &o, wal);
    counters c0 = counters_now(t);
    double t0 = now_s();
    marble_db *db;
    if (marble_db_open(t->uri, &o, &db, &err)) return fail(b, t->uri, &err);
    double t1 = now_s();
    marble_kv_iter *it;
    if (marble_kv_iter_create(db, NULL, &it, &err)) {
        marble_db_close(db, NULL);
        return fail(b, "iterator", &err);
    }
    uint64_t n = 0, bytes = 0;
    for (marble_kv_iter_seek_to_first(it); marble_kv_iter_valid(it); marble_kv_iter_next(it)) {
        size_t kl, vl;
        marble_kv_iter_key(it, &kl);
        marble_kv_iter_value(it, &vl);
        n++;
        bytes += kl + vl;
    }
    int rc = 0;
    if (marble_kv_iter_status(it, &err)) rc = fail(b, "scan", &err);
    double t2 = now_s();
    marble_kv_iter_destroy(it);
    row_finish(r, t, c0, t2 - t0); /* reopen + scan: on S3 the open reads too */
    if (marble_db_close(db, &err) && !rc) rc = fail(b, "close", &err);
    if (!rc && n != b->db_rows) {
        fprintf(stderr, "marble-bench remote: %s: scanned %" PRIu64 " rows, expected %" PRIu64 "\n",
                t->uri, n, b->db_rows);
        rc = b->failed = 1;
    }
    r->ops = n;
    r->bytes = bytes;
    *open_s = t1 - t0;
    return rc;
}

static void bench_db(rb *b)
{
    char local_db[700], local_wal[700], s3_db[700], cs3_db[700], s3_wal[700];
    snprintf(local_db, sizeof local_db, "%s/db-local", b->dir);
    snprintf(local_wal, sizeof local_wal, "%s/db-local-wal", b->dir);
    snprintf(s3_wal, sizeof s3_wal, "%s/db-s3-wal", b->dir);
    snprintf(s3_db, sizeof s3_db, "s3://%s/db", b->s3_prefix);
    snprintf(cs3_db, sizeof cs3_db, "cs3://%s/db", b->s3_prefix);

    double t0 = now_s();
    if (db_load(b, local_db, local_wal)) return;
    double load_local = now_s() - t0;
    target tl = {"local", "none", "", NULL, 0, NULL};
    snprintf(tl.uri, sizeof tl.uri, "%s", local_db);
    row r;
    double open_s;
    row_init(&r, "dbscan", &tl, 1);
    if (db_scan(b, &tl, local_wal, &r, &open_s)) return;
    b->local_scan_rows = opsps(&r);
    snprintf(r.note, sizeof r.note, "load+flush+compact %.2f s, open %.3f s", load_local, open_s);
    print_row(b, &r);
    if (!b->s3) return;

    t0 = now_s();
    if (db_load(b, s3_db, s3_wal)) return;
    double load_s3 = now_s() - t0;
    target ts[3] = {{"s3", "none", "", b->s3, 1, NULL},
                    {"s3", "cold", "", b->s3, 1, b->scache},
                    {"s3", "warm", "", b->s3, 1, b->scache}};
    snprintf(ts[0].uri, sizeof ts[0].uri, "%s", s3_db);
    snprintf(ts[1].uri, sizeof ts[1].uri, "%s", cs3_db);
    snprintf(ts[2].uri, sizeof ts[2].uri, "%s", cs3_db);
    for (int k = 0; k < 3; k++) {
        row_init(&r, "dbscan", &ts[k], 1);
        if (db_scan(b, &ts[k], s3_wal, &r, &open_s)) continue;
        if (b->local_scan_rows > 0.0) {
            r.ratio = opsps(&r) / b->local_scan_rows;
            r.vs = "local";
        }
        if (k == 0)
            snprintf(r.note, sizeof r.note, "load+flush+compact %.2f s, open %.3f s", load_s3,
                     open_s);
        else
            snprintf(r.note, sizeof r.note, "open %.3f s, block cache fetches %" PRId64, open_s,
                     r.fetches);
        print_row(b, &r);
    }
}

/* ---- setup -------------------------------------------------------------------------------------
 */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

int bench_remote_run(int json, const char *http_url, const char *s3_endpoint, const char *s3_bucket,
                     uint64_t size_mb, uint64_t reads, int threads, int reps, uint64_t db_rows,
                     const char *tmp_parent)
{
    rb b;
    memset(&b, 0, sizeof b);
    b.json = json;
    b.reads = reads;
    b.threads = threads;
    b.reps = reps;
    b.db_rows = db_rows;
    b.bucket = s3_bucket;
    marble_error err;
    snprintf(b.dir, sizeof b.dir, "%s/marble-bench-remote-XXXXXX", tmp_parent);
    if (!mkdtemp(b.dir)) {
        perror("marble-bench remote: mkdtemp");
        return 1;
    }
    char local_uri[700], http_uri[1024] = "", chttp_uri[1024] = "", s3_uri[700] = "",
                         cs3_uri[700] = "";
    snprintf(local_uri, sizeof local_uri, "%s/data.bin", b.dir);
    if (marble_fs_create(&b.fs, &err)) {
        fail(&b, "fs", &err);
        goto out;
    }

    /* The bytes: the HTTP file's when given (so every backend serves the same file), else
     * size_mb random bytes. */
    if (http_url) {
        void *d;
        size_t n;
        if (strncmp(http_url, "http://", 7)) {
            fprintf(stderr, "marble-bench remote: --http wants an http:// URL, not '%s'\n",
                    http_url);
            b.failed = 1;
            goto out;
        }
        if (marble_fs_read_all(b.fs, http_url, &d, &n, &err)) {
            fail(&b, http_url, &err);
            goto out;
        }
        b.data = d;
        b.size = n;
        snprintf(http_uri, sizeof http_uri, "%s", http_url);
        snprintf(chttp_uri, sizeof chttp_uri, "c%s", http_url);
        b.http = marble_fs_backend(b.fs, "http");
    } else {
        b.size = (size_t)size_mb << 20;
        b.data = malloc(b.size ? b.size : 1);
        uint64_t s = 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i + 8 <= b.size; i += 8) {
            uint64_t x = xorshift(&s);
            memcpy(b.data + i, &x, 8);
        }
    }
    if (b.size < RAND_SIZE) {
        fprintf(stderr, "marble-bench remote: the file is too small (%zu bytes)\n", b.size);
        b.failed = 1;
        goto out;
    }
    if (marble_fs_write_all(b.fs, local_uri, b.data, b.size, 0, &err)) {
        fail(&b, local_uri, &err);
        goto out;
    }
    b.offsets = malloc((size_t)(reads ? reads : 1) * sizeof *b.offsets);
    uint64_t seed = 0x2545f4914f6cdd1dull;
    for (uint64_t i = 0; i < reads; i++)
        b.offsets[i] = xorshift(&seed) % (b.size / RAND_SIZE) * RAND_SIZE;

    size_t cap = (size_t)256 << 20;
    if (b.size + ((size_t)2 << 20) > cap) cap = b.size + ((size_t)2 << 20);
    if (b.http) {
        marble_vfs *w;
        if (marble_block_cache_create(0, cap, &b.hcache, &err) ||
            marble_vfs_cache_create(b.http, b.hcache, &w, &err) ||
            marble_fs_register(b.fs, "chttp", w, &err)) {
            fail(&b, "block cache over http", &err);
            goto out;
        }
    }
    if (s3_endpoint) {
        marble_s3_options so;
        marble_s3_options_init(&so);
        so.endpoint = s3_endpoint;
        if (!so.access_key_id) so.access_key_id = "S3RVER"; /* s3rver's fixed credentials */
        if (!so.secret_access_key) so.secret_access_key = "S3RVER";
        marble_vfs *v, *w;
        if (marble_vfs_s3_create(&so, &v, &err) || marble_fs_register(b.fs, "s3", v, &err)) {
            fail(&b, "s3 backend", &err);
            goto out;
        }
        b.s3 = v;
        snprintf(b.s3_prefix, sizeof b.s3_prefix, "%s/marble-bench-remote-%ld", s3_bucket,
                 (long)getpid());
        char dir[400];
        snprintf(dir, sizeof dir, "s3://%s", b.s3_prefix);
        snprintf(s3_uri, sizeof s3_uri, "s3://%s/data.bin", b.s3_prefix);
        snprintf(cs3_uri, sizeof cs3_uri, "cs3://%s/data.bin", b.s3_prefix);
        double t0 = now_s();
        if (marble_fs_mkdir(b.fs, dir, 1, &err) ||
            marble_fs_write_all(b.fs, s3_uri, b.data, b.size, 0, &err)) {
            fail(&b, s3_uri, &err);
            b.s3 = NULL;
            goto out;
        }
        double up = now_s() - t0;
        if (!json)
            printf("(uploaded the %.1f MiB file to %s in %.2f s: %.1f MB/s)\n",
                   (double)b.size / MIB, s3_uri, up, (double)b.size / up / 1e6);
        if (marble_block_cache_create(0, cap, &b.scache, &err) ||
            marble_vfs_cache_create(v, b.scache, &w, &err) ||
            marble_fs_register(b.fs, "cs3", w, &err)) {
            fail(&b, "block cache over s3", &err);
            goto out;
        }
    }

    print_header(&b);
    bench_backend(&b, "local", local_uri, NULL, NULL, 0, NULL);
    if (b.http) bench_backend(&b, "http", http_uri, chttp_uri, b.http, 0, b.hcache);
    if (b.s3) bench_backend(&b, "s3", s3_uri, cs3_uri, b.s3, 1, b.scache);
    if (db_rows) bench_db(&b);

out:
    if (b.s3 && b.s3_prefix[0]) {
        int r = b.s3->control(b.s3, MARBLE_S3_CTL_DELETE_PREFIX, b.s3_prefix);
        if (r != MARBLE_OK)
            fprintf(stderr, "marble-bench remote: removing s3://%s failed (%s)\n", b.s3_prefix,
                    marble_status_name(r));
    }
    if (b.fs && marble_fs_destroy(b.fs, &err)) fail(&b, "fs destroy", &err);
    marble_block_cache_destroy(b.hcache);
    marble_block_cache_destroy(b.scache);
    nftw(b.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(b.offsets);
    free(b.data);
    return b.failed;
}
