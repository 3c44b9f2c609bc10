/*
 * Damaged files: an SSTable, the WAL, the MANIFEST and CURRENT of a local database are changed
 * on disk (bytes flipped, files truncated, contents replaced) and opening the database or reading
 * from it must fail with MARBLE_ERR_CORRUPTION and a message that names the damaged file and says
 * "corruption", never crash (these tests run under ASan in `make asan`) and never return data
 * that was not written. A torn WAL tail (the last record cut short) is no error: the database
 * opens without the unacknowledged write.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../crash/workload.h"
#include "marble_test.h"

#define SEED 0xc0feull

static marble_db_options copts(void)
{
    marble_db_options o;
    marble_db_options_init(&o);
    o.write_buffer_size = 64 << 20;
    o.disable_auto_compaction = 1;
    o.batch_rows = 40;
    o.verify_checksums = 1;
    return o;
}

/* A database at <tmp>/<name> holding `ops` acknowledged operations of thread 0 (in *m), flushed
 * to SSTables if `flush`, closed. */
static void make_db(const char *dir, int ops, int flush, wl_model *m)
{
    marble_db_options o = copts();
    marble_db *db = NULL;
    marble_error err = {0};
    if (marble_db_open(dir, &o, &db, &err) != MARBLE_OK) FAIL("open: %s", err.message);
    if (wl_create_table(db, &err) != MARBLE_OK) FAIL("create table: %s", err.message);
    memset(m, 0, sizeof *m);
    uint64_t rng = wl_seed(SEED, 0, 0);
    for (int i = 0; i < ops; i++) {
        wl_op op;
        wl_gen(&rng, wl_version(0, (uint64_t)i), &op);
        if (wl_exec(db, 0, &op, &err) != MARBLE_OK) FAIL("write: %s", err.message);
        wl_apply(m, 0, &op);
    }
    if (flush && marble_db_flush(db, &err) != MARBLE_OK) FAIL("flush: %s", err.message);
    if (marble_db_close(db, &err) != MARBLE_OK) FAIL("close: %s", err.message);
}

static void db_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", marble_test_tmpdir(), name);
}

/* The path of the first file in dir whose name ends with suffix (and starts with prefix). */
static void find_file(const char *dir, const char *prefix, const char *suffix, char *out,
                      size_t cap)
{
    DIR *d = opendir(dir);
    if (!d) FAIL("opendir %s", dir);
    struct dirent *e;
    char best[256] = "";
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name), sn = strlen(suffix), pn = strlen(prefix);
        if (n < sn + pn || strcmp(e->d_name + n - sn, suffix) != 0 ||
            strncmp(e->d_name, prefix, pn) != 0)
            continue;
        if (!best[0] || strcmp(e->d_name, best) > 0) snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    if (!best[0]) FAIL("no %s*%s in %s", prefix, suffix, dir);
    snprintf(out, cap, "%s/%s", dir, best);
}

static off_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) FAIL("stat %s", path);
    return st.st_size;
}

static void flip(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    if (fd < 0) FAIL("open %s", path);
    unsigned char b;
    if (pread(fd, &b, 1, off) != 1) FAIL("pread %s at %lld", path, (long long)off);
    b ^= 0x5a;
    if (pwrite(fd, &b, 1, off) != 1) FAIL("pwrite %s", path);
    close(fd);
}

static void cut(const char *path, off_t size)
{
    if (truncate(path, size) != 0) FAIL("truncate %s", path);
}

static void replace(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0) FAIL("open %s", path);
    size_t n = strlen(text);
    if (n && write(fd, text, n) != (ssize_t)n) FAIL("write %s", path);
    close(fd);
}

static void expect_corruption_msg(int rc, const char *msg, const char *file, const char *what)
{
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    if (rc != MARBLE_ERR_CORRUPTION)
        FAIL("%s: %s (%d), wanted MARBLE_ERR_CORRUPTION: %s", what, marble_status_name(rc), rc,
             msg);
    ASSERT_CONTAINS(msg, "corruption");
    ASSERT_CONTAINS(msg, base);
}

/* Opening fails with corruption naming `file`. */
static void expect_open_corruption(const char *dir, const char *file, const char *what)
{
    marble_db_options o = copts();
    o.create_if_missing = 0;
    marble_db *db = NULL;
    marble_error err = {0};
    int rc = marble_db_open(dir, &o, &db, &err);
    if (rc == MARBLE_OK) {
        marble_db_close(db, NULL);
        FAIL("%s: the database opened", what);
    }
    expect_corruption_msg(rc, err.message, file, what);
}

/* The database opens; every read either returns what was written or fails with corruption
 * naming `file`, and at least one point read and the full scan fail. */
static void expect_read_corruption(const char *dir, const char *file, const wl_model *m,
                                   const char *what)
{
    marble_db_options o = copts();
    o.create_if_missing = 0;
    marble_db *db = NULL;
    marble_error err = {0};
    int rc = marble_db_open(dir, &o, &db, &err);
    if (rc != MARBLE_OK) {
        expect_corruption_msg(rc, err.message, file, what);
        return;
    }
    int failures = 0;
    for (int i = 0; i < WL_ROWS; i++) {
        marble_value kv;
        wl_row_key_value(0, i, &kv);
        marble_key key = {&kv, 1};
        struct ArrowSchema s;
        struct ArrowArray row;
        rc = marble_db_get(db, "t", key, NULL, &s, &row, &err);
        if (rc == MARBLE_OK) {
            uint64_t ver = (uint64_t)marble_arrow_get_int(s.children[1], row.children[1], 0);
            marble_arrow_array_release(&row);
            marble_arrow_schema_release(&s);
            if (ver != m->row[0][i]) FAIL("%s: row %d holds version %" PRIx64, what, i, ver);
        } else if (rc == MARBLE_ERR_NOT_FOUND) {
            if (m->row[0][i]) FAIL("%s: row %d is missing", what, i);
        } else {
            expect_corruption_msg(rc, err.message, file, what);
            failures++;
        }
    }
    if (!failures) FAIL("%s: every point read succeeded", what);
    struct ArrowArrayStream st;
    rc = marble_db_scan(db, "t", NULL, NULL, &st, &err);
    if (rc != MARBLE_OK) {
        expect_corruption_msg(rc, err.message, file, what);
    } else {
        int e = 0;
        for (;;) {
            struct ArrowArray a;
            e = st.get_next(&st, &a);
            if (e != 0 || !a.release) break;
            marble_arrow_array_release(&a);
        }
        if (e == 0) FAIL("%s: the full scan succeeded", what);
        const char *msg = st.get_last_error(&st);
        ASSERT_CONTAINS(msg, "corruption");
        ASSERT_CONTAINS(msg, strrchr(file, '/') + 1);
        st.release(&st);
    }
    if (marble_db_close(db, &err) != MARBLE_OK) FAIL("%s: close: %s", what, err.message);
}

TEST(db_corrupt_sstable)
{
    static wl_model m;
    /* positions as fractions of the file (per mille), then from its end */
    static const int at[] = {300, 500, 700, 900};
    static const int from_end[] = {1, 8, 20, 40};
    int run = 0;
    for (int k = 0; k < 4 + 4 + 3; k++) {
        char dir[700], sst[900], what[128];
        snprintf(what, sizeof what, "sst%d", run);
        db_dir(dir, sizeof dir, what);
        run++;
        make_db(dir, 300, 1, &m);
        find_file(dir, "", ".arrow", sst, sizeof sst);
        off_t size = file_size(sst);
        if (k < 4) {
            flip(sst, size * at[k] / 1000);
            snprintf(what, sizeof what, "SSTable byte %lld of %lld flipped",
                     (long long)(size * at[k] / 1000), (long long)size);
        } else if (k < 8) {
            flip(sst, size - from_end[k - 4]);
            snprintf(what, sizeof what, "SSTable byte %lld of %lld flipped",
                     (long long)(size - from_end[k - 4]), (long long)size);
        } else {
            off_t to = k == 8 ? size - 1 : k == 9 ? size / 2 : 0;
            cut(sst, to);
            snprintf(what, sizeof what, "SSTable cut from %lld to %lld bytes", (long long)size,
                     (long long)to);
        }
        expect_read_corruption(dir, sst, &m, what);
    }
}

TEST(db_corrupt_wal_record)
{
    static wl_model m;
    char dir[700], wal[900], wdir[800];
    db_dir(dir, sizeof dir, "w");
    make_db(dir, 40, 0, &m);
    snprintf(wdir, sizeof wdir, "%s/wal", dir);
    find_file(wdir, "", ".log", wal, sizeof wal);
    ASSERT_GT_INT(file_size(wal), 200);
    flip(wal, 24); /* in the first record's payload, with valid records after it */
    expect_open_corruption(dir, wal, "a bad first WAL record");
    flip(wal, 24);
    flip(wal, 3); /* its CRC */
    expect_open_corruption(dir, wal, "a bad first WAL record CRC");
}

TEST(db_wal_torn_tail)
{
    static wl_model m;
    char dir[700], wal[900], wdir[800];
    db_dir(dir, sizeof dir, "w");
    make_db(dir, 40, 0, &m);
    snprintf(wdir, sizeof wdir, "%s/wal", dir);
    find_file(wdir, "", ".log", wal, sizeof wal);
    cut(wal, file_size(wal) - 3);
    /* the expected state: the first 39 operations */
    static wl_model m39;
    memset(&m39, 0, sizeof m39);
    uint64_t rng = wl_seed(SEED, 0, 0);
    for (int i = 0; i < 39; i++) {
        wl_op op;
        wl_gen(&rng, wl_version(0, (uint64_t)i), &op);
        wl_apply(&m39, 0, &op);
    }
    for (int round = 0; round < 2; round++) {
        marble_db_options o = copts();
        o.create_if_missing = 0;
        marble_db *db = NULL;
        marble_error err = {0};
        if (marble_db_open(dir, &o, &db, &err) != MARBLE_OK)
            FAIL("open with a torn WAL tail (round %d): %s", round, err.message);
        wl_model obs;
        char why[1024];
        if (wl_read(db, &obs, why, sizeof why) != 0) FAIL("%s", why);
        if (wl_diff(&obs, &m39, 0, why, sizeof why)) FAIL("round %d: %s", round, why);
        if (marble_db_close(db, &err) != MARBLE_OK) FAIL("close: %s", err.message);
    }
}

TEST(db_corrupt_manifest)
{
    static wl_model m;
    char dir[700], man[900];
    /* several records: a bad first one with valid ones after it */
    db_dir(dir, sizeof dir, "m1");
    make_db(dir, 60, 1, &m);
    find_file(dir, "MANIFEST-", "", man, sizeof man);
    flip(man, 12);
    expect_open_corruption(dir, man, "a bad first MANIFEST record");

    /* a bad record in the middle */
    db_dir(dir, sizeof dir, "m2");
    make_db(dir, 60, 1, &m);
    find_file(dir, "MANIFEST-", "", man, sizeof man);
    off_t size = file_size(man);
    flip(man, size / 2);
    {
        marble_db_options o = copts();
        o.create_if_missing = 0;
        marble_db *db = NULL;
        marble_error err = {0};
        int rc = marble_db_open(dir, &o, &db, &err);
        /* a bad last record reads as a torn tail (the edit was never acknowledged); then the
         * database must still open and hold a consistent state */
        if (rc == MARBLE_OK) {
            wl_model obs;
            char why[1024];
            if (wl_read(db, &obs, why, sizeof why) != 0) FAIL("%s", why);
            marble_db_close(db, NULL);
        } else {
            expect_corruption_msg(rc, err.message, man, "a bad MANIFEST record in the middle");
        }
    }

    /* a MANIFEST with only its snapshot record (after a reopen), damaged or cut */
    for (int k = 0; k < 3; k++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", 3 + k);
        db_dir(dir, sizeof dir, name);
        make_db(dir, 60, 1, &m);
        marble_db_options o = copts();
        marble_db *db = NULL;
        marble_error err = {0};
        if (marble_db_open(dir, &o, &db, &err) != MARBLE_OK) FAIL("open: %s", err.message);
        if (marble_db_close(db, &err) != MARBLE_OK) FAIL("close: %s", err.message);
        find_file(dir, "MANIFEST-", "", man, sizeof man);
        size = file_size(man);
        if (k == 0) flip(man, size / 2);
        if (k == 1) cut(man, 5);
        if (k == 2) cut(man, 0);
        expect_open_corruption(dir, man,
                               k == 0   ? "the MANIFEST's only record damaged"
                               : k == 1 ? "the MANIFEST cut to 5 bytes"
                                        : "an empty MANIFEST");
    }
}

TEST(db_corrupt_current)
{
    static wl_model m;
    static const char *contents[] = {"garbage\n", "MANIFEST-000099\n", "", "MANIFEST-000001", "\n"};
    for (size_t k = 0; k < sizeof contents / sizeof contents[0]; k++) {
        char dir[700], cur[900], name[16];
        snprintf(name, sizeof name, "c%zu", k);
        db_dir(dir, sizeof dir, name);
        make_db(dir, 20, 1, &m);
        snprintf(cur, sizeof cur, "%s/CURRENT", dir);
        replace(cur, contents[k]);
        char what[64];
        snprintf(what, sizeof what, "CURRENT holding \"%s\"", contents[k]);
        expect_open_corruption(dir, k == 1 ? "MANIFEST-000099" : cur, what);
    }
}
