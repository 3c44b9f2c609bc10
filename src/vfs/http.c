/*
 * The HTTP(S) backend, read-only: stat is a HEAD (or a ranged GET of byte 0 where HEAD is
 * refused), reads are ranged GETs, sequential reads of a file go through a read-ahead window, and
 * a server that ignores Range is detected (200 instead of 206) and served from one buffered copy
 * of the whole body. Requests go through libcurl easy handles kept in a small pool, all sharing
 * one CURLSH (connections, DNS cache, TLS sessions). Transient failures (5xx except 501, 429,
 * connection failures and resets, timeouts) are retried with exponential backoff and jitter.
 *
 * Thread safety and lock order: http_file.mu (the window and the whole-body copy) -> http_vfs.mu
 * (the handle pool) -> http_vfs.share_mu[i] (taken by libcurl through the share callbacks). A
 * file's mu is held across a read-ahead fetch, so sequential readers of one file take turns;
 * other reads run without it. Counters are relaxed atomics (statistics only).
 * Invariants: win_len <= win_cap; [win_off, win_off + win_len) lies within the file; `whole`,
 * once set, is never replaced until close.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "marble/remote.h"
#include "marble/vfs.h"
#include "vfs/vfs_internal.h"

#define POOL_MAX 16
#define DEFAULT_BODY_LIMIT ((size_t)256 << 20)
#define MAX_BACKOFF_MS 10000u

typedef struct http_vfs {
    marble_vfs base;
    marble_http_options o;
    int secure;
    CURLSH *share;
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    pthread_mutex_t mu;
    CURL *pool[POOL_MAX];
    int npool;
    _Atomic size_t body_limit;
    _Atomic uint64_t requests, heads, gets, retries, full_body_reads, bytes;
    _Atomic uint64_t jitter;
} http_vfs;

typedef struct http_file {
    marble_file base;
    http_vfs *h;
    uint64_t size;
    pthread_mutex_t mu;
    unsigned char *win;
    size_t win_cap, win_len;
    uint64_t win_off;
    uint64_t last_end;
    unsigned char *whole;
    size_t whole_len;
    char url[];
} http_file;

static inline void bump(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ---- libcurl setup ------------------------------------------------------------------------- */

/* One curl_global_init for the process, shared by the http and s3 backends (it is not
 * thread-safe in every libcurl build, so it must not run twice at once). */
static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int marble__curl_global_init(void)
{
    pthread_once(&global_once, global_init);
    return (int)global_rc;
}

static void share_lock(CURL *c, curl_lock_data data, curl_lock_access access, void *ud)
{
    (void)c;
    (void)access;
    http_vfs *h = ud;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST) pthread_mutex_lock(&h->share_mu[data]);
}

static void share_unlock(CURL *c, curl_lock_data data, void *ud)
{
    (void)c;
    http_vfs *h = ud;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST) pthread_mutex_unlock(&h->share_mu[data]);
}

static CURL *handle_get(http_vfs *h)
{
    CURL *c = NULL;
    pthread_mutex_lock(&h->mu);
    if (h->npool > 0) c = h->pool[--h->npool];
    pthread_mutex_unlock(&h->mu);
    if (c)
        curl_easy_reset(c);
    else
        c = curl_easy_init();
    return c;
}

static void handle_put(http_vfs *h, CURL *c)
{
    pthread_mutex_lock(&h->mu);
    if (h->npool < POOL_MAX) {
        h->pool[h->npool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&h->mu);
    if (c) curl_easy_cleanup(c);
}

/* ---- URLs ---------------------------------------------------------------------------------- */

static int path_char_ok(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c && strchr("-._~/!$&'()*+,;=:@", c) != NULL;
}

/* "host[:port]/a b" -> "http://host[:port]/a%20b" (malloc'ed). The host is taken as it is
 * (checked for characters that cannot be in one); path bytes outside RFC 3986's unreserved,
 * sub-delims, ':', '@' and '/' are percent-encoded ('?' and '#' too: paths name files). */
static int build_url(const http_vfs *h, const char *path, char **out, marble_error *err)
{
    const char *scheme = h->secure ? "https" : "http";
    const char *slash = strchr(path, '/');
    size_t hlen = slash ? (size_t)(slash - path) : strlen(path);
    if (hlen == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s://%s: no host", scheme, path);
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c <= 0x20 || c >= 0x7f || strchr("?#\\\"<>{}|^`", c))
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "%s://%s: invalid character in the host", scheme, path);
    }
    const char *p = slash ? slash : "/";
    size_t need = strlen(scheme) + 3 + hlen + 3 * strlen(p) + 1;
    char *u = malloc(need);
    if (!u) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s://%s", scheme, path);
    int k = snprintf(u, need, "%s://%.*s", scheme, (int)hlen, path);
    size_t n = (size_t)k;
    static const char hex[] = "0123456789ABCDEF";
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (path_char_ok(c)) {
            u[n++] = (char)c;
        } else {
            u[n++] = '%';
            u[n++] = hex[c >> 4];
            u[n++] = hex[c & 15];
        }
    }
    u[n] = 0;
    *out = u;
    return MARBLE_OK;
}

/* ---- one request --------------------------------------------------------------------------- */

enum { REQ_HEAD, REQ_PROBE, REQ_RANGE };

/* A request's state. The header callback fills the status and the headers we use (reset at each
 * status line, so redirects and interim responses leave nothing behind); the write callback puts
 * a 206 body into dst and a 200 body into `whole` (bounded by limit). */
typedef struct req {
    int kind;
    uint64_t off;       /* REQ_RANGE: the first byte asked for */
    unsigned char *dst; /* REQ_RANGE: where a 206 body goes */
    size_t cap;         /* its size */
    size_t limit;       /* most bytes of a 200 body kept */
    long status;
    int64_t clen; /* Content-Length, -1 if none */
    int have_range;
    uint64_t r_first, r_last, r_total; /* Content-Range; r_total UINT64_MAX if "*" */
    int unsatisfied;                   /* Content-Range "bytes * / total" */
    size_t got;
    unsigned char *whole;
    size_t whole_len, whole_cap;
    int aborted; /* we stopped the transfer on purpose (a probe has what it needs) */
    int too_big; /* a 200 body past `limit` */
    int bad;     /* a reply we cannot use; why is in bad_msg */
    const char *bad_msg;
} req;

static void req_reset(req *r)
{
    free(r->whole);
    r->whole = NULL;
    r->whole_len = r->whole_cap = 0;
    r->status = 0;
    r->clen = -1;
    r->have_range = r->unsatisfied = 0;
    r->r_first = r->r_last = r->r_total = 0;
    r->got = 0;
    r->aborted = r->too_big = r->bad = 0;
    r->bad_msg = NULL;
}

/* Parses decimal digits at *p (bounded by end) into *v; 0 on no digits or overflow. */
static int parse_u64(const char **p, const char *end, uint64_t *v)
{
    const char *s = *p;
    uint64_t x = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (x > (UINT64_MAX - d) / 10) return 0;
        x = x * 10 + d;
        s++;
    }
    if (s == *p) return 0;
    *p = s;
    *v = x;
    return 1;
}

static int header_is(const char *line, size_t n, const char *name, const char **val)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':') return 0;
    const char *v = line + k + 1;
    while (v < line + n && (*v == ' ' || *v == '\t'))
        v++;
    *val = v;
    return 1;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    req *r = ud;
    size_t n = size * nitems;
    const char *end = buf + n;
    while (end > buf && (end[-1] == '\r' || end[-1] == '\n'))
        end--;
    size_t len = (size_t)(end - buf);
    const char *v;
    if (len >= 5 && !memcmp(buf, "HTTP/", 5)) {
        /* A new response (after a redirect or a 1xx): forget the previous one's headers. */
        r->status = 0;
        r->clen = -1;
        r->have_range = r->unsatisfied = 0;
        const char *s = memchr(buf, ' ', len);
        uint64_t code;
        if (s && (s++, parse_u64(&s, end, &code)) && code < 1000) r->status = (long)code;
    } else if (header_is(buf, len, "Content-Length", &v)) {
        uint64_t x;
        if (parse_u64(&v, end, &x) && x <= (uint64_t)INT64_MAX) r->clen = (int64_t)x;
    } else if (header_is(buf, len, "Content-Range", &v)) {
        if ((size_t)(end - v) > 6 && !strncasecmp(v, "bytes ", 6)) {
            const char *s = v + 6;
            uint64_t a, b, t = UINT64_MAX;
            if (s < end && *s == '*') {
                s++;
                if (s < end && *s == '/' && (s++, parse_u64(&s, end, &t))) {
                    r->unsatisfied = 1;
                    r->r_total = t;
                }
            } else if (parse_u64(&s, end, &a) && s < end && *s == '-' &&
                       (s++, parse_u64(&s, end, &b)) && s < end && *s == '/' && b >= a) {
                s++;
                if (!(s < end && *s == '*') && !parse_u64(&s, end, &t)) return n;
                r->have_range = 1;
                r->r_first = a;
                r->r_last = b;
                r->r_total = t;
            }
        }
    }
    return n;
}

static int keep_whole(req *r, const char *p, size_t n)
{
    if (n > r->limit - r->whole_len) {
        r->too_big = 1;
        return 0;
    }
    if (r->whole_len + n > r->whole_cap) {
        size_t cap = r->whole_cap ? r->whole_cap : 64 * 1024;
        if (r->clen > 0 && (uint64_t)r->clen <= r->limit && (size_t)r->clen > cap)
            cap = (size_t)r->clen;
        while (cap < r->whole_len + n)
            cap = cap > r->limit / 2 ? r->limit : cap * 2;
        unsigned char *nb = realloc(r->whole, cap ? cap : 1);
        if (!nb) {
            r->bad = 1;
            r->bad_msg = "out of memory buffering the body";
            return 0;
        }
        r->whole = nb;
        r->whole_cap = cap;
    }
    memcpy(r->whole + r->whole_len, p, n);
    r->whole_len += n;
    return 1;
}

static size_t on_body(char *p, size_t size, size_t nitems, void *ud)
{
    req *r = ud;
    size_t n = size * nitems;
    if (r->status == 206 && r->kind == REQ_RANGE) {
        if (!r->have_range || r->r_first != r->off) {
            r->bad = 1;
            r->bad_msg = r->have_range ? "206 reply for another range"
                                       : "206 reply without a usable Content-Range";
            return 0;
        }
        size_t take = r->cap - r->got < n ? r->cap - r->got : n;
        if (take) memcpy(r->dst + r->got, p, take);
        r->got += take;
        return n;
    }
    if (r->status == 206 && r->kind == REQ_PROBE) {
        r->aborted = 1; /* the headers carry the size */
        return 0;
    }
    if (r->status == 200 && r->kind != REQ_HEAD) {
        if (r->kind == REQ_PROBE && r->clen >= 0) {
            r->aborted = 1;
            return 0;
        }
        if (r->clen >= 0 && (uint64_t)r->clen > r->limit) {
            r->too_big = 1;
            return 0;
        }
        return keep_whole(r, p, n) ? n : 0;
    }
    return n; /* an error page: not kept */
}

static int transient_curl(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

static int transient_status(long s)
{
    return s == 429 || (s >= 500 && s <= 599 && s != 501 && s != 505);
}

static void backoff(http_vfs *h, int attempt)
{
    uint64_t d = h->o.retry_base_ms;
    for (int i = 0; i < attempt && d < MAX_BACKOFF_MS; i++)
        d *= 2;
    if (d > MAX_BACKOFF_MS) d = MAX_BACKOFF_MS;
    if (d == 0) return;
    /* Jitter: wait a uniformly drawn time in [d/2, d] (splitmix64 over a shared counter). */
    uint64_t x = atomic_fetch_add_explicit(&h->jitter, 0x9e3779b97f4a7c15ull, memory_order_relaxed);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    uint64_t ms = d / 2 + x % (d - d / 2 + 1);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Sends one request (retried as needed) and leaves the reply in r. Returns MARBLE_OK for a 2xx
 * reply (and for HEAD/probe: 405/501/416 too, which the caller handles); otherwise an error
 * naming `op` and the URL. */
static int perform(http_vfs *h, const char *url, req *r, const char *op, int64_t *mtime_s,
                   marble_error *err)
{
    char range[64];
    if (r->kind == REQ_RANGE)
        snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)r->off,
                 (unsigned long long)(r->off + r->cap - 1));
    else
        snprintf(range, sizeof range, "0-0");
    const int attempts = 1 + (h->o.max_retries > 0 ? h->o.max_retries : 0);
    int rc = MARBLE_OK;
    for (int attempt = 0; attempt < attempts; attempt++) {
        if (attempt > 0) {
            bump(&h->retries, 1);
            backoff(h, attempt - 1);
        }
        req_reset(r);
        r->limit = atomic_load_explicit(&h->body_limit, memory_order_relaxed);
        CURL *c = handle_get(h);
        if (!c)
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s %s: curl_easy_init", op, url);
        char ebuf[CURL_ERROR_SIZE];
        ebuf[0] = 0;
        curl_easy_setopt(c, CURLOPT_SHARE, h->share);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 8L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->o.connect_timeout_ms);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->o.timeout_ms);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, h->o.verify_tls ? 1L : 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, h->o.verify_tls ? 2L : 0L);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "marble");
        curl_easy_setopt(c, CURLOPT_FILETIME, 1L);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
        if (r->kind == REQ_HEAD)
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        else
            curl_easy_setopt(c, CURLOPT_RANGE, range);
        bump(&h->requests, 1);
        bump(r->kind == REQ_HEAD ? &h->heads : &h->gets, 1);
        CURLcode cc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_off_t ft = -1;
        if (mtime_s && curl_easy_getinfo(c, CURLINFO_FILETIME_T, &ft) == CURLE_OK) *mtime_s = ft;
        handle_put(h, c);
        bump(&h->bytes, r->got + r->whole_len);
        if (status > 0) r->status = status;
        if (r->too_big)
            return marble_error_set(err, MARBLE_ERR_LIMIT,
                                    "%s %s: the server ignores Range and the body is larger than "
                                    "the %zu bytes the backend buffers",
                                    op, url, r->limit);
        if (r->bad) return marble_error_set(err, MARBLE_ERR_IO, "%s %s: %s", op, url, r->bad_msg);
        if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && r->aborted)) {
            int code = cc == CURLE_OPERATION_TIMEDOUT ? MARBLE_ERR_TIMEOUT : MARBLE_ERR_IO;
            rc = marble_error_set(err, code, "%s %s: %s%s%s (after %d attempt%s)", op, url,
                                  curl_easy_strerror(cc), ebuf[0] ? ": " : "", ebuf, attempt + 1,
                                  attempt ? "s" : "");
            if (transient_curl(cc)) continue;
            return rc;
        }
        long s = r->status;
        if (s >= 200 && s < 300) return MARBLE_OK;
        if (r->kind != REQ_RANGE && (s == 405 || s == 501 || s == 416)) return MARBLE_OK;
        if (s == 404 || s == 410)
            return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "%s %s: HTTP %ld (not found)", op,
                                    url, s);
        if (s == 401 || s == 403)
            return marble_error_set(err, MARBLE_ERR_PERMISSION,
                                    "%s %s: HTTP %ld (permission denied)", op, url, s);
        rc = marble_error_set(err, MARBLE_ERR_IO, "%s %s: HTTP %ld (after %d attempt%s)", op, url,
                              s, attempt + 1, attempt ? "s" : "");
        if (!transient_status(s)) return rc;
    }
    return rc;
}

/* The size (and mtime) of `url`; with keep != NULL, a body the server sent whole while probing
 * (no HEAD, no Range, no Content-Length) is handed over instead of freed. */
static int stat_url(http_vfs *h, const char *url, uint64_t *size, int64_t *mtime_ns,
                    unsigned char **keep, size_t *keep_len, marble_error *err)
{
    req r;
    memset(&r, 0, sizeof r);
    r.kind = REQ_HEAD;
    int64_t mt = -1;
    int rc = perform(h, url, &r, "stat", &mt, err);
    int have = 0;
    if (rc == MARBLE_OK && r.status >= 200 && r.status < 300 && r.clen >= 0) {
        *size = (uint64_t)r.clen;
        have = 1;
    }
    if (rc == MARBLE_OK && !have) {
        /* HEAD refused or without a length: ask for byte 0. */
        r.kind = REQ_PROBE;
        mt = -1;
        rc = perform(h, url, &r, "stat", &mt, err);
        if (rc == MARBLE_OK) {
            if (r.status == 206 && r.have_range && r.r_total != UINT64_MAX) {
                *size = r.r_total;
            } else if (r.status == 416 && r.unsatisfied) {
                *size = r.r_total;
            } else if (r.status == 200 && r.clen >= 0) {
                *size = (uint64_t)r.clen;
            } else if (r.status == 200 && !r.aborted) {
                *size = r.whole_len;
                bump(&h->full_body_reads, 1);
                if (keep) {
                    *keep = r.whole;
                    *keep_len = r.whole_len;
                    r.whole = NULL;
                }
            } else {
                rc = marble_error_set(err, MARBLE_ERR_IO, "stat %s: HTTP %ld gives no size", url,
                                      r.status);
            }
        }
    }
    if (mtime_ns) *mtime_ns = mt > 0 ? (int64_t)mt * 1000000000 : 0;
    free(r.whole);
    return rc;
}

/* Reads [off, off + n) of `url` into dst (*got bytes, fewer only if the file ended). A server
 * that ignores Range yields the whole body in *whole instead (*got is then 0). */
static int fetch_range(http_vfs *h, const char *url, uint64_t off, unsigned char *dst, size_t n,
                       size_t *got, unsigned char **whole, size_t *whole_len, marble_error *err)
{
    req r;
    memset(&r, 0, sizeof r);
    r.kind = REQ_RANGE;
    r.off = off;
    r.dst = dst;
    r.cap = n;
    *got = 0;
    *whole = NULL;
    *whole_len = 0;
    int rc = perform(h, url, &r, "read", NULL, err);
    if (rc == MARBLE_OK) {
        if (r.status == 206) {
            *got = r.got;
        } else if (r.status == 200) {
            bump(&h->full_body_reads, 1);
            *whole = r.whole;
            *whole_len = r.whole_len;
            r.whole = NULL;
        } else {
            rc =
                marble_error_set(err, MARBLE_ERR_IO, "read %s: unexpected HTTP %ld", url, r.status);
        }
    }
    free(r.whole);
    return rc;
}

/* ---- files --------------------------------------------------------------------------------- */

static size_t copy_from_whole(http_file *f, uint64_t off, unsigned char *out, size_t n)
{
    if (off >= f->whole_len) return 0;
    size_t take = f->whole_len - (size_t)off < n ? f->whole_len - (size_t)off : n;
    memcpy(out, f->whole + off, take);
    return take;
}

/* Installs a whole-body copy (caller holds mu) and frees the loser of a race. */
static void install_whole(http_file *f, unsigned char *w, size_t len)
{
    if (!f->whole) {
        f->whole = w;
        f->whole_len = len;
        free(f->win);
        f->win = NULL;
        f->win_cap = f->win_len = 0;
    } else {
        free(w);
    }
}

static int hf_read(marble_file *mf, uint64_t off, void *buf, size_t n, size_t *nread,
                   marble_error *err)
{
    http_file *f = (http_file *)mf;
    http_vfs *h = f->h;
    unsigned char *out = buf;
    *nread = 0;
    if (off >= f->size || n == 0) return MARBLE_OK;
    if (n > f->size - off) n = (size_t)(f->size - off);
    size_t done = 0;
    int rc = MARBLE_OK;
    pthread_mutex_lock(&f->mu);
    if (f->whole) {
        *nread = copy_from_whole(f, off, out, n);
        pthread_mutex_unlock(&f->mu);
        return MARBLE_OK;
    }
    if (f->win_len && off >= f->win_off && off < f->win_off + f->win_len) {
        size_t avail = (size_t)(f->win_off + f->win_len - off);
        done = avail < n ? avail : n;
        memcpy(out, f->win + (off - f->win_off), done);
    }
    const int sequential = done > 0 || off == f->last_end;
    if (done == n) {
        f->last_end = off + n;
        pthread_mutex_unlock(&f->mu);
        *nread = n;
        return MARBLE_OK;
    }
    uint64_t pos = off + done;
    size_t rest = n - done;
    unsigned char *w = NULL;
    size_t wlen = 0, got = 0;
    if (sequential && h->o.readahead > rest) {
        /* Fill the window from pos, holding mu (sequential readers of this file take turns). */
        size_t want = h->o.readahead;
        if (want > f->size - pos) want = (size_t)(f->size - pos);
        if (f->win_cap < want) {
            unsigned char *nb = realloc(f->win, want);
            if (!nb) {
                pthread_mutex_unlock(&f->mu);
                return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "read %s: read-ahead buffer",
                                        f->url);
            }
            f->win = nb;
            f->win_cap = want;
        }
        f->win_len = 0;
        rc = fetch_range(h, f->url, pos, f->win, want, &got, &w, &wlen, err);
        if (rc == MARBLE_OK && w) {
            install_whole(f, w, wlen);
            done = copy_from_whole(f, off, out, n);
        } else if (rc == MARBLE_OK) {
            f->win_off = pos;
            f->win_len = got;
            size_t take = got < rest ? got : rest;
            memcpy(out + done, f->win, take);
            done += take;
        }
        if (rc == MARBLE_OK) f->last_end = off + done;
        pthread_mutex_unlock(&f->mu);
    } else {
        f->last_end = off + n;
        pthread_mutex_unlock(&f->mu);
        rc = fetch_range(h, f->url, pos, out + done, rest, &got, &w, &wlen, err);
        if (rc == MARBLE_OK && w) {
            pthread_mutex_lock(&f->mu);
            install_whole(f, w, wlen);
            done = copy_from_whole(f, off, out, n);
            pthread_mutex_unlock(&f->mu);
        } else if (rc == MARBLE_OK) {
            done += got;
        }
    }
    if (rc != MARBLE_OK) return rc;
    *nread = done;
    return MARBLE_OK;
}

static int hf_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    (void)off;
    (void)buf;
    (void)n;
    return marble__vfs_unsupported(err, "write", f->vfs ? f->vfs->name : "http");
}

static int hf_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    (void)buf;
    (void)n;
    return marble__vfs_unsupported(err, "append", f->vfs ? f->vfs->name : "http");
}

static int hf_size(marble_file *f, uint64_t *out, marble_error *err)
{
    (void)err;
    *out = ((http_file *)f)->size;
    return MARBLE_OK;
}

static int hf_sync(marble_file *f, int flags, marble_error *err)
{
    (void)flags;
    return marble__vfs_unsupported(err, "sync", f->vfs ? f->vfs->name : "http");
}

static int hf_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    (void)size;
    return marble__vfs_unsupported(err, "truncate", f->vfs ? f->vfs->name : "http");
}

static int hf_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                  marble_error *err)
{
    (void)off;
    (void)len;
    (void)addr;
    (void)cookie;
    return marble__vfs_unsupported(err, "map", f->vfs ? f->vfs->name : "http");
}

static void hf_unmap(marble_file *f, const void *addr, size_t len, void *cookie)
{
    (void)f;
    (void)addr;
    (void)len;
    (void)cookie;
}

static int hf_close(marble_file *mf, marble_error *err)
{
    (void)err;
    http_file *f = (http_file *)mf;
    pthread_mutex_destroy(&f->mu);
    free(f->win);
    free(f->whole);
    free(f);
    return MARBLE_OK;
}

static int hf_control(marble_file *f, int op, void *arg)
{
    (void)f;
    (void)op;
    (void)arg;
    return MARBLE_ERR_UNSUPPORTED;
}

static const marble_file_methods http_methods = {MARBLE_FILE_METHODS_VERSION,
                                                 hf_read,
                                                 hf_write,
                                                 hf_append,
                                                 hf_size,
                                                 hf_sync,
                                                 hf_truncate,
                                                 hf_map,
                                                 hf_unmap,
                                                 hf_close,
                                                 hf_control};

/* ---- the backend --------------------------------------------------------------------------- */

static int ready(http_vfs *h, marble_error *err)
{
    if (marble__curl_global_init() != CURLE_OK)
        return marble_error_set(err, MARBLE_ERR_INTERNAL, "curl_global_init: %s",
                                curl_easy_strerror(global_rc));
    (void)h;
    return MARBLE_OK;
}

static int http_open(marble_vfs *v, const char *path, int flags, marble_file **out,
                     marble_error *err)
{
    http_vfs *h = (http_vfs *)v;
    if (flags & ~MARBLE_OPEN_READ)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "open %s://%s: the %s backend is read-only", v->name, path,
                                v->name);
    MARBLE_RETURN_NOT_OK(ready(h, err));
    char *url;
    MARBLE_RETURN_NOT_OK(build_url(h, path, &url, err));
    uint64_t size = 0;
    unsigned char *whole = NULL;
    size_t whole_len = 0;
    int rc = stat_url(h, url, &size, NULL, &whole, &whole_len, err);
    size_t ulen = strlen(url);
    http_file *f = NULL;
    if (rc == MARBLE_OK && !(f = calloc(1, sizeof *f + ulen + 1)))
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "open %s", url);
    if (rc != MARBLE_OK) {
        free(whole);
        free(url);
        return rc;
    }
    memcpy(f->url, url, ulen + 1);
    free(url);
    pthread_mutex_init(&f->mu, NULL);
    f->h = h;
    f->size = size;
    f->whole = whole;
    f->whole_len = whole_len;
    f->base.methods = &http_methods;
    f->base.caps = MARBLE_CAP_RANDOM_READ;
    f->base.flags = flags;
    *out = &f->base;
    return MARBLE_OK;
}

static int http_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    http_vfs *h = (http_vfs *)v;
    MARBLE_RETURN_NOT_OK(ready(h, err));
    char *url;
    MARBLE_RETURN_NOT_OK(build_url(h, path, &url, err));
    uint64_t size = 0;
    int64_t mt = 0;
    int rc = stat_url(h, url, &size, &mt, NULL, NULL, err);
    free(url);
    if (rc != MARBLE_OK) return rc;
    memset(out, 0, sizeof *out);
    out->size = size;
    out->mtime_ns = mt;
    return MARBLE_OK;
}

static int http_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud,
                     marble_error *err)
{
    (void)dir;
    (void)fn;
    (void)ud;
    return marble__vfs_unsupported(err, "list", v->name);
}

static int http_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    (void)path;
    return marble__vfs_unsupported(err, "mkdir", v->name);
}

static int http_remove(marble_vfs *v, const char *path, marble_error *err)
{
    (void)path;
    return marble__vfs_unsupported(err, "remove", v->name);
}

static int http_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    (void)from;
    (void)to;
    return marble__vfs_unsupported(err, "rename", v->name);
}

static int http_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    (void)path;
    return marble__vfs_unsupported(err, "sync_dir", v->name);
}

static int http_control(marble_vfs *v, int op, void *arg)
{
    http_vfs *h = (http_vfs *)v;
    if (op == MARBLE_HTTP_CONTROL_GET_STATS && arg) {
        marble_http_stats *s = arg;
        s->requests = atomic_load_explicit(&h->requests, memory_order_relaxed);
        s->heads = atomic_load_explicit(&h->heads, memory_order_relaxed);
        s->gets = atomic_load_explicit(&h->gets, memory_order_relaxed);
        s->retries = atomic_load_explicit(&h->retries, memory_order_relaxed);
        s->full_body_reads = atomic_load_explicit(&h->full_body_reads, memory_order_relaxed);
        s->bytes = atomic_load_explicit(&h->bytes, memory_order_relaxed);
        return MARBLE_OK;
    }
    if (op == MARBLE_HTTP_CONTROL_SET_BODY_LIMIT && arg) {
        atomic_store_explicit(&h->body_limit, *(const size_t *)arg, memory_order_relaxed);
        return MARBLE_OK;
    }
    return MARBLE_ERR_UNSUPPORTED;
}

static void http_destroy(marble_vfs *v)
{
    http_vfs *h = (http_vfs *)v;
    if (!h) return;
    for (int i = 0; i < h->npool; i++)
        curl_easy_cleanup(h->pool[i]);
    if (h->share) curl_share_cleanup(h->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&h->share_mu[i]);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void marble_http_options_init(marble_http_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->connect_timeout_ms = 5000;
    o->timeout_ms = 30000;
    o->max_retries = 4;
    o->retry_base_ms = 100;
    o->readahead = (size_t)1 << 20;
    o->verify_tls = 1;
}

int marble_vfs_http_create(const marble_http_options *o, int secure, marble_vfs **out,
                           marble_error *err)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_http_create: out is NULL");
    *out = NULL;
    marble_http_options opts;
    if (o)
        opts = *o;
    else
        marble_http_options_init(&opts);
    if (opts.connect_timeout_ms <= 0 || opts.timeout_ms <= 0 || opts.max_retries < 0 ||
        opts.max_retries > 100)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_http_create: timeouts must be positive and "
                                "max_retries in [0, 100] (got %ld, %ld, %d)",
                                opts.connect_timeout_ms, opts.timeout_ms, opts.max_retries);
    http_vfs *h = calloc(1, sizeof *h);
    if (!h) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "creating the http backend");
    h->o = opts;
    h->secure = secure ? 1 : 0;
    pthread_mutex_init(&h->mu, NULL);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&h->share_mu[i], NULL);
    atomic_init(&h->body_limit, DEFAULT_BODY_LIMIT);
    atomic_init(&h->jitter, (uint64_t)(uintptr_t)h ^ (uint64_t)time(NULL));
    h->base.version = MARBLE_VFS_VERSION;
    h->base.name = h->secure ? "https" : "http";
    h->base.caps = MARBLE_CAP_RANDOM_READ;
    h->base.data = h;
    h->base.open = http_open;
    h->base.stat = http_stat;
    h->base.list = http_list;
    h->base.mkdir = http_mkdir;
    h->base.remove = http_remove;
    h->base.rename = http_rename;
    h->base.sync_dir = http_sync_dir;
    h->base.control = http_control;
    h->base.destroy = http_destroy;
    int rc = ready(h, err);
    if (rc == MARBLE_OK && !(h->share = curl_share_init()))
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "creating the http backend: curl share");
    if (rc == MARBLE_OK) {
        curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    }
    if (rc != MARBLE_OK) {
        http_destroy(&h->base);
        return rc;
    }
    *out = &h->base;
    return MARBLE_OK;
}
