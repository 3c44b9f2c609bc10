/* Sort and top-N: each worker keeps the batches it saw and row references into them (all rows for
 * a full sort, a bounded max-heap of the best `limit` rows for top-N, compacted into one batch as
 * it goes), sorts them into a run on its own worker, and the runs are k-way merged into output
 * batches; both steps check for cancellation as they go. Ties are broken by input order (morsel,
 * then row), so results do not depend on the number of workers. */
#include <stdlib.h>
#include <string.h>

#include "exec/pipeline_internal.h"

struct marble__sort_local {
    const struct ArrowSchema *schema;
    const marble_sort_key *keys;
    size_t n_keys;
    int64_t limit;
    int exact_prefix; /* equal prefixes other than 0, MAX - 1 and MAX mean equal first keys */
    marble__memacct mem;
    struct ArrowArray *batches;
    marble__colview *views; /* n_keys per batch */
    size_t n_b, cap_b;
    uint64_t batch_bytes;
    int64_t batch_rows; /* rows in the retained batches */
    marble__rowref *refs;
    size_t n_r, cap_r;
    int sorted; /* refs are in order (marble__sort_local_sort ran to its end) */
};

int marble__sort_local_create(const struct ArrowSchema *schema, const marble_sort_key *keys,
                              size_t n_keys, int64_t limit, marble_mem_budget *mem,
                              marble__sort_local **out, marble_error *err)
{
    marble__sort_local *l = calloc(1, sizeof *l);
    if (!l) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sort: out of memory");
    l->schema = schema;
    l->keys = keys;
    l->n_keys = n_keys;
    l->limit = limit;
    int kind = marble__colview_kind(schema->children[keys[0].column]);
    l->exact_prefix = kind == MARBLE__CV_INT || kind == MARBLE__CV_UINT ||
                      kind == MARBLE__CV_FLOAT || kind == MARBLE__CV_BOOL;
    l->mem.budget = mem;
    l->mem.what = limit >= 0 ? "top-N buffer" : "sort buffer";
    *out = l;
    return MARBLE_OK;
}

static void drop_batches(marble__sort_local *l)
{
    for (size_t i = 0; i < l->n_b; i++)
        marble_arrow_array_release(&l->batches[i]);
    l->n_b = 0;
    l->batch_bytes = 0;
    l->batch_rows = 0;
}

void marble__sort_local_destroy(marble__sort_local *l)
{
    if (!l) return;
    drop_batches(l);
    free(l->batches);
    free(l->views);
    free(l->refs);
    marble__mem_release_all(&l->mem);
    free(l);
}

static uint64_t in_use(const marble__sort_local *l)
{
    return l->batch_bytes + l->cap_r * sizeof(marble__rowref) +
           l->cap_b * (sizeof(struct ArrowArray) + l->n_keys * sizeof(marble__colview));
}

static int add_batch(marble__sort_local *l, struct ArrowArray *batch, marble_error *err)
{
    if (l->n_b == l->cap_b) {
        size_t cap = l->cap_b ? l->cap_b * 2 : 16;
        struct ArrowArray *nb = realloc(l->batches, cap * sizeof *nb);
        if (nb) l->batches = nb;
        marble__colview *nv = nb ? realloc(l->views, cap * (l->n_keys + 1) * sizeof *nv) : NULL;
        if (!nb || !nv) {
            marble_arrow_array_release(batch);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sort: out of memory");
        }
        l->views = nv;
        l->cap_b = cap;
    }
    marble_arrow_array_move(batch, &l->batches[l->n_b]);
    struct ArrowArray *b = &l->batches[l->n_b];
    for (size_t k = 0; k < l->n_keys; k++)
        marble__colview_init(l->schema->children[l->keys[k].column], b, l->keys[k].column,
                             &l->views[l->n_b * l->n_keys + k]);
    l->n_b++;
    l->batch_bytes += marble__batch_bytes(l->schema, b);
    l->batch_rows += b->length;
    return marble__mem_need(&l->mem, in_use(l), err);
}

static int reserve_refs(marble__sort_local *l, size_t more, marble_error *err)
{
    if (l->n_r + more <= l->cap_r) return MARBLE_OK;
    size_t cap = l->cap_r ? l->cap_r : 1024;
    while (cap < l->n_r + more)
        cap *= 2;
    marble__rowref *nr = realloc(l->refs, cap * sizeof *nr);
    if (!nr) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sort: out of memory");
    l->refs = nr;
    l->cap_r = cap;
    return marble__mem_need(&l->mem, in_use(l), err);
}

static inline int ref_cmp(const marble__sort_local *la, const marble__rowref *a,
                          const marble__sort_local *lb, const marble__rowref *b)
{
    if (a->prefix != b->prefix) return a->prefix < b->prefix ? -1 : 1;
    size_t skip = la->exact_prefix && a->prefix < UINT64_MAX - 1 && a->prefix > 0;
    int c = marble__rows_cmp(la->keys + skip, la->n_keys - skip,
                             la->views + a->batch * la->n_keys + skip, a->row,
                             lb->views + b->batch * lb->n_keys + skip, b->row);
    if (c) return c;
    return (a->order > b->order) - (a->order < b->order);
}

static void heap_down(marble__sort_local *l, size_t i)
{
    marble__rowref *h = l->refs;
    size_t n = l->n_r;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && ref_cmp(l, &h[c + 1], l, &h[c]) > 0) c++;
        if (ref_cmp(l, &h[c], l, &h[i]) <= 0) return;
        marble__rowref t = h[c];
        h[c] = h[i];
        h[i] = t;
        i = c;
    }
}

static void heap_up(marble__sort_local *l, size_t i)
{
    marble__rowref *h = l->refs;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (ref_cmp(l, &h[i], l, &h[p]) <= 0) return;
        marble__rowref t = h[p];
        h[p] = h[i];
        h[i] = t;
        i = p;
    }
}

/* Replaces the retained batches by one batch holding just the heap's rows. */
static int compact(marble__sort_local *l, marble_error *err)
{
    const struct ArrowArray **tab = malloc((l->n_b + 1) * sizeof *tab);
    if (!tab) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sort: out of memory");
    for (size_t i = 0; i < l->n_b; i++)
        tab[i] = &l->batches[i];
    struct ArrowArray nb;
    int rc = marble__gather_batch(l->schema, tab, l->refs, NULL, (int64_t)l->n_r, &nb, err);
    free(tab);
    if (rc != MARBLE_OK) return rc;
    drop_batches(l);
    for (size_t k = 0; k < l->n_r; k++) {
        l->refs[k].batch = 0;
        l->refs[k].row = (uint32_t)k;
    }
    return add_batch(l, &nb, err);
}

int marble__sort_consume(marble__sort_local *l, struct ArrowArray *batch, const uint32_t *sel,
                         int64_t n, int64_t morsel, int64_t *seq, marble_error *err)
{
    if (n == 0 || l->limit == 0) {
        *seq += n;
        marble_arrow_array_release(batch);
        return MARBLE_OK;
    }
    if (l->n_b >= UINT32_MAX - 1)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "sort: too many batches");
    MARBLE_RETURN_NOT_OK(add_batch(l, batch, err));
    uint32_t bi = (uint32_t)(l->n_b - 1);
    uint64_t base = (uint64_t)morsel << 40;
    if (l->limit < 0) {
        MARBLE_RETURN_NOT_OK(reserve_refs(l, (size_t)n, err));
        for (int64_t k = 0; k < n; k++) {
            marble__rowref *r = &l->refs[l->n_r++];
            r->batch = bi;
            r->row = sel ? sel[k] : (uint32_t)k;
            r->order = base | (uint64_t)(*seq)++;
            r->prefix = marble__sort_prefix(&l->keys[0], &l->views[bi * l->n_keys], r->row);
        }
        return MARBLE_OK;
    }
    size_t cap = (size_t)l->limit;
    int64_t kept = 0;
    for (int64_t k = 0; k < n; k++) {
        marble__rowref r = {bi, sel ? sel[k] : (uint32_t)k, base | (uint64_t)(*seq)++, 0};
        r.prefix = marble__sort_prefix(&l->keys[0], &l->views[bi * l->n_keys], r.row);
        if (l->n_r < cap) {
            MARBLE_RETURN_NOT_OK(reserve_refs(l, 1, err));
            l->refs[l->n_r++] = r;
            heap_up(l, l->n_r - 1);
            kept++;
        } else if (ref_cmp(l, &r, l, &l->refs[0]) < 0) {
            l->refs[0] = r;
            heap_down(l, 0);
            kept++;
        }
    }
    if (!kept) {
        l->n_b--;
        l->batch_bytes -= marble__batch_bytes(l->schema, &l->batches[l->n_b]);
        l->batch_rows -= l->batches[l->n_b].length;
        marble_arrow_array_release(&l->batches[l->n_b]);
    } else if (l->batch_rows > 2 * (int64_t)l->n_r + MARBLE__OUT_ROWS) {
        MARBLE_RETURN_NOT_OK(compact(l, err));
    }
    return MARBLE_OK;
}

typedef struct sort_ctx {
    const marble__sort_local *l;
    marble__rowref *tmp;
    int (*cancelled)(void *);
    void *arg;
    int stop;
} sort_ctx;

/* Checks for cancellation at each subtree of at least this many rows (a few ms of work). */
#define SORT_CHECK_ROWS 16384

static void merge_sort(sort_ctx *c, marble__rowref *a, size_t n)
{
    const marble__sort_local *l = c->l;
    if (n < 16) {
        for (size_t i = 1; i < n; i++) {
            marble__rowref x = a[i];
            size_t j = i;
            while (j > 0 && ref_cmp(l, &a[j - 1], l, &x) > 0) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = x;
        }
        return;
    }
    if (n >= SORT_CHECK_ROWS && c->cancelled && !c->stop && c->cancelled(c->arg)) c->stop = 1;
    if (c->stop) return;
    size_t h = n / 2;
    merge_sort(c, a, h);
    merge_sort(c, a + h, n - h);
    if (c->stop || ref_cmp(l, &a[h - 1], l, &a[h]) <= 0) return;
    marble__rowref *tmp = c->tmp;
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = ref_cmp(l, &a[j], l, &a[i]) < 0 ? a[j++] : a[i++];
    while (i < h)
        tmp[k++] = a[i++];
    while (j < n)
        tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

int marble__sort_local_sort(marble__sort_local *l, int (*cancelled)(void *), void *arg,
                            marble_error *err)
{
    if (l->sorted || l->n_r < 2) {
        l->sorted = 1;
        return MARBLE_OK;
    }
    marble__memacct acct = {l->mem.budget, "sort buffer", 0};
    int rc = marble__mem_need(&acct, l->n_r * sizeof(marble__rowref), err);
    sort_ctx c = {l, NULL, cancelled, arg, 0};
    if (rc == MARBLE_OK && !(c.tmp = malloc(l->n_r * sizeof *c.tmp)))
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sort: out of memory");
    if (rc == MARBLE_OK) merge_sort(&c, l->refs, l->n_r);
    if (rc == MARBLE_OK && c.stop)
        rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "pipeline cancelled");
    if (rc == MARBLE_OK) l->sorted = 1;
    free(c.tmp);
    marble__mem_release_all(&acct);
    return rc;
}

static int token_cancelled(void *t)
{
    return marble_cancel_token_is_cancelled(t);
}

typedef struct run_head {
    size_t local;
    size_t pos;
} run_head;

int marble__sort_finish(marble__sort_local **locals, size_t n, marble_cancel_token *cancel,
                        struct ArrowArray **batches, size_t *n_batches, marble_error *err)
{
    int rc = MARBLE_OK;
    *batches = NULL;
    *n_batches = 0;
    size_t total_b = 0, total_r = 0;
    for (size_t i = 0; i < n; i++) {
        total_b += locals[i]->n_b;
        total_r += locals[i]->n_r;
    }
    int64_t limit = n ? locals[0]->limit : -1;
    if (limit >= 0 && total_r > (size_t)limit) total_r = (size_t)limit;
    const struct ArrowArray **tab = malloc((total_b + 1) * sizeof *tab);
    size_t *base = calloc(n + 1, sizeof *base);
    marble__rowref *chunk = malloc(MARBLE__OUT_ROWS * sizeof *chunk);
    run_head *heap = malloc((n + 1) * sizeof *heap);
    size_t n_out = (total_r + MARBLE__OUT_ROWS - 1) / MARBLE__OUT_ROWS;
    struct ArrowArray *out = calloc(n_out + 1, sizeof *out);
    if (!tab || !base || !chunk || !heap || !out) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "sort: out of memory");
        goto done;
    }
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) {
        marble__sort_local *l = locals[i];
        base[i] = nb;
        for (size_t b = 0; b < l->n_b; b++)
            tab[nb++] = &l->batches[b];
        if ((rc = marble__sort_local_sort(l, token_cancelled, cancel, err)) != MARBLE_OK) goto done;
    }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        if (!locals[i]->n_r) continue;
        heap[hn++] = (run_head){i, 0};
        for (size_t c = hn - 1; c > 0;) {
            size_t p = (c - 1) / 2;
            const marble__sort_local *lc = locals[heap[c].local], *lp = locals[heap[p].local];
            if (ref_cmp(lc, &lc->refs[heap[c].pos], lp, &lp->refs[heap[p].pos]) >= 0) break;
            run_head t = heap[c];
            heap[c] = heap[p];
            heap[p] = t;
            c = p;
        }
    }
    size_t emitted = 0, filled = 0;
    while (emitted < total_r && hn > 0) {
        run_head *h = &heap[0];
        const marble__sort_local *l = locals[h->local];
        chunk[filled] = l->refs[h->pos];
        chunk[filled].batch += (uint32_t)base[h->local];
        filled++;
        emitted++;
        if (++h->pos == l->n_r) heap[0] = heap[--hn];
        for (size_t i = 0;;) {
            size_t c = 2 * i + 1;
            if (c >= hn) break;
            const marble__sort_local *l1 = locals[heap[c].local];
            if (c + 1 < hn) {
                const marble__sort_local *l2 = locals[heap[c + 1].local];
                if (ref_cmp(l2, &l2->refs[heap[c + 1].pos], l1, &l1->refs[heap[c].pos]) < 0) {
                    c++;
                    l1 = l2;
                }
            }
            const marble__sort_local *li = locals[heap[i].local];
            if (ref_cmp(l1, &l1->refs[heap[c].pos], li, &li->refs[heap[i].pos]) >= 0) break;
            run_head t = heap[c];
            heap[c] = heap[i];
            heap[i] = t;
            i = c;
        }
        if (filled == MARBLE__OUT_ROWS || emitted == total_r || hn == 0) {
            if (marble_cancel_token_is_cancelled(cancel)) {
                rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "pipeline cancelled");
                goto done;
            }
            rc = marble__gather_batch(n ? locals[0]->schema : NULL, tab, chunk, NULL,
                                      (int64_t)filled, &out[*n_batches], err);
            if (rc != MARBLE_OK) goto done;
            (*n_batches)++;
            filled = 0;
        }
    }
done:
    if (rc != MARBLE_OK && out) {
        for (size_t i = 0; i < *n_batches; i++)
            marble_arrow_array_release(&out[i]);
        free(out);
        out = NULL;
        *n_batches = 0;
    }
    *batches = out;
    free(tab);
    free(base);
    free(chunk);
    free(heap);
    return rc;
}
