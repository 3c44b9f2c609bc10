/* marble_hash64: XXH3 (64-bit, seeded) from the system libxxhash. */
#include "marble/base.h"

#include <xxhash.h>

uint64_t marble_hash64(const void *data, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(data, n, seed);
}
