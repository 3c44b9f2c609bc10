/* Tests for the blocked bloom filter: no false negatives, false-positive bounds, format checks. */
#include <stdlib.h>

#include "lsm/bloom.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

typedef struct filter {
    uint8_t *bytes;
    size_t len;
    marble__bloom bloom;
} filter;

static void key_of(uint64_t i, uint8_t key[8])
{
    for (int j = 0; j < 8; j++)
        key[j] = (uint8_t)(i >> (56 - 8 * j));
}

/* A filter over the keys [first, first + n), each the 8-byte big-endian encoding of its number. */
static filter build(int bits_per_key, uint64_t first, uint64_t n)
{
    marble_error err = {0};
    marble__bloom_builder b;
    filter f;
    CHECK_OK(marble__bloom_builder_init(&b, bits_per_key, &err));
    for (uint64_t i = first; i < first + n; i++) {
        uint8_t key[8];
        key_of(i, key);
        CHECK_OK(marble__bloom_builder_add(&b, key, sizeof key, &err));
    }
    ASSERT_EQ_U64(marble__bloom_builder_count(&b), n);
    CHECK_OK(marble__bloom_builder_finish(&b, &f.bytes, &f.len, &err));
    marble__bloom_builder_destroy(&b);
    CHECK_OK(marble__bloom_open(f.bytes, f.len, &f.bloom, &err));
    return f;
}

static uint64_t count_hits(const filter *f, uint64_t first, uint64_t n)
{
    uint64_t hits = 0;
    for (uint64_t i = first; i < first + n; i++) {
        uint8_t key[8];
        key_of(i, key);
        hits += (uint64_t)marble__bloom_may_contain(&f->bloom, key, sizeof key);
    }
    return hits;
}

#define ABSENT_BASE ((uint64_t)1 << 40)

TEST(bloom_no_false_negatives)
{
    uint64_t n = 1000000;
    filter f = build(10, 0, n);
    ASSERT_EQ_U64(count_hits(&f, 0, n), n);
    free(f.bytes);
}

TEST(bloom_false_positive_rate_10_bits)
{
    uint64_t n = 1000000;
    filter f = build(10, 0, n);
    uint64_t fp = count_hits(&f, ABSENT_BASE, n);
    double rate = (double)fp / (double)n;
    printf("bloom: 10 bits/key, %" PRIu64 " keys, k=%d: %" PRIu64 " false positives in %" PRIu64
           " absent keys = %.4f%%\n",
           n, f.bloom.k, fp, n, 100.0 * rate);
    ASSERT_LT_INT(fp, n * 15 / 1000);
    free(f.bytes);
}

TEST(bloom_bits_per_key_monotonic)
{
    uint64_t n = 200000;
    int bpk[3] = {5, 10, 20};
    uint64_t fp[3];
    size_t len[3];
    for (int i = 0; i < 3; i++) {
        filter f = build(bpk[i], 0, n);
        ASSERT_EQ_U64(count_hits(&f, 0, n), n);
        fp[i] = count_hits(&f, ABSENT_BASE, n);
        len[i] = f.len;
        printf("bloom: %d bits/key, k=%d, %zu bytes: false-positive rate %.4f%%\n", bpk[i],
               f.bloom.k, f.len, 100.0 * (double)fp[i] / (double)n);
        free(f.bytes);
    }
    ASSERT_LT_INT(len[0], len[1]);
    ASSERT_LT_INT(len[1], len[2]);
    ASSERT_GT_INT(fp[0], fp[1]);
    ASSERT_GT_INT(fp[1], fp[2]);
}

TEST(bloom_round_trip)
{
    marble_error err = {0};
    filter f = build(10, 1000, 5000);
    ASSERT_EQ_INT(f.len, MARBLE__BLOOM_HEADER_SIZE + MARBLE__BLOOM_BLOCK_SIZE * 98);
    ASSERT_TRUE(memcmp(f.bytes, "MBLF", 4) == 0);
    ASSERT_EQ_INT(f.bytes[4], 1);
    ASSERT_EQ_INT(f.bytes[5], 6);
    ASSERT_EQ_INT(f.bytes[6] | f.bytes[7], 0);
    ASSERT_EQ_INT(f.bytes[8] | f.bytes[9] << 8 | f.bytes[10] << 16 | f.bytes[11] << 24, 98);

    uint8_t *copy = malloc(f.len + 1);
    ASSERT_NOT_NULL(copy);
    memcpy(copy + 1, f.bytes, f.len);
    marble__bloom g;
    CHECK_OK(marble__bloom_open(copy + 1, f.len, &g, &err));
    ASSERT_EQ_INT(g.k, f.bloom.k);
    ASSERT_EQ_INT(g.num_blocks, 98);
    for (uint64_t i = 0; i < 20000; i++) {
        uint8_t key[8];
        key_of(i, key);
        int a = marble__bloom_may_contain(&f.bloom, key, sizeof key);
        ASSERT_EQ_INT(marble__bloom_may_contain(&g, key, sizeof key), a);
        ASSERT_EQ_INT(marble__bloom_may_contain_hash(&g, marble__bloom_hash(key, sizeof key)), a);
        if (i >= 1000 && i < 6000) ASSERT_TRUE(a);
    }

    marble__bloom_builder b;
    CHECK_OK(marble__bloom_builder_init(&b, 10, &err));
    for (uint64_t i = 6000; i-- > 1000;) {
        uint8_t key[8];
        key_of(i, key);
        CHECK_OK(marble__bloom_builder_add_hash(&b, marble__bloom_hash(key, sizeof key), &err));
    }
    uint8_t *again;
    size_t again_len;
    CHECK_OK(marble__bloom_builder_finish(&b, &again, &again_len, &err));
    ASSERT_EQ_INT(again_len, f.len);
    ASSERT_TRUE(memcmp(again, f.bytes, f.len) == 0);
    marble__bloom_builder_destroy(&b);
    free(again);
    free(copy);
    free(f.bytes);
}

TEST(bloom_zero_keys)
{
    marble_error err = {0};
    filter f = build(10, 0, 0);
    ASSERT_EQ_INT(f.len, MARBLE__BLOOM_HEADER_SIZE);
    ASSERT_EQ_INT(f.bloom.num_blocks, 0);
    ASSERT_EQ_U64(count_hits(&f, 0, 10000), 0);
    ASSERT_FALSE(marble__bloom_may_contain(&f.bloom, NULL, 0));
    free(f.bytes);

    marble__bloom_builder b;
    CHECK_OK(marble__bloom_builder_init(&b, 10, &err));
    CHECK_OK(marble__bloom_builder_add(&b, NULL, 0, &err));
    uint8_t *bytes;
    size_t len;
    CHECK_OK(marble__bloom_builder_finish(&b, &bytes, &len, &err));
    marble__bloom g;
    CHECK_OK(marble__bloom_open(bytes, len, &g, &err));
    ASSERT_EQ_INT(g.num_blocks, 1);
    ASSERT_TRUE(marble__bloom_may_contain(&g, NULL, 0));
    ASSERT_TRUE(marble__bloom_may_contain(&g, "", 0));
    marble__bloom_builder_destroy(&b);
    free(bytes);
}

TEST(bloom_bits_per_key_range)
{
    marble_error err = {0};
    marble__bloom_builder b;
    int bad[] = {0, -1, 65, 1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ_INT(marble__bloom_builder_init(&b, bad[i], &err), MARBLE_ERR_INVALID_ARGUMENT);
        ASSERT_CONTAINS(err.message, "bits_per_key");
        marble__bloom_builder_destroy(&b);
    }
    int good[] = {1, 64};
    for (size_t i = 0; i < 2; i++) {
        filter f = build(good[i], 0, 1000);
        ASSERT_EQ_U64(count_hits(&f, 0, 1000), 1000);
        ASSERT_GE_INT(f.bloom.k, 1);
        ASSERT_LE_INT(f.bloom.k, MARBLE__BLOOM_MAX_K);
        free(f.bytes);
    }
    marble__bloom_builder_destroy(NULL);
}

/* Opens `len` bytes from an exactly sized heap copy, so that ASan sees any read past the end. */
static int open_copy(const uint8_t *bytes, size_t len, marble__bloom *bloom, marble_error *err)
{
    uint8_t *copy = malloc(len ? len : 1);
    ASSERT_NOT_NULL(copy);
    memcpy(copy, bytes, len);
    int rc = marble__bloom_open(copy, len, bloom, err);
    if (rc != MARBLE_OK) {
        ASSERT_EQ_INT(bloom->num_blocks, 0);
        ASSERT_TRUE(marble__bloom_may_contain(bloom, "x", 1));
    }
    free(copy);
    return rc;
}

TEST(bloom_truncated)
{
    filter f = build(10, 0, 300);
    for (size_t len = 0; len < f.len; len++) {
        marble_error err = {0};
        marble__bloom g;
        ASSERT_EQ_INT(open_copy(f.bytes, len, &g, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, "bloom filter");
        ASSERT_CONTAINS(err.message, len < MARBLE__BLOOM_HEADER_SIZE ? "truncated" : "size");
    }
    uint8_t *longer = calloc(1, f.len + 64);
    ASSERT_NOT_NULL(longer);
    memcpy(longer, f.bytes, f.len);
    for (size_t extra = 1; extra <= 64; extra++) {
        marble_error err = {0};
        marble__bloom g;
        ASSERT_EQ_INT(open_copy(longer, f.len + extra, &g, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, "size");
    }
    marble_error err = {0};
    marble__bloom g;
    ASSERT_EQ_INT(marble__bloom_open(NULL, 0, &g, &err), MARBLE_ERR_CORRUPTION);
    free(longer);
    free(f.bytes);
}

TEST(bloom_bit_flips)
{
    filter f = build(10, 0, 300);
    const char *header_what[16] = {"magic",    "magic",    "magic", "magic", "version", "",
                                   "reserved", "reserved", "size",  "size",  "size",    "size",
                                   "crc",      "crc",      "crc",   "crc"};
    for (size_t bit = 0; bit < f.len * 8; bit++) {
        marble_error err = {0};
        marble__bloom g;
        f.bytes[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ASSERT_EQ_INT(open_copy(f.bytes, f.len, &g, &err), MARBLE_ERR_CORRUPTION);
        if (bit / 8 >= MARBLE__BLOOM_HEADER_SIZE)
            ASSERT_CONTAINS(err.message, "crc");
        else
            ASSERT_CONTAINS(err.message, header_what[bit / 8]);
        f.bytes[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    marble_error err = {0};
    marble__bloom g;
    ASSERT_OK(open_copy(f.bytes, f.len, &g, &err));
    free(f.bytes);
}

TEST(bloom_bad_header_fields)
{
    filter f = build(10, 0, 300);
    marble_error err = {0};
    marble__bloom g;
    uint8_t saved[16];
    memcpy(saved, f.bytes, 16);

    f.bytes[5] = 0;
    ASSERT_EQ_INT(open_copy(f.bytes, f.len, &g, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "k 0");
    f.bytes[5] = MARBLE__BLOOM_MAX_K + 1;
    ASSERT_EQ_INT(open_copy(f.bytes, f.len, &g, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "k 31");
    memcpy(f.bytes, saved, 16);

    f.bytes[4] = 2;
    ASSERT_EQ_INT(open_copy(f.bytes, f.len, &g, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "version");
    memcpy(f.bytes, saved, 16);

    memset(f.bytes + 8, 0xff, 4);
    ASSERT_EQ_INT(open_copy(f.bytes, f.len, &g, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "4294967295 blocks");
    memset(f.bytes + 8, 0, 4);
    ASSERT_EQ_INT(open_copy(f.bytes, MARBLE__BLOOM_HEADER_SIZE, &g, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "crc");
    memcpy(f.bytes, saved, 16);

    uint64_t s = 0x243f6a8885a308d3u;
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t buf[16 + 64 * 3];
        for (size_t i = 0; i < sizeof buf; i++) {
            s = s * 6364136223846793005u + 1442695040888963407u;
            buf[i] = (uint8_t)(s >> 56);
        }
        if (iter & 1) memcpy(buf, "MBLF\x01\x07\0\0", 8);
        s = s * 6364136223846793005u + 1442695040888963407u;
        size_t len = (size_t)(s >> 33) % (sizeof buf + 1);
        int rc = open_copy(buf, len, &g, &err);
        ASSERT_EQ_INT(rc, MARBLE_ERR_CORRUPTION);
    }
    free(f.bytes);
}
