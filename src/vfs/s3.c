/*
 * The S3-compatible backend: paths "bucket/key" map to objects, requests are signed by libcurl
 * (CURLOPT_AWS_SIGV4) and XML answers are read with libxml2. Reads are ranged GETs on a handle
 * that knows the object's size (from the HEAD at open); writes are a sequential stream that
 * becomes one PUT, or a multipart upload whose parts go up in parallel on a marble_sched. A
 * directory is a key prefix; mkdir leaves a zero-byte marker "dir/" so empty directories exist.
 *
 * Thread safety: the backend is shared by every thread; its mutable state is the pool of idle
 * curl handles (pool_mu), the private scheduler (sched_mu, created on the first multipart upload)
 * and relaxed counters. A read handle is immutable after open, so positional reads may run from
 * several threads. A write handle is for one thread; its part tasks share `parts` and `inflight`
 * under wf->mu. Lock order: wf->mu -> pool_mu (never the other way).
 * Invariants: a write handle has an upload id iff a part was started; every part task holds
 * one `inflight` count until it finished.
 */
#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "marble/base.h"
#include "marble/remote.h"
#include "vfs/vfs_internal.h"

#define POOL_MAX 32
#define MAX_BODY (16u << 20) /* XML answers larger than this are refused */
#define MIN_PART (5u << 20)
#define MAX_PARTS 10000

typedef struct s3_vfs {
    marble_vfs base;
    char *endpoint; /* "scheme://host[:port]" without a trailing slash */
    char *scheme, *hostport;
    char *region, *key_id, *secret, *token;
    char *sigv4, *userpwd;
    int path_style;
    size_t part_size;
    int max_parallel;
    long connect_timeout_ms, timeout_ms;
    int max_retries;
    uint32_t retry_base_ms;
    marble_sched *sched;
    int own_sched;
    pthread_mutex_t sched_mu, pool_mu;
    CURL *pool[POOL_MAX];
    int npool;
    _Atomic int list_page;
    _Atomic int fail_part; /* n > 0: the nth UploadPart from now fails */
    _Atomic uint64_t requests, retries, puts, mpus, parts, aborts, abort_failures, max_inflight;
} s3_vfs;

/* ---- small helpers ------------------------------------------------------------------------- */

static void bump(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int overflow;
} sbuf;

static int sb_add(sbuf *b, const void *data, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int sb_str(sbuf *b, const char *s)
{
    return sb_add(b, s, strlen(s));
}

/* Appends s percent-encoded (RFC 3986 unreserved kept; '/' kept when keep_slash). */
static int sb_enc(sbuf *b, const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            if (sb_add(b, s, 1)) return -1;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (sb_add(b, e, 3)) return -1;
        }
    }
    return 0;
}

static char *dupnul(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Splits "bucket/key" (leading and trailing slashes ignored) into fresh strings. */
static int split_path(const char *path, char **bucket, char **key, marble_error *err,
                      const char *op)
{
    while (*path == '/')
        path++;
    const char *slash = strchr(path, '/');
    size_t bl = slash ? (size_t)(slash - path) : strlen(path);
    if (bl == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%s s3://%s: the path has no bucket (expected s3://bucket/key)", op,
                                path);
    const char *k = slash ? slash + 1 : "";
    size_t kl = strlen(k);
    while (kl && k[kl - 1] == '/')
        kl--;
    *bucket = strndup(path, bl);
    *key = strndup(k, kl);
    if (!*bucket || !*key) {
        free(*bucket);
        free(*key);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s s3://%s", op, path);
    }
    return MARBLE_OK;
}

/* ---- XML ----------------------------------------------------------------------------------- */

static xmlDocPtr xml_parse(const char *p, size_t n)
{
    if (!p || n == 0 || n > INT32_MAX) return NULL;
    return xmlReadMemory(p, (int)n, "s3.xml", NULL,
                         XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

static int name_is(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && n->name && !strcmp((const char *)n->name, name);
}

static xmlNodePtr child(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next)
        if (name_is(c, name)) return c;
    return NULL;
}

/* The text of n's child `name` into out (truncated to cap), "" if missing. */
static void child_text(xmlNodePtr n, const char *name, char *out, size_t cap)
{
    out[0] = 0;
    xmlNodePtr c = child(n, name);
    if (!c) return;
    xmlChar *t = xmlNodeGetContent(c);
    if (t) {
        snprintf(out, cap, "%s", (const char *)t);
        xmlFree(t);
    }
}

/* A malloc'd copy of the text of n's child `name`, NULL if missing. */
static char *child_dup(xmlNodePtr n, const char *name)
{
    xmlNodePtr c = child(n, name);
    if (!c) return NULL;
    xmlChar *t = xmlNodeGetContent(c);
    char *s = t ? strdup((const char *)t) : NULL;
    if (t) xmlFree(t);
    return s;
}

/* ---- requests ------------------------------------------------------------------------------ */

typedef struct s3_req {
    const char *method; /* GET, HEAD, PUT, POST, DELETE */
    const char *bucket, *key;
    const char *query;      /* encoded and sorted, without '?'; may be NULL */
    const void *body;       /* request body (PUT, POST) */
    size_t body_len;
    const char *hdr[4];     /* extra headers ("Name: value"), NULL-terminated */
    int has_range;
    uint64_t range_off, range_len;
    void *dst;              /* ranged GET: bytes go here (at most dst_cap) */
    size_t dst_cap;
    /* results */
    long status;
    sbuf resp;              /* the body when dst is NULL (bounded by MAX_BODY) */
    size_t dst_got;
    uint64_t content_length;
    int has_length;
    int64_t mtime_ns;
    char etag[160];
    char code[64];          /* S3 error code from the XML body, if any */
    char msg[160];
    CURL *h;
    uint64_t skip; /* a 200 answer to a ranged GET: bytes still to drop */
    int body_too_big;
} s3_req;

typedef struct up_ctx {
    const unsigned char *p;
    size_t n, off;
} up_ctx;

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    up_ctx *u = ud;
    size_t want = size * nitems, left = u->n - u->off;
    if (want > left) want = left;
    if (want) memcpy(buf, u->p + u->off, want);
    u->off += want;
    return want;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    s3_req *r = ud;
    size_t n = size * nmemb;
    long st = 0;
    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &st);
    if (r->dst && (st == 206 || st == 200)) {
        const char *p = data;
        size_t left = n;
        if (st == 200 && r->has_range) {
            /* The server ignored the range: drop what comes before it. */
            size_t drop = r->skip < left ? (size_t)r->skip : left;
            r->skip -= drop;
            p += drop;
            left -= drop;
        }
        size_t room = r->dst_cap - r->dst_got;
        size_t take = left < room ? left : room;
        if (take) memcpy((char *)r->dst + r->dst_got, p, take);
        r->dst_got += take;
        return n; /* bytes past the range are ignored (bounded by dst_cap) */
    }
    if (r->resp.n + n > MAX_BODY) {
        r->body_too_big = 1;
        return 0;
    }
    if (sb_add(&r->resp, data, n)) return 0;
    return n;
}

static size_t header_cb(char *data, size_t size, size_t nitems, void *ud)
{
    s3_req *r = ud;
    size_t n = size * nitems;
    if (n >= 5 && !strncmp(data, "HTTP/", 5)) {
        r->etag[0] = 0; /* a new answer (after a redirect or 100-continue) */
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon) return n;
    size_t nl = (size_t)(colon - data);
    const char *v = colon + 1;
    const char *end = data + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vl = (size_t)(end - v);
    if (nl == 4 && !strncasecmp(data, "ETag", 4)) {
        snprintf(r->etag, sizeof r->etag, "%.*s", (int)(vl < sizeof r->etag ? vl : 0), v);
    } else if (nl == 13 && !strncasecmp(data, "Last-Modified", 13)) {
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(vl < sizeof tmp ? vl : 0), v);
        time_t t = curl_getdate(tmp, NULL);
        if (t > 0) r->mtime_ns = (int64_t)t * 1000000000;
    }
    return n;
}

static CURL *get_handle(s3_vfs *s)
{
    CURL *h = NULL;
    pthread_mutex_lock(&s->pool_mu);
    if (s->npool) h = s->pool[--s->npool];
    pthread_mutex_unlock(&s->pool_mu);
    if (h)
        curl_easy_reset(h); /* keeps the connection cache */
    else
        h = curl_easy_init();
    return h;
}

static void put_handle(s3_vfs *s, CURL *h)
{
    pthread_mutex_lock(&s->pool_mu);
    if (s->npool < POOL_MAX) {
        s->pool[s->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (h) curl_easy_cleanup(h);
}

static int build_url(s3_vfs *s, const s3_req *r, sbuf *u)
{
    int rc = 0;
    if (s->path_style) {
        rc |= sb_str(u, s->endpoint);
        rc |= sb_str(u, "/");
        rc |= sb_enc(u, r->bucket, 0);
        if (r->key && r->key[0]) rc |= sb_str(u, "/");
    } else {
        rc |= sb_str(u, s->scheme);
        rc |= sb_str(u, "://");
        rc |= sb_str(u, r->bucket);
        rc |= sb_str(u, ".");
        rc |= sb_str(u, s->hostport);
        rc |= sb_str(u, "/");
    }
    if (r->key && r->key[0]) rc |= sb_enc(u, r->key, 1);
    if (r->query && r->query[0]) {
        rc |= sb_str(u, "?");
        rc |= sb_str(u, r->query);
    }
    return rc ? -1 : 0;
}

static void parse_error_body(s3_req *r)
{
    r->code[0] = r->msg[0] = 0;
    xmlDocPtr doc = xml_parse(r->resp.p, r->resp.n);
    if (!doc) return;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (name_is(root, "Error")) {
        child_text(root, "Code", r->code, sizeof r->code);
        child_text(root, "Message", r->msg, sizeof r->msg);
    }
    xmlFreeDoc(doc);
}

static int transient_curl(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

static void backoff(s3_vfs *s, int attempt)
{
    uint64_t ms = (uint64_t)s->retry_base_ms << (attempt < 16 ? attempt : 16);
    if (ms > 20000) ms = 20000;
    /* Jitter: between half and all of it. */
    uint64_t j = marble_hash64(&ms, sizeof ms, marble_now_ns()) % (ms / 2 + 1);
    marble_sleep_ns((ms / 2 + j) * 1000000ull);
}

/* "s3://bucket/key" for messages. */
static void what(const s3_req *r, char *out, size_t cap)
{
    snprintf(out, cap, "s3://%s%s%s", r->bucket, r->key && r->key[0] ? "/" : "",
             r->key ? r->key : "");
}

/* Sends r with retries. Returns MARBLE_OK when an HTTP answer arrived (any status: the caller
 * judges it), or a transport error (timeouts -> MARBLE_ERR_TIMEOUT) with a message. */
static int perform(s3_vfs *s, s3_req *r, const char *op, marble_error *err)
{
    char w[600];
    what(r, w, sizeof w);
    if (!s->key_id || !s->key_id[0] || !s->secret || !s->secret[0])
        return marble_error_set(err, MARBLE_ERR_PERMISSION,
                                "%s %s: no S3 credentials: set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)",
                                op, w);
    sbuf url = {0};
    if (build_url(s, r, &url)) {
        free(url.p);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s %s", op, w);
    }
    struct curl_slist *hl = NULL;
    char range[80];
    hl = curl_slist_append(hl, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    hl = curl_slist_append(hl, "Expect:");
    if (!strcmp(r->method, "PUT") || !strcmp(r->method, "POST"))
        hl = curl_slist_append(hl, "Content-Type: application/octet-stream");
    if (s->token && s->token[0]) {
        sbuf t = {0};
        if (!sb_str(&t, "x-amz-security-token: ") && !sb_str(&t, s->token))
            hl = curl_slist_append(hl, t.p);
        free(t.p);
    }
    if (r->has_range) {
        snprintf(range, sizeof range, "Range: bytes=%llu-%llu", (unsigned long long)r->range_off,
                 (unsigned long long)(r->range_off + r->range_len - 1));
        hl = curl_slist_append(hl, range);
    }
    for (int i = 0; i < 4 && r->hdr[i]; i++)
        hl = curl_slist_append(hl, r->hdr[i]);
    CURL *h = get_handle(s);
    if (!h || !hl) {
        if (h) put_handle(s, h);
        curl_slist_free_all(hl);
        free(url.p);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s %s: allocating a request", op, w);
    }
    int rc = MARBLE_OK;
    for (int attempt = 0;; attempt++) {
        up_ctx up = {r->body, r->body_len, 0};
        r->status = 0;
        r->resp.n = 0;
        r->dst_got = 0;
        r->skip = r->range_off;
        r->body_too_big = 0;
        r->etag[0] = 0;
        r->h = h;
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url.p);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->timeout_ms);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
        if (!strcmp(r->method, "HEAD")) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (!strcmp(r->method, "PUT")) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
            curl_easy_setopt(h, CURLOPT_READDATA, &up);
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
        } else if (!strcmp(r->method, "POST")) {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        } else if (strcmp(r->method, "GET") != 0) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
        }
        bump(&s->requests);
        CURLcode cc = curl_easy_perform(h);
        if (cc == CURLE_OK) {
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
            curl_off_t cl = -1;
            curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
            r->has_length = cl >= 0;
            r->content_length = cl >= 0 ? (uint64_t)cl : 0;
            if (r->status >= 300) parse_error_body(r);
            int transient = r->status >= 500 || r->status == 429 ||
                            !strcmp(r->code, "SlowDown") || !strcmp(r->code, "RequestTimeout");
            if (!transient) break;
            if (attempt >= s->max_retries) break; /* the caller reports the status */
        } else if (cc == CURLE_WRITE_ERROR && r->body_too_big) {
            rc = marble_error_set(err, MARBLE_ERR_IO, "%s %s: the answer is larger than %u bytes",
                                  op, w, MAX_BODY);
            break;
        } else if (!transient_curl(cc) || attempt >= s->max_retries) {
            int code = cc == CURLE_OPERATION_TIMEDOUT ? MARBLE_ERR_TIMEOUT
                       : cc == CURLE_OUT_OF_MEMORY    ? MARBLE_ERR_NO_MEMORY
                                                      : MARBLE_ERR_IO;
            rc = marble_error_set(err, code, "%s %s: %s (%s) after %d attempt(s)", op, w,
                                  curl_easy_strerror(cc), s->endpoint, attempt + 1);
            break;
        }
        bump(&s->retries);
        backoff(s, attempt);
    }
    r->h = NULL;
    put_handle(s, h);
    curl_slist_free_all(hl);
    free(url.p);
    return rc;
}

/* Turns a non-2xx answer into an error naming the object. */
static int status_error(s3_vfs *s, const s3_req *r, const char *op, marble_error *err)
{
    char w[600];
    what(r, w, sizeof w);
    const char *code = r->code;
    if (!strcmp(code, "NoSuchBucket"))
        return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "%s %s: no such bucket \"%s\" at %s",
                                op, w, r->bucket, s->endpoint);
    if (r->status == 404 || !strcmp(code, "NoSuchKey") || !strcmp(code, "NoSuchUpload"))
        return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "%s %s: not found%s%s", op, w,
                                code[0] ? ": " : "", code);
    if (r->status == 401 || r->status == 403 || !strcmp(code, "InvalidAccessKeyId") ||
        !strcmp(code, "SignatureDoesNotMatch") || !strcmp(code, "AccessDenied"))
        return marble_error_set(err, MARBLE_ERR_PERMISSION,
                                "%s %s: access denied (HTTP %ld%s%s): check AWS_ACCESS_KEY_ID, "
                                "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION",
                                op, w, r->status, code[0] ? " " : "", code);
    if (r->status == 412 || !strcmp(code, "PreconditionFailed"))
        return marble_error_set(err, MARBLE_ERR_EXISTS, "%s %s: already exists", op, w);
    if (!strcmp(code, "RequestTimeout"))
        return marble_error_set(err, MARBLE_ERR_TIMEOUT, "%s %s: HTTP %ld %s: %s", op, w,
                                r->status, code, r->msg);
    return marble_error_set(err, MARBLE_ERR_IO, "%s %s: HTTP %ld%s%s%s%s", op, w, r->status,
                            code[0] ? " " : "", code, r->msg[0] ? ": " : "", r->msg);
}

static int ok2xx(const s3_req *r)
{
    return r->status >= 200 && r->status < 300;
}

/* One request that must succeed with 2xx. */
static int request(s3_vfs *s, s3_req *r, const char *op, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(perform(s, r, op, err));
    if (!ok2xx(r)) return status_error(s, r, op, err);
    return MARBLE_OK;
}

/* ---- listing ------------------------------------------------------------------------------- */

/* Called per entry of one ListObjectsV2 page: `name` relative to the prefix. */
typedef int (*page_fn)(void *ud, const char *key, int is_prefix);

/* Lists keys under `prefix` (delimiter "/" when delim), up to max_total entries (0: all).
 * fn returning non-zero stops. *found counts the entries seen. */
static int list_keys(s3_vfs *s, const char *bucket, const char *prefix, int delim, int page,
                     size_t max_total, page_fn fn, void *ud, size_t *found, const char *op,
                     marble_error *err)
{
    char *token = NULL;
    size_t seen = 0;
    int rc = MARBLE_OK, stop = 0;
    if (found) *found = 0;
    do {
        sbuf q = {0};
        int per = page;
        if (max_total && max_total - seen < (size_t)per) per = (int)(max_total - seen);
        char num[32];
        snprintf(num, sizeof num, "%d", per);
        /* Parameters in canonical (sorted) order. */
        int e = 0;
        if (token) {
            e |= sb_str(&q, "continuation-token=");
            e |= sb_enc(&q, token, 0);
            e |= sb_str(&q, "&");
        }
        if (delim) e |= sb_str(&q, "delimiter=%2F&");
        e |= sb_str(&q, "list-type=2&max-keys=");
        e |= sb_str(&q, num);
        e |= sb_str(&q, "&prefix=");
        e |= sb_enc(&q, prefix, 0);
        if (e) {
            free(q.p);
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s s3://%s/%s", op, bucket, prefix);
            break;
        }
        s3_req r = {.method = "GET", .bucket = bucket, .key = "", .query = q.p};
        rc = request(s, &r, op, err);
        free(q.p);
        free(token);
        token = NULL;
        if (rc != MARBLE_OK) {
            free(r.resp.p);
            break;
        }
        xmlDocPtr doc = xml_parse(r.resp.p, r.resp.n);
        xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
        if (!name_is(root, "ListBucketResult")) {
            rc = marble_error_set(err, MARBLE_ERR_IO,
                                  "%s s3://%s/%s: the listing is not a ListBucketResult", op,
                                  bucket, prefix);
            if (doc) xmlFreeDoc(doc);
            free(r.resp.p);
            break;
        }
        for (xmlNodePtr c = root->children; c && !stop && rc == MARBLE_OK; c = c->next) {
            int is_prefix = name_is(c, "CommonPrefixes");
            if (!is_prefix && !name_is(c, "Contents")) continue;
            char *k = child_dup(c, is_prefix ? "Prefix" : "Key");
            if (!k) continue;
            seen++;
            if (fn && fn(ud, k, is_prefix)) stop = 1;
            free(k);
        }
        char trunc[16];
        child_text(root, "IsTruncated", trunc, sizeof trunc);
        if (!stop && !strcmp(trunc, "true") && (!max_total || seen < max_total)) {
            token = child_dup(root, "NextContinuationToken");
            if (!token || !token[0]) {
                free(token);
                token = NULL;
                rc = marble_error_set(err, MARBLE_ERR_IO,
                                      "%s s3://%s/%s: a truncated listing without a "
                                      "NextContinuationToken",
                                      op, bucket, prefix);
            }
        }
        xmlFreeDoc(doc);
        free(r.resp.p);
    } while (token && rc == MARBLE_OK && !stop);
    free(token);
    if (found) *found = seen;
    return rc;
}

static int page_size(s3_vfs *s)
{
    return atomic_load_explicit(&s->list_page, memory_order_relaxed);
}

/* Stat of a bucket/key pair. *is_dir set for buckets and prefixes. */
static int stat_key(s3_vfs *s, const char *bucket, const char *key, marble_stat *out,
                    const char *op, marble_error *err)
{
    memset(out, 0, sizeof *out);
    if (!key[0]) {
        s3_req r = {.method = "HEAD", .bucket = bucket, .key = ""};
        int rc = perform(s, &r, op, err);
        free(r.resp.p);
        if (rc != MARBLE_OK) return rc;
        if (r.status == 404)
            return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "%s s3://%s: no such bucket \"%s\"",
                                    op, bucket, bucket);
        if (!ok2xx(&r)) return status_error(s, &r, op, err);
        out->is_dir = 1;
        return MARBLE_OK;
    }
    s3_req r = {.method = "HEAD", .bucket = bucket, .key = key};
    int rc = perform(s, &r, op, err);
    free(r.resp.p);
    if (rc != MARBLE_OK) return rc;
    if (ok2xx(&r)) {
        out->size = r.content_length;
        out->mtime_ns = r.mtime_ns;
        return MARBLE_OK;
    }
    if (r.status != 404) return status_error(s, &r, op, err);
    size_t kl = strlen(key);
    char *prefix = malloc(kl + 2);
    if (!prefix) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s s3://%s/%s", op, bucket, key);
    memcpy(prefix, key, kl);
    memcpy(prefix + kl, "/", 2);
    size_t found = 0;
    rc = list_keys(s, bucket, prefix, 0, 1, 1, NULL, NULL, &found, op, err);
    free(prefix);
    if (rc != MARBLE_OK) return rc;
    if (!found)
        return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "%s s3://%s/%s: not found", op, bucket,
                                key);
    out->is_dir = 1;
    return MARBLE_OK;
}

/* ---- read handles -------------------------------------------------------------------------- */

typedef struct s3_file {
    marble_file base;
    s3_vfs *s;
    char *bucket, *key;
    int writing;
    /* reading */
    uint64_t size;
    /* writing */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned char *buf;
    size_t buf_n;
    uint64_t pos;
    char *upload_id;
    int nparts;
    char **etags; /* [nparts], filled by the part tasks */
    int inflight, peak;
    int failed;   /* a part failed: its code */
    marble_error part_err;
    int done;     /* completed (or aborted) */
    int exclusive;
    marble_group group;
    int group_used;
} s3_file;

static int f_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                  marble_error *err)
{
    s3_file *sf = (s3_file *)f;
    *nread = 0;
    if (sf->writing) return marble__vfs_unsupported(err, "reading a write stream", "s3");
    if (off >= sf->size || n == 0) return MARBLE_OK;
    uint64_t len = sf->size - off < n ? sf->size - off : n;
    s3_req r = {.method = "GET",
                .bucket = sf->bucket,
                .key = sf->key,
                .has_range = 1,
                .range_off = off,
                .range_len = len,
                .dst = buf,
                .dst_cap = (size_t)len};
    int rc = request(sf->s, &r, "read", err);
    free(r.resp.p);
    if (rc != MARBLE_OK) return rc;
    if (r.dst_got != len)
        return marble_error_set(err, MARBLE_ERR_IO,
                                "read s3://%s/%s: asked for %llu bytes at %llu, got %zu (was the "
                                "object replaced?)",
                                sf->bucket, sf->key, (unsigned long long)len,
                                (unsigned long long)off, r.dst_got);
    *nread = (size_t)len;
    return MARBLE_OK;
}

/* ---- write handles ------------------------------------------------------------------------- */

typedef struct part_task {
    s3_file *sf;
    int number; /* 1-based */
    unsigned char *data;
    size_t n;
} part_task;

static marble_task_status part_run(marble_task_ctx *ctx, void *arg)
{
    part_task *t = arg;
    s3_file *sf = t->sf;
    s3_vfs *s = sf->s;
    marble_error e;
    marble_error_clear(&e);
    int rc = MARBLE_OK;
    int armed = atomic_load_explicit(&s->fail_part, memory_order_relaxed);
    if (armed > 0 && atomic_fetch_sub_explicit(&s->fail_part, 1, memory_order_relaxed) == 1)
        rc = marble_error_set(&e, MARBLE_ERR_IO, "upload part %d of s3://%s/%s: injected failure",
                              t->number, sf->bucket, sf->key);
    char etag[160] = "";
    if (rc == MARBLE_OK && !marble_task_cancelled(ctx)) {
        char q[600];
        snprintf(q, sizeof q, "partNumber=%d&uploadId=", t->number);
        sbuf qs = {0};
        if (sb_str(&qs, q) || sb_enc(&qs, sf->upload_id, 0)) {
            rc = marble_error_set(&e, MARBLE_ERR_NO_MEMORY, "upload part %d", t->number);
        } else {
            s3_req r = {.method = "PUT",
                        .bucket = sf->bucket,
                        .key = sf->key,
                        .query = qs.p,
                        .body = t->data,
                        .body_len = t->n};
            rc = request(s, &r, "upload part of", &e);
            free(r.resp.p);
            if (rc == MARBLE_OK && !r.etag[0])
                rc = marble_error_set(&e, MARBLE_ERR_IO,
                                      "upload part %d of s3://%s/%s: no ETag in the answer",
                                      t->number, sf->bucket, sf->key);
            snprintf(etag, sizeof etag, "%s", r.etag);
        }
        free(qs.p);
        if (rc == MARBLE_OK) bump(&s->parts);
    }
    pthread_mutex_lock(&sf->mu);
    if (rc == MARBLE_OK) {
        sf->etags[t->number - 1] = strdup(etag);
        if (!sf->etags[t->number - 1] && !sf->failed) {
            sf->failed = MARBLE_ERR_NO_MEMORY;
            marble_error_set(&sf->part_err, MARBLE_ERR_NO_MEMORY, "upload part %d", t->number);
        }
    } else if (!sf->failed) {
        sf->failed = rc;
        sf->part_err = e;
    }
    sf->inflight--;
    pthread_cond_broadcast(&sf->cv);
    pthread_mutex_unlock(&sf->mu);
    free(t->data);
    free(t);
    return MARBLE_TASK_DONE;
}

static int ensure_sched(s3_vfs *s, marble_error *err)
{
    int rc = MARBLE_OK;
    pthread_mutex_lock(&s->sched_mu);
    if (!s->sched) {
        marble_sched_options o;
        marble_sched_options_init(&o);
        o.threads = s->max_parallel;
        rc = marble_sched_create(&o, &s->sched, err);
        if (rc == MARBLE_OK) s->own_sched = 1;
    }
    pthread_mutex_unlock(&s->sched_mu);
    return rc;
}

static int start_upload(s3_file *sf, marble_error *err)
{
    s3_vfs *s = sf->s;
    MARBLE_RETURN_NOT_OK(ensure_sched(s, err));
    s3_req r = {.method = "POST", .bucket = sf->bucket, .key = sf->key, .query = "uploads="};
    int rc = request(s, &r, "start a multipart upload of", err);
    if (rc == MARBLE_OK) {
        xmlDocPtr doc = xml_parse(r.resp.p, r.resp.n);
        xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
        sf->upload_id = name_is(root, "InitiateMultipartUploadResult") ? child_dup(root, "UploadId")
                                                                        : NULL;
        if (!sf->upload_id || !sf->upload_id[0]) {
            free(sf->upload_id);
            sf->upload_id = NULL;
            rc = marble_error_set(err, MARBLE_ERR_IO,
                                  "start a multipart upload of s3://%s/%s: no UploadId in the "
                                  "answer",
                                  sf->bucket, sf->key);
        }
        if (doc) xmlFreeDoc(doc);
    }
    free(r.resp.p);
    if (rc != MARBLE_OK) return rc;
    bump(&s->mpus);
    sf->etags = calloc(MAX_PARTS, sizeof *sf->etags);
    if (!sf->etags)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "upload s3://%s/%s", sf->bucket,
                                sf->key);
    marble_group_init(&sf->group, s->sched, NULL);
    sf->group_used = 1;
    return MARBLE_OK;
}

/* Hands the buffer to a part task, waiting while max_parallel parts are in flight. */
static int send_part(s3_file *sf, marble_error *err)
{
    s3_vfs *s = sf->s;
    if (!sf->upload_id) MARBLE_RETURN_NOT_OK(start_upload(sf, err));
    if (sf->nparts == MAX_PARTS)
        return marble_error_set(err, MARBLE_ERR_LIMIT,
                                "upload s3://%s/%s: more than %d parts (raise part_size)",
                                sf->bucket, sf->key, MAX_PARTS);
    part_task *t = calloc(1, sizeof *t);
    if (!t) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "upload s3://%s/%s", sf->bucket, sf->key);
    pthread_mutex_lock(&sf->mu);
    while (sf->inflight >= s->max_parallel && !sf->failed)
        pthread_cond_wait(&sf->cv, &sf->mu);
    int failed = sf->failed;
    if (failed && err) *err = sf->part_err;
    if (!failed) {
        sf->inflight++;
        if (sf->inflight > sf->peak) sf->peak = sf->inflight;
    }
    pthread_mutex_unlock(&sf->mu);
    if (failed) {
        free(t);
        return failed;
    }
    t->sf = sf;
    t->number = ++sf->nparts;
    t->data = sf->buf;
    t->n = sf->buf_n;
    sf->buf = NULL;
    sf->buf_n = 0;
    int rc = marble_group_spawn(&sf->group, part_run, t);
    if (rc != MARBLE_OK) {
        pthread_mutex_lock(&sf->mu);
        sf->inflight--;
        if (!sf->failed) {
            sf->failed = rc;
            marble_error_set(&sf->part_err, rc, "upload s3://%s/%s: cannot start a part task",
                             sf->bucket, sf->key);
        }
        pthread_mutex_unlock(&sf->mu);
        free(t->data);
        free(t);
        return marble_error_set(err, rc, "upload s3://%s/%s: cannot start a part task", sf->bucket,
                                sf->key);
    }
    uint64_t peak = (uint64_t)sf->peak;
    uint64_t cur = atomic_load_explicit(&s->max_inflight, memory_order_relaxed);
    while (peak > cur && !atomic_compare_exchange_weak_explicit(&s->max_inflight, &cur, peak,
                                                                memory_order_relaxed,
                                                                memory_order_relaxed)) {
    }
    return MARBLE_OK;
}

static void wait_parts(s3_file *sf)
{
    if (!sf->group_used) return;
    marble_group_wait(&sf->group, NULL);
    pthread_mutex_lock(&sf->mu);
    while (sf->inflight > 0)
        pthread_cond_wait(&sf->cv, &sf->mu);
    pthread_mutex_unlock(&sf->mu);
}

static void abort_upload(s3_file *sf)
{
    if (!sf->upload_id) return;
    s3_vfs *s = sf->s;
    wait_parts(sf);
    sbuf q = {0};
    if (!sb_str(&q, "uploadId=") && !sb_enc(&q, sf->upload_id, 0)) {
        s3_req r = {.method = "DELETE", .bucket = sf->bucket, .key = sf->key, .query = q.p};
        bump(&s->aborts);
        if (request(s, &r, "abort the multipart upload of", NULL) != MARBLE_OK)
            bump(&s->abort_failures);
        free(r.resp.p);
    }
    free(q.p);
    free(sf->upload_id);
    sf->upload_id = NULL;
}

static int finish_upload(s3_file *sf, marble_error *err)
{
    s3_vfs *s = sf->s;
    const char *excl = sf->exclusive ? "If-None-Match: *" : NULL;
    if (!sf->upload_id) {
        s3_req r = {.method = "PUT",
                    .bucket = sf->bucket,
                    .key = sf->key,
                    .body = sf->buf,
                    .body_len = sf->buf_n,
                    .hdr = {excl}};
        int rc = request(s, &r, "upload", err);
        free(r.resp.p);
        if (rc == MARBLE_OK) bump(&s->puts);
        return rc;
    }
    int rc = MARBLE_OK;
    if (sf->buf_n > 0 || sf->nparts == 0) rc = send_part(sf, err);
    wait_parts(sf);
    if (rc == MARBLE_OK && sf->failed) {
        rc = sf->failed;
        if (err) *err = sf->part_err;
    }
    sbuf x = {0};
    if (rc == MARBLE_OK) {
        int e = sb_str(&x, "<CompleteMultipartUpload>");
        for (int i = 0; i < sf->nparts && !e; i++) {
            char num[64];
            snprintf(num, sizeof num, "<Part><PartNumber>%d</PartNumber><ETag>", i + 1);
            e |= sb_str(&x, num);
            for (const char *c = sf->etags[i] ? sf->etags[i] : ""; *c && !e; c++)
                e |= *c == '"' ? sb_str(&x, "&quot;") : *c == '&' ? sb_str(&x, "&amp;")
                     : *c == '<' ? sb_str(&x, "&lt;") : sb_add(&x, c, 1);
            e |= sb_str(&x, "</ETag></Part>");
        }
        e |= sb_str(&x, "</CompleteMultipartUpload>");
        if (e) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "upload s3://%s/%s", sf->bucket, sf->key);
    }
    sbuf q = {0};
    if (rc == MARBLE_OK && (sb_str(&q, "uploadId=") || sb_enc(&q, sf->upload_id, 0)))
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "upload s3://%s/%s", sf->bucket, sf->key);
    if (rc == MARBLE_OK) {
        s3_req r = {.method = "POST",
                    .bucket = sf->bucket,
                    .key = sf->key,
                    .query = q.p,
                    .body = x.p,
                    .body_len = x.n,
                    .hdr = {excl}};
        rc = request(s, &r, "complete the multipart upload of", err);
        /* A 200 answer may still carry an error. */
        if (rc == MARBLE_OK && r.resp.n && strstr(r.resp.p, "<Error>")) {
            parse_error_body(&r);
            r.status = 500;
            rc = status_error(s, &r, "complete the multipart upload of", err);
        }
        free(r.resp.p);
    }
    free(q.p);
    free(x.p);
    if (rc != MARBLE_OK) abort_upload(sf);
    return rc;
}

static int f_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    s3_file *sf = (s3_file *)f;
    if (!sf->writing) return marble__vfs_unsupported(err, "writing a read handle", "s3");
    if (sf->done)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "write s3://%s/%s: the object was already completed by sync",
                                sf->bucket, sf->key);
    if (sf->failed) {
        if (err) *err = sf->part_err;
        return sf->failed;
    }
    if (off != sf->pos)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "write s3://%s/%s at offset %llu: S3 objects are written "
                                "sequentially (next offset %llu)",
                                sf->bucket, sf->key, (unsigned long long)off,
                                (unsigned long long)sf->pos);
    const unsigned char *p = buf;
    size_t ps = sf->s->part_size;
    while (n > 0) {
        if (!sf->buf && !(sf->buf = malloc(ps)))
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "write s3://%s/%s: %zu bytes",
                                    sf->bucket, sf->key, ps);
        if (sf->buf_n == ps) {
            int rc = send_part(sf, err);
            if (rc != MARBLE_OK) {
                sf->failed = sf->failed ? sf->failed : rc;
                if (!sf->part_err.message[0] && err) sf->part_err = *err;
                return rc;
            }
            continue;
        }
        size_t take = ps - sf->buf_n < n ? ps - sf->buf_n : n;
        memcpy(sf->buf + sf->buf_n, p, take);
        sf->buf_n += take;
        sf->pos += take;
        p += take;
        n -= take;
    }
    return MARBLE_OK;
}

/* On a write stream, appending is writing at the current end: the same sequential write. (An
 * existing object cannot be appended to: opening with APPEND is refused.) */
static int f_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    s3_file *sf = (s3_file *)f;
    if (!sf->writing) return marble__vfs_unsupported(err, "append to a read handle", "s3");
    return f_write(f, sf->pos, buf, n, err);
}

static int f_size(marble_file *f, uint64_t *out, marble_error *err)
{
    (void)err;
    s3_file *sf = (s3_file *)f;
    *out = sf->writing ? sf->pos : sf->size;
    return MARBLE_OK;
}

static int f_sync(marble_file *f, int flags, marble_error *err)
{
    (void)flags;
    s3_file *sf = (s3_file *)f;
    if (!sf->writing || sf->done) return MARBLE_OK;
    if (sf->failed) {
        if (err) *err = sf->part_err;
        return sf->failed;
    }
    int rc = finish_upload(sf, err);
    if (rc == MARBLE_OK)
        sf->done = 1;
    else {
        sf->failed = rc;
        if (err) sf->part_err = *err;
        else marble_error_set(&sf->part_err, rc, "upload s3://%s/%s failed", sf->bucket, sf->key);
    }
    return rc;
}

static int f_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    (void)size;
    return marble__vfs_unsupported(err, "truncate", f->vfs ? f->vfs->name : "s3");
}

static int f_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                 marble_error *err)
{
    (void)off;
    (void)len;
    (void)addr;
    (void)cookie;
    return marble__vfs_unsupported(err, "map", f->vfs ? f->vfs->name : "s3");
}

static void f_unmap(marble_file *f, const void *addr, size_t len, void *cookie)
{
    (void)f;
    (void)addr;
    (void)len;
    (void)cookie;
}

static void file_free(s3_file *sf)
{
    if (sf->etags) {
        for (int i = 0; i < sf->nparts; i++)
            free(sf->etags[i]);
        free(sf->etags);
    }
    if (sf->group_used) marble_group_destroy(&sf->group);
    if (sf->writing) {
        pthread_mutex_destroy(&sf->mu);
        pthread_cond_destroy(&sf->cv);
    }
    free(sf->upload_id);
    free(sf->buf);
    free(sf->bucket);
    free(sf->key);
    free(sf);
}

static int f_close(marble_file *f, marble_error *err)
{
    s3_file *sf = (s3_file *)f;
    int rc = MARBLE_OK;
    if (sf->writing && !sf->done) {
        if (sf->failed) {
            rc = sf->failed;
            if (err) *err = sf->part_err;
            abort_upload(sf);
        } else {
            rc = finish_upload(sf, err);
        }
    }
    wait_parts(sf);
    file_free(sf);
    return rc;
}

static int f_control(marble_file *f, int op, void *arg)
{
    (void)f;
    (void)op;
    (void)arg;
    return MARBLE_ERR_UNSUPPORTED;
}

static const marble_file_methods s3_methods = {MARBLE_FILE_METHODS_VERSION,
                                               f_read,
                                               f_write,
                                               f_append,
                                               f_size,
                                               f_sync,
                                               f_truncate,
                                               f_map,
                                               f_unmap,
                                               f_close,
                                               f_control};

/* ---- the backend --------------------------------------------------------------------------- */

static int s3_open(marble_vfs *v, const char *path, int flags, marble_file **out,
                   marble_error *err)
{
    s3_vfs *s = (s3_vfs *)v;
    *out = NULL;
    if ((flags & MARBLE_OPEN_READ) && (flags & MARBLE_OPEN_WRITE))
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "open s3://%s: S3 objects are opened for reading or for writing, "
                                "not both",
                                path);
    if (flags & MARBLE_OPEN_APPEND)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "open s3://%s: S3 objects cannot be appended to", path);
    s3_file *sf = calloc(1, sizeof *sf);
    if (!sf) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "open s3://%s", path);
    int rc = split_path(path, &sf->bucket, &sf->key, err, "open");
    if (rc != MARBLE_OK) {
        free(sf);
        return rc;
    }
    sf->s = s;
    if (!sf->key[0]) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "open s3://%s: is a directory (a bucket)", sf->bucket);
        goto fail;
    }
    marble_stat st;
    if (flags & MARBLE_OPEN_WRITE) {
        sf->writing = 1;
        pthread_mutex_init(&sf->mu, NULL);
        pthread_cond_init(&sf->cv, NULL);
        sf->exclusive = (flags & MARBLE_OPEN_EXCLUSIVE) != 0;
        if (sf->exclusive || !(flags & MARBLE_OPEN_CREATE)) {
            rc = stat_key(s, sf->bucket, sf->key, &st, "open", err);
            if (rc == MARBLE_OK && st.is_dir)
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "open s3://%s/%s: is a directory", sf->bucket, sf->key);
            else if (rc == MARBLE_OK && sf->exclusive)
                rc = marble_error_set(err, MARBLE_ERR_EXISTS, "open s3://%s/%s: already exists",
                                      sf->bucket, sf->key);
            else if (rc == MARBLE_ERR_NOT_FOUND && sf->exclusive)
                rc = MARBLE_OK;
            if (rc != MARBLE_OK) goto fail;
        }
        if (flags & MARBLE_OPEN_CREATE) {
            /* The parent must exist, as on a file system. */
            const char *slash = strrchr(sf->key, '/');
            char *parent = slash ? strndup(sf->key, (size_t)(slash - sf->key)) : strdup("");
            if (!parent) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "open s3://%s", path);
                goto fail;
            }
            rc = stat_key(s, sf->bucket, parent, &st, "open", err);
            if (rc == MARBLE_OK && !st.is_dir)
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "open s3://%s/%s: s3://%s/%s is not a directory", sf->bucket,
                                      sf->key, sf->bucket, parent);
            else if (rc == MARBLE_ERR_NOT_FOUND && parent[0])
                rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND,
                                      "open s3://%s/%s: the directory s3://%s/%s does not exist",
                                      sf->bucket, sf->key, sf->bucket, parent);
            free(parent);
            if (rc != MARBLE_OK) goto fail;
        }
        sf->base.caps = MARBLE_CAP_SYNC;
    } else {
        rc = stat_key(s, sf->bucket, sf->key, &st, "open", err);
        if (rc == MARBLE_OK && st.is_dir)
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "open s3://%s/%s: is a directory", sf->bucket, sf->key);
        if (rc != MARBLE_OK) goto fail;
        sf->size = st.size;
        sf->base.caps = MARBLE_CAP_RANDOM_READ;
    }
    sf->base.methods = &s3_methods;
    sf->base.flags = flags;
    *out = &sf->base;
    return MARBLE_OK;
fail:
    file_free(sf);
    return rc;
}

static int s3_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    char *bucket, *key;
    MARBLE_RETURN_NOT_OK(split_path(path, &bucket, &key, err, "stat"));
    int rc = stat_key((s3_vfs *)v, bucket, key, out, "stat", err);
    free(bucket);
    free(key);
    return rc;
}

typedef struct list_ctx {
    size_t plen;
    marble_dirent_fn fn;
    void *ud;
    size_t entries;
} list_ctx;

static int list_entry(void *ud, const char *k, int is_prefix)
{
    list_ctx *c = ud;
    if (strlen(k) < c->plen) return 0;
    const char *name = k + c->plen;
    size_t n = strlen(name);
    if (is_prefix && n && name[n - 1] == '/') n--;
    if (n == 0) return 0; /* the directory's own marker */
    char tmp[1024];
    if (n >= sizeof tmp || memchr(name, '/', n)) return 0;
    memcpy(tmp, name, n);
    tmp[n] = 0;
    c->entries++;
    return c->fn(c->ud, tmp, is_prefix);
}

static int s3_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud,
                   marble_error *err)
{
    s3_vfs *s = (s3_vfs *)v;
    char *bucket, *key;
    MARBLE_RETURN_NOT_OK(split_path(dir, &bucket, &key, err, "list"));
    size_t kl = strlen(key);
    char *prefix = malloc(kl + 2);
    int rc = MARBLE_OK;
    if (!prefix) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "list s3://%s", dir);
    } else {
        memcpy(prefix, key, kl);
        memcpy(prefix + kl, "/", 2);
        if (!kl) prefix[0] = 0;
        list_ctx c = {strlen(prefix), fn, ud, 0};
        size_t found = 0;
        rc = list_keys(s, bucket, prefix, 1, page_size(s), 0, list_entry, &c, &found, "list",
                       err);
        if (rc == MARBLE_OK && found == 0 && kl)
            rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "list s3://%s/%s: no such directory",
                                  bucket, key);
    }
    free(prefix);
    free(bucket);
    free(key);
    return rc;
}

static int s3_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    s3_vfs *s = (s3_vfs *)v;
    char *bucket, *key;
    MARBLE_RETURN_NOT_OK(split_path(path, &bucket, &key, err, "mkdir"));
    marble_stat st;
    int rc = stat_key(s, bucket, key, &st, "mkdir", err);
    if (rc == MARBLE_OK) {
        rc = marble_error_set(err, MARBLE_ERR_EXISTS, "mkdir s3://%s%s%s: already exists", bucket,
                              key[0] ? "/" : "", key);
    } else if (rc == MARBLE_ERR_NOT_FOUND && key[0]) {
        size_t kl = strlen(key);
        char *marker = malloc(kl + 2);
        if (!marker) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "mkdir s3://%s", path);
        } else {
            memcpy(marker, key, kl);
            memcpy(marker + kl, "/", 2);
            s3_req r = {.method = "PUT", .bucket = bucket, .key = marker, .body = "", .body_len = 0};
            rc = request(s, &r, "mkdir", err);
            free(r.resp.p);
            free(marker);
        }
    }
    free(bucket);
    free(key);
    return rc;
}

static int delete_key(s3_vfs *s, const char *bucket, const char *key, const char *op,
                      marble_error *err)
{
    s3_req r = {.method = "DELETE", .bucket = bucket, .key = key};
    int rc = request(s, &r, op, err);
    free(r.resp.p);
    return rc;
}

typedef struct rm_ctx {
    const char *marker;
    int marker_seen, others;
} rm_ctx;

static int rm_entry(void *ud, const char *k, int is_prefix)
{
    rm_ctx *c = ud;
    if (!is_prefix && !strcmp(k, c->marker))
        c->marker_seen = 1;
    else
        c->others++;
    return 0;
}

static int s3_remove(marble_vfs *v, const char *path, marble_error *err)
{
    s3_vfs *s = (s3_vfs *)v;
    char *bucket, *key;
    MARBLE_RETURN_NOT_OK(split_path(path, &bucket, &key, err, "remove"));
    int rc;
    if (!key[0]) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "remove s3://%s: buckets are not removed through the VFS", bucket);
        goto out;
    }
    s3_req h = {.method = "HEAD", .bucket = bucket, .key = key};
    rc = perform(s, &h, "remove", err);
    free(h.resp.p);
    if (rc != MARBLE_OK) goto out;
    if (ok2xx(&h)) {
        rc = delete_key(s, bucket, key, "remove", err);
        goto out;
    }
    if (h.status != 404) {
        rc = status_error(s, &h, "remove", err);
        goto out;
    }
    size_t kl = strlen(key);
    char *marker = malloc(kl + 2);
    if (!marker) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "remove s3://%s", path);
        goto out;
    }
    memcpy(marker, key, kl);
    memcpy(marker + kl, "/", 2);
    rm_ctx c = {marker, 0, 0};
    rc = list_keys(s, bucket, marker, 1, 2, 2, rm_entry, &c, NULL, "remove", err);
    if (rc == MARBLE_OK) {
        if (c.others)
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "remove s3://%s/%s: directory not empty", bucket, key);
        else if (c.marker_seen)
            rc = delete_key(s, bucket, marker, "remove", err);
        else
            rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "remove s3://%s/%s: not found",
                                  bucket, key);
    }
    free(marker);
out:
    free(bucket);
    free(key);
    return rc;
}

static int s3_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    s3_vfs *s = (s3_vfs *)v;
    char *fb = NULL, *fk = NULL, *tb = NULL, *tk = NULL;
    int rc = split_path(from, &fb, &fk, err, "rename");
    if (rc != MARBLE_OK) return rc;
    rc = split_path(to, &tb, &tk, err, "rename");
    if (rc != MARBLE_OK) {
        free(fb);
        free(fk);
        return rc;
    }
    sbuf src = {0}, hdr = {0};
    if (!fk[0] || !tk[0]) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "rename s3://%s -> s3://%s: buckets cannot be renamed", from, to);
        goto out;
    }
    if (!strcmp(fb, tb) && !strcmp(fk, tk)) goto out;
    if (sb_str(&src, "/") || sb_enc(&src, fb, 0) || sb_str(&src, "/") || sb_enc(&src, fk, 1) ||
        sb_str(&hdr, "x-amz-copy-source: ") || sb_str(&hdr, src.p)) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "rename s3://%s", from);
        goto out;
    }
    s3_req r = {.method = "PUT", .bucket = tb, .key = tk, .body = "", .body_len = 0,
                .hdr = {hdr.p}};
    rc = perform(s, &r, "rename", err);
    if (rc == MARBLE_OK && ok2xx(&r) && r.resp.n && strstr(r.resp.p, "<Error>")) {
        parse_error_body(&r);
        r.status = 500;
    }
    if (rc == MARBLE_OK && !ok2xx(&r)) {
        if (r.status == 404 && strcmp(r.code, "NoSuchBucket") != 0) {
            marble_stat st;
            /* Say which side is missing: a directory cannot be renamed either. */
            int src_rc = stat_key(s, fb, fk, &st, "rename", NULL);
            if (src_rc == MARBLE_OK && st.is_dir)
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "rename s3://%s -> s3://%s: directories cannot be renamed "
                                      "on S3",
                                      from, to);
            else
                rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND,
                                      "rename s3://%s -> s3://%s: s3://%s not found", from, to,
                                      from);
        } else {
            rc = status_error(s, &r, "rename (copy) to", err);
        }
    }
    free(r.resp.p);
    if (rc == MARBLE_OK) rc = delete_key(s, fb, fk, "rename (delete the source)", err);
out:
    free(src.p);
    free(hdr.p);
    free(fb);
    free(fk);
    free(tb);
    free(tk);
    return rc;
}

static int s3_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    (void)v;
    (void)path;
    (void)err;
    return MARBLE_OK;
}

/* DeleteObjects for every key under "bucket/prefix". */
typedef struct del_ctx {
    sbuf xml;
    int n;
    int oom;
} del_ctx;

static int del_entry(void *ud, const char *k, int is_prefix)
{
    del_ctx *c = ud;
    (void)is_prefix;
    int e = sb_str(&c->xml, "<Object><Key>");
    for (const char *p = k; *p && !e; p++)
        e |= *p == '&' ? sb_str(&c->xml, "&amp;") : *p == '<' ? sb_str(&c->xml, "&lt;")
             : *p == '>' ? sb_str(&c->xml, "&gt;") : sb_add(&c->xml, p, 1);
    e |= sb_str(&c->xml, "</Key></Object>");
    if (e) c->oom = 1;
    c->n++;
    return e;
}

static int delete_prefix(s3_vfs *s, const char *path, marble_error *err)
{
    char *bucket, *prefix;
    while (*path == '/')
        path++;
    const char *slash = strchr(path, '/');
    bucket = strndup(path, slash ? (size_t)(slash - path) : strlen(path));
    prefix = strdup(slash ? slash + 1 : "");
    int rc = MARBLE_OK;
    if (!bucket || !prefix) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "delete s3://%s", path);
    while (rc == MARBLE_OK) {
        del_ctx c = {{0}, 0, 0};
        sb_str(&c.xml, "<Delete><Quiet>true</Quiet>");
        rc = list_keys(s, bucket, prefix, 0, 1000, 1000, del_entry, &c, NULL, "delete", err);
        if (rc == MARBLE_OK && c.oom) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "delete");
        if (rc != MARBLE_OK || c.n == 0) {
            free(c.xml.p);
            break;
        }
        if (sb_str(&c.xml, "</Delete>")) {
            free(c.xml.p);
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "delete");
            break;
        }
        /* S3 wants a checksum of the body: CRC32C, big-endian, base64. */
        uint32_t crc = marble_crc32c(c.xml.p, c.xml.n);
        unsigned char be[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
                               (unsigned char)(crc >> 8), (unsigned char)crc};
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char sum[80];
        snprintf(sum, sizeof sum, "x-amz-checksum-crc32c: %c%c%c%c%c%c==", b64[be[0] >> 2],
                 b64[((be[0] & 3) << 4) | (be[1] >> 4)], b64[((be[1] & 15) << 2) | (be[2] >> 6)],
                 b64[be[2] & 63], b64[be[3] >> 2], b64[(be[3] & 3) << 4]);
        s3_req r = {.method = "POST",
                    .bucket = bucket,
                    .key = "",
                    .query = "delete=",
                    .body = c.xml.p,
                    .body_len = c.xml.n,
                    .hdr = {sum, "x-amz-sdk-checksum-algorithm: CRC32C"}};
        rc = request(s, &r, "delete objects in", err);
        if (rc == MARBLE_OK && r.resp.n && strstr(r.resp.p, "<Error>")) {
            rc = marble_error_set(err, MARBLE_ERR_IO,
                                  "delete objects in s3://%s/%s: some keys were not deleted",
                                  bucket, prefix);
        }
        free(r.resp.p);
        free(c.xml.p);
    }
    free(bucket);
    free(prefix);
    return rc;
}

static int s3_control(marble_vfs *v, int op, void *arg)
{
    s3_vfs *s = (s3_vfs *)v;
    switch (op) {
    case MARBLE_S3_CTL_GET_STATS: {
        marble_s3_stats *o = arg;
        if (!o) return MARBLE_ERR_INVALID_ARGUMENT;
#define R(x) atomic_load_explicit(&s->x, memory_order_relaxed)
        o->requests = R(requests);
        o->retries = R(retries);
        o->puts = R(puts);
        o->multipart_uploads = R(mpus);
        o->parts = R(parts);
        o->aborts = R(aborts);
        o->abort_failures = R(abort_failures);
        o->max_parts_in_flight = R(max_inflight);
#undef R
        return MARBLE_OK;
    }
    case MARBLE_S3_CTL_SET_LIST_PAGE: {
        const int *n = arg;
        if (!n || *n < 1 || *n > 1000) return MARBLE_ERR_INVALID_ARGUMENT;
        atomic_store_explicit(&s->list_page, *n, memory_order_relaxed);
        return MARBLE_OK;
    }
    case MARBLE_S3_CTL_FAIL_PART: {
        const int *n = arg;
        if (!n || *n < 0) return MARBLE_ERR_INVALID_ARGUMENT;
        atomic_store_explicit(&s->fail_part, *n, memory_order_relaxed);
        return MARBLE_OK;
    }
    case MARBLE_S3_CTL_DELETE_PREFIX:
        if (!arg) return MARBLE_ERR_INVALID_ARGUMENT;
        return delete_prefix(s, arg, NULL);
    default:
        return MARBLE_ERR_UNSUPPORTED;
    }
}

static void s3_destroy(marble_vfs *v)
{
    s3_vfs *s = (s3_vfs *)v;
    if (!s) return;
    if (s->own_sched) marble_sched_destroy(s->sched);
    for (int i = 0; i < s->npool; i++)
        curl_easy_cleanup(s->pool[i]);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_mutex_destroy(&s->sched_mu);
    free(s->endpoint);
    free(s->scheme);
    free(s->hostport);
    free(s->region);
    free(s->key_id);
    free(s->secret);
    free(s->token);
    free(s->sigv4);
    free(s->userpwd);
    free(s);
}

/* ---- creation ------------------------------------------------------------------------------ */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = (CURLcode)marble__curl_global_init();
    xmlInitParser();
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

void marble_s3_options_init(marble_s3_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->endpoint = env("AWS_ENDPOINT_URL");
    o->region = env("AWS_REGION");
    if (!o->region) o->region = env("AWS_DEFAULT_REGION");
    if (!o->region) o->region = "us-east-1";
    o->access_key_id = env("AWS_ACCESS_KEY_ID");
    o->secret_access_key = env("AWS_SECRET_ACCESS_KEY");
    o->session_token = env("AWS_SESSION_TOKEN");
    o->path_style = -1;
    o->part_size = 8u << 20;
    o->max_parallel_parts = 4;
    o->connect_timeout_ms = 5000;
    o->timeout_ms = 60000;
    o->max_retries = 4;
    o->retry_base_ms = 100;
    o->sched = NULL;
}

int marble_vfs_s3_create(const marble_s3_options *o, marble_vfs **out, marble_error *err)
{
    if (!out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_s3_create: out is NULL");
    *out = NULL;
    marble_s3_options d;
    if (!o) {
        marble_s3_options_init(&d);
        o = &d;
    }
    if (o->part_size < MIN_PART)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_s3_create: part_size %zu is below S3's minimum part "
                                "(5 MiB)",
                                o->part_size);
    if (o->max_parallel_parts < 1 || o->max_retries < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_s3_create: max_parallel_parts must be >= 1 and "
                                "max_retries >= 0");
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return marble_error_set(err, MARBLE_ERR_INTERNAL, "curl_global_init: %s",
                                curl_easy_strerror(global_rc));
    s3_vfs *s = calloc(1, sizeof *s);
    if (!s) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the S3 backend");
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_mutex_init(&s->sched_mu, NULL);
    const char *region = o->region && o->region[0] ? o->region : "us-east-1";
    sbuf ep = {0};
    int e = 0;
    if (o->endpoint && o->endpoint[0]) {
        if (!strstr(o->endpoint, "://")) e |= sb_str(&ep, "https://"); /* a bare host */
        e |= sb_str(&ep, o->endpoint);
        while (ep.n && ep.p[ep.n - 1] == '/')
            ep.p[--ep.n] = 0;
    } else {
        e |= sb_str(&ep, "https://s3.");
        e |= sb_str(&ep, region);
        e |= sb_str(&ep, ".amazonaws.com");
    }
    s->endpoint = ep.p;
    const char *sep = s->endpoint ? strstr(s->endpoint, "://") : NULL;
    s->scheme = sep ? strndup(s->endpoint, (size_t)(sep - s->endpoint)) : NULL;
    s->hostport = sep ? strdup(sep + 3) : NULL;
    s->region = strdup(region);
    s->key_id = dupnul(o->access_key_id);
    s->secret = dupnul(o->secret_access_key);
    s->token = dupnul(o->session_token);
    sbuf sig = {0}, up = {0};
    e |= sb_str(&sig, "aws:amz:") | sb_str(&sig, region) | sb_str(&sig, ":s3");
    e |= sb_str(&up, o->access_key_id ? o->access_key_id : "") | sb_str(&up, ":") |
         sb_str(&up, o->secret_access_key ? o->secret_access_key : "");
    s->sigv4 = sig.p;
    s->userpwd = up.p;
    if (e || !s->scheme || !s->hostport || !s->region ||
        (o->access_key_id && !s->key_id) || (o->secret_access_key && !s->secret) ||
        (o->session_token && !s->token)) {
        s3_destroy(&s->base);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the S3 backend");
    }
    s->path_style = o->path_style >= 0 ? o->path_style != 0 : (o->endpoint && o->endpoint[0]);
    s->part_size = o->part_size;
    s->max_parallel = o->max_parallel_parts;
    s->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 60000;
    s->max_retries = o->max_retries;
    s->retry_base_ms = o->retry_base_ms;
    s->sched = o->sched;
    atomic_init(&s->list_page, 1000);
    marble_vfs *v = &s->base;
    v->version = MARBLE_VFS_VERSION;
    v->name = "s3";
    v->caps = MARBLE_CAP_RANDOM_READ | MARBLE_CAP_LIST | MARBLE_CAP_SYNC | MARBLE_CAP_SYNC_DIR;
    v->data = s;
    v->open = s3_open;
    v->stat = s3_stat;
    v->list = s3_list;
    v->mkdir = s3_mkdir;
    v->remove = s3_remove;
    v->rename = s3_rename;
    v->sync_dir = s3_sync_dir;
    v->control = s3_control;
    v->destroy = s3_destroy;
    *out = v;
    return MARBLE_OK;
}
