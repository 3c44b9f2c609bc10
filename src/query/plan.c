/*
 * The query planner (marble/query.h): resolves a query against its table's schema, pushes the
 * WHERE clause into the scan (AND-conjuncts "column op literal" and "column IN (literals)"
 * become pruning predicates and a key range over the leading key columns; conjuncts that fix
 * the whole key become point gets), reads only the columns the query uses, and builds the
 * operator pipeline (filter, aggregate or project, sort or top-N, limit) over the scan. The full
 * WHERE is always applied as a filter: pushdown only skips data. The result stream is wrapped so
 * that releasing it frees the plan and the memory budget and fills the caller's stats.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query_internal.h"

#define MAX_POINT_KEYS 4096

typedef enum col_class { CL_OTHER, CL_INT, CL_UINT, CL_FLOAT, CL_STR, CL_BOOL } col_class;

typedef struct tcol {
    const char *name;
    const char *format;
    int64_t nullable;
    marble_arrow_type type;
    col_class cls;
    int needed;
} tcol;

typedef struct out_col {
    const marble_expr *e; /* EXPR: the expression; AGG: the argument (NULL: COUNT(*)) */
    int is_agg;
    marble_agg_fn fn;
    char *name;
    int group; /* grouped EXPR: index of its GROUP BY expression */
} out_col;

typedef struct pred { /* a pushed-down conjunct, its literal normalized to the column's class */
    int col;
    marble_expr_op op;
    marble_datum v;
} pred;

typedef struct in_set { /* col IN (literals), normalized, NULLs dropped */
    int col;
    marble_datum *v;
    size_t n;
} in_set;

typedef struct sort_ref {
    int out;    /* >= 0: output column; else -1 */
    int hidden; /* >= 0: index into hidden[] (a table column not in the output) */
    int desc;
} sort_ref;

typedef struct plan {
    char *table;
    struct ArrowSchema schema;
    tcol *cols;
    size_t n_cols;
    int key_cols[32];
    size_t n_key;
    marble_expr *where; /* a clone: the pushed-down literals point into it */
    marble_expr **star;
    size_t n_star;
    out_col *outs;
    size_t n_outs;
    int grouped;
    sort_ref *sorts;
    size_t n_sorts;
    int *hidden;
    size_t n_hidden;
    const char **scan_cols;
    size_t n_scan;
    pred *preds;
    size_t n_preds, cap_preds;
    in_set *ins;
    size_t n_ins, cap_ins;
    marble_scan_predicate *spreds;
    marble_value lo[32], hi[32];
    marble_key_range range;
    int has_range;
    marble__sbuf range_text;
    int point;
    marble_value *keys; /* n_keys * n_key */
    size_t n_keys;
} plan;

static void plan_free(plan *pl)
{
    if (!pl) return;
    marble_arrow_schema_release(&pl->schema);
    free(pl->cols);
    marble_expr_free(pl->where);
    for (size_t i = 0; i < pl->n_star; i++)
        marble_expr_free(pl->star[i]);
    free(pl->star);
    for (size_t i = 0; i < pl->n_outs; i++)
        free(pl->outs[i].name);
    free(pl->outs);
    free(pl->sorts);
    free(pl->hidden);
    free(pl->scan_cols);
    free(pl->preds);
    for (size_t i = 0; i < pl->n_ins; i++)
        free(pl->ins[i].v);
    free(pl->ins);
    free(pl->spreds);
    free(pl->range_text.p);
    free(pl->keys);
    free(pl->table);
    free(pl);
}

static int nomem(marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
}

static col_class class_of(const marble_arrow_type *t)
{
    switch (t->id) {
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_DATE32:
    case MARBLE_ARROW_TIMESTAMP:
        return CL_INT;
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64:
        return CL_UINT;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        return CL_FLOAT;
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_BINARY:
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        return CL_STR;
    case MARBLE_ARROW_BOOL:
        return CL_BOOL;
    default:
        return CL_OTHER;
    }
}

static int find_col(const plan *pl, const char *name)
{
    for (size_t i = 0; i < pl->n_cols; i++)
        if (!strcmp(pl->cols[i].name, name)) return (int)i;
    return -1;
}

/* Marks the columns `e` uses as needed; an unknown column is an error naming it. */
static int use_columns(plan *pl, const marble_expr *e, marble_error *err)
{
    if (!e) return MARBLE_OK;
    if (marble_expr_get_kind(e) == MARBLE_EXPR_COLUMN) {
        const char *name = marble_expr_get_column(e);
        int c = find_col(pl, name);
        if (c < 0)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "query: column '%s' not found in table '%s'", name, pl->table);
        pl->cols[c].needed = 1;
        return MARBLE_OK;
    }
    size_t n = marble_expr_num_children(e);
    for (size_t i = 0; i < n; i++)
        MARBLE_RETURN_NOT_OK(use_columns(pl, marble_expr_child(e, i), err));
    return MARBLE_OK;
}

static int load_table(plan *pl, marble_db *db, const char *table, marble_error *err)
{
    if (!(pl->table = malloc(strlen(table) + 1))) return nomem(err);
    strcpy(pl->table, table);
    MARBLE_RETURN_NOT_OK(
        marble_db_describe_table(db, table, &pl->schema, pl->key_cols, &pl->n_key, err));
    pl->n_cols = (size_t)pl->schema.n_children;
    if (!(pl->cols = calloc(pl->n_cols ? pl->n_cols : 1, sizeof *pl->cols))) return nomem(err);
    for (size_t i = 0; i < pl->n_cols; i++) {
        const struct ArrowSchema *c = pl->schema.children[i];
        tcol *t = &pl->cols[i];
        t->name = c->name;
        t->format = c->format;
        t->nullable = c->flags & ARROW_FLAG_NULLABLE;
        if (marble_arrow_type_parse(c->format, &t->type, NULL) == MARBLE_OK)
            t->cls = class_of(&t->type);
    }
    return MARBLE_OK;
}

/* ---- select list, grouping, ordering --------------------------------------------------------- */

static int text_equal(const marble_expr *a, const marble_expr *b, int *eq)
{
    char *ta = marble__expr_text(a), *tb = marble__expr_text(b);
    *eq = ta && tb && !strcmp(ta, tb);
    int ok = ta && tb;
    free(ta);
    free(tb);
    return ok ? MARBLE_OK : MARBLE_ERR_NO_MEMORY;
}

static int resolve_select(plan *pl, const marble_query *q, marble_error *err)
{
    if (!q->n_items)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: empty select list");
    size_t n = 0;
    for (size_t i = 0; i < q->n_items; i++) {
        if (q->items[i].kind == MARBLE__ITEM_STAR) n += pl->n_cols;
        if (q->items[i].kind == MARBLE__ITEM_AGG) pl->grouped = 1;
        if (q->items[i].kind != MARBLE__ITEM_STAR) n++;
    }
    if (q->n_groups) pl->grouped = 1;
    if (!(pl->outs = calloc(n, sizeof *pl->outs))) return nomem(err);
    for (size_t i = 0; i < q->n_items; i++) {
        const marble__item *it = &q->items[i];
        if (it->kind == MARBLE__ITEM_STAR) {
            if (pl->grouped)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "query: SELECT * cannot be used with GROUP BY or "
                                        "aggregates");
            if (!pl->star && !(pl->star = calloc(n, sizeof *pl->star))) return nomem(err);
            for (size_t c = 0; c < pl->n_cols; c++) {
                marble_expr *e = marble_expr_column(pl->cols[c].name);
                if (!e) return nomem(err);
                pl->star[pl->n_star++] = e;
                out_col *o = &pl->outs[pl->n_outs++];
                o->e = e;
                o->group = -1;
                if (!(o->name = malloc(strlen(pl->cols[c].name) + 1))) return nomem(err);
                strcpy(o->name, pl->cols[c].name);
                pl->cols[c].needed = 1;
            }
            continue;
        }
        out_col *o = &pl->outs[pl->n_outs++];
        o->e = it->e;
        o->is_agg = it->kind == MARBLE__ITEM_AGG;
        o->fn = it->fn;
        o->group = -1;
        if (!(o->name = marble__item_name(it))) return nomem(err);
        MARBLE_RETURN_NOT_OK(use_columns(pl, it->e, err));
        if (pl->grouped && !o->is_agg) {
            for (size_t g = 0; g < q->n_groups && o->group < 0; g++) {
                int eq;
                if (text_equal(it->e, q->groups[g], &eq)) return nomem(err);
                if (eq) o->group = (int)g;
            }
            if (o->group < 0)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "query: '%s' must appear in GROUP BY or be inside an "
                                        "aggregate",
                                        o->name);
        }
    }
    for (size_t g = 0; g < q->n_groups; g++)
        MARBLE_RETURN_NOT_OK(use_columns(pl, q->groups[g], err));
    return use_columns(pl, q->where, err);
}

static int resolve_order(plan *pl, const marble_query *q, marble_error *err)
{
    if (!q->n_orders) return MARBLE_OK;
    if (!(pl->sorts = calloc(q->n_orders, sizeof *pl->sorts)) ||
        !(pl->hidden = calloc(q->n_orders, sizeof *pl->hidden)))
        return nomem(err);
    for (size_t i = 0; i < q->n_orders; i++) {
        const marble__order *o = &q->orders[i];
        sort_ref *s = &pl->sorts[pl->n_sorts++];
        s->out = s->hidden = -1;
        s->desc = o->descending;
        if (!o->name) {
            if ((size_t)o->position > pl->n_outs)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "query: ORDER BY position %d is not in the select list "
                                        "(1..%zu)",
                                        o->position, pl->n_outs);
            s->out = o->position - 1;
            continue;
        }
        for (size_t k = 0; k < pl->n_outs && s->out < 0; k++)
            if (!strcmp(pl->outs[k].name, o->name)) s->out = (int)k;
        if (s->out >= 0) continue;
        int c = find_col(pl, o->name);
        if (c < 0 || pl->grouped)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "query: ORDER BY '%s' is not a column of the result%s", o->name,
                                    pl->grouped ? "" : " or of the table");
        pl->cols[c].needed = 1;
        size_t h = 0;
        while (h < pl->n_hidden && pl->hidden[h] != c)
            h++;
        if (h == pl->n_hidden) pl->hidden[pl->n_hidden++] = c;
        s->hidden = (int)h;
    }
    return MARBLE_OK;
}

static int choose_scan_columns(plan *pl, marble_error *err)
{
    if (!(pl->scan_cols = calloc(pl->n_cols ? pl->n_cols : 1, sizeof *pl->scan_cols)))
        return nomem(err);
    for (size_t i = 0; i < pl->n_cols; i++)
        if (pl->cols[i].needed) pl->scan_cols[pl->n_scan++] = pl->cols[i].name;
    if (!pl->n_scan && pl->n_key) pl->scan_cols[pl->n_scan++] = pl->cols[pl->key_cols[0]].name;
    return MARBLE_OK;
}

/* ---- pushdown -------------------------------------------------------------------------------- */

static marble_expr_op flip(marble_expr_op op)
{
    switch (op) {
    case MARBLE_OP_LT:
        return MARBLE_OP_GT;
    case MARBLE_OP_LE:
        return MARBLE_OP_GE;
    case MARBLE_OP_GT:
        return MARBLE_OP_LT;
    case MARBLE_OP_GE:
        return MARBLE_OP_LE;
    default:
        return op;
    }
}

#define EXACT_DOUBLE_INT 9007199254740992.0  /* 2^53 */
#define SAFE_INT_BOUND 4611686018427387904.0 /* 2^62 */

/* Rewrites "col op v" so that v has the column's value kind, keeping exactly the same rows
 * (int columns against doubles round the bound). 0: not expressible, do not push it. */
static int normalize(const tcol *c, marble_expr_op *op, marble_datum *v)
{
    switch (c->cls) {
    case CL_INT:
    case CL_UINT:
        if (v->kind == MARBLE_DATUM_DOUBLE) {
            double d = v->d;
            if (!(d >= -SAFE_INT_BOUND && d <= SAFE_INT_BOUND)) return 0;
            double tr = (double)(int64_t)d;
            double fl = tr > d ? tr - 1 : tr, ce = tr < d ? tr + 1 : tr;
            int integral = fl == d;
            switch (*op) {
            case MARBLE_OP_EQ:
                if (!integral) return 0;
                break;
            case MARBLE_OP_LT:
                if (!integral) *op = MARBLE_OP_LE;
                d = fl;
                break;
            case MARBLE_OP_LE:
                d = fl;
                break;
            case MARBLE_OP_GT:
                if (!integral) *op = MARBLE_OP_GE;
                d = ce;
                break;
            case MARBLE_OP_GE:
                d = ce;
                break;
            default:
                return 0;
            }
            *v = (marble_datum){.kind = MARBLE_DATUM_INT, .i = (int64_t)d};
        }
        if (v->kind != MARBLE_DATUM_INT) return 0;
        if (c->cls == CL_UINT && v->i < 0) return 0;
        return 1;
    case CL_FLOAT:
        if (v->kind == MARBLE_DATUM_INT) {
            if ((double)v->i > EXACT_DOUBLE_INT || (double)v->i < -EXACT_DOUBLE_INT) return 0;
            *v = (marble_datum){.kind = MARBLE_DATUM_DOUBLE, .d = (double)v->i};
        }
        return v->kind == MARBLE_DATUM_DOUBLE && !isnan(v->d);
    case CL_STR:
        return v->kind == MARBLE_DATUM_STRING;
    case CL_BOOL:
        return v->kind == MARBLE_DATUM_BOOL;
    default:
        return 0;
    }
}

static int datum_cmp(const marble_datum *a, const marble_datum *b)
{
    switch (a->kind) {
    case MARBLE_DATUM_INT:
    case MARBLE_DATUM_BOOL:
        return (a->i > b->i) - (a->i < b->i);
    case MARBLE_DATUM_DOUBLE:
        return (a->d > b->d) - (a->d < b->d);
    case MARBLE_DATUM_STRING: {
        size_t n = a->n < b->n ? a->n : b->n;
        int r = n ? memcmp(a->s, b->s, n) : 0;
        if (r) return r < 0 ? -1 : 1;
        return (a->n > b->n) - (a->n < b->n);
    }
    default:
        return 0;
    }
}

static int add_pred(plan *pl, int col, marble_expr_op op, marble_datum v)
{
    if (pl->n_preds == pl->cap_preds) {
        size_t nc = pl->cap_preds ? pl->cap_preds * 2 : 8;
        pred *np = realloc(pl->preds, nc * sizeof *np);
        if (!np) return -1;
        pl->preds = np;
        pl->cap_preds = nc;
    }
    pl->preds[pl->n_preds++] = (pred){col, op, v};
    return 0;
}

static int cmp_datum_qsort(const void *a, const void *b)
{
    return datum_cmp(a, b);
}

static int push_in(plan *pl, const marble_expr *e)
{
    const marble_expr *a = marble_expr_child(e, 0);
    if (marble_expr_in_negated(e) || marble_expr_get_kind(a) != MARBLE_EXPR_COLUMN) return 0;
    int col = find_col(pl, marble_expr_get_column(a));
    if (col < 0) return 0;
    size_t n = marble_expr_num_children(e) - 1, m = 0;
    marble_datum *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return -1;
    for (size_t i = 0; i < n; i++) {
        marble_datum d = *marble_expr_get_literal(marble_expr_child(e, i + 1));
        marble_expr_op op = MARBLE_OP_EQ;
        if (d.kind == MARBLE_DATUM_NULL) continue;
        if (!normalize(&pl->cols[col], &op, &d)) {
            free(v);
            return 0;
        }
        v[m++] = d;
    }
    if (!m) {
        free(v);
        return 0;
    }
    qsort(v, m, sizeof *v, cmp_datum_qsort);
    size_t u = 1;
    for (size_t i = 1; i < m; i++)
        if (datum_cmp(&v[i], &v[u - 1])) v[u++] = v[i];
    if (pl->n_ins == pl->cap_ins) {
        size_t nc = pl->cap_ins ? pl->cap_ins * 2 : 4;
        in_set *ni = realloc(pl->ins, nc * sizeof *ni);
        if (!ni) {
            free(v);
            return -1;
        }
        pl->ins = ni;
        pl->cap_ins = nc;
    }
    pl->ins[pl->n_ins++] = (in_set){col, v, u};
    if (u == 1) return add_pred(pl, col, MARBLE_OP_EQ, v[0]);
    if (add_pred(pl, col, MARBLE_OP_GE, v[0])) return -1;
    return add_pred(pl, col, MARBLE_OP_LE, v[u - 1]);
}

static int push_conjunct(plan *pl, const marble_expr *e)
{
    marble_expr_kind k = marble_expr_get_kind(e);
    if (k == MARBLE_EXPR_BINARY && marble_expr_get_op(e) == MARBLE_OP_AND) {
        if (push_conjunct(pl, marble_expr_child(e, 0))) return -1;
        return push_conjunct(pl, marble_expr_child(e, 1));
    }
    if (k == MARBLE_EXPR_IN) return push_in(pl, e);
    if (k != MARBLE_EXPR_BINARY) return 0;
    marble_expr_op op = marble_expr_get_op(e);
    if (op != MARBLE_OP_EQ && op != MARBLE_OP_LT && op != MARBLE_OP_LE && op != MARBLE_OP_GT &&
        op != MARBLE_OP_GE)
        return 0;
    const marble_expr *a = marble_expr_child(e, 0), *b = marble_expr_child(e, 1);
    if (marble_expr_get_kind(a) == MARBLE_EXPR_LITERAL &&
        marble_expr_get_kind(b) == MARBLE_EXPR_COLUMN) {
        const marble_expr *t = a;
        a = b;
        b = t;
        op = flip(op);
    }
    if (marble_expr_get_kind(a) != MARBLE_EXPR_COLUMN ||
        marble_expr_get_kind(b) != MARBLE_EXPR_LITERAL)
        return 0;
    int col = find_col(pl, marble_expr_get_column(a));
    marble_datum v = *marble_expr_get_literal(b);
    if (col < 0 || v.kind == MARBLE_DATUM_NULL || !normalize(&pl->cols[col], &op, &v)) return 0;
    return add_pred(pl, col, op, v);
}

/* The key value for a normalized literal on a key column, if it is exactly representable and
 * compares in the key encoding as the filter compares it. */
static int key_value(const tcol *c, const marble_datum *v, marble_value *out)
{
    memset(out, 0, sizeof *out);
    switch (c->cls) {
    case CL_INT: {
        int64_t lo = INT64_MIN, hi = INT64_MAX;
        if (c->type.id == MARBLE_ARROW_INT8) lo = INT8_MIN, hi = INT8_MAX;
        if (c->type.id == MARBLE_ARROW_INT16) lo = INT16_MIN, hi = INT16_MAX;
        if (c->type.id == MARBLE_ARROW_INT32 || c->type.id == MARBLE_ARROW_DATE32)
            lo = INT32_MIN, hi = INT32_MAX;
        if (v->kind != MARBLE_DATUM_INT || v->i < lo || v->i > hi) return 0;
        out->kind = MARBLE_VALUE_INT;
        out->i = v->i;
        return 1;
    }
    case CL_UINT: {
        uint64_t hi = UINT64_MAX;
        if (c->type.id == MARBLE_ARROW_UINT8) hi = UINT8_MAX;
        if (c->type.id == MARBLE_ARROW_UINT16) hi = UINT16_MAX;
        if (c->type.id == MARBLE_ARROW_UINT32) hi = UINT32_MAX;
        if (v->kind != MARBLE_DATUM_INT || v->i < 0 || (uint64_t)v->i > hi) return 0;
        out->kind = MARBLE_VALUE_UINT;
        out->u = (uint64_t)v->i;
        return 1;
    }
    case CL_FLOAT:
        if (v->kind != MARBLE_DATUM_DOUBLE || !isfinite(v->d) || v->d == 0) return 0;
        if (c->type.id == MARBLE_ARROW_FLOAT32 && (double)(float)v->d != v->d) return 0;
        out->kind = MARBLE_VALUE_DOUBLE;
        out->d = v->d;
        return 1;
    case CL_STR:
        if (v->kind != MARBLE_DATUM_STRING) return 0;
        if (c->type.id == MARBLE_ARROW_FIXED_SIZE_BINARY && (int64_t)v->n != c->type.byte_width)
            return 0;
        out->kind = MARBLE_VALUE_BYTES;
        out->bytes = v->s ? v->s : "";
        out->len = v->n;
        return 1;
    case CL_BOOL:
        if (v->kind != MARBLE_DATUM_BOOL) return 0;
        out->kind = MARBLE_VALUE_INT;
        out->i = v->i ? 1 : 0;
        return 1;
    default:
        return 0;
    }
}

static const char *op_text(marble_expr_op op)
{
    switch (op) {
    case MARBLE_OP_EQ:
        return "=";
    case MARBLE_OP_LT:
        return "<";
    case MARBLE_OP_LE:
        return "<=";
    case MARBLE_OP_GT:
        return ">";
    case MARBLE_OP_GE:
        return ">=";
    default:
        return "?";
    }
}

static void sb_pred(marble__sbuf *b, const plan *pl, const pred *p)
{
    marble__sb_ident(b, pl->cols[p->col].name);
    marble__sb_fmt(b, " %s ", op_text(p->op));
    marble__sb_literal(b, &p->v);
}

/* The equality value fixing key column `col`, if a conjunct gives one. */
static const pred *key_eq(const plan *pl, int col, marble_value *v)
{
    for (size_t i = 0; i < pl->n_preds; i++)
        if (pl->preds[i].col == col && pl->preds[i].op == MARBLE_OP_EQ &&
            key_value(&pl->cols[col], &pl->preds[i].v, v))
            return &pl->preds[i];
    return NULL;
}

static void plan_range(plan *pl)
{
    size_t j = 0;
    for (; j < pl->n_key; j++) {
        const pred *p = key_eq(pl, pl->key_cols[j], &pl->lo[j]);
        if (!p) break;
        pl->hi[j] = pl->lo[j];
        if (pl->range_text.n) marble__sb_str(&pl->range_text, ", ");
        sb_pred(&pl->range_text, pl, p);
    }
    pl->range.lower = (marble_key){pl->lo, j};
    pl->range.upper = (marble_key){pl->hi, j};
    pl->range.upper_inclusive = 1;
    pl->has_range = j > 0;
    if (j == pl->n_key) return;
    int col = pl->key_cols[j];
    const pred *lo = NULL, *hi = NULL;
    marble_value lv, hv, v;
    for (size_t i = 0; i < pl->n_preds; i++) {
        const pred *p = &pl->preds[i];
        if (p->col != col || p->op == MARBLE_OP_EQ || !key_value(&pl->cols[col], &p->v, &v))
            continue;
        int lower = p->op == MARBLE_OP_GT || p->op == MARBLE_OP_GE;
        const pred *cur = lower ? lo : hi;
        int better = !cur;
        if (cur) {
            int c = datum_cmp(&p->v, &cur->v);
            better = lower ? (c > 0 || (c == 0 && p->op == MARBLE_OP_GT))
                           : (c < 0 || (c == 0 && p->op == MARBLE_OP_LT));
        }
        if (!better) continue;
        if (lower) {
            lo = p;
            lv = v;
        } else {
            hi = p;
            hv = v;
        }
    }
    if (lo) {
        pl->lo[j] = lv;
        pl->range.lower.n = j + 1;
        pl->range.lower_exclusive = lo->op == MARBLE_OP_GT;
        if (pl->range_text.n) marble__sb_str(&pl->range_text, ", ");
        sb_pred(&pl->range_text, pl, lo);
    }
    if (hi) {
        pl->hi[j] = hv;
        pl->range.upper.n = j + 1;
        pl->range.upper_inclusive = hi->op == MARBLE_OP_LE;
        if (pl->range_text.n) marble__sb_str(&pl->range_text, ", ");
        sb_pred(&pl->range_text, pl, hi);
    }
    if (lo || hi) pl->has_range = 1;
    if (!pl->range.upper.n) pl->range.upper_inclusive = 0;
}

/* Every key column fixed by = or IN: the keys to get, in key order. */
static int plan_point(plan *pl, marble_error *err)
{
    if (!pl->n_key) return MARBLE_OK;
    const marble_datum *vals[32];
    size_t counts[32];
    marble_datum single[32];
    size_t total = 1;
    for (size_t j = 0; j < pl->n_key; j++) {
        int col = pl->key_cols[j];
        const in_set *best = NULL;
        counts[j] = 0;
        for (size_t i = 0; i < pl->n_preds; i++)
            if (pl->preds[i].col == col && pl->preds[i].op == MARBLE_OP_EQ) {
                single[j] = pl->preds[i].v;
                vals[j] = &single[j];
                counts[j] = 1;
                break;
            }
        if (!counts[j]) {
            for (size_t i = 0; i < pl->n_ins; i++)
                if (pl->ins[i].col == col && (!best || pl->ins[i].n < best->n)) best = &pl->ins[i];
            if (!best) return MARBLE_OK;
            vals[j] = best->v;
            counts[j] = best->n;
        }
        marble_value tmp;
        for (size_t k = 0; k < counts[j]; k++)
            if (!key_value(&pl->cols[col], &vals[j][k], &tmp)) return MARBLE_OK;
        total *= counts[j];
        if (total > MAX_POINT_KEYS) return MARBLE_OK;
    }
    if (!(pl->keys = malloc(total * pl->n_key * sizeof *pl->keys))) return nomem(err);
    for (size_t r = 0; r < total; r++) {
        size_t rest = r;
        for (size_t j = pl->n_key; j-- > 0;) {
            size_t k = rest % counts[j];
            rest /= counts[j];
            key_value(&pl->cols[pl->key_cols[j]], &vals[j][k], &pl->keys[r * pl->n_key + j]);
        }
    }
    pl->n_keys = total;
    pl->point = 1;
    return MARBLE_OK;
}

static int plan_pushdown(plan *pl, const marble_query *q, marble_error *err)
{
    if (!q->where) return MARBLE_OK;
    if (!(pl->where = marble_expr_clone(q->where))) return nomem(err);
    if (push_conjunct(pl, pl->where)) return nomem(err);
    if (pl->n_preds) {
        if (!(pl->spreds = calloc(pl->n_preds, sizeof *pl->spreds))) return nomem(err);
        for (size_t i = 0; i < pl->n_preds; i++)
            pl->spreds[i] = (marble_scan_predicate){pl->cols[pl->preds[i].col].name,
                                                    pl->preds[i].op, pl->preds[i].v};
    }
    plan_range(pl);
    if (pl->range_text.oom) return nomem(err);
    return plan_point(pl, err);
}

static int plan_build(marble_db *db, const marble_query *q, plan **out, marble_error *err)
{
    *out = NULL;
    if (!db || !q)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL %s",
                                db ? "query" : "database");
    plan *pl = calloc(1, sizeof *pl);
    if (!pl) return nomem(err);
    int rc = load_table(pl, db, q->table, err);
    if (!rc) rc = resolve_select(pl, q, err);
    if (!rc) rc = resolve_order(pl, q, err);
    if (!rc) rc = choose_scan_columns(pl, err);
    if (!rc) rc = plan_pushdown(pl, q, err);
    if (rc) {
        plan_free(pl);
        return rc;
    }
    *out = pl;
    return MARBLE_OK;
}

/* ---- operators ------------------------------------------------------------------------------- */

static int group_name(char *buf, size_t cap, const char *pfx, size_t i)
{
    return snprintf(buf, cap, "_%s%zu", pfx, i);
}

static int names_unique(const plan *pl)
{
    for (size_t i = 0; i < pl->n_outs; i++)
        for (size_t k = i + 1; k < pl->n_outs; k++)
            if (!strcmp(pl->outs[i].name, pl->outs[k].name)) return 0;
    return 1;
}

/* Projects column refs named srcs[i] to names[i]. */
static int project_refs(marble_pipeline *p, char (*srcs)[24], const char *const *names, size_t n,
                        marble_error *err)
{
    marble_expr **ex = calloc(n ? n : 1, sizeof *ex);
    if (!ex) return nomem(err);
    int rc = MARBLE_OK;
    for (size_t i = 0; i < n && !rc; i++)
        if (!(ex[i] = marble_expr_column(srcs[i]))) rc = nomem(err);
    if (!rc) rc = marble_pipeline_project(p, (const marble_expr *const *)ex, names, n, err);
    for (size_t i = 0; i < n; i++)
        marble_expr_free(ex[i]);
    free(ex);
    return rc;
}

static int add_grouped(plan *pl, const marble_query *q, marble_pipeline *p, marble_error *err)
{
    size_t n_aggs = 0;
    for (size_t i = 0; i < pl->n_outs; i++)
        n_aggs += pl->outs[i].is_agg;
    int identity = pl->n_outs == q->n_groups + n_aggs && names_unique(pl);
    for (size_t i = 0; i < pl->n_outs && identity; i++)
        identity = i < q->n_groups ? (!pl->outs[i].is_agg && pl->outs[i].group == (int)i)
                                   : pl->outs[i].is_agg;
    size_t n_int = q->n_groups + n_aggs;
    char(*inames)[24] = calloc(n_int ? n_int : 1, sizeof *inames);
    const char **gnames = calloc(q->n_groups ? q->n_groups : 1, sizeof *gnames);
    marble_agg_spec *aggs = calloc(n_aggs ? n_aggs : 1, sizeof *aggs);
    const char **onames = calloc(pl->n_outs, sizeof *onames);
    int rc = MARBLE_OK;
    if (!inames || !gnames || !aggs || !onames) {
        rc = nomem(err);
        goto done;
    }
    for (size_t g = 0; g < q->n_groups; g++) {
        group_name(inames[g], sizeof inames[g], "g", g);
        gnames[g] = identity ? pl->outs[g].name : inames[g];
    }
    size_t a = 0;
    for (size_t i = 0; i < pl->n_outs; i++) {
        onames[i] = pl->outs[i].name;
        if (!pl->outs[i].is_agg) continue;
        group_name(inames[q->n_groups + a], sizeof inames[0], "a", a);
        aggs[a] = (marble_agg_spec){pl->outs[i].fn, pl->outs[i].e,
                                    identity ? pl->outs[i].name : inames[q->n_groups + a]};
        a++;
    }
    rc = marble_pipeline_aggregate(p, (const marble_expr *const *)q->groups, gnames, q->n_groups,
                                   aggs, n_aggs, err);
    if (rc || identity) goto done;
    char(*srcs)[24] = calloc(pl->n_outs, sizeof *srcs);
    if (!srcs) {
        rc = nomem(err);
        goto done;
    }
    a = 0;
    for (size_t i = 0; i < pl->n_outs; i++) {
        if (pl->outs[i].is_agg)
            memcpy(srcs[i], inames[q->n_groups + a++], sizeof srcs[i]);
        else
            memcpy(srcs[i], inames[pl->outs[i].group], sizeof srcs[i]);
    }
    rc = project_refs(p, srcs, onames, pl->n_outs, err);
    free(srcs);
done:
    free(inames);
    free(gnames);
    free(aggs);
    free(onames);
    return rc;
}

/* 1 if the select list is exactly the scanned columns in order (no projection needed). */
static int select_is_scan(const plan *pl)
{
    if (pl->n_outs != pl->n_scan) return 0;
    for (size_t i = 0; i < pl->n_outs; i++) {
        const out_col *o = &pl->outs[i];
        if (o->is_agg || marble_expr_get_kind(o->e) != MARBLE_EXPR_COLUMN ||
            strcmp(marble_expr_get_column(o->e), pl->scan_cols[i]) ||
            strcmp(o->name, pl->scan_cols[i]))
            return 0;
    }
    return 1;
}

static int add_sort_limit(plan *pl, const marble_query *q, marble_pipeline *p, marble_error *err)
{
    if (pl->n_sorts > 64)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "query: more than 64 ORDER BY keys");
    if (pl->n_sorts) {
        marble_sort_key keys[64];
        size_t n = 0;
        for (size_t i = 0; i < pl->n_sorts && n < 64; i++) {
            const sort_ref *s = &pl->sorts[i];
            int col = s->out >= 0 ? s->out : (int)pl->n_outs + s->hidden;
            keys[n++] = (marble_sort_key){col, s->desc, 0};
        }
        int64_t top = -1;
        if (q->limit >= 0)
            top = q->offset > INT64_MAX - q->limit ? INT64_MAX : q->limit + q->offset;
        MARBLE_RETURN_NOT_OK(marble_pipeline_sort(p, keys, n, top, err));
    }
    return MARBLE_OK;
}

static int add_limit(const marble_query *q, marble_pipeline *p, marble_error *err)
{
    if (q->limit < 0 && q->offset == 0) return MARBLE_OK;
    return marble_pipeline_limit(p, q->offset, q->limit < 0 ? INT64_MAX : q->limit, err);
}

static int add_operators(plan *pl, const marble_query *q, marble_pipeline *p, marble_error *err)
{
    if (q->where) MARBLE_RETURN_NOT_OK(marble_pipeline_filter(p, q->where, err));
    if (pl->grouped) {
        MARBLE_RETURN_NOT_OK(add_grouped(pl, q, p, err));
        MARBLE_RETURN_NOT_OK(add_sort_limit(pl, q, p, err));
        return add_limit(q, p, err);
    }
    size_t n = pl->n_outs + pl->n_hidden;
    const marble_expr **ex = calloc(n, sizeof *ex);
    const char **names = calloc(n, sizeof *names);
    marble_expr **hid = calloc(pl->n_hidden ? pl->n_hidden : 1, sizeof *hid);
    char(*inames)[24] = calloc(n, sizeof *inames);
    int rc = MARBLE_OK;
    if (!ex || !names || !hid || !inames) {
        rc = nomem(err);
        goto done;
    }
    for (size_t i = 0; i < pl->n_outs; i++) {
        ex[i] = pl->outs[i].e;
        names[i] = pl->outs[i].name;
        if (pl->n_hidden) {
            group_name(inames[i], sizeof inames[i], "c", i);
            names[i] = inames[i];
        }
    }
    for (size_t h = 0; h < pl->n_hidden; h++) {
        if (!(hid[h] = marble_expr_column(pl->cols[pl->hidden[h]].name))) {
            rc = nomem(err);
            goto done;
        }
        ex[pl->n_outs + h] = hid[h];
        group_name(inames[pl->n_outs + h], sizeof inames[0], "h", h);
        names[pl->n_outs + h] = inames[pl->n_outs + h];
    }
    if (pl->n_hidden || !select_is_scan(pl))
        rc = marble_pipeline_project(p, (const marble_expr *const *)ex, names, n, err);
    if (!rc) rc = add_sort_limit(pl, q, p, err);
    if (!rc) rc = add_limit(q, p, err);
    if (!rc && pl->n_hidden) {
        for (size_t i = 0; i < pl->n_outs; i++)
            names[i] = pl->outs[i].name;
        rc = project_refs(p, inames, names, pl->n_outs, err);
    }
done:
    if (hid)
        for (size_t h = 0; h < pl->n_hidden; h++)
            marble_expr_free(hid[h]);
    free(hid);
    free(ex);
    free(names);
    free(inames);
    return rc;
}

/* ---- sources --------------------------------------------------------------------------------- */

/* The scanned columns' schema, from the table's. */
static int scan_schema(const plan *pl, struct ArrowSchema *out, marble_error *err)
{
    marble_field_spec *f = calloc(pl->n_scan ? pl->n_scan : 1, sizeof *f);
    if (!f) return nomem(err);
    for (size_t i = 0; i < pl->n_scan; i++) {
        const tcol *c = &pl->cols[find_col(pl, pl->scan_cols[i])];
        f[i] = (marble_field_spec){c->name, c->format, c->nullable != 0};
    }
    int rc = marble_arrow_schema_make(out, f, pl->n_scan, NULL, NULL, 0, err);
    free(f);
    return rc;
}

/* Gets every key at one snapshot into an in-memory source. */
static int point_source(marble_db *db, plan *pl, const marble_query_options *o, marble_source *src,
                        int64_t *found, marble_error *err)
{
    struct ArrowArray *rows = calloc(pl->n_keys ? pl->n_keys : 1, sizeof *rows);
    struct ArrowSchema schema = {0};
    marble_snapshot *snap = NULL;
    size_t n = 0;
    int rc = rows ? MARBLE_OK : nomem(err);
    if (!rc && !o->snapshot) rc = marble_db_snapshot_create(db, &snap, err);
    marble_read_options ro = {o->snapshot ? o->snapshot : snap, pl->scan_cols, pl->n_scan, 0};
    for (size_t k = 0; k < pl->n_keys && !rc; k++) {
        struct ArrowSchema s;
        marble_key key = {&pl->keys[k * pl->n_key], pl->n_key};
        rc = marble_db_get(db, pl->table, key, &ro, &s, &rows[n], err);
        if (rc == MARBLE_ERR_NOT_FOUND) {
            marble_error_clear(err);
            rc = MARBLE_OK;
            continue;
        }
        if (rc) break;
        marble_arrow_schema_release(&s);
        n++;
    }
    marble_db_snapshot_release(snap);
    if (!rc) rc = scan_schema(pl, &schema, err);
    if (!rc) {
        *found = (int64_t)n;
        rc = marble_source_from_batches(&schema, rows, n, src, err);
        n = 0;
    }
    for (size_t i = 0; i < n; i++)
        marble_arrow_array_release(&rows[i]);
    marble_arrow_schema_release(&schema);
    free(rows);
    return rc;
}

/* ---- the scan source wrapper and the result stream ------------------------------------------
 * The scan source is wrapped so that the plan (whose predicates and key range the scan reads)
 * lives exactly as long as the source, and so that the caller's stats follow the scan counters:
 * they are copied as each morsel is closed (complete once every morsel was read) and when the
 * source is released. The result stream is the pipeline's own (so marble_stream_last_code works
 * on it); when the query owns a memory budget, only its release is replaced, by one that
 * releases the pipeline's stream and then destroys the budget (found in a small registry keyed
 * by the stream's private_data, which moves with the stream). */

typedef struct qsource {
    marble_source inner;
    plan *pl;
    marble_scan_counters counters;
    marble_query_stats *stats;
    pthread_mutex_t mu;
} qsource;

static int64_t load64(int64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void qs_update(qsource *s)
{
    if (!s->stats) return;
    pthread_mutex_lock(&s->mu);
    marble_query_stats *st = s->stats;
    st->files_total = load64(&s->counters.files_total);
    st->files_skipped = load64(&s->counters.files_skipped);
    st->bloom_skipped = load64(&s->counters.bloom_skipped);
    st->batches_total = load64(&s->counters.batches_total);
    st->batches_skipped = load64(&s->counters.batches_skipped);
    st->rows_scanned = load64(&s->counters.rows_scanned);
    st->point_lookup = 0;
    pthread_mutex_unlock(&s->mu);
}

static int qs_schema(void *ud, struct ArrowSchema *out, marble_error *err)
{
    qsource *s = ud;
    return s->inner.get_schema(s->inner.ud, out, err);
}

static int qs_open(void *ud, int64_t i, void **cursor, marble_error *err)
{
    qsource *s = ud;
    return s->inner.open(s->inner.ud, i, cursor, err);
}

static int qs_next(void *ud, void *cursor, struct ArrowArray *out, marble_error *err)
{
    qsource *s = ud;
    return s->inner.next(s->inner.ud, cursor, out, err);
}

static void qs_close(void *ud, void *cursor)
{
    qsource *s = ud;
    s->inner.close(s->inner.ud, cursor);
    qs_update(s);
}

static void qs_release(void *ud)
{
    qsource *s = ud;
    if (s->inner.release) s->inner.release(s->inner.ud);
    qs_update(s);
    pthread_mutex_destroy(&s->mu);
    plan_free(s->pl);
    free(s);
}

/* Opens the table scan for the plan, taking ownership of the plan (freed on failure too). */
static int scan_source(marble_db *db, plan *pl, const marble_query_options *o,
                       marble_query_stats *stats, marble_source *out, marble_error *err)
{
    qsource *s = calloc(1, sizeof *s);
    if (!s) {
        plan_free(pl);
        return nomem(err);
    }
    s->pl = pl;
    s->stats = stats;
    pthread_mutex_init(&s->mu, NULL);
    marble_scan_spec spec = {
        o->snapshot, pl->scan_cols, pl->n_scan, pl->has_range ? &pl->range : NULL,
        pl->spreds,  pl->n_preds,   0,          &s->counters};
    int rc = marble_db_scan_source(db, pl->table, &spec, &s->inner, err);
    if (rc) {
        s->inner.release = NULL;
        qs_release(s);
        return rc;
    }
    qs_update(s);
    *out =
        (marble_source){s, s->inner.n_morsels, qs_schema, qs_open, qs_next, qs_close, qs_release};
    return MARBLE_OK;
}

typedef struct budget_entry {
    void *key;
    void (*release)(struct ArrowArrayStream *);
    marble_mem_budget *budget;
    struct budget_entry *next;
} budget_entry;

static pthread_mutex_t budget_mu = PTHREAD_MUTEX_INITIALIZER;
static budget_entry *budget_list;

static void budget_stream_release(struct ArrowArrayStream *st)
{
    if (!st->release) return;
    pthread_mutex_lock(&budget_mu);
    budget_entry **pp = &budget_list;
    while (*pp && (*pp)->key != st->private_data)
        pp = &(*pp)->next;
    budget_entry *e = *pp;
    if (e) *pp = e->next;
    pthread_mutex_unlock(&budget_mu);
    if (!e) return; /* unreachable: every stream with this release is registered */
    e->release(st);
    marble_mem_budget_destroy(e->budget);
    free(e);
}

/* Makes releasing `st` also destroy `budget` (after the pipeline is gone). */
static int attach_budget(struct ArrowArrayStream *st, marble_mem_budget *budget, marble_error *err)
{
    budget_entry *e = malloc(sizeof *e);
    if (!e) return nomem(err);
    *e = (budget_entry){st->private_data, st->release, budget, NULL};
    pthread_mutex_lock(&budget_mu);
    e->next = budget_list;
    budget_list = e;
    pthread_mutex_unlock(&budget_mu);
    st->release = budget_stream_release;
    return MARBLE_OK;
}

int marble_db_query(marble_db *db, const marble_query *q, const marble_query_options *opts,
                    struct ArrowArrayStream *out, marble_query_stats *stats, marble_error *err)
{
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: out is NULL");
    out->release = NULL;
    marble_query_options defaults;
    marble_query_options_init(&defaults);
    const marble_query_options *o = opts ? opts : &defaults;
    if (stats) memset(stats, 0, sizeof *stats);
    plan *pl;
    MARBLE_RETURN_NOT_OK(plan_build(db, q, &pl, err));
    marble_source src = {0};
    plan *use = pl; /* valid while the pipeline holds the source */
    int rc;
    if (pl->point) {
        int64_t found = 0;
        rc = point_source(db, pl, o, &src, &found, err);
        if (!rc && stats) {
            stats->point_lookup = 1;
            stats->rows_scanned = found;
        }
    } else {
        rc = scan_source(db, pl, o, stats, &src, err);
        pl = NULL; /* owned by the source */
    }
    marble_pipeline *p = NULL;
    if (!rc) rc = marble_pipeline_create(&src, &p, err);
    if (!rc) rc = add_operators(use, q, p, err);
    /* queries draw on the database's one budget (shared with memtables and caches) unless the
     * caller gives a limit of their own */
    marble_mem_budget *budget = marble_db_memory_budget(db), *own = NULL;
    if (!rc && o->memory_limit) rc = marble_mem_budget_create(o->memory_limit, &own, err);
    if (own) budget = own;
    if (!rc) {
        marble_exec_options eo;
        marble_exec_options_init(&eo);
        eo.sched = marble_db_sched(db);
        eo.cancel = o->cancel;
        eo.max_parallel = o->max_parallel;
        eo.memory = budget;
        eo.progress = o->progress;
        eo.progress_ud = o->progress_ud;
        rc = marble_pipeline_execute(p, &eo, out, err);
        p = NULL;
        if (!rc && own) {
            rc = attach_budget(out, own, err);
            if (rc)
                marble_arrow_stream_release(out);
            else
                own = NULL;
        }
    }
    marble_pipeline_destroy(p);
    marble_mem_budget_destroy(own);
    plan_free(pl);
    return rc;
}

int marble_db_query_sql(marble_db *db, const char *sql, const marble_query_options *opts,
                        struct ArrowArrayStream *out, marble_query_stats *stats, marble_error *err)
{
    if (out) out->release = NULL;
    marble_query *q;
    MARBLE_RETURN_NOT_OK(marble_query_parse(sql, &q, err));
    int rc = marble_db_query(db, q, opts, out, stats, err);
    marble_query_destroy(q);
    return rc;
}

void marble_query_options_init(marble_query_options *o)
{
    if (o) memset(o, 0, sizeof *o);
}

/* ---- explain --------------------------------------------------------------------------------- */

static void sb_expr_text(marble__sbuf *b, const marble_expr *e)
{
    char *t = marble__expr_text(e);
    if (!t) {
        b->oom = 1;
        return;
    }
    marble__sb_str(b, t);
    free(t);
}

static void sb_agg(marble__sbuf *b, const out_col *o)
{
    marble__sb_str(b, marble_agg_fn_name(o->fn));
    marble__sb_str(b, "(");
    if (o->e)
        sb_expr_text(b, o->e);
    else
        marble__sb_str(b, "*");
    marble__sb_str(b, ")");
}

static void explain_plan(const plan *pl, const marble_query *q, marble__sbuf *b)
{
    if (pl->point) {
        marble__sb_fmt(b, "point lookup (%zu key%s) ", pl->n_keys, pl->n_keys == 1 ? "" : "s");
        marble__sb_ident(b, pl->table);
    } else {
        marble__sb_str(b, "scan ");
        marble__sb_ident(b, pl->table);
    }
    marble__sb_str(b, " columns=[");
    for (size_t i = 0; i < pl->n_scan; i++) {
        if (i) marble__sb_str(b, ", ");
        marble__sb_str(b, pl->scan_cols[i]);
    }
    marble__sb_str(b, "]");
    if (!pl->point && pl->has_range) {
        marble__sb_str(b, " range=[");
        marble__sb_str(b, pl->range_text.p ? pl->range_text.p : "");
        marble__sb_str(b, "]");
    }
    if (!pl->point && pl->n_preds) {
        marble__sb_str(b, " prune=[");
        for (size_t i = 0; i < pl->n_preds; i++) {
            if (i) marble__sb_str(b, ", ");
            sb_pred(b, pl, &pl->preds[i]);
        }
        marble__sb_str(b, "]");
    }
    if (q->where) {
        marble__sb_str(b, " -> filter ");
        sb_expr_text(b, q->where);
    }
    if (pl->grouped) {
        marble__sb_str(b, " -> aggregate keys=[");
        for (size_t g = 0; g < q->n_groups; g++) {
            if (g) marble__sb_str(b, ", ");
            sb_expr_text(b, q->groups[g]);
        }
        marble__sb_str(b, "] aggs=[");
        int first = 1;
        for (size_t i = 0; i < pl->n_outs; i++) {
            if (!pl->outs[i].is_agg) continue;
            if (!first) marble__sb_str(b, ", ");
            first = 0;
            sb_agg(b, &pl->outs[i]);
        }
        marble__sb_str(b, "]");
    }
    if (!pl->grouped && (pl->n_hidden || !select_is_scan(pl))) {
        marble__sb_str(b, " -> project [");
        for (size_t i = 0; i < pl->n_outs; i++) {
            if (i) marble__sb_str(b, ", ");
            marble__sb_str(b, pl->outs[i].name);
        }
        marble__sb_str(b, "]");
    }
    if (pl->n_sorts) {
        if (q->limit >= 0)
            marble__sb_fmt(b, " -> top-n %" PRId64 " [",
                           q->offset > INT64_MAX - q->limit ? INT64_MAX : q->limit + q->offset);
        else
            marble__sb_str(b, " -> sort [");
        for (size_t i = 0; i < pl->n_sorts; i++) {
            const sort_ref *s = &pl->sorts[i];
            if (i) marble__sb_str(b, ", ");
            marble__sb_str(b, s->out >= 0 ? pl->outs[s->out].name
                                          : pl->cols[pl->hidden[s->hidden]].name);
            if (s->desc) marble__sb_str(b, " DESC");
        }
        marble__sb_str(b, "]");
    }
    if (q->limit >= 0) marble__sb_fmt(b, " -> limit %" PRId64, q->limit);
    if (q->offset > 0)
        marble__sb_fmt(b, "%s offset %" PRId64, q->limit >= 0 ? "" : " -> limit all", q->offset);
}

int marble_db_explain(marble_db *db, const marble_query *q, char **text, marble_error *err)
{
    if (!text) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "explain: text is NULL");
    *text = NULL;
    plan *pl;
    MARBLE_RETURN_NOT_OK(plan_build(db, q, &pl, err));
    marble__sbuf b = {0};
    explain_plan(pl, q, &b);
    plan_free(pl);
    if (b.oom) {
        free(b.p);
        return nomem(err);
    }
    *text = b.p;
    return MARBLE_OK;
}
