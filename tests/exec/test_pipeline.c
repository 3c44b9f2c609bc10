/* Tests for the pipeline runtime: memory budgets, sources, each operator alone and fused,
 * aggregates (groups, NULL and multi-column keys, every function, overflow), sort and top-N,
 * limits across morsels, streaming order with many workers, cancellation, errors from sources,
 * memory-budget refusals, early release, k-way merges of streams, and a randomized differential
 * test against a naive reference; with no scheduler and with 2- and 4-thread schedulers. */
#include "marble/pipeline.h"
#include "marble_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "marble/base.h"

static marble_error err;

/* ---- helpers --------------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *s, const char *t, size_t n)
{
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
        if (!s->p) FAIL("out of memory");
    }
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void sb_str(sbuf *s, const char *t)
{
    sb_add(s, t, strlen(t));
}

static void render_value(sbuf *s, const struct ArrowSchema *f, const struct ArrowArray *c,
                         int64_t i)
{
    char buf[64];
    if (marble_arrow_is_null(c, i)) {
        sb_str(s, "N");
        return;
    }
    const char *fmt = f->format;
    if (!strcmp(fmt, "g") || !strcmp(fmt, "f")) {
        snprintf(buf, sizeof buf, "%.6g", marble_arrow_get_double(f, c, i));
    } else if (!strcmp(fmt, "u") || !strcmp(fmt, "U") || !strcmp(fmt, "z")) {
        const void *d;
        size_t n;
        marble_arrow_get_bytes(f, c, i, &d, &n);
        sb_add(s, d, n);
        return;
    } else {
        snprintf(buf, sizeof buf, "%lld", (long long)marble_arrow_get_int(f, c, i));
    }
    sb_str(s, buf);
}

/* Reads the whole stream into "v|v\n" lines; returns the get_next errno (0 at a clean end). */
static int drain(struct ArrowArrayStream *st, sbuf *out, int64_t *batches)
{
    struct ArrowSchema schema;
    ASSERT_EQ_INT(st->get_schema(st, &schema), 0);
    int rc = 0;
    if (batches) *batches = 0;
    for (;;) {
        struct ArrowArray b;
        rc = st->get_next(st, &b);
        if (rc || !b.release) break;
        if (batches) (*batches)++;
        ASSERT_EQ_INT(b.n_children, schema.n_children);
        ASSERT_OK(marble_arrow_array_validate(&schema, &b, MARBLE_VALIDATE_DEFAULT, &err));
        for (int64_t r = 0; r < b.length; r++) {
            for (int64_t c = 0; c < b.n_children; c++) {
                if (c) sb_str(out, "|");
                render_value(out, schema.children[c], b.children[c], r);
            }
            sb_str(out, "\n");
        }
        b.release(&b);
    }
    schema.release(&schema);
    if (!out->p) sb_str(out, "");
    return rc;
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts the lines of s in place (for results whose row order is unspecified). */
static void sort_lines(sbuf *s)
{
    if (!s->p || !s->n) return;
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += s->p[i] == '\n';
    char **lines = calloc(n + 1, sizeof *lines);
    char *copy = strdup(s->p);
    size_t k = 0;
    for (char *p = copy; *p;) {
        lines[k++] = p;
        char *e = strchr(p, '\n');
        *e = 0;
        p = e + 1;
    }
    qsort(lines, k, sizeof *lines, cmp_lines);
    s->n = 0;
    s->p[0] = 0;
    for (size_t i = 0; i < k; i++) {
        sb_str(s, lines[i]);
        sb_str(s, "\n");
    }
    free(lines);
    free(copy);
}

/* Values for building batches: "N" is NULL. */
typedef struct cell {
    int null;
    int64_t i;
    double d;
    const char *s;
} cell;

/* A source of n batches of schema `text` whose cells come from fill(batch, row, col). */
typedef void (*fill_fn)(int64_t b, int64_t r, int c, cell *out, void *ud);

static void make_source(const char *text, int64_t nb, int64_t rows, fill_fn fill, void *ud,
                        marble_source *src)
{
    struct ArrowSchema schema;
    ASSERT_OK(marble_arrow_schema_parse(text, &schema, &err));
    marble_batch_builder *bb;
    ASSERT_OK(marble_batch_builder_create(&schema, &bb, &err));
    struct ArrowArray *batches = calloc((size_t)nb + 1, sizeof *batches);
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t r = 0; r < rows; r++) {
            for (int c = 0; c < schema.n_children; c++) {
                cell v = {0};
                fill(b, r, c, &v, ud);
                const char *fmt = schema.children[c]->format;
                if (v.null)
                    ASSERT_OK(marble_builder_append_null(bb, c, &err));
                else if (!strcmp(fmt, "g") || !strcmp(fmt, "f"))
                    ASSERT_OK(marble_builder_append_double(bb, c, v.d, &err));
                else if (!strcmp(fmt, "u") || !strcmp(fmt, "U") || !strcmp(fmt, "z"))
                    ASSERT_OK(marble_builder_append_bytes(bb, c, v.s, strlen(v.s), &err));
                else
                    ASSERT_OK(marble_builder_append_int(bb, c, v.i, &err));
            }
        }
        ASSERT_OK(marble_batch_builder_finish(bb, &batches[b], &err));
    }
    marble_batch_builder_destroy(bb);
    ASSERT_OK(marble_source_from_batches(&schema, batches, (size_t)nb, src, &err));
    free(batches);
}

/* Runs p with `threads` workers (0: no scheduler) and drains it into out. */
static int run_pipeline(marble_pipeline *p, int threads, marble_mem_budget *mem, sbuf *out,
                        int *code, char *msg, size_t msg_cap)
{
    marble_sched *s = NULL;
    if (threads) {
        marble_sched_options so;
        marble_sched_options_init(&so);
        so.threads = threads;
        ASSERT_OK(marble_sched_create(&so, &s, &err));
    }
    marble_exec_options o;
    marble_exec_options_init(&o);
    o.sched = s;
    o.memory = mem;
    o.batch_budget = 2;
    struct ArrowArrayStream st;
    ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
    int rc = drain(&st, out, NULL);
    if (code) *code = marble_stream_last_code(&st);
    if (msg)
        snprintf(msg, msg_cap, "%s", rc && st.get_last_error(&st) ? st.get_last_error(&st) : "");
    if (rc && getenv("MARBLE_TEST_VERBOSE"))
        fprintf(stderr, "stream error: %s\n", st.get_last_error(&st));
    st.release(&st);
    marble_sched_destroy(s);
    return rc;
}

static int64_t i64_at(const struct ArrowArray *c, int64_t r)
{
    return ((const int64_t *)c->buffers[1])[c->offset + r];
}

static marble_expr *col(const char *n)
{
    return marble_expr_column(n);
}

static marble_expr *bin(marble_expr_op op, marble_expr *a, marble_expr *b)
{
    return marble_expr_binary(op, a, b);
}

static const int thread_counts[] = {0, 2, 4};

/* k:int64 = row, g:int64 = row % 3 (NULL when row % 7 == 6), s:utf8, d:float64 = row / 4 */
static void fill_basic(int64_t b, int64_t r, int c, cell *v, void *ud)
{
    int64_t rows = ud ? *(int64_t *)ud : 10;
    int64_t k = b * rows + r;
    static const char *names[] = {"ant", "bee", "cat", "dog"};
    switch (c) {
    case 0:
        v->i = k;
        break;
    case 1:
        v->null = k % 7 == 6;
        v->i = k % 3;
        break;
    case 2:
        v->s = names[k % 4];
        v->null = k % 5 == 4;
        break;
    default:
        v->d = (double)k / 4;
    }
}

static void basic_source(int64_t nb, int64_t *rows, marble_source *src)
{
    make_source("k:int64,g:int64,s:utf8,d:float64", nb, *rows, fill_basic, rows, src);
}

/* ---- memory budget --------------------------------------------------------------------------- */

TEST(mem_budget)
{
    marble_mem_budget *b;
    ASSERT_OK(marble_mem_budget_create(1000, &b, &err));
    ASSERT_OK(marble_mem_budget_reserve(b, 600, "x", &err));
    ASSERT_OK(marble_mem_budget_reserve(b, 400, "x", &err));
    ASSERT_EQ_INT(marble_mem_budget_reserve(b, 1, "hash table", &err), MARBLE_ERR_LIMIT);
    ASSERT_CONTAINS(err.message, "query needs more memory than its budget allows");
    ASSERT_CONTAINS(err.message, "hash table");
    ASSERT_EQ_U64(marble_mem_budget_used(b), 1000);
    marble_mem_budget_release(b, 700);
    ASSERT_EQ_U64(marble_mem_budget_used(b), 300);
    ASSERT_EQ_U64(marble_mem_budget_peak(b), 1000);
    ASSERT_EQ_U64(marble_mem_budget_limit(b), 1000);
    marble_mem_budget_destroy(b);
    ASSERT_OK(marble_mem_budget_create(0, &b, &err));
    ASSERT_OK(marble_mem_budget_reserve(b, UINT64_MAX / 2, "x", &err));
    marble_mem_budget_destroy(b);
    marble_mem_budget_destroy(NULL);
}

/* ---- streaming operators --------------------------------------------------------------------- */

TEST(passthrough_in_morsel_order)
{
    for (size_t t = 0; t < 3; t++) {
        int64_t rows = 3;
        marble_source src;
        basic_source(50, &rows, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        sbuf out = {0};
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, NULL, NULL, 0), 0);
        sbuf want = {0};
        for (int64_t k = 0; k < 150; k++) {
            char line[128];
            static const char *names[] = {"ant", "bee", "cat", "dog"};
            char g[8], s[8];
            snprintf(g, sizeof g, "%lld", (long long)(k % 3));
            snprintf(line, sizeof line, "%lld|%s|%s|%.6g\n", (long long)k, k % 7 == 6 ? "N" : g,
                     k % 5 == 4 ? "N" : strcpy(s, names[k % 4]), (double)k / 4);
            sb_str(&want, line);
        }
        ASSERT_EQ_STR(out.p, want.p);
        free(out.p);
        free(want.p);
    }
}

TEST(filter_project_fused)
{
    for (size_t t = 0; t < 3; t++) {
        int64_t rows = 10;
        marble_source src;
        basic_source(5, &rows, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        /* k % 10 >= 7 AND g IS NOT NULL */
        marble_expr *pred = bin(MARBLE_OP_AND,
                                bin(MARBLE_OP_GE, bin(MARBLE_OP_MOD, col("k"), marble_expr_int(10)),
                                    marble_expr_int(7)),
                                marble_expr_unary(MARBLE_OP_IS_NOT_NULL, col("g")));
        ASSERT_NOT_NULL(pred);
        ASSERT_OK(marble_pipeline_filter(p, pred, &err));
        marble_expr *e[3] = {col("s"), bin(MARBLE_OP_MUL, col("k"), marble_expr_int(2)), col("k")};
        const char *names[3] = {NULL, "k2", NULL};
        ASSERT_OK(marble_pipeline_project(p, (const marble_expr *const *)e, names, 3, &err));
        struct ArrowSchema sc;
        ASSERT_OK(marble_pipeline_schema(p, &sc, &err));
        ASSERT_EQ_INT(sc.n_children, 3);
        ASSERT_EQ_STR(sc.children[0]->name, "s");
        ASSERT_EQ_STR(sc.children[0]->format, "u");
        ASSERT_EQ_STR(sc.children[1]->name, "k2");
        ASSERT_EQ_STR(sc.children[1]->format, "l");
        ASSERT_EQ_STR(sc.children[2]->name, "k");
        sc.release(&sc);
        sbuf out = {0};
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, NULL, NULL, 0), 0);
        /* k in {7,8,9,17,18,19,...,47,48,49} minus k % 7 == 6 (13? no: 27, 48) */
        sbuf want = {0};
        static const char *nm[] = {"ant", "bee", "cat", "dog"};
        for (int64_t k = 0; k < 50; k++) {
            if (k % 10 < 7 || k % 7 == 6) continue;
            char line[64];
            snprintf(line, sizeof line, "%s|%lld|%lld\n", k % 5 == 4 ? "N" : nm[k % 4],
                     (long long)(2 * k), (long long)k);
            sb_str(&want, line);
        }
        ASSERT_EQ_STR(out.p, want.p);
        free(out.p);
        free(want.p);
        marble_expr_free(pred);
        for (int i = 0; i < 3; i++)
            marble_expr_free(e[i]);
    }
}

TEST(project_then_filter_and_bind_errors)
{
    int64_t rows = 4;
    marble_source src;
    basic_source(2, &rows, &src);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&src, &p, &err));
    marble_expr *e[1] = {col("k")};
    const char *names[1] = {"key"};
    ASSERT_OK(marble_pipeline_project(p, (const marble_expr *const *)e, names, 1, &err));
    marble_expr *bad = bin(MARBLE_OP_GT, col("g"), marble_expr_int(1));
    ASSERT_EQ_INT(marble_pipeline_filter(p, bad, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "g");
    marble_expr *notbool = col("key");
    ASSERT_EQ_INT(marble_pipeline_filter(p, notbool, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "boolean");
    marble_sort_key sk = {3, 0, 0};
    ASSERT_EQ_INT(marble_pipeline_sort(p, &sk, 1, -1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "out of range");
    ASSERT_EQ_INT(marble_pipeline_limit(p, -1, 3, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble_expr *pred = bin(MARBLE_OP_LT, col("key"), marble_expr_int(3));
    ASSERT_OK(marble_pipeline_filter(p, pred, &err));
    sbuf out = {0};
    ASSERT_EQ_INT(run_pipeline(p, 2, NULL, &out, NULL, NULL, 0), 0);
    ASSERT_EQ_STR(out.p, "0\n1\n2\n");
    free(out.p);
    marble_expr_free(e[0]);
    marble_expr_free(bad);
    marble_expr_free(notbool);
    marble_expr_free(pred);
}

TEST(limit_offset_across_morsels)
{
    struct {
        int64_t offset, limit;
    } cases[] = {{0, 5}, {2, 5}, {9, 3}, {0, 0}, {95, 10}, {100, 4}, {0, 1000}, {13, 29}};
    for (size_t t = 0; t < 3; t++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            int64_t rows = 4;
            marble_source src;
            basic_source(25, &rows, &src);
            marble_pipeline *p;
            ASSERT_OK(marble_pipeline_create(&src, &p, &err));
            marble_expr *e[1] = {col("k")};
            ASSERT_OK(marble_pipeline_project(p, (const marble_expr *const *)e, NULL, 1, &err));
            ASSERT_OK(marble_pipeline_limit(p, cases[c].offset, cases[c].limit, &err));
            sbuf out = {0};
            ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, NULL, NULL, 0), 0);
            sbuf want = {0};
            sb_str(&want, "");
            for (int64_t k = cases[c].offset; k < 100 && k < cases[c].offset + cases[c].limit;
                 k++) {
                char line[32];
                snprintf(line, sizeof line, "%lld\n", (long long)k);
                sb_str(&want, line);
            }
            ASSERT_EQ_STR(out.p, want.p);
            free(out.p);
            free(want.p);
            marble_expr_free(e[0]);
        }
    }
}

/* ---- sort ------------------------------------------------------------------------------------ */

static void fill_sort(int64_t b, int64_t r, int c, cell *v, void *ud)
{
    (void)ud;
    int64_t k = b * 4 + r; /* 0..19 */
    static const int64_t xs[] = {5, 3, 9, 3, 1, 7, 3, 5, 0, 9, 2, 8, 5, 1, 4, 6, 9, 0, 2, 7};
    static const char *ss[] = {"b", "a", "c", "b", "a"};
    if (c == 0) {
        v->i = k;
    } else if (c == 1) {
        v->null = k % 6 == 5;
        v->i = xs[k];
    } else {
        v->null = k == 7;
        v->s = ss[k % 5];
    }
}

static char *sorted_ids(int threads, const marble_sort_key *keys, size_t n, int64_t limit,
                        int64_t lim_off, int64_t lim)
{
    marble_source src;
    make_source("id:int64,x:int32,s:utf8", 5, 4, fill_sort, NULL, &src);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&src, &p, &err));
    ASSERT_OK(marble_pipeline_sort(p, keys, n, limit, &err));
    if (lim >= 0) ASSERT_OK(marble_pipeline_limit(p, lim_off, lim, &err));
    marble_expr *e[1] = {col("id")};
    ASSERT_OK(marble_pipeline_project(p, (const marble_expr *const *)e, NULL, 1, &err));
    marble_expr_free(e[0]);
    sbuf out = {0};
    ASSERT_EQ_INT(run_pipeline(p, threads, NULL, &out, NULL, NULL, 0), 0);
    for (size_t i = 0; i < out.n; i++)
        if (out.p[i] == '\n') out.p[i] = ' ';
    return out.p;
}

TEST(sort_orders)
{
    /* x by id: 5 3 9 3 1 N 3 5 0 9 2 N 5 1 4 6 9 N 2 7 (NULL at ids 5, 11, 17) */
    for (size_t t = 0; t < 3; t++) {
        int th = thread_counts[t];
        marble_sort_key asc = {1, 0, 0};
        char *s = sorted_ids(th, &asc, 1, -1, 0, -1);
        ASSERT_EQ_STR(s, "8 4 13 10 18 1 3 6 14 0 7 12 15 19 2 9 16 5 11 17 ");
        free(s);
        marble_sort_key desc_nf = {1, 1, 1};
        s = sorted_ids(th, &desc_nf, 1, -1, 0, -1);
        ASSERT_EQ_STR(s, "5 11 17 2 9 16 19 15 0 7 12 14 1 3 6 10 18 4 13 8 ");
        free(s);
        marble_sort_key desc = {1, 1, 0};
        s = sorted_ids(th, &desc, 1, -1, 0, -1);
        ASSERT_EQ_STR(s, "2 9 16 19 15 0 7 12 14 1 3 6 10 18 4 13 8 5 11 17 ");
        free(s);
        /* s (NULL at id 7) desc, then x asc with NULLs first */
        marble_sort_key two[2] = {{2, 1, 0}, {1, 0, 1}};
        s = sorted_ids(th, two, 2, -1, 0, -1);
        /* s by id: b a c b a | b a N b a | b a c b a | b a c b a
           c: ids 2 12 17 -> x 9 5 N -> N first: 17 12 2
           b: ids 0 3 5 8 10 13 15 18 -> x 5 3 N 0 2 1 6 2 -> 5 8 13 10 18 3 0 15
           a: ids 1 4 6 9 11 14 16 19 -> x 3 1 3 9 N 4 9 7 -> 11 4 1 6 14 19 9 16
           NULL: 7 */
        ASSERT_EQ_STR(s, "17 12 2 5 8 13 10 18 3 0 15 11 4 1 6 14 19 9 16 7 ");
        free(s);
    }
}

TEST(top_n_matches_full_sort)
{
    marble_sort_key keys[2] = {{1, 0, 0}, {2, 1, 1}};
    for (size_t t = 0; t < 3; t++) {
        char *full = sorted_ids(thread_counts[t], keys, 2, -1, 0, -1);
        for (int64_t n = 0; n <= 21; n++) {
            char *top = sorted_ids(thread_counts[t], keys, 2, n, 0, -1);
            char *lim = sorted_ids(thread_counts[t], keys, 2, -1, 0, n);
            ASSERT_EQ_STR(top, lim);
            int64_t words = 0;
            for (char *q = top; *q; q++)
                words += *q == ' ';
            ASSERT_EQ_INT(words, n < 20 ? n : 20);
            ASSERT_TRUE(strncmp(full, top, strlen(top)) == 0);
            free(top);
            free(lim);
        }
        char *mid = sorted_ids(thread_counts[t], keys, 2, -1, 3, 4);
        char *full2 = full;
        for (int i = 0; i < 3; i++)
            full2 = strchr(full2, ' ') + 1;
        ASSERT_TRUE(strncmp(full2, mid, strlen(mid)) == 0);
        free(mid);
        free(full);
    }
}

/* ---- aggregates ------------------------------------------------------------------------------ */

static char *agg_result(int threads, int64_t nb, int64_t rows, const char *gcols,
                        marble_mem_budget *mem, int expect_rc, char *msg, size_t cap)
{
    marble_source src;
    basic_source(nb, &rows, &src);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&src, &p, &err));
    marble_expr *groups[2] = {NULL, NULL};
    size_t ng = 0;
    for (const char *c = gcols; *c; c++) {
        char name[2] = {*c, 0};
        groups[ng++] = col(name);
    }
    marble_expr *k = col("k"), *d = col("d"), *s = col("s"), *g = col("g");
    marble_agg_spec aggs[] = {
        {MARBLE_AGG_COUNT_STAR, NULL, "n"}, {MARBLE_AGG_COUNT, g, "ng"},
        {MARBLE_AGG_SUM, k, "sk"},          {MARBLE_AGG_SUM, d, "sd"},
        {MARBLE_AGG_MIN, s, "mins"},        {MARBLE_AGG_MAX, k, "maxk"},
        {MARBLE_AGG_AVG, k, "ak"},          {MARBLE_AGG_MIN, d, NULL},
    };
    ASSERT_OK(marble_pipeline_aggregate(p, (const marble_expr *const *)groups, NULL, ng, aggs,
                                        sizeof aggs / sizeof aggs[0], &err));
    struct ArrowSchema sc;
    ASSERT_OK(marble_pipeline_schema(p, &sc, &err));
    ASSERT_EQ_INT(sc.n_children, (int64_t)ng + 8);
    ASSERT_EQ_STR(sc.children[ng + 0]->format, "l");
    ASSERT_EQ_STR(sc.children[ng + 2]->format, "l");
    ASSERT_EQ_STR(sc.children[ng + 3]->format, "g");
    ASSERT_EQ_STR(sc.children[ng + 4]->format, "u");
    ASSERT_EQ_STR(sc.children[ng + 6]->format, "g");
    ASSERT_EQ_STR(sc.children[ng + 7]->name, "min(d)");
    sc.release(&sc);
    sbuf out = {0};
    int code = 0;
    int rc = run_pipeline(p, threads, mem, &out, &code, msg, cap);
    if (expect_rc) {
        ASSERT_NE_INT(rc, 0);
        ASSERT_EQ_INT(code, expect_rc);
    } else {
        ASSERT_EQ_INT(rc, 0);
    }
    for (size_t i = 0; i < ng; i++)
        marble_expr_free(groups[i]);
    marble_expr_free(k);
    marble_expr_free(d);
    marble_expr_free(s);
    marble_expr_free(g);
    sort_lines(&out);
    return out.p;
}

TEST(aggregate_no_groups)
{
    for (size_t t = 0; t < 3; t++) {
        char *r = agg_result(thread_counts[t], 0, 10, "", NULL, 0, NULL, 0);
        ASSERT_EQ_STR(r, "0|0|N|N|N|N|N|N\n");
        free(r);
        /* k = 0..29: count 30; g non-null: k % 7 != 6 -> 26; sum k 435; sum d 108.75;
           min s among non-null: "ant"; max k 29; avg 14.5; min d 0 */
        r = agg_result(thread_counts[t], 3, 10, "", NULL, 0, NULL, 0);
        ASSERT_EQ_STR(r, "30|26|435|108.75|ant|29|14.5|0\n");
        free(r);
    }
}

TEST(aggregate_groups_with_nulls)
{
    for (size_t t = 0; t < 3; t++) {
        /* k = 0..20, g = k % 3 or NULL at 6, 13, 20 */
        char *r = agg_result(thread_counts[t], 3, 7, "g", NULL, 0, NULL, 0);
        /* g=0: 0 3 9 12 15 18 -> n 6, sum 57, max 18, avg 9.5, sum d 14.25, min s: ant(0,12) ..
           g=1: 1 4 7 10 16 19 -> sum 57 ... ; g=2: 2 5 8 11 14 17 -> sum 57
           NULL: 6 13 20 -> sum 39, ng 0 */
        ASSERT_EQ_STR(r, "0|6|6|57|14.25|ant|18|9.5|0\n"
                         "1|6|6|57|14.25|ant|19|9.5|0.25\n"
                         "2|6|6|57|14.25|ant|17|9.5|0.5\n"
                         "N|3|0|39|9.75|ant|20|13|1.5\n");
        free(r);
    }
}

TEST(aggregate_multi_key_strings)
{
    for (size_t t = 0; t < 3; t++) {
        char *r = agg_result(thread_counts[t], 2, 6, "sg", NULL, 0, NULL, 0);
        /* k 0..11: s = names[k%4] or NULL (k%5==4: 4, 9), g = k%3 or NULL (6) */
        /* rows (s,g): 0 ant,0 1 bee,1 2 cat,2 3 dog,0 4 N,1 5 bee,2 6 cat,N 7 dog,1 8 ant,2
           9 N,0 10 cat,1 11 dog,2 */
        ASSERT_EQ_STR(r, "N|0|1|1|9|2.25|N|9|9|2.25\n"
                         "N|1|1|1|4|1|N|4|4|1\n"
                         "ant|0|1|1|0|0|ant|0|0|0\n"
                         "ant|2|1|1|8|2|ant|8|8|2\n"
                         "bee|1|1|1|1|0.25|bee|1|1|0.25\n"
                         "bee|2|1|1|5|1.25|bee|5|5|1.25\n"
                         "cat|1|1|1|10|2.5|cat|10|10|2.5\n"
                         "cat|2|1|1|2|0.5|cat|2|2|0.5\n"
                         "cat|N|1|0|6|1.5|cat|6|6|1.5\n"
                         "dog|0|1|1|3|0.75|dog|3|3|0.75\n"
                         "dog|1|1|1|7|1.75|dog|7|7|1.75\n"
                         "dog|2|1|1|11|2.75|dog|11|11|2.75\n");
        free(r);
    }
}

TEST(aggregate_many_groups)
{
    for (size_t t = 0; t < 3; t++) {
        int64_t rows = 1000;
        marble_source src;
        basic_source(20, &rows, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_expr *g[1] = {bin(MARBLE_OP_MOD, col("k"), marble_expr_int(5000))};
        marble_expr *k = col("k");
        marble_agg_spec aggs[] = {{MARBLE_AGG_COUNT_STAR, NULL, "n"}, {MARBLE_AGG_SUM, k, "s"}};
        const char *gn[1] = {"m"};
        ASSERT_OK(
            marble_pipeline_aggregate(p, (const marble_expr *const *)g, gn, 1, aggs, 2, &err));
        marble_sort_key sk = {0, 0, 0};
        ASSERT_OK(marble_pipeline_sort(p, &sk, 1, -1, &err));
        sbuf out = {0};
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, NULL, NULL, 0), 0);
        sbuf want = {0};
        for (int64_t m = 0; m < 5000; m++) {
            char line[64];
            int64_t sum = 0;
            for (int64_t j = 0; j < 4; j++)
                sum += m + 5000 * j;
            snprintf(line, sizeof line, "%lld|4|%lld\n", (long long)m, (long long)sum);
            sb_str(&want, line);
        }
        ASSERT_EQ_STR(out.p, want.p);
        free(out.p);
        free(want.p);
        marble_expr_free(g[0]);
        marble_expr_free(k);
    }
}

static void fill_big(int64_t b, int64_t r, int c, cell *v, void *ud)
{
    (void)ud;
    v->i = (c == 0) ? b % 2 : INT64_MAX / 4 + r;
}

TEST(aggregate_sum_overflow)
{
    for (size_t t = 0; t < 3; t++) {
        marble_source src;
        make_source("g:int64,v:int64", 4, 3, fill_big, NULL, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_expr *v = col("v");
        marble_agg_spec a = {MARBLE_AGG_SUM, v, "total"};
        ASSERT_OK(marble_pipeline_aggregate(p, NULL, NULL, 0, &a, 1, &err));
        sbuf out = {0};
        int code;
        char msg[256];
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, &code, msg, sizeof msg), EIO);
        ASSERT_EQ_INT(code, MARBLE_ERR_LIMIT);
        ASSERT_CONTAINS(msg, "total");
        ASSERT_CONTAINS(msg, "overflow");
        free(out.p);
        marble_expr_free(v);
    }
}

/* INT64_MAX, 1, -1 in three one-row batches: the exact sum fits, whatever order the workers add
 * the rows and merge their partial sums in (grouped and not). */
static void fill_cancelling(int64_t b, int64_t r, int c, cell *v, void *ud)
{
    (void)r;
    (void)ud;
    v->i = c == 0 ? 0 : b == 0 ? INT64_MAX : b == 1 ? 1 : -1;
}

TEST(aggregate_sum_exact_regardless_of_split)
{
    for (size_t t = 0; t < 3; t++)
        for (int grouped = 0; grouped < 2; grouped++)
            for (int rep = 0; rep < 20; rep++) {
                marble_source src;
                make_source("g:int64,v:int64", 3, 1, fill_cancelling, NULL, &src);
                marble_pipeline *p;
                ASSERT_OK(marble_pipeline_create(&src, &p, &err));
                marble_expr *v = col("v"), *g = col("g");
                const marble_expr *groups[1] = {g};
                marble_agg_spec a = {MARBLE_AGG_SUM, v, "total"};
                ASSERT_OK(marble_pipeline_aggregate(p, grouped ? groups : NULL, NULL,
                                                    grouped ? 1 : 0, &a, 1, &err));
                sbuf out = {0};
                ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, NULL, NULL, 0), 0);
                ASSERT_CONTAINS(out.p, "9223372036854775807");
                free(out.p);
                marble_expr_free(v);
                marble_expr_free(g);
            }
}

TEST(aggregate_bad_arguments)
{
    int64_t rows = 2;
    marble_source src;
    basic_source(1, &rows, &src);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&src, &p, &err));
    marble_expr *s = col("s");
    marble_agg_spec a = {MARBLE_AGG_SUM, s, NULL};
    ASSERT_EQ_INT(marble_pipeline_aggregate(p, NULL, NULL, 0, &a, 1, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "not a number");
    marble_expr *nope = col("nope");
    marble_agg_spec b = {MARBLE_AGG_MAX, nope, NULL};
    ASSERT_EQ_INT(marble_pipeline_aggregate(p, NULL, NULL, 0, &b, 1, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "nope");
    marble_pipeline_destroy(p);
    marble_expr_free(s);
    marble_expr_free(nope);
}

/* ---- memory budget refusals ------------------------------------------------------------------ */

TEST(memory_budget_refusal)
{
    for (size_t t = 0; t < 3; t++) {
        marble_mem_budget *mem;
        ASSERT_OK(marble_mem_budget_create(8u << 20, &mem, &err));
        char msg[256];
        /* 40000 groups of hash table + states exceed 8 MiB */
        char *r =
            agg_result(thread_counts[t], 40, 1000, "k", mem, MARBLE_ERR_LIMIT, msg, sizeof msg);
        free(r);
        ASSERT_CONTAINS(msg, "query needs more memory than its budget allows");
        ASSERT_EQ_U64(marble_mem_budget_used(mem), 0);
        /* a sort of the same data */
        int64_t rows = 1000;
        marble_source src;
        basic_source(400, &rows, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_sort_key sk = {2, 0, 0};
        ASSERT_OK(marble_pipeline_sort(p, &sk, 1, -1, &err));
        sbuf out = {0};
        int code;
        ASSERT_NE_INT(run_pipeline(p, thread_counts[t], mem, &out, &code, msg, sizeof msg), 0);
        ASSERT_EQ_INT(code, MARBLE_ERR_LIMIT);
        ASSERT_CONTAINS(msg, "sort buffer");
        ASSERT_EQ_U64(marble_mem_budget_used(mem), 0);
        free(out.p);
        /* top-10 of the same fits */
        basic_source(400, &rows, &src);
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_sort_key kd = {0, 1, 0};
        ASSERT_OK(marble_pipeline_sort(p, &kd, 1, 3, &err));
        marble_expr *e[1] = {col("k")};
        ASSERT_OK(marble_pipeline_project(p, (const marble_expr *const *)e, NULL, 1, &err));
        marble_expr_free(e[0]);
        out = (sbuf){0};
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], mem, &out, NULL, msg, sizeof msg), 0);
        ASSERT_EQ_STR(out.p, "399999\n399998\n399997\n");
        free(out.p);
        ASSERT_EQ_U64(marble_mem_budget_used(mem), 0);
        ASSERT_GT_INT(marble_mem_budget_peak(mem), 0);
        marble_mem_budget_destroy(mem);
    }
}

/* ---- custom sources: slow, failing, counting ------------------------------------------------- */

typedef struct test_src {
    int64_t morsels, batches, rows;
    int sleep_us;
    int64_t fail_morsel; /* -1: none */
    int bad_batch;       /* morsel 3 gives a batch of one column */
    _Atomic int64_t opened, closed, released;
    struct ArrowSchema schema;
} test_src;

static int ts_schema(void *ud, struct ArrowSchema *out, marble_error *e)
{
    return marble_arrow_schema_copy(&((test_src *)ud)->schema, out, e);
}

typedef struct ts_cursor {
    int64_t m, b;
} ts_cursor;

static int ts_open(void *ud, int64_t i, void **cursor, marble_error *e)
{
    test_src *t = ud;
    ts_cursor *c = calloc(1, sizeof *c);
    if (!c) return marble_error_set(e, MARBLE_ERR_NO_MEMORY, "oom");
    c->m = i;
    atomic_fetch_add(&t->opened, 1);
    *cursor = c;
    return MARBLE_OK;
}

static int ts_next(void *ud, void *cursor, struct ArrowArray *out, marble_error *e)
{
    test_src *t = ud;
    ts_cursor *c = cursor;
    if (c->b == t->batches) return MARBLE_ERR_NOT_FOUND;
    if (t->sleep_us) marble_sleep_ns((uint64_t)t->sleep_us * 1000);
    if (c->m == t->fail_morsel && c->b == 1)
        return marble_error_set(e, MARBLE_ERR_CORRUPTION, "bad block in morsel %lld",
                                (long long)c->m);
    marble_batch_builder *bb;
    MARBLE_RETURN_NOT_OK(marble_batch_builder_create(&t->schema, &bb, e));
    for (int64_t r = 0; r < t->rows; r++) {
        marble_builder_append_int(bb, 0, c->m, e);
        marble_builder_append_int(bb, 1, c->b * t->rows + r, e);
    }
    int rc = marble_batch_builder_finish(bb, out, e);
    marble_batch_builder_destroy(bb);
    c->b++;
    if (rc == MARBLE_OK && t->bad_batch && c->m == 3) {
        /* the same rows with the second column dropped */
        struct ArrowSchema one;
        marble_arrow_schema_parse("m:int64", &one, e);
        marble_batch_builder *b1;
        marble_batch_builder_create(&one, &b1, e);
        for (int64_t r = 0; r < out->length; r++)
            marble_builder_append_int(b1, 0, c->m, e);
        out->release(out);
        rc = marble_batch_builder_finish(b1, out, e);
        marble_batch_builder_destroy(b1);
        one.release(&one);
    }
    return rc;
}

static void ts_close(void *ud, void *cursor)
{
    atomic_fetch_add(&((test_src *)ud)->closed, 1);
    free(cursor);
}

static void ts_release(void *ud)
{
    atomic_fetch_add(&((test_src *)ud)->released, 1);
}

static void ts_init(test_src *t, int64_t morsels, int64_t batches, int64_t rows)
{
    memset(t, 0, sizeof *t);
    t->morsels = morsels;
    t->batches = batches;
    t->rows = rows;
    t->fail_morsel = -1;
    ASSERT_OK(marble_arrow_schema_parse("m:int64,r:int64", &t->schema, &err));
}

static marble_source ts_source(test_src *t)
{
    marble_source s = {t, t->morsels, ts_schema, ts_open, ts_next, ts_close, ts_release};
    return s;
}

static void ts_check_balanced(test_src *t)
{
    ASSERT_EQ_INT(atomic_load(&t->opened), atomic_load(&t->closed));
    ASSERT_EQ_INT(atomic_load(&t->released), 1);
    t->schema.release(&t->schema);
}

TEST(streaming_order_many_workers)
{
    for (int threads = 2; threads <= 4; threads += 2) {
        test_src t;
        ts_init(&t, 300, 3, 5);
        marble_source s = ts_source(&t);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&s, &p, &err));
        marble_expr *pred = bin(MARBLE_OP_NE, col("r"), marble_expr_int(7));
        ASSERT_OK(marble_pipeline_filter(p, pred, &err));
        marble_expr_free(pred);
        sbuf out = {0};
        ASSERT_EQ_INT(run_pipeline(p, threads, NULL, &out, NULL, NULL, 0), 0);
        sbuf want = {0};
        for (int64_t m = 0; m < 300; m++)
            for (int64_t r = 0; r < 15; r++) {
                if (r == 7) continue;
                char line[48];
                snprintf(line, sizeof line, "%lld|%lld\n", (long long)m, (long long)r);
                sb_str(&want, line);
            }
        ASSERT_EQ_STR(out.p, want.p);
        free(out.p);
        free(want.p);
        ts_check_balanced(&t);
    }
}

static atomic_llong progress_max;
static void on_progress(void *ud, int64_t done, int64_t total)
{
    (void)ud;
    ASSERT_EQ_INT(total, 40);
    long long cur = atomic_load(&progress_max);
    while (done > cur && !atomic_compare_exchange_weak(&progress_max, &cur, done)) {
    }
}

TEST(progress_callback)
{
    for (size_t i = 0; i < 3; i++) {
        test_src t;
        ts_init(&t, 40, 2, 3);
        marble_source s = ts_source(&t);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&s, &p, &err));
        marble_expr *r = col("r");
        marble_agg_spec a = {MARBLE_AGG_SUM, r, "s"};
        ASSERT_OK(marble_pipeline_aggregate(p, NULL, NULL, 0, &a, 1, &err));
        marble_expr_free(r);
        marble_sched *sc = NULL;
        if (thread_counts[i]) {
            marble_sched_options so;
            marble_sched_options_init(&so);
            so.threads = thread_counts[i];
            ASSERT_OK(marble_sched_create(&so, &sc, &err));
        }
        marble_exec_options o;
        marble_exec_options_init(&o);
        o.sched = sc;
        o.progress = on_progress;
        atomic_store(&progress_max, 0);
        struct ArrowArrayStream st;
        ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
        sbuf out = {0};
        ASSERT_EQ_INT(drain(&st, &out, NULL), 0);
        ASSERT_EQ_STR(out.p, "600\n");
        ASSERT_EQ_INT(atomic_load(&progress_max), 40);
        st.release(&st);
        marble_sched_destroy(sc);
        free(out.p);
        ts_check_balanced(&t);
    }
}

TEST(source_error_propagates)
{
    for (size_t i = 0; i < 3; i++) {
        for (int blocking = 0; blocking < 2; blocking++) {
            test_src t;
            ts_init(&t, 30, 3, 4);
            t.fail_morsel = 17;
            marble_source s = ts_source(&t);
            marble_pipeline *p;
            ASSERT_OK(marble_pipeline_create(&s, &p, &err));
            if (blocking) {
                marble_sort_key k = {1, 0, 0};
                ASSERT_OK(marble_pipeline_sort(p, &k, 1, -1, &err));
            }
            sbuf out = {0};
            int code;
            char msg[256];
            ASSERT_EQ_INT(run_pipeline(p, thread_counts[i], NULL, &out, &code, msg, sizeof msg),
                          EIO);
            ASSERT_EQ_INT(code, MARBLE_ERR_CORRUPTION);
            ASSERT_CONTAINS(msg, "bad block in morsel 17");
            free(out.p);
            ts_check_balanced(&t);
        }
    }
}

typedef struct canceller {
    marble_cancel_token *tok;
    int delay_ms;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    marble_sleep_ns((uint64_t)c->delay_ms * 1000000);
    marble_cancel_token_cancel(c->tok);
    return NULL;
}

TEST(cancellation_from_another_thread)
{
    unsigned seed = 12345;
    for (int round = 0; round < 9; round++) {
        int threads = thread_counts[round % 3];
        int blocking = (round / 3) % 2;
        test_src t;
        ts_init(&t, 400, 4, 8);
        t.sleep_us = 500;
        marble_source s = ts_source(&t);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&s, &p, &err));
        if (blocking) {
            marble_expr *r = col("r");
            marble_agg_spec a = {MARBLE_AGG_COUNT, r, "c"};
            ASSERT_OK(marble_pipeline_aggregate(p, NULL, NULL, 0, &a, 1, &err));
            marble_expr_free(r);
        }
        marble_sched *sc = NULL;
        if (threads) {
            marble_sched_options so;
            marble_sched_options_init(&so);
            so.threads = threads;
            ASSERT_OK(marble_sched_create(&so, &sc, &err));
        }
        marble_cancel_token *tok;
        ASSERT_OK(marble_cancel_token_create(NULL, &tok, &err));
        marble_exec_options o;
        marble_exec_options_init(&o);
        o.sched = sc;
        o.cancel = tok;
        o.batch_budget = 1;
        struct ArrowArrayStream st;
        ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
        canceller c = {tok, 5 + (int)(rand_r(&seed) % 40)};
        pthread_t th;
        pthread_create(&th, NULL, cancel_later, &c);
        uint64_t t0 = marble_now_ns();
        int rc = 0;
        for (;;) {
            struct ArrowArray b;
            rc = st.get_next(&st, &b);
            if (rc || !b.release) break;
            b.release(&b);
        }
        uint64_t took = marble_now_ns() - t0;
        ASSERT_EQ_INT(rc, ECANCELED);
        ASSERT_EQ_INT(marble_stream_last_code(&st), MARBLE_ERR_CANCELLED);
        ASSERT_CONTAINS(st.get_last_error(&st), "cancel");
        (void)took; /* the full run would take >= 0.8 s; no timing is asserted */
        st.release(&st);
        pthread_join(th, NULL);
        marble_sched_destroy(sc);
        marble_cancel_token_destroy(tok);
        ts_check_balanced(&t);
    }
}

TEST(release_stream_midway)
{
    for (int round = 0; round < 6; round++) {
        int threads = thread_counts[round % 3];
        test_src t;
        ts_init(&t, 200, 3, 8);
        t.sleep_us = 100;
        marble_source s = ts_source(&t);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&s, &p, &err));
        marble_sched *sc = NULL;
        if (threads) {
            marble_sched_options so;
            marble_sched_options_init(&so);
            so.threads = threads;
            ASSERT_OK(marble_sched_create(&so, &sc, &err));
        }
        marble_exec_options o;
        marble_exec_options_init(&o);
        o.sched = sc;
        o.batch_budget = 1;
        struct ArrowArrayStream st;
        ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
        for (int i = 0; i < round * 3; i++) {
            struct ArrowArray b;
            ASSERT_EQ_INT(st.get_next(&st, &b), 0);
            ASSERT_NOT_NULL(b.release);
            ASSERT_EQ_INT(i64_at(b.children[0], 0), i / 3);
            b.release(&b);
        }
        st.release(&st);
        ASSERT_NULL(st.release);
        marble_sched_destroy(sc);
        ts_check_balanced(&t);
    }
}

TEST(limit_stops_source_early)
{
    test_src t;
    ts_init(&t, 1000, 2, 5);
    marble_source s = ts_source(&t);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&s, &p, &err));
    ASSERT_OK(marble_pipeline_limit(p, 3, 12, &err));
    sbuf out = {0};
    ASSERT_EQ_INT(run_pipeline(p, 4, NULL, &out, NULL, NULL, 0), 0);
    ASSERT_EQ_STR(out.p, "0|3\n0|4\n0|5\n0|6\n0|7\n0|8\n0|9\n1|0\n1|1\n1|2\n1|3\n1|4\n");
    ASSERT_LT_INT(atomic_load(&t.opened), 100);
    free(out.p);
    ts_check_balanced(&t);
}

/* ---- stream source, merge -------------------------------------------------------------------- */

TEST(source_from_stream_and_foreign_code)
{
    int64_t rows = 5;
    marble_source inner;
    basic_source(4, &rows, &inner);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&inner, &p, &err));
    struct ArrowArrayStream st;
    ASSERT_OK(marble_pipeline_execute(p, NULL, &st, &err));
    marble_source src;
    ASSERT_OK(marble_source_from_stream(&st, &src, &err));
    ASSERT_NULL(st.release);
    ASSERT_EQ_INT(src.n_morsels, 1);
    ASSERT_OK(marble_pipeline_create(&src, &p, &err));
    marble_expr *pred = bin(MARBLE_OP_GT, col("k"), marble_expr_int(16));
    ASSERT_OK(marble_pipeline_filter(p, pred, &err));
    marble_expr_free(pred);
    marble_expr *e[1] = {col("k")};
    ASSERT_OK(marble_pipeline_project(p, (const marble_expr *const *)e, NULL, 1, &err));
    marble_expr_free(e[0]);
    sbuf out = {0};
    ASSERT_EQ_INT(run_pipeline(p, 2, NULL, &out, NULL, NULL, 0), 0);
    ASSERT_EQ_STR(out.p, "17\n18\n19\n");
    free(out.p);
    struct ArrowArrayStream foreign = {0};
    ASSERT_EQ_INT(marble_stream_last_code(&foreign), MARBLE_OK);
    ASSERT_EQ_INT(marble_stream_last_code(NULL), MARBLE_OK);
}

static void fill_merge(int64_t b, int64_t r, int c, cell *v, void *ud)
{
    int which = *(int *)ud;
    int64_t k = b * 3 + r; /* 0..5999 within the input */
    if (c == 0) {
        v->i = (k * (which + 1)) / 2; /* non-decreasing, with ties */
    } else {
        v->i = which * 100000 + k;
    }
}

TEST(merge_streams_stable)
{
    struct ArrowArrayStream in[3];
    int64_t nb[3] = {2000, 700, 1};
    for (int w = 0; w < 3; w++) {
        marble_source src;
        make_source("key:int64,id:int64", nb[w], 3, fill_merge, &w, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        ASSERT_OK(marble_pipeline_execute(p, NULL, &in[w], &err));
    }
    marble_sort_key k = {0, 0, 0};
    struct ArrowArrayStream out;
    ASSERT_OK(marble_merge_streams(in, 3, &k, 1, &out, &err));
    int64_t prev_key = -1, prev_id = -1, total = 0, batches = 0;
    for (;;) {
        struct ArrowArray b;
        ASSERT_EQ_INT(out.get_next(&out, &b), 0);
        if (!b.release) break;
        batches++;
        ASSERT_LE_INT(b.length, 4096);
        for (int64_t r = 0; r < b.length; r++) {
            int64_t key = i64_at(b.children[0], r);
            int64_t id = i64_at(b.children[1], r);
            ASSERT_LE_INT(prev_key, key);
            if (key == prev_key) ASSERT_LT_INT(prev_id, id); /* stable: lower input first */
            prev_key = key;
            prev_id = id;
            total++;
        }
        b.release(&b);
    }
    ASSERT_EQ_INT(total, 3 * (2000 + 700 + 1));
    ASSERT_GE_INT(batches, 2);
    out.release(&out);

    /* mismatched schemas are refused and the inputs released */
    int64_t rows = 2;
    marble_source a, b2;
    basic_source(1, &rows, &a);
    int w = 0;
    make_source("key:int64,id:int64", 1, 3, fill_merge, &w, &b2);
    marble_pipeline *pa, *pb;
    ASSERT_OK(marble_pipeline_create(&a, &pa, &err));
    ASSERT_OK(marble_pipeline_create(&b2, &pb, &err));
    ASSERT_OK(marble_pipeline_execute(pa, NULL, &in[0], &err));
    ASSERT_OK(marble_pipeline_execute(pb, NULL, &in[1], &err));
    ASSERT_EQ_INT(marble_merge_streams(in, 2, &k, 1, &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(in[0].release);
    ASSERT_NULL(in[1].release);
}

TEST(aggregate_bool_and_computed_keys)
{
    for (size_t t = 0; t < 3; t++) {
        int64_t rows = 5;
        marble_source src;
        basic_source(2, &rows, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_expr *g[2] = {bin(MARBLE_OP_GT, col("k"), marble_expr_int(4)), col("g")};
        marble_expr *d = col("d"), *b = bin(MARBLE_OP_GT, col("k"), marble_expr_int(2));
        marble_agg_spec aggs[] = {{MARBLE_AGG_MIN, d, "mind"}, {MARBLE_AGG_MAX, b, "maxb"}};
        const char *gn[2] = {"big", NULL};
        ASSERT_OK(
            marble_pipeline_aggregate(p, (const marble_expr *const *)g, gn, 2, aggs, 2, &err));
        struct ArrowSchema sc;
        ASSERT_OK(marble_pipeline_schema(p, &sc, &err));
        ASSERT_EQ_STR(sc.children[0]->format, "b");
        ASSERT_EQ_STR(sc.children[0]->name, "big");
        ASSERT_EQ_STR(sc.children[1]->name, "g");
        ASSERT_EQ_STR(sc.children[3]->format, "b");
        sc.release(&sc);
        sbuf out = {0};
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, NULL, NULL, 0), 0);
        sort_lines(&out);
        ASSERT_EQ_STR(out.p, "0|0|0|1\n0|1|0.25|1\n0|2|0.5|0\n1|0|2.25|1\n1|1|1.75|1\n"
                             "1|2|1.25|1\n1|N|1.5|1\n");
        free(out.p);
        marble_expr_free(g[0]);
        marble_expr_free(g[1]);
        marble_expr_free(d);
        marble_expr_free(b);
    }
}

TEST(aggregate_groups_over_no_rows)
{
    for (size_t t = 0; t < 3; t++) {
        char *r = agg_result(thread_counts[t], 0, 10, "g", NULL, 0, NULL, 0);
        ASSERT_EQ_STR(r, "");
        free(r);
        /* every row filtered out: no groups, but a global aggregate still gives one row */
        int64_t rows = 10;
        marble_source src;
        basic_source(3, &rows, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_expr *pred = bin(MARBLE_OP_LT, col("k"), marble_expr_int(0));
        ASSERT_OK(marble_pipeline_filter(p, pred, &err));
        marble_expr_free(pred);
        marble_expr *k = col("k");
        marble_agg_spec a[] = {{MARBLE_AGG_COUNT_STAR, NULL, NULL}, {MARBLE_AGG_AVG, k, NULL}};
        ASSERT_OK(marble_pipeline_aggregate(p, NULL, NULL, 0, a, 2, &err));
        struct ArrowSchema sc;
        ASSERT_OK(marble_pipeline_schema(p, &sc, &err));
        ASSERT_EQ_STR(sc.children[0]->name, "count(*)");
        ASSERT_EQ_STR(sc.children[1]->name, "avg(k)");
        sc.release(&sc);
        sbuf out = {0};
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, NULL, NULL, 0), 0);
        ASSERT_EQ_STR(out.p, "0|N\n");
        free(out.p);
        marble_expr_free(k);
    }
}

TEST(limit_feeding_blocking_operators)
{
    for (size_t t = 0; t < 3; t++) {
        /* k 0..99 in 25 morsels; rows with k % 10 != 3 are 0 1 2 4 5 6 7 ...; skip 5, take 20:
           6 7 8 9 10 11 12 14 15 16 17 18 19 20 21 22 24 25 26 27 */
        int64_t rows = 4;
        marble_source src;
        basic_source(25, &rows, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_expr *pred = bin(MARBLE_OP_NE, bin(MARBLE_OP_MOD, col("k"), marble_expr_int(10)),
                                marble_expr_int(3));
        ASSERT_OK(marble_pipeline_filter(p, pred, &err));
        marble_expr_free(pred);
        ASSERT_OK(marble_pipeline_limit(p, 5, 20, &err));
        marble_expr *e[1] = {col("k")};
        ASSERT_OK(marble_pipeline_project(p, (const marble_expr *const *)e, NULL, 1, &err));
        marble_expr_free(e[0]);
        marble_sort_key sk = {0, 1, 0};
        ASSERT_OK(marble_pipeline_sort(p, &sk, 1, 3, &err));
        ASSERT_OK(marble_pipeline_limit(p, 1, 5, &err));
        marble_expr *k = col("k");
        marble_agg_spec a[] = {{MARBLE_AGG_SUM, k, "s"}, {MARBLE_AGG_COUNT_STAR, NULL, "n"}};
        ASSERT_OK(marble_pipeline_aggregate(p, NULL, NULL, 0, a, 2, &err));
        marble_expr_free(k);
        sbuf out = {0};
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[t], NULL, &out, NULL, NULL, 0), 0);
        /* top 3 descending: 27 26 25; skip 1 -> 26 + 25 */
        ASSERT_EQ_STR(out.p, "51|2\n");
        free(out.p);
    }
}

static void fill_merge2(int64_t b, int64_t r, int c, cell *v, void *ud)
{
    const int64_t *keys = ud;
    int64_t k = keys[b * 4 + r];
    if (c == 0) {
        v->null = k < 0;
        v->i = k;
    } else {
        v->i = keys[100] * 100 + b * 4 + r;
    }
}

TEST(merge_streams_desc_nulls_and_empty)
{
    /* descending, NULLs first; input 1 is empty */
    int64_t k0[101] = {-1, 9, 7, 7, 4, 2, 2, 0};
    k0[100] = 0;
    int64_t k2[101] = {-1, -1, 8, 7, 3, 2, 1, 0};
    k2[100] = 2;
    struct ArrowArrayStream in[3];
    marble_source s0, s1, s2;
    make_source("key:int64,id:int64", 2, 4, fill_merge2, k0, &s0);
    make_source("key:int64,id:int64", 0, 4, fill_merge2, k0, &s1);
    make_source("key:int64,id:int64", 2, 4, fill_merge2, k2, &s2);
    marble_source *ss[3] = {&s0, &s1, &s2};
    for (int i = 0; i < 3; i++) {
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(ss[i], &p, &err));
        ASSERT_OK(marble_pipeline_execute(p, NULL, &in[i], &err));
    }
    marble_sort_key k = {0, 1, 1};
    struct ArrowArrayStream out;
    ASSERT_OK(marble_merge_streams(in, 3, &k, 1, &out, &err));
    sbuf got = {0};
    ASSERT_EQ_INT(drain(&out, &got, NULL), 0);
    out.release(&out);
    ASSERT_EQ_STR(got.p, "N|0\nN|200\nN|201\n9|1\n8|202\n7|2\n7|3\n7|203\n4|4\n3|204\n2|5\n2|6\n"
                         "2|205\n1|206\n0|7\n0|207\n");
    free(got.p);
}

TEST(malformed_source_batch)
{
    for (size_t i = 0; i < 3; i++) {
        test_src t;
        ts_init(&t, 10, 2, 3);
        t.bad_batch = 1;
        marble_source s = ts_source(&t);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&s, &p, &err));
        sbuf out = {0};
        int code;
        char msg[256];
        ASSERT_EQ_INT(run_pipeline(p, thread_counts[i], NULL, &out, &code, msg, sizeof msg),
                      EINVAL);
        ASSERT_EQ_INT(code, MARBLE_ERR_INVALID_ARGUMENT);
        ASSERT_CONTAINS(msg, "morsel 3");
        free(out.p);
        ts_check_balanced(&t);
    }
}
