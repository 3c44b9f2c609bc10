/* A database on a backend with object-store capabilities (no appends, no atomic renames): the
 * manifest runs in object-store mode, the WAL lives at wal_uri, and everything survives a
 * reopen. The backend here is the memory backend with those capability bits cleared, so the db
 * takes the same paths it takes on S3 (tests/remote covers a real S3-compatible server). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/db.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

/* "objmem": the memory backend, declaring no APPEND and no ATOMIC_RENAME. */
static marble_vfs *g_parent;

static int o_open(marble_vfs *v, const char *p, int flags, marble_file **out, marble_error *err)
{
    (void)v;
    return g_parent->open(g_parent, p, flags, out, err);
}
static int o_stat(marble_vfs *v, const char *p, marble_stat *out, marble_error *err)
{
    (void)v;
    return g_parent->stat(g_parent, p, out, err);
}
static int o_list(marble_vfs *v, const char *d, marble_dirent_fn fn, void *ud, marble_error *err)
{
    (void)v;
    return g_parent->list(g_parent, d, fn, ud, err);
}
static int o_mkdir(marble_vfs *v, const char *p, marble_error *err)
{
    (void)v;
    return g_parent->mkdir(g_parent, p, err);
}
static int o_remove(marble_vfs *v, const char *p, marble_error *err)
{
    (void)v;
    return g_parent->remove(g_parent, p, err);
}
static int o_rename(marble_vfs *v, const char *a, const char *b, marble_error *err)
{
    (void)v;
    return g_parent->rename(g_parent, a, b, err);
}
static int o_sync_dir(marble_vfs *v, const char *p, marble_error *err)
{
    (void)v;
    return g_parent->sync_dir(g_parent, p, err);
}
static int o_control(marble_vfs *v, int op, void *arg)
{
    (void)v;
    return g_parent->control(g_parent, op, arg);
}
static void o_destroy(marble_vfs *v)
{
    (void)v;
}

static marble_vfs g_obj = {
    MARBLE_VFS_VERSION, "objmem", 0,          NULL,      o_open,   o_stat, o_list, o_mkdir,
    o_remove,           o_rename, o_sync_dir, o_control, o_destroy};

static marble_fs *fs_with_objmem(void)
{
    marble_error err = {0};
    marble_fs *fs;
    CHECK_OK(marble_fs_create(&fs, &err));
    g_parent = marble_fs_backend(fs, "mem");
    g_obj.caps = g_parent->caps & ~(uint32_t)(MARBLE_CAP_APPEND | MARBLE_CAP_ATOMIC_RENAME);
    CHECK_OK(marble_fs_register(fs, "objmem", &g_obj, &err));
    return fs;
}

static void put_kv(marble_db *db, int from, int to, int version)
{
    marble_error err = {0};
    for (int i = from; i < to; i++) {
        char k[32], v[32];
        int kl = snprintf(k, sizeof k, "key%06d", i),
            vl = snprintf(v, sizeof v, "v%d-%d", i, version);
        CHECK_OK(marble_db_kv_put(db, k, (size_t)kl, v, (size_t)vl, NULL, &err));
    }
}

static void check_kv(marble_db *db, int from, int to, int version)
{
    marble_error err = {0};
    for (int i = from; i < to; i++) {
        char k[32], v[32];
        int kl = snprintf(k, sizeof k, "key%06d", i),
            vl = snprintf(v, sizeof v, "v%d-%d", i, version);
        void *got;
        size_t glen;
        CHECK_OK(marble_db_kv_get(db, NULL, k, (size_t)kl, &got, &glen, &err));
        if (glen != (size_t)vl || memcmp(got, v, glen) != 0)
            FAIL("key %d: got %.*s, want %s", i, (int)glen, (char *)got, v);
        marble_free(got);
    }
}

static int count_manifests(void *ud, const char *name, int is_dir)
{
    (void)is_dir;
    int *n = ud;
    if (strncmp(name, "MANIFEST-", 9) == 0) n[0]++;
    if (strcmp(name, "CURRENT") == 0 || strcmp(name, "LOCK") == 0) n[1]++;
    return 0;
}

TEST(db_object_store_backend)
{
    marble_error err = {0};
    marble_fs *fs = fs_with_objmem();
    marble_db_options o;
    marble_db_options_init(&o);
    o.fs = fs;
    o.write_buffer_size = 64 << 10;
    o.target_file_size = 64 << 10;
    o.level1_max_bytes = 256 << 10;
    marble_db *db;
    ASSERT_EQ_INT(marble_db_open("objmem://bucket/db", &o, &db, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "wal_uri");
    o.wal_uri = "mem://local/wal";
    CHECK_OK(marble_db_open("objmem://bucket/db", &o, &db, &err));
    put_kv(db, 0, 3000, 1);
    CHECK_OK(marble_db_flush(db, &err));
    put_kv(db, 1000, 2000, 2); /* in the WAL only */
    CHECK_OK(marble_db_close(db, &err));
    int n[2] = {0, 0};
    CHECK_OK(marble_fs_list(fs, "objmem://bucket/db", count_manifests, n, &err));
    ASSERT_EQ_INT(n[0], 1);
    ASSERT_EQ_INT(n[1], 0);

    CHECK_OK(marble_db_open("objmem://bucket/db", &o, &db, &err));
    check_kv(db, 0, 1000, 1);
    check_kv(db, 1000, 2000, 2);
    check_kv(db, 2000, 3000, 1);
    CHECK_OK(marble_db_compact(db, NULL, &err));
    put_kv(db, 0, 500, 3);
    CHECK_OK(marble_db_close(db, &err));
    CHECK_OK(marble_db_open("objmem://bucket/db", &o, &db, &err));
    check_kv(db, 0, 500, 3);
    check_kv(db, 500, 1000, 1);
    check_kv(db, 1000, 2000, 2);
    CHECK_OK(marble_db_close(db, &err));
    CHECK_OK(marble_fs_destroy(fs, &err));
}
