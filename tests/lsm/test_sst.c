/* Tests for SSTables: round trips, lookups with snapshots, iterators, zone maps, compression,
 * zero copy, corruption and truncation. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/sst.h"
#include "marble_test.h"

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) FAIL("%s: %d %s", #expr, rc_, err.message);                          \
    } while (0)

/* ---- fixtures ---------------------------------------------------------------------------------
 * A table "id:int64!,name:utf8,v:float64" keyed by id. Key id = 2 * k for k in [0, nkeys) (odd
 * ids are absent). Key k has 1 + k % 3 versions; version j (0 = newest) has seq
 * 10 * k + (nversions - j), so newer versions have larger seqs; the newest version of every key
 * with k % 7 == 3 is a delete. name is null when k % 5 == 0. */

typedef struct entry {
    marble__bytes key, value;
    uint64_t seq;
    int op;
    int64_t id;
} entry;

typedef struct dataset {
    marble__row_codec codec;
    entry *e;
    size_t n;
    int nkeys;
} dataset;

static void codec_make(marble__row_codec *c, const char *text, int key)
{
    marble_error err = {0};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(text, &s, &err));
    CHECK_OK(marble__row_codec_init(c, &s, &key, 1, &err));
    s.release(&s);
}

static int nversions(int k)
{
    return 1 + k % 3;
}

static void dataset_make(dataset *d, int nkeys)
{
    marble_error err = {0};
    memset(d, 0, sizeof *d);
    codec_make(&d->codec, "id:int64!,name:utf8,v:float64", 0);
    d->nkeys = nkeys;
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&d->codec.schema, &b, &err));
    size_t total = 0;
    for (int k = 0; k < nkeys; k++)
        total += (size_t)nversions(k);
    d->e = calloc(total, sizeof *d->e);
    for (int k = 0; k < nkeys; k++) {
        for (int j = 0; j < nversions(k); j++) {
            entry *x = &d->e[d->n++];
            x->id = 2 * k;
            x->seq = (uint64_t)(10 * k + (nversions(k) - j));
            x->op = (k % 7 == 3 && j == 0) ? 0 : 1;
            CHECK_OK(marble_builder_append_int(b, 0, x->id, &err));
            if (k % 5 == 0) {
                CHECK_OK(marble_builder_append_null(b, 1, &err));
            } else {
                char name[32];
                snprintf(name, sizeof name, "n%d_%d", k, j);
                CHECK_OK(marble_builder_append_bytes(b, 1, name, strlen(name), &err));
            }
            CHECK_OK(marble_builder_append_double(b, 2, x->id + j * 0.5, &err));
        }
    }
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    for (size_t i = 0; i < d->n; i++) {
        CHECK_OK(marble__key_encode_row(&d->codec.keys, &a, (int64_t)i, &d->e[i].key, &err));
        if (d->e[i].op == 1)
            CHECK_OK(marble__row_encode(&d->codec, &a, (int64_t)i, &d->e[i].value, &err));
    }
    a.release(&a);
    marble_batch_builder_destroy(b);
}

static void dataset_free(dataset *d)
{
    for (size_t i = 0; i < d->n; i++) {
        marble__bytes_free(&d->e[i].key);
        marble__bytes_free(&d->e[i].value);
    }
    free(d->e);
    marble__row_codec_free(&d->codec);
}

static void key_of(const dataset *d, int64_t id, marble__bytes *out)
{
    marble_error err = {0};
    marble__key_value v = {.kind = MARBLE__KV_INT, .i = id};
    out->len = 0;
    CHECK_OK(marble__key_encode_values(&d->codec.keys, &v, 1, out, &err));
}

static void write_sst(marble_fs *fs, const char *uri, const dataset *d,
                      const marble__sst_options *o, marble__sst_info *info)
{
    marble_error err = {0};
    marble__sst_writer *w;
    CHECK_OK(marble__sst_writer_create(fs, uri, &d->codec, o, &w, &err));
    for (size_t i = 0; i < d->n; i++) {
        const entry *x = &d->e[i];
        CHECK_OK(marble__sst_writer_add(w, x->key.data, x->key.len, x->seq, x->op, x->value.data,
                                        x->value.len, &err));
    }
    ASSERT_EQ_U64(marble__sst_writer_rows(w), d->n);
    ASSERT_TRUE(marble__sst_writer_estimated_size(w) > 0);
    marble__sst_info tmp = {0};
    CHECK_OK(marble__sst_writer_finish(w, info ? info : &tmp, &err));
    marble__sst_info_free(&tmp);
    marble__sst_writer_destroy(w);
}

static marble_fs *fs_make(void)
{
    marble_error err = {0};
    marble_fs *fs;
    CHECK_OK(marble_fs_create(&fs, &err));
    CHECK_OK(marble_fs_mkdir(fs, "mem://t", 1, &err));
    return fs;
}

static void fs_done(marble_fs *fs)
{
    marble_error err = {0};
    CHECK_OK(marble_fs_destroy(fs, &err));
}

static int bytes_eq(const void *a, size_t al, const void *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

/* Every key at several snapshots, absent keys, and a full scan both ways. */
static void check_contents(marble__sst *s, const dataset *d)
{
    marble_error err = {0};
    marble__bytes key = {0}, val = {0};
    size_t i = 0;
    for (int k = 0; k < d->nkeys; k++) {
        int nv = nversions(k);
        key_of(d, 2 * k, &key);
        /* snapshots: before the oldest version, at each version, and far above */
        for (int snap_i = -1; snap_i <= nv; snap_i++) {
            uint64_t snap = snap_i < 0    ? (uint64_t)(10 * k)
                            : snap_i < nv ? d->e[i + (size_t)snap_i].seq
                                          : UINT64_MAX;
            const entry *want = NULL;
            for (int j = 0; j < nv; j++)
                if (d->e[i + (size_t)j].seq <= snap) {
                    want = &d->e[i + (size_t)j];
                    break;
                }
            uint64_t seq = 0;
            int op = -1;
            int rc = marble__sst_get(s, key.data, key.len, snap, &seq, &op, &val, &err);
            if (!want) {
                ASSERT_EQ_INT(rc, MARBLE_ERR_NOT_FOUND);
                continue;
            }
            if (rc != MARBLE_OK)
                FAIL("get key %d snap %" PRIu64 ": %d %s", k, snap, rc, err.message);
            ASSERT_EQ_U64(seq, want->seq);
            ASSERT_EQ_INT(op, want->op);
            ASSERT_TRUE(bytes_eq(val.data, val.len, want->value.data, want->value.len));
        }
        key_of(d, 2 * k + 1, &key);
        ASSERT_EQ_INT(marble__sst_get(s, key.data, key.len, UINT64_MAX, NULL, NULL, &val, &err),
                      MARBLE_ERR_NOT_FOUND);
        i += (size_t)nv;
    }
    key_of(d, -5, &key);
    ASSERT_EQ_INT(marble__sst_get(s, key.data, key.len, UINT64_MAX, NULL, NULL, &val, &err),
                  MARBLE_ERR_NOT_FOUND);

    marble__sst_iter *it;
    CHECK_OK(marble__sst_iter_create(s, &it, &err));
    size_t n = 0;
    for (marble__sst_iter_seek_to_first(it); marble__sst_iter_valid(it);
         marble__sst_iter_next(it), n++) {
        ASSERT_TRUE(n < d->n);
        size_t kl, vl;
        const void *k = marble__sst_iter_key(it, &kl);
        ASSERT_TRUE(bytes_eq(k, kl, d->e[n].key.data, d->e[n].key.len));
        ASSERT_EQ_U64(marble__sst_iter_seq(it), d->e[n].seq);
        ASSERT_EQ_INT(marble__sst_iter_op(it), d->e[n].op);
        const void *v = marble__sst_iter_value(it, &vl);
        ASSERT_TRUE(bytes_eq(v, vl, d->e[n].value.data, d->e[n].value.len));
        int64_t row;
        ASSERT_NOT_NULL(marble__sst_iter_batch(it, &row));
    }
    CHECK_OK(marble__sst_iter_status(it, &err));
    ASSERT_EQ_U64(n, d->n);
    for (marble__sst_iter_seek_to_last(it); marble__sst_iter_valid(it); marble__sst_iter_prev(it)) {
        ASSERT_TRUE(n > 0);
        n--;
        size_t kl;
        const void *k = marble__sst_iter_key(it, &kl);
        ASSERT_TRUE(bytes_eq(k, kl, d->e[n].key.data, d->e[n].key.len));
        ASSERT_EQ_U64(marble__sst_iter_seq(it), d->e[n].seq);
    }
    ASSERT_EQ_U64(n, 0);
    CHECK_OK(marble__sst_iter_status(it, &err));
    marble__sst_iter_destroy(it);
    marble__bytes_free(&key);
    marble__bytes_free(&val);
}

static void roundtrip(marble_fs *fs, const char *uri, int nkeys, marble__sst_options o)
{
    marble_error err = {0};
    dataset d;
    dataset_make(&d, nkeys);
    marble__sst_info info;
    write_sst(fs, uri, &d, &o, &info);
    ASSERT_EQ_U64(info.rows, d.n);
    ASSERT_EQ_U64(info.smallest_seq, 1);
    ASSERT_TRUE(bytes_eq(info.smallest.data, info.smallest.len, d.e[0].key.data, d.e[0].key.len));
    ASSERT_TRUE(
        bytes_eq(info.largest.data, info.largest.len, d.e[d.n - 1].key.data, d.e[d.n - 1].key.len));
    uint64_t maxseq = 0;
    for (size_t i = 0; i < d.n; i++)
        if (d.e[i].seq > maxseq) maxseq = d.e[i].seq;
    ASSERT_EQ_U64(info.largest_seq, maxseq);
    marble_stat st;
    CHECK_OK(marble_fs_stat(fs, uri, &st, &err));
    ASSERT_EQ_U64(st.size, info.file_size);

    marble__sst *s;
    CHECK_OK(marble__sst_open(fs, NULL, uri, &d.codec, 1, &s, &err));
    ASSERT_EQ_U64(marble__sst_rows(s), d.n);
    ASSERT_EQ_U64(marble__sst_file_size(s), info.file_size);
    ASSERT_EQ_STR(marble__sst_uri(s), uri);
    int br = o.batch_rows ? o.batch_rows : 4096;
    ASSERT_EQ_INT(marble__sst_num_batches(s), (int64_t)((d.n + (size_t)br - 1) / (size_t)br));
    int64_t total = 0;
    for (int64_t b = 0; b < marble__sst_num_batches(s); b++) {
        const uint8_t *sm, *lg;
        size_t sl, ll;
        int64_t rows;
        marble__sst_batch_range(s, b, &sm, &sl, &lg, &ll, &rows);
        ASSERT_TRUE(bytes_eq(sm, sl, d.e[total].key.data, d.e[total].key.len));
        ASSERT_TRUE(
            bytes_eq(lg, ll, d.e[total + rows - 1].key.data, d.e[total + rows - 1].key.len));
        total += rows;
    }
    ASSERT_EQ_INT(total, (int64_t)d.n);
    check_contents(s, &d);
    check_contents(s, &d); /* again: batches now come from the cache and are verified */
    marble__sst_unref(s);
    marble__sst_info_free(&info);
    dataset_free(&d);
}

/* ---- round trips ----------------------------------------------------------------------------- */

TEST(sst_roundtrip_mem)
{
    marble_fs *fs = fs_make();
    marble__sst_options o = {.batch_rows = 64, .bloom_bits_per_key = -1};
    roundtrip(fs, "mem://t/a.sst", 700, o);
    o.batch_rows = 0; /* default: one batch */
    roundtrip(fs, "mem://t/b.sst", 700, o);
    o.batch_rows = 1;
    roundtrip(fs, "mem://t/c.sst", 50, o);
    o.batch_rows = 2;
    o.bloom_bits_per_key = 0;
    roundtrip(fs, "mem://t/d.sst", 50, o);
    roundtrip(fs, "mem://t/e.sst", 1, o);
    fs_done(fs);
}

TEST(sst_roundtrip_local)
{
    marble_fs *fs = fs_make();
    char uri[600];
    snprintf(uri, sizeof uri, "%s/000001.sst", marble_test_tmpdir());
    marble__sst_options o = {.batch_rows = 100, .bloom_bits_per_key = 10};
    roundtrip(fs, uri, 2000, o);
    fs_done(fs);
}

TEST(sst_compression)
{
    marble_fs *fs = fs_make();
    marble_ipc_compression cs[] = {MARBLE_IPC_UNCOMPRESSED, MARBLE_IPC_LZ4_FRAME, MARBLE_IPC_ZSTD};
    for (int i = 0; i < 3; i++) {
        marble__sst_options o = {.batch_rows = 50, .compression = cs[i], .bloom_bits_per_key = -1};
        char uri[64];
        snprintf(uri, sizeof uri, "mem://t/c%d.sst", i);
        roundtrip(fs, uri, 400, o);
        o.compression_level = 3;
        roundtrip(fs, uri, 100, o);
    }
    fs_done(fs);
}

/* Versions of one key spread over several batches (batch_rows 1 and 2). */
TEST(sst_versions_span_batches)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    dataset d;
    dataset_make(&d, 30);
    marble__sst_options o = {.batch_rows = 1, .bloom_bits_per_key = -1};
    write_sst(fs, "mem://t/v.sst", &d, &o, NULL);
    marble__sst *s;
    CHECK_OK(marble__sst_open(fs, NULL, "mem://t/v.sst", &d.codec, 1, &s, &err));
    /* key 2 (k=2) has 3 versions, seqs 23, 22, 21, in three batches */
    marble__bytes key = {0}, val = {0};
    key_of(&d, 4, &key);
    uint64_t seq;
    int op;
    CHECK_OK(marble__sst_get(s, key.data, key.len, 21, &seq, &op, &val, &err));
    ASSERT_EQ_U64(seq, 21);
    CHECK_OK(marble__sst_get(s, key.data, key.len, 22, &seq, &op, &val, &err));
    ASSERT_EQ_U64(seq, 22);
    ASSERT_EQ_INT(marble__sst_get(s, key.data, key.len, 20, &seq, &op, &val, &err),
                  MARBLE_ERR_NOT_FOUND);
    /* a delete shadows older puts: k=3 -> id 6, newest (seq 31) is a delete */
    key_of(&d, 6, &key);
    CHECK_OK(marble__sst_get(s, key.data, key.len, 100, &seq, &op, &val, &err));
    ASSERT_EQ_INT(op, 0);
    ASSERT_EQ_U64(val.len, 0);
    marble__sst_iter *it;
    CHECK_OK(marble__sst_iter_create(s, &it, &err));
    key_of(&d, 4, &key);
    marble__sst_iter_seek(it, key.data, key.len);
    ASSERT_TRUE(marble__sst_iter_valid(it));
    ASSERT_EQ_U64(marble__sst_iter_seq(it), 23);
    marble__sst_iter_destroy(it);
    marble__sst_unref(s);
    marble__bytes_free(&key);
    marble__bytes_free(&val);
    dataset_free(&d);
    fs_done(fs);
}

TEST(sst_iter_seek)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    dataset d;
    dataset_make(&d, 300);
    marble__sst_options o = {.batch_rows = 16, .bloom_bits_per_key = -1};
    write_sst(fs, "mem://t/s.sst", &d, &o, NULL);
    marble__sst *s;
    CHECK_OK(marble__sst_open(fs, NULL, "mem://t/s.sst", &d.codec, 1, &s, &err));
    marble__sst_iter *it;
    CHECK_OK(marble__sst_iter_create(s, &it, &err));
    marble__bytes key = {0};
    for (int64_t id = -3; id < 2 * d.nkeys + 3; id++) {
        key_of(&d, id, &key);
        marble__sst_iter_seek(it, key.data, key.len);
        /* the first entry whose key >= id: the newest version of the next even id */
        int64_t want = id <= 0 ? 0 : (id + 1) / 2 * 2;
        if (want >= 2 * d.nkeys) {
            ASSERT_FALSE(marble__sst_iter_valid(it));
            CHECK_OK(marble__sst_iter_status(it, &err));
            continue;
        }
        ASSERT_TRUE(marble__sst_iter_valid(it));
        size_t i = 0;
        while (d.e[i].id != want)
            i++;
        size_t kl;
        const void *k = marble__sst_iter_key(it, &kl);
        ASSERT_TRUE(bytes_eq(k, kl, d.e[i].key.data, d.e[i].key.len));
        ASSERT_EQ_U64(marble__sst_iter_seq(it), d.e[i].seq);
        /* prev from there is the oldest version of the previous key */
        marble__sst_iter_prev(it);
        if (i == 0) {
            ASSERT_FALSE(marble__sst_iter_valid(it));
        } else {
            ASSERT_TRUE(marble__sst_iter_valid(it));
            ASSERT_EQ_U64(marble__sst_iter_seq(it), d.e[i - 1].seq);
            marble__sst_iter_next(it);
            ASSERT_EQ_U64(marble__sst_iter_seq(it), d.e[i].seq);
        }
    }
    marble__sst_iter_destroy(it);
    marble__sst_unref(s);
    marble__bytes_free(&key);
    dataset_free(&d);
    fs_done(fs);
}

TEST(sst_bloom)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    dataset d;
    dataset_make(&d, 2000);
    marble__sst_options o = {.batch_rows = 256, .bloom_bits_per_key = 10};
    write_sst(fs, "mem://t/b.sst", &d, &o, NULL);
    o.bloom_bits_per_key = 0;
    write_sst(fs, "mem://t/nb.sst", &d, &o, NULL);
    marble__sst *s, *nb;
    CHECK_OK(marble__sst_open(fs, NULL, "mem://t/b.sst", &d.codec, 1, &s, &err));
    CHECK_OK(marble__sst_open(fs, NULL, "mem://t/nb.sst", &d.codec, 1, &nb, &err));
    marble__sst_stats before, after;
    marble__sst_get_stats(&before);
    marble__bytes key = {0}, val = {0};
    int absent_maybe = 0;
    for (int k = 0; k < d.nkeys; k++) {
        key_of(&d, 2 * k, &key);
        ASSERT_TRUE(marble__sst_may_contain(s, key.data, key.len));
        ASSERT_TRUE(marble__sst_may_contain(nb, key.data, key.len));
        key_of(&d, 2 * k + 1, &key);
        absent_maybe += marble__sst_may_contain(s, key.data, key.len);
        ASSERT_TRUE(marble__sst_may_contain(nb, key.data, key.len));
        ASSERT_EQ_INT(marble__sst_get(s, key.data, key.len, UINT64_MAX, NULL, NULL, &val, &err),
                      MARBLE_ERR_NOT_FOUND);
    }
    marble__sst_get_stats(&after);
    ASSERT_TRUE(absent_maybe < d.nkeys / 20);
    ASSERT_EQ_U64(after.bloom_checks - before.bloom_checks, (uint64_t)d.nkeys);
    ASSERT_EQ_U64(after.bloom_negatives - before.bloom_negatives,
                  (uint64_t)(d.nkeys - absent_maybe));
    ASSERT_EQ_U64(after.bloom_false_positives - before.bloom_false_positives,
                  (uint64_t)absent_maybe);
    ASSERT_TRUE(marble__sst_file_size(nb) < marble__sst_file_size(s));
    marble__sst_unref(s);
    marble__sst_unref(nb);
    marble__bytes_free(&key);
    marble__bytes_free(&val);
    dataset_free(&d);
    fs_done(fs);
}

TEST(sst_zone_maps)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    marble__row_codec c;
    codec_make(&c,
               "k:int32!,a:int64,u:uint16,f:float32,d:date32,b:bool,s:utf8,"
               "t:timestamp[us, tz=UTC]",
               0);
    marble_batch_builder *bb;
    CHECK_OK(marble_batch_builder_create(&c.schema, &bb, &err));
    int n = 40;
    for (int i = 0; i < n; i++) {
        CHECK_OK(marble_builder_append_int(bb, 0, i - 20, &err));
        if (i % 10 == 3)
            CHECK_OK(marble_builder_append_null(bb, 1, &err));
        else
            CHECK_OK(marble_builder_append_int(bb, 1, (int64_t)(i * 7 % 13) - 6, &err));
        CHECK_OK(marble_builder_append_uint(bb, 2, (uint64_t)(60000 - i), &err));
        CHECK_OK(marble_builder_append_double(bb, 3, i < 20 ? -1.5 * i : 0.25 * i, &err));
        CHECK_OK(marble_builder_append_int(bb, 4, 18000 + i, &err));
        if (i < 20)
            CHECK_OK(marble_builder_append_null(bb, 5, &err));
        else
            CHECK_OK(marble_builder_append_int(bb, 5, i % 2, &err));
        CHECK_OK(marble_builder_append_bytes(bb, 6, "x", 1, &err));
        CHECK_OK(marble_builder_append_int(bb, 7, (int64_t)i * 1000000, &err));
    }
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(bb, &a, &err));
    marble__sst_writer *w;
    marble__sst_options o = {.batch_rows = 10};
    CHECK_OK(marble__sst_writer_create(fs, "mem://t/z.sst", &c, &o, &w, &err));
    marble__bytes key = {0}, val = {0};
    for (int i = 0; i < n; i++) {
        key.len = val.len = 0;
        CHECK_OK(marble__key_encode_row(&c.keys, &a, i, &key, &err));
        CHECK_OK(marble__row_encode(&c, &a, i, &val, &err));
        CHECK_OK(marble__sst_writer_add(w, key.data, key.len, 5, 1, val.data, val.len, &err));
    }
    CHECK_OK(marble__sst_writer_finish(w, NULL, &err));
    marble__sst_writer_destroy(w);
    marble__sst *s;
    CHECK_OK(marble__sst_open(fs, NULL, "mem://t/z.sst", &c, 1, &s, &err));
    ASSERT_EQ_INT(marble__sst_num_batches(s), 4);
    for (int b = 0; b < 4; b++) {
        marble__zone z;
        int lo = 10 * b, hi = 10 * b + 9;
        ASSERT_EQ_INT(marble__sst_zone(s, b, 0, &z), 1);
        ASSERT_EQ_INT(z.min_i, lo - 20);
        ASSERT_EQ_INT(z.max_i, hi - 20);
        ASSERT_EQ_INT(z.has_nulls, 0);
        ASSERT_EQ_INT(marble__sst_zone(s, b, 1, &z), 1);
        ASSERT_EQ_INT(z.has_nulls, 1);
        int64_t mn = 100, mx = -100;
        for (int i = lo; i <= hi; i++) {
            if (i % 10 == 3) continue;
            int64_t v = (int64_t)(i * 7 % 13) - 6;
            if (v < mn) mn = v;
            if (v > mx) mx = v;
        }
        ASSERT_EQ_INT(z.min_i, mn);
        ASSERT_EQ_INT(z.max_i, mx);
        ASSERT_EQ_INT(marble__sst_zone(s, b, 2, &z), 1);
        ASSERT_EQ_U64(z.min_u, (uint64_t)(60000 - hi));
        ASSERT_EQ_U64(z.max_u, (uint64_t)(60000 - lo));
        ASSERT_EQ_INT(marble__sst_zone(s, b, 3, &z), 1);
        ASSERT_TRUE(z.min_d == (hi < 20 ? -1.5 * hi : 0.25 * lo));
        ASSERT_TRUE(z.max_d == (hi < 20 ? -1.5 * lo : 0.25 * hi));
        ASSERT_EQ_INT(marble__sst_zone(s, b, 4, &z), 1);
        ASSERT_EQ_INT(z.min_i, 18000 + lo);
        ASSERT_EQ_INT(z.max_i, 18000 + hi);
        int has = marble__sst_zone(s, b, 5, &z);
        if (b < 2) {
            ASSERT_EQ_INT(has, 0); /* all null */
            ASSERT_EQ_INT(z.has_nulls, 1);
        } else {
            ASSERT_EQ_INT(has, 1);
            ASSERT_EQ_INT(z.min_i, 0);
            ASSERT_EQ_INT(z.max_i, 1);
            ASSERT_EQ_INT(z.has_nulls, 0);
        }
        ASSERT_EQ_INT(marble__sst_zone(s, b, 6, &z), 0); /* utf8 */
        ASSERT_EQ_INT(marble__sst_zone(s, b, 7, &z), 1);
        ASSERT_EQ_INT(z.min_i, (int64_t)lo * 1000000);
        ASSERT_EQ_INT(z.max_i, (int64_t)hi * 1000000);
    }
    marble__zone z;
    ASSERT_EQ_INT(marble__sst_zone(s, 4, 0, &z), 0);
    ASSERT_EQ_INT(marble__sst_zone(s, 0, 8, &z), 0);
    marble__sst_unref(s);
    a.release(&a);
    marble_batch_builder_destroy(bb);
    marble__bytes_free(&key);
    marble__bytes_free(&val);
    marble__row_codec_free(&c);
    fs_done(fs);
}

/* Uncompressed batches point into the file's memory map (and keep it alive). */
TEST(sst_zero_copy)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    dataset d;
    dataset_make(&d, 500);
    char uri[600];
    snprintf(uri, sizeof uri, "%s/zc.sst", marble_test_tmpdir());
    marble__sst_options o = {.batch_rows = 128};
    write_sst(fs, uri, &d, &o, NULL);
    marble__sst *s;
    CHECK_OK(marble__sst_open(fs, NULL, uri, &d.codec, 1, &s, &err));
    struct ArrowArray a;
    CHECK_OK(marble__sst_read_batch(s, 1, &a, &err));
    marble__sst_unref(s); /* the batch keeps the mapping alive */
    ASSERT_EQ_INT(a.length, 128);
    ASSERT_EQ_INT(a.n_children, 5);
    const uint8_t *p = a.children[0]->buffers[1];
    FILE *maps = fopen("/proc/self/maps", "r");
    ASSERT_NOT_NULL(maps);
    char line[1024];
    int found = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        if (!strstr(line, "zc.sst") || sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
        if ((uintptr_t)p >= lo && (uintptr_t)p < hi) found = 1;
    }
    fclose(maps);
    ASSERT_TRUE(found);
    int64_t id;
    memcpy(&id, p + 8 * a.children[0]->offset, 8);
    ASSERT_EQ_INT(id, d.e[128].id);
    /* children can be moved out and released separately */
    struct ArrowArray child;
    marble_arrow_array_move(a.children[2], &child);
    a.release(&a);
    ASSERT_EQ_INT(child.length, 128);
    child.release(&child);
    dataset_free(&d);
    fs_done(fs);
}

TEST(sst_handle_pool_and_add_arrow)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    marble_handle_pool *pool;
    CHECK_OK(marble_handle_pool_create(fs, NULL, &pool, &err));
    dataset d;
    dataset_make(&d, 200);
    marble__sst_options o = {
        .batch_rows = 32, .compression = MARBLE_IPC_ZSTD, .bloom_bits_per_key = -1};
    write_sst(fs, "mem://t/p.sst", &d, &o, NULL);
    marble__sst *s;
    CHECK_OK(marble__sst_open(NULL, pool, "mem://t/p.sst", &d.codec, 1, &s, &err));
    /* copy every entry through the iterator's batch into a new file */
    marble__sst_writer *w;
    o.batch_rows = 50;
    CHECK_OK(marble__sst_writer_create(fs, "mem://t/q.sst", &d.codec, &o, &w, &err));
    marble__sst_iter *it;
    CHECK_OK(marble__sst_iter_create(s, &it, &err));
    for (marble__sst_iter_seek_to_first(it); marble__sst_iter_valid(it);
         marble__sst_iter_next(it)) {
        size_t kl;
        const void *k = marble__sst_iter_key(it, &kl);
        int64_t row;
        const struct ArrowArray *b = marble__sst_iter_batch(it, &row);
        CHECK_OK(marble__sst_writer_add_arrow(w, k, kl, b, row, &err));
    }
    marble__sst_iter_destroy(it);
    marble__sst_unref(s);
    CHECK_OK(marble__sst_writer_finish(w, NULL, &err));
    marble__sst_writer_destroy(w);
    CHECK_OK(marble__sst_open(NULL, pool, "mem://t/q.sst", &d.codec, 1, &s, &err));
    check_contents(s, &d);
    marble__sst_unref(s);
    dataset_free(&d);
    CHECK_OK(marble_handle_pool_destroy(pool, &err));
    fs_done(fs);
}

TEST(sst_writer_errors)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    dataset d;
    dataset_make(&d, 5);
    marble__sst_writer *w;
    CHECK_OK(marble__sst_writer_create(fs, "mem://t/e.sst", &d.codec, NULL, &w, &err));
    ASSERT_EQ_INT(marble__sst_writer_finish(w, NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
    const entry *e = d.e;
    CHECK_OK(marble__sst_writer_add(w, e[1].key.data, e[1].key.len, 5, 1, e[1].value.data,
                                    e[1].value.len, &err));
    /* same key, same seq; same key, higher seq; smaller key */
    ASSERT_EQ_INT(marble__sst_writer_add(w, e[1].key.data, e[1].key.len, 5, 1, e[1].value.data,
                                         e[1].value.len, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "out of order");
    ASSERT_EQ_INT(marble__sst_writer_add(w, e[1].key.data, e[1].key.len, 6, 1, e[1].value.data,
                                         e[1].value.len, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__sst_writer_add(w, e[0].key.data, e[0].key.len, 1, 1, e[0].value.data,
                                         e[0].value.len, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble__sst_writer_add(w, e[3].key.data, e[3].key.len, 1, 2, NULL, 0, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    /* still usable */
    CHECK_OK(marble__sst_writer_add(w, e[1].key.data, e[1].key.len, 4, 0, NULL, 0, &err));
    CHECK_OK(marble__sst_writer_finish(w, NULL, &err));
    ASSERT_EQ_INT(marble__sst_writer_add(w, e[3].key.data, e[3].key.len, 1, 0, NULL, 0, &err),
                  MARBLE_ERR_INVALID_ARGUMENT);
    marble__sst_writer_destroy(w);
    /* destroy without finish closes the file */
    CHECK_OK(marble__sst_writer_create(fs, "mem://t/f.sst", &d.codec, NULL, &w, &err));
    CHECK_OK(marble__sst_writer_add(w, e[1].key.data, e[1].key.len, 4, 0, NULL, 0, &err));
    marble__sst_writer_destroy(w);
    marble__sst *s;
    ASSERT_EQ_INT(marble__sst_open(fs, NULL, "mem://t/f.sst", &d.codec, 1, &s, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "mem://t/f.sst: corruption:");
    ASSERT_EQ_INT(marble__sst_open(fs, NULL, "mem://t/none.sst", &d.codec, 1, &s, &err),
                  MARBLE_ERR_NOT_FOUND);
    /* a codec for another table */
    marble__row_codec other;
    codec_make(&other, "id:int64!,name:utf8", 0);
    ASSERT_EQ_INT(marble__sst_open(fs, NULL, "mem://t/e.sst", &other, 1, &s, &err),
                  MARBLE_ERR_CORRUPTION);
    marble__row_codec_free(&other);
    codec_make(&other, "id:int64!,nom:utf8,v:float64", 0);
    ASSERT_EQ_INT(marble__sst_open(fs, NULL, "mem://t/e.sst", &other, 1, &s, &err),
                  MARBLE_ERR_CORRUPTION);
    ASSERT_CONTAINS(err.message, "schema column 1");
    marble__row_codec_free(&other);
    dataset_free(&d);
    fs_done(fs);
}

/* ---- corruption -------------------------------------------------------------------------------
 * Opens `bytes` as mem://t/x.sst and uses every part of it. Returns the first error (open, read
 * or lookup), MARBLE_OK when everything worked. */
static int exercise(marble_fs *fs, const dataset *d, const uint8_t *bytes, size_t n, int *opened)
{
    marble_error err = {0};
    CHECK_OK(marble_fs_write_all(fs, "mem://t/x.sst", bytes, n, 0, &err));
    marble__sst *s;
    int rc = marble__sst_open(fs, NULL, "mem://t/x.sst", &d->codec, 1, &s, &err);
    *opened = rc == MARBLE_OK;
    if (rc != MARBLE_OK) {
        if (rc == MARBLE_ERR_CORRUPTION && !strstr(err.message, "mem://t/x.sst: corruption: "))
            FAIL("message \"%s\"", err.message);
        return rc;
    }
    int first = MARBLE_OK;
    for (int64_t b = 0; b < marble__sst_num_batches(s); b++) {
        struct ArrowArray a;
        int r = marble__sst_read_batch(s, b, &a, &err);
        if (r == MARBLE_OK)
            a.release(&a);
        else if (first == MARBLE_OK)
            first = r;
    }
    marble__bytes key = {0}, val = {0};
    for (size_t i = 0; i < d->n; i += 3) {
        int r = marble__sst_get(s, d->e[i].key.data, d->e[i].key.len, UINT64_MAX, NULL, NULL, &val,
                                &err);
        if (r != MARBLE_OK && r != MARBLE_ERR_NOT_FOUND && first == MARBLE_OK) first = r;
    }
    marble__sst_iter *it;
    CHECK_OK(marble__sst_iter_create(s, &it, &err));
    for (marble__sst_iter_seek_to_first(it); marble__sst_iter_valid(it);
         marble__sst_iter_next(it)) {
        size_t vl;
        marble__sst_iter_value(it, &vl);
    }
    int r = marble__sst_iter_status(it, &err);
    if (r != MARBLE_OK && first == MARBLE_OK) first = r;
    for (marble__sst_iter_seek_to_last(it); marble__sst_iter_valid(it); marble__sst_iter_prev(it))
        ;
    marble__sst_iter_destroy(it);
    marble__sst_unref(s);
    marble__bytes_free(&key);
    marble__bytes_free(&val);
    return first;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void corruption_sweep(marble_ipc_compression comp)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    dataset d;
    dataset_make(&d, 40);
    marble__sst_options o = {.batch_rows = 16, .compression = comp, .bloom_bits_per_key = -1};
    write_sst(fs, "mem://t/good.sst", &d, &o, NULL);
    void *data;
    size_t n;
    CHECK_OK(marble_fs_read_all(fs, "mem://t/good.sst", &data, &n, &err));
    uint8_t *good = data;
    int opened;
    ASSERT_EQ_INT(exercise(fs, &d, good, n, &opened), MARBLE_OK);

    /* regions: batches (from the index), index + trailer, footer */
    uint32_t flen = (uint32_t)le64(good + n - 10) & 0xFFFFFFFFu;
    size_t footer = n - 10 - flen;
    size_t ilen = (size_t)le64(good + footer - 24);
    size_t istart = footer - 24 - ilen;
    uint64_t nb = le64(good + istart + 8);
    uint8_t *bad = malloc(n);
    for (size_t at = 0; at < n; at++) {
        memcpy(bad, good, n);
        bad[at] ^= (uint8_t)(1u << (at % 8));
        int rc = exercise(fs, &d, bad, n, &opened);
        int in_batch = 0;
        for (uint64_t b = 0; b < nb; b++) {
            uint64_t off = le64(good + istart + 64 + 48 * b),
                     len = le64(good + istart + 72 + 48 * b);
            if (at >= off && at < off + len) in_batch = 1;
        }
        if (at >= istart - 8 && at < footer) {
            /* end-of-stream marker, index, trailer: caught at open */
            if (opened || rc != MARBLE_ERR_CORRUPTION)
                FAIL("flip at %zu (index/trailer) gave %d opened=%d", at, rc, opened);
        } else if (in_batch) {
            if (rc != MARBLE_ERR_CORRUPTION)
                FAIL("flip at %zu (batch) gave %d opened=%d", at, rc, opened);
        }
        /* elsewhere (schema message, footer, magic): any result, no crash */
    }
    for (size_t len = 0; len < n; len += (len < 64 || n - len < 128) ? 1 : 7) {
        int rc = exercise(fs, &d, good, len, &opened);
        if (rc == MARBLE_OK) FAIL("truncated to %zu of %zu bytes: opened fine", len, n);
    }
    free(bad);
    free(data);
    dataset_free(&d);
    fs_done(fs);
}

TEST(sst_corruption_uncompressed)
{
    corruption_sweep(MARBLE_IPC_UNCOMPRESSED);
}

TEST(sst_corruption_zstd)
{
    corruption_sweep(MARBLE_IPC_ZSTD);
}

/* ---- threads --------------------------------------------------------------------------------- */

typedef struct reader_arg {
    marble__sst *s;
    const dataset *d;
    int seed;
} reader_arg;

static void *reader_main(void *p)
{
    reader_arg *r = p;
    marble_error err = {0};
    marble__bytes val = {0};
    unsigned x = (unsigned)r->seed * 2654435761u + 1;
    for (int i = 0; i < 3000; i++) {
        x = x * 1103515245u + 12345u;
        const entry *e = &r->d->e[(x >> 8) % r->d->n];
        uint64_t seq;
        int op;
        if (marble__sst_get(r->s, e->key.data, e->key.len, UINT64_MAX, &seq, &op, &val, &err) !=
            MARBLE_OK)
            FAIL("get: %s", err.message);
    }
    marble__sst_ref(r->s);
    marble__sst_unref(r->s);
    marble__bytes_free(&val);
    return NULL;
}

TEST(sst_concurrent_gets)
{
    marble_error err = {0};
    marble_fs *fs = fs_make();
    dataset d;
    dataset_make(&d, 3000);
    marble__sst_options o = {.batch_rows = 64, .compression = MARBLE_IPC_LZ4_FRAME};
    write_sst(fs, "mem://t/m.sst", &d, &o, NULL);
    marble__sst *s;
    CHECK_OK(marble__sst_open(fs, NULL, "mem://t/m.sst", &d.codec, 1, &s, &err));
    pthread_t th[4];
    reader_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (reader_arg){s, &d, i};
        pthread_create(&th[i], NULL, reader_main, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    marble__sst_unref(s);
    dataset_free(&d);
    fs_done(fs);
}
