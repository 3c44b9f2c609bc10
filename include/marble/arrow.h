/*
 * Marble's Arrow layer: the Arrow C Data Interface and C Stream Interface, record-batch builders,
 * validation of foreign arrays, and the Arrow IPC stream and file formats (with LZ4_FRAME and
 * ZSTD body compression). Written from the Arrow specification; it depends only on marble/base.
 *
 * Data comes in and goes out as `struct ArrowSchema` + `struct ArrowArray` (a record batch is a
 * struct-typed array, format "+s", whose children are the columns) or as an ArrowArrayStream.
 *
 * Supported types (format strings of the C Data Interface): null "n", bool "b", int8..int64
 * "c" "s" "i" "l", uint8..uint64 "C" "S" "I" "L", float32 "f", float64 "g", utf8 "u",
 * large_utf8 "U", binary "z", large_binary "Z", fixed_size_binary "w:N", date32 "tdD",
 * timestamp "tss:TZ" "tsm:TZ" "tsu:TZ" "tsn:TZ" (TZ may be empty), and struct "+s" for the
 * batch itself; all nullable. Others are MARBLE_ERR_UNSUPPORTED naming the format. The type
 * model (marble_arrow_type) has room for nested and dictionary types (children, a dictionary
 * pointer) without a rewrite.
 *
 * Ownership: every ArrowSchema / ArrowArray / ArrowArrayStream handed out by this library is
 * released by calling its `release`; release sets `release` to NULL. A move is a plain struct
 * copy followed by setting the source's `release` to NULL (marble_arrow_*_move). Arrays read
 * from IPC data point into it (zero copy) whenever the layout allows (uncompressed bodies) and
 * keep the data alive through the owner given to the reader.
 *
 * Errors: MARBLE_OK or a code, with a message naming the column, buffer, offset or IPC field that
 * is wrong. Corrupt or truncated input is MARBLE_ERR_CORRUPTION (IPC) or
 * MARBLE_ERR_INVALID_ARGUMENT (a foreign array), never an out-of-bounds access.
 *
 * Thread safety: builders, writers and readers are for one thread at a time; finished arrays
 * and schemas are immutable and may be read from any thread (release from one).
 */
#ifndef MARBLE_ARROW_H
#define MARBLE_ARROW_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the C Data Interface (ABI from the Arrow specification) ----------------------------------
 */

#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

#endif /* ARROW_C_DATA_INTERFACE */

#ifndef ARROW_C_STREAM_INTERFACE
#define ARROW_C_STREAM_INTERFACE

struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};

#endif /* ARROW_C_STREAM_INTERFACE */

/* ---- types ----------------------------------------------------------------------------------- */

typedef enum marble_arrow_type_id {
    MARBLE_ARROW_NA = 0,
    MARBLE_ARROW_BOOL,
    MARBLE_ARROW_INT8,
    MARBLE_ARROW_INT16,
    MARBLE_ARROW_INT32,
    MARBLE_ARROW_INT64,
    MARBLE_ARROW_UINT8,
    MARBLE_ARROW_UINT16,
    MARBLE_ARROW_UINT32,
    MARBLE_ARROW_UINT64,
    MARBLE_ARROW_FLOAT32,
    MARBLE_ARROW_FLOAT64,
    MARBLE_ARROW_UTF8,
    MARBLE_ARROW_LARGE_UTF8,
    MARBLE_ARROW_BINARY,
    MARBLE_ARROW_LARGE_BINARY,
    MARBLE_ARROW_FIXED_SIZE_BINARY,
    MARBLE_ARROW_DATE32,
    MARBLE_ARROW_TIMESTAMP,
    MARBLE_ARROW_STRUCT
} marble_arrow_type_id;

typedef enum marble_time_unit {
    MARBLE_TIME_SECOND = 0,
    MARBLE_TIME_MILLI = 1,
    MARBLE_TIME_MICRO = 2,
    MARBLE_TIME_NANO = 3
} marble_time_unit;

/* A parsed format string. */
typedef struct marble_arrow_type {
    marble_arrow_type_id id;
    int32_t byte_width;    /* FIXED_SIZE_BINARY: N; other fixed-width types: their width in
                              bytes; bool (bit-packed) and variable-width types: 0 */
    marble_time_unit unit; /* TIMESTAMP */
    char timezone[64];     /* TIMESTAMP; "" when none */
} marble_arrow_type;

/* Parses a C Data Interface format string. */
MARBLE_API int marble_arrow_type_parse(const char *format, marble_arrow_type *out,
                                       marble_error *err);
/* Writes the format string of `t` into buf (at most cap bytes; MARBLE_ERR_LIMIT if too small). */
MARBLE_API int marble_arrow_type_format(const marble_arrow_type *t, char *buf, size_t cap,
                                        marble_error *err);
/* "int64", "utf8", "timestamp[us, tz=UTC]", ... (static or written into buf). */
MARBLE_API const char *marble_arrow_type_name(const marble_arrow_type *t, char *buf, size_t cap);

/* ---- schemas --------------------------------------------------------------------------------- */

typedef struct marble_field_spec {
    const char *name;
    const char *format; /* C Data Interface format string */
    int nullable;
} marble_field_spec;

/* Makes a struct ("+s") schema with one child per field. `metadata` may be NULL, else n_metadata
 * key/value pairs (keys[i], values[i]) stored in the Arrow metadata encoding. */
MARBLE_API int marble_arrow_schema_make(struct ArrowSchema *out, const marble_field_spec *fields,
                                        size_t n, const char *const *meta_keys,
                                        const char *const *meta_values, size_t n_metadata,
                                        marble_error *err);
/* Parses "id:int64,name:utf8,v:float64,t:timestamp[us,UTC]" (type names as
 * marble_arrow_type_name prints them, or raw format strings) into a struct schema. Columns are
 * nullable unless suffixed with '!' ("id:int64!"). */
MARBLE_API int marble_arrow_schema_parse(const char *text, struct ArrowSchema *out,
                                         marble_error *err);
/* Deep copy (the copy has its own release). */
MARBLE_API int marble_arrow_schema_copy(const struct ArrowSchema *src, struct ArrowSchema *dst,
                                        marble_error *err);
/* Checks a foreign schema: format strings supported, children well-formed, metadata encoding in
 * bounds. */
MARBLE_API int marble_arrow_schema_validate(const struct ArrowSchema *schema, marble_error *err);
/* Metadata lookup: the value of `key` (copied into buf, NUL-terminated), MARBLE_ERR_NOT_FOUND, or
 * MARBLE_ERR_LIMIT when buf is NULL or too small. */
MARBLE_API int marble_arrow_metadata_get(const char *metadata, const char *key, char *buf,
                                         size_t cap, marble_error *err);

MARBLE_API void marble_arrow_schema_move(struct ArrowSchema *src, struct ArrowSchema *dst);
MARBLE_API void marble_arrow_array_move(struct ArrowArray *src, struct ArrowArray *dst);
MARBLE_API void marble_arrow_stream_move(struct ArrowArrayStream *src,
                                         struct ArrowArrayStream *dst);
/* Call release if set (NULL-safe). */
MARBLE_API void marble_arrow_schema_release(struct ArrowSchema *s);
MARBLE_API void marble_arrow_array_release(struct ArrowArray *a);
MARBLE_API void marble_arrow_stream_release(struct ArrowArrayStream *st);

/* ---- validation of arrays -------------------------------------------------------------------- */

enum marble_validate_flags {
    MARBLE_VALIDATE_DEFAULT = 0, /* structure: buffer counts, lengths, offsets, null counts */
    MARBLE_VALIDATE_UTF8 = 1     /* and every utf8 / large_utf8 value is valid UTF-8 */
};

/* Checks that `array` is a well-formed array of `schema`'s type (recursively for struct):
 * n_buffers and n_children as the type requires, non-NULL buffers where needed (NULL is allowed
 * for zero-sized buffers), length, offset and null_count consistent (a null_count of -1 is
 * accepted and a bitmap's zero bits must match a given count), offsets non-negative and
 * monotonic, and what `flags` ask for. It cannot know buffer sizes, so it trusts that buffers
 * are as long as the lengths and offsets say. */
MARBLE_API int marble_arrow_array_validate(const struct ArrowSchema *schema,
                                           const struct ArrowArray *array, int flags,
                                           marble_error *err);

/* ---- building record batches ----------------------------------------------------------------- */

typedef struct marble_batch_builder marble_batch_builder;

/* A builder for struct arrays (record batches) of `schema` (copied). */
MARBLE_API int marble_batch_builder_create(const struct ArrowSchema *schema,
                                           marble_batch_builder **out, marble_error *err);
MARBLE_API void marble_batch_builder_destroy(marble_batch_builder *b);
/* Appends one value to column `col`. Every column must receive the same number of values before
 * finish. Type mismatches (e.g. a string into an int64 column, a value out of an int8's range)
 * are MARBLE_ERR_INVALID_ARGUMENT naming the column. bool columns take append_int (0/1).
 * Timestamps and date32 take append_int with the raw value. */
MARBLE_API int marble_builder_append_null(marble_batch_builder *b, int col, marble_error *err);
MARBLE_API int marble_builder_append_int(marble_batch_builder *b, int col, int64_t v,
                                         marble_error *err);
MARBLE_API int marble_builder_append_uint(marble_batch_builder *b, int col, uint64_t v,
                                          marble_error *err);
MARBLE_API int marble_builder_append_double(marble_batch_builder *b, int col, double v,
                                            marble_error *err);
/* utf8/large_utf8 (validated as UTF-8), binary/large_binary, fixed_size_binary (len must be N). */
MARBLE_API int marble_builder_append_bytes(marble_batch_builder *b, int col, const void *data,
                                           size_t len, marble_error *err);
/* Rows appended so far (the length of column 0). */
MARBLE_API int64_t marble_batch_builder_rows(const marble_batch_builder *b);
/* Moves the built batch into *out (a "+s" array) and resets the builder for the next batch. */
MARBLE_API int marble_batch_builder_finish(marble_batch_builder *b, struct ArrowArray *out,
                                           marble_error *err);

/* ---- reading values (for tests and tools) ---------------------------------------------------- */

/* These parse the format on every call: fine for tests and tools, not for hot loops. The getters
 * cannot report errors: an index out of range, an unsupported type or an unrepresentable value
 * gives 0, and a null slot gives whatever is stored under it, so check marble_arrow_is_null
 * first. */

/* 1 if element i of `a` (an array, not a batch) is null (also for an index out of range). */
MARBLE_API int marble_arrow_is_null(const struct ArrowArray *a, int64_t i);
/* Element i of a fixed-width or variable-width column as a byte range (booleans:
 * MARBLE_ERR_UNSUPPORTED; use marble_arrow_get_int). */
MARBLE_API int marble_arrow_get_bytes(const struct ArrowSchema *s, const struct ArrowArray *a,
                                      int64_t i, const void **data, size_t *len);
MARBLE_API int64_t marble_arrow_get_int(const struct ArrowSchema *s, const struct ArrowArray *a,
                                        int64_t i);
MARBLE_API uint64_t marble_arrow_get_uint(const struct ArrowSchema *s, const struct ArrowArray *a,
                                          int64_t i);
MARBLE_API double marble_arrow_get_double(const struct ArrowSchema *s, const struct ArrowArray *a,
                                          int64_t i);

/* ---- IPC ------------------------------------------------------------------------------------- */

typedef enum marble_ipc_format {
    MARBLE_IPC_STREAM = 0, /* the streaming format (schema, batches, end-of-stream marker) */
    MARBLE_IPC_FILE = 1    /* the file format, "Feather v2" (magic, stream, footer, magic) */
} marble_ipc_format;

typedef enum marble_ipc_compression {
    MARBLE_IPC_UNCOMPRESSED = 0,
    MARBLE_IPC_LZ4_FRAME = 1,
    MARBLE_IPC_ZSTD = 2
} marble_ipc_compression;

/* Where a writer's bytes go: write(ctx, data, n) appends n bytes, returning MARBLE_OK or a code
 * (with a message in err). The library never seeks. */
typedef struct marble_ipc_sink {
    int (*write)(void *ctx, const void *data, size_t n, marble_error *err);
    void *ctx;
} marble_ipc_sink;

typedef struct marble_ipc_write_options {
    marble_ipc_format format;
    marble_ipc_compression compression;
    int compression_level; /* 0: the codec's default */
    int alignment;         /* buffer alignment in the body: 8 (default, 0 means 8) or 64 */
} marble_ipc_write_options;

typedef struct marble_ipc_writer marble_ipc_writer;

/* Starts writing: the schema (a "+s" schema with its metadata, copied) is written at once. */
MARBLE_API int marble_ipc_writer_create(marble_ipc_sink sink, const struct ArrowSchema *schema,
                                        const marble_ipc_write_options *opts,
                                        marble_ipc_writer **out, marble_error *err);
/* Writes one record batch (a "+s" array of the writer's schema; validated first). The array is
 * not consumed. */
MARBLE_API int marble_ipc_writer_write(marble_ipc_writer *w, const struct ArrowArray *batch,
                                       marble_error *err);
/* Writes the end-of-stream marker (stream) or the footer and magic (file). */
MARBLE_API int marble_ipc_writer_finish(marble_ipc_writer *w, marble_error *err);
/* As finish, for the file format only (a stream writer: MARBLE_ERR_INVALID_ARGUMENT), with
 * `appendix` (len bytes, copied; NULL allowed when len is 0) written after the end-of-stream
 * marker and before the footer, followed by zero bytes up to a multiple of 8 so the footer stays
 * aligned. Arrow readers never see it: file readers follow the footer's block offsets and stream
 * readers stop at the end-of-stream marker. The appendix therefore ends exactly where the footer
 * starts (file size - 10 - footer length, the footer length being the int32 before the closing
 * "ARROW1"), which is how its owner finds it again; when len is a multiple of 8 no padding
 * separates them. */
MARBLE_API int marble_ipc_writer_finish_appendix(marble_ipc_writer *w, const void *appendix,
                                                 size_t len, marble_error *err);
/* Frees (without finishing if finish was not called). Accepts NULL. */
MARBLE_API void marble_ipc_writer_destroy(marble_ipc_writer *w);

/* An immutable byte range the reader may point into. On success the reader takes one reference:
 * retain(owner) is called once, if set; release(owner) is called exactly once, when the reader,
 * its streams and every array made from it are gone, from whichever thread drops the last one.
 * A failed open calls neither. Both may be NULL for memory that outlives everything. */
typedef struct marble_ipc_source {
    const uint8_t *data;
    size_t size;
    void *owner;
    void (*retain)(void *owner);
    void (*release)(void *owner);
} marble_ipc_source;

typedef struct marble_ipc_reader marble_ipc_reader;

/* Opens IPC data in memory. The format (file or stream) is detected from the magic bytes. The
 * schema and, for files, the footer are read and checked at once. */
MARBLE_API int marble_ipc_reader_open(const marble_ipc_source *src, marble_ipc_reader **out,
                                      marble_error *err);
MARBLE_API void marble_ipc_reader_destroy(marble_ipc_reader *r);
MARBLE_API marble_ipc_format marble_ipc_reader_format(const marble_ipc_reader *r);
/* A copy of the schema (release it). */
MARBLE_API int marble_ipc_reader_schema(marble_ipc_reader *r, struct ArrowSchema *out,
                                        marble_error *err);
/* Number of record batches: from the footer for files; for streams, counted on open. */
MARBLE_API int64_t marble_ipc_reader_num_batches(const marble_ipc_reader *r);
/* Record batch i as a "+s" array. Uncompressed buffers point into the source (zero copy);
 * compressed ones are decompressed into owned memory. The array keeps the source alive. The
 * batch is validated structurally (MARBLE_VALIDATE_DEFAULT); call marble_arrow_array_validate
 * with MARBLE_VALIDATE_UTF8 as well when utf8 columns of untrusted files must be valid UTF-8. */
MARBLE_API int marble_ipc_reader_read(marble_ipc_reader *r, int64_t i, struct ArrowArray *out,
                                      marble_error *err);
/* An ArrowArrayStream over every batch; it keeps what it needs alive (the reader may be
 * destroyed after this call). As the C Stream Interface requires, its callbacks return errno
 * codes (EIO, ENOMEM, EINVAL, ENOTSUP) and get_last_error gives the message. */
MARBLE_API int marble_ipc_reader_stream(marble_ipc_reader *r, struct ArrowArrayStream *out,
                                        marble_error *err);

/* Convenience: a sink that appends to a growable memory buffer (free *data with free()). */
typedef struct marble_ipc_buffer {
    uint8_t *data;
    size_t size, cap;
} marble_ipc_buffer;
MARBLE_API marble_ipc_sink marble_ipc_buffer_sink(marble_ipc_buffer *buf);

#ifdef __cplusplus
}
#endif
#endif
