/* Tests for row values and the batch assembler: round trips of every type, projection, deletes,
 * _seq/_op, add_arrow, random schemas and rows, corrupt values, init errors. */
#include <math.h>
#include <stdlib.h>

#include "lsm/rowcodec.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static int64_t rnd_range(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

static marble_arrow_type type_of(const struct ArrowSchema *s)
{
    marble_arrow_type t;
    if (marble_arrow_type_parse(s->format, &t, NULL) != MARBLE_OK) FAIL("bad format %s", s->format);
    return t;
}

static int is_float(marble_arrow_type_id id)
{
    return id == MARBLE_ARROW_FLOAT32 || id == MARBLE_ARROW_FLOAT64;
}

static int is_uint(marble_arrow_type_id id)
{
    return id == MARBLE_ARROW_UINT8 || id == MARBLE_ARROW_UINT16 || id == MARBLE_ARROW_UINT32 ||
           id == MARBLE_ARROW_UINT64;
}

static int is_bytes(marble_arrow_type_id id)
{
    return id == MARBLE_ARROW_UTF8 || id == MARBLE_ARROW_LARGE_UTF8 || id == MARBLE_ARROW_BINARY ||
           id == MARBLE_ARROW_LARGE_BINARY || id == MARBLE_ARROW_FIXED_SIZE_BINARY;
}

/* Element ei of (es, ea) equals element gi of (gs, ga). key: floats compare as key values (-0.0
 * equals +0.0, NaN equals NaN). */
static void expect_cell(const struct ArrowSchema *es, const struct ArrowArray *ea, int64_t ei,
                        const struct ArrowSchema *gs, const struct ArrowArray *ga, int64_t gi,
                        int key, const char *what, int64_t row)
{
    int en = marble_arrow_is_null(ea, ei), gn = marble_arrow_is_null(ga, gi);
    if (en != gn) FAIL("%s row %" PRId64 ": null %d vs %d", what, row, en, gn);
    if (en) return;
    marble_arrow_type t = type_of(es);
    if (is_float(t.id)) {
        double x = marble_arrow_get_double(es, ea, ei), y = marble_arrow_get_double(gs, ga, gi);
        if (isnan(x) || isnan(y)) {
            if (!(isnan(x) && isnan(y))) FAIL("%s row %" PRId64 ": %g vs %g", what, row, x, y);
        } else if (x != y || (!key && signbit(x) != signbit(y))) {
            FAIL("%s row %" PRId64 ": %g vs %g", what, row, x, y);
        }
    } else if (is_uint(t.id)) {
        uint64_t x = marble_arrow_get_uint(es, ea, ei), y = marble_arrow_get_uint(gs, ga, gi);
        if (x != y) FAIL("%s row %" PRId64 ": %" PRIu64 " vs %" PRIu64, what, row, x, y);
    } else if (is_bytes(t.id)) {
        const void *x, *y;
        size_t xn, yn;
        if (marble_arrow_get_bytes(es, ea, ei, &x, &xn) != MARBLE_OK ||
            marble_arrow_get_bytes(gs, ga, gi, &y, &yn) != MARBLE_OK)
            FAIL("%s row %" PRId64 ": get_bytes failed", what, row);
        if (xn != yn || (xn && memcmp(x, y, xn) != 0))
            FAIL("%s row %" PRId64 ": %zu bytes vs %zu bytes (or contents differ)", what, row, xn,
                 yn);
    } else {
        int64_t x = marble_arrow_get_int(es, ea, ei), y = marble_arrow_get_int(gs, ga, gi);
        if (x != y) FAIL("%s row %" PRId64 ": %" PRId64 " vs %" PRId64, what, row, x, y);
    }
}

typedef struct table {
    struct ArrowSchema schema;
    marble__row_codec codec;
} table;

static void table_open(table *t, const char *text, const int *keys, int nkeys)
{
    marble_error err = {0};
    CHECK_OK(marble_arrow_schema_parse(text, &t->schema, &err));
    CHECK_OK(marble__row_codec_init(&t->codec, &t->schema, keys, nkeys, &err));
}

static void table_close(table *t)
{
    marble__row_codec_free(&t->codec);
    marble_arrow_schema_release(&t->schema);
}

/* Encodes each row of batch (op 1, or ops[r]) and assembles; out and its schema are returned. */
static void assemble(const marble__row_codec *c, const struct ArrowArray *batch, const int *proj,
                     int nproj, int meta, const int *ops, struct ArrowArray *out,
                     struct ArrowSchema *out_schema)
{
    marble_error err = {0};
    marble__assembler *a;
    marble__bytes key = {0}, val = {0};
    CHECK_OK(marble__assembler_create(c, proj, nproj, meta, &a, &err));
    for (int64_t r = 0; r < batch->length; r++) {
        int op = ops ? ops[r] : 1;
        key.len = val.len = 0;
        CHECK_OK(marble__key_encode_row(&c->keys, batch, r, &key, &err));
        if (op) {
            CHECK_OK(marble__row_encode(c, batch, r, &val, &err));
            CHECK_OK(marble__row_check(c, val.data, val.len, &err));
        }
        CHECK_OK(marble__assembler_add(a, key.data, key.len, 100 + (uint64_t)r, op, val.data,
                                       val.len, &err));
        ASSERT_EQ_INT(marble__assembler_rows(a), r + 1);
    }
    if (batch->length > 0 && (nproj != 0 || meta)) ASSERT_GT_INT(marble__assembler_bytes(a), 0);
    CHECK_OK(marble__assembler_finish(a, out, &err));
    ASSERT_EQ_INT(marble__assembler_rows(a), 0);
    CHECK_OK(marble__assembler_schema(a, out_schema, &err));
    marble__assembler_destroy(a);
    marble__bytes_free(&key);
    marble__bytes_free(&val);
}

/* Checks out (from assemble) against the input batch. */
static void verify(const marble__row_codec *c, const struct ArrowArray *batch, const int *proj,
                   int nproj, int meta, const int *ops, const struct ArrowArray *out,
                   const struct ArrowSchema *os)
{
    marble_error err = {0};
    int np = nproj < 0 ? c->ncols : nproj;
    CHECK_OK(marble_arrow_array_validate(os, out, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_EQ_STR(os->format, "+s");
    ASSERT_EQ_INT(os->n_children, np + (meta ? 2 : 0));
    ASSERT_EQ_INT(out->n_children, os->n_children);
    ASSERT_EQ_INT(out->length, batch->length);
    for (int j = 0; j < np; j++) {
        int i = nproj < 0 ? j : proj[j];
        const struct ArrowSchema *is = c->schema.children[i];
        ASSERT_EQ_STR(os->children[j]->name, is->name);
        ASSERT_EQ_STR(os->children[j]->format, is->format);
        if (!c->cols[i].is_key)
            ASSERT_TRUE(os->children[j]->flags & ARROW_FLAG_NULLABLE);
        else
            ASSERT_EQ_INT(os->children[j]->flags & ARROW_FLAG_NULLABLE,
                          is->flags & ARROW_FLAG_NULLABLE);
        for (int64_t r = 0; r < batch->length; r++) {
            if (ops && ops[r] == 0 && !c->cols[i].is_key) {
                ASSERT_TRUE(marble_arrow_is_null(out->children[j], r));
                continue;
            }
            expect_cell(is, batch->children[i], batch->offset + r, os->children[j],
                        out->children[j], r, c->cols[i].is_key, is->name, r);
        }
    }
    if (meta) {
        const struct ArrowSchema *ss = os->children[np], *ps = os->children[np + 1];
        ASSERT_EQ_STR(ss->name, "_seq");
        ASSERT_EQ_STR(ss->format, "L");
        ASSERT_FALSE(ss->flags & ARROW_FLAG_NULLABLE);
        ASSERT_EQ_STR(ps->name, "_op");
        ASSERT_EQ_STR(ps->format, "C");
        ASSERT_FALSE(ps->flags & ARROW_FLAG_NULLABLE);
        for (int64_t r = 0; r < batch->length; r++) {
            ASSERT_EQ_U64(marble_arrow_get_uint(ss, out->children[np], r), 100 + (uint64_t)r);
            ASSERT_EQ_U64(marble_arrow_get_uint(ps, out->children[np + 1], r), ops ? ops[r] : 1);
        }
    }
}

static void roundtrip(const marble__row_codec *c, const struct ArrowArray *batch, const int *proj,
                      int nproj, int meta, const int *ops)
{
    struct ArrowArray out;
    struct ArrowSchema os;
    assemble(c, batch, proj, nproj, meta, ops, &out, &os);
    verify(c, batch, proj, nproj, meta, ops, &out, &os);
    out.release(&out);
    ASSERT_NULL((void *)out.release);
    os.release(&os);
}

/* ---- a table with every type --------------------------------------------------------------- */

static const char *ALL_TYPES = "id:int64!,b:bool,i8:int8,i16:int16,i32:int32,i64:int64,u8:uint8,"
                               "u16:uint16,u32:uint32,u64:uint64,f32:float32,f64:float64,s:utf8,"
                               "ls:large_utf8,bin:binary,lbin:large_binary,fsb:w:3,d:tdD,"
                               "ts:tsu:UTC,tn:tsn:";

/* Row r of the all-types table: column values depend on r; every value column is null when
 * (r + col) % 5 == 0. */
static void fill_all_types(marble_batch_builder *b, int n)
{
    marble_error err = {0};
    for (int r = 0; r < n; r++) {
        CHECK_OK(marble_builder_append_int(b, 0, r * 7 - 20, &err));
        for (int col = 1; col < 20; col++) {
            if ((r + col) % 5 == 0) {
                CHECK_OK(marble_builder_append_null(b, col, &err));
                continue;
            }
            int64_t sv = (r % 3 == 0) ? -r : r;
            char str[32];
            int len = r % 4 == 0 ? 0 : snprintf(str, sizeof str, "v%d-%d\xc3\xa9", r, col);
            switch (col) {
            case 1:
                CHECK_OK(marble_builder_append_int(b, col, r & 1, &err));
                break;
            case 2:
                CHECK_OK(marble_builder_append_int(b, col,
                                                   r == 1   ? -128
                                                   : r == 2 ? 127
                                                            : sv,
                                                   &err));
                break;
            case 3:
                CHECK_OK(marble_builder_append_int(b, col, r == 1 ? INT16_MIN : sv * 300, &err));
                break;
            case 4:
                CHECK_OK(marble_builder_append_int(b, col, r == 1 ? INT32_MIN : sv * 70000, &err));
                break;
            case 5:
                CHECK_OK(marble_builder_append_int(b, col,
                                                   r == 1   ? INT64_MIN
                                                   : r == 2 ? INT64_MAX
                                                            : sv * ((int64_t)1 << 40),
                                                   &err));
                break;
            case 6:
                CHECK_OK(marble_builder_append_uint(b, col, r == 2 ? 255 : (uint64_t)r, &err));
                break;
            case 7:
                CHECK_OK(
                    marble_builder_append_uint(b, col, r == 2 ? 65535 : (uint64_t)r * 3, &err));
                break;
            case 8:
                CHECK_OK(marble_builder_append_uint(
                    b, col, r == 2 ? UINT32_MAX : (uint64_t)r * 99999, &err));
                break;
            case 9:
                CHECK_OK(marble_builder_append_uint(b, col, r == 2 ? UINT64_MAX : (uint64_t)r << 50,
                                                    &err));
                break;
            case 10:
                CHECK_OK(marble_builder_append_double(b, col,
                                                      r == 3   ? -0.0
                                                      : r == 6 ? NAN
                                                               : r * 0.5,
                                                      &err));
                break;
            case 11:
                CHECK_OK(marble_builder_append_double(b, col,
                                                      r == 3   ? -0.0
                                                      : r == 7 ? INFINITY
                                                               : sv / 3.0,
                                                      &err));
                break;
            case 12:
            case 13:
                CHECK_OK(marble_builder_append_bytes(b, col, str, (size_t)len, &err));
                break;
            case 14:
            case 15: {
                uint8_t bin[4] = {0, 0xFF, (uint8_t)r, 0};
                CHECK_OK(marble_builder_append_bytes(b, col, bin, (size_t)(r % 5), &err));
                break;
            }
            case 16: {
                uint8_t fx[3] = {(uint8_t)r, 0, 0xFF};
                CHECK_OK(marble_builder_append_bytes(b, col, fx, 3, &err));
                break;
            }
            case 17:
                CHECK_OK(marble_builder_append_int(b, col, sv * 1000, &err));
                break;
            case 18:
            case 19:
                CHECK_OK(marble_builder_append_int(b, col, sv * 1000000007LL, &err));
                break;
            }
        }
    }
}

static void all_types_batch(table *t, int n, struct ArrowArray *out)
{
    marble_error err = {0};
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&t->schema, &b, &err));
    fill_all_types(b, n);
    CHECK_OK(marble_batch_builder_finish(b, out, &err));
    marble_batch_builder_destroy(b);
}

TEST(rowcodec_codec_layout)
{
    table t;
    int keys[] = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    ASSERT_EQ_INT(t.codec.ncols, 20);
    ASSERT_EQ_INT(t.codec.n_value_cols, 19);
    ASSERT_EQ_INT(t.codec.bitmap_bytes, 3);
    ASSERT_TRUE(t.codec.cols[0].is_key);
    ASSERT_EQ_INT(t.codec.cols[0].key_index, 0);
    ASSERT_EQ_INT(t.codec.cols[0].value_index, -1);
    ASSERT_EQ_INT(t.codec.cols[5].value_index, 4);
    ASSERT_EQ_INT(t.codec.cols[5].type.id, MARBLE_ARROW_INT64);
    ASSERT_EQ_INT(t.codec.cols[16].type.byte_width, 3);
    table_close(&t);
}

TEST(rowcodec_value_format)
{
    /* k:int64 key; a:int16, s:utf8, b:bool, f:w:2 */
    table t;
    int keys[] = {0};
    marble_error err = {0};
    table_open(&t, "k:int64!,a:int16,s:utf8,b:bool,f:w:2", keys, 1);
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&t.schema, &b, &err));
    CHECK_OK(marble_builder_append_int(b, 0, 1, &err));
    CHECK_OK(marble_builder_append_int(b, 1, -2, &err));
    char s200[200];
    memset(s200, 'x', sizeof s200);
    CHECK_OK(marble_builder_append_bytes(b, 2, s200, sizeof s200, &err));
    CHECK_OK(marble_builder_append_null(b, 3, &err));
    CHECK_OK(marble_builder_append_bytes(b, 4, "\x01\x02", 2, &err));
    struct ArrowArray batch;
    CHECK_OK(marble_batch_builder_finish(b, &batch, &err));
    marble_batch_builder_destroy(b);
    marble__bytes v = {0};
    CHECK_OK(marble__bytes_append(&v, "pre", 3, &err));
    CHECK_OK(marble__row_encode(&t.codec, &batch, 0, &v, &err));
    const uint8_t want[] = {0x0B, 0xFE, 0xFF, 0xC8, 0x01};
    ASSERT_EQ_INT(v.len, 3 + sizeof want + 200 + 2);
    ASSERT_TRUE(memcmp(v.data, "pre", 3) == 0);
    ASSERT_TRUE(memcmp(v.data + 3, want, sizeof want) == 0);
    ASSERT_TRUE(memcmp(v.data + 3 + sizeof want, s200, 200) == 0);
    ASSERT_TRUE(memcmp(v.data + 3 + sizeof want + 200, "\x01\x02", 2) == 0);
    CHECK_OK(marble__row_check(&t.codec, v.data + 3, v.len - 3, &err));
    ASSERT_EQ_INT(marble__row_encode(&t.codec, &batch, 1, &v, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(v.len, 3 + sizeof want + 200 + 2);
    marble__bytes_free(&v);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_all_types_roundtrip)
{
    table t;
    int keys[] = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    struct ArrowArray batch;
    all_types_batch(&t, 40, &batch);
    roundtrip(&t.codec, &batch, NULL, -1, 0, NULL);
    roundtrip(&t.codec, &batch, NULL, -1, 1, NULL);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_sliced_input)
{
    table t;
    int keys[] = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    struct ArrowArray batch;
    all_types_batch(&t, 50, &batch);
    /* Slice the struct and, differently, some children (shifting their data). */
    batch.offset = 3;
    batch.length = 40;
    for (int i = 0; i < batch.n_children; i++)
        if (i % 3 == 1) {
            batch.children[i]->offset += 2;
            batch.children[i]->length -= 2;
            batch.children[i]->null_count = -1;
        }
    roundtrip(&t.codec, &batch, NULL, -1, 1, NULL);
    int proj[] = {12, 0, 1, 16};
    roundtrip(&t.codec, &batch, proj, 4, 0, NULL);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_projection)
{
    table t;
    int keys[] = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    struct ArrowArray batch;
    all_types_batch(&t, 30, &batch);
    int subset[] = {3, 12, 17};
    roundtrip(&t.codec, &batch, subset, 3, 0, NULL);
    int reorder[] = {19, 13, 0, 1, 9, 11};
    roundtrip(&t.codec, &batch, reorder, 6, 1, NULL);
    int key_only[] = {0};
    roundtrip(&t.codec, &batch, key_only, 1, 0, NULL);
    int value_only[] = {15, 14};
    roundtrip(&t.codec, &batch, value_only, 2, 1, NULL);
    roundtrip(&t.codec, &batch, value_only, 0, 1, NULL);
    roundtrip(&t.codec, &batch, value_only, 0, 0, NULL);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_value_only_skips_key_decoding)
{
    table t;
    int keys[] = {0};
    marble_error err = {0};
    table_open(&t, "k:int64!,v:int32", keys, 1);
    marble__assembler *a;
    int proj[] = {1};
    CHECK_OK(marble__assembler_create(&t.codec, proj, 1, 0, &a, &err));
    const uint8_t value[] = {1, 7, 0, 0, 0};
    CHECK_OK(marble__assembler_add(a, "junk", 4, 1, 1, value, sizeof value, &err));
    marble__assembler_destroy(a);
    CHECK_OK(marble__assembler_create(&t.codec, NULL, -1, 0, &a, &err));
    ASSERT_EQ_INT(marble__assembler_add(a, "junk", 4, 1, 1, value, sizeof value, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_EQ_INT(marble__assembler_rows(a), 0);
    marble__assembler_destroy(a);
    table_close(&t);
}

TEST(rowcodec_deletes)
{
    table t;
    int keys[] = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    struct ArrowArray batch;
    all_types_batch(&t, 25, &batch);
    int ops[25];
    for (int r = 0; r < 25; r++)
        ops[r] = r % 3 != 0;
    roundtrip(&t.codec, &batch, NULL, -1, 1, ops);
    int proj[] = {4, 0};
    roundtrip(&t.codec, &batch, proj, 2, 0, ops);
    for (int r = 0; r < 25; r++)
        ops[r] = 0;
    roundtrip(&t.codec, &batch, NULL, -1, 1, ops);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_multi_column_keys)
{
    table t;
    int keys[] = {3, 1, 5};
    table_open(&t, "a:float64,name:utf8!,v:int32,fx:w:2!,w:binary,ts:tsm:,z:bool", keys, 3);
    ASSERT_EQ_INT(t.codec.n_value_cols, 4);
    ASSERT_EQ_INT(t.codec.cols[1].key_index, 1);
    ASSERT_EQ_INT(t.codec.cols[4].value_index, 2);
    marble_error err = {0};
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&t.schema, &b, &err));
    for (int r = 0; r < 30; r++) {
        char name[16];
        int n = snprintf(name, sizeof name, "n\x01%d", r * 31 % 17);
        uint8_t fx[2] = {(uint8_t)(r % 3), 0};
        CHECK_OK(r % 4 ? marble_builder_append_double(b, 0, r * 1.25, &err)
                       : marble_builder_append_null(b, 0, &err));
        CHECK_OK(marble_builder_append_bytes(b, 1, name, r % 6 ? (size_t)n : 0, &err));
        CHECK_OK(marble_builder_append_int(b, 2, -r, &err));
        CHECK_OK(marble_builder_append_bytes(b, 3, fx, 2, &err));
        CHECK_OK(r % 5 ? marble_builder_append_bytes(b, 4, "\0\0x", (size_t)(r % 4), &err)
                       : marble_builder_append_null(b, 4, &err));
        CHECK_OK(marble_builder_append_int(b, 5, (int64_t)r * -86400000, &err));
        CHECK_OK(marble_builder_append_int(b, 6, r & 1, &err));
    }
    struct ArrowArray batch;
    CHECK_OK(marble_batch_builder_finish(b, &batch, &err));
    marble_batch_builder_destroy(b);
    roundtrip(&t.codec, &batch, NULL, -1, 1, NULL);
    int proj[] = {5, 3, 1};
    roundtrip(&t.codec, &batch, proj, 3, 0, NULL);
    int proj2[] = {6, 5, 0};
    int ops[30];
    for (int r = 0; r < 30; r++)
        ops[r] = r & 1;
    roundtrip(&t.codec, &batch, proj2, 3, 1, ops);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_key_only_table)
{
    table t;
    int keys[] = {1, 0};
    table_open(&t, "a:int32!,b:utf8!", keys, 2);
    ASSERT_EQ_INT(t.codec.n_value_cols, 0);
    ASSERT_EQ_INT(t.codec.bitmap_bytes, 0);
    marble_error err = {0};
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&t.schema, &b, &err));
    for (int r = 0; r < 5; r++) {
        CHECK_OK(marble_builder_append_int(b, 0, r, &err));
        CHECK_OK(marble_builder_append_bytes(b, 1, "abc", (size_t)(r % 4), &err));
    }
    struct ArrowArray batch;
    CHECK_OK(marble_batch_builder_finish(b, &batch, &err));
    marble_batch_builder_destroy(b);
    marble__bytes v = {0};
    CHECK_OK(marble__row_encode(&t.codec, &batch, 2, &v, &err));
    ASSERT_EQ_INT(v.len, 0);
    CHECK_OK(marble__row_check(&t.codec, NULL, 0, &err));
    ASSERT_EQ_INT(marble__row_check(&t.codec, "x", 1, &err), MARBLE_ERR_CORRUPTION);
    roundtrip(&t.codec, &batch, NULL, -1, 1, NULL);
    marble__bytes_free(&v);
    batch.release(&batch);
    table_close(&t);
}

/* ---- add_arrow ---------------------------------------------------------------------------------
 */

static void expect_same_batches(const struct ArrowSchema *s, const struct ArrowArray *x,
                                const struct ArrowArray *y)
{
    marble_error err = {0};
    CHECK_OK(marble_arrow_array_validate(s, x, MARBLE_VALIDATE_UTF8, &err));
    CHECK_OK(marble_arrow_array_validate(s, y, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_EQ_INT(x->length, y->length);
    ASSERT_EQ_INT(x->n_children, y->n_children);
    for (int j = 0; j < x->n_children; j++) {
        ASSERT_EQ_INT(x->children[j]->null_count, y->children[j]->null_count);
        for (int64_t r = 0; r < x->length; r++)
            expect_cell(s->children[j], x->children[j], r, s->children[j], y->children[j], r, 0,
                        s->children[j]->name, r);
    }
}

static void add_arrow_vs_add(const marble__row_codec *c, const struct ArrowArray *batch,
                             const int *proj, int nproj, int meta, const int *ops)
{
    marble_error err = {0};
    struct ArrowArray via_rows, via_arrow;
    struct ArrowSchema os;
    assemble(c, batch, proj, nproj, meta, ops, &via_rows, &os);
    marble__assembler *a;
    CHECK_OK(marble__assembler_create(c, proj, nproj, meta, &a, &err));
    for (int64_t r = 0; r < batch->length; r++)
        CHECK_OK(
            marble__assembler_add_arrow(a, batch, r, 100 + (uint64_t)r, ops ? ops[r] : 1, &err));
    CHECK_OK(marble__assembler_finish(a, &via_arrow, &err));
    marble__assembler_destroy(a);
    expect_same_batches(&os, &via_rows, &via_arrow);
    verify(c, batch, proj, nproj, meta, ops, &via_arrow, &os);
    via_rows.release(&via_rows);
    via_arrow.release(&via_arrow);
    os.release(&os);
}

TEST(rowcodec_add_arrow_equivalence)
{
    table t;
    int keys[] = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    struct ArrowArray batch;
    all_types_batch(&t, 60, &batch);
    int ops[60];
    for (int r = 0; r < 60; r++)
        ops[r] = r % 7 != 3;
    add_arrow_vs_add(&t.codec, &batch, NULL, -1, 1, ops);
    add_arrow_vs_add(&t.codec, &batch, NULL, -1, 0, NULL);
    int proj[] = {18, 2, 0, 13};
    add_arrow_vs_add(&t.codec, &batch, proj, 4, 1, ops);
    batch.offset = 5;
    batch.length = 50;
    for (int i = 0; i < batch.n_children; i++)
        if (i % 2 == 0) {
            batch.children[i]->offset += 1;
            batch.children[i]->length -= 1;
            batch.children[i]->null_count = -1;
        }
    add_arrow_vs_add(&t.codec, &batch, NULL, -1, 1, ops);
    add_arrow_vs_add(&t.codec, &batch, proj, 4, 0, NULL);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_add_arrow_from_sstable_layout)
{
    /* A batch that carries _seq/_op after the table's columns, as an SSTable does. */
    table t;
    int keys[] = {0};
    marble_error err = {0};
    table_open(&t, "k:int64!,v:utf8", keys, 1);
    marble__assembler *w;
    CHECK_OK(marble__assembler_create(&t.codec, NULL, -1, 1, &w, &err));
    marble__bytes key = {0};
    for (int r = 0; r < 10; r++) {
        marble__key_value kv = {.kind = MARBLE__KV_INT, .i = r};
        key.len = 0;
        CHECK_OK(marble__key_encode_values(&t.codec.keys, &kv, 1, &key, &err));
        uint8_t val[8] = {1, 3, 'a', 'b', 'c'};
        CHECK_OK(
            r % 3
                ? marble__assembler_add(w, key.data, key.len, 50 + (uint64_t)r, 1, val, 5, &err)
                : marble__assembler_add(w, key.data, key.len, 50 + (uint64_t)r, 0, NULL, 0, &err));
    }
    struct ArrowArray sst;
    struct ArrowSchema ss;
    CHECK_OK(marble__assembler_finish(w, &sst, &err));
    CHECK_OK(marble__assembler_schema(w, &ss, &err));
    marble__assembler_destroy(w);
    ASSERT_EQ_INT(sst.n_children, 4);
    marble__assembler *a;
    int proj[] = {1, 0};
    CHECK_OK(marble__assembler_create(&t.codec, proj, 2, 1, &a, &err));
    for (int64_t r = 9; r >= 0; r--) {
        uint64_t seq = marble_arrow_get_uint(ss.children[2], sst.children[2], r);
        int op = (int)marble_arrow_get_uint(ss.children[3], sst.children[3], r);
        CHECK_OK(marble__assembler_add_arrow(a, &sst, r, seq, op, &err));
    }
    struct ArrowArray out;
    struct ArrowSchema os;
    CHECK_OK(marble__assembler_finish(a, &out, &err));
    CHECK_OK(marble__assembler_schema(a, &os, &err));
    CHECK_OK(marble_arrow_array_validate(&os, &out, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_EQ_INT(out.children[1]->null_count, 0);
    ASSERT_EQ_INT(out.children[0]->null_count, 4);
    for (int64_t r = 0; r < 10; r++) {
        int64_t src = 9 - r;
        ASSERT_EQ_INT(marble_arrow_get_int(os.children[1], out.children[1], r), src);
        ASSERT_EQ_U64(marble_arrow_get_uint(os.children[2], out.children[2], r), 50 + src);
        ASSERT_EQ_U64(marble_arrow_get_uint(os.children[3], out.children[3], r), src % 3 != 0);
        ASSERT_EQ_INT(marble_arrow_is_null(out.children[0], r), src % 3 == 0);
        if (src % 3) {
            const void *d;
            size_t n;
            ASSERT_OK(marble_arrow_get_bytes(os.children[0], out.children[0], r, &d, &n));
            ASSERT_EQ_INT(n, 3);
            ASSERT_TRUE(memcmp(d, "abc", 3) == 0);
        }
    }
    ASSERT_EQ_INT(marble__assembler_add_arrow(a, &sst, 10, 1, 1, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__assembler_add_arrow(a, &sst, 0, 1, 2, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble__assembler_destroy(a);
    out.release(&out);
    os.release(&os);
    sst.release(&sst);
    ss.release(&ss);
    marble__bytes_free(&key);
    table_close(&t);
}

/* ---- random property test -------------------------------------------------------------------- */

static const char *const RANDOM_TYPES[] = {
    "bool",         "int8",   "int16",   "int32",   "int64", "uint8",      "uint16",
    "uint32",       "uint64", "float32", "float64", "utf8",  "large_utf8", "binary",
    "large_binary", "w:1",    "w:5",     "tdD",     "tss:",  "tsn:UTC"};
#define N_RANDOM_TYPES ((int)(sizeof RANDOM_TYPES / sizeof RANDOM_TYPES[0]))

static void append_random(marble_batch_builder *b, int col, const marble_arrow_type *t, int key,
                          int row)
{
    marble_error err = {0};
    if (!key && rnd() % 4 == 0) {
        CHECK_OK(marble_builder_append_null(b, col, &err));
        return;
    }
    uint8_t bytes[40];
    size_t n = (size_t)rnd_range(0, 39);
    switch (t->id) {
    case MARBLE_ARROW_BOOL:
        CHECK_OK(marble_builder_append_int(b, col, (int64_t)(rnd() & 1), &err));
        break;
    case MARBLE_ARROW_INT8:
        CHECK_OK(marble_builder_append_int(b, col, rnd_range(-128, 127), &err));
        break;
    case MARBLE_ARROW_INT16:
        CHECK_OK(marble_builder_append_int(b, col, rnd_range(INT16_MIN, INT16_MAX), &err));
        break;
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_DATE32:
        CHECK_OK(marble_builder_append_int(b, col, rnd_range(INT32_MIN, INT32_MAX), &err));
        break;
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_TIMESTAMP:
        CHECK_OK(marble_builder_append_int(b, col, (int64_t)rnd(), &err));
        break;
    case MARBLE_ARROW_UINT8:
        CHECK_OK(marble_builder_append_uint(b, col, rnd() & 0xFF, &err));
        break;
    case MARBLE_ARROW_UINT16:
        CHECK_OK(marble_builder_append_uint(b, col, rnd() & 0xFFFF, &err));
        break;
    case MARBLE_ARROW_UINT32:
        CHECK_OK(marble_builder_append_uint(b, col, rnd() & 0xFFFFFFFF, &err));
        break;
    case MARBLE_ARROW_UINT64:
        CHECK_OK(marble_builder_append_uint(b, col, rnd(), &err));
        break;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64: {
        double d = (double)(float)((double)(int64_t)rnd() / 1e9);
        int pick = (int)(rnd() % 8);
        if (!key && pick == 0) d = NAN;
        if (!key && pick == 1) d = -0.0;
        if (pick == 2) d = -INFINITY;
        CHECK_OK(marble_builder_append_double(b, col, d, &err));
        break;
    }
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_LARGE_UTF8:
        for (size_t i = 0; i < n; i++)
            bytes[i] = (uint8_t)rnd_range(0, 127);
        CHECK_OK(marble_builder_append_bytes(b, col, bytes, n, &err));
        break;
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_BINARY:
        for (size_t i = 0; i < n; i++)
            bytes[i] = (uint8_t)(rnd() % 3 == 0 ? 0 : rnd() % 3 == 0 ? 0xFF : rnd());
        CHECK_OK(marble_builder_append_bytes(b, col, bytes, n, &err));
        break;
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        for (int i = 0; i < t->byte_width; i++)
            bytes[i] = (uint8_t)rnd();
        CHECK_OK(marble_builder_append_bytes(b, col, bytes, (size_t)t->byte_width, &err));
        break;
    default:
        FAIL("type %d in row %d", t->id, row);
    }
}

TEST(rowcodec_random_property)
{
    marble_error err = {0};
    for (int iter = 0; iter < 200; iter++) {
        int ncols = (int)rnd_range(1, 14);
        char text[1024];
        size_t tl = 0;
        int nkeys = (int)rnd_range(1, ncols < 3 ? ncols : 3);
        int keys[3];
        int perm[16];
        for (int i = 0; i < ncols; i++)
            perm[i] = i;
        for (int i = ncols - 1; i > 0; i--) {
            int j = (int)rnd_range(0, i);
            int tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        for (int k = 0; k < nkeys; k++)
            keys[k] = perm[k];
        for (int i = 0; i < ncols; i++) {
            int is_key = 0;
            for (int k = 0; k < nkeys; k++)
                is_key |= keys[k] == i;
            const char *type = RANDOM_TYPES[rnd() % N_RANDOM_TYPES];
            while (is_key && strcmp(type, "w:0") == 0)
                type = RANDOM_TYPES[rnd() % N_RANDOM_TYPES];
            tl += (size_t)snprintf(text + tl, sizeof text - tl, "%sc%d:%s%s", i ? "," : "", i, type,
                                   is_key ? "!" : "");
        }
        table t;
        table_open(&t, text, keys, nkeys);
        marble_batch_builder *b;
        CHECK_OK(marble_batch_builder_create(&t.schema, &b, &err));
        int nrows = (int)rnd_range(0, 60);
        for (int r = 0; r < nrows; r++)
            for (int i = 0; i < ncols; i++)
                append_random(b, i, &t.codec.cols[i].type, t.codec.cols[i].is_key, r);
        struct ArrowArray batch;
        CHECK_OK(marble_batch_builder_finish(b, &batch, &err));
        marble_batch_builder_destroy(b);
        if (nrows > 4 && rnd() % 2) {
            batch.offset = 2;
            batch.length -= 3;
        }
        int ops[64];
        for (int r = 0; r < 64; r++)
            ops[r] = rnd() % 5 != 0;
        int proj[16];
        int nproj = (int)rnd_range(-1, ncols);
        for (int j = 0; j < ncols; j++)
            proj[j] = perm[(j + iter) % ncols];
        int meta = (int)(rnd() & 1);
        roundtrip(&t.codec, &batch, proj, nproj, meta, ops);
        add_arrow_vs_add(&t.codec, &batch, proj, nproj, meta, ops);
        batch.release(&batch);
        table_close(&t);
    }
}

/* ---- corrupt values -------------------------------------------------------------------------- */

TEST(rowcodec_truncated_values_rejected)
{
    table t;
    int keys[] = {0};
    marble_error err = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    struct ArrowArray batch;
    all_types_batch(&t, 12, &batch);
    marble__assembler *a;
    CHECK_OK(marble__assembler_create(&t.codec, NULL, -1, 1, &a, &err));
    marble__bytes key = {0}, v = {0};
    int64_t added = 0;
    for (int64_t r = 0; r < batch.length; r++) {
        key.len = v.len = 0;
        CHECK_OK(marble__key_encode_row(&t.codec.keys, &batch, r, &key, &err));
        CHECK_OK(marble__row_encode(&t.codec, &batch, r, &v, &err));
        for (size_t n = 0; n < v.len; n++) {
            uint8_t *copy = malloc(n ? n : 1);
            memcpy(copy, v.data, n);
            ASSERT_EQ_INT(marble__row_check(&t.codec, copy, n, &err), MARBLE_ERR_CORRUPTION);
            ASSERT_EQ_INT(marble__assembler_add(a, key.data, key.len, 1, 1, copy, n, &err),
                          MARBLE_ERR_CORRUPTION);
            free(copy);
        }
        CHECK_OK(marble__bytes_reserve(&v, 1, &err));
        v.data[v.len] = 0;
        ASSERT_EQ_INT(marble__row_check(&t.codec, v.data, v.len + 1, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, "after the last column");
        CHECK_OK(marble__assembler_add(a, key.data, key.len, 7, 1, v.data, v.len, &err));
        ASSERT_EQ_INT(marble__assembler_add(a, key.data, key.len - 1, 7, 1, v.data, v.len, &err),
                      MARBLE_ERR_CORRUPTION);
        added++;
        ASSERT_EQ_INT(marble__assembler_rows(a), added);
    }
    struct ArrowArray out;
    struct ArrowSchema os;
    CHECK_OK(marble__assembler_finish(a, &out, &err));
    CHECK_OK(marble__assembler_schema(a, &os, &err));
    for (int64_t r = 0; r < batch.length; r++)
        for (int i = 0; i < t.codec.ncols; i++)
            expect_cell(t.schema.children[i], batch.children[i], r, os.children[i], out.children[i],
                        r, 0, "after errors", r);
    CHECK_OK(marble_arrow_array_validate(&os, &out, MARBLE_VALIDATE_UTF8, &err));
    out.release(&out);
    os.release(&os);
    marble__assembler_destroy(a);
    marble__bytes_free(&key);
    marble__bytes_free(&v);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_malformed_values_rejected)
{
    table t;
    int keys[] = {0};
    marble_error err = {0};
    /* values: b:bool, s:utf8, x:int32 */
    table_open(&t, "k:int64!,b:bool,s:utf8,x:int32", keys, 1);
    CHECK_OK(marble__row_check(&t.codec, "\x07\x01\x01z\x01\x02\x03\x04", 8, &err));
    CHECK_OK(marble__row_check(&t.codec, "\x00", 1, &err));
    CHECK_OK(marble__row_check(&t.codec, "\x02\x00", 2, &err));
    struct {
        const char *v;
        size_t n;
        const char *msg;
    } bad[] = {
        {"\x01\x02", 2, "bad bool"},
        {"\x08", 1, "padding"},
        {"\x02\x80\x00", 3, "overlong"},
        {"\x02\x05zz", 4, "past the end"},
        {"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, "past the end"},
        {"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 11, "overflows"},
        {"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, "overflows"},
        {"\x02\x80", 2, "truncated length"},
        {"\x04\x01\x02", 3, "truncated"},
        {"", 0, "null bitmap"},
    };
    marble__assembler *a;
    CHECK_OK(marble__assembler_create(&t.codec, NULL, -1, 0, &a, &err));
    marble__bytes key = {0};
    marble__key_value kv = {.kind = MARBLE__KV_INT, .i = 5};
    CHECK_OK(marble__key_encode_values(&t.codec.keys, &kv, 1, &key, &err));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ_INT(marble__row_check(&t.codec, bad[i].v, bad[i].n, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, bad[i].msg);
        ASSERT_EQ_INT(marble__assembler_add(a, key.data, key.len, 1, 1, bad[i].v, bad[i].n, &err),
                      MARBLE_ERR_CORRUPTION);
    }
    ASSERT_EQ_INT(marble__row_check(&t.codec, "\x01\x05", 2, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "'b'");
    ASSERT_EQ_INT(marble__assembler_add(a, key.data, key.len, 1, 0, "\x00", 1, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_EQ_INT(marble__assembler_add(a, key.data, key.len, 1, 3, NULL, 0, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__assembler_rows(a), 0);
    CHECK_OK(marble__assembler_add(a, key.data, key.len, 1, 0, NULL, 0, &err));
    CHECK_OK(marble__assembler_add(a, key.data, key.len, 2, 1, "\x02\x00", 2, &err));
    struct ArrowArray out;
    struct ArrowSchema os;
    CHECK_OK(marble__assembler_finish(a, &out, &err));
    CHECK_OK(marble__assembler_schema(a, &os, &err));
    CHECK_OK(marble_arrow_array_validate(&os, &out, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_EQ_INT(out.length, 2);
    ASSERT_EQ_INT(out.children[2]->null_count, 1);
    ASSERT_EQ_INT(out.children[1]->null_count, 2);
    const void *d;
    size_t n;
    ASSERT_OK(marble_arrow_get_bytes(os.children[2], out.children[2], 1, &d, &n));
    ASSERT_EQ_INT(n, 0);
    out.release(&out);
    os.release(&os);
    marble__assembler_destroy(a);
    marble__bytes_free(&key);
    table_close(&t);
}

TEST(rowcodec_random_garbage_values)
{
    table t;
    int keys[] = {0};
    marble_error err = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    marble__assembler *a;
    CHECK_OK(marble__assembler_create(&t.codec, NULL, -1, 1, &a, &err));
    marble__bytes key = {0};
    marble__key_value kv = {.kind = MARBLE__KV_INT, .i = 5};
    CHECK_OK(marble__key_encode_values(&t.codec.keys, &kv, 1, &key, &err));
    int64_t ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)rnd_range(0, 64);
        uint8_t *v = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++)
            v[i] = (uint8_t)(i < 3 ? rnd() : rnd() % 4 ? rnd() % 8 : rnd());
        int rc1 = marble__row_check(&t.codec, v, n, &err);
        int rc2 = marble__assembler_add(a, key.data, key.len, 1, 1, v, n, &err);
        ASSERT_EQ_INT(rc1, rc2);
        ASSERT_TRUE(rc1 == MARBLE_OK || rc1 == MARBLE_ERR_CORRUPTION);
        ok += rc1 == MARBLE_OK;
        free(v);
    }
    ASSERT_EQ_INT(marble__assembler_rows(a), ok);
    struct ArrowArray out;
    struct ArrowSchema os;
    CHECK_OK(marble__assembler_finish(a, &out, &err));
    CHECK_OK(marble__assembler_schema(a, &os, &err));
    CHECK_OK(marble_arrow_array_validate(&os, &out, MARBLE_VALIDATE_DEFAULT, &err));
    out.release(&out);
    os.release(&os);
    marble__assembler_destroy(a);
    marble__bytes_free(&key);
    table_close(&t);
}

/* ---- assembler output ------------------------------------------------------------------------ */

TEST(rowcodec_assembler_batches_and_release)
{
    table t;
    int keys[] = {0};
    marble_error err = {0};
    table_open(&t, ALL_TYPES, keys, 1);
    struct ArrowArray batch;
    all_types_batch(&t, 20, &batch);
    marble__assembler *a;
    CHECK_OK(marble__assembler_create(&t.codec, NULL, -1, 1, &a, &err));
    ASSERT_EQ_INT(marble__assembler_bytes(a), 0);
    struct ArrowSchema os;
    CHECK_OK(marble__assembler_schema(a, &os, &err));
    struct ArrowArray empty;
    CHECK_OK(marble__assembler_finish(a, &empty, &err));
    ASSERT_EQ_INT(empty.length, 0);
    ASSERT_EQ_INT(empty.n_children, 22);
    CHECK_OK(marble_arrow_array_validate(&os, &empty, MARBLE_VALIDATE_UTF8, &err));
    empty.release(&empty);
    for (int round = 0; round < 3; round++) {
        for (int64_t r = 0; r < batch.length; r++)
            CHECK_OK(marble__assembler_add_arrow(a, &batch, r, 100 + (uint64_t)r, 1, &err));
        struct ArrowArray out;
        CHECK_OK(marble__assembler_finish(a, &out, &err));
        ASSERT_EQ_INT(marble__assembler_bytes(a), 0);
        verify(&t.codec, &batch, NULL, -1, 1, NULL, &out, &os);
        /* Move a child out, release the batch, then the child. */
        struct ArrowArray moved;
        marble_arrow_array_move(out.children[12], &moved);
        ASSERT_NULL((void *)out.children[12]->release);
        out.release(&out);
        ASSERT_NULL((void *)out.release);
        ASSERT_EQ_INT(moved.length, 20);
        const void *d;
        size_t n;
        ASSERT_OK(marble_arrow_get_bytes(os.children[12], &moved, 1, &d, &n));
        ASSERT_TRUE(n > 0);
        moved.release(&moved);
    }
    os.release(&os);
    marble__assembler_destroy(a);
    marble__assembler_destroy(NULL);
    batch.release(&batch);
    table_close(&t);
}

TEST(rowcodec_no_validity_without_nulls)
{
    table t;
    int keys[] = {0};
    marble_error err = {0};
    table_open(&t, "k:int64!,v:int32,s:utf8", keys, 1);
    marble__assembler *a;
    CHECK_OK(marble__assembler_create(&t.codec, NULL, -1, 0, &a, &err));
    marble__bytes key = {0};
    for (int r = 0; r < 20; r++) {
        marble__key_value kv = {.kind = MARBLE__KV_INT, .i = r};
        key.len = 0;
        CHECK_OK(marble__key_encode_values(&t.codec.keys, &kv, 1, &key, &err));
        CHECK_OK(marble__assembler_add(
            a, key.data, key.len, 1, 1,
            r == 17 ? "\x01\x09\x00\x00\x00" : "\x03\x09\x00\x00\x00\x00", r == 17 ? 5 : 6, &err));
    }
    struct ArrowArray out;
    struct ArrowSchema os;
    CHECK_OK(marble__assembler_finish(a, &out, &err));
    CHECK_OK(marble__assembler_schema(a, &os, &err));
    CHECK_OK(marble_arrow_array_validate(&os, &out, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_NULL(out.children[0]->buffers[0]);
    ASSERT_NULL(out.children[1]->buffers[0]);
    ASSERT_EQ_INT(out.children[1]->null_count, 0);
    ASSERT_NOT_NULL(out.children[2]->buffers[0]);
    ASSERT_EQ_INT(out.children[2]->null_count, 1);
    ASSERT_TRUE(marble_arrow_is_null(out.children[2], 17));
    ASSERT_FALSE(marble_arrow_is_null(out.children[2], 18));
    ASSERT_EQ_INT(marble_arrow_get_int(os.children[1], out.children[1], 19), 9);
    ASSERT_EQ_INT(marble_arrow_get_int(os.children[0], out.children[0], 19), 19);
    out.release(&out);
    os.release(&os);
    marble__assembler_destroy(a);
    marble__bytes_free(&key);
    table_close(&t);
}

TEST(rowcodec_many_columns)
{
    char text[16384];
    size_t tl = 0;
    for (int i = 0; i < 300; i++)
        tl += (size_t)snprintf(text + tl, sizeof text - tl, "%sc%d:%s", i ? "," : "", i,
                               i % 3 == 0   ? "int16"
                               : i % 3 == 1 ? "utf8"
                                            : "bool");
    table t;
    int keys[] = {7, 0};
    table_open(&t, text, keys, 2);
    ASSERT_EQ_INT(t.codec.n_value_cols, 298);
    ASSERT_EQ_INT(t.codec.bitmap_bytes, 38);
    marble_error err = {0};
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&t.schema, &b, &err));
    for (int r = 0; r < 10; r++)
        for (int i = 0; i < 300; i++)
            append_random(b, i, &t.codec.cols[i].type, t.codec.cols[i].is_key, r);
    struct ArrowArray batch;
    CHECK_OK(marble_batch_builder_finish(b, &batch, &err));
    marble_batch_builder_destroy(b);
    roundtrip(&t.codec, &batch, NULL, -1, 1, NULL);
    add_arrow_vs_add(&t.codec, &batch, NULL, -1, 0, NULL);
    batch.release(&batch);
    table_close(&t);
}

/* ---- init errors ----------------------------------------------------------------------------- */

static void expect_init_error(const char *text, const int *keys, int nkeys, int code,
                              const char *needle)
{
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(text, &s, &err));
    marble__row_codec c;
    ASSERT_EQ_INT(marble__row_codec_init(&c, &s, keys, nkeys, &err), code);
    ASSERT_CONTAINS(err.message, needle);
    marble__row_codec_free(&c);
    s.release(&s);
}

TEST(rowcodec_init_errors)
{
    int k0[] = {0}, k1[] = {1}, k5[] = {5}, kneg[] = {-1}, kdup[] = {1, 0, 1};
    expect_init_error("a:int64,b:utf8,a:int32", k0, 1, MARBLE_ERR_INVALID_ARGUMENT, "'a'");
    expect_init_error("a:int64,_x:utf8", k0, 1, MARBLE_ERR_INVALID_ARGUMENT, "'_x'");
    expect_init_error("a:int64,_seq:uint64", k0, 1, MARBLE_ERR_INVALID_ARGUMENT, "'_seq'");
    expect_init_error("a:int64,b:utf8", k5, 1, MARBLE_ERR_INVALID_ARGUMENT, "index 5");
    expect_init_error("a:int64,b:utf8", kneg, 1, MARBLE_ERR_INVALID_ARGUMENT, "index -1");
    expect_init_error("a:int64,b:utf8", kdup, 3, MARBLE_ERR_INVALID_ARGUMENT, "'b'");
    expect_init_error("a:int64,b:utf8", k0, 0, MARBLE_ERR_INVALID_ARGUMENT, "key columns");
    expect_init_error("a:int64,b:utf8", NULL, 1, MARBLE_ERR_INVALID_ARGUMENT, "key columns");
    int many[MARBLE__KEY_MAX_COLS + 1];
    for (int i = 0; i <= MARBLE__KEY_MAX_COLS; i++)
        many[i] = i;
    char text[32768];
    size_t tl = 0;
    for (int i = 0; i < MARBLE__MAX_COLUMNS + 1; i++)
        tl += (size_t)snprintf(text + tl, sizeof text - tl, "%sc%d:int8", i ? "," : "", i);
    expect_init_error(text, many, MARBLE__KEY_MAX_COLS + 1, MARBLE_ERR_INVALID_ARGUMENT,
                      "1025 columns");
    expect_init_error(text, k0, 1, MARBLE_ERR_INVALID_ARGUMENT, "1025 columns");
    text[tl - strlen(",c1024:int8")] = 0;
    marble_error err = {0};
    struct ArrowSchema s;
    marble__row_codec c;
    CHECK_OK(marble_arrow_schema_parse(text, &s, &err));
    ASSERT_EQ_INT(s.n_children, MARBLE__MAX_COLUMNS);
    ASSERT_EQ_INT(marble__row_codec_init(&c, &s, many, MARBLE__KEY_MAX_COLS + 1, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    CHECK_OK(marble__row_codec_init(&c, &s, many, MARBLE__KEY_MAX_COLS, &err));
    ASSERT_EQ_INT(c.n_value_cols, MARBLE__MAX_COLUMNS - MARBLE__KEY_MAX_COLS);
    marble__row_codec_free(&c);
    s.release(&s);

    /* Unsupported column types: null and struct. */
    marble_field_spec nul[] = {{"k", "l", 0}, {"nothing", "n", 1}};
    CHECK_OK(marble_arrow_schema_make(&s, nul, 2, NULL, NULL, 0, &err));
    ASSERT_EQ_INT(marble__row_codec_init(&c, &s, k0, 1, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(err.message, "'nothing'");
    s.release(&s);

    marble_field_spec empty[] = {{"k", "l", 0}, {"", "u", 1}};
    CHECK_OK(marble_arrow_schema_make(&s, empty, 2, NULL, NULL, 0, &err));
    ASSERT_EQ_INT(marble__row_codec_init(&c, &s, k0, 1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 1");
    ASSERT_EQ_INT(marble__row_codec_init(&c, NULL, k0, 1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    s.release(&s);
    marble__row_codec_free(NULL);
    (void)k1;
}

TEST(rowcodec_assembler_create_errors)
{
    table t;
    int keys[] = {0};
    marble_error err = {0};
    table_open(&t, "k:int64!,v:int32", keys, 1);
    marble__assembler *a = (marble__assembler *)&t;
    int bad[] = {0, 2}, dup[] = {1, 1};
    ASSERT_EQ_INT(marble__assembler_create(&t.codec, bad, 2, 0, &a, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(a);
    ASSERT_EQ_INT(marble__assembler_create(&t.codec, dup, 2, 0, &a, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'v'");
    ASSERT_EQ_INT(marble__assembler_create(&t.codec, NULL, 2, 0, &a, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    table_close(&t);
}
