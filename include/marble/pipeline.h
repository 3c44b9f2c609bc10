/*
 * Marble's pipeline executor: vectorized expressions and operators over Arrow record batches,
 * run in parallel over morsels on the work-stealing scheduler. Generic: it knows no tables. The
 * query layer (marble/query.h) and the store (marble/db.h) build pipelines out of these parts.
 *
 * A pipeline is a source, a chain of operators and a sink. The source is split into morsels
 * (an SSTable batch, a file range); scheduler tasks pull morsels and push each batch through
 * every operator inside one task (fused, no intermediate materialization). Streaming operators
 * (filter, project, limit) keep no shared state; blocking ones (aggregate, sort) keep state per
 * worker that is merged when the source is exhausted (partial aggregates, sorted runs merged).
 *
 * Execution budgets: a task processes at most `batch_budget` batches of a morsel and then
 * yields (its morsel cursor is kept), so long scans share the scheduler fairly. Cancellation is
 * checked between batches: a cancelled pipeline stops within one batch per worker and reports
 * MARBLE_ERR_CANCELLED. The first error of any task cancels the others and is reported with its
 * message. Results come out as an ArrowArrayStream.
 *
 * Types. Expressions compute over four value kinds: integers (every signed and unsigned integer
 * type, date32 and timestamps are read as int64; uint64 values above INT64_MAX are an error),
 * doubles (float32 and float64), booleans and strings (utf8, large_utf8; binary, large_binary and
 * fixed_size_binary columns compare as bytes). A column referenced directly (not computed) keeps
 * its Arrow type in results.
 * Computed results are int64 "l", float64 "g", bool "b" or utf8 "u".
 *   - Comparisons (= != < <= > >=) between numbers (int vs double compares as double), between
 *     strings (bytewise) or between booleans; anything else is a bind error naming both types.
 *   - Arithmetic + - * on two ints is int64 with overflow an error (MARBLE_ERR_LIMIT naming the
 *     expression); with a double involved it is double. / and % on two ints are integer division
 *     and remainder truncating toward zero; division or remainder by zero gives NULL (as SQLite
 *     and MySQL do). / on doubles is IEEE division; % with a double is fmod (NULL when the
 *     divisor is 0).
 *   - AND / OR / NOT use SQL's three-valued logic; IS NULL / IS NOT NULL are never NULL;
 *     x IN (a, b, ...) is true if x equals one of the literals (as = compares them: an int
 *     literal exactly, a double one as doubles), NULL if x is NULL (or if no match and a literal
 *     is NULL), else false; NOT IN negates that. Literals of another kind are a bind error.
 *   - Any other operator on a NULL operand gives NULL. A filter keeps rows where the predicate
 *     is true (not NULL, not false).
 *
 * Aggregates: COUNT(*), COUNT(x) (non-null x), SUM(x) (int64 for integers, summed exactly: a
 * final sum outside int64 is an error, whatever the order rows were added in; double for doubles), MIN(x), MAX(x) (x's value kind: int64, double, bool or utf8), AVG(x)
 * (double). Over no rows SUM/MIN/MAX/AVG are NULL and COUNT is 0. Without group keys an aggregate
 * yields exactly one row; with them one row per distinct key tuple (NULL is a group of its own).
 * Group key columns come first in the output, then the aggregates, in the order given.
 *
 * Memory: blocking operators charge what they hold to a marble_mem_budget (when one is given in
 * the execution options); if a reservation fails the pipeline stops with MARBLE_ERR_LIMIT
 * ("query needs more memory than its budget allows: ...") and frees what it held.
 *
 * Thread safety: expressions are immutable once built and may be shared; a pipeline is built by
 * one thread and executed once; its stream is for one thread.
 */
#ifndef MARBLE_PIPELINE_H
#define MARBLE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "marble/arrow.h"
#include "marble/error.h"
#include "marble/sched.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- memory budget ------------------------------------------------------------------------------
 * A byte counter with a limit shared by memtables, caches and query operators. Reservations are
 * atomic; a reservation that would pass the limit fails and changes nothing. */
typedef struct marble_mem_budget marble_mem_budget;
/* limit 0: unlimited (reservations are only counted). */
MARBLE_API int marble_mem_budget_create(uint64_t limit, marble_mem_budget **out, marble_error *err);
MARBLE_API void marble_mem_budget_destroy(marble_mem_budget *b);
/* MARBLE_OK or MARBLE_ERR_LIMIT (with a message naming `what`, the request, the use and the
 * limit). */
MARBLE_API int marble_mem_budget_reserve(marble_mem_budget *b, uint64_t bytes, const char *what,
                                         marble_error *err);
/* Counts bytes that cannot be refused (a memtable): use may go past the limit, and later
 * reservations fail until enough is released. */
MARBLE_API void marble_mem_budget_charge(marble_mem_budget *b, uint64_t bytes);
MARBLE_API void marble_mem_budget_release(marble_mem_budget *b, uint64_t bytes);
MARBLE_API uint64_t marble_mem_budget_used(const marble_mem_budget *b);
MARBLE_API uint64_t marble_mem_budget_limit(const marble_mem_budget *b);
/* The most that was ever reserved at once. */
MARBLE_API uint64_t marble_mem_budget_peak(const marble_mem_budget *b);

/* ---- expressions ----------------------------------------------------------------------------- */

typedef struct marble_expr marble_expr;

typedef enum marble_expr_op {
    MARBLE_OP_EQ = 1,
    MARBLE_OP_NE,
    MARBLE_OP_LT,
    MARBLE_OP_LE,
    MARBLE_OP_GT,
    MARBLE_OP_GE,
    MARBLE_OP_ADD,
    MARBLE_OP_SUB,
    MARBLE_OP_MUL,
    MARBLE_OP_DIV,
    MARBLE_OP_MOD,
    MARBLE_OP_AND,
    MARBLE_OP_OR,
    MARBLE_OP_NOT,        /* unary */
    MARBLE_OP_NEG,        /* unary minus */
    MARBLE_OP_IS_NULL,    /* unary */
    MARBLE_OP_IS_NOT_NULL /* unary */
} marble_expr_op;

typedef enum marble_expr_kind {
    MARBLE_EXPR_COLUMN = 1,
    MARBLE_EXPR_LITERAL,
    MARBLE_EXPR_UNARY,
    MARBLE_EXPR_BINARY,
    MARBLE_EXPR_IN
} marble_expr_kind;

/* Literal value kinds (also the kinds expressions compute in). */
typedef enum marble_datum_kind {
    MARBLE_DATUM_NULL = 0,
    MARBLE_DATUM_INT,
    MARBLE_DATUM_DOUBLE,
    MARBLE_DATUM_BOOL,
    MARBLE_DATUM_STRING
} marble_datum_kind;

typedef struct marble_datum {
    marble_datum_kind kind;
    int64_t i;     /* INT; BOOL (0/1) */
    double d;      /* DOUBLE */
    const char *s; /* STRING (not NUL-terminated necessarily) */
    size_t n;      /* STRING length */
} marble_datum;

/* Constructors return a new expression, or NULL when out of memory (or, for unary/binary, when
 * op is not an operator of that arity; a NULL column name). Composite constructors take
 * ownership of their operands (also on failure: a NULL operand makes them free the others and
 * return NULL, so nested calls need one check at the end). Names and strings are copied. */
MARBLE_API marble_expr *marble_expr_column(const char *name);
MARBLE_API marble_expr *marble_expr_int(int64_t v);
MARBLE_API marble_expr *marble_expr_double(double v);
MARBLE_API marble_expr *marble_expr_bool(int v);
MARBLE_API marble_expr *marble_expr_string(const char *s, size_t n);
MARBLE_API marble_expr *marble_expr_null(void);
MARBLE_API marble_expr *marble_expr_unary(marble_expr_op op, marble_expr *a);
MARBLE_API marble_expr *marble_expr_binary(marble_expr_op op, marble_expr *a, marble_expr *b);
/* a [NOT] IN (list...): the list holds literals only (else NULL is returned and all is freed). */
MARBLE_API marble_expr *marble_expr_in(marble_expr *a, marble_expr **list, size_t n, int negated);
MARBLE_API marble_expr *marble_expr_clone(const marble_expr *e);
MARBLE_API void marble_expr_free(marble_expr *e);

/* Inspection (for planners): kind, operator, column name, literal value, children. */
MARBLE_API marble_expr_kind marble_expr_get_kind(const marble_expr *e);
MARBLE_API marble_expr_op marble_expr_get_op(const marble_expr *e); /* UNARY, BINARY */
MARBLE_API const char *marble_expr_get_column(const marble_expr *e); /* COLUMN */
MARBLE_API const marble_datum *marble_expr_get_literal(const marble_expr *e); /* LITERAL */
/* UNARY: 1 child; BINARY: 2; IN: 1 + list length (child 0 is the tested expression). */
MARBLE_API size_t marble_expr_num_children(const marble_expr *e);
MARBLE_API const marble_expr *marble_expr_child(const marble_expr *e, size_t i);
MARBLE_API int marble_expr_in_negated(const marble_expr *e); /* IN */
/* SQL-like text, every operator parenthesized ("((v > 0.9) AND (k IN (1, 2)))"; strings quoted
 * with '' escaping, column names double-quoted unless plain identifiers that are no keyword,
 * doubles in their shortest round-trip form), written into buf (truncated, NUL-terminated; buf
 * may be NULL when cap is 0); returns the length it needed (without the NUL). */
MARBLE_API size_t marble_expr_to_string(const marble_expr *e, char *buf, size_t cap);

/* Checks `e` against a batch schema (a "+s" schema): columns exist, operand types fit. On success
 * *format (may be NULL) points at the result's C Data Interface format string: static for computed
 * results, the column's own format string in `schema` for a plain column reference. Expressions
 * nested more than 1000 levels deep are MARBLE_ERR_LIMIT. */
MARBLE_API int marble_expr_check(const marble_expr *e, const struct ArrowSchema *schema,
                                 const char **format, marble_error *err);

/* Evaluates `e` over every row of `batch` (a "+s" array of `schema`) into a new array of the
 * result type (release it). For tests and simple programs; pipelines evaluate with selection
 * vectors internally. */
MARBLE_API int marble_expr_eval(const marble_expr *e, const struct ArrowSchema *schema,
                                const struct ArrowArray *batch, struct ArrowArray *out,
                                marble_error *err);

/* ---- sources ----------------------------------------------------------------------------------
 * A source hands out `n_morsels` morsels; each is opened into a cursor that yields batches. Any
 * number of morsels may be open at once on different threads; one cursor is used by one thread
 * at a time. Batches must match the source's schema (a "+s" schema). All callbacks return
 * MARBLE_OK or an error code with `err` set. */
typedef struct marble_source {
    void *ud;
    int64_t n_morsels;
    /* Writes a copy of the schema. */
    int (*get_schema)(void *ud, struct ArrowSchema *out, marble_error *err);
    /* Opens morsel i (0 <= i < n_morsels). */
    int (*open)(void *ud, int64_t i, void **cursor, marble_error *err);
    /* Next batch of the cursor: MARBLE_OK with *out filled, or MARBLE_ERR_NOT_FOUND at its end. */
    int (*next)(void *ud, void *cursor, struct ArrowArray *out, marble_error *err);
    void (*close)(void *ud, void *cursor);
    /* Called once when the pipeline is done with the source (may be NULL). */
    void (*release)(void *ud);
} marble_source;

/* A source over batches in memory (copied by reference: each batch is moved in). One morsel per
 * batch. The source owns the schema and batches; its release frees them. */
MARBLE_API int marble_source_from_batches(struct ArrowSchema *schema, struct ArrowArray *batches,
                                          size_t n, marble_source *out, marble_error *err);
/* A source over a stream: one morsel (streams are sequential). It owns the stream. */
MARBLE_API int marble_source_from_stream(struct ArrowArrayStream *stream, marble_source *out,
                                         marble_error *err);

/* ---- pipelines ------------------------------------------------------------------------------- */

typedef struct marble_pipeline marble_pipeline;

typedef enum marble_agg_fn {
    MARBLE_AGG_COUNT_STAR = 1, /* expression ignored (NULL) */
    MARBLE_AGG_COUNT,
    MARBLE_AGG_SUM,
    MARBLE_AGG_MIN,
    MARBLE_AGG_MAX,
    MARBLE_AGG_AVG
} marble_agg_fn;

/* "count", "sum", "min", "max", "avg" (COUNT_STAR is "count"); "?" for other values. */
MARBLE_API const char *marble_agg_fn_name(marble_agg_fn fn);

typedef struct marble_agg_spec {
    marble_agg_fn fn;
    const marble_expr *arg; /* borrowed; cloned by the pipeline */
    const char *name;       /* output column name */
} marble_agg_spec;

typedef struct marble_sort_key {
    int column;      /* index into the schema at this point of the pipeline */
    int descending;  /* 0: ascending */
    int nulls_first; /* 0: NULLs after every value (either direction); 1: before */
} marble_sort_key;

/* Creates a pipeline over `source` (whose release the pipeline calls when destroyed, also on
 * failure of this call). */
MARBLE_API int marble_pipeline_create(marble_source *source, marble_pipeline **out,
                                      marble_error *err);
MARBLE_API void marble_pipeline_destroy(marble_pipeline *p);
/* Operators, appended in order. Each is checked against the schema at its point (bad column,
 * type mismatch: MARBLE_ERR_INVALID_ARGUMENT naming it). Expressions are cloned. */
MARBLE_API int marble_pipeline_filter(marble_pipeline *p, const marble_expr *predicate,
                                      marble_error *err);
/* Output columns: exprs[i] named names[i] (NULL: the expression's text, or the column name for
 * a plain column). */
MARBLE_API int marble_pipeline_project(marble_pipeline *p, const marble_expr *const *exprs,
                                       const char *const *names, size_t n, marble_error *err);
/* Hash aggregate: output = group keys (named group_names[i], NULL: as project) then aggs. */
MARBLE_API int marble_pipeline_aggregate(marble_pipeline *p, const marble_expr *const *groups,
                                         const char *const *group_names, size_t n_groups,
                                         const marble_agg_spec *aggs, size_t n_aggs,
                                         marble_error *err);
/* Sort by keys; limit >= 0 makes it a top-N (keeps only `limit` rows per worker and merged). */
MARBLE_API int marble_pipeline_sort(marble_pipeline *p, const marble_sort_key *keys, size_t n,
                                    int64_t limit, marble_error *err);
/* Skips `offset` rows then passes at most `limit` rows; stops the source early once satisfied.
 * Rows keep the order of the previous stage (morsel order for streaming pipelines). */
MARBLE_API int marble_pipeline_limit(marble_pipeline *p, int64_t offset, int64_t limit,
                                     marble_error *err);
/* The output schema so far. */
MARBLE_API int marble_pipeline_schema(const marble_pipeline *p, struct ArrowSchema *out,
                                      marble_error *err);

typedef struct marble_exec_options {
    marble_sched *sched;          /* NULL: run on the calling thread only */
    marble_cancel_token *cancel;  /* NULL: none */
    int batch_budget;             /* 0: 16 batches per task before it yields */
    int max_parallel;             /* 0: the scheduler's threads; tasks pulling morsels at once */
    marble_mem_budget *memory;    /* NULL: unlimited */
    /* Called from worker threads as morsels finish (may be NULL): done of total morsels. */
    void (*progress)(void *ud, int64_t done, int64_t total);
    void *progress_ud;
} marble_exec_options;
MARBLE_API void marble_exec_options_init(marble_exec_options *o);

/* Executes the pipeline; the result is a stream of batches of marble_pipeline_schema. The
 * pipeline is consumed (destroyed by this call, also on failure). Streaming pipelines (no
 * aggregate or sort) run while the stream is read, a bounded window of morsels ahead, and yield
 * batches in morsel order; blocking pipelines run to completion on the first get_next. Errors
 * and cancellation surface from get_next (errno values per the C Stream Interface, with
 * get_last_error giving the message; marble_stream_last_code gives Marble's code). Releasing the
 * stream early cancels and waits for running tasks. */
MARBLE_API int marble_pipeline_execute(marble_pipeline *p, const marble_exec_options *opts,
                                       struct ArrowArrayStream *out, marble_error *err);

/* Marble's error code of the last failure of a stream made by this library (MARBLE_OK if none
 * or if the stream is foreign). */
MARBLE_API int marble_stream_last_code(struct ArrowArrayStream *stream);

/* ---- k-way merge ----------------------------------------------------------------------------
 * Merges n streams of rows each sorted by `keys` into one sorted stream (stable: ties come from
 * the lower-numbered input first). Takes ownership of the inputs. */
MARBLE_API int marble_merge_streams(struct ArrowArrayStream *inputs, size_t n,
                                    const marble_sort_key *keys, size_t n_keys,
                                    struct ArrowArrayStream *out, marble_error *err);

#ifdef __cplusplus
}
#endif

#endif
