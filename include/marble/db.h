/*
 * The Marble state store: a database of tables with Arrow schemas and primary keys, and a
 * RocksDB-style key-value API, kept in an LSM tree whose SSTables are Arrow IPC files.
 *
 * A database is a directory at a VFS URI (a local path, "file:///path", "mem://name", ...):
 *   CURRENT, MANIFEST-NNNNNN     the manifest (docs/format/manifest.md): tables, files, levels
 *   wal/NNNNNN.log              the write-ahead log (docs/format/wal.md)
 *   NNNNNN.arrow                SSTables: Arrow IPC files any Arrow tool opens
 *                               (docs/format/sst.md)
 *   LOCK                        held (flock) by the process that has the database open
 *
 * Writes are logged in the WAL and added to the memtable before they are acknowledged; with
 * MARBLE_SYNC_GROUP (the default) or MARBLE_SYNC_EVERY an acknowledged write survives a crash
 * of the process or the machine. Full memtables are flushed to SSTables in the background and
 * SSTables are compacted level by level (L0..L6, size ratio 10).
 *
 * Sequence numbers: every row written (put or delete) takes the next sequence number; a write
 * of N rows takes N consecutive numbers and becomes visible to readers at once, as a whole
 * (also across tables in a write batch). marble_db_latest_sequence gives the last one used.
 *
 * Errors: MARBLE_OK or a code with a message in `err` naming what was wrong: an unknown table
 * (MARBLE_ERR_NOT_FOUND), a batch that does not match the table's schema or nulls in a key
 * column (MARBLE_ERR_INVALID_ARGUMENT), a damaged file (MARBLE_ERR_CORRUPTION naming the file),
 * a database held by another process (MARBLE_ERR_BUSY naming the lock holder). After a failed
 * WAL write or sync the database refuses further writes (the error is sticky); reopen it.
 *
 * Object storage ("s3://bucket/prefix", or any backend without appends or atomic renames):
 * SSTables are objects, written whole; the manifest is a sequence of objects MANIFEST-N, each
 * the whole state, created with a conditional create and completed before the previous one is
 * removed, so an update is never lost or half-applied (open takes the highest N). The WAL needs
 * appends: it lives at wal_uri, a local directory, with the durability of the sync mode there
 * (a write acknowledged under MARBLE_SYNC_GROUP survives a crash of the process or machine as
 * long as that disk does; data in SSTables is as durable as the object store). There is no LOCK
 * object: run one writer per database.
 *
 * Thread safety: a marble_db may be used from any number of threads at once. A write batch, an
 * iterator and a stream are for one thread at a time. Snapshots, iterators and streams must be
 * released before marble_db_close (which otherwise returns MARBLE_ERR_BUSY and closes nothing).
 */
#ifndef MARBLE_DB_H
#define MARBLE_DB_H

#include <stddef.h>
#include <stdint.h>

#include "marble/arrow.h"
#include "marble/csv.h"
#include "marble/error.h"
#include "marble/pipeline.h"
#include "marble/sched.h"
#include "marble/vfs.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct marble_db marble_db;
typedef struct marble_snapshot marble_snapshot;
typedef struct marble_write_batch marble_write_batch;
typedef struct marble_kv_iter marble_kv_iter;

typedef enum marble_sync_mode {
    MARBLE_SYNC_NONE = 0,  /* WAL written but not synced: survives a process crash only */
    MARBLE_SYNC_GROUP = 1, /* concurrent writers share one fdatasync (default) */
    MARBLE_SYNC_EVERY = 2  /* one fdatasync per write */
} marble_sync_mode;

/* Every field's default is what marble_db_options_init sets, given after the field. */
typedef struct marble_db_options {
    int create_if_missing;              /* 1: create the database if it does not exist */
    int error_if_exists;                /* 0: MARBLE_ERR_EXISTS if it already exists */
    marble_fs *fs;                      /* NULL: a private registry (local + mem); pass one to share
                                           mem:// databases between opens */
    marble_sched *sched;                /* NULL: a private scheduler for background work */
    int background_threads;             /* 2: threads of the private scheduler */
    marble_sync_mode sync;              /* MARBLE_SYNC_GROUP */
    size_t write_buffer_size;           /* 64 MiB: a memtable becomes immutable past this */
    int max_immutable_memtables;        /* 2: writers stall while this many wait to be flushed */
    uint64_t wal_segment_size;          /* 64 MiB */
    uint64_t target_file_size;          /* 64 MiB: compaction cuts output SSTables at this size */
    uint64_t level1_max_bytes;          /* 256 MiB; level n holds 10^(n-1) times this */
    int level0_compaction_trigger;      /* 4 L0 files start a compaction into L1 */
    int level0_slowdown_trigger;        /* 20 L0 files: each write is delayed 1 ms */
    int level0_stop_trigger;            /* 36 L0 files: writes stall until compaction catches up */
    int disable_auto_compaction;        /* 0 */
    int max_background_compactions;     /* 0: background_threads - 1 (at least 1): compactions of
                                           disjoint files that may run at once. Each also splits
                                           its key range into subcompactions run at once on the
                                           scheduler's idle threads: up to max(1, scheduler
                                           threads - running flushes and compactions) */
    uint64_t compaction_rate_limit;     /* 0: unlimited; bytes per second written by flushes and
                                           compactions together (a token bucket shared by every
                                           background writer, marble_db_compact included; waits
                                           sleep in slices of at most 10 ms and stay
                                           cancellable; closing ends a flush's wait) */
    int batch_rows;                     /* 4096 rows per SSTable record batch */
    marble_ipc_compression compression; /* MARBLE_IPC_UNCOMPRESSED: SSTables are read zero-copy
                                           through memory maps; LZ4_FRAME or ZSTD make files
                                           smaller, but each batch read then decompresses a
                                           whole batch (a few cached per SSTable) */
    int bloom_bits_per_key;             /* 10 (about 1% false positives); 0: no filters */
    int verify_checksums;               /* 1: check each SSTable batch's CRC32C on first read */
    size_t handle_pool_size;            /* 0: the handle pool's default */
    uint64_t memory_budget;             /* 0: half the machine's physical memory (at least 256
                                           MiB). One budget (marble_db_memory_budget) shared by
                                           memtables (each live one counts write_buffer_size,
                                           never refused), the SSTables' caches of decompressed
                                           batches, and query operators (hash tables, sort
                                           buffers): a query that would take it past the limit
                                           fails with MARBLE_ERR_LIMIT instead of exhausting the
                                           process */
    const char *wal_uri;                /* NULL: "<uri>/wal"; required (a local directory) for a
                                           database on object storage, see above */
    const char *sst_cache_uri;          /* NULL: none; else a local directory keeping a copy of
                                           every SSTable read (for databases on object storage:
                                           each SSTable is fetched once, then mapped locally);
                                           copies go with their SSTables; unbounded */
} marble_db_options;

MARBLE_API void marble_db_options_init(marble_db_options *opts);

/* Opens (or creates) the database at `uri`. `opts` may be NULL (defaults). Recovery replays the
 * WAL into the memtable; a torn WAL tail (an incomplete last record) is dropped, as it was
 * never acknowledged. */
MARBLE_API int marble_db_open(const char *uri, const marble_db_options *opts, marble_db **out,
                              marble_error *err);
/* Cancels a running compaction (its partial outputs are removed; its inputs stay), waits for a
 * running flush, flushes nothing more (the WAL holds the memtable), syncs and closes.
 * MARBLE_ERR_BUSY (nothing closed) while snapshots, iterators, streams, scan sources or jobs
 * started from other threads (manual compactions, ingests, index rebuilds) are live: the message
 * says how many and names the first few ("scan stream of table 'orders'"). Accepts NULL. */
MARBLE_API int marble_db_close(marble_db *db, marble_error *err);

/* ---- tables ---------------------------------------------------------------------------------- */

/* Creates a table. `schema` is a "+s" schema (copied; names unique, not starting with "_");
 * key_columns names 1..32 of its columns, which become the primary key (in that order) and may
 * hold no nulls. The table is persisted in the manifest. MARBLE_ERR_EXISTS if it exists. */
MARBLE_API int marble_db_create_table(marble_db *db, const char *name,
                                      const struct ArrowSchema *schema,
                                      const char *const *key_columns, size_t n_key_columns,
                                      marble_error *err);
/* Drops a table and its data (its SSTables are deleted once no snapshot or stream uses them). */
MARBLE_API int marble_db_drop_table(marble_db *db, const char *name, marble_error *err);
/* Calls fn once per user table, in name order (the key-value table is not listed). Return
 * non-zero from fn to stop. */
MARBLE_API int marble_db_list_tables(marble_db *db, int (*fn)(void *ud, const char *name), void *ud,
                                     marble_error *err);
/* The table's schema (release it) with metadata "marble.primary_key" = the key column names,
 * comma-separated; `key_columns` (may be NULL) receives up to 32 key column indexes and
 * *n_key_columns their number. */
MARBLE_API int marble_db_describe_table(marble_db *db, const char *name, struct ArrowSchema *schema,
                                        int *key_columns, size_t *n_key_columns, marble_error *err);

/* ---- keys ------------------------------------------------------------------------------------ */

typedef enum marble_value_kind {
    MARBLE_VALUE_INT = 1,    /* signed integers, bool (0/1), date32, timestamp */
    MARBLE_VALUE_UINT = 2,   /* unsigned integers */
    MARBLE_VALUE_DOUBLE = 3, /* float32, float64 */
    MARBLE_VALUE_BYTES = 4   /* utf8, binary, fixed_size_binary */
} marble_value_kind;

/* One key column's value, for point reads, deletes and scan bounds. */
typedef struct marble_value {
    marble_value_kind kind;
    int64_t i;
    uint64_t u;
    double d;
    const void *bytes;
    size_t len;
} marble_value;

/* A key or a key prefix: values of the first n key columns (n < the key's columns: a prefix). */
typedef struct marble_key {
    const marble_value *values;
    size_t n;
} marble_key;

/* ---- writes ---------------------------------------------------------------------------------- */

typedef struct marble_write_options {
    int sync; /* -1 (or a zeroed struct's 0 means the same): the database's mode; 1: sync this
                 write even under MARBLE_SYNC_NONE */
} marble_write_options;

/* Upserts every row of `batch` (a "+s" array whose schema `schema` has the table's columns, by
 * name and type, in any order). The batch is not consumed. A mismatch names the column. */
MARBLE_API int marble_db_put(marble_db *db, const char *table, const struct ArrowSchema *schema,
                             const struct ArrowArray *batch, const marble_write_options *wo,
                             marble_error *err);
/* Deletes the rows whose keys are the rows of `keys` (a batch holding at least the key
 * columns, by name; other columns are ignored). Deleting an absent key is not an error. */
MARBLE_API int marble_db_delete(marble_db *db, const char *table, const struct ArrowSchema *schema,
                                const struct ArrowArray *keys, const marble_write_options *wo,
                                marble_error *err);
/* Deletes one row by its full key. */
MARBLE_API int marble_db_delete_key(marble_db *db, const char *table, marble_key key,
                                    const marble_write_options *wo, marble_error *err);

/* Atomic write batches: every row of every put and delete in the batch (across tables) is
 * logged as one WAL record and becomes visible at once, or none is. Rows are checked and
 * encoded when added, so a bad row fails the add, not the commit. */
MARBLE_API int marble_write_batch_create(marble_db *db, marble_write_batch **out,
                                         marble_error *err);
MARBLE_API void marble_write_batch_destroy(marble_write_batch *wb);
MARBLE_API void marble_write_batch_clear(marble_write_batch *wb);
MARBLE_API size_t marble_write_batch_count(const marble_write_batch *wb);
MARBLE_API int marble_write_batch_put(marble_write_batch *wb, const char *table,
                                      const struct ArrowSchema *schema,
                                      const struct ArrowArray *batch, marble_error *err);
MARBLE_API int marble_write_batch_delete_key(marble_write_batch *wb, const char *table,
                                             marble_key key, marble_error *err);
MARBLE_API int marble_write_batch_kv_put(marble_write_batch *wb, const void *key, size_t klen,
                                         const void *value, size_t vlen, marble_error *err);
MARBLE_API int marble_write_batch_kv_delete(marble_write_batch *wb, const void *key, size_t klen,
                                            marble_error *err);
/* Commits the batch (it stays filled; clear or destroy it). */
MARBLE_API int marble_db_write(marble_db *db, marble_write_batch *wb,
                               const marble_write_options *wo, marble_error *err);

MARBLE_API uint64_t marble_db_latest_sequence(marble_db *db);

/* ---- reads ----------------------------------------------------------------------------------- */

/* Repeatable reads: a snapshot sees the database as of its creation while writes go on. */
MARBLE_API int marble_db_snapshot_create(marble_db *db, marble_snapshot **out, marble_error *err);
MARBLE_API void marble_db_snapshot_release(marble_snapshot *snap);
MARBLE_API uint64_t marble_snapshot_sequence(const marble_snapshot *snap);

typedef struct marble_read_options {
    const marble_snapshot *snapshot; /* NULL: the latest state */
    const char *const *columns;      /* projection by name; NULL: every column in table order */
    size_t n_columns;
    int64_t batch_rows; /* rows per batch of a scan's stream; 0: 4096 */
} marble_read_options;

/* Point read of one row by its full key: MARBLE_OK with a one-row batch (and its schema, the
 * projected columns) or MARBLE_ERR_NOT_FOUND. Release both. */
MARBLE_API int marble_db_get(marble_db *db, const char *table, marble_key key,
                             const marble_read_options *ro, struct ArrowSchema *schema,
                             struct ArrowArray *row, marble_error *err);

/* A key range. Each bound is a key or a key prefix (n = 0: unbounded). A prefix bound compares
 * as the set of keys that start with it: lower inclusive starts at the first key with that
 * prefix, upper inclusive ends after the last one. */
typedef struct marble_key_range {
    marble_key lower;
    int lower_exclusive; /* 0: lower <= key */
    marble_key upper;
    int upper_inclusive; /* 0: key < upper */
} marble_key_range;

/* Rows with keys in `range` (NULL: the whole table), in key order, as a stream of batches of the
 * projected columns. The stream reads a consistent snapshot (ro->snapshot or the state at this
 * call) and holds the files it reads until released. Its callbacks return errno values (EIO,
 * EINVAL, ENOMEM) with get_last_error set, as the C Stream Interface requires. */
MARBLE_API int marble_db_scan(marble_db *db, const char *table, const marble_key_range *range,
                              const marble_read_options *ro, struct ArrowArrayStream *out,
                              marble_error *err);
/* Rows whose key starts with `prefix` (the first prefix.n key columns). */
MARBLE_API int marble_db_scan_prefix(marble_db *db, const char *table, marble_key prefix,
                                     const marble_read_options *ro, struct ArrowArrayStream *out,
                                     marble_error *err);

/* ---- scan sources for pipelines ----------------------------------------------------------------
 * A table scan as a pipeline source (marble/pipeline.h): morsels are SSTable batches (zero-copy
 * slices of the projected columns) when the visible data is one clean sorted run, else key-range
 * partitions merged across the memtables and levels. The source reads one snapshot and holds the
 * files it reads until released. Morsels come in key order (morsel i's keys precede morsel
 * i+1's), so a streaming pipeline's output is in key order.
 *
 * Pruning predicates are conjuncts "column op literal" (op EQ, LT, LE, GT, GE) that the caller
 * guarantees every wanted row satisfies: the source uses them to skip SSTables and batches (key
 * range from the leading key columns, zone maps of any fixed-width column, the bloom filter
 * when they fix the whole key) but does not filter rows by them: a pipeline filter still does.
 * Rows failing them may come out, in the merging case even older versions or deleted rows of keys
 * that key-column predicates rule out (skipping a file whose keys all fail them can surface what
 * it shadowed, which fails them too); every row that satisfies them comes out as the scan has it.
 */
typedef struct marble_scan_predicate {
    const char *column;
    marble_expr_op op;  /* MARBLE_OP_EQ, _LT, _LE, _GT, _GE */
    marble_datum value; /* INT, DOUBLE, BOOL or STRING */
} marble_scan_predicate;

/* Added to atomically (sources may share one): files_total are the table's SSTables in the
 * snapshot, files_skipped those ruled out whole (key range, zone maps, bloom filter),
 * bloom_skipped those of them ruled out by the bloom filter; batches_total are the batches of the
 * files read, batches_skipped those of them ruled out (only when morsels are batches). */
typedef struct marble_scan_counters {
    int64_t files_total, files_skipped, bloom_skipped;
    int64_t batches_total, batches_skipped;
    int64_t rows_scanned; /* rows handed out, updated as morsels are read */
} marble_scan_counters;

typedef struct marble_scan_spec {
    const marble_snapshot *snapshot;      /* NULL: the state at this call */
    const char *const *columns;           /* NULL: every column */
    size_t n_columns;
    const marble_key_range *range;        /* NULL: the whole table */
    const marble_scan_predicate *preds;   /* pruning only, see above */
    size_t n_preds;
    int64_t batch_rows;                   /* 0: the SSTable batch size (4096) */
    marble_scan_counters *counters;       /* may be NULL; must outlive the source */
} marble_scan_spec;

MARBLE_API int marble_db_scan_source(marble_db *db, const char *table, const marble_scan_spec *spec,
                                     marble_source *out, marble_error *err);
/* The scheduler the database runs its work on (for executing pipelines over its tables). */
MARBLE_API marble_sched *marble_db_sched(marble_db *db);
/* The database's memory budget (see marble_db_options.memory_budget), for pipelines over its
 * tables (marble_exec_options.memory); owned by the database. */
MARBLE_API marble_mem_budget *marble_db_memory_budget(marble_db *db);

/* ---- the key-value API ------------------------------------------------------------------------
 * A built-in table of binary key -> binary value with RocksDB's semantics: keys are compared
 * bytewise, values are opaque. Keys and values may be empty. */

MARBLE_API int marble_db_kv_put(marble_db *db, const void *key, size_t klen, const void *value,
                                size_t vlen, const marble_write_options *wo, marble_error *err);
/* MARBLE_OK with *value (malloc'd; free with marble_free) and *vlen, or MARBLE_ERR_NOT_FOUND. */
MARBLE_API int marble_db_kv_get(marble_db *db, const marble_read_options *ro, const void *key,
                                size_t klen, void **value, size_t *vlen, marble_error *err);
MARBLE_API int marble_db_kv_delete(marble_db *db, const void *key, size_t klen,
                                   const marble_write_options *wo, marble_error *err);

MARBLE_API int marble_kv_iter_create(marble_db *db, const marble_read_options *ro,
                                     marble_kv_iter **out, marble_error *err);
MARBLE_API void marble_kv_iter_destroy(marble_kv_iter *it);
MARBLE_API int marble_kv_iter_valid(const marble_kv_iter *it);
MARBLE_API void marble_kv_iter_seek_to_first(marble_kv_iter *it);
MARBLE_API void marble_kv_iter_seek_to_last(marble_kv_iter *it);
/* First key >= key. */
MARBLE_API void marble_kv_iter_seek(marble_kv_iter *it, const void *key, size_t klen);
/* Last key <= key. */
MARBLE_API void marble_kv_iter_seek_for_prev(marble_kv_iter *it, const void *key, size_t klen);
MARBLE_API void marble_kv_iter_next(marble_kv_iter *it);
MARBLE_API void marble_kv_iter_prev(marble_kv_iter *it);
/* Valid until the iterator moves. */
MARBLE_API const void *marble_kv_iter_key(const marble_kv_iter *it, size_t *klen);
MARBLE_API const void *marble_kv_iter_value(const marble_kv_iter *it, size_t *vlen);
/* MARBLE_OK, or the error that made the iterator invalid. */
MARBLE_API int marble_kv_iter_status(const marble_kv_iter *it, marble_error *err);

/* ---- maintenance and statistics -------------------------------------------------------------- */

/* Makes the current memtable immutable and waits until every memtable is flushed. */
MARBLE_API int marble_db_flush(marble_db *db, marble_error *err);
/* Flushes, then compacts `table` (NULL: every table) down to a single sorted level, waiting.
 * The same as marble_db_compact_ex with default options. */
MARBLE_API int marble_db_compact(marble_db *db, const char *table, marble_error *err);

/* Options of a manual compaction; every field's default is what marble_compact_options_init
 * sets, given after the field. */
typedef struct marble_compact_options {
    int threads;                 /* 0: the scheduler's threads. Each compaction step splits its key
                                    range into up to `threads` subcompactions of about equal bytes,
                                    run at once by the calling thread and the scheduler's workers
                                    (the caller works too, so 2 uses one worker); 1: one merge on
                                    the calling thread */
    marble_cancel_token *cancel; /* NULL: none. Once cancelled, the compaction stops within about
                                    one input batch (and any rate-limit wait within 10 ms) and
                                    returns MARBLE_ERR_CANCELLED: the running step's partial outputs
                                    are removed, steps already installed stay (the data is intact
                                    and readable either way) */
    /* NULL: none. Called from the compacting threads, one call at a time, with bytes_done
     * non-decreasing: input bytes merged so far of bytes_total, the input bytes of the steps
     * picked so far (a table spread over several levels is compacted in several steps, each
     * adding its inputs to bytes_total when it starts). On success the last call has
     * bytes_done == bytes_total. Must not call back into the database. */
    void (*progress)(void *ud, uint64_t bytes_done, uint64_t bytes_total);
    void *progress_ud; /* NULL: passed to progress */
} marble_compact_options;

MARBLE_API void marble_compact_options_init(marble_compact_options *o);

/* marble_db_compact with options (`o` may be NULL: defaults). Errors: those of marble_db_compact,
 * MARBLE_ERR_INVALID_ARGUMENT for threads < 0 or > 256, MARBLE_ERR_CANCELLED. Automatic
 * compactions pause while it runs (it waits for running ones first); one manual compaction runs
 * at a time (a second call waits for the first). */
MARBLE_API int marble_db_compact_ex(marble_db *db, const char *table,
                                    const marble_compact_options *o, marble_error *err);
/* Waits until no flush or compaction is pending or running. */
MARBLE_API int marble_db_wait_idle(marble_db *db, marble_error *err);

/* Statistics as one JSON object (malloc'd; free with marble_free): per level files, bytes and
 * rows; write amplification; stalls and slowdowns; memtables; WAL, handle pool and SSTable
 * batch counters; bloom filter checks, useful negatives and false positives. */
MARBLE_API int marble_db_stats_json(marble_db *db, char **json, marble_error *err);

/* Bytes of the database's live files (SSTables, WAL, manifest). */
MARBLE_API uint64_t marble_db_disk_size(marble_db *db);

/* ---- bulk import and export ------------------------------------------------------------------
 * Ingestion writes sorted data straight into new SSTables, bypassing the WAL and the memtable
 * (like RocksDB's external file ingestion); import reads Arrow IPC or CSV files through the VFS
 * into it; export writes any stream of batches (a scan, a query) to a file through the VFS.
 * Compression comes from the extension (".arrow.zst", ".csv.gz", ".arrows.lz4"). */

/* Called between batches from the thread that called import/ingest/export: rows and bytes so
 * far (ingest: the input's buffer bytes; import: bytes of the file read, before decompression
 * where the file is not compressed, else after; export: bytes written before compression). */
typedef void (*marble_progress_fn)(void *ud, int64_t rows, int64_t bytes);

typedef struct marble_ingest_options {
    int assume_sorted;           /* 1: the caller promises strictly ascending unique keys; they
                                    are checked anyway and a key out of order fails the ingest
                                    (MARBLE_ERR_INVALID_ARGUMENT naming the row, 0-based over the
                                    whole input). 0: order is detected as the input streams and
                                    input that is not sorted goes through the write path (see
                                    marble_db_ingest) */
    int threads;                 /* SSTables written at once; 0: the scheduler's thread count */
    marble_cancel_token *cancel; /* NULL: none */
    marble_progress_fn progress; /* NULL: none */
    void *progress_ud;
} marble_ingest_options;

typedef struct marble_ingest_stats {
    int64_t rows;      /* rows taken from the input */
    int64_t rows_put;  /* of those, rows written through the WAL (unsorted input) */
    int64_t files;     /* SSTables installed */
    int64_t bytes;     /* their size */
    int level;         /* the level they went to (-1: none) */
    int wal_bypassed;  /* 1 if every row went into SSTables directly */
    int flushed;       /* 1 if memtables overlapping the key range were flushed first */
    uint64_t sequence; /* the sequence number of the ingested rows (0: none) */
} marble_ingest_stats;

MARBLE_API void marble_ingest_options_init(marble_ingest_options *o);

/* Adds every row of `input` (released by the call, also on failure) to `table`, as upserts.
 * Its batches hold the table's columns by name and type (in any order; extra columns are an
 * error), keys not null.
 *
 * Sorted input (strictly ascending keys, verified as it streams) is written into new SSTables,
 * cut at target_file_size and written in parallel on the database's scheduler, then installed in
 * one manifest edit: at the deepest level that no file of that level or any level above
 * overlaps in the ingested key range, else L0. Every ingested row takes one sequence number,
 * reserved when the call starts and newer than everything written before it: ingested rows
 * shadow older values of their keys, and later writes shadow them. Memtable entries older than
 * the ingest in its key range are flushed first. Nothing is visible until the call returns
 * MARBLE_OK, and then everything is, durably (files, directory and manifest synced; the WAL
 * holds none of it). On failure or cancellation (MARBLE_ERR_CANCELLED) nothing is visible and
 * the partial files are removed. Writes to the same key range committed while an ingest runs
 * take later sequence numbers and win over it; if such a write has already been flushed to an
 * SSTable when the ingest installs, the ingest fails with MARBLE_ERR_BUSY (nothing visible) and
 * may be retried. A snapshot created while an ingest runs would see its rows appear, so while
 * such a snapshot lives the ingest fails with MARBLE_ERR_BUSY too (nothing visible).
 *
 * Unsorted input (assume_sorted == 0 and a key not above the one before it): the sorted prefix
 * read so far is installed as above, then the remaining batches go through marble_db_put
 * (stats->wal_bypassed = 0); a failure or cancellation there leaves the rows written so far.
 *
 * Thread safety: any thread except a worker of the database's scheduler. */
MARBLE_API int marble_db_ingest(marble_db *db, const char *table, struct ArrowArrayStream *input,
                                const marble_ingest_options *o, marble_ingest_stats *stats,
                                marble_error *err);

typedef enum marble_data_format {
    MARBLE_FORMAT_AUTO = 0,         /* from the extension (after any .zst/.gz/.lz4) */
    MARBLE_FORMAT_ARROW_FILE = 1,   /* .arrow, .feather */
    MARBLE_FORMAT_ARROW_STREAM = 2, /* .arrows */
    MARBLE_FORMAT_CSV = 3,          /* .csv */
    MARBLE_FORMAT_JSON = 4          /* .json, .jsonl: JSON lines (export only) */
} marble_data_format;

/* The format named by a path's extension (a trailing .zst, .gz or .lz4 is skipped), or
 * MARBLE_FORMAT_AUTO when none matches. */
MARBLE_API marble_data_format marble_data_format_from_path(const char *uri);

typedef struct marble_import_options {
    marble_data_format format; /* AUTO: from the extension; on import an Arrow file and
                                  stream are also told apart by their magic bytes */
    marble_ingest_options ingest;
    marble_csv_options csv;               /* marble_csv_options_init's defaults */
    const struct ArrowSchema *csv_schema; /* NULL: the table's schema */
} marble_import_options;

typedef struct marble_import_stats {
    marble_ingest_stats ingest;
    int64_t bad_rows; /* CSV records skipped (csv.skip_bad_rows) */
    int64_t first_bad_line;
    char first_bad_message[MARBLE_ERROR_MESSAGE_SIZE];
} marble_import_stats;

MARBLE_API void marble_import_options_init(marble_import_options *o);

/* Imports a file (any VFS URI of the database's registry, compressed by extension) into
 * `table` through marble_db_ingest. The file is read as a stream: an Arrow IPC file is read as
 * the stream it holds (batch by batch, its footer ignored), CSV through the CSV reader (with
 * csv_schema or the table's schema). Errors name the file; bad CSV is reported as the CSV reader
 * does (line and column). */
MARBLE_API int marble_db_import_file(marble_db *db, const char *table, const char *uri,
                                     const marble_import_options *o, marble_import_stats *stats,
                                     marble_error *err);

typedef struct marble_export_options {
    marble_data_format format;          /* AUTO: from the extension */
    marble_ipc_compression compression; /* Arrow formats: body compression (0: none) */
    marble_csv_write_options csv;       /* marble_csv_write_options_init's defaults */
    marble_cancel_token *cancel;
    marble_progress_fn progress;
    void *progress_ud;
} marble_export_options;

typedef struct marble_export_stats {
    int64_t rows, batches;
    int64_t bytes; /* written before compression */
} marble_export_stats;

MARBLE_API void marble_export_options_init(marble_export_options *o);

/* Writes every batch of `input` (released by the call) to `uri` through `fs` (created or
 * truncated; a .zst/.gz/.lz4 suffix compresses it) as an Arrow IPC file or stream, CSV (a header
 * row, see marble_csv_writer) or JSON lines (one object per row: numbers and booleans bare,
 * NaN and infinities null, strings escaped, binary as a hex string, date32 and timestamps as the
 * CSV writer's ISO 8601 strings, null as null). The output is written to a temporary file next
 * to `uri` (".marble-export-<name>"), synced, and renamed over `uri` when complete: on failure or
 * cancellation (MARBLE_ERR_CANCELLED) the temporary file is removed and `uri` keeps what it held
 * before. */
MARBLE_API int marble_export_stream(marble_fs *fs, struct ArrowArrayStream *input, const char *uri,
                                    const marble_export_options *o, marble_export_stats *stats,
                                    marble_error *err);
/* Scans the whole table (in key order) into marble_export_stream through the database's fs. */
MARBLE_API int marble_db_export_table(marble_db *db, const char *table, const char *uri,
                                      const marble_export_options *o, marble_export_stats *stats,
                                      marble_error *err);

/* ---- secondary indexes and index rebuilds -----------------------------------------------------
 * Every SSTable carries Marble's index after its Arrow data (docs/format/sst.md): per batch key
 * ranges, zone maps (min/max of fixed-width columns), CRCs, a bloom filter of the file's keys and,
 * for each column with a secondary index, one small bloom filter per batch over the column's
 * values (about 1% false positives), with which scans skip batches for `column = literal`. */

typedef struct marble_index_options {
    int bloom_bits_per_key;      /* -1: the database's bloom_bits_per_key; 0: files get no key
                                    filter; 1..64. Only the files rewritten are affected: files
                                    that flushes and compactions write later keep using the
                                    database's option */
    int threads;                 /* 0: every file is a task of its own (as many at once as the
                                    scheduler has threads); n > 0: at most n files at once */
    marble_cancel_token *cancel; /* NULL: none */
    /* NULL: none. Called from the scheduler's threads, one call at a time, after each file, with
     * files_done increasing up to files_total. Must not call back into the database. */
    void (*progress)(void *ud, uint64_t files_done, uint64_t files_total);
    void *progress_ud;
} marble_index_options;

/* Defaults: bloom_bits_per_key -1, the rest 0. */
MARBLE_API void marble_index_options_init(marble_index_options *o);

/* Rewrites the index of every SSTable of `table` (NULL: of every table, the key-value table
 * included), in parallel on the database's scheduler: each file is copied to a new file whose
 * Arrow part (schema, record batches, footer) is byte for byte the old one's, followed by a
 * freshly computed index (CRCs checked and written again, zone maps, the key bloom filter with
 * o->bloom_bits_per_key, the table's secondary-index filters). All replacements are installed in
 * one manifest edit (same levels, key ranges and sequence numbers); the old files are deleted
 * once no reader holds them. Files that a compaction is merging when the call starts are skipped
 * (the compaction's outputs are written with the database's options); files being rebuilt are
 * marked busy so that no compaction takes them meanwhile, and a file that a manual compaction
 * replaced before the install is left out of it. Reads and writes go on meanwhile.
 * `o` may be NULL (defaults). Errors: MARBLE_ERR_NOT_FOUND (no such table),
 * MARBLE_ERR_INVALID_ARGUMENT (bloom_bits_per_key or threads out of range),
 * MARBLE_ERR_CANCELLED, MARBLE_ERR_CORRUPTION naming a file whose batch CRC does not match, I/O
 * errors; on any error nothing is installed and the new files are removed. */
MARBLE_API int marble_db_rebuild_indexes(marble_db *db, const char *table,
                                         const marble_index_options *o, marble_error *err);

/* Creates a secondary index on `column` of `table` (any column type; at most 32 per table): the
 * index is persisted in the manifest with the table, every SSTable written for the table from now
 * on (flushes, compactions, ingestion, rebuilds) carries a value filter per batch for the column,
 * and the existing files that lack one are rewritten as by marble_db_rebuild_indexes (in
 * parallel, default options). Files that a flush or compaction already running writes may lack
 * the filter until they are compacted or rebuilt; a missing filter only means no pruning.
 * Errors: MARBLE_ERR_NOT_FOUND (table or column), MARBLE_ERR_EXISTS (already indexed; nothing is
 * done), MARBLE_ERR_LIMIT (32 indexes), and the rebuild's errors (the index then stays created;
 * call marble_db_rebuild_indexes to finish the files). marble_db_describe_table lists the
 * indexed columns in the schema metadata "marble.indexes" (comma-separated, absent when none). */
MARBLE_API int marble_db_create_index(marble_db *db, const char *table, const char *column,
                                      marble_error *err);
/* Drops the index: new SSTables stop carrying the column's filters (existing ones keep theirs,
 * which stay correct, until they are compacted). MARBLE_ERR_NOT_FOUND if the column has no
 * index. */
MARBLE_API int marble_db_drop_index(marble_db *db, const char *table, const char *column,
                                    marble_error *err);

MARBLE_API void marble_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
