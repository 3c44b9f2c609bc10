/*
 * The state store's reads (include/marble/db.h): point gets through memtables and levels,
 * range and prefix scans as ArrowArrayStreams over a merged, version-collapsed iterator, and
 * the key-value API's gets and iterators.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/db_internal.h"

static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

int marble__db_encode_key(const marble__table *t, marble_key key, int need_full, marble__bytes *out,
                          marble_error *err)
{
    if (key.n > (size_t)t->nkeys || (need_full && key.n != (size_t)t->nkeys))
        return marble_error_set(
            err, MARBLE_ERR_INVALID_ARGUMENT,
            "table '%s': the key has %zu value(s), the primary key %d column(s)", t->name, key.n,
            t->nkeys);
    if (key.n && !key.values)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "table '%s': key values are NULL",
                                t->name);
    marble__key_value vals[MARBLE__KEY_MAX_COLS];
    for (size_t i = 0; i < key.n; i++) {
        const marble_value *v = &key.values[i];
        memset(&vals[i], 0, sizeof vals[i]);
        switch (v->kind) {
        case MARBLE_VALUE_INT:
            vals[i].kind = MARBLE__KV_INT;
            vals[i].i = v->i;
            break;
        case MARBLE_VALUE_UINT:
            vals[i].kind = MARBLE__KV_UINT;
            vals[i].u = v->u;
            break;
        case MARBLE_VALUE_DOUBLE:
            vals[i].kind = MARBLE__KV_DOUBLE;
            vals[i].d = v->d;
            break;
        case MARBLE_VALUE_BYTES:
            if (!v->bytes && v->len)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "table '%s': key value %zu has NULL bytes", t->name, i);
            vals[i].kind = MARBLE__KV_BYTES;
            vals[i].bytes = v->bytes;
            vals[i].len = v->len;
            break;
        default:
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "table '%s': key value %zu has an unknown kind %d", t->name, i,
                                    (int)v->kind);
        }
    }
    uint8_t pre[MARBLE__PREFIX_LEN];
    marble__prefix_put(pre, t->id);
    size_t len0 = out->len;
    MARBLE_RETURN_NOT_OK(marble__bytes_append(out, pre, sizeof pre, err));
    if (key.n == 0) return MARBLE_OK;
    int rc = marble__key_encode_values(&t->codec.keys, vals, (int)key.n, out, err);
    if (rc != MARBLE_OK) out->len = len0;
    return rc;
}

/* Newest first, as the manifest orders L0 (largest_seq, then number): a file's number is not
 * its age (index rebuilds and ingests write newer numbers for older data). */
static int cmp_newest_first(const void *a, const void *b)
{
    const marble__file_meta *x = *(const marble__file_meta *const *)a;
    const marble__file_meta *y = *(const marble__file_meta *const *)b;
    if (x->largest_seq != y->largest_seq) return x->largest_seq < y->largest_seq ? 1 : -1;
    return x->number < y->number ? 1 : x->number > y->number ? -1 : 0;
}

/* The newest visible version of key (with table prefix) in rv: MARBLE_OK with *op and the row
 * value in *val, MARBLE_ERR_NOT_FOUND, or an error. */
static int lookup(marble_db *db, const marble__table *t, const marble__readview *rv,
                  const uint8_t *key, size_t klen, int *op, marble__bytes *val, marble_error *err)
{
    for (size_t i = 0; i < rv->n_mems; i++) {
        marble__memtable_op mop;
        const void *v;
        size_t vlen;
        if (marble__memtable_get(rv->mems[i]->mt, key, klen, rv->seq, &mop, &v, &vlen, NULL) ==
            MARBLE_OK) {
            *op = mop == MARBLE__MEMTABLE_PUT;
            val->len = 0;
            return marble__bytes_append(val, v, vlen, err);
        }
    }
    const marble__version *v = rv->version;
    const uint8_t *ukey = key + MARBLE__PREFIX_LEN;
    size_t uklen = klen - MARBLE__PREFIX_LEN;
    /* L0: every file whose range holds the key, newest first */
    size_t n0 = marble__version_num_files(v, 0);
    const marble__file_meta *stack[64];
    const marble__file_meta **l0 = n0 <= 64 ? stack : malloc(n0 * sizeof *l0);
    if (!l0) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n0; i++) {
        const marble__file_meta *f = marble__version_file(v, 0, i);
        if (key_cmp(key, klen, f->smallest, f->smallest_len) >= 0 &&
            key_cmp(key, klen, f->largest, f->largest_len) <= 0)
            l0[m++] = f;
    }
    qsort(l0, m, sizeof *l0, cmp_newest_first);
    int rc = MARBLE_ERR_NOT_FOUND;
    for (size_t i = 0; i < m && rc == MARBLE_ERR_NOT_FOUND; i++) {
        marble__sst *s;
        rc = marble__db_open_sst(db, l0[i]->number, t, &s, err);
        if (rc != MARBLE_OK) break;
        uint64_t seq;
        rc = marble__sst_get(s, ukey, uklen, rv->seq, &seq, op, val, err);
        marble__sst_unref(s);
    }
    if (l0 != stack) free(l0);
    if (rc != MARBLE_ERR_NOT_FOUND) return rc;
    for (int l = 1; l < MARBLE__NUM_LEVELS; l++) {
        size_t n = marble__version_num_files(v, l);
        size_t lo = 0, hi = n;
        while (lo < hi) { /* first file whose largest >= key */
            size_t mid = lo + (hi - lo) / 2;
            const marble__file_meta *f = marble__version_file(v, l, mid);
            if (key_cmp(f->largest, f->largest_len, key, klen) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == n) continue;
        const marble__file_meta *f = marble__version_file(v, l, lo);
        if (key_cmp(key, klen, f->smallest, f->smallest_len) < 0) continue;
        marble__sst *s;
        rc = marble__db_open_sst(db, f->number, t, &s, err);
        if (rc != MARBLE_OK) return rc;
        uint64_t seq;
        rc = marble__sst_get(s, ukey, uklen, rv->seq, &seq, op, val, err);
        marble__sst_unref(s);
        if (rc != MARBLE_ERR_NOT_FOUND) return rc;
    }
    return MARBLE_ERR_NOT_FOUND;
}

static int resolve_projection(const marble__table *t, const marble_read_options *ro, int *proj,
                              int *nproj, marble_error *err)
{
    return marble__db_projection(t, ro ? ro->columns : NULL, ro ? ro->n_columns : 0, proj, nproj,
                                 err);
}

int marble__db_projection(const marble__table *t, const char *const *columns, size_t n_columns,
                          int *proj, int *nproj, marble_error *err)
{
    if (!columns) {
        *nproj = -1;
        return MARBLE_OK;
    }
    if (n_columns == 0 || n_columns > MARBLE__MAX_COLUMNS)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "table '%s': projection of %zu columns", t->name, n_columns);
    for (size_t i = 0; i < n_columns; i++) {
        proj[i] = -1;
        for (int c = 0; columns[i] && c < t->codec.ncols; c++)
            if (strcmp(t->codec.schema.children[c]->name, columns[i]) == 0) proj[i] = c;
        if (proj[i] < 0)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "table '%s' has no column '%s'", t->name,
                                    columns[i] ? columns[i] : "(NULL)");
    }
    *nproj = (int)n_columns;
    return MARBLE_OK;
}

static int check_snapshot(marble_db *db, const marble_read_options *ro, marble_error *err)
{
    if (ro && ro->snapshot && ro->snapshot->db != db)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "the snapshot belongs to another database");
    return MARBLE_OK;
}

int marble_db_get(marble_db *db, const char *table, marble_key key, const marble_read_options *ro,
                  struct ArrowSchema *schema, struct ArrowArray *row, marble_error *err)
{
    if (!db || !table || !schema || !row)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "db, table, schema or row is NULL");
    MARBLE_RETURN_NOT_OK(check_snapshot(db, ro, err));
    marble__table *t = marble__db_find_table(db, table);
    if (!t || t->id == MARBLE__KV_TABLE_ID) {
        marble__table_unref(t);
        return marble__db_table_error(table, err);
    }
    int proj[MARBLE__MAX_COLUMNS], nproj;
    marble__bytes k = {0}, val = {0};
    marble__assembler *as = NULL;
    marble__readview rv = {0};
    int rc = resolve_projection(t, ro, proj, &nproj, err);
    if (rc == MARBLE_OK) rc = marble__db_encode_key(t, key, 1, &k, err);
    if (rc != MARBLE_OK) goto done;
    atomic_fetch_add_explicit(&db->st_gets, 1, memory_order_relaxed);
    marble__db_readview_acquire(db, ro ? ro->snapshot : NULL, &rv);
    int op = 0;
    rc = lookup(db, t, &rv, k.data, k.len, &op, &val, err);
    if (rc == MARBLE_OK && !op) rc = MARBLE_ERR_NOT_FOUND;
    if (rc == MARBLE_ERR_NOT_FOUND) {
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "table '%s': no row with that key",
                              t->name);
        goto done;
    }
    if (rc != MARBLE_OK) goto done;
    rc = marble__assembler_create(&t->codec, nproj < 0 ? NULL : proj, nproj, 0, &as, err);
    if (rc == MARBLE_OK)
        rc = marble__assembler_add(as, k.data + MARBLE__PREFIX_LEN, k.len - MARBLE__PREFIX_LEN, 0,
                                   1, val.data, val.len, err);
    if (rc == MARBLE_OK) rc = marble__assembler_schema(as, schema, err);
    if (rc == MARBLE_OK) {
        rc = marble__assembler_finish(as, row, err);
        if (rc != MARBLE_OK) marble_arrow_schema_release(schema);
    }
done:
    marble__assembler_destroy(as);
    marble__db_readview_release(&rv);
    marble__bytes_free(&k);
    marble__bytes_free(&val);
    marble__table_unref(t);
    return rc;
}

/* The value bytes of a KV row value (one nullable binary column). */
static int kv_value(const uint8_t *v, size_t vlen, const uint8_t **data, size_t *len)
{
    if (vlen < 1 || !(v[0] & 1)) {
        *data = NULL;
        *len = 0;
        return vlen == 1 ? MARBLE_OK : MARBLE_ERR_CORRUPTION;
    }
    const uint8_t *p = v + 1, *end = v + vlen;
    uint64_t n = 0;
    int shift = 0;
    for (;;) {
        if (p >= end || shift > 63) return MARBLE_ERR_CORRUPTION;
        uint8_t c = *p++;
        n |= (uint64_t)(c & 0x7f) << shift;
        shift += 7;
        if (!(c & 0x80)) break;
    }
    if (n != (uint64_t)(end - p)) return MARBLE_ERR_CORRUPTION;
    *data = p;
    *len = (size_t)n;
    return MARBLE_OK;
}

static int kv_key_encode(const void *key, size_t klen, int with_prefix, marble__bytes *out,
                         marble_error *err)
{
    if (!key && klen) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "key is NULL");
    out->len = 0;
    MARBLE_RETURN_NOT_OK(marble__bytes_reserve(out, 2 * klen + 8, err));
    size_t n = 0;
    if (with_prefix) {
        marble__prefix_put(out->data, MARBLE__KV_TABLE_ID);
        n = MARBLE__PREFIX_LEN;
    }
    out->data[n++] = MARBLE__KEY_VALUE;
    const uint8_t *s = key;
    for (size_t i = 0; i < klen; i++) {
        out->data[n++] = s[i];
        if (s[i] == 0) out->data[n++] = 0xFF;
    }
    out->data[n++] = 0;
    out->data[n++] = 0;
    out->len = n;
    return MARBLE_OK;
}

int marble_db_kv_get(marble_db *db, const marble_read_options *ro, const void *key, size_t klen,
                     void **value, size_t *vlen, marble_error *err)
{
    if (!db || !value || !vlen)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db, value or vlen is NULL");
    MARBLE_RETURN_NOT_OK(check_snapshot(db, ro, err));
    /* per-thread scratch: a get allocates only its result once warm */
    marble__scratch *sc = marble__scratch_get();
    if (!sc) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    marble__bytes *kp = &sc->b[MARBLE__SCRATCH_GKEY], *vp = &sc->b[MARBLE__SCRATCH_GVAL];
    int rc = kv_key_encode(key, klen, 1, kp, err);
    if (rc != MARBLE_OK) return rc;
    marble__readview rv = {0};
    atomic_fetch_add_explicit(&db->st_gets, 1, memory_order_relaxed);
    marble__db_readview_acquire(db, ro ? ro->snapshot : NULL, &rv);
    int op = 0;
    rc = lookup(db, db->kv, &rv, kp->data, kp->len, &op, vp, err);
    marble__db_readview_release(&rv);
    if (rc == MARBLE_OK && !op) rc = MARBLE_ERR_NOT_FOUND;
    if (rc == MARBLE_ERR_NOT_FOUND) {
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "key not found");
    } else if (rc == MARBLE_OK) {
        const uint8_t *d;
        size_t n;
        if (kv_value(vp->data, vp->len, &d, &n) != MARBLE_OK) {
            rc = marble_error_set(err, MARBLE_ERR_CORRUPTION, "%s: corruption: bad key-value row",
                                  db->uri);
        } else {
            *value = malloc(n ? n : 1);
            if (!*value) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
            } else {
                if (n) memcpy(*value, d, n);
                *vlen = n;
            }
        }
    }
    marble__scratch_trim(kp, (size_t)1 << 20);
    marble__scratch_trim(vp, (size_t)1 << 20);
    return rc;
}

/* ---- iterators over a table -------------------------------------------------------------------
 */

typedef struct iter_list {
    marble__iter **v;
    size_t n, cap;
} iter_list;

static int iter_list_add(iter_list *l, marble__iter *it, marble_error *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        marble__iter **p = realloc(l->v, cap * sizeof *p);
        if (!p) {
            marble__iter_destroy(it);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        }
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = it;
    return MARBLE_OK;
}

int marble__db_table_iter(marble_db *db, const marble__table *t, const marble__readview *rv,
                          marble__iter **out, marble_error *err)
{
    return marble__db_table_iter_files(db, t, rv, NULL, NULL, out, err);
}

int marble__db_table_iter_files(marble_db *db, const marble__table *t, const marble__readview *rv,
                                int (*keep)(void *ud, const marble__file_meta *f), void *ud,
                                marble__iter **out, marble_error *err)
{
    iter_list l = {0};
    uint8_t pre[MARBLE__PREFIX_LEN];
    marble__prefix_put(pre, t->id);
    int rc = MARBLE_OK;
    for (size_t i = 0; rc == MARBLE_OK && i < rv->n_mems; i++) {
        marble__iter *it = NULL;
        rc = marble__iter_memtable(rv->mems[i]->mt, pre, sizeof pre, &it, err);
        if (rc == MARBLE_OK) rc = iter_list_add(&l, it, err);
    }
    const marble__version *v = rv->version;
    for (size_t i = 0; rc == MARBLE_OK && i < marble__version_num_files(v, 0); i++) {
        const marble__file_meta *f = marble__version_file(v, 0, i);
        if (!marble__file_of_table(f, t->id) || (keep && !keep(ud, f))) continue;
        marble__sst *s = NULL;
        marble__iter *it = NULL;
        rc = marble__db_open_sst(db, f->number, t, &s, err);
        if (rc == MARBLE_OK) rc = marble__iter_sst(s, &it, err);
        marble__sst_unref(s);
        if (rc == MARBLE_OK) rc = iter_list_add(&l, it, err);
    }
    for (int lv = 1; rc == MARBLE_OK && lv < MARBLE__NUM_LEVELS; lv++) {
        size_t n = marble__version_num_files(v, lv);
        marble__sst **run = n ? calloc(n, sizeof *run) : NULL;
        size_t m = 0;
        if (n && !run) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        for (size_t i = 0; rc == MARBLE_OK && i < n; i++) {
            const marble__file_meta *f = marble__version_file(v, lv, i);
            if (!marble__file_of_table(f, t->id) || (keep && !keep(ud, f))) continue;
            rc = marble__db_open_sst(db, f->number, t, &run[m], err);
            if (rc == MARBLE_OK) m++;
        }
        if (rc == MARBLE_OK && m) {
            marble__iter *it = NULL;
            rc = marble__iter_run(run, m, &it, err);
            if (rc == MARBLE_OK) rc = iter_list_add(&l, it, err);
        }
        for (size_t i = 0; i < m; i++)
            marble__sst_unref(run[i]);
        free(run);
    }
    if (rc != MARBLE_OK) {
        for (size_t i = 0; i < l.n; i++)
            marble__iter_destroy(l.v[i]);
        free(l.v);
        return rc;
    }
    rc = marble__iter_merge(l.v, l.n, out, err);
    free(l.v);
    return rc;
}

/* ---- scans ------------------------------------------------------------------------------------
 */

typedef struct scan_state {
    marble_db *db;
    marble__res res;
    marble__table *t;
    marble__readview rv;
    marble__iter *it;
    marble__assembler *as;
    marble__scan_bounds b;
    int64_t batch_rows;
    int done;
    char error[MARBLE_ERROR_MESSAGE_SIZE];
    /* the zero-copy path over one sorted run of clean SSTables (see fast_open) */
    int fast;
    marble__sst **run;
    size_t n_run, file;
    int64_t batch, row;
    int proj[MARBLE__MAX_COLUMNS];
    int nproj;
    marble__bytes scratch;
} scan_state;

static void scan_release(struct ArrowArrayStream *st)
{
    scan_state *s = st->private_data;
    if (s) {
        marble__iter_destroy(s->it);
        marble__assembler_destroy(s->as);
        marble__db_readview_release(&s->rv);
        marble__scan_bounds_free(&s->b);
        marble__bytes_free(&s->scratch);
        for (size_t i = 0; i < s->n_run; i++)
            marble__sst_unref(s->run[i]);
        free(s->run);
        marble__table_unref(s->t);
        atomic_fetch_sub_explicit(&s->db->live_streams, 1, memory_order_relaxed);
        marble__db_res_remove(s->db, &s->res);
        free(s);
    }
    st->private_data = NULL;
    st->release = NULL;
}

static int scan_get_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    scan_state *s = st->private_data;
    marble_error e = {0};
    int rc = marble__assembler_schema(s->as, out, &e);
    if (rc != MARBLE_OK) {
        snprintf(s->error, sizeof s->error, "%s", e.message);
        return marble_error_to_errno(rc);
    }
    return 0;
}

static const char *scan_last_error(struct ArrowArrayStream *st)
{
    scan_state *s = st->private_data;
    return s && s->error[0] ? s->error : NULL;
}

int marble__scan_fast_path = 1;

/* ---- the zero-copy scan path ------------------------------------------------------------------
 * When the table's rows all live in one sorted run of SSTables (one level, no memtable entries,
 * no L0 files) whose files are clean (no deletes, one version per key) and older than the
 * snapshot, the visible rows are exactly the files' rows: the scan hands out slices of the
 * mapped record batches, projected, with no copy. */

typedef struct slice {
    atomic_int refs; /* the parent and each child not yet released */
    struct ArrowArray src;
    int64_t n;
    struct ArrowArray *kids;
    struct ArrowArray **kid_ptrs;
} slice;

static void slice_unref(slice *v)
{
    /* acq_rel: the last release frees what the other holders read */
    if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1) return;
    marble_arrow_array_release(&v->src);
    free(v->kids);
    free(v->kid_ptrs);
    free(v);
}

static void slice_child_release(struct ArrowArray *a)
{
    slice *v = a->private_data;
    a->release = NULL;
    slice_unref(v);
}

static void slice_release(struct ArrowArray *a)
{
    slice *v = a->private_data;
    for (int64_t i = 0; i < v->n; i++)
        if (v->kid_ptrs[i]->release) v->kid_ptrs[i]->release(v->kid_ptrs[i]);
    a->release = NULL;
    slice_unref(v);
}

int marble__db_slice(struct ArrowArray *src, const int *proj, int nproj, int64_t start, int64_t n,
                     struct ArrowArray *out, marble_error *err)
{
    slice *v = calloc(1, sizeof *v);
    if (v) {
        v->kids = calloc((size_t)nproj, sizeof *v->kids);
        v->kid_ptrs = calloc((size_t)nproj, sizeof *v->kid_ptrs);
    }
    if (!v || !v->kids || !v->kid_ptrs) {
        if (v) {
            free(v->kids);
            free(v->kid_ptrs);
        }
        free(v);
        marble_arrow_array_release(src);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    marble_arrow_array_move(src, &v->src);
    v->n = nproj;
    atomic_init(&v->refs, nproj + 1);
    for (int j = 0; j < nproj; j++) {
        const struct ArrowArray *c = v->src.children[proj[j]];
        struct ArrowArray *k = &v->kids[j];
        *k = *c;
        k->offset = c->offset + v->src.offset + start;
        k->length = n;
        k->null_count = c->null_count == 0 ? 0 : -1;
        k->n_children = 0;
        k->children = NULL;
        k->dictionary = NULL;
        k->release = slice_child_release;
        k->private_data = v;
        v->kid_ptrs[j] = k;
    }
    memset(out, 0, sizeof *out);
    out->length = n;
    out->null_count = 0;
    out->offset = 0;
    out->n_buffers = 1;
    static const void *no_validity[1] = {NULL};
    out->buffers = no_validity;
    out->n_children = nproj;
    out->children = v->kid_ptrs;
    out->release = slice_release;
    out->private_data = v;
    return MARBLE_OK;
}

/* The encoded key of row r of an SSTable batch (table columns first) into s->scratch. */
static int batch_key(scan_state *s, const struct ArrowArray *b, int64_t r, marble_error *err)
{
    struct ArrowArray view = *b;
    view.n_children = s->t->codec.ncols;
    s->scratch.len = 0;
    return marble__key_encode_row(&s->t->codec.keys, &view, r, &s->scratch, err);
}

int marble__scan_past_upper(const marble__scan_bounds *b, const uint8_t *k, size_t klen)
{
    if (!b->has_upper) return 0;
    int c = key_cmp(k, klen, b->upper.data, b->upper.len);
    return b->upper_gt ? c > 0 : c >= 0;
}

int marble__scan_before_lower(const marble__scan_bounds *b, const uint8_t *k, size_t klen)
{
    if (!b->has_lower) return 0;
    int c = key_cmp(k, klen, b->lower.data, b->lower.len);
    return b->skip_lower ? c <= 0 : c < 0;
}

/* 1 if encoded key k (with table prefix, as in the manifest) is of the table whose prefix is
 * pre and the bare key after it is not past b's upper bound (b NULL: any key). */
static int in_bounds_prefixed(const marble__scan_bounds *b, const uint8_t *pre, const uint8_t *k,
                              size_t kl)
{
    if (kl < MARBLE__PREFIX_LEN || memcmp(k, pre, MARBLE__PREFIX_LEN) != 0) return 0;
    return !b || !marble__scan_past_upper(b, k + MARBLE__PREFIX_LEN, kl - MARBLE__PREFIX_LEN);
}

int marble__db_clean_run(marble_db *db, const marble__table *t, const marble__readview *rv,
                         const marble__scan_bounds *b, marble__sst ***run, size_t *n_run,
                         int *clean, marble_error *err)
{
    *clean = 0;
    *run = NULL;
    *n_run = 0;
    uint8_t pre[MARBLE__PREFIX_LEN];
    marble__prefix_put(pre, t->id);
    marble__bytes seek = {0};
    int rc = marble__bytes_append(&seek, pre, sizeof pre, err);
    if (rc == MARBLE_OK && b && b->has_lower)
        rc = marble__bytes_append(&seek, b->lower.data, b->lower.len, err);
    if (rc != MARBLE_OK) {
        marble__bytes_free(&seek);
        return rc;
    }
    for (size_t i = 0; i < rv->n_mems; i++) {
        marble__memtable_iter mi;
        marble__memtable_iter_init(&mi, rv->mems[i]->mt);
        marble__memtable_iter_seek(&mi, seek.data, seek.len);
        if (marble__memtable_iter_valid(&mi)) {
            size_t kl;
            const uint8_t *k = marble__memtable_iter_key(&mi, &kl);
            if (in_bounds_prefixed(b, pre, k, kl)) {
                marble__bytes_free(&seek);
                return MARBLE_OK;
            }
        }
    }
    marble__bytes_free(&seek);
    const marble__version *v = rv->version;
    int level = -1;
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < marble__version_num_files(v, l); i++) {
            const marble__file_meta *f = marble__version_file(v, l, i);
            if (marble__file_of_table(f, t->id) && (!b || marble__scan_file_in_bounds(b, f))) {
                if (l == 0 || (level >= 0 && level != l)) return MARBLE_OK;
                level = l;
            }
        }
    if (level < 0) return MARBLE_OK;
    size_t n = marble__version_num_files(v, level);
    *run = calloc(n, sizeof **run);
    if (!*run) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const marble__file_meta *f = marble__version_file(v, level, i);
        if (!marble__file_of_table(f, t->id) || (b && !marble__scan_file_in_bounds(b, f))) continue;
        marble__sst *sst;
        MARBLE_RETURN_NOT_OK(marble__db_open_sst(db, f->number, t, &sst, err));
        (*run)[(*n_run)++] = sst;
        if (!marble__sst_is_clean(sst) || marble__sst_max_seq(sst) > rv->seq) return MARBLE_OK;
    }
    *clean = 1;
    return MARBLE_OK;
}

int marble__scan_file_in_bounds(const marble__scan_bounds *b, const marble__file_meta *f)
{
    if (b->empty) return 0;
    if (f->smallest_len < MARBLE__PREFIX_LEN || f->largest_len < MARBLE__PREFIX_LEN) return 1;
    return !marble__scan_before_lower(b, f->largest + MARBLE__PREFIX_LEN,
                                      f->largest_len - MARBLE__PREFIX_LEN) &&
           !marble__scan_past_upper(b, f->smallest + MARBLE__PREFIX_LEN,
                                    f->smallest_len - MARBLE__PREFIX_LEN);
}

int marble__db_visible_iter(marble_db *db, const marble__table *t, const marble__readview *rv,
                            marble__iter **out, marble_error *err)
{
    marble__sst **run;
    size_t n;
    int clean;
    int rc = marble__scan_fast_path ? marble__db_clean_run(db, t, rv, NULL, &run, &n, &clean, err)
                                    : (run = NULL, n = 0, clean = 0, MARBLE_OK);
    if (rc == MARBLE_OK && clean) rc = marble__iter_run(run, n, out, err);
    for (size_t i = 0; i < n; i++)
        marble__sst_unref(run[i]);
    free(run);
    if (rc != MARBLE_OK || clean) return rc;
    marble__iter *internal = NULL;
    rc = marble__db_table_iter(db, t, rv, &internal, err);
    if (rc == MARBLE_OK) rc = marble__iter_visible(internal, rv->seq, out, err);
    return rc;
}

/* Sets up the fast path when it applies (s->fast = 1) and positions it at `lower`. */
static int fast_open(marble_db *db, scan_state *s, const marble__bytes *lower, int seek_lower,
                     marble_error *err)
{
    int clean = 0;
    MARBLE_RETURN_NOT_OK(
        marble__db_clean_run(db, s->t, &s->rv, NULL, &s->run, &s->n_run, &clean, err));
    if (!clean) return MARBLE_OK;
    s->fast = 1;
    s->file = 0;
    s->batch = 0;
    s->row = 0;
    if (!seek_lower) return MARBLE_OK;
    /* the first file, batch and row with key >= lower */
    for (; s->file < s->n_run; s->file++) {
        marble__sst *sst = s->run[s->file];
        int64_t nb = marble__sst_num_batches(sst), lo = 0, hi = nb;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            const uint8_t *sm, *lg;
            size_t sl, ll;
            int64_t rows;
            marble__sst_batch_range(sst, mid, &sm, &sl, &lg, &ll, &rows);
            if (key_cmp(lg, ll, lower->data, lower->len) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == nb) continue;
        s->batch = lo;
        struct ArrowArray b;
        MARBLE_RETURN_NOT_OK(marble__sst_read_batch(sst, lo, &b, err));
        int64_t rlo = 0, rhi = b.length;
        int rc = MARBLE_OK;
        while (rc == MARBLE_OK && rlo < rhi) {
            int64_t mid = rlo + (rhi - rlo) / 2;
            rc = batch_key(s, &b, mid, err);
            if (rc == MARBLE_OK &&
                key_cmp(s->scratch.data, s->scratch.len, lower->data, lower->len) < 0)
                rlo = mid + 1;
            else
                rhi = mid;
        }
        marble_arrow_array_release(&b);
        if (rc != MARBLE_OK) return rc;
        s->row = rlo;
        return MARBLE_OK;
    }
    s->done = 1;
    return MARBLE_OK;
}

static int fast_next(scan_state *s, struct ArrowArray *out, marble_error *err)
{
    while (!s->done) {
        if (s->file >= s->n_run) {
            s->done = 1;
            break;
        }
        marble__sst *sst = s->run[s->file];
        if (s->batch >= marble__sst_num_batches(sst)) {
            s->file++;
            s->batch = 0;
            s->row = 0;
            continue;
        }
        struct ArrowArray b;
        MARBLE_RETURN_NOT_OK(marble__sst_read_batch(sst, s->batch, &b, err));
        if (s->row >= b.length) {
            marble_arrow_array_release(&b);
            s->batch++;
            s->row = 0;
            continue;
        }
        int64_t start = s->row, end = b.length;
        if (end - start > s->batch_rows) end = start + s->batch_rows;
        int rc = MARBLE_OK;
        if (s->b.skip_lower) {
            rc = batch_key(s, &b, start, err);
            if (rc == MARBLE_OK &&
                key_cmp(s->scratch.data, s->scratch.len, s->b.lower.data, s->b.lower.len) == 0)
                start++;
            s->b.skip_lower = 0;
        }
        if (rc == MARBLE_OK && s->b.has_upper && start < end) {
            rc = batch_key(s, &b, end - 1, err);
            if (rc == MARBLE_OK &&
                marble__scan_past_upper(&s->b, s->scratch.data, s->scratch.len)) {
                int64_t lo = start, hi = end - 1; /* first row past the bound is in [lo, hi] */
                while (rc == MARBLE_OK && lo < hi) {
                    int64_t mid = lo + (hi - lo) / 2;
                    rc = batch_key(s, &b, mid, err);
                    if (rc == MARBLE_OK &&
                        marble__scan_past_upper(&s->b, s->scratch.data, s->scratch.len))
                        hi = mid;
                    else
                        lo = mid + 1;
                }
                end = lo;
                s->done = 1;
            }
        }
        if (rc != MARBLE_OK) {
            marble_arrow_array_release(&b);
            return rc;
        }
        s->row = end;
        if (end <= start) {
            marble_arrow_array_release(&b);
            continue;
        }
        return marble__db_slice(&b, s->proj, s->nproj, start, end - start, out, err);
    }
    memset(out, 0, sizeof *out);
    out->release = NULL;
    return MARBLE_OK;
}

int marble__scan_fill(marble__iter *it, marble__scan_bounds *b, marble__assembler *as,
                      int64_t max_rows, int *done, marble_error *err)
{
    int rc = MARBLE_OK;
    while (!*done && rc == MARBLE_OK && marble__assembler_rows(as) < max_rows) {
        if (!marble__iter_valid(it)) {
            *done = 1;
            break;
        }
        size_t klen;
        const uint8_t *k = marble__iter_key(it, &klen);
        if (b->skip_lower) {
            if (key_cmp(k, klen, b->lower.data, b->lower.len) == 0) {
                marble__iter_next(it);
                continue;
            }
            b->skip_lower = 0;
        }
        if (marble__scan_past_upper(b, k, klen)) {
            *done = 1;
            break;
        }
        int64_t row;
        const struct ArrowArray *src = marble__iter_batch(it, &row);
        uint64_t seq = marble__iter_seq(it);
        if (src) {
            rc = marble__assembler_add_arrow(as, src, row, seq, 1, err);
        } else {
            size_t vlen;
            const void *v = marble__iter_value(it, &vlen);
            rc = marble__assembler_add(as, k, klen, seq, 1, v, vlen, err);
        }
        marble__iter_next(it);
    }
    if (rc == MARBLE_OK) rc = marble__iter_status(it, err);
    return rc;
}

static int scan_get_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    scan_state *s = st->private_data;
    marble_error e = {0};
    int rc = MARBLE_OK;
    if (s->fast) {
        rc = fast_next(s, out, &e);
        if (rc != MARBLE_OK) {
            snprintf(s->error, sizeof s->error, "%s", e.message);
            s->done = 1;
            return marble_error_to_errno(rc);
        }
        return 0;
    }
    rc = marble__scan_fill(s->it, &s->b, s->as, s->batch_rows, &s->done, &e);
    if (rc != MARBLE_OK) {
        snprintf(s->error, sizeof s->error, "%s", e.message);
        s->done = 1;
        return marble_error_to_errno(rc);
    }
    if (marble__assembler_rows(s->as) == 0) {
        memset(out, 0, sizeof *out);
        out->release = NULL;
        return 0;
    }
    rc = marble__assembler_finish(s->as, out, &e);
    if (rc != MARBLE_OK) {
        snprintf(s->error, sizeof s->error, "%s", e.message);
        return marble_error_to_errno(rc);
    }
    return 0;
}

static int encode_bound(const marble__table *t, marble_key k, marble__bytes *out, int *full,
                        marble_error *err)
{
    out->len = 0;
    MARBLE_RETURN_NOT_OK(marble__db_encode_key(t, k, 0, out, err));
    /* strip the table prefix: iterators see bare keys */
    memmove(out->data, out->data + MARBLE__PREFIX_LEN, out->len - MARBLE__PREFIX_LEN);
    out->len -= MARBLE__PREFIX_LEN;
    *full = k.n == (size_t)t->nkeys;
    return MARBLE_OK;
}

int marble__scan_bounds_init(const marble__table *t, const marble_key_range *range,
                             marble__scan_bounds *b, marble_error *err)
{
    memset(b, 0, sizeof *b);
    int rc = MARBLE_OK, full;
    if (range && range->lower.n) {
        rc = encode_bound(t, range->lower, &b->lower, &full, err);
        if (rc == MARBLE_OK) {
            b->has_lower = 1;
            if (range->lower_exclusive && full) {
                b->skip_lower = 1;
            } else if (range->lower_exclusive) {
                marble__bytes succ = {0};
                int bounded;
                rc =
                    marble__key_prefix_successor(b->lower.data, b->lower.len, &succ, &bounded, err);
                marble__bytes_free(&b->lower);
                b->lower = succ;
                if (!bounded) b->empty = 1;
            }
        }
    }
    if (rc == MARBLE_OK && range && range->upper.n) {
        rc = encode_bound(t, range->upper, &b->upper, &full, err);
        if (rc == MARBLE_OK) {
            b->has_upper = 1;
            if (range->upper_inclusive && full) {
                b->upper_gt = 1;
            } else if (range->upper_inclusive) {
                marble__bytes succ = {0};
                int bounded;
                rc =
                    marble__key_prefix_successor(b->upper.data, b->upper.len, &succ, &bounded, err);
                marble__bytes_free(&b->upper);
                b->upper = succ;
                if (!bounded) b->has_upper = 0;
            }
        }
    }
    if (rc != MARBLE_OK) marble__scan_bounds_free(b);
    return rc;
}

void marble__scan_bounds_free(marble__scan_bounds *b)
{
    marble__bytes_free(&b->lower);
    marble__bytes_free(&b->upper);
    b->has_lower = b->has_upper = b->skip_lower = 0;
}

static int scan_open(marble_db *db, marble__table *t, const marble_key_range *range,
                     const marble_read_options *ro, struct ArrowArrayStream *out, marble_error *err)
{
    int proj[MARBLE__MAX_COLUMNS], nproj;
    MARBLE_RETURN_NOT_OK(resolve_projection(t, ro, proj, &nproj, err));
    if (ro && ro->batch_rows < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "batch_rows is negative");
    scan_state *s = calloc(1, sizeof *s);
    if (!s) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    s->db = db;
    s->t = t;
    marble__table_ref(t);
    s->batch_rows = ro && ro->batch_rows ? ro->batch_rows : 4096;
    int rc = marble__scan_bounds_init(t, range, &s->b, err);
    if (rc == MARBLE_OK && s->b.empty) s->done = 1;
    if (rc == MARBLE_OK)
        rc = marble__assembler_create(&t->codec, nproj < 0 ? NULL : proj, nproj, 0, &s->as, err);
    if (rc == MARBLE_OK) {
        marble__db_readview_acquire(db, ro ? ro->snapshot : NULL, &s->rv);
        s->nproj = nproj < 0 ? t->codec.ncols : nproj;
        for (int j = 0; j < s->nproj; j++)
            s->proj[j] = nproj < 0 ? j : proj[j];
        if (!s->done && marble__scan_fast_path)
            rc = fast_open(db, s, &s->b.lower, s->b.has_lower, err);
    }
    if (rc == MARBLE_OK && !s->fast) rc = marble__db_visible_iter(db, t, &s->rv, &s->it, err);
    if (rc == MARBLE_OK && !s->fast) {
        if (s->b.has_lower)
            marble__iter_seek(s->it, s->b.lower.data, s->b.lower.len);
        else
            marble__iter_seek_to_first(s->it);
    }
    atomic_fetch_add_explicit(&db->live_streams, 1, memory_order_relaxed);
    marble__db_res_add(db, &s->res, "scan stream of table '%s'", t->name);
    out->private_data = s;
    out->release = scan_release;
    if (rc != MARBLE_OK) {
        scan_release(out);
        return rc;
    }
    out->get_schema = scan_get_schema;
    out->get_next = scan_get_next;
    out->get_last_error = scan_last_error;
    atomic_fetch_add_explicit(&db->st_scans, 1, memory_order_relaxed);
    return MARBLE_OK;
}

int marble_db_scan(marble_db *db, const char *table, const marble_key_range *range,
                   const marble_read_options *ro, struct ArrowArrayStream *out, marble_error *err)
{
    if (!db || !table || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db, table or out is NULL");
    MARBLE_RETURN_NOT_OK(check_snapshot(db, ro, err));
    marble__table *t = marble__db_find_table(db, table);
    if (!t || t->id == MARBLE__KV_TABLE_ID) {
        marble__table_unref(t);
        return marble__db_table_error(table, err);
    }
    int rc = scan_open(db, t, range, ro, out, err);
    marble__table_unref(t);
    return rc;
}

int marble_db_scan_prefix(marble_db *db, const char *table, marble_key prefix,
                          const marble_read_options *ro, struct ArrowArrayStream *out,
                          marble_error *err)
{
    marble_key_range r;
    memset(&r, 0, sizeof r);
    r.lower = prefix;
    r.upper = prefix;
    r.upper_inclusive = 1;
    return marble_db_scan(db, table, &r, ro, out, err);
}

/* ---- the key-value iterator -------------------------------------------------------------------
 */

struct marble_kv_iter {
    marble_db *db;
    marble__res res;
    marble__table *t;
    marble__readview rv;
    marble__iter *it;
    marble__bytes key, scratch;
    int key_ready;
    int status;
    marble_error err;
};

int marble_kv_iter_create(marble_db *db, const marble_read_options *ro, marble_kv_iter **out,
                          marble_error *err)
{
    if (!db || !out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db or out is NULL");
    MARBLE_RETURN_NOT_OK(check_snapshot(db, ro, err));
    marble_kv_iter *it = calloc(1, sizeof *it);
    if (!it) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    it->db = db;
    it->t = marble__db_find_table_id(db, MARBLE__KV_TABLE_ID);
    marble__db_readview_acquire(db, ro ? ro->snapshot : NULL, &it->rv);
    int rc = marble__db_visible_iter(db, it->t, &it->rv, &it->it, err);
    if (rc != MARBLE_OK) {
        marble__db_readview_release(&it->rv);
        marble__table_unref(it->t);
        free(it);
        return rc;
    }
    atomic_fetch_add_explicit(&db->live_streams, 1, memory_order_relaxed);
    marble__db_res_add(db, &it->res, "key-value iterator");
    *out = it;
    return MARBLE_OK;
}

void marble_kv_iter_destroy(marble_kv_iter *it)
{
    if (!it) return;
    marble__iter_destroy(it->it);
    marble__db_readview_release(&it->rv);
    marble__table_unref(it->t);
    marble__bytes_free(&it->key);
    marble__bytes_free(&it->scratch);
    atomic_fetch_sub_explicit(&it->db->live_streams, 1, memory_order_relaxed);
    marble__db_res_remove(it->db, &it->res);
    free(it);
}

int marble_kv_iter_valid(const marble_kv_iter *it)
{
    return it && it->status == MARBLE_OK && marble__iter_valid(it->it);
}

static void kv_moved(marble_kv_iter *it)
{
    it->key_ready = 0;
    if (!marble__iter_valid(it->it) && it->status == MARBLE_OK) {
        marble_error e = {0};
        int rc = marble__iter_status(it->it, &e);
        if (rc != MARBLE_OK) {
            it->status = rc;
            it->err = e;
        }
    }
}

void marble_kv_iter_seek_to_first(marble_kv_iter *it)
{
    if (!it) return;
    marble__iter_seek_to_first(it->it);
    kv_moved(it);
}

void marble_kv_iter_seek_to_last(marble_kv_iter *it)
{
    if (!it) return;
    marble__iter_seek_to_last(it->it);
    kv_moved(it);
}

void marble_kv_iter_seek(marble_kv_iter *it, const void *key, size_t klen)
{
    if (!it) return;
    if (kv_key_encode(key, klen, 0, &it->scratch, &it->err) != MARBLE_OK) {
        it->status = it->err.code;
        return;
    }
    marble__iter_seek(it->it, it->scratch.data, it->scratch.len);
    kv_moved(it);
}

void marble_kv_iter_seek_for_prev(marble_kv_iter *it, const void *key, size_t klen)
{
    if (!it) return;
    if (kv_key_encode(key, klen, 0, &it->scratch, &it->err) != MARBLE_OK) {
        it->status = it->err.code;
        return;
    }
    marble__iter_seek(it->it, it->scratch.data, it->scratch.len);
    if (!marble__iter_valid(it->it)) {
        marble__iter_seek_to_last(it->it);
    } else {
        size_t n;
        const uint8_t *k = marble__iter_key(it->it, &n);
        if (key_cmp(k, n, it->scratch.data, it->scratch.len) > 0) marble__iter_prev(it->it);
    }
    kv_moved(it);
}

void marble_kv_iter_next(marble_kv_iter *it)
{
    if (!marble_kv_iter_valid(it)) return;
    marble__iter_next(it->it);
    kv_moved(it);
}

void marble_kv_iter_prev(marble_kv_iter *it)
{
    if (!marble_kv_iter_valid(it)) return;
    marble__iter_prev(it->it);
    kv_moved(it);
}

/* Row `row` of binary column `col` of an SSTable batch of the key-value table (validated when
 * the batch was read: offsets are in bounds); NULL when null. */
static void kv_column(const struct ArrowArray *b, int col, int64_t row, const uint8_t **d,
                      size_t *n)
{
    const struct ArrowArray *c = b->children[col];
    int64_t p = c->offset + b->offset + row;
    if (c->null_count != 0 && c->buffers[0] &&
        !(((const uint8_t *)c->buffers[0])[p >> 3] & (1u << (p & 7)))) {
        *d = NULL;
        *n = 0;
        return;
    }
    const int32_t *off = c->buffers[1];
    *d = (const uint8_t *)c->buffers[2] + off[p];
    *n = (size_t)(off[p + 1] - off[p]);
}

const void *marble_kv_iter_key(const marble_kv_iter *cit, size_t *klen)
{
    marble_kv_iter *it = (marble_kv_iter *)cit;
    if (!marble_kv_iter_valid(it)) {
        if (klen) *klen = 0;
        return NULL;
    }
    int64_t brow;
    const struct ArrowArray *src = marble__iter_batch(it->it, &brow);
    if (src) { /* straight from the SSTable batch's binary key column */
        const uint8_t *d;
        size_t n;
        kv_column(src, 0, brow, &d, &n);
        if (klen) *klen = n;
        return d ? (const void *)d : (const void *)"";
    }
    if (!it->key_ready) {
        size_t n;
        const uint8_t *k = marble__iter_key(it->it, &n);
        it->key.len = 0;
        if (marble__bytes_reserve(&it->key, n, NULL) != MARBLE_OK) {
            if (klen) *klen = 0;
            return NULL;
        }
        /* marker, escaped bytes, terminator 00 00 */
        size_t o = 0;
        for (size_t i = 1; i < n;) {
            if (k[i] == 0) {
                if (i + 1 < n && k[i + 1] == 0xFF) {
                    it->key.data[o++] = 0;
                    i += 2;
                    continue;
                }
                break; /* terminator */
            }
            it->key.data[o++] = k[i++];
        }
        it->key.len = o;
        it->key_ready = 1;
    }
    if (klen) *klen = it->key.len;
    return it->key.data ? it->key.data : (const void *)"";
}

const void *marble_kv_iter_value(const marble_kv_iter *cit, size_t *vlen)
{
    marble_kv_iter *it = (marble_kv_iter *)cit;
    if (!marble_kv_iter_valid(it)) {
        if (vlen) *vlen = 0;
        return NULL;
    }
    int64_t brow;
    const struct ArrowArray *src = marble__iter_batch(it->it, &brow);
    const uint8_t *d;
    size_t len;
    if (src) { /* straight from the SSTable batch's binary value column */
        kv_column(src, 1, brow, &d, &len);
        if (vlen) *vlen = len;
        return d ? (const void *)d : (const void *)"";
    }
    size_t n;
    const uint8_t *v = marble__iter_value(it->it, &n);
    if (kv_value(v, n, &d, &len) != MARBLE_OK) {
        it->status = MARBLE_ERR_CORRUPTION;
        marble_error_set(&it->err, MARBLE_ERR_CORRUPTION, "%s: corruption: bad key-value row",
                         it->db->uri);
        if (vlen) *vlen = 0;
        return NULL;
    }
    if (vlen) *vlen = len;
    return d ? d : (const void *)"";
}

int marble_kv_iter_status(const marble_kv_iter *it, marble_error *err)
{
    if (!it) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "iterator is NULL");
    if (it->status != MARBLE_OK) {
        if (err) *err = it->err;
        return it->status;
    }
    return MARBLE_OK;
}
