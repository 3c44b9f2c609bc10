/* Randomized differential test of the pipeline executor: random batches (with NULLs and empty
 * batches) and random pipelines of filter / project / aggregate / sort (top-N) / limit, run with
 * no scheduler and with 2- and 4-thread schedulers, compared against a naive row-at-a-time
 * reference written here. */
#include "marble/pipeline.h"
#include "marble_test.h"

#include <stdlib.h>

static marble_error err;

enum { K_INT, K_DBL, K_STR };

typedef struct val {
    int null;
    int64_t i;
    double d;
    const char *s;
} val;

#define MAXC 8

typedef struct table {
    int ncols;
    int kind[MAXC];
    char name[MAXC][16];
    val *rows; /* nrows * MAXC */
    size_t nrows, cap;
} table;

static val *row_at(table *t, size_t r)
{
    return &t->rows[r * MAXC];
}

static val *add_row(table *t)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 256;
        t->rows = realloc(t->rows, t->cap * MAXC * sizeof(val));
        if (!t->rows) FAIL("oom");
    }
    val *r = row_at(t, t->nrows++);
    memset(r, 0, MAXC * sizeof(val));
    return r;
}

static const char *strs[] = {"", "x", "xy", "y", "yy", "z"};

static unsigned rnd(unsigned *seed, unsigned n)
{
    return n ? (unsigned)(rand_r(seed) % n) : 0;
}

/* ---- rendering (same format as the pipeline side) ------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *s, const char *t, size_t n)
{
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
    }
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void sb_str(sbuf *s, const char *t)
{
    sb_add(s, t, strlen(t));
}

static void render_val(sbuf *s, int kind, const val *v)
{
    char buf[64];
    if (v->null)
        sb_str(s, "N");
    else if (kind == K_INT) {
        snprintf(buf, sizeof buf, "%lld", (long long)v->i);
        sb_str(s, buf);
    } else if (kind == K_DBL) {
        snprintf(buf, sizeof buf, "%.6g", v->d);
        sb_str(s, buf);
    } else
        sb_str(s, v->s);
}

static void render_table(table *t, sbuf *out)
{
    sb_str(out, "");
    for (size_t r = 0; r < t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            if (c) sb_str(out, "|");
            render_val(out, t->kind[c], &row_at(t, r)[c]);
        }
        sb_str(out, "\n");
    }
}

static void render_stream(struct ArrowArrayStream *st, sbuf *out)
{
    struct ArrowSchema schema;
    ASSERT_EQ_INT(st->get_schema(st, &schema), 0);
    sb_str(out, "");
    for (;;) {
        struct ArrowArray b;
        int rc = st->get_next(st, &b);
        if (rc) FAIL("get_next: %d %s", rc, st->get_last_error(st));
        if (!b.release) break;
        ASSERT_OK(marble_arrow_array_validate(&schema, &b, MARBLE_VALIDATE_DEFAULT, &err));
        for (int64_t r = 0; r < b.length; r++) {
            for (int64_t c = 0; c < b.n_children; c++) {
                const struct ArrowSchema *f = schema.children[c];
                const struct ArrowArray *a = b.children[c];
                char buf[64];
                if (c) sb_str(out, "|");
                if (marble_arrow_is_null(a, r)) {
                    sb_str(out, "N");
                } else if (!strcmp(f->format, "g")) {
                    snprintf(buf, sizeof buf, "%.6g", marble_arrow_get_double(f, a, r));
                    sb_str(out, buf);
                } else if (!strcmp(f->format, "u")) {
                    const void *d;
                    size_t n;
                    marble_arrow_get_bytes(f, a, r, &d, &n);
                    sb_add(out, d, n);
                } else {
                    snprintf(buf, sizeof buf, "%lld", (long long)marble_arrow_get_int(f, a, r));
                    sb_str(out, buf);
                }
            }
            sb_str(out, "\n");
        }
        b.release(&b);
    }
    schema.release(&schema);
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void sort_lines(sbuf *s)
{
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

/* ---- predicates ------------------------------------------------------------------------------ */

typedef struct pred {
    int type; /* 0: col > t, 1: col <= t, 2: col = str, 3: col IS NULL, 4: col IS NOT NULL,
                 5: AND, 6: OR */
    int col;
    int64_t t;
    const char *s;
    struct pred *l, *r;
} pred;

static pred *rand_pred(unsigned *seed, const table *t, int depth)
{
    pred *p = calloc(1, sizeof *p);
    if (depth < 2 && rnd(seed, 3) == 0) {
        p->type = 5 + (int)rnd(seed, 2);
        p->l = rand_pred(seed, t, depth + 1);
        p->r = rand_pred(seed, t, depth + 1);
        return p;
    }
    p->col = (int)rnd(seed, (unsigned)t->ncols);
    int k = t->kind[p->col];
    unsigned which = rnd(seed, 4);
    if (which == 3) {
        p->type = 3 + (int)rnd(seed, 2);
    } else if (k == K_STR) {
        p->type = 2;
        p->s = strs[rnd(seed, 6)];
    } else {
        p->type = (int)rnd(seed, 2);
        p->t = k == K_INT && !strcmp(t->name[p->col], "a") ? (int64_t)rnd(seed, 11) - 5
                                                           : (int64_t)rnd(seed, 200) - 100;
    }
    return p;
}

static marble_expr *pred_expr(const pred *p, const table *t)
{
    marble_expr *c = NULL;
    if (p->type < 5) c = marble_expr_column(t->name[p->col]);
    switch (p->type) {
    case 0:
        return marble_expr_binary(MARBLE_OP_GT, c, marble_expr_int(p->t));
    case 1:
        return marble_expr_binary(MARBLE_OP_LE, c, marble_expr_int(p->t));
    case 2:
        return marble_expr_binary(MARBLE_OP_EQ, c, marble_expr_string(p->s, strlen(p->s)));
    case 3:
        return marble_expr_unary(MARBLE_OP_IS_NULL, c);
    case 4:
        return marble_expr_unary(MARBLE_OP_IS_NOT_NULL, c);
    default:
        return marble_expr_binary(p->type == 5 ? MARBLE_OP_AND : MARBLE_OP_OR, pred_expr(p->l, t),
                                  pred_expr(p->r, t));
    }
}

/* 0 false, 1 true, 2 NULL */
static int pred_eval(const pred *p, const table *t, const val *row)
{
    if (p->type >= 5) {
        int a = pred_eval(p->l, t, row), b = pred_eval(p->r, t, row);
        if (p->type == 5) {
            if (a == 0 || b == 0) return 0;
            return (a == 1 && b == 1) ? 1 : 2;
        }
        if (a == 1 || b == 1) return 1;
        return (a == 0 && b == 0) ? 0 : 2;
    }
    const val *v = &row[p->col];
    if (p->type == 3) return v->null;
    if (p->type == 4) return !v->null;
    if (v->null) return 2;
    if (p->type == 2) return strcmp(v->s, p->s) == 0;
    double x = t->kind[p->col] == K_INT ? (double)v->i : v->d;
    return p->type == 0 ? x > (double)p->t : x <= (double)p->t;
}

static void pred_free(pred *p)
{
    if (!p) return;
    pred_free(p->l);
    pred_free(p->r);
    free(p);
}

/* ---- reference operators --------------------------------------------------------------------- */

static int val_cmp(int kind, const val *a, const val *b)
{
    if (kind == K_STR) return strcmp(a->s, b->s);
    if (kind == K_INT) return (a->i > b->i) - (a->i < b->i);
    return (a->d > b->d) - (a->d < b->d);
}

static const marble_sort_key *g_keys;
static size_t g_nkeys;
static table *g_tab;

static int row_cmp(const val *x, const val *y)
{
    for (size_t k = 0; k < g_nkeys; k++) {
        int c = g_keys[k].column;
        const val *a = &x[c], *b = &y[c];
        if (a->null || b->null) {
            if (a->null && b->null) continue;
            int r = a->null ? 1 : -1;
            return g_keys[k].nulls_first ? -r : r;
        }
        int r = val_cmp(g_tab->kind[c], a, b);
        if (r) return g_keys[k].descending ? -r : r;
    }
    return 0;
}

static void ref_sort(table *t, const marble_sort_key *keys, size_t n)
{
    g_keys = keys;
    g_nkeys = n;
    g_tab = t;
    val tmp[MAXC];
    for (size_t i = 1; i < t->nrows; i++) { /* stable insertion sort */
        memcpy(tmp, row_at(t, i), sizeof tmp);
        size_t j = i;
        while (j > 0 && row_cmp(row_at(t, j - 1), tmp) > 0) {
            memcpy(row_at(t, j), row_at(t, j - 1), sizeof tmp);
            j--;
        }
        memcpy(row_at(t, j), tmp, sizeof tmp);
    }
}

typedef struct aggspec {
    marble_agg_fn fn;
    int col;
} aggspec;

static void ref_aggregate(const table *in, const int *gcols, int ng, const aggspec *aggs, int na,
                          table *out)
{
    memset(out, 0, sizeof *out);
    out->ncols = ng + na;
    for (int g = 0; g < ng; g++) {
        out->kind[g] = in->kind[gcols[g]];
        strcpy(out->name[g], in->name[gcols[g]]);
    }
    for (int a = 0; a < na; a++) {
        int k = aggs[a].fn == MARBLE_AGG_AVG ? K_DBL
                : (aggs[a].fn == MARBLE_AGG_COUNT || aggs[a].fn == MARBLE_AGG_COUNT_STAR)
                    ? K_INT
                    : in->kind[aggs[a].col];
        out->kind[ng + a] = k;
        snprintf(out->name[ng + a], 16, "x%d", a);
    }
    size_t ngroups = 0;
    size_t *first = calloc(in->nrows + 1, sizeof *first);
    size_t *gid = calloc(in->nrows + 1, sizeof *gid);
    for (size_t r = 0; r < in->nrows; r++) {
        const val *row = row_at((table *)in, r);
        size_t g;
        for (g = 0; g < ngroups; g++) {
            const val *o = row_at((table *)in, first[g]);
            int same = 1;
            for (int k = 0; k < ng && same; k++) {
                const val *a = &row[gcols[k]], *b = &o[gcols[k]];
                same = (a->null && b->null) ||
                       (!a->null && !b->null && val_cmp(in->kind[gcols[k]], a, b) == 0);
            }
            if (same) break;
        }
        if (g == ngroups) first[ngroups++] = r;
        gid[r] = g;
    }
    if (ng == 0 && ngroups == 0) ngroups = 1;
    for (size_t g = 0; g < ngroups; g++) {
        val *o = add_row(out);
        for (int k = 0; k < ng; k++)
            o[k] = row_at((table *)in, first[g])[gcols[k]];
        for (int a = 0; a < na; a++) {
            int c = aggs[a].col;
            int64_t cnt = 0, isum = 0;
            double dsum = 0;
            val best = {1, 0, 0, NULL};
            for (size_t r = 0; r < in->nrows; r++) {
                if (gid[r] != g) continue;
                if (aggs[a].fn == MARBLE_AGG_COUNT_STAR) {
                    cnt++;
                    continue;
                }
                const val *v = &row_at((table *)in, r)[c];
                if (v->null) continue;
                cnt++;
                isum += v->i;
                dsum += in->kind[c] == K_INT ? (double)v->i : v->d;
                int cm = best.null ? -1 : val_cmp(in->kind[c], v, &best);
                if (best.null || (aggs[a].fn == MARBLE_AGG_MIN && cm < 0) ||
                    (aggs[a].fn == MARBLE_AGG_MAX && cm > 0))
                    best = *v;
            }
            val *res = &o[ng + a];
            memset(res, 0, sizeof *res);
            switch (aggs[a].fn) {
            case MARBLE_AGG_COUNT_STAR:
            case MARBLE_AGG_COUNT:
                res->i = cnt;
                break;
            case MARBLE_AGG_SUM:
                res->null = cnt == 0;
                res->i = isum;
                res->d = dsum;
                break;
            case MARBLE_AGG_AVG:
                res->null = cnt == 0;
                res->d = cnt ? dsum / (double)cnt : 0;
                break;
            default:
                *res = best;
            }
        }
    }
    free(first);
    free(gid);
}

/* ---- the test -------------------------------------------------------------------------------- */

static void one_round(unsigned seed0, int threads, marble_sched *sched)
{
    unsigned seed = seed0;
    /* data */
    table t = {0};
    t.ncols = 4;
    t.kind[0] = K_INT;
    strcpy(t.name[0], "a");
    t.kind[1] = K_INT;
    strcpy(t.name[1], "b");
    t.kind[2] = K_STR;
    strcpy(t.name[2], "s");
    t.kind[3] = K_DBL;
    strcpy(t.name[3], "d");
    struct ArrowSchema schema;
    ASSERT_OK(marble_arrow_schema_parse("a:int64,b:int32,s:utf8,d:float64", &schema, &err));
    int nb = 1 + (int)rnd(&seed, 12);
    struct ArrowArray *batches = calloc((size_t)nb, sizeof *batches);
    marble_batch_builder *bb;
    ASSERT_OK(marble_batch_builder_create(&schema, &bb, &err));
    for (int b = 0; b < nb; b++) {
        int rows = rnd(&seed, 5) == 0 ? 0 : (int)rnd(&seed, 300);
        for (int r = 0; r < rows; r++) {
            val *v = add_row(&t);
            v[0].null = rnd(&seed, 7) == 0;
            v[0].i = (int64_t)rnd(&seed, 11) - 5;
            v[1].null = rnd(&seed, 10) == 0;
            v[1].i = (int64_t)rnd(&seed, 2001) - 1000;
            v[2].null = rnd(&seed, 10) == 0;
            v[2].s = strs[rnd(&seed, 6)];
            v[3].null = rnd(&seed, 10) == 0;
            v[3].d = ((double)rnd(&seed, 401) - 200) / 4;
            for (int c = 0; c < 4; c++) {
                if (v[c].null)
                    ASSERT_OK(marble_builder_append_null(bb, c, &err));
                else if (c == 2)
                    ASSERT_OK(marble_builder_append_bytes(bb, c, v[c].s, strlen(v[c].s), &err));
                else if (c == 3)
                    ASSERT_OK(marble_builder_append_double(bb, c, v[c].d, &err));
                else
                    ASSERT_OK(marble_builder_append_int(bb, c, v[c].i, &err));
            }
        }
        ASSERT_OK(marble_batch_builder_finish(bb, &batches[b], &err));
    }
    marble_batch_builder_destroy(bb);
    marble_source src;
    ASSERT_OK(marble_source_from_batches(&schema, batches, (size_t)nb, &src, &err));
    free(batches);
    marble_pipeline *p;
    ASSERT_OK(marble_pipeline_create(&src, &p, &err));

    int unordered = 0;
    /* filter */
    if (rnd(&seed, 2)) {
        pred *pr = rand_pred(&seed, &t, 0);
        marble_expr *e = pred_expr(pr, &t);
        ASSERT_NOT_NULL(e);
        ASSERT_OK(marble_pipeline_filter(p, e, &err));
        marble_expr_free(e);
        table f = t;
        f.rows = NULL;
        f.nrows = f.cap = 0;
        for (size_t r = 0; r < t.nrows; r++)
            if (pred_eval(pr, &t, row_at(&t, r)) == 1)
                memcpy(add_row(&f), row_at(&t, r), MAXC * sizeof(val));
        free(t.rows);
        t = f;
        pred_free(pr);
    }
    /* project: a permutation of a subset, maybe with a + b */
    if (rnd(&seed, 2)) {
        int perm[4] = {0, 1, 2, 3};
        for (int i = 3; i > 0; i--) {
            int j = (int)rnd(&seed, (unsigned)i + 1), x = perm[i];
            perm[i] = perm[j];
            perm[j] = x;
        }
        int n = 1 + (int)rnd(&seed, 4);
        int sum = rnd(&seed, 2);
        marble_expr *e[5];
        for (int i = 0; i < n; i++)
            e[i] = marble_expr_column(t.name[perm[i]]);
        if (sum)
            e[n] =
                marble_expr_binary(MARBLE_OP_ADD, marble_expr_column("a"), marble_expr_column("b"));
        const char *names[5] = {NULL, NULL, NULL, NULL, "ab"};
        const char *nm2[5];
        for (int i = 0; i < n; i++)
            nm2[i] = NULL;
        nm2[n] = "ab";
        ASSERT_OK(marble_pipeline_project(p, (const marble_expr *const *)e, nm2, (size_t)(n + sum),
                                          &err));
        (void)names;
        for (int i = 0; i < n + sum; i++)
            marble_expr_free(e[i]);
        table q = {0};
        q.ncols = n + sum;
        for (int i = 0; i < n; i++) {
            q.kind[i] = t.kind[perm[i]];
            strcpy(q.name[i], t.name[perm[i]]);
        }
        if (sum) {
            q.kind[n] = K_INT;
            strcpy(q.name[n], "ab");
        }
        for (size_t r = 0; r < t.nrows; r++) {
            val *in = row_at(&t, r), *o = add_row(&q);
            for (int i = 0; i < n; i++)
                o[i] = in[perm[i]];
            if (sum) {
                o[n].null = in[0].null || in[1].null;
                o[n].i = in[0].i + in[1].i;
            }
        }
        free(t.rows);
        t = q;
    }
    /* aggregate */
    int agg = rnd(&seed, 3) == 0;
    if (agg) {
        int gcols[2], ng = (int)rnd(&seed, 3);
        if (ng > t.ncols) ng = t.ncols;
        for (int g = 0; g < ng; g++)
            gcols[g] = (g == 1 && t.ncols > 1) ? (gcols[0] + 1) % t.ncols
                                               : (int)rnd(&seed, (unsigned)t.ncols);
        marble_expr *ge[2];
        for (int g = 0; g < ng; g++)
            ge[g] = marble_expr_column(t.name[gcols[g]]);
        aggspec as[4];
        marble_agg_spec ms[4];
        marble_expr *ae[4] = {0};
        char anames[4][16];
        int na = 1 + (int)rnd(&seed, 4);
        for (int a = 0; a < na; a++) {
            int c = (int)rnd(&seed, (unsigned)t.ncols);
            marble_agg_fn fn = (marble_agg_fn)(1 + rnd(&seed, 6));
            if ((fn == MARBLE_AGG_SUM || fn == MARBLE_AGG_AVG) && t.kind[c] == K_STR)
                fn = MARBLE_AGG_MAX;
            as[a].fn = fn;
            as[a].col = c;
            ae[a] = fn == MARBLE_AGG_COUNT_STAR ? NULL : marble_expr_column(t.name[c]);
            snprintf(anames[a], sizeof anames[a], "x%d", a);
            ms[a].fn = fn;
            ms[a].arg = ae[a];
            ms[a].name = anames[a];
        }
        ASSERT_OK(marble_pipeline_aggregate(p, (const marble_expr *const *)ge, NULL, (size_t)ng, ms,
                                            (size_t)na, &err));
        for (int g = 0; g < ng; g++)
            marble_expr_free(ge[g]);
        for (int a = 0; a < na; a++)
            marble_expr_free(ae[a]);
        table o;
        ref_aggregate(&t, gcols, ng, as, na, &o);
        free(t.rows);
        t = o;
        unordered = 1;
    }
    /* sort */
    int lim = rnd(&seed, 2);
    if (rnd(&seed, 2) || (agg && lim)) {
        marble_sort_key keys[MAXC];
        size_t nk;
        if (agg) {
            nk = (size_t)t.ncols;
            for (size_t k = 0; k < nk; k++)
                keys[k] = (marble_sort_key){(int)k, (int)rnd(&seed, 2), (int)rnd(&seed, 2)};
        } else {
            nk = 1 + rnd(&seed, 3);
            for (size_t k = 0; k < nk; k++)
                keys[k] = (marble_sort_key){(int)rnd(&seed, (unsigned)t.ncols), (int)rnd(&seed, 2),
                                            (int)rnd(&seed, 2)};
        }
        int64_t topn = rnd(&seed, 2) ? -1 : (int64_t)rnd(&seed, 60);
        ASSERT_OK(marble_pipeline_sort(p, keys, nk, topn, &err));
        ref_sort(&t, keys, nk);
        if (topn >= 0 && (size_t)topn < t.nrows) t.nrows = (size_t)topn;
        unordered = 0;
    }
    /* limit */
    if (lim) {
        int64_t off = rnd(&seed, 3) ? 0 : (int64_t)rnd(&seed, 30);
        int64_t n = (int64_t)rnd(&seed, 120);
        ASSERT_OK(marble_pipeline_limit(p, off, n, &err));
        size_t start = (size_t)off < t.nrows ? (size_t)off : t.nrows;
        size_t end = start + (size_t)n < t.nrows ? start + (size_t)n : t.nrows;
        if (end > start) memmove(t.rows, row_at(&t, start), (end - start) * MAXC * sizeof(val));
        t.nrows = end - start;
    }

    marble_exec_options o;
    marble_exec_options_init(&o);
    o.sched = sched;
    o.batch_budget = 1 + (int)rnd(&seed, 3);
    struct ArrowArrayStream st;
    ASSERT_OK(marble_pipeline_execute(p, &o, &st, &err));
    sbuf got = {0}, want = {0};
    render_stream(&st, &got);
    st.release(&st);
    render_table(&t, &want);
    if (unordered) {
        sort_lines(&got);
        sort_lines(&want);
    }
    if (strcmp(got.p, want.p) != 0)
        FAIL("seed %u threads %d: got\n%.2000s\nwant\n%.2000s", seed0, threads, got.p, want.p);
    free(got.p);
    free(want.p);
    free(t.rows);
}

static void rounds(int threads, unsigned base, int n)
{
    marble_sched *s = NULL;
    if (threads) {
        marble_sched_options so;
        marble_sched_options_init(&so);
        so.threads = threads;
        ASSERT_OK(marble_sched_create(&so, &s, &err));
    }
    for (int i = 0; i < n; i++)
        one_round(base + (unsigned)i, threads, s);
    marble_sched_destroy(s);
}

TEST(random_pipelines_inline)
{
    rounds(0, 1000, 150);
}

TEST(random_pipelines_2_threads)
{
    rounds(2, 1000, 150);
}

TEST(random_pipelines_4_threads)
{
    rounds(4, 5000, 150);
}
