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
} marble__memref;

void marble__memref_unref(marble__memref *m);

/* What a reader pins: the memtables and the version at one moment. */
typedef struct marble__readview {
    marble__memref *mems[MARBLE__MAX_IMM + 1]; /* newest first */
    size_t n_mems;
    marble__version *version;
    uint64_t seq;
} marble__readview;

struct marble_snapshot {
    marble_db *db;
    uint64_t seq;
    marble_snapshot *prev, *next;
};

struct marble_db {
    char *uri;
    char *wal_uri;   /* a copy of opts.wal_uri, or NULL */
    char *cache_uri; /* a copy of opts.sst_cache_uri, or NULL */
    marble_fs *fs;
    int own_fs;
    marble_sched *sched;
    int own_sched;
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

/* Tables (under mu, or from a reader holding a reference). */
marble__table *marble__db_find_table(marble_db *db, const char *name); /* ref'd or NULL */
marble__table *marble__db_find_table_id(marble_db *db, uint32_t id);   /* ref'd or NULL */
int marble__db_table_error(const char *name, marble_error *err);

/* The opened SSTable of a file (cached), with a reference for the caller. */
int marble__db_open_sst(marble_db *db, uint64_t number, const marble__table *t, marble__sst **out,
                        marble_error *err);

void marble__prefix_put(uint8_t *p, uint32_t id);
uint32_t marble__prefix_get(const uint8_t *p);

/* Pins the current memtables and version; seq is the snapshot's or the latest. */
void marble__db_readview_acquire(marble_db *db, const marble_snapshot *snap, marble__readview *rv);
void marble__db_readview_release(marble__readview *rv);

/* An internal iterator over table t in rv (memtables, L0 files, one run per level), merged. */
int marble__db_table_iter(marble_db *db, const marble__table *t, const marble__readview *rv,
                          marble__iter **out, marble_error *err);

/* The user's view of table t in rv (newest visible version per key, no deletes): a plain run
 * iterator when the table is one clean sorted run (see clean_run in db_read.c), else the
 * version-collapsing view over the merge of everything. */
int marble__db_visible_iter(marble_db *db, const marble__table *t, const marble__readview *rv,
                            marble__iter **out, marble_error *err);

/* 1 (default): scans over one clean sorted run hand out zero-copy slices; tests set 0 to compare
 * with the merging path. */
extern int marble__scan_fast_path;

/* Encodes a key given as marble_values into *out (a full key or a prefix). */
int marble__db_encode_key(const marble__table *t, marble_key key, int need_full, marble__bytes *out,
                          marble_error *err);

#endif
