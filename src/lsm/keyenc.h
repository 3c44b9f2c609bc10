/*
 * Order-preserving key encoding (private to the LSM layer): the key columns of a row become one
 * byte string such that memcmp order of two encodings equals the tuple order of the keys (column
 * 1 first, then 2, ...), so every key comparison in memtables, SSTables and merges is a memcmp.
 *
 * Format, per key column in order:
 *   marker    one byte: 0x00 null (then nothing else for this column), 0x01 a value; nulls sort
 *             before every value
 *   bool      one byte 0x00 / 0x01
 *   intN      N/8 bytes big-endian with the sign bit flipped (int8..int64, date32 as int32,
 *             timestamp as int64)
 *   uintN     N/8 bytes big-endian
 *   float32   4 / 8 bytes (float64) of the IEEE bits big-endian, all bits flipped for negatives
 *   float64   and only the sign bit flipped for positives. -0.0 is encoded as +0.0 (they are the
 *             same key; decoding gives +0.0). Every NaN is encoded as the one canonical quiet NaN
 *             and sorts after +inf (all NaNs are the same key).
 *   utf8,     the bytes with each 0x00 written as 0x00 0xFF, then the terminator 0x00 0x00: a
 *   binary    string sorts before every string it is a proper prefix of, and the end of a column
 *             is unambiguous in composite keys (also for large_utf8 / large_binary)
 *   fixed_size_binary[N]  the N bytes as they are
 * Timestamps compare by their raw int64: a key column has one unit and timezone (that of the
 * schema the encoder was made from), and keys made from different units or timezones must not be
 * mixed. Likewise an encoding is only comparable with encodings of the same key column types.
 *
 * A prefix of the key columns (the first k of them) encodes to a byte prefix of the full key, so
 * marble__key_prefix_successor of an encoded prefix bounds a prefix scan.
 *
 * Errors: MARBLE_ERR_UNSUPPORTED (a key column type that cannot be a key), INVALID_ARGUMENT (a
 * column index out of range, a batch that does not match, a null where nulls are rejected, a
 * value out of the column's range), CORRUPTION (decoding bytes that are not a key), NO_MEMORY;
 * messages name the column. Reads stay within the lengths and offsets of the arrays (which, as
 * for marble_arrow_array_validate, are trusted to match their buffers) and of encoded keys.
 *
 * Thread safety: an initialized encoder is immutable and may be shared by threads; a
 * marble__bytes is for one thread at a time.
 */
#ifndef MARBLE_LSM_KEYENC_H
#define MARBLE_LSM_KEYENC_H

#include <stddef.h>
#include <stdint.h>

#include "marble/arrow.h"

#define MARBLE__KEY_MAX_COLS 32

#define MARBLE__KEY_NULL 0x00
#define MARBLE__KEY_VALUE 0x01

/* A growable byte buffer (malloc'd). Zero-initialize it ({0}) to start; free with
 * marble__bytes_free. */
typedef struct marble__bytes {
    uint8_t *data;
    size_t len;
    size_t cap;
} marble__bytes;

/* Makes room for `additional` more bytes (geometric growth). */
int marble__bytes_reserve(marble__bytes *b, size_t additional, marble_error *err);
int marble__bytes_append(marble__bytes *b, const void *data, size_t n, marble_error *err);
void marble__bytes_free(marble__bytes *b);

enum marble__key_flags {
    MARBLE__KEY_DEFAULT = 0,
    MARBLE__KEY_REJECT_NULLS = 1 /* a null key value is MARBLE_ERR_INVALID_ARGUMENT */
};

typedef struct marble__key_column {
    int col;                /* index of the column in the batch */
    marble_arrow_type type; /* its parsed type */
    char name[64];          /* its name, for messages (truncated) */
} marble__key_column;

/* Caller-allocated; holds no memory and no pointer into the schema (nothing to free). */
typedef struct marble__key_encoder {
    int nkeys;
    int flags;
    int n_schema_cols;
    marble__key_column keys[MARBLE__KEY_MAX_COLS];
} marble__key_encoder;

/* Prepares an encoder for the key columns key_cols[0, nkeys) (1 <= nkeys <= MARBLE__KEY_MAX_COLS)
 * of `schema` (a "+s" schema). Every key type listed above is supported; null and struct columns
 * are MARBLE_ERR_UNSUPPORTED, an index out of range or a repeated index INVALID_ARGUMENT. */
int marble__key_encoder_init(marble__key_encoder *e, const struct ArrowSchema *schema,
                             const int *key_cols, int nkeys, int flags, marble_error *err);

/* Appends the encoded key of row `row` of `batch` (a "+s" array of the encoder's schema) to
 * *out. On failure out->len is as it was. */
int marble__key_encode_row(const marble__key_encoder *e, const struct ArrowArray *batch,
                           int64_t row, marble__bytes *out, marble_error *err);

/* Appends the keys of every row of `batch` to *out, one after another: row i occupies
 * out->data[offsets[i], offsets[i + 1]). `offsets` holds batch->length + 1 entries (caller
 * allocated); offsets[0] is out->len on entry. On failure out->len is as it was. */
int marble__key_encode_batch(const marble__key_encoder *e, const struct ArrowArray *batch,
                             marble__bytes *out, size_t *offsets, marble_error *err);

/* A typed key value, as C code gives it for point lookups and as decoding returns it. */
typedef enum marble__key_value_kind {
    MARBLE__KV_NULL = 0,
    MARBLE__KV_INT,    /* signed ints, bool (0/1), date32, timestamp */
    MARBLE__KV_UINT,   /* unsigned ints */
    MARBLE__KV_DOUBLE, /* float32, float64 */
    MARBLE__KV_BYTES   /* utf8, binary (and large), fixed_size_binary */
} marble__key_value_kind;

typedef struct marble__key_value {
    marble__key_value_kind kind;
    int64_t i;
    uint64_t u;
    double d;
    const uint8_t *bytes;
    size_t len;
} marble__key_value;

/* Appends the encoding of vals[0, n) as the first n key columns (1 <= n <= nkeys; n < nkeys gives
 * a key prefix). Integer columns take INT or UINT within their range, bool INT 0/1, floats
 * DOUBLE (float32: only values a float represents exactly, or NaN), byte columns BYTES
 * (fixed_size_binary: exactly N bytes; utf8 is not checked for valid UTF-8), any column NULL
 * unless nulls are rejected. On failure out->len is as it was. */
int marble__key_encode_values(const marble__key_encoder *e, const marble__key_value *vals, int n,
                              marble__bytes *out, marble_error *err);

/* Decodes key[0, len) into vals[0, nkeys). BYTES values are unescaped into *scratch (reset
 * first) and point into it, valid until scratch changes. A malformed or truncated key, or bytes
 * after the last column, are MARBLE_ERR_CORRUPTION. */
int marble__key_decode(const marble__key_encoder *e, const uint8_t *key, size_t len,
                       marble__key_value *vals, marble__bytes *scratch, marble_error *err);

/* The smallest byte string greater than every string that starts with prefix[0, n): the prefix
 * with trailing 0xFF bytes dropped and its last byte incremented, written into *out (reset
 * first). *bounded is 0 (and out empty) when there is none (n == 0 or all bytes 0xFF): the scan
 * then runs to the end. */
int marble__key_prefix_successor(const uint8_t *prefix, size_t n, marble__bytes *out, int *bounded,
                                 marble_error *err);

#endif
