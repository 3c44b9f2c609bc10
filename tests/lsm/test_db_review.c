/* Regression tests from a review of src/lsm/db.c and db_read.c: each TEST failed or hung before
 * its fix (drop vs flush/compaction races, L0 stop without auto compaction, next-file-number
 * going back), plus a concurrency stress test for ASan/TSan. Uses the private headers to look at
 * the manifest's versions. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsm/db_internal.h"
#include "marble/db.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

static marble_db_options small_opts(void)
{
    marble_db_options o;
    marble_db_options_init(&o);
    o.write_buffer_size = 64 << 10;
    o.target_file_size = 64 << 10;
    o.level1_max_bytes = 256 << 10;
    o.batch_rows = 100;
    o.sync = MARBLE_SYNC_NONE;
    return o;
}

static void create_named(marble_db *db, const char *name)
{
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("id:int64!,name:utf8,v:float64", &s, &err));
    const char *key[] = {"id"};
    CHECK_OK(marble_db_create_table(db, name, &s, key, 1, &err));
    marble_arrow_schema_release(&s);
}

static void put_named(marble_db *db, const char *table, int64_t first, int64_t n)
{
    marble_error err = {0};
    struct ArrowSchema s;
    struct ArrowArray a;
    CHECK_OK(marble_arrow_schema_parse("id:int64!,name:utf8,v:float64", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (int64_t i = first; i < first + n; i++) {
        char name[48];
        int len = snprintf(name, sizeof name, "name-%" PRId64 "-padding-padding", i);
        CHECK_OK(marble_builder_append_int(b, 0, i, &err));
        CHECK_OK(marble_builder_append_bytes(b, 1, name, (size_t)len, &err));
        CHECK_OK(marble_builder_append_double(b, 2, (double)i, &err));
    }
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    marble_batch_builder_destroy(b);
    CHECK_OK(marble_db_put(db, table, &s, &a, NULL, &err));
    marble_arrow_array_release(&a);
    marble_arrow_schema_release(&s);
}

/* Runs fn(arg) on a thread; 1 if it returned within `ms`, else 0 (the thread is left hanging:
 * the test then fails and the process exits). */
typedef struct timed_call {
    void *(*fn)(void *);
    void *arg;
    atomic_int done;
} timed_call;

static void *timed_trampoline(void *p)
{
    timed_call *c = p;
    c->fn(c->arg);
    atomic_store(&c->done, 1);
    return NULL;
}

static int run_with_timeout(timed_call *c, int ms)
{
    pthread_t th;
    atomic_init(&c->done, 0);
    if (pthread_create(&th, NULL, timed_trampoline, c) != 0) FAIL("pthread_create");
    for (int i = 0; i < ms / 10 && !atomic_load(&c->done); i++)
        usleep(10000);
    if (!atomic_load(&c->done)) {
        pthread_detach(th);
        return 0;
    }
    pthread_join(th, NULL);
    return 1;
}

typedef struct put_arg {
    marble_db *db;
    int rc;
    marble_error err;
} put_arg;

static void *put_one(void *p)
{
    put_arg *a = p;
    a->rc = marble_db_kv_put(a->db, "k", 1, "v", 1, NULL, &a->err);
    return NULL;
}

static void *compact_all(void *p)
{
    put_arg *a = p;
    a->rc = marble_db_compact(a->db, NULL, &a->err);
    return NULL;
}

/* Defect: with disable_auto_compaction, reaching level0_stop_trigger stalls every writer
 * forever (nothing will ever compact L0), and the only way out, marble_db_compact, deadlocks
 * too: it flushes first, which needs the writer lock the stalled writer holds. */
TEST(db_l0_stop_without_auto_compaction_hangs)
{
    marble_error err = {0};
    const char *dir = marble_test_tmpdir();
    marble_db_options o = small_opts();
    o.disable_auto_compaction = 1;
    o.level0_compaction_trigger = 1;
    o.level0_slowdown_trigger = 2;
    o.level0_stop_trigger = 2;
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    for (int i = 0; i < 2; i++) {
        char k = (char)('a' + i);
        CHECK_OK(marble_db_kv_put(db, &k, 1, "x", 1, NULL, &err));
        CHECK_OK(marble_db_flush(db, &err));
    }
    put_arg pa = {db, -1, {0}};
    timed_call c = {put_one, &pa, 0};
    if (!run_with_timeout(&c, 3000)) {
        put_arg ca = {db, -1, {0}};
        timed_call cc = {compact_all, &ca, 0};
        int compact_done = run_with_timeout(&cc, 3000);
        FAIL("a put with 2 L0 files and auto compaction disabled hangs; marble_db_compact %s",
             compact_done ? "returned" : "hangs too (deadlock on wmu)");
    }
    CHECK_OK(pa.rc);
    CHECK_OK(marble_db_close(db, &err));
}

/* Defect: a payload over the WAL's record limit is refused by the WAL with
 * MARBLE_ERR_INVALID_ARGUMENT, and commit_payload turns that into the sticky write error: one
 * oversized put makes the database refuse every later write until it is reopened. */

/* The table ids named by the catalog (the tables that exist). */
static int table_exists(marble_db *db, uint32_t id)
{
    marble__table *t = marble__db_find_table_id(db, id);
    marble__table_unref(t);
    return t != NULL;
}

/* Files in the current version whose table no longer exists. */
static size_t orphan_files(marble_db *db, uint64_t *example)
{
    marble__version *v = marble__manifest_current(db->manifest);
    size_t n = 0;
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < marble__version_num_files(v, l); i++) {
            const marble__file_meta *f = marble__version_file(v, l, i);
            if (!table_exists(db, marble__prefix_get(f->smallest))) {
                n++;
                *example = f->number;
            }
        }
    marble__version_unref(v);
    return n;
}

static void *flush_thread(void *p)
{
    put_arg *a = p;
    a->rc = marble_db_flush(a->db, &a->err);
    return NULL;
}

/* Defect: drop_table waits for running compactions but not for a running flush. A flush that
 * looked the table up before the drop writes its SSTable and adds it to the manifest after the
 * drop's edit: the file of a table that no longer exists stays live forever (disk leak; the
 * compaction picker keeps picking it and run_compaction does nothing, see the next test). */
TEST(db_drop_table_during_flush_leaks_files)
{
    marble_error err = {0};
    const char *dir = marble_test_tmpdir();
    marble_db_options o = small_opts();
    o.write_buffer_size = 64 << 20; /* flushes only when asked */
    o.disable_auto_compaction = 1;
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    srand(1);
    for (int round = 0; round < 60; round++) {
        create_named(db, "d");
        put_named(db, "d", 0, 20000);
        put_arg fa = {db, -1, {0}};
        pthread_t th;
        pthread_create(&th, NULL, flush_thread, &fa);
        usleep((useconds_t)(rand() % 20000));
        CHECK_OK(marble_db_drop_table(db, "d", &err));
        pthread_join(th, NULL);
        if (fa.rc != MARBLE_OK) FAIL("flush: %d %s", fa.rc, fa.err.message);
        uint64_t ex = 0;
        size_t n = orphan_files(db, &ex);
        if (n)
            FAIL("round %d: %zu file(s) of the dropped table (e.g. %06" PRIu64
                 ".arrow) stay in the manifest",
                 round, n, ex);
    }
    CHECK_OK(marble_db_close(db, &err));
}

static void *wait_idle_thread(void *p)
{
    put_arg *a = p;
    a->rc = marble_db_wait_idle(a->db, &a->err);
    return NULL;
}

/* Defect (consequence): with such an orphan in L0 and auto compaction on, the picker picks it,
 * run_compaction returns OK without an edit, compaction_task reschedules, forever: the
 * background spins and marble_db_wait_idle never returns. Same race, auto compaction on. */
TEST(db_orphan_file_makes_compaction_spin)
{
    marble_error err = {0};
    const char *dir = marble_test_tmpdir();
    marble_db_options o = small_opts();
    o.write_buffer_size = 64 << 20;
    o.level0_compaction_trigger = 1;
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    srand(2);
    int orphaned = 0;
    for (int round = 0; round < 60 && !orphaned; round++) {
        create_named(db, "d");
        put_named(db, "d", 0, 20000);
        put_arg fa = {db, -1, {0}};
        pthread_t th;
        pthread_create(&th, NULL, flush_thread, &fa);
        usleep((useconds_t)(rand() % 20000));
        CHECK_OK(marble_db_drop_table(db, "d", &err));
        pthread_join(th, NULL);
        uint64_t ex;
        orphaned = orphan_files(db, &ex) > 0;
        put_arg wa = {db, -1, {0}};
        timed_call c = {wait_idle_thread, &wa, 0};
        if (!run_with_timeout(&c, 5000))
            FAIL("round %d: marble_db_wait_idle hangs (%s)", round,
                 orphaned ? "an orphan file is picked again and again" : "no orphan?");
        if (orphaned) {
            /* with the fix the orphan is compacted away */
            ASSERT_EQ_INT(orphan_files(db, &ex), 0);
        }
    }
    CHECK_OK(marble_db_close(db, &err));
}

/* ---- next_file_number must never go backwards in the manifest ---------------------------------
 * apply_edit reads db->next_file before marble__manifest_apply serializes the edits: an edit
 * that read a smaller number can be applied after one that added a file with a larger number.
 * The manifest then records next_file_number <= a live file's number; after a reopen the next
 * flush or compaction reuses that number and truncates a live SSTable. */

typedef struct stress {
    marble_db *db;
    atomic_int stop;
    atomic_int violations;
    uint64_t bad_next, bad_file;
} stress;

static void *monitor_versions(void *p)
{
    stress *s = p;
    while (!atomic_load(&s->stop)) {
        marble__version *v = marble__manifest_current(s->db->manifest);
        uint64_t next = marble__version_next_file_number(v), maxf = 0;
        for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
            for (size_t i = 0; i < marble__version_num_files(v, l); i++) {
                uint64_t n = marble__version_file(v, l, i)->number;
                if (n > maxf) maxf = n;
            }
        marble__version_unref(v);
        if (maxf && next <= maxf && !atomic_load(&s->violations)) {
            s->bad_next = next;
            s->bad_file = maxf;
            atomic_fetch_add(&s->violations, 1);
        }
    }
    return NULL;
}

static void *kv_writer(void *p)
{
    stress *s = p;
    marble_error err = {0};
    char val[200];
    memset(val, 'x', sizeof val);
    for (uint64_t i = 0; !atomic_load(&s->stop); i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "k%08" PRIu64, (i * 7919) % 50000);
        if (marble_db_kv_put(s->db, key, (size_t)n, val, sizeof val, NULL, &err) != MARBLE_OK)
            FAIL("kv_put: %s", err.message);
    }
    return NULL;
}

static atomic_int g_churn_id;

static void *catalog_churn(void *p)
{
    stress *s = p;
    marble_error err = {0};
    int me = atomic_fetch_add(&g_churn_id, 1);
    for (int i = 0; !atomic_load(&s->stop); i++) {
        char name[32];
        snprintf(name, sizeof name, "c%d_%d", me, i);
        create_named(s->db, name);
        put_named(s->db, name, 0, 10);
        if (marble_db_drop_table(s->db, name, &err) != MARBLE_OK) FAIL("drop: %s", err.message);
    }
    return NULL;
}

TEST(db_next_file_number_never_goes_back)
{
    marble_error err = {0};
    const char *dir = marble_test_tmpdir();
    marble_db_options o = small_opts();
    o.write_buffer_size = 16 << 10;
    o.max_immutable_memtables = 4;
    o.level0_compaction_trigger = 2;
    o.target_file_size = 16 << 10;
    o.level1_max_bytes = 64 << 10;
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    stress s = {db, 0, 0, 0, 0};
    pthread_t th[4];
    pthread_create(&th[0], NULL, monitor_versions, &s);
    pthread_create(&th[1], NULL, kv_writer, &s);
    pthread_create(&th[2], NULL, kv_writer, &s);
    pthread_create(&th[3], NULL, catalog_churn, &s);
    for (int i = 0; i < 100 && !atomic_load(&s.violations); i++)
        usleep(100000);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    if (atomic_load(&s.violations))
        FAIL("a version records next_file_number %" PRIu64 " while file %06" PRIu64
             ".arrow is live",
             s.bad_next, s.bad_file);
    CHECK_OK(marble_db_wait_idle(db, &err));
    CHECK_OK(marble_db_close(db, &err));
}

/* Defect: drop_table finds the table's index, then waits on db->cv (releasing mu) while a
 * compaction runs; another drop or create changes db->tables meanwhile, and the stale index
 * then drops (and unrefs) whichever table now sits there, or reads past the end. Two threads
 * drop their own tables while compactions keep running. */
typedef struct dropper {
    marble_db *db;
    int which;
    atomic_int *stop;
} dropper;

static int name_listed(void *ud, const char *name)
{
    const char **want = ud;
    if (strcmp(name, want[0]) == 0) want[1] = name; /* found */
    return 0;
}

static int table_listed(marble_db *db, const char *name)
{
    marble_error err = {0};
    const char *want[2] = {name, NULL};
    CHECK_OK(marble_db_list_tables(db, name_listed, want, &err));
    return want[1] != NULL;
}

static void *drop_loop(void *p)
{
    dropper *d = p;
    marble_error err = {0};
    for (int i = 0; i < 300 && !atomic_load(d->stop); i++) {
        char name[32], keep[32];
        snprintf(name, sizeof name, "drop%d_%d", d->which, i);
        snprintf(keep, sizeof keep, "keep%d", d->which);
        create_named(d->db, name);
        int rc = marble_db_drop_table(d->db, name, &err);
        if (rc != MARBLE_OK) FAIL("drop %s: %s (another thread dropped it)", name, err.message);
        if (table_listed(d->db, name))
            FAIL("drop %s returned OK but the table is still there", name);
        if (!table_listed(d->db, keep))
            FAIL("table %s vanished: a drop of another table hit it", keep);
    }
    return NULL;
}

TEST(db_concurrent_drops_drop_the_wrong_table)
{
    marble_error err = {0};
    const char *dir = marble_test_tmpdir();
    marble_db_options o = small_opts();
    o.write_buffer_size = 8 << 10;
    o.level0_compaction_trigger = 1;
    o.target_file_size = 8 << 10;
    o.level1_max_bytes = 16 << 10;
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    create_named(db, "keep0");
    create_named(db, "keep1");
    stress s = {db, 0, 0, 0, 0};
    dropper d0 = {db, 0, &s.stop}, d1 = {db, 1, &s.stop};
    pthread_t th[4];
    pthread_create(&th[0], NULL, kv_writer, &s);
    pthread_create(&th[1], NULL, kv_writer, &s);
    pthread_create(&th[2], NULL, drop_loop, &d0);
    pthread_create(&th[3], NULL, drop_loop, &d1);
    pthread_join(th[2], NULL);
    pthread_join(th[3], NULL);
    atomic_store(&s.stop, 1);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    CHECK_OK(marble_db_wait_idle(db, &err));
    CHECK_OK(marble_db_close(db, &err));
}

/* ---- everything at once (run under TSan/ASan) -------------------------------------------------
 */

static void *reader_thread(void *p)
{
    stress *s = p;
    marble_error err = {0};
    while (!atomic_load(&s->stop)) {
        void *v;
        size_t vl;
        int rc = marble_db_kv_get(s->db, NULL, "k00000007", 9, &v, &vl, &err);
        if (rc == MARBLE_OK)
            marble_free(v);
        else if (rc != MARBLE_ERR_NOT_FOUND)
            FAIL("kv_get: %s", err.message);
        marble_snapshot *snap;
        CHECK_OK(marble_db_snapshot_create(s->db, &snap, &err));
        marble_read_options ro = {0};
        ro.snapshot = snap;
        marble_kv_iter *it;
        CHECK_OK(marble_kv_iter_create(s->db, &ro, &it, &err));
        size_t n = 0;
        const uint8_t *prev = NULL;
        size_t prevlen = 0;
        char last[64];
        for (marble_kv_iter_seek_to_first(it); marble_kv_iter_valid(it) && n < 2000;
             marble_kv_iter_next(it), n++) {
            size_t kl;
            const uint8_t *k = marble_kv_iter_key(it, &kl);
            if (prev) {
                size_t m = prevlen < kl ? prevlen : kl;
                int c = m ? memcmp(last, k, m) : 0;
                if (c > 0 || (c == 0 && prevlen >= kl)) FAIL("kv iterator out of order");
            }
            if (kl < sizeof last) {
                memcpy(last, k, kl);
                prev = (const uint8_t *)last;
                prevlen = kl;
            }
        }
        CHECK_OK(marble_kv_iter_status(it, &err));
        marble_kv_iter_destroy(it);
        marble_db_snapshot_release(snap);
    }
    return NULL;
}

static void *flusher_thread(void *p)
{
    stress *s = p;
    marble_error err = {0};
    while (!atomic_load(&s->stop)) {
        CHECK_OK(marble_db_flush(s->db, &err));
        usleep(20000);
        CHECK_OK(marble_db_compact(s->db, NULL, &err));
        usleep(50000);
    }
    return NULL;
}

TEST(db_concurrent_everything)
{
    marble_error err = {0};
    const char *dir = marble_test_tmpdir();
    marble_db_options o = small_opts();
    o.write_buffer_size = 16 << 10;
    o.level0_compaction_trigger = 2;
    o.target_file_size = 16 << 10;
    o.level1_max_bytes = 64 << 10;
    marble_db *db;
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    stress s = {db, 0, 0, 0, 0};
    pthread_t th[5];
    pthread_create(&th[0], NULL, kv_writer, &s);
    pthread_create(&th[1], NULL, kv_writer, &s);
    pthread_create(&th[2], NULL, reader_thread, &s);
    pthread_create(&th[3], NULL, reader_thread, &s);
    pthread_create(&th[4], NULL, flusher_thread, &s);
    sleep(4);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < 5; i++)
        pthread_join(th[i], NULL);
    CHECK_OK(marble_db_wait_idle(db, &err));
    CHECK_OK(marble_db_close(db, &err));
    CHECK_OK(marble_db_open(dir, &o, &db, &err));
    CHECK_OK(marble_db_close(db, &err));
}
