/*
 * Table scans as pipeline sources (marble_db_scan_source in include/marble/db.h): a source pins
 * one readview (memtables, version, snapshot sequence number) and the SSTables it reads, and
 * hands out morsels in key order. When the visible data of the table within the key range is one
 * clean sorted run (marble__db_clean_run) a morsel is one SSTable batch, read as zero-copy slices
 * of the projected columns; otherwise the range is cut into key partitions at batch boundaries of
 * the level holding the most rows, and a morsel runs the merged, version-collapsing iteration of
 * marble_db_scan (marble__scan_fill) over its partition.
 *
 * Pruning rule. Predicates only prune (the pipeline still filters), and nothing may be skipped
 * that could hold a row satisfying them: "when in doubt, keep". A batch is ruled out by its key
 * range (outside the scan range), by the zone map of a predicate's fixed-width column, or by the
 * value filter of an EQ predicate's column; a file by its key range, by the bloom filter when EQ
 * predicates fix every key column, or when every batch is ruled out. In the clean-run case every
 * key has one version and there are no deletes, so any ruled-out batch or file is skipped. In the
 * merge case a skipped file could have hidden older versions (or held the delete of a key), so a
 * file is skipped only when (a) what rules it out concerns the key alone (scan range, key-column
 * predicates, bloom filter): every version of a key has the same key values, so whatever surfaces
 * from older files instead fails the same test and is removed by the filter, or (b) no other
 * file of the table overlaps its key range (nothing older to shadow; memtables are newer). The
 * merge case never skips single batches. Zone maps exclude NaN, which satisfies no comparison
 * (IEEE semantics); int and double literals compare as doubles (pipeline.h), so a zone is used
 * only where that conversion is exact.
 *
 * Counters (added atomically, so several sources may share them): files_total counts the table's
 * SSTables in the snapshot, files_skipped those ruled out whole (key range included),
 * bloom_skipped those of them ruled out by the bloom filter; batches_total counts the batches of
 * the files read, batches_skipped those of them ruled out (clean-run case only); rows_scanned the
 * rows handed out.
 *
 * Thread safety: after creation the source's state is read-only, so morsels may be opened and
 * read on any threads at once; each cursor is for one thread at a time.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/db_internal.h"

#define MAX_PARTITIONS 256
#define DEFAULT_BATCH_ROWS 4096
#define EXACT_DOUBLE_INT ((int64_t)1 << 53)

typedef struct pred {
    int col;
    int is_key;
    marble_expr_op op;
    marble_datum v;
} pred;

typedef struct fast_morsel {
    size_t file;
    int64_t batch;
} fast_morsel;

typedef struct source {
    marble_db *db;
    marble__res res;
    marble__table *t;
    marble__readview rv;
    marble__scan_bounds b;
    int proj[MARBLE__MAX_COLUMNS];
    int nproj;
    int64_t batch_rows;
    marble_scan_counters *counters;
    struct ArrowSchema schema;
    int fast;
    marble__sst **ssts; /* fast: the run in key order; merge: the files read */
    uint64_t *nums;     /* merge: the numbers of the files read, ascending */
    size_t n_ssts;
    fast_morsel *fm;
    marble__bytes *splits; /* merge: partition i is [splits[i - 1], splits[i]) */
    size_t n_splits;
    int64_t n_morsels;
} source;

typedef struct cursor {
    int64_t i;
    marble__sst *sst; /* fast: the batch's file and rows [row, end) still to hand out */
    int64_t batch, row, end;
    marble__scan_bounds b; /* merge: the partition's range */
    marble__iter *it;
    marble__assembler *as;
    int done;
} cursor;

static void count(int64_t *c, int64_t n)
{
    if (n) __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

/* ---- predicates ------------------------------------------------------------------------------ */

enum { ZK_NONE, ZK_INT, ZK_UINT, ZK_DOUBLE };

static int zone_kind(marble_arrow_type_id id)
{
    switch (id) {
    case MARBLE_ARROW_BOOL:
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_DATE32:
    case MARBLE_ARROW_TIMESTAMP:
        return ZK_INT;
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64:
        return ZK_UINT;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        return ZK_DOUBLE;
    default:
        return ZK_NONE;
    }
}

#define RANGE_MAY_MATCH(op, mn, mx, v)                                                             \
    ((op) == MARBLE_OP_EQ   ? (mn) <= (v) && (v) <= (mx)                                           \
     : (op) == MARBLE_OP_LT ? (mn) < (v)                                                           \
     : (op) == MARBLE_OP_LE ? (mn) <= (v)                                                          \
     : (op) == MARBLE_OP_GT ? (mx) > (v)                                                           \
                            : (mx) >= (v))

static int exact_int(int64_t x)
{
    return x >= -EXACT_DOUBLE_INT && x <= EXACT_DOUBLE_INT;
}

/* 0 if no row of batch i of s satisfies p by the batch's zone map and value filter, else 1. */
static int batch_may_match(const source *src, const marble__sst *s, int64_t i, const pred *p)
{
    if (p->op == MARBLE_OP_EQ && !marble__sst_batch_may_contain_value(s, i, p->col, &p->v))
        return 0;
    marble__zone z;
    int zk = zone_kind(src->t->codec.cols[p->col].type.id);
    if (zk == ZK_NONE || !marble__sst_zone(s, i, p->col, &z)) return 1;
    marble_expr_op op = p->op;
    if (p->v.kind == MARBLE_DATUM_INT || p->v.kind == MARBLE_DATUM_BOOL) {
        int64_t v = p->v.i;
        if (zk == ZK_INT) return RANGE_MAY_MATCH(op, z.min_i, z.max_i, v);
        if (zk == ZK_UINT) {
            if (v < 0) return op == MARBLE_OP_GT || op == MARBLE_OP_GE;
            return RANGE_MAY_MATCH(op, z.min_u, z.max_u, (uint64_t)v);
        }
        if (!exact_int(v)) return 1;
        return RANGE_MAY_MATCH(op, z.min_d, z.max_d, (double)v);
    }
    if (p->v.kind == MARBLE_DATUM_DOUBLE) {
        double v = p->v.d;
        if (isnan(v)) return 1;
        if (zk == ZK_DOUBLE) return RANGE_MAY_MATCH(op, z.min_d, z.max_d, v);
        if (zk == ZK_INT) {
            if (!exact_int(z.min_i) || !exact_int(z.max_i)) return 1;
            return RANGE_MAY_MATCH(op, (double)z.min_i, (double)z.max_i, v);
        }
        if (z.max_u > (uint64_t)EXACT_DOUBLE_INT) return 1;
        return RANGE_MAY_MATCH(op, (double)z.min_u, (double)z.max_u, v);
    }
    return 1;
}

/* The key value of an EQ literal for a key column of type ty: 1 when a matching row's key
 * encodes exactly as the value does, else 0 (then the bloom filter is not used). */
static int key_value_of(const marble_arrow_type *ty, const marble_datum *d, marble_value *out)
{
    memset(out, 0, sizeof *out);
    int zk = zone_kind(ty->id);
    int is_int = d->kind == MARBLE_DATUM_INT || d->kind == MARBLE_DATUM_BOOL;
    if (zk == ZK_INT || zk == ZK_UINT) {
        int64_t i;
        if (is_int) {
            i = d->i;
        } else if (d->kind == MARBLE_DATUM_DOUBLE && d->d >= -9223372036854775808.0 &&
                   d->d < 9223372036854775808.0 && (double)(int64_t)d->d == d->d) {
            i = (int64_t)d->d;
        } else {
            return 0;
        }
        if (zk == ZK_UINT) {
            if (i < 0) return 0;
            out->kind = MARBLE_VALUE_UINT;
            out->u = (uint64_t)i;
        } else {
            out->kind = MARBLE_VALUE_INT;
            out->i = i;
        }
        return 1;
    }
    if (zk == ZK_DOUBLE) {
        double v;
        if (d->kind == MARBLE_DATUM_DOUBLE && !isnan(d->d))
            v = d->d;
        else if (is_int && exact_int(d->i))
            v = (double)d->i;
        else
            return 0;
        if (ty->id == MARBLE_ARROW_FLOAT32 && (double)(float)v != v) return 0;
        out->kind = MARBLE_VALUE_DOUBLE;
        out->d = v;
        return 1;
    }
    if (d->kind != MARBLE_DATUM_STRING) return 0;
    switch (ty->id) {
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        if (d->n != (size_t)ty->byte_width) return 0;
        /* fall through */
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_BINARY:
        out->kind = MARBLE_VALUE_BYTES;
        out->bytes = d->s ? (const void *)d->s : (const void *)"";
        out->len = d->n;
        return 1;
    default:
        return 0;
    }
}

/* The encoded key (no prefix) fixed by EQ predicates on every key column, if any. */
static int bloom_key(const marble__table *t, const pred *preds, size_t n, marble__bytes *out,
                     int *have, marble_error *err)
{
    *have = 0;
    marble_value vals[MARBLE__KEY_MAX_COLS];
    for (int k = 0; k < t->nkeys; k++) {
        int c = t->key_cols[k], found = 0;
        for (size_t j = 0; j < n && !found; j++)
            if (preds[j].col == c && preds[j].op == MARBLE_OP_EQ)
                found = key_value_of(&t->codec.cols[c].type, &preds[j].v, &vals[k]);
        if (!found) return MARBLE_OK;
    }
    marble_key key = {vals, (size_t)t->nkeys};
    marble_error ignored = {0};
    if (marble__db_encode_key(t, key, 1, out, &ignored) != MARBLE_OK) {
        out->len = 0;
        return ignored.code == MARBLE_ERR_NO_MEMORY
                   ? marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory")
                   : MARBLE_OK;
    }
    memmove(out->data, out->data + MARBLE__PREFIX_LEN, out->len - MARBLE__PREFIX_LEN);
    out->len -= MARBLE__PREFIX_LEN;
    *have = 1;
    return MARBLE_OK;
}

static int check_preds(const marble__table *t, const marble_scan_spec *spec, pred *out,
                       marble_error *err)
{
    for (size_t j = 0; j < spec->n_preds; j++) {
        const marble_scan_predicate *sp = &spec->preds[j];
        int col = -1;
        for (int c = 0; sp->column && c < t->codec.ncols; c++)
            if (strcmp(t->codec.schema.children[c]->name, sp->column) == 0) col = c;
        if (col < 0)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "table '%s' has no column '%s' (scan predicate %zu)", t->name,
                                    sp->column ? sp->column : "(NULL)", j);
        if (sp->op != MARBLE_OP_EQ && sp->op != MARBLE_OP_LT && sp->op != MARBLE_OP_LE &&
            sp->op != MARBLE_OP_GT && sp->op != MARBLE_OP_GE)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "scan predicate %zu on '%s': operator %d is not =, <, <=, > "
                                    "or >=",
                                    j, sp->column, (int)sp->op);
        if ((int)sp->value.kind < (int)MARBLE_DATUM_NULL ||
            (int)sp->value.kind > (int)MARBLE_DATUM_STRING ||
            (sp->value.kind == MARBLE_DATUM_STRING && !sp->value.s && sp->value.n))
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "scan predicate %zu on '%s': bad literal", j, sp->column);
        out[j].col = col;
        out[j].is_key = t->codec.cols[col].is_key;
        out[j].op = sp->op;
        out[j].v = sp->value;
    }
    return MARBLE_OK;
}

/* ---- planning -------------------------------------------------------------------------------- */

typedef struct plan {
    const pred *preds;
    size_t n_preds;
    const uint8_t *bkey;
    size_t bklen;
    int64_t files_total, files_skipped, bloom_skipped, batches_total, batches_skipped;
} plan;

/* Per batch of s: 1 in keep[i] when it may hold wanted rows. by_key: only the tests about the
 * key alone (range, key-column predicates). Returns the batches kept. */
static int64_t keep_batches(const source *src, const plan *pl, const marble__sst *s, int by_key,
                            uint8_t *keep)
{
    int64_t nb = marble__sst_num_batches(s), kept = 0;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *sm, *lg;
        size_t sl, ll;
        int64_t rows;
        marble__sst_batch_range(s, i, &sm, &sl, &lg, &ll, &rows);
        int k = !marble__scan_before_lower(&src->b, lg, ll) &&
                !marble__scan_past_upper(&src->b, sm, sl);
        for (size_t j = 0; k && j < pl->n_preds; j++)
            if (!by_key || pl->preds[j].is_key) k = batch_may_match(src, s, i, &pl->preds[j]);
        keep[i] = (uint8_t)k;
        kept += k;
    }
    return kept;
}

static int plan_fast(source *src, plan *pl, marble_error *err)
{
    size_t cap = 0;
    for (size_t f = 0; f < src->n_ssts; f++)
        cap += (size_t)marble__sst_num_batches(src->ssts[f]);
    src->fm = malloc((cap ? cap : 1) * sizeof *src->fm);
    uint8_t *keep = malloc(cap ? cap : 1);
    if (!src->fm || !keep) {
        free(keep);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    pl->files_skipped += pl->files_total - (int64_t)src->n_ssts; /* outside the key range */
    for (size_t f = 0; f < src->n_ssts; f++) {
        marble__sst *s = src->ssts[f];
        if (pl->bkey && !marble__sst_may_contain(s, pl->bkey, pl->bklen)) {
            pl->files_skipped++;
            pl->bloom_skipped++;
            continue;
        }
        int64_t nb = marble__sst_num_batches(s), kept = keep_batches(src, pl, s, 0, keep);
        if (!kept) {
            pl->files_skipped++;
            continue;
        }
        pl->batches_total += nb;
        pl->batches_skipped += nb - kept;
        for (int64_t i = 0; i < nb; i++)
            if (keep[i]) src->fm[src->n_morsels++] = (fast_morsel){f, i};
    }
    free(keep);
    return MARBLE_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int overlaps_another(const marble__version *v, uint32_t id, const marble__file_meta *f)
{
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < marble__version_num_files(v, l); i++) {
            const marble__file_meta *g = marble__version_file(v, l, i);
            if (g == f || g->number == f->number || !marble__file_of_table(g, id)) continue;
            if (key_cmp(g->smallest, g->smallest_len, f->largest, f->largest_len) <= 0 &&
                key_cmp(f->smallest, f->smallest_len, g->largest, g->largest_len) <= 0)
                return 1;
        }
    return 0;
}

typedef struct cand {
    const uint8_t *k;
    size_t n;
} cand;

static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return key_cmp(x->k, x->n, y->k, y->n);
}

/* Split keys at batch boundaries of the files read from the level holding the most rows. */
static int plan_partitions(source *src, const int *level_of, marble_error *err)
{
    uint64_t rows[MARBLE__NUM_LEVELS] = {0};
    for (size_t f = 0; f < src->n_ssts; f++)
        rows[level_of[f]] += marble__sst_rows(src->ssts[f]);
    int best = 0;
    for (int l = 1; l < MARBLE__NUM_LEVELS; l++)
        if (rows[l] > rows[best]) best = l;
    int threads = src->db->sched ? marble_sched_threads(src->db->sched) : 1;
    size_t want = threads > 0 ? (size_t)threads * 4 : 4;
    if (want > MAX_PARTITIONS) want = MAX_PARTITIONS;
    size_t n = 0;
    for (size_t f = 0; f < src->n_ssts; f++)
        if (level_of[f] == best) n += (size_t)marble__sst_num_batches(src->ssts[f]);
    if (want < 2 || n == 0) return MARBLE_OK;
    cand *c = malloc(n * sizeof *c);
    if (!c) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    size_t m = 0;
    for (size_t f = 0; f < src->n_ssts; f++) {
        if (level_of[f] != best) continue;
        for (int64_t i = 0; i < marble__sst_num_batches(src->ssts[f]); i++) {
            const uint8_t *sm, *lg;
            size_t sl, ll;
            int64_t r;
            marble__sst_batch_range(src->ssts[f], i, &sm, &sl, &lg, &ll, &r);
            if (marble__scan_past_upper(&src->b, sm, sl)) continue;
            if (src->b.has_lower && key_cmp(sm, sl, src->b.lower.data, src->b.lower.len) <= 0)
                continue;
            c[m++] = (cand){sm, sl};
        }
    }
    qsort(c, m, sizeof *c, cmp_cand);
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (u == 0 || cmp_cand(&c[u - 1], &c[i]) != 0) c[u++] = c[i];
    size_t k = want < u + 1 ? want : u + 1; /* partitions */
    int rc = MARBLE_OK;
    if (k > 1) {
        src->splits = calloc(k - 1, sizeof *src->splits);
        if (!src->splits) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t j = 1; rc == MARBLE_OK && j < k; j++) {
        const cand *x = &c[(j * u) / k];
        if (src->n_splits && key_cmp(src->splits[src->n_splits - 1].data,
                                     src->splits[src->n_splits - 1].len, x->k, x->n) >= 0)
            continue;
        rc = marble__bytes_append(&src->splits[src->n_splits], x->k, x->n, err);
        if (rc == MARBLE_OK) src->n_splits++;
    }
    free(c);
    return rc;
}

static int plan_merge(source *src, plan *pl, marble_error *err)
{
    const marble__version *v = src->rv.version;
    uint32_t id = src->t->id;
    size_t n = 0;
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        n += marble__version_num_files(v, l);
    src->ssts = calloc(n ? n : 1, sizeof *src->ssts);
    src->nums = calloc(n ? n : 1, sizeof *src->nums);
    int *level_of = calloc(n ? n : 1, sizeof *level_of);
    uint8_t *keep = NULL;
    size_t keep_cap = 0;
    int rc = src->ssts && src->nums && level_of
                 ? MARBLE_OK
                 : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    for (int l = 0; rc == MARBLE_OK && l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; rc == MARBLE_OK && i < marble__version_num_files(v, l); i++) {
            const marble__file_meta *f = marble__version_file(v, l, i);
            if (!marble__file_of_table(f, id)) continue;
            pl->files_total++;
            if (!marble__scan_file_in_bounds(&src->b, f)) {
                pl->files_skipped++;
                continue;
            }
            marble__sst *s = NULL;
            rc = marble__db_open_sst(src->db, f->number, src->t, &s, err);
            if (rc != MARBLE_OK) break;
            if (pl->bkey && !marble__sst_may_contain(s, pl->bkey, pl->bklen)) {
                pl->files_skipped++;
                pl->bloom_skipped++;
                marble__sst_unref(s);
                continue;
            }
            size_t nb = (size_t)marble__sst_num_batches(s);
            if (nb > keep_cap) {
                uint8_t *p = realloc(keep, nb);
                if (!p) {
                    marble__sst_unref(s);
                    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
                    break;
                }
                keep = p;
                keep_cap = nb;
            }
            int skip = keep_batches(src, pl, s, 1, keep) == 0;
            if (!skip && pl->n_preds && keep_batches(src, pl, s, 0, keep) == 0)
                skip = !overlaps_another(v, id, f);
            if (skip) {
                pl->files_skipped++;
                marble__sst_unref(s);
                continue;
            }
            pl->batches_total += (int64_t)nb;
            level_of[src->n_ssts] = l;
            src->nums[src->n_ssts] = f->number;
            src->ssts[src->n_ssts++] = s;
        }
    free(keep);
    if (rc == MARBLE_OK) rc = plan_partitions(src, level_of, err);
    free(level_of);
    if (rc == MARBLE_OK) qsort(src->nums, src->n_ssts, sizeof *src->nums, cmp_u64);
    src->n_morsels = (int64_t)src->n_splits + 1;
    return rc;
}

/* ---- morsels --------------------------------------------------------------------------------- */

static int src_schema(void *ud, struct ArrowSchema *out, marble_error *err)
{
    source *src = ud;
    return marble_arrow_schema_copy(&src->schema, out, err);
}

typedef struct keep_ctx {
    const source *src;
    const marble__scan_bounds *b;
} keep_ctx;

static int keep_file(void *ud, const marble__file_meta *f)
{
    const keep_ctx *k = ud;
    return bsearch(&f->number, k->src->nums, k->src->n_ssts, sizeof *k->src->nums, cmp_u64) &&
           marble__scan_file_in_bounds(k->b, f);
}

static int open_fast(source *src, cursor *c, marble_error *err)
{
    const fast_morsel *m = &src->fm[c->i];
    c->sst = src->ssts[m->file];
    c->batch = m->batch;
    const uint8_t *sm, *lg;
    size_t sl, ll;
    int64_t rows;
    marble__sst_batch_range(c->sst, c->batch, &sm, &sl, &lg, &ll, &rows);
    int trim_lo = marble__scan_before_lower(&src->b, sm, sl);
    int trim_hi = marble__scan_past_upper(&src->b, lg, ll);
    c->row = 0;
    c->end = rows;
    if (!trim_lo && !trim_hi) return MARBLE_OK; /* the whole batch: next_fast reads it */
    struct ArrowArray b;
    MARBLE_RETURN_NOT_OK(marble__sst_read_batch(c->sst, c->batch, &b, err));
    c->end = b.length;
    int rc = MARBLE_OK;
    {
        marble__bytes scratch = {0};
        /* binary searches over monotone tests: rows before lower come first, rows past upper
         * last */
        int64_t lo = 0, hi = b.length;
        struct ArrowArray view = b;
        view.n_children = src->t->codec.ncols;
        while (rc == MARBLE_OK && trim_lo && lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            scratch.len = 0;
            rc = marble__key_encode_row(&src->t->codec.keys, &view, mid, &scratch, err);
            if (rc == MARBLE_OK && marble__scan_before_lower(&src->b, scratch.data, scratch.len))
                lo = mid + 1;
            else
                hi = mid;
        }
        c->row = lo;
        lo = c->row;
        hi = b.length;
        while (rc == MARBLE_OK && trim_hi && lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            scratch.len = 0;
            rc = marble__key_encode_row(&src->t->codec.keys, &view, mid, &scratch, err);
            if (rc == MARBLE_OK && marble__scan_past_upper(&src->b, scratch.data, scratch.len))
                hi = mid;
            else
                lo = mid + 1;
        }
        if (trim_hi) c->end = lo;
        marble__bytes_free(&scratch);
    }
    marble_arrow_array_release(&b);
    return rc;
}

static int next_fast(source *src, cursor *c, struct ArrowArray *out, marble_error *err)
{
    if (c->row >= c->end) return MARBLE_ERR_NOT_FOUND;
    struct ArrowArray b;
    MARBLE_RETURN_NOT_OK(marble__sst_read_batch(c->sst, c->batch, &b, err));
    int64_t n = c->end - c->row;
    if (n > src->batch_rows) n = src->batch_rows;
    MARBLE_RETURN_NOT_OK(marble__db_slice(&b, src->proj, src->nproj, c->row, n, out, err));
    c->row += n;
    if (src->counters) count(&src->counters->rows_scanned, n);
    return MARBLE_OK;
}

static int bytes_copy(marble__bytes *dst, const marble__bytes *s, marble_error *err)
{
    dst->len = 0;
    return marble__bytes_append(dst, s->data, s->len, err);
}

static int open_merge(source *src, cursor *c, marble_error *err)
{
    int64_t i = c->i, last = (int64_t)src->n_splits;
    marble__scan_bounds *b = &c->b;
    int rc = MARBLE_OK;
    if (i == 0) {
        b->has_lower = src->b.has_lower;
        b->skip_lower = src->b.skip_lower;
        if (b->has_lower) rc = bytes_copy(&b->lower, &src->b.lower, err);
    } else {
        b->has_lower = 1;
        rc = bytes_copy(&b->lower, &src->splits[i - 1], err);
    }
    if (rc == MARBLE_OK && i == last) {
        b->has_upper = src->b.has_upper;
        b->upper_gt = src->b.upper_gt;
        if (b->has_upper) rc = bytes_copy(&b->upper, &src->b.upper, err);
    } else if (rc == MARBLE_OK) {
        b->has_upper = 1;
        rc = bytes_copy(&b->upper, &src->splits[i], err);
    }
    if (rc != MARBLE_OK) return rc;
    keep_ctx k = {src, b};
    marble__iter *internal = NULL;
    MARBLE_RETURN_NOT_OK(
        marble__db_table_iter_files(src->db, src->t, &src->rv, keep_file, &k, &internal, err));
    MARBLE_RETURN_NOT_OK(marble__iter_visible(internal, src->rv.seq, &c->it, err));
    if (b->has_lower)
        marble__iter_seek(c->it, b->lower.data, b->lower.len);
    else
        marble__iter_seek_to_first(c->it);
    return marble__assembler_create(&src->t->codec, src->proj, src->nproj, 0, &c->as, err);
}

static int next_merge(source *src, cursor *c, struct ArrowArray *out, marble_error *err)
{
    if (!c->done)
        MARBLE_RETURN_NOT_OK(
            marble__scan_fill(c->it, &c->b, c->as, src->batch_rows, &c->done, err));
    int64_t n = marble__assembler_rows(c->as);
    if (n == 0) return MARBLE_ERR_NOT_FOUND;
    MARBLE_RETURN_NOT_OK(marble__assembler_finish(c->as, out, err));
    if (src->counters) count(&src->counters->rows_scanned, n);
    return MARBLE_OK;
}

static void src_close(void *ud, void *cur)
{
    (void)ud;
    cursor *c = cur;
    if (!c) return;
    marble__iter_destroy(c->it);
    marble__assembler_destroy(c->as);
    marble__scan_bounds_free(&c->b);
    free(c);
}

static int src_open(void *ud, int64_t i, void **out, marble_error *err)
{
    source *src = ud;
    *out = NULL;
    if (i < 0 || i >= src->n_morsels)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "table '%s': morsel %lld of %lld",
                                src->t->name, (long long)i, (long long)src->n_morsels);
    cursor *c = calloc(1, sizeof *c);
    if (!c) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    c->i = i;
    int rc = src->fast ? open_fast(src, c, err) : open_merge(src, c, err);
    if (rc != MARBLE_OK) {
        src_close(src, c);
        return rc;
    }
    *out = c;
    return MARBLE_OK;
}

static int src_next(void *ud, void *cur, struct ArrowArray *out, marble_error *err)
{
    source *src = ud;
    int rc = src->fast ? next_fast(src, cur, out, err) : next_merge(src, cur, out, err);
    if (rc == MARBLE_ERR_NOT_FOUND) {
        memset(out, 0, sizeof *out);
        return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "end of morsel");
    }
    return rc;
}

static void src_free(source *src)
{
    for (size_t i = 0; i < src->n_ssts; i++)
        marble__sst_unref(src->ssts[i]);
    free(src->ssts);
    free(src->nums);
    free(src->fm);
    for (size_t i = 0; i < src->n_splits; i++)
        marble__bytes_free(&src->splits[i]);
    free(src->splits);
    marble__scan_bounds_free(&src->b);
    if (src->schema.release) src->schema.release(&src->schema);
    marble__db_readview_release(&src->rv);
    marble__table_unref(src->t);
    free(src);
}

static void src_release(void *ud)
{
    source *src = ud;
    if (!src) return;
    marble_db *db = src->db;
    marble__db_res_remove(db, &src->res);
    src_free(src);
    atomic_fetch_sub_explicit(&db->live_streams, 1, memory_order_relaxed);
}

/* ---- creation -------------------------------------------------------------------------------- */

int marble_db_scan_source(marble_db *db, const char *table, const marble_scan_spec *spec,
                          marble_source *out, marble_error *err)
{
    if (!db || !table || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db, table or out is NULL");
    memset(out, 0, sizeof *out);
    marble_scan_spec none;
    memset(&none, 0, sizeof none);
    if (!spec) spec = &none;
    if (spec->snapshot && spec->snapshot->db != db)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "the snapshot belongs to another database");
    if (spec->batch_rows < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "batch_rows is negative");
    if (spec->n_preds && !spec->preds)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%zu scan predicates but preds is NULL", spec->n_preds);
    marble__table *t = marble__db_find_table(db, table);
    if (!t || t->id == MARBLE__KV_TABLE_ID) {
        marble__table_unref(t);
        return marble__db_table_error(table, err);
    }
    source *src = calloc(1, sizeof *src);
    pred *preds = spec->n_preds ? calloc(spec->n_preds, sizeof *preds) : NULL;
    marble__bytes bkey = {0};
    marble__assembler *as = NULL;
    if (!src || (spec->n_preds && !preds)) {
        free(src);
        free(preds);
        marble__table_unref(t);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    src->db = db;
    src->t = t;
    src->counters = spec->counters;
    int nproj,
        rc = marble__db_projection(t, spec->columns, spec->n_columns, src->proj, &nproj, err);
    if (rc == MARBLE_OK) {
        src->nproj = nproj < 0 ? t->codec.ncols : nproj;
        for (int j = 0; nproj < 0 && j < src->nproj; j++)
            src->proj[j] = j;
        rc = check_preds(t, spec, preds, err);
    }
    if (rc == MARBLE_OK) rc = marble__scan_bounds_init(t, spec->range, &src->b, err);
    if (rc == MARBLE_OK)
        rc = marble__assembler_create(&t->codec, src->proj, src->nproj, 0, &as, err);
    if (rc == MARBLE_OK) rc = marble__assembler_schema(as, &src->schema, err);
    plan pl;
    memset(&pl, 0, sizeof pl);
    pl.preds = preds;
    pl.n_preds = spec->n_preds;
    int have_bkey = 0;
    if (rc == MARBLE_OK) rc = bloom_key(t, preds, spec->n_preds, &bkey, &have_bkey, err);
    if (have_bkey) {
        pl.bkey = bkey.data;
        pl.bklen = bkey.len;
    }
    if (rc == MARBLE_OK) {
        marble__db_readview_acquire(db, spec->snapshot, &src->rv);
        const marble__version *v = src->rv.version;
        for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
            for (size_t i = 0; i < marble__version_num_files(v, l); i++)
                pl.files_total += marble__file_of_table(marble__version_file(v, l, i), t->id);
        if (src->b.empty) {
            src->fast = 1;
            pl.files_skipped = pl.files_total;
        } else if (marble__scan_fast_path) {
            rc = marble__db_clean_run(db, t, &src->rv, &src->b, &src->ssts, &src->n_ssts,
                                      &src->fast, err);
            if (rc == MARBLE_OK && !src->fast) {
                for (size_t i = 0; i < src->n_ssts; i++)
                    marble__sst_unref(src->ssts[i]);
                free(src->ssts);
                src->ssts = NULL;
                src->n_ssts = 0;
            }
        }
    }
    if (rc == MARBLE_OK && src->fast) {
        src->batch_rows = spec->batch_rows ? spec->batch_rows : INT64_MAX;
        if (!src->b.empty) rc = plan_fast(src, &pl, err);
    } else if (rc == MARBLE_OK) {
        src->batch_rows = spec->batch_rows ? spec->batch_rows : DEFAULT_BATCH_ROWS;
        pl.files_total = 0;
        rc = plan_merge(src, &pl, err);
    }
    marble__assembler_destroy(as);
    marble__bytes_free(&bkey);
    free(preds);
    if (rc != MARBLE_OK) {
        src_free(src);
        return rc;
    }
    if (src->counters) {
        count(&src->counters->files_total, pl.files_total);
        count(&src->counters->files_skipped, pl.files_skipped);
        count(&src->counters->bloom_skipped, pl.bloom_skipped);
        count(&src->counters->batches_total, pl.batches_total);
        count(&src->counters->batches_skipped, pl.batches_skipped);
    }
    atomic_fetch_add_explicit(&db->live_streams, 1, memory_order_relaxed);
    marble__db_res_add(db, &src->res, "scan source of table '%s'", src->t->name);
    atomic_fetch_add_explicit(&db->st_scans, 1, memory_order_relaxed);
    out->ud = src;
    out->n_morsels = src->n_morsels;
    out->get_schema = src_schema;
    out->open = src_open;
    out->next = src_next;
    out->close = src_close;
    out->release = src_release;
    return MARBLE_OK;
}

marble_sched *marble_db_sched(marble_db *db)
{
    return db ? db->sched : NULL;
}

marble_mem_budget *marble_db_memory_budget(marble_db *db)
{
    return db ? db->budget : NULL;
}
