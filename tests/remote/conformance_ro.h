/*
 * The read-only VFS conformance checks, for backends without writes (HTTP): the fixture files
 * are written by other means (conf_ro_write_fixture into a local directory that a server then
 * serves), and vfs_conformance_ro(fs, base) checks, through the backend at `base` (the URI of
 * that directory): stat sizes, positional reads (gaps, short reads at the end, past the end),
 * read_exact's short read, open errors (missing file: MARBLE_ERR_NOT_FOUND naming it; any write
 * flag: MARBLE_ERR_UNSUPPORTED), every mutating operation failing with MARBLE_ERR_UNSUPPORTED
 * (or succeeding where the capability bit says so), concurrent positional reads of one handle,
 * mappings (copies unless MARBLE_CAP_MAP) that outlive the handle, and no handle left open.
 */
#ifndef MARBLE_TEST_REMOTE_CONFORMANCE_RO_H
#define MARBLE_TEST_REMOTE_CONFORMANCE_RO_H

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "../vfs/conformance.h"
#include "marble/vfs.h"
#include "marble_test.h"

/* The shared helpers come from the read-write suite, whose entry point is not used here. */
static void (*const conf_ro_unused_)(marble_fs *, const char *)
    __attribute__((unused)) = vfs_conformance;

#define CONF_RO_BIG ((size_t)3 << 20)

/* Writes the fixture into the local directory `dir`: hello ("hello world"), empty (0 bytes),
 * big (CONF_RO_BIG bytes, conf_fill seed 42), sub/nested ("nested"). */
static void conf_ro_write_fixture(const char *dir)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/sub", dir);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) FAIL("mkdir %s", p);
    struct {
        const char *name;
        const char *data;
    } small[] = {{"hello", "hello world"}, {"empty", ""}, {"sub/nested", "nested"}};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, small[i].name);
        FILE *f = fopen(p, "wb");
        if (!f) FAIL("fopen %s", p);
        fputs(small[i].data, f);
        fclose(f);
    }
    unsigned char *data = malloc(CONF_RO_BIG);
    ASSERT_NOT_NULL(data);
    conf_fill(data, CONF_RO_BIG, 42);
    snprintf(p, sizeof p, "%s/big", dir);
    FILE *f = fopen(p, "wb");
    if (!f) FAIL("fopen %s", p);
    if (fwrite(data, 1, CONF_RO_BIG, f) != CONF_RO_BIG) FAIL("fwrite %s", p);
    fclose(f);
    free(data);
}

static void vfs_conformance_ro(marble_fs *fs, const char *base)
{
    marble_error err;
    marble_vfs *v;
    const char *path;
    CONF_OK(marble_fs_resolve(fs, base, &v, &path, &e_));
    const uint32_t caps = v->caps;
    ASSERT_EQ_INT(caps & (MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_APPEND | MARBLE_CAP_TRUNCATE), 0);

    /* stat. */
    marble_stat st;
    CONF_OK(marble_fs_stat(fs, conf_uri(base, "hello"), &st, &e_));
    ASSERT_FALSE(st.is_dir);
    if (caps & MARBLE_CAP_RANDOM_READ) ASSERT_EQ_INT(st.size, 11);
    CONF_OK(marble_fs_stat(fs, conf_uri(base, "empty"), &st, &e_));
    if (caps & MARBLE_CAP_RANDOM_READ) ASSERT_EQ_INT(st.size, 0);
    CONF_OK(marble_fs_stat(fs, conf_uri(base, "big"), &st, &e_));
    if (caps & MARBLE_CAP_RANDOM_READ) ASSERT_EQ_INT(st.size, CONF_RO_BIG);
    ASSERT_EQ_INT(marble_fs_stat(fs, conf_uri(base, "nope"), &st, &err), MARBLE_ERR_NOT_FOUND);
    ASSERT_CONTAINS(err.message, "nope");
    int exists = -1;
    CONF_OK(marble_fs_exists(fs, conf_uri(base, "sub/nested"), &exists, &e_));
    ASSERT_EQ_INT(exists, 1);
    CONF_OK(marble_fs_exists(fs, conf_uri(base, "sub/nope"), &exists, &e_));
    ASSERT_EQ_INT(exists, 0);

    /* Reads. */
    marble_file *f;
    char buf[64];
    size_t got;
    CONF_OK(marble_fs_open(fs, conf_uri(base, "hello"), MARBLE_OPEN_READ, &f, &e_));
    ASSERT_EQ_STR(marble_file_uri(f), conf_uri(base, "hello"));
    if (caps & MARBLE_CAP_RANDOM_READ) {
        uint64_t size;
        CONF_OK(marble_file_size(f, &size, &e_));
        ASSERT_EQ_INT(size, 11);
        CONF_OK(marble_file_read(f, 6, buf, 3, &got, &e_));
        ASSERT_EQ_INT(got, 3);
        ASSERT_TRUE(!memcmp(buf, "wor", 3));
        CONF_OK(marble_file_read(f, 8, buf, 10, &got, &e_));
        ASSERT_EQ_INT(got, 3);
        ASSERT_TRUE(!memcmp(buf, "rld", 3));
        CONF_OK(marble_file_read(f, 11, buf, 10, &got, &e_));
        ASSERT_EQ_INT(got, 0);
        CONF_OK(marble_file_read(f, 1000, buf, 10, &got, &e_));
        ASSERT_EQ_INT(got, 0);
        CONF_OK(marble_file_read(f, 0, buf, 0, &got, &e_));
        ASSERT_EQ_INT(got, 0);
        ASSERT_EQ_INT(marble_file_read_exact(f, 5, buf, 10, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, "short read");
    }
    conf_read_seq(f, (const unsigned char *)"hello world", 11, 4);
    /* Every mutation through the handle fails cleanly. */
    ASSERT_NE_INT(marble_file_write(f, 0, "x", 1, &err), MARBLE_OK);
    ASSERT_NE_INT(marble_file_append(f, "x", 1, &err), MARBLE_OK);
    ASSERT_NE_INT(marble_file_truncate(f, 0, &err), MARBLE_OK);
    CONF_OK(marble_file_close(f, &e_));
    CONF_OK(marble_fs_open(fs, conf_uri(base, "empty"), MARBLE_OPEN_READ, &f, &e_));
    CONF_OK(marble_file_read(f, 0, buf, sizeof buf, &got, &e_));
    ASSERT_EQ_INT(got, 0);
    CONF_OK(marble_file_close(f, &e_));
    conf_expect_content(fs, conf_uri(base, "sub/nested"), "nested", 6);
    conf_expect_content(fs, conf_uri(base, "empty"), "", 0);

    /* Open errors. */
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "missing"), MARBLE_OPEN_READ, &f, &err),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_CONTAINS(err.message, "missing");
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "hello"), MARBLE_OPEN_WRITE, &f, &err),
                  MARBLE_ERR_UNSUPPORTED);
    ASSERT_EQ_INT(
        marble_fs_open(fs, conf_uri(base, "new"), MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &f, &err),
        MARBLE_ERR_UNSUPPORTED);
    ASSERT_EQ_INT(marble_fs_open(fs, conf_uri(base, "hello"), 0, &f, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);

    /* Mutations of the namespace. */
    ASSERT_EQ_INT(marble_fs_mkdir(fs, conf_uri(base, "d"), 0, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_EQ_INT(marble_fs_remove(fs, conf_uri(base, "hello"), &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_EQ_INT(marble_fs_rename(fs, conf_uri(base, "hello"), conf_uri(base, "h2"), 0, &err),
                  MARBLE_ERR_UNSUPPORTED);
    ASSERT_NE_INT(marble_fs_write_all(fs, conf_uri(base, "w"), "x", 1, 0, &err), MARBLE_OK);
    if (!(caps & MARBLE_CAP_SYNC_DIR))
        ASSERT_EQ_INT(marble_fs_sync_dir(fs, base, &err), MARBLE_ERR_UNSUPPORTED);
    if (!(caps & MARBLE_CAP_LIST)) {
        conf_names names;
        memset(&names, 0, sizeof names);
        ASSERT_EQ_INT(marble_fs_list(fs, base, conf_collect, &names, &err), MARBLE_ERR_UNSUPPORTED);
    }
    CONF_OK(marble_fs_stat(fs, conf_uri(base, "hello"), &st, &e_)); /* still there */

    /* The large file: sequential, random and concurrent reads; mappings outlive the handle. */
    unsigned char *data = malloc(CONF_RO_BIG);
    ASSERT_NOT_NULL(data);
    conf_fill(data, CONF_RO_BIG, 42);
    const char *fb = conf_uri(base, "big");
    CONF_OK(marble_fs_open(fs, fb, MARBLE_OPEN_READ, &f, &e_));
    conf_read_seq(f, data, CONF_RO_BIG, 100000);
    if (caps & MARBLE_CAP_RANDOM_READ) {
        conf_reader rs[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            rs[i] = (conf_reader){f, data, CONF_RO_BIG, (uint64_t)i + 1, 0};
            ASSERT_OK(pthread_create(&th[i], NULL, conf_read_thread, &rs[i]));
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            ASSERT_EQ_INT(rs[i].bad, 0);
        }
        marble_mapping *m1, *m2;
        CONF_OK(marble_file_map(f, 0, 0, &m1, &e_));
        CONF_OK(marble_file_map(f, 12345, 100000, &m2, &e_));
        ASSERT_EQ_INT(marble_mapping_size(m1), CONF_RO_BIG);
        ASSERT_EQ_INT(marble_mapping_size(m2), 100000);
        ASSERT_EQ_INT(marble_mapping_is_mapped(m1), (caps & MARBLE_CAP_MAP) ? 1 : 0);
        marble_mapping *m3 = NULL;
        ASSERT_NE_INT(marble_file_map(f, CONF_RO_BIG - 10, 100, &m3, &err), MARBLE_OK);
        ASSERT_NULL(m3);
        CONF_OK(marble_file_close(f, &e_));
        ASSERT_TRUE(!memcmp(marble_mapping_data(m1), data, CONF_RO_BIG));
        ASSERT_TRUE(!memcmp(marble_mapping_data(m2), data + 12345, 100000));
        marble_mapping_release(m1);
        marble_mapping_release(m2);
    } else {
        CONF_OK(marble_file_close(f, &e_));
    }
    conf_expect_content(fs, fb, data, CONF_RO_BIG);
    free(data);
    marble_fs_stats fst;
    marble_fs_get_stats(fs, &fst);
    ASSERT_EQ_INT(fst.open_files, 0);
    ASSERT_EQ_INT(fst.open_mappings, 0);
}

#endif
