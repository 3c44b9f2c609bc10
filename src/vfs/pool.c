/* The handle pool: at most max_open files open, idle handles reused per (URI, flags), LRU order. */

/*
 * Thread safety: one mutex guards everything here and is never held across marble_fs_open or
 * marble_file_close. A thread that needs a new handle first reserves a slot (`open` counts the
 * handles open plus the slots reserved for opens and closes in flight), so no more than
 * max_open files are ever open, even while the opens and closes run unlocked; the slot of a
 * handle being closed is given back only once the close has returned. `cond` is broadcast
 * whenever a slot is given back or a handle becomes idle. An open in flight has its key already:
 * it counts in the key's nentries and remembers the key's eviction generation `gen`, which evict
 * bumps; an open that comes back to a changed `gen` may hold the file evict was called to
 * forget, so its entry is doomed at once (it serves that caller only).
 *
 * Invariants: open <= max_open; in_use counts acquired entries and reservations; every entry is
 * in the file table; an entry is idle iff it is in its key's idle list and in the global LRU;
 * only entries in use are doomed (closed on release); nentries counts a key's entries and the
 * opens in flight for it; a key lives while nentries > 0.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "marble/base.h"
#include "marble/vfs.h"

typedef struct pkey pkey;
typedef struct pentry pentry;

struct pentry {
    marble_file *f;
    pkey *key;
    pentry *fnext;         /* file-table chain */
    pentry *kprev, *knext; /* the key's idle list, most recently released first */
    pentry *lprev, *lnext; /* the global LRU, most recently released first */
    int in_use, doomed;
};

struct pkey {
    char *uri;
    int flags;
    uint64_t hash; /* of the URI alone, so every key of a URI shares a bucket */
    pkey *hnext;
    pentry *idle;
    size_t nentries;
    uint64_t gen; /* evictions of its URI */
};

struct marble_handle_pool {
    marble_fs *fs;
    size_t max_open;
    uint32_t timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pkey **keys;
    size_t nkeys, key_buckets;
    pentry **files;
    size_t nfiles, file_buckets;
    pentry *lru_head, *lru_tail;
    size_t open, in_use;
    uint64_t hits, misses, evictions;
};

static uint64_t hash_ptr(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    return x ^ (x >> 33);
}

/* ---- tables (caller holds mu) -------------------------------------------------------------- */

static pkey *key_find(marble_handle_pool *p, const char *uri, int flags, uint64_t h)
{
    for (pkey *k = p->keys[h & (p->key_buckets - 1)]; k; k = k->hnext)
        if (k->hash == h && k->flags == flags && !strcmp(k->uri, uri)) return k;
    return NULL;
}

static void key_insert(marble_handle_pool *p, pkey *k)
{
    if (p->nkeys >= p->key_buckets) {
        size_t nb = p->key_buckets * 2;
        pkey **t = calloc(nb, sizeof *t);
        if (t) {
            for (size_t i = 0; i < p->key_buckets; i++)
                for (pkey *c = p->keys[i], *next; c; c = next) {
                    next = c->hnext;
                    c->hnext = t[c->hash & (nb - 1)];
                    t[c->hash & (nb - 1)] = c;
                }
            free(p->keys);
            p->keys = t;
            p->key_buckets = nb;
        }
    }
    pkey **b = &p->keys[k->hash & (p->key_buckets - 1)];
    k->hnext = *b;
    *b = k;
    p->nkeys++;
}

/* A new key for (uri, flags), in the table with no entries; NULL when out of memory. */
static pkey *key_add(marble_handle_pool *p, const char *uri, int flags, uint64_t h)
{
    pkey *k = calloc(1, sizeof *k);
    if (!k || !(k->uri = strdup(uri))) {
        free(k);
        return NULL;
    }
    k->flags = flags;
    k->hash = h;
    key_insert(p, k);
    return k;
}

static void key_remove(marble_handle_pool *p, pkey *k)
{
    pkey **pp = &p->keys[k->hash & (p->key_buckets - 1)];
    while (*pp != k)
        pp = &(*pp)->hnext;
    *pp = k->hnext;
    p->nkeys--;
    free(k->uri);
    free(k);
}

static pentry *file_find(marble_handle_pool *p, const marble_file *f)
{
    for (pentry *e = p->files[hash_ptr(f) & (p->file_buckets - 1)]; e; e = e->fnext)
        if (e->f == f) return e;
    return NULL;
}

static void file_insert(marble_handle_pool *p, pentry *e)
{
    if (p->nfiles >= p->file_buckets) {
        size_t nb = p->file_buckets * 2;
        pentry **t = calloc(nb, sizeof *t);
        if (t) {
            for (size_t i = 0; i < p->file_buckets; i++)
                for (pentry *c = p->files[i], *next; c; c = next) {
                    next = c->fnext;
                    size_t b = hash_ptr(c->f) & (nb - 1);
                    c->fnext = t[b];
                    t[b] = c;
                }
            free(p->files);
            p->files = t;
            p->file_buckets = nb;
        }
    }
    pentry **b = &p->files[hash_ptr(e->f) & (p->file_buckets - 1)];
    e->fnext = *b;
    *b = e;
    p->nfiles++;
}

static void idle_push(marble_handle_pool *p, pentry *e)
{
    e->kprev = NULL;
    e->knext = e->key->idle;
    if (e->knext) e->knext->kprev = e;
    e->key->idle = e;
    e->lprev = NULL;
    e->lnext = p->lru_head;
    if (p->lru_head)
        p->lru_head->lprev = e;
    else
        p->lru_tail = e;
    p->lru_head = e;
}

static void idle_remove(marble_handle_pool *p, pentry *e)
{
    if (e->kprev)
        e->kprev->knext = e->knext;
    else
        e->key->idle = e->knext;
    if (e->knext) e->knext->kprev = e->kprev;
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        p->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        p->lru_tail = e->lprev;
    e->kprev = e->knext = e->lprev = e->lnext = NULL;
}

/* Takes an entry out of the file table and its key (freeing the key when it was the last). */
static void entry_forget(marble_handle_pool *p, pentry *e)
{
    pentry **pp = &p->files[hash_ptr(e->f) & (p->file_buckets - 1)];
    while (*pp != e)
        pp = &(*pp)->fnext;
    *pp = e->fnext;
    p->nfiles--;
    if (--e->key->nentries == 0) key_remove(p, e->key);
    e->key = NULL;
}

/* ---- the pool ------------------------------------------------------------------------------ */

static size_t default_max_open(void)
{
    struct rlimit rl;
    size_t m = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)1 << 22)
            m = (size_t)1 << 21;
        else
            m = (size_t)rl.rlim_cur / 2;
    }
    return m < 16 ? 16 : m;
}

int marble_handle_pool_create(marble_fs *fs, const marble_handle_pool_options *opts,
                              marble_handle_pool **out, marble_error *err)
{
    if (!out || !fs)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_handle_pool_create: %s is NULL", !out ? "out" : "fs");
    *out = NULL;
    marble_handle_pool *p = calloc(1, sizeof *p);
    if (p) {
        p->key_buckets = 64;
        p->file_buckets = 64;
        p->keys = calloc(p->key_buckets, sizeof *p->keys);
        p->files = calloc(p->file_buckets, sizeof *p->files);
    }
    if (!p || !p->keys || !p->files) {
        if (p) {
            free(p->keys);
            free(p->files);
        }
        free(p);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating a handle pool");
    }
    p->fs = fs;
    p->max_open = opts && opts->max_open ? opts->max_open : default_max_open();
    p->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : 10000;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return MARBLE_OK;
}

int marble_handle_pool_destroy(marble_handle_pool *p, marble_error *err)
{
    if (!p) return MARBLE_OK;
    size_t busy = 0;
    char first[512] = "";
    int rc = MARBLE_OK;
    marble_error e;
    for (size_t i = 0; i < p->file_buckets; i++) {
        for (pentry *c = p->files[i], *next; c; c = next) {
            next = c->fnext;
            if (c->in_use) {
                marble_log(MARBLE_LOG_WARN, "vfs",
                           "handle pool destroyed while %s (flags 0x%x) is still acquired",
                           c->key->uri, (unsigned)c->key->flags);
                if (!busy++) snprintf(first, sizeof first, "%s", c->key->uri);
            }
            int crc = marble_file_close(c->f, &e);
            if (crc != MARBLE_OK && rc == MARBLE_OK) {
                rc = crc;
                if (err) *err = e;
            }
            free(c);
        }
    }
    for (size_t i = 0; i < p->key_buckets; i++)
        for (pkey *k = p->keys[i], *next; k; k = next) {
            next = k->hnext;
            free(k->uri);
            free(k);
        }
    free(p->keys);
    free(p->files);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p);
    if (busy)
        return marble_error_set(err, MARBLE_ERR_BUSY,
                                "handle pool destroyed with %zu handle(s) still acquired; closed "
                                "them (first: %s)",
                                busy, first);
    return rc;
}

static void deadline_after(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int marble_handle_pool_acquire(marble_handle_pool *p, const char *uri, int flags, marble_file **out,
                               marble_error *err)
{
    if (!out || !p || !uri)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_handle_pool_acquire: %s is NULL",
                                !out ? "out"
                                : !p ? "pool"
                                     : "uri");
    *out = NULL;
    const uint64_t h = marble_hash64(uri, strlen(uri), 0);
    struct timespec deadline;
    int waited = 0, timed_out = 0;
    pentry *victim = NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        pkey *k = key_find(p, uri, flags, h);
        if (k && k->idle) {
            pentry *e = k->idle;
            idle_remove(p, e);
            e->in_use = 1;
            p->in_use++;
            p->hits++;
            pthread_mutex_unlock(&p->mu);
            *out = e->f;
            return MARBLE_OK;
        }
        if (p->open < p->max_open) {
            p->open++;
            break;
        }
        if (p->lru_tail) {
            victim = p->lru_tail;
            idle_remove(p, victim);
            entry_forget(p, victim);
            p->evictions++;
            break;
        }
        if (timed_out) {
            size_t max = p->max_open;
            pthread_mutex_unlock(&p->mu);
            return marble_error_set(err, MARBLE_ERR_TIMEOUT,
                                    "acquire %s: all %zu pooled handles stayed in use for %u ms",
                                    uri, max, (unsigned)p->timeout_ms);
        }
        if (!waited) {
            deadline_after(&deadline, p->timeout_ms);
            waited = 1;
        }
        if (pthread_cond_timedwait(&p->cond, &p->mu, &deadline) == ETIMEDOUT) timed_out = 1;
    }
    p->misses++;
    p->in_use++;
    pkey *k = key_find(p, uri, flags, h);
    if (!k) k = key_add(p, uri, flags, h);
    pentry *e = k ? calloc(1, sizeof *e) : NULL;
    uint64_t gen = 0;
    if (e) {
        k->nentries++;
        gen = k->gen;
    } else if (k && k->nentries == 0) {
        key_remove(p, k);
    }
    pthread_mutex_unlock(&p->mu);

    if (victim) {
        marble_file_close(victim->f, NULL);
        free(victim);
    }
    int rc = e ? marble_fs_open(p->fs, uri, flags, &e->f, err)
               : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "acquire %s: allocating", uri);

    pthread_mutex_lock(&p->mu);
    if (rc != MARBLE_OK) {
        p->open--;
        p->in_use--;
        if (e && --k->nentries == 0) key_remove(p, k);
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mu);
        free(e);
        return rc;
    }
    e->key = k;
    e->in_use = 1;
    e->doomed = k->gen != gen;
    file_insert(p, e);
    pthread_mutex_unlock(&p->mu);
    *out = e->f;
    return MARBLE_OK;
}

void marble_handle_pool_release(marble_handle_pool *p, marble_file *f)
{
    if (!p || !f) return;
    pthread_mutex_lock(&p->mu);
    pentry *e = file_find(p, f);
    if (!e || !e->in_use) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    e->in_use = 0;
    p->in_use--;
    if (!e->doomed) {
        idle_push(p, e);
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mu);
        return;
    }
    entry_forget(p, e);
    p->evictions++;
    pthread_mutex_unlock(&p->mu);
    marble_file_close(f, NULL);
    free(e);
    pthread_mutex_lock(&p->mu);
    p->open--;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

void marble_handle_pool_evict(marble_handle_pool *p, const char *uri)
{
    if (!p || !uri) return;
    const uint64_t h = marble_hash64(uri, strlen(uri), 0);
    pentry *victims = NULL;
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->file_buckets; i++)
        for (pentry *e = p->files[i]; e; e = e->fnext)
            if (e->in_use && e->key->hash == h && !strcmp(e->key->uri, uri)) e->doomed = 1;
    pkey *k = p->keys[h & (p->key_buckets - 1)];
    while (k) {
        pkey *next = k->hnext;
        if (k->hash == h && !strcmp(k->uri, uri)) {
            k->gen++;
            while (k->idle) {
                pentry *e = k->idle;
                idle_remove(p, e);
                int last = k->nentries == 1;
                entry_forget(p, e);
                e->knext = victims;
                victims = e;
                n++;
                if (last) break;
            }
        }
        k = next;
    }
    p->evictions += n;
    pthread_mutex_unlock(&p->mu);
    if (!n) return;
    while (victims) {
        pentry *e = victims;
        victims = e->knext;
        marble_file_close(e->f, NULL);
        free(e);
    }
    pthread_mutex_lock(&p->mu);
    p->open -= n;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

void marble_handle_pool_get_stats(marble_handle_pool *p, marble_handle_pool_stats *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    out->hits = p->hits;
    out->misses = p->misses;
    out->evictions = p->evictions;
    out->open = p->open;
    out->in_use = p->in_use;
    out->max_open = p->max_open;
    pthread_mutex_unlock(&p->mu);
}
