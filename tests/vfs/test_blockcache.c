/* Tests of the block cache and the cache(<parent>) backend (src/vfs/blockcache.c). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conformance.h"
#include "marble/remote.h"
#include "marble/vfs.h"
#include "marble_test.h"
#include "vfs_test.h"

#define OK(expr)                                                                                   \
    do {                                                                                           \
        marble_error e_;                                                                           \
        marble_error_clear(&e_);                                                                   \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s -> %s: %s", #expr, marble_status_name(rc_), e_.message);    \
    } while (0)

/* ---- a gate: a wrapper backend whose reads count themselves and wait while the gate is shut -- */

typedef struct gate {
    marble_vfs base;
    marble_vfs *parent;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int shut;
    int reads;
} gate;

typedef struct gate_file {
    marble_file base;
    marble_file *inner;
    gate *g;
} gate_file;

static int gf_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                   marble_error *err)
{
    gate_file *gf = (gate_file *)f;
    gate *g = gf->g;
    pthread_mutex_lock(&g->mu);
    g->reads++;
    pthread_cond_broadcast(&g->cv);
    while (g->shut)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return gf->inner->methods->read(gf->inner, off, buf, n, nread, err);
}

static int gf_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    marble_file *in = ((gate_file *)f)->inner;
    return in->methods->write(in, off, buf, n, err);
}

static int gf_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    marble_file *in = ((gate_file *)f)->inner;
    return in->methods->append(in, buf, n, err);
}

static int gf_size(marble_file *f, uint64_t *out, marble_error *err)
{
    marble_file *in = ((gate_file *)f)->inner;
    return in->methods->size(in, out, err);
}

static int gf_sync(marble_file *f, int flags, marble_error *err)
{
    marble_file *in = ((gate_file *)f)->inner;
    return in->methods->sync(in, flags, err);
}

static int gf_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    marble_file *in = ((gate_file *)f)->inner;
    return in->methods->truncate(in, size, err);
}

static int gf_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                  marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "gate: no maps");
}

static void gf_unmap(marble_file *f, const void *addr, size_t len, void *cookie) {}

static int gf_close(marble_file *f, marble_error *err)
{
    marble_file *in = ((gate_file *)f)->inner;
    int rc = in->methods->close(in, err);
    free(f);
    return rc;
}

static int gf_control(marble_file *f, int op, void *arg)
{
    return MARBLE_ERR_UNSUPPORTED;
}

static const marble_file_methods gate_file_methods = {
    MARBLE_FILE_METHODS_VERSION,
    gf_read,
    gf_write,
    gf_append,
    gf_size,
    gf_sync,
    gf_truncate,
    gf_map,
    gf_unmap,
    gf_close,
    gf_control,
};

static int g_open(marble_vfs *v, const char *path, int flags, marble_file **out, marble_error *err)
{
    gate *g = v->data;
    marble_file *inner;
    int rc = g->parent->open(g->parent, path, flags, &inner, err);
    if (rc != MARBLE_OK) return rc;
    inner->vfs = g->parent;
    inner->flags = flags;
    inner->fs_record = NULL;
    gate_file *gf = calloc(1, sizeof *gf);
    ASSERT_NOT_NULL(gf);
    gf->base.methods = &gate_file_methods;
    gf->base.vfs = v;
    gf->base.caps = inner->caps & ~(uint32_t)MARBLE_CAP_MAP;
    gf->base.flags = flags;
    gf->inner = inner;
    gf->g = g;
    *out = &gf->base;
    return MARBLE_OK;
}

static int g_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    gate *g = v->data;
    return g->parent->stat(g->parent, path, out, err);
}

static int g_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud, marble_error *err)
{
    gate *g = v->data;
    return g->parent->list(g->parent, dir, fn, ud, err);
}

static int g_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    gate *g = v->data;
    return g->parent->mkdir(g->parent, path, err);
}

static int g_remove(marble_vfs *v, const char *path, marble_error *err)
{
    gate *g = v->data;
    return g->parent->remove(g->parent, path, err);
}

static int g_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    gate *g = v->data;
    return g->parent->rename(g->parent, from, to, err);
}

static int g_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    gate *g = v->data;
    return g->parent->sync_dir(g->parent, path, err);
}

static int g_control(marble_vfs *v, int op, void *arg)
{
    return MARBLE_ERR_UNSUPPORTED;
}

static void g_destroy(marble_vfs *v)
{
    gate *g = v->data;
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

static gate *gate_new(marble_vfs *parent)
{
    gate *g = calloc(1, sizeof *g);
    ASSERT_NOT_NULL(g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->parent = parent;
    marble_vfs *v = &g->base;
    v->version = MARBLE_VFS_VERSION;
    v->name = "gate";
    v->caps = parent->caps & ~(uint32_t)(MARBLE_CAP_MAP | MARBLE_CAP_FD);
    v->data = g;
    v->open = g_open;
    v->stat = g_stat;
    v->list = g_list;
    v->mkdir = g_mkdir;
    v->remove = g_remove;
    v->rename = g_rename;
    v->sync_dir = g_sync_dir;
    v->control = g_control;
    v->destroy = g_destroy;
    return g;
}

static void gate_set(gate *g, int shut)
{
    pthread_mutex_lock(&g->mu);
    g->shut = shut;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static int gate_reads(gate *g)
{
    pthread_mutex_lock(&g->mu);
    int n = g->reads;
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* ---- setup: "mem" is the parent, "fault" = fault(mem), "cache" = cache(fault) -----------------
 */

typedef struct env {
    marble_fs *fs;
    marble_block_cache *cache;
    marble_vfs *mem, *fault, *cv;
} env;

static env env_new(size_t block_size, size_t capacity)
{
    env e;
    memset(&e, 0, sizeof e);
    e.fs = new_fs();
    e.mem = marble_fs_backend(e.fs, "mem");
    ASSERT_NOT_NULL(e.mem);
    OK(marble_block_cache_create(block_size, capacity, &e.cache, &e_));
    OK(marble_vfs_fault_create(e.mem, &e.fault, &e_));
    OK(marble_fs_register(e.fs, "fault", e.fault, &e_));
    OK(marble_vfs_cache_create(e.fault, e.cache, &e.cv, &e_));
    OK(marble_fs_register(e.fs, "cache", e.cv, &e_));
    OK(marble_fs_mkdir(e.fs, "mem://d", 1, &e_));
    return e;
}

static void env_free(env *e)
{
    close_fs(e->fs);
    marble_block_cache_destroy(e->cache);
}

static marble_block_cache_stats stats(marble_block_cache *c)
{
    marble_block_cache_stats s;
    marble_block_cache_get_stats(c, &s);
    return s;
}

static uint64_t parent_reads(const env *e)
{
    return marble_fault_count(e->fault, MARBLE_FAULT_READ);
}

static unsigned char *random_bytes(size_t n, uint64_t seed)
{
    unsigned char *p = malloc(n ? n : 1);
    ASSERT_NOT_NULL(p);
    uint64_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(rng_next(&s) >> 24);
    return p;
}

static void put_file(marble_fs *fs, const char *uri, const void *data, size_t n)
{
    OK(marble_fs_write_all(fs, uri, data, n, 0, &e_));
}

static marble_file *open_ro(marble_fs *fs, const char *uri)
{
    marble_file *f;
    OK(marble_fs_open(fs, uri, MARBLE_OPEN_READ, &f, &e_));
    return f;
}

/* Reads [off, off+n) of f and checks it against expect (a file of `size` bytes). */
static void check_read(marble_file *f, const unsigned char *expect, size_t size, uint64_t off,
                       size_t n)
{
    unsigned char *buf = malloc(n ? n : 1);
    ASSERT_NOT_NULL(buf);
    size_t got = 12345;
    OK(marble_file_read(f, off, buf, n, &got, &e_));
    size_t want = off >= size ? 0 : (n < size - off ? n : (size_t)(size - off));
    if (got != want)
        FAIL("read [%llu, +%zu): got %zu, want %zu", (unsigned long long)off, n, got, want);
    if (want && memcmp(buf, expect + off, want) != 0)
        FAIL("read [%llu, +%zu): bytes differ", (unsigned long long)off, n);
    free(buf);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

TEST(blockcache_create)
{
    marble_block_cache *c;
    marble_error err;
    ASSERT_EQ_INT(marble_block_cache_create(4096, 1024, &c, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "capacity");
    OK(marble_block_cache_create(0, 0, &c, &e_));
    marble_block_cache_stats s = stats(c);
    ASSERT_EQ_U64(s.capacity, 256u << 20);
    ASSERT_EQ_U64(s.bytes, 0);
    ASSERT_EQ_U64(s.blocks, 0);
    marble_block_cache_invalidate(c, "nothing");
    marble_block_cache_destroy(c);
    marble_block_cache_destroy(NULL);

    env e = env_new(4096, 1 << 20);
    ASSERT_EQ_STR(e.cv->name, "cache(fault(mem))");
    ASSERT_EQ_HEX(e.cv->caps & (MARBLE_CAP_MAP | MARBLE_CAP_FD), 0);
    ASSERT_EQ_HEX(e.cv->caps, e.fault->caps & ~(uint32_t)(MARBLE_CAP_MAP | MARBLE_CAP_FD));
    ASSERT_TRUE(e.cv->caps & MARBLE_CAP_RANDOM_READ);
    marble_vfs *v;
    ASSERT_EQ_INT(marble_vfs_cache_create(e.mem, NULL, &v, &err), MARBLE_ERR_INVALID_ARGUMENT);
    env_free(&e);
}

TEST(blockcache_random_reads)
{
    env e = env_new(4096, 256 << 10); /* smaller than the files together: evictions happen */
    enum { NFILES = 12 };
    static const size_t sizes[NFILES] = {0,     1,     4095,  4096,   4097,  8192,
                                         12345, 40960, 65537, 100000, 99999, 200000};
    unsigned char *data[NFILES];
    marble_file *f[NFILES];
    for (int i = 0; i < NFILES; i++) {
        char uri[64];
        data[i] = random_bytes(sizes[i], (uint64_t)i + 7);
        snprintf(uri, sizeof uri, "mem://d/f%d", i);
        put_file(e.fs, uri, data[i], sizes[i]);
        snprintf(uri, sizeof uri, "cache://d/f%d", i);
        f[i] = open_ro(e.fs, uri);
        uint64_t size;
        OK(marble_file_size(f[i], &size, &e_));
        ASSERT_EQ_U64(size, sizes[i]);
    }
    uint64_t s = 99;
    for (int k = 0; k < 4000; k++) {
        int i = (int)(rng_next(&s) % NFILES);
        size_t size = sizes[i];
        uint64_t off = rng_next(&s) % (size + 5000);
        size_t n = (size_t)(rng_next(&s) % 3) == 0 ? (size_t)(rng_next(&s) % 20000)
                                                   : (size_t)(rng_next(&s) % 300);
        if (k % 10 == 0) off = (rng_next(&s) % (size / 4096 + 1)) * 4096 - (k % 20 ? 1 : 0);
        if (off > size + 10000) off = 0;
        check_read(f[i], data[i], size, off, n);
        marble_block_cache_stats st = stats(e.cache);
        ASSERT_LE_INT(st.bytes, st.capacity);
    }
    /* Whole files, and reads at and past the end. */
    for (int i = 0; i < NFILES; i++) {
        check_read(f[i], data[i], sizes[i], 0, sizes[i] + 100);
        check_read(f[i], data[i], sizes[i], sizes[i], 10);
        check_read(f[i], data[i], sizes[i], sizes[i] + 1, 10);
        check_read(f[i], data[i], sizes[i], 1u << 30, 10);
        check_read(f[i], data[i], sizes[i], 0, 0);
        ASSERT_EQ_INT(marble_file_read_exact(f[i], sizes[i], data[i], 1, NULL),
                      MARBLE_ERR_CORRUPTION);
    }
    marble_block_cache_stats st = stats(e.cache);
    ASSERT_GT_INT(st.hits, 0);
    ASSERT_GT_INT(st.evictions, 0);
    ASSERT_EQ_U64(st.fetches, parent_reads(&e));
    for (int i = 0; i < NFILES; i++) {
        OK(marble_file_close(f[i], &e_));
        free(data[i]);
    }
    env_free(&e);
}

TEST(blockcache_counts)
{
    env e = env_new(4096, 1 << 20);
    unsigned char *data = random_bytes(10000, 1); /* blocks of 4096, 4096 and 1808 bytes */
    put_file(e.fs, "mem://d/f", data, 10000);
    marble_file *f = open_ro(e.fs, "cache://d/f");
    uint64_t r0 = parent_reads(&e);
    marble_block_cache_stats s;

    check_read(f, data, 10000, 0, 10); /* block 0: miss */
    s = stats(e.cache);
    ASSERT_EQ_U64(s.misses, 1);
    ASSERT_EQ_U64(s.hits, 0);
    ASSERT_EQ_U64(s.fetches, 1);
    ASSERT_EQ_U64(s.blocks, 1);
    ASSERT_EQ_U64(s.bytes, 4096);
    ASSERT_EQ_U64(parent_reads(&e) - r0, 1);

    check_read(f, data, 10000, 100, 100);  /* block 0: hit */
    check_read(f, data, 10000, 4000, 200); /* block 0 hit, block 1 miss */
    s = stats(e.cache);
    ASSERT_EQ_U64(s.hits, 2);
    ASSERT_EQ_U64(s.misses, 2);
    ASSERT_EQ_U64(s.fetches, 2);

    check_read(f, data, 10000, 0, 20000); /* hits 0 and 1, misses 2 (short, 1808 bytes) */
    s = stats(e.cache);
    ASSERT_EQ_U64(s.hits, 4);
    ASSERT_EQ_U64(s.misses, 3);
    ASSERT_EQ_U64(s.fetches, 3);
    ASSERT_EQ_U64(s.blocks, 3);
    ASSERT_EQ_U64(s.bytes, 10000);
    ASSERT_EQ_U64(s.waits, 0);
    ASSERT_EQ_U64(s.evictions, 0);

    check_read(f, data, 10000, 10000, 100); /* at the end: no lookup */
    check_read(f, data, 10000, 9999, 100);  /* block 2: hit */
    s = stats(e.cache);
    ASSERT_EQ_U64(s.hits, 5);
    ASSERT_EQ_U64(s.misses, 3);

    /* A second handle on the same, unchanged file shares the blocks. */
    marble_file *g = open_ro(e.fs, "cache://d/f");
    check_read(g, data, 10000, 0, 10000);
    s = stats(e.cache);
    ASSERT_EQ_U64(s.hits, 8);
    ASSERT_EQ_U64(s.misses, 3);
    ASSERT_EQ_U64(parent_reads(&e) - r0, 3);
    OK(marble_file_close(g, &e_));
    OK(marble_file_close(f, &e_));

    /* Blocks outlive the handles: a new open hits. */
    f = open_ro(e.fs, "cache://d/f");
    check_read(f, data, 10000, 5000, 10);
    s = stats(e.cache);
    ASSERT_EQ_U64(s.hits, 9);
    ASSERT_EQ_U64(parent_reads(&e) - r0, 3);
    OK(marble_file_close(f, &e_));

    /* READ|WRITE handles pass through (no lookups). */
    OK(marble_fs_open(e.fs, "cache://d/f", MARBLE_OPEN_READ | MARBLE_OPEN_WRITE, &f, &e_));
    check_read(f, data, 10000, 0, 100);
    OK(marble_file_close(f, &e_));
    s = stats(e.cache);
    ASSERT_EQ_U64(s.hits + s.misses + s.waits, 12);
    free(data);
    env_free(&e);
}

TEST(blockcache_lru_eviction)
{
    env e = env_new(1024, 4096); /* four blocks */
    unsigned char *data = random_bytes(16384, 2);
    put_file(e.fs, "mem://d/f", data, 16384);
    marble_file *f = open_ro(e.fs, "cache://d/f");
    for (int b = 0; b < 4; b++)
        check_read(f, data, 16384, (uint64_t)b * 1024, 1024);
    marble_block_cache_stats s = stats(e.cache);
    ASSERT_EQ_U64(s.bytes, 4096);
    ASSERT_EQ_U64(s.blocks, 4);
    ASSERT_EQ_U64(s.evictions, 0);
    check_read(f, data, 16384, 10, 10);   /* block 0 becomes the most recent */
    check_read(f, data, 16384, 4096, 10); /* block 4 evicts block 1, the least recent */
    s = stats(e.cache);
    ASSERT_EQ_U64(s.evictions, 1);
    ASSERT_EQ_U64(s.bytes, 4096);
    uint64_t fetched = s.fetches;
    check_read(f, data, 16384, 0, 10);        /* 0 survived */
    check_read(f, data, 16384, 2 * 1024, 10); /* 2 and 3 too */
    check_read(f, data, 16384, 3 * 1024, 10);
    ASSERT_EQ_U64(stats(e.cache).fetches, fetched);
    check_read(f, data, 16384, 1024, 10); /* 1 did not */
    ASSERT_EQ_U64(stats(e.cache).fetches, fetched + 1);

    /* Random access: never above capacity; the last four blocks read are all there. */
    uint64_t r = 5;
    for (int k = 0; k < 2000; k++) {
        check_read(f, data, 16384, rng_next(&r) % 16384, (size_t)(rng_next(&r) % 3000));
        s = stats(e.cache);
        ASSERT_LE_INT(s.bytes, 4096);
        ASSERT_LE_INT(s.blocks, 4);
    }
    for (int b = 10; b < 14; b++)
        check_read(f, data, 16384, (uint64_t)b * 1024, 1);
    uint64_t reads = parent_reads(&e);
    for (int b = 13; b >= 10; b--)
        check_read(f, data, 16384, (uint64_t)b * 1024, 1024);
    ASSERT_EQ_U64(parent_reads(&e), reads);
    s = stats(e.cache);
    ASSERT_EQ_U64(s.fetches, parent_reads(&e));
    ASSERT_EQ_U64(s.evictions + s.blocks, s.fetches);
    OK(marble_file_close(f, &e_));
    free(data);
    env_free(&e);
}

/* Rewrites mem://d/f through the parent until its mtime differs from `old` (the mem backend's
 * clock is fine, but do not rely on two writes landing in different nanoseconds). */
static void rewrite_parent(env *e, const void *data, size_t n, const marble_stat *old)
{
    marble_stat st;
    for (int i = 0; i < 100; i++) {
        put_file(e->fs, "mem://d/f", data, n);
        OK(marble_fs_stat(e->fs, "mem://d/f", &st, &e_));
        if (st.mtime_ns != old->mtime_ns || st.size != old->size) return;
        sleep_ms(1);
    }
    FAIL("the mem backend's mtime does not change");
}

TEST(blockcache_not_stale)
{
    env e = env_new(4096, 1 << 20);
    size_t n = 10000;
    unsigned char *v1 = random_bytes(n, 11), *v2 = random_bytes(n, 12), *v3 = random_bytes(n, 13);
    unsigned char *v4 = random_bytes(n + 3000, 14);
    put_file(e.fs, "mem://d/f", v1, n);
    marble_file *f = open_ro(e.fs, "cache://d/f");
    check_read(f, v1, n, 0, n);
    OK(marble_file_close(f, &e_));
    ASSERT_EQ_U64(stats(e.cache).blocks, 3);

    /* Through the wrapper: the same size; the write drops the path's blocks at once. */
    marble_file *old = open_ro(e.fs, "cache://d/f"); /* opened before: a snapshot of v1 */
    OK(marble_fs_open(e.fs, "cache://d/f", MARBLE_OPEN_WRITE, &f, &e_));
    ASSERT_EQ_U64(stats(e.cache).blocks, 0); /* a writable open invalidates */
    check_read(old, v1, n, 0, n);            /* refetched: v1 still */
    ASSERT_EQ_U64(stats(e.cache).blocks, 3);
    OK(marble_file_write(f, 0, v2, n, &e_));
    ASSERT_EQ_U64(stats(e.cache).blocks, 0);
    OK(marble_file_close(f, &e_));
    f = open_ro(e.fs, "cache://d/f");
    check_read(f, v2, n, 0, n);
    check_read(f, v2, n, 4000, 5000);
    OK(marble_file_close(f, &e_));
    OK(marble_file_close(old, &e_));

    /* Through the parent directly: same size, new mtime; then a new size. */
    marble_stat st;
    OK(marble_fs_stat(e.fs, "mem://d/f", &st, &e_));
    rewrite_parent(&e, v3, n, &st);
    f = open_ro(e.fs, "cache://d/f");
    check_read(f, v3, n, 0, n);
    OK(marble_file_close(f, &e_));
    OK(marble_fs_stat(e.fs, "mem://d/f", &st, &e_));
    rewrite_parent(&e, v4, n + 3000, &st);
    f = open_ro(e.fs, "cache://d/f");
    uint64_t size;
    OK(marble_file_size(f, &size, &e_));
    ASSERT_EQ_U64(size, n + 3000);
    check_read(f, v4, n + 3000, 0, n + 3000);
    OK(marble_file_close(f, &e_));

    /* Append and truncate through the wrapper. */
    OK(marble_fs_open(e.fs, "cache://d/f", MARBLE_OPEN_WRITE | MARBLE_OPEN_APPEND, &f, &e_));
    OK(marble_file_append(f, "tail", 4, &e_));
    OK(marble_file_close(f, &e_));
    unsigned char *v5 = malloc(n + 3004);
    memcpy(v5, v4, n + 3000);
    memcpy(v5 + n + 3000, "tail", 4);
    f = open_ro(e.fs, "cache://d/f");
    check_read(f, v5, n + 3004, 0, n + 3004);
    OK(marble_file_close(f, &e_));

    /* Remove and rename through the wrapper drop blocks; a renamed-over file reads new. */
    put_file(e.fs, "mem://d/g", v1, n);
    f = open_ro(e.fs, "cache://d/g");
    check_read(f, v1, n, 0, n);
    OK(marble_file_close(f, &e_));
    uint64_t before = stats(e.cache).blocks;
    OK(marble_fs_rename(e.fs, "cache://d/f", "cache://d/g", 0, &e_));
    ASSERT_EQ_U64(stats(e.cache).blocks, before - 3 - 4);
    f = open_ro(e.fs, "cache://d/g");
    check_read(f, v5, n + 3004, 0, n + 3004);
    OK(marble_file_close(f, &e_));
    OK(marble_fs_remove(e.fs, "cache://d/g", &e_));
    ASSERT_EQ_U64(stats(e.cache).blocks, 0);
    free(v1);
    free(v2);
    free(v3);
    free(v4);
    free(v5);
    env_free(&e);
}

TEST(blockcache_invalidate)
{
    env e = env_new(4096, 1 << 20);
    unsigned char *data = random_bytes(20000, 3);
    put_file(e.fs, "mem://d/f", data, 20000);
    put_file(e.fs, "mem://d/other", data, 20000);
    marble_file *f = open_ro(e.fs, "cache://d/f");
    marble_file *o = open_ro(e.fs, "cache://d/other");
    check_read(f, data, 20000, 0, 20000);
    check_read(o, data, 20000, 0, 20000);
    ASSERT_EQ_U64(stats(e.cache).blocks, 10);
    marble_block_cache_invalidate(e.cache, "d/f");
    marble_block_cache_stats s = stats(e.cache);
    ASSERT_EQ_U64(s.blocks, 5);
    ASSERT_EQ_U64(s.bytes, 20000);
    uint64_t fetched = s.fetches;
    check_read(f, data, 20000, 0, 20000); /* the open handle refetches */
    check_read(o, data, 20000, 0, 20000); /* the other file was kept */
    ASSERT_EQ_U64(stats(e.cache).fetches, fetched + 5);
    marble_block_cache_invalidate(e.cache, "cache://d/other"); /* a URI works too */
    ASSERT_EQ_U64(stats(e.cache).blocks, 5);
    marble_block_cache_invalidate(e.cache, "d/nothing");
    marble_block_cache_invalidate(e.cache, "d/f");
    ASSERT_EQ_U64(stats(e.cache).blocks, 0);
    ASSERT_EQ_U64(stats(e.cache).bytes, 0);
    OK(marble_file_close(f, &e_));
    OK(marble_file_close(o, &e_));
    free(data);
    env_free(&e);
}

/* ---- single flight -------------------------------------------------------------------------- */

typedef struct flight {
    marble_file *f;
    const unsigned char *expect;
    uint64_t off;
    int rc;
    char msg[MARBLE_ERROR_MESSAGE_SIZE];
    int ok_bytes;
} flight;

static void *flight_thread(void *p)
{
    flight *t = p;
    unsigned char buf[100];
    size_t got = 0;
    marble_error err;
    marble_error_clear(&err);
    t->rc = marble_file_read(t->f, t->off, buf, sizeof buf, &got, &err);
    snprintf(t->msg, sizeof t->msg, "%s", err.message);
    t->ok_bytes = t->rc == MARBLE_OK && got == sizeof buf && !memcmp(buf, t->expect + t->off, got);
    return NULL;
}

static void wait_for_waits(marble_block_cache *c, uint64_t n)
{
    for (int i = 0; i < 20000 && stats(c).waits < n; i++)
        sleep_ms(1);
    ASSERT_EQ_U64(stats(c).waits, n);
}

enum { NFLIGHT = 8 };

/* cache -> gate -> `below`; NFLIGHT threads read block 0 of d/f at once through separate
 * handles; the gate holds the one fetch until all the others wait for it. */
static void fly(marble_fs *fs, marble_block_cache *c, gate *g, const unsigned char *data, flight *t)
{
    marble_file *files[NFLIGHT];
    pthread_t th[NFLIGHT];
    for (int i = 0; i < NFLIGHT; i++)
        files[i] = open_ro(fs, "gcache://d/f");
    uint64_t w0 = stats(c).waits;
    int r0 = gate_reads(g);
    gate_set(g, 1);
    for (int i = 0; i < NFLIGHT; i++) {
        t[i] = (flight){.f = files[i], .expect = data, .off = (uint64_t)i * 10};
        ASSERT_OK(pthread_create(&th[i], NULL, flight_thread, &t[i]));
    }
    wait_for_waits(c, w0 + NFLIGHT - 1);
    ASSERT_EQ_INT(gate_reads(g), r0 + 1);
    gate_set(g, 0);
    for (int i = 0; i < NFLIGHT; i++) {
        pthread_join(th[i], NULL);
        OK(marble_file_close(files[i], &e_));
    }
    ASSERT_EQ_INT(gate_reads(g), r0 + 1);
}

static void gate_env(env *e, gate **g, marble_block_cache **c)
{
    *e = env_new(4096, 1 << 20);
    *g = gate_new(e->fault);
    OK(marble_fs_register(e->fs, "gate", &(*g)->base, &e_));
    OK(marble_block_cache_create(4096, 1 << 20, c, &e_));
    marble_vfs *v;
    OK(marble_vfs_cache_create(&(*g)->base, *c, &v, &e_));
    OK(marble_fs_register(e->fs, "gcache", v, &e_));
}

TEST(blockcache_single_flight)
{
    env e;
    gate *g;
    marble_block_cache *c;
    gate_env(&e, &g, &c);
    unsigned char *data = random_bytes(10000, 4);
    put_file(e.fs, "mem://d/f", data, 10000);
    flight t[NFLIGHT];
    fly(e.fs, c, g, data, t);
    for (int i = 0; i < NFLIGHT; i++) {
        ASSERT_EQ_INT(t[i].rc, MARBLE_OK);
        ASSERT_TRUE(t[i].ok_bytes);
    }
    marble_block_cache_stats s = stats(c);
    ASSERT_EQ_U64(s.fetches, 1);
    ASSERT_EQ_U64(s.misses, 1);
    ASSERT_EQ_U64(s.waits, NFLIGHT - 1);
    ASSERT_EQ_U64(s.hits, 0);
    ASSERT_EQ_U64(s.blocks, 1);
    /* Now cached: hits, no parent read. */
    int r = gate_reads(g);
    marble_file *f = open_ro(e.fs, "gcache://d/f");
    check_read(f, data, 10000, 0, 4096);
    OK(marble_file_close(f, &e_));
    ASSERT_EQ_INT(gate_reads(g), r);
    ASSERT_EQ_U64(stats(c).hits, 1);
    free(data);
    env_free(&e);
    marble_block_cache_destroy(c);
}

TEST(blockcache_fetch_error)
{
    env e;
    gate *g;
    marble_block_cache *c;
    gate_env(&e, &g, &c);
    unsigned char *data = random_bytes(10000, 5);
    put_file(e.fs, "mem://d/f", data, 10000);
    marble_fault_fail_nth(e.fault, MARBLE_FAULT_READ, 1, EIO);
    flight t[NFLIGHT];
    fly(e.fs, c, g, data, t);
    for (int i = 0; i < NFLIGHT; i++) {
        ASSERT_EQ_INT(t[i].rc, MARBLE_ERR_IO);
        ASSERT_CONTAINS(t[i].msg, "injected EIO");
        ASSERT_CONTAINS(t[i].msg, "d/f");
    }
    marble_block_cache_stats s = stats(c);
    ASSERT_EQ_U64(s.fetches, 1);
    ASSERT_EQ_U64(s.waits, NFLIGHT - 1);
    ASSERT_EQ_U64(s.blocks, 0); /* not cached */
    ASSERT_EQ_U64(s.bytes, 0);
    /* The next reader fetches again and succeeds. */
    marble_file *f = open_ro(e.fs, "gcache://d/f");
    check_read(f, data, 10000, 0, 10000);
    s = stats(c);
    ASSERT_EQ_U64(s.fetches, 4);
    ASSERT_EQ_U64(s.blocks, 3);
    /* A failure on a later block of a read spanning several: the error, and nothing stale. */
    marble_block_cache_invalidate(c, "d/f");
    marble_fault_fail_nth(e.fault, MARBLE_FAULT_READ, 2, EIO);
    unsigned char buf[10000];
    size_t got;
    marble_error err;
    ASSERT_EQ_INT(marble_file_read(f, 0, buf, sizeof buf, &got, &err), MARBLE_ERR_IO);
    ASSERT_EQ_U64(stats(c).blocks, 1);
    check_read(f, data, 10000, 0, 10000);
    OK(marble_file_close(f, &e_));
    free(data);
    env_free(&e);
    marble_block_cache_destroy(c);
}

TEST(blockcache_map)
{
    env e = env_new(4096, 1 << 20);
    size_t n = 50000;
    unsigned char *data = random_bytes(n, 6);
    put_file(e.fs, "mem://d/f", data, n);
    marble_file *f = open_ro(e.fs, "cache://d/f");
    ASSERT_EQ_HEX(f->caps & MARBLE_CAP_MAP, 0);
    marble_mapping *m1, *m2;
    OK(marble_file_map(f, 0, 0, &m1, &e_));
    ASSERT_EQ_INT(marble_mapping_size(m1), n);
    ASSERT_EQ_INT(marble_mapping_is_mapped(m1), 0);
    ASSERT_TRUE(!memcmp(marble_mapping_data(m1), data, n));
    uint64_t fetched = stats(e.cache).fetches;
    ASSERT_EQ_U64(fetched, 13);
    OK(marble_file_map(f, 4000, 10000, &m2, &e_)); /* served from the cache */
    ASSERT_EQ_U64(stats(e.cache).fetches, fetched);
    marble_error err;
    marble_mapping *m3;
    ASSERT_EQ_INT(marble_file_map(f, n - 10, 100, &m3, &err), MARBLE_ERR_CORRUPTION);
    OK(marble_file_close(f, &e_));
    ASSERT_TRUE(!memcmp(marble_mapping_data(m2), data + 4000, 10000));
    marble_mapping_release(m1);
    marble_mapping_release(m2);
    free(data);
    env_free(&e);
}

TEST(blockcache_conformance)
{
    marble_fs *fs = new_fs();
    marble_block_cache *c;
    OK(marble_block_cache_create(64 << 10, 4 << 20, &c, &e_)); /* smaller than the big file */
    marble_vfs *v;
    OK(marble_vfs_cache_create(marble_fs_backend(fs, "mem"), c, &v, &e_));
    OK(marble_fs_register(fs, "cmem", v, &e_));
    vfs_conformance(fs, "cmem://conf");
    marble_block_cache_stats s = stats(c);
    ASSERT_GT_INT(s.hits, 0);
    ASSERT_LE_INT(s.bytes, s.capacity);
    close_fs(fs);
    marble_block_cache_destroy(c);
}

/* ---- concurrency -------------------------------------------------------------------------- */

enum { SFILES = 4, SSIZE = 300000 };

typedef struct stress {
    env *e;
    unsigned char **data;
    uint64_t seed;
    int bad;
    int stop;
} stress;

static void *stress_reader(void *p)
{
    stress *s = p;
    marble_file *f[SFILES];
    for (int i = 0; i < SFILES; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "cache://d/s%d", i);
        if (marble_fs_open(s->e->fs, uri, MARBLE_OPEN_READ, &f[i], NULL) != MARBLE_OK) {
            s->bad++;
            return NULL;
        }
    }
    unsigned char *buf = malloc(20000);
    uint64_t x = s->seed;
    for (int k = 0; k < 3000; k++) {
        int i = (int)(rng_next(&x) % SFILES);
        uint64_t off = rng_next(&x) % SSIZE;
        size_t n = (size_t)(rng_next(&x) % 20000);
        size_t got = 0;
        size_t want = n < SSIZE - off ? n : (size_t)(SSIZE - off);
        if (marble_file_read(f[i], off, buf, n, &got, NULL) != MARBLE_OK || got != want ||
            memcmp(buf, s->data[i] + off, got) != 0)
            s->bad++;
    }
    free(buf);
    for (int i = 0; i < SFILES; i++)
        marble_file_close(f[i], NULL);
    return NULL;
}

typedef struct churn {
    env *e;
    int stop;
    pthread_mutex_t mu;
    int rounds;
} churn;

static int churn_stopped(churn *c)
{
    pthread_mutex_lock(&c->mu);
    int s = c->stop;
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* Invalidates the readers' files and rewrites another one through the wrapper, repeatedly. */
static void *churner(void *p)
{
    churn *c = p;
    unsigned char buf[5000];
    memset(buf, 'x', sizeof buf);
    while (!churn_stopped(c)) {
        char uri[64];
        for (int i = 0; i < SFILES; i++) {
            snprintf(uri, sizeof uri, "d/s%d", i);
            marble_block_cache_invalidate(c->e->cache, uri);
        }
        marble_file *f;
        if (marble_fs_open(c->e->fs, "cache://d/w",
                           MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE, &f,
                           NULL) == MARBLE_OK) {
            marble_file_write(f, 0, buf, sizeof buf, NULL);
            marble_file_close(f, NULL);
        }
        if (marble_fs_open(c->e->fs, "cache://d/w", MARBLE_OPEN_READ, &f, NULL) == MARBLE_OK) {
            size_t got;
            marble_file_read(f, 0, buf, sizeof buf, &got, NULL);
            marble_file_close(f, NULL);
        }
        pthread_mutex_lock(&c->mu);
        c->rounds++;
        pthread_mutex_unlock(&c->mu);
        sleep_ms(1);
    }
    return NULL;
}

TEST(blockcache_stress)
{
    env e = env_new(8192, 256 << 10); /* far less than the files: constant eviction */
    unsigned char *data[SFILES];
    for (int i = 0; i < SFILES; i++) {
        char uri[64];
        data[i] = random_bytes(SSIZE, (uint64_t)i + 100);
        snprintf(uri, sizeof uri, "mem://d/s%d", i);
        put_file(e.fs, uri, data[i], SSIZE);
    }
    enum { NT = 8 };
    stress s[NT];
    pthread_t th[NT], ch;
    churn c = {.e = &e};
    pthread_mutex_init(&c.mu, NULL);
    ASSERT_OK(pthread_create(&ch, NULL, churner, &c));
    for (int i = 0; i < NT; i++) {
        s[i] = (stress){.e = &e, .data = data, .seed = (uint64_t)i * 77 + 1};
        ASSERT_OK(pthread_create(&th[i], NULL, stress_reader, &s[i]));
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        ASSERT_EQ_INT(s[i].bad, 0);
    }
    pthread_mutex_lock(&c.mu);
    c.stop = 1;
    pthread_mutex_unlock(&c.mu);
    pthread_join(ch, NULL);
    pthread_mutex_destroy(&c.mu);
    marble_block_cache_stats st = stats(e.cache);
    ASSERT_LE_INT(st.bytes, st.capacity);
    ASSERT_GT_INT(st.evictions, 0);
    ASSERT_EQ_U64(st.fetches, st.misses);
    /* Nothing is left pinned: invalidating everything empties the cache. */
    for (int i = 0; i < SFILES; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "d/s%d", i);
        marble_block_cache_invalidate(e.cache, uri);
        free(data[i]);
    }
    marble_block_cache_invalidate(e.cache, "d/w");
    st = stats(e.cache);
    ASSERT_EQ_U64(st.blocks, 0);
    ASSERT_EQ_U64(st.bytes, 0);
    env_free(&e);
}
