/* SSTables: Arrow IPC files with Marble's index (key ranges, batch CRCs, zone maps, bloom filter)
 * in an appendix before the footer. The writer, the reader, point lookups and the iterator. The
 * byte layout is docs/format/sst.md. */

/*
 * Thread safety. A writer and an iterator are for one thread. An opened marble__sst is shared:
 * everything parsed at open is immutable; `refs` and the `verified` bitmap are atomics; the batch
 * cache is guarded by `mu`, the only lock, never held during I/O, decompression or CRC work.
 * marble_ipc_reader_read is called from several threads at once: it only reads the reader's
 * state (its per-call context lives on the stack).
 *
 * Invariants. Batches handed out (read_batch, the iterator) are views of a cached decoded batch:
 * each view holds one reference on its cache entry and the cache one on each entry in a slot; an
 * entry's array is released with the last reference. Batches of an uncompressed file point into
 * the mapping, which the decoded batch keeps alive through the IPC reader's source owner.
 *
 * Cache: one slot per batch. A batch that points into the mapping (an uncompressed file: zero
 * copy, so only its Arrow structs take memory) stays cached while the SSTable lives, so a point
 * lookup parses no IPC metadata after the first. Decompressed batches take real memory: at most
 * SST_CACHE_SLOTS of them stay cached per SSTable, replaced first in, first out.
 */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/bloom.h"
#include "lsm/sst.h"
#include "lsm/scratch.h"
#include "marble/base.h"

#define SST_MAGIC "MRBLSST1"
#define SST_VERSION 1
#define SST_VERSION_FILTERS 2
#define SST_HEADER 64
#define SST_HEADER2 80
#define SST_ENTRY 48
#define SST_ZONE 24
#define SST_TRAILER 24
#define SST_DEFAULT_BATCH_ROWS 4096
#define SST_DEFAULT_BLOOM_BITS 10
#define SST_WRITE_BUFFER ((size_t)1 << 20)
#define SST_CACHE_SLOTS 4
#define ZONE_PRESENT 1
#define ZONE_NULLS 2

/* ---- small helpers --------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* memcmp order, a proper prefix first. */
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int is_zone_type(marble_arrow_type_id id)
{
    switch (id) {
    case MARBLE_ARROW_BOOL:
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64:
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
    case MARBLE_ARROW_DATE32:
    case MARBLE_ARROW_TIMESTAMP:
        return 1;
    default:
        return 0;
    }
}

enum { ZK_INT, ZK_UINT, ZK_DOUBLE };

static int zone_kind(marble_arrow_type_id id)
{
    switch (id) {
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64:
        return ZK_UINT;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        return ZK_DOUBLE;
    default:
        return ZK_INT;
    }
}

static int bit_get(const void *bits, int64_t i)
{
    return (((const uint8_t *)bits)[i >> 3] >> (i & 7)) & 1;
}

/* Element i (absolute, offset applied) of a fixed-width column as
 * int64/uint64/double bits. */
static uint64_t fixed_value(marble_arrow_type_id id, const void *values, int64_t i)
{
    const uint8_t *v = values;
    switch (id) {
    case MARBLE_ARROW_BOOL:
        return (uint64_t)bit_get(values, i);
    case MARBLE_ARROW_INT8:
        return (uint64_t)(int64_t)(int8_t)v[i];
    case MARBLE_ARROW_UINT8:
        return v[i];
    case MARBLE_ARROW_INT16: {
        int16_t x;
        memcpy(&x, v + 2 * i, 2);
        return (uint64_t)(int64_t)x;
    }
    case MARBLE_ARROW_UINT16: {
        uint16_t x;
        memcpy(&x, v + 2 * i, 2);
        return x;
    }
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_DATE32: {
        int32_t x;
        memcpy(&x, v + 4 * i, 4);
        return (uint64_t)(int64_t)x;
    }
    case MARBLE_ARROW_UINT32: {
        uint32_t x;
        memcpy(&x, v + 4 * i, 4);
        return x;
    }
    case MARBLE_ARROW_FLOAT32: {
        float f;
        double d;
        uint64_t x;
        memcpy(&f, v + 4 * i, 4);
        d = f;
        memcpy(&x, &d, 8);
        return x;
    }
    default: {
        uint64_t x;
        memcpy(&x, v + 8 * i, 8);
        return x;
    }
    }
}

static double as_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

/* Appends the zone map of column `col` of `a` (SST_ZONE bytes) to out. */
static void zone_of(const marble_arrow_type *t, const struct ArrowArray *a, uint8_t out[SST_ZONE])
{
    memset(out, 0, SST_ZONE);
    const void *valid = a->n_buffers > 0 ? a->buffers[0] : NULL;
    int has_nulls = 0, present = 0;
    uint64_t mn = 0, mx = 0;
    int zoned = is_zone_type(t->id) && a->n_buffers > 1 && a->buffers[1];
    int kind = zone_kind(t->id);
    for (int64_t r = 0; r < a->length; r++) {
        int64_t i = a->offset + r;
        if (a->null_count != 0 && valid && !bit_get(valid, i)) {
            has_nulls = 1;
            continue;
        }
        if (!zoned) continue;
        uint64_t x = fixed_value(t->id, a->buffers[1], i);
        if (kind == ZK_DOUBLE) {
            double d = as_double(x);
            if (d != d) continue;
            if (!present || d < as_double(mn)) mn = x;
            if (!present || d > as_double(mx)) mx = x;
        } else if (kind == ZK_UINT) {
            if (!present || x < mn) mn = x;
            if (!present || x > mx) mx = x;
        } else {
            if (!present || (int64_t)x < (int64_t)mn) mn = x;
            if (!present || (int64_t)x > (int64_t)mx) mx = x;
        }
        present = 1;
    }
    out[0] = (uint8_t)((present ? ZONE_PRESENT : 0) | (has_nulls ? ZONE_NULLS : 0));
    put64(out + 8, mn);
    put64(out + 16, mx);
}

/* ---- value filters --------------------------------------------------------------------------- */

static uint64_t hash_int(int64_t v)
{
    uint8_t b[8];
    put64(b, (uint64_t)v);
    return marble__bloom_hash(b, 8);
}

static uint64_t hash_double(double d)
{
    if (d == 0) d = 0.0; /* -0.0 equals 0.0 */
    uint64_t x;
    memcpy(&x, &d, 8);
    uint8_t b[8];
    put64(b, x);
    return marble__bloom_hash(b, 8);
}

static uint64_t hash_bytes(const uint8_t *base, int64_t start, int64_t end)
{
    return end > start ? marble__bloom_hash(base + start, (size_t)(end - start))
                       : marble__bloom_hash(NULL, 0);
}

/* The canonical hash of element i (absolute, offset applied) of a column of type t. */
static uint64_t value_hash(const marble_arrow_type *t, const struct ArrowArray *c, int64_t i)
{
    switch (t->id) {
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_BINARY: {
        const int32_t *off = c->buffers[1];
        return hash_bytes(c->buffers[2], off[i], off[i + 1]);
    }
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_LARGE_BINARY: {
        const int64_t *off = c->buffers[1];
        return hash_bytes(c->buffers[2], off[i], off[i + 1]);
    }
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        return hash_bytes(c->buffers[1], (int64_t)t->byte_width * i,
                          (int64_t)t->byte_width * (i + 1));
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        return hash_double(as_double(fixed_value(t->id, c->buffers[1], i)));
    default:
        return (uint64_t)hash_int((int64_t)fixed_value(t->id, c->buffers[1], i));
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- stats ----------------------------------------------------------------------------------- */

/* Statistics only: relaxed. */
static atomic_uint_fast64_t st_bloom_checks, st_bloom_negatives, st_bloom_fp, st_batch_reads;

void marble__sst_get_stats(marble__sst_stats *out)
{
    out->bloom_checks = atomic_load_explicit(&st_bloom_checks, memory_order_relaxed);
    out->bloom_negatives = atomic_load_explicit(&st_bloom_negatives, memory_order_relaxed);
    out->bloom_false_positives = atomic_load_explicit(&st_bloom_fp, memory_order_relaxed);
    out->batch_reads = atomic_load_explicit(&st_batch_reads, memory_order_relaxed);
}

static void count(atomic_uint_fast64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- writer ---------------------------------------------------------------------------------- */

struct marble__sst_writer {
    marble_fs *fs;
    char *uri;
    const marble__row_codec *codec;
    int batch_rows;
    marble_file *file;
    uint8_t *buf; /* write buffer */
    size_t buf_len;
    uint64_t pos; /* bytes through the sink (written + buffered) */
    uint32_t crc; /* of the bytes through the sink since the batch started */
    marble_ipc_writer *ipc;
    marble__assembler *as;
    marble__bloom_builder bloom;
    int has_bloom;
    marble__bytes prev_key, first_key, entries, zones, keys, scratch;
    int dirty; /* a delete or a second version of a key was written */
    int nvf;   /* value-filtered columns (vf_cols, ascending) */
    int vf_cols[MARBLE__SST_MAX_INDEXES];
    marble__bytes vf_table, vf_data; /* per (batch, filter): offset and length in vf_data */
    uint64_t *vf_hashes;
    size_t vf_cap;
    int have_prev;
    uint64_t prev_seq;
    int64_t nbatches;
    uint64_t rows, min_seq, max_seq;
    int failed, finished;
};

static int sink_flush(marble__sst_writer *w, marble_error *err)
{
    if (w->buf_len == 0) return MARBLE_OK;
    int rc = marble_file_append(w->file, w->buf, w->buf_len, err);
    w->buf_len = 0;
    return rc;
}

static int sink_write(void *ctx, const void *data, size_t n, marble_error *err)
{
    marble__sst_writer *w = ctx;
    w->crc = marble_crc32c_extend(w->crc, data, n);
    w->pos += n;
    const uint8_t *p = data;
    while (n > 0) {
        if (w->buf_len == SST_WRITE_BUFFER) MARBLE_RETURN_NOT_OK(sink_flush(w, err));
        size_t k = SST_WRITE_BUFFER - w->buf_len;
        if (k > n) k = n;
        memcpy(w->buf + w->buf_len, p, k);
        w->buf_len += k;
        p += k;
        n -= k;
    }
    return MARBLE_OK;
}

static int make_schema(marble__sst_writer *w, struct ArrowSchema *out, marble_error *err)
{
    struct ArrowSchema as;
    MARBLE_RETURN_NOT_OK(marble__assembler_schema(w->as, &as, err));
    int rc = MARBLE_OK;
    size_t n = (size_t)as.n_children;
    marble_field_spec *f = calloc(n + 1, sizeof *f);
    marble__bytes names = {0};
    if (!f) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", w->uri);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        f[i].name = as.children[i]->name;
        f[i].format = as.children[i]->format;
        f[i].nullable = (as.children[i]->flags & ARROW_FLAG_NULLABLE) != 0;
    }
    const marble__row_codec *c = w->codec;
    for (int k = 0; k < c->keys.nkeys && rc == MARBLE_OK; k++) {
        const char *name = c->schema.children[c->keys.keys[k].col]->name;
        if (k) rc = marble__bytes_append(&names, ",", 1, err);
        if (rc == MARBLE_OK) rc = marble__bytes_append(&names, name, strlen(name), err);
    }
    if (rc == MARBLE_OK) rc = marble__bytes_append(&names, "", 1, err);
    if (rc != MARBLE_OK) goto cleanup;
    const char *keys[2] = {"marble.sst.version", "marble.sst.key"};
    const char *vals[2] = {"1", (const char *)names.data};
    rc = marble_arrow_schema_make(out, f, n, keys, vals, 2, err);
cleanup:
    free(f);
    marble__bytes_free(&names);
    marble_arrow_schema_release(&as);
    return rc;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

/* The index options of `o`: the key bloom filter and the value-filtered columns. */
static int writer_init_index(marble__sst_writer *w, const marble__sst_options *o, const char *uri,
                             marble_error *err)
{
    if (o->bloom_bits_per_key > MARBLE__BLOOM_MAX_BITS_PER_KEY)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%s: bloom_bits_per_key %d is more than %d", uri,
                                o->bloom_bits_per_key, MARBLE__BLOOM_MAX_BITS_PER_KEY);
    if (o->n_indexed_columns < 0 || o->n_indexed_columns > MARBLE__SST_MAX_INDEXES)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%s: %d indexed columns (at most %d)", uri, o->n_indexed_columns,
                                MARBLE__SST_MAX_INDEXES);
    w->nvf = o->n_indexed_columns;
    memcpy(w->vf_cols, o->indexed_columns, sizeof(int) * (size_t)w->nvf);
    qsort(w->vf_cols, (size_t)w->nvf, sizeof(int), cmp_int);
    for (int i = 0; i < w->nvf; i++)
        if (w->vf_cols[i] < 0 || w->vf_cols[i] >= w->codec->ncols ||
            (i && w->vf_cols[i] == w->vf_cols[i - 1]))
            return marble_error_set(
                err, MARBLE_ERR_INVALID_ARGUMENT,
                "%s: indexed column %d is out of range (%d columns) or repeated", uri,
                w->vf_cols[i], w->codec->ncols);
    if (o->bloom_bits_per_key != 0) {
        int bits = o->bloom_bits_per_key < 0 ? SST_DEFAULT_BLOOM_BITS : o->bloom_bits_per_key;
        MARBLE_RETURN_NOT_OK(marble__bloom_builder_init(&w->bloom, bits, err));
        w->has_bloom = 1;
    }
    return MARBLE_OK;
}

/* Appends batch a's value filters (one per indexed column) to vf_table and vf_data. */
static int add_value_filters(marble__sst_writer *w, const struct ArrowArray *a, marble_error *err)
{
    if (w->nvf == 0) return MARBLE_OK;
    if ((size_t)a->length > w->vf_cap) {
        uint64_t *p = realloc(w->vf_hashes, (size_t)a->length * sizeof *p);
        if (!p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", w->uri);
        w->vf_hashes = p;
        w->vf_cap = (size_t)a->length;
    }
    int rc = MARBLE_OK;
    for (int f = 0; f < w->nvf && rc == MARBLE_OK; f++) {
        int col = w->vf_cols[f];
        const struct ArrowArray *c = a->children[col];
        const marble_arrow_type *t = &w->codec->cols[col].type;
        const void *valid = c->null_count != 0 && c->n_buffers > 0 ? c->buffers[0] : NULL;
        size_t k = 0;
        for (int64_t r = 0; r < c->length; r++) {
            int64_t i = c->offset + r;
            if (valid && !bit_get(valid, i)) continue;
            w->vf_hashes[k++] = value_hash(t, c, i);
        }
        qsort(w->vf_hashes, k, sizeof *w->vf_hashes, cmp_u64);
        marble__bloom_builder b;
        rc = marble__bloom_builder_init(&b, MARBLE__SST_VALUE_FILTER_BITS, err);
        for (size_t j = 0; j < k && rc == MARBLE_OK; j++)
            if (j == 0 || w->vf_hashes[j] != w->vf_hashes[j - 1])
                rc = marble__bloom_builder_add_hash(&b, w->vf_hashes[j], err);
        uint8_t *bytes = NULL;
        size_t len = 0;
        if (rc == MARBLE_OK) rc = marble__bloom_builder_finish(&b, &bytes, &len, err);
        marble__bloom_builder_destroy(&b);
        if (rc == MARBLE_OK && (w->vf_data.len > UINT32_MAX || len > UINT32_MAX - w->vf_data.len))
            rc = marble_error_set(err, MARBLE_ERR_LIMIT, "%s: value filters exceed 4 GiB", w->uri);
        uint8_t e[8];
        put32(e, (uint32_t)w->vf_data.len);
        put32(e + 4, (uint32_t)len);
        if (rc == MARBLE_OK) rc = marble__bytes_append(&w->vf_table, e, sizeof e, err);
        if (rc == MARBLE_OK) rc = marble__bytes_append(&w->vf_data, bytes, len, err);
        free(bytes);
    }
    return rc;
}

int marble__sst_writer_create(marble_fs *fs, const char *uri, const marble__row_codec *codec,
                              const marble__sst_options *opts, marble__sst_writer **out,
                              marble_error *err)
{
    marble__sst_options o = {0};
    if (!out || !fs || !uri || !codec)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "SST writer: NULL argument");
    *out = NULL;
    if (opts) o = *opts;
    if (o.batch_rows < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s: batch_rows %d < 0", uri,
                                o.batch_rows);
    marble__sst_writer *w = calloc(1, sizeof *w);
    if (!w) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", uri);
    int rc = MARBLE_OK;
    struct ArrowSchema schema = {0};
    w->fs = fs;
    w->codec = codec;
    w->batch_rows = o.batch_rows ? o.batch_rows : SST_DEFAULT_BATCH_ROWS;
    w->uri = dup_str(uri);
    w->buf = malloc(SST_WRITE_BUFFER);
    if (!w->uri || !w->buf) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", uri);
        goto cleanup;
    }
    rc = writer_init_index(w, &o, uri, err);
    if (rc == MARBLE_OK) rc = marble__assembler_create(codec, NULL, -1, 1, &w->as, err);
    if (rc == MARBLE_OK) rc = make_schema(w, &schema, err);
    if (rc == MARBLE_OK)
        rc = marble_fs_open(fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE,
                            &w->file, err);
    if (rc == MARBLE_OK) {
        marble_ipc_write_options io = {MARBLE_IPC_FILE, o.compression, o.compression_level, 8};
        marble_ipc_sink sink = {sink_write, w};
        rc = marble_ipc_writer_create(sink, &schema, &io, &w->ipc, err);
    }
cleanup:
    marble_arrow_schema_release(&schema);
    if (rc != MARBLE_OK) {
        marble__sst_writer_destroy(w);
        return rc;
    }
    *out = w;
    return MARBLE_OK;
}

static int flush_batch(marble__sst_writer *w, marble_error *err)
{
    struct ArrowArray a = {0};
    int rc = marble__assembler_finish(w->as, &a, err);
    if (rc != MARBLE_OK) return rc;
    const marble__row_codec *c = w->codec;
    uint8_t entry[SST_ENTRY] = {0};
    uint64_t start = w->pos;
    rc = marble__bytes_reserve(&w->zones, (size_t)c->ncols * SST_ZONE, err);
    for (int col = 0; col < c->ncols && rc == MARBLE_OK; col++) {
        zone_of(&c->cols[col].type, a.children[col], w->zones.data + w->zones.len);
        w->zones.len += SST_ZONE;
    }
    if (rc == MARBLE_OK) rc = add_value_filters(w, &a, err);
    if (rc == MARBLE_OK) {
        w->crc = 0;
        rc = marble_ipc_writer_write(w->ipc, &a, err);
    }
    if (rc == MARBLE_OK) {
        put64(entry, start);
        put64(entry + 8, w->pos - start);
        put64(entry + 16, (uint64_t)a.length);
        put32(entry + 24, w->crc);
        put32(entry + 28, (uint32_t)w->first_key.len);
        put32(entry + 32, (uint32_t)w->prev_key.len);
        put64(entry + 40, w->keys.len);
        rc = marble__bytes_append(&w->entries, entry, sizeof entry, err);
    }
    if (rc == MARBLE_OK)
        rc = marble__bytes_append(&w->keys, w->first_key.data, w->first_key.len, err);
    if (rc == MARBLE_OK)
        rc = marble__bytes_append(&w->keys, w->prev_key.data, w->prev_key.len, err);
    if (rc == MARBLE_OK) w->nbatches++;
    marble_arrow_array_release(&a);
    return rc;
}

static int writer_check(marble__sst_writer *w, marble_error *err)
{
    if (!w) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "SST writer is NULL");
    if (w->finished)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s: SST writer is finished",
                                w->uri);
    if (w->failed)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s: SST writer failed earlier",
                                w->uri);
    return MARBLE_OK;
}

/* Checks the order, appends the row (from a value or from src) and tracks keys, seqs, bloom. */
static int writer_add(marble__sst_writer *w, const void *key, size_t klen, uint64_t seq, int op,
                      const void *value, size_t vlen, const struct ArrowArray *src, int64_t row,
                      marble_error *err)
{
    MARBLE_RETURN_NOT_OK(writer_check(w, err));
    if (op != 0 && op != 1)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s: op %d is not 0 or 1", w->uri,
                                op);
    if (klen > UINT32_MAX || (klen && !key))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s: bad key (%zu bytes)", w->uri,
                                klen);
    int same = 0;
    if (w->have_prev) {
        int c = key_cmp(key, klen, w->prev_key.data, w->prev_key.len);
        if (c < 0 || (c == 0 && seq >= w->prev_seq))
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "%s: entry (seq %" PRIu64 ") out of order: keys must ascend "
                                    "and a key's seqs descend",
                                    w->uri, seq);
        same = c == 0;
    }
    if (same || op == 0) w->dirty = 1;
    int rc;
    if (src)
        rc = marble__assembler_add_arrow(w->as, src, row, seq, op, err);
    else
        rc = marble__assembler_add(w->as, key, klen, seq, op, value, vlen, err);
    if (rc != MARBLE_OK) return rc; /* the entry is refused; the writer stays usable */
    if (w->has_bloom && !same) rc = marble__bloom_builder_add(&w->bloom, key, klen, err);
    if (rc == MARBLE_OK && marble__assembler_rows(w->as) == 1) {
        w->first_key.len = 0;
        rc = marble__bytes_append(&w->first_key, key, klen, err);
    }
    if (rc == MARBLE_OK && !same) {
        w->prev_key.len = 0;
        rc = marble__bytes_append(&w->prev_key, key, klen, err);
    }
    if (rc == MARBLE_OK) {
        w->prev_seq = seq;
        w->have_prev = 1;
        if (w->rows == 0 || seq < w->min_seq) w->min_seq = seq;
        if (w->rows == 0 || seq > w->max_seq) w->max_seq = seq;
        w->rows++;
        if (marble__assembler_rows(w->as) >= w->batch_rows) rc = flush_batch(w, err);
    }
    if (rc != MARBLE_OK) w->failed = 1;
    return rc;
}

int marble__sst_writer_add(marble__sst_writer *w, const void *key, size_t klen, uint64_t seq,
                           int op, const void *value, size_t vlen, marble_error *err)
{
    return writer_add(w, key, klen, seq, op, value, vlen, NULL, 0, err);
}

int marble__sst_writer_add_arrow(marble__sst_writer *w, const void *key, size_t klen,
                                 const struct ArrowArray *src, int64_t row, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(writer_check(w, err));
    int n = w->codec->ncols;
    if (!src || src->n_children < n + 2 || row < 0 || row >= src->length)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%s: add_arrow: not an SST batch or row %" PRId64 " out of range",
                                w->uri, row);
    const struct ArrowArray *sc = src->children[n], *oc = src->children[n + 1];
    int64_t si = sc->offset + src->offset + row, oi = oc->offset + src->offset + row;
    uint64_t seq;
    memcpy(&seq, (const uint8_t *)sc->buffers[1] + 8 * si, 8);
    int op = ((const uint8_t *)oc->buffers[1])[oi];
    return writer_add(w, key, klen, seq, op, NULL, 0, src, row, err);
}

uint64_t marble__sst_writer_rows(const marble__sst_writer *w)
{
    return w ? w->rows : 0;
}

uint64_t marble__sst_writer_estimated_size(const marble__sst_writer *w)
{
    return w ? w->pos + marble__assembler_bytes(w->as) : 0;
}

static int build_index(marble__sst_writer *w, marble__bytes *ix, marble_error *err)
{
    uint8_t *bloom = NULL;
    size_t bloom_len = 0;
    if (w->has_bloom)
        MARBLE_RETURN_NOT_OK(marble__bloom_builder_finish(&w->bloom, &bloom, &bloom_len, err));
    int v2 = w->nvf > 0;
    uint8_t h[SST_HEADER2] = {0};
    put32(h, v2 ? SST_VERSION_FILTERS : SST_VERSION);
    put32(h + 4, (uint32_t)w->codec->ncols);
    put64(h + 8, (uint64_t)w->nbatches);
    put64(h + 16, w->rows);
    put64(h + 24, w->min_seq);
    put64(h + 32, w->max_seq);
    put64(h + 40, w->keys.len);
    put64(h + 48, bloom_len);
    put32(h + 56, (w->has_bloom ? 1u : 0u) | (w->dirty ? 0u : 2u));
    if (v2) {
        put32(h + 60, (uint32_t)w->nvf);
        put64(h + 64, 8 * (uint64_t)w->nvf + w->vf_table.len + w->vf_data.len);
    }
    int rc = marble__bytes_append(ix, h, v2 ? SST_HEADER2 : SST_HEADER, err);
    if (rc == MARBLE_OK) rc = marble__bytes_append(ix, w->entries.data, w->entries.len, err);
    if (rc == MARBLE_OK) rc = marble__bytes_append(ix, w->zones.data, w->zones.len, err);
    if (rc == MARBLE_OK) rc = marble__bytes_append(ix, w->keys.data, w->keys.len, err);
    if (rc == MARBLE_OK) rc = marble__bytes_append(ix, bloom, bloom_len, err);
    free(bloom);
    for (int f = 0; v2 && f < w->nvf && rc == MARBLE_OK; f++) {
        uint8_t d[8] = {0};
        put32(d, (uint32_t)w->vf_cols[f]);
        rc = marble__bytes_append(ix, d, sizeof d, err);
    }
    if (rc == MARBLE_OK) rc = marble__bytes_append(ix, w->vf_table.data, w->vf_table.len, err);
    if (rc == MARBLE_OK) rc = marble__bytes_append(ix, w->vf_data.data, w->vf_data.len, err);
    static const uint8_t zeros[8];
    if (rc == MARBLE_OK) rc = marble__bytes_append(ix, zeros, (8 - ix->len % 8) % 8, err);
    if (rc != MARBLE_OK) return rc;
    uint8_t t[SST_TRAILER] = {0};
    put64(t, ix->len);
    put32(t + 8, marble_crc32c(ix->data, ix->len));
    memcpy(t + 16, SST_MAGIC, 8);
    return marble__bytes_append(ix, t, sizeof t, err);
}

static int writer_info(const marble__sst_writer *w, marble__sst_info *info, marble_error *err)
{
    memset(info, 0, sizeof *info);
    info->file_size = w->pos;
    info->rows = w->rows;
    info->smallest_seq = w->min_seq;
    info->largest_seq = w->max_seq;
    const uint8_t *e0 = w->entries.data;
    const uint8_t *en = w->entries.data + (size_t)(w->nbatches - 1) * SST_ENTRY;
    int rc =
        marble__bytes_append(&info->smallest, w->keys.data + get64(e0 + 40), get32(e0 + 28), err);
    if (rc == MARBLE_OK)
        rc = marble__bytes_append(&info->largest, w->keys.data + get64(en + 40) + get32(en + 28),
                                  get32(en + 32), err);
    if (rc != MARBLE_OK) marble__sst_info_free(info);
    return rc;
}

int marble__sst_writer_finish(marble__sst_writer *w, marble__sst_info *info, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(writer_check(w, err));
    if (w->rows == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "%s: an SST needs rows", w->uri);
    marble__bytes ix = {0};
    int rc = MARBLE_OK;
    if (marble__assembler_rows(w->as) > 0) rc = flush_batch(w, err);
    if (rc == MARBLE_OK) rc = build_index(w, &ix, err);
    if (rc == MARBLE_OK) rc = marble_ipc_writer_finish_appendix(w->ipc, ix.data, ix.len, err);
    if (rc == MARBLE_OK) rc = sink_flush(w, err);
    if (rc == MARBLE_OK) rc = marble_file_sync(w->file, MARBLE_SYNC_FULL, err);
    if (rc == MARBLE_OK) {
        marble_file *f = w->file;
        w->file = NULL;
        rc = marble_file_close(f, err);
    }
    marble__bytes_free(&ix);
    if (rc == MARBLE_OK && info) rc = writer_info(w, info, err);
    if (rc != MARBLE_OK)
        w->failed = 1;
    else
        w->finished = 1;
    return rc;
}

void marble__sst_writer_destroy(marble__sst_writer *w)
{
    if (!w) return;
    marble_ipc_writer_destroy(w->ipc);
    marble__assembler_destroy(w->as);
    if (w->has_bloom) marble__bloom_builder_destroy(&w->bloom);
    if (w->file) marble_file_close(w->file, NULL);
    marble__bytes_free(&w->prev_key);
    marble__bytes_free(&w->first_key);
    marble__bytes_free(&w->entries);
    marble__bytes_free(&w->zones);
    marble__bytes_free(&w->keys);
    marble__bytes_free(&w->scratch);
    marble__bytes_free(&w->vf_table);
    marble__bytes_free(&w->vf_data);
    free(w->vf_hashes);
    free(w->buf);
    free(w->uri);
    free(w);
}

void marble__sst_info_free(marble__sst_info *info)
{
    if (!info) return;
    marble__bytes_free(&info->smallest);
    marble__bytes_free(&info->largest);
}

/* ---- reader ---------------------------------------------------------------------------------- */

typedef struct cache_entry {
    atomic_int refs;
    int64_t index;
    struct ArrowArray array;
    marble_mem_budget *budget; /* decompressed entries are charged to it while they live */
    uint64_t charged;
} cache_entry;

struct marble__sst {
    atomic_int refs;
    char *uri;
    const marble__row_codec *codec;
    marble_mapping *map;
    const uint8_t *data;
    uint64_t size;
    marble_ipc_reader *ipc;
    int verify;
    atomic_uint_fast64_t *verified; /* one bit per batch */
    int64_t nbatches;
    int ncols;
    uint64_t rows, min_seq, max_seq;
    const uint8_t *entries, *zones, *keys;
    int has_bloom;
    int clean; /* no deletes, one version per key */
    int version;
    uint64_t istart, footer; /* where the index and the Arrow footer start */
    marble__bloom bloom;
    int nvf;                  /* value-filtered columns */
    int *vf_slot;             /* ncols entries: the column's filter number, or -1 */
    marble__bloom *vf;        /* nbatches * nvf filters, batch-major */
    marble__key_encoder kenc; /* the codec's key columns over the file's schema (+ _seq, _op) */
    pthread_mutex_t mu;
    marble_mem_budget *budget;     /* see marble__sst_set_budget */
    cache_entry **cache;           /* nbatches slots */
    int64_t ring[SST_CACHE_SLOTS]; /* decompressed batches cached, oldest first */
    unsigned next_slot;
};

static int corrupt(marble_error *err, const char *uri, const char *what, uint64_t a, uint64_t b)
{
    return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                            "%s: corruption: %s (%" PRIu64 ", %" PRIu64 ")", uri, what, a, b);
}

static void map_retain(void *m)
{
    marble_mapping_retain(m);
}

static void map_release(void *m)
{
    marble_mapping_release(m);
}

static void entry_unref(cache_entry *e)
{
    /* acq_rel: the last owner must see every other owner's reads finished before
     * freeing. */
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) {
        marble_arrow_array_release(&e->array);
        marble_mem_budget_release(e->budget, e->charged);
        free(e);
    }
}

static void sst_free(marble__sst *s)
{
    for (int64_t i = 0; s->cache && i < s->nbatches; i++)
        if (s->cache[i]) entry_unref(s->cache[i]);
    free(s->cache);
    marble_ipc_reader_destroy(s->ipc);
    if (s->map) marble_mapping_release(s->map);
    pthread_mutex_destroy(&s->mu);
    free(s->verified);
    free(s->vf_slot);
    free(s->vf);
    free(s->uri);
    free(s);
}

void marble__sst_ref(marble__sst *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void marble__sst_unref(marble__sst *s)
{
    /* acq_rel: the thread that frees sees every other holder's use finished. */
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) sst_free(s);
}

/* Entry fields. */
static uint64_t e_off(const marble__sst *s, int64_t i)
{
    return get64(s->entries + SST_ENTRY * i);
}
static uint64_t e_len(const marble__sst *s, int64_t i)
{
    return get64(s->entries + SST_ENTRY * i + 8);
}
static uint64_t e_rows(const marble__sst *s, int64_t i)
{
    return get64(s->entries + SST_ENTRY * i + 16);
}
static uint32_t e_crc(const marble__sst *s, int64_t i)
{
    return get32(s->entries + SST_ENTRY * i + 24);
}

static void e_keys(const marble__sst *s, int64_t i, const uint8_t **sm, size_t *sl,
                   const uint8_t **lg, size_t *ll)
{
    const uint8_t *e = s->entries + SST_ENTRY * i;
    uint64_t off = get64(e + 40);
    *sl = get32(e + 28);
    *ll = get32(e + 32);
    *sm = s->keys + off;
    *lg = s->keys + off + *sl;
}

/* Parses and opens the value filter section (flen bytes at p: directory, table, data). */
static int parse_value_filters(marble__sst *s, const uint8_t *p, uint64_t flen, int nvf,
                               marble_error *err)
{
    const char *u = s->uri;
    uint64_t nb = (uint64_t)s->nbatches, head = 8 * (uint64_t)nvf * (1 + nb);
    if (flen < head)
        return corrupt(err, u, "value filter section too short (bytes, needed)", flen, head);
    uint64_t dlen = flen - head;
    const uint8_t *table = p + 8 * (uint64_t)nvf, *data = p + head;
    s->vf_slot = malloc(sizeof(int) * (size_t)s->ncols);
    s->vf = calloc((size_t)(nb * (uint64_t)nvf), sizeof *s->vf);
    if (!s->vf_slot || !s->vf)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", u);
    for (int c = 0; c < s->ncols; c++)
        s->vf_slot[c] = -1;
    int64_t prev = -1;
    for (int f = 0; f < nvf; f++) {
        uint64_t col = get32(p + 8 * f);
        if ((int64_t)col <= prev || col >= (uint64_t)s->ncols || get32(p + 8 * f + 4) != 0)
            return corrupt(err, u, "value filter column out of order or range (filter, column)",
                           (uint64_t)f, col);
        s->vf_slot[col] = f;
        prev = (int64_t)col;
    }
    for (uint64_t i = 0; i < nb * (uint64_t)nvf; i++) {
        uint64_t off = get32(table + 8 * i), len = get32(table + 8 * i + 4);
        if (off > dlen || len > dlen - off)
            return corrupt(err, u, "value filter out of its section (filter, bytes)", i, dlen);
        if (marble__bloom_open(data + off, (size_t)len, &s->vf[i], NULL) != MARBLE_OK)
            return corrupt(err, u, "value filter does not open (batch, filter)", i / (uint64_t)nvf,
                           i % (uint64_t)nvf);
    }
    s->nvf = nvf;
    return MARBLE_OK;
}

/* Parses and checks the trailer and the index. */
static int parse_index(marble__sst *s, const marble__row_codec *codec, marble_error *err)
{
    const char *u = s->uri;
    const uint8_t *d = s->data;
    uint64_t size = s->size;
    if (size < 8 + 8 + SST_HEADER + SST_TRAILER + 10)
        return corrupt(err, u, "file too short (bytes, minimum)", size,
                       8 + 8 + SST_HEADER + SST_TRAILER + 10);
    if (memcmp(d, "ARROW1", 6) != 0 || memcmp(d + size - 6, "ARROW1", 6) != 0)
        return corrupt(err, u, "no Arrow magic at start and end (file size, 0)", size, 0);
    uint64_t flen = get32(d + size - 10);
    if (flen == 0 || flen > size - 10 - 8 - SST_TRAILER - SST_HEADER - 8)
        return corrupt(err, u, "Arrow footer length out of range (length, file size)", flen, size);
    uint64_t footer = size - 10 - flen;
    const uint8_t *t = d + footer - SST_TRAILER;
    if (memcmp(t + 16, SST_MAGIC, 8) != 0)
        return corrupt(err, u, "no SST trailer magic before the Arrow footer (footer at, size)",
                       footer, size);
    uint64_t ilen = get64(t);
    uint64_t room = footer - SST_TRAILER - 8 - 8; /* after the file header and the EOS marker */
    if (ilen < SST_HEADER || ilen > room || ilen % 8 != 0)
        return corrupt(err, u, "index length out of range (length, room)", ilen, room);
    if (get32(t + 12) != 0)
        return corrupt(err, u, "trailer reserved field is not zero (value, 0)", get32(t + 12), 0);
    uint64_t istart = footer - SST_TRAILER - ilen;
    const uint8_t *ix = d + istart;
    uint32_t crc = marble_crc32c(ix, (size_t)ilen);
    if (crc != get32(t + 8))
        return corrupt(err, u, "index CRC mismatch (stored, computed)", get32(t + 8), crc);
    static const uint8_t eos[8] = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0};
    if (memcmp(ix - 8, eos, 8) != 0)
        return corrupt(err, u, "no end-of-stream marker before the index (index at, 0)", istart, 0);
    uint32_t version = get32(ix);
    if (version != SST_VERSION && version != SST_VERSION_FILTERS)
        return corrupt(err, u, "unknown index version (version, supported)", version,
                       SST_VERSION_FILTERS);
    uint64_t hsize = version == SST_VERSION ? SST_HEADER : SST_HEADER2;
    if (ilen < hsize)
        return corrupt(err, u, "index shorter than its header (length, header)", ilen, hsize);
    uint64_t ncols = get32(ix + 4), nb = get64(ix + 8), klen = get64(ix + 40),
             blen = get64(ix + 48), nvf = 0, vlen = 0;
    uint32_t flags = get32(ix + 56);
    if (ncols != (uint64_t)codec->ncols)
        return corrupt(err, u, "index column count differs from the table (index, table)", ncols,
                       (uint64_t)codec->ncols);
    if (version == SST_VERSION_FILTERS) {
        nvf = get32(ix + 60);
        vlen = get64(ix + 64);
        if (nvf == 0 || nvf > MARBLE__SST_MAX_INDEXES || nvf > ncols || get64(ix + 72) != 0)
            return corrupt(err, u, "value filter count out of range (count, columns)", nvf, ncols);
    } else if (get32(ix + 60) != 0) {
        return corrupt(err, u, "unknown index flags (flags, reserved)", flags, get32(ix + 60));
    }
    if (flags > 3) return corrupt(err, u, "unknown index flags (flags, reserved)", flags, 0);
    uint64_t avail = ilen - hsize;
    uint64_t per = SST_ENTRY + ncols * SST_ZONE;
    if (nb == 0 || nb > avail / per)
        return corrupt(err, u, "batch count out of range (batches, index length)", nb, ilen);
    avail -= nb * per;
    if (klen > avail || blen > avail - klen || vlen > avail - klen - blen ||
        avail - klen - blen - vlen >= 8)
        return corrupt(err, u, "index sections do not add up (key bytes, filter bytes)", klen,
                       blen + vlen);
    for (uint64_t p = hsize + nb * per + klen + blen + vlen; p < ilen; p++)
        if (ix[p]) return corrupt(err, u, "nonzero index padding (at, 0)", p, 0);
    s->version = (int)version;
    s->istart = istart;
    s->footer = footer;
    s->nbatches = (int64_t)nb;
    s->ncols = (int)ncols;
    s->clean = (flags & 2) != 0;
    s->rows = get64(ix + 16);
    s->min_seq = get64(ix + 24);
    s->max_seq = get64(ix + 32);
    s->entries = ix + hsize;
    s->zones = s->entries + nb * SST_ENTRY;
    s->keys = s->zones + nb * ncols * SST_ZONE;
    if (s->min_seq > s->max_seq)
        return corrupt(err, u, "seq range reversed (smallest, largest)", s->min_seq, s->max_seq);
    if (flags & 1) {
        if (marble__bloom_open(s->keys + klen, (size_t)blen, &s->bloom, err) != MARBLE_OK)
            return marble_error_set(err, MARBLE_ERR_CORRUPTION, "%s: corruption: bloom filter", u);
        s->has_bloom = 1;
    } else if (blen != 0) {
        return corrupt(err, u, "bloom bytes without the bloom flag (bytes, 0)", blen, 0);
    }
    uint64_t total = 0, prev_end = 8;
    const uint8_t *pk = NULL;
    size_t pkl = 0;
    for (int64_t i = 0; i < (int64_t)nb; i++) {
        const uint8_t *e = s->entries + SST_ENTRY * i;
        uint64_t off = get64(e), len = get64(e + 8), rows = get64(e + 16);
        uint64_t koff = get64(e + 40), sl = get32(e + 28), ll = get32(e + 32);
        if (off < prev_end || len < 16 || off > istart - 8 || len > istart - 8 - off)
            return corrupt(err, u, "batch byte range out of bounds (offset, length)", off, len);
        if (off % 8 != 0) return corrupt(err, u, "batch offset not aligned (offset, 8)", off, 8);
        prev_end = off + len;
        if (rows == 0 || rows > s->rows - total)
            return corrupt(err, u, "batch row count out of range (rows, file rows)", rows, s->rows);
        total += rows;
        if (koff > klen || sl > klen - koff || ll > klen - koff - sl)
            return corrupt(err, u, "batch keys out of the key area (offset, key bytes)", koff,
                           klen);
        const uint8_t *sm = s->keys + koff, *lg = sm + sl;
        if (key_cmp(sm, sl, lg, ll) > 0 || (pk && key_cmp(pk, pkl, sm, sl) > 0))
            return corrupt(err, u, "batch key ranges out of order (batch, 0)", (uint64_t)i, 0);
        pk = lg;
        pkl = ll;
        for (int c = 0; c < s->ncols; c++) {
            const uint8_t *z = s->zones + (SST_ZONE * ((uint64_t)i * ncols + (uint64_t)c));
            if (z[0] > 3)
                return corrupt(err, u, "zone map flags (batch, column)", (uint64_t)i, (uint64_t)c);
        }
    }
    if (total != s->rows)
        return corrupt(err, u, "batch rows do not sum to the file's (sum, rows)", total, s->rows);
    return nvf ? parse_value_filters(s, s->keys + klen + blen, vlen, (int)nvf, err) : MARBLE_OK;
}

static int check_schema(marble__sst *s, const marble__row_codec *c, marble_error *err)
{
    struct ArrowSchema sc;
    int rc = marble_ipc_reader_schema(s->ipc, &sc, err);
    if (rc != MARBLE_OK)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION, "%s: corruption: schema", s->uri);
    char v[16];
    if (sc.n_children != c->ncols + 2) {
        rc = corrupt(err, s->uri, "schema column count (file, table + 2)", (uint64_t)sc.n_children,
                     (uint64_t)c->ncols + 2);
    } else if (marble_arrow_metadata_get(sc.metadata, "marble.sst.version", v, sizeof v, NULL) !=
                   MARBLE_OK ||
               strcmp(v, "1") != 0) {
        rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                              "%s: corruption: schema metadata marble.sst.version is not \"1\"",
                              s->uri);
    } else {
        for (int i = 0; i < c->ncols + 2 && rc == MARBLE_OK; i++) {
            const struct ArrowSchema *f = sc.children[i];
            const char *name = i < c->ncols    ? c->schema.children[i]->name
                               : i == c->ncols ? MARBLE__SEQ_COLUMN
                                               : MARBLE__OP_COLUMN;
            const char *fmt = i < c->ncols    ? c->schema.children[i]->format
                              : i == c->ncols ? "L"
                                              : "C";
            if (!f->name || strcmp(f->name, name) != 0 || strcmp(f->format, fmt) != 0)
                rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                      "%s: corruption: schema column %d is '%.64s' %.32s, the "
                                      "table's is '%.64s' %.32s",
                                      s->uri, i, f->name ? f->name : "", f->format, name, fmt);
        }
    }
    if (rc == MARBLE_OK) {
        int cols[MARBLE__KEY_MAX_COLS];
        for (int k = 0; k < c->keys.nkeys; k++)
            cols[k] = c->keys.keys[k].col;
        rc = marble__key_encoder_init(&s->kenc, &sc, cols, c->keys.nkeys, c->keys.flags, err);
        if (rc != MARBLE_OK)
            rc =
                marble_error_set(err, MARBLE_ERR_CORRUPTION, "%s: corruption: key columns", s->uri);
    }
    marble_arrow_schema_release(&sc);
    return rc;
}

int marble__sst_open(marble_fs *fs, marble_handle_pool *pool, const char *uri,
                     const marble__row_codec *codec, int verify, marble__sst **out,
                     marble_error *err)
{
    if (!out || !uri || !codec || (!fs && !pool))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "SST open: NULL argument");
    *out = NULL;
    marble__sst *s = calloc(1, sizeof *s);
    if (!s) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", uri);
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    s->codec = codec;
    s->verify = verify;
    s->uri = dup_str(uri);
    if (!s->uri) {
        sst_free(s);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", uri);
    }
    marble_file *f = NULL;
    int rc = pool ? marble_handle_pool_acquire(pool, uri, MARBLE_OPEN_READ, &f, err)
                  : marble_fs_open(fs, uri, MARBLE_OPEN_READ, &f, err);
    uint64_t fsize = 0;
    if (rc == MARBLE_OK) rc = marble_file_size(f, &fsize, err);
    if (rc == MARBLE_OK && fsize < 16)
        rc = corrupt(err, uri, "file too short (bytes, minimum)", fsize, 16);
    if (rc == MARBLE_OK) rc = marble_file_map(f, 0, 0, &s->map, err);
    if (f) {
        if (pool)
            marble_handle_pool_release(pool, f);
        else
            marble_file_close(f, NULL);
    }
    if (rc == MARBLE_OK) {
        s->data = marble_mapping_data(s->map);
        s->size = marble_mapping_size(s->map);
        rc = parse_index(s, codec, err);
    }
    if (rc == MARBLE_OK) {
        marble_ipc_source src = {s->data, (size_t)s->size, s->map, map_retain, map_release};
        rc = marble_ipc_reader_open(&src, &s->ipc, err);
        if (rc != MARBLE_OK) {
            char msg[MARBLE_ERROR_MESSAGE_SIZE];
            snprintf(msg, sizeof msg, "%s", err ? err->message : "");
            rc = marble_error_set(err, MARBLE_ERR_CORRUPTION, "%s: corruption: %s", uri, msg);
        }
    }
    if (rc == MARBLE_OK) rc = check_schema(s, codec, err);
    if (rc == MARBLE_OK && marble_ipc_reader_num_batches(s->ipc) != s->nbatches)
        rc = corrupt(err, uri, "Arrow footer and index batch counts differ (footer, index)",
                     (uint64_t)marble_ipc_reader_num_batches(s->ipc), (uint64_t)s->nbatches);
    if (rc == MARBLE_OK) {
        s->verified = calloc((size_t)(s->nbatches + 63) / 64, sizeof *s->verified);
        s->cache = calloc((size_t)s->nbatches + 1, sizeof *s->cache);
        if (!s->verified || !s->cache)
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", uri);
    }
    if (rc != MARBLE_OK) {
        sst_free(s);
        return rc;
    }
    *out = s;
    return MARBLE_OK;
}

const char *marble__sst_uri(const marble__sst *s)
{
    return s->uri;
}

uint64_t marble__sst_rows(const marble__sst *s)
{
    return s->rows;
}

uint64_t marble__sst_file_size(const marble__sst *s)
{
    return s->size;
}

int marble__sst_is_clean(const marble__sst *s)
{
    return s->clean;
}

uint64_t marble__sst_max_seq(const marble__sst *s)
{
    return s->max_seq;
}

int64_t marble__sst_num_batches(const marble__sst *s)
{
    return s->nbatches;
}

void marble__sst_batch_range(const marble__sst *s, int64_t i, const uint8_t **smallest,
                             size_t *slen, const uint8_t **largest, size_t *llen, int64_t *rows)
{
    const uint8_t *a, *b;
    size_t al, bl;
    e_keys(s, i, &a, &al, &b, &bl);
    if (smallest) *smallest = a;
    if (slen) *slen = al;
    if (largest) *largest = b;
    if (llen) *llen = bl;
    if (rows) *rows = (int64_t)e_rows(s, i);
}

int marble__sst_zone(const marble__sst *s, int64_t i, int col, marble__zone *out)
{
    memset(out, 0, sizeof *out);
    if (i < 0 || i >= s->nbatches || col < 0 || col >= s->ncols) return 0;
    const uint8_t *z = s->zones + SST_ZONE * ((uint64_t)i * (uint64_t)s->ncols + (uint64_t)col);
    out->has_nulls = (z[0] & ZONE_NULLS) != 0;
    marble_arrow_type_id id = s->codec->cols[col].type.id;
    if (!(z[0] & ZONE_PRESENT) || !is_zone_type(id)) return 0;
    uint64_t mn = get64(z + 8), mx = get64(z + 16);
    switch (zone_kind(id)) {
    case ZK_UINT:
        out->min_u = mn;
        out->max_u = mx;
        break;
    case ZK_DOUBLE:
        out->min_d = as_double(mn);
        out->max_d = as_double(mx);
        break;
    default:
        out->min_i = (int64_t)mn;
        out->max_i = (int64_t)mx;
    }
    return 1;
}

int marble__sst_may_contain(const marble__sst *s, const void *key, size_t klen)
{
    return s->has_bloom ? marble__bloom_may_contain(&s->bloom, key, klen) : 1;
}

/* ---- batches and the cache ------------------------------------------------------------------- */

typedef struct view {
    atomic_int refs; /* the parent and each child not yet released */
    cache_entry *entry;
    int64_t n;
    struct ArrowArray *kids;
    struct ArrowArray **kid_ptrs;
} view;

static void view_unref(view *v)
{
    /* acq_rel: the last release frees what the other views' holders read. */
    if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1) {
        entry_unref(v->entry);
        free(v->kids);
        free(v->kid_ptrs);
        free(v);
    }
}

static void view_child_release(struct ArrowArray *a)
{
    view *v = a->private_data;
    a->release = NULL;
    view_unref(v);
}

static void view_release(struct ArrowArray *a)
{
    view *v = a->private_data;
    for (int64_t i = 0; i < v->n; i++)
        if (v->kid_ptrs[i] && v->kid_ptrs[i]->release) v->kid_ptrs[i]->release(v->kid_ptrs[i]);
    a->release = NULL;
    view_unref(v);
}

/* A view of a cached batch; takes over the caller's reference on e. */
static int make_view(marble__sst *s, cache_entry *e, struct ArrowArray *out, marble_error *err)
{
    const struct ArrowArray *src = &e->array;
    view *v = calloc(1, sizeof *v);
    int64_t n = src->n_children;
    if (v) {
        v->kids = calloc((size_t)n + 1, sizeof *v->kids);
        v->kid_ptrs = calloc((size_t)n + 1, sizeof *v->kid_ptrs);
    }
    if (!v || !v->kids || !v->kid_ptrs) {
        if (v) {
            free(v->kids);
            free(v->kid_ptrs);
            free(v);
        }
        entry_unref(e);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", s->uri);
    }
    v->entry = e;
    v->n = n;
    atomic_init(&v->refs, (int)n + 1);
    for (int64_t i = 0; i < n; i++) {
        const struct ArrowArray *c = src->children[i];
        struct ArrowArray *k = &v->kids[i];
        *k = *c;
        k->n_children = 0;
        k->children = NULL;
        k->dictionary = NULL;
        k->release = view_child_release;
        k->private_data = v;
        v->kid_ptrs[i] = k;
    }
    *out = *src;
    out->children = v->kid_ptrs;
    out->release = view_release;
    out->private_data = v;
    return MARBLE_OK;
}

/* Checks a freshly decoded batch against the index (verify): its bytes' CRC, rows, first/last key.
 */
static int verify_batch(marble__sst *s, int64_t i, const struct ArrowArray *a, marble_error *err)
{
    if (!s->verify) return MARBLE_OK;
    atomic_uint_fast64_t *w = &s->verified[i / 64];
    uint64_t bit = (uint64_t)1 << (i % 64);
    if (atomic_load_explicit(w, memory_order_relaxed) & bit) return MARBLE_OK;
    uint32_t crc = marble_crc32c(s->data + e_off(s, i), (size_t)e_len(s, i));
    if (crc != e_crc(s, i))
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "%s: corruption: batch %" PRId64 " CRC mismatch (stored %08x, "
                                "computed %08x)",
                                s->uri, i, e_crc(s, i), crc);
    if ((uint64_t)a->length != e_rows(s, i))
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "%s: corruption: batch %" PRId64 " has %" PRId64
                                " rows, the index says %" PRIu64,
                                s->uri, i, a->length, e_rows(s, i));
    marble__bytes k = {0};
    const uint8_t *sm, *lg;
    size_t sl, ll;
    e_keys(s, i, &sm, &sl, &lg, &ll);
    int rc = marble__key_encode_row(&s->kenc, a, 0, &k, err);
    if (rc == MARBLE_OK && key_cmp(k.data, k.len, sm, sl) != 0) rc = MARBLE_ERR_CORRUPTION;
    k.len = 0;
    if (rc == MARBLE_OK) rc = marble__key_encode_row(&s->kenc, a, a->length - 1, &k, err);
    if (rc == MARBLE_OK && key_cmp(k.data, k.len, lg, ll) != 0) rc = MARBLE_ERR_CORRUPTION;
    marble__bytes_free(&k);
    if (rc != MARBLE_OK)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "%s: corruption: batch %" PRId64 " keys differ from the index",
                                s->uri, i);
    /* Relaxed: verification is idempotent; a race only verifies twice. */
    atomic_fetch_or_explicit(w, bit, memory_order_relaxed);
    return MARBLE_OK;
}

/* Bytes a decoded batch holds (values, offsets, string data, validity), from the codec's column
 * types; the trailing _seq and _op are 8 and 1 bytes a row. */
static uint64_t decoded_bytes(const marble__sst *s, const struct ArrowArray *b)
{
    uint64_t n = 0;
    for (int64_t c = 0; c < b->n_children; c++) {
        const struct ArrowArray *a = b->children[c];
        uint64_t len = (uint64_t)a->length;
        n += (len + 7) / 8; /* validity */
        if (c >= s->ncols) {
            n += len * (c == s->ncols ? 8u : 1u);
            continue;
        }
        const marble_arrow_type *t = &s->codec->cols[c].type;
        if (t->id == MARBLE_ARROW_BOOL) {
            n += (len + 7) / 8;
        } else if (t->byte_width > 0) {
            n += len * (uint64_t)t->byte_width;
        } else if (a->n_buffers >= 3 && a->buffers[1]) {
            int wide = t->id == MARBLE_ARROW_LARGE_UTF8 || t->id == MARBLE_ARROW_LARGE_BINARY;
            int64_t last = wide ? ((const int64_t *)a->buffers[1])[a->offset + a->length]
                                : ((const int32_t *)a->buffers[1])[a->offset + a->length];
            n += (len + 1) * (wide ? 8u : 4u) + (last > 0 ? (uint64_t)last : 0);
        }
    }
    return n;
}

void marble__sst_set_budget(marble__sst *s, marble_mem_budget *b)
{
    s->budget = b;
}

/* A referenced cache entry for batch i (decoding it on a miss). */
static int get_entry(marble__sst *s, int64_t i, cache_entry **out, marble_error *err)
{
    count(&st_batch_reads);
    pthread_mutex_lock(&s->mu);
    cache_entry *hit = s->cache[i];
    if (hit) {
        atomic_fetch_add_explicit(&hit->refs, 1, memory_order_relaxed);
        pthread_mutex_unlock(&s->mu);
        *out = hit;
        return MARBLE_OK;
    }
    pthread_mutex_unlock(&s->mu);
    cache_entry *e = calloc(1, sizeof *e);
    if (!e) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", s->uri);
    e->index = i;
    atomic_init(&e->refs, 1);
    int rc = marble_ipc_reader_read(s->ipc, i, &e->array, err);
    if (rc != MARBLE_OK) {
        char msg[MARBLE_ERROR_MESSAGE_SIZE];
        snprintf(msg, sizeof msg, "%s", err ? err->message : "");
        free(e);
        return marble_error_set(err, rc == MARBLE_ERR_NO_MEMORY ? rc : MARBLE_ERR_CORRUPTION,
                                "%s: corruption: batch %" PRId64 ": %s", s->uri, i, msg);
    }
    if (e->array.length <= 0 || e->array.n_children != s->ncols + 2) {
        entry_unref(e);
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "%s: corruption: batch %" PRId64 " is empty or has %" PRId64
                                " columns",
                                s->uri, i, e->array.n_children);
    }
    rc = verify_batch(s, i, &e->array, err);
    if (rc != MARBLE_OK) {
        entry_unref(e);
        return rc;
    }
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed); /* the cache's */
    /* zero copy when the first column's last buffer points into the mapping */
    const struct ArrowArray *c0 = e->array.children[0];
    const uint8_t *b = c0->n_buffers ? c0->buffers[c0->n_buffers - 1] : NULL;
    int mapped = b && b >= s->data && b < s->data + s->size;
    cache_entry *old = NULL;
    if (!mapped && s->budget) {
        e->budget = s->budget;
        e->charged = decoded_bytes(s, &e->array);
        marble_mem_budget_charge(e->budget, e->charged);
    }
    pthread_mutex_lock(&s->mu);
    if (s->cache[i]) {
        old = e; /* another thread cached it meanwhile: keep theirs, drop our cache ref */
    } else {
        s->cache[i] = e;
        if (!mapped) {
            unsigned slot = s->next_slot++ % SST_CACHE_SLOTS;
            if (s->next_slot > SST_CACHE_SLOTS) {
                old = s->cache[s->ring[slot]];
                s->cache[s->ring[slot]] = NULL;
            }
            s->ring[slot] = i;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (old) entry_unref(old);
    *out = e;
    return MARBLE_OK;
}

int marble__sst_read_batch(marble__sst *s, int64_t i, struct ArrowArray *out, marble_error *err)
{
    if (i < 0 || i >= s->nbatches)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%s: batch %" PRId64 " out of range (%" PRId64 " batches)", s->uri,
                                i, s->nbatches);
    cache_entry *e;
    MARBLE_RETURN_NOT_OK(get_entry(s, i, &e, err));
    return make_view(s, e, out, err);
}

/* ---- lookups --------------------------------------------------------------------------------- */

/* The first batch whose largest key >= key; nbatches if none. */
static int64_t find_batch(const marble__sst *s, const void *key, size_t klen)
{
    int64_t lo = 0, hi = s->nbatches;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        const uint8_t *sm, *lg;
        size_t sl, ll;
        e_keys(s, mid, &sm, &sl, &lg, &ll);
        if (key_cmp(lg, ll, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* *row: the first row of a whose key >= key (a->length if none). */
static int lower_bound(const marble__sst *s, const struct ArrowArray *a, const void *key,
                       size_t klen, marble__bytes *scratch, int64_t *row, marble_error *err)
{
    int64_t lo = 0, hi = a->length;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        scratch->len = 0;
        MARBLE_RETURN_NOT_OK(marble__key_encode_row(&s->kenc, a, mid, scratch, err));
        if (key_cmp(scratch->data, scratch->len, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *row = lo;
    return MARBLE_OK;
}

/* Single binary/utf8 key columns (the key-value table, string-keyed tables): the encoding orders
 * like the raw bytes, so lookups compare raw slices of the batch with the unescaped key instead
 * of encoding every probed row. Returns 0 when the table's key is not of that kind. */
static int raw_key_column(const marble__sst *s)
{
    if (s->kenc.nkeys != 1) return -1;
    marble_arrow_type_id t = s->kenc.keys[0].type.id;
    return t == MARBLE_ARROW_BINARY || t == MARBLE_ARROW_UTF8 ? s->kenc.keys[0].col : -1;
}

/* Unescapes an encoded single binary key (0x01, bytes with 00 as 00 FF, then 00 00); 0 if the
 * key is not of that shape. */
static int raw_key(const uint8_t *key, size_t klen, marble__bytes *out)
{
    if (klen < 3 || key[0] != 0x01 || key[klen - 1] != 0 || key[klen - 2] != 0) return 0;
    out->len = 0;
    if (marble__bytes_reserve(out, klen, NULL) != MARBLE_OK) return 0;
    size_t o = 0;
    for (size_t i = 1; i < klen - 2; i++) {
        if (key[i] == 0) {
            if (key[i + 1] != 0xFF) return 0;
            i++;
            out->data[o++] = 0;
            continue;
        }
        out->data[o++] = key[i];
    }
    out->len = o;
    return 1;
}

static int raw_cmp(const struct ArrowArray *a, int col, int64_t row, const uint8_t *k, size_t n)
{
    const struct ArrowArray *c = a->children[col];
    const int32_t *off = c->buffers[1];
    int64_t p = c->offset + a->offset + row;
    const uint8_t *d = (const uint8_t *)c->buffers[2] + off[p];
    return key_cmp(d, (size_t)(off[p + 1] - off[p]), k, n);
}

static int64_t raw_lower_bound(const struct ArrowArray *a, int col, const uint8_t *k, size_t n)
{
    int64_t lo = 0, hi = a->length;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (raw_cmp(a, col, mid, k, n) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static uint64_t col_u64(const struct ArrowArray *a, int col, int64_t row)
{
    const struct ArrowArray *c = a->children[col];
    uint64_t v;
    memcpy(&v, (const uint8_t *)c->buffers[1] + 8 * (c->offset + a->offset + row), 8);
    return v;
}

static int col_u8(const struct ArrowArray *a, int col, int64_t row)
{
    const struct ArrowArray *c = a->children[col];
    return ((const uint8_t *)c->buffers[1])[c->offset + a->offset + row];
}

int marble__sst_get(marble__sst *s, const void *key, size_t klen, uint64_t snapshot_seq,
                    uint64_t *seq, int *op, marble__bytes *value, marble_error *err)
{
    if (value) value->len = 0;
    if (s->has_bloom) {
        count(&st_bloom_checks);
        if (!marble__bloom_may_contain(&s->bloom, key, klen)) {
            count(&st_bloom_negatives);
            return MARBLE_ERR_NOT_FOUND;
        }
    }
    int64_t b = find_batch(s, key, klen);
    /* per-thread scratch: a lookup allocates nothing once warm (freed at thread exit is not
     * needed: it stays reachable through the thread-local pointer) */
    marble__scratch *sc = marble__scratch_get();
    if (!sc) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", s->uri);
    marble__bytes *scratchp = &sc->b[MARBLE__SCRATCH_SST], *rawp = &sc->b[MARBLE__SCRATCH_SST_RAW];
    scratchp->len = 0;
    int rcol = raw_key_column(s);
    if (rcol >= 0 && !raw_key(key, klen, rawp)) rcol = -1;
    int rc = MARBLE_ERR_NOT_FOUND, seen = 0;
    for (; b < s->nbatches; b++) {
        const uint8_t *sm, *lg;
        size_t sl, ll;
        e_keys(s, b, &sm, &sl, &lg, &ll);
        if (key_cmp(sm, sl, key, klen) > 0) break;
        cache_entry *e;
        int r = get_entry(s, b, &e, err);
        if (r != MARBLE_OK) {
            rc = r;
            break;
        }
        const struct ArrowArray *a = &e->array;
        int64_t row;
        if (rcol >= 0)
            row = raw_lower_bound(a, rcol, rawp->data, rawp->len);
        else
            r = lower_bound(s, a, key, klen, scratchp, &row, err);
        int done = 0;
        for (; r == MARBLE_OK && row < a->length; row++) {
            int c;
            if (rcol >= 0) {
                c = raw_cmp(a, rcol, row, rawp->data, rawp->len);
            } else {
                scratchp->len = 0;
                r = marble__key_encode_row(&s->kenc, a, row, scratchp, err);
                if (r != MARBLE_OK) break;
                c = key_cmp(scratchp->data, scratchp->len, key, klen);
            }
            if (c != 0) {
                done = 1;
                break;
            }
            seen = 1;
            uint64_t sq = col_u64(a, s->ncols, row);
            if (sq > snapshot_seq) continue;
            int o = col_u8(a, s->ncols + 1, row);
            if (seq) *seq = sq;
            if (op) *op = o;
            if (o == 1 && value) r = marble__row_encode(s->codec, a, row, value, err);
            rc = r;
            done = 1;
            break;
        }
        entry_unref(e);
        if (r != MARBLE_OK) {
            rc = r;
            break;
        }
        if (done) break;
    }
    marble__scratch_trim(scratchp, (size_t)1 << 20);
    marble__scratch_trim(rawp, (size_t)1 << 20);
    if (rc == MARBLE_ERR_NOT_FOUND && s->has_bloom && !seen) count(&st_bloom_fp);
    if (rc == MARBLE_ERR_NOT_FOUND) marble_error_set(err, rc, "%s: key not found", s->uri);
    return rc;
}

/* ---- iterator -------------------------------------------------------------------------------- */

struct marble__sst_iter {
    marble__sst *s;
    cache_entry *e; /* the current batch (referenced) */
    int64_t batch, row;
    int valid;
    int status;
    marble_error err;
    marble__bytes key, value;
    int have_value;
    int have_key;
};

int marble__sst_iter_create(marble__sst *s, marble__sst_iter **out, marble_error *err)
{
    marble__sst_iter *it = calloc(1, sizeof *it);
    if (!it) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", s->uri);
    marble__sst_ref(s);
    it->s = s;
    it->batch = -1;
    *out = it;
    return MARBLE_OK;
}

void marble__sst_iter_destroy(marble__sst_iter *it)
{
    if (!it) return;
    if (it->e) entry_unref(it->e);
    marble__bytes_free(&it->key);
    marble__bytes_free(&it->value);
    marble__sst_unref(it->s);
    free(it);
}

static void iter_fail(marble__sst_iter *it, int rc)
{
    it->valid = 0;
    it->status = rc;
}

static int iter_load(marble__sst_iter *it, int64_t b)
{
    if (it->batch == b && it->e) return 1;
    if (it->e) entry_unref(it->e);
    it->e = NULL;
    it->batch = -1;
    int rc = get_entry(it->s, b, &it->e, &it->err);
    if (rc != MARBLE_OK) {
        it->e = NULL;
        iter_fail(it, rc);
        return 0;
    }
    it->batch = b;
    return 1;
}

/* Moves to `row` of the loaded batch, encoding its key. */
static void iter_at(marble__sst_iter *it, int64_t row)
{
    it->row = row;
    it->have_value = 0;
    it->have_key = 0; /* encoded when asked for: a scan reading columns never needs it */
    it->valid = 1;
}

static void iter_reset(marble__sst_iter *it)
{
    it->valid = 0;
    it->status = MARBLE_OK;
    marble_error_clear(&it->err);
}

int marble__sst_iter_valid(const marble__sst_iter *it)
{
    return it->valid;
}

void marble__sst_iter_seek_to_first(marble__sst_iter *it)
{
    iter_reset(it);
    if (iter_load(it, 0)) iter_at(it, 0);
}

void marble__sst_iter_seek_to_last(marble__sst_iter *it)
{
    iter_reset(it);
    if (iter_load(it, it->s->nbatches - 1)) iter_at(it, it->e->array.length - 1);
}

void marble__sst_iter_seek(marble__sst_iter *it, const void *key, size_t klen)
{
    iter_reset(it);
    int64_t b = find_batch(it->s, key, klen);
    if (b >= it->s->nbatches || !iter_load(it, b)) return;
    int64_t row;
    int rc = MARBLE_OK;
    marble__scratch *sc = marble__scratch_get();
    marble__bytes *raw = sc ? &sc->b[MARBLE__SCRATCH_ITER_RAW] : NULL;
    int rcol = raw ? raw_key_column(it->s) : -1;
    if (rcol >= 0 && raw_key(key, klen, raw))
        row = raw_lower_bound(&it->e->array, rcol, raw->data, raw->len);
    else
        rc = lower_bound(it->s, &it->e->array, key, klen, &it->key, &row, &it->err);
    if (raw) marble__scratch_trim(raw, (size_t)1 << 20);
    if (rc != MARBLE_OK) {
        iter_fail(it, rc == MARBLE_ERR_NO_MEMORY ? rc : MARBLE_ERR_CORRUPTION);
        return;
    }
    if (row < it->e->array.length) {
        iter_at(it, row);
    } else if (b + 1 < it->s->nbatches) {
        /* The index's largest key lied about the batch (caught by verify when on).
         */
        if (iter_load(it, b + 1)) iter_at(it, 0);
    }
}

void marble__sst_iter_next(marble__sst_iter *it)
{
    if (!it->valid) return;
    if (it->row + 1 < it->e->array.length) {
        iter_at(it, it->row + 1);
    } else if (it->batch + 1 < it->s->nbatches) {
        if (iter_load(it, it->batch + 1)) iter_at(it, 0);
    } else {
        it->valid = 0;
    }
}

void marble__sst_iter_prev(marble__sst_iter *it)
{
    if (!it->valid) return;
    if (it->row > 0) {
        iter_at(it, it->row - 1);
    } else if (it->batch > 0) {
        if (iter_load(it, it->batch - 1)) iter_at(it, it->e->array.length - 1);
    } else {
        it->valid = 0;
    }
}

const void *marble__sst_iter_key(marble__sst_iter *it, size_t *klen)
{
    if (it->valid && !it->have_key) {
        it->key.len = 0;
        int rc = marble__key_encode_row(&it->s->kenc, &it->e->array, it->row, &it->key, &it->err);
        if (rc != MARBLE_OK) { /* a batch that passed validation always encodes; be safe */
            iter_fail(it, rc == MARBLE_ERR_NO_MEMORY ? rc : MARBLE_ERR_CORRUPTION);
            *klen = 0;
            return "";
        }
        it->have_key = 1;
    }
    *klen = it->key.len;
    return it->key.data;
}

uint64_t marble__sst_iter_seq(const marble__sst_iter *it)
{
    return col_u64(&it->e->array, it->s->ncols, it->row);
}

int marble__sst_iter_op(const marble__sst_iter *it)
{
    return col_u8(&it->e->array, it->s->ncols + 1, it->row);
}

const void *marble__sst_iter_value(marble__sst_iter *it, size_t *vlen)
{
    if (!it->have_value) {
        it->value.len = 0;
        if (marble__sst_iter_op(it) == 1) {
            int rc = marble__row_encode(it->s->codec, &it->e->array, it->row, &it->value, &it->err);
            if (rc != MARBLE_OK) {
                iter_fail(it, rc);
                *vlen = 0;
                return NULL;
            }
        }
        it->have_value = 1;
    }
    *vlen = it->value.len;
    return it->value.data;
}

const struct ArrowArray *marble__sst_iter_batch(const marble__sst_iter *it, int64_t *row)
{
    if (row) *row = it->row;
    return it->valid ? &it->e->array : NULL;
}

int marble__sst_iter_status(const marble__sst_iter *it, marble_error *err)
{
    if (it->status != MARBLE_OK && err) *err = it->err;
    return it->status;
}

/* ---- value filters and index rewrites -------------------------------------------------------- */

int marble__sst_has_value_filter(const marble__sst *s, int col)
{
    return s->nvf && col >= 0 && col < s->ncols && s->vf_slot[col] >= 0;
}

int marble__sst_index_version(const marble__sst *s)
{
    return s->version;
}

/* The canonical hash of literal v compared with a column of type id; 0 when it cannot be hashed
 * exactly (the caller then answers "maybe"). */
static int literal_hash(marble_arrow_type_id id, const marble_datum *v, uint64_t *h)
{
    switch (id) {
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_LARGE_BINARY:
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        if (v->kind != MARBLE_DATUM_STRING || (v->n && !v->s)) return 0;
        *h = marble__bloom_hash(v->n ? v->s : NULL, v->n);
        return 1;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        if (v->kind == MARBLE_DATUM_DOUBLE) {
            if (v->d != v->d) return 0;
            *h = hash_double(v->d);
            return 1;
        }
        if (v->kind == MARBLE_DATUM_INT) {
            double d = (double)v->i;
            if (d >= 9223372036854775808.0 || (int64_t)d != v->i) return 0;
            *h = hash_double(d);
            return 1;
        }
        return 0;
    default:
        if (v->kind == MARBLE_DATUM_INT || v->kind == MARBLE_DATUM_BOOL) {
            *h = hash_int(v->i);
            return 1;
        }
        if (v->kind == MARBLE_DATUM_DOUBLE) {
            double d = v->d;
            if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) ||
                (double)(int64_t)d != d)
                return 0;
            *h = hash_int((int64_t)d);
            return 1;
        }
        return 0;
    }
}

int marble__sst_batch_may_contain_value(const marble__sst *s, int64_t batch, int col,
                                        const marble_datum *v)
{
    if (!v || !marble__sst_has_value_filter(s, col) || batch < 0 || batch >= s->nbatches) return 1;
    uint64_t h;
    if (!literal_hash(s->codec->cols[col].type.id, v, &h)) return 1;
    return marble__bloom_may_contain_hash(&s->vf[batch * s->nvf + s->vf_slot[col]], h);
}

/* Adds batch i of s (decoded as a) to the index being built in w. */
static int rewrite_batch(marble__sst *s, marble__sst_writer *w, int64_t i,
                         const struct ArrowArray *a, uint32_t crc, marble_error *err)
{
    const marble__row_codec *c = w->codec;
    int rc = marble__bytes_reserve(&w->zones, (size_t)c->ncols * SST_ZONE, err);
    for (int col = 0; col < c->ncols && rc == MARBLE_OK; col++) {
        zone_of(&c->cols[col].type, a->children[col], w->zones.data + w->zones.len);
        w->zones.len += SST_ZONE;
    }
    if (rc == MARBLE_OK) rc = add_value_filters(w, a, err);
    for (int64_t r = 0; r < a->length && rc == MARBLE_OK; r++) {
        w->scratch.len = 0;
        rc = marble__key_encode_row(&s->kenc, a, r, &w->scratch, err);
        if (rc != MARBLE_OK) break;
        uint64_t seq = col_u64(a, s->ncols, r);
        int same = w->have_prev &&
                   key_cmp(w->scratch.data, w->scratch.len, w->prev_key.data, w->prev_key.len) == 0;
        if (same || col_u8(a, s->ncols + 1, r) == 0) w->dirty = 1;
        if (w->has_bloom && !same)
            rc = marble__bloom_builder_add(&w->bloom, w->scratch.data, w->scratch.len, err);
        if (rc == MARBLE_OK && r == 0) {
            w->first_key.len = 0;
            rc = marble__bytes_append(&w->first_key, w->scratch.data, w->scratch.len, err);
        }
        if (rc == MARBLE_OK && !same) {
            w->prev_key.len = 0;
            rc = marble__bytes_append(&w->prev_key, w->scratch.data, w->scratch.len, err);
        }
        if (w->rows == 0 || seq < w->min_seq) w->min_seq = seq;
        if (w->rows == 0 || seq > w->max_seq) w->max_seq = seq;
        w->have_prev = 1;
        w->rows++;
    }
    uint8_t entry[SST_ENTRY] = {0};
    put64(entry, e_off(s, i));
    put64(entry + 8, e_len(s, i));
    put64(entry + 16, (uint64_t)a->length);
    put32(entry + 24, crc);
    put32(entry + 28, (uint32_t)w->first_key.len);
    put32(entry + 32, (uint32_t)w->prev_key.len);
    put64(entry + 40, w->keys.len);
    if (rc == MARBLE_OK) rc = marble__bytes_append(&w->entries, entry, sizeof entry, err);
    if (rc == MARBLE_OK)
        rc = marble__bytes_append(&w->keys, w->first_key.data, w->first_key.len, err);
    if (rc == MARBLE_OK)
        rc = marble__bytes_append(&w->keys, w->prev_key.data, w->prev_key.len, err);
    if (rc == MARBLE_OK) w->nbatches++;
    return rc;
}

int marble__sst_rewrite(marble__sst *s, marble_fs *fs, const char *uri,
                        const marble__sst_options *opts, int (*cancelled)(void *ud), void *ud,
                        marble__sst_info *info, marble_error *err)
{
    if (!s || !fs || !uri)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "SST rewrite: NULL argument");
    marble__sst_options o = {0};
    if (opts) o = *opts;
    marble__sst_writer *w = calloc(1, sizeof *w);
    if (!w) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", uri);
    w->fs = fs;
    w->codec = s->codec;
    w->uri = dup_str(uri);
    w->buf = malloc(SST_WRITE_BUFFER);
    int rc = w->uri && w->buf
                 ? MARBLE_OK
                 : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "%s: out of memory", uri);
    if (rc == MARBLE_OK) rc = writer_init_index(w, &o, uri, err);
    if (rc == MARBLE_OK)
        rc = marble_fs_open(fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE,
                            &w->file, err);
    if (rc == MARBLE_OK) rc = sink_write(w, s->data, (size_t)s->istart, err);
    for (int64_t i = 0; i < s->nbatches && rc == MARBLE_OK; i++) {
        if (cancelled && cancelled(ud)) {
            rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "%s: rewrite cancelled", uri);
            break;
        }
        uint32_t crc = marble_crc32c(s->data + e_off(s, i), (size_t)e_len(s, i));
        if (crc != e_crc(s, i)) {
            rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                  "%s: corruption: batch %" PRId64 " CRC mismatch (stored %08x, "
                                  "computed %08x)",
                                  s->uri, i, e_crc(s, i), crc);
            break;
        }
        struct ArrowArray a = {0};
        rc = marble_ipc_reader_read(s->ipc, i, &a, err);
        if (rc != MARBLE_OK) {
            rc = marble_error_set(err, rc == MARBLE_ERR_NO_MEMORY ? rc : MARBLE_ERR_CORRUPTION,
                                  "%s: corruption: batch %" PRId64 " does not decode", s->uri, i);
            break;
        }
        if (a.n_children != s->ncols + 2 || (uint64_t)a.length != e_rows(s, i))
            rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                  "%s: corruption: batch %" PRId64 " has %" PRId64
                                  " rows and %" PRId64 " columns, the index differs",
                                  s->uri, i, a.length, a.n_children);
        if (rc == MARBLE_OK) rc = rewrite_batch(s, w, i, &a, crc, err);
        marble_arrow_array_release(&a);
    }
    marble__bytes ix = {0};
    if (rc == MARBLE_OK) rc = build_index(w, &ix, err);
    if (rc == MARBLE_OK) rc = sink_write(w, ix.data, ix.len, err);
    if (rc == MARBLE_OK)
        rc = sink_write(w, s->data + s->footer, (size_t)(s->size - s->footer), err);
    marble__bytes_free(&ix);
    if (rc == MARBLE_OK) rc = sink_flush(w, err);
    if (rc == MARBLE_OK) rc = marble_file_sync(w->file, MARBLE_SYNC_FULL, err);
    if (rc == MARBLE_OK) {
        marble_file *f = w->file;
        w->file = NULL;
        rc = marble_file_close(f, err);
    }
    if (rc == MARBLE_OK && info) rc = writer_info(w, info, err);
    marble__sst_writer_destroy(w);
    return rc;
}
