/* Tests of the manifest: round trips, validation, version references, rolls, torn tails, faults. */
#include <errno.h>
#include <stdlib.h>

#include "lsm/manifest.h"
#include "marble_test.h"
#include "marble/vfs.h"

#define OK(expr)                                                                                   \
    do {                                                                                           \
        marble_error e_;                                                                           \
        marble_error_clear(&e_);                                                                   \
        marble_error *err_ = &e_;                                                                  \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s -> %s: %s", #expr, marble_status_name(rc_), err_->message); \
    } while (0)

static void add_file(marble__version_edit *e, int level, uint64_t number, const char *lo,
                     const char *hi, uint64_t seq)
{
    marble__file_meta f = {.level = level,
                           .number = number,
                           .size = number * 1000,
                           .smallest = (unsigned char *)lo,
                           .smallest_len = strlen(lo),
                           .largest = (unsigned char *)hi,
                           .largest_len = strlen(hi),
                           .smallest_seq = seq,
                           .largest_seq = seq + 10,
                           .rows = number * 7};
    ASSERT_OK(marble__edit_add_file(e, &f));
}

/* Step i (from 1) of a valid sequence: adds L0 file i; every third step moves the two previous
 * L0 files into one L1 file; catalog records on every fourth, a catalog reset on every eighth. */
static void make_edit(int i, marble__version_edit *e)
{
    char lo[32], hi[32];
    marble__edit_init(e);
    marble__edit_set_last_seq(e, (uint64_t)i * 100);
    marble__edit_set_log_number(e, (uint64_t)i);
    marble__edit_set_next_file_number(e, 1000 + (uint64_t)i);
    snprintf(lo, sizeof lo, "a%04d", i);
    snprintf(hi, sizeof hi, "z%04d", i);
    add_file(e, 0, (uint64_t)i, lo, hi, (uint64_t)i * 100);
    if (i % 3 == 0) {
        ASSERT_OK(marble__edit_delete_file(e, 0, (uint64_t)i - 1));
        ASSERT_OK(marble__edit_delete_file(e, 0, (uint64_t)i - 2));
        snprintf(lo, sizeof lo, "m%04d-a", i);
        snprintf(hi, sizeof hi, "m%04d-z", i);
        add_file(e, 1, 100 + (uint64_t)i, lo, hi, (uint64_t)i * 100 - 50);
    }
    if (i % 8 == 0) e->catalog_reset = 1;
    if (i % 4 == 0) {
        char rec[32];
        snprintf(rec, sizeof rec, "table-%d", i);
        ASSERT_OK(marble__edit_add_catalog(e, rec, strlen(rec)));
    }
}

typedef struct snap {
    unsigned char *p;
    size_t n;
} snap;

static snap snapshot(marble__manifest *m)
{
    marble__version *v = marble__manifest_current(m);
    marble__version_edit e;
    snap s;
    ASSERT_OK(marble__version_to_edit(v, &e));
    OK(marble__edit_encode(&e, &s.p, &s.n, err_));
    marble__edit_free(&e);
    marble__version_unref(v);
    return s;
}

static void snap_eq(snap a, snap b)
{
    ASSERT_EQ_U64(a.n, b.n);
    if (memcmp(a.p, b.p, a.n) != 0) FAIL("versions differ");
}

static void apply_steps(marble__manifest *m, int from, int to)
{
    for (int i = from; i <= to; i++) {
        marble__version_edit e;
        make_edit(i, &e);
        OK(marble__manifest_apply(m, &e, err_));
        marble__edit_free(&e);
    }
}

static void check_shape(marble__manifest *m, int steps)
{
    marble__version *v = marble__manifest_current(m);
    ASSERT_EQ_U64(marble__version_last_seq(v), (uint64_t)steps * 100);
    ASSERT_EQ_U64(marble__version_next_file_number(v), 1000 + (uint64_t)steps);
    ASSERT_EQ_U64(marble__version_num_files(v, 0), (size_t)(steps - 2 * (steps / 3)));
    ASSERT_EQ_U64(marble__version_num_files(v, 1), (size_t)(steps / 3));
    for (size_t i = 1; i < marble__version_num_files(v, 0); i++)
        ASSERT_TRUE(marble__version_file(v, 0, i - 1)->number >
                    marble__version_file(v, 0, i)->number);
    for (size_t i = 1; i < marble__version_num_files(v, 1); i++)
        ASSERT_TRUE(marble__version_file(v, 1, i - 1)->number <
                    marble__version_file(v, 1, i)->number);
    if (steps >= 3) {
        const marble__file_meta *f = marble__version_file(v, 1, 0);
        ASSERT_EQ_U64(f->number, 103);
        ASSERT_EQ_U64(f->size, 103000);
        ASSERT_EQ_U64(f->rows, 103 * 7);
        ASSERT_EQ_U64(f->largest_seq, 260);
        ASSERT_EQ_U64(f->smallest_len, 7);
        ASSERT_TRUE(memcmp(f->smallest, "m0003-a", 7) == 0);
    }
    marble__version_unref(v);
}

static void roundtrip(const char *dir)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    marble__manifest *m;
    marble_error err;
    ASSERT_EQ_INT(marble__manifest_open(fs, dir, NULL, &m, NULL, &err), MARBLE_ERR_NOT_FOUND);
    OK(marble__manifest_create(fs, dir, 0, &m, err_));
    apply_steps(m, 1, 10);
    check_shape(m, 10);
    marble__version *v = marble__manifest_current(m);
    ASSERT_EQ_U64(marble__version_num_catalog(v), 1);
    ASSERT_EQ_U64(marble__version_catalog(v, 0)->len, 7);
    ASSERT_TRUE(memcmp(marble__version_catalog(v, 0)->data, "table-8", 7) == 0);
    marble__version_unref(v);
    snap before = snapshot(m);
    OK(marble__manifest_close(m, err_));
    ASSERT_EQ_INT(marble__manifest_create(fs, dir, 0, &m, &err), MARBLE_ERR_EXISTS);

    marble__manifest_recovery rec;
    OK(marble__manifest_open(fs, dir, NULL, &m, &rec, err_));
    ASSERT_EQ_U64(rec.records, 11);
    ASSERT_FALSE(rec.torn_tail);
    snap after = snapshot(m);
    snap_eq(before, after);
    check_shape(m, 10);
    apply_steps(m, 11, 12);
    OK(marble__manifest_close(m, err_));
    OK(marble__manifest_open(fs, dir, NULL, &m, &rec, err_));
    ASSERT_EQ_U64(rec.records, 3);
    check_shape(m, 12);
    OK(marble__manifest_close(m, err_));
    free(before.p);
    free(after.p);
    OK(marble_fs_destroy(fs, err_));
}

TEST(manifest_roundtrip_mem)
{
    roundtrip("mem://db/a");
}

TEST(manifest_roundtrip_local)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s/db", marble_test_tmpdir());
    roundtrip(dir);
}

TEST(manifest_edit_codec)
{
    marble__version_edit e, d;
    make_edit(24, &e);
    unsigned char *p;
    size_t n;
    OK(marble__edit_encode(&e, &p, &n, err_));
    OK(marble__edit_decode(p, n, &d, err_));
    ASSERT_EQ_U64(d.n_added, 2);
    ASSERT_EQ_U64(d.n_deleted, 2);
    ASSERT_EQ_U64(d.n_catalog, 1);
    ASSERT_TRUE(d.catalog_reset);
    ASSERT_EQ_U64(d.last_seq, 2400);
    ASSERT_EQ_U64(d.added[1].number, 124);
    marble__edit_free(&d);
    for (size_t cut = 0; cut < n; cut++) {
        marble_error err;
        int rc = marble__edit_decode(p, cut, &d, &err);
        marble__edit_free(&d);
        if (rc != MARBLE_OK) ASSERT_EQ_INT(rc, MARBLE_ERR_CORRUPTION);
    }
    unsigned char opt[] = {0x50, 0x02, 0xaa, 0xbb}, bad[] = {0x20, 0x00};
    OK(marble__edit_decode(opt, sizeof opt, &d, err_));
    marble__edit_free(&d);
    marble_error err;
    ASSERT_EQ_INT(marble__edit_decode(bad, sizeof bad, &d, &err), MARBLE_ERR_CORRUPTION);
    marble__edit_free(&d);
    marble__edit_free(&e);
    free(p);
}

TEST(manifest_validation)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    marble__manifest *m;
    OK(marble__manifest_create(fs, "mem://v", 0, &m, err_));
    apply_steps(m, 1, 3);
    snap s0 = snapshot(m);
    marble_error err;
    marble__version_edit e;

    marble__edit_init(&e);
    ASSERT_OK(marble__edit_delete_file(&e, 0, 77));
    ASSERT_EQ_INT(marble__manifest_apply(m, &e, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "77");
    marble__edit_free(&e);

    marble__edit_init(&e);
    ASSERT_OK(marble__edit_delete_file(&e, 0, 103));
    ASSERT_EQ_INT(marble__manifest_apply(m, &e, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble__edit_free(&e);

    marble__edit_init(&e);
    add_file(&e, 2, 103, "a", "b", 1);
    ASSERT_EQ_INT(marble__manifest_apply(m, &e, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "already in level 1");
    marble__edit_free(&e);

    marble__edit_init(&e);
    add_file(&e, 1, 200, "m0003-q", "n", 1);
    ASSERT_EQ_INT(marble__manifest_apply(m, &e, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "overlap in level 1");
    marble__edit_free(&e);

    marble__edit_init(&e);
    add_file(&e, 7, 201, "a", "b", 1);
    ASSERT_EQ_INT(marble__manifest_apply(m, &e, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble__edit_free(&e);

    marble__edit_init(&e);
    add_file(&e, 0, 202, "b", "a", 1);
    ASSERT_EQ_INT(marble__manifest_apply(m, &e, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble__edit_free(&e);

    snap s1 = snapshot(m);
    snap_eq(s0, s1);

    marble__edit_init(&e);
    ASSERT_OK(marble__edit_delete_file(&e, 1, 103));
    add_file(&e, 2, 103, "m0003-a", "m0003-z", 1);
    add_file(&e, 1, 200, "m0003-za", "n", 1);
    OK(marble__manifest_apply(m, &e, err_));
    marble__edit_free(&e);
    marble__version *v = marble__manifest_current(m);
    ASSERT_EQ_U64(marble__version_num_files(v, 2), 1);
    ASSERT_EQ_U64(marble__version_file(v, 1, 0)->number, 200);
    marble__version_unref(v);
    OK(marble__manifest_close(m, err_));
    free(s0.p);
    free(s1.p);
    OK(marble_fs_destroy(fs, err_));
}

typedef struct nums {
    uint64_t v[64];
    size_t n;
} nums;

static int collect_num(uint64_t number, void *ud)
{
    nums *x = ud;
    if (x->n < 64) x->v[x->n++] = number;
    return 0;
}

static int has(const nums *x, uint64_t number)
{
    for (size_t i = 0; i < x->n; i++)
        if (x->v[i] == number) return 1;
    return 0;
}

TEST(manifest_version_refcount)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    marble__manifest *m;
    OK(marble__manifest_create(fs, "mem://r", 0, &m, err_));
    apply_steps(m, 1, 2);
    marble__version *old = marble__manifest_current(m);
    marble__version *old2 = marble__manifest_current(m);
    apply_steps(m, 3, 3);
    nums ob = {0}, live = {0};
    marble__manifest_obsolete_files(m, collect_num, &ob);
    ASSERT_EQ_U64(ob.n, 0);
    marble__manifest_live_files(m, collect_num, &live);
    ASSERT_EQ_U64(live.n, 4);
    ASSERT_TRUE(has(&live, 1) && has(&live, 2) && has(&live, 3) && has(&live, 103));
    ASSERT_EQ_U64(marble__version_num_files(old, 0), 2);
    marble__version_unref(old);
    marble__manifest_obsolete_files(m, collect_num, &ob);
    ASSERT_EQ_U64(ob.n, 0);
    marble__version_unref(old2);
    marble__manifest_obsolete_files(m, collect_num, &ob);
    ASSERT_EQ_U64(ob.n, 2);
    ASSERT_TRUE(has(&ob, 1) && has(&ob, 2));
    ob.n = 0;
    marble__manifest_obsolete_files(m, collect_num, &ob);
    ASSERT_EQ_U64(ob.n, 0);

    marble__version *held = marble__manifest_current(m);
    OK(marble__manifest_close(m, err_));
    ASSERT_EQ_U64(marble__version_num_files(held, 1), 1);
    ASSERT_EQ_U64(marble__version_file(held, 1, 0)->number, 103);
    marble__version_unref(held);
    OK(marble_fs_destroy(fs, err_));
}

static int count_uri(void *ud, const char *uri)
{
    (void)uri;
    (*(int *)ud)++;
    return 0;
}

TEST(manifest_roll)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    marble__manifest *m;
    OK(marble__manifest_create(fs, "mem://roll", 400, &m, err_));
    uint64_t first = marble__manifest_number(m);
    apply_steps(m, 1, 20);
    uint64_t last = marble__manifest_number(m);
    ASSERT_GT_INT(last, first + 2);
    ASSERT_LE_INT(marble__manifest_file_size(m), 400 + 200);
    OK(marble__manifest_roll(m, err_));
    ASSERT_EQ_U64(marble__manifest_number(m), last + 1);
    int files = 0;
    OK(marble_fs_glob(fs, "mem://roll/MANIFEST-*", count_uri, &files, err_));
    ASSERT_EQ_INT(files, 1);
    void *cur;
    size_t n;
    OK(marble_fs_read_all(fs, "mem://roll/CURRENT", &cur, &n, err_));
    char want[64];
    snprintf(want, sizeof want, "MANIFEST-%06" PRIu64 "\n", last + 1);
    ASSERT_EQ_U64(n, strlen(want));
    ASSERT_TRUE(memcmp(cur, want, n) == 0);
    free(cur);
    snap a = snapshot(m);
    OK(marble__manifest_close(m, err_));
    marble__manifest_recovery rec;
    OK(marble__manifest_open(fs, "mem://roll", NULL, &m, &rec, err_));
    ASSERT_EQ_U64(rec.manifest_number, last + 1);
    ASSERT_EQ_U64(rec.records, 1);
    snap b = snapshot(m);
    snap_eq(a, b);
    check_shape(m, 20);
    OK(marble__manifest_close(m, err_));
    free(a.p);
    free(b.p);
    OK(marble_fs_destroy(fs, err_));
}

/* Builds a manifest with `steps` edits in dir; returns the live file's URI and contents. */
static void build(marble_fs *fs, const char *dir, int steps, char *uri, void **data, size_t *n)
{
    marble__manifest *m;
    OK(marble__manifest_create(fs, dir, 0, &m, err_));
    apply_steps(m, 1, steps);
    snprintf(uri, 700, "%s/MANIFEST-%06" PRIu64, dir, marble__manifest_number(m));
    OK(marble__manifest_close(m, err_));
    OK(marble_fs_read_all(fs, uri, data, n, err_));
}

TEST(manifest_torn_tail)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    char uri[700];
    void *full;
    size_t n;
    build(fs, "mem://t/base", 5, uri, &full, &n);
    marble__manifest *m;
    OK(marble__manifest_open(fs, "mem://t/base", NULL, &m, NULL, err_));
    snap want5 = snapshot(m);
    OK(marble__manifest_close(m, err_));
    marble__version_edit e;
    make_edit(6, &e);
    unsigned char *payload;
    size_t plen;
    OK(marble__edit_encode(&e, &payload, &plen, err_));
    marble__edit_free(&e);
    free(payload);
    void *d6;
    size_t n6;
    char uri6[700];
    build(fs, "mem://t/six", 6, uri6, &d6, &n6);
    ASSERT_EQ_U64(n6 - n, plen + 8);
    const char *name = strrchr(uri6, '/') + 1;
    for (size_t cut = n; cut < n6; cut++) {
        char dir[64], u[700], cur[700];
        snprintf(dir, sizeof dir, "mem://t/c%zu", cut);
        OK(marble_fs_mkdir(fs, dir, 1, err_));
        snprintf(u, sizeof u, "%s/%s", dir, name);
        unsigned char *bytes = malloc(n6);
        memcpy(bytes, d6, n6);
        if (cut > n && cut % 2) memset(bytes + cut, 0, n6 - cut);
        OK(marble_fs_write_all(fs, u, bytes, cut % 2 && cut > n ? n6 : cut, 0, err_));
        free(bytes);
        snprintf(cur, sizeof cur, "%s/CURRENT", dir);
        char content[64];
        snprintf(content, sizeof content, "%s\n", name);
        OK(marble_fs_write_all(fs, cur, content, strlen(content), 0, err_));
        marble__manifest_recovery rec;
        OK(marble__manifest_open(fs, dir, NULL, &m, &rec, err_));
        ASSERT_EQ_INT(rec.torn_tail, cut != n);
        ASSERT_EQ_U64(rec.records, 6);
        snap s = snapshot(m);
        snap_eq(want5, s);
        free(s.p);
        apply_steps(m, 6, 7);
        OK(marble__manifest_close(m, err_));
        OK(marble__manifest_open(fs, dir, NULL, &m, &rec, err_));
        ASSERT_FALSE(rec.torn_tail);
        check_shape(m, 7);
        OK(marble__manifest_close(m, err_));
    }
    free(want5.p);
    free(full);
    free(d6);
    OK(marble_fs_destroy(fs, err_));
}

TEST(manifest_corruption)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    char uri[700];
    void *data;
    size_t n;
    build(fs, "mem://c", 6, uri, &data, &n);
    unsigned char *b = data;
    b[20] ^= 0x40;
    OK(marble_fs_write_all(fs, uri, b, n, 0, err_));
    marble__manifest *m;
    marble_error err;
    ASSERT_EQ_INT(marble__manifest_open(fs, "mem://c", NULL, &m, NULL, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, uri);
    OK(marble_fs_write_all(fs, "mem://c/CURRENT", "MANIFEST-x\n", 11, 0, err_));
    ASSERT_EQ_INT(marble__manifest_open(fs, "mem://c", NULL, &m, NULL, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "mem://c/CURRENT");
    OK(marble_fs_write_all(fs, "mem://c/CURRENT", "MANIFEST-000099\n", 16, 0, err_));
    ASSERT_EQ_INT(marble__manifest_open(fs, "mem://c", NULL, &m, NULL, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "MANIFEST-000099");
    free(data);
    OK(marble_fs_destroy(fs, err_));
}

#define SWEEP_STEPS 9

/* Opens (creating) through the fault backend, applies SWEEP_STEPS edits with a roll after the
 * fourth and small files so that applies roll too; returns how many applies succeeded, -1 if the
 * open failed. */
static int sweep_run(marble_fs *fs, const char *dir, snap *states, int record)
{
    marble__manifest_options o = {.max_file_size = 300, .create_if_missing = 1};
    marble__manifest *m;
    marble_error err;
    if (marble__manifest_open(fs, dir, &o, &m, NULL, &err) != MARBLE_OK) {
        ASSERT_CONTAINS(err.message, dir);
        return -1;
    }
    if (record) states[0] = snapshot(m);
    int acked = 0, failed = 0;
    for (int i = 1; i <= SWEEP_STEPS; i++) {
        marble__version_edit e;
        make_edit(i, &e);
        int rc = i == 5 ? marble__manifest_roll(m, &err) : MARBLE_OK;
        if (rc == MARBLE_OK) rc = marble__manifest_apply(m, &e, &err);
        marble__edit_free(&e);
        if (rc == MARBLE_OK) {
            ASSERT_FALSE(failed);
            acked = i;
            if (record) states[i] = snapshot(m);
        } else {
            ASSERT_TRUE(rc == MARBLE_ERR_IO || rc == MARBLE_ERR_NO_SPACE);
            ASSERT_CONTAINS(err.message, dir);
            failed = 1;
        }
    }
    if (failed) {
        snap s = snapshot(m);
        snap_eq(s, states[acked]);
        free(s.p);
    }
    marble__manifest_close(m, NULL);
    return acked;
}

TEST(manifest_fault_sweep)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    marble_vfs *fault;
    OK(marble_vfs_fault_create(marble_fs_backend(fs, "mem"), &fault, err_));
    OK(marble_fs_register(fs, "fault", fault, err_));
    const uint32_t ops = MARBLE_FAULT_WRITE | MARBLE_FAULT_SYNC | MARBLE_FAULT_RENAME;
    snap states[SWEEP_STEPS + 1];
    uint64_t c0 = marble_fault_count(fault, (marble_fault_op)ops);
    ASSERT_EQ_INT(sweep_run(fs, "fault://s/clean", states, 1), SWEEP_STEPS);
    uint64_t k = marble_fault_count(fault, (marble_fault_op)ops) - c0;
    ASSERT_GT_INT(k, 20);
    int saw_open_fail = 0, saw_partial = 0;
    for (uint64_t nth = 1; nth <= k; nth++) {
        char fdir[64], pdir[64];
        snprintf(fdir, sizeof fdir, "fault://s/n%" PRIu64, nth);
        snprintf(pdir, sizeof pdir, "mem://s/n%" PRIu64, nth);
        marble_fault_fail_nth(fault, ops, nth, nth % 2 ? EIO : ENOSPC);
        int acked = sweep_run(fs, fdir, states, 0);
        marble_fault_fail_nth(fault, ops, 0, 0);
        OK(marble_fault_crash(fault, err_));
        marble__manifest *m;
        marble_error err;
        int rc = marble__manifest_open(fs, pdir, NULL, &m, NULL, &err);
        if (acked < 0) {
            saw_open_fail = 1;
            if (rc == MARBLE_ERR_NOT_FOUND) continue;
            acked = 0;
        }
        if (rc != MARBLE_OK) FAIL("nth %" PRIu64 ": reopen: %s", nth, err.message);
        saw_partial |= acked > 0 && acked < SWEEP_STEPS;
        snap s = snapshot(m);
        snap_eq(s, states[acked]);
        free(s.p);
        OK(marble__manifest_close(m, err_));
    }
    ASSERT_TRUE(saw_open_fail && saw_partial);
    for (int i = 0; i <= SWEEP_STEPS; i++)
        free(states[i].p);
    OK(marble_fs_destroy(fs, err_));
}

TEST(manifest_power_cut_roll)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    marble_vfs *fault;
    OK(marble_vfs_fault_create(marble_fs_backend(fs, "mem"), &fault, err_));
    OK(marble_fs_register(fs, "fault", fault, err_));
    int kept_old = 0;
    for (uint64_t nth = 1; nth <= 8; nth++) {
        char fdir[64], pdir[64];
        snprintf(fdir, sizeof fdir, "fault://p/n%" PRIu64, nth);
        snprintf(pdir, sizeof pdir, "mem://p/n%" PRIu64, nth);
        marble__manifest *m;
        OK(marble__manifest_create(fs, fdir, 0, &m, err_));
        apply_steps(m, 1, 4);
        snap want = snapshot(m);
        uint64_t old_no = marble__manifest_number(m);
        marble_fault_fail_nth(fault, MARBLE_FAULT_SYNC, nth, EIO);
        marble_error err;
        int rc = marble__manifest_roll(m, &err);
        marble_fault_fail_nth(fault, MARBLE_FAULT_SYNC, 0, 0);
        OK(marble_fault_crash(fault, err_));
        marble__manifest_close(m, NULL);
        marble__manifest_recovery rec;
        OK(marble__manifest_open(fs, pdir, NULL, &m, &rec, err_));
        if (rc != MARBLE_OK) {
            ASSERT_TRUE(rec.manifest_number == old_no || rec.manifest_number == old_no + 1);
            kept_old += rec.manifest_number == old_no;
        } else {
            ASSERT_EQ_U64(rec.manifest_number, old_no + 1);
        }
        snap s = snapshot(m);
        snap_eq(want, s);
        free(s.p);
        free(want.p);
        apply_steps(m, 5, 6);
        check_shape(m, 6);
        OK(marble__manifest_close(m, err_));
    }
    ASSERT_GT_INT(kept_old, 2);
    OK(marble_fs_destroy(fs, err_));
}

static int count_entries(void *ud, const char *name, int is_dir)
{
    (void)is_dir;
    int *n = ud;
    if (strncmp(name, "MANIFEST-", 9) == 0) n[0]++;
    if (strcmp(name, "CURRENT") == 0) n[1]++;
    return 0;
}

/* Object-store mode: every apply writes one whole new MANIFEST object; open takes the newest;
 * there is never a CURRENT and only one MANIFEST object remains. */
TEST(manifest_object_store_mode)
{
    marble_fs *fs;
    OK(marble_fs_create(&fs, err_));
    marble__manifest_options o = {0, 1, 0, 1};
    marble__manifest *m;
    OK(marble__manifest_open(fs, "mem://obj", &o, &m, NULL, err_));
    apply_steps(m, 1, 10);
    check_shape(m, 10);
    snap before = snapshot(m);
    OK(marble__manifest_close(m, err_));
    int n[2] = {0, 0};
    OK(marble_fs_list(fs, "mem://obj", count_entries, n, err_));
    ASSERT_EQ_INT(n[0], 1);
    ASSERT_EQ_INT(n[1], 0);
    marble__manifest_recovery rec;
    o.create_if_missing = 0;
    OK(marble__manifest_open(fs, "mem://obj", &o, &m, &rec, err_));
    ASSERT_EQ_U64(rec.records, 1);
    snap after = snapshot(m);
    snap_eq(before, after);
    check_shape(m, 10);
    apply_steps(m, 11, 12);
    check_shape(m, 12);
    OK(marble__manifest_close(m, err_));
    OK(marble__manifest_open(fs, "mem://obj", &o, &m, &rec, err_));
    check_shape(m, 12);
    OK(marble__manifest_close(m, err_));
    free(before.p);
    free(after.p);
    OK(marble_fs_destroy(fs, err_));
}
