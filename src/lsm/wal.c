/* The write-ahead log: segment files of CRC32C-guarded records, group commit and recovery. */

/*
 * Thread safety. Appends, syncs and rolls are writers in one FIFO queue under `mu` (LevelDB's
 * writer queue). The writer at the head is the leader: it takes a group of queued writers, drops
 * `mu`, writes their records with one append and at most one sync, takes `mu` again, marks the
 * group done, removes it from the queue and wakes its members and the next head, which then
 * leads. A roll is always alone in its group; in EVERY mode every record is.
 *
 * Invariants. `file`, `segment_bytes` and `buf` are used only by the leader (the hand-over
 * through `mu` orders one leader's work before the next's). `segment` and `failed`/`failure` are
 * written only under `mu`; the leader may read `segment` without it, as no one else writes it.
 * Once `failed` is set it stays set, every queued writer is completed with the failure and no
 * leader touches the file again. The counters in `st_*` are relaxed atomics: statistics only.
 *
 * Lock order: `mu` is the only lock; it is never held during I/O. Each writer's `cv` is waited on
 * with `mu`.
 */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/wal.h"
#include "marble/base.h"

#define WAL_HEADER 20 /* crc, length, seq, header crc */
#define WAL_NAME_MAX 32
#define WAL_DEFAULT_SEGMENT ((uint64_t)64 << 20)
#define WAL_DEFAULT_GROUP ((size_t)4 << 20)
#define WAL_CRC_MASK_DELTA 0xa282ead8u

enum { W_RECORD, W_SYNC, W_ROLL };

typedef struct wal_writer {
    struct wal_writer *next;
    int kind;
    uint64_t seq;
    const void *payload;
    size_t len;
    int need_sync;
    int done;
    int status;
    uint64_t old_segment;
    marble_error err;
    pthread_cond_t cv;
} wal_writer;

struct marble__wal {
    marble_fs *fs;
    char *dir;
    marble__wal_options opts;
    pthread_mutex_t mu;
    wal_writer *head, *tail;
    uint64_t segment;
    int failed;
    marble_error failure;
    marble_file *file;
    uint64_t segment_bytes;
    unsigned char *buf;
    size_t buf_cap;
    _Atomic uint64_t st_appends, st_writes, st_syncs, st_rolls;
};

/* ---- encoding ------------------------------------------------------------------------------ */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t mask_crc(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + WAL_CRC_MASK_DELTA;
}

/* The header CRC covers segment, length and seq (bytes 4..16): checking it costs O(1), so the
 * search for a valid record after a bad one is linear in the tail, whatever lengths the bytes
 * there claim. */
static uint32_t header_crc(uint64_t segment, const unsigned char *hdr)
{
    unsigned char seg[8];
    put64(seg, segment);
    uint32_t crc = marble_crc32c(seg, sizeof seg);
    return mask_crc(marble_crc32c_extend(crc, hdr + 4, 12));
}

static uint32_t record_crc(uint64_t segment, const unsigned char *hdr, const void *payload,
                           size_t len)
{
    unsigned char seg[8];
    put64(seg, segment);
    uint32_t crc = marble_crc32c(seg, sizeof seg);
    crc = marble_crc32c_extend(crc, hdr + 4, WAL_HEADER - 4);
    if (len) crc = marble_crc32c_extend(crc, payload, len);
    return mask_crc(crc);
}

static void encode_record(unsigned char *out, uint64_t segment, uint64_t seq, const void *payload,
                          size_t len)
{
    put32(out + 4, (uint32_t)len);
    put64(out + 8, seq);
    put32(out + 16, header_crc(segment, out));
    if (len) memcpy(out + WAL_HEADER, payload, len);
    put32(out, record_crc(segment, out, payload, len));
}

enum { REC_OK, REC_SHORT, REC_CRC };

static int check_record(const unsigned char *p, uint64_t avail, uint64_t segment, uint32_t *len)
{
    if (avail < WAL_HEADER) return REC_SHORT;
    if (get32(p + 16) != header_crc(segment, p)) return REC_CRC;
    uint32_t n = get32(p + 4);
    if (n > MARBLE__WAL_MAX_PAYLOAD || (uint64_t)n + WAL_HEADER > avail) return REC_SHORT;
    if (get32(p) != record_crc(segment, p, p + WAL_HEADER, n)) return REC_CRC;
    *len = n;
    return REC_OK;
}

/* ---- names ----------------------------------------------------------------------------------- */

static void segment_name(char *out, uint64_t segment)
{
    snprintf(out, WAL_NAME_MAX, "%06" PRIu64 ".log", segment);
}

static int parse_segment_name(const char *name, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = name;
    if (*p < '0' || *p > '9') return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10) return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (strcmp(p, ".log") != 0 || v == 0) return 0;
    char canon[WAL_NAME_MAX];
    segment_name(canon, v);
    if (strcmp(canon, name) != 0) return 0;
    *out = v;
    return 1;
}

static char *segment_uri(const char *dir, uint64_t segment)
{
    char name[WAL_NAME_MAX];
    segment_name(name, segment);
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *uri = malloc(n);
    if (uri) snprintf(uri, n, "%s/%s", dir, name);
    return uri;
}

static char *normalize_dir(const char *dir_uri)
{
    size_t n = strlen(dir_uri);
    while (n > 1 && dir_uri[n - 1] == '/' && dir_uri[n - 2] != '/')
        n--;
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, dir_uri, n);
    d[n] = '\0';
    return d;
}

typedef struct seg_list {
    uint64_t *v;
    size_t n, cap;
    int oom;
} seg_list;

static int collect_segment(void *ud, const char *name, int is_dir)
{
    seg_list *l = ud;
    uint64_t s;
    if (is_dir || !parse_segment_name(name, &s)) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = 1;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The segment numbers in `dir`, sorted; a missing directory has none. */
static int list_segments(marble_fs *fs, const char *dir, seg_list *l, marble_error *err)
{
    memset(l, 0, sizeof *l);
    marble_error e;
    int rc = marble_fs_list(fs, dir, collect_segment, l, &e);
    if (rc == MARBLE_ERR_NOT_FOUND) return MARBLE_OK;
    if (rc != MARBLE_OK) {
        free(l->v);
        l->v = NULL;
        return marble_error_set(err, rc, "wal %s: listing segments: %s", dir, e.message);
    }
    if (l->oom) {
        free(l->v);
        l->v = NULL;
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: listing segments", dir);
    }
    if (l->n) qsort(l->v, l->n, sizeof *l->v, cmp_u64);
    return MARBLE_OK;
}

/* ---- reading --------------------------------------------------------------------------------- */

/* Walks the records of one segment, passing them to fn (may be NULL). *valid_end receives the
 * end of the last good record. A bad record ends the walk: in the newest segment, with no valid
 * record after it, it is a torn tail (reported in stats); otherwise it is corruption. */
static int scan_segment(const unsigned char *data, uint64_t size, uint64_t segment, const char *uri,
                        int newest, marble__wal_replay_fn fn, void *ud,
                        marble__wal_replay_stats *st, uint64_t *valid_end, marble_error *err)
{
    uint64_t off = 0;
    int why = REC_OK;
    while (off < size) {
        uint32_t len = 0;
        why = check_record(data + off, size - off, segment, &len);
        if (why != REC_OK) break;
        uint64_t seq = get64(data + off + 8);
        if (fn) {
            int rc = fn(seq, data + off + WAL_HEADER, len, ud);
            if (rc != MARBLE_OK) {
                *valid_end = off;
                return marble_error_set(err, rc,
                                        "wal %s: replay stopped by the callback at offset "
                                        "%" PRIu64 " (seq %" PRIu64 ")",
                                        uri, off, seq);
            }
        }
        st->records++;
        st->payload_bytes += len;
        st->last_seq = seq;
        off += WAL_HEADER + (uint64_t)len;
    }
    *valid_end = off;
    if (off == size) return MARBLE_OK;
    const char *what = why == REC_SHORT ? "incomplete record" : "CRC mismatch";
    if (!newest)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "wal %s: corruption: %s at offset %" PRIu64 " of %" PRIu64
                                " in a segment that is not the newest",
                                uri, what, off, size);
    for (uint64_t q = off + 1; q + WAL_HEADER <= size; q++) {
        uint32_t len;
        if (check_record(data + q, size - q, segment, &len) == REC_OK)
            return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                    "wal %s: corruption: %s at offset %" PRIu64
                                    " followed by a valid record at offset %" PRIu64,
                                    uri, what, off, q);
    }
    st->torn_tail = 1;
    st->torn_segment = segment;
    st->torn_offset = off;
    st->torn_bytes = size - off;
    return MARBLE_OK;
}

static int read_segment(marble_fs *fs, const char *uri, unsigned char **data, uint64_t *size,
                        marble_error *err)
{
    void *d = NULL;
    size_t n = 0;
    marble_error e;
    int rc = marble_fs_read_all(fs, uri, &d, &n, &e);
    if (rc != MARBLE_OK) return marble_error_set(err, rc, "wal %s: reading: %s", uri, e.message);
    *data = d;
    *size = n;
    return MARBLE_OK;
}

int marble__wal_replay(marble_fs *fs, const char *dir_uri, uint64_t from_segment,
                       marble__wal_replay_fn fn, void *ud, marble__wal_replay_stats *stats,
                       marble_error *err)
{
    marble__wal_replay_stats local;
    marble__wal_replay_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    if (!fs || !dir_uri || !*dir_uri || !fn)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "wal replay: fs, directory and callback are required");
    char *dir = normalize_dir(dir_uri);
    if (!dir) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: replay", dir_uri);
    seg_list l;
    int rc = list_segments(fs, dir, &l, err);
    size_t first = 0;
    while (rc == MARBLE_OK && first < l.n && l.v[first] < from_segment)
        first++;
    /* The segment replay is asked to start from must be there (the manifest names one that
     * remove_upto never deletes): starting later would skip acknowledged records silently. */
    if (rc == MARBLE_OK && from_segment > 0 &&
        ((first < l.n && l.v[first] != from_segment) || (first == l.n && first > 0))) {
        char name[WAL_NAME_MAX];
        segment_name(name, from_segment);
        rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                              "wal %s: corruption: segment %s, where replay starts, is missing",
                              dir, name);
    }
    for (size_t i = first; rc == MARBLE_OK && i < l.n; i++) {
        char *uri = segment_uri(dir, l.v[i]);
        if (!uri) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: replay", dir);
            break;
        }
        if (i > first && l.v[i] != l.v[i - 1] + 1) {
            char name[WAL_NAME_MAX];
            segment_name(name, l.v[i - 1] + 1);
            rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                  "wal %s: corruption: segment %s is missing before %s", dir,
                                  name, uri);
            free(uri);
            break;
        }
        unsigned char *data = NULL;
        uint64_t size = 0, end = 0;
        rc = read_segment(fs, uri, &data, &size, err);
        if (rc == MARBLE_OK) {
            if (!st->first_segment) st->first_segment = l.v[i];
            st->last_segment = l.v[i];
            st->segments++;
            rc = scan_segment(data, size, l.v[i], uri, i + 1 == l.n, fn, ud, st, &end, err);
        }
        free(data);
        free(uri);
    }
    free(l.v);
    free(dir);
    return rc;
}

/* ---- writing --------------------------------------------------------------------------------- */

static int sync_parent_dir(marble_fs *fs, const char *dir, marble_error *err)
{
    const char *scheme = strstr(dir, "://");
    const char *path = scheme ? scheme + 3 : dir;
    const char *slash = strrchr(path, '/');
    if (!slash) return MARBLE_OK;
    size_t n = (size_t)(slash - dir) + (slash == path ? 1 : 0);
    char *parent = malloc(n + 1);
    if (!parent) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: syncing parent", dir);
    memcpy(parent, dir, n);
    parent[n] = '\0';
    marble_error e;
    int rc = marble_fs_sync_dir(fs, parent, &e);
    if (rc != MARBLE_OK)
        rc = marble_error_set(err, rc, "wal %s: syncing its parent: %s", dir, e.message);
    free(parent);
    return rc;
}

/* Creates segment `segment` and makes its name durable. */
static int create_segment(marble__wal *wal, uint64_t segment, marble_file **out, marble_error *err)
{
    char *uri = segment_uri(wal->dir, segment);
    if (!uri) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: new segment", wal->dir);
    marble_file *f = NULL;
    marble_error e;
    int rc = marble_fs_open(wal->fs, uri,
                            MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_EXCLUSIVE |
                                MARBLE_OPEN_APPEND,
                            &f, &e);
    if (rc != MARBLE_OK) {
        rc = marble_error_set(err, rc, "wal %s: creating segment: %s", uri, e.message);
        goto cleanup;
    }
    rc = marble_fs_sync_dir(wal->fs, wal->dir, &e);
    if (rc != MARBLE_OK) {
        rc = marble_error_set(err, rc, "wal %s: syncing the directory after creating it: %s", uri,
                              e.message);
        marble_file_close(f, NULL);
        goto cleanup;
    }
    *out = f;
cleanup:
    free(uri);
    return rc;
}

static int sync_file(marble__wal *wal, marble_error *err)
{
    marble_error e;
    int rc = marble_file_sync(wal->file, MARBLE_SYNC_DATA, &e);
    atomic_fetch_add_explicit(&wal->st_syncs, 1, memory_order_relaxed);
    if (rc != MARBLE_OK)
        return marble_error_set(err, rc, "wal %s: sync: %s", marble_file_uri(wal->file), e.message);
    return MARBLE_OK;
}

/* Leader only: syncs and closes the current segment after opening the next. */
static int do_roll(marble__wal *wal, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(sync_file(wal, err));
    marble_file *next = NULL;
    MARBLE_RETURN_NOT_OK(create_segment(wal, wal->segment + 1, &next, err));
    marble_file *old = wal->file;
    char *old_uri = segment_uri(wal->dir, wal->segment);
    marble_error e;
    int rc = marble_file_close(old, &e);
    if (rc != MARBLE_OK)
        marble_error_set(err, rc, "wal %s: closing: %s", old_uri ? old_uri : wal->dir, e.message);
    free(old_uri);
    wal->file = next;
    wal->segment_bytes = 0;
    pthread_mutex_lock(&wal->mu);
    wal->segment++;
    pthread_mutex_unlock(&wal->mu);
    atomic_fetch_add_explicit(&wal->st_rolls, 1, memory_order_relaxed);
    return rc;
}

/* Leader only: writes the records of the group [first, last] and syncs if one asks for it. */
static int write_group(marble__wal *wal, wal_writer *first, wal_writer *last, marble_error *err)
{
    size_t bytes = 0, records = 0;
    int need_sync = 0;
    for (wal_writer *w = first;; w = w->next) {
        if (w->kind == W_RECORD) {
            bytes += WAL_HEADER + w->len;
            records++;
        }
        need_sync |= w->need_sync;
        if (w == last) break;
    }
    if (records && wal->segment_bytes >= wal->opts.segment_size)
        MARBLE_RETURN_NOT_OK(do_roll(wal, err));
    if (records) {
        if (bytes > wal->buf_cap) {
            unsigned char *b = realloc(wal->buf, bytes);
            if (!b)
                return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                        "wal %s: %zu bytes for a group write",
                                        marble_file_uri(wal->file), bytes);
            wal->buf = b;
            wal->buf_cap = bytes;
        }
        size_t off = 0;
        for (wal_writer *w = first;; w = w->next) {
            if (w->kind == W_RECORD) {
                encode_record(wal->buf + off, wal->segment, w->seq, w->payload, w->len);
                off += WAL_HEADER + w->len;
            }
            if (w == last) break;
        }
        marble_error e;
        int rc = marble_file_append(wal->file, wal->buf, bytes, &e);
        atomic_fetch_add_explicit(&wal->st_writes, 1, memory_order_relaxed);
        if (rc != MARBLE_OK)
            return marble_error_set(
                err, rc, "wal %s: append of %zu bytes at offset %" PRIu64 ": %s",
                marble_file_uri(wal->file), bytes, wal->segment_bytes, e.message);
        wal->segment_bytes += bytes;
        atomic_fetch_add_explicit(&wal->st_appends, records, memory_order_relaxed);
    }
    if (need_sync) MARBLE_RETURN_NOT_OK(sync_file(wal, err));
    return MARBLE_OK;
}

static void finish(wal_writer *w, int status, const marble_error *e)
{
    w->status = status;
    if (status != MARBLE_OK) w->err = *e;
    w->done = 1;
}

/* Queues `self`, waits until it is done or leads, and if it leads does the work of its group. */
static int run_writer(marble__wal *wal, wal_writer *self, marble_error *err)
{
    pthread_cond_init(&self->cv, NULL);
    pthread_mutex_lock(&wal->mu);
    if (wal->failed) {
        pthread_mutex_unlock(&wal->mu);
        pthread_cond_destroy(&self->cv);
        return marble_error_set(err, wal->failure.code, "%s (refusing writes after it)",
                                wal->failure.message);
    }
    if (wal->tail)
        wal->tail->next = self;
    else
        wal->head = self;
    wal->tail = self;
    while (!self->done && wal->head != self)
        pthread_cond_wait(&self->cv, &wal->mu);
    if (!self->done) {
        wal_writer *last = self;
        size_t bytes = self->kind == W_RECORD ? WAL_HEADER + self->len : 0;
        if (self->kind != W_ROLL && wal->opts.sync_mode != MARBLE__WAL_SYNC_EVERY) {
            for (wal_writer *w = self->next; w && w->kind != W_ROLL; w = w->next) {
                size_t add = w->kind == W_RECORD ? WAL_HEADER + w->len : 0;
                if (bytes && add && bytes + add > wal->opts.max_group_bytes) break;
                bytes += add;
                last = w;
            }
        }
        pthread_mutex_unlock(&wal->mu);

        marble_error e;
        int rc;
        uint64_t old = wal->segment;
        if (self->kind == W_ROLL)
            rc = do_roll(wal, &e);
        else
            rc = write_group(wal, self, last, &e);

        pthread_mutex_lock(&wal->mu);
        if (rc != MARBLE_OK) {
            wal->failed = 1;
            wal->failure = e;
            wal->failure.code = rc;
            last = wal->tail;
        }
        self->old_segment = old;
        wal_writer *w = self;
        for (;;) {
            wal_writer *next = w->next;
            finish(w, rc, &e);
            if (w != self) pthread_cond_signal(&w->cv);
            if (w == last) {
                wal->head = next;
                break;
            }
            w = next;
        }
        if (!wal->head)
            wal->tail = NULL;
        else
            pthread_cond_signal(&wal->head->cv);
    }
    pthread_mutex_unlock(&wal->mu);
    pthread_cond_destroy(&self->cv);
    if (self->status != MARBLE_OK)
        return marble_error_set(err, self->status, "%s", self->err.message);
    return MARBLE_OK;
}

int marble__wal_append(marble__wal *wal, uint64_t seq, const void *payload, size_t len,
                       marble_error *err)
{
    if (!wal || (!payload && len))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "wal append: %s",
                                wal ? "payload is NULL" : "wal is NULL");
    if (len > MARBLE__WAL_MAX_PAYLOAD)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "wal %s: payload of %zu bytes exceeds the limit of %" PRIu32,
                                wal->dir, len, MARBLE__WAL_MAX_PAYLOAD);
    wal_writer w;
    memset(&w, 0, sizeof w);
    w.kind = W_RECORD;
    w.seq = seq;
    w.payload = payload;
    w.len = len;
    w.need_sync = wal->opts.sync_mode != MARBLE__WAL_SYNC_NONE;
    return run_writer(wal, &w, err);
}

int marble__wal_sync(marble__wal *wal, marble_error *err)
{
    if (!wal) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "wal sync: wal is NULL");
    wal_writer w;
    memset(&w, 0, sizeof w);
    w.kind = W_SYNC;
    w.need_sync = 1;
    return run_writer(wal, &w, err);
}

int marble__wal_roll(marble__wal *wal, uint64_t *old_segment, marble_error *err)
{
    if (!wal) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "wal roll: wal is NULL");
    wal_writer w;
    memset(&w, 0, sizeof w);
    w.kind = W_ROLL;
    int rc = run_writer(wal, &w, err);
    if (rc == MARBLE_OK && old_segment) *old_segment = w.old_segment;
    return rc;
}

uint64_t marble__wal_current_segment(marble__wal *wal)
{
    pthread_mutex_lock(&wal->mu);
    uint64_t s = wal->segment;
    pthread_mutex_unlock(&wal->mu);
    return s;
}

int marble__wal_remove_upto(marble__wal *wal, uint64_t segment_no, marble_error *err)
{
    if (!wal)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "wal remove_upto: wal is NULL");
    uint64_t current = marble__wal_current_segment(wal);
    if (segment_no >= current)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "wal %s: cannot remove segments up to %" PRIu64
                                ": the current segment is %" PRIu64,
                                wal->dir, segment_no, current);
    seg_list l;
    MARBLE_RETURN_NOT_OK(list_segments(wal->fs, wal->dir, &l, err));
    int rc = MARBLE_OK, removed = 0;
    for (size_t i = 0; i < l.n && l.v[i] <= segment_no; i++) {
        char *uri = segment_uri(wal->dir, l.v[i]);
        if (!uri) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: remove", wal->dir);
            break;
        }
        marble_error e;
        int r = marble_fs_remove(wal->fs, uri, &e);
        if (r == MARBLE_OK) removed++;
        if (r != MARBLE_OK && r != MARBLE_ERR_NOT_FOUND)
            rc = marble_error_set(err, r, "wal %s: removing: %s", uri, e.message);
        free(uri);
        if (rc != MARBLE_OK) break;
    }
    free(l.v);
    if (removed) {
        marble_error e;
        int r = marble_fs_sync_dir(wal->fs, wal->dir, &e);
        if (r != MARBLE_OK && rc == MARBLE_OK)
            rc = marble_error_set(err, r,
                                  "wal %s: syncing the directory after removing segments: "
                                  "%s",
                                  wal->dir, e.message);
    }
    return rc;
}

void marble__wal_get_stats(marble__wal *wal, marble__wal_stats *out)
{
    out->appends = atomic_load_explicit(&wal->st_appends, memory_order_relaxed);
    out->writes = atomic_load_explicit(&wal->st_writes, memory_order_relaxed);
    out->syncs = atomic_load_explicit(&wal->st_syncs, memory_order_relaxed);
    out->rolls = atomic_load_explicit(&wal->st_rolls, memory_order_relaxed);
}

/* ---- open and close ----------------------------------------------------------------------------
 */

/* Cuts a torn tail off the newest existing segment so that it can stop being the newest. */
static int repair_newest(marble__wal *wal, uint64_t segment, marble_error *err)
{
    char *uri = segment_uri(wal->dir, segment);
    if (!uri) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: open", wal->dir);
    unsigned char *data = NULL;
    uint64_t size = 0, end = 0;
    marble__wal_replay_stats st;
    memset(&st, 0, sizeof st);
    marble_file *f = NULL;
    marble_error e;
    int rc = read_segment(wal->fs, uri, &data, &size, err);
    if (rc == MARBLE_OK) rc = scan_segment(data, size, segment, uri, 1, NULL, NULL, &st, &end, err);
    if (rc != MARBLE_OK || !st.torn_tail) goto cleanup;
    rc = marble_fs_open(wal->fs, uri, MARBLE_OPEN_WRITE, &f, &e);
    if (rc == MARBLE_OK) rc = marble_file_truncate(f, end, &e);
    if (rc == MARBLE_OK) rc = marble_file_sync(f, MARBLE_SYNC_FULL, &e);
    if (rc != MARBLE_OK)
        rc = marble_error_set(err, rc, "wal %s: cutting the torn tail at offset %" PRIu64 ": %s",
                              uri, end, e.message);
    if (f) {
        int c = marble_file_close(f, &e);
        if (c != MARBLE_OK && rc == MARBLE_OK)
            rc = marble_error_set(err, c, "wal %s: closing: %s", uri, e.message);
    }
cleanup:
    free(data);
    free(uri);
    return rc;
}

int marble__wal_open(marble_fs *fs, const char *dir_uri, const marble__wal_options *opts,
                     marble__wal **out, marble_error *err)
{
    if (!out || !fs || !dir_uri || !*dir_uri)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "wal open: fs, directory and output are required");
    *out = NULL;
    if (opts &&
        (opts->sync_mode < MARBLE__WAL_SYNC_NONE || opts->sync_mode > MARBLE__WAL_SYNC_EVERY))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "wal %s: bad sync mode %d",
                                dir_uri, (int)opts->sync_mode);
    marble__wal *wal = calloc(1, sizeof *wal);
    if (!wal) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: open", dir_uri);
    wal->fs = fs;
    if (opts) wal->opts = *opts;
    if (!opts) wal->opts.sync_mode = MARBLE__WAL_SYNC_GROUP;
    if (!wal->opts.segment_size) wal->opts.segment_size = WAL_DEFAULT_SEGMENT;
    if (!wal->opts.max_group_bytes) wal->opts.max_group_bytes = WAL_DEFAULT_GROUP;
    pthread_mutex_init(&wal->mu, NULL);
    seg_list l = {0};
    marble_error e;
    int rc = MARBLE_OK, exists = 0;
    wal->dir = normalize_dir(dir_uri);
    if (!wal->dir) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "wal %s: open", dir_uri);
        goto cleanup;
    }
    rc = marble_fs_exists(fs, wal->dir, &exists, &e);
    if (rc == MARBLE_OK && !exists) {
        rc = marble_fs_mkdir(fs, wal->dir, 1, &e);
        if (rc == MARBLE_OK) {
            rc = sync_parent_dir(fs, wal->dir, err);
            if (rc != MARBLE_OK) goto cleanup;
        }
    }
    if (rc != MARBLE_OK) {
        rc = marble_error_set(err, rc, "wal %s: creating the directory: %s", wal->dir, e.message);
        goto cleanup;
    }
    rc = list_segments(fs, wal->dir, &l, err);
    if (rc != MARBLE_OK) goto cleanup;
    for (size_t i = 1; i < l.n; i++) {
        if (l.v[i] != l.v[i - 1] + 1) {
            char name[WAL_NAME_MAX];
            segment_name(name, l.v[i - 1] + 1);
            rc = marble_error_set(err, MARBLE_ERR_CORRUPTION, "wal %s: corruption: segment %s is missing",
                                  wal->dir, name);
            goto cleanup;
        }
    }
    uint64_t newest = l.n ? l.v[l.n - 1] : 0;
    if (newest) {
        rc = repair_newest(wal, newest, err);
        if (rc != MARBLE_OK) goto cleanup;
    }
    if (newest == UINT64_MAX) {
        rc = marble_error_set(err, MARBLE_ERR_LIMIT, "wal %s: segment numbers exhausted", wal->dir);
        goto cleanup;
    }
    wal->segment = newest + 1;
    rc = create_segment(wal, wal->segment, &wal->file, err);
cleanup:
    free(l.v);
    if (rc != MARBLE_OK) {
        marble__wal_close(wal, NULL);
        return rc;
    }
    *out = wal;
    return MARBLE_OK;
}

int marble__wal_close(marble__wal *wal, marble_error *err)
{
    if (!wal) return MARBLE_OK;
    int rc = MARBLE_OK;
    if (wal->file) {
        if (!wal->failed) rc = sync_file(wal, err);
        marble_error e;
        char *uri = segment_uri(wal->dir, wal->segment);
        int c = marble_file_close(wal->file, &e);
        if (c != MARBLE_OK && rc == MARBLE_OK)
            rc = marble_error_set(err, c, "wal %s: closing: %s", uri ? uri : wal->dir, e.message);
        free(uri);
    }
    pthread_mutex_destroy(&wal->mu);
    free(wal->buf);
    free(wal->dir);
    free(wal);
    return rc;
}
