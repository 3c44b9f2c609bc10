/*
 * A small FlatBuffers codec for the Arrow IPC metadata (Schema.fbs, Message.fbs, File.fbs),
 * written from the FlatBuffers binary format: little-endian scalars, 32-bit unsigned offsets
 * that point forward from where they are stored, tables that start with a signed offset back to
 * their vtable (uint16 vtable size, uint16 table size, uint16 field offsets, 0 = absent),
 * vectors and strings prefixed with a uint32 count (strings NUL-terminated), unions as a uint8
 * type field followed (next vtable slot) by a table offset, and structs stored inline.
 *
 * The builder writes back to front, as the format intends: an object is created before anything
 * that refers to it, and is named by a marble__fb_ref (its distance from the end of the buffer),
 * which stays valid as the buffer grows. Scalars are always written, defaults included.
 *
 * The reader never trusts the buffer: every offset, vtable, table size, vector count and string
 * is checked against the buffer before it is used, and a bad one is MARBLE_ERR_CORRUPTION with a
 * message naming the table and field ("RecordBatch.buffers vector runs past the end of the
 * metadata"). Loads assemble bytes one by one, so unaligned buffers are fine.
 *
 * Thread safety: a builder is for one thread; the reader keeps no state beyond the structs the
 * caller holds.
 */
#ifndef MARBLE_ARROW_FLATBUF_H
#define MARBLE_ARROW_FLATBUF_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"

/* ---- Arrow's schema: vtable slots and enum values -------------------------------------------- */

enum {
    MARBLE_FB_V4 = 3, /* MetadataVersion */
    MARBLE_FB_V5 = 4,

    MARBLE_FB_HEADER_SCHEMA = 1, /* MessageHeader union */
    MARBLE_FB_HEADER_DICTIONARY_BATCH = 2,
    MARBLE_FB_HEADER_RECORD_BATCH = 3,
    MARBLE_FB_HEADER_TENSOR = 4,
    MARBLE_FB_HEADER_SPARSE_TENSOR = 5,

    MARBLE_FB_TYPE_NONE = 0, /* Type union */
    MARBLE_FB_TYPE_NULL = 1,
    MARBLE_FB_TYPE_INT = 2,
    MARBLE_FB_TYPE_FLOATING_POINT = 3,
    MARBLE_FB_TYPE_BINARY = 4,
    MARBLE_FB_TYPE_UTF8 = 5,
    MARBLE_FB_TYPE_BOOL = 6,
    MARBLE_FB_TYPE_DECIMAL = 7,
    MARBLE_FB_TYPE_DATE = 8,
    MARBLE_FB_TYPE_TIME = 9,
    MARBLE_FB_TYPE_TIMESTAMP = 10,
    MARBLE_FB_TYPE_INTERVAL = 11,
    MARBLE_FB_TYPE_LIST = 12,
    MARBLE_FB_TYPE_STRUCT = 13,
    MARBLE_FB_TYPE_UNION = 14,
    MARBLE_FB_TYPE_FIXED_SIZE_BINARY = 15,
    MARBLE_FB_TYPE_FIXED_SIZE_LIST = 16,
    MARBLE_FB_TYPE_MAP = 17,
    MARBLE_FB_TYPE_DURATION = 18,
    MARBLE_FB_TYPE_LARGE_BINARY = 19,
    MARBLE_FB_TYPE_LARGE_UTF8 = 20,
    MARBLE_FB_TYPE_LARGE_LIST = 21,

    MARBLE_FB_PRECISION_HALF = 0, /* Precision */
    MARBLE_FB_PRECISION_SINGLE = 1,
    MARBLE_FB_PRECISION_DOUBLE = 2,

    MARBLE_FB_DATE_DAY = 0, /* DateUnit; the Date table's default is MILLISECOND */
    MARBLE_FB_DATE_MILLISECOND = 1,

    MARBLE_FB_ENDIAN_LITTLE = 0, /* Endianness */
    MARBLE_FB_ENDIAN_BIG = 1,

    MARBLE_FB_FEATURE_DICTIONARY_REPLACEMENT = 1, /* Feature (long) */
    MARBLE_FB_FEATURE_COMPRESSED_BODY = 2,

    MARBLE_FB_CODEC_LZ4_FRAME = 0, /* CompressionType */
    MARBLE_FB_CODEC_ZSTD = 1,
    MARBLE_FB_METHOD_BUFFER = 0 /* BodyCompressionMethod */
};

/* Vtable slots (a union takes two: its type, then its value). */
enum {
    MARBLE_FB_MESSAGE_VERSION = 0,
    MARBLE_FB_MESSAGE_HEADER_TYPE = 1,
    MARBLE_FB_MESSAGE_HEADER = 2,
    MARBLE_FB_MESSAGE_BODY_LENGTH = 3,
    MARBLE_FB_MESSAGE_CUSTOM_METADATA = 4,

    MARBLE_FB_SCHEMA_ENDIANNESS = 0,
    MARBLE_FB_SCHEMA_FIELDS = 1,
    MARBLE_FB_SCHEMA_CUSTOM_METADATA = 2,
    MARBLE_FB_SCHEMA_FEATURES = 3,

    MARBLE_FB_FIELD_NAME = 0,
    MARBLE_FB_FIELD_NULLABLE = 1,
    MARBLE_FB_FIELD_TYPE_TYPE = 2,
    MARBLE_FB_FIELD_TYPE = 3,
    MARBLE_FB_FIELD_DICTIONARY = 4,
    MARBLE_FB_FIELD_CHILDREN = 5,
    MARBLE_FB_FIELD_CUSTOM_METADATA = 6,

    MARBLE_FB_KEYVALUE_KEY = 0,
    MARBLE_FB_KEYVALUE_VALUE = 1,

    MARBLE_FB_INT_BIT_WIDTH = 0,
    MARBLE_FB_INT_IS_SIGNED = 1,
    MARBLE_FB_FLOATING_POINT_PRECISION = 0,
    MARBLE_FB_FIXED_SIZE_BINARY_BYTE_WIDTH = 0,
    MARBLE_FB_DATE_UNIT = 0,
    MARBLE_FB_TIMESTAMP_UNIT = 0,
    MARBLE_FB_TIMESTAMP_TIMEZONE = 1,

    MARBLE_FB_RECORD_BATCH_LENGTH = 0,
    MARBLE_FB_RECORD_BATCH_NODES = 1,
    MARBLE_FB_RECORD_BATCH_BUFFERS = 2,
    MARBLE_FB_RECORD_BATCH_COMPRESSION = 3,
    MARBLE_FB_RECORD_BATCH_VARIADIC_BUFFER_COUNTS = 4,

    MARBLE_FB_BODY_COMPRESSION_CODEC = 0,
    MARBLE_FB_BODY_COMPRESSION_METHOD = 1,

    MARBLE_FB_FOOTER_VERSION = 0,
    MARBLE_FB_FOOTER_SCHEMA = 1,
    MARBLE_FB_FOOTER_DICTIONARIES = 2,
    MARBLE_FB_FOOTER_RECORD_BATCHES = 3,
    MARBLE_FB_FOOTER_CUSTOM_METADATA = 4
};

/* Struct sizes (FieldNode and Buffer: two int64; Block: int64, int32, 4 bytes padding, int64). */
#define MARBLE_FB_FIELD_NODE_SIZE 16
#define MARBLE_FB_BUFFER_SIZE 16
#define MARBLE_FB_BLOCK_SIZE 24

/* ---- little-endian loads and stores ---------------------------------------------------------- */

static inline uint16_t marble__fb_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t marble__fb_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t marble__fb_le64(const uint8_t *p)
{
    return (uint64_t)marble__fb_le32(p) | ((uint64_t)marble__fb_le32(p + 4) << 32);
}

static inline void marble__fb_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void marble__fb_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- builder --------------------------------------------------------------------------------- */

#define MARBLE_FB_MAX_SLOTS 16

typedef uint32_t marble__fb_ref; /* 0: none */

typedef struct marble__fb_builder {
    uint8_t *buf; /* data occupies buf[cap - size, cap) */
    size_t cap;
    size_t size;
    size_t minalign; /* the largest alignment asked for so far */
    int failed;      /* out of memory or a misuse; reported by finish */
    int in_table;
    size_t table_start;
    int n_slots;
    uint32_t slots[MARBLE_FB_MAX_SLOTS]; /* where each field of the open table lies (0: absent) */
} marble__fb_builder;

void marble__fb_builder_init(marble__fb_builder *b);
void marble__fb_builder_free(marble__fb_builder *b);

/* Objects (not while a table is open). */
marble__fb_ref marble__fb_string(marble__fb_builder *b, const char *s, size_t len);
/* A vector of `count` structs (or scalars) of elem_size bytes each, already encoded little-endian
 * in `data`, aligned to `align`. */
marble__fb_ref marble__fb_vector_raw(marble__fb_builder *b, const void *data, size_t elem_size,
                                     size_t count, size_t align);
/* A vector of offsets to objects (tables, strings). */
marble__fb_ref marble__fb_vector_refs(marble__fb_builder *b, const marble__fb_ref *refs,
                                      size_t count);

/* Tables: start, add fields by vtable slot (< MARBLE_FB_MAX_SLOTS), end. */
void marble__fb_table_start(marble__fb_builder *b);
void marble__fb_add_i64(marble__fb_builder *b, int slot, int64_t v);
void marble__fb_add_i32(marble__fb_builder *b, int slot, int32_t v);
void marble__fb_add_i16(marble__fb_builder *b, int slot, int16_t v);
void marble__fb_add_u8(marble__fb_builder *b, int slot, uint8_t v);
void marble__fb_add_ref(marble__fb_builder *b, int slot, marble__fb_ref ref);
marble__fb_ref marble__fb_table_end(marble__fb_builder *b);

/* Writes the root offset and returns the finished buffer (owned by the builder, valid until the
 * next call on it); its size is a multiple of the largest alignment used (at least 8).
 * MARBLE_ERR_NO_MEMORY or MARBLE_ERR_INTERNAL (a misuse) if any step failed. */
int marble__fb_finish(marble__fb_builder *b, marble__fb_ref root, const uint8_t **data,
                      size_t *size, marble_error *err);

/* ---- reader ---------------------------------------------------------------------------------- */

/* A table whose vtable and inline part are known to lie inside the buffer. */
typedef struct marble__fb_table {
    const uint8_t *buf;
    size_t size;
    size_t pos;        /* table start */
    size_t vt;         /* vtable start */
    uint16_t vt_size;  /* bytes */
    uint16_t tab_size; /* bytes of the inline part */
    const char *name;  /* "RecordBatch", for messages */
} marble__fb_table;

/* A vector whose elements are known to lie inside the buffer. */
typedef struct marble__fb_vector {
    const uint8_t *buf;
    size_t size;
    size_t pos; /* first element */
    uint32_t count;
    size_t elem_size;
    const char *table; /* owning table and field, for messages */
    const char *field;
} marble__fb_vector;

/* The root table of a buffer. `what` names the buffer in messages ("Message", "Footer"). */
int marble__fb_root(const uint8_t *buf, size_t size, const char *what, marble__fb_table *out,
                    marble_error *err);

/* 1 if the table has field `slot`. */
int marble__fb_has(const marble__fb_table *t, int slot);

/* Scalars: `def` when absent; CORRUPTION if the field runs past the table. */
int marble__fb_get_i64(const marble__fb_table *t, int slot, const char *field, int64_t def,
                       int64_t *out, marble_error *err);
int marble__fb_get_i32(const marble__fb_table *t, int slot, const char *field, int32_t def,
                       int32_t *out, marble_error *err);
int marble__fb_get_i16(const marble__fb_table *t, int slot, const char *field, int16_t def,
                       int16_t *out, marble_error *err);
int marble__fb_get_u8(const marble__fb_table *t, int slot, const char *field, uint8_t def,
                      uint8_t *out, marble_error *err);

/* A sub-table; *present is 0 (and *out untouched) when absent. `type` names the child table. */
int marble__fb_get_table(const marble__fb_table *t, int slot, const char *field, const char *type,
                         marble__fb_table *out, int *present, marble_error *err);
/* A string (not copied; NUL-terminated in the buffer, but may hold NULs); absent: *s NULL. */
int marble__fb_get_string(const marble__fb_table *t, int slot, const char *field, const char **s,
                          size_t *len, marble_error *err);
/* A vector of elem_size-byte elements; absent: count 0 and *present 0 (present may be NULL). */
int marble__fb_get_vector(const marble__fb_table *t, int slot, const char *field, size_t elem_size,
                          marble__fb_vector *out, int *present, marble_error *err);

/* Element i (< count) of a vector of structs or scalars. */
static inline const uint8_t *marble__fb_vector_at(const marble__fb_vector *v, uint32_t i)
{
    return v->buf + v->pos + (size_t)i * v->elem_size;
}
/* Element i (< count) of a vector of tables. `type` names the element table. */
int marble__fb_vector_table(const marble__fb_vector *v, uint32_t i, const char *type,
                            marble__fb_table *out, marble_error *err);

/* ---- Arrow tables, decoded ------------------------------------------------------------------- */

/* "Int", "Decimal", ... for a Type union id; "unknown" beyond the list. */
const char *marble__fb_type_name(uint8_t type_type);
/* "Schema", "RecordBatch", ... for a MessageHeader union id. */
const char *marble__fb_header_name(uint8_t header_type);

typedef struct marble__fb_message {
    int16_t version;
    uint8_t header_type;
    int has_header;
    marble__fb_table header;
    int64_t body_length;
    marble__fb_vector custom_metadata; /* of KeyValue */
} marble__fb_message;

int marble__fb_read_message(const uint8_t *buf, size_t size, marble__fb_message *out,
                            marble_error *err);

typedef struct marble__fb_schema {
    int16_t endianness;
    int has_fields;
    marble__fb_vector fields;          /* of Field */
    marble__fb_vector custom_metadata; /* of KeyValue */
    marble__fb_vector features;        /* of int64 */
} marble__fb_schema;

int marble__fb_read_schema(const marble__fb_table *t, marble__fb_schema *out, marble_error *err);

typedef struct marble__fb_field {
    const char *name; /* NULL when absent */
    size_t name_len;
    uint8_t nullable;
    uint8_t type_type;
    int has_type;
    marble__fb_table type;
    int has_dictionary;
    int has_children;
    marble__fb_vector children;        /* of Field */
    marble__fb_vector custom_metadata; /* of KeyValue */
} marble__fb_field;

int marble__fb_read_field(const marble__fb_table *t, marble__fb_field *out, marble_error *err);

typedef struct marble__fb_keyvalue {
    const char *key; /* NULL when absent */
    size_t key_len;
    const char *value; /* NULL when absent */
    size_t value_len;
} marble__fb_keyvalue;

int marble__fb_read_keyvalue(const marble__fb_table *t, marble__fb_keyvalue *out,
                             marble_error *err);

typedef struct marble__fb_record_batch {
    int64_t length;
    int has_nodes, has_buffers;
    marble__fb_vector nodes;   /* of FieldNode */
    marble__fb_vector buffers; /* of Buffer */
    int has_compression;
    int8_t codec;
    int8_t method;
    int has_variadic_counts;
} marble__fb_record_batch;

int marble__fb_read_record_batch(const marble__fb_table *t, marble__fb_record_batch *out,
                                 marble_error *err);

typedef struct marble__fb_footer {
    int16_t version;
    int has_schema;
    marble__fb_table schema;
    marble__fb_vector dictionaries;   /* of Block */
    marble__fb_vector record_batches; /* of Block */
} marble__fb_footer;

int marble__fb_read_footer(const uint8_t *buf, size_t size, marble__fb_footer *out,
                           marble_error *err);

/* Struct elements of the vectors above. */
typedef struct marble__fb_pair {
    int64_t a, b; /* FieldNode: length, null_count; Buffer: offset, length */
} marble__fb_pair;

static inline marble__fb_pair marble__fb_pair_at(const marble__fb_vector *v, uint32_t i)
{
    const uint8_t *p = marble__fb_vector_at(v, i);
    marble__fb_pair r = {(int64_t)marble__fb_le64(p), (int64_t)marble__fb_le64(p + 8)};
    return r;
}

typedef struct marble__fb_block {
    int64_t offset;
    int32_t metadata_length;
    int64_t body_length;
} marble__fb_block;

static inline marble__fb_block marble__fb_block_at(const marble__fb_vector *v, uint32_t i)
{
    const uint8_t *p = marble__fb_vector_at(v, i);
    marble__fb_block r = {(int64_t)marble__fb_le64(p), (int32_t)marble__fb_le32(p + 8),
                          (int64_t)marble__fb_le64(p + 16)};
    return r;
}

#endif
