/* Order-preserving key encoding: key columns of Arrow rows to memcmp-comparable bytes and back. */
#include "lsm/keyenc.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arrow/arrow_internal.h"

int marble__bytes_reserve(marble__bytes *b, size_t additional, marble_error *err)
{
    if (additional <= b->cap - b->len) return MARBLE_OK;
    if (additional > SIZE_MAX / 2 - b->len)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "key buffer: %zu bytes is too many",
                                additional);
    size_t need = b->len + additional;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "key buffer: out of memory (%zu bytes)",
                                cap);
    b->data = p;
    b->cap = cap;
    return MARBLE_OK;
}

int marble__bytes_append(marble__bytes *b, const void *data, size_t n, marble_error *err)
{
    if (n == 0) return MARBLE_OK;
    MARBLE_RETURN_NOT_OK(marble__bytes_reserve(b, n, err));
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return MARBLE_OK;
}

void marble__bytes_free(marble__bytes *b)
{
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- types ----------------------------------------------------------------------------------- */

/* Bytes of a fixed-width key value (without the marker), 0 for variable width. */
static int key_width(const marble_arrow_type *t)
{
    switch (t->id) {
    case MARBLE_ARROW_BOOL:
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_UINT8:
        return 1;
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_UINT16:
        return 2;
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_DATE32:
        return 4;
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_UINT64:
    case MARBLE_ARROW_FLOAT64:
    case MARBLE_ARROW_TIMESTAMP:
        return 8;
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        return t->byte_width;
    default:
        return 0;
    }
}

static int is_signed(marble_arrow_type_id id)
{
    return id == MARBLE_ARROW_INT8 || id == MARBLE_ARROW_INT16 || id == MARBLE_ARROW_INT32 ||
           id == MARBLE_ARROW_INT64 || id == MARBLE_ARROW_DATE32 || id == MARBLE_ARROW_TIMESTAMP;
}

static int is_unsigned(marble_arrow_type_id id)
{
    return id == MARBLE_ARROW_UINT8 || id == MARBLE_ARROW_UINT16 || id == MARBLE_ARROW_UINT32 ||
           id == MARBLE_ARROW_UINT64;
}

static int is_varbytes(marble_arrow_type_id id)
{
    return id == MARBLE_ARROW_UTF8 || id == MARBLE_ARROW_LARGE_UTF8 || id == MARBLE_ARROW_BINARY ||
           id == MARBLE_ARROW_LARGE_BINARY;
}

static int is_supported(const marble_arrow_type *t)
{
    return t->id == MARBLE_ARROW_BOOL || is_signed(t->id) || is_unsigned(t->id) ||
           t->id == MARBLE_ARROW_FLOAT32 || t->id == MARBLE_ARROW_FLOAT64 || is_varbytes(t->id) ||
           (t->id == MARBLE_ARROW_FIXED_SIZE_BINARY && t->byte_width > 0);
}

static const char *type_name(const marble_arrow_type *t, char *buf, size_t cap)
{
    return marble_arrow_type_name(t, buf, cap);
}

int marble__key_encoder_init(marble__key_encoder *e, const struct ArrowSchema *schema,
                             const int *key_cols, int nkeys, int flags, marble_error *err)
{
    memset(e, 0, sizeof *e);
    if (!schema || !schema->format || strcmp(schema->format, "+s") != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "key encoder: the schema is not a struct (\"+s\") schema");
    if (nkeys < 1 || nkeys > MARBLE__KEY_MAX_COLS || !key_cols)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "key encoder: %d key columns (must be 1 to %d)", nkeys,
                                MARBLE__KEY_MAX_COLS);
    if (schema->n_children < 0 || schema->n_children > INT32_MAX ||
        (schema->n_children > 0 && !schema->children))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "key encoder: the schema's children are malformed");
    for (int k = 0; k < nkeys; k++) {
        int c = key_cols[k];
        if (c < 0 || c >= schema->n_children)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "key column #%d: index %d out of range (the schema has %" PRId64
                                    " columns)",
                                    k, c, schema->n_children);
        for (int p = 0; p < k; p++)
            if (key_cols[p] == c)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "key column #%d: column %d is already key column #%d", k, c,
                                        p);
        const struct ArrowSchema *child = schema->children[c];
        if (!child)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "key column #%d: schema child %d is NULL", k, c);
        marble__key_column *kc = &e->keys[k];
        kc->col = c;
        snprintf(kc->name, sizeof kc->name, "%s", marble__arrow_field_name(child));
        MARBLE_RETURN_NOT_OK(marble__arrow_schema_type(child, &kc->type, err));
        if (!is_supported(&kc->type)) {
            char buf[96];
            return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                    "key column '%s': type %s cannot be a key", kc->name,
                                    type_name(&kc->type, buf, sizeof buf));
        }
    }
    e->nkeys = nkeys;
    e->flags = flags;
    e->n_schema_cols = (int)schema->n_children;
    return MARBLE_OK;
}

/* ---- writing values -------------------------------------------------------------------------- */

static void put_be(uint8_t *p, uint64_t v, int w)
{
    for (int i = w - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int w)
{
    uint64_t v = 0;
    for (int i = 0; i < w; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Appends the marker and the w-byte big-endian image of `ordered`. */
static int put_fixed(marble__bytes *out, uint64_t ordered, int w, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(marble__bytes_reserve(out, (size_t)w + 1, err));
    out->data[out->len] = MARBLE__KEY_VALUE;
    put_be(out->data + out->len + 1, ordered, w);
    out->len += (size_t)w + 1;
    return MARBLE_OK;
}

static uint64_t order_signed(int64_t v, int w)
{
    return (uint64_t)v ^ ((uint64_t)1 << (w * 8 - 1));
}

static uint64_t order_f64(double d)
{
    uint64_t b;
    if (isnan(d)) {
        b = UINT64_C(0x7FF8000000000000);
    } else {
        if (d == 0) d = 0.0;
        memcpy(&b, &d, sizeof b);
    }
    return (b >> 63) ? ~b : b ^ (UINT64_C(1) << 63);
}

static uint64_t order_f32(float f)
{
    uint32_t b;
    if (isnan(f)) {
        b = UINT32_C(0x7FC00000);
    } else {
        if (f == 0) f = 0.0f;
        memcpy(&b, &f, sizeof b);
    }
    b = (b >> 31) ? ~b : b ^ (UINT32_C(1) << 31);
    return b;
}

static int put_escaped(marble__bytes *out, const uint8_t *s, size_t n, marble_error *err)
{
    static const uint8_t esc[2] = {0x00, 0xFF};
    static const uint8_t term[2] = {0x00, 0x00};
    uint8_t marker = MARBLE__KEY_VALUE;
    MARBLE_RETURN_NOT_OK(marble__bytes_reserve(out, n + 3, err));
    MARBLE_RETURN_NOT_OK(marble__bytes_append(out, &marker, 1, err));
    while (n > 0) {
        const uint8_t *z = memchr(s, 0, n);
        size_t seg = z ? (size_t)(z - s) : n;
        MARBLE_RETURN_NOT_OK(marble__bytes_append(out, s, seg, err));
        if (!z) break;
        MARBLE_RETURN_NOT_OK(marble__bytes_append(out, esc, 2, err));
        s += seg + 1;
        n -= seg + 1;
    }
    return marble__bytes_append(out, term, 2, err);
}

static int put_raw(marble__bytes *out, const uint8_t *s, size_t n, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(marble__bytes_reserve(out, n + 1, err));
    out->data[out->len++] = MARBLE__KEY_VALUE;
    if (n) memcpy(out->data + out->len, s, n);
    out->len += n;
    return MARBLE_OK;
}

static int put_null(const marble__key_encoder *e, const marble__key_column *kc, marble__bytes *out,
                    marble_error *err)
{
    uint8_t marker = MARBLE__KEY_NULL;
    if (e->flags & MARBLE__KEY_REJECT_NULLS)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "key column '%s': a key value is null", kc->name);
    return marble__bytes_append(out, &marker, 1, err);
}

/* ---- rows of batches ------------------------------------------------------------------------- */

typedef struct resolved_col {
    const uint8_t *validity;
    const uint8_t *values;
    const void *offsets;
    const uint8_t *data;
    int64_t offset;
    int64_t length;
    int offset_bytes;
} resolved_col;

typedef struct resolved_batch {
    const uint8_t *validity;
    int64_t offset;
    int64_t length;
    resolved_col cols[MARBLE__KEY_MAX_COLS];
} resolved_batch;

static int resolve(const marble__key_encoder *e, const struct ArrowArray *batch, resolved_batch *rb,
                   marble_error *err)
{
    if (e->nkeys < 1)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "key encoder not initialized");
    if (!batch || !batch->release || batch->length < 0 || batch->offset < 0 ||
        batch->n_children != e->n_schema_cols || !batch->children || batch->n_buffers < 1 ||
        !batch->buffers)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "key encoding: the batch is not a struct array of %d columns",
                                e->n_schema_cols);
    rb->validity = batch->null_count != 0 ? batch->buffers[0] : NULL;
    rb->offset = batch->offset;
    rb->length = batch->length;
    for (int k = 0; k < e->nkeys; k++) {
        const marble__key_column *kc = &e->keys[k];
        const struct ArrowArray *a = batch->children[kc->col];
        marble__arrow_layout l = marble__arrow_layout_of(&kc->type);
        if (!a || a->n_buffers != l.n_buffers || !a->buffers || a->offset < 0 || a->length < 0 ||
            a->length > INT64_MAX - a->offset || batch->length > INT64_MAX - batch->offset ||
            a->length < batch->offset + batch->length)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "key column '%s': its array is malformed or too short",
                                    kc->name);
        resolved_col *rc = &rb->cols[k];
        memset(rc, 0, sizeof *rc);
        rc->validity = a->null_count != 0 ? a->buffers[0] : NULL;
        rc->offset = a->offset;
        rc->length = a->length;
        rc->offset_bytes = l.offset_bytes;
        if (l.offset_bytes) {
            rc->offsets = a->buffers[1];
            rc->data = a->buffers[2];
            if (a->length > 0 && !rc->offsets)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "key column '%s': no offsets buffer", kc->name);
        } else {
            rc->values = a->buffers[1];
            if (a->length > 0 && !rc->values)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "key column '%s': no values buffer", kc->name);
        }
    }
    return MARBLE_OK;
}

static int encode_resolved(const marble__key_encoder *e, const resolved_batch *rb, int64_t row,
                           marble__bytes *out, marble_error *err)
{
    int64_t j = rb->offset + row;
    int struct_null = rb->validity && !marble__arrow_bit_get(rb->validity, j);
    for (int k = 0; k < e->nkeys; k++) {
        const marble__key_column *kc = &e->keys[k];
        const resolved_col *rc = &rb->cols[k];
        int64_t p = rc->offset + j;
        if (struct_null || (rc->validity && !marble__arrow_bit_get(rc->validity, p))) {
            MARBLE_RETURN_NOT_OK(put_null(e, kc, out, err));
            continue;
        }
        int w = key_width(&kc->type);
        const uint8_t *v = rc->values ? rc->values + (size_t)p * (size_t)w : NULL;
        int rc_ = MARBLE_OK;
        switch (kc->type.id) {
        case MARBLE_ARROW_BOOL:
            rc_ = put_fixed(out, (uint64_t)marble__arrow_bit_get(rc->values, p), 1, err);
            break;
        case MARBLE_ARROW_INT8: {
            int8_t x;
            memcpy(&x, v, 1);
            rc_ = put_fixed(out, order_signed(x, 1), 1, err);
            break;
        }
        case MARBLE_ARROW_INT16: {
            int16_t x;
            memcpy(&x, v, 2);
            rc_ = put_fixed(out, order_signed(x, 2), 2, err);
            break;
        }
        case MARBLE_ARROW_INT32:
        case MARBLE_ARROW_DATE32: {
            int32_t x;
            memcpy(&x, v, 4);
            rc_ = put_fixed(out, order_signed(x, 4), 4, err);
            break;
        }
        case MARBLE_ARROW_INT64:
        case MARBLE_ARROW_TIMESTAMP: {
            int64_t x;
            memcpy(&x, v, 8);
            rc_ = put_fixed(out, order_signed(x, 8), 8, err);
            break;
        }
        case MARBLE_ARROW_UINT8:
            rc_ = put_fixed(out, v[0], 1, err);
            break;
        case MARBLE_ARROW_UINT16: {
            uint16_t x;
            memcpy(&x, v, 2);
            rc_ = put_fixed(out, x, 2, err);
            break;
        }
        case MARBLE_ARROW_UINT32: {
            uint32_t x;
            memcpy(&x, v, 4);
            rc_ = put_fixed(out, x, 4, err);
            break;
        }
        case MARBLE_ARROW_UINT64: {
            uint64_t x;
            memcpy(&x, v, 8);
            rc_ = put_fixed(out, x, 8, err);
            break;
        }
        case MARBLE_ARROW_FLOAT32: {
            float x;
            memcpy(&x, v, 4);
            rc_ = put_fixed(out, order_f32(x), 4, err);
            break;
        }
        case MARBLE_ARROW_FLOAT64: {
            double x;
            memcpy(&x, v, 8);
            rc_ = put_fixed(out, order_f64(x), 8, err);
            break;
        }
        case MARBLE_ARROW_FIXED_SIZE_BINARY:
            rc_ = put_raw(out, v, (size_t)w, err);
            break;
        default: {
            int64_t s = marble__arrow_offset_at(rc->offsets, rc->offset_bytes, p);
            int64_t t = marble__arrow_offset_at(rc->offsets, rc->offset_bytes, p + 1);
            if (s < 0 || t < s)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "key column '%s': bad offsets [%" PRId64 ", %" PRId64
                                        ") at row %" PRId64,
                                        kc->name, s, t, row);
            if (t > s && !rc->data)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "key column '%s': no data buffer", kc->name);
            rc_ = put_escaped(out, t > s ? rc->data + s : NULL, (size_t)(t - s), err);
            break;
        }
        }
        if (rc_ != MARBLE_OK) return rc_;
    }
    return MARBLE_OK;
}

int marble__key_encode_row(const marble__key_encoder *e, const struct ArrowArray *batch,
                           int64_t row, marble__bytes *out, marble_error *err)
{
    resolved_batch rb;
    MARBLE_RETURN_NOT_OK(resolve(e, batch, &rb, err));
    if (row < 0 || row >= rb.length)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "key encoding: row %" PRId64 " out of range (%" PRId64 " rows)",
                                row, rb.length);
    size_t start = out->len;
    int rc = encode_resolved(e, &rb, row, out, err);
    if (rc != MARBLE_OK) out->len = start;
    return rc;
}

int marble__key_encode_batch(const marble__key_encoder *e, const struct ArrowArray *batch,
                             marble__bytes *out, size_t *offsets, marble_error *err)
{
    resolved_batch rb;
    MARBLE_RETURN_NOT_OK(resolve(e, batch, &rb, err));
    size_t start = out->len;
    size_t fixed = 0;
    for (int k = 0; k < e->nkeys; k++)
        fixed += 1 + (size_t)key_width(&e->keys[k].type);
    if ((uint64_t)rb.length <= SIZE_MAX / fixed) {
        int rc = marble__bytes_reserve(out, (size_t)rb.length * fixed, err);
        if (rc != MARBLE_OK) return rc;
    }
    offsets[0] = start;
    for (int64_t i = 0; i < rb.length; i++) {
        int rc = encode_resolved(e, &rb, i, out, err);
        if (rc != MARBLE_OK) {
            out->len = start;
            return rc;
        }
        offsets[i + 1] = out->len;
    }
    return MARBLE_OK;
}

/* ---- typed values ---------------------------------------------------------------------------- */

static int value_error(const marble__key_column *kc, const char *what, marble_error *err)
{
    char buf[96];
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "key column '%s' (%s): %s", kc->name,
                            type_name(&kc->type, buf, sizeof buf), what);
}

static int encode_value(const marble__key_encoder *e, const marble__key_column *kc,
                        const marble__key_value *v, marble__bytes *out, marble_error *err)
{
    if (v->kind == MARBLE__KV_NULL) return put_null(e, kc, out, err);
    marble_arrow_type_id id = kc->type.id;
    int w = key_width(&kc->type);
    if (id == MARBLE_ARROW_BOOL || is_signed(id) || is_unsigned(id)) {
        int neg;
        uint64_t mag;
        if (v->kind == MARBLE__KV_INT) {
            neg = v->i < 0;
            mag = neg ? (uint64_t)0 - (uint64_t)v->i : (uint64_t)v->i;
        } else if (v->kind == MARBLE__KV_UINT) {
            neg = 0;
            mag = v->u;
        } else {
            return value_error(kc, "needs an integer value", err);
        }
        uint64_t pos_max, neg_max;
        if (id == MARBLE_ARROW_BOOL) {
            pos_max = 1;
            neg_max = 0;
        } else if (is_unsigned(id)) {
            pos_max = w == 8 ? UINT64_MAX : (UINT64_C(1) << (w * 8)) - 1;
            neg_max = 0;
        } else {
            pos_max = (UINT64_C(1) << (w * 8 - 1)) - 1;
            neg_max = UINT64_C(1) << (w * 8 - 1);
        }
        if (neg ? mag > neg_max : mag > pos_max)
            return value_error(kc, "integer value out of range", err);
        if (is_signed(id)) {
            int64_t x =
                neg ? (mag == (UINT64_C(1) << 63) ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
            return put_fixed(out, order_signed(x, w), w, err);
        }
        return put_fixed(out, mag, w, err);
    }
    if (id == MARBLE_ARROW_FLOAT32 || id == MARBLE_ARROW_FLOAT64) {
        if (v->kind != MARBLE__KV_DOUBLE) return value_error(kc, "needs a double value", err);
        if (id == MARBLE_ARROW_FLOAT64) return put_fixed(out, order_f64(v->d), 8, err);
        if (!isnan(v->d) && !isinf(v->d) && (fabs(v->d) > FLT_MAX || (double)(float)v->d != v->d))
            return value_error(kc, "value is not exactly representable as float32", err);
        return put_fixed(out, order_f32((float)v->d), 4, err);
    }
    if (v->kind != MARBLE__KV_BYTES || (v->len > 0 && !v->bytes))
        return value_error(kc, "needs a bytes value", err);
    if (id == MARBLE_ARROW_FIXED_SIZE_BINARY) {
        if (v->len != (size_t)w) return value_error(kc, "wrong number of bytes", err);
        return put_raw(out, v->bytes, v->len, err);
    }
    return put_escaped(out, v->bytes, v->len, err);
}

int marble__key_encode_values(const marble__key_encoder *e, const marble__key_value *vals, int n,
                              marble__bytes *out, marble_error *err)
{
    if (e->nkeys < 1)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "key encoder not initialized");
    if (n < 1 || n > e->nkeys || !vals)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "key encoding: %d values for %d key columns", n, e->nkeys);
    size_t start = out->len;
    for (int k = 0; k < n; k++) {
        int rc = encode_value(e, &e->keys[k], &vals[k], out, err);
        if (rc != MARBLE_OK) {
            out->len = start;
            return rc;
        }
    }
    return MARBLE_OK;
}

/* ---- decoding -------------------------------------------------------------------------------- */

static int corrupt(const marble__key_column *kc, size_t at, const char *what, marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_CORRUPTION, "key column '%s': %s at byte %zu", kc->name,
                            what, at);
}

int marble__key_decode(const marble__key_encoder *e, const uint8_t *key, size_t len,
                       marble__key_value *vals, marble__bytes *scratch, marble_error *err)
{
    size_t starts[MARBLE__KEY_MAX_COLS];
    size_t pos = 0;
    if (e->nkeys < 1)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "key encoder not initialized");
    if (len > 0 && !key)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "key decoding: NULL key");
    scratch->len = 0;
    for (int k = 0; k < e->nkeys; k++) {
        const marble__key_column *kc = &e->keys[k];
        marble__key_value *v = &vals[k];
        memset(v, 0, sizeof *v);
        if (pos >= len) return corrupt(kc, pos, "key ends before the column", err);
        uint8_t marker = key[pos++];
        if (marker == MARBLE__KEY_NULL) continue;
        if (marker != MARBLE__KEY_VALUE) return corrupt(kc, pos - 1, "bad marker", err);
        marble_arrow_type_id id = kc->type.id;
        int w = key_width(&kc->type);
        if (id == MARBLE_ARROW_FIXED_SIZE_BINARY || is_varbytes(id)) {
            v->kind = MARBLE__KV_BYTES;
            starts[k] = scratch->len;
            if (id == MARBLE_ARROW_FIXED_SIZE_BINARY) {
                if (len - pos < (size_t)w) return corrupt(kc, pos, "truncated value", err);
                MARBLE_RETURN_NOT_OK(marble__bytes_append(scratch, key + pos, (size_t)w, err));
                pos += (size_t)w;
            } else {
                for (;;) {
                    const uint8_t *z = pos < len ? memchr(key + pos, 0, len - pos) : NULL;
                    if (!z || (size_t)(z - key) + 1 >= len)
                        return corrupt(kc, pos, "unterminated string", err);
                    size_t zp = (size_t)(z - key);
                    MARBLE_RETURN_NOT_OK(marble__bytes_append(scratch, key + pos, zp - pos, err));
                    pos = zp + 2;
                    if (key[zp + 1] == 0x00) break;
                    if (key[zp + 1] != 0xFF) return corrupt(kc, zp, "bad escape", err);
                    MARBLE_RETURN_NOT_OK(marble__bytes_append(scratch, "", 1, err));
                }
            }
            v->len = scratch->len - starts[k];
            continue;
        }
        if (len - pos < (size_t)w) return corrupt(kc, pos, "truncated value", err);
        uint64_t b = get_be(key + pos, w);
        pos += (size_t)w;
        if (id == MARBLE_ARROW_BOOL) {
            if (b > 1) return corrupt(kc, pos - 1, "bad bool", err);
            v->kind = MARBLE__KV_INT;
            v->i = (int64_t)b;
        } else if (is_unsigned(id)) {
            v->kind = MARBLE__KV_UINT;
            v->u = b;
        } else if (is_signed(id)) {
            int bits = w * 8;
            uint64_t x = b ^ ((uint64_t)1 << (bits - 1));
            if (bits < 64 && (x >> (bits - 1)) & 1) x |= ~(uint64_t)0 << bits;
            v->kind = MARBLE__KV_INT;
            memcpy(&v->i, &x, sizeof x);
        } else if (id == MARBLE_ARROW_FLOAT64) {
            b = (b >> 63) ? b ^ (UINT64_C(1) << 63) : ~b;
            v->kind = MARBLE__KV_DOUBLE;
            memcpy(&v->d, &b, sizeof b);
        } else {
            uint32_t f = (uint32_t)b;
            f = (f >> 31) ? f ^ (UINT32_C(1) << 31) : ~f;
            float x;
            memcpy(&x, &f, sizeof x);
            v->kind = MARBLE__KV_DOUBLE;
            v->d = x;
        }
    }
    if (pos != len)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "key decoding: %zu bytes after the last key column", len - pos);
    for (int k = 0; k < e->nkeys; k++)
        if (vals[k].kind == MARBLE__KV_BYTES)
            vals[k].bytes = scratch->data ? scratch->data + starts[k] : (const uint8_t *)"";
    return MARBLE_OK;
}

int marble__key_prefix_successor(const uint8_t *prefix, size_t n, marble__bytes *out, int *bounded,
                                 marble_error *err)
{
    out->len = 0;
    *bounded = 0;
    while (n > 0 && prefix[n - 1] == 0xFF)
        n--;
    if (n == 0) return MARBLE_OK;
    MARBLE_RETURN_NOT_OK(marble__bytes_append(out, prefix, n, err));
    out->data[n - 1]++;
    *bounded = 1;
    return MARBLE_OK;
}
