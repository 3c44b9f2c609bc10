/* Tests of the buffered reader and writer: write gathering, read-ahead, consistency of mixed
 * reads and writes against a model, write-back failures, on the memory and local backends. */
#include <stdlib.h>

#include "marble/vfs.h"
#include "marble_test.h"
#include "vfs_test.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static uint8_t *make_data(size_t n, uint64_t seed)
{
    uint8_t *d = malloc(n ? n : 1);
    ASSERT_NOT_NULL(d);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++)
        d[i] = (uint8_t)rng_next(&s);
    return d;
}

/* ---- a counting inner file ---------------------------------------------------------------- */

/* Forwards to a real file and counts the calls; writes fail once `budget` bytes were written. */
typedef struct counting_file {
    marble_file base;
    marble_file *real;
    uint64_t reads, writes, appends, bytes_read, syncs;
    size_t budget;
    int fail_close;
} counting_file;

static int cf_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                   marble_error *err)
{
    counting_file *c = (counting_file *)f;
    c->reads++;
    int rc = marble_file_read(c->real, off, buf, n, nread, err);
    c->bytes_read += *nread;
    return rc;
}

static int cf_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    counting_file *c = (counting_file *)f;
    c->writes++;
    if (n > c->budget) return marble_error_set(err, MARBLE_ERR_NO_SPACE, "injected ENOSPC");
    c->budget -= n;
    return marble_file_write(c->real, off, buf, n, err);
}

static int cf_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    counting_file *c = (counting_file *)f;
    c->appends++;
    if (n > c->budget) return marble_error_set(err, MARBLE_ERR_NO_SPACE, "injected ENOSPC");
    c->budget -= n;
    return marble_file_append(c->real, buf, n, err);
}

static int cf_size(marble_file *f, uint64_t *out, marble_error *err)
{
    return marble_file_size(((counting_file *)f)->real, out, err);
}

static int cf_sync(marble_file *f, int flags, marble_error *err)
{
    counting_file *c = (counting_file *)f;
    c->syncs++;
    return marble_file_sync(c->real, flags, err);
}

static int cf_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    return marble_file_truncate(((counting_file *)f)->real, size, err);
}

static int cf_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                  marble_error *err)
{
    return MARBLE_ERR_UNSUPPORTED;
}

static void cf_unmap(marble_file *f, const void *addr, size_t len, void *cookie) {}

static int cf_close(marble_file *f, marble_error *err)
{
    counting_file *c = (counting_file *)f;
    int rc = marble_file_close(c->real, err);
    if (rc == MARBLE_OK && c->fail_close)
        rc = marble_error_set(err, MARBLE_ERR_IO, "injected close error");
    free(c);
    return rc;
}

static int cf_control(marble_file *f, int op, void *arg)
{
    return marble_file_control(((counting_file *)f)->real, op, arg);
}

static const marble_file_methods cf_methods = {
    MARBLE_FILE_METHODS_VERSION,
    cf_read,
    cf_write,
    cf_append,
    cf_size,
    cf_sync,
    cf_truncate,
    cf_map,
    cf_unmap,
    cf_close,
    cf_control,
};

static counting_file *counting(marble_fs *fs, const char *uri, int flags)
{
    marble_error err;
    counting_file *c = calloc(1, sizeof *c);
    ASSERT_NOT_NULL(c);
    if (marble_fs_open(fs, uri, flags, &c->real, &err) != MARBLE_OK)
        FAIL("open %s: %s", uri, err.message);
    c->base.methods = &cf_methods;
    c->base.caps = c->real->caps;
    c->base.flags = flags;
    c->budget = SIZE_MAX;
    return c;
}

static marble_file *buffered(marble_file *inner, size_t bufsize, size_t readahead)
{
    marble_error err;
    marble_buffer_options o = {bufsize, readahead};
    marble_file *f = NULL;
    if (marble_file_buffered_wrap(inner, &o, &f, &err) != MARBLE_OK) FAIL("wrap: %s", err.message);
    return f;
}

#define RW (MARBLE_OPEN_READ | MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE)

static void expect_content(marble_fs *fs, const char *uri, const uint8_t *data, size_t n)
{
    marble_error err;
    void *got;
    size_t gotn;
    ASSERT_OK(marble_fs_read_all(fs, uri, &got, &gotn, &err));
    ASSERT_EQ_U64(gotn, n);
    for (size_t i = 0; i < n; i++)
        if (((uint8_t *)got)[i] != data[i]) FAIL("%s differs at offset %zu", uri, i);
    free(got);
}

/* ---- writes ------------------------------------------------------------------------------- */

static void small_writes(marble_fs *fs, const char *uri)
{
    const size_t n = 8 * MiB + 123;
    uint8_t *data = make_data(n, 1);
    marble_error err;
    counting_file *c = counting(fs, uri, RW);
    marble_file *f = buffered(&c->base, 256 * KiB, 0);
    uint64_t s = 5;
    size_t off = 0, calls = 0;
    while (off < n) {
        size_t len = 1 + rng_next(&s) % (off < n / 2 ? 300 : 5000);
        if (len > n - off) len = n - off;
        int rc = (calls++ & 1) ? marble_file_append(f, data + off, len, &err)
                               : marble_file_write(f, off, data + off, len, &err);
        if (rc != MARBLE_OK) FAIL("write at %zu: %s", off, err.message);
        off += len;
    }
    /* Alternating writes and appends cost a write-back each time the kind changes, so count
     * only what a single kind gives: one inner call per full buffer. */
    ASSERT_GT_INT(calls, 1000);
    ASSERT_OK(marble_file_close(f, &err));
    expect_content(fs, uri, data, n);

    c = counting(fs, uri, RW);
    f = buffered(&c->base, 256 * KiB, 0);
    off = 0;
    calls = 0;
    while (off < n) {
        size_t len = 1 + rng_next(&s) % 3000;
        if (len > n - off) len = n - off;
        ASSERT_OK(marble_file_write(f, off, data + off, len, &err));
        off += len;
        calls++;
    }
    uint64_t size = 0;
    ASSERT_OK(marble_file_size(f, &size, &err));
    ASSERT_EQ_U64(size, n);
    ASSERT_LE_INT(c->writes, n / (256 * KiB) + 2);
    ASSERT_GT_INT(calls, 1000);
    /* A large write goes straight through. */
    uint64_t before = c->writes;
    ASSERT_OK(marble_file_write(f, n, data, MiB, &err));
    ASSERT_EQ_U64(c->writes, before + 1);
    ASSERT_OK(marble_file_truncate(f, n, &err));
    ASSERT_OK(marble_file_close(f, &err));
    expect_content(fs, uri, data, n);
    free(data);
}

TEST(small_writes_equal_one_big_write_mem)
{
    marble_fs *fs = new_fs();
    small_writes(fs, "mem://small");
    close_fs(fs);
}

TEST(small_writes_equal_one_big_write_local)
{
    marble_fs *fs = new_fs();
    char uri[1024];
    snprintf(uri, sizeof uri, "%s/small", marble_test_tmpdir());
    small_writes(fs, uri);
    close_fs(fs);
}

TEST(flush_points)
{
    marble_fs *fs = new_fs();
    marble_error err;
    counting_file *c = counting(fs, "mem://flush", RW);
    marble_file *f = buffered(&c->base, 4096, 0);
    ASSERT_OK(marble_file_write(f, 0, "abc", 3, &err));
    ASSERT_OK(marble_file_write(f, 3, "def", 3, &err));
    ASSERT_EQ_U64(c->writes, 0);
    uint64_t size;
    ASSERT_OK(marble_file_size(f, &size, &err));
    ASSERT_EQ_U64(size, 6);
    ASSERT_EQ_U64(c->writes, 1);
    ASSERT_OK(marble_file_write(f, 6, "g", 1, &err));
    ASSERT_OK(marble_file_sync(f, MARBLE_SYNC_DATA, &err));
    ASSERT_EQ_U64(c->writes, 2);
    ASSERT_EQ_U64(c->syncs, 1);
    expect_content(fs, "mem://flush", (const uint8_t *)"abcdefg", 7);
    /* A write elsewhere writes back first. */
    ASSERT_OK(marble_file_write(f, 7, "h", 1, &err));
    ASSERT_OK(marble_file_write(f, 1, "B", 1, &err));
    ASSERT_EQ_U64(c->writes, 3);
    expect_content(fs, "mem://flush", (const uint8_t *)"abcdefgh", 8);
    /* A read of dirty bytes sees them. */
    char buf[16] = {0};
    size_t got;
    ASSERT_OK(marble_file_read(f, 0, buf, sizeof buf, &got, &err));
    ASSERT_EQ_INT(got, 8);
    ASSERT_EQ_INT(memcmp(buf, "aBcdefgh", 8), 0);
    /* Truncate writes back, then cuts. */
    ASSERT_OK(marble_file_write(f, 8, "ijk", 3, &err));
    ASSERT_OK(marble_file_truncate(f, 9, &err));
    expect_content(fs, "mem://flush", (const uint8_t *)"aBcdefghi", 9);
    ASSERT_OK(marble_file_read(f, 0, buf, sizeof buf, &got, &err));
    ASSERT_EQ_INT(got, 9);
    /* Close writes back. */
    ASSERT_OK(marble_file_write(f, 9, "J", 1, &err));
    ASSERT_OK(marble_file_close(f, &err));
    expect_content(fs, "mem://flush", (const uint8_t *)"aBcdefghiJ", 10);
    close_fs(fs);
}

TEST(writes_past_the_end_leave_a_hole_of_zeros)
{
    marble_fs *fs = new_fs();
    marble_error err;
    marble_file *inner = NULL;
    ASSERT_OK(marble_fs_open(fs, "mem://hole", RW, &inner, &err));
    marble_file *f = buffered(inner, 4096, 8192);
    ASSERT_OK(marble_file_write(f, 0, "head", 4, &err));
    ASSERT_OK(marble_file_sync(f, 0, &err));
    ASSERT_OK(marble_file_write(f, 1000, "tail", 4, &err));
    uint8_t buf[2000];
    size_t got;
    /* [4, 1000) lies before the dirty bytes and past the inner file's end. */
    ASSERT_OK(marble_file_read(f, 0, buf, 100, &got, &err));
    ASSERT_EQ_INT(got, 100);
    ASSERT_EQ_INT(memcmp(buf, "head", 4), 0);
    for (int i = 4; i < 100; i++)
        ASSERT_EQ_INT(buf[i], 0);
    ASSERT_OK(marble_file_read(f, 100, buf, sizeof buf, &got, &err));
    ASSERT_EQ_INT(got, 904);
    ASSERT_EQ_INT(memcmp(buf + 900, "tail", 4), 0);
    ASSERT_OK(marble_file_close(f, &err));
    close_fs(fs);
}

TEST(append_mode_file)
{
    marble_fs *fs = new_fs();
    marble_error err;
    const size_t n = MiB + 7;
    uint8_t *data = make_data(n, 2);
    ASSERT_OK(marble_fs_write_all(fs, "mem://app", data, 1000, 0, &err));
    counting_file *c =
        counting(fs, "mem://app", MARBLE_OPEN_READ | MARBLE_OPEN_WRITE | MARBLE_OPEN_APPEND);
    marble_file *f = buffered(&c->base, 64 * KiB, 0);
    size_t off = 1000;
    uint64_t s = 3;
    while (off < n) {
        size_t len = 1 + rng_next(&s) % 999;
        if (len > n - off) len = n - off;
        ASSERT_OK(marble_file_append(f, data + off, len, &err));
        off += len;
    }
    ASSERT_LE_INT(c->appends, n / (64 * KiB) + 1);
    /* A read sees the appended bytes. */
    uint8_t tail[10];
    size_t got;
    ASSERT_OK(marble_file_read(f, n - 10, tail, 10, &got, &err));
    ASSERT_EQ_INT(got, 10);
    ASSERT_EQ_INT(memcmp(tail, data + n - 10, 10), 0);
    ASSERT_OK(marble_file_close(f, &err));
    expect_content(fs, "mem://app", data, n);
    free(data);
    close_fs(fs);
}

/* ---- reads -------------------------------------------------------------------------------- */

static void readahead(marble_fs *fs, const char *uri)
{
    const size_t n = 8 * MiB + 99;
    uint8_t *data = make_data(n, 4);
    marble_error err;
    ASSERT_OK(marble_fs_write_all(fs, uri, data, n, 0, &err));

    counting_file *c = counting(fs, uri, MARBLE_OPEN_READ);
    marble_file *f = buffered(&c->base, 0, MiB);
    uint8_t *buf = malloc(n);
    size_t off = 0, calls = 0;
    for (;;) {
        size_t got;
        ASSERT_OK(marble_file_read(f, off, buf + off, 4096, &got, &err));
        calls++;
        off += got;
        if (got < 4096) break;
    }
    ASSERT_EQ_U64(off, n);
    ASSERT_EQ_INT(memcmp(buf, data, n), 0);
    ASSERT_GT_INT(calls, 2000);
    ASSERT_LE_INT(c->reads, n / MiB + 8);
    ASSERT_OK(marble_file_close(f, &err));

    /* Odd sizes, starting mid-file, with a small read-ahead. */
    c = counting(fs, uri, MARBLE_OPEN_READ);
    f = buffered(&c->base, 0, 100000);
    off = 12345;
    uint64_t s = 8;
    while (off < n) {
        size_t want = 1 + rng_next(&s) % 20000, got;
        ASSERT_OK(marble_file_read(f, off, buf, want, &got, &err));
        ASSERT_EQ_U64(got, want < n - off ? want : n - off);
        if (memcmp(buf, data + off, got) != 0) FAIL("read at %zu differs", off);
        off += got;
    }
    ASSERT_LE_INT(c->reads, (n - 12345) / 100000 + 8);
    ASSERT_OK(marble_file_close(f, &err));
    free(buf);
    free(data);
}

TEST(readahead_reduces_inner_reads_mem)
{
    marble_fs *fs = new_fs();
    readahead(fs, "mem://ra");
    close_fs(fs);
}

TEST(readahead_reduces_inner_reads_local)
{
    marble_fs *fs = new_fs();
    char uri[1024];
    snprintf(uri, sizeof uri, "%s/ra", marble_test_tmpdir());
    readahead(fs, uri);
    close_fs(fs);
}

TEST(random_reads_are_correct_and_not_read_ahead)
{
    const size_t n = 4 * MiB;
    uint8_t *data = make_data(n, 5);
    marble_fs *fs = new_fs();
    marble_error err;
    ASSERT_OK(marble_fs_write_all(fs, "mem://rand", data, n, 0, &err));
    counting_file *c = counting(fs, "mem://rand", MARBLE_OPEN_READ);
    marble_file *f = buffered(&c->base, 0, MiB);
    uint8_t *buf = malloc(70000);
    uint64_t s = 6, asked = 0;
    for (int i = 0; i < 3000; i++) {
        uint64_t off = rng_next(&s) % (n + 100);
        size_t want = 1 + rng_next(&s) % 70000, got;
        ASSERT_OK(marble_file_read(f, off, buf, want, &got, &err));
        size_t expect = off >= n ? 0 : (want < n - off ? want : (size_t)(n - off));
        ASSERT_EQ_U64(got, expect);
        if (memcmp(buf, data + (off < n ? off : n), got) != 0)
            FAIL("read at %llu", (unsigned long long)off);
        asked += want;
    }
    ASSERT_LE_INT(c->bytes_read, asked);
    /* A sequential run after random reads switches read-ahead on. */
    uint64_t before = c->reads;
    for (size_t off = 0; off < 2 * MiB; off += 1000) {
        size_t got;
        ASSERT_OK(marble_file_read(f, off, buf, 1000, &got, &err));
        ASSERT_EQ_INT(got, 1000);
        if (memcmp(buf, data + off, 1000) != 0) FAIL("sequential read at %zu", off);
    }
    ASSERT_LE_INT(c->reads - before, 4);
    ASSERT_OK(marble_file_close(f, &err));
    free(buf);
    free(data);
    close_fs(fs);
}

/* ---- mixed use against a model ------------------------------------------------------------ */

static void model_check(marble_fs *fs, const char *uri, size_t bufsize, size_t ra, uint64_t seed)
{
    const size_t cap = 3 * MiB;
    uint8_t *model = calloc(1, cap + 200000);
    uint8_t *src = make_data(200000, seed);
    uint8_t *buf = malloc(200000);
    size_t msize = 0;
    marble_error err;
    marble_file *inner = NULL;
    ASSERT_OK(marble_fs_open(fs, uri, RW, &inner, &err));
    marble_file *f = buffered(inner, bufsize, ra);
    uint64_t s = seed, wend = 0, rend = 0;
    for (int i = 0; i < 20000; i++) {
        unsigned op = (unsigned)(rng_next(&s) % 100);
        size_t len = (size_t)(rng_next(&s) % (rng_next(&s) % 4 == 0 ? 100000 : 3000));
        size_t so = (size_t)(rng_next(&s) % (200000 - len));
        if (op < 35) {
            uint64_t off = (op < 25) ? wend : rng_next(&s) % (msize + 5000);
            if (off + len > cap) off = rng_next(&s) % (cap / 2);
            ASSERT_OK(marble_file_write(f, off, src + so, len, &err));
            if (off > msize) memset(model + msize, 0, off - msize);
            memcpy(model + off, src + so, len);
            if (off + len > msize) msize = off + len;
            wend = off + len;
        } else if (op < 40) {
            if (msize + len > cap) continue;
            ASSERT_OK(marble_file_append(f, src + so, len, &err));
            memcpy(model + msize, src + so, len);
            msize += len;
        } else if (op < 95) {
            uint64_t off = (op < 75) ? rend : rng_next(&s) % (msize + 1000);
            size_t got;
            ASSERT_OK(marble_file_read(f, off, buf, len, &got, &err));
            size_t expect = off >= msize ? 0 : (len < msize - off ? len : msize - off);
            if (got != expect)
                FAIL("op %d: read [%llu, +%zu) of %zu bytes gave %zu", i, (unsigned long long)off,
                     len, msize, got);
            if (memcmp(buf, model + off, got) != 0)
                FAIL("op %d: read [%llu, +%zu) differs", i, (unsigned long long)off, len);
            rend = off + got;
        } else if (op < 97) {
            uint64_t size;
            ASSERT_OK(marble_file_size(f, &size, &err));
            ASSERT_EQ_U64(size, msize);
        } else if (op < 99) {
            size_t to = (size_t)(rng_next(&s) % (msize + 10000));
            if (to > cap) to = cap;
            ASSERT_OK(marble_file_truncate(f, to, &err));
            if (to > msize) memset(model + msize, 0, to - msize);
            msize = to;
        } else {
            ASSERT_OK(marble_file_sync(f, MARBLE_SYNC_DATA, &err));
        }
    }
    ASSERT_OK(marble_file_close(f, &err));
    expect_content(fs, uri, model, msize);
    free(buf);
    free(src);
    free(model);
}

TEST(interleaved_reads_and_writes_match_a_model_mem)
{
    marble_fs *fs = new_fs();
    model_check(fs, "mem://model1", 4096, 16384, 11);
    model_check(fs, "mem://model2", 100000, 1000, 12);
    model_check(fs, "mem://model3", 0, 0, 13);
    close_fs(fs);
}

TEST(interleaved_reads_and_writes_match_a_model_local)
{
    marble_fs *fs = new_fs();
    char uri[1024];
    snprintf(uri, sizeof uri, "%s/model", marble_test_tmpdir());
    model_check(fs, uri, 4096, 65536, 14);
    model_check(fs, uri, 1 << 20, 1 << 20, 15);
    close_fs(fs);
}

/* ---- the wrapper itself ------------------------------------------------------------------- */

TEST(caps_control_and_map)
{
    marble_fs *fs = new_fs();
    marble_error err;
    char uri[1024];
    snprintf(uri, sizeof uri, "%s/caps", marble_test_tmpdir());
    marble_file *inner = NULL;
    ASSERT_OK(marble_fs_open(fs, uri, RW, &inner, &err));
    ASSERT_TRUE(inner->caps & MARBLE_CAP_MAP);
    marble_file *f = buffered(inner, 0, 0);
    ASSERT_FALSE(f->caps & (MARBLE_CAP_MAP | MARBLE_CAP_FD | MARBLE_CAP_DIRECT));
    ASSERT_TRUE(f->caps & MARBLE_CAP_RANDOM_READ);
    ASSERT_TRUE(f->caps & MARBLE_CAP_RANDOM_WRITE);
    ASSERT_TRUE(f->caps & MARBLE_CAP_SYNC);
    marble_file *got_inner = NULL;
    ASSERT_OK(marble_file_control(f, MARBLE_FCNTL_GET_INNER, &got_inner));
    ASSERT_EQ_PTR(got_inner, inner);
    int fd;
    ASSERT_EQ_INT(marble_file_control(f, MARBLE_FCNTL_GET_FD, &fd), MARBLE_ERR_UNSUPPORTED);
    /* A map reads through the buffer, so it sees bytes not yet written back. */
    ASSERT_OK(marble_file_write(f, 0, "0123456789", 10, &err));
    marble_mapping *m = NULL;
    ASSERT_OK(marble_file_map(f, 2, 0, &m, &err));
    ASSERT_EQ_INT(marble_mapping_size(m), 8);
    ASSERT_EQ_INT(marble_mapping_is_mapped(m), 0);
    ASSERT_EQ_INT(memcmp(marble_mapping_data(m), "23456789", 8), 0);
    marble_mapping_release(m);
    ASSERT_OK(marble_file_write(f, 10, "ab", 2, &err));
    ASSERT_OK(marble_file_map(f, 8, 4, &m, &err));
    ASSERT_EQ_INT(memcmp(marble_mapping_data(m), "89ab", 4), 0);
    marble_mapping_release(m);
    size_t got;
    char buf[4];
    ASSERT_OK(marble_file_read(f, 0, buf, 0, &got, &err));
    ASSERT_EQ_INT(got, 0);
    ASSERT_OK(marble_file_close(f, &err));

    ASSERT_EQ_INT(marble_file_buffered_wrap(NULL, NULL, &f, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_OK(marble_fs_open(fs, uri, MARBLE_OPEN_READ, &inner, &err));
    ASSERT_EQ_INT(marble_file_buffered_wrap(inner, NULL, NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
    close_fs(fs);
}

TEST(write_back_failure_is_sticky_and_closes)
{
    marble_fs *fs = new_fs();
    marble_error err;
    counting_file *c = counting(fs, "mem://fail", RW);
    c->budget = 10000;
    marble_file *f = buffered(&c->base, 4096, 0);
    uint8_t *data = make_data(20000, 7);
    int rc = MARBLE_OK;
    size_t off = 0;
    while (rc == MARBLE_OK && off < 20000) {
        rc = marble_file_write(f, off, data + off, 100, &err);
        off += 100;
    }
    ASSERT_EQ_INT(rc, MARBLE_ERR_NO_SPACE);
    ASSERT_CONTAINS(err.message, "injected ENOSPC");
    marble_error_clear(&err);
    ASSERT_EQ_INT(marble_file_write(f, off, data, 1, &err), MARBLE_ERR_NO_SPACE);
    ASSERT_CONTAINS(err.message, "injected ENOSPC");
    uint64_t size;
    ASSERT_EQ_INT(marble_file_size(f, &size, &err), MARBLE_ERR_NO_SPACE);
    ASSERT_EQ_INT(marble_file_sync(f, 0, &err), MARBLE_ERR_NO_SPACE);
    marble_error_clear(&err);
    ASSERT_EQ_INT(marble_file_close(f, &err), MARBLE_ERR_NO_SPACE);
    ASSERT_CONTAINS(err.message, "injected ENOSPC");

    /* A failure in the final write-back is returned by close. */
    c = counting(fs, "mem://fail2", RW);
    c->budget = 0;
    f = buffered(&c->base, 4096, 0);
    ASSERT_OK(marble_file_write(f, 0, data, 100, &err));
    ASSERT_EQ_INT(marble_file_close(f, &err), MARBLE_ERR_NO_SPACE);

    /* An error closing the inner file after a good write-back is returned too. */
    c = counting(fs, "mem://fail3", RW);
    c->fail_close = 1;
    f = buffered(&c->base, 4096, 0);
    ASSERT_OK(marble_file_write(f, 0, data, 100, &err));
    ASSERT_EQ_INT(marble_file_close(f, &err), MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, "injected close error");
    expect_content(fs, "mem://fail3", data, 100);
    free(data);
    close_fs(fs);
}

/* A read-ahead fill that fails part way (a gzip stream corrupt in the middle, read 100 bytes at a
 * time): no call reports more bytes than it was asked for, and the bytes reported are the
 * stream's. */
TEST(failed_readahead_never_reports_more_than_asked)
{
    marble_fs *fs = new_fs();
    marble_error err;
    enum { TEXT = 200000, FIRST = 100000 };
    uint8_t *text = malloc(TEXT);
    ASSERT_NOT_NULL(text);
    uint64_t s = 99;
    for (size_t i = 0; i < TEXT; i++)
        text[i] = (uint8_t)("abcdefgh \n"[rng_next(&s) % 10]);
    /* Two gzip members; the second one's header is damaged. */
    const int wflags = MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_COMPRESSED;
    marble_file *w = NULL;
    ASSERT_OK(marble_fs_open(fs, "mem://x.gz", wflags | MARBLE_OPEN_TRUNCATE, &w, &err));
    ASSERT_OK(marble_file_write(w, 0, text, FIRST, &err));
    ASSERT_OK(marble_file_close(w, &err));
    marble_stat st;
    ASSERT_OK(marble_fs_stat(fs, "mem://x.gz", &st, &err));
    ASSERT_OK(marble_fs_open(fs, "mem://x.gz", wflags, &w, &err));
    ASSERT_OK(marble_file_write(w, 0, text + FIRST, TEXT - FIRST, &err));
    ASSERT_OK(marble_file_close(w, &err));
    void *gz = NULL;
    size_t gzn = 0;
    ASSERT_OK(marble_fs_read_all(fs, "mem://x.gz", &gz, &gzn, &err));
    ASSERT_GT_INT(gzn, st.size);
    ((uint8_t *)gz)[st.size] ^= 0x5a;
    ASSERT_OK(marble_fs_write_all(fs, "mem://x.gz", gz, gzn, 0, &err));
    free(gz);

    for (size_t ra = 1000; ra <= 64 * KiB; ra *= 4) {
        marble_file *in = NULL;
        ASSERT_OK(
            marble_fs_open(fs, "mem://x.gz", MARBLE_OPEN_READ | MARBLE_OPEN_COMPRESSED, &in, &err));
        marble_file *f = buffered(in, 0, ra);
        uint8_t buf[100];
        uint64_t off = 0;
        int rc = MARBLE_OK;
        while (rc == MARBLE_OK) {
            size_t got = SIZE_MAX;
            rc = marble_file_read(f, off, buf, sizeof buf, &got, &err);
            ASSERT_LE_INT(got, sizeof buf);
            ASSERT_LE_INT(off + got, FIRST);
            ASSERT_TRUE(memcmp(buf, text + off, got) == 0);
            if (rc == MARBLE_OK) ASSERT_GT_INT(got, 0);
            off += got;
        }
        ASSERT_EQ_INT(rc, MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, "corrupt");
        marble_file_close(f, NULL);
    }
    free(text);
    close_fs(fs);
}
