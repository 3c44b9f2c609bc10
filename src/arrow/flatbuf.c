/* FlatBuffers builder and bounds-checked reader for the Arrow IPC metadata tables. */
#include "arrow/flatbuf.h"

#include <stdlib.h>
#include <string.h>

/* ---- builder --------------------------------------------------------------------------------- */

void marble__fb_builder_init(marble__fb_builder *b)
{
    memset(b, 0, sizeof *b);
    b->minalign = 8;
}

void marble__fb_builder_free(marble__fb_builder *b)
{
    if (!b) return;
    free(b->buf);
    marble__fb_builder_init(b);
}

static int fb_grow(marble__fb_builder *b, size_t need)
{
    if (b->failed) return 0;
    if (b->cap - b->size >= need) return 1;
    if (need > ((size_t)1 << 30) || b->size > ((size_t)1 << 30)) {
        b->failed = MARBLE_ERR_LIMIT;
        return 0;
    }
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap - b->size < need)
        cap *= 2;
    uint8_t *nb = malloc(cap);
    if (!nb) {
        b->failed = MARBLE_ERR_NO_MEMORY;
        return 0;
    }
    if (b->size) memcpy(nb + cap - b->size, b->buf + b->cap - b->size, b->size);
    free(b->buf);
    b->buf = nb;
    b->cap = cap;
    return 1;
}

static void fb_push(marble__fb_builder *b, const void *data, size_t n)
{
    if (n == 0 || !fb_grow(b, n)) return;
    b->size += n;
    if (data)
        memcpy(b->buf + b->cap - b->size, data, n);
    else
        memset(b->buf + b->cap - b->size, 0, n);
}

/* Pads so that after `additional` more bytes the size is a multiple of `align` (a power of 2). */
static void fb_prep(marble__fb_builder *b, size_t align, size_t additional)
{
    if (align > b->minalign) b->minalign = align;
    size_t pad = (~(b->size + additional) + 1) & (align - 1);
    if (!fb_grow(b, pad + additional)) return;
    fb_push(b, NULL, pad);
}

static void fb_push32(marble__fb_builder *b, uint32_t v)
{
    uint8_t t[4];
    marble__fb_put32(t, v);
    fb_push(b, t, 4);
}

static void fb_push16(marble__fb_builder *b, uint16_t v)
{
    uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    fb_push(b, t, 2);
}

static marble__fb_ref fb_result(marble__fb_builder *b)
{
    if (b->failed) return 0;
    if (b->size > UINT32_MAX) {
        b->failed = MARBLE_ERR_LIMIT;
        return 0;
    }
    return (marble__fb_ref)b->size;
}

static int fb_object_ok(marble__fb_builder *b)
{
    if (b->in_table) b->failed = MARBLE_ERR_INTERNAL;
    return !b->failed;
}

marble__fb_ref marble__fb_string(marble__fb_builder *b, const char *s, size_t len)
{
    if (!fb_object_ok(b)) return 0;
    fb_prep(b, 4, len + 1);
    fb_push(b, NULL, 1);
    fb_push(b, s, len);
    fb_push32(b, (uint32_t)len);
    return fb_result(b);
}

marble__fb_ref marble__fb_vector_raw(marble__fb_builder *b, const void *data, size_t elem_size,
                                     size_t count, size_t align)
{
    if (!fb_object_ok(b)) return 0;
    if (count > UINT32_MAX / (elem_size ? elem_size : 1)) {
        b->failed = MARBLE_ERR_LIMIT;
        return 0;
    }
    size_t n = elem_size * count;
    fb_prep(b, 4, n);
    fb_prep(b, align < 4 ? 4 : align, n);
    fb_push(b, data, n);
    fb_push32(b, (uint32_t)count);
    return fb_result(b);
}

marble__fb_ref marble__fb_vector_refs(marble__fb_builder *b, const marble__fb_ref *refs,
                                      size_t count)
{
    if (!fb_object_ok(b)) return 0;
    if (count > UINT32_MAX / 4) {
        b->failed = MARBLE_ERR_LIMIT;
        return 0;
    }
    fb_prep(b, 4, 4 * count);
    for (size_t i = count; i-- > 0;) {
        if (refs[i] == 0 || refs[i] > b->size) {
            b->failed = MARBLE_ERR_INTERNAL;
            return 0;
        }
        fb_push32(b, (uint32_t)(b->size + 4 - refs[i]));
    }
    fb_push32(b, (uint32_t)count);
    return fb_result(b);
}

void marble__fb_table_start(marble__fb_builder *b)
{
    if (b->in_table) b->failed = MARBLE_ERR_INTERNAL;
    b->in_table = 1;
    b->table_start = b->size;
    b->n_slots = 0;
    memset(b->slots, 0, sizeof b->slots);
}

static void fb_add_scalar(marble__fb_builder *b, int slot, const uint8_t *le, size_t n)
{
    if (!b->in_table || slot < 0 || slot >= MARBLE_FB_MAX_SLOTS) {
        b->failed = MARBLE_ERR_INTERNAL;
        return;
    }
    fb_prep(b, n, 0);
    fb_push(b, le, n);
    if (b->failed) return;
    b->slots[slot] = (uint32_t)b->size;
    if (slot + 1 > b->n_slots) b->n_slots = slot + 1;
}

void marble__fb_add_i64(marble__fb_builder *b, int slot, int64_t v)
{
    uint8_t t[8];
    marble__fb_put64(t, (uint64_t)v);
    fb_add_scalar(b, slot, t, 8);
}

void marble__fb_add_i32(marble__fb_builder *b, int slot, int32_t v)
{
    uint8_t t[4];
    marble__fb_put32(t, (uint32_t)v);
    fb_add_scalar(b, slot, t, 4);
}

void marble__fb_add_i16(marble__fb_builder *b, int slot, int16_t v)
{
    uint8_t t[2] = {(uint8_t)(uint16_t)v, (uint8_t)((uint16_t)v >> 8)};
    fb_add_scalar(b, slot, t, 2);
}

void marble__fb_add_u8(marble__fb_builder *b, int slot, uint8_t v)
{
    fb_add_scalar(b, slot, &v, 1);
}

void marble__fb_add_ref(marble__fb_builder *b, int slot, marble__fb_ref ref)
{
    if (b->failed) return;
    if (!b->in_table || slot < 0 || slot >= MARBLE_FB_MAX_SLOTS || ref == 0 || ref > b->size) {
        b->failed = MARBLE_ERR_INTERNAL;
        return;
    }
    fb_prep(b, 4, 0);
    fb_push32(b, (uint32_t)(b->size + 4 - ref));
    if (b->failed) return;
    b->slots[slot] = (uint32_t)b->size;
    if (slot + 1 > b->n_slots) b->n_slots = slot + 1;
}

marble__fb_ref marble__fb_table_end(marble__fb_builder *b)
{
    if (!b->in_table) b->failed = MARBLE_ERR_INTERNAL;
    b->in_table = 0;
    if (b->failed) return 0;
    fb_prep(b, 4, 0);
    fb_push32(b, 0);
    if (b->failed) return 0;
    size_t table_off = b->size;
    size_t tab_size = table_off - b->table_start;
    if (tab_size > UINT16_MAX) {
        b->failed = MARBLE_ERR_LIMIT;
        return 0;
    }
    for (int i = b->n_slots; i-- > 0;)
        fb_push16(b, (uint16_t)(b->slots[i] ? table_off - b->slots[i] : 0));
    fb_push16(b, (uint16_t)tab_size);
    fb_push16(b, (uint16_t)(4 + 2 * b->n_slots));
    if (b->failed) return 0;
    marble__fb_put32(b->buf + b->cap - table_off, (uint32_t)(b->size - table_off));
    if (table_off > UINT32_MAX) b->failed = MARBLE_ERR_LIMIT;
    return b->failed ? 0 : (marble__fb_ref)table_off;
}

int marble__fb_finish(marble__fb_builder *b, marble__fb_ref root, const uint8_t **data,
                      size_t *size, marble_error *err)
{
    if (!b->failed && (b->in_table || root == 0 || root > b->size)) b->failed = MARBLE_ERR_INTERNAL;
    if (!b->failed) {
        fb_prep(b, b->minalign, 4);
        fb_push32(b, (uint32_t)(b->size + 4 - root));
    }
    if (!b->failed && b->size > INT32_MAX) b->failed = MARBLE_ERR_LIMIT;
    if (b->failed) {
        int code = b->failed;
        return marble_error_set(err, code, "flatbuffer builder: %s",
                                code == MARBLE_ERR_NO_MEMORY ? "out of memory"
                                : code == MARBLE_ERR_LIMIT   ? "metadata larger than 1 GiB"
                                                             : "misused (internal error)");
    }
    *data = b->buf + b->cap - b->size;
    *size = b->size;
    return MARBLE_OK;
}

/* ---- reader ---------------------------------------------------------------------------------- */

static int fb_corrupt(marble_error *err, const char *table, const char *field, const char *what)
{
    if (field) return marble_error_set(err, MARBLE_ERR_CORRUPTION, "%s.%s %s", table, field, what);
    return marble_error_set(err, MARBLE_ERR_CORRUPTION, "%s %s", table, what);
}

static int fb_table_at(const uint8_t *buf, size_t size, uint64_t pos, const char *type,
                       const char *parent, const char *field, marble__fb_table *out,
                       marble_error *err)
{
    const char *t = parent ? parent : type;
    if (pos > size || size - pos < 4)
        return fb_corrupt(err, t, field, "table runs past the end of the metadata");
    int64_t soff = (int32_t)marble__fb_le32(buf + pos);
    int64_t vt = (int64_t)pos - soff;
    if (vt < 0 || (uint64_t)vt > size - 4)
        return fb_corrupt(err, t, field, "vtable lies outside the metadata");
    uint16_t vt_size = marble__fb_le16(buf + vt);
    uint16_t tab_size = marble__fb_le16(buf + vt + 2);
    if (vt_size < 4 || (vt_size & 1) || (uint64_t)vt + vt_size > size)
        return fb_corrupt(err, t, field, "vtable size is invalid or runs past the metadata");
    if (tab_size < 4 || pos + tab_size > size)
        return fb_corrupt(err, t, field, "table size is invalid or runs past the metadata");
    out->buf = buf;
    out->size = size;
    out->pos = (size_t)pos;
    out->vt = (size_t)vt;
    out->vt_size = vt_size;
    out->tab_size = tab_size;
    out->name = type;
    return MARBLE_OK;
}

int marble__fb_root(const uint8_t *buf, size_t size, const char *what, marble__fb_table *out,
                    marble_error *err)
{
    if (!buf || size < 8) return fb_corrupt(err, what, NULL, "flatbuffer is shorter than 8 bytes");
    return fb_table_at(buf, size, marble__fb_le32(buf), what, NULL, NULL, out, err);
}

static uint16_t fb_slot_offset(const marble__fb_table *t, int slot)
{
    size_t at = 4 + 2 * (size_t)slot;
    if (slot < 0 || at + 2 > t->vt_size) return 0;
    return marble__fb_le16(t->buf + t->vt + at);
}

int marble__fb_has(const marble__fb_table *t, int slot)
{
    return fb_slot_offset(t, slot) != 0;
}

/* The field's position, or 0 when absent; CORRUPTION if it does not fit in the table. */
static int fb_field(const marble__fb_table *t, int slot, const char *field, size_t width,
                    size_t *pos, marble_error *err)
{
    uint16_t fo = fb_slot_offset(t, slot);
    *pos = 0;
    if (fo == 0) return MARBLE_OK;
    if (fo < 4 || (size_t)fo + width > t->tab_size)
        return fb_corrupt(err, t->name, field, "field lies outside its table");
    *pos = t->pos + fo;
    return MARBLE_OK;
}

int marble__fb_get_i64(const marble__fb_table *t, int slot, const char *field, int64_t def,
                       int64_t *out, marble_error *err)
{
    size_t p;
    MARBLE_RETURN_NOT_OK(fb_field(t, slot, field, 8, &p, err));
    *out = p ? (int64_t)marble__fb_le64(t->buf + p) : def;
    return MARBLE_OK;
}

int marble__fb_get_i32(const marble__fb_table *t, int slot, const char *field, int32_t def,
                       int32_t *out, marble_error *err)
{
    size_t p;
    MARBLE_RETURN_NOT_OK(fb_field(t, slot, field, 4, &p, err));
    *out = p ? (int32_t)marble__fb_le32(t->buf + p) : def;
    return MARBLE_OK;
}

int marble__fb_get_i16(const marble__fb_table *t, int slot, const char *field, int16_t def,
                       int16_t *out, marble_error *err)
{
    size_t p;
    MARBLE_RETURN_NOT_OK(fb_field(t, slot, field, 2, &p, err));
    *out = p ? (int16_t)marble__fb_le16(t->buf + p) : def;
    return MARBLE_OK;
}

int marble__fb_get_u8(const marble__fb_table *t, int slot, const char *field, uint8_t def,
                      uint8_t *out, marble_error *err)
{
    size_t p;
    MARBLE_RETURN_NOT_OK(fb_field(t, slot, field, 1, &p, err));
    *out = p ? t->buf[p] : def;
    return MARBLE_OK;
}

/* Follows the offset stored in field `slot`: *target is 0 when absent. */
static int fb_follow(const marble__fb_table *t, int slot, const char *field, uint64_t *target,
                     marble_error *err)
{
    size_t p;
    MARBLE_RETURN_NOT_OK(fb_field(t, slot, field, 4, &p, err));
    *target = 0;
    if (!p) return MARBLE_OK;
    uint64_t to = (uint64_t)p + marble__fb_le32(t->buf + p);
    if (to >= t->size)
        return fb_corrupt(err, t->name, field, "points past the end of the metadata");
    *target = to;
    return MARBLE_OK;
}

int marble__fb_get_table(const marble__fb_table *t, int slot, const char *field, const char *type,
                         marble__fb_table *out, int *present, marble_error *err)
{
    uint64_t to;
    *present = 0;
    MARBLE_RETURN_NOT_OK(fb_follow(t, slot, field, &to, err));
    if (!to) return MARBLE_OK;
    MARBLE_RETURN_NOT_OK(fb_table_at(t->buf, t->size, to, type, t->name, field, out, err));
    *present = 1;
    return MARBLE_OK;
}

int marble__fb_get_string(const marble__fb_table *t, int slot, const char *field, const char **s,
                          size_t *len, marble_error *err)
{
    uint64_t to;
    *s = NULL;
    *len = 0;
    MARBLE_RETURN_NOT_OK(fb_follow(t, slot, field, &to, err));
    if (!to) return MARBLE_OK;
    if (t->size - to < 4)
        return fb_corrupt(err, t->name, field, "string runs past the end of the metadata");
    uint64_t n = marble__fb_le32(t->buf + to);
    if (t->size - to - 4 < n + 1)
        return fb_corrupt(err, t->name, field, "string runs past the end of the metadata");
    if (t->buf[to + 4 + n] != 0) return fb_corrupt(err, t->name, field, "string lacks its NUL");
    *s = (const char *)(t->buf + to + 4);
    *len = (size_t)n;
    return MARBLE_OK;
}

int marble__fb_get_vector(const marble__fb_table *t, int slot, const char *field, size_t elem_size,
                          marble__fb_vector *out, int *present, marble_error *err)
{
    uint64_t to;
    memset(out, 0, sizeof *out);
    out->buf = t->buf;
    out->size = t->size;
    out->elem_size = elem_size;
    out->table = t->name;
    out->field = field;
    if (present) *present = 0;
    MARBLE_RETURN_NOT_OK(fb_follow(t, slot, field, &to, err));
    if (!to) return MARBLE_OK;
    if (t->size - to < 4)
        return fb_corrupt(err, t->name, field, "vector runs past the end of the metadata");
    uint64_t n = marble__fb_le32(t->buf + to);
    if (n * elem_size > t->size - to - 4)
        return fb_corrupt(err, t->name, field, "vector runs past the end of the metadata");
    out->pos = (size_t)to + 4;
    out->count = (uint32_t)n;
    if (present) *present = 1;
    return MARBLE_OK;
}

int marble__fb_vector_table(const marble__fb_vector *v, uint32_t i, const char *type,
                            marble__fb_table *out, marble_error *err)
{
    if (i >= v->count || v->elem_size != 4)
        return fb_corrupt(err, v->table, v->field, "element index out of range");
    size_t p = v->pos + (size_t)i * 4;
    uint64_t to = (uint64_t)p + marble__fb_le32(v->buf + p);
    if (to >= v->size)
        return fb_corrupt(err, v->table, v->field, "element points past the end of the metadata");
    return fb_table_at(v->buf, v->size, to, type, v->table, v->field, out, err);
}

/* ---- Arrow tables ---------------------------------------------------------------------------- */

const char *marble__fb_type_name(uint8_t type_type)
{
    static const char *const names[] = {
        "NONE",          "Null",      "Int",           "FloatingPoint",
        "Binary",        "Utf8",      "Bool",          "Decimal",
        "Date",          "Time",      "Timestamp",     "Interval",
        "List",          "Struct_",   "Union",         "FixedSizeBinary",
        "FixedSizeList", "Map",       "Duration",      "LargeBinary",
        "LargeUtf8",     "LargeList", "RunEndEncoded", "BinaryView",
        "Utf8View",      "ListView",  "LargeListView"};
    if (type_type < sizeof names / sizeof names[0]) return names[type_type];
    return "unknown";
}

const char *marble__fb_header_name(uint8_t header_type)
{
    static const char *const names[] = {"NONE",        "Schema", "DictionaryBatch",
                                        "RecordBatch", "Tensor", "SparseTensor"};
    if (header_type < sizeof names / sizeof names[0]) return names[header_type];
    return "unknown";
}

int marble__fb_read_message(const uint8_t *buf, size_t size, marble__fb_message *out,
                            marble_error *err)
{
    marble__fb_table t;
    memset(out, 0, sizeof *out);
    MARBLE_RETURN_NOT_OK(marble__fb_root(buf, size, "Message", &t, err));
    MARBLE_RETURN_NOT_OK(
        marble__fb_get_i16(&t, MARBLE_FB_MESSAGE_VERSION, "version", 0, &out->version, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_u8(&t, MARBLE_FB_MESSAGE_HEADER_TYPE, "header_type", 0,
                                           &out->header_type, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_table(&t, MARBLE_FB_MESSAGE_HEADER, "header",
                                              marble__fb_header_name(out->header_type),
                                              &out->header, &out->has_header, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_i64(&t, MARBLE_FB_MESSAGE_BODY_LENGTH, "bodyLength", 0,
                                            &out->body_length, err));
    return marble__fb_get_vector(&t, MARBLE_FB_MESSAGE_CUSTOM_METADATA, "custom_metadata", 4,
                                 &out->custom_metadata, NULL, err);
}

int marble__fb_read_schema(const marble__fb_table *t, marble__fb_schema *out, marble_error *err)
{
    memset(out, 0, sizeof *out);
    MARBLE_RETURN_NOT_OK(marble__fb_get_i16(t, MARBLE_FB_SCHEMA_ENDIANNESS, "endianness",
                                            MARBLE_FB_ENDIAN_LITTLE, &out->endianness, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_vector(t, MARBLE_FB_SCHEMA_FIELDS, "fields", 4,
                                               &out->fields, &out->has_fields, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_vector(t, MARBLE_FB_SCHEMA_CUSTOM_METADATA,
                                               "custom_metadata", 4, &out->custom_metadata, NULL,
                                               err));
    return marble__fb_get_vector(t, MARBLE_FB_SCHEMA_FEATURES, "features", 8, &out->features, NULL,
                                 err);
}

int marble__fb_read_field(const marble__fb_table *t, marble__fb_field *out, marble_error *err)
{
    marble__fb_table dict;
    memset(out, 0, sizeof *out);
    MARBLE_RETURN_NOT_OK(
        marble__fb_get_string(t, MARBLE_FB_FIELD_NAME, "name", &out->name, &out->name_len, err));
    MARBLE_RETURN_NOT_OK(
        marble__fb_get_u8(t, MARBLE_FB_FIELD_NULLABLE, "nullable", 0, &out->nullable, err));
    MARBLE_RETURN_NOT_OK(
        marble__fb_get_u8(t, MARBLE_FB_FIELD_TYPE_TYPE, "type_type", 0, &out->type_type, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_table(t, MARBLE_FB_FIELD_TYPE, "type",
                                              marble__fb_type_name(out->type_type), &out->type,
                                              &out->has_type, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_table(t, MARBLE_FB_FIELD_DICTIONARY, "dictionary",
                                              "DictionaryEncoding", &dict, &out->has_dictionary,
                                              err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_vector(t, MARBLE_FB_FIELD_CHILDREN, "children", 4,
                                               &out->children, &out->has_children, err));
    return marble__fb_get_vector(t, MARBLE_FB_FIELD_CUSTOM_METADATA, "custom_metadata", 4,
                                 &out->custom_metadata, NULL, err);
}

int marble__fb_read_keyvalue(const marble__fb_table *t, marble__fb_keyvalue *out, marble_error *err)
{
    memset(out, 0, sizeof *out);
    MARBLE_RETURN_NOT_OK(
        marble__fb_get_string(t, MARBLE_FB_KEYVALUE_KEY, "key", &out->key, &out->key_len, err));
    return marble__fb_get_string(t, MARBLE_FB_KEYVALUE_VALUE, "value", &out->value, &out->value_len,
                                 err);
}

int marble__fb_read_record_batch(const marble__fb_table *t, marble__fb_record_batch *out,
                                 marble_error *err)
{
    marble__fb_table comp;
    uint8_t codec = 0, method = 0;
    memset(out, 0, sizeof *out);
    MARBLE_RETURN_NOT_OK(
        marble__fb_get_i64(t, MARBLE_FB_RECORD_BATCH_LENGTH, "length", 0, &out->length, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_vector(t, MARBLE_FB_RECORD_BATCH_NODES, "nodes",
                                               MARBLE_FB_FIELD_NODE_SIZE, &out->nodes,
                                               &out->has_nodes, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_vector(t, MARBLE_FB_RECORD_BATCH_BUFFERS, "buffers",
                                               MARBLE_FB_BUFFER_SIZE, &out->buffers,
                                               &out->has_buffers, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_table(t, MARBLE_FB_RECORD_BATCH_COMPRESSION, "compression",
                                              "BodyCompression", &comp, &out->has_compression,
                                              err));
    if (out->has_compression) {
        MARBLE_RETURN_NOT_OK(marble__fb_get_u8(&comp, MARBLE_FB_BODY_COMPRESSION_CODEC, "codec",
                                               MARBLE_FB_CODEC_LZ4_FRAME, &codec, err));
        MARBLE_RETURN_NOT_OK(marble__fb_get_u8(&comp, MARBLE_FB_BODY_COMPRESSION_METHOD, "method",
                                               MARBLE_FB_METHOD_BUFFER, &method, err));
    }
    out->codec = (int8_t)codec;
    out->method = (int8_t)method;
    out->has_variadic_counts = marble__fb_has(t, MARBLE_FB_RECORD_BATCH_VARIADIC_BUFFER_COUNTS);
    return MARBLE_OK;
}

int marble__fb_read_footer(const uint8_t *buf, size_t size, marble__fb_footer *out,
                           marble_error *err)
{
    marble__fb_table t;
    memset(out, 0, sizeof *out);
    MARBLE_RETURN_NOT_OK(marble__fb_root(buf, size, "Footer", &t, err));
    MARBLE_RETURN_NOT_OK(
        marble__fb_get_i16(&t, MARBLE_FB_FOOTER_VERSION, "version", 0, &out->version, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_table(&t, MARBLE_FB_FOOTER_SCHEMA, "schema", "Schema",
                                              &out->schema, &out->has_schema, err));
    MARBLE_RETURN_NOT_OK(marble__fb_get_vector(&t, MARBLE_FB_FOOTER_DICTIONARIES, "dictionaries",
                                               MARBLE_FB_BLOCK_SIZE, &out->dictionaries, NULL,
                                               err));
    return marble__fb_get_vector(&t, MARBLE_FB_FOOTER_RECORD_BATCHES, "recordBatches",
                                 MARBLE_FB_BLOCK_SIZE, &out->record_batches, NULL, err);
}
