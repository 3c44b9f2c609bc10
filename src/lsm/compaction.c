/*
 * Leveled compaction: the score-based picker, the merge of a job's inputs into new SSTables in
 * key-range pieces that run in parallel on the scheduler, and the token-bucket rate limiter
 * (see compaction.h).
 *
 * The round-robin compaction pointer of each level lives in a small process-wide table (the
 * largest manifest key of the file last picked there), guarded by a mutex. It only steers which
 * file is picked next, never correctness, so databases in one process sharing it merely share
 * the rotation; marble__compaction_reset_pointers clears it (for tests).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/compaction.h"
#include "lsm/iter.h"
#include "marble/base.h"

#define DEFAULT_L0_TRIGGER 4
#define DEFAULT_L1_BYTES ((uint64_t)256 << 20)
#define DEFAULT_FILE_SIZE ((uint64_t)64 << 20)
#define CANCEL_POLL_ROWS 1024

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

uint64_t marble__level_max_bytes(const marble__compaction_options *opts, int level)
{
    uint64_t b = opts && opts->level1_max_bytes ? opts->level1_max_bytes : DEFAULT_L1_BYTES;
    for (int l = 1; l < level; l++) {
        if (b > UINT64_MAX / 10) return UINT64_MAX;
        b *= 10;
    }
    return b;
}

/* ---- the compaction pointers -------------------------------------------------------------------
 */

static pthread_mutex_t ptr_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    unsigned char *key;
    size_t len;
    int set;
} ptrs[MARBLE__NUM_LEVELS];

void marble__compaction_reset_pointers(void)
{
    pthread_mutex_lock(&ptr_mu);
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++) {
        free(ptrs[l].key);
        ptrs[l].key = NULL;
        ptrs[l].len = 0;
        ptrs[l].set = 0;
    }
    pthread_mutex_unlock(&ptr_mu);
}

/* The index of the first file of `level` whose largest key is past the level's pointer (0 when
 * there is none or no pointer). */
static size_t ptr_start(const marble__version *v, int level)
{
    size_t n = marble__version_num_files(v, level), i = 0;
    pthread_mutex_lock(&ptr_mu);
    if (ptrs[level].set) {
        while (i < n) {
            const marble__file_meta *f = marble__version_file(v, level, i);
            if (key_cmp(f->largest, f->largest_len, ptrs[level].key, ptrs[level].len) > 0) break;
            i++;
        }
        if (i == n) i = 0;
    }
    pthread_mutex_unlock(&ptr_mu);
    return i;
}

static void ptr_set(int level, const unsigned char *key, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy) return; /* the rotation restarts from the beginning: harmless */
    if (len) memcpy(copy, key, len);
    pthread_mutex_lock(&ptr_mu);
    free(ptrs[level].key);
    ptrs[level].key = copy;
    ptrs[level].len = len;
    ptrs[level].set = 1;
    pthread_mutex_unlock(&ptr_mu);
}

/* ---- picking ------------------------------------------------------------------------------------
 */

typedef struct range {
    const unsigned char *lo, *hi;
    size_t lol, hil;
} range;

static int overlaps(const marble__file_meta *f, const range *r)
{
    return key_cmp(f->largest, f->largest_len, r->lo, r->lol) >= 0 &&
           key_cmp(f->smallest, f->smallest_len, r->hi, r->hil) <= 0;
}

static void range_of(const marble__file_meta *f, range *r)
{
    r->lo = f->smallest;
    r->lol = f->smallest_len;
    r->hi = f->largest;
    r->hil = f->largest_len;
}

static void range_add(range *r, const marble__file_meta *f)
{
    if (key_cmp(f->smallest, f->smallest_len, r->lo, r->lol) < 0) {
        r->lo = f->smallest;
        r->lol = f->smallest_len;
    }
    if (key_cmp(f->largest, f->largest_len, r->hi, r->hil) > 0) {
        r->hi = f->largest;
        r->hil = f->largest_len;
    }
}

static int is_busy(marble__busy_fn busy, void *ud, const marble__file_meta *f)
{
    return busy && busy(ud, f->number);
}

static int meta_copy(marble__file_meta *dst, const marble__file_meta *src)
{
    *dst = *src;
    dst->smallest = malloc(src->smallest_len ? src->smallest_len : 1);
    dst->largest = malloc(src->largest_len ? src->largest_len : 1);
    if (!dst->smallest || !dst->largest) {
        free(dst->smallest);
        free(dst->largest);
        dst->smallest = dst->largest = NULL;
        return 0;
    }
    if (src->smallest_len) memcpy(dst->smallest, src->smallest, src->smallest_len);
    if (src->largest_len) memcpy(dst->largest, src->largest, src->largest_len);
    return 1;
}

void marble__compaction_free(marble__compaction *c)
{
    if (!c) return;
    for (int w = 0; w < 2; w++) {
        for (size_t i = 0; i < c->n_inputs[w]; i++) {
            free(c->inputs[w][i].smallest);
            free(c->inputs[w][i].largest);
        }
        free(c->inputs[w]);
    }
    free(c);
}

/* A compaction from `level` to `output_level` of the files picked[0][0, n0) and
 * picked[1][0, n1) (pointers into the version). */
static int make_compaction(int level, int output_level, const marble__file_meta *const *in0,
                           size_t n0, const marble__file_meta *const *in1, size_t n1,
                           marble__compaction **out, marble_error *err)
{
    marble__compaction *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->level = level;
    c->output_level = output_level;
    const marble__file_meta *const *src[2] = {in0, in1};
    size_t n[2] = {n0, n1};
    for (int w = 0; w < 2; w++) {
        c->inputs[w] = calloc(n[w] ? n[w] : 1, sizeof *c->inputs[w]);
        if (!c->inputs[w]) goto oom;
        for (size_t i = 0; i < n[w]; i++) {
            if (!meta_copy(&c->inputs[w][i], src[w][i])) goto oom;
            c->n_inputs[w]++;
        }
    }
    const marble__file_meta *first = n0 ? in0[0] : in1[0];
    c->table_id = first->smallest_len >= 4 ? get_be32(first->smallest) : 0;
    *out = c;
    return MARBLE_OK;
oom:
    marble__compaction_free(c);
    return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction pick: out of memory");
}

/* Files of `level` overlapping r into list (sized for the level); -1 when one is busy. */
static long collect_overlaps(const marble__version *v, int level, const range *r,
                             marble__busy_fn busy, void *ud, const marble__file_meta **list)
{
    size_t n = marble__version_num_files(v, level);
    long k = 0;
    for (size_t i = 0; i < n; i++) {
        const marble__file_meta *f = marble__version_file(v, level, i);
        if (!overlaps(f, r)) continue;
        if (is_busy(busy, ud, f)) return -1;
        list[k++] = f;
    }
    return k;
}

static int pick_l0(const marble__version *v, marble__busy_fn busy, void *ud,
                   marble__compaction **out, marble_error *err)
{
    size_t n0 = marble__version_num_files(v, 0), n1 = marble__version_num_files(v, 1);
    const marble__file_meta **l0 = calloc(n0 ? n0 : 1, sizeof *l0);
    const marble__file_meta **l1 = calloc(n1 ? n1 : 1, sizeof *l1);
    char *in = calloc(n0 ? n0 : 1, 1);
    int rc = MARBLE_OK;
    if (!l0 || !l1 || !in) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction pick: out of memory");
        goto cleanup;
    }
    /* L0 is newest first: candidates from the oldest on. */
    for (size_t s = n0; s-- > 0;) {
        const marble__file_meta *start = marble__version_file(v, 0, s);
        if (is_busy(busy, ud, start)) continue;
        memset(in, 0, n0);
        in[s] = 1;
        range r;
        range_of(start, &r);
        int changed = 1, bad = 0;
        while (changed && !bad) {
            changed = 0;
            for (size_t j = 0; j < n0; j++) {
                const marble__file_meta *f = marble__version_file(v, 0, j);
                if (in[j] || !overlaps(f, &r)) continue;
                if (is_busy(busy, ud, f)) {
                    bad = 1;
                    break;
                }
                in[j] = 1;
                range_add(&r, f);
                changed = 1;
            }
        }
        if (bad) continue;
        long k1 = collect_overlaps(v, 1, &r, busy, ud, l1);
        if (k1 < 0) continue;
        size_t k0 = 0;
        for (size_t j = 0; j < n0; j++)
            if (in[j]) l0[k0++] = marble__version_file(v, 0, j);
        rc = make_compaction(0, 1, l0, k0, l1, (size_t)k1, out, err);
        goto cleanup;
    }
cleanup:
    free(l0);
    free(l1);
    free(in);
    return rc;
}

static int pick_ln(const marble__version *v, int level, marble__busy_fn busy, void *ud,
                   marble__compaction **out, marble_error *err)
{
    size_t n = marble__version_num_files(v, level);
    size_t nn = marble__version_num_files(v, level + 1);
    if (n == 0) return MARBLE_OK;
    const marble__file_meta **next = calloc(nn ? nn : 1, sizeof *next);
    if (!next) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction pick: out of memory");
    size_t start = ptr_start(v, level);
    int rc = MARBLE_OK;
    for (size_t t = 0; t < n; t++) {
        const marble__file_meta *f = marble__version_file(v, level, (start + t) % n);
        if (is_busy(busy, ud, f)) continue;
        range r;
        range_of(f, &r);
        long k = collect_overlaps(v, level + 1, &r, busy, ud, next);
        if (k < 0) continue;
        rc = make_compaction(level, level + 1, &f, 1, next, (size_t)k, out, err);
        if (rc == MARBLE_OK) ptr_set(level, f->largest, f->largest_len);
        break;
    }
    free(next);
    return rc;
}

int marble__compaction_pick(const marble__version *v, const marble__compaction_options *opts,
                            marble__busy_fn busy, void *busy_ud, marble__compaction **out,
                            marble_error *err)
{
    *out = NULL;
    if (!v)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "compaction pick: NULL version");
    int trigger = opts && opts->level0_compaction_trigger > 0 ? opts->level0_compaction_trigger
                                                              : DEFAULT_L0_TRIGGER;
    double score[MARBLE__NUM_LEVELS - 1];
    score[0] = (double)marble__version_num_files(v, 0) / (double)trigger;
    for (int l = 1; l < MARBLE__NUM_LEVELS - 1; l++) {
        uint64_t bytes = 0;
        size_t n = marble__version_num_files(v, l);
        for (size_t i = 0; i < n; i++)
            bytes += marble__version_file(v, l, i)->size;
        score[l] = (double)bytes / (double)marble__level_max_bytes(opts, l);
    }
    int tried[MARBLE__NUM_LEVELS - 1] = {0};
    for (;;) {
        int best = -1;
        for (int l = 0; l < MARBLE__NUM_LEVELS - 1; l++)
            if (!tried[l] && score[l] >= 1.0 && (best < 0 || score[l] > score[best])) best = l;
        if (best < 0) return MARBLE_OK;
        tried[best] = 1;
        int rc = best == 0 ? pick_l0(v, busy, busy_ud, out, err)
                           : pick_ln(v, best, busy, busy_ud, out, err);
        if (rc != MARBLE_OK || *out) return rc;
    }
}

int marble__compaction_pick_level(const marble__version *v, uint32_t table_id, int level,
                                  int output_level, marble__busy_fn busy, void *busy_ud,
                                  marble__compaction **out, marble_error *err)
{
    *out = NULL;
    if (!v || level < 0 || level >= MARBLE__NUM_LEVELS || output_level < level ||
        output_level >= MARBLE__NUM_LEVELS)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "compaction of level %d into level %d: invalid levels", level,
                                output_level);
    unsigned char prefix[4];
    put_be32(prefix, table_id);
    size_t n = marble__version_num_files(v, level);
    size_t nn = output_level > level ? marble__version_num_files(v, output_level) : 0;
    const marble__file_meta **in0 = calloc(n ? n : 1, sizeof *in0);
    const marble__file_meta **in1 = calloc(nn ? nn : 1, sizeof *in1);
    int rc = MARBLE_OK;
    if (!in0 || !in1) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction pick: out of memory");
        goto cleanup;
    }
    size_t k0 = 0;
    range r = {0};
    for (size_t i = 0; i < n; i++) {
        const marble__file_meta *f = marble__version_file(v, level, i);
        if (f->smallest_len < 4 || memcmp(f->smallest, prefix, 4) != 0) continue;
        if (is_busy(busy, busy_ud, f)) {
            rc = marble_error_set(err, MARBLE_ERR_BUSY,
                                  "compaction of table %u level %d: file %llu is being compacted",
                                  table_id, level, (unsigned long long)f->number);
            goto cleanup;
        }
        if (k0 == 0)
            range_of(f, &r);
        else
            range_add(&r, f);
        in0[k0++] = f;
    }
    if (k0 == 0) goto cleanup;
    long k1 = 0;
    if (output_level > level) {
        /* Levels in between must hold nothing of the range (they would be skipped over). */
        for (int l = level + 1; l < output_level; l++) {
            size_t m = marble__version_num_files(v, l);
            for (size_t i = 0; i < m; i++)
                if (overlaps(marble__version_file(v, l, i), &r)) {
                    rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                          "compaction of table %u from level %d into level %d: "
                                          "level %d has overlapping files",
                                          table_id, level, output_level, l);
                    goto cleanup;
                }
        }
        k1 = collect_overlaps(v, output_level, &r, busy, busy_ud, in1);
        if (k1 < 0) {
            rc = marble_error_set(err, MARBLE_ERR_BUSY,
                                  "compaction of table %u into level %d: a file is being compacted",
                                  table_id, output_level);
            goto cleanup;
        }
    }
    rc = make_compaction(level, output_level, in0, k0, in1, (size_t)k1, out, err);
    if (rc == MARBLE_OK) {
        (*out)->manual = 1;
        (*out)->table_id = table_id;
    }
cleanup:
    free(in0);
    free(in1);
    return rc;
}

/* ---- rate limiting ------------------------------------------------------------------------------
 */

#define RATE_SLICE_NS 10000000ull /* waits sleep in slices of at most 10 ms */
#define RATE_BURST_DIV 20         /* the bucket holds at most 1/20 s of tokens */

void marble__rate_limiter_init(marble__rate_limiter *rl, uint64_t bytes_per_sec)
{
    memset(rl, 0, sizeof *rl);
    pthread_mutex_init(&rl->mu, NULL);
    rl->rate = bytes_per_sec;
    rl->last_ns = marble_now_ns();
}

void marble__rate_limiter_destroy(marble__rate_limiter *rl)
{
    if (rl) pthread_mutex_destroy(&rl->mu);
}

int marble__rate_limiter_request(marble__rate_limiter *rl, uint64_t bytes, int (*cancelled)(void *),
                                 void *ud)
{
    if (!rl || rl->rate == 0 || bytes == 0) return MARBLE_OK;
    pthread_mutex_lock(&rl->mu);
    uint64_t now = marble_now_ns();
    double rate = (double)rl->rate, burst = rate / RATE_BURST_DIV;
    rl->balance += (double)(now - rl->last_ns) * rate / 1e9;
    if (rl->balance > burst) rl->balance = burst;
    rl->last_ns = now;
    rl->balance -= (double)bytes;
    double debt = rl->balance < 0 ? -rl->balance : 0;
    pthread_mutex_unlock(&rl->mu);
    uint64_t until = now + (uint64_t)(debt / rate * 1e9);
    for (;;) {
        if (cancelled && cancelled(ud)) return MARBLE_ERR_CANCELLED;
        now = marble_now_ns();
        if (now >= until) return MARBLE_OK;
        uint64_t left = until - now;
        marble_sleep_ns(left < RATE_SLICE_NS ? left : RATE_SLICE_NS);
    }
}

/* ---- running ------------------------------------------------------------------------------------
 */

typedef struct finisher finisher;

typedef struct output {
    uint64_t number;
    char *uri;
    marble__sst_info info;
    int finished;
    finisher *fin; /* finishing on another thread, not collected yet */
} output;

/* A cut output file finished by a task (last batch, index, footer, fsync) while its piece merges
 * into the next file. Whoever claims it first runs the finish: the task, or the piece when it
 * collects its outputs (so a piece never waits for a task that has not started). Freed by the
 * last of the two references. */
struct finisher {
    atomic_int refs;
    atomic_int claimed;
    marble__sst_writer *w;
    marble__sst_info info;
    int rc;
    marble_error err;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done; /* under mu */
};

typedef struct bound {
    unsigned char *key; /* an encoded key (no table prefix) */
    size_t len;
} bound;

typedef struct job job;

/* One subcompaction: the keys in (lo, hi] of every input, merged into its own outputs. */
typedef struct piece {
    job *j;
    const bound *lo, *hi; /* NULL: unbounded */
    marble__sst **ssts;
    size_t n_ssts;
    output *outs;
    size_t n_outs, cap_outs;
    marble__sst_writer *w; /* writing outs[n_outs - 1] */
    unsigned char *mkey;   /* table prefix + key, for the overlap test */
    size_t mkey_cap;
    size_t level_ptr[MARBLE__NUM_LEVELS];
    marble__compaction_result res;
    uint64_t out_bytes; /* output bytes of the files finished or handed to finishers */
    uint64_t charged;   /* output bytes passed to the throttle */
    uint64_t reported;  /* input bytes passed to progress */
    int rc;
    marble_error err;
} piece;

struct job {
    const marble__compaction *c;
    const marble__compaction_env *env;
    piece *pieces;
    size_t n_pieces;
    double bytes_per_row; /* input bytes / input rows, for progress */
    atomic_int failed;    /* a piece failed: the others stop at their next poll */
};

static int piece_cancelled(piece *p)
{
    const marble__compaction_env *env = p->j->env;
    if (atomic_load_explicit(&p->j->failed, memory_order_relaxed)) return 1;
    return env->cancelled && env->cancelled(env->ud);
}

static int open_input(piece *p, const marble__file_meta *f, marble__sst **out, marble_error *err)
{
    const marble__compaction_env *env = p->j->env;
    int rc = env->open_sst(env->ud, f, out, err);
    if (rc != MARBLE_OK) {
        if (err && err->code == MARBLE_OK)
            marble_error_set(err, rc, "compaction: opening input file %llu failed",
                             (unsigned long long)f->number);
        return rc;
    }
    p->ssts[p->n_ssts++] = *out;
    return MARBLE_OK;
}

/* Non-zero when file f may hold keys of the piece's range. */
static int file_in_piece(const piece *p, const marble__file_meta *f)
{
    if (f->smallest_len < 4 || f->largest_len < 4) return 1;
    if (p->lo && key_cmp(f->largest + 4, f->largest_len - 4, p->lo->key, p->lo->len) <= 0) return 0;
    if (p->hi && key_cmp(f->smallest + 4, f->smallest_len - 4, p->hi->key, p->hi->len) > 0)
        return 0;
    return 1;
}

static int build_input(piece *p, marble__iter **out, marble_error *err)
{
    const marble__compaction *c = p->j->c;
    size_t total = c->n_inputs[0] + c->n_inputs[1];
    marble__iter **ch = calloc(total ? total : 1, sizeof *ch);
    size_t k = 0;
    int rc = MARBLE_OK;
    if (!ch) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
    for (int w = 0; w < 2 && rc == MARBLE_OK; w++) {
        size_t n = c->n_inputs[w];
        int lvl = w == 0 ? c->level : c->output_level;
        if (lvl == 0) {
            for (size_t i = 0; i < n && rc == MARBLE_OK; i++) {
                if (!file_in_piece(p, &c->inputs[w][i])) continue;
                marble__sst *s;
                rc = open_input(p, &c->inputs[w][i], &s, err);
                if (rc == MARBLE_OK) rc = marble__iter_sst(s, &ch[k], err);
                if (rc == MARBLE_OK) k++;
            }
            continue;
        }
        /* a sorted run: the files in range are contiguous */
        size_t first = 0, last = n;
        while (first < n && !file_in_piece(p, &c->inputs[w][first]))
            first++;
        while (last > first && !file_in_piece(p, &c->inputs[w][last - 1]))
            last--;
        if (first == last) continue;
        size_t base = p->n_ssts;
        for (size_t i = first; i < last && rc == MARBLE_OK; i++) {
            marble__sst *s;
            rc = open_input(p, &c->inputs[w][i], &s, err);
        }
        if (rc == MARBLE_OK) rc = marble__iter_run(p->ssts + base, last - first, &ch[k], err);
        if (rc == MARBLE_OK) k++;
    }
    if (rc != MARBLE_OK) {
        for (size_t i = 0; i < k; i++)
            marble__iter_destroy(ch[i]);
        free(ch);
        return rc;
    }
    rc = marble__iter_merge(ch, k, out, err);
    free(ch);
    return rc;
}

/* Non-zero when some file in a level below the output level may hold `key` (keys arrive in
 * ascending order, so each level's position only moves forward). */
static int below_has_key(piece *p, const void *key, size_t klen, int *oom)
{
    const marble__version *v = p->j->env->version;
    if (!v) return 1;
    if (4 + klen > p->mkey_cap) {
        size_t cap = p->mkey_cap ? p->mkey_cap : 64;
        while (cap < 4 + klen)
            cap *= 2;
        unsigned char *q = realloc(p->mkey, cap);
        if (!q) {
            *oom = 1;
            return 1;
        }
        p->mkey = q;
        p->mkey_cap = cap;
    }
    put_be32(p->mkey, p->j->c->table_id);
    if (klen) memcpy(p->mkey + 4, key, klen);
    size_t ml = 4 + klen;
    for (int l = p->j->c->output_level + 1; l < MARBLE__NUM_LEVELS; l++) {
        size_t n = marble__version_num_files(v, l);
        if (l == 0) {
            for (size_t i = 0; i < n; i++) {
                const marble__file_meta *f = marble__version_file(v, l, i);
                if (key_cmp(f->smallest, f->smallest_len, p->mkey, ml) <= 0 &&
                    key_cmp(f->largest, f->largest_len, p->mkey, ml) >= 0)
                    return 1;
            }
            continue;
        }
        size_t *at = &p->level_ptr[l];
        while (*at < n) {
            const marble__file_meta *f = marble__version_file(v, l, *at);
            if (key_cmp(f->largest, f->largest_len, p->mkey, ml) >= 0) {
                if (key_cmp(f->smallest, f->smallest_len, p->mkey, ml) <= 0) return 1;
                break;
            }
            (*at)++;
        }
    }
    return 0;
}

static int start_output(piece *p, marble_error *err)
{
    const marble__compaction_env *env = p->j->env;
    if (p->n_outs == p->cap_outs) {
        size_t cap = p->cap_outs ? 2 * p->cap_outs : 4;
        output *o = realloc(p->outs, cap * sizeof *o);
        if (!o) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
        p->outs = o;
        p->cap_outs = cap;
    }
    output *o = &p->outs[p->n_outs];
    memset(o, 0, sizeof *o);
    o->number = env->new_file_number(env->ud);
    int len = snprintf(NULL, 0, "%s/%06llu.arrow", env->dir_uri, (unsigned long long)o->number);
    o->uri = malloc((size_t)len + 1);
    if (!o->uri) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
    snprintf(o->uri, (size_t)len + 1, "%s/%06llu.arrow", env->dir_uri,
             (unsigned long long)o->number);
    p->n_outs++;
    return marble__sst_writer_create(env->fs, o->uri, env->codec, &env->sst_opts, &p->w, err);
}

static int finish_output(piece *p, marble_error *err)
{
    output *o = &p->outs[p->n_outs - 1];
    int rc = marble__sst_writer_finish(p->w, &o->info, err);
    marble__sst_writer_destroy(p->w);
    p->w = NULL;
    if (rc != MARBLE_OK) return rc;
    o->finished = 1;
    p->res.files_out++;
    p->res.bytes_written += o->info.file_size;
    p->out_bytes += o->info.file_size;
    return MARBLE_OK;
}

static void finisher_unref(finisher *f)
{
    /* acq_rel: the last holder sees the other's writes before freeing */
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
    if (f->w) marble__sst_writer_destroy(f->w);
    if (f->rc == MARBLE_OK && f->done) marble__sst_info_free(&f->info);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

/* Runs the finish (run = 1) or drops the file unfinished (run = 0, the job failed). */
static void finisher_run(finisher *f, int run)
{
    if (run)
        f->rc = marble__sst_writer_finish(f->w, &f->info, &f->err);
    else
        f->rc = marble_error_set(&f->err, MARBLE_ERR_CANCELLED, "compaction: output dropped");
    marble__sst_writer_destroy(f->w);
    f->w = NULL;
    pthread_mutex_lock(&f->mu);
    f->done = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static marble_task_status finisher_task(marble_task_ctx *ctx, void *arg)
{
    (void)ctx;
    finisher *f = arg;
    if (!atomic_exchange_explicit(&f->claimed, 1, memory_order_acq_rel)) finisher_run(f, 1);
    finisher_unref(f);
    return MARBLE_TASK_DONE;
}

/* Cuts the current output: finished by a task when the job may use more than one thread,
 * else here. */
static int cut_output(piece *p, marble_error *err)
{
    const marble__compaction_env *env = p->j->env;
    finisher *f = NULL;
    if (env->group && env->subcompactions > 1) f = calloc(1, sizeof *f);
    if (!f) return finish_output(p, err);
    atomic_init(&f->refs, 2);
    atomic_init(&f->claimed, 0);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    p->out_bytes += marble__sst_writer_estimated_size(p->w);
    f->w = p->w;
    p->w = NULL;
    p->outs[p->n_outs - 1].fin = f;
    if (marble_group_spawn(env->group, finisher_task, f) != MARBLE_OK) finisher_unref(f);
    return MARBLE_OK;
}

/* Waits for (or runs) the piece's handed-off finishes; ok = 0 drops those not started. */
static int collect_outputs(piece *p, int ok, marble_error *err)
{
    int rc = MARBLE_OK;
    for (size_t i = 0; i < p->n_outs; i++) {
        output *o = &p->outs[i];
        finisher *f = o->fin;
        if (!f) continue;
        if (!atomic_exchange_explicit(&f->claimed, 1, memory_order_acq_rel)) {
            finisher_run(f, ok);
        } else {
            pthread_mutex_lock(&f->mu);
            while (!f->done)
                pthread_cond_wait(&f->cv, &f->mu);
            pthread_mutex_unlock(&f->mu);
        }
        if (f->rc == MARBLE_OK) {
            o->info = f->info;
            memset(&f->info, 0, sizeof f->info);
            o->finished = 1;
            p->res.files_out++;
            p->res.bytes_written += o->info.file_size;
        } else if (ok && rc == MARBLE_OK) {
            rc = f->rc;
            if (err) *err = f->err;
        }
        o->fin = NULL;
        finisher_unref(f);
    }
    return rc;
}

/* Between batches of input: cancellation, progress and the rate limit. */
static int poll(piece *p, int last, marble_error *err)
{
    const marble__compaction_env *env = p->j->env;
    if (!last && piece_cancelled(p))
        return marble_error_set(err, MARBLE_ERR_CANCELLED, "compaction into %s: cancelled",
                                env->dir_uri);
    if (env->progress) {
        uint64_t done = (uint64_t)((double)p->res.rows_in * p->j->bytes_per_row);
        if (done > p->reported) {
            env->progress(env->ud, done - p->reported);
            p->reported = done;
        }
    }
    if (env->throttle) {
        uint64_t out = p->out_bytes + (p->w ? marble__sst_writer_estimated_size(p->w) : 0);
        if (out > p->charged) {
            uint64_t delta = out - p->charged;
            p->charged = out;
            int rc = env->throttle(env->ud, delta, err);
            if (rc != MARBLE_OK) {
                if (err && err->code == MARBLE_OK)
                    marble_error_set(err, rc, "compaction into %s: cancelled while rate limited",
                                     env->dir_uri);
                return rc;
            }
        }
    }
    return MARBLE_OK;
}

static int grow_copy(unsigned char **buf, size_t *cap, const void *key, size_t klen)
{
    if (klen > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < klen)
            c *= 2;
        unsigned char *q = realloc(*buf, c);
        if (!q) return 0;
        *buf = q;
        *cap = c;
    }
    if (klen) memcpy(*buf, key, klen);
    return 1;
}

static int merge_loop(piece *p, marble__iter *it, marble_error *err)
{
    const marble__compaction_env *env = p->j->env;
    marble__compaction_result *res = &p->res;
    uint64_t target = env->target_file_size ? env->target_file_size : DEFAULT_FILE_SIZE;
    uint64_t snap = env->smallest_snapshot;
    unsigned char *cur = NULL, *last_out = NULL; /* current user key; last key written */
    size_t cur_len = 0, cur_cap = 0, last_len = 0, last_cap = 0;
    int has_cur = 0, has_last = 0, seen_old = 0, rc = MARBLE_OK;
    int skip_lo = p->lo != NULL;

    if (p->lo)
        marble__iter_seek(it, p->lo->key, p->lo->len);
    else
        marble__iter_seek_to_first(it);
    for (; marble__iter_valid(it); marble__iter_next(it)) {
        size_t klen;
        const void *key = marble__iter_key(it, &klen);
        if (skip_lo) { /* the lower bound itself belongs to the piece before */
            if (key_cmp(key, klen, p->lo->key, p->lo->len) == 0) continue;
            skip_lo = 0;
        }
        if (res->rows_in % CANCEL_POLL_ROWS == 0) {
            rc = poll(p, 0, err);
            if (rc != MARBLE_OK) goto done;
        }
        uint64_t seq = marble__iter_seq(it);
        int op = marble__iter_op(it);
        if (!has_cur || key_cmp(key, klen, cur, cur_len) != 0) {
            if (p->hi && key_cmp(key, klen, p->hi->key, p->hi->len) > 0) break;
            if (!grow_copy(&cur, &cur_cap, key, klen)) goto oom;
            cur_len = klen;
            has_cur = 1;
            seen_old = 0;
        }
        res->rows_in++;
        if (seq <= snap) {
            if (seen_old) continue; /* a newer version at or below the snapshot hides it */
            seen_old = 1;
            if (op == 0) {
                int oom = 0;
                int below = below_has_key(p, key, klen, &oom);
                if (oom) goto oom;
                if (!below) continue; /* the delete shadows nothing */
            }
        }

        int new_key = !has_last || key_cmp(key, klen, last_out, last_len) != 0;
        if (p->w && new_key && marble__sst_writer_rows(p->w) > 0 &&
            marble__sst_writer_estimated_size(p->w) >= target) {
            rc = cut_output(p, err);
            if (rc != MARBLE_OK) goto done;
        }
        if (!p->w) {
            rc = start_output(p, err);
            if (rc != MARBLE_OK) goto done;
        }
        int64_t row = -1;
        const struct ArrowArray *batch = marble__iter_batch(it, &row);
        if (batch) {
            rc = marble__sst_writer_add_arrow(p->w, key, klen, batch, row, err);
        } else {
            size_t vlen;
            const void *val = marble__iter_value(it, &vlen);
            rc = marble__sst_writer_add(p->w, key, klen, seq, op, val, vlen, err);
        }
        if (rc != MARBLE_OK) goto done;
        res->rows_out++;
        if (new_key) {
            if (!grow_copy(&last_out, &last_cap, key, klen)) goto oom;
            last_len = klen;
            has_last = 1;
        }
    }
    rc = marble__iter_status(it, err);
    if (rc == MARBLE_OK && p->w) rc = finish_output(p, err);
    if (rc == MARBLE_OK) rc = poll(p, 1, err);
    goto done;
oom:
    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
done:
    free(cur);
    free(last_out);
    return rc;
}

static void run_piece(piece *p)
{
    size_t total = p->j->c->n_inputs[0] + p->j->c->n_inputs[1];
    marble__iter *it = NULL;
    if (atomic_load_explicit(&p->j->failed, memory_order_relaxed)) {
        p->rc = marble_error_set(&p->err, MARBLE_ERR_CANCELLED, "compaction: a sibling failed");
        return;
    }
    p->ssts = calloc(total ? total : 1, sizeof *p->ssts);
    if (!p->ssts)
        p->rc = marble_error_set(&p->err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
    else
        p->rc = build_input(p, &it, &p->err);
    if (p->rc == MARBLE_OK) p->rc = merge_loop(p, it, &p->err);
    int crc = collect_outputs(p, p->rc == MARBLE_OK, &p->err);
    if (p->rc == MARBLE_OK) p->rc = crc;
    marble__iter_destroy(it);
    if (p->w) marble__sst_writer_destroy(p->w);
    p->w = NULL;
    for (size_t i = 0; i < p->n_ssts; i++)
        marble__sst_unref(p->ssts[i]);
    free(p->ssts);
    p->ssts = NULL;
    p->n_ssts = 0;
    /* relaxed: only a hint that stops the siblings early; results are read after the join */
    if (p->rc != MARBLE_OK) atomic_store_explicit(&p->j->failed, 1, memory_order_relaxed);
}

/* ---- splitting a job into key ranges ------------------------------------------------------------
 */

typedef struct cand {
    const uint8_t *key;
    size_t len;
    double bytes;
} cand;

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return key_cmp(x->key, x->len, y->key, y->len);
}

/* Up to want - 1 boundaries from the inputs' batch boundaries (each batch's largest key, weighted
 * by its share of its file's bytes), so that the pieces between them hold about equal bytes. */
static int plan_bounds(job *j, int want, bound **out, size_t *n_out, marble_error *err)
{
    const marble__compaction *c = j->c;
    const marble__compaction_env *env = j->env;
    size_t total = c->n_inputs[0] + c->n_inputs[1], n_ssts = 0, n_cand = 0, cap = 0;
    marble__sst **ssts = calloc(total ? total : 1, sizeof *ssts);
    cand *cands = NULL;
    bound *b = NULL;
    size_t nb = 0;
    int rc = MARBLE_OK;
    *out = NULL;
    *n_out = 0;
    if (!ssts) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
    for (int w = 0; w < 2 && rc == MARBLE_OK; w++)
        for (size_t i = 0; i < c->n_inputs[w] && rc == MARBLE_OK; i++) {
            marble__sst *s;
            rc = env->open_sst(env->ud, &c->inputs[w][i], &s, err);
            if (rc != MARBLE_OK) {
                if (err && err->code == MARBLE_OK)
                    marble_error_set(err, rc, "compaction: opening input file %llu failed",
                                     (unsigned long long)c->inputs[w][i].number);
                break;
            }
            ssts[n_ssts++] = s;
            int64_t nbat = marble__sst_num_batches(s);
            uint64_t rows = marble__sst_rows(s);
            double size = (double)marble__sst_file_size(s);
            for (int64_t k = 0; k < nbat; k++) {
                const uint8_t *sm, *lg;
                size_t sl, ll;
                int64_t r;
                marble__sst_batch_range(s, k, &sm, &sl, &lg, &ll, &r);
                if (n_cand == cap) {
                    size_t nc = cap ? 2 * cap : 256;
                    cand *q = realloc(cands, nc * sizeof *q);
                    if (!q) {
                        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                              "compaction: out of memory");
                        break;
                    }
                    cands = q;
                    cap = nc;
                }
                cands[n_cand].key = lg;
                cands[n_cand].len = ll;
                cands[n_cand].bytes = rows ? size * (double)r / (double)rows : 0;
                n_cand++;
            }
        }
    if (rc != MARBLE_OK || n_cand < 2) goto cleanup;
    qsort(cands, n_cand, sizeof *cands, cand_cmp);
    double sum = 0;
    for (size_t i = 0; i < n_cand; i++)
        sum += cands[i].bytes;
    b = calloc((size_t)want, sizeof *b);
    if (!b) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
        goto cleanup;
    }
    const cand *maxk = &cands[n_cand - 1];
    double cum = 0;
    size_t at = 0;
    for (int k = 1; k < want; k++) {
        double goal = sum * k / want;
        while (at < n_cand && cum + cands[at].bytes < goal)
            cum += cands[at++].bytes;
        if (at >= n_cand) break;
        const cand *x = &cands[at];
        if (key_cmp(x->key, x->len, maxk->key, maxk->len) >= 0) break; /* nothing after it */
        if (nb && key_cmp(x->key, x->len, b[nb - 1].key, b[nb - 1].len) <= 0) continue;
        b[nb].key = malloc(x->len ? x->len : 1);
        if (!b[nb].key) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
            goto cleanup;
        }
        if (x->len) memcpy(b[nb].key, x->key, x->len);
        b[nb++].len = x->len;
    }
cleanup:
    if (rc != MARBLE_OK || nb == 0) {
        for (size_t i = 0; i < nb; i++)
            free(b[i].key);
        free(b);
        b = NULL;
        nb = 0;
    }
    for (size_t i = 0; i < n_ssts; i++)
        marble__sst_unref(ssts[i]);
    free(ssts);
    free(cands);
    *out = b;
    *n_out = nb;
    return rc;
}

/* ---- running pieces in parallel -----------------------------------------------------------------
 * Pieces are offered to the scheduler's workers through helper tasks spawned into env->group;
 * whoever claims a piece first (a helper, or the calling thread, which works through them too)
 * runs it, so the caller never waits for a worker that is busy elsewhere, only for pieces a
 * worker has started. Helpers that start late find nothing left and return. The claim block is
 * freed by whoever drops the last reference (the caller or a late helper); `pieces` is touched
 * only for a claimed index, which the caller outlives. */

typedef struct claims {
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t next, n;
    int active; /* pieces helpers claimed and have not finished (under mu) */
    piece *pieces;
} claims;

static void claims_unref(claims *cl)
{
    /* acq_rel: the last holder sees every other holder's writes before freeing */
    if (atomic_fetch_sub_explicit(&cl->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_destroy(&cl->mu);
    pthread_cond_destroy(&cl->cv);
    free(cl);
}

static piece *claim(claims *cl, int helper)
{
    piece *p = NULL;
    pthread_mutex_lock(&cl->mu);
    if (cl->next < cl->n) {
        p = &cl->pieces[cl->next++];
        if (helper) cl->active++;
    }
    pthread_mutex_unlock(&cl->mu);
    return p;
}

static marble_task_status helper_task(marble_task_ctx *ctx, void *arg)
{
    (void)ctx;
    claims *cl = arg;
    piece *p;
    while ((p = claim(cl, 1)) != NULL) {
        run_piece(p);
        pthread_mutex_lock(&cl->mu);
        if (--cl->active == 0) pthread_cond_broadcast(&cl->cv);
        pthread_mutex_unlock(&cl->mu);
    }
    claims_unref(cl);
    return MARBLE_TASK_DONE;
}

static void run_pieces(job *j)
{
    const marble__compaction_env *env = j->env;
    claims *cl = NULL;
    if (j->n_pieces > 1 && env->group) cl = calloc(1, sizeof *cl);
    if (!cl) {
        for (size_t i = 0; i < j->n_pieces; i++)
            run_piece(&j->pieces[i]);
        return;
    }
    atomic_init(&cl->refs, 1);
    pthread_mutex_init(&cl->mu, NULL);
    pthread_cond_init(&cl->cv, NULL);
    cl->n = j->n_pieces;
    cl->pieces = j->pieces;
    for (size_t k = 1; k < j->n_pieces; k++) {
        atomic_fetch_add_explicit(&cl->refs, 1, memory_order_relaxed);
        if (marble_group_spawn(env->group, helper_task, cl) != MARBLE_OK) claims_unref(cl);
    }
    piece *p;
    while ((p = claim(cl, 0)) != NULL)
        run_piece(p);
    pthread_mutex_lock(&cl->mu);
    while (cl->active > 0)
        pthread_cond_wait(&cl->cv, &cl->mu);
    pthread_mutex_unlock(&cl->mu);
    claims_unref(cl);
}

static int fill_edit(job *j, marble__version_edit *edit)
{
    const marble__compaction *c = j->c;
    for (int w = 0; w < 2; w++)
        for (size_t i = 0; i < c->n_inputs[w]; i++)
            MARBLE_RETURN_NOT_OK(marble__edit_delete_file(edit, w == 0 ? c->level : c->output_level,
                                                          c->inputs[w][i].number));
    for (size_t pi = 0; pi < j->n_pieces; pi++) {
        const piece *p = &j->pieces[pi];
        for (size_t i = 0; i < p->n_outs; i++) {
            const marble__sst_info *info = &p->outs[i].info;
            marble__file_meta f = {.level = c->output_level,
                                   .number = p->outs[i].number,
                                   .size = info->file_size,
                                   .smallest_len = 4 + info->smallest.len,
                                   .largest_len = 4 + info->largest.len,
                                   .smallest_seq = info->smallest_seq,
                                   .largest_seq = info->largest_seq,
                                   .rows = info->rows};
            f.smallest = malloc(f.smallest_len);
            f.largest = malloc(f.largest_len);
            int rc = MARBLE_ERR_NO_MEMORY;
            if (f.smallest && f.largest) {
                put_be32(f.smallest, c->table_id);
                put_be32(f.largest, c->table_id);
                if (info->smallest.len)
                    memcpy(f.smallest + 4, info->smallest.data, info->smallest.len);
                if (info->largest.len) memcpy(f.largest + 4, info->largest.data, info->largest.len);
                rc = marble__edit_add_file(edit, &f);
            }
            free(f.smallest);
            free(f.largest);
            MARBLE_RETURN_NOT_OK(rc);
        }
    }
    return MARBLE_OK;
}

/* Takes the edit back to n_added / n_deleted entries. */
static void edit_truncate(marble__version_edit *edit, size_t n_added, size_t n_deleted)
{
    for (size_t i = n_added; i < edit->n_added; i++) {
        free(edit->added[i].smallest);
        free(edit->added[i].largest);
    }
    edit->n_added = n_added;
    edit->n_deleted = n_deleted;
}

int marble__compaction_run(const marble__compaction *c, const marble__compaction_env *env,
                           marble__version_edit *edit, marble__compaction_result *res,
                           marble_error *err)
{
    marble__compaction_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    if (!c || !env || !edit || !env->fs || !env->dir_uri || !env->codec || !env->open_sst ||
        !env->new_file_number)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "compaction: missing compaction, environment or edit");
    job j;
    memset(&j, 0, sizeof j);
    j.c = c;
    j.env = env;
    atomic_init(&j.failed, 0);
    size_t n_added = edit->n_added, n_deleted = edit->n_deleted;
    bound *bounds = NULL;
    size_t nb = 0;
    uint64_t rows = 0;
    int rc = MARBLE_OK;
    for (int w = 0; w < 2; w++)
        for (size_t i = 0; i < c->n_inputs[w]; i++) {
            res->bytes_read += c->inputs[w][i].size;
            rows += c->inputs[w][i].rows;
        }
    j.bytes_per_row = rows ? (double)res->bytes_read / (double)rows : 0;
    if (env->subcompactions > 1) {
        int want = env->subcompactions > MARBLE__MAX_SUBCOMPACTIONS ? MARBLE__MAX_SUBCOMPACTIONS
                                                                    : env->subcompactions;
        rc = plan_bounds(&j, want, &bounds, &nb, err);
        if (rc != MARBLE_OK) goto cleanup;
    }
    j.n_pieces = nb + 1;
    j.pieces = calloc(j.n_pieces, sizeof *j.pieces);
    if (!j.pieces) {
        j.n_pieces = 0;
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < j.n_pieces; i++) {
        j.pieces[i].j = &j;
        j.pieces[i].lo = i > 0 ? &bounds[i - 1] : NULL;
        j.pieces[i].hi = i < nb ? &bounds[i] : NULL;
    }
    run_pieces(&j);
    /* a real failure wins over the cancellations it caused in the siblings */
    for (size_t i = 0; i < j.n_pieces; i++) {
        piece *p = &j.pieces[i];
        if (p->rc != MARBLE_OK &&
            (rc == MARBLE_OK || (rc == MARBLE_ERR_CANCELLED && p->rc != MARBLE_ERR_CANCELLED))) {
            rc = p->rc;
            if (err) *err = p->err;
        }
        res->rows_in += p->res.rows_in;
        res->rows_out += p->res.rows_out;
        res->files_out += p->res.files_out;
        res->bytes_written += p->res.bytes_written;
    }
    res->subcompactions = (int)j.n_pieces;
    if (rc == MARBLE_OK && env->cancelled && env->cancelled(env->ud))
        rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "compaction into %s: cancelled",
                              env->dir_uri);
    if (rc == MARBLE_OK && res->files_out) rc = marble_fs_sync_dir(env->fs, env->dir_uri, err);
    if (rc == MARBLE_OK) {
        rc = fill_edit(&j, edit);
        if (rc != MARBLE_OK)
            rc = marble_error_set(err, rc, "compaction: out of memory filling the edit");
    }
    if (rc == MARBLE_OK && env->progress) {
        uint64_t reported = 0;
        for (size_t i = 0; i < j.n_pieces; i++)
            reported += j.pieces[i].reported;
        if (res->bytes_read > reported) env->progress(env->ud, res->bytes_read - reported);
    }
cleanup:
    for (size_t pi = 0; pi < j.n_pieces; pi++) {
        piece *p = &j.pieces[pi];
        for (size_t i = 0; i < p->n_outs; i++) {
            if (rc != MARBLE_OK) marble_fs_remove(env->fs, p->outs[i].uri, NULL);
            free(p->outs[i].uri);
            if (p->outs[i].finished) marble__sst_info_free(&p->outs[i].info);
        }
        free(p->outs);
        free(p->mkey);
    }
    free(j.pieces);
    for (size_t i = 0; i < nb; i++)
        free(bounds[i].key);
    free(bounds);
    if (rc != MARBLE_OK) {
        edit_truncate(edit, n_added, n_deleted);
        res->files_out = 0;
        res->bytes_written = 0;
    }
    return rc;
}
