/* The aggregate's vectorized paths: int64 / float64 columns read straight from sliced Arrow
 * arrays (batch and column offsets, validity bitmaps with garbage under NULL slots, rows outside
 * the slice that would overflow), with and without a selection, with no group and one int64
 * group key, through an expression (the evaluated-vector path), SUM overflow, NaN for MIN/MAX,
 * and empty input; each checked exactly against a reference computed here row by row. */
#include "marble/pipeline.h"
#include "marble_test.h"

#include <math.h>
#include <stdlib.h>

#include "marble/base.h"

static marble_error err;

enum { NB = 5, R = 300, SKIP = 3 }; /* logical row r of a batch is physical row SKIP + r */

typedef struct cell {
    int null;
    int64_t i;
    double d;
} cell;

/* Columns g:int64, x:int64, d:float64 at (batch, physical row). */
typedef void (*fill_fn)(int64_t b, int64_t p, int c, cell *out);

static int64_t batch_rows(int64_t b)
{
    return b == NB - 1 ? 0 : R - 5; /* the last batch is empty */
}

/* Batch b: R physical rows sliced to rows [SKIP, SKIP + batch_rows): the batch's offset is 2
 * and every column's offset 1; null slots hold garbage. */
static void make_batch(const struct ArrowSchema *schema, fill_fn fill, int64_t b,
                       struct ArrowArray *a)
{
    marble_batch_builder *bb;
    ASSERT_OK(marble_batch_builder_create(schema, &bb, &err));
    for (int64_t p = 0; p < R; p++)
        for (int c = 0; c < 3; c++) {
            cell v = {0};
            fill(b, p, c, &v);
            if (v.null)
                ASSERT_OK(marble_builder_append_null(bb, c, &err));
            else if (c == 2)
                ASSERT_OK(marble_builder_append_double(bb, c, v.d, &err));
            else
                ASSERT_OK(marble_builder_append_int(bb, c, v.i, &err));
        }
    ASSERT_OK(marble_batch_builder_finish(bb, a, &err));
    marble_batch_builder_destroy(bb);
    for (int c = 0; c < 3; c++) {
        struct ArrowArray *col = a->children[c];
        for (int64_t p = 0; p < R; p++) {
            cell v = {0};
            fill(b, p, c, &v);
            if (!v.null) continue;
            if (c == 2)
                ((double *)col->buffers[1])[p] = NAN;
            else
                ((int64_t *)col->buffers[1])[p] = INT64_MAX - p;
        }
        col->offset = 1;
        col->length = R - 1;
        col->null_count = -1;
    }
    a->offset = 2;
    a->length = batch_rows(b);
}

static const char *const SCHEMA = "g:int64,x:int64,d:float64";

/* raw = 0: marble_source_from_batches (whose views fold the batch offset into the columns');
 * raw = 1: a source handing out the sliced batches as they are (batch offset 2). */
static int raw_schema(void *ud, struct ArrowSchema *out, marble_error *e)
{
    (void)ud;
    return marble_arrow_schema_parse(SCHEMA, out, e);
}

static int raw_open(void *ud, int64_t i, void **cursor, marble_error *e)
{
    (void)ud;
    (void)e;
    int64_t *c = malloc(sizeof *c);
    *c = i;
    *cursor = c;
    return MARBLE_OK;
}

static int raw_next(void *ud, void *cursor, struct ArrowArray *out, marble_error *e)
{
    (void)e;
    int64_t *c = cursor;
    if (*c < 0) return MARBLE_ERR_NOT_FOUND;
    struct ArrowSchema schema;
    ASSERT_OK(marble_arrow_schema_parse(SCHEMA, &schema, &err));
    make_batch(&schema, (fill_fn)ud, *c, out);
    schema.release(&schema);
    *c = -1;
    return MARBLE_OK;
}

static void raw_close(void *ud, void *cursor)
{
    (void)ud;
    free(cursor);
}

static int raw_source = 0;

static void make_source(fill_fn fill, marble_source *src)
{
    if (raw_source) {
        *src = (marble_source){(void *)fill, NB, raw_schema, raw_open, raw_next, raw_close, NULL};
        return;
    }
    struct ArrowSchema schema;
    ASSERT_OK(marble_arrow_schema_parse(SCHEMA, &schema, &err));
    struct ArrowArray *batches = calloc(NB, sizeof *batches);
    for (int64_t b = 0; b < NB; b++)
        make_batch(&schema, fill, b, &batches[b]);
    ASSERT_OK(marble_source_from_batches(&schema, batches, NB, src, &err));
    free(batches);
}

static void fill_basic(int64_t b, int64_t p, int c, cell *v)
{
    int64_t id = b * 1000 + p;
    if (c == 0) {
        v->null = p % 11 == 5;
        v->i = p % 3;
    } else if (c == 1) {
        v->null = p % 5 == 2;
        v->i = id * 7 - 3000;
    } else {
        v->null = p % 4 == 1;
        v->d = (double)id / 8 - 50;
    }
    /* rows outside the slice would overflow a SUM if they were read */
    if (c == 1 && !v->null && (p < SKIP || p >= SKIP + R - 5)) v->i = INT64_MAX - p;
}

enum {
    A_COUNT_STAR,
    A_COUNT_X,
    A_SUM_X,
    A_MIN_X,
    A_MAX_X,
    A_AVG_X,
    A_COUNT_D,
    A_SUM_D,
    A_MIN_D,
    A_MAX_D,
    A_AVG_D,
    N_AGG
};

typedef struct ref {
    int64_t count, cx, cd;
    int64_t sx, minx, maxx;
    double sd, mind, maxd;
} ref;

static void ref_add(ref *r, const cell *x, const cell *d)
{
    r->count++;
    if (!x->null) {
        r->minx = !r->cx || x->i < r->minx ? x->i : r->minx;
        r->maxx = !r->cx || x->i > r->maxx ? x->i : r->maxx;
        r->sx += x->i;
        r->cx++;
    }
    if (!d->null) {
        if (!r->cd || (isnan(r->mind) && !isnan(d->d)) || d->d < r->mind) r->mind = d->d;
        if (!r->cd || (isnan(r->maxd) && !isnan(d->d)) || d->d > r->maxd) r->maxd = d->d;
        r->sd += d->d;
        r->cd++;
    }
}

/* Checks output row i of batch `b` (aggregates from column `c0` on) against r. */
static void check_row(const struct ArrowSchema *s, const struct ArrowArray *b, int64_t i, int c0,
                      const ref *r)
{
    const struct ArrowArray *const *ch = (const struct ArrowArray *const *)b->children;
    struct ArrowSchema *const *f = s->children;
#define INT_AT(a) marble_arrow_get_int(f[c0 + (a)], ch[c0 + (a)], i)
#define DBL_AT(a) marble_arrow_get_double(f[c0 + (a)], ch[c0 + (a)], i)
#define NULL_AT(a) marble_arrow_is_null(ch[c0 + (a)], i)
    ASSERT_EQ_INT(INT_AT(A_COUNT_STAR), r->count);
    ASSERT_EQ_INT(INT_AT(A_COUNT_X), r->cx);
    ASSERT_EQ_INT(INT_AT(A_COUNT_D), r->cd);
    ASSERT_EQ_INT(NULL_AT(A_SUM_X), !r->cx);
    ASSERT_EQ_INT(NULL_AT(A_MIN_X), !r->cx);
    ASSERT_EQ_INT(NULL_AT(A_AVG_X), !r->cx);
    ASSERT_EQ_INT(NULL_AT(A_SUM_D), !r->cd);
    ASSERT_EQ_INT(NULL_AT(A_MAX_D), !r->cd);
    ASSERT_EQ_INT(NULL_AT(A_AVG_D), !r->cd);
    if (r->cx) {
        ASSERT_EQ_INT(INT_AT(A_SUM_X), r->sx);
        ASSERT_EQ_INT(INT_AT(A_MIN_X), r->minx);
        ASSERT_EQ_INT(INT_AT(A_MAX_X), r->maxx);
        ASSERT_TRUE(DBL_AT(A_AVG_X) == (double)r->sx / (double)r->cx);
    }
    if (r->cd) {
        ASSERT_TRUE(DBL_AT(A_SUM_D) == r->sd);
        ASSERT_TRUE(DBL_AT(A_AVG_D) == r->sd / (double)r->cd);
        if (isnan(r->mind))
            ASSERT_TRUE(isnan(DBL_AT(A_MIN_D)));
        else
            ASSERT_TRUE(DBL_AT(A_MIN_D) == r->mind);
        if (isnan(r->maxd))
            ASSERT_TRUE(isnan(DBL_AT(A_MAX_D)));
        else
            ASSERT_TRUE(DBL_AT(A_MAX_D) == r->maxd);
    }
#undef INT_AT
#undef DBL_AT
#undef NULL_AT
}

typedef enum { SEL_NONE, SEL_FILTER } sel_mode;

/* x_expr: 0 reads x and d as plain columns; 1 aggregates (x + 0) and (d + 0.0) instead, which
 * go through evaluated vectors. grouped: GROUP BY g. */
static void run_case(fill_fn fill, sel_mode sel, int x_expr, int grouped, int threads)
{
    marble_source src;
    make_source(fill, &src);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&src, &p, &err));
    if (sel == SEL_FILTER) {
        marble_expr *pred =
            marble_expr_binary(MARBLE_OP_GT, marble_expr_column("g"), marble_expr_int(0));
        marble_expr *pred2 = marble_expr_binary(
            MARBLE_OP_OR, pred, marble_expr_unary(MARBLE_OP_IS_NULL, marble_expr_column("g")));
        ASSERT_OK(marble_pipeline_filter(p, pred2, &err));
        marble_expr_free(pred2);
    }
    marble_expr *x =
        x_expr ? marble_expr_binary(MARBLE_OP_ADD, marble_expr_column("x"), marble_expr_int(0))
               : marble_expr_column("x");
    marble_expr *d =
        x_expr ? marble_expr_binary(MARBLE_OP_ADD, marble_expr_column("d"), marble_expr_double(0))
               : marble_expr_column("d");
    marble_agg_spec a[N_AGG] = {{MARBLE_AGG_COUNT_STAR, NULL, "n"}, {MARBLE_AGG_COUNT, x, "cx"},
                                {MARBLE_AGG_SUM, x, "sx"},          {MARBLE_AGG_MIN, x, "minx"},
                                {MARBLE_AGG_MAX, x, "maxx"},        {MARBLE_AGG_AVG, x, "avgx"},
                                {MARBLE_AGG_COUNT, d, "cd"},        {MARBLE_AGG_SUM, d, "sd"},
                                {MARBLE_AGG_MIN, d, "mind"},        {MARBLE_AGG_MAX, d, "maxd"},
                                {MARBLE_AGG_AVG, d, "avgd"}};
    marble_expr *g = marble_expr_column("g");
    const marble_expr *groups[1] = {g};
    ASSERT_OK(marble_pipeline_aggregate(p, grouped ? groups : NULL, NULL, grouped ? 1 : 0, a, N_AGG,
                                        &err));
    marble_expr_free(g);
    marble_expr_free(x);
    marble_expr_free(d);

    /* reference: index 0..2 the groups g = 0..2, 3 the NULL group; no groups: index 0 */
    ref r[4];
    memset(r, 0, sizeof r);
    int seen[4] = {0};
    for (int64_t b = 0; b < NB; b++)
        for (int64_t k = 0; k < batch_rows(b); k++) {
            int64_t ph = SKIP + k;
            cell cg = {0}, cx = {0}, cd = {0};
            fill(b, ph, 0, &cg);
            fill(b, ph, 1, &cx);
            fill(b, ph, 2, &cd);
            if (sel == SEL_FILTER && !(cg.null || cg.i > 0)) continue;
            int gi = !grouped ? 0 : cg.null ? 3 : (int)cg.i;
            ref_add(&r[gi], &cx, &cd);
            seen[gi] = 1;
        }

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
    o.batch_budget = 2;
    struct ArrowArrayStream st;
    ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
    struct ArrowSchema schema;
    ASSERT_EQ_INT(st.get_schema(&st, &schema), 0);
    int found[4] = {0};
    int64_t rows = 0;
    for (;;) {
        struct ArrowArray b;
        int rc = st.get_next(&st, &b);
        if (rc) FAIL("get_next: %s", st.get_last_error(&st));
        if (!b.release) break;
        for (int64_t i = 0; i < b.length; i++, rows++) {
            int gi = 0;
            if (grouped) {
                gi = marble_arrow_is_null(b.children[0], i)
                         ? 3
                         : (int)marble_arrow_get_int(schema.children[0], b.children[0], i);
                ASSERT_TRUE(gi >= 0 && gi < 4 && seen[gi] && !found[gi]);
            }
            found[gi] = 1;
            check_row(&schema, &b, i, grouped ? 1 : 0, &r[gi]);
        }
        b.release(&b);
    }
    ASSERT_EQ_INT(rows, grouped ? seen[0] + seen[1] + seen[2] + seen[3] : 1);
    schema.release(&schema);
    st.release(&st);
    /* the stream owns the pipeline */
    marble_sched_destroy(s);
}

static const int thread_counts[] = {0, 2};

TEST(agg_fast_sliced_columns)
{
    for (raw_source = 0; raw_source < 2; raw_source++)
        for (int t = 0; t < 2; t++)
            for (int grouped = 0; grouped < 2; grouped++)
                for (int sel = 0; sel < 2; sel++)
                    for (int xe = 0; xe < 2; xe++)
                        run_case(fill_basic, (sel_mode)sel, xe, grouped, thread_counts[t]);
    raw_source = 0;
}

/* no NULLs at all (the dense loops, 4 partial sums) and values that need 8-byte popcounts */
static void fill_dense(int64_t b, int64_t p, int c, cell *v)
{
    int64_t id = b * 1000 + p;
    v->i = c == 0 ? p % 3 : id * 3 - 500;
    v->d = (double)(id % 97) / 4 - 7;
}

TEST(agg_fast_no_nulls)
{
    for (int t = 0; t < 2; t++)
        for (int grouped = 0; grouped < 2; grouped++)
            for (int sel = 0; sel < 2; sel++)
                run_case(fill_dense, (sel_mode)sel, 0, grouped, thread_counts[t]);
}

/* NaN among doubles: MIN / MAX skip NaN unless every value is NaN; every value NULL in x */
static void fill_nan(int64_t b, int64_t p, int c, cell *v)
{
    v->i = p % 3;
    if (c == 1) v->null = 1;
    if (c == 2) {
        if (p % 3 == 1)
            v->d = NAN; /* group 1: only NaN */
        else if (p % 7 == 0)
            v->d = NAN;
        else
            v->d = (double)((b * 31 + p) % 50) - 20;
    }
}

TEST(agg_fast_nan_and_all_null)
{
    for (int t = 0; t < 2; t++) {
        /* SUM / AVG over NaN are NaN: check MIN / MAX / COUNT via the grouped run */
        marble_source src;
        make_source(fill_nan, &src);
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_expr *d = marble_expr_column("d"), *x = marble_expr_column("x");
        marble_expr *g = marble_expr_column("g");
        marble_agg_spec a[5] = {{MARBLE_AGG_MIN, d, "mind"},
                                {MARBLE_AGG_MAX, d, "maxd"},
                                {MARBLE_AGG_COUNT, x, "cx"},
                                {MARBLE_AGG_SUM, x, "sx"},
                                {MARBLE_AGG_MAX, x, "mx"}};
        const marble_expr *groups[1] = {g};
        ASSERT_OK(marble_pipeline_aggregate(p, groups, NULL, 1, a, 5, &err));
        marble_expr_free(d);
        marble_expr_free(x);
        marble_expr_free(g);
        double mn[3] = {0}, mx[3] = {0};
        int has[3] = {0};
        for (int64_t b = 0; b < NB; b++)
            for (int64_t k = 0; k < batch_rows(b); k++) {
                cell cg = {0}, cd = {0};
                fill_nan(b, SKIP + k, 0, &cg);
                fill_nan(b, SKIP + k, 2, &cd);
                int gi = (int)cg.i;
                if (!has[gi] || (isnan(mn[gi]) && !isnan(cd.d)) || cd.d < mn[gi]) mn[gi] = cd.d;
                if (!has[gi] || (isnan(mx[gi]) && !isnan(cd.d)) || cd.d > mx[gi]) mx[gi] = cd.d;
                has[gi] = 1;
            }
        ASSERT_TRUE(isnan(mn[1]) && !isnan(mn[0]) && !isnan(mx[2]));
        marble_sched *s = NULL;
        if (thread_counts[t]) {
            marble_sched_options so;
            marble_sched_options_init(&so);
            so.threads = thread_counts[t];
            ASSERT_OK(marble_sched_create(&so, &s, &err));
        }
        marble_exec_options o;
        marble_exec_options_init(&o);
        o.sched = s;
        struct ArrowArrayStream st;
        ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
        struct ArrowSchema schema;
        ASSERT_EQ_INT(st.get_schema(&st, &schema), 0);
        int rows = 0;
        for (;;) {
            struct ArrowArray b;
            ASSERT_EQ_INT(st.get_next(&st, &b), 0);
            if (!b.release) break;
            for (int64_t i = 0; i < b.length; i++, rows++) {
                int gi = (int)marble_arrow_get_int(schema.children[0], b.children[0], i);
                double gmn = marble_arrow_get_double(schema.children[1], b.children[1], i);
                double gmx = marble_arrow_get_double(schema.children[2], b.children[2], i);
                if (isnan(mn[gi]))
                    ASSERT_TRUE(isnan(gmn) && isnan(gmx));
                else
                    ASSERT_TRUE(gmn == mn[gi] && gmx == mx[gi]);
                ASSERT_EQ_INT(marble_arrow_get_int(schema.children[3], b.children[3], i), 0);
                ASSERT_TRUE(marble_arrow_is_null(b.children[4], i));
                ASSERT_TRUE(marble_arrow_is_null(b.children[5], i));
            }
            b.release(&b);
        }
        ASSERT_EQ_INT(rows, 3);
        schema.release(&schema);
        st.release(&st);
        /* the stream owns the pipeline */
        marble_sched_destroy(s);
    }
}

static void fill_overflow(int64_t b, int64_t p, int c, cell *v)
{
    v->i = c == 0 ? p % 2 : INT64_MAX / 512 + p;
    v->d = 1;
}

/* Runs SUM(x) (grouped or not) and returns the stream's code. */
static int sum_code(fill_fn fill, int grouped, int threads, char *msg, size_t cap)
{
    marble_source src;
    make_source(fill, &src);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&src, &p, &err));
    marble_expr *x = marble_expr_column("x"), *g = marble_expr_column("g");
    marble_agg_spec a = {MARBLE_AGG_SUM, x, "total"};
    const marble_expr *groups[1] = {g};
    ASSERT_OK(
        marble_pipeline_aggregate(p, grouped ? groups : NULL, NULL, grouped ? 1 : 0, &a, 1, &err));
    marble_expr_free(x);
    marble_expr_free(g);
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
    struct ArrowArrayStream st;
    ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
    int rc = 0;
    for (;;) {
        struct ArrowArray b;
        if ((rc = st.get_next(&st, &b)) != 0 || !b.release) break;
        b.release(&b);
    }
    int code = rc ? marble_stream_last_code(&st) : 0;
    snprintf(msg, cap, "%s", rc && st.get_last_error(&st) ? st.get_last_error(&st) : "");
    st.release(&st);
    /* the stream owns the pipeline */
    marble_sched_destroy(s);
    return code;
}

TEST(agg_fast_sum_overflow)
{
    char msg[256];
    for (int t = 0; t < 2; t++)
        for (int grouped = 0; grouped < 2; grouped++) {
            ASSERT_EQ_INT(sum_code(fill_overflow, grouped, thread_counts[t], msg, sizeof msg),
                          MARBLE_ERR_LIMIT);
            ASSERT_CONTAINS(msg, "total");
            ASSERT_CONTAINS(msg, "overflow");
            /* huge values only outside the slices and under NULLs: no overflow */
            ASSERT_EQ_INT(sum_code(fill_basic, grouped, thread_counts[t], msg, sizeof msg), 0);
            raw_source = 1;
            ASSERT_EQ_INT(sum_code(fill_basic, grouped, thread_counts[t], msg, sizeof msg), 0);
            raw_source = 0;
        }
}

TEST(agg_fast_empty_input)
{
    for (int t = 0; t < 2; t++) {
        struct ArrowSchema schema;
        ASSERT_OK(marble_arrow_schema_parse("g:int64,x:int64,d:float64", &schema, &err));
        marble_source src;
        ASSERT_OK(marble_source_from_batches(&schema, NULL, 0, &src, &err));
        marble_pipeline *p;
        ASSERT_OK(marble_pipeline_create(&src, &p, &err));
        marble_expr *x = marble_expr_column("x"), *d = marble_expr_column("d");
        marble_agg_spec a[6] = {{MARBLE_AGG_COUNT_STAR, NULL, "n"}, {MARBLE_AGG_COUNT, x, "cx"},
                                {MARBLE_AGG_SUM, x, "sx"},          {MARBLE_AGG_MIN, d, "mind"},
                                {MARBLE_AGG_AVG, d, "avgd"},        {MARBLE_AGG_SUM, d, "sd"}};
        ASSERT_OK(marble_pipeline_aggregate(p, NULL, NULL, 0, a, 6, &err));
        marble_expr_free(x);
        marble_expr_free(d);
        marble_sched *s = NULL;
        if (thread_counts[t]) {
            marble_sched_options so;
            marble_sched_options_init(&so);
            so.threads = thread_counts[t];
            ASSERT_OK(marble_sched_create(&so, &s, &err));
        }
        marble_exec_options o;
        marble_exec_options_init(&o);
        o.sched = s;
        struct ArrowArrayStream st;
        ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
        struct ArrowArray b;
        ASSERT_EQ_INT(st.get_next(&st, &b), 0);
        ASSERT_NOT_NULL(b.release);
        ASSERT_EQ_INT(b.length, 1);
        ASSERT_EQ_INT(((const int64_t *)b.children[0]->buffers[1])[b.children[0]->offset], 0);
        ASSERT_EQ_INT(((const int64_t *)b.children[1]->buffers[1])[b.children[1]->offset], 0);
        for (int c = 2; c < 6; c++)
            ASSERT_TRUE(marble_arrow_is_null(b.children[c], 0));
        b.release(&b);
        ASSERT_EQ_INT(st.get_next(&st, &b), 0);
        ASSERT_NULL(b.release);
        st.release(&st);
        /* the stream owns the pipeline */
        marble_sched_destroy(s);
    }
}
