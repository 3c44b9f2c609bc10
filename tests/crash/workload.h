/*
 * A checkable write workload for the durability tests (tests/crash, tests/lsm/test_db_fault.c).
 *
 * Each writer thread t owns a key space of its own: WL_KV keys "kv/<t>/<i>" in the key-value
 * table and WL_ROWS rows (id = t * 100000 + i) of the table "t" ("id:int64!,ver:int64,txt:utf8").
 * A thread's operations come from a generator seeded per (seed, cycle, thread), so whoever knows
 * the seed and how many operations were acknowledged can rebuild the exact expected state. Every
 * operation carries a version that grows with each operation, and every value written holds its
 * version and content derived from (thread, key, version), so a read proves which write it came
 * from. An operation is one of: a KV put, a KV delete, a table put of 1..16 rows (one Arrow
 * batch), a table delete by key, a table delete of several keys (one batch), or an atomic write
 * batch that puts and deletes across the KV table and table "t".
 *
 * wl_model holds, per key, the version of the write that is visible (0: absent).
 */
#ifndef MARBLE_TEST_CRASH_WORKLOAD_H
#define MARBLE_TEST_CRASH_WORKLOAD_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/db.h"

#define WL_THREADS 2
#define WL_KV 256
#define WL_ROWS 384
#define WL_SCHEMA "id:int64!,ver:int64,txt:utf8"

typedef struct wl_model {
    uint64_t kv[WL_THREADS][WL_KV];
    uint64_t row[WL_THREADS][WL_ROWS];
} wl_model;

enum { WL_KV_PUT, WL_KV_DEL, WL_ROW_PUT, WL_ROW_DEL, WL_ROW_DEL_BATCH, WL_BATCH };

typedef struct wl_op {
    int kind;
    uint64_t ver;
    int n_kv_put, kv_put[4];
    int n_kv_del, kv_del[2];
    int n_row_put, row_put[16];
    int n_row_del, row_del[4];
} wl_op;

static inline uint64_t wl_rng(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t wl_seed(uint64_t seed, uint32_t cycle, int thread)
{
    uint64_t s = seed ^ ((uint64_t)cycle << 20) ^ ((uint64_t)thread << 52);
    wl_rng(&s);
    return s;
}

/* The version of operation idx of a cycle: grows across cycles and operations. */
static inline uint64_t wl_version(uint32_t cycle, uint64_t idx)
{
    return ((uint64_t)(cycle + 1) << 32) | (idx + 1);
}

static inline int wl_has(const int *v, int n, int x)
{
    for (int i = 0; i < n; i++)
        if (v[i] == x) return 1;
    return 0;
}

/* Picks n distinct indexes below limit, none in avoid[0..navoid). */
static inline void wl_pick(uint64_t *rng, int *out, int n, int limit, const int *avoid, int navoid)
{
    for (int i = 0; i < n; i++) {
        int x;
        do {
            x = (int)(wl_rng(rng) % (uint64_t)limit);
        } while (wl_has(out, i, x) || wl_has(avoid, navoid, x));
        out[i] = x;
    }
}

static inline void wl_gen(uint64_t *rng, uint64_t ver, wl_op *op)
{
    memset(op, 0, sizeof *op);
    op->ver = ver;
    unsigned r = (unsigned)(wl_rng(rng) % 100);
    if (r < 28) {
        op->kind = WL_KV_PUT;
        op->n_kv_put = 1;
    } else if (r < 38) {
        op->kind = WL_KV_DEL;
        op->n_kv_del = 1;
    } else if (r < 66) {
        op->kind = WL_ROW_PUT;
        op->n_row_put = 1 + (int)(wl_rng(rng) % 16);
    } else if (r < 74) {
        op->kind = WL_ROW_DEL;
        op->n_row_del = 1;
    } else if (r < 80) {
        op->kind = WL_ROW_DEL_BATCH;
        op->n_row_del = 2 + (int)(wl_rng(rng) % 3);
    } else {
        op->kind = WL_BATCH;
        op->n_kv_put = 1 + (int)(wl_rng(rng) % 3);
        op->n_kv_del = (int)(wl_rng(rng) % 2);
        op->n_row_put = 1 + (int)(wl_rng(rng) % 8);
        op->n_row_del = (int)(wl_rng(rng) % 2);
    }
    wl_pick(rng, op->kv_put, op->n_kv_put, WL_KV, NULL, 0);
    wl_pick(rng, op->kv_del, op->n_kv_del, WL_KV, op->kv_put, op->n_kv_put);
    wl_pick(rng, op->row_put, op->n_row_put, WL_ROWS, NULL, 0);
    wl_pick(rng, op->row_del, op->n_row_del, WL_ROWS, op->row_put, op->n_row_put);
}

static inline void wl_apply(wl_model *m, int thread, const wl_op *op)
{
    for (int i = 0; i < op->n_kv_put; i++)
        m->kv[thread][op->kv_put[i]] = op->ver;
    for (int i = 0; i < op->n_kv_del; i++)
        m->kv[thread][op->kv_del[i]] = 0;
    for (int i = 0; i < op->n_row_put; i++)
        m->row[thread][op->row_put[i]] = op->ver;
    for (int i = 0; i < op->n_row_del; i++)
        m->row[thread][op->row_del[i]] = 0;
}

/* ---- values ------------------------------------------------------------------------------------
 */

static inline int wl_kv_key(char *buf, int thread, int i)
{
    return snprintf(buf, 32, "kv/%d/%05d", thread, i);
}

static inline int64_t wl_row_id(int thread, int i)
{
    return (int64_t)thread * 100000 + i;
}

/* "<ver hex>:" then filler derived from (tag, thread, i, ver); returns the length. */
static inline size_t wl_text(char *buf, int tag, int thread, int i, uint64_t ver, size_t maxlen)
{
    uint64_t h = ver * 0x9E3779B97F4A7C15ull ^ ((uint64_t)tag << 40) ^ ((uint64_t)thread << 32) ^
                 (uint64_t)i;
    int n = snprintf(buf, 32, "%016" PRIx64 ":", ver);
    size_t len = (size_t)n + (size_t)(wl_rng(&h) % maxlen);
    for (size_t k = (size_t)n; k < len; k++)
        buf[k] = (char)('a' + wl_rng(&h) % 26);
    return len;
}

#define WL_KV_MAXLEN 500
#define WL_TXT_MAXLEN 200

static inline int wl_create_table(marble_db *db, marble_error *err)
{
    struct ArrowSchema s;
    int rc = marble_arrow_schema_parse(WL_SCHEMA, &s, err);
    if (rc != MARBLE_OK) return rc;
    const char *key[] = {"id"};
    rc = marble_db_create_table(db, "t", &s, key, 1, err);
    marble_arrow_schema_release(&s);
    return rc;
}

/* Rows idx[0..n) of thread as a batch (with_values 0: only the id column filled, for deletes). */
static inline int wl_rows(int thread, const int *idx, int n, uint64_t ver, struct ArrowSchema *s,
                          struct ArrowArray *a, marble_error *err)
{
    int rc = marble_arrow_schema_parse(WL_SCHEMA, s, err);
    if (rc != MARBLE_OK) return rc;
    marble_batch_builder *b = NULL;
    rc = marble_batch_builder_create(s, &b, err);
    char txt[WL_TXT_MAXLEN + 40];
    for (int i = 0; rc == MARBLE_OK && i < n; i++) {
        size_t len = wl_text(txt, 1, thread, idx[i], ver, WL_TXT_MAXLEN);
        rc = marble_builder_append_int(b, 0, wl_row_id(thread, idx[i]), err);
        if (rc == MARBLE_OK) rc = marble_builder_append_int(b, 1, (int64_t)ver, err);
        if (rc == MARBLE_OK) rc = marble_builder_append_bytes(b, 2, txt, len, err);
    }
    if (rc == MARBLE_OK) rc = marble_batch_builder_finish(b, a, err);
    marble_batch_builder_destroy(b);
    if (rc != MARBLE_OK) marble_arrow_schema_release(s);
    return rc;
}

static inline int wl_row_key_value(int thread, int i, marble_value *v)
{
    memset(v, 0, sizeof *v);
    v->kind = MARBLE_VALUE_INT;
    v->i = wl_row_id(thread, i);
    return 0;
}

/* Executes op on db; MARBLE_OK once it is acknowledged. */
static inline int wl_exec(marble_db *db, int thread, const wl_op *op, marble_error *err)
{
    char key[32], val[WL_KV_MAXLEN + 40];
    int rc = MARBLE_OK;
    struct ArrowSchema s;
    struct ArrowArray a;
    switch (op->kind) {
    case WL_KV_PUT: {
        int kl = wl_kv_key(key, thread, op->kv_put[0]);
        size_t vl = wl_text(val, 0, thread, op->kv_put[0], op->ver, WL_KV_MAXLEN);
        return marble_db_kv_put(db, key, (size_t)kl, val, vl, NULL, err);
    }
    case WL_KV_DEL: {
        int kl = wl_kv_key(key, thread, op->kv_del[0]);
        return marble_db_kv_delete(db, key, (size_t)kl, NULL, err);
    }
    case WL_ROW_PUT:
        rc = wl_rows(thread, op->row_put, op->n_row_put, op->ver, &s, &a, err);
        if (rc != MARBLE_OK) return rc;
        rc = marble_db_put(db, "t", &s, &a, NULL, err);
        break;
    case WL_ROW_DEL: {
        marble_value v;
        wl_row_key_value(thread, op->row_del[0], &v);
        marble_key k = {&v, 1};
        return marble_db_delete_key(db, "t", k, NULL, err);
    }
    case WL_ROW_DEL_BATCH:
        rc = wl_rows(thread, op->row_del, op->n_row_del, op->ver, &s, &a, err);
        if (rc != MARBLE_OK) return rc;
        rc = marble_db_delete(db, "t", &s, &a, NULL, err);
        break;
    default: {
        marble_write_batch *wb = NULL;
        rc = marble_write_batch_create(db, &wb, err);
        for (int i = 0; rc == MARBLE_OK && i < op->n_kv_put; i++) {
            int kl = wl_kv_key(key, thread, op->kv_put[i]);
            size_t vl = wl_text(val, 0, thread, op->kv_put[i], op->ver, WL_KV_MAXLEN);
            rc = marble_write_batch_kv_put(wb, key, (size_t)kl, val, vl, err);
        }
        for (int i = 0; rc == MARBLE_OK && i < op->n_kv_del; i++) {
            int kl = wl_kv_key(key, thread, op->kv_del[i]);
            rc = marble_write_batch_kv_delete(wb, key, (size_t)kl, err);
        }
        if (rc == MARBLE_OK) {
            rc = wl_rows(thread, op->row_put, op->n_row_put, op->ver, &s, &a, err);
            if (rc == MARBLE_OK) {
                rc = marble_write_batch_put(wb, "t", &s, &a, err);
                marble_arrow_array_release(&a);
                marble_arrow_schema_release(&s);
            }
        }
        for (int i = 0; rc == MARBLE_OK && i < op->n_row_del; i++) {
            marble_value v;
            wl_row_key_value(thread, op->row_del[i], &v);
            marble_key k = {&v, 1};
            rc = marble_write_batch_delete_key(wb, "t", k, err);
        }
        if (rc == MARBLE_OK) rc = marble_db_write(db, wb, NULL, err);
        marble_write_batch_destroy(wb);
        return rc;
    }
    }
    marble_arrow_array_release(&a);
    marble_arrow_schema_release(&s);
    return rc;
}

/* ---- reading the state back --------------------------------------------------------------------
 */

/* Checks that a KV value is the canonical value of some version of (thread, i); *ver gets it. */
static inline int wl_kv_value_ok(int thread, int i, const void *v, size_t vl, uint64_t *ver)
{
    char want[WL_KV_MAXLEN + 40];
    if (vl < 17 || ((const char *)v)[16] != ':') return 0;
    char hex[17];
    memcpy(hex, v, 16);
    hex[16] = 0;
    char *end;
    *ver = strtoull(hex, &end, 16);
    if (*end || *ver == 0) return 0;
    size_t wl = wl_text(want, 0, thread, i, *ver, WL_KV_MAXLEN);
    return wl == vl && memcmp(want, v, vl) == 0;
}

/* Reads the whole state of db into *obs with point reads, checks every value's content, then
 * checks that a full scan of "t" and a full KV iteration are ordered and agree with the point
 * reads. 0, or -1 with a reason in why. */
static inline int wl_read(marble_db *db, wl_model *obs, char *why, size_t whylen)
{
    marble_error err = {0};
    memset(obs, 0, sizeof *obs);
    size_t n_kv = 0, n_rows = 0;
    for (int t = 0; t < WL_THREADS; t++) {
        for (int i = 0; i < WL_KV; i++) {
            char key[32];
            int kl = wl_kv_key(key, t, i);
            void *v = NULL;
            size_t vl = 0;
            int rc = marble_db_kv_get(db, NULL, key, (size_t)kl, &v, &vl, &err);
            if (rc == MARBLE_ERR_NOT_FOUND) continue;
            if (rc != MARBLE_OK) {
                snprintf(why, whylen, "kv_get %s: %s (%d)", key, err.message, rc);
                return -1;
            }
            uint64_t ver = 0;
            int ok = wl_kv_value_ok(t, i, v, vl, &ver);
            marble_free(v);
            if (!ok) {
                snprintf(why, whylen, "kv_get %s: a value of %zu bytes that no write wrote", key,
                         vl);
                return -1;
            }
            obs->kv[t][i] = ver;
            n_kv++;
        }
        for (int i = 0; i < WL_ROWS; i++) {
            marble_value kv;
            wl_row_key_value(t, i, &kv);
            marble_key key = {&kv, 1};
            struct ArrowSchema s;
            struct ArrowArray row;
            int rc = marble_db_get(db, "t", key, NULL, &s, &row, &err);
            if (rc == MARBLE_ERR_NOT_FOUND) continue;
            if (rc != MARBLE_OK) {
                snprintf(why, whylen, "get t %" PRId64 ": %s (%d)", kv.i, err.message, rc);
                return -1;
            }
            int ok = row.length == 1 && row.n_children == 3 &&
                     marble_arrow_get_int(s.children[0], row.children[0], 0) == kv.i;
            uint64_t ver =
                ok ? (uint64_t)marble_arrow_get_int(s.children[1], row.children[1], 0) : 0;
            const void *txt = NULL;
            size_t tl = 0;
            char want[WL_TXT_MAXLEN + 40];
            ok = ok && ver != 0 &&
                 marble_arrow_get_bytes(s.children[2], row.children[2], 0, &txt, &tl) == MARBLE_OK;
            ok = ok && tl == wl_text(want, 1, t, i, ver, WL_TXT_MAXLEN) && !memcmp(txt, want, tl);
            marble_arrow_array_release(&row);
            marble_arrow_schema_release(&s);
            if (!ok) {
                snprintf(why, whylen, "get t %" PRId64 ": a row that no write wrote", kv.i);
                return -1;
            }
            obs->row[t][i] = ver;
            n_rows++;
        }
    }

    /* the full scan of "t" */
    struct ArrowArrayStream st;
    int rc = marble_db_scan(db, "t", NULL, NULL, &st, &err);
    if (rc != MARBLE_OK) {
        snprintf(why, whylen, "scan t: %s (%d)", err.message, rc);
        return -1;
    }
    struct ArrowSchema s;
    if (st.get_schema(&st, &s) != 0) {
        snprintf(why, whylen, "scan t: get_schema: %s", st.get_last_error(&st));
        st.release(&st);
        return -1;
    }
    size_t seen = 0;
    int64_t last = -1;
    int bad = 0;
    for (;;) {
        struct ArrowArray a;
        int e = st.get_next(&st, &a);
        if (e != 0) {
            snprintf(why, whylen, "scan t: get_next: %d %s", e, st.get_last_error(&st));
            bad = 1;
            break;
        }
        if (!a.release) break;
        for (int64_t r = 0; r < a.length && !bad; r++) {
            int64_t id = marble_arrow_get_int(s.children[0], a.children[0], r);
            uint64_t ver = (uint64_t)marble_arrow_get_int(s.children[1], a.children[1], r);
            int t = (int)(id / 100000), i = (int)(id % 100000);
            if (id <= last) {
                snprintf(why, whylen, "scan t: id %" PRId64 " after %" PRId64, id, last);
                bad = 1;
            } else if (id < 0 || t >= WL_THREADS || i >= WL_ROWS || obs->row[t][i] != ver) {
                snprintf(why, whylen,
                         "scan t: id %" PRId64 " version %" PRIx64 ", a point read gave %" PRIx64,
                         id, ver, (id < 0 || t >= WL_THREADS || i >= WL_ROWS) ? 0 : obs->row[t][i]);
                bad = 1;
            }
            last = id;
            seen++;
        }
        marble_arrow_array_release(&a);
        if (bad) break;
    }
    marble_arrow_schema_release(&s);
    st.release(&st);
    if (bad) return -1;
    if (seen != n_rows) {
        snprintf(why, whylen, "scan t: %zu rows, point reads found %zu", seen, n_rows);
        return -1;
    }

    /* the full KV iteration */
    marble_kv_iter *it = NULL;
    rc = marble_kv_iter_create(db, NULL, &it, &err);
    if (rc != MARBLE_OK) {
        snprintf(why, whylen, "kv_iter_create: %s", err.message);
        return -1;
    }
    char prev[32] = "";
    size_t prevlen = 0;
    seen = 0;
    for (marble_kv_iter_seek_to_first(it); marble_kv_iter_valid(it); marble_kv_iter_next(it)) {
        size_t kl, vl;
        const char *k = marble_kv_iter_key(it, &kl);
        const void *v = marble_kv_iter_value(it, &vl);
        int t = -1, i = -1;
        char kbuf[32];
        if (kl < sizeof kbuf) {
            memcpy(kbuf, k, kl);
            kbuf[kl] = 0;
            if (sscanf(kbuf, "kv/%d/%d", &t, &i) != 2) t = -1;
        }
        size_t cmpn = kl < prevlen ? kl : prevlen;
        int c = memcmp(k, prev, cmpn);
        if (seen && (c < 0 || (c == 0 && kl <= prevlen))) {
            snprintf(why, whylen, "kv iteration: key %.*s after %s", (int)kl, k, prev);
            bad = 1;
            break;
        }
        uint64_t ver = 0;
        if (t < 0 || t >= WL_THREADS || i < 0 || i >= WL_KV || !wl_kv_value_ok(t, i, v, vl, &ver) ||
            obs->kv[t][i] != ver) {
            snprintf(why, whylen, "kv iteration: key %.*s holds version %" PRIx64 " (%zu bytes)",
                     (int)kl, k, ver, vl);
            bad = 1;
            break;
        }
        memcpy(prev, k, kl);
        prev[kl] = 0;
        prevlen = kl;
        seen++;
    }
    if (!bad && marble_kv_iter_status(it, &err) != MARBLE_OK) {
        snprintf(why, whylen, "kv iteration: %s", err.message);
        bad = 1;
    }
    marble_kv_iter_destroy(it);
    if (bad) return -1;
    if (seen != n_kv) {
        snprintf(why, whylen, "kv iteration: %zu keys, point reads found %zu", seen, n_kv);
        return -1;
    }
    return 0;
}

/* The first difference between two models restricted to thread t, or 0 if they agree. */
static inline int wl_diff(const wl_model *a, const wl_model *b, int t, char *why, size_t whylen)
{
    for (int i = 0; i < WL_KV; i++)
        if (a->kv[t][i] != b->kv[t][i]) {
            snprintf(why, whylen, "kv/%d/%05d: version %" PRIx64 ", expected %" PRIx64, t, i,
                     a->kv[t][i], b->kv[t][i]);
            return 1;
        }
    for (int i = 0; i < WL_ROWS; i++)
        if (a->row[t][i] != b->row[t][i]) {
            snprintf(why, whylen, "row %" PRId64 ": version %" PRIx64 ", expected %" PRIx64,
                     wl_row_id(t, i), a->row[t][i], b->row[t][i]);
            return 1;
        }
    return 0;
}

#endif
