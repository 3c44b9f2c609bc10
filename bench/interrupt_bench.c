/* marble-bench interrupt: how fast long operations stop when their marble_cancel_token is
 * cancelled. Each operation runs on a thread of its own; the main thread cancels its token after
 * a random delay (within the operation's uncancelled duration) and measures the time from the
 * cancel to the call (or the result stream) returning. After every trial the database must still
 * read back correctly, and after the last one it must reopen and hold every row. */
#include "bench_query.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "marble/query.h"

typedef struct options {
    int json;
    int64_t rows;
    int trials;
    uint64_t seed;
    const char *dir;
    const char *only; /* NULL: every op; else a comma-separated list */
} options;

enum op_kind { OP_QUERY, OP_COMPACT, OP_IMPORT, OP_EXPORT };

typedef struct op_desc {
    const char *name;
    enum op_kind kind;
    const char *sql; /* OP_QUERY */
} op_desc;

static const op_desc ops[] = {
    {"query_aggregate", OP_QUERY, "SELECT s, sum(v), count(*), min(id), max(id) FROM t GROUP BY s"},
    {"query_sort", OP_QUERY, "SELECT id, v, s FROM t ORDER BY v DESC, id"},
    {"compaction", OP_COMPACT, NULL},
    {"import", OP_IMPORT, NULL},
    {"export", OP_EXPORT, NULL},
};
#define N_OPS ((int)(sizeof ops / sizeof ops[0]))

/* compaction: before each trial every COMPACT_STRIDE-th row is written again (same values) and
 * flushed, so the manual compaction has an L0 file to merge into the whole table; automatic
 * compaction is off, and every COMPACT_RESET cancelled trials a full compaction (not timed)
 * clears the L0 files that cancelled ones left. */
#define COMPACT_STRIDE 8
#define COMPACT_RESET 8
/* import: each completed import adds an L0 file holding the whole table again; a full
 * compaction (not timed) merges them away after IMPORT_RESET completions. */
#define IMPORT_RESET 4

typedef struct trial {
    marble_db *db;
    const op_desc *op;
    const char *import_uri, *export_uri;
    marble_cancel_token *cancel;
    atomic_int done;
    double end;
    int code; /* MARBLE_OK (finished), MARBLE_ERR_CANCELLED, or another failure */
    char msg[1024];
} trial;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void run_query(trial *t)
{
    struct ArrowArrayStream st = {0};
    marble_query_options qo;
    marble_error e;
    memset(&qo, 0, sizeof qo);
    marble_query_options_init(&qo);
    qo.cancel = t->cancel;
    t->code = marble_db_query_sql(t->db, t->op->sql, &qo, &st, NULL, &e);
    if (t->code) {
        snprintf(t->msg, sizeof t->msg, "%s", e.message);
        return;
    }
    for (;;) {
        struct ArrowArray a = {0};
        int src = st.get_next(&st, &a);
        if (src) {
            const char *m = st.get_last_error(&st);
            t->code = marble_stream_last_code(&st);
            if (!t->code) t->code = MARBLE_ERR_IO;
            snprintf(t->msg, sizeof t->msg, "%s", m ? m : strerror(src));
            break;
        }
        if (!a.release) break;
        marble_arrow_array_release(&a);
    }
    st.release(&st);
}

static void *op_thread(void *arg)
{
    trial *t = arg;
    marble_error e;
    switch (t->op->kind) {
    case OP_QUERY:
        run_query(t);
        break;
    case OP_COMPACT: {
        marble_compact_options co;
        marble_compact_options_init(&co);
        co.cancel = t->cancel;
        t->code = marble_db_compact_ex(t->db, "t", &co, &e);
        if (t->code) snprintf(t->msg, sizeof t->msg, "%s", e.message);
        break;
    }
    case OP_IMPORT: {
        marble_import_options io;
        marble_import_options_init(&io);
        io.ingest.cancel = t->cancel;
        t->code = marble_db_import_file(t->db, "t", t->import_uri, &io, NULL, &e);
        if (t->code) snprintf(t->msg, sizeof t->msg, "%s", e.message);
        break;
    }
    case OP_EXPORT: {
        marble_export_options eo;
        marble_export_options_init(&eo);
        eo.cancel = t->cancel;
        t->code = marble_db_export_table(t->db, "t", t->export_uri, &eo, NULL, &e);
        if (t->code) snprintf(t->msg, sizeof t->msg, "%s", e.message);
        break;
    }
    }
    t->end = bq_now();
    atomic_store_explicit(&t->done, 1, memory_order_release); /* publishes end, code, msg */
    return NULL;
}

typedef struct op_state {
    const char *import_uri, *export_uri;
    int since_reset; /* compaction: cancelled runs since the last full compaction; import:
                        completed ones */
} op_state;

/* Untimed set-up before a run of op. */
static int prepare(marble_db *db, const options *o, const op_desc *op, op_state *st, char *err,
                   size_t errlen)
{
    marble_error e;
    int reset = op->kind == OP_COMPACT  ? st->since_reset >= COMPACT_RESET
                : op->kind == OP_IMPORT ? st->since_reset >= IMPORT_RESET
                                        : 0;
    if (reset) {
        if (marble_db_compact(db, "t", &e)) {
            snprintf(err, errlen, "marble_db_compact: %s", e.message);
            return -1;
        }
        st->since_reset = 0;
    }
    if (op->kind == OP_COMPACT) return bq_rewrite(db, o->rows, COMPACT_STRIDE, err, errlen);
    if (op->kind == OP_EXPORT) remove(st->export_uri);
    return 0;
}

/* What must hold after a run: a random row reads back; a cancelled export left no file. */
static int check_after(marble_db *db, const options *o, const op_desc *op, op_state *st, int code,
                       uint64_t *rng, char *err, size_t errlen)
{
    if (op->kind == OP_COMPACT && code == MARBLE_ERR_CANCELLED) st->since_reset++;
    if (op->kind == OP_IMPORT && code == MARBLE_OK) st->since_reset++;
    if (op->kind == OP_EXPORT && code == MARBLE_ERR_CANCELLED) {
        FILE *f = fopen(st->export_uri, "rb");
        if (f) {
            fclose(f);
            snprintf(err, errlen, "a cancelled export left its file %s", st->export_uri);
            return -1;
        }
    }
    return bq_check_row(db, (int64_t)(rng_next(rng) % (uint64_t)o->rows), err, errlen);
}

/* One run of op; cancel_after < 0: not cancelled. *latency: seconds from cancel to return. */
static int run_once(marble_db *db, const op_desc *op, const op_state *st, double cancel_after,
                    int *code, double *latency, double *duration, char *err, size_t errlen)
{
    trial t;
    memset(&t, 0, sizeof t);
    t.db = db;
    t.op = op;
    t.import_uri = st->import_uri;
    t.export_uri = st->export_uri;
    marble_error e;
    if (marble_cancel_token_create(NULL, &t.cancel, &e)) {
        snprintf(err, errlen, "cancel token: %s", e.message);
        return -1;
    }
    pthread_t th;
    double start = bq_now();
    if (pthread_create(&th, NULL, op_thread, &t)) {
        marble_cancel_token_destroy(t.cancel);
        snprintf(err, errlen, "pthread_create failed");
        return -1;
    }
    double cancelled_at = -1.0;
    if (cancel_after >= 0) {
        struct timespec ts = {(time_t)cancel_after,
                              (long)((cancel_after - (double)(time_t)cancel_after) * 1e9)};
        while (nanosleep(&ts, &ts) && errno == EINTR) {
        }
        if (!atomic_load_explicit(&t.done, memory_order_acquire)) {
            cancelled_at = bq_now();
            marble_cancel_token_cancel(t.cancel);
        }
    }
    pthread_join(th, NULL);
    marble_cancel_token_destroy(t.cancel);
    *code = t.code;
    *duration = t.end - start;
    *latency = cancelled_at >= 0 ? t.end - cancelled_at : -1.0;
    if (t.code && t.code != MARBLE_ERR_CANCELLED) {
        snprintf(err, errlen, "%s", t.msg);
        return -1;
    }
    if (t.code == MARBLE_ERR_CANCELLED && cancelled_at < 0) {
        snprintf(err, errlen, "reported cancelled without a cancel: %s", t.msg);
        return -1;
    }
    return 0;
}

static int op_chosen(const options *o, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = o->only; p && *p;) {
        size_t n = strcspn(p, ",");
        if (n == len && !strncmp(p, name, n)) return 1;
        p += n + (p[n] == ',');
    }
    return o->only == NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double p)
{
    int i = (int)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

static int bench_op(marble_db *db, const options *o, const op_desc *op, const char *dir,
                    uint64_t *rng)
{
    char import_uri[4200], export_uri[4200];
    snprintf(import_uri, sizeof import_uri, "%s/import.arrow", dir);
    snprintf(export_uri, sizeof export_uri, "%s/export.arrow", dir);
    op_state st = {import_uri, export_uri, 0};
    char err[2048];
    int code;
    double lat, dur, full = 1e9;
    if (op->kind == OP_IMPORT) {
        marble_error e;
        if (marble_db_export_table(db, "t", import_uri, NULL, NULL, &e)) {
            fprintf(stderr, "marble-bench interrupt: import: exporting its input: %s\n", e.message);
            return 1;
        }
    }
    for (int w = 0; w < 3; w++) {
        if (prepare(db, o, op, &st, err, sizeof err) ||
            run_once(db, op, &st, -1.0, &code, &lat, &dur, err, sizeof err) ||
            check_after(db, o, op, &st, code, rng, err, sizeof err)) {
            fprintf(stderr, "marble-bench interrupt: %s: failed: %s\n", op->name, err);
            if (o->json) {
                printf("{\"op\":\"%s\",\"skipped\":\"failed: ", op->name);
                for (const char *p = err; *p; p++)
                    if (*p == '"' || *p == '\\')
                        printf("\\%c", *p);
                    else if ((unsigned char)*p >= 0x20)
                        putchar(*p);
                printf("\"}\n");
            } else {
                printf("%-16s failed (see stderr)\n", op->name);
            }
            fflush(stdout);
            return 1;
        }
        if (dur < full) full = dur;
    }
    double *lats = malloc((size_t)o->trials * sizeof(double));
    if (!lats) return 1;
    int n = 0, finished = 0, rc = 1;
    while (n < o->trials) {
        double delay = full * 0.9 * (double)(rng_next(rng) % 1000000) / 1e6;
        if (prepare(db, o, op, &st, err, sizeof err)) {
            fprintf(stderr, "marble-bench interrupt: %s: before trial %d: %s\n", op->name, n, err);
            goto done;
        }
        if (run_once(db, op, &st, delay, &code, &lat, &dur, err, sizeof err)) {
            fprintf(stderr, "marble-bench interrupt: %s: trial %d: %s\n", op->name, n, err);
            goto done;
        }
        if (check_after(db, o, op, &st, code, rng, err, sizeof err)) {
            fprintf(stderr, "marble-bench interrupt: %s: after trial %d: %s\n", op->name, n, err);
            goto done;
        }
        if (code == MARBLE_OK) {
            if (++finished > 10 * o->trials) {
                fprintf(stderr,
                        "marble-bench interrupt: %s: the operation keeps finishing before "
                        "its cancel\n",
                        op->name);
                goto done;
            }
            continue;
        }
        lats[n++] = lat;
    }
    if (op->kind == OP_IMPORT && st.since_reset) {
        marble_error e;
        if (marble_db_compact(db, "t", &e)) {
            fprintf(stderr, "marble-bench interrupt: import: compacting after: %s\n", e.message);
            goto done;
        }
    }
    remove(import_uri);
    remove(export_uri);
    qsort(lats, (size_t)n, sizeof *lats, cmp_double);
    double p50 = pct(lats, n, 0.50) * 1e3, p99 = pct(lats, n, 0.99) * 1e3, mx = lats[n - 1] * 1e3;
    if (o->json)
        printf("{\"op\":\"%s\",\"trials\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
               "\"uncancelled_ms\":%.1f,\"finished_first\":%d,\"target_p99_ms\":50,"
               "\"consistent\":true}\n",
               op->name, n, p50, p99, mx, full * 1e3, finished);
    else
        printf("%-16s %7d %10.3f %10.3f %10.3f %14.1f %8d  %s\n", op->name, n, p50, p99, mx,
               full * 1e3, finished, p99 < 50.0 ? "ok" : "OVER 50 ms");
    fflush(stdout);
    rc = 0;
done:
    free(lats);
    return rc;
}

/* Every row is there and right: a full scan through marble_db_scan. */
static int verify_all(marble_db *db, int64_t rows, char *err, size_t errlen)
{
    struct ArrowArrayStream st = {0};
    marble_error e;
    if (marble_db_scan(db, "t", NULL, NULL, &st, &e)) {
        snprintf(err, errlen, "marble_db_scan: %s", e.message);
        return -1;
    }
    struct ArrowSchema s = {0};
    int rc = -1;
    int64_t next = 0;
    if (st.get_schema(&st, &s)) {
        snprintf(err, errlen, "scan schema: %s", st.get_last_error(&st));
        goto done;
    }
    for (;;) {
        struct ArrowArray a = {0};
        if (st.get_next(&st, &a)) {
            snprintf(err, errlen, "scan: %s", st.get_last_error(&st));
            goto done;
        }
        if (!a.release) break;
        for (int64_t i = 0; i < a.length; i++, next++) {
            int64_t id = marble_arrow_get_int(s.children[0], a.children[0], i);
            double v = marble_arrow_get_double(s.children[2], a.children[2], i);
            if (id != next || v != bq_v(id)) {
                snprintf(err, errlen, "scan: row %" PRId64 " is id %" PRId64 " v %.17g", next, id,
                         v);
                marble_arrow_array_release(&a);
                goto done;
            }
        }
        marble_arrow_array_release(&a);
    }
    if (next != rows) {
        snprintf(err, errlen, "scan: %" PRId64 " rows, expected %" PRId64, next, rows);
        goto done;
    }
    rc = 0;
done:
    marble_arrow_schema_release(&s);
    st.release(&st);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: marble-bench interrupt [options]\n"
            "\n"
            "Cancellation latency of long operations over the table of marble-bench query\n"
            "(bench/bench_query.h): each runs on a thread, its marble_cancel_token is cancelled\n"
            "after a random delay within its uncancelled duration, and the time from the\n"
            "cancel to the call or stream returning is measured (trials that finish first are\n"
            "run again). After each trial a random row is read back; after all, the database\n"
            "is reopened and scanned whole. Target: p99 < 50 ms.\n"
            "  query_aggregate  SELECT s, sum(v), count(*), min(id), max(id) FROM t GROUP BY s\n"
            "  query_sort       SELECT id, v, s FROM t ORDER BY v DESC, id\n"
            "  compaction       marble_db_compact_ex of t after every 8th row was written again\n"
            "                   and flushed (automatic compaction off)\n"
            "  import           marble_db_import_file of an Arrow IPC file of the whole table\n"
            "                   (exported first), into t itself (same rows)\n"
            "  export           marble_db_export_table of t to an Arrow IPC file\n"
            "\n"
            "options:\n"
            "  --json          one JSON object per line\n"
            "  --rows N        rows of t (default 1000000)\n"
            "  --trials T      cancelled trials per operation (default 50)\n"
            "  --seed S        random delays' seed (default 1)\n"
            "  --dir DIR       where the database goes (default $TMPDIR, else /tmp)\n"
            "  --ops LIST      operations to run, comma-separated (default all)\n");
}

static int parse_args(int argc, char **argv, options *o)
{
    const char *tmp = getenv("TMPDIR");
    *o = (options){0, 1000000, 50, 1, tmp && *tmp ? tmp : "/tmp", NULL};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        char *end = NULL;
        long long n = v ? strtoll(v, &end, 10) : 0;
        int num_ok = v && *v && end && !*end;
        if (!strcmp(a, "--rows") && num_ok && n >= 1000 && n <= 1000000000) {
            o->rows = n;
        } else if (!strcmp(a, "--trials") && num_ok && n >= 1 && n <= 100000) {
            o->trials = (int)n;
        } else if (!strcmp(a, "--seed") && num_ok && n >= 0) {
            o->seed = (uint64_t)n;
        } else if (!strcmp(a, "--dir") && v && *v) {
            o->dir = v;
        } else if (!strcmp(a, "--ops") && v && *v) {
            o->only = v;
        } else {
            fprintf(stderr,
                    "marble-bench interrupt: bad option '%s'%s%s (see marble-bench "
                    "interrupt --help)\n",
                    a, v ? " " : "", v ? v : "");
            return 2;
        }
    }
    return 0;
}

int bench_interrupt_area(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    char dir[4096], err[2048];
    marble_db *db = NULL;
    marble_error e;
    if (bq_mkdtemp(o.dir, "interrupt", dir, sizeof dir)) return 1;
    for (const char *p = o.only; p && *p;) {
        size_t n = strcspn(p, ",");
        int known = 0;
        for (int i = 0; i < N_OPS; i++)
            known |= strlen(ops[i].name) == n && !strncmp(p, ops[i].name, n);
        if (!known) {
            fprintf(stderr,
                    "marble-bench interrupt: unknown op '%.*s' (query_aggregate, "
                    "query_sort, compaction, import, export)\n",
                    (int)n, p);
            bq_rmtree(dir);
            return 2;
        }
        p += n + (p[n] == ',');
    }
    rc = 1;
    double t0 = bq_now();
    if (bq_open(dir, 0, &db, err, sizeof err) ||
        bq_load(db, o.rows, 65536, NULL, err, sizeof err)) {
        fprintf(stderr, "marble-bench interrupt: %s\n", err);
        goto cleanup;
    }
    if (marble_db_compact(db, "t", &e)) {
        fprintf(stderr, "marble-bench interrupt: marble_db_compact: %s\n", e.message);
        goto cleanup;
    }
    if (!o.json)
        printf("marble-bench interrupt: %" PRId64 " rows loaded and compacted in %.1f s; %d "
               "cancelled trials per operation\n\n%-16s %7s %10s %10s %10s %14s %8s\n",
               o.rows, bq_now() - t0, o.trials, "op", "trials", "p50 ms", "p99 ms", "max ms",
               "uncancelled ms", "finished");
    uint64_t rng = o.seed;
    int failed = 0;
    for (int i = 0; i < N_OPS; i++)
        if (op_chosen(&o, ops[i].name)) failed |= bench_op(db, &o, &ops[i], dir, &rng);
    if (marble_db_close(db, &e)) {
        db = NULL;
        fprintf(stderr, "marble-bench interrupt: close: %s\n", e.message);
        goto cleanup;
    }
    db = NULL;
    if (bq_open(dir, 1, &db, err, sizeof err) || verify_all(db, o.rows, err, sizeof err)) {
        fprintf(stderr, "marble-bench interrupt: after reopening: %s\n", err);
        goto cleanup;
    }
    if (!o.json)
        printf("\nfinished: trials whose operation completed before its cancel (run again). "
               "After every trial a random row read back right; after all, the reopened "
               "database held every row.\n");
    rc = failed;
cleanup:
    if (db) marble_db_close(db, NULL);
    bq_rmtree(dir);
    return rc;
}
