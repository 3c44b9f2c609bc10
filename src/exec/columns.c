/* Column plumbing for the pipeline runtime: arrays owning malloc'd buffers, zero-copy views of
 * reference-counted batches, row gathers for every flat Arrow type, typed column readers and the
 * row comparator used by sort, top-N and the k-way merges. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "exec/pipeline_internal.h"

/* ---- layouts --------------------------------------------------------------------------------- */

typedef struct layout {
    int cv;           /* MARBLE__CV_* */
    int n_buffers;    /* 0 (null), 2 (fixed), 3 (variable) */
    int width;        /* bytes per value for fixed; 0 for bool (bits) */
    int offset_bytes; /* variable: 4 or 8 */
} layout;

static int layout_of(const struct ArrowSchema *field, layout *l, marble_error *err)
{
    marble_arrow_type t;
    MARBLE_RETURN_NOT_OK(marble_arrow_type_parse(field->format, &t, err));
    memset(l, 0, sizeof *l);
    l->n_buffers = 2;
    l->width = t.byte_width;
    switch (t.id) {
    case MARBLE_ARROW_NA:
        l->cv = MARBLE__CV_NULL;
        l->n_buffers = 0;
        break;
    case MARBLE_ARROW_BOOL:
        l->cv = MARBLE__CV_BOOL;
        l->width = 0;
        break;
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_DATE32:
    case MARBLE_ARROW_TIMESTAMP:
        l->cv = MARBLE__CV_INT;
        break;
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64:
        l->cv = MARBLE__CV_UINT;
        break;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        l->cv = MARBLE__CV_FLOAT;
        break;
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_BINARY:
        l->cv = MARBLE__CV_BYTES;
        l->n_buffers = 3;
        l->offset_bytes = 4;
        l->width = 0;
        break;
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_LARGE_BINARY:
        l->cv = MARBLE__CV_BYTES;
        l->n_buffers = 3;
        l->offset_bytes = 8;
        l->width = 0;
        break;
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        l->cv = MARBLE__CV_FIXED;
        break;
    default:
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "column '%s' has type '%s', which "
                                "is not a flat column type",
                                field->name ? field->name : "", field->format);
    }
    return MARBLE_OK;
}

static inline int bit_get(const uint8_t *bits, int64_t i)
{
    return (bits[i >> 3] >> (i & 7)) & 1;
}

static inline void bit_set(uint8_t *bits, int64_t i)
{
    bits[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static inline int64_t offset_at(const void *offsets, int ob, int64_t i)
{
    return ob == 4 ? ((const int32_t *)offsets)[i] : ((const int64_t *)offsets)[i];
}

/* ---- owned arrays ---------------------------------------------------------------------------- */

typedef struct owned {
    const void *bufs[3];
} owned;

static void owned_release(struct ArrowArray *a)
{
    owned *o = a->private_data;
    for (int i = 0; i < 3; i++)
        free((void *)o->bufs[i]);
    free(o);
    a->release = NULL;
}

int marble__array_alloc(struct ArrowArray *out, int n_buffers, const size_t *sizes,
                        marble_error *err)
{
    memset(out, 0, sizeof *out);
    owned *o = calloc(1, sizeof *o);
    if (!o) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory (array)");
    for (int i = 0; i < n_buffers; i++) {
        if (!sizes[i]) continue;
        o->bufs[i] = calloc(1, sizes[i]);
        if (!o->bufs[i]) {
            for (int j = 0; j < i; j++)
                free((void *)o->bufs[j]);
            free(o);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory (array buffer)");
        }
    }
    out->n_buffers = n_buffers;
    out->buffers = o->bufs;
    out->release = owned_release;
    out->private_data = o;
    return MARBLE_OK;
}

typedef struct owned_batch {
    const void *bufs[1];
    struct ArrowArray **children;
    struct ArrowArray *structs;
} owned_batch;

static void batch_release(struct ArrowArray *a)
{
    owned_batch *o = a->private_data;
    for (int64_t i = 0; i < a->n_children; i++)
        if (o->structs[i].release) o->structs[i].release(&o->structs[i]);
    free(o->children);
    free(o->structs);
    free(o);
    a->release = NULL;
}

int marble__batch_alloc(struct ArrowArray *out, int64_t n_cols, int64_t length, marble_error *err)
{
    memset(out, 0, sizeof *out);
    owned_batch *o = calloc(1, sizeof *o);
    if (o) {
        o->children = calloc((size_t)n_cols + 1, sizeof *o->children);
        o->structs = calloc((size_t)n_cols + 1, sizeof *o->structs);
    }
    if (!o || !o->children || !o->structs) {
        if (o) {
            free(o->children);
            free(o->structs);
        }
        free(o);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory (batch)");
    }
    for (int64_t i = 0; i < n_cols; i++)
        o->children[i] = &o->structs[i];
    out->length = length;
    out->n_buffers = 1;
    out->buffers = o->bufs;
    out->n_children = n_cols;
    out->children = o->children;
    out->release = batch_release;
    out->private_data = o;
    return MARBLE_OK;
}

uint64_t marble__batch_bytes(const struct ArrowSchema *schema, const struct ArrowArray *batch)
{
    uint64_t total = 64;
    for (int64_t c = 0; c < batch->n_children && c < schema->n_children; c++) {
        const struct ArrowArray *col = batch->children[c];
        layout l;
        if (layout_of(schema->children[c], &l, NULL) != MARBLE_OK) continue;
        total += 64 + (uint64_t)(batch->length + 7) / 8 + (uint64_t)batch->length * 8;
        if (l.n_buffers == 3 && col->buffers[1] && batch->length > 0) {
            int64_t p = col->offset + batch->offset;
            int64_t first = offset_at(col->buffers[1], l.offset_bytes, p);
            int64_t last = offset_at(col->buffers[1], l.offset_bytes, p + batch->length);
            if (last > first) total += (uint64_t)(last - first);
        }
    }
    return total;
}

/* ---- shared batches and views ---------------------------------------------------------------- */

struct marble__shared {
    _Atomic int refs;
    struct ArrowArray batch;
};

marble__shared *marble__shared_new(struct ArrowArray *batch)
{
    marble__shared *s = malloc(sizeof *s);
    if (!s) return NULL;
    atomic_init(&s->refs, 1);
    marble_arrow_array_move(batch, &s->batch);
    return s;
}

const struct ArrowArray *marble__shared_batch(const marble__shared *s)
{
    return &s->batch;
}

void marble__shared_unref(marble__shared *s)
{
    /* acq_rel: the last owner must see every other owner's reads done before freeing. */
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        marble_arrow_array_release(&s->batch);
        free(s);
    }
}

static void view_release(struct ArrowArray *a)
{
    marble__shared_unref(a->private_data);
    a->release = NULL;
}

int marble__column_view(marble__shared *s, int col, int64_t off, int64_t len,
                        struct ArrowArray *out, marble_error *err)
{
    const struct ArrowArray *b = &s->batch;
    if (col < 0 || col >= b->n_children || off < 0 || off + len > b->length)
        return marble_error_set(err, MARBLE_ERR_INTERNAL, "column view out of range");
    const struct ArrowArray *c = b->children[col];
    memset(out, 0, sizeof *out);
    out->length = len;
    out->offset = c->offset + b->offset + off;
    out->null_count = (c->null_count == 0) ? 0 : -1;
    if (c->n_buffers == 0) out->null_count = len;
    out->n_buffers = c->n_buffers;
    out->buffers = c->buffers;
    out->release = view_release;
    out->private_data = s;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return MARBLE_OK;
}

int marble__batch_slice(marble__shared *s, int64_t off, int64_t len, struct ArrowArray *out,
                        marble_error *err)
{
    const struct ArrowArray *b = &s->batch;
    MARBLE_RETURN_NOT_OK(marble__batch_alloc(out, b->n_children, len, err));
    for (int64_t c = 0; c < b->n_children; c++) {
        int rc = marble__column_view(s, (int)c, off, len, out->children[c], err);
        if (rc != MARBLE_OK) {
            out->release(out);
            return rc;
        }
    }
    return MARBLE_OK;
}

/* ---- gathers --------------------------------------------------------------------------------- */

int marble__gather(const struct ArrowSchema *field, const struct ArrowArray *const *batches,
                   int col, const marble__rowref *refs, const uint32_t *rows, int64_t n,
                   struct ArrowArray *out, marble_error *err)
{
    layout l;
    MARBLE_RETURN_NOT_OK(layout_of(field, &l, err));
#define SRC_B(k) (batches[refs ? refs[k].batch : 0])
#define SRC_R(k) (refs ? (int64_t)refs[k].row : (int64_t)rows[k])
    if (l.n_buffers == 0) {
        MARBLE_RETURN_NOT_OK(marble__array_alloc(out, 0, NULL, err));
        out->length = n;
        out->null_count = n;
        return MARBLE_OK;
    }
    size_t sizes[3] = {(size_t)(n + 7) / 8 + 1, 0, 0};
    if (l.n_buffers == 3) {
        int64_t total = 0;
        for (int64_t k = 0; k < n; k++) {
            const struct ArrowArray *b = SRC_B(k);
            const struct ArrowArray *c = b->children[col];
            int64_t p = c->offset + b->offset + SRC_R(k);
            total += offset_at(c->buffers[1], l.offset_bytes, p + 1) -
                     offset_at(c->buffers[1], l.offset_bytes, p);
        }
        if (l.offset_bytes == 4 && total > INT32_MAX)
            return marble_error_set(err, MARBLE_ERR_LIMIT,
                                    "column '%s': gathered strings exceed 2 GiB",
                                    field->name ? field->name : "");
        sizes[1] = (size_t)(n + 1) * (size_t)l.offset_bytes;
        sizes[2] = (size_t)total + 1;
    } else {
        sizes[1] = l.width ? (size_t)n * (size_t)l.width + 1 : (size_t)(n + 7) / 8 + 1;
    }
    MARBLE_RETURN_NOT_OK(marble__array_alloc(out, l.n_buffers, sizes, err));
    uint8_t *valid = (uint8_t *)out->buffers[0];
    uint8_t *vals = (uint8_t *)out->buffers[1];
    int64_t nulls = 0, pos = 0;
    for (int64_t k = 0; k < n; k++) {
        const struct ArrowArray *b = SRC_B(k);
        const struct ArrowArray *c = b->children[col];
        int64_t p = c->offset + b->offset + SRC_R(k);
        const uint8_t *v = c->buffers[0];
        int isnull = v && !bit_get(v, p);
        if (isnull)
            nulls++;
        else
            bit_set(valid, k);
        if (l.n_buffers == 3) {
            int64_t s = offset_at(c->buffers[1], l.offset_bytes, p);
            int64_t e = offset_at(c->buffers[1], l.offset_bytes, p + 1);
            if (e > s)
                memcpy((uint8_t *)out->buffers[2] + pos, (const uint8_t *)c->buffers[2] + s,
                       (size_t)(e - s));
            pos += e - s;
            if (l.offset_bytes == 4)
                ((int32_t *)vals)[k + 1] = (int32_t)pos;
            else
                ((int64_t *)vals)[k + 1] = pos;
        } else if (l.width) {
            memcpy(vals + k * l.width, (const uint8_t *)c->buffers[1] + p * l.width,
                   (size_t)l.width);
        } else if (bit_get(c->buffers[1], p)) {
            bit_set(vals, k);
        }
    }
#undef SRC_B
#undef SRC_R
    out->length = n;
    out->null_count = nulls;
    if (nulls == 0) {
        owned *o = out->private_data;
        free((void *)o->bufs[0]);
        o->bufs[0] = NULL;
    }
    return MARBLE_OK;
}

int marble__gather_batch(const struct ArrowSchema *schema, const struct ArrowArray *const *batches,
                         const marble__rowref *refs, const uint32_t *rows, int64_t n,
                         struct ArrowArray *out, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(marble__batch_alloc(out, schema->n_children, n, err));
    for (int64_t c = 0; c < schema->n_children; c++) {
        int rc = marble__gather(schema->children[c], batches, (int)c, refs, rows, n,
                                out->children[c], err);
        if (rc != MARBLE_OK) {
            out->release(out);
            return rc;
        }
    }
    return MARBLE_OK;
}

/* ---- comparisons ----------------------------------------------------------------------------- */

int marble__colview_check(const struct ArrowSchema *field, const char *what, marble_error *err)
{
    layout l;
    marble_error e;
    marble_error_clear(&e);
    if (layout_of(field, &l, &e) != MARBLE_OK)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s: %s", what, e.message);
    return MARBLE_OK;
}

int marble__colview_kind(const struct ArrowSchema *field)
{
    layout l;
    return layout_of(field, &l, NULL) == MARBLE_OK ? l.cv : MARBLE__CV_NULL;
}

void marble__colview_init(const struct ArrowSchema *field, const struct ArrowArray *batch, int col,
                          marble__colview *v)
{
    layout l;
    memset(v, 0, sizeof *v);
    if (layout_of(field, &l, NULL) != MARBLE_OK) return;
    const struct ArrowArray *c = batch->children[col];
    v->kind = l.cv;
    v->width = l.width;
    v->offset_bytes = l.offset_bytes;
    v->base = c->offset + batch->offset;
    if (l.n_buffers == 0) return;
    v->validity = c->buffers[0];
    if (l.n_buffers == 3) {
        v->offsets = c->buffers[1];
        v->values = c->buffers[2];
    } else {
        v->values = c->buffers[1];
    }
}

int marble__colview_is_null(const marble__colview *v, int64_t row)
{
    if (v->kind == MARBLE__CV_NULL) return 1;
    return v->validity && !bit_get(v->validity, v->base + row);
}

static inline int64_t read_int(const marble__colview *v, int64_t p)
{
    switch (v->width) {
    case 1:
        return ((const int8_t *)v->values)[p];
    case 2:
        return ((const int16_t *)v->values)[p];
    case 4:
        return ((const int32_t *)v->values)[p];
    default:
        return ((const int64_t *)v->values)[p];
    }
}

static inline uint64_t read_uint(const marble__colview *v, int64_t p)
{
    switch (v->width) {
    case 1:
        return ((const uint8_t *)v->values)[p];
    case 2:
        return ((const uint16_t *)v->values)[p];
    case 4:
        return ((const uint32_t *)v->values)[p];
    default:
        return ((const uint64_t *)v->values)[p];
    }
}

static inline int cmp_bytes(const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb)
{
    int64_t m = na < nb ? na : nb;
    int c = m ? memcmp(a, b, (size_t)m) : 0;
    if (c) return c;
    return (na > nb) - (na < nb);
}

int marble__colview_cmp(const marble__colview *a, int64_t i, const marble__colview *b, int64_t j)
{
    int64_t p = a->base + i, q = b->base + j;
    switch (a->kind) {
    case MARBLE__CV_INT: {
        int64_t x = read_int(a, p), y = read_int(b, q);
        return (x > y) - (x < y);
    }
    case MARBLE__CV_UINT: {
        uint64_t x = read_uint(a, p), y = read_uint(b, q);
        return (x > y) - (x < y);
    }
    case MARBLE__CV_FLOAT: {
        double x = a->width == 4 ? ((const float *)a->values)[p] : ((const double *)a->values)[p];
        double y = b->width == 4 ? ((const float *)b->values)[q] : ((const double *)b->values)[q];
        int nx = isnan(x), ny = isnan(y);
        if (nx || ny) return nx - ny;
        return (x > y) - (x < y);
    }
    case MARBLE__CV_BOOL:
        return bit_get(a->values, p) - bit_get(b->values, q);
    case MARBLE__CV_BYTES: {
        int64_t as = offset_at(a->offsets, a->offset_bytes, p);
        int64_t ae = offset_at(a->offsets, a->offset_bytes, p + 1);
        int64_t bs = offset_at(b->offsets, b->offset_bytes, q);
        int64_t be = offset_at(b->offsets, b->offset_bytes, q + 1);
        return cmp_bytes(a->values + as, ae - as, b->values + bs, be - bs);
    }
    case MARBLE__CV_FIXED:
        return cmp_bytes(a->values + p * a->width, a->width, b->values + q * b->width, b->width);
    default:
        return 0;
    }
}

uint64_t marble__sort_prefix(const marble_sort_key *key, const marble__colview *v, int64_t row)
{
    if (marble__colview_is_null(v, row)) return key->nulls_first ? 0 : UINT64_MAX;
    int64_t p = v->base + row;
    uint64_t x = 0;
    switch (v->kind) {
    case MARBLE__CV_INT:
        x = (uint64_t)read_int(v, p) ^ ((uint64_t)1 << 63);
        break;
    case MARBLE__CV_UINT:
        x = read_uint(v, p);
        break;
    case MARBLE__CV_FLOAT: {
        double d = v->width == 4 ? ((const float *)v->values)[p] : ((const double *)v->values)[p];
        if (isnan(d)) {
            x = UINT64_MAX - 1;
            break;
        }
        if (d == 0) d = 0;
        memcpy(&x, &d, 8);
        x = (x >> 63) ? ~x : x | ((uint64_t)1 << 63);
        break;
    }
    case MARBLE__CV_BOOL:
        x = (uint64_t)bit_get(v->values, p);
        break;
    case MARBLE__CV_BYTES:
    case MARBLE__CV_FIXED: {
        const uint8_t *s;
        int64_t n;
        if (v->kind == MARBLE__CV_BYTES) {
            int64_t a = offset_at(v->offsets, v->offset_bytes, p);
            s = v->values + a;
            n = offset_at(v->offsets, v->offset_bytes, p + 1) - a;
        } else {
            s = v->values + p * v->width;
            n = v->width;
        }
        for (int i = 0; i < 8; i++)
            x = (x << 8) | (i < n ? s[i] : 0);
        break;
    }
    default:
        break;
    }
    return key->descending ? ~x : x;
}

int marble__rows_cmp(const marble_sort_key *keys, size_t n, const marble__colview *a, int64_t i,
                     const marble__colview *b, int64_t j)
{
    for (size_t k = 0; k < n; k++) {
        int na = marble__colview_is_null(&a[k], i), nb = marble__colview_is_null(&b[k], j);
        if (na || nb) {
            if (na && nb) continue;
            int c = na ? 1 : -1;
            return keys[k].nulls_first ? -c : c;
        }
        int c = marble__colview_cmp(&a[k], i, &b[k], j);
        if (c) return keys[k].descending ? -c : c;
    }
    return 0;
}
