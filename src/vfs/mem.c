/*
 * The memory backend: a thread-safe tree of directories and files kept in process memory, with
 * POSIX-like semantics (parents must exist, a removed file stays readable through handles that
 * are still open, rename replaces a file atomically). For tests and for databases that need no
 * disk; sync is a no-op that always succeeds.
 *
 * Thread safety and lock order: mem_vfs.mu (the tree) -> mem_data.lock (one file's bytes).
 * Invariants: a node's `data` is set iff it is a file; mem_data.refs counts the node that names
 * it plus every open handle.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "marble/vfs.h"
#include "vfs/vfs_internal.h"

typedef struct mem_data {
    pthread_rwlock_t lock;
    unsigned char *buf;
    size_t size, cap;
    int64_t mtime_ns;
    _Atomic int refs;
} mem_data;

typedef struct mem_node {
    char *name;
    int is_dir;
    struct mem_node *parent, *child, *sibling;
    mem_data *data;
} mem_node;

typedef struct mem_vfs {
    marble_vfs base;
    pthread_mutex_t mu;
    mem_node root;
} mem_vfs;

typedef struct mem_file {
    marble_file base;
    mem_data *data;
    char path[];
} mem_file;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static mem_data *data_new(void)
{
    mem_data *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    pthread_rwlock_init(&d->lock, NULL);
    atomic_init(&d->refs, 1);
    d->mtime_ns = now_ns();
    return d;
}

static void data_unref(mem_data *d)
{
    /* Acq_rel: the last holder frees the bytes after every other holder is done. */
    if (d && atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) == 1) {
        pthread_rwlock_destroy(&d->lock);
        free(d->buf);
        free(d);
    }
}

static void node_free(mem_node *n)
{
    mem_node *c = n->child;
    while (c) {
        mem_node *next = c->sibling;
        node_free(c);
        c = next;
    }
    data_unref(n->data);
    free(n->name);
    free(n);
}

static mem_node *child_named(mem_node *dir, const char *name, size_t len)
{
    for (mem_node *c = dir->child; c; c = c->sibling)
        if (strlen(c->name) == len && !memcmp(c->name, name, len)) return c;
    return NULL;
}

/* Walks `path`. On success *parent is the directory that holds the last component, *last points
 * to that component (length *last_len; 0 for the root itself) and *node to its node or NULL.
 * Caller holds mu. */
static int walk(mem_vfs *m, const char *path, mem_node **parent, const char **last,
                size_t *last_len, mem_node **node, marble_error *err, const char *op)
{
    mem_node *dir = &m->root, *cur = &m->root;
    const char *p = path, *comp = NULL;
    size_t clen = 0;
    *parent = NULL;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p) break;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 1 && p[0] == '.') {
            p += len;
            continue;
        }
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "%s mem://%s: '..' is not allowed", op, path);
        if (!cur)
            return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "%s mem://%s: %s", op, path,
                                    strerror(ENOENT));
        if (!cur->is_dir)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s mem://%s: %s", op, path,
                                    strerror(ENOTDIR));
        dir = cur;
        comp = p;
        clen = len;
        cur = child_named(dir, p, len);
        p += len;
    }
    if (!comp) {
        *parent = NULL;
        *last = "";
        *last_len = 0;
        *node = &m->root;
        return MARBLE_OK;
    }
    *parent = dir;
    *last = comp;
    *last_len = clen;
    *node = cur;
    return MARBLE_OK;
}

static mem_node *node_add(mem_node *dir, const char *name, size_t len, int is_dir)
{
    mem_node *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->name = strndup(name, len);
    if (!n->name) {
        free(n);
        return NULL;
    }
    n->is_dir = is_dir;
    if (!is_dir && !(n->data = data_new())) {
        free(n->name);
        free(n);
        return NULL;
    }
    n->parent = dir;
    n->sibling = dir->child;
    dir->child = n;
    return n;
}

static void node_unlink(mem_node *n)
{
    mem_node **pp = &n->parent->child;
    while (*pp != n)
        pp = &(*pp)->sibling;
    *pp = n->sibling;
    n->sibling = NULL;
    n->parent = NULL;
}

/* ---- files --------------------------------------------------------------------------------- */

static int ensure_cap(mem_data *d, size_t need)
{
    if (need <= d->cap) return MARBLE_OK;
    size_t cap = d->cap ? d->cap : 4096;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    unsigned char *nb = realloc(d->buf, cap);
    if (!nb) return MARBLE_ERR_NO_MEMORY;
    d->buf = nb;
    d->cap = cap;
    return MARBLE_OK;
}

static int mem_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                    marble_error *err)
{
    (void)err;
    mem_data *d = ((mem_file *)f)->data;
    pthread_rwlock_rdlock(&d->lock);
    size_t got = 0;
    if (off < d->size) {
        got = d->size - (size_t)off < n ? d->size - (size_t)off : n;
        if (got) memcpy(buf, d->buf + off, got);
    }
    pthread_rwlock_unlock(&d->lock);
    *nread = got;
    return MARBLE_OK;
}

static int write_locked(mem_file *mf, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    mem_data *d = mf->data;
    if (off > SIZE_MAX - n)
        return marble_error_set(err, MARBLE_ERR_NO_SPACE, "write mem://%s: offset %llu too large",
                                mf->path, (unsigned long long)off);
    size_t end = (size_t)off + n;
    if (ensure_cap(d, end) != MARBLE_OK)
        return marble_error_set(err, MARBLE_ERR_NO_SPACE,
                                "write mem://%s: out of memory for %zu bytes", mf->path, end);
    if (off > d->size) memset(d->buf + d->size, 0, (size_t)off - d->size);
    if (n) memcpy(d->buf + off, buf, n);
    if (end > d->size) d->size = end;
    d->mtime_ns = now_ns();
    return MARBLE_OK;
}

static int mem_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    mem_file *mf = (mem_file *)f;
    pthread_rwlock_wrlock(&mf->data->lock);
    int rc = write_locked(mf, (f->flags & MARBLE_OPEN_APPEND) ? mf->data->size : off, buf, n, err);
    pthread_rwlock_unlock(&mf->data->lock);
    return rc;
}

static int mem_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    mem_file *mf = (mem_file *)f;
    pthread_rwlock_wrlock(&mf->data->lock);
    int rc = write_locked(mf, mf->data->size, buf, n, err);
    pthread_rwlock_unlock(&mf->data->lock);
    return rc;
}

static int mem_size(marble_file *f, uint64_t *out, marble_error *err)
{
    (void)err;
    mem_data *d = ((mem_file *)f)->data;
    pthread_rwlock_rdlock(&d->lock);
    *out = d->size;
    pthread_rwlock_unlock(&d->lock);
    return MARBLE_OK;
}

static int mem_sync(marble_file *f, int flags, marble_error *err)
{
    (void)f;
    (void)flags;
    (void)err;
    return MARBLE_OK;
}

static int mem_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    mem_file *mf = (mem_file *)f;
    mem_data *d = mf->data;
    if (size > SIZE_MAX)
        return marble_error_set(err, MARBLE_ERR_NO_SPACE, "truncate mem://%s: too large", mf->path);
    pthread_rwlock_wrlock(&d->lock);
    int rc = MARBLE_OK;
    if (size > d->size) {
        rc = ensure_cap(d, (size_t)size);
        if (rc == MARBLE_OK)
            memset(d->buf + d->size, 0, (size_t)size - d->size);
        else
            marble_error_set(err, MARBLE_ERR_NO_SPACE, "truncate mem://%s: out of memory",
                             mf->path);
    }
    if (rc == MARBLE_OK) {
        d->size = (size_t)size;
        d->mtime_ns = now_ns();
    }
    pthread_rwlock_unlock(&d->lock);
    return rc;
}

static int mem_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                   marble_error *err)
{
    (void)off;
    (void)len;
    (void)addr;
    (void)cookie;
    return marble__vfs_unsupported(err, "map", f->vfs ? f->vfs->name : "mem");
}

static void mem_unmap(marble_file *f, const void *addr, size_t len, void *cookie)
{
    (void)f;
    (void)addr;
    (void)len;
    (void)cookie;
}

static int mem_close(marble_file *f, marble_error *err)
{
    (void)err;
    mem_file *mf = (mem_file *)f;
    data_unref(mf->data);
    free(mf);
    return MARBLE_OK;
}

static int mem_file_control(marble_file *f, int op, void *arg)
{
    (void)f;
    (void)op;
    (void)arg;
    return MARBLE_ERR_UNSUPPORTED;
}

static const marble_file_methods mem_methods = {MARBLE_FILE_METHODS_VERSION,
                                                mem_read,
                                                mem_write,
                                                mem_append,
                                                mem_size,
                                                mem_sync,
                                                mem_truncate,
                                                mem_map,
                                                mem_unmap,
                                                mem_close,
                                                mem_file_control};

/* ---- the backend --------------------------------------------------------------------------- */

static int mem_open(marble_vfs *v, const char *path, int flags, marble_file **out,
                    marble_error *err)
{
    mem_vfs *m = (mem_vfs *)v;
    size_t plen = strlen(path);
    mem_file *mf = calloc(1, sizeof *mf + plen + 1);
    if (!mf) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "open mem://%s", path);
    memcpy(mf->path, path, plen + 1);
    pthread_mutex_lock(&m->mu);
    mem_node *parent, *node;
    const char *last;
    size_t len;
    int rc = walk(m, path, &parent, &last, &len, &node, err, "open");
    if (rc == MARBLE_OK && node && node->is_dir)
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "open mem://%s: is a directory",
                              path);
    if (rc == MARBLE_OK && node && (flags & MARBLE_OPEN_EXCLUSIVE))
        rc = marble_error_set(err, MARBLE_ERR_EXISTS, "open mem://%s: %s", path, strerror(EEXIST));
    if (rc == MARBLE_OK && !node) {
        if (!(flags & MARBLE_OPEN_CREATE))
            rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "open mem://%s: %s", path,
                                  strerror(ENOENT));
        else if (!(node = node_add(parent, last, len, 0)))
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "open mem://%s", path);
    }
    if (rc == MARBLE_OK) {
        mf->data = node->data;
        atomic_fetch_add_explicit(&mf->data->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&m->mu);
    if (rc != MARBLE_OK) {
        free(mf);
        return rc;
    }
    if (flags & MARBLE_OPEN_TRUNCATE) {
        pthread_rwlock_wrlock(&mf->data->lock);
        mf->data->size = 0;
        mf->data->mtime_ns = now_ns();
        pthread_rwlock_unlock(&mf->data->lock);
    }
    mf->base.methods = &mem_methods;
    mf->base.caps = MARBLE_CAP_RANDOM_READ | MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_APPEND |
                    MARBLE_CAP_SYNC | MARBLE_CAP_TRUNCATE;
    mf->base.flags = flags;
    *out = &mf->base;
    return MARBLE_OK;
}

static int mem_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    mem_vfs *m = (mem_vfs *)v;
    pthread_mutex_lock(&m->mu);
    mem_node *parent, *node;
    const char *last;
    size_t len;
    int rc = walk(m, path, &parent, &last, &len, &node, err, "stat");
    if (rc == MARBLE_OK && !node)
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "stat mem://%s: %s", path,
                              strerror(ENOENT));
    if (rc == MARBLE_OK) {
        memset(out, 0, sizeof *out);
        out->is_dir = node->is_dir;
        if (node->data) {
            pthread_rwlock_rdlock(&node->data->lock);
            out->size = node->data->size;
            out->mtime_ns = node->data->mtime_ns;
            pthread_rwlock_unlock(&node->data->lock);
        }
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static int mem_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud,
                    marble_error *err)
{
    mem_vfs *m = (mem_vfs *)v;
    pthread_mutex_lock(&m->mu);
    mem_node *parent, *node;
    const char *last;
    size_t len;
    int rc = walk(m, dir, &parent, &last, &len, &node, err, "list");
    if (rc == MARBLE_OK && !node)
        rc =
            marble_error_set(err, MARBLE_ERR_NOT_FOUND, "list mem://%s: %s", dir, strerror(ENOENT));
    if (rc == MARBLE_OK && !node->is_dir)
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "list mem://%s: %s", dir,
                              strerror(ENOTDIR));
    /* Copy the entries, then call back without the lock (the callback may use the backend). */
    size_t n = 0, i = 0;
    char **names = NULL;
    int *dirs = NULL;
    if (rc == MARBLE_OK) {
        for (mem_node *c = node->child; c; c = c->sibling)
            n++;
        names = calloc(n ? n : 1, sizeof *names);
        dirs = calloc(n ? n : 1, sizeof *dirs);
        if (!names || !dirs) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "list mem://%s", dir);
        for (mem_node *c = node->child; rc == MARBLE_OK && c; c = c->sibling, i++) {
            if (!(names[i] = strdup(c->name)))
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "list mem://%s", dir);
            dirs[i] = c->is_dir;
        }
    }
    pthread_mutex_unlock(&m->mu);
    for (size_t k = 0; rc == MARBLE_OK && k < n; k++)
        if (fn(ud, names[k], dirs[k])) break;
    for (size_t k = 0; names && k < n; k++)
        free(names[k]);
    free(names);
    free(dirs);
    return rc;
}

static int mem_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    mem_vfs *m = (mem_vfs *)v;
    pthread_mutex_lock(&m->mu);
    mem_node *parent, *node;
    const char *last;
    size_t len;
    int rc = walk(m, path, &parent, &last, &len, &node, err, "mkdir");
    if (rc == MARBLE_OK && node)
        rc = marble_error_set(err, MARBLE_ERR_EXISTS, "mkdir mem://%s: %s", path, strerror(EEXIST));
    if (rc == MARBLE_OK && !parent)
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "mkdir mem://%s: %s", path,
                              strerror(ENOENT));
    if (rc == MARBLE_OK && !node_add(parent, last, len, 1))
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "mkdir mem://%s", path);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static int mem_remove(marble_vfs *v, const char *path, marble_error *err)
{
    mem_vfs *m = (mem_vfs *)v;
    pthread_mutex_lock(&m->mu);
    mem_node *parent, *node;
    const char *last;
    size_t len;
    int rc = walk(m, path, &parent, &last, &len, &node, err, "remove");
    if (rc == MARBLE_OK && !node)
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "remove mem://%s: %s", path,
                              strerror(ENOENT));
    if (rc == MARBLE_OK && !parent)
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "remove mem://%s: cannot remove the root", path);
    if (rc == MARBLE_OK && node->is_dir && node->child)
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "remove mem://%s: %s", path,
                              strerror(ENOTEMPTY));
    if (rc == MARBLE_OK) {
        node_unlink(node);
        node_free(node);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static int mem_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    mem_vfs *m = (mem_vfs *)v;
    pthread_mutex_lock(&m->mu);
    mem_node *fparent, *fnode, *tparent, *tnode;
    const char *flast, *tlast;
    size_t flen, tlen;
    int rc = walk(m, from, &fparent, &flast, &flen, &fnode, err, "rename");
    if (rc == MARBLE_OK) rc = walk(m, to, &tparent, &tlast, &tlen, &tnode, err, "rename");
    if (rc == MARBLE_OK && !fnode)
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "rename mem://%s -> mem://%s: %s", from,
                              to, strerror(ENOENT));
    if (rc == MARBLE_OK && (!fparent || !tparent))
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "rename mem://%s -> mem://%s: the root cannot be renamed", from, to);
    if (rc == MARBLE_OK && fnode->is_dir)
        for (mem_node *a = tparent; a; a = a->parent)
            if (a == fnode) {
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "rename mem://%s -> mem://%s: into itself", from, to);
                break;
            }
    if (rc == MARBLE_OK && tnode && tnode != fnode) {
        if (tnode->is_dir != fnode->is_dir)
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "rename mem://%s -> mem://%s: %s", from, to,
                                  strerror(tnode->is_dir ? EISDIR : ENOTDIR));
        else if (tnode->is_dir && tnode->child)
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "rename mem://%s -> mem://%s: %s", from, to, strerror(ENOTEMPTY));
    }
    char *name = NULL;
    if (rc == MARBLE_OK && tnode != fnode && !(name = strndup(tlast, tlen)))
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "rename mem://%s", from);
    if (rc == MARBLE_OK && tnode != fnode) {
        if (tnode) {
            node_unlink(tnode);
            node_free(tnode);
        }
        node_unlink(fnode);
        free(fnode->name);
        fnode->name = name;
        fnode->parent = tparent;
        fnode->sibling = tparent->child;
        tparent->child = fnode;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static int mem_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    marble_stat st;
    MARBLE_RETURN_NOT_OK(mem_stat(v, path, &st, err));
    if (!st.is_dir)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "sync directory mem://%s: %s",
                                path, strerror(ENOTDIR));
    return MARBLE_OK;
}

static int mem_control(marble_vfs *v, int op, void *arg)
{
    (void)v;
    (void)op;
    (void)arg;
    return MARBLE_ERR_UNSUPPORTED;
}

static void mem_destroy(marble_vfs *v)
{
    mem_vfs *m = (mem_vfs *)v;
    mem_node *c = m->root.child;
    while (c) {
        mem_node *next = c->sibling;
        node_free(c);
        c = next;
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int marble_vfs_mem_create(marble_vfs **out, marble_error *err)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_mem_create: out is NULL");
    mem_vfs *m = calloc(1, sizeof *m);
    if (!m) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the memory backend");
    pthread_mutex_init(&m->mu, NULL);
    m->root.is_dir = 1;
    marble_vfs *v = &m->base;
    v->version = MARBLE_VFS_VERSION;
    v->name = "mem";
    v->caps = MARBLE_CAP_RANDOM_READ | MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_APPEND |
              MARBLE_CAP_ATOMIC_RENAME | MARBLE_CAP_SYNC | MARBLE_CAP_SYNC_DIR | MARBLE_CAP_LIST |
              MARBLE_CAP_TRUNCATE;
    v->open = mem_open;
    v->stat = mem_stat;
    v->list = mem_list;
    v->mkdir = mem_mkdir;
    v->remove = mem_remove;
    v->rename = mem_rename;
    v->sync_dir = mem_sync_dir;
    v->control = mem_control;
    v->destroy = mem_destroy;
    *out = v;
    return MARBLE_OK;
}
