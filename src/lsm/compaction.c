/*
 * Leveled compaction: the score-based picker and the single-threaded merge of a job's inputs
 * into new SSTables (see compaction.h).
 *
 * The round-robin compaction pointer of each level lives in a small process-wide table (the
 * largest manifest key of the file last picked there), guarded by a mutex. It only steers which
 * file is picked next, never correctness, so databases in one process sharing it merely share
 * the rotation; marble__compaction_reset_pointers clears it (for tests).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/compaction.h"
#include "lsm/iter.h"

#define DEFAULT_L0_TRIGGER 4
#define DEFAULT_L1_BYTES ((uint64_t)256 << 20)
#define DEFAULT_FILE_SIZE ((uint64_t)64 << 20)
#define CANCEL_POLL_ROWS 4096

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

/* ---- running ------------------------------------------------------------------------------------
 */

typedef struct output {
    uint64_t number;
    char *uri;
    marble__sst_info info;
    int finished;
} output;

typedef struct job {
    const marble__compaction *c;
    const marble__compaction_env *env;
    marble__sst **ssts;
    size_t n_ssts;
    output *outs;
    size_t n_outs, cap_outs;
    marble__sst_writer *w; /* writing outs[n_outs - 1] */
    unsigned char *mkey;   /* table prefix + key, for the overlap test */
    size_t mkey_cap;
    size_t level_ptr[MARBLE__NUM_LEVELS];
} job;

static int open_input(job *j, const marble__file_meta *f, marble__sst **out, marble_error *err)
{
    int rc = j->env->open_sst(j->env->ud, f, out, err);
    if (rc != MARBLE_OK) {
        if (err && err->code == MARBLE_OK)
            marble_error_set(err, rc, "compaction: opening input file %llu failed",
                             (unsigned long long)f->number);
        return rc;
    }
    j->ssts[j->n_ssts++] = *out;
    return MARBLE_OK;
}

/* One run iterator over files[0, n) (at least one). */
static int run_child(job *j, const marble__file_meta *files, size_t n, marble__iter **out,
                     marble_error *err)
{
    size_t first = j->n_ssts;
    for (size_t i = 0; i < n; i++) {
        marble__sst *s;
        MARBLE_RETURN_NOT_OK(open_input(j, &files[i], &s, err));
    }
    return marble__iter_run(j->ssts + first, n, out, err);
}

static int build_input(job *j, marble__iter **out, marble_error *err)
{
    const marble__compaction *c = j->c;
    size_t total = c->n_inputs[0] + c->n_inputs[1];
    marble__iter **ch = calloc(total ? total : 1, sizeof *ch);
    size_t k = 0;
    int rc = MARBLE_OK;
    if (!ch) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
    for (int w = 0; w < 2 && rc == MARBLE_OK; w++) {
        size_t n = c->n_inputs[w];
        int lvl = w == 0 ? c->level : c->output_level;
        if (n == 0) continue;
        if (lvl == 0) {
            for (size_t i = 0; i < n && rc == MARBLE_OK; i++) {
                marble__sst *s;
                rc = open_input(j, &c->inputs[w][i], &s, err);
                if (rc == MARBLE_OK) rc = marble__iter_sst(s, &ch[k], err);
                if (rc == MARBLE_OK) k++;
            }
        } else {
            rc = run_child(j, c->inputs[w], n, &ch[k], err);
            if (rc == MARBLE_OK) k++;
        }
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
static int below_has_key(job *j, const void *key, size_t klen, int *oom)
{
    const marble__version *v = j->env->version;
    if (!v) return 1;
    if (4 + klen > j->mkey_cap) {
        size_t cap = j->mkey_cap ? j->mkey_cap : 64;
        while (cap < 4 + klen)
            cap *= 2;
        unsigned char *p = realloc(j->mkey, cap);
        if (!p) {
            *oom = 1;
            return 1;
        }
        j->mkey = p;
        j->mkey_cap = cap;
    }
    put_be32(j->mkey, j->c->table_id);
    if (klen) memcpy(j->mkey + 4, key, klen);
    size_t ml = 4 + klen;
    for (int l = j->c->output_level + 1; l < MARBLE__NUM_LEVELS; l++) {
        size_t n = marble__version_num_files(v, l);
        if (l == 0) {
            for (size_t i = 0; i < n; i++) {
                const marble__file_meta *f = marble__version_file(v, l, i);
                if (key_cmp(f->smallest, f->smallest_len, j->mkey, ml) <= 0 &&
                    key_cmp(f->largest, f->largest_len, j->mkey, ml) >= 0)
                    return 1;
            }
            continue;
        }
        size_t *p = &j->level_ptr[l];
        while (*p < n) {
            const marble__file_meta *f = marble__version_file(v, l, *p);
            if (key_cmp(f->largest, f->largest_len, j->mkey, ml) >= 0) {
                if (key_cmp(f->smallest, f->smallest_len, j->mkey, ml) <= 0) return 1;
                break;
            }
            (*p)++;
        }
    }
    return 0;
}

static int start_output(job *j, marble_error *err)
{
    const marble__compaction_env *env = j->env;
    if (j->n_outs == j->cap_outs) {
        size_t cap = j->cap_outs ? 2 * j->cap_outs : 4;
        output *o = realloc(j->outs, cap * sizeof *o);
        if (!o) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
        j->outs = o;
        j->cap_outs = cap;
    }
    output *o = &j->outs[j->n_outs];
    memset(o, 0, sizeof *o);
    o->number = env->new_file_number(env->ud);
    int len = snprintf(NULL, 0, "%s/%06llu.arrow", env->dir_uri, (unsigned long long)o->number);
    o->uri = malloc((size_t)len + 1);
    if (!o->uri) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
    snprintf(o->uri, (size_t)len + 1, "%s/%06llu.arrow", env->dir_uri,
             (unsigned long long)o->number);
    j->n_outs++;
    return marble__sst_writer_create(env->fs, o->uri, env->codec, &env->sst_opts, &j->w, err);
}

static int finish_output(job *j, marble__compaction_result *res, marble_error *err)
{
    output *o = &j->outs[j->n_outs - 1];
    int rc = marble__sst_writer_finish(j->w, &o->info, err);
    marble__sst_writer_destroy(j->w);
    j->w = NULL;
    if (rc != MARBLE_OK) return rc;
    o->finished = 1;
    res->files_out++;
    res->bytes_written += o->info.file_size;
    return MARBLE_OK;
}

static int fill_edit(job *j, marble__version_edit *edit)
{
    const marble__compaction *c = j->c;
    for (int w = 0; w < 2; w++)
        for (size_t i = 0; i < c->n_inputs[w]; i++)
            MARBLE_RETURN_NOT_OK(marble__edit_delete_file(edit, w == 0 ? c->level : c->output_level,
                                                          c->inputs[w][i].number));
    for (size_t i = 0; i < j->n_outs; i++) {
        const marble__sst_info *info = &j->outs[i].info;
        marble__file_meta f = {.level = c->output_level,
                               .number = j->outs[i].number,
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
            if (info->smallest.len) memcpy(f.smallest + 4, info->smallest.data, info->smallest.len);
            if (info->largest.len) memcpy(f.largest + 4, info->largest.data, info->largest.len);
            rc = marble__edit_add_file(edit, &f);
        }
        free(f.smallest);
        free(f.largest);
        MARBLE_RETURN_NOT_OK(rc);
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

static int merge_loop(job *j, marble__iter *it, marble__compaction_result *res, marble_error *err)
{
    const marble__compaction_env *env = j->env;
    uint64_t target = env->target_file_size ? env->target_file_size : DEFAULT_FILE_SIZE;
    uint64_t snap = env->smallest_snapshot;
    unsigned char *cur = NULL, *last_out = NULL; /* current user key; last key written */
    size_t cur_len = 0, cur_cap = 0, last_len = 0, last_cap = 0;
    int has_cur = 0, has_last = 0, seen_old = 0, rc = MARBLE_OK;

    for (marble__iter_seek_to_first(it); marble__iter_valid(it); marble__iter_next(it)) {
        if (res->rows_in % CANCEL_POLL_ROWS == 0 && env->cancelled && env->cancelled(env->ud)) {
            rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "compaction into %s: cancelled",
                                  env->dir_uri);
            goto done;
        }
        res->rows_in++;
        size_t klen;
        const void *key = marble__iter_key(it, &klen);
        uint64_t seq = marble__iter_seq(it);
        int op = marble__iter_op(it);
        if (!has_cur || key_cmp(key, klen, cur, cur_len) != 0) {
            if (klen > cur_cap) {
                size_t cap = cur_cap ? cur_cap : 64;
                while (cap < klen)
                    cap *= 2;
                unsigned char *p = realloc(cur, cap);
                if (!p) goto oom;
                cur = p;
                cur_cap = cap;
            }
            if (klen) memcpy(cur, key, klen);
            cur_len = klen;
            has_cur = 1;
            seen_old = 0;
        }
        if (seq <= snap) {
            if (seen_old) continue; /* a newer version at or below the snapshot hides it */
            seen_old = 1;
            if (op == 0) {
                int oom = 0;
                int below = below_has_key(j, key, klen, &oom);
                if (oom) goto oom;
                if (!below) continue; /* the delete shadows nothing */
            }
        }

        int new_key = !has_last || key_cmp(key, klen, last_out, last_len) != 0;
        if (j->w && new_key && marble__sst_writer_rows(j->w) > 0 &&
            marble__sst_writer_estimated_size(j->w) >= target) {
            rc = finish_output(j, res, err);
            if (rc != MARBLE_OK) goto done;
        }
        if (!j->w) {
            rc = start_output(j, err);
            if (rc != MARBLE_OK) goto done;
        }
        int64_t row = -1;
        const struct ArrowArray *batch = marble__iter_batch(it, &row);
        if (batch) {
            rc = marble__sst_writer_add_arrow(j->w, key, klen, batch, row, err);
        } else {
            size_t vlen;
            const void *val = marble__iter_value(it, &vlen);
            rc = marble__sst_writer_add(j->w, key, klen, seq, op, val, vlen, err);
        }
        if (rc != MARBLE_OK) goto done;
        res->rows_out++;
        if (new_key) {
            if (klen > last_cap) {
                size_t cap = last_cap ? last_cap : 64;
                while (cap < klen)
                    cap *= 2;
                unsigned char *p = realloc(last_out, cap);
                if (!p) goto oom;
                last_out = p;
                last_cap = cap;
            }
            if (klen) memcpy(last_out, key, klen);
            last_len = klen;
            has_last = 1;
        }
    }
    rc = marble__iter_status(it, err);
    if (rc == MARBLE_OK && j->w) rc = finish_output(j, res, err);
    goto done;
oom:
    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
done:
    free(cur);
    free(last_out);
    return rc;
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
    size_t n_added = edit->n_added, n_deleted = edit->n_deleted;
    size_t total = c->n_inputs[0] + c->n_inputs[1];
    marble__iter *it = NULL;
    int rc = MARBLE_OK;
    j.ssts = calloc(total ? total : 1, sizeof *j.ssts);
    if (!j.ssts) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compaction: out of memory");
        goto cleanup;
    }
    for (int w = 0; w < 2; w++)
        for (size_t i = 0; i < c->n_inputs[w]; i++)
            res->bytes_read += c->inputs[w][i].size;
    rc = build_input(&j, &it, err);
    if (rc == MARBLE_OK) rc = merge_loop(&j, it, res, err);
    marble__iter_destroy(it);
    if (rc == MARBLE_OK && j.n_outs) rc = marble_fs_sync_dir(env->fs, env->dir_uri, err);
    if (rc == MARBLE_OK) {
        rc = fill_edit(&j, edit);
        if (rc != MARBLE_OK)
            rc = marble_error_set(err, rc, "compaction: out of memory filling the edit");
    }
cleanup:
    if (j.w) marble__sst_writer_destroy(j.w);
    for (size_t i = 0; i < j.n_ssts; i++)
        marble__sst_unref(j.ssts[i]);
    free(j.ssts);
    for (size_t i = 0; i < j.n_outs; i++) {
        if (rc != MARBLE_OK) marble_fs_remove(env->fs, j.outs[i].uri, NULL);
        free(j.outs[i].uri);
        if (j.outs[i].finished) marble__sst_info_free(&j.outs[i].info);
    }
    free(j.outs);
    free(j.mkey);
    if (rc != MARBLE_OK) {
        edit_truncate(edit, n_added, n_deleted);
        res->files_out = 0;
        res->bytes_written = 0;
    }
    return rc;
}
