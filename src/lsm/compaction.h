/*
 * Leveled compaction (private to src/lsm/): the picker, the merge with subcompactions, and the
 * rate limiter shared by background writers.
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
 * twice (the caller marks them busy), so separate compactions may run at once.
 *
 * Merge: a k-way merge of the inputs (iter.h) written into new SSTables of at most
 * target_file_size bytes in the output level. Versions are dropped when no reader can see them:
 * for a key, every version newer than smallest_snapshot is kept, plus the newest version at or
 * below it; older ones are dropped. That newest version is also dropped when it is a delete and
 * no level below the output level has files overlapping the key (the delete shadows nothing).
 *
 * Subcompactions: with env.subcompactions = N > 1, run splits the job's key range into up to N
 * pieces of about equal input bytes. The boundaries are the largest keys of the inputs' record
 * batches (marble__sst_batch_range), each weighted by its share of its file's bytes; piece k
 * takes the user keys in (bound[k-1], bound[k]], so every version of a key lands in one piece
 * and the dropping rules above hold per key exactly as in one merge. Each piece merges only the
 * input files overlapping its range into its own output files. Pieces run at once: helper
 * tasks are spawned into env.group and the calling thread works through the pieces too
 * (whoever claims a piece first runs it), so the caller waits only for pieces a worker has
 * started, never for a busy scheduler. The job's edit names the outputs of all pieces in key
 * order (one manifest edit installs them together); when any piece fails or the job is
 * cancelled, the other pieces stop at their next poll and every output of every piece is
 * removed. N <= 1 is the single merge, unchanged. With LZ4/ZSTD SSTables, each piece encodes
 * and compresses its own output batches, so compression runs in parallel with the pieces.
 * Within a piece (when N > 1 and a group is given), an output file cut at target_file_size is
 * finished (its last batch, index, footer and fsync) by a task while the piece goes on merging
 * into the next file; the piece collects those finishes before it ends, running any a worker
 * has not started itself.
 *
 * Polling: each piece polls every 1024 input rows (a quarter of a default input batch):
 * cancellation (env.cancelled, or a failed sibling), progress (input bytes merged, estimated
 * from rows at the job's bytes per row) and the rate limit (output bytes written since the last
 * poll are passed to env.throttle, which may sleep). The job checks env.cancelled once more
 * after the pieces end, before it syncs and fills the edit.
 *
 * Rate limiter: a token bucket in bytes per second shared by every background writer of a
 * database (flushes and compaction pieces). A request takes its bytes at once (the bucket may
 * go into debt) and then sleeps until the debt it sees is paid, in slices of at most 10 ms,
 * polling its cancellation callback between slices; so concurrent writers are paced together
 * and a cancelled one stops waiting within 10 ms. The bucket starts empty and holds at most
 * 1/20 s of tokens (bursts stay short).
 *
 * Thread safety: pick runs under the db's lock; run runs on any thread without it (its env
 * callbacks are called from the job's threads, several at once when it has pieces); the rate
 * limiter may be used from any thread.
 */
#ifndef MARBLE_LSM_COMPACTION_H
#define MARBLE_LSM_COMPACTION_H

#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "lsm/manifest.h"
#include "lsm/rowcodec.h"
#include "lsm/sst.h"
#include "marble/sched.h"

#define MARBLE__MAX_SUBCOMPACTIONS 64

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
    /* Subcompactions (see above): at most this many key-range pieces (<= 1: one merge; capped at
     * MARBLE__MAX_SUBCOMPACTIONS). Helper tasks go into `group` (its scheduler's workers run
     * them); without a group the pieces run one after the other on the calling thread. */
    int subcompactions;
    marble_group *group;
    /* May be NULL. Input bytes merged since the last call; when run returns MARBLE_OK the calls
     * have added up to result.bytes_read. */
    void (*progress)(void *ud, uint64_t bytes);
    /* May be NULL. Output bytes written since the last call: may sleep to pace the job; a
     * non-OK return (MARBLE_ERR_CANCELLED while waiting) fails the job with that code. */
    int (*throttle)(void *ud, uint64_t bytes, marble_error *err);
} marble__compaction_env;

typedef struct marble__compaction_result {
    uint64_t bytes_read, bytes_written, rows_in, rows_out, files_out;
    int subcompactions; /* pieces the job ran as */
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

/* The token bucket (see above). rate 0: unlimited (requests return at once). */
typedef struct marble__rate_limiter {
    pthread_mutex_t mu;
    uint64_t rate; /* bytes per second; fixed after init */
    uint64_t last_ns;
    double balance; /* bytes: credit when positive, debt when negative (under mu) */
} marble__rate_limiter;

void marble__rate_limiter_init(marble__rate_limiter *rl, uint64_t bytes_per_sec);
void marble__rate_limiter_destroy(marble__rate_limiter *rl);
/* Takes `bytes` and sleeps until the bucket's debt is paid: MARBLE_OK, or
 * MARBLE_ERR_CANCELLED (no message) as soon as cancelled(ud) (may be NULL) returns non-zero. */
int marble__rate_limiter_request(marble__rate_limiter *rl, uint64_t bytes, int (*cancelled)(void *),
                                 void *ud);

#endif
