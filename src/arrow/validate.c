/* Validation of foreign ArrowArrays against a schema; bitmap and UTF-8 helpers. */
#include "arrow/arrow_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- bitmaps --------------------------------------------------------------------------------- */

static int popcount8(uint8_t v)
{
#if defined(__GNUC__)
    return __builtin_popcount(v);
#else
    int n = 0;
    for (; v; v &= (uint8_t)(v - 1))
        n++;
    return n;
#endif
}

static int popcount64(uint64_t v)
{
#if defined(__GNUC__)
    return __builtin_popcountll(v);
#else
    int n = 0;
    for (; v; v &= v - 1)
        n++;
    return n;
#endif
}

int64_t marble__arrow_bitmap_count_zeros(const uint8_t *bits, int64_t offset, int64_t length)
{
    int64_t ones = 0, i = offset, end = offset + length;
    while (i < end && (i & 7))
        ones += marble__arrow_bit_get(bits, i++);
    const uint8_t *p = bits + (i >> 3);
    for (; i + 64 <= end; i += 64, p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        ones += popcount64(w);
    }
    for (; i + 8 <= end; i += 8)
        ones += popcount8(bits[i >> 3]);
    while (i < end)
        ones += marble__arrow_bit_get(bits, i++);
    return length - ones;
}

void marble__arrow_bitmap_copy(uint8_t *dst, const uint8_t *src, int64_t src_offset, int64_t length)
{
    int64_t nbytes = marble__arrow_bitmap_bytes(length);
    if (nbytes == 0) return;
    const uint8_t *s = src + (src_offset >> 3);
    int shift = (int)(src_offset & 7);
    if (shift == 0) {
        memcpy(dst, s, (size_t)nbytes);
    } else {
        int64_t src_bytes = marble__arrow_bitmap_bytes(src_offset + length) - (src_offset >> 3);
        for (int64_t j = 0; j < nbytes; j++) {
            unsigned v = (unsigned)s[j] >> shift;
            if (j + 1 < src_bytes) v |= (unsigned)s[j + 1] << (8 - shift);
            dst[j] = (uint8_t)v;
        }
    }
    if (length & 7) dst[nbytes - 1] &= (uint8_t)((1u << (length & 7)) - 1);
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

int marble__arrow_utf8_valid(const uint8_t *s, int64_t n, int64_t *bad_at)
{
    int64_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & UINT64_C(0x8080808080808080))) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            goto bad;
        }
        if (n - i <= need) goto bad;
        if (s[i + 1] < lo || s[i + 1] > hi) goto bad;
        for (int k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) goto bad;
        i += need + 1;
    }
    return 1;
bad:
    if (bad_at) *bad_at = i;
    return 0;
}

/* ---- arrays ---------------------------------------------------------------------------------- */

static int fail(marble_error *err, const char *path, const char *fmt, ...) MARBLE_PRINTF(3, 4);

static int fail(marble_error *err, const char *path, const char *fmt, ...)
{
    char msg[MARBLE_ERROR_MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path[0])
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "column '%.96s': %s", path, msg);
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "array: %s", msg);
}

static int validate_offsets(const struct ArrowArray *a, const marble__arrow_layout *l, int flags,
                            const char *path, marble_error *err)
{
    const void *offsets = a->buffers[1];
    const uint8_t *data = a->buffers[2];
    const uint8_t *validity = l->has_validity ? a->buffers[0] : NULL;
    if (a->length == 0) return MARBLE_OK;
    if (!offsets) return fail(err, path, "buffer 1 (offsets) is NULL");
    int w = l->offset_bytes;
    int64_t first = marble__arrow_offset_at(offsets, w, a->offset);
    if (first < 0)
        return fail(err, path, "buffer 1 (offsets) index %lld: offset %lld is negative",
                    (long long)a->offset, (long long)first);
    int64_t prev = first;
    for (int64_t i = a->offset + 1; i <= a->offset + a->length; i++) {
        int64_t cur = marble__arrow_offset_at(offsets, w, i);
        if (cur < prev)
            return fail(err, path,
                        "buffer 1 (offsets) index %lld: offset %lld is less than the previous "
                        "offset %lld",
                        (long long)i, (long long)cur, (long long)prev);
        prev = cur;
    }
    if (prev > first && !data)
        return fail(err, path, "buffer 2 (data) is NULL but the offsets span %lld bytes",
                    (long long)(prev - first));
    if (!(flags & MARBLE_VALIDATE_UTF8) || !l->is_utf8) return MARBLE_OK;
    for (int64_t i = 0; i < a->length; i++) {
        int64_t j = a->offset + i;
        if (validity && !marble__arrow_bit_get(validity, j)) continue;
        int64_t s = marble__arrow_offset_at(offsets, w, j);
        int64_t e = marble__arrow_offset_at(offsets, w, j + 1);
        int64_t bad;
        if (!marble__arrow_utf8_valid(data + s, e - s, &bad))
            return fail(err, path,
                        "buffer 2 (data): value at index %lld is not valid UTF-8 (byte %lld of "
                        "the value, byte %lld of the buffer)",
                        (long long)i, (long long)bad, (long long)(s + bad));
    }
    return MARBLE_OK;
}

static int validate_rec(const struct ArrowSchema *s, const struct ArrowArray *a, const char *path,
                        int flags, marble_error *err)
{
    marble_arrow_type t;
    char tn[96];
    if (!a) return fail(err, path, "array is NULL");
    if (!a->release) return fail(err, path, "array is released (release is NULL)");
    MARBLE_RETURN_NOT_OK(marble__arrow_schema_type(s, &t, err));
    marble__arrow_layout l = marble__arrow_layout_of(&t);
    const char *type_name = marble_arrow_type_name(&t, tn, sizeof tn);
    if (a->length < 0) return fail(err, path, "length %lld is negative", (long long)a->length);
    if (a->offset < 0) return fail(err, path, "offset %lld is negative", (long long)a->offset);
    if (a->offset > INT64_MAX - a->length)
        return fail(err, path, "offset %lld + length %lld overflows", (long long)a->offset,
                    (long long)a->length);
    if (a->null_count < -1 || a->null_count > a->length)
        return fail(err, path, "null_count %lld is outside [-1, length %lld]",
                    (long long)a->null_count, (long long)a->length);
    int buffers_ok = a->n_buffers == l.n_buffers || (t.id == MARBLE_ARROW_NA && a->n_buffers == 1);
    if (!buffers_ok)
        return fail(err, path, "n_buffers is %lld, %s needs %d", (long long)a->n_buffers, type_name,
                    l.n_buffers);
    if (a->n_buffers > 0 && !a->buffers) return fail(err, path, "buffers is NULL");
    int64_t want_children = t.id == MARBLE_ARROW_STRUCT ? s->n_children : 0;
    if (a->n_children != want_children)
        return fail(err, path, "n_children is %lld, the schema has %lld", (long long)a->n_children,
                    (long long)want_children);
    if (a->n_children > 0 && !a->children) return fail(err, path, "children is NULL");
    if (a->dictionary) return fail(err, path, "has a dictionary but the type is %s", type_name);
    if (t.id == MARBLE_ARROW_NA) return MARBLE_OK;

    int64_t end = a->offset + a->length;
    const uint8_t *validity = a->buffers[0];
    if (!validity) {
        if (a->null_count > 0)
            return fail(err, path, "buffer 0 (validity) is NULL but null_count is %lld",
                        (long long)a->null_count);
    } else if (a->null_count >= 0) {
        int64_t zeros = marble__arrow_bitmap_count_zeros(validity, a->offset, a->length);
        if (zeros != a->null_count)
            return fail(err, path,
                        "null_count is %lld but buffer 0 (validity) has %lld nulls at indexes "
                        "[%lld, %lld)",
                        (long long)a->null_count, (long long)zeros, (long long)a->offset,
                        (long long)end);
    }
    if (l.value_bits) {
        if (!a->buffers[1] && end > 0)
            return fail(err, path, "buffer 1 (values) is NULL with offset + length %lld",
                        (long long)end);
    } else if (l.offset_bytes) {
        MARBLE_RETURN_NOT_OK(validate_offsets(a, &l, flags, path, err));
    } else if (t.id == MARBLE_ARROW_STRUCT) {
        for (int64_t i = 0; i < a->n_children; i++) {
            const struct ArrowSchema *cs = s->children[i];
            const struct ArrowArray *ca = a->children[i];
            char sub[192];
            const char *cname = marble__arrow_field_name(cs);
            if (path[0])
                snprintf(sub, sizeof sub, "%s.%s", path, cname);
            else
                snprintf(sub, sizeof sub, "%s", cname);
            if (!sub[0]) snprintf(sub, sizeof sub, "#%lld", (long long)i);
            if (ca && ca->length < end)
                return fail(err, sub,
                            "length %lld is shorter than its parent's offset + length %lld",
                            (long long)ca->length, (long long)end);
            MARBLE_RETURN_NOT_OK(validate_rec(cs, ca, sub, flags, err));
        }
    }
    return MARBLE_OK;
}

int marble_arrow_array_validate(const struct ArrowSchema *schema, const struct ArrowArray *array,
                                int flags, marble_error *err)
{
    if (!schema || !array)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "schema or array is NULL");
    MARBLE_RETURN_NOT_OK(marble_arrow_schema_validate(schema, err));
    return validate_rec(schema, array, schema->name ? schema->name : "", flags, err);
}
