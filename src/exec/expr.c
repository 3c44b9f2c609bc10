/* Expression trees: construction (taking ownership of operands), inspection for planners, deep
 * copies and the SQL-like text form. Binding and evaluation live in expr_eval.c. */
#include "exec/exec_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct marble_expr {
    marble_expr_kind kind;
    marble_expr_op op;
    int negated;
    char *name;
    marble_datum lit;
    size_t n_children;
    marble_expr **children;
};

static marble_expr *node_new(marble_expr_kind kind)
{
    marble_expr *e = calloc(1, sizeof *e);
    if (e) e->kind = kind;
    return e;
}

void marble_expr_free(marble_expr *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->n_children; i++)
        marble_expr_free(e->children[i]);
    free(e->children);
    free(e->name);
    free((char *)e->lit.s);
    free(e);
}

marble_expr *marble_expr_column(const char *name)
{
    if (!name) return NULL;
    marble_expr *e = node_new(MARBLE_EXPR_COLUMN);
    if (!e) return NULL;
    e->name = strdup(name);
    if (!e->name) {
        free(e);
        return NULL;
    }
    return e;
}

static marble_expr *literal(marble_datum d)
{
    marble_expr *e = node_new(MARBLE_EXPR_LITERAL);
    if (e) e->lit = d;
    return e;
}

marble_expr *marble_expr_int(int64_t v)
{
    return literal((marble_datum){.kind = MARBLE_DATUM_INT, .i = v});
}

marble_expr *marble_expr_double(double v)
{
    return literal((marble_datum){.kind = MARBLE_DATUM_DOUBLE, .d = v});
}

marble_expr *marble_expr_bool(int v)
{
    return literal((marble_datum){.kind = MARBLE_DATUM_BOOL, .i = v != 0});
}

marble_expr *marble_expr_null(void)
{
    return literal((marble_datum){.kind = MARBLE_DATUM_NULL});
}

marble_expr *marble_expr_string(const char *s, size_t n)
{
    if (!s && n) return NULL;
    char *copy = malloc(n + 1);
    if (!copy) return NULL;
    if (n) memcpy(copy, s, n);
    copy[n] = 0;
    marble_expr *e = literal((marble_datum){.kind = MARBLE_DATUM_STRING, .s = copy, .n = n});
    if (!e) free(copy);
    return e;
}

static int is_unary(marble_expr_op op)
{
    return op == MARBLE_OP_NOT || op == MARBLE_OP_NEG || op == MARBLE_OP_IS_NULL ||
           op == MARBLE_OP_IS_NOT_NULL;
}

static int is_binary(marble_expr_op op)
{
    return op >= MARBLE_OP_EQ && op <= MARBLE_OP_OR;
}

static marble_expr *composite(marble_expr_kind kind, marble_expr_op op, marble_expr **kids,
                              size_t n, int ok)
{
    marble_expr *e = NULL;
    for (size_t i = 0; i < n; i++)
        if (!kids[i]) ok = 0;
    if (ok) e = node_new(kind);
    if (e) {
        e->children = malloc(n * sizeof *e->children);
        if (!e->children) {
            free(e);
            e = NULL;
        }
    }
    if (!e) {
        for (size_t i = 0; i < n; i++)
            marble_expr_free(kids[i]);
        return NULL;
    }
    e->op = op;
    memcpy(e->children, kids, n * sizeof *kids);
    e->n_children = n;
    return e;
}

marble_expr *marble_expr_unary(marble_expr_op op, marble_expr *a)
{
    return composite(MARBLE_EXPR_UNARY, op, &a, 1, is_unary(op));
}

marble_expr *marble_expr_binary(marble_expr_op op, marble_expr *a, marble_expr *b)
{
    marble_expr *kids[2] = {a, b};
    return composite(MARBLE_EXPR_BINARY, op, kids, 2, is_binary(op));
}

marble_expr *marble_expr_in(marble_expr *a, marble_expr **list, size_t n, int negated)
{
    int ok = list || n == 0;
    marble_expr **kids = malloc((n + 1) * sizeof *kids);
    if (!kids) ok = 0;
    if (!ok) {
        marble_expr_free(a);
        for (size_t i = 0; list && i < n; i++)
            marble_expr_free(list[i]);
        free(kids);
        return NULL;
    }
    kids[0] = a;
    for (size_t i = 0; i < n; i++) {
        kids[i + 1] = list[i];
        if (list[i] && list[i]->kind != MARBLE_EXPR_LITERAL) ok = 0;
    }
    marble_expr *e = composite(MARBLE_EXPR_IN, MARBLE_OP_EQ, kids, n + 1, ok);
    free(kids);
    if (e) e->negated = negated != 0;
    return e;
}

marble_expr *marble_expr_clone(const marble_expr *e)
{
    if (!e) return NULL;
    marble_expr *c = node_new(e->kind);
    if (!c) return NULL;
    c->op = e->op;
    c->negated = e->negated;
    c->lit = e->lit;
    c->lit.s = NULL;
    if (e->name && !(c->name = strdup(e->name))) goto fail;
    if (e->lit.kind == MARBLE_DATUM_STRING) {
        char *s = malloc(e->lit.n + 1);
        if (!s) goto fail;
        memcpy(s, e->lit.s, e->lit.n + 1);
        c->lit.s = s;
    }
    if (e->n_children) {
        c->children = calloc(e->n_children, sizeof *c->children);
        if (!c->children) goto fail;
        c->n_children = e->n_children;
        for (size_t i = 0; i < e->n_children; i++)
            if (!(c->children[i] = marble_expr_clone(e->children[i]))) goto fail;
    }
    return c;
fail:
    marble_expr_free(c);
    return NULL;
}

marble_expr_kind marble_expr_get_kind(const marble_expr *e)
{
    return e->kind;
}

marble_expr_op marble_expr_get_op(const marble_expr *e)
{
    return e->op;
}

const char *marble_expr_get_column(const marble_expr *e)
{
    return e->kind == MARBLE_EXPR_COLUMN ? e->name : NULL;
}

const marble_datum *marble_expr_get_literal(const marble_expr *e)
{
    return e->kind == MARBLE_EXPR_LITERAL ? &e->lit : NULL;
}

size_t marble_expr_num_children(const marble_expr *e)
{
    return e->n_children;
}

const marble_expr *marble_expr_child(const marble_expr *e, size_t i)
{
    return i < e->n_children ? e->children[i] : NULL;
}

int marble_expr_in_negated(const marble_expr *e)
{
    return e->kind == MARBLE_EXPR_IN && e->negated;
}

/* ---- text ------------------------------------------------------------------------------------ */

typedef struct wbuf {
    char *buf;
    size_t cap, len;
} wbuf;

static void put(wbuf *w, const char *s, size_t n)
{
    if (w->len < w->cap) {
        size_t room = w->cap - w->len;
        memcpy(w->buf + w->len, s, n < room ? n : room);
    }
    w->len += n;
}

static void puts_(wbuf *w, const char *s)
{
    put(w, s, strlen(s));
}

/* Words the query syntax reserves: a column named like one is written quoted. */
static const char *const keywords[] = {
    "AND",   "OR",     "NOT",  "IN",     "IS",    "NULL",  "TRUE",    "FALSE",  "SELECT",
    "FROM",  "WHERE",  "GROUP", "BY",    "ORDER", "ASC",   "DESC",    "LIMIT",  "OFFSET",
    "AS",    "JOIN",   "ON",   "HAVING", "DISTINCT", "UNION", "CASE", "CAST",   "LIKE",
    "BETWEEN", "COUNT", "SUM", "MIN",    "MAX",   "AVG"};

/* 1 if `s` reads back as itself unquoted: the syntax folds unquoted names to lower case. */
static int plain_identifier(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
    for (const char *p = s + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return 0;
    for (size_t i = 0; i < sizeof keywords / sizeof *keywords; i++)
        if (strcasecmp(s, keywords[i]) == 0) return 0;
    return 1;
}

static void put_quoted(wbuf *w, const char *s, size_t n, char q)
{
    put(w, &q, 1);
    for (size_t i = 0; i < n; i++) {
        put(w, s + i, 1);
        if (s[i] == q) put(w, &q, 1);
    }
    put(w, &q, 1);
}

/* The shortest %g form that reads back as the same double, always with a '.' or exponent. */
static void put_double(wbuf *w, double d)
{
    char t[40];
    if (isnan(d)) { /* the syntax has no NaN or infinity literals: IEEE division makes them */
        puts_(w, "(0.0 / 0.0)");
        return;
    }
    if (isinf(d)) {
        puts_(w, d < 0 ? "(-1.0 / 0.0)" : "(1.0 / 0.0)");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, d);
        if (strtod(t, NULL) == d) break;
    }
    puts_(w, t);
    if (!strpbrk(t, ".e")) puts_(w, ".0");
}

static const char *op_text(marble_expr_op op)
{
    switch (op) {
    case MARBLE_OP_EQ:
        return "=";
    case MARBLE_OP_NE:
        return "!=";
    case MARBLE_OP_LT:
        return "<";
    case MARBLE_OP_LE:
        return "<=";
    case MARBLE_OP_GT:
        return ">";
    case MARBLE_OP_GE:
        return ">=";
    case MARBLE_OP_ADD:
        return "+";
    case MARBLE_OP_SUB:
        return "-";
    case MARBLE_OP_MUL:
        return "*";
    case MARBLE_OP_DIV:
        return "/";
    case MARBLE_OP_MOD:
        return "%";
    case MARBLE_OP_AND:
        return "AND";
    case MARBLE_OP_OR:
        return "OR";
    case MARBLE_OP_NOT:
        return "NOT";
    case MARBLE_OP_NEG:
        return "-";
    case MARBLE_OP_IS_NULL:
        return "IS NULL";
    case MARBLE_OP_IS_NOT_NULL:
        return "IS NOT NULL";
    }
    return "?";
}

const char *marble__expr_op_text(marble_expr_op op)
{
    return op_text(op);
}

static void put_datum(wbuf *w, const marble_datum *d)
{
    char t[32];
    switch (d->kind) {
    case MARBLE_DATUM_NULL:
        puts_(w, "NULL");
        break;
    case MARBLE_DATUM_INT:
        snprintf(t, sizeof t, "%lld", (long long)d->i);
        puts_(w, t);
        break;
    case MARBLE_DATUM_DOUBLE:
        put_double(w, d->d);
        break;
    case MARBLE_DATUM_BOOL:
        puts_(w, d->i ? "TRUE" : "FALSE");
        break;
    case MARBLE_DATUM_STRING:
        put_quoted(w, d->s, d->n, '\'');
        break;
    }
}

static void put_expr(wbuf *w, const marble_expr *e)
{
    switch (e->kind) {
    case MARBLE_EXPR_COLUMN:
        if (plain_identifier(e->name))
            puts_(w, e->name);
        else
            put_quoted(w, e->name, strlen(e->name), '"');
        break;
    case MARBLE_EXPR_LITERAL:
        put_datum(w, &e->lit);
        break;
    case MARBLE_EXPR_UNARY:
        puts_(w, "(");
        if (e->op == MARBLE_OP_NOT) {
            puts_(w, "NOT ");
            put_expr(w, e->children[0]);
        } else if (e->op == MARBLE_OP_NEG) {
            const marble_datum *d = &e->children[0]->lit;
            int minus = e->children[0]->kind == MARBLE_EXPR_LITERAL &&
                        ((d->kind == MARBLE_DATUM_INT && d->i < 0) ||
                         (d->kind == MARBLE_DATUM_DOUBLE && !isnan(d->d) && signbit(d->d)));
            puts_(w, minus ? "- " : "-"); /* "--5" would read as a comment */
            put_expr(w, e->children[0]);
        } else {
            put_expr(w, e->children[0]);
            puts_(w, " ");
            puts_(w, op_text(e->op));
        }
        puts_(w, ")");
        break;
    case MARBLE_EXPR_BINARY:
        puts_(w, "(");
        put_expr(w, e->children[0]);
        puts_(w, " ");
        puts_(w, op_text(e->op));
        puts_(w, " ");
        put_expr(w, e->children[1]);
        puts_(w, ")");
        break;
    case MARBLE_EXPR_IN:
        puts_(w, "(");
        put_expr(w, e->children[0]);
        puts_(w, e->negated ? " NOT IN (" : " IN (");
        for (size_t i = 1; i < e->n_children; i++) {
            if (i > 1) puts_(w, ", ");
            put_expr(w, e->children[i]);
        }
        puts_(w, "))");
        break;
    }
}

size_t marble_expr_to_string(const marble_expr *e, char *buf, size_t cap)
{
    wbuf w = {buf, cap ? cap - 1 : 0, 0};
    if (e)
        put_expr(&w, e);
    else
        puts_(&w, "(null)");
    if (cap) buf[w.len < w.cap ? w.len : w.cap] = 0;
    return w.len;
}
