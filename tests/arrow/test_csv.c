/* Tests for the CSV reader: quoting, line ends, BOM, inference, every type's parsing with its
 * boundaries and failures (exact line and column), skipping bad rows, chunked input, batch
 * splitting, a randomized round trip and random-input robustness. */
#include "marble/csv.h"
#include "marble_test.h"

#include <math.h>
#include <stdlib.h>

static marble_error err;

/* ---- helpers --------------------------------------------------------------------------------- */

typedef struct mem_src {
    const char *data;
    size_t len, pos, chunk;
    int fail_at; /* > 0: the read after this many bytes fails */
} mem_src;

static int mem_read(void *ctx, void *buf, size_t cap, size_t *got, marble_error *e)
{
    mem_src *m = ctx;
    if (m->fail_at > 0 && m->pos >= (size_t)m->fail_at)
        return marble_error_set(e, MARBLE_ERR_IO, "injected read failure");
    size_t n = m->len - m->pos;
    if (n > cap) n = cap;
    if (m->chunk && n > m->chunk) n = m->chunk;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    *got = n;
    return MARBLE_OK;
}

/* A growable string. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *s, const void *p, size_t n)
{
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
        if (!s->p) FAIL("out of memory");
    }
    memcpy(s->p + s->n, p, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void sb_str(sbuf *s, const char *t)
{
    sb_add(s, t, strlen(t));
}

/* Renders batch rows as "v|v|v\n" (null: "N"; bool 0/1; floats %.17g; bytes as they are). */
static void render_batch(sbuf *s, const struct ArrowSchema *schema, const struct ArrowArray *b)
{
    char buf[64];
    for (int64_t i = 0; i < b->length; i++) {
        for (int64_t c = 0; c < schema->n_children; c++) {
            const struct ArrowSchema *cs = schema->children[c];
            const struct ArrowArray *ca = b->children[c];
            if (c) sb_str(s, "|");
            if (marble_arrow_is_null(ca, i)) {
                sb_str(s, "N");
                continue;
            }
            marble_arrow_type t;
            if (marble_arrow_type_parse(cs->format, &t, NULL)) FAIL("bad format");
            switch (t.id) {
            case MARBLE_ARROW_UINT8:
            case MARBLE_ARROW_UINT16:
            case MARBLE_ARROW_UINT32:
            case MARBLE_ARROW_UINT64:
                snprintf(buf, sizeof buf, "%" PRIu64, marble_arrow_get_uint(cs, ca, i));
                sb_str(s, buf);
                break;
            case MARBLE_ARROW_FLOAT32:
            case MARBLE_ARROW_FLOAT64:
                snprintf(buf, sizeof buf, "%.17g", marble_arrow_get_double(cs, ca, i));
                sb_str(s, buf);
                break;
            case MARBLE_ARROW_UTF8:
            case MARBLE_ARROW_LARGE_UTF8:
            case MARBLE_ARROW_BINARY:
            case MARBLE_ARROW_LARGE_BINARY:
            case MARBLE_ARROW_FIXED_SIZE_BINARY: {
                const void *p;
                size_t n;
                if (marble_arrow_get_bytes(cs, ca, i, &p, &n)) FAIL("get_bytes");
                sb_str(s, "<");
                sb_add(s, p, n);
                sb_str(s, ">");
                break;
            }
            default:
                snprintf(buf, sizeof buf, "%" PRId64, marble_arrow_get_int(cs, ca, i));
                sb_str(s, buf);
                break;
            }
        }
        sb_str(s, "\n");
    }
}

typedef struct result {
    int rc;           /* of create or of the failing next */
    char msg[256];    /* its message */
    char schema[512]; /* "name:format,..." */
    sbuf rows;
    int64_t batches;
    marble_csv_stats st;
} result;

/* Reads `text` (len bytes) through chunk-sized reads with schema (text form, NULL: inferred). */
static void read_csv(result *res, const char *text, size_t len, const char *schema_text,
                     const marble_csv_options *o, size_t chunk)
{
    memset(res, 0, sizeof *res);
    mem_src m = {text, len, 0, chunk, 0};
    marble_csv_source src = {mem_read, &m};
    struct ArrowSchema given, sch;
    memset(&given, 0, sizeof given);
    memset(&sch, 0, sizeof sch);
    if (schema_text && marble_arrow_schema_parse(schema_text, &given, &err))
        FAIL("schema '%s': %s", schema_text, err.message);
    marble_csv_reader *r = NULL;
    marble_error_clear(&err);
    res->rc = marble_csv_reader_create(&src, schema_text ? &given : NULL, o, &r, &err);
    marble_arrow_schema_release(&given);
    sb_str(&res->rows, "");
    if (res->rc != MARBLE_OK) {
        if (err.code != res->rc) FAIL("err.code %d vs rc %d", err.code, res->rc);
        snprintf(res->msg, sizeof res->msg, "%s", err.message);
        return;
    }
    if (marble_csv_reader_schema(r, &sch, &err)) FAIL("schema: %s", err.message);
    for (int64_t c = 0; c < sch.n_children; c++) {
        size_t k = strlen(res->schema);
        snprintf(res->schema + k, sizeof res->schema - k, "%s%s:%s", c ? "," : "",
                 sch.children[c]->name, sch.children[c]->format);
    }
    for (;;) {
        struct ArrowArray a;
        marble_error_clear(&err);
        int rc = marble_csv_reader_next(r, &a, &err);
        if (rc != MARBLE_OK) {
            ASSERT_NULL((void *)a.release);
            res->rc = rc;
            snprintf(res->msg, sizeof res->msg, "%s", err.message);
            /* the error sticks */
            marble_error e2 = {0};
            ASSERT_EQ_INT(marble_csv_reader_next(r, &a, &e2), rc);
            ASSERT_EQ_STR(e2.message, res->msg);
            break;
        }
        if (!a.release) break;
        if (marble_arrow_array_validate(&sch, &a, MARBLE_VALIDATE_UTF8, &err))
            FAIL("invalid batch: %s", err.message);
        ASSERT_GT_INT(a.length, 0);
        res->batches++;
        render_batch(&res->rows, &sch, &a);
        marble_arrow_array_release(&a);
    }
    marble_csv_reader_stats(r, &res->st);
    marble_csv_reader_destroy(r);
    marble_arrow_schema_release(&sch);
}

static void result_free(result *res)
{
    free(res->rows.p);
    res->rows.p = NULL;
}

/* Expects success with the given schema text (NULL: not checked) and rows; also checks that
 * 1-byte reads give the same. */
static void expect_rows(const char *text, const char *schema_text, const marble_csv_options *o,
                        const char *want_schema, const char *want_rows)
{
    result a, b;
    read_csv(&a, text, strlen(text), schema_text, o, 0);
    if (a.rc != MARBLE_OK) FAIL("reading %s: %s (%s)", text, marble_status_name(a.rc), a.msg);
    if (want_schema) ASSERT_EQ_STR(a.schema, want_schema);
    ASSERT_EQ_STR(a.rows.p, want_rows);
    read_csv(&b, text, strlen(text), schema_text, o, 1);
    ASSERT_EQ_INT(b.rc, MARBLE_OK);
    ASSERT_EQ_STR(b.schema, a.schema);
    ASSERT_EQ_STR(b.rows.p, a.rows.p);
    result_free(&a);
    result_free(&b);
}

/* Expects MARBLE_ERR_CORRUPTION with exactly this message (and the same with 1-byte reads). */
static void expect_error(const char *text, const char *schema_text, const marble_csv_options *o,
                         int want_rc, const char *want_msg)
{
    result a, b;
    read_csv(&a, text, strlen(text), schema_text, o, 0);
    if (a.rc != want_rc)
        FAIL("reading '%s': got %s (%s), expected %s", text, marble_status_name(a.rc), a.msg,
             marble_status_name(want_rc));
    ASSERT_EQ_STR(a.msg, want_msg);
    read_csv(&b, text, strlen(text), schema_text, o, 1);
    ASSERT_EQ_INT(b.rc, want_rc);
    ASSERT_EQ_STR(b.msg, want_msg);
    result_free(&a);
    result_free(&b);
}

static marble_csv_options opts(void)
{
    marble_csv_options o;
    marble_csv_options_init(&o);
    return o;
}

/* ---- tests ----------------------------------------------------------------------------------- */

TEST(csv_options_defaults_and_invalid)
{
    marble_csv_options o = opts();
    ASSERT_EQ_INT(o.delimiter, ',');
    ASSERT_EQ_INT(o.quote, '"');
    ASSERT_EQ_INT(o.header, 1);
    ASSERT_EQ_INT(o.batch_rows, 65536);
    ASSERT_EQ_STR(o.null_value, "");
    ASSERT_EQ_INT(o.skip_bad_rows, 0);
    ASSERT_EQ_INT(o.infer_rows, 1000);
    result r;
    o.delimiter = '\n';
    read_csv(&r, "a\n1\n", 4, NULL, &o, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_ERR_INVALID_ARGUMENT);
    result_free(&r);
    o = opts();
    o.quote = ',';
    read_csv(&r, "a\n1\n", 4, NULL, &o, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_ERR_INVALID_ARGUMENT);
    result_free(&r);
    o = opts();
    o.batch_rows = 0;
    read_csv(&r, "a\n1\n", 4, NULL, &o, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_ERR_INVALID_ARGUMENT);
    result_free(&r);
    o = opts();
    o.infer_rows = 0;
    read_csv(&r, "a\n1\n", 4, NULL, &o, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_ERR_INVALID_ARGUMENT);
    result_free(&r);
    o = opts();
    o.null_value = NULL;
    read_csv(&r, "a\n1\n", 4, NULL, &o, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_ERR_INVALID_ARGUMENT);
    result_free(&r);
    /* no callback, NULL out */
    marble_csv_source none = {NULL, NULL};
    marble_csv_reader *rd = NULL;
    ASSERT_EQ_INT(marble_csv_reader_create(&none, NULL, NULL, &rd, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(rd);
    marble_csv_reader_destroy(NULL);
    /* a null-typed column cannot be read */
    read_csv(&r, "a\n1\n", 4, "a:n", NULL, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(r.msg, "column 'a'");
    result_free(&r);
}

TEST(csv_quoting)
{
    expect_rows("a,b\n"
                "\"x,y\",\"he said \"\"hi\"\"\"\n"
                "\"\",plain\n"
                "\"\"\"\",\"a\"\"b\"\n"
                "q\"uote,x\"\"y\n",
                NULL, NULL, "a:u,b:u",
                "<x,y>|<he said \"hi\">\n"
                "<>|<plain>\n"
                "<\">|<a\"b>\n"
                "<q\"uote>|<x\"\"y>\n");
    /* quoted fields are never null; unquoted empty ones are */
    expect_rows("a,b\n,\"\"\n", NULL, NULL, "a:u,b:u", "N|<>\n");
    /* a quoted number still infers and parses as a number */
    expect_rows("n\n\"12\"\n3\n", NULL, NULL, "n:l", "12\n3\n");
    /* quoting off: quotes are plain characters */
    marble_csv_options o = opts();
    o.quote = 0;
    expect_rows("a,b\n\"x,y\"\n", NULL, &o, "a:u,b:u", "<\"x>|<y\">\n");
    /* other delimiter and null text */
    o = opts();
    o.delimiter = ';';
    o.null_value = "NA";
    expect_rows("a;b;c\n1,5;NA;\"NA\"\nNA;x;\n", NULL, &o, "a:u,b:u,c:u",
                "<1,5>|N|<NA>\n"
                "N|<x>|<>\n");
    /* null_in_strings off: empty is an empty string in a string column, null elsewhere */
    o = opts();
    o.null_in_strings = 0;
    expect_rows("s,i\n,\n", "s:utf8,i:int64", &o, NULL, "<>|N\n");
}

TEST(csv_line_ends_and_embedded_newlines)
{
    expect_rows("a,b\r\n1,2\r\n3,4\r\n", NULL, NULL, "a:l,b:l", "1|2\n3|4\n");
    expect_rows("a,b\r1,2\r3,4", NULL, NULL, "a:l,b:l", "1|2\n3|4\n");
    expect_rows("a,b\n1,2\n3,4", NULL, NULL, "a:l,b:l", "1|2\n3|4\n");
    expect_rows("a,b\n\"line1\r\nline2\",1\n\"x\ny\rz\",2\n", NULL, NULL, "a:u,b:l",
                "<line1\r\nline2>|1\n<x\ny\rz>|2\n");
    /* line numbers count the newlines inside quotes: the bad record starts on line 5 */
    expect_error("a,b\n\"1\n2\",1\n\"3\r\n\r\n4\",x\n", "a:utf8,b:int64", NULL,
                 MARBLE_ERR_CORRUPTION,
                 "line 4, column 2: \"x\" is not a valid int64 (column 'b')");
    expect_error("a,b\n\"1\n2\",1\n5,6\n7,x\n", "a:utf8,b:int64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 5, column 2: \"x\" is not a valid int64 (column 'b')");
    /* blank lines are skipped (more than one column) */
    expect_rows("a,b\n\n1,2\r\n\r\n3,4\n\n", NULL, NULL, "a:l,b:l", "1|2\n3|4\n");
    /* ... but are nulls in a one-column table */
    expect_rows("a\n1\n\n2\n", "a:int64", NULL, NULL, "1\nN\n2\n");
    /* a trailing delimiter is an empty last field */
    expect_rows("a,b\n1,\n", NULL, NULL, "a:l,b:u", "1|N\n");
}

TEST(csv_bom_empty_header_only)
{
    expect_rows("\xEF\xBB\xBFid,v\n1,2\n", NULL, NULL, "id:l,v:l", "1|2\n");
    expect_rows("\xEF\xBB\xBF", NULL, NULL, "", "");
    expect_rows("", NULL, NULL, "", "");
    expect_rows("", "a:int64", NULL, "a:l", "");
    expect_rows("a,b\n", NULL, NULL, "a:u,b:u", "");
    expect_rows("a,b", NULL, NULL, "a:u,b:u", "");
    expect_rows("a,b\n", "a:int64,b:utf8", NULL, "a:l,b:u", "");
    marble_csv_options o = opts();
    o.header = 0;
    expect_rows("", NULL, &o, "", "");
    expect_rows("1,x\n2,y", NULL, &o, "f0:l,f1:u", "1|<x>\n2|<y>\n");
    expect_rows("1,x\n", "a:int64,b:utf8", &o, "a:l,b:u", "1|<x>\n");
    /* an empty header name becomes f<i> */
    expect_rows("a,,c\n1,2,3\n", NULL, NULL, "a:l,f1:l,c:l", "1|2|3\n");
    result r;
    read_csv(&r, "", 0, NULL, NULL, 0);
    ASSERT_EQ_INT(r.batches, 0);
    result_free(&r);
}

TEST(csv_inference)
{
    expect_rows("i,f,m,b,s,n,e\n"
                "1,1.5,1,true,x,,-\n"
                "-2,2,2.5,FALSE,1,,\n"
                ",,,,,,\n"
                "9223372036854775807,1e3,-0,True,true,,1\n",
                NULL, NULL, "i:l,f:g,m:g,b:b,s:u,n:u,e:u",
                "1|1.5|1|1|<x>|N|<->\n"
                "-2|2|2.5|0|<1>|N|N\n"
                "N|N|N|N|N|N|N\n"
                "9223372036854775807|1000|-0|1|<true>|N|<1>\n");
    /* beyond int64: float64; bool mixed with numbers: utf8 */
    expect_rows("a,b\n9223372036854775808,1\n1,true\n", NULL, NULL, "a:g,b:u",
                "9.2233720368547758e+18|<1>\n1|<true>\n");
    /* only the first infer_rows records decide: the later "x" is then an error */
    marble_csv_options o = opts();
    o.infer_rows = 2;
    expect_error("a\n1\n2\nx\n", NULL, &o, MARBLE_ERR_CORRUPTION,
                 "line 4, column 1: \"x\" is not a valid int64 (column 'a')");
    o.infer_rows = 3;
    expect_rows("a\n1\n2\nx\n", NULL, &o, "a:u", "<1>\n<2>\n<x>\n");
    /* rows kept for inference come back in order across batches */
    o = opts();
    o.infer_rows = 5;
    o.batch_rows = 2;
    expect_rows("a\n1\n2\n3\n4\n5\n6\n7\n", NULL, &o, "a:l", "1\n2\n3\n4\n5\n6\n7\n");
    /* spaces around numbers are trimmed */
    expect_rows("a,b\n 1 , 2.5\t\n", NULL, NULL, "a:l,b:g", "1|2.5\n");
}

TEST(csv_integers)
{
    expect_rows("a,b,c,d\n-128,-32768,-2147483648,-9223372036854775808\n"
                "127,32767,2147483647,9223372036854775807\n+5,0,-0,007\n",
                "a:int8,b:int16,c:int32,d:int64", NULL, NULL,
                "-128|-32768|-2147483648|-9223372036854775808\n"
                "127|32767|2147483647|9223372036854775807\n"
                "5|0|0|7\n");
    expect_rows("a,b,c,d\n0,0,0,0\n255,65535,4294967295,18446744073709551615\n+1,-0,1,2\n",
                "a:uint8,b:uint16,c:uint32,d:uint64", NULL, NULL,
                "0|0|0|0\n255|65535|4294967295|18446744073709551615\n1|0|1|2\n");
    const char *S = "a:int8";
    expect_error("a\n1\n128\n", S, NULL, MARBLE_ERR_CORRUPTION,
                 "line 3, column 1: \"128\" is out of range for int8 (column 'a')");
    expect_error("a\n-129\n", S, NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"-129\" is out of range for int8 (column 'a')");
    expect_error("x,a\n1,abc\n", "x:int64,a:int64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 2: \"abc\" is not a valid int64 (column 'a')");
    expect_error("a\n9223372036854775808\n", "a:int64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"9223372036854775808\" is out of range for int64 "
                 "(column 'a')");
    expect_error("a\n-9223372036854775809\n", "a:int64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"-9223372036854775809\" is out of range for int64 "
                 "(column 'a')");
    expect_error("a\n99999999999999999999999\n", "a:int64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"99999999999999999999999\" is out of range for int64 "
                 "(column 'a')");
    expect_error("a\n1.5\n", "a:int32", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"1.5\" is not a valid int32 (column 'a')");
    expect_error("a\n-\n", "a:int32", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"-\" is not a valid int32 (column 'a')");
    expect_error("a\n256\n", "a:uint8", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"256\" is out of range for uint8 (column 'a')");
    expect_error("a\n-1\n", "a:uint64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"-1\" is out of range for uint64 (column 'a')");
    expect_error("a\n18446744073709551616\n", "a:uint64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"18446744073709551616\" is out of range for uint64 "
                 "(column 'a')");
    expect_error("a\n1 2\n", "a:int16", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"1 2\" is not a valid int16 (column 'a')");
    /* long values are shortened in the message */
    expect_error("a\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", "a:int64", NULL,
                 MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\" is not a valid int64 "
                 "(column 'a')");
}

TEST(csv_floats_and_bools)
{
    expect_rows("f,g\n1.5,-1.25e-1\ninf,-inf\n3.4028234663852886e38,2.5e10\n0x10,.5\n",
                "f:float32,g:float64", NULL, NULL,
                "1.5|-0.125\ninf|-inf\n3.4028234663852886e+38|25000000000\n16|0.5\n");
    result r;
    read_csv(&r, "f\nnan\n", 6, "f:float64", NULL, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_OK);
    ASSERT_EQ_STR(r.rows.p, "nan\n");
    result_free(&r);
    expect_error("f\n1e39\n", "f:float32", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"1e39\" is out of range for float32 (column 'f')");
    expect_error("f\n1.5x\n", "f:float64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"1.5x\" is not a valid float64 (column 'f')");
    expect_rows("b\ntrue\nFALSE\nTrUe\n1\n0\n\n", "b:bool", NULL, NULL, "1\n0\n1\n1\n0\nN\n");
    expect_error("b\nyes\n", "b:bool", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"yes\" is not a valid bool (column 'b')");
    expect_error("b\n2\n", "b:bool", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"2\" is not a valid bool (column 'b')");
}

TEST(csv_dates_and_timestamps)
{
    expect_rows("d\n1970-01-01\n2024-02-29\n1969-12-31\n0000-03-01\n9999-12-31\n19000\n-5\n",
                "d:date32", NULL, NULL, "0\n19782\n-1\n-719468\n2932896\n19000\n-5\n");
    expect_error("d\n2023-02-29\n", "d:date32", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"2023-02-29\" is not a valid date32 (column 'd')");
    expect_error("d\n2023-13-01\n", "d:date32", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"2023-13-01\" is not a valid date32 (column 'd')");
    expect_error("d\n2023-1-01\n", "d:date32", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"2023-1-01\" is not a valid date32 (column 'd')");
    expect_error("d\n3000000000\n", "d:date32", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"3000000000\" is out of range for date32 (column "
                 "'d')");
    expect_rows("s,ms,us,ns\n"
                "1970-01-01T00:00:01Z,1970-01-01T00:00:01.5Z,1970-01-01 00:00:00.000001,"
                "1970-01-01T00:00:00.123456789\n"
                "2024-01-02,2000-01-01T00:00:00+01:00,1969-12-31T23:59:59.5Z,"
                "2262-04-11T23:47:16.854775807Z\n"
                "-3,1500,7,1\n",
                "s:tss:,ms:tsm:,us:tsu:UTC,ns:tsn:", NULL, NULL,
                "1|1500|1|123456789\n"
                "1704153600|946681200000|-500000|9223372036854775807\n"
                "-3|1500|7|1\n");
    expect_error("t\n1970-01-01T00:00:01.5Z\n", "t:tss:", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"1970-01-01T00:00:01.5Z\" has a fraction finer than "
                 "timestamp[s] (column 't')");
    expect_error("t\n2262-04-11T23:47:16.854775808Z\n", "t:tsn:", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"2262-04-11T23:47:16.854775808Z\" is out of range for "
                 "timestamp[ns] (column 't')");
    expect_error("t\n2024-01-01T24:00:00\n", "t:tsu:", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"2024-01-01T24:00:00\" is not a valid timestamp[us] "
                 "(column 't')");
    expect_error("t\n2024-01-01T10:00\n", "t:tsu:", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"2024-01-01T10:00\" is not a valid timestamp[us] (column "
                 "'t')");
    expect_error("t\n2024-01-01T10:00:00.\n", "t:tsu:", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"2024-01-01T10:00:00.\" is not a valid timestamp[us] "
                 "(column 't')");
}

TEST(csv_strings_and_binary)
{
    expect_rows("s,l,b,w\nh\xC3\xA9llo,x,\x01\xFF,abc\n", "s:utf8,l:large_utf8,b:binary,w:w:3",
                NULL, NULL, "<h\xC3\xA9llo>|<x>|<\x01\xFF>|<abc>\n");
    /* strings are not trimmed */
    expect_rows("s\n  a  \n", "s:utf8", NULL, NULL, "<  a  >\n");
    result r;
    static const char nul[] = "b,c\n\"a\0z\",1\n";
    read_csv(&r, nul, sizeof nul - 1, "b:binary,c:int64", NULL, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_OK);
    ASSERT_EQ_INT(r.rows.n, 8);
    ASSERT_TRUE(memcmp(r.rows.p, "<a\0z>|1\n", 8) == 0);
    result_free(&r);
    expect_error("s\n\xC3\x28\n", "s:utf8", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"\xC3(\" is not valid UTF-8 for utf8 (column 's')");
    expect_error("w\nabcd\n", "w:w:3", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"abcd\" has the wrong length for fixed_size_binary[3] "
                 "(column 'w')");
    /* control characters are masked in messages */
    expect_error("a\n\"x\ny\"\n", "a:int64", NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: \"x?y\" is not a valid int64 (column 'a')");
}

TEST(csv_malformed)
{
    const char *S = "a:int64,b:utf8,c:int64";
    expect_error("a,b,c\n1,x,2\n3,\"unterminated,4\n5,y,6\n", S, NULL, MARBLE_ERR_CORRUPTION,
                 "line 3, column 2: unterminated quoted field");
    expect_error("a,b,c\n1,\"x\"y,2\n", S, NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 2: unexpected character after a closing quote");
    expect_error("a,b,c\n1,x,2,9\n", S, NULL, MARBLE_ERR_CORRUPTION,
                 "line 2, column 4: expected 3 fields, found 4");
    expect_error("a,b,c\n1,x,2\n1,x\n", S, NULL, MARBLE_ERR_CORRUPTION,
                 "line 3, column 3: expected 3 fields, found 2");
    /* the header must match the schema */
    expect_error("a,b\n1,x\n", S, NULL, MARBLE_ERR_CORRUPTION,
                 "line 1: the header has 2 fields, the schema 3 columns");
    expect_error("a,\"b\n", S, NULL, MARBLE_ERR_CORRUPTION,
                 "line 1, column 2: unterminated quoted field");
    expect_error("a,\"b\n", NULL, NULL, MARBLE_ERR_CORRUPTION,
                 "line 1, column 2: unterminated quoted field");
    /* while inferring, malformed records are reported in their turn */
    expect_error("a,b\n1,2\n3\n4,5\n", NULL, NULL, MARBLE_ERR_CORRUPTION,
                 "line 3, column 2: expected 2 fields, found 1");
    /* a record longer than max_record_bytes ends the input */
    marble_csv_options o = opts();
    o.max_record_bytes = 16;
    o.skip_bad_rows = 1;
    expect_error("a\n\"0123456789abcdefghij\"\n", "a:utf8", &o, MARBLE_ERR_CORRUPTION,
                 "line 2, column 1: record longer than 16 bytes (an unterminated quote?)");
}

TEST(csv_header_maps_by_name)
{
    expect_rows("b,a\nx,1\n", "a:int64,b:utf8", NULL, NULL, "1|<x>\n");
    /* names that do not all match: by position */
    expect_rows("x,y\n1,z\n", "a:int64,b:utf8", NULL, NULL, "1|<z>\n");
    /* duplicates: by position */
    expect_rows("a,a\n1,z\n", "a:int64,b:utf8", NULL, NULL, "1|<z>\n");
}

TEST(csv_skip_bad_rows)
{
    marble_csv_options o = opts();
    o.skip_bad_rows = 1;
    const char *text = "a,b\n"
                       "1,x\n"
                       "oops,y\n"
                       "2,\"z\"q\n"
                       "3\n"
                       "4,w,extra\n"
                       "5,\"multi\nline\"\n"
                       "300,v\n"
                       "6,\"open\n";
    for (size_t chunk = 0; chunk <= 1; chunk++) {
        result r;
        read_csv(&r, text, strlen(text), "a:int8,b:utf8", &o, chunk);
        ASSERT_EQ_INT(r.rc, MARBLE_OK);
        ASSERT_EQ_STR(r.rows.p, "1|<x>\n5|<multi\nline>\n");
        ASSERT_EQ_INT(r.st.rows, 2);
        ASSERT_EQ_INT(r.st.bad_rows, 6);
        ASSERT_EQ_INT(r.st.first_bad_line, 3);
        ASSERT_EQ_STR(r.st.first_bad_message,
                      "line 3, column 1: \"oops\" is not a valid int8 (column 'a')");
        result_free(&r);
    }
    /* also while inferring */
    result r;
    read_csv(&r, "a,b\n1,2\n3\n4,5\n", 14, NULL, &o, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_OK);
    ASSERT_EQ_STR(r.schema, "a:l,b:l");
    ASSERT_EQ_STR(r.rows.p, "1|2\n4|5\n");
    ASSERT_EQ_INT(r.st.bad_rows, 1);
    ASSERT_EQ_INT(r.st.first_bad_line, 3);
    result_free(&r);
    /* none bad */
    read_csv(&r, "a\n1\n", 4, NULL, &o, 0);
    ASSERT_EQ_INT(r.st.bad_rows, 0);
    ASSERT_EQ_INT(r.st.first_bad_line, 0);
    ASSERT_EQ_STR(r.st.first_bad_message, "");
    result_free(&r);
}

TEST(csv_batches_split)
{
    marble_csv_options o = opts();
    o.batch_rows = 3;
    sbuf text = {0}, want = {0};
    sb_str(&text, "a\n");
    for (int i = 0; i < 10; i++) {
        char line[16];
        snprintf(line, sizeof line, "%d\n", i);
        sb_str(&text, line);
        sb_str(&want, line);
    }
    result r;
    read_csv(&r, text.p, text.n, "a:int32", &o, 0);
    ASSERT_EQ_INT(r.rc, MARBLE_OK);
    ASSERT_EQ_INT(r.batches, 4);
    ASSERT_EQ_STR(r.rows.p, want.p);
    ASSERT_EQ_INT(r.st.rows, 10);
    result_free(&r);
    o.batch_rows = 5;
    read_csv(&r, text.p, text.n, "a:int32", &o, 0);
    ASSERT_EQ_INT(r.batches, 2);
    result_free(&r);
    /* exact batch sizes */
    mem_src m = {text.p, text.n, 0, 0, 0};
    marble_csv_source src = {mem_read, &m};
    marble_csv_reader *rd;
    o.batch_rows = 4;
    ASSERT_OK(marble_csv_reader_create(&src, NULL, &o, &rd, &err));
    int64_t lens[4] = {0};
    for (int i = 0; i < 4; i++) {
        struct ArrowArray a;
        ASSERT_OK(marble_csv_reader_next(rd, &a, &err));
        if (!a.release) break;
        lens[i] = a.length;
        marble_arrow_array_release(&a);
    }
    ASSERT_EQ_INT(lens[0], 4);
    ASSERT_EQ_INT(lens[1], 4);
    ASSERT_EQ_INT(lens[2], 2);
    ASSERT_EQ_INT(lens[3], 0);
    struct ArrowArray a;
    ASSERT_OK(marble_csv_reader_next(rd, &a, &err)); /* stays at the end */
    ASSERT_NULL((void *)a.release);
    marble_csv_reader_destroy(rd);
    free(text.p);
    free(want.p);
}

TEST(csv_source_errors)
{
    const char *text = "a\n1\n2\n3\n";
    mem_src m = {text, strlen(text), 0, 1, 5};
    marble_csv_source src = {mem_read, &m};
    marble_csv_reader *rd;
    struct ArrowSchema s;
    ASSERT_OK(marble_arrow_schema_parse("a:int64", &s, &err));
    ASSERT_OK(marble_csv_reader_create(&src, &s, NULL, &rd, &err));
    marble_arrow_schema_release(&s);
    struct ArrowArray a;
    marble_error_clear(&err);
    ASSERT_EQ_INT(marble_csv_reader_next(rd, &a, &err), MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, "injected");
    ASSERT_NULL((void *)a.release);
    marble_csv_reader_destroy(rd);
    /* failing during create */
    mem_src m2 = {text, strlen(text), 0, 1, 1};
    src.ctx = &m2;
    ASSERT_EQ_INT(marble_csv_reader_create(&src, NULL, NULL, &rd, &err), MARBLE_ERR_IO);
}

/* ---- randomized ------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void csv_quote_field(sbuf *s, const char *p, size_t n, int force)
{
    int q = force || n == 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] == ',' || p[i] == '"' || p[i] == '\n' || p[i] == '\r') q = 1;
    if (!q) {
        sb_add(s, p, n);
        return;
    }
    sb_str(s, "\"");
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"') sb_str(s, "\"");
        sb_add(s, p + i, 1);
    }
    sb_str(s, "\"");
}

TEST(csv_random_round_trip)
{
    static const char *pieces[] = {"a",    "b",  ",", "\"",       "\n",
                                   "\r\n", "\r", " ", "\xC3\xA9", "\xE2\x82\xAC",
                                   "x y",  "1",  "-", "true",     ";"};
    for (int iter = 0; iter < 40; iter++) {
        int rows = (int)(rnd() % 200);
        sbuf csv = {0}, want = {0};
        sb_str(&csv, "i,u,f,s,b,d,t\r\n");
        sb_str(&want, "");
        for (int r = 0; r < rows; r++) {
            char buf[64];
            /* int64 */
            if (rnd() % 8 == 0) {
                sb_str(&want, "N");
            } else {
                int64_t v = (int64_t)rnd();
                if (rnd() % 4 == 0) v = rnd() % 2 ? INT64_MIN : INT64_MAX;
                snprintf(buf, sizeof buf, "%" PRId64, v);
                sb_str(&csv, buf);
                sb_str(&want, buf);
            }
            sb_str(&csv, ",");
            sb_str(&want, "|");
            /* uint16 */
            if (rnd() % 8 == 0) {
                sb_str(&want, "N");
            } else {
                snprintf(buf, sizeof buf, "%u", (unsigned)(rnd() % 65536));
                sb_str(&csv, buf);
                sb_str(&want, buf);
            }
            sb_str(&csv, ",");
            sb_str(&want, "|");
            /* float64 */
            if (rnd() % 8 == 0) {
                sb_str(&want, "N");
            } else {
                double d = (double)(int64_t)rnd() / (double)(rnd() | 1);
                snprintf(buf, sizeof buf, "%.17g", d);
                sb_str(&csv, buf);
                sb_str(&want, buf);
            }
            sb_str(&csv, ",");
            sb_str(&want, "|");
            /* utf8 with everything CSV must quote */
            if (rnd() % 8 == 0) {
                sb_str(&want, "N");
            } else {
                sbuf s = {0};
                sb_str(&s, "");
                int k = (int)(rnd() % 6);
                for (int j = 0; j < k; j++)
                    sb_str(&s, pieces[rnd() % (sizeof pieces / sizeof *pieces)]);
                csv_quote_field(&csv, s.p, s.n, (int)(rnd() % 4 == 0));
                sb_str(&want, "<");
                sb_add(&want, s.p, s.n);
                sb_str(&want, ">");
                free(s.p);
            }
            sb_str(&csv, ",");
            sb_str(&want, "|");
            /* bool */
            if (rnd() % 8 == 0) {
                sb_str(&want, "N");
            } else {
                int b = (int)(rnd() % 2);
                sb_str(&csv, b ? (rnd() % 2 ? "true" : "TRUE") : (rnd() % 2 ? "false" : "0"));
                sb_str(&want, b ? "1" : "0");
            }
            sb_str(&csv, ",");
            sb_str(&want, "|");
            /* date32 as text */
            int64_t day = (int64_t)(rnd() % 100000) - 50000;
            {
                /* civil from days (the inverse of the reader's conversion) */
                int64_t z = day + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
                int64_t doe = z - era * 146097;
                int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
                int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
                int64_t mp = (5 * doy + 2) / 153, dd = doy - (153 * mp + 2) / 5 + 1;
                int64_t mm = mp < 10 ? mp + 3 : mp - 9;
                y += mm <= 2;
                snprintf(buf, sizeof buf, "%04d-%02d-%02d", (int)y, (int)mm, (int)dd);
                sb_str(&csv, buf);
                snprintf(buf, sizeof buf, "%" PRId64, day);
                sb_str(&want, buf);
            }
            sb_str(&csv, ",");
            sb_str(&want, "|");
            /* timestamp[ms] as an integer */
            snprintf(buf, sizeof buf, "%" PRId64, (int64_t)(rnd() % 4000000000000ull));
            sb_str(&csv, buf);
            sb_str(&want, buf);
            sb_str(&csv, rnd() % 2 ? "\n" : "\r\n");
            sb_str(&want, "\n");
        }
        const char *S = "i:int64,u:uint16,f:float64,s:utf8,b:bool,d:date32,t:timestamp[ms]";
        marble_csv_options o = opts();
        o.batch_rows = 1 + (int64_t)(rnd() % 50);
        result a, b;
        read_csv(&a, csv.p, csv.n, S, &o, 0);
        if (a.rc != MARBLE_OK) FAIL("iteration %d: %s", iter, a.msg);
        ASSERT_EQ_STR(a.rows.p, want.p);
        ASSERT_EQ_INT(a.st.rows, rows);
        read_csv(&b, csv.p, csv.n, S, &o, 1 + rnd() % 7);
        ASSERT_EQ_INT(b.rc, MARBLE_OK);
        ASSERT_EQ_STR(b.rows.p, want.p);
        result_free(&a);
        result_free(&b);
        free(csv.p);
        free(want.p);
    }
}

TEST(csv_small_reads_match_large)
{
    const char *text = "\xEF\xBB\xBFi,s,f\r\n1,\"a,\"\"b\"\"\r\nc\",2.5\r\n,,\r\n\r\n"
                       "3,\"\",-1e3\n4,plain,7";
    result big, one;
    read_csv(&big, text, strlen(text), NULL, NULL, 0);
    ASSERT_EQ_INT(big.rc, MARBLE_OK);
    ASSERT_EQ_STR(big.schema, "i:l,s:u,f:g");
    ASSERT_EQ_STR(big.rows.p, "1|<a,\"b\"\r\nc>|2.5\nN|N|N\n3|<>|-1000\n4|<plain>|7\n");
    for (size_t chunk = 1; chunk < 8; chunk++) {
        read_csv(&one, text, strlen(text), NULL, NULL, chunk);
        ASSERT_EQ_INT(one.rc, MARBLE_OK);
        ASSERT_EQ_STR(one.schema, big.schema);
        ASSERT_EQ_STR(one.rows.p, big.rows.p);
        result_free(&one);
    }
    result_free(&big);
    /* a large input (several 64 KiB buffers) with records across buffer boundaries */
    sbuf t = {0};
    sb_str(&t, "k,v\n");
    for (int i = 0; i < 20000; i++) {
        char line[64];
        snprintf(line, sizeof line, "%d,\"v%d\nx\"\n", i, i);
        sb_str(&t, line);
    }
    read_csv(&big, t.p, t.n, NULL, NULL, 0);
    read_csv(&one, t.p, t.n, NULL, NULL, 1);
    ASSERT_EQ_INT(big.rc, MARBLE_OK);
    ASSERT_EQ_INT(big.st.rows, 20000);
    ASSERT_EQ_STR(one.rows.p, big.rows.p);
    result_free(&big);
    result_free(&one);
    free(t.p);
}

TEST(csv_random_bytes_never_crash)
{
    static const char alphabet[] = ",\"\n\r;a1.-eE9 \t\xEF\xBB\xBF\xC3\xFF";
    const char *schemas[] = {NULL, "a:int8,b:utf8", "a:float32,b:bool,c:date32",
                             "t:timestamp[ns],b:binary", "x:uint64"};
    char buf[512];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = rnd() % sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = rnd() % 4 == 0 ? (char)rnd() : alphabet[rnd() % (sizeof alphabet - 1)];
        marble_csv_options o = opts();
        o.header = (int)(rnd() % 2);
        o.skip_bad_rows = (int)(rnd() % 2);
        o.batch_rows = 1 + (int64_t)(rnd() % 8);
        o.infer_rows = 1 + (int64_t)(rnd() % 8);
        if (rnd() % 4 == 0) o.max_record_bytes = 16 + rnd() % 64;
        if (rnd() % 8 == 0) o.quote = 0;
        result r;
        read_csv(&r, buf, n, schemas[rnd() % 5], &o, rnd() % 3);
        ASSERT_TRUE(r.rc == MARBLE_OK || r.rc == MARBLE_ERR_CORRUPTION);
        if (r.rc == MARBLE_ERR_CORRUPTION && !strstr(r.msg, "line "))
            FAIL("message without a line: %s", r.msg);
        result_free(&r);
    }
}

TEST(csv_mutated_input_never_crashes)
{
    static const char base[] = "\xEF\xBB\xBFi,s,f,b,d,t\r\n"
                               "1,\"a,\"\"b\"\"\r\nc\",2.5,true,2024-02-29,2024-01-01T00:00:00.5Z\n"
                               "-9223372036854775808,plain,-1e3,0,19000,17\n"
                               ",,,,,\n"
                               "3,\"\",inf,FALSE,1970-01-01,1970-01-01 00:00:01+01:00";
    static const char special[] = ",\"\r\n\xEF\xBB\xBF\xC3 -.:TZ0";
    const char *schemas[] = {NULL, "i:int64,s:utf8,f:float64,b:bool,d:date32,t:timestamp[ms]",
                             "i:int8,s:binary,f:float32,b:utf8,d:int32,t:timestamp[ns]"};
    char buf[sizeof base * 2];
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = sizeof base - 1;
        memcpy(buf, base, n);
        int edits = 1 + (int)(rnd() % 6);
        for (int k = 0; k < edits && n > 0; k++) {
            size_t at = rnd() % n;
            char ch = rnd() % 2 ? special[rnd() % (sizeof special - 1)] : (char)rnd();
            switch (rnd() % 3) {
            case 0:
                buf[at] = ch;
                break;
            case 1:
                if (n + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = ch;
                    n++;
                }
                break;
            default:
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
                break;
            }
        }
        marble_csv_options o = opts();
        o.skip_bad_rows = (int)(rnd() % 2);
        o.batch_rows = 1 + (int64_t)(rnd() % 3);
        o.infer_rows = 1 + (int64_t)(rnd() % 4);
        result a, b;
        const char *schema = schemas[rnd() % 3];
        read_csv(&a, buf, n, schema, &o, 0);
        ASSERT_TRUE(a.rc == MARBLE_OK || a.rc == MARBLE_ERR_CORRUPTION);
        /* 1-byte reads give the same outcome */
        read_csv(&b, buf, n, schema, &o, 1);
        ASSERT_EQ_INT(b.rc, a.rc);
        ASSERT_EQ_STR(b.msg, a.msg);
        ASSERT_EQ_STR(b.schema, a.schema);
        ASSERT_EQ_INT(b.rows.n, a.rows.n);
        ASSERT_TRUE(memcmp(b.rows.p, a.rows.p, a.rows.n) == 0);
        ASSERT_EQ_INT(b.st.bad_rows, a.st.bad_rows);
        result_free(&a);
        result_free(&b);
    }
}
