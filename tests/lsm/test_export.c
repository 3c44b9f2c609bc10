/* Tests for export (marble_export_stream, marble_db_export_table) and the CSV writer: every
 * format read back with the library's IPC and CSV readers, compressed output, quoting and value
 * formatting, cancellation and failures removing the partial file. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/db.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

static const char *SCHEMA = "id:int64!,name:utf8,v:float64";

/* A stream over n batches of `rows` rows each; get_next of batch fail_at fails. */
typedef struct vstream {
    int64_t n, rows, next, fail_at;
} vstream;

static int vs_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    (void)st;
    return marble_arrow_schema_parse(SCHEMA, out, NULL) == MARBLE_OK ? 0 : 22;
}

static int vs_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    vstream *v = st->private_data;
    memset(out, 0, sizeof *out);
    if (v->next == v->fail_at) return 5;
    if (v->next >= v->n) return 0;
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (int64_t i = 0; i < v->rows; i++) {
        int64_t id = v->next * v->rows + i;
        char name[64];
        int len = snprintf(name, sizeof name, id % 3 == 0 ? "a,\"b\"\n%" PRId64 : "n%" PRId64, id);
        CHECK_OK(marble_builder_append_int(b, 0, id, &err));
        if (id % 5 == 4)
            CHECK_OK(marble_builder_append_null(b, 1, &err));
        else
            CHECK_OK(marble_builder_append_bytes(b, 1, name, id % 7 == 1 ? 0 : (size_t)len, &err));
        CHECK_OK(marble_builder_append_double(b, 2, (double)id / 3.0, &err));
    }
    CHECK_OK(marble_batch_builder_finish(b, out, &err));
    marble_batch_builder_destroy(b);
    marble_arrow_schema_release(&s);
    v->next++;
    return 0;
}

static const char *vs_error(struct ArrowArrayStream *st)
{
    (void)st;
    return "input failed on purpose";
}

static void vs_release(struct ArrowArrayStream *st)
{
    free(st->private_data);
    st->release = NULL;
}

static void vstream_make(int64_t n, int64_t rows, struct ArrowArrayStream *out)
{
    vstream *v = calloc(1, sizeof *v);
    v->n = n;
    v->rows = rows;
    v->fail_at = -1;
    *out = (struct ArrowArrayStream){vs_schema, vs_next, vs_error, vs_release, v};
}

/* Checks batch rows against what vs_next made, from row `first`. */
static void check_rows(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t first)
{
    for (int64_t i = 0; i < a->length; i++) {
        int64_t id = first + i;
        ASSERT_EQ_INT(marble_arrow_get_int(s->children[0], a->children[0], a->offset + i), id);
        ASSERT_TRUE(marble_arrow_get_double(s->children[2], a->children[2], a->offset + i) ==
                    (double)id / 3.0);
        int null = marble_arrow_is_null(a->children[1], a->offset + i);
        ASSERT_EQ_INT(null, id % 5 == 4);
        if (null) continue;
        char name[64];
        int len = snprintf(name, sizeof name, id % 3 == 0 ? "a,\"b\"\n%" PRId64 : "n%" PRId64, id);
        if (id % 7 == 1) len = 0;
        const void *d;
        size_t n;
        ASSERT_OK(marble_arrow_get_bytes(s->children[1], a->children[1], a->offset + i, &d, &n));
        ASSERT_EQ_INT((int64_t)n, len);
        ASSERT_TRUE(n == 0 || memcmp(d, name, n) == 0);
    }
}

static void check_ipc(marble_fs *fs, const char *uri, int64_t rows)
{
    marble_error err = {0};
    void *data;
    size_t size;
    CHECK_OK(marble_fs_read_all(fs, uri, &data, &size, &err));
    marble_ipc_source src = {data, size, NULL, NULL, NULL};
    marble_ipc_reader *r;
    CHECK_OK(marble_ipc_reader_open(&src, &r, &err));
    struct ArrowSchema s;
    CHECK_OK(marble_ipc_reader_schema(r, &s, &err));
    int64_t seen = 0;
    for (int64_t b = 0; b < marble_ipc_reader_num_batches(r); b++) {
        struct ArrowArray a;
        CHECK_OK(marble_ipc_reader_read(r, b, &a, &err));
        check_rows(&s, &a, seen);
        seen += a.length;
        a.release(&a);
    }
    ASSERT_EQ_INT(seen, rows);
    s.release(&s);
    marble_ipc_reader_destroy(r);
    free(data);
}

typedef struct mem_in {
    const char *p;
    size_t n, off;
} mem_in;

static int mem_read(void *ctx, void *buf, size_t cap, size_t *got, marble_error *err)
{
    (void)err;
    mem_in *m = ctx;
    size_t k = m->n - m->off < cap ? m->n - m->off : cap;
    memcpy(buf, m->p + m->off, k);
    m->off += k;
    *got = k;
    return MARBLE_OK;
}

static void check_csv_text(const char *text, size_t len, int64_t rows)
{
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    mem_in m = {text, len, 0};
    marble_csv_source src = {mem_read, &m};
    marble_csv_reader *r;
    CHECK_OK(marble_csv_reader_create(&src, &s, NULL, &r, &err));
    int64_t seen = 0;
    for (;;) {
        struct ArrowArray a;
        CHECK_OK(marble_csv_reader_next(r, &a, &err));
        if (!a.release) break;
        check_rows(&s, &a, seen);
        seen += a.length;
        a.release(&a);
    }
    ASSERT_EQ_INT(seen, rows);
    marble_csv_reader_destroy(r);
    s.release(&s);
}

TEST(export_every_format_reads_back)
{
    marble_error err = {0};
    marble_fs *fs;
    CHECK_OK(marble_fs_create(&fs, &err));
    const char *dir = marble_test_tmpdir();
    const char *names[] = {"o.arrow", "o.arrows", "o.csv", "o.jsonl", "o.arrow.zst", "o.csv.gz"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char uri[512];
        snprintf(uri, sizeof uri, "%s/%s", dir, names[i]);
        struct ArrowArrayStream in;
        vstream_make(7, 300, &in);
        marble_export_stats st;
        CHECK_OK(marble_export_stream(fs, &in, uri, NULL, &st, &err));
        ASSERT_TRUE(in.release == NULL);
        ASSERT_EQ_INT(st.rows, 2100);
        ASSERT_EQ_INT(st.batches, 7);
        ASSERT_GT_INT(st.bytes, 0);
        void *data;
        size_t size;
        CHECK_OK(marble_fs_read_all(fs, uri, &data, &size, &err));
        const uint8_t *d = data;
        if (strstr(names[i], ".zst")) {
            ASSERT_TRUE(size > 4 && d[0] == 0x28 && d[1] == 0xb5 && d[2] == 0x2f && d[3] == 0xfd);
        } else if (strstr(names[i], ".gz")) {
            ASSERT_TRUE(size > 2 && d[0] == 0x1f && d[1] == 0x8b);
        } else if (strstr(names[i], ".arrows")) {
            check_ipc(fs, uri, 2100);
        } else if (strstr(names[i], ".arrow")) {
            ASSERT_TRUE(memcmp(d, "ARROW1", 6) == 0);
            check_ipc(fs, uri, 2100);
        } else if (strstr(names[i], ".csv")) {
            ASSERT_EQ_U64((uint64_t)st.bytes, size);
            check_csv_text(data, size, 2100);
        } else {
            /* JSON lines: one object per row */
            size_t lines = 0;
            for (size_t k = 0; k < size; k++)
                lines += d[k] == '\n';
            ASSERT_EQ_U64(lines, 2100);
            ASSERT_TRUE(memcmp(d, "{\"id\":0,\"name\":\"a,\\\"b\\\"\\n0\",\"v\":0}\n", 34) == 0);
            ASSERT_TRUE(strstr((const char *)data, "{\"id\":4,\"name\":null,") != NULL);
        }
        free(data);
        if (strstr(names[i], ".zst") || strstr(names[i], ".gz")) {
            /* decompress through the VFS and check the content */
            marble_file *f;
            CHECK_OK(marble_fs_open(fs, uri, MARBLE_OPEN_READ | MARBLE_OPEN_COMPRESSED, &f, &err));
            size_t cap = 1 << 22, got = 0;
            char *buf = malloc(cap);
            for (;;) {
                size_t k;
                CHECK_OK(marble_file_read(f, got, buf + got, cap - got, &k, &err));
                if (!k) break;
                got += k;
            }
            CHECK_OK(marble_file_close(f, &err));
            char plain[512];
            snprintf(plain, sizeof plain, "%s/plain-%zu", dir, i);
            CHECK_OK(marble_fs_write_all(fs, plain, buf, got, 0, &err));
            if (strstr(names[i], ".arrow"))
                check_ipc(fs, plain, 2100);
            else
                check_csv_text(buf, got, 2100);
            free(buf);
        }
    }
    CHECK_OK(marble_fs_destroy(fs, &err));
}

static int cancel_after_first(void *ud, int64_t rows, int64_t bytes)
{
    (void)rows;
    (void)bytes;
    marble_cancel_token_cancel(ud);
    return 0;
}

static void progress_cancel(void *ud, int64_t rows, int64_t bytes)
{
    cancel_after_first(ud, rows, bytes);
}

TEST(export_cancel_and_failure_remove_the_file)
{
    marble_error err = {0};
    marble_fs *fs;
    CHECK_OK(marble_fs_create(&fs, &err));
    const char *dir = marble_test_tmpdir();
    const char *names[] = {"c.arrow", "c.csv.zst", "c.jsonl"};
    for (size_t i = 0; i < 3; i++) {
        char uri[512];
        snprintf(uri, sizeof uri, "%s/%s", dir, names[i]);
        marble_cancel_token *tok;
        CHECK_OK(marble_cancel_token_create(NULL, &tok, &err));
        marble_export_options o;
        marble_export_options_init(&o);
        o.cancel = tok;
        o.progress = progress_cancel;
        o.progress_ud = tok;
        struct ArrowArrayStream in;
        vstream_make(50, 100, &in);
        marble_export_stats st;
        ASSERT_EQ_INT(marble_export_stream(fs, &in, uri, &o, &st, &err), MARBLE_ERR_CANCELLED);
        ASSERT_EQ_INT(st.rows, 100);
        int exists = 1;
        CHECK_OK(marble_fs_exists(fs, uri, &exists, &err));
        ASSERT_FALSE(exists);
        marble_cancel_token_destroy(tok);
        /* a failing input */
        vstream_make(50, 100, &in);
        ((vstream *)in.private_data)->fail_at = 3;
        ASSERT_EQ_INT(marble_export_stream(fs, &in, uri, NULL, NULL, &err), MARBLE_ERR_IO);
        ASSERT_CONTAINS(err.message, "failed on purpose");
        CHECK_OK(marble_fs_exists(fs, uri, &exists, &err));
        ASSERT_FALSE(exists);
        /* over an existing file: a cancelled export leaves it as it was, and no temporary */
        CHECK_OK(marble_fs_write_all(fs, uri, "old contents", 12, 0, &err));
        CHECK_OK(marble_cancel_token_create(NULL, &tok, &err));
        o.cancel = tok;
        o.progress_ud = tok;
        vstream_make(50, 100, &in);
        ASSERT_EQ_INT(marble_export_stream(fs, &in, uri, &o, NULL, &err), MARBLE_ERR_CANCELLED);
        marble_cancel_token_destroy(tok);
        void *old = NULL;
        size_t old_n = 0;
        CHECK_OK(marble_fs_read_all(fs, uri, &old, &old_n, &err));
        ASSERT_EQ_U64(old_n, 12);
        ASSERT_TRUE(memcmp(old, "old contents", 12) == 0);
        free(old);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s/.marble-export-%s", dir, names[i]);
        CHECK_OK(marble_fs_exists(fs, tmp, &exists, &err));
        ASSERT_FALSE(exists);
        /* and a complete one replaces it */
        vstream_make(50, 100, &in);
        CHECK_OK(marble_export_stream(fs, &in, uri, NULL, NULL, &err));
        CHECK_OK(marble_fs_read_all(fs, uri, &old, &old_n, &err));
        ASSERT_TRUE(old_n > 12);
        free(old);
        CHECK_OK(marble_fs_remove(fs, uri, &err));
    }
    struct ArrowArrayStream in;
    vstream_make(1, 1, &in);
    char uri[512];
    snprintf(uri, sizeof uri, "%s/x.parquet", dir);
    ASSERT_EQ_INT(marble_export_stream(fs, &in, uri, NULL, NULL, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_TRUE(in.release == NULL);
    CHECK_OK(marble_fs_destroy(fs, &err));
}

TEST(export_table_from_db)
{
    marble_error err = {0};
    const char *dir = marble_test_tmpdir();
    char db_uri[512], out[512];
    snprintf(db_uri, sizeof db_uri, "%s/db", dir);
    marble_db_options o;
    marble_db_options_init(&o);
    o.create_if_missing = 1;
    marble_db *db;
    CHECK_OK(marble_db_open(db_uri, &o, &db, &err));
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(SCHEMA, &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "t", &s, key, 1, &err));
    s.release(&s);
    struct ArrowArrayStream in;
    vstream_make(5, 200, &in);
    CHECK_OK(marble_db_ingest(db, "t", &in, NULL, NULL, &err));
    snprintf(out, sizeof out, "%s/t.arrows", dir);
    marble_export_stats st;
    CHECK_OK(marble_db_export_table(db, "t", out, NULL, &st, &err));
    ASSERT_EQ_INT(st.rows, 1000);
    marble_fs *fs;
    CHECK_OK(marble_fs_create(&fs, &err));
    check_ipc(fs, out, 1000);
    CHECK_OK(marble_fs_destroy(fs, &err));
    ASSERT_EQ_INT(marble_db_export_table(db, "nope", out, NULL, NULL, &err), MARBLE_ERR_NOT_FOUND);
    CHECK_OK(marble_db_close(db, &err));
}

/* ---- the CSV writer ---------------------------------------------------------------------------
 */

static char *csv_of(const char *schema_text, void (*fill)(marble_batch_builder *),
                    const marble_csv_write_options *o)
{
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(schema_text, &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    fill(b);
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    marble_batch_builder_destroy(b);
    marble_ipc_buffer buf = {0};
    marble_csv_writer *w;
    CHECK_OK(marble_csv_writer_create(marble_ipc_buffer_sink(&buf), &s, o, &w, &err));
    CHECK_OK(marble_csv_writer_write(w, &a, &err));
    CHECK_OK(marble_csv_writer_finish(w, &err));
    marble_csv_writer_destroy(w);
    a.release(&a);
    s.release(&s);
    char *t = malloc(buf.size + 1);
    memcpy(t, buf.data, buf.size);
    t[buf.size] = 0;
    free(buf.data);
    return t;
}

static void fill_quoting(marble_batch_builder *b)
{
    marble_error err = {0};
    const char *vals[] = {"plain", "a,b", "say \"hi\"", "line\nbreak", "cr\rx", "", " pad ", "\""};
    for (int i = 0; i < 8; i++) {
        CHECK_OK(marble_builder_append_int(b, 0, i, &err));
        CHECK_OK(marble_builder_append_bytes(b, 1, vals[i], strlen(vals[i]), &err));
    }
    CHECK_OK(marble_builder_append_int(b, 0, 8, &err));
    CHECK_OK(marble_builder_append_null(b, 1, &err));
}

TEST(csv_writer_quoting)
{
    char *t = csv_of("id:int64,s:utf8", fill_quoting, NULL);
    ASSERT_EQ_STR(t, "id,s\n0,plain\n1,\"a,b\"\n2,\"say \"\"hi\"\"\"\n3,\"line\nbreak\"\n"
                     "4,\"cr\rx\"\n5,\"\"\n6, pad \n7,\"\"\"\"\n8,\n");
    free(t);
    marble_csv_write_options o;
    marble_csv_write_options_init(&o);
    o.delimiter = ';';
    o.header = 0;
    t = csv_of("id:int64,s:utf8", fill_quoting, &o);
    ASSERT_EQ_STR(t, "0;plain\n1;a,b\n2;\"say \"\"hi\"\"\"\n3;\"line\nbreak\"\n"
                     "4;\"cr\rx\"\n5;\"\"\n6; pad \n7;\"\"\"\"\n8;\n");
    free(t);
}

static void fill_types(marble_batch_builder *b)
{
    marble_error err = {0};
    CHECK_OK(marble_builder_append_int(b, 0, 1, &err));
    CHECK_OK(marble_builder_append_int(b, 1, -128, &err));
    CHECK_OK(marble_builder_append_uint(b, 2, UINT64_MAX, &err));
    CHECK_OK(marble_builder_append_double(b, 3, 0.1, &err));
    CHECK_OK(marble_builder_append_double(b, 4, 1.0 / 3.0, &err));
    CHECK_OK(marble_builder_append_bytes(b, 5, "\x00\xff\x10", 3, &err));
    CHECK_OK(marble_builder_append_bytes(b, 6, "ab", 2, &err));
    CHECK_OK(marble_builder_append_int(b, 7, 19000, &err));
    CHECK_OK(marble_builder_append_int(b, 8, 1700000000123456LL, &err));
    CHECK_OK(marble_builder_append_int(b, 9, -1, &err));
    /* second row: nulls, negative date, special floats */
    CHECK_OK(marble_builder_append_int(b, 0, 0, &err));
    CHECK_OK(marble_builder_append_null(b, 1, &err));
    CHECK_OK(marble_builder_append_uint(b, 2, 0, &err));
    CHECK_OK(marble_builder_append_double(b, 3, 1.0 / 0.0, &err));
    CHECK_OK(marble_builder_append_double(b, 4, -1.0 / 0.0, &err));
    CHECK_OK(marble_builder_append_bytes(b, 5, "", 0, &err));
    CHECK_OK(marble_builder_append_null(b, 6, &err));
    CHECK_OK(marble_builder_append_int(b, 7, -1, &err));
    CHECK_OK(marble_builder_append_int(b, 8, 0, &err));
    CHECK_OK(marble_builder_append_null(b, 9, &err));
}

TEST(csv_writer_types)
{
    char *t = csv_of("b:bool,i:int8,u:uint64,f:float32,d:float64,bin:binary,fx:w:2,dt:date32,"
                     "ts:timestamp[us, tz=UTC],tn:timestamp[ms]",
                     fill_types, NULL);
    ASSERT_EQ_STR(t, "b,i,u,f,d,bin,fx,dt,ts,tn\n"
                     "true,-128,18446744073709551615,0.1,0.33333333333333331,00ff10,6162,"
                     "2022-01-08,2023-11-14T22:13:20.123456Z,1969-12-31T23:59:59.999\n"
                     "false,,0,inf,-inf,\"\",,1969-12-31,1970-01-01T00:00:00.000000Z,\n");
    free(t);
}

TEST(csv_writer_timestamps_read_back)
{
    marble_error err = {0};
    const char *schema_text = "ts:timestamp[ns, tz=UTC],d:date32,tm:timestamp[s]";
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(schema_text, &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    uint64_t rng = 12345;
    int64_t vals[200][3];
    for (int i = 0; i < 200; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        vals[i][0] = (int64_t)(rng >> 2) - (int64_t)(rng >> 3) * 2;
        vals[i][1] = (int64_t)(rng % 200000) - 100000;
        vals[i][2] = (int64_t)(rng >> 30) - (int64_t)(1ll << 33);
        for (int c = 0; c < 3; c++)
            CHECK_OK(marble_builder_append_int(b, c, vals[i][c], &err));
    }
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    marble_batch_builder_destroy(b);
    marble_ipc_buffer buf = {0};
    marble_csv_writer *w;
    CHECK_OK(marble_csv_writer_create(marble_ipc_buffer_sink(&buf), &s, NULL, &w, &err));
    CHECK_OK(marble_csv_writer_write(w, &a, &err));
    CHECK_OK(marble_csv_writer_finish(w, &err));
    marble_csv_writer_destroy(w);
    a.release(&a);
    mem_in m = {(const char *)buf.data, buf.size, 0};
    marble_csv_source src = {mem_read, &m};
    marble_csv_reader *r;
    CHECK_OK(marble_csv_reader_create(&src, &s, NULL, &r, &err));
    struct ArrowArray back;
    CHECK_OK(marble_csv_reader_next(r, &back, &err));
    ASSERT_EQ_INT(back.length, 200);
    for (int i = 0; i < 200; i++)
        for (int c = 0; c < 3; c++)
            ASSERT_EQ_INT(marble_arrow_get_int(s.children[c], back.children[c], i), vals[i][c]);
    back.release(&back);
    marble_csv_reader_destroy(r);
    free(buf.data);
    s.release(&s);
}

/* A column JSON lines cannot hold is refused up front, by name (not after a runaway buffer). */
static int nullcol_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    (void)st;
    marble_error err = {0};
    marble_field_spec f[2] = {{"a", "l", 1}, {"z", "n", 1}};
    return marble_arrow_schema_make(out, f, 2, NULL, NULL, 0, &err) == MARBLE_OK ? 0 : 5;
}
static int nullcol_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    (void)st;
    memset(out, 0, sizeof *out);
    return 0;
}
static const char *nullcol_error(struct ArrowArrayStream *st)
{
    (void)st;
    return "";
}
static void nullcol_release(struct ArrowArrayStream *st)
{
    st->release = NULL;
}

TEST(export_json_refuses_a_null_type_column)
{
    marble_error err = {0};
    marble_fs *fs;
    CHECK_OK(marble_fs_create(&fs, &err));
    char uri[512];
    snprintf(uri, sizeof uri, "%s/n.jsonl", marble_test_tmpdir());
    struct ArrowArrayStream in = {nullcol_schema, nullcol_next, nullcol_error, nullcol_release,
                                  NULL};
    ASSERT_EQ_INT(marble_export_stream(fs, &in, uri, NULL, NULL, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(err.message, "'z'");
    int exists = 1;
    CHECK_OK(marble_fs_exists(fs, uri, &exists, &err));
    ASSERT_FALSE(exists);
    CHECK_OK(marble_fs_destroy(fs, &err));
}
