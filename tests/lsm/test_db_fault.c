/*
 * Fault-injection tests of the state store: a database opened through the fault backend
 * (include/marble/vfs.h) wrapping the memory backend, with every acknowledged write checked
 * after a reopen through the memory backend itself.
 *
 * Sweeps: for a flush and for a compaction, the I/O calls of each kind (open, read, write, sync,
 * rename, remove) are counted on a dry run; then for each n the nth call of that kind fails with
 * EIO, and in a second sweep with ENOSPC, on a fresh database holding the same acknowledged
 * writes. The operation must fail with the injected error (MARBLE_ERR_IO or MARBLE_ERR_NO_SPACE;
 * MARBLE_ERR_IO also for ENOSPC on a sync, as a failed fsync sticks), except when the call was
 * cleanup after the manifest edit was durable (removing obsolete files and WAL segments, syncing
 * the WAL directory after that): then it succeeds. Whatever it
 * returns, the database still reads every acknowledged write, closes without crashing or
 * leaking, and reopened through the parent holds them all, is consistent (point reads, a full
 * scan and a KV iteration agree) and accepts, flushes and compacts new writes.
 *
 * Crash mode: marble_fault_crash forgets every unsynced write while a database written with
 * MARBLE_SYNC_EVERY is busy flushing and compacting: reopened, it holds every acknowledged
 * write. With MARBLE_SYNC_NONE it still opens, is consistent, and holds a prefix of the writes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../crash/workload.h"
#include "marble_test.h"

#define SEED 0x5eedf00dull

typedef struct fenv {
    marble_fs *fs;
    marble_vfs *fault;
} fenv;

static void fenv_open(fenv *e)
{
    marble_error err = {0};
    if (marble_fs_create(&e->fs, &err) != MARBLE_OK) FAIL("marble_fs_create: %s", err.message);
    marble_vfs *parent = marble_fs_backend(e->fs, "mem");
    ASSERT_NOT_NULL(parent);
    if (marble_vfs_fault_create(parent, &e->fault, &err) != MARBLE_OK)
        FAIL("marble_vfs_fault_create: %s", err.message);
    if (marble_fs_register(e->fs, "fault", e->fault, &err) != MARBLE_OK)
        FAIL("marble_fs_register: %s", err.message);
}

static void fenv_close(fenv *e)
{
    marble_error err = {0};
    /* MARBLE_ERR_BUSY here names a handle the database leaked */
    if (marble_fs_destroy(e->fs, &err) != MARBLE_OK) FAIL("marble_fs_destroy: %s", err.message);
}

static marble_db_options fault_opts(marble_fs *fs, marble_sync_mode sync)
{
    marble_db_options o;
    marble_db_options_init(&o);
    o.fs = fs;
    o.sync = sync;
    o.write_buffer_size = 64 << 20; /* flushes only when asked: the sweeps count one flush */
    o.disable_auto_compaction = 1;
    o.target_file_size = 16 << 10;
    o.level1_max_bytes = 64 << 10;
    o.batch_rows = 50;
    o.background_threads = 1;
    return o;
}

/* Runs ops [first, first + n) of thread 0's stream on db, each acknowledged, into m. */
static void run_ops(marble_db *db, wl_model *m, uint64_t *rng, uint64_t first, uint64_t n)
{
    for (uint64_t i = first; i < first + n; i++) {
        wl_op op;
        wl_gen(rng, wl_version(0, i), &op);
        marble_error err = {0};
        int rc = wl_exec(db, 0, &op, &err);
        if (rc != MARBLE_OK) FAIL("write %" PRIu64 ": %s (%d)", i, err.message, rc);
        wl_apply(m, 0, &op);
    }
}

static void expect_state(marble_db *db, const wl_model *m, const char *when)
{
    wl_model obs;
    char why[1024];
    if (wl_read(db, &obs, why, sizeof why) != 0) FAIL("%s: %s", when, why);
    for (int t = 0; t < WL_THREADS; t++)
        if (wl_diff(&obs, m, t, why, sizeof why)) FAIL("%s: %s", when, why);
}

/* A fresh database at fault://<name> holding acknowledged writes: for a flush sweep, all in the
 * memtable; for a compaction sweep, in three overlapping L0 files per table and the memtable. */
static marble_db *prepare(fenv *e, const char *name, int for_compaction, wl_model *m, uint64_t *rng,
                          uint64_t *next_op)
{
    char uri[128];
    snprintf(uri, sizeof uri, "fault://%s", name);
    marble_db_options o = fault_opts(e->fs, MARBLE_SYNC_EVERY);
    marble_db *db = NULL;
    marble_error err = {0};
    if (marble_db_open(uri, &o, &db, &err) != MARBLE_OK) FAIL("open %s: %s", uri, err.message);
    if (wl_create_table(db, &err) != MARBLE_OK) FAIL("create table: %s", err.message);
    memset(m, 0, sizeof *m);
    *rng = wl_seed(SEED, 0, 0);
    *next_op = 0;
    int rounds = for_compaction ? 3 : 1;
    for (int r = 0; r < rounds; r++) {
        run_ops(db, m, rng, *next_op, 150);
        *next_op += 150;
        if (for_compaction && marble_db_flush(db, &err) != MARBLE_OK)
            FAIL("flush: %s", err.message);
    }
    return db;
}

static const struct {
    marble_fault_op op;
    const char *name;
} kinds[] = {{MARBLE_FAULT_OPEN, "open"},     {MARBLE_FAULT_READ, "read"},
             {MARBLE_FAULT_WRITE, "write"},   {MARBLE_FAULT_SYNC, "sync"},
             {MARBLE_FAULT_RENAME, "rename"}, {MARBLE_FAULT_REMOVE, "remove"}};

static int run_op(marble_db *db, int compaction, marble_error *err)
{
    return compaction ? marble_db_compact(db, NULL, err) : marble_db_flush(db, err);
}

/* Reopens fault://name through the parent (mem://name) and checks everything, then writes on. */
static void reopen_and_check(fenv *e, const char *name, wl_model *m, uint64_t *rng,
                             uint64_t next_op, const char *ctx)
{
    char uri[128], when[400];
    snprintf(uri, sizeof uri, "mem://%s", name);
    marble_db_options o = fault_opts(e->fs, MARBLE_SYNC_EVERY);
    o.create_if_missing = 0;
    marble_db *db = NULL;
    marble_error err = {0};
    int rc = marble_db_open(uri, &o, &db, &err);
    if (rc != MARBLE_OK) FAIL("%s: reopen: %s (%d)", ctx, err.message, rc);
    snprintf(when, sizeof when, "%s: after reopen", ctx);
    expect_state(db, m, when);
    run_ops(db, m, rng, next_op, 40);
    if (marble_db_flush(db, &err) != MARBLE_OK)
        FAIL("%s: flush after reopen: %s", ctx, err.message);
    if (marble_db_compact(db, NULL, &err) != MARBLE_OK)
        FAIL("%s: compact after reopen: %s", ctx, err.message);
    snprintf(when, sizeof when, "%s: after reopen, writes and compaction", ctx);
    expect_state(db, m, when);
    if (marble_db_close(db, &err) != MARBLE_OK) FAIL("%s: close: %s", ctx, err.message);
    /* a second reopen (the recovery's own writes are durable) */
    if (marble_db_open(uri, &o, &db, &err) != MARBLE_OK)
        FAIL("%s: second reopen: %s", ctx, err.message);
    snprintf(when, sizeof when, "%s: after a second reopen", ctx);
    expect_state(db, m, when);
    if (marble_db_close(db, &err) != MARBLE_OK) FAIL("%s: close: %s", ctx, err.message);
}

/* The code an injected failure must surface as. */
static int code_of(int os_errno)
{
    return os_errno == ENOSPC ? MARBLE_ERR_NO_SPACE : MARBLE_ERR_IO;
}

static void sweep(int compaction)
{
    static const int errnos[] = {EIO, ENOSPC};
    fenv e;
    fenv_open(&e);
    static wl_model m;
    uint64_t rng, next_op;
    int run = 0;
    size_t total = 0, failed_ops = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        /* dry run: how many calls of this kind the operation makes */
        char name[64];
        snprintf(name, sizeof name, "dry%zu", k);
        marble_db *db = prepare(&e, name, compaction, &m, &rng, &next_op);
        marble_error err = {0};
        uint64_t c0 = marble_fault_count(e.fault, kinds[k].op);
        if (run_op(db, compaction, &err) != MARBLE_OK) FAIL("dry run: %s", err.message);
        uint64_t calls = marble_fault_count(e.fault, kinds[k].op) - c0;
        if (marble_db_close(db, &err) != MARBLE_OK) FAIL("dry run close: %s", err.message);
        for (size_t w = 0; w < 2; w++)
            for (uint64_t n = 1; n <= calls; n++) {
                char ctx[256];
                snprintf(ctx, sizeof ctx, "%s: %s call %" PRIu64 " of %" PRIu64 " fails with %s",
                         compaction ? "compaction" : "flush", kinds[k].name, n, calls,
                         errnos[w] == EIO ? "EIO" : "ENOSPC");
                snprintf(name, sizeof name, "r%d", run++);
                db = prepare(&e, name, compaction, &m, &rng, &next_op);
                marble_fault_fail_nth(e.fault, kinds[k].op, n, errnos[w]);
                uint64_t before = marble_fault_count(e.fault, kinds[k].op);
                marble_error_clear(&err);
                int rc = run_op(db, compaction, &err);
                uint64_t made = marble_fault_count(e.fault, kinds[k].op) - before;
                marble_fault_fail_nth(e.fault, MARBLE_FAULT_ALL, 0, 0);
                if (made < n) FAIL("%s: only %" PRIu64 " calls this time", ctx, made);
                total++;
                /* Cleanup once the manifest edit is durable (removing obsolete SSTables and WAL
                 * segments, and the flush's last sync: of the WAL directory after removing
                 * segments) cannot fail the operation; every other call is essential. */
                int cleanup = kinds[k].op == MARBLE_FAULT_REMOVE ||
                              (!compaction && kinds[k].op == MARBLE_FAULT_SYNC && n == calls);
                if (rc != MARBLE_OK) {
                    failed_ops++;
                    if (cleanup)
                        FAIL("%s: a failed cleanup after the edit failed the operation: %s", ctx,
                             err.message);
                    /* a failed sync reads as EIO afterwards, whatever the first error was */
                    if (rc != code_of(errnos[w]) && rc != MARBLE_ERR_IO)
                        FAIL("%s: returned %s: %s", ctx, marble_status_name(rc), err.message);
                    if (!err.message[0]) FAIL("%s: an error without a message", ctx);
                } else if (!cleanup) {
                    FAIL("%s: the operation succeeded", ctx);
                }
                char when[400];
                snprintf(when, sizeof when, "%s: reading the failed database", ctx);
                expect_state(db, &m, when);
                marble_error_clear(&err);
                rc = marble_db_close(db, &err);
                if (rc != MARBLE_OK && !err.message[0])
                    FAIL("%s: close failed without a message", ctx);
                reopen_and_check(&e, name, &m, &rng, next_op, ctx);
            }
    }
    fprintf(stderr, "%s sweep: %zu injected failures, %zu failed the operation\n",
            compaction ? "compaction" : "flush", total, failed_ops);
    ASSERT_GT_INT(failed_ops, 10);
    fenv_close(&e);
}

TEST(db_fault_flush_sweep)
{
    sweep(0);
}

TEST(db_fault_compaction_sweep)
{
    sweep(1);
}

/* Writes with background flushes and compactions running, crashes at op `at`, reopens. */
static void crash_at(fenv *e, int run, marble_sync_mode sync, uint64_t at, int settle)
{
    char uri[64], puri[64];
    snprintf(uri, sizeof uri, "fault://c%d", run);
    snprintf(puri, sizeof puri, "mem://c%d", run);
    marble_db_options o = fault_opts(e->fs, sync);
    o.write_buffer_size = 32 << 10;
    o.disable_auto_compaction = 0;
    o.level0_compaction_trigger = 2;
    o.wal_segment_size = 24 << 10;
    o.background_threads = 2;
    marble_db *db = NULL;
    marble_error err = {0};
    if (marble_db_open(uri, &o, &db, &err) != MARBLE_OK) FAIL("open: %s", err.message);
    if (wl_create_table(db, &err) != MARBLE_OK) FAIL("create table: %s", err.message);
    static wl_model m;
    memset(&m, 0, sizeof m);
    uint64_t rng = wl_seed(SEED, (uint32_t)run, 0);
    run_ops(db, &m, &rng, 0, at);
    if (settle == 1 && marble_db_flush(db, &err) != MARBLE_OK) FAIL("flush: %s", err.message);
    if (settle == 2 && marble_db_compact(db, NULL, &err) != MARBLE_OK)
        FAIL("compact: %s", err.message);
    if (marble_fault_crash(e->fault, &err) != MARBLE_OK) FAIL("crash: %s", err.message);
    marble_error_clear(&err);
    int rc = marble_db_close(db, &err); /* fails ("crashed") or not: it must not crash */
    if (rc != MARBLE_OK && !err.message[0]) FAIL("close after the crash: no message");

    o.create_if_missing = 0;
    rc = marble_db_open(puri, &o, &db, &err);
    if (rc != MARBLE_OK)
        FAIL("run %d (%s, crash after %" PRIu64 " writes): reopen: %s (%d)", run,
             sync == MARBLE_SYNC_NONE ? "NONE" : "EVERY", at, err.message, rc);
    wl_model obs;
    char why[1024];
    if (wl_read(db, &obs, why, sizeof why) != 0)
        FAIL("run %d: after the crash at %" PRIu64 ": %s", run, at, why);
    if (sync != MARBLE_SYNC_NONE) {
        if (wl_diff(&obs, &m, 0, why, sizeof why))
            FAIL("run %d: crash after %" PRIu64 " acknowledged writes: %s", run, at, why);
    } else {
        /* some prefix of the writes */
        static wl_model p;
        memset(&p, 0, sizeof p);
        uint64_t r2 = wl_seed(SEED, (uint32_t)run, 0);
        uint64_t k = 0;
        for (;; k++) {
            if (!wl_diff(&obs, &p, 0, why, sizeof why)) break;
            if (k == at) FAIL("run %d: the state after the crash is no prefix of the writes", run);
            wl_op op;
            wl_gen(&r2, wl_version(0, k), &op);
            wl_apply(&p, 0, &op);
        }
        m = obs;
        fprintf(stderr, "run %d (NONE): %" PRIu64 " of %" PRIu64 " writes survived\n", run, k, at);
    }
    if (marble_db_compact(db, NULL, &err) != MARBLE_OK) FAIL("compact: %s", err.message);
    expect_state(db, &m, "after the crash and a compaction");
    if (marble_db_close(db, &err) != MARBLE_OK) FAIL("close: %s", err.message);
}

TEST(db_fault_crash_sync_every)
{
    fenv e;
    fenv_open(&e);
    static const uint64_t at[] = {0, 1, 37, 150, 400, 900, 1500};
    int run = 0;
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        for (int settle = 0; settle < 3; settle++)
            crash_at(&e, run++, MARBLE_SYNC_EVERY, at[i], settle);
    fenv_close(&e);
}

TEST(db_fault_crash_sync_none)
{
    fenv e;
    fenv_open(&e);
    static const uint64_t at[] = {0, 37, 400, 1500};
    int run = 100;
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        for (int settle = 0; settle < 3; settle++)
            crash_at(&e, run++, MARBLE_SYNC_NONE, at[i], settle);
    fenv_close(&e);
}
