/* The block cache: a process-wide LRU cache of fixed-size blocks of files, bounded in bytes, and
 * the "cache(<parent>)" backend that reads a parent backend's files through it. */

/*
 * Keys. A block is keyed by (version, index). A version is (parent backend, path, size, mtime_ns)
 * as the parent's stat reported them when a read-only file was opened through a wrapper; open
 * files hold a reference to their version, so a read looks blocks up by pointer and index, with
 * no string hashing. Versions are hashed by path alone, so that invalidating a path finds every
 * version of it (under every parent) in one bucket.
 *
 * Staleness. A read-only open does stat, open, stat again and asks the new handle its size; the
 * file is cached only if both stats agree (size, mtime, a regular file) and so does the handle's
 * size. A file replaced or rewritten through the parent directly then has another size or mtime
 * at its next open, hence another version: its old blocks are never served to the new handle
 * and age out of the LRU. Where the stats disagree (the file is being replaced), the parent
 * cannot stat, the handle cannot read at random offsets or was opened with DIRECT, the handle
 * reads straight from the parent. A cached handle reads the file as it was at open: size() and
 * end of file are the size at open. Writes, appends and truncates through a wrapper file,
 * writable opens and closes, removes and renames invalidate the path's blocks (after the parent
 * call) under that parent. What cannot be noticed: a rewrite through the parent directly that
 * keeps both the size and the mtime (a backend whose mtime is coarse or always 0); call
 * marble_block_cache_invalidate after such writes.
 *
 * Single flight. A reader that misses inserts a LOADING entry (pinned by it), fetches the block
 * outside the lock from its own handle, then marks it READY (or FAILED) and broadcasts `cv`.
 * Readers that find a LOADING entry pin it and wait (stats.waits); hits, misses and waits are
 * disjoint, one per block looked up. A failed fetch detaches its entry (no negative caching) and
 * hands its error to the waiters; the next reader fetches again. Invalidation detaches LOADING
 * entries too: their loader still serves its waiters, but the bytes are not kept.
 *
 * Memory. `bytes` counts the data of entries that were given room (block length, the last block
 * of a file short), LOADING ones included, until they are freed. Room is made by evicting least
 * recently used unpinned READY blocks; when pinned blocks fill the capacity, the reader fetches
 * an uncached block of its own (counted as a miss and a fetch) so bytes never exceed capacity.
 * Per-entry metadata (about 100 bytes) is not counted.
 *
 * Thread safety: one mutex `mu` guards everything in the cache (tables, LRU list, entry states,
 * pins, versions, stats); `cv` (with mu) is broadcast when a fetch ends. mu is never held during
 * I/O or while block bytes are copied: a pinned entry that is READY never changes, so its reader
 * copies it unlocked (the mutex hand-off orders the loader's writes before). Lock order: mu is a
 * leaf; no other lock is taken under it and the parent is never called under it. No atomics.
 * The wrapper backend is immutable after creation; its files are immutable after open (their
 * positional reads may run on several threads at once, as the parent's).
 *
 * Invariants:
 *  - bytes <= capacity; bytes is the sum of `len` over charged entries.
 *  - An entry is in the block table iff !detached; table entries are LOADING or READY, and are
 *    on their version's block list; an entry is in the LRU list iff it is READY and in the table.
 *  - A LOADING entry is pinned by its loader; a FAILED entry is detached.
 *  - A detached entry is freed when its last pin goes; a table entry only by eviction (unpinned),
 *    invalidation (unpinned) or destroy.
 *  - A version's refs counts the open files on it and the entries (attached or not) naming it;
 *    it is freed, and leaves the version table, at 0.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/base.h"
#include "marble/remote.h"
#include "marble/vfs.h"
#include "vfs/vfs_internal.h"

#define DEFAULT_BLOCK ((size_t)1 << 20)
#define DEFAULT_CAPACITY ((size_t)256 << 20)
#define INITIAL_BUCKETS 256

enum { LOADING, READY, FAILED };

typedef struct bversion bversion;

typedef struct bentry {
    struct bentry *hnext;         /* block table chain */
    struct bentry *lprev, *lnext; /* LRU list, most recent first */
    struct bentry *vprev, *vnext; /* its version's blocks */
    bversion *ver;
    uint64_t idx;
    unsigned char *data;
    size_t len;    /* the block's length in the file at open (and what is charged) */
    size_t filled; /* bytes the fetch returned (< len: the file shrank under the reader) */
    int state;
    int detached;
    int charged;
    int in_lru;
    uint32_t pins;
    int rc;            /* FAILED: the fetch's code */
    marble_error *err; /* FAILED: its message (NULL if that could not be allocated) */
} bentry;

struct bversion {
    bversion *hnext;
    marble_vfs *parent;
    char *path;
    uint64_t phash;
    uint64_t size;
    int64_t mtime_ns;
    uint64_t refs;
    bentry *blocks;
};

struct marble_block_cache {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t block_size, capacity;
    bentry **btab;
    size_t bmask, bcount;
    bversion **vtab;
    size_t vmask, vcount;
    bentry *lru_head, *lru_tail;
    uint64_t bytes;
    uint64_t hits, misses, fetches, evictions, waits;
};

/* ---- hashing and tables (all under mu) ---------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t bslot(const marble_block_cache *c, const bversion *v, uint64_t idx)
{
    return (size_t)(mix64((uint64_t)(uintptr_t)v ^ (idx * 0x9E3779B97F4A7C15ull)) & c->bmask);
}

static uint64_t path_hash(const char *path)
{
    return marble_hash64(path, strlen(path), 0x6d61726246636163ull);
}

static void btab_grow(marble_block_cache *c)
{
    size_t n = (c->bmask + 1) * 2;
    bentry **t = calloc(n, sizeof *t);
    if (!t) return; /* longer chains, still correct */
    bentry **old = c->btab;
    size_t oldn = c->bmask + 1;
    c->btab = t;
    c->bmask = n - 1;
    for (size_t i = 0; i < oldn; i++)
        for (bentry *e = old[i], *next; e; e = next) {
            next = e->hnext;
            size_t s = bslot(c, e->ver, e->idx);
            e->hnext = t[s];
            t[s] = e;
        }
    free(old);
}

static bentry *btab_find(marble_block_cache *c, const bversion *v, uint64_t idx)
{
    for (bentry *e = c->btab[bslot(c, v, idx)]; e; e = e->hnext)
        if (e->ver == v && e->idx == idx) return e;
    return NULL;
}

static void lru_unlink(marble_block_cache *c, bentry *e)
{
    if (!e->in_lru) return;
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        c->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        c->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
    e->in_lru = 0;
}

static void lru_push(marble_block_cache *c, bentry *e)
{
    e->lprev = NULL;
    e->lnext = c->lru_head;
    if (c->lru_head)
        c->lru_head->lprev = e;
    else
        c->lru_tail = e;
    c->lru_head = e;
    e->in_lru = 1;
}

/* Puts a new entry in the table and on its version's list. */
static void attach(marble_block_cache *c, bentry *e)
{
    if (c->bcount >= c->bmask + 1) btab_grow(c);
    size_t s = bslot(c, e->ver, e->idx);
    e->hnext = c->btab[s];
    c->btab[s] = e;
    c->bcount++;
    e->vprev = NULL;
    e->vnext = e->ver->blocks;
    if (e->ver->blocks) e->ver->blocks->vprev = e;
    e->ver->blocks = e;
    e->detached = 0;
}

/* Takes an entry out of the table, the LRU list and its version's list. */
static void detach(marble_block_cache *c, bentry *e)
{
    if (e->detached) return;
    bentry **pp = &c->btab[bslot(c, e->ver, e->idx)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    e->hnext = NULL;
    c->bcount--;
    lru_unlink(c, e);
    if (e->vprev)
        e->vprev->vnext = e->vnext;
    else
        e->ver->blocks = e->vnext;
    if (e->vnext) e->vnext->vprev = e->vprev;
    e->vprev = e->vnext = NULL;
    e->detached = 1;
}

static void ver_unref(marble_block_cache *c, bversion *v)
{
    if (--v->refs > 0) return;
    bversion **pp = &c->vtab[v->phash & c->vmask];
    while (*pp != v)
        pp = &(*pp)->hnext;
    *pp = v->hnext;
    c->vcount--;
    free(v->path);
    free(v);
}

static void entry_free(marble_block_cache *c, bentry *e)
{
    if (e->charged) c->bytes -= e->len;
    bversion *v = e->ver;
    free(e->data);
    free(e->err);
    free(e);
    ver_unref(c, v);
}

static void unpin(marble_block_cache *c, bentry *e)
{
    if (--e->pins == 0 && e->detached) entry_free(c, e);
}

static void vtab_grow(marble_block_cache *c)
{
    size_t n = (c->vmask + 1) * 2;
    bversion **t = calloc(n, sizeof *t);
    if (!t) return;
    bversion **old = c->vtab;
    size_t oldn = c->vmask + 1;
    c->vtab = t;
    c->vmask = n - 1;
    for (size_t i = 0; i < oldn; i++)
        for (bversion *v = old[i], *next; v; v = next) {
            next = v->hnext;
            v->hnext = t[v->phash & c->vmask];
            t[v->phash & c->vmask] = v;
        }
    free(old);
}

/* The version (parent, path, size, mtime) with a reference taken; NULL when out of memory. */
static bversion *ver_get(marble_block_cache *c, marble_vfs *parent, const char *path, uint64_t size,
                         int64_t mtime_ns)
{
    uint64_t h = path_hash(path);
    for (bversion *v = c->vtab[h & c->vmask]; v; v = v->hnext)
        if (v->phash == h && v->parent == parent && v->size == size && v->mtime_ns == mtime_ns &&
            !strcmp(v->path, path)) {
            v->refs++;
            return v;
        }
    bversion *v = calloc(1, sizeof *v);
    if (!v || !(v->path = strdup(path))) {
        free(v);
        return NULL;
    }
    if (c->vcount >= c->vmask + 1) vtab_grow(c);
    v->parent = parent;
    v->phash = h;
    v->size = size;
    v->mtime_ns = mtime_ns;
    v->refs = 1;
    v->hnext = c->vtab[h & c->vmask];
    c->vtab[h & c->vmask] = v;
    c->vcount++;
    return v;
}

/* Drops the blocks of `path` under `parent` (NULL: under every parent). */
static void invalidate_locked(marble_block_cache *c, marble_vfs *parent, const char *path)
{
    uint64_t h = path_hash(path);
    for (bversion *v = c->vtab[h & c->vmask], *next; v; v = next) {
        if (v->phash != h || (parent && v->parent != parent) || strcmp(v->path, path) != 0) {
            next = v->hnext;
            continue;
        }
        v->refs++; /* freeing its blocks must not free it under us */
        while (v->blocks) {
            bentry *e = v->blocks;
            detach(c, e);
            if (e->pins == 0) entry_free(c, e);
        }
        next = v->hnext;
        ver_unref(c, v);
    }
}

static void invalidate(marble_block_cache *c, marble_vfs *parent, const char *path)
{
    pthread_mutex_lock(&c->mu);
    invalidate_locked(c, parent, path);
    pthread_mutex_unlock(&c->mu);
}

/* Evicts until `need` more bytes fit; 0 if pinned blocks leave no room. */
static int make_room(marble_block_cache *c, size_t need)
{
    bentry *e = c->lru_tail;
    while (c->bytes + need > c->capacity) {
        while (e && e->pins > 0)
            e = e->lprev;
        if (!e) return 0;
        bentry *victim = e;
        e = e->lprev;
        detach(c, victim);
        entry_free(c, victim);
        c->evictions++;
    }
    return 1;
}

/* ---- fetching ------------------------------------------------------------------------------ */

static size_t block_len(const marble_block_cache *c, const bversion *v, uint64_t idx)
{
    uint64_t start = idx * c->block_size;
    uint64_t left = v->size - start;
    return left < c->block_size ? (size_t)left : c->block_size;
}

static int fetch(marble_file *inner, uint64_t off, unsigned char *buf, size_t n, size_t *got,
                 marble_error *err)
{
    *got = 0;
    while (*got < n) {
        size_t k = 0;
        MARBLE_RETURN_NOT_OK(
            inner->methods->read(inner, off + *got, buf + *got, n - *got, &k, err));
        if (k == 0) break;
        *got += k;
    }
    return MARBLE_OK;
}

static int failed_entry(bentry *e, marble_error *err)
{
    if (err) {
        if (e->err)
            *err = *e->err;
        else
            marble_error_set(err, e->rc, "block cache: fetching a block failed (%s)",
                             marble_strerror(e->rc));
    }
    return e->rc;
}

/* The block `idx` of version `v`, pinned: found, waited for, or fetched through `inner`. */
static int acquire(marble_block_cache *c, bversion *v, marble_file *inner, uint64_t idx,
                   bentry **out, marble_error *err)
{
    *out = NULL;
    pthread_mutex_lock(&c->mu);
    bentry *e = btab_find(c, v, idx);
    if (e && e->state == READY) {
        c->hits++;
        e->pins++;
        lru_unlink(c, e);
        lru_push(c, e);
        pthread_mutex_unlock(&c->mu);
        *out = e;
        return MARBLE_OK;
    }
    if (e) {
        c->waits++;
        e->pins++;
        while (e->state == LOADING)
            pthread_cond_wait(&c->cv, &c->mu);
        int rc = MARBLE_OK;
        if (e->state == READY)
            *out = e;
        else {
            rc = failed_entry(e, err);
            unpin(c, e);
        }
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    size_t need = block_len(c, v, idx);
    e = calloc(1, sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&c->mu);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "block cache: allocating an entry");
    }
    c->misses++;
    c->fetches++;
    e->ver = v;
    v->refs++;
    e->idx = idx;
    e->len = need;
    e->pins = 1;
    e->state = LOADING;
    e->detached = 1;
    if (make_room(c, need)) {
        e->charged = 1;
        c->bytes += need;
        attach(c, e);
    }
    pthread_mutex_unlock(&c->mu);

    unsigned char *data = malloc(need ? need : 1);
    size_t got = 0;
    marble_error ferr;
    marble_error_clear(&ferr);
    int rc = data ? fetch(inner, idx * c->block_size, data, need, &got, &ferr)
                  : marble_error_set(&ferr, MARBLE_ERR_NO_MEMORY,
                                     "block cache: allocating a block of %zu bytes", need);

    pthread_mutex_lock(&c->mu);
    if (rc == MARBLE_OK) {
        e->data = data;
        e->filled = got;
        e->state = READY;
        if (!e->detached) {
            if (got < need)
                detach(c, e); /* the file shrank under this handle: serve it, keep nothing */
            else
                lru_push(c, e);
        }
        *out = e;
    } else {
        free(data);
        e->state = FAILED;
        e->rc = rc;
        e->err = malloc(sizeof *e->err);
        if (e->err) *e->err = ferr;
        detach(c, e);
        failed_entry(e, err);
        unpin(c, e);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void release(marble_block_cache *c, bentry *e)
{
    pthread_mutex_lock(&c->mu);
    unpin(c, e);
    pthread_mutex_unlock(&c->mu);
}

/* ---- the cache's API ------------------------------------------------------------------------ */

int marble_block_cache_create(size_t block_size, size_t capacity, marble_block_cache **out,
                              marble_error *err)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_block_cache_create: out is NULL");
    *out = NULL;
    if (block_size == 0) block_size = DEFAULT_BLOCK;
    if (capacity == 0) capacity = DEFAULT_CAPACITY;
    if (capacity < block_size)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_block_cache_create: the capacity (%zu bytes) is smaller "
                                "than one block (%zu bytes)",
                                capacity, block_size);
    marble_block_cache *c = calloc(1, sizeof *c);
    if (c) {
        c->btab = calloc(INITIAL_BUCKETS, sizeof *c->btab);
        c->vtab = calloc(INITIAL_BUCKETS, sizeof *c->vtab);
    }
    if (!c || !c->btab || !c->vtab) {
        if (c) {
            free(c->btab);
            free(c->vtab);
        }
        free(c);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the block cache");
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->block_size = block_size;
    c->capacity = capacity;
    c->bmask = INITIAL_BUCKETS - 1;
    c->vmask = INITIAL_BUCKETS - 1;
    *out = c;
    return MARBLE_OK;
}

void marble_block_cache_destroy(marble_block_cache *c)
{
    if (!c) return;
    for (size_t i = 0; i <= c->bmask; i++)
        for (bentry *e = c->btab[i], *next; e; e = next) {
            next = e->hnext;
            free(e->data);
            free(e->err);
            free(e);
        }
    for (size_t i = 0; i <= c->vmask; i++)
        for (bversion *v = c->vtab[i], *next; v; v = next) {
            next = v->hnext;
            free(v->path);
            free(v);
        }
    free(c->btab);
    free(c->vtab);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void marble_block_cache_get_stats(marble_block_cache *c, marble_block_cache_stats *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    out->hits = c->hits;
    out->misses = c->misses;
    out->fetches = c->fetches;
    out->evictions = c->evictions;
    out->waits = c->waits;
    out->bytes = c->bytes;
    out->capacity = c->capacity;
    out->blocks = c->bcount;
    pthread_mutex_unlock(&c->mu);
}

/* `path` is the path a backend sees; a URI ("scheme://rest") also drops the blocks of "rest". */
void marble_block_cache_invalidate(marble_block_cache *c, const char *path)
{
    if (!c || !path) return;
    pthread_mutex_lock(&c->mu);
    invalidate_locked(c, NULL, path);
    const char *sep = strstr(path, "://");
    if (sep) invalidate_locked(c, NULL, sep + 3);
    pthread_mutex_unlock(&c->mu);
}

/* ---- the wrapper backend -------------------------------------------------------------------- */

typedef struct cvfs {
    marble_vfs base;
    marble_vfs *parent;
    marble_block_cache *cache;
    char name[];
} cvfs;

/* ver != NULL: a cached read-only file. path != NULL: a writable file, invalidated on change. */
typedef struct cfile {
    marble_file base;
    marble_file *inner;
    cvfs *cv;
    bversion *ver;
    char *path;
} cfile;

static void changed(cfile *f)
{
    if (f->path) invalidate(f->cv->cache, f->cv->parent, f->path);
}

static int cf_read(marble_file *file, uint64_t off, void *buf, size_t n, size_t *nread,
                   marble_error *err)
{
    cfile *f = (cfile *)file;
    *nread = 0;
    if (!f->ver) return f->inner->methods->read(f->inner, off, buf, n, nread, err);
    bversion *v = f->ver;
    marble_block_cache *c = f->cv->cache;
    if (off >= v->size || n == 0) return MARBLE_OK;
    if (n > v->size - off) n = (size_t)(v->size - off);
    size_t done = 0;
    while (done < n) {
        uint64_t pos = off + done;
        uint64_t idx = pos / c->block_size;
        size_t in = (size_t)(pos % c->block_size);
        bentry *e;
        int rc = acquire(c, v, f->inner, idx, &e, err);
        if (rc != MARBLE_OK) {
            *nread = done;
            return rc;
        }
        size_t k = e->filled > in ? e->filled - in : 0;
        if (k > n - done) k = n - done;
        memcpy((unsigned char *)buf + done, e->data + in, k);
        int shrunk = e->filled < e->len;
        release(c, e);
        done += k;
        if (k == 0 || shrunk) break;
    }
    *nread = done;
    return MARBLE_OK;
}

static int cf_write(marble_file *file, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    cfile *f = (cfile *)file;
    int rc = f->inner->methods->write(f->inner, off, buf, n, err);
    changed(f);
    return rc;
}

static int cf_append(marble_file *file, const void *buf, size_t n, marble_error *err)
{
    cfile *f = (cfile *)file;
    int rc = f->inner->methods->append(f->inner, buf, n, err);
    changed(f);
    return rc;
}

static int cf_size(marble_file *file, uint64_t *out, marble_error *err)
{
    cfile *f = (cfile *)file;
    if (f->ver) {
        *out = f->ver->size;
        return MARBLE_OK;
    }
    return f->inner->methods->size(f->inner, out, err);
}

static int cf_sync(marble_file *file, int flags, marble_error *err)
{
    cfile *f = (cfile *)file;
    return f->inner->methods->sync(f->inner, flags, err);
}

static int cf_truncate(marble_file *file, uint64_t size, marble_error *err)
{
    cfile *f = (cfile *)file;
    int rc = f->inner->methods->truncate(f->inner, size, err);
    changed(f);
    return rc;
}

/* Without MARBLE_CAP_MAP the dispatcher never calls this (marble_file_map reads through
 * cf_read into a buffer it owns); called directly, it does the same into a buffer of its own. */
static int cf_map(marble_file *file, uint64_t off, size_t len, const void **addr, void **cookie,
                  marble_error *err)
{
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "cache map: %zu bytes", len);
    size_t done = 0;
    while (done < len) {
        size_t got = 0;
        int rc = cf_read(file, off + done, buf + done, len - done, &got, err);
        if (rc == MARBLE_OK && got == 0)
            rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                  "short read: mapping %zu bytes at offset %llu, the file ends "
                                  "after %zu",
                                  len, (unsigned long long)off, done);
        if (rc != MARBLE_OK) {
            free(buf);
            return rc;
        }
        done += got;
    }
    *addr = buf;
    *cookie = buf;
    return MARBLE_OK;
}

static void cf_unmap(marble_file *file, const void *addr, size_t len, void *cookie)
{
    free(cookie);
}

static int cf_close(marble_file *file, marble_error *err)
{
    cfile *f = (cfile *)file;
    int rc = f->inner->methods->close(f->inner, err);
    changed(f);
    if (f->ver) {
        marble_block_cache *c = f->cv->cache;
        pthread_mutex_lock(&c->mu);
        ver_unref(c, f->ver);
        pthread_mutex_unlock(&c->mu);
    }
    free(f->path);
    free(f);
    return rc;
}

static int cf_control(marble_file *file, int op, void *arg)
{
    cfile *f = (cfile *)file;
    if (op == MARBLE_FCNTL_GET_INNER && arg) {
        *(marble_file **)arg = f->inner;
        return MARBLE_OK;
    }
    if (op == MARBLE_FCNTL_GET_FD) return MARBLE_ERR_UNSUPPORTED;
    return f->inner->methods->control(f->inner, op, arg);
}

static const marble_file_methods cfile_methods = {
    MARBLE_FILE_METHODS_VERSION,
    cf_read,
    cf_write,
    cf_append,
    cf_size,
    cf_sync,
    cf_truncate,
    cf_map,
    cf_unmap,
    cf_close,
    cf_control,
};

/* The version a read-only handle may be cached under, or NULL (see "Staleness"). */
static bversion *version_for(cvfs *cv, const char *path, const marble_stat *before,
                             marble_file *inner)
{
    marble_vfs *p = cv->parent;
    marble_stat after;
    uint64_t size = 0;
    if (!(inner->caps & MARBLE_CAP_RANDOM_READ)) return NULL;
    if (p->stat(p, path, &after, NULL) != MARBLE_OK || after.is_dir || after.size != before->size ||
        after.mtime_ns != before->mtime_ns)
        return NULL;
    if (inner->methods->size(inner, &size, NULL) != MARBLE_OK || size != before->size) return NULL;
    pthread_mutex_lock(&cv->cache->mu);
    bversion *v = ver_get(cv->cache, p, path, before->size, before->mtime_ns);
    pthread_mutex_unlock(&cv->cache->mu);
    return v;
}

static int cv_open(marble_vfs *v, const char *path, int flags, marble_file **out, marble_error *err)
{
    cvfs *cv = (cvfs *)v;
    marble_vfs *p = cv->parent;
    *out = NULL;
    const int writable = (flags & MARBLE_OPEN_WRITE) != 0;
    const int cacheable = !writable && !(flags & MARBLE_OPEN_DIRECT);
    marble_stat before;
    int have_before = cacheable && p->stat(p, path, &before, NULL) == MARBLE_OK && !before.is_dir;
    cfile *f = calloc(1, sizeof *f);
    if (!f) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s open %s", v->name, path);
    if (writable && !(f->path = strdup(path))) {
        free(f);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s open %s", v->name, path);
    }
    marble_file *inner = NULL;
    int rc = p->open(p, path, flags, &inner, err);
    if (rc != MARBLE_OK) {
        free(f->path);
        free(f);
        return rc;
    }
    inner->vfs = p;
    inner->flags = flags;
    inner->fs_record = NULL;
    f->inner = inner;
    f->cv = cv;
    if (have_before) f->ver = version_for(cv, path, &before, inner);
    f->base.methods = &cfile_methods;
    f->base.vfs = v;
    f->base.caps = inner->caps & ~(uint32_t)(MARBLE_CAP_MAP | MARBLE_CAP_FD);
    f->base.flags = flags;
    f->base.fs_record = NULL;
    changed(f);
    *out = &f->base;
    return MARBLE_OK;
}

static marble_vfs *parent_of(marble_vfs *v)
{
    return ((cvfs *)v)->parent;
}

static int cv_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->stat(p, path, out, err);
}

static int cv_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->list(p, dir, fn, ud, err);
}

static int cv_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->mkdir(p, path, err);
}

static int cv_remove(marble_vfs *v, const char *path, marble_error *err)
{
    cvfs *cv = (cvfs *)v;
    int rc = cv->parent->remove(cv->parent, path, err);
    invalidate(cv->cache, cv->parent, path);
    return rc;
}

static int cv_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    cvfs *cv = (cvfs *)v;
    int rc = cv->parent->rename(cv->parent, from, to, err);
    pthread_mutex_lock(&cv->cache->mu);
    invalidate_locked(cv->cache, cv->parent, from);
    invalidate_locked(cv->cache, cv->parent, to);
    pthread_mutex_unlock(&cv->cache->mu);
    return rc;
}

static int cv_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->sync_dir(p, path, err);
}

static int cv_control(marble_vfs *v, int op, void *arg)
{
    marble_vfs *p = parent_of(v);
    return p->control(p, op, arg);
}

static void cv_destroy(marble_vfs *v)
{
    free(v);
}

int marble_vfs_cache_create(marble_vfs *parent, marble_block_cache *cache, marble_vfs **out,
                            marble_error *err)
{
    if (out) *out = NULL;
    if (!out || !parent || !cache)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_cache_create: %s is NULL",
                                !out      ? "out"
                                : !parent ? "parent"
                                          : "cache");
    const char *pname = parent->name ? parent->name : "?";
    size_t len = strlen(pname) + sizeof "cache()";
    cvfs *cv = calloc(1, sizeof *cv + len);
    if (!cv)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the cache backend over %s",
                                pname);
    snprintf(cv->name, len, "cache(%s)", pname);
    cv->parent = parent;
    cv->cache = cache;
    marble_vfs *v = &cv->base;
    v->version = MARBLE_VFS_VERSION;
    v->name = cv->name;
    v->caps = parent->caps & ~(uint32_t)(MARBLE_CAP_MAP | MARBLE_CAP_FD);
    v->data = cv;
    v->open = cv_open;
    v->stat = cv_stat;
    v->list = cv_list;
    v->mkdir = cv_mkdir;
    v->remove = cv_remove;
    v->rename = cv_rename;
    v->sync_dir = cv_sync_dir;
    v->control = cv_control;
    v->destroy = cv_destroy;
    *out = v;
    return MARBLE_OK;
}
