/*
 * Internals of the pipeline runtime shared by its files (private to src/exec/): arrays that own
 * malloc'd buffers, zero-copy column views of shared batches, row gathers, typed column readers
 * for comparisons, memory accounting in chunks, and the interfaces of the blocking operators
 * (hash aggregate, sort / top-N) used by the executor.
 *
 * Rows of a batch: logical row r of a "+s" batch b is physical row b->offset + c->offset + r of
 * its column c; every helper here honours both offsets.
 *
 * Thread safety: shared batches are reference counted atomically and may be viewed from several
 * threads; everything else is per-thread state owned by one task at a time.
 */
#ifndef MARBLE_PIPELINE_INTERNAL_H
#define MARBLE_PIPELINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "exec/exec_internal.h"

/* ---- arrays ---------------------------------------------------------------------------------- */

/* A column array with n_buffers (<= 3) malloc'd buffers of the given sizes (zeroed; a size of 0
 * leaves the slot NULL), no children; release frees them. */
int marble__array_alloc(struct ArrowArray *out, int n_buffers, const size_t *sizes,
                        marble_error *err);
/* A "+s" batch of n_cols zeroed child structs (release NULL, for the caller to fill) and `length`
 * rows; release releases the children that still have a release. */
int marble__batch_alloc(struct ArrowArray *out, int64_t n_cols, int64_t length, marble_error *err);
/* Rough bytes held by a batch (values, offsets, bitmaps, string data), for memory accounting. */
uint64_t marble__batch_bytes(const struct ArrowSchema *schema, const struct ArrowArray *batch);

/* A batch moved into a reference-counted holder, so columns can be viewed without copies. */
typedef struct marble__shared marble__shared;
marble__shared *marble__shared_new(struct ArrowArray *batch);
const struct ArrowArray *marble__shared_batch(const marble__shared *s);
void marble__shared_unref(marble__shared *s);
/* A zero-copy view of rows [off, off + len) of column `col` of the shared batch (one reference is
 * taken and dropped by the view's release). */
int marble__column_view(marble__shared *s, int col, int64_t off, int64_t len,
                        struct ArrowArray *out, marble_error *err);
/* A new batch viewing rows [off, off + len) of every column of the shared batch. */
int marble__batch_slice(marble__shared *s, int64_t off, int64_t len, struct ArrowArray *out,
                        marble_error *err);

/* ---- gathers --------------------------------------------------------------------------------- */

typedef struct marble__rowref {
    uint32_t batch;  /* index into the batch table */
    uint32_t row;    /* logical row of that batch */
    uint64_t order;  /* tie-breaker: morsel << 40 | row sequence inside the morsel */
    uint64_t prefix; /* sort: the first key normalized (marble__sort_prefix) */
} marble__rowref;

/* Copies column `col` of rows (refs[k].batch, refs[k].row), or of (0, rows[k]) when refs is NULL,
 * k < n, into a new array of the column's type (`field`). */
int marble__gather(const struct ArrowSchema *field, const struct ArrowArray *const *batches,
                   int col, const marble__rowref *refs, const uint32_t *rows, int64_t n,
                   struct ArrowArray *out, marble_error *err);
/* The same for every column: a new batch of `schema`. */
int marble__gather_batch(const struct ArrowSchema *schema, const struct ArrowArray *const *batches,
                         const marble__rowref *refs, const uint32_t *rows, int64_t n,
                         struct ArrowArray *out, marble_error *err);

/* ---- comparisons ----------------------------------------------------------------------------- */

enum {
    MARBLE__CV_NULL,
    MARBLE__CV_INT,
    MARBLE__CV_UINT,
    MARBLE__CV_FLOAT,
    MARBLE__CV_BOOL,
    MARBLE__CV_BYTES,
    MARBLE__CV_FIXED
};

typedef struct marble__colview {
    int kind;
    int width;        /* INT, UINT, FLOAT, FIXED: bytes per value */
    int offset_bytes; /* BYTES: 4 or 8 */
    const uint8_t *validity;
    const uint8_t *values; /* fixed-width values; BYTES: the data */
    const void *offsets;   /* BYTES */
    int64_t base;          /* physical index of logical row 0 */
} marble__colview;

/* Checks that `field` is a column type that can be compared (every supported flat type). */
int marble__colview_check(const struct ArrowSchema *field, const char *what, marble_error *err);
/* The MARBLE__CV_* kind of a column type (MARBLE__CV_NULL for unsupported ones). */
int marble__colview_kind(const struct ArrowSchema *field);
void marble__colview_init(const struct ArrowSchema *field, const struct ArrowArray *batch, int col,
                          marble__colview *v);
int marble__colview_is_null(const marble__colview *v, int64_t row);
/* <0, 0, >0 comparing two non-null values of the same column type (NaN sorts after numbers). */
int marble__colview_cmp(const marble__colview *a, int64_t i, const marble__colview *b, int64_t j);
/* An unsigned 64-bit image of the key's value at `row` that orders as the key does (direction and
 * NULL placement included) whenever two images differ; equal images need a full comparison. */
uint64_t marble__sort_prefix(const marble_sort_key *key, const marble__colview *v, int64_t row);
/* Compares row i of views a[0..n) with row j of b[0..n) by the sort keys (key k uses a[k], b[k]).
 */
int marble__rows_cmp(const marble_sort_key *keys, size_t n, const marble__colview *a, int64_t i,
                     const marble__colview *b, int64_t j);

/* ---- memory accounting ----------------------------------------------------------------------- */

#define MARBLE__MEM_CHUNK ((uint64_t)1 << 20)

typedef struct marble__memacct {
    marble_mem_budget *budget; /* NULL: unlimited */
    const char *what;
    uint64_t charged;
} marble__memacct;

/* Makes sure at least `in_use` bytes are charged, reserving whole chunks. */
int marble__mem_need(marble__memacct *m, uint64_t in_use, marble_error *err);
void marble__mem_release_all(marble__memacct *m);

/* ---- blocking operators ---------------------------------------------------------------------- */

typedef struct marble__agg_def {
    size_t n_groups;
    marble__bound **groups;
    size_t n_aggs;
    marble_agg_fn *fns;
    marble__bound **args;    /* NULL entries for COUNT(*) */
    struct ArrowSchema *out; /* output schema (borrowed) */
} marble__agg_def;

typedef struct marble__agg_local marble__agg_local;
int marble__agg_local_create(const marble__agg_def *d, marble_mem_budget *mem,
                             marble__agg_local **out, marble_error *err);
void marble__agg_local_destroy(marble__agg_local *l);
/* Adds rows sel[0..n) (sel NULL: 0..n) of batch. */
int marble__agg_consume(marble__agg_local *l, const struct ArrowArray *batch, const uint32_t *sel,
                        int64_t n, marble_error *err);
/* Folds `from` into `into` (from is left empty). */
int marble__agg_merge(marble__agg_local *into, marble__agg_local *from, marble_error *err);
/* The result as batches (malloc'd array; release each and free it). */
int marble__agg_finish(marble__agg_local *l, struct ArrowArray **batches, size_t *n,
                       marble_error *err);

typedef struct marble__sort_local marble__sort_local;
/* limit < 0: full sort; else top-N. `schema` (borrowed) is the input's. */
int marble__sort_local_create(const struct ArrowSchema *schema, const marble_sort_key *keys,
                              size_t n_keys, int64_t limit, marble_mem_budget *mem,
                              marble__sort_local **out, marble_error *err);
void marble__sort_local_destroy(marble__sort_local *l);
/* Takes `batch` (moved in) and its rows sel[0..n) (sel NULL: 0..n); their order is
 * morsel << 40 | (*seq)++. */
int marble__sort_consume(marble__sort_local *l, struct ArrowArray *batch, const uint32_t *sel,
                         int64_t n, int64_t morsel, int64_t *seq, marble_error *err);
/* Sorts the local's rows into a run (once; later calls return at once). Calls cancelled(arg)
 * (if not NULL) every few thousand rows and gives MARBLE_ERR_CANCELLED when it returns nonzero,
 * leaving the local unsorted. */
int marble__sort_local_sort(marble__sort_local *l, int (*cancelled)(void *), void *arg,
                            marble_error *err);
/* Sorts the locals not sorted yet, then merges their runs into sorted batches of at most 4096
 * rows (malloc'd array). Stops with MARBLE_ERR_CANCELLED once `cancel` (NULL: never) is
 * cancelled: it is checked while sorting and before each output batch. */
int marble__sort_finish(marble__sort_local **locals, size_t n, marble_cancel_token *cancel,
                        struct ArrowArray **batches, size_t *n_batches, marble_error *err);

#define MARBLE__OUT_ROWS 4096

/* 1 and *code = its last error code if `stream` is a live stream of marble_merge_streams. */
int marble__merge_stream_code(struct ArrowArrayStream *stream, int *code);

#endif
