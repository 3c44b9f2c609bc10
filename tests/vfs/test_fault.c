/* Tests of the fault-injection backend: pass-through, nth and random failures, sweeps, crashes. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "conformance.h"
#include "marble/vfs.h"

#define OK(expr)                                                                                   \
    do {                                                                                           \
        marble_error e_;                                                                           \
        marble_error_clear(&e_);                                                                   \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s -> %s: %s", #expr, marble_status_name(rc_), e_.message);    \
    } while (0)

/* A registry with "fault" wrapping "mem" or "file"; names are relative to a private directory. */
typedef struct env {
    marble_fs *fs;
    marble_vfs *fault;
    int local;
    char root[600]; /* the directory as the parent backend sees it */
    char buf[8][1200];
    int k;
} env;

static void env_open(env *t, int local)
{
    memset(t, 0, sizeof *t);
    t->local = local;
    OK(marble_fs_create(&t->fs, &e_));
    marble_vfs *parent = marble_fs_backend(t->fs, local ? "file" : "mem");
    ASSERT_NOT_NULL(parent);
    OK(marble_vfs_fault_create(parent, &t->fault, &e_));
    OK(marble_fs_register(t->fs, "fault", t->fault, &e_));
    if (local)
        snprintf(t->root, sizeof t->root, "%s/t", marble_test_tmpdir());
    else
        snprintf(t->root, sizeof t->root, "t");
    char uri[700];
    snprintf(uri, sizeof uri, "%s%s", local ? "" : "mem://", t->root);
    OK(marble_fs_mkdir(t->fs, uri, 1, &e_));
}

static void env_close(env *t)
{
    marble_error err;
    if (marble_fs_destroy(t->fs, &err) != MARBLE_OK) FAIL("marble_fs_destroy: %s", err.message);
    if (t->local) {
        char cmd[800];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->root);
        if (system(cmd) != 0) FAIL("%s", cmd);
    }
}

/* URI of `name` through the wrapper, and through the parent. */
static const char *F(env *t, const char *name)
{
    char *b = t->buf[t->k++ % 8];
    snprintf(b, sizeof t->buf[0], "fault://%s%s%s", t->root, name[0] ? "/" : "", name);
    return b;
}

static const char *P(env *t, const char *name)
{
    char *b = t->buf[t->k++ % 8];
    snprintf(b, sizeof t->buf[0], "%s%s%s%s", t->local ? "" : "mem://", t->root, name[0] ? "/" : "",
             name);
    return b;
}

/* The name an error message uses for `name`. */
static const char *shown_name(env *t, const char *name)
{
    char *b = t->buf[t->k++ % 8];
    snprintf(b, sizeof t->buf[0], "%s%s/%s", t->local ? "" : "mem://", t->root, name);
    return b;
}

static void put(env *t, const char *name, const char *text)
{
    OK(marble_fs_write_all(t->fs, P(t, name), text, strlen(text), 1, &e_));
}

static void expect_content(env *t, const char *name, const char *text)
{
    void *data = NULL;
    size_t n = 0;
    marble_error err;
    int rc = marble_fs_read_all(t->fs, P(t, name), &data, &n, &err);
    if (rc != MARBLE_OK) FAIL("reading %s: %s (wanted \"%s\")", name, err.message, text);
    if (n != strlen(text) || memcmp(data, text, n) != 0)
        FAIL("%s holds \"%.*s\" (%zu bytes), wanted \"%s\"", name, (int)n, (char *)data, n, text);
    free(data);
}

static void expect_absent(env *t, const char *name)
{
    int exists = -1;
    OK(marble_fs_exists(t->fs, P(t, name), &exists, &e_));
    if (exists) FAIL("%s exists, wanted it absent", name);
}

static marble_file *fopen_w(env *t, const char *name, int flags)
{
    marble_file *f = NULL;
    OK(marble_fs_open(t->fs, F(t, name), MARBLE_OPEN_READ | MARBLE_OPEN_WRITE | flags, &f, &e_));
    return f;
}

static void wr(marble_file *f, uint64_t off, const char *text)
{
    OK(marble_file_write(f, off, text, strlen(text), &e_));
}

static void sync_dir(env *t)
{
    OK(marble_fs_sync_dir(t->fs, F(t, ""), &e_));
}

static void crash(env *t)
{
    OK(marble_fault_crash(t->fault, &e_));
}

/* ---- pass-through ---------------------------------------------------------------------- */

TEST(conformance_over_mem)
{
    env t;
    env_open(&t, 0);
    ASSERT_EQ_STR(t.fault->name, "fault(mem)");
    ASSERT_EQ_HEX(t.fault->caps, marble_fs_backend(t.fs, "mem")->caps);
    vfs_conformance(t.fs, "fault://conf");
    env_close(&t);
}

TEST(conformance_over_local)
{
    env t;
    env_open(&t, 1);
    ASSERT_EQ_STR(t.fault->name, "fault(local)");
    ASSERT_EQ_HEX(t.fault->caps, marble_fs_backend(t.fs, "file")->caps & ~(uint32_t)MARBLE_CAP_FD);
    char base[800];
    snprintf(base, sizeof base, "fault://%s/conf", marble_test_tmpdir());
    vfs_conformance(t.fs, base);
    env_close(&t);
}

TEST(pass_through_counts_calls)
{
    for (int local = 0; local < 2; local++) {
        env t;
        env_open(&t, local);
        marble_file *f = fopen_w(&t, "a", MARBLE_OPEN_CREATE);
        wr(f, 0, "hello");
        OK(marble_file_append(f, " world", 6, &e_));
        char buf[16];
        OK(marble_file_read_exact(f, 0, buf, 11, &e_));
        ASSERT_TRUE(!memcmp(buf, "hello world", 11));
        OK(marble_file_sync(f, MARBLE_SYNC_DATA, &e_));
        OK(marble_file_truncate(f, 5, &e_));
        int fd = -1;
        ASSERT_EQ_INT(marble_file_control(f, MARBLE_FCNTL_GET_FD, &fd), MARBLE_ERR_UNSUPPORTED);
        marble_file *inner = NULL;
        OK(marble_file_control(f, MARBLE_FCNTL_GET_INNER, &inner));
        ASSERT_NOT_NULL(inner);
        ASSERT_EQ_INT(f->caps & MARBLE_CAP_FD, 0);
        OK(marble_file_close(f, &e_));
        expect_content(&t, "a", "hello");
        OK(marble_fs_rename(t.fs, F(&t, "a"), F(&t, "b"), 1, &e_));
        OK(marble_fs_remove(t.fs, F(&t, "b"), &e_));
        expect_absent(&t, "b");
        ASSERT_EQ_U64(marble_fault_count(t.fault, MARBLE_FAULT_OPEN), 1);
        ASSERT_EQ_U64(marble_fault_count(t.fault, MARBLE_FAULT_READ), 1);
        ASSERT_EQ_U64(marble_fault_count(t.fault, MARBLE_FAULT_WRITE), 3);
        ASSERT_EQ_U64(marble_fault_count(t.fault, MARBLE_FAULT_SYNC), 2);
        ASSERT_EQ_U64(marble_fault_count(t.fault, MARBLE_FAULT_RENAME), 1);
        ASSERT_EQ_U64(marble_fault_count(t.fault, MARBLE_FAULT_REMOVE), 1);
        ASSERT_EQ_U64(marble_fault_count(t.fault, MARBLE_FAULT_ALL), 9);
        ASSERT_EQ_U64(marble_fault_count(marble_fs_backend(t.fs, "mem"), MARBLE_FAULT_ALL), 0);
        env_close(&t);
    }
}

/* ---- nth-call failures ----------------------------------------------------------------- */

static const int errnos[2] = {EIO, ENOSPC};
static const char *errno_names[2] = {"EIO", "ENOSPC"};
static const int codes[2] = {MARBLE_ERR_IO, MARBLE_ERR_NO_SPACE};

static void expect_injected(int rc, const marble_error *err, int which, const char *op,
                            const char *what)
{
    ASSERT_EQ_INT(rc, codes[which]);
    char want[64];
    snprintf(want, sizeof want, "injected %s on %s #", errno_names[which], op);
    ASSERT_CONTAINS(err->message, want);
    ASSERT_CONTAINS(err->message, what);
}

TEST(nth_open)
{
    for (int w = 0; w < 2; w++) {
        env t;
        env_open(&t, w);
        marble_error err;
        marble_file *f = NULL;
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_OPEN, 2, errnos[w]);
        OK(marble_fs_open(t.fs, F(&t, "x1"), MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &f, &e_));
        OK(marble_file_close(f, &e_));
        int rc =
            marble_fs_open(t.fs, F(&t, "x2"), MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &f, &err);
        expect_injected(rc, &err, w, "open", shown_name(&t, "x2"));
        ASSERT_CONTAINS(err.message, "open #2 of");
        ASSERT_NULL(f);
        expect_absent(&t, "x2");
        OK(marble_fs_open(t.fs, F(&t, "x3"), MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, &f, &e_));
        OK(marble_file_close(f, &e_));
        env_close(&t);
    }
}

TEST(nth_read)
{
    for (int w = 0; w < 2; w++) {
        env t;
        env_open(&t, w);
        put(&t, "r", "0123456789");
        marble_file *f;
        OK(marble_fs_open(t.fs, F(&t, "r"), MARBLE_OPEN_READ, &f, &e_));
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_READ, 3, errnos[w]);
        char buf[4];
        marble_error err;
        OK(marble_file_read_exact(f, 0, buf, 4, &e_));
        OK(marble_file_read_exact(f, 4, buf, 4, &e_));
        size_t got = 99;
        int rc = marble_file_read(f, 8, buf, 2, &got, &err);
        expect_injected(rc, &err, w, "read", shown_name(&t, "r"));
        ASSERT_EQ_INT(got, 0);
        OK(marble_file_read_exact(f, 8, buf, 2, &e_));
        ASSERT_TRUE(!memcmp(buf, "89", 2));
        /* A map is a read too. */
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_READ, 1, errnos[w]);
        marble_mapping *m = NULL;
        ASSERT_EQ_INT(marble_file_map(f, 0, 0, &m, &err), codes[w]);
        ASSERT_NULL(m);
        OK(marble_file_map(f, 0, 0, &m, &e_));
        ASSERT_TRUE(!memcmp(marble_mapping_data(m), "0123456789", 10));
        marble_mapping_release(m);
        OK(marble_file_close(f, &e_));
        env_close(&t);
    }
}

TEST(nth_write)
{
    for (int w = 0; w < 2; w++) {
        env t;
        env_open(&t, w);
        marble_file *f = fopen_w(&t, "w", MARBLE_OPEN_CREATE);
        marble_error err;
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_WRITE, 2, errnos[w]);
        wr(f, 0, "aaaa");
        int rc = marble_file_write(f, 2, "bbbb", 4, &err);
        expect_injected(rc, &err, w, "write", shown_name(&t, "w"));
        expect_content(&t, "w", "aaaa");
        wr(f, 4, "cc");
        expect_content(&t, "w", "aaaacc");
        /* Append and truncate are writes. */
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_WRITE, 1, errnos[w]);
        rc = marble_file_append(f, "dd", 2, &err);
        expect_injected(rc, &err, w, "append", shown_name(&t, "w"));
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_WRITE, 1, errnos[w]);
        rc = marble_file_truncate(f, 1, &err);
        expect_injected(rc, &err, w, "truncate", shown_name(&t, "w"));
        expect_content(&t, "w", "aaaacc");
        OK(marble_file_append(f, "dd", 2, &e_));
        expect_content(&t, "w", "aaaaccdd");
        OK(marble_file_close(f, &e_));
        env_close(&t);
    }
}

TEST(nth_sync)
{
    for (int w = 0; w < 2; w++) {
        env t;
        env_open(&t, w);
        marble_file *f = fopen_w(&t, "s", MARBLE_OPEN_CREATE);
        marble_error err;
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_SYNC, 2, errnos[w]);
        OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
        int rc = marble_file_sync(f, MARBLE_SYNC_DATA, &err);
        expect_injected(rc, &err, w, "sync", shown_name(&t, "s"));
        /* Not retried into success (see sync_failure_is_sticky). */
        ASSERT_EQ_INT(marble_file_sync(f, MARBLE_SYNC_DATA, &err), MARBLE_ERR_IO);
        ASSERT_CONTAINS(err.message, "failed earlier");
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_SYNC, 1, errnos[w]);
        rc = marble_fs_sync_dir(t.fs, F(&t, ""), &err);
        ASSERT_EQ_INT(rc, codes[w]);
        ASSERT_CONTAINS(err.message, "on sync_dir #");
        sync_dir(&t);
        OK(marble_file_close(f, &e_));
        env_close(&t);
    }
}

TEST(nth_rename)
{
    for (int w = 0; w < 2; w++) {
        env t;
        env_open(&t, w);
        put(&t, "a", "A");
        put(&t, "b", "B");
        marble_error err;
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_RENAME, 1, errnos[w]);
        int rc = marble_fs_rename(t.fs, F(&t, "a"), F(&t, "b"), 1, &err);
        expect_injected(rc, &err, w, "rename", shown_name(&t, "a"));
        expect_content(&t, "a", "A");
        expect_content(&t, "b", "B");
        OK(marble_fs_rename(t.fs, F(&t, "a"), F(&t, "b"), 1, &e_));
        expect_absent(&t, "a");
        expect_content(&t, "b", "A");
        env_close(&t);
    }
}

TEST(nth_remove)
{
    for (int w = 0; w < 2; w++) {
        env t;
        env_open(&t, w);
        put(&t, "a", "A");
        put(&t, "b", "B");
        marble_error err;
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_REMOVE | MARBLE_FAULT_RENAME, 2, errnos[w]);
        OK(marble_fs_remove(t.fs, F(&t, "a"), &e_));
        int rc = marble_fs_remove(t.fs, F(&t, "b"), &err);
        expect_injected(rc, &err, w, "remove", shown_name(&t, "b"));
        expect_content(&t, "b", "B");
        OK(marble_fs_remove(t.fs, F(&t, "b"), &e_));
        expect_absent(&t, "b");
        /* n = 0 disarms. */
        put(&t, "c", "C");
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_ALL, 1, errnos[w]);
        marble_fault_fail_nth(t.fault, MARBLE_FAULT_ALL, 0, errnos[w]);
        OK(marble_fs_remove(t.fs, F(&t, "c"), &e_));
        env_close(&t);
    }
}

/* ---- sweeps ---------------------------------------------------------------------------- */

#define CHUNKS 10
#define CHUNK 8

static char chunk_byte(int i)
{
    return (char)('a' + i);
}

/* Writes "tmp" in CHUNKS writes, syncs it and renames it durably over "final". */
static int replace_file(env *t, marble_error *err)
{
    marble_file *f;
    MARBLE_RETURN_NOT_OK(
        marble_fs_open(t->fs, F(t, "tmp"),
                       MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE, &f, err));
    int rc = MARBLE_OK;
    for (int i = 0; i < CHUNKS && rc == MARBLE_OK; i++) {
        char buf[CHUNK];
        memset(buf, chunk_byte(i), CHUNK);
        rc = marble_file_write(f, (uint64_t)i * CHUNK, buf, CHUNK, err);
    }
    if (rc == MARBLE_OK) rc = marble_file_sync(f, MARBLE_SYNC_FULL, err);
    int crc = marble_file_close(f, rc == MARBLE_OK ? err : NULL);
    if (rc == MARBLE_OK) rc = crc;
    if (rc == MARBLE_OK) rc = marble_fs_rename(t->fs, F(t, "tmp"), F(t, "final"), 1, err);
    return rc;
}

static void chunks_text(char *out, int n)
{
    for (int i = 0; i < n; i++)
        memset(out + i * CHUNK, chunk_byte(i), CHUNK);
    out[n * CHUNK] = '\0';
}

TEST(sweep_replace_file)
{
    for (int local = 0; local < 2; local++) {
        env t;
        env_open(&t, local);
        put(&t, "final", "old");
        OK(replace_file(&t, &e_));
        const uint64_t K = marble_fault_count(t.fault, MARBLE_FAULT_ALL);
        ASSERT_EQ_U64(K, 1 + CHUNKS + 1 + 1 + 1); /* open, writes, sync, rename, sync_dir */
        env_close(&t);
        char all[CHUNKS * CHUNK + 1];
        chunks_text(all, CHUNKS);
        for (uint64_t n = 1; n <= K; n++) {
            for (int w = 0; w < 2; w++) {
                env_open(&t, local);
                put(&t, "final", "old");
                marble_fault_fail_nth(t.fault, MARBLE_FAULT_ALL, n, errnos[w]);
                marble_error err;
                int rc = replace_file(&t, &err);
                ASSERT_EQ_INT(rc, codes[w]);
                ASSERT_CONTAINS(err.message, "injected");
                ASSERT_EQ_U64(marble_fault_count(t.fault, MARBLE_FAULT_ALL), n);
                if (n == 1) {
                    expect_absent(&t, "tmp");
                    expect_content(&t, "final", "old");
                } else if (n <= 1 + CHUNKS) {
                    char part[CHUNKS * CHUNK + 1];
                    chunks_text(part, (int)n - 2);
                    expect_content(&t, "tmp", part);
                    expect_content(&t, "final", "old");
                } else if (n <= 1 + CHUNKS + 2) {
                    expect_content(&t, "tmp", all);
                    expect_content(&t, "final", "old");
                } else {
                    expect_absent(&t, "tmp");
                    expect_content(&t, "final", all);
                }
                /* Exactly once: the same operation now goes through. */
                OK(replace_file(&t, &e_));
                expect_content(&t, "final", all);
                env_close(&t);
            }
        }
    }
}

/* ---- random failures ------------------------------------------------------------------- */

static uint64_t random_pattern(int local, uint64_t seed, double p, int *failures)
{
    env t;
    env_open(&t, local);
    marble_file *f = fopen_w(&t, "r", MARBLE_OPEN_CREATE);
    marble_fault_fail_random(t.fault, MARBLE_FAULT_WRITE | MARBLE_FAULT_READ, p, seed, ENOSPC);
    uint64_t pattern = 0;
    *failures = 0;
    for (int i = 0; i < 64; i++) {
        marble_error err;
        char c = (char)i;
        int rc = (i % 2) ? marble_file_write(f, (uint64_t)i, &c, 1, &err)
                         : marble_file_read(f, 0, &c, 1, &(size_t){0}, &err);
        if (rc != MARBLE_OK) {
            ASSERT_EQ_INT(rc, MARBLE_ERR_NO_SPACE);
            ASSERT_CONTAINS(err.message, "injected ENOSPC");
            pattern |= 1ull << i;
            (*failures)++;
        }
    }
    marble_fault_fail_random(t.fault, MARBLE_FAULT_ALL, 0, 0, EIO);
    OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    OK(marble_file_close(f, &e_));
    env_close(&t);
    return pattern;
}

TEST(random_is_deterministic)
{
    int n1, n2, n3, n0;
    uint64_t a = random_pattern(0, 42, 0.3, &n1);
    uint64_t b = random_pattern(1, 42, 0.3, &n2);
    uint64_t c = random_pattern(0, 43, 0.3, &n3);
    ASSERT_EQ_HEX(a, b);
    ASSERT_EQ_INT(n1, n2);
    ASSERT_TRUE(a != c);
    ASSERT_TRUE(n1 > 0 && n1 < 64);
    ASSERT_EQ_HEX(random_pattern(0, 42, 0, &n0), 0);
    ASSERT_EQ_HEX(random_pattern(0, 7, 1.0, &n0), ~0ull);
}

/* ---- power cuts ------------------------------------------------------------------------ */

static void expect_dead(marble_file *f)
{
    marble_error err;
    char buf[4];
    size_t got;
    uint64_t size;
    ASSERT_EQ_INT(marble_file_read(f, 0, buf, 1, &got, &err), MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, "crashed");
    ASSERT_EQ_INT(marble_file_write(f, 0, "x", 1, &err), MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, "crashed");
    ASSERT_EQ_INT(marble_file_append(f, "x", 1, &err), MARBLE_ERR_IO);
    ASSERT_EQ_INT(marble_file_truncate(f, 0, &err), MARBLE_ERR_IO);
    ASSERT_EQ_INT(marble_file_sync(f, MARBLE_SYNC_FULL, &err), MARBLE_ERR_IO);
    ASSERT_EQ_INT(marble_file_size(f, &size, &err), MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, "crashed");
    OK(marble_file_close(f, &e_));
}

static void crash_data(int local)
{
    env t;
    env_open(&t, local);
    /* Synced data survives; overwrites, extensions and truncations since vanish. */
    marble_file *f = fopen_w(&t, "d", MARBLE_OPEN_CREATE);
    sync_dir(&t);
    wr(f, 0, "0123456789");
    OK(marble_file_sync(f, MARBLE_SYNC_DATA, &e_));
    wr(f, 3, "XYZ");
    wr(f, 8, "ABCDEFGH");
    OK(marble_file_append(f, "tail", 4, &e_));
    wr(f, 4, "q");
    expect_content(&t, "d", "012XqZ67ABCDEFGHtail");
    /* Partly synced: a second file synced after some writes keeps exactly those. */
    marble_file *g = fopen_w(&t, "g", MARBLE_OPEN_CREATE);
    sync_dir(&t);
    wr(g, 0, "first");
    OK(marble_file_sync(g, MARBLE_SYNC_FULL, &e_));
    wr(g, 5, "second");
    OK(marble_file_truncate(g, 2, &e_));
    wr(g, 10, "z");
    /* A synced file cut short and not synced again comes back whole. */
    put(&t, "cut", "abcdefghij");
    marble_file *h = fopen_w(&t, "cut", 0);
    OK(marble_file_truncate(h, 3, &e_));
    wr(h, 1, "__");
    OK(marble_file_append(h, "++", 2, &e_));
    expect_content(&t, "cut", "a__++");
    /* Reopened with TRUNCATE and rewritten, unsynced: the old content returns. */
    put(&t, "tr", "previous");
    marble_file *k = fopen_w(&t, "tr", MARBLE_OPEN_TRUNCATE);
    wr(k, 0, "new");
    /* Written and synced through a second handle: durable. */
    put(&t, "two", "1111");
    marble_file *k1 = fopen_w(&t, "two", 0), *k2 = fopen_w(&t, "two", 0);
    wr(k1, 0, "22");
    OK(marble_file_sync(k2, MARBLE_SYNC_FULL, &e_));
    wr(k2, 2, "33");

    /* Overwritten through a write-only handle (the old bytes are read through another one). */
    put(&t, "wo", "abcdef");
    marble_file *wo = NULL;
    OK(marble_fs_open(t.fs, F(&t, "wo"), MARBLE_OPEN_WRITE, &wo, &e_));
    wr(wo, 1, "XX");
    expect_content(&t, "wo", "aXXdef");

    crash(&t);
    expect_content(&t, "wo", "abcdef");
    expect_content(&t, "d", "0123456789");
    expect_content(&t, "g", "first");
    expect_content(&t, "cut", "abcdefghij");
    expect_content(&t, "tr", "previous");
    expect_content(&t, "two", "2211");
    expect_dead(f);
    expect_dead(g);
    expect_dead(h);
    expect_dead(k);
    expect_dead(k1);
    expect_dead(k2);
    expect_dead(wo);

    /* After the reboot the wrapper works, and a second power cut starts from the new state. */
    f = fopen_w(&t, "d", 0);
    wr(f, 10, "+more");
    OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    wr(f, 0, "lost");
    crash(&t);
    expect_content(&t, "d", "0123456789+more");
    expect_dead(f);
    env_close(&t);
}

TEST(crash_data_mem)
{
    crash_data(0);
}

TEST(crash_data_local)
{
    crash_data(1);
}

static void crash_create(int local)
{
    env t;
    env_open(&t, local);
    marble_file *f;
    /* Created, synced, directory synced: stays with its synced content. */
    f = fopen_w(&t, "c2", MARBLE_OPEN_CREATE);
    wr(f, 0, "two");
    OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    OK(marble_file_close(f, &e_));
    sync_dir(&t);
    /* Directory synced but not the data: stays, empty. */
    f = fopen_w(&t, "c3", MARBLE_OPEN_CREATE);
    sync_dir(&t);
    wr(f, 0, "three");
    OK(marble_file_close(f, &e_));
    /* Created and synced after the last directory sync: gone. */
    f = fopen_w(&t, "c1", MARBLE_OPEN_CREATE);
    wr(f, 0, "one");
    OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    OK(marble_file_close(f, &e_));
    /* Created after the last directory sync, still open: gone. */
    marble_file *open_one = fopen_w(&t, "c4", MARBLE_OPEN_CREATE);
    wr(open_one, 0, "four");
    OK(marble_file_sync(open_one, MARBLE_SYNC_FULL, &e_));
    /* Created and synced in a subdirectory whose parent entry is durable (mkdir is). */
    char sub[700];
    snprintf(sub, sizeof sub, "%s", F(&t, "sub"));
    OK(marble_fs_mkdir(t.fs, sub, 0, &e_));
    OK(marble_fs_write_all(t.fs, F(&t, "sub/s1"), "s1", 2, 1, &e_));
    OK(marble_fs_write_all(t.fs, F(&t, "sub/s2"), "s2", 2, 0, &e_));

    crash(&t);
    expect_absent(&t, "c1");
    expect_content(&t, "c2", "two");
    expect_content(&t, "c3", "");
    expect_absent(&t, "c4");
    expect_content(&t, "sub/s1", "s1");
    expect_absent(&t, "sub/s2");
    expect_dead(open_one);
    env_close(&t);
}

TEST(crash_create_mem)
{
    crash_create(0);
}

TEST(crash_create_local)
{
    crash_create(1);
}

static void crash_rename(int local)
{
    env t;
    env_open(&t, local);
    put(&t, "a", "A");
    put(&t, "x", "X");
    put(&t, "y", "Y");
    put(&t, "p", "P");
    put(&t, "q", "Q");
    put(&t, "final", "old");
    /* Not made durable: undone, including the replaced target. */
    OK(marble_fs_rename(t.fs, F(&t, "a"), F(&t, "b"), 0, &e_));
    OK(marble_fs_rename(t.fs, F(&t, "x"), F(&t, "y"), 0, &e_));
    /* A chain and a swap through a temporary name. */
    OK(marble_fs_rename(t.fs, F(&t, "p"), F(&t, "tmp"), 0, &e_));
    OK(marble_fs_rename(t.fs, F(&t, "q"), F(&t, "p"), 0, &e_));
    OK(marble_fs_rename(t.fs, F(&t, "tmp"), F(&t, "q"), 0, &e_));
    expect_content(&t, "p", "Q");
    expect_content(&t, "q", "P");
    /* The classic replace: write a temporary, sync it, rename it over, no directory sync. */
    OK(marble_fs_write_all(t.fs, F(&t, "final.tmp"), "new", 3, 0, &e_));
    OK(marble_fs_rename(t.fs, F(&t, "final.tmp"), F(&t, "final"), 0, &e_));
    crash(&t);
    expect_content(&t, "a", "A");
    expect_absent(&t, "b");
    expect_content(&t, "x", "X");
    expect_content(&t, "y", "Y");
    expect_content(&t, "p", "P");
    expect_content(&t, "q", "Q");
    expect_absent(&t, "tmp");
    expect_content(&t, "final", "old");
    expect_absent(&t, "final.tmp");

    /* Made durable: kept. */
    OK(marble_fs_rename(t.fs, F(&t, "a"), F(&t, "b"), 1, &e_));
    OK(marble_fs_rename(t.fs, F(&t, "x"), F(&t, "y"), 0, &e_));
    sync_dir(&t);
    OK(marble_fs_write_all(t.fs, F(&t, "final.tmp"), "new", 3, 0, &e_));
    OK(marble_fs_rename(t.fs, F(&t, "final.tmp"), F(&t, "final"), 1, &e_));
    /* Renamed while open with unsynced writes: the name is durable, the writes are not. */
    marble_file *f = fopen_w(&t, "b", 0);
    wr(f, 0, "unsynced");
    OK(marble_fs_rename(t.fs, F(&t, "b"), F(&t, "b2"), 1, &e_));
    wr(f, 8, "more");
    crash(&t);
    expect_absent(&t, "a");
    expect_absent(&t, "b");
    expect_content(&t, "b2", "A");
    expect_absent(&t, "x");
    expect_content(&t, "y", "X");
    expect_content(&t, "final", "new");
    expect_absent(&t, "final.tmp");
    expect_dead(f);

    /* Across directories, only the target directory synced: the source name comes back too. */
    OK(marble_fs_mkdir(t.fs, F(&t, "d1"), 0, &e_));
    OK(marble_fs_mkdir(t.fs, F(&t, "d2"), 0, &e_));
    put(&t, "d1/m", "M");
    OK(marble_fs_rename(t.fs, F(&t, "d1/m"), F(&t, "d2/m"), 0, &e_));
    OK(marble_fs_sync_dir(t.fs, F(&t, "d2"), &e_));
    crash(&t);
    expect_content(&t, "d1/m", "M");
    expect_content(&t, "d2/m", "M");
    env_close(&t);
}

TEST(crash_rename_mem)
{
    crash_rename(0);
}

TEST(crash_rename_local)
{
    crash_rename(1);
}

static void crash_remove(int local)
{
    env t;
    env_open(&t, local);
    put(&t, "r1", "one");
    put(&t, "r2", "two");
    put(&t, "r3", "three");
    OK(marble_fs_remove(t.fs, F(&t, "r1"), &e_));
    /* Unsynced writes before the remove are not part of what comes back. */
    marble_file *f = fopen_w(&t, "r3", 0);
    wr(f, 0, "THREE!");
    OK(marble_file_close(f, &e_));
    OK(marble_fs_remove(t.fs, F(&t, "r3"), &e_));
    /* Removed, then a new file under the same name: the old one comes back. */
    OK(marble_fs_remove(t.fs, F(&t, "r2"), &e_));
    OK(marble_fs_write_all(t.fs, F(&t, "r2"), "new two", 7, 0, &e_));
    expect_absent(&t, "r1");
    crash(&t);
    expect_content(&t, "r1", "one");
    expect_content(&t, "r2", "two");
    expect_content(&t, "r3", "three");

    /* Directory synced: gone for good. */
    OK(marble_fs_remove(t.fs, F(&t, "r1"), &e_));
    sync_dir(&t);
    /* Removed while open; a sync through the open handle after the remove counts. */
    marble_file *g = fopen_w(&t, "r2", 0);
    OK(marble_fs_remove(t.fs, F(&t, "r2"), &e_));
    wr(g, 0, "TWO");
    OK(marble_file_sync(g, MARBLE_SYNC_FULL, &e_));
    wr(g, 0, "lost");
    crash(&t);
    expect_absent(&t, "r1");
    expect_content(&t, "r2", "TWO");
    expect_dead(g);
    env_close(&t);
}

TEST(crash_remove_mem)
{
    crash_remove(0);
}

TEST(crash_remove_local)
{
    crash_remove(1);
}

/* Several threads append and sync their own files through the wrapper, then the power goes:
 * each file holds exactly what was synced last. */
typedef struct writer {
    env *t;
    int id;
    size_t synced;
    int bad;
} writer;

static void *writer_thread(void *p)
{
    writer *w = p;
    char uri[1200];
    snprintf(uri, sizeof uri, "fault://%s/w%d", w->t->root, w->id);
    marble_file *f = NULL;
    if (marble_fs_open(w->t->fs, uri, MARBLE_OPEN_READ | MARBLE_OPEN_WRITE, &f, NULL)) {
        w->bad = 1;
        return NULL;
    }
    char line[16];
    size_t size = 0;
    for (int i = 0; i < 200; i++) {
        int n = snprintf(line, sizeof line, "%d.%03d\n", w->id, i);
        if (marble_file_append(f, line, (size_t)n, NULL) != MARBLE_OK) w->bad = 1;
        size += (size_t)n;
        char back[16];
        if (marble_file_read_exact(f, size - (size_t)n, back, (size_t)n, NULL) != MARBLE_OK ||
            memcmp(back, line, (size_t)n) != 0)
            w->bad = 1;
        if (i % 7 == 0) {
            if (marble_file_sync(f, MARBLE_SYNC_DATA, NULL) != MARBLE_OK) w->bad = 1;
            w->synced = size;
        }
    }
    marble_file_close(f, NULL);
    return NULL;
}

TEST(crash_concurrent_writers)
{
    for (int local = 0; local < 2; local++) {
        env t;
        env_open(&t, local);
        enum { N = 4 };
        writer ws[N];
        pthread_t th[N];
        for (int i = 0; i < N; i++) {
            char name[32];
            snprintf(name, sizeof name, "w%d", i);
            put(&t, name, "");
            ws[i] = (writer){&t, i, 0, 0};
        }
        for (int i = 0; i < N; i++)
            ASSERT_OK(pthread_create(&th[i], NULL, writer_thread, &ws[i]));
        for (int i = 0; i < N; i++)
            pthread_join(th[i], NULL);
        crash(&t);
        for (int i = 0; i < N; i++) {
            ASSERT_EQ_INT(ws[i].bad, 0);
            char name[32];
            snprintf(name, sizeof name, "w%d", i);
            marble_stat st;
            OK(marble_fs_stat(t.fs, P(&t, name), &st, &e_));
            ASSERT_EQ_U64(st.size, ws[i].synced);
        }
        env_close(&t);
    }
}

/* ---- a failed sync is not retried into success ----------------------------------------- */

/* Every sync of `f` fails, naming the failure (`which` of errnos[] on sync #nth). */
static void expect_sync_fails_earlier(marble_file *f, const char *what, int which, uint64_t nth)
{
    marble_error err;
    ASSERT_EQ_INT(marble_file_sync(f, MARBLE_SYNC_FULL, &err), MARBLE_ERR_IO);
    char want[96];
    snprintf(want, sizeof want, "failed earlier (injected %s on sync #%" PRIu64 ")",
             errno_names[which], nth);
    ASSERT_CONTAINS(err.message, want);
    ASSERT_CONTAINS(err.message, what);
    ASSERT_CONTAINS(err.message, "may be lost");
    ASSERT_EQ_INT(marble_file_sync(f, MARBLE_SYNC_DATA, &err), MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, want);
}

static void sync_failure_is_sticky(int local)
{
    env t;
    env_open(&t, local);
    marble_file *f = fopen_w(&t, "s", MARBLE_OPEN_CREATE);
    sync_dir(&t);
    wr(f, 0, "durable");
    OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    wr(f, 0, "LOST");
    OK(marble_file_append(f, "+tail", 5, &e_));
    const uint64_t nth = marble_fault_count(t.fault, MARBLE_FAULT_SYNC) + 1;
    marble_fault_fail_nth(t.fault, MARBLE_FAULT_SYNC, 1, EIO);
    marble_error err;
    ASSERT_EQ_INT(marble_file_sync(f, MARBLE_SYNC_FULL, &err), MARBLE_ERR_IO);
    ASSERT_CONTAINS(err.message, "injected EIO on sync #");
    /* The retry, later writes, other handles, a reopen: every sync of the file fails. */
    expect_sync_fails_earlier(f, shown_name(&t, "s"), 0, nth);
    marble_file *g = fopen_w(&t, "s", 0);
    marble_file *ro = NULL;
    OK(marble_fs_open(t.fs, F(&t, "s"), MARBLE_OPEN_READ, &ro, &e_));
    wr(g, 4, "!");
    expect_sync_fails_earlier(g, shown_name(&t, "s"), 0, nth);
    expect_sync_fails_earlier(ro, shown_name(&t, "s"), 0, nth);
    OK(marble_file_close(f, &e_));
    OK(marble_file_close(g, &e_));
    OK(marble_file_close(ro, &e_));
    f = fopen_w(&t, "s", 0);
    expect_sync_fails_earlier(f, shown_name(&t, "s"), 0, nth);
    OK(marble_file_close(f, &e_));
    /* Other files are not affected. */
    OK(marble_fs_write_all(t.fs, F(&t, "other"), "fine", 4, 1, &e_));
    expect_content(&t, "s", "LOST!le+tail");
    crash(&t);
    expect_content(&t, "s", "durable");
    expect_content(&t, "other", "fine");

    /* After the reboot syncs work again; rewriting the file from scratch also clears it. */
    f = fopen_w(&t, "s", 0);
    wr(f, 0, "again");
    OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    wr(f, 0, "AGAIN");
    const uint64_t nth2 = marble_fault_count(t.fault, MARBLE_FAULT_SYNC) + 1;
    marble_fault_fail_nth(t.fault, MARBLE_FAULT_SYNC, 1, ENOSPC);
    ASSERT_EQ_INT(marble_file_sync(f, MARBLE_SYNC_DATA, &err), MARBLE_ERR_NO_SPACE);
    expect_sync_fails_earlier(f, shown_name(&t, "s"), 1, nth2);
    OK(marble_file_close(f, &e_));
    f = fopen_w(&t, "s", MARBLE_OPEN_TRUNCATE);
    wr(f, 0, "rewritten");
    OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    wr(f, 0, "unsynced!");
    OK(marble_file_close(f, &e_));
    crash(&t);
    expect_content(&t, "s", "rewritten");

    /* A failed sync of a file replaced since does not stick to the new one. */
    f = fopen_w(&t, "s", 0);
    wr(f, 0, "x");
    marble_fault_fail_nth(t.fault, MARBLE_FAULT_SYNC, 1, EIO);
    ASSERT_EQ_INT(marble_file_sync(f, MARBLE_SYNC_FULL, &err), MARBLE_ERR_IO);
    OK(marble_file_close(f, &e_));
    OK(marble_fs_write_all(t.fs, F(&t, "s.tmp"), "replaced", 8, 0, &e_));
    OK(marble_fs_rename(t.fs, F(&t, "s.tmp"), F(&t, "s"), 1, &e_));
    f = fopen_w(&t, "s", 0);
    OK(marble_file_sync(f, MARBLE_SYNC_FULL, &e_));
    OK(marble_file_close(f, &e_));
    crash(&t);
    expect_content(&t, "s", "replaced");
    env_close(&t);
}

TEST(sync_failure_is_sticky_mem)
{
    sync_failure_is_sticky(0);
}

TEST(sync_failure_is_sticky_local)
{
    sync_failure_is_sticky(1);
}

/* ---- spellings of a path --------------------------------------------------------------- */

/* `root` as the wrapper sees it, spelled with "//" and "/./" inside. */
static const char *odd(env *t, const char *a, const char *b)
{
    char *buf = t->buf[t->k++ % 8];
    snprintf(buf, sizeof t->buf[0], "fault://%s%s%s", t->root, a, b);
    return buf;
}

static void path_spellings(int local)
{
    env t;
    env_open(&t, local);
    const char *dirs[] = {"d1", "d2", "d3", "d4", "d5", "d6"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        OK(marble_fs_mkdir(t.fs, F(&t, dirs[i]), 0, &e_));
    put(&t, "d5/a", "A");
    put(&t, "d5/x", "X");
    put(&t, "d6/g", "old");
    /* Created under one spelling, the directory synced under another: durable. */
    OK(marble_fs_write_all(t.fs, odd(&t, "/./d1/", "f"), "one", 3, 0, &e_));
    OK(marble_fs_sync_dir(t.fs, F(&t, "d1"), &e_));
    OK(marble_fs_write_all(t.fs, odd(&t, "/d2//", "f"), "two", 3, 0, &e_));
    OK(marble_fs_sync_dir(t.fs, F(&t, "d2"), &e_));
    OK(marble_fs_write_all(t.fs, F(&t, "d3/f"), "three", 5, 0, &e_));
    OK(marble_fs_sync_dir(t.fs, odd(&t, "//./d3", "//"), &e_));
    /* Renamed and removed under odd spellings, synced under plain ones. */
    OK(marble_fs_rename(t.fs, odd(&t, "//d5/", "a"), odd(&t, "/d5/./", "b"), 0, &e_));
    OK(marble_fs_remove(t.fs, odd(&t, "/./d5//", "x"), &e_));
    OK(marble_fs_sync_dir(t.fs, F(&t, "d5"), &e_));
    /* One file opened under two spellings: a sync through either covers both. */
    marble_file *h1 = NULL, *h2 = NULL;
    OK(marble_fs_open(t.fs, odd(&t, "/d6//", "g"), MARBLE_OPEN_WRITE, &h1, &e_));
    OK(marble_fs_open(t.fs, odd(&t, "/./d6/", "g"), MARBLE_OPEN_WRITE, &h2, &e_));
    wr(h1, 0, "new");
    OK(marble_file_sync(h2, MARBLE_SYNC_FULL, &e_));
    /* Not synced under any spelling: undone. */
    OK(marble_fs_write_all(t.fs, odd(&t, "/./d4//", "f"), "four", 4, 0, &e_));
    OK(marble_fs_sync_dir(t.fs, odd(&t, "/./d2", "/"), &e_));
    crash(&t);
    expect_content(&t, "d1/f", "one");
    expect_content(&t, "d2/f", "two");
    expect_content(&t, "d3/f", "three");
    expect_absent(&t, "d4/f");
    expect_absent(&t, "d5/a");
    expect_content(&t, "d5/b", "A");
    expect_absent(&t, "d5/x");
    expect_content(&t, "d6/g", "new");
    expect_dead(h1);
    expect_dead(h2);
    env_close(&t);
}

TEST(path_spellings_mem)
{
    path_spellings(0);
}

TEST(path_spellings_local)
{
    path_spellings(1);
}

/* Relative paths starting with "./" (mem only: local paths here are absolute). */
TEST(path_spellings_leading_dot)
{
    env t;
    env_open(&t, 0);
    OK(marble_fs_write_all(t.fs, "fault://./t/f", "kept", 4, 0, &e_));
    OK(marble_fs_sync_dir(t.fs, "fault://./t", &e_));
    OK(marble_fs_write_all(t.fs, "fault://././t/g", "kept too", 8, 0, &e_));
    OK(marble_fs_sync_dir(t.fs, "fault://t/", &e_));
    OK(marble_fs_write_all(t.fs, "fault://t/h", "gone", 4, 0, &e_));
    OK(marble_fs_sync_dir(t.fs, "fault://./t/.", &e_));
    OK(marble_fs_remove(t.fs, "fault://./t/h", &e_));
    crash(&t);
    expect_content(&t, "f", "kept");
    expect_content(&t, "g", "kept too");
    expect_content(&t, "h", "gone");
    env_close(&t);
}

/* ---- syncs through read-only handles --------------------------------------------------- */

static void sync_through_read_only(int local)
{
    env t;
    env_open(&t, local);
    /* fsync flushes the file whatever the access mode of the descriptor. */
    put(&t, "r", "old");
    marble_file *w = fopen_w(&t, "r", 0), *ro = NULL;
    wr(w, 0, "new!");
    OK(marble_fs_open(t.fs, F(&t, "r"), MARBLE_OPEN_READ, &ro, &e_));
    OK(marble_file_sync(ro, MARBLE_SYNC_DATA, &e_));
    wr(w, 4, "?");
    OK(marble_file_close(w, &e_));
    /* A read-only handle opened before any writer. */
    put(&t, "early", "1111");
    marble_file *ro2 = NULL;
    OK(marble_fs_open(t.fs, F(&t, "early"), MARBLE_OPEN_READ, &ro2, &e_));
    w = fopen_w(&t, "early", 0);
    wr(w, 0, "22");
    OK(marble_file_close(w, &e_));
    OK(marble_file_sync(ro2, MARBLE_SYNC_FULL, &e_));
    /* A read-only handle syncs its own file, not whatever took its name since. */
    put(&t, "a", "A");
    put(&t, "b", "B");
    marble_file *ra = NULL;
    OK(marble_fs_open(t.fs, F(&t, "a"), MARBLE_OPEN_READ, &ra, &e_));
    w = fopen_w(&t, "b", 0);
    wr(w, 0, "BBBB");
    OK(marble_file_close(w, &e_));
    OK(marble_fs_rename(t.fs, F(&t, "b"), F(&t, "a"), 1, &e_));
    OK(marble_file_sync(ra, MARBLE_SYNC_FULL, &e_));
    crash(&t);
    expect_content(&t, "r", "new!");
    expect_content(&t, "early", "2211");
    expect_content(&t, "a", "B");
    expect_absent(&t, "b");
    expect_dead(ro);
    expect_dead(ro2);
    expect_dead(ra);
    env_close(&t);
}

TEST(sync_through_read_only_mem)
{
    sync_through_read_only(0);
}

TEST(sync_through_read_only_local)
{
    sync_through_read_only(1);
}
