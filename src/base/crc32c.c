/* CRC32C (Castagnoli): SSE4.2 crc32 instruction on x86-64, slicing-by-8 tables elsewhere. */
#include "marble/base.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define CRC32C_POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static uint32_t load_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t marble_crc32c_extend_portable(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    uint32_t c = ~crc;
    pthread_once(&table_once, table_init);
    while (n >= 8) {
        uint32_t lo = c ^ load_le32(p), hi = load_le32(p + 4);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
            table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
    return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *data,
                                                               size_t n)
{
    const unsigned char *p = data;
    uint32_t c = ~crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, sizeof w);
        c = (uint32_t)_mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return ~c;
}
#endif

/* 0 until chosen, then 1 (portable) or 2 (hardware). Relaxed: every thread computes the same
 * choice from the CPU, so a race only repeats the check. */
static atomic_int impl;

static int choose(void)
{
    int v = atomic_load_explicit(&impl, memory_order_relaxed);
    if (v == 0) {
        v = 1;
#if defined(__x86_64__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("sse4.2")) v = 2;
#endif
        atomic_store_explicit(&impl, v, memory_order_relaxed);
    }
    return v;
}

uint32_t marble_crc32c_extend(uint32_t crc, const void *data, size_t n)
{
#if defined(__x86_64__)
    if (choose() == 2) return crc32c_sse42(crc, data, n);
#endif
    return marble_crc32c_extend_portable(crc, data, n);
}

uint32_t marble_crc32c(const void *data, size_t n)
{
    return marble_crc32c_extend(0, data, n);
}

int marble_crc32c_hw(void)
{
    return choose() == 2;
}
