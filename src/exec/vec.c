/* Dense value vectors of the expression evaluator (storage kept across batches), their
 * materialization as Arrow arrays, and the gather of selected rows of a column (take). */
#include "arrow/arrow_internal.h"
#include "exec/exec_internal.h"

#include <stdlib.h>
#include <string.h>

void marble__vec_init(marble__vec *v)
{
    memset(v, 0, sizeof *v);
    v->kind = MARBLE_DATUM_INT;
}

void marble__vec_free(marble__vec *v)
{
    if (!v) return;
    free(v->mem);
    free(v->arena);
    marble__vec_init(v);
}

static size_t value_width(marble_datum_kind kind)
{
    if (kind == MARBLE_DATUM_STRING) return sizeof(marble__str);
    if (kind == MARBLE_DATUM_BOOL) return 1;
    return 8;
}

static size_t values_bytes(marble_datum_kind kind, int64_t n)
{
    return ((size_t)n * value_width(kind) + 63) & ~(size_t)63;
}

int marble__vec_reset(marble__vec *v, marble_datum_kind kind, int64_t n, marble_error *err)
{
    if (n < 0 || n > ((int64_t)1 << 40))
        return marble_error_set(err, MARBLE_ERR_LIMIT, "vector of %lld rows", (long long)n);
    size_t need = values_bytes(kind, n) + (size_t)n + 64;
    if (need > v->mem_cap) {
        size_t cap = v->mem_cap ? v->mem_cap : 4096;
        while (cap < need)
            cap *= 2;
        void *m = malloc(cap);
        if (!m)
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                    "out of memory for a vector of %lld rows", (long long)n);
        free(v->mem);
        v->mem = m;
        v->mem_cap = cap;
    }
    v->kind = kind;
    v->n = n;
    v->i = NULL;
    v->d = NULL;
    v->b = NULL;
    v->s = NULL;
    v->valid = NULL;
    v->arena_used = 0;
    switch (kind) {
    case MARBLE_DATUM_DOUBLE:
        v->d = v->mem;
        break;
    case MARBLE_DATUM_BOOL:
        v->b = v->mem;
        break;
    case MARBLE_DATUM_STRING:
        v->s = v->mem;
        break;
    default:
        v->i = v->mem;
        break;
    }
    return MARBLE_OK;
}

uint8_t *marble__vec_valid(marble__vec *v)
{
    v->valid = (uint8_t *)v->mem + values_bytes(v->kind, v->n);
    return v->valid;
}

/* ---- to Arrow -------------------------------------------------------------------------------- */

static void pack_bits(uint8_t *dst, const uint8_t *bytes, int64_t n)
{
    int64_t full = n / 8;
    for (int64_t j = 0; j < full; j++) {
        const uint8_t *p = bytes + j * 8;
        dst[j] = (uint8_t)((p[0] & 1) | (p[1] & 1) << 1 | (p[2] & 1) << 2 | (p[3] & 1) << 3 |
                           (p[4] & 1) << 4 | (p[5] & 1) << 5 | (p[6] & 1) << 6 | (p[7] & 1) << 7);
    }
    if (n % 8) {
        uint8_t last = 0;
        for (int64_t k = full * 8; k < n; k++)
            last |= (uint8_t)((bytes[k] & 1) << (k & 7));
        dst[full] = last;
    }
}

static int64_t count_nulls(const uint8_t *valid, int64_t n)
{
    int64_t ok = 0;
    if (!valid) return 0;
    for (int64_t k = 0; k < n; k++)
        ok += valid[k];
    return n - ok;
}

int marble__vec_to_arrow(const marble__vec *v, struct ArrowArray *out, marble_error *err)
{
    int64_t n = v->n;
    int64_t nulls = count_nulls(v->valid, n);
    int strings = v->kind == MARBLE_DATUM_STRING;
    MARBLE_RETURN_NOT_OK(marble__arrow_array_init(out, strings ? 3 : 2, 0, NULL, err));
    out->length = n;
    out->null_count = nulls;
    if (nulls) {
        uint8_t *bits = marble__arrow_array_alloc_buffer(out, 0, marble__arrow_bitmap_bytes(n));
        if (!bits) goto oom;
        pack_bits(bits, v->valid, n);
    }
    switch (v->kind) {
    case MARBLE_DATUM_BOOL: {
        uint8_t *bits = marble__arrow_array_alloc_buffer(out, 1, marble__arrow_bitmap_bytes(n));
        if (!bits) goto oom;
        pack_bits(bits, v->b, n);
        break;
    }
    case MARBLE_DATUM_STRING: {
        int64_t total = 0;
        for (int64_t k = 0; k < n; k++)
            if (!v->valid || v->valid[k]) total += v->s[k].n;
        if (total > INT32_MAX) {
            out->release(out);
            return marble_error_set(err, MARBLE_ERR_LIMIT,
                                    "string result of %lld bytes exceeds utf8's 2 GiB limit",
                                    (long long)total);
        }
        int32_t *offs = marble__arrow_array_alloc_buffer(out, 1, (n + 1) * 4);
        char *data = marble__arrow_array_alloc_buffer(out, 2, total);
        if (!offs || !data) goto oom;
        int32_t pos = 0;
        offs[0] = 0;
        for (int64_t k = 0; k < n; k++) {
            if (!v->valid || v->valid[k]) {
                if (v->s[k].n) memcpy(data + pos, v->s[k].p, (size_t)v->s[k].n);
                pos += (int32_t)v->s[k].n;
            }
            offs[k + 1] = pos;
        }
        break;
    }
    default: {
        void *vals = marble__arrow_array_alloc_buffer(out, 1, n * 8);
        if (!vals) goto oom;
        if (n)
            memcpy(vals, v->kind == MARBLE_DATUM_DOUBLE ? (const void *)v->d : v->i, (size_t)n * 8);
        break;
    }
    }
    return MARBLE_OK;
oom:
    out->release(out);
    return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory materializing %lld rows",
                            (long long)n);
}

/* ---- take ------------------------------------------------------------------------------------ */

#define ROW(k) (sel ? (int64_t)sel[k] : (int64_t)(k))

#define GATHER(T)                                                                                  \
    do {                                                                                           \
        const T *src_ = (const T *)col->buffers[1] + base;                                         \
        T *dst_ = vals;                                                                            \
        if (sel)                                                                                   \
            for (int64_t k = 0; k < n; k++)                                                        \
                dst_[k] = src_[sel[k]];                                                            \
        else if (n)                                                                                \
            memcpy(dst_, src_, (size_t)n * sizeof(T));                                             \
    } while (0)

int marble__array_take(const struct ArrowSchema *field, const struct ArrowArray *col,
                       const uint32_t *sel, int64_t n, struct ArrowArray *out, marble_error *err)
{
    marble_arrow_type t;
    MARBLE_RETURN_NOT_OK(marble__arrow_schema_type(field, &t, err));
    const char *name = marble__arrow_field_name(field);
    if (t.id == MARBLE_ARROW_STRUCT)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "column '%s': cannot gather a struct",
                                name);
    marble__arrow_layout l = marble__arrow_layout_of(&t);
    if (col->n_buffers != l.n_buffers || (l.n_buffers && !col->buffers) || n < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "column '%s': array has %lld buffers, its type needs %d", name,
                                (long long)col->n_buffers, l.n_buffers);
    for (int i = 1; i < l.n_buffers; i++)
        if (!col->buffers[i] && col->length > 0 && !(i == 2 && l.offset_bytes))
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "column '%s': buffer %d is missing", name, i);
    MARBLE_RETURN_NOT_OK(marble__arrow_array_init(out, l.n_buffers, 0, NULL, err));
    out->length = n;
    if (t.id == MARBLE_ARROW_NA) {
        out->null_count = n;
        return MARBLE_OK;
    }
    int64_t base = col->offset;
    const uint8_t *bitmap = col->buffers[0];
    int all_null = col->null_count > 0 && !bitmap;
    if (all_null && col->null_count != col->length) {
        out->release(out);
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "column '%s' has %lld nulls but no validity bitmap", name,
                                (long long)col->null_count);
    }
    out->null_count = 0;
    if (col->null_count != 0 && (bitmap || all_null)) {
        uint8_t *bits = marble__arrow_array_alloc_buffer(out, 0, marble__arrow_bitmap_bytes(n));
        if (!bits) goto oom;
        int64_t nulls = 0;
        for (int64_t k = 0; k < n; k++) {
            int ok = !all_null && marble__arrow_bit_get(bitmap, base + ROW(k));
            bits[k >> 3] |= (uint8_t)(ok << (k & 7));
            nulls += !ok;
        }
        out->null_count = nulls;
        if (!nulls) marble__arrow_array_set_buffer(out, 0, NULL);
    }
    if (l.offset_bytes) {
        const uint8_t *data = col->buffers[2];
        int64_t total = 0;
        for (int64_t k = 0; k < n; k++) {
            int64_t r = base + ROW(k);
            total += marble__arrow_offset_at(col->buffers[1], l.offset_bytes, r + 1) -
                     marble__arrow_offset_at(col->buffers[1], l.offset_bytes, r);
        }
        if (l.offset_bytes == 4 && total > INT32_MAX) {
            out->release(out);
            return marble_error_set(err, MARBLE_ERR_LIMIT,
                                    "column '%s': gathering %lld bytes exceeds the 2 GiB limit of "
                                    "32-bit offsets",
                                    name, (long long)total);
        }
        void *offs = marble__arrow_array_alloc_buffer(out, 1, (n + 1) * l.offset_bytes);
        uint8_t *dst = marble__arrow_array_alloc_buffer(out, 2, total);
        if (!offs || !dst) goto oom;
        int64_t pos = 0;
        for (int64_t k = 0; k < n; k++) {
            int64_t r = base + ROW(k);
            int64_t s = marble__arrow_offset_at(col->buffers[1], l.offset_bytes, r);
            int64_t e = marble__arrow_offset_at(col->buffers[1], l.offset_bytes, r + 1);
            if (e > s) memcpy(dst + pos, data + s, (size_t)(e - s));
            pos += e - s;
            if (l.offset_bytes == 4)
                ((int32_t *)offs)[k + 1] = (int32_t)pos;
            else
                ((int64_t *)offs)[k + 1] = pos;
        }
        return MARBLE_OK;
    }
    if (l.value_bits == 1) {
        uint8_t *bits = marble__arrow_array_alloc_buffer(out, 1, marble__arrow_bitmap_bytes(n));
        if (!bits) goto oom;
        const uint8_t *src = col->buffers[1];
        for (int64_t k = 0; k < n; k++)
            bits[k >> 3] |= (uint8_t)(marble__arrow_bit_get(src, base + ROW(k)) << (k & 7));
        return MARBLE_OK;
    }
    int64_t w = l.value_bits / 8;
    void *vals = marble__arrow_array_alloc_buffer(out, 1, n * w);
    if (!vals) goto oom;
    switch (w) {
    case 1:
        GATHER(uint8_t);
        break;
    case 2:
        GATHER(uint16_t);
        break;
    case 4:
        GATHER(uint32_t);
        break;
    case 8:
        GATHER(uint64_t);
        break;
    default: {
        const uint8_t *src = (const uint8_t *)col->buffers[1] + base * w;
        for (int64_t k = 0; k < n; k++)
            memcpy((uint8_t *)vals + k * w, src + ROW(k) * w, (size_t)w);
    }
    }
    return MARBLE_OK;
oom:
    out->release(out);
    return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                            "column '%s': out of memory gathering %lld rows", name, (long long)n);
}

int marble__batch_take(const struct ArrowSchema *schema, const struct ArrowArray *batch, int i,
                       const uint32_t *sel, int64_t n, struct ArrowArray *out, marble_error *err)
{
    if (i < 0 || i >= schema->n_children || i >= batch->n_children)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "no column %d in the batch", i);
    struct ArrowArray col = *batch->children[i];
    col.offset += batch->offset;
    return marble__array_take(schema->children[i], &col, sel, n, out, err);
}
