/* `marble demo`: the state store end to end on a streaming-state data set: create a table of
 * events keyed by (user_id, ts), load rows in Arrow batches with progress, flush and compact in
 * parallel, point gets, a prefix scan and a projected range scan, grouped aggregates through the
 * query engine, a query result exported to an Arrow file and read back, and the store's
 * statistics. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_util.h"
#include "marble/marble.h"

#define USERS 100000
#define BATCH 50000

static const char *const CATEGORIES[] = {"view",   "click", "cart",  "purchase",
                                         "search", "share", "login", "logout"};

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Event i: user, timestamp (us), category, amount, clicks; deterministic. */
static void event(uint64_t i, int64_t *user, int64_t *ts, int *cat, double *amount, int64_t *clicks)
{
    uint64_t h = mix(i);
    *user = (int64_t)(h % USERS);
    *ts = (int64_t)1767225600000000 + (int64_t)i * 1000; /* 2026-01-01, one event per ms */
    *cat = (int)((h >> 20) % 8);
    *amount = (double)((h >> 32) % 100000) / 100.0;
    *clicks = (int64_t)((h >> 48) % 20);
}

static double secs(uint64_t t0)
{
    return (double)(marble_now_ns() - t0) / 1e9;
}

static int fail(const char *what, const marble_error *err)
{
    fprintf(stderr, "marble demo: %s: %s\n", what, err->message);
    return 1;
}

static int parse_count(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = text ? strtoull(text, &end, 10) : 0;
    if (!text || errno || *end || end == text || text[0] == '-' || v < 1000 || v > 1000000000) {
        fprintf(stderr,
                "marble demo: --rows needs a whole number in [1000, 1000000000], got '%s'\n",
                text ? text : "(nothing)");
        return 2;
    }
    *out = v;
    return 0;
}

static int load(marble_db *db, uint64_t rows, const struct ArrowSchema *schema)
{
    marble_error err = {0};
    marble_batch_builder *b;
    if (marble_batch_builder_create(schema, &b, &err)) return fail("builder", &err);
    int tty = isatty(2);
    uint64_t t0 = marble_now_ns();
    for (uint64_t i = 0; i < rows; i++) {
        int64_t user, ts, clicks;
        int cat;
        double amount;
        event(i, &user, &ts, &cat, &amount, &clicks);
        const char *c = CATEGORIES[cat];
        if (marble_builder_append_int(b, 0, user, &err) ||
            marble_builder_append_int(b, 1, ts, &err) ||
            marble_builder_append_bytes(b, 2, c, strlen(c), &err) ||
            marble_builder_append_double(b, 3, amount, &err) ||
            marble_builder_append_int(b, 4, clicks, &err)) {
            marble_batch_builder_destroy(b);
            return fail("building a batch", &err);
        }
        if (marble_batch_builder_rows(b) == BATCH || i + 1 == rows) {
            struct ArrowArray a;
            int rc = marble_batch_builder_finish(b, &a, &err);
            if (rc == MARBLE_OK) rc = marble_db_put(db, "events", schema, &a, NULL, &err);
            marble_arrow_array_release(&a);
            if (rc != MARBLE_OK) {
                marble_batch_builder_destroy(b);
                return fail("loading events", &err);
            }
            if (tty) {
                double s = secs(t0), done = (double)(i + 1);
                double rate = s > 0 ? done / s : 0;
                fprintf(stderr,
                        "\r  loading  %5.1f%%  %10" PRIu64 " rows  %8.0f rows/s  ETA %4.0fs ",
                        100.0 * done / (double)rows, i + 1, rate,
                        rate > 0 ? ((double)rows - done) / rate : 0.0);
            }
        }
    }
    if (tty) fprintf(stderr, "\r%78s\r", "");
    marble_batch_builder_destroy(b);
    return 0;
}

/* Drains a stream, counting rows and summing a float64 column (col, or -1 for none). */
static int drain(struct ArrowArrayStream *st, int col, int64_t *rows, double *sum)
{
    struct ArrowSchema s;
    *rows = 0;
    *sum = 0;
    if (st->get_schema(st, &s) != 0) return 1;
    for (;;) {
        struct ArrowArray a;
        if (st->get_next(st, &a) != 0) {
            fprintf(stderr, "marble demo: scan: %s\n", st->get_last_error(st));
            marble_arrow_schema_release(&s);
            return 1;
        }
        if (!a.release) break;
        *rows += a.length;
        if (col >= 0)
            for (int64_t i = 0; i < a.length; i++)
                *sum += marble_arrow_get_double(s.children[col], a.children[col], i);
        marble_arrow_array_release(&a);
    }
    marble_arrow_schema_release(&s);
    return 0;
}

static void print_levels(const char *json)
{
    const char *p = strstr(json, "\"levels\":[");
    printf("  levels:");
    for (int l = 0; l < 7 && p; l++) {
        long long files = 0, bytes = 0, rows = 0;
        const char *q = strstr(p, "\"files\":");
        if (!q) break;
        sscanf(q, "\"files\":%lld,\"bytes\":%lld,\"rows\":%lld", &files, &bytes, &rows);
        if (files)
            printf("  L%d %lld files %.1f MiB %lld rows", l, files, (double)bytes / 1048576.0,
                   rows);
        p = q + 1;
    }
    printf("\n");
}

static void compact_progress(void *ud, uint64_t done, uint64_t total)
{
    cli_progress *bar = ud;
    bar->total = total;
    cli_progress_update(bar, done, total ? (double)done / (double)total : -1.0);
}

/* Runs a query and prints its result as an aligned table; *rows gets the row count. */
static int show_query(marble_db *db, const char *sql, int64_t *rows)
{
    marble_error err = {0};
    struct ArrowArrayStream st;
    marble_query_stats qs;
    memset(&qs, 0, sizeof qs);
    uint64_t t0 = marble_now_ns();
    if (marble_db_query_sql(db, sql, NULL, &st, &qs, &err)) return fail("query", &err);
    struct ArrowSchema s;
    if (st.get_schema(&st, &s) != 0) {
        fprintf(stderr, "marble demo: query: %s\n", st.get_last_error(&st));
        st.release(&st);
        return 1;
    }
    cli_writer *w = NULL;
    cli_out *o = NULL;
    int rc = 0;
    printf("\n  %s\n", sql);
    fflush(stdout);
    if (cli_writer_stdout(&w) || cli_out_begin(w, CLI_FMT_TABLE, &s, &o, &err)) {
        rc = fail("printing", &err);
    }
    while (!rc) {
        struct ArrowArray a;
        if (st.get_next(&st, &a) != 0) {
            fprintf(stderr, "marble demo: query: %s\n", st.get_last_error(&st));
            rc = 1;
            break;
        }
        if (!a.release) break;
        if (cli_out_batch(o, &a, &err)) rc = fail("printing", &err);
        marble_arrow_array_release(&a);
    }
    *rows = o ? cli_out_rows(o) : 0;
    if (!rc && cli_out_end(o, &err)) rc = fail("printing", &err);
    else if (rc) cli_out_free(o);
    if (w && cli_writer_close(w, &err) && !rc) rc = fail("printing", &err);
    double t = secs(t0);
    st.release(&st);
    marble_arrow_schema_release(&s);
    if (!rc)
        printf("  (%.3fs; %" PRId64 " of %" PRId64 " batches skipped by zone maps and key range, "
               "%" PRId64 " rows scanned)\n",
               t, qs.batches_skipped, qs.batches_total, qs.rows_scanned);
    return rc;
}

/* Grouped aggregates through the query engine, and a query result exported to an Arrow IPC file
 * that is then read back with the IPC reader (any Arrow tool opens it the same way). */
static int demo_queries(marble_db *db, const char *dir)
{
    marble_error err = {0};
    int64_t n;
    if (show_query(db,
                   "SELECT category, count(*) AS events, sum(amount) AS amount, avg(clicks) AS "
                   "avg_clicks FROM events GROUP BY category ORDER BY amount DESC",
                   &n))
        return 1;
    if (n != 8) {
        fprintf(stderr, "marble demo: expected 8 categories, got %" PRId64 "\n", n);
        return 1;
    }
    if (show_query(db,
                   "SELECT count(*) AS purchases, sum(amount) AS amount FROM events WHERE "
                   "user_id >= 1000 AND user_id < 2000 AND category = 'purchase'",
                   &n))
        return 1;

    const char *top = "SELECT user_id, count(*) AS purchases, sum(amount) AS spent FROM events "
                      "WHERE category = 'purchase' GROUP BY user_id ORDER BY spent DESC LIMIT 10";
    if (show_query(db, top, &n)) return 1;
    char out[4200];
    snprintf(out, sizeof out, "%s.top.arrow", dir);
    struct ArrowArrayStream st;
    uint64_t t0 = marble_now_ns();
    if (marble_db_query_sql(db, top, NULL, &st, NULL, &err)) return fail("query", &err);
    marble_export_options eo;
    marble_export_options_init(&eo);
    marble_export_stats es;
    memset(&es, 0, sizeof es);
    if (marble_export_stream(cli_fs(), &st, out, &eo, &es, &err)) return fail("export", &err);
    double t_export = secs(t0);
    void *data = NULL;
    size_t size = 0;
    if (cli_read_file(out, &data, &size, &err)) return fail("reading the export back", &err);
    marble_ipc_source src = {data, size, NULL, NULL, NULL};
    marble_ipc_reader *r = NULL;
    struct ArrowSchema s;
    int64_t back = 0;
    int rc = marble_ipc_reader_open(&src, &r, &err);
    if (rc == MARBLE_OK) rc = marble_ipc_reader_schema(r, &s, &err);
    for (int64_t b = 0; rc == MARBLE_OK && b < marble_ipc_reader_num_batches(r); b++) {
        struct ArrowArray a;
        rc = marble_ipc_reader_read(r, b, &a, &err);
        if (rc == MARBLE_OK) {
            back += a.length;
            marble_arrow_array_release(&a);
        }
    }
    if (rc != MARBLE_OK) {
        marble_ipc_reader_destroy(r);
        free(data);
        return fail("reading the export back", &err);
    }
    printf("\n  exported that result to %s (%" PRId64 " rows, %zu bytes, %.3fs) and read it\n"
           "  back as an Arrow IPC file: %" PRId64 " rows, columns",
           out, es.rows, size, t_export, back);
    for (int64_t c = 0; c < s.n_children; c++) {
        marble_arrow_type ty;
        char tb[96];
        const char *tn = "?";
        if (marble_arrow_type_parse(s.children[c]->format, &ty, NULL) == MARBLE_OK)
            tn = marble_arrow_type_name(&ty, tb, sizeof tb);
        printf("%s %s %s", c ? "," : "", s.children[c]->name, tn);
    }
    printf("\n  (open it with any Arrow tool, e.g. pyarrow.ipc.open_file or DuckDB's "
           "read_arrow)\n\n");
    marble_arrow_schema_release(&s);
    marble_ipc_reader_destroy(r);
    free(data);
    if (back != es.rows || back != n) {
        fprintf(stderr, "marble demo: the export holds %" PRId64 " rows, the query gave %" PRId64
                        "\n", back, n);
        return 1;
    }
    return 0;
}

int marble_cli_demo_db(int argc, char **argv)
{
    uint64_t rows = 5000000;
    const char *dir = "marble-demo.db";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows")) {
            if (parse_count(i + 1 < argc ? argv[++i] : NULL, &rows)) return 2;
        } else if (!strcmp(argv[i], "--dir")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "marble demo: --dir needs a path\n");
                return 2;
            }
            dir = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: marble demo [--rows N] [--dir PATH]\n"
                   "Creates a fresh database at PATH (default ./marble-demo.db, replaced if it\n"
                   "exists), loads N streaming events (default 5000000) keyed by (user_id, ts),\n"
                   "flushes and compacts in parallel, runs point gets, a prefix scan, a projected\n"
                   "range scan and grouped aggregates through the query engine, exports a query\n"
                   "result to PATH.top.arrow and reads it back, and prints timings and the\n"
                   "store's statistics.\n"
                   "example: marble demo --rows 500000 --dir /tmp/demo.db\n"
                   "(the scheduler demo is 'marble demo-sched')\n");
            return 0;
        } else {
            fprintf(stderr, "marble demo: unknown option '%s' (try 'marble demo --help')\n",
                    argv[i]);
            return 2;
        }
    }
    marble_error err = {0};
    /* a fresh database: remove the demo's own files from an earlier run */
    char cmd[4200];
    if (strlen(dir) > 4000 || strchr(dir, '\'')) {
        fprintf(stderr, "marble demo: --dir '%s' is not a usable path\n", dir);
        return 2;
    }
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "marble demo: cannot remove the old demo database %s\n", dir);
        return 1;
    }
    printf("marble %s state store demo: %" PRIu64 " events in %s\n", marble_version(), rows, dir);
    marble_db_options o;
    marble_db_options_init(&o);
    o.sync = MARBLE_SYNC_NONE; /* a bulk load; the WAL is still written */
    marble_db *db;
    uint64_t t0 = marble_now_ns();
    if (marble_db_open(dir, &o, &db, &err)) return fail("open", &err);
    struct ArrowSchema schema;
    if (marble_arrow_schema_parse(
            "user_id:int64!,ts:timestamp[us, tz=UTC]!,category:utf8,amount:float64,clicks:int64",
            &schema, &err))
        return fail("schema", &err);
    const char *key[] = {"user_id", "ts"};
    if (marble_db_create_table(db, "events", &schema, key, 2, &err)) return fail("create", &err);
    printf("  table events (user_id int64, ts timestamp[us], category utf8, amount float64, "
           "clicks int64), key (user_id, ts)\n");

    t0 = marble_now_ns();
    if (load(db, rows, &schema)) return 1;
    double t_load = secs(t0);
    printf("  loaded   %" PRIu64 " rows in %.2fs (%.0f rows/s)\n", rows, t_load,
           (double)rows / t_load);
    t0 = marble_now_ns();
    if (marble_db_flush(db, &err)) return fail("flush", &err);
    double t_flush = secs(t0);
    t0 = marble_now_ns();
    marble_compact_options co;
    marble_compact_options_init(&co);
    cli_progress bar;
    cli_progress_start(&bar, "compacting", "bytes", 0);
    co.progress = compact_progress;
    co.progress_ud = &bar;
    int crc = marble_db_compact_ex(db, "events", &co, &err);
    cli_progress_end(&bar);
    if (crc) return fail("compact", &err);
    double t_compact = secs(t0);
    printf("  flushed in %.2fs, compacted into one sorted level in %.2fs (%d threads)\n",
           t_flush, t_compact, marble_sched_threads(marble_db_sched(db)));

    /* point gets of known events */
    int gets = 10000, found = 0;
    t0 = marble_now_ns();
    for (int g = 0; g < gets; g++) {
        uint64_t i = mix((uint64_t)g) % rows;
        int64_t user, ts, clicks;
        int cat;
        double amount;
        event(i, &user, &ts, &cat, &amount, &clicks);
        marble_value kv[2] = {{MARBLE_VALUE_INT, user, 0, 0, NULL, 0},
                              {MARBLE_VALUE_INT, ts, 0, 0, NULL, 0}};
        marble_key k = {kv, 2};
        struct ArrowSchema rs;
        struct ArrowArray row;
        int rc = marble_db_get(db, "events", k, NULL, &rs, &row, &err);
        if (rc == MARBLE_ERR_NOT_FOUND) continue;
        if (rc) return fail("get", &err);
        if (marble_arrow_get_double(rs.children[3], row.children[3], 0) == amount) found++;
        marble_arrow_array_release(&row);
        marble_arrow_schema_release(&rs);
    }
    double t_get = secs(t0);
    printf("  point gets: %d of %d found with the right amount, %.1f us per get\n", found, gets,
           t_get * 1e6 / gets);
    if (found != gets) {
        fprintf(stderr, "marble demo: %d point gets did not find their event\n", gets - found);
        return 1;
    }

    /* every event of one user: a prefix scan on the first key column */
    int64_t user0, ts0, clicks0;
    int cat0;
    double amount0;
    event(12345, &user0, &ts0, &cat0, &amount0, &clicks0);
    marble_value pv = {MARBLE_VALUE_INT, user0, 0, 0, NULL, 0};
    marble_key prefix = {&pv, 1};
    struct ArrowArrayStream st;
    int64_t n;
    double sum;
    t0 = marble_now_ns();
    if (marble_db_scan_prefix(db, "events", prefix, NULL, &st, &err)) return fail("scan", &err);
    int rc = drain(&st, 3, &n, &sum);
    st.release(&st);
    if (rc) return 1;
    printf("  user %" PRId64 ": %" PRId64 " events, amount %.2f (prefix scan, %.2f ms)\n", user0, n,
           sum, secs(t0) * 1e3);

    /* users 1000..1999, one column: a projected range scan */
    marble_value lo = {MARBLE_VALUE_INT, 1000, 0, 0, NULL, 0},
                 hi = {MARBLE_VALUE_INT, 2000, 0, 0, NULL, 0};
    marble_key_range r;
    memset(&r, 0, sizeof r);
    r.lower = (marble_key){&lo, 1};
    r.upper = (marble_key){&hi, 1};
    const char *cols[] = {"amount"};
    marble_read_options ro = {0};
    ro.columns = cols;
    ro.n_columns = 1;
    t0 = marble_now_ns();
    if (marble_db_scan(db, "events", &r, &ro, &st, &err)) return fail("scan", &err);
    rc = drain(&st, 0, &n, &sum);
    st.release(&st);
    if (rc) return 1;
    printf("  users 1000..1999: %" PRId64 " events, amount %.2f (range scan of one column, "
           "%.2f ms)\n",
           n, sum, secs(t0) * 1e3);

    t0 = marble_now_ns();
    if (marble_db_scan(db, "events", NULL, &ro, &st, &err)) return fail("scan", &err);
    rc = drain(&st, 0, &n, &sum);
    st.release(&st);
    if (rc) return 1;
    double t_scan = secs(t0);
    printf("  full scan of amount: %" PRId64 " rows in %.2fs (%.1f M rows/s)\n", n, t_scan,
           (double)n / t_scan / 1e6);

    if (demo_queries(db, dir)) return 1;

    char *json;
    if (marble_db_stats_json(db, &json, &err)) return fail("stats", &err);
    print_levels(json);
    printf("  on disk: %.1f MiB; the SSTables (%s/*.arrow) are Arrow IPC files any Arrow tool "
           "opens\n",
           (double)marble_db_disk_size(db) / 1048576.0, dir);
    printf("  stats: %s\n", json);
    marble_free(json);
    marble_arrow_schema_release(&schema);
    if (marble_db_close(db, &err)) return fail("close", &err);
    return 0;
}
