/* The live-resource registry: marble_db_close refuses while snapshots, streams, iterators, scan
 * sources or jobs are live, and its message lists them; once they are released it closes. */
#include <string.h>

#include "marble/marble.h"
#include "marble_test.h"

#define CHECK_OK(x)                                                                                \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ != MARBLE_OK) FAIL("%s: %s", #x, err.message);                                   \
    } while (0)

TEST(close_lists_live_resources)
{
    marble_error err = {0};
    marble_db *db;
    CHECK_OK(marble_db_open(marble_test_tmpdir(), NULL, &db, &err));
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("id:int64!,v:float64", &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "orders", &s, key, 1, &err));
    marble_arrow_schema_release(&s);

    marble_snapshot *snap;
    CHECK_OK(marble_db_snapshot_create(db, &snap, &err));
    struct ArrowArrayStream st;
    CHECK_OK(marble_db_scan(db, "orders", NULL, NULL, &st, &err));
    marble_kv_iter *it;
    CHECK_OK(marble_kv_iter_create(db, NULL, &it, &err));
    marble_scan_spec spec;
    memset(&spec, 0, sizeof spec);
    marble_source src;
    CHECK_OK(marble_db_scan_source(db, "orders", &spec, &src, &err));

    ASSERT_EQ_INT(marble_db_close(db, &err), MARBLE_ERR_BUSY);
    ASSERT_TRUE(strstr(err.message, "4 resource(s) still live") != NULL);
    ASSERT_TRUE(strstr(err.message, "snapshot at sequence 0") != NULL);
    ASSERT_TRUE(strstr(err.message, "scan stream of table 'orders'") != NULL);
    ASSERT_TRUE(strstr(err.message, "key-value iterator") != NULL);
    ASSERT_TRUE(strstr(err.message, "scan source of table 'orders'") != NULL);

    st.release(&st);
    marble_kv_iter_destroy(it);
    ASSERT_EQ_INT(marble_db_close(db, &err), MARBLE_ERR_BUSY);
    ASSERT_TRUE(strstr(err.message, "2 resource(s) still live") != NULL);
    ASSERT_TRUE(strstr(err.message, "scan stream") == NULL);
    src.release(src.ud);
    marble_db_snapshot_release(snap);
    CHECK_OK(marble_db_close(db, &err));
}

TEST(close_lists_at_most_four)
{
    marble_error err = {0};
    marble_db *db;
    CHECK_OK(marble_db_open(marble_test_tmpdir(), NULL, &db, &err));
    marble_snapshot *snaps[20];
    for (int i = 0; i < 20; i++) CHECK_OK(marble_db_snapshot_create(db, &snaps[i], &err));
    ASSERT_EQ_INT(marble_db_close(db, &err), MARBLE_ERR_BUSY);
    ASSERT_TRUE(strstr(err.message, "20 resource(s) still live") != NULL);
    ASSERT_TRUE(strstr(err.message, "and 16 more") != NULL);
    for (int i = 0; i < 20; i++) marble_db_snapshot_release(snaps[i]);
    CHECK_OK(marble_db_close(db, &err));
}

/* A one-batch stream whose get_next waits until `go` is set (a slow producer). */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static atomic_int go, served, started;
static struct ArrowSchema g_schema;

static int slow_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    (void)st;
    atomic_store(&started, 1); /* the ingest registered itself before reading the schema */
    return marble_arrow_schema_copy(&g_schema, out, NULL) == MARBLE_OK ? 0 : 5;
}

static int slow_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    (void)st;
    while (!atomic_load(&go)) usleep(1000);
    memset(out, 0, sizeof *out);
    if (atomic_fetch_add(&served, 1) > 0) return 0; /* end */
    marble_error err = {0};
    marble_batch_builder *b;
    if (marble_batch_builder_create(&g_schema, &b, &err)) return 5;
    for (int64_t i = 0; i < 100; i++) {
        marble_builder_append_int(b, 0, i, &err);
        marble_builder_append_double(b, 1, (double)i, &err);
    }
    int rc = marble_batch_builder_finish(b, out, &err);
    marble_batch_builder_destroy(b);
    return rc == MARBLE_OK ? 0 : 5;
}

static const char *slow_error(struct ArrowArrayStream *st)
{
    (void)st;
    return "slow stream";
}

static void slow_release(struct ArrowArrayStream *st)
{
    st->release = NULL;
}

static void *ingest_thread(void *db)
{
    struct ArrowArrayStream st = {slow_schema, slow_next, slow_error, slow_release, NULL};
    marble_error err = {0};
    return (void *)(intptr_t)marble_db_ingest(db, "orders", &st, NULL, NULL, &err);
}

TEST(close_lists_running_ingest)
{
    marble_error err = {0};
    marble_db *db;
    CHECK_OK(marble_db_open(marble_test_tmpdir(), NULL, &db, &err));
    CHECK_OK(marble_arrow_schema_parse("id:int64!,v:float64", &g_schema, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "orders", &g_schema, key, 1, &err));
    atomic_store(&go, 0);
    atomic_store(&served, 0);
    atomic_store(&started, 0);
    pthread_t th;
    ASSERT_OK(pthread_create(&th, NULL, ingest_thread, db));
    while (!atomic_load(&started)) usleep(1000);
    ASSERT_EQ_INT(marble_db_close(db, &err), MARBLE_ERR_BUSY);
    ASSERT_TRUE(strstr(err.message, "ingest into table 'orders'") != NULL);
    atomic_store(&go, 1);
    void *ret;
    pthread_join(th, &ret);
    ASSERT_EQ_INT((intptr_t)ret, MARBLE_OK);
    marble_arrow_schema_release(&g_schema);
    CHECK_OK(marble_db_close(db, &err));
}
