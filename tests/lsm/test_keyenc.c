/* Tests for the order-preserving key encoding: memcmp order equals typed order for every key type.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "arrow/arrow_internal.h"
#include "lsm/keyenc.h"
#include "marble/arrow.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

/* Random value with a random magnitude, so small and large values both occur. */
static uint64_t rnd_mag(void)
{
    return rnd() >> (rnd() % 64);
}

typedef struct fixture {
    struct ArrowSchema schema;
    struct ArrowArray batch;
    marble_batch_builder *b;
} fixture;

static void fixture_make(fixture *f, const marble_field_spec *fields, size_t n)
{
    marble_error err = {0};
    memset(f, 0, sizeof *f);
    CHECK_OK(marble_arrow_schema_make(&f->schema, fields, n, NULL, NULL, 0, &err));
    CHECK_OK(marble_batch_builder_create(&f->schema, &f->b, &err));
}

static void fixture_finish(fixture *f)
{
    marble_error err = {0};
    CHECK_OK(marble_batch_builder_finish(f->b, &f->batch, &err));
}

static void fixture_free(fixture *f)
{
    marble_batch_builder_destroy(f->b);
    marble_arrow_array_release(&f->batch);
    marble_arrow_schema_release(&f->schema);
}

static const uint8_t str_alpha[] = {0x00, 0x01, 0xFF, 'a', 'b', 0xFE};
static const uint8_t utf8_alpha[] = {0x00, 0x01, 'a', 'b', 0x7F};

/* Appends one random (or extreme) value of the column's type, null about 1 time in 16. */
static void append_random(fixture *f, int col, int64_t row)
{
    marble_error err = {0};
    marble_arrow_type t;
    CHECK_OK(marble__arrow_schema_type(f->schema.children[col], &t, &err));
    if (rnd() % 16 == 0) {
        CHECK_OK(marble_builder_append_null(f->b, col, &err));
        return;
    }
    int w = t.byte_width;
    switch (t.id) {
    case MARBLE_ARROW_BOOL:
        CHECK_OK(marble_builder_append_int(f->b, col, (int64_t)(rnd() & 1), &err));
        break;
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_DATE32:
    case MARBLE_ARROW_TIMESTAMP: {
        int bits = w * 8;
        int64_t max = (int64_t)((UINT64_C(1) << (bits - 1)) - 1);
        int64_t min = -max - 1;
        int64_t ext[] = {min, max, 0, -1, 1, min + 1, max - 1};
        int64_t v;
        if (row < 7) {
            v = ext[row];
        } else {
            uint64_t m = rnd_mag();
            if (bits < 64) m &= (UINT64_C(1) << (bits - 1)) - 1;
            m &= (uint64_t)INT64_MAX;
            v = (rnd() & 1) ? -(int64_t)m - (int64_t)(rnd() & 1) : (int64_t)m;
        }
        CHECK_OK(marble_builder_append_int(f->b, col, v, &err));
        break;
    }
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64: {
        uint64_t max = w == 8 ? UINT64_MAX : (UINT64_C(1) << (w * 8)) - 1;
        uint64_t ext[] = {0, max, 1, max - 1, max / 2, max / 2 + 1};
        uint64_t v = row < 6 ? ext[row] : rnd_mag() & max;
        CHECK_OK(marble_builder_append_uint(f->b, col, v, &err));
        break;
    }
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64: {
        double ext[] = {0.0,     -0.0,     INFINITY, -INFINITY, NAN,      -NAN,     1.0,
                        -1.0,    FLT_MIN,  -FLT_MIN, FLT_MAX,   -FLT_MAX, 1e-45,    -1e-45,
                        DBL_MIN, -DBL_MIN, DBL_MAX,  -DBL_MAX,  4.9e-324, -4.9e-324};
        int next = (int)(sizeof ext / sizeof ext[0]);
        double v;
        if (t.id == MARBLE_ARROW_FLOAT32) {
            if (row < 14) {
                v = ext[row];
            } else {
                uint32_t bits = (uint32_t)rnd();
                float x;
                memcpy(&x, &bits, sizeof x);
                v = (rnd() % 4 == 0) ? (double)(float)((int64_t)(rnd() % 64) - 32) : (double)x;
            }
        } else {
            if (row < next) {
                v = ext[row];
            } else if (rnd() % 4 == 0) {
                v = (double)((int64_t)(rnd() % 64) - 32) / 4;
            } else {
                uint64_t bits = rnd();
                memcpy(&v, &bits, sizeof v);
            }
        }
        CHECK_OK(marble_builder_append_double(f->b, col, v, &err));
        break;
    }
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_BINARY: {
        int utf8 = t.id == MARBLE_ARROW_UTF8 || t.id == MARBLE_ARROW_LARGE_UTF8;
        const uint8_t *alpha = utf8 ? utf8_alpha : str_alpha;
        size_t na = utf8 ? sizeof utf8_alpha : sizeof str_alpha;
        uint8_t buf[8];
        size_t n = rnd() % 7;
        for (size_t i = 0; i < n; i++)
            buf[i] = alpha[rnd() % na];
        CHECK_OK(marble_builder_append_bytes(f->b, col, buf, n, &err));
        break;
    }
    case MARBLE_ARROW_FIXED_SIZE_BINARY: {
        uint8_t buf[16];
        for (int i = 0; i < w; i++)
            buf[i] = str_alpha[rnd() % 4];
        CHECK_OK(marble_builder_append_bytes(f->b, col, buf, (size_t)w, &err));
        break;
    }
    default:
        FAIL("unexpected type %d", (int)t.id);
    }
}

static int sign(int64_t x)
{
    return (x > 0) - (x < 0);
}

static int cmp_double(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) - isnan(b);
    return (a > b) - (a < b);
}

static int cmp_bytes(const void *a, size_t na, const void *b, size_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    if (c) return sign(c);
    return (na > nb) - (na < nb);
}

/* The typed order of rows i and j over the key columns: nulls first, then values. */
static int typed_cmp(const fixture *f, const int *cols, int nkeys, int64_t i, int64_t j)
{
    for (int k = 0; k < nkeys; k++) {
        const struct ArrowSchema *s = f->schema.children[cols[k]];
        const struct ArrowArray *a = f->batch.children[cols[k]];
        int ni = marble_arrow_is_null(a, i), nj = marble_arrow_is_null(a, j);
        if (ni || nj) {
            if (ni != nj) return ni ? -1 : 1;
            continue;
        }
        marble_arrow_type t;
        marble_arrow_type_parse(s->format, &t, NULL);
        int c;
        if (t.id >= MARBLE_ARROW_UINT8 && t.id <= MARBLE_ARROW_UINT64) {
            uint64_t x = marble_arrow_get_uint(s, a, i), y = marble_arrow_get_uint(s, a, j);
            c = (x > y) - (x < y);
        } else if (t.id == MARBLE_ARROW_FLOAT32 || t.id == MARBLE_ARROW_FLOAT64) {
            c = cmp_double(marble_arrow_get_double(s, a, i), marble_arrow_get_double(s, a, j));
        } else if (t.id >= MARBLE_ARROW_UTF8 && t.id <= MARBLE_ARROW_FIXED_SIZE_BINARY) {
            const void *x, *y;
            size_t nx, ny;
            marble_arrow_get_bytes(s, a, i, &x, &nx);
            marble_arrow_get_bytes(s, a, j, &y, &ny);
            c = cmp_bytes(x, nx, y, ny);
        } else {
            int64_t x = marble_arrow_get_int(s, a, i), y = marble_arrow_get_int(s, a, j);
            c = (x > y) - (x < y);
        }
        if (c) return c;
    }
    return 0;
}

/* Checks decoded values against the batch's values of row i. */
static void check_decoded(const fixture *f, const int *cols, int nkeys, int64_t i,
                          const marble__key_value *vals)
{
    for (int k = 0; k < nkeys; k++) {
        const struct ArrowSchema *s = f->schema.children[cols[k]];
        const struct ArrowArray *a = f->batch.children[cols[k]];
        const marble__key_value *v = &vals[k];
        if (marble_arrow_is_null(a, i)) {
            ASSERT_EQ_INT(v->kind, MARBLE__KV_NULL);
            continue;
        }
        marble_arrow_type t;
        marble_arrow_type_parse(s->format, &t, NULL);
        if (t.id >= MARBLE_ARROW_UINT8 && t.id <= MARBLE_ARROW_UINT64) {
            ASSERT_EQ_INT(v->kind, MARBLE__KV_UINT);
            ASSERT_EQ_U64(v->u, marble_arrow_get_uint(s, a, i));
        } else if (t.id == MARBLE_ARROW_FLOAT32 || t.id == MARBLE_ARROW_FLOAT64) {
            double x = marble_arrow_get_double(s, a, i);
            ASSERT_EQ_INT(v->kind, MARBLE__KV_DOUBLE);
            ASSERT_EQ_INT(isnan(v->d) != 0, isnan(x) != 0);
            if (!isnan(x)) ASSERT_TRUE(v->d == x);
            if (x == 0) ASSERT_FALSE(signbit(v->d));
        } else if (t.id >= MARBLE_ARROW_UTF8 && t.id <= MARBLE_ARROW_FIXED_SIZE_BINARY) {
            const void *x;
            size_t nx;
            marble_arrow_get_bytes(s, a, i, &x, &nx);
            ASSERT_EQ_INT(v->kind, MARBLE__KV_BYTES);
            ASSERT_EQ_INT(v->len, nx);
            ASSERT_TRUE(nx == 0 || memcmp(v->bytes, x, nx) == 0);
        } else {
            ASSERT_EQ_INT(v->kind, MARBLE__KV_INT);
            ASSERT_EQ_INT(v->i, marble_arrow_get_int(s, a, i));
        }
    }
}

/* The typed value of row i, column cols[k], as encode_values takes it. */
static marble__key_value value_of(const fixture *f, int col, int64_t i)
{
    const struct ArrowSchema *s = f->schema.children[col];
    const struct ArrowArray *a = f->batch.children[col];
    marble__key_value v = {0};
    if (marble_arrow_is_null(a, i)) return v;
    marble_arrow_type t;
    marble_arrow_type_parse(s->format, &t, NULL);
    if (t.id >= MARBLE_ARROW_UINT8 && t.id <= MARBLE_ARROW_UINT64) {
        v.kind = MARBLE__KV_UINT;
        v.u = marble_arrow_get_uint(s, a, i);
    } else if (t.id == MARBLE_ARROW_FLOAT32 || t.id == MARBLE_ARROW_FLOAT64) {
        v.kind = MARBLE__KV_DOUBLE;
        v.d = marble_arrow_get_double(s, a, i);
    } else if (t.id >= MARBLE_ARROW_UTF8 && t.id <= MARBLE_ARROW_FIXED_SIZE_BINARY) {
        const void *x;
        v.kind = MARBLE__KV_BYTES;
        marble_arrow_get_bytes(s, a, i, &x, &v.len);
        v.bytes = x;
    } else {
        v.kind = MARBLE__KV_INT;
        v.i = marble_arrow_get_int(s, a, i);
    }
    return v;
}

static const uint8_t *sort_data;
static const size_t *sort_offsets;

static int cmp_encoded(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return cmp_bytes(sort_data + sort_offsets[a], sort_offsets[a + 1] - sort_offsets[a],
                     sort_data + sort_offsets[b], sort_offsets[b + 1] - sort_offsets[b]);
}

/* Builds `rows` random rows of `fields`, encodes the key columns `cols`, and checks: memcmp order
 * equals typed order for every pair, sorting by encodings sorts by typed order, encode_row and
 * encode_values agree with the batch encoding, and decoding gives the values back. */
static void check_order(const marble_field_spec *fields, size_t nfields, const int *cols, int nkeys,
                        int64_t rows)
{
    marble_error err = {0};
    fixture f;
    fixture_make(&f, fields, nfields);
    for (int64_t r = 0; r < rows; r++)
        for (size_t c = 0; c < nfields; c++)
            append_random(&f, (int)c, r);
    fixture_finish(&f);

    marble__key_encoder e;
    CHECK_OK(marble__key_encoder_init(&e, &f.schema, cols, nkeys, MARBLE__KEY_DEFAULT, &err));
    marble__bytes keys = {0}, one = {0}, scratch = {0};
    size_t *off = malloc(sizeof *off * (size_t)(rows + 1));
    ASSERT_NOT_NULL(off);
    CHECK_OK(marble__bytes_append(&keys, "xy", 2, &err));
    CHECK_OK(marble__key_encode_batch(&e, &f.batch, &keys, off, &err));
    ASSERT_EQ_INT(off[0], 2);
    ASSERT_EQ_INT(off[rows], keys.len);

    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *ki = keys.data + off[i];
        size_t ni = off[i + 1] - off[i];
        one.len = 0;
        CHECK_OK(marble__key_encode_row(&e, &f.batch, i, &one, &err));
        ASSERT_EQ_INT(one.len, ni);
        ASSERT_TRUE(memcmp(one.data, ki, ni) == 0);

        marble__key_value vals[MARBLE__KEY_MAX_COLS];
        for (int k = 0; k < nkeys; k++)
            vals[k] = value_of(&f, cols[k], i);
        one.len = 0;
        CHECK_OK(marble__key_encode_values(&e, vals, nkeys, &one, &err));
        ASSERT_EQ_INT(one.len, ni);
        ASSERT_TRUE(memcmp(one.data, ki, ni) == 0);

        marble__key_value dec[MARBLE__KEY_MAX_COLS];
        CHECK_OK(marble__key_decode(&e, ki, ni, dec, &scratch, &err));
        check_decoded(&f, cols, nkeys, i, dec);

        for (int64_t j = 0; j < rows; j++) {
            int typed = typed_cmp(&f, cols, nkeys, i, j);
            int enc = cmp_bytes(ki, ni, keys.data + off[j], off[j + 1] - off[j]);
            if (typed != enc)
                FAIL("rows %" PRId64 " and %" PRId64 ": typed %d, memcmp %d", i, j, typed, enc);
        }
    }

    int64_t *idx = malloc(sizeof *idx * (size_t)rows);
    ASSERT_NOT_NULL(idx);
    for (int64_t i = 0; i < rows; i++)
        idx[i] = rows - 1 - i;
    sort_data = keys.data;
    sort_offsets = off;
    qsort(idx, (size_t)rows, sizeof *idx, cmp_encoded);
    for (int64_t i = 1; i < rows; i++)
        ASSERT_LE_INT(typed_cmp(&f, cols, nkeys, idx[i - 1], idx[i]), 0);

    free(idx);
    free(off);
    marble__bytes_free(&keys);
    marble__bytes_free(&one);
    marble__bytes_free(&scratch);
    fixture_free(&f);
}

static void check_single(const char *format, int64_t rows)
{
    marble_field_spec fs[] = {{"other", "l", 1}, {"k", format, 1}};
    int cols[] = {1};
    check_order(fs, 2, cols, 1, rows);
}

TEST(keyenc_order_signed_ints)
{
    check_single("c", 600);
    check_single("s", 600);
    check_single("i", 600);
    check_single("l", 600);
}

TEST(keyenc_order_unsigned_ints)
{
    check_single("C", 600);
    check_single("S", 600);
    check_single("I", 600);
    check_single("L", 600);
}

TEST(keyenc_order_bool)
{
    check_single("b", 200);
}

TEST(keyenc_order_floats)
{
    check_single("f", 800);
    check_single("g", 800);
}

TEST(keyenc_order_date_timestamp)
{
    check_single("tdD", 600);
    check_single("tsu:UTC", 600);
    check_single("tsn:", 600);
}

TEST(keyenc_order_strings)
{
    check_single("u", 800);
    check_single("U", 800);
    check_single("z", 800);
    check_single("Z", 800);
}

TEST(keyenc_order_fixed_size_binary)
{
    check_single("w:3", 600);
    check_single("w:1", 200);
}

TEST(keyenc_order_composite)
{
    marble_field_spec fs[] = {{"v", "g", 1}, {"a", "i", 1}, {"b", "u", 1}, {"c", "l", 1}};
    int cols[] = {1, 2, 3};
    check_order(fs, 4, cols, 3, 700);
    int rev[] = {3, 2, 1};
    check_order(fs, 4, rev, 3, 500);
    marble_field_spec mix[] = {{"s", "z", 1}, {"f", "f", 1}, {"w", "w:2", 1}, {"b", "b", 1}};
    int all[] = {0, 1, 2, 3};
    check_order(mix, 4, all, 4, 700);
}

TEST(keyenc_float_special_values)
{
    marble_error err = {0};
    marble_field_spec fs[] = {{"d", "g", 0}};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_make(&s, fs, 1, NULL, NULL, 0, &err));
    marble__key_encoder e;
    int col = 0;
    CHECK_OK(marble__key_encoder_init(&e, &s, &col, 1, 0, &err));
    double vals[] = {-INFINITY, -DBL_MAX, -1.0, -DBL_MIN, -4.9e-324, 0.0,
                     4.9e-324,  DBL_MIN,  1.0,  DBL_MAX,  INFINITY,  NAN};
    marble__bytes prev = {0}, cur = {0};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        marble__key_value v = {.kind = MARBLE__KV_DOUBLE, .d = vals[i]};
        cur.len = 0;
        CHECK_OK(marble__key_encode_values(&e, &v, 1, &cur, &err));
        ASSERT_EQ_INT(cur.len, 9);
        if (i > 0) ASSERT_LT_INT(memcmp(prev.data, cur.data, 9), 0);
        prev.len = 0;
        CHECK_OK(marble__bytes_append(&prev, cur.data, cur.len, &err));
    }
    marble__bytes a = {0}, b = {0};
    marble__key_value pz = {.kind = MARBLE__KV_DOUBLE, .d = 0.0};
    marble__key_value nz = {.kind = MARBLE__KV_DOUBLE, .d = -0.0};
    CHECK_OK(marble__key_encode_values(&e, &pz, 1, &a, &err));
    CHECK_OK(marble__key_encode_values(&e, &nz, 1, &b, &err));
    ASSERT_TRUE(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    uint64_t nan_bits[] = {UINT64_C(0x7FF0000000000001), UINT64_C(0xFFF8000000000000),
                           UINT64_C(0x7FFFFFFFFFFFFFFF)};
    for (size_t i = 0; i < 3; i++) {
        marble__key_value v = {.kind = MARBLE__KV_DOUBLE};
        memcpy(&v.d, &nan_bits[i], sizeof v.d);
        b.len = 0;
        CHECK_OK(marble__key_encode_values(&e, &v, 1, &b, &err));
        ASSERT_TRUE(memcmp(prev.data, b.data, 9) == 0);
    }
    marble__bytes_free(&a);
    marble__bytes_free(&b);
    marble__bytes_free(&prev);
    marble__bytes_free(&cur);
    marble_arrow_schema_release(&s);
}

TEST(keyenc_string_escapes)
{
    marble_error err = {0};
    marble_field_spec fs[] = {{"s", "z", 0}, {"n", "c", 0}};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_make(&s, fs, 2, NULL, NULL, 0, &err));
    marble__key_encoder e;
    int cols[] = {0, 1};
    CHECK_OK(marble__key_encoder_init(&e, &s, cols, 2, 0, &err));
    marble__key_value v[2] = {
        {.kind = MARBLE__KV_BYTES, .bytes = (const uint8_t *)"a\0b\xff", .len = 4},
        {.kind = MARBLE__KV_INT, .i = -1}};
    marble__bytes out = {0}, scratch = {0};
    CHECK_OK(marble__key_encode_values(&e, v, 2, &out, &err));
    const uint8_t want[] = {0x01, 'a', 0x00, 0xFF, 'b', 0xFF, 0x00, 0x00, 0x01, 0x7F};
    ASSERT_EQ_INT(out.len, sizeof want);
    ASSERT_TRUE(memcmp(out.data, want, sizeof want) == 0);
    marble__key_value d[2];
    CHECK_OK(marble__key_decode(&e, out.data, out.len, d, &scratch, &err));
    ASSERT_EQ_INT(d[0].len, 4);
    ASSERT_TRUE(memcmp(d[0].bytes, "a\0b\xff", 4) == 0);
    ASSERT_EQ_INT(d[1].i, -1);

    v[0].len = 0;
    v[0].bytes = NULL;
    out.len = 0;
    CHECK_OK(marble__key_encode_values(&e, v, 2, &out, &err));
    const uint8_t empty[] = {0x01, 0x00, 0x00, 0x01, 0x7F};
    ASSERT_EQ_INT(out.len, sizeof empty);
    ASSERT_TRUE(memcmp(out.data, empty, sizeof empty) == 0);
    CHECK_OK(marble__key_decode(&e, out.data, out.len, d, &scratch, &err));
    ASSERT_EQ_INT(d[0].kind, MARBLE__KV_BYTES);
    ASSERT_EQ_INT(d[0].len, 0);
    ASSERT_NOT_NULL(d[0].bytes);
    marble__bytes_free(&out);
    marble__bytes_free(&scratch);
    marble_arrow_schema_release(&s);
}

TEST(keyenc_prefix_successor)
{
    marble_error err = {0};
    marble__bytes out = {0};
    int bounded = -1;
    const uint8_t p1[] = {0x01, 0x7F, 0xFF, 0xFF};
    CHECK_OK(marble__key_prefix_successor(p1, sizeof p1, &out, &bounded, &err));
    ASSERT_EQ_INT(bounded, 1);
    ASSERT_EQ_INT(out.len, 2);
    ASSERT_EQ_INT(out.data[0], 0x01);
    ASSERT_EQ_INT(out.data[1], 0x80);
    const uint8_t p2[] = {0xFF, 0xFF};
    CHECK_OK(marble__key_prefix_successor(p2, sizeof p2, &out, &bounded, &err));
    ASSERT_EQ_INT(bounded, 0);
    ASSERT_EQ_INT(out.len, 0);
    CHECK_OK(marble__key_prefix_successor(NULL, 0, &out, &bounded, &err));
    ASSERT_EQ_INT(bounded, 0);

    /* Key prefixes: every key whose first column equals x is in [enc(x), succ(enc(x))). */
    marble_field_spec fs[] = {{"a", "i", 1}, {"b", "u", 1}};
    fixture f;
    fixture_make(&f, fs, 2);
    int64_t rows = 400;
    for (int64_t r = 0; r < rows; r++) {
        if (r % 13 == 0)
            CHECK_OK(marble_builder_append_null(f.b, 0, &err));
        else
            CHECK_OK(marble_builder_append_int(f.b, 0, (int64_t)(rnd() % 7) - 3, &err));
        append_random(&f, 1, r);
    }
    fixture_finish(&f);
    marble__key_encoder e;
    int cols[] = {0, 1};
    CHECK_OK(marble__key_encoder_init(&e, &f.schema, cols, 2, 0, &err));
    marble__bytes key = {0}, pre = {0};
    for (int64_t x = -4; x <= 4; x++) {
        marble__key_value v = {.kind = MARBLE__KV_INT, .i = x};
        if (x == 4) v.kind = MARBLE__KV_NULL;
        pre.len = 0;
        CHECK_OK(marble__key_encode_values(&e, &v, 1, &pre, &err));
        CHECK_OK(marble__key_prefix_successor(pre.data, pre.len, &out, &bounded, &err));
        ASSERT_EQ_INT(bounded, 1);
        for (int64_t r = 0; r < rows; r++) {
            key.len = 0;
            CHECK_OK(marble__key_encode_row(&e, &f.batch, r, &key, &err));
            int is_null = marble_arrow_is_null(f.batch.children[0], r);
            int match = x == 4 ? is_null
                               : !is_null && marble_arrow_get_int(f.schema.children[0],
                                                                  f.batch.children[0], r) == x;
            int in = cmp_bytes(key.data, key.len, pre.data, pre.len) >= 0 &&
                     cmp_bytes(key.data, key.len, out.data, out.len) < 0;
            ASSERT_EQ_INT(in, match);
        }
    }
    marble__bytes_free(&key);
    marble__bytes_free(&pre);
    marble__bytes_free(&out);
    fixture_free(&f);
}

TEST(keyenc_sliced_batch)
{
    marble_error err = {0};
    marble_field_spec fs[] = {{"a", "l", 1}, {"b", "U", 1}};
    fixture f;
    fixture_make(&f, fs, 2);
    for (int64_t r = 0; r < 50; r++) {
        append_random(&f, 0, r);
        append_random(&f, 1, r);
    }
    fixture_finish(&f);
    marble__key_encoder e;
    int cols[] = {1, 0};
    CHECK_OK(marble__key_encoder_init(&e, &f.schema, cols, 2, 0, &err));
    struct ArrowArray slice = f.batch;
    slice.offset = 7;
    slice.length = 40;
    marble__bytes a = {0}, b = {0};
    for (int64_t r = 0; r < 40; r++) {
        a.len = b.len = 0;
        CHECK_OK(marble__key_encode_row(&e, &slice, r, &a, &err));
        CHECK_OK(marble__key_encode_row(&e, &f.batch, r + 7, &b, &err));
        ASSERT_TRUE(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    }
    ASSERT_EQ_INT(marble__key_encode_row(&e, &slice, 40, &a, &err), MARBLE_ERR_INVALID_ARGUMENT);
    slice.length = 44;
    ASSERT_EQ_INT(marble__key_encode_row(&e, &slice, 0, &a, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'b'");
    marble__bytes_free(&a);
    marble__bytes_free(&b);
    fixture_free(&f);
}

TEST(keyenc_init_errors)
{
    marble_error err = {0};
    marble_field_spec fs[] = {{"id", "l", 0}, {"nothing", "n", 1}, {"name", "u", 1}};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_make(&s, fs, 3, NULL, NULL, 0, &err));
    marble__key_encoder e;
    int c1[] = {0, 1};
    ASSERT_EQ_INT(marble__key_encoder_init(&e, &s, c1, 2, 0, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(err.message, "'nothing'");
    int c2[] = {0, 3};
    ASSERT_EQ_INT(marble__key_encoder_init(&e, &s, c2, 2, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "index 3");
    int c3[] = {-1};
    ASSERT_EQ_INT(marble__key_encoder_init(&e, &s, c3, 1, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    int c4[] = {2, 2};
    ASSERT_EQ_INT(marble__key_encoder_init(&e, &s, c4, 2, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__key_encoder_init(&e, &s, c4, 0, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__key_encoder_init(&e, s.children[0], c3, 1, 0, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__key_encoder_init(&e, NULL, c4, 1, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);

    int ok[] = {2, 0};
    CHECK_OK(marble__key_encoder_init(&e, &s, ok, 2, 0, &err));
    struct ArrowArray empty = {0};
    marble__bytes out = {0};
    ASSERT_EQ_INT(marble__key_encode_row(&e, &empty, 0, &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__key_encode_row(&e, NULL, 0, &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble__key_encoder zero = {0};
    marble__key_value v = {0};
    ASSERT_EQ_INT(marble__key_encode_values(&zero, &v, 1, &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(out.len, 0);
    marble__bytes_free(&out);
    marble_arrow_schema_release(&s);
}

TEST(keyenc_reject_nulls)
{
    marble_error err = {0};
    marble_field_spec fs[] = {{"a", "i", 1}, {"b", "u", 1}};
    fixture f;
    fixture_make(&f, fs, 2);
    CHECK_OK(marble_builder_append_int(f.b, 0, 1, &err));
    CHECK_OK(marble_builder_append_bytes(f.b, 1, "x", 1, &err));
    CHECK_OK(marble_builder_append_int(f.b, 0, 2, &err));
    CHECK_OK(marble_builder_append_null(f.b, 1, &err));
    fixture_finish(&f);
    marble__key_encoder e;
    int cols[] = {0, 1};
    CHECK_OK(marble__key_encoder_init(&e, &f.schema, cols, 2, MARBLE__KEY_REJECT_NULLS, &err));
    marble__bytes out = {0};
    CHECK_OK(marble__key_encode_row(&e, &f.batch, 0, &out, &err));
    size_t len = out.len;
    ASSERT_EQ_INT(marble__key_encode_row(&e, &f.batch, 1, &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'b'");
    ASSERT_EQ_INT(out.len, len);
    size_t off[3];
    ASSERT_EQ_INT(marble__key_encode_batch(&e, &f.batch, &out, off, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(out.len, len);
    marble__key_value v[2] = {{.kind = MARBLE__KV_INT, .i = 1}, {.kind = MARBLE__KV_NULL}};
    ASSERT_EQ_INT(marble__key_encode_values(&e, v, 2, &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(out.len, len);

    CHECK_OK(marble__key_encoder_init(&e, &f.schema, cols, 2, 0, &err));
    out.len = 0;
    CHECK_OK(marble__key_encode_row(&e, &f.batch, 1, &out, &err));
    ASSERT_EQ_INT(out.len, 6);
    ASSERT_EQ_INT(out.data[5], MARBLE__KEY_NULL);
    marble__bytes_free(&out);
    fixture_free(&f);
}

TEST(keyenc_value_errors)
{
    marble_error err = {0};
    marble_field_spec fs[] = {{"i8", "c", 1},    {"u16", "S", 1},  {"f32", "f", 1},
                              {"fsb", "w:4", 1}, {"flag", "b", 1}, {"s", "u", 1}};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_make(&s, fs, 6, NULL, NULL, 0, &err));
    marble__key_encoder e;
    marble__bytes out = {0};
    struct {
        int col;
        marble__key_value v;
        int ok;
    } cases[] = {
        {0, {.kind = MARBLE__KV_INT, .i = 127}, 1},
        {0, {.kind = MARBLE__KV_INT, .i = -128}, 1},
        {0, {.kind = MARBLE__KV_INT, .i = 128}, 0},
        {0, {.kind = MARBLE__KV_INT, .i = -129}, 0},
        {0, {.kind = MARBLE__KV_UINT, .u = 127}, 1},
        {0, {.kind = MARBLE__KV_UINT, .u = UINT64_MAX}, 0},
        {0, {.kind = MARBLE__KV_DOUBLE, .d = 1}, 0},
        {1, {.kind = MARBLE__KV_UINT, .u = 65535}, 1},
        {1, {.kind = MARBLE__KV_UINT, .u = 65536}, 0},
        {1, {.kind = MARBLE__KV_INT, .i = -1}, 0},
        {1, {.kind = MARBLE__KV_INT, .i = 7}, 1},
        {2, {.kind = MARBLE__KV_DOUBLE, .d = 0.5}, 1},
        {2, {.kind = MARBLE__KV_DOUBLE, .d = 0.1}, 0},
        {2, {.kind = MARBLE__KV_DOUBLE, .d = 1e300}, 0},
        {2, {.kind = MARBLE__KV_DOUBLE, .d = INFINITY}, 1},
        {2, {.kind = MARBLE__KV_DOUBLE, .d = NAN}, 1},
        {2, {.kind = MARBLE__KV_INT, .i = 1}, 0},
        {3, {.kind = MARBLE__KV_BYTES, .bytes = (const uint8_t *)"abcd", .len = 4}, 1},
        {3, {.kind = MARBLE__KV_BYTES, .bytes = (const uint8_t *)"abc", .len = 3}, 0},
        {4, {.kind = MARBLE__KV_INT, .i = 1}, 1},
        {4, {.kind = MARBLE__KV_INT, .i = 2}, 0},
        {5, {.kind = MARBLE__KV_BYTES, .bytes = NULL, .len = 3}, 0},
        {5, {.kind = MARBLE__KV_INT, .i = 2}, 0},
        {5, {.kind = MARBLE__KV_NULL}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_OK(marble__key_encoder_init(&e, &s, &cases[i].col, 1, 0, &err));
        out.len = 0;
        int rc = marble__key_encode_values(&e, &cases[i].v, 1, &out, &err);
        if (cases[i].ok) {
            if (rc != MARBLE_OK) FAIL("case %zu: %s", i, err.message);
        } else {
            if (rc != MARBLE_ERR_INVALID_ARGUMENT) FAIL("case %zu: rc %d", i, rc);
            ASSERT_CONTAINS(err.message, fs[cases[i].col].name);
            ASSERT_EQ_INT(out.len, 0);
        }
    }
    int two[] = {0, 1};
    CHECK_OK(marble__key_encoder_init(&e, &s, two, 2, 0, &err));
    marble__key_value v[3] = {{.kind = MARBLE__KV_INT, .i = 1}};
    ASSERT_EQ_INT(marble__key_encode_values(&e, v, 3, &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__key_encode_values(&e, v, 0, &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble__bytes_free(&out);
    marble_arrow_schema_release(&s);
}

TEST(keyenc_decode_corrupt)
{
    marble_error err = {0};
    marble_field_spec fs[] = {{"a", "i", 1}, {"b", "z", 1}, {"c", "w:2", 1}, {"d", "b", 1}};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_make(&s, fs, 4, NULL, NULL, 0, &err));
    marble__key_encoder e;
    int cols[] = {0, 1, 2, 3};
    CHECK_OK(marble__key_encoder_init(&e, &s, cols, 4, 0, &err));
    marble__key_value v[4] = {{.kind = MARBLE__KV_INT, .i = 5},
                              {.kind = MARBLE__KV_BYTES, .bytes = (const uint8_t *)"\0q", .len = 2},
                              {.kind = MARBLE__KV_BYTES, .bytes = (const uint8_t *)"zz", .len = 2},
                              {.kind = MARBLE__KV_INT, .i = 1}};
    marble__bytes key = {0}, scratch = {0}, bad = {0};
    CHECK_OK(marble__key_encode_values(&e, v, 4, &key, &err));
    marble__key_value d[4];
    CHECK_OK(marble__key_decode(&e, key.data, key.len, d, &scratch, &err));
    for (size_t n = 0; n < key.len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        ASSERT_NOT_NULL(copy);
        memcpy(copy, key.data, n);
        ASSERT_EQ_INT(marble__key_decode(&e, copy, n, d, &scratch, &err), MARBLE_ERR_CORRUPTION);
        free(copy);
    }
    CHECK_OK(marble__bytes_append(&bad, key.data, key.len, &err));
    CHECK_OK(marble__bytes_append(&bad, "", 1, &err));
    ASSERT_EQ_INT(marble__key_decode(&e, bad.data, bad.len, d, &scratch, &err),
                  MARBLE_ERR_CORRUPTION);
    bad.len = 0;
    CHECK_OK(marble__bytes_append(&bad, key.data, key.len, &err));
    bad.data[0] = 0x02;
    ASSERT_EQ_INT(marble__key_decode(&e, bad.data, bad.len, d, &scratch, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "'a'");
    bad.data[0] = 0x01;
    bad.data[7] = 0x05;
    ASSERT_EQ_INT(marble__key_decode(&e, bad.data, bad.len, d, &scratch, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "'b'");
    bad.data[7] = 0xFF;
    bad.data[key.len - 1] = 0x02;
    ASSERT_EQ_INT(marble__key_decode(&e, bad.data, bad.len, d, &scratch, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "'d'");
    for (int i = 0; i < 2000; i++) {
        size_t n = rnd() % 24;
        uint8_t buf[24];
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)(rnd() % 4 == 0 ? 0 : rnd());
        int rc = marble__key_decode(&e, buf, n, d, &scratch, &err);
        ASSERT_TRUE(rc == MARBLE_OK || rc == MARBLE_ERR_CORRUPTION);
    }
    marble__bytes_free(&key);
    marble__bytes_free(&scratch);
    marble__bytes_free(&bad);
    marble_arrow_schema_release(&s);
}
