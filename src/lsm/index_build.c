/* Index building (include/marble/db.h, "secondary indexes and index rebuilds"): rewrites the index
 * appendix of existing SSTables in parallel on the scheduler (marble__sst_rewrite, one task per
 * file or a bounded number of tasks claiming files), installs all replacements in one manifest
 * edit, and creates and drops secondary indexes, whose per-batch value filters the SSTable writer
 * adds to every file of an indexed table.
 *
 * Thread safety: the calls may run from any thread beside reads, writes, flushes and
 * compactions. The files being rewritten are marked busy in db->busy_files (under db->mu), the
 * marks the compaction picker honours, so no background compaction takes them meanwhile; a
 * manual compaction does not look at the marks, so the install checks under db->mu that each old
 * file is still in the current version and leaves out those that are not.
 */

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/db_internal.h"
#include "marble/base.h"

typedef struct rb_file {
    marble__file_meta meta; /* the old file's (keys owned: freed with the job) */
    marble__table *table;   /* referenced */
    uint64_t number;        /* the new file's; 0 until a task takes the file */
    marble__sst_info info;
    int written;
    int in_edit; /* in the installed edit */
} rb_file;

typedef struct rb_job {
    marble_db *db;
    rb_file *files;
    size_t n;
    atomic_size_t next;  /* the next file to claim (relaxed: claims only need to be unique) */
    int bloom_bits;      /* -1: the database's */
    int only_missing;    /* >= 0: rewrite only files without a value filter for this column */
    pthread_mutex_t pmu; /* serializes progress calls */
    uint64_t done;       /* under pmu */
    void (*progress)(void *ud, uint64_t files_done, uint64_t files_total);
    void *progress_ud;
} rb_job;

void marble_index_options_init(marble_index_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->bloom_bits_per_key = -1;
}

/* ---- busy marks (db->mu held) ---------------------------------------------------------------- */

static int busy_has(const marble_db *db, uint64_t number)
{
    for (size_t i = 0; i < db->n_busy; i++)
        if (db->busy_files[i] == number) return 1;
    return 0;
}

static int busy_add(marble_db *db, uint64_t number)
{
    if (db->n_busy == db->cap_busy) {
        size_t cap = db->cap_busy ? db->cap_busy * 2 : 32;
        uint64_t *p = realloc(db->busy_files, cap * sizeof *p);
        if (!p) return MARBLE_ERR_NO_MEMORY;
        db->busy_files = p;
        db->cap_busy = cap;
    }
    db->busy_files[db->n_busy++] = number;
    return MARBLE_OK;
}

static void busy_remove(marble_db *db, uint64_t number)
{
    for (size_t i = 0; i < db->n_busy; i++)
        if (db->busy_files[i] == number) {
            db->busy_files[i] = db->busy_files[--db->n_busy];
            return;
        }
}

/* ---- the rewrite tasks ----------------------------------------------------------------------- */

static int task_cancelled(void *ud)
{
    return marble_task_cancelled(ud);
}

static void remove_file(marble_db *db, uint64_t number)
{
    char *uri = marble__db_file_uri(db, number);
    if (uri) marble_fs_remove(db->fs, uri, NULL);
    free(uri);
}

/* Rewrites one file (not when it already has the value filter create_index wants). */
static int rewrite_one(rb_job *j, rb_file *f, marble_task_ctx *ctx, marble_error *err)
{
    marble_db *db = j->db;
    marble__sst *s = NULL;
    MARBLE_RETURN_NOT_OK(marble__db_open_sst(db, f->meta.number, f->table, &s, err));
    if (j->only_missing >= 0 && marble__sst_has_value_filter(s, j->only_missing)) {
        marble__sst_unref(s);
        return MARBLE_OK;
    }
    marble__sst_options o;
    marble__db_sst_options(db, &o);
    if (j->bloom_bits >= 0) o.bloom_bits_per_key = j->bloom_bits;
    marble__db_index_options(db, f->table, &o);
    f->number = marble__db_new_file_number(db);
    char *uri = marble__db_file_uri(db, f->number);
    int rc = uri ? marble__sst_rewrite(s, db->fs, uri, &o, task_cancelled, ctx, &f->info, err)
                 : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    if (rc == MARBLE_OK && f->info.rows != f->meta.rows)
        rc = marble_error_set(err, MARBLE_ERR_CORRUPTION,
                              "%s: corruption: %" PRIu64 " rows, the manifest says %" PRIu64,
                              marble__sst_uri(s), f->info.rows, f->meta.rows);
    marble__sst_unref(s);
    if (rc == MARBLE_OK) {
        f->written = 1;
    } else if (uri) {
        marble_fs_remove(db->fs, uri, NULL);
        marble__sst_info_free(&f->info);
    }
    free(uri);
    return rc;
}

static marble_task_status rewrite_task(marble_task_ctx *ctx, void *arg)
{
    rb_job *j = arg;
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (i >= j->n) return MARBLE_TASK_DONE;
        if (marble_task_cancelled(ctx))
            return marble_task_fail(ctx, MARBLE_ERR_CANCELLED, "index rebuild cancelled");
        marble_error e = {0};
        int rc = rewrite_one(j, &j->files[i], ctx, &e);
        if (rc != MARBLE_OK) return marble_task_fail(ctx, rc, "%s", e.message);
        if (j->progress) {
            pthread_mutex_lock(&j->pmu);
            j->done++;
            j->progress(j->progress_ud, j->done, j->n);
            pthread_mutex_unlock(&j->pmu);
        }
    }
}

/* ---- selection and install ------------------------------------------------------------------- */

/* Picks the files of table `only` (NULL: all tables) that no compaction is merging and marks them
 * busy; mu held. */
static int select_files(marble_db *db, const marble__version *v, const marble__table *only,
                        rb_job *j, marble_error *err)
{
    size_t cap = 0;
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        cap += marble__version_num_files(v, l);
    j->files = calloc(cap + 1, sizeof *j->files);
    if (!j->files) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < marble__version_num_files(v, l); i++) {
            const marble__file_meta *f = marble__version_file(v, l, i);
            if (f->smallest_len < MARBLE__PREFIX_LEN) continue;
            uint32_t id = marble__prefix_get(f->smallest);
            if ((only && id != only->id) || busy_has(db, f->number)) continue;
            marble__table *t = NULL;
            for (size_t k = 0; k < db->n_tables; k++)
                if (db->tables[k]->id == id) t = db->tables[k];
            if (!t) continue; /* a dropped table's files, on their way out */
            if (busy_add(db, f->number) != MARBLE_OK)
                return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
            rb_file *r = &j->files[j->n];
            r->meta = *f;
            r->meta.smallest = malloc(f->smallest_len);
            r->meta.largest = malloc(f->largest_len ? f->largest_len : 1);
            if (!r->meta.smallest || !r->meta.largest) {
                free(r->meta.smallest);
                free(r->meta.largest);
                busy_remove(db, f->number);
                return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
            }
            memcpy(r->meta.smallest, f->smallest, f->smallest_len);
            memcpy(r->meta.largest, f->largest, f->largest_len);
            marble__table_ref(t);
            r->table = t;
            j->n++;
        }
    return MARBLE_OK;
}

static int in_version(const marble__version *v, const marble__file_meta *f)
{
    for (size_t i = 0; i < marble__version_num_files(v, f->level); i++)
        if (marble__version_file(v, f->level, i)->number == f->number) return 1;
    return 0;
}

/* One edit replacing every written file still in the current version; mu held. Files left out
 * (replaced meanwhile by a manual compaction) have in_edit = 0: the caller removes them. */
static int install(rb_job *j, marble_error *err)
{
    marble_db *db = j->db;
    int rc = MARBLE_OK;
    for (int attempt = 0;; attempt++) {
        marble__version *cur = marble__manifest_current(db->manifest);
        marble__version_edit e;
        marble__edit_init(&e);
        size_t n = 0;
        for (size_t i = 0; i < j->n && rc == MARBLE_OK; i++) {
            rb_file *f = &j->files[i];
            f->in_edit = 0;
            if (!f->written || !in_version(cur, &f->meta)) continue;
            f->in_edit = 1;
            marble__file_meta nf = f->meta;
            nf.number = f->number;
            nf.size = f->info.file_size;
            if (marble__edit_delete_file(&e, f->meta.level, f->meta.number) != MARBLE_OK ||
                marble__edit_add_file(&e, &nf) != MARBLE_OK)
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
            n++;
        }
        marble__version_unref(cur);
        if (rc == MARBLE_OK && n) rc = marble__db_apply_edit_locked(db, &e, err);
        marble__edit_free(&e);
        /* a manual compaction (which ignores busy marks) applied between the check and ours */
        if (rc != MARBLE_ERR_INVALID_ARGUMENT || attempt == 3) return rc;
        rc = MARBLE_OK;
    }
}

/* The rebuild of `only`'s files (NULL: all tables). only_missing >= 0: skip files that already
 * have a value filter for that column. */
static int rebuild(marble_db *db, const marble__table *only, const marble_index_options *o,
                   int only_missing, marble_error *err)
{
    rb_job j;
    memset(&j, 0, sizeof j);
    j.db = db;
    j.bloom_bits = o->bloom_bits_per_key;
    j.only_missing = only_missing;
    j.progress = o->progress;
    j.progress_ud = o->progress_ud;
    atomic_init(&j.next, 0);
    pthread_mutex_init(&j.pmu, NULL);
    pthread_mutex_lock(&db->mu);
    marble__version *v = marble__manifest_current(db->manifest);
    int rc = select_files(db, v, only, &j, err);
    pthread_mutex_unlock(&db->mu);
    marble__version_unref(v);
    if (rc == MARBLE_OK && j.n) {
        marble_group g;
        marble_group_init(&g, db->sched, o->cancel);
        size_t tasks = o->threads > 0 && (size_t)o->threads < j.n ? (size_t)o->threads : j.n;
        for (size_t i = 0; i < tasks && rc == MARBLE_OK; i++)
            rc = marble_group_spawn(&g, rewrite_task, &j);
        if (rc != MARBLE_OK) {
            marble_error_set(err, rc, "index rebuild: cannot start tasks");
            marble_group_cancel(&g);
        }
        int wrc = marble_group_wait(&g, rc == MARBLE_OK ? err : NULL);
        if (rc == MARBLE_OK) rc = wrc;
        if (rc == MARBLE_OK && marble_cancel_token_is_cancelled(o->cancel))
            rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "index rebuild cancelled");
        marble_group_destroy(&g);
    }
    if (rc == MARBLE_OK) {
        int any = 0;
        for (size_t i = 0; i < j.n; i++)
            any |= j.files[i].written;
        if (any) rc = marble_fs_sync_dir(db->fs, db->uri, err);
    }
    /* keep: a failed manifest write may have left the edit on disk; its files then stay (the
     * next open removes them if the manifest does not name them) */
    int installed = 0, keep = 0;
    pthread_mutex_lock(&db->mu);
    if (rc == MARBLE_OK) {
        rc = install(&j, err);
        installed = rc == MARBLE_OK;
        keep = !installed && rc != MARBLE_ERR_INVALID_ARGUMENT && rc != MARBLE_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < j.n; i++)
        busy_remove(db, j.files[i].meta.number);
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
    for (size_t i = 0; i < j.n; i++) {
        rb_file *f = &j.files[i];
        if (f->written && !(installed && f->in_edit) && !keep) remove_file(db, f->number);
        marble__sst_info_free(&f->info);
        marble__table_unref(f->table);
        free(f->meta.smallest);
        free(f->meta.largest);
    }
    free(j.files);
    pthread_mutex_destroy(&j.pmu);
    marble__db_maybe_schedule(db);
    return rc;
}

static int check_options(const marble_index_options *o, marble_error *err)
{
    if (o->bloom_bits_per_key < -1 || o->bloom_bits_per_key > 64)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "bloom_bits_per_key must be -1 (the database's) or 0..64 (got %d)",
                                o->bloom_bits_per_key);
    if (o->threads < 0 || o->threads > 1024)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "index rebuild threads must be 0..1024 (got %d)", o->threads);
    return MARBLE_OK;
}

int marble_db_rebuild_indexes(marble_db *db, const char *table, const marble_index_options *o,
                              marble_error *err)
{
    if (!db) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db is NULL");
    marble_index_options defaults;
    if (!o) {
        marble_index_options_init(&defaults);
        o = &defaults;
    }
    MARBLE_RETURN_NOT_OK(check_options(o, err));
    marble__table *t = NULL;
    if (table) {
        t = marble__db_find_table(db, table);
        if (!t) return marble__db_table_error(table, err);
    }
    marble__res job = {0};
    marble__db_res_add(db, &job, "index rebuild of %s%s%s", table ? "table '" : "every table",
                       table ? table : "", table ? "'" : "");
    int rc = rebuild(db, t, o, -1, err);
    marble__db_res_remove(db, &job);
    marble__table_unref(t);
    return rc;
}

/* ---- secondary indexes ----------------------------------------------------------------------- */

/* The user table `table` (referenced) and the index of `column` in it. */
static int find_column(marble_db *db, const char *table, const char *column, marble__table **out,
                       int *col, marble_error *err)
{
    if (!db) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db is NULL");
    if (!table || !column)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "table or column is NULL");
    marble__table *t = marble__db_find_table(db, table);
    if (!t || t->id == MARBLE__KV_TABLE_ID) {
        marble__table_unref(t);
        return marble__db_table_error(table, err);
    }
    const struct ArrowSchema *s = &t->codec.schema;
    for (int64_t i = 0; i < s->n_children; i++)
        if (strcmp(s->children[i]->name, column) == 0) {
            *out = t;
            *col = (int)i;
            return MARBLE_OK;
        }
    marble__table_unref(t);
    return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "table '%s' has no column '%s'", table,
                            column);
}

/* 1 if t is still in the catalog (mu held). */
static int table_live(const marble_db *db, const marble__table *t)
{
    for (size_t i = 0; i < db->n_tables; i++)
        if (db->tables[i] == t) return 1;
    return 0;
}

int marble_db_create_index(marble_db *db, const char *table, const char *column, marble_error *err)
{
    marble__table *t = NULL;
    int col = -1;
    MARBLE_RETURN_NOT_OK(find_column(db, table, column, &t, &col, err));
    pthread_mutex_lock(&db->mu);
    int rc = MARBLE_OK, at = 0;
    if (!table_live(db, t)) rc = marble__db_table_error(table, err);
    for (int k = 0; rc == MARBLE_OK && k < t->n_indexes; k++) {
        if (t->indexes[k] == col)
            rc = marble_error_set(err, MARBLE_ERR_EXISTS, "table '%s': column '%s' has an index",
                                  table, column);
        if (t->indexes[k] < col) at = k + 1;
    }
    if (rc == MARBLE_OK && t->n_indexes == MARBLE__SST_MAX_INDEXES)
        rc = marble_error_set(err, MARBLE_ERR_LIMIT, "table '%s' has %d indexes already", table,
                              MARBLE__SST_MAX_INDEXES);
    if (rc == MARBLE_OK) {
        memmove(t->indexes + at + 1, t->indexes + at, sizeof(int) * (size_t)(t->n_indexes - at));
        t->indexes[at] = col;
        t->n_indexes++;
        rc = marble__db_catalog_apply_locked(db, err);
        if (rc != MARBLE_OK) {
            t->n_indexes--;
            memmove(t->indexes + at, t->indexes + at + 1,
                    sizeof(int) * (size_t)(t->n_indexes - at));
        }
    }
    pthread_mutex_unlock(&db->mu);
    if (rc == MARBLE_OK) {
        marble_index_options o;
        marble_index_options_init(&o);
        rc = rebuild(db, t, &o, col, err);
    }
    marble__table_unref(t);
    return rc;
}

int marble_db_drop_index(marble_db *db, const char *table, const char *column, marble_error *err)
{
    marble__table *t = NULL;
    int col = -1;
    MARBLE_RETURN_NOT_OK(find_column(db, table, column, &t, &col, err));
    pthread_mutex_lock(&db->mu);
    int at = -1;
    for (int k = 0; k < t->n_indexes; k++)
        if (t->indexes[k] == col) at = k;
    int rc = MARBLE_OK;
    if (!table_live(db, t))
        rc = marble__db_table_error(table, err);
    else if (at < 0)
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "table '%s': column '%s' has no index",
                              table, column);
    if (rc == MARBLE_OK) {
        int saved[MARBLE__SST_MAX_INDEXES];
        memcpy(saved, t->indexes, sizeof saved);
        memmove(t->indexes + at, t->indexes + at + 1,
                sizeof(int) * (size_t)(t->n_indexes - at - 1));
        t->n_indexes--;
        rc = marble__db_catalog_apply_locked(db, err);
        if (rc != MARBLE_OK) {
            memcpy(t->indexes, saved, sizeof saved);
            t->n_indexes++;
        }
    }
    pthread_mutex_unlock(&db->mu);
    marble__table_unref(t);
    return rc;
}
