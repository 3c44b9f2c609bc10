/*
 * Internal iterators: adapters over memtables, SSTables and sorted runs of SSTables, the k-way
 * merge, and the version-collapsing visible view (see iter.h).
 */
#include <stdlib.h>
#include <string.h>

#include "lsm/iter.h"
#include "lsm/keyenc.h"

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

/* Internal-key order: key ascending, then seq descending. */
static int ikey_cmp(const void *a, size_t alen, uint64_t aseq, const void *b, size_t blen,
                    uint64_t bseq)
{
    int c = key_cmp(a, alen, b, blen);
    if (c) return c;
    return aseq > bseq ? -1 : (aseq < bseq ? 1 : 0);
}

/* A growable copy of a key. */
typedef struct keybuf {
    unsigned char *p;
    size_t len, cap;
} keybuf;

static int keybuf_set(keybuf *b, const void *data, size_t n)
{
    if (n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    if (n && data) memcpy(b->p, data, n);
    b->len = n;
    return 1;
}

static void keybuf_free(keybuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- memtable ----------------------------------------------------------------------------------
 */

typedef struct mem_iter {
    marble__iter base;
    marble__memtable_iter mi;
    unsigned char *prefix;
    size_t plen;
    unsigned char *succ; /* the prefix successor, when bounded */
    size_t slen;
    keybuf scratch; /* prefix + sought key */
    int oom;
} mem_iter;

static int mem_valid(marble__iter *it)
{
    mem_iter *m = (mem_iter *)it;
    if (!marble__memtable_iter_valid(&m->mi)) return 0;
    if (m->plen == 0) return 1;
    size_t klen;
    const void *k = marble__memtable_iter_key(&m->mi, &klen);
    return klen >= m->plen && memcmp(k, m->prefix, m->plen) == 0;
}

static void mem_seek_to_first(marble__iter *it)
{
    mem_iter *m = (mem_iter *)it;
    if (m->plen == 0)
        marble__memtable_iter_seek_to_first(&m->mi);
    else
        marble__memtable_iter_seek(&m->mi, m->prefix, m->plen);
}

static void mem_seek_to_last(marble__iter *it)
{
    mem_iter *m = (mem_iter *)it;
    if (m->succ) {
        marble__memtable_iter_seek(&m->mi, m->succ, m->slen);
        if (marble__memtable_iter_valid(&m->mi)) {
            marble__memtable_iter_prev(&m->mi);
            return;
        }
    }
    marble__memtable_iter_seek_to_last(&m->mi);
}

static void mem_seek(marble__iter *it, const void *key, size_t klen)
{
    mem_iter *m = (mem_iter *)it;
    if (m->plen == 0) {
        marble__memtable_iter_seek(&m->mi, key, klen);
        return;
    }
    if (!keybuf_set(&m->scratch, NULL, m->plen + klen)) {
        m->oom = 1;
        m->mi.node = NULL;
        return;
    }
    memcpy(m->scratch.p, m->prefix, m->plen);
    if (klen) memcpy(m->scratch.p + m->plen, key, klen);
    marble__memtable_iter_seek(&m->mi, m->scratch.p, m->scratch.len);
}

static void mem_next(marble__iter *it)
{
    marble__memtable_iter_next(&((mem_iter *)it)->mi);
}
static void mem_prev(marble__iter *it)
{
    marble__memtable_iter_prev(&((mem_iter *)it)->mi);
}

static const void *mem_key(marble__iter *it, size_t *klen)
{
    mem_iter *m = (mem_iter *)it;
    size_t n;
    const unsigned char *k = marble__memtable_iter_key(&m->mi, &n);
    *klen = n - m->plen;
    return k + m->plen;
}

static uint64_t mem_seq(marble__iter *it)
{
    return marble__memtable_iter_seq(&((mem_iter *)it)->mi);
}
static int mem_op(marble__iter *it)
{
    return (int)marble__memtable_iter_op(&((mem_iter *)it)->mi);
}

static const void *mem_value(marble__iter *it, size_t *vlen)
{
    return marble__memtable_iter_value(&((mem_iter *)it)->mi, vlen);
}

static const struct ArrowArray *mem_batch(marble__iter *it, int64_t *row)
{
    (void)it;
    if (row) *row = -1;
    return NULL;
}

static int mem_status(marble__iter *it, marble_error *err)
{
    mem_iter *m = (mem_iter *)it;
    if (m->oom)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "memtable iterator: out of memory");
    return MARBLE_OK;
}

static void mem_destroy(marble__iter *it)
{
    mem_iter *m = (mem_iter *)it;
    free(m->prefix);
    free(m->succ);
    keybuf_free(&m->scratch);
    free(m);
}

static const marble__iter_ops mem_ops = {
    mem_valid, mem_seek_to_first, mem_seek_to_last, mem_seek, mem_next,
    mem_prev,  mem_key,           mem_seq,          mem_op,   mem_value,
    mem_batch, mem_status,        mem_destroy};

int marble__iter_memtable(const marble__memtable *mt, const void *prefix, size_t plen,
                          marble__iter **out, marble_error *err)
{
    *out = NULL;
    if (!mt || (plen && !prefix))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "memtable iterator: NULL memtable or prefix");
    mem_iter *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->base.ops = &mem_ops;
    marble__memtable_iter_init(&m->mi, mt);
    if (plen) {
        m->prefix = malloc(plen);
        if (!m->prefix) goto oom;
        memcpy(m->prefix, prefix, plen);
        m->plen = plen;
        marble__bytes succ = {0};
        int bounded = 0;
        if (marble__key_prefix_successor(prefix, plen, &succ, &bounded, err) != MARBLE_OK) {
            mem_destroy(&m->base);
            return err ? err->code : MARBLE_ERR_NO_MEMORY;
        }
        if (bounded) {
            m->succ = succ.data;
            m->slen = succ.len;
        } else {
            marble__bytes_free(&succ);
        }
    }
    *out = &m->base;
    return MARBLE_OK;
oom:
    if (m) mem_destroy(&m->base);
    return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "memtable iterator: out of memory");
}

/* ---- one SSTable --------------------------------------------------------------------------------
 */

typedef struct sst_iter {
    marble__iter base;
    marble__sst *sst;
    marble__sst_iter *si;
} sst_iter;

#define SI(it) (((sst_iter *)(it))->si)

static int sst_valid(marble__iter *it)
{
    return marble__sst_iter_valid(SI(it));
}
static void sst_seek_to_first(marble__iter *it)
{
    marble__sst_iter_seek_to_first(SI(it));
}
static void sst_seek_to_last(marble__iter *it)
{
    marble__sst_iter_seek_to_last(SI(it));
}
static void sst_seek(marble__iter *it, const void *k, size_t n)
{
    marble__sst_iter_seek(SI(it), k, n);
}
static void sst_next(marble__iter *it)
{
    marble__sst_iter_next(SI(it));
}
static void sst_prev(marble__iter *it)
{
    marble__sst_iter_prev(SI(it));
}
static const void *sst_key(marble__iter *it, size_t *n)
{
    return marble__sst_iter_key(SI(it), n);
}
static uint64_t sst_seq(marble__iter *it)
{
    return marble__sst_iter_seq(SI(it));
}
static int sst_op(marble__iter *it)
{
    return marble__sst_iter_op(SI(it));
}
static const void *sst_value(marble__iter *it, size_t *n)
{
    return marble__sst_iter_value(SI(it), n);
}
static const struct ArrowArray *sst_batch(marble__iter *it, int64_t *row)
{
    return marble__sst_iter_batch(SI(it), row);
}
static int sst_status(marble__iter *it, marble_error *err)
{
    return marble__sst_iter_status(SI(it), err);
}

static void sst_destroy(marble__iter *it)
{
    sst_iter *s = (sst_iter *)it;
    marble__sst_iter_destroy(s->si);
    marble__sst_unref(s->sst);
    free(s);
}

static const marble__iter_ops sst_ops = {
    sst_valid, sst_seek_to_first, sst_seek_to_last, sst_seek, sst_next,
    sst_prev,  sst_key,           sst_seq,          sst_op,   sst_value,
    sst_batch, sst_status,        sst_destroy};

int marble__iter_sst(marble__sst *s, marble__iter **out, marble_error *err)
{
    *out = NULL;
    if (!s) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "sst iterator: NULL table");
    sst_iter *it = calloc(1, sizeof *it);
    if (!it) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sst iterator: out of memory");
    int rc = marble__sst_iter_create(s, &it->si, err);
    if (rc != MARBLE_OK) {
        free(it);
        return rc;
    }
    marble__sst_ref(s);
    it->sst = s;
    it->base.ops = &sst_ops;
    *out = &it->base;
    return MARBLE_OK;
}

/* ---- a sorted run of SSTables -------------------------------------------------------------------
 */

typedef struct run_file {
    marble__sst *sst;
    const uint8_t *largest; /* points into the SSTable's mapping */
    size_t llen;
} run_file;

typedef struct run_iter {
    marble__iter base;
    run_file *files;
    size_t n;
    size_t cur;           /* index of the open file; n when none */
    marble__sst_iter *si; /* iterator over files[cur] */
    int rc;               /* sticky error */
    marble_error err;
} run_iter;

static void run_close(run_iter *r)
{
    marble__sst_iter_destroy(r->si);
    r->si = NULL;
    r->cur = r->n;
}

/* Opens files[i]; 0 on failure (recorded). */
static int run_open(run_iter *r, size_t i)
{
    if (r->cur == i && r->si) return 1;
    run_close(r);
    if (r->rc != MARBLE_OK) return 0;
    int rc = marble__sst_iter_create(r->files[i].sst, &r->si, &r->err);
    if (rc != MARBLE_OK) {
        r->rc = rc;
        r->si = NULL;
        return 0;
    }
    r->cur = i;
    return 1;
}

/* Records the current file's error, if any, and closes it; 1 when there was none. */
static int run_check(run_iter *r)
{
    if (!r->si) return r->rc == MARBLE_OK;
    marble_error e;
    marble_error_clear(&e);
    int rc = marble__sst_iter_status(r->si, &e);
    if (rc != MARBLE_OK) {
        if (r->rc == MARBLE_OK) {
            r->rc = rc;
            r->err = e;
            if (r->err.code == MARBLE_OK) r->err.code = rc;
        }
        run_close(r);
        return 0;
    }
    return 1;
}

/* From file i on (forward), the first entry. */
static void run_forward_from(run_iter *r, size_t i)
{
    for (; i < r->n; i++) {
        if (!run_open(r, i)) return;
        marble__sst_iter_seek_to_first(r->si);
        if (marble__sst_iter_valid(r->si)) return;
        if (!run_check(r)) return;
    }
    run_close(r);
}

/* From file i down (backward), the last entry; i is a count (files [0, i) are considered). */
static void run_backward_from(run_iter *r, size_t i)
{
    while (i-- > 0) {
        if (!run_open(r, i)) return;
        marble__sst_iter_seek_to_last(r->si);
        if (marble__sst_iter_valid(r->si)) return;
        if (!run_check(r)) return;
    }
    run_close(r);
}

static int run_valid(marble__iter *it)
{
    run_iter *r = (run_iter *)it;
    return r->si && marble__sst_iter_valid(r->si);
}

static void run_seek_to_first(marble__iter *it)
{
    run_forward_from((run_iter *)it, 0);
}
static void run_seek_to_last(marble__iter *it)
{
    run_iter *r = (run_iter *)it;
    run_backward_from(r, r->n);
}

static void run_seek(marble__iter *it, const void *key, size_t klen)
{
    run_iter *r = (run_iter *)it;
    /* The first file whose largest key is >= key. */
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(r->files[mid].largest, r->files[mid].llen, key, klen) >= 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo >= r->n) {
        run_close(r);
        return;
    }
    if (!run_open(r, lo)) return;
    marble__sst_iter_seek(r->si, key, klen);
    if (marble__sst_iter_valid(r->si)) return;
    if (!run_check(r)) return;
    run_forward_from(r, lo + 1);
}

static void run_next(marble__iter *it)
{
    run_iter *r = (run_iter *)it;
    marble__sst_iter_next(r->si);
    if (marble__sst_iter_valid(r->si)) return;
    if (!run_check(r)) return;
    run_forward_from(r, r->cur + 1);
}

static void run_prev(marble__iter *it)
{
    run_iter *r = (run_iter *)it;
    marble__sst_iter_prev(r->si);
    if (marble__sst_iter_valid(r->si)) return;
    if (!run_check(r)) return;
    run_backward_from(r, r->cur);
}

static const void *run_key(marble__iter *it, size_t *n)
{
    return marble__sst_iter_key(((run_iter *)it)->si, n);
}
static uint64_t run_seq(marble__iter *it)
{
    return marble__sst_iter_seq(((run_iter *)it)->si);
}
static int run_op(marble__iter *it)
{
    return marble__sst_iter_op(((run_iter *)it)->si);
}
static const void *run_value(marble__iter *it, size_t *n)
{
    return marble__sst_iter_value(((run_iter *)it)->si, n);
}
static const struct ArrowArray *run_batch(marble__iter *it, int64_t *row)
{
    return marble__sst_iter_batch(((run_iter *)it)->si, row);
}

static int run_status(marble__iter *it, marble_error *err)
{
    run_iter *r = (run_iter *)it;
    if (r->rc != MARBLE_OK) {
        if (err) *err = r->err;
        return r->rc;
    }
    if (r->si) return marble__sst_iter_status(r->si, err);
    return MARBLE_OK;
}

static void run_destroy(marble__iter *it)
{
    run_iter *r = (run_iter *)it;
    marble__sst_iter_destroy(r->si);
    for (size_t i = 0; i < r->n; i++)
        marble__sst_unref(r->files[i].sst);
    free(r->files);
    free(r);
}

static const marble__iter_ops run_ops = {
    run_valid, run_seek_to_first, run_seek_to_last, run_seek, run_next,
    run_prev,  run_key,           run_seq,          run_op,   run_value,
    run_batch, run_status,        run_destroy};

int marble__iter_run(marble__sst *const *ssts, size_t n, marble__iter **out, marble_error *err)
{
    *out = NULL;
    if (n && !ssts)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "run iterator: NULL tables");
    run_iter *r = calloc(1, sizeof *r);
    if (!r) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "run iterator: out of memory");
    r->files = calloc(n ? n : 1, sizeof *r->files);
    if (!r->files) {
        free(r);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "run iterator: out of memory");
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t nb = marble__sst_num_batches(ssts[i]);
        if (nb <= 0) continue; /* no entries */
        run_file *f = &r->files[m++];
        const uint8_t *lo;
        size_t lol;
        int64_t rows;
        f->sst = ssts[i];
        marble__sst_ref(f->sst);
        marble__sst_batch_range(f->sst, nb - 1, &lo, &lol, &f->largest, &f->llen, &rows);
    }
    n = m;
    r->n = n;
    r->cur = n;
    marble_error_clear(&r->err);
    r->base.ops = &run_ops;
    *out = &r->base;
    return MARBLE_OK;
}

/* ---- the k-way merge ----------------------------------------------------------------------------
 */

typedef struct merge_iter {
    marble__iter base;
    marble__iter **children;
    size_t n;
    size_t *heap; /* indexes of valid children; heap[0] is the current one */
    size_t hn;
    int backward;
    keybuf saved; /* the current key, kept across a direction switch */
    int rc;
} merge_iter;

/* Non-zero when child a should come before child b in the current direction. */
static int merge_before(merge_iter *m, size_t a, size_t b)
{
    size_t al, bl;
    const void *ak = marble__iter_key(m->children[a], &al);
    const void *bk = marble__iter_key(m->children[b], &bl);
    int c = ikey_cmp(ak, al, marble__iter_seq(m->children[a]), bk, bl,
                     marble__iter_seq(m->children[b]));
    if (c == 0) return a < b;
    return m->backward ? c > 0 : c < 0;
}

static void heap_down(merge_iter *m, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        if (l < m->hn && merge_before(m, m->heap[l], m->heap[best])) best = l;
        if (l + 1 < m->hn && merge_before(m, m->heap[l + 1], m->heap[best])) best = l + 1;
        if (best == i) return;
        size_t t = m->heap[i];
        m->heap[i] = m->heap[best];
        m->heap[best] = t;
        i = best;
    }
}

static void heap_build(merge_iter *m)
{
    m->hn = 0;
    for (size_t i = 0; i < m->n; i++)
        if (marble__iter_valid(m->children[i])) m->heap[m->hn++] = i;
    for (size_t i = m->hn / 2; i-- > 0;)
        heap_down(m, i);
}

/* After the top child moved. */
static void heap_fix_top(merge_iter *m)
{
    if (!marble__iter_valid(m->children[m->heap[0]])) {
        m->heap[0] = m->heap[--m->hn];
        if (m->hn == 0) return;
    }
    heap_down(m, 0);
}

static int merge_valid(marble__iter *it)
{
    return ((merge_iter *)it)->hn > 0;
}

static void merge_seek_to_first(marble__iter *it)
{
    merge_iter *m = (merge_iter *)it;
    for (size_t i = 0; i < m->n; i++)
        marble__iter_seek_to_first(m->children[i]);
    m->backward = 0;
    heap_build(m);
}

static void merge_seek_to_last(marble__iter *it)
{
    merge_iter *m = (merge_iter *)it;
    for (size_t i = 0; i < m->n; i++)
        marble__iter_seek_to_last(m->children[i]);
    m->backward = 1;
    heap_build(m);
}

static void merge_seek(marble__iter *it, const void *key, size_t klen)
{
    merge_iter *m = (merge_iter *)it;
    for (size_t i = 0; i < m->n; i++)
        marble__iter_seek(m->children[i], key, klen);
    m->backward = 0;
    heap_build(m);
}

/* Saves the current key; 0 (and the merge invalid with an error) when out of memory. */
static int merge_save(merge_iter *m, uint64_t *seq)
{
    size_t kl;
    marble__iter *top = m->children[m->heap[0]];
    const void *k = marble__iter_key(top, &kl);
    *seq = marble__iter_seq(top);
    if (!keybuf_set(&m->saved, k, kl)) {
        m->rc = MARBLE_ERR_NO_MEMORY;
        m->hn = 0;
        return 0;
    }
    return 1;
}

static int child_cmp(marble__iter *c, const keybuf *k, uint64_t seq)
{
    size_t cl;
    const void *ck = marble__iter_key(c, &cl);
    return ikey_cmp(ck, cl, marble__iter_seq(c), k->p, k->len, seq);
}

static void merge_next(marble__iter *it)
{
    merge_iter *m = (merge_iter *)it;
    if (m->backward) {
        /* Every other child to its first entry after the current one. */
        uint64_t seq;
        if (!merge_save(m, &seq)) return;
        size_t cur = m->heap[0];
        for (size_t i = 0; i < m->n; i++) {
            if (i == cur) continue;
            marble__iter *c = m->children[i];
            marble__iter_seek(c, m->saved.p, m->saved.len);
            while (marble__iter_valid(c) && child_cmp(c, &m->saved, seq) <= 0)
                marble__iter_next(c);
        }
        marble__iter_next(m->children[cur]);
        m->backward = 0;
        heap_build(m);
        return;
    }
    marble__iter_next(m->children[m->heap[0]]);
    heap_fix_top(m);
}

static void merge_prev(marble__iter *it)
{
    merge_iter *m = (merge_iter *)it;
    if (!m->backward) {
        /* Every other child to its last entry before the current one. */
        uint64_t seq;
        if (!merge_save(m, &seq)) return;
        size_t cur = m->heap[0];
        for (size_t i = 0; i < m->n; i++) {
            if (i == cur) continue;
            marble__iter *c = m->children[i];
            marble__iter_seek(c, m->saved.p, m->saved.len);
            while (marble__iter_valid(c) && child_cmp(c, &m->saved, seq) < 0)
                marble__iter_next(c);
            if (marble__iter_valid(c))
                marble__iter_prev(c);
            else if (marble__iter_status(c, NULL) == MARBLE_OK)
                marble__iter_seek_to_last(c);
        }
        marble__iter_prev(m->children[cur]);
        m->backward = 1;
        heap_build(m);
        return;
    }
    marble__iter_prev(m->children[m->heap[0]]);
    heap_fix_top(m);
}

#define TOP(it) (((merge_iter *)(it))->children[((merge_iter *)(it))->heap[0]])

static const void *merge_key(marble__iter *it, size_t *n)
{
    return marble__iter_key(TOP(it), n);
}
static uint64_t merge_seq(marble__iter *it)
{
    return marble__iter_seq(TOP(it));
}
static int merge_op(marble__iter *it)
{
    return marble__iter_op(TOP(it));
}
static const void *merge_value(marble__iter *it, size_t *n)
{
    return marble__iter_value(TOP(it), n);
}
static const struct ArrowArray *merge_batch(marble__iter *it, int64_t *row)
{
    return marble__iter_batch(TOP(it), row);
}

static int merge_status(marble__iter *it, marble_error *err)
{
    merge_iter *m = (merge_iter *)it;
    if (m->rc != MARBLE_OK) return marble_error_set(err, m->rc, "merging iterator: out of memory");
    for (size_t i = 0; i < m->n; i++) {
        int rc = marble__iter_status(m->children[i], err);
        if (rc != MARBLE_OK) return rc;
    }
    return MARBLE_OK;
}

static void merge_destroy(marble__iter *it)
{
    merge_iter *m = (merge_iter *)it;
    for (size_t i = 0; i < m->n; i++)
        marble__iter_destroy(m->children[i]);
    free(m->children);
    free(m->heap);
    keybuf_free(&m->saved);
    free(m);
}

static const marble__iter_ops merge_ops = {
    merge_valid, merge_seek_to_first, merge_seek_to_last, merge_seek, merge_next,
    merge_prev,  merge_key,           merge_seq,          merge_op,   merge_value,
    merge_batch, merge_status,        merge_destroy};

int marble__iter_merge(marble__iter **children, size_t n, marble__iter **out, marble_error *err)
{
    *out = NULL;
    merge_iter *m = calloc(1, sizeof *m);
    if (m) {
        m->children = malloc((n ? n : 1) * sizeof *m->children);
        m->heap = malloc((n ? n : 1) * sizeof *m->heap);
    }
    if (!m || !m->children || !m->heap) {
        for (size_t i = 0; i < n; i++)
            marble__iter_destroy(children[i]);
        if (m) {
            free(m->children);
            free(m->heap);
            free(m);
        }
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "merging iterator: out of memory");
    }
    if (n) memcpy(m->children, children, n * sizeof *children);
    m->n = n;
    m->base.ops = &merge_ops;
    *out = &m->base;
    return MARBLE_OK;
}

/* ---- the visible view ---------------------------------------------------------------------------
 */

typedef struct visible_iter {
    marble__iter base;
    marble__iter *in;
    uint64_t snap;
    int valid;
    keybuf cur; /* scratch copy of a key */
    int rc;
} visible_iter;

static int vis_oom(visible_iter *v)
{
    v->rc = MARBLE_ERR_NO_MEMORY;
    v->valid = 0;
    return 0;
}

static int same_key(marble__iter *in, const keybuf *k)
{
    size_t n;
    const void *p = marble__iter_key(in, &n);
    return key_cmp(p, n, k->p, k->len) == 0;
}

/* From the internal position on, the first key whose newest version <= snap is a put. */
static void vis_find_forward(visible_iter *v)
{
    marble__iter *in = v->in;
    v->valid = 0;
    while (marble__iter_valid(in)) {
        if (marble__iter_seq(in) > v->snap) {
            marble__iter_next(in);
            continue;
        }
        if (marble__iter_op(in) != 0) {
            v->valid = 1;
            return;
        }
        size_t kl;
        const void *k = marble__iter_key(in, &kl);
        if (!keybuf_set(&v->cur, k, kl)) {
            vis_oom(v);
            return;
        }
        do
            marble__iter_next(in);
        while (marble__iter_valid(in) && same_key(in, &v->cur));
    }
}

/* The internal iterator is at the last entry of some key (or invalid): walks backward to the
 * last key visible as a put and positions the internal iterator on its visible version. */
static void vis_find_backward(visible_iter *v)
{
    marble__iter *in = v->in;
    v->valid = 0;
    while (marble__iter_valid(in)) {
        size_t kl;
        const void *k = marble__iter_key(in, &kl);
        if (!keybuf_set(&v->cur, k, kl)) {
            vis_oom(v);
            return;
        }
        int found = 0, op = 0;
        do {
            if (marble__iter_seq(in) <= v->snap) {
                found = 1;
                op = marble__iter_op(in);
            }
            marble__iter_prev(in);
        } while (marble__iter_valid(in) && same_key(in, &v->cur));
        if (!found || op == 0) continue;
        if (marble__iter_status(in, NULL) != MARBLE_OK) return;
        /* Back onto the visible version: the first of the key's entries with seq <= snap. */
        marble__iter_seek(in, v->cur.p, v->cur.len);
        while (marble__iter_valid(in) && marble__iter_seq(in) > v->snap)
            marble__iter_next(in);
        v->valid = marble__iter_valid(in) && same_key(in, &v->cur);
        return;
    }
}

static int vis_valid(marble__iter *it)
{
    return ((visible_iter *)it)->valid;
}

static void vis_seek_to_first(marble__iter *it)
{
    visible_iter *v = (visible_iter *)it;
    marble__iter_seek_to_first(v->in);
    vis_find_forward(v);
}

static void vis_seek_to_last(marble__iter *it)
{
    visible_iter *v = (visible_iter *)it;
    marble__iter_seek_to_last(v->in);
    vis_find_backward(v);
}

static void vis_seek(marble__iter *it, const void *key, size_t klen)
{
    visible_iter *v = (visible_iter *)it;
    marble__iter_seek(v->in, key, klen);
    vis_find_forward(v);
}

static void vis_next(marble__iter *it)
{
    visible_iter *v = (visible_iter *)it;
    size_t kl;
    const void *k = marble__iter_key(v->in, &kl);
    if (!keybuf_set(&v->cur, k, kl)) {
        vis_oom(v);
        return;
    }
    do
        marble__iter_next(v->in);
    while (marble__iter_valid(v->in) && same_key(v->in, &v->cur));
    vis_find_forward(v);
}

static void vis_prev(marble__iter *it)
{
    visible_iter *v = (visible_iter *)it;
    size_t kl;
    const void *k = marble__iter_key(v->in, &kl);
    if (!keybuf_set(&v->cur, k, kl)) {
        vis_oom(v);
        return;
    }
    do
        marble__iter_prev(v->in);
    while (marble__iter_valid(v->in) && same_key(v->in, &v->cur));
    vis_find_backward(v);
}

static const void *vis_key(marble__iter *it, size_t *n)
{
    return marble__iter_key(((visible_iter *)it)->in, n);
}
static uint64_t vis_seq(marble__iter *it)
{
    return marble__iter_seq(((visible_iter *)it)->in);
}
static int vis_op(marble__iter *it)
{
    (void)it;
    return 1;
}
static const void *vis_value(marble__iter *it, size_t *n)
{
    return marble__iter_value(((visible_iter *)it)->in, n);
}
static const struct ArrowArray *vis_batch(marble__iter *it, int64_t *row)
{
    return marble__iter_batch(((visible_iter *)it)->in, row);
}

static int vis_status(marble__iter *it, marble_error *err)
{
    visible_iter *v = (visible_iter *)it;
    if (v->rc != MARBLE_OK) return marble_error_set(err, v->rc, "visible iterator: out of memory");
    return marble__iter_status(v->in, err);
}

static void vis_destroy(marble__iter *it)
{
    visible_iter *v = (visible_iter *)it;
    marble__iter_destroy(v->in);
    keybuf_free(&v->cur);
    free(v);
}

static const marble__iter_ops vis_ops = {
    vis_valid, vis_seek_to_first, vis_seek_to_last, vis_seek, vis_next,
    vis_prev,  vis_key,           vis_seq,          vis_op,   vis_value,
    vis_batch, vis_status,        vis_destroy};

int marble__iter_visible(marble__iter *internal, uint64_t snapshot_seq, marble__iter **out,
                         marble_error *err)
{
    *out = NULL;
    if (!internal)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "visible iterator: NULL internal iterator");
    visible_iter *v = calloc(1, sizeof *v);
    if (!v) {
        marble__iter_destroy(internal);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "visible iterator: out of memory");
    }
    v->base.ops = &vis_ops;
    v->in = internal;
    v->snap = snapshot_seq;
    *out = &v->base;
    return MARBLE_OK;
}
