/*
 * The state store (include/marble/db.h): open and recovery, the table catalog, the write path
 * (WAL then memtable), memtable rotation with back-pressure, background flushes and
 * compactions on the scheduler, obsolete-file removal, snapshots, statistics and close.
 * Reads are in db_read.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "lsm/db_internal.h"
#include "marble/base.h"

#define LOG_MODULE "db"

/* ---- small helpers ----------------------------------------------------------------------------
 */

void marble__prefix_put(uint8_t *p, uint32_t id)
{
    p[0] = (uint8_t)(id >> 24);
    p[1] = (uint8_t)(id >> 16);
    p[2] = (uint8_t)(id >> 8);
    p[3] = (uint8_t)id;
}

uint32_t marble__prefix_get(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int put_varint(marble__bytes *b, uint64_t v, marble_error *err)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    return marble__bytes_append(b, tmp, n, err);
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t c = *(*p)++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return 1;
        }
    }
    return 0;
}

static int put_u32(marble__bytes *b, uint32_t v, marble_error *err)
{
    uint8_t p[4];
    marble__prefix_put(p, v);
    return marble__bytes_append(b, p, 4, err);
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

void marble_free(void *p)
{
    free(p);
}

void marble_db_options_init(marble_db_options *o)
{
    memset(o, 0, sizeof *o);
    o->create_if_missing = 1;
    o->background_threads = 2;
    o->sync = MARBLE_SYNC_GROUP;
    o->write_buffer_size = (size_t)64 << 20;
    o->max_immutable_memtables = 2;
    o->wal_segment_size = (uint64_t)64 << 20;
    o->target_file_size = (uint64_t)64 << 20;
    o->level1_max_bytes = (uint64_t)256 << 20;
    o->level0_compaction_trigger = 4;
    o->level0_slowdown_trigger = 20;
    o->level0_stop_trigger = 36;
    o->batch_rows = 4096;
    o->compression = MARBLE_IPC_UNCOMPRESSED;
    o->bloom_bits_per_key = 10;
    o->verify_checksums = 1;
}

/* Half the machine's physical memory, at least 256 MiB. */
static uint64_t default_memory_budget(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t half = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page / 2 : 0;
    return half > ((uint64_t)256 << 20) ? half : (uint64_t)256 << 20;
}

static int check_options(const marble_db_options *o, marble_error *err)
{
#define BAD(cond, what)                                                                            \
    if (cond) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db options: %s", what)
    BAD(o->sync < MARBLE_SYNC_NONE || o->sync > MARBLE_SYNC_EVERY,
        "sync is not a marble_sync_mode");
    BAD(o->write_buffer_size < 4096, "write_buffer_size must be at least 4096 bytes");
    BAD(o->max_immutable_memtables < 1 || o->max_immutable_memtables > MARBLE__MAX_IMM,
        "max_immutable_memtables must be 1..64");
    BAD(o->background_threads < 1 || o->background_threads > 256,
        "background_threads must be 1..256");
    BAD(o->target_file_size < 4096, "target_file_size must be at least 4096 bytes");
    BAD(o->level1_max_bytes < 4096, "level1_max_bytes must be at least 4096 bytes");
    BAD(o->level0_compaction_trigger < 1, "level0_compaction_trigger must be at least 1");
    BAD(o->level0_slowdown_trigger < o->level0_compaction_trigger,
        "level0_slowdown_trigger must be >= level0_compaction_trigger");
    BAD(o->level0_stop_trigger < o->level0_slowdown_trigger,
        "level0_stop_trigger must be >= level0_slowdown_trigger");
    BAD(o->batch_rows < 1 || o->batch_rows > (1 << 24), "batch_rows must be 1..16777216");
    BAD(o->max_background_compactions < 0 || o->max_background_compactions > 256,
        "max_background_compactions must be 0..256");
    BAD(o->compression < MARBLE_IPC_UNCOMPRESSED || o->compression > MARBLE_IPC_ZSTD,
        "compression is not a marble_ipc_compression");
    BAD(o->bloom_bits_per_key < 0 || o->bloom_bits_per_key > 64,
        "bloom_bits_per_key must be 0..64");
#undef BAD
    return MARBLE_OK;
}

/* ---- tables -----------------------------------------------------------------------------------
 */

void marble__table_ref(marble__table *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void marble__table_unref(marble__table *t)
{
    if (!t) return;
    /* acq_rel: the last owner must see every other owner's use before freeing */
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1) return;
    marble__row_codec_free(&t->codec);
    free(t->name);
    free(t);
}

static int table_new(uint32_t id, const char *name, const struct ArrowSchema *schema,
                     const int *key_cols, int nkeys, marble__table **out, marble_error *err)
{
    marble__table *t = calloc(1, sizeof *t);
    if (!t) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    atomic_init(&t->refs, 1);
    t->id = id;
    t->name = xstrdup(name);
    if (!t->name) {
        free(t);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    int rc = marble__row_codec_init(&t->codec, schema, key_cols, nkeys, err);
    if (rc != MARBLE_OK) {
        free(t->name);
        free(t);
        return rc;
    }
    memcpy(t->key_cols, key_cols, sizeof(int) * (size_t)nkeys);
    t->nkeys = nkeys;
    *out = t;
    return MARBLE_OK;
}

static int kv_table_new(marble__table **out, marble_error *err)
{
    struct ArrowSchema s;
    MARBLE_RETURN_NOT_OK(marble_arrow_schema_parse("key:binary!,value:binary", &s, err));
    int key = 0;
    int rc = table_new(MARBLE__KV_TABLE_ID, MARBLE__KV_TABLE_NAME, &s, &key, 1, out, err);
    marble_arrow_schema_release(&s);
    return rc;
}

marble__table *marble__db_find_table(marble_db *db, const char *name)
{
    marble__table *found = NULL;
    pthread_mutex_lock(&db->mu);
    for (size_t i = 0; i < db->n_tables; i++)
        if (strcmp(db->tables[i]->name, name) == 0) {
            found = db->tables[i];
            marble__table_ref(found);
            break;
        }
    pthread_mutex_unlock(&db->mu);
    return found;
}

marble__table *marble__db_find_table_id(marble_db *db, uint32_t id)
{
    marble__table *found = NULL;
    pthread_mutex_lock(&db->mu);
    for (size_t i = 0; i < db->n_tables; i++)
        if (db->tables[i]->id == id) {
            found = db->tables[i];
            marble__table_ref(found);
            break;
        }
    pthread_mutex_unlock(&db->mu);
    return found;
}

int marble__db_table_error(const char *name, marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_NOT_FOUND, "table '%s' does not exist", name);
}

static int tables_add(marble_db *db, marble__table *t, marble_error *err)
{
    if (db->n_tables == db->cap_tables) {
        size_t cap = db->cap_tables ? db->cap_tables * 2 : 8;
        marble__table **p = realloc(db->tables, cap * sizeof *p);
        if (!p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        db->tables = p;
        db->cap_tables = cap;
    }
    db->tables[db->n_tables++] = t;
    return MARBLE_OK;
}

/* Catalog records: "T" id nkeys key... namelen name schema-as-IPC-stream, and "N" next id. */
static int catalog_table_record(const marble__table *t, marble__bytes *out, marble_error *err)
{
    marble_ipc_buffer buf = {0};
    marble_ipc_writer *w = NULL;
    marble_ipc_write_options wo = {MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 0, 0};
    int rc = marble_ipc_writer_create(marble_ipc_buffer_sink(&buf), &t->codec.schema, &wo, &w, err);
    if (rc == MARBLE_OK) rc = marble_ipc_writer_finish(w, err);
    marble_ipc_writer_destroy(w);
    size_t nlen = strlen(t->name);
    if (rc == MARBLE_OK) rc = marble__bytes_append(out, "T", 1, err);
    if (rc == MARBLE_OK) rc = put_u32(out, t->id, err);
    if (rc == MARBLE_OK) rc = put_u32(out, (uint32_t)t->nkeys, err);
    for (int i = 0; rc == MARBLE_OK && i < t->nkeys; i++)
        rc = put_u32(out, (uint32_t)t->key_cols[i], err);
    if (rc == MARBLE_OK) rc = put_u32(out, (uint32_t)nlen, err);
    if (rc == MARBLE_OK) rc = marble__bytes_append(out, t->name, nlen, err);
    if (rc == MARBLE_OK) rc = marble__bytes_append(out, buf.data, buf.size, err);
    free(buf.data);
    return rc;
}

static int catalog_corrupt(marble_db *db, const char *what, marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                            "%s/MANIFEST: corruption: table catalog record: %s", db->uri, what);
}

static int catalog_load_record(marble_db *db, const uint8_t *p, size_t len, marble_error *err)
{
    const uint8_t *end = p + len;
    if (len == 5 && p[0] == 'N') {
        db->next_table_id = marble__prefix_get(p + 1);
        return MARBLE_OK;
    }
    if (len >= 9 && p[0] == 'I') {
        uint32_t id = marble__prefix_get(p + 1), n = marble__prefix_get(p + 5);
        marble__table *t = NULL;
        for (size_t i = 0; i < db->n_tables; i++)
            if (db->tables[i]->id == id) t = db->tables[i];
        if (!t || n < 1 || n > MARBLE__SST_MAX_INDEXES || len != 9 + 4 * (size_t)n)
            return catalog_corrupt(db, "bad index record", err);
        for (uint32_t k = 0; k < n; k++) {
            uint32_t col = marble__prefix_get(p + 9 + 4 * k);
            if (col >= (uint32_t)t->codec.ncols || (k && col <= (uint32_t)t->indexes[k - 1]))
                return catalog_corrupt(db, "bad indexed column", err);
            t->indexes[k] = (int)col;
        }
        t->n_indexes = (int)n;
        return MARBLE_OK;
    }
    if (len < 13 || p[0] != 'T') return catalog_corrupt(db, "unknown record", err);
    uint32_t id = marble__prefix_get(p + 1), nkeys = marble__prefix_get(p + 5);
    p += 9;
    if (nkeys < 1 || nkeys > MARBLE__KEY_MAX_COLS || (size_t)(end - p) < 4 * (size_t)nkeys + 4)
        return catalog_corrupt(db, "bad key column count", err);
    int keys[MARBLE__KEY_MAX_COLS];
    for (uint32_t i = 0; i < nkeys; i++, p += 4)
        keys[i] = (int)marble__prefix_get(p);
    uint32_t nlen = marble__prefix_get(p);
    p += 4;
    if (nlen == 0 || nlen > 1024 || (size_t)(end - p) < nlen)
        return catalog_corrupt(db, "bad table name", err);
    char name[1025];
    memcpy(name, p, nlen);
    name[nlen] = 0;
    p += nlen;
    marble_ipc_source src = {p, (size_t)(end - p), NULL, NULL, NULL};
    marble_ipc_reader *r = NULL;
    struct ArrowSchema schema = {0};
    marble_error e2 = {0};
    int rc = marble_ipc_reader_open(&src, &r, &e2);
    if (rc == MARBLE_OK) rc = marble_ipc_reader_schema(r, &schema, &e2);
    marble_ipc_reader_destroy(r);
    if (rc != MARBLE_OK) return catalog_corrupt(db, e2.message, err);
    marble__table *t = NULL;
    rc = table_new(id, name, &schema, keys, (int)nkeys, &t, &e2);
    marble_arrow_schema_release(&schema);
    if (rc != MARBLE_OK) return catalog_corrupt(db, e2.message, err);
    rc = tables_add(db, t, err);
    if (rc != MARBLE_OK) marble__table_unref(t);
    return rc;
}

/* An edit replacing the whole catalog with the current tables (db->mu held). */
static int catalog_edit(marble_db *db, marble__version_edit *e, marble_error *err)
{
    e->catalog_reset = 1;
    marble__bytes b = {0};
    int rc = MARBLE_OK;
    for (size_t i = 0; rc == MARBLE_OK && i < db->n_tables; i++) {
        if (db->tables[i]->id == MARBLE__KV_TABLE_ID) continue;
        b.len = 0;
        rc = catalog_table_record(db->tables[i], &b, err);
        if (rc == MARBLE_OK)
            rc = marble__edit_add_catalog(e, b.data, b.len) == MARBLE_OK
                     ? MARBLE_OK
                     : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        const marble__table *t = db->tables[i];
        b.len = 0;
        if (rc == MARBLE_OK && t->n_indexes) { /* "I" id n col...: secondary indexes */
            rc = marble__bytes_append(&b, "I", 1, err);
            if (rc == MARBLE_OK) rc = put_u32(&b, t->id, err);
            if (rc == MARBLE_OK) rc = put_u32(&b, (uint32_t)t->n_indexes, err);
            for (int k = 0; rc == MARBLE_OK && k < t->n_indexes; k++)
                rc = put_u32(&b, (uint32_t)t->indexes[k], err);
            if (rc == MARBLE_OK && marble__edit_add_catalog(e, b.data, b.len) != MARBLE_OK)
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        }
    }
    uint8_t n[5] = {'N'};
    marble__prefix_put(n + 1, db->next_table_id);
    if (rc == MARBLE_OK)
        rc = marble__edit_add_catalog(e, n, 5) == MARBLE_OK
                 ? MARBLE_OK
                 : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    marble__bytes_free(&b);
    return rc;
}

/* ---- table cache ------------------------------------------------------------------------------
 */

typedef struct marble__tc_entry {
    uint64_t number; /* 0: empty */
    marble__sst *sst;
} marble__tc_entry;

static char *file_uri(const marble_db *db, uint64_t number)
{
    size_t n = strlen(db->uri) + 32;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%06" PRIu64 ".arrow", db->uri, number);
    return p;
}

static size_t tc_slot(const marble_db *db, uint64_t number)
{
    size_t i = (size_t)(number * 0x9E3779B97F4A7C15ull) & (db->tc_cap - 1);
    while (db->tc[i].number && db->tc[i].number != number)
        i = (i + 1) & (db->tc_cap - 1);
    return i;
}

static int tc_grow(marble_db *db, marble_error *err)
{
    size_t cap = db->tc_cap ? db->tc_cap * 2 : 64;
    marble__tc_entry *old = db->tc;
    size_t old_cap = db->tc_cap;
    db->tc = calloc(cap, sizeof *db->tc);
    if (!db->tc) {
        db->tc = old;
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    db->tc_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].number) db->tc[tc_slot(db, old[i].number)] = old[i];
    free(old);
    return MARBLE_OK;
}

/* The local disk cache of SSTables (opts.sst_cache_uri): a copy of each SSTable the database
 * reads, made on first open (written to a temporary name, then renamed, so a crash leaves no
 * partial copy under the real name) and removed with the SSTable. */
static char *cache_file_uri(const marble_db *db, uint64_t number)
{
    size_t n = strlen(db->cache_uri) + 32;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%06" PRIu64 ".arrow", db->cache_uri, number);
    return p;
}

static int fill_local_cache(marble_db *db, const char *remote, const char *local, marble_error *err)
{
    int exists = 0;
    int rc = marble_fs_exists(db->fs, local, &exists, err);
    if (rc != MARBLE_OK || exists) return rc;
    void *data = NULL;
    size_t size = 0;
    rc = marble_fs_read_all(db->fs, remote, &data, &size, err);
    if (rc != MARBLE_OK) return rc;
    size_t n = strlen(local) + 16;
    char *tmp = malloc(n);
    if (!tmp) {
        free(data);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    snprintf(tmp, n, "%s.tmp", local);
    rc = marble_fs_write_all(db->fs, tmp, data, size, 0, err);
    if (rc == MARBLE_OK) rc = marble_fs_rename(db->fs, tmp, local, 0, err);
    if (rc != MARBLE_OK) marble_fs_remove(db->fs, tmp, NULL);
    free(tmp);
    free(data);
    return rc;
}

int marble__db_open_sst(marble_db *db, uint64_t number, const marble__table *t, marble__sst **out,
                        marble_error *err)
{
    pthread_mutex_lock(&db->tc_mu);
    if (db->tc_cap) {
        size_t i = tc_slot(db, number);
        if (db->tc[i].number == number) {
            marble__sst_ref(db->tc[i].sst);
            *out = db->tc[i].sst;
            pthread_mutex_unlock(&db->tc_mu);
            return MARBLE_OK;
        }
    }
    pthread_mutex_unlock(&db->tc_mu);
    char *uri = file_uri(db, number);
    if (!uri) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    char *cached = db->cache_uri ? cache_file_uri(db, number) : NULL;
    int rc = db->cache_uri && !cached ? marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory")
                                      : MARBLE_OK;
    if (rc == MARBLE_OK && cached) rc = fill_local_cache(db, uri, cached, err);
    marble__sst *s = NULL;
    if (rc == MARBLE_OK)
        rc = marble__sst_open(db->fs, db->pool, cached ? cached : uri, &t->codec,
                              db->opts.verify_checksums, &s, err);
    free(uri);
    free(cached);
    if (rc != MARBLE_OK) return rc;
    marble__sst_set_budget(s, db->budget);
    pthread_mutex_lock(&db->tc_mu);
    if ((db->tc_n + 1) * 2 > db->tc_cap && tc_grow(db, NULL) != MARBLE_OK) {
        pthread_mutex_unlock(&db->tc_mu);
        *out = s; /* uncached */
        return MARBLE_OK;
    }
    size_t i = tc_slot(db, number);
    if (db->tc[i].number == number) { /* raced with another opener */
        marble__sst_unref(s);
        s = db->tc[i].sst;
    } else {
        db->tc[i].number = number;
        db->tc[i].sst = s;
        db->tc_n++;
    }
    marble__sst_ref(s);
    pthread_mutex_unlock(&db->tc_mu);
    *out = s;
    return MARBLE_OK;
}

static void tc_evict(marble_db *db, uint64_t number)
{
    marble__sst *s = NULL;
    pthread_mutex_lock(&db->tc_mu);
    if (db->tc_cap) {
        size_t i = tc_slot(db, number);
        if (db->tc[i].number == number) {
            s = db->tc[i].sst;
            /* backward-shift deletion keeps probe chains intact */
            size_t j = i;
            for (;;) {
                db->tc[i].number = 0;
                db->tc[i].sst = NULL;
                for (;;) {
                    j = (j + 1) & (db->tc_cap - 1);
                    if (!db->tc[j].number) goto done;
                    size_t k =
                        (size_t)(db->tc[j].number * 0x9E3779B97F4A7C15ull) & (db->tc_cap - 1);
                    if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
                    break;
                }
                db->tc[i] = db->tc[j];
                i = j;
            }
        done:
            db->tc_n--;
        }
    }
    pthread_mutex_unlock(&db->tc_mu);
    marble__sst_unref(s);
}

static void tc_clear(marble_db *db)
{
    for (size_t i = 0; i < db->tc_cap; i++)
        if (db->tc[i].number) marble__sst_unref(db->tc[i].sst);
    free(db->tc);
    db->tc = NULL;
    db->tc_cap = db->tc_n = 0;
}

/* ---- memtables --------------------------------------------------------------------------------
 */

void marble__memref_unref(marble__memref *m)
{
    if (!m) return;
    /* acq_rel: the last reader's lookups happen before the memtable is freed */
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
    marble__memtable_destroy(m->mt);
    marble_mem_budget_release(m->budget, m->charged);
    free(m);
}

/* A new memtable, charged to the database's budget as write_buffer_size bytes (what it may grow
 * to before it is rotated). */
static int memref_new(marble_db *db, marble__memref **out, marble_error *err)
{
    marble__memref *m = calloc(1, sizeof *m);
    if (!m) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    int rc = marble__memtable_create(&m->mt, err);
    if (rc != MARBLE_OK) {
        free(m);
        return rc;
    }
    m->budget = db->budget;
    m->charged = db->opts.write_buffer_size;
    marble_mem_budget_charge(m->budget, m->charged);
    atomic_init(&m->refs, 1);
    *out = m;
    return MARBLE_OK;
}

void marble__db_readview_acquire(marble_db *db, const marble_snapshot *snap, marble__readview *rv)
{
    pthread_mutex_lock(&db->mu);
    rv->n_mems = 0;
    rv->mems[rv->n_mems++] = db->mem;
    for (size_t i = db->n_imm; i-- > 0;)
        rv->mems[rv->n_mems++] = db->imm[i];
    for (size_t i = 0; i < rv->n_mems; i++)
        atomic_fetch_add_explicit(&rv->mems[i]->refs, 1, memory_order_relaxed);
    rv->version = db->current;
    marble__version_ref(rv->version);
    /* acquire: pairs with the writer's release store; entries up to seq are in the memtables */
    rv->seq = snap ? snap->seq : atomic_load_explicit(&db->last_seq, memory_order_acquire);
    pthread_mutex_unlock(&db->mu);
}

void marble__db_readview_release(marble__readview *rv)
{
    for (size_t i = 0; i < rv->n_mems; i++)
        marble__memref_unref(rv->mems[i]);
    rv->n_mems = 0;
    if (rv->version) marble__version_unref(rv->version);
    rv->version = NULL;
}

/* ---- background work --------------------------------------------------------------------------
 */

static void maybe_schedule(marble_db *db);

static void set_bg_error(marble_db *db, int rc, const marble_error *e)
{
    if (!db->bg_error) {
        db->bg_error = rc;
        db->bg_err = *e;
        marble_log(MARBLE_LOG_ERROR, LOG_MODULE, "%s: background work failed: %s", db->uri,
                   e->message);
    }
}

static void remove_obsolete_cb_add(uint64_t **arr, size_t *n, size_t *cap, uint64_t v)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        uint64_t *p = realloc(*arr, c * sizeof *p);
        if (!p) return; /* the file stays until the next open's garbage sweep */
        *arr = p;
        *cap = c;
    }
    (*arr)[(*n)++] = v;
}

typedef struct numlist {
    uint64_t *v;
    size_t n, cap;
} numlist;

static int collect_number(uint64_t number, void *ud)
{
    numlist *l = ud;
    remove_obsolete_cb_add(&l->v, &l->n, &l->cap, number);
    return 0;
}

static void remove_obsolete(marble_db *db)
{
    numlist l = {0};
    marble__manifest_obsolete_files(db->manifest, collect_number, &l);
    for (size_t i = 0; i < l.n; i++) {
        tc_evict(db, l.v[i]);
        char *uri = file_uri(db, l.v[i]);
        if (!uri) continue;
        marble_handle_pool_evict(db->pool, uri);
        marble_error e = {0};
        if (marble_fs_remove(db->fs, uri, &e) != MARBLE_OK && e.code != MARBLE_ERR_NOT_FOUND)
            marble_log(MARBLE_LOG_WARN, LOG_MODULE, "removing %s: %s", uri, e.message);
        free(uri);
        char *cached = db->cache_uri ? cache_file_uri(db, l.v[i]) : NULL;
        if (cached) {
            marble_handle_pool_evict(db->pool, cached);
            marble_fs_remove(db->fs, cached, NULL);
        }
        free(cached);
    }
    free(l.v);
}

static uint64_t new_file_number(void *ud)
{
    marble_db *db = ud;
    return atomic_fetch_add_explicit(&db->next_file, 1, memory_order_relaxed);
}

/* Applies an edit and installs the new version for readers. mu_held: the caller holds mu.
 * drop_imm: the edit is the flush of imm[0], which leaves the memtable list in the same critical
 * section, so no reader ever sees both the memtable and its SSTables. */
static int apply_edit(marble_db *db, marble__version_edit *e, int mu_held, int drop_imm,
                      marble_error *err)
{
    marble__edit_set_next_file_number(e,
                                      atomic_load_explicit(&db->next_file, memory_order_relaxed));
    /* a flush holds mu across the apply too: otherwise another edit's install could publish a
     * version holding the flush's SSTables while its memtable is still in the list */
    int locked = 0;
    if (drop_imm && !mu_held) {
        pthread_mutex_lock(&db->mu);
        locked = 1;
    }
    int rc = marble__manifest_apply(db->manifest, e, err);
    if (rc != MARBLE_OK) {
        if (locked) pthread_mutex_unlock(&db->mu);
        return rc;
    }
    if (!mu_held && !locked) pthread_mutex_lock(&db->mu);
    marble__version *old = db->current;
    db->current = marble__manifest_current(db->manifest);
    if (drop_imm) {
        memmove(db->imm, db->imm + 1, (db->n_imm - 1) * sizeof *db->imm);
        db->n_imm--;
    }
    if (!mu_held) pthread_mutex_unlock(&db->mu);
    marble__version_unref(old);
    remove_obsolete(db);
    return MARBLE_OK;
}

static int sst_options(const marble_db *db, marble__sst_options *o)
{
    memset(o, 0, sizeof *o);
    o->batch_rows = db->opts.batch_rows;
    o->compression = db->opts.compression;
    o->bloom_bits_per_key = db->opts.bloom_bits_per_key;
    return MARBLE_OK;
}

static int closing_now(void *ud)
{
    marble_db *db = ud;
    return atomic_load_explicit(&db->closing, memory_order_relaxed) != 0;
}

/* Paces a flush by the rate limit; closing ends the wait (the flush goes on unpaced). */
static void flush_throttle(marble_db *db, marble__sst_writer *w, uint64_t *charged)
{
    uint64_t out = marble__sst_writer_estimated_size(w);
    if (out <= *charged) return;
    marble__rate_limiter_request(&db->rate, out - *charged, closing_now, db);
    *charged = out;
}

/* Writes one SSTable per table from the memtable's entries. */
static int flush_memtable(marble_db *db, marble__memref *m, marble_error *err)
{
    marble__version_edit edit;
    marble__edit_init(&edit);
    marble__memtable_iter it;
    marble__memtable_iter_init(&it, m->mt);
    marble__memtable_iter_seek_to_first(&it);
    marble__sst_options so;
    sst_options(db, &so);
    int rc = MARBLE_OK;
    uint64_t *outputs = NULL;
    size_t n_out = 0, cap_out = 0;
    uint64_t written = 0;
    while (rc == MARBLE_OK && marble__memtable_iter_valid(&it)) {
        size_t klen;
        const uint8_t *k = marble__memtable_iter_key(&it, &klen);
        if (klen < MARBLE__PREFIX_LEN) {
            rc = marble_error_set(err, MARBLE_ERR_INTERNAL, "memtable key without table prefix");
            break;
        }
        uint32_t id = marble__prefix_get(k);
        marble__table *t = marble__db_find_table_id(db, id);
        if (!t) { /* dropped: skip its entries */
            while (marble__memtable_iter_valid(&it)) {
                k = marble__memtable_iter_key(&it, &klen);
                if (marble__prefix_get(k) != id) break;
                marble__memtable_iter_next(&it);
            }
            continue;
        }
        marble__db_index_options(db, t, &so);
        uint64_t number = new_file_number(db);
        remove_obsolete_cb_add(&outputs, &n_out, &cap_out, number);
        char *uri = file_uri(db, number);
        marble__sst_writer *w = NULL;
        if (!uri) rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        if (rc == MARBLE_OK) rc = marble__sst_writer_create(db->fs, uri, &t->codec, &so, &w, err);
        uint64_t charged = 0;
        while (rc == MARBLE_OK && marble__memtable_iter_valid(&it)) {
            k = marble__memtable_iter_key(&it, &klen);
            if (marble__prefix_get(k) != id) break;
            size_t vlen;
            const void *v = marble__memtable_iter_value(&it, &vlen);
            rc = marble__sst_writer_add(w, k + MARBLE__PREFIX_LEN, klen - MARBLE__PREFIX_LEN,
                                        marble__memtable_iter_seq(&it),
                                        marble__memtable_iter_op(&it) == MARBLE__MEMTABLE_PUT, v,
                                        vlen, err);
            marble__memtable_iter_next(&it);
            if (db->rate.rate && rc == MARBLE_OK && marble__sst_writer_rows(w) % 4096 == 0)
                flush_throttle(db, w, &charged);
        }
        marble__sst_info info = {0};
        if (rc == MARBLE_OK) rc = marble__sst_writer_finish(w, &info, err);
        marble__sst_writer_destroy(w);
        if (rc == MARBLE_OK) {
            marble__file_meta f = {0};
            uint8_t *lo = malloc(info.smallest.len + 4), *hi = malloc(info.largest.len + 4);
            if (!lo || !hi) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
            } else {
                marble__prefix_put(lo, id);
                memcpy(lo + 4, info.smallest.data, info.smallest.len);
                marble__prefix_put(hi, id);
                memcpy(hi + 4, info.largest.data, info.largest.len);
                f.level = 0;
                f.number = number;
                f.size = info.file_size;
                f.smallest = lo;
                f.smallest_len = info.smallest.len + 4;
                f.largest = hi;
                f.largest_len = info.largest.len + 4;
                f.smallest_seq = info.smallest_seq;
                f.largest_seq = info.largest_seq;
                f.rows = info.rows;
                rc = marble__edit_add_file(&edit, &f) == MARBLE_OK
                         ? MARBLE_OK
                         : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
                written += info.file_size;
            }
            free(lo);
            free(hi);
        }
        marble__sst_info_free(&info);
        free(uri);
        marble__table_unref(t);
    }
    if (rc == MARBLE_OK && n_out) rc = marble_fs_sync_dir(db->fs, db->uri, err);
    int applying = rc == MARBLE_OK;
    if (rc == MARBLE_OK) {
        marble__edit_set_log_number(&edit, m->wal_segment + 1);
        marble__edit_set_last_seq(&edit, m->max_seq);
        rc = apply_edit(db, &edit, 0, 1, err);
    }
    /* a failed manifest write may have left the edit on disk: its files stay then (the next
     * open removes them if the manifest does not name them) */
    if (rc != MARBLE_OK && !applying) {
        for (size_t i = 0; i < n_out; i++) {
            char *uri = file_uri(db, outputs[i]);
            if (uri) marble_fs_remove(db->fs, uri, NULL);
            free(uri);
        }
    } else {
        atomic_fetch_add_explicit(&db->st_flushes, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&db->st_bytes_flushed, written, memory_order_relaxed);
    }
    free(outputs);
    marble__edit_free(&edit);
    return rc;
}

static marble_task_status flush_task(marble_task_ctx *ctx, void *arg)
{
    (void)ctx;
    marble_db *db = arg;
    for (;;) {
        pthread_mutex_lock(&db->mu);
        if (db->n_imm == 0 || db->bg_error) {
            db->flush_running = 0;
            pthread_cond_broadcast(&db->cv);
            pthread_mutex_unlock(&db->mu);
            break;
        }
        marble__memref *m = db->imm[0];
        pthread_mutex_unlock(&db->mu);

        marble_error e = {0};
        int rc = flush_memtable(db, m, &e);
        if (rc == MARBLE_OK) {
            marble_error we = {0};
            if (marble__wal_remove_upto(db->wal, m->wal_segment, &we) != MARBLE_OK)
                marble_log(MARBLE_LOG_WARN, LOG_MODULE, "%s: removing WAL segments: %s", db->uri,
                           we.message);
        }
        pthread_mutex_lock(&db->mu);
        if (rc != MARBLE_OK) set_bg_error(db, rc, &e); /* on success apply_edit dropped it */
        pthread_cond_broadcast(&db->cv);
        pthread_mutex_unlock(&db->mu);
        if (rc == MARBLE_OK) marble__memref_unref(m);
        maybe_schedule(db);
    }
    return MARBLE_TASK_DONE;
}

static int is_busy(void *ud, uint64_t number)
{
    marble_db *db = ud;
    for (size_t i = 0; i < db->n_busy; i++)
        if (db->busy_files[i] == number) return 1;
    return 0;
}

static int mark_busy(marble_db *db, const marble__compaction *c, int on)
{
    for (int w = 0; w < 2; w++)
        for (size_t i = 0; i < c->n_inputs[w]; i++) {
            uint64_t num = c->inputs[w][i].number;
            if (on) {
                if (db->n_busy == db->cap_busy) {
                    size_t cap = db->cap_busy ? db->cap_busy * 2 : 32;
                    uint64_t *p = realloc(db->busy_files, cap * sizeof *p);
                    if (!p) return MARBLE_ERR_NO_MEMORY;
                    db->busy_files = p;
                    db->cap_busy = cap;
                }
                db->busy_files[db->n_busy++] = num;
            } else {
                for (size_t j = 0; j < db->n_busy; j++)
                    if (db->busy_files[j] == num) {
                        db->busy_files[j] = db->busy_files[--db->n_busy];
                        break;
                    }
            }
        }
    return MARBLE_OK;
}

static uint64_t smallest_snapshot(marble_db *db)
{
    uint64_t s = atomic_load_explicit(&db->last_seq, memory_order_acquire);
    for (marble_snapshot *p = db->snapshots.next; p != &db->snapshots; p = p->next)
        if (p->seq < s) s = p->seq;
    return s;
}

/* A manual compaction's cancellation and progress (NULL for background compactions). */
typedef struct manual_ctx {
    marble_cancel_token *cancel;
    void (*progress)(void *ud, uint64_t done, uint64_t total);
    void *progress_ud;
    pthread_mutex_t mu; /* serializes the progress calls of the pieces */
    uint64_t done, total; /* under mu */
} manual_ctx;

typedef struct compact_env_ud {
    marble_db *db;
    const marble__table *table;
    manual_ctx *manual;
} compact_env_ud;

static int env_open_sst(void *ud, const marble__file_meta *f, marble__sst **out, marble_error *err)
{
    compact_env_ud *c = ud;
    return marble__db_open_sst(c->db, f->number, c->table, out, err);
}

static uint64_t env_new_file(void *ud)
{
    compact_env_ud *c = ud;
    return new_file_number(c->db);
}

static int env_cancelled(void *ud)
{
    compact_env_ud *c = ud;
    if (atomic_load_explicit(&c->db->closing, memory_order_relaxed)) return 1;
    return c->manual && marble_cancel_token_is_cancelled(c->manual->cancel);
}

static void env_progress(void *ud, uint64_t bytes)
{
    manual_ctx *m = ((compact_env_ud *)ud)->manual;
    pthread_mutex_lock(&m->mu);
    m->done = m->done + bytes > m->total ? m->total : m->done + bytes;
    m->progress(m->progress_ud, m->done, m->total);
    pthread_mutex_unlock(&m->mu);
}

static int env_throttle(void *ud, uint64_t bytes, marble_error *err)
{
    compact_env_ud *c = ud;
    int rc = marble__rate_limiter_request(&c->db->rate, bytes, env_cancelled, c);
    if (rc != MARBLE_OK)
        return marble_error_set(err, rc, "compaction in %s: cancelled while rate limited",
                                c->db->uri);
    return MARBLE_OK;
}

/* Runs one picked compaction (busy marks set by the caller) in up to `pieces` subcompactions
 * and applies its edit. */
static int run_compaction(marble_db *db, marble__compaction *c, int pieces, manual_ctx *manual,
                          marble_error *err)
{
    marble__table *t = marble__db_find_table_id(db, c->table_id);
    marble__version_edit edit;
    marble__edit_init(&edit);
    int rc;
    if (!t) { /* the table was dropped (a flush may have added files after the drop): delete */
        rc = MARBLE_OK;
        for (int w = 0; rc == MARBLE_OK && w < 2; w++)
            for (size_t i = 0; rc == MARBLE_OK && i < c->n_inputs[w]; i++)
                if (marble__edit_delete_file(&edit, c->inputs[w][i].level,
                                             c->inputs[w][i].number) != MARBLE_OK)
                    rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        if (rc == MARBLE_OK) rc = apply_edit(db, &edit, 0, 0, err);
        goto done;
    }
    pthread_mutex_lock(&db->mu);
    uint64_t snap = smallest_snapshot(db);
    pthread_mutex_unlock(&db->mu);
    marble__version *v = marble__manifest_current(db->manifest);
    compact_env_ud cud = {db, t, manual};
    marble__compaction_env env;
    memset(&env, 0, sizeof env);
    env.fs = db->fs;
    env.dir_uri = db->uri;
    env.codec = &t->codec;
    sst_options(db, &env.sst_opts);
    marble__db_index_options(db, t, &env.sst_opts);
    env.target_file_size = db->opts.target_file_size;
    env.smallest_snapshot = snap;
    env.version = v;
    env.open_sst = env_open_sst;
    env.new_file_number = env_new_file;
    env.cancelled = env_cancelled;
    env.ud = &cud;
    env.subcompactions = pieces;
    env.group = &db->bg;
    env.progress = manual && manual->progress ? env_progress : NULL;
    env.throttle = db->rate.rate ? env_throttle : NULL;
    if (manual) {
        pthread_mutex_lock(&manual->mu);
        for (int w = 0; w < 2; w++)
            for (size_t i = 0; i < c->n_inputs[w]; i++)
                manual->total += c->inputs[w][i].size;
        pthread_mutex_unlock(&manual->mu);
    }
    marble__compaction_result res = {0};
    rc = marble__compaction_run(c, &env, &edit, &res, err);
    marble__version_unref(v);
    int applying = rc == MARBLE_OK;
    if (rc == MARBLE_OK) rc = apply_edit(db, &edit, 0, 0, err);
    if (rc == MARBLE_OK) {
        atomic_fetch_add_explicit(&db->st_compactions, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&db->st_bytes_compacted_read, res.bytes_read,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&db->st_bytes_compacted_written, res.bytes_written,
                                  memory_order_relaxed);
    } else if (!applying) {
        /* remove outputs the edit named (after a failed manifest write they stay, as above) */
        for (size_t i = 0; i < edit.n_added; i++) {
            char *uri = file_uri(db, edit.added[i].number);
            if (uri) marble_fs_remove(db->fs, uri, NULL);
            free(uri);
        }
    }
done:
    marble__edit_free(&edit);
    marble__table_unref(t);
    return rc;
}

static marble_task_status compaction_task(marble_task_ctx *ctx, void *arg)
{
    (void)ctx;
    marble_db *db = arg;
    marble__compaction *c = NULL;
    pthread_mutex_lock(&db->mu);
    marble__compaction_options co = {db->opts.level0_compaction_trigger, db->opts.level1_max_bytes,
                                     db->opts.target_file_size};
    marble__version *v = marble__manifest_current(db->manifest);
    marble_error e = {0};
    int rc = MARBLE_OK;
    if (!db->manual_compaction && !db->closing && !db->bg_error)
        rc = marble__compaction_pick(v, &co, is_busy, db, &c, &e);
    marble__version_unref(v);
    if (rc == MARBLE_OK && c && mark_busy(db, c, 1) != MARBLE_OK) {
        mark_busy(db, c, 0);
        marble__compaction_free(c);
        c = NULL;
    }
    if (c && ++db->compactions_active > db->max_compactions_seen)
        db->max_compactions_seen = db->compactions_active;
    /* subcompactions on the threads no flush or other compaction uses */
    int pieces = marble_sched_threads(db->sched) - db->compactions_active - db->flush_running;
    pthread_mutex_unlock(&db->mu);
    if (rc == MARBLE_OK && c && db->opts.max_background_compactions > 1)
        maybe_schedule(db); /* another compaction may run beside this one */
    if (rc == MARBLE_OK && c) rc = run_compaction(db, c, pieces < 1 ? 1 : pieces, NULL, &e);
    pthread_mutex_lock(&db->mu);
    if (c) {
        mark_busy(db, c, 0);
        db->compactions_active--;
    }
    if (rc != MARBLE_OK && rc != MARBLE_ERR_CANCELLED) set_bg_error(db, rc, &e);
    db->compactions_running--;
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
    marble__compaction_free(c);
    if (c) maybe_schedule(db);
    return MARBLE_TASK_DONE;
}

static int needs_compaction(marble_db *db)
{
    marble__version *v = marble__manifest_current(db->manifest);
    marble__compaction_options co = {db->opts.level0_compaction_trigger, db->opts.level1_max_bytes,
                                     db->opts.target_file_size};
    marble__compaction *c = NULL;
    int rc = marble__compaction_pick(v, &co, is_busy, db, &c, NULL);
    marble__version_unref(v);
    int need = rc == MARBLE_OK && c != NULL;
    marble__compaction_free(c);
    return need;
}

/* Starts a flush if memtables wait and none runs, and a compaction if one is due. */
static void maybe_schedule(marble_db *db)
{
    pthread_mutex_lock(&db->mu);
    if (!db->closing && !db->bg_error) {
        if (db->n_imm > 0 && !db->flush_running) {
            db->flush_running = 1;
            if (marble_group_spawn(&db->bg, flush_task, db) != MARBLE_OK) db->flush_running = 0;
        }
        /* compactions of disjoint files run at once (the picker skips busy files), up to
         * max_background_compactions; one more is started each time one is due */
        if (!db->opts.disable_auto_compaction && !db->manual_compaction &&
            db->compactions_running < db->opts.max_background_compactions && needs_compaction(db)) {
            db->compactions_running++;
            if (marble_group_spawn(&db->bg, compaction_task, db) != MARBLE_OK)
                db->compactions_running--;
        }
    }
    pthread_mutex_unlock(&db->mu);
}

/* ---- write path -------------------------------------------------------------------------------
 */

/* L0 files of the installed version; mu held (no manifest lock or reference on the write path). */
static size_t l0_files(marble_db *db)
{
    return marble__version_num_files(db->current, 0);
}

/* Called with wmu held and mu not held. Rotates a full memtable, slows or stalls writers while
 * flushes or L0 compactions fall behind. */
static int make_room(marble_db *db, marble_error *err)
{
    int slowed = 0;
    pthread_mutex_lock(&db->mu);
    for (;;) {
        if (db->bg_error) {
            int rc = marble_error_set(err, db->bg_error, "background work failed earlier: %s",
                                      db->bg_err.message);
            pthread_mutex_unlock(&db->mu);
            return rc;
        }
        /* without automatic compaction nothing would ever bring L0 down: no L0 triggers */
        size_t l0 = db->opts.disable_auto_compaction ? 0 : l0_files(db);
        if (!slowed && l0 >= (size_t)db->opts.level0_slowdown_trigger &&
            l0 < (size_t)db->opts.level0_stop_trigger) {
            pthread_mutex_unlock(&db->mu);
            marble_sleep_ns(1000000);
            atomic_fetch_add_explicit(&db->st_slowdowns, 1, memory_order_relaxed);
            slowed = 1;
            pthread_mutex_lock(&db->mu);
            continue;
        }
        int full = marble__memtable_used_bytes(db->mem->mt) >= db->opts.write_buffer_size;
        int stall = l0 >= (size_t)db->opts.level0_stop_trigger ||
                    (full && db->n_imm >= (size_t)db->opts.max_immutable_memtables);
        if (stall) {
            uint64_t t0 = marble_now_ns();
            atomic_fetch_add_explicit(&db->st_stalls, 1, memory_order_relaxed);
            pthread_mutex_unlock(&db->mu);
            maybe_schedule(db);
            pthread_mutex_lock(&db->mu);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&db->cv, &db->mu, &ts);
            atomic_fetch_add_explicit(&db->st_stall_ns, marble_now_ns() - t0, memory_order_relaxed);
            continue;
        }
        if (!full) break;
        /* rotate: the WAL's current segment ends with this memtable's entries. The roll does
         * I/O, so it runs without mu (wmu keeps other writers out). */
        pthread_mutex_unlock(&db->mu);
        marble__memref *fresh = NULL;
        int rc = memref_new(db, &fresh, err);
        uint64_t old_seg = 0;
        if (rc == MARBLE_OK) rc = marble__wal_roll(db->wal, &old_seg, err);
        if (rc != MARBLE_OK) {
            marble__memref_unref(fresh);
            return rc;
        }
        pthread_mutex_lock(&db->mu);
        db->mem->wal_segment = old_seg;
        db->mem->max_seq = db->next_seq - 1;
        db->imm[db->n_imm++] = db->mem;
        db->mem = fresh;
        pthread_mutex_unlock(&db->mu);
        maybe_schedule(db);
        pthread_mutex_lock(&db->mu);
    }
    pthread_mutex_unlock(&db->mu);
    return MARBLE_OK;
}

/* Payload of a WAL record: u32 count, then per row: u8 op, varint klen, memtable key (table
 * prefix + encoded key), varint vlen, row value. Row i takes sequence number seq + i. */
static int payload_add(marble__bytes *p, int op, const void *key, size_t klen, const void *val,
                       size_t vlen, marble_error *err)
{
    uint8_t o = (uint8_t)op;
    MARBLE_RETURN_NOT_OK(marble__bytes_append(p, &o, 1, err));
    MARBLE_RETURN_NOT_OK(put_varint(p, klen, err));
    MARBLE_RETURN_NOT_OK(marble__bytes_append(p, key, klen, err));
    MARBLE_RETURN_NOT_OK(put_varint(p, vlen, err));
    return marble__bytes_append(p, val, vlen, err);
}

typedef int (*row_fn)(void *ud, int op, const uint8_t *key, size_t klen, const uint8_t *val,
                      size_t vlen);

/* Walks a payload; MARBLE_ERR_CORRUPTION if it does not parse. */
static int payload_walk(const uint8_t *p, size_t len, uint32_t *count, row_fn fn, void *ud)
{
    const uint8_t *end = p + len;
    if (len < 4) return MARBLE_ERR_CORRUPTION;
    uint32_t n = marble__prefix_get(p);
    p += 4;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t kl, vl;
        if (p >= end) return MARBLE_ERR_CORRUPTION;
        int op = *p++;
        if (op > 1 || !get_varint(&p, end, &kl) || kl > (uint64_t)(end - p) ||
            kl < MARBLE__PREFIX_LEN)
            return MARBLE_ERR_CORRUPTION;
        const uint8_t *k = p;
        p += kl;
        if (!get_varint(&p, end, &vl) || vl > (uint64_t)(end - p)) return MARBLE_ERR_CORRUPTION;
        const uint8_t *v = p;
        p += vl;
        if (fn) {
            int rc = fn(ud, op, k, (size_t)kl, v, (size_t)vl);
            if (rc != MARBLE_OK) return rc;
        }
    }
    if (p != end) return MARBLE_ERR_CORRUPTION;
    *count = n;
    return MARBLE_OK;
}

typedef struct insert_ctx {
    marble__memref *m;
    uint64_t seq;
    marble_error *err;
} insert_ctx;

static int insert_row(void *ud, int op, const uint8_t *key, size_t klen, const uint8_t *val,
                      size_t vlen)
{
    insert_ctx *c = ud;
    int rc = marble__memtable_add_hint(c->m->mt, &c->m->hint, c->seq++,
                                       op ? MARBLE__MEMTABLE_PUT : MARBLE__MEMTABLE_DELETE, key,
                                       klen, val, vlen, c->err);
    return rc == MARBLE_ERR_EXISTS ? MARBLE_OK : rc; /* a replayed duplicate */
}

typedef struct row_ref {
    const uint8_t *key, *val;
    uint32_t klen;
    uint8_t op;
    size_t vlen;
    uint64_t seq;
} row_ref;

typedef struct collect_ctx {
    row_ref *rows;
    size_t n;
    uint64_t seq;
} collect_ctx;

static int collect_row(void *ud, int op, const uint8_t *key, size_t klen, const uint8_t *val,
                       size_t vlen)
{
    collect_ctx *c = ud;
    row_ref *r = &c->rows[c->n++];
    r->key = key;
    r->klen = (uint32_t)klen;
    r->val = val;
    r->vlen = vlen;
    r->op = (uint8_t)op;
    r->seq = c->seq++;
    return MARBLE_OK;
}

/* Internal-key order: key ascending, then seq descending. */
static int cmp_rows(const void *a, const void *b)
{
    const row_ref *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c) return c;
    if (x->klen != y->klen) return x->klen < y->klen ? -1 : 1;
    return x->seq > y->seq ? -1 : x->seq < y->seq;
}

/* Adds sorted rows [from, to) through its own hint. */
static int insert_sorted(marble__memtable *mt, marble__memtable_hint *hint, const row_ref *rows,
                         size_t from, size_t to, marble_error *err)
{
    int rc = MARBLE_OK;
    for (size_t i = from; rc == MARBLE_OK && i < to; i++) {
        const row_ref *r = &rows[i];
        rc = marble__memtable_add_hint(mt, hint, r->seq,
                                       r->op ? MARBLE__MEMTABLE_PUT : MARBLE__MEMTABLE_DELETE,
                                       r->key, r->klen, r->val, r->vlen, err);
        if (rc == MARBLE_ERR_EXISTS) rc = MARBLE_OK; /* a replayed duplicate */
    }
    return rc;
}

/* A sorted batch split into slices for parallel insertion. Slices are offered to the
 * scheduler's workers through the database's background group; whoever claims a slice first
 * (a worker, or the writer itself once its own slice is done) inserts it, so a writer never
 * waits for a worker that is busy with a flush or a compaction, only for slices a worker has
 * already started. Tasks that start late find their slice claimed and return. The shared block
 * is freed by whoever drops the last reference (the writer or a late task). */
typedef struct insert_shared insert_shared;

typedef struct insert_slice {
    insert_shared *s;
    size_t from, to;
    int claimed; /* under s->mu */
    int rc;
    marble_error err;
} insert_slice;

struct insert_shared {
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active; /* slices claimed by workers and not finished (under mu) */
    marble__memtable *mt;
    const row_ref *rows;
    size_t n;
    insert_slice slice[];
};

static void insert_shared_unref(insert_shared *s)
{
    /* acq_rel: the last holder sees every other holder's writes before freeing */
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static int claim_slice(insert_shared *s, insert_slice *sl, int worker)
{
    pthread_mutex_lock(&s->mu);
    int mine = !sl->claimed;
    sl->claimed = 1;
    if (mine && worker) s->active++;
    pthread_mutex_unlock(&s->mu);
    return mine;
}

static void run_slice(insert_slice *sl)
{
    marble__memtable_hint hint;
    memset(&hint, 0, sizeof hint);
    sl->rc = insert_sorted(sl->s->mt, &hint, sl->s->rows, sl->from, sl->to, &sl->err);
}

static marble_task_status insert_task(marble_task_ctx *ctx, void *arg)
{
    (void)ctx;
    insert_slice *sl = arg;
    insert_shared *s = sl->s;
    if (claim_slice(s, sl, 1)) {
        run_slice(sl);
        pthread_mutex_lock(&s->mu);
        if (--s->active == 0) pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    insert_shared_unref(s);
    return MARBLE_TASK_DONE;
}

#define PARALLEL_INSERT_MIN 256 /* rows per slice at least: below, one thread inserts */
#define PARALLEL_INSERT_MAX 16

/* Inserts sorted rows in up to `slices` key-range slices, in parallel where workers are free. */
static int insert_parallel(marble_db *db, marble__memtable *mt, const row_ref *rows, size_t n,
                           size_t slices, marble_error *err)
{
    insert_shared *s = calloc(1, sizeof *s + slices * sizeof(insert_slice));
    if (!s) return insert_sorted(mt, NULL, rows, 0, n, err);
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->mt = mt;
    s->rows = rows;
    s->n = n;
    for (size_t k = 0; k < slices; k++) {
        s->slice[k].s = s;
        s->slice[k].from = n * k / slices;
        s->slice[k].to = n * (k + 1) / slices;
    }
    for (size_t k = 1; k < slices; k++) {
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
        if (marble_group_spawn(&db->bg, insert_task, &s->slice[k]) != MARBLE_OK)
            insert_shared_unref(s); /* not spawned: the writer does it below */
    }
    for (size_t k = 0; k < slices; k++)
        if (claim_slice(s, &s->slice[k], 0)) run_slice(&s->slice[k]);
    pthread_mutex_lock(&s->mu);
    while (s->active > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    int rc = MARBLE_OK;
    for (size_t k = 0; k < slices && rc == MARBLE_OK; k++)
        if (s->slice[k].rc != MARBLE_OK) {
            rc = s->slice[k].rc;
            if (err) *err = s->slice[k].err;
        }
    insert_shared_unref(s);
    return rc;
}

/* Adds the rows of a payload to the memtable; rows i takes seq + i. Large payloads are sorted
 * first so that the skiplist inserts walk forward from the previous one (the hint), and big
 * sorted batches are split into key ranges inserted in parallel on the scheduler (the skiplist
 * takes concurrent inserts; the rows become visible only when last_seq is published after all
 * of them). */
static int insert_payload(marble_db *db, marble__memref *m, const marble__bytes *payload,
                          uint32_t count, uint64_t seq, marble_error *err)
{
    uint32_t n;
    if (count >= 64 && count <= (1u << 24)) {
        collect_ctx cc = {malloc(sizeof(row_ref) * count), 0, seq};
        if (cc.rows) {
            int rc = payload_walk(payload->data, payload->len, &n, collect_row, &cc);
            if (rc == MARBLE_OK) qsort(cc.rows, cc.n, sizeof *cc.rows, cmp_rows);
            size_t slices = db && db->bg_ready ? (size_t)marble_sched_threads(db->sched) + 1 : 1;
            if (slices > cc.n / PARALLEL_INSERT_MIN) slices = cc.n / PARALLEL_INSERT_MIN;
            if (slices > PARALLEL_INSERT_MAX) slices = PARALLEL_INSERT_MAX;
            if (rc == MARBLE_OK && slices >= 2)
                rc = insert_parallel(db, m->mt, cc.rows, cc.n, slices, err);
            else if (rc == MARBLE_OK)
                rc = insert_sorted(m->mt, &m->hint, cc.rows, 0, cc.n, err);
            free(cc.rows);
            return rc;
        }
    }
    insert_ctx ic = {m, seq, err};
    return payload_walk(payload->data, payload->len, &n, insert_row, &ic);
}

/* Logs and applies a payload of `count` rows (payload's first 4 bytes hold count). */
/* Logs and applies a payload of `count` rows; wmu held. */
static int commit_locked(marble_db *db, marble__bytes *payload, uint32_t count, int sync,
                         marble_error *err)
{
    marble__prefix_put(payload->data, count);
    if (db->write_error)
        return marble_error_set(err, db->write_error,
                                "the database refuses writes after an earlier failure: %s",
                                db->write_err.message);
    int rc = make_room(db, err);
    if (rc != MARBLE_OK) return rc;
    uint64_t seq = db->next_seq;
    rc = marble__wal_append(db->wal, seq, payload->data, payload->len, err);
    if (rc == MARBLE_OK && sync && db->opts.sync == MARBLE_SYNC_NONE)
        rc = marble__wal_sync(db->wal, err);
    if (rc != MARBLE_OK) {
        db->write_error = rc;
        db->write_err = err ? *err : (marble_error){rc, "WAL write failed"};
        return rc;
    }
    db->next_seq += count;
    rc = insert_payload(db, db->mem, payload, count, seq, err);
    if (rc != MARBLE_OK) { /* only NO_MEMORY can get here: the WAL has it, reopen replays it */
        db->write_error = rc;
        db->write_err = err ? *err : (marble_error){rc, "memtable insert failed"};
        return rc;
    }
    /* release: readers that load last_seq with acquire see the memtable entries */
    atomic_store_explicit(&db->last_seq, seq + count - 1, memory_order_release);
    atomic_fetch_add_explicit(&db->st_rows_written, count, memory_order_relaxed);
    atomic_fetch_add_explicit(&db->st_user_bytes, payload->len, memory_order_relaxed);
    return MARBLE_OK;
}

/* A writer waiting in the commit queue (on its caller's stack). */
typedef struct marble__writer {
    marble__bytes *payload;
    uint32_t count;
    int sync;
    int done;
    int rc;
    marble_error err;
    pthread_cond_t cv;
    struct marble__writer *next;
} marble__writer;

#define GROUP_MAX_BYTES ((size_t)1 << 20)

/* Commits a payload (its first 4 bytes are reserved for the row count). Writers queue; the one
 * at the front commits its own payload together with those queued behind it (up to 1 MiB) as
 * one WAL record with one sync (group commit), then wakes them with the shared result. Each
 * write batch stays within one record, so it is all-or-nothing. Called without wmu. */
static int commit_payload(marble_db *db, marble__bytes *payload, uint32_t count,
                          const marble_write_options *wo, marble_error *err)
{
    if (count == 0) return MARBLE_OK;
    if (payload->len > MARBLE__WAL_MAX_PAYLOAD) /* bad input, not a WAL failure: not sticky */
        return marble_error_set(err, MARBLE_ERR_LIMIT,
                                "a write of %zu encoded bytes exceeds the limit of %" PRIu32
                                " bytes per write",
                                payload->len, MARBLE__WAL_MAX_PAYLOAD);
    marble__writer w;
    memset(&w, 0, sizeof w);
    w.payload = payload;
    w.count = count;
    w.sync = wo && wo->sync == 1;
    pthread_cond_init(&w.cv, NULL);
    pthread_mutex_lock(&db->wq_mu);
    if (db->wq_tail)
        db->wq_tail->next = &w;
    else
        db->wq_head = &w;
    db->wq_tail = &w;
    while (!w.done && db->wq_head != &w)
        pthread_cond_wait(&w.cv, &db->wq_mu);
    if (w.done) {
        pthread_mutex_unlock(&db->wq_mu);
        pthread_cond_destroy(&w.cv);
        if (w.rc != MARBLE_OK && err) *err = w.err;
        return w.rc;
    }
    /* the leader: take the writers queued behind it */
    marble__writer *last = &w;
    size_t bytes = payload->len;
    uint64_t rows = count;
    int sync = w.sync;
    while (last->next && bytes + last->next->payload->len <= GROUP_MAX_BYTES &&
           rows + last->next->count <= UINT32_MAX) {
        last = last->next;
        bytes += last->payload->len;
        rows += last->count;
        sync |= last->sync;
    }
    pthread_mutex_unlock(&db->wq_mu);

    marble_error e = {0};
    int rc = MARBLE_OK;
    pthread_mutex_lock(&db->wmu);
    marble__bytes *p = payload;
    if (last != &w) {
        db->gpayload.len = 0;
        rc = marble__bytes_reserve(&db->gpayload, bytes, &e);
        if (rc == MARBLE_OK) {
            memset(db->gpayload.data, 0, 4);
            db->gpayload.len = 4;
            for (marble__writer *x = &w;; x = x->next) {
                memcpy(db->gpayload.data + db->gpayload.len, x->payload->data + 4,
                       x->payload->len - 4);
                db->gpayload.len += x->payload->len - 4;
                if (x == last) break;
            }
            p = &db->gpayload;
        }
    }
    if (rc == MARBLE_OK) rc = commit_locked(db, p, (uint32_t)rows, sync, &e);
    if (db->gpayload.cap > 4 * GROUP_MAX_BYTES) marble__bytes_free(&db->gpayload);
    pthread_mutex_unlock(&db->wmu);

    pthread_mutex_lock(&db->wq_mu);
    for (marble__writer *x = &w;;) {
        marble__writer *next = x->next;
        x->rc = rc;
        if (rc != MARBLE_OK) x->err = e;
        x->done = 1;
        if (x != &w) pthread_cond_signal(&x->cv);
        if (x == last) break;
        x = next;
    }
    db->wq_head = last->next;
    if (!db->wq_head)
        db->wq_tail = NULL;
    else
        pthread_cond_signal(&db->wq_head->cv);
    pthread_mutex_unlock(&db->wq_mu);
    pthread_cond_destroy(&w.cv);
    if (rc != MARBLE_OK && err) *err = e;
    return rc;
}

/* Maps the table's columns to the batch's children by name, checking types. map[i] is the
 * child index of table column i, or -1 when the batch lacks it (an error unless allow_missing
 * lets non-key columns be absent). */
static int map_columns(const marble__table *t, const struct ArrowSchema *schema,
                       const struct ArrowArray *batch, int keys_only, int *map, marble_error *err)
{
    if (!schema || !batch || !batch->release || !schema->release)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "table '%s': schema or batch is NULL or released", t->name);
    int rc = marble_arrow_array_validate(schema, batch, MARBLE_VALIDATE_UTF8, err);
    if (rc != MARBLE_OK) return rc;
    if (!schema->format || strcmp(schema->format, "+s") != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "table '%s': the batch is not a struct (\"+s\") array", t->name);
    const struct ArrowSchema *ts = &t->codec.schema;
    for (int i = 0; i < t->codec.ncols; i++)
        map[i] = -1;
    for (int64_t j = 0; j < schema->n_children; j++) {
        const struct ArrowSchema *c = schema->children[j];
        int found = -1;
        for (int i = 0; i < t->codec.ncols; i++)
            if (c->name && strcmp(c->name, ts->children[i]->name) == 0) found = i;
        if (found < 0) {
            if (keys_only) continue;
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "table '%s' has no column '%s'", t->name,
                                    c->name ? c->name : "(unnamed)");
        }
        if (map[found] >= 0)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "table '%s': column '%s' appears twice in the batch", t->name,
                                    c->name);
        if (strcmp(c->format, ts->children[found]->format) != 0)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "table '%s': column '%s' has type '%s' in the batch, the "
                                    "table's is '%s'",
                                    t->name, c->name, c->format, ts->children[found]->format);
        map[found] = (int)j;
    }
    for (int i = 0; i < t->codec.ncols; i++) {
        if (map[i] >= 0) continue;
        if (keys_only && !t->codec.cols[i].is_key) continue;
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "table '%s': the batch lacks column '%s'", t->name,
                                ts->children[i]->name);
    }
    /* non-nullable value columns must hold no nulls */
    for (int i = 0; !keys_only && i < t->codec.ncols; i++) {
        if (t->codec.cols[i].is_key || (ts->children[i]->flags & ARROW_FLAG_NULLABLE)) continue;
        const struct ArrowArray *a = batch->children[map[i]];
        if (a->null_count == 0 || !a->buffers[0]) continue;
        for (int64_t r = 0; r < batch->length; r++)
            if (marble_arrow_is_null(a, batch->offset + r))
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "table '%s': column '%s' is not nullable but row %" PRId64
                                        " is null",
                                        t->name, ts->children[i]->name, r);
    }
    return MARBLE_OK;
}

/* Appends the rows of a batch (put) or its keys (delete) to a payload. */
static int encode_batch(const marble__table *t, const struct ArrowSchema *schema,
                        const struct ArrowArray *batch, int op, marble__bytes *payload,
                        marble__bytes *key, marble__bytes *val, uint32_t *count, marble_error *err)
{
    int map[MARBLE__MAX_COLUMNS];
    MARBLE_RETURN_NOT_OK(map_columns(t, schema, batch, op == 0, map, err));
    struct ArrowArray *kids[MARBLE__MAX_COLUMNS];
    struct ArrowArray *dummy = NULL;
    for (int i = 0; i < t->codec.ncols; i++) {
        if (map[i] >= 0) {
            kids[i] = batch->children[map[i]];
        } else {
            if (!dummy) dummy = batch->children[map[t->key_cols[0]]];
            kids[i] = dummy; /* never read: deletes encode keys only */
        }
    }
    struct ArrowArray view = *batch;
    view.n_children = t->codec.ncols;
    view.children = kids;
    if ((uint64_t)*count + (uint64_t)batch->length > UINT32_MAX)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "more than 2^32-1 rows in one write");
    for (int64_t r = 0; r < batch->length; r++) {
        key->len = 0;
        val->len = 0;
        uint8_t pre[4];
        marble__prefix_put(pre, t->id);
        MARBLE_RETURN_NOT_OK(marble__bytes_append(key, pre, 4, err));
        int rc = marble__key_encode_row(&t->codec.keys, &view, r, key, err);
        if (rc != MARBLE_OK) return rc;
        if (op) MARBLE_RETURN_NOT_OK(marble__row_encode(&t->codec, &view, r, val, err));
        MARBLE_RETURN_NOT_OK(
            payload_add(payload, op, key->data, key->len, val->data, val->len, err));
    }
    *count += (uint32_t)batch->length;
    return MARBLE_OK;
}

static int payload_start(marble__bytes *p, marble_error *err)
{
    p->len = 0;
    return marble__bytes_append(p, "\0\0\0\0", 4, err);
}

static int check_db(marble_db *db, marble_error *err)
{
    if (!db) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db is NULL");
    return MARBLE_OK;
}

/* The write calls encode into per-thread scratch (scratch.h): it stays put while a group leader
 * commits it (its writer waits in the queue) and is trimmed after big writes. */
#define WSCRATCH(err)                                                                              \
    marble__scratch *sc_ = marble__scratch_get();                                                  \
    if (!sc_) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");                 \
    marble__bytes *tl_payload = &sc_->b[MARBLE__SCRATCH_WPAYLOAD];                                 \
    marble__bytes *tl_key = &sc_->b[MARBLE__SCRATCH_WKEY];                                         \
    marble__bytes *tl_val = &sc_->b[MARBLE__SCRATCH_WVAL]

static void scratch_trim(marble__bytes *p, marble__bytes *k, marble__bytes *v)
{
    marble__scratch_trim(p, (size_t)4 << 20);
    marble__scratch_trim(k, (size_t)1 << 20);
    marble__scratch_trim(v, (size_t)4 << 20);
}

/* The three scratch buffers of a write and the table it writes (see scratch.h). */
typedef struct table_write {
    marble__table *t;
    marble__bytes *payload, *key, *val;
} table_write;

static int table_write_begin(marble_db *db, const char *table, table_write *w, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (!table) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "table name is NULL");
    marble__scratch *sc = marble__scratch_get();
    if (!sc) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    w->t = marble__db_find_table(db, table);
    if (!w->t) return marble__db_table_error(table, err);
    w->payload = &sc->b[MARBLE__SCRATCH_WPAYLOAD];
    w->key = &sc->b[MARBLE__SCRATCH_WKEY];
    w->val = &sc->b[MARBLE__SCRATCH_WVAL];
    w->key->len = 0;
    return payload_start(w->payload, err);
}

/* Commits what the write encoded (when rc is MARBLE_OK) and releases what begin took. */
static int table_write_end(marble_db *db, table_write *w, int rc, uint32_t count,
                           const marble_write_options *wo, marble_error *err)
{
    if (rc == MARBLE_OK) rc = commit_payload(db, w->payload, count, wo, err);
    scratch_trim(w->payload, w->key, w->val);
    marble__table_unref(w->t);
    return rc;
}

static int write_rows(marble_db *db, const char *table, const struct ArrowSchema *schema,
                      const struct ArrowArray *batch, int op, const marble_write_options *wo,
                      marble_error *err)
{
    table_write w = {0};
    int rc = table_write_begin(db, table, &w, err);
    if (!w.t) return rc;
    uint32_t count = 0;
    if (rc == MARBLE_OK)
        rc = encode_batch(w.t, schema, batch, op, w.payload, w.key, w.val, &count, err);
    return table_write_end(db, &w, rc, count, wo, err);
}

int marble_db_put(marble_db *db, const char *table, const struct ArrowSchema *schema,
                  const struct ArrowArray *batch, const marble_write_options *wo, marble_error *err)
{
    return write_rows(db, table, schema, batch, 1, wo, err);
}

int marble_db_delete(marble_db *db, const char *table, const struct ArrowSchema *schema,
                     const struct ArrowArray *keys, const marble_write_options *wo,
                     marble_error *err)
{
    return write_rows(db, table, schema, keys, 0, wo, err);
}

int marble_db_delete_key(marble_db *db, const char *table, marble_key key,
                         const marble_write_options *wo, marble_error *err)
{
    table_write w = {0};
    int rc = table_write_begin(db, table, &w, err);
    if (!w.t) return rc;
    if (rc == MARBLE_OK) rc = marble__db_encode_key(w.t, key, 1, w.key, err);
    if (rc == MARBLE_OK) rc = payload_add(w.payload, 0, w.key->data, w.key->len, NULL, 0, err);
    return table_write_end(db, &w, rc, 1, wo, err);
}

/* KV rows: key = prefix + keyenc(binary), value = row value of one binary column. */
static int kv_encode(const void *key, size_t klen, const void *value, size_t vlen, int op,
                     marble__bytes *k, marble__bytes *v, marble_error *err)
{
    if ((!key && klen) || (!value && vlen))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "key or value is NULL");
    k->len = 0;
    v->len = 0;
    uint8_t pre[5];
    marble__prefix_put(pre, MARBLE__KV_TABLE_ID);
    pre[4] = MARBLE__KEY_VALUE;
    MARBLE_RETURN_NOT_OK(marble__bytes_reserve(k, 2 * klen + 8, err));
    memcpy(k->data, pre, 5);
    size_t n = 5;
    const uint8_t *s = key;
    for (size_t i = 0; i < klen; i++) {
        k->data[n++] = s[i];
        if (s[i] == 0) k->data[n++] = 0xFF;
    }
    k->len = n;
    MARBLE_RETURN_NOT_OK(marble__bytes_append(k, "\0\0", 2, err));
    if (op) {
        uint8_t bm = 1;
        MARBLE_RETURN_NOT_OK(marble__bytes_append(v, &bm, 1, err));
        MARBLE_RETURN_NOT_OK(put_varint(v, vlen, err));
        MARBLE_RETURN_NOT_OK(marble__bytes_append(v, value, vlen, err));
    }
    return MARBLE_OK;
}

static int kv_write(marble_db *db, const void *key, size_t klen, const void *value, size_t vlen,
                    int op, const marble_write_options *wo, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    WSCRATCH(err);
    int rc = kv_encode(key, klen, value, vlen, op, tl_key, tl_val, err);
    if (rc == MARBLE_OK) rc = payload_start(tl_payload, err);
    if (rc == MARBLE_OK)
        rc = payload_add(tl_payload, op, tl_key->data, tl_key->len, tl_val->data, tl_val->len, err);
    if (rc == MARBLE_OK) rc = commit_payload(db, tl_payload, 1, wo, err);
    scratch_trim(tl_payload, tl_key, tl_val);
    return rc;
}

int marble_db_kv_put(marble_db *db, const void *key, size_t klen, const void *value, size_t vlen,
                     const marble_write_options *wo, marble_error *err)
{
    return kv_write(db, key, klen, value, vlen, 1, wo, err);
}

int marble_db_kv_delete(marble_db *db, const void *key, size_t klen, const marble_write_options *wo,
                        marble_error *err)
{
    return kv_write(db, key, klen, NULL, 0, 0, wo, err);
}

uint64_t marble_db_latest_sequence(marble_db *db)
{
    return db ? atomic_load_explicit(&db->last_seq, memory_order_acquire) : 0;
}

/* ---- write batches ----------------------------------------------------------------------------
 */

struct marble_write_batch {
    marble_db *db;
    marble__bytes payload, key, val;
    uint32_t count;
};

int marble_write_batch_create(marble_db *db, marble_write_batch **out, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "out is NULL");
    marble_write_batch *wb = calloc(1, sizeof *wb);
    if (!wb) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    wb->db = db;
    if (payload_start(&wb->payload, err) != MARBLE_OK) {
        free(wb);
        return MARBLE_ERR_NO_MEMORY;
    }
    *out = wb;
    return MARBLE_OK;
}

void marble_write_batch_destroy(marble_write_batch *wb)
{
    if (!wb) return;
    marble__bytes_free(&wb->payload);
    marble__bytes_free(&wb->key);
    marble__bytes_free(&wb->val);
    free(wb);
}

void marble_write_batch_clear(marble_write_batch *wb)
{
    if (!wb) return;
    wb->payload.len = 4;
    wb->count = 0;
}

size_t marble_write_batch_count(const marble_write_batch *wb)
{
    return wb ? wb->count : 0;
}

int marble_write_batch_put(marble_write_batch *wb, const char *table,
                           const struct ArrowSchema *schema, const struct ArrowArray *batch,
                           marble_error *err)
{
    if (!wb || !table) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "NULL argument");
    marble__table *t = marble__db_find_table(wb->db, table);
    if (!t) return marble__db_table_error(table, err);
    size_t len0 = wb->payload.len;
    uint32_t c0 = wb->count;
    int rc = encode_batch(t, schema, batch, 1, &wb->payload, &wb->key, &wb->val, &wb->count, err);
    if (rc != MARBLE_OK) {
        wb->payload.len = len0;
        wb->count = c0;
    }
    marble__table_unref(t);
    return rc;
}

int marble_write_batch_delete_key(marble_write_batch *wb, const char *table, marble_key key,
                                  marble_error *err)
{
    if (!wb || !table) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "NULL argument");
    marble__table *t = marble__db_find_table(wb->db, table);
    if (!t) return marble__db_table_error(table, err);
    wb->key.len = 0;
    size_t len0 = wb->payload.len;
    int rc = marble__db_encode_key(t, key, 1, &wb->key, err);
    if (rc == MARBLE_OK) rc = payload_add(&wb->payload, 0, wb->key.data, wb->key.len, NULL, 0, err);
    if (rc == MARBLE_OK && wb->count == UINT32_MAX)
        rc = marble_error_set(err, MARBLE_ERR_LIMIT, "more than 2^32-1 rows in one write batch");
    if (rc == MARBLE_OK)
        wb->count++;
    else
        wb->payload.len = len0;
    marble__table_unref(t);
    return rc;
}

static int wb_kv(marble_write_batch *wb, const void *key, size_t klen, const void *value,
                 size_t vlen, int op, marble_error *err)
{
    if (!wb) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "write batch is NULL");
    size_t len0 = wb->payload.len;
    int rc = kv_encode(key, klen, value, vlen, op, &wb->key, &wb->val, err);
    if (rc == MARBLE_OK)
        rc = payload_add(&wb->payload, op, wb->key.data, wb->key.len, wb->val.data, wb->val.len,
                         err);
    if (rc == MARBLE_OK && wb->count == UINT32_MAX)
        rc = marble_error_set(err, MARBLE_ERR_LIMIT, "more than 2^32-1 rows in one write batch");
    if (rc == MARBLE_OK)
        wb->count++;
    else
        wb->payload.len = len0;
    return rc;
}

int marble_write_batch_kv_put(marble_write_batch *wb, const void *key, size_t klen,
                              const void *value, size_t vlen, marble_error *err)
{
    return wb_kv(wb, key, klen, value, vlen, 1, err);
}

int marble_write_batch_kv_delete(marble_write_batch *wb, const void *key, size_t klen,
                                 marble_error *err)
{
    return wb_kv(wb, key, klen, NULL, 0, 0, err);
}

/* Checks that every table a batch names still exists (a drop between add and commit). */
static int check_tables(void *ud, int op, const uint8_t *key, size_t klen, const uint8_t *val,
                        size_t vlen)
{
    (void)op, (void)klen, (void)val, (void)vlen;
    marble_db *db = ud;
    uint32_t id = marble__prefix_get(key);
    if (id == MARBLE__KV_TABLE_ID) return MARBLE_OK;
    marble__table *t = marble__db_find_table_id(db, id);
    if (!t) return MARBLE_ERR_NOT_FOUND;
    marble__table_unref(t);
    return MARBLE_OK;
}

int marble_db_write(marble_db *db, marble_write_batch *wb, const marble_write_options *wo,
                    marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (!wb || wb->db != db)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "write batch is NULL or belongs to another database");
    uint32_t n;
    marble__prefix_put(wb->payload.data, wb->count);
    if (payload_walk(wb->payload.data, wb->payload.len, &n, check_tables, db) != MARBLE_OK)
        return marble_error_set(err, MARBLE_ERR_NOT_FOUND,
                                "write batch: a table it writes was dropped after the rows were "
                                "added");
    int rc = commit_payload(db, &wb->payload, wb->count, wo, err);
    return rc;
}

/* ---- table operations -------------------------------------------------------------------------
 */

static int valid_table_name(const char *name, marble_error *err)
{
    if (!name || !*name)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "table name is empty");
    size_t n = strlen(name);
    if (n > 255)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "table name '%.40s...' is longer than 255 bytes", name);
    if (name[0] == '_' && name[1] == '_')
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "table name '%s': names starting with '__' are reserved", name);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "table name contains a control character");
    return MARBLE_OK;
}

int marble_db_create_table(marble_db *db, const char *name, const struct ArrowSchema *schema,
                           const char *const *key_columns, size_t n_key_columns, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    MARBLE_RETURN_NOT_OK(valid_table_name(name, err));
    if (!schema || !schema->release)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "table '%s': schema is NULL",
                                name);
    MARBLE_RETURN_NOT_OK(marble_arrow_schema_validate(schema, err));
    if (strcmp(schema->format, "+s") != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "table '%s': the schema is not a struct (\"+s\")", name);
    if (!key_columns || n_key_columns < 1 || n_key_columns > MARBLE__KEY_MAX_COLS)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "table '%s': give 1 to %d key columns", name, MARBLE__KEY_MAX_COLS);
    int keys[MARBLE__KEY_MAX_COLS];
    for (size_t i = 0; i < n_key_columns; i++) {
        keys[i] = -1;
        for (int64_t j = 0; key_columns[i] && j < schema->n_children; j++)
            if (schema->children[j]->name && strcmp(schema->children[j]->name, key_columns[i]) == 0)
                keys[i] = (int)j;
        if (keys[i] < 0)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "table '%s': key column '%s' is not in the schema", name,
                                    key_columns[i] ? key_columns[i] : "(NULL)");
    }
    pthread_mutex_lock(&db->mu);
    int rc = MARBLE_OK;
    for (size_t i = 0; i < db->n_tables; i++)
        if (strcmp(db->tables[i]->name, name) == 0)
            rc = marble_error_set(err, MARBLE_ERR_EXISTS, "table '%s' already exists", name);
    marble__table *t = NULL;
    if (rc == MARBLE_OK)
        rc = table_new(db->next_table_id, name, schema, keys, (int)n_key_columns, &t, err);
    if (rc == MARBLE_OK) rc = tables_add(db, t, err);
    if (rc != MARBLE_OK) {
        marble__table_unref(t);
        pthread_mutex_unlock(&db->mu);
        return rc;
    }
    db->next_table_id++;
    marble__version_edit e;
    marble__edit_init(&e);
    rc = catalog_edit(db, &e, err);
    if (rc == MARBLE_OK) rc = apply_edit(db, &e, 1, 0, err);
    marble__edit_free(&e);
    if (rc != MARBLE_OK) {
        db->n_tables--;
        db->next_table_id--;
        marble__table_unref(t);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int marble_db_drop_table(marble_db *db, const char *name, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (!name) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "table name is NULL");
    pthread_mutex_lock(&db->mu);
    /* wait until no flush or compaction works (a flush that found the table before the drop
     * would add its SSTable after the drop's edit); the table list may change meanwhile, so the
     * table is looked up afterwards */
    while (db->compactions_running > 0 || db->flush_running || db->manual_compaction)
        pthread_cond_wait(&db->cv, &db->mu);
    size_t idx = db->n_tables;
    for (size_t i = 0; i < db->n_tables; i++)
        if (strcmp(db->tables[i]->name, name) == 0 && db->tables[i]->id != MARBLE__KV_TABLE_ID)
            idx = i;
    if (idx == db->n_tables) {
        pthread_mutex_unlock(&db->mu);
        return marble__db_table_error(name, err);
    }
    marble__table *t = db->tables[idx];
    memmove(db->tables + idx, db->tables + idx + 1, (db->n_tables - idx - 1) * sizeof *db->tables);
    db->n_tables--;
    marble__version_edit e;
    marble__edit_init(&e);
    int rc = catalog_edit(db, &e, err);
    marble__version *v = marble__manifest_current(db->manifest);
    for (int l = 0; rc == MARBLE_OK && l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; rc == MARBLE_OK && i < marble__version_num_files(v, l); i++) {
            const marble__file_meta *f = marble__version_file(v, l, i);
            if (f->smallest_len >= 4 && marble__prefix_get(f->smallest) == t->id)
                rc = marble__edit_delete_file(&e, l, f->number) == MARBLE_OK
                         ? MARBLE_OK
                         : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        }
    marble__version_unref(v);
    if (rc == MARBLE_OK) rc = apply_edit(db, &e, 1, 0, err);
    marble__edit_free(&e);
    if (rc != MARBLE_OK) {
        memmove(db->tables + idx + 1, db->tables + idx, (db->n_tables - idx) * sizeof *db->tables);
        db->tables[idx] = t;
        db->n_tables++;
    } else {
        marble__table_unref(t);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int marble_db_list_tables(marble_db *db, int (*fn)(void *ud, const char *name), void *ud,
                          marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (!fn) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "callback is NULL");
    pthread_mutex_lock(&db->mu);
    char **names = calloc(db->n_tables + 1, sizeof *names);
    size_t n = 0;
    int rc = names ? MARBLE_OK : MARBLE_ERR_NO_MEMORY;
    for (size_t i = 0; rc == MARBLE_OK && i < db->n_tables; i++) {
        if (db->tables[i]->id == MARBLE__KV_TABLE_ID) continue;
        names[n] = xstrdup(db->tables[i]->name);
        if (!names[n]) rc = MARBLE_ERR_NO_MEMORY;
        n++;
    }
    pthread_mutex_unlock(&db->mu);
    if (rc == MARBLE_OK) {
        qsort(names, n, sizeof *names, cmp_names);
        for (size_t i = 0; i < n; i++)
            if (fn(ud, names[i])) break;
    }
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    return rc == MARBLE_OK ? rc : marble_error_set(err, rc, "out of memory");
}

int marble_db_describe_table(marble_db *db, const char *name, struct ArrowSchema *schema,
                             int *key_columns, size_t *n_key_columns, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (!name || !schema)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "name or schema is NULL");
    marble__table *t = marble__db_find_table(db, name);
    if (!t || t->id == MARBLE__KV_TABLE_ID) {
        marble__table_unref(t);
        return marble__db_table_error(name, err);
    }
    const struct ArrowSchema *ts = &t->codec.schema;
    int n = (int)ts->n_children;
    marble_field_spec *fields = calloc((size_t)n, sizeof *fields);
    char keys[4096];
    size_t kl = 0;
    keys[0] = 0;
    for (int i = 0; i < t->nkeys; i++)
        kl += (size_t)snprintf(keys + kl, kl < sizeof keys ? sizeof keys - kl : 0, "%s%s",
                               i ? "," : "", ts->children[t->key_cols[i]]->name);
    int rc = fields ? MARBLE_OK : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; rc == MARBLE_OK && i < n; i++) {
        fields[i].name = ts->children[i]->name;
        fields[i].format = ts->children[i]->format;
        fields[i].nullable = (ts->children[i]->flags & ARROW_FLAG_NULLABLE) != 0;
    }
    char idx[4096];
    size_t il = 0;
    idx[0] = 0;
    pthread_mutex_lock(&db->mu);
    for (int i = 0; i < t->n_indexes; i++)
        if (il < sizeof idx)
            il += (size_t)snprintf(idx + il, sizeof idx - il, "%s%s", i ? "," : "",
                                   ts->children[t->indexes[i]]->name);
    int nmeta = t->n_indexes ? 2 : 1;
    pthread_mutex_unlock(&db->mu);
    const char *mk[2] = {"marble.primary_key", "marble.indexes"};
    const char *mv[2] = {keys, idx};
    if (rc == MARBLE_OK)
        rc = marble_arrow_schema_make(schema, fields, (size_t)n, mk, mv, (size_t)nmeta, err);
    free(fields);
    if (rc == MARBLE_OK && key_columns)
        for (int i = 0; i < t->nkeys; i++)
            key_columns[i] = t->key_cols[i];
    if (rc == MARBLE_OK && n_key_columns) *n_key_columns = (size_t)t->nkeys;
    marble__table_unref(t);
    return rc;
}

/* ---- snapshots --------------------------------------------------------------------------------
 */

int marble_db_snapshot_create(marble_db *db, marble_snapshot **out, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "out is NULL");
    marble_snapshot *s = calloc(1, sizeof *s);
    if (!s) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    s->db = db;
    pthread_mutex_lock(&db->mu);
    s->seq = atomic_load_explicit(&db->last_seq, memory_order_acquire);
    s->next = &db->snapshots;
    s->prev = db->snapshots.prev;
    s->prev->next = s;
    db->snapshots.prev = s;
    db->live_snapshots++;
    pthread_mutex_unlock(&db->mu);
    marble__db_res_add(db, &s->res, "snapshot at sequence %llu", (unsigned long long)s->seq);
    *out = s;
    return MARBLE_OK;
}

void marble_db_snapshot_release(marble_snapshot *s)
{
    if (!s) return;
    marble_db *db = s->db;
    pthread_mutex_lock(&db->mu);
    s->prev->next = s->next;
    s->next->prev = s->prev;
    db->live_snapshots--;
    pthread_mutex_unlock(&db->mu);
    marble__db_res_remove(db, &s->res);
    free(s);
}

uint64_t marble_snapshot_sequence(const marble_snapshot *s)
{
    return s ? s->seq : 0;
}

/* ---- open and recovery ------------------------------------------------------------------------
 */

static pthread_mutex_t g_locks_mu = PTHREAD_MUTEX_INITIALIZER;
static char **g_locks;
static size_t g_nlocks;

static int lock_db(marble_db *db, marble_error *err)
{
    /* in-process: one open per URI (also covers backends without file locks, like mem://) */
    size_t n = strlen(db->uri) + 48;
    db->lock_key = malloc(n);
    if (!db->lock_key) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    /* keyed by pid too: a forked child inherits g_locks but not the parent's open databases */
    snprintf(db->lock_key, n, "%d:%p:%s", (int)getpid(), (void *)db->fs, db->uri);
    char lock_uri[4096];
    snprintf(lock_uri, sizeof lock_uri, "%s/LOCK", db->uri);
    marble_vfs *v;
    const char *path;
    int rc = marble_fs_resolve(db->fs, lock_uri, &v, &path, err);
    if (rc != MARBLE_OK) return rc;
    /* local files are shared across registries: key them by path */
    if (strcmp(v->name, "local") == 0)
        snprintf(db->lock_key, n, "%d:file:%s", (int)getpid(), db->uri);
    pthread_mutex_lock(&g_locks_mu);
    for (size_t i = 0; i < g_nlocks; i++)
        if (strcmp(g_locks[i], db->lock_key) == 0) {
            pthread_mutex_unlock(&g_locks_mu);
            free(db->lock_key);
            db->lock_key = NULL;
            return marble_error_set(err, MARBLE_ERR_BUSY,
                                    "database %s is already open in this process (pid %d)", db->uri,
                                    (int)getpid());
        }
    char **p = realloc(g_locks, (g_nlocks + 1) * sizeof *p);
    if (!p) {
        pthread_mutex_unlock(&g_locks_mu);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    g_locks = p;
    g_locks[g_nlocks++] = db->lock_key;
    pthread_mutex_unlock(&g_locks_mu);

    /* object stores have no locks: one writer per database is the caller's to ensure (the
     * manifest's conditional creates fence a second writer where the store supports them) */
    if (db->object_store) return MARBLE_OK;
    rc = marble_fs_open(db->fs, lock_uri, MARBLE_OPEN_READ | MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE,
                        &db->lock_file, err);
    if (rc != MARBLE_OK) return rc;
    int fd = -1;
    if (marble_file_control(db->lock_file, MARBLE_FCNTL_GET_FD, &fd) == MARBLE_OK && fd >= 0) {
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char holder[64] = {0};
            size_t got = 0;
            marble_file_read(db->lock_file, 0, holder, sizeof holder - 1, &got, NULL);
            holder[got] = 0;
            char *nl = strchr(holder, '\n');
            if (nl) *nl = 0;
            return marble_error_set(err, MARBLE_ERR_BUSY,
                                    "database %s is locked by another process (%s): %s", db->uri,
                                    got ? holder : "holder unknown", strerror(e));
        }
    }
    char me[64];
    int len = snprintf(me, sizeof me, "pid %d\n", (int)getpid());
    marble_file_truncate(db->lock_file, 0, NULL);
    marble_file_write(db->lock_file, 0, me, (size_t)len, NULL);
    return MARBLE_OK;
}

static void unlock_db(marble_db *db)
{
    if (db->lock_file) marble_file_close(db->lock_file, NULL); /* closing drops the flock */
    db->lock_file = NULL;
    if (!db->lock_key) return;
    pthread_mutex_lock(&g_locks_mu);
    for (size_t i = 0; i < g_nlocks; i++)
        if (g_locks[i] == db->lock_key) {
            g_locks[i] = g_locks[--g_nlocks];
            break;
        }
    if (g_nlocks == 0) {
        free(g_locks);
        g_locks = NULL;
    }
    pthread_mutex_unlock(&g_locks_mu);
    free(db->lock_key);
    db->lock_key = NULL;
}

typedef struct replay_ctx {
    marble_db *db;
    uint64_t flushed_seq;
    uint64_t max_seq;
    marble_error *err;
} replay_ctx;

static int replay_record(uint64_t seq, const void *payload, size_t len, void *ud)
{
    replay_ctx *c = ud;
    uint32_t n;
    if (payload_walk(payload, len, &n, NULL, NULL) != MARBLE_OK)
        return marble_error_set(c->err, MARBLE_ERR_CORRUPTION,
                                "%s/wal: corruption: the record of sequence %" PRIu64
                                " does not parse",
                                c->db->uri, seq);
    if (n == 0) return MARBLE_OK;
    uint64_t last = seq + n - 1;
    if (last > c->max_seq) c->max_seq = last;
    if (last <= c->flushed_seq) return MARBLE_OK; /* already in an SSTable */
    marble__bytes p = {(uint8_t *)payload, len, len};
    return insert_payload(c->db, c->db->mem, &p, n, seq, c->err);
}

typedef struct garbage_ctx {
    marble_db *db;
    const char *dir;
    uint64_t *live;
    size_t n_live, cap_live;
} garbage_ctx;

static int collect_live(uint64_t number, void *ud)
{
    garbage_ctx *g = ud;
    remove_obsolete_cb_add(&g->live, &g->n_live, &g->cap_live, number);
    return 0;
}

static int remove_garbage_file(void *ud, const char *name, int is_dir)
{
    garbage_ctx *g = ud;
    if (is_dir) return 0;
    size_t n = strlen(name);
    if (n < 7 || strcmp(name + n - 6, ".arrow") != 0) return 0;
    char *end;
    unsigned long long num = strtoull(name, &end, 10);
    if (end != name + n - 6) return 0;
    for (size_t i = 0; i < g->n_live; i++)
        if (g->live[i] == num) return 0;
    char uri[4096];
    snprintf(uri, sizeof uri, "%s/%s", g->dir, name);
    marble_log(MARBLE_LOG_INFO, LOG_MODULE, "removing unreferenced %s", uri);
    marble_fs_remove(g->db->fs, uri, NULL);
    return 0;
}

static void strip_trailing_slashes(char *s)
{
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/' && !(n >= 3 && s[n - 2] == '/' && s[n - 3] == ':'))
        s[--n] = 0;
}

static void db_free(marble_db *db)
{
    if (!db) return;
    for (size_t i = 0; i < db->n_tables; i++)
        marble__table_unref(db->tables[i]);
    free(db->tables);
    for (size_t i = 0; i < db->n_imm; i++)
        marble__memref_unref(db->imm[i]);
    marble__memref_unref(db->mem);
    tc_clear(db);
    free(db->busy_files);
    marble__rate_limiter_destroy(&db->rate);
    marble__bytes_free(&db->gpayload);
    pthread_mutex_destroy(&db->wq_mu);
    pthread_mutex_destroy(&db->wmu);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->tc_mu);
    marble__db_res_destroy(db);
    marble_mem_budget_destroy(db->budget);
    pthread_cond_destroy(&db->cv);
    free(db->uri);
    free(db->wal_uri);
    free(db->cache_uri);
    free(db);
}

static void db_teardown(marble_db *db, int group_inited)
{
    if (group_inited) {
        marble_group_wait(&db->bg, NULL);
        marble_group_destroy(&db->bg);
    }
    if (db->wal) marble__wal_close(db->wal, NULL);
    db->wal = NULL;
    if (db->current) marble__version_unref(db->current);
    db->current = NULL;
    if (db->manifest) marble__manifest_close(db->manifest, NULL);
    db->manifest = NULL;
    tc_clear(db);
    if (db->pool) marble_handle_pool_destroy(db->pool, NULL);
    db->pool = NULL;
    unlock_db(db);
    if (db->own_sched) marble_sched_destroy(db->sched);
    if (db->own_fs) marble_fs_destroy(db->fs, NULL);
    db_free(db);
}

int marble_db_open(const char *uri, const marble_db_options *opts, marble_db **out,
                   marble_error *err)
{
    if (!uri || !*uri || !out)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "database URI or out is NULL");
    if (strlen(uri) > 3000)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "database URI is too long");
    *out = NULL;
    marble_db_options o;
    if (opts)
        o = *opts;
    else
        marble_db_options_init(&o);
    MARBLE_RETURN_NOT_OK(check_options(&o, err));
    if (o.max_background_compactions == 0) /* one thread is left for flushes */
        o.max_background_compactions = o.background_threads > 1 ? o.background_threads - 1 : 1;
    marble_db *db = calloc(1, sizeof *db);
    if (!db) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    pthread_mutex_init(&db->wmu, NULL);
    pthread_mutex_init(&db->wq_mu, NULL);
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->tc_mu, NULL);
    marble__db_res_init(db);
    pthread_cond_init(&db->cv, NULL);
    if (marble_mem_budget_create(o.memory_budget ? o.memory_budget : default_memory_budget(),
                                 &db->budget, err) != MARBLE_OK) {
        marble__db_res_destroy(db);
        pthread_mutex_destroy(&db->wmu);
        pthread_mutex_destroy(&db->wq_mu);
        pthread_mutex_destroy(&db->mu);
        pthread_mutex_destroy(&db->tc_mu);
        pthread_cond_destroy(&db->cv);
        free(db);
        return err->code;
    }
    marble__rate_limiter_init(&db->rate, o.compaction_rate_limit);
    db->snapshots.next = db->snapshots.prev = &db->snapshots;
    db->opts = o;
    db->uri = xstrdup(uri);
    if (o.sst_cache_uri) {
        db->cache_uri = xstrdup(o.sst_cache_uri);
        db->opts.sst_cache_uri = db->cache_uri;
    }
    if (o.wal_uri) { /* the caller's string need not outlive the call */
        db->wal_uri = xstrdup(o.wal_uri);
        db->opts.wal_uri = db->wal_uri;
        o.wal_uri = db->wal_uri;
    }
    int group_inited = 0;
    int rc = db->uri ? MARBLE_OK : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    if (rc != MARBLE_OK) goto fail;
    strip_trailing_slashes(db->uri);
    if (o.fs) {
        db->fs = o.fs;
    } else {
        rc = marble_fs_create(&db->fs, err);
        if (rc != MARBLE_OK) goto fail;
        db->own_fs = 1;
    }
    if (o.sched) {
        db->sched = o.sched;
    } else {
        marble_sched_options so;
        marble_sched_options_init(&so);
        so.threads = o.background_threads;
        rc = marble_sched_create(&so, &db->sched, err);
        if (rc != MARBLE_OK) goto fail;
        db->own_sched = 1;
    }
    char current[4096];
    snprintf(current, sizeof current, "%s/CURRENT", db->uri);
    int exists = 0;
    rc = marble_fs_exists(db->fs, current, &exists, err);
    if (rc != MARBLE_OK) goto fail;
    if (exists && o.error_if_exists) {
        rc = marble_error_set(err, MARBLE_ERR_EXISTS, "database %s already exists", db->uri);
        goto fail;
    }
    if (!exists && !o.create_if_missing) {
        rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND,
                              "database %s does not exist (no CURRENT file); set "
                              "create_if_missing to create it",
                              db->uri);
        goto fail;
    }
    {
        marble_vfs *bv;
        const char *bpath;
        rc = marble_fs_resolve(db->fs, db->uri, &bv, &bpath, err);
        if (rc != MARBLE_OK) goto fail;
        /* an object store: no appends or atomic renames (see db.h, "object storage") */
        db->object_store =
            (bv->caps & MARBLE_CAP_APPEND) == 0 || (bv->caps & MARBLE_CAP_ATOMIC_RENAME) == 0;
        if (db->object_store && !o.wal_uri) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "database %s is on object storage (%s), where the write-ahead "
                                  "log cannot append: set marble_db_options.wal_uri to a local "
                                  "directory",
                                  db->uri, bv->name);
            goto fail;
        }
    }
    rc = marble_fs_mkdir(db->fs, db->uri, 1, err);
    if (rc == MARBLE_OK && db->cache_uri) rc = marble_fs_mkdir(db->fs, db->cache_uri, 1, err);
    if (rc != MARBLE_OK) goto fail;
    rc = lock_db(db, err);
    if (rc != MARBLE_OK) goto fail;
    marble_handle_pool_options po = {o.handle_pool_size, 0};
    rc = marble_handle_pool_create(db->fs, &po, &db->pool, err);
    if (rc != MARBLE_OK) goto fail;
    marble__manifest_options mo = {0, 1, 0, db->object_store};
    rc = marble__manifest_open(db->fs, db->uri, &mo, &db->manifest, NULL, err);
    if (rc != MARBLE_OK) goto fail;
    db->current = marble__manifest_current(db->manifest);

    /* tables */
    db->next_table_id = MARBLE__FIRST_USER_TABLE_ID;
    marble__table *kv = NULL;
    rc = kv_table_new(&kv, err);
    if (rc == MARBLE_OK) rc = tables_add(db, kv, err);
    if (rc != MARBLE_OK) {
        marble__table_unref(kv);
        goto fail;
    }
    db->kv = kv;
    marble__version *v = marble__manifest_current(db->manifest);
    for (size_t i = 0; rc == MARBLE_OK && i < marble__version_num_catalog(v); i++) {
        const marble__catalog_record *r = marble__version_catalog(v, i);
        rc = catalog_load_record(db, r->data, r->len, err);
    }
    uint64_t flushed_seq = marble__version_last_seq(v);
    uint64_t file_seq = 0; /* ingested files (ingest.c) may hold sequence numbers above it */
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < marble__version_num_files(v, l); i++)
            if (marble__version_file(v, l, i)->largest_seq > file_seq)
                file_seq = marble__version_file(v, l, i)->largest_seq;
    uint64_t log_number = marble__version_log_number(v);
    uint64_t next_file = marble__version_next_file_number(v);
    marble__version_unref(v);
    if (rc != MARBLE_OK) goto fail;
    atomic_init(&db->next_file, next_file > 1 ? next_file : 1);

    /* WAL replay into a fresh memtable */
    rc = memref_new(db, &db->mem, err);
    if (rc != MARBLE_OK) goto fail;
    char wal_uri[4096];
    if (o.wal_uri)
        snprintf(wal_uri, sizeof wal_uri, "%s", o.wal_uri);
    else
        snprintf(wal_uri, sizeof wal_uri, "%s/wal", db->uri);
    replay_ctx rcx = {db, flushed_seq, flushed_seq, err};
    marble__wal_replay_stats rs;
    rc = marble__wal_replay(db->fs, wal_uri, log_number, replay_record, &rcx, &rs, err);
    if (rc != MARBLE_OK) goto fail;
    if (rs.torn_tail)
        marble_log(MARBLE_LOG_WARN, LOG_MODULE,
                   "%s: dropped a torn WAL tail (%" PRIu64 " bytes at offset %" PRIu64
                   " of segment %" PRIu64 "): a write that was never acknowledged",
                   db->uri, rs.torn_bytes, rs.torn_offset, rs.torn_segment);
    if (file_seq > rcx.max_seq) rcx.max_seq = file_seq;
    db->next_seq = rcx.max_seq + 1;
    atomic_init(&db->last_seq, rcx.max_seq);
    marble__wal_options wo = {(marble__wal_sync_mode)o.sync, o.wal_segment_size, 0};
    rc = marble__wal_open(db->fs, wal_uri, &wo, &db->wal, err);
    if (rc != MARBLE_OK) goto fail;
    /* replayed entries live in segments below the new one */
    db->mem->wal_segment = marble__wal_current_segment(db->wal) - 1;

    /* SSTables no version references (an interrupted flush or compaction) */
    garbage_ctx g = {db, db->uri, NULL, 0, 0};
    marble__manifest_live_files(db->manifest, collect_live, &g);
    for (size_t i = 0; i < g.n_live; i++) /* never hand out a live file's number again */
        if (g.live[i] >= atomic_load_explicit(&db->next_file, memory_order_relaxed))
            atomic_store_explicit(&db->next_file, g.live[i] + 1, memory_order_relaxed);
    marble_fs_list(db->fs, db->uri, remove_garbage_file, &g, NULL);
    if (db->cache_uri) { /* cached copies of SSTables no longer live */
        g.dir = db->cache_uri;
        marble_fs_list(db->fs, db->cache_uri, remove_garbage_file, &g, NULL);
    }
    free(g.live);

    marble_group_init(&db->bg, db->sched, NULL);
    group_inited = 1;
    db->bg_ready = 1;
    /* a replay larger than the write buffer is flushed now, in the background */
    if (marble__memtable_count(db->mem->mt) > 0 &&
        marble__memtable_used_bytes(db->mem->mt) >= o.write_buffer_size) {
        pthread_mutex_lock(&db->wmu);
        rc = make_room(db, err);
        pthread_mutex_unlock(&db->wmu);
        if (rc != MARBLE_OK) goto fail;
    }
    maybe_schedule(db);
    *out = db;
    return MARBLE_OK;
fail:
    db_teardown(db, group_inited);
    return rc;
}

int marble_db_close(marble_db *db, marble_error *err)
{
    if (!db) return MARBLE_OK;
    pthread_mutex_lock(&db->mu);
    char live[200];
    size_t nlive = marble__db_res_describe(db, live, sizeof live);
    if (nlive) {
        pthread_mutex_unlock(&db->mu);
        return marble_error_set(err, MARBLE_ERR_BUSY,
                                "database %s: %zu resource(s) still live (%s); release them (or "
                                "let the jobs finish) before closing",
                                db->uri, nlive, live);
    }
    db->closing = 1;
    while (db->flush_running || db->compactions_running)
        pthread_cond_wait(&db->cv, &db->mu);
    pthread_mutex_unlock(&db->mu);
    marble_group_wait(&db->bg, NULL);
    marble_group_destroy(&db->bg);
    int rc = MARBLE_OK;
    marble_error e = {0};
    if (db->wal) rc = marble__wal_close(db->wal, &e);
    db->wal = NULL;
    marble__version_unref(db->current);
    db->current = NULL;
    int rc2 = db->manifest ? marble__manifest_close(db->manifest, rc == MARBLE_OK ? &e : NULL)
                           : MARBLE_OK;
    db->manifest = NULL;
    if (rc == MARBLE_OK) rc = rc2;
    if (rc != MARBLE_OK && err) *err = e;
    db_teardown(db, 0);
    return rc;
}

/* ---- maintenance ------------------------------------------------------------------------------
 */

static int bg_error_status(marble_db *db, marble_error *err)
{
    if (!db->bg_error) return MARBLE_OK;
    return marble_error_set(err, db->bg_error, "background work failed: %s", db->bg_err.message);
}

int marble_db_flush(marble_db *db, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    pthread_mutex_lock(&db->wmu);
    pthread_mutex_lock(&db->mu);
    int rc = bg_error_status(db, err);
    while (rc == MARBLE_OK && db->n_imm >= MARBLE__MAX_IMM)
        pthread_cond_wait(&db->cv, &db->mu);
    int rotate = rc == MARBLE_OK && marble__memtable_count(db->mem->mt) > 0;
    pthread_mutex_unlock(&db->mu);
    if (rotate) { /* the roll does I/O: without mu, wmu keeps writers out */
        marble__memref *fresh = NULL;
        uint64_t old_seg = 0;
        rc = memref_new(db, &fresh, err);
        if (rc == MARBLE_OK) rc = marble__wal_roll(db->wal, &old_seg, err);
        if (rc == MARBLE_OK) {
            pthread_mutex_lock(&db->mu);
            db->mem->wal_segment = old_seg;
            db->mem->max_seq = db->next_seq - 1;
            db->imm[db->n_imm++] = db->mem;
            db->mem = fresh;
            pthread_mutex_unlock(&db->mu);
        } else {
            marble__memref_unref(fresh);
        }
    }
    pthread_mutex_unlock(&db->wmu);
    if (rc != MARBLE_OK) return rc;
    maybe_schedule(db);
    pthread_mutex_lock(&db->mu);
    while ((db->n_imm > 0 || db->flush_running) && !db->bg_error)
        pthread_cond_wait(&db->cv, &db->mu);
    rc = bg_error_status(db, err);
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int marble_db_wait_idle(marble_db *db, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    for (;;) {
        maybe_schedule(db);
        pthread_mutex_lock(&db->mu);
        while ((db->n_imm > 0 || db->flush_running || db->compactions_running) && !db->bg_error)
            pthread_cond_wait(&db->cv, &db->mu);
        int rc = bg_error_status(db, err);
        int more = rc == MARBLE_OK && !db->opts.disable_auto_compaction && needs_compaction(db);
        pthread_mutex_unlock(&db->mu);
        if (!more) return rc;
    }
}

/* Moves every file of the table into one level: the deepest level holding any of its files (at
 * least L1), pushing the levels above it down from the deepest up, so that no level between an
 * input level and the output holds the table's files (newer data never lands below older). */
static int compact_table(marble_db *db, uint32_t id, int threads, manual_ctx *m,
                         marble_error *err)
{
    marble__version *v = marble__manifest_current(db->manifest);
    int target = 1;
    for (int l = 1; l < MARBLE__NUM_LEVELS; l++)
        for (size_t i = 0; i < marble__version_num_files(v, l); i++)
            if (marble__prefix_get(marble__version_file(v, l, i)->smallest) == id) target = l;
    marble__version_unref(v);
    int moved = 0;
    for (int level = target - 1; level >= 0; level--) {
        v = marble__manifest_current(db->manifest);
        marble__compaction *c = NULL;
        int rc = marble__compaction_pick_level(v, id, level, target, NULL, NULL, &c, err);
        marble__version_unref(v);
        if (rc != MARBLE_OK) return rc;
        if (!c) continue;
        c->manual = 1;
        if (marble_cancel_token_is_cancelled(m->cancel))
            rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "compaction of %s: cancelled",
                                  db->uri);
        else
            rc = run_compaction(db, c, threads, m, err);
        marble__compaction_free(c);
        if (rc != MARBLE_OK) return rc;
        moved = 1;
    }
    if (moved) return MARBLE_OK;
    /* a lone level still holding tombstones or shadowed versions is rewritten in place */
    v = marble__manifest_current(db->manifest);
    marble__compaction *c = NULL;
    int rc = marble__compaction_pick_level(v, id, target, target, NULL, NULL, &c, err);
    marble__version_unref(v);
    if (rc == MARBLE_OK && c) {
        c->manual = 1;
        rc = run_compaction(db, c, threads, m, err);
    }
    marble__compaction_free(c);
    return rc;
}

void marble_compact_options_init(marble_compact_options *o)
{
    if (o) memset(o, 0, sizeof *o);
}

int marble_db_compact(marble_db *db, const char *table, marble_error *err)
{
    return marble_db_compact_ex(db, table, NULL, err);
}

int marble_db_compact_ex(marble_db *db, const char *table, const marble_compact_options *o,
                         marble_error *err)
{
    marble_compact_options defaults;
    if (!o) {
        marble_compact_options_init(&defaults);
        o = &defaults;
    }
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (o->threads < 0 || o->threads > 256)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "compaction threads must be 0..256 (got %d)", o->threads);
    int threads = o->threads ? o->threads : marble_sched_threads(db->sched);
    uint32_t only = 0;
    if (table) {
        marble__table *t = marble__db_find_table(db, table);
        if (!t) return marble__db_table_error(table, err);
        only = t->id;
        marble__table_unref(t);
    }
    MARBLE_RETURN_NOT_OK(marble_db_flush(db, err));
    pthread_mutex_lock(&db->mu);
    while (db->manual_compaction)
        pthread_cond_wait(&db->cv, &db->mu);
    db->manual_compaction = 1;
    while (db->compactions_running)
        pthread_cond_wait(&db->cv, &db->mu);
    uint32_t ids[4096];
    size_t n = 0;
    for (size_t i = 0; i < db->n_tables && n < 4096; i++)
        if (!only || db->tables[i]->id == only) ids[n++] = db->tables[i]->id;
    pthread_mutex_unlock(&db->mu);
    manual_ctx m = {.cancel = o->cancel, .progress = o->progress, .progress_ud = o->progress_ud};
    pthread_mutex_init(&m.mu, NULL);
    int rc = MARBLE_OK;
    for (size_t i = 0; rc == MARBLE_OK && i < n; i++)
        rc = compact_table(db, ids[i], threads, &m, err);
    pthread_mutex_destroy(&m.mu);
    pthread_mutex_lock(&db->mu);
    db->manual_compaction = 0;
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
    maybe_schedule(db);
    return rc;
}

/* ---- statistics -------------------------------------------------------------------------------
 */

typedef struct jbuf {
    char *p;
    size_t len, cap;
    int oom;
} jbuf;

static void MARBLE_PRINTF(2, 3) jprintf(jbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))

int marble_db_stats_json(marble_db *db, char **json, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(check_db(db, err));
    if (!json) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "json is NULL");
    jbuf b = {malloc(1024), 0, 1024, 0};
    if (!b.p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    b.p[0] = 0;
    marble__version *v = marble__manifest_current(db->manifest);
    jprintf(&b, "{\"levels\":[");
    uint64_t total_bytes = 0;
    for (int l = 0; l < MARBLE__NUM_LEVELS; l++) {
        uint64_t bytes = 0, rows = 0;
        size_t n = marble__version_num_files(v, l);
        for (size_t i = 0; i < n; i++) {
            bytes += marble__version_file(v, l, i)->size;
            rows += marble__version_file(v, l, i)->rows;
        }
        total_bytes += bytes;
        jprintf(&b, "%s{\"level\":%d,\"files\":%zu,\"bytes\":%llu,\"rows\":%llu}", l ? "," : "", l,
                n, (unsigned long long)bytes, (unsigned long long)rows);
    }
    marble__version_unref(v);
    uint64_t user = LOAD(db->st_user_bytes);
    uint64_t written = LOAD(db->st_bytes_flushed) + LOAD(db->st_bytes_compacted_written);
    marble__wal_stats ws = {0};
    if (db->wal) marble__wal_get_stats(db->wal, &ws);
    marble_handle_pool_stats ps = {0};
    marble_handle_pool_get_stats(db->pool, &ps);
    marble__sst_stats ss = {0};
    marble__sst_get_stats(&ss);
    pthread_mutex_lock(&db->mu);
    size_t n_imm = db->n_imm, mem_bytes = marble__memtable_bytes(db->mem->mt);
    size_t mem_count = marble__memtable_count(db->mem->mt);
    size_t imm_bytes = 0;
    for (size_t i = 0; i < db->n_imm; i++)
        imm_bytes += marble__memtable_bytes(db->imm[i]->mt);
    long snaps = db->live_snapshots;
    int max_seen = db->max_compactions_seen;
    pthread_mutex_unlock(&db->mu);
    jprintf(&b,
            "],\"sst_bytes\":%llu,\"latest_sequence\":%llu,"
            "\"memtable\":{\"bytes\":%zu,\"entries\":%zu,\"immutable\":%zu,"
            "\"immutable_bytes\":%zu},"
            "\"writes\":{\"rows\":%llu,\"user_bytes\":%llu,\"stalls\":%llu,\"stall_ms\":%.3f,"
            "\"slowdowns\":%llu},"
            "\"flushes\":%llu,\"flushed_bytes\":%llu,\"compactions\":%llu,"
            "\"compaction_read_bytes\":%llu,\"compaction_written_bytes\":%llu,"
            "\"write_amplification\":%.3f,"
            "\"wal\":{\"appends\":%llu,\"writes\":%llu,\"syncs\":%llu,\"rolls\":%llu},"
            "\"handle_pool\":{\"hits\":%llu,\"misses\":%llu,\"evictions\":%llu,\"open\":%zu},"
            "\"sst\":{\"batch_reads\":%llu,\"bloom_checks\":%llu,\"bloom_useful\":%llu,"
            "\"bloom_false_positives\":%llu},"
            "\"reads\":{\"gets\":%llu,\"scans\":%llu},\"snapshots\":%ld,"
            "\"max_concurrent_compactions\":%d,"
            "\"memory\":{\"budget\":%llu,\"used\":%llu,\"peak\":%llu}}",
            (unsigned long long)total_bytes,
            (unsigned long long)atomic_load_explicit(&db->last_seq, memory_order_acquire),
            mem_bytes, mem_count, n_imm, imm_bytes, LOAD(db->st_rows_written),
            (unsigned long long)user, LOAD(db->st_stalls), (double)LOAD(db->st_stall_ns) / 1e6,
            LOAD(db->st_slowdowns), LOAD(db->st_flushes), LOAD(db->st_bytes_flushed),
            LOAD(db->st_compactions), LOAD(db->st_bytes_compacted_read),
            LOAD(db->st_bytes_compacted_written),
            user ? (double)(written + user) / (double)user : 0.0, (unsigned long long)ws.appends,
            (unsigned long long)ws.writes, (unsigned long long)ws.syncs,
            (unsigned long long)ws.rolls, (unsigned long long)ps.hits,
            (unsigned long long)ps.misses, (unsigned long long)ps.evictions, ps.open,
            (unsigned long long)ss.batch_reads, (unsigned long long)ss.bloom_checks,
            (unsigned long long)ss.bloom_negatives, (unsigned long long)ss.bloom_false_positives,
            LOAD(db->st_gets), LOAD(db->st_scans), snaps, max_seen,
            (unsigned long long)marble_mem_budget_limit(db->budget),
            (unsigned long long)marble_mem_budget_used(db->budget),
            (unsigned long long)marble_mem_budget_peak(db->budget));
    if (b.oom) {
        free(b.p);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    *json = b.p;
    return MARBLE_OK;
}

typedef struct size_ctx {
    marble_db *db;
    uint64_t total;
    const char *dir;
} size_ctx;

static int add_size(void *ud, const char *name, int is_dir)
{
    size_ctx *c = ud;
    if (is_dir) return 0;
    char uri[4096];
    snprintf(uri, sizeof uri, "%s/%s", c->dir, name);
    marble_stat st;
    if (marble_fs_stat(c->db->fs, uri, &st, NULL) == MARBLE_OK) c->total += st.size;
    return 0;
}

uint64_t marble_db_disk_size(marble_db *db)
{
    if (!db) return 0;
    size_ctx c = {db, 0, db->uri};
    marble_fs_list(db->fs, db->uri, add_size, &c, NULL);
    char wal[4096];
    if (db->opts.wal_uri)
        snprintf(wal, sizeof wal, "%s", db->opts.wal_uri);
    else
        snprintf(wal, sizeof wal, "%s/wal", db->uri);
    c.dir = wal;
    marble_fs_list(db->fs, wal, add_size, &c, NULL);
    return c.total;
}

/* ---- helpers for bulk ingestion (ingest.c) ----------------------------------------------------
 */

uint64_t marble__db_new_file_number(marble_db *db)
{
    return new_file_number(db);
}

char *marble__db_file_uri(const marble_db *db, uint64_t number)
{
    return file_uri(db, number);
}

void marble__db_sst_options(const marble_db *db, marble__sst_options *o)
{
    sst_options(db, o);
}

int marble__db_apply_edit_locked(marble_db *db, marble__version_edit *e, marble_error *err)
{
    return apply_edit(db, e, 1, 0, err);
}

void marble__db_maybe_schedule(marble_db *db)
{
    maybe_schedule(db);
}

/* ---- secondary indexes (index_build.c) --------------------------------------------------------
 */

void marble__db_index_options(marble_db *db, const marble__table *t, marble__sst_options *o)
{
    pthread_mutex_lock(&db->mu);
    o->n_indexed_columns = t->n_indexes;
    memcpy(o->indexed_columns, t->indexes, sizeof(int) * (size_t)t->n_indexes);
    pthread_mutex_unlock(&db->mu);
}

int marble__db_catalog_apply_locked(marble_db *db, marble_error *err)
{
    marble__version_edit e;
    marble__edit_init(&e);
    int rc = catalog_edit(db, &e, err);
    if (rc == MARBLE_OK) rc = apply_edit(db, &e, 1, 0, err);
    marble__edit_free(&e);
    return rc;
}
