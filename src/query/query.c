/*
 * The structured query (marble/query.h): building a query item by item, and writing it back as
 * text in the SELECT subset so that parsing the text gives the same query (identifiers quoted
 * when needed, doubles printed with enough digits to round-trip, parentheses only where the
 * parser's precedence needs them).
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query_internal.h"

typedef marble__sbuf sbuf;
#define sb_put marble__sb_put
#define sb_str marble__sb_str
#define sb_fmt marble__sb_fmt
#define sb_ident marble__sb_ident
#define sb_literal marble__sb_literal

static char *dup_str(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

int marble_query_create(const char *table, marble_query **out, marble_error *err)
{
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: out is NULL");
    *out = NULL;
    if (!table || !*table)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: no table name");
    marble_query *q = calloc(1, sizeof *q);
    if (!q || !(q->table = dup_str(table))) {
        free(q);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    }
    q->limit = -1;
    *out = q;
    return MARBLE_OK;
}

void marble_query_destroy(marble_query *q)
{
    if (!q) return;
    for (size_t i = 0; i < q->n_items; i++) {
        marble_expr_free(q->items[i].e);
        free(q->items[i].alias);
    }
    free(q->items);
    marble_expr_free(q->where);
    for (size_t i = 0; i < q->n_groups; i++)
        marble_expr_free(q->groups[i]);
    free(q->groups);
    for (size_t i = 0; i < q->n_orders; i++)
        free(q->orders[i].name);
    free(q->orders);
    free(q->table);
    free(q);
}

/* Appends an item taking ownership of `e` (freed on failure). */
static int push_item(marble_query *q, marble__item_kind kind, marble_expr *e, marble_agg_fn fn,
                     const char *alias, marble_error *err)
{
    char *a = NULL;
    if (alias && !(a = dup_str(alias))) goto oom;
    if (grow((void **)&q->items, &q->cap_items, q->n_items + 1, sizeof *q->items)) goto oom;
    q->items[q->n_items++] = (marble__item){kind, e, fn, a};
    return MARBLE_OK;
oom:
    free(a);
    marble_expr_free(e);
    return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
}

int marble_query_select_all(marble_query *q, marble_error *err)
{
    if (!q) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL query");
    return push_item(q, MARBLE__ITEM_STAR, NULL, (marble_agg_fn)0, NULL, err);
}

static int check_alias(const char *alias, marble_error *err)
{
    if (alias && !*alias)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: empty alias");
    return MARBLE_OK;
}

int marble_query_select(marble_query *q, const marble_expr *e, const char *alias, marble_error *err)
{
    if (!q || !e)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL %s",
                                q ? "expression" : "query");
    MARBLE_RETURN_NOT_OK(check_alias(alias, err));
    marble_expr *c = marble_expr_clone(e);
    if (!c) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    return push_item(q, MARBLE__ITEM_EXPR, c, (marble_agg_fn)0, alias, err);
}

int marble__query_push_expr(marble_query *q, marble_expr *e, const char *alias, marble_error *err)
{
    return push_item(q, MARBLE__ITEM_EXPR, e, (marble_agg_fn)0, alias, err);
}

int marble__query_push_agg(marble_query *q, marble_agg_fn fn, marble_expr *arg, const char *alias,
                           marble_error *err)
{
    return push_item(q, MARBLE__ITEM_AGG, arg, fn, alias, err);
}

int marble_query_select_agg(marble_query *q, marble_agg_fn fn, const marble_expr *arg,
                            const char *alias, marble_error *err)
{
    if (!q) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL query");
    if (fn < MARBLE_AGG_COUNT_STAR || fn > MARBLE_AGG_AVG)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: unknown aggregate %d",
                                (int)fn);
    if (fn != MARBLE_AGG_COUNT_STAR && !arg)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "query: aggregate %s needs an argument", marble_agg_fn_name(fn));
    MARBLE_RETURN_NOT_OK(check_alias(alias, err));
    marble_expr *c = NULL;
    if (fn != MARBLE_AGG_COUNT_STAR && !(c = marble_expr_clone(arg)))
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    return push_item(q, MARBLE__ITEM_AGG, c, fn, alias, err);
}

int marble__query_set_where(marble_query *q, marble_expr *pred, marble_error *err)
{
    if (q->where) {
        pred = marble_expr_binary(MARBLE_OP_AND, q->where, pred);
        q->where = NULL;
    }
    if (!pred) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    q->where = pred;
    return MARBLE_OK;
}

int marble_query_where(marble_query *q, const marble_expr *pred, marble_error *err)
{
    if (!q || !pred)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL %s",
                                q ? "predicate" : "query");
    marble_expr *c = marble_expr_clone(pred);
    if (!c) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    return marble__query_set_where(q, c, err);
}

int marble__query_push_group(marble_query *q, marble_expr *e, marble_error *err)
{
    if (grow((void **)&q->groups, &q->cap_groups, q->n_groups + 1, sizeof *q->groups)) {
        marble_expr_free(e);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    }
    q->groups[q->n_groups++] = e;
    return MARBLE_OK;
}

int marble_query_group_by(marble_query *q, const marble_expr *e, marble_error *err)
{
    if (!q || !e)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL %s",
                                q ? "expression" : "query");
    if (marble_expr_get_kind(e) == MARBLE_EXPR_LITERAL)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "query: GROUP BY a constant is not allowed");
    marble_expr *c = marble_expr_clone(e);
    if (!c) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    return marble__query_push_group(q, c, err);
}

int marble_query_order_by(marble_query *q, const char *name, int position, int descending,
                          marble_error *err)
{
    if (!q) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL query");
    if (!name && position < 1)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "query: ORDER BY position %d (positions start at 1)", position);
    if (name && !*name)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: ORDER BY empty name");
    char *n = NULL;
    if (name && !(n = dup_str(name)))
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    if (grow((void **)&q->orders, &q->cap_orders, q->n_orders + 1, sizeof *q->orders)) {
        free(n);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory");
    }
    q->orders[q->n_orders++] = (marble__order){n, n ? 0 : position, descending != 0};
    return MARBLE_OK;
}

int marble_query_limit(marble_query *q, int64_t limit, int64_t offset, marble_error *err)
{
    if (!q) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL query");
    if (offset < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "query: OFFSET %" PRId64 " is negative", offset);
    q->limit = limit < 0 ? -1 : limit;
    q->offset = offset;
    return MARBLE_OK;
}

char *marble__expr_text(const marble_expr *e)
{
    char small[256];
    size_t n = marble_expr_to_string(e, small, sizeof small);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n < sizeof small)
        memcpy(s, small, n + 1);
    else
        marble_expr_to_string(e, s, n + 1);
    return s;
}

/* The expression's text without the parentheses around a whole operator expression. */
static char *bare_text(const marble_expr *e)
{
    char *t = marble__expr_text(e);
    marble_expr_kind k = marble_expr_get_kind(e);
    size_t n = t ? strlen(t) : 0;
    if (n >= 2 && t[0] == '(' && t[n - 1] == ')' &&
        (k == MARBLE_EXPR_UNARY || k == MARBLE_EXPR_BINARY || k == MARBLE_EXPR_IN)) {
        memmove(t, t + 1, n - 2);
        t[n - 2] = 0;
    }
    return t;
}

char *marble__item_name(const marble__item *it)
{
    if (it->alias) return dup_str(it->alias);
    if (it->kind == MARBLE__ITEM_EXPR) {
        if (marble_expr_get_kind(it->e) == MARBLE_EXPR_COLUMN)
            return dup_str(marble_expr_get_column(it->e));
        return bare_text(it->e);
    }
    if (it->fn == MARBLE_AGG_COUNT_STAR) return dup_str("count(*)");
    char *arg = bare_text(it->e);
    if (!arg) return NULL;
    size_t n = strlen(arg) + 8;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s(%s)", marble_agg_fn_name(it->fn), arg);
    free(arg);
    return s;
}

/* ---- to_sql ------------------------------------------------------------------------------- */

void marble__sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 128;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void marble__sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

void marble__sb_fmt(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static int plain_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) return 0;
    return !marble__query_is_keyword(s, strlen(s));
}

void marble__sb_ident(sbuf *b, const char *s)
{
    if (plain_ident(s)) {
        sb_str(b, s);
        return;
    }
    sb_put(b, "\"", 1);
    for (const char *c = s; *c; c++) {
        if (*c == '"')
            sb_put(b, "\"\"", 2);
        else
            sb_put(b, c, 1);
    }
    sb_put(b, "\"", 1);
}

static void sb_double(sbuf *b, double d)
{
    if (isnan(d)) {
        sb_str(b, "(0.0 / 0.0)");
        return;
    }
    if (isinf(d)) {
        sb_str(b, d < 0 ? "-1e999" : "1e999");
        return;
    }
    char tmp[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
    }
    if (!strpbrk(tmp, ".e")) strcat(tmp, ".0");
    sb_str(b, tmp);
}

void marble__sb_literal(sbuf *b, const marble_datum *v)
{
    switch (v->kind) {
    case MARBLE_DATUM_NULL:
        sb_str(b, "NULL");
        break;
    case MARBLE_DATUM_INT:
        sb_fmt(b, "%" PRId64, v->i);
        break;
    case MARBLE_DATUM_DOUBLE:
        sb_double(b, v->d);
        break;
    case MARBLE_DATUM_BOOL:
        sb_str(b, v->i ? "TRUE" : "FALSE");
        break;
    case MARBLE_DATUM_STRING:
        sb_put(b, "'", 1);
        for (size_t i = 0; i < v->n; i++) {
            if (v->s[i] == '\'') sb_put(b, "'", 1);
            sb_put(b, v->s + i, 1);
        }
        sb_put(b, "'", 1);
        break;
    }
}

enum { PREC_OR = 1, PREC_AND, PREC_NOT, PREC_CMP, PREC_ADD, PREC_MUL, PREC_UNARY, PREC_ATOM };

static int is_negative_number(const marble_datum *v)
{
    return (v->kind == MARBLE_DATUM_INT && v->i < 0) ||
           (v->kind == MARBLE_DATUM_DOUBLE && (signbit(v->d) || isnan(v->d)));
}

static int expr_prec(const marble_expr *e)
{
    switch (marble_expr_get_kind(e)) {
    case MARBLE_EXPR_COLUMN:
        return PREC_ATOM;
    case MARBLE_EXPR_LITERAL: {
        const marble_datum *v = marble_expr_get_literal(e);
        if (v->kind == MARBLE_DATUM_DOUBLE && isnan(v->d)) return PREC_ATOM;
        return is_negative_number(v) ? PREC_UNARY : PREC_ATOM;
    }
    case MARBLE_EXPR_IN:
        return PREC_CMP;
    case MARBLE_EXPR_UNARY:
        switch (marble_expr_get_op(e)) {
        case MARBLE_OP_NOT:
            return PREC_NOT;
        case MARBLE_OP_NEG:
            return PREC_UNARY;
        default:
            return PREC_CMP;
        }
    case MARBLE_EXPR_BINARY:
        switch (marble_expr_get_op(e)) {
        case MARBLE_OP_OR:
            return PREC_OR;
        case MARBLE_OP_AND:
            return PREC_AND;
        case MARBLE_OP_ADD:
        case MARBLE_OP_SUB:
            return PREC_ADD;
        case MARBLE_OP_MUL:
        case MARBLE_OP_DIV:
        case MARBLE_OP_MOD:
            return PREC_MUL;
        default:
            return PREC_CMP;
        }
    }
    return PREC_ATOM;
}

static const char *binop_text(marble_expr_op op)
{
    switch (op) {
    case MARBLE_OP_EQ:
        return " = ";
    case MARBLE_OP_NE:
        return " != ";
    case MARBLE_OP_LT:
        return " < ";
    case MARBLE_OP_LE:
        return " <= ";
    case MARBLE_OP_GT:
        return " > ";
    case MARBLE_OP_GE:
        return " >= ";
    case MARBLE_OP_ADD:
        return " + ";
    case MARBLE_OP_SUB:
        return " - ";
    case MARBLE_OP_MUL:
        return " * ";
    case MARBLE_OP_DIV:
        return " / ";
    case MARBLE_OP_MOD:
        return " % ";
    case MARBLE_OP_AND:
        return " AND ";
    case MARBLE_OP_OR:
        return " OR ";
    default:
        return " ? ";
    }
}

static void sb_expr(sbuf *b, const marble_expr *e, int min_prec)
{
    int p = expr_prec(e);
    int paren = p < min_prec;
    if (paren) sb_put(b, "(", 1);
    switch (marble_expr_get_kind(e)) {
    case MARBLE_EXPR_COLUMN:
        sb_ident(b, marble_expr_get_column(e));
        break;
    case MARBLE_EXPR_LITERAL:
        sb_literal(b, marble_expr_get_literal(e));
        break;
    case MARBLE_EXPR_IN: {
        sb_expr(b, marble_expr_child(e, 0), PREC_ADD);
        sb_str(b, marble_expr_in_negated(e) ? " NOT IN (" : " IN (");
        for (size_t i = 1; i < marble_expr_num_children(e); i++) {
            if (i > 1) sb_str(b, ", ");
            sb_literal(b, marble_expr_get_literal(marble_expr_child(e, i)));
        }
        sb_put(b, ")", 1);
        break;
    }
    case MARBLE_EXPR_UNARY: {
        const marble_expr *a = marble_expr_child(e, 0);
        switch (marble_expr_get_op(e)) {
        case MARBLE_OP_NOT:
            sb_str(b, "NOT ");
            sb_expr(b, a, PREC_NOT);
            break;
        case MARBLE_OP_NEG: {
            int wrap = marble_expr_get_kind(a) == MARBLE_EXPR_LITERAL ||
                       (marble_expr_get_kind(a) == MARBLE_EXPR_UNARY &&
                        marble_expr_get_op(a) == MARBLE_OP_NEG);
            sb_put(b, "-", 1);
            sb_expr(b, a, wrap ? PREC_ATOM + 1 : PREC_UNARY);
            break;
        }
        case MARBLE_OP_IS_NULL:
        case MARBLE_OP_IS_NOT_NULL:
            sb_expr(b, a, PREC_ADD);
            sb_str(b, marble_expr_get_op(e) == MARBLE_OP_IS_NULL ? " IS NULL" : " IS NOT NULL");
            break;
        default:
            sb_str(b, "?");
            break;
        }
        break;
    }
    case MARBLE_EXPR_BINARY:
        sb_expr(b, marble_expr_child(e, 0), p == PREC_CMP ? p + 1 : p);
        sb_str(b, binop_text(marble_expr_get_op(e)));
        sb_expr(b, marble_expr_child(e, 1), p + 1);
        break;
    }
    if (paren) sb_put(b, ")", 1);
}

static const char *agg_upper(marble_agg_fn fn)
{
    switch (fn) {
    case MARBLE_AGG_COUNT_STAR:
    case MARBLE_AGG_COUNT:
        return "COUNT";
    case MARBLE_AGG_SUM:
        return "SUM";
    case MARBLE_AGG_MIN:
        return "MIN";
    case MARBLE_AGG_MAX:
        return "MAX";
    case MARBLE_AGG_AVG:
        return "AVG";
    }
    return "?";
}

char *marble_query_to_sql(const marble_query *q)
{
    if (!q) return NULL;
    sbuf b = {0};
    sb_str(&b, "SELECT ");
    for (size_t i = 0; i < q->n_items; i++) {
        const marble__item *it = &q->items[i];
        if (i) sb_str(&b, ", ");
        if (it->kind == MARBLE__ITEM_STAR) {
            sb_put(&b, "*", 1);
            continue;
        }
        if (it->kind == MARBLE__ITEM_EXPR) {
            sb_expr(&b, it->e, PREC_OR);
        } else {
            sb_str(&b, agg_upper(it->fn));
            sb_put(&b, "(", 1);
            if (it->fn == MARBLE_AGG_COUNT_STAR)
                sb_put(&b, "*", 1);
            else
                sb_expr(&b, it->e, PREC_OR);
            sb_put(&b, ")", 1);
        }
        if (it->alias) {
            sb_str(&b, " AS ");
            sb_ident(&b, it->alias);
        }
    }
    sb_str(&b, " FROM ");
    sb_ident(&b, q->table);
    if (q->where) {
        sb_str(&b, " WHERE ");
        sb_expr(&b, q->where, PREC_OR);
    }
    for (size_t i = 0; i < q->n_groups; i++) {
        sb_str(&b, i ? ", " : " GROUP BY ");
        sb_expr(&b, q->groups[i], PREC_OR);
    }
    for (size_t i = 0; i < q->n_orders; i++) {
        const marble__order *o = &q->orders[i];
        sb_str(&b, i ? ", " : " ORDER BY ");
        if (o->name)
            sb_ident(&b, o->name);
        else
            sb_fmt(&b, "%d", o->position);
        if (o->descending) sb_str(&b, " DESC");
    }
    if (q->limit >= 0) sb_fmt(&b, " LIMIT %" PRId64, q->limit);
    if (q->offset > 0) sb_fmt(&b, " OFFSET %" PRId64, q->offset);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
