/* marble-bench query and interrupt: the benchmark table both areas use, defined so that Marble
 * (C) and the DuckDB peer (SQL, bench/peers/duckdb/query.mjs) compute it exactly alike.
 *
 * Table t: id int64 primary key (0..rows-1), k = id % 1000 int64, v float64, s utf8, where
 *   v = vs(id) / 2^20 with vs(id) = (id * 2654435761) % 1000003 (no int64 overflow below ~3.4e9
 *   rows), so every v is a multiple of 2^-20 in [0, 0.954): sums of up to 2^33 of them are exact
 *   in double whatever the order, and both engines' sums are compared exactly;
 *   s = 'u' || (id % 9973) in decimal.
 * Checksums (unsigned 64-bit, printed in decimal):
 *   sum          sum(v) * 2^20
 *   count_where  count(*) where v > 0.9
 *   group_by     sum over groups of (k + 1) * (31 * sum(v) * 2^20 + count(*))
 *   point_lookups  ids (j * 2654435761 + 12345) % rows for j < lookups; sum over found rows of
 *                id + 3k + 7 vs(id) + 11 strsum(s), strsum = sum of (i + 1) * byte i. */
#ifndef MARBLE_BENCH_QUERY_H
#define MARBLE_BENCH_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "marble/db.h"

#define BQ_VMUL 2654435761LL
#define BQ_VMOD 1000003LL
#define BQ_VSCALE 1048576.0
#define BQ_LOOKUP_MUL 2654435761LL
#define BQ_LOOKUP_ADD 12345LL

static inline int64_t bq_vs(int64_t id)
{
    return (id * BQ_VMUL) % BQ_VMOD;
}

static inline double bq_v(int64_t id)
{
    return (double)bq_vs(id) / BQ_VSCALE;
}

/* Writes s(id) into buf (at least 8 bytes) and returns its length. */
size_t bq_s(int64_t id, char *buf);

/* Creates table "t" in db and loads ids 0..rows-1 with marble_db_put in batches of batch_rows;
 * *put_seconds (may be NULL) gets the time spent inside marble_db_put and the final flush.
 * Returns 0, or -1 with a message in err. */
int bq_load(marble_db *db, int64_t rows, int64_t batch_rows, double *put_seconds, char *err,
            size_t errlen);

/* The same through marble_db_ingest (sorted input; the batches are built before the timed
 * part: *seconds is the ingest call alone). */
int bq_ingest(marble_db *db, int64_t rows, int64_t batch_rows, double *seconds, char *err,
              size_t errlen);

/* Writes rows 0, stride, 2 * stride, ... below rows of t again (the same values) and flushes:
 * an L0 file over the whole key range for a compaction to merge. */
int bq_rewrite(marble_db *db, int64_t rows, int64_t stride, char *err, size_t errlen);

/* Opens a database at dir (created) with the settings both areas use: no WAL sync, and
 * automatic compaction on or off. */
int bq_open(const char *dir, int auto_compaction, marble_db **out, char *err, size_t errlen);

/* A private directory under parent (made with mkdtemp; path gets it) and its removal. */
int bq_mkdtemp(const char *parent, const char *tag, char *path, size_t cap);
void bq_rmtree(const char *path);

/* Checks that row id of t reads back as the formula says (marble_db_get); 0 or -1 with err. */
int bq_check_row(marble_db *db, int64_t id, char *err, size_t errlen);

double bq_now(void);

#endif
