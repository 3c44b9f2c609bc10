/*
 * Internal iterators (private to src/lsm/): one interface over memtables, SSTables and sorted
 * runs of SSTables, a k-way merging iterator over children, and the version-collapsing view
 * that scans, the key-value iterator and compaction read through.
 *
 * An internal iterator walks entries (key, seq, op, value) in internal-key order: key ascending
 * (memcmp, a proper prefix first), then seq descending. Keys are a table's encoded keys without
 * the table prefix (the memtable adapter strips it).
 *
 * Thread safety: every iterator is for one thread at a time.
 */
#ifndef MARBLE_LSM_ITER_H
#define MARBLE_LSM_ITER_H

#include <stddef.h>
#include <stdint.h>

#include "lsm/memtable.h"
#include "lsm/sst.h"
#include "marble/error.h"

typedef struct marble__iter marble__iter;

typedef struct marble__iter_ops {
    int (*valid)(marble__iter *it);
    void (*seek_to_first)(marble__iter *it);
    void (*seek_to_last)(marble__iter *it);
    void (*seek)(marble__iter *it, const void *key, size_t klen); /* first key >= key */
    void (*next)(marble__iter *it);
    void (*prev)(marble__iter *it);
    const void *(*key)(marble__iter *it, size_t *klen);
    uint64_t (*seq)(marble__iter *it);
    int (*op)(marble__iter *it); /* 0 delete, 1 put */
    const void *(*value)(marble__iter *it, size_t *vlen);
    /* The SSTable batch and row of the current entry, or NULL when it is not in one. */
    const struct ArrowArray *(*batch)(marble__iter *it, int64_t *row);
    int (*status)(marble__iter *it, marble_error *err);
    void (*destroy)(marble__iter *it);
} marble__iter_ops;

struct marble__iter {
    const marble__iter_ops *ops;
};

/* Accessors (inline dispatch). */
static inline int marble__iter_valid(marble__iter *it)
{
    return it->ops->valid(it);
}
static inline void marble__iter_seek_to_first(marble__iter *it)
{
    it->ops->seek_to_first(it);
}
static inline void marble__iter_seek_to_last(marble__iter *it)
{
    it->ops->seek_to_last(it);
}
static inline void marble__iter_seek(marble__iter *it, const void *k, size_t n)
{
    it->ops->seek(it, k, n);
}
static inline void marble__iter_next(marble__iter *it)
{
    it->ops->next(it);
}
static inline void marble__iter_prev(marble__iter *it)
{
    it->ops->prev(it);
}
static inline const void *marble__iter_key(marble__iter *it, size_t *n)
{
    return it->ops->key(it, n);
}
static inline uint64_t marble__iter_seq(marble__iter *it)
{
    return it->ops->seq(it);
}
static inline int marble__iter_op(marble__iter *it)
{
    return it->ops->op(it);
}
static inline const void *marble__iter_value(marble__iter *it, size_t *n)
{
    return it->ops->value(it, n);
}
static inline const struct ArrowArray *marble__iter_batch(marble__iter *it, int64_t *row)
{
    return it->ops->batch(it, row);
}
static inline int marble__iter_status(marble__iter *it, marble_error *err)
{
    return it->ops->status(it, err);
}
static inline void marble__iter_destroy(marble__iter *it)
{
    if (it) it->ops->destroy(it);
}

/* Over the entries of `mt` whose memtable key starts with prefix[0, plen), with the prefix
 * stripped. The memtable must outlive the iterator. */
int marble__iter_memtable(const marble__memtable *mt, const void *prefix, size_t plen,
                          marble__iter **out, marble_error *err);
/* Over one SSTable (takes a reference, dropped on destroy). */
int marble__iter_sst(marble__sst *s, marble__iter **out, marble_error *err);
/* Over a sorted run of SSTables whose key ranges do not overlap, in key order (a level >= 1):
 * opens one at a time. Takes a reference on each (dropped on destroy). */
int marble__iter_run(marble__sst *const *ssts, size_t n, marble__iter **out, marble_error *err);
/* The k-way merge of children (takes ownership of them, also on failure). Entries with equal
 * (key, seq) must not occur in two children. Forward and backward movement, direction switches
 * included. status() reports the first child error. */
int marble__iter_merge(marble__iter **children, size_t n, marble__iter **out, marble_error *err);

/* The user's view over an internal iterator (taking ownership): for each key, the newest
 * version with seq <= snapshot_seq; keys whose such version is a delete are skipped. seq/op of
 * the view are those of the visible version; op is always 1 (put). Supports next and prev. */
int marble__iter_visible(marble__iter *internal, uint64_t snapshot_seq, marble__iter **out,
                         marble_error *err);

#endif
