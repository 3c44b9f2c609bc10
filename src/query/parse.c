/*
 * The SELECT parser (marble/query.h): a tokenizer that keeps 1-based byte positions and a
 * hand-written recursive-descent parser that builds a marble_query. Syntax errors name the
 * position, what was expected and what was found; constructs outside the subset (joins,
 * subqueries, HAVING, DISTINCT, set operations, window functions, functions other than the five
 * aggregates, aggregates inside expressions) are MARBLE_ERR_UNSUPPORTED naming the construct.
 */
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query_internal.h"

static const char *const keywords[] = {
    "select",    "from",   "where",   "group",  "by",    "order",  "asc",      "desc",
    "limit",     "offset", "as",      "and",    "or",    "not",    "is",       "null",
    "in",        "true",   "false",   "join",   "inner", "left",   "right",    "full",
    "outer",     "cross",  "natural", "on",     "using", "having", "distinct", "union",
    "intersect", "except", "over",    "with",   "case",  "cast",   "like",     "ilike",
    "between",   "exists", "all",     "window", "any",   "some"};

int marble__query_is_keyword(const char *s, size_t n)
{
    for (size_t k = 0; k < sizeof keywords / sizeof *keywords; k++) {
        const char *w = keywords[k];
        size_t i = 0;
        while (i < n && w[i] && tolower((unsigned char)s[i]) == w[i])
            i++;
        if (i == n && !w[i]) return 1;
    }
    return 0;
}

/* ---- tokens ---------------------------------------------------------------------------------- */

typedef enum tkind {
    T_END = 0,
    T_IDENT,  /* unquoted word (keywords included) */
    T_QIDENT, /* "quoted" */
    T_INT,    /* digits only */
    T_NUM,    /* with a point or an exponent */
    T_STRING, /* 'quoted' */
    T_SYM,    /* operator or punctuation: text in the source */
    T_ERROR   /* a lexical error at pos: message in lex_msg */
} tkind;

typedef struct token {
    tkind k;
    size_t pos, len;
} token;

typedef struct parser {
    const char *sql;
    token *toks;
    size_t n, i;
    char lex_msg[96];
    marble_error *err;
    marble_query *q;
    const char *ctx; /* where an expression is being parsed, for aggregate errors */
    int nest;        /* parse_expr calls in progress */
    int ops;         /* operators and parentheses in the outermost expression so far */
} parser;

/* An expression's tree is at most as deep as its operators and parentheses are many; the
 * executor refuses trees deeper than 1000 (and the parser's recursion must stay bounded on any
 * input), so more than this many in one expression is an error. */
#define MAX_EXPR_OPS 1000

static int is_ident_start(int c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}
static int is_ident_char(int c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

static int lex(parser *p)
{
    const char *s = p->sql;
    size_t i = 0, cap = 0;
    for (;;) {
        if (p->n + 1 >= cap) {
            size_t nc = cap ? cap * 2 : 32;
            token *nt = realloc(p->toks, nc * sizeof *nt);
            if (!nt) return -1;
            p->toks = nt;
            cap = nc;
        }
        while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' ||
               s[i] == '\v' || (s[i] == '-' && s[i + 1] == '-')) {
            if (s[i] == '-')
                while (s[i] && s[i] != '\n')
                    i++;
            else
                i++;
        }
        token *t = &p->toks[p->n++];
        t->pos = i;
        unsigned char c = (unsigned char)s[i];
        if (!c) {
            t->k = T_END;
            t->len = 0;
            return 0;
        }
        size_t st = i;
        if (is_ident_start(c)) {
            while (is_ident_char((unsigned char)s[i]))
                i++;
            t->k = T_IDENT;
        } else if (isdigit(c) || (c == '.' && isdigit((unsigned char)s[i + 1]))) {
            t->k = T_INT;
            while (isdigit((unsigned char)s[i]))
                i++;
            if (s[i] == '.') {
                t->k = T_NUM;
                i++;
                while (isdigit((unsigned char)s[i]))
                    i++;
            }
            if (s[i] == 'e' || s[i] == 'E') {
                size_t j = i + 1;
                if (s[j] == '+' || s[j] == '-') j++;
                if (isdigit((unsigned char)s[j])) {
                    t->k = T_NUM;
                    i = j;
                    while (isdigit((unsigned char)s[i]))
                        i++;
                }
            }
            if (is_ident_char((unsigned char)s[i])) {
                t->k = T_ERROR;
                snprintf(p->lex_msg, sizeof p->lex_msg, "malformed number");
                return 0;
            }
        } else if (c == '\'' || c == '"') {
            i++;
            for (;;) {
                if (!s[i]) {
                    t->k = T_ERROR;
                    snprintf(p->lex_msg, sizeof p->lex_msg, "unterminated %s",
                             c == '\'' ? "string" : "quoted identifier");
                    return 0;
                }
                if ((unsigned char)s[i] == c) {
                    if ((unsigned char)s[i + 1] != c) break;
                    i++;
                }
                i++;
            }
            i++;
            t->k = c == '\'' ? T_STRING : T_QIDENT;
            if (t->k == T_QIDENT && i - st == 2) {
                t->k = T_ERROR;
                snprintf(p->lex_msg, sizeof p->lex_msg, "empty quoted identifier");
                return 0;
            }
        } else {
            static const char *const two[] = {"<=", ">=", "<>", "!=", "=="};
            t->k = T_SYM;
            i++;
            for (size_t k = 0; k < 5; k++)
                if (s[st] == two[k][0] && s[st + 1] == two[k][1]) i = st + 2;
            if (i == st + 1 && !strchr("(),*+-/%=<>;.", c)) {
                t->k = T_ERROR;
                if (c >= 0x20 && c < 0x7f)
                    snprintf(p->lex_msg, sizeof p->lex_msg, "unexpected character '%c'", c);
                else
                    snprintf(p->lex_msg, sizeof p->lex_msg, "unexpected byte 0x%02x", c);
                return 0;
            }
        }
        t->len = i - st;
    }
}

static token *peek(parser *p)
{
    return &p->toks[p->i];
}
static token *peek2(parser *p)
{
    tkind k = p->toks[p->i].k;
    return &p->toks[p->i + (k == T_END || k == T_ERROR ? 0 : 1)];
}

static int tok_is_kw(const parser *p, const token *t, const char *kw)
{
    if (t->k != T_IDENT || strlen(kw) != t->len) return 0;
    for (size_t i = 0; i < t->len; i++)
        if (tolower((unsigned char)p->sql[t->pos + i]) != kw[i]) return 0;
    return 1;
}

static int tok_is_sym(const parser *p, const token *t, const char *sym)
{
    return t->k == T_SYM && strlen(sym) == t->len && !memcmp(p->sql + t->pos, sym, t->len);
}

static int at_kw(parser *p, const char *kw)
{
    return tok_is_kw(p, peek(p), kw);
}
static int at_sym(parser *p, const char *sym)
{
    return tok_is_sym(p, peek(p), sym);
}

static int accept_kw(parser *p, const char *kw)
{
    if (!at_kw(p, kw)) return 0;
    p->i++;
    return 1;
}

static int accept_sym(parser *p, const char *sym)
{
    if (!at_sym(p, sym)) return 0;
    p->i++;
    return 1;
}

static int lex_error(parser *p, const token *t)
{
    return marble_error_set(p->err, MARBLE_ERR_INVALID_ARGUMENT, "at %zu: %s", t->pos + 1,
                            p->lex_msg);
}

/* "at N: expected X, found 'Y'" for the current token. */
static int expected(parser *p, const char *what)
{
    token *t = peek(p);
    if (t->k == T_ERROR) return lex_error(p, t);
    if (t->k == T_END)
        return marble_error_set(p->err, MARBLE_ERR_INVALID_ARGUMENT,
                                "at %zu: expected %s, found end of %s", t->pos + 1, what,
                                p->q ? "query" : "expression");
    int len = t->len > 40 ? 40 : (int)t->len;
    return marble_error_set(p->err, MARBLE_ERR_INVALID_ARGUMENT,
                            "at %zu: expected %s, found '%.*s%s'", t->pos + 1, what, len,
                            p->sql + t->pos, t->len > 40 ? "..." : "");
}

static int unsupported(parser *p, const token *t, const char *fmt, ...) MARBLE_PRINTF(3, 4);
static int unsupported(parser *p, const token *t, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return marble_error_set(p->err, MARBLE_ERR_UNSUPPORTED, "at %zu: %s", t->pos + 1, msg);
}

static int oom(parser *p)
{
    return marble_error_set(p->err, MARBLE_ERR_NO_MEMORY, "query: out of memory while parsing");
}

static int expect_kw(parser *p, const char *kw, const char *shown)
{
    if (accept_kw(p, kw)) return MARBLE_OK;
    return expected(p, shown);
}

static int expect_sym(parser *p, const char *sym)
{
    if (accept_sym(p, sym)) return MARBLE_OK;
    char what[8];
    snprintf(what, sizeof what, "'%s'", sym);
    return expected(p, what);
}

/* The identifier's value (unquoted: lowercased; quoted: "" unescaped), malloc'd. */
static char *ident_text(const parser *p, const token *t)
{
    const char *s = p->sql + t->pos;
    char *out = malloc(t->len + 1);
    if (!out) return NULL;
    size_t n = 0;
    if (t->k == T_IDENT) {
        for (size_t i = 0; i < t->len; i++)
            out[n++] = (char)tolower((unsigned char)s[i]);
    } else {
        for (size_t i = 1; i + 1 < t->len; i++) {
            out[n++] = s[i];
            if (s[i] == '"') i++;
        }
    }
    out[n] = 0;
    return out;
}

static int is_name_token(const parser *p, const token *t)
{
    return t->k == T_QIDENT ||
           (t->k == T_IDENT && !marble__query_is_keyword(p->sql + t->pos, t->len));
}

static int agg_fn_of(const parser *p, const token *t, marble_agg_fn *fn)
{
    static const struct {
        const char *name;
        marble_agg_fn fn;
    } aggs[] = {{"count", MARBLE_AGG_COUNT},
                {"sum", MARBLE_AGG_SUM},
                {"min", MARBLE_AGG_MIN},
                {"max", MARBLE_AGG_MAX},
                {"avg", MARBLE_AGG_AVG}};
    for (size_t k = 0; k < 5; k++)
        if (tok_is_kw(p, t, aggs[k].name)) {
            *fn = aggs[k].fn;
            return 1;
        }
    return 0;
}

/* ---- expressions ----------------------------------------------------------------------------- */

static int parse_expr(parser *p, marble_expr **out);

/* Integer token text (digits) with an optional minus into an int64. */
static int int_value(parser *p, const token *t, int negative, int64_t *out)
{
    uint64_t v = 0, lim = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (size_t i = 0; i < t->len; i++) {
        unsigned d = (unsigned)(p->sql[t->pos + i] - '0');
        if (v > (lim - d) / 10) {
            int len = t->len > 40 ? 40 : (int)t->len;
            return marble_error_set(p->err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "at %zu: integer %s%.*s is out of range (64-bit)", t->pos + 1,
                                    negative ? "-" : "", len, p->sql + t->pos);
        }
        v = v * 10 + d;
    }
    *out = negative ? (int64_t)(0 - v) : (int64_t)v;
    return MARBLE_OK;
}

static marble_expr *number_literal(parser *p, const token *t, int negative, int *rc)
{
    if (t->k == T_INT) {
        int64_t v;
        if ((*rc = int_value(p, t, negative, &v))) return NULL;
        return marble_expr_int(v);
    }
    double d = strtod(p->sql + t->pos, NULL);
    return marble_expr_double(negative ? -d : d);
}

static marble_expr *string_literal(parser *p, const token *t)
{
    const char *s = p->sql + t->pos;
    char *buf = malloc(t->len);
    if (!buf) return NULL;
    size_t n = 0;
    for (size_t i = 1; i + 1 < t->len; i++) {
        buf[n++] = s[i];
        if (s[i] == '\'') i++;
    }
    marble_expr *e = marble_expr_string(buf, n);
    free(buf);
    return e;
}

/* A literal of an IN list: [+|-] number, string, TRUE, FALSE, NULL. */
static int parse_literal(parser *p, marble_expr **out)
{
    token *t = peek(p);
    int negative = 0, rc = MARBLE_OK;
    if (tok_is_sym(p, t, "-") || tok_is_sym(p, t, "+")) {
        negative = tok_is_sym(p, t, "-");
        if (peek2(p)->k != T_INT && peek2(p)->k != T_NUM) {
            p->i++;
            return expected(p, "a number");
        }
        p->i++;
        t = peek(p);
    }
    if (t->k == T_INT || t->k == T_NUM) {
        *out = number_literal(p, t, negative, &rc);
    } else if (t->k == T_STRING) {
        *out = string_literal(p, t);
    } else if (tok_is_kw(p, t, "true") || tok_is_kw(p, t, "false")) {
        *out = marble_expr_bool(tok_is_kw(p, t, "true"));
    } else if (tok_is_kw(p, t, "null")) {
        *out = marble_expr_null();
    } else if (tok_is_kw(p, t, "select") || t->k == T_IDENT || t->k == T_QIDENT ||
               tok_is_sym(p, t, "(")) {
        return unsupported(p, t,
                           tok_is_kw(p, t, "select")
                               ? "subqueries are not supported"
                               : "IN lists hold literals only (no columns or expressions)");
    } else {
        return expected(p, "a literal");
    }
    if (rc) return rc;
    if (!*out) return oom(p);
    p->i++;
    return MARBLE_OK;
}

/* Counts one operator or parenthesis of the current expression (see MAX_EXPR_OPS). */
static int count_op(parser *p)
{
    if (++p->ops <= MAX_EXPR_OPS) return MARBLE_OK;
    return marble_error_set(p->err, MARBLE_ERR_LIMIT,
                            "at %zu: expression has more than %d operators and parentheses",
                            peek(p)->pos + 1, MAX_EXPR_OPS);
}

static int parse_primary(parser *p, marble_expr **out)
{
    token *t = peek(p);
    int rc = MARBLE_OK;
    *out = NULL;
    switch (t->k) {
    case T_ERROR:
        return lex_error(p, t);
    case T_INT:
    case T_NUM:
        *out = number_literal(p, t, 0, &rc);
        if (rc) return rc;
        break;
    case T_STRING:
        *out = string_literal(p, t);
        break;
    case T_QIDENT:
    case T_IDENT: {
        token *nx = peek2(p);
        marble_agg_fn fn;
        if (tok_is_sym(p, nx, "(")) {
            char *name = ident_text(p, t);
            if (!name) return oom(p);
            if (t->k == T_IDENT && agg_fn_of(p, t, &fn))
                rc = unsupported(p, t, "aggregate %s() %s is not supported", name, p->ctx);
            else if (tok_is_kw(p, t, "exists"))
                rc = unsupported(p, t, "subqueries (EXISTS) are not supported");
            else if (tok_is_kw(p, t, "cast"))
                rc = unsupported(p, t, "CAST is not supported");
            else
                rc = unsupported(p, t, "function '%s' is not supported", name);
            free(name);
            return rc;
        }
        if (t->k == T_IDENT) {
            if (tok_is_kw(p, t, "true") || tok_is_kw(p, t, "false")) {
                *out = marble_expr_bool(tok_is_kw(p, t, "true"));
                break;
            }
            if (tok_is_kw(p, t, "null")) {
                *out = marble_expr_null();
                break;
            }
            if (tok_is_kw(p, t, "case")) return unsupported(p, t, "CASE is not supported");
            if (tok_is_kw(p, t, "select")) return unsupported(p, t, "subqueries are not supported");
            if (marble__query_is_keyword(p->sql + t->pos, t->len))
                return expected(p, "an expression");
        }
        if (tok_is_sym(p, nx, "."))
            return unsupported(p, nx, "qualified names (a.b) are not supported");
        char *name = ident_text(p, t);
        if (!name) return oom(p);
        *out = marble_expr_column(name);
        free(name);
        break;
    }
    case T_SYM:
        if (tok_is_sym(p, t, "(")) {
            if (tok_is_kw(p, peek2(p), "select"))
                return unsupported(p, peek2(p), "subqueries are not supported");
            MARBLE_RETURN_NOT_OK(count_op(p));
            p->i++;
            MARBLE_RETURN_NOT_OK(parse_expr(p, out));
            if (!accept_sym(p, ")")) {
                marble_expr_free(*out);
                *out = NULL;
                return expected(p, "')'");
            }
            return MARBLE_OK;
        }
        return expected(p, "an expression");
    default:
        return expected(p, "an expression");
    }
    if (!*out) return oom(p);
    p->i++;
    return MARBLE_OK;
}

static int parse_unary(parser *p, marble_expr **out)
{
    if (at_sym(p, "-") || at_sym(p, "+")) {
        int neg = at_sym(p, "-");
        token *nx = peek2(p);
        p->i++;
        if (nx->k == T_INT || nx->k == T_NUM) {
            int rc = MARBLE_OK;
            *out = number_literal(p, nx, neg, &rc);
            if (rc) return rc;
            if (!*out) return oom(p);
            p->i++;
            return MARBLE_OK;
        }
        marble_expr *a;
        MARBLE_RETURN_NOT_OK(count_op(p));
        MARBLE_RETURN_NOT_OK(parse_unary(p, &a));
        if (!neg) {
            *out = a;
            return MARBLE_OK;
        }
        *out = marble_expr_unary(MARBLE_OP_NEG, a);
        return *out ? MARBLE_OK : oom(p);
    }
    return parse_primary(p, out);
}

static int parse_binary_level(parser *p, int level, marble_expr **out);

static int parse_mul(parser *p, marble_expr **out)
{
    return parse_binary_level(p, 1, out);
}

/* level 1: * / %; level 2: + -. Left-associative. */
static int parse_binary_level(parser *p, int level, marble_expr **out)
{
    MARBLE_RETURN_NOT_OK(level == 1 ? parse_unary(p, out) : parse_mul(p, out));
    for (;;) {
        marble_expr_op op;
        if (level == 1 && at_sym(p, "*"))
            op = MARBLE_OP_MUL;
        else if (level == 1 && at_sym(p, "/"))
            op = MARBLE_OP_DIV;
        else if (level == 1 && at_sym(p, "%"))
            op = MARBLE_OP_MOD;
        else if (level == 2 && at_sym(p, "+"))
            op = MARBLE_OP_ADD;
        else if (level == 2 && at_sym(p, "-"))
            op = MARBLE_OP_SUB;
        else
            return MARBLE_OK;
        marble_expr *b;
        int rc = count_op(p);
        p->i++;
        if (!rc) rc = level == 1 ? parse_unary(p, &b) : parse_mul(p, &b);
        if (rc) {
            marble_expr_free(*out);
            *out = NULL;
            return rc;
        }
        *out = marble_expr_binary(op, *out, b);
        if (!*out) return oom(p);
    }
}

static int parse_in_list(parser *p, marble_expr *a, int negated, marble_expr **out)
{
    marble_expr **list = NULL;
    size_t n = 0, cap = 0;
    int rc = expect_sym(p, "(");
    if (!rc && tok_is_kw(p, peek(p), "select"))
        rc = unsupported(p, peek(p), "subqueries are not supported");
    while (!rc) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            marble_expr **nl = realloc(list, nc * sizeof *nl);
            if (!nl) {
                rc = oom(p);
                break;
            }
            list = nl;
            cap = nc;
        }
        if ((rc = parse_literal(p, &list[n]))) break;
        n++;
        if (accept_sym(p, ",")) continue;
        if (!accept_sym(p, ")")) rc = expected(p, "',' or ')'");
        break;
    }
    if (rc) {
        for (size_t i = 0; i < n; i++)
            marble_expr_free(list[i]);
        free(list);
        marble_expr_free(a);
        return rc;
    }
    *out = marble_expr_in(a, list, n, negated);
    free(list);
    return *out ? MARBLE_OK : oom(p);
}

static int parse_cmp(parser *p, marble_expr **out)
{
    MARBLE_RETURN_NOT_OK(parse_binary_level(p, 2, out));
    static const struct {
        const char *sym;
        marble_expr_op op;
    } ops[] = {{"=", MARBLE_OP_EQ},  {"==", MARBLE_OP_EQ}, {"!=", MARBLE_OP_NE},
               {"<>", MARBLE_OP_NE}, {"<", MARBLE_OP_LT},  {"<=", MARBLE_OP_LE},
               {">", MARBLE_OP_GT},  {">=", MARBLE_OP_GE}};
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        if (!accept_sym(p, ops[k].sym)) continue;
        if (at_kw(p, "any") || at_kw(p, "all") || at_kw(p, "some")) {
            marble_expr_free(*out);
            *out = NULL;
            return unsupported(p, peek(p), "subqueries (ANY/ALL) are not supported");
        }
        marble_expr *b;
        int rc = parse_binary_level(p, 2, &b);
        if (rc) {
            marble_expr_free(*out);
            *out = NULL;
            return rc;
        }
        *out = marble_expr_binary(ops[k].op, *out, b);
        return *out ? MARBLE_OK : oom(p);
    }
    token *t = peek(p);
    if (accept_kw(p, "is")) {
        int neg = accept_kw(p, "not");
        if (!accept_kw(p, "null")) {
            marble_expr_free(*out);
            *out = NULL;
            if (at_kw(p, "true") || at_kw(p, "false") || at_kw(p, "distinct"))
                return unsupported(p, peek(p), "IS %s is not supported (only IS [NOT] NULL)",
                                   at_kw(p, "distinct") ? "DISTINCT FROM" : "TRUE/FALSE");
            return expected(p, "NULL");
        }
        *out = marble_expr_unary(neg ? MARBLE_OP_IS_NOT_NULL : MARBLE_OP_IS_NULL, *out);
        return *out ? MARBLE_OK : oom(p);
    }
    int neg = 0;
    if (at_kw(p, "not") && (tok_is_kw(p, peek2(p), "in") || tok_is_kw(p, peek2(p), "like") ||
                            tok_is_kw(p, peek2(p), "ilike") || tok_is_kw(p, peek2(p), "between"))) {
        neg = 1;
        p->i++;
        t = peek(p);
    }
    if (accept_kw(p, "in")) return parse_in_list(p, *out, neg, out);
    if (at_kw(p, "like") || at_kw(p, "ilike") || at_kw(p, "between")) {
        marble_expr_free(*out);
        *out = NULL;
        return unsupported(p, t, "%s is not supported", at_kw(p, "between") ? "BETWEEN" : "LIKE");
    }
    return MARBLE_OK;
}

static int parse_not(parser *p, marble_expr **out)
{
    if (accept_kw(p, "not")) {
        marble_expr *a;
        MARBLE_RETURN_NOT_OK(count_op(p));
        MARBLE_RETURN_NOT_OK(parse_not(p, &a));
        *out = marble_expr_unary(MARBLE_OP_NOT, a);
        return *out ? MARBLE_OK : oom(p);
    }
    if (at_kw(p, "exists")) return unsupported(p, peek(p), "subqueries (EXISTS) are not supported");
    return parse_cmp(p, out);
}

/* level 0: AND over NOT-expressions; level 1: OR over AND-expressions. */
static int parse_logic(parser *p, int level, marble_expr **out)
{
    MARBLE_RETURN_NOT_OK(level == 0 ? parse_not(p, out) : parse_logic(p, 0, out));
    while (accept_kw(p, level == 0 ? "and" : "or")) {
        marble_expr *b;
        int rc = count_op(p);
        if (!rc) rc = level == 0 ? parse_not(p, &b) : parse_logic(p, 0, &b);
        if (rc) {
            marble_expr_free(*out);
            *out = NULL;
            return rc;
        }
        *out = marble_expr_binary(level == 0 ? MARBLE_OP_AND : MARBLE_OP_OR, *out, b);
        if (!*out) return oom(p);
    }
    return MARBLE_OK;
}

static int parse_expr(parser *p, marble_expr **out)
{
    if (p->nest++ == 0) p->ops = 0;
    int rc = parse_logic(p, 1, out);
    p->nest--;
    return rc;
}

/* ---- clauses --------------------------------------------------------------------------------- */

/* 1 if the current token continues an expression (so an aggregate before it sits inside one). */
static int continues_expr(parser *p)
{
    token *t = peek(p);
    if (t->k == T_SYM)
        return !tok_is_sym(p, t, ",") && !tok_is_sym(p, t, ";") && !tok_is_sym(p, t, ")") &&
               !tok_is_sym(p, t, "(");
    return at_kw(p, "and") || at_kw(p, "or") || at_kw(p, "is") || at_kw(p, "in") ||
           at_kw(p, "not") || at_kw(p, "like") || at_kw(p, "between");
}

static int parse_alias(parser *p, char **alias)
{
    *alias = NULL;
    if (accept_kw(p, "as")) {
        if (!is_name_token(p, peek(p))) return expected(p, "an alias");
    } else if (!is_name_token(p, peek(p)) ||
               !(tok_is_sym(p, peek2(p), ",") || tok_is_kw(p, peek2(p), "from"))) {
        return MARBLE_OK;
    }
    if (!(*alias = ident_text(p, peek(p)))) return oom(p);
    p->i++;
    return MARBLE_OK;
}

static int parse_agg_item(parser *p, marble_agg_fn fn)
{
    token *name = peek(p);
    p->i += 2;
    if (at_kw(p, "distinct"))
        return unsupported(p, peek(p), "DISTINCT in aggregates is not supported");
    marble_expr *arg = NULL;
    if (fn == MARBLE_AGG_COUNT && at_sym(p, "*")) {
        fn = MARBLE_AGG_COUNT_STAR;
        p->i++;
    } else {
        const char *saved = p->ctx;
        p->ctx = "inside an aggregate";
        int rc = parse_expr(p, &arg);
        p->ctx = saved;
        MARBLE_RETURN_NOT_OK(rc);
    }
    if (!accept_sym(p, ")")) {
        marble_expr_free(arg);
        return expected(p, "')'");
    }
    if (at_kw(p, "over") || at_kw(p, "filter") || at_kw(p, "within")) {
        marble_expr_free(arg);
        return unsupported(p, peek(p), "window functions are not supported");
    }
    if (continues_expr(p)) {
        marble_expr_free(arg);
        return unsupported(p, name,
                           "aggregates inside expressions are not supported (select %.*s() "
                           "on its own)",
                           (int)name->len, p->sql + name->pos);
    }
    char *alias;
    int rc = parse_alias(p, &alias);
    if (rc) {
        marble_expr_free(arg);
        return rc;
    }
    rc = marble__query_push_agg(p->q, fn, arg, alias, p->err);
    free(alias);
    return rc;
}

static int parse_item(parser *p)
{
    marble_agg_fn fn;
    if (accept_sym(p, "*")) return marble_query_select_all(p->q, p->err);
    if (agg_fn_of(p, peek(p), &fn) && tok_is_sym(p, peek2(p), "(")) return parse_agg_item(p, fn);
    if (at_kw(p, "from")) return expected(p, "a select item");
    marble_expr *e;
    p->ctx = "inside an expression";
    MARBLE_RETURN_NOT_OK(parse_expr(p, &e));
    char *alias;
    int rc = parse_alias(p, &alias);
    if (rc) {
        marble_expr_free(e);
        return rc;
    }
    rc = marble__query_push_expr(p->q, e, alias, p->err);
    free(alias);
    return rc;
}

static int check_clause_unsupported(parser *p)
{
    token *t = peek(p);
    static const char *const joins[] = {"join", "inner", "left",    "right",
                                        "full", "cross", "natural", "outer"};
    for (size_t k = 0; k < sizeof joins / sizeof *joins; k++)
        if (tok_is_kw(p, t, joins[k])) return unsupported(p, t, "JOIN is not supported");
    if (tok_is_kw(p, t, "having")) return unsupported(p, t, "HAVING is not supported");
    if (tok_is_kw(p, t, "union") || tok_is_kw(p, t, "intersect") || tok_is_kw(p, t, "except"))
        return unsupported(p, t, "%.*s is not supported", (int)t->len, p->sql + t->pos);
    if (tok_is_kw(p, t, "window")) return unsupported(p, t, "window functions are not supported");
    return MARBLE_OK;
}

static int parse_limit_number(parser *p, int64_t *v)
{
    if (peek(p)->k != T_INT) return expected(p, "a non-negative integer");
    MARBLE_RETURN_NOT_OK(int_value(p, peek(p), 0, v));
    p->i++;
    return MARBLE_OK;
}

static int parse_order_key(parser *p)
{
    token *t = peek(p);
    char *name = NULL;
    int64_t pos = 0;
    if (is_name_token(p, t)) {
        if (tok_is_sym(p, peek2(p), "(") || tok_is_sym(p, peek2(p), "."))
            return unsupported(p, t,
                               "ORDER BY takes an output column, alias or position, not "
                               "an expression");
        if (!(name = ident_text(p, t))) return oom(p);
        p->i++;
    } else if (t->k == T_INT) {
        MARBLE_RETURN_NOT_OK(int_value(p, t, 0, &pos));
        if (pos < 1 || pos > INT_MAX)
            return marble_error_set(p->err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "at %zu: ORDER BY position %.*s is out of range", t->pos + 1,
                                    (int)t->len, p->sql + t->pos);
        p->i++;
    } else {
        return expected(p, "a column name or position");
    }
    if (continues_expr(p)) {
        free(name);
        return unsupported(p, t,
                           "ORDER BY takes an output column, alias or position, not an "
                           "expression");
    }
    int desc = 0;
    if (accept_kw(p, "desc"))
        desc = 1;
    else
        accept_kw(p, "asc");
    if (tok_is_kw(p, peek(p), "nulls")) {
        free(name);
        return unsupported(p, peek(p), "NULLS FIRST/LAST is not supported");
    }
    int rc = marble_query_order_by(p->q, name, (int)pos, desc, p->err);
    free(name);
    return rc;
}

static int parse_query(parser *p)
{
    if (at_kw(p, "with")) return unsupported(p, peek(p), "WITH is not supported");
    MARBLE_RETURN_NOT_OK(expect_kw(p, "select", "SELECT"));
    if (at_kw(p, "distinct")) return unsupported(p, peek(p), "DISTINCT is not supported");
    accept_kw(p, "all");
    do {
        MARBLE_RETURN_NOT_OK(parse_item(p));
    } while (accept_sym(p, ","));
    MARBLE_RETURN_NOT_OK(check_clause_unsupported(p));
    MARBLE_RETURN_NOT_OK(expect_kw(p, "from", "FROM"));
    token *t = peek(p);
    if (tok_is_sym(p, t, "(")) return unsupported(p, t, "subqueries are not supported");
    if (!is_name_token(p, t)) return expected(p, "a table name");
    if (tok_is_sym(p, peek2(p), "."))
        return unsupported(p, t, "qualified table names are not supported");
    char *table = ident_text(p, t);
    if (!table) return oom(p);
    free(p->q->table);
    p->q->table = table;
    p->i++;
    if (at_sym(p, ",")) return unsupported(p, peek(p), "more than one table is not supported");
    const char *expect = "WHERE, GROUP BY, ORDER BY, LIMIT or the end of the query";
    MARBLE_RETURN_NOT_OK(check_clause_unsupported(p));
    if (accept_kw(p, "where")) {
        marble_expr *w;
        p->ctx = "in WHERE";
        MARBLE_RETURN_NOT_OK(parse_expr(p, &w));
        MARBLE_RETURN_NOT_OK(marble__query_set_where(p->q, w, p->err));
        expect = "GROUP BY, ORDER BY, LIMIT or the end of the query";
    }
    MARBLE_RETURN_NOT_OK(check_clause_unsupported(p));
    if (accept_kw(p, "group")) {
        MARBLE_RETURN_NOT_OK(expect_kw(p, "by", "BY"));
        p->ctx = "in GROUP BY";
        do {
            t = peek(p);
            if (t->k == T_INT) {
                token *nx = peek2(p);
                if (tok_is_sym(p, nx, ",") || nx->k == T_END || tok_is_sym(p, nx, ";") ||
                    tok_is_kw(p, nx, "order") || tok_is_kw(p, nx, "limit"))
                    return unsupported(p, t,
                                       "GROUP BY a position is not supported (name the "
                                       "expression)");
            }
            marble_expr *g;
            MARBLE_RETURN_NOT_OK(parse_expr(p, &g));
            MARBLE_RETURN_NOT_OK(marble__query_push_group(p->q, g, p->err));
        } while (accept_sym(p, ","));
        expect = "ORDER BY, LIMIT or the end of the query";
    }
    MARBLE_RETURN_NOT_OK(check_clause_unsupported(p));
    if (accept_kw(p, "order")) {
        MARBLE_RETURN_NOT_OK(expect_kw(p, "by", "BY"));
        do {
            MARBLE_RETURN_NOT_OK(parse_order_key(p));
        } while (accept_sym(p, ","));
        expect = "LIMIT or the end of the query";
    }
    MARBLE_RETURN_NOT_OK(check_clause_unsupported(p));
    int64_t limit = -1, offset = 0;
    int has_limit = 0;
    if (accept_kw(p, "limit")) {
        MARBLE_RETURN_NOT_OK(parse_limit_number(p, &limit));
        has_limit = 1;
        expect = "OFFSET or the end of the query";
    }
    if (accept_kw(p, "offset")) {
        MARBLE_RETURN_NOT_OK(parse_limit_number(p, &offset));
        has_limit = 1;
        expect = "the end of the query";
    }
    if (has_limit) MARBLE_RETURN_NOT_OK(marble_query_limit(p->q, limit, offset, p->err));
    MARBLE_RETURN_NOT_OK(check_clause_unsupported(p));
    accept_sym(p, ";");
    if (peek(p)->k != T_END) return expected(p, expect);
    return MARBLE_OK;
}

int marble_query_parse(const char *sql, marble_query **out, marble_error *err)
{
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: out is NULL");
    *out = NULL;
    if (!sql) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "query: NULL text");
    parser p = {.sql = sql, .err = err, .ctx = "inside an expression"};
    if (lex(&p)) {
        free(p.toks);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory while parsing");
    }
    int rc = marble_query_create("?", &p.q, err);
    if (!rc) rc = parse_query(&p);
    free(p.toks);
    if (rc) {
        marble_query_destroy(p.q);
        return rc;
    }
    *out = p.q;
    return MARBLE_OK;
}

int marble_expr_parse(const char *text, marble_expr **out, marble_error *err)
{
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "expression: out is NULL");
    *out = NULL;
    if (!text) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "expression: NULL text");
    parser p = {.sql = text, .err = err, .ctx = "in an expression"};
    if (lex(&p)) {
        free(p.toks);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "query: out of memory while parsing");
    }
    marble_expr *e = NULL;
    int rc = parse_expr(&p, &e);
    if (!rc && peek(&p)->k != T_END) rc = expected(&p, "an operator or the end of the expression");
    free(p.toks);
    if (rc) {
        marble_expr_free(e);
        return rc;
    }
    *out = e;
    return MARBLE_OK;
}
