/*
 * The VFS conformance suite: one set of checks that every backend must pass, respecting the
 * capability bits it declares. Include it in a test file and call vfs_conformance(fs, base) with
 * a directory URI the backend can use freely (it is created).
 */
#ifndef MARBLE_TEST_VFS_CONFORMANCE_H
#define MARBLE_TEST_VFS_CONFORMANCE_H

#include <pthread.h>
#include <stdlib.h>

#include "marble/vfs.h"
#include "marble_test.h"

#define CONF_OK(expr)                                                                              \
    do {                                                                                           \
        marble_error e_;                                                                           \
        marble_error_clear(&e_);                                                                   \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s -> %s: %s", #expr, marble_status_name(rc_), e_.message);    \
    } while (0)

static char *conf_uri(const char *base, const char *name)
{
    static __thread char buf[8][1024];
    static __thread int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", base, name);
    return b;
}

static void conf_fill(unsigned char *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (unsigned char)(seed >> 56);
    }
}

typedef struct conf_names {
    char names[32][64];
    int dirs[32];
    int n;
} conf_names;

static int conf_collect(void *ud, const char *name, int is_dir)
{
    conf_names *c = ud;
    if (c->n < 32) {
        snprintf(c->names[c->n], sizeof c->names[0], "%s", name);
        c->dirs[c->n] = is_dir;
        c->n++;
    }
    return 0;
}

static int conf_has(const conf_names *c, const char *name, int is_dir)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->names[i], name)) return c->dirs[i] == is_dir;
    return 0;
}

typedef struct conf_reader {
    marble_file *f;
    const unsigned char *expect;
    size_t size;
    uint64_t seed;
    int bad;
} conf_reader;

static void *conf_read_thread(void *p)
{
    conf_reader *r = p;
    unsigned char buf[4096];
    uint64_t x = r->seed;
    for (int i = 0; i < 300; i++) {
        x = x * 6364136223846793005ull + 1;
        size_t off = (size_t)(x >> 20) % (r->size - sizeof buf);
        size_t got = 0;
        if (marble_file_read(r->f, off, buf, sizeof buf, &got, NULL) != MARBLE_OK ||
            got != sizeof buf || memcmp(buf, r->expect + off, sizeof buf) != 0)
            r->bad++;
    }
    return NULL;
}

static void vfs_conformance(marble_fs *fs, const char *base)
{
    marble_error err;
    marble_vfs *v;
    const char *path;
    CONF_OK(marble_fs_resolve(fs, base, &v, &path, &e_));
    uint32_t caps = v->caps;

    /* Directories. */
    CONF_OK(marble_fs_mkdir(fs, conf_uri(base, "a/b/c"), 1, &e_));
    CONF_OK(marble_fs_mkdir(fs, conf_uri(base, "a/b/c"), 1, &e_)); /* idempotent */
    ASSERT_EQ_INT(marble_fs_mkdir(fs, conf_uri(base, "a"), 0, &err), MARBLE_ERR_EXISTS);
    marble_stat st;
    CONF_OK(marble_fs_stat(fs, conf_uri(base, "a/b"), &st, &e_));
    ASSERT_TRUE(st.is_dir);
    int exists = -1;
    CONF_OK(marble_fs_exists(fs, conf_uri(base, "a/nope"), &exists, &e_));
    ASSERT_EQ_INT(exists, 0);

    /* Write, positional read, gaps, EOF. */
    const char *f1 = conf_uri(base, "a/f1");
    marble_file *f;
    CONF_OK(marble_fs_open(fs, f1, MARBLE_OPEN_READ | MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &f, &e_));
    ASSERT_EQ_STR(marble_file_uri(f), f1);
    CONF_OK(marble_file_write(f, 0, "hello", 5, &e_));
    if (caps & MARBLE_CAP_RANDOM_WRITE) {
        CONF_OK(marble_file_write(f, 10, "world", 5, &e_));
        uint64_t size;
        CONF_OK(marble_file_size(f, &size, &e_));
        ASSERT_EQ_INT(size, 15);
        char buf[32];
        size_t got;
        CONF_OK(marble_file_read(f, 0, buf, sizeof buf, &got, &e_));
        ASSERT_EQ_INT(got, 15);
        ASSERT_TRUE(!memcmp(buf, "hello\0\0\0\0\0world", 15));
        CONF_OK(marble_file_read(f, 12, buf, 10, &got, &e_));
        ASSERT_EQ_INT(got, 3);
        CONF_OK(marble_file_read(f, 15, buf, 10, &got, &e_));
        ASSERT_EQ_INT(got, 0);
        CONF_OK(marble_file_read(f, 1000, buf, 10, &got, &e_));
        ASSERT_EQ_INT(got, 0);
        ASSERT_EQ_INT(marble_file_read_exact(f, 10, buf, 10, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, "short read");
    }
    if (caps & MARBLE_CAP_SYNC) {
        CONF_OK(marble_file_sync(f, MARBLE_SYNC_DATA, &e_));
        CONF_OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    }
    if (caps & MARBLE_CAP_TRUNCATE) {
        CONF_OK(marble_file_truncate(f, 3, &e_));
        uint64_t size;
        CONF_OK(marble_file_size(f, &size, &e_));
        ASSERT_EQ_INT(size, 3);
        CONF_OK(marble_file_truncate(f, 6, &e_));
        char buf[8];
        CONF_OK(marble_file_read_exact(f, 0, buf, 6, &e_));
        ASSERT_TRUE(!memcmp(buf, "hel\0\0\0", 6));
    }
    CONF_OK(marble_file_close(f, &e_));

    /* Append. */
    if (caps & MARBLE_CAP_APPEND) {
        const char *f2 = conf_uri(base, "a/log");
        CONF_OK(marble_fs_open(fs, f2, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_APPEND, &f, &e_));
        CONF_OK(marble_file_append(f, "abc", 3, &e_));
        CONF_OK(marble_file_append(f, "def", 3, &e_));
        CONF_OK(marble_file_close(f, &e_));
        void *data;
        size_t n;
        CONF_OK(marble_fs_read_all(fs, f2, &data, &n, &e_));
        ASSERT_EQ_INT(n, 6);
        ASSERT_TRUE(!memcmp(data, "abcdef", 6));
        free(data);
        /* Reopen without TRUNCATE keeps the content; with it, empties it. */
        CONF_OK(marble_fs_open(fs, f2, MARBLE_OPEN_WRITE | MARBLE_OPEN_APPEND, &f, &e_));
        CONF_OK(marble_file_append(f, "g", 1, &e_));
        CONF_OK(marble_file_close(f, &e_));
        CONF_OK(marble_fs_read_all(fs, f2, &data, &n, &e_));
        ASSERT_EQ_INT(n, 7);
        free(data);
        CONF_OK(marble_fs_open(fs, f2, MARBLE_OPEN_WRITE | MARBLE_OPEN_TRUNCATE, &f, &e_));
        CONF_OK(marble_file_close(f, &e_));
        CONF_OK(marble_fs_stat(fs, f2, &st, &e_));
        ASSERT_EQ_INT(st.size, 0);
    }

    /* Open errors. */
    ASSERT_EQ_INT(marble_fs_open(fs, f1, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_EXCLUSIVE, &f, &err),
                  MARBLE_ERR_EXISTS);
    ASSERT_CONTAINS(err.message, "f1");
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "a/missing"), MARBLE_OPEN_READ, &f, &err),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_CONTAINS(err.message, "missing");
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "a/b"), MARBLE_OPEN_READ, &f, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "directory");
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "nodir/x"), MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &f, &err),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_EQ_INT(marble_fs_open(fs, f1, 0, &f, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_fs_open(fs, f1, MARBLE_OPEN_READ | MARBLE_OPEN_TRUNCATE, &f, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);

    /* Listing. */
    if (caps & MARBLE_CAP_LIST) {
        conf_names names;
        memset(&names, 0, sizeof names);
        CONF_OK(marble_fs_list(fs, conf_uri(base, "a"), conf_collect, &names, &e_));
        ASSERT_TRUE(conf_has(&names, "b", 1));
        ASSERT_TRUE(conf_has(&names, "f1", 0));
        ASSERT_EQ_INT(names.n, (caps & MARBLE_CAP_APPEND) ? 3 : 2);
        ASSERT_EQ_INT(marble_fs_list(fs, conf_uri(base, "zzz"), conf_collect, &names, &err),
                      MARBLE_ERR_NOT_FOUND);
    }

    /* Rename, replacing a target; remove. */
    const char *f3 = conf_uri(base, "a/b/f3");
    CONF_OK(marble_fs_write_all(fs, f3, "three", 5, 1, &e_));
    CONF_OK(marble_fs_rename(fs, f1, f3, 1, &e_));
    CONF_OK(marble_fs_exists(fs, f1, &exists, &e_));
    ASSERT_EQ_INT(exists, 0);
    CONF_OK(marble_fs_stat(fs, f3, &st, &e_));
    ASSERT_EQ_INT(st.size, (caps & MARBLE_CAP_TRUNCATE) ? 6 : (caps & MARBLE_CAP_RANDOM_WRITE) ? 15 : 5);
    ASSERT_EQ_INT(marble_fs_rename(fs, conf_uri(base, "a/none"), f1, 0, &err), MARBLE_ERR_NOT_FOUND);
    ASSERT_NE_INT(marble_fs_remove(fs, conf_uri(base, "a/b"), &err), MARBLE_OK); /* not empty */
    CONF_OK(marble_fs_remove(fs, f3, &e_));
    CONF_OK(marble_fs_remove(fs, conf_uri(base, "a/b/c"), &e_));
    ASSERT_EQ_INT(marble_fs_remove(fs, f3, &err), MARBLE_ERR_NOT_FOUND);
    if (caps & MARBLE_CAP_SYNC_DIR) CONF_OK(marble_fs_sync_dir(fs, conf_uri(base, "a"), &e_));

    /* A large file: random reads, concurrent positional reads, a removed file stays readable
     * through an open handle. */
    if (caps & MARBLE_CAP_RANDOM_READ) {
        size_t big = 8u << 20;
        unsigned char *data = malloc(big);
        conf_fill(data, big, 42);
        const char *fb = conf_uri(base, "a/big");
        CONF_OK(marble_fs_write_all(fs, fb, data, big, 0, &e_));
        CONF_OK(marble_fs_open(fs, fb, MARBLE_OPEN_READ, &f, &e_));
        conf_reader rs[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            rs[i] = (conf_reader){f, data, big, (uint64_t)i + 1, 0};
            ASSERT_OK(pthread_create(&th[i], NULL, conf_read_thread, &rs[i]));
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            ASSERT_EQ_INT(rs[i].bad, 0);
        }
        /* Mappings: whole file and a range; they outlive the handle. */
        marble_mapping *m1, *m2;
        CONF_OK(marble_file_map(f, 0, 0, &m1, &e_));
        CONF_OK(marble_file_map(f, 12345, 100000, &m2, &e_));
        ASSERT_EQ_INT(marble_mapping_size(m1), big);
        ASSERT_EQ_INT(marble_mapping_size(m2), 100000);
        ASSERT_EQ_INT(marble_mapping_is_mapped(m1), (caps & MARBLE_CAP_MAP) ? 1 : 0);
        ASSERT_EQ_INT(marble_fs_remove(fs, fb, &err), MARBLE_OK);
        CONF_OK(marble_file_close(f, &e_));
        ASSERT_TRUE(!memcmp(marble_mapping_data(m1), data, big));
        ASSERT_TRUE(!memcmp(marble_mapping_data(m2), data + 12345, 100000));
        marble_mapping_retain(m2);
        marble_mapping_release(m2);
        ASSERT_TRUE(!memcmp(marble_mapping_data(m2), data + 12345, 100000));
        marble_mapping_release(m1);
        marble_mapping_release(m2);
        free(data);
    }
    CONF_OK(marble_fs_remove(fs, conf_uri(base, "a/b"), &e_));
    marble_fs_stats fst;
    marble_fs_get_stats(fs, &fst);
    ASSERT_EQ_INT(fst.open_files, 0);
    ASSERT_EQ_INT(fst.open_mappings, 0);
}

#endif
