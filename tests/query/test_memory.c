/* The database's one memory budget: memtables are charged to it, queries draw on it, and a query
 * that would take it past its limit fails with MARBLE_ERR_LIMIT (the database stays usable). */
#include <stdio.h>
#include <string.h>

#include "marble/marble.h"
#include "marble_test.h"

#define CHECK_OK(x)                                                                                \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ != MARBLE_OK) FAIL("%s: %s", #x, err.message);                                   \
    } while (0)

static int64_t drain(struct ArrowArrayStream *st, int *code)
{
    int64_t rows = 0;
    *code = MARBLE_OK;
    for (;;) {
        struct ArrowArray a;
        if (st->get_next(st, &a) != 0) {
            *code = marble_stream_last_code(st);
            break;
        }
        if (!a.release) break;
        rows += a.length;
        a.release(&a);
    }
    st->release(st);
    return rows;
}

TEST(query_over_db_budget_fails_cleanly)
{
    marble_error err = {0};
    marble_db_options o;
    marble_db_options_init(&o);
    o.write_buffer_size = (size_t)1 << 20;
    o.memory_budget = (uint64_t)12 << 20;
    o.sync = MARBLE_SYNC_NONE;
    marble_db *db;
    CHECK_OK(marble_db_open(marble_test_tmpdir(), &o, &db, &err));
    marble_mem_budget *b = marble_db_memory_budget(db);
    ASSERT_NOT_NULL(b);
    ASSERT_EQ_U64(marble_mem_budget_limit(b), (uint64_t)12 << 20);
    ASSERT_TRUE(marble_mem_budget_used(b) >= ((uint64_t)1 << 20)); /* the memtable */

    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("id:int64!,v:float64", &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, "t", &s, key, 1, &err));
    marble_batch_builder *bb;
    for (int64_t base = 0; base < 400000; base += 50000) {
        CHECK_OK(marble_batch_builder_create(&s, &bb, &err));
        for (int64_t i = base; i < base + 50000; i++) {
            CHECK_OK(marble_builder_append_int(bb, 0, i, &err));
            CHECK_OK(marble_builder_append_double(bb, 1, (double)i, &err));
        }
        struct ArrowArray a;
        CHECK_OK(marble_batch_builder_finish(bb, &a, &err));
        marble_batch_builder_destroy(bb);
        CHECK_OK(marble_db_put(db, "t", &s, &a, NULL, &err));
        a.release(&a);
    }
    CHECK_OK(marble_db_flush(db, &err));

    /* a small aggregate fits */
    struct ArrowArrayStream st;
    int code;
    CHECK_OK(marble_db_query_sql(db, "SELECT id % 10 AS g, count(*) FROM t GROUP BY id % 10", NULL,
                                 &st, NULL, &err));
    ASSERT_EQ_INT(drain(&st, &code), 10);
    ASSERT_EQ_INT(code, MARBLE_OK);

    /* 400,000 groups need more than the budget leaves: a clean LIMIT error, not an abort */
    CHECK_OK(marble_db_query_sql(db, "SELECT id, sum(v) FROM t GROUP BY id", NULL, &st, NULL,
                                 &err));
    drain(&st, &code);
    ASSERT_EQ_INT(code, MARBLE_ERR_LIMIT);
    /* everything the query reserved was given back; only memtables remain charged */
    ASSERT_TRUE(marble_mem_budget_used(b) < ((uint64_t)4 << 20));

    /* the same query with a limit of its own (not the db's) succeeds */
    marble_query_options qo;
    marble_query_options_init(&qo);
    qo.memory_limit = (uint64_t)512 << 20;
    CHECK_OK(marble_db_query_sql(db, "SELECT id, sum(v) FROM t GROUP BY id", &qo, &st, NULL,
                                 &err));
    ASSERT_EQ_INT(drain(&st, &code), 400000);
    ASSERT_EQ_INT(code, MARBLE_OK);

    char *json;
    CHECK_OK(marble_db_stats_json(db, &json, &err));
    ASSERT_TRUE(strstr(json, "\"memory\":{\"budget\":12582912,") != NULL);
    marble_free(json);
    marble_arrow_schema_release(&s);
    CHECK_OK(marble_db_close(db, &err));
}

/* Decompressed SSTable batches held in the per-file caches are charged to the budget; mapped
 * (uncompressed) ones take no heap and are not. */
TEST(cached_decompressed_batches_are_charged)
{
    marble_error err = {0};
    for (int compressed = 0; compressed < 2; compressed++) {
        marble_db_options o;
        marble_db_options_init(&o);
        o.compression = compressed ? MARBLE_IPC_ZSTD : MARBLE_IPC_UNCOMPRESSED;
        o.sync = MARBLE_SYNC_NONE;
        char dir[600];
        snprintf(dir, sizeof dir, "%s/db%d", marble_test_tmpdir(), compressed);
        marble_db *db;
        CHECK_OK(marble_db_open(dir, &o, &db, &err));
        struct ArrowSchema s;
        CHECK_OK(marble_arrow_schema_parse("id:int64!,name:utf8", &s, &err));
        const char *key[] = {"id"};
        CHECK_OK(marble_db_create_table(db, "t", &s, key, 1, &err));
        marble_batch_builder *bb;
        CHECK_OK(marble_batch_builder_create(&s, &bb, &err));
        for (int64_t i = 0; i < 4000; i++) {
            CHECK_OK(marble_builder_append_int(bb, 0, i, &err));
            CHECK_OK(marble_builder_append_bytes(bb, 1, "some text", 9, &err));
        }
        struct ArrowArray a;
        CHECK_OK(marble_batch_builder_finish(bb, &a, &err));
        marble_batch_builder_destroy(bb);
        CHECK_OK(marble_db_put(db, "t", &s, &a, NULL, &err));
        a.release(&a);
        CHECK_OK(marble_db_flush(db, &err));
        marble_mem_budget *b = marble_db_memory_budget(db);
        uint64_t before = marble_mem_budget_used(b);
        marble_value kv = {MARBLE_VALUE_INT, 7, 0, 0, NULL, 0};
        struct ArrowSchema rs;
        struct ArrowArray row;
        CHECK_OK(marble_db_get(db, "t", (marble_key){&kv, 1}, NULL, &rs, &row, &err));
        row.release(&row);
        rs.release(&rs);
        uint64_t after = marble_mem_budget_used(b);
        if (compressed) /* 4000 rows: 8 + 8 + ~9 + 4 bytes each at least */
            ASSERT_TRUE(after >= before + 4000 * 29);
        else
            ASSERT_EQ_U64(after, before);
        marble_arrow_schema_release(&s);
        CHECK_OK(marble_db_close(db, &err));
    }
}
