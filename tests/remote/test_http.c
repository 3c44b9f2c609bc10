/* Tests of the HTTP(S) backend against a real nginx on 127.0.0.1 (skipped, and counted as
 * passed, when /usr/sbin/nginx is missing): the read-only conformance checks, stat, ranged
 * reads, read-ahead, error mapping, a server that ignores Range, retries, timeouts, a server
 * that goes away, and concurrent readers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance_ro.h"
#include "marble/remote.h"
#include "marble/vfs.h"
#include "marble_test.h"
#include "servers.h"

#define DATA_SIZE ((size_t)5 << 20)

/* Locations every test server has. */
static const char *const LOCATIONS =
    "    location /forbidden/ { return 403; }\n"
    "    location /busy/ { return 503; }\n"
    "    location /norange/ { max_ranges 0; }\n"
    "    location /nohead/ { if ($request_method = HEAD) { return 405; } }\n"
    "    location /slow/ { limit_rate 4k; }\n";

typedef struct env {
    test_server srv;
    char root[600];
    char base[64]; /* "http://127.0.0.1:PORT" */
    marble_fs *fs;
    marble_vfs *v;
    unsigned char *data; /* DATA_SIZE bytes: data.bin, norange/data.bin, slow/data.bin */
} env;

static void test_options(marble_http_options *o)
{
    marble_http_options_init(o);
    o->connect_timeout_ms = 2000;
    o->timeout_ms = 10000;
    o->max_retries = 2;
    o->retry_base_ms = 5;
    o->readahead = 256 * 1024;
}

static void env_use(env *e, const marble_http_options *o)
{
    marble_vfs *v = NULL;
    marble_error err;
    if (marble_vfs_http_create(o, 0, &v, &err) != MARBLE_OK)
        FAIL("marble_vfs_http_create: %s", err.message);
    if (marble_fs_register(e->fs, "http", v, &err) != MARBLE_OK)
        FAIL("marble_fs_register: %s", err.message);
    e->v = v;
}

/* Starts nginx over a fresh fixture; returns 0 (and the test should return) without nginx. */
static int env_start(env *e, const marble_http_options *o)
{
    memset(e, 0, sizeof *e);
    if (!test_have_nginx()) {
        fprintf(stderr, "SKIP: %s not found; the HTTP backend tests need nginx\n", TEST_NGINX);
        return 0;
    }
    const char *tmp = marble_test_tmpdir();
    snprintf(e->root, sizeof e->root, "%s/www", tmp);
    test_mkdir(e->root);
    conf_ro_write_fixture(e->root);
    e->data = malloc(DATA_SIZE);
    ASSERT_NOT_NULL(e->data);
    conf_fill(e->data, DATA_SIZE, 7);
    const char *dirs[] = {"norange", "nohead", "slow", "forbidden", "dir with space"};
    char p[1024];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", e->root, dirs[i]);
        test_mkdir(p);
    }
    const char *copies[] = {"data.bin", "norange/data.bin", "nohead/data.bin", "slow/data.bin",
                            "forbidden/data.bin"};
    for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", e->root, copies[i]);
        test_write_file(p, e->data, DATA_SIZE);
    }
    snprintf(p, sizeof p, "%s/dir with space/a b+c%%&=.txt", e->root);
    test_write_file(p, "spaces and more", 15);
    snprintf(p, sizeof p, "%s/\xc3\xbc.txt", e->root);
    test_write_file(p, "umlaut", 6);
    snprintf(p, sizeof p, "%s/one", e->root);
    test_write_file(p, "1", 1);
    test_nginx_start(&e->srv, tmp, e->root, LOCATIONS);
    snprintf(e->base, sizeof e->base, "http://127.0.0.1:%d", e->srv.port);
    marble_error err;
    if (marble_fs_create(&e->fs, &err) != MARBLE_OK) FAIL("marble_fs_create: %s", err.message);
    marble_http_options def;
    test_options(&def);
    env_use(e, o ? o : &def);
    return 1;
}

static void env_stop(env *e)
{
    marble_error err;
    if (e->fs && marble_fs_destroy(e->fs, &err) != MARBLE_OK)
        FAIL("marble_fs_destroy: %s", err.message);
    e->fs = NULL;
    test_server_stop(&e->srv);
    free(e->data);
    e->data = NULL;
}

static const char *uri(env *e, const char *path)
{
    static __thread char buf[4][1024];
    static __thread int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", e->base, path);
    return b;
}

static marble_http_stats stats(env *e)
{
    marble_http_stats s;
    memset(&s, 0, sizeof s);
    ASSERT_OK(e->v->control(e->v, MARBLE_HTTP_CONTROL_GET_STATS, &s));
    return s;
}

static char access_log_path[700];
static const char *access_log(env *e)
{
    snprintf(access_log_path, sizeof access_log_path, "%s/access.log", e->srv.prefix);
    return access_log_path;
}

#define OK_(expr)                                                                                  \
    do {                                                                                           \
        marble_error e_;                                                                           \
        marble_error_clear(&e_);                                                                   \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s -> %s: %s", #expr, marble_status_name(rc_), e_.message);    \
    } while (0)

TEST(http_registered_by_default)
{
    marble_fs *fs = NULL;
    marble_error err;
    ASSERT_OK(marble_fs_create(&fs, &err));
    marble_vfs *h = marble_fs_backend(fs, "http"), *hs = marble_fs_backend(fs, "https");
    ASSERT_NOT_NULL(h);
    ASSERT_NOT_NULL(hs);
    ASSERT_EQ_STR(h->name, "http");
    ASSERT_EQ_STR(hs->name, "https");
    ASSERT_EQ_INT(h->caps, MARBLE_CAP_RANDOM_READ);
    ASSERT_EQ_INT(hs->caps, MARBLE_CAP_RANDOM_READ);
    marble_stat st;
    ASSERT_EQ_INT(marble_fs_stat(fs, "http:///nohost", &st, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "no host");
    ASSERT_EQ_INT(marble_fs_stat(fs, "http://bad host/x", &st, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_OK(marble_fs_destroy(fs, &err));

    marble_http_options o;
    marble_http_options_init(&o);
    ASSERT_EQ_INT(o.max_retries, 4);
    ASSERT_EQ_INT(o.readahead, 1 << 20);
    o.timeout_ms = 0;
    marble_vfs *v = NULL;
    ASSERT_EQ_INT(marble_vfs_http_create(&o, 0, &v, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_OK(marble_vfs_http_create(NULL, 1, &v, &err));
    v->destroy(v);
}

TEST(http_conformance_ro)
{
    env e;
    if (!env_start(&e, NULL)) return;
    vfs_conformance_ro(e.fs, e.base);
    marble_http_options o;
    test_options(&o);
    o.readahead = 0;
    env_use(&e, &o);
    vfs_conformance_ro(e.fs, e.base);
    env_stop(&e);
}

TEST(http_stat_sizes)
{
    env e;
    if (!env_start(&e, NULL)) return;
    struct {
        const char *path;
        uint64_t size;
    } cases[] = {
        {"empty", 0},     {"one", 1}, {"hello", 11}, {"big", CONF_RO_BIG}, {"data.bin", DATA_SIZE},
        {"sub/nested", 6}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        marble_stat st;
        OK_(marble_fs_stat(e.fs, uri(&e, cases[i].path), &st, &e_));
        ASSERT_EQ_U64(st.size, cases[i].size);
        ASSERT_EQ_INT(st.is_dir, 0);
        ASSERT_GT_INT(st.mtime_ns, 0);
    }
    marble_http_stats s = stats(&e);
    ASSERT_EQ_U64(s.heads, 6);
    ASSERT_EQ_U64(s.gets, 0);
    /* HEAD refused (405): a ranged GET of byte 0 gives the size. */
    marble_stat st;
    OK_(marble_fs_stat(e.fs, uri(&e, "nohead/data.bin"), &st, &e_));
    ASSERT_EQ_U64(st.size, DATA_SIZE);
    s = stats(&e);
    ASSERT_EQ_U64(s.heads, 7);
    ASSERT_EQ_U64(s.gets, 1);
    ASSERT_LT_INT(s.bytes, 4096); /* not the whole body */
    marble_file *f;
    OK_(marble_fs_open(e.fs, uri(&e, "nohead/data.bin"), MARBLE_OPEN_READ, &f, &e_));
    unsigned char buf[1000];
    OK_(marble_file_read_exact(f, 4000000, buf, sizeof buf, &e_));
    ASSERT_TRUE(!memcmp(buf, e.data + 4000000, sizeof buf));
    OK_(marble_file_close(f, &e_));
    env_stop(&e);
}

static void check_ranges(env *e, marble_file *f)
{
    const uint64_t offs[] = {0,
                             1,
                             4095,
                             4096,
                             65535,
                             262143,
                             262144,
                             1000003,
                             DATA_SIZE / 2,
                             DATA_SIZE - 4097,
                             DATA_SIZE - 1,
                             DATA_SIZE,
                             DATA_SIZE + 1,
                             DATA_SIZE * 3};
    const size_t sizes[] = {0, 1, 2, 100, 4095, 4096, 4097, 65536, 300000, 1 << 20};
    unsigned char *buf = malloc(1 << 20);
    ASSERT_NOT_NULL(buf);
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            size_t got = 12345;
            OK_(marble_file_read(f, offs[i], buf, sizes[j], &got, &e_));
            size_t want = offs[i] >= DATA_SIZE                     ? 0
                          : sizes[j] < DATA_SIZE - (size_t)offs[i] ? sizes[j]
                                                                   : DATA_SIZE - (size_t)offs[i];
            if (got != want)
                FAIL("read(%llu, %zu) gave %zu bytes, want %zu", (unsigned long long)offs[i],
                     sizes[j], got, want);
            if (want && memcmp(buf, e->data + offs[i], want) != 0)
                FAIL("read(%llu, %zu): content differs", (unsigned long long)offs[i], sizes[j]);
        }
    }
    free(buf);
}

TEST(http_ranged_reads_at_many_offsets)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_file *f;
    OK_(marble_fs_open(e.fs, uri(&e, "data.bin"), MARBLE_OPEN_READ, &f, &e_));
    check_ranges(&e, f);
    OK_(marble_file_close(f, &e_));
    /* Without read-ahead each read within the file is exactly one ranged GET. */
    marble_http_options o;
    test_options(&o);
    o.readahead = 0;
    env_use(&e, &o);
    OK_(marble_fs_open(e.fs, uri(&e, "data.bin"), MARBLE_OPEN_READ, &f, &e_));
    check_ranges(&e, f);
    OK_(marble_file_close(f, &e_));
    marble_http_stats s = stats(&e);
    ASSERT_EQ_U64(s.heads, 1);
    ASSERT_EQ_U64(s.gets, 11 * 9); /* 11 offsets inside the file, 9 non-empty sizes */
    ASSERT_EQ_U64(s.retries, 0);
    ASSERT_EQ_U64(s.full_body_reads, 0);
    env_stop(&e);
}

TEST(http_sequential_reads_use_readahead)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_file *f;
    OK_(marble_fs_open(e.fs, uri(&e, "data.bin"), MARBLE_OPEN_READ, &f, &e_));
    int log_before = test_wait_lines(access_log(&e), "GET /data.bin", 0, 0);
    unsigned char buf[10000];
    size_t pos = 0, got;
    do {
        OK_(marble_file_read(f, pos, buf, sizeof buf, &got, &e_));
        if (memcmp(buf, e.data + pos, got) != 0) FAIL("content differs at %zu", pos);
        pos += got;
    } while (got == sizeof buf);
    ASSERT_EQ_INT(pos, DATA_SIZE);
    marble_http_stats s = stats(&e);
    ASSERT_EQ_U64(s.heads, 1);
    ASSERT_EQ_U64(s.gets, DATA_SIZE / (256 * 1024)); /* 20 windows, not 525 reads */
    ASSERT_EQ_INT(test_wait_lines(access_log(&e), "GET /data.bin", log_before + 20, 5000),
                  log_before + 20);
    /* Jumps around: each read is its own ranged GET of just what was asked. */
    const uint64_t jumps[] = {4000000, 17, 3000000, 1234567};
    for (size_t i = 0; i < 4; i++) {
        OK_(marble_file_read(f, jumps[i], buf, 100, &got, &e_));
        ASSERT_EQ_INT(got, 100);
        ASSERT_TRUE(!memcmp(buf, e.data + jumps[i], 100));
    }
    marble_http_stats s2 = stats(&e);
    ASSERT_EQ_U64(s2.gets, s.gets + 4);
    ASSERT_LT_INT(s2.bytes - s.bytes, 1000);
    /* Continuing where the last one ended starts a window again. */
    for (uint64_t off = 1234667; off < 1234667 + 50000; off += 500) {
        OK_(marble_file_read(f, off, buf, 500, &got, &e_));
        ASSERT_TRUE(!memcmp(buf, e.data + off, 500));
    }
    ASSERT_EQ_U64(stats(&e).gets, s2.gets + 1);
    OK_(marble_file_close(f, &e_));
    env_stop(&e);
}

TEST(http_not_found_names_the_url)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_error err;
    marble_stat st;
    marble_file *f = NULL;
    char want[256];
    snprintf(want, sizeof want, "%s/no%%20such%%20file.bin", e.base);
    ASSERT_EQ_INT(marble_fs_stat(e.fs, uri(&e, "no such file.bin"), &st, &err),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_CONTAINS(err.message, want);
    ASSERT_CONTAINS(err.message, "404");
    ASSERT_EQ_INT(marble_fs_open(e.fs, uri(&e, "no such file.bin"), MARBLE_OPEN_READ, &f, &err),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_CONTAINS(err.message, want);
    ASSERT_NULL(f);
    int exists = -1;
    OK_(marble_fs_exists(e.fs, uri(&e, "no such file.bin"), &exists, &e_));
    ASSERT_EQ_INT(exists, 0);
    ASSERT_EQ_U64(stats(&e).retries, 0); /* 404 is final */
    env_stop(&e);
}

TEST(http_forbidden_is_permission)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_error err;
    marble_stat st;
    marble_file *f = NULL;
    ASSERT_EQ_INT(marble_fs_stat(e.fs, uri(&e, "forbidden/data.bin"), &st, &err),
                  MARBLE_ERR_PERMISSION);
    ASSERT_CONTAINS(err.message, "403");
    ASSERT_CONTAINS(err.message, "/forbidden/data.bin");
    ASSERT_EQ_INT(marble_fs_open(e.fs, uri(&e, "forbidden/data.bin"), MARBLE_OPEN_READ, &f, &err),
                  MARBLE_ERR_PERMISSION);
    ASSERT_EQ_U64(stats(&e).retries, 0);
    env_stop(&e);
}

TEST(http_server_without_ranges)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_file *f;
    OK_(marble_fs_open(e.fs, uri(&e, "norange/data.bin"), MARBLE_OPEN_READ, &f, &e_));
    uint64_t size;
    OK_(marble_file_size(f, &size, &e_));
    ASSERT_EQ_U64(size, DATA_SIZE);
    check_ranges(&e, f);
    marble_http_stats s = stats(&e);
    ASSERT_EQ_U64(s.full_body_reads, 1);
    ASSERT_EQ_U64(s.gets, 1); /* the body once, every read served from it */
    OK_(marble_file_close(f, &e_));
    /* Same without read-ahead (the first read lands in the caller's path). */
    marble_http_options o;
    test_options(&o);
    o.readahead = 0;
    env_use(&e, &o);
    OK_(marble_fs_open(e.fs, uri(&e, "norange/data.bin"), MARBLE_OPEN_READ, &f, &e_));
    check_ranges(&e, f);
    ASSERT_EQ_U64(stats(&e).gets, 1);
    OK_(marble_file_close(f, &e_));
    /* Beyond the buffering limit: a clear error. */
    size_t limit = 100000;
    ASSERT_OK(e.v->control(e.v, MARBLE_HTTP_CONTROL_SET_BODY_LIMIT, &limit));
    OK_(marble_fs_open(e.fs, uri(&e, "norange/data.bin"), MARBLE_OPEN_READ, &f, &e_));
    unsigned char buf[100];
    size_t got;
    marble_error err;
    ASSERT_EQ_INT(marble_file_read(f, 10, buf, sizeof buf, &got, &err), MARBLE_ERR_LIMIT);
    ASSERT_CONTAINS(err.message, "Range");
    ASSERT_CONTAINS(err.message, "/norange/data.bin");
    OK_(marble_file_close(f, &e_));
    env_stop(&e);
}

TEST(http_paths_are_url_encoded)
{
    env e;
    if (!env_start(&e, NULL)) return;
    void *data;
    size_t n;
    OK_(marble_fs_read_all(e.fs, uri(&e, "dir with space/a b+c%&=.txt"), &data, &n, &e_));
    ASSERT_EQ_INT(n, 15);
    ASSERT_TRUE(!memcmp(data, "spaces and more", 15));
    free(data);
    OK_(marble_fs_read_all(e.fs, uri(&e, "\xc3\xbc.txt"), &data, &n, &e_));
    ASSERT_EQ_INT(n, 6);
    ASSERT_TRUE(!memcmp(data, "umlaut", 6));
    free(data);
    ASSERT_EQ_INT(test_wait_lines(access_log(&e), "/dir%20with%20space/a%20b+c%25&=.txt", 1, 5000),
                  2); /* HEAD + GET */
    env_stop(&e);
}

TEST(http_server_stopped_mid_read)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_file *f;
    OK_(marble_fs_open(e.fs, uri(&e, "data.bin"), MARBLE_OPEN_READ, &f, &e_));
    unsigned char buf[4096];
    size_t got;
    OK_(marble_file_read(f, 0, buf, sizeof buf, &got, &e_));
    ASSERT_TRUE(!memcmp(buf, e.data, sizeof buf));
    test_server_stop(&e.srv);
    /* Still inside the read-ahead window: served. */
    OK_(marble_file_read(f, 4096, buf, sizeof buf, &got, &e_));
    ASSERT_TRUE(!memcmp(buf, e.data + 4096, sizeof buf));
    marble_http_stats before = stats(&e);
    int64_t t0 = test_now_ms();
    marble_error err;
    ASSERT_EQ_INT(marble_file_read(f, 3000000, buf, sizeof buf, &got, &err), MARBLE_ERR_IO);
    ASSERT_LT_INT(test_now_ms() - t0, 5000);
    ASSERT_CONTAINS(err.message, "/data.bin");
    ASSERT_CONTAINS(err.message, "3 attempts");
    marble_http_stats after = stats(&e);
    ASSERT_EQ_U64(after.retries - before.retries, 2);
    ASSERT_EQ_U64(after.requests - before.requests, 3);
    OK_(marble_file_close(f, &e_));
    env_stop(&e);
}

TEST(http_timeouts)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_http_options o;
    test_options(&o);
    o.timeout_ms = 300;
    o.max_retries = 1;
    env_use(&e, &o);
    /* A server that accepts and never answers. */
    int port;
    int fd = test_silent_listener(&port);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", port);
    marble_error err;
    marble_stat st;
    int64_t t0 = test_now_ms();
    ASSERT_EQ_INT(marble_fs_stat(e.fs, u, &st, &err), MARBLE_ERR_TIMEOUT);
    ASSERT_LT_INT(test_now_ms() - t0, 5000);
    ASSERT_CONTAINS(err.message, u);
    ASSERT_CONTAINS(err.message, "2 attempts");
    close(fd);
    /* A server that answers, slowly (4 KiB/s): the HEAD is quick, the read times out. */
    marble_file *f;
    OK_(marble_fs_open(e.fs, uri(&e, "slow/data.bin"), MARBLE_OPEN_READ, &f, &e_));
    unsigned char *buf = malloc(1 << 20);
    size_t got;
    t0 = test_now_ms();
    ASSERT_EQ_INT(marble_file_read(f, 0, buf, 1 << 20, &got, &err), MARBLE_ERR_TIMEOUT);
    ASSERT_LT_INT(test_now_ms() - t0, 5000);
    ASSERT_CONTAINS(err.message, "/slow/data.bin");
    free(buf);
    OK_(marble_file_close(f, &e_));
    env_stop(&e);
}

TEST(http_retries_5xx)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_http_options o;
    test_options(&o);
    o.max_retries = 3;
    o.retry_base_ms = 2;
    env_use(&e, &o);
    marble_error err;
    marble_stat st;
    ASSERT_EQ_INT(marble_fs_stat(e.fs, uri(&e, "busy/x"), &st, &err), MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, "503");
    ASSERT_CONTAINS(err.message, "/busy/x");
    ASSERT_CONTAINS(err.message, "4 attempts");
    marble_http_stats s = stats(&e);
    ASSERT_EQ_U64(s.requests, 4);
    ASSERT_EQ_U64(s.retries, 3);
    ASSERT_EQ_INT(test_wait_lines(access_log(&e), "/busy/x HTTP", 4, 5000), 4);
    test_sleep_ms(100);
    ASSERT_EQ_INT(test_count_lines(access_log(&e), "/busy/x HTTP"), 4);
    env_stop(&e);
}

typedef struct reader {
    env *e;
    marble_file *shared;
    uint64_t seed;
    int bad;
    char msg[256];
} reader;

static void *reader_main(void *p)
{
    reader *r = p;
    marble_error err;
    marble_file *own = NULL;
    if (marble_fs_open(r->e->fs, uri(r->e, "data.bin"), MARBLE_OPEN_READ, &own, &err) !=
        MARBLE_OK) {
        snprintf(r->msg, sizeof r->msg, "%s", err.message);
        r->bad++;
        return NULL;
    }
    unsigned char *buf = malloc(70000);
    uint64_t x = r->seed;
    for (int i = 0; i < 60; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        size_t len = 1 + (size_t)(x >> 40) % 70000;
        size_t off = (size_t)(x >> 13) % (DATA_SIZE - len);
        marble_file *f = (i & 1) ? own : r->shared;
        size_t got;
        if (marble_file_read(f, off, buf, len, &got, &err) != MARBLE_OK) {
            snprintf(r->msg, sizeof r->msg, "%s", err.message);
            r->bad++;
        } else if (got != len || memcmp(buf, r->e->data + off, len) != 0) {
            r->bad++;
        }
        /* And a few sequential steps on the own handle (read-ahead window). */
        if (i % 10 == 0)
            for (size_t k = 0; k < 5 && off + (k + 1) * 1000 <= DATA_SIZE; k++)
                if (marble_file_read(own, off + k * 1000, buf, 1000, &got, &err) != MARBLE_OK ||
                    memcmp(buf, r->e->data + off + k * 1000, 1000) != 0)
                    r->bad++;
    }
    free(buf);
    marble_file_close(own, NULL);
    return NULL;
}

TEST(http_concurrent_reads)
{
    env e;
    if (!env_start(&e, NULL)) return;
    marble_file *shared;
    OK_(marble_fs_open(e.fs, uri(&e, "data.bin"), MARBLE_OPEN_READ, &shared, &e_));
    reader rs[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        rs[i] = (reader){&e, shared, (uint64_t)i * 7919 + 1, 0, ""};
        ASSERT_OK(pthread_create(&th[i], NULL, reader_main, &rs[i]));
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        if (rs[i].bad) FAIL("reader %d: %d bad reads (%s)", i, rs[i].bad, rs[i].msg);
    }
    OK_(marble_file_close(shared, &e_));
    ASSERT_EQ_U64(stats(&e).retries, 0);
    env_stop(&e);
}
