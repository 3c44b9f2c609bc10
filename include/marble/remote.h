/*
 * Remote storage for the virtual file system: an HTTP(S) backend (read-only), an S3-compatible
 * backend, and a process-wide block cache that wraps any backend.
 *
 * Both remote backends speak through libcurl (Debian's libcurl4-openssl-dev): connections are
 * reused (one curl share/pool per backend), transient failures (5xx, 429, connection resets,
 * timeouts) are retried with exponential backoff up to max_retries times, and every other
 * failure is a clear error naming the URL: 404 is MARBLE_ERR_NOT_FOUND, 401/403
 * MARBLE_ERR_PERMISSION, a timeout MARBLE_ERR_TIMEOUT, anything else MARBLE_ERR_IO with the HTTP
 * status and, for S3, the error code and message of the XML error body.
 *
 * marble_fs_create registers "http", "https" and "s3" with default options (S3 from the
 * environment, see marble_s3_options_init); register your own instances to change them.
 *
 * Thread safety: backends and the block cache are thread-safe; an open file is for one thread
 * at a time.
 */
#ifndef MARBLE_REMOTE_H
#define MARBLE_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"
#include "marble/sched.h"
#include "marble/vfs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- HTTP(S), read-only ------------------------------------------------------------------------
 * Paths are what follows "http://" or "https://": "host[:port]/path". stat is a HEAD (size from
 * Content-Length; a server that does not answer HEAD gets a ranged GET of byte 0); reads are
 * ranged GETs ("Range: bytes=a-b"); a server that ignores ranges (200 instead of 206) is
 * detected: the whole body is then read once into memory and served from there (and counted in
 * the stats). Sequential reads fetch `readahead` bytes at a time. Capabilities: RANDOM_READ
 * only (no LIST, no writes: those return MARBLE_ERR_UNSUPPORTED). */
typedef struct marble_http_options {
    long connect_timeout_ms; /* 5000 */
    long timeout_ms;         /* 30000: the whole request, transfer included */
    int max_retries;         /* 4 */
    uint32_t retry_base_ms;  /* 100: backoff base; attempt k waits base * 2^k (jittered) */
    size_t readahead;        /* 1 MiB; 0 disables read-ahead */
    int verify_tls;          /* 1: verify peer and host (https) */
} marble_http_options;

MARBLE_API void marble_http_options_init(marble_http_options *o);
/* `secure`: 1 for the "https" scheme, 0 for "http". */
MARBLE_API int marble_vfs_http_create(const marble_http_options *o, int secure, marble_vfs **out,
                                      marble_error *err);

/* What an HTTP backend has done since it was created, read through its control():
 * v->control(v, MARBLE_HTTP_CONTROL_GET_STATS, &stats) (relaxed counters: monitoring and tests).
 * MARBLE_HTTP_CONTROL_SET_BODY_LIMIT (arg: const size_t *) sets the most bytes the whole-body
 * fallback buffers for a server that ignores ranges (default 256 MiB); a larger body is
 * MARBLE_ERR_LIMIT naming the URL. */
typedef struct marble_http_stats {
    uint64_t requests;        /* requests sent, retries included */
    uint64_t heads, gets;     /* of which HEAD and GET */
    uint64_t retries;         /* requests repeated after a transient failure */
    uint64_t full_body_reads; /* ranges ignored by the server: whole bodies buffered */
    uint64_t bytes;           /* body bytes received */
} marble_http_stats;

enum marble_http_control {
    MARBLE_HTTP_CONTROL_GET_STATS = 0x4801,     /* arg: marble_http_stats * */
    MARBLE_HTTP_CONTROL_SET_BODY_LIMIT = 0x4802 /* arg: const size_t * */
};

/* ---- S3-compatible object storage ---------------------------------------------------------------
 * Paths are "bucket/key". Requests are signed with AWS Signature V4 by libcurl
 * (CURLOPT_AWS_SIGV4); XML responses are parsed with libxml2. Operations: stat = HEAD (a key
 * that is only a prefix of others is a directory), read = ranged GET, list = ListObjectsV2 with
 * delimiter "/" and continuation tokens, remove = DELETE, mkdir = a marker (prefixes are
 * implicit, but an empty directory is kept as a zero-byte marker object "dir/", as the S3 console
 * does; MARBLE_ERR_EXISTS when the prefix exists), rename = copy + delete (files only; not atomic:
 * no ATOMIC_RENAME cap), sync_dir = nothing to do (MARBLE_OK: a completed PUT is durable).
 * Opening a key for writing checks, as POSIX does, that its parent "directory" exists (the bucket,
 * a marker or a prefix of other keys): MARBLE_ERR_NOT_FOUND otherwise.
 * Writing: open with WRITE|CREATE (TRUNCATE implied; the APPEND flag and writes at other than
 * the next offset are MARBLE_ERR_UNSUPPORTED) returns a sequential write stream, to which
 * marble_file_append writes the next bytes. Objects up to part_size are sent
 * with one PUT; larger ones with a multipart upload whose parts are uploaded in parallel (on
 * `sched`) as they fill; a failed upload is aborted so no parts remain. sync or close completes
 * the upload: the object becomes visible at once and whole (never partially); a write after a
 * sync is MARBLE_ERR_UNSUPPORTED. EXCLUSIVE sends "If-None-Match: *" (conditional create:
 * MARBLE_ERR_EXISTS when the object exists, where the server supports it).
 * Capabilities: RANDOM_READ, LIST, SYNC, SYNC_DIR (no APPEND: an existing object cannot grow).
 * A database on s3:// therefore runs its manifest in object-store mode and needs a local WAL
 * (marble_db_options.wal_uri; see db.h). */
typedef struct marble_s3_options {
    const char *endpoint;          /* "http://127.0.0.1:4568"; default $AWS_ENDPOINT_URL, else
                                      https://s3.<region>.amazonaws.com */
    const char *region;            /* default $AWS_REGION, else $AWS_DEFAULT_REGION, else
                                      "us-east-1" */
    const char *access_key_id;     /* default $AWS_ACCESS_KEY_ID */
    const char *secret_access_key; /* default $AWS_SECRET_ACCESS_KEY */
    const char *session_token;     /* default $AWS_SESSION_TOKEN (may be NULL) */
    int path_style;                /* -1 (default): path-style when an endpoint is given,
                                      virtual-hosted otherwise; 0 / 1 force it */
    size_t part_size;              /* 8 MiB (at least 5 MiB, S3's minimum part) */
    int max_parallel_parts;        /* 4 */
    long connect_timeout_ms;       /* 5000 */
    long timeout_ms;               /* 60000 */
    int max_retries;               /* 4 */
    uint32_t retry_base_ms;        /* 100 */
    marble_sched *sched;           /* for parallel part uploads; NULL: a private one */
} marble_s3_options;

/* Fills the defaults above, reading the environment (the strings point into the environment). */
MARBLE_API void marble_s3_options_init(marble_s3_options *o);
/* The strings are copied. Missing credentials are not an error here; the first request then
 * fails with MARBLE_ERR_PERMISSION saying which variable to set. */
MARBLE_API int marble_vfs_s3_create(const marble_s3_options *o, marble_vfs **out,
                                    marble_error *err);

/* Counters of an S3 backend (relaxed; for tests and monitoring). */
typedef struct marble_s3_stats {
    uint64_t requests;            /* HTTP requests sent, retries included */
    uint64_t retries;             /* requests repeated after a transient failure */
    uint64_t puts;                /* single-request uploads */
    uint64_t multipart_uploads;   /* multipart uploads started */
    uint64_t parts;               /* parts uploaded */
    uint64_t aborts;              /* AbortMultipartUpload requests sent */
    uint64_t abort_failures;      /* of those, the ones the server refused or that failed */
    uint64_t max_parts_in_flight; /* the most parts of one upload in flight at once */
} marble_s3_stats;

/* Backend control() operations of the S3 backend (marble_vfs.control; others are
 * MARBLE_ERR_UNSUPPORTED). */
enum marble_s3_control {
    MARBLE_S3_CTL_GET_STATS = 0x5301,     /* arg: marble_s3_stats * */
    MARBLE_S3_CTL_SET_LIST_PAGE = 0x5302, /* arg: const int *; keys per ListObjectsV2 page,
                                             1..1000 (default 1000) */
    MARBLE_S3_CTL_FAIL_PART = 0x5303,     /* arg: const int *; test hook: the nth UploadPart from
                                             now (1-based) fails with MARBLE_ERR_IO; 0 disarms */
    MARBLE_S3_CTL_DELETE_PREFIX = 0x5304  /* arg: const char * "bucket/prefix": removes every key
                                             that starts with the prefix with DeleteObjects
                                             (batches of 1000); returns MARBLE_OK or a code */
};

/* ---- block cache ------------------------------------------------------------------------------
 * A process-wide cache of fixed-size blocks of files, bounded in bytes (LRU), shared by every
 * wrapper made with it. Concurrent readers of a missing block cause one fetch (the others wait
 * for it). Blocks are keyed by (backend, path, file size, mtime), so a replaced file is not
 * served stale; marble_block_cache_invalidate drops a path's blocks explicitly. */
typedef struct marble_block_cache marble_block_cache;

typedef struct marble_block_cache_stats {
    uint64_t hits, misses, fetches, evictions, waits; /* waits: readers that joined a fetch */
    uint64_t bytes, capacity;
    uint64_t blocks;
} marble_block_cache_stats;

/* block_size 0: 1 MiB; capacity 0: 256 MiB. */
MARBLE_API int marble_block_cache_create(size_t block_size, size_t capacity,
                                         marble_block_cache **out, marble_error *err);
/* Frees the cache; every wrapper using it must be destroyed first. Accepts NULL. */
MARBLE_API void marble_block_cache_destroy(marble_block_cache *c);
MARBLE_API void marble_block_cache_get_stats(marble_block_cache *c, marble_block_cache_stats *out);
MARBLE_API void marble_block_cache_invalidate(marble_block_cache *c, const char *path);

/* A backend that reads `parent`'s files through `cache` (both must outlive it; neither is
 * owned). Reads are served block by block from the cache; writes, removes and renames go to
 * the parent and invalidate the path's blocks. Capabilities: the parent's, minus MAP (maps are
 * served by reading through the cache) and FD. Name: "cache(<parent>)". */
MARBLE_API int marble_vfs_cache_create(marble_vfs *parent, marble_block_cache *cache,
                                       marble_vfs **out, marble_error *err);

#ifdef __cplusplus
}
#endif
#endif
