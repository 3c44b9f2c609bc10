/*
 * Leveled compaction (private to src/lsm/): the picker and the single-threaded merge.
 *
 * Levels: L0 holds flushed SSTables that may overlap; L1..L6 are sorted runs of SSTables with
 * disjoint key ranges. Level n (n >= 1) aims at level1_max_bytes * 10^(n-1) bytes. Files of all
 * tables share the levels: the manifest keys of a file (smallest/largest) start with the 4-byte
 * big-endian table id, so files of different tables never overlap, and every compaction works
 * on one table.
 *
 * Picker (LevelDB's score rule): L0's score is files / level0_compaction_trigger; level n's is
 * bytes / target bytes. The level with the highest score >= 1 is compacted: for L0, the oldest
 * L0 file plus every L0 file overlapping the growing key range; for n >= 1, the next file after
 * the level's compaction pointer (round robin by key). The inputs of the next level are the
 * files overlapping the inputs' key range. Files already being compacted are never picked
 * twice (the caller marks them busy), so separate compactions may run at once: that is the seam
 * for the parallel compactor (each job is independent, and a job could split its key range into
 * subcompactions).
 *
 * Merge: a k-way merge of the inputs (iter.h) written into new SSTables of at most
 * target_file_size bytes in the output level. Versions are dropped when no reader can see them:
 * for a key, every version newer than smallest_snapshot is kept, plus the newest version at or
 * below it; older ones are dropped. That newest version is also dropped when it is a delete and
 * no level below the output level has files overlapping the key (the delete shadows nothing).
 *
 * Thread safety: pick runs under the db's lock; run runs on any thread without it.
 */
#ifndef MARBLE_LSM_COMPACTION_H
#define MARBLE_LSM_COMPACTION_H

#include <stddef.h>
#include <stdint.h>

#include "lsm/manifest.h"
#include "lsm/rowcodec.h"
#include "lsm/sst.h"

typedef struct marble__compaction_options {
    int level0_compaction_trigger; /* 4 */
    uint64_t level1_max_bytes;     /* 256 MiB */
    uint64_t target_file_size;     /* 64 MiB */
} marble__compaction_options;

typedef struct marble__compaction {
    int level;        /* the input level */
    int output_level; /* level + 1, or the same level for a bottom-level rewrite */
    uint32_t table_id;
    /* inputs[0]: files of `level`; inputs[1]: files of output_level (copies of the metas). */
    marble__file_meta *inputs[2];
    size_t n_inputs[2];
    int manual; /* a full compaction (marble_db_compact): tombstones dropped at the bottom */
} marble__compaction;

/* Called by pick for each file: non-zero if it is being compacted already. */
typedef int (*marble__busy_fn)(void *ud, uint64_t number);

/* Picks the most urgent compaction of version v, or sets *out to NULL when no level's score
 * reaches 1 (or every candidate is busy). */
int marble__compaction_pick(const marble__version *v, const marble__compaction_options *opts,
                            marble__busy_fn busy, void *busy_ud, marble__compaction **out,
                            marble_error *err);
/* A manual compaction of table `table_id` from `level` into the next non-empty-or-last level:
 * every file of that table in `level` plus the overlapping files of the output level. *out is
 * NULL when the table has no files in `level`. */
int marble__compaction_pick_level(const marble__version *v, uint32_t table_id, int level,
                                  int output_level, marble__busy_fn busy, void *busy_ud,
                                  marble__compaction **out, marble_error *err);
void marble__compaction_free(marble__compaction *c);

/* What run needs from the db. */
typedef struct marble__compaction_env {
    marble_fs *fs;
    const char *dir_uri;            /* the database directory; outputs are NNNNNN.arrow there */
    const marble__row_codec *codec; /* the table's */
    marble__sst_options sst_opts;
    uint64_t target_file_size;
    uint64_t smallest_snapshot;     /* the oldest sequence a live snapshot or reader may read */
    const marble__version *version; /* for the "nothing below overlaps" test */
    /* Opens an input SSTable (a cached handle with a reference for the caller). */
    int (*open_sst)(void *ud, const marble__file_meta *f, marble__sst **out, marble_error *err);
    /* A new, unused file number. */
    uint64_t (*new_file_number)(void *ud);
    void *ud;
    /* Polled between batches of input; non-zero cancels the job (MARBLE_ERR_CANCELLED). */
    int (*cancelled)(void *ud);
} marble__compaction_env;

typedef struct marble__compaction_result {
    uint64_t bytes_read, bytes_written, rows_in, rows_out, files_out;
} marble__compaction_result;

/* Merges the inputs into new SSTables and fills `edit` (initialized by the caller) with the
 * deletions of the inputs and the additions of the outputs (manifest keys with the table
 * prefix). The output files are synced and the directory synced before returning; on failure
 * the outputs written so far are removed and `edit` is left empty. */
int marble__compaction_run(const marble__compaction *c, const marble__compaction_env *env,
                           marble__version_edit *edit, marble__compaction_result *res,
                           marble_error *err);

/* The picker's round-robin position in each level lives in a process-wide table (it only steers
 * which file a level compacts next); this clears it, so that tests start from the first file. */
void marble__compaction_reset_pointers(void);

/* Target bytes of level n >= 1. */
uint64_t marble__level_max_bytes(const marble__compaction_options *opts, int level);

#endif
