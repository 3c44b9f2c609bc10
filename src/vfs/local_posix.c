/*
 * The local backend on POSIX: pread/pwrite with EINTR and short transfers handled, O_DIRECT,
 * fdatasync/fsync, durable creates (the parent directory is synced after a file is created),
 * read-only mmap, directory listing. 64-bit offsets throughout (files over 4 GiB).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "marble/vfs.h"
#include "vfs/vfs_internal.h"

typedef struct local_file {
    marble_file base;
    int fd;
    int direct;
    char path[];
} local_file;

static const marble_file_methods local_methods;

static int check_off(marble_error *err, const char *op, const char *path, uint64_t off, size_t n)
{
    if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%s %s: offset %llu + %zu bytes is out of range", op, path,
                                (unsigned long long)off, n);
    return MARBLE_OK;
}

static int check_direct(local_file *lf, const char *op, uint64_t off, const void *buf, size_t n,
                        marble_error *err)
{
    if (!lf->direct) return MARBLE_OK;
    if (off % MARBLE_DIRECT_ALIGN || n % MARBLE_DIRECT_ALIGN ||
        (uintptr_t)buf % MARBLE_DIRECT_ALIGN)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%s %s: direct I/O needs offset, size and buffer aligned to %d "
                                "(offset %llu, size %zu, buffer %p)",
                                op, lf->path, MARBLE_DIRECT_ALIGN, (unsigned long long)off, n, buf);
    return MARBLE_OK;
}

static int local_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                      marble_error *err)
{
    local_file *lf = (local_file *)f;
    *nread = 0;
    MARBLE_RETURN_NOT_OK(check_off(err, "read", lf->path, off, n));
    MARBLE_RETURN_NOT_OK(check_direct(lf, "read", off, buf, n, err));
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done > (size_t)1 << 30 ? (size_t)1 << 30 : n - done;
        ssize_t r = pread(lf->fd, (char *)buf + done, chunk, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            *nread = done;
            return marble__vfs_os_error(err, errno, "read", lf->path);
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *nread = done;
    return MARBLE_OK;
}

static int write_all_at(local_file *lf, int use_offset, uint64_t off, const void *buf, size_t n,
                        marble_error *err)
{
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done > (size_t)1 << 30 ? (size_t)1 << 30 : n - done;
        ssize_t w = use_offset
                        ? pwrite(lf->fd, (const char *)buf + done, chunk, (off_t)(off + done))
                        : write(lf->fd, (const char *)buf + done, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return marble__vfs_os_error(err, errno, "write", lf->path);
        }
        if (w == 0) return marble_error_set(err, MARBLE_ERR_IO, "write %s: no progress", lf->path);
        done += (size_t)w;
    }
    return MARBLE_OK;
}

static int local_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    local_file *lf = (local_file *)f;
    MARBLE_RETURN_NOT_OK(check_off(err, "write", lf->path, off, n));
    MARBLE_RETURN_NOT_OK(check_direct(lf, "write", off, buf, n, err));
    return write_all_at(lf, 1, off, buf, n, err);
}

static int local_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    local_file *lf = (local_file *)f;
    if (f->flags & MARBLE_OPEN_APPEND) return write_all_at(lf, 0, 0, buf, n, err);
    struct stat st;
    if (fstat(lf->fd, &st) != 0) return marble__vfs_os_error(err, errno, "append to", lf->path);
    return local_write(f, (uint64_t)st.st_size, buf, n, err);
}

static int local_size(marble_file *f, uint64_t *out, marble_error *err)
{
    local_file *lf = (local_file *)f;
    struct stat st;
    if (fstat(lf->fd, &st) != 0) return marble__vfs_os_error(err, errno, "stat", lf->path);
    *out = (uint64_t)st.st_size;
    return MARBLE_OK;
}

static int local_sync(marble_file *f, int flags, marble_error *err)
{
    local_file *lf = (local_file *)f;
    int rc;
    while ((rc = flags == MARBLE_SYNC_DATA ? fdatasync(lf->fd) : fsync(lf->fd)) != 0 &&
           errno == EINTR) {
    }
    if (rc != 0) return marble__vfs_os_error(err, errno, "sync", lf->path);
    return MARBLE_OK;
}

static int local_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    local_file *lf = (local_file *)f;
    MARBLE_RETURN_NOT_OK(check_off(err, "truncate", lf->path, size, 0));
    while (ftruncate(lf->fd, (off_t)size) != 0)
        if (errno != EINTR) return marble__vfs_os_error(err, errno, "truncate", lf->path);
    return MARBLE_OK;
}

static int local_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                     marble_error *err)
{
    local_file *lf = (local_file *)f;
    MARBLE_RETURN_NOT_OK(check_off(err, "map", lf->path, off, len));
    long page = sysconf(_SC_PAGESIZE);
    uint64_t start = off - off % (uint64_t)page;
    size_t delta = (size_t)(off - start);
    void *p = mmap(NULL, len + delta, PROT_READ, MAP_SHARED, lf->fd, (off_t)start);
    if (p == MAP_FAILED) return marble__vfs_os_error(err, errno, "map", lf->path);
    *addr = (const char *)p + delta;
    *cookie = p;
    return MARBLE_OK;
}

static void local_unmap(marble_file *f, const void *addr, size_t len, void *cookie)
{
    (void)f;
    size_t delta = (size_t)((const char *)addr - (const char *)cookie);
    munmap(cookie, len + delta);
}

static int local_close(marble_file *f, marble_error *err)
{
    local_file *lf = (local_file *)f;
    int rc = MARBLE_OK;
    /* Linux releases the descriptor even when close fails; never retry it. */
    if (close(lf->fd) != 0) rc = marble__vfs_os_error(err, errno, "close", lf->path);
    free(lf);
    return rc;
}

static int local_control(marble_file *f, int op, void *arg)
{
    if (op == MARBLE_FCNTL_GET_FD && arg) {
        *(int *)arg = ((local_file *)f)->fd;
        return MARBLE_OK;
    }
    return MARBLE_ERR_UNSUPPORTED;
}

static const marble_file_methods local_methods = {MARBLE_FILE_METHODS_VERSION,
                                                  local_read,
                                                  local_write,
                                                  local_append,
                                                  local_size,
                                                  local_sync,
                                                  local_truncate,
                                                  local_map,
                                                  local_unmap,
                                                  local_close,
                                                  local_control};

static int sync_dir_path(const char *dir, marble_error *err)
{
    int fd;
    while ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        if (errno != EINTR) return marble__vfs_os_error(err, errno, "sync directory", dir);
    int rc = MARBLE_OK;
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = marble__vfs_os_error(err, errno, "sync directory", dir);
    close(fd);
    return rc;
}

static int local_open(marble_vfs *v, const char *path, int flags, marble_file **out,
                      marble_error *err)
{
    (void)v;
    int oflags = O_CLOEXEC;
    if ((flags & MARBLE_OPEN_READ) && (flags & MARBLE_OPEN_WRITE))
        oflags |= O_RDWR;
    else if (flags & MARBLE_OPEN_WRITE)
        oflags |= O_WRONLY;
    else
        oflags |= O_RDONLY;
    if (flags & MARBLE_OPEN_CREATE) oflags |= O_CREAT;
    if (flags & MARBLE_OPEN_TRUNCATE) oflags |= O_TRUNC;
    if (flags & MARBLE_OPEN_APPEND) oflags |= O_APPEND;
    if (flags & MARBLE_OPEN_EXCLUSIVE) oflags |= O_EXCL;
#ifdef O_DIRECT
    if (flags & MARBLE_OPEN_DIRECT) oflags |= O_DIRECT;
#endif
    struct stat st;
    /* Only a create needs to know whether the entry existed (to make a new one durable). */
    int existed = !(flags & MARBLE_OPEN_CREATE) || stat(path, &st) == 0;
    int fd;
    while ((fd = open(path, oflags, 0644)) < 0)
        if (errno != EINTR) return marble__vfs_os_error(err, errno, "open", path);
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "open %s: is a directory", path);
    }
    size_t n = strlen(path);
    local_file *lf = calloc(1, sizeof *lf + n + 1);
    if (!lf) {
        close(fd);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "open %s", path);
    }
    memcpy(lf->path, path, n + 1);
    lf->fd = fd;
    lf->direct = (flags & MARBLE_OPEN_DIRECT) != 0;
    lf->base.methods = &local_methods;
    lf->base.caps = MARBLE_CAP_RANDOM_READ | MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_APPEND |
                    MARBLE_CAP_MAP | MARBLE_CAP_SYNC | MARBLE_CAP_TRUNCATE | MARBLE_CAP_FD |
                    (lf->direct ? MARBLE_CAP_DIRECT : 0);
    lf->base.flags = flags;
    if (!existed && (flags & MARBLE_OPEN_CREATE)) {
        /* A durable create: the new directory entry survives a power cut once open returns. */
        char dir[PATH_MAX];
        marble__vfs_parent(path, dir, sizeof dir);
        int rc = sync_dir_path(dir, err);
        if (rc != MARBLE_OK) {
            local_close(&lf->base, NULL);
            return rc;
        }
    }
    *out = &lf->base;
    return MARBLE_OK;
}

static int local_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    (void)v;
    struct stat st;
    if (stat(path, &st) != 0) return marble__vfs_os_error(err, errno, "stat", path);
    out->size = (uint64_t)st.st_size;
    out->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    out->is_dir = S_ISDIR(st.st_mode);
    return MARBLE_OK;
}

static int local_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud,
                      marble_error *err)
{
    (void)v;
    DIR *d = opendir(dir);
    if (!d) return marble__vfs_os_error(err, errno, "list", dir);
    int dfd = dirfd(d);
    int rc = MARBLE_OK;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno) rc = marble__vfs_os_error(err, errno, "list", dir);
            break;
        }
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        int is_dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN) {
            struct stat st;
            is_dir = fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        }
        /* A symbolic link is listed as a file: glob's '**' does not follow links (no loops). */
        if (fn(ud, e->d_name, is_dir)) break;
    }
    closedir(d);
    return rc;
}

static int local_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    (void)v;
    if (mkdir(path, 0755) != 0) return marble__vfs_os_error(err, errno, "mkdir", path);
    return MARBLE_OK;
}

static int local_remove(marble_vfs *v, const char *path, marble_error *err)
{
    (void)v;
    struct stat st;
    if (lstat(path, &st) != 0) return marble__vfs_os_error(err, errno, "remove", path);
    if ((S_ISDIR(st.st_mode) ? rmdir(path) : unlink(path)) != 0)
        return marble__vfs_os_error(err, errno, "remove", path);
    return MARBLE_OK;
}

static int local_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    (void)v;
    if (rename(from, to) != 0) {
        char what[2 * PATH_MAX + 8];
        snprintf(what, sizeof what, "%s -> %s", from, to);
        return marble__vfs_os_error(err, errno, "rename", what);
    }
    return MARBLE_OK;
}

static int local_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    (void)v;
    return sync_dir_path(path, err);
}

static int local_vfs_control(marble_vfs *v, int op, void *arg)
{
    (void)v;
    (void)op;
    (void)arg;
    return MARBLE_ERR_UNSUPPORTED;
}

static void local_destroy(marble_vfs *v)
{
    free(v);
}

int marble_vfs_local_create(marble_vfs **out, marble_error *err)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_local_create: out is NULL");
    marble_vfs *v = calloc(1, sizeof *v);
    if (!v) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the local backend");
    v->version = MARBLE_VFS_VERSION;
    v->name = "local";
    v->caps = MARBLE_CAP_RANDOM_READ | MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_APPEND |
              MARBLE_CAP_MAP | MARBLE_CAP_ATOMIC_RENAME | MARBLE_CAP_SYNC | MARBLE_CAP_SYNC_DIR |
              MARBLE_CAP_DIRECT | MARBLE_CAP_LIST | MARBLE_CAP_TRUNCATE | MARBLE_CAP_FD;
    v->open = local_open;
    v->stat = local_stat;
    v->list = local_list;
    v->mkdir = local_mkdir;
    v->remove = local_remove;
    v->rename = local_rename;
    v->sync_dir = local_sync_dir;
    v->control = local_vfs_control;
    v->destroy = local_destroy;
    *out = v;
    return MARBLE_OK;
}
