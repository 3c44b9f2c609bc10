/* Tests of compaction: the picker on hand-built versions, and runs over SSTables in mem://
 * checked entry by entry against a model of the drop rules, output cutting, cleanup on failure. */
#include <stdlib.h>

#include "lsm/compaction.h"
#include "lsm/iter.h"
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

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

/* ---- picker ---------------------------------------------------------------------------------- */

/* A manifest key: 4-byte big-endian table id + text. */
static size_t mkey(uint32_t table, const char *text, unsigned char *out)
{
    out[0] = (unsigned char)(table >> 24);
    out[1] = (unsigned char)(table >> 16);
    out[2] = (unsigned char)(table >> 8);
    out[3] = (unsigned char)table;
    size_t n = strlen(text);
    memcpy(out + 4, text, n);
    return 4 + n;
}

static void add_file(marble__version_edit *e, int level, uint64_t number, uint32_t table,
                     const char *lo, const char *hi, uint64_t seq, uint64_t size)
{
    unsigned char s[64], l[64];
    marble__file_meta f = {.level = level,
                           .number = number,
                           .size = size,
                           .smallest = s,
                           .smallest_len = mkey(table, lo, s),
                           .largest = l,
                           .largest_len = mkey(table, hi, l),
                           .smallest_seq = seq,
                           .largest_seq = seq + 5,
                           .rows = 10};
    ASSERT_OK(marble__edit_add_file(e, &f));
}

typedef struct picker_env {
    marble_fs *fs;
    marble__manifest *m;
} picker_env;

static void picker_open(picker_env *p, const char *dir)
{
    OK(marble_fs_create(&p->fs, err_));
    OK(marble__manifest_create(p->fs, dir, 0, &p->m, err_));
    marble__compaction_reset_pointers();
}

static void picker_close(picker_env *p)
{
    OK(marble__manifest_close(p->m, err_));
    OK(marble_fs_destroy(p->fs, err_));
}

static void apply(picker_env *p, marble__version_edit *e)
{
    OK(marble__manifest_apply(p->m, e, err_));
    marble__edit_free(e);
}

static int in_inputs(const marble__compaction *c, int which, uint64_t number)
{
    for (size_t i = 0; i < c->n_inputs[which]; i++)
        if (c->inputs[which][i].number == number) return 1;
    return 0;
}

static void expect_inputs(const marble__compaction *c, int which, const uint64_t *nums, size_t n)
{
    ASSERT_EQ_U64(c->n_inputs[which], n);
    for (size_t i = 0; i < n; i++)
        if (!in_inputs(c, which, nums[i]))
            FAIL("file %" PRIu64 " not among inputs[%d]", nums[i], which);
}

typedef struct busy_set {
    uint64_t nums[16];
    int n;
} busy_set;

static int busy_fn(void *ud, uint64_t number)
{
    busy_set *b = ud;
    for (int i = 0; i < b->n; i++)
        if (b->nums[i] == number) return 1;
    return 0;
}

static const marble__compaction_options OPTS = {
    .level0_compaction_trigger = 4, .level1_max_bytes = 1000, .target_file_size = 100};

TEST(compaction_level_max_bytes)
{
    ASSERT_EQ_U64(marble__level_max_bytes(&OPTS, 1), 1000);
    ASSERT_EQ_U64(marble__level_max_bytes(&OPTS, 2), 10000);
    ASSERT_EQ_U64(marble__level_max_bytes(&OPTS, 6), 100000000);
    marble__compaction_options d = {0};
    ASSERT_EQ_U64(marble__level_max_bytes(&d, 1), (uint64_t)256 << 20);
    ASSERT_EQ_U64(marble__level_max_bytes(&d, 3), ((uint64_t)256 << 20) * 100);
}

TEST(compaction_pick_l0_overlap_expansion)
{
    picker_env p;
    picker_open(&p, "mem://p0");
    marble__version_edit e;
    marble__edit_init(&e);
    /* L0 (seq = age): 1 [c, e] oldest, 2 [d, g], 3 [x, z], 4 [f, h] newest: the oldest pulls in
     * 2 (overlaps [c, e]), then 4 (overlaps [c, g]); 3 stays. L1: 10 [a, b], 11 [c, d],
     * 12 [i, k] (overlaps [c, h]? no), 13 [h, h]. */
    add_file(&e, 0, 1, 1, "c", "e", 10, 100);
    add_file(&e, 0, 2, 1, "d", "g", 20, 100);
    add_file(&e, 0, 3, 1, "x", "z", 30, 100);
    add_file(&e, 0, 4, 1, "f", "h", 40, 100);
    add_file(&e, 1, 10, 1, "a", "b", 1, 100);
    add_file(&e, 1, 11, 1, "c", "d", 1, 100);
    add_file(&e, 1, 13, 1, "h", "h", 1, 100);
    add_file(&e, 1, 12, 1, "i", "k", 1, 100);
    apply(&p, &e);
    marble__version *v = marble__manifest_current(p.m);
    marble__compaction *c;
    OK(marble__compaction_pick(v, &OPTS, NULL, NULL, &c, err_));
    ASSERT_NOT_NULL(c);
    ASSERT_EQ_INT(c->level, 0);
    ASSERT_EQ_INT(c->output_level, 1);
    ASSERT_EQ_INT(c->table_id, 1);
    ASSERT_EQ_INT(c->manual, 0);
    expect_inputs(c, 0, (uint64_t[]){1, 2, 4}, 3);
    expect_inputs(c, 1, (uint64_t[]){11, 13}, 2);
    marble__compaction_free(c);

    /* File 2 busy: the oldest's closure holds it, so the next candidate (3) is picked alone. */
    busy_set b = {{2}, 1};
    OK(marble__compaction_pick(v, &OPTS, busy_fn, &b, &c, err_));
    ASSERT_NOT_NULL(c);
    expect_inputs(c, 0, (uint64_t[]){3}, 1);
    ASSERT_EQ_U64(c->n_inputs[1], 0);
    marble__compaction_free(c);
    /* L1 file 13 busy: 1's closure needs it; 3 is free. */
    b = (busy_set){{13}, 1};
    OK(marble__compaction_pick(v, &OPTS, busy_fn, &b, &c, err_));
    expect_inputs(c, 0, (uint64_t[]){3}, 1);
    marble__compaction_free(c);
    /* Everything busy: nothing. */
    b = (busy_set){{1, 3}, 2};
    OK(marble__compaction_pick(v, &OPTS, busy_fn, &b, &c, err_));
    ASSERT_NULL(c);
    marble__version_unref(v);
    picker_close(&p);
}

TEST(compaction_pick_below_trigger)
{
    picker_env p;
    picker_open(&p, "mem://p1");
    marble__version *v = marble__manifest_current(p.m);
    marble__compaction *c = (marble__compaction *)&p; /* overwritten */
    OK(marble__compaction_pick(v, &OPTS, NULL, NULL, &c, err_));
    ASSERT_NULL(c);
    marble__version_unref(v);
    marble__version_edit e;
    marble__edit_init(&e);
    add_file(&e, 0, 1, 1, "a", "b", 10, 100);
    add_file(&e, 0, 2, 1, "a", "b", 20, 100);
    add_file(&e, 0, 3, 2, "a", "b", 30, 100);
    add_file(&e, 1, 4, 1, "a", "z", 1, 999); /* just below 1000 */
    add_file(&e, 2, 5, 1, "a", "z", 1, 9999);
    apply(&p, &e);
    v = marble__manifest_current(p.m);
    OK(marble__compaction_pick(v, &OPTS, NULL, NULL, &c, err_));
    ASSERT_NULL(c);
    marble__version_unref(v);
    /* A fourth L0 file (table 2) reaches the trigger: the oldest (table 1's file 1) goes with
     * file 2, which overlaps it, and never with table 2's files. */
    marble__edit_init(&e);
    add_file(&e, 0, 6, 2, "c", "d", 40, 100);
    apply(&p, &e);
    v = marble__manifest_current(p.m);
    OK(marble__compaction_pick(v, &OPTS, NULL, NULL, &c, err_));
    ASSERT_NOT_NULL(c);
    ASSERT_EQ_INT(c->level, 0);
    ASSERT_EQ_INT(c->table_id, 1);
    expect_inputs(c, 0, (uint64_t[]){1, 2}, 2);
    expect_inputs(c, 1, (uint64_t[]){4}, 1);
    marble__compaction_free(c);
    marble__version_unref(v);
    picker_close(&p);
}

TEST(compaction_pick_round_robin_and_scores)
{
    picker_env p;
    picker_open(&p, "mem://p2");
    marble__version_edit e;
    marble__edit_init(&e);
    /* L1: 400 * 3 = 1200 bytes (score 1.2); L2: two files. */
    add_file(&e, 1, 1, 1, "a", "c", 1, 400);
    add_file(&e, 1, 2, 1, "d", "f", 1, 400);
    add_file(&e, 1, 3, 1, "g", "i", 1, 400);
    add_file(&e, 2, 4, 1, "b", "e", 1, 100);
    add_file(&e, 2, 5, 1, "h", "z", 1, 100);
    apply(&p, &e);
    marble__version *v = marble__manifest_current(p.m);
    uint64_t expect[5] = {1, 2, 3, 1, 2};
    for (int i = 0; i < 5; i++) {
        marble__compaction *c;
        OK(marble__compaction_pick(v, &OPTS, NULL, NULL, &c, err_));
        ASSERT_NOT_NULL(c);
        ASSERT_EQ_INT(c->level, 1);
        ASSERT_EQ_INT(c->output_level, 2);
        expect_inputs(c, 0, &expect[i], 1);
        if (expect[i] == 1) expect_inputs(c, 1, (uint64_t[]){4}, 1);
        if (expect[i] == 2) expect_inputs(c, 1, (uint64_t[]){4}, 1);
        if (expect[i] == 3) expect_inputs(c, 1, (uint64_t[]){5}, 1);
        marble__compaction_free(c);
    }
    /* Busy files are skipped; the pointer moves on from what was picked. */
    marble__compaction_reset_pointers();
    busy_set b = {{1, 5}, 2}; /* 1 itself, and 3's L2 overlap */
    marble__compaction *c;
    OK(marble__compaction_pick(v, &OPTS, busy_fn, &b, &c, err_));
    expect_inputs(c, 0, (uint64_t[]){2}, 1);
    marble__compaction_free(c);
    b = (busy_set){{1, 2, 5}, 3};
    OK(marble__compaction_pick(v, &OPTS, busy_fn, &b, &c, err_));
    ASSERT_NULL(c);
    marble__version_unref(v);

    /* L2 far over its target (score 3) beats L1 (1.2) and L0 (1.25). */
    marble__edit_init(&e);
    add_file(&e, 2, 6, 2, "a", "z", 1, 29800);
    for (int i = 0; i < 5; i++)
        add_file(&e, 0, 100 + (uint64_t)i, 3, "a", "b", 10 + 10 * (uint64_t)i, 10);
    apply(&p, &e);
    v = marble__manifest_current(p.m);
    OK(marble__compaction_pick(v, &OPTS, NULL, NULL, &c, err_));
    ASSERT_NOT_NULL(c);
    ASSERT_EQ_INT(c->level, 2);
    ASSERT_EQ_INT(c->output_level, 3);
    marble__compaction_free(c);
    /* With L2 busy, L0 (1.25) comes next. */
    b = (busy_set){{4, 5, 6}, 3};
    OK(marble__compaction_pick(v, &OPTS, busy_fn, &b, &c, err_));
    ASSERT_NOT_NULL(c);
    ASSERT_EQ_INT(c->level, 0);
    ASSERT_EQ_INT(c->table_id, 3);
    ASSERT_EQ_U64(c->n_inputs[0], 5);
    marble__compaction_free(c);
    marble__version_unref(v);
    picker_close(&p);
}

TEST(compaction_pick_level_manual)
{
    picker_env p;
    picker_open(&p, "mem://p3");
    marble__version_edit e;
    marble__edit_init(&e);
    add_file(&e, 1, 1, 1, "a", "c", 1, 10);
    add_file(&e, 1, 2, 1, "m", "p", 1, 10);
    add_file(&e, 1, 3, 2, "a", "z", 1, 10);
    add_file(&e, 2, 4, 1, "b", "d", 1, 10);
    add_file(&e, 2, 5, 1, "q", "r", 1, 10);
    add_file(&e, 2, 6, 2, "a", "b", 1, 10);
    apply(&p, &e);
    marble__version *v = marble__manifest_current(p.m);
    marble__compaction *c;
    OK(marble__compaction_pick_level(v, 1, 1, 2, NULL, NULL, &c, err_));
    ASSERT_NOT_NULL(c);
    ASSERT_EQ_INT(c->manual, 1);
    ASSERT_EQ_INT(c->table_id, 1);
    expect_inputs(c, 0, (uint64_t[]){1, 2}, 2);
    expect_inputs(c, 1, (uint64_t[]){4}, 1);
    marble__compaction_free(c);
    /* A bottom-level rewrite: no second input set. */
    OK(marble__compaction_pick_level(v, 1, 2, 2, NULL, NULL, &c, err_));
    expect_inputs(c, 0, (uint64_t[]){4, 5}, 2);
    ASSERT_EQ_U64(c->n_inputs[1], 0);
    ASSERT_EQ_INT(c->output_level, 2);
    marble__compaction_free(c);
    /* No files of table 7 in level 1. */
    c = (marble__compaction *)&p;
    OK(marble__compaction_pick_level(v, 7, 1, 2, NULL, NULL, &c, err_));
    ASSERT_NULL(c);
    /* Busy and bad arguments. */
    busy_set b = {{4}, 1};
    marble_error err;
    ASSERT_EQ_INT(marble__compaction_pick_level(v, 1, 1, 2, busy_fn, &b, &c, &err),
                  MARBLE_ERR_BUSY);
    ASSERT_NULL(c);
    ASSERT_EQ_INT(marble__compaction_pick_level(v, 1, 2, 1, NULL, NULL, &c, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__compaction_pick_level(v, 1, 1, 7, NULL, NULL, &c, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    /* Skipping over a level that holds the range is refused. */
    ASSERT_EQ_INT(marble__compaction_pick_level(v, 1, 1, 3, NULL, NULL, &c, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "level 2");
    marble__version_unref(v);
    picker_close(&p);
}

/* ---- runs ------------------------------------------------------------------------------------ */

#include "lsm/rowcodec.h"

typedef struct entry {
    unsigned char key[12]; /* encoded: 0x01, bytes, 0x00 0x00 */
    size_t klen;
    uint64_t seq;
    int op;
    unsigned char val[9];
    size_t vlen;
} entry;

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static int entry_cmp(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    int c = key_cmp(a->key, a->klen, b->key, b->klen);
    if (c) return c;
    return a->seq > b->seq ? -1 : (a->seq < b->seq ? 1 : 0);
}

static size_t enc_key(const char *text, unsigned char *out)
{
    size_t n = strlen(text);
    out[0] = 1;
    memcpy(out + 1, text, n);
    out[n + 1] = 0;
    out[n + 2] = 0;
    return n + 3;
}

static entry make_entry(const char *text, uint64_t seq, int op)
{
    entry e = {.seq = seq, .op = op};
    e.klen = enc_key(text, e.key);
    if (op) {
        e.val[0] = 1;
        for (int b = 0; b < 8; b++)
            e.val[1 + b] = (unsigned char)(seq >> (8 * b));
        e.vlen = 9;
    }
    return e;
}

static entry *random_entries(size_t n, size_t maxlen)
{
    entry *e = calloc(n, sizeof *e);
    for (size_t i = 0; i < n; i++) {
        char t[8];
        size_t len = 1 + rnd() % maxlen;
        for (size_t j = 0; j < len; j++)
            t[j] = "abcd"[rnd() % 4];
        t[len] = 0;
        e[i] = make_entry(t, 1 + i * 2 + rnd() % 2, rnd() % 4 == 0 ? 0 : 1);
    }
    for (size_t i = n; i > 1; i--) {
        size_t j = rnd() % i;
        entry t = e[i - 1];
        e[i - 1] = e[j];
        e[j] = t;
    }
    return e;
}

typedef struct db {
    marble_fs *fs;
    marble__manifest *m;
    marble__row_codec codec;
    uint64_t next_number;
    uint64_t fail_open; /* open_sst of this file number fails */
    int cancel_at;      /* cancelled() answers 1 from this call on (0: never) */
    int cancel_calls;
    int opens;
} db;

static void db_open(db *d)
{
    memset(d, 0, sizeof *d);
    struct ArrowSchema schema;
    int key = 0;
    OK(marble_fs_create(&d->fs, err_));
    OK(marble_arrow_schema_parse("k:z!,v:l", &schema, err_));
    OK(marble__row_codec_init(&d->codec, &schema, &key, 1, err_));
    marble_arrow_schema_release(&schema);
    OK(marble__manifest_create(d->fs, "mem://db", 0, &d->m, err_));
    d->next_number = 100;
}

static void db_close(db *d)
{
    OK(marble__manifest_close(d->m, err_));
    marble__row_codec_free(&d->codec);
    OK(marble_fs_destroy(d->fs, err_));
}

static void uri_of(uint64_t number, char *uri, size_t cap)
{
    snprintf(uri, cap, "mem://db/%06llu.arrow", (unsigned long long)number);
}

/* Writes e[0, n) (sorted) as file `number` and adds it to the edit at `level` (table 1). */
static void write_file(db *d, marble__version_edit *edit, int level, uint64_t number,
                       const entry *e, size_t n)
{
    char uri[64];
    uri_of(number, uri, sizeof uri);
    marble__sst_options o = {.batch_rows = 7, .bloom_bits_per_key = 10};
    marble__sst_writer *w;
    OK(marble__sst_writer_create(d->fs, uri, &d->codec, &o, &w, err_));
    for (size_t i = 0; i < n; i++)
        OK(marble__sst_writer_add(w, e[i].key, e[i].klen, e[i].seq, e[i].op, e[i].val, e[i].vlen,
                                  err_));
    marble__sst_info info;
    OK(marble__sst_writer_finish(w, &info, err_));
    marble__sst_writer_destroy(w);
    unsigned char s[64], l[64];
    memcpy(s, "\0\0\0\1", 4);
    memcpy(l, "\0\0\0\1", 4);
    memcpy(s + 4, info.smallest.data, info.smallest.len);
    memcpy(l + 4, info.largest.data, info.largest.len);
    marble__file_meta f = {.level = level,
                           .number = number,
                           .size = info.file_size,
                           .smallest = s,
                           .smallest_len = 4 + info.smallest.len,
                           .largest = l,
                           .largest_len = 4 + info.largest.len,
                           .smallest_seq = info.smallest_seq,
                           .largest_seq = info.largest_seq,
                           .rows = info.rows};
    ASSERT_OK(marble__edit_add_file(edit, &f));
    marble__sst_info_free(&info);
}

/* A file meta without a file (for the "nothing below overlaps" test). */
static void phantom_file(marble__version_edit *edit, int level, uint64_t number, const char *lo,
                         const char *hi)
{
    unsigned char s[64], l[64];
    memcpy(s, "\0\0\0\1", 4);
    memcpy(l, "\0\0\0\1", 4);
    marble__file_meta f = {.level = level,
                           .number = number,
                           .size = 1,
                           .smallest = s,
                           .smallest_len = 4 + enc_key(lo, s + 4),
                           .largest = l,
                           .largest_len = 4 + enc_key(hi, l + 4),
                           .rows = 1};
    ASSERT_OK(marble__edit_add_file(edit, &f));
}

static int env_open(void *ud, const marble__file_meta *f, marble__sst **out, marble_error *err)
{
    db *d = ud;
    d->opens++;
    if (f->number == d->fail_open)
        return marble_error_set(err, MARBLE_ERR_IO, "injected: cannot open %llu",
                                (unsigned long long)f->number);
    char uri[64];
    uri_of(f->number, uri, sizeof uri);
    return marble__sst_open(d->fs, NULL, uri, &d->codec, 1, out, err);
}

static uint64_t env_number(void *ud)
{
    return ((db *)ud)->next_number++;
}

static int env_cancelled(void *ud)
{
    db *d = ud;
    d->cancel_calls++;
    return d->cancel_at && d->cancel_calls >= d->cancel_at;
}

static marble__compaction_env make_env(db *d, const marble__version *v, uint64_t snap,
                                       uint64_t target)
{
    marble__compaction_env env = {.fs = d->fs,
                                  .dir_uri = "mem://db",
                                  .codec = &d->codec,
                                  .sst_opts = {.batch_rows = 16, .bloom_bits_per_key = 10},
                                  .target_file_size = target,
                                  .smallest_snapshot = snap,
                                  .version = v,
                                  .open_sst = env_open,
                                  .new_file_number = env_number,
                                  .ud = d,
                                  .cancelled = env_cancelled};
    return env;
}

/* What must survive: per key, versions newer than snap, and the newest at or below it unless
 * it is a delete and below(key) is false. */
static size_t model(const entry *e, size_t n, uint64_t snap, int (*below)(const entry *),
                    entry *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int seen_old = 0;
        for (; j < n && key_cmp(e[j].key, e[j].klen, e[i].key, e[i].klen) == 0; j++) {
            if (e[j].seq > snap) {
                out[m++] = e[j];
            } else if (!seen_old) {
                seen_old = 1;
                if (e[j].op || below(&e[j])) out[m++] = e[j];
            }
        }
        i = j;
    }
    return m;
}

static int below_none(const entry *e)
{
    (void)e;
    return 0;
}
/* Keys starting with 'b' (the phantom L2 file ["b", "bzz"]). */
static int below_b(const entry *e)
{
    return e->klen >= 2 && e->key[1] == 'b';
}

static int count_uri(void *ud, const char *uri)
{
    (void)uri;
    (*(int *)ud)++;
    return 0;
}

static int count_files(db *d)
{
    int n = 0;
    OK(marble_fs_glob(d->fs, "mem://db/*.arrow", count_uri, &n, err_));
    return n;
}

/* Sets up L0: three files of random parts of e, L1: two files split by key; with `phantom`,
 * an L2 file covering the keys that start with 'b'. Returns the sorted entries in *all. */
static void setup_levels(db *d, entry *e, size_t n, int phantom)
{
    entry *parts[4];
    size_t np[4] = {0};
    for (int p = 0; p < 4; p++)
        parts[p] = calloc(n, sizeof(entry));
    for (size_t i = 0; i < n; i++) {
        int p = (int)(rnd() % 4);
        parts[p][np[p]++] = e[i];
    }
    marble__version_edit edit;
    marble__edit_init(&edit);
    for (int p = 0; p < 4; p++)
        qsort(parts[p], np[p], sizeof(entry), entry_cmp);
    for (int p = 0; p < 3; p++)
        if (np[p]) write_file(d, &edit, 0, 1 + (uint64_t)p, parts[p], np[p]);
    size_t half = np[3] / 2;
    while (half > 0 && half < np[3] &&
           key_cmp(parts[3][half].key, parts[3][half].klen, parts[3][half - 1].key,
                   parts[3][half - 1].klen) == 0)
        half++;
    if (half) write_file(d, &edit, 1, 10, parts[3], half);
    if (np[3] > half) write_file(d, &edit, 1, 11, parts[3] + half, np[3] - half);
    if (phantom) phantom_file(&edit, 2, 50, "b", "bzz");
    OK(marble__manifest_apply(d->m, &edit, err_));
    marble__edit_free(&edit);
    for (int p = 0; p < 4; p++)
        free(parts[p]);
    qsort(e, n, sizeof *e, entry_cmp);
}

/* Reads every output of the edit, in key order, into out; checks the metas and that no user
 * key spans two files. */
static size_t read_outputs(db *d, const marble__version_edit *edit, int level, entry *out,
                           size_t cap)
{
    size_t m = 0;
    unsigned char prev_largest[64];
    size_t prev_len = 0;
    for (size_t f = 0; f < edit->n_added; f++) {
        const marble__file_meta *fm = &edit->added[f];
        ASSERT_EQ_INT(fm->level, level);
        ASSERT_TRUE(fm->smallest_len > 4 && memcmp(fm->smallest, "\0\0\0\1", 4) == 0);
        ASSERT_TRUE(fm->largest_len > 4 && memcmp(fm->largest, "\0\0\0\1", 4) == 0);
        if (f > 0)
            ASSERT_LT_INT(key_cmp(prev_largest, prev_len, fm->smallest, fm->smallest_len), 0);
        memcpy(prev_largest, fm->largest, fm->largest_len);
        prev_len = fm->largest_len;
        marble__sst *s;
        OK(env_open(d, fm, &s, err_));
        ASSERT_EQ_U64(marble__sst_rows(s), fm->rows);
        ASSERT_EQ_U64(marble__sst_file_size(s), fm->size);
        marble__iter *it;
        OK(marble__iter_sst(s, &it, err_));
        marble__sst_unref(s);
        uint64_t lo = UINT64_MAX, hi = 0;
        for (marble__iter_seek_to_first(it); marble__iter_valid(it); marble__iter_next(it)) {
            ASSERT_LT_INT(m, cap);
            entry *x = &out[m++];
            const void *k = marble__iter_key(it, &x->klen);
            ASSERT_LE_INT(x->klen, sizeof x->key);
            memcpy(x->key, k, x->klen);
            x->seq = marble__iter_seq(it);
            x->op = marble__iter_op(it);
            const void *v = marble__iter_value(it, &x->vlen);
            ASSERT_LE_INT(x->vlen, sizeof x->val);
            if (x->vlen) memcpy(x->val, v, x->vlen);
            if (x->seq < lo) lo = x->seq;
            if (x->seq > hi) hi = x->seq;
        }
        OK(marble__iter_status(it, err_));
        marble__iter_destroy(it);
        ASSERT_EQ_U64(fm->smallest_seq, lo);
        ASSERT_EQ_U64(fm->largest_seq, hi);
    }
    return m;
}

static void expect_entries(const entry *got, size_t ng, const entry *want, size_t nw)
{
    for (size_t i = 0; i < ng && i < nw; i++) {
        if (key_cmp(got[i].key, got[i].klen, want[i].key, want[i].klen) != 0 ||
            got[i].seq != want[i].seq || got[i].op != want[i].op || got[i].vlen != want[i].vlen ||
            memcmp(got[i].val, want[i].val, got[i].vlen) != 0)
            FAIL("entry %zu: got '%.*s' seq %" PRIu64 " op %d, want '%.*s' seq %" PRIu64 " op %d",
                 i, (int)got[i].klen - 3, (const char *)got[i].key + 1, got[i].seq, got[i].op,
                 (int)want[i].klen - 3, (const char *)want[i].key + 1, want[i].seq, want[i].op);
    }
    ASSERT_EQ_U64(ng, nw);
}

static void run_case(uint64_t seed, size_t n, uint64_t snap, int phantom, uint64_t target)
{
    rng_state = seed;
    db d;
    db_open(&d);
    entry *e = random_entries(n, 2);
    setup_levels(&d, e, n, phantom);
    marble__version *v = marble__manifest_current(d.m);
    marble__compaction *c;
    OK(marble__compaction_pick_level(v, 1, 0, 1, NULL, NULL, &c, err_));
    ASSERT_NOT_NULL(c);
    size_t n_in = c->n_inputs[0] + c->n_inputs[1];
    marble__compaction_env env = make_env(&d, v, snap, target);
    marble__version_edit edit;
    marble__edit_init(&edit);
    marble__compaction_result res;
    OK(marble__compaction_run(c, &env, &edit, &res, err_));
    ASSERT_EQ_U64(edit.n_deleted, n_in);
    ASSERT_EQ_U64(res.rows_in, n);
    ASSERT_EQ_U64(res.files_out, edit.n_added);

    entry *want = calloc(n, sizeof *want), *got = calloc(n, sizeof *got);
    size_t nw = model(e, n, snap, phantom ? below_b : below_none, want);
    size_t ng = read_outputs(&d, &edit, 1, got, n);
    expect_entries(got, ng, want, nw);
    ASSERT_EQ_U64(res.rows_out, nw);
    if (target == 1) {
        /* One user key per file. */
        size_t keys = 0;
        for (size_t i = 0; i < nw; i++)
            if (i == 0 || key_cmp(want[i].key, want[i].klen, want[i - 1].key, want[i - 1].klen))
                keys++;
        ASSERT_EQ_U64(edit.n_added, keys);
    }
    /* The edit applies (outputs do not overlap in L1) and leaves the phantom alone. */
    OK(marble__manifest_apply(d.m, &edit, err_));
    marble__version *after = marble__manifest_current(d.m);
    ASSERT_EQ_U64(marble__version_num_files(after, 0), 0);
    ASSERT_EQ_U64(marble__version_num_files(after, 1), edit.n_added);
    ASSERT_EQ_U64(marble__version_num_files(after, 2), phantom ? 1 : 0);
    marble__version_unref(after);
    marble__edit_free(&edit);
    marble__compaction_free(c);
    marble__version_unref(v);
    free(want);
    free(got);
    free(e);
    db_close(&d);
}

TEST(compaction_run_hand)
{
    /* a: put@9, put@7, del@5, put@3; b: del@8, put@2; c: put@6; d: del@4 (only). */
    entry in[8] = {make_entry("a", 9, 1), make_entry("a", 7, 1), make_entry("a", 5, 0),
                   make_entry("a", 3, 1), make_entry("b", 8, 0), make_entry("b", 2, 1),
                   make_entry("c", 6, 1), make_entry("d", 4, 0)};
    struct {
        uint64_t snap;
        int phantom;
        const char *expect; /* key seq pairs */
    } cases[] = {
        {100, 0, "a9 c6"},        /* newest only; deletes shadow nothing below */
        {100, 1, "a9 b8 c6"},     /* b's delete kept: the L2 file may hold b */
        {7, 0, "a9 a7 b8 b2 c6"}, /* a9 and b8 are above the snapshot */
        {6, 0, "a9 a7 b8 b2 c6"}, /* a: newest at/below 6 is del@5: dropped, and a3 */
        {6, 1, "a9 a7 b8 b2 c6"},
        {4, 0, "a9 a7 a5 a3 b8 b2 c6"}, /* a@5 is above 4: kept, a@3 the newest at or below */
        {0, 0, "a9 a7 a5 a3 b8 b2 c6 d4"},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        db d;
        db_open(&d);
        marble__version_edit edit;
        marble__edit_init(&edit);
        /* L0 file 1: a9 a5 b8 d4; L0 file 2: a7 c6; L1 file 3: a3 b2. */
        entry f1[4] = {in[0], in[2], in[4], in[7]}, f2[2] = {in[1], in[6]}, f3[2] = {in[3], in[5]};
        write_file(&d, &edit, 0, 1, f1, 4);
        write_file(&d, &edit, 0, 2, f2, 2);
        write_file(&d, &edit, 1, 3, f3, 2);
        if (cases[t].phantom) phantom_file(&edit, 2, 50, "b", "bzz");
        OK(marble__manifest_apply(d.m, &edit, err_));
        marble__edit_free(&edit);
        marble__version *v = marble__manifest_current(d.m);
        marble__compaction *c;
        OK(marble__compaction_pick_level(v, 1, 0, 1, NULL, NULL, &c, err_));
        expect_inputs(c, 0, (uint64_t[]){1, 2}, 2);
        expect_inputs(c, 1, (uint64_t[]){3}, 1);
        marble__compaction_env env = make_env(&d, v, cases[t].snap, 0);
        marble__edit_init(&edit);
        OK(marble__compaction_run(c, &env, &edit, NULL, err_));
        entry got[8];
        size_t ng = read_outputs(&d, &edit, 1, got, 8);
        char text[64] = "";
        for (size_t i = 0; i < ng; i++) {
            char one[16];
            snprintf(one, sizeof one, "%s%c%" PRIu64, i ? " " : "", got[i].key[1], got[i].seq);
            strcat(text, one);
        }
        ASSERT_EQ_STR(text, cases[t].expect);
        if (ng) {
            ASSERT_EQ_U64(edit.n_added, 1);
            ASSERT_EQ_U64(edit.added[0].number, 100);
            int exists = 0;
            OK(marble_fs_exists(d.fs, "mem://db/000100.arrow", &exists, err_));
            ASSERT_TRUE(exists);
        }
        marble__edit_free(&edit);
        marble__compaction_free(c);
        marble__version_unref(v);
        db_close(&d);
    }
}

TEST(compaction_run_all_dropped)
{
    /* Only deletes and nothing below: no output file, the inputs are deleted. */
    db d;
    db_open(&d);
    marble__version_edit edit;
    marble__edit_init(&edit);
    entry f1[2] = {make_entry("a", 2, 0), make_entry("b", 3, 0)};
    write_file(&d, &edit, 0, 1, f1, 2);
    OK(marble__manifest_apply(d.m, &edit, err_));
    marble__edit_free(&edit);
    marble__version *v = marble__manifest_current(d.m);
    marble__compaction *c;
    OK(marble__compaction_pick_level(v, 1, 0, 1, NULL, NULL, &c, err_));
    marble__compaction_env env = make_env(&d, v, 100, 0);
    marble__edit_init(&edit);
    marble__compaction_result res;
    OK(marble__compaction_run(c, &env, &edit, &res, err_));
    ASSERT_EQ_U64(edit.n_added, 0);
    ASSERT_EQ_U64(edit.n_deleted, 1);
    ASSERT_EQ_U64(res.rows_in, 2);
    ASSERT_EQ_U64(res.rows_out, 0);
    ASSERT_EQ_U64(res.files_out, 0);
    ASSERT_EQ_INT(count_files(&d), 1);
    OK(marble__manifest_apply(d.m, &edit, err_));
    marble__edit_free(&edit);
    marble__compaction_free(c);
    marble__version_unref(v);
    db_close(&d);
}

TEST(compaction_run_random_no_snapshot)
{
    run_case(1, 600, UINT64_MAX, 0, 0);
}
TEST(compaction_run_random_snapshots)
{
    for (uint64_t s = 0; s < 6; s++)
        run_case(10 + s, 500, 100 + s * 150, (int)(s % 2), 0);
}
TEST(compaction_run_cut_by_size)
{
    run_case(30, 400, UINT64_MAX, 0, 1); /* one user key per file */
    run_case(31, 800, 700, 1, 1);        /* versions of a key never split */
    run_case(32, 2000, 1500, 0, 4000);   /* several keys per file */
}

TEST(compaction_run_open_failure_cleans_up)
{
    for (uint64_t fail = 1; fail <= 3; fail++) {
        rng_state = 77;
        db d;
        db_open(&d);
        marble__version_edit edit;
        marble__edit_init(&edit);
        entry f1[2] = {make_entry("a", 2, 1), make_entry("b", 3, 1)};
        entry f2[2] = {make_entry("a", 4, 1), make_entry("c", 5, 1)};
        entry f3[1] = {make_entry("b", 1, 1)};
        write_file(&d, &edit, 0, 1, f1, 2);
        write_file(&d, &edit, 0, 2, f2, 2);
        write_file(&d, &edit, 1, 3, f3, 1);
        OK(marble__manifest_apply(d.m, &edit, err_));
        marble__edit_free(&edit);
        marble__version *v = marble__manifest_current(d.m);
        marble__compaction *c;
        OK(marble__compaction_pick_level(v, 1, 0, 1, NULL, NULL, &c, err_));
        marble__compaction_env env = make_env(&d, v, 100, 0);
        d.fail_open = fail;
        marble__edit_init(&edit);
        marble_error err;
        ASSERT_EQ_INT(marble__compaction_run(c, &env, &edit, NULL, &err), MARBLE_ERR_IO);
        ASSERT_CONTAINS(err.message, "injected");
        ASSERT_EQ_U64(edit.n_added, 0);
        ASSERT_EQ_U64(edit.n_deleted, 0);
        ASSERT_EQ_INT(count_files(&d), 3);
        marble__edit_free(&edit);
        marble__compaction_free(c);
        marble__version_unref(v);
        db_close(&d);
    }
}

TEST(compaction_run_cancel_removes_outputs)
{
    for (int at = 1; at <= 3; at++) {
        rng_state = 99;
        db d;
        db_open(&d);
        size_t n = 12000;
        entry *e = random_entries(n, 6);
        setup_levels(&d, e, n, 0);
        int before = count_files(&d);
        marble__version *v = marble__manifest_current(d.m);
        marble__compaction *c;
        OK(marble__compaction_pick_level(v, 1, 0, 1, NULL, NULL, &c, err_));
        /* Small outputs, so that some are finished before the cancel is seen. */
        marble__compaction_env env = make_env(&d, v, UINT64_MAX, 2000);
        d.cancel_at = at;
        marble__version_edit edit;
        marble__edit_init(&edit);
        marble_error err;
        marble__compaction_result res;
        ASSERT_EQ_INT(marble__compaction_run(c, &env, &edit, &res, &err), MARBLE_ERR_CANCELLED);
        ASSERT_EQ_INT(d.cancel_calls, at);
        if (at > 1) ASSERT_GT_INT(d.next_number, 101); /* outputs had been started */
        ASSERT_EQ_U64(edit.n_added, 0);
        ASSERT_EQ_U64(edit.n_deleted, 0);
        ASSERT_EQ_U64(res.files_out, 0);
        ASSERT_EQ_INT(count_files(&d), before);
        marble__edit_free(&edit);
        marble__compaction_free(c);
        marble__version_unref(v);
        free(e);
        db_close(&d);
    }
}
