/*
 * Queries over Marble tables: a small SELECT subset as text, and the same query as a structured
 * C API. Queries run as pipelines (marble/pipeline.h) over a table scan that sees one snapshot;
 * predicates and projections are pushed into the scan (SSTables and batches are skipped by key
 * range, bloom filter and zone maps; only the needed columns are read) and the scan runs in
 * parallel over SSTable batches.
 *
 * The text subset (keywords case-insensitive; identifiers are column names, "quoted" to keep
 * case or use a keyword; strings in 'single quotes' with '' for a quote):
 *   SELECT item [, item]* FROM table [WHERE expr] [GROUP BY expr [, expr]*]
 *          [ORDER BY key [ASC|DESC] [, ...]] [LIMIT n [OFFSET m]] [;]
 *   item: * | expr [[AS] alias] | agg(expr) [[AS] alias] | COUNT(*) [[AS] alias]
 *         (agg is COUNT, SUM, MIN, MAX or AVG)
 *   expr: literals (integers, decimals, 'strings', TRUE, FALSE, NULL), columns, + - * / %,
 *         unary -, = != <> < <= > >=, AND, OR, NOT, IS [NOT] NULL, x [NOT] IN (literals),
 *         parentheses; precedence as in SQL (OR < AND < NOT < comparison < + - < * / % < unary).
 *   key: an output column name or alias, a 1-based select-list position, or (without GROUP BY
 *        or aggregates) any column of the table.
 * Semantics of types, NULLs and arithmetic are those of marble/pipeline.h. In a grouped query
 * every non-aggregate item must be one of the GROUP BY expressions. Anything outside the subset
 * (a join, a subquery, HAVING, DISTINCT, window functions, a second table) is
 * MARBLE_ERR_UNSUPPORTED naming it; a syntax error is MARBLE_ERR_INVALID_ARGUMENT giving the
 * 1-based position and what was expected ("at 23: expected FROM, found 'FORM'").
 *
 * Thread safety: a marble_query is built by one thread; running it does not change it, so it
 * may then be run from several threads.
 */
#ifndef MARBLE_QUERY_H
#define MARBLE_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "marble/db.h"
#include "marble/pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct marble_query marble_query;

/* ---- building ------------------------------------------------------------------------------- */
MARBLE_API int marble_query_create(const char *table, marble_query **out, marble_error *err);
MARBLE_API void marble_query_destroy(marble_query *q);
/* Select-list items, in order. Expressions are cloned. alias NULL: the output column is named
 * after the item: a plain column keeps its name, an expression is its marble_expr_to_string text
 * without the outer parentheses ("v * 2"), an aggregate "sum(v)", COUNT(*) "count(*)". */
MARBLE_API int marble_query_select_all(marble_query *q, marble_error *err); /* "*" */
MARBLE_API int marble_query_select(marble_query *q, const marble_expr *e, const char *alias,
                                   marble_error *err);
MARBLE_API int marble_query_select_agg(marble_query *q, marble_agg_fn fn, const marble_expr *arg,
                                       const char *alias, marble_error *err);
/* A second call ANDs its predicate with the first. */
MARBLE_API int marble_query_where(marble_query *q, const marble_expr *pred, marble_error *err);
/* A bare literal (GROUP BY 1) is MARBLE_ERR_INVALID_ARGUMENT: the text form reads it as a
 * position, which is not supported. */
MARBLE_API int marble_query_group_by(marble_query *q, const marble_expr *e, marble_error *err);
/* ORDER BY: `name` is an output column name/alias or a table column (see above); position is
 * 1-based into the select list when name is NULL. */
MARBLE_API int marble_query_order_by(marble_query *q, const char *name, int position,
                                     int descending, marble_error *err);
/* limit < 0: none (an offset alone skips rows: "OFFSET m" in the text form). */
MARBLE_API int marble_query_limit(marble_query *q, int64_t limit, int64_t offset,
                                  marble_error *err);

/* Parses the text subset into a query. */
MARBLE_API int marble_query_parse(const char *sql, marble_query **out, marble_error *err);
/* The query as text in the subset (malloc'd; free with marble_free); parsing it gives the same
 * query. */
MARBLE_API char *marble_query_to_sql(const marble_query *q);

/* Parses one expression of the subset (as in a WHERE clause, no aggregates), e.g. for
 * `marble scan --where`. Errors as for queries, positions relative to `text`. */
MARBLE_API int marble_expr_parse(const char *text, marble_expr **out, marble_error *err);

/* ---- running -------------------------------------------------------------------------------- */
typedef struct marble_query_options {
    const marble_snapshot *snapshot; /* NULL: the state when the query starts */
    marble_cancel_token *cancel;     /* NULL: none */
    int max_parallel;                /* 0: every thread of the database's scheduler */
    uint64_t memory_limit;           /* 0: draw on the database's memory budget (shared with
                                        memtables and caches, see marble_db_options); else a
                                        budget of this many bytes for this query alone */
    void (*progress)(void *ud, int64_t done, int64_t total); /* morsels; may be NULL */
    void *progress_ud;
} marble_query_options;
MARBLE_API void marble_query_options_init(marble_query_options *o);

/* What the scan did; counters are exact. point_lookup and the file and batch counts are set when
 * the query starts, rows_scanned as morsels finish: all are final once the stream is exhausted,
 * except that a LIMIT may end a streaming query while morsels still run: they are final once
 * the stream is released. */
typedef struct marble_query_stats {
    int64_t files_total, files_skipped;     /* SSTables in range / ruled out whole */
    int64_t batches_total, batches_skipped; /* batches of the remaining files / ruled out */
    int64_t bloom_skipped;                  /* files ruled out by their bloom filter */
    int64_t rows_scanned;                   /* rows read from the source */
    int point_lookup;                       /* 1: the query was answered by point gets */
} marble_query_stats;

/* Runs q over db; the result is a stream (see marble_pipeline_execute for errors and
 * cancellation). `stats` (may be NULL) must stay valid until the stream is released. */
MARBLE_API int marble_db_query(marble_db *db, const marble_query *q,
                               const marble_query_options *opts, struct ArrowArrayStream *out,
                               marble_query_stats *stats, marble_error *err);
/* Parses and runs. */
MARBLE_API int marble_db_query_sql(marble_db *db, const char *sql, const marble_query_options *opts,
                                   struct ArrowArrayStream *out, marble_query_stats *stats,
                                   marble_error *err);
/* The plan as text (malloc'd; free with marble_free): scan (key range, pruning predicates,
 * columns), operators. */
MARBLE_API int marble_db_explain(marble_db *db, const marble_query *q, char **text,
                                 marble_error *err);

#ifdef __cplusplus
}
#endif
#endif
