/* Tests for the memtable: order, snapshots, iteration, concurrency and memory accounting. */
#include "lsm/memtable.h"
#include "marble_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct entry {
    unsigned char key[8];
    size_t klen;
    uint64_t seq;
    marble__memtable_op op;
    unsigned char value[16];
    size_t vlen;
} entry;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int cmp_user(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

static int cmp_entry(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    int c = cmp_user(a->key, a->klen, b->key, b->klen);
    if (c) return c;
    return a->seq > b->seq ? -1 : a->seq < b->seq;
}

/* Keys over a 3-letter alphabet of length 0..3, so that prefixes and the empty key are common. */
static void random_key(uint64_t *s, unsigned char *key, size_t *klen)
{
    uint64_t r = rng_next(s);
    *klen = r % 4;
    for (size_t i = 0; i < *klen; i++)
        key[i] = (unsigned char)('a' + (r >> (8 + 4 * i)) % 3);
}

/* Fills mt and model with n entries of distinct (key, seq); returns the number of entries. */
static size_t fill_model(marble__memtable *mt, entry *model, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        entry *e = &model[count];
        random_key(&s, e->key, &e->klen);
        e->seq = 1 + rng_next(&s) % 64;
        e->op = rng_next(&s) % 4 == 0 ? MARBLE__MEMTABLE_DELETE : MARBLE__MEMTABLE_PUT;
        e->vlen = e->op == MARBLE__MEMTABLE_PUT ? (size_t)(rng_next(&s) % 17) : 0;
        for (size_t j = 0; j < e->vlen; j++)
            e->value[j] = (unsigned char)(i + j);
        int rc = marble__memtable_add(mt, e->seq, e->op, e->key, e->klen, e->value, e->vlen, NULL);
        if (rc == MARBLE_OK) {
            count++;
        } else {
            ASSERT_EQ_INT(rc, MARBLE_ERR_EXISTS);
        }
    }
    qsort(model, count, sizeof(entry), cmp_entry);
    return count;
}

static void assert_at(const marble__memtable_iter *it, const entry *e)
{
    ASSERT_TRUE(marble__memtable_iter_valid(it));
    size_t klen, vlen;
    const void *key = marble__memtable_iter_key(it, &klen);
    ASSERT_EQ_INT(cmp_user(key, klen, e->key, e->klen), 0);
    ASSERT_EQ_U64(marble__memtable_iter_seq(it), e->seq);
    ASSERT_EQ_INT(marble__memtable_iter_op(it), e->op);
    const void *value = marble__memtable_iter_value(it, &vlen);
    ASSERT_EQ_U64(vlen, e->vlen);
    ASSERT_TRUE(vlen == 0 || memcmp(value, e->value, vlen) == 0);
}

TEST(memtable_ordering)
{
    marble__memtable *mt;
    ASSERT_OK(marble__memtable_create(&mt, NULL));
    entry *model = calloc(2000, sizeof(entry));
    size_t n = fill_model(mt, model, 2000, 42);
    ASSERT_EQ_U64(marble__memtable_count(mt), n);
    ASSERT_GT_INT(n, 500);
    ASSERT_EQ_U64(model[0].klen, 0);

    marble__memtable_iter it;
    marble__memtable_iter_init(&it, mt);
    ASSERT_FALSE(marble__memtable_iter_valid(&it));
    marble__memtable_iter_seek_to_first(&it);
    for (size_t i = 0; i < n; i++) {
        assert_at(&it, &model[i]);
        marble__memtable_iter_next(&it);
    }
    ASSERT_FALSE(marble__memtable_iter_valid(&it));
    free(model);
    marble__memtable_destroy(mt);
}

TEST(memtable_duplicates)
{
    marble__memtable *mt;
    marble_error err;
    ASSERT_OK(marble__memtable_create(&mt, NULL));
    ASSERT_OK(marble__memtable_add(mt, 7, MARBLE__MEMTABLE_PUT, "k", 1, "v", 1, &err));
    ASSERT_EQ_INT(marble__memtable_add(mt, 7, MARBLE__MEMTABLE_DELETE, "k", 1, NULL, 0, &err),
                  MARBLE_ERR_EXISTS);
    ASSERT_EQ_INT(err.code, MARBLE_ERR_EXISTS);
    ASSERT_CONTAINS(err.message, "memtable");
    ASSERT_OK(marble__memtable_add(mt, 8, MARBLE__MEMTABLE_PUT, "k", 1, "w", 1, NULL));
    ASSERT_OK(marble__memtable_add(mt, 7, MARBLE__MEMTABLE_PUT, "kk", 2, "x", 1, NULL));
    ASSERT_OK(marble__memtable_add(mt, 7, MARBLE__MEMTABLE_PUT, NULL, 0, NULL, 0, NULL));
    ASSERT_EQ_INT(marble__memtable_add(mt, 9, (marble__memtable_op)5, "k", 1, NULL, 0, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__memtable_add(mt, 9, MARBLE__MEMTABLE_PUT, NULL, 1, NULL, 0, NULL),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__memtable_add(mt, 9, MARBLE__MEMTABLE_PUT, "k", 1, NULL, 3, NULL),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_U64(marble__memtable_count(mt), 4);
    marble__memtable_destroy(mt);
    marble__memtable_destroy(NULL);
}

TEST(memtable_get_snapshots)
{
    marble__memtable *mt;
    ASSERT_OK(marble__memtable_create(&mt, NULL));
    ASSERT_OK(marble__memtable_add(mt, 10, MARBLE__MEMTABLE_PUT, "a", 1, "a10", 3, NULL));
    ASSERT_OK(marble__memtable_add(mt, 20, MARBLE__MEMTABLE_PUT, "a", 1, "a20", 3, NULL));
    ASSERT_OK(marble__memtable_add(mt, 30, MARBLE__MEMTABLE_DELETE, "a", 1, NULL, 0, NULL));
    ASSERT_OK(marble__memtable_add(mt, 40, MARBLE__MEMTABLE_PUT, "a", 1, "a40", 3, NULL));
    ASSERT_OK(marble__memtable_add(mt, 15, MARBLE__MEMTABLE_PUT, "ab", 2, "ab15", 4, NULL));
    ASSERT_OK(marble__memtable_add(mt, 5, MARBLE__MEMTABLE_PUT, NULL, 0, "e5", 2, NULL));

    marble__memtable_op op;
    const void *value;
    size_t vlen;
    uint64_t seq;
    ASSERT_EQ_INT(marble__memtable_get(mt, "a", 1, 9, &op, &value, &vlen, &seq),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_OK(marble__memtable_get(mt, "a", 1, 10, &op, &value, &vlen, &seq));
    ASSERT_EQ_INT(op, MARBLE__MEMTABLE_PUT);
    ASSERT_EQ_U64(seq, 10);
    ASSERT_TRUE(vlen == 3 && memcmp(value, "a10", 3) == 0);
    ASSERT_OK(marble__memtable_get(mt, "a", 1, 29, &op, &value, &vlen, &seq));
    ASSERT_EQ_U64(seq, 20);
    ASSERT_TRUE(vlen == 3 && memcmp(value, "a20", 3) == 0);
    ASSERT_OK(marble__memtable_get(mt, "a", 1, 35, &op, &value, &vlen, &seq));
    ASSERT_EQ_INT(op, MARBLE__MEMTABLE_DELETE);
    ASSERT_EQ_U64(seq, 30);
    ASSERT_EQ_U64(vlen, 0);
    ASSERT_OK(marble__memtable_get(mt, "a", 1, UINT64_MAX, &op, &value, &vlen, NULL));
    ASSERT_EQ_INT(op, MARBLE__MEMTABLE_PUT);
    ASSERT_TRUE(vlen == 3 && memcmp(value, "a40", 3) == 0);

    ASSERT_EQ_INT(marble__memtable_get(mt, "ab", 2, 14, &op, &value, &vlen, NULL),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_OK(marble__memtable_get(mt, "ab", 2, 15, NULL, &value, &vlen, NULL));
    ASSERT_TRUE(vlen == 4 && memcmp(value, "ab15", 4) == 0);
    ASSERT_OK(marble__memtable_get(mt, NULL, 0, 100, NULL, &value, &vlen, NULL));
    ASSERT_TRUE(vlen == 2 && memcmp(value, "e5", 2) == 0);
    ASSERT_EQ_INT(marble__memtable_get(mt, "b", 1, 100, NULL, NULL, NULL, NULL),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_EQ_INT(marble__memtable_get(mt, "aa", 2, 100, NULL, NULL, NULL, NULL),
                  MARBLE_ERR_NOT_FOUND);
    marble__memtable_destroy(mt);
}

/* Index of the first model entry >= (key, seq). */
static size_t model_lower_bound(const entry *model, size_t n, const entry *probe)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_entry(&model[mid], probe) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void assert_pos(const marble__memtable_iter *it, const entry *model, size_t n, size_t pos)
{
    if (pos >= n) {
        ASSERT_FALSE(marble__memtable_iter_valid(it));
    } else {
        assert_at(it, &model[pos]);
    }
}

TEST(memtable_iterator_model)
{
    marble__memtable *mt;
    ASSERT_OK(marble__memtable_create(&mt, NULL));
    entry *model = calloc(1500, sizeof(entry));
    size_t n = fill_model(mt, model, 1500, 7);

    marble__memtable_iter it;
    marble__memtable_iter_init(&it, mt);
    marble__memtable_iter_seek_to_last(&it);
    for (size_t i = n; i-- > 0;) {
        assert_at(&it, &model[i]);
        marble__memtable_iter_prev(&it);
    }
    ASSERT_FALSE(marble__memtable_iter_valid(&it));

    uint64_t s = 99;
    size_t pos = n;
    for (int step = 0; step < 20000; step++) {
        uint64_t r = rng_next(&s) % 8;
        entry probe;
        if (r == 0) {
            random_key(&s, probe.key, &probe.klen);
            probe.seq = UINT64_MAX;
            marble__memtable_iter_seek(&it, probe.key, probe.klen);
            pos = model_lower_bound(model, n, &probe);
        } else if (r == 1) {
            random_key(&s, probe.key, &probe.klen);
            probe.seq = rng_next(&s) % 70;
            marble__memtable_iter_seek_at(&it, probe.key, probe.klen, probe.seq);
            pos = model_lower_bound(model, n, &probe);
        } else if (r == 2 && step % 16 == 0) {
            marble__memtable_iter_seek_to_first(&it);
            pos = 0;
        } else if (r == 3 && step % 16 == 0) {
            marble__memtable_iter_seek_to_last(&it);
            pos = n - 1;
        } else if (pos < n && (r & 1)) {
            marble__memtable_iter_next(&it);
            pos++;
        } else if (pos < n) {
            marble__memtable_iter_prev(&it);
            pos = pos == 0 ? n : pos - 1;
        }
        assert_pos(&it, model, n, pos);
    }
    free(model);
    marble__memtable_destroy(mt);
}

TEST(memtable_empty)
{
    marble__memtable *mt;
    ASSERT_OK(marble__memtable_create(&mt, NULL));
    marble__memtable_iter it;
    marble__memtable_iter_init(&it, mt);
    marble__memtable_iter_seek_to_first(&it);
    ASSERT_FALSE(marble__memtable_iter_valid(&it));
    marble__memtable_iter_seek_to_last(&it);
    ASSERT_FALSE(marble__memtable_iter_valid(&it));
    marble__memtable_iter_seek(&it, "x", 1);
    ASSERT_FALSE(marble__memtable_iter_valid(&it));
    ASSERT_EQ_INT(marble__memtable_get(mt, NULL, 0, UINT64_MAX, NULL, NULL, NULL, NULL),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_EQ_U64(marble__memtable_count(mt), 0);
    marble__memtable_destroy(mt);
}

#define WRITERS 4
#define READERS 2
#define PER_WRITER 50000

typedef struct shared {
    marble__memtable *mt;
    int id;
    atomic_int writers_done;
    atomic_int failures;
} shared;

typedef struct worker {
    shared *sh;
    int id;
} worker;

/* Entry `index` (of writer index % WRITERS): a distinct scrambled key, seq index % 3 + 1. */
static void concurrent_key(uint32_t index, char *key)
{
    uint64_t k = (uint64_t)index * 2654435761u % (WRITERS * PER_WRITER);
    snprintf(key, 16, "k%08u", (unsigned)k);
}

static void *writer_main(void *arg)
{
    worker *w = arg;
    for (uint32_t i = 0; i < PER_WRITER; i++) {
        uint32_t index = i * WRITERS + (uint32_t)w->id;
        char key[16];
        concurrent_key(index, key);
        int rc = marble__memtable_add(w->sh->mt, index % 3 + 1, MARBLE__MEMTABLE_PUT, key, 9,
                                      &index, sizeof(index), NULL);
        if (rc != MARBLE_OK) atomic_fetch_add(&w->sh->failures, 1);
    }
    atomic_fetch_add(&w->sh->writers_done, 1);
    return NULL;
}

static int check_order(const marble__memtable *mt, size_t *count)
{
    marble__memtable_iter it;
    marble__memtable_iter_init(&it, mt);
    marble__memtable_iter_seek_to_first(&it);
    const void *pkey = NULL;
    size_t pklen = 0, n = 0;
    uint64_t pseq = 0;
    for (; marble__memtable_iter_valid(&it); marble__memtable_iter_next(&it), n++) {
        size_t klen, vlen;
        const void *key = marble__memtable_iter_key(&it, &klen);
        uint64_t seq = marble__memtable_iter_seq(&it);
        marble__memtable_iter_value(&it, &vlen);
        if (klen != 9 || vlen != sizeof(uint32_t)) return -1;
        if (pkey) {
            int c = cmp_user(pkey, pklen, key, klen);
            if (c > 0 || (c == 0 && pseq <= seq)) return -1;
        }
        pkey = key;
        pklen = klen;
        pseq = seq;
    }
    *count = n;
    return 0;
}

static void *reader_main(void *arg)
{
    worker *w = arg;
    uint64_t s = (uint64_t)w->id + 1;
    while (atomic_load(&w->sh->writers_done) < WRITERS) {
        size_t n;
        if (check_order(w->sh->mt, &n) != 0) atomic_fetch_add(&w->sh->failures, 1);
        for (int i = 0; i < 2000; i++) {
            uint32_t index = (uint32_t)(rng_next(&s) % (WRITERS * PER_WRITER));
            char key[16];
            concurrent_key(index, key);
            const void *value;
            size_t vlen;
            uint64_t seq;
            if (marble__memtable_get(w->sh->mt, key, 9, UINT64_MAX, NULL, &value, &vlen, &seq) ==
                MARBLE_OK) {
                uint32_t v;
                memcpy(&v, value, sizeof(v));
                if (vlen != sizeof(v) || v != index || seq != index % 3 + 1)
                    atomic_fetch_add(&w->sh->failures, 1);
            }
        }
    }
    return NULL;
}

TEST(memtable_concurrent)
{
    shared sh = {0};
    ASSERT_OK(marble__memtable_create(&sh.mt, NULL));
    pthread_t threads[WRITERS + READERS];
    worker workers[WRITERS + READERS];
    for (int i = 0; i < WRITERS + READERS; i++) {
        workers[i] = (worker){&sh, i < WRITERS ? i : i - WRITERS};
        ASSERT_OK(pthread_create(&threads[i], NULL, i < WRITERS ? writer_main : reader_main,
                                 &workers[i]));
    }
    for (int i = 0; i < WRITERS + READERS; i++)
        ASSERT_OK(pthread_join(threads[i], NULL));
    ASSERT_EQ_INT(atomic_load(&sh.failures), 0);
    ASSERT_EQ_U64(marble__memtable_count(sh.mt), WRITERS * PER_WRITER);

    size_t n = 0;
    ASSERT_OK(check_order(sh.mt, &n));
    ASSERT_EQ_U64(n, WRITERS * PER_WRITER);
    for (uint32_t index = 0; index < WRITERS * PER_WRITER; index++) {
        char key[16];
        concurrent_key(index, key);
        const void *value;
        size_t vlen;
        uint32_t v;
        ASSERT_OK(marble__memtable_get(sh.mt, key, 9, UINT64_MAX, NULL, &value, &vlen, NULL));
        memcpy(&v, value, sizeof(v));
        ASSERT_EQ_U64(v, index);
    }
    marble__memtable_destroy(sh.mt);
}

static void *duplicate_main(void *arg)
{
    worker *w = arg;
    for (uint32_t i = 0; i < 20000; i++) {
        char key[16];
        snprintf(key, sizeof(key), "d%06u", i / 4);
        int rc = marble__memtable_add(w->sh->mt, i % 4, MARBLE__MEMTABLE_PUT, key, 7, &w->id,
                                      sizeof(w->id), NULL);
        if (rc == MARBLE_OK)
            atomic_fetch_add(&w->sh->writers_done, 1);
        else if (rc != MARBLE_ERR_EXISTS)
            atomic_fetch_add(&w->sh->failures, 1);
    }
    return NULL;
}

TEST(memtable_concurrent_duplicates)
{
    shared sh = {0};
    ASSERT_OK(marble__memtable_create(&sh.mt, NULL));
    pthread_t threads[WRITERS];
    worker workers[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        workers[i] = (worker){&sh, i};
        ASSERT_OK(pthread_create(&threads[i], NULL, duplicate_main, &workers[i]));
    }
    for (int i = 0; i < WRITERS; i++)
        ASSERT_OK(pthread_join(threads[i], NULL));
    ASSERT_EQ_INT(atomic_load(&sh.failures), 0);
    ASSERT_EQ_INT(atomic_load(&sh.writers_done), 20000);
    ASSERT_EQ_U64(marble__memtable_count(sh.mt), 20000);

    marble__memtable_iter it;
    marble__memtable_iter_init(&it, sh.mt);
    marble__memtable_iter_seek_to_first(&it);
    for (uint32_t i = 0; i < 20000; i++) {
        char key[16];
        size_t klen;
        snprintf(key, sizeof(key), "d%06u", i / 4);
        ASSERT_TRUE(marble__memtable_iter_valid(&it));
        const void *k = marble__memtable_iter_key(&it, &klen);
        ASSERT_TRUE(klen == 7 && memcmp(k, key, 7) == 0);
        ASSERT_EQ_U64(marble__memtable_iter_seq(&it), 3 - i % 4);
        marble__memtable_iter_next(&it);
    }
    ASSERT_FALSE(marble__memtable_iter_valid(&it));
    marble__memtable_destroy(sh.mt);
}

TEST(memtable_memory_accounting)
{
    marble__memtable *mt;
    ASSERT_OK(marble__memtable_create(&mt, NULL));
    size_t bytes0 = marble__memtable_bytes(mt);
    size_t used = marble__memtable_used_bytes(mt);
    ASSERT_LE_INT(used, bytes0);
    char value[100] = {0};
    for (uint32_t i = 0; i < 30000; i++) {
        char key[16];
        snprintf(key, sizeof(key), "m%08u", i);
        ASSERT_OK(
            marble__memtable_add(mt, 1, MARBLE__MEMTABLE_PUT, key, 9, value, sizeof(value), NULL));
        size_t now = marble__memtable_used_bytes(mt);
        ASSERT_GE_INT(now, used + 9 + sizeof(value));
        used = now;
        ASSERT_LE_INT(used, marble__memtable_bytes(mt));
    }
    ASSERT_GE_INT(marble__memtable_bytes(mt), bytes0 + 2 * 1024 * 1024);
    ASSERT_GE_INT(used, 30000 * (9 + sizeof(value)));
    marble__memtable_destroy(mt);
}

TEST(memtable_large_values)
{
    marble__memtable *mt;
    ASSERT_OK(marble__memtable_create(&mt, NULL));
    size_t big = 4u << 20;
    unsigned char *buf = malloc(big);
    ASSERT_NOT_NULL(buf);
    size_t bytes0 = marble__memtable_bytes(mt);
    for (int i = 0; i < 3; i++) {
        memset(buf, 'a' + i, big);
        char key[8];
        snprintf(key, sizeof(key), "big%d", i);
        ASSERT_OK(marble__memtable_add(mt, 1, MARBLE__MEMTABLE_PUT, key, 4, buf, big, NULL));
        ASSERT_OK(marble__memtable_add(mt, 2, MARBLE__MEMTABLE_PUT, key, 4, "s", 1, NULL));
    }
    ASSERT_GE_INT(marble__memtable_bytes(mt), bytes0 + 3 * big);
    for (int i = 0; i < 3; i++) {
        char key[8];
        snprintf(key, sizeof(key), "big%d", i);
        const void *value;
        size_t vlen;
        ASSERT_OK(marble__memtable_get(mt, key, 4, 1, NULL, &value, &vlen, NULL));
        ASSERT_EQ_U64(vlen, big);
        const unsigned char *v = value;
        ASSERT_TRUE(v[0] == 'a' + i && v[big - 1] == 'a' + i && v[big / 2] == 'a' + i);
        ASSERT_OK(marble__memtable_get(mt, key, 4, 2, NULL, &value, &vlen, NULL));
        ASSERT_TRUE(vlen == 1 && memcmp(value, "s", 1) == 0);
    }
    free(buf);
    marble__memtable_destroy(mt);
}
