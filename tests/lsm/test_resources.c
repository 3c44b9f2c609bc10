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
