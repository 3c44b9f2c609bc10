/*
 * The memtable: an insert-only concurrent skiplist of internal keys in an arena.
 *
 * An entry is (user key, 64-bit sequence number, op) -> value. Entries are ordered by user key
 * ascending (bytewise, a proper prefix before its extensions, the empty key first), then by
 * sequence number descending, so the newest version of a key comes first. The op takes no part in
 * the order; (user key, sequence) is unique within a memtable.
 *
 * Nodes and their key and value bytes are bump-allocated together from an arena of 1 MiB chunks;
 * an allocation larger than a quarter chunk gets a chunk of its own. Nothing is freed before
 * marble__memtable_destroy, so every key and value pointer handed out stays valid while the
 * memtable lives. The db decides when a memtable is full by comparing marble__memtable_bytes
 * with its budget, then stops adding to it and eventually drops it whole.
 *
 * Thread safety: marble__memtable_add may be called from any number of threads at once, and
 * concurrently with get, the iterators, count and bytes. Inserts are lock-free (one CAS per level,
 * linked bottom-up); readers are wait-free apart from following links and never block writers. An
 * entry becomes visible at the moment its bottom-level link is published; a reader that sees it
 * also sees its key and value bytes. An iterator is used by one thread at a time. create and
 * destroy must not race with anything else on the same memtable.
 *
 * Invariants: every level is sorted by internal key and contains a subset of the level below it;
 * a node is never unlinked or modified after it is linked, except for its next pointers at levels
 * where it is not yet linked; max_height only grows.
 */
#ifndef MARBLE_LSM_MEMTABLE_H
#define MARBLE_LSM_MEMTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"

typedef enum marble__memtable_op {
    MARBLE__MEMTABLE_DELETE = 0,
    MARBLE__MEMTABLE_PUT = 1,
} marble__memtable_op;

typedef struct marble__memtable marble__memtable;
typedef struct marble__memtable_node marble__memtable_node;

/* Creates an empty memtable. Returns MARBLE_OK or MARBLE_ERR_NO_MEMORY. */
int marble__memtable_create(marble__memtable **out, marble_error *err);
/* Frees the memtable and all of its entries; accepts NULL. */
void marble__memtable_destroy(marble__memtable *mt);

/* Adds (key, seq, op) -> value, copying the bytes. key may be NULL when klen is 0, value when vlen
 * is 0. Returns MARBLE_OK; MARBLE_ERR_EXISTS if (key, seq) is already present (also when another
 * thread adds it at the same moment: exactly one of them succeeds); MARBLE_ERR_INVALID_ARGUMENT
 * for an unknown op, a NULL pointer with a non-zero length or a key longer than UINT32_MAX bytes;
 * MARBLE_ERR_NO_MEMORY if the arena cannot grow. A failed add leaves the memtable unchanged apart
 * from arena bytes it may have reserved. */
int marble__memtable_add(marble__memtable *mt, uint64_t seq, marble__memtable_op op,
                         const void *key, size_t klen, const void *value, size_t vlen,
                         marble_error *err);

#define MARBLE__MEMTABLE_MAX_HEIGHT 20

/* A search hint for adding entries in ascending internal-key order (sorted batches, sequential
 * keys): zero-initialize it, use it with one memtable only, from one thread at a time. An entry
 * that does not come after the hint's last one is added with a full search (the hint only ever
 * saves work; any order stays correct). */
typedef struct marble__memtable_hint {
    marble__memtable_node *preds[MARBLE__MEMTABLE_MAX_HEIGHT];
    marble__memtable_node *last;
} marble__memtable_hint;

/* marble__memtable_add through a hint (NULL: no hint). */
int marble__memtable_add_hint(marble__memtable *mt, marble__memtable_hint *hint, uint64_t seq,
                              marble__memtable_op op, const void *key, size_t klen,
                              const void *value, size_t vlen, marble_error *err);

/* Looks up the newest version of key with sequence <= snapshot_seq. Returns MARBLE_OK with *op,
 * *value and *vlen set (a delete is found too, with op MARBLE__MEMTABLE_DELETE and an empty value,
 * so that a lookup stops there), or MARBLE_ERR_NOT_FOUND. seq, when not NULL, receives the
 * version's sequence number. O(log n). */
int marble__memtable_get(const marble__memtable *mt, const void *key, size_t klen,
                         uint64_t snapshot_seq, marble__memtable_op *op, const void **value,
                         size_t *vlen, uint64_t *seq);

/* Approximate memory held: arena chunks (headers included) plus the memtable itself. Grows in
 * chunk-sized steps, and by the size of each oversized allocation. */
size_t marble__memtable_bytes(const marble__memtable *mt);
/* Bytes handed out by the arena to entries (nodes, keys, values, alignment); grows with every
 * successful add and is at most marble__memtable_bytes. */
size_t marble__memtable_used_bytes(const marble__memtable *mt);
/* Number of entries added successfully. */
size_t marble__memtable_count(const marble__memtable *mt);

/* A position in the memtable: a small value type, valid while the memtable lives. Entries added
 * after the iterator was positioned are seen when next or prev reaches their place. */
typedef struct marble__memtable_iter {
    const marble__memtable *mt;
    const marble__memtable_node *node;
} marble__memtable_iter;

/* Binds it to mt; the iterator is not valid until positioned. */
void marble__memtable_iter_init(marble__memtable_iter *it, const marble__memtable *mt);
int marble__memtable_iter_valid(const marble__memtable_iter *it);
/* First entry, O(1). */
void marble__memtable_iter_seek_to_first(marble__memtable_iter *it);
/* Last entry, O(log n). */
void marble__memtable_iter_seek_to_last(marble__memtable_iter *it);
/* First entry whose user key is >= key (its newest version), O(log n). */
void marble__memtable_iter_seek(marble__memtable_iter *it, const void *key, size_t klen);
/* First entry whose internal key is >= (key, seq): the newest version of key with sequence <= seq
 * if there is one, else the next entry in order. O(log n). */
void marble__memtable_iter_seek_at(marble__memtable_iter *it, const void *key, size_t klen,
                                   uint64_t seq);
/* Next entry, O(1). The iterator must be valid. */
void marble__memtable_iter_next(marble__memtable_iter *it);
/* Previous entry. Nodes have no back links, so this searches from the head: O(log n) per call,
 * O(n log n) for a full backward scan. The iterator must be valid; it becomes invalid before
 * the first entry. */
void marble__memtable_iter_prev(marble__memtable_iter *it);

/* Accessors; the iterator must be valid. Pointers stay valid while the memtable lives. */
const void *marble__memtable_iter_key(const marble__memtable_iter *it, size_t *klen);
uint64_t marble__memtable_iter_seq(const marble__memtable_iter *it);
marble__memtable_op marble__memtable_iter_op(const marble__memtable_iter *it);
const void *marble__memtable_iter_value(const marble__memtable_iter *it, size_t *vlen);

#endif
