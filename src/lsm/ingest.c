/* Bulk ingestion (marble_db_ingest) and file import (marble_db_import_file): sorted input is
 * verified as it streams, cut into SSTables written in parallel on the scheduler under one
 * reserved sequence number, and installed with one manifest edit at the deepest level it fits
 * (RocksDB's external file ingestion); unsorted input goes through marble_db_put. Import reads
 * Arrow IPC (file or stream, message by message) and CSV through the VFS into it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/db_internal.h"
#include "marble/base.h"
#include "marble/csv.h"

#define PUT_SLICE_ROWS 16384

/* An input batch viewed as an SSTable batch: the table's columns in table order, then _seq and
 * _op; the encoded keys of its rows. */
typedef struct ing_batch {
    struct ArrowArray src;
    struct ArrowArray view;
    struct ArrowArray **kids;
    struct ArrowArray seq_arr, op_arr;
    const void *seq_bufs[2], *op_bufs[2];
    uint64_t *seqs;
    uint8_t *ops;
    marble__bytes keys;
    size_t *koff; /* length + 1 offsets into keys */
    uint64_t est_bytes;
} ing_batch;

typedef struct ingest ingest;

typedef struct ing_job {
    ingest *ing;
    ing_batch **b;
    size_t n, cap;
    uint64_t est;
    uint64_t number; /* current file name */
    char *uri;
    int written;
    marble__sst_info info;
} ing_job;

struct ingest {
    marble_db *db;
    marble__table *t;
    uint64_t seq;
    marble__sst_options so;
    ing_job **jobs;
    size_t n_jobs, cap_jobs;
};

static void view_release(struct ArrowArray *a)
{
    a->release = NULL;
}

static void batch_free(ing_batch *b)
{
    if (!b) return;
    marble_arrow_array_release(&b->src);
    free(b->kids);
    free(b->seqs);
    free(b->ops);
    marble__bytes_free(&b->keys);
    free(b->koff);
    free(b);
}

static int keycmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c) return c;
    return al < bl ? -1 : al > bl;
}

static uint64_t column_bytes(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t off,
                             int64_t len)
{
    marble_arrow_type t;
    if (marble_arrow_type_parse(s->format, &t, NULL) != MARBLE_OK) return 0;
    int64_t i0 = a->offset + off, i1 = i0 + len;
    switch (t.id) {
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_BINARY: {
        const int32_t *o = a->buffers[1];
        return o ? (uint64_t)(o[i1] - o[i0]) + 4 * (uint64_t)len : 0;
    }
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_LARGE_BINARY: {
        const int64_t *o = a->buffers[1];
        return o ? (uint64_t)(o[i1] - o[i0]) + 8 * (uint64_t)len : 0;
    }
    case MARBLE_ARROW_BOOL:
        return (uint64_t)len / 8 + 1;
    default:
        return (uint64_t)len * (uint64_t)(t.byte_width > 0 ? t.byte_width : 1);
    }
}

/* Maps the batch's columns to the table's (by name, types equal) and checks the rows. */
static int batch_new(ingest *g, const struct ArrowSchema *schema, struct ArrowArray *arr,
                     ing_batch **out, marble_error *err)
{
    const marble__table *t = g->t;
    const struct ArrowSchema *ts = &t->codec.schema;
    int n = t->codec.ncols;
    ing_batch *b = calloc(1, sizeof *b);
    if (!b) {
        marble_arrow_array_release(arr);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    marble_arrow_array_move(arr, &b->src);
    const struct ArrowArray *a = &b->src;
    int64_t len = a->length, tot = a->offset + a->length;
    int rc = marble_arrow_array_validate(schema, a, MARBLE_VALIDATE_UTF8, err);
    b->kids = calloc((size_t)n + 2, sizeof *b->kids);
    b->seqs = malloc((size_t)(tot ? tot : 1) * sizeof *b->seqs);
    b->ops = malloc((size_t)(tot ? tot : 1));
    b->koff = malloc(((size_t)len + 1) * sizeof *b->koff);
    if (rc == MARBLE_OK && (!b->kids || !b->seqs || !b->ops || !b->koff))
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    for (int64_t j = 0; rc == MARBLE_OK && j < schema->n_children; j++) {
        const struct ArrowSchema *c = schema->children[j];
        int found = -1;
        for (int i = 0; i < n; i++)
            if (c->name && strcmp(c->name, ts->children[i]->name) == 0) found = i;
        if (found < 0)
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "table '%s' has no column '%s'",
                                  t->name, c->name ? c->name : "(unnamed)");
        else if (b->kids[found])
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "table '%s': column '%s' appears twice in the input", t->name,
                                  c->name);
        else if (strcmp(c->format, ts->children[found]->format) != 0)
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "table '%s': column '%s' has type '%s' in the input, the "
                                  "table's is '%s'",
                                  t->name, c->name, c->format, ts->children[found]->format);
        else {
            b->kids[found] = a->children[j];
            b->est_bytes += column_bytes(c, a->children[j], a->offset, len);
        }
    }
    for (int i = 0; rc == MARBLE_OK && i < n; i++) {
        if (!b->kids[i]) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "table '%s': the input lacks column '%s'", t->name,
                                  ts->children[i]->name);
            break;
        }
        if (t->codec.cols[i].is_key || (ts->children[i]->flags & ARROW_FLAG_NULLABLE)) continue;
        const struct ArrowArray *c = b->kids[i];
        if (c->null_count == 0 || !c->buffers[0]) continue;
        for (int64_t r = 0; r < len && rc == MARBLE_OK; r++)
            if (marble_arrow_is_null(c, a->offset + r))
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "table '%s': column '%s' is not nullable but a row is null",
                                      t->name, ts->children[i]->name);
    }
    if (rc == MARBLE_OK) {
        for (int64_t r = 0; r < tot; r++) {
            b->seqs[r] = g->seq;
            b->ops[r] = 1;
        }
        b->seq_bufs[0] = NULL;
        b->seq_bufs[1] = b->seqs;
        b->op_bufs[0] = NULL;
        b->op_bufs[1] = b->ops;
        b->seq_arr = (struct ArrowArray){tot, 0, 0, 2, 0, b->seq_bufs, NULL, NULL, NULL, NULL};
        b->op_arr = (struct ArrowArray){tot, 0, 0, 2, 0, b->op_bufs, NULL, NULL, NULL, NULL};
        b->kids[n] = &b->seq_arr;
        b->kids[n + 1] = &b->op_arr;
        b->view = *a;
        b->view.n_children = n + 2;
        b->view.children = b->kids;
        b->view.release = view_release; /* borrowed: never called */
        b->koff[0] = 0;
        struct ArrowArray kview = b->view;
        kview.n_children = n;
        for (int64_t r = 0; r < len && rc == MARBLE_OK; r++) {
            rc = marble__key_encode_row(&t->codec.keys, &kview, r, &b->keys, err);
            b->koff[r + 1] = b->keys.len;
        }
        b->est_bytes += 9 * (uint64_t)len;
    }
    if (rc != MARBLE_OK) {
        batch_free(b);
        return rc;
    }
    *out = b;
    return MARBLE_OK;
}

static const uint8_t *batch_key(const ing_batch *b, int64_t r, size_t *len)
{
    *len = b->koff[r + 1] - b->koff[r];
    return b->keys.data + b->koff[r];
}

static void job_free(ing_job *j)
{
    if (!j) return;
    for (size_t i = 0; i < j->n; i++)
        batch_free(j->b[i]);
    free(j->b);
    free(j->uri);
    marble__sst_info_free(&j->info);
    free(j);
}

static marble_task_status job_task(marble_task_ctx *ctx, void *arg)
{
    ing_job *j = arg;
    ingest *g = j->ing;
    marble_error e = {0};
    marble__sst_writer *w = NULL;
    int rc = marble__sst_writer_create(g->db->fs, j->uri, &g->t->codec, &g->so, &w, &e);
    for (size_t i = 0; rc == MARBLE_OK && i < j->n; i++) {
        if (marble_task_cancelled(ctx)) {
            rc = marble_error_set(&e, MARBLE_ERR_CANCELLED, "ingest cancelled");
            break;
        }
        ing_batch *b = j->b[i];
        for (int64_t r = 0; rc == MARBLE_OK && r < b->src.length; r++) {
            size_t kl;
            const uint8_t *k = batch_key(b, r, &kl);
            rc = marble__sst_writer_add_arrow(w, k, kl, &b->view, r, &e);
        }
        batch_free(b);
        j->b[i] = NULL;
    }
    if (rc == MARBLE_OK) rc = marble__sst_writer_finish(w, &j->info, &e);
    marble__sst_writer_destroy(w);
    if (rc != MARBLE_OK) return marble_task_fail(ctx, rc, "%s", e.message);
    j->written = 1;
    return MARBLE_TASK_DONE;
}

static void remove_jobs(ingest *g)
{
    for (size_t i = 0; i < g->n_jobs; i++)
        if (g->jobs[i]->uri) marble_fs_remove(g->db->fs, g->jobs[i]->uri, NULL);
}

/* 1 if a memtable holds an entry of the table in [lo, hi] (prefixed keys) older than seq. */
static int mem_overlap(const marble__memtable *mt, const marble__bytes *lo, const marble__bytes *hi,
                       uint64_t seq)
{
    marble__memtable_iter it;
    marble__memtable_iter_init(&it, mt);
    marble__memtable_iter_seek(&it, lo->data, lo->len);
    for (; marble__memtable_iter_valid(&it); marble__memtable_iter_next(&it)) {
        size_t kl;
        const uint8_t *k = marble__memtable_iter_key(&it, &kl);
        if (keycmp(k, kl, hi->data, hi->len) > 0) break;
        if (marble__memtable_iter_seq(&it) < seq) return 1;
    }
    return 0;
}

static int prefixed(const marble__table *t, const marble__bytes *k, marble__bytes *out,
                    marble_error *err)
{
    uint8_t pre[MARBLE__PREFIX_LEN];
    marble__prefix_put(pre, t->id);
    out->len = 0;
    MARBLE_RETURN_NOT_OK(marble__bytes_append(out, pre, sizeof pre, err));
    return marble__bytes_append(out, k->data, k->len, err);
}

/* Installs the written files (in key order) in one manifest edit; see marble_db_ingest. */
static int install(ingest *g, marble_ingest_stats *st, marble_error *err)
{
    marble_db *db = g->db;
    marble__bytes lo = {0}, hi = {0};
    marble__version_edit edit;
    marble__edit_init(&edit);
    int rc = prefixed(g->t, &g->jobs[0]->info.smallest, &lo, err);
    if (rc == MARBLE_OK) rc = prefixed(g->t, &g->jobs[g->n_jobs - 1]->info.largest, &hi, err);
    /* the files' directory entries are durable before the manifest names them (and before the
     * locks below, which keep writers out) */
    if (rc == MARBLE_OK) rc = marble_fs_sync_dir(db->fs, db->uri, err);
    for (int attempt = 0; rc == MARBLE_OK; attempt++) {
        pthread_mutex_lock(&db->wmu);
        pthread_mutex_lock(&db->mu);
        while (db->flush_running && !db->bg_error)
            pthread_cond_wait(&db->cv, &db->mu);
        int need_flush = mem_overlap(db->mem->mt, &lo, &hi, g->seq);
        for (size_t i = 0; i < db->n_imm && !need_flush; i++)
            need_flush = mem_overlap(db->imm[i]->mt, &lo, &hi, g->seq);
        if (need_flush) {
            pthread_mutex_unlock(&db->mu);
            pthread_mutex_unlock(&db->wmu);
            if (attempt > 0) {
                rc = marble_error_set(err, MARBLE_ERR_INTERNAL,
                                      "ingest: memtables still overlap after a flush");
                break;
            }
            st->flushed = 1;
            rc = marble_db_flush(db, err);
            continue;
        }
        if (db->bg_error) {
            rc = marble_error_set(err, db->bg_error, "background work failed earlier: %s",
                                  db->bg_err.message);
            goto unlock;
        }
        marble__version *v = db->current;
        int overlap[MARBLE__NUM_LEVELS] = {0};
        for (int l = 0; l < MARBLE__NUM_LEVELS && rc == MARBLE_OK; l++)
            for (size_t i = 0; i < marble__version_num_files(v, l); i++) {
                const marble__file_meta *f = marble__version_file(v, l, i);
                if (keycmp(f->smallest, f->smallest_len, hi.data, hi.len) > 0 ||
                    keycmp(f->largest, f->largest_len, lo.data, lo.len) < 0)
                    continue;
                overlap[l] = 1;
                if (f->largest_seq >= g->seq) {
                    rc = marble_error_set(err, MARBLE_ERR_BUSY,
                                          "ingest into table '%s': writes to the same key range "
                                          "were flushed while it ran; retry",
                                          g->t->name);
                    break;
                }
            }
        /* a snapshot taken while the ingest ran has a sequence at or above the ingest's and
         * would see the rows appear under it */
        for (marble_snapshot *sn = db->snapshots.next; rc == MARBLE_OK && sn != &db->snapshots;
             sn = sn->next)
            if (sn->seq >= g->seq)
                rc = marble_error_set(err, MARBLE_ERR_BUSY,
                                      "ingest into table '%s': a snapshot taken while it ran "
                                      "(sequence %llu) would see its rows appear; release it and "
                                      "retry",
                                      g->t->name, (unsigned long long)sn->seq);
        if (rc != MARBLE_OK) goto unlock;
        int level = 0;
        if (!overlap[0] && db->compactions_running == 0)
            while (level + 1 < MARBLE__NUM_LEVELS && !overlap[level + 1])
                level++;
        for (size_t i = 0; i < g->n_jobs && rc == MARBLE_OK; i++) {
            ing_job *j = g->jobs[i];
            marble__bytes s = {0}, h = {0};
            rc = prefixed(g->t, &j->info.smallest, &s, err);
            if (rc == MARBLE_OK) rc = prefixed(g->t, &j->info.largest, &h, err);
            if (rc == MARBLE_OK) {
                marble__file_meta f = {0};
                f.level = level;
                f.number = j->number;
                f.size = j->info.file_size;
                f.smallest = s.data;
                f.smallest_len = s.len;
                f.largest = h.data;
                f.largest_len = h.len;
                f.smallest_seq = j->info.smallest_seq;
                f.largest_seq = j->info.largest_seq;
                f.rows = j->info.rows;
                if (marble__edit_add_file(&edit, &f) != MARBLE_OK)
                    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
                st->bytes += (int64_t)j->info.file_size;
            }
            marble__bytes_free(&s);
            marble__bytes_free(&h);
        }
        if (rc == MARBLE_OK) {
            rc = marble__db_apply_edit_locked(db, &edit, err);
            if (rc != MARBLE_OK) { /* the edit may be on disk: its files stay (see flush) */
                for (size_t i = 0; i < g->n_jobs; i++) {
                    free(g->jobs[i]->uri);
                    g->jobs[i]->uri = NULL;
                }
            }
        }
        if (rc == MARBLE_OK) {
            /* under wmu, as commits store it: the rows are complete in the installed version */
            if (atomic_load_explicit(&db->last_seq, memory_order_relaxed) < g->seq)
                atomic_store_explicit(&db->last_seq, g->seq, memory_order_release);
            st->files = (int64_t)g->n_jobs;
            st->level = level;
            st->sequence = g->seq;
            for (size_t i = 0; i < g->n_jobs; i++) {
                free(g->jobs[i]->uri);
                g->jobs[i]->uri = NULL;
            }
        }
    unlock:
        pthread_mutex_unlock(&db->mu);
        pthread_mutex_unlock(&db->wmu);
        break;
    }
    if (rc == MARBLE_OK) marble__db_maybe_schedule(db);
    marble__edit_free(&edit);
    marble__bytes_free(&lo);
    marble__bytes_free(&hi);
    return rc;
}

void marble_ingest_options_init(marble_ingest_options *o)
{
    memset(o, 0, sizeof *o);
}

static int stream_error(struct ArrowArrayStream *in, int code, const char *what, marble_error *err)
{
    const char *m = in->get_last_error ? in->get_last_error(in) : NULL;
    int rc = code == ENOMEM ? MARBLE_ERR_NO_MEMORY : MARBLE_ERR_IO;
    if (m && *m) return marble_error_set(err, rc, "%s", m);
    return marble_error_set(err, rc, "ingest: %s: %s", what, strerror(code));
}

/* Writes the batches through marble_db_put, in slices. */
static int put_batch(marble_db *db, const char *table, const struct ArrowSchema *schema,
                     const struct ArrowArray *a, marble_error *err)
{
    for (int64_t off = 0; off < a->length; off += PUT_SLICE_ROWS) {
        struct ArrowArray s = *a;
        s.offset = a->offset + off;
        s.length = a->length - off < PUT_SLICE_ROWS ? a->length - off : PUT_SLICE_ROWS;
        s.null_count = -1;
        MARBLE_RETURN_NOT_OK(marble_db_put(db, table, schema, &s, NULL, err));
    }
    return MARBLE_OK;
}

static int add_job(ingest *g, ing_job **cur, marble_error *err)
{
    ing_job *j = calloc(1, sizeof *j);
    if (!j) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    if (g->n_jobs == g->cap_jobs) {
        size_t c = g->cap_jobs ? 2 * g->cap_jobs : 8;
        ing_job **p = realloc(g->jobs, c * sizeof *p);
        if (!p) {
            free(j);
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        }
        g->jobs = p;
        g->cap_jobs = c;
    }
    j->ing = g;
    j->number = marble__db_new_file_number(g->db);
    j->uri = marble__db_file_uri(g->db, j->number);
    g->jobs[g->n_jobs++] = j;
    *cur = j;
    if (!j->uri) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    return MARBLE_OK;
}

static int job_push(ing_job *j, ing_batch *b, marble_error *err)
{
    if (j->n == j->cap) {
        size_t c = j->cap ? 2 * j->cap : 16;
        ing_batch **p = realloc(j->b, c * sizeof *p);
        if (!p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        j->b = p;
        j->cap = c;
    }
    j->b[j->n++] = b;
    j->est += b->est_bytes;
    return MARBLE_OK;
}

/* Waits for the SSTable writers, reporting progress every 20 ms meanwhile (a caller's progress
 * callback is where it may notice an interrupt and cancel). */
static int wait_jobs(marble_group *grp, const marble_ingest_options *o, int64_t rows,
                     uint64_t bytes, marble_error *err)
{
    while (o->progress && marble_group_pending(grp) > 0 &&
           !marble_cancel_token_is_cancelled(o->cancel)) {
        marble_sleep_ns(20 * 1000000);
        o->progress(o->progress_ud, rows, (int64_t)bytes);
    }
    return marble_group_wait(grp, err);
}

int marble_db_ingest(marble_db *db, const char *table, struct ArrowArrayStream *input,
                     const marble_ingest_options *o, marble_ingest_stats *stats, marble_error *err)
{
    marble_ingest_stats st;
    memset(&st, 0, sizeof st);
    st.level = -1;
    if (stats) *stats = st;
    if (!input || !input->release)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "ingest: no input stream");
    marble_ingest_options opts;
    if (o)
        opts = *o;
    else
        marble_ingest_options_init(&opts);
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    ingest g;
    memset(&g, 0, sizeof g);
    marble__res job = {0}; /* in the db's registry while the ingest runs */
    int rc = MARBLE_OK;
    if (!db || !table) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "ingest: db or table is NULL");
        goto out;
    }
    g.db = db;
    g.t = marble__db_find_table(db, table);
    if (!g.t) {
        rc = marble__db_table_error(table, err);
        goto out;
    }
    marble__db_res_add(db, &job, "ingest into table '%s'", table);
    int e = input->get_schema(input, &schema);
    if (e != 0) {
        rc = stream_error(input, e, "reading the input's schema", err);
        goto out;
    }
    if (!schema.format || strcmp(schema.format, "+s") != 0) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "ingest: the input is not a stream of struct (\"+s\") batches");
        goto out;
    }
    marble__db_sst_options(db, &g.so);
    marble__db_index_options(db, g.t, &g.so);
    pthread_mutex_lock(&db->wmu);
    if (db->write_error)
        rc = marble_error_set(err, db->write_error,
                              "the database refuses writes after an earlier failure: %s",
                              db->write_err.message);
    else
        g.seq = db->next_seq++;
    pthread_mutex_unlock(&db->wmu);
    if (rc != MARBLE_OK) goto out;

    int max_jobs = opts.threads > 0 ? opts.threads : marble_sched_threads(db->sched);
    if (max_jobs < 1) max_jobs = 1;
    uint64_t target = db->opts.target_file_size ? db->opts.target_file_size : 64u << 20;
    marble_group grp;
    marble_group_init(&grp, db->sched, opts.cancel);
    int inflight = 0, fallback = 0;
    ing_job *cur = NULL;
    ing_batch *pending = NULL; /* the batch that showed the input unsorted */
    int64_t rows = 0;
    uint64_t bytes = 0;
    marble__bytes prev = {0};
    int have_prev = 0;
    for (;;) {
        if (marble_cancel_token_is_cancelled(opts.cancel)) {
            rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "ingest cancelled");
            break;
        }
        struct ArrowArray a;
        memset(&a, 0, sizeof a);
        e = input->get_next(input, &a);
        if (e != 0) {
            rc = stream_error(input, e, "reading the input", err);
            break;
        }
        if (!a.release) break;
        if (a.length == 0) {
            marble_arrow_array_release(&a);
            continue;
        }
        ing_batch *b = NULL;
        rc = batch_new(&g, &schema, &a, &b, err);
        if (rc != MARBLE_OK) {
            if (err) {
                char m[MARBLE_ERROR_MESSAGE_SIZE];
                snprintf(m, sizeof m, "%s", err->message);
                marble_error_set(err, rc,
                                 "ingest into table '%s', the batch at row %" PRId64 ": %s", table,
                                 rows, m);
            }
            break;
        }
        int64_t bad = -1;
        for (int64_t r = 0; r < b->src.length; r++) {
            size_t kl, pl = prev.len;
            const uint8_t *k = batch_key(b, r, &kl);
            const uint8_t *pk = r ? batch_key(b, r - 1, &pl) : prev.data;
            if ((r || have_prev) && keycmp(pk, pl, k, kl) >= 0) {
                bad = r;
                break;
            }
        }
        if (bad >= 0) {
            if (opts.assume_sorted) {
                rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                      "ingest into table '%s': row %" PRId64
                                      " has a key not above the row before it (the input must "
                                      "be sorted by key, without duplicates)",
                                      table, rows + bad);
                batch_free(b);
                break;
            }
            fallback = 1;
            pending = b;
            break;
        }
        size_t kl;
        const uint8_t *last = batch_key(b, b->src.length - 1, &kl);
        prev.len = 0;
        rc = marble__bytes_append(&prev, last, kl, err);
        have_prev = 1;
        rows += b->src.length;
        bytes += b->est_bytes;
        if (rc == MARBLE_OK && !cur) rc = add_job(&g, &cur, err);
        if (rc == MARBLE_OK) rc = job_push(cur, b, err);
        if (rc != MARBLE_OK) {
            if (!cur || cur->n == 0 || cur->b[cur->n - 1] != b) batch_free(b);
            break;
        }
        if (cur->est >= target) {
            rc = marble_group_spawn(&grp, job_task, cur) == MARBLE_OK
                     ? MARBLE_OK
                     : marble_error_set(err, MARBLE_ERR_SHUTDOWN, "ingest: cannot spawn a task");
            cur = NULL;
            if (rc == MARBLE_OK && ++inflight >= max_jobs) {
                rc = wait_jobs(&grp, &opts, rows, bytes, err);
                inflight = 0;
            }
            if (rc != MARBLE_OK) break;
        }
        if (opts.progress) opts.progress(opts.progress_ud, rows, (int64_t)bytes);
    }
    if (rc == MARBLE_OK && cur && cur->n)
        rc = marble_group_spawn(&grp, job_task, cur) == MARBLE_OK
                 ? MARBLE_OK
                 : marble_error_set(err, MARBLE_ERR_SHUTDOWN, "ingest: cannot spawn a task");
    {
        marble_error we = {0};
        int wrc = wait_jobs(&grp, &opts, rows, bytes, &we);
        if (rc == MARBLE_OK && wrc != MARBLE_OK) {
            rc = wrc;
            if (err) *err = we;
        }
    }
    marble_group_destroy(&grp);
    marble__bytes_free(&prev);
    if (rc == MARBLE_OK && marble_cancel_token_is_cancelled(opts.cancel))
        rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "ingest cancelled");
    for (size_t i = 0; rc == MARBLE_OK && i < g.n_jobs; i++)
        if (!g.jobs[i]->written)
            rc = marble_error_set(err, MARBLE_ERR_INTERNAL, "ingest: a file was not written");
    st.rows = rows;
    if (rc == MARBLE_OK && g.n_jobs) rc = install(&g, &st, err);
    if (rc != MARBLE_OK) remove_jobs(&g);
    if (rc == MARBLE_OK) st.wal_bypassed = !fallback;
    if (rc == MARBLE_OK && fallback) {
        rc = put_batch(db, table, &schema, &pending->src, err);
        if (rc == MARBLE_OK) {
            st.rows += pending->src.length;
            st.rows_put += pending->src.length;
        }
        batch_free(pending);
        pending = NULL;
        while (rc == MARBLE_OK) {
            if (opts.progress) opts.progress(opts.progress_ud, st.rows, (int64_t)bytes);
            if (marble_cancel_token_is_cancelled(opts.cancel)) {
                rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "ingest cancelled");
                break;
            }
            struct ArrowArray a;
            memset(&a, 0, sizeof a);
            e = input->get_next(input, &a);
            if (e != 0) {
                rc = stream_error(input, e, "reading the input", err);
                break;
            }
            if (!a.release) break;
            rc = put_batch(db, table, &schema, &a, err);
            if (rc == MARBLE_OK) {
                st.rows += a.length;
                st.rows_put += a.length;
            }
            marble_arrow_array_release(&a);
        }
    }
    batch_free(pending);
out:
    for (size_t i = 0; i < g.n_jobs; i++)
        job_free(g.jobs[i]);
    free(g.jobs);
    if (g.t) marble__table_unref(g.t);
    if (db) marble__db_res_remove(db, &job);
    marble_arrow_schema_release(&schema);
    marble_arrow_stream_release(input);
    if (stats) *stats = st;
    return rc;
}

/* ---- import -------------------------------------------------------------------------------- */

static int ends_with(const char *s, size_t n, const char *suf)
{
    size_t k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

marble_data_format marble_data_format_from_path(const char *uri)
{
    if (!uri) return MARBLE_FORMAT_AUTO;
    size_t n = strlen(uri);
    if (ends_with(uri, n, ".zst") || ends_with(uri, n, ".lz4"))
        n -= 4;
    else if (ends_with(uri, n, ".gz"))
        n -= 3;
    char buf[16] = {0};
    size_t k = n < 9 ? n : 9;
    memcpy(buf, uri + n - k, k);
    if (ends_with(buf, k, ".arrows")) return MARBLE_FORMAT_ARROW_STREAM;
    if (ends_with(buf, k, ".arrow") || ends_with(buf, k, ".feather"))
        return MARBLE_FORMAT_ARROW_FILE;
    if (ends_with(buf, k, ".csv")) return MARBLE_FORMAT_CSV;
    if (ends_with(buf, k, ".json") || ends_with(buf, k, ".jsonl")) return MARBLE_FORMAT_JSON;
    return MARBLE_FORMAT_AUTO;
}

void marble_import_options_init(marble_import_options *o)
{
    memset(o, 0, sizeof *o);
    marble_ingest_options_init(&o->ingest);
    marble_csv_options_init(&o->csv);
}

/* A file read sequentially (compressed streams allow nothing else). */
typedef struct file_in {
    marble_file *f;
    const char *uri;
    uint64_t off;
    atomic_uint_fast64_t seen; /* off, for progress reports from the consuming thread */
} file_in;

static int in_read(file_in *in, void *buf, size_t n, size_t *got, marble_error *err)
{
    size_t done = 0;
    while (done < n) {
        size_t k = 0;
        MARBLE_RETURN_NOT_OK(
            marble_file_read(in->f, in->off, (uint8_t *)buf + done, n - done, &k, err));
        if (k == 0) break;
        done += k;
        in->off += k;
        atomic_store_explicit(&in->seen, in->off, memory_order_relaxed);
    }
    *got = done;
    return MARBLE_OK;
}

static int csv_read(void *ctx, void *buf, size_t cap, size_t *got, marble_error *err)
{
    file_in *in = ctx;
    size_t k = 0;
    MARBLE_RETURN_NOT_OK(marble_file_read(in->f, in->off, buf, cap, &k, err));
    in->off += k;
    atomic_store_explicit(&in->seen, in->off, memory_order_relaxed);
    *got = k;
    return MARBLE_OK;
}

#define IPC_MAX_META ((uint32_t)1 << 28)
#define IPC_MAX_BODY ((int64_t)1 << 40)

/* An Arrow IPC stream (or the stream inside an IPC file) read message by message: each record
 * batch message is decoded by the library's reader from a small stream of its own (the schema
 * message, the batch message, an end-of-stream marker), which its arrays keep alive. */
typedef struct ipc_in {
    file_in in;
    uint8_t *schema_msg;
    size_t schema_len;
    uint8_t peek[8];
    size_t npeek;
    int is_file;
    int eos;
    marble_error err;
} ipc_in;

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int ipc_corrupt(ipc_in *s, marble_error *err, const char *what)
{
    return marble_error_set(err, MARBLE_ERR_CORRUPTION, "%s: corruption: %s at byte %" PRIu64,
                            s->in.uri, what, s->in.off);
}

static int ipc_read(ipc_in *s, void *buf, size_t n, size_t *got, marble_error *err)
{
    size_t k = s->npeek < n ? s->npeek : n;
    memcpy(buf, s->peek, k);
    memmove(s->peek, s->peek + k, s->npeek - k);
    s->npeek -= k;
    size_t more = 0;
    if (k < n) MARBLE_RETURN_NOT_OK(in_read(&s->in, (uint8_t *)buf + k, n - k, &more, err));
    *got = k + more;
    return MARBLE_OK;
}

/* The Message flatbuffer's bodyLength (field 3), bounds-checked. */
static int body_length(const uint8_t *m, size_t n, int64_t *out)
{
    if (n < 8) return 0;
    uint32_t root = rd32(m);
    if ((uint64_t)root + 4 > n) return 0;
    int32_t vto = (int32_t)rd32(m + root);
    int64_t vt = (int64_t)root - vto;
    if (vt < 0 || (uint64_t)vt + 4 > n) return 0;
    uint16_t vsize = (uint16_t)(m[vt] | m[vt + 1] << 8);
    if (vsize < 4 || (uint64_t)vt + vsize > n) return 0;
    *out = 0;
    if (vsize < 4 + 2 * 4) return 1;
    uint16_t fo = (uint16_t)(m[vt + 10] | m[vt + 11] << 8);
    if (!fo) return 1;
    if ((uint64_t)root + fo + 8 > n) return 0;
    int64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | m[root + fo + (unsigned)i];
    *out = v;
    return v >= 0 && v <= IPC_MAX_BODY;
}

/* The next message as its bytes (continuation, length, metadata, body), or *eos. */
static int ipc_message(ipc_in *s, uint8_t **msg, size_t *len, marble_error *err)
{
    *msg = NULL;
    *len = 0;
    uint8_t h[8];
    size_t got;
    MARBLE_RETURN_NOT_OK(ipc_read(s, h, 4, &got, err));
    if (got == 0) {
        s->eos = 1;
        return MARBLE_OK;
    }
    if (got < 4) return ipc_corrupt(s, err, "truncated message header");
    uint32_t ml = rd32(h);
    if (s->is_file && ml != 0xFFFFFFFFu) { /* no end-of-stream marker: the footer follows */
        s->eos = 1;
        return MARBLE_OK;
    }
    if (ml == 0xFFFFFFFFu) {
        MARBLE_RETURN_NOT_OK(ipc_read(s, h, 4, &got, err));
        if (got < 4) return ipc_corrupt(s, err, "truncated message header");
        ml = rd32(h);
    }
    if (ml == 0) {
        s->eos = 1;
        return MARBLE_OK;
    }
    if (ml > IPC_MAX_META || ml % 8 != 0) return ipc_corrupt(s, err, "bad message length");
    uint8_t *m = malloc(8 + (size_t)ml);
    if (!m) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    memset(m, 0xFF, 4);
    memcpy(m + 4, &ml, 4);
    int rc = ipc_read(s, m + 8, ml, &got, err);
    int64_t body = 0;
    if (rc == MARBLE_OK && got < ml) rc = ipc_corrupt(s, err, "truncated message");
    if (rc == MARBLE_OK && !body_length(m + 8, ml, &body))
        rc = ipc_corrupt(s, err, "bad message metadata");
    if (rc == MARBLE_OK && body) {
        uint8_t *p = realloc(m, 8 + (size_t)ml + (size_t)body);
        if (!p) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        } else {
            m = p;
            rc = ipc_read(s, m + 8 + ml, (size_t)body, &got, err);
            if (rc == MARBLE_OK && got < (size_t)body) rc = ipc_corrupt(s, err, "truncated body");
        }
    }
    if (rc != MARBLE_OK) {
        free(m);
        return rc;
    }
    *msg = m;
    *len = 8 + (size_t)ml + (size_t)body;
    return MARBLE_OK;
}

static void free_owner(void *p)
{
    free(p);
}

/* Opens the library's reader over schema message + `msg` (may be NULL) + end-of-stream. */
static int mini_reader(ipc_in *s, const uint8_t *msg, size_t len, marble_ipc_reader **out,
                       marble_error *err)
{
    size_t n = s->schema_len + len + 8;
    uint8_t *buf = malloc(n);
    if (!buf) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    memcpy(buf, s->schema_msg, s->schema_len);
    if (len) memcpy(buf + s->schema_len, msg, len);
    memset(buf + s->schema_len + len, 0xFF, 4);
    memset(buf + s->schema_len + len + 4, 0, 4);
    marble_ipc_source src = {buf, n, buf, NULL, free_owner};
    int rc = marble_ipc_reader_open(&src, out, err);
    if (rc != MARBLE_OK) {
        free(buf);
        if (err) {
            char m[MARBLE_ERROR_MESSAGE_SIZE];
            snprintf(m, sizeof m, "%s", err->message);
            marble_error_set(err, rc, "%s: %s", s->in.uri, m);
        }
    }
    return rc;
}

static int ipc_get_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    ipc_in *s = st->private_data;
    marble_ipc_reader *r = NULL;
    int rc = mini_reader(s, NULL, 0, &r, &s->err);
    if (rc == MARBLE_OK) rc = marble_ipc_reader_schema(r, out, &s->err);
    marble_ipc_reader_destroy(r);
    return rc == MARBLE_OK ? 0 : marble_error_to_errno(rc);
}

static int ipc_get_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    ipc_in *s = st->private_data;
    memset(out, 0, sizeof *out);
    if (s->eos) return 0;
    uint8_t *msg;
    size_t len;
    int rc = ipc_message(s, &msg, &len, &s->err);
    if (rc != MARBLE_OK) return marble_error_to_errno(rc);
    if (!msg) return 0;
    marble_ipc_reader *r = NULL;
    rc = mini_reader(s, msg, len, &r, &s->err);
    free(msg);
    if (rc == MARBLE_OK && marble_ipc_reader_num_batches(r) != 1)
        rc = marble_error_set(&s->err, MARBLE_ERR_UNSUPPORTED,
                              "%s: a message that is not a record batch (dictionaries are not "
                              "supported)",
                              s->in.uri);
    if (rc == MARBLE_OK) rc = marble_ipc_reader_read(r, 0, out, &s->err);
    marble_ipc_reader_destroy(r);
    return rc == MARBLE_OK ? 0 : marble_error_to_errno(rc);
}

static const char *ipc_last_error(struct ArrowArrayStream *st)
{
    ipc_in *s = st->private_data;
    return s->err.message;
}

static void ipc_release(struct ArrowArrayStream *st)
{
    st->release = NULL; /* the importer frees the state after reading its error */
}

/* Reads the magic / first message; `f` stays owned by the caller. */
static int ipc_open(marble_file *f, const char *uri, struct ArrowArrayStream *out,
                    marble_error *err)
{
    ipc_in *s = calloc(1, sizeof *s);
    if (!s) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    s->in.f = f;
    s->in.uri = uri;
    size_t got = 0;
    int rc = in_read(&s->in, s->peek, 8, &got, err);
    if (rc == MARBLE_OK) {
        if (got >= 6 && memcmp(s->peek, "ARROW1", 6) == 0) {
            s->npeek = 0; /* the file's header: the stream follows */
            s->is_file = 1;
            if (got < 8) rc = ipc_corrupt(s, err, "truncated file header");
        } else if (got == 8 && rd32(s->peek) == 0xFFFFFFFFu) {
            s->npeek = 8;
        } else {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "%s is neither an Arrow IPC file nor an Arrow IPC stream", uri);
        }
    }
    if (rc == MARBLE_OK) rc = ipc_message(s, &s->schema_msg, &s->schema_len, err);
    if (rc == MARBLE_OK && !s->schema_msg) rc = ipc_corrupt(s, err, "no schema message");
    if (rc != MARBLE_OK) {
        free(s->schema_msg);
        free(s);
        return rc;
    }
    s->eos = 0;
    out->get_schema = ipc_get_schema;
    out->get_next = ipc_get_next;
    out->get_last_error = ipc_last_error;
    out->release = ipc_release;
    out->private_data = s;
    return MARBLE_OK;
}

typedef struct csv_in {
    marble_csv_reader *r;
    const char *uri;
    marble_error err;
} csv_in;

static int csv_get_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    csv_in *c = st->private_data;
    int rc = marble_csv_reader_schema(c->r, out, &c->err);
    return rc == MARBLE_OK ? 0 : marble_error_to_errno(rc);
}

static int csv_get_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    csv_in *c = st->private_data;
    marble_error e = {0};
    int rc = marble_csv_reader_next(c->r, out, &e);
    if (rc != MARBLE_OK) marble_error_set(&c->err, rc, "%s: %s", c->uri, e.message);
    return rc == MARBLE_OK ? 0 : marble_error_to_errno(rc);
}

static const char *csv_last_error(struct ArrowArrayStream *st)
{
    csv_in *c = st->private_data;
    return c->err.message;
}

static void csv_release(struct ArrowArrayStream *st)
{
    st->release = NULL; /* the importer frees the state and the reader */
}

/* Reads an input stream ahead on a thread of its own (parsing CSV or decoding IPC there) while
 * the ingest validates, encodes keys and hands batches to the SSTable writers: up to
 * PREFETCH_BATCHES batches wait in between. The inner stream is used by that thread only. */
#define PREFETCH_BATCHES 4

typedef struct prefetch {
    struct ArrowArrayStream inner;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ArrowArray q[PREFETCH_BATCHES];
    int head, n;
    int done, stop, code;
    char msg[MARBLE_ERROR_MESSAGE_SIZE];
} prefetch;

static void *prefetch_main(void *arg)
{
    prefetch *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->n == PREFETCH_BATCHES && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        int stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        struct ArrowArray a;
        memset(&a, 0, sizeof a);
        int rc = p->inner.get_next(&p->inner, &a);
        pthread_mutex_lock(&p->mu);
        if (rc != 0) {
            const char *m = p->inner.get_last_error ? p->inner.get_last_error(&p->inner) : NULL;
            snprintf(p->msg, sizeof p->msg, "%s", m ? m : "");
            p->code = rc;
            p->done = 1;
        } else if (!a.release) {
            p->done = 1;
        } else {
            marble_arrow_array_move(&a, &p->q[(p->head + p->n) % PREFETCH_BATCHES]);
            p->n++;
        }
        int done = p->done;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (done) break;
    }
    return NULL;
}

static int prefetch_schema(struct ArrowArrayStream *st, struct ArrowSchema *out)
{
    prefetch *p = st->private_data;
    int rc = p->inner.get_schema(&p->inner, out); /* before the thread starts */
    if (rc != 0) {
        const char *m = p->inner.get_last_error ? p->inner.get_last_error(&p->inner) : NULL;
        snprintf(p->msg, sizeof p->msg, "%s", m ? m : "");
    }
    return rc;
}

static int prefetch_next(struct ArrowArrayStream *st, struct ArrowArray *out)
{
    prefetch *p = st->private_data;
    memset(out, 0, sizeof *out);
    if (!p->started) {
        if (pthread_create(&p->th, NULL, prefetch_main, p) != 0) {
            snprintf(p->msg, sizeof p->msg, "cannot start the reading thread");
            return EAGAIN;
        }
        p->started = 1;
    }
    pthread_mutex_lock(&p->mu);
    while (p->n == 0 && !p->done)
        pthread_cond_wait(&p->cv, &p->mu);
    int rc = 0;
    if (p->n) {
        marble_arrow_array_move(&p->q[p->head], out);
        p->head = (p->head + 1) % PREFETCH_BATCHES;
        p->n--;
        pthread_cond_broadcast(&p->cv);
    } else {
        rc = p->code;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static const char *prefetch_error(struct ArrowArrayStream *st)
{
    prefetch *p = st->private_data;
    return p->msg; /* written before the error code was handed out */
}

static void prefetch_release(struct ArrowArrayStream *st)
{
    prefetch *p = st->private_data;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->started) pthread_join(p->th, NULL);
    for (int i = 0; i < p->n; i++)
        marble_arrow_array_release(&p->q[(p->head + i) % PREFETCH_BATCHES]);
    marble_arrow_stream_release(&p->inner);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    st->release = NULL;
}

/* Wraps *st (moved into the wrapper) in a read-ahead stream. */
static int prefetch_wrap(struct ArrowArrayStream *st, marble_error *err)
{
    prefetch *p = calloc(1, sizeof *p);
    if (!p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    marble_arrow_stream_move(st, &p->inner);
    st->get_schema = prefetch_schema;
    st->get_next = prefetch_next;
    st->get_last_error = prefetch_error;
    st->release = prefetch_release;
    st->private_data = p;
    return MARBLE_OK;
}

typedef struct import_progress {
    marble_progress_fn fn;
    void *ud;
    const file_in *in;
} import_progress;

static void import_progress_fn(void *ud, int64_t rows, int64_t bytes)
{
    (void)bytes;
    import_progress *p = ud;
    p->fn(p->ud, rows, (int64_t)atomic_load_explicit(&p->in->seen, memory_order_relaxed));
}

int marble_db_import_file(marble_db *db, const char *table, const char *uri,
                          const marble_import_options *o, marble_import_stats *stats,
                          marble_error *err)
{
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->ingest.level = -1;
    }
    if (!db || !table || !uri)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "import: db, table or file is NULL");
    marble_import_options opts;
    if (o)
        opts = *o;
    else
        marble_import_options_init(&opts);
    marble_data_format fmt = opts.format ? opts.format : marble_data_format_from_path(uri);
    if (fmt == MARBLE_FORMAT_AUTO || fmt == MARBLE_FORMAT_JSON)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "import: cannot tell the format of '%s' (.arrow, .feather, "
                                ".arrows or .csv, optionally + .zst, .gz or .lz4)",
                                uri);
    int compressed = marble_codec_from_path(uri) != MARBLE_CODEC_NONE;
    file_in in;
    memset(&in, 0, sizeof in);
    in.uri = uri;
    int rc = marble_fs_open(
        db->fs, uri, MARBLE_OPEN_READ | (compressed ? MARBLE_OPEN_COMPRESSED : 0), &in.f, err);
    if (rc != MARBLE_OK) return rc;
    struct ArrowArrayStream st;
    memset(&st, 0, sizeof st);
    struct ArrowSchema tschema;
    memset(&tschema, 0, sizeof tschema);
    marble_csv_reader *cr = NULL;
    if (fmt == MARBLE_FORMAT_CSV) {
        const struct ArrowSchema *schema = opts.csv_schema;
        if (!schema) {
            rc = marble_db_describe_table(db, table, &tschema, NULL, NULL, err);
            schema = &tschema;
        }
        marble_csv_source src = {csv_read, &in};
        if (rc == MARBLE_OK) rc = marble_csv_reader_create(&src, schema, &opts.csv, &cr, err);
        csv_in *c = rc == MARBLE_OK ? calloc(1, sizeof *c) : NULL;
        if (rc == MARBLE_OK && !c)
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        if (rc == MARBLE_OK) {
            c->r = cr;
            c->uri = uri;
            st.get_schema = csv_get_schema;
            st.get_next = csv_get_next;
            st.get_last_error = csv_last_error;
            st.release = csv_release;
            st.private_data = c;
        } else if (err && rc != MARBLE_ERR_NO_MEMORY) {
            char m[MARBLE_ERROR_MESSAGE_SIZE];
            snprintf(m, sizeof m, "%s", err->message);
            marble_error_set(err, rc, "%s: %s", uri, m);
        }
    } else {
        rc = ipc_open(in.f, uri, &st, err);
    }
    import_progress ip = {
        opts.ingest.progress, opts.ingest.progress_ud,
        rc == MARBLE_OK && fmt != MARBLE_FORMAT_CSV ? &((ipc_in *)st.private_data)->in : &in};
    if (rc == MARBLE_OK && opts.ingest.progress) {
        opts.ingest.progress = import_progress_fn;
        opts.ingest.progress_ud = &ip;
    }
    if (rc == MARBLE_OK) {
        marble_ingest_stats is = {0};
        void *sdata = st.private_data; /* the import frees it: see the releases */
        rc = prefetch_wrap(&st, err);
        const marble_error *se =
            fmt == MARBLE_FORMAT_CSV ? &((csv_in *)sdata)->err : &((ipc_in *)sdata)->err;
        if (rc == MARBLE_OK) rc = marble_db_ingest(db, table, &st, &opts.ingest, &is, err);
        if (rc != MARBLE_OK && se->code) { /* the input's own error, with its code */
            rc = se->code;
            if (err) *err = *se;
        }
        if (stats) stats->ingest = is;
        if (fmt == MARBLE_FORMAT_CSV) {
            free(sdata);
        } else {
            free(((ipc_in *)sdata)->schema_msg);
            free(sdata);
        }
    }
    if (cr && stats) {
        marble_csv_stats cs;
        marble_csv_reader_stats(cr, &cs);
        stats->bad_rows = cs.bad_rows;
        stats->first_bad_line = cs.first_bad_line;
        memcpy(stats->first_bad_message, cs.first_bad_message, sizeof cs.first_bad_message);
    }
    marble_arrow_stream_release(&st);
    marble_csv_reader_destroy(cr);
    marble_arrow_schema_release(&tschema);
    marble_file_close(in.f, NULL);
    return rc;
}
