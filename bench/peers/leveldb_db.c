/* marble-bench db: LevelDB through its C API (leveldb/c.h), opened with the driver's settings. */
#include "bench_db.h"

#include <dirent.h>
#include <leveldb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct ldb {
    leveldb_t *db;
    leveldb_options_t *opts;
    leveldb_filterpolicy_t *filter;
    leveldb_cache_t *cache;
    leveldb_writeoptions_t *wo;
    leveldb_readoptions_t *ro;
    char dir[4096];
} ldb;

/* Moves a LevelDB error string into err; returns -1 if there was one. */
static int take_err(char *e, const char *what, char *err, size_t errlen)
{
    if (!e) return 0;
    snprintf(err, errlen, "leveldb %s: %s", what, e);
    leveldb_free(e);
    return -1;
}

static const char *ldb_unsupported(const bench_db_settings *s)
{
    return s->compression_lz4 ? "LevelDB has no LZ4 compression (only Snappy)" : NULL;
}

static void ldb_free(ldb *l)
{
    if (l->db) leveldb_close(l->db);
    if (l->wo) leveldb_writeoptions_destroy(l->wo);
    if (l->ro) leveldb_readoptions_destroy(l->ro);
    if (l->opts) leveldb_options_destroy(l->opts);
    if (l->filter) leveldb_filterpolicy_destroy(l->filter);
    if (l->cache) leveldb_cache_destroy(l->cache);
    free(l);
}

static int ldb_open(const char *dir, const bench_db_settings *s, void **h, char *err, size_t errlen)
{
    ldb *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "leveldb: out of memory");
        return -1;
    }
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    l->opts = leveldb_options_create();
    leveldb_options_set_create_if_missing(l->opts, 1);
    leveldb_options_set_error_if_exists(l->opts, 1);
    leveldb_options_set_write_buffer_size(l->opts, s->write_buffer_bytes);
    leveldb_options_set_max_file_size(l->opts, s->target_file_bytes);
    leveldb_options_set_compression(l->opts, leveldb_no_compression);
    if (s->bloom_bits > 0) {
        l->filter = leveldb_filterpolicy_create_bloom(s->bloom_bits);
        leveldb_options_set_filter_policy(l->opts, l->filter);
    }
    l->cache = leveldb_cache_create_lru(s->cache_bytes);
    leveldb_options_set_cache(l->opts, l->cache);
    l->wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(l->wo, (unsigned char)(s->sync_every != 0));
    l->ro = leveldb_readoptions_create();
    char *e = NULL;
    l->db = leveldb_open(l->opts, dir, &e);
    if (take_err(e, "open", err, errlen)) {
        l->db = NULL;
        ldb_free(l);
        return -1;
    }
    *h = l;
    return 0;
}

static int ldb_close(void *h, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    ldb_free(h);
    return 0;
}

static int ldb_put(void *h, const void *k, size_t klen, const void *v, size_t vlen, char *err,
                   size_t errlen)
{
    ldb *l = h;
    char *e = NULL;
    leveldb_put(l->db, l->wo, k, klen, v, vlen, &e);
    return take_err(e, "put", err, errlen);
}

static int ldb_get(void *h, const void *k, size_t klen, int *found, size_t *vlen, char *err,
                   size_t errlen)
{
    ldb *l = h;
    char *e = NULL;
    size_t n = 0;
    char *v = leveldb_get(l->db, l->ro, k, klen, &n, &e);
    if (take_err(e, "get", err, errlen)) return -1;
    *found = v != NULL;
    *vlen = v ? n : 0;
    leveldb_free(v);
    return 0;
}

static int ldb_del(void *h, const void *k, size_t klen, char *err, size_t errlen)
{
    ldb *l = h;
    char *e = NULL;
    leveldb_delete(l->db, l->wo, k, klen, &e);
    return take_err(e, "delete", err, errlen);
}

static int ldb_batch_create(void *h, void **b, char *err, size_t errlen)
{
    (void)h;
    (void)err;
    (void)errlen;
    *b = leveldb_writebatch_create();
    return 0;
}

static int ldb_batch_put(void *b, const void *k, size_t klen, const void *v, size_t vlen, char *err,
                         size_t errlen)
{
    (void)err;
    (void)errlen;
    leveldb_writebatch_put(b, k, klen, v, vlen);
    return 0;
}

static int ldb_batch_write(void *h, void *b, char *err, size_t errlen)
{
    ldb *l = h;
    char *e = NULL;
    leveldb_write(l->db, l->wo, b, &e);
    return take_err(e, "write", err, errlen);
}

static void ldb_batch_clear(void *b)
{
    leveldb_writebatch_clear(b);
}

static void ldb_batch_destroy(void *b)
{
    if (b) leveldb_writebatch_destroy(b);
}

static int ldb_iter_create(void *h, void **it, char *err, size_t errlen)
{
    ldb *l = h;
    (void)err;
    (void)errlen;
    *it = leveldb_create_iterator(l->db, l->ro);
    return 0;
}

static void ldb_iter_seek(void *it, const void *k, size_t klen)
{
    leveldb_iter_seek(it, k, klen);
}

static void ldb_iter_seek_first(void *it)
{
    leveldb_iter_seek_to_first(it);
}

static int ldb_iter_valid(void *it)
{
    return leveldb_iter_valid(it);
}

static void ldb_iter_next(void *it)
{
    leveldb_iter_next(it);
}

static const void *ldb_iter_key(void *it, size_t *klen)
{
    return leveldb_iter_key(it, klen);
}

static const void *ldb_iter_value(void *it, size_t *vlen)
{
    return leveldb_iter_value(it, vlen);
}

static int ldb_iter_status(void *it, char *err, size_t errlen)
{
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    return take_err(e, "iterator", err, errlen);
}

static void ldb_iter_destroy(void *it)
{
    if (it) leveldb_iter_destroy(it);
}

static int ldb_scan(void *h, uint64_t *rows, uint64_t *bytes, char *err, size_t errlen)
{
    ldb *l = h;
    leveldb_iterator_t *it = leveldb_create_iterator(l->db, l->ro);
    uint64_t n = 0, b = 0;
    for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kl, vl;
        leveldb_iter_key(it, &kl);
        leveldb_iter_value(it, &vl);
        n++;
        b += kl + vl;
    }
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    *rows = n;
    *bytes = b;
    return take_err(e, "scan", err, errlen);
}

/* compact_range over everything first writes the memtable out, then compacts level by level. */
static int ldb_compact(void *h, char *err, size_t errlen)
{
    ldb *l = h;
    (void)err;
    (void)errlen;
    leveldb_compact_range(l->db, NULL, 0, NULL, 0);
    return 0;
}

/* The table files (*.ldb, *.sst) in the directory; the log and the manifest are not counted. */
static uint64_t ldb_disk_size(void *h)
{
    ldb *l = h;
    uint64_t total = 0;
    DIR *d = opendir(l->dir);
    if (!d) return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 4 || (strcmp(de->d_name + n - 4, ".ldb") && strcmp(de->d_name + n - 4, ".sst")))
            continue;
        char path[8192];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", l->dir, de->d_name);
        if (stat(path, &st) == 0) total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

static const bench_db_engine leveldb_engine = {
    "leveldb",
    "4 KiB blocks; one background thread; L0 triggers 4/8/12 and a 10 MiB level 1 are fixed in "
    "LevelDB; max_file_size = the target file size",
    ldb_unsupported,
    ldb_open,
    ldb_close,
    ldb_put,
    ldb_get,
    ldb_del,
    ldb_batch_create,
    ldb_batch_put,
    ldb_batch_write,
    ldb_batch_clear,
    ldb_batch_destroy,
    ldb_iter_create,
    ldb_iter_seek,
    ldb_iter_seek_first,
    ldb_iter_valid,
    ldb_iter_next,
    ldb_iter_key,
    ldb_iter_value,
    ldb_iter_status,
    ldb_iter_destroy,
    ldb_scan,
    ldb_compact,
    ldb_disk_size,
};

const bench_db_engine *const bench_db_leveldb = &leveldb_engine;
