/*
 * Internals of the pipeline executor shared by its files (private to src/exec/): bound
 * expressions, dense value vectors and the column gather used by operators.
 *
 * A vector holds the values of an expression for the selected rows of one batch, densely (row k
 * of the vector is row sel[k] of the batch). Its arrays are read-only for users: strings point
 * into the batch's buffers (or into literals of the bound expression), and a plain int64/float64
 * column evaluated without a selection is the column's own buffer (zero copy), so a vector is
 * valid while its batch and bound expression are (and until it is reset). Values under null
 * slots are unspecified (booleans are still 0/1).
 *
 * Evaluation computes every subexpression on every selected row, so an error (integer overflow)
 * on any row fails the whole call. Selection may skip rows: AND narrows the selection operand
 * by operand, so an error in its right operand on a row its left operand rejected may not be
 * reported. Temporaries come from a per-thread pool (kept across calls, trimmed when it holds
 * more than 64 MiB), so once vectors have grown, evaluation allocates nothing.
 *
 * Thread safety: a bound expression is immutable and shared by all workers; vectors are
 * per-thread scratch.
 */
#ifndef MARBLE_EXEC_INTERNAL_H
#define MARBLE_EXEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "marble/pipeline.h"

typedef struct marble__str {
    const char *p;
    int64_t n;
} marble__str;

typedef struct marble__vec {
    marble_datum_kind kind; /* INT, DOUBLE, BOOL or STRING (never NULL: an all-null vector
                               has its bound kind and valid[] all 0) */
    int64_t n;              /* rows */
    int64_t *i;             /* INT values */
    double *d;              /* DOUBLE values */
    uint8_t *b;             /* BOOL values, 0/1 per row */
    marble__str *s;         /* STRING values */
    uint8_t *valid;         /* NULL: every row valid; else 1 byte per row (1 = valid) */
    /* owned storage (capacities), reused across batches */
    void *mem;
    size_t mem_cap;
    void *arena;
    size_t arena_cap, arena_used;
} marble__vec;

void marble__vec_init(marble__vec *v);
void marble__vec_free(marble__vec *v);
/* Makes v hold n rows of `kind` in its own storage (grown when needed, never shrunk), valid NULL;
 * the values are uninitialized. */
int marble__vec_reset(marble__vec *v, marble_datum_kind kind, int64_t n, marble_error *err);
/* Points v->valid at v's own room for n validity bytes (uninitialized) and returns it. */
uint8_t *marble__vec_valid(marble__vec *v);

typedef struct marble__bound marble__bound;

/* Binds `e` to a "+s" schema: resolves columns to child indexes, checks types, folds nothing
 * else. Errors are MARBLE_ERR_INVALID_ARGUMENT naming the column or the operator and types. */
int marble__expr_bind(const marble_expr *e, const struct ArrowSchema *schema, marble__bound **out,
                      marble_error *err);
void marble__bound_free(marble__bound *b);
/* Result kind; and the C Data Interface format the result has when materialized (for a plain
 * column: the column's own format). */
marble_datum_kind marble__bound_kind(const marble__bound *b);
const char *marble__bound_format(const marble__bound *b);
/* The child index if the expression is a plain column reference, else -1. */
int marble__bound_column(const marble__bound *b);

/* Evaluates over rows sel[0..n) of batch (sel NULL: rows 0..n), n = batch->length when sel is
 * NULL. `out` is reset and filled densely. Errors: integer overflow (MARBLE_ERR_LIMIT), uint64
 * out of int64 range (MARBLE_ERR_LIMIT). */
int marble__expr_eval(const marble__bound *b, const struct ArrowArray *batch, const uint32_t *sel,
                      int64_t n, marble__vec *out, marble_error *err);
/* Keeps the rows of sel_in (NULL: 0..n_in) where the predicate is true, writing their indexes
 * to sel_out (room for n_in) and their number to *n_out. sel_out may equal sel_in. */
int marble__expr_select(const marble__bound *b, const struct ArrowArray *batch,
                        const uint32_t *sel_in, int64_t n_in, uint32_t *sel_out, int64_t *n_out,
                        marble_error *err);

/* Materializes a vector as an Arrow array of its kind (int64 "l", float64 "g", bool "b",
 * utf8 "u"); the array owns copies of the values. */
int marble__vec_to_arrow(const marble__vec *v, struct ArrowArray *out, marble_error *err);
/* Gathers rows sel[0..n) (sel NULL: a zero-copy slice would do; this copies rows 0..n) of a
 * column of any supported type into a new array of the same type. sel indexes `col`'s rows
 * (after col->offset): for a column of a batch whose own offset is not 0 use marble__batch_take.
 * Nulls keep their slots; the result has no validity bitmap when no selected row is null. */
int marble__array_take(const struct ArrowSchema *field, const struct ArrowArray *col,
                       const uint32_t *sel, int64_t n, struct ArrowArray *out, marble_error *err);
/* As marble__array_take for column i of `batch` (a "+s" array of `schema`), sel indexing the
 * batch's rows (the batch's own offset is applied). */
int marble__batch_take(const struct ArrowSchema *schema, const struct ArrowArray *batch, int i,
                       const uint32_t *sel, int64_t n, struct ArrowArray *out, marble_error *err);

/* "=", "AND", "IS NULL", ... */
const char *marble__expr_op_text(marble_expr_op op);

#endif
