/* marble-bench query: four SELECTs over one table (bench/bench_query.h) on Marble, through
 * marble_db_query_sql, side by side with DuckDB (bench/peers/duckdb/query.mjs, run with node),
 * best of R warm runs each; both engines' results are checked against checksums computed here
 * from the data's formula, so the two are seen to compute the same answers. Also the table
 * helpers marble-bench interrupt shares (bench_query.h). */
#include "bench_query.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <time.h>

#include "marble/query.h"

#ifndef MARBLE_BENCH_SOURCE_DIR
#define MARBLE_BENCH_SOURCE_DIR "bench"
#endif

enum { Q_SUM, Q_COUNT_WHERE, Q_GROUP_BY, Q_POINT, Q_COUNT };
static const char *const q_names[Q_COUNT] = {"sum", "count_where", "group_by", "point_lookups"};
static const char *const q_sql[Q_COUNT] = {
    "SELECT sum(v) FROM t", "SELECT count(*) FROM t WHERE v > 0.9",
    "SELECT k, sum(v), count(*) FROM t WHERE id % 7 = 3 GROUP BY k",
    "SELECT * FROM t WHERE id = ?"};

typedef struct q_result {
    int ran;
    double seconds;
    uint64_t checksum;
    int64_t result_rows;
} q_result;

typedef struct engine_run {
    int ran;
    double load_seconds, compact_seconds;
    int threads;
    q_result q[Q_COUNT];
    int64_t rows_scanned[Q_COUNT];
    int64_t point_gets;
} engine_run;

typedef struct options {
    int json;
    int64_t rows;
    int reps;
    int64_t lookups;
    int64_t batch_rows;
    const char *dir;
    int marble_on, duckdb_on;
    int ingest; /* load with marble_db_ingest, else marble_db_put */
    int q_on[Q_COUNT];
} options;

double bq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

size_t bq_s(int64_t id, char *buf)
{
    return (size_t)snprintf(buf, 8, "u%d", (int)(id % 9973));
}

static uint64_t strsum(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += (uint64_t)(i + 1) * b[i];
    return t;
}

static int64_t lookup_id(int64_t j, int64_t rows)
{
    return (int64_t)(((uint64_t)j * (uint64_t)BQ_LOOKUP_MUL + (uint64_t)BQ_LOOKUP_ADD) %
                     (uint64_t)rows);
}

static uint64_t row_checksum(int64_t id, int64_t k, uint64_t vs, uint64_t ss)
{
    return (uint64_t)id + 3u * (uint64_t)k + 7u * vs + 11u * ss;
}

/* ---- the table ------------------------------------------------------------------------------ */

static const marble_field_spec t_fields[] = {
    {"id", "l", 0}, {"k", "l", 0}, {"v", "g", 0}, {"s", "u", 0}};

/* A batch of t: buffers owned here, arrays that point at them. Reused by the put path (arrays
 * with no-op releases); handed out by the ingest stream (heap-allocated, refs: the top array
 * and each child hold one, so a child moved out of the batch keeps the buffers alive). */
typedef struct load_batch {
    atomic_int refs;
    int64_t cap;
    int64_t *id, *k;
    double *v;
    int32_t *off;
    char *data;
    const void *bufs[4][3];
    struct ArrowArray kids[4];
    struct ArrowArray *kidp[4];
    const void *top_bufs[1];
    struct ArrowArray top;
} load_batch;

static void no_release(struct ArrowArray *a)
{
    a->release = NULL;
}

static int load_batch_init(load_batch *b, int64_t cap)
{
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->id = malloc((size_t)cap * sizeof(int64_t));
    b->k = malloc((size_t)cap * sizeof(int64_t));
    b->v = malloc((size_t)cap * sizeof(double));
    b->off = malloc((size_t)(cap + 1) * sizeof(int32_t));
    b->data = malloc((size_t)cap * 8);
    return b->id && b->k && b->v && b->off && b->data ? 0 : -1;
}

static void load_batch_free(load_batch *b)
{
    free(b->id);
    free(b->k);
    free(b->v);
    free(b->off);
    free(b->data);
}

static void owned_unref(load_batch *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        load_batch_free(b);
        free(b);
    }
}

static void owned_child_release(struct ArrowArray *a)
{
    owned_unref(a->private_data);
    a->release = NULL;
}

static void owned_release(struct ArrowArray *a)
{
    load_batch *b = a->private_data;
    for (int c = 0; c < 4; c++)
        if (b->kids[c].release) b->kids[c].release(&b->kids[c]);
    a->release = NULL;
    owned_unref(b);
}

static struct ArrowArray *load_batch_fill(load_batch *b, int64_t first, int64_t stride, int64_t n)
{
    b->off[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t id = first + i * stride;
        b->id[i] = id;
        b->k[i] = id % 1000;
        b->v[i] = bq_v(id);
        b->off[i + 1] = b->off[i] + (int32_t)bq_s(id, b->data + b->off[i]);
    }
    const void *cols[3] = {b->id, b->k, b->v};
    for (int c = 0; c < 4; c++) {
        b->bufs[c][0] = NULL;
        if (c < 3) {
            b->bufs[c][1] = cols[c];
        } else {
            b->bufs[c][1] = b->off;
            b->bufs[c][2] = b->data;
        }
        b->kids[c] = (struct ArrowArray){
            .length = n, .n_buffers = c < 3 ? 2 : 3, .buffers = b->bufs[c], .release = no_release};
        b->kidp[c] = &b->kids[c];
    }
    b->top_bufs[0] = NULL;
    b->top = (struct ArrowArray){.length = n,
                                 .n_buffers = 1,
                                 .n_children = 4,
                                 .buffers = b->top_bufs,
                                 .children = b->kidp,
                                 .release = no_release};
    return &b->top;
}

/* A new batch of rows first, first + 1, ... (n of them) moved into *out. */
static int owned_batch(int64_t first, int64_t n, struct ArrowArray *out)
{
    load_batch *b = malloc(sizeof *b);
    if (!b) return -1;
    if (load_batch_init(b, n)) {
        load_batch_free(b);
        free(b);
        return -1;
    }
    load_batch_fill(b, first, 1, n);
    atomic_init(&b->refs, 5);
    for (int c = 0; c < 4; c++) {
        b->kids[c].private_data = b;
        b->kids[c].release = owned_child_release;
    }
    *out = b->top;
    out->private_data = b;
    out->release = owned_release;
    return 0;
}

/* A stream over batches built beforehand (so that their building is not timed). */
typedef struct prebuilt {
    struct ArrowArray *batches;
    size_t n, next;
} prebuilt;

static int prebuilt_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    (void)st;
    return marble_arrow_schema_make(out, t_fields, 4, NULL, NULL, 0, NULL) ? ENOMEM : 0;
}

static int prebuilt_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    prebuilt *p = st->private_data;
    if (p->next == p->n) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    marble_arrow_array_move(&p->batches[p->next++], out);
    return 0;
}

static const char *prebuilt_error(struct ArrowArrayStream *st)
{
    (void)st;
    return NULL;
}

static void prebuilt_release(struct ArrowArrayStream *st)
{
    prebuilt *p = st->private_data;
    for (size_t i = p->next; i < p->n; i++)
        marble_arrow_array_release(&p->batches[i]);
    free(p->batches);
    free(p);
    st->release = NULL;
}

int bq_ingest(marble_db *db, int64_t rows, int64_t batch_rows, double *seconds, char *err,
              size_t errlen)
{
    struct ArrowSchema schema;
    marble_error e;
    const char *keys[] = {"id"};
    if (marble_arrow_schema_make(&schema, t_fields, 4, NULL, NULL, 0, &e))
        return errf(err, errlen, "schema: %s", e.message);
    int crc = marble_db_create_table(db, "t", &schema, keys, 1, &e);
    marble_arrow_schema_release(&schema);
    if (crc) return errf(err, errlen, "marble_db_create_table t: %s", e.message);
    prebuilt *p = calloc(1, sizeof *p);
    size_t nb = (size_t)((rows + batch_rows - 1) / batch_rows);
    if (!p || !(p->batches = calloc(nb ? nb : 1, sizeof *p->batches))) {
        free(p);
        return errf(err, errlen, "out of memory");
    }
    struct ArrowArrayStream st = {.get_schema = prebuilt_schema,
                                  .get_next = prebuilt_next,
                                  .get_last_error = prebuilt_error,
                                  .release = prebuilt_release,
                                  .private_data = p};
    for (int64_t first = 0; first < rows; first += batch_rows) {
        int64_t n = rows - first < batch_rows ? rows - first : batch_rows;
        if (owned_batch(first, n, &p->batches[p->n])) {
            st.release(&st);
            return errf(err, errlen, "out of memory");
        }
        p->n++;
    }
    marble_ingest_options io;
    marble_ingest_options_init(&io);
    io.assume_sorted = 1;
    marble_ingest_stats stats;
    double t0 = bq_now();
    int rc = marble_db_ingest(db, "t", &st, &io, &stats, &e);
    if (seconds) *seconds = bq_now() - t0;
    if (rc) return errf(err, errlen, "marble_db_ingest: %s", e.message);
    return 0;
}

int bq_open(const char *dir, int auto_compaction, marble_db **out, char *err, size_t errlen)
{
    marble_db_options o;
    marble_db_options_init(&o);
    o.create_if_missing = 1;
    o.sync = MARBLE_SYNC_NONE;
    o.disable_auto_compaction = !auto_compaction;
    marble_error e;
    if (marble_db_open(dir, &o, out, &e))
        return errf(err, errlen, "marble_db_open %s: %s", dir, e.message);
    return 0;
}

int bq_load(marble_db *db, int64_t rows, int64_t batch_rows, double *put_seconds, char *err,
            size_t errlen)
{
    struct ArrowSchema schema;
    marble_error e;
    const char *keys[] = {"id"};
    load_batch b;
    int rc = -1;
    double secs = 0.0;
    if (marble_arrow_schema_make(&schema, t_fields, 4, NULL, NULL, 0, &e))
        return errf(err, errlen, "schema: %s", e.message);
    if (load_batch_init(&b, batch_rows)) {
        errf(err, errlen, "out of memory for a batch of %" PRId64 " rows", batch_rows);
        goto cleanup;
    }
    if (marble_db_create_table(db, "t", &schema, keys, 1, &e)) {
        errf(err, errlen, "marble_db_create_table t: %s", e.message);
        goto cleanup;
    }
    for (int64_t first = 0; first < rows; first += batch_rows) {
        int64_t n = rows - first < batch_rows ? rows - first : batch_rows;
        struct ArrowArray *a = load_batch_fill(&b, first, 1, n);
        double t0 = bq_now();
        int prc = marble_db_put(db, "t", &schema, a, NULL, &e);
        secs += bq_now() - t0;
        if (prc) {
            errf(err, errlen, "marble_db_put rows %" PRId64 "..: %s", first, e.message);
            goto cleanup;
        }
    }
    double t0 = bq_now();
    if (marble_db_flush(db, &e)) {
        errf(err, errlen, "marble_db_flush: %s", e.message);
        goto cleanup;
    }
    secs += bq_now() - t0;
    if (put_seconds) *put_seconds = secs;
    rc = 0;
cleanup:
    load_batch_free(&b);
    marble_arrow_schema_release(&schema);
    return rc;
}

int bq_rewrite(marble_db *db, int64_t rows, int64_t stride, char *err, size_t errlen)
{
    struct ArrowSchema schema;
    marble_error e;
    load_batch b;
    int rc = -1;
    const int64_t batch_rows = 65536;
    if (marble_arrow_schema_make(&schema, t_fields, 4, NULL, NULL, 0, &e))
        return errf(err, errlen, "schema: %s", e.message);
    if (load_batch_init(&b, batch_rows)) {
        errf(err, errlen, "out of memory for a batch of %" PRId64 " rows", batch_rows);
        goto cleanup;
    }
    int64_t total = (rows + stride - 1) / stride;
    for (int64_t done = 0; done < total; done += batch_rows) {
        int64_t n = total - done < batch_rows ? total - done : batch_rows;
        struct ArrowArray *a = load_batch_fill(&b, done * stride, stride, n);
        if (marble_db_put(db, "t", &schema, a, NULL, &e)) {
            errf(err, errlen, "marble_db_put: %s", e.message);
            goto cleanup;
        }
    }
    if (marble_db_flush(db, &e)) {
        errf(err, errlen, "marble_db_flush: %s", e.message);
        goto cleanup;
    }
    rc = 0;
cleanup:
    load_batch_free(&b);
    marble_arrow_schema_release(&schema);
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

int bq_mkdtemp(const char *parent, const char *tag, char *path, size_t cap)
{
    snprintf(path, cap, "%s/marble-bench-%s-XXXXXX", parent, tag);
    if (!mkdtemp(path)) {
        fprintf(stderr, "marble-bench %s: mkdtemp %s: %s\n", tag, path, strerror(errno));
        return -1;
    }
    return 0;
}

void bq_rmtree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int bq_check_row(marble_db *db, int64_t id, char *err, size_t errlen)
{
    marble_value kv = {.kind = MARBLE_VALUE_INT, .i = id};
    marble_key key = {&kv, 1};
    struct ArrowSchema s = {0};
    struct ArrowArray a = {0};
    marble_error e;
    int rc = marble_db_get(db, "t", key, NULL, &s, &a, &e);
    if (rc) return errf(err, errlen, "marble_db_get id %" PRId64 ": %s", id, e.message);
    rc = -1;
    if (a.length != 1 || a.n_children != 4 || s.n_children != 4) {
        errf(err, errlen, "marble_db_get id %" PRId64 ": %" PRId64 " rows of %" PRId64 " columns",
             id, a.length, a.n_children);
        goto done;
    }
    char want_s[8];
    size_t want_n = bq_s(id, want_s);
    const void *got_s;
    size_t got_n = 0;
    int64_t got_id = marble_arrow_get_int(s.children[0], a.children[0], 0);
    int64_t got_k = marble_arrow_get_int(s.children[1], a.children[1], 0);
    double got_v = marble_arrow_get_double(s.children[2], a.children[2], 0);
    if (marble_arrow_get_bytes(s.children[3], a.children[3], 0, &got_s, &got_n) || got_id != id ||
        got_k != id % 1000 || got_v != bq_v(id) || got_n != want_n ||
        memcmp(got_s, want_s, want_n)) {
        errf(err, errlen,
             "row id %" PRId64 " reads back wrong (id %" PRId64 ", k %" PRId64 ", v %.17g)", id,
             got_id, got_k, got_v);
        goto done;
    }
    rc = 0;
done:
    marble_arrow_array_release(&a);
    marble_arrow_schema_release(&s);
    return rc;
}

/* ---- expected answers ----------------------------------------------------------------------- */

static void expected(const options *o, uint64_t want[Q_COUNT], int64_t want_rows[Q_COUNT])
{
    uint64_t sum = 0, cnt = 0;
    uint64_t *gsum = calloc(1000, sizeof(uint64_t)), *gcnt = calloc(1000, sizeof(uint64_t));
    for (int64_t id = 0; id < o->rows; id++) {
        uint64_t vs = (uint64_t)bq_vs(id);
        sum += vs;
        if (bq_v(id) > 0.9) cnt++;
        if (id % 7 == 3 && gsum && gcnt) {
            gsum[id % 1000] += vs;
            gcnt[id % 1000]++;
        }
    }
    uint64_t g = 0;
    int64_t groups = 0;
    for (int k = 0; k < 1000 && gsum && gcnt; k++)
        if (gcnt[k]) {
            g += (uint64_t)(k + 1) * (31u * gsum[k] + gcnt[k]);
            groups++;
        }
    free(gsum);
    free(gcnt);
    uint64_t p = 0;
    for (int64_t j = 0; j < o->lookups; j++) {
        int64_t id = lookup_id(j, o->rows);
        char s[8];
        size_t n = bq_s(id, s);
        p += row_checksum(id, id % 1000, (uint64_t)bq_vs(id), strsum(s, n));
    }
    want[Q_SUM] = sum;
    want[Q_COUNT_WHERE] = cnt;
    want[Q_GROUP_BY] = g;
    want[Q_POINT] = p;
    want_rows[Q_SUM] = want_rows[Q_COUNT_WHERE] = 1;
    want_rows[Q_GROUP_BY] = groups;
    want_rows[Q_POINT] = o->lookups;
}

/* ---- Marble --------------------------------------------------------------------------------- */

typedef struct visit {
    int q;
    uint64_t checksum;
    int64_t rows;
    char *err;
    size_t errlen;
} visit;

static int col_index(const struct ArrowSchema *s, const char *name)
{
    for (int64_t c = 0; c < s->n_children; c++)
        if (s->children[c]->name && !strcmp(s->children[c]->name, name)) return (int)c;
    return -1;
}

static uint64_t scaled(double d)
{
    return (uint64_t)(d * BQ_VSCALE);
}

static int visit_batch(visit *vz, const struct ArrowSchema *s, const struct ArrowArray *a)
{
    int64_t want_cols = vz->q == Q_SUM || vz->q == Q_COUNT_WHERE ? 1 : vz->q == Q_GROUP_BY ? 3 : 4;
    if (a->n_children != want_cols || s->n_children != want_cols)
        return errf(vz->err, vz->errlen, "%s: %" PRId64 " result columns, expected %" PRId64,
                    q_names[vz->q], a->n_children, want_cols);
    for (int64_t i = 0; i < a->length; i++) {
        switch (vz->q) {
        case Q_SUM:
            if (!marble_arrow_is_null(a->children[0], i))
                vz->checksum += scaled(marble_arrow_get_double(s->children[0], a->children[0], i));
            break;
        case Q_COUNT_WHERE:
            vz->checksum += (uint64_t)marble_arrow_get_int(s->children[0], a->children[0], i);
            break;
        case Q_GROUP_BY: {
            int64_t k = marble_arrow_get_int(s->children[0], a->children[0], i);
            uint64_t sv = scaled(marble_arrow_get_double(s->children[1], a->children[1], i));
            uint64_t n = (uint64_t)marble_arrow_get_int(s->children[2], a->children[2], i);
            vz->checksum += (uint64_t)(k + 1) * (31u * sv + n);
            break;
        }
        default: {
            int ci = col_index(s, "id"), ck = col_index(s, "k"), cv = col_index(s, "v"),
                cs = col_index(s, "s");
            if (ci < 0 || ck < 0 || cv < 0 || cs < 0)
                return errf(vz->err, vz->errlen, "%s: the result lacks a column of t",
                            q_names[vz->q]);
            const void *p;
            size_t n = 0;
            if (marble_arrow_get_bytes(s->children[cs], a->children[cs], i, &p, &n))
                return errf(vz->err, vz->errlen, "%s: column s is not a string", q_names[vz->q]);
            vz->checksum += row_checksum(
                marble_arrow_get_int(s->children[ci], a->children[ci], i),
                marble_arrow_get_int(s->children[ck], a->children[ck], i),
                scaled(marble_arrow_get_double(s->children[cv], a->children[cv], i)), strsum(p, n));
        }
        }
    }
    vz->rows += a->length;
    return 0;
}

/* Runs sql and reads its stream to the end. */
static int run_sql(marble_db *db, const char *sql, visit *vz, marble_query_stats *stats)
{
    struct ArrowArrayStream st = {0};
    struct ArrowSchema s = {0};
    marble_query_options qo;
    marble_error e;
    memset(&qo, 0, sizeof qo);
    marble_query_options_init(&qo);
    memset(stats, 0, sizeof *stats);
    if (marble_db_query_sql(db, sql, &qo, &st, stats, &e))
        return errf(vz->err, vz->errlen, "%s (%s)", e.message, sql);
    int rc = -1, src = st.get_schema(&st, &s);
    if (src) {
        const char *m = st.get_last_error(&st);
        errf(vz->err, vz->errlen, "get_schema: %s (%s)", m ? m : strerror(src), sql);
        goto done;
    }
    for (;;) {
        struct ArrowArray a = {0};
        src = st.get_next(&st, &a);
        if (src) {
            const char *m = st.get_last_error(&st);
            errf(vz->err, vz->errlen, "%s (%s)", m ? m : strerror(src), sql);
            goto done;
        }
        if (!a.release) break;
        int vr = visit_batch(vz, &s, &a);
        marble_arrow_array_release(&a);
        if (vr) goto done;
    }
    rc = 0;
done:
    marble_arrow_schema_release(&s);
    if (st.release) st.release(&st);
    return rc;
}

static int marble_query_once(marble_db *db, const options *o, int q, q_result *r,
                             int64_t *rows_scanned, int64_t *point_gets, char *err, size_t errlen)
{
    visit vz = {q, 0, 0, err, errlen};
    marble_query_stats stats;
    *rows_scanned = 0;
    *point_gets = 0;
    if (q != Q_POINT) {
        if (run_sql(db, q_sql[q], &vz, &stats)) return -1;
        *rows_scanned = stats.rows_scanned;
    } else {
        for (int64_t j = 0; j < o->lookups; j++) {
            char sql[96];
            snprintf(sql, sizeof sql, "SELECT * FROM t WHERE id = %" PRId64, lookup_id(j, o->rows));
            if (run_sql(db, sql, &vz, &stats)) return -1;
            *rows_scanned += stats.rows_scanned;
            *point_gets += stats.point_lookup;
        }
    }
    r->checksum = vz.checksum;
    r->result_rows = vz.rows;
    return 0;
}

static int run_marble(const options *o, engine_run *m, char *err, size_t errlen)
{
    char dir[4096];
    marble_db *db = NULL;
    marble_error e;
    int rc = -1;
    if (bq_mkdtemp(o->dir, "query", dir, sizeof dir)) return errf(err, errlen, "no temp dir");
    if (bq_open(dir, 1, &db, err, errlen)) goto cleanup;
    if (o->ingest ? bq_ingest(db, o->rows, o->batch_rows, &m->load_seconds, err, errlen)
                  : bq_load(db, o->rows, o->batch_rows, &m->load_seconds, err, errlen))
        goto cleanup;
    double t0 = bq_now();
    if (marble_db_compact(db, "t", &e)) {
        errf(err, errlen, "marble_db_compact: %s", e.message);
        goto cleanup;
    }
    m->compact_seconds = bq_now() - t0;
    m->threads = marble_sched_threads(marble_db_sched(db));
    fprintf(stderr,
            "marble-bench query: marble: %" PRId64 " rows loaded in %.2f s, compacted in %.2f s\n",
            o->rows, m->load_seconds, m->compact_seconds);
    m->ran = 1;
    for (int q = 0; q < Q_COUNT; q++) {
        q_result *r = &m->q[q];
        if (!o->q_on[q]) continue;
        r->seconds = -1.0;
        for (int rep = -1; rep < o->reps; rep++) {
            double s0 = bq_now();
            int64_t gets = 0;
            if (marble_query_once(db, o, q, r, &m->rows_scanned[q], &gets, err, errlen)) {
                char msg[1024];
                snprintf(msg, sizeof msg, "%s", err);
                errf(err, errlen, "marble query failed: %s", msg);
                goto cleanup;
            }
            double s = bq_now() - s0;
            if (q == Q_POINT) m->point_gets = gets;
            if (rep >= 0 && (r->seconds < 0 || s < r->seconds)) r->seconds = s;
        }
        r->ran = 1;
    }
    rc = 0;
cleanup:
    if (db && marble_db_close(db, &e) && rc == 0) rc = errf(err, errlen, "close: %s", e.message);
    bq_rmtree(dir);
    return rc;
}

/* ---- DuckDB --------------------------------------------------------------------------------- */

static const char *json_field(const char *line, const char *key, char *buf, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) return NULL;
    p += strlen(pat);
    size_t n = 0;
    if (*p == '"') {
        p++;
        while (p[n] && p[n] != '"')
            n++;
    } else {
        while (p[n] && p[n] != ',' && p[n] != '}')
            n++;
    }
    if (n >= cap) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

/* Installs the peer (npm ci under a flock, once per package-lock.json); NULL or why not. */
static const char *duckdb_prepare(const char *dir)
{
    if (system("command -v node >/dev/null 2>&1") != 0) return "node is not installed";
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "test -f '%s/package-lock.json'", dir);
    if (system(cmd) != 0) return "bench/peers/duckdb/package-lock.json is missing";
    snprintf(cmd, sizeof cmd,
             "cd '%s' && want=$(sha256sum package-lock.json | cut -d' ' -f1) && "
             "stamp=node_modules/.marble-package-lock.sha256 && "
             "( flock 9; if [ \"$(cat $stamp 2>/dev/null)\" != \"$want\" ]; then "
             "command -v npm >/dev/null 2>&1 || { echo 'npm is not installed' >&2; exit 1; }; "
             "npm ci --no-audit --no-fund --loglevel=error >&2 && echo $want > $stamp; fi ) "
             "9<package-lock.json",
             dir);
    if (system(cmd) != 0) return "npm ci failed in bench/peers/duckdb (see above)";
    return NULL;
}

static int run_duckdb(const options *o, engine_run *d, char *why, size_t whylen)
{
    const char *dir = MARBLE_BENCH_SOURCE_DIR "/peers/duckdb";
    const char *no = duckdb_prepare(dir);
    if (no) return errf(why, whylen, "%s", no);
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && node query.mjs --rows %" PRId64 " --reps %d --lookups %" PRId64, dir,
             o->rows, o->reps, o->lookups);
    FILE *f = popen(cmd, "r");
    if (!f) return errf(why, whylen, "cannot run node: %s", strerror(errno));
    char line[4096], buf[128];
    while (fgets(line, sizeof line, f)) {
        if (o->json) fputs(line, stdout);
        if (json_field(line, "phase", buf, sizeof buf) && !strcmp(buf, "load")) {
            d->load_seconds = json_field(line, "seconds", buf, sizeof buf) ? atof(buf) : 0;
            d->threads = json_field(line, "threads", buf, sizeof buf) ? atoi(buf) : 0;
            d->ran = 1;
            continue;
        }
        if (!json_field(line, "query", buf, sizeof buf)) continue;
        for (int q = 0; q < Q_COUNT; q++) {
            if (strcmp(buf, q_names[q])) continue;
            q_result *r = &d->q[q];
            r->ran = 1;
            r->seconds = json_field(line, "seconds", buf, sizeof buf) ? atof(buf) : -1;
            r->checksum =
                json_field(line, "checksum", buf, sizeof buf) ? strtoull(buf, NULL, 10) : 0;
            r->result_rows =
                json_field(line, "result_rows", buf, sizeof buf) ? strtoll(buf, NULL, 10) : 0;
            break;
        }
    }
    fflush(stdout);
    int st = pclose(f);
    if (st != 0) return errf(why, whylen, "node query.mjs failed (status %d; see above)", st);
    return 0;
}

/* ---- report --------------------------------------------------------------------------------- */

static const char *verdict(const q_result *r, uint64_t want, int64_t want_rows)
{
    if (!r->ran) return "not run";
    return r->checksum == want && r->result_rows == want_rows ? "ok" : "WRONG";
}

static int report(const options *o, const engine_run *m, const engine_run *d,
                  const uint64_t want[Q_COUNT], const int64_t want_rows[Q_COUNT])
{
    int wrong = 0, agree = 0;
    for (int q = 0; q < Q_COUNT; q++) {
        if (m->q[q].ran && strcmp(verdict(&m->q[q], want[q], want_rows[q]), "ok")) wrong = 1;
        if (d->q[q].ran && strcmp(verdict(&d->q[q], want[q], want_rows[q]), "ok")) wrong = 1;
        if (m->q[q].ran && d->q[q].ran && m->q[q].checksum == d->q[q].checksum &&
            m->q[q].result_rows == d->q[q].result_rows)
            agree++;
    }
    if (o->json) {
        if (m->ran) {
            printf("{\"engine\":\"marble\",\"phase\":\"load\",\"how\":\"%s\",\"rows\":%" PRId64
                   ",\"seconds\":%.6g,\"threads\":%d}\n",
                   o->ingest ? "ingest" : "put", o->rows, m->load_seconds, m->threads);
            printf("{\"engine\":\"marble\",\"phase\":\"compact\",\"rows\":%" PRId64
                   ",\"seconds\":%.6g}\n",
                   o->rows, m->compact_seconds);
        }
        for (int q = 0; q < Q_COUNT; q++) {
            const q_result *r = &m->q[q];
            if (!r->ran) continue;
            printf("{\"engine\":\"marble\",\"query\":\"%s\",\"sql\":\"%s\",\"rows\":%" PRId64
                   ",\"seconds\":%.6g,\"result_rows\":%" PRId64 ",\"checksum\":\"%" PRIu64
                   "\",\"expected\":\"%" PRIu64 "\",\"rows_scanned\":%" PRId64,
                   q_names[q], q_sql[q], o->rows, r->seconds, r->result_rows, r->checksum, want[q],
                   m->rows_scanned[q]);
            if (q == Q_POINT)
                printf(",\"lookups\":%" PRId64 ",\"point_gets\":%" PRId64, o->lookups,
                       m->point_gets);
            printf("}\n");
        }
        for (int q = 0; q < Q_COUNT; q++) {
            if (!m->q[q].ran || !d->q[q].ran) continue;
            printf("{\"compare\":\"%s\",\"marble_seconds\":%.6g,\"duckdb_seconds\":%.6g,"
                   "\"ratio\":%.3g,\"target\":2,\"agree\":%s}\n",
                   q_names[q], m->q[q].seconds, d->q[q].seconds, m->q[q].seconds / d->q[q].seconds,
                   m->q[q].checksum == d->q[q].checksum ? "true" : "false");
        }
    } else {
        printf("marble-bench query: %" PRId64 " rows, best of %d warm runs (marble: %d threads, "
               "duckdb: %d threads)\n\n",
               o->rows, o->reps, m->threads, d->threads);
        printf("%-14s %12s %12s %14s  %-8s %-8s\n", "query", "marble s", "duckdb s",
               "marble/duckdb", "marble", "duckdb");
        char ml[32] = "-", dl[32] = "-", mc[32] = "-";
        if (m->ran) snprintf(ml, sizeof ml, "%.4f", m->load_seconds);
        if (m->ran) snprintf(mc, sizeof mc, "%.4f", m->compact_seconds);
        if (d->ran) snprintf(dl, sizeof dl, "%.4f", d->load_seconds);
        printf("%-14s %12s %12s %14s\n", "load", ml, dl, "");
        printf("%-14s %12s %12s %14s\n", "compact", mc, "-", "");
        for (int q = 0; q < Q_COUNT; q++) {
            char ms[32] = "-", ds[32] = "-", ratio[32] = "";
            if (m->q[q].ran) snprintf(ms, sizeof ms, "%.4f", m->q[q].seconds);
            if (d->q[q].ran) snprintf(ds, sizeof ds, "%.4f", d->q[q].seconds);
            if (m->q[q].ran && d->q[q].ran)
                snprintf(ratio, sizeof ratio, "%.2f", m->q[q].seconds / d->q[q].seconds);
            printf("%-14s %12s %12s %14s  %-8s %-8s\n", q_names[q], ms, ds, ratio,
                   verdict(&m->q[q], want[q], want_rows[q]),
                   verdict(&d->q[q], want[q], want_rows[q]));
        }
        printf("\nload: %s of %" PRId64 "-row Arrow batches (marble), "
               "CREATE TABLE with a primary key and INSERT ... SELECT FROM range() (duckdb).\n"
               "compact: marble_db_compact to one sorted run. ok: the result's checksum equals "
               "the one computed from the data's formula (bench/bench_query.h). Target: "
               "marble/duckdb <= 2.\n",
               o->ingest ? "marble_db_ingest (sorted)" : "marble_db_put and a flush",
               o->batch_rows);
        if (m->q[Q_POINT].ran)
            printf("point_lookups: %" PRId64 " queries 'SELECT * FROM t WHERE id = <n>', %" PRId64
                   " of them answered by point gets.\n",
                   o->lookups, m->point_gets);
    }
    for (int q = 0; q < Q_COUNT; q++) {
        if (m->q[q].ran && strcmp(verdict(&m->q[q], want[q], want_rows[q]), "ok"))
            fprintf(stderr,
                    "marble-bench query: marble's %s is wrong: checksum %" PRIu64 " over %" PRId64
                    " rows, expected %" PRIu64 " over %" PRId64 "\n",
                    q_names[q], m->q[q].checksum, m->q[q].result_rows, want[q], want_rows[q]);
        if (d->q[q].ran && strcmp(verdict(&d->q[q], want[q], want_rows[q]), "ok"))
            fprintf(stderr,
                    "marble-bench query: duckdb's %s is wrong: checksum %" PRIu64 " over %" PRId64
                    " rows, expected %" PRIu64 " over %" PRId64 "\n",
                    q_names[q], d->q[q].checksum, d->q[q].result_rows, want[q], want_rows[q]);
    }
    int both = 0;
    for (int q = 0; q < Q_COUNT; q++)
        both += m->q[q].ran && d->q[q].ran;
    if (both) {
        FILE *f = o->json ? stderr : stdout;
        if (agree == both)
            fprintf(f,
                    "marble-bench query: results agree: marble and duckdb computed the same "
                    "checksums on %d of %d queries\n",
                    agree, Q_COUNT);
        else
            fprintf(f,
                    "marble-bench query: results DISAGREE: marble and duckdb agree on only %d "
                    "of %d queries run by both\n",
                    agree, both);
    }
    return wrong || agree != both;
}

/* ---- the area ------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: marble-bench query [options]\n"
            "\n"
            "Four queries over one table t (id int64 primary key, k = id %% 1000, a double v,\n"
            "a short string s; bench/bench_query.h), on Marble (marble_db_query_sql over a\n"
            "compacted local database) and on DuckDB (bench/peers/duckdb/query.mjs, node and\n"
            "@duckdb/node-api, in-memory), best of R warm runs each:\n"
            "  sum            SELECT sum(v) FROM t\n"
            "  count_where    SELECT count(*) FROM t WHERE v > 0.9\n"
            "  group_by       SELECT k, sum(v), count(*) FROM t WHERE id %% 7 = 3 GROUP BY k\n"
            "  point_lookups  SELECT * FROM t WHERE id = <n> for L ids, timed as a whole\n"
            "Both engines' answers are checked against checksums computed from the data's\n"
            "formula, so they are seen to agree. Target: marble within 2x of duckdb.\n"
            "\n"
            "options:\n"
            "  --json            one JSON object per line (duckdb's lines are forwarded)\n"
            "  --rows N          rows of t (default 10000000)\n"
            "  --reps R          timed runs per query after one warm-up (default 3)\n"
            "  --lookups L       point lookups (default 1000)\n"
            "  --load HOW        ingest (marble_db_ingest of the sorted rows, straight into\n"
            "                    SSTables; default) or put (marble_db_put of each batch, through\n"
            "                    the WAL and the memtable, then a flush)\n"
            "  --batch-rows B    rows per Arrow batch while loading (default 65536)\n"
            "  --engine LIST     marble, duckdb or both (default marble,duckdb)\n"
            "  --only LIST       queries to run on marble (default all; duckdb runs all)\n"
            "  --dir DIR         where Marble's database goes (default $TMPDIR, else /tmp)\n"
            "  -h, --help        this text\n"
            "\n"
            "The DuckDB peer is installed with `npm ci` in bench/peers/duckdb on first use;\n"
            "without node or npm it is skipped with a line on stderr.\n");
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    const char *tmp = getenv("TMPDIR");
    *o = (options){0, 10000000, 3, 1000, 65536, tmp && *tmp ? tmp : "/tmp", 1, 1, 1, {1, 1, 1, 1}};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr,
                    "marble-bench query: unknown option or missing value '%s' (see "
                    "marble-bench query --help)\n",
                    a);
            return 2;
        }
        const char *v = argv[++i];
        int64_t n;
        if (!strcmp(a, "--rows")) {
            if (parse_i64(v, 1, 1000000000, &o->rows)) goto bad;
        } else if (!strcmp(a, "--reps")) {
            if (parse_i64(v, 1, 1000, &n)) goto bad;
            o->reps = (int)n;
        } else if (!strcmp(a, "--lookups")) {
            if (parse_i64(v, 0, 100000000, &o->lookups)) goto bad;
        } else if (!strcmp(a, "--batch-rows")) {
            if (parse_i64(v, 1, 1 << 24, &o->batch_rows)) goto bad;
        } else if (!strcmp(a, "--dir")) {
            if (!*v) goto bad;
            o->dir = v;
        } else if (!strcmp(a, "--only")) {
            memset(o->q_on, 0, sizeof o->q_on);
            for (const char *p = v; *p;) {
                size_t len = strcspn(p, ",");
                int q = 0;
                while (q < Q_COUNT && (strlen(q_names[q]) != len || strncmp(p, q_names[q], len)))
                    q++;
                if (q == Q_COUNT) goto bad;
                o->q_on[q] = 1;
                p += len + (p[len] == ',');
            }
        } else if (!strcmp(a, "--load")) {
            if (strcmp(v, "put") && strcmp(v, "ingest")) goto bad;
            o->ingest = !strcmp(v, "ingest");
        } else if (!strcmp(a, "--engine")) {
            o->marble_on = strstr(v, "marble") != NULL || !strcmp(v, "both");
            o->duckdb_on = strstr(v, "duckdb") != NULL || !strcmp(v, "both");
            if (!o->marble_on && !o->duckdb_on) goto bad;
        } else {
            fprintf(stderr,
                    "marble-bench query: unknown option '%s' (see marble-bench query "
                    "--help)\n",
                    a);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr,
                "marble-bench query: bad value '%s' for %s (see marble-bench query "
                "--help)\n",
                v, a);
        return 2;
    }
    return 0;
}

int bench_query_area(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    uint64_t want[Q_COUNT];
    int64_t want_rows[Q_COUNT];
    expected(&o, want, want_rows);
    engine_run m, d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    char err[2048] = "";
    int failed = 0;
    if (o.marble_on && run_marble(&o, &m, err, sizeof err)) {
        fprintf(stderr, "marble-bench query: %s\n", err);
        failed = 1;
    }
    if (o.duckdb_on && run_duckdb(&o, &d, err, sizeof err))
        fprintf(stderr, "duckdb peer skipped: %s\n", err);
    rc = report(&o, &m, &d, want, want_rows);
    return failed || rc ? 1 : 0;
}
