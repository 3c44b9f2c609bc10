/* Hash aggregation: each worker keeps its own open-addressing table of groups (a fast path for a
 * single integer key; otherwise keys are serialized into an arena and compared bytewise) with
 * COUNT / SUM / MIN / MAX / AVG states per group; the workers' tables are merged at the end and
 * the result is built with the key columns' own Arrow types. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "marble/base.h"
#include "arrow/arrow_internal.h"
#include "exec/pipeline_internal.h"

__extension__ typedef __int128 i128;

typedef struct agg_state {
    int64_t count;
    int64_t i; /* SUM/MIN/MAX int and bool */
    double d;  /* SUM/MIN/MAX double, AVG of doubles */
    i128 isum; /* SUM and AVG of ints: exact, so whether a SUM overflows int64 depends only on
                  its final value, not on how rows were split among workers */
    char *s;   /* MIN/MAX string (malloc'd) */
    int64_t sn;
    int has;
} agg_state;

typedef struct slot {
    uint64_t h;
    int64_t key; /* fast path: the key; else the group's arena offset */
    int64_t gid; /* -1: empty */
} slot;

struct marble__agg_local {
    const marble__agg_def *d;
    marble_datum_kind *gkind, *akind;
    int *acol; /* per aggregate: the batch column read directly (plain int64 / float64), else -1 */
    int fast;  /* one INT group key */
    marble__memacct mem;
    slot *slots;
    size_t cap; /* power of two */
    int64_t n_groups, groups_cap;
    int64_t null_gid;  /* fast path: the NULL key's group, -1 if none */
    int64_t *gkey;     /* fast path: key per group; else arena offset */
    uint32_t *glen;    /* key bytes per group (general) */
    agg_state *states; /* n_groups * n_aggs */
    uint8_t *arena;
    size_t arena_n, arena_cap;
    uint64_t string_bytes;
    /* per-batch scratch */
    marble__vec *kv, *av;
    int64_t *gids;
    size_t gids_cap;
    uint8_t *kbuf;
    size_t kbuf_cap;
};

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t in_use(const marble__agg_local *l)
{
    size_t na = l->d->n_aggs;
    return l->cap * sizeof(slot) +
           (uint64_t)l->groups_cap * (na * sizeof(agg_state) + sizeof(int64_t) + 4) + l->arena_cap +
           l->string_bytes + l->gids_cap * 8 + l->kbuf_cap;
}

void marble__agg_local_destroy(marble__agg_local *l)
{
    if (!l) return;
    size_t na = l->d->n_aggs;
    if (l->states)
        for (int64_t i = 0; i < l->n_groups * (int64_t)na; i++)
            free(l->states[i].s);
    for (size_t g = 0; l->kv && g < l->d->n_groups; g++)
        marble__vec_free(&l->kv[g]);
    for (size_t a = 0; l->av && a < na; a++)
        marble__vec_free(&l->av[a]);
    free(l->kv);
    free(l->av);
    free(l->gkind);
    free(l->akind);
    free(l->acol);
    free(l->slots);
    free(l->gkey);
    free(l->glen);
    free(l->states);
    free(l->arena);
    free(l->gids);
    free(l->kbuf);
    marble__mem_release_all(&l->mem);
    free(l);
}

static int new_group(marble__agg_local *l, int64_t *gid, marble_error *err)
{
    size_t na = l->d->n_aggs;
    if (l->n_groups == l->groups_cap) {
        int64_t cap = l->groups_cap ? l->groups_cap * 2 : 64;
        int64_t *nk = realloc(l->gkey, (size_t)cap * sizeof *nk);
        if (nk) l->gkey = nk;
        uint32_t *nl = nk ? realloc(l->glen, (size_t)cap * sizeof *nl) : NULL;
        if (nl) l->glen = nl;
        agg_state *ns = nl ? realloc(l->states, (size_t)cap * (na + 1) * sizeof *ns) : NULL;
        if (!ns) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
        l->states = ns;
        l->groups_cap = cap;
        MARBLE_RETURN_NOT_OK(marble__mem_need(&l->mem, in_use(l), err));
    }
    *gid = l->n_groups++;
    memset(&l->states[*gid * (int64_t)na], 0, na * sizeof(agg_state));
    return MARBLE_OK;
}

static int grow_table(marble__agg_local *l, marble_error *err)
{
    size_t cap = l->cap ? l->cap * 2 : 256;
    slot *ns = malloc(cap * sizeof *ns);
    if (!ns) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
    for (size_t i = 0; i < cap; i++)
        ns[i].gid = -1;
    for (size_t i = 0; i < l->cap; i++) {
        if (l->slots[i].gid < 0) continue;
        size_t j = l->slots[i].h & (cap - 1);
        while (ns[j].gid >= 0)
            j = (j + 1) & (cap - 1);
        ns[j] = l->slots[i];
    }
    free(l->slots);
    l->slots = ns;
    l->cap = cap;
    return marble__mem_need(&l->mem, in_use(l), err);
}

static int find_int(marble__agg_local *l, int64_t key, int64_t *gid, marble_error *err)
{
    if ((size_t)(l->n_groups + 1) * 2 > l->cap) MARBLE_RETURN_NOT_OK(grow_table(l, err));
    uint64_t h = mix64((uint64_t)key);
    size_t j = h & (l->cap - 1);
    for (;;) {
        slot *s = &l->slots[j];
        if (s->gid < 0) break;
        if (s->key == key) {
            *gid = s->gid;
            return MARBLE_OK;
        }
        j = (j + 1) & (l->cap - 1);
    }
    MARBLE_RETURN_NOT_OK(new_group(l, gid, err));
    l->gkey[*gid] = key;
    l->slots[j] = (slot){h, key, *gid};
    return MARBLE_OK;
}

static int find_bytes(marble__agg_local *l, const uint8_t *k, size_t n, int64_t *gid,
                      marble_error *err)
{
    if ((size_t)(l->n_groups + 1) * 2 > l->cap) MARBLE_RETURN_NOT_OK(grow_table(l, err));
    uint64_t h = marble_hash64(k, n, 0x9e3779b97f4a7c15ULL);
    size_t j = h & (l->cap - 1);
    for (;;) {
        slot *s = &l->slots[j];
        if (s->gid < 0) break;
        if (s->h == h && l->glen[s->gid] == n && memcmp(l->arena + s->key, k, n) == 0) {
            *gid = s->gid;
            return MARBLE_OK;
        }
        j = (j + 1) & (l->cap - 1);
    }
    if (n > UINT32_MAX)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "aggregate: group key over 4 GiB");
    if (l->arena_n + n > l->arena_cap) {
        size_t cap = l->arena_cap ? l->arena_cap : 4096;
        while (cap < l->arena_n + n)
            cap *= 2;
        uint8_t *na = realloc(l->arena, cap);
        if (!na) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
        l->arena = na;
        l->arena_cap = cap;
        MARBLE_RETURN_NOT_OK(marble__mem_need(&l->mem, in_use(l), err));
    }
    MARBLE_RETURN_NOT_OK(new_group(l, gid, err));
    memcpy(l->arena + l->arena_n, k, n);
    l->gkey[*gid] = (int64_t)l->arena_n;
    l->glen[*gid] = (uint32_t)n;
    l->arena_n += n;
    l->slots[j] = (slot){h, l->gkey[*gid], *gid};
    return MARBLE_OK;
}

int marble__agg_local_create(const marble__agg_def *d, marble_mem_budget *mem,
                             marble__agg_local **out, marble_error *err)
{
    marble__agg_local *l = calloc(1, sizeof *l);
    if (!l) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
    l->d = d;
    l->null_gid = -1;
    l->mem.budget = mem;
    l->mem.what = "hash aggregate";
    l->kv = calloc(d->n_groups + 1, sizeof *l->kv);
    l->av = calloc(d->n_aggs + 1, sizeof *l->av);
    l->gkind = calloc(d->n_groups + 1, sizeof *l->gkind);
    l->akind = calloc(d->n_aggs + 1, sizeof *l->akind);
    l->acol = calloc(d->n_aggs + 1, sizeof *l->acol);
    if (!l->kv || !l->av || !l->gkind || !l->akind || !l->acol) {
        free(l->kv);
        free(l->av);
        l->kv = NULL;
        l->av = NULL;
        marble__agg_local_destroy(l);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
    }
    for (size_t g = 0; g < d->n_groups; g++) {
        marble__vec_init(&l->kv[g]);
        l->gkind[g] = marble__bound_kind(d->groups[g]);
    }
    for (size_t a = 0; a < d->n_aggs; a++) {
        marble__vec_init(&l->av[a]);
        l->akind[a] = d->args[a] ? marble__bound_kind(d->args[a]) : MARBLE_DATUM_INT;
        l->acol[a] = -1;
        if (d->args[a] && marble__bound_column(d->args[a]) >= 0) {
            const char *f = marble__bound_format(d->args[a]);
            if (f && (!strcmp(f, "l") || !strcmp(f, "g")))
                l->acol[a] = marble__bound_column(d->args[a]);
        }
    }
    l->fast = d->n_groups == 1 && l->gkind[0] == MARBLE_DATUM_INT;
    if (d->n_groups == 0) {
        int64_t gid;
        int rc = new_group(l, &gid, err);
        if (rc != MARBLE_OK) {
            marble__agg_local_destroy(l);
            return rc;
        }
    }
    *out = l;
    return MARBLE_OK;
}

static size_t key_bytes(const marble__agg_local *l, int64_t r)
{
    size_t n = 0;
    for (size_t g = 0; g < l->d->n_groups; g++) {
        const marble__vec *v = &l->kv[g];
        n++;
        if (v->valid && !v->valid[r]) continue;
        switch (v->kind) {
        case MARBLE_DATUM_BOOL:
            n += 1;
            break;
        case MARBLE_DATUM_STRING:
            n += 8 + (size_t)v->s[r].n;
            break;
        default:
            n += 8;
        }
    }
    return n;
}

static void key_write(const marble__agg_local *l, int64_t r, uint8_t *p)
{
    for (size_t g = 0; g < l->d->n_groups; g++) {
        const marble__vec *v = &l->kv[g];
        if (v->valid && !v->valid[r]) {
            *p++ = 0;
            continue;
        }
        *p++ = 1;
        switch (v->kind) {
        case MARBLE_DATUM_BOOL:
            *p++ = v->b[r] ? 1 : 0;
            break;
        case MARBLE_DATUM_STRING:
            memcpy(p, &v->s[r].n, 8);
            if (v->s[r].n) memcpy(p + 8, v->s[r].p, (size_t)v->s[r].n);
            p += 8 + v->s[r].n;
            break;
        case MARBLE_DATUM_DOUBLE: {
            double x = v->d[r];
            if (x == 0) x = 0;
            if (isnan(x)) x = NAN;
            memcpy(p, &x, 8);
            p += 8;
            break;
        }
        default:
            memcpy(p, &v->i[r], 8);
            p += 8;
        }
    }
}

static int str_set(agg_state *st, const char *s, int64_t n, marble__agg_local *l, marble_error *err)
{
    char *ns = realloc(st->s, (size_t)n + 1);
    if (!ns) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
    if (n) memcpy(ns, s, (size_t)n);
    l->string_bytes += (uint64_t)(n > st->sn ? n - st->sn : 0);
    st->s = ns;
    st->sn = n;
    return MARBLE_OK;
}

static int str_cmp(const char *a, int64_t na, const char *b, int64_t nb)
{
    int64_t m = na < nb ? na : nb;
    int c = m ? memcmp(a, b, (size_t)m) : 0;
    return c ? c : (na > nb) - (na < nb);
}

static int sum_overflow(const marble__agg_local *l, size_t a, marble_error *err)
{
    const struct ArrowSchema *f = l->d->out->children[l->d->n_groups + a];
    return marble_error_set(err, MARBLE_ERR_LIMIT, "aggregate %s: SUM overflows int64",
                            f->name ? f->name : "");
}

/* Folds one value (or a partial state when `part` is set) into st. */
static int update(marble__agg_local *l, size_t a, agg_state *st, const marble__vec *v, int64_t r,
                  const agg_state *part, marble_error *err)
{
    marble_agg_fn fn = l->d->fns[a];
    marble_datum_kind k = l->akind[a];
    if (fn == MARBLE_AGG_COUNT_STAR || fn == MARBLE_AGG_COUNT) {
        st->count += part ? part->count : 1;
        return MARBLE_OK;
    }
    if (part && !part->has) return MARBLE_OK;
    int64_t iv = 0;
    double dv = 0;
    const char *sv = NULL;
    int64_t sn = 0;
    if (part) {
        iv = part->i;
        dv = part->d;
        sv = part->s;
        sn = part->sn;
    } else if (k == MARBLE_DATUM_INT) {
        iv = v->i[r];
    } else if (k == MARBLE_DATUM_DOUBLE) {
        dv = v->d[r];
    } else if (k == MARBLE_DATUM_BOOL) {
        iv = v->b[r] ? 1 : 0;
    } else {
        sv = v->s[r].p;
        sn = v->s[r].n;
    }
    switch (fn) {
    case MARBLE_AGG_SUM:
        if (k == MARBLE_DATUM_DOUBLE)
            st->d += dv;
        else
            st->isum += part ? part->isum : iv;
        break;
    case MARBLE_AGG_AVG:
        if (part) {
            st->d += part->d;
            st->isum += part->isum;
            st->count += part->count;
        } else {
            if (k == MARBLE_DATUM_DOUBLE)
                st->d += dv;
            else
                st->isum += iv;
            st->count++;
        }
        break;
    case MARBLE_AGG_MIN:
    case MARBLE_AGG_MAX: {
        int sign = fn == MARBLE_AGG_MIN ? 1 : -1;
        if (k == MARBLE_DATUM_STRING) {
            if (!st->has || sign * str_cmp(sv, sn, st->s, st->sn) < 0)
                MARBLE_RETURN_NOT_OK(str_set(st, sv, sn, l, err));
        } else if (k == MARBLE_DATUM_DOUBLE) {
            if (!st->has || (isnan(st->d) && !isnan(dv)) ||
                (!isnan(dv) && sign * ((dv > st->d) - (dv < st->d)) < 0))
                st->d = dv;
        } else if (!st->has || sign * ((iv > st->i) - (iv < st->i)) < 0) {
            st->i = iv;
        }
        break;
    }
    default:
        break;
    }
    st->has = 1;
    return MARBLE_OK;
}

/* The values of one aggregate's argument for the rows of a batch: either straight from an
 * int64 / float64 column (`vals` at logical row 0, rows sel[k] or k, validity from the Arrow
 * bitmap at bit `bit0` of logical row 0) or from a dense vector (byte validity, no sel). */
typedef struct agg_in {
    const void *vals;
    const uint32_t *sel;
    const uint8_t *bm;
    int64_t bit0;
    const uint8_t *vb;
    int64_t n;
} agg_in;

/* Runs BODY for each valid row k (0 <= k < n) with x its value of type T; one tight loop per
 * shape of input. */
#define AGG_EACH(in, T, k, x, BODY)                                                                \
    do {                                                                                           \
        const T *v_ = (const T *)(in)->vals;                                                       \
        const uint32_t *sel_ = (in)->sel;                                                          \
        const uint8_t *bm_ = (in)->bm, *vb_ = (in)->vb;                                            \
        int64_t b0_ = (in)->bit0, n_ = (in)->n;                                                    \
        if (!sel_ && !bm_ && !vb_) {                                                               \
            for (int64_t k = 0; k < n_; k++) {                                                     \
                T x = v_[k];                                                                       \
                BODY;                                                                              \
            }                                                                                      \
        } else if (!sel_ && vb_) {                                                                 \
            for (int64_t k = 0; k < n_; k++)                                                       \
                if (vb_[k]) {                                                                      \
                    T x = v_[k];                                                                   \
                    BODY;                                                                          \
                }                                                                                  \
        } else if (!sel_) {                                                                        \
            for (int64_t k = 0; k < n_; k++) {                                                     \
                int64_t p_ = b0_ + k;                                                              \
                if ((bm_[p_ >> 3] >> (p_ & 7)) & 1) {                                              \
                    T x = v_[k];                                                                   \
                    BODY;                                                                          \
                }                                                                                  \
            }                                                                                      \
        } else if (!bm_) {                                                                         \
            for (int64_t k = 0; k < n_; k++) {                                                     \
                T x = v_[sel_[k]];                                                                 \
                BODY;                                                                              \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t k = 0; k < n_; k++) {                                                     \
                int64_t p_ = b0_ + sel_[k];                                                        \
                if ((bm_[p_ >> 3] >> (p_ & 7)) & 1) {                                              \
                    T x = v_[sel_[k]];                                                             \
                    BODY;                                                                          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* Set bits in bm[bit0, bit0 + n). */
static int64_t count_valid(const agg_in *in)
{
    if (!in->bm && !in->vb) return in->n;
    int64_t c = 0;
    if (in->vb) {
        for (int64_t k = 0; k < in->n; k++)
            c += in->vb[k];
    } else if (!in->sel) {
        c = in->n - marble__arrow_bitmap_count_zeros(in->bm, in->bit0, in->n);
    } else {
        for (int64_t k = 0; k < in->n; k++) {
            int64_t p = in->bit0 + in->sel[k];
            c += (in->bm[p >> 3] >> (p & 7)) & 1;
        }
    }
    return c;
}

/* Fills `in` for aggregate a: direct from the batch column when it is a plain int64 / float64
 * column whose arrays look sound (else evaluation reports the problem), or from av[a]. */
static int agg_input(marble__agg_local *l, size_t a, const struct ArrowArray *batch,
                     const uint32_t *sel, int64_t n, agg_in *in, marble_error *err)
{
    memset(in, 0, sizeof *in);
    in->n = n;
    int c = l->acol[a];
    const struct ArrowArray *col =
        c >= 0 && c < batch->n_children && batch->children ? batch->children[c] : NULL;
    if (col && col->n_buffers == 2 && col->buffers && col->buffers[1] &&
        col->length >= batch->offset + batch->length && (col->null_count == 0 || col->buffers[0])) {
        int64_t base = col->offset + batch->offset;
        in->vals = (const char *)col->buffers[1] + base * 8;
        in->sel = sel;
        if (col->null_count != 0) {
            in->bm = col->buffers[0];
            in->bit0 = base;
        }
        return MARBLE_OK;
    }
    marble__vec *v = &l->av[a];
    MARBLE_RETURN_NOT_OK(marble__expr_eval(l->d->args[a], batch, sel, n, v, err));
    switch (v->kind) {
    case MARBLE_DATUM_INT:
        in->vals = v->i;
        break;
    case MARBLE_DATUM_DOUBLE:
        in->vals = v->d;
        break;
    default:
        in->vals = NULL; /* BOOL / STRING: update() reads the vector */
    }
    in->vb = v->valid;
    return MARBLE_OK;
}

static double sum_dense(const double *d, int64_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t r = 0;
    for (; r + 4 <= n; r += 4) {
        s0 += d[r];
        s1 += d[r + 1];
        s2 += d[r + 2];
        s3 += d[r + 3];
    }
    for (; r < n; r++)
        s0 += d[r];
    return (s0 + s1) + (s2 + s3);
}

/* Folds every row of `in` into the single state st (no groups). */
static int fold_all(marble__agg_local *l, size_t a, agg_state *st, const agg_in *in,
                    marble_error *err)
{
    marble_agg_fn fn = l->d->fns[a];
    int dbl = l->akind[a] == MARBLE_DATUM_DOUBLE;
    if (fn == MARBLE_AGG_COUNT) {
        st->count += count_valid(in);
        return MARBLE_OK;
    }
    if (fn == MARBLE_AGG_SUM && dbl) {
        double s = 0;
        int64_t c = 0;
        if (!in->sel && !in->bm && !in->vb) {
            s = sum_dense(in->vals, in->n);
            c = in->n;
        } else {
            AGG_EACH(in, double, k, x, (s += x, c++));
        }
        st->d += s;
        if (c) st->has = 1;
        return MARBLE_OK;
    }
    if (fn == MARBLE_AGG_SUM) {
        i128 s = 0;
        int64_t c = 0;
        AGG_EACH(in, int64_t, k, x, (s += x, c++));
        st->isum += s;
        if (c) st->has = 1;
        return MARBLE_OK;
    }
    if (fn == MARBLE_AGG_AVG && dbl) {
        double s = 0;
        int64_t c = 0;
        if (!in->sel && !in->bm && !in->vb) {
            s = sum_dense(in->vals, in->n);
            c = in->n;
        } else {
            AGG_EACH(in, double, k, x, (s += x, c++));
        }
        st->d += s;
        st->count += c;
        if (c) st->has = 1;
        return MARBLE_OK;
    }
    if (fn == MARBLE_AGG_AVG) {
        i128 s = 0;
        int64_t c = 0;
        AGG_EACH(in, int64_t, k, x, (s += x, c++));
        st->isum += s;
        st->count += c;
        if (c) st->has = 1;
        return MARBLE_OK;
    }
    int has = st->has;
    if (dbl) {
        double m = st->d;
        if (fn == MARBLE_AGG_MIN)
            AGG_EACH(in, double, k, x, {
                if (!has || (isnan(m) && !isnan(x)) || x < m) m = x;
                has = 1;
            });
        else
            AGG_EACH(in, double, k, x, {
                if (!has || (isnan(m) && !isnan(x)) || x > m) m = x;
                has = 1;
            });
        st->d = m;
    } else {
        int64_t m = st->i;
        if (fn == MARBLE_AGG_MIN)
            AGG_EACH(in, int64_t, k, x, {
                m = !has || x < m ? x : m;
                has = 1;
            });
        else
            AGG_EACH(in, int64_t, k, x, {
                m = !has || x > m ? x : m;
                has = 1;
            });
        st->i = m;
    }
    st->has = has;
    return MARBLE_OK;
}

/* Folds row k of `in` into states[gids[k] * na + a]. */
static int fold_groups(marble__agg_local *l, size_t a, const agg_in *in, marble_error *err)
{
    marble_agg_fn fn = l->d->fns[a];
    int dbl = l->akind[a] == MARBLE_DATUM_DOUBLE;
    const int64_t na = (int64_t)l->d->n_aggs;
    const int64_t *gid = l->gids;
    agg_state *st = l->states + a;
    if (fn == MARBLE_AGG_COUNT) {
        if (dbl)
            AGG_EACH(in, double, k, x, ((void)x, st[gid[k] * na].count++));
        else
            AGG_EACH(in, int64_t, k, x, ((void)x, st[gid[k] * na].count++));
    } else if (fn == MARBLE_AGG_SUM && dbl) {
        AGG_EACH(in, double, k, x, {
            agg_state *g = &st[gid[k] * na];
            g->d += x;
            g->has = 1;
        });
    } else if (fn == MARBLE_AGG_SUM) {
        AGG_EACH(in, int64_t, k, x, {
            agg_state *g = &st[gid[k] * na];
            g->isum += x;
            g->has = 1;
        });
    } else if (fn == MARBLE_AGG_AVG && dbl) {
        AGG_EACH(in, double, k, x, {
            agg_state *g = &st[gid[k] * na];
            g->d += x;
            g->count++;
            g->has = 1;
        });
    } else if (fn == MARBLE_AGG_AVG) {
        AGG_EACH(in, int64_t, k, x, {
            agg_state *g = &st[gid[k] * na];
            g->isum += x;
            g->count++;
            g->has = 1;
        });
    } else if (dbl) {
        int sign = fn == MARBLE_AGG_MIN ? 1 : -1;
        AGG_EACH(in, double, k, x, {
            agg_state *g = &st[gid[k] * na];
            if (!g->has || (isnan(g->d) && !isnan(x)) || sign * ((x > g->d) - (x < g->d)) < 0)
                g->d = x;
            g->has = 1;
        });
    } else if (fn == MARBLE_AGG_MIN) {
        AGG_EACH(in, int64_t, k, x, {
            agg_state *g = &st[gid[k] * na];
            if (!g->has || x < g->i) g->i = x;
            g->has = 1;
        });
    } else {
        AGG_EACH(in, int64_t, k, x, {
            agg_state *g = &st[gid[k] * na];
            if (!g->has || x > g->i) g->i = x;
            g->has = 1;
        });
    }
    return MARBLE_OK;
}

int marble__agg_consume(marble__agg_local *l, const struct ArrowArray *batch, const uint32_t *sel,
                        int64_t n, marble_error *err)
{
    const marble__agg_def *d = l->d;
    size_t na = d->n_aggs;
    if (n == 0) return MARBLE_OK;
    for (size_t g = 0; g < d->n_groups; g++)
        MARBLE_RETURN_NOT_OK(marble__expr_eval(d->groups[g], batch, sel, n, &l->kv[g], err));
    /* every argument is evaluated before any group or state changes */
    agg_in in_stack[8];
    agg_in *in = na <= 8 ? in_stack : malloc(na * sizeof *in);
    if (!in) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
    int rc = MARBLE_OK;
    for (size_t a = 0; a < na && rc == MARBLE_OK; a++)
        if (d->args[a]) rc = agg_input(l, a, batch, sel, n, &in[a], err);
    if (rc == MARBLE_OK && d->n_groups && (size_t)n > l->gids_cap) {
        int64_t *ng = realloc(l->gids, (size_t)n * sizeof *ng);
        if (ng) {
            l->gids = ng;
            l->gids_cap = (size_t)n;
        } else {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
        }
    }
    if (rc != MARBLE_OK || d->n_groups == 0) {
        /* no groups: every row folds into group 0, no gids needed */
    } else if (l->fast) {
        const marble__vec *v = &l->kv[0];
        enum { AHEAD = 8 };
        for (int64_t r = 0; r < n && rc == MARBLE_OK; r++) {
            if (r + AHEAD < n && l->cap)
                __builtin_prefetch(&l->slots[mix64((uint64_t)v->i[r + AHEAD]) & (l->cap - 1)]);
            if (v->valid && !v->valid[r]) {
                if (l->null_gid < 0) rc = new_group(l, &l->null_gid, err);
                l->gids[r] = l->null_gid;
            } else {
                rc = find_int(l, v->i[r], &l->gids[r], err);
            }
        }
    } else {
        for (int64_t r = 0; r < n && rc == MARBLE_OK; r++) {
            size_t kn = key_bytes(l, r);
            if (kn > l->kbuf_cap) {
                size_t cap = kn * 2;
                uint8_t *nb = realloc(l->kbuf, cap);
                if (!nb) {
                    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
                    break;
                }
                l->kbuf = nb;
                l->kbuf_cap = cap;
            }
            key_write(l, r, l->kbuf);
            rc = find_bytes(l, l->kbuf, kn, &l->gids[r], err);
        }
    }
    for (size_t a = 0; a < na && rc == MARBLE_OK; a++) {
        marble_agg_fn fn = d->fns[a];
        marble_datum_kind k = l->akind[a];
        int typed = k == MARBLE_DATUM_INT || k == MARBLE_DATUM_DOUBLE;
        if (fn == MARBLE_AGG_COUNT_STAR) {
            if (d->n_groups == 0)
                l->states[a].count += n;
            else
                for (int64_t r = 0; r < n; r++)
                    l->states[l->gids[r] * (int64_t)na + (int64_t)a].count++;
        } else if (typed || fn == MARBLE_AGG_COUNT) {
            if (!typed) {
                /* COUNT of a BOOL / STRING argument only needs the validity */
                in[a].vals = NULL;
                if (d->n_groups == 0) {
                    l->states[a].count += count_valid(&in[a]);
                } else {
                    const uint8_t *vb = in[a].vb;
                    for (int64_t r = 0; r < n; r++)
                        if (!vb || vb[r]) l->states[l->gids[r] * (int64_t)na + (int64_t)a].count++;
                }
            } else if (d->n_groups == 0) {
                rc = fold_all(l, a, &l->states[a], &in[a], err);
            } else {
                rc = fold_groups(l, a, &in[a], err);
            }
        } else {
            const marble__vec *v = &l->av[a];
            for (int64_t r = 0; r < n && rc == MARBLE_OK; r++) {
                if (v->valid && !v->valid[r]) continue;
                int64_t g = d->n_groups ? l->gids[r] : 0;
                rc = update(l, a, &l->states[g * (int64_t)na + (int64_t)a], v, r, NULL, err);
            }
        }
    }
    if (in != in_stack) free(in);
    MARBLE_RETURN_NOT_OK(rc);
    return marble__mem_need(&l->mem, in_use(l), err);
}

int marble__agg_merge(marble__agg_local *into, marble__agg_local *from, marble_error *err)
{
    size_t na = into->d->n_aggs;
    for (int64_t g = 0; g < from->n_groups; g++) {
        int64_t gid;
        if (into->d->n_groups == 0)
            gid = 0;
        else if (into->fast && g == from->null_gid) {
            if (into->null_gid < 0) MARBLE_RETURN_NOT_OK(new_group(into, &into->null_gid, err));
            gid = into->null_gid;
        } else if (into->fast)
            MARBLE_RETURN_NOT_OK(find_int(into, from->gkey[g], &gid, err));
        else
            MARBLE_RETURN_NOT_OK(
                find_bytes(into, from->arena + from->gkey[g], from->glen[g], &gid, err));
        for (size_t a = 0; a < na; a++)
            MARBLE_RETURN_NOT_OK(update(into, a, &into->states[gid * (int64_t)na + (int64_t)a],
                                        NULL, 0, &from->states[g * (int64_t)na + (int64_t)a], err));
    }
    return marble__mem_need(&into->mem, in_use(into), err);
}

static int is_uint_format(const char *f)
{
    return f[1] == 0 && (f[0] == 'C' || f[0] == 'S' || f[0] == 'I' || f[0] == 'L');
}

static int append_key(marble_batch_builder *bb, int col, const char *format, marble_datum_kind k,
                      const uint8_t **pp, marble_error *err)
{
    const uint8_t *p = *pp;
    if (*p++ == 0) {
        *pp = p;
        return marble_builder_append_null(bb, col, err);
    }
    int rc;
    switch (k) {
    case MARBLE_DATUM_BOOL:
        rc = marble_builder_append_int(bb, col, *p, err);
        p++;
        break;
    case MARBLE_DATUM_STRING: {
        int64_t n;
        memcpy(&n, p, 8);
        rc = marble_builder_append_bytes(bb, col, p + 8, (size_t)n, err);
        p += 8 + n;
        break;
    }
    case MARBLE_DATUM_DOUBLE: {
        double x;
        memcpy(&x, p, 8);
        rc = marble_builder_append_double(bb, col, x, err);
        p += 8;
        break;
    }
    default: {
        int64_t x;
        memcpy(&x, p, 8);
        rc = is_uint_format(format) ? marble_builder_append_uint(bb, col, (uint64_t)x, err)
                                    : marble_builder_append_int(bb, col, x, err);
        p += 8;
    }
    }
    *pp = p;
    return rc;
}

static int append_result(const marble__agg_local *l, size_t a, marble_batch_builder *bb, int col,
                         marble_agg_fn fn, marble_datum_kind k, const agg_state *st,
                         marble_error *err)
{
    if (fn == MARBLE_AGG_COUNT || fn == MARBLE_AGG_COUNT_STAR)
        return marble_builder_append_int(bb, col, st->count, err);
    if (fn == MARBLE_AGG_AVG) {
        if (!st->count) return marble_builder_append_null(bb, col, err);
        double sum = k == MARBLE_DATUM_DOUBLE ? st->d : (double)st->isum;
        return marble_builder_append_double(bb, col, sum / (double)st->count, err);
    }
    if (!st->has) return marble_builder_append_null(bb, col, err);
    if (fn == MARBLE_AGG_SUM && k != MARBLE_DATUM_DOUBLE) {
        if (st->isum > INT64_MAX || st->isum < INT64_MIN) return sum_overflow(l, a, err);
        return marble_builder_append_int(bb, col, (int64_t)st->isum, err);
    }
    switch (k) {
    case MARBLE_DATUM_DOUBLE:
        return marble_builder_append_double(bb, col, st->d, err);
    case MARBLE_DATUM_STRING:
        return marble_builder_append_bytes(bb, col, st->s ? st->s : "", (size_t)st->sn, err);
    default:
        return marble_builder_append_int(bb, col, st->i, err);
    }
}

int marble__agg_finish(marble__agg_local *l, struct ArrowArray **batches, size_t *n,
                       marble_error *err)
{
    const marble__agg_def *d = l->d;
    size_t na = d->n_aggs, ng = d->n_groups;
    *batches = NULL;
    *n = 0;
    size_t n_out = (size_t)((l->n_groups + MARBLE__OUT_ROWS - 1) / MARBLE__OUT_ROWS);
    struct ArrowArray *out = calloc(n_out + 1, sizeof *out);
    marble_batch_builder *bb = NULL;
    int rc = out ? marble_batch_builder_create(d->out, &bb, err)
                 : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "aggregate: out of memory");
    for (int64_t g = 0; rc == MARBLE_OK && g < l->n_groups; g++) {
        if (ng) {
            if (l->fast) {
                if (g == l->null_gid)
                    rc = marble_builder_append_null(bb, 0, err);
                else if (is_uint_format(d->out->children[0]->format))
                    rc = marble_builder_append_uint(bb, 0, (uint64_t)l->gkey[g], err);
                else
                    rc = marble_builder_append_int(bb, 0, l->gkey[g], err);
            } else {
                const uint8_t *p = l->arena + l->gkey[g];
                for (size_t k = 0; rc == MARBLE_OK && k < ng; k++)
                    rc = append_key(bb, (int)k, d->out->children[k]->format, l->gkind[k], &p, err);
            }
        }
        for (size_t a = 0; rc == MARBLE_OK && a < na; a++)
            rc = append_result(l, a, bb, (int)(ng + a), d->fns[a], l->akind[a],
                               &l->states[g * (int64_t)na + (int64_t)a], err);
        if (rc == MARBLE_OK &&
            (marble_batch_builder_rows(bb) == MARBLE__OUT_ROWS || g + 1 == l->n_groups))
            if ((rc = marble_batch_builder_finish(bb, &out[*n], err)) == MARBLE_OK) (*n)++;
    }
    marble_batch_builder_destroy(bb);
    if (rc != MARBLE_OK) {
        for (size_t i = 0; out && i < *n; i++)
            marble_arrow_array_release(&out[i]);
        free(out);
        *n = 0;
        return rc;
    }
    *batches = out;
    return MARBLE_OK;
}
