/* Tests of the SELECT parser, marble_query_to_sql and the structured query API. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/db.h"
#include "marble/query.h"
#include "marble_test.h"
#include "query/query_internal.h"

/* Parses sql, checks that to_sql parses back to the same text, returns to_sql (free it). */
static char *roundtrip(const char *sql)
{
    marble_error err = {0};
    marble_query *q = NULL;
    if (marble_query_parse(sql, &q, &err)) FAIL("parse(%s): %s", sql, err.message);
    char *a = marble_query_to_sql(q);
    ASSERT_NOT_NULL(a);
    marble_query *q2 = NULL;
    if (marble_query_parse(a, &q2, &err)) FAIL("reparse(%s): %s", a, err.message);
    char *b = marble_query_to_sql(q2);
    ASSERT_EQ_STR(a, b);
    marble_free(b);
    marble_query_destroy(q);
    marble_query_destroy(q2);
    return a;
}

static void expect_sql(const char *sql, const char *want)
{
    char *got = roundtrip(sql);
    ASSERT_EQ_STR(got, want);
    marble_free(got);
}

static void expect_error(const char *sql, int code, const char *msg)
{
    marble_error err = {0};
    marble_query *q = (marble_query *)(uintptr_t)1;
    int rc = marble_query_parse(sql, &q, &err);
    if (rc != code) FAIL("parse(%s): code %d, want %d (%s)", sql, rc, code, err.message);
    ASSERT_NULL(q);
    ASSERT_EQ_INT(err.code, code);
    ASSERT_CONTAINS(err.message, msg);
}

TEST(valid_forms)
{
    expect_sql("SELECT * FROM t", "SELECT * FROM t");
    expect_sql("select a, B, \"C\" from T;", "SELECT a, b, \"C\" FROM t");
    expect_sql("SELECT a AS x, b y, a + 1 z FROM t", "SELECT a AS x, b AS y, a + 1 AS z FROM t");
    expect_sql("SELECT count(*), COUNT(a), sum(b) AS s, min(c), MAX(d), avg(e + 1) FROM t",
               "SELECT COUNT(*), COUNT(a), SUM(b) AS s, MIN(c), MAX(d), AVG(e + 1) FROM t");
    expect_sql("SELECT k, sum(v) FROM t WHERE v > 0.5 GROUP BY k ORDER BY 2 DESC, k LIMIT 10",
               "SELECT k, SUM(v) FROM t WHERE v > 0.5 GROUP BY k ORDER BY 2 DESC, k LIMIT 10");
    expect_sql("SELECT a FROM t ORDER BY a ASC LIMIT 5 OFFSET 3",
               "SELECT a FROM t ORDER BY a LIMIT 5 OFFSET 3");
    expect_sql("SELECT a FROM t OFFSET 3", "SELECT a FROM t OFFSET 3");
    expect_sql("SELECT a FROM t WHERE a = 1 AND b <> 2 OR NOT c != 3 AND d <= 4",
               "SELECT a FROM t WHERE a = 1 AND b != 2 OR NOT c != 3 AND d <= 4");
    expect_sql("SELECT a FROM t WHERE (a = 1 OR b = 2) AND c IS NULL AND d IS NOT NULL",
               "SELECT a FROM t WHERE (a = 1 OR b = 2) AND c IS NULL AND d IS NOT NULL");
    expect_sql("SELECT a FROM t WHERE a IN (1, -2, 3.5, 'x''y', NULL, TRUE) AND b NOT IN (FALSE)",
               "SELECT a FROM t WHERE a IN (1, -2, 3.5, 'x''y', NULL, TRUE) AND b NOT IN (FALSE)");
    expect_sql("SELECT (a + b) * c, a - (b - c), a - b - c, -a, - -a, -(5), -5, a % 2 / 3 FROM t",
               "SELECT (a + b) * c, a - (b - c), a - b - c, -a, -(-a), -(5), -5, a % 2 / 3 FROM t");
    expect_sql("SELECT a FROM t WHERE NOT (a AND b) AND NOT NOT c",
               "SELECT a FROM t WHERE NOT (a AND b) AND NOT NOT c");
    expect_sql("SELECT a FROM t WHERE (a = b) = (c < d)",
               "SELECT a FROM t WHERE (a = b) = (c < d)");
    expect_sql("SELECT a FROM t WHERE (a + 1) IS NULL AND (a = 1) IS NOT NULL AND -a IN (1)",
               "SELECT a FROM t WHERE a + 1 IS NULL AND (a = 1) IS NOT NULL AND -a IN (1)");
    expect_sql("SELECT 1.5e3, .25, 1E-2, 0.1, 1e300, 2.0 FROM t",
               "SELECT 1500.0, 0.25, 0.01, 0.1, 1e+300, 2.0 FROM t");
    expect_sql("SELECT a FROM t WHERE a = -9223372036854775808 OR a = 9223372036854775807",
               "SELECT a FROM t WHERE a = -9223372036854775808 OR a = 9223372036854775807");
    expect_sql("SELECT \"select\", \"a\"\"b\", \"Mixed Case\", _x1 FROM \"My Table\"",
               "SELECT \"select\", \"a\"\"b\", \"Mixed Case\", _x1 FROM \"My Table\"");
    expect_sql("SELECT count FROM t -- a comment\n WHERE sum > 1",
               "SELECT count FROM t WHERE sum > 1");
    expect_sql("SELECT a, count(*) c FROM t GROUP BY a, b + 1",
               "SELECT a, COUNT(*) AS c FROM t GROUP BY a, b + 1");
    expect_sql("SELECT ALL a FROM t WHERE s = '' AND u = 'it''s'",
               "SELECT a FROM t WHERE s = '' AND u = 'it''s'");
}

TEST(literal_values)
{
    marble_error err = {0};
    marble_query *q;
    ASSERT_OK(marble_query_parse("SELECT a FROM t WHERE a = -9223372036854775808", &q, &err));
    char *sql = marble_query_to_sql(q);
    ASSERT_CONTAINS(sql, "-9223372036854775808");
    marble_free(sql);
    marble_query_destroy(q);

    marble_expr *e;
    ASSERT_OK(marble_expr_parse("-5", &e, &err));
    ASSERT_EQ_INT(marble_expr_get_kind(e), MARBLE_EXPR_LITERAL);
    ASSERT_EQ_INT(marble_expr_get_literal(e)->kind, MARBLE_DATUM_INT);
    ASSERT_EQ_INT(marble_expr_get_literal(e)->i, -5);
    marble_expr_free(e);
    ASSERT_OK(marble_expr_parse("2.5e1", &e, &err));
    ASSERT_EQ_INT(marble_expr_get_literal(e)->kind, MARBLE_DATUM_DOUBLE);
    ASSERT_TRUE(marble_expr_get_literal(e)->d == 25.0);
    marble_expr_free(e);
    ASSERT_OK(marble_expr_parse("'a''b'", &e, &err));
    ASSERT_EQ_INT(marble_expr_get_literal(e)->kind, MARBLE_DATUM_STRING);
    ASSERT_EQ_INT(marble_expr_get_literal(e)->n, 3);
    ASSERT_TRUE(!memcmp(marble_expr_get_literal(e)->s, "a'b", 3));
    marble_expr_free(e);
    ASSERT_OK(marble_expr_parse("\"Col\" + col", &e, &err));
    ASSERT_EQ_STR(marble_expr_get_column(marble_expr_child(e, 0)), "Col");
    ASSERT_EQ_STR(marble_expr_get_column(marble_expr_child(e, 1)), "col");
    marble_expr_free(e);
    ASSERT_OK(marble_expr_parse("a = 1 AND b", &e, &err));
    ASSERT_EQ_INT(marble_expr_get_op(e), MARBLE_OP_AND);
    marble_expr_free(e);
    /* precedence: OR < AND < NOT < comparison < + - < * / % < unary */
    ASSERT_OK(marble_expr_parse("NOT a = 1 + 2 * -b OR c", &e, &err));
    char buf[128];
    marble_expr_to_string(e, buf, sizeof buf);
    ASSERT_EQ_STR(buf, "((NOT (a = (1 + (2 * (-b))))) OR c)");
    marble_expr_free(e);
    ASSERT_EQ_INT(marble_expr_parse("a = 1 FROM", &e, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message,
                    "at 7: expected an operator or the end of the expression, found 'FROM'");
    ASSERT_EQ_INT(marble_expr_parse("v >", &e, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "at 4: expected an expression, found end of expression");
    ASSERT_NULL(e);
    ASSERT_EQ_INT(marble_expr_parse("sum(a) > 1", &e, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(err.message, "aggregate sum()");
}

TEST(syntax_errors)
{
    const int E = MARBLE_ERR_INVALID_ARGUMENT;
    expect_error("SELECT a, b FORM t", E, "at 13: expected FROM, found 'FORM'");
    expect_error("SELECT v FORM t", E, "at 10: expected FROM, found 'FORM'");
    expect_error("", E, "at 1: expected SELECT, found end of query");
    expect_error("SELEC a FROM t", E, "at 1: expected SELECT, found 'SELEC'");
    expect_error("SELECT", E, "at 7: expected an expression, found end of query");
    expect_error("SELECT a FROM", E, "at 14: expected a table name, found end of query");
    expect_error("SELECT a FROM t WHERE", E, "at 22: expected an expression, found end of query");
    expect_error("SELECT a FROM t WHERE a = 'abc", E, "at 27: unterminated string");
    expect_error("SELECT \"a FROM t", E, "at 8: unterminated quoted identifier");
    expect_error("SELECT \"\" FROM t", E, "at 8: empty quoted identifier");
    expect_error("SELECT a FROM t WHERE a # 1", E, "at 25: unexpected character '#'");
    expect_error("SELECT a FROM t WHERE a = 12abc", E, "at 27: malformed number");
    expect_error("SELECT a FROM t LIMIT -1", E,
                 "at 23: expected a non-negative integer, found '-'");
    expect_error("SELECT a FROM t LIMIT 1.5", E, "at 23: expected a non-negative integer");
    expect_error("SELECT a FROM t WHERE a = 9223372036854775808", E,
                 "at 27: integer 9223372036854775808 is out of range");
    expect_error("SELECT a FROM t WHERE a = -9223372036854775809", E,
                 "integer -9223372036854775809 is out of range");
    expect_error("SELECT a FROM t LIMIT 99999999999999999999", E, "out of range");
    expect_error("SELECT a FROM t GROUP a", E, "at 23: expected BY, found 'a'");
    expect_error("SELECT a FROM t t2", E,
                 "at 17: expected WHERE, GROUP BY, ORDER BY, LIMIT or the end of the query, "
                 "found 't2'");
    expect_error("SELECT a FROM t WHERE a < b < c", E, "at 29: expected GROUP BY, ORDER BY");
    expect_error("SELECT a FROM t ORDER BY a LIMIT 1 2", E,
                 "at 36: expected OFFSET or the end of the query, found '2'");
    expect_error("SELECT (a FROM t", E, "at 11: expected ')', found 'FROM'");
    expect_error("SELECT a FROM t WHERE a IN ()", E, "at 29: expected a literal, found ')'");
    expect_error("SELECT a FROM t WHERE a IN (1 2)", E, "at 31: expected ',' or ')', found '2'");
    expect_error("SELECT a FROM t WHERE a IN 1", E, "at 28: expected '(', found '1'");
    expect_error("SELECT a AS FROM t", E, "at 13: expected an alias, found 'FROM'");
    expect_error("SELECT a FROM t WHERE a IS 1", E, "at 28: expected NULL, found '1'");
    expect_error("SELECT a FROM t ORDER BY 0", E, "at 26: ORDER BY position 0 is out of range");
    expect_error("SELECT a FROM t ORDER BY", E, "at 25: expected a column name or position");
    expect_error("SELECT a, FROM t", E, "at 11: expected a select item, found 'FROM'");
    expect_error("SELECT count(a b) FROM t", E, "at 16: expected ')', found 'b'");
    expect_error("SELECT sum(*) FROM t", E, "at 12: expected an expression, found '*'");
    expect_error("SELECT a FROM t WHERE a = 1;;", E, "at 29: expected");
    expect_error("SELECT a FROM t WHERE from = 1", E,
                 "at 23: expected an expression, found 'from'");
    expect_error("SELECT a\nFROM t\nWHERE a = \x01", E, "at 27: unexpected byte 0x01");
}

TEST(unsupported_constructs)
{
    const int U = MARBLE_ERR_UNSUPPORTED;
    expect_error("SELECT a FROM t JOIN u ON t.a = u.a", U, "at 17: JOIN is not supported");
    expect_error("SELECT a FROM t LEFT JOIN u ON a = b", U, "JOIN is not supported");
    expect_error("SELECT a FROM t, u", U, "at 16: more than one table is not supported");
    expect_error("SELECT a FROM (SELECT a FROM t)", U, "at 15: subqueries are not supported");
    expect_error("SELECT a FROM t WHERE a IN (SELECT b FROM u)", U,
                 "at 29: subqueries are not supported");
    expect_error("SELECT a FROM t WHERE a = (SELECT 1 FROM u)", U, "subqueries are not supported");
    expect_error("SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u)", U, "subqueries (EXISTS)");
    expect_error("SELECT k, count(*) FROM t GROUP BY k HAVING count(*) > 1", U,
                 "at 38: HAVING is not supported");
    expect_error("SELECT a FROM t HAVING a > 1", U, "HAVING is not supported");
    expect_error("SELECT DISTINCT a FROM t", U, "at 8: DISTINCT is not supported");
    expect_error("SELECT count(DISTINCT a) FROM t", U,
                 "at 14: DISTINCT in aggregates is not supported");
    expect_error("SELECT a FROM t UNION SELECT a FROM u", U, "at 17: UNION is not supported");
    expect_error("SELECT a FROM t WHERE a > 1 EXCEPT SELECT a FROM u", U,
                 "EXCEPT is not supported");
    expect_error("SELECT sum(v) OVER (PARTITION BY k) FROM t", U,
                 "at 15: window functions are not supported");
    expect_error("SELECT lower(s) FROM t", U, "at 8: function 'lower' is not supported");
    expect_error("SELECT a FROM t WHERE upper(s) = 'A'", U, "function 'upper' is not supported");
    expect_error("SELECT sum(v) / count(*) FROM t", U,
                 "at 8: aggregates inside expressions are not supported");
    expect_error("SELECT 1 + sum(v) FROM t", U,
                 "at 12: aggregate sum() inside an expression is not supported");
    expect_error("SELECT a FROM t WHERE count(*) > 1", U,
                 "at 23: aggregate count() in WHERE is not supported");
    expect_error("SELECT a FROM t GROUP BY max(a)", U,
                 "aggregate max() in GROUP BY is not supported");
    expect_error("SELECT sum(max(v)) FROM t", U,
                 "aggregate max() inside an aggregate is not supported");
    expect_error("SELECT a FROM t WHERE a LIKE 'x%'", U, "at 25: LIKE is not supported");
    expect_error("SELECT a FROM t WHERE a NOT BETWEEN 1 AND 2", U, "BETWEEN is not supported");
    expect_error("SELECT CASE WHEN a THEN 1 END FROM t", U, "at 8: CASE is not supported");
    expect_error("SELECT CAST(a AS int) FROM t", U, "CAST is not supported");
    expect_error("SELECT a FROM t ORDER BY a + 1", U, "at 26: ORDER BY takes an output column");
    expect_error("SELECT a FROM t GROUP BY 1", U, "at 26: GROUP BY a position is not supported");
    expect_error("WITH x AS (SELECT 1) SELECT * FROM x", U, "at 1: WITH is not supported");
    expect_error("SELECT t.a FROM t", U, "at 9: qualified names");
    expect_error("SELECT a FROM s.t", U, "qualified table names");
    expect_error("SELECT a FROM t WHERE a IN (b, c)", U, "IN lists hold literals only");
    expect_error("SELECT a FROM t ORDER BY a NULLS FIRST", U, "NULLS FIRST/LAST is not supported");
}

TEST(to_sql_values)
{
    marble_error err = {0};
    marble_query *q;
    ASSERT_OK(marble_query_create("My Table", &q, &err));
    marble_expr *items[] = {
        marble_expr_double(0.1),
        marble_expr_double(-0.0),
        marble_expr_double(1e300),
        marble_expr_double(123456789.125),
        marble_expr_double(HUGE_VAL),
        marble_expr_int(INT64_MIN),
        marble_expr_unary(MARBLE_OP_NEG, marble_expr_int(5)),
        marble_expr_unary(MARBLE_OP_NEG, marble_expr_int(-5)),
        marble_expr_unary(MARBLE_OP_NEG, marble_expr_unary(MARBLE_OP_NEG, marble_expr_column("x"))),
        marble_expr_string("it's", 4),
        marble_expr_column("order"),
        marble_expr_column("a\"b"),
        marble_expr_binary(MARBLE_OP_SUB, marble_expr_column("a"), marble_expr_int(-3)),
        marble_expr_binary(MARBLE_OP_MUL, marble_expr_int(-3), marble_expr_column("a")),
    };
    size_t n = sizeof items / sizeof *items;
    for (size_t i = 0; i < n; i++) {
        ASSERT_NOT_NULL(items[i]);
        ASSERT_OK(marble_query_select(q, items[i], NULL, &err));
        marble_expr_free(items[i]);
    }
    char *sql = marble_query_to_sql(q);
    ASSERT_EQ_STR(sql, "SELECT 0.1, -0.0, 1e+300, 123456789.125, 1e999, -9223372036854775808, "
                       "-(5), -(-5), -(-x), 'it''s', \"order\", \"a\"\"b\", a - -3, -3 * a "
                       "FROM \"My Table\"");
    /* parsing gives the same expressions, including literal kinds and values */
    marble_query *q2;
    ASSERT_OK(marble_query_parse(sql, &q2, &err));
    char *sql2 = marble_query_to_sql(q2);
    ASSERT_EQ_STR(sql, sql2);
    marble_free(sql);
    marble_free(sql2);
    marble_query_destroy(q);
    marble_query_destroy(q2);
}

TEST(structured_equals_parsed)
{
    marble_error err = {0};
    marble_query *q;
    ASSERT_OK(marble_query_create("t", &q, &err));
    marble_expr *k = marble_expr_column("k");
    marble_expr *v2 =
        marble_expr_binary(MARBLE_OP_MUL, marble_expr_column("v"), marble_expr_int(2));
    ASSERT_OK(marble_query_select(q, k, NULL, &err));
    ASSERT_OK(marble_query_select_agg(q, MARBLE_AGG_SUM, v2, "s", &err));
    ASSERT_OK(marble_query_select_agg(q, MARBLE_AGG_COUNT_STAR, NULL, NULL, &err));
    marble_expr *lit[] = {marble_expr_int(1), marble_expr_int(2), marble_expr_null()};
    marble_expr *w = marble_expr_binary(
        MARBLE_OP_AND,
        marble_expr_binary(MARBLE_OP_GT, marble_expr_column("v"), marble_expr_double(0.5)),
        marble_expr_in(marble_expr_column("id"), lit, 3, 1));
    ASSERT_NOT_NULL(w);
    ASSERT_OK(marble_query_where(q, w, &err));
    marble_expr *w2 = marble_expr_unary(MARBLE_OP_IS_NOT_NULL, marble_expr_column("k"));
    ASSERT_OK(marble_query_where(q, w2, &err)); /* a second WHERE is ANDed */
    ASSERT_OK(marble_query_group_by(q, k, &err));
    ASSERT_OK(marble_query_order_by(q, "s", 0, 1, &err));
    ASSERT_OK(marble_query_order_by(q, NULL, 1, 0, &err));
    ASSERT_OK(marble_query_limit(q, 10, 5, &err));
    marble_expr_free(k);
    marble_expr_free(v2);
    marble_expr_free(w);
    marble_expr_free(w2);
    char *a = marble_query_to_sql(q);
    marble_query *p;
    ASSERT_OK(marble_query_parse("select K, Sum(v * 2) s, count(*) from T where v > 0.5 and id not "
                                 "in (1, 2, null) and k is not null group by k order by s desc, 1 "
                                 "limit 10 offset 5",
                                 &p, &err));
    char *b = marble_query_to_sql(p);
    ASSERT_EQ_STR(a, b);
    ASSERT_EQ_STR(a, "SELECT k, SUM(v * 2) AS s, COUNT(*) FROM t WHERE v > 0.5 AND id NOT IN (1, "
                     "2, NULL) AND k IS NOT NULL GROUP BY k ORDER BY s DESC, 1 LIMIT 10 OFFSET 5");
    marble_free(a);
    marble_free(b);
    marble_query_destroy(p);

    /* bad arguments */
    ASSERT_EQ_INT(marble_query_order_by(q, NULL, 0, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_query_limit(q, 1, -1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_query_select_agg(q, MARBLE_AGG_SUM, NULL, NULL, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_query_select_agg(q, (marble_agg_fn)99, NULL, NULL, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_query_select(q, NULL, NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_query_create("", &p, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble_query_destroy(q);
    marble_query_destroy(NULL);
    ASSERT_NULL(marble_query_to_sql(NULL));
}

/* ---- random round trips ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static marble_expr *random_literal(void)
{
    switch (rnd() % 6) {
    case 0:
        return marble_expr_int((int64_t)(rnd() % 2000) - 1000);
    case 1:
        return marble_expr_int((int64_t)rnd());
    case 2:
        return marble_expr_double(((double)(int64_t)rnd()) / (double)(rnd() | 1));
    case 3: {
        char s[8];
        size_t n = rnd() % 6;
        for (size_t i = 0; i < n; i++)
            s[i] = "a'\" ,()"[rnd() % 7];
        return marble_expr_string(s, n);
    }
    case 4:
        return marble_expr_bool((int)(rnd() & 1));
    default:
        return marble_expr_null();
    }
}

static marble_expr *random_expr(int depth)
{
    static const char *const cols[] = {"a", "b", "Mixed", "from", "x y", "count"};
    if (depth <= 0 || rnd() % 4 == 0)
        return rnd() % 2 ? marble_expr_column(cols[rnd() % 6]) : random_literal();
    switch (rnd() % 4) {
    case 0: {
        static const marble_expr_op un[] = {MARBLE_OP_NOT, MARBLE_OP_NEG, MARBLE_OP_IS_NULL,
                                            MARBLE_OP_IS_NOT_NULL};
        return marble_expr_unary(un[rnd() % 4], random_expr(depth - 1));
    }
    case 1: {
        marble_expr *list[4];
        size_t n = 1 + rnd() % 4;
        for (size_t i = 0; i < n; i++)
            list[i] = random_literal();
        return marble_expr_in(random_expr(depth - 1), list, n, (int)(rnd() & 1));
    }
    default: {
        marble_expr_op op =
            (marble_expr_op)(MARBLE_OP_EQ + rnd() % (MARBLE_OP_OR - MARBLE_OP_EQ + 1));
        return marble_expr_binary(op, random_expr(depth - 1), random_expr(depth - 1));
    }
    }
}

/* Same tree: same kinds, operators, columns and literal kinds/values (the fully parenthesized
 * text compares all of it, with literal kinds told apart by their spelling). */
static void same_expr(const marble_expr *a, const marble_expr *b)
{
    if (!a || !b) {
        ASSERT_TRUE(!a && !b);
        return;
    }
    char ta[4096], tb[4096];
    marble_expr_to_string(a, ta, sizeof ta);
    marble_expr_to_string(b, tb, sizeof tb);
    ASSERT_EQ_STR(ta, tb);
    ASSERT_EQ_INT(marble_expr_get_kind(a), marble_expr_get_kind(b));
    if (marble_expr_get_kind(a) == MARBLE_EXPR_LITERAL)
        ASSERT_EQ_INT(marble_expr_get_literal(a)->kind, marble_expr_get_literal(b)->kind);
    ASSERT_EQ_INT(marble_expr_num_children(a), marble_expr_num_children(b));
    for (size_t i = 0; i < marble_expr_num_children(a); i++)
        same_expr(marble_expr_child(a, i), marble_expr_child(b, i));
}

TEST(random_roundtrip)
{
    marble_error err = {0};
    for (int iter = 0; iter < 2000; iter++) {
        marble_query *q;
        ASSERT_OK(marble_query_create(iter % 3 ? "t" : "Other T", &q, &err));
        size_t items = 1 + rnd() % 3;
        for (size_t i = 0; i < items; i++) {
            marble_expr *e = random_expr(4);
            ASSERT_NOT_NULL(e);
            if (rnd() % 3 == 0)
                ASSERT_OK(marble_query_select_agg(q, (marble_agg_fn)(2 + rnd() % 5), e,
                                                  rnd() % 2 ? "al ias" : NULL, &err));
            else
                ASSERT_OK(marble_query_select(q, e, rnd() % 2 ? "x" : NULL, &err));
            marble_expr_free(e);
        }
        marble_expr *w = random_expr(5);
        ASSERT_OK(marble_query_where(q, w, &err));
        if (rnd() % 2 && marble_expr_get_kind(w) != MARBLE_EXPR_LITERAL)
            ASSERT_OK(marble_query_group_by(q, w, &err));
        if (rnd() % 2) ASSERT_OK(marble_query_order_by(q, "x", 0, (int)(rnd() & 1), &err));
        if (rnd() % 2) ASSERT_OK(marble_query_limit(q, (int64_t)(rnd() % 100), 0, &err));
        char *sql = marble_query_to_sql(q);
        marble_query *p;
        if (marble_query_parse(sql, &p, &err)) FAIL("parse(%s): %s", sql, err.message);
        char *sql2 = marble_query_to_sql(p);
        ASSERT_EQ_STR(sql, sql2);
        marble_free(sql2);
        marble_free(sql);
        ASSERT_EQ_INT(p->n_items, q->n_items);
        for (size_t i = 0; i < q->n_items; i++) {
            ASSERT_EQ_INT(p->items[i].kind, q->items[i].kind);
            ASSERT_EQ_INT(p->items[i].fn, q->items[i].fn);
            same_expr(p->items[i].e, q->items[i].e);
        }
        same_expr(p->where, q->where);
        ASSERT_EQ_INT(p->n_groups, q->n_groups);
        for (size_t i = 0; i < q->n_groups; i++)
            same_expr(p->groups[i], q->groups[i]);
        ASSERT_EQ_INT(p->limit, q->limit);
        marble_expr_free(w);
        marble_query_destroy(q);
        marble_query_destroy(p);
    }
}

/* Nesting and operator chains past the executor's limit are a clear LIMIT error, never a stack
 * overflow in the parser (or in freeing what it built); up to the limit they parse. */
static char *repeat_around(const char *pre, size_t n, const char *mid, const char *post)
{
    size_t lp = strlen(pre), lm = strlen(mid), lq = strlen(post);
    char *s = malloc(n * (lp + lq) + lm + 64);
    ASSERT_NOT_NULL(s);
    char *w = s;
    w += sprintf(w, "SELECT * FROM t WHERE ");
    for (size_t i = 0; i < n; i++, w += lp) memcpy(w, pre, lp);
    memcpy(w, mid, lm);
    w += lm;
    for (size_t i = 0; i < n; i++, w += lq) memcpy(w, post, lq);
    *w = 0;
    return s;
}

TEST(deep_expressions_are_limited)
{
    marble_error err = {0};
    marble_query *q = NULL;
    const struct {
        const char *pre, *mid, *post;
    } shapes[] = {{"(", "x = 1", ")"}, {"NOT ", "x = 1", ""}, {"- ", "x = 1", ""},
                  {"", "x", " + x"},   {"", "x = 1", " AND x = 1"}, {"", "x = 1", " OR x = 1"}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        char *ok = repeat_around(shapes[k].pre, 900, shapes[k].mid, shapes[k].post);
        if (marble_query_parse(ok, &q, &err) != MARBLE_OK) FAIL("%s...: %s", ok, err.message);
        marble_query_destroy(q);
        free(ok);
        char *deep = repeat_around(shapes[k].pre, 200000, shapes[k].mid, shapes[k].post);
        ASSERT_EQ_INT(marble_query_parse(deep, &q, &err), MARBLE_ERR_LIMIT);
        ASSERT_CONTAINS(err.message, "more than 1000 operators");
        free(deep);
    }
    marble_expr *e = NULL;
    char *deep = repeat_around("(", 100000, "1", ")");
    ASSERT_EQ_INT(marble_expr_parse(deep + strlen("SELECT * FROM t WHERE "), &e, &err),
                  MARBLE_ERR_LIMIT);
    ASSERT_NULL(e);
    free(deep);
}
