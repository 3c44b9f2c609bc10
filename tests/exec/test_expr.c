/* Tests for expressions: construction, text, clone, binding errors, every operator on every value
 * kind with NULLs and SQL's three-valued logic, IN lists, overflow and division by zero, sliced
 * arrays and unknown null counts, selection vectors, take and vector materialization, and a
 * randomized comparison of vectorized evaluation against a row-at-a-time reference. */
#include "exec/exec_internal.h"
#include "marble/pipeline.h"
#include "marble_test.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>

static marble_error err;

#define CHECK_OK(x)                                                                                \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ != MARBLE_OK) FAIL("%s: %s (%s)", #x, marble_status_name(rc_), err.message);       \
    } while (0)

#define COL(n) marble_expr_column(n)
#define INT(v) marble_expr_int(v)
#define DBL(v) marble_expr_double(v)
#define STR(s) marble_expr_string(s, strlen(s))
#define BOOL(v) marble_expr_bool(v)
#define NUL marble_expr_null()
#define BIN(op, a, b) marble_expr_binary(MARBLE_OP_##op, a, b)
#define UN(op, a) marble_expr_unary(MARBLE_OP_##op, a)

static marble_expr *in_list(marble_expr *a, int negated, int n, ...)
{
    marble_expr *list[64];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        list[i] = va_arg(ap, marble_expr *);
    va_end(ap);
    return marble_expr_in(a, list, (size_t)n, negated);
}

/* ---- batches from text ----------------------------------------------------------------------- */

/* A batch described as "name:format,..." with columns filled from "v|v|~" (~ is NULL). */
typedef struct tbatch {
    struct ArrowSchema schema;
    struct ArrowArray batch;
    marble_batch_builder *b;
} tbatch;

static void tb_begin(tbatch *t, const char *spec)
{
    marble_field_spec f[32];
    char names[32][32], formats[32][32];
    int n = 0;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        snprintf(names[n], sizeof names[n], "%.*s", (int)(colon - p), p);
        snprintf(formats[n], sizeof formats[n], "%.*s", (int)(len - (size_t)(colon - p) - 1),
                 colon + 1);
        f[n] = (marble_field_spec){names[n], formats[n], 1};
        n++;
        p += len + (end ? 1 : 0);
    }
    CHECK_OK(marble_arrow_schema_make(&t->schema, f, (size_t)n, NULL, NULL, 0, &err));
    CHECK_OK(marble_batch_builder_create(&t->schema, &t->b, &err));
}

static void tb_col(tbatch *t, int col, const char *values)
{
    const char *fmt = t->schema.children[col]->format;
    const char *p = values;
    for (;;) {
        const char *end = strchr(p, '|');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char tok[256];
        snprintf(tok, sizeof tok, "%.*s", (int)len, p);
        if (strcmp(tok, "~") == 0)
            CHECK_OK(marble_builder_append_null(t->b, col, &err));
        else if (strchr("uUzZw", fmt[0]))
            CHECK_OK(marble_builder_append_bytes(t->b, col, tok, len, &err));
        else if (fmt[0] == 'f' || fmt[0] == 'g')
            CHECK_OK(marble_builder_append_double(t->b, col, strtod(tok, NULL), &err));
        else if (fmt[0] == 'b')
            CHECK_OK(marble_builder_append_int(t->b, col, tok[0] == 't', &err));
        else if (fmt[0] == 'L')
            CHECK_OK(marble_builder_append_uint(t->b, col, strtoull(tok, NULL, 10), &err));
        else
            CHECK_OK(marble_builder_append_int(t->b, col, strtoll(tok, NULL, 10), &err));
        if (!end) break;
        p = end + 1;
    }
}

static void tb_end(tbatch *t)
{
    CHECK_OK(marble_batch_builder_finish(t->b, &t->batch, &err));
    marble_batch_builder_destroy(t->b);
    t->b = NULL;
}

static void tb_free(tbatch *t)
{
    marble_arrow_array_release(&t->batch);
    marble_arrow_schema_release(&t->schema);
}

/* Renders an array as "v|v|~". */
static void render(const char *format, const struct ArrowArray *a, char *out, size_t cap)
{
    struct ArrowSchema s = {.format = format};
    size_t len = 0;
    out[0] = 0;
    for (int64_t i = 0; i < a->length; i++) {
        char v[300];
        if (marble_arrow_is_null(a, i)) {
            strcpy(v, "~");
        } else if (format[0] == 'b') {
            strcpy(v, marble_arrow_get_int(&s, a, i) ? "t" : "f");
        } else if (format[0] == 'f' || format[0] == 'g') {
            snprintf(v, sizeof v, "%.17g", marble_arrow_get_double(&s, a, i));
        } else if (strchr("uUzZw", format[0])) {
            const void *d;
            size_t n;
            marble_arrow_get_bytes(&s, a, i, &d, &n);
            snprintf(v, sizeof v, "%.*s", (int)n, (const char *)d);
        } else if (format[0] == 'L') {
            snprintf(v, sizeof v, "%llu", (unsigned long long)marble_arrow_get_uint(&s, a, i));
        } else {
            snprintf(v, sizeof v, "%lld", (long long)marble_arrow_get_int(&s, a, i));
        }
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "|" : "", v);
        if (len >= cap) FAIL("render: result too long");
    }
}

/* The rows where a rendered bool result is "t", as "0|3|4" (from sel_in when given). */
static void true_rows(const char *rendered, const uint32_t *sel_in, char *out, size_t cap)
{
    size_t len = 0;
    int64_t k = 0;
    out[0] = 0;
    for (const char *p = rendered; *p; k++) {
        if (*p == 't')
            len += (size_t)snprintf(out + len, cap - len, "%s%u", len ? "|" : "",
                                    sel_in ? sel_in[k] : (uint32_t)k);
        p = strchr(p, '|');
        if (!p) break;
        p++;
    }
}

static void render_sel(const uint32_t *sel, int64_t n, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = 0;
    for (int64_t k = 0; k < n; k++)
        len += (size_t)snprintf(out + len, cap - len, "%s%u", k ? "|" : "", sel[k]);
}

/* Evaluates e (freed) over t: "v|v|~", or "ERR <code name>: message". Boolean results are also
 * checked against marble__expr_select over all rows and over the odd rows. */
static const char *ev(tbatch *t, marble_expr *e)
{
    static char out[4096];
    if (!e) FAIL("expression is NULL");
    struct ArrowArray a;
    const char *fmt = NULL;
    int rc = marble_expr_check(e, &t->schema, &fmt, &err);
    if (rc == MARBLE_OK) rc = marble_expr_eval(e, &t->schema, &t->batch, &a, &err);
    if (rc != MARBLE_OK) {
        snprintf(out, sizeof out, "ERR %s: %s", marble_status_name(rc), err.message);
        marble_expr_free(e);
        return out;
    }
    ASSERT_EQ_INT(a.length, t->batch.length);
    render(fmt, &a, out, sizeof out);
    a.release(&a);
    if (fmt[0] == 'b' && fmt[1] == 0) {
        marble__bound *b;
        CHECK_OK(marble__expr_bind(e, &t->schema, &b, &err));
        int64_t n = t->batch.length, m;
        uint32_t *sel = malloc(sizeof(uint32_t) * (size_t)(n + 1));
        char want[4096], got[4096];
        CHECK_OK(marble__expr_select(b, &t->batch, NULL, n, sel, &m, &err));
        true_rows(out, NULL, want, sizeof want);
        render_sel(sel, m, got, sizeof got);
        ASSERT_EQ_STR(got, want);
        /* odd rows, selecting in place */
        int64_t no = 0;
        for (int64_t r = 1; r < n; r += 2)
            sel[no++] = (uint32_t)r;
        size_t len = 0;
        want[0] = 0;
        int64_t k = 0;
        for (const char *p = out; *p; k++) {
            if (*p == 't' && (k & 1))
                len += (size_t)snprintf(want + len, 4096 - len, "%s%lld", len ? "|" : "",
                                        (long long)k);
            p = strchr(p, '|');
            if (!p) break;
            p++;
        }
        CHECK_OK(marble__expr_select(b, &t->batch, sel, no, sel, &m, &err));
        render_sel(sel, m, got, sizeof got);
        ASSERT_EQ_STR(got, want);
        free(sel);
        marble__bound_free(b);
    }
    marble_expr_free(e);
    return out;
}

static const char *text(marble_expr *e)
{
    static char out[512];
    marble_expr_to_string(e, out, sizeof out);
    marble_expr_free(e);
    return out;
}

/* ---- construction, text, clone --------------------------------------------------------------- */

TEST(construct_and_inspect)
{
    marble_expr *e = BIN(AND, BIN(GT, COL("v"), DBL(0.9)), in_list(COL("k"), 1, 2, INT(1), NUL));
    ASSERT_NOT_NULL(e);
    ASSERT_EQ_INT(marble_expr_get_kind(e), MARBLE_EXPR_BINARY);
    ASSERT_EQ_INT(marble_expr_get_op(e), MARBLE_OP_AND);
    ASSERT_EQ_INT(marble_expr_num_children(e), 2);
    const marble_expr *gt = marble_expr_child(e, 0), *in = marble_expr_child(e, 1);
    ASSERT_EQ_INT(marble_expr_get_op(gt), MARBLE_OP_GT);
    ASSERT_EQ_STR(marble_expr_get_column(marble_expr_child(gt, 0)), "v");
    const marble_datum *d = marble_expr_get_literal(marble_expr_child(gt, 1));
    ASSERT_EQ_INT(d->kind, MARBLE_DATUM_DOUBLE);
    ASSERT_TRUE(d->d == 0.9);
    ASSERT_EQ_INT(marble_expr_get_kind(in), MARBLE_EXPR_IN);
    ASSERT_EQ_INT(marble_expr_num_children(in), 3);
    ASSERT_TRUE(marble_expr_in_negated(in));
    ASSERT_EQ_INT(marble_expr_get_literal(marble_expr_child(in, 2))->kind, MARBLE_DATUM_NULL);
    ASSERT_NULL(marble_expr_child(in, 3));
    ASSERT_NULL(marble_expr_get_column(gt));
    ASSERT_NULL(marble_expr_get_literal(gt));
    marble_expr_free(e);

    marble_expr *s = marble_expr_string("a\0b", 3);
    ASSERT_EQ_INT(marble_expr_get_literal(s)->n, 3);
    ASSERT_TRUE(memcmp(marble_expr_get_literal(s)->s, "a\0b", 3) == 0);
    marble_expr_free(s);

    /* NULL operands free the others (ASan checks for leaks) */
    ASSERT_NULL(BIN(ADD, COL("a"), NULL));
    ASSERT_NULL(BIN(ADD, NULL, INT(1)));
    ASSERT_NULL(UN(NOT, NULL));
    ASSERT_NULL(in_list(COL("a"), 0, 2, INT(1), NULL));
    ASSERT_NULL(in_list(NULL, 0, 1, INT(1)));
    /* bad operators, non-literal lists */
    ASSERT_NULL(marble_expr_unary(MARBLE_OP_ADD, COL("a")));
    ASSERT_NULL(marble_expr_binary(MARBLE_OP_NOT, COL("a"), COL("b")));
    ASSERT_NULL(in_list(COL("a"), 0, 2, INT(1), COL("b")));
    ASSERT_NULL(marble_expr_column(NULL));
    marble_expr_free(NULL);
}

TEST(to_string)
{
    ASSERT_EQ_STR(
        text(BIN(AND, BIN(GT, COL("v"), DBL(0.9)), in_list(COL("k"), 0, 2, INT(1), INT(2)))),
        "((v > 0.9) AND (k IN (1, 2)))");
    ASSERT_EQ_STR(text(in_list(COL("s"), 1, 3, STR("it's"), NUL, STR(""))),
                  "(s NOT IN ('it''s', NULL, ''))");
    ASSERT_EQ_STR(text(COL("my col")), "\"my col\"");
    ASSERT_EQ_STR(text(COL("a\"b")), "\"a\"\"b\"");
    ASSERT_EQ_STR(text(COL("1x")), "\"1x\"");
    ASSERT_EQ_STR(text(COL("and")), "\"and\"");
    ASSERT_EQ_STR(text(COL("_x9")), "_x9");
    ASSERT_EQ_STR(text(UN(NOT, UN(IS_NULL, COL("a")))), "(NOT (a IS NULL))");
    ASSERT_EQ_STR(text(UN(IS_NOT_NULL, COL("a"))), "(a IS NOT NULL)");
    ASSERT_EQ_STR(text(UN(NEG, COL("a"))), "(-a)");
    ASSERT_EQ_STR(text(UN(NEG, INT(-5))), "(- -5)");
    ASSERT_EQ_STR(text(BIN(SUB, COL("a"), INT(-5))), "(a - -5)");
    ASSERT_EQ_STR(text(BIN(MOD, BIN(MUL, COL("a"), INT(3)), BIN(DIV, INT(7), DBL(2)))),
                  "((a * 3) % (7 / 2.0))");
    ASSERT_EQ_STR(text(BIN(NE, BIN(ADD, COL("a"), DBL(1e300)), DBL(-0.1))),
                  "((a + 1e+300) != -0.1)");
    ASSERT_EQ_STR(text(BIN(OR, BOOL(1), BIN(LE, NUL, BOOL(0)))), "(TRUE OR (NULL <= FALSE))");
    ASSERT_EQ_STR(text(BIN(GE, DBL(1.0 / 3), DBL(INFINITY))), "(0.3333333333333333 >= (1.0 / 0.0))");
    /* names the query syntax would fold or read as keywords are quoted */
    ASSERT_EQ_STR(text(BIN(EQ, marble_expr_column("Mixed"), marble_expr_column("from"))),
                  "(\"Mixed\" = \"from\")");
    ASSERT_EQ_STR(text(marble_expr_double(NAN)), "(0.0 / 0.0)");
    ASSERT_EQ_STR(text(BIN(LT, INT(INT64_MIN), INT(INT64_MAX))),
                  "(-9223372036854775808 < 9223372036854775807)");

    marble_expr *e = BIN(EQ, COL("abc"), STR("xyz"));
    char buf[8];
    ASSERT_EQ_INT(marble_expr_to_string(e, buf, sizeof buf), 13);
    ASSERT_EQ_STR(buf, "(abc = ");
    ASSERT_EQ_INT(marble_expr_to_string(e, NULL, 0), 13);
    marble_expr_free(e);
}

TEST(clone)
{
    marble_expr *e = BIN(OR, in_list(COL("s"), 0, 2, STR("a'b"), NUL),
                         UN(NOT, BIN(EQ, BIN(MOD, COL("id"), INT(7)), INT(3))));
    marble_expr *c = marble_expr_clone(e);
    ASSERT_NOT_NULL(c);
    char a[256], b[256];
    marble_expr_to_string(e, a, sizeof a);
    marble_expr_free(e);
    marble_expr_to_string(c, b, sizeof b);
    ASSERT_EQ_STR(b, a);
    ASSERT_EQ_STR(b, "((s IN ('a''b', NULL)) OR (NOT ((id % 7) = 3)))");
    ASSERT_NULL(marble_expr_clone(NULL));
    marble_expr_free(c);
}

/* ---- binding --------------------------------------------------------------------------------- */

TEST(bind_errors_and_formats)
{
    tbatch t;
    tb_begin(&t, "a:l,b:u,c:g,d:b,e:tsu:UTC,n:n");
    const char *fmt = NULL;
    marble_expr *e = BIN(GT, COL("x"), INT(1));
    ASSERT_EQ_INT(marble_expr_check(e, &t.schema, &fmt, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_STR(err.message, "unknown column 'x' (columns: a, b, c, d, e, n)");
    marble_expr_free(e);

    struct {
        marble_expr *e;
        const char *msg;
    } bad[] = {
        {BIN(ADD, COL("a"), COL("b")), "cannot apply '+' to int64 and utf8 in (a + b)"},
        {BIN(EQ, COL("b"), INT(1)), "cannot apply '=' to utf8 and int64 in (b = 1)"},
        {BIN(AND, COL("a"), COL("d")), "cannot apply 'AND' to int64 and bool in (a AND d)"},
        {BIN(LT, COL("d"), COL("c")), "cannot apply '<' to bool and float64 in (d < c)"},
        {UN(NOT, COL("c")), "cannot apply 'NOT' to float64 in (NOT c)"},
        {UN(NEG, COL("b")), "cannot apply '-' to utf8 in (-b)"},
        {BIN(ADD, COL("d"), INT(1)), "cannot apply '+' to bool and int64 in (d + 1)"},
        {BIN(MUL, COL("e"), STR("x")),
         "cannot apply '*' to timestamp[us, tz=UTC] and utf8 in (e * 'x')"},
        {in_list(COL("a"), 0, 2, INT(1), STR("x")), "cannot apply 'IN' to int64 and utf8"},
        {in_list(COL("b"), 1, 1, DBL(1)), "cannot apply 'NOT IN' to utf8 and float64"},
        {BIN(GT, COL("n"), INT(1)), "column 'n' has type null, which expressions do not support"},
        {BIN(OR, BIN(GT, COL("a"), INT(1)), COL("zz")), "unknown column 'zz'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ASSERT_EQ_INT(marble_expr_check(bad[i].e, &t.schema, &fmt, &err),
                      MARBLE_ERR_INVALID_ARGUMENT);
        ASSERT_CONTAINS(err.message, bad[i].msg);
        marble_expr_free(bad[i].e);
    }

    struct {
        marble_expr *e;
        const char *fmt;
        marble_datum_kind kind;
        int col;
    } good[] = {
        {COL("e"), "tsu:UTC", MARBLE_DATUM_INT, 4},
        {COL("b"), "u", MARBLE_DATUM_STRING, 1},
        {BIN(ADD, COL("e"), INT(1)), "l", MARBLE_DATUM_INT, -1},
        {BIN(ADD, COL("a"), COL("c")), "g", MARBLE_DATUM_DOUBLE, -1},
        {BIN(DIV, COL("a"), INT(2)), "l", MARBLE_DATUM_INT, -1},
        {BIN(EQ, COL("a"), COL("c")), "b", MARBLE_DATUM_BOOL, -1},
        {BIN(EQ, COL("b"), NUL), "b", MARBLE_DATUM_BOOL, -1},
        {BIN(ADD, COL("c"), NUL), "g", MARBLE_DATUM_DOUBLE, -1},
        {NUL, "l", MARBLE_DATUM_INT, -1},
        {STR("s"), "u", MARBLE_DATUM_STRING, -1},
        {UN(NEG, NUL), "l", MARBLE_DATUM_INT, -1},
        {UN(IS_NULL, COL("b")), "b", MARBLE_DATUM_BOOL, -1},
        {in_list(COL("a"), 0, 2, INT(1), DBL(2.5)), "b", MARBLE_DATUM_BOOL, -1},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        CHECK_OK(marble_expr_check(good[i].e, &t.schema, &fmt, &err));
        ASSERT_EQ_STR(fmt, good[i].fmt);
        marble__bound *b;
        CHECK_OK(marble__expr_bind(good[i].e, &t.schema, &b, &err));
        ASSERT_EQ_INT(marble__bound_kind(b), good[i].kind);
        ASSERT_EQ_STR(marble__bound_format(b), good[i].fmt);
        ASSERT_EQ_INT(marble__bound_column(b), good[i].col);
        marble__bound_free(b);
        marble_expr_free(good[i].e);
    }

    /* a filter needs a boolean */
    marble__bound *b;
    e = BIN(ADD, COL("a"), INT(1));
    CHECK_OK(marble__expr_bind(e, &t.schema, &b, &err));
    tb_end(&t);
    uint32_t sel[1];
    int64_t m;
    ASSERT_EQ_INT(marble__expr_select(b, &t.batch, NULL, 0, sel, &m, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    marble__bound_free(b);
    marble_expr_free(e);

    /* deep nesting is refused, not a stack overflow */
    e = COL("a");
    for (int i = 0; i < 1500; i++)
        e = UN(NEG, e);
    ASSERT_EQ_INT(marble_expr_check(e, &t.schema, NULL, &err), MARBLE_ERR_LIMIT);
    marble_expr_free(e);
    tb_free(&t);
}

/* ---- operators ------------------------------------------------------------------------------- */

static void cmp_batch(tbatch *t)
{
    tb_begin(t, "i:l,j:l,d:g,s:u,t:u,b:b,c:b");
    tb_col(t, 0, "1|5|~|-3|7");
    tb_col(t, 1, "2|5|4|~|-7");
    tb_col(t, 2, "1.5|5|2|-3|~");
    tb_col(t, 3, "a|b|~|ab|");
    tb_col(t, 4, "b|b|a|~|");
    tb_col(t, 5, "t|f|~|t|f");
    tb_col(t, 6, "t|t|t|~|f");
    tb_end(t);
}

TEST(comparisons)
{
    tbatch t;
    cmp_batch(&t);
    ASSERT_EQ_STR(ev(&t, BIN(EQ, COL("i"), COL("j"))), "f|t|~|~|f");
    ASSERT_EQ_STR(ev(&t, BIN(NE, COL("i"), COL("j"))), "t|f|~|~|t");
    ASSERT_EQ_STR(ev(&t, BIN(LT, COL("i"), COL("j"))), "t|f|~|~|f");
    ASSERT_EQ_STR(ev(&t, BIN(LE, COL("i"), COL("j"))), "t|t|~|~|f");
    ASSERT_EQ_STR(ev(&t, BIN(GT, COL("i"), COL("j"))), "f|f|~|~|t");
    ASSERT_EQ_STR(ev(&t, BIN(GE, COL("i"), COL("j"))), "f|t|~|~|t");
    /* int vs double compares as double */
    ASSERT_EQ_STR(ev(&t, BIN(LT, COL("i"), COL("d"))), "t|f|~|f|~");
    ASSERT_EQ_STR(ev(&t, BIN(EQ, COL("d"), COL("i"))), "f|t|~|t|~");
    /* literals on either side */
    ASSERT_EQ_STR(ev(&t, BIN(EQ, COL("i"), INT(5))), "f|t|~|f|f");
    ASSERT_EQ_STR(ev(&t, BIN(EQ, INT(5), COL("i"))), "f|t|~|f|f");
    ASSERT_EQ_STR(ev(&t, BIN(NE, COL("i"), INT(5))), "t|f|~|t|t");
    ASSERT_EQ_STR(ev(&t, BIN(LT, INT(5), COL("i"))), "f|f|~|f|t");
    ASSERT_EQ_STR(ev(&t, BIN(LE, INT(5), COL("i"))), "f|t|~|f|t");
    ASSERT_EQ_STR(ev(&t, BIN(GT, INT(5), COL("i"))), "t|f|~|t|f");
    ASSERT_EQ_STR(ev(&t, BIN(GE, INT(5), COL("i"))), "t|t|~|t|f");
    ASSERT_EQ_STR(ev(&t, BIN(GE, COL("i"), DBL(4.5))), "f|t|~|f|t");
    ASSERT_EQ_STR(ev(&t, BIN(LT, DBL(4.5), COL("i"))), "f|t|~|f|t");
    ASSERT_EQ_STR(ev(&t, BIN(GT, COL("d"), INT(2))), "f|t|f|f|~");
    ASSERT_EQ_STR(ev(&t, BIN(LE, COL("d"), DBL(2))), "t|f|t|t|~");
    ASSERT_EQ_STR(ev(&t, BIN(NE, COL("d"), DBL(5))), "t|f|t|t|~");
    ASSERT_EQ_STR(ev(&t, BIN(EQ, INT(1), DBL(1.0))), "t|t|t|t|t");
    ASSERT_EQ_STR(ev(&t, BIN(LT, INT(2), INT(1))), "f|f|f|f|f");
    /* strings (bytewise, shorter prefix first) */
    ASSERT_EQ_STR(ev(&t, BIN(LT, COL("s"), COL("t"))), "t|f|~|~|f");
    ASSERT_EQ_STR(ev(&t, BIN(EQ, COL("s"), COL("t"))), "f|t|~|~|t");
    ASSERT_EQ_STR(ev(&t, BIN(EQ, COL("s"), STR("ab"))), "f|f|~|t|f");
    ASSERT_EQ_STR(ev(&t, BIN(GE, COL("s"), STR("ab"))), "f|t|~|t|f");
    ASSERT_EQ_STR(ev(&t, BIN(GT, STR("b"), COL("s"))), "t|f|~|t|t");
    ASSERT_EQ_STR(ev(&t, BIN(NE, COL("t"), STR(""))), "t|t|t|~|f");
    /* booleans (false < true) */
    ASSERT_EQ_STR(ev(&t, BIN(EQ, COL("b"), COL("c"))), "t|f|~|~|t");
    ASSERT_EQ_STR(ev(&t, BIN(NE, COL("b"), BOOL(1))), "f|t|~|f|t");
    ASSERT_EQ_STR(ev(&t, BIN(LT, COL("b"), COL("c"))), "f|t|~|~|f");
    ASSERT_EQ_STR(ev(&t, BIN(GE, BOOL(0), COL("b"))), "f|t|~|f|t");
    /* NULL operands */
    ASSERT_EQ_STR(ev(&t, BIN(EQ, COL("i"), NUL)), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(LT, NUL, COL("s"))), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(EQ, NUL, NUL)), "~|~|~|~|~");
    /* computed operands */
    ASSERT_EQ_STR(ev(&t, BIN(EQ, BIN(MOD, COL("i"), INT(2)), INT(1))), "t|t|~|f|t");
    ASSERT_EQ_STR(ev(&t, BIN(GT, BIN(ADD, COL("i"), COL("j")), BIN(MUL, COL("d"), INT(2)))),
                  "f|f|~|~|~");
    tb_free(&t);
}

TEST(arithmetic)
{
    tbatch t;
    tb_begin(&t, "i:l,j:l,d:g,k:l");
    tb_col(&t, 0, "1|5|~|-3|7");
    tb_col(&t, 1, "2|5|4|~|-7");
    tb_col(&t, 2, "1.5|5|2|-3|~");
    tb_col(&t, 3, "0|2|0|~|-1");
    tb_end(&t);
    ASSERT_EQ_STR(ev(&t, BIN(ADD, COL("i"), COL("j"))), "3|10|~|~|0");
    ASSERT_EQ_STR(ev(&t, BIN(SUB, COL("i"), COL("j"))), "-1|0|~|~|14");
    ASSERT_EQ_STR(ev(&t, BIN(MUL, COL("i"), COL("j"))), "2|25|~|~|-49");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("i"), COL("j"))), "0|1|~|~|-1");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("i"), COL("j"))), "1|0|~|~|0");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("j"), COL("i"))), "2|1|~|~|-1");
    ASSERT_EQ_STR(ev(&t, BIN(ADD, INT(10), COL("i"))), "11|15|~|7|17");
    ASSERT_EQ_STR(ev(&t, BIN(SUB, INT(10), COL("i"))), "9|5|~|13|3");
    ASSERT_EQ_STR(ev(&t, BIN(MUL, INT(-2), COL("i"))), "-2|-10|~|6|-14");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, INT(10), COL("i"))), "10|2|~|-3|1");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, INT(10), COL("i"))), "0|0|~|1|3");
    /* truncation toward zero */
    ASSERT_EQ_STR(ev(&t, BIN(DIV, INT(-7), INT(2))), "-3|-3|-3|-3|-3");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, INT(-7), INT(2))), "-1|-1|-1|-1|-1");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("i"), INT(-2))), "0|-2|~|1|-3");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("i"), INT(-2))), "1|1|~|-1|1");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("i"), INT(-1))), "-1|-5|~|3|-7");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("i"), INT(-1))), "0|0|~|0|0");
    /* division by zero is NULL */
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("i"), INT(0))), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("i"), INT(0))), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("i"), COL("k"))), "~|2|~|~|-7");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("i"), COL("k"))), "~|1|~|~|0");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("j"), BIN(SUB, COL("i"), COL("i")))), "~|~|~|~|~");
    /* doubles */
    ASSERT_EQ_STR(ev(&t, BIN(ADD, COL("i"), DBL(0.5))), "1.5|5.5|~|-2.5|7.5");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("i"), DBL(2))), "0.5|2.5|~|-1.5|3.5");
    ASSERT_EQ_STR(ev(&t, BIN(MUL, COL("d"), INT(2))), "3|10|4|-6|~");
    ASSERT_EQ_STR(ev(&t, BIN(SUB, COL("d"), COL("i"))), "0.5|0|~|0|~");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("d"), INT(2))), "1.5|1|0|-1|~");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("d"), COL("k"))), "~|1|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("d"), DBL(0))), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("d"), INT(0))), "inf|inf|inf|-inf|~");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, DBL(3), COL("d"))), "2|0.59999999999999998|1.5|-1|~");
    ASSERT_EQ_STR(ev(&t, BIN(SUB, DBL(1), COL("i"))), "0|-4|~|4|-6");
    /* unary minus */
    ASSERT_EQ_STR(ev(&t, UN(NEG, COL("i"))), "-1|-5|~|3|-7");
    ASSERT_EQ_STR(ev(&t, UN(NEG, COL("d"))), "-1.5|-5|-2|3|~");
    ASSERT_EQ_STR(ev(&t, UN(NEG, BIN(ADD, COL("i"), INT(1)))), "-2|-6|~|2|-8");
    /* NULL operands */
    ASSERT_EQ_STR(ev(&t, BIN(ADD, COL("i"), NUL)), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(SUB, NUL, COL("d"))), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(MUL, NUL, NUL)), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, UN(NEG, NUL)), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, NUL), "~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, INT(4)), "4|4|4|4|4");
    ASSERT_EQ_STR(ev(&t, STR("x")), "x|x|x|x|x");
    tb_free(&t);
}

static void noop_release(struct ArrowArray *a)
{
    a->release = NULL;
}

static void noop_schema_release(struct ArrowSchema *s)
{
    s->release = NULL;
}

/* Division by a literal takes a double-precision path when every value is below 2^53 in
 * magnitude; it must agree with integer division everywhere around that bound. */
TEST(division_by_literal_near_2_53)
{
    static const int64_t xs[] = {((int64_t)1 << 53) - 1,
                                 -(((int64_t)1 << 53) - 1),
                                 ((int64_t)1 << 53) - 2,
                                 ((int64_t)1 << 53) - 3,
                                 123456789012345,
                                 -99999999999999,
                                 7,
                                 -7,
                                 0};
    static const int64_t ds[] = {
        3, -3,     7, 10, ((int64_t)1 << 52) + 1, ((int64_t)1 << 53) - 1, -(((int64_t)1 << 53) - 1),
        2, 1000003};
    for (int big = 0; big < 2; big++) {
        tbatch t;
        tb_begin(&t, "x:l");
        char vals[1024];
        size_t len = 0;
        for (size_t i = 0; i < sizeof xs / sizeof *xs; i++)
            len += (size_t)snprintf(vals + len, sizeof vals - len, "%s%lld", i ? "|" : "",
                                    (long long)xs[i]);
        /* one value at 2^53 sends the batch down the integer path */
        if (big)
            len += (size_t)snprintf(vals + len, sizeof vals - len, "|%lld|%lld",
                                    (long long)((int64_t)1 << 53),
                                    (long long)(((int64_t)1 << 62) + 1));
        tb_col(&t, 0, vals);
        tb_end(&t);
        for (size_t j = 0; j < sizeof ds / sizeof *ds; j++)
            for (int mod = 0; mod < 2; mod++) {
                char want[1024];
                size_t wl = 0;
                size_t nx = sizeof xs / sizeof *xs + (size_t)big * 2;
                for (size_t i = 0; i < nx; i++) {
                    size_t n0 = sizeof xs / sizeof *xs;
                    int64_t x = i < n0    ? xs[i]
                                : i == n0 ? ((int64_t)1 << 53)
                                          : ((int64_t)1 << 62) + 1;
                    wl += (size_t)snprintf(want + wl, sizeof want - wl, "%s%lld", i ? "|" : "",
                                           (long long)(mod ? x % ds[j] : x / ds[j]));
                }
                marble_expr *e =
                    marble_expr_binary(mod ? MARBLE_OP_MOD : MARBLE_OP_DIV, COL("x"), INT(ds[j]));
                ASSERT_EQ_STR(ev(&t, e), want);
            }
        tb_free(&t);
    }
}

TEST(overflow)
{
    tbatch t;
    tb_begin(&t, "m:l,x:l,y:l,u:L");
    tb_col(&t, 0, "-9223372036854775808|0");
    tb_col(&t, 1, "9223372036854775807|1");
    tb_col(&t, 2, "-1|-1");
    tb_col(&t, 3, "18446744073709551615|~");
    tb_end(&t);
    ASSERT_CONTAINS(ev(&t, BIN(ADD, COL("x"), INT(1))),
                    "ERR MARBLE_ERR_LIMIT: integer overflow in (x + 1)");
    ASSERT_CONTAINS(ev(&t, BIN(ADD, COL("x"), COL("x"))), "integer overflow in (x + x)");
    ASSERT_CONTAINS(ev(&t, BIN(SUB, COL("m"), INT(1))), "integer overflow in (m - 1)");
    ASSERT_CONTAINS(ev(&t, BIN(SUB, INT(0), COL("m"))), "integer overflow in (0 - m)");
    ASSERT_CONTAINS(ev(&t, BIN(MUL, COL("x"), INT(2))), "integer overflow in (x * 2)");
    ASSERT_CONTAINS(ev(&t, BIN(MUL, COL("m"), COL("y"))), "integer overflow in (m * y)");
    ASSERT_CONTAINS(ev(&t, BIN(DIV, COL("m"), INT(-1))), "integer overflow in (m / -1)");
    ASSERT_CONTAINS(ev(&t, BIN(DIV, COL("m"), COL("y"))), "integer overflow in (m / y)");
    ASSERT_CONTAINS(ev(&t, UN(NEG, COL("m"))), "integer overflow in (-m)");
    ASSERT_CONTAINS(ev(&t, BIN(GT, BIN(ADD, COL("x"), INT(1)), INT(0))),
                    "ERR MARBLE_ERR_LIMIT: integer overflow in (x + 1)");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("m"), INT(-1))), "0|0");
    ASSERT_EQ_STR(ev(&t, BIN(MOD, COL("m"), COL("y"))), "0|0");
    ASSERT_EQ_STR(ev(&t, BIN(SUB, COL("x"), COL("x"))), "0|0");
    ASSERT_EQ_STR(ev(&t, BIN(ADD, COL("m"), COL("x"))), "-1|1");
    /* doubles do not overflow */
    ASSERT_EQ_STR(ev(&t, BIN(ADD, COL("x"), DBL(1))), "9.2233720368547758e+18|2");
    /* uint64 above INT64_MAX: an error when computed with, kept when passed through */
    ASSERT_CONTAINS(ev(&t, BIN(ADD, COL("u"), INT(0))),
                    "ERR MARBLE_ERR_LIMIT: column 'u': uint64 value 18446744073709551615 is out "
                    "of int64 range");
    ASSERT_CONTAINS(ev(&t, BIN(EQ, COL("u"), INT(0))), "ERR MARBLE_ERR_LIMIT");
    ASSERT_EQ_STR(ev(&t, COL("u")), "18446744073709551615|~");
    tb_free(&t);

    /* values under NULL slots never raise errors */
    int64_t vals[3] = {INT64_MAX, 1, INT64_MIN};
    uint8_t valid = 0x2;
    uint64_t uvals[3] = {UINT64_MAX, 7, UINT64_MAX};
    const void *bufs[2] = {&valid, vals}, *ubufs[2] = {&valid, uvals};
    struct ArrowArray col = {
        .length = 3, .null_count = 2, .n_buffers = 2, .buffers = bufs, .release = noop_release};
    struct ArrowArray ucol = {
        .length = 3, .null_count = -1, .n_buffers = 2, .buffers = ubufs, .release = noop_release};
    struct ArrowArray *kids[2] = {&col, &ucol};
    const void *nobuf[1] = {NULL};
    struct ArrowArray batch = {
        .length = 3, .n_buffers = 1, .buffers = nobuf, .n_children = 2, .children = kids};
    tbatch f;
    tb_begin(&f, "v:l,w:L");
    f.batch = batch;
    f.batch.release = noop_release;
    ASSERT_EQ_STR(ev(&f, BIN(ADD, COL("v"), INT(1))), "~|2|~");
    ASSERT_EQ_STR(ev(&f, BIN(MUL, COL("v"), COL("v"))), "~|1|~");
    ASSERT_EQ_STR(ev(&f, BIN(DIV, COL("v"), INT(-1))), "~|-1|~");
    ASSERT_EQ_STR(ev(&f, UN(NEG, COL("v"))), "~|-1|~");
    ASSERT_EQ_STR(ev(&f, BIN(ADD, COL("w"), COL("v"))), "~|8|~");
    /* no bitmap but nulls: the validator refuses it; internally all null when null_count says so,
     * else a bad array */
    bufs[0] = NULL;
    ASSERT_CONTAINS(ev(&f, BIN(ADD, COL("v"), INT(1))), "ERR MARBLE_ERR_INVALID_ARGUMENT");
    marble__bound *bd;
    marble_expr *e = BIN(ADD, COL("v"), INT(1));
    CHECK_OK(marble__expr_bind(e, &f.schema, &bd, &err));
    marble__vec v;
    marble__vec_init(&v);
    ASSERT_EQ_INT(marble__expr_eval(bd, &f.batch, NULL, 3, &v, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_STR(err.message, "column 'v' has 2 nulls but no validity bitmap");
    col.null_count = 3;
    CHECK_OK(marble__expr_eval(bd, &f.batch, NULL, 3, &v, &err));
    ASSERT_TRUE(v.valid && !v.valid[0] && !v.valid[1] && !v.valid[2]);
    marble__vec_free(&v);
    marble__bound_free(bd);
    marble_expr_free(e);
    f.batch.release = NULL;
    marble_batch_builder_destroy(f.b);
    marble_arrow_schema_release(&f.schema);
}

TEST(three_valued_logic)
{
    tbatch t;
    tb_begin(&t, "p:b,q:b");
    tb_col(&t, 0, "t|t|t|f|f|f|~|~|~");
    tb_col(&t, 1, "t|f|~|t|f|~|t|f|~");
    tb_end(&t);
    ASSERT_EQ_STR(ev(&t, BIN(AND, COL("p"), COL("q"))), "t|f|~|f|f|f|~|f|~");
    ASSERT_EQ_STR(ev(&t, BIN(OR, COL("p"), COL("q"))), "t|t|t|t|f|~|t|~|~");
    ASSERT_EQ_STR(ev(&t, UN(NOT, COL("p"))), "f|f|f|t|t|t|~|~|~");
    ASSERT_EQ_STR(ev(&t, UN(IS_NULL, COL("p"))), "f|f|f|f|f|f|t|t|t");
    ASSERT_EQ_STR(ev(&t, UN(IS_NOT_NULL, COL("q"))), "t|t|f|t|t|f|t|t|f");
    ASSERT_EQ_STR(ev(&t, UN(IS_NULL, BIN(AND, COL("p"), COL("q")))), "f|f|t|f|f|f|t|f|t");
    ASSERT_EQ_STR(ev(&t, UN(IS_NOT_NULL, BIN(OR, COL("p"), COL("q")))), "t|t|t|t|t|f|t|f|f");
    ASSERT_EQ_STR(ev(&t, UN(NOT, BIN(AND, COL("p"), COL("q")))), "f|t|~|t|t|t|~|t|~");
    ASSERT_EQ_STR(ev(&t, BIN(AND, COL("p"), NUL)), "~|~|~|f|f|f|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(OR, NUL, COL("p"))), "t|t|t|~|~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(AND, COL("p"), BOOL(1))), "t|t|t|f|f|f|~|~|~");
    ASSERT_EQ_STR(ev(&t, BIN(OR, COL("p"), BOOL(1))), "t|t|t|t|t|t|t|t|t");
    ASSERT_EQ_STR(ev(&t, BIN(OR, BOOL(0), COL("q"))), "t|f|~|t|f|~|t|f|~");
    ASSERT_EQ_STR(ev(&t, UN(NOT, NUL)), "~|~|~|~|~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, UN(IS_NULL, NUL)), "t|t|t|t|t|t|t|t|t");
    ASSERT_EQ_STR(ev(&t, BOOL(1)), "t|t|t|t|t|t|t|t|t");
    ASSERT_EQ_STR(ev(&t, BOOL(0)), "f|f|f|f|f|f|f|f|f");
    /* chains, deep on either side */
    marble_expr *l = COL("p"), *r = COL("p");
    for (int i = 0; i < 50; i++) {
        l = BIN(AND, l, BIN(OR, COL("q"), BOOL(1)));
        r = BIN(OR, BIN(AND, COL("q"), BOOL(0)), r);
    }
    ASSERT_EQ_STR(ev(&t, l), "t|t|t|f|f|f|~|~|~");
    ASSERT_EQ_STR(ev(&t, r), "t|t|t|f|f|f|~|~|~");
    tb_free(&t);
}

static void replace(marble_expr **list, int i, marble_expr *e)
{
    marble_expr_free(list[i]);
    list[i] = e;
}

TEST(in_lists)
{
    tbatch t;
    tb_begin(&t, "x:l,d:g,s:u,b:b");
    tb_col(&t, 0, "1|2|3|~|5|-0");
    tb_col(&t, 1, "1|2.5|-0|~|nan|3");
    tb_col(&t, 2, "a|ab|~|b||zz");
    tb_col(&t, 3, "t|f|~|t|f|t");
    tb_end(&t);
    ASSERT_EQ_STR(ev(&t, in_list(COL("x"), 0, 2, INT(1), INT(3))), "t|f|t|~|f|f");
    ASSERT_EQ_STR(ev(&t, in_list(COL("x"), 1, 2, INT(1), INT(3))), "f|t|f|~|t|t");
    ASSERT_EQ_STR(ev(&t, in_list(COL("x"), 0, 2, INT(1), NUL)), "t|~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, in_list(COL("x"), 1, 2, INT(1), NUL)), "f|~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, in_list(COL("x"), 0, 0)), "f|f|f|~|f|f");
    ASSERT_EQ_STR(ev(&t, in_list(COL("x"), 1, 0)), "t|t|t|~|t|t");
    ASSERT_EQ_STR(ev(&t, in_list(COL("x"), 0, 3, DBL(2.0), DBL(3.5), INT(0))), "f|t|f|~|f|t");
    ASSERT_EQ_STR(ev(&t, in_list(NUL, 0, 2, INT(1), INT(3))), "~|~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, in_list(BIN(ADD, COL("x"), INT(1)), 0, 2, INT(3), INT(6))), "f|t|f|~|t|f");
    ASSERT_EQ_STR(ev(&t, in_list(COL("d"), 0, 3, DBL(2.5), DBL(0), DBL(NAN))), "f|t|t|~|f|f");
    ASSERT_EQ_STR(ev(&t, in_list(COL("d"), 1, 2, INT(1), INT(3))), "f|t|t|~|t|f");
    ASSERT_EQ_STR(ev(&t, in_list(COL("s"), 0, 3, STR("ab"), STR(""), STR("zz"))), "f|t|~|f|t|t");
    ASSERT_EQ_STR(ev(&t, in_list(COL("s"), 1, 2, STR("a"), NUL)), "f|~|~|~|~|~");
    ASSERT_EQ_STR(ev(&t, in_list(COL("b"), 0, 1, BOOL(1))), "t|f|~|t|f|t");
    ASSERT_EQ_STR(ev(&t, in_list(COL("b"), 1, 2, BOOL(0), BOOL(0))), "t|f|~|t|f|t");

    /* long lists use a hash set */
    marble_expr *list[40];
    for (int i = 0; i < 40; i++)
        list[i] = INT(i * 2 + 1 + (i == 39 ? 0 : 100));
    ASSERT_EQ_STR(ev(&t, marble_expr_in(COL("x"), list, 40, 0)), "f|f|f|~|f|f");
    for (int i = 0; i < 40; i++)
        list[i] = INT(i % 5 == 0 ? -i : i * 1000);
    replace(list, 7, INT(3));
    replace(list, 8, NUL);
    ASSERT_EQ_STR(ev(&t, marble_expr_in(COL("x"), list, 40, 0)), "~|~|t|~|~|t");
    for (int i = 0; i < 40; i++)
        list[i] = INT(i * 1000 + 7);
    replace(list, 3, INT(5));
    ASSERT_EQ_STR(ev(&t, marble_expr_in(COL("x"), list, 40, 1)), "t|t|t|~|f|t");
    for (int i = 0; i < 40; i++)
        list[i] = DBL(i + 0.25);
    replace(list, 0, DBL(-0.0));
    replace(list, 1, DBL(2.5));
    replace(list, 2, DBL(NAN));
    ASSERT_EQ_STR(ev(&t, marble_expr_in(COL("d"), list, 40, 0)), "f|t|t|~|f|f");
    for (int i = 0; i < 40; i++) {
        char s[8];
        snprintf(s, sizeof s, "k%d", i);
        list[i] = STR(s);
    }
    replace(list, 20, STR("b"));
    ASSERT_EQ_STR(ev(&t, marble_expr_in(COL("s"), list, 40, 0)), "f|f|~|t|f|f");
    tb_free(&t);
}

TEST(column_types)
{
    tbatch t;
    tb_begin(&t, "c8:c,c16:s,c32:i,u8:C,u16:S,u32:I,u64:L,f32:f,dt:tdD,ts:tsn:,lu:U,bi:z,lb:Z,"
                 "fs:w:3");
    const char *sig = "-5|0|~|100", *uns = "200|0|~|7";
    for (int c = 0; c < 3; c++)
        tb_col(&t, c, sig);
    for (int c = 3; c < 7; c++)
        tb_col(&t, c, uns);
    tb_col(&t, 7, "1.5|-0.25|~|3");
    tb_col(&t, 8, "19000|0|~|-1");
    tb_col(&t, 9, "1700000000000000000|-1|~|0");
    tb_col(&t, 10, "abc|xyz|~|");
    tb_col(&t, 11, "abc|xyz|~|");
    tb_col(&t, 12, "abc|xyz|~|");
    tb_col(&t, 13, "abc|xyz|~|aaa");
    tb_end(&t);
    const char *ints[] = {"c8", "c16", "c32"}, *uints[] = {"u8", "u16", "u32", "u64"};
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ_STR(ev(&t, BIN(ADD, COL(ints[i]), INT(1))), "-4|1|~|101");
        ASSERT_EQ_STR(ev(&t, BIN(LT, COL(ints[i]), INT(0))), "t|f|~|f");
        ASSERT_EQ_STR(ev(&t, BIN(LT, COL(ints[i]), DBL(0.5))), "t|t|~|f");
        ASSERT_EQ_STR(ev(&t, BIN(GE, COL(ints[i]), INT(-5))), "t|t|~|t");
        ASSERT_EQ_STR(ev(&t, COL(ints[i])), sig);
    }
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ_STR(ev(&t, BIN(SUB, COL(uints[i]), INT(1))), "199|-1|~|6");
        ASSERT_EQ_STR(ev(&t, BIN(GT, COL(uints[i]), INT(150))), "t|f|~|f");
        ASSERT_EQ_STR(ev(&t, BIN(EQ, COL(uints[i]), INT(7))), "f|f|~|t");
        ASSERT_EQ_STR(ev(&t, COL(uints[i])), uns);
    }
    ASSERT_EQ_STR(ev(&t, BIN(MUL, COL("f32"), INT(2))), "3|-0.5|~|6");
    ASSERT_EQ_STR(ev(&t, BIN(GT, COL("f32"), DBL(1.25))), "t|f|~|t");
    ASSERT_EQ_STR(ev(&t, BIN(LT, COL("f32"), INT(0))), "f|t|~|f");
    ASSERT_EQ_STR(ev(&t, COL("f32")), "1.5|-0.25|~|3");
    ASSERT_EQ_STR(ev(&t, BIN(ADD, COL("dt"), INT(1))), "19001|1|~|0");
    ASSERT_EQ_STR(ev(&t, BIN(GE, COL("dt"), INT(0))), "t|t|~|f");
    ASSERT_EQ_STR(ev(&t, BIN(DIV, COL("ts"), INT(1000000000))), "1700000000|0|~|0");
    ASSERT_EQ_STR(ev(&t, BIN(LT, COL("ts"), INT(0))), "f|t|~|f");
    ASSERT_EQ_STR(ev(&t, BIN(LT, COL("ts"), DBL(0.5))), "f|t|~|t");
    ASSERT_EQ_STR(ev(&t, COL("ts")), "1700000000000000000|-1|~|0");
    const char *strs[] = {"lu", "bi", "lb"};
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ_STR(ev(&t, BIN(GT, COL(strs[i]), STR("b"))), "f|t|~|f");
        ASSERT_EQ_STR(ev(&t, BIN(EQ, COL(strs[i]), STR("xyz"))), "f|t|~|f");
        ASSERT_EQ_STR(ev(&t, BIN(NE, STR(""), COL(strs[i]))), "t|t|~|f");
        ASSERT_EQ_STR(ev(&t, BIN(EQ, COL(strs[i]), COL("fs"))), "t|t|~|f");
        ASSERT_EQ_STR(ev(&t, in_list(COL(strs[i]), 0, 1, STR(""))), "f|f|~|t");
        ASSERT_EQ_STR(ev(&t, COL(strs[i])), "abc|xyz|~|");
    }
    ASSERT_EQ_STR(ev(&t, BIN(EQ, COL("fs"), STR("xyz"))), "f|t|~|f");
    ASSERT_EQ_STR(ev(&t, UN(IS_NULL, COL("fs"))), "f|f|t|f");
    tb_free(&t);
}

/* Shifts every child by `child_off` rows and the batch by `batch_off` rows. */
static void slice(tbatch *t, int64_t child_off, int64_t batch_off, int unknown_nulls)
{
    for (int64_t c = 0; c < t->batch.n_children; c++) {
        struct ArrowArray *a = t->batch.children[c];
        a->offset += child_off;
        a->length -= child_off;
        if (strcmp(t->schema.children[c]->format, "n") == 0)
            a->null_count = a->length;
        else if (unknown_nulls && a->null_count)
            a->null_count = -1;
    }
    t->batch.offset += batch_off;
    t->batch.length -= child_off + batch_off;
}

TEST(offsets_and_unknown_null_counts)
{
    for (int variant = 0; variant < 4; variant++) {
        tbatch t;
        tb_begin(&t, "i:l,d:g,s:u,b:b,c:i,f:f");
        tb_col(&t, 0, "9|9|9|1|~|3|4|~|6|7|8|9");
        tb_col(&t, 1, "9|9|9|0.5|1.5|~|4|5|6.5|~|8|9");
        tb_col(&t, 2, "z|z|z|a|~|c|dd|e|~|g|h|i");
        tb_col(&t, 3, "f|f|f|t|f|~|t|t|f|t|~|t");
        tb_col(&t, 4, "9|9|9|1|~|3|4|~|6|7|8|9");
        tb_col(&t, 5, "9|9|9|0.5|1.5|~|4|5|6.5|~|8|9");
        tb_end(&t);
        /* rows 3..11 are visible: via child offsets, the batch offset, or both */
        if (variant == 0) slice(&t, 3, 0, 0);
        if (variant == 1) slice(&t, 0, 3, 0);
        if (variant == 2) slice(&t, 1, 2, 1);
        if (variant == 3) slice(&t, 2, 1, 1);
        ASSERT_EQ_INT(t.batch.length, 9);
        ASSERT_EQ_STR(ev(&t, COL("i")), "1|~|3|4|~|6|7|8|9");
        ASSERT_EQ_STR(ev(&t, COL("s")), "a|~|c|dd|e|~|g|h|i");
        ASSERT_EQ_STR(ev(&t, COL("b")), "t|f|~|t|t|f|t|~|t");
        ASSERT_EQ_STR(ev(&t, BIN(MUL, COL("i"), INT(2))), "2|~|6|8|~|12|14|16|18");
        ASSERT_EQ_STR(ev(&t, BIN(GT, COL("i"), INT(5))), "f|~|f|f|~|t|t|t|t");
        ASSERT_EQ_STR(ev(&t, BIN(GT, COL("c"), INT(5))), "f|~|f|f|~|t|t|t|t");
        ASSERT_EQ_STR(ev(&t, BIN(GT, COL("c"), DBL(5.5))), "f|~|f|f|~|t|t|t|t");
        ASSERT_EQ_STR(ev(&t, BIN(LE, COL("d"), DBL(4))), "t|t|~|t|f|f|~|f|f");
        ASSERT_EQ_STR(ev(&t, BIN(LE, COL("f"), DBL(4))), "t|t|~|t|f|f|~|f|f");
        ASSERT_EQ_STR(ev(&t, BIN(LE, COL("d"), COL("i"))), "t|~|~|t|~|f|~|t|t");
        ASSERT_EQ_STR(ev(&t, BIN(GE, COL("s"), STR("dd"))), "f|~|f|t|t|~|t|t|t");
        ASSERT_EQ_STR(ev(&t, BIN(AND, COL("b"), BIN(GT, COL("i"), INT(3)))), "f|f|f|t|~|f|t|~|t");
        ASSERT_EQ_STR(ev(&t, UN(IS_NULL, COL("i"))), "f|t|f|f|t|f|f|f|f");
        ASSERT_EQ_STR(ev(&t, UN(IS_NOT_NULL, COL("d"))), "t|t|f|t|t|t|f|t|t");
        ASSERT_EQ_STR(ev(&t, in_list(COL("i"), 0, 2, INT(3), INT(9))), "f|~|t|f|~|f|f|f|t");
        tb_free(&t);
    }
}

TEST(select_vectors)
{
    tbatch t;
    tb_begin(&t, "id:l,v:g,k:i");
    marble_batch_builder *b = t.b;
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(marble_builder_append_int(b, 0, i, &err));
        CHECK_OK(marble_builder_append_double(b, 1, (i % 100) / 100.0, &err));
        if (i % 10 == 9)
            CHECK_OK(marble_builder_append_null(b, 2, &err));
        else
            CHECK_OK(marble_builder_append_int(b, 2, i % 10, &err));
    }
    tb_end(&t);
    marble_expr *e = BIN(AND, BIN(GT, COL("v"), DBL(0.9)),
                         BIN(AND, BIN(EQ, BIN(MOD, COL("id"), INT(7)), INT(3)),
                             in_list(COL("k"), 0, 2, INT(1), INT(2))));
    marble__bound *bd;
    CHECK_OK(marble__expr_bind(e, &t.schema, &bd, &err));
    uint32_t *sel = malloc(1000 * sizeof *sel);
    int64_t m;
    for (int round = 0; round < 3; round++) {
        CHECK_OK(marble__expr_select(bd, &t.batch, NULL, 1000, sel, &m, &err));
        int64_t want = 0;
        for (int i = 0; i < 1000; i++)
            if (i % 100 > 90 && i % 7 == 3 && (i % 10 == 1 || i % 10 == 2)) {
                ASSERT_LT_INT(want, m);
                ASSERT_EQ_INT(sel[want], i);
                want++;
            }
        ASSERT_EQ_INT(m, want);
    }
    marble__bound_free(bd);
    marble_expr_free(e);

    /* evaluation over a selection is dense */
    e = BIN(ADD, COL("id"), COL("k"));
    CHECK_OK(marble__expr_bind(e, &t.schema, &bd, &err));
    uint32_t pick[4] = {999, 5, 19, 5};
    marble__vec v;
    marble__vec_init(&v);
    CHECK_OK(marble__expr_eval(bd, &t.batch, pick, 4, &v, &err));
    ASSERT_EQ_INT(v.kind, MARBLE_DATUM_INT);
    ASSERT_EQ_INT(v.n, 4);
    ASSERT_NOT_NULL(v.valid);
    ASSERT_EQ_INT(v.valid[0], 0);
    ASSERT_EQ_INT(v.valid[2], 0);
    ASSERT_EQ_INT(v.i[1], 10);
    ASSERT_EQ_INT(v.i[3], 10);
    /* storage is reused once grown */
    void *mem = v.mem;
    CHECK_OK(marble__expr_eval(bd, &t.batch, pick, 3, &v, &err));
    ASSERT_EQ_PTR(v.mem, mem);
    ASSERT_EQ_INT(marble__expr_eval(bd, &t.batch, NULL, 1001, &v, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    marble__vec_free(&v);
    marble__bound_free(bd);
    marble_expr_free(e);
    free(sel);
    tb_free(&t);
}

TEST(vec_to_arrow)
{
    marble__vec v;
    marble__vec_init(&v);
    CHECK_OK(marble__vec_reset(&v, MARBLE_DATUM_BOOL, 11, &err));
    uint8_t *valid = marble__vec_valid(&v);
    for (int k = 0; k < 11; k++) {
        v.b[k] = (uint8_t)(k % 3 == 0);
        valid[k] = k != 4;
    }
    struct ArrowArray a;
    char out[256];
    CHECK_OK(marble__vec_to_arrow(&v, &a, &err));
    ASSERT_EQ_INT(a.null_count, 1);
    render("b", &a, out, sizeof out);
    ASSERT_EQ_STR(out, "t|f|f|t|~|f|t|f|f|t|f");
    a.release(&a);
    ASSERT_NULL(a.release);

    CHECK_OK(marble__vec_reset(&v, MARBLE_DATUM_STRING, 3, &err));
    v.s[0] = (marble__str){"hello", 5};
    v.s[1] = (marble__str){NULL, 0};
    v.s[2] = (marble__str){"", 0};
    valid = marble__vec_valid(&v);
    valid[0] = 1;
    valid[1] = 0;
    valid[2] = 1;
    CHECK_OK(marble__vec_to_arrow(&v, &a, &err));
    render("u", &a, out, sizeof out);
    ASSERT_EQ_STR(out, "hello|~|");
    struct ArrowSchema s = {.format = "u", .release = noop_schema_release};
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));
    a.release(&a);

    CHECK_OK(marble__vec_reset(&v, MARBLE_DATUM_DOUBLE, 2, &err));
    v.d[0] = 0.5;
    v.d[1] = -2;
    CHECK_OK(marble__vec_to_arrow(&v, &a, &err));
    ASSERT_EQ_INT(a.null_count, 0);
    ASSERT_NULL(a.buffers[0]);
    render("g", &a, out, sizeof out);
    ASSERT_EQ_STR(out, "0.5|-2");
    a.release(&a);

    CHECK_OK(marble__vec_reset(&v, MARBLE_DATUM_INT, 0, &err));
    CHECK_OK(marble__vec_to_arrow(&v, &a, &err));
    ASSERT_EQ_INT(a.length, 0);
    a.release(&a);
    marble__vec_free(&v);
}

TEST(take_every_type)
{
    tbatch t;
    tb_begin(&t, "c8:c,c16:s,c32:i,c64:l,u8:C,u16:S,u32:I,u64:L,f32:f,f64:g,b:b,dt:tdD,ts:tsu:UTC,"
                 "u:u,lu:U,bi:z,lb:Z,fs:w:2,nn:n,nv:l");
    const char *vals[] = {"1|-2|~|4|5|6|-7|8|~|10",    "1|2|~|4|5|6|7|8|~|10",
                          "1.5|2|~|4|5|6|7|8.25|~|10", "t|f|~|t|t|f|f|t|~|f",
                          "a|bb|~|dddd||f|g|hh|~|j",   "aa|bb|~|dd|ee|ff|gg|hh|~|jj"};
    for (int c = 0; c < 4; c++)
        tb_col(&t, c, vals[0]);
    for (int c = 4; c < 8; c++)
        tb_col(&t, c, vals[1]);
    tb_col(&t, 8, vals[2]);
    tb_col(&t, 9, vals[2]);
    tb_col(&t, 10, vals[3]);
    tb_col(&t, 11, vals[0]);
    tb_col(&t, 12, vals[0]);
    for (int c = 13; c < 17; c++)
        tb_col(&t, c, vals[4]);
    tb_col(&t, 17, vals[5]);
    tb_col(&t, 18, "~|~|~|~|~|~|~|~|~|~");
    tb_col(&t, 19, "1|2|3|4|5|6|7|8|9|10");
    tb_end(&t);
    slice(&t, 1, 1, 0); /* rows 2..9 of the text */
    uint32_t sel[5] = {5, 1, 0, 3, 3};
    for (int64_t c = 0; c < t.schema.n_children; c++) {
        const struct ArrowSchema *f = t.schema.children[c];
        char full[512], got[512], want[512] = "";
        struct ArrowArray all, a;
        CHECK_OK(marble__batch_take(&t.schema, &t.batch, (int)c, NULL, t.batch.length, &all, &err));
        render(f->format, &all, full, sizeof full);
        CHECK_OK(marble__batch_take(&t.schema, &t.batch, (int)c, sel, 5, &a, &err));
        ASSERT_EQ_INT(a.length, 5);
        ASSERT_OK(marble_arrow_array_validate(f, &a, MARBLE_VALIDATE_DEFAULT, &err));
        render(f->format, &a, got, sizeof got);
        /* want: tokens sel[k] of full */
        const char *tok[16];
        size_t tlen[16];
        int nt = 0;
        for (const char *p = full;; nt++) {
            const char *e = strchr(p, '|');
            tok[nt] = p;
            tlen[nt] = e ? (size_t)(e - p) : strlen(p);
            if (!e) break;
            p = e + 1;
        }
        ASSERT_EQ_INT(nt + 1, 8);
        size_t len = 0;
        for (int k = 0; k < 5; k++)
            len += (size_t)snprintf(want + len, sizeof want - len, "%s%.*s", k ? "|" : "",
                                    (int)tlen[sel[k]], tok[sel[k]]);
        ASSERT_EQ_STR(got, want);
        if (strcmp(f->name, "nv") == 0) {
            ASSERT_EQ_INT(a.null_count, 0);
            ASSERT_NULL(a.buffers[0]);
        } else if (strcmp(f->name, "nn") == 0) {
            ASSERT_EQ_INT(a.null_count, 5);
        } else {
            ASSERT_EQ_INT(a.null_count, 1);
        }
        a.release(&a);
        all.release(&all);
    }
    ASSERT_EQ_STR(ev(&t, COL("u")), "~|dddd||f|g|hh|~|j");
    /* sel NULL takes rows 0..n of the column itself */
    struct ArrowArray a;
    char got[256];
    CHECK_OK(marble__array_take(t.schema.children[13], t.batch.children[13], NULL, 3, &a, &err));
    render("u", &a, got, sizeof got);
    ASSERT_EQ_STR(got, "bb|~|dddd");
    a.release(&a);
    tb_free(&t);
}

/* ---- randomized: vectorized vs row-at-a-time ------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int rn(int n)
{
    return (int)(rnd() % (uint64_t)n);
}

enum { K_INT, K_DBL, K_BOOL, K_STR };

static const char *const str_pool[] = {"", "a", "ab", "b", "ba", "zz", "a b"};
static const char *const int_cols[] = {"a", "b", "c", "u8"};
static const char *const dbl_cols[] = {"d", "e"};
static const char *const bool_cols[] = {"p", "q"};
static const char *const str_cols[] = {"s", "t"};

static marble_expr *gen(int kind, int depth);

static marble_expr *pool_str(void)
{
    const char *s = str_pool[rn(7)];
    return STR(s);
}

static marble_expr *gen_int_lit(void)
{
    static const int64_t special[] = {INT64_MAX, INT64_MIN, -1, 0, (int64_t)1 << 62};
    if (rn(30) == 0) return INT(special[rn(5)]);
    return INT(rn(21) - 10);
}

static marble_expr *gen_dbl_lit(void)
{
    static const double vals[] = {0.0, -0.0, 0.5, -1.25, 3.0, 1e300, 7.75};
    return DBL(vals[rn(7)]);
}

static marble_expr *gen_leaf(int kind)
{
    if (rn(12) == 0) return NUL;
    switch (kind) {
    case K_INT:
        return rn(3) ? COL(int_cols[rn(4)]) : gen_int_lit();
    case K_DBL:
        return rn(3) ? COL(dbl_cols[rn(2)]) : gen_dbl_lit();
    case K_BOOL:
        return rn(4) ? COL(bool_cols[rn(2)]) : BOOL(rn(2));
    default:
        return rn(3) ? COL(str_cols[rn(2)]) : pool_str();
    }
}

static marble_expr *gen_in(int depth)
{
    static const int kinds[3] = {K_INT, K_DBL, K_STR};
    int k = kinds[rn(3)], n = rn(k == K_INT ? 24 : 5);
    marble_expr *list[32];
    for (int i = 0; i < n; i++) {
        if (rn(10) == 0)
            list[i] = NUL;
        else if (k == K_INT)
            list[i] = rn(5) ? gen_int_lit() : gen_dbl_lit();
        else if (k == K_DBL)
            list[i] = rn(2) ? gen_dbl_lit() : gen_int_lit();
        else
            list[i] = pool_str();
    }
    int xk = k == K_STR ? K_STR : (k == K_INT ? K_INT : K_DBL);
    return marble_expr_in(gen(xk, depth - 1), list, (size_t)n, rn(2));
}

static int chaos; /* sometimes generate ill-typed operands */

static marble_expr *gen(int kind, int depth)
{
    if (chaos && rn(10) == 0) kind = rn(4);
    if (depth <= 0 || rn(10) < 3) return gen_leaf(kind);
    static const marble_expr_op arith[] = {MARBLE_OP_ADD, MARBLE_OP_SUB, MARBLE_OP_MUL,
                                           MARBLE_OP_DIV, MARBLE_OP_MOD};
    switch (kind) {
    case K_INT:
        if (rn(6) == 0) return UN(NEG, gen(K_INT, depth - 1));
        return marble_expr_binary(arith[rn(5)], gen(K_INT, depth - 1), gen(K_INT, depth - 1));
    case K_DBL: {
        if (rn(6) == 0) return UN(NEG, gen(K_DBL, depth - 1));
        int side = rn(3);
        return marble_expr_binary(arith[rn(5)], gen(side == 1 ? K_INT : K_DBL, depth - 1),
                                  gen(side == 2 ? K_INT : K_DBL, depth - 1));
    }
    case K_BOOL:
        switch (rn(8)) {
        case 0:
            return BIN(AND, gen(K_BOOL, depth - 1), gen(K_BOOL, depth - 1));
        case 1:
            return BIN(OR, gen(K_BOOL, depth - 1), gen(K_BOOL, depth - 1));
        case 2:
            return UN(NOT, gen(K_BOOL, depth - 1));
        case 3:
            return marble_expr_unary(rn(2) ? MARBLE_OP_IS_NULL : MARBLE_OP_IS_NOT_NULL,
                                     gen(rn(4), depth - 1));
        case 4:
            return gen_in(depth);
        default: {
            static const int pairs[5][2] = {
                {K_INT, K_INT}, {K_INT, K_DBL}, {K_DBL, K_DBL}, {K_STR, K_STR}, {K_BOOL, K_BOOL}};
            int p = rn(5), sw = rn(2);
            return marble_expr_binary((marble_expr_op)(MARBLE_OP_EQ + rn(6)),
                                      gen(pairs[p][sw], depth - 1), gen(pairs[p][!sw], depth - 1));
        }
        }
    default:
        return gen_leaf(K_STR);
    }
}

typedef struct rv {
    int null, k; /* k: K_* */
    int64_t i;
    double d;
    const char *s;
    size_t n;
} rv;

static int ref_err;
static const struct ArrowSchema *ref_schema;
static const struct ArrowArray *ref_batch;

static rv ref_col(const char *name, int64_t row)
{
    rv r = {0};
    for (int64_t c = 0; c < ref_schema->n_children; c++) {
        const struct ArrowSchema *f = ref_schema->children[c];
        if (strcmp(f->name, name) != 0) continue;
        struct ArrowArray a = *ref_batch->children[c];
        a.offset += ref_batch->offset;
        a.length -= ref_batch->offset;
        if (a.null_count == -1) a.null_count = 1;
        if (marble_arrow_is_null(&a, row)) {
            r.null = 1;
            return r;
        }
        switch (f->format[0]) {
        case 'g':
        case 'f':
            r.k = K_DBL;
            r.d = marble_arrow_get_double(f, &a, row);
            break;
        case 'b':
            r.k = K_BOOL;
            r.i = marble_arrow_get_int(f, &a, row);
            break;
        case 'u':
        case 'U': {
            const void *p;
            r.k = K_STR;
            marble_arrow_get_bytes(f, &a, row, &p, &r.n);
            r.s = p;
            break;
        }
        default:
            r.k = K_INT;
            r.i = marble_arrow_get_int(f, &a, row);
        }
        return r;
    }
    FAIL("no column %s", name);
}

static int num_cmp(rv a, rv b)
{
    if (a.k == K_INT && b.k == K_INT) return (a.i > b.i) - (a.i < b.i);
    double x = a.k == K_INT ? (double)a.i : a.d, y = b.k == K_INT ? (double)b.i : b.d;
    if (x != x || y != y) return 2; /* unordered */
    return (x > y) - (x < y);
}

static int any_cmp(rv a, rv b)
{
    if (a.k == K_STR) {
        size_t m = a.n < b.n ? a.n : b.n;
        int c = m ? memcmp(a.s, b.s, m) : 0;
        if (c) return c < 0 ? -1 : 1;
        return (a.n > b.n) - (a.n < b.n);
    }
    if (a.k == K_BOOL) return (a.i > b.i) - (a.i < b.i);
    return num_cmp(a, b);
}

static rv ref(const marble_expr *e, int64_t row)
{
    rv r = {0};
    switch (marble_expr_get_kind(e)) {
    case MARBLE_EXPR_COLUMN:
        return ref_col(marble_expr_get_column(e), row);
    case MARBLE_EXPR_LITERAL: {
        const marble_datum *d = marble_expr_get_literal(e);
        r.null = d->kind == MARBLE_DATUM_NULL;
        r.k = d->kind == MARBLE_DATUM_INT      ? K_INT
              : d->kind == MARBLE_DATUM_DOUBLE ? K_DBL
              : d->kind == MARBLE_DATUM_BOOL   ? K_BOOL
                                               : K_STR;
        r.i = d->i;
        r.d = d->d;
        r.s = d->s;
        r.n = d->n;
        return r;
    }
    case MARBLE_EXPR_IN: {
        rv x = ref(marble_expr_child(e, 0), row);
        if (x.null) return x;
        int match = 0, has_null = 0;
        for (size_t j = 1; j < marble_expr_num_children(e); j++) {
            rv l = ref(marble_expr_child(e, j), row);
            if (l.null)
                has_null = 1;
            else if (any_cmp(x, l) == 0)
                match = 1;
        }
        r.k = K_BOOL;
        if (!match && has_null) r.null = 1;
        r.i = match ^ marble_expr_in_negated(e);
        return r;
    }
    case MARBLE_EXPR_UNARY: {
        rv a = ref(marble_expr_child(e, 0), row);
        switch (marble_expr_get_op(e)) {
        case MARBLE_OP_IS_NULL:
            return (rv){.k = K_BOOL, .i = a.null};
        case MARBLE_OP_IS_NOT_NULL:
            return (rv){.k = K_BOOL, .i = !a.null};
        case MARBLE_OP_NOT:
            a.k = K_BOOL;
            a.i = !a.i;
            return a;
        default:
            if (a.null) return a;
            if (a.k == K_DBL) {
                a.d = -a.d;
            } else {
                if (a.i == INT64_MIN) ref_err = 1;
                a.i = (int64_t)(0 - (uint64_t)a.i);
            }
            return a;
        }
    }
    case MARBLE_EXPR_BINARY:
        break;
    }
    rv a = ref(marble_expr_child(e, 0), row), b = ref(marble_expr_child(e, 1), row);
    marble_expr_op op = marble_expr_get_op(e);
    r.k = K_BOOL;
    if (op == MARBLE_OP_AND || op == MARBLE_OP_OR) {
        int and = op == MARBLE_OP_AND;
        int fa = !a.null && a.i == !and, fb = !b.null && b.i == !and;
        if (fa || fb) {
            r.i = !and;
        } else if (a.null || b.null) {
            r.null = 1;
        } else {
            r.i = and;
        }
        return r;
    }
    if (a.null || b.null) {
        r.null = 1;
        r.k = a.k == K_DBL || b.k == K_DBL ? K_DBL : a.k;
        return r;
    }
    if (op <= MARBLE_OP_GE) {
        int c = any_cmp(a, b);
        switch (op) {
        case MARBLE_OP_EQ:
            r.i = c == 0;
            break;
        case MARBLE_OP_NE:
            r.i = c != 0;
            break;
        case MARBLE_OP_LT:
            r.i = c == -1;
            break;
        case MARBLE_OP_LE:
            r.i = c == -1 || c == 0;
            break;
        case MARBLE_OP_GT:
            r.i = c == 1;
            break;
        default:
            r.i = c == 1 || c == 0;
            break;
        }
        return r;
    }
    if (a.k == K_INT && b.k == K_INT) {
        r.k = K_INT;
        switch (op) {
        case MARBLE_OP_ADD:
            ref_err |= __builtin_add_overflow(a.i, b.i, &r.i);
            break;
        case MARBLE_OP_SUB:
            ref_err |= __builtin_sub_overflow(a.i, b.i, &r.i);
            break;
        case MARBLE_OP_MUL:
            ref_err |= __builtin_mul_overflow(a.i, b.i, &r.i);
            break;
        case MARBLE_OP_DIV:
            if (b.i == 0)
                r.null = 1;
            else if (b.i == -1)
                ref_err |= a.i == INT64_MIN, r.i = (int64_t)(0 - (uint64_t)a.i);
            else
                r.i = a.i / b.i;
            break;
        default:
            if (b.i == 0)
                r.null = 1;
            else
                r.i = b.i == -1 ? 0 : a.i % b.i;
        }
        return r;
    }
    double x = a.k == K_INT ? (double)a.i : a.d, y = b.k == K_INT ? (double)b.i : b.d;
    r.k = K_DBL;
    switch (op) {
    case MARBLE_OP_ADD:
        r.d = x + y;
        break;
    case MARBLE_OP_SUB:
        r.d = x - y;
        break;
    case MARBLE_OP_MUL:
        r.d = x * y;
        break;
    case MARBLE_OP_DIV:
        r.d = x / y;
        break;
    default:
        if (y == 0)
            r.null = 1;
        else
            r.d = fmod(x, y);
    }
    return r;
}

static int same_double(double x, double y)
{
    if (isnan(x) || isnan(y)) return isnan(x) && isnan(y);
    return memcmp(&x, &y, 8) == 0;
}

static void random_batch(tbatch *t, int rows, int sliced)
{
    tb_begin(t, "a:l,b:l,c:i,u8:C,d:g,e:f,p:b,q:b,s:u,t:U");
    marble_batch_builder *b = t->b;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < 10; c++) {
            if (rn(6) == 0) {
                CHECK_OK(marble_builder_append_null(b, c, &err));
                continue;
            }
            switch (c) {
            case 0:
            case 1:
                CHECK_OK(marble_builder_append_int(
                    b, c,
                    rn(40) == 0 ? (rn(2) ? INT64_MAX - rn(3) : INT64_MIN + rn(3)) : rn(31) - 15,
                    &err));
                break;
            case 2:
                CHECK_OK(marble_builder_append_int(b, c, rn(21) - 10, &err));
                break;
            case 3:
                CHECK_OK(marble_builder_append_int(b, c, rn(256), &err));
                break;
            case 4:
            case 5: {
                static const double dv[] = {0.0, -0.0, 0.5, 1.0, -2.25, 3.0, 1e30, -7.5};
                CHECK_OK(marble_builder_append_double(b, c, rn(8) ? dv[rn(8)] : rn(11) - 5, &err));
                break;
            }
            case 6:
            case 7:
                CHECK_OK(marble_builder_append_int(b, c, rn(2), &err));
                break;
            default: {
                const char *s = str_pool[rn(7)];
                CHECK_OK(marble_builder_append_bytes(b, c, s, strlen(s), &err));
            }
            }
        }
    tb_end(t);
    if (sliced) slice(t, 3, 2, 1);
}

static void check_value(const char *fmt, const marble_expr *e, rv want, int is_null, int64_t gi,
                        double gd, const char *gs, size_t gn, int64_t row)
{
    char text[512];
    marble_expr_to_string(e, text, sizeof text);
    if (want.null != is_null)
        FAIL("%s row %lld: null %d, reference %d", text, (long long)row, is_null, want.null);
    if (is_null) return;
    if (fmt[0] == 'g' || fmt[0] == 'f') {
        double w = want.k == K_INT ? (double)want.i : want.d;
        if (!same_double(gd, w)) FAIL("%s row %lld: %.17g vs %.17g", text, (long long)row, gd, w);
    } else if (fmt[0] == 'u' || fmt[0] == 'U') {
        if (gn != want.n || (gn && memcmp(gs, want.s, gn) != 0))
            FAIL("%s row %lld: string differs", text, (long long)row);
    } else if (gi != want.i) {
        FAIL("%s row %lld: %lld vs %lld", text, (long long)row, (long long)gi, (long long)want.i);
    }
}

TEST(random_vs_reference)
{
    rng_state = 0x9E3779B97F4A7C15ull;
    int trees = 0, errors = 0, selects = 0, ill_typed = 0;
    for (int round = 0; round < 3; round++) {
        tbatch t;
        random_batch(&t, 97 + round * 30, round == 2);
        ref_schema = &t.schema;
        ref_batch = &t.batch;
        int64_t n = t.batch.length;
        uint32_t *sel = malloc(sizeof(uint32_t) * (size_t)n),
                 *sel2 = malloc(sizeof(uint32_t) * (size_t)n);
        marble__vec v;
        marble__vec_init(&v);
        for (int it = 0; it < 1200; it++, trees++) {
            int kind = rn(10) < 6 ? K_BOOL : rn(3);
            chaos = it % 4 == 3;
            marble_expr *e = gen(kind, 1 + rn(5));
            ASSERT_NOT_NULL(e);
            const char *fmt;
            chaos = 0;
            int rc = marble_expr_check(e, &t.schema, &fmt, &err);
            if (rc != MARBLE_OK) {
                ASSERT_EQ_INT(rc, MARBLE_ERR_INVALID_ARGUMENT);
                ASSERT_CONTAINS(err.message, "cannot apply");
                ill_typed++;
                marble_expr_free(e);
                continue;
            }
            struct ArrowArray a;
            rc = marble_expr_eval(e, &t.schema, &t.batch, &a, &err);
            ref_err = 0;
            rv *want = malloc(sizeof(rv) * (size_t)n);
            for (int64_t r = 0; r < n; r++)
                want[r] = ref(e, r);
            char text[512];
            marble_expr_to_string(e, text, sizeof text);
            if (ref_err) {
                if (rc != MARBLE_ERR_LIMIT)
                    FAIL("%s: expected an overflow error, got %d", text, rc);
                ASSERT_CONTAINS(err.message, "integer overflow in");
                errors++;
                free(want);
                marble_expr_free(e);
                continue;
            }
            if (rc != MARBLE_OK) FAIL("%s: %s", text, err.message);
            struct ArrowSchema rs = {.format = fmt};
            for (int64_t r = 0; r < n; r++) {
                const void *p = NULL;
                size_t len = 0;
                if (strchr("uU", fmt[0])) marble_arrow_get_bytes(&rs, &a, r, &p, &len);
                check_value(fmt, e, want[r], marble_arrow_is_null(&a, r),
                            marble_arrow_get_int(&rs, &a, r), marble_arrow_get_double(&rs, &a, r),
                            p, len, r);
            }
            a.release(&a);
            /* a random selection: dense evaluation and filtering */
            int64_t m = 0;
            for (int64_t r = 0; r < n; r++)
                if (rn(3)) sel[m++] = (uint32_t)r;
            marble__bound *b;
            CHECK_OK(marble__expr_bind(e, &t.schema, &b, &err));
            CHECK_OK(marble__expr_eval(b, &t.batch, sel, m, &v, &err));
            ASSERT_EQ_INT(v.n, m);
            for (int64_t k = 0; k < m; k++) {
                int64_t gi = v.kind == MARBLE_DATUM_BOOL  ? v.b[k]
                             : v.kind == MARBLE_DATUM_INT ? v.i[k]
                                                          : 0;
                double gd = v.kind == MARBLE_DATUM_DOUBLE ? v.d[k] : 0;
                const char *fk = v.kind == MARBLE_DATUM_DOUBLE   ? "g"
                                 : v.kind == MARBLE_DATUM_STRING ? "u"
                                                                 : "l";
                check_value(fk, e, want[sel[k]], v.valid && !v.valid[k], gi, gd,
                            v.kind == MARBLE_DATUM_STRING ? v.s[k].p : NULL,
                            v.kind == MARBLE_DATUM_STRING ? (size_t)v.s[k].n : 0, sel[k]);
            }
            if (marble__bound_kind(b) == MARBLE_DATUM_BOOL) {
                uint32_t *exp = malloc(sizeof(uint32_t) * (size_t)(m + 1));
                int64_t ne = 0, got;
                for (int64_t k = 0; k < m; k++)
                    if (!want[sel[k]].null && want[sel[k]].i) exp[ne++] = sel[k];
                uint32_t *res = rn(2) ? sel : sel2;
                CHECK_OK(marble__expr_select(b, &t.batch, sel, m, res, &got, &err));
                if (got != ne)
                    FAIL("%s: select kept %lld rows, reference %lld", text, (long long)got,
                         (long long)ne);
                for (int64_t k = 0; k < ne; k++)
                    ASSERT_EQ_INT(res[k], exp[k]);
                free(exp);
                selects++;
            }
            marble__bound_free(b);
            free(want);
            marble_expr_free(e);
        }
        marble__vec_free(&v);
        free(sel);
        free(sel2);
        tb_free(&t);
    }
    ASSERT_GT_INT(errors, 10);
    ASSERT_GT_INT(selects, 1000);
    ASSERT_GT_INT(ill_typed, 50);
    ASSERT_EQ_INT(trees, 3600);
}

/* ---- threads --------------------------------------------------------------------------------- */

typedef struct shared_eval {
    const marble__bound *pred, *value;
    const struct ArrowArray *batch;
    int64_t want_rows, want_sum;
    int failures;
} shared_eval;

static void *eval_thread(void *arg)
{
    shared_eval *s = arg;
    marble__vec v;
    marble__vec_init(&v);
    marble_error e;
    int64_t n = s->batch->length;
    uint32_t *sel = malloc(sizeof(uint32_t) * (size_t)n);
    for (int it = 0; it < 50; it++) {
        int64_t m, sum = 0;
        if (marble__expr_select(s->pred, s->batch, NULL, n, sel, &m, &e) != MARBLE_OK ||
            marble__expr_eval(s->value, s->batch, sel, m, &v, &e) != MARBLE_OK) {
            __atomic_add_fetch(&s->failures, 1, __ATOMIC_RELAXED);
            break;
        }
        for (int64_t k = 0; k < m; k++)
            sum += v.valid && !v.valid[k] ? 0 : v.i[k];
        if (m != s->want_rows || sum != s->want_sum)
            __atomic_add_fetch(&s->failures, 1, __ATOMIC_RELAXED);
    }
    free(sel);
    marble__vec_free(&v);
    return NULL;
}

/* Bound expressions are shared by threads; each thread's temporaries are its own. */
TEST(shared_by_threads)
{
    tbatch t;
    tb_begin(&t, "id:l,k:i");
    for (int i = 0; i < 5000; i++) {
        CHECK_OK(marble_builder_append_int(t.b, 0, i, &err));
        if (i % 13 == 0)
            CHECK_OK(marble_builder_append_null(t.b, 1, &err));
        else
            CHECK_OK(marble_builder_append_int(t.b, 1, i % 10, &err));
    }
    tb_end(&t);
    marble_expr *p = BIN(OR, BIN(EQ, BIN(MOD, COL("id"), INT(7)), INT(3)),
                         in_list(BIN(ADD, COL("k"), INT(1)), 0, 2, INT(2), INT(9)));
    marble_expr *val = BIN(SUB, BIN(MUL, COL("id"), INT(2)), COL("k"));
    shared_eval s = {.batch = &t.batch};
    marble__bound *bp, *bv;
    CHECK_OK(marble__expr_bind(p, &t.schema, &bp, &err));
    CHECK_OK(marble__expr_bind(val, &t.schema, &bv, &err));
    s.pred = bp;
    s.value = bv;
    for (int i = 0; i < 5000; i++) {
        int k_null = i % 13 == 0, k = i % 10;
        if (i % 7 == 3 || (!k_null && (k + 1 == 2 || k + 1 == 9))) {
            s.want_rows++;
            s.want_sum += k_null ? 0 : 2 * i - k;
        }
    }
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ_INT(pthread_create(&th[i], NULL, eval_thread, &s), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ASSERT_EQ_INT(s.failures, 0);
    marble__bound_free(bp);
    marble__bound_free(bv);
    marble_expr_free(p);
    marble_expr_free(val);
    tb_free(&t);
}
