/*
 * Helpers shared by the Arrow layer's files (private to src/arrow/): buffer layouts per type,
 * 64-byte aligned growable buffers, arrays and schemas that own their memory (optionally keeping
 * an external owner alive for zero-copy buffers), the metadata encoding, bitmaps and UTF-8.
 *
 * Ownership: an array made by marble__arrow_array_init owns its buffer-pointer table, its child
 * structs, the buffers handed to it with adopt/alloc, and one reference to its owner (if any);
 * its release releases the children that still have a release (a moved-out child is left
 * alone), frees all of that and drops the owner reference. Each child made with
 * marble__arrow_array_init takes its own owner reference, so a child moved out of its parent
 * keeps the data alive by itself. A dictionary attached to such an array or schema must come from
 * malloc/calloc; release releases and frees it. Schemas made by marble__arrow_schema_init work the
 * same way (no owner).
 *
 * Invariants: memory from marble__arrow_alloc and marble__arrow_buffer is 64-byte aligned, and
 * its capacity is a multiple of 64 bytes whose unused tail is zero, so buffers can be written to
 * IPC bodies as they are (padded to 8 or 64).
 *
 * Thread safety: none of these helpers touch shared state; the owner's retain/release are called
 * from whatever thread makes or releases an array and must be thread-safe if arrays cross threads.
 */
#ifndef MARBLE_ARROW_INTERNAL_H
#define MARBLE_ARROW_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "marble/arrow.h"

#define MARBLE__ARROW_ALIGN 64

/* ---- layouts --------------------------------------------------------------------------------- */

/* How a type lays out its buffers in the C Data Interface and in IPC bodies (same order):
 *   null                 0 buffers
 *   struct               1: validity
 *   bool                 2: validity, values (1 bit each)
 *   fixed-width          2: validity, values (byte_width bytes each)
 *   utf8/binary          3: validity, int32 offsets (length + 1), data
 *   large_utf8/_binary   3: validity, int64 offsets (length + 1), data */
typedef struct marble__arrow_layout {
    int n_buffers;    /* buffers in the C struct and the IPC body */
    int has_validity; /* buffer 0 is a validity bitmap (every type but null) */
    int offset_bytes; /* 4 or 8 for variable width (buffer 1: offsets, buffer 2: data), else 0 */
    int value_bits;   /* fixed width: bits per value in buffer 1 (1 for bool), else 0 */
    int is_utf8;      /* utf8 / large_utf8 */
} marble__arrow_layout;

marble__arrow_layout marble__arrow_layout_of(const marble_arrow_type *t);

/* Bytes of a validity bitmap covering n values. */
static inline int64_t marble__arrow_bitmap_bytes(int64_t n)
{
    return (n + 7) / 8;
}

/* Bytes of the fixed-width values buffer covering n values ((n + 7) / 8 for bool, n * width
 * otherwise; 0 for layouts without one). */
int64_t marble__arrow_values_bytes(const marble__arrow_layout *l, int64_t n);

/* Offset i of an int32 (offset_bytes 4) or int64 (8) offsets buffer. */
static inline int64_t marble__arrow_offset_at(const void *offsets, int offset_bytes, int64_t i)
{
    if (offset_bytes == 4) return ((const int32_t *)offsets)[i];
    return ((const int64_t *)offsets)[i];
}

/* Parses schema->format; on failure the message names the column (schema->name). */
int marble__arrow_schema_type(const struct ArrowSchema *schema, marble_arrow_type *out,
                              marble_error *err);

/* The column name for messages: schema->name, or "" when absent. */
const char *marble__arrow_field_name(const struct ArrowSchema *schema);

/* ---- aligned memory -------------------------------------------------------------------------- */

/* n bytes (rounded up to a multiple of 64, at least 64), 64-byte aligned, all zero; NULL when out
 * of memory or n < 0. Free with marble__arrow_free. */
void *marble__arrow_alloc(int64_t n);
void marble__arrow_free(void *p);

/* A growable buffer (see Invariants above). Zero-initialize it ({0}) to start. */
typedef struct marble__arrow_buffer {
    uint8_t *data; /* NULL until the first reserve */
    int64_t size;  /* bytes in use */
    int64_t cap;   /* bytes allocated */
} marble__arrow_buffer;

/* Makes room for `additional` more bytes (geometric growth). */
int marble__arrow_buffer_reserve(marble__arrow_buffer *b, int64_t additional, marble_error *err);
int marble__arrow_buffer_append(marble__arrow_buffer *b, const void *data, int64_t n,
                                marble_error *err);
/* Appends n zero bytes. */
int marble__arrow_buffer_append_zeros(marble__arrow_buffer *b, int64_t n, marble_error *err);
/* Takes the data out (the caller frees it with marble__arrow_free, or adopts it into an array)
 * and leaves the buffer empty. Never NULL unless the buffer was never reserved. */
void *marble__arrow_buffer_take(marble__arrow_buffer *b);
void marble__arrow_buffer_free(marble__arrow_buffer *b);

/* ---- arrays that own their memory ------------------------------------------------------------ */

/* Something that keeps external memory alive (the IPC source's owner). retain/release may be
 * NULL (memory that outlives every array). */
typedef struct marble__arrow_owner {
    void *ctx;
    void (*retain)(void *ctx);
    void (*release)(void *ctx);
} marble__arrow_owner;

/* Makes *out an empty array with n_buffers (at most 64) NULL buffer slots and n_children zeroed
 * child structs (release NULL; fill each, e.g. with marble__arrow_array_init) and a release as
 * described in Ownership. owner (may be NULL) is retained once. On failure *out has release ==
 * NULL and nothing is retained. length, null_count and offset start at 0; the caller sets them. */
int marble__arrow_array_init(struct ArrowArray *out, int64_t n_buffers, int64_t n_children,
                             const marble__arrow_owner *owner, marble_error *err);
/* Gives buffer i to the array: `data` comes from marble__arrow_alloc (or marble__arrow_buffer_take)
 * and is freed on release. A buffer owned in slot i before is freed. */
void marble__arrow_array_adopt_buffer(struct ArrowArray *a, int64_t i, void *data);
/* Points buffer i at memory the array does not own (kept alive by the owner or the caller). */
void marble__arrow_array_set_buffer(struct ArrowArray *a, int64_t i, const void *data);
/* Allocates n bytes (marble__arrow_alloc) as buffer i; NULL when out of memory. */
void *marble__arrow_array_alloc_buffer(struct ArrowArray *a, int64_t i, int64_t n);

/* ---- schemas that own their memory ----------------------------------------------------------- */

/* Makes *out a schema owning copies of format, name (NULL allowed) and metadata (an encoded
 * blob, NULL allowed; its size is read from its own encoding, so it must be well-formed), with
 * `flags` and n_children zeroed child structs (release NULL) for the caller to fill. On failure
 * *out has release == NULL. */
int marble__arrow_schema_init(struct ArrowSchema *out, const char *format, const char *name,
                              const char *metadata, int64_t flags, int64_t n_children,
                              marble_error *err);

/* ---- metadata (C Data Interface encoding: int32 n, then n times int32 len + key bytes, int32 len
 * + value bytes; native endian, not NUL-terminated) ------------------------------------------- */

typedef struct marble__arrow_kv {
    const char *key;
    int32_t key_len;
    const char *value;
    int32_t value_len;
} marble__arrow_kv;

/* Encodes n pairs into a malloc'd blob (free()); *out is NULL when n == 0. *size receives its
 * size in bytes (may be NULL). */
int marble__arrow_metadata_encode(const marble__arrow_kv *kv, int64_t n, char **out, int64_t *size,
                                  marble_error *err);
/* Checks a blob (counts and lengths non-negative, sizes within limits) and returns its pairs in
 * a malloc'd array pointing into it (*out NULL when there are none; free()). metadata may be
 * NULL (no pairs). */
int marble__arrow_metadata_decode(const char *metadata, marble__arrow_kv **out, int64_t *n,
                                  marble_error *err);
/* Size in bytes of a well-formed blob (0 for NULL). */
int64_t marble__arrow_metadata_size(const char *metadata);

/* ---- bitmaps and UTF-8 ----------------------------------------------------------------------- */

static inline int marble__arrow_bit_get(const uint8_t *bits, int64_t i)
{
    return (bits[i >> 3] >> (i & 7)) & 1;
}

static inline void marble__arrow_bit_set(uint8_t *bits, int64_t i, int v)
{
    if (v)
        bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    else
        bits[i >> 3] &= (uint8_t) ~(1u << (i & 7));
}

/* Number of zero bits in bits[offset, offset + length). */
int64_t marble__arrow_bitmap_count_zeros(const uint8_t *bits, int64_t offset, int64_t length);
/* Copies bits[src_offset, src_offset + length) to dst[0, length); the rest of dst's last byte is
 * zeroed. dst holds marble__arrow_bitmap_bytes(length) bytes. */
void marble__arrow_bitmap_copy(uint8_t *dst, const uint8_t *src, int64_t src_offset,
                               int64_t length);

/* 1 if s[0, n) is valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF); else 0
 * and, if bad_at is not NULL, the byte position of the first invalid sequence. */
int marble__arrow_utf8_valid(const uint8_t *s, int64_t n, int64_t *bad_at);

#endif
