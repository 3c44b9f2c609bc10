/* Tests of the compression streams: round trips per codec, truncation, corruption, interop with
 * the gzip, zstd and lz4 command line tools, and the MARBLE_OPEN_COMPRESSED flag; and of the
 * compressing backend: the conformance suite over local and mem, its own contract, and the files
 * it writes read by the streams and by the tools. */
#include <stdlib.h>
#include <unistd.h>

#include "conformance.h"
#include "marble/vfs.h"
#include "marble_test.h"
#include "vfs_test.h"

#define MiB ((size_t)1 << 20)

static const marble_codec codecs[] = {MARBLE_CODEC_ZSTD, MARBLE_CODEC_LZ4, MARBLE_CODEC_GZIP};
static const char *const exts[] = {"zst", "lz4", "gz"};

static const char *ext_of(marble_codec c)
{
    return exts[(int)c - 1];
}

/* Segments of random bytes, English-like text, zeros and short repeats, in random order. */
static uint8_t *make_data(size_t n, uint64_t seed)
{
    static const char words[] = "marble stores arrow batches in sorted tables and merges them ";
    uint8_t *d = malloc(n ? n : 1);
    ASSERT_NOT_NULL(d);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t i = 0;
    while (i < n) {
        size_t len = 1 + rng_next(&s) % 70000;
        if (len > n - i) len = n - i;
        switch (rng_next(&s) % 4) {
        case 0:
            for (size_t k = 0; k < len; k++)
                d[i + k] = (uint8_t)rng_next(&s);
            break;
        case 1:
            for (size_t k = 0; k < len; k++)
                d[i + k] = (uint8_t)words[(i + k) % (sizeof words - 1)];
            break;
        case 2:
            memset(d + i, 0, len);
            break;
        default: {
            uint8_t pat[7];
            for (int k = 0; k < 7; k++)
                pat[k] = (uint8_t)rng_next(&s);
            for (size_t k = 0; k < len; k++)
                d[i + k] = pat[k % 7];
            break;
        }
        }
        i += len;
    }
    return d;
}

static marble_file *open_writer(marble_fs *fs, const char *uri, marble_codec c, int level)
{
    marble_file *inner = NULL, *f = NULL;
    marble_error err;
    if (marble_fs_open(fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE,
                       &inner, &err) != MARBLE_OK)
        FAIL("open %s: %s", uri, err.message);
    if (marble_file_compress_wrap(inner, c, 1, level, &f, &err) != MARBLE_OK)
        FAIL("wrap %s: %s", uri, err.message);
    return f;
}

static marble_file *open_reader(marble_fs *fs, const char *uri, marble_codec c)
{
    marble_file *inner = NULL, *f = NULL;
    marble_error err;
    if (marble_fs_open(fs, uri, MARBLE_OPEN_READ, &inner, &err) != MARBLE_OK)
        FAIL("open %s: %s", uri, err.message);
    if (marble_file_compress_wrap(inner, c, 0, 0, &f, &err) != MARBLE_OK)
        FAIL("wrap %s: %s", uri, err.message);
    return f;
}

/* Writes data in pieces of `piece` bytes (0: at once), alternating write and append. */
static void write_all_to(marble_file *f, const uint8_t *data, size_t n, size_t piece)
{
    marble_error err;
    size_t off = 0;
    int k = 0;
    while (off < n || (n == 0 && k == 0)) {
        size_t len = piece ? piece : n;
        if (len > n - off) len = n - off;
        int rc = (k++ & 1) ? marble_file_append(f, data + off, len, &err)
                           : marble_file_write(f, off, data + off, len, &err);
        if (rc != MARBLE_OK) FAIL("write at %zu: %s", off, err.message);
        off += len;
    }
}

/* Reads the stream to its end with reads of `step` bytes; returns the status of the last read. */
static int read_to_end(marble_file *f, size_t step, uint8_t **out, size_t *outlen,
                       marble_error *err)
{
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    ASSERT_NOT_NULL(buf);
    int rc;
    for (;;) {
        if (cap - len < step) {
            while (cap - len < step)
                cap *= 2;
            buf = realloc(buf, cap);
            ASSERT_NOT_NULL(buf);
        }
        size_t got = 0;
        rc = marble_file_read(f, len, buf + len, step, &got, err);
        len += got;
        if (rc != MARBLE_OK || got == 0) break;
        ASSERT_LE_INT(got, step);
        if (got < step) {
            size_t again = 0;
            rc = marble_file_read(f, len, buf + len, step, &again, err);
            if (rc != MARBLE_OK) break;
            ASSERT_EQ_INT(again, 0);
            break;
        }
    }
    *out = buf;
    *outlen = len;
    return rc;
}

static void assert_same(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    ASSERT_EQ_U64(an, bn);
    for (size_t i = 0; i < an; i++)
        if (a[i] != b[i]) FAIL("bytes differ at offset %zu: 0x%02x vs 0x%02x", i, a[i], b[i]);
}

static void expect_stream(marble_fs *fs, const char *uri, marble_codec c, const uint8_t *data,
                          size_t n, size_t step)
{
    marble_file *f = open_reader(fs, uri, c);
    marble_error err;
    uint8_t *got;
    size_t gotn;
    if (read_to_end(f, step, &got, &gotn, &err) != MARBLE_OK)
        FAIL("reading %s with %zu-byte reads: %s", uri, step, err.message);
    assert_same(got, gotn, data, n);
    free(got);
    ASSERT_OK(marble_file_close(f, &err));
}

static void write_stream(marble_fs *fs, const char *uri, marble_codec c, const uint8_t *data,
                         size_t n, size_t piece)
{
    marble_error err;
    marble_file *f = open_writer(fs, uri, c, 0);
    write_all_to(f, data, n, piece);
    if (marble_file_close(f, &err) != MARBLE_OK) FAIL("close %s: %s", uri, err.message);
}

static int has_command(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

static void run_shell(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0) FAIL("command failed (%d): %s", rc, cmd);
}

/* ---- names -------------------------------------------------------------------------------- */

TEST(codec_from_path_and_name)
{
    ASSERT_EQ_INT(marble_codec_from_path("a/b/table.zst"), MARBLE_CODEC_ZSTD);
    ASSERT_EQ_INT(marble_codec_from_path("mem://x/y.lz4"), MARBLE_CODEC_LZ4);
    ASSERT_EQ_INT(marble_codec_from_path("/tmp/log.gz"), MARBLE_CODEC_GZIP);
    ASSERT_EQ_INT(marble_codec_from_path("x.tar.gz"), MARBLE_CODEC_GZIP);
    ASSERT_EQ_INT(marble_codec_from_path("x.gzip"), MARBLE_CODEC_NONE);
    ASSERT_EQ_INT(marble_codec_from_path("x.zst.tmp"), MARBLE_CODEC_NONE);
    ASSERT_EQ_INT(marble_codec_from_path("dir/.gz"), MARBLE_CODEC_NONE);
    ASSERT_EQ_INT(marble_codec_from_path("zst"), MARBLE_CODEC_NONE);
    ASSERT_EQ_INT(marble_codec_from_path(""), MARBLE_CODEC_NONE);
    ASSERT_EQ_INT(marble_codec_from_path(NULL), MARBLE_CODEC_NONE);
    ASSERT_EQ_STR(marble_codec_name(MARBLE_CODEC_NONE), "none");
    ASSERT_EQ_STR(marble_codec_name(MARBLE_CODEC_ZSTD), "zstd");
    ASSERT_EQ_STR(marble_codec_name(MARBLE_CODEC_LZ4), "lz4");
    ASSERT_EQ_STR(marble_codec_name(MARBLE_CODEC_GZIP), "gzip");
    ASSERT_EQ_STR(marble_codec_name((marble_codec)42), "unknown");
}

/* ---- round trips -------------------------------------------------------------------------- */

/* 20 MiB through mem:// (explicit wrap) and a local file (MARBLE_OPEN_COMPRESSED). */
static void roundtrip_large(marble_codec c)
{
    const size_t n = 20 * MiB;
    uint8_t *data = make_data(n, 1);
    marble_fs *fs = new_fs();
    marble_error err;
    char uri[1024];

    ASSERT_OK(marble_fs_mkdir(fs, "mem://big", 1, &err));
    snprintf(uri, sizeof uri, "mem://big/data.%s", ext_of(c));
    write_stream(fs, uri, c, data, n, 3 * MiB + 17);
    marble_stat st;
    ASSERT_OK(marble_fs_stat(fs, uri, &st, &err));
    ASSERT_LT_INT(st.size, n);
    expect_stream(fs, uri, c, data, n, MiB);

    snprintf(uri, sizeof uri, "%s/data.%s", marble_test_tmpdir(), ext_of(c));
    marble_file *f = NULL;
    ASSERT_OK(marble_fs_open(fs, uri,
                             MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE |
                                 MARBLE_OPEN_COMPRESSED,
                             &f, &err));
    ASSERT_EQ_STR(marble_file_uri(f), uri);
    write_all_to(f, data, n, 0);
    ASSERT_OK(marble_file_sync(f, MARBLE_SYNC_FULL, &err));
    ASSERT_OK(marble_file_close(f, &err));
    ASSERT_OK(marble_fs_open(fs, uri, MARBLE_OPEN_READ | MARBLE_OPEN_COMPRESSED, &f, &err));
    uint8_t *got;
    size_t gotn;
    if (read_to_end(f, 4 * MiB + 3, &got, &gotn, &err) != MARBLE_OK) FAIL("%s", err.message);
    assert_same(got, gotn, data, n);
    free(got);
    ASSERT_OK(marble_file_close(f, &err));

    /* The same bytes read plainly are the compressed file, smaller than the data. */
    void *raw;
    size_t rawn;
    ASSERT_OK(marble_fs_read_all(fs, uri, &raw, &rawn, &err));
    ASSERT_LT_INT(rawn, n);
    free(raw);
    close_fs(fs);
    free(data);
}

TEST(roundtrip_large_zstd)
{
    roundtrip_large(MARBLE_CODEC_ZSTD);
}

TEST(roundtrip_large_lz4)
{
    roundtrip_large(MARBLE_CODEC_LZ4);
}

TEST(roundtrip_large_gzip)
{
    roundtrip_large(MARBLE_CODEC_GZIP);
}

TEST(odd_read_sizes)
{
    const size_t n = 2 * MiB + 333;
    static const size_t steps[] = {1, 7, 4096, MiB, 5 * MiB};
    uint8_t *data = make_data(n, 2);
    marble_fs *fs = new_fs();
    for (int ci = 0; ci < 3; ci++) {
        char uri[64];
        snprintf(uri, sizeof uri, "mem://odd.%s", ext_of(codecs[ci]));
        write_stream(fs, uri, codecs[ci], data, n, 0);
        for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++)
            expect_stream(fs, uri, codecs[ci], data, n, steps[k]);
    }
    close_fs(fs);
    free(data);
}

TEST(many_small_writes)
{
    const size_t n = 3 * MiB;
    uint8_t *data = make_data(n, 3);
    marble_fs *fs = new_fs();
    marble_error err;
    for (int ci = 0; ci < 3; ci++) {
        char uri[64];
        snprintf(uri, sizeof uri, "mem://small.%s", ext_of(codecs[ci]));
        marble_file *f = open_writer(fs, uri, codecs[ci], 1);
        uint64_t s = 99;
        size_t off = 0;
        while (off < n) {
            size_t len = rng_next(&s) % 64;
            if (len > n - off) len = n - off;
            int rc = (len & 1) ? marble_file_append(f, data + off, len, &err)
                               : marble_file_write(f, off, data + off, len, &err);
            if (rc != MARBLE_OK) FAIL("write at %zu: %s", off, err.message);
            off += len;
            uint64_t size = 0;
            if ((off & 0xffff) < 64) {
                ASSERT_OK(marble_file_size(f, &size, &err));
                ASSERT_EQ_U64(size, off);
            }
        }
        ASSERT_OK(marble_file_close(f, &err));
        expect_stream(fs, uri, codecs[ci], data, n, 65536);
    }
    close_fs(fs);
    free(data);
}

TEST(empty_stream)
{
    marble_fs *fs = new_fs();
    marble_error err;
    for (int ci = 0; ci < 3; ci++) {
        char uri[64];
        snprintf(uri, sizeof uri, "mem://empty.%s", ext_of(codecs[ci]));
        marble_file *f = open_writer(fs, uri, codecs[ci], 0);
        ASSERT_OK(marble_file_close(f, &err));
        marble_stat st;
        ASSERT_OK(marble_fs_stat(fs, uri, &st, &err));
        ASSERT_GT_INT(st.size, 0);
        f = open_reader(fs, uri, codecs[ci]);
        uint8_t buf[16];
        size_t got = 99;
        ASSERT_OK(marble_file_read(f, 0, buf, 0, &got, &err));
        ASSERT_EQ_INT(got, 0);
        ASSERT_OK(marble_file_read(f, 0, buf, sizeof buf, &got, &err));
        ASSERT_EQ_INT(got, 0);
        ASSERT_OK(marble_file_read(f, 0, buf, sizeof buf, &got, &err));
        ASSERT_EQ_INT(got, 0);
        ASSERT_OK(marble_file_close(f, &err));

        /* A file of zero bytes holds no frame at all. */
        ASSERT_OK(marble_fs_write_all(fs, uri, "", 0, 0, &err));
        f = open_reader(fs, uri, codecs[ci]);
        ASSERT_EQ_INT(marble_file_read(f, 0, buf, sizeof buf, &got, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, marble_codec_name(codecs[ci]));
        ASSERT_CONTAINS(err.message, "empty");
        ASSERT_OK(marble_file_close(f, &err));
    }
    close_fs(fs);
}

/* A second stream written to an existing file without TRUNCATE follows the first: readers see
 * both, as concatenated frames (or gzip members). */
TEST(appended_frames_read_as_one_stream)
{
    const size_t n = MiB + 5;
    uint8_t *data = make_data(2 * n, 4);
    marble_fs *fs = new_fs();
    marble_error err;
    for (int ci = 0; ci < 3; ci++) {
        char uri[64];
        snprintf(uri, sizeof uri, "mem://two.%s", ext_of(codecs[ci]));
        write_stream(fs, uri, codecs[ci], data, n, 0);
        marble_file *f = NULL;
        ASSERT_OK(marble_fs_open(fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_COMPRESSED, &f, &err));
        write_all_to(f, data + n, n, 100000);
        ASSERT_OK(marble_file_close(f, &err));
        expect_stream(fs, uri, codecs[ci], data, 2 * n, 12345);
        /* And with APPEND. */
        ASSERT_OK(marble_fs_open(
            fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_APPEND | MARBLE_OPEN_COMPRESSED, &f, &err));
        write_all_to(f, data, 1000, 0);
        ASSERT_OK(marble_file_close(f, &err));
        marble_file *r = open_reader(fs, uri, codecs[ci]);
        uint8_t *got;
        size_t gotn;
        ASSERT_OK(read_to_end(r, 4096, &got, &gotn, &err));
        ASSERT_EQ_U64(gotn, 2 * n + 1000);
        assert_same(got, 2 * n, data, 2 * n);
        assert_same(got + 2 * n, 1000, data, 1000);
        free(got);
        ASSERT_OK(marble_file_close(r, &err));
    }
    close_fs(fs);
    free(data);
}

/* ---- the stream contract ------------------------------------------------------------------ */

TEST(non_sequential_access_is_unsupported)
{
    const size_t n = 100000;
    uint8_t *data = make_data(n, 5);
    marble_fs *fs = new_fs();
    marble_error err;
    for (int ci = 0; ci < 3; ci++) {
        marble_codec c = codecs[ci];
        char uri[64];
        snprintf(uri, sizeof uri, "mem://seq.%s", ext_of(c));
        marble_file *w = open_writer(fs, uri, c, 0);
        ASSERT_OK(marble_file_write(w, 0, data, 1000, &err));
        ASSERT_EQ_INT(marble_file_write(w, 5000, data, 10, &err), MARBLE_ERR_UNSUPPORTED);
        ASSERT_CONTAINS(err.message, marble_codec_name(c));
        ASSERT_CONTAINS(err.message, uri);
        ASSERT_CONTAINS(err.message, "5000");
        ASSERT_CONTAINS(err.message, "1000");
        size_t got;
        uint8_t buf[64];
        ASSERT_EQ_INT(marble_file_read(w, 0, buf, sizeof buf, &got, &err), MARBLE_ERR_UNSUPPORTED);
        ASSERT_EQ_INT(marble_file_truncate(w, 0, &err), MARBLE_ERR_UNSUPPORTED);
        /* The failed calls did not break the stream. */
        ASSERT_OK(marble_file_write(w, 1000, data + 1000, n - 1000, &err));
        ASSERT_OK(marble_file_close(w, &err));

        marble_file *r = open_reader(fs, uri, c);
        ASSERT_EQ_INT(r->caps & (MARBLE_CAP_RANDOM_READ | MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_MAP),
                      0);
        ASSERT_OK(marble_file_read(r, 0, buf, 10, &got, &err));
        ASSERT_EQ_INT(got, 10);
        ASSERT_EQ_INT(marble_file_read(r, 0, buf, 10, &got, &err), MARBLE_ERR_UNSUPPORTED);
        ASSERT_CONTAINS(err.message, marble_codec_name(c));
        ASSERT_CONTAINS(err.message, uri);
        ASSERT_CONTAINS(err.message, "offset 0");
        ASSERT_CONTAINS(err.message, "10");
        ASSERT_EQ_INT(marble_file_read(r, 50, buf, 10, &got, &err), MARBLE_ERR_UNSUPPORTED);
        ASSERT_CONTAINS(err.message, "50");
        uint64_t size;
        ASSERT_EQ_INT(marble_file_size(r, &size, &err), MARBLE_ERR_UNSUPPORTED);
        ASSERT_EQ_INT(marble_file_write(r, 10, buf, 1, &err), MARBLE_ERR_UNSUPPORTED);
        marble_mapping *m = NULL;
        ASSERT_NE_INT(marble_file_map(r, 10, 0, &m, &err), MARBLE_OK);
        ASSERT_NULL(m);
        ASSERT_OK(marble_file_read(r, 10, buf, 10, &got, &err));
        ASSERT_EQ_INT(got, 10);
        ASSERT_EQ_INT(memcmp(buf, data + 10, 10), 0);
        /* A sequential map falls back to a read of the stream. */
        ASSERT_OK(marble_file_map(r, 20, 30, &m, &err));
        ASSERT_EQ_INT(marble_mapping_size(m), 30);
        ASSERT_EQ_INT(memcmp(marble_mapping_data(m), data + 20, 30), 0);
        marble_mapping_release(m);
        marble_file *inner = NULL;
        ASSERT_OK(marble_file_control(r, MARBLE_FCNTL_GET_INNER, &inner));
        ASSERT_NOT_NULL(inner);
        ASSERT_TRUE(inner->caps & MARBLE_CAP_RANDOM_READ);
        int fd;
        ASSERT_EQ_INT(marble_file_control(r, MARBLE_FCNTL_GET_FD, &fd), MARBLE_ERR_UNSUPPORTED);
        ASSERT_OK(marble_file_close(r, &err));
    }
    close_fs(fs);
    free(data);
}

/* After sync, everything written so far can be decoded from the file. */
TEST(sync_flushes_the_compressor)
{
    const size_t n = 300000;
    uint8_t *data = make_data(n, 6);
    marble_fs *fs = new_fs();
    marble_error err;
    for (int ci = 0; ci < 3; ci++) {
        marble_codec c = codecs[ci];
        char uri[64];
        snprintf(uri, sizeof uri, "mem://sync.%s", ext_of(c));
        marble_file *w = open_writer(fs, uri, c, 0);
        ASSERT_TRUE(w->caps & MARBLE_CAP_APPEND);
        ASSERT_TRUE(w->caps & MARBLE_CAP_SYNC);
        ASSERT_FALSE(w->caps & MARBLE_CAP_RANDOM_WRITE);
        ASSERT_OK(marble_file_write(w, 0, data, 1234, &err));
        ASSERT_OK(marble_file_sync(w, MARBLE_SYNC_DATA, &err));
        ASSERT_OK(marble_file_sync(w, MARBLE_SYNC_FULL, &err));
        uint8_t buf[2000];
        size_t got;
        marble_file *r = open_reader(fs, uri, c);
        ASSERT_OK(marble_file_read(r, 0, buf, 1234, &got, &err));
        ASSERT_EQ_INT(got, 1234);
        ASSERT_EQ_INT(memcmp(buf, data, 1234), 0);
        ASSERT_EQ_INT(marble_file_read(r, 1234, buf, 1, &got, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, "truncated");
        ASSERT_OK(marble_file_close(r, &err));

        ASSERT_OK(marble_file_append(w, data + 1234, n - 1234, &err));
        ASSERT_OK(marble_file_sync(w, MARBLE_SYNC_DATA, &err));
        r = open_reader(fs, uri, c);
        uint8_t *all = malloc(n);
        ASSERT_OK(marble_file_read_exact(r, 0, all, n, &err));
        assert_same(all, n, data, n);
        free(all);
        ASSERT_OK(marble_file_close(r, &err));
        ASSERT_OK(marble_file_close(w, &err));
        expect_stream(fs, uri, c, data, n, 100000);
    }
    close_fs(fs);
    free(data);
}

TEST(wrap_errors_close_the_inner_file)
{
    marble_fs *fs = new_fs();
    marble_error err;
    marble_file *inner = NULL, *f = (marble_file *)&err;
    ASSERT_OK(
        marble_fs_open(fs, "mem://w.bin", MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &inner, &err));
    ASSERT_EQ_INT(marble_file_compress_wrap(inner, MARBLE_CODEC_NONE, 1, 0, &f, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(f);
    ASSERT_CONTAINS(err.message, "mem://w.bin");
    ASSERT_CONTAINS(err.message, "none");

    static const int bad_levels[][2] = {{MARBLE_CODEC_ZSTD, 1000},
                                        {MARBLE_CODEC_LZ4, 13},
                                        {MARBLE_CODEC_GZIP, 10},
                                        {MARBLE_CODEC_GZIP, -2}};
    for (size_t k = 0; k < sizeof bad_levels / sizeof bad_levels[0]; k++) {
        ASSERT_OK(marble_fs_open(fs, "mem://w.bin", MARBLE_OPEN_WRITE, &inner, &err));
        ASSERT_EQ_INT(marble_file_compress_wrap(inner, (marble_codec)bad_levels[k][0], 1,
                                                bad_levels[k][1], &f, &err),
                      MARBLE_ERR_INVALID_ARGUMENT);
        ASSERT_CONTAINS(err.message, "level");
        ASSERT_CONTAINS(err.message, marble_codec_name((marble_codec)bad_levels[k][0]));
    }
    ASSERT_OK(marble_fs_open(fs, "mem://w.bin", MARBLE_OPEN_WRITE, &inner, &err));
    ASSERT_EQ_INT(marble_file_compress_wrap(inner, MARBLE_CODEC_ZSTD, 1, 0, NULL, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_file_compress_wrap(NULL, MARBLE_CODEC_ZSTD, 1, 0, &f, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);

    /* Levels at the ends of each range work. */
    static const int good_levels[][2] = {{MARBLE_CODEC_ZSTD, 19}, {MARBLE_CODEC_ZSTD, -5},
                                         {MARBLE_CODEC_LZ4, 12},  {MARBLE_CODEC_LZ4, -10},
                                         {MARBLE_CODEC_GZIP, 1},  {MARBLE_CODEC_GZIP, 9}};
    uint8_t *data = make_data(200000, 7);
    for (size_t k = 0; k < sizeof good_levels / sizeof good_levels[0]; k++) {
        marble_codec c = (marble_codec)good_levels[k][0];
        char uri[64];
        snprintf(uri, sizeof uri, "mem://lvl%zu.%s", k, ext_of(c));
        marble_file *w = open_writer(fs, uri, c, good_levels[k][1]);
        write_all_to(w, data, 200000, 777);
        ASSERT_OK(marble_file_close(w, &err));
        expect_stream(fs, uri, c, data, 200000, 50000);
    }
    free(data);
    close_fs(fs);
}

TEST(open_compressed_flag)
{
    marble_fs *fs = new_fs();
    marble_error err;
    marble_file *f = NULL;
    const char *text = "hello, compressed world";
    ASSERT_OK(marble_fs_mkdir(fs, "mem://flag", 1, &err));
    ASSERT_OK(marble_fs_open(fs, "mem://flag/a.zst",
                             MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_COMPRESSED, &f,
                             &err));
    ASSERT_EQ_STR(marble_file_uri(f), "mem://flag/a.zst");
    ASSERT_OK(marble_file_append(f, text, strlen(text), &err));
    ASSERT_OK(marble_file_close(f, &err));
    void *raw;
    size_t rawn;
    ASSERT_OK(marble_fs_read_all(fs, "mem://flag/a.zst", &raw, &rawn, &err));
    ASSERT_GE_INT(rawn, 4);
    static const uint8_t zstd_magic[4] = {0x28, 0xB5, 0x2F, 0xFD};
    ASSERT_EQ_INT(memcmp(raw, zstd_magic, 4), 0);
    free(raw);
    ASSERT_OK(marble_fs_open(fs, "mem://flag/a.zst", MARBLE_OPEN_READ | MARBLE_OPEN_COMPRESSED, &f,
                             &err));
    char buf[64] = {0};
    ASSERT_OK(marble_file_read_exact(f, 0, buf, strlen(text), &err));
    ASSERT_EQ_STR(buf, text);
    ASSERT_OK(marble_file_close(f, &err));
    /* A truncated file read through the flag names the URI in its error. */
    ASSERT_OK(marble_fs_read_all(fs, "mem://flag/a.zst", &raw, &rawn, &err));
    ASSERT_OK(marble_fs_write_all(fs, "mem://flag/b.zst", raw, rawn - 3, 0, &err));
    free(raw);
    ASSERT_OK(marble_fs_open(fs, "mem://flag/b.zst", MARBLE_OPEN_READ | MARBLE_OPEN_COMPRESSED, &f,
                             &err));
    size_t got;
    ASSERT_EQ_INT(marble_file_read(f, 0, buf, sizeof buf, &got, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "mem://flag/b.zst");
    ASSERT_CONTAINS(err.message, "zstd");
    ASSERT_OK(marble_file_close(f, &err));
    /* Without a codec's extension the flag changes nothing. */
    ASSERT_OK(marble_fs_open(fs, "mem://flag/plain.txt",
                             MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_COMPRESSED, &f,
                             &err));
    ASSERT_OK(marble_file_write(f, 0, text, strlen(text), &err));
    ASSERT_OK(marble_file_close(f, &err));
    ASSERT_OK(marble_fs_read_all(fs, "mem://flag/plain.txt", &raw, &rawn, &err));
    ASSERT_EQ_INT(rawn, strlen(text));
    free(raw);
    close_fs(fs);
}

/* ---- damaged input ------------------------------------------------------------------------ */

static uint8_t *compressed_bytes(marble_fs *fs, marble_codec c, const uint8_t *data, size_t n,
                                 size_t *outn)
{
    char uri[64];
    marble_error err;
    snprintf(uri, sizeof uri, "mem://src.%s", ext_of(c));
    write_stream(fs, uri, c, data, n, 0);
    void *raw;
    ASSERT_OK(marble_fs_read_all(fs, uri, &raw, outn, &err));
    return raw;
}

/* Reads `uri` to its end; returns the status. The loop is bounded: each read that succeeds
 * returns at least one byte or ends it. */
static int read_damaged(marble_fs *fs, const char *uri, marble_codec c, uint8_t *scratch,
                        size_t cap, size_t *total, marble_error *err)
{
    marble_file *f = open_reader(fs, uri, c);
    int rc;
    *total = 0;
    for (;;) {
        size_t got = 0;
        rc = marble_file_read(f, *total, scratch, cap, &got, err);
        if (rc != MARBLE_OK || got == 0) break;
        *total += got;
        if (*total > 64 * MiB) FAIL("%s decoded more than 64 MiB from damaged input", uri);
    }
    marble_error cerr;
    ASSERT_OK(marble_file_close(f, &cerr));
    return rc;
}

static void truncated_input(marble_codec c)
{
    const size_t n = MiB + 4321;
    uint8_t *data = make_data(n, 8);
    marble_fs *fs = new_fs();
    marble_error err;
    size_t cn;
    uint8_t *comp = compressed_bytes(fs, c, data, n, &cn);
    ASSERT_GT_INT(cn, 200);
    size_t cuts[50 + 64 + 64];
    size_t ncuts = 0;
    for (size_t k = 0; k < 50; k++)
        cuts[ncuts++] = cn * k / 50;
    for (size_t k = 1; k <= 64; k++)
        cuts[ncuts++] = k;
    for (size_t k = 1; k <= 64; k++)
        cuts[ncuts++] = cn - k;
    uint8_t *scratch = malloc(256 << 10);
    char uri[64];
    snprintf(uri, sizeof uri, "mem://cut.%s", ext_of(c));
    for (size_t k = 0; k < ncuts; k++) {
        ASSERT_OK(marble_fs_write_all(fs, uri, comp, cuts[k], 0, &err));
        size_t total;
        int rc = read_damaged(fs, uri, c, scratch, 256 << 10, &total, &err);
        if (rc != MARBLE_ERR_CORRUPTION)
            FAIL("%s cut at %zu of %zu: status %d (%s), decoded %zu bytes", marble_codec_name(c),
                 cuts[k], cn, rc, err.message, total);
        ASSERT_CONTAINS(err.message, marble_codec_name(c));
        ASSERT_LE_INT(total, n);
    }
    /* The whole file still reads. */
    ASSERT_OK(marble_fs_write_all(fs, uri, comp, cn, 0, &err));
    expect_stream(fs, uri, c, data, n, 256 << 10);
    free(scratch);
    free(comp);
    close_fs(fs);
    free(data);
}

TEST(truncated_input_zstd)
{
    truncated_input(MARBLE_CODEC_ZSTD);
}

TEST(truncated_input_lz4)
{
    truncated_input(MARBLE_CODEC_LZ4);
}

TEST(truncated_input_gzip)
{
    truncated_input(MARBLE_CODEC_GZIP);
}

/* Flips bytes at many positions. Every damaged file either fails to read (MARBLE_ERR_CORRUPTION,
 * or in the frame header any error) or reads back exactly the original bytes: some flips change
 * nothing that matters (gzip's MTIME and OS bytes, a match offset that points at equal bytes in
 * periodic data). Most must be caught, and damage to the trailing checksum always is. */
static void corrupt_bytes(marble_codec c)
{
    const size_t n = 700000;
    const size_t header = 18;
    uint8_t *data = make_data(n, 9);
    marble_fs *fs = new_fs();
    marble_error err;
    size_t cn;
    uint8_t *comp = compressed_bytes(fs, c, data, n, &cn);
    uint8_t *scratch = malloc(n + 1);
    char uri[64];
    snprintf(uri, sizeof uri, "mem://flip.%s", ext_of(c));
    int tried = 0, caught = 0;
    for (size_t pos = 0; pos < cn; pos = pos < 64 ? pos + 1 : pos + cn / 23 + 1) {
        for (int variant = 0; variant < 2; variant++) {
            uint8_t saved = comp[pos];
            comp[pos] ^= variant ? 0xFF : 0x10;
            ASSERT_OK(marble_fs_write_all(fs, uri, comp, cn, 0, &err));
            comp[pos] = saved;
            size_t total;
            int rc = read_damaged(fs, uri, c, scratch, n + 1, &total, &err);
            tried++;
            if (rc == MARBLE_OK) {
                if (total != n || memcmp(scratch, data, n) != 0)
                    FAIL("%s: flipping byte %zu of %zu changed the data unnoticed",
                         marble_codec_name(c), pos, cn);
            } else {
                caught++;
                if (rc != MARBLE_ERR_CORRUPTION && pos >= header)
                    FAIL("%s: flipping byte %zu: status %d (%s)", marble_codec_name(c), pos, rc,
                         err.message);
                ASSERT_CONTAINS(err.message, marble_codec_name(c));
            }
        }
    }
    ASSERT_GE_INT(caught * 10, tried * 8);
    for (size_t pos = cn - 4; pos < cn; pos++) {
        comp[pos] ^= 0x01;
        ASSERT_OK(marble_fs_write_all(fs, uri, comp, cn, 0, &err));
        comp[pos] ^= 0x01;
        size_t total;
        ASSERT_EQ_INT(read_damaged(fs, uri, c, scratch, n + 1, &total, &err),
                      MARBLE_ERR_CORRUPTION);
    }
    /* Garbage after a complete frame is not a frame. */
    uint8_t *longer = malloc(cn + 16);
    memcpy(longer, comp, cn);
    memset(longer + cn, 0xA5, 16);
    ASSERT_OK(marble_fs_write_all(fs, uri, longer, cn + 16, 0, &err));
    size_t total;
    ASSERT_EQ_INT(read_damaged(fs, uri, c, scratch, n + 1, &total, &err), MARBLE_ERR_CORRUPTION);
    free(longer);
    free(scratch);
    free(comp);
    close_fs(fs);
    free(data);
}

TEST(corrupt_bytes_zstd)
{
    corrupt_bytes(MARBLE_CODEC_ZSTD);
}

TEST(corrupt_bytes_lz4)
{
    corrupt_bytes(MARBLE_CODEC_LZ4);
}

TEST(corrupt_bytes_gzip)
{
    corrupt_bytes(MARBLE_CODEC_GZIP);
}

TEST(random_garbage_is_rejected)
{
    marble_fs *fs = new_fs();
    marble_error err;
    uint8_t *junk = make_data(100000, 10);
    uint8_t *scratch = malloc(1 << 20);
    for (int ci = 0; ci < 3; ci++) {
        char uri[64];
        snprintf(uri, sizeof uri, "mem://junk.%s", ext_of(codecs[ci]));
        for (size_t len = 1; len <= 100000; len = len * 3 + 1) {
            ASSERT_OK(marble_fs_write_all(fs, uri, junk, len, 0, &err));
            size_t total;
            ASSERT_EQ_INT(read_damaged(fs, uri, codecs[ci], scratch, 1 << 20, &total, &err),
                          MARBLE_ERR_CORRUPTION);
        }
    }
    free(scratch);
    free(junk);
    close_fs(fs);
}

/* ---- a failing inner file ----------------------------------------------------------------- */

/* Forwards to a real file; writes fail once `budget` bytes were written, reads after `rbudget`. */
typedef struct failing_file {
    marble_file base;
    marble_file *real;
    size_t budget, rbudget;
    int fail_close;
} failing_file;

static int ff_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                   marble_error *err)
{
    failing_file *ff = (failing_file *)f;
    if (off + n > ff->rbudget) return marble_error_set(err, MARBLE_ERR_IO, "injected read error");
    return marble_file_read(ff->real, off, buf, n, nread, err);
}

static int ff_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    failing_file *ff = (failing_file *)f;
    if (n > ff->budget) return marble_error_set(err, MARBLE_ERR_NO_SPACE, "injected ENOSPC");
    ff->budget -= n;
    return marble_file_write(ff->real, off, buf, n, err);
}

static int ff_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "no append");
}

static int ff_size(marble_file *f, uint64_t *out, marble_error *err)
{
    return marble_file_size(((failing_file *)f)->real, out, err);
}

static int ff_sync(marble_file *f, int flags, marble_error *err)
{
    return marble_file_sync(((failing_file *)f)->real, flags, err);
}

static int ff_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    return MARBLE_ERR_UNSUPPORTED;
}

static int ff_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                  marble_error *err)
{
    return MARBLE_ERR_UNSUPPORTED;
}

static void ff_unmap(marble_file *f, const void *addr, size_t len, void *cookie) {}

static int ff_close(marble_file *f, marble_error *err)
{
    failing_file *ff = (failing_file *)f;
    int rc = marble_file_close(ff->real, err);
    if (rc == MARBLE_OK && ff->fail_close)
        rc = marble_error_set(err, MARBLE_ERR_IO, "injected close error");
    free(ff);
    return rc;
}

static int ff_control(marble_file *f, int op, void *arg)
{
    return MARBLE_ERR_UNSUPPORTED;
}

static const marble_file_methods ff_methods = {
    MARBLE_FILE_METHODS_VERSION,
    ff_read,
    ff_write,
    ff_append,
    ff_size,
    ff_sync,
    ff_truncate,
    ff_map,
    ff_unmap,
    ff_close,
    ff_control,
};

static marble_file *failing(marble_fs *fs, const char *uri, int flags, size_t budget,
                            size_t rbudget)
{
    marble_error err;
    failing_file *ff = calloc(1, sizeof *ff);
    ASSERT_NOT_NULL(ff);
    if (marble_fs_open(fs, uri, flags, &ff->real, &err) != MARBLE_OK)
        FAIL("open %s: %s", uri, err.message);
    ff->base.methods = &ff_methods;
    ff->base.caps = MARBLE_CAP_RANDOM_READ | MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_SYNC;
    ff->base.flags = flags;
    ff->budget = budget;
    ff->rbudget = rbudget;
    return &ff->base;
}

TEST(inner_failures_are_reported_and_sticky)
{
    const size_t n = 4 * MiB;
    uint8_t *data = make_data(n, 11);
    marble_fs *fs = new_fs();
    marble_error err;
    for (int ci = 0; ci < 3; ci++) {
        marble_codec c = codecs[ci];
        char uri[64];
        snprintf(uri, sizeof uri, "mem://fail.%s", ext_of(c));
        marble_file *w = NULL;
        ASSERT_OK(marble_file_compress_wrap(
            failing(fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE, 300000,
                    SIZE_MAX),
            c, 1, 0, &w, &err));
        int rc = MARBLE_OK;
        size_t off = 0;
        while (off < n && rc == MARBLE_OK) {
            rc = marble_file_write(w, off, data + off, 65536, &err);
            if (rc == MARBLE_OK) off += 65536;
        }
        ASSERT_EQ_INT(rc, MARBLE_ERR_NO_SPACE);
        ASSERT_CONTAINS(err.message, "injected ENOSPC");
        ASSERT_CONTAINS(err.message, marble_codec_name(c));
        marble_error_clear(&err);
        ASSERT_EQ_INT(marble_file_write(w, off, data, 10, &err), MARBLE_ERR_NO_SPACE);
        ASSERT_CONTAINS(err.message, "injected ENOSPC");
        ASSERT_EQ_INT(marble_file_sync(w, 0, &err), MARBLE_ERR_NO_SPACE);
        marble_error_clear(&err);
        ASSERT_EQ_INT(marble_file_close(w, &err), MARBLE_ERR_NO_SPACE);
        ASSERT_CONTAINS(err.message, "injected ENOSPC");

        /* A failure in close (the end of the frame does not fit) is returned by close. */
        ASSERT_OK(marble_file_compress_wrap(
            failing(fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE, 0,
                    SIZE_MAX),
            c, 1, 0, &w, &err));
        ASSERT_OK(marble_file_write(w, 0, data, 1000, &err));
        ASSERT_EQ_INT(marble_file_close(w, &err), MARBLE_ERR_NO_SPACE);

        /* So is a failure to close the inner file, after the frame was finished. */
        marble_file *ffile =
            failing(fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_TRUNCATE, SIZE_MAX, SIZE_MAX);
        ((failing_file *)ffile)->fail_close = 1;
        ASSERT_OK(marble_file_compress_wrap(ffile, c, 1, 0, &w, &err));
        ASSERT_OK(marble_file_write(w, 0, data, 5000, &err));
        ASSERT_EQ_INT(marble_file_close(w, &err), MARBLE_ERR_IO);
        ASSERT_CONTAINS(err.message, "injected close error");
        ASSERT_CONTAINS(err.message, marble_codec_name(c));
        expect_stream(fs, uri, c, data, 5000, 4096);

        /* Read errors of the inner file come through, named. */
        write_stream(fs, uri, c, data, n, 0);
        marble_file *r = NULL;
        ASSERT_OK(marble_file_compress_wrap(failing(fs, uri, MARBLE_OPEN_READ, 0, 600000), c, 0, 0,
                                            &r, &err));
        uint8_t *got;
        size_t gotn;
        ASSERT_EQ_INT(read_to_end(r, 100000, &got, &gotn, &err), MARBLE_ERR_IO);
        ASSERT_CONTAINS(err.message, "injected read error");
        ASSERT_CONTAINS(err.message, marble_codec_name(c));
        ASSERT_EQ_INT(memcmp(got, data, gotn), 0);
        free(got);
        ASSERT_OK(marble_file_close(r, &err));
    }
    close_fs(fs);
    free(data);
}

/* ---- interop with the command line tools -------------------------------------------------- */

static void write_file(const char *path, const uint8_t *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    ASSERT_NOT_NULL(fp);
    ASSERT_EQ_U64(fwrite(data, 1, n, fp), n);
    ASSERT_EQ_INT(fclose(fp), 0);
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    ASSERT_NOT_NULL(fp);
    size_t cap = 1 << 20, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (len == cap) buf = realloc(buf, cap *= 2);
        size_t got = fread(buf + len, 1, cap - len, fp);
        if (got == 0) break;
        len += got;
    }
    fclose(fp);
    *n = len;
    return buf;
}

static void interop(marble_codec c, const char *tool, const char *compress_args,
                    const char *decompress_args)
{
    if (!has_command(tool)) {
        printf("note: `%s` is not installed; skipping interop for %s\n", tool,
               marble_codec_name(c));
        return;
    }
    const size_t n = 3 * MiB + 11;
    uint8_t *data = make_data(n, 12);
    marble_fs *fs = new_fs();
    const char *dir = marble_test_tmpdir();
    char raw[512], ours[512], theirs[512], cat[512], out[512], cmd[2048];
    snprintf(raw, sizeof raw, "%s/raw.bin", dir);
    snprintf(ours, sizeof ours, "%s/ours.%s", dir, ext_of(c));
    snprintf(theirs, sizeof theirs, "%s/theirs.%s", dir, ext_of(c));
    snprintf(cat, sizeof cat, "%s/cat.%s", dir, ext_of(c));
    snprintf(out, sizeof out, "%s/out.bin", dir);
    write_file(raw, data, n);

    /* Ours, read by the tool. */
    write_stream(fs, ours, c, data, n, 65536 + 3);
    snprintf(cmd, sizeof cmd, "%s %s < '%s' > '%s'", tool, decompress_args, ours, out);
    run_shell(cmd);
    size_t gotn;
    uint8_t *got = read_file(out, &gotn);
    assert_same(got, gotn, data, n);
    free(got);

    /* The tool's, read by us; also two of its files concatenated. */
    snprintf(cmd, sizeof cmd, "%s %s < '%s' > '%s'", tool, compress_args, raw, theirs);
    run_shell(cmd);
    expect_stream(fs, theirs, c, data, n, 100000);
    snprintf(cmd, sizeof cmd, "cat '%s' '%s' > '%s'", theirs, theirs, cat);
    run_shell(cmd);
    uint8_t *twice = malloc(2 * n);
    memcpy(twice, data, n);
    memcpy(twice + n, data, n);
    expect_stream(fs, cat, c, twice, 2 * n, 77777);
    free(twice);

    /* Ours appended to theirs, read by the tool. */
    marble_error err;
    marble_file *f = NULL;
    ASSERT_OK(marble_fs_open(fs, theirs, MARBLE_OPEN_WRITE | MARBLE_OPEN_COMPRESSED, &f, &err));
    write_all_to(f, data, 1000, 0);
    ASSERT_OK(marble_file_close(f, &err));
    snprintf(cmd, sizeof cmd, "%s %s < '%s' > '%s'", tool, decompress_args, theirs, out);
    run_shell(cmd);
    got = read_file(out, &gotn);
    ASSERT_EQ_U64(gotn, n + 1000);
    assert_same(got, n, data, n);
    assert_same(got + n, 1000, data, 1000);
    free(got);
    close_fs(fs);
    free(data);
}

TEST(interop_gzip_tool)
{
    interop(MARBLE_CODEC_GZIP, "gzip", "-c", "-dc");
}

TEST(interop_zstd_tool)
{
    interop(MARBLE_CODEC_ZSTD, "zstd", "-q -c", "-q -dc");
}

TEST(interop_lz4_tool)
{
    interop(MARBLE_CODEC_LZ4, "lz4", "-q -c", "-q -dc");
}

/* ---- the compressing backend -------------------------------------------------------------- */

#define STREAM_CAPS                                                                                \
    (MARBLE_CAP_LIST | MARBLE_CAP_SYNC | MARBLE_CAP_SYNC_DIR | MARBLE_CAP_ATOMIC_RENAME |          \
     MARBLE_CAP_APPEND)

/* A registry where `scheme` is a `c` backend over the one registered as `parent`. */
static marble_fs *fs_with_codec(const char *scheme, marble_codec c, const char *parent,
                                marble_vfs **out)
{
    marble_fs *fs = new_fs();
    marble_error err;
    marble_vfs *v = NULL;
    if (marble_vfs_compress_create(marble_fs_backend(fs, parent), c, 0, &v, &err) != MARBLE_OK)
        FAIL("creating a %s backend over %s: %s", marble_codec_name(c), parent, err.message);
    if (marble_fs_register(fs, scheme, v, &err) != MARBLE_OK)
        FAIL("registering %s: %s", scheme, err.message);
    if (out) *out = v;
    return fs;
}

/* The suite through "<scheme>://<root>", then what it cannot see: the parent holds the bytes
 * compressed, in a file the stream wrapper reads. `root` is a path of `parent`. */
static void compressed_conformance(marble_codec c, const char *scheme, const char *parent,
                                   const char *root)
{
    marble_vfs *v;
    marble_fs *fs = fs_with_codec(scheme, c, parent, &v);
    marble_vfs *p = marble_fs_backend(fs, parent);
    char name[64];
    snprintf(name, sizeof name, "%s(%s)", marble_codec_name(c), p->name);
    ASSERT_EQ_STR(v->name, name);
    ASSERT_EQ_HEX(v->caps, p->caps & STREAM_CAPS);
    ASSERT_EQ_HEX(v->caps & (MARBLE_CAP_RANDOM_READ | MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_MAP |
                             MARBLE_CAP_TRUNCATE | MARBLE_CAP_DIRECT | MARBLE_CAP_FD),
                  0);
    char base[512], packed[600], raw[600];
    snprintf(base, sizeof base, "%s://%s", scheme, root);
    vfs_conformance(fs, base);

    const size_t n = 2 * MiB + 7;
    uint8_t *data = make_data(n, 21);
    snprintf(packed, sizeof packed, "%s/a/packed", base);
    if (!strcmp(parent, "mem"))
        snprintf(raw, sizeof raw, "mem://%s/a/packed", root);
    else
        snprintf(raw, sizeof raw, "%s/a/packed", root);
    marble_error err;
    ASSERT_OK(marble_fs_write_all(fs, packed, data, n, 1, &err));
    marble_stat st;
    ASSERT_OK(marble_fs_stat(fs, packed, &st, &err));
    ASSERT_LT_INT(st.size, n);
    void *stored;
    size_t stored_n;
    ASSERT_OK(marble_fs_read_all(fs, raw, &stored, &stored_n, &err));
    ASSERT_EQ_U64(st.size, stored_n);
    free(stored);
    expect_stream(fs, raw, c, data, n, 100000);
    void *back;
    size_t back_n;
    ASSERT_OK(marble_fs_read_all(fs, packed, &back, &back_n, &err));
    assert_same(back, back_n, data, n);
    free(back);
    ASSERT_OK(marble_fs_remove(fs, packed, &err));
    free(data);
    close_fs(fs);
}

TEST(conformance_compressed_zstd_over_local)
{
    char root[256];
    snprintf(root, sizeof root, "%s/c", marble_test_tmpdir());
    compressed_conformance(MARBLE_CODEC_ZSTD, "zstd", "file", root);
}

TEST(conformance_compressed_lz4_over_mem)
{
    compressed_conformance(MARBLE_CODEC_LZ4, "lz4", "mem", "cconf");
    compressed_conformance(MARBLE_CODEC_LZ4, "lz4", "mem", "deeper/still/cconf");
}

TEST(conformance_compressed_gzip_over_local)
{
    char root[256];
    snprintf(root, sizeof root, "%s/c", marble_test_tmpdir());
    compressed_conformance(MARBLE_CODEC_GZIP, "gz", "file", root);
}

TEST(compressing_backend_contract)
{
    marble_fs *fs = new_fs();
    marble_error err;
    marble_vfs *mem = marble_fs_backend(fs, "mem");
    marble_vfs *v = (marble_vfs *)&err;
    ASSERT_EQ_INT(marble_vfs_compress_create(NULL, MARBLE_CODEC_ZSTD, 0, &v, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "parent");
    ASSERT_NULL(v);
    ASSERT_EQ_INT(marble_vfs_compress_create(mem, MARBLE_CODEC_ZSTD, 0, NULL, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_vfs_compress_create(mem, MARBLE_CODEC_NONE, 0, &v, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(v);
    ASSERT_CONTAINS(err.message, "none");
    ASSERT_EQ_INT(marble_vfs_compress_create(mem, MARBLE_CODEC_GZIP, 10, &v, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "level 10");
    /* Destroying an unregistered backend frees only it: the parent goes on. */
    ASSERT_OK(marble_vfs_compress_create(mem, MARBLE_CODEC_LZ4, 12, &v, &err));
    v->destroy(v);
    ASSERT_OK(marble_fs_write_all(fs, "mem://still-here", "x", 1, 0, &err));
    close_fs(fs);

    const char *schemes[] = {"zstd", "lz4", "gz"};
    for (int ci = 0; ci < 3; ci++) {
        marble_codec c = codecs[ci];
        char uri[64], raw[64];
        snprintf(uri, sizeof uri, "%s://f", schemes[ci]);
        fs = fs_with_codec(schemes[ci], c, "mem", &v);
        ASSERT_EQ_INT(v->caps & MARBLE_CAP_DIRECT, 0);
        marble_file *f = (marble_file *)&err;
        ASSERT_EQ_INT(marble_fs_open(fs, uri,
                                     MARBLE_OPEN_READ | MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &f,
                                     &err),
                      MARBLE_ERR_UNSUPPORTED);
        ASSERT_NULL(f);
        ASSERT_CONTAINS(err.message, v->name);
        ASSERT_CONTAINS(err.message, "not both");
        ASSERT_EQ_INT(marble_fs_open(fs, uri,
                                     MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_DIRECT,
                                     &f, &err),
                      MARBLE_ERR_UNSUPPORTED);

        /* Without TRUNCATE a writer adds frames: the file reads as the old bytes, then the new. */
        ASSERT_OK(marble_fs_write_all(fs, uri, "abc", 3, 0, &err));
        ASSERT_OK(marble_fs_open(fs, uri, MARBLE_OPEN_WRITE, &f, &err));
        ASSERT_EQ_INT(f->caps & (MARBLE_CAP_RANDOM_READ | MARBLE_CAP_RANDOM_WRITE | MARBLE_CAP_MAP |
                                 MARBLE_CAP_TRUNCATE | MARBLE_CAP_FD),
                      0);
        ASSERT_TRUE(f->caps & MARBLE_CAP_APPEND);
        ASSERT_EQ_INT(marble_file_write(f, 5, "x", 1, &err), MARBLE_ERR_UNSUPPORTED);
        ASSERT_CONTAINS(err.message, uri);
        ASSERT_OK(marble_file_write(f, 0, "def", 3, &err));
        ASSERT_EQ_INT(marble_file_truncate(f, 0, &err), MARBLE_ERR_UNSUPPORTED);
        uint64_t size;
        ASSERT_OK(marble_file_size(f, &size, &err));
        ASSERT_EQ_U64(size, 3);
        ASSERT_OK(marble_file_close(f, &err));
        void *got;
        size_t gotn;
        ASSERT_OK(marble_fs_read_all(fs, uri, &got, &gotn, &err));
        ASSERT_EQ_INT(gotn, 6);
        ASSERT_TRUE(!memcmp(got, "abcdef", 6));
        free(got);

        /* stat is the parent's: the stored size. */
        marble_stat st;
        ASSERT_OK(marble_fs_stat(fs, uri, &st, &err));
        snprintf(raw, sizeof raw, "mem://f");
        ASSERT_OK(marble_fs_read_all(fs, raw, &got, &gotn, &err));
        ASSERT_EQ_U64(st.size, gotn);
        ASSERT_NE_INT(st.size, 6);
        free(got);

        /* Reads are sequential; corrupt stored bytes are reported as such. */
        ASSERT_OK(marble_fs_open(fs, uri, MARBLE_OPEN_READ, &f, &err));
        char buf[8];
        size_t n;
        ASSERT_EQ_INT(marble_file_read(f, 2, buf, 2, &n, &err), MARBLE_ERR_UNSUPPORTED);
        ASSERT_CONTAINS(err.message, "sequentially");
        ASSERT_EQ_INT(marble_file_size(f, &size, &err), MARBLE_ERR_UNSUPPORTED);
        ASSERT_OK(marble_file_read(f, 0, buf, 2, &n, &err));
        ASSERT_EQ_INT(n, 2);
        ASSERT_OK(marble_file_close(f, &err));
        ASSERT_OK(marble_fs_write_all(fs, raw, "not compressed", 14, 0, &err));
        ASSERT_EQ_INT(marble_fs_read_all(fs, uri, &got, &gotn, &err), MARBLE_ERR_CORRUPTION);
        ASSERT_CONTAINS(err.message, marble_codec_name(c));
        ASSERT_NULL(got);
        snprintf(raw, sizeof raw, "%s://nope", schemes[ci]);
        ASSERT_EQ_INT(marble_fs_open(fs, raw, MARBLE_OPEN_READ, &f, &err), MARBLE_ERR_NOT_FOUND);
        ASSERT_CONTAINS(err.message, "nope");
        close_fs(fs);
    }
}

/* A file written through the backend is a standard file of its format: the stream wrapper
 * reads it from the parent, and so does the codec's command line tool; the tool's own files read
 * through the backend. */
static void backend_writes_standard_files(marble_codec c, const char *scheme, const char *tool,
                                          const char *compress_args, const char *decompress_args)
{
    static const uint8_t magic[][4] = {
        {0x28, 0xB5, 0x2F, 0xFD}, {0x04, 0x22, 0x4D, 0x18}, {0x1F, 0x8B, 0x08, 0x00}};
    static const size_t magic_n[] = {4, 4, 3};
    const size_t n = 3 * MiB + 11;
    uint8_t *data = make_data(n, 22);
    marble_fs *fs = fs_with_codec(scheme, c, "file", NULL);
    marble_error err;
    const char *dir = marble_test_tmpdir();
    char plain[512], uri[600], raw[512], theirs[512], out[512], cmd[2048];
    snprintf(plain, sizeof plain, "%s/valid.%s", dir, ext_of(c));
    snprintf(uri, sizeof uri, "%s://%s", scheme, plain);
    marble_file *f = NULL;
    ASSERT_OK(marble_fs_open(fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE,
                             &f, &err));
    write_all_to(f, data, n / 2, 65536 + 3);
    ASSERT_OK(marble_file_sync(f, MARBLE_SYNC_DATA, &err));
    ASSERT_OK(marble_file_write(f, n / 2, data + n / 2, n - n / 2, &err));
    ASSERT_OK(marble_file_close(f, &err));

    ASSERT_OK(marble_fs_open(fs, plain, MARBLE_OPEN_READ, &f, &err));
    uint8_t head[4];
    ASSERT_OK(marble_file_read_exact(f, 0, head, 4, &err));
    ASSERT_OK(marble_file_close(f, &err));
    ASSERT_EQ_INT(memcmp(head, magic[(int)c - 1], magic_n[(int)c - 1]), 0);
    expect_stream(fs, plain, c, data, n, 100000);
    ASSERT_OK(marble_fs_open(fs, plain, MARBLE_OPEN_READ | MARBLE_OPEN_COMPRESSED, &f, &err));
    uint8_t *got;
    size_t gotn;
    ASSERT_OK(read_to_end(f, MiB, &got, &gotn, &err));
    assert_same(got, gotn, data, n);
    free(got);
    ASSERT_OK(marble_file_close(f, &err));

    if (!has_command(tool)) {
        printf("note: `%s` is not installed; skipping its check of the backend's %s files\n", tool,
               marble_codec_name(c));
    } else {
        snprintf(out, sizeof out, "%s/valid.out", dir);
        snprintf(cmd, sizeof cmd, "%s %s < '%s' > '%s'", tool, decompress_args, plain, out);
        run_shell(cmd);
        got = read_file(out, &gotn);
        assert_same(got, gotn, data, n);
        free(got);

        snprintf(raw, sizeof raw, "%s/valid.raw", dir);
        snprintf(theirs, sizeof theirs, "%s/theirs.%s", dir, ext_of(c));
        write_file(raw, data, n);
        snprintf(cmd, sizeof cmd, "%s %s < '%s' > '%s'", tool, compress_args, raw, theirs);
        run_shell(cmd);
        snprintf(uri, sizeof uri, "%s://%s", scheme, theirs);
        void *back;
        size_t back_n;
        ASSERT_OK(marble_fs_read_all(fs, uri, &back, &back_n, &err));
        assert_same(back, back_n, data, n);
        free(back);
    }
    close_fs(fs);
    free(data);
}

TEST(backend_writes_valid_zst)
{
    backend_writes_standard_files(MARBLE_CODEC_ZSTD, "zstd", "zstd", "-q -c", "-q -dc");
}

TEST(backend_writes_valid_lz4_and_gz)
{
    backend_writes_standard_files(MARBLE_CODEC_LZ4, "lz4", "lz4", "-q -c", "-q -dc");
    backend_writes_standard_files(MARBLE_CODEC_GZIP, "gz", "gzip", "-c", "-dc");
}
