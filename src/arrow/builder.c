/* Aligned buffers, self-owning ArrowArrays, and the record-batch builder. */
#include "arrow/arrow_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- aligned memory -------------------------------------------------------------------------- */

void *marble__arrow_alloc(int64_t n)
{
    if (n < 0 || n > INT64_MAX - 2 * MARBLE__ARROW_ALIGN) return NULL;
    int64_t size = (n + MARBLE__ARROW_ALIGN - 1) / MARBLE__ARROW_ALIGN * MARBLE__ARROW_ALIGN;
    if (size == 0) size = MARBLE__ARROW_ALIGN;
    if ((uint64_t)size > SIZE_MAX) return NULL;
    void *p = aligned_alloc(MARBLE__ARROW_ALIGN, (size_t)size);
    if (p) memset(p, 0, (size_t)size);
    return p;
}

void marble__arrow_free(void *p)
{
    free(p);
}

int marble__arrow_buffer_reserve(marble__arrow_buffer *b, int64_t additional, marble_error *err)
{
    if (additional < 0 || b->size > INT64_MAX / 2 - additional)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "buffer size overflow");
    int64_t need = b->size + additional;
    if (b->data && need <= b->cap) return MARBLE_OK;
    int64_t cap = b->cap ? b->cap : MARBLE__ARROW_ALIGN;
    while (cap < need)
        cap *= 2;
    uint8_t *p = marble__arrow_alloc(cap);
    if (!p)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory (%lld bytes)",
                                (long long)cap);
    if (b->size) memcpy(p, b->data, (size_t)b->size);
    marble__arrow_free(b->data);
    b->data = p;
    b->cap = cap;
    return MARBLE_OK;
}

int marble__arrow_buffer_append(marble__arrow_buffer *b, const void *data, int64_t n,
                                marble_error *err)
{
    MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(b, n, err));
    if (n) memcpy(b->data + b->size, data, (size_t)n);
    b->size += n;
    return MARBLE_OK;
}

int marble__arrow_buffer_append_zeros(marble__arrow_buffer *b, int64_t n, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(b, n, err));
    b->size += n;
    return MARBLE_OK;
}

void *marble__arrow_buffer_take(marble__arrow_buffer *b)
{
    void *p = b->data;
    b->data = NULL;
    b->size = 0;
    b->cap = 0;
    return p;
}

void marble__arrow_buffer_free(marble__arrow_buffer *b)
{
    marble__arrow_free(marble__arrow_buffer_take(b));
}

/* ---- arrays that own their memory ------------------------------------------------------------ */

struct array_private {
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    void **owned;
    struct ArrowArray **children;
    int has_owner;
    marble__arrow_owner owner;
};

static void array_release(struct ArrowArray *a)
{
    if (!a || !a->release) return;
    struct array_private *p = a->private_data;
    for (int64_t i = 0; i < p->n_children; i++) {
        struct ArrowArray *c = p->children[i];
        if (!c) continue;
        if (c->release) c->release(c);
        free(c);
    }
    if (a->dictionary) {
        if (a->dictionary->release) a->dictionary->release(a->dictionary);
        free(a->dictionary);
    }
    for (int64_t i = 0; i < p->n_buffers; i++)
        marble__arrow_free(p->owned[i]);
    if (p->has_owner && p->owner.release) p->owner.release(p->owner.ctx);
    free(p);
    a->release = NULL;
    a->private_data = NULL;
}

int marble__arrow_array_init(struct ArrowArray *out, int64_t n_buffers, int64_t n_children,
                             const marble__arrow_owner *owner, marble_error *err)
{
    memset(out, 0, sizeof *out);
    if (n_buffers < 0 || n_children < 0 || n_buffers > 64 || n_children > INT32_MAX)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "bad array shape (%lld buffers, %lld children)",
                                (long long)n_buffers, (long long)n_children);
    size_t size = sizeof(struct array_private) + (size_t)n_buffers * 2 * sizeof(void *) +
                  (size_t)n_children * sizeof(struct ArrowArray *);
    struct array_private *p = calloc(1, size);
    if (!p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory making array");
    p->n_buffers = n_buffers;
    p->buffers = (const void **)(p + 1);
    p->owned = (void **)(p->buffers + n_buffers);
    p->children = (struct ArrowArray **)(p->owned + n_buffers);
    out->private_data = p;
    out->release = array_release;
    for (int64_t i = 0; i < n_children; i++) {
        p->children[i] = calloc(1, sizeof(struct ArrowArray));
        if (!p->children[i]) {
            array_release(out);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory making array");
        }
        p->n_children = i + 1;
    }
    if (owner) {
        p->owner = *owner;
        p->has_owner = 1;
        if (owner->retain) owner->retain(owner->ctx);
    }
    out->n_buffers = n_buffers;
    out->n_children = n_children;
    out->buffers = n_buffers ? p->buffers : NULL;
    out->children = n_children ? p->children : NULL;
    return MARBLE_OK;
}

void marble__arrow_array_adopt_buffer(struct ArrowArray *a, int64_t i, void *data)
{
    struct array_private *p = a->private_data;
    if (p->owned[i] != data) marble__arrow_free(p->owned[i]);
    p->owned[i] = data;
    p->buffers[i] = data;
}

void marble__arrow_array_set_buffer(struct ArrowArray *a, int64_t i, const void *data)
{
    struct array_private *p = a->private_data;
    marble__arrow_free(p->owned[i]);
    p->owned[i] = NULL;
    p->buffers[i] = data;
}

void *marble__arrow_array_alloc_buffer(struct ArrowArray *a, int64_t i, int64_t n)
{
    void *data = marble__arrow_alloc(n);
    if (data) marble__arrow_array_adopt_buffer(a, i, data);
    return data;
}

/* ---- the batch builder ----------------------------------------------------------------------- */

typedef struct column {
    const char *name;
    marble_arrow_type type;
    marble__arrow_layout layout;
    int64_t length;
    int64_t null_count;
    int has_validity;
    marble__arrow_buffer validity;
    marble__arrow_buffer values; /* fixed-width values or variable-width offsets */
    marble__arrow_buffer data;   /* variable-width bytes */
} column;

struct marble_batch_builder {
    struct ArrowSchema schema;
    int64_t n_columns;
    column *columns;
};

static void column_free(column *c)
{
    marble__arrow_buffer_free(&c->validity);
    marble__arrow_buffer_free(&c->values);
    marble__arrow_buffer_free(&c->data);
    c->length = 0;
    c->null_count = 0;
    c->has_validity = 0;
}

int marble_batch_builder_create(const struct ArrowSchema *schema, marble_batch_builder **out,
                                marble_error *err)
{
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "output is NULL");
    *out = NULL;
    if (!schema) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "schema is NULL");
    MARBLE_RETURN_NOT_OK(marble_arrow_schema_validate(schema, err));
    if (strcmp(schema->format, "+s") != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "batch builder needs a struct (\"+s\") schema, got \"%.64s\"",
                                schema->format);
    marble_batch_builder *b = calloc(1, sizeof *b);
    if (!b) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    int rc = marble_arrow_schema_copy(schema, &b->schema, err);
    if (rc != MARBLE_OK) {
        free(b);
        return rc;
    }
    b->n_columns = b->schema.n_children;
    if (b->n_columns > 0) {
        b->columns = calloc((size_t)b->n_columns, sizeof *b->columns);
        if (!b->columns) {
            marble_batch_builder_destroy(b);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        }
    }
    for (int64_t i = 0; i < b->n_columns; i++) {
        column *c = &b->columns[i];
        c->name = marble__arrow_field_name(b->schema.children[i]);
        marble_arrow_type_parse(b->schema.children[i]->format, &c->type, NULL);
        c->layout = marble__arrow_layout_of(&c->type);
        if (c->type.id == MARBLE_ARROW_STRUCT) {
            marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                             "column '%.64s': nested struct columns are not supported", c->name);
            marble_batch_builder_destroy(b);
            return MARBLE_ERR_UNSUPPORTED;
        }
    }
    *out = b;
    return MARBLE_OK;
}

void marble_batch_builder_destroy(marble_batch_builder *b)
{
    if (!b) return;
    for (int64_t i = 0; i < b->n_columns; i++)
        column_free(&b->columns[i]);
    free(b->columns);
    marble_arrow_schema_release(&b->schema);
    free(b);
}

int64_t marble_batch_builder_rows(const marble_batch_builder *b)
{
    return b && b->n_columns > 0 ? b->columns[0].length : 0;
}

static int get_column(marble_batch_builder *b, int col, column **out, marble_error *err)
{
    if (!b) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "builder is NULL");
    if (col < 0 || col >= b->n_columns)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "column index %d out of range (%lld columns)", col,
                                (long long)b->n_columns);
    *out = &b->columns[col];
    return MARBLE_OK;
}

static int mismatch(const column *c, const char *what, marble_error *err)
{
    char tn[96];
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                            "column '%.64s': cannot append %s to a %s column", c->name, what,
                            marble_arrow_type_name(&c->type, tn, sizeof tn));
}

static int out_of_range(const column *c, const char *value, marble_error *err)
{
    char tn[96];
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                            "column '%.64s': value %s is out of range for %s", c->name, value,
                            marble_arrow_type_name(&c->type, tn, sizeof tn));
}

/* Reserves room for one more row (values, offsets, validity) so that the append cannot fail
 * half-way. */
static int reserve_row(column *c, int64_t data_bytes, marble_error *err)
{
    const marble__arrow_layout *l = &c->layout;
    if (c->layout.offset_bytes) {
        int64_t need = c->values.size == 0 ? 2 * l->offset_bytes : l->offset_bytes;
        MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(&c->values, need, err));
        MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(&c->data, data_bytes, err));
    } else if (l->value_bits == 1) {
        MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(&c->values, 1, err));
    } else if (l->value_bits) {
        MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(&c->values, l->value_bits / 8, err));
    }
    if (c->has_validity) MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(&c->validity, 1, err));
    return MARBLE_OK;
}

static void push_validity(column *c, int valid)
{
    if (!c->has_validity) return;
    if (c->length % 8 == 0) c->validity.data[c->validity.size++] = 0;
    if (valid) marble__arrow_bit_set(c->validity.data, c->length, 1);
}

static void push_offset(column *c)
{
    if (c->values.size == 0) c->values.size = c->layout.offset_bytes;
    if (c->layout.offset_bytes == 4) {
        int32_t v = (int32_t)c->data.size;
        memcpy(c->values.data + c->values.size, &v, 4);
    } else {
        int64_t v = c->data.size;
        memcpy(c->values.data + c->values.size, &v, 8);
    }
    c->values.size += c->layout.offset_bytes;
}

/* Appends one non-null value: `bytes` of `n` bytes (fixed or variable width) or a bool bit. */
static int push_value(column *c, const void *bytes, int64_t n, int bit, marble_error *err)
{
    if (c->layout.offset_bytes) {
        int64_t limit = c->layout.offset_bytes == 4 ? INT32_MAX : INT64_MAX;
        if (n > limit - c->data.size)
            return marble_error_set(err, MARBLE_ERR_LIMIT,
                                    "column '%.64s': more than %lld bytes of values in one batch",
                                    c->name, (long long)limit);
    }
    MARBLE_RETURN_NOT_OK(reserve_row(c, n, err));
    if (c->layout.offset_bytes) {
        if (n) memcpy(c->data.data + c->data.size, bytes, (size_t)n);
        c->data.size += n;
        push_offset(c);
    } else if (c->layout.value_bits == 1) {
        if (c->length % 8 == 0) c->values.data[c->values.size++] = 0;
        if (bit) marble__arrow_bit_set(c->values.data, c->length, 1);
    } else {
        memcpy(c->values.data + c->values.size, bytes, (size_t)n);
        c->values.size += n;
    }
    push_validity(c, 1);
    c->length++;
    return MARBLE_OK;
}

int marble_builder_append_null(marble_batch_builder *b, int col, marble_error *err)
{
    column *c = NULL;
    MARBLE_RETURN_NOT_OK(get_column(b, col, &c, err));
    if (c->type.id == MARBLE_ARROW_NA) {
        c->length++;
        c->null_count++;
        return MARBLE_OK;
    }
    if (!c->has_validity) {
        int64_t bytes = marble__arrow_bitmap_bytes(c->length);
        MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(&c->validity, bytes + 1, err));
        memset(c->validity.data, 0, (size_t)bytes);
        for (int64_t i = 0; i < c->length; i++)
            marble__arrow_bit_set(c->validity.data, i, 1);
        c->validity.size = bytes;
        c->has_validity = 1;
    }
    MARBLE_RETURN_NOT_OK(reserve_row(c, 0, err));
    if (c->layout.offset_bytes) {
        push_offset(c);
    } else if (c->layout.value_bits == 1) {
        if (c->length % 8 == 0) c->values.data[c->values.size++] = 0;
    } else {
        memset(c->values.data + c->values.size, 0, (size_t)(c->layout.value_bits / 8));
        c->values.size += c->layout.value_bits / 8;
    }
    push_validity(c, 0);
    c->length++;
    c->null_count++;
    return MARBLE_OK;
}

/* Appends -mag (neg) or mag after checking it fits the column type. */
static int append_integer(column *c, int neg, uint64_t mag, marble_error *err)
{
    uint64_t max_pos = 0, max_neg = 0;
    switch (c->type.id) {
    case MARBLE_ARROW_INT8:
        max_pos = INT8_MAX;
        max_neg = 128u;
        break;
    case MARBLE_ARROW_INT16:
        max_pos = INT16_MAX;
        max_neg = 32768u;
        break;
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_DATE32:
        max_pos = INT32_MAX;
        max_neg = 2147483648u;
        break;
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_TIMESTAMP:
        max_pos = INT64_MAX;
        max_neg = (uint64_t)INT64_MAX + 1;
        break;
    case MARBLE_ARROW_UINT8:
        max_pos = UINT8_MAX;
        break;
    case MARBLE_ARROW_UINT16:
        max_pos = UINT16_MAX;
        break;
    case MARBLE_ARROW_UINT32:
        max_pos = UINT32_MAX;
        break;
    case MARBLE_ARROW_UINT64:
        max_pos = UINT64_MAX;
        break;
    case MARBLE_ARROW_BOOL:
        max_pos = 1;
        break;
    default:
        return mismatch(c, "an integer", err);
    }
    if (neg ? mag > max_neg : mag > max_pos) {
        char text[32];
        snprintf(text, sizeof text, "%s%llu", neg ? "-" : "", (unsigned long long)mag);
        return out_of_range(c, text, err);
    }
    if (c->type.id == MARBLE_ARROW_BOOL) return push_value(c, NULL, 0, mag != 0, err);
    uint64_t bits = neg ? (uint64_t)0 - mag : mag;
    unsigned char raw[8];
    switch (c->type.byte_width) {
    case 1: {
        uint8_t v = (uint8_t)bits;
        memcpy(raw, &v, 1);
        break;
    }
    case 2: {
        uint16_t v = (uint16_t)bits;
        memcpy(raw, &v, 2);
        break;
    }
    case 4: {
        uint32_t v = (uint32_t)bits;
        memcpy(raw, &v, 4);
        break;
    }
    default:
        memcpy(raw, &bits, 8);
        break;
    }
    return push_value(c, raw, c->type.byte_width, 0, err);
}

int marble_builder_append_int(marble_batch_builder *b, int col, int64_t v, marble_error *err)
{
    column *c = NULL;
    MARBLE_RETURN_NOT_OK(get_column(b, col, &c, err));
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    return append_integer(c, v < 0, mag, err);
}

int marble_builder_append_uint(marble_batch_builder *b, int col, uint64_t v, marble_error *err)
{
    column *c = NULL;
    MARBLE_RETURN_NOT_OK(get_column(b, col, &c, err));
    return append_integer(c, 0, v, err);
}

int marble_builder_append_double(marble_batch_builder *b, int col, double v, marble_error *err)
{
    column *c = NULL;
    MARBLE_RETURN_NOT_OK(get_column(b, col, &c, err));
    if (c->type.id == MARBLE_ARROW_FLOAT64) return push_value(c, &v, 8, 0, err);
    if (c->type.id != MARBLE_ARROW_FLOAT32) return mismatch(c, "a floating-point value", err);
    if (isfinite(v) && (v > FLT_MAX || v < -FLT_MAX)) {
        char text[40];
        snprintf(text, sizeof text, "%g", v);
        return out_of_range(c, text, err);
    }
    float f = (float)v;
    return push_value(c, &f, 4, 0, err);
}

int marble_builder_append_bytes(marble_batch_builder *b, int col, const void *data, size_t len,
                                marble_error *err)
{
    column *c = NULL;
    MARBLE_RETURN_NOT_OK(get_column(b, col, &c, err));
    if (!data && len)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "column '%.64s': data is NULL with length %zu", c->name, len);
    if (len > (size_t)INT64_MAX / 2)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "column '%.64s': value too long", c->name);
    switch (c->type.id) {
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_LARGE_UTF8: {
        int64_t bad;
        if (!marble__arrow_utf8_valid(data, (int64_t)len, &bad))
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "column '%.64s': invalid UTF-8 at byte %lld of a %zu-byte "
                                    "value",
                                    c->name, (long long)bad, len);
        break;
    }
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_BINARY:
        break;
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        if (len != (size_t)c->type.byte_width)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "column '%.64s': value is %zu bytes, fixed_size_binary[%d] "
                                    "needs %d",
                                    c->name, len, (int)c->type.byte_width, (int)c->type.byte_width);
        break;
    default:
        return mismatch(c, "bytes", err);
    }
    return push_value(c, data, (int64_t)len, 0, err);
}

/* Makes sure every buffer the finished column needs exists (non-NULL), before anything moves. */
static int prepare_column(column *c, marble_error *err)
{
    if (c->type.id == MARBLE_ARROW_NA) return MARBLE_OK;
    if (c->layout.offset_bytes) {
        if (c->values.size == 0)
            MARBLE_RETURN_NOT_OK(
                marble__arrow_buffer_append_zeros(&c->values, c->layout.offset_bytes, err));
        MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(&c->data, 0, err));
    } else {
        MARBLE_RETURN_NOT_OK(marble__arrow_buffer_reserve(&c->values, 0, err));
    }
    return MARBLE_OK;
}

int marble_batch_builder_finish(marble_batch_builder *b, struct ArrowArray *out, marble_error *err)
{
    if (!b || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "builder or output is NULL");
    memset(out, 0, sizeof *out);
    int64_t rows = marble_batch_builder_rows(b);
    for (int64_t i = 0; i < b->n_columns; i++) {
        if (b->columns[i].length != rows)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "column '%.64s' has %lld values, column '%.64s' has %lld",
                                    b->columns[i].name, (long long)b->columns[i].length,
                                    b->columns[0].name, (long long)rows);
    }
    for (int64_t i = 0; i < b->n_columns; i++)
        MARBLE_RETURN_NOT_OK(prepare_column(&b->columns[i], err));
    MARBLE_RETURN_NOT_OK(marble__arrow_array_init(out, 1, b->n_columns, NULL, err));
    for (int64_t i = 0; i < b->n_columns; i++) {
        int rc = marble__arrow_array_init(out->children[i], b->columns[i].layout.n_buffers, 0, NULL,
                                          err);
        if (rc != MARBLE_OK) {
            out->release(out);
            return rc;
        }
    }
    out->length = rows;
    out->null_count = 0;
    for (int64_t i = 0; i < b->n_columns; i++) {
        column *c = &b->columns[i];
        struct ArrowArray *a = out->children[i];
        a->length = c->length;
        a->null_count = c->null_count;
        if (c->type.id != MARBLE_ARROW_NA) {
            if (c->has_validity)
                marble__arrow_array_adopt_buffer(a, 0, marble__arrow_buffer_take(&c->validity));
            marble__arrow_array_adopt_buffer(a, 1, marble__arrow_buffer_take(&c->values));
            if (c->layout.offset_bytes)
                marble__arrow_array_adopt_buffer(a, 2, marble__arrow_buffer_take(&c->data));
        }
        column_free(c);
    }
    return MARBLE_OK;
}
