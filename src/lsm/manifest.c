/* The manifest: logged version edits, CURRENT switching, reference-counted versions. */

/*
 * Thread safety. Two locks. `write_mu` serializes apply and roll and is held during their I/O;
 * it guards `file`, `number`, `size`, `failed` and `failure`. `mu` guards `current`, the list of
 * live versions, every file's `refs` and `mark`, the obsolete list and `closed`; it is never held
 * during I/O. Lock order: write_mu, then mu.
 *
 * Invariants. A version is immutable once built. `current` changes only under both locks, so the
 * writer may read it holding write_mu alone. A version's `refs` is an atomic: a reference is
 * taken only by someone holding one already or, for `current` (whose count the manifest's own
 * reference keeps above zero), under `mu`; the decrement that reaches zero (acq_rel, so the
 * freeing thread sees every holder's reads done) frees the version under `mu`. A file's `refs`
 * counts the live versions holding it; at zero it moves to the obsolete list. The manifest's
 * memory is freed once it is closed and no version is live.
 */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/manifest.h"
#include "marble/base.h"

#define REC_HEADER 8
#define CRC_MASK_DELTA 0xa282ead8u
#define DEFAULT_MAX_FILE ((uint64_t)64 << 20)
#define NAME_MAX_LEN 40

enum {
    TAG_LOG_NUMBER = 1,
    TAG_NEXT_FILE = 2,
    TAG_LAST_SEQ = 3,
    TAG_DELETED_FILE = 4,
    TAG_ADDED_FILE = 5,
    TAG_CATALOG = 6,
    TAG_CATALOG_RESET = 7,
    TAG_FIRST_OPTIONAL = 64
};

typedef struct mfile {
    marble__file_meta meta;
    uint64_t refs;
    uint64_t mark;
    struct mfile *next_obsolete;
} mfile;

typedef struct catalog {
    uint64_t refs;
    marble__catalog_record *v;
    size_t n;
} catalog;

struct marble__version {
    _Atomic uint64_t refs;
    marble__manifest *m;
    marble__version *prev, *next;
    mfile **files[MARBLE__NUM_LEVELS];
    size_t n[MARBLE__NUM_LEVELS];
    uint64_t log_number, next_file_number, last_seq;
    catalog *cat;
};

struct marble__manifest {
    marble_fs *fs;
    char *dir;
    uint64_t max_size;
    int object_store; /* see marble__manifest_options */
    pthread_mutex_t write_mu;
    pthread_mutex_t mu;
    marble__version *current;
    marble__version *live;
    mfile *obsolete_head, *obsolete_tail;
    uint64_t mark_epoch;
    int closed;
    marble_file *file;
    uint64_t number;
    uint64_t size;
    int failed;
    marble_error failure;
};

/* ---- bytes ----------------------------------------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int keycmp(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return an < bn ? -1 : an > bn;
}

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} buf;

static void buf_put(buf *b, const void *data, size_t n)
{
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void buf_varint(buf *b, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (unsigned char)v;
    buf_put(b, tmp, n);
}

static void buf_bytes(buf *b, const void *data, size_t n)
{
    buf_varint(b, n);
    buf_put(b, data, n);
}

static void buf_field(buf *b, unsigned tag, const buf *value)
{
    buf_varint(b, tag);
    buf_bytes(b, value->p, value->n);
}

typedef struct reader {
    const unsigned char *p;
    size_t n, pos;
} reader;

static int rd_varint(reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->n) return 0;
        unsigned char c = r->p[r->pos++];
        if (shift == 63 && c > 1) return 0;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

static int rd_bytes(reader *r, const unsigned char **p, size_t *n)
{
    uint64_t len;
    if (!rd_varint(r, &len) || len > r->n - r->pos) return 0;
    *p = r->p + r->pos;
    *n = (size_t)len;
    r->pos += (size_t)len;
    return 1;
}

/* ---- edits ----------------------------------------------------------------------------------- */

void marble__edit_init(marble__version_edit *e)
{
    memset(e, 0, sizeof *e);
}

static void meta_free(marble__file_meta *f)
{
    free(f->smallest);
    free(f->largest);
}

void marble__edit_free(marble__version_edit *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->n_added; i++)
        meta_free(&e->added[i]);
    for (size_t i = 0; i < e->n_catalog; i++)
        free(e->catalog[i].data);
    free(e->added);
    free(e->deleted);
    free(e->catalog);
    marble__edit_init(e);
}

void marble__edit_set_log_number(marble__version_edit *e, uint64_t v)
{
    e->has_log_number = 1;
    e->log_number = v;
}

void marble__edit_set_next_file_number(marble__version_edit *e, uint64_t v)
{
    e->has_next_file_number = 1;
    e->next_file_number = v;
}

void marble__edit_set_last_seq(marble__version_edit *e, uint64_t v)
{
    e->has_last_seq = 1;
    e->last_seq = v;
}

static int grow(void **v, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap) return 1;
    size_t c = *cap ? *cap * 2 : 8;
    void *p = realloc(*v, c * elem);
    if (!p) return 0;
    *v = p;
    *cap = c;
    return 1;
}

static unsigned char *dup_bytes(const void *p, size_t n)
{
    unsigned char *d = malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

static int meta_copy(marble__file_meta *dst, const marble__file_meta *src)
{
    *dst = *src;
    dst->smallest = dup_bytes(src->smallest, src->smallest_len);
    dst->largest = dup_bytes(src->largest, src->largest_len);
    if (dst->smallest && dst->largest) return 1;
    meta_free(dst);
    return 0;
}

int marble__edit_add_file(marble__version_edit *e, const marble__file_meta *f)
{
    if (!grow((void **)&e->added, &e->cap_added, e->n_added, sizeof *e->added) ||
        !meta_copy(&e->added[e->n_added], f))
        return MARBLE_ERR_NO_MEMORY;
    e->n_added++;
    return MARBLE_OK;
}

int marble__edit_delete_file(marble__version_edit *e, int level, uint64_t number)
{
    if (!grow((void **)&e->deleted, &e->cap_deleted, e->n_deleted, sizeof *e->deleted))
        return MARBLE_ERR_NO_MEMORY;
    e->deleted[e->n_deleted].level = level;
    e->deleted[e->n_deleted].number = number;
    e->n_deleted++;
    return MARBLE_OK;
}

int marble__edit_add_catalog(marble__version_edit *e, const void *data, size_t len)
{
    if (!grow((void **)&e->catalog, &e->cap_catalog, e->n_catalog, sizeof *e->catalog))
        return MARBLE_ERR_NO_MEMORY;
    unsigned char *d = dup_bytes(data, len);
    if (!d) return MARBLE_ERR_NO_MEMORY;
    e->catalog[e->n_catalog].data = d;
    e->catalog[e->n_catalog].len = len;
    e->n_catalog++;
    return MARBLE_OK;
}

int marble__edit_encode(const marble__version_edit *e, unsigned char **out, size_t *len,
                        marble_error *err)
{
    buf b = {0}, v = {0};
    if (e->has_log_number) {
        buf_varint(&v, e->log_number);
        buf_field(&b, TAG_LOG_NUMBER, &v);
    }
    if (e->has_next_file_number) {
        v.n = 0;
        buf_varint(&v, e->next_file_number);
        buf_field(&b, TAG_NEXT_FILE, &v);
    }
    if (e->has_last_seq) {
        v.n = 0;
        buf_varint(&v, e->last_seq);
        buf_field(&b, TAG_LAST_SEQ, &v);
    }
    for (size_t i = 0; i < e->n_deleted; i++) {
        v.n = 0;
        buf_varint(&v, (uint64_t)e->deleted[i].level);
        buf_varint(&v, e->deleted[i].number);
        buf_field(&b, TAG_DELETED_FILE, &v);
    }
    for (size_t i = 0; i < e->n_added; i++) {
        const marble__file_meta *f = &e->added[i];
        v.n = 0;
        buf_varint(&v, (uint64_t)f->level);
        buf_varint(&v, f->number);
        buf_varint(&v, f->size);
        buf_varint(&v, f->smallest_seq);
        buf_varint(&v, f->largest_seq);
        buf_varint(&v, f->rows);
        buf_bytes(&v, f->smallest, f->smallest_len);
        buf_bytes(&v, f->largest, f->largest_len);
        buf_field(&b, TAG_ADDED_FILE, &v);
    }
    if (e->catalog_reset) {
        v.n = 0;
        buf_field(&b, TAG_CATALOG_RESET, &v);
    }
    for (size_t i = 0; i < e->n_catalog; i++) {
        buf_varint(&b, TAG_CATALOG);
        buf_bytes(&b, e->catalog[i].data, e->catalog[i].len);
    }
    free(v.p);
    if (b.oom || v.oom) {
        free(b.p);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest: encoding an edit");
    }
    if (b.n > MARBLE__MANIFEST_MAX_RECORD) {
        free(b.p);
        return marble_error_set(err, MARBLE_ERR_LIMIT, "manifest: edit of %zu bytes is too large",
                                b.n);
    }
    if (!b.p) b.p = malloc(1);
    if (!b.p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest: encoding an edit");
    *out = b.p;
    *len = b.n;
    return MARBLE_OK;
}

static int decode_field(marble__version_edit *e, uint64_t tag, reader *r)
{
    uint64_t a, c;
    switch (tag) {
    case TAG_LOG_NUMBER:
        if (!rd_varint(r, &a)) return 0;
        marble__edit_set_log_number(e, a);
        return 1;
    case TAG_NEXT_FILE:
        if (!rd_varint(r, &a)) return 0;
        marble__edit_set_next_file_number(e, a);
        return 1;
    case TAG_LAST_SEQ:
        if (!rd_varint(r, &a)) return 0;
        marble__edit_set_last_seq(e, a);
        return 1;
    case TAG_DELETED_FILE:
        if (!rd_varint(r, &a) || !rd_varint(r, &c) || a >= MARBLE__NUM_LEVELS) return 0;
        return marble__edit_delete_file(e, (int)a, c) == MARBLE_OK ? 1 : -1;
    case TAG_ADDED_FILE: {
        marble__file_meta f = {0};
        const unsigned char *s, *l;
        if (!rd_varint(r, &a) || a >= MARBLE__NUM_LEVELS || !rd_varint(r, &f.number) ||
            !rd_varint(r, &f.size) || !rd_varint(r, &f.smallest_seq) ||
            !rd_varint(r, &f.largest_seq) || !rd_varint(r, &f.rows) ||
            !rd_bytes(r, &s, &f.smallest_len) || !rd_bytes(r, &l, &f.largest_len))
            return 0;
        f.level = (int)a;
        f.smallest = (unsigned char *)s;
        f.largest = (unsigned char *)l;
        return marble__edit_add_file(e, &f) == MARBLE_OK ? 1 : -1;
    }
    case TAG_CATALOG:
        if (marble__edit_add_catalog(e, r->p, r->n) != MARBLE_OK) return -1;
        r->pos = r->n;
        return 1;
    case TAG_CATALOG_RESET:
        e->catalog_reset = 1;
        return 1;
    default:
        if (tag < TAG_FIRST_OPTIONAL) return 0;
        r->pos = r->n;
        return 1;
    }
}

int marble__edit_decode(const void *data, size_t len, marble__version_edit *e, marble_error *err)
{
    marble__edit_init(e);
    reader r = {data, len, 0};
    while (r.pos < r.n) {
        size_t at = r.pos;
        uint64_t tag;
        const unsigned char *v;
        size_t vn;
        if (!rd_varint(&r, &tag) || !rd_bytes(&r, &v, &vn))
            return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                    "manifest edit: truncated field at offset %zu", at);
        reader fr = {v, vn, 0};
        int ok = decode_field(e, tag, &fr);
        if (ok < 0) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest edit: decoding");
        if (!ok || fr.pos != fr.n)
            return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                    "manifest edit: bad field with tag %" PRIu64 " at offset %zu",
                                    tag, at);
    }
    return MARBLE_OK;
}

/* ---- versions -------------------------------------------------------------------------------- */

void marble__version_ref(marble__version *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

size_t marble__version_num_files(const marble__version *v, int level)
{
    return level >= 0 && level < MARBLE__NUM_LEVELS ? v->n[level] : 0;
}

const marble__file_meta *marble__version_file(const marble__version *v, int level, size_t i)
{
    if (level < 0 || level >= MARBLE__NUM_LEVELS || i >= v->n[level]) return NULL;
    return &v->files[level][i]->meta;
}

uint64_t marble__version_log_number(const marble__version *v)
{
    return v->log_number;
}

uint64_t marble__version_next_file_number(const marble__version *v)
{
    return v->next_file_number;
}

uint64_t marble__version_last_seq(const marble__version *v)
{
    return v->last_seq;
}

size_t marble__version_num_catalog(const marble__version *v)
{
    return v->cat ? v->cat->n : 0;
}

const marble__catalog_record *marble__version_catalog(const marble__version *v, size_t i)
{
    return v->cat && i < v->cat->n ? &v->cat->v[i] : NULL;
}

static void catalog_free(catalog *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].data);
    free(c->v);
    free(c);
}

static void mfile_free(mfile *f)
{
    meta_free(&f->meta);
    free(f);
}

/* Frees a version that was built but never installed: its new files have no references. */
static void version_discard(marble__version *v)
{
    if (!v) return;
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++) {
        for (size_t i = 0; i < v->n[l]; i++)
            if (v->files[l][i]->refs == 0) mfile_free(v->files[l][i]);
        free(v->files[l]);
    }
    if (v->cat && v->cat->refs == 0) catalog_free(v->cat);
    free(v);
}

/* Under m->mu: the version holds references to its files and joins the live list. */
static void version_install_locked(marble__manifest *m, marble__version *v)
{
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < v->n[l]; i++)
            v->files[l][i]->refs++;
    if (v->cat) v->cat->refs++;
    v->m = m;
    v->prev = NULL;
    v->next = m->live;
    if (m->live) m->live->prev = v;
    m->live = v;
}

static void version_destroy_locked(marble__version *v)
{
    marble__manifest *m = v->m;
    if (v->prev)
        v->prev->next = v->next;
    else
        m->live = v->next;
    if (v->next) v->next->prev = v->prev;
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++) {
        for (size_t i = 0; i < v->n[l]; i++) {
            mfile *f = v->files[l][i];
            if (--f->refs) continue;
            f->next_obsolete = NULL;
            if (m->obsolete_tail)
                m->obsolete_tail->next_obsolete = f;
            else
                m->obsolete_head = f;
            m->obsolete_tail = f;
        }
        free(v->files[l]);
    }
    if (v->cat && --v->cat->refs == 0) catalog_free(v->cat);
    free(v);
}

static void manifest_free(marble__manifest *m)
{
    while (m->obsolete_head) {
        mfile *f = m->obsolete_head;
        m->obsolete_head = f->next_obsolete;
        mfile_free(f);
    }
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->write_mu);
    free(m->dir);
    free(m);
}

void marble__version_unref(marble__version *v)
{
    if (!v) return;
    if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1) return;
    marble__manifest *m = v->m;
    pthread_mutex_lock(&m->mu);
    version_destroy_locked(v);
    int free_m = m->closed && !m->live;
    pthread_mutex_unlock(&m->mu);
    if (free_m) manifest_free(m);
}

/* Under m->mu: drops the manifest's reference to its current version. */
static void release_current_locked(marble__manifest *m)
{
    marble__version *v = m->current;
    m->current = NULL;
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        version_destroy_locked(v);
}

static int l0_newer(const mfile *a, const mfile *b)
{
    if (a->meta.largest_seq != b->meta.largest_seq)
        return a->meta.largest_seq > b->meta.largest_seq;
    return a->meta.number > b->meta.number;
}

static int smaller(const mfile *a, const mfile *b)
{
    int c = keycmp(a->meta.smallest, a->meta.smallest_len, b->meta.smallest, b->meta.smallest_len);
    return c ? c < 0 : a->meta.number < b->meta.number;
}

static void sort_level(mfile **v, size_t n, int level)
{
    for (size_t i = 1; i < n; i++) {
        mfile *x = v[i];
        size_t j = i;
        while (j > 0 && (level == 0 ? l0_newer(x, v[j - 1]) : smaller(x, v[j - 1]))) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static int find_number(marble__version *v, uint64_t number, int *level, size_t *idx)
{
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < v->n[l]; i++)
            if (v->files[l][i]->meta.number == number) {
                *level = l;
                *idx = i;
                return 1;
            }
    return 0;
}

/* Builds base + edit as a new, not yet installed version; nothing in `base` changes. */
static int version_build(const marble__version *base, const marble__version_edit *e,
                         marble__version **out, marble_error *err)
{
    marble__version *v = calloc(1, sizeof *v);
    if (!v) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest: building a version");
    int rc = MARBLE_OK;
    size_t cap[MARBLE__NUM_LEVELS];
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++) {
        cap[l] = base->n[l];
        for (size_t i = 0; i < e->n_added; i++)
            cap[l] += e->added[i].level == l;
        v->files[l] = malloc((cap[l] ? cap[l] : 1) * sizeof(mfile *));
        if (!v->files[l]) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest: building a version");
            goto fail;
        }
        if (base->n[l]) memcpy(v->files[l], base->files[l], base->n[l] * sizeof(mfile *));
        v->n[l] = base->n[l];
    }
    for (size_t i = 0; i < e->n_deleted; i++) {
        const marble__deleted_file *d = &e->deleted[i];
        int l;
        size_t idx;
        if (d->level < 0 || d->level >= MARBLE__NUM_LEVELS ||
            !find_number(v, d->number, &l, &idx) || l != d->level) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "manifest: deleted file %" PRIu64 " is not in level %d",
                                  d->number, d->level);
            goto fail;
        }
        memmove(&v->files[l][idx], &v->files[l][idx + 1], (v->n[l] - idx - 1) * sizeof(mfile *));
        v->n[l]--;
    }
    for (size_t i = 0; i < e->n_added; i++) {
        const marble__file_meta *a = &e->added[i];
        int l;
        size_t idx;
        if (a->level < 0 || a->level >= MARBLE__NUM_LEVELS) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "manifest: added file %" PRIu64 " has bad level %d", a->number,
                                  a->level);
            goto fail;
        }
        if (keycmp(a->smallest, a->smallest_len, a->largest, a->largest_len) > 0) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "manifest: added file %" PRIu64 " has smallest > largest key",
                                  a->number);
            goto fail;
        }
        if (find_number(v, a->number, &l, &idx)) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "manifest: added file %" PRIu64 " is already in level %d",
                                  a->number, l);
            goto fail;
        }
        mfile *f = calloc(1, sizeof *f);
        if (!f || !meta_copy(&f->meta, a)) {
            free(f);
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest: building a version");
            goto fail;
        }
        v->files[a->level][v->n[a->level]++] = f;
    }
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++) {
        sort_level(v->files[l], v->n[l], l);
        for (size_t i = 1; l > 0 && i < v->n[l]; i++) {
            const marble__file_meta *p = &v->files[l][i - 1]->meta, *q = &v->files[l][i]->meta;
            if (keycmp(p->largest, p->largest_len, q->smallest, q->smallest_len) >= 0) {
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "manifest: files %" PRIu64 " and %" PRIu64
                                      " overlap in level %d",
                                      p->number, q->number, l);
                goto fail;
            }
        }
    }
    v->log_number = e->has_log_number ? e->log_number : base->log_number;
    /* edits prepared concurrently may carry an older next_file_number: never go back */
    v->next_file_number = e->has_next_file_number && e->next_file_number > base->next_file_number
                              ? e->next_file_number
                              : base->next_file_number;
    v->last_seq = e->has_last_seq ? e->last_seq : base->last_seq;
    v->cat = base->cat;
    if (e->catalog_reset || e->n_catalog) {
        size_t keep = e->catalog_reset || !base->cat ? 0 : base->cat->n;
        catalog *c = calloc(1, sizeof *c);
        if (c) c->v = calloc(keep + e->n_catalog + 1, sizeof *c->v);
        if (!c || !c->v) {
            free(c);
            v->cat = NULL;
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest: building a version");
            goto fail;
        }
        v->cat = c;
        for (size_t i = 0; i < keep + e->n_catalog; i++) {
            const marble__catalog_record *s = i < keep ? &base->cat->v[i] : &e->catalog[i - keep];
            c->v[i].data = dup_bytes(s->data, s->len);
            if (!c->v[i].data) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest: building a version");
                goto fail;
            }
            c->v[i].len = s->len;
            c->n++;
        }
    }
    *out = v;
    return MARBLE_OK;
fail:
    version_discard(v);
    return rc;
}

int marble__version_to_edit(const marble__version *v, marble__version_edit *out)
{
    marble__edit_init(out);
    marble__edit_set_log_number(out, v->log_number);
    marble__edit_set_next_file_number(out, v->next_file_number);
    marble__edit_set_last_seq(out, v->last_seq);
    out->catalog_reset = 1;
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < v->n[l]; i++)
            if (marble__edit_add_file(out, &v->files[l][i]->meta) != MARBLE_OK) goto oom;
    for (size_t i = 0; v->cat && i < v->cat->n; i++)
        if (marble__edit_add_catalog(out, v->cat->v[i].data, v->cat->v[i].len) != MARBLE_OK)
            goto oom;
    return MARBLE_OK;
oom:
    marble__edit_free(out);
    return MARBLE_ERR_NO_MEMORY;
}

/* ---- files and records ----------------------------------------------------------------------- */

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *uri = malloc(n);
    if (uri) snprintf(uri, n, "%s/%s", dir, name);
    return uri;
}

static void manifest_name(char *out, uint64_t number)
{
    snprintf(out, NAME_MAX_LEN, "MANIFEST-%06" PRIu64, number);
}

static int parse_manifest_name(const char *name, size_t len, uint64_t *out)
{
    if (len < 10 || len >= NAME_MAX_LEN || memcmp(name, "MANIFEST-", 9) != 0) return 0;
    uint64_t v = 0;
    for (size_t i = 9; i < len; i++) {
        if (name[i] < '0' || name[i] > '9' || v > (UINT64_MAX - 9) / 10) return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    char canon[NAME_MAX_LEN];
    manifest_name(canon, v);
    if (v == 0 || strlen(canon) != len || memcmp(canon, name, len) != 0) return 0;
    *out = v;
    return 1;
}

static uint32_t record_crc(uint64_t number, const unsigned char *rec, uint32_t len)
{
    unsigned char no[8];
    for (int i = 0; i < 8; i++)
        no[i] = (unsigned char)(number >> (8 * i));
    uint32_t c = marble_crc32c(no, sizeof no);
    c = marble_crc32c_extend(c, rec + 4, (size_t)len + 4);
    return ((c >> 15) | (c << 17)) + CRC_MASK_DELTA;
}

static int frame_record(uint64_t number, const marble__version_edit *e, unsigned char **out,
                        size_t *len, marble_error *err)
{
    unsigned char *payload;
    size_t n;
    MARBLE_RETURN_NOT_OK(marble__edit_encode(e, &payload, &n, err));
    unsigned char *rec = malloc(REC_HEADER + n);
    if (!rec) {
        free(payload);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest: framing a record");
    }
    put32(rec + 4, (uint32_t)n);
    if (n) memcpy(rec + REC_HEADER, payload, n);
    free(payload);
    put32(rec, record_crc(number, rec, (uint32_t)n));
    *out = rec;
    *len = REC_HEADER + n;
    return MARBLE_OK;
}

static int record_ok(uint64_t number, const unsigned char *p, size_t avail, uint32_t *len,
                     const char **why)
{
    if (avail < REC_HEADER) {
        *why = "incomplete record";
        return 0;
    }
    uint32_t n = get32(p + 4);
    if (n > MARBLE__MANIFEST_MAX_RECORD || (uint64_t)n + REC_HEADER > avail) {
        *why = "incomplete record";
        return 0;
    }
    if (get32(p) != record_crc(number, p, n)) {
        *why = "CRC mismatch";
        return 0;
    }
    *len = n;
    return 1;
}

static int sync_parent_dir(marble_fs *fs, const char *dir, marble_error *err)
{
    const char *scheme = strstr(dir, "://");
    const char *path = scheme ? scheme + 3 : dir;
    const char *slash = strrchr(path, '/');
    if (!slash) return MARBLE_OK;
    size_t n = (size_t)(slash - dir) + (slash == path ? 1 : 0);
    char *parent = (char *)dup_bytes(dir, n + 1);
    if (!parent) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest %s: open", dir);
    parent[n] = '\0';
    int rc = marble_fs_sync_dir(fs, parent, err);
    free(parent);
    return rc;
}

/* ---- the manifest ---------------------------------------------------------------------------- */

static int fail_sticky(marble__manifest *m, int rc, marble_error *e, marble_error *err)
{
    m->failed = 1;
    m->failure = *e;
    m->failure.code = rc;
    if (err) *err = m->failure;
    return rc;
}

/* Under write_mu: snapshot into MANIFEST-(number+1), then switch CURRENT to it. */
/* Writes version v as one snapshot record into a new MANIFEST-(n+1) and makes it the live one,
 * then removes MANIFEST-n. Log mode: the new file stays open for the edits that follow and
 * CURRENT is switched with a durable rename. Object-store mode: the object is created with
 * EXCLUSIVE and completed by sync and close; there is no CURRENT (open takes the highest n). */
static int write_snapshot_locked(marble__manifest *m, const marble__version *v, marble_error *err)
{
    uint64_t no = m->number + 1;
    char name[NAME_MAX_LEN], old_name[NAME_MAX_LEN];
    manifest_name(name, no);
    char *uri = join(m->dir, name), *old = NULL, *tmp = NULL, *cur = NULL;
    if (!m->object_store) {
        tmp = join(m->dir, "CURRENT.tmp");
        cur = join(m->dir, "CURRENT");
    }
    marble_file *f = NULL;
    unsigned char *rec = NULL;
    size_t len = 0;
    marble__version_edit snap;
    marble__edit_init(&snap);
    marble_error e;
    marble_error_clear(&e);
    int rc = MARBLE_OK;
    if (m->number) {
        manifest_name(old_name, m->number);
        old = join(m->dir, old_name);
    }
    if (!uri || (!m->object_store && (!tmp || !cur)) || (m->number && !old) ||
        marble__version_to_edit(v, &snap) != MARBLE_OK) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest %s: writing %s", m->dir, name);
        goto cleanup;
    }
    rc = frame_record(no, &snap, &rec, &len, err);
    if (rc != MARBLE_OK) goto cleanup;
    int flags = MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE;
    if (m->object_store) flags |= MARBLE_OPEN_EXCLUSIVE;
    rc = marble_fs_open(m->fs, uri, flags, &f, &e);
    if (rc == MARBLE_OK) rc = marble_file_append(f, rec, len, &e);
    if (rc == MARBLE_OK) rc = marble_file_sync(f, MARBLE_SYNC_FULL, &e);
    if (m->object_store) {
        if (f) {
            int crc = marble_file_close(f, rc == MARBLE_OK ? &e : NULL);
            if (rc == MARBLE_OK) rc = crc;
            f = NULL;
        }
    } else {
        char content[NAME_MAX_LEN + 1];
        manifest_name(content, no);
        strcat(content, "\n");
        if (rc == MARBLE_OK) rc = marble_fs_sync_dir(m->fs, m->dir, &e);
        if (rc == MARBLE_OK) rc = marble_fs_write_all(m->fs, tmp, content, strlen(content), 0, &e);
        if (rc == MARBLE_OK) rc = marble_fs_rename(m->fs, tmp, cur, 1, &e);
    }
    if (rc != MARBLE_OK) {
        marble_file_close(f, NULL);
        marble_error cause = e;
        marble_error_set(&e, rc, "manifest %s: writing %s: %s", m->dir, name, cause.message);
        rc = fail_sticky(m, rc, &e, err);
        goto cleanup;
    }
    marble_file_close(m->file, NULL);
    m->file = f; /* NULL in object-store mode */
    m->number = no;
    m->size = len;
    if (old) marble_fs_remove(m->fs, old, NULL);
cleanup:
    marble__edit_free(&snap);
    free(rec);
    free(uri);
    free(tmp);
    free(cur);
    free(old);
    return rc;
}

static int roll_locked(marble__manifest *m, marble_error *err)
{
    return write_snapshot_locked(m, m->current, err);
}

int marble__manifest_roll(marble__manifest *m, marble_error *err)
{
    pthread_mutex_lock(&m->write_mu);
    int rc;
    if (m->failed) {
        if (err) *err = m->failure;
        rc = m->failure.code;
    } else {
        rc = roll_locked(m, err);
    }
    pthread_mutex_unlock(&m->write_mu);
    return rc;
}

int marble__manifest_apply(marble__manifest *m, const marble__version_edit *edit, marble_error *err)
{
    pthread_mutex_lock(&m->write_mu);
    marble__version *nv = NULL;
    unsigned char *rec = NULL;
    size_t len = 0;
    marble_error e;
    int rc;
    if (m->failed) {
        if (err) *err = m->failure;
        rc = m->failure.code;
        goto cleanup;
    }
    rc = version_build(m->current, edit, &nv, err);
    if (rc != MARBLE_OK) goto cleanup;
    if (m->object_store) {
        rc = write_snapshot_locked(m, nv, err);
        if (rc != MARBLE_OK) goto cleanup;
        goto install;
    }
    if (m->size >= m->max_size) {
        rc = roll_locked(m, err);
        if (rc != MARBLE_OK) goto cleanup;
    }
    rc = frame_record(m->number, edit, &rec, &len, err);
    if (rc != MARBLE_OK) goto cleanup;
    rc = marble_file_append(m->file, rec, len, &e);
    if (rc == MARBLE_OK) rc = marble_file_sync(m->file, MARBLE_SYNC_DATA, &e);
    if (rc != MARBLE_OK) {
        marble_error cause = e;
        marble_error_set(&e, rc, "manifest %s: %s", m->dir, cause.message);
        rc = fail_sticky(m, rc, &e, err);
        goto cleanup;
    }
    m->size += len;
install:
    pthread_mutex_lock(&m->mu);
    version_install_locked(m, nv);
    atomic_store_explicit(&nv->refs, 1, memory_order_relaxed);
    release_current_locked(m);
    m->current = nv;
    nv = NULL;
    pthread_mutex_unlock(&m->mu);
cleanup:
    version_discard(nv);
    free(rec);
    pthread_mutex_unlock(&m->write_mu);
    return rc;
}

marble__version *marble__manifest_current(marble__manifest *m)
{
    pthread_mutex_lock(&m->mu);
    marble__version *v = m->current;
    marble__version_ref(v);
    pthread_mutex_unlock(&m->mu);
    return v;
}

uint64_t marble__manifest_number(marble__manifest *m)
{
    pthread_mutex_lock(&m->write_mu);
    uint64_t n = m->number;
    pthread_mutex_unlock(&m->write_mu);
    return n;
}

uint64_t marble__manifest_file_size(marble__manifest *m)
{
    pthread_mutex_lock(&m->write_mu);
    uint64_t n = m->size;
    pthread_mutex_unlock(&m->write_mu);
    return n;
}

void marble__manifest_obsolete_files(marble__manifest *m, marble__file_number_fn fn, void *ud)
{
    pthread_mutex_lock(&m->mu);
    while (m->obsolete_head) {
        mfile *f = m->obsolete_head;
        m->obsolete_head = f->next_obsolete;
        if (!m->obsolete_head) m->obsolete_tail = NULL;
        int stop = fn(f->meta.number, ud);
        mfile_free(f);
        if (stop) break;
    }
    pthread_mutex_unlock(&m->mu);
}

void marble__manifest_live_files(marble__manifest *m, marble__file_number_fn fn, void *ud)
{
    pthread_mutex_lock(&m->mu);
    uint64_t epoch = ++m->mark_epoch;
    int stop = 0;
    for (marble__version *v = m->live; v && !stop; v = v->next)
        for (int l = 0; l < MARBLE__NUM_LEVELS && !stop; l++)
            for (size_t i = 0; i < v->n[l] && !stop; i++) {
                mfile *f = v->files[l][i];
                if (f->mark == epoch) continue;
                f->mark = epoch;
                stop = fn(f->meta.number, ud);
            }
    pthread_mutex_unlock(&m->mu);
}

/* Replays MANIFEST-`number` into m->current. */
static int replay(marble__manifest *m, uint64_t number, marble__manifest_recovery *rec,
                  marble_error *err)
{
    char name[NAME_MAX_LEN];
    manifest_name(name, number);
    char *uri = join(m->dir, name);
    if (!uri) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest %s: open", m->dir);
    void *data = NULL;
    size_t size = 0;
    marble_error e;
    int rc = marble_fs_read_all(m->fs, uri, &data, &size, &e);
    if (rc == MARBLE_ERR_NOT_FOUND) {
        rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                              "manifest %s: corruption: CURRENT names %s: %s", m->dir, name,
                              e.message);
        goto cleanup;
    }
    if (rc != MARBLE_OK) {
        rc = marble_error_set(err, rc, "manifest %s: %s", uri, e.message);
        goto cleanup;
    }
    const unsigned char *p = data;
    size_t pos = 0;
    /* the first record (the snapshot) is synced before CURRENT names the file: never torn */
    if (size == 0) {
        rc = marble_error_set(err, MARBLE_ERR_CORRUPTION, "manifest %s: corruption: empty file",
                              uri);
        goto cleanup;
    }
    while (pos < size) {
        uint32_t n;
        const char *why;
        if (!record_ok(number, p + pos, size - pos, &n, &why)) {
            if (pos == 0) {
                rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                      "manifest %s: corruption: %s in the first record", uri, why);
                goto cleanup;
            }
            for (size_t q = pos + 1; q + REC_HEADER <= size; q++) {
                uint32_t n2;
                const char *w2;
                if (record_ok(number, p + q, size - q, &n2, &w2)) {
                    rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                          "manifest %s: corruption: %s at offset %zu", uri, why,
                                          pos);
                    goto cleanup;
                }
            }
            rec->torn_tail = 1;
            rec->torn_offset = pos;
            rec->torn_bytes = size - pos;
            break;
        }
        marble__version_edit ed;
        marble__version *nv = NULL;
        rc = marble__edit_decode(p + pos + REC_HEADER, n, &ed, &e);
        if (rc == MARBLE_OK) rc = version_build(m->current, &ed, &nv, &e);
        marble__edit_free(&ed);
        if (rc != MARBLE_OK) {
            if (rc != MARBLE_ERR_NO_MEMORY) rc = MARBLE_ERR_CORRUPTION;
            rc = marble_error_set(err, rc, "manifest %s: corruption: record at offset %zu: %s", uri,
                                  pos, e.message);
            goto cleanup;
        }
        pthread_mutex_lock(&m->mu);
        version_install_locked(m, nv);
        atomic_store_explicit(&nv->refs, 1, memory_order_relaxed);
        release_current_locked(m);
        m->current = nv;
        pthread_mutex_unlock(&m->mu);
        rec->records++;
        pos += REC_HEADER + n;
    }
    rec->manifest_number = number;
cleanup:
    free(data);
    free(uri);
    return rc;
}

static int read_current(marble__manifest *m, const char *cur, uint64_t *number, marble_error *err)
{
    void *data = NULL;
    size_t size = 0;
    marble_error e;
    int rc = marble_fs_read_all(m->fs, cur, &data, &size, &e);
    if (rc != MARBLE_OK) return marble_error_set(err, rc, "manifest %s: %s", cur, e.message);
    const char *s = data;
    if (size < 2 || s[size - 1] != '\n' || !parse_manifest_name(s, size - 1, number))
        rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                              "manifest %s: corruption: does not name a MANIFEST file", cur);
    free(data);
    return rc;
}

static int find_newest(void *ud, const char *name, int is_dir)
{
    uint64_t *newest = ud, no;
    if (!is_dir && parse_manifest_name(name, strlen(name), &no) && no > *newest) *newest = no;
    return 0;
}

static int remove_stale(void *ud, const char *name, int is_dir)
{
    marble__manifest *m = ud;
    uint64_t no;
    if (is_dir) return 0;
    if (strcmp(name, "CURRENT.tmp") == 0 ||
        (parse_manifest_name(name, strlen(name), &no) && no != m->number)) {
        char *uri = join(m->dir, name);
        if (uri) marble_fs_remove(m->fs, uri, NULL);
        free(uri);
    }
    return 0;
}

int marble__manifest_open(marble_fs *fs, const char *dir_uri, const marble__manifest_options *opts,
                          marble__manifest **out, marble__manifest_recovery *rec, marble_error *err)
{
    marble__manifest_options o = {0};
    if (opts) o = *opts;
    marble__manifest_recovery r = {0};
    marble_error e;
    char *cur = NULL;
    int rc = MARBLE_OK, exists = 0;
    *out = NULL;
    marble__manifest *m = calloc(1, sizeof *m);
    if (!m) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest %s: open", dir_uri);
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->write_mu, NULL);
    m->fs = fs;
    m->object_store = o.object_store;
    m->max_size = o.max_file_size ? o.max_file_size : DEFAULT_MAX_FILE;
    size_t dn = strlen(dir_uri);
    while (dn > 1 && dir_uri[dn - 1] == '/' && dir_uri[dn - 2] != '/')
        dn--;
    m->dir = (char *)dup_bytes(dir_uri, dn + 1);
    m->current = calloc(1, sizeof *m->current);
    if (!m->dir || !m->current) {
        free(m->current);
        m->current = NULL;
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest %s: open", dir_uri);
        goto fail;
    }
    m->dir[dn] = '\0';
    version_install_locked(m, m->current);
    atomic_store_explicit(&m->current->refs, 1, memory_order_relaxed);
    cur = join(m->dir, "CURRENT");
    if (!cur) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "manifest %s: open", m->dir);
        goto fail;
    }
    rc = marble_fs_exists(fs, m->dir, &exists, &e);
    if (rc == MARBLE_OK && !exists) {
        rc = marble_fs_mkdir(fs, m->dir, 1, &e);
        if (rc == MARBLE_OK) rc = sync_parent_dir(fs, m->dir, &e);
    }
    uint64_t newest = 0;
    if (rc == MARBLE_OK && m->object_store) {
        rc = marble_fs_list(fs, m->dir, find_newest, &newest, &e);
        exists = newest != 0;
    } else if (rc == MARBLE_OK) {
        rc = marble_fs_exists(fs, cur, &exists, &e);
    }
    if (rc != MARBLE_OK) {
        rc = marble_error_set(err, rc, "manifest %s: open: %s", m->dir, e.message);
        goto fail;
    }
    if (!exists && !o.create_if_missing) {
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "manifest %s: no CURRENT file", m->dir);
        goto fail;
    }
    if (exists && o.error_if_exists) {
        rc = marble_error_set(err, MARBLE_ERR_EXISTS, "manifest %s: already exists", m->dir);
        goto fail;
    }
    if (exists) {
        uint64_t number = newest;
        if (!m->object_store) rc = read_current(m, cur, &number, err);
        if (rc == MARBLE_OK) rc = replay(m, number, &r, err);
        if (rc != MARBLE_OK) goto fail;
        m->number = number;
    }
    rc = roll_locked(m, err);
    if (rc != MARBLE_OK) goto fail;
    marble_fs_list(fs, m->dir, remove_stale, m, NULL);
    free(cur);
    if (rec) *rec = r;
    *out = m;
    return MARBLE_OK;
fail:
    free(cur);
    m->number = 0;
    marble__manifest_close(m, NULL);
    return rc;
}

int marble__manifest_create(marble_fs *fs, const char *dir_uri, uint64_t max_file_size,
                            marble__manifest **out, marble_error *err)
{
    marble__manifest_options o = {max_file_size, 1, 1, 0};
    return marble__manifest_open(fs, dir_uri, &o, out, NULL, err);
}

int marble__manifest_close(marble__manifest *m, marble_error *err)
{
    if (!m) return MARBLE_OK;
    pthread_mutex_lock(&m->write_mu);
    int rc = marble_file_close(m->file, err);
    m->file = NULL;
    pthread_mutex_unlock(&m->write_mu);
    pthread_mutex_lock(&m->mu);
    m->closed = 1;
    release_current_locked(m);
    int free_m = !m->live;
    pthread_mutex_unlock(&m->mu);
    if (free_m) manifest_free(m);
    return rc;
}
