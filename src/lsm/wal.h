/*
 * The write-ahead log of the state store (private to src/lsm/). The on-disk format is written
 * down in docs/format/wal.md.
 *
 * A WAL is a directory of segment files "<dir>/NNNNNN.log" (decimal, at least six digits,
 * numbered from 1 without gaps). Each record carries a 64-bit sequence number and opaque payload
 * bytes; a CRC32C guards each record. Writes go to the newest segment; marble__wal_roll starts a
 * new one and marble__wal_remove_upto deletes segments whose records are flushed elsewhere.
 *
 * Durability: marble__wal_append returns only after its record is written and, per sync mode,
 * synced (NONE: written to the file, not synced; GROUP: synced, concurrent appenders share one
 * write and one sync; EVERY: each append is written and synced on its own). New segments are
 * made durable with a directory sync before any record is written to them, and the segment being
 * left by a roll is synced in every mode, so a power cut can lose records only at the end of
 * the newest segment. After a failed write, sync or segment creation the WAL refuses every later
 * append, roll and sync with the first error (sticky): nothing is acknowledged that might be
 * lost.
 *
 * Thread safety: append, sync and roll may be called from any number of threads at once;
 * remove_upto may run alongside them. open and close are for one thread, with no other call in
 * flight. Records appended concurrently are logged in the order their writers joined the queue.
 */
#ifndef MARBLE_LSM_WAL_H
#define MARBLE_LSM_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"
#include "marble/vfs.h"

typedef struct marble__wal marble__wal;

typedef enum marble__wal_sync_mode {
    MARBLE__WAL_SYNC_NONE = 0,  /* written, never synced by append (roll and close still sync) */
    MARBLE__WAL_SYNC_GROUP = 1, /* one write and one fdatasync per group of concurrent appends */
    MARBLE__WAL_SYNC_EVERY = 2  /* one write and one fdatasync per append */
} marble__wal_sync_mode;

typedef struct marble__wal_options {
    marble__wal_sync_mode sync_mode;
    uint64_t segment_size;  /* roll to a new segment once the current one reaches this; 0: 64 MiB */
    size_t max_group_bytes; /* most record bytes one group write gathers; 0: 4 MiB */
} marble__wal_options;

/* The largest payload a record may carry. */
#define MARBLE__WAL_MAX_PAYLOAD ((uint32_t)1 << 30)

/* Opens the WAL in `dir_uri` (created, with missing parents, if needed) for appending. The
 * newest existing segment is checked: a torn tail (see marble__wal_replay) is cut off and the
 * segment synced, so that it can become an older segment; corruption is MARBLE_ERR_CORRUPTION.
 * Then a new segment, numbered one past the highest existing one (1 in an empty directory), is
 * created and made durable. Existing segments are never appended to. `opts` may be NULL
 * (GROUP, defaults). `fs` must outlive the WAL. */
int marble__wal_open(marble_fs *fs, const char *dir_uri, const marble__wal_options *opts,
                     marble__wal **out, marble_error *err);

/* Syncs the current segment (unless the WAL already failed), closes it and frees the WAL.
 * Returns the sync's or close's error, if any; the WAL is freed either way. Accepts NULL. */
int marble__wal_close(marble__wal *wal, marble_error *err);

/* Appends one record and returns once it is durable per the sync mode. `payload` may be NULL
 * when len is 0; len above MARBLE__WAL_MAX_PAYLOAD is MARBLE_ERR_INVALID_ARGUMENT. Errors name
 * the segment; after an I/O error every later call fails with it. */
int marble__wal_append(marble__wal *wal, uint64_t seq, const void *payload, size_t len,
                       marble_error *err);

/* Syncs every record appended before the call (for NONE mode; cheap in the others). */
int marble__wal_sync(marble__wal *wal, marble_error *err);

/* Syncs and closes the current segment and starts a new one; *old_segment (may be NULL)
 * receives the number of the segment it closed. Every record appended before the call is in
 * that segment or an earlier one. */
int marble__wal_roll(marble__wal *wal, uint64_t *old_segment, marble_error *err);

/* The number of the segment appends go to now. */
uint64_t marble__wal_current_segment(marble__wal *wal);

/* Deletes the segments numbered up to and including `segment_no`, then syncs the directory.
 * `segment_no` must be below the current segment (else MARBLE_ERR_INVALID_ARGUMENT). Segments
 * already gone are skipped. */
int marble__wal_remove_upto(marble__wal *wal, uint64_t segment_no, marble_error *err);

/* What the WAL has done since open (counters read without a lock: a snapshot, not a cut). */
typedef struct marble__wal_stats {
    uint64_t appends; /* records written */
    uint64_t writes;  /* file writes (one per group) */
    uint64_t syncs;   /* file syncs of segments */
    uint64_t rolls;
} marble__wal_stats;
void marble__wal_get_stats(marble__wal *wal, marble__wal_stats *out);

/* Called once per record, in log order. Return MARBLE_OK to go on; anything else stops the
 * replay, which then returns that code. `payload` is valid only during the call. */
typedef int (*marble__wal_replay_fn)(uint64_t seq, const void *payload, size_t len, void *ud);

typedef struct marble__wal_replay_stats {
    uint64_t segments;      /* segment files read */
    uint64_t first_segment; /* 0 when none */
    uint64_t last_segment;  /* 0 when none */
    uint64_t records;
    uint64_t payload_bytes;
    uint64_t last_seq;     /* of the last record replayed; 0 when none */
    int torn_tail;         /* 1 if the newest segment ended in an incomplete or bad record */
    uint64_t torn_segment; /* where: segment number, byte offset, bytes ignored */
    uint64_t torn_offset;
    uint64_t torn_bytes;
} marble__wal_replay_stats;

/* Replays the records of the segments numbered `from_segment` and above, oldest first, into
 * `fn`. A missing directory or no segments is an empty WAL (MARBLE_OK). At the end of the newest
 * segment, an incomplete record or one with a bad CRC that no valid record follows is a torn
 * tail: it is ignored and reported in `stats` (may be NULL) and the replay returns MARBLE_OK.
 * A bad record followed by a valid one, a bad or incomplete record in an older segment, or a
 * missing segment number between the first and the newest is MARBLE_ERR_CORRUPTION naming the
 * file and byte offset; records before it have been passed to `fn`. Nothing is written. */
int marble__wal_replay(marble_fs *fs, const char *dir_uri, uint64_t from_segment,
                       marble__wal_replay_fn fn, void *ud, marble__wal_replay_stats *stats,
                       marble_error *err);

#endif
