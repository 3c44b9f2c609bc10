/* End-to-end tests of queries over a real database (marble_db_query_sql, marble_db_query,
 * marble_db_explain): every clause, planner errors, pushdown proven by the scan's counters, point
 * lookups, and a randomized differential test against a reference evaluator over a model of the
 * table (nulls, overwrites, deletes; data part in SSTables and part in the memtable). */
#include <inttypes.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/db.h"
#include "marble/query.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

static marble_error err;

static marble_db *open_db(int batch_rows)
{
    char path[512];
    snprintf(path, sizeof path, "%s/db", marble_test_tmpdir());
    marble_db_options o;
    marble_db_options_init(&o);
    o.create_if_missing = 1;
    o.sync = MARBLE_SYNC_NONE;
    o.batch_rows = batch_rows;
    o.write_buffer_size = 1 << 20;
    o.disable_auto_compaction = 1;
    marble_db *db;
    CHECK_OK(marble_db_open(path, &o, &db, &err));
    return db;
}

static void close_db(marble_db *db)
{
    CHECK_OK(marble_db_close(db, &err));
}

/* t: id int64 key, k int32, v float64, s utf8, z int64 (= id, not a key: zone maps) */
#define T_SCHEMA "id:int64!,k:int32,v:float64,s:utf8,z:int64"

static void create_t(marble_db *db)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(T_SCHEMA, &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "t", &s, key, 1, &err));
    marble_arrow_schema_release(&s);
}

typedef struct row {
    int present;
    int64_t id;
    int k_null, v_null, s_null;
    int32_t k;
    double v;
    char s[16];
} row;

static void put_rows(marble_db *db, const row *rows, size_t n)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    marble_batch_builder *b;
    CHECK_OK(marble_arrow_schema_parse(T_SCHEMA, &s, &err));
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (size_t i = 0; i < n; i++) {
        const row *r = &rows[i];
        CHECK_OK(marble_builder_append_int(b, 0, r->id, &err));
        CHECK_OK(r->k_null ? marble_builder_append_null(b, 1, &err)
                           : marble_builder_append_int(b, 1, r->k, &err));
        CHECK_OK(r->v_null ? marble_builder_append_null(b, 2, &err)
                           : marble_builder_append_double(b, 2, r->v, &err));
        CHECK_OK(r->s_null ? marble_builder_append_null(b, 3, &err)
                           : marble_builder_append_bytes(b, 3, r->s, strlen(r->s), &err));
        CHECK_OK(marble_builder_append_int(b, 4, r->id, &err));
    }
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    marble_batch_builder_destroy(b);
    CHECK_OK(marble_db_put(db, "t", &s, &a, NULL, &err));
    a.release(&a);
    s.release(&s);
}

static row std_row(int64_t id)
{
    row r = {1, id, 0, 0, 0, (int32_t)(id % 10), (double)id * 0.5, ""};
    r.k_null = id % 11 == 5;
    r.s_null = id % 13 == 0;
    snprintf(r.s, sizeof r.s, "s%02d", (int)(id % 7));
    return r;
}

/* Rows id in [first, first + n) of std_row, in batches of 500. */
static void fill(marble_db *db, int64_t first, int64_t n)
{
    row *rows = calloc((size_t)n, sizeof *rows);
    for (int64_t i = 0; i < n; i++)
        rows[i] = std_row(first + i);
    for (int64_t i = 0; i < n; i += 500)
        put_rows(db, rows + i, (size_t)(n - i < 500 ? n - i : 500));
    free(rows);
}

/* ---- results as text ---- */

typedef struct result {
    char **rows;
    size_t n, cap;
    char names[512];
} result;

static void result_free(result *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->rows[i]);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

static void cell(char *buf, size_t cap, const struct ArrowSchema *f, const struct ArrowArray *c,
                 int64_t i)
{
    if (marble_arrow_is_null(c, i)) {
        snprintf(buf, cap, "NULL");
        return;
    }
    const char *fmt = f->format;
    if (!strcmp(fmt, "g") || !strcmp(fmt, "f")) {
        double d = marble_arrow_get_double(f, c, i);
        if (d == 0) d = 0; /* -0.0 prints as 0 */
        snprintf(buf, cap, "%.17g", d);
    } else if (!strcmp(fmt, "u") || !strcmp(fmt, "U")) {
        const void *p;
        size_t n;
        marble_arrow_get_bytes(f, c, i, &p, &n);
        snprintf(buf, cap, "'%.*s'", (int)n, (const char *)p);
    } else if (!strcmp(fmt, "b")) {
        snprintf(buf, cap, "%s", marble_arrow_get_int(f, c, i) ? "true" : "false");
    } else {
        snprintf(buf, cap, "%" PRId64, marble_arrow_get_int(f, c, i));
    }
}

static void add_row(result *r, const char *text)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->rows = realloc(r->rows, r->cap * sizeof *r->rows);
    }
    r->rows[r->n++] = strdup(text);
}

static void collect(struct ArrowArrayStream *st, result *r)
{
    struct ArrowSchema s;
    ASSERT_OK(st->get_schema(st, &s));
    r->names[0] = 0;
    for (int64_t c = 0; c < s.n_children; c++) {
        if (c) strcat(r->names, ",");
        strncat(r->names, s.children[c]->name, sizeof r->names - strlen(r->names) - 2);
    }
    for (;;) {
        struct ArrowArray a;
        int rc = st->get_next(st, &a);
        if (rc) FAIL("get_next: %d %s", rc, st->get_last_error(st));
        if (!a.release) break;
        for (int64_t i = 0; i < a.length; i++) {
            char line[1024] = "", v[256];
            for (int64_t c = 0; c < s.n_children; c++) {
                cell(v, sizeof v, s.children[c], a.children[c], i + a.offset);
                if (c) strcat(line, "|");
                strncat(line, v, sizeof line - strlen(line) - 1);
            }
            add_row(r, line);
        }
        a.release(&a);
    }
    s.release(&s);
}

static void run(marble_db *db, const char *sql, result *r, marble_query_stats *stats)
{
    struct ArrowArrayStream st;
    marble_query_stats local;
    memset(r, 0, sizeof *r);
    int rc = marble_db_query_sql(db, sql, NULL, &st, stats ? stats : &local, &err);
    if (rc) FAIL("query(%s): %d %s", sql, rc, err.message);
    collect(&st, r);
    st.release(&st);
}

/* The result as one string: "names: row; row; ..." */
static char *joined(const result *r)
{
    size_t n = strlen(r->names) + 4;
    for (size_t i = 0; i < r->n; i++)
        n += strlen(r->rows[i]) + 2;
    char *s = malloc(n);
    strcpy(s, r->names);
    strcat(s, ":");
    for (size_t i = 0; i < r->n; i++) {
        strcat(s, i ? "; " : " ");
        strcat(s, r->rows[i]);
    }
    return s;
}

static void expect(marble_db *db, const char *sql, const char *want)
{
    result r;
    run(db, sql, &r, NULL);
    char *got = joined(&r);
    if (strcmp(got, want)) FAIL("%s\n  got:  %s\n  want: %s", sql, got, want);
    free(got);
    result_free(&r);
}

static void expect_fail(marble_db *db, const char *sql, int code, const char *msg)
{
    struct ArrowArrayStream st;
    st.release = NULL;
    int rc = marble_db_query_sql(db, sql, NULL, &st, NULL, &err);
    if (rc != code) FAIL("%s: code %d, want %d (%s)", sql, rc, code, err.message);
    ASSERT_NULL((void *)st.release);
    ASSERT_CONTAINS(err.message, msg);
}

TEST(clauses)
{
    marble_db *db = open_db(100);
    create_t(db);
    fill(db, 0, 600);
    CHECK_OK(marble_db_flush(db, &err));
    fill(db, 600, 400); /* in the memtable */
    expect(db, "SELECT * FROM t WHERE id < 3",
           "id,k,v,s,z: 0|0|0|NULL|0; 1|1|0.5|'s01'|1; 2|2|1|'s02'|2");
    expect(db, "SELECT id, v * 2 AS w, -k, s IS NULL FROM t WHERE id >= 10 AND id < 14",
           "id,w,-k,s IS NULL: 10|10|0|false; 11|11|-1|false; 12|12|-2|false; 13|13|-3|true");
    expect(db, "SELECT count(*), sum(id), min(v), max(s), avg(id), count(k) FROM t",
           "count(*),sum(id),min(v),max(s),avg(id),count(k): 1000|499500|0|'s06'|499.5|909");
    expect(db, "SELECT count(*) FROM t WHERE id < 0", "count(*): 0");
    expect(db, "SELECT sum(id), min(s) FROM t WHERE id < 0", "sum(id),min(s): NULL|NULL");
    expect(db, "SELECT k, count(*) AS n FROM t WHERE k < 3 GROUP BY k ORDER BY k",
           "k,n: 0|91; 1|91; 2|91");
    expect(db, "SELECT count(*) AS n, k FROM t GROUP BY k ORDER BY n DESC, k LIMIT 3",
           "n,k: 91|0; 91|1; 91|2");
    expect(db, "SELECT k, count(*) FROM t GROUP BY k ORDER BY 1 DESC LIMIT 2",
           "k,count(*): 9|91; 8|91");
    expect(db, "SELECT k, count(*) FROM t GROUP BY k ORDER BY k LIMIT 1 OFFSET 10",
           "k,count(*): NULL|91");
    expect(db, "SELECT k % 2 AS odd, sum(id) FROM t WHERE id < 10 GROUP BY k % 2 ORDER BY odd",
           "odd,sum(id): 0|20; 1|20; NULL|5");
    expect(db,
           "SELECT max(id), k FROM t WHERE id < 30 AND k IS NOT NULL GROUP BY k ORDER BY 2 LIMIT 2",
           "max(id),k: 20|0; 21|1");
    /* ORDER BY a table column that is not selected */
    expect(db, "SELECT id FROM t WHERE id < 20 ORDER BY v DESC LIMIT 3", "id: 19; 18; 17");
    expect(db, "SELECT id, s FROM t WHERE id < 20 ORDER BY s DESC, id LIMIT 3 OFFSET 1",
           "id,s: 5|'s05'; 12|'s05'; 19|'s05'");
    expect(db, "SELECT id AS x FROM t WHERE id IN (5, 3, 900) ORDER BY x DESC", "x: 900; 5; 3");
    expect(db, "SELECT id, v FROM t WHERE id < 10 ORDER BY 2 DESC LIMIT 2 OFFSET 1",
           "id,v: 8|4; 7|3.5");
    expect(db, "SELECT id FROM t LIMIT 3", "id: 0; 1; 2");
    expect(db, "SELECT id FROM t WHERE id > 995", "id: 996; 997; 998; 999");
    expect(db, "SELECT id FROM t WHERE id >= 598 AND id <= 601 ORDER BY id DESC",
           "id: 601; 600; 599; 598");
    expect(db, "SELECT id FROM t LIMIT 0", "id:");
    expect(db, "SELECT id, id FROM t WHERE s = 's03' AND id < 20", "id,id: 3|3; 10|10; 17|17");
    expect(db, "SELECT id FROM t WHERE k IS NULL AND id < 30", "id: 5; 16; 27");
    expect(db, "SELECT id FROM t WHERE NOT (id > 2) OR id = 500.0", "id: 0; 1; 2; 500");
    expect(db, "SELECT id FROM t WHERE id < 2.5 OR id > 998.5", "id: 0; 1; 2; 999");
    expect(db, "SELECT count(*) FROM t WHERE id IN (1, 2, NULL, 2000) AND id NOT IN (2)",
           "count(*): 1");
    expect(db, "SELECT count(*) FROM t WHERE s IS NULL", "count(*): 77");
    marble_query *q;
    CHECK_OK(marble_query_create("t", &q, &err));
    marble_expr *e = marble_expr_column("id");
    marble_expr *w = marble_expr_binary(MARBLE_OP_LT, marble_expr_column("id"), marble_expr_int(2));
    CHECK_OK(marble_query_select(q, e, "ident", &err));
    CHECK_OK(marble_query_where(q, w, &err));
    marble_expr_free(e);
    marble_expr_free(w);
    struct ArrowArrayStream st;
    result r = {0};
    CHECK_OK(marble_db_query(db, q, NULL, &st, NULL, &err));
    marble_query_destroy(q); /* the stream does not need the query */
    collect(&st, &r);
    st.release(&st);
    char *j = joined(&r);
    ASSERT_EQ_STR(j, "ident: 0; 1");
    free(j);
    result_free(&r);
    close_db(db);
}

TEST(planner_errors)
{
    marble_db *db = open_db(100);
    create_t(db);
    fill(db, 0, 10);
    const int E = MARBLE_ERR_INVALID_ARGUMENT;
    expect_fail(db, "SELECT k, v FROM t GROUP BY k", E, "'v' must appear in GROUP BY");
    expect_fail(db, "SELECT k + 1, count(*) FROM t GROUP BY k", E,
                "'k + 1' must appear in GROUP BY");
    expect_fail(db, "SELECT id, count(*) FROM t", E, "'id' must appear in GROUP BY");
    expect_fail(db, "SELECT * FROM t GROUP BY k", E, "SELECT * cannot be used with GROUP BY");
    expect_fail(db, "SELECT x FROM t", E, "column 'x' not found in table 't'");
    expect_fail(db, "SELECT id FROM t WHERE nope > 1", E, "column 'nope' not found");
    expect_fail(db, "SELECT sum(nope) FROM t", E, "column 'nope' not found");
    expect_fail(db, "SELECT id FROM t ORDER BY 2", E,
                "ORDER BY position 2 is not in the select list (1..1)");
    expect_fail(db, "SELECT id FROM t ORDER BY zz", E,
                "ORDER BY 'zz' is not a column of the result or of the table");
    expect_fail(db, "SELECT k, count(*) FROM t GROUP BY k ORDER BY v", E,
                "ORDER BY 'v' is not a column of the result");
    expect_fail(db, "SELECT id FROM nosuch", MARBLE_ERR_NOT_FOUND, "nosuch");
    expect_fail(db, "SELECT id FROM t WHERE s > 1", E, "");
    expect_fail(db, "SELECT id FROM t WHERE lower(s) = 'a'", MARBLE_ERR_UNSUPPORTED,
                "function 'lower'");
    /* errors during execution surface from the stream with Marble's code */
    struct ArrowArrayStream st;
    CHECK_OK(marble_db_query_sql(db, "SELECT id * 9223372036854775807 FROM t WHERE id > 1", NULL,
                                 &st, NULL, &err));
    struct ArrowArray a;
    int rc = 0;
    for (;;) {
        if ((rc = st.get_next(&st, &a)) != 0 || !a.release) break;
        a.release(&a);
    }
    ASSERT_NE_INT(rc, 0);
    ASSERT_EQ_INT(marble_stream_last_code(&st), MARBLE_ERR_LIMIT);
    st.release(&st);
    close_db(db);
}

TEST(pushdown)
{
    marble_db *db = open_db(100);
    create_t(db);
    for (int64_t i = 0; i < 10000; i += 2500) {
        fill(db, i, 2500);
        CHECK_OK(marble_db_flush(db, &err));
    }
    marble_query_stats st;
    result a, b;
    /* key range: files and batches outside it are skipped */
    run(db, "SELECT count(*), sum(z) FROM t WHERE id >= 5000 AND id < 5100", &a, &st);
    ASSERT_EQ_INT(a.n, 1);
    ASSERT_EQ_STR(a.rows[0], "100|504950");
    ASSERT_EQ_INT(st.point_lookup, 0);
    ASSERT_GT_INT(st.files_total + st.files_skipped, 0);
    ASSERT_GT_INT(st.files_skipped + st.batches_skipped, 0);
    ASSERT_LE_INT(st.rows_scanned, 300);
    ASSERT_EQ_INT(st.files_total, 4); /* four L0 files: the key range rules out three */
    ASSERT_EQ_INT(st.files_skipped, 3);
    /* the same without pushdown-friendly forms reads everything, same answer */
    run(db, "SELECT count(*), sum(z) FROM t WHERE id + 0 >= 5000 AND 0 + id < 5100", &b, &st);
    ASSERT_EQ_STR(b.rows[0], a.rows[0]);
    ASSERT_EQ_INT(st.rows_scanned, 10000);
    ASSERT_EQ_INT(st.files_skipped + st.batches_skipped, 0);
    result_free(&a);
    result_free(&b);
    /* one sorted run: batches are skipped by the key range and by zone maps */
    CHECK_OK(marble_db_compact(db, "t", &err));
    run(db, "SELECT count(*), sum(z) FROM t WHERE id >= 5000 AND id < 5100", &a, &st);
    ASSERT_EQ_STR(a.rows[0], "100|504950");
    ASSERT_GT_INT(st.batches_skipped, 0);
    ASSERT_LE_INT(st.rows_scanned, 300);
    result_free(&a);
    /* zone maps of a non-key column */
    run(db, "SELECT count(*) FROM t WHERE z > 9900", &a, &st);
    ASSERT_EQ_STR(a.rows[0], "99");
    ASSERT_GT_INT(st.batches_skipped + st.files_skipped, 0);
    ASSERT_LE_INT(st.rows_scanned, 300);
    result_free(&a);
    run(db, "SELECT count(*) FROM t WHERE 9900 < z AND z <= 1e9", &a, &st);
    ASSERT_EQ_STR(a.rows[0], "99");
    ASSERT_LE_INT(st.rows_scanned, 300);
    result_free(&a);
    run(db, "SELECT count(*) FROM t WHERE z IN (10, 20, 9990)", &a, &st);
    ASSERT_EQ_STR(a.rows[0], "3");
    ASSERT_EQ_INT(st.point_lookup, 0);
    result_free(&a);
    /* point lookups */
    run(db, "SELECT * FROM t WHERE id = 42", &a, &st);
    ASSERT_EQ_INT(st.point_lookup, 1);
    ASSERT_EQ_INT(a.n, 1);
    ASSERT_EQ_STR(a.rows[0], "42|2|21|'s00'|42");
    result_free(&a);
    run(db, "SELECT id, v FROM t WHERE id IN (7, 3, 3, 99999, -1) AND v > 1", &a, &st);
    ASSERT_EQ_INT(st.point_lookup, 1);
    ASSERT_EQ_INT(st.rows_scanned, 2);
    char *j = joined(&a);
    ASSERT_EQ_STR(j, "id,v: 3|1.5; 7|3.5");
    free(j);
    result_free(&a);
    run(db, "SELECT count(*) FROM t WHERE id = 42 AND id = 43", &a, &st);
    ASSERT_EQ_STR(a.rows[0], "0");
    result_free(&a);
    run(db, "SELECT count(*) FROM t WHERE id = 2.5", &a, &st);
    ASSERT_EQ_STR(a.rows[0], "0");
    ASSERT_EQ_INT(st.point_lookup, 0);
    result_free(&a);
    /* explain */
    marble_query *q;
    char *text;
    CHECK_OK(marble_query_parse("SELECT k, sum(v) FROM t WHERE id >= 10 AND id < 20 AND v > 0.5 "
                                "GROUP BY k ORDER BY 2 DESC LIMIT 10",
                                &q, &err));
    CHECK_OK(marble_db_explain(db, q, &text, &err));
    ASSERT_EQ_STR(text,
                  "scan t columns=[id, k, v] range=[id >= 10, id < 20] prune=[id >= 10, "
                  "id < 20, v > 0.5] -> filter (((id >= 10) AND (id < 20)) AND (v > 0.5)) "
                  "-> aggregate keys=[k] aggs=[sum(v)] -> top-n 10 [sum(v) DESC] -> limit 10");
    marble_free(text);
    marble_query_destroy(q);
    CHECK_OK(marble_query_parse("SELECT * FROM t WHERE id IN (1, 2, 3)", &q, &err));
    CHECK_OK(marble_db_explain(db, q, &text, &err));
    ASSERT_CONTAINS(text, "point lookup (3 keys) t columns=[id, k, v, s, z] -> filter");
    marble_free(text);
    marble_query_destroy(q);
    CHECK_OK(marble_query_parse("SELECT id FROM t ORDER BY v", &q, &err));
    CHECK_OK(marble_db_explain(db, q, &text, &err));
    ASSERT_EQ_STR(text, "scan t columns=[id, v] -> project [id] -> sort [v]");
    marble_free(text);
    marble_query_destroy(q);
    close_db(db);
}

TEST(composite_key_and_types)
{
    marble_db *db = open_db(50);
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("a:int32!,b:utf8!,c:float32!,x:int64", &s, &err));
    const char *key[] = {"a", "b", "c"};
    CHECK_OK(marble_db_create_table(db, "m", &s, key, 3, &err));
    marble_batch_builder *bb;
    CHECK_OK(marble_batch_builder_create(&s, &bb, &err));
    int64_t n = 0;
    for (int a = 0; a < 20; a++)
        for (int b = 0; b < 5; b++)
            for (int c = 0; c < 3; c++) {
                char name[8];
                snprintf(name, sizeof name, "b%d", b);
                CHECK_OK(marble_builder_append_int(bb, 0, a, &err));
                CHECK_OK(marble_builder_append_bytes(bb, 1, name, strlen(name), &err));
                CHECK_OK(marble_builder_append_double(bb, 2, c * 0.25, &err));
                CHECK_OK(marble_builder_append_int(bb, 3, n++, &err));
            }
    struct ArrowArray arr;
    CHECK_OK(marble_batch_builder_finish(bb, &arr, &err));
    marble_batch_builder_destroy(bb);
    CHECK_OK(marble_db_put(db, "m", &s, &arr, NULL, &err));
    arr.release(&arr);
    s.release(&s);
    CHECK_OK(marble_db_compact(db, "m", &err));
    marble_query_stats st;
    result r;
    run(db, "SELECT x FROM m WHERE a = 7 AND b = 'b2' AND c = 0.25", &r, &st);
    ASSERT_EQ_INT(st.point_lookup, 1);
    ASSERT_EQ_INT(r.n, 1);
    ASSERT_EQ_STR(r.rows[0], "112");
    result_free(&r);
    run(db,
        "SELECT x FROM m WHERE a = 7 AND b IN ('b2', 'b4', 'zz') AND c IN (0.25, 0.5) ORDER BY x",
        &r, &st);
    ASSERT_EQ_INT(st.point_lookup, 1);
    ASSERT_EQ_INT(st.rows_scanned, 4);
    char *j = joined(&r);
    ASSERT_EQ_STR(j, "x: 112; 113; 118; 119");
    free(j);
    result_free(&r);
    /* a zero double key could be -0.0 in the key order: no point gets, still the right rows */
    run(db, "SELECT x FROM m WHERE a = 7 AND b IN ('b2', 'b4') AND c IN (0, 0.5) ORDER BY x", &r,
        &st);
    ASSERT_EQ_INT(st.point_lookup, 0);
    j = joined(&r);
    ASSERT_EQ_STR(j, "x: 111; 113; 117; 119");
    free(j);
    result_free(&r);
    /* int literal beyond int32: no narrowing, right answer */
    run(db, "SELECT count(*) FROM m WHERE a < 5000000000 AND a > -5000000000", &r, &st);
    ASSERT_EQ_STR(r.rows[0], "300");
    result_free(&r);
    run(db, "SELECT count(*) FROM m WHERE a = 5000000000", &r, &st);
    ASSERT_EQ_STR(r.rows[0], "0");
    result_free(&r);
    /* prefix range on the leading key columns */
    run(db, "SELECT count(*), min(x), max(x) FROM m WHERE a = 3 AND b > 'b1' AND b <= 'b3'", &r,
        &st);
    ASSERT_EQ_STR(r.rows[0], "6|51|56");
    ASSERT_EQ_INT(st.point_lookup, 0);
    ASSERT_GT_INT(st.batches_skipped + st.files_skipped, 0);
    result_free(&r);
    run(db, "SELECT count(*) FROM m WHERE a >= 18.5", &r, &st);
    ASSERT_EQ_STR(r.rows[0], "15");
    result_free(&r);
    run(db, "SELECT count(*) FROM m WHERE a > 18.5 OR a < 0.5", &r, &st);
    ASSERT_EQ_STR(r.rows[0], "30");
    result_free(&r);
    marble_query *q;
    char *text;
    CHECK_OK(marble_query_parse(
        "SELECT x FROM m WHERE a = 3 AND b > 'b1' AND b <= 'b3' AND c = 0.1", &q, &err));
    CHECK_OK(marble_db_explain(db, q, &text, &err));
    ASSERT_CONTAINS(text, "range=[a = 3, b > 'b1', b <= 'b3']");
    marble_free(text);
    marble_query_destroy(q);
    close_db(db);
}

/* ---- randomized differential test ---- */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define NIDS 3000

/* Three-valued logic: 0 false, 1 true, 2 NULL. */
typedef struct pred_node {
    char sql[256];
    int (*eval)(const struct pred_node *p, const row *r);
    int col; /* 0 id, 1 k, 2 v, 3 s */
    int op;  /* 0 = 1 != 2 < 3 <= 4 > 5 >= */
    int64_t i;
    double d;
    char s[8];
    int64_t list[4];
    int nlist;
    const struct pred_node *a, *b;
} pred_node;

static int cmp3(int c, int op)
{
    switch (op) {
    case 0:
        return c == 0;
    case 1:
        return c != 0;
    case 2:
        return c < 0;
    case 3:
        return c <= 0;
    case 4:
        return c > 0;
    default:
        return c >= 0;
    }
}

static int eval_cmp(const pred_node *p, const row *r)
{
    switch (p->col) {
    case 0:
        return cmp3((r->id > p->i) - (r->id < p->i), p->op);
    case 1:
        return r->k_null ? 2 : cmp3((r->k > p->i) - (r->k < p->i), p->op);
    case 2:
        return r->v_null ? 2 : cmp3((r->v > p->d) - (r->v < p->d), p->op);
    default: {
        if (r->s_null) return 2;
        int c = strcmp(r->s, p->s);
        return cmp3((c > 0) - (c < 0), p->op);
    }
    }
}

static int eval_isnull(const pred_node *p, const row *r)
{
    int isnull = p->col == 1 ? r->k_null : p->col == 2 ? r->v_null : r->s_null;
    return p->op ? !isnull : isnull;
}

static int eval_in(const pred_node *p, const row *r)
{
    if (p->col == 1 && r->k_null) return 2;
    int64_t x = p->col == 0 ? r->id : r->k;
    int found = 0;
    for (int i = 0; i < p->nlist; i++)
        found |= x == p->list[i];
    return p->op ? !found : found;
}

static int eval_and(const pred_node *p, const row *r)
{
    int a = p->a->eval(p->a, r), b = p->b->eval(p->b, r);
    if (a == 0 || b == 0) return 0;
    return a == 1 && b == 1 ? 1 : 2;
}

static int eval_or(const pred_node *p, const row *r)
{
    int a = p->a->eval(p->a, r), b = p->b->eval(p->b, r);
    if (a == 1 || b == 1) return 1;
    return a == 0 && b == 0 ? 0 : 2;
}

static int eval_not(const pred_node *p, const row *r)
{
    int a = p->a->eval(p->a, r);
    return a == 2 ? 2 : !a;
}

static pred_node nodes[64];
static int n_nodes;

static const pred_node *random_pred(int depth)
{
    static const char *const ops[] = {"=", "!=", "<", "<=", ">", ">="};
    static const char *const cols[] = {"id", "k", "v", "s"};
    pred_node *p = &nodes[n_nodes++];
    memset(p, 0, sizeof *p);
    int kind = depth > 0 ? (int)(rnd() % 8) : (int)(rnd() % 4);
    if (kind <= 1) {
        p->eval = eval_cmp;
        p->col = (int)(rnd() % 4);
        p->op = (int)(rnd() % 6);
        if (kind == 0 && p->col == 0) p->op = 2 + (int)(rnd() % 4); /* ranges on the key */
        int lit_left = rnd() % 4 == 0;
        char lit[32];
        if (p->col == 0) {
            p->i = (int64_t)(rnd() % (NIDS + 200)) - 100;
            snprintf(lit, sizeof lit, "%" PRId64, p->i);
        } else if (p->col == 1) {
            p->i = (int64_t)(rnd() % 12) - 1;
            snprintf(lit, sizeof lit, "%" PRId64, p->i);
        } else if (p->col == 2) {
            p->d = (double)(rnd() % 400) * 0.25 - 10;
            snprintf(lit, sizeof lit, "%.2f", p->d);
        } else {
            snprintf(p->s, sizeof p->s, "s%02d", (int)(rnd() % 8));
            snprintf(lit, sizeof lit, "'%s'", p->s);
        }
        if (lit_left) {
            static const int flipped[] = {0, 1, 4, 5, 2, 3};
            snprintf(p->sql, sizeof p->sql, "%s %s %s", lit, ops[flipped[p->op]], cols[p->col]);
        } else {
            snprintf(p->sql, sizeof p->sql, "%s %s %s", cols[p->col], ops[p->op], lit);
        }
    } else if (kind == 2) {
        p->eval = eval_isnull;
        p->col = 1 + (int)(rnd() % 3);
        p->op = (int)(rnd() % 2);
        snprintf(p->sql, sizeof p->sql, "%s IS %sNULL", cols[p->col], p->op ? "NOT " : "");
    } else if (kind == 3) {
        p->eval = eval_in;
        p->col = rnd() % 3 ? 0 : 1;
        p->op = rnd() % 5 == 0;
        p->nlist = 1 + (int)(rnd() % 4);
        char list[128] = "";
        for (int i = 0; i < p->nlist; i++) {
            p->list[i] = p->col == 0 ? (int64_t)(rnd() % NIDS) : (int64_t)(rnd() % 10);
            char t[24];
            snprintf(t, sizeof t, "%s%" PRId64, i ? ", " : "", p->list[i]);
            strcat(list, t);
        }
        snprintf(p->sql, sizeof p->sql, "%s %sIN (%s)", cols[p->col], p->op ? "NOT " : "", list);
    } else if (kind <= 5) {
        p->eval = eval_and;
        p->a = random_pred(depth - 1);
        p->b = random_pred(depth - 1);
        snprintf(p->sql, sizeof p->sql, "(%.120s) AND (%.120s)", p->a->sql, p->b->sql);
    } else if (kind == 6) {
        p->eval = eval_or;
        p->a = random_pred(depth - 1);
        p->b = random_pred(depth - 1);
        snprintf(p->sql, sizeof p->sql, "(%.120s) OR (%.120s)", p->a->sql, p->b->sql);
    } else {
        p->eval = eval_not;
        p->a = random_pred(depth - 1);
        snprintf(p->sql, sizeof p->sql, "NOT (%.240s)", p->a->sql);
    }
    return p;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void fmt_row(const row *r, char *line, size_t cap)
{
    char k[16], v[40], s[24];
    if (r->k_null)
        snprintf(k, sizeof k, "NULL");
    else
        snprintf(k, sizeof k, "%d", r->k);
    if (r->v_null)
        snprintf(v, sizeof v, "NULL");
    else
        snprintf(v, sizeof v, "%.17g", r->v == 0 ? 0 : r->v);
    if (r->s_null)
        snprintf(s, sizeof s, "NULL");
    else
        snprintf(s, sizeof s, "'%s'", r->s);
    snprintf(line, cap, "%" PRId64 "|%s|%s|%s", r->id, k, v, s);
}

static void compare(const char *sql, result *got, result *want, int ordered)
{
    if (!ordered && got->n) qsort(got->rows, got->n, sizeof *got->rows, cmp_str);
    if (!ordered && want->n) qsort(want->rows, want->n, sizeof *want->rows, cmp_str);
    if (got->n != want->n) FAIL("%s: %zu rows, want %zu", sql, got->n, want->n);
    for (size_t i = 0; i < got->n; i++)
        if (strcmp(got->rows[i], want->rows[i]))
            FAIL("%s: row %zu: %s, want %s", sql, i, got->rows[i], want->rows[i]);
}

static const row *g_model;
static int g_desc;

static int cmp_k_id(const void *pa, const void *pb)
{
    const row *a = &g_model[*(const int64_t *)pa], *b = &g_model[*(const int64_t *)pb];
    if (a->k_null != b->k_null) return a->k_null ? 1 : -1;
    if (!a->k_null && a->k != b->k) return (a->k < b->k) == !g_desc ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

TEST(random_differential)
{
    rng_state = 20261124;
    marble_db *db = open_db(64);
    create_t(db);
    row *model = calloc(NIDS, sizeof *model);
    /* rounds of writes: upserts (with overwrites), deletes; flush all but the last round */
    for (int round = 0; round < 4; round++) {
        row batch[400];
        size_t n = 0;
        char *seen = calloc(NIDS, 1);
        for (int i = 0; i < 400; i++) {
            int64_t id = (int64_t)(rnd() % NIDS);
            if (seen[id]) continue;
            seen[id] = 1;
            row r = {1,
                     id,
                     rnd() % 6 == 0,
                     rnd() % 5 == 0,
                     rnd() % 7 == 0,
                     (int32_t)(rnd() % 10),
                     (double)(rnd() % 400) * 0.25 - 10,
                     ""};
            snprintf(r.s, sizeof r.s, "s%02d", (int)(rnd() % 8));
            batch[n++] = r;
        }
        free(seen);
        put_rows(db, batch, n);
        for (size_t i = 0; i < n; i++)
            model[batch[i].id] = batch[i];
        for (int i = 0; i < 60; i++) {
            int64_t id = (int64_t)(rnd() % NIDS);
            marble_value kv = {.kind = MARBLE_VALUE_INT, .i = id};
            CHECK_OK(marble_db_delete_key(db, "t", (marble_key){&kv, 1}, NULL, &err));
            model[id].present = 0;
        }
        if (round < 3) CHECK_OK(marble_db_flush(db, &err));
        if (round == 1) CHECK_OK(marble_db_compact(db, "t", &err));
    }
    int pushed = 0;
    for (int iter = 0; iter < 200; iter++) {
        n_nodes = 0;
        const pred_node *p = random_pred(2);
        char sql[1024];
        result got, want = {0};
        int shape = (int)(rnd() % 5), ordered = 0;
        if (shape == 0) {
            snprintf(sql, sizeof sql, "SELECT id, k, v, s FROM t WHERE %s", p->sql);
            for (int64_t id = 0; id < NIDS; id++) {
                if (!model[id].present || p->eval(p, &model[id]) != 1) continue;
                char line[128];
                fmt_row(&model[id], line, sizeof line);
                add_row(&want, line);
            }
        } else if (shape == 1) {
            int desc = (int)(rnd() % 2);
            int64_t limit = (int64_t)(rnd() % 20), offset = (int64_t)(rnd() % 5);
            snprintf(sql, sizeof sql,
                     "SELECT id, k, v, s FROM t WHERE %s ORDER BY id%s LIMIT %" PRId64
                     " OFFSET %" PRId64,
                     p->sql, desc ? " DESC" : "", limit, offset);
            int64_t skipped = 0;
            for (int64_t j = 0; j < NIDS && (int64_t)want.n < limit; j++) {
                int64_t id = desc ? NIDS - 1 - j : j;
                if (!model[id].present || p->eval(p, &model[id]) != 1) continue;
                if (skipped++ < offset) continue;
                char line[128];
                fmt_row(&model[id], line, sizeof line);
                add_row(&want, line);
            }
            ordered = 1;
        } else if (shape == 2) {
            snprintf(sql, sizeof sql,
                     "SELECT k, count(*), sum(id), min(id), max(v), count(s) FROM t WHERE %s "
                     "GROUP BY k",
                     p->sql);
            for (int g = -1; g < 10; g++) {
                int64_t cnt = 0, sum = 0, mn = 0, cs = 0;
                double mx = 0;
                int has_v = 0;
                for (int64_t id = 0; id < NIDS; id++) {
                    const row *r = &model[id];
                    if (!r->present || (g < 0 ? !r->k_null : (r->k_null || r->k != g))) continue;
                    if (p->eval(p, r) != 1) continue;
                    if (!cnt) mn = id;
                    cnt++;
                    sum += id;
                    cs += !r->s_null;
                    if (!r->v_null && (!has_v || r->v > mx)) mx = r->v, has_v = 1;
                }
                if (!cnt) continue;
                char line[160], mxs[40];
                if (has_v)
                    snprintf(mxs, sizeof mxs, "%.17g", mx == 0 ? 0 : mx);
                else
                    strcpy(mxs, "NULL");
                if (g < 0)
                    snprintf(line, sizeof line,
                             "NULL|%" PRId64 "|%" PRId64 "|%" PRId64 "|%s|%" PRId64, cnt, sum, mn,
                             mxs, cs);
                else
                    snprintf(line, sizeof line,
                             "%d|%" PRId64 "|%" PRId64 "|%" PRId64 "|%s|%" PRId64, g, cnt, sum, mn,
                             mxs, cs);
                add_row(&want, line);
            }
        } else if (shape == 4) {
            /* ORDER BY a column that is not selected (NULLs last either way), id breaks ties */
            int desc = (int)(rnd() % 2);
            int64_t limit = (int64_t)(rnd() % 30);
            snprintf(sql, sizeof sql,
                     "SELECT id, v FROM t WHERE %s ORDER BY k%s, id LIMIT %" PRId64, p->sql,
                     desc ? " DESC" : "", limit);
            int64_t *ids = malloc(NIDS * sizeof *ids), n = 0;
            for (int64_t id = 0; id < NIDS; id++)
                if (model[id].present && p->eval(p, &model[id]) == 1) ids[n++] = id;
            g_model = model;
            g_desc = desc;
            if (n) qsort(ids, (size_t)n, sizeof *ids, cmp_k_id);
            for (int64_t j = 0; j < n && j < limit; j++) {
                const row *r = &model[ids[j]];
                char line[128];
                if (r->v_null)
                    snprintf(line, sizeof line, "%" PRId64 "|NULL", r->id);
                else
                    snprintf(line, sizeof line, "%" PRId64 "|%.17g", r->id, r->v == 0 ? 0 : r->v);
                add_row(&want, line);
            }
            free(ids);
            ordered = 1;
        } else {
            snprintf(sql, sizeof sql, "SELECT count(*), sum(k), min(s), max(id) FROM t WHERE %s",
                     p->sql);
            int64_t cnt = 0, sum = 0, mx = 0;
            int has_k = 0;
            const char *mn = NULL;
            for (int64_t id = 0; id < NIDS; id++) {
                const row *r = &model[id];
                if (!r->present || p->eval(p, r) != 1) continue;
                cnt++;
                mx = id;
                if (!r->k_null) sum += r->k, has_k = 1;
                if (!r->s_null && (!mn || strcmp(r->s, mn) < 0)) mn = r->s;
            }
            char line[160], sums[24], mns[24], mxs[24];
            if (has_k)
                snprintf(sums, sizeof sums, "%" PRId64, sum);
            else
                strcpy(sums, "NULL");
            if (mn)
                snprintf(mns, sizeof mns, "'%s'", mn);
            else
                strcpy(mns, "NULL");
            if (cnt)
                snprintf(mxs, sizeof mxs, "%" PRId64, mx);
            else
                strcpy(mxs, "NULL");
            snprintf(line, sizeof line, "%" PRId64 "|%s|%s|%s", cnt, sums, mns, mxs);
            add_row(&want, line);
        }
        marble_query_stats st0;
        run(db, sql, &got, &st0);
        pushed += st0.point_lookup || st0.files_skipped + st0.batches_skipped > 0;
        compare(sql, &got, &want, ordered);
        result_free(&got);
        /* the same query with nothing the planner can push down gives the same rows */
        char plain[1200], *w = strstr(sql, " WHERE ") + 7,
                          *tail = strstr(w, p->sql) + strlen(p->sql);
        snprintf(plain, sizeof plain, "%.*sNOT NOT (%s)%s", (int)(w - sql), sql, p->sql, tail);
        marble_query_stats st;
        run(db, plain, &got, &st);
        ASSERT_EQ_INT(st.point_lookup, 0);
        ASSERT_EQ_INT(st.files_skipped + st.batches_skipped, 0);
        compare(plain, &got, &want, ordered);
        result_free(&got);
        result_free(&want);
    }
    ASSERT_GT_INT(pushed, 20); /* the random queries do exercise pushdown */
    free(model);
    close_db(db);
}

/* ---- options: snapshot, progress, cancellation, memory limit; concurrent runs ---- */

static void on_progress(void *ud, int64_t done, int64_t total)
{
    (void)done;
    (void)total;
    __atomic_fetch_add((int64_t *)ud, 1, __ATOMIC_RELAXED);
}

static int drain(struct ArrowArrayStream *st, int64_t *rows)
{
    *rows = 0;
    for (;;) {
        struct ArrowArray a;
        int rc = st->get_next(st, &a);
        if (rc) return rc;
        if (!a.release) return 0;
        *rows += a.length;
        a.release(&a);
    }
}

TEST(options)
{
    marble_db *db = open_db(100);
    create_t(db);
    fill(db, 0, 5000);
    CHECK_OK(marble_db_compact(db, "t", &err));
    marble_snapshot *snap;
    CHECK_OK(marble_db_snapshot_create(db, &snap, &err));
    fill(db, 5000, 1000);
    marble_query_options o;
    marble_query_options_init(&o);
    struct ArrowArrayStream st;
    int64_t rows, calls = 0;
    /* snapshot: the scan and point gets see the state at the snapshot */
    o.snapshot = snap;
    o.progress = on_progress;
    o.progress_ud = &calls;
    o.max_parallel = 2;
    CHECK_OK(marble_db_query_sql(db, "SELECT id FROM t WHERE v >= 0", &o, &st, NULL, &err));
    ASSERT_OK(drain(&st, &rows));
    st.release(&st);
    ASSERT_EQ_INT(rows, 5000);
    ASSERT_GT_INT(__atomic_load_n(&calls, __ATOMIC_RELAXED), 0);
    CHECK_OK(
        marble_db_query_sql(db, "SELECT id FROM t WHERE id IN (10, 5010)", &o, &st, NULL, &err));
    ASSERT_OK(drain(&st, &rows));
    st.release(&st);
    ASSERT_EQ_INT(rows, 1);
    marble_db_snapshot_release(snap);
    o.snapshot = NULL;
    o.progress = NULL;
    CHECK_OK(
        marble_db_query_sql(db, "SELECT id FROM t WHERE id IN (10, 5010)", &o, &st, NULL, &err));
    ASSERT_OK(drain(&st, &rows));
    st.release(&st);
    ASSERT_EQ_INT(rows, 2);
    /* a cancelled token stops the query with MARBLE_ERR_CANCELLED */
    marble_cancel_token *tok;
    CHECK_OK(marble_cancel_token_create(NULL, &tok, &err));
    marble_cancel_token_cancel(tok);
    o.cancel = tok;
    CHECK_OK(marble_db_query_sql(db, "SELECT k, count(*) FROM t GROUP BY k", &o, &st, NULL, &err));
    ASSERT_NE_INT(drain(&st, &rows), 0);
    ASSERT_EQ_INT(marble_stream_last_code(&st), MARBLE_ERR_CANCELLED);
    st.release(&st);
    o.cancel = NULL;
    marble_cancel_token_destroy(tok);
    /* a memory limit too small for the grouping fails with MARBLE_ERR_LIMIT */
    o.memory_limit = 4096;
    marble_query_stats stats;
    CHECK_OK(
        marble_db_query_sql(db, "SELECT id, count(*) FROM t GROUP BY id", &o, &st, &stats, &err));
    ASSERT_NE_INT(drain(&st, &rows), 0);
    ASSERT_EQ_INT(marble_stream_last_code(&st), MARBLE_ERR_LIMIT);
    ASSERT_CONTAINS(st.get_last_error(&st), "budget");
    st.release(&st);
    /* ... and a large enough one works; the stream may be moved before it is released */
    o.memory_limit = 64 << 20;
    CHECK_OK(
        marble_db_query_sql(db, "SELECT k, count(*) FROM t GROUP BY k", &o, &st, &stats, &err));
    struct ArrowArrayStream moved;
    marble_arrow_stream_move(&st, &moved);
    ASSERT_OK(drain(&moved, &rows));
    ASSERT_EQ_INT(rows, 11);
    moved.release(&moved);
    ASSERT_EQ_INT(stats.rows_scanned, 6000);
    /* released early, before reading everything */
    CHECK_OK(marble_db_query_sql(db, "SELECT * FROM t", &o, &st, &stats, &err));
    struct ArrowArray a;
    ASSERT_OK(st.get_next(&st, &a));
    a.release(&a);
    st.release(&st);
    CHECK_OK(marble_db_query_sql(db, "SELECT k, sum(id) FROM t GROUP BY k", NULL, &st, NULL, &err));
    st.release(&st);
    close_db(db);
}

typedef struct runner {
    marble_db *db;
    const marble_query *q;
    int64_t rows;
    int rc;
} runner;

static void *run_thread(void *arg)
{
    runner *r = arg;
    for (int i = 0; i < 10 && !r->rc; i++) {
        struct ArrowArrayStream st;
        marble_error e;
        marble_query_stats stats;
        r->rc = marble_db_query(r->db, r->q, NULL, &st, &stats, &e);
        if (r->rc) break;
        r->rc = drain(&st, &r->rows);
        st.release(&st);
    }
    return NULL;
}

TEST(concurrent_runs)
{
    marble_db *db = open_db(100);
    create_t(db);
    fill(db, 0, 3000);
    CHECK_OK(marble_db_flush(db, &err));
    fill(db, 3000, 500);
    marble_query *q;
    CHECK_OK(marble_query_parse("SELECT k, count(*), max(v) FROM t WHERE id > 100 GROUP BY k "
                                "ORDER BY k",
                                &q, &err));
    pthread_t th[4];
    runner r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (runner){db, q, 0, 0};
        ASSERT_OK(pthread_create(&th[i], NULL, run_thread, &r[i]));
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ASSERT_OK(r[i].rc);
        ASSERT_EQ_INT(r[i].rows, 11);
    }
    marble_query_destroy(q);
    close_db(db);
}
