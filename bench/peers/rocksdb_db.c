/* marble-bench db: RocksDB through its C API (rocksdb/c.h), opened with the driver's settings. */
#include "bench_db.h"

#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rdb {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *topts;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
} rdb;

typedef struct rdb_iter {
    rocksdb_iterator_t *it;
} rdb_iter;

/* Moves a RocksDB error string into err; returns -1 if there was one. */
static int take_err(char *e, const char *what, char *err, size_t errlen)
{
    if (!e) return 0;
    snprintf(err, errlen, "rocksdb %s: %s", what, e);
    rocksdb_free(e);
    return -1;
}

static const char *rdb_unsupported(const bench_db_settings *s)
{
    (void)s;
    return NULL;
}

static void rdb_free(rdb *r)
{
    if (r->db) rocksdb_close(r->db);
    if (r->wo) rocksdb_writeoptions_destroy(r->wo);
    if (r->ro) rocksdb_readoptions_destroy(r->ro);
    if (r->opts) rocksdb_options_destroy(r->opts);
    if (r->topts) rocksdb_block_based_options_destroy(r->topts);
    if (r->cache) rocksdb_cache_destroy(r->cache);
    free(r);
}

static int rdb_open(const char *dir, const bench_db_settings *s, void **h, char *err, size_t errlen)
{
    rdb *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "rocksdb: out of memory");
        return -1;
    }
    r->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(r->opts, 1);
    rocksdb_options_set_error_if_exists(r->opts, 1);
    rocksdb_options_set_write_buffer_size(r->opts, s->write_buffer_bytes);
    rocksdb_options_set_max_write_buffer_number(r->opts, 3); /* 1 mutable + 2 immutable */
    rocksdb_options_set_target_file_size_base(r->opts, s->target_file_bytes);
    rocksdb_options_set_max_bytes_for_level_base(r->opts, 256u << 20);
    rocksdb_options_set_level0_file_num_compaction_trigger(r->opts, 4);
    rocksdb_options_set_level0_slowdown_writes_trigger(r->opts, 20);
    rocksdb_options_set_level0_stop_writes_trigger(r->opts, 36);
    rocksdb_options_set_max_background_jobs(r->opts, 2);
    int comp = s->compression_lz4 ? rocksdb_lz4_compression : rocksdb_no_compression;
    rocksdb_options_set_compression(r->opts, comp);
    rocksdb_options_set_bottommost_compression(r->opts, comp);
    r->topts = rocksdb_block_based_options_create();
    if (s->bloom_bits > 0)
        rocksdb_block_based_options_set_filter_policy(
            r->topts, rocksdb_filterpolicy_create_bloom_full((double)s->bloom_bits));
    r->cache = rocksdb_cache_create_lru(s->cache_bytes);
    rocksdb_block_based_options_set_block_cache(r->topts, r->cache);
    rocksdb_options_set_block_based_table_factory(r->opts, r->topts);
    r->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wo, (unsigned char)(s->sync_every != 0));
    r->ro = rocksdb_readoptions_create();
    char *e = NULL;
    r->db = rocksdb_open(r->opts, dir, &e);
    if (take_err(e, "open", err, errlen)) {
        r->db = NULL;
        rdb_free(r);
        return -1;
    }
    *h = r;
    return 0;
}

static int rdb_close(void *h, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    rdb_free(h);
    return 0;
}

static int rdb_put(void *h, const void *k, size_t klen, const void *v, size_t vlen, char *err,
                   size_t errlen)
{
    rdb *r = h;
    char *e = NULL;
    rocksdb_put(r->db, r->wo, k, klen, v, vlen, &e);
    return take_err(e, "put", err, errlen);
}

static int rdb_get(void *h, const void *k, size_t klen, int *found, size_t *vlen, char *err,
                   size_t errlen)
{
    rdb *r = h;
    char *e = NULL;
    rocksdb_pinnableslice_t *p = rocksdb_get_pinned(r->db, r->ro, k, klen, &e);
    if (take_err(e, "get", err, errlen)) return -1;
    *found = p != NULL;
    *vlen = 0;
    if (p) {
        rocksdb_pinnableslice_value(p, vlen);
        rocksdb_pinnableslice_destroy(p);
    }
    return 0;
}

static int rdb_del(void *h, const void *k, size_t klen, char *err, size_t errlen)
{
    rdb *r = h;
    char *e = NULL;
    rocksdb_delete(r->db, r->wo, k, klen, &e);
    return take_err(e, "delete", err, errlen);
}

static int rdb_batch_create(void *h, void **b, char *err, size_t errlen)
{
    (void)h;
    (void)err;
    (void)errlen;
    *b = rocksdb_writebatch_create();
    return 0;
}

static int rdb_batch_put(void *b, const void *k, size_t klen, const void *v, size_t vlen, char *err,
                         size_t errlen)
{
    (void)err;
    (void)errlen;
    rocksdb_writebatch_put(b, k, klen, v, vlen);
    return 0;
}

static int rdb_batch_write(void *h, void *b, char *err, size_t errlen)
{
    rdb *r = h;
    char *e = NULL;
    rocksdb_write(r->db, r->wo, b, &e);
    return take_err(e, "write", err, errlen);
}

static void rdb_batch_clear(void *b)
{
    rocksdb_writebatch_clear(b);
}

static void rdb_batch_destroy(void *b)
{
    if (b) rocksdb_writebatch_destroy(b);
}

static int rdb_iter_create(void *h, void **it, char *err, size_t errlen)
{
    rdb *r = h;
    (void)err;
    (void)errlen;
    *it = rocksdb_create_iterator(r->db, r->ro);
    return 0;
}

static void rdb_iter_seek(void *it, const void *k, size_t klen)
{
    rocksdb_iter_seek(it, k, klen);
}

static void rdb_iter_seek_first(void *it)
{
    rocksdb_iter_seek_to_first(it);
}

static int rdb_iter_valid(void *it)
{
    return rocksdb_iter_valid(it);
}

static void rdb_iter_next(void *it)
{
    rocksdb_iter_next(it);
}

static const void *rdb_iter_key(void *it, size_t *klen)
{
    return rocksdb_iter_key(it, klen);
}

static const void *rdb_iter_value(void *it, size_t *vlen)
{
    return rocksdb_iter_value(it, vlen);
}

static int rdb_iter_status(void *it, char *err, size_t errlen)
{
    char *e = NULL;
    rocksdb_iter_get_error(it, &e);
    return take_err(e, "iterator", err, errlen);
}

static void rdb_iter_destroy(void *it)
{
    if (it) rocksdb_iter_destroy(it);
}

static int rdb_scan(void *h, uint64_t *rows, uint64_t *bytes, char *err, size_t errlen)
{
    rdb *r = h;
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->ro);
    uint64_t n = 0, b = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        rocksdb_iter_key(it, &kl);
        rocksdb_iter_value(it, &vl);
        n++;
        b += kl + vl;
    }
    char *e = NULL;
    rocksdb_iter_get_error(it, &e);
    rocksdb_iter_destroy(it);
    *rows = n;
    *bytes = b;
    return take_err(e, "scan", err, errlen);
}

static int rdb_compact(void *h, char *err, size_t errlen)
{
    rdb *r = h;
    char *e = NULL;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(r->db, fo, &e);
    rocksdb_flushoptions_destroy(fo);
    if (take_err(e, "flush", err, errlen)) return -1;
    rocksdb_compact_range(r->db, NULL, 0, NULL, 0);
    return 0;
}

/* The SSTables of the current version (the WAL and the manifest are not counted). */
static uint64_t rdb_disk_size(void *h)
{
    rdb *r = h;
    uint64_t sst = 0;
    if (rocksdb_property_int(r->db, "rocksdb.live-sst-files-size", &sst)) sst = 0;
    return sst;
}

static const bench_db_engine rocksdb_engine = {
    "rocksdb",
    "block-based tables, 4 KiB blocks, full bloom filters; max_write_buffer_number 3 (1 mutable "
    "+ 2 immutable, as Marble's max_immutable_memtables 2)",
    rdb_unsupported,
    rdb_open,
    rdb_close,
    rdb_put,
    rdb_get,
    rdb_del,
    rdb_batch_create,
    rdb_batch_put,
    rdb_batch_write,
    rdb_batch_clear,
    rdb_batch_destroy,
    rdb_iter_create,
    rdb_iter_seek,
    rdb_iter_seek_first,
    rdb_iter_valid,
    rdb_iter_next,
    rdb_iter_key,
    rdb_iter_value,
    rdb_iter_status,
    rdb_iter_destroy,
    rdb_scan,
    rdb_compact,
    rdb_disk_size,
};

const bench_db_engine *const bench_db_rocksdb = &rocksdb_engine;
