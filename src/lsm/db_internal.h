/*
 * The state store's shared internals (private to src/lsm/): the db struct, tables, memtable
 * references and the read-side helpers that db.c (writes, flushes, compactions, recovery) and
 * db_read.c (gets, scans, the key-value iterator) share.
 *
 * Lock order: wq_mu (the commit queue) alone; wmu (the commit lock, held by the group leader:
 * sequence numbers, WAL appends, memtable inserts) before mu
 * (everything else: memtables list, tables, snapshots, background state). The manifest and the
 * table cache have their own locks, taken last.
 *
 * Invariants: mem is never NULL while the db is open; imm[0..n_imm) are oldest first and each
 * holds only sequence numbers below those of the ones after it and of mem; last_seq (published
 * with a release store) is the highest sequence number whose write is complete, and every
 * sequence number at or below it is in a memtable or an SSTable.
 */
#ifndef MARBLE_LSM_DB_INTERNAL_H
#define MARBLE_LSM_DB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lsm/compaction.h"
#include "lsm/iter.h"
#include "lsm/keyenc.h"
#include "lsm/manifest.h"
#include "lsm/memtable.h"
#include "lsm/rowcodec.h"
#include "lsm/scratch.h"
#include "lsm/sst.h"
#include "lsm/wal.h"
#include "marble/db.h"

#define MARBLE__KV_TABLE_ID 1u
#define MARBLE__KV_TABLE_NAME "__kv"
#define MARBLE__FIRST_USER_TABLE_ID 2u
#define MARBLE__PREFIX_LEN 4
#define MARBLE__MAX_IMM 64

/* A table: reference-counted so that a stream keeps its table's codec alive after a drop. */
typedef struct marble__table {
    atomic_int refs;
    uint32_t id;
    char *name;
    int key_cols[MARBLE__KEY_MAX_COLS];
    int nkeys;
    marble__row_codec codec;
    int indexes[MARBLE__SST_MAX_INDEXES]; /* secondary-indexed columns, ascending; under db->mu */
    int n_indexes;
} marble__table;

void marble__table_ref(marble__table *t);
void marble__table_unref(marble__table *t);

/* A memtable with the reference count readers hold and what its flush needs. */
typedef struct marble__memref {
    atomic_int refs;
    marble__memtable *mt;
    uint64_t wal_segment; /* the WAL segments up to this one hold its entries */
    uint64_t max_seq;
    marble__memtable_hint hint; /* for inserts, under wmu (or during recovery) */
    marble_mem_budget *budget;  /* charged `charged` bytes while the memtable lives */
    uint64_t charged;
} marble__memref;

void marble__memref_unref(marble__memref *m);

/* What a reader pins: the memtables and the version at one moment. */
typedef struct marble__readview {
    marble__memref *mems[MARBLE__MAX_IMM + 1]; /* newest first */
    size_t n_mems;
    marble__version *version;
    uint64_t seq;
} marble__readview;

/* A live resource or running job in the database's registry (resources.c). */
typedef struct marble__res {
    struct marble__res *prev, *next; /* NULL when not registered */
    char what[128];                  /* "scan stream of table 'orders'" */
} marble__res;

struct marble_snapshot {
    marble_db *db;
    uint64_t seq;
    marble_snapshot *prev, *next;
    marble__res res;
};

struct marble_db {
    char *uri;
    char *wal_uri;   /* a copy of opts.wal_uri, or NULL */
    char *cache_uri; /* a copy of opts.sst_cache_uri, or NULL */
    marble_fs *fs;
    int own_fs;
    marble_sched *sched;
    int own_sched;
    marble_mem_budget *budget; /* memtables, SSTable batch caches, queries */
    marble_db_options opts;
    marble_handle_pool *pool;
    marble__manifest *manifest;
    marble__version *current; /* what readers see (under mu); see apply_edit */
    int object_store;         /* the directory's backend lacks append or atomic rename */
    marble__wal *wal;
    marble_file *lock_file;
    char *lock_key;

    pthread_mutex_t wmu;
    pthread_mutex_t mu;
    pthread_cond_t cv;

    marble__memref *mem;
    marble__memref *imm[MARBLE__MAX_IMM];
    size_t n_imm;

    marble__table *kv; /* the key-value table (also in tables; never dropped) */
    marble__table **tables;
    size_t n_tables, cap_tables;
    uint32_t next_table_id;

    uint64_t next_seq; /* under wmu */
    atomic_uint_fast64_t last_seq;
    atomic_uint_fast64_t next_file;

    marble_snapshot snapshots; /* sentinel of a circular list, under mu */
    atomic_long live_streams;  /* streams, iterators */
    pthread_mutex_t res_mu;    /* guards the registry list only; taken last, never held */
    marble__res res_head;      /* sentinel of the live-resource registry (resources.c) */
    long live_snapshots;

    /* background work */
    marble_group bg;
    int bg_ready; /* bg is initialized (after recovery) */
    int flush_running;
    int compactions_running;
    int compactions_active;   /* of those, the ones that picked work and run it */
    int max_compactions_seen; /* the most that ran at once (stats) */
    int manual_compaction;    /* pauses automatic picks */
    atomic_int closing;       /* written under mu; env_cancelled reads it without */
    int bg_error;
    marble_error bg_err;
    int write_error; /* sticky: WAL failures */
    marble_error write_err;
    uint64_t *busy_files;
    size_t n_busy, cap_busy;
    marble__rate_limiter rate; /* opts.compaction_rate_limit, for flushes and compactions */

    /* table cache: file number -> opened SSTable */
    pthread_mutex_t tc_mu;
    struct marble__tc_entry *tc;
    size_t tc_cap, tc_n;

    /* the commit queue (see commit_payload in db.c): writers wait under wq_mu; the leader
     * commits a group under wmu. wq_mu is never held while taking wmu or mu. */
    pthread_mutex_t wq_mu;
    struct marble__writer *wq_head, *wq_tail;
    marble__bytes gpayload; /* a group's combined record, under wmu */

    /* stats */
    atomic_uint_fast64_t st_stalls, st_stall_ns, st_slowdowns, st_flushes, st_compactions;
    atomic_uint_fast64_t st_bytes_flushed, st_bytes_compacted_read, st_bytes_compacted_written;
    atomic_uint_fast64_t st_user_bytes, st_rows_written, st_gets, st_scans;
};

/* The live-resource registry: add when an object that outlives the call is handed out (or a long
 * job starts), remove when it is released. describe writes up to 4 entries ("a; b; and N more")
 * and returns how many are live. */
void marble__db_res_init(marble_db *db);
void marble__db_res_destroy(marble_db *db);
void marble__db_res_add(marble_db *db, marble__res *r, const char *fmt, ...) MARBLE_PRINTF(3, 4);
void marble__db_res_remove(marble_db *db, marble__res *r);
size_t marble__db_res_describe(marble_db *db, char *buf, size_t cap);

/* Tables (under mu, or from a reader holding a reference). */
marble__table *marble__db_find_table(marble_db *db, const char *name); /* ref'd or NULL */
marble__table *marble__db_find_table_id(marble_db *db, uint32_t id);   /* ref'd or NULL */
int marble__db_table_error(const char *name, marble_error *err);

/* The opened SSTable of a file (cached), with a reference for the caller. */
int marble__db_open_sst(marble_db *db, uint64_t number, const marble__table *t, marble__sst **out,
                        marble_error *err);

void marble__prefix_put(uint8_t *p, uint32_t id);
uint32_t marble__prefix_get(const uint8_t *p);

/* 1 if file f holds rows of table `id` (its keys carry the table's prefix). */
static inline int marble__file_of_table(const marble__file_meta *f, uint32_t id)
{
    return f->smallest_len >= MARBLE__PREFIX_LEN && marble__prefix_get(f->smallest) == id;
}

/* Pins the current memtables and version; seq is the snapshot's or the latest. */
void marble__db_readview_acquire(marble_db *db, const marble_snapshot *snap, marble__readview *rv);
void marble__db_readview_release(marble__readview *rv);

/* An internal iterator over table t in rv (memtables, L0 files, one run per level), merged. */
int marble__db_table_iter(marble_db *db, const marble__table *t, const marble__readview *rv,
                          marble__iter **out, marble_error *err);

/* marble__db_table_iter over only the files of t for which keep(ud, f) is nonzero (memtables
 * always; keep NULL: every file). */
int marble__db_table_iter_files(marble_db *db, const marble__table *t, const marble__readview *rv,
                                int (*keep)(void *ud, const marble__file_meta *f), void *ud,
                                marble__iter **out, marble_error *err);

/* The user's view of table t in rv (newest visible version per key, no deletes): a plain run
 * iterator when the table is one clean sorted run (see marble__db_clean_run), else the
 * version-collapsing view over the merge of everything. */
int marble__db_visible_iter(marble_db *db, const marble__table *t, const marble__readview *rv,
                            marble__iter **out, marble_error *err);

/* 1 (default): scans over one clean sorted run hand out zero-copy slices; tests set 0 to compare
 * with the merging path. */
extern int marble__scan_fast_path;

/* A scan's key range, encoded (no table prefix). A key k is in range when it is not before lower
 * (k >= lower; k > lower when skip_lower, an exclusive full key) and not past upper (k < upper;
 * k <= upper when upper_gt, an inclusive full key). Exclusive lower and inclusive upper prefixes
 * become their successors. empty: no key can be in range. */
typedef struct marble__scan_bounds {
    marble__bytes lower, upper;
    int has_lower, skip_lower;
    int has_upper, upper_gt;
    int empty;
} marble__scan_bounds;
int marble__scan_bounds_init(const marble__table *t, const marble_key_range *range,
                             marble__scan_bounds *b, marble_error *err);
void marble__scan_bounds_free(marble__scan_bounds *b);
int marble__scan_before_lower(const marble__scan_bounds *b, const uint8_t *k, size_t klen);
int marble__scan_past_upper(const marble__scan_bounds *b, const uint8_t *k, size_t klen);
/* 1 if file f's key range (manifest keys, with prefix) may hold keys in b's range. */
int marble__scan_file_in_bounds(const marble__scan_bounds *b, const marble__file_meta *f);

/* Appends the rows of `it` (a visible iterator, positioned at or before b's lower bound) to `as`
 * until it holds max_rows rows, or *done = 1 when the rows run out or pass b's upper bound. A
 * key equal to an exclusive lower bound is skipped (b->skip_lower is cleared once past it). */
int marble__scan_fill(marble__iter *it, marble__scan_bounds *b, marble__assembler *as,
                      int64_t max_rows, int *done, marble_error *err);

/* Projection by column names (columns NULL: every column, *nproj = -1); an unknown name is
 * MARBLE_ERR_INVALID_ARGUMENT naming it. proj holds MARBLE__MAX_COLUMNS entries. */
int marble__db_projection(const marble__table *t, const char *const *columns, size_t n_columns,
                          int *proj, int *nproj, marble_error *err);

/* The clean-run test of the zero-copy scan path, restricted to the memtable entries and files
 * that may hold keys in b's range (NULL: the whole table): when they all live in one sorted run of
 * clean SSTables (one level >= 1, no memtable entries, no L0 files, every file without deletes or
 * second versions and no newer than rv's snapshot), the visible rows are exactly the files' rows:
 * *clean = 1 and *run holds those files in key order (referenced; the caller unrefs them and
 * frees the array, also when *clean = 0). */
int marble__db_clean_run(marble_db *db, const marble__table *t, const marble__readview *rv,
                         const marble__scan_bounds *b, marble__sst ***run, size_t *n_run,
                         int *clean, marble_error *err);

/* Rows [start, start + n) of SSTable batch `src` (taken over, also on failure), columns proj, as a
 * "+s" array of zero-copy slices. */
int marble__db_slice(struct ArrowArray *src, const int *proj, int nproj, int64_t start, int64_t n,
                     struct ArrowArray *out, marble_error *err);

/* Encodes a key given as marble_values into *out (a full key or a prefix). */
int marble__db_encode_key(const marble__table *t, marble_key key, int need_full, marble__bytes *out,
                          marble_error *err);

/* For bulk ingestion (ingest.c): a fresh file number, the URI of an SSTable, the SSTable options
 * of the database, and applying a manifest edit of added files with mu held (the new version is
 * installed for readers before it returns). */
uint64_t marble__db_new_file_number(marble_db *db);
char *marble__db_file_uri(const marble_db *db, uint64_t number);
void marble__db_sst_options(const marble_db *db, marble__sst_options *o);
int marble__db_apply_edit_locked(marble_db *db, marble__version_edit *e, marble_error *err);
void marble__db_maybe_schedule(marble_db *db);

/* Secondary indexes (index_build.c): sets o's indexed columns to table t's (takes mu; every
 * place that writes SSTables of a table calls it after marble__db_sst_options), and writes the
 * table catalog as one manifest edit (mu held). */
void marble__db_index_options(marble_db *db, const marble__table *t, marble__sst_options *o);
int marble__db_catalog_apply_locked(marble_db *db, marble_error *err);

#endif
