/*
 * The VFS conformance suite: one set of checks that every backend must pass, respecting the
 * capability bits it declares. Include it in a test file and call vfs_conformance(fs, base) with
 * a directory URI the backend can use freely (it is created).
 *
 * A backend without RANDOM_READ and RANDOM_WRITE (a stream backend, such as compression) is
 * never opened for READ and WRITE at once: its files are written through a write-only handle and
 * read back through a read-only one, sequentially. Sizes from stat are compared only with
 * RANDOM_READ (otherwise they need not be the content's size); contents are compared always.
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

/* Reads `f` from offset 0 to its end in reads of `step` bytes, each at the offset the previous
 * one ended (so streams can serve it), and compares with expect[0, n). */
static void conf_read_seq(marble_file *f, const unsigned char *expect, size_t n, size_t step)
{
    unsigned char *buf = malloc(step);
    ASSERT_NOT_NULL(buf);
    size_t pos = 0, got;
    for (;;) {
        CONF_OK(marble_file_read(f, pos, buf, step, &got, &e_));
        ASSERT_LE_INT(got, n - pos);
        if (memcmp(buf, expect + pos, got) != 0) FAIL("content differs in [%zu, +%zu)", pos, got);
        pos += got;
        if (got < step) break;
    }
    ASSERT_EQ_INT(pos, n);
    CONF_OK(marble_file_read(f, pos, buf, step, &got, &e_));
    ASSERT_EQ_INT(got, 0);
    free(buf);
}

static void conf_expect_content(marble_fs *fs, const char *uri, const void *expect, size_t n)
{
    void *data;
    size_t got;
    CONF_OK(marble_fs_read_all(fs, uri, &data, &got, &e_));
    ASSERT_EQ_INT(got, n);
    ASSERT_TRUE(!memcmp(data, expect, n));
    free(data);
}

static void vfs_conformance(marble_fs *fs, const char *base)
{
    marble_error err;
    marble_vfs *v;
    const char *path;
    CONF_OK(marble_fs_resolve(fs, base, &v, &path, &e_));
    uint32_t caps = v->caps;
    const int rw = (caps & MARBLE_CAP_RANDOM_READ) && (caps & MARBLE_CAP_RANDOM_WRITE);

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

    /* Write, positional read, gaps, EOF. Without random access: write, then read back in order
     * through a read-only handle. f1_data is what f1 holds afterwards. */
    const char *f1 = conf_uri(base, "a/f1");
    const char *f1_data = "hello";
    size_t f1_size = 5;
    marble_file *f;
    const int f1_flags = (rw ? MARBLE_OPEN_READ : 0) | MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE;
    CONF_OK(marble_fs_open(fs, f1, f1_flags, &f, &e_));
    ASSERT_EQ_STR(marble_file_uri(f), f1);
    CONF_OK(marble_file_write(f, 0, "hello", 5, &e_));
    if (rw) {
        f1_data = "hello\0\0\0\0\0world";
        f1_size = 15;
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
        f1_data = "hel\0\0\0";
        f1_size = 6;
        CONF_OK(marble_file_truncate(f, 3, &e_));
        uint64_t size;
        CONF_OK(marble_file_size(f, &size, &e_));
        ASSERT_EQ_INT(size, 3);
        CONF_OK(marble_file_truncate(f, 6, &e_));
        if (rw) {
            char buf[8];
            CONF_OK(marble_file_read_exact(f, 0, buf, 6, &e_));
            ASSERT_TRUE(!memcmp(buf, "hel\0\0\0", 6));
        }
    }
    CONF_OK(marble_file_close(f, &e_));
    if (!rw) {
        CONF_OK(marble_fs_open(fs, f1, MARBLE_OPEN_READ, &f, &e_));
        ASSERT_EQ_STR(marble_file_uri(f), f1);
        char buf[32];
        size_t got;
        CONF_OK(marble_file_read(f, 0, buf, sizeof buf, &got, &e_));
        ASSERT_EQ_INT(got, f1_size);
        ASSERT_TRUE(!memcmp(buf, f1_data, f1_size));
        CONF_OK(marble_file_read(f, f1_size, buf, 10, &got, &e_));
        ASSERT_EQ_INT(got, 0);
        ASSERT_EQ_INT(marble_file_read_exact(f, f1_size, buf, 10, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, "short read");
        CONF_OK(marble_file_close(f, &e_));
    }

    /* Append. */
    if (caps & MARBLE_CAP_APPEND) {
        const char *f2 = conf_uri(base, "a/log");
        CONF_OK(marble_fs_open(fs, f2, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_APPEND,
                               &f, &e_));
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
        if (caps & MARBLE_CAP_RANDOM_READ) ASSERT_EQ_INT(st.size, 0);
        conf_expect_content(fs, f2, "", 0);
    }

    /* Open errors. */
    ASSERT_EQ_INT(marble_fs_open(fs, f1,
                                 MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_EXCLUSIVE, &f,
                                 &err),
                  MARBLE_ERR_EXISTS);
    ASSERT_CONTAINS(err.message, "f1");
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "a/missing"), MARBLE_OPEN_READ, &f, &err),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_CONTAINS(err.message, "missing");
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "a/b"), MARBLE_OPEN_READ, &f, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "directory");
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "nodir/x"),
                                 MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &f, &err),
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
    ASSERT_FALSE(st.is_dir);
    if (caps & MARBLE_CAP_RANDOM_READ) ASSERT_EQ_INT(st.size, f1_size);
    conf_expect_content(fs, f3, f1_data, f1_size);
    ASSERT_EQ_INT(marble_fs_rename(fs, conf_uri(base, "a/none"), f1, 0, &err),
                  MARBLE_ERR_NOT_FOUND);
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
    } else {
        /* The same content as a stream: written in uneven pieces, read back in order, with a
         * map (a copy, read at the stream position) in the middle. */
        size_t big = 8u << 20;
        unsigned char *data = malloc(big);
        conf_fill(data, big, 42);
        const char *fb = conf_uri(base, "a/big");
        const int wflags = MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE;
        CONF_OK(marble_fs_open(fs, fb, wflags, &f, &e_));
        size_t off = 0;
        for (int k = 0; off < big; k++) {
            size_t len = (size_t)1 << (k % 21);
            if (len > big - off) len = big - off;
            if ((k & 1) && (caps & MARBLE_CAP_APPEND))
                CONF_OK(marble_file_append(f, data + off, len, &e_));
            else
                CONF_OK(marble_file_write(f, off, data + off, len, &e_));
            off += len;
        }
        if (caps & MARBLE_CAP_SYNC) CONF_OK(marble_file_sync(f, MARBLE_SYNC_DATA, &e_));
        CONF_OK(marble_file_close(f, &e_));
        CONF_OK(marble_fs_open(fs, fb, MARBLE_OPEN_READ, &f, &e_));
        unsigned char *buf = malloc(1 << 20);
        size_t pos = 0, got;
        while (pos < 12345) {
            CONF_OK(marble_file_read(f, pos, buf, 12345 - pos, &got, &e_));
            ASSERT_GT_INT(got, 0);
            ASSERT_TRUE(!memcmp(buf, data + pos, got));
            pos += got;
        }
        marble_mapping *m;
        CONF_OK(marble_file_map(f, pos, 100000, &m, &e_));
        ASSERT_EQ_INT(marble_mapping_size(m), 100000);
        ASSERT_EQ_INT(marble_mapping_is_mapped(m), (caps & MARBLE_CAP_MAP) ? 1 : 0);
        ASSERT_TRUE(!memcmp(marble_mapping_data(m), data + pos, 100000));
        pos += 100000;
        for (size_t step = 1; pos < big; step = step * 7 % 1000003 + 1) {
            size_t want = step < big - pos ? step : big - pos;
            CONF_OK(marble_file_read(f, pos, buf, want, &got, &e_));
            ASSERT_EQ_INT(got, want);
            if (memcmp(buf, data + pos, got) != 0) FAIL("%s differs in [%zu, +%zu)", fb, pos, got);
            pos += got;
        }
        CONF_OK(marble_file_read(f, pos, buf, 1 << 20, &got, &e_));
        ASSERT_EQ_INT(got, 0);
        CONF_OK(marble_file_close(f, &e_));
        ASSERT_TRUE(!memcmp(marble_mapping_data(m), data + 12345, 100000));
        marble_mapping_release(m);
        CONF_OK(marble_fs_open(fs, fb, MARBLE_OPEN_READ, &f, &e_));
        conf_read_seq(f, data, big, 1 << 20);
        CONF_OK(marble_file_close(f, &e_));
        CONF_OK(marble_fs_remove(fs, fb, &e_));
        free(buf);
        free(data);
    }
    CONF_OK(marble_fs_remove(fs, conf_uri(base, "a/b"), &e_));
    marble_fs_stats fst;
    marble_fs_get_stats(fs, &fst);
    ASSERT_EQ_INT(fst.open_files, 0);
    ASSERT_EQ_INT(fst.open_mappings, 0);
}

#endif
