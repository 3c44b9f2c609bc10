/* Row values (the non-key columns of a row packed for the memtable and WAL) and the assembler
 * that turns (key, seq, op, value) entries or rows of Arrow batches back into record batches. */
#include "lsm/rowcodec.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ROW_BIG_ENDIAN 1
#else
#define ROW_BIG_ENDIAN 0
#endif

/* ---- shared helpers -------------------------------------------------------------------------- */

enum col_kind { K_BOOL, K_FIXED, K_VAR32, K_VAR64 };

static enum col_kind kind_of(marble_arrow_type_id id)
{
    switch (id) {
    case MARBLE_ARROW_BOOL:
        return K_BOOL;
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_BINARY:
        return K_VAR32;
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_LARGE_BINARY:
        return K_VAR64;
    default:
        return K_FIXED;
    }
}

static const char *col_name(const marble__row_codec *c, int i)
{
    const char *n = c->schema.children[i]->name;
    return n ? n : "";
}

static inline int bit_get(const void *bits, int64_t i)
{
    return (((const uint8_t *)bits)[i >> 3] >> (i & 7)) & 1;
}

/* Copies a w-byte little-endian value to native order (or back: the operation is symmetric). */
static inline void copy_le(uint8_t *dst, const uint8_t *src, size_t w)
{
#if ROW_BIG_ENDIAN
    for (size_t i = 0; i < w; i++)
        dst[i] = src[w - 1 - i];
#else
    memcpy(dst, src, w);
#endif
}

static inline int64_t offset_at(const void *offsets, enum col_kind k, int64_t i)
{
    if (k == K_VAR32) {
        int32_t o;
        memcpy(&o, (const uint8_t *)offsets + i * 4, 4);
        return o;
    }
    int64_t o;
    memcpy(&o, (const uint8_t *)offsets + i * 8, 8);
    return o;
}

/* ---- the codec ------------------------------------------------------------------------------- */

int marble__row_codec_init(marble__row_codec *c, const struct ArrowSchema *schema,
                           const int *key_cols, int nkeys, marble_error *err)
{
    memset(c, 0, sizeof *c);
    if (!schema)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "row codec: NULL schema");
    MARBLE_RETURN_NOT_OK(marble_arrow_schema_validate(schema, err));
    if (!schema->format || strcmp(schema->format, "+s") != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "row codec: the table schema is not a struct (\"+s\") schema");
    if (schema->n_children < 1 || schema->n_children > MARBLE__MAX_COLUMNS)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "row codec: the table has %" PRId64 " columns (must be 1 to %d)",
                                schema->n_children, MARBLE__MAX_COLUMNS);
    int n = (int)schema->n_children;
    for (int i = 0; i < n; i++) {
        const struct ArrowSchema *ch = schema->children[i];
        const char *name = ch->name;
        if (!name || !*name)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "column %d: the name is empty", i);
        if (name[0] == '_')
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "column '%s': names starting with '_' are reserved", name);
        for (int j = 0; j < i; j++)
            if (strcmp(schema->children[j]->name, name) == 0)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "column '%s': the name is used by columns %d and %d", name,
                                        j, i);
        marble_arrow_type t;
        int rc = marble_arrow_type_parse(ch->format, &t, err);
        if (rc != MARBLE_OK)
            return marble_error_set(err, rc, "column '%s': unsupported format '%s'", name,
                                    ch->format ? ch->format : "(null)");
        if (t.id == MARBLE_ARROW_NA || t.id == MARBLE_ARROW_STRUCT || t.byte_width < 0) {
            char buf[96];
            return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                    "column '%s': type %s is not supported in tables", name,
                                    marble_arrow_type_name(&t, buf, sizeof buf));
        }
    }
    if (nkeys < 1 || nkeys > MARBLE__KEY_MAX_COLS || !key_cols)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "row codec: %d key columns (must be 1 to %d)", nkeys,
                                MARBLE__KEY_MAX_COLS);
    for (int k = 0; k < nkeys; k++) {
        if (key_cols[k] < 0 || key_cols[k] >= n)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "key column #%d: index %d out of range (the table has %d "
                                    "columns)",
                                    k, key_cols[k], n);
        for (int p = 0; p < k; p++)
            if (key_cols[p] == key_cols[k])
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "key column '%s' is listed twice (#%d and #%d)",
                                        schema->children[key_cols[k]]->name, p, k);
    }

    int rc =
        marble__key_encoder_init(&c->keys, schema, key_cols, nkeys, MARBLE__KEY_REJECT_NULLS, err);
    if (rc != MARBLE_OK) return rc;
    c->cols = calloc((size_t)n, sizeof *c->cols);
    if (!c->cols)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "row codec: out of memory (%d columns)",
                                n);
    rc = marble_arrow_schema_copy(schema, &c->schema, err);
    if (rc != MARBLE_OK) {
        free(c->cols);
        memset(c, 0, sizeof *c);
        return rc;
    }
    c->ncols = n;
    for (int i = 0; i < n; i++) {
        marble__row_column *col = &c->cols[i];
        marble_arrow_type_parse(schema->children[i]->format, &col->type, NULL);
        col->key_index = -1;
        for (int k = 0; k < nkeys; k++)
            if (key_cols[k] == i) col->key_index = k;
        col->is_key = col->key_index >= 0;
        col->value_index = col->is_key ? -1 : c->n_value_cols++;
    }
    c->bitmap_bytes = (c->n_value_cols + 7) / 8;
    return MARBLE_OK;
}

void marble__row_codec_free(marble__row_codec *c)
{
    if (!c) return;
    marble_arrow_schema_release(&c->schema);
    free(c->cols);
    memset(c, 0, sizeof *c);
}

/* ---- encoding -------------------------------------------------------------------------------- */

static inline int ensure(marble__bytes *out, size_t n, marble_error *err)
{
    if (out->cap - out->len >= n) return MARBLE_OK;
    return marble__bytes_reserve(out, n, err);
}

static inline size_t put_leb128(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

int marble__row_encode(const marble__row_codec *c, const struct ArrowArray *batch, int64_t row,
                       marble__bytes *out, marble_error *err)
{
    if (!batch || batch->n_children < c->ncols || !batch->children || row < 0 ||
        row >= batch->length)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "row encoding: row %" PRId64 " of a batch that is not a struct "
                                "array of at least %d columns and %" PRId64 " rows",
                                row, c->ncols, row + 1);
    size_t start = out->len;
    int rc = ensure(out, (size_t)c->bitmap_bytes, err);
    if (rc != MARBLE_OK) return rc;
    if (c->bitmap_bytes) memset(out->data + start, 0, (size_t)c->bitmap_bytes);
    out->len += (size_t)c->bitmap_bytes;
    int64_t base = batch->offset + row;
    for (int i = 0; i < c->ncols; i++) {
        const marble__row_column *col = &c->cols[i];
        if (col->is_key) continue;
        const struct ArrowArray *a = batch->children[i];
        int64_t idx = base + a->offset;
        if (a->null_count != 0 && a->buffers[0] && !bit_get(a->buffers[0], idx)) continue;
        out->data[start + (size_t)(col->value_index >> 3)] |=
            (uint8_t)(1u << (col->value_index & 7));
        enum col_kind k = kind_of(col->type.id);
        if (k == K_BOOL) {
            if ((rc = ensure(out, 1, err)) != MARBLE_OK) goto fail;
            out->data[out->len++] = (uint8_t)bit_get(a->buffers[1], idx);
        } else if (k == K_FIXED) {
            size_t w = (size_t)col->type.byte_width;
            if ((rc = ensure(out, w, err)) != MARBLE_OK) goto fail;
            const uint8_t *src = (const uint8_t *)a->buffers[1] + idx * (int64_t)w;
            if (ROW_BIG_ENDIAN && col->type.id != MARBLE_ARROW_FIXED_SIZE_BINARY)
                copy_le(out->data + out->len, src, w);
            else if (w)
                memcpy(out->data + out->len, src, w);
            out->len += w;
        } else {
            int64_t s = offset_at(a->buffers[1], k, idx);
            int64_t e = offset_at(a->buffers[1], k, idx + 1);
            if (s < 0 || e < s) {
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "column '%s': bad offsets at row %" PRId64, col_name(c, i),
                                      row);
                goto fail;
            }
            size_t n = (size_t)(e - s);
            if ((rc = ensure(out, n + 10, err)) != MARBLE_OK) goto fail;
            out->len += put_leb128(out->data + out->len, n);
            if (n) memcpy(out->data + out->len, (const uint8_t *)a->buffers[2] + s, n);
            out->len += n;
        }
    }
    return MARBLE_OK;
fail:
    out->len = start;
    return rc;
}

/* ---- decoding -------------------------------------------------------------------------------- */

/* Where a value column's bytes lie in a row value: p NULL for a null. */
typedef struct slot {
    const uint8_t *p;
    size_t n;
} slot;

static int corrupt(const marble__row_codec *c, int i, size_t at, const char *what,
                   marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_CORRUPTION, "row value: column '%s': %s at byte %zu",
                            col_name(c, i), what, at);
}

/* Parses value[0, len) into slots[value_index] (slots may be NULL: check only). */
static int parse_value(const marble__row_codec *c, const uint8_t *v, size_t len, slot *slots,
                       marble_error *err)
{
    size_t nb = (size_t)c->bitmap_bytes;
    if (len < nb)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "row value: %zu bytes, shorter than its %zu-byte null bitmap", len,
                                nb);
    if (c->n_value_cols & 7) {
        uint8_t pad = (uint8_t)(0xFFu << (c->n_value_cols & 7));
        if (v[nb - 1] & pad)
            return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                    "row value: padding bits of the null bitmap are set");
    }
    size_t pos = nb;
    for (int i = 0; i < c->ncols; i++) {
        const marble__row_column *col = &c->cols[i];
        if (col->is_key) continue;
        int vi = col->value_index;
        if (!((v[vi >> 3] >> (vi & 7)) & 1)) {
            if (slots) slots[vi].p = NULL;
            continue;
        }
        size_t n;
        switch (kind_of(col->type.id)) {
        case K_BOOL:
            if (pos >= len) return corrupt(c, i, pos, "truncated value", err);
            if (v[pos] > 1) return corrupt(c, i, pos, "bad bool", err);
            n = 1;
            break;
        case K_FIXED:
            n = (size_t)col->type.byte_width;
            if (len - pos < n) return corrupt(c, i, pos, "truncated value", err);
            break;
        default: {
            uint64_t x = 0;
            int shift = 0;
            size_t at = pos;
            for (;;) {
                if (pos >= len) return corrupt(c, i, at, "truncated length", err);
                uint8_t b = v[pos++];
                if (shift == 63 && b > 1) return corrupt(c, i, at, "length overflows", err);
                x |= (uint64_t)(b & 0x7F) << shift;
                if (!(b & 0x80)) {
                    if (b == 0 && shift > 0) return corrupt(c, i, at, "overlong length", err);
                    break;
                }
                shift += 7;
            }
            if (x > len - pos) return corrupt(c, i, at, "length past the end", err);
            n = (size_t)x;
        }
        }
        if (slots) {
            slots[vi].p = v + pos;
            slots[vi].n = n;
        }
        pos += n;
    }
    if (pos != len)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "row value: %zu bytes after the last column", len - pos);
    return MARBLE_OK;
}

int marble__row_check(const marble__row_codec *c, const void *value, size_t len, marble_error *err)
{
    if (len > 0 && !value)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "row value: NULL pointer");
    return parse_value(c, value, len, NULL, err);
}

/* ---- the assembler --------------------------------------------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

enum col_source { SRC_KEY, SRC_VALUE, SRC_SEQ, SRC_OP };

typedef struct out_col {
    enum col_source src;
    enum col_kind kind;
    marble_arrow_type_id id;
    int col;      /* table column (SRC_KEY, SRC_VALUE) */
    int index;    /* key_index or value_index */
    size_t width; /* K_FIXED */
    const char *name;
    int has_validity;
    buf validity, offsets, data;
} out_col;

struct marble__assembler {
    const marble__row_codec *c;
    int n;
    int need_keys;
    int64_t rows;
    out_col *cols;
    slot *slots;
    marble__bytes scratch;
    struct ArrowSchema schema;
};

static int buf_grow(buf *b, size_t add, const out_col *oc, marble_error *err)
{
    if (add > SIZE_MAX / 2 - b->len)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "column '%s': %zu bytes is too many",
                                oc->name, add);
    size_t need = b->len + add;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "column '%s': out of memory (%zu bytes)",
                                oc->name, cap);
    b->p = p;
    b->cap = cap;
    return MARBLE_OK;
}

static inline int buf_reserve(buf *b, size_t add, const out_col *oc, marble_error *err)
{
    if (b->cap - b->len >= add) return MARBLE_OK;
    return buf_grow(b, add, oc, err);
}

/* Sets or clears bit i of a bitmap that holds bits [0, i) (adding a byte when needed). */
static inline int bitmap_put(buf *b, int64_t i, int v, const out_col *oc, marble_error *err)
{
    size_t byte = (size_t)(i >> 3);
    if (byte >= b->len) {
        MARBLE_RETURN_NOT_OK(buf_reserve(b, 1, oc, err));
        b->p[b->len++] = 0;
    }
    if (v)
        b->p[byte] |= (uint8_t)(1u << (i & 7));
    else
        b->p[byte] &= (uint8_t) ~(1u << (i & 7));
    return MARBLE_OK;
}

static void buf_free(buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static inline int offsets_push(out_col *oc, int64_t end, marble_error *err)
{
    size_t w = oc->kind == K_VAR32 ? 4 : 8;
    if (oc->offsets.len == 0) {
        MARBLE_RETURN_NOT_OK(buf_reserve(&oc->offsets, 2 * w, oc, err));
        memset(oc->offsets.p, 0, w);
        oc->offsets.len = w;
    }
    MARBLE_RETURN_NOT_OK(buf_reserve(&oc->offsets, w, oc, err));
    if (w == 4) {
        int32_t o = (int32_t)end;
        memcpy(oc->offsets.p + oc->offsets.len, &o, 4);
    } else {
        memcpy(oc->offsets.p + oc->offsets.len, &end, 8);
    }
    oc->offsets.len += w;
    return MARBLE_OK;
}

static int append_null(out_col *oc, int64_t row, marble_error *err)
{
    if (!oc->has_validity) {
        size_t nbytes = (size_t)(row >> 3) + 1;
        oc->validity.len = 0;
        MARBLE_RETURN_NOT_OK(buf_reserve(&oc->validity, nbytes, oc, err));
        memset(oc->validity.p, 0xFF, nbytes);
        oc->validity.len = nbytes;
        oc->has_validity = 1;
    }
    MARBLE_RETURN_NOT_OK(bitmap_put(&oc->validity, row, 0, oc, err));
    switch (oc->kind) {
    case K_BOOL:
        return bitmap_put(&oc->data, row, 0, oc, err);
    case K_FIXED:
        if (!oc->width) return MARBLE_OK;
        MARBLE_RETURN_NOT_OK(buf_reserve(&oc->data, oc->width, oc, err));
        memset(oc->data.p + oc->data.len, 0, oc->width);
        oc->data.len += oc->width;
        return MARBLE_OK;
    default:
        return offsets_push(oc, (int64_t)oc->data.len, err);
    }
}

static inline int mark_valid(out_col *oc, int64_t row, marble_error *err)
{
    return oc->has_validity ? bitmap_put(&oc->validity, row, 1, oc, err) : MARBLE_OK;
}

/* Appends n bytes to a variable-width column. */
static int append_var(out_col *oc, int64_t row, const void *p, size_t n, marble_error *err)
{
    if (oc->kind == K_VAR32 && n > (size_t)INT32_MAX - oc->data.len)
        return marble_error_set(err, MARBLE_ERR_LIMIT,
                                "column '%s': more than 2 GiB of data in one batch", oc->name);
    MARBLE_RETURN_NOT_OK(mark_valid(oc, row, err));
    MARBLE_RETURN_NOT_OK(buf_reserve(&oc->data, n, oc, err));
    if (n) memcpy(oc->data.p + oc->data.len, p, n);
    oc->data.len += n;
    return offsets_push(oc, (int64_t)oc->data.len, err);
}

/* Appends a fixed-width value given in native byte order. */
static inline int append_fixed(out_col *oc, int64_t row, const void *p, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(mark_valid(oc, row, err));
    if (!oc->width) return MARBLE_OK;
    MARBLE_RETURN_NOT_OK(buf_reserve(&oc->data, oc->width, oc, err));
    memcpy(oc->data.p + oc->data.len, p, oc->width);
    oc->data.len += oc->width;
    return MARBLE_OK;
}

static inline int append_bool(out_col *oc, int64_t row, int v, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(mark_valid(oc, row, err));
    return bitmap_put(&oc->data, row, v, oc, err);
}

/* Undoes a partly appended row: every buffer back to what `rows` rows need. */
static void rollback(marble__assembler *a)
{
    int64_t rows = a->rows;
    size_t bits = (size_t)((rows + 7) >> 3);
    for (int j = 0; j < a->n; j++) {
        out_col *oc = &a->cols[j];
        if (oc->has_validity) oc->validity.len = bits;
        switch (oc->kind) {
        case K_BOOL:
            oc->data.len = bits;
            break;
        case K_FIXED:
            oc->data.len = (size_t)rows * oc->width;
            break;
        default: {
            size_t w = oc->kind == K_VAR32 ? 4 : 8;
            if (oc->offsets.len == 0) {
                oc->data.len = 0;
                break;
            }
            oc->offsets.len = (size_t)(rows + 1) * w;
            oc->data.len = (size_t)offset_at(oc->offsets.p, oc->kind, rows);
        }
        }
    }
}

int marble__assembler_create(const marble__row_codec *c, const int *proj, int nproj, int with_meta,
                             marble__assembler **out, marble_error *err)
{
    *out = NULL;
    if (!c || !c->cols)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "assembler: codec not initialized");
    if (nproj > 0 && !proj)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "assembler: NULL projection of %d columns", nproj);
    int np = nproj < 0 ? c->ncols : nproj;
    if (np > c->ncols)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "assembler: %d projected columns, the table has %d", np, c->ncols);
    for (int j = 0; nproj >= 0 && j < np; j++) {
        if (proj[j] < 0 || proj[j] >= c->ncols)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "assembler: projected column #%d: index %d out of range (the "
                                    "table has %d columns)",
                                    j, proj[j], c->ncols);
        for (int p = 0; p < j; p++)
            if (proj[p] == proj[j])
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "assembler: column '%s' is projected twice",
                                        col_name(c, proj[j]));
    }
    int n = np + (with_meta ? 2 : 0);
    marble__assembler *a = calloc(1, sizeof *a);
    marble_field_spec *fields = calloc((size_t)n + 1, sizeof *fields);
    int rc = MARBLE_OK;
    if (!a || !fields) goto oom;
    a->c = c;
    a->n = n;
    a->cols = calloc((size_t)n + 1, sizeof *a->cols);
    a->slots = calloc((size_t)c->n_value_cols + 1, sizeof *a->slots);
    if (!a->cols || !a->slots) goto oom;
    for (int j = 0; j < np; j++) {
        int i = nproj < 0 ? j : proj[j];
        const marble__row_column *col = &c->cols[i];
        const struct ArrowSchema *ch = c->schema.children[i];
        out_col *oc = &a->cols[j];
        oc->src = col->is_key ? SRC_KEY : SRC_VALUE;
        oc->col = i;
        oc->index = col->is_key ? col->key_index : col->value_index;
        oc->id = col->type.id;
        oc->kind = kind_of(oc->id);
        oc->width = oc->kind == K_FIXED ? (size_t)col->type.byte_width : 0;
        oc->name = ch->name;
        if (col->is_key) a->need_keys = 1;
        fields[j].name = ch->name;
        fields[j].format = ch->format;
        fields[j].nullable = col->is_key ? (ch->flags & ARROW_FLAG_NULLABLE) != 0 : 1;
    }
    if (with_meta) {
        out_col *s = &a->cols[np], *o = &a->cols[np + 1];
        s->src = SRC_SEQ;
        s->kind = K_FIXED;
        s->id = MARBLE_ARROW_UINT64;
        s->width = 8;
        s->name = MARBLE__SEQ_COLUMN;
        o->src = SRC_OP;
        o->kind = K_FIXED;
        o->id = MARBLE_ARROW_UINT8;
        o->width = 1;
        o->name = MARBLE__OP_COLUMN;
        fields[np] = (marble_field_spec){MARBLE__SEQ_COLUMN, "L", 0};
        fields[np + 1] = (marble_field_spec){MARBLE__OP_COLUMN, "C", 0};
    }
    rc = marble_arrow_schema_make(&a->schema, fields, (size_t)n, NULL, NULL, 0, err);
    if (rc != MARBLE_OK) goto fail;
    free(fields);
    *out = a;
    return MARBLE_OK;
oom:
    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "assembler: out of memory (%d columns)", n);
fail:
    free(fields);
    marble__assembler_destroy(a);
    return rc;
}

void marble__assembler_destroy(marble__assembler *a)
{
    if (!a) return;
    for (int j = 0; a->cols && j < a->n; j++) {
        buf_free(&a->cols[j].validity);
        buf_free(&a->cols[j].offsets);
        buf_free(&a->cols[j].data);
    }
    free(a->cols);
    free(a->slots);
    marble__bytes_free(&a->scratch);
    marble_arrow_schema_release(&a->schema);
    free(a);
}

static int append_key(out_col *oc, int64_t row, const marble__key_value *kv, marble_error *err)
{
    if (kv->kind == MARBLE__KV_NULL) return append_null(oc, row, err);
    uint8_t tmp[8];
    switch (oc->id) {
    case MARBLE_ARROW_BOOL:
        return append_bool(oc, row, kv->i != 0, err);
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_DATE32:
    case MARBLE_ARROW_TIMESTAMP:
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64: {
        uint64_t u = kv->kind == MARBLE__KV_UINT ? kv->u : (uint64_t)kv->i;
        uint8_t le[8];
        for (size_t b = 0; b < oc->width; b++)
            le[b] = (uint8_t)(u >> (8 * b));
        copy_le(tmp, le, oc->width);
        return append_fixed(oc, row, tmp, err);
    }
    case MARBLE_ARROW_FLOAT32: {
        float f = (float)kv->d;
        return append_fixed(oc, row, &f, err);
    }
    case MARBLE_ARROW_FLOAT64:
        return append_fixed(oc, row, &kv->d, err);
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        if (kv->len != oc->width)
            return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                    "key column '%s': %zu bytes, expected %zu", oc->name, kv->len,
                                    oc->width);
        return append_fixed(oc, row, kv->bytes, err);
    default:
        return append_var(oc, row, kv->bytes, kv->len, err);
    }
}

static int append_slot(out_col *oc, int64_t row, const slot *s, marble_error *err)
{
    if (!s->p) return append_null(oc, row, err);
    switch (oc->kind) {
    case K_BOOL:
        return append_bool(oc, row, s->p[0], err);
    case K_FIXED:
#if ROW_BIG_ENDIAN
        if (oc->id != MARBLE_ARROW_FIXED_SIZE_BINARY) {
            uint8_t tmp[8];
            copy_le(tmp, s->p, oc->width);
            return append_fixed(oc, row, tmp, err);
        }
#endif
        return append_fixed(oc, row, s->p, err);
    default:
        return append_var(oc, row, s->p, s->n, err);
    }
}

static int append_meta(out_col *oc, int64_t row, uint64_t seq, int op, marble_error *err)
{
    if (oc->src == SRC_SEQ) return append_fixed(oc, row, &seq, err);
    uint8_t o = (uint8_t)op;
    return append_fixed(oc, row, &o, err);
}

int marble__assembler_add(marble__assembler *a, const void *key, size_t klen, uint64_t seq, int op,
                          const void *value, size_t vlen, marble_error *err)
{
    const marble__row_codec *c = a->c;
    marble__key_value kv[MARBLE__KEY_MAX_COLS];
    if (op != 0 && op != 1)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "assembler: bad op %d", op);
    if (op == 0 && vlen != 0)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "assembler: a delete with a %zu-byte value", vlen);
    if (vlen > 0 && !value)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "assembler: NULL value");
    if (a->need_keys)
        MARBLE_RETURN_NOT_OK(marble__key_decode(&c->keys, key, klen, kv, &a->scratch, err));
    if (op == 1) MARBLE_RETURN_NOT_OK(parse_value(c, value, vlen, a->slots, err));
    int64_t row = a->rows;
    int rc = MARBLE_OK;
    for (int j = 0; j < a->n && rc == MARBLE_OK; j++) {
        out_col *oc = &a->cols[j];
        switch (oc->src) {
        case SRC_KEY:
            rc = append_key(oc, row, &kv[oc->index], err);
            break;
        case SRC_VALUE:
            rc = op ? append_slot(oc, row, &a->slots[oc->index], err) : append_null(oc, row, err);
            break;
        default:
            rc = append_meta(oc, row, seq, op, err);
        }
    }
    if (rc != MARBLE_OK) {
        rollback(a);
        return rc;
    }
    a->rows++;
    return MARBLE_OK;
}

int marble__assembler_add_arrow(marble__assembler *a, const struct ArrowArray *src, int64_t row,
                                uint64_t seq, int op, marble_error *err)
{
    const marble__row_codec *c = a->c;
    if (op != 0 && op != 1)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "assembler: bad op %d", op);
    if (!src || src->n_children < c->ncols || !src->children || row < 0 || row >= src->length)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "assembler: row %" PRId64 " of a batch that is not a struct array "
                                "of at least %d columns and %" PRId64 " rows",
                                row, c->ncols, row + 1);
    int64_t out_row = a->rows;
    int64_t base = src->offset + row;
    int rc = MARBLE_OK;
    for (int j = 0; j < a->n && rc == MARBLE_OK; j++) {
        out_col *oc = &a->cols[j];
        if (oc->src == SRC_SEQ || oc->src == SRC_OP) {
            rc = append_meta(oc, out_row, seq, op, err);
            continue;
        }
        if (oc->src == SRC_VALUE && op == 0) {
            rc = append_null(oc, out_row, err);
            continue;
        }
        const struct ArrowArray *ch = src->children[oc->col];
        int64_t idx = base + ch->offset;
        if (ch->null_count != 0 && ch->buffers[0] && !bit_get(ch->buffers[0], idx)) {
            rc = append_null(oc, out_row, err);
            continue;
        }
        switch (oc->kind) {
        case K_BOOL:
            rc = append_bool(oc, out_row, bit_get(ch->buffers[1], idx), err);
            break;
        case K_FIXED:
            rc = append_fixed(oc, out_row,
                              (const uint8_t *)ch->buffers[1] + idx * (int64_t)oc->width, err);
            break;
        default: {
            int64_t s = offset_at(ch->buffers[1], oc->kind, idx);
            int64_t e = offset_at(ch->buffers[1], oc->kind, idx + 1);
            if (s < 0 || e < s)
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "column '%s': bad offsets at row %" PRId64, oc->name, row);
            else
                rc = append_var(oc, out_row, (const uint8_t *)ch->buffers[2] + s, (size_t)(e - s),
                                err);
        }
        }
    }
    if (rc != MARBLE_OK) {
        rollback(a);
        return rc;
    }
    a->rows++;
    return MARBLE_OK;
}

int64_t marble__assembler_rows(const marble__assembler *a)
{
    return a->rows;
}

size_t marble__assembler_bytes(const marble__assembler *a)
{
    size_t n = 0;
    for (int j = 0; j < a->n; j++)
        n += a->cols[j].validity.len + a->cols[j].offsets.len + a->cols[j].data.len;
    return n;
}

/* ---- output arrays --------------------------------------------------------------------------- */

typedef struct child_priv {
    void *owned[3];
    const void *buffers[3];
} child_priv;

typedef struct batch_priv {
    int64_t n;
    struct ArrowArray **children;
    struct ArrowArray *arrays;
    const void *buffers[1];
} batch_priv;

static void release_child(struct ArrowArray *arr)
{
    child_priv *p = arr->private_data;
    for (int i = 0; i < 3; i++)
        free(p->owned[i]);
    free(p);
    arr->release = NULL;
}

static void release_batch(struct ArrowArray *arr)
{
    batch_priv *p = arr->private_data;
    for (int64_t i = 0; i < p->n; i++)
        if (p->children[i]->release) p->children[i]->release(p->children[i]);
    free(p->children);
    free(p->arrays);
    free(p);
    arr->release = NULL;
}

static int64_t count_zeros(const uint8_t *bits, int64_t n)
{
    int64_t ones = 0, full = n >> 3;
    for (int64_t i = 0; i < full; i++)
        ones += __builtin_popcount(bits[i]);
    for (int64_t i = full << 3; i < n; i++)
        ones += bit_get(bits, i);
    return n - ones;
}

int marble__assembler_finish(marble__assembler *a, struct ArrowArray *out, marble_error *err)
{
    int n = a->n;
    int64_t rows = a->rows;
    batch_priv *bp = calloc(1, sizeof *bp);
    child_priv **cps = calloc((size_t)n + 1, sizeof *cps);
    int ok = bp && cps;
    if (ok) {
        bp->n = n;
        bp->children = calloc((size_t)n + 1, sizeof *bp->children);
        bp->arrays = calloc((size_t)n + 1, sizeof *bp->arrays);
        ok = bp->children && bp->arrays;
    }
    for (int j = 0; ok && j < n; j++) {
        cps[j] = calloc(1, sizeof **cps);
        ok = cps[j] != NULL;
        out_col *oc = &a->cols[j];
        if (ok && (oc->kind == K_VAR32 || oc->kind == K_VAR64) && oc->offsets.len == 0)
            ok = buf_reserve(&oc->offsets, 8, oc, NULL) == MARBLE_OK;
    }
    if (!ok) {
        for (int j = 0; cps && j < n; j++)
            free(cps[j]);
        free(cps);
        if (bp) {
            free(bp->children);
            free(bp->arrays);
            free(bp);
        }
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                "assembler: out of memory finishing a "
                                "batch");
    }
    for (int j = 0; j < n; j++) {
        out_col *oc = &a->cols[j];
        child_priv *cp = cps[j];
        struct ArrowArray *ch = &bp->arrays[j];
        bp->children[j] = ch;
        int64_t nulls = oc->has_validity ? count_zeros(oc->validity.p, rows) : 0;
        if (nulls) {
            cp->owned[0] = oc->validity.p;
            cp->buffers[0] = oc->validity.p;
        } else {
            free(oc->validity.p);
        }
        int nb = 2;
        if (oc->kind == K_VAR32 || oc->kind == K_VAR64) {
            if (oc->offsets.len == 0) {
                memset(oc->offsets.p, 0, 8);
                oc->offsets.len = 8;
            }
            cp->owned[1] = oc->offsets.p;
            cp->buffers[1] = oc->offsets.p;
            cp->owned[2] = oc->data.p;
            cp->buffers[2] = oc->data.p;
            nb = 3;
        } else {
            cp->owned[1] = oc->data.p;
            cp->buffers[1] = oc->data.p;
        }
        memset(&oc->validity, 0, sizeof oc->validity);
        memset(&oc->offsets, 0, sizeof oc->offsets);
        memset(&oc->data, 0, sizeof oc->data);
        oc->has_validity = 0;
        *ch = (struct ArrowArray){.length = rows,
                                  .null_count = nulls,
                                  .n_buffers = nb,
                                  .buffers = cp->buffers,
                                  .release = release_child,
                                  .private_data = cp};
    }
    free(cps);
    *out = (struct ArrowArray){.length = rows,
                               .n_buffers = 1,
                               .n_children = n,
                               .buffers = bp->buffers,
                               .children = bp->children,
                               .release = release_batch,
                               .private_data = bp};
    a->rows = 0;
    return MARBLE_OK;
}

int marble__assembler_schema(const marble__assembler *a, struct ArrowSchema *out, marble_error *err)
{
    return marble_arrow_schema_copy(&a->schema, out, err);
}
