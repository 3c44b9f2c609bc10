/* Tests of the write-ahead log: round trips, rolls, torn tails, corruption, group commit, faults.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "lsm/wal.h"
#include "marble_test.h"
#include "marble/vfs.h"

#define OK(expr)                                                                                   \
    do {                                                                                           \
        marble_error e_;                                                                           \
        marble_error_clear(&e_);                                                                   \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s -> %s: %s", #expr, marble_status_name(rc_), e_.message);    \
    } while (0)

#define MAX_PAYLOAD 300

static size_t make_payload(uint64_t seq, unsigned char *buf)
{
    size_t len = (size_t)((seq * 2654435761u) % MAX_PAYLOAD);
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(seq * 31 + i * 7);
    return len;
}

typedef struct rec {
    uint64_t seq;
    size_t len;
    unsigned char *data;
} rec;

typedef struct recs {
    rec *v;
    size_t n, cap;
} recs;

static int collect(uint64_t seq, const void *payload, size_t len, void *ud)
{
    recs *r = ud;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        if (!r->v) return MARBLE_ERR_NO_MEMORY;
    }
    rec *x = &r->v[r->n++];
    x->seq = seq;
    x->len = len;
    x->data = malloc(len ? len : 1);
    if (len) memcpy(x->data, payload, len);
    return MARBLE_OK;
}

static void recs_free(recs *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].data);
    free(r->v);
    memset(r, 0, sizeof *r);
}

static void check_payload(const rec *x)
{
    unsigned char want[MAX_PAYLOAD];
    size_t len = make_payload(x->seq, want);
    ASSERT_EQ_U64(x->len, len);
    if (len && memcmp(x->data, want, len) != 0) FAIL("payload of seq %" PRIu64 " differs", x->seq);
}

static int append_seq(marble__wal *wal, uint64_t seq, marble_error *err)
{
    unsigned char buf[MAX_PAYLOAD];
    size_t len = make_payload(seq, buf);
    return marble__wal_append(wal, seq, buf, len, err);
}

/* Replays dir and checks that it holds exactly the seqs first..last, in order. */
static void expect_range(marble_fs *fs, const char *dir, uint64_t from_segment, uint64_t first,
                         uint64_t last, marble__wal_replay_stats *st)
{
    recs r = {0};
    OK(marble__wal_replay(fs, dir, from_segment, collect, &r, st, &e_));
    ASSERT_EQ_U64(r.n, last + 1 - first);
    for (size_t i = 0; i < r.n; i++) {
        ASSERT_EQ_U64(r.v[i].seq, first + i);
        check_payload(&r.v[i]);
    }
    recs_free(&r);
}

static void round_trip(const char *dir)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    marble__wal_options o = {.sync_mode = MARBLE__WAL_SYNC_GROUP, .segment_size = 2048};
    marble__wal *wal;
    OK(marble__wal_open(fs, dir, &o, &wal, &e_));
    ASSERT_EQ_U64(marble__wal_current_segment(wal), 1);
    for (uint64_t s = 1; s <= 300; s++)
        OK(append_seq(wal, s, &e_));
    ASSERT_GT_INT(marble__wal_current_segment(wal), 5);
    marble__wal_stats ws;
    marble__wal_get_stats(wal, &ws);
    ASSERT_EQ_U64(ws.appends, 300);
    ASSERT_GE_INT(ws.syncs, 300);
    OK(marble__wal_close(wal, &e_));

    marble__wal_replay_stats st;
    expect_range(fs, dir, 0, 1, 300, &st);
    ASSERT_GT_INT(st.segments, 5);
    ASSERT_EQ_U64(st.first_segment, 1);
    ASSERT_EQ_U64(st.records, 300);
    ASSERT_EQ_U64(st.last_seq, 300);
    ASSERT_EQ_INT(st.torn_tail, 0);
    uint64_t segments = st.last_segment;

    o.sync_mode = MARBLE__WAL_SYNC_NONE;
    OK(marble__wal_open(fs, dir, &o, &wal, &e_));
    ASSERT_EQ_U64(marble__wal_current_segment(wal), segments + 1);
    for (uint64_t s = 301; s <= 400; s++)
        OK(append_seq(wal, s, &e_));
    OK(marble__wal_sync(wal, &e_));
    OK(marble__wal_close(wal, &e_));
    expect_range(fs, dir, 0, 1, 400, &st);
    ASSERT_EQ_INT(st.torn_tail, 0);
    OK(marble_fs_destroy(fs, &e_));
}

TEST(wal_round_trip_mem)
{
    round_trip("mem://db/wal");
}

TEST(wal_round_trip_local)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/db/wal/", marble_test_tmpdir());
    round_trip(dir);
}

TEST(wal_empty)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    marble__wal_replay_stats st;
    expect_range(fs, "mem://nothing", 0, 1, 0, &st);
    ASSERT_EQ_U64(st.segments, 0);
    ASSERT_EQ_U64(st.last_segment, 0);

    marble__wal *wal;
    OK(marble__wal_open(fs, "mem://w", NULL, &wal, &e_));
    marble_error err;
    char byte = 0;
    ASSERT_EQ_INT(marble__wal_append(wal, 1, &byte, (size_t)MARBLE__WAL_MAX_PAYLOAD + 1, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "mem://w");
    ASSERT_EQ_INT(marble__wal_append(wal, 1, NULL, 1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    OK(marble__wal_close(wal, &e_));
    expect_range(fs, "mem://w", 0, 1, 0, &st);
    ASSERT_EQ_U64(st.segments, 1);
    ASSERT_EQ_INT(st.torn_tail, 0);
    int exists = 0;
    OK(marble_fs_exists(fs, "mem://w/000001.log", &exists, &e_));
    ASSERT_TRUE(exists);

    OK(marble_fs_write_all(fs, "mem://w/notes.txt", "x", 1, 0, &e_));
    OK(marble_fs_write_all(fs, "mem://w/01.log", "x", 1, 0, &e_));
    expect_range(fs, "mem://w", 0, 1, 0, &st);
    ASSERT_EQ_U64(st.segments, 1);

    ASSERT_EQ_INT(marble__wal_replay(fs, "mem://w", 0, NULL, NULL, NULL, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    marble__wal_options bad = {.sync_mode = (marble__wal_sync_mode)7};
    ASSERT_EQ_INT(marble__wal_open(fs, "mem://w", &bad, &wal, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__wal_close(NULL, NULL), MARBLE_OK);
    OK(marble_fs_destroy(fs, &e_));
}

TEST(wal_roll_remove_upto)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    marble__wal *wal;
    marble__wal_options o = {.sync_mode = MARBLE__WAL_SYNC_EVERY};
    OK(marble__wal_open(fs, "mem://w", &o, &wal, &e_));
    for (uint64_t s = 1; s <= 10; s++)
        OK(append_seq(wal, s, &e_));
    uint64_t old = 0;
    OK(marble__wal_roll(wal, &old, &e_));
    ASSERT_EQ_U64(old, 1);
    ASSERT_EQ_U64(marble__wal_current_segment(wal), 2);
    for (uint64_t s = 11; s <= 20; s++)
        OK(append_seq(wal, s, &e_));
    OK(marble__wal_roll(wal, &old, &e_));
    ASSERT_EQ_U64(old, 2);
    for (uint64_t s = 21; s <= 30; s++)
        OK(append_seq(wal, s, &e_));

    marble__wal_replay_stats st;
    expect_range(fs, "mem://w", 0, 1, 30, &st);
    ASSERT_EQ_U64(st.segments, 3);
    expect_range(fs, "mem://w", 2, 11, 30, &st);
    ASSERT_EQ_U64(st.first_segment, 2);

    marble_error err;
    ASSERT_EQ_INT(marble__wal_remove_upto(wal, 3, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "mem://w");
    OK(marble__wal_remove_upto(wal, 1, &e_));
    expect_range(fs, "mem://w", 0, 11, 30, &st);
    ASSERT_EQ_U64(st.first_segment, 2);
    OK(marble__wal_remove_upto(wal, 2, &e_));
    OK(marble__wal_remove_upto(wal, 2, &e_));
    expect_range(fs, "mem://w", 0, 21, 30, &st);
    ASSERT_EQ_U64(st.segments, 1);
    int exists = 1;
    OK(marble_fs_exists(fs, "mem://w/000001.log", &exists, &e_));
    ASSERT_FALSE(exists);
    OK(marble__wal_close(wal, &e_));
    OK(marble_fs_destroy(fs, &e_));
}

/* Segment 1 holds seqs 1..5, segment 2 (the newest) seqs 6..10; returns segment 2's bytes. */
static unsigned char *two_segments(marble_fs *fs, const char *dir, size_t *size, uint64_t *ends)
{
    marble__wal *wal;
    OK(marble__wal_open(fs, dir, NULL, &wal, &e_));
    for (uint64_t s = 1; s <= 5; s++)
        OK(append_seq(wal, s, &e_));
    OK(marble__wal_roll(wal, NULL, &e_));
    uint64_t end = 0;
    for (uint64_t s = 6; s <= 10; s++) {
        OK(append_seq(wal, s, &e_));
        unsigned char buf[MAX_PAYLOAD];
        end += 20 + make_payload(s, buf);
        ends[s - 6] = end;
    }
    OK(marble__wal_close(wal, &e_));
    char uri[256];
    snprintf(uri, sizeof uri, "%s/000002.log", dir);
    void *data;
    OK(marble_fs_read_all(fs, uri, &data, size, &e_));
    ASSERT_EQ_U64(*size, end);
    return data;
}

TEST(wal_torn_tail_every_offset)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    size_t size;
    uint64_t ends[5];
    unsigned char *seg = two_segments(fs, "mem://w", &size, ends);
    uint64_t start = ends[1];
    for (uint64_t cut = start; cut < size; cut++) {
        OK(marble_fs_write_all(fs, "mem://w/000002.log", seg, cut, 0, &e_));
        uint64_t last = 7;
        while (last < 10 && ends[last + 1 - 6] <= cut)
            last++;
        int boundary = ends[last - 6] == cut;
        marble__wal_replay_stats st;
        expect_range(fs, "mem://w", 0, 1, last, &st);
        ASSERT_EQ_INT(st.torn_tail, !boundary);
        if (!boundary) {
            ASSERT_EQ_U64(st.torn_segment, 2);
            ASSERT_EQ_U64(st.torn_offset, ends[last - 6]);
            ASSERT_EQ_U64(st.torn_bytes, cut - ends[last - 6]);
        }
        marble__wal *wal;
        OK(marble__wal_open(fs, "mem://w", NULL, &wal, &e_));
        OK(append_seq(wal, last + 1, &e_));
        OK(marble__wal_close(wal, &e_));
        expect_range(fs, "mem://w", 0, 1, last + 1, &st);
        ASSERT_EQ_INT(st.torn_tail, 0);
        OK(marble_fs_remove(fs, "mem://w/000003.log", &e_));
    }

    unsigned char *zeros = calloc(1, size + 100);
    memcpy(zeros, seg, size);
    OK(marble_fs_write_all(fs, "mem://w/000002.log", zeros, size + 100, 0, &e_));
    marble__wal_replay_stats st;
    expect_range(fs, "mem://w", 0, 1, 10, &st);
    ASSERT_EQ_INT(st.torn_tail, 1);
    ASSERT_EQ_U64(st.torn_bytes, 100);
    free(zeros);
    free(seg);
    OK(marble_fs_destroy(fs, &e_));
}

/* Replay fails naming `file`; so does open when `newest` (open checks only the newest segment). */
static void expect_corruption(marble_fs *fs, const char *dir, const char *file, int newest)
{
    recs r = {0};
    marble_error err;
    ASSERT_EQ_INT(marble__wal_replay(fs, dir, 0, collect, &r, NULL, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, file);
    recs_free(&r);
    if (!newest) return;
    marble__wal *wal = NULL;
    ASSERT_EQ_INT(marble__wal_open(fs, dir, NULL, &wal, &err), MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, file);
    ASSERT_NULL(wal);
}

TEST(wal_corruption_in_the_middle)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    size_t size, size1;
    uint64_t ends[5];
    unsigned char *seg = two_segments(fs, "mem://w", &size, ends);
    void *seg1;
    OK(marble_fs_read_all(fs, "mem://w/000001.log", &seg1, &size1, &e_));

    unsigned char *copy = malloc(size);
    for (uint64_t off = 0; off < ends[3]; off++) {
        memcpy(copy, seg, size);
        copy[off] ^= (unsigned char)(1u << (off % 8));
        OK(marble_fs_write_all(fs, "mem://w/000002.log", copy, size, 0, &e_));
        expect_corruption(fs, "mem://w", "mem://w/000002.log", 1);
    }
    OK(marble_fs_write_all(fs, "mem://w/000002.log", seg, size, 0, &e_));

    unsigned char *copy1 = malloc(size1);
    for (uint64_t off = 0; off < size1; off += 7) {
        memcpy(copy1, seg1, size1);
        copy1[off] ^= 0x10;
        OK(marble_fs_write_all(fs, "mem://w/000001.log", copy1, size1, 0, &e_));
        expect_corruption(fs, "mem://w", "mem://w/000001.log", 0);
    }
    OK(marble_fs_write_all(fs, "mem://w/000001.log", seg1, size1 - 1, 0, &e_));
    expect_corruption(fs, "mem://w", "mem://w/000001.log", 0);
    OK(marble_fs_write_all(fs, "mem://w/000001.log", seg1, size1, 0, &e_));

    marble__wal_replay_stats st;
    expect_range(fs, "mem://w", 0, 1, 10, &st);
    OK(marble_fs_write_all(fs, "mem://w/000004.log", "", 0, 0, &e_));
    expect_corruption(fs, "mem://w", "000003.log", 1);
    free(copy);
    free(copy1);
    free(seg);
    free(seg1);
    OK(marble_fs_destroy(fs, &e_));
}

typedef struct thread_arg {
    marble__wal *wal;
    uint64_t base;
    int n;
    int acked;
} thread_arg;

static void *appender(void *p)
{
    thread_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        if (append_seq(a->wal, a->base + (uint64_t)i, NULL) != MARBLE_OK) break;
        a->acked++;
    }
    return NULL;
}

/* Runs `threads` appenders of `n` records each; thread t writes seqs t*100000 + i. */
static void run_threads(marble__wal *wal, int threads, int n, thread_arg *args)
{
    pthread_t th[16];
    for (int t = 0; t < threads; t++) {
        args[t] = (thread_arg){wal, (uint64_t)(t + 1) * 100000, n, 0};
        ASSERT_EQ_INT(pthread_create(&th[t], NULL, appender, &args[t]), 0);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
}

/* Every acknowledged record is replayed exactly once, each thread's in its order. */
static void check_threads(marble_fs *fs, const char *dir, int threads, const thread_arg *args,
                          int exact)
{
    recs r = {0};
    OK(marble__wal_replay(fs, dir, 0, collect, &r, NULL, &e_));
    uint64_t next[16] = {0};
    for (size_t i = 0; i < r.n; i++) {
        int t = (int)(r.v[i].seq / 100000) - 1;
        ASSERT_TRUE(t >= 0 && t < threads);
        ASSERT_EQ_U64(r.v[i].seq % 100000, next[t]);
        next[t]++;
        check_payload(&r.v[i]);
    }
    for (int t = 0; t < threads; t++) {
        ASSERT_GE_INT(next[t], args[t].acked);
        if (exact) ASSERT_EQ_U64(next[t], (uint64_t)args[t].acked);
    }
    recs_free(&r);
}

/* A backend over "mem" whose file syncs take a millisecond, as a disk's do, so that concurrent
 * appenders queue up behind a sync. */
typedef struct slow_file {
    marble_file base;
    marble_file *inner;
} slow_file;

#define INNER(f) (((slow_file *)(f))->inner)

static int slow_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                     marble_error *err)
{
    return INNER(f)->methods->read(INNER(f), off, buf, n, nread, err);
}
static int slow_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    return INNER(f)->methods->write(INNER(f), off, buf, n, err);
}
static int slow_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    return INNER(f)->methods->append(INNER(f), buf, n, err);
}
static int slow_size(marble_file *f, uint64_t *out, marble_error *err)
{
    return INNER(f)->methods->size(INNER(f), out, err);
}
static int slow_sync(marble_file *f, int flags, marble_error *err)
{
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    return INNER(f)->methods->sync(INNER(f), flags, err);
}
static int slow_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    return INNER(f)->methods->truncate(INNER(f), size, err);
}
static int slow_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                    marble_error *err)
{
    return MARBLE_ERR_UNSUPPORTED;
}
static void slow_unmap(marble_file *f, const void *addr, size_t len, void *cookie) {}
static int slow_close(marble_file *f, marble_error *err)
{
    int rc = INNER(f)->methods->close(INNER(f), err);
    free(f);
    return rc;
}
static int slow_file_control(marble_file *f, int op, void *arg)
{
    return MARBLE_ERR_UNSUPPORTED;
}

static const marble_file_methods slow_methods = {MARBLE_FILE_METHODS_VERSION,
                                                 slow_read,
                                                 slow_write,
                                                 slow_append,
                                                 slow_size,
                                                 slow_sync,
                                                 slow_truncate,
                                                 slow_map,
                                                 slow_unmap,
                                                 slow_close,
                                                 slow_file_control};

#define PARENT(v) ((marble_vfs *)(v)->data)

static int slow_open(marble_vfs *v, const char *path, int flags, marble_file **out,
                     marble_error *err)
{
    slow_file *f = calloc(1, sizeof *f);
    int rc = PARENT(v)->open(PARENT(v), path, flags, &f->inner, err);
    if (rc != MARBLE_OK) {
        free(f);
        return rc;
    }
    f->base.methods = &slow_methods;
    f->base.vfs = v;
    f->base.caps = f->inner->caps & ~(uint32_t)(MARBLE_CAP_MAP | MARBLE_CAP_FD);
    f->base.flags = flags;
    *out = &f->base;
    return MARBLE_OK;
}
static int slow_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    return PARENT(v)->stat(PARENT(v), path, out, err);
}
static int slow_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud,
                     marble_error *err)
{
    return PARENT(v)->list(PARENT(v), dir, fn, ud, err);
}
static int slow_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    return PARENT(v)->mkdir(PARENT(v), path, err);
}
static int slow_remove(marble_vfs *v, const char *path, marble_error *err)
{
    return PARENT(v)->remove(PARENT(v), path, err);
}
static int slow_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    return PARENT(v)->rename(PARENT(v), from, to, err);
}
static int slow_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    return PARENT(v)->sync_dir(PARENT(v), path, err);
}
static int slow_control(marble_vfs *v, int op, void *arg)
{
    return MARBLE_ERR_UNSUPPORTED;
}
static void slow_destroy(marble_vfs *v)
{
    free(v);
}

static void register_slow(marble_fs *fs)
{
    marble_vfs *v = calloc(1, sizeof *v);
    marble_vfs *parent = marble_fs_backend(fs, "mem");
    *v = (marble_vfs){MARBLE_VFS_VERSION,
                      "slow(mem)",
                      parent->caps & ~(uint32_t)MARBLE_CAP_MAP,
                      parent,
                      slow_open,
                      slow_stat,
                      slow_list,
                      slow_mkdir,
                      slow_remove,
                      slow_rename,
                      slow_sync_dir,
                      slow_control,
                      slow_destroy};
    OK(marble_fs_register(fs, "slow", v, &e_));
}

TEST(wal_group_commit_threads)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    register_slow(fs);
    marble__wal *wal;
    marble__wal_options o = {.sync_mode = MARBLE__WAL_SYNC_GROUP, .segment_size = 64 << 10};
    OK(marble__wal_open(fs, "slow://w", &o, &wal, &e_));
    marble_fs_stats before, after;
    marble_fs_get_stats(fs, &before);
    thread_arg args[8];
    run_threads(wal, 8, 250, args);
    marble_fs_get_stats(fs, &after);
    marble__wal_stats ws;
    marble__wal_get_stats(wal, &ws);
    OK(marble__wal_close(wal, &e_));
    for (int t = 0; t < 8; t++)
        ASSERT_EQ_INT(args[t].acked, 250);
    ASSERT_EQ_U64(ws.appends, 2000);
    ASSERT_LT_INT(after.syncs - before.syncs, 1000);
    ASSERT_LT_INT(ws.writes, 1000);
    ASSERT_LT_INT(ws.syncs, 1000);
    check_threads(fs, "mem://w", 8, args, 1);

    o.sync_mode = MARBLE__WAL_SYNC_EVERY;
    OK(marble__wal_open(fs, "mem://e", &o, &wal, &e_));
    marble_fs_get_stats(fs, &before);
    run_threads(wal, 4, 200, args);
    marble_fs_get_stats(fs, &after);
    OK(marble__wal_close(wal, &e_));
    ASSERT_GE_INT(after.syncs - before.syncs, 800);
    check_threads(fs, "mem://e", 4, args, 1);
    OK(marble_fs_destroy(fs, &e_));
}

/* A registry with "fault" over "mem" or "file"; dir names are the same through both. */
typedef struct env {
    marble_fs *fs;
    marble_vfs *fault;
    char root[600];
} env;

static void env_open(env *t, int local)
{
    memset(t, 0, sizeof *t);
    OK(marble_fs_create(&t->fs, &e_));
    marble_vfs *parent = marble_fs_backend(t->fs, local ? "file" : "mem");
    OK(marble_vfs_fault_create(parent, &t->fault, &e_));
    OK(marble_fs_register(t->fs, "fault", t->fault, &e_));
    if (local)
        snprintf(t->root, sizeof t->root, "%s", marble_test_tmpdir());
    else
        snprintf(t->root, sizeof t->root, "r");
}

static void env_dirs(env *t, const char *name, char *fault_dir, char *parent_dir)
{
    int local = t->root[0] == '/';
    snprintf(fault_dir, 700, "fault://%s/%s", t->root, name);
    snprintf(parent_dir, 700, "%s%s/%s", local ? "" : "mem://", t->root, name);
}

static const marble__wal_sync_mode durable_modes[2] = {MARBLE__WAL_SYNC_EVERY,
                                                       MARBLE__WAL_SYNC_GROUP};

static void fault_sweep(int local)
{
    env t;
    env_open(&t, local);
    const uint32_t ops = MARBLE_FAULT_WRITE | MARBLE_FAULT_SYNC;
    const int n = 12;
    for (int m = 0; m < 2; m++) {
        marble__wal_options o = {.sync_mode = durable_modes[m], .segment_size = 700};
        uint64_t k = 0;
        for (uint64_t nth = 0; nth == 0 || nth <= k; nth++) {
            char name[64], fdir[700], pdir[700];
            snprintf(name, sizeof name, "m%d-n%" PRIu64, m, nth);
            env_dirs(&t, name, fdir, pdir);
            uint64_t count0 = marble_fault_count(t.fault, (marble_fault_op)ops);
            if (nth) marble_fault_fail_nth(t.fault, ops, nth, nth % 2 ? EIO : ENOSPC);
            marble__wal *wal = NULL;
            marble_error err;
            int failed = marble__wal_open(t.fs, fdir, &o, &wal, &err) != MARBLE_OK;
            uint64_t acked = 0;
            for (uint64_t s = 1; s <= (uint64_t)n && wal; s++) {
                int rc = s == 6 ? marble__wal_roll(wal, NULL, &err) : MARBLE_OK;
                if (rc == MARBLE_OK) rc = append_seq(wal, s, &err);
                if (failed) {
                    ASSERT_NE_INT(rc, MARBLE_OK);
                    ASSERT_CONTAINS(err.message, fdir);
                } else if (rc != MARBLE_OK) {
                    failed = 1;
                    ASSERT_TRUE(rc == MARBLE_ERR_IO || rc == MARBLE_ERR_NO_SPACE);
                    ASSERT_CONTAINS(err.message, fdir);
                } else {
                    acked = s;
                }
            }
            if (nth == 0) {
                ASSERT_FALSE(failed);
                k = marble_fault_count(t.fault, (marble_fault_op)ops) - count0;
                ASSERT_GT_INT(k, 10);
            } else {
                ASSERT_TRUE(failed);
            }
            marble_fault_fail_nth(t.fault, ops, 0, 0);
            OK(marble_fault_crash(t.fault, &e_));
            marble__wal_close(wal, NULL);

            recs r = {0};
            marble__wal_replay_stats st;
            OK(marble__wal_replay(t.fs, pdir, 0, collect, &r, &st, &e_));
            ASSERT_GE_INT(r.n, acked);
            ASSERT_LE_INT(r.n, acked + 1);
            for (size_t i = 0; i < r.n; i++) {
                ASSERT_EQ_U64(r.v[i].seq, i + 1);
                check_payload(&r.v[i]);
            }
            recs_free(&r);
        }
    }
    OK(marble_fs_destroy(t.fs, &e_));
}

TEST(wal_fault_sweep_mem)
{
    fault_sweep(0);
}

TEST(wal_fault_sweep_local)
{
    fault_sweep(1);
}

static void power_cut(int local)
{
    env t;
    env_open(&t, local);
    const marble__wal_sync_mode modes[3] = {MARBLE__WAL_SYNC_EVERY, MARBLE__WAL_SYNC_GROUP,
                                            MARBLE__WAL_SYNC_NONE};
    for (int m = 0; m < 3; m++) {
        char name[32], fdir[700], pdir[700];
        snprintf(name, sizeof name, "cut%d", m);
        env_dirs(&t, name, fdir, pdir);
        marble__wal_options o = {.sync_mode = modes[m], .segment_size = 1500};
        marble__wal *wal;
        OK(marble__wal_open(t.fs, fdir, &o, &wal, &e_));
        for (uint64_t s = 1; s <= 60; s++)
            OK(append_seq(wal, s, &e_));
        OK(marble_fault_crash(t.fault, &e_));
        marble_error err;
        ASSERT_NE_INT(marble__wal_close(wal, &err), MARBLE_OK);

        recs r = {0};
        marble__wal_replay_stats st;
        OK(marble__wal_replay(t.fs, pdir, 0, collect, &r, &st, &e_));
        if (modes[m] != MARBLE__WAL_SYNC_NONE) ASSERT_EQ_U64(r.n, 60);
        ASSERT_GT_INT(st.segments, 1);
        for (size_t i = 0; i < r.n; i++) {
            ASSERT_EQ_U64(r.v[i].seq, i + 1);
            check_payload(&r.v[i]);
        }
        recs_free(&r);

        OK(marble__wal_open(t.fs, pdir, &o, &wal, &e_));
        OK(marble__wal_close(wal, &e_));
    }

    char fdir[700], pdir[700];
    env_dirs(&t, "threads", fdir, pdir);
    marble__wal_options o = {.sync_mode = MARBLE__WAL_SYNC_GROUP, .segment_size = 8192};
    marble__wal *wal;
    OK(marble__wal_open(t.fs, fdir, &o, &wal, &e_));
    thread_arg args[8];
    run_threads(wal, 8, 100, args);
    OK(marble_fault_crash(t.fault, &e_));
    marble__wal_close(wal, NULL);
    check_threads(t.fs, pdir, 8, args, 1);
    OK(marble_fs_destroy(t.fs, &e_));
}

TEST(wal_power_cut_mem)
{
    power_cut(0);
}

TEST(wal_power_cut_local)
{
    power_cut(1);
}

static int count_records(uint64_t seq, const void *payload, size_t len, void *ud)
{
    (void)seq;
    (void)payload;
    (void)len;
    ++*(int *)ud;
    return MARBLE_OK;
}

/* Replay must not start past a missing segment: that would skip acknowledged records. */
TEST(wal_replay_refuses_a_missing_start_segment)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    for (int i = 0; i < 3; i++) {
        marble__wal *wal;
        OK(marble__wal_open(fs, "mem://ms", NULL, &wal, &e_));
        OK(append_seq(wal, (uint64_t)i + 1, &e_));
        OK(marble__wal_close(wal, &e_));
    }
    OK(marble_fs_remove(fs, "mem://ms/000001.log", &e_));
    OK(marble_fs_remove(fs, "mem://ms/000002.log", &e_));
    int n = 0;
    marble_error err;
    ASSERT_EQ_INT(marble__wal_replay(fs, "mem://ms", 2, count_records, &n, NULL, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "000002.log");
    ASSERT_EQ_INT(n, 0);
    OK(marble__wal_replay(fs, "mem://ms", 3, count_records, &n, NULL, &e_));
    OK(marble_fs_destroy(fs, &e_));
}

/* A torn header in front of a large payload made of small little-endian integers (every byte
 * offset then claims a plausible length): the search for a later valid record must stay linear
 * (a header CRC check per offset), and the tail is reported as torn. Quadratic behaviour shows as
 * a test that runs into CTest's time limit. */
TEST(wal_torn_large_record_of_small_integers)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, &e_));
    marble__wal *wal;
    OK(marble__wal_open(fs, "mem://big", NULL, &wal, &e_));
    OK(append_seq(wal, 1, &e_));
    size_t t = 4u << 20;
    uint32_t *pl = malloc(t);
    for (size_t i = 0; i < t / 4; i++)
        pl[i] = (uint32_t)(t / 2);
    OK(marble__wal_append(wal, 2, pl, t, &e_));
    OK(marble__wal_close(wal, &e_));
    free(pl);
    void *d;
    size_t n;
    OK(marble_fs_read_all(fs, "mem://big/000001.log", &d, &n, &e_));
    size_t first = 0;
    {
        unsigned char tmp[MAX_PAYLOAD];
        first = 20 + make_payload(1, tmp);
    }
    ((unsigned char *)d)[first + 4] ^= 1; /* the second record's length: its header is now bad */
    OK(marble_fs_write_all(fs, "mem://big/000001.log", d, n, 0, &e_));
    free(d);
    int count = 0;
    marble__wal_replay_stats st;
    OK(marble__wal_replay(fs, "mem://big", 0, count_records, &count, &st, &e_));
    ASSERT_EQ_INT(count, 1);
    ASSERT_EQ_INT(st.torn_tail, 1);
    ASSERT_EQ_U64(st.torn_offset, first);
    OK(marble_fs_destroy(fs, &e_));
}
