/* Fault injection: a backend around a parent that fails chosen calls and simulates power cuts. */

/*
 * Injection. Calls through the wrapper are counted per kind from creation: open; read (and map);
 * write, append and truncate; file sync and sync_dir; rename; remove. An armed failure is decided
 * before the parent is called, so an injected call has no effect on the parent at all. stat,
 * list, mkdir, size and control are never failed. MARBLE_CAP_FD is withheld (and
 * MARBLE_FCNTL_GET_FD refused) so that no I/O can bypass the wrapper; everything else, maps
 * included, passes through to the parent.
 *
 * Power cut. The wrapper records, under one mutex, what a power cut would lose, in terms of the
 * minimal POSIX guarantees:
 *  - Data. Per file (an inode: it follows renames and outlives a remove while a handle is open):
 *    the size at its last sync and an undo log of the bytes of that synced prefix that were
 *    overwritten or truncated away since (old bytes, in order). A successful file sync, FULL or
 *    DATA, through any handle on the file (read-only ones included, as fsync does), clears the
 *    log and makes the current size and content durable. Unsynced data is lost whole, synced
 *    data survives whole.
 *  - A failed file sync (an injected one) sticks to the file, as on Linux, where a failed fsync
 *    marks the pages it could not write clean and a retried fsync returns 0 without writing them
 *    (PostgreSQL's "fsyncgate"): from then on every sync of that file, through any handle, old or
 *    new, fails with MARBLE_ERR_IO ("failed earlier"), and its undo log is kept, so a power cut
 *    still loses what was unsynced before the failure. Only dropping that content ends it: the
 *    file opened with TRUNCATE or truncated to 0 through the wrapper, its name removed or
 *    replaced (a new file there starts clean), or a power cut.
 *  - Names. Per directory entry touched since the last sync_dir of its directory (the new name
 *    of a create, both names of a rename, a removed name): which file it named at that sync, or
 *    that it was absent. A successful sync_dir of the directory forgets them: they are durable.
 *    A file sync does not make the file's own entry durable. Each entry is restored on its own,
 *    so a rename across directories of which only the target directory was synced leaves the
 *    file under both names (restored as a copy).
 *  Files and entries the wrapper has not changed count as durable as they are. Paths are
 *  recorded and compared normalized ("//" and "/./" collapsed, a leading "./" and a trailing '/'
 *  dropped), so every spelling of a name is the same entry; ".." is not resolved.
 *
 * marble_fault_crash applies that through the parent: every changed file gets its undo log
 * applied backwards and is cut to its synced size, in place; every touched entry is set back to
 * the file it named at its directory's last sync (a removed or replaced file is restored from a
 * copy of its synced content, taken in memory when it was unlinked and refreshed when a handle
 * still open on it syncs) or removed if it was absent then. Every open wrapper file is dead from
 * then on (each call fails with MARBLE_ERR_IO "crashed"; close still frees it) and all records
 * are dropped: the wrapper goes on as a rebooted machine on which everything present is durable.
 *
 * Not modelled: torn, partial or reordered writes (no torn sectors, no partially persisted
 * unsynced ranges); data that the parent would have persisted without a sync; metadata other
 * than names and sizes (mtimes); mkdir, directory removes and directory renames, which are
 * durable at once (paths recorded under a renamed directory follow it); changes made to the
 * parent without going through the wrapper, which count as durable. The copies of removed or
 * replaced files are held in memory, which suits tests with small files.
 *
 * Costs: opens, mutating calls (write, append, truncate, sync, rename, remove, sync_dir) and
 * closes are serialized on the mutex, and an open stats the file first (every handle is tied to
 * its file's record, so that a sync through it, read-only or not, counts for the right file
 * after renames); overwriting or truncating synced bytes first reads them into memory through a
 * second, read-only handle on the file.
 *
 * Thread safety: inj_mu guards the counters and the armed failures; mu guards the records and
 * every mutating call; the two are never held together. Lock order: mu, then the parent's own
 * locks (parent calls are made under mu). `epoch` (relaxed: a call racing with a crash may see
 * either side, and calls ordered after it see it) is bumped under mu and read without it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/vfs.h"
#include "vfs/vfs_internal.h"

#define NKINDS 6

typedef struct undo_rec {
    uint64_t off;
    size_t len;
    unsigned char *old;
} undo_rec;

/* A file as an inode. Invariant: `path` is unique among the nodes that have one. */
typedef struct fnode {
    struct fnode *prev, *next;
    char *path;           /* its name in the parent now; NULL once unlinked */
    uint64_t synced_size; /* durable size */
    undo_rec *undo;       /* oldest first; covers only [0, synced_size) */
    size_t nundo, cap_undo;
    int dirty;            /* changed since its last sync */
    size_t nopen;         /* wrapper files open on it */
    marble_file *reader;  /* read-only parent handle, opened on demand while nopen > 0 */
    unsigned char *saved; /* synced content, kept once unlinked while an entry names it */
    size_t saved_size;
    int has_saved;
    int in_tmp;           /* during a crash: moved aside */
    uint64_t failed_sync; /* the sync call (counted as in inject) that failed on it; 0: none */
    int failed_errno;
} fnode;

/* A directory entry changed since its directory's last sync. */
typedef struct dent {
    struct dent *prev, *next;
    char *path;
    fnode *durable; /* what it named at that sync; NULL: absent */
} dent;

typedef struct fault_vfs {
    marble_vfs base;
    marble_vfs *parent;
    char *name;

    pthread_mutex_t inj_mu;
    uint64_t counts[NKINDS];
    uint32_t nth_ops;
    uint64_t nth_n, nth_seen;
    int nth_errno;
    uint32_t rnd_ops;
    double rnd_p;
    uint64_t rnd_state;
    int rnd_errno;

    pthread_mutex_t mu;
    fnode *nodes;
    dent *dents;
    uint64_t tmp_seq;
    _Atomic uint64_t epoch;
} fault_vfs;

typedef struct fault_file {
    marble_file base;
    marble_file *inner;
    fault_vfs *fv;
    fnode *node; /* its file; NULL if no regular file was found there at open */
    uint64_t epoch;
    char *path;
} fault_file;

static const marble_file_methods fault_file_methods;
static int fault_open(marble_vfs *v, const char *path, int flags, marble_file **out,
                      marble_error *err);

/* ---- naming and injection ---------------------------------------------------------------- */

static const char *shown(const fault_vfs *fv, const char *path, char *buf, size_t cap)
{
    const char *pn = fv->parent->name ? fv->parent->name : "";
    if (!strcmp(pn, "local") || !strcmp(pn, "file")) return path;
    snprintf(buf, cap, "%s://%s", pn, path);
    return buf;
}

#define SHOWN(fv, path) shown((fv), (path), (char[600]){0}, 600)

static const char *errno_name(int e)
{
    switch (e) {
    case EIO:
        return "EIO";
    case ENOSPC:
        return "ENOSPC";
    case EDQUOT:
        return "EDQUOT";
    case EACCES:
        return "EACCES";
    case EROFS:
        return "EROFS";
    case ENOENT:
        return "ENOENT";
    default:
        return "an error";
    }
}

static int kind_index(uint32_t kind)
{
    int i = 0;
    while (!(kind & 1u)) {
        kind >>= 1;
        i++;
    }
    return i;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Counts a call of `kind` into *call; the errno an armed failure fails it with, or 0. */
static int decide(fault_vfs *fv, uint32_t kind, uint64_t *call)
{
    int e = 0;
    pthread_mutex_lock(&fv->inj_mu);
    *call = ++fv->counts[kind_index(kind)];
    if (fv->nth_n && (fv->nth_ops & kind) && ++fv->nth_seen == fv->nth_n) {
        e = fv->nth_errno;
        fv->nth_n = 0;
    }
    if (fv->rnd_p > 0 && (fv->rnd_ops & kind)) {
        double u = (double)(splitmix64(&fv->rnd_state) >> 11) * 0x1.0p-53;
        if (!e && u < fv->rnd_p) e = fv->rnd_errno;
    }
    pthread_mutex_unlock(&fv->inj_mu);
    return e;
}

static int injected(fault_vfs *fv, int e, const char *op, uint64_t call, const char *path,
                    marble_error *err)
{
    char what[96];
    snprintf(what, sizeof what, "injected %s on %s #%" PRIu64 " of", errno_name(e), op, call);
    return marble__vfs_os_error(err, e, what, SHOWN(fv, path));
}

/* Counts a call of `kind` and fails it if an armed failure says so. */
static int inject(fault_vfs *fv, uint32_t kind, const char *op, const char *path, marble_error *err)
{
    uint64_t call;
    int e = decide(fv, kind, &call);
    return e ? injected(fv, e, op, call, path, err) : MARBLE_OK;
}

/* `path` with "//" and "/./" collapsed and a leading "./" and a trailing '/' dropped, keeping a
 * leading '/': "./a//b/./c/" -> "a/b/c", "" and "./" -> ".", "//" -> "/". NULL: out of memory. */
static char *path_norm(const char *path)
{
    char *out = malloc(strlen(path) + 2);
    if (!out) return NULL;
    size_t n = 0;
    if (path[0] == '/') out[n++] = '/';
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        const char *end = p;
        while (*end && *end != '/')
            end++;
        size_t k = (size_t)(end - p);
        if (k && !(k == 1 && p[0] == '.')) {
            if (n && out[n - 1] != '/') out[n++] = '/';
            memcpy(out + n, p, k);
            n += k;
        }
        p = end;
    }
    if (n == 0) out[n++] = '.';
    out[n] = '\0';
    return out;
}

static int alive(const fault_file *ff, const char *op, marble_error *err)
{
    if (ff->epoch == atomic_load_explicit(&ff->fv->epoch, memory_order_relaxed)) return MARBLE_OK;
    return marble_error_set(err, MARBLE_ERR_IO, "%s %s: crashed (simulated power cut)", op,
                            SHOWN(ff->fv, ff->path));
}

/* ---- parent helpers ---------------------------------------------------------------------- */

static int pstat(fault_vfs *fv, const char *path, int *exists, marble_stat *st, marble_error *err)
{
    memset(st, 0, sizeof *st);
    marble_error e;
    int rc = fv->parent->stat(fv->parent, path, st, &e);
    *exists = rc == MARBLE_OK;
    if (rc == MARBLE_OK || rc == MARBLE_ERR_NOT_FOUND) return MARBLE_OK;
    if (err) *err = e;
    return rc;
}

static int popen_file(fault_vfs *fv, const char *path, int flags, marble_file **out,
                      marble_error *err)
{
    *out = NULL;
    int rc = fv->parent->open(fv->parent, path, flags, out, err);
    if (rc == MARBLE_OK) {
        (*out)->vfs = fv->parent;
        (*out)->fs_record = NULL;
    }
    return rc;
}

static int read_range(marble_file *f, uint64_t off, unsigned char *buf, size_t n, size_t *got,
                      marble_error *err)
{
    *got = 0;
    while (*got < n) {
        size_t k = 0;
        MARBLE_RETURN_NOT_OK(f->methods->read(f, off + *got, buf + *got, n - *got, &k, err));
        if (k == 0) break;
        *got += k;
    }
    return MARBLE_OK;
}

static int read_file(fault_vfs *fv, marble_file *f, const char *path, unsigned char **out,
                     size_t *size, marble_error *err)
{
    *out = NULL;
    *size = 0;
    uint64_t sz;
    MARBLE_RETURN_NOT_OK(f->methods->size(f, &sz, err));
    if (sz > SIZE_MAX - 1)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "fault: copying %s: too large",
                                SHOWN(fv, path));
    unsigned char *buf = malloc((size_t)sz + 1);
    if (!buf)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "fault: copying %s (%" PRIu64 " bytes)",
                                SHOWN(fv, path), sz);
    size_t got;
    int rc = read_range(f, 0, buf, (size_t)sz, &got, err);
    if (rc != MARBLE_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *size = got;
    return MARBLE_OK;
}

static int read_path(fault_vfs *fv, const char *path, unsigned char **out, size_t *size,
                     marble_error *err)
{
    marble_file *f;
    MARBLE_RETURN_NOT_OK(popen_file(fv, path, MARBLE_OPEN_READ, &f, err));
    int rc = read_file(fv, f, path, out, size, err);
    f->methods->close(f, NULL);
    return rc;
}

static void mkdirs(fault_vfs *fv, const char *path)
{
    char *buf = strdup(path);
    if (!buf) return;
    for (char *s = strchr(buf + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        fv->parent->mkdir(fv->parent, buf, NULL);
        *s = '/';
    }
    free(buf);
}

static int write_path(fault_vfs *fv, const char *path, const unsigned char *data, size_t n,
                      marble_error *err)
{
    const int flags = MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE;
    marble_file *f;
    int rc = popen_file(fv, path, flags, &f, err);
    if (rc == MARBLE_ERR_NOT_FOUND) {
        mkdirs(fv, path);
        rc = popen_file(fv, path, flags, &f, err);
    }
    if (rc != MARBLE_OK) return rc;
    if (n) rc = f->methods->write(f, 0, data, n, err);
    if (rc == MARBLE_OK) rc = f->methods->sync(f, MARBLE_SYNC_FULL, err);
    int crc = f->methods->close(f, rc == MARBLE_OK ? err : NULL);
    return rc != MARBLE_OK ? rc : crc;
}

static int rename_path(fault_vfs *fv, const char *from, const char *to, marble_error *err)
{
    int rc = fv->parent->rename(fv->parent, from, to, err);
    if (rc == MARBLE_ERR_NOT_FOUND) {
        mkdirs(fv, to);
        rc = fv->parent->rename(fv->parent, from, to, err);
    }
    return rc;
}

/* ---- records ----------------------------------------------------------------------------- */

static fnode *node_find(fault_vfs *fv, const char *path)
{
    for (fnode *n = fv->nodes; n; n = n->next)
        if (n->path && !strcmp(n->path, path)) return n;
    return NULL;
}

static fnode *node_alloc(const char *path, uint64_t synced_size)
{
    fnode *n = calloc(1, sizeof *n);
    if (!n || !(n->path = strdup(path))) {
        free(n);
        return NULL;
    }
    n->synced_size = synced_size;
    return n;
}

static void node_link(fault_vfs *fv, fnode *n)
{
    n->prev = NULL;
    n->next = fv->nodes;
    if (fv->nodes) fv->nodes->prev = n;
    fv->nodes = n;
}

static void undo_clear(fnode *n)
{
    for (size_t i = 0; i < n->nundo; i++)
        free(n->undo[i].old);
    n->nundo = 0;
}

static void saved_clear(fnode *n)
{
    free(n->saved);
    n->saved = NULL;
    n->saved_size = 0;
    n->has_saved = 0;
}

static void reader_close(fnode *n)
{
    if (n->reader) n->reader->methods->close(n->reader, NULL);
    n->reader = NULL;
}

/* Frees an unlinked (never listed) node. */
static void node_destroy(fnode *n)
{
    if (!n) return;
    undo_clear(n);
    free(n->undo);
    saved_clear(n);
    reader_close(n);
    free(n->path);
    free(n);
}

static void node_free(fault_vfs *fv, fnode *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        fv->nodes = n->next;
    if (n->next) n->next->prev = n->prev;
    node_destroy(n);
}

static int node_referenced(const fault_vfs *fv, const fnode *n)
{
    for (const dent *d = fv->dents; d; d = d->next)
        if (d->durable == n) return 1;
    return 0;
}

static void node_maybe_free(fault_vfs *fv, fnode *n)
{
    if (n && n->nopen == 0 && (!n->path || (!n->dirty && !n->failed_sync)) &&
        !node_referenced(fv, n))
        node_free(fv, n);
}

static void nodes_gc(fault_vfs *fv)
{
    for (fnode *n = fv->nodes, *next; n; n = next) {
        next = n->next;
        node_maybe_free(fv, n);
    }
}

static int undo_reserve(fault_vfs *fv, fnode *n, marble_error *err)
{
    if (n->nundo < n->cap_undo) return MARBLE_OK;
    size_t cap = n->cap_undo ? n->cap_undo * 2 : 8;
    undo_rec *u = realloc(n->undo, cap * sizeof *u);
    if (!u)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "fault: undo log of %s",
                                SHOWN(fv, n->path));
    n->undo = u;
    n->cap_undo = cap;
    return MARBLE_OK;
}

/* Saves the bytes of [off, end) within [0, synced_size) of a linked node before they change. */
static int node_save_range(fault_vfs *fv, fnode *n, uint64_t off, uint64_t end, marble_error *err)
{
    if (!n->path || off >= n->synced_size) return MARBLE_OK;
    if (end > n->synced_size) end = n->synced_size;
    if (!n->reader)
        MARBLE_RETURN_NOT_OK(popen_file(fv, n->path, MARBLE_OPEN_READ, &n->reader, err));
    uint64_t cur;
    MARBLE_RETURN_NOT_OK(n->reader->methods->size(n->reader, &cur, err));
    if (end > cur) end = cur;
    if (off >= end) return MARBLE_OK;
    if (end - off > SIZE_MAX)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "fault: undo log of %s: range too large",
                                SHOWN(fv, n->path));
    MARBLE_RETURN_NOT_OK(undo_reserve(fv, n, err));
    size_t len = (size_t)(end - off), got;
    unsigned char *old = malloc(len);
    if (!old)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "fault: undo log of %s (%zu bytes)",
                                SHOWN(fv, n->path), len);
    int rc = read_range(n->reader, off, old, len, &got, err);
    if (rc != MARBLE_OK) {
        free(old);
        return rc;
    }
    n->undo[n->nundo++] = (undo_rec){off, got, old};
    return MARBLE_OK;
}

/* Turns a current content (buf, *size, capacity *cap) into the synced one. */
static int apply_undo(fnode *n, unsigned char **buf, size_t *size, size_t *cap)
{
    size_t need = n->synced_size > SIZE_MAX ? SIZE_MAX : (size_t)n->synced_size;
    for (size_t i = n->nundo; i-- > 0;) {
        size_t end = (size_t)n->undo[i].off + n->undo[i].len;
        if (end > need) need = end;
    }
    if (need > *cap) {
        unsigned char *nb = realloc(*buf, need);
        if (!nb) return MARBLE_ERR_NO_MEMORY;
        *buf = nb;
        *cap = need;
    }
    if (need > *size) memset(*buf + *size, 0, need - *size);
    for (size_t i = n->nundo; i-- > 0;)
        memcpy(*buf + n->undo[i].off, n->undo[i].old, n->undo[i].len);
    *size = (size_t)n->synced_size;
    return MARBLE_OK;
}

/* Keeps the synced content of a linked node in memory (before it is unlinked). */
static int node_capture(fault_vfs *fv, fnode *n, marble_error *err)
{
    unsigned char *buf;
    size_t size;
    MARBLE_RETURN_NOT_OK(read_path(fv, n->path, &buf, &size, err));
    size_t cap = size + 1;
    if (apply_undo(n, &buf, &size, &cap) != MARBLE_OK) {
        free(buf);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "fault: copying %s", SHOWN(fv, n->path));
    }
    saved_clear(n);
    n->saved = buf;
    n->saved_size = size;
    n->has_saved = 1;
    return MARBLE_OK;
}

/* Marks a node unlinked after its name went away in the parent. */
static void node_unlinked(fault_vfs *fv, fnode *n)
{
    free(n->path);
    n->path = NULL;
    undo_clear(n);
    if (!n->has_saved || n->nopen == 0) reader_close(n);
    node_maybe_free(fv, n);
}

static dent *dent_find(fault_vfs *fv, const char *path)
{
    for (dent *d = fv->dents; d; d = d->next)
        if (!strcmp(d->path, path)) return d;
    return NULL;
}

static dent *dent_alloc(const char *path)
{
    dent *d = calloc(1, sizeof *d);
    if (!d || !(d->path = strdup(path))) {
        free(d);
        return NULL;
    }
    return d;
}

static void dent_link(fault_vfs *fv, dent *d, fnode *durable)
{
    d->durable = durable;
    d->prev = NULL;
    d->next = fv->dents;
    if (fv->dents) fv->dents->prev = d;
    fv->dents = d;
}

static void dent_free(fault_vfs *fv, dent *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        fv->dents = d->next;
    if (d->next) d->next->prev = d->prev;
    free(d->path);
    free(d);
}

/* A record for `path` to link once the change is made; NULL if `path` already has one. */
static int dent_prepare(fault_vfs *fv, const char *path, dent **out, marble_error *err)
{
    *out = NULL;
    if (dent_find(fv, path)) return MARBLE_OK;
    if (!(*out = dent_alloc(path)))
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "fault: recording %s", path);
    return MARBLE_OK;
}

static void dent_discard(dent *d)
{
    if (d) {
        free(d->path);
        free(d);
    }
}

/* The node for the file at `path`: tracked, or created as durable if untracked; NULL if there is
 * no file there (a node left at a name that is gone is unlinked). */
static int node_at(fault_vfs *fv, const char *path, const marble_stat *st, int exists, fnode **out,
                   marble_error *err)
{
    *out = node_find(fv, path);
    if (!exists || st->is_dir) {
        if (*out) node_unlinked(fv, *out);
        *out = NULL;
        return MARBLE_OK;
    }
    if (*out) return MARBLE_OK;
    fnode *n = node_alloc(path, st->size);
    if (!n) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "fault: recording %s", path);
    node_link(fv, n);
    *out = n;
    return MARBLE_OK;
}

/* Rewrites a path under directory `from` to be under `to`; NULL if it is not under it. */
static char *rebase(const char *path, const char *from, const char *to)
{
    size_t fl = strlen(from);
    if (strncmp(path, from, fl) != 0 || path[fl] != '/') return NULL;
    size_t len = strlen(to) + strlen(path + fl) + 1;
    char *s = malloc(len);
    if (s) snprintf(s, len, "%s%s", to, path + fl);
    return s;
}

static void rebase_all(fault_vfs *fv, const char *from, const char *to)
{
    for (fnode *n = fv->nodes; n; n = n->next) {
        char *p = n->path ? rebase(n->path, from, to) : NULL;
        if (p) {
            free(n->path);
            n->path = p;
        }
    }
    for (dent *d = fv->dents; d; d = d->next) {
        char *p = rebase(d->path, from, to);
        if (p) {
            free(d->path);
            d->path = p;
        }
    }
}

/* ---- files ------------------------------------------------------------------------------- */

static int ff_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                   marble_error *err)
{
    fault_file *ff = (fault_file *)f;
    *nread = 0;
    MARBLE_RETURN_NOT_OK(alive(ff, "read", err));
    MARBLE_RETURN_NOT_OK(inject(ff->fv, MARBLE_FAULT_READ, "read", ff->path, err));
    return ff->inner->methods->read(ff->inner, off, buf, n, nread, err);
}

/* Write, append and truncate: saves the synced bytes about to change, then calls the parent. */
typedef enum { OP_WRITE, OP_APPEND, OP_TRUNCATE } mut_op;

static int mutate(fault_file *ff, mut_op op, uint64_t off, const void *buf, size_t n,
                  marble_error *err)
{
    static const char *names[] = {"write", "append", "truncate"};
    fault_vfs *fv = ff->fv;
    MARBLE_RETURN_NOT_OK(alive(ff, names[op], err));
    MARBLE_RETURN_NOT_OK(inject(fv, MARBLE_FAULT_WRITE, names[op], ff->path, err));
    marble_file *in = ff->inner;
    pthread_mutex_lock(&fv->mu);
    int rc = alive(ff, names[op], err);
    fnode *node = (ff->base.flags & MARBLE_OPEN_WRITE) ? ff->node : NULL;
    if (rc == MARBLE_OK && node) {
        if (op == OP_WRITE && !(ff->base.flags & MARBLE_OPEN_APPEND))
            rc = node_save_range(fv, node, off, off + n, err);
        else if (op == OP_TRUNCATE)
            rc = node_save_range(fv, node, off, UINT64_MAX, err);
        node->dirty = 1;
    }
    if (rc == MARBLE_OK) {
        if (op == OP_WRITE)
            rc = in->methods->write(in, off, buf, n, err);
        else if (op == OP_APPEND)
            rc = in->methods->append(in, buf, n, err);
        else
            rc = in->methods->truncate(in, off, err);
    }
    if (rc == MARBLE_OK && node && op == OP_TRUNCATE && off == 0) node->failed_sync = 0;
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int ff_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    return mutate((fault_file *)f, OP_WRITE, off, buf, n, err);
}

static int ff_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    return mutate((fault_file *)f, OP_APPEND, 0, buf, n, err);
}

static int ff_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    return mutate((fault_file *)f, OP_TRUNCATE, size, NULL, 0, err);
}

static int ff_size(marble_file *f, uint64_t *out, marble_error *err)
{
    fault_file *ff = (fault_file *)f;
    MARBLE_RETURN_NOT_OK(alive(ff, "size", err));
    return ff->inner->methods->size(ff->inner, out, err);
}

static int ff_sync(marble_file *f, int flags, marble_error *err)
{
    fault_file *ff = (fault_file *)f;
    fault_vfs *fv = ff->fv;
    MARBLE_RETURN_NOT_OK(alive(ff, "sync", err));
    uint64_t call;
    int e = decide(fv, MARBLE_FAULT_SYNC, &call);
    marble_file *in = ff->inner;
    pthread_mutex_lock(&fv->mu);
    int rc = alive(ff, "sync", err);
    fnode *node = ff->node;
    if (rc == MARBLE_OK && e) {
        rc = injected(fv, e, "sync", call, ff->path, err);
        if (node && !node->failed_sync) {
            node->failed_sync = call;
            node->failed_errno = e;
        }
    } else if (rc == MARBLE_OK && node && node->failed_sync) {
        rc = marble_error_set(err, MARBLE_ERR_IO,
                              "sync of %s failed earlier (injected %s on sync #%" PRIu64
                              "); its unsynced writes may be lost: rewrite the file (open it "
                              "with TRUNCATE) or replace it",
                              SHOWN(fv, ff->path), errno_name(node->failed_errno),
                              node->failed_sync);
    }
    uint64_t size = 0;
    int have_size = 0;
    if (rc == MARBLE_OK && node) have_size = in->methods->size(in, &size, NULL) == MARBLE_OK;
    if (rc == MARBLE_OK) rc = in->methods->sync(in, flags, err);
    if (rc == MARBLE_OK && node && node->path && have_size) {
        node->synced_size = size;
        undo_clear(node);
        node->dirty = 0;
    } else if (rc == MARBLE_OK && node && !node->path && node->has_saved && node->reader) {
        unsigned char *buf;
        size_t n;
        if (read_file(fv, node->reader, ff->path, &buf, &n, NULL) == MARBLE_OK) {
            saved_clear(node);
            node->saved = buf;
            node->saved_size = n;
            node->has_saved = 1;
        }
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int ff_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                  marble_error *err)
{
    fault_file *ff = (fault_file *)f;
    MARBLE_RETURN_NOT_OK(alive(ff, "map", err));
    MARBLE_RETURN_NOT_OK(inject(ff->fv, MARBLE_FAULT_READ, "map", ff->path, err));
    return ff->inner->methods->map(ff->inner, off, len, addr, cookie, err);
}

static void ff_unmap(marble_file *f, const void *addr, size_t len, void *cookie)
{
    fault_file *ff = (fault_file *)f;
    ff->inner->methods->unmap(ff->inner, addr, len, cookie);
}

static int ff_close(marble_file *f, marble_error *err)
{
    fault_file *ff = (fault_file *)f;
    fault_vfs *fv = ff->fv;
    pthread_mutex_lock(&fv->mu);
    if (ff->node && ff->epoch == atomic_load_explicit(&fv->epoch, memory_order_relaxed)) {
        if (--ff->node->nopen == 0) reader_close(ff->node);
        node_maybe_free(fv, ff->node);
    }
    pthread_mutex_unlock(&fv->mu);
    int rc = ff->inner->methods->close(ff->inner, err);
    free(ff->path);
    free(ff);
    return rc;
}

static int ff_control(marble_file *f, int op, void *arg)
{
    fault_file *ff = (fault_file *)f;
    if (op == MARBLE_FCNTL_GET_INNER) {
        if (!arg) return MARBLE_ERR_INVALID_ARGUMENT;
        *(marble_file **)arg = ff->inner;
        return MARBLE_OK;
    }
    if (op == MARBLE_FCNTL_GET_FD) return MARBLE_ERR_UNSUPPORTED;
    return ff->inner->methods->control(ff->inner, op, arg);
}

static const marble_file_methods fault_file_methods = {
    .version = MARBLE_FILE_METHODS_VERSION,
    .read = ff_read,
    .write = ff_write,
    .append = ff_append,
    .size = ff_size,
    .sync = ff_sync,
    .truncate = ff_truncate,
    .map = ff_map,
    .unmap = ff_unmap,
    .close = ff_close,
    .control = ff_control,
};

/* ---- the backend ------------------------------------------------------------------------- */

static fault_vfs *fv_of(marble_vfs *v)
{
    return v && v->open == fault_open ? (fault_vfs *)v->data : NULL;
}

static int fault_open(marble_vfs *v, const char *path, int flags, marble_file **out,
                      marble_error *err)
{
    fault_vfs *fv = v->data;
    *out = NULL;
    MARBLE_RETURN_NOT_OK(inject(fv, MARBLE_FAULT_OPEN, "open", path, err));
    fault_file *ff = calloc(1, sizeof *ff);
    char *np = path_norm(path);
    if (ff) ff->path = strdup(path);
    if (!ff || !ff->path || !np) {
        if (ff) free(ff->path);
        free(ff);
        free(np);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "open %s", SHOWN(fv, path));
    }
    const int writing = (flags & MARBLE_OPEN_WRITE) != 0;
    const int truncating = writing && (flags & MARBLE_OPEN_TRUNCATE);
    int rc = MARBLE_OK, exists = 0;
    fnode *node = NULL, *fresh = NULL;
    dent *d = NULL;
    pthread_mutex_lock(&fv->mu);
    marble_stat st;
    rc = pstat(fv, np, &exists, &st, err);
    const int known = rc == MARBLE_OK;
    if (!known && !writing) rc = MARBLE_OK;
    if (known) rc = node_at(fv, np, &st, exists, &node, err);
    if (rc == MARBLE_OK && node && truncating) rc = node_save_range(fv, node, 0, UINT64_MAX, err);
    if (rc == MARBLE_OK && known && !exists && (flags & MARBLE_OPEN_CREATE)) {
        rc = dent_prepare(fv, np, &d, err);
        if (rc == MARBLE_OK && writing && !(fresh = node_alloc(np, 0)))
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "open %s", SHOWN(fv, path));
    }
    if (rc == MARBLE_OK) rc = popen_file(fv, path, flags, &ff->inner, err);
    if (rc == MARBLE_OK) {
        if (d) dent_link(fv, d, NULL);
        d = NULL;
        if (fresh) {
            node_link(fv, fresh);
            node = fresh;
            fresh = NULL;
        }
        if (node) {
            node->nopen++;
            if (exists && truncating) {
                node->dirty = 1;
                node->failed_sync = 0;
            }
            ff->node = node;
        }
    } else if (node) {
        if (node->nopen == 0) reader_close(node);
        node_maybe_free(fv, node);
    }
    dent_discard(d);
    node_destroy(fresh);
    ff->epoch = atomic_load_explicit(&fv->epoch, memory_order_relaxed);
    pthread_mutex_unlock(&fv->mu);
    free(np);
    if (rc != MARBLE_OK) {
        free(ff->path);
        free(ff);
        return rc;
    }
    ff->fv = fv;
    ff->base.methods = &fault_file_methods;
    ff->base.vfs = v;
    ff->base.caps = ff->inner->caps & ~(uint32_t)MARBLE_CAP_FD;
    ff->base.flags = flags;
    *out = &ff->base;
    return MARBLE_OK;
}

static int fault_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    fault_vfs *fv = v->data;
    return fv->parent->stat(fv->parent, path, out, err);
}

static int fault_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud,
                      marble_error *err)
{
    fault_vfs *fv = v->data;
    return fv->parent->list(fv->parent, dir, fn, ud, err);
}

static int fault_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    fault_vfs *fv = v->data;
    return fv->parent->mkdir(fv->parent, path, err);
}

/* Before `node` loses its name: keeps its synced content if a record will name it, and a reader
 * for refreshing that copy while handles stay open on it. */
static int before_unlink(fault_vfs *fv, fnode *node, int named, marble_error *err)
{
    if (!named && !node_referenced(fv, node)) return MARBLE_OK;
    MARBLE_RETURN_NOT_OK(node_capture(fv, node, err));
    if (node->nopen && !node->reader)
        return popen_file(fv, node->path, MARBLE_OPEN_READ, &node->reader, err);
    return MARBLE_OK;
}

static int fault_remove(marble_vfs *v, const char *path, marble_error *err)
{
    fault_vfs *fv = v->data;
    MARBLE_RETURN_NOT_OK(inject(fv, MARBLE_FAULT_REMOVE, "remove", path, err));
    char *np = path_norm(path);
    if (!np) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "remove %s", SHOWN(fv, path));
    pthread_mutex_lock(&fv->mu);
    marble_stat st;
    int exists;
    fnode *node = NULL;
    dent *d = NULL;
    int rc = pstat(fv, np, &exists, &st, err);
    if (rc == MARBLE_OK) rc = node_at(fv, np, &st, exists, &node, err);
    if (rc == MARBLE_OK && node) rc = dent_prepare(fv, np, &d, err);
    if (rc == MARBLE_OK && node) rc = before_unlink(fv, node, d != NULL, err);
    if (rc == MARBLE_OK) rc = fv->parent->remove(fv->parent, path, err);
    if (rc == MARBLE_OK && node) {
        if (d) dent_link(fv, d, node);
        d = NULL;
        node_unlinked(fv, node);
    } else if (node) {
        saved_clear(node);
        node_maybe_free(fv, node);
    }
    dent_discard(d);
    pthread_mutex_unlock(&fv->mu);
    free(np);
    return rc;
}

static int fault_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    fault_vfs *fv = v->data;
    MARBLE_RETURN_NOT_OK(inject(fv, MARBLE_FAULT_RENAME, "rename", from, err));
    char *nfrom = path_norm(from), *newpath = path_norm(to);
    if (!nfrom || !newpath) {
        free(nfrom);
        free(newpath);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "rename %s", SHOWN(fv, from));
    }
    const char *nto = newpath;
    pthread_mutex_lock(&fv->mu);
    marble_stat fst, tst;
    int fexists, texists;
    fnode *nf = NULL, *nt = NULL;
    dent *dfrom = NULL, *dto = NULL;
    int rc = pstat(fv, nfrom, &fexists, &fst, err);
    if (rc == MARBLE_OK) rc = pstat(fv, nto, &texists, &tst, err);
    if (rc == MARBLE_OK && fexists && fst.is_dir) {
        rc = fv->parent->rename(fv->parent, from, to, err);
        if (rc == MARBLE_OK) rebase_all(fv, nfrom, nto);
        pthread_mutex_unlock(&fv->mu);
        free(nfrom);
        free(newpath);
        return rc;
    }
    if (rc == MARBLE_OK && fexists && !(texists && tst.is_dir) && strcmp(nfrom, nto) != 0) {
        rc = node_at(fv, nfrom, &fst, fexists, &nf, err);
        if (rc == MARBLE_OK) rc = node_at(fv, nto, &tst, texists, &nt, err);
        if (nt == nf) nt = NULL;
        if (rc == MARBLE_OK) rc = dent_prepare(fv, nfrom, &dfrom, err);
        if (rc == MARBLE_OK) rc = dent_prepare(fv, nto, &dto, err);
        if (rc == MARBLE_OK && nt) rc = before_unlink(fv, nt, dto != NULL, err);
    }
    if (rc == MARBLE_OK) rc = fv->parent->rename(fv->parent, from, to, err);
    if (rc == MARBLE_OK && nf) {
        if (dfrom) dent_link(fv, dfrom, nf);
        if (dto) dent_link(fv, dto, nt);
        dfrom = dto = NULL;
        if (nt) node_unlinked(fv, nt);
        free(nf->path);
        nf->path = newpath;
        newpath = NULL;
        node_maybe_free(fv, nf);
    } else {
        if (nt) {
            saved_clear(nt);
            node_maybe_free(fv, nt);
        }
        if (nf) node_maybe_free(fv, nf);
    }
    dent_discard(dfrom);
    dent_discard(dto);
    pthread_mutex_unlock(&fv->mu);
    free(nfrom);
    free(newpath);
    return rc;
}

static int fault_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    fault_vfs *fv = v->data;
    MARBLE_RETURN_NOT_OK(inject(fv, MARBLE_FAULT_SYNC, "sync_dir", path, err));
    char *want = path_norm(path);
    if (!want) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sync_dir %s", SHOWN(fv, path));
    pthread_mutex_lock(&fv->mu);
    int rc = fv->parent->sync_dir(fv->parent, path, err);
    if (rc == MARBLE_OK) {
        char dir[4096];
        for (dent *d = fv->dents, *next; d; d = next) {
            next = d->next;
            marble__vfs_parent(d->path, dir, sizeof dir);
            if (!strcmp(dir, want)) dent_free(fv, d);
        }
        nodes_gc(fv);
    }
    pthread_mutex_unlock(&fv->mu);
    free(want);
    return rc;
}

static int fault_control(marble_vfs *v, int op, void *arg)
{
    fault_vfs *fv = v->data;
    return fv->parent->control(fv->parent, op, arg);
}

static void fault_destroy(marble_vfs *v)
{
    fault_vfs *fv = v->data;
    while (fv->dents)
        dent_free(fv, fv->dents);
    while (fv->nodes)
        node_free(fv, fv->nodes);
    pthread_mutex_destroy(&fv->mu);
    pthread_mutex_destroy(&fv->inj_mu);
    free(fv->name);
    free(fv);
}

int marble_vfs_fault_create(marble_vfs *parent, marble_vfs **out, marble_error *err)
{
    if (!out || !parent)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_fault_create: %s is NULL", !out ? "out" : "parent");
    *out = NULL;
    fault_vfs *fv = calloc(1, sizeof *fv);
    size_t len = strlen(parent->name ? parent->name : "?") + 8;
    char *name = malloc(len);
    if (!fv || !name) {
        free(fv);
        free(name);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                "allocating the fault-injection backend");
    }
    snprintf(name, len, "fault(%s)", parent->name ? parent->name : "?");
    pthread_mutex_init(&fv->mu, NULL);
    pthread_mutex_init(&fv->inj_mu, NULL);
    atomic_init(&fv->epoch, 0);
    fv->parent = parent;
    fv->name = name;
    marble_vfs *v = &fv->base;
    v->version = MARBLE_VFS_VERSION;
    v->name = name;
    v->caps = parent->caps & ~(uint32_t)MARBLE_CAP_FD;
    v->data = fv;
    v->open = fault_open;
    v->stat = fault_stat;
    v->list = fault_list;
    v->mkdir = fault_mkdir;
    v->remove = fault_remove;
    v->rename = fault_rename;
    v->sync_dir = fault_sync_dir;
    v->control = fault_control;
    v->destroy = fault_destroy;
    *out = v;
    return MARBLE_OK;
}

/* ---- arming and counting ----------------------------------------------------------------- */

void marble_fault_fail_nth(marble_vfs *fault, uint32_t ops, uint64_t n, int os_errno)
{
    fault_vfs *fv = fv_of(fault);
    if (!fv) return;
    pthread_mutex_lock(&fv->inj_mu);
    fv->nth_ops = ops & MARBLE_FAULT_ALL;
    fv->nth_n = fv->nth_ops ? n : 0;
    fv->nth_seen = 0;
    fv->nth_errno = os_errno ? os_errno : EIO;
    pthread_mutex_unlock(&fv->inj_mu);
}

void marble_fault_fail_random(marble_vfs *fault, uint32_t ops, double p, uint64_t seed,
                              int os_errno)
{
    fault_vfs *fv = fv_of(fault);
    if (!fv) return;
    pthread_mutex_lock(&fv->inj_mu);
    fv->rnd_ops = ops & MARBLE_FAULT_ALL;
    fv->rnd_p = p > 0 && fv->rnd_ops ? p : 0;
    fv->rnd_state = seed;
    fv->rnd_errno = os_errno ? os_errno : EIO;
    pthread_mutex_unlock(&fv->inj_mu);
}

uint64_t marble_fault_count(marble_vfs *fault, marble_fault_op op)
{
    fault_vfs *fv = fv_of(fault);
    if (!fv) return 0;
    uint64_t sum = 0;
    pthread_mutex_lock(&fv->inj_mu);
    for (int i = 0; i < NKINDS; i++)
        if ((uint32_t)op & (1u << i)) sum += fv->counts[i];
    pthread_mutex_unlock(&fv->inj_mu);
    return sum;
}

/* ---- the power cut ----------------------------------------------------------------------- */

static void keep_first(int *first, marble_error *err, int rc, const marble_error *e)
{
    if (rc != MARBLE_OK && *first == MARBLE_OK) {
        *first = rc;
        if (err) *err = *e;
    }
}

/* Puts a linked node's content back to its last sync, in place where the parent can truncate. */
static int restore_data(fault_vfs *fv, fnode *n, marble_error *err)
{
    marble_file *f;
    int rc = popen_file(fv, n->path, MARBLE_OPEN_READ | MARBLE_OPEN_WRITE, &f, err);
    if (rc != MARBLE_OK) return rc == MARBLE_ERR_NOT_FOUND ? MARBLE_OK : rc;
    if (!(f->caps & MARBLE_CAP_TRUNCATE) || !(f->caps & MARBLE_CAP_RANDOM_WRITE)) {
        unsigned char *buf;
        size_t size;
        rc = read_file(fv, f, n->path, &buf, &size, err);
        f->methods->close(f, NULL);
        if (rc != MARBLE_OK) return rc;
        size_t cap = size + 1;
        rc = apply_undo(n, &buf, &size, &cap) == MARBLE_OK
                 ? write_path(fv, n->path, buf, size, err)
                 : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "fault: restoring %s",
                                    SHOWN(fv, n->path));
        free(buf);
        return rc;
    }
    for (size_t i = n->nundo; rc == MARBLE_OK && i-- > 0;)
        rc = f->methods->write(f, n->undo[i].off, n->undo[i].old, n->undo[i].len, err);
    if (rc == MARBLE_OK) rc = f->methods->truncate(f, n->synced_size, err);
    if (rc == MARBLE_OK) rc = f->methods->sync(f, MARBLE_SYNC_FULL, err);
    int crc = f->methods->close(f, rc == MARBLE_OK ? err : NULL);
    return rc != MARBLE_OK ? rc : crc;
}

typedef struct fix {
    dent *d;
    fnode *cur;
    int present;
} fix;

static int restore_names(fault_vfs *fv, marble_error *err)
{
    size_t nd = 0, k = 0;
    for (dent *d = fv->dents; d; d = d->next)
        nd++;
    if (!nd) return MARBLE_OK;
    fix *fx = calloc(nd, sizeof *fx);
    if (!fx) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "fault: crash");
    int first = MARBLE_OK;
    marble_error e;
    for (dent *d = fv->dents; d; d = d->next) {
        fnode *cur = node_find(fv, d->path);
        int present = cur != NULL;
        marble_stat st;
        if (!cur && pstat(fv, d->path, &present, &st, &e) != MARBLE_OK) present = 1;
        if (d->durable ? cur == d->durable : !present) continue;
        fx[k++] = (fix){d, cur, present};
    }
    for (size_t i = 0; i < k; i++) {
        if (!fx[i].present) continue;
        if (!fx[i].cur) {
            keep_first(&first, err, fv->parent->remove(fv->parent, fx[i].d->path, &e), &e);
            continue;
        }
        size_t len = strlen(fx[i].d->path) + 40;
        char *tmp = malloc(len);
        if (!tmp) {
            keep_first(&first, err, marble_error_set(&e, MARBLE_ERR_NO_MEMORY, "fault: crash"), &e);
            continue;
        }
        snprintf(tmp, len, "%s.fault-crash-%" PRIu64, fx[i].d->path, ++fv->tmp_seq);
        int rc = fv->parent->rename(fv->parent, fx[i].d->path, tmp, &e);
        keep_first(&first, err, rc, &e);
        if (rc == MARBLE_OK) {
            free(fx[i].cur->path);
            fx[i].cur->path = tmp;
            fx[i].cur->in_tmp = 1;
        } else {
            free(tmp);
        }
    }
    for (size_t i = 0; i < k; i++) {
        fnode *want = fx[i].d->durable;
        const char *path = fx[i].d->path;
        if (!want) continue;
        int rc;
        if (want->path && want->in_tmp) {
            rc = rename_path(fv, want->path, path, &e);
            char *p = rc == MARBLE_OK ? strdup(path) : NULL;
            if (p) {
                free(want->path);
                want->path = p;
                want->in_tmp = 0;
            }
        } else if (want->path) {
            unsigned char *buf;
            size_t size;
            rc = read_path(fv, want->path, &buf, &size, &e);
            if (rc == MARBLE_OK) {
                rc = write_path(fv, path, buf, size, &e);
                free(buf);
            }
        } else {
            rc = write_path(fv, path, want->saved, want->saved_size, &e);
        }
        keep_first(&first, err, rc, &e);
    }
    for (fnode *n = fv->nodes; n; n = n->next)
        if (n->in_tmp) keep_first(&first, err, fv->parent->remove(fv->parent, n->path, &e), &e);
    free(fx);
    return first;
}

int marble_fault_crash(marble_vfs *fault, marble_error *err)
{
    fault_vfs *fv = fv_of(fault);
    if (!fv)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_fault_crash: not a fault-injection backend");
    pthread_mutex_lock(&fv->mu);
    int first = MARBLE_OK;
    marble_error e;
    for (fnode *n = fv->nodes; n; n = n->next)
        reader_close(n);
    for (fnode *n = fv->nodes; n; n = n->next)
        if (n->path && n->dirty) keep_first(&first, err, restore_data(fv, n, &e), &e);
    keep_first(&first, err, restore_names(fv, &e), &e);
    while (fv->dents)
        dent_free(fv, fv->dents);
    while (fv->nodes)
        node_free(fv, fv->nodes);
    atomic_fetch_add_explicit(&fv->epoch, 1, memory_order_relaxed);
    pthread_mutex_unlock(&fv->mu);
    return first;
}
