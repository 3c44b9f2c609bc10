/*
 * Marble's virtual file system.
 *
 * Every byte Marble reads or writes goes through a marble_fs: a registry that routes a URI to a
 * backend by its scheme (bare paths and file:// to the local POSIX backend, mem:// to the
 * in-memory backend; more can be registered), tracks every open handle and mapping, and is the one
 * place where calls are dispatched, counted and (in tests) failed on purpose.
 *
 * A backend is a struct of function pointers (marble_vfs), and each open file is a struct whose
 * first member points to its methods (marble_file / marble_file_methods), as in SQLite's
 * sqlite3_vfs and sqlite3_io_methods. Wrappers are backends or files around another one: the
 * compression streams, the buffered reader/writer, the fault-injection backend. Capability bits
 * say what a backend or file can do, so callers adapt instead of failing late. Both tables only
 * ever grow at the end; `version` says how long they are.
 *
 * URIs: "/abs/path", "rel/path" and "file:///abs/path" go to the backend registered as "file";
 * "mem://dir/name" to "mem" (directories there behave as on disk: a file's parent must exist, see
 * marble_fs_mkdir); "SCHEME://rest" to the backend registered as SCHEME, which
 * receives "rest" (for file:// the absolute path) as its path. An empty URI, or an unknown
 * scheme, is MARBLE_ERR_INVALID_ARGUMENT with a message naming it (and, for a scheme, the
 * registered ones).
 *
 * Errors: every call returns MARBLE_OK or a code, with a message naming the URI and the operation
 * in `err`. Mapping of OS errors: ENOENT -> MARBLE_ERR_NOT_FOUND, EEXIST -> MARBLE_ERR_EXISTS,
 * EACCES/EPERM -> MARBLE_ERR_PERMISSION, ENOSPC/EDQUOT -> MARBLE_ERR_NO_SPACE, EISDIR/ENOTDIR ->
 * MARBLE_ERR_INVALID_ARGUMENT ("is a directory" / "not a directory"), others -> MARBLE_ERR_IO
 * with strerror text.
 *
 * Thread safety: a marble_fs and its backends are thread-safe. A marble_file may be used from
 * several threads for positional reads and writes (pread/pwrite semantics); append, truncate,
 * close and the stream files (compression, buffered) are for one thread at a time.
 */
#ifndef MARBLE_VFS_H
#define MARBLE_VFS_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"
#include "marble/sched.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct marble_fs marble_fs;
typedef struct marble_vfs marble_vfs;
typedef struct marble_file marble_file;
typedef struct marble_file_methods marble_file_methods;
typedef struct marble_mapping marble_mapping;

/* ---- flags and capabilities ------------------------------------------------------------------ */

enum marble_open_flags {
    MARBLE_OPEN_READ = 1 << 0,
    MARBLE_OPEN_WRITE = 1 << 1,
    MARBLE_OPEN_CREATE = 1 << 2,    /* create if missing */
    MARBLE_OPEN_TRUNCATE = 1 << 3,  /* empty an existing file */
    MARBLE_OPEN_APPEND = 1 << 4,    /* every write goes to the end */
    MARBLE_OPEN_EXCLUSIVE = 1 << 5, /* with CREATE: fail with MARBLE_ERR_EXISTS if it exists */
    MARBLE_OPEN_DIRECT = 1 << 6,    /* bypass the page cache (O_DIRECT); buffers, offsets and
                                       sizes must be multiples of MARBLE_DIRECT_ALIGN */
    MARBLE_OPEN_COMPRESSED = 1 << 7 /* by extension: .zst, .lz4, .gz become a stream of the
                                       uncompressed bytes (sequential access only) */
};

#define MARBLE_DIRECT_ALIGN 4096

enum marble_vfs_caps {
    MARBLE_CAP_RANDOM_READ = 1 << 0,   /* reads at any offset */
    MARBLE_CAP_RANDOM_WRITE = 1 << 1,  /* writes at any offset */
    MARBLE_CAP_APPEND = 1 << 2,        /* append */
    MARBLE_CAP_MAP = 1 << 3,           /* real memory maps (else map falls back to a read) */
    MARBLE_CAP_ATOMIC_RENAME = 1 << 4, /* rename replaces the target atomically */
    MARBLE_CAP_SYNC = 1 << 5,          /* sync makes data durable */
    MARBLE_CAP_SYNC_DIR = 1 << 6,      /* directory entries can be made durable */
    MARBLE_CAP_DIRECT = 1 << 7,        /* MARBLE_OPEN_DIRECT is honoured */
    MARBLE_CAP_LIST = 1 << 8,          /* list and glob */
    MARBLE_CAP_TRUNCATE = 1 << 9,      /* truncate */
    MARBLE_CAP_FD = 1 << 10            /* MARBLE_FCNTL_GET_FD returns an OS descriptor */
};

enum marble_sync_flags {
    MARBLE_SYNC_FULL = 0, /* data and metadata (fsync) */
    MARBLE_SYNC_DATA = 1  /* data and the size needed to read it back (fdatasync) */
};

/* control() operations on files; backends return MARBLE_ERR_UNSUPPORTED for unknown ones. */
enum marble_file_control {
    MARBLE_FCNTL_GET_FD = 1,   /* arg: int *; the OS file descriptor (MARBLE_CAP_FD) */
    MARBLE_FCNTL_GET_INNER = 2 /* arg: marble_file **; the wrapped file of a wrapper */
};

typedef struct marble_stat {
    uint64_t size;
    int64_t mtime_ns; /* modification time, ns since the Unix epoch; 0 if unknown */
    int is_dir;
} marble_stat;

/* ---- backends -------------------------------------------------------------------------------- */

#define MARBLE_VFS_VERSION 1

/* Called once per directory entry by list(); `name` is the entry's name (no slashes). Return
 * non-zero to stop early (list then returns MARBLE_OK). */
typedef int (*marble_dirent_fn)(void *ud, const char *name, int is_dir);

/* A backend. Paths given to it are what follows "SCHEME://" (or the bare path for "file").
 * Every function pointer must be set; a backend without an operation returns
 * MARBLE_ERR_UNSUPPORTED from it and leaves the capability bit clear. */
struct marble_vfs {
    int version;      /* MARBLE_VFS_VERSION */
    const char *name; /* for messages: "local", "mem", "fault(local)", ... */
    uint32_t caps;    /* MARBLE_CAP_* */
    void *data;       /* the backend's own state */
    int (*open)(marble_vfs *v, const char *path, int flags, marble_file **out, marble_error *err);
    int (*stat)(marble_vfs *v, const char *path, marble_stat *out, marble_error *err);
    int (*list)(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud, marble_error *err);
    /* One level; MARBLE_ERR_EXISTS if it exists (the dispatcher builds recursion on this). */
    int (*mkdir)(marble_vfs *v, const char *path, marble_error *err);
    /* A file or an empty directory. */
    int (*remove)(marble_vfs *v, const char *path, marble_error *err);
    /* Replaces `to` if it exists (atomically where MARBLE_CAP_ATOMIC_RENAME). */
    int (*rename)(marble_vfs *v, const char *from, const char *to, marble_error *err);
    /* Makes the directory's entries (creates, renames, removes) durable. */
    int (*sync_dir)(marble_vfs *v, const char *path, marble_error *err);
    int (*control)(marble_vfs *v, int op, void *arg);
    /* Frees the backend (called by marble_fs_destroy for registered backends). */
    void (*destroy)(marble_vfs *v);
};

#define MARBLE_FILE_METHODS_VERSION 1

/* An open file's methods. read returns fewer bytes than asked only at end of file; write writes
 * everything or fails. */
struct marble_file_methods {
    int version; /* MARBLE_FILE_METHODS_VERSION */
    int (*read)(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                marble_error *err);
    int (*write)(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err);
    int (*append)(marble_file *f, const void *buf, size_t n, marble_error *err);
    int (*size)(marble_file *f, uint64_t *out, marble_error *err);
    int (*sync)(marble_file *f, int flags, marble_error *err);
    int (*truncate)(marble_file *f, uint64_t size, marble_error *err);
    /* Read-only map of [off, off+len); *addr receives the start, *cookie whatever unmap needs.
     * MARBLE_ERR_UNSUPPORTED if the file cannot be mapped (the dispatcher then reads). */
    int (*map)(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
               marble_error *err);
    void (*unmap)(marble_file *f, const void *addr, size_t len, void *cookie);
    /* Releases the file and frees it, even when it returns an error (a failed final flush). */
    int (*close)(marble_file *f, marble_error *err);
    int (*control)(marble_file *f, int op, void *arg);
};

/* Backends allocate a larger struct that starts with this one. */
struct marble_file {
    const marble_file_methods *methods;
    marble_vfs *vfs; /* the backend that opened it */
    uint32_t caps;   /* MARBLE_CAP_* for this file (a stream lacks RANDOM_READ, for example) */
    int flags;       /* the MARBLE_OPEN_* flags it was opened with */
    void *fs_record; /* owned by the marble_fs that tracks it; backends leave it alone */
};

/* The built-in backends, for registering under other schemes or wrapping. The local backend
 * serves absolute and relative paths; a file it creates is durable when open returns (it syncs
 * the parent directory), which is more than POSIX promises: code that must be durable on every
 * backend syncs the directory itself (the fault backend models only the POSIX minimum). The
 * memory backend keeps files in a thread-safe tree. */
MARBLE_API int marble_vfs_local_create(marble_vfs **out, marble_error *err);
MARBLE_API int marble_vfs_mem_create(marble_vfs **out, marble_error *err);

/* ---- the registry ---------------------------------------------------------------------------- */

/* Creates a registry with "file" (local) and "mem" (memory) registered. */
MARBLE_API int marble_fs_create(marble_fs **out, marble_error *err);

/* Closes the registry. Handles and mappings still open are reported: each one is logged at warn
 * level with its URI and the source location that opened it, then closed; the call returns
 * MARBLE_ERR_BUSY with a message counting them and naming the first. Accepts NULL. */
MARBLE_API int marble_fs_destroy(marble_fs *fs, marble_error *err);

/* Registers `v` under `scheme` (letters, digits, '+', '-', '.'); the registry takes ownership and
 * destroys it in marble_fs_destroy. Replaces (and destroys) a backend already registered under
 * that scheme. */
MARBLE_API int marble_fs_register(marble_fs *fs, const char *scheme, marble_vfs *v,
                                  marble_error *err);
/* The backend registered under `scheme`, or NULL. */
MARBLE_API marble_vfs *marble_fs_backend(marble_fs *fs, const char *scheme);
/* Splits a URI into its backend and the path that backend sees (pointing into `uri`). */
MARBLE_API int marble_fs_resolve(marble_fs *fs, const char *uri, marble_vfs **vfs,
                                 const char **path, marble_error *err);

/* Opens `uri`. The macro records the caller's file and line for the leak report. */
MARBLE_API int marble_fs_open_at(marble_fs *fs, const char *uri, int flags, marble_file **out,
                                 marble_error *err, const char *src_file, int src_line);
#define marble_fs_open(fs, uri, flags, out, err)                                                   \
    marble_fs_open_at((fs), (uri), (flags), (out), (err), __FILE__, __LINE__)

MARBLE_API int marble_fs_stat(marble_fs *fs, const char *uri, marble_stat *out, marble_error *err);
/* 1 if `uri` exists, 0 if not; other errors are returned as codes (negative values never). */
MARBLE_API int marble_fs_exists(marble_fs *fs, const char *uri, int *exists, marble_error *err);
MARBLE_API int marble_fs_list(marble_fs *fs, const char *dir_uri, marble_dirent_fn fn, void *ud,
                              marble_error *err);
/* Matches `pattern` (a URI whose path may hold '*', '?', '[abc]', '[a-z]', '[!a]' within one
 * path component and '**' for any number of directories) and calls fn with each matching URI,
 * in sorted order. */
MARBLE_API int marble_fs_glob(marble_fs *fs, const char *pattern,
                              int (*fn)(void *ud, const char *uri), void *ud, marble_error *err);
/* Creates a directory; with `recursive`, its missing parents too, and an existing directory is
 * not an error. */
MARBLE_API int marble_fs_mkdir(marble_fs *fs, const char *uri, int recursive, marble_error *err);
MARBLE_API int marble_fs_remove(marble_fs *fs, const char *uri, marble_error *err);
/* Both URIs must resolve to the same backend. With `durable`, the parent directories of both are
 * synced afterwards (a rename that survives a power cut where the backend has SYNC_DIR). */
MARBLE_API int marble_fs_rename(marble_fs *fs, const char *from, const char *to, int durable,
                                marble_error *err);
MARBLE_API int marble_fs_sync_dir(marble_fs *fs, const char *dir_uri, marble_error *err);

/* Whole-file helpers. read_all allocates *data (free with free()); write_all creates or
 * truncates, writes, syncs and, with `durable`, syncs the parent directory. */
MARBLE_API int marble_fs_read_all(marble_fs *fs, const char *uri, void **data, size_t *size,
                                  marble_error *err);
MARBLE_API int marble_fs_write_all(marble_fs *fs, const char *uri, const void *data, size_t size,
                                   int durable, marble_error *err);

typedef struct marble_fs_stats {
    uint64_t opens, closes, reads, writes, syncs, bytes_read, bytes_written, maps;
    uint64_t open_files, open_mappings; /* now */
} marble_fs_stats;
MARBLE_API void marble_fs_get_stats(marble_fs *fs, marble_fs_stats *out);

/* ---- files (the dispatch functions; use these, not the methods) ------------------------------ */

MARBLE_API int marble_file_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                                marble_error *err);
/* Reads exactly n bytes or fails (MARBLE_ERR_CORRUPTION "short read" at end of file). */
MARBLE_API int marble_file_read_exact(marble_file *f, uint64_t off, void *buf, size_t n,
                                      marble_error *err);
MARBLE_API int marble_file_write(marble_file *f, uint64_t off, const void *buf, size_t n,
                                 marble_error *err);
MARBLE_API int marble_file_append(marble_file *f, const void *buf, size_t n, marble_error *err);
MARBLE_API int marble_file_size(marble_file *f, uint64_t *out, marble_error *err);
MARBLE_API int marble_file_sync(marble_file *f, int flags, marble_error *err);
MARBLE_API int marble_file_truncate(marble_file *f, uint64_t size, marble_error *err);
MARBLE_API int marble_file_control(marble_file *f, int op, void *arg);
/* Closes the handle (mappings made from it stay valid until released). Accepts NULL. */
MARBLE_API int marble_file_close(marble_file *f, marble_error *err);
/* The URI the file was opened with (valid until close). */
MARBLE_API const char *marble_file_uri(const marble_file *f);

/* ---- mappings -------------------------------------------------------------------------------- */

/* Maps [off, off+len) read-only (len 0: to the end of the file). Backends that cannot map read
 * the range into an owned buffer behind the same interface. A mapping is reference-counted
 * (starts at 1) and stays valid after its file is closed, until the last release. */
MARBLE_API int marble_file_map(marble_file *f, uint64_t off, size_t len, marble_mapping **out,
                               marble_error *err);
MARBLE_API const void *marble_mapping_data(const marble_mapping *m);
MARBLE_API size_t marble_mapping_size(const marble_mapping *m);
/* 1 if the bytes are a real memory map, 0 if a copy. */
MARBLE_API int marble_mapping_is_mapped(const marble_mapping *m);
MARBLE_API void marble_mapping_retain(marble_mapping *m);
MARBLE_API void marble_mapping_release(marble_mapping *m);

/* ---- compression streams (src/vfs/compress.c) ------------------------------------------------ */

typedef enum marble_codec {
    MARBLE_CODEC_NONE = 0,
    MARBLE_CODEC_ZSTD = 1, /* .zst, libzstd frames */
    MARBLE_CODEC_LZ4 = 2,  /* .lz4, the LZ4 frame format of liblz4 */
    MARBLE_CODEC_GZIP = 3  /* .gz, zlib's gzip format */
} marble_codec;

/* The codec named by a path's extension, MARBLE_CODEC_NONE if none. */
MARBLE_API marble_codec marble_codec_from_path(const char *path);
MARBLE_API const char *marble_codec_name(marble_codec codec);

/* Wraps `inner` as a stream of uncompressed bytes and takes ownership of it (closing the stream
 * closes it, also on failure of this call). Reading: reads must be sequential (`off` equal to the
 * bytes already returned; anything else is MARBLE_ERR_UNSUPPORTED naming the offsets); size()
 * is MARBLE_ERR_UNSUPPORTED; concatenated frames (members) read as one stream; truncated or
 * corrupt input, and an empty file, are MARBLE_ERR_CORRUPTION. Writing: starts at the end of
 * `inner` (without TRUNCATE a new frame is appended); writes must be sequential (or appends);
 * size() is the uncompressed bytes written; sync flushes the compressor and syncs `inner`; close
 * finishes the frame. Frames carry checksums (zstd, LZ4 content checksum, gzip CRC). `level` is
 * the codec's level, 0 for its default (zstd: its min..max, lz4: -65536..12, gzip: -1..9). After
 * an I/O or corruption error every later call fails with it. */
MARBLE_API int marble_file_compress_wrap(marble_file *inner, marble_codec codec, int writing,
                                         int level, marble_file **out, marble_error *err);

/* A backend that stores every file in `parent` compressed with `codec`, whatever the file's name
 * (no extension is needed or added): each file there is a plain .zst / .lz4 / .gz file, frames
 * as marble_file_compress_wrap writes them at `level`. `parent` is not owned and must outlive the
 * backend; the backend's destroy (marble_fs_destroy calls it once registered) frees only the
 * wrapper. A bad codec or level is MARBLE_ERR_INVALID_ARGUMENT. The name is "<codec>(<parent's
 * name>)", e.g. "zstd(local)". Paths are the parent's (registered as "zstd" over the local
 * backend, "zstd:///abs/path" is the file /abs/path).
 * open: READ opens the parent's file for reading and returns a stream of the uncompressed bytes;
 * WRITE (with CREATE, TRUNCATE, APPEND and EXCLUSIVE, applied by the parent) returns a stream
 * that compresses what is written. Both are streams as marble_file_compress_wrap describes them:
 * sequential offsets only, size() only while writing, sync flushes the compressor, close ends
 * the frame; a write without TRUNCATE adds frames after the existing ones, so the file then
 * reads as the old bytes followed by the new; a file that is not `codec` frames fails to read
 * with MARBLE_ERR_CORRUPTION. READ and WRITE together are MARBLE_ERR_UNSUPPORTED, and so is
 * DIRECT. stat, list, mkdir, remove, rename, sync_dir and control go to the parent unchanged:
 * stat's size is the stored, compressed size, not the number of bytes a read returns.
 * Capabilities: the parent's LIST, SYNC, SYNC_DIR, ATOMIC_RENAME and APPEND, never RANDOM_READ,
 * RANDOM_WRITE, MAP, TRUNCATE, DIRECT or FD (marble_file_map copies, reading at the stream
 * position).
 * Thread safety: the backend is as thread-safe as `parent`; each of its files is a stream, for
 * one thread at a time. */
MARBLE_API int marble_vfs_compress_create(marble_vfs *parent, marble_codec codec, int level,
                                          marble_vfs **out, marble_error *err);

/* ---- buffered reader and writer (src/vfs/buffered.c) ----------------------------------------- */

typedef struct marble_buffer_options {
    size_t buffer_size; /* bytes gathered before a write reaches `inner`; 0: 1 MiB */
    size_t readahead;   /* the read window: sequential reads fetch this much; 0: 4 MiB */
} marble_buffer_options;

/* Wraps `inner` (taking ownership). Small sequential writes are gathered into buffer_size
 * writes; a write elsewhere, sync, size and close flush first. From the second read in a row
 * that starts where the previous one ended, reads fetch `readahead` bytes at a time; other reads
 * go straight to `inner`. The wrapper cannot be mapped (marble_file_map copies through it) and
 * `inner` must not be a direct-I/O file. After a failed write-back every later call fails with
 * that error. For one thread at a time. */
MARBLE_API int marble_file_buffered_wrap(marble_file *inner, const marble_buffer_options *opts,
                                         marble_file **out, marble_error *err);

/* ---- handle pool (src/vfs/pool.c) ------------------------------------------------------------ */

typedef struct marble_handle_pool marble_handle_pool;

typedef struct marble_handle_pool_options {
    size_t max_open;     /* 0: half of RLIMIT_NOFILE's soft limit, at least 16 */
    uint32_t timeout_ms; /* how long acquire waits when every handle is in use; 0: 10000 */
} marble_handle_pool_options;

/* A pool of open handles over `fs` (which must outlive it). At most max_open files are open at
 * once; idle handles are kept per (URI, flags) and reused; when the limit is reached the least
 * recently used idle handle is closed; a handle in use is never closed. Thread-safe. */
MARBLE_API int marble_handle_pool_create(marble_fs *fs, const marble_handle_pool_options *opts,
                                         marble_handle_pool **out, marble_error *err);
/* Closes every idle handle. Handles still acquired are reported like marble_fs_destroy does
 * (logged, counted in the returned MARBLE_ERR_BUSY) and closed. Accepts NULL. */
MARBLE_API int marble_handle_pool_destroy(marble_handle_pool *p, marble_error *err);
/* A handle for (uri, flags): an idle one if there is one (a hit), else a new one (a miss). Waits
 * up to timeout_ms when max_open handles are all in use (then MARBLE_ERR_TIMEOUT). Use it with
 * positional reads and writes only; give it back with release. Flags act at open only (a reused
 * handle is not truncated again). */
MARBLE_API int marble_handle_pool_acquire(marble_handle_pool *p, const char *uri, int flags,
                                          marble_file **out, marble_error *err);
MARBLE_API void marble_handle_pool_release(marble_handle_pool *p, marble_file *f);
/* Closes the idle handles of `uri` and marks its in-use ones to close on release (call it
 * before removing or replacing the file). */
MARBLE_API void marble_handle_pool_evict(marble_handle_pool *p, const char *uri);

typedef struct marble_handle_pool_stats {
    uint64_t hits, misses, evictions;
    size_t open, in_use, max_open;
} marble_handle_pool_stats;
MARBLE_API void marble_handle_pool_get_stats(marble_handle_pool *p, marble_handle_pool_stats *out);

/* ---- asynchronous reads (src/vfs/aio.c, src/vfs/uring_linux.c) ------------------------------- */

typedef struct marble_aio marble_aio;
typedef struct marble_aio_batch marble_aio_batch;

typedef enum marble_aio_backend {
    MARBLE_AIO_AUTO = 0,   /* io_uring when the kernel allows it, else threads */
    MARBLE_AIO_URING = 1,  /* io_uring (liburing); files without an OS descriptor use threads */
    MARBLE_AIO_THREADS = 2 /* blocking reads on the scheduler's workers */
} marble_aio_backend;

typedef struct marble_aio_options {
    marble_aio_backend backend;
    unsigned queue_depth; /* io_uring submission queue entries; 0: 256 */
    marble_sched *sched;  /* for the thread path; NULL: a private 2-thread scheduler */
} marble_aio_options;

/* One read. Filled by the caller: file, off, buf, len, user. Filled on completion: status
 * (MARBLE_OK or a code) and nread (short only at end of file). */
typedef struct marble_aio_req {
    marble_file *file;
    uint64_t off;
    void *buf;
    size_t len;
    void *user;
    int status;
    size_t nread;
} marble_aio_req;

/* Called once per request as it completes. It may run on several threads at once (the io_uring
 * completion thread, scheduler workers, or inside marble_aio_submit when a request fails at
 * once) and must not call marble_aio_wait. */
typedef void (*marble_aio_cb)(void *ud, marble_aio_req *req);

MARBLE_API int marble_aio_create(const marble_aio_options *opts, marble_aio **out,
                                 marble_error *err);
/* Waits for every batch in flight, then frees (batches nobody waited for are freed too; their
 * handles become invalid). Must not overlap submit or wait. Accepts NULL. */
MARBLE_API void marble_aio_destroy(marble_aio *aio);
/* The backend in use: MARBLE_AIO_URING or MARBLE_AIO_THREADS. */
MARBLE_API marble_aio_backend marble_aio_get_backend(const marble_aio *aio);
/* Submits n reads at once. `cb` (may be NULL) is called per request. The requests, buffers and
 * files must stay valid (open) until the batch is waited for; buf may be NULL when len is 0.
 * Argument errors reject the whole batch (no callbacks). Reads through io_uring bypass
 * marble_file_read, so they are not counted in marble_fs_get_stats. */
MARBLE_API int marble_aio_submit(marble_aio *aio, marble_aio_req *reqs, size_t n, marble_aio_cb cb,
                                 void *ud, marble_aio_batch **out, marble_error *err);
/* Waits until every request of the batch completed and frees the batch. Returns MARBLE_OK or
 * the first failed request's status (with its message). */
MARBLE_API int marble_aio_wait(marble_aio_batch *b, marble_error *err);

/* ---- fault injection (src/vfs/fault.c) ------------------------------------------------------- */

typedef enum marble_fault_op {
    MARBLE_FAULT_OPEN = 1 << 0,
    MARBLE_FAULT_READ = 1 << 1,  /* read and map */
    MARBLE_FAULT_WRITE = 1 << 2, /* write, append and truncate */
    MARBLE_FAULT_SYNC = 1 << 3,  /* file sync and directory sync */
    MARBLE_FAULT_RENAME = 1 << 4,
    MARBLE_FAULT_REMOVE = 1 << 5,
    MARBLE_FAULT_ALL = 0x3f
} marble_fault_op;

/* Wraps `parent` (which it does not own; it must outlive the wrapper). In pass-through mode it
 * behaves exactly as `parent`, except that its capabilities lack MARBLE_CAP_FD (so no I/O can
 * bypass it). Register it under a scheme of its own (e.g. "fault") or use it
 * through marble_fs_register in place of "file"/"mem". */
MARBLE_API int marble_vfs_fault_create(marble_vfs *parent, marble_vfs **out, marble_error *err);
/* Fails the nth (1-based, counted from now) call of a kind in `ops` with `os_errno` (EIO or
 * ENOSPC, reported as MARBLE_ERR_IO or MARBLE_ERR_NO_SPACE), once. n = 0 disarms. A failed file
 * sync (here or from marble_fault_fail_random) sticks to the file as a failed fsync does on Linux:
 * every later sync of it fails with MARBLE_ERR_IO and a power cut still loses what was unsynced
 * before the failure, until the file is opened with TRUNCATE, truncated to 0 or replaced. */
MARBLE_API void marble_fault_fail_nth(marble_vfs *fault, uint32_t ops, uint64_t n, int os_errno);
/* Fails each call of a kind in `ops` with probability `p` from a generator seeded with `seed`
 * (the same seed and calls give the same failures). p = 0 disarms. */
MARBLE_API void marble_fault_fail_random(marble_vfs *fault, uint32_t ops, double p, uint64_t seed,
                                         int os_errno);
/* Calls of the kinds in `op` (a mask; counts are summed) seen since creation (for sweeping N over
 * an operation). */
MARBLE_API uint64_t marble_fault_count(marble_vfs *fault, marble_fault_op op);
/* A power cut: every write not yet synced is forgotten (files return to their content at their
 * last sync, truncations and extensions included), and every create, rename or remove whose
 * directory was not synced afterwards is undone. Open files of the wrapper fail every later call
 * with MARBLE_ERR_IO ("crashed"). The parent's content is rewritten to that state, so reopening
 * through the parent (or a new wrapper) sees what survived. */
MARBLE_API int marble_fault_crash(marble_vfs *fault, marble_error *err);

#ifdef __cplusplus
}
#endif
#endif
