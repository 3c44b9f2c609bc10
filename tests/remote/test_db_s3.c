/* A database on S3 (s3rver on 127.0.0.1): SSTables and manifest objects in the bucket, the WAL in
 * a local directory; writes, flush, compaction, reopen, a table scan, and reads through the
 * block cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/db.h"
#include "marble/remote.h"
#include "s3rver.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

typedef struct fixture {
    test_s3rver s3;
    marble_fs *fs;
    marble_block_cache *cache;
    char wal[700];
} fixture;

static int setup(fixture *fx)
{
    marble_error err = {0};
    memset(fx, 0, sizeof *fx);
    if (!s3rver_prepare()) return 0;
    s3rver_start(&fx->s3);
    marble_s3_options o;
    marble_s3_options_init(&o);
    o.endpoint = fx->s3.endpoint;
    o.region = "us-east-1";
    o.access_key_id = "S3RVER";
    o.secret_access_key = "S3RVER";
    o.session_token = NULL;
    o.max_retries = 6; /* s3rver sometimes answers 500 when a listing races with writes */
    o.retry_base_ms = 20;
    marble_vfs *v, *cv;
    CHECK_OK(marble_fs_create(&fx->fs, &err));
    CHECK_OK(marble_vfs_s3_create(&o, &v, &err));
    CHECK_OK(marble_fs_register(fx->fs, "s3", v, &err));
    CHECK_OK(marble_block_cache_create(64 << 10, 16 << 20, &fx->cache, &err));
    CHECK_OK(marble_vfs_cache_create(v, fx->cache, &cv, &err));
    CHECK_OK(marble_fs_register(fx->fs, "cs3", cv, &err));
    marble_stat st;
    int64_t deadline = test_now_ms() + 10000;
    while (v->stat(v, "test-bucket", &st, NULL) != MARBLE_OK) {
        if (test_now_ms() > deadline) FAIL("s3rver has no test-bucket (log: %s)", fx->s3.srv.log);
        test_sleep_ms(50);
    }
    snprintf(fx->wal, sizeof fx->wal, "%s/wal", marble_test_tmpdir());
    return 1;
}

static void teardown(fixture *fx)
{
    marble_error err = {0};
    CHECK_OK(marble_fs_destroy(fx->fs, &err));
    marble_block_cache_destroy(fx->cache);
    s3rver_stop(&fx->s3);
}

static marble_db_options opts(fixture *fx)
{
    marble_db_options o;
    marble_db_options_init(&o);
    o.fs = fx->fs;
    o.wal_uri = fx->wal;
    o.write_buffer_size = 256 << 10;
    o.target_file_size = 256 << 10;
    o.level1_max_bytes = 1 << 20;
    o.sync = MARBLE_SYNC_NONE;
    return o;
}

static void put_kv(marble_db *db, int from, int to, int version)
{
    marble_error err = {0};
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "key%06d", i);
        int vl = snprintf(v, sizeof v, "value-%d-%d", i, version);
        CHECK_OK(marble_db_kv_put(db, k, (size_t)kl, v, (size_t)vl, NULL, &err));
    }
}

static void check_kv(marble_db *db, int from, int to, int version)
{
    marble_error err = {0};
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "key%06d", i);
        int vl = snprintf(v, sizeof v, "value-%d-%d", i, version);
        void *got;
        size_t glen;
        CHECK_OK(marble_db_kv_get(db, NULL, k, (size_t)kl, &got, &glen, &err));
        if (glen != (size_t)vl || memcmp(got, v, glen) != 0)
            FAIL("key %d: got '%.*s', want '%s'", i, (int)glen, (char *)got, v);
        marble_free(got);
    }
}

static int count_kv(marble_db *db)
{
    marble_error err = {0};
    marble_kv_iter *it;
    CHECK_OK(marble_kv_iter_create(db, NULL, &it, &err));
    int n = 0;
    for (marble_kv_iter_seek_to_first(it); marble_kv_iter_valid(it); marble_kv_iter_next(it))
        n++;
    CHECK_OK(marble_kv_iter_status(it, &err));
    marble_kv_iter_destroy(it);
    return n;
}

static int count_arrow(void *ud, const char *name, int is_dir)
{
    size_t n = strlen(name);
    if (!is_dir && n > 6 && strcmp(name + n - 6, ".arrow") == 0) ++*(int *)ud;
    return 0;
}

TEST(s3_database_roundtrip)
{
    fixture fx;
    memset(&fx, 0, sizeof fx);
    if (!setup(&fx)) return;
    marble_error err = {0};
    marble_db_options o = opts(&fx);
    marble_db *db;
    CHECK_OK(marble_db_open("s3://test-bucket/db1", &o, &db, &err));
    put_kv(db, 0, 6000, 1);
    CHECK_OK(marble_db_flush(db, &err));
    put_kv(db, 2000, 3000, 2);
    CHECK_OK(marble_db_compact(db, NULL, &err));
    put_kv(db, 5000, 5500, 3); /* only in the local WAL */
    CHECK_OK(marble_db_close(db, &err));

    CHECK_OK(marble_db_open("s3://test-bucket/db1", &o, &db, &err));
    check_kv(db, 0, 2000, 1);
    check_kv(db, 2000, 3000, 2);
    check_kv(db, 3000, 5000, 1);
    check_kv(db, 5000, 5500, 3);
    ASSERT_EQ_INT(count_kv(db), 6000);
    char *json;
    CHECK_OK(marble_db_stats_json(db, &json, &err));
    ASSERT_CONTAINS(json, "\"levels\"");
    marble_free(json);
    CHECK_OK(marble_db_close(db, &err));

    /* the same database with a local disk cache of SSTables */
    char cache[800];
    snprintf(cache, sizeof cache, "%s/sstcache", marble_test_tmpdir());
    o.sst_cache_uri = cache;
    CHECK_OK(marble_db_open("s3://test-bucket/db1", &o, &db, &err));
    check_kv(db, 0, 2000, 1);
    ASSERT_EQ_INT(count_kv(db), 6000);
    CHECK_OK(marble_db_close(db, &err));
    int copies = 0;
    CHECK_OK(marble_fs_list(fx.fs, cache, count_arrow, &copies, &err));
    ASSERT_GT_INT(copies, 0);
    CHECK_OK(marble_db_open("s3://test-bucket/db1", &o, &db, &err));
    check_kv(db, 2000, 3000, 2);
    CHECK_OK(marble_db_close(db, &err));
    o.sst_cache_uri = NULL;

    /* the same database read through the block cache */
    CHECK_OK(marble_db_open("cs3://test-bucket/db1", &o, &db, &err));
    check_kv(db, 0, 100, 1);
    ASSERT_EQ_INT(count_kv(db), 6000);
    marble_block_cache_stats cs;
    marble_block_cache_get_stats(fx.cache, &cs);
    ASSERT_GT_INT((int64_t)cs.misses, 0);
    CHECK_OK(marble_db_close(db, &err));
    teardown(&fx);
}

TEST(s3_database_table_scan)
{
    fixture fx;
    memset(&fx, 0, sizeof fx);
    if (!setup(&fx)) return;
    marble_error err = {0};
    marble_db_options o = opts(&fx);
    marble_db *db;
    CHECK_OK(marble_db_open("s3://test-bucket/db2", &o, &db, &err));
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("id:int64!,v:float64", &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "t", &s, key, 1, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (int64_t i = 0; i < 20000; i++) {
        CHECK_OK(marble_builder_append_int(b, 0, i, &err));
        CHECK_OK(marble_builder_append_double(b, 1, (double)i / 2, &err));
    }
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    marble_batch_builder_destroy(b);
    CHECK_OK(marble_db_put(db, "t", &s, &a, NULL, &err));
    marble_arrow_array_release(&a);
    marble_arrow_schema_release(&s);
    CHECK_OK(marble_db_compact(db, NULL, &err));
    CHECK_OK(marble_db_close(db, &err));
    CHECK_OK(marble_db_open("s3://test-bucket/db2", &o, &db, &err));
    struct ArrowArrayStream st;
    CHECK_OK(marble_db_scan(db, "t", NULL, NULL, &st, &err));
    struct ArrowSchema ss;
    ASSERT_EQ_INT(st.get_schema(&st, &ss), 0);
    int64_t n = 0;
    double sum = 0;
    for (;;) {
        struct ArrowArray x;
        ASSERT_EQ_INT(st.get_next(&st, &x), 0);
        if (!x.release) break;
        for (int64_t i = 0; i < x.length; i++)
            sum += marble_arrow_get_double(ss.children[1], x.children[1], i);
        n += x.length;
        marble_arrow_array_release(&x);
    }
    marble_arrow_schema_release(&ss);
    st.release(&st);
    ASSERT_EQ_INT(n, 20000);
    ASSERT_TRUE(sum == 19999.0 * 20000 / 4);
    CHECK_OK(marble_db_close(db, &err));
    teardown(&fx);
}
