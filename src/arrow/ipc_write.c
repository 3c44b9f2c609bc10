/* Arrow IPC writer: schema and record batch messages, the stream and file formats, LZ4_FRAME and
 * ZSTD buffer compression, and a sink that appends to memory. */
#include "arrow/arrow_internal.h"
#include "arrow/flatbuf.h"
#include "arrow/ipc_internal.h"

#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

typedef struct body_buffer {
    const uint8_t *data;
    int64_t len;    /* bytes of data */
    int has_prefix; /* compressed bodies: an int64 length precedes the data */
    int64_t prefix;
    int64_t offset; /* in the body */
} body_buffer;

enum { WRITER_OPEN, WRITER_FINISHED, WRITER_FAILED };

struct marble_ipc_writer {
    marble_ipc_sink sink;
    marble_ipc_format format;
    marble_ipc_compression compression;
    int level;
    int alignment;
    int state;
    uint64_t pos; /* bytes written so far */
    struct ArrowSchema schema;
    marble__fb_block *blocks;
    size_t n_blocks, cap_blocks;
    ZSTD_CCtx *zctx;
    marble__fb_builder fb;
    marble__fb_pair *nodes;
    size_t n_nodes, cap_nodes;
    body_buffer *bufs;
    size_t n_bufs, cap_bufs;
    void **owned; /* scratch allocations of the batch being written (marble__arrow_alloc) */
    size_t n_owned, cap_owned;
    void **mallocs; /* compressed buffers of the batch being written (malloc) */
    size_t n_mallocs, cap_mallocs;
};

static const uint8_t zeros[64];

static int grow(void **arr, size_t *cap, size_t need, size_t elem, marble_error *err)
{
    if (need <= *cap) return MARBLE_OK;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *p = realloc(*arr, n * elem);
    if (!p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    *arr = p;
    *cap = n;
    return MARBLE_OK;
}

static int64_t align_up(int64_t v, int64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* ---- output ---------------------------------------------------------------------------------- */

static int emit(marble_ipc_writer *w, const void *data, size_t n, marble_error *err)
{
    if (n == 0) return MARBLE_OK;
    int rc = w->sink.write(w->sink.ctx, data, n, err);
    if (rc != MARBLE_OK) {
        w->state = WRITER_FAILED;
        if (err && err->code != rc) marble_error_set(err, rc, "IPC writer: the sink failed");
        return rc;
    }
    w->pos += n;
    return MARBLE_OK;
}

static int out_zeros(marble_ipc_writer *w, uint64_t n, marble_error *err)
{
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        MARBLE_RETURN_NOT_OK(emit(w, zeros, k, err));
        n -= k;
    }
    return MARBLE_OK;
}

static int out_u32(marble_ipc_writer *w, uint32_t v, marble_error *err)
{
    uint8_t b[4];
    marble__fb_put32(b, v);
    return emit(w, b, 4, err);
}

/* Writes one encapsulated message; *meta_len receives the prefix + padded metadata length. */
static int out_message(marble_ipc_writer *w, const uint8_t *fb, size_t fb_size, int64_t body_len,
                       int32_t *meta_len, marble_error *err)
{
    uint64_t start = w->pos + 8 + fb_size;
    uint64_t pad = (uint64_t)align_up((int64_t)start, w->alignment) - start;
    uint64_t len = fb_size + pad;
    if (len > INT32_MAX - 8)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "IPC writer: metadata too large");
    MARBLE_RETURN_NOT_OK(out_u32(w, MARBLE_IPC_CONTINUATION, err));
    MARBLE_RETURN_NOT_OK(out_u32(w, (uint32_t)len, err));
    MARBLE_RETURN_NOT_OK(emit(w, fb, fb_size, err));
    MARBLE_RETURN_NOT_OK(out_zeros(w, pad, err));
    *meta_len = (int32_t)(len + 8);
    int64_t at = 0;
    for (size_t i = 0; i < w->n_bufs && body_len > 0; i++) {
        const body_buffer *b = &w->bufs[i];
        MARBLE_RETURN_NOT_OK(out_zeros(w, (uint64_t)(b->offset - at), err));
        at = b->offset;
        if (b->has_prefix) {
            uint8_t p[8];
            marble__fb_put64(p, (uint64_t)b->prefix);
            MARBLE_RETURN_NOT_OK(emit(w, p, 8, err));
            at += 8;
        }
        MARBLE_RETURN_NOT_OK(emit(w, b->data, (size_t)b->len, err));
        at += b->len;
    }
    return out_zeros(w, (uint64_t)(body_len - at), err);
}

/* ---- schema metadata ------------------------------------------------------------------------- */

static int build_metadata(marble__fb_builder *fb, const char *metadata, marble__fb_ref *ref,
                          marble_error *err)
{
    marble__arrow_kv *kv = NULL;
    int64_t n = 0;
    *ref = 0;
    MARBLE_RETURN_NOT_OK(marble__arrow_metadata_decode(metadata, &kv, &n, err));
    if (n == 0) {
        free(kv);
        return MARBLE_OK;
    }
    marble__fb_ref *refs = malloc((size_t)n * sizeof *refs);
    if (!refs) {
        free(kv);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    }
    for (int64_t i = 0; i < n; i++) {
        marble__fb_ref k = marble__fb_string(fb, kv[i].key, (size_t)kv[i].key_len);
        marble__fb_ref v = marble__fb_string(fb, kv[i].value, (size_t)kv[i].value_len);
        marble__fb_table_start(fb);
        marble__fb_add_ref(fb, MARBLE_FB_KEYVALUE_KEY, k);
        marble__fb_add_ref(fb, MARBLE_FB_KEYVALUE_VALUE, v);
        refs[i] = marble__fb_table_end(fb);
    }
    *ref = marble__fb_vector_refs(fb, refs, (size_t)n);
    free(refs);
    free(kv);
    return MARBLE_OK;
}

static marble__fb_ref build_type(marble__fb_builder *fb, const marble_arrow_type *t,
                                 uint8_t *type_type)
{
    marble__fb_ref tz = 0;
    if (t->id == MARBLE_ARROW_TIMESTAMP && t->timezone[0])
        tz = marble__fb_string(fb, t->timezone, strlen(t->timezone));
    marble__fb_table_start(fb);
    switch (t->id) {
    case MARBLE_ARROW_NA:
        *type_type = MARBLE_FB_TYPE_NULL;
        break;
    case MARBLE_ARROW_BOOL:
        *type_type = MARBLE_FB_TYPE_BOOL;
        break;
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64:
        *type_type = MARBLE_FB_TYPE_INT;
        marble__fb_add_i32(fb, MARBLE_FB_INT_BIT_WIDTH, t->byte_width * 8);
        marble__fb_add_u8(fb, MARBLE_FB_INT_IS_SIGNED, t->id <= MARBLE_ARROW_INT64);
        break;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        *type_type = MARBLE_FB_TYPE_FLOATING_POINT;
        marble__fb_add_i16(fb, MARBLE_FB_FLOATING_POINT_PRECISION,
                           t->id == MARBLE_ARROW_FLOAT32 ? MARBLE_FB_PRECISION_SINGLE
                                                         : MARBLE_FB_PRECISION_DOUBLE);
        break;
    case MARBLE_ARROW_UTF8:
        *type_type = MARBLE_FB_TYPE_UTF8;
        break;
    case MARBLE_ARROW_LARGE_UTF8:
        *type_type = MARBLE_FB_TYPE_LARGE_UTF8;
        break;
    case MARBLE_ARROW_BINARY:
        *type_type = MARBLE_FB_TYPE_BINARY;
        break;
    case MARBLE_ARROW_LARGE_BINARY:
        *type_type = MARBLE_FB_TYPE_LARGE_BINARY;
        break;
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        *type_type = MARBLE_FB_TYPE_FIXED_SIZE_BINARY;
        marble__fb_add_i32(fb, MARBLE_FB_FIXED_SIZE_BINARY_BYTE_WIDTH, t->byte_width);
        break;
    case MARBLE_ARROW_DATE32:
        *type_type = MARBLE_FB_TYPE_DATE;
        marble__fb_add_i16(fb, MARBLE_FB_DATE_UNIT, MARBLE_FB_DATE_DAY);
        break;
    case MARBLE_ARROW_TIMESTAMP:
        *type_type = MARBLE_FB_TYPE_TIMESTAMP;
        marble__fb_add_i16(fb, MARBLE_FB_TIMESTAMP_UNIT, (int16_t)t->unit);
        if (tz) marble__fb_add_ref(fb, MARBLE_FB_TIMESTAMP_TIMEZONE, tz);
        break;
    case MARBLE_ARROW_STRUCT:
        *type_type = MARBLE_FB_TYPE_STRUCT;
        break;
    }
    return marble__fb_table_end(fb);
}

static int build_field(marble__fb_builder *fb, const struct ArrowSchema *s, int depth,
                       marble__fb_ref *ref, marble_error *err)
{
    marble_arrow_type t;
    uint8_t type_type = 0;
    marble__fb_ref meta, children, *refs = NULL;
    if (depth > MARBLE_IPC_MAX_DEPTH)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "IPC writer: schema nested deeper than %d",
                                MARBLE_IPC_MAX_DEPTH);
    MARBLE_RETURN_NOT_OK(marble__arrow_schema_type(s, &t, err));
    if (s->n_children > 0) {
        refs = malloc((size_t)s->n_children * sizeof *refs);
        if (!refs) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    }
    for (int64_t i = 0; i < s->n_children; i++) {
        int rc = build_field(fb, s->children[i], depth + 1, &refs[i], err);
        if (rc != MARBLE_OK) {
            free(refs);
            return rc;
        }
    }
    children = marble__fb_vector_refs(fb, refs, (size_t)s->n_children);
    free(refs);
    MARBLE_RETURN_NOT_OK(build_metadata(fb, s->metadata, &meta, err));
    const char *name = s->name ? s->name : "";
    marble__fb_ref nm = marble__fb_string(fb, name, strlen(name));
    marble__fb_ref type = build_type(fb, &t, &type_type);
    marble__fb_table_start(fb);
    marble__fb_add_ref(fb, MARBLE_FB_FIELD_NAME, nm);
    marble__fb_add_u8(fb, MARBLE_FB_FIELD_NULLABLE, (s->flags & ARROW_FLAG_NULLABLE) ? 1 : 0);
    marble__fb_add_u8(fb, MARBLE_FB_FIELD_TYPE_TYPE, type_type);
    marble__fb_add_ref(fb, MARBLE_FB_FIELD_TYPE, type);
    marble__fb_add_ref(fb, MARBLE_FB_FIELD_CHILDREN, children);
    if (meta) marble__fb_add_ref(fb, MARBLE_FB_FIELD_CUSTOM_METADATA, meta);
    *ref = marble__fb_table_end(fb);
    return MARBLE_OK;
}

static int build_schema(marble_ipc_writer *w, marble__fb_ref *ref, marble_error *err)
{
    const struct ArrowSchema *s = &w->schema;
    marble__fb_ref meta, fields, features = 0, *refs = NULL;
    if (s->n_children > 0) {
        refs = malloc((size_t)s->n_children * sizeof *refs);
        if (!refs) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    }
    for (int64_t i = 0; i < s->n_children; i++) {
        int rc = build_field(&w->fb, s->children[i], 1, &refs[i], err);
        if (rc != MARBLE_OK) {
            free(refs);
            return rc;
        }
    }
    fields = marble__fb_vector_refs(&w->fb, refs, (size_t)s->n_children);
    free(refs);
    MARBLE_RETURN_NOT_OK(build_metadata(&w->fb, s->metadata, &meta, err));
    if (w->compression != MARBLE_IPC_UNCOMPRESSED) {
        uint8_t f[8];
        marble__fb_put64(f, MARBLE_FB_FEATURE_COMPRESSED_BODY);
        features = marble__fb_vector_raw(&w->fb, f, 8, 1, 8);
    }
    marble__fb_table_start(&w->fb);
    marble__fb_add_i16(&w->fb, MARBLE_FB_SCHEMA_ENDIANNESS, MARBLE_FB_ENDIAN_LITTLE);
    marble__fb_add_ref(&w->fb, MARBLE_FB_SCHEMA_FIELDS, fields);
    if (meta) marble__fb_add_ref(&w->fb, MARBLE_FB_SCHEMA_CUSTOM_METADATA, meta);
    if (features) marble__fb_add_ref(&w->fb, MARBLE_FB_SCHEMA_FEATURES, features);
    *ref = marble__fb_table_end(&w->fb);
    return MARBLE_OK;
}

static int finish_message(marble_ipc_writer *w, uint8_t header_type, marble__fb_ref header,
                          int64_t body_len, const uint8_t **data, size_t *size, marble_error *err)
{
    marble__fb_table_start(&w->fb);
    marble__fb_add_i16(&w->fb, MARBLE_FB_MESSAGE_VERSION, MARBLE_FB_V5);
    marble__fb_add_u8(&w->fb, MARBLE_FB_MESSAGE_HEADER_TYPE, header_type);
    marble__fb_add_ref(&w->fb, MARBLE_FB_MESSAGE_HEADER, header);
    marble__fb_add_i64(&w->fb, MARBLE_FB_MESSAGE_BODY_LENGTH, body_len);
    marble__fb_ref msg = marble__fb_table_end(&w->fb);
    return marble__fb_finish(&w->fb, msg, data, size, err);
}

static int write_schema_message(marble_ipc_writer *w, marble_error *err)
{
    marble__fb_ref schema;
    const uint8_t *data;
    size_t size;
    int32_t meta_len;
    marble__fb_builder_free(&w->fb);
    w->n_bufs = 0;
    MARBLE_RETURN_NOT_OK(build_schema(w, &schema, err));
    MARBLE_RETURN_NOT_OK(finish_message(w, MARBLE_FB_HEADER_SCHEMA, schema, 0, &data, &size, err));
    return out_message(w, data, size, 0, &meta_len, err);
}

/* ---- record batches -------------------------------------------------------------------------- */

static void batch_reset(marble_ipc_writer *w)
{
    for (size_t i = 0; i < w->n_owned; i++)
        marble__arrow_free(w->owned[i]);
    for (size_t i = 0; i < w->n_mallocs; i++)
        free(w->mallocs[i]);
    w->n_owned = w->n_mallocs = w->n_nodes = w->n_bufs = 0;
}

static int add_node(marble_ipc_writer *w, int64_t length, int64_t null_count, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(
        grow((void **)&w->nodes, &w->cap_nodes, w->n_nodes + 1, sizeof *w->nodes, err));
    w->nodes[w->n_nodes].a = length;
    w->nodes[w->n_nodes].b = null_count;
    w->n_nodes++;
    return MARBLE_OK;
}

static int add_buffer(marble_ipc_writer *w, const void *data, int64_t len, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(
        grow((void **)&w->bufs, &w->cap_bufs, w->n_bufs + 1, sizeof *w->bufs, err));
    body_buffer *b = &w->bufs[w->n_bufs++];
    memset(b, 0, sizeof *b);
    b->data = len > 0 ? data : NULL;
    b->len = len > 0 ? len : 0;
    return MARBLE_OK;
}

static void *scratch(marble_ipc_writer *w, int64_t n, marble_error *err)
{
    if (grow((void **)&w->owned, &w->cap_owned, w->n_owned + 1, sizeof *w->owned, err)) return NULL;
    void *p = marble__arrow_alloc(n);
    if (!p) {
        marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory (%lld bytes)",
                         (long long)n);
        return NULL;
    }
    w->owned[w->n_owned++] = p;
    return p;
}

static int add_bitmap(marble_ipc_writer *w, const uint8_t *bits, int64_t offset, int64_t length,
                      marble_error *err)
{
    int64_t n = marble__arrow_bitmap_bytes(length);
    if (length == 0) return add_buffer(w, NULL, 0, err);
    if ((offset & 7) == 0) return add_buffer(w, bits + offset / 8, n, err);
    uint8_t *tmp = scratch(w, n, err);
    if (!tmp) return err ? err->code : MARBLE_ERR_NO_MEMORY;
    marble__arrow_bitmap_copy(tmp, bits, offset, length);
    return add_buffer(w, tmp, n, err);
}

static int add_offsets(marble_ipc_writer *w, const marble__arrow_layout *l,
                       const struct ArrowArray *a, int64_t offset, int64_t length,
                       marble_error *err)
{
    static const int64_t zero_offset = 0;
    int ob = l->offset_bytes;
    if (length == 0) {
        MARBLE_RETURN_NOT_OK(add_buffer(w, &zero_offset, ob, err));
        return add_buffer(w, NULL, 0, err);
    }
    const uint8_t *offs = a->buffers[1];
    int64_t first = marble__arrow_offset_at(offs, ob, offset);
    int64_t last = marble__arrow_offset_at(offs, ob, offset + length);
    if (first == 0) {
        MARBLE_RETURN_NOT_OK(add_buffer(w, offs + offset * ob, (length + 1) * ob, err));
    } else {
        uint8_t *tmp = scratch(w, (length + 1) * ob, err);
        if (!tmp) return err ? err->code : MARBLE_ERR_NO_MEMORY;
        for (int64_t i = 0; i <= length; i++) {
            int64_t v = marble__arrow_offset_at(offs, ob, offset + i) - first;
            if (ob == 4)
                ((int32_t *)tmp)[i] = (int32_t)v;
            else
                ((int64_t *)tmp)[i] = v;
        }
        MARBLE_RETURN_NOT_OK(add_buffer(w, tmp, (length + 1) * ob, err));
    }
    const uint8_t *data = a->buffers[2];
    return add_buffer(w, data ? data + first : NULL, last - first, err);
}

/* Flattens one column (pre-order): its node, its buffers, then its children. `base` is the
 * parent's effective offset, added to the array's own. */
static int collect(marble_ipc_writer *w, const struct ArrowSchema *s, const struct ArrowArray *a,
                   int64_t base, int64_t length, int depth, marble_error *err)
{
    marble_arrow_type t;
    if (depth > MARBLE_IPC_MAX_DEPTH)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "IPC writer: batch nested deeper than %d",
                                MARBLE_IPC_MAX_DEPTH);
    MARBLE_RETURN_NOT_OK(marble__arrow_schema_type(s, &t, err));
    marble__arrow_layout l = marble__arrow_layout_of(&t);
    int64_t off = a->offset + base;
    if (t.id == MARBLE_ARROW_NA) return add_node(w, length, length, err);

    const uint8_t *validity = a->buffers[0];
    int64_t nulls = 0;
    if (validity && a->null_count != 0)
        nulls = marble__arrow_bitmap_count_zeros(validity, off, length);
    MARBLE_RETURN_NOT_OK(add_node(w, length, nulls, err));
    if (nulls > 0)
        MARBLE_RETURN_NOT_OK(add_bitmap(w, validity, off, length, err));
    else
        MARBLE_RETURN_NOT_OK(add_buffer(w, NULL, 0, err));

    if (l.value_bits == 1) return add_bitmap(w, a->buffers[1], off, length, err);
    if (l.value_bits) {
        int64_t width = l.value_bits / 8;
        const uint8_t *values = a->buffers[1];
        return add_buffer(w, values ? values + off * width : NULL, length * width, err);
    }
    if (l.offset_bytes) return add_offsets(w, &l, a, off, length, err);
    for (int64_t i = 0; i < a->n_children; i++)
        MARBLE_RETURN_NOT_OK(
            collect(w, s->children[i], a->children[i], off, length, depth + 1, err));
    return MARBLE_OK;
}

static int compress_one(marble_ipc_writer *w, body_buffer *b, marble_error *err)
{
    size_t bound, n;
    if (b->len == 0) return MARBLE_OK;
    LZ4F_preferences_t prefs;
    if (w->compression == MARBLE_IPC_LZ4_FRAME) {
        memset(&prefs, 0, sizeof prefs);
        prefs.compressionLevel = w->level;
        prefs.frameInfo.contentSize = (unsigned long long)b->len;
        bound = LZ4F_compressFrameBound((size_t)b->len, &prefs);
    } else {
        bound = ZSTD_compressBound((size_t)b->len);
    }
    MARBLE_RETURN_NOT_OK(
        grow((void **)&w->mallocs, &w->cap_mallocs, w->n_mallocs + 1, sizeof *w->mallocs, err));
    uint8_t *dst = malloc(bound);
    if (!dst) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    w->mallocs[w->n_mallocs++] = dst;
    if (w->compression == MARBLE_IPC_LZ4_FRAME) {
        n = LZ4F_compressFrame(dst, bound, b->data, (size_t)b->len, &prefs);
        if (LZ4F_isError(n))
            return marble_error_set(err, MARBLE_ERR_INTERNAL, "IPC writer: LZ4 frame: %s",
                                    LZ4F_getErrorName(n));
    } else {
        n = ZSTD_compressCCtx(w->zctx, dst, bound, b->data, (size_t)b->len, w->level);
        if (ZSTD_isError(n))
            return marble_error_set(err, MARBLE_ERR_INTERNAL, "IPC writer: ZSTD: %s",
                                    ZSTD_getErrorName(n));
    }
    b->has_prefix = 1;
    if ((int64_t)n >= b->len) {
        b->prefix = MARBLE_IPC_UNCOMPRESSED_MARK;
        return MARBLE_OK;
    }
    b->prefix = b->len;
    b->data = dst;
    b->len = (int64_t)n;
    return MARBLE_OK;
}

static int record_block(marble_ipc_writer *w, uint64_t offset, int32_t meta_len, int64_t body_len,
                        marble_error *err)
{
    if (w->format != MARBLE_IPC_FILE) return MARBLE_OK;
    MARBLE_RETURN_NOT_OK(
        grow((void **)&w->blocks, &w->cap_blocks, w->n_blocks + 1, sizeof *w->blocks, err));
    marble__fb_block *b = &w->blocks[w->n_blocks++];
    b->offset = (int64_t)offset;
    b->metadata_length = meta_len;
    b->body_length = body_len;
    return MARBLE_OK;
}

static int write_batch(marble_ipc_writer *w, const struct ArrowArray *batch, marble_error *err)
{
    const struct ArrowSchema *s = &w->schema;
    for (int64_t i = 0; i < s->n_children; i++)
        MARBLE_RETURN_NOT_OK(
            collect(w, s->children[i], batch->children[i], batch->offset, batch->length, 1, err));
    int64_t at = 0;
    for (size_t i = 0; i < w->n_bufs; i++) {
        body_buffer *b = &w->bufs[i];
        if (w->compression != MARBLE_IPC_UNCOMPRESSED)
            MARBLE_RETURN_NOT_OK(compress_one(w, b, err));
        at = align_up(at, w->alignment);
        b->offset = at;
        at += b->len + (b->has_prefix ? MARBLE_IPC_COMPRESSED_PREFIX : 0);
    }
    int64_t body_len = align_up(at, w->alignment);

    uint8_t *raw = malloc((w->n_nodes > w->n_bufs ? w->n_nodes : w->n_bufs) * 16 + 16);
    if (!raw) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    marble__fb_builder_free(&w->fb);
    for (size_t i = 0; i < w->n_nodes; i++) {
        marble__fb_put64(raw + 16 * i, (uint64_t)w->nodes[i].a);
        marble__fb_put64(raw + 16 * i + 8, (uint64_t)w->nodes[i].b);
    }
    marble__fb_ref nodes = marble__fb_vector_raw(&w->fb, raw, 16, w->n_nodes, 8);
    for (size_t i = 0; i < w->n_bufs; i++) {
        const body_buffer *b = &w->bufs[i];
        marble__fb_put64(raw + 16 * i, (uint64_t)b->offset);
        marble__fb_put64(raw + 16 * i + 8,
                         (uint64_t)(b->len + (b->has_prefix ? MARBLE_IPC_COMPRESSED_PREFIX : 0)));
    }
    marble__fb_ref buffers = marble__fb_vector_raw(&w->fb, raw, 16, w->n_bufs, 8);
    free(raw);
    marble__fb_ref compression = 0;
    if (w->compression != MARBLE_IPC_UNCOMPRESSED) {
        marble__fb_table_start(&w->fb);
        marble__fb_add_u8(&w->fb, MARBLE_FB_BODY_COMPRESSION_CODEC,
                          w->compression == MARBLE_IPC_LZ4_FRAME ? MARBLE_FB_CODEC_LZ4_FRAME
                                                                 : MARBLE_FB_CODEC_ZSTD);
        marble__fb_add_u8(&w->fb, MARBLE_FB_BODY_COMPRESSION_METHOD, MARBLE_FB_METHOD_BUFFER);
        compression = marble__fb_table_end(&w->fb);
    }
    marble__fb_table_start(&w->fb);
    marble__fb_add_i64(&w->fb, MARBLE_FB_RECORD_BATCH_LENGTH, batch->length);
    marble__fb_add_ref(&w->fb, MARBLE_FB_RECORD_BATCH_NODES, nodes);
    marble__fb_add_ref(&w->fb, MARBLE_FB_RECORD_BATCH_BUFFERS, buffers);
    if (compression) marble__fb_add_ref(&w->fb, MARBLE_FB_RECORD_BATCH_COMPRESSION, compression);
    marble__fb_ref rb = marble__fb_table_end(&w->fb);

    const uint8_t *data;
    size_t size;
    int32_t meta_len;
    uint64_t start = w->pos;
    MARBLE_RETURN_NOT_OK(
        finish_message(w, MARBLE_FB_HEADER_RECORD_BATCH, rb, body_len, &data, &size, err));
    MARBLE_RETURN_NOT_OK(out_message(w, data, size, body_len, &meta_len, err));
    return record_block(w, start, meta_len, body_len, err);
}

/* ---- public ---------------------------------------------------------------------------------- */

static int check_open(const marble_ipc_writer *w, marble_error *err)
{
    if (!w) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "IPC writer is NULL");
    if (w->state == WRITER_FINISHED)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "IPC writer is already finished");
    if (w->state == WRITER_FAILED)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "IPC writer failed earlier (its output is incomplete)");
    return MARBLE_OK;
}

int marble_ipc_writer_create(marble_ipc_sink sink, const struct ArrowSchema *schema,
                             const marble_ipc_write_options *opts, marble_ipc_writer **out,
                             marble_error *err)
{
    marble_ipc_write_options o = {MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 0, 8};
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "output pointer is NULL");
    *out = NULL;
    if (!sink.write) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "sink has no write");
    if (opts) o = *opts;
    if (o.alignment == 0) o.alignment = 8;
    if (o.format != MARBLE_IPC_STREAM && o.format != MARBLE_IPC_FILE)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "unknown IPC format %d",
                                (int)o.format);
    if (o.compression != MARBLE_IPC_UNCOMPRESSED && o.compression != MARBLE_IPC_LZ4_FRAME &&
        o.compression != MARBLE_IPC_ZSTD)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "unknown IPC compression %d",
                                (int)o.compression);
    if (o.alignment != 8 && o.alignment != 64)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "IPC alignment %d is not 8 or 64",
                                o.alignment);
    MARBLE_RETURN_NOT_OK(marble_arrow_schema_validate(schema, err));
    if (strcmp(schema->format, "+s") != 0)
        return marble_error_set(
            err, MARBLE_ERR_INVALID_ARGUMENT,
            "IPC writer: the schema's format is \"%.32s\", not a struct (\"+s\")", schema->format);
    marble_ipc_writer *w = calloc(1, sizeof *w);
    if (!w) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    w->sink = sink;
    w->format = o.format;
    w->compression = o.compression;
    w->level = o.compression_level;
    w->alignment = o.alignment;
    marble__fb_builder_init(&w->fb);
    int rc = marble_arrow_schema_copy(schema, &w->schema, err);
    if (rc == MARBLE_OK && w->compression == MARBLE_IPC_ZSTD) {
        w->zctx = ZSTD_createCCtx();
        if (!w->zctx) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    }
    if (rc == MARBLE_OK && w->format == MARBLE_IPC_FILE) {
        static const uint8_t header[MARBLE_IPC_FILE_HEADER_LEN] = "ARROW1";
        rc = emit(w, header, sizeof header, err);
    }
    if (rc == MARBLE_OK) rc = write_schema_message(w, err);
    if (rc != MARBLE_OK) {
        marble_ipc_writer_destroy(w);
        return rc;
    }
    *out = w;
    return MARBLE_OK;
}

int marble_ipc_writer_write(marble_ipc_writer *w, const struct ArrowArray *batch, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_open(w, err));
    if (!batch) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "batch is NULL");
    MARBLE_RETURN_NOT_OK(
        marble_arrow_array_validate(&w->schema, batch, MARBLE_VALIDATE_DEFAULT, err));
    if (batch->buffers[0] && batch->null_count != 0 &&
        marble__arrow_bitmap_count_zeros(batch->buffers[0], batch->offset, batch->length) > 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "IPC writer: the batch has top-level nulls, which a record batch "
                                "cannot hold");
    int rc = write_batch(w, batch, err);
    batch_reset(w);
    return rc;
}

static int write_footer(marble_ipc_writer *w, marble_error *err)
{
    marble__fb_ref schema;
    const uint8_t *data;
    size_t size;
    marble__fb_builder_free(&w->fb);
    MARBLE_RETURN_NOT_OK(build_schema(w, &schema, err));
    uint8_t *raw = calloc(w->n_blocks + 1, MARBLE_FB_BLOCK_SIZE);
    if (!raw) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC writer: out of memory");
    for (size_t i = 0; i < w->n_blocks; i++) {
        uint8_t *p = raw + MARBLE_FB_BLOCK_SIZE * i;
        marble__fb_put64(p, (uint64_t)w->blocks[i].offset);
        marble__fb_put32(p + 8, (uint32_t)w->blocks[i].metadata_length);
        marble__fb_put64(p + 16, (uint64_t)w->blocks[i].body_length);
    }
    marble__fb_ref dicts = marble__fb_vector_raw(&w->fb, NULL, MARBLE_FB_BLOCK_SIZE, 0, 8);
    marble__fb_ref batches =
        marble__fb_vector_raw(&w->fb, raw, MARBLE_FB_BLOCK_SIZE, w->n_blocks, 8);
    free(raw);
    marble__fb_table_start(&w->fb);
    marble__fb_add_i16(&w->fb, MARBLE_FB_FOOTER_VERSION, MARBLE_FB_V5);
    marble__fb_add_ref(&w->fb, MARBLE_FB_FOOTER_SCHEMA, schema);
    marble__fb_add_ref(&w->fb, MARBLE_FB_FOOTER_DICTIONARIES, dicts);
    marble__fb_add_ref(&w->fb, MARBLE_FB_FOOTER_RECORD_BATCHES, batches);
    marble__fb_ref footer = marble__fb_table_end(&w->fb);
    MARBLE_RETURN_NOT_OK(marble__fb_finish(&w->fb, footer, &data, &size, err));
    MARBLE_RETURN_NOT_OK(emit(w, data, size, err));
    MARBLE_RETURN_NOT_OK(out_u32(w, (uint32_t)size, err));
    return emit(w, MARBLE_IPC_MAGIC, MARBLE_IPC_MAGIC_LEN, err);
}

int marble_ipc_writer_finish(marble_ipc_writer *w, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_open(w, err));
    int rc = out_u32(w, MARBLE_IPC_CONTINUATION, err);
    if (rc == MARBLE_OK) rc = out_u32(w, 0, err);
    if (rc == MARBLE_OK && w->format == MARBLE_IPC_FILE) rc = write_footer(w, err);
    w->state = rc == MARBLE_OK ? WRITER_FINISHED : WRITER_FAILED;
    return rc;
}

int marble_ipc_writer_finish_appendix(marble_ipc_writer *w, const void *appendix, size_t len,
                                      marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_open(w, err));
    if (w->format != MARBLE_IPC_FILE)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "IPC writer: an appendix needs the file format");
    if (len > 0 && !appendix)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "IPC writer: appendix is NULL");
    int rc = out_u32(w, MARBLE_IPC_CONTINUATION, err);
    if (rc == MARBLE_OK) rc = out_u32(w, 0, err);
    if (rc == MARBLE_OK) rc = emit(w, appendix, len, err);
    if (rc == MARBLE_OK) rc = out_zeros(w, (uint64_t)align_up((int64_t)len, 8) - len, err);
    if (rc == MARBLE_OK) rc = write_footer(w, err);
    w->state = rc == MARBLE_OK ? WRITER_FINISHED : WRITER_FAILED;
    return rc;
}

void marble_ipc_writer_destroy(marble_ipc_writer *w)
{
    if (!w) return;
    batch_reset(w);
    marble_arrow_schema_release(&w->schema);
    marble__fb_builder_free(&w->fb);
    ZSTD_freeCCtx(w->zctx);
    free(w->blocks);
    free(w->nodes);
    free(w->bufs);
    free(w->owned);
    free(w->mallocs);
    free(w);
}

/* ---- memory sink ----------------------------------------------------------------------------- */

static int buffer_write(void *ctx, const void *data, size_t n, marble_error *err)
{
    marble_ipc_buffer *b = ctx;
    if (n == 0) return MARBLE_OK;
    if (n > SIZE_MAX / 2 - b->size)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "IPC buffer sink: size overflow");
    if (b->cap - b->size < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->size < n)
            cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (!p)
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                    "IPC buffer sink: out of memory growing to %zu bytes", cap);
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->size, data, n);
    b->size += n;
    return MARBLE_OK;
}

marble_ipc_sink marble_ipc_buffer_sink(marble_ipc_buffer *buf)
{
    marble_ipc_sink s = {buffer_write, buf};
    return s;
}
