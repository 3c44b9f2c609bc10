/* Arrow IPC reader: file and stream formats from memory, zero-copy record batches, LZ4_FRAME and
 * ZSTD bodies, every offset and length checked before use; an ArrowArrayStream over the batches. */
#include "arrow/arrow_internal.h"
#include "arrow/flatbuf.h"
#include "arrow/ipc_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <lz4frame.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* The most a compressed buffer may claim to expand to, per compressed byte: LZ4 frames reach at
 * most ~255:1 and ZSTD blocks (a 3-byte header and one RLE byte for 128 KiB) ~32768:1; larger
 * claims are corrupt, and refusing them keeps hostile input from forcing huge allocations. */
#define LZ4_MAX_RATIO 256
#define ZSTD_MAX_RATIO 65536

/* Thread safety: the count is touched by the reader and by arrays released on any thread; the
 * final decrement is acq_rel so that every user's reads happen before the owner is released. */
typedef struct source_ref {
    atomic_long refs;
    marble_ipc_source src;
} source_ref;

static void source_retain(void *ctx)
{
    source_ref *s = ctx;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void source_release(void *ctx)
{
    source_ref *s = ctx;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    if (s->src.release) s->src.release(s->src.owner);
    free(s);
}

typedef struct column_info {
    const struct ArrowSchema *schema;
    marble_arrow_type type;
    marble__arrow_layout layout;
} column_info;

typedef struct message_loc {
    uint64_t meta_off, meta_len; /* the Message flatbuffer (with its padding) */
    uint64_t body_off, body_len;
} message_loc;

struct marble_ipc_reader {
    atomic_long refs; /* the handle and each stream made from it; same ordering as source_ref */
    source_ref *src;
    const uint8_t *data;
    uint64_t size;
    marble_ipc_format format;
    struct ArrowSchema schema;
    column_info *cols; /* the schema's fields in pre-order */
    size_t n_cols;
    size_t n_buffers;         /* body buffers per batch */
    marble__fb_block *blocks; /* file: from the footer */
    uint64_t data_end;        /* file: where the footer starts */
    message_loc *msgs;        /* stream: the record batch messages */
    int64_t n_batches;
};

static _Alignas(64) const uint8_t empty_buffer[64];

static int corrupt(marble_error *err, const char *fmt, ...) MARBLE_PRINTF(2, 3);

static int corrupt(marble_error *err, const char *fmt, ...)
{
    char msg[MARBLE_ERROR_MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return marble_error_set(err, MARBLE_ERR_CORRUPTION, "IPC: %s", msg);
}

/* Prefixes err's message with `what` (keeping its code). */
static int wrap(marble_error *err, int rc, const char *fmt, ...) MARBLE_PRINTF(3, 4);

static int wrap(marble_error *err, int rc, const char *fmt, ...)
{
    if (!err) return rc;
    char what[128], msg[MARBLE_ERROR_MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    memcpy(msg, err->message, sizeof msg);
    return marble_error_set(err, rc, "%s: %s", what, msg);
}

/* ---- messages -------------------------------------------------------------------------------- */

/* Reads the message prefix at pos (limit: end of the region). *eos is set at an end-of-stream
 * marker; otherwise *loc receives the metadata's place (body unknown yet). */
static int read_prefix(const marble_ipc_reader *r, uint64_t pos, uint64_t limit, int *eos,
                       message_loc *loc, marble_error *err)
{
    *eos = 0;
    if (limit - pos < 4)
        return corrupt(err, "message at offset %llu: truncated length prefix",
                       (unsigned long long)pos);
    uint32_t v = marble__fb_le32(r->data + pos);
    uint64_t at = pos + 4;
    if (v == MARBLE_IPC_CONTINUATION) {
        if (limit - pos < 8)
            return corrupt(err, "message at offset %llu: truncated length prefix",
                           (unsigned long long)pos);
        v = marble__fb_le32(r->data + pos + 4);
        at = pos + 8;
    }
    int32_t len = (int32_t)v;
    if (len == 0) {
        *eos = 1;
        loc->meta_off = at;
        return MARBLE_OK;
    }
    if (len < 0)
        return corrupt(err, "message at offset %llu: negative metadata length %d",
                       (unsigned long long)pos, (int)len);
    if ((uint64_t)len > limit - at)
        return corrupt(err,
                       "message at offset %llu: metadata (%d bytes) runs past the end of the data",
                       (unsigned long long)pos, (int)len);
    loc->meta_off = at;
    loc->meta_len = (uint64_t)len;
    return MARBLE_OK;
}

static int check_version(int16_t version, const char *what, marble_error *err)
{
    if (version < MARBLE_FB_V4)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "IPC: %s has metadata version V%d; V4 or V5 is needed", what,
                                (int)version + 1);
    if (version > MARBLE_FB_V5)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "IPC: %s has unknown metadata version %d", what, (int)version);
    return MARBLE_OK;
}

/* Parses the Message at loc and places its body (which must end by `limit`). */
static int read_message(const marble_ipc_reader *r, message_loc *loc, uint64_t limit,
                        marble__fb_message *msg, marble_error *err)
{
    int rc = marble__fb_read_message(r->data + loc->meta_off, (size_t)loc->meta_len, msg, err);
    if (rc != MARBLE_OK)
        return wrap(err, rc, "IPC: message at offset %llu", (unsigned long long)loc->meta_off);
    MARBLE_RETURN_NOT_OK(check_version(msg->version, "a message", err));
    if (msg->body_length < 0)
        return corrupt(err, "message at offset %llu: negative bodyLength %lld",
                       (unsigned long long)loc->meta_off, (long long)msg->body_length);
    loc->body_off = loc->meta_off + loc->meta_len;
    if ((uint64_t)msg->body_length > limit - loc->body_off)
        return corrupt(err,
                       "message at offset %llu: body (%lld bytes) runs past the end of the data",
                       (unsigned long long)loc->meta_off, (long long)msg->body_length);
    loc->body_len = (uint64_t)msg->body_length;
    if (!msg->has_header)
        return corrupt(err, "message at offset %llu has no header (type %s)",
                       (unsigned long long)loc->meta_off, marble__fb_header_name(msg->header_type));
    return MARBLE_OK;
}

/* ---- schema ---------------------------------------------------------------------------------- */

typedef struct schema_ctx {
    marble_ipc_reader *r;
    size_t n_fields;
} schema_ctx;

static int make_metadata(const marble__fb_vector *v, char **out, marble_error *err)
{
    *out = NULL;
    if (v->count == 0) return MARBLE_OK;
    marble__arrow_kv *kv = calloc(v->count, sizeof *kv);
    if (!kv) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC: out of memory");
    int rc = MARBLE_OK;
    for (uint32_t i = 0; i < v->count && rc == MARBLE_OK; i++) {
        marble__fb_table t;
        marble__fb_keyvalue p;
        rc = marble__fb_vector_table(v, i, "KeyValue", &t, err);
        if (rc == MARBLE_OK) rc = marble__fb_read_keyvalue(&t, &p, err);
        if (rc != MARBLE_OK) break;
        if (p.key_len > INT32_MAX || p.value_len > INT32_MAX) {
            rc = corrupt(err, "%s.%s entry %u is too long", v->table, v->field, (unsigned)i);
            break;
        }
        kv[i].key = p.key ? p.key : "";
        kv[i].key_len = (int32_t)p.key_len;
        kv[i].value = p.value ? p.value : "";
        kv[i].value_len = (int32_t)p.value_len;
    }
    if (rc == MARBLE_OK) rc = marble__arrow_metadata_encode(kv, v->count, out, NULL, err);
    free(kv);
    return rc;
}

static int type_format(const marble__fb_field *f, const char *name, char *fmt, size_t cap,
                       marble_error *err)
{
    int32_t i32 = 0;
    int16_t i16 = 0;
    uint8_t u8 = 0;
    const char *tz;
    size_t tz_len;
    const marble__fb_table *t = f->has_type ? &f->type : NULL;
    const char *tn = marble__fb_type_name(f->type_type);
    switch (f->type_type) {
    case MARBLE_FB_TYPE_NULL:
        snprintf(fmt, cap, "n");
        return MARBLE_OK;
    case MARBLE_FB_TYPE_BOOL:
        snprintf(fmt, cap, "b");
        return MARBLE_OK;
    case MARBLE_FB_TYPE_BINARY:
        snprintf(fmt, cap, "z");
        return MARBLE_OK;
    case MARBLE_FB_TYPE_UTF8:
        snprintf(fmt, cap, "u");
        return MARBLE_OK;
    case MARBLE_FB_TYPE_LARGE_BINARY:
        snprintf(fmt, cap, "Z");
        return MARBLE_OK;
    case MARBLE_FB_TYPE_LARGE_UTF8:
        snprintf(fmt, cap, "U");
        return MARBLE_OK;
    case MARBLE_FB_TYPE_STRUCT:
        snprintf(fmt, cap, "+s");
        return MARBLE_OK;
    case MARBLE_FB_TYPE_NONE:
        return corrupt(err, "field '%.64s' has no type", name);
    default:
        break;
    }
    if (!t &&
        (f->type_type == MARBLE_FB_TYPE_INT || f->type_type == MARBLE_FB_TYPE_FLOATING_POINT ||
         f->type_type == MARBLE_FB_TYPE_FIXED_SIZE_BINARY || f->type_type == MARBLE_FB_TYPE_DATE ||
         f->type_type == MARBLE_FB_TYPE_TIMESTAMP))
        return corrupt(err, "field '%.64s': type %s has no table", name, tn);
    switch (f->type_type) {
    case MARBLE_FB_TYPE_INT: {
        static const char fmts[2][4] = {{'C', 'S', 'I', 'L'}, {'c', 's', 'i', 'l'}};
        MARBLE_RETURN_NOT_OK(
            marble__fb_get_i32(t, MARBLE_FB_INT_BIT_WIDTH, "bitWidth", 0, &i32, err));
        MARBLE_RETURN_NOT_OK(
            marble__fb_get_u8(t, MARBLE_FB_INT_IS_SIGNED, "is_signed", 0, &u8, err));
        int k = i32 == 8 ? 0 : i32 == 16 ? 1 : i32 == 32 ? 2 : i32 == 64 ? 3 : -1;
        if (k < 0)
            return corrupt(err, "field '%.64s': Int bitWidth %d is not 8, 16, 32 or 64", name,
                           (int)i32);
        snprintf(fmt, cap, "%c", fmts[u8 ? 1 : 0][k]);
        return MARBLE_OK;
    }
    case MARBLE_FB_TYPE_FLOATING_POINT:
        MARBLE_RETURN_NOT_OK(marble__fb_get_i16(t, MARBLE_FB_FLOATING_POINT_PRECISION, "precision",
                                                MARBLE_FB_PRECISION_HALF, &i16, err));
        if (i16 == MARBLE_FB_PRECISION_SINGLE) {
            snprintf(fmt, cap, "f");
            return MARBLE_OK;
        }
        if (i16 == MARBLE_FB_PRECISION_DOUBLE) {
            snprintf(fmt, cap, "g");
            return MARBLE_OK;
        }
        if (i16 == MARBLE_FB_PRECISION_HALF)
            return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                    "IPC: field '%.64s': float16 is not supported", name);
        return corrupt(err, "field '%.64s': unknown FloatingPoint precision %d", name, (int)i16);
    case MARBLE_FB_TYPE_FIXED_SIZE_BINARY:
        MARBLE_RETURN_NOT_OK(marble__fb_get_i32(t, MARBLE_FB_FIXED_SIZE_BINARY_BYTE_WIDTH,
                                                "byteWidth", 0, &i32, err));
        if (i32 <= 0)
            return corrupt(err, "field '%.64s': FixedSizeBinary byteWidth %d is not positive", name,
                           (int)i32);
        if (i32 > INT32_MAX / 8)
            return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                    "IPC: field '%.64s': FixedSizeBinary byteWidth %d is too large",
                                    name, (int)i32);
        snprintf(fmt, cap, "w:%d", (int)i32);
        return MARBLE_OK;
    case MARBLE_FB_TYPE_DATE:
        MARBLE_RETURN_NOT_OK(marble__fb_get_i16(t, MARBLE_FB_DATE_UNIT, "unit",
                                                MARBLE_FB_DATE_MILLISECOND, &i16, err));
        if (i16 == MARBLE_FB_DATE_DAY) {
            snprintf(fmt, cap, "tdD");
            return MARBLE_OK;
        }
        if (i16 == MARBLE_FB_DATE_MILLISECOND)
            return marble_error_set(
                err, MARBLE_ERR_UNSUPPORTED,
                "IPC: field '%.64s': date64 (Date MILLISECOND) is not supported", name);
        return corrupt(err, "field '%.64s': unknown Date unit %d", name, (int)i16);
    case MARBLE_FB_TYPE_TIMESTAMP:
        MARBLE_RETURN_NOT_OK(marble__fb_get_i16(t, MARBLE_FB_TIMESTAMP_UNIT, "unit", 0, &i16, err));
        MARBLE_RETURN_NOT_OK(
            marble__fb_get_string(t, MARBLE_FB_TIMESTAMP_TIMEZONE, "timezone", &tz, &tz_len, err));
        if (i16 < 0 || i16 > 3)
            return corrupt(err, "field '%.64s': unknown Timestamp unit %d", name, (int)i16);
        if (tz && (tz_len >= sizeof(((marble_arrow_type *)0)->timezone) || memchr(tz, 0, tz_len)))
            return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                    "IPC: field '%.64s': timezone longer than 63 bytes or with NUL",
                                    name);
        snprintf(fmt, cap, "ts%c:%s", "smun"[i16], tz ? tz : "");
        return MARBLE_OK;
    default:
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "IPC: field '%.64s' has type %s, which is not supported", name, tn);
    }
}

/* Fills `out` (zeroed) from the Field table t. */
static int parse_field(schema_ctx *c, const marble__fb_table *t, struct ArrowSchema *out, int depth,
                       marble_error *err)
{
    marble__fb_field f;
    char fmt[96], name_buf[64];
    char *meta = NULL;
    if (depth > MARBLE_IPC_MAX_DEPTH)
        return corrupt(err, "schema nested deeper than %d", MARBLE_IPC_MAX_DEPTH);
    if (++c->n_fields > MARBLE_IPC_MAX_FIELDS)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "IPC: schema has more than %d fields",
                                MARBLE_IPC_MAX_FIELDS);
    MARBLE_RETURN_NOT_OK(marble__fb_read_field(t, &f, err));
    const char *name = f.name ? f.name : "";
    snprintf(name_buf, sizeof name_buf, "%s", name);
    if (f.has_dictionary)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "IPC: field '%.64s' is dictionary-encoded, which is not supported",
                                name_buf);
    MARBLE_RETURN_NOT_OK(type_format(&f, name_buf, fmt, sizeof fmt, err));
    uint32_t n_children = f.type_type == MARBLE_FB_TYPE_STRUCT ? f.children.count : 0;
    if (f.type_type != MARBLE_FB_TYPE_STRUCT && f.children.count != 0)
        return corrupt(err, "field '%.64s' of type %s has %u children", name_buf,
                       marble__fb_type_name(f.type_type), (unsigned)f.children.count);
    MARBLE_RETURN_NOT_OK(make_metadata(&f.custom_metadata, &meta, err));
    int rc = marble__arrow_schema_init(out, fmt, name, meta, f.nullable ? ARROW_FLAG_NULLABLE : 0,
                                       n_children, err);
    free(meta);
    if (rc != MARBLE_OK) return rc;
    for (uint32_t i = 0; i < n_children; i++) {
        marble__fb_table ct;
        MARBLE_RETURN_NOT_OK(marble__fb_vector_table(&f.children, i, "Field", &ct, err));
        MARBLE_RETURN_NOT_OK(parse_field(c, &ct, out->children[i], depth + 1, err));
    }
    return MARBLE_OK;
}

static int flatten(marble_ipc_reader *r, const struct ArrowSchema *s, marble_error *err)
{
    column_info *ci = &r->cols[r->n_cols++];
    ci->schema = s;
    MARBLE_RETURN_NOT_OK(marble__arrow_schema_type(s, &ci->type, err));
    ci->layout = marble__arrow_layout_of(&ci->type);
    r->n_buffers += (size_t)ci->layout.n_buffers;
    for (int64_t i = 0; i < s->n_children; i++)
        MARBLE_RETURN_NOT_OK(flatten(r, s->children[i], err));
    return MARBLE_OK;
}

static int parse_schema(marble_ipc_reader *r, const marble__fb_table *t, marble_error *err)
{
    marble__fb_schema fs;
    char *meta = NULL;
    schema_ctx c = {r, 0};
    int rc = marble__fb_read_schema(t, &fs, err);
    if (rc != MARBLE_OK) return wrap(err, rc, "IPC: schema");
    if (fs.endianness == MARBLE_FB_ENDIAN_BIG)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "IPC: the schema is big-endian; only little-endian data is "
                                "supported");
    if (fs.endianness != MARBLE_FB_ENDIAN_LITTLE)
        return corrupt(err, "schema has unknown endianness %d", (int)fs.endianness);
    MARBLE_RETURN_NOT_OK(make_metadata(&fs.custom_metadata, &meta, err));
    rc = marble__arrow_schema_init(&r->schema, "+s", "", meta, 0, fs.fields.count, err);
    free(meta);
    if (rc != MARBLE_OK) return rc;
    for (uint32_t i = 0; i < fs.fields.count; i++) {
        marble__fb_table ft;
        MARBLE_RETURN_NOT_OK(marble__fb_vector_table(&fs.fields, i, "Field", &ft, err));
        rc = parse_field(&c, &ft, r->schema.children[i], 1, err);
        if (rc != MARBLE_OK) return wrap(err, rc, "IPC: schema field %u", (unsigned)i);
    }
    rc = marble_arrow_schema_validate(&r->schema, err);
    if (rc != MARBLE_OK) return wrap(err, rc, "IPC: schema");
    r->cols = calloc(c.n_fields + 1, sizeof *r->cols);
    if (!r->cols) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC: out of memory");
    for (int64_t i = 0; i < r->schema.n_children; i++)
        MARBLE_RETURN_NOT_OK(flatten(r, r->schema.children[i], err));
    return MARBLE_OK;
}

/* ---- opening --------------------------------------------------------------------------------- */

static int open_stream(marble_ipc_reader *r, marble_error *err)
{
    message_loc loc;
    marble__fb_message msg;
    int eos;
    size_t cap = 0;
    if (r->size == 0) return corrupt(err, "the data is empty (no schema message)");
    MARBLE_RETURN_NOT_OK(read_prefix(r, 0, r->size, &eos, &loc, err));
    if (eos) return corrupt(err, "the stream ends before its schema message");
    MARBLE_RETURN_NOT_OK(read_message(r, &loc, r->size, &msg, err));
    if (msg.header_type != MARBLE_FB_HEADER_SCHEMA)
        return corrupt(err, "the first message is a %s, not a Schema",
                       marble__fb_header_name(msg.header_type));
    MARBLE_RETURN_NOT_OK(parse_schema(r, &msg.header, err));
    uint64_t pos = loc.body_off + loc.body_len;
    while (pos < r->size) {
        MARBLE_RETURN_NOT_OK(read_prefix(r, pos, r->size, &eos, &loc, err));
        if (eos) break;
        MARBLE_RETURN_NOT_OK(read_message(r, &loc, r->size, &msg, err));
        if (msg.header_type == MARBLE_FB_HEADER_SCHEMA)
            return corrupt(err, "a second Schema message at offset %llu", (unsigned long long)pos);
        if (msg.header_type != MARBLE_FB_HEADER_RECORD_BATCH)
            return marble_error_set(
                err, MARBLE_ERR_UNSUPPORTED, "IPC: %s message at offset %llu is not supported",
                marble__fb_header_name(msg.header_type), (unsigned long long)pos);
        if ((size_t)r->n_batches == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            message_loc *m = realloc(r->msgs, ncap * sizeof *m);
            if (!m) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC: out of memory");
            r->msgs = m;
            cap = ncap;
        }
        r->msgs[r->n_batches++] = loc;
        pos = loc.body_off + loc.body_len;
    }
    return MARBLE_OK;
}

static int open_file(marble_ipc_reader *r, marble_error *err)
{
    marble__fb_footer ft;
    uint64_t size = r->size;
    if (size < MARBLE_IPC_FILE_MIN_LEN)
        return corrupt(err,
                       "the data starts with the file magic \"ARROW1\" but is only %llu "
                       "bytes long (truncated file?)",
                       (unsigned long long)size);
    if (memcmp(r->data + size - MARBLE_IPC_MAGIC_LEN, MARBLE_IPC_MAGIC, MARBLE_IPC_MAGIC_LEN))
        return corrupt(err, "the data starts with the file magic \"ARROW1\" but does not end with "
                            "it (truncated file?)");
    int32_t flen = (int32_t)marble__fb_le32(r->data + size - MARBLE_IPC_MAGIC_LEN - 4);
    uint64_t room = size - MARBLE_IPC_MAGIC_LEN - 4 - MARBLE_IPC_FILE_HEADER_LEN;
    if (flen <= 0 || (uint64_t)flen > room)
        return corrupt(err, "footer length %d does not fit in a file of %llu bytes", (int)flen,
                       (unsigned long long)size);
    r->data_end = size - MARBLE_IPC_MAGIC_LEN - 4 - (uint64_t)flen;
    int rc = marble__fb_read_footer(r->data + r->data_end, (size_t)flen, &ft, err);
    if (rc != MARBLE_OK) return wrap(err, rc, "IPC: footer");
    MARBLE_RETURN_NOT_OK(check_version(ft.version, "the footer", err));
    if (!ft.has_schema) return corrupt(err, "the footer has no schema");
    MARBLE_RETURN_NOT_OK(parse_schema(r, &ft.schema, err));
    if (ft.dictionaries.count > 0)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "IPC: the file has dictionary batches, which are not supported");
    uint32_t n = ft.record_batches.count;
    r->blocks = calloc(n + 1, sizeof *r->blocks);
    if (!r->blocks) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC: out of memory");
    for (uint32_t i = 0; i < n; i++) {
        marble__fb_block b = marble__fb_block_at(&ft.record_batches, i);
        if (b.offset < MARBLE_IPC_FILE_HEADER_LEN || b.metadata_length <= 0 || b.body_length < 0 ||
            (uint64_t)b.offset > r->data_end ||
            (uint64_t)b.metadata_length > r->data_end - (uint64_t)b.offset ||
            (uint64_t)b.body_length >
                r->data_end - (uint64_t)b.offset - (uint64_t)b.metadata_length)
            return corrupt(err,
                           "footer block %u (offset %lld, metadata %d, body %lld bytes) lies "
                           "outside the file's data (%llu bytes)",
                           (unsigned)i, (long long)b.offset, (int)b.metadata_length,
                           (long long)b.body_length, (unsigned long long)r->data_end);
        r->blocks[i] = b;
    }
    r->n_batches = n;
    return MARBLE_OK;
}

static void reader_unref(marble_ipc_reader *r)
{
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
    marble_arrow_schema_release(&r->schema);
    free(r->cols);
    free(r->blocks);
    free(r->msgs);
    if (r->src) source_release(r->src);
    free(r);
}

int marble_ipc_reader_open(const marble_ipc_source *src, marble_ipc_reader **out, marble_error *err)
{
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "output pointer is NULL");
    *out = NULL;
    if (!src || (!src->data && src->size > 0))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "IPC source is NULL");
    marble_ipc_reader *r = calloc(1, sizeof *r);
    if (!r) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC: out of memory");
    atomic_init(&r->refs, 1);
    r->data = src->data;
    r->size = src->size;
    int is_file = r->size >= MARBLE_IPC_MAGIC_LEN &&
                  memcmp(r->data, MARBLE_IPC_MAGIC, MARBLE_IPC_MAGIC_LEN) == 0;
    r->format = is_file ? MARBLE_IPC_FILE : MARBLE_IPC_STREAM;
    int rc = is_file ? open_file(r, err) : open_stream(r, err);
    if (rc == MARBLE_OK) {
        r->src = malloc(sizeof *r->src);
        if (!r->src) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC: out of memory");
    }
    if (rc != MARBLE_OK) {
        reader_unref(r);
        return rc;
    }
    atomic_init(&r->src->refs, 1);
    r->src->src = *src;
    if (src->retain) src->retain(src->owner);
    *out = r;
    return MARBLE_OK;
}

void marble_ipc_reader_destroy(marble_ipc_reader *r)
{
    reader_unref(r);
}

marble_ipc_format marble_ipc_reader_format(const marble_ipc_reader *r)
{
    return r ? r->format : MARBLE_IPC_STREAM;
}

int marble_ipc_reader_schema(marble_ipc_reader *r, struct ArrowSchema *out, marble_error *err)
{
    if (!r || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "reader or out is NULL");
    return marble_arrow_schema_copy(&r->schema, out, err);
}

int64_t marble_ipc_reader_num_batches(const marble_ipc_reader *r)
{
    return r ? r->n_batches : 0;
}

/* ---- record batches -------------------------------------------------------------------------- */

typedef struct batch_ctx {
    marble_ipc_reader *r;
    int64_t index;
    const uint8_t *body;
    uint64_t body_len;
    marble__fb_record_batch rb;
    uint32_t node_i, buf_i;
    int codec; /* -1: uncompressed */
    ZSTD_DCtx *zstd;
    marble__arrow_owner owner;
} batch_ctx;

static int64_t bitmap_bytes(int64_t n)
{
    return n / 8 + (n % 8 != 0);
}

static const char *lz4_decompress(const uint8_t *src, size_t n, size_t ulen, uint8_t **out)
{
    LZ4F_dctx *d = NULL;
    LZ4F_frameInfo_t info;
    const char *why = NULL;
    size_t in_at = n, out_at = 0;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION))) return "out of memory";
    size_t rc = LZ4F_getFrameInfo(d, &info, src, &in_at);
    if (LZ4F_isError(rc)) {
        why = LZ4F_getErrorName(rc);
    } else if (info.contentSize != 0 && info.contentSize != ulen) {
        why = "the frame's content size differs from the buffer's stated length";
    } else if (!(*out = marble__arrow_alloc((int64_t)ulen))) {
        why = "out of memory";
    }
    while (!why) {
        size_t in_n = n - in_at, out_n = ulen - out_at;
        rc = LZ4F_decompress(d, *out + out_at, &out_n, src + in_at, &in_n, NULL);
        if (LZ4F_isError(rc)) {
            why = LZ4F_getErrorName(rc);
            break;
        }
        in_at += in_n;
        out_at += out_n;
        if (rc == 0) break;
        if (in_n == 0 && out_n == 0)
            why = out_at == ulen ? "frame longer than its stated length" : "truncated frame";
    }
    if (!why && out_at != ulen) why = "frame shorter than its stated length";
    LZ4F_freeDecompressionContext(d);
    return why;
}

static const char *zstd_decompress(batch_ctx *c, const uint8_t *src, size_t n, size_t ulen,
                                   uint8_t **out)
{
    unsigned long long fcs = ZSTD_getFrameContentSize(src, n);
    if (fcs == ZSTD_CONTENTSIZE_ERROR) return "not a ZSTD frame";
    size_t frame = ZSTD_findFrameCompressedSize(src, n);
    if (ZSTD_isError(frame)) return ZSTD_getErrorName(frame);
    if (frame == n && fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != ulen)
        return "the frame's content size differs from the buffer's stated length";
    if (!c->zstd) c->zstd = ZSTD_createDCtx();
    if (!c->zstd || !(*out = marble__arrow_alloc((int64_t)ulen))) return "out of memory";
    size_t rc = ZSTD_decompressDCtx(c->zstd, *out, ulen, src, n);
    if (ZSTD_isError(rc)) return ZSTD_getErrorName(rc);
    if (rc != ulen) return "frame shorter than its stated length";
    return NULL;
}

static int decompress(batch_ctx *c, const char *col, int bi, const uint8_t *src, int64_t n,
                      int64_t ulen, void **dst, marble_error *err)
{
    int lz4 = c->codec == MARBLE_FB_CODEC_LZ4_FRAME;
    uint8_t *out = NULL;
    if (ulen / (lz4 ? LZ4_MAX_RATIO : ZSTD_MAX_RATIO) > n + 1024)
        return corrupt(err,
                       "batch %lld, column '%.64s', buffer %d: %lld compressed bytes claim to "
                       "expand to %lld",
                       (long long)c->index, col, bi, (long long)n, (long long)ulen);
    const char *why = lz4 ? lz4_decompress(src, (size_t)n, (size_t)ulen, &out)
                          : zstd_decompress(c, src, (size_t)n, (size_t)ulen, &out);
    if (why) {
        marble__arrow_free(out);
        if (!strcmp(why, "out of memory"))
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                    "IPC: out of memory decompressing %lld bytes", (long long)ulen);
        return corrupt(err, "batch %lld, column '%.64s', buffer %d: %s: %s", (long long)c->index,
                       col, bi, lz4 ? "LZ4 frame" : "ZSTD", why);
    }
    *dst = out;
    return MARBLE_OK;
}

/* The next body buffer of column `col` (bi: its index in the column). *owned is memory that the
 * array must adopt (decompressed or realigned), else NULL and *data points into the body (or at
 * empty_buffer when empty). With `skip` the buffer is only consumed. */
static int next_buffer(batch_ctx *c, const char *col, int bi, int skip, const uint8_t **data,
                       int64_t *len, void **owned, marble_error *err)
{
    *data = empty_buffer;
    *len = 0;
    *owned = NULL;
    if (c->buf_i >= c->rb.buffers.count)
        return corrupt(err, "batch %lld: RecordBatch.buffers has too few entries",
                       (long long)c->index);
    marble__fb_pair b = marble__fb_pair_at(&c->rb.buffers, c->buf_i++);
    if (b.a < 0 || b.b < 0 || (uint64_t)b.a > c->body_len ||
        (uint64_t)b.b > c->body_len - (uint64_t)b.a)
        return corrupt(err,
                       "batch %lld, column '%.64s', buffer %d: offset %lld + length %lld lies "
                       "outside the body (%llu bytes)",
                       (long long)c->index, col, bi, (long long)b.a, (long long)b.b,
                       (unsigned long long)c->body_len);
    if (skip || b.b == 0) return MARBLE_OK;
    const uint8_t *p = c->body + b.a;
    int64_t n = b.b;
    if (c->codec >= 0) {
        if (n < MARBLE_IPC_COMPRESSED_PREFIX)
            return corrupt(err,
                           "batch %lld, column '%.64s', buffer %d: compressed buffer of %lld "
                           "bytes lacks its 8-byte length",
                           (long long)c->index, col, bi, (long long)n);
        int64_t ulen = (int64_t)marble__fb_le64(p);
        p += MARBLE_IPC_COMPRESSED_PREFIX;
        n -= MARBLE_IPC_COMPRESSED_PREFIX;
        if (ulen < MARBLE_IPC_UNCOMPRESSED_MARK)
            return corrupt(err,
                           "batch %lld, column '%.64s', buffer %d: negative uncompressed length "
                           "%lld",
                           (long long)c->index, col, bi, (long long)ulen);
        if (ulen == 0) return MARBLE_OK;
        if (ulen > 0) {
            MARBLE_RETURN_NOT_OK(decompress(c, col, bi, p, n, ulen, owned, err));
            *data = *owned;
            *len = ulen;
            return MARBLE_OK;
        }
        if (n == 0) return MARBLE_OK;
    }
    if ((uintptr_t)p % 8 != 0) {
        *owned = marble__arrow_alloc(n);
        if (!*owned)
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                    "IPC: out of memory realigning %lld bytes", (long long)n);
        memcpy(*owned, p, (size_t)n);
        p = *owned;
    }
    *data = p;
    *len = n;
    return MARBLE_OK;
}

static void put_buffer(struct ArrowArray *a, int64_t i, const uint8_t *data, void *owned)
{
    if (owned)
        marble__arrow_array_adopt_buffer(a, i, owned);
    else
        marble__arrow_array_set_buffer(a, i, data);
}

static int too_short(batch_ctx *c, const char *col, int bi, const char *what, int64_t have,
                     int64_t need, marble_error *err)
{
    return corrupt(err, "batch %lld, column '%.64s', buffer %d (%s) holds %lld bytes, %lld needed",
                   (long long)c->index, col, bi, what, (long long)have, (long long)need);
}

static int check_offsets(batch_ctx *c, const char *col, const uint8_t *offs, int ob, int64_t length,
                         int64_t data_len, marble_error *err)
{
    int64_t prev = marble__arrow_offset_at(offs, ob, 0);
    if (prev < 0)
        return corrupt(err, "batch %lld, column '%.64s': first offset %lld is negative",
                       (long long)c->index, col, (long long)prev);
    for (int64_t i = 1; i <= length; i++) {
        int64_t cur = marble__arrow_offset_at(offs, ob, i);
        if (cur < prev)
            return corrupt(err,
                           "batch %lld, column '%.64s': offset %lld at index %lld is less than "
                           "the previous one (%lld)",
                           (long long)c->index, col, (long long)cur, (long long)i, (long long)prev);
        prev = cur;
    }
    if (prev > data_len)
        return corrupt(err,
                       "batch %lld, column '%.64s': last offset %lld is past the data buffer "
                       "(%lld bytes)",
                       (long long)c->index, col, (long long)prev, (long long)data_len);
    return MARBLE_OK;
}

static int decode_column(batch_ctx *c, struct ArrowArray *a, int depth, marble_error *err)
{
    const uint8_t *data;
    int64_t len;
    void *owned;
    if (depth > MARBLE_IPC_MAX_DEPTH || c->node_i >= c->r->n_cols)
        return corrupt(err, "batch %lld: more columns than the schema has", (long long)c->index);
    const column_info *ci = &c->r->cols[c->node_i];
    const char *col = marble__arrow_field_name(ci->schema);
    if (c->node_i >= c->rb.nodes.count)
        return corrupt(err, "batch %lld: RecordBatch.nodes has too few entries",
                       (long long)c->index);
    marble__fb_pair node = marble__fb_pair_at(&c->rb.nodes, c->node_i++);
    const marble__arrow_layout *l = &ci->layout;
    if (node.a < 0 || node.b < 0 || node.b > node.a)
        return corrupt(err, "batch %lld, column '%.64s': node length %lld, null count %lld",
                       (long long)c->index, col, (long long)node.a, (long long)node.b);
    MARBLE_RETURN_NOT_OK(
        marble__arrow_array_init(a, l->n_buffers, ci->schema->n_children, &c->owner, err));
    a->length = node.a;
    a->null_count = ci->type.id == MARBLE_ARROW_NA ? node.a : node.b;
    if (ci->type.id == MARBLE_ARROW_NA) return MARBLE_OK;

    MARBLE_RETURN_NOT_OK(next_buffer(c, col, 0, node.b == 0, &data, &len, &owned, err));
    if (node.b > 0) {
        if (len < bitmap_bytes(node.a)) {
            marble__arrow_free(owned);
            return too_short(c, col, 0, "validity", len, bitmap_bytes(node.a), err);
        }
        put_buffer(a, 0, data, owned);
    }
    if (l->value_bits) {
        int64_t need;
        if (l->value_bits == 1) {
            need = bitmap_bytes(node.a);
        } else {
            int64_t width = l->value_bits / 8;
            if (node.a > INT64_MAX / width)
                return corrupt(err, "batch %lld, column '%.64s': length %lld overflows",
                               (long long)c->index, col, (long long)node.a);
            need = node.a * width;
        }
        MARBLE_RETURN_NOT_OK(next_buffer(c, col, 1, 0, &data, &len, &owned, err));
        put_buffer(a, 1, data, owned);
        if (len < need) return too_short(c, col, 1, "values", len, need, err);
        return MARBLE_OK;
    }
    if (l->offset_bytes) {
        int ob = l->offset_bytes;
        const uint8_t *offs;
        MARBLE_RETURN_NOT_OK(next_buffer(c, col, 1, 0, &offs, &len, &owned, err));
        put_buffer(a, 1, offs, owned);
        if (node.a > INT64_MAX / ob - 1)
            return corrupt(err, "batch %lld, column '%.64s': length %lld overflows",
                           (long long)c->index, col, (long long)node.a);
        if (len < (node.a + 1) * ob && !(node.a == 0 && len == 0))
            return too_short(c, col, 1, "offsets", len, (node.a + 1) * ob, err);
        MARBLE_RETURN_NOT_OK(next_buffer(c, col, 2, 0, &data, &len, &owned, err));
        put_buffer(a, 2, data, owned);
        return check_offsets(c, col, offs, ob, node.a, len, err);
    }
    for (int64_t i = 0; i < a->n_children; i++)
        MARBLE_RETURN_NOT_OK(decode_column(c, a->children[i], depth + 1, err));
    return MARBLE_OK;
}

static int compare_regions(const void *a, const void *b)
{
    const marble__fb_pair *x = a, *y = b;
    return x->a < y->a ? -1 : x->a > y->a;
}

/* Every buffer lies inside the body, and no two non-empty buffers overlap (so a batch can never
 * decompress or copy more than its body accounts for). */
static int check_buffer_regions(const batch_ctx *c, marble_error *err)
{
    uint32_t n = c->rb.buffers.count, k = 0;
    marble__fb_pair *regions = malloc((size_t)n * sizeof *regions + 1);
    if (!regions) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC: out of memory");
    for (uint32_t i = 0; i < n; i++) {
        marble__fb_pair b = marble__fb_pair_at(&c->rb.buffers, i);
        if (b.a < 0 || b.b < 0 || (uint64_t)b.a > c->body_len ||
            (uint64_t)b.b > c->body_len - (uint64_t)b.a) {
            free(regions);
            return corrupt(err,
                           "batch %lld: buffer %u (offset %lld, length %lld) lies outside the "
                           "body (%llu bytes)",
                           (long long)c->index, (unsigned)i, (long long)b.a, (long long)b.b,
                           (unsigned long long)c->body_len);
        }
        if (b.b > 0) regions[k++] = b;
    }
    qsort(regions, k, sizeof *regions, compare_regions);
    int rc = MARBLE_OK;
    for (uint32_t i = 1; i < k && rc == MARBLE_OK; i++)
        if (regions[i].a < regions[i - 1].a + regions[i - 1].b)
            rc = corrupt(err, "batch %lld: body buffers at offsets %lld and %lld overlap",
                         (long long)c->index, (long long)regions[i - 1].a, (long long)regions[i].a);
    free(regions);
    return rc;
}

static int locate_batch(marble_ipc_reader *r, int64_t i, message_loc *loc, marble_error *err)
{
    if (r->format == MARBLE_IPC_STREAM) {
        *loc = r->msgs[i];
        return MARBLE_OK;
    }
    const marble__fb_block *b = &r->blocks[i];
    uint64_t meta_end = (uint64_t)b->offset + (uint64_t)b->metadata_length;
    int eos;
    MARBLE_RETURN_NOT_OK(read_prefix(r, (uint64_t)b->offset, meta_end, &eos, loc, err));
    if (eos)
        return corrupt(err, "footer block %lld points at an end-of-stream marker", (long long)i);
    loc->meta_len = meta_end - loc->meta_off;
    return MARBLE_OK;
}

static int read_batch(marble_ipc_reader *r, int64_t i, struct ArrowArray *out, marble_error *err)
{
    message_loc loc;
    marble__fb_message msg;
    batch_ctx c;
    memset(&c, 0, sizeof c);
    c.r = r;
    c.index = i;
    c.codec = -1;
    c.owner.ctx = r->src;
    c.owner.retain = source_retain;
    c.owner.release = source_release;
    MARBLE_RETURN_NOT_OK(locate_batch(r, i, &loc, err));
    uint64_t limit = r->format == MARBLE_IPC_FILE
                         ? (uint64_t)r->blocks[i].offset + (uint64_t)r->blocks[i].metadata_length +
                               (uint64_t)r->blocks[i].body_length
                         : r->size;
    MARBLE_RETURN_NOT_OK(read_message(r, &loc, limit, &msg, err));
    if (msg.header_type != MARBLE_FB_HEADER_RECORD_BATCH)
        return corrupt(err, "batch %lld: the message is a %s, not a RecordBatch", (long long)i,
                       marble__fb_header_name(msg.header_type));
    int rc = marble__fb_read_record_batch(&msg.header, &c.rb, err);
    if (rc != MARBLE_OK) return wrap(err, rc, "IPC: batch %lld", (long long)i);
    if (c.rb.length < 0)
        return corrupt(err, "batch %lld: negative length %lld", (long long)i,
                       (long long)c.rb.length);
    if (c.rb.has_compression) {
        if (c.rb.codec != MARBLE_FB_CODEC_LZ4_FRAME && c.rb.codec != MARBLE_FB_CODEC_ZSTD)
            return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                    "IPC: batch %lld: unknown compression codec %d", (long long)i,
                                    (int)c.rb.codec);
        if (c.rb.method != MARBLE_FB_METHOD_BUFFER)
            return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                    "IPC: batch %lld: unknown body compression method %d",
                                    (long long)i, (int)c.rb.method);
        c.codec = c.rb.codec;
    }
    if (c.rb.nodes.count != r->n_cols)
        return corrupt(err,
                       "batch %lld: RecordBatch.nodes has %u entries, the schema has %zu "
                       "fields",
                       (long long)i, (unsigned)c.rb.nodes.count, r->n_cols);
    if (c.rb.buffers.count != r->n_buffers)
        return corrupt(err, "batch %lld: RecordBatch.buffers has %u entries, the schema needs %zu",
                       (long long)i, (unsigned)c.rb.buffers.count, r->n_buffers);
    c.body = r->data + loc.body_off;
    c.body_len = loc.body_len;
    MARBLE_RETURN_NOT_OK(check_buffer_regions(&c, err));

    rc = marble__arrow_array_init(out, 1, r->schema.n_children, &c.owner, err);
    if (rc != MARBLE_OK) return rc;
    out->length = c.rb.length;
    for (int64_t k = 0; k < out->n_children && rc == MARBLE_OK; k++) {
        rc = decode_column(&c, out->children[k], 1, err);
        if (rc == MARBLE_OK && out->children[k]->length != c.rb.length)
            rc = corrupt(err, "batch %lld, column '%.64s' has %lld rows, the batch %lld",
                         (long long)i, marble__arrow_field_name(r->schema.children[k]),
                         (long long)out->children[k]->length, (long long)c.rb.length);
    }
    ZSTD_freeDCtx(c.zstd);
    if (rc == MARBLE_OK) {
        rc = marble_arrow_array_validate(&r->schema, out, MARBLE_VALIDATE_DEFAULT, err);
        if (rc != MARBLE_OK) rc = wrap(err, MARBLE_ERR_CORRUPTION, "IPC: batch %lld", (long long)i);
    }
    if (rc != MARBLE_OK) out->release(out);
    return rc;
}

int marble_ipc_reader_read(marble_ipc_reader *r, int64_t i, struct ArrowArray *out,
                           marble_error *err)
{
    if (!r || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "reader or out is NULL");
    memset(out, 0, sizeof *out);
    if (i < 0 || i >= r->n_batches)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "IPC: batch %lld does not exist (the data has %lld)", (long long)i,
                                (long long)r->n_batches);
    return read_batch(r, i, out, err);
}

/* ---- ArrowArrayStream ------------------------------------------------------------------------ */

typedef struct ipc_stream {
    marble_ipc_reader *r;
    int64_t next;
    char error[MARBLE_ERROR_MESSAGE_SIZE];
} ipc_stream;

static int stream_result(ipc_stream *s, int rc, const marble_error *e)
{
    if (rc == MARBLE_OK) return 0;
    snprintf(s->error, sizeof s->error, "%s", e->message);
    return marble_error_to_errno(rc);
}

static int stream_get_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    ipc_stream *s = st->private_data;
    marble_error e = {0, ""};
    return stream_result(s, marble_arrow_schema_copy(&s->r->schema, out, &e), &e);
}

static int stream_get_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    ipc_stream *s = st->private_data;
    marble_error e = {0, ""};
    if (s->next >= s->r->n_batches) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    int rc = marble_ipc_reader_read(s->r, s->next, out, &e);
    if (rc == MARBLE_OK) s->next++;
    return stream_result(s, rc, &e);
}

static const char *stream_get_last_error(struct ArrowArrayStream *st)
{
    ipc_stream *s = st->private_data;
    return s->error[0] ? s->error : NULL;
}

static void stream_release(struct ArrowArrayStream *st)
{
    if (!st || !st->release) return;
    ipc_stream *s = st->private_data;
    reader_unref(s->r);
    free(s);
    st->release = NULL;
    st->private_data = NULL;
}

int marble_ipc_reader_stream(marble_ipc_reader *r, struct ArrowArrayStream *out, marble_error *err)
{
    if (!r || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "reader or out is NULL");
    memset(out, 0, sizeof *out);
    ipc_stream *s = calloc(1, sizeof *s);
    if (!s) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "IPC: out of memory");
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    s->r = r;
    out->get_schema = stream_get_schema;
    out->get_next = stream_get_next;
    out->get_last_error = stream_get_last_error;
    out->release = stream_release;
    out->private_data = s;
    return MARBLE_OK;
}
