/* k-way merge of sorted streams: a heap over the inputs' current rows (ties to the lower-numbered
 * input, so the merge is stable), gathering ~4096 output rows at a time from the inputs' batches;
 * batches an input has moved past stay alive until the output batch that points into them is
 * built. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/pipeline_internal.h"

typedef struct tab_entry {
    struct ArrowArray a;
    int retired;
} tab_entry;

typedef struct minput {
    struct ArrowArrayStream s;
    size_t slot; /* its current batch in the table */
    int64_t row;
    int live;
    marble__colview *views;
} minput;

typedef struct merge {
    minput *in;
    size_t n;
    marble_sort_key *keys;
    size_t nk;
    struct ArrowSchema schema;
    tab_entry *tab;
    size_t ntab, cap;
    size_t *heap;
    size_t hn;
    int started;
    marble__rowref *chunk;
    const struct ArrowArray **ptrs;
    int code;
    char msg[MARBLE_ERROR_MESSAGE_SIZE];
} merge;

static int merge_fail(merge *m, int code, const char *fmt, ...) MARBLE_PRINTF(3, 4);

static int merge_fail(merge *m, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->msg, sizeof m->msg, fmt, ap);
    va_end(ap);
    m->code = code;
    return code;
}

/* Moves input i to its next non-empty batch, or marks it finished. */
static int advance(merge *m, size_t i)
{
    minput *in = &m->in[i];
    if (in->live) m->tab[in->slot].retired = 1;
    in->live = 0;
    for (;;) {
        struct ArrowArray b;
        memset(&b, 0, sizeof b);
        int e = in->s.get_next(&in->s, &b);
        if (e) {
            int code = marble_stream_last_code(&in->s);
            const char *msg = in->s.get_last_error ? in->s.get_last_error(&in->s) : NULL;
            return merge_fail(m, code ? code : marble_error_from_errno(e), "merge input %zu: %s", i,
                              msg ? msg : strerror(e));
        }
        if (!b.release) return MARBLE_OK;
        marble_error err;
        marble_error_clear(&err);
        if (marble_arrow_array_validate(&m->schema, &b, MARBLE_VALIDATE_DEFAULT, &err) != 0) {
            marble_arrow_array_release(&b);
            return merge_fail(m, MARBLE_ERR_INVALID_ARGUMENT,
                              "merge input %zu: a batch does not match the schema: %s", i,
                              err.message);
        }
        if (b.length == 0) {
            marble_arrow_array_release(&b);
            continue;
        }
        if (m->ntab == m->cap) {
            size_t cap = m->cap * 2;
            tab_entry *nt = realloc(m->tab, cap * sizeof *nt);
            const struct ArrowArray **np = nt ? realloc(m->ptrs, cap * sizeof *np) : NULL;
            if (nt) m->tab = nt;
            if (!np) {
                marble_arrow_array_release(&b);
                return merge_fail(m, MARBLE_ERR_NO_MEMORY, "merge: out of memory");
            }
            m->ptrs = np;
            m->cap = cap;
        }
        in->slot = m->ntab++;
        marble_arrow_array_move(&b, &m->tab[in->slot].a);
        m->tab[in->slot].retired = 0;
        in->row = 0;
        in->live = 1;
        for (size_t k = 0; k < m->nk; k++)
            marble__colview_init(m->schema.children[m->keys[k].column], &m->tab[in->slot].a,
                                 m->keys[k].column, &in->views[k]);
        return MARBLE_OK;
    }
}

static int less(const merge *m, size_t a, size_t b)
{
    const minput *x = &m->in[a], *y = &m->in[b];
    int c = marble__rows_cmp(m->keys, m->nk, x->views, x->row, y->views, y->row);
    return c < 0 || (c == 0 && a < b);
}

static void sift_down(merge *m, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m->hn) return;
        if (c + 1 < m->hn && less(m, m->heap[c + 1], m->heap[c])) c++;
        if (!less(m, m->heap[c], m->heap[i])) return;
        size_t t = m->heap[c];
        m->heap[c] = m->heap[i];
        m->heap[i] = t;
        i = c;
    }
}

/* Drops retired batches and renumbers the rest (no output row points into the table now). */
static void compact(merge *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->ntab; i++) {
        if (m->tab[i].retired) {
            marble_arrow_array_release(&m->tab[i].a);
            continue;
        }
        for (size_t j = 0; j < m->n; j++)
            if (m->in[j].live && m->in[j].slot == i) m->in[j].slot = k;
        m->tab[k++] = m->tab[i];
    }
    m->ntab = k;
}

static int ms_get_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    merge *m = st->private_data;
    return marble_arrow_schema_copy(&m->schema, out, NULL) == MARBLE_OK ? 0 : ENOMEM;
}

static int ms_get_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    merge *m = st->private_data;
    memset(out, 0, sizeof *out);
    if (m->code) return marble_error_to_errno(m->code);
    if (!m->started) {
        m->started = 1;
        for (size_t i = 0; i < m->n; i++) {
            if (advance(m, i) != MARBLE_OK) return marble_error_to_errno(m->code);
            if (!m->in[i].live) continue;
            m->heap[m->hn++] = i;
        }
        for (size_t i = m->hn / 2; i-- > 0;)
            sift_down(m, i);
    }
    int64_t filled = 0;
    while (filled < MARBLE__OUT_ROWS && m->hn > 0) {
        size_t i = m->heap[0];
        minput *in = &m->in[i];
        m->chunk[filled].batch = (uint32_t)in->slot;
        m->chunk[filled].row = (uint32_t)in->row;
        m->chunk[filled].order = 0;
        m->chunk[filled].prefix = 0;
        filled++;
        if (++in->row == m->tab[in->slot].a.length) {
            if (advance(m, i) != MARBLE_OK) return marble_error_to_errno(m->code);
            if (!in->live) m->heap[0] = m->heap[--m->hn];
        }
        sift_down(m, 0);
    }
    if (filled == 0) {
        compact(m);
        return 0;
    }
    for (size_t i = 0; i < m->ntab; i++)
        m->ptrs[i] = &m->tab[i].a;
    marble_error err;
    marble_error_clear(&err);
    int rc = marble__gather_batch(&m->schema, m->ptrs, m->chunk, NULL, filled, out, &err);
    compact(m);
    if (rc != MARBLE_OK) {
        m->code = rc;
        snprintf(m->msg, sizeof m->msg, "%s", err.message);
        return marble_error_to_errno(rc);
    }
    return 0;
}

static const char *ms_last_error(struct ArrowArrayStream *st)
{
    merge *m = st->private_data;
    return m->code ? m->msg : NULL;
}

static void merge_free(merge *m)
{
    for (size_t i = 0; i < m->n; i++) {
        marble_arrow_stream_release(&m->in[i].s);
        free(m->in[i].views);
    }
    for (size_t i = 0; i < m->ntab; i++)
        marble_arrow_array_release(&m->tab[i].a);
    marble_arrow_schema_release(&m->schema);
    free(m->in);
    free(m->keys);
    free(m->tab);
    free(m->ptrs);
    free(m->heap);
    free(m->chunk);
    free(m);
}

static void ms_release(struct ArrowArrayStream *st)
{
    if (st->private_data) merge_free(st->private_data);
    st->private_data = NULL;
    st->release = NULL;
}

int marble__merge_stream_code(struct ArrowArrayStream *stream, int *code)
{
    if (!stream || !stream->release || stream->get_next != ms_get_next || !stream->private_data)
        return 0;
    *code = ((merge *)stream->private_data)->code;
    return 1;
}

int marble_merge_streams(struct ArrowArrayStream *inputs, size_t n, const marble_sort_key *keys,
                         size_t n_keys, struct ArrowArrayStream *out, marble_error *err)
{
    int rc = MARBLE_OK;
    merge *m = NULL;
    if (!inputs || n == 0 || !out || (n_keys && !keys)) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "merge: inputs, keys or out missing (need at least one input)");
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if (!inputs[i].release) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "merge: input %zu is released",
                                  i);
            goto fail;
        }
    m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->in = calloc(n, sizeof *m->in);
    m->keys = malloc((n_keys + 1) * sizeof *m->keys);
    m->heap = calloc(n, sizeof *m->heap);
    m->chunk = malloc(MARBLE__OUT_ROWS * sizeof *m->chunk);
    m->cap = 2 * n + 8;
    m->tab = calloc(m->cap, sizeof *m->tab);
    m->ptrs = calloc(m->cap, sizeof *m->ptrs);
    if (!m->in || !m->keys || !m->heap || !m->chunk || !m->tab || !m->ptrs) goto oom;
    m->n = n;
    for (size_t i = 0; i < n; i++) {
        marble_arrow_stream_move(&inputs[i], &m->in[i].s);
        if (!(m->in[i].views = calloc(n_keys + 1, sizeof *m->in[i].views))) goto oom;
    }
    if (n_keys) memcpy(m->keys, keys, n_keys * sizeof *keys);
    m->nk = n_keys;
    for (size_t i = 0; i < n; i++) {
        struct ArrowSchema s;
        memset(&s, 0, sizeof s);
        int e = m->in[i].s.get_schema(&m->in[i].s, &s);
        if (e || !s.release) {
            rc = marble_error_set(err, marble_error_from_errno(e ? e : EIO),
                                  "merge: reading the schema of input %zu failed", i);
            goto fail;
        }
        if (i == 0) {
            marble_arrow_schema_move(&s, &m->schema);
            if (strcmp(m->schema.format, "+s") != 0) {
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "merge: input 0's schema is not a struct ('+s')");
                goto fail;
            }
            continue;
        }
        int same = s.n_children == m->schema.n_children && strcmp(s.format, "+s") == 0;
        for (int64_t c = 0; same && c < s.n_children; c++)
            same = strcmp(s.children[c]->format, m->schema.children[c]->format) == 0;
        marble_arrow_schema_release(&s);
        if (!same) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "merge: input %zu's schema differs from input 0's", i);
            goto fail;
        }
    }
    for (size_t k = 0; k < n_keys; k++) {
        if (keys[k].column < 0 || keys[k].column >= m->schema.n_children) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "merge: sort key %zu: column %d out of range", k, keys[k].column);
            goto fail;
        }
        char what[48];
        snprintf(what, sizeof what, "merge: sort key %zu", k);
        if ((rc = marble__colview_check(m->schema.children[keys[k].column], what, err)) !=
            MARBLE_OK)
            goto fail;
    }
    memset(out, 0, sizeof *out);
    out->get_schema = ms_get_schema;
    out->get_next = ms_get_next;
    out->get_last_error = ms_last_error;
    out->release = ms_release;
    out->private_data = m;
    return MARBLE_OK;
oom:
    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "merge: out of memory");
fail:
    if (m) merge_free(m);
    for (size_t i = 0; inputs && i < n; i++)
        marble_arrow_stream_release(&inputs[i]);
    return rc;
}
