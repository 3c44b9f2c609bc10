/* The cache-line-blocked bloom filter over encoded keys: builder, serializer and validating reader.
 *
 * Serialized format (all integers little-endian; docs/format/bloom.md is the full contract):
 *
 *   offset  size        field
 *   0       4           magic       the bytes "MBLF"
 *   4       1           version     1
 *   5       1           k           probes per key, 1..30
 *   6       2           reserved    0
 *   8       4           num_blocks  number of 64-byte blocks (0 only for a filter of zero keys)
 *   12      4           crc         crc32c(bytes[0, 12) || bytes[16, 16 + 64 * num_blocks))
 *   16      64*blocks   blocks      the bit array; bit p of block b is bit (p & 7) of byte
 *                                   16 + 64 * b + (p >> 3)
 *
 * The total length is exactly 16 + 64 * num_blocks. For a key with hash h (marble_hash64, seed 0):
 *   b  = ((h >> 32) * num_blocks) >> 32
 *   h1 = h & 0xffffffff,  h2 = (rotl32(h1, 16) * 0x9e3779b1) | 1      (32-bit arithmetic)
 *   probe i = 0..k-1 tests bit ((h1 + i * h2) mod 2^32) >> 23 of block b.
 */
#include "lsm/bloom.h"

#include <stdlib.h>
#include <string.h>

#include "marble/base.h"

#define BLOOM_VERSION 1
#define BLOCK_BITS (MARBLE__BLOOM_BLOCK_SIZE * 8)

static const uint8_t bloom_magic[4] = {'M', 'B', 'L', 'F'};

static uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t pick_block(uint64_t h, uint32_t num_blocks)
{
    return (uint32_t)(((h >> 32) * (uint64_t)num_blocks) >> 32);
}

static uint32_t probe_step(uint32_t h1)
{
    return (((h1 << 16) | (h1 >> 16)) * 0x9e3779b1u) | 1u;
}

static uint32_t blocks_crc(const uint8_t *header, const uint8_t *blocks, uint32_t num_blocks)
{
    uint32_t crc = marble_crc32c(header, 12);
    return marble_crc32c_extend(crc, blocks, (size_t)num_blocks * MARBLE__BLOOM_BLOCK_SIZE);
}

uint64_t marble__bloom_hash(const void *key, size_t len)
{
    static const uint8_t empty = 0;
    return marble_hash64(len ? key : &empty, len, 0);
}

int marble__bloom_builder_init(marble__bloom_builder *b, int bits_per_key, marble_error *err)
{
    memset(b, 0, sizeof *b);
    if (bits_per_key < MARBLE__BLOOM_MIN_BITS_PER_KEY ||
        bits_per_key > MARBLE__BLOOM_MAX_BITS_PER_KEY)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "bloom filter: bits_per_key %d outside [%d, %d]", bits_per_key,
                                MARBLE__BLOOM_MIN_BITS_PER_KEY, MARBLE__BLOOM_MAX_BITS_PER_KEY);
    int k = (bits_per_key * 60 + 50) / 100;
    if (k < 1) k = 1;
    if (k > MARBLE__BLOOM_MAX_K) k = MARBLE__BLOOM_MAX_K;
    b->bits_per_key = bits_per_key;
    b->k = k;
    return MARBLE_OK;
}

void marble__bloom_builder_destroy(marble__bloom_builder *b)
{
    if (!b) return;
    free(b->hashes);
    b->hashes = NULL;
    b->count = 0;
    b->cap = 0;
}

int marble__bloom_builder_add_hash(marble__bloom_builder *b, uint64_t h, marble_error *err)
{
    if (b->bits_per_key == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "bloom filter: builder not initialized");
    if (b->count == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        if (cap > SIZE_MAX / sizeof *b->hashes)
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "bloom filter: %zu keys", b->count);
        uint64_t *v = realloc(b->hashes, cap * sizeof *v);
        if (!v)
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "bloom filter: %zu keys", b->count);
        b->hashes = v;
        b->cap = cap;
    }
    b->hashes[b->count++] = h;
    return MARBLE_OK;
}

int marble__bloom_builder_add(marble__bloom_builder *b, const void *key, size_t len,
                              marble_error *err)
{
    return marble__bloom_builder_add_hash(b, marble__bloom_hash(key, len), err);
}

size_t marble__bloom_builder_count(const marble__bloom_builder *b)
{
    return b->count;
}

int marble__bloom_builder_finish(marble__bloom_builder *b, uint8_t **out, size_t *out_len,
                                 marble_error *err)
{
    *out = NULL;
    *out_len = 0;
    if (b->bits_per_key == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "bloom filter: builder not initialized");
    uint64_t bpk = (uint64_t)b->bits_per_key;
    if (b->count > UINT64_MAX / bpk)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "bloom filter: %zu keys is too many",
                                b->count);
    uint64_t blocks = ((uint64_t)b->count * bpk + BLOCK_BITS - 1) / BLOCK_BITS;
    if (blocks > UINT32_MAX ||
        blocks > (SIZE_MAX - MARBLE__BLOOM_HEADER_SIZE) / MARBLE__BLOOM_BLOCK_SIZE)
        return marble_error_set(err, MARBLE_ERR_LIMIT,
                                "bloom filter: %zu keys at %d bits per key need too many blocks",
                                b->count, b->bits_per_key);
    uint32_t num_blocks = (uint32_t)blocks;
    size_t len = MARBLE__BLOOM_HEADER_SIZE + (size_t)num_blocks * MARBLE__BLOOM_BLOCK_SIZE;
    uint8_t *buf = calloc(1, len);
    if (!buf) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "bloom filter: %zu bytes", len);

    uint8_t *bits = buf + MARBLE__BLOOM_HEADER_SIZE;
    for (size_t i = 0; i < b->count; i++) {
        uint64_t h = b->hashes[i];
        uint8_t *block = bits + (size_t)pick_block(h, num_blocks) * MARBLE__BLOOM_BLOCK_SIZE;
        uint32_t h1 = (uint32_t)h, h2 = probe_step(h1);
        for (int j = 0; j < b->k; j++, h1 += h2) {
            uint32_t p = h1 >> 23;
            block[p >> 3] |= (uint8_t)(1u << (p & 7));
        }
    }

    memcpy(buf, bloom_magic, 4);
    buf[4] = BLOOM_VERSION;
    buf[5] = (uint8_t)b->k;
    store_u32(buf + 8, num_blocks);
    store_u32(buf + 12, blocks_crc(buf, bits, num_blocks));
    *out = buf;
    *out_len = len;
    return MARBLE_OK;
}

static int corrupt(marble_error *err, const char *what, unsigned long long a, unsigned long long b)
{
    return marble_error_set(err, MARBLE_ERR_CORRUPTION, "bloom filter: %s (%llu, expected %llu)",
                            what, a, b);
}

int marble__bloom_open(const void *data, size_t len, marble__bloom *bloom, marble_error *err)
{
    const uint8_t *p = data;
    bloom->blocks = NULL;
    bloom->num_blocks = 0;
    bloom->k = 0;
    if (len < MARBLE__BLOOM_HEADER_SIZE || !p)
        return corrupt(err, "truncated header: size in bytes", len, MARBLE__BLOOM_HEADER_SIZE);
    if (memcmp(p, bloom_magic, 4) != 0)
        return corrupt(err, "bad magic: first word", load_u32(p), load_u32(bloom_magic));
    if (p[4] != BLOOM_VERSION) return corrupt(err, "unsupported version", p[4], BLOOM_VERSION);
    if (p[5] < 1 || p[5] > MARBLE__BLOOM_MAX_K)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION, "bloom filter: k %u outside [1, %d]",
                                p[5], MARBLE__BLOOM_MAX_K);
    if (p[6] != 0 || p[7] != 0)
        return corrupt(err, "reserved bytes not zero: value", (unsigned)(p[6] | p[7] << 8), 0);
    uint32_t num_blocks = load_u32(p + 8);
    uint64_t want = MARBLE__BLOOM_HEADER_SIZE + (uint64_t)num_blocks * MARBLE__BLOOM_BLOCK_SIZE;
    if ((uint64_t)len != want)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "bloom filter: size %zu bytes does not match %u blocks "
                                "(expected %llu bytes)",
                                len, num_blocks, (unsigned long long)want);
    const uint8_t *blocks = p + MARBLE__BLOOM_HEADER_SIZE;
    uint32_t stored = load_u32(p + 12), crc = blocks_crc(p, blocks, num_blocks);
    if (stored != crc)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "bloom filter: crc mismatch (stored 0x%08x, computed 0x%08x)",
                                stored, crc);
    bloom->blocks = blocks;
    bloom->num_blocks = num_blocks;
    bloom->k = p[5];
    return MARBLE_OK;
}

int marble__bloom_may_contain_hash(const marble__bloom *bloom, uint64_t h)
{
    if (bloom->num_blocks == 0) return bloom->k == 0;
    const uint8_t *block =
        bloom->blocks + (size_t)pick_block(h, bloom->num_blocks) * MARBLE__BLOOM_BLOCK_SIZE;
    uint32_t h1 = (uint32_t)h, h2 = probe_step(h1);
    for (int j = 0; j < bloom->k; j++, h1 += h2) {
        uint32_t p = h1 >> 23;
        if (!(block[p >> 3] & (1u << (p & 7)))) return 0;
    }
    return 1;
}

int marble__bloom_may_contain(const marble__bloom *bloom, const void *key, size_t len)
{
    return marble__bloom_may_contain_hash(bloom, marble__bloom_hash(key, len));
}
