/*
 * Internals of the pipeline executor shared by its files (private to src/exec/): bound
 * expressions, dense value vectors and the column gather used by operators.
 *
 * A vector holds the values of an expression for the selected rows of one batch, densely (row k
 * of the vector is row sel[k] of the batch). Strings point into the batch's buffers or into the
 * vector's own arena, so a vector is valid while its batch is (and until it is reset).
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
 * column of any supported type into a new array of the same type. */
int marble__array_take(const struct ArrowSchema *field, const struct ArrowArray *col,
                       const uint32_t *sel, int64_t n, struct ArrowArray *out, marble_error *err);

#endif
