/* The benchmark's implicit unbalanced tree (UTS-style binomial tree), shared by every impl. */
#ifndef MARBLE_BENCH_TREE_H
#define MARBLE_BENCH_TREE_H

#include <stdint.h>

/*
 * A node is a 64-bit id; its children follow from a hash of the id, so the tree is never stored.
 * The root has BENCH_TREE_ROOT_CHILDREN children; every other node has BENCH_TREE_M children
 * with probability q = BENCH_TREE_Q32 / 2^32 and none otherwise. q * m = 0.99, so a subtree
 * below the root has 100 nodes on average but sizes spread from 1 to thousands and depths to
 * hundreds. With this root id the tree has BENCH_TREE_NODES nodes and is 533 levels deep.
 */
#define BENCH_TREE_ROOT 0xFE9DCEB211F8A144ull
#define BENCH_TREE_ROOT_CHILDREN 10000u
#define BENCH_TREE_M 4u
#define BENCH_TREE_Q32 1063004405u
#define BENCH_TREE_NODES 1023349u
/* Hash rounds per node: the node's "work". */
#define BENCH_TREE_ROUNDS 4

/* splitmix64's finalizer over an incremented state. */
static inline uint64_t bench_mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Does the node's work and returns its number of children; *h receives the hash that
 * bench_tree_child needs. */
static inline uint32_t bench_tree_expand(uint64_t id, uint64_t *h)
{
    uint64_t x = id;
    for (int r = 0; r < BENCH_TREE_ROUNDS; r++)
        x = bench_mix64(x);
    *h = x;
    if (id == BENCH_TREE_ROOT) return BENCH_TREE_ROOT_CHILDREN;
    return (uint32_t)(x >> 32) < BENCH_TREE_Q32 ? BENCH_TREE_M : 0u;
}

/* Id of child i of the node whose hash is h. */
static inline uint64_t bench_tree_child(uint64_t h, uint32_t i)
{
    return bench_mix64(h + (uint64_t)(i + 1) * 0xD1B54A32D192ED03ull);
}

#endif
