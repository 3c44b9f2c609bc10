/* The memtable: a lock-free insert-only skiplist over a bump-allocated chunk arena. */
#include "lsm/memtable.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEIGHT MARBLE__MEMTABLE_MAX_HEIGHT
#define CHUNK_SIZE ((size_t)1 << 20)
#define OVERSIZE (CHUNK_SIZE / 4)

/*
 * Thread safety: `current` and the links are the only shared mutable state besides statistics.
 * Chunk headers are published by the release CAS that installs them as `current`; entries by the
 * release CAS that links them at level 0. `chunks` is read only by destroy, which the caller
 * orders after every add, so its pushes are relaxed.
 *
 * Invariants: every chunk ever handed out is on `chunks`; a chunk's `used` may exceed its `cap`
 * (failed reservations are not given back), and bytes below min(used, cap) belong to entries.
 */
typedef struct chunk {
    struct chunk *next;
    size_t cap;
    _Atomic size_t used;
} chunk;

_Static_assert(sizeof(chunk) % 8 == 0, "chunk data must stay 8-byte aligned");

struct marble__memtable_node {
    uint64_t seq;
    size_t vlen;
    uint32_t klen;
    uint8_t op;
    uint8_t height;
    _Atomic(marble__memtable_node *) next[];
};

struct marble__memtable {
    _Atomic(chunk *) current;
    _Atomic(chunk *) chunks;
    _Atomic size_t arena_bytes;
    _Atomic size_t used_bytes;
    _Atomic size_t count;
    _Atomic uint64_t rng;
    _Atomic int max_height;
    marble__memtable_node *head;
};

static inline const unsigned char *node_key(const marble__memtable_node *n)
{
    return (const unsigned char *)(n->next + n->height);
}

static inline const unsigned char *node_value(const marble__memtable_node *n)
{
    return node_key(n) + n->klen;
}

static inline marble__memtable_node *load_next(const marble__memtable_node *n, int level)
{
    /* acquire: pairs with the release CAS that linked the successor, so its bytes are visible */
    return atomic_load_explicit((_Atomic(marble__memtable_node *) *)&n->next[level],
                                memory_order_acquire);
}

static inline uint64_t load_be64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#elif !defined(__GNUC__)
    v = ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
        ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
        ((uint64_t)p[6] << 8) | p[7];
#endif
    return v;
}

/* Bytewise order, a proper prefix first. Compares 8 bytes at a time as big-endian words: keys
 * are short and the comparison runs on every skiplist step, where a libc call costs more than
 * the compare. */
static int compare_user(const void *a, size_t alen, const void *b, size_t blen)
{
    const unsigned char *x = a, *y = b;
    size_t n = alen < blen ? alen : blen, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t u = load_be64(x + i), v = load_be64(y + i);
        if (u != v) return u < v ? -1 : 1;
    }
    for (; i < n; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return alen < blen ? -1 : alen > blen;
}

/* Compares a node with (key, seq): <0 if the node orders first. */
static int compare_node(const marble__memtable_node *n, const void *key, size_t klen, uint64_t seq)
{
    int c = compare_user(node_key(n), n->klen, key, klen);
    if (c) return c;
    return n->seq > seq ? -1 : n->seq < seq;
}

static chunk *chunk_new(size_t cap)
{
    chunk *c = malloc(sizeof(chunk) + cap);
    if (!c) return NULL;
    c->next = NULL;
    c->cap = cap;
    atomic_init(&c->used, 0);
    return c;
}

static void chunk_push(marble__memtable *mt, chunk *c)
{
    chunk *head = atomic_load_explicit(&mt->chunks, memory_order_relaxed);
    do {
        c->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&mt->chunks, &head, c, memory_order_relaxed,
                                                    memory_order_relaxed));
    atomic_fetch_add_explicit(&mt->arena_bytes, sizeof(chunk) + c->cap, memory_order_relaxed);
}

static void *arena_alloc(marble__memtable *mt, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if (n > OVERSIZE) {
        chunk *big = chunk_new(n);
        if (!big) return NULL;
        atomic_store_explicit(&big->used, n, memory_order_relaxed);
        chunk_push(mt, big);
        atomic_fetch_add_explicit(&mt->used_bytes, n, memory_order_relaxed);
        return big + 1;
    }
    /* acquire: pairs with the release CAS that installed the chunk, so its header is visible */
    chunk *c = atomic_load_explicit(&mt->current, memory_order_acquire);
    for (;;) {
        size_t off = atomic_fetch_add_explicit(&c->used, n, memory_order_relaxed);
        if (off <= c->cap && n <= c->cap - off) {
            atomic_fetch_add_explicit(&mt->used_bytes, n, memory_order_relaxed);
            return (char *)(c + 1) + off;
        }
        chunk *fresh = chunk_new(CHUNK_SIZE);
        if (!fresh) return NULL;
        atomic_store_explicit(&fresh->used, n, memory_order_relaxed);
        /* release: publishes the fresh header; acquire on failure: we go on to use the winner's */
        if (atomic_compare_exchange_strong_explicit(&mt->current, &c, fresh, memory_order_release,
                                                    memory_order_acquire)) {
            chunk_push(mt, fresh);
            atomic_fetch_add_explicit(&mt->used_bytes, n, memory_order_relaxed);
            return fresh + 1;
        }
        free(fresh);
    }
}

static int random_height(marble__memtable *mt)
{
    uint64_t x = atomic_fetch_add_explicit(&mt->rng, 0x9e3779b97f4a7c15ull, memory_order_relaxed);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    int h = 1;
    while (h < MAX_HEIGHT && (x & 3) == 0) {
        h++;
        x >>= 2;
    }
    return h;
}

static int current_height(const marble__memtable *mt)
{
    return atomic_load_explicit((_Atomic int *)&mt->max_height, memory_order_relaxed);
}

/* The last node < (key, seq), or the head. */
static const marble__memtable_node *find_less(const marble__memtable *mt, const void *key,
                                              size_t klen, uint64_t seq)
{
    const marble__memtable_node *x = mt->head;
    for (int level = current_height(mt) - 1; level >= 0; level--) {
        for (;;) {
            const marble__memtable_node *next = load_next(x, level);
            if (!next || compare_node(next, key, klen, seq) >= 0) break;
            x = next;
        }
    }
    return x;
}

static const marble__memtable_node *find_last(const marble__memtable *mt)
{
    const marble__memtable_node *x = mt->head;
    for (int level = current_height(mt) - 1; level >= 0; level--) {
        for (;;) {
            const marble__memtable_node *next = load_next(x, level);
            if (!next) break;
            x = next;
        }
    }
    return x;
}

/* Advances *pred along `level` to the last node < (key, seq); *succ receives its successor. */
static void scan_level(marble__memtable_node **pred, marble__memtable_node **succ, int level,
                       const void *key, size_t klen, uint64_t seq)
{
    marble__memtable_node *x = *pred;
    for (;;) {
        marble__memtable_node *next = load_next(x, level);
        if (!next || compare_node(next, key, klen, seq) >= 0) {
            *pred = x;
            *succ = next;
            return;
        }
        x = next;
    }
}

int marble__memtable_create(marble__memtable **out, marble_error *err)
{
    *out = NULL;
    marble__memtable *mt = calloc(1, sizeof(*mt));
    chunk *first = chunk_new(CHUNK_SIZE);
    if (!mt || !first) {
        free(mt);
        free(first);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "memtable: cannot allocate arena");
    }
    atomic_init(&mt->current, first);
    atomic_init(&mt->chunks, NULL);
    atomic_init(&mt->arena_bytes, 0);
    atomic_init(&mt->used_bytes, 0);
    atomic_init(&mt->count, 0);
    atomic_init(&mt->rng, (uint64_t)(uintptr_t)mt);
    atomic_init(&mt->max_height, 1);
    chunk_push(mt, first);
    size_t head_size =
        sizeof(marble__memtable_node) + MAX_HEIGHT * sizeof(_Atomic(marble__memtable_node *));
    mt->head = arena_alloc(mt, head_size);
    mt->head->seq = 0;
    mt->head->vlen = 0;
    mt->head->klen = 0;
    mt->head->op = 0;
    mt->head->height = MAX_HEIGHT;
    for (int i = 0; i < MAX_HEIGHT; i++)
        atomic_init(&mt->head->next[i], NULL);
    *out = mt;
    return MARBLE_OK;
}

void marble__memtable_destroy(marble__memtable *mt)
{
    if (!mt) return;
    chunk *c = atomic_load_explicit(&mt->chunks, memory_order_relaxed);
    while (c) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
    free(mt);
}

int marble__memtable_add(marble__memtable *mt, uint64_t seq, marble__memtable_op op,
                         const void *key, size_t klen, const void *value, size_t vlen,
                         marble_error *err)
{
    return marble__memtable_add_hint(mt, NULL, seq, op, key, klen, value, vlen, err);
}

int marble__memtable_add_hint(marble__memtable *mt, marble__memtable_hint *hint, uint64_t seq,
                              marble__memtable_op op, const void *key, size_t klen,
                              const void *value, size_t vlen, marble_error *err)
{
    if (op != MARBLE__MEMTABLE_PUT && op != MARBLE__MEMTABLE_DELETE)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "memtable: unknown op %d",
                                (int)op);
    if ((!key && klen) || (!value && vlen))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "memtable: NULL key or value");
    if (klen > UINT32_MAX)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "memtable: key of %zu bytes is too long", klen);

    marble__memtable_node *preds[MAX_HEIGHT];
    marble__memtable_node *succs[MAX_HEIGHT];
    int top = current_height(mt);
    marble__memtable_node *x = mt->head;
    /* A hint holds the predecessors of the last entry added through it; when this entry comes
     * after that one, each level's scan may start from the hint's node there, if it is further
     * along than the node the search brought down from the level above. */
    int use_hint = hint && hint->last && compare_node(hint->last, key, klen, seq) < 0;
    for (int level = MAX_HEIGHT - 1; level >= 0; level--) {
        if (level >= top) {
            preds[level] = mt->head;
            succs[level] = NULL;
            continue;
        }
        if (use_hint) {
            marble__memtable_node *h = hint->preds[level];
            if (h && h != mt->head &&
                (x == mt->head || compare_node(x, node_key(h), h->klen, h->seq) < 0))
                x = h;
        }
        scan_level(&x, &succs[level], level, key, klen, seq);
        preds[level] = x;
    }
    if (hint) hint->last = NULL;
    if (succs[0] && compare_node(succs[0], key, klen, seq) == 0) goto exists;

    int height = random_height(mt);
    size_t links = (size_t)height * sizeof(_Atomic(marble__memtable_node *));
    size_t fixed = sizeof(marble__memtable_node) + links + klen;
    if (vlen > SIZE_MAX - 8 - fixed)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "memtable: value of %zu bytes is too large", vlen);
    marble__memtable_node *n = arena_alloc(mt, fixed + vlen);
    if (!n)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                "memtable: cannot allocate %zu bytes for an entry", fixed + vlen);
    n->seq = seq;
    n->vlen = vlen;
    n->klen = (uint32_t)klen;
    n->op = (uint8_t)op;
    n->height = (uint8_t)height;
    if (klen) memcpy((unsigned char *)node_key(n), key, klen);
    if (vlen) memcpy((unsigned char *)node_value(n), value, vlen);

    for (int level = 0; level < height; level++) {
        for (;;) {
            atomic_store_explicit(&n->next[level], succs[level], memory_order_relaxed);
            /* release: publishes the node's fields and bytes to readers that acquire the link;
             * acquire on failure: we go on to read the node that beat us */
            if (atomic_compare_exchange_strong_explicit(&preds[level]->next[level], &succs[level],
                                                        n, memory_order_release,
                                                        memory_order_acquire))
                break;
            scan_level(&preds[level], &succs[level], level, key, klen, seq);
            if (level == 0 && succs[0] && compare_node(succs[0], key, klen, seq) == 0) goto exists;
        }
    }

    int h = current_height(mt);
    while (height > h &&
           !atomic_compare_exchange_weak_explicit(&mt->max_height, &h, height, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&mt->count, 1, memory_order_relaxed);
    if (hint) {
        for (int level = 0; level < MAX_HEIGHT; level++)
            hint->preds[level] = level < height ? n : preds[level];
        hint->last = n;
    }
    return MARBLE_OK;

exists:
    return marble_error_set(err, MARBLE_ERR_EXISTS,
                            "memtable: entry with sequence %llu already exists for the key",
                            (unsigned long long)seq);
}

int marble__memtable_get(const marble__memtable *mt, const void *key, size_t klen,
                         uint64_t snapshot_seq, marble__memtable_op *op, const void **value,
                         size_t *vlen, uint64_t *seq)
{
    const marble__memtable_node *n = load_next(find_less(mt, key, klen, snapshot_seq), 0);
    if (!n || compare_user(node_key(n), n->klen, key, klen) != 0) return MARBLE_ERR_NOT_FOUND;
    if (op) *op = (marble__memtable_op)n->op;
    if (value) *value = node_value(n);
    if (vlen) *vlen = n->vlen;
    if (seq) *seq = n->seq;
    return MARBLE_OK;
}

size_t marble__memtable_bytes(const marble__memtable *mt)
{
    return sizeof(*mt) +
           atomic_load_explicit((_Atomic size_t *)&mt->arena_bytes, memory_order_relaxed);
}

size_t marble__memtable_used_bytes(const marble__memtable *mt)
{
    return atomic_load_explicit((_Atomic size_t *)&mt->used_bytes, memory_order_relaxed);
}

size_t marble__memtable_count(const marble__memtable *mt)
{
    return atomic_load_explicit((_Atomic size_t *)&mt->count, memory_order_relaxed);
}

void marble__memtable_iter_init(marble__memtable_iter *it, const marble__memtable *mt)
{
    it->mt = mt;
    it->node = NULL;
}

int marble__memtable_iter_valid(const marble__memtable_iter *it)
{
    return it->node != NULL;
}

void marble__memtable_iter_seek_to_first(marble__memtable_iter *it)
{
    it->node = load_next(it->mt->head, 0);
}

void marble__memtable_iter_seek_to_last(marble__memtable_iter *it)
{
    const marble__memtable_node *last = find_last(it->mt);
    it->node = last == it->mt->head ? NULL : last;
}

void marble__memtable_iter_seek(marble__memtable_iter *it, const void *key, size_t klen)
{
    marble__memtable_iter_seek_at(it, key, klen, UINT64_MAX);
}

void marble__memtable_iter_seek_at(marble__memtable_iter *it, const void *key, size_t klen,
                                   uint64_t seq)
{
    it->node = load_next(find_less(it->mt, key, klen, seq), 0);
}

void marble__memtable_iter_next(marble__memtable_iter *it)
{
    it->node = load_next(it->node, 0);
}

void marble__memtable_iter_prev(marble__memtable_iter *it)
{
    const marble__memtable_node *n = it->node;
    const marble__memtable_node *p = find_less(it->mt, node_key(n), n->klen, n->seq);
    it->node = p == it->mt->head ? NULL : p;
}

const void *marble__memtable_iter_key(const marble__memtable_iter *it, size_t *klen)
{
    if (klen) *klen = it->node->klen;
    return node_key(it->node);
}

uint64_t marble__memtable_iter_seq(const marble__memtable_iter *it)
{
    return it->node->seq;
}

marble__memtable_op marble__memtable_iter_op(const marble__memtable_iter *it)
{
    return (marble__memtable_op)it->node->op;
}

const void *marble__memtable_iter_value(const marble__memtable_iter *it, size_t *vlen)
{
    if (vlen) *vlen = it->node->vlen;
    return node_value(it->node);
}
