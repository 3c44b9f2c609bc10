/*
 * The VFS registry and dispatch: URI routing by scheme, open-handle and mapping tracking with
 * leak reports, the marble_file_* dispatch functions (where counters live), glob, recursive
 * mkdir, durable rename, whole-file helpers and reference-counted mappings.
 *
 * Thread safety: fs->mu guards the backend table and the list of tracked records; counters are
 * relaxed atomics (statistics only). A record's reference count is atomic: the open handle holds
 * one reference and each mapping made from it another, so a handle closed while mapped is really
 * closed when the last mapping is released.
 */
#include "marble/vfs.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/base.h"
#include "marble/remote.h"
#include "vfs/vfs_internal.h"

#define MAX_BACKENDS 32

typedef struct fs_record {
    marble_fs *fs;
    marble_file *file;
    char *uri;
    const char *src_file;
    int src_line;
    _Atomic int refs; /* the handle (until closed) + one per live mapping */
    int handle_open;  /* under fs->mu */
    struct fs_record *prev, *next;
} fs_record;

struct marble_mapping {
    _Atomic int refs;
    const void *data;
    size_t size;
    int is_mapped;
    void *cookie;
    fs_record *rec; /* NULL for copies */
    void *owned;
    marble_fs *fs;
    char *what;
    struct marble_mapping *prev, *next; /* tracked in fs->maps */
};

struct marble_fs {
    pthread_mutex_t mu;
    struct {
        char scheme[32];
        marble_vfs *vfs;
    } backends[MAX_BACKENDS];
    int nbackends;
    fs_record *files;
    marble_mapping *maps;
    _Atomic uint64_t opens, closes, reads, writes, syncs, bytes_read, bytes_written, nmaps;
    _Atomic uint64_t open_files, open_mappings;
};

static inline void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ---- shared helpers (vfs_internal.h) ------------------------------------------------------- */

int marble__vfs_errno_code(int e)
{
    switch (e) {
    case ENOENT:
        return MARBLE_ERR_NOT_FOUND;
    case EEXIST:
        return MARBLE_ERR_EXISTS;
    case EACCES:
    case EPERM:
    case EROFS:
        return MARBLE_ERR_PERMISSION;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return MARBLE_ERR_NO_SPACE;
    case EISDIR:
    case ENOTDIR:
    case ENOTEMPTY:
    case EINVAL:
    case ENAMETOOLONG:
    case EXDEV:
        return MARBLE_ERR_INVALID_ARGUMENT;
    case ENOMEM:
        return MARBLE_ERR_NO_MEMORY;
    case EMFILE:
    case ENFILE:
        return MARBLE_ERR_LIMIT;
    default:
        return MARBLE_ERR_IO;
    }
}

int marble__vfs_os_error(marble_error *err, int os_errno, const char *op, const char *what)
{
    int code = marble__vfs_errno_code(os_errno);
    return marble_error_set(err, code, "%s %s: %s", op, what ? what : "", strerror(os_errno));
}

int marble__vfs_unsupported(marble_error *err, const char *what, const char *backend)
{
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "%s is not supported by the %s backend",
                            what, backend ? backend : "?");
}

/* ---- registry ------------------------------------------------------------------------------ */

static int scheme_ok(const char *s, size_t n)
{
    if (n == 0 || n >= sizeof(((marble_fs *)0)->backends[0].scheme)) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

int marble_fs_create(marble_fs **out, marble_error *err)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "marble_fs_create: out is NULL");
    *out = NULL;
    marble_fs *fs = calloc(1, sizeof *fs);
    if (!fs)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the file system registry");
    pthread_mutex_init(&fs->mu, NULL);
    marble_vfs *local = NULL, *mem = NULL;
    int rc = marble_vfs_local_create(&local, err);
    if (rc == MARBLE_OK) rc = marble_fs_register(fs, "file", local, err);
    if (rc == MARBLE_OK) rc = marble_vfs_mem_create(&mem, err);
    if (rc == MARBLE_OK) rc = marble_fs_register(fs, "mem", mem, err);
    marble_vfs *s3 = NULL;
    if (rc == MARBLE_OK) rc = marble_vfs_s3_create(NULL, &s3, err);
    if (rc == MARBLE_OK) rc = marble_fs_register(fs, "s3", s3, err);
    marble_vfs *http = NULL, *https = NULL;
    if (rc == MARBLE_OK) rc = marble_vfs_http_create(NULL, 0, &http, err);
    if (rc == MARBLE_OK) rc = marble_fs_register(fs, "http", http, err);
    if (rc == MARBLE_OK) rc = marble_vfs_http_create(NULL, 1, &https, err);
    if (rc == MARBLE_OK) rc = marble_fs_register(fs, "https", https, err);
    if (rc != MARBLE_OK) {
        marble_fs_destroy(fs, NULL);
        return rc;
    }
    *out = fs;
    return MARBLE_OK;
}

int marble_fs_register(marble_fs *fs, const char *scheme, marble_vfs *v, marble_error *err)
{
    if (!fs || !scheme || !v)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "marble_fs_register: %s is NULL",
                                !fs       ? "fs"
                                : !scheme ? "scheme"
                                          : "backend");
    if (!scheme_ok(scheme, strlen(scheme)))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_fs_register: invalid scheme \"%s\" (letters, digits, "
                                "'+', '-', '.'; at most 31)",
                                scheme);
    if (v->version < 1 || !v->open || !v->stat || !v->list || !v->mkdir || !v->remove ||
        !v->rename || !v->sync_dir || !v->control || !v->destroy)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_fs_register: backend for \"%s\" has a missing method or "
                                "version %d",
                                scheme, v->version);
    marble_vfs *old = NULL;
    pthread_mutex_lock(&fs->mu);
    int i;
    for (i = 0; i < fs->nbackends; i++)
        if (!strcmp(fs->backends[i].scheme, scheme)) break;
    if (i == fs->nbackends) {
        if (fs->nbackends == MAX_BACKENDS) {
            pthread_mutex_unlock(&fs->mu);
            return marble_error_set(err, MARBLE_ERR_LIMIT,
                                    "marble_fs_register: more than %d backends", MAX_BACKENDS);
        }
        fs->nbackends++;
        snprintf(fs->backends[i].scheme, sizeof fs->backends[i].scheme, "%s", scheme);
    } else {
        old = fs->backends[i].vfs;
    }
    fs->backends[i].vfs = v;
    pthread_mutex_unlock(&fs->mu);
    if (old && old != v) old->destroy(old);
    return MARBLE_OK;
}

static marble_vfs *lookup(marble_fs *fs, const char *scheme, size_t n)
{
    marble_vfs *v = NULL;
    pthread_mutex_lock(&fs->mu);
    for (int i = 0; i < fs->nbackends; i++)
        if (strlen(fs->backends[i].scheme) == n && !strncmp(fs->backends[i].scheme, scheme, n)) {
            v = fs->backends[i].vfs;
            break;
        }
    pthread_mutex_unlock(&fs->mu);
    return v;
}

marble_vfs *marble_fs_backend(marble_fs *fs, const char *scheme)
{
    return fs && scheme ? lookup(fs, scheme, strlen(scheme)) : NULL;
}

int marble_fs_resolve(marble_fs *fs, const char *uri, marble_vfs **vfs, const char **path,
                      marble_error *err)
{
    if (!fs || !uri)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "resolving a URI: %s is NULL",
                                !fs ? "fs" : "uri");
    if (!uri[0]) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "empty path");
    const char *sep = strstr(uri, "://");
    const char *scheme = "file", *rest = uri;
    size_t n = 4;
    if (sep && scheme_ok(uri, (size_t)(sep - uri))) {
        scheme = uri;
        n = (size_t)(sep - uri);
        rest = sep + 3;
    }
    marble_vfs *v = lookup(fs, scheme, n);
    if (!v) {
        char known[256] = "";
        pthread_mutex_lock(&fs->mu);
        for (int i = 0; i < fs->nbackends; i++) {
            size_t len = strlen(known);
            snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                     fs->backends[i].scheme);
        }
        pthread_mutex_unlock(&fs->mu);
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "unknown URI scheme \"%.*s\" in \"%s\" (registered: %s)", (int)n,
                                scheme, uri, known);
    }
    if (!rest[0] && strncmp(scheme, "mem", n) != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "empty path in \"%s\"", uri);
    if (vfs) *vfs = v;
    if (path) *path = rest;
    return MARBLE_OK;
}

/* Closes the file, then frees its record (close methods may still name the URI). */
static int close_record_file(fs_record *r, marble_error *err)
{
    marble_file *f = r->file;
    int rc = f->methods->close(f, err);
    free(r->uri);
    free(r);
    return rc;
}

static void record_unref(fs_record *r)
{
    /* Acq_rel: the last reference closes the file after every user is done with it. */
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        close_record_file(r, NULL);
}

int marble_fs_destroy(marble_fs *fs, marble_error *err)
{
    if (!fs) return MARBLE_OK;
    int leaked_files = 0, leaked_maps = 0;
    char first[200] = "";
    for (;;) {
        pthread_mutex_lock(&fs->mu);
        marble_mapping *m = fs->maps;
        pthread_mutex_unlock(&fs->mu);
        if (!m) break;
        const char *what = m->what ? m->what : "(unnamed)";
        marble_log(MARBLE_LOG_WARN, "vfs", "mapping still held at close: %s", what);
        if (!first[0]) snprintf(first, sizeof first, "mapping %s", what);
        leaked_maps++;
        atomic_store(&m->refs, 1);
        marble_mapping_release(m);
    }
    for (;;) {
        pthread_mutex_lock(&fs->mu);
        fs_record *r = fs->files;
        pthread_mutex_unlock(&fs->mu);
        if (!r) break;
        marble_log(MARBLE_LOG_WARN, "vfs", "file still open at close: %s (opened at %s:%d)", r->uri,
                   r->src_file, r->src_line);
        if (!first[0])
            snprintf(first, sizeof first, "%s opened at %s:%d", r->uri, r->src_file, r->src_line);
        leaked_files++;
        marble_file_close(r->file, NULL);
    }
    for (int i = 0; i < fs->nbackends; i++)
        fs->backends[i].vfs->destroy(fs->backends[i].vfs);
    pthread_mutex_destroy(&fs->mu);
    free(fs);
    if (leaked_files || leaked_maps)
        return marble_error_set(err, MARBLE_ERR_BUSY,
                                "file system closed with %d file(s) and %d mapping(s) still open; "
                                "closed them (first: %s)",
                                leaked_files, leaked_maps, first);
    return MARBLE_OK;
}

/* ---- open and path operations -------------------------------------------------------------- */

int marble_fs_open_at(marble_fs *fs, const char *uri, int flags, marble_file **out,
                      marble_error *err, const char *src_file, int src_line)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "opening %s: out is NULL",
                                uri ? uri : "(null)");
    *out = NULL;
    marble_vfs *v;
    const char *path;
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, uri, &v, &path, err));
    const int known = MARBLE_OPEN_READ | MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE |
                      MARBLE_OPEN_TRUNCATE | MARBLE_OPEN_APPEND | MARBLE_OPEN_EXCLUSIVE |
                      MARBLE_OPEN_DIRECT | MARBLE_OPEN_COMPRESSED;
    if (flags & ~known)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "opening %s: unknown flags 0x%x",
                                uri, (unsigned)(flags & ~known));
    if (!(flags & (MARBLE_OPEN_READ | MARBLE_OPEN_WRITE)))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "opening %s: neither READ nor WRITE requested", uri);
    if ((flags & (MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE | MARBLE_OPEN_APPEND)) &&
        !(flags & MARBLE_OPEN_WRITE))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "opening %s: CREATE, TRUNCATE and APPEND need WRITE", uri);
    if ((flags & MARBLE_OPEN_EXCLUSIVE) && !(flags & MARBLE_OPEN_CREATE))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "opening %s: EXCLUSIVE needs CREATE", uri);
    if ((flags & MARBLE_OPEN_DIRECT) && !(v->caps & MARBLE_CAP_DIRECT))
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "opening %s: the %s backend has no direct I/O", uri, v->name);
    marble_codec codec =
        (flags & MARBLE_OPEN_COMPRESSED) ? marble_codec_from_path(path) : MARBLE_CODEC_NONE;
    if (codec != MARBLE_CODEC_NONE && (flags & MARBLE_OPEN_READ) && (flags & MARBLE_OPEN_WRITE))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "opening %s: a compressed stream is read or written, not both",
                                uri);
    fs_record *r = calloc(1, sizeof *r);
    char *copy = strdup(uri);
    if (!r || !copy) {
        free(r);
        free(copy);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "opening %s", uri);
    }
    marble_file *f = NULL;
    int rc = v->open(v, path, flags & ~MARBLE_OPEN_COMPRESSED, &f, err);
    if (rc != MARBLE_OK) {
        free(r);
        free(copy);
        return rc;
    }
    f->vfs = v;
    f->flags = flags & ~MARBLE_OPEN_COMPRESSED;
    f->fs_record = NULL;
    if (codec != MARBLE_CODEC_NONE) {
        marble_file *outer = NULL;
        rc = marble_file_compress_wrap(f, codec, (flags & MARBLE_OPEN_WRITE) != 0, 0, &outer, err);
        if (rc != MARBLE_OK) {
            free(r);
            free(copy);
            return rc;
        }
        f = outer;
        f->flags = flags;
    }
    r->fs = fs;
    r->file = f;
    r->uri = copy;
    r->src_file = src_file ? src_file : "?";
    r->src_line = src_line;
    atomic_init(&r->refs, 1);
    r->handle_open = 1;
    f->fs_record = r;
    pthread_mutex_lock(&fs->mu);
    r->next = fs->files;
    if (fs->files) fs->files->prev = r;
    fs->files = r;
    pthread_mutex_unlock(&fs->mu);
    count(&fs->opens, 1);
    count(&fs->open_files, 1);
    *out = f;
    return MARBLE_OK;
}

int marble_fs_stat(marble_fs *fs, const char *uri, marble_stat *out, marble_error *err)
{
    marble_vfs *v;
    const char *path;
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, uri, &v, &path, err));
    marble_stat st;
    memset(&st, 0, sizeof st);
    int rc = v->stat(v, path, &st, err);
    if (rc == MARBLE_OK && out) *out = st;
    return rc;
}

int marble_fs_exists(marble_fs *fs, const char *uri, int *exists, marble_error *err)
{
    marble_error e;
    marble_vfs *v;
    const char *path;
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, uri, &v, &path, err));
    marble_stat st;
    int rc = v->stat(v, path, &st, &e);
    if (exists) *exists = rc == MARBLE_OK;
    /* A path under a regular file (ENOTDIR) does not exist either. */
    if (rc == MARBLE_OK || rc == MARBLE_ERR_NOT_FOUND || rc == MARBLE_ERR_INVALID_ARGUMENT)
        return MARBLE_OK;
    if (err) *err = e;
    return rc;
}

int marble_fs_list(marble_fs *fs, const char *dir_uri, marble_dirent_fn fn, void *ud,
                   marble_error *err)
{
    marble_vfs *v;
    const char *path;
    if (!fn)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "listing %s: callback is NULL",
                                dir_uri ? dir_uri : "(null)");
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, dir_uri, &v, &path, err));
    return v->list(v, path, fn, ud, err);
}

void marble__vfs_parent(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == path)
        snprintf(out, cap, "/");
    else
        snprintf(out, cap, "%.*s", (int)(slash - path), path);
}

int marble_fs_mkdir(marble_fs *fs, const char *uri, int recursive, marble_error *err)
{
    marble_vfs *v;
    const char *path;
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, uri, &v, &path, err));
    if (!recursive) return v->mkdir(v, path, err);
    size_t n = strlen(path);
    char *buf = malloc(n + 1);
    if (!buf) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "mkdir %s", uri);
    int rc = MARBLE_OK;
    for (size_t i = 1; i <= n && rc == MARBLE_OK; i++) {
        if (i < n && path[i] != '/') continue;
        if (path[i - 1] == '/') continue;
        memcpy(buf, path, i);
        buf[i] = '\0';
        marble_error e;
        rc = v->mkdir(v, buf, &e);
        if (rc == MARBLE_ERR_EXISTS) {
            marble_stat st;
            rc = v->stat(v, buf, &st, &e);
            if (rc == MARBLE_OK && !st.is_dir)
                rc = marble_error_set(&e, MARBLE_ERR_INVALID_ARGUMENT,
                                      "mkdir %s: %s exists and is not a directory", uri, buf);
        }
        if (rc != MARBLE_OK && err) *err = e;
    }
    free(buf);
    return rc;
}

int marble_fs_remove(marble_fs *fs, const char *uri, marble_error *err)
{
    marble_vfs *v;
    const char *path;
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, uri, &v, &path, err));
    return v->remove(v, path, err);
}

int marble_fs_sync_dir(marble_fs *fs, const char *dir_uri, marble_error *err)
{
    marble_vfs *v;
    const char *path;
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, dir_uri, &v, &path, err));
    count(&fs->syncs, 1);
    return v->sync_dir(v, path, err);
}

static int sync_parent(marble_vfs *v, const char *path, marble_error *err)
{
    if (!(v->caps & MARBLE_CAP_SYNC_DIR)) return MARBLE_OK;
    char dir[4096];
    marble__vfs_parent(path, dir, sizeof dir);
    return v->sync_dir(v, dir, err);
}

int marble_fs_rename(marble_fs *fs, const char *from, const char *to, int durable,
                     marble_error *err)
{
    marble_vfs *v1, *v2;
    const char *p1, *p2;
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, from, &v1, &p1, err));
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, to, &v2, &p2, err));
    if (v1 != v2)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "rename %s -> %s: the two URIs are on different backends (%s, %s)",
                                from, to, v1->name, v2->name);
    MARBLE_RETURN_NOT_OK(v1->rename(v1, p1, p2, err));
    if (!durable) return MARBLE_OK;
    count(&fs->syncs, 1);
    MARBLE_RETURN_NOT_OK(sync_parent(v1, p2, err));
    char d1[4096], d2[4096];
    marble__vfs_parent(p1, d1, sizeof d1);
    marble__vfs_parent(p2, d2, sizeof d2);
    if (strcmp(d1, d2) != 0) MARBLE_RETURN_NOT_OK(sync_parent(v1, p1, err));
    return MARBLE_OK;
}

int marble_fs_read_all(marble_fs *fs, const char *uri, void **data, size_t *size, marble_error *err)
{
    if (!data || !size)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "reading %s: output is NULL",
                                uri ? uri : "(null)");
    *data = NULL;
    *size = 0;
    marble_file *f;
    MARBLE_RETURN_NOT_OK(marble_fs_open(fs, uri, MARBLE_OPEN_READ, &f, err));
    size_t cap = 1 << 16, len = 0;
    uint64_t sz;
    if ((f->caps & MARBLE_CAP_RANDOM_READ) && f->methods->size(f, &sz, NULL) == MARBLE_OK) {
        if (sz > SIZE_MAX - 1) {
            marble_file_close(f, NULL);
            return marble_error_set(err, MARBLE_ERR_LIMIT, "reading %s: too large", uri);
        }
        cap = (size_t)sz + 1;
    }
    char *buf = malloc(cap);
    int rc = buf ? MARBLE_OK : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "reading %s", uri);
    while (rc == MARBLE_OK) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "reading %s", uri);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = 0;
        rc = marble_file_read(f, len, buf + len, cap - len, &got, err);
        if (rc != MARBLE_OK || got == 0) break;
        len += got;
    }
    int crc = marble_file_close(f, rc == MARBLE_OK ? err : NULL);
    if (rc == MARBLE_OK) rc = crc;
    if (rc != MARBLE_OK) {
        free(buf);
        return rc;
    }
    *data = buf;
    *size = len;
    return MARBLE_OK;
}

int marble_fs_write_all(marble_fs *fs, const char *uri, const void *data, size_t size, int durable,
                        marble_error *err)
{
    marble_file *f;
    MARBLE_RETURN_NOT_OK(marble_fs_open(
        fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE, &f, err));
    int rc = marble_file_write(f, 0, data, size, err);
    if (rc == MARBLE_OK) rc = marble_file_sync(f, MARBLE_SYNC_FULL, err);
    int crc = marble_file_close(f, rc == MARBLE_OK ? err : NULL);
    if (rc == MARBLE_OK) rc = crc;
    if (rc == MARBLE_OK && durable) {
        marble_vfs *v;
        const char *path;
        rc = marble_fs_resolve(fs, uri, &v, &path, err);
        if (rc == MARBLE_OK) rc = sync_parent(v, path, err);
    }
    return rc;
}

void marble_fs_get_stats(marble_fs *fs, marble_fs_stats *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!fs) return;
#define R(x) atomic_load_explicit(&fs->x, memory_order_relaxed)
    out->opens = R(opens);
    out->closes = R(closes);
    out->reads = R(reads);
    out->writes = R(writes);
    out->syncs = R(syncs);
    out->bytes_read = R(bytes_read);
    out->bytes_written = R(bytes_written);
    out->maps = R(nmaps);
    out->open_files = R(open_files);
    out->open_mappings = R(open_mappings);
#undef R
}

/* ---- glob ---------------------------------------------------------------------------------- */

typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec;

static int strvec_push(strvec *sv, const char *s)
{
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        char **nv = realloc(sv->v, cap * sizeof *nv);
        if (!nv) return MARBLE_ERR_NO_MEMORY;
        sv->v = nv;
        sv->cap = cap;
    }
    if (!(sv->v[sv->n] = strdup(s))) return MARBLE_ERR_NO_MEMORY;
    sv->n++;
    return MARBLE_OK;
}

static void strvec_free(strvec *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
}

typedef struct glob_ctx {
    marble_vfs *v;
    char **parts;
    int nparts;
    strvec out;
    int rc;
    marble_error *err;
} glob_ctx;

typedef struct list_acc {
    strvec names;
    strvec dirs; /* "1" / "0" per name, parallel */
} list_acc;

static int list_cb(void *ud, const char *name, int is_dir)
{
    list_acc *a = ud;
    if (strvec_push(&a->names, name) || strvec_push(&a->dirs, is_dir ? "1" : "0")) return 1;
    return 0;
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    if (a == 0 || (a == 1 && dir[0] == '.'))
        memcpy(s, name, b + 1);
    else if (dir[a - 1] == '/')
        snprintf(s, a + b + 2, "%s%s", dir, name);
    else
        snprintf(s, a + b + 2, "%s/%s", dir, name);
    return s;
}

static int has_magic(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* Matches parts[i..] under `dir` (a path the backend understands). */
static void glob_walk(glob_ctx *g, const char *dir, int i)
{
    if (g->rc != MARBLE_OK) return;
    if (i == g->nparts) {
        if (strvec_push(&g->out, dir)) g->rc = MARBLE_ERR_NO_MEMORY;
        return;
    }
    const char *part = g->parts[i];
    if (!has_magic(part)) {
        char *p = join(dir, part);
        if (!p) {
            g->rc = MARBLE_ERR_NO_MEMORY;
            return;
        }
        marble_stat st;
        if (g->v->stat(g->v, p, &st, NULL) == MARBLE_OK && (i + 1 == g->nparts || st.is_dir))
            glob_walk(g, p, i + 1);
        free(p);
        return;
    }
    list_acc acc;
    memset(&acc, 0, sizeof acc);
    marble_error e;
    int rc = g->v->list(g->v, dir[0] ? dir : ".", list_cb, &acc, &e);
    if (rc == MARBLE_OK) {
        int dstar = !strcmp(part, "**");
        if (dstar) glob_walk(g, dir, i + 1); /* zero directories */
        for (size_t k = 0; k < acc.names.n && g->rc == MARBLE_OK; k++) {
            const char *name = acc.names.v[k];
            int is_dir = acc.dirs.v[k][0] == '1';
            char *p = join(dir, name);
            if (!p) {
                g->rc = MARBLE_ERR_NO_MEMORY;
                break;
            }
            if (dstar) {
                if (is_dir) glob_walk(g, p, i); /* one more directory, still under ** */
            } else if (fnmatch(part, name, 0) == 0 && (i + 1 == g->nparts || is_dir)) {
                glob_walk(g, p, i + 1);
            }
            free(p);
        }
    } else if (rc != MARBLE_ERR_NOT_FOUND && rc != MARBLE_ERR_INVALID_ARGUMENT) {
        g->rc = rc;
        if (g->err) *g->err = e;
    }
    strvec_free(&acc.names);
    strvec_free(&acc.dirs);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int marble_fs_glob(marble_fs *fs, const char *pattern, int (*fn)(void *ud, const char *uri),
                   void *ud, marble_error *err)
{
    marble_vfs *v;
    const char *path;
    if (!fn) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "glob: callback is NULL");
    MARBLE_RETURN_NOT_OK(marble_fs_resolve(fs, pattern, &v, &path, err));
    size_t prefix_len = (size_t)(path - pattern);
    char *copy = strdup(path);
    char **parts = calloc(strlen(path) / 2 + 2, sizeof *parts);
    if (!copy || !parts) {
        free(copy);
        free(parts);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "glob %s", pattern);
    }
    int n = 0;
    const char *root = copy[0] == '/' ? "/" : "";
    for (char *save = NULL, *tok = strtok_r(copy, "/", &save); tok;
         tok = strtok_r(NULL, "/", &save))
        if (strcmp(tok, ".") != 0) parts[n++] = tok;
    /* Consecutive '**' are one. */
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!(i > 0 && !strcmp(parts[i], "**") && !strcmp(parts[m - 1], "**")))
            parts[m++] = parts[i];
    glob_ctx g = {v, parts, m, {NULL, 0, 0}, MARBLE_OK, err};
    glob_walk(&g, root, 0);
    int rc = g.rc;
    if (rc == MARBLE_ERR_NO_MEMORY) marble_error_set(err, rc, "glob %s: out of memory", pattern);
    if (rc == MARBLE_OK) {
        if (g.out.n) qsort(g.out.v, g.out.n, sizeof *g.out.v, cmp_str);
        for (size_t i = 0; i < g.out.n; i++) {
            if (i > 0 && !strcmp(g.out.v[i], g.out.v[i - 1])) continue;
            size_t len = prefix_len + strlen(g.out.v[i]) + 1;
            char *uri = malloc(len);
            if (!uri) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "glob %s", pattern);
                break;
            }
            snprintf(uri, len, "%.*s%s", (int)prefix_len, pattern, g.out.v[i]);
            int stop = fn(ud, uri);
            free(uri);
            if (stop) break;
        }
    }
    strvec_free(&g.out);
    free(parts);
    free(copy);
    return rc;
}

/* ---- file dispatch ------------------------------------------------------------------------- */

#define CHECK_FILE(f, op)                                                                          \
    do {                                                                                           \
        if (!(f)) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, op ": file is NULL");  \
    } while (0)

static marble_fs *fs_of(const marble_file *f)
{
    return f->fs_record ? ((fs_record *)f->fs_record)->fs : NULL;
}

const char *marble_file_uri(const marble_file *f)
{
    return f && f->fs_record ? ((fs_record *)f->fs_record)->uri : "(untracked file)";
}

int marble_file_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                     marble_error *err)
{
    CHECK_FILE(f, "read");
    size_t got = 0;
    if (nread) *nread = 0;
    if (n && !buf)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "read %s: buffer is NULL",
                                marble_file_uri(f));
    int rc = f->methods->read(f, off, buf, n, &got, err);
    marble_fs *fs = fs_of(f);
    if (fs) {
        count(&fs->reads, 1);
        count(&fs->bytes_read, got);
    }
    if (nread) *nread = got;
    return rc;
}

int marble_file_read_exact(marble_file *f, uint64_t off, void *buf, size_t n, marble_error *err)
{
    size_t done = 0;
    while (done < n) {
        size_t got = 0;
        MARBLE_RETURN_NOT_OK(
            marble_file_read(f, off + done, (char *)buf + done, n - done, &got, err));
        if (got == 0)
            return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                    "short read of %s: wanted %zu bytes at offset %llu, the file "
                                    "ends after %zu",
                                    marble_file_uri(f), n, (unsigned long long)off, done);
        done += got;
    }
    return MARBLE_OK;
}

int marble_file_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    CHECK_FILE(f, "write");
    if (n && !buf)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "write %s: buffer is NULL",
                                marble_file_uri(f));
    int rc = f->methods->write(f, off, buf, n, err);
    marble_fs *fs = fs_of(f);
    if (fs) {
        count(&fs->writes, 1);
        if (rc == MARBLE_OK) count(&fs->bytes_written, n);
    }
    return rc;
}

int marble_file_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    CHECK_FILE(f, "append");
    if (n && !buf)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "append %s: buffer is NULL",
                                marble_file_uri(f));
    int rc = f->methods->append(f, buf, n, err);
    marble_fs *fs = fs_of(f);
    if (fs) {
        count(&fs->writes, 1);
        if (rc == MARBLE_OK) count(&fs->bytes_written, n);
    }
    return rc;
}

int marble_file_size(marble_file *f, uint64_t *out, marble_error *err)
{
    CHECK_FILE(f, "size");
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "size %s: out is NULL",
                                marble_file_uri(f));
    return f->methods->size(f, out, err);
}

int marble_file_sync(marble_file *f, int flags, marble_error *err)
{
    CHECK_FILE(f, "sync");
    marble_fs *fs = fs_of(f);
    if (fs) count(&fs->syncs, 1);
    return f->methods->sync(f, flags, err);
}

int marble_file_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    CHECK_FILE(f, "truncate");
    marble_fs *fs = fs_of(f);
    if (fs) count(&fs->writes, 1);
    return f->methods->truncate(f, size, err);
}

int marble_file_control(marble_file *f, int op, void *arg)
{
    if (!f) return MARBLE_ERR_INVALID_ARGUMENT;
    return f->methods->control(f, op, arg);
}

int marble_file_close(marble_file *f, marble_error *err)
{
    if (!f) return MARBLE_OK;
    fs_record *r = f->fs_record;
    if (!r) return f->methods->close(f, err);
    marble_fs *fs = r->fs;
    pthread_mutex_lock(&fs->mu);
    if (!r->handle_open) {
        pthread_mutex_unlock(&fs->mu);
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "closing %s twice", r->uri);
    }
    r->handle_open = 0;
    if (r->prev)
        r->prev->next = r->next;
    else
        fs->files = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
    pthread_mutex_unlock(&fs->mu);
    count(&fs->closes, 1);
    atomic_fetch_sub_explicit(&fs->open_files, 1, memory_order_relaxed);
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        return close_record_file(r, err);
    return MARBLE_OK; /* closed for real when the last mapping goes */
}

/* ---- mappings ------------------------------------------------------------------------------ */

int marble_file_map(marble_file *f, uint64_t off, size_t len, marble_mapping **out,
                    marble_error *err)
{
    CHECK_FILE(f, "map");
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "map %s: out is NULL",
                                marble_file_uri(f));
    *out = NULL;
    /* Bounds first: a memory map past the end of a file faults (SIGBUS) when read. */
    uint64_t size = 0;
    int sized = (f->caps & MARBLE_CAP_RANDOM_READ) && f->methods->size(f, &size, NULL) == MARBLE_OK;
    if (len == 0) {
        if (!sized) MARBLE_RETURN_NOT_OK(marble_file_size(f, &size, err));
        if (off > size)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "map %s: offset %llu is past the end (%llu bytes)",
                                    marble_file_uri(f), (unsigned long long)off,
                                    (unsigned long long)size);
        if (size - off > SIZE_MAX)
            return marble_error_set(err, MARBLE_ERR_LIMIT, "map %s: too large", marble_file_uri(f));
        len = (size_t)(size - off);
    } else if (sized && (off > size || len > size - off)) {
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "short read of %s: mapping %zu bytes at offset %llu, but the file "
                                "has %llu",
                                marble_file_uri(f), len, (unsigned long long)off,
                                (unsigned long long)size);
    }
    marble_mapping *m = calloc(1, sizeof *m);
    if (!m) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "map %s", marble_file_uri(f));
    atomic_init(&m->refs, 1);
    m->size = len;
    fs_record *r = f->fs_record;
    int rc = MARBLE_ERR_UNSUPPORTED;
    if (len > 0 && r && (f->caps & MARBLE_CAP_MAP)) {
        const void *addr = NULL;
        marble_error e;
        rc = f->methods->map(f, off, len, &addr, &m->cookie, &e);
        if (rc == MARBLE_OK) {
            m->data = addr;
            m->is_mapped = 1;
            m->rec = r;
            atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
        } else if (rc != MARBLE_ERR_UNSUPPORTED) {
            if (err) *err = e;
            free(m);
            return rc;
        }
    }
    if (!m->is_mapped) {
        m->owned = malloc(len ? len : 1);
        if (!m->owned) {
            free(m);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "map %s: allocating %zu bytes",
                                    marble_file_uri(f), len);
        }
        rc = marble_file_read_exact(f, off, m->owned, len, err);
        if (rc != MARBLE_OK) {
            free(m->owned);
            free(m);
            return rc;
        }
        m->data = m->owned;
    }
    marble_fs *fs = fs_of(f);
    m->fs = fs;
    if (fs) {
        char what[512];
        snprintf(what, sizeof what, "%s [%llu, +%zu)", marble_file_uri(f), (unsigned long long)off,
                 len);
        m->what = strdup(what);
        pthread_mutex_lock(&fs->mu);
        m->next = fs->maps;
        if (fs->maps) fs->maps->prev = m;
        fs->maps = m;
        pthread_mutex_unlock(&fs->mu);
        count(&fs->nmaps, 1);
        count(&fs->open_mappings, 1);
    }
    *out = m;
    return MARBLE_OK;
}

const void *marble_mapping_data(const marble_mapping *m)
{
    return m ? m->data : NULL;
}

size_t marble_mapping_size(const marble_mapping *m)
{
    return m ? m->size : 0;
}

int marble_mapping_is_mapped(const marble_mapping *m)
{
    return m ? m->is_mapped : 0;
}

void marble_mapping_retain(marble_mapping *m)
{
    if (m) atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void marble_mapping_release(marble_mapping *m)
{
    /* Acq_rel: every reader of the bytes is done before they are unmapped. */
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
    marble_fs *fs = m->fs;
    if (fs) {
        pthread_mutex_lock(&fs->mu);
        if (m->prev)
            m->prev->next = m->next;
        else
            fs->maps = m->next;
        if (m->next) m->next->prev = m->prev;
        pthread_mutex_unlock(&fs->mu);
        atomic_fetch_sub_explicit(&fs->open_mappings, 1, memory_order_relaxed);
    }
    if (m->is_mapped) {
        m->rec->file->methods->unmap(m->rec->file, m->data, m->size, m->cookie);
        record_unref(m->rec);
    }
    free(m->owned);
    free(m->what);
    free(m);
}
