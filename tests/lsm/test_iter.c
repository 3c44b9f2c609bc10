/* Tests of the internal iterators: memtable prefixes, the k-way merge and the visible view,
 * differentially against sorted reference arrays, over memtables and SSTables. */
#include <stdlib.h>

#include "lsm/iter.h"
#include "marble_test.h"

#define OK(expr)                                                                                   \
    do {                                                                                           \
        marble_error e_;                                                                           \
        marble_error_clear(&e_);                                                                   \
        marble_error *err_ = &e_;                                                                  \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s -> %s: %s", #expr, marble_status_name(rc_), err_->message); \
    } while (0)

typedef struct entry {
    unsigned char key[8];
    size_t klen;
    uint64_t seq;
    int op;
    char val[24];
    size_t vlen;
} entry;

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}
static size_t rnd_n(size_t n)
{
    return (size_t)(rnd() % n);
}

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

static int entry_cmp(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    int c = key_cmp(a->key, a->klen, b->key, b->klen);
    if (c) return c;
    return a->seq > b->seq ? -1 : (a->seq < b->seq ? 1 : 0);
}

/* A random key over a three-letter alphabet, 0..maxlen bytes (empty keys and proper prefixes
 * included). */
static void random_key(unsigned char *key, size_t *klen, size_t maxlen)
{
    *klen = rnd_n(maxlen + 1);
    for (size_t i = 0; i < *klen; i++)
        key[i] = (unsigned char)("abc"[rnd_n(3)]);
}

/* n entries with distinct (key, seq): seqs are a permutation-ish of distinct numbers. */
static entry *random_entries(size_t n, size_t maxlen, int deletes)
{
    entry *e = calloc(n, sizeof *e);
    for (size_t i = 0; i < n; i++) {
        random_key(e[i].key, &e[i].klen, maxlen);
        e[i].seq = 1 + i * 3 + rnd_n(3); /* distinct, increasing with i */
        e[i].op = deletes && rnd_n(4) == 0 ? 0 : 1;
        if (e[i].op) e[i].vlen = (size_t)snprintf(e[i].val, sizeof e[i].val, "v%" PRIu64, e[i].seq);
    }
    /* Shuffle so that seq is not tied to insertion order. */
    for (size_t i = n; i > 1; i--) {
        size_t j = rnd_n(i);
        entry t = e[i - 1];
        e[i - 1] = e[j];
        e[j] = t;
    }
    return e;
}

static void mt_add(marble__memtable *mt, const void *prefix, size_t plen, const entry *e)
{
    unsigned char k[16];
    if (plen) memcpy(k, prefix, plen);
    if (e->klen) memcpy(k + plen, e->key, e->klen);
    OK(marble__memtable_add(mt, e->seq, e->op ? MARBLE__MEMTABLE_PUT : MARBLE__MEMTABLE_DELETE, k,
                            plen + e->klen, e->val, e->vlen, err_));
}

static void expect_at(marble__iter *it, const entry *e, int check_op, const char *what, int step)
{
    if (!marble__iter_valid(it))
        FAIL("%s step %d: iterator invalid, expected key %.*s seq %" PRIu64, what, step,
             (int)e->klen, (const char *)e->key, e->seq);
    size_t kl, vl;
    const void *k = marble__iter_key(it, &kl);
    uint64_t seq = marble__iter_seq(it);
    if (key_cmp(k, kl, e->key, e->klen) != 0 || seq != e->seq)
        FAIL("%s step %d: at key '%.*s' seq %" PRIu64 ", expected '%.*s' seq %" PRIu64, what, step,
             (int)kl, (const char *)k, seq, (int)e->klen, (const char *)e->key, e->seq);
    if (check_op) ASSERT_EQ_INT(marble__iter_op(it), e->op);
    const void *v = marble__iter_value(it, &vl);
    if (vl != e->vlen || (vl && memcmp(v, e->val, vl) != 0))
        FAIL("%s step %d: value mismatch at seq %" PRIu64, what, step, seq);
    int64_t row = 0;
    (void)marble__iter_batch(it, &row);
}

static int encoded_keys;
static void encode_entries(entry *e, size_t n);

/* Random walk: seeks, next and prev, compared with positions in ref[0, n). */
static void random_walk(marble__iter *it, const entry *ref, size_t n, int steps, int check_op,
                        const char *what)
{
    long pos = -1; /* -1: invalid */
    for (int s = 0; s < steps; s++) {
        int r = (int)rnd_n(10);
        if (pos < 0 && r >= 4) r = (int)rnd_n(4);
        switch (r) {
        case 0:
            marble__iter_seek_to_first(it);
            pos = n ? 0 : -1;
            break;
        case 1:
            marble__iter_seek_to_last(it);
            pos = (long)n - 1;
            break;
        case 2:
        case 3: {
            unsigned char key[8];
            size_t kl;
            random_key(key, &kl, 4);
            if (encoded_keys) {
                entry q = {.klen = kl < 4 ? kl : 4};
                memcpy(q.key, key, q.klen);
                encode_entries(&q, 1);
                memcpy(key, q.key, q.klen);
                kl = q.klen;
            }
            marble__iter_seek(it, key, kl);
            size_t i = 0;
            while (i < n && key_cmp(ref[i].key, ref[i].klen, key, kl) < 0)
                i++;
            pos = i < n ? (long)i : -1;
            break;
        }
        case 4:
        case 5:
        case 6:
            marble__iter_next(it);
            pos = pos + 1 < (long)n ? pos + 1 : -1;
            break;
        default:
            marble__iter_prev(it);
            pos = pos - 1;
            break;
        }
        if (pos < 0) {
            if (marble__iter_valid(it)) {
                size_t kl;
                const void *k = marble__iter_key(it, &kl);
                FAIL("%s step %d (op %d): valid at '%.*s' seq %" PRIu64 ", expected invalid", what,
                     s, r, (int)kl, (const char *)k, marble__iter_seq(it));
            }
        } else {
            expect_at(it, &ref[pos], check_op, what, s);
        }
    }
    OK(marble__iter_status(it, err_));
}

static void full_scans(marble__iter *it, const entry *ref, size_t n, int check_op, const char *what)
{
    size_t i = 0;
    for (marble__iter_seek_to_first(it); marble__iter_valid(it); marble__iter_next(it), i++) {
        ASSERT_LT_INT(i, n);
        expect_at(it, &ref[i], check_op, what, (int)i);
    }
    ASSERT_EQ_U64(i, n);
    for (marble__iter_seek_to_last(it); marble__iter_valid(it); marble__iter_prev(it)) {
        ASSERT_GT_INT(i, 0);
        i--;
        expect_at(it, &ref[i], check_op, what, (int)i);
    }
    ASSERT_EQ_U64(i, 0);
}

/* The visible entries of ref (sorted internal order) at snapshot `snap`. */
static size_t visible_ref(const entry *ref, size_t n, uint64_t snap, entry *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        const entry *vis = NULL;
        while (j < n && key_cmp(ref[j].key, ref[j].klen, ref[i].key, ref[i].klen) == 0) {
            if (!vis && ref[j].seq <= snap) vis = &ref[j];
            j++;
        }
        if (vis && vis->op) out[m++] = *vis;
        i = j;
    }
    return m;
}

/* ---- memtable adapter ------------------------------------------------------------------------ */

static const unsigned char P1[4] = {0, 0, 0, 1}, P2[4] = {0, 0, 0, 2}, PFF[4] = {0, 0, 0, 0xFF},
                           PMAX[4] = {0xFF, 0xFF, 0xFF, 0xFF};

TEST(iter_memtable_empty)
{
    marble__memtable *mt;
    marble__iter *it;
    OK(marble__memtable_create(&mt, err_));
    OK(marble__iter_memtable(mt, P1, 4, &it, err_));
    marble__iter_seek_to_first(it);
    ASSERT_FALSE(marble__iter_valid(it));
    marble__iter_seek_to_last(it);
    ASSERT_FALSE(marble__iter_valid(it));
    marble__iter_seek(it, "a", 1);
    ASSERT_FALSE(marble__iter_valid(it));
    OK(marble__iter_status(it, err_));
    marble__iter_destroy(it);
    marble__iter_destroy(NULL);
    marble__memtable_destroy(mt);
}

/* Entries of four tables (ids 1, 2, 0xFF and 0xFFFFFFFF: the last has no prefix successor) in
 * one memtable: each prefix iterator sees exactly its own, prefix stripped, both directions. */
TEST(iter_memtable_prefix_strip)
{
    rng_state = 0x1234567;
    const unsigned char *prefixes[4] = {P1, P2, PFF, PMAX};
    marble__memtable *mt;
    OK(marble__memtable_create(&mt, err_));
    size_t n = 300;
    entry *e[4];
    for (int p = 0; p < 4; p++) {
        e[p] = random_entries(n, 3, 1);
        for (size_t i = 0; i < n; i++) {
            e[p][i].seq += (uint64_t)p * 100000;
            e[p][i].vlen =
                (size_t)snprintf(e[p][i].val, sizeof e[p][i].val, "t%d-%" PRIu64, p, e[p][i].seq);
            mt_add(mt, prefixes[p], 4, &e[p][i]);
        }
        qsort(e[p], n, sizeof(entry), entry_cmp);
    }
    for (int p = 0; p < 4; p++) {
        marble__iter *it;
        OK(marble__iter_memtable(mt, prefixes[p], 4, &it, err_));
        full_scans(it, e[p], n, 1, "prefix");
        random_walk(it, e[p], n, 3000, 1, "prefix walk");
        marble__iter_destroy(it);
    }
    /* No prefix: everything, prefixes included in the keys. */
    marble__iter *all;
    OK(marble__iter_memtable(mt, NULL, 0, &all, err_));
    size_t count = 0;
    for (marble__iter_seek_to_first(all); marble__iter_valid(all); marble__iter_next(all))
        count++;
    ASSERT_EQ_U64(count, 4 * n);
    marble__iter_seek_to_last(all);
    size_t kl;
    const unsigned char *k = marble__iter_key(all, &kl);
    ASSERT_TRUE(kl >= 4 && memcmp(k, PMAX, 4) == 0);
    marble__iter_destroy(all);
    /* A table with no entries between two that have some. */
    unsigned char p3[4] = {0, 0, 0, 3};
    marble__iter *none;
    OK(marble__iter_memtable(mt, p3, 4, &none, err_));
    marble__iter_seek_to_first(none);
    ASSERT_FALSE(marble__iter_valid(none));
    marble__iter_seek_to_last(none);
    ASSERT_FALSE(marble__iter_valid(none));
    marble__iter_destroy(none);
    for (int p = 0; p < 4; p++)
        free(e[p]);
    marble__memtable_destroy(mt);
}

/* ---- merge ----------------------------------------------------------------------------------- */

/* k memtables each holding a random part of the entries (two tables interleaved: the merge
 * must see only the first's). */
static void merge_case(uint64_t seed, size_t k, size_t n, size_t maxlen)
{
    rng_state = seed;
    entry *e = random_entries(n, maxlen, 1);
    entry *other = random_entries(n / 2 + 1, maxlen, 1);
    marble__memtable **mts = calloc(k, sizeof *mts);
    for (size_t j = 0; j < k; j++)
        OK(marble__memtable_create(&mts[j], err_));
    for (size_t i = 0; i < n; i++)
        mt_add(mts[rnd_n(k)], P1, 4, &e[i]);
    for (size_t i = 0; i < n / 2 + 1; i++)
        mt_add(mts[rnd_n(k)], P2, 4, &other[i]);
    qsort(e, n, sizeof *e, entry_cmp);

    marble__iter **ch = calloc(k, sizeof *ch);
    for (size_t j = 0; j < k; j++)
        OK(marble__iter_memtable(mts[j], P1, 4, &ch[j], err_));
    marble__iter *m;
    OK(marble__iter_merge(ch, k, &m, err_));
    full_scans(m, e, n, 1, "merge");
    random_walk(m, e, n, 4000, 1, "merge walk");
    marble__iter_destroy(m);

    /* The visible view at random snapshots. */
    entry *vis = calloc(n ? n : 1, sizeof *vis);
    for (int round = 0; round < 6; round++) {
        uint64_t snap = round == 0 ? UINT64_MAX : (round == 1 ? 0 : rnd() % (3 * n + 5));
        size_t nv = visible_ref(e, n, snap, vis);
        for (size_t j = 0; j < k; j++)
            OK(marble__iter_memtable(mts[j], P1, 4, &ch[j], err_));
        marble__iter *mm, *v;
        OK(marble__iter_merge(ch, k, &mm, err_));
        OK(marble__iter_visible(mm, snap, &v, err_));
        full_scans(v, vis, nv, 1, "visible");
        random_walk(v, vis, nv, 3000, 1, "visible walk");
        marble__iter_destroy(v);
    }
    free(vis);
    free(ch);
    for (size_t j = 0; j < k; j++)
        marble__memtable_destroy(mts[j]);
    free(mts);
    free(e);
    free(other);
}

TEST(iter_merge_small_hand)
{
    /* a@5 in m0, a@3 in m1, b@4 in m1, b@2 in m0, c@1 in m2: direction switches in the middle
     * of a key's versions. */
    marble__memtable *mts[3];
    for (int j = 0; j < 3; j++)
        OK(marble__memtable_create(&mts[j], err_));
    entry es[5] = {
        {.key = "a", .klen = 1, .seq = 5, .op = 1, .val = "a5", .vlen = 2},
        {.key = "a", .klen = 1, .seq = 3, .op = 1, .val = "a3", .vlen = 2},
        {.key = "b", .klen = 1, .seq = 4, .op = 0},
        {.key = "b", .klen = 1, .seq = 2, .op = 1, .val = "b2", .vlen = 2},
        {.key = "c", .klen = 1, .seq = 1, .op = 1, .val = "c1", .vlen = 2},
    };
    int where[5] = {0, 1, 1, 0, 2};
    for (int i = 0; i < 5; i++)
        mt_add(mts[where[i]], P1, 4, &es[i]);
    marble__iter *ch[3], *m;
    for (int j = 0; j < 3; j++)
        OK(marble__iter_memtable(mts[j], P1, 4, &ch[j], err_));
    OK(marble__iter_merge(ch, 3, &m, err_));
    marble__iter_seek_to_first(m);
    expect_at(m, &es[0], 1, "hand", 0);
    marble__iter_next(m);
    expect_at(m, &es[1], 1, "hand", 1);
    marble__iter_next(m);
    expect_at(m, &es[2], 1, "hand", 2);
    marble__iter_prev(m);
    expect_at(m, &es[1], 1, "hand", 3);
    marble__iter_prev(m);
    expect_at(m, &es[0], 1, "hand", 4);
    marble__iter_next(m);
    expect_at(m, &es[1], 1, "hand", 5);
    marble__iter_next(m);
    marble__iter_next(m);
    expect_at(m, &es[3], 1, "hand", 6);
    marble__iter_prev(m);
    expect_at(m, &es[2], 1, "hand", 7);
    marble__iter_seek(m, "b", 1);
    expect_at(m, &es[2], 1, "hand", 8);
    marble__iter_prev(m);
    expect_at(m, &es[1], 1, "hand", 9);
    marble__iter_seek_to_last(m);
    expect_at(m, &es[4], 1, "hand", 10);
    marble__iter_prev(m);
    expect_at(m, &es[3], 1, "hand", 11);
    marble__iter_next(m);
    expect_at(m, &es[4], 1, "hand", 12);
    marble__iter_next(m);
    ASSERT_FALSE(marble__iter_valid(m));
    marble__iter_destroy(m);

    /* Visible: at 10 a5, c1 (b deleted at 4); at 3 a3, b2, c1; at 0 nothing. */
    uint64_t snaps[3] = {10, 3, 0};
    const char *expect[3] = {"a5c1", "a3b2c1", ""};
    for (int s = 0; s < 3; s++) {
        marble__iter *v;
        for (int j = 0; j < 3; j++)
            OK(marble__iter_memtable(mts[j], P1, 4, &ch[j], err_));
        OK(marble__iter_merge(ch, 3, &m, err_));
        OK(marble__iter_visible(m, snaps[s], &v, err_));
        char got[32] = "", back[32] = "";
        for (marble__iter_seek_to_first(v); marble__iter_valid(v); marble__iter_next(v)) {
            size_t vl;
            const char *val = marble__iter_value(v, &vl);
            ASSERT_EQ_INT(marble__iter_op(v), 1);
            strncat(got, val, vl);
        }
        ASSERT_EQ_STR(got, expect[s]);
        for (marble__iter_seek_to_last(v); marble__iter_valid(v); marble__iter_prev(v)) {
            size_t vl;
            const char *val = marble__iter_value(v, &vl);
            char tmp[32];
            ASSERT_LT_INT(vl + strlen(back), sizeof tmp);
            memcpy(tmp, val, vl);
            strcpy(tmp + vl, back);
            strcpy(back, tmp);
        }
        ASSERT_EQ_STR(back, expect[s]);
        marble__iter_destroy(v);
    }
    for (int j = 0; j < 3; j++)
        marble__memtable_destroy(mts[j]);
}

TEST(iter_merge_random_one_child)
{
    merge_case(11, 1, 400, 3);
}
TEST(iter_merge_random_three)
{
    merge_case(12, 3, 600, 3);
}
TEST(iter_merge_random_many)
{
    for (uint64_t s = 0; s < 8; s++)
        merge_case(100 + s, 2 + (size_t)s, 200 + 50 * (size_t)s, 1 + (size_t)s % 4);
}
TEST(iter_merge_random_hot_keys)
{
    /* Few keys, many versions: long runs of one key's versions across children. */
    for (uint64_t s = 0; s < 6; s++)
        merge_case(300 + s, 4, 500, 1);
}
TEST(iter_merge_empty_children)
{
    marble__iter *m;
    OK(marble__iter_merge(NULL, 0, &m, err_));
    marble__iter_seek_to_first(m);
    ASSERT_FALSE(marble__iter_valid(m));
    marble__iter_seek_to_last(m);
    ASSERT_FALSE(marble__iter_valid(m));
    OK(marble__iter_status(m, err_));
    marble__iter_destroy(m);
    merge_case(7, 5, 0, 2);
    merge_case(8, 6, 3, 2);
}

/* ---- SSTables -------------------------------------------------------------------------------- */

#include "lsm/rowcodec.h"
#include "marble/vfs.h"

/* Keys of the table "k:binary (key), v:int64": 0x01, the bytes (no zero bytes here), 0x00 0x00. */
static void encode_entries(entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char k[8];
        k[0] = 1;
        memcpy(k + 1, e[i].key, e[i].klen);
        k[1 + e[i].klen] = 0;
        k[2 + e[i].klen] = 0;
        e[i].klen += 3;
        memcpy(e[i].key, k, e[i].klen);
        if (e[i].op) {
            e[i].val[0] = 1;
            for (int b = 0; b < 8; b++)
                e[i].val[1 + b] = (char)(e[i].seq >> (8 * b));
            e[i].vlen = 9;
        } else {
            e[i].vlen = 0;
        }
    }
}

typedef struct sst_env {
    marble_fs *fs;
    marble__row_codec codec;
    int nfiles;
} sst_env;

static void sst_env_init(sst_env *s)
{
    struct ArrowSchema schema;
    int key = 0;
    OK(marble_fs_create(&s->fs, err_));
    OK(marble_arrow_schema_parse("k:z!,v:l", &schema, err_));
    OK(marble__row_codec_init(&s->codec, &schema, &key, 1, err_));
    marble_arrow_schema_release(&schema);
    OK(marble_fs_mkdir(s->fs, "mem://it", 1, err_));
    s->nfiles = 0;
}

static void sst_env_free(sst_env *s)
{
    marble__row_codec_free(&s->codec);
    OK(marble_fs_destroy(s->fs, err_));
}

/* An SSTable of e[0, n) (sorted), batch_rows small so that iterators cross batches. */
static marble__sst *write_sst(sst_env *s, const entry *e, size_t n, int batch_rows)
{
    char uri[64];
    snprintf(uri, sizeof uri, "mem://it/%06d.arrow", ++s->nfiles);
    marble__sst_options o = {.batch_rows = batch_rows, .bloom_bits_per_key = 10};
    marble__sst_writer *w;
    OK(marble__sst_writer_create(s->fs, uri, &s->codec, &o, &w, err_));
    for (size_t i = 0; i < n; i++)
        OK(marble__sst_writer_add(w, e[i].key, e[i].klen, e[i].seq, e[i].op, e[i].val, e[i].vlen,
                                  err_));
    marble__sst_info info;
    OK(marble__sst_writer_finish(w, &info, err_));
    marble__sst_writer_destroy(w);
    marble__sst_info_free(&info);
    marble__sst *t;
    OK(marble__sst_open(s->fs, NULL, uri, &s->codec, 1, &t, err_));
    return t;
}

/* One memtable, `nl0` overlapping SSTables and a run of `nrun` SSTables with disjoint ranges,
 * merged; checked against the sorted entries, then the visible view at random snapshots. */
static void sst_merge_case(uint64_t seed, size_t n, int nl0, int nrun, int batch_rows)
{
    rng_state = seed;
    sst_env env;
    sst_env_init(&env);
    entry *e = random_entries(n, 3, 1);
    encode_entries(e, n);
    /* Children: 0 memtable, 1..nl0 SSTables, the rest one run (split by key below). */
    int nch = 1 + nl0 + 1;
    entry **parts = calloc((size_t)nch, sizeof *parts);
    size_t *np = calloc((size_t)nch, sizeof *np);
    for (int c = 0; c < nch; c++)
        parts[c] = calloc(n ? n : 1, sizeof(entry));
    for (size_t i = 0; i < n; i++) {
        int c = (int)rnd_n((size_t)nch);
        parts[c][np[c]++] = e[i];
    }
    qsort(e, n, sizeof *e, entry_cmp);
    marble__memtable *mt;
    OK(marble__memtable_create(&mt, err_));
    for (size_t i = 0; i < np[0]; i++)
        mt_add(mt, P1, 4, &parts[0][i]);
    marble__sst **l0 = calloc((size_t)nl0 + 1, sizeof *l0);
    for (int c = 1; c <= nl0; c++) {
        qsort(parts[c], np[c], sizeof(entry), entry_cmp);
        l0[c - 1] = np[c] ? write_sst(&env, parts[c], np[c], batch_rows) : NULL;
    }
    entry *rp = parts[nch - 1];
    size_t rn = np[nch - 1];
    qsort(rp, rn, sizeof(entry), entry_cmp);
    marble__sst **run = calloc((size_t)nrun + 1, sizeof *run);
    size_t nr = 0, at = 0;
    for (int f = 0; f < nrun && at < rn; f++) {
        size_t end = f == nrun - 1 ? rn : at + rn / (size_t)nrun + 1;
        if (end > rn) end = rn;
        while (end < rn &&
               key_cmp(rp[end].key, rp[end].klen, rp[end - 1].key, rp[end - 1].klen) == 0)
            end++;
        run[nr++] = write_sst(&env, rp + at, end - at, batch_rows);
        at = end;
    }

    entry *vis = calloc(n ? n : 1, sizeof *vis);
    for (int round = 0; round < 5; round++) {
        uint64_t snap = round == 0 ? UINT64_MAX : rnd() % (3 * n + 5);
        marble__iter **ch = calloc((size_t)nl0 + 2, sizeof *ch);
        size_t k = 0;
        OK(marble__iter_memtable(mt, P1, 4, &ch[k++], err_));
        for (int c = 0; c < nl0; c++)
            if (l0[c]) OK(marble__iter_sst(l0[c], &ch[k++], err_));
        OK(marble__iter_run(run, nr, &ch[k++], err_));
        marble__iter *m;
        OK(marble__iter_merge(ch, k, &m, err_));
        free(ch);
        if (round == 0) {
            full_scans(m, e, n, 1, "sst merge");
            random_walk(m, e, n, 3000, 1, "sst merge walk");
            marble__iter_destroy(m);
            continue;
        }
        size_t nv = visible_ref(e, n, snap, vis);
        marble__iter *v;
        OK(marble__iter_visible(m, snap, &v, err_));
        full_scans(v, vis, nv, 1, "sst visible");
        random_walk(v, vis, nv, 2000, 1, "sst visible walk");
        marble__iter_destroy(v);
    }
    /* The run alone. */
    marble__iter *r;
    OK(marble__iter_run(run, nr, &r, err_));
    full_scans(r, rp, rn, 1, "run");
    random_walk(r, rp, rn, 3000, 1, "run walk");
    marble__iter_destroy(r);

    for (int c = 0; c < nl0; c++)
        marble__sst_unref(l0[c]);
    for (size_t f = 0; f < nr; f++)
        marble__sst_unref(run[f]);
    free(l0);
    free(run);
    for (int c = 0; c < nch; c++)
        free(parts[c]);
    free(parts);
    free(np);
    free(vis);
    free(e);
    marble__memtable_destroy(mt);
    sst_env_free(&env);
}

TEST(iter_sst_single)
{
    rng_state = 5;
    encoded_keys = 1;
    sst_env env;
    sst_env_init(&env);
    size_t n = 500;
    entry *e = random_entries(n, 3, 1);
    encode_entries(e, n);
    qsort(e, n, sizeof *e, entry_cmp);
    marble__sst *s = write_sst(&env, e, n, 16);
    marble__iter *it;
    OK(marble__iter_sst(s, &it, err_));
    marble__sst_unref(s); /* the iterator holds its own reference */
    full_scans(it, e, n, 1, "sst");
    random_walk(it, e, n, 4000, 1, "sst walk");
    marble__iter_seek_to_first(it);
    int64_t row = -1;
    const struct ArrowArray *b = marble__iter_batch(it, &row);
    ASSERT_NOT_NULL(b);
    ASSERT_EQ_INT(row, 0);
    marble__iter_destroy(it);
    free(e);
    sst_env_free(&env);
}

TEST(iter_sst_merge_random)
{
    encoded_keys = 1;
    sst_merge_case(21, 600, 2, 3, 8);
    sst_merge_case(22, 300, 1, 1, 4096);
    sst_merge_case(23, 1000, 4, 6, 5);
}

TEST(iter_sst_merge_hot_keys)
{
    encoded_keys = 1;
    for (uint64_t s = 0; s < 4; s++)
        sst_merge_case(40 + s, 400, 3, 4, 3);
}

TEST(iter_run_empty_and_gaps)
{
    encoded_keys = 1;
    sst_env env;
    sst_env_init(&env);
    marble__iter *r;
    OK(marble__iter_run(NULL, 0, &r, err_));
    marble__iter_seek_to_first(r);
    ASSERT_FALSE(marble__iter_valid(r));
    marble__iter_seek_to_last(r);
    ASSERT_FALSE(marble__iter_valid(r));
    marble__iter_seek(r, "x", 1);
    ASSERT_FALSE(marble__iter_valid(r));
    marble__iter_destroy(r);
    /* Files {b}, {d, e}, {g}: seeks into the gaps land on the next file's first key. */
    entry e[4] = {{.key = "b", .klen = 1, .seq = 1, .op = 1},
                  {.key = "d", .klen = 1, .seq = 2, .op = 1},
                  {.key = "e", .klen = 1, .seq = 3, .op = 0},
                  {.key = "g", .klen = 1, .seq = 4, .op = 1}};
    encode_entries(e, 4);
    marble__sst *f[3] = {write_sst(&env, e, 1, 1), write_sst(&env, e + 1, 2, 1),
                         write_sst(&env, e + 3, 1, 1)};
    OK(marble__iter_run(f, 3, &r, err_));
    for (int i = 0; i < 3; i++)
        marble__sst_unref(f[i]);
    const char *seeks = "abcdefgh";
    int expect[8] = {0, 0, 1, 1, 2, 3, 3, -1};
    for (int i = 0; i < 8; i++) {
        entry q = {.klen = 1};
        q.key[0] = (unsigned char)seeks[i];
        encode_entries(&q, 1);
        marble__iter_seek(r, q.key, q.klen);
        if (expect[i] < 0)
            ASSERT_FALSE(marble__iter_valid(r));
        else
            expect_at(r, &e[expect[i]], 1, "gap seek", i);
    }
    marble__iter_seek(r, e[1].key, e[1].klen);
    marble__iter_prev(r);
    expect_at(r, &e[0], 1, "gap prev", 0);
    marble__iter_prev(r);
    ASSERT_FALSE(marble__iter_valid(r));
    marble__iter_seek(r, e[2].key, e[2].klen);
    marble__iter_next(r);
    expect_at(r, &e[3], 1, "gap next", 0);
    marble__iter_destroy(r);
    sst_env_free(&env);
}
