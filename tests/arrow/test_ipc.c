/* Arrow IPC: round trips over every type, format, codec and alignment; zero copy and owner
 * lifetime; the ArrowArrayStream; hand-made and corrupted input; the flatbuffer codec. */
#include "marble/arrow.h"
#include "marble/vfs.h"

#include "arrow/arrow_internal.h"
#include "arrow/flatbuf.h"
#include "arrow/ipc_internal.h"
#include "marble_test.h"

#include <errno.h>
#include <lz4frame.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <zstd.h>

/* ---- helpers --------------------------------------------------------------------------------- */

static const char *const all_formats[] = {
    "n",       "b",   "c", "s", "i", "l", "C",   "S",   "I",    "L",
    "f",       "g",   "u", "U", "z", "Z", "w:3", "tdD", "tss:", "tsm:Europe/Paris",
    "tsu:UTC", "tsn:"};
#define N_ALL ((int)(sizeof all_formats / sizeof all_formats[0]))

static void make_all_schema(struct ArrowSchema *s)
{
    marble_field_spec f[N_ALL];
    static char names[N_ALL][16];
    static const char *const keys[] = {"origin", "empty"};
    static const char *const vals[] = {"marble test", ""};
    marble_error e;
    for (int i = 0; i < N_ALL; i++) {
        snprintf(names[i], sizeof names[i], "c%d_%s", i, all_formats[i]);
        f[i].name = names[i];
        f[i].format = all_formats[i];
        f[i].nullable = i != 5;
    }
    if (marble_arrow_schema_make(s, f, N_ALL, keys, vals, 2, &e) != MARBLE_OK)
        FAIL("schema_make: %s", e.message);
}

/* Appends rows [first, first + n) of the deterministic test data. */
static void fill(marble_batch_builder *b, const struct ArrowSchema *s, int first, int n)
{
    marble_error e;
    for (int r = first; r < first + n; r++) {
        for (int c = 0; c < (int)s->n_children; c++) {
            marble_arrow_type t;
            int rc;
            ASSERT_OK(marble_arrow_type_parse(s->children[c]->format, &t, NULL));
            int nullable = (s->children[c]->flags & ARROW_FLAG_NULLABLE) != 0;
            if (t.id == MARBLE_ARROW_NA || (nullable && (r + c) % 4 == 0)) {
                rc = marble_builder_append_null(b, c, &e);
            } else {
                char buf[64];
                int len;
                switch (t.id) {
                case MARBLE_ARROW_BOOL:
                    rc = marble_builder_append_int(b, c, r % 3 == 0, &e);
                    break;
                case MARBLE_ARROW_INT8:
                case MARBLE_ARROW_INT16:
                case MARBLE_ARROW_INT32:
                case MARBLE_ARROW_INT64:
                    rc = marble_builder_append_int(b, c, (r * 37 + c) % 100 - 50, &e);
                    break;
                case MARBLE_ARROW_UINT8:
                case MARBLE_ARROW_UINT16:
                case MARBLE_ARROW_UINT32:
                case MARBLE_ARROW_UINT64:
                    rc = marble_builder_append_uint(b, c, (uint64_t)(r * 7 % 200), &e);
                    break;
                case MARBLE_ARROW_FLOAT32:
                case MARBLE_ARROW_FLOAT64:
                    rc = marble_builder_append_double(b, c, r * 1.5 - 3, &e);
                    break;
                case MARBLE_ARROW_UTF8:
                case MARBLE_ARROW_LARGE_UTF8:
                    len = r % 6 == 0 ? 0 : snprintf(buf, sizeof buf, "r%d", r);
                    for (int k = 0; k < r % 5; k++)
                        len += snprintf(buf + len, 4, "é");
                    rc = marble_builder_append_bytes(b, c, buf, (size_t)len, &e);
                    break;
                case MARBLE_ARROW_BINARY:
                case MARBLE_ARROW_LARGE_BINARY:
                    for (len = 0; len < r % 9; len++)
                        buf[len] = (char)(r * 31 + len);
                    rc = marble_builder_append_bytes(b, c, buf, (size_t)len, &e);
                    break;
                case MARBLE_ARROW_FIXED_SIZE_BINARY:
                    buf[0] = (char)r;
                    buf[1] = (char)(r + 1);
                    buf[2] = (char)(255 - r);
                    rc = marble_builder_append_bytes(b, c, buf, 3, &e);
                    break;
                case MARBLE_ARROW_DATE32:
                    rc = marble_builder_append_int(b, c, r * 100 - 5000, &e);
                    break;
                case MARBLE_ARROW_TIMESTAMP:
                    rc = marble_builder_append_int(b, c, (int64_t)r * 1000000007LL, &e);
                    break;
                default:
                    FAIL("unexpected type in column %d", c);
                }
            }
            if (rc != MARBLE_OK) FAIL("append row %d column %d: %s", r, c, e.message);
        }
    }
}

static void build_batch(const struct ArrowSchema *s, int first, int n, struct ArrowArray *out)
{
    marble_batch_builder *b;
    marble_error e;
    if (marble_batch_builder_create(s, &b, &e) != MARBLE_OK) FAIL("builder: %s", e.message);
    fill(b, s, first, n);
    if (marble_batch_builder_finish(b, out, &e) != MARBLE_OK) FAIL("finish: %s", e.message);
    marble_batch_builder_destroy(b);
}

/* Compares a's element ia with b's element ib (logical indexes). */
static void compare_value(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t ia,
                          const struct ArrowArray *b, int64_t ib, const char *what)
{
    marble_arrow_type t;
    ASSERT_OK(marble_arrow_type_parse(s->format, &t, NULL));
    int na = marble_arrow_is_null(a, ia), nb = marble_arrow_is_null(b, ib);
    if (na != nb)
        FAIL("%s column '%s': null %d vs %d at %lld/%lld", what, s->name, na, nb, (long long)ia,
             (long long)ib);
    if (na || t.id == MARBLE_ARROW_NA) return;
    if (t.id == MARBLE_ARROW_STRUCT) {
        for (int64_t k = 0; k < s->n_children; k++)
            compare_value(s->children[k], a->children[k], a->offset + ia, b->children[k],
                          b->offset + ib, what);
        return;
    }
    if (t.id == MARBLE_ARROW_BOOL) {
        ASSERT_EQ_INT(marble_arrow_get_int(s, a, ia), marble_arrow_get_int(s, b, ib));
        return;
    }
    const void *da, *db;
    size_t la, lb;
    ASSERT_OK(marble_arrow_get_bytes(s, a, ia, &da, &la));
    ASSERT_OK(marble_arrow_get_bytes(s, b, ib, &db, &lb));
    if (la != lb || memcmp(da, db, la) != 0)
        FAIL("%s column '%s': values differ at %lld/%lld", what, s->name, (long long)ia,
             (long long)ib);
}

/* Compares rows [0, n) of batch a from row a0 with batch b from row b0. */
static void compare_batches(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t a0,
                            const struct ArrowArray *b, int64_t b0, int64_t n)
{
    ASSERT_EQ_INT(a->n_children, b->n_children);
    for (int64_t c = 0; c < s->n_children; c++)
        for (int64_t i = 0; i < n; i++)
            compare_value(s->children[c], a->children[c], a->offset + a0 + i, b->children[c],
                          b->offset + b0 + i, "batch");
}

static void write_all(const struct ArrowSchema *s, const struct ArrowArray *batches, int n,
                      const marble_ipc_write_options *o, marble_ipc_buffer *buf)
{
    marble_ipc_writer *w;
    marble_error e;
    memset(buf, 0, sizeof *buf);
    if (marble_ipc_writer_create(marble_ipc_buffer_sink(buf), s, o, &w, &e) != MARBLE_OK)
        FAIL("writer_create: %s", e.message);
    for (int i = 0; i < n; i++)
        if (marble_ipc_writer_write(w, &batches[i], &e) != MARBLE_OK)
            FAIL("writer_write %d: %s", i, e.message);
    if (marble_ipc_writer_finish(w, &e) != MARBLE_OK) FAIL("writer_finish: %s", e.message);
    marble_ipc_writer_destroy(w);
}

static marble_ipc_reader *open_buf(const marble_ipc_buffer *buf)
{
    marble_ipc_source src = {buf->data, buf->size, NULL, NULL, NULL};
    marble_ipc_reader *r;
    marble_error e;
    if (marble_ipc_reader_open(&src, &r, &e) != MARBLE_OK) FAIL("reader_open: %s", e.message);
    return r;
}

static int open_bytes(const uint8_t *data, size_t size, marble_ipc_reader **r, marble_error *e)
{
    marble_ipc_source src = {data, size, NULL, NULL, NULL};
    return marble_ipc_reader_open(&src, r, e);
}

static const int batch_sizes[] = {37, 0, 1, 8, 100};
#define N_BATCHES ((int)(sizeof batch_sizes / sizeof batch_sizes[0]))

static void roundtrip(marble_ipc_format format, marble_ipc_compression comp, int alignment)
{
    struct ArrowSchema s, rs;
    struct ArrowArray batches[N_BATCHES];
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    int first = 0;
    for (int i = 0; i < N_BATCHES; i++) {
        build_batch(&s, first, batch_sizes[i], &batches[i]);
        first += batch_sizes[i];
    }
    marble_ipc_write_options o = {format, comp, 0, alignment};
    write_all(&s, batches, N_BATCHES, &o, &buf);

    marble_ipc_reader *r = open_buf(&buf);
    ASSERT_EQ_INT(marble_ipc_reader_format(r), format);
    ASSERT_EQ_INT(marble_ipc_reader_num_batches(r), N_BATCHES);
    ASSERT_OK(marble_ipc_reader_schema(r, &rs, &e));
    ASSERT_EQ_STR(rs.format, "+s");
    ASSERT_EQ_INT(rs.n_children, N_ALL);
    for (int c = 0; c < N_ALL; c++) {
        ASSERT_EQ_STR(rs.children[c]->format, s.children[c]->format);
        ASSERT_EQ_STR(rs.children[c]->name, s.children[c]->name);
        ASSERT_EQ_INT(rs.children[c]->flags, s.children[c]->flags);
    }
    char v[64];
    ASSERT_OK(marble_arrow_metadata_get(rs.metadata, "origin", v, sizeof v, &e));
    ASSERT_EQ_STR(v, "marble test");
    ASSERT_OK(marble_arrow_metadata_get(rs.metadata, "empty", v, sizeof v, &e));
    ASSERT_EQ_STR(v, "");
    for (int i = 0; i < N_BATCHES; i++) {
        struct ArrowArray got;
        if (marble_ipc_reader_read(r, i, &got, &e) != MARBLE_OK)
            FAIL("read batch %d: %s", i, e.message);
        ASSERT_EQ_INT(got.length, batch_sizes[i]);
        ASSERT_OK(marble_arrow_array_validate(&rs, &got, MARBLE_VALIDATE_UTF8, &e));
        compare_batches(&s, &batches[i], 0, &got, 0, batch_sizes[i]);
        got.release(&got);
    }
    marble_ipc_reader_destroy(r);
    rs.release(&rs);
    for (int i = 0; i < N_BATCHES; i++)
        batches[i].release(&batches[i]);
    s.release(&s);
    free(buf.data);
}

/* ---- round trips ----------------------------------------------------------------------------- */

TEST(ipc_roundtrip_stream)
{
    roundtrip(MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 8);
}

TEST(ipc_roundtrip_file)
{
    roundtrip(MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 8);
}

TEST(ipc_roundtrip_stream_lz4)
{
    roundtrip(MARBLE_IPC_STREAM, MARBLE_IPC_LZ4_FRAME, 8);
}

TEST(ipc_roundtrip_file_lz4)
{
    roundtrip(MARBLE_IPC_FILE, MARBLE_IPC_LZ4_FRAME, 64);
}

TEST(ipc_roundtrip_stream_zstd)
{
    roundtrip(MARBLE_IPC_STREAM, MARBLE_IPC_ZSTD, 64);
}

TEST(ipc_roundtrip_file_zstd)
{
    roundtrip(MARBLE_IPC_FILE, MARBLE_IPC_ZSTD, 8);
}

TEST(ipc_roundtrip_alignment_64)
{
    roundtrip(MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 64);
    roundtrip(MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 64);
}

TEST(ipc_roundtrip_compression_levels)
{
    struct ArrowSchema s;
    struct ArrowArray b;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 50, &b);
    for (int comp = 1; comp <= 2; comp++) {
        for (int level = 1; level <= 9; level += 4) {
            marble_ipc_write_options o = {MARBLE_IPC_FILE, (marble_ipc_compression)comp, level, 8};
            write_all(&s, &b, 1, &o, &buf);
            marble_ipc_reader *r = open_buf(&buf);
            struct ArrowArray got;
            ASSERT_OK(marble_ipc_reader_read(r, 0, &got, &e));
            compare_batches(&s, &b, 0, &got, 0, 50);
            got.release(&got);
            marble_ipc_reader_destroy(r);
            free(buf.data);
        }
    }
    b.release(&b);
    s.release(&s);
}

TEST(ipc_empty_stream_and_file)
{
    struct ArrowSchema s, rs;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    for (int f = 0; f < 2; f++) {
        marble_ipc_write_options o = {(marble_ipc_format)f, MARBLE_IPC_UNCOMPRESSED, 0, 0};
        write_all(&s, NULL, 0, &o, &buf);
        marble_ipc_reader *r = open_buf(&buf);
        ASSERT_EQ_INT(marble_ipc_reader_num_batches(r), 0);
        ASSERT_OK(marble_ipc_reader_schema(r, &rs, &e));
        ASSERT_EQ_INT(rs.n_children, N_ALL);
        rs.release(&rs);
        struct ArrowArray got;
        ASSERT_EQ_INT(marble_ipc_reader_read(r, 0, &got, &e), MARBLE_ERR_INVALID_ARGUMENT);
        marble_ipc_reader_destroy(r);
        free(buf.data);
    }
    s.release(&s);
}

TEST(ipc_zero_columns)
{
    struct ArrowSchema s;
    struct ArrowArray b, got;
    marble_ipc_buffer buf;
    marble_error e;
    ASSERT_OK(marble_arrow_schema_make(&s, NULL, 0, NULL, NULL, 0, &e));
    ASSERT_OK(marble__arrow_array_init(&b, 1, 0, NULL, &e));
    b.length = 5;
    for (int f = 0; f < 2; f++) {
        marble_ipc_write_options o = {(marble_ipc_format)f, MARBLE_IPC_ZSTD, 0, 8};
        write_all(&s, &b, 1, &o, &buf);
        marble_ipc_reader *r = open_buf(&buf);
        ASSERT_EQ_INT(marble_ipc_reader_num_batches(r), 1);
        ASSERT_OK(marble_ipc_reader_read(r, 0, &got, &e));
        ASSERT_EQ_INT(got.length, 5);
        ASSERT_EQ_INT(got.n_children, 0);
        got.release(&got);
        marble_ipc_reader_destroy(r);
        free(buf.data);
    }
    b.release(&b);
    s.release(&s);
}

/* A view of `b` (not owning anything) sliced to rows [off, off + len) at the top level, with
 * each child additionally shifted by child_shift (its length reduced to match). */
typedef struct view {
    struct ArrowArray top;
    struct ArrowArray kids[N_ALL];
    struct ArrowArray *kid_ptrs[N_ALL];
} view;

static void no_release(struct ArrowArray *a)
{
    a->release = NULL;
}

static void make_view(view *v, const struct ArrowArray *b, int64_t off, int64_t len,
                      int64_t child_shift)
{
    v->top = *b;
    v->top.offset = off;
    v->top.length = len;
    v->top.release = no_release;
    for (int64_t c = 0; c < b->n_children; c++) {
        v->kids[c] = *b->children[c];
        v->kids[c].offset += child_shift;
        v->kids[c].length -= child_shift;
        v->kids[c].null_count = -1;
        v->kids[c].release = no_release;
        v->kid_ptrs[c] = &v->kids[c];
    }
    v->top.children = v->kid_ptrs;
}

TEST(ipc_sliced_input)
{
    struct ArrowSchema s;
    struct ArrowArray b;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 90, &b);
    static const int64_t cases[][3] = {{0, 90, 0}, {8, 40, 0}, {3, 50, 0},  {1, 1, 0},
                                       {5, 0, 0},  {0, 60, 5}, {7, 33, 11}, {13, 64, 2}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int comp = 0; comp <= 2; comp++) {
            view v;
            make_view(&v, &b, cases[k][0], cases[k][1], cases[k][2]);
            ASSERT_OK(marble_arrow_array_validate(&s, &v.top, 0, &e));
            marble_ipc_write_options o = {(marble_ipc_format)(k % 2), (marble_ipc_compression)comp,
                                          0, 8};
            write_all(&s, &v.top, 1, &o, &buf);
            marble_ipc_reader *r = open_buf(&buf);
            struct ArrowArray got;
            if (marble_ipc_reader_read(r, 0, &got, &e) != MARBLE_OK)
                FAIL("case %zu: %s", k, e.message);
            ASSERT_EQ_INT(got.length, cases[k][1]);
            ASSERT_EQ_INT(got.offset, 0);
            for (int64_t c = 0; c < got.n_children; c++) {
                ASSERT_EQ_INT(got.children[c]->offset, 0);
                ASSERT_EQ_INT(got.children[c]->length, cases[k][1]);
            }
            /* Row i of the view is row off + shift + i of the original. */
            compare_batches(&s, &b, cases[k][0] + cases[k][2], &got, 0, cases[k][1]);
            ASSERT_OK(marble_arrow_array_validate(&s, &got, MARBLE_VALIDATE_UTF8, &e));
            got.release(&got);
            marble_ipc_reader_destroy(r);
            free(buf.data);
        }
    }
    b.release(&b);
    s.release(&s);
}

/* ---- a nested struct column, built by hand --------------------------------------------------- */

static void make_nested_schema(struct ArrowSchema *s)
{
    marble_error e;
    static const marble__arrow_kv kv[] = {{"unit", 4, "metres", 6}};
    char *meta;
    ASSERT_OK(marble__arrow_metadata_encode(kv, 1, &meta, NULL, &e));
    ASSERT_OK(marble__arrow_schema_init(s, "+s", "", NULL, 0, 2, &e));
    ASSERT_OK(marble__arrow_schema_init(s->children[0], "i", "id", meta, 0, 0, &e));
    ASSERT_OK(
        marble__arrow_schema_init(s->children[1], "+s", "pt", NULL, ARROW_FLAG_NULLABLE, 2, &e));
    ASSERT_OK(marble__arrow_schema_init(s->children[1]->children[0], "l", "x", meta,
                                        ARROW_FLAG_NULLABLE, 0, &e));
    ASSERT_OK(marble__arrow_schema_init(s->children[1]->children[1], "u", "label", NULL,
                                        ARROW_FLAG_NULLABLE, 0, &e));
    free(meta);
}

/* n rows; the struct is null at every 5th row, x at every 3rd, label at every 4th. The struct's
 * children are 3 longer than it and it is offset by 3 into them. */
static void make_nested_batch(struct ArrowArray *b, int64_t n)
{
    marble_error e;
    ASSERT_OK(marble__arrow_array_init(b, 1, 2, NULL, &e));
    b->length = n;
    struct ArrowArray *id = b->children[0], *pt = b->children[1];
    ASSERT_OK(marble__arrow_array_init(id, 2, 0, NULL, &e));
    id->length = n;
    int32_t *ids = marble__arrow_array_alloc_buffer(id, 1, n * 4);
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)(i * 3);

    ASSERT_OK(marble__arrow_array_init(pt, 1, 2, NULL, &e));
    pt->length = n;
    pt->offset = 0;
    uint8_t *pv = marble__arrow_array_alloc_buffer(pt, 0, n / 8 + 1);
    int64_t pnull = 0;
    for (int64_t i = 0; i < n; i++) {
        marble__arrow_bit_set(pv, i, i % 5 != 0);
        pnull += i % 5 == 0;
    }
    pt->null_count = pnull;
    int64_t m = n + 3;
    struct ArrowArray *x = pt->children[0], *lb = pt->children[1];
    ASSERT_OK(marble__arrow_array_init(x, 2, 0, NULL, &e));
    x->length = m;
    uint8_t *xv = marble__arrow_array_alloc_buffer(x, 0, m / 8 + 1);
    int64_t *xs = marble__arrow_array_alloc_buffer(x, 1, m * 8);
    int64_t xnull = 0;
    for (int64_t i = 0; i < m; i++) {
        marble__arrow_bit_set(xv, i, i % 3 != 0);
        xnull += i % 3 == 0;
        xs[i] = i * 1000 - 7;
    }
    x->null_count = xnull;
    ASSERT_OK(marble__arrow_array_init(lb, 3, 0, NULL, &e));
    lb->length = m;
    uint8_t *lv = marble__arrow_array_alloc_buffer(lb, 0, m / 8 + 1);
    int32_t *lo = marble__arrow_array_alloc_buffer(lb, 1, (m + 1) * 4);
    char *ld = marble__arrow_array_alloc_buffer(lb, 2, m * 4 + 1);
    int64_t lnull = 0, at = 0;
    for (int64_t i = 0; i < m; i++) {
        marble__arrow_bit_set(lv, i, i % 4 != 0);
        lnull += i % 4 == 0;
        lo[i] = (int32_t)at;
        for (int64_t k = 0; k < i % 4; k++)
            ld[at++] = (char)('a' + (i + k) % 26);
    }
    lo[m] = (int32_t)at;
    lb->null_count = lnull;
    pt->offset = 3;
    uint8_t *shifted = marble__arrow_alloc(m / 8 + 1);
    for (int64_t i = 0; i < n; i++)
        marble__arrow_bit_set(shifted, i + 3, i % 5 != 0);
    marble__arrow_array_adopt_buffer(pt, 0, shifted);
}

TEST(ipc_nested_struct)
{
    struct ArrowSchema s, rs;
    struct ArrowArray b;
    marble_ipc_buffer buf;
    marble_error e;
    make_nested_schema(&s);
    make_nested_batch(&b, 45);
    if (marble_arrow_array_validate(&s, &b, MARBLE_VALIDATE_UTF8, &e) != MARBLE_OK)
        FAIL("input: %s", e.message);
    for (int k = 0; k < 6; k++) {
        view v;
        int64_t off = k == 0 ? 0 : k * 3 - 1;
        make_view(&v, &b, off, 45 - off - 2, 0);
        v.kids[0].null_count = 0;
        v.kids[1].null_count = -1;
        marble_ipc_write_options o = {(marble_ipc_format)(k % 2), (marble_ipc_compression)(k % 3),
                                      0, k < 3 ? 8 : 64};
        write_all(&s, &v.top, 1, &o, &buf);
        marble_ipc_reader *r = open_buf(&buf);
        ASSERT_OK(marble_ipc_reader_schema(r, &rs, &e));
        ASSERT_EQ_STR(rs.children[1]->format, "+s");
        ASSERT_EQ_INT(rs.children[1]->n_children, 2);
        ASSERT_EQ_STR(rs.children[1]->children[1]->name, "label");
        char unit[16];
        ASSERT_OK(
            marble_arrow_metadata_get(rs.children[0]->metadata, "unit", unit, sizeof unit, &e));
        ASSERT_EQ_STR(unit, "metres");
        ASSERT_OK(marble_arrow_metadata_get(rs.children[1]->children[0]->metadata, "unit", unit,
                                            sizeof unit, &e));
        ASSERT_NULL(rs.children[1]->metadata);
        struct ArrowArray got;
        if (marble_ipc_reader_read(r, 0, &got, &e) != MARBLE_OK) FAIL("k=%d: %s", k, e.message);
        compare_batches(&s, &v.top, 0, &got, 0, v.top.length);
        got.release(&got);
        rs.release(&rs);
        marble_ipc_reader_destroy(r);
        free(buf.data);
    }
    b.release(&b);
    s.release(&s);
}

/* ---- bytes on the wire ----------------------------------------------------------------------- */

static void check_message_layout(const uint8_t *d, uint64_t start, uint64_t end, int alignment,
                                 int64_t *n_batches)
{
    uint64_t pos = start;
    *n_batches = 0;
    for (;;) {
        ASSERT_TRUE(pos + 8 <= end);
        ASSERT_EQ_HEX(marble__fb_le32(d + pos), 0xFFFFFFFFu);
        uint32_t len = marble__fb_le32(d + pos + 4);
        if (len == 0) break;
        ASSERT_EQ_INT(len % 8, 0);
        ASSERT_EQ_INT((pos + 8 + len) % (uint64_t)alignment, 0);
        marble__fb_message m;
        marble_error e;
        ASSERT_OK(marble__fb_read_message(d + pos + 8, len, &m, &e));
        ASSERT_EQ_INT(m.version, MARBLE_FB_V5);
        ASSERT_EQ_INT(m.body_length % alignment, 0);
        if (m.header_type == MARBLE_FB_HEADER_RECORD_BATCH) {
            marble__fb_record_batch rb;
            ASSERT_OK(marble__fb_read_record_batch(&m.header, &rb, &e));
            for (uint32_t i = 0; i < rb.buffers.count; i++) {
                marble__fb_pair p = marble__fb_pair_at(&rb.buffers, i);
                ASSERT_EQ_INT(p.a % alignment, 0);
                ASSERT_LE_INT(p.a + p.b, m.body_length);
            }
            (*n_batches)++;
        }
        pos += 8 + len + (uint64_t)m.body_length;
    }
    ASSERT_EQ_U64(pos + 8, end);
}

TEST(ipc_wire_format)
{
    struct ArrowSchema s;
    struct ArrowArray b[2];
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 21, &b[0]);
    build_batch(&s, 21, 3, &b[1]);
    for (int align = 8; align <= 64; align *= 8) {
        int64_t n;
        marble_ipc_write_options so = {MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 0, align};
        write_all(&s, b, 2, &so, &buf);
        check_message_layout(buf.data, 0, buf.size, align, &n);
        ASSERT_EQ_INT(n, 2);
        free(buf.data);

        marble_ipc_write_options fo = {MARBLE_IPC_FILE, MARBLE_IPC_LZ4_FRAME, 0, align};
        write_all(&s, b, 2, &fo, &buf);
        ASSERT_EQ_INT(memcmp(buf.data, "ARROW1\0\0", 8), 0);
        ASSERT_EQ_INT(memcmp(buf.data + buf.size - 6, "ARROW1", 6), 0);
        uint32_t flen = marble__fb_le32(buf.data + buf.size - 10);
        uint64_t fstart = buf.size - 10 - flen;
        check_message_layout(buf.data, 8, fstart, align, &n);
        ASSERT_EQ_INT(n, 2);
        marble__fb_footer ft;
        ASSERT_OK(marble__fb_read_footer(buf.data + fstart, flen, &ft, &e));
        ASSERT_EQ_INT(ft.version, MARBLE_FB_V5);
        ASSERT_TRUE(ft.has_schema);
        ASSERT_EQ_INT(ft.dictionaries.count, 0);
        ASSERT_EQ_INT(ft.record_batches.count, 2);
        for (uint32_t i = 0; i < 2; i++) {
            marble__fb_block bl = marble__fb_block_at(&ft.record_batches, i);
            ASSERT_EQ_HEX(marble__fb_le32(buf.data + bl.offset), 0xFFFFFFFFu);
            ASSERT_EQ_INT(bl.metadata_length,
                          8 + (int64_t)marble__fb_le32(buf.data + bl.offset + 4));
            ASSERT_EQ_INT((bl.offset + bl.metadata_length) % align, 0);
            marble__fb_message m;
            ASSERT_OK(marble__fb_read_message(buf.data + bl.offset + 8,
                                              (size_t)bl.metadata_length - 8, &m, &e));
            ASSERT_EQ_INT(m.body_length, bl.body_length);
            marble__fb_record_batch rb;
            ASSERT_OK(marble__fb_read_record_batch(&m.header, &rb, &e));
            ASSERT_TRUE(rb.has_compression);
            ASSERT_EQ_INT(rb.codec, MARBLE_FB_CODEC_LZ4_FRAME);
            ASSERT_EQ_INT(rb.nodes.count, N_ALL);
            ASSERT_EQ_INT(marble__fb_pair_at(&rb.nodes, 0).b, i == 0 ? 21 : 3);
        }
        marble__fb_schema fs;
        ASSERT_OK(marble__fb_read_schema(&ft.schema, &fs, &e));
        ASSERT_EQ_INT(fs.fields.count, N_ALL);
        ASSERT_EQ_INT(fs.features.count, 1);
        ASSERT_EQ_INT((int64_t)marble__fb_le64(marble__fb_vector_at(&fs.features, 0)),
                      MARBLE_FB_FEATURE_COMPRESSED_BODY);
        free(buf.data);
    }
    b[0].release(&b[0]);
    b[1].release(&b[1]);
    s.release(&s);
}

TEST(ipc_incompressible_buffers_stay_raw)
{
    struct ArrowSchema s;
    struct ArrowArray b, got;
    marble_ipc_buffer buf;
    marble_error e;
    marble_field_spec f = {"blob", "Z", 0};
    ASSERT_OK(marble_arrow_schema_make(&s, &f, 1, NULL, NULL, 0, &e));
    marble_batch_builder *bb;
    ASSERT_OK(marble_batch_builder_create(&s, &bb, &e));
    uint64_t x = 88172645463325252ull;
    for (int r = 0; r < 20; r++) {
        uint8_t v[97];
        for (size_t i = 0; i < sizeof v; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v[i] = (uint8_t)x;
        }
        ASSERT_OK(marble_builder_append_bytes(bb, 0, v, sizeof v, &e));
    }
    ASSERT_OK(marble_batch_builder_finish(bb, &b, &e));
    marble_batch_builder_destroy(bb);
    for (int comp = 1; comp <= 2; comp++) {
        marble_ipc_write_options o = {MARBLE_IPC_STREAM, (marble_ipc_compression)comp, 0, 8};
        write_all(&s, &b, 1, &o, &buf);
        marble_ipc_reader *r = open_buf(&buf);
        ASSERT_OK(marble_ipc_reader_read(r, 0, &got, &e));
        compare_batches(&s, &b, 0, &got, 0, 20);
        /* The random data stayed raw (length -1) and is read in place. */
        const uint8_t *d = got.children[0]->buffers[2];
        ASSERT_TRUE(d >= buf.data && d < buf.data + buf.size);
        got.release(&got);
        marble_ipc_reader_destroy(r);
        free(buf.data);
    }
    b.release(&b);
    s.release(&s);
}

/* ---- zero copy and lifetimes ----------------------------------------------------------------- */

typedef struct owner_count {
    int retains, releases;
} owner_count;

static void count_retain(void *o)
{
    ((owner_count *)o)->retains++;
}

static void count_release(void *o)
{
    ((owner_count *)o)->releases++;
}

static void check_inside(const struct ArrowArray *a, const uint8_t *lo, const uint8_t *hi,
                         int inside)
{
    for (int64_t i = 0; i < a->n_buffers; i++) {
        const uint8_t *p = a->buffers[i];
        if (!p) continue;
        int in = p >= lo && p < hi;
        if (in != inside)
            FAIL("buffer %lld %s the source", (long long)i, in ? "inside" : "outside");
        ASSERT_EQ_INT((uintptr_t)p % 8, 0);
    }
    for (int64_t c = 0; c < a->n_children; c++)
        check_inside(a->children[c], lo, hi, inside);
}

TEST(ipc_zero_copy)
{
    struct ArrowSchema s;
    struct ArrowArray b, got;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 64, &b);
    for (int f = 0; f < 2; f++) {
        marble_ipc_write_options o = {(marble_ipc_format)f, MARBLE_IPC_UNCOMPRESSED, 0, 8};
        write_all(&s, &b, 1, &o, &buf);
        marble_ipc_reader *r = open_buf(&buf);
        ASSERT_OK(marble_ipc_reader_read(r, 0, &got, &e));
        check_inside(&got, buf.data, buf.data + buf.size, 1);
        got.release(&got);
        marble_ipc_reader_destroy(r);
        free(buf.data);

        marble_ipc_write_options oz = {(marble_ipc_format)f, MARBLE_IPC_ZSTD, 0, 8};
        write_all(&s, &b, 1, &oz, &buf);
        r = open_buf(&buf);
        ASSERT_OK(marble_ipc_reader_read(r, 0, &got, &e));
        int outside = 0;
        for (int64_t c = 0; c < got.n_children; c++) {
            const struct ArrowArray *col = got.children[c];
            const uint8_t *p = col->n_buffers > 1 ? col->buffers[1] : NULL;
            outside += p && !(p >= buf.data && p < buf.data + buf.size);
        }
        ASSERT_GE_INT(outside, 5);
        compare_batches(&s, &b, 0, &got, 0, 64);
        got.release(&got);
        marble_ipc_reader_destroy(r);
        free(buf.data);
    }
    b.release(&b);
    s.release(&s);
}

TEST(ipc_misaligned_source_is_copied)
{
    struct ArrowSchema s;
    struct ArrowArray b, got;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 30, &b);
    marble_ipc_write_options o = {MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 0, 8};
    write_all(&s, &b, 1, &o, &buf);
    uint8_t *odd = malloc(buf.size + 1);
    memcpy(odd + 1, buf.data, buf.size);
    marble_ipc_reader *r;
    ASSERT_OK(open_bytes(odd + 1, buf.size, &r, &e));
    ASSERT_OK(marble_ipc_reader_read(r, 0, &got, &e));
    check_inside(&got, odd, odd + buf.size + 1, 0);
    compare_batches(&s, &b, 0, &got, 0, 30);
    got.release(&got);
    marble_ipc_reader_destroy(r);
    free(odd);
    free(buf.data);
    b.release(&b);
    s.release(&s);
}

TEST(ipc_owner_released_last)
{
    struct ArrowSchema s;
    struct ArrowArray b, a1, a2, moved;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 10, &b);
    marble_ipc_write_options o = {MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 0, 8};
    struct ArrowArray two[2] = {b, b};
    write_all(&s, two, 2, &o, &buf);

    owner_count oc = {0, 0};
    marble_ipc_source src = {buf.data, buf.size, &oc, count_retain, count_release};
    marble_ipc_reader *r;
    ASSERT_OK(marble_ipc_reader_open(&src, &r, &e));
    ASSERT_EQ_INT(oc.retains, 1);
    ASSERT_OK(marble_ipc_reader_read(r, 0, &a1, &e));
    ASSERT_OK(marble_ipc_reader_read(r, 1, &a2, &e));
    marble_ipc_reader_destroy(r);
    ASSERT_EQ_INT(oc.releases, 0);
    a1.release(&a1);
    ASSERT_EQ_INT(oc.releases, 0);
    marble_arrow_array_move(a2.children[12], &moved);
    a2.release(&a2);
    ASSERT_EQ_INT(oc.releases, 0);
    const void *data;
    size_t len;
    ASSERT_OK(marble_arrow_get_bytes(s.children[12], &moved, 1, &data, &len));
    moved.release(&moved);
    ASSERT_EQ_INT(oc.releases, 1);
    ASSERT_EQ_INT(oc.retains, 1);

    /* Reader last; and through a stream that outlives the reader. */
    oc.retains = oc.releases = 0;
    ASSERT_OK(marble_ipc_reader_open(&src, &r, &e));
    ASSERT_OK(marble_ipc_reader_read(r, 0, &a1, &e));
    a1.release(&a1);
    ASSERT_EQ_INT(oc.releases, 0);
    struct ArrowArrayStream st;
    ASSERT_OK(marble_ipc_reader_stream(r, &st, &e));
    marble_ipc_reader_destroy(r);
    ASSERT_EQ_INT(oc.releases, 0);
    ASSERT_EQ_INT(st.get_next(&st, &a1), 0);
    st.release(&st);
    ASSERT_EQ_INT(oc.releases, 0);
    a1.release(&a1);
    ASSERT_EQ_INT(oc.releases, 1);

    /* A failed open takes no reference. */
    oc.retains = oc.releases = 0;
    src.size = 20;
    ASSERT_NE_INT(marble_ipc_reader_open(&src, &r, &e), MARBLE_OK);
    ASSERT_NULL(r);
    ASSERT_EQ_INT(oc.retains + oc.releases, 0);

    b.release(&b);
    s.release(&s);
    free(buf.data);
}

static atomic_int threaded_releases;

static void threaded_release(void *o)
{
    (void)o;
    atomic_fetch_add(&threaded_releases, 1);
}

typedef struct release_job {
    const struct ArrowSchema *schema;
    struct ArrowArray array;
    int64_t sum;
} release_job;

static void *release_on_thread(void *arg)
{
    release_job *j = arg;
    for (int64_t c = 0; c < j->array.n_children; c++) {
        const struct ArrowArray *col = j->array.children[c];
        for (int64_t i = 0; i < col->length; i++)
            j->sum += marble_arrow_is_null(col, i);
    }
    j->array.release(&j->array);
    return NULL;
}

TEST(ipc_release_across_threads)
{
    enum { N = 8 };
    struct ArrowSchema s;
    struct ArrowArray b;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 40, &b);
    struct ArrowArray many[N];
    for (int i = 0; i < N; i++)
        many[i] = b;
    marble_ipc_write_options o = {MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 0, 8};
    write_all(&s, many, N, &o, &buf);
    for (int round = 0; round < 20; round++) {
        atomic_store(&threaded_releases, 0);
        marble_ipc_source src = {buf.data, buf.size, NULL, NULL, threaded_release};
        marble_ipc_reader *r;
        ASSERT_OK(marble_ipc_reader_open(&src, &r, &e));
        release_job jobs[N];
        pthread_t th[N];
        for (int i = 0; i < N; i++) {
            jobs[i].schema = &s;
            jobs[i].sum = 0;
            ASSERT_OK(marble_ipc_reader_read(r, i, &jobs[i].array, &e));
        }
        for (int i = 0; i < N; i++)
            ASSERT_EQ_INT(pthread_create(&th[i], NULL, release_on_thread, &jobs[i]), 0);
        marble_ipc_reader_destroy(r);
        for (int i = 0; i < N; i++)
            ASSERT_EQ_INT(pthread_join(th[i], NULL), 0);
        ASSERT_EQ_INT(atomic_load(&threaded_releases), 1);
        for (int i = 1; i < N; i++)
            ASSERT_EQ_INT(jobs[i].sum, jobs[0].sum);
    }
    b.release(&b);
    s.release(&s);
    free(buf.data);
}

TEST(ipc_array_stream)
{
    struct ArrowSchema s, rs;
    struct ArrowArray b[3], got;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    for (int i = 0; i < 3; i++)
        build_batch(&s, i * 10, 10 + i, &b[i]);
    marble_ipc_write_options o = {MARBLE_IPC_FILE, MARBLE_IPC_LZ4_FRAME, 0, 8};
    write_all(&s, b, 3, &o, &buf);
    marble_ipc_reader *r = open_buf(&buf);
    struct ArrowArrayStream st;
    ASSERT_OK(marble_ipc_reader_stream(r, &st, &e));
    marble_ipc_reader_destroy(r);
    ASSERT_NULL(st.get_last_error(&st));
    ASSERT_EQ_INT(st.get_schema(&st, &rs), 0);
    ASSERT_EQ_INT(rs.n_children, N_ALL);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ_INT(st.get_next(&st, &got), 0);
        ASSERT_NOT_NULL(got.release);
        ASSERT_EQ_INT(got.length, 10 + i);
        compare_batches(&s, &b[i], 0, &got, 0, 10 + i);
        got.release(&got);
    }
    ASSERT_EQ_INT(st.get_next(&st, &got), 0);
    ASSERT_NULL(got.release);
    st.release(&st);
    ASSERT_NULL(st.release);
    rs.release(&rs);

    /* A corrupt batch: get_next fails with an errno code and a message. */
    marble__fb_footer ft;
    uint32_t flen = marble__fb_le32(buf.data + buf.size - 10);
    ASSERT_OK(marble__fb_read_footer(buf.data + buf.size - 10 - flen, flen, &ft, &e));
    marble__fb_block bl = marble__fb_block_at(&ft.record_batches, 1);
    memset(buf.data + bl.offset + bl.metadata_length, 0xAB, (size_t)bl.body_length);
    r = open_buf(&buf);
    ASSERT_OK(marble_ipc_reader_stream(r, &st, &e));
    marble_ipc_reader_destroy(r);
    ASSERT_EQ_INT(st.get_next(&st, &got), 0);
    got.release(&got);
    int rc = st.get_next(&st, &got);
    ASSERT_EQ_INT(rc, EIO);
    ASSERT_NULL(got.release);
    ASSERT_NOT_NULL(st.get_last_error(&st));
    ASSERT_CONTAINS(st.get_last_error(&st), "batch 1");
    st.release(&st);

    for (int i = 0; i < 3; i++)
        b[i].release(&b[i]);
    s.release(&s);
    free(buf.data);
}

/* ---- writer errors --------------------------------------------------------------------------- */

static int failing_write(void *ctx, const void *data, size_t n, marble_error *err)
{
    int *budget = ctx;
    if (*budget < (int)n) return marble_error_set(err, MARBLE_ERR_IO, "disk full (test)");
    *budget -= (int)n;
    return MARBLE_OK;
}

TEST(ipc_writer_errors)
{
    struct ArrowSchema s, bad;
    struct ArrowArray b;
    marble_ipc_buffer buf = {0};
    marble_ipc_writer *w;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 10, &b);
    marble_ipc_write_options o = {MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 0, 16};
    ASSERT_EQ_INT(marble_ipc_writer_create(marble_ipc_buffer_sink(&buf), &s, &o, &w, &e),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(e.message, "alignment");
    o.alignment = 8;
    o.compression = (marble_ipc_compression)7;
    ASSERT_EQ_INT(marble_ipc_writer_create(marble_ipc_buffer_sink(&buf), &s, &o, &w, &e),
                  MARBLE_ERR_INVALID_ARGUMENT);
    o.compression = MARBLE_IPC_UNCOMPRESSED;
    ASSERT_OK(marble__arrow_schema_init(&bad, "l", "x", NULL, 0, 0, &e));
    ASSERT_EQ_INT(marble_ipc_writer_create(marble_ipc_buffer_sink(&buf), &bad, &o, &w, &e),
                  MARBLE_ERR_INVALID_ARGUMENT);
    bad.release(&bad);

    ASSERT_OK(marble_ipc_writer_create(marble_ipc_buffer_sink(&buf), &s, NULL, &w, &e));
    struct ArrowArray broken = b;
    broken.n_children = 2;
    ASSERT_EQ_INT(marble_ipc_writer_write(w, &broken, &e), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_OK(marble_ipc_writer_write(w, &b, &e));
    ASSERT_OK(marble_ipc_writer_finish(w, &e));
    ASSERT_EQ_INT(marble_ipc_writer_write(w, &b, &e), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(e.message, "finished");
    ASSERT_EQ_INT(marble_ipc_writer_finish(w, &e), MARBLE_ERR_INVALID_ARGUMENT);
    marble_ipc_writer_destroy(w);
    marble_ipc_writer_destroy(NULL);
    free(buf.data);

    for (int budget0 = 0; budget0 < 4000; budget0 += 97) {
        int budget = budget0;
        marble_ipc_sink sink = {failing_write, &budget};
        marble_ipc_write_options fo = {MARBLE_IPC_FILE, MARBLE_IPC_ZSTD, 0, 8};
        int rc = marble_ipc_writer_create(sink, &s, &fo, &w, &e);
        if (rc != MARBLE_OK) {
            ASSERT_EQ_INT(rc, MARBLE_ERR_IO);
            continue;
        }
        rc = marble_ipc_writer_write(w, &b, &e);
        if (rc == MARBLE_OK) rc = marble_ipc_writer_finish(w, &e);
        if (rc != MARBLE_OK) {
            ASSERT_EQ_INT(rc, MARBLE_ERR_IO);
            ASSERT_CONTAINS(e.message, "disk full");
            ASSERT_EQ_INT(marble_ipc_writer_finish(w, &e), MARBLE_ERR_INVALID_ARGUMENT);
            ASSERT_CONTAINS(e.message, "failed earlier");
        }
        marble_ipc_writer_destroy(w);
    }
    b.release(&b);
    s.release(&s);
}

/* ---- hand-made messages ---------------------------------------------------------------------- */

static void put(marble_ipc_buffer *out, const void *d, size_t n)
{
    marble_ipc_sink sink = marble_ipc_buffer_sink(out);
    ASSERT_OK(sink.write(sink.ctx, d, n, NULL));
}

static void put_u32(marble_ipc_buffer *out, uint32_t v)
{
    uint8_t b[4];
    marble__fb_put32(b, v);
    put(out, b, 4);
}

/* Frames a finished Message flatbuffer (legacy: no continuation word) and appends the body. */
static void put_message(marble_ipc_buffer *out, marble__fb_builder *fb, marble__fb_ref root,
                        int legacy, const void *body, size_t body_len)
{
    const uint8_t *d;
    size_t n;
    marble_error e;
    ASSERT_OK(marble__fb_finish(fb, root, &d, &n, &e));
    size_t padded = (n + 7) & ~(size_t)7;
    if (legacy) padded = ((n + 4 + 7) & ~(size_t)7) - 4;
    if (!legacy) put_u32(out, MARBLE_IPC_CONTINUATION);
    put_u32(out, (uint32_t)padded);
    put(out, d, n);
    static const uint8_t z[8];
    put(out, z, padded - n);
    if (body_len) put(out, body, body_len);
    marble__fb_builder_free(fb);
}

static marble__fb_ref message_table(marble__fb_builder *fb, int16_t version, uint8_t type,
                                    marble__fb_ref header, int64_t body_len)
{
    marble__fb_table_start(fb);
    marble__fb_add_i16(fb, MARBLE_FB_MESSAGE_VERSION, version);
    marble__fb_add_u8(fb, MARBLE_FB_MESSAGE_HEADER_TYPE, type);
    marble__fb_add_ref(fb, MARBLE_FB_MESSAGE_HEADER, header);
    marble__fb_add_i64(fb, MARBLE_FB_MESSAGE_BODY_LENGTH, body_len);
    return marble__fb_table_end(fb);
}

typedef struct schema_opts {
    int16_t endianness;
    uint8_t type_type; /* of the one field "x" */
    int32_t int_width; /* Int bitWidth, or FixedSizeBinary byteWidth */
    int dictionary;
    int legacy;
    int16_t version;
} schema_opts;

static void put_schema(marble_ipc_buffer *out, schema_opts so)
{
    marble__fb_builder fb;
    marble__fb_builder_init(&fb);
    marble__fb_ref children = marble__fb_vector_refs(&fb, NULL, 0);
    marble__fb_ref name = marble__fb_string(&fb, "x", 1);
    marble__fb_table_start(&fb);
    if (so.type_type == MARBLE_FB_TYPE_INT) {
        marble__fb_add_i32(&fb, MARBLE_FB_INT_BIT_WIDTH, so.int_width);
        marble__fb_add_u8(&fb, MARBLE_FB_INT_IS_SIGNED, 1);
    } else if (so.type_type == MARBLE_FB_TYPE_FIXED_SIZE_BINARY) {
        marble__fb_add_i32(&fb, MARBLE_FB_FIXED_SIZE_BINARY_BYTE_WIDTH, so.int_width);
    }
    marble__fb_ref type = marble__fb_table_end(&fb);
    marble__fb_ref dict = 0;
    if (so.dictionary) {
        marble__fb_table_start(&fb);
        marble__fb_add_i64(&fb, 0, 1);
        dict = marble__fb_table_end(&fb);
    }
    marble__fb_table_start(&fb);
    marble__fb_add_ref(&fb, MARBLE_FB_FIELD_NAME, name);
    marble__fb_add_u8(&fb, MARBLE_FB_FIELD_NULLABLE, 1);
    marble__fb_add_u8(&fb, MARBLE_FB_FIELD_TYPE_TYPE, so.type_type);
    marble__fb_add_ref(&fb, MARBLE_FB_FIELD_TYPE, type);
    if (dict) marble__fb_add_ref(&fb, MARBLE_FB_FIELD_DICTIONARY, dict);
    marble__fb_add_ref(&fb, MARBLE_FB_FIELD_CHILDREN, children);
    marble__fb_ref field = marble__fb_table_end(&fb);
    marble__fb_ref fields = marble__fb_vector_refs(&fb, &field, 1);
    marble__fb_table_start(&fb);
    marble__fb_add_i16(&fb, MARBLE_FB_SCHEMA_ENDIANNESS, so.endianness);
    marble__fb_add_ref(&fb, MARBLE_FB_SCHEMA_FIELDS, fields);
    marble__fb_ref schema = marble__fb_table_end(&fb);
    marble__fb_ref msg = message_table(&fb, so.version ? so.version : MARBLE_FB_V5,
                                       MARBLE_FB_HEADER_SCHEMA, schema, 0);
    put_message(out, &fb, msg, so.legacy, NULL, 0);
}

typedef struct batch_opts {
    int64_t length;
    const marble__fb_pair *nodes;
    int n_nodes;
    const marble__fb_pair *buffers;
    int n_buffers;
    int codec; /* -1: none */
    int legacy;
} batch_opts;

static void put_batch(marble_ipc_buffer *out, batch_opts bo, const void *body, size_t body_len)
{
    marble__fb_builder fb;
    uint8_t raw[16 * 8];
    marble__fb_builder_init(&fb);
    for (int i = 0; i < bo.n_nodes; i++) {
        marble__fb_put64(raw + 16 * i, (uint64_t)bo.nodes[i].a);
        marble__fb_put64(raw + 16 * i + 8, (uint64_t)bo.nodes[i].b);
    }
    marble__fb_ref nodes = marble__fb_vector_raw(&fb, raw, 16, (size_t)bo.n_nodes, 8);
    for (int i = 0; i < bo.n_buffers; i++) {
        marble__fb_put64(raw + 16 * i, (uint64_t)bo.buffers[i].a);
        marble__fb_put64(raw + 16 * i + 8, (uint64_t)bo.buffers[i].b);
    }
    marble__fb_ref bufs = marble__fb_vector_raw(&fb, raw, 16, (size_t)bo.n_buffers, 8);
    marble__fb_ref comp = 0;
    if (bo.codec >= 0) {
        marble__fb_table_start(&fb);
        marble__fb_add_u8(&fb, MARBLE_FB_BODY_COMPRESSION_CODEC, (uint8_t)bo.codec);
        comp = marble__fb_table_end(&fb);
    }
    marble__fb_table_start(&fb);
    marble__fb_add_i64(&fb, MARBLE_FB_RECORD_BATCH_LENGTH, bo.length);
    marble__fb_add_ref(&fb, MARBLE_FB_RECORD_BATCH_NODES, nodes);
    marble__fb_add_ref(&fb, MARBLE_FB_RECORD_BATCH_BUFFERS, bufs);
    if (comp) marble__fb_add_ref(&fb, MARBLE_FB_RECORD_BATCH_COMPRESSION, comp);
    marble__fb_ref rb = marble__fb_table_end(&fb);
    marble__fb_ref msg =
        message_table(&fb, MARBLE_FB_V5, MARBLE_FB_HEADER_RECORD_BATCH, rb, (int64_t)body_len);
    put_message(out, &fb, msg, bo.legacy, body, body_len);
}

static const schema_opts int32_schema = {MARBLE_FB_ENDIAN_LITTLE, MARBLE_FB_TYPE_INT, 32, 0, 0, 0};

/* Opens `data` and reads batch 0; returns the first failing status. */
static int open_and_read(const marble_ipc_buffer *b, struct ArrowArray *out, marble_error *e)
{
    marble_ipc_reader *r;
    int rc = open_bytes(b->data, b->size, &r, e);
    if (rc != MARBLE_OK) return rc;
    rc = marble_ipc_reader_read(r, 0, out, e);
    marble_ipc_reader_destroy(r);
    return rc;
}

TEST(ipc_handmade_misaligned_buffer)
{
    marble_ipc_buffer b = {0};
    marble_error e;
    struct ArrowArray got;
    put_schema(&b, int32_schema);
    uint8_t body[16] = {0};
    int32_t v[2] = {7, -9};
    memcpy(body + 4, v, 8);
    marble__fb_pair nodes[] = {{2, 0}};
    marble__fb_pair bufs[] = {{0, 0}, {4, 8}};
    put_batch(&b, (batch_opts){2, nodes, 1, bufs, 2, -1, 0}, body, sizeof body);
    put_u32(&b, MARBLE_IPC_CONTINUATION);
    put_u32(&b, 0);
    if (open_and_read(&b, &got, &e) != MARBLE_OK) FAIL("%s", e.message);
    const int32_t *vals = got.children[0]->buffers[1];
    ASSERT_EQ_INT((uintptr_t)vals % 8, 0);
    ASSERT_FALSE((const uint8_t *)vals >= b.data && (const uint8_t *)vals < b.data + b.size);
    ASSERT_EQ_INT(vals[0], 7);
    ASSERT_EQ_INT(vals[1], -9);
    got.release(&got);
    free(b.data);
}

TEST(ipc_handmade_legacy_prefix_and_no_eos)
{
    marble_ipc_buffer b = {0};
    marble_error e;
    struct ArrowArray got;
    schema_opts so = int32_schema;
    so.legacy = 1;
    put_schema(&b, so);
    int32_t body[2] = {1, 2};
    marble__fb_pair nodes[] = {{2, 0}};
    marble__fb_pair bufs[] = {{0, 0}, {0, 8}};
    put_batch(&b, (batch_opts){2, nodes, 1, bufs, 2, -1, 1}, body, sizeof body);
    ASSERT_OK(open_and_read(&b, &got, &e));
    ASSERT_EQ_INT(((const int32_t *)got.children[0]->buffers[1])[1], 2);
    got.release(&got);
    put_u32(&b, 0);
    put(&b, "trailing", 8);
    ASSERT_OK(open_and_read(&b, &got, &e));
    got.release(&got);
    free(b.data);
}

TEST(ipc_handmade_rejections)
{
    marble_error e;
    struct ArrowArray got;
    marble_ipc_buffer b;
    int32_t body[4] = {1, 2, 3, 4};
    marble__fb_pair nodes[] = {{2, 0}};
    marble__fb_pair bufs[] = {{0, 0}, {0, 8}};

    struct {
        schema_opts so;
        int code;
        const char *text;
    } schemas[] = {
        {{MARBLE_FB_ENDIAN_BIG, MARBLE_FB_TYPE_INT, 32, 0, 0, 0},
         MARBLE_ERR_UNSUPPORTED,
         "big-endian"},
        {{7, MARBLE_FB_TYPE_INT, 32, 0, 0, 0}, MARBLE_ERR_CORRUPTION, "endianness"},
        {{0, MARBLE_FB_TYPE_DECIMAL, 0, 0, 0, 0}, MARBLE_ERR_UNSUPPORTED, "Decimal"},
        {{0, MARBLE_FB_TYPE_LIST, 0, 0, 0, 0}, MARBLE_ERR_UNSUPPORTED, "List"},
        {{0, 99, 0, 0, 0, 0}, MARBLE_ERR_UNSUPPORTED, "unknown"},
        {{0, MARBLE_FB_TYPE_NONE, 0, 0, 0, 0}, MARBLE_ERR_CORRUPTION, "no type"},
        {{0, MARBLE_FB_TYPE_INT, 12, 0, 0, 0}, MARBLE_ERR_CORRUPTION, "bitWidth 12"},
        {{0, MARBLE_FB_TYPE_INT, 32, 1, 0, 0}, MARBLE_ERR_UNSUPPORTED, "dictionary"},
        {{0, MARBLE_FB_TYPE_INT, 32, 0, 0, 2}, MARBLE_ERR_UNSUPPORTED, "version V3"},
        {{0, MARBLE_FB_TYPE_FIXED_SIZE_BINARY, 0, 0, 0, 0}, MARBLE_ERR_CORRUPTION, "byteWidth"},
        {{0, MARBLE_FB_TYPE_FIXED_SIZE_BINARY, INT32_MAX, 0, 0, 0},
         MARBLE_ERR_UNSUPPORTED,
         "byteWidth"},
        {{0, MARBLE_FB_TYPE_DATE, 0, 0, 0, 0}, MARBLE_ERR_UNSUPPORTED, "date64"},
    };
    for (size_t i = 0; i < sizeof schemas / sizeof schemas[0]; i++) {
        memset(&b, 0, sizeof b);
        put_schema(&b, schemas[i].so);
        marble_ipc_reader *r;
        int rc = open_bytes(b.data, b.size, &r, &e);
        if (rc != schemas[i].code) FAIL("schema case %zu: %d (%s)", i, rc, e.message);
        ASSERT_CONTAINS(e.message, schemas[i].text);
        free(b.data);
    }

    struct {
        batch_opts bo;
        size_t body_len;
        int code;
        const char *text;
    } batches[] = {
        {{2, nodes, 1, bufs, 2, 9, 0}, 8, MARBLE_ERR_UNSUPPORTED, "codec"},
        {{2, nodes, 0, bufs, 2, -1, 0}, 8, MARBLE_ERR_CORRUPTION, "RecordBatch.nodes has 0"},
        {{2, nodes, 1, bufs, 1, -1, 0}, 8, MARBLE_ERR_CORRUPTION, "RecordBatch.buffers has 1"},
        {{-1, nodes, 1, bufs, 2, -1, 0}, 8, MARBLE_ERR_CORRUPTION, "negative length"},
        {{3, nodes, 1, bufs, 2, -1, 0}, 8, MARBLE_ERR_CORRUPTION, "has 2 rows"},
        {{2, (marble__fb_pair[]){{2, 3}}, 1, bufs, 2, -1, 0},
         8,
         MARBLE_ERR_CORRUPTION,
         "null count"},
        {{2, (marble__fb_pair[]){{2, 1}}, 1, bufs, 2, -1, 0}, 8, MARBLE_ERR_CORRUPTION, "validity"},
        {{2, nodes, 1, (marble__fb_pair[]){{0, 0}, {8, 8}}, 2, -1, 0},
         8,
         MARBLE_ERR_CORRUPTION,
         "outside the body"},
        {{2, (marble__fb_pair[]){{2, 1}}, 1, (marble__fb_pair[]){{0, 8}, {4, 4}}, 2, -1, 0},
         8,
         MARBLE_ERR_CORRUPTION,
         "overlap"},
        {{2, nodes, 1, (marble__fb_pair[]){{0, 0}, {-8, 8}}, 2, -1, 0},
         8,
         MARBLE_ERR_CORRUPTION,
         "outside the body"},
        {{3, (marble__fb_pair[]){{3, 0}}, 1, bufs, 2, -1, 0},
         8,
         MARBLE_ERR_CORRUPTION,
         "holds 8 bytes, 12 needed"},
        {{2, nodes, 1, (marble__fb_pair[]){{0, 0}, {0, 4}}, 2, 1, 0},
         8,
         MARBLE_ERR_CORRUPTION,
         "lacks its 8-byte length"},
        {{2, nodes, 1, (marble__fb_pair[]){{0, 0}, {0, 16}}, 2, 1, 0},
         16,
         MARBLE_ERR_CORRUPTION,
         "claim to expand"},
        {{2, nodes, 1, (marble__fb_pair[]){{0, 0}, {0, 16}}, 2, 0, 0},
         16,
         MARBLE_ERR_CORRUPTION,
         "LZ4 frame"},
    };
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        memset(&b, 0, sizeof b);
        put_schema(&b, int32_schema);
        uint8_t bb[16];
        memcpy(bb, body, sizeof bb);
        if (batches[i].body_len == 16) {
            marble__fb_put64(bb, batches[i].bo.codec == 1 ? (uint64_t)1 << 60 : 8);
        }
        put_batch(&b, batches[i].bo, bb, batches[i].body_len);
        int rc = open_and_read(&b, &got, &e);
        if (rc != batches[i].code) FAIL("batch case %zu: %d (%s)", i, rc, e.message);
        ASSERT_CONTAINS(e.message, batches[i].text);
        ASSERT_NULL(got.release);
        free(b.data);
    }

    /* Streams that are wrong as a whole. */
    memset(&b, 0, sizeof b);
    put_schema(&b, int32_schema);
    put_schema(&b, int32_schema);
    ASSERT_EQ_INT(open_and_read(&b, &got, &e), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(e.message, "second Schema");
    free(b.data);
    memset(&b, 0, sizeof b);
    put_batch(&b, (batch_opts){2, nodes, 1, bufs, 2, -1, 0}, body, 8);
    ASSERT_EQ_INT(open_and_read(&b, &got, &e), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(e.message, "not a Schema");
    free(b.data);
    ASSERT_EQ_INT(open_bytes(NULL, 0, NULL, &e), MARBLE_ERR_INVALID_ARGUMENT);
    marble_ipc_reader *r;
    ASSERT_EQ_INT(open_bytes((const uint8_t *)"", 0, &r, &e), MARBLE_ERR_CORRUPTION);
    ASSERT_EQ_INT(open_bytes((const uint8_t *)"\xff\xff\xff\xff\0\0\0\0", 8, &r, &e),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_EQ_INT(open_bytes((const uint8_t *)"ARROW1\0\0xxxxxxARROW", 19, &r, &e),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(e.message, "does not end");
}

static marble__fb_ref int_field(marble__fb_builder *fb)
{
    marble__fb_ref children = marble__fb_vector_refs(fb, NULL, 0);
    marble__fb_table_start(fb);
    marble__fb_add_i32(fb, MARBLE_FB_INT_BIT_WIDTH, 16);
    marble__fb_ref type = marble__fb_table_end(fb);
    marble__fb_table_start(fb);
    marble__fb_add_u8(fb, MARBLE_FB_FIELD_TYPE_TYPE, MARBLE_FB_TYPE_INT);
    marble__fb_add_ref(fb, MARBLE_FB_FIELD_TYPE, type);
    marble__fb_add_ref(fb, MARBLE_FB_FIELD_CHILDREN, children);
    return marble__fb_table_end(fb);
}

/* A Struct_ field whose children are `n` references to the same `child` table. */
static marble__fb_ref struct_field(marble__fb_builder *fb, marble__fb_ref child, int n)
{
    marble__fb_ref refs[16];
    for (int i = 0; i < n; i++)
        refs[i] = child;
    marble__fb_ref children = marble__fb_vector_refs(fb, refs, (size_t)n);
    marble__fb_table_start(fb);
    marble__fb_ref type = marble__fb_table_end(fb);
    marble__fb_table_start(fb);
    marble__fb_add_u8(fb, MARBLE_FB_FIELD_TYPE_TYPE, MARBLE_FB_TYPE_STRUCT);
    marble__fb_add_ref(fb, MARBLE_FB_FIELD_TYPE, type);
    marble__fb_add_ref(fb, MARBLE_FB_FIELD_CHILDREN, children);
    return marble__fb_table_end(fb);
}

static int open_schema_of(marble__fb_builder *fb, marble__fb_ref field, marble_error *e)
{
    marble_ipc_buffer b = {0};
    marble__fb_ref fields = marble__fb_vector_refs(fb, &field, 1);
    marble__fb_table_start(fb);
    marble__fb_add_ref(fb, MARBLE_FB_SCHEMA_FIELDS, fields);
    marble__fb_ref schema = marble__fb_table_end(fb);
    marble__fb_ref msg = message_table(fb, MARBLE_FB_V5, MARBLE_FB_HEADER_SCHEMA, schema, 0);
    put_message(&b, fb, msg, 0, NULL, 0);
    marble_ipc_reader *r;
    int rc = open_bytes(b.data, b.size, &r, e);
    if (rc == MARBLE_OK) {
        struct ArrowSchema s;
        ASSERT_OK(marble_ipc_reader_schema(r, &s, e));
        s.release(&s);
        marble_ipc_reader_destroy(r);
    }
    free(b.data);
    return rc;
}

TEST(ipc_handmade_schema_limits)
{
    marble__fb_builder fb;
    marble_error e;
    for (int depth = 60; depth <= 70; depth += 10) {
        marble__fb_builder_init(&fb);
        marble__fb_ref f = int_field(&fb);
        for (int i = 0; i < depth; i++)
            f = struct_field(&fb, f, 1);
        int rc = open_schema_of(&fb, f, &e);
        if (depth == 60) {
            if (rc != MARBLE_OK) FAIL("depth 60: %s", e.message);
        } else {
            ASSERT_EQ_INT(rc, MARBLE_ERR_CORRUPTION);
            ASSERT_CONTAINS(e.message, "nested deeper than 64");
        }
    }
    /* A few hundred bytes of metadata that name 16^4 fields by sharing tables. */
    marble__fb_builder_init(&fb);
    marble__fb_ref f = int_field(&fb);
    for (int i = 0; i < 4; i++)
        f = struct_field(&fb, f, 16);
    ASSERT_EQ_INT(open_schema_of(&fb, f, &e), MARBLE_ERR_LIMIT);
    ASSERT_CONTAINS(e.message, "more than 65536 fields");
    marble__fb_builder_init(&fb);
    f = int_field(&fb);
    for (int i = 0; i < 3; i++)
        f = struct_field(&fb, f, 16);
    ASSERT_OK(open_schema_of(&fb, f, &e));
}

/* The 8-byte prefix must be the uncompressed length; a frame that says otherwise is corrupt
 * (apache-arrow JS 21.2.0 writes the compressed length there). */
TEST(ipc_handmade_compressed_length_mismatch)
{
    int32_t vals[4] = {5, 6, 7, 8};
    marble__fb_pair nodes[] = {{4, 0}};
    for (int codec = 0; codec <= 1; codec++) {
        for (int64_t claim = 8; claim <= 24; claim += 8) {
            uint8_t body[256] = {0};
            size_t n;
            if (codec == 0) {
                LZ4F_preferences_t prefs;
                memset(&prefs, 0, sizeof prefs);
                prefs.frameInfo.contentSize = sizeof vals;
                n = LZ4F_compressFrame(body + 8, sizeof body - 8, vals, sizeof vals, &prefs);
                ASSERT_FALSE(LZ4F_isError(n));
            } else {
                n = ZSTD_compress(body + 8, sizeof body - 8, vals, sizeof vals, 1);
                ASSERT_FALSE(ZSTD_isError(n));
            }
            marble__fb_put64(body, (uint64_t)(claim == 24 ? (int64_t)n : claim + 8));
            size_t len = (8 + n + 7) & ~(size_t)7;
            marble__fb_pair bufs[] = {{0, 0}, {0, (int64_t)(8 + n)}};
            marble_ipc_buffer b = {0};
            marble_error e;
            struct ArrowArray got;
            put_schema(&b, int32_schema);
            put_batch(&b, (batch_opts){4, nodes, 1, bufs, 2, codec, 0}, body, len);
            int64_t ulen = claim == 24 ? (int64_t)n : claim + 8;
            int rc = open_and_read(&b, &got, &e);
            if (ulen == 16) {
                if (rc != MARBLE_OK) FAIL("codec %d: %s", codec, e.message);
                ASSERT_EQ_INT(((const int32_t *)got.children[0]->buffers[1])[3], 8);
                got.release(&got);
            } else {
                ASSERT_EQ_INT(rc, MARBLE_ERR_CORRUPTION);
                ASSERT_CONTAINS(e.message, "content size differs");
            }
            free(b.data);
        }
    }
}

/* ---- corrupt input --------------------------------------------------------------------------- */

/* Opens and reads everything, checking what it gets; returns the first error (or OK). */
static int exercise(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    marble_ipc_reader *r;
    marble_error e;
    int rc = open_bytes(copy, size, &r, &e);
    if (rc == MARBLE_OK) {
        struct ArrowSchema s;
        ASSERT_OK(marble_ipc_reader_schema(r, &s, &e));
        ASSERT_OK(marble_arrow_schema_validate(&s, &e));
        for (int64_t i = 0; i < marble_ipc_reader_num_batches(r); i++) {
            struct ArrowArray a;
            int brc = marble_ipc_reader_read(r, i, &a, &e);
            if (brc != MARBLE_OK) {
                ASSERT_NULL(a.release);
                ASSERT_TRUE(e.message[0] != 0);
                if (rc == MARBLE_OK) rc = brc;
                continue;
            }
            ASSERT_OK(marble_arrow_array_validate(&s, &a, 0, &e));
            for (int64_t c = 0; c < a.n_children; c++) {
                const struct ArrowArray *col = a.children[c];
                for (int64_t k = 0; k < col->length && k < 1000; k++) {
                    const void *d;
                    size_t len;
                    if (!marble_arrow_is_null(col, k) &&
                        marble_arrow_get_bytes(s.children[c], col, k, &d, &len) == MARBLE_OK &&
                        len > 0) {
                        volatile uint8_t sink = ((const uint8_t *)d)[len - 1];
                        (void)sink;
                    }
                }
            }
            a.release(&a);
        }
        s.release(&s);
        struct ArrowArrayStream st;
        ASSERT_OK(marble_ipc_reader_stream(r, &st, &e));
        marble_ipc_reader_destroy(r);
        struct ArrowArray a;
        while (st.get_next(&st, &a) == 0 && a.release)
            a.release(&a);
        st.release(&st);
    } else {
        ASSERT_NULL(r);
        ASSERT_TRUE(e.message[0] != 0);
    }
    free(copy);
    return rc;
}

static void small_file(marble_ipc_format f, marble_ipc_compression c, marble_ipc_buffer *buf)
{
    struct ArrowSchema s;
    struct ArrowArray b[2];
    marble_error e;
    marble_field_spec fields[] = {
        {"id", "l", 0}, {"name", "u", 1}, {"ok", "b", 1}, {"f", "w:2", 1}};
    ASSERT_OK(marble_arrow_schema_make(&s, fields, 4, NULL, NULL, 0, &e));
    for (int k = 0; k < 2; k++) {
        marble_batch_builder *bb;
        ASSERT_OK(marble_batch_builder_create(&s, &bb, &e));
        for (int r = 0; r < 5 + k; r++) {
            ASSERT_OK(marble_builder_append_int(bb, 0, r * 11, &e));
            if (r == 2)
                ASSERT_OK(marble_builder_append_null(bb, 1, &e));
            else
                ASSERT_OK(marble_builder_append_bytes(bb, 1, "abcdef", (size_t)r, &e));
            ASSERT_OK(marble_builder_append_int(bb, 2, r & 1, &e));
            ASSERT_OK(marble_builder_append_bytes(bb, 3, "xy", 2, &e));
        }
        ASSERT_OK(marble_batch_builder_finish(bb, &b[k], &e));
        marble_batch_builder_destroy(bb);
    }
    marble_ipc_write_options o = {f, c, 0, 8};
    write_all(&s, b, 2, &o, buf);
    b[0].release(&b[0]);
    b[1].release(&b[1]);
    s.release(&s);
}

TEST(ipc_truncated_at_every_byte)
{
    for (int f = 0; f < 2; f++) {
        for (int c = 0; c <= 2; c++) {
            marble_ipc_buffer buf;
            small_file((marble_ipc_format)f, (marble_ipc_compression)c, &buf);
            ASSERT_EQ_INT(exercise(buf.data, buf.size), MARBLE_OK);
            int ok = 0;
            for (size_t n = 0; n < buf.size; n++)
                ok += exercise(buf.data, n) == MARBLE_OK;
            /* A file needs its footer; a stream cut at a message boundary is still whole. */
            if (f == MARBLE_IPC_FILE) ASSERT_EQ_INT(ok, 0);
            if (f == MARBLE_IPC_STREAM) ASSERT_GE_INT(ok, 3);
            free(buf.data);
        }
    }
}

TEST(ipc_flipped_bytes)
{
    static const uint8_t masks[] = {0xFF, 0x01, 0x80, 0x10, 0x7F};
    for (int f = 0; f < 2; f++) {
        for (int c = 0; c <= 2; c++) {
            marble_ipc_buffer buf;
            small_file((marble_ipc_format)f, (marble_ipc_compression)c, &buf);
            int failed = 0;
            for (size_t pos = 0; pos < buf.size; pos++) {
                for (size_t m = 0; m < sizeof masks; m++) {
                    buf.data[pos] ^= masks[m];
                    failed += exercise(buf.data, buf.size) != MARBLE_OK;
                    buf.data[pos] ^= masks[m];
                }
            }
            ASSERT_GT_INT(failed, 0);
            free(buf.data);
        }
    }
}

TEST(ipc_random_corruption)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int f = 0; f < 2; f++) {
        for (int c = 0; c <= 2; c++) {
            marble_ipc_buffer buf;
            small_file((marble_ipc_format)f, (marble_ipc_compression)c, &buf);
            uint8_t *copy = malloc(buf.size);
            for (int round = 0; round < 1500; round++) {
                memcpy(copy, buf.data, buf.size);
                int n = 1 + round % 8;
                for (int k = 0; k < n; k++) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    copy[(x >> 8) % buf.size] = (uint8_t)x;
                }
                exercise(copy, buf.size);
            }
            free(copy);
            free(buf.data);
        }
    }
}

/* ---- the flatbuffer codec -------------------------------------------------------------------- */

TEST(fb_builder_reader_roundtrip)
{
    marble__fb_builder fb;
    marble_error e;
    const uint8_t *d;
    size_t n;
    marble__fb_builder_init(&fb);
    marble__fb_ref k = marble__fb_string(&fb, "key", 3);
    marble__fb_ref v = marble__fb_string(&fb, "va\0lue", 6);
    marble__fb_table_start(&fb);
    marble__fb_add_ref(&fb, MARBLE_FB_KEYVALUE_KEY, k);
    marble__fb_add_ref(&fb, MARBLE_FB_KEYVALUE_VALUE, v);
    marble__fb_ref kv = marble__fb_table_end(&fb);
    marble__fb_ref kvs = marble__fb_vector_refs(&fb, &kv, 1);
    marble__fb_table_start(&fb);
    marble__fb_add_i64(&fb, 3, -5);
    marble__fb_add_i16(&fb, 0, 4);
    marble__fb_add_ref(&fb, 4, kvs);
    marble__fb_ref root = marble__fb_table_end(&fb);
    ASSERT_OK(marble__fb_finish(&fb, root, &d, &n, &e));
    ASSERT_EQ_INT(n % 8, 0);
    uint8_t *copy = malloc(n);
    memcpy(copy, d, n);
    marble__fb_builder_free(&fb);

    marble__fb_message m;
    ASSERT_OK(marble__fb_read_message(copy, n, &m, &e));
    ASSERT_EQ_INT(m.version, 4);
    ASSERT_EQ_INT(m.header_type, 0);
    ASSERT_EQ_INT(m.body_length, -5);
    ASSERT_FALSE(m.has_header);
    ASSERT_EQ_INT(m.custom_metadata.count, 1);
    marble__fb_table t;
    marble__fb_keyvalue p;
    ASSERT_OK(marble__fb_vector_table(&m.custom_metadata, 0, "KeyValue", &t, &e));
    ASSERT_OK(marble__fb_read_keyvalue(&t, &p, &e));
    ASSERT_EQ_INT(p.key_len, 3);
    ASSERT_EQ_INT(memcmp(p.key, "key", 4), 0);
    ASSERT_EQ_INT(p.value_len, 6);
    ASSERT_EQ_INT(memcmp(p.value, "va\0lue", 7), 0);
    ASSERT_EQ_INT(marble__fb_vector_table(&m.custom_metadata, 1, "KeyValue", &t, &e),
                  MARBLE_ERR_CORRUPTION);

    /* Every truncation fails cleanly (heap copies of the exact size, for ASan). */
    for (size_t len = 0; len < n; len++) {
        uint8_t *tr = malloc(len ? len : 1);
        memcpy(tr, copy, len);
        marble__fb_read_message(tr, len, &m, &e);
        free(tr);
    }
    free(copy);

    /* Misuse is reported by finish. */
    marble__fb_builder_init(&fb);
    marble__fb_table_start(&fb);
    marble__fb_string(&fb, "x", 1);
    marble__fb_table_end(&fb);
    ASSERT_EQ_INT(marble__fb_finish(&fb, 4, &d, &n, &e), MARBLE_ERR_INTERNAL);
    marble__fb_builder_free(&fb);
}

/* Writes little-endian words into a zeroed buffer of n bytes. */
static uint8_t *words(size_t n, const uint32_t *w, size_t nw)
{
    uint8_t *b = calloc(1, n);
    for (size_t i = 0; i < nw && 4 * i + 4 <= n; i++)
        marble__fb_put32(b + 4 * i, w[i]);
    return b;
}

TEST(fb_reader_rejects_malformed)
{
    marble_error e;
    marble__fb_table t;
    marble__fb_message m;

    ASSERT_EQ_INT(marble__fb_root((const uint8_t *)"abc", 3, "Message", &t, &e),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(e.message, "shorter than 8");

    struct {
        uint32_t w[8];
        size_t n;
        const char *text;
    } cases[] = {
        /* root offset past the end */
        {{0xFFFFFFF0u, 0}, 8, "table runs past the end"},
        /* vtable before the buffer */
        {{4, 0x100}, 8, "vtable lies outside"},
        /* vtable after the buffer */
        {{4, (uint32_t)-64}, 8, "vtable lies outside"},
        /* vtable size 2 (vtable at 8: size 2, table size 8) */
        {{4, (uint32_t)-4, 0x00080002u}, 12, "vtable size"},
        /* odd vtable size */
        {{4, (uint32_t)-4, 0x00080005u, 0}, 16, "vtable size"},
        /* table size past the end */
        {{4, (uint32_t)-4, 0x00400004u}, 12, "table size"},
        /* vtable runs past the end (size 40) */
        {{4, (uint32_t)-4, 0x00080028u}, 12, "vtable size"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *b = words(cases[i].n, cases[i].w, 8);
        int rc = marble__fb_read_message(b, cases[i].n, &m, &e);
        if (rc != MARBLE_ERR_CORRUPTION) FAIL("case %zu: %d", i, rc);
        ASSERT_CONTAINS(e.message, cases[i].text);
        ASSERT_CONTAINS(e.message, "Message");
        free(b);
    }

    /* A table (at 12) whose vtable (at 4) puts field 3 (bodyLength) outside the 8-byte table. */
    {
        uint32_t w[] = {16, 0x0008000Cu, 0, 0x00040000u, 12, 0};
        uint8_t *b = words(24, w, 6);
        ASSERT_EQ_INT(marble__fb_read_message(b, 24, &m, &e), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(e.message, "Message.bodyLength field lies outside its table");
        free(b);
    }

    /* Build a valid RecordBatch and a KeyValue, then break their vectors and strings. */
    marble__fb_builder fb;
    const uint8_t *d;
    size_t n;
    marble__fb_builder_init(&fb);
    uint8_t raw[32] = {0};
    marble__fb_ref nodes = marble__fb_vector_raw(&fb, raw, 16, 1, 8);
    marble__fb_ref bufs = marble__fb_vector_raw(&fb, raw, 16, 2, 8);
    marble__fb_ref key = marble__fb_string(&fb, "k", 1);
    marble__fb_table_start(&fb);
    marble__fb_add_ref(&fb, MARBLE_FB_KEYVALUE_KEY, key);
    marble__fb_ref kv = marble__fb_table_end(&fb);
    marble__fb_ref kvs = marble__fb_vector_refs(&fb, &kv, 1);
    marble__fb_table_start(&fb);
    marble__fb_add_i64(&fb, MARBLE_FB_RECORD_BATCH_LENGTH, 1);
    marble__fb_add_ref(&fb, MARBLE_FB_RECORD_BATCH_NODES, nodes);
    marble__fb_add_ref(&fb, MARBLE_FB_RECORD_BATCH_BUFFERS, bufs);
    marble__fb_add_ref(&fb, 5, kvs);
    marble__fb_ref rb = marble__fb_table_end(&fb);
    ASSERT_OK(marble__fb_finish(&fb, rb, &d, &n, &e));
    uint8_t *b = malloc(n);
    memcpy(b, d, n);
    marble__fb_builder_free(&fb);

    marble__fb_record_batch rec;
    ASSERT_OK(marble__fb_root(b, n, "RecordBatch", &t, &e));
    ASSERT_OK(marble__fb_read_record_batch(&t, &rec, &e));
    ASSERT_EQ_INT(rec.length, 1);
    ASSERT_EQ_INT(rec.nodes.count, 1);
    ASSERT_EQ_INT(rec.buffers.count, 2);
    ASSERT_FALSE(rec.has_compression);

    uint8_t *count = b + rec.buffers.pos - 4;
    marble__fb_put32(count, 0x7FFFFFFF);
    ASSERT_EQ_INT(marble__fb_read_record_batch(&t, &rec, &e), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(e.message, "RecordBatch.buffers vector runs past the end of the metadata");
    marble__fb_put32(count, 2);

    marble__fb_vector kvv;
    marble__fb_table kt;
    marble__fb_keyvalue p;
    ASSERT_OK(marble__fb_get_vector(&t, 5, "custom_metadata", 4, &kvv, NULL, &e));
    ASSERT_OK(marble__fb_vector_table(&kvv, 0, "KeyValue", &kt, &e));
    ASSERT_OK(marble__fb_read_keyvalue(&kt, &p, &e));
    uint8_t *s = (uint8_t *)p.key;
    s[1] = 'x';
    ASSERT_EQ_INT(marble__fb_read_keyvalue(&kt, &p, &e), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(e.message, "KeyValue.key string lacks its NUL");
    s[1] = 0;
    marble__fb_put32(s - 4, 1u << 30);
    ASSERT_EQ_INT(marble__fb_read_keyvalue(&kt, &p, &e), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(e.message, "KeyValue.key string runs past the end of the metadata");
    marble__fb_put32(s - 4, 1);
    uint8_t *elem = b + kvv.pos;
    marble__fb_put32(elem, 0x40000000u);
    ASSERT_EQ_INT(marble__fb_vector_table(&kvv, 0, "KeyValue", &kt, &e), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(e.message, "points past the end");
    free(b);
}

/* The glue the storage engine uses: an IPC file read through the VFS as a memory map. The arrays
 * point into the mapping and keep it alive after the reader and the file handle are gone. */
static void map_retain(void *m)
{
    marble_mapping_retain(m);
}

static void map_release(void *m)
{
    marble_mapping_release(m);
}

TEST(ipc_zero_copy_from_a_mapped_vfs_file)
{
    struct ArrowSchema s;
    struct ArrowArray b, got;
    marble_ipc_buffer buf;
    marble_error e;
    make_all_schema(&s);
    build_batch(&s, 0, 200, &b);
    marble_ipc_write_options o = {MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 0, 64};
    write_all(&s, &b, 1, &o, &buf);
    marble_fs *fs;
    ASSERT_OK(marble_fs_create(&fs, &e));
    char path[1024];
    snprintf(path, sizeof path, "%s/batch.arrow", marble_test_tmpdir());
    ASSERT_OK(marble_fs_write_all(fs, path, buf.data, buf.size, 1, &e));
    free(buf.data);

    marble_file *f;
    marble_mapping *m;
    ASSERT_OK(marble_fs_open(fs, path, MARBLE_OPEN_READ, &f, &e));
    ASSERT_OK(marble_file_map(f, 0, 0, &m, &e));
    ASSERT_TRUE(marble_mapping_is_mapped(m));
    ASSERT_OK(marble_file_close(f, &e));
    const uint8_t *lo = marble_mapping_data(m), *hi = lo + marble_mapping_size(m);
    marble_ipc_source src = {lo, marble_mapping_size(m), m, map_retain, map_release};
    marble_ipc_reader *r;
    ASSERT_OK(marble_ipc_reader_open(&src, &r, &e));
    marble_mapping_release(m); /* the reader holds its own reference now */
    ASSERT_OK(marble_ipc_reader_read(r, 0, &got, &e));
    marble_ipc_reader_destroy(r);
    check_inside(&got, lo, hi, 1);
    compare_batches(&s, &b, 0, &got, 0, 200);
    marble_fs_stats st;
    marble_fs_get_stats(fs, &st);
    ASSERT_EQ_INT(st.open_mappings, 1); /* kept alive by the batch alone */
    got.release(&got);
    marble_fs_get_stats(fs, &st);
    ASSERT_EQ_INT(st.open_mappings, 0);
    ASSERT_OK(marble_fs_destroy(fs, &e));
    b.release(&b);
    s.release(&s);
}

/* ---- appendix -------------------------------------------------------------------------------- */

TEST(ipc_file_appendix)
{
    struct ArrowSchema s;
    struct ArrowArray batches[N_BATCHES];
    marble_ipc_buffer buf = {0}, plain = {0};
    marble_error e;
    make_all_schema(&s);
    int first = 0;
    for (int i = 0; i < N_BATCHES; i++) {
        build_batch(&s, first, batch_sizes[i], &batches[i]);
        first += batch_sizes[i];
    }
    uint8_t appendix[13];
    for (size_t i = 0; i < sizeof appendix; i++)
        appendix[i] = (uint8_t)(0xA0 + i);

    marble_ipc_write_options o = {MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 0, 8};
    write_all(&s, batches, N_BATCHES, &o, &plain);
    marble_ipc_writer *w;
    ASSERT_OK(marble_ipc_writer_create(marble_ipc_buffer_sink(&buf), &s, &o, &w, &e));
    for (int i = 0; i < N_BATCHES; i++)
        ASSERT_OK(marble_ipc_writer_write(w, &batches[i], &e));
    ASSERT_OK(marble_ipc_writer_finish_appendix(w, appendix, sizeof appendix, &e));
    ASSERT_EQ_INT(marble_ipc_writer_finish_appendix(w, appendix, 1, &e),
                  MARBLE_ERR_INVALID_ARGUMENT);
    marble_ipc_writer_destroy(w);

    /* The same file with 16 more bytes (13 + 3 padding) right before the footer. */
    ASSERT_EQ_U64(buf.size, plain.size + 16);
    uint32_t flen;
    memcpy(&flen, buf.data + buf.size - 10, 4);
    size_t footer = buf.size - 10 - flen;
    ASSERT_EQ_INT(footer % 8, 0);
    ASSERT_TRUE(memcmp(buf.data + footer - 16, appendix, sizeof appendix) == 0);
    for (size_t i = footer - 3; i < footer; i++)
        ASSERT_EQ_INT(buf.data[i], 0);
    /* The end-of-stream marker sits right before the appendix. */
    static const uint8_t eos[8] = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0};
    ASSERT_TRUE(memcmp(buf.data + footer - 24, eos, 8) == 0);
    ASSERT_TRUE(memcmp(buf.data, plain.data, footer - 16) == 0);

    /* Read as a file (footer blocks) and as a stream (stops at the end-of-stream marker). */
    for (int as_stream = 0; as_stream < 2; as_stream++) {
        marble_ipc_reader *r;
        ASSERT_OK(open_bytes(buf.data + (as_stream ? 8 : 0), buf.size - (as_stream ? 8 : 0), &r,
                             &e));
        ASSERT_EQ_INT(marble_ipc_reader_format(r), as_stream ? MARBLE_IPC_STREAM : MARBLE_IPC_FILE);
        ASSERT_EQ_INT(marble_ipc_reader_num_batches(r), N_BATCHES);
        for (int i = 0; i < N_BATCHES; i++) {
            struct ArrowArray got;
            ASSERT_OK(marble_ipc_reader_read(r, i, &got, &e));
            compare_batches(&s, &batches[i], 0, &got, 0, batch_sizes[i]);
            got.release(&got);
        }
        marble_ipc_reader_destroy(r);
    }

    /* An empty appendix is a plain file; a stream writer refuses appendices. */
    marble_ipc_buffer empty = {0};
    ASSERT_OK(marble_ipc_writer_create(marble_ipc_buffer_sink(&empty), &s, &o, &w, &e));
    for (int i = 0; i < N_BATCHES; i++)
        ASSERT_OK(marble_ipc_writer_write(w, &batches[i], &e));
    ASSERT_OK(marble_ipc_writer_finish_appendix(w, NULL, 0, &e));
    marble_ipc_writer_destroy(w);
    ASSERT_EQ_U64(empty.size, plain.size);
    ASSERT_TRUE(memcmp(empty.data, plain.data, plain.size) == 0);
    marble_ipc_buffer sbuf = {0};
    marble_ipc_write_options so = {MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 0, 8};
    ASSERT_OK(marble_ipc_writer_create(marble_ipc_buffer_sink(&sbuf), &s, &so, &w, &e));
    ASSERT_EQ_INT(marble_ipc_writer_finish_appendix(w, appendix, sizeof appendix, &e),
                  MARBLE_ERR_INVALID_ARGUMENT);
    marble_ipc_writer_destroy(w);

    for (int i = 0; i < N_BATCHES; i++)
        batches[i].release(&batches[i]);
    s.release(&s);
    free(buf.data);
    free(plain.data);
    free(empty.data);
    free(sbuf.data);
}
