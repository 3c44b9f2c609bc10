/*
 * SSTables (private to src/lsm/). The on-disk format is written down in docs/format/sst.md.
 *
 * An SSTable is one Arrow IPC file (Feather v2) that any Arrow reader opens: its schema is the
 * table's columns (value columns made nullable) followed by "_seq" (uint64, not null) and "_op"
 * (uint8, not null: 0 delete, 1 put); its record batches hold at most `batch_rows` rows each,
 * sorted by (encoded key ascending, seq descending). The schema metadata carries
 * "marble.sst.version" = "1" and "marble.sst.key" = the comma-separated key column names.
 *
 * Marble's index lives in the file too, where Arrow readers never look: after the IPC
 * end-of-stream marker and before the footer (marble_ipc_writer_finish_appendix). It holds
 * per batch the smallest and largest encoded key, row count and per-column min/max (zone
 * maps, for fixed-width columns, key columns included), the bloom filter of the file's keys, and a
 * CRC32C of every record batch's bytes (metadata + body) and of the index itself, closed by a fixed
 * trailer (length, CRC, magic) that ends exactly where the Arrow footer starts. Files of tables
 * with secondary indexes (index version 2) also hold, per batch and indexed column, a small bloom
 * filter over the column's values ("value filters"); files without them are written as version 1,
 * byte for byte what older Marble wrote, and both versions are read.
 *
 * Keys here are the table's encoded keys (no table prefix): the db adds and strips prefixes.
 *
 * Thread safety: a writer is for one thread. An opened SSTable is immutable and shared by any
 * number of threads (ref/unref are atomic); each iterator is for one thread.
 */
#ifndef MARBLE_LSM_SST_H
#define MARBLE_LSM_SST_H

#include <stddef.h>
#include <stdint.h>

#include "lsm/rowcodec.h"
#include "marble/arrow.h"
#include "marble/pipeline.h"
#include "marble/vfs.h"

/* The most indexed (value-filtered) columns per table, and the filters' bits per value. */
#define MARBLE__SST_MAX_INDEXES 32
#define MARBLE__SST_VALUE_FILTER_BITS 10

typedef struct marble__sst_options {
    int batch_rows;                     /* rows per record batch; 0: 4096 */
    marble_ipc_compression compression; /* body compression; default (0) uncompressed */
    int compression_level;              /* 0: the codec's default */
    int bloom_bits_per_key;             /* 0: no bloom filter; <0: default 10 */
    /* Table columns (distinct, any order) that get a value filter per batch; 0 of them: none
     * (and the file is written as index version 1). */
    int indexed_columns[MARBLE__SST_MAX_INDEXES];
    int n_indexed_columns;
} marble__sst_options;

/* What finish reports (the manifest's file metadata). */
typedef struct marble__sst_info {
    uint64_t file_size;
    uint64_t rows;
    uint64_t smallest_seq, largest_seq;
    marble__bytes smallest; /* encoded keys, inclusive; owned by the info: free with */
    marble__bytes largest;  /* marble__sst_info_free */
} marble__sst_info;
void marble__sst_info_free(marble__sst_info *info);

typedef struct marble__sst_writer marble__sst_writer;

/* Creates `uri` (truncating) and starts an SSTable of the codec's table. */
int marble__sst_writer_create(marble_fs *fs, const char *uri, const marble__row_codec *codec,
                              const marble__sst_options *opts, marble__sst_writer **out,
                              marble_error *err);
/* Appends an entry; entries must come in (key ascending, seq descending) order and
 * (key, seq) must be new (else MARBLE_ERR_INVALID_ARGUMENT). op: 0 delete, 1 put. */
int marble__sst_writer_add(marble__sst_writer *w, const void *key, size_t klen, uint64_t seq,
                           int op, const void *value, size_t vlen, marble_error *err);
/* The same from row `row` of an SSTable batch of the same table (with _seq/_op columns). */
int marble__sst_writer_add_arrow(marble__sst_writer *w, const void *key, size_t klen,
                                 const struct ArrowArray *src, int64_t row, marble_error *err);
uint64_t marble__sst_writer_rows(const marble__sst_writer *w);
/* Bytes written to the file so far plus those buffered: for cutting output files by size. */
uint64_t marble__sst_writer_estimated_size(const marble__sst_writer *w);
/* Writes the last batch, the index and the footer, syncs and closes the file. The directory is
 * not synced (the caller does that once for all the files of an edit). A writer with no rows
 * is MARBLE_ERR_INVALID_ARGUMENT. */
int marble__sst_writer_finish(marble__sst_writer *w, marble__sst_info *info, marble_error *err);
/* Frees the writer (closing the file without finishing if needed; the caller removes it). */
void marble__sst_writer_destroy(marble__sst_writer *w);

typedef struct marble__sst marble__sst;

/* Opens an SSTable: maps the whole file (through `pool` when not NULL, else fs), checks the
 * trailer, the index CRC and the Arrow footer, and checks that the schema matches the codec's
 * table. Anything wrong is MARBLE_ERR_CORRUPTION naming the file ("<uri>: corruption: ...").
 * Batch CRCs are checked when a batch is first read (verify != 0) or never (verify == 0). The
 * handle starts with one reference. It keeps a pointer to `codec`, which must outlive it (and its
 * iterators). */
int marble__sst_open(marble_fs *fs, marble_handle_pool *pool, const char *uri,
                     const marble__row_codec *codec, int verify, marble__sst **out,
                     marble_error *err);
/* Charges the SSTable's cached decompressed batches (compressed files only; mapped ones take
 * no heap) to `b` while they are cached. Call once, before the handle is shared. */
void marble__sst_set_budget(marble__sst *s, marble_mem_budget *b);
void marble__sst_ref(marble__sst *s);
void marble__sst_unref(marble__sst *s);

const char *marble__sst_uri(const marble__sst *s);
uint64_t marble__sst_rows(const marble__sst *s);
uint64_t marble__sst_file_size(const marble__sst *s);
int64_t marble__sst_num_batches(const marble__sst *s);
/* 1 if the file holds no deletes and one version per key (index flag bit 1): its rows, read at
 * a snapshot >= marble__sst_max_seq, are exactly the visible rows. */
int marble__sst_is_clean(const marble__sst *s);
uint64_t marble__sst_max_seq(const marble__sst *s);
/* Per batch: key range (pointers into the mapping, valid while the SSTable lives) and rows. */
void marble__sst_batch_range(const marble__sst *s, int64_t i, const uint8_t **smallest,
                             size_t *slen, const uint8_t **largest, size_t *llen, int64_t *rows);
/* Zone map of table column `col` in batch i: 1 with min/max as int64 (signed ints, date32,
 * timestamp, bool), uint64 or double per the column's type, 0 when there is none (variable-width
 * columns, all-null batches). */
typedef struct marble__zone {
    int has_nulls;
    int64_t min_i, max_i;
    uint64_t min_u, max_u;
    double min_d, max_d;
} marble__zone;
int marble__sst_zone(const marble__sst *s, int64_t i, int col, marble__zone *out);

/* Bloom filter check on an encoded key: 0 means certainly absent, 1 maybe present (always 1
 * without a filter). */
int marble__sst_may_contain(const marble__sst *s, const void *key, size_t klen);

/* Value filters (index version 2): 1 = `v` may equal a value of column `col` in batch i, 0 = no
 * row of the batch has that value. 1 whenever the file has no filter for col, i or col is out of
 * range, or the literal's kind cannot be compared exactly (NULL, NaN, a string for a numeric
 * column, a fractional double for an integer column). Values are hashed canonically: int64 for
 * bool/integer/date32/timestamp columns (and INT/BOOL literals, or integral DOUBLE ones), IEEE
 * double bits with -0.0 as 0.0 for float columns (float32 widened; INT literals converted when
 * exact), raw bytes for utf8/binary/fixed_size_binary (STRING literals). Nulls are not added. */
int marble__sst_batch_may_contain_value(const marble__sst *s, int64_t batch, int col,
                                        const marble_datum *v);
/* 1 if the file has value filters for table column col. */
int marble__sst_has_value_filter(const marble__sst *s, int col);
/* The index version the file was written with (1 or 2). */
int marble__sst_index_version(const marble__sst *s);

/* Writes to `uri` a copy of `s` with a freshly computed index: the Arrow bytes (schema, record
 * batches, footer) are copied unchanged, the index (batch CRCs, key ranges, zone maps, the key
 * bloom filter with opts->bloom_bits_per_key, value filters for opts->indexed_columns, the
 * clean flag) is recomputed from the data. Every batch is decoded and its CRC checked against the
 * old index (a mismatch is MARBLE_ERR_CORRUPTION). `cancelled` (may be NULL) is polled between
 * batches: non-zero stops with MARBLE_ERR_CANCELLED. The file is synced and closed; on failure the
 * caller removes it. batch_rows and compression in opts are ignored (the batches stay as they
 * are). */
int marble__sst_rewrite(marble__sst *s, marble_fs *fs, const char *uri,
                        const marble__sst_options *opts, int (*cancelled)(void *ud), void *ud,
                        marble__sst_info *info, marble_error *err);

/* Record batch i (table columns + _seq + _op) as a "+s" array, zero copy for uncompressed
 * files; it keeps the SSTable's bytes alive. Counts a read in the stats. */
int marble__sst_read_batch(marble__sst *s, int64_t i, struct ArrowArray *out, marble_error *err);

/* Point lookup: the newest version of `key` with seq <= snapshot_seq. MARBLE_OK with *seq, *op
 * and the row value appended to *value (reset first; empty for a delete), or
 * MARBLE_ERR_NOT_FOUND. Uses the bloom filter first and the batch index, then a binary search
 * in the batch. */
int marble__sst_get(marble__sst *s, const void *key, size_t klen, uint64_t snapshot_seq,
                    uint64_t *seq, int *op, marble__bytes *value, marble_error *err);

typedef struct marble__sst_stats {
    uint64_t bloom_checks, bloom_negatives; /* negatives: lookups the filter ruled out */
    uint64_t bloom_false_positives;         /* filter said maybe, the key was not there */
    uint64_t batch_reads;
} marble__sst_stats;
/* Process-wide counters summed over every SSTable (atomics). */
void marble__sst_get_stats(marble__sst_stats *out);

/* ---- iterator ---------------------------------------------------------------------------------
 * Walks the entries in order. key/value accessors point into buffers owned by the iterator,
 * valid until it moves. Errors (a corrupt batch) make it invalid with status() set. */
typedef struct marble__sst_iter marble__sst_iter;
int marble__sst_iter_create(marble__sst *s, marble__sst_iter **out, marble_error *err);
void marble__sst_iter_destroy(marble__sst_iter *it);
int marble__sst_iter_valid(const marble__sst_iter *it);
void marble__sst_iter_seek_to_first(marble__sst_iter *it);
void marble__sst_iter_seek_to_last(marble__sst_iter *it);
/* First entry with key >= key (its newest version). */
void marble__sst_iter_seek(marble__sst_iter *it, const void *key, size_t klen);
void marble__sst_iter_next(marble__sst_iter *it);
void marble__sst_iter_prev(marble__sst_iter *it);
const void *marble__sst_iter_key(marble__sst_iter *it, size_t *klen);
uint64_t marble__sst_iter_seq(const marble__sst_iter *it);
int marble__sst_iter_op(const marble__sst_iter *it);
/* The row value, encoded on demand. */
const void *marble__sst_iter_value(marble__sst_iter *it, size_t *vlen);
/* The current batch (borrowed, valid until the iterator leaves it) and row within it, for
 * copying columns directly (marble__assembler_add_arrow, marble__sst_writer_add_arrow). */
const struct ArrowArray *marble__sst_iter_batch(const marble__sst_iter *it, int64_t *row);
int marble__sst_iter_status(const marble__sst_iter *it, marble_error *err);

#endif
