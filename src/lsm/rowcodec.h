/*
 * Row values and batch assembly (private to src/lsm/).
 *
 * A table row lives in the memtable and the WAL as (encoded key, row value). The encoded key is
 * keyenc.h's encoding of the primary-key columns; the row value packs the other columns, in
 * schema order:
 *
 *   null bitmap   ceil(n_value_cols / 8) bytes, bit i (LSB first) set when value column i is
 *                 NOT null
 *   then, for each non-null value column in order:
 *     bool                    1 byte (0/1)
 *     fixed-width types       their bytes, little-endian (int8..64, uint8..64, float32/64,
 *                             date32, timestamp), fixed_size_binary[N]: N bytes
 *     utf8/binary (+ large)   LEB128 length, then the bytes
 *
 * A delete has an empty row value. Decoding is bounds-checked: a value that does not parse is
 * MARBLE_ERR_CORRUPTION.
 *
 * The assembler turns (key, seq, op, value) entries back into Arrow record batches: key columns
 * are decoded from the encoded key (keyenc.h), the others from the row value; a delete's
 * non-key columns are null. It can project (any subset of the table's columns, in any order)
 * and append the two SSTable columns "_seq" (uint64) and "_op" (uint8: 0 delete, 1 put).
 *
 * Thread safety: an initialized codec is immutable and shared; an assembler is for one thread.
 */
#ifndef MARBLE_LSM_ROWCODEC_H
#define MARBLE_LSM_ROWCODEC_H

#include <stddef.h>
#include <stdint.h>

#include "lsm/keyenc.h"
#include "marble/arrow.h"

#define MARBLE__MAX_COLUMNS 1024

/* The two columns an SSTable adds after the table's columns. */
#define MARBLE__SEQ_COLUMN "_seq"
#define MARBLE__OP_COLUMN "_op"

typedef struct marble__row_column {
    marble_arrow_type type;
    int is_key;
    int value_index; /* position among the value (non-key) columns; -1 for key columns */
    int key_index;   /* position among the key columns; -1 for value columns */
} marble__row_column;

/* Built from a table's schema and key columns; owns a copy of the schema. */
typedef struct marble__row_codec {
    struct ArrowSchema schema; /* the table schema ("+s"), owned */
    int ncols;
    int n_value_cols;
    int bitmap_bytes;
    marble__row_column *cols; /* ncols entries */
    marble__key_encoder keys; /* MARBLE__KEY_REJECT_NULLS */
} marble__row_codec;

/* Validates `schema` (supported types, 1..MARBLE__MAX_COLUMNS columns, unique non-empty names
 * not starting with '_', which keeps "_seq"/"_op" free) and key_cols (1..MARBLE__KEY_MAX_COLS,
 * distinct, in range, key-able types). Errors name the column. */
int marble__row_codec_init(marble__row_codec *c, const struct ArrowSchema *schema,
                           const int *key_cols, int nkeys, marble_error *err);
void marble__row_codec_free(marble__row_codec *c);

/* Appends the row value of row `row` of `batch` to *out. `batch` is a "+s" array whose first
 * ncols children are the table's columns in order (extra trailing children, such as an
 * SSTable's _seq/_op, are ignored); the caller has validated it against the schema. On failure
 * out->len is as it was. */
int marble__row_encode(const marble__row_codec *c, const struct ArrowArray *batch, int64_t row,
                       marble__bytes *out, marble_error *err);

/* Checks that `value` parses as a row value of this codec (for WAL replay and tests). */
int marble__row_check(const marble__row_codec *c, const void *value, size_t len, marble_error *err);

typedef struct marble__assembler marble__assembler;

/* proj: nproj column indexes of the table (NULL with nproj < 0: all columns in order).
 * with_meta: append "_seq" and "_op" (the SSTable layout). The output schema has the projected
 * columns with their names and types; key columns keep their nullability, value columns are
 * always nullable (deletes). */
int marble__assembler_create(const marble__row_codec *c, const int *proj, int nproj, int with_meta,
                             marble__assembler **out, marble_error *err);
void marble__assembler_destroy(marble__assembler *a);
/* Appends one entry. op: 0 delete (value must be empty), 1 put. */
int marble__assembler_add(marble__assembler *a, const void *key, size_t klen, uint64_t seq, int op,
                          const void *value, size_t vlen, marble_error *err);
/* Appends row `row` of `src`, a batch laid out as the assembler's codec's table (its first ncols
 * children; trailing children such as an SSTable's _seq/_op are ignored: seq and op are always
 * the ones given). Used to copy rows from SSTable batches without going through row values. */
int marble__assembler_add_arrow(marble__assembler *a, const struct ArrowArray *src, int64_t row,
                                uint64_t seq, int op, marble_error *err);
int64_t marble__assembler_rows(const marble__assembler *a);
/* Approximate bytes buffered so far. */
size_t marble__assembler_bytes(const marble__assembler *a);
/* Moves the rows added so far into *out (a "+s" array, possibly 0 rows) and resets. */
int marble__assembler_finish(marble__assembler *a, struct ArrowArray *out, marble_error *err);
/* The output schema (a copy to release). */
int marble__assembler_schema(const marble__assembler *a, struct ArrowSchema *out,
                             marble_error *err);

#endif
