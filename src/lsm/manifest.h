/*
 * The manifest of the state store (private to src/lsm/). The on-disk format is written down in
 * docs/format/manifest.md.
 *
 * The manifest records which SSTables make up each level, as a log of version edits in a file
 * "<dir>/MANIFEST-NNNNNN"; "<dir>/CURRENT" names the live one. Applying an edit appends it as
 * one CRC32C-guarded record and syncs before the new version is installed. When the live file
 * grows past a size, the next apply first rolls: it writes a snapshot of the whole state as one
 * edit into a new manifest file, syncs it, and switches CURRENT with a durable rename.
 *
 * Versions are immutable, reference-counted sets of files. A version stays alive while anyone
 * (an iterator, a stream, a snapshot) holds a reference; a file is obsolete, and may be deleted,
 * once no live version contains it (marble__manifest_obsolete_files).
 *
 * Thread safety: every function may be called from any thread. Applies and rolls are serialized
 * by the manifest; readers (current, accessors, obsolete/live enumeration) never wait for their
 * I/O. A version and its accessors are safe to use from several threads while referenced.
 * marble__manifest_close must not overlap other calls on the manifest; versions may outlive it.
 */
#ifndef MARBLE_LSM_MANIFEST_H
#define MARBLE_LSM_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"
#include "marble/vfs.h"

#define MARBLE__NUM_LEVELS 7

/* The largest encoded edit a manifest record may carry. */
#define MARBLE__MANIFEST_MAX_RECORD ((uint32_t)1 << 30)

/* One SSTable. `smallest` and `largest` are encoded keys (compared with memcmp, shorter first on
 * a common prefix), both inclusive. */
typedef struct marble__file_meta {
    int level;
    uint64_t number;
    uint64_t size;
    unsigned char *smallest;
    size_t smallest_len;
    unsigned char *largest;
    size_t largest_len;
    uint64_t smallest_seq;
    uint64_t largest_seq;
    uint64_t rows;
} marble__file_meta;

typedef struct marble__deleted_file {
    int level;
    uint64_t number;
} marble__deleted_file;

/* An opaque table-catalog record, encoded and interpreted by the db layer. */
typedef struct marble__catalog_record {
    unsigned char *data;
    size_t len;
} marble__catalog_record;

/* A version edit. Initialize with marble__edit_init, free with marble__edit_free; the edit owns
 * the memory its arrays and byte strings point to (the add functions copy). */
typedef struct marble__version_edit {
    int has_log_number;
    uint64_t log_number; /* WAL segments below this are flushed */
    int has_next_file_number;
    uint64_t next_file_number;
    int has_last_seq;
    uint64_t last_seq;
    marble__file_meta *added;
    size_t n_added, cap_added;
    marble__deleted_file *deleted;
    size_t n_deleted, cap_deleted;
    int catalog_reset; /* the catalog records below replace all earlier ones */
    marble__catalog_record *catalog;
    size_t n_catalog, cap_catalog;
} marble__version_edit;

void marble__edit_init(marble__version_edit *e);
/* Frees what the edit owns and re-initializes it. Accepts NULL. */
void marble__edit_free(marble__version_edit *e);
void marble__edit_set_log_number(marble__version_edit *e, uint64_t v);
void marble__edit_set_next_file_number(marble__version_edit *e, uint64_t v);
void marble__edit_set_last_seq(marble__version_edit *e, uint64_t v);
/* Copies `f` (and its keys) into the edit. MARBLE_ERR_NO_MEMORY is the only failure. */
int marble__edit_add_file(marble__version_edit *e, const marble__file_meta *f);
int marble__edit_delete_file(marble__version_edit *e, int level, uint64_t number);
int marble__edit_add_catalog(marble__version_edit *e, const void *data, size_t len);

/* Encodes the edit into a malloc'd buffer (*out, *len; free with free()). */
int marble__edit_encode(const marble__version_edit *e, unsigned char **out, size_t *len,
                        marble_error *err);
/* Decodes into `e` (initialized by the call; free it even on failure). Malformed input is
 * MARBLE_ERR_CORRUPTION with a message giving the reason and offset. */
int marble__edit_decode(const void *data, size_t len, marble__version_edit *e, marble_error *err);

/* ---- versions ------------------------------------------------------------------------------- */

typedef struct marble__version marble__version;

/* Takes another reference (the caller must already hold one). */
void marble__version_ref(marble__version *v);
/* Drops a reference; the last one frees the version, which may make files obsolete. Accepts
 * NULL. */
void marble__version_unref(marble__version *v);

/* Files of `level` (0..MARBLE__NUM_LEVELS-1): L0 newest first (by largest_seq, then number,
 * both descending), other levels by smallest key ascending (their ranges do not overlap). The
 * pointers stay valid while the version is referenced. Out-of-range levels have no files. */
size_t marble__version_num_files(const marble__version *v, int level);
const marble__file_meta *marble__version_file(const marble__version *v, int level, size_t i);
uint64_t marble__version_log_number(const marble__version *v);
uint64_t marble__version_next_file_number(const marble__version *v);
uint64_t marble__version_last_seq(const marble__version *v);
size_t marble__version_num_catalog(const marble__version *v);
const marble__catalog_record *marble__version_catalog(const marble__version *v, size_t i);

/* The version's whole state as one edit (every scalar, every file as added, catalog_reset with
 * every catalog record): what a roll writes first into a new manifest. `out` is initialized by
 * the call; free it with marble__edit_free. MARBLE_ERR_NO_MEMORY is the only failure. */
int marble__version_to_edit(const marble__version *v, marble__version_edit *out);

/* ---- the manifest -----------------------------------------------------------------------------
 */

typedef struct marble__manifest marble__manifest;

typedef struct marble__manifest_options {
    uint64_t max_file_size; /* roll before an apply once the live file reaches this; 0: 64 MiB */
    int create_if_missing;  /* no CURRENT: start an empty manifest (else MARBLE_ERR_NOT_FOUND) */
    int error_if_exists;    /* CURRENT exists: MARBLE_ERR_EXISTS */
    /* Object-store mode, for backends without append or atomic rename (S3): every apply writes
     * the whole new state as one new object MANIFEST-(n+1), created with EXCLUSIVE (a
     * conditional create where the store supports it, so a second writer cannot overwrite it),
     * and completed by a sync (the object appears whole or not at all); then the older object
     * is removed. There is no CURRENT: open takes the highest-numbered MANIFEST object. A
     * failure leaves the previous object current (and the manifest sticky-failed as usual). */
    int object_store;
} marble__manifest_options;

typedef struct marble__manifest_recovery {
    uint64_t manifest_number; /* the manifest replayed; 0 when created */
    uint64_t records;
    int torn_tail; /* 1 if its last record was incomplete or bad and ignored */
    uint64_t torn_offset;
    uint64_t torn_bytes;
} marble__manifest_recovery;

/* Opens the manifest in `dir_uri` (created, with missing parents, if needed): reads CURRENT,
 * replays the named manifest (a bad last record that no valid record follows is a torn tail and
 * ignored; any other bad record, an edit that does not apply, or a bad CURRENT is
 * MARBLE_ERR_CORRUPTION naming the file), then rolls to a new manifest holding the recovered
 * state as one snapshot and removes the other MANIFEST-* files and CURRENT.tmp. `opts` may be
 * NULL (defaults, create_if_missing = 0); `rec` may be NULL. `fs` must outlive the manifest. */
int marble__manifest_open(marble_fs *fs, const char *dir_uri, const marble__manifest_options *opts,
                          marble__manifest **out, marble__manifest_recovery *rec,
                          marble_error *err);
/* marble__manifest_open with create_if_missing and error_if_exists. */
int marble__manifest_create(marble_fs *fs, const char *dir_uri, uint64_t max_file_size,
                            marble__manifest **out, marble_error *err);

/* Closes the live file and drops the manifest's reference to the current version. Versions still
 * referenced stay valid; the manifest's memory is freed with the last of them. Accepts NULL. */
int marble__manifest_close(marble__manifest *m, marble_error *err);

/* Validates `edit` against the current version (a deleted file must be at that level; an added
 * number must not be in the version after the deletions; levels must be 0..6 with smallest <=
 * largest; files of a level >= 1 must not overlap): violations are MARBLE_ERR_INVALID_ARGUMENT
 * naming the file, and nothing is written. Then rolls if the live file is over size, appends the
 * edit, syncs, and installs the new version. If any write, sync or rename fails, the current
 * version is unchanged and every later apply and roll fails with that first error (sticky). */
int marble__manifest_apply(marble__manifest *m, const marble__version_edit *edit,
                           marble_error *err);

/* Rolls now: snapshot into MANIFEST-(n+1), sync, durable switch of CURRENT, remove the old file.
 * Failures are sticky as for apply. */
int marble__manifest_roll(marble__manifest *m, marble_error *err);

/* The current version, with a reference the caller drops with marble__version_unref. */
marble__version *marble__manifest_current(marble__manifest *m);

/* The number of the live MANIFEST file, and its size in bytes. */
uint64_t marble__manifest_number(marble__manifest *m);
uint64_t marble__manifest_file_size(marble__manifest *m);

/* Called once per file number. Return non-zero to stop. Runs with the manifest's state lock
 * held: it must not call back into the manifest or drop a version reference. */
typedef int (*marble__file_number_fn)(uint64_t number, void *ud);

/* Reports, once each, the numbers of files that were in some version and are now in no live
 * version (the caller may delete them), in the order they became obsolete. */
void marble__manifest_obsolete_files(marble__manifest *m, marble__file_number_fn fn, void *ud);
/* Reports every file number in some live version (each once, in no particular order): files
 * of the data directory outside this set and not being written are garbage. */
void marble__manifest_live_files(marble__manifest *m, marble__file_number_fn fn, void *ud);

#endif
