/* Reading single values out of ArrowArrays (honouring the array offset). */
#include "arrow/arrow_internal.h"

#include <string.h>

int marble_arrow_is_null(const struct ArrowArray *a, int64_t i)
{
    if (!a || i < 0 || i >= a->length) return 1;
    if (a->null_count == 0) return 0;
    if (a->null_count == a->length) return 1;
    if (a->n_buffers < 1 || !a->buffers || !a->buffers[0]) return a->n_buffers == 0;
    return !marble__arrow_bit_get(a->buffers[0], a->offset + i);
}

static int element(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t i,
                   marble_arrow_type *t)
{
    if (!s || !a || i < 0 || i >= a->length) return 0;
    if (marble_arrow_type_parse(s->format, t, NULL) != MARBLE_OK) return 0;
    marble__arrow_layout l = marble__arrow_layout_of(t);
    return a->n_buffers == l.n_buffers && l.n_buffers >= 2 && a->buffers && a->buffers[1];
}

int marble_arrow_get_bytes(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t i,
                           const void **data, size_t *len)
{
    marble_arrow_type t;
    if (!data || !len) return MARBLE_ERR_INVALID_ARGUMENT;
    *data = NULL;
    *len = 0;
    if (!element(s, a, i, &t)) return MARBLE_ERR_INVALID_ARGUMENT;
    marble__arrow_layout l = marble__arrow_layout_of(&t);
    int64_t j = a->offset + i;
    if (l.offset_bytes) {
        int64_t start = marble__arrow_offset_at(a->buffers[1], l.offset_bytes, j);
        int64_t end = marble__arrow_offset_at(a->buffers[1], l.offset_bytes, j + 1);
        if (start < 0 || end < start) return MARBLE_ERR_INVALID_ARGUMENT;
        if (end > start && !a->buffers[2]) return MARBLE_ERR_INVALID_ARGUMENT;
        *data = end > start ? (const uint8_t *)a->buffers[2] + start : (const void *)"";
        *len = (size_t)(end - start);
        return MARBLE_OK;
    }
    if (l.value_bits < 8) return MARBLE_ERR_UNSUPPORTED;
    int64_t width = l.value_bits / 8;
    *data = (const uint8_t *)a->buffers[1] + j * width;
    *len = (size_t)width;
    return MARBLE_OK;
}

/* Truncates toward zero; NaN and values outside int64 give 0. */
static int64_t double_to_int(double v)
{
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return 0;
    return (int64_t)v;
}

int64_t marble_arrow_get_int(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t i)
{
    marble_arrow_type t;
    if (!element(s, a, i, &t)) return 0;
    const void *b = a->buffers[1];
    int64_t j = a->offset + i;
    switch (t.id) {
    case MARBLE_ARROW_BOOL:
        return marble__arrow_bit_get(b, j);
    case MARBLE_ARROW_INT8:
        return ((const int8_t *)b)[j];
    case MARBLE_ARROW_INT16:
        return ((const int16_t *)b)[j];
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_DATE32:
        return ((const int32_t *)b)[j];
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_TIMESTAMP:
        return ((const int64_t *)b)[j];
    case MARBLE_ARROW_UINT8:
        return ((const uint8_t *)b)[j];
    case MARBLE_ARROW_UINT16:
        return ((const uint16_t *)b)[j];
    case MARBLE_ARROW_UINT32:
        return ((const uint32_t *)b)[j];
    case MARBLE_ARROW_UINT64:
        return (int64_t)((const uint64_t *)b)[j];
    case MARBLE_ARROW_FLOAT32:
        return double_to_int(((const float *)b)[j]);
    case MARBLE_ARROW_FLOAT64:
        return double_to_int(((const double *)b)[j]);
    default:
        return 0;
    }
}

uint64_t marble_arrow_get_uint(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t i)
{
    marble_arrow_type t;
    if (!element(s, a, i, &t)) return 0;
    if (t.id == MARBLE_ARROW_UINT64) return ((const uint64_t *)a->buffers[1])[a->offset + i];
    return (uint64_t)marble_arrow_get_int(s, a, i);
}

double marble_arrow_get_double(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t i)
{
    marble_arrow_type t;
    if (!element(s, a, i, &t)) return 0.0;
    int64_t j = a->offset + i;
    switch (t.id) {
    case MARBLE_ARROW_FLOAT32:
        return ((const float *)a->buffers[1])[j];
    case MARBLE_ARROW_FLOAT64:
        return ((const double *)a->buffers[1])[j];
    case MARBLE_ARROW_UINT64:
        return (double)((const uint64_t *)a->buffers[1])[j];
    default:
        return (double)marble_arrow_get_int(s, a, i);
    }
}
