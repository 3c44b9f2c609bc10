/* Tests for table scans as pipeline sources (marble_db_scan_source in include/marble/db.h):
 * morsels read in order (and in parallel) against marble_db_scan, in the clean-run (zero-copy)
 * case and the merging case, key-range edges, projection, pruning counters and completeness under
 * zone-map and bloom pruning, release while the database keeps writing, and random workloads. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/db.h"
#include "marble_test.h"

extern int marble__scan_fast_path; /* src/lsm/db_read.c: 0 forces the merging scan paths */

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

#define SCHEMA "id:int64!,name:utf8,v:float64,c:int32"

static const char *g_table = "t"; /* the table read_scan and make_source read */

/* ---- rows as text ------------------------------------------------------------------------------
 */

typedef struct rows {
    char **v;
    size_t n, cap;
} rows;

static void rows_add(rows *r, const char *s)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        if (!r->v) FAIL("out of memory");
    }
    r->v[r->n++] = strdup(s);
}

static void rows_free(rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i]);
    free(r->v);
    memset(r, 0, sizeof *r);
}

static void rows_append(rows *dst, rows *src)
{
    for (size_t i = 0; i < src->n; i++)
        rows_add(dst, src->v[i]);
    rows_free(src);
}

static void batch_text(const struct ArrowSchema *s, const struct ArrowArray *b, rows *out)
{
    if (b->n_children != s->n_children)
        FAIL("batch has %" PRId64 " columns, schema %" PRId64, b->n_children, s->n_children);
    for (int64_t i = 0; i < b->length; i++) {
        char line[512];
        size_t o = 0;
        for (int64_t j = 0; j < s->n_children; j++) {
            const struct ArrowSchema *cs = s->children[j];
            const struct ArrowArray *ca = b->children[j];
            if (j) line[o++] = '|';
            if (marble_arrow_is_null(ca, i)) {
                o += (size_t)snprintf(line + o, sizeof line - o, "N");
            } else if (cs->format[0] == 'u') {
                const void *d;
                size_t n;
                if (marble_arrow_get_bytes(cs, ca, i, &d, &n) != MARBLE_OK) FAIL("get_bytes");
                o += (size_t)snprintf(line + o, sizeof line - o, "%.*s", (int)n, (const char *)d);
            } else if (cs->format[0] == 'g') {
                o += (size_t)snprintf(line + o, sizeof line - o, "%.17g",
                                      marble_arrow_get_double(cs, ca, i));
            } else {
                o += (size_t)snprintf(line + o, sizeof line - o, "%" PRId64,
                                      marble_arrow_get_int(cs, ca, i));
            }
            if (o >= sizeof line) FAIL("row too long");
        }
        line[o] = 0;
        rows_add(out, line);
    }
}

static void rows_expect_equal(const rows *a, const rows *b, const char *what)
{
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            FAIL("%s: row %zu differs: \"%s\" vs \"%s\"", what, i, a->v[i], b->v[i]);
    if (a->n != b->n)
        FAIL("%s: %zu rows vs %zu (first extra: \"%s\")", what, a->n, b->n,
             a->n > b->n ? a->v[n] : b->v[n]);
}

/* ---- the database ------------------------------------------------------------------------------
 */

static marble_db *open_db(int auto_compact)
{
    marble_error err = {0};
    marble_db_options o;
    marble_db_options_init(&o);
    o.write_buffer_size = 256 << 10;
    o.target_file_size = 24 << 10;
    o.level1_max_bytes = 1 << 20;
    o.batch_rows = 100;
    o.sync = MARBLE_SYNC_NONE;
    o.disable_auto_compaction = !auto_compact;
    o.level0_slowdown_trigger = 1000;
    o.level0_stop_trigger = 1000;
    static int n_dbs;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/db%d", marble_test_tmpdir(), n_dbs++);
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "t", &s, key, 1, &err));
    marble_arrow_schema_release(&s);
    return db;
}

static void close_db(marble_db *db)
{
    marble_error err = {0};
    CHECK_OK(marble_db_close(db, &err));
}

/* Puts ids[0..n) with version ver: name "n<id>-<ver>", v = id / 2 + ver (null for some), c =
 * id / 10 (null for some). */
static void put_ids(marble_db *db, const int64_t *ids, size_t n, int ver)
{
    marble_error err = {0};
    struct ArrowSchema s;
    struct ArrowArray a;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (size_t i = 0; i < n; i++) {
        int64_t id = ids[i];
        char name[48];
        int len = snprintf(name, sizeof name, "n%" PRId64 "-%d", id, ver);
        CHECK_OK(marble_builder_append_int(b, 0, id, &err));
        CHECK_OK(marble_builder_append_bytes(b, 1, name, (size_t)len, &err));
        if ((id + ver) % 11 == 0)
            CHECK_OK(marble_builder_append_null(b, 2, &err));
        else
            CHECK_OK(marble_builder_append_double(b, 2, (double)id / 2 + ver, &err));
        if (id % 17 == 16)
            CHECK_OK(marble_builder_append_null(b, 3, &err));
        else
            CHECK_OK(marble_builder_append_int(b, 3, id / 10, &err));
    }
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    marble_batch_builder_destroy(b);
    CHECK_OK(marble_db_put(db, "t", &s, &a, NULL, &err));
    marble_arrow_array_release(&a);
    marble_arrow_schema_release(&s);
}

static void put_range(marble_db *db, int64_t first, int64_t n, int64_t step, int ver)
{
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++)
        ids[i] = first + i * step;
    put_ids(db, ids, (size_t)n, ver);
    free(ids);
}

static void del_id(marble_db *db, int64_t id)
{
    marble_error err = {0};
    marble_value kv = {MARBLE_VALUE_INT, id, 0, 0, NULL, 0};
    marble_key key = {&kv, 1};
    CHECK_OK(marble_db_delete_key(db, "t", key, NULL, &err));
}

static void flush(marble_db *db)
{
    marble_error err = {0};
    CHECK_OK(marble_db_flush(db, &err));
}

static void compact(marble_db *db)
{
    marble_error err = {0};
    CHECK_OK(marble_db_compact(db, "t", &err));
}

/* ---- reading -----------------------------------------------------------------------------------
 */

static void read_scan(marble_db *db, const marble_key_range *r, const char *const *cols,
                      size_t ncols, const marble_snapshot *snap, rows *out)
{
    marble_error err = {0};
    marble_read_options ro;
    memset(&ro, 0, sizeof ro);
    ro.snapshot = snap;
    ro.columns = cols;
    ro.n_columns = ncols;
    struct ArrowArrayStream st;
    CHECK_OK(marble_db_scan(db, g_table, r, &ro, &st, &err));
    struct ArrowSchema s;
    ASSERT_EQ_INT(st.get_schema(&st, &s), 0);
    for (;;) {
        struct ArrowArray a;
        ASSERT_EQ_INT(st.get_next(&st, &a), 0);
        if (!a.release) break;
        batch_text(&s, &a, out);
        a.release(&a);
    }
    s.release(&s);
    st.release(&st);
}

/* Reads morsel i into out, checking every batch against the schema and max_rows. */
static int read_morsel(marble_source *src, const struct ArrowSchema *s, int64_t i, int64_t max_rows,
                       rows *out, marble_error *err)
{
    void *cur;
    int rc = src->open(src->ud, i, &cur, err);
    if (rc != MARBLE_OK) return rc;
    for (;;) {
        struct ArrowArray a;
        rc = src->next(src->ud, cur, &a, err);
        if (rc == MARBLE_ERR_NOT_FOUND) {
            rc = MARBLE_OK;
            break;
        }
        if (rc != MARBLE_OK) break;
        if (!a.release || a.length <= 0 || (max_rows && a.length > max_rows) ||
            a.n_children != s->n_children) {
            if (a.release) a.release(&a);
            rc = marble_error_set(err, MARBLE_ERR_INTERNAL, "bad batch from morsel %" PRId64, i);
            break;
        }
        batch_text(s, &a, out);
        a.release(&a);
    }
    src->close(src->ud, cur);
    return rc;
}

static void read_source(marble_source *src, int64_t max_rows, rows *out)
{
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(src->get_schema(src->ud, &s, &err));
    for (int64_t i = 0; i < src->n_morsels; i++)
        CHECK_OK(read_morsel(src, &s, i, max_rows, out, &err));
    s.release(&s);
}

static void make_source(marble_db *db, const marble_scan_spec *spec, marble_source *src)
{
    marble_error err = {0};
    CHECK_OK(marble_db_scan_source(db, g_table, spec, src, &err));
    ASSERT_TRUE(src->open && src->next && src->close && src->get_schema && src->release);
}

/* Reads the source built from spec and the scan with the same range, columns and snapshot;
 * expects the same rows in the same order. Returns the source's morsel count. */
static int64_t expect_same(marble_db *db, const marble_scan_spec *spec, const char *what)
{
    marble_source src;
    make_source(db, spec, &src);
    rows a = {0}, b = {0};
    read_source(&src, spec->batch_rows, &a);
    int64_t n = src.n_morsels;
    src.release(src.ud);
    read_scan(db, spec->range, spec->columns, spec->n_columns, spec->snapshot, &b);
    rows_expect_equal(&a, &b, what);
    rows_free(&a);
    rows_free(&b);
    return n;
}

static marble_key_range range_of(marble_value *lv, marble_value *hv, int64_t lo, int64_t hi,
                                 int lo_excl, int hi_incl)
{
    marble_key_range r;
    memset(&r, 0, sizeof r);
    *lv = (marble_value){MARBLE_VALUE_INT, lo, 0, 0, NULL, 0};
    *hv = (marble_value){MARBLE_VALUE_INT, hi, 0, 0, NULL, 0};
    if (lo != INT64_MIN) {
        r.lower.values = lv;
        r.lower.n = 1;
        r.lower_exclusive = lo_excl;
    }
    if (hi != INT64_MAX) {
        r.upper.values = hv;
        r.upper.n = 1;
        r.upper_inclusive = hi_incl;
    }
    return r;
}

/* ---- the clean-run case ------------------------------------------------------------------------
 */

static marble_db *clean_db(int64_t n)
{
    marble_db *db = open_db(0);
    put_range(db, 0, n / 2, 2, 1);
    flush(db);
    put_range(db, 1, n / 2, 2, 1);
    flush(db);
    compact(db);
    return db;
}

TEST(clean_run_morsels_are_batches)
{
    marble_db *db = clean_db(2000);
    marble_scan_counters c;
    memset(&c, 0, sizeof c);
    marble_scan_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.counters = &c;
    int64_t n = expect_same(db, &spec, "whole table");
    ASSERT_GE_INT(n, 20); /* 2000 rows in batches of at most 100: one morsel each */
    ASSERT_GE_INT(c.files_total, 2);
    ASSERT_EQ_INT(c.files_skipped, 0);
    ASSERT_EQ_INT(c.batches_total, n);
    ASSERT_EQ_INT(c.batches_skipped, 0);
    ASSERT_EQ_INT(c.rows_scanned, 2000);
    spec.batch_rows = 7;
    ASSERT_EQ_INT(expect_same(db, &spec, "batch_rows 7"), n);
    /* the schema has the table's columns only, and slices are zero-copy views */
    marble_error err = {0};
    marble_source src;
    make_source(db, &spec, &src);
    struct ArrowSchema s;
    CHECK_OK(src.get_schema(src.ud, &s, &err));
    ASSERT_EQ_INT(s.n_children, 4);
    ASSERT_EQ_STR(s.children[3]->name, "c");
    s.release(&s);
    void *cur;
    CHECK_OK(src.open(src.ud, 0, &cur, &err));
    struct ArrowArray a, b;
    CHECK_OK(src.next(src.ud, cur, &a, &err));
    CHECK_OK(src.next(src.ud, cur, &b, &err));
    ASSERT_EQ_INT(a.length, 7);
    ASSERT_EQ_PTR(a.children[0]->buffers[1], b.children[0]->buffers[1]);
    ASSERT_EQ_INT(b.children[0]->offset, a.children[0]->offset + 7);
    a.release(&a);
    b.release(&b);
    src.close(src.ud, cur);
    /* a batch may outlive its cursor and the source */
    CHECK_OK(src.open(src.ud, 1, &cur, &err));
    CHECK_OK(src.next(src.ud, cur, &a, &err));
    src.close(src.ud, cur);
    src.release(src.ud);
    ASSERT_EQ_INT(a.children[0]->length, 7);
    a.release(&a);
    close_db(db);
}

static void check_edges(marble_db *db, int64_t max_id, const char *what)
{
    static const int64_t pts[] = {INT64_MIN, -5,   0,    1,    99,   100,      101,
                                  555,       1000, 1999, 2000, 2500, INT64_MAX};
    size_t np = sizeof pts / sizeof pts[0];
    char label[128];
    (void)max_id;
    for (size_t i = 0; i < np; i++)
        for (size_t j = 0; j < np; j++)
            for (int flags = 0; flags < 4; flags++) {
                if (pts[i] == INT64_MAX || pts[j] == INT64_MIN) continue;
                marble_value lv, hv;
                marble_key_range r = range_of(&lv, &hv, pts[i], pts[j], flags & 1, flags >> 1);
                marble_scan_spec spec;
                memset(&spec, 0, sizeof spec);
                spec.range = &r;
                spec.batch_rows = (i + j) % 3 == 0 ? 33 : 0;
                snprintf(label, sizeof label, "%s: [%" PRId64 ", %" PRId64 "] flags %d", what,
                         pts[i], pts[j], flags);
                expect_same(db, &spec, label);
            }
}

TEST(clean_run_key_range_edges)
{
    marble_db *db = clean_db(2000);
    check_edges(db, 1999, "clean");
    close_db(db);
}

TEST(projection_and_bad_input)
{
    marble_db *db = clean_db(600);
    const char *cols[] = {"v", "id"};
    marble_scan_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.columns = cols;
    spec.n_columns = 2;
    expect_same(db, &spec, "projection v, id (clean)");
    put_range(db, 100, 50, 3, 2);
    expect_same(db, &spec, "projection v, id (merge)");
    const char *one[] = {"name"};
    spec.columns = one;
    spec.n_columns = 1;
    expect_same(db, &spec, "projection name");

    marble_error err = {0};
    marble_source src;
    const char *bad[] = {"id", "nope"};
    spec.columns = bad;
    spec.n_columns = 2;
    ASSERT_EQ_INT(marble_db_scan_source(db, "t", &spec, &src, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "nope");
    spec.columns = NULL;
    spec.n_columns = 0;
    marble_scan_predicate p = {"zzz", MARBLE_OP_EQ, {MARBLE_DATUM_INT, 1, 0, NULL, 0}};
    spec.preds = &p;
    spec.n_preds = 1;
    ASSERT_EQ_INT(marble_db_scan_source(db, "t", &spec, &src, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "zzz");
    p.column = "id";
    p.op = MARBLE_OP_ADD;
    ASSERT_EQ_INT(marble_db_scan_source(db, "t", &spec, &src, &err), MARBLE_ERR_INVALID_ARGUMENT);
    spec.n_preds = 0;
    spec.batch_rows = -1;
    ASSERT_EQ_INT(marble_db_scan_source(db, "t", &spec, &src, &err), MARBLE_ERR_INVALID_ARGUMENT);
    spec.batch_rows = 0;
    ASSERT_EQ_INT(marble_db_scan_source(db, "nosuch", &spec, &src, &err), MARBLE_ERR_NOT_FOUND);
    ASSERT_EQ_INT(marble_db_scan_source(NULL, "t", &spec, &src, &err), MARBLE_ERR_INVALID_ARGUMENT);
    /* a morsel index out of range */
    make_source(db, &spec, &src);
    void *cur;
    ASSERT_EQ_INT(src.open(src.ud, src.n_morsels, &cur, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(src.open(src.ud, -1, &cur, &err), MARBLE_ERR_INVALID_ARGUMENT);
    /* the database refuses to close while the source lives */
    ASSERT_EQ_INT(marble_db_close(db, &err), MARBLE_ERR_BUSY);
    src.release(src.ud);
    close_db(db);
}

/* ---- the merging case --------------------------------------------------------------------------
 */

/* L1 run, overlapping L0 files with overwrites and deletes, memtable writes. */
static marble_db *messy_db(void)
{
    marble_db *db = open_db(0);
    put_range(db, 0, 2000, 1, 1);
    flush(db);
    compact(db);
    put_range(db, 0, 1000, 2, 2); /* evens overwritten */
    flush(db);
    for (int64_t id = 0; id < 2000; id += 5)
        del_id(db, id);
    put_range(db, 1995, 20, 1, 3); /* past the end */
    flush(db);
    put_range(db, 300, 100, 7, 4);
    for (int64_t id = 1; id < 2000; id += 97)
        del_id(db, id);
    return db;
}

TEST(merge_matches_scan)
{
    marble_db *db = messy_db();
    marble_error err = {0};
    marble_snapshot *snap;
    CHECK_OK(marble_db_snapshot_create(db, &snap, &err));
    marble_scan_spec spec;
    memset(&spec, 0, sizeof spec);
    marble_scan_counters c;
    memset(&c, 0, sizeof c);
    spec.counters = &c;
    int64_t n = expect_same(db, &spec, "merge now");
    ASSERT_GT_INT(n, 1); /* partitions */
    ASSERT_GE_INT(c.files_total, 3);
    ASSERT_EQ_INT(c.files_skipped, 0);
    /* writes after the snapshot: the snapshot's view stays */
    put_range(db, 0, 500, 3, 5);
    for (int64_t id = 2; id < 2000; id += 31)
        del_id(db, id);
    flush(db);
    put_range(db, 5000, 10, 1, 6);
    spec.snapshot = snap;
    expect_same(db, &spec, "merge at the snapshot");
    spec.snapshot = NULL;
    expect_same(db, &spec, "merge after more writes");
    spec.batch_rows = 13;
    expect_same(db, &spec, "merge batch_rows 13");
    /* the same data through the merging path with the fast path off */
    compact(db);
    marble_db_snapshot_release(snap);
    marble__scan_fast_path = 0;
    expect_same(db, &spec, "compacted, fast path off");
    marble__scan_fast_path = 1;
    expect_same(db, &spec, "compacted, fast path on");
    close_db(db);
}

TEST(merge_key_range_edges)
{
    marble_db *db = messy_db();
    check_edges(db, 2014, "merge");
    close_db(db);
}

/* ---- pruning -----------------------------------------------------------------------------------
 */

/* The rows of "id|name|v|c" text that satisfy every predicate. */
static int row_matches(const char *row, const marble_scan_predicate *p, size_t np)
{
    char name[64], vs[64], cs[64];
    long long id;
    if (sscanf(row, "%lld|%63[^|]|%63[^|]|%63s", &id, name, vs, cs) != 4) FAIL("parse %s", row);
    for (size_t i = 0; i < np; i++) {
        int isint = 1;
        int64_t xi = 0;
        double xd = 0;
        if (strcmp(p[i].column, "id") == 0) {
            xi = id;
        } else if (strcmp(p[i].column, "c") == 0) {
            if (strcmp(cs, "N") == 0) return 0;
            xi = strtoll(cs, NULL, 10);
        } else {
            if (strcmp(vs, "N") == 0) return 0;
            xd = strtod(vs, NULL);
            isint = 0;
        }
        double a, b;
        int cmp;
        if (isint && p[i].value.kind == MARBLE_DATUM_INT) {
            cmp = xi < p[i].value.i ? -1 : xi > p[i].value.i;
        } else {
            a = isint ? (double)xi : xd;
            b = p[i].value.kind == MARBLE_DATUM_INT ? (double)p[i].value.i : p[i].value.d;
            if (a != a || b != b) return 0;
            cmp = a < b ? -1 : a > b;
        }
        int ok = p[i].op == MARBLE_OP_EQ   ? cmp == 0
                 : p[i].op == MARBLE_OP_LT ? cmp < 0
                 : p[i].op == MARBLE_OP_LE ? cmp <= 0
                 : p[i].op == MARBLE_OP_GT ? cmp > 0
                                           : cmp >= 0;
        if (!ok) return 0;
    }
    return 1;
}

static void filter_rows(const rows *in, const marble_scan_predicate *p, size_t np, rows *out)
{
    for (size_t i = 0; i < in->n; i++)
        if (row_matches(in->v[i], p, np)) rows_add(out, in->v[i]);
}

/* 1 if a is a subsequence of b. */
static int subsequence(const rows *a, const rows *b)
{
    size_t j = 0;
    for (size_t i = 0; i < a->n; i++) {
        while (j < b->n && strcmp(b->v[j], a->v[i]) != 0)
            j++;
        if (j == b->n) return 0;
        j++;
    }
    return 1;
}

/* Reads the source (with predicates) and the scan; the predicate-filtered rows must be equal
 * (pruning loses no wanted row); *src_rows gets the source's rows unfiltered. */
static void expect_complete(marble_db *db, const marble_scan_spec *spec, rows *src_rows,
                            const char *what)
{
    marble_source src;
    make_source(db, spec, &src);
    read_source(&src, spec->batch_rows, src_rows);
    src.release(src.ud);
    rows scan = {0}, fa = {0}, fb = {0};
    read_scan(db, spec->range, NULL, 0, spec->snapshot, &scan);
    filter_rows(src_rows, spec->preds, spec->n_preds, &fa);
    filter_rows(&scan, spec->preds, spec->n_preds, &fb);
    rows_expect_equal(&fa, &fb, what);
    rows_free(&scan);
    rows_free(&fa);
    rows_free(&fb);
}

TEST(pruning_counters_and_completeness)
{
    marble_db *db = clean_db(4000);
    marble_scan_counters c;
    marble_scan_spec spec;
    rows got = {0};
    /* a selective key range */
    memset(&c, 0, sizeof c);
    memset(&spec, 0, sizeof spec);
    marble_value lv, hv;
    marble_key_range r = range_of(&lv, &hv, 500, 620, 0, 0);
    spec.range = &r;
    spec.counters = &c;
    int64_t n = expect_same(db, &spec, "key range");
    ASSERT_GE_INT(n, 2);
    ASSERT_LE_INT(n, 3);
    ASSERT_GE_INT(c.files_total, 4);
    ASSERT_GT_INT(c.files_skipped, 0);
    ASSERT_EQ_INT(c.batches_total - c.batches_skipped, n);
    ASSERT_EQ_INT(c.rows_scanned, 120);

    /* a zone predicate on a column correlated with the key: c in [150, 160) */
    memset(&c, 0, sizeof c);
    memset(&spec, 0, sizeof spec);
    marble_scan_predicate p[2] = {
        {"c", MARBLE_OP_GE, {MARBLE_DATUM_INT, 150, 0, NULL, 0}},
        {"c", MARBLE_OP_LT, {MARBLE_DATUM_DOUBLE, 0, 159.5, NULL, 0}},
    };
    spec.preds = p;
    spec.n_preds = 2;
    spec.counters = &c;
    expect_complete(db, &spec, &got, "zone c");
    ASSERT_GE_INT((int64_t)got.n, 100);
    ASSERT_LE_INT((int64_t)got.n, 200);
    ASSERT_GT_INT(c.files_skipped, 0);
    ASSERT_LE_INT(c.batches_total - c.batches_skipped, 3);
    ASSERT_EQ_INT(c.rows_scanned, (int64_t)got.n);
    rows_free(&got);

    /* a double column: v = id / 2 + 1 > 1990.25 keeps the last batches only */
    memset(&c, 0, sizeof c);
    marble_scan_predicate pv = {"v", MARBLE_OP_GT, {MARBLE_DATUM_INT, 1990, 0, NULL, 0}};
    spec.preds = &pv;
    spec.n_preds = 1;
    expect_complete(db, &spec, &got, "zone v");
    ASSERT_LE_INT((int64_t)got.n, 100);
    ASSERT_GT_INT((int64_t)got.n, 0);
    rows_free(&got);
    /* nothing matches: no morsels */
    memset(&c, 0, sizeof c);
    marble_scan_predicate none = {"id", MARBLE_OP_LT, {MARBLE_DATUM_DOUBLE, 0, -0.5, NULL, 0}};
    spec.preds = &none;
    expect_complete(db, &spec, &got, "zone none");
    ASSERT_EQ_INT((int64_t)got.n, 0);
    ASSERT_EQ_INT(c.files_skipped, c.files_total);
    rows_free(&got);
    /* literals that cannot be used keep everything */
    memset(&c, 0, sizeof c);
    marble_scan_predicate weird[2] = {
        {"name", MARBLE_OP_EQ, {MARBLE_DATUM_STRING, 0, 0, "n5-1", 4}},
        {"v", MARBLE_OP_LT, {MARBLE_DATUM_NULL, 0, 0, NULL, 0}},
    };
    spec.preds = weird;
    spec.n_preds = 2;
    marble_source src;
    make_source(db, &spec, &src);
    ASSERT_GE_INT(src.n_morsels, 40);
    src.release(src.ud);
    ASSERT_EQ_INT(c.batches_skipped, 0);
    close_db(db);
}

TEST(pruning_in_the_merge_case_keeps_shadowed_rows)
{
    /* an old run where v < 20 for ids below 38, and a newer overlapping file that overwrites or
     * deletes them with rows failing v < 20: skipping the newer file would resurrect old rows */
    marble_db *db = open_db(0);
    put_range(db, 0, 1000, 1, 1);
    flush(db);
    compact(db);
    put_range(db, 0, 40, 1, 100);
    for (int64_t id = 3; id < 40; id += 10)
        del_id(db, id);
    flush(db);
    marble_scan_counters c;
    memset(&c, 0, sizeof c);
    marble_scan_spec spec;
    memset(&spec, 0, sizeof spec);
    marble_scan_predicate p = {"v", MARBLE_OP_LT, {MARBLE_DATUM_DOUBLE, 0, 20.0, NULL, 0}};
    spec.preds = &p;
    spec.n_preds = 1;
    spec.counters = &c;
    rows got = {0};
    expect_complete(db, &spec, &got, "merge zone v");
    /* the newer file and the old one it overlaps are read; old files it does not overlap, whose
     * rows all fail, are not */
    int64_t files = c.files_total;
    ASSERT_GE_INT(files, 2);
    ASSERT_EQ_INT(c.files_skipped, files - 2);
    rows_free(&got);
    /* a file that overlaps no other may be skipped by a value column's zone map */
    put_range(db, 5000, 300, 1, 3);
    flush(db);
    memset(&c, 0, sizeof c);
    expect_complete(db, &spec, &got, "merge zone v, disjoint file");
    ASSERT_EQ_INT(c.files_total, files + 1);
    ASSERT_EQ_INT(c.files_skipped, files - 1);
    rows_free(&got);
    /* key-column predicates may skip whole files even when they overlap others */
    memset(&c, 0, sizeof c);
    marble_scan_predicate k = {"id", MARBLE_OP_GE, {MARBLE_DATUM_INT, 5100, 0, NULL, 0}};
    spec.preds = &k;
    expect_complete(db, &spec, &got, "merge key pred");
    ASSERT_EQ_INT((int64_t)got.n, 300);
    ASSERT_EQ_INT(c.files_skipped, files);
    rows_free(&got);
    close_db(db);
}

TEST(bloom_skips_files)
{
    marble_db *db = open_db(0);
    /* four overlapping L0 files: ids = k (mod 4) */
    for (int k = 0; k < 4; k++) {
        put_range(db, k, 1000, 4, 1);
        flush(db);
    }
    marble_scan_counters c;
    memset(&c, 0, sizeof c);
    marble_scan_spec spec;
    memset(&spec, 0, sizeof spec);
    marble_scan_predicate p = {"id", MARBLE_OP_EQ, {MARBLE_DATUM_INT, 1777, 0, NULL, 0}};
    spec.preds = &p;
    spec.n_preds = 1;
    spec.counters = &c;
    rows got = {0};
    expect_complete(db, &spec, &got, "bloom");
    ASSERT_EQ_INT(c.files_total, 4);
    ASSERT_GE_INT(c.bloom_skipped, 2);
    ASSERT_LE_INT(c.bloom_skipped, 3);
    ASSERT_EQ_INT(c.files_skipped, c.bloom_skipped);
    int found = 0;
    for (size_t i = 0; i < got.n; i++)
        found += strncmp(got.v[i], "1777|", 5) == 0;
    ASSERT_EQ_INT(found, 1);
    rows_free(&got);
    /* an integral double literal fixes the key too; a fractional one rules out nothing */
    memset(&c, 0, sizeof c);
    p.value = (marble_datum){MARBLE_DATUM_DOUBLE, 0, 1777.0, NULL, 0};
    expect_complete(db, &spec, &got, "bloom double");
    ASSERT_GE_INT(c.bloom_skipped, 2);
    rows_free(&got);
    memset(&c, 0, sizeof c);
    p.value.d = 1777.5;
    expect_complete(db, &spec, &got, "bloom fractional");
    ASSERT_EQ_INT(c.bloom_skipped, 0);
    rows_free(&got);
    /* the clean-run case */
    compact(db);
    memset(&c, 0, sizeof c);
    p.value = (marble_datum){MARBLE_DATUM_INT, 1777, 0, NULL, 0};
    expect_complete(db, &spec, &got, "bloom clean");
    ASSERT_EQ_INT(c.files_total - c.files_skipped, 1);
    ASSERT_EQ_INT(c.batches_total - c.batches_skipped, 1);
    rows_free(&got);
    close_db(db);
}

/* ---- parallel reads ----------------------------------------------------------------------------
 */

typedef struct par {
    marble_source *src;
    const struct ArrowSchema *schema;
    rows *out; /* one per morsel */
    atomic_long next;
    atomic_int failed;
    char msg[MARBLE_ERROR_MESSAGE_SIZE + 16];
} par;

static void *par_worker(void *arg)
{
    par *p = arg;
    marble_error err = {0};
    for (;;) {
        /* two morsels at a time, read interleaved */
        long i = atomic_fetch_add(&p->next, 2);
        if (i >= p->src->n_morsels) break;
        void *cur[2] = {NULL, NULL};
        int live = 0, rc = MARBLE_OK;
        for (int k = 0; k < 2 && i + k < p->src->n_morsels && rc == MARBLE_OK; k++) {
            rc = p->src->open(p->src->ud, i + k, &cur[k], &err);
            live += rc == MARBLE_OK;
        }
        while (rc == MARBLE_OK && live) {
            for (int k = 0; k < 2 && rc == MARBLE_OK; k++) {
                if (!cur[k]) continue;
                struct ArrowArray a;
                rc = p->src->next(p->src->ud, cur[k], &a, &err);
                if (rc == MARBLE_ERR_NOT_FOUND) {
                    rc = MARBLE_OK;
                    p->src->close(p->src->ud, cur[k]);
                    cur[k] = NULL;
                    live--;
                    continue;
                }
                if (rc == MARBLE_OK) {
                    batch_text(p->schema, &a, &p->out[i + k]);
                    a.release(&a);
                }
            }
        }
        for (int k = 0; k < 2; k++)
            if (cur[k]) p->src->close(p->src->ud, cur[k]);
        if (rc != MARBLE_OK) {
            if (!atomic_exchange(&p->failed, 1))
                snprintf(p->msg, sizeof p->msg, "%d %s", rc, err.message);
            break;
        }
    }
    return NULL;
}

/* Reads every morsel on `threads` threads, then concatenates in morsel order. */
static void read_parallel(marble_source *src, int threads, rows *out)
{
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(src->get_schema(src->ud, &s, &err));
    par p;
    memset(&p, 0, sizeof p);
    p.src = src;
    p.schema = &s;
    p.out = calloc((size_t)src->n_morsels + 1, sizeof *p.out);
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, 0);
    pthread_t th[8];
    for (int i = 0; i < threads; i++)
        ASSERT_EQ_INT(pthread_create(&th[i], NULL, par_worker, &p), 0);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    if (atomic_load(&p.failed)) FAIL("parallel read: %s", p.msg);
    for (int64_t i = 0; i < src->n_morsels; i++)
        rows_append(out, &p.out[i]);
    free(p.out);
    s.release(&s);
}

typedef struct churn {
    marble_db *db;
    atomic_int stop;
    atomic_int failed;
} churn;

static void *churn_writer(void *arg)
{
    churn *c = arg;
    marble_error err = {0};
    int ver = 10;
    while (!atomic_load(&c->stop) && !atomic_load(&c->failed)) {
        put_range(c->db, (ver * 37) % 1500, 200, 1, ver);
        if (marble_db_flush(c->db, &err) != MARBLE_OK ||
            (ver % 3 == 0 && marble_db_compact(c->db, "t", &err) != MARBLE_OK))
            atomic_store(&c->failed, 1);
        ver++;
    }
    return NULL;
}

TEST(parallel_morsels_while_writing)
{
    for (int fast = 1; fast >= 0; fast--) {
        marble_db *db = fast ? clean_db(3000) : messy_db();
        marble_source src;
        marble_scan_spec spec;
        memset(&spec, 0, sizeof spec);
        spec.batch_rows = 64;
        make_source(db, &spec, &src);
        rows before = {0};
        read_scan(db, NULL, NULL, 0, NULL, &before);
        churn ch;
        ch.db = db;
        atomic_init(&ch.stop, 0);
        atomic_init(&ch.failed, 0);
        pthread_t w;
        ASSERT_EQ_INT(pthread_create(&w, NULL, churn_writer, &ch), 0);
        for (int round = 0; round < 3; round++) {
            rows got = {0};
            read_parallel(&src, 4, &got);
            rows_expect_equal(&got, &before, fast ? "parallel clean" : "parallel merge");
            rows_free(&got);
        }
        src.release(src.ud); /* while the writer flushes and compacts */
        atomic_store(&ch.stop, 1);
        pthread_join(w, NULL);
        ASSERT_FALSE(atomic_load(&ch.failed));
        rows_free(&before);
        /* a new source sees the new state */
        memset(&spec, 0, sizeof spec);
        expect_same(db, &spec, "after churn");
        close_db(db);
    }
}

/* ---- random workloads --------------------------------------------------------------------------
 */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(uint64_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state % n;
}

static void random_spec(marble_scan_spec *spec, marble_key_range *r, marble_value *lv,
                        marble_value *hv, marble_scan_predicate *p, size_t *np)
{
    memset(spec, 0, sizeof *spec);
    int64_t lo = rnd(4) == 0 ? INT64_MIN : (int64_t)rnd(2200) - 100;
    int64_t hi = rnd(4) == 0       ? INT64_MAX
                 : lo == INT64_MIN ? (int64_t)rnd(2200)
                                   : lo + (int64_t)rnd(800);
    *r = range_of(lv, hv, lo, hi, (int)rnd(2), (int)rnd(2));
    if (rnd(5)) spec->range = r;
    static const char *cols[] = {"id", "c", "v"};
    static const marble_expr_op ops[] = {MARBLE_OP_EQ, MARBLE_OP_LT, MARBLE_OP_LE, MARBLE_OP_GT,
                                         MARBLE_OP_GE};
    *np = rnd(3);
    for (size_t i = 0; i < *np; i++) {
        int col = (int)rnd(3);
        p[i].column = cols[col];
        p[i].op = ops[rnd(5)];
        int64_t base = col == 0   ? (int64_t)rnd(2100)
                       : col == 1 ? (int64_t)rnd(210)
                                  : (int64_t)rnd(1100);
        if (rnd(2)) {
            p[i].value = (marble_datum){MARBLE_DATUM_INT, base, 0, NULL, 0};
        } else {
            double d = (double)base + (rnd(2) ? 0.5 : 0.0);
            p[i].value = (marble_datum){MARBLE_DATUM_DOUBLE, 0, d, NULL, 0};
        }
    }
    spec->preds = p;
    spec->n_preds = *np;
    spec->batch_rows = rnd(3) == 0 ? (int64_t)rnd(150) + 1 : 0;
}

static void random_check(marble_db *db, const marble_snapshot *snap, int clean, const char *what)
{
    marble_scan_spec spec;
    marble_key_range r;
    marble_value lv, hv;
    marble_scan_predicate p[3];
    size_t np;
    random_spec(&spec, &r, &lv, &hv, p, &np);
    spec.snapshot = snap;
    marble_scan_counters c;
    memset(&c, 0, sizeof c);
    spec.counters = &c;
    rows got = {0};
    expect_complete(db, &spec, &got, what);
    rows scan = {0};
    read_scan(db, spec.range, NULL, 0, snap, &scan);
    if (np == 0) rows_expect_equal(&got, &scan, what);
    if (clean) {
        if (!subsequence(&got, &scan))
            FAIL("%s: clean-run rows are not a subset of the scan", what);
    }
    ASSERT_EQ_INT(c.rows_scanned, (int64_t)got.n);
    rows_free(&got);
    rows_free(&scan);
}

TEST(random_workload)
{
    marble_db *db = open_db(1);
    marble_snapshot *snap = NULL;
    marble_error err = {0};
    char what[64];
    for (int round = 0; round < 24; round++) {
        int nops = 1 + (int)rnd(4);
        for (int k = 0; k < nops; k++) {
            int64_t first = (int64_t)rnd(2000), n = 1 + (int64_t)rnd(300),
                    step = 1 + (int64_t)rnd(3);
            switch (rnd(6)) {
            case 0:
            case 1:
            case 2:
                put_range(db, first, n, step, round);
                break;
            case 3:
                for (int64_t i = 0; i < n / 3; i++)
                    del_id(db, first + i * step);
                break;
            case 4:
                flush(db);
                break;
            default:
                if (rnd(3) == 0) compact(db);
            }
        }
        if (!snap && rnd(4) == 0) CHECK_OK(marble_db_snapshot_create(db, &snap, &err));
        marble__scan_fast_path = (int)rnd(4) != 0;
        for (int q = 0; q < 6; q++) {
            snprintf(what, sizeof what, "round %d query %d", round, q);
            random_check(db, NULL, 0, what);
            if (snap) random_check(db, snap, 0, what);
        }
        marble__scan_fast_path = 1;
        if (snap && rnd(3) == 0) {
            marble_db_snapshot_release(snap);
            snap = NULL;
        }
    }
    if (snap) marble_db_snapshot_release(snap);
    /* one clean sorted run: the source's rows are the scan's, minus pruned batches */
    compact(db);
    for (int q = 0; q < 30; q++) {
        snprintf(what, sizeof what, "clean query %d", q);
        random_check(db, NULL, 1, what);
    }
    close_db(db);
}

/* ---- a composite key with a string column ------------------------------------------------------ */

static void put_s(marble_db *db, int mod)
{
    marble_error err = {0};
    struct ArrowSchema s;
    struct ArrowArray a;
    CHECK_OK(marble_arrow_schema_parse("g:utf8!,n:int32!,x:float64", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (int g = 0; g < 20; g++)
        for (int n = mod; n < 60; n += 3) {
            char name[16];
            int len = snprintf(name, sizeof name, "g%02d", g);
            CHECK_OK(marble_builder_append_bytes(b, 0, name, (size_t)len, &err));
            CHECK_OK(marble_builder_append_int(b, 1, n, &err));
            CHECK_OK(marble_builder_append_double(b, 2, n * 1.5 + g, &err));
        }
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    marble_batch_builder_destroy(b);
    CHECK_OK(marble_db_put(db, "s", &s, &a, NULL, &err));
    marble_arrow_array_release(&a);
    marble_arrow_schema_release(&s);
}

TEST(composite_string_key_prefixes_and_bloom)
{
    marble_error err = {0};
    marble_db *db = open_db(0);
    struct ArrowSchema sch;
    CHECK_OK(marble_arrow_schema_parse("g:utf8!,n:int32!,x:float64", &sch, &err));
    const char *key[] = {"g", "n"};
    CHECK_OK(marble_db_create_table(db, "s", &sch, key, 2, &err));
    marble_arrow_schema_release(&sch);
    for (int mod = 0; mod < 3; mod++) {
        put_s(db, mod);
        flush(db);
    }
    g_table = "s";
    for (int clean = 0; clean < 2; clean++) {
        if (clean) CHECK_OK(marble_db_compact(db, "s", &err));
        static const char *const gs[] = {"g05", "g00", "g19", "g", "g05\x01", "h"};
        for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++)
            for (int flags = 0; flags < 4; flags++) {
                marble_value v = {MARBLE_VALUE_BYTES, 0, 0, 0, gs[i], strlen(gs[i])};
                marble_value w[2] = {v, {MARBLE_VALUE_INT, 30, 0, 0, NULL, 0}};
                marble_key_range r;
                memset(&r, 0, sizeof r);
                r.lower = (marble_key){&v, 1};
                r.lower_exclusive = flags & 1;
                r.upper = (marble_key){flags & 2 ? w : &v, flags & 2 ? 2 : 1};
                r.upper_inclusive = 1;
                marble_scan_spec spec;
                memset(&spec, 0, sizeof spec);
                spec.range = &r;
                char what[64];
                snprintf(what, sizeof what, "%s prefix %s flags %d", clean ? "clean" : "merge",
                         gs[i], flags);
                expect_same(db, &spec, what);
            }
        marble_scan_counters c;
        memset(&c, 0, sizeof c);
        marble_scan_predicate p[2] = {
            {"n", MARBLE_OP_EQ, {MARBLE_DATUM_INT, 13, 0, NULL, 0}},
            {"g", MARBLE_OP_EQ, {MARBLE_DATUM_STRING, 0, 0, "g07", 3}},
        };
        marble_scan_spec spec;
        memset(&spec, 0, sizeof spec);
        spec.preds = p;
        spec.n_preds = 2;
        spec.counters = &c;
        marble_source src;
        make_source(db, &spec, &src);
        rows got = {0};
        read_source(&src, 0, &got);
        src.release(src.ud);
        int found = 0;
        for (size_t i = 0; i < got.n; i++)
            found += strcmp(got.v[i], "g07|13|26.5") == 0;
        ASSERT_EQ_INT(found, 1);
        if (!clean) {
            ASSERT_EQ_INT(c.files_total, 3);
            ASSERT_GE_INT(c.bloom_skipped, 1);
        } else {
            ASSERT_EQ_INT(c.files_total - c.files_skipped, 1);
        }
        rows_free(&got);
    }
    g_table = "t";
    close_db(db);
}
