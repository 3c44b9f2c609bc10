/* `marble compact`, `stats`, `check` and `dump`: maintenance and inspection. */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_util.h"

/* ---- compact --------------------------------------------------------------------------------- */

typedef struct compact_job {
    marble_db *db;
    const char *table;
    marble_compact_options o;
    marble_error err;
    int rc;
    _Atomic uint64_t done_bytes, total_bytes;
    volatile int done; /* written by the worker before it exits; read after pthread_join too */
} compact_job;

static void compact_progress(void *ud, uint64_t done, uint64_t total)
{
    compact_job *j = ud;
    __atomic_store_n(&j->total_bytes, total, __ATOMIC_RELAXED);
    __atomic_store_n(&j->done_bytes, done, __ATOMIC_RELAXED);
}

static void *compact_thread(void *p)
{
    compact_job *j = p;
    j->rc = marble_db_compact_ex(j->db, j->table, &j->o, &j->err);
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE); /* publishes rc and err to the spinner */
    return NULL;
}

int marble_cli_compact(int argc, char **argv)
{
    const char *cmd = "compact", *pos[2] = {0}, *threads_text = NULL;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        int m;
        if (cli_is_help(argv[i])) {
            printf("usage: marble compact DB [TABLE] [--threads N]\n"
                   "Flushes the memtable and compacts TABLE (default: every table) down to one\n"
                   "sorted level, waiting until it is done. Each step is split into N key-range\n"
                   "subcompactions that run at once (default: 2, or the machine's cores if more).\n"
                   "Ctrl-C cancels within about a batch: the step's partial outputs are removed\n"
                   "and the database stays consistent.\n"
                   "example: marble compact ./shop.db orders --threads 4\n");
            return CLI_OK;
        }
        if ((m = cli_opt(cmd, argc, argv, &i, "--threads", &threads_text))) {
            if (m < 0) return CLI_USAGE;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        if (npos == 2) return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        pos[npos++] = argv[i];
    }
    if (npos < 1) return cli_usagef(cmd, "needs DB");
    int64_t threads = 0;
    if (threads_text) {
        if (cli_parse_count(cmd, "--threads", threads_text, &threads)) return CLI_USAGE;
        if (threads < 1 || threads > 256) return cli_usagef(cmd, "--threads must be 1..256");
    } else {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 2 ? cores : 2;
    }
    cli_install_sigint();
    marble_db *db;
    if (cli_open_db_threads(cmd, pos[0], (int)threads, &db)) return CLI_FAIL;
    int rc = CLI_OK;
    if (pos[1]) {
        cli_table t;
        rc = cli_table_load(cmd, db, pos[1], &t);
        if (rc == CLI_OK) cli_table_free(&t);
    }
    marble_cancel_token *tok = NULL;
    marble_error err = {0};
    if (rc == CLI_OK && marble_cancel_token_create(NULL, &tok, &err) != MARBLE_OK)
        rc = cli_fail(cmd, "compaction failed", &err);
    uint64_t before = marble_db_disk_size(db), t0 = marble_now_ns();
    if (rc == CLI_OK) {
        compact_job j;
        memset(&j, 0, sizeof j);
        j.db = db;
        j.table = pos[1];
        marble_compact_options_init(&j.o);
        j.o.threads = (int)threads;
        j.o.cancel = tok;
        j.o.progress = compact_progress;
        j.o.progress_ud = &j;
        pthread_t th;
        if (pthread_create(&th, NULL, compact_thread, &j) != 0) {
            compact_thread(&j);
        } else {
            cli_progress pg;
            cli_progress_start(&pg, "compacting", "bytes", 0);
            while (!__atomic_load_n(&j.done, __ATOMIC_ACQUIRE)) {
                if (cli_interrupted) marble_cancel_token_cancel(tok);
                uint64_t d = __atomic_load_n(&j.done_bytes, __ATOMIC_RELAXED),
                         t = __atomic_load_n(&j.total_bytes, __ATOMIC_RELAXED);
                pg.total = t;
                cli_progress_update(&pg, d, t ? (double)d / (double)t : -1);
                marble_sleep_ns(20000000);
            }
            pthread_join(th, NULL);
            cli_progress_end(&pg);
        }
        if (j.rc == MARBLE_ERR_CANCELLED || (j.rc == MARBLE_OK && cli_interrupted))
            rc = CLI_CANCELLED;
        else if (j.rc != MARBLE_OK)
            rc = cli_fail(cmd, "compaction failed", &j.err);
        else
            printf("compacted %s in %.2fs with %d threads: %.1f MiB -> %.1f MiB\n",
                   pos[1] ? pos[1] : "every table", (double)(marble_now_ns() - t0) / 1e9,
                   (int)threads, (double)before / 1048576.0,
                   (double)marble_db_disk_size(db) / 1048576.0);
    }
    marble_cancel_token_destroy(tok);
    if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    if (rc == CLI_CANCELLED) return cli_cancelled(cmd);
    return rc;
}

/* ---- stats ----------------------------------------------------------------------------------- */

int marble_cli_stats(int argc, char **argv)
{
    const char *cmd = "stats", *dbu = NULL, *ftext = NULL;
    for (int i = 1; i < argc; i++) {
        int m;
        if (cli_is_help(argv[i])) {
            printf("usage: marble stats DB [--format json]\n"
                   "Prints the store's statistics: files, bytes and rows per level, write\n"
                   "amplification, memtables, WAL, SSTable and bloom filter counters (indented;\n"
                   "--format json prints the raw JSON object on one line).\n"
                   "example: marble stats ./shop.db --format json | jq .levels\n");
            return CLI_OK;
        }
        if ((m = cli_opt(cmd, argc, argv, &i, "--format", &ftext))) {
            if (m < 0) return CLI_USAGE;
            if (strcmp(ftext, "json") && strcmp(ftext, "pretty"))
                return cli_usagef(cmd, "unknown --format '%s' (json or pretty)", ftext);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        } else if (dbu) {
            return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        } else {
            dbu = argv[i];
        }
    }
    if (!dbu) return cli_usagef(cmd, "needs DB");
    marble_db *db;
    if (cli_open_db(cmd, dbu, 0, 1, &db)) return CLI_FAIL;
    marble_error err = {0};
    char *json = NULL;
    int rc = CLI_OK;
    if (marble_db_stats_json(db, &json, &err) != MARBLE_OK) {
        rc = cli_fail(cmd, "reading statistics", &err);
    } else if (ftext && !strcmp(ftext, "json")) {
        printf("%s\n", json);
    } else {
        printf("database %s: %.1f MiB on disk\n", dbu, (double)marble_db_disk_size(db) / 1048576.0);
        cli_json_pretty(stdout, json);
    }
    marble_free(json);
    if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    return rc;
}

/* ---- check ----------------------------------------------------------------------------------- */

typedef struct name_list {
    char **names;
    size_t n, cap;
} name_list;

static int add_name(void *ud, const char *name)
{
    name_list *l = ud;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **nn = realloc(l->names, cap * sizeof *nn);
        if (!nn) return 1;
        l->names = nn;
        l->cap = cap;
    }
    l->names[l->n++] = strdup(name);
    return 0;
}

int marble_cli_check(int argc, char **argv)
{
    const char *cmd = "check", *dbu = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: marble check DB\n"
                   "Opens the database (replaying and checking the WAL and manifest) and reads\n"
                   "every row of every table, verifying each SSTable batch's CRC32C and the\n"
                   "files' structure. Prints OK, or each problem found; exit 1 on any problem.\n"
                   "example: marble check ./shop.db\n");
            return CLI_OK;
        }
        if (argv[i][0] == '-' && argv[i][1]) return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        if (dbu) return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        dbu = argv[i];
    }
    if (!dbu) return cli_usagef(cmd, "needs DB");
    cli_install_sigint();
    marble_db *db;
    if (cli_open_db(cmd, dbu, 0, 1, &db)) {
        fprintf(stderr, "marble check: PROBLEM: the database does not open\n");
        return CLI_FAIL;
    }
    marble_error err = {0};
    name_list tables = {0};
    int problems = 0, rc = CLI_OK;
    int64_t total = 0;
    if (marble_db_list_tables(db, add_name, &tables, &err) != MARBLE_OK) {
        printf("PROBLEM: listing tables: %s\n", err.message);
        problems++;
    }
    cli_progress pg;
    cli_progress_start(&pg, "checking", "rows", 0);
    for (size_t t = 0; t < tables.n && rc == CLI_OK; t++) {
        struct ArrowArrayStream st;
        int64_t rows = 0;
        if (marble_db_scan(db, tables.names[t], NULL, NULL, &st, &err) != MARBLE_OK) {
            cli_progress_end(&pg);
            printf("PROBLEM: table %s: %s\n", tables.names[t], err.message);
            problems++;
            continue;
        }
        int bad = 0;
        for (;;) {
            if (cli_interrupted) {
                rc = CLI_CANCELLED;
                break;
            }
            struct ArrowArray a;
            if (st.get_next(&st, &a) != 0) {
                cli_progress_end(&pg);
                printf("PROBLEM: table %s (after %" PRId64 " rows): %s\n", tables.names[t], rows,
                       st.get_last_error(&st));
                problems++;
                bad = 1;
                break;
            }
            if (!a.release) break;
            rows += a.length;
            marble_arrow_array_release(&a);
            cli_progress_update(&pg, (uint64_t)(total + rows), -1);
        }
        st.release(&st);
        total += rows;
        if (!bad && rc == CLI_OK) {
            cli_progress_end(&pg);
            printf("table %s: %" PRId64 " rows ok\n", tables.names[t], rows);
        }
    }
    cli_progress_end(&pg);
    for (size_t t = 0; t < tables.n; t++)
        free(tables.names[t]);
    free(tables.names);
    if (cli_close_db(cmd, db) != CLI_OK) problems++;
    if (rc == CLI_CANCELLED) return cli_cancelled(cmd);
    if (problems) {
        printf("%d problem%s found in %s\n", problems, problems == 1 ? "" : "s", dbu);
        return CLI_FAIL;
    }
    printf("OK: %zu table%s, %" PRId64 " rows, every batch checksum verified\n", tables.n,
           tables.n == 1 ? "" : "s", total);
    return CLI_OK;
}

/* ---- dump ------------------------------------------------------------------------------------ */

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static uint32_t wal_mask(uint32_t c)
{
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static uint32_t wal_crc(uint64_t segno, const uint8_t *p, size_t n)
{
    uint8_t s[8];
    for (int k = 0; k < 8; k++)
        s[k] = (uint8_t)(segno >> (8 * k));
    return wal_mask(marble_crc32c_extend(marble_crc32c(s, 8), p, n));
}

/* A WAL segment (docs/format/wal.md): its records' offsets, sequence numbers, sizes and CRCs. */
static int dump_wal(const char *path, const uint8_t *d, size_t size, int verbose)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    uint64_t segno = strtoull(base, NULL, 10);
    printf("WAL segment %s (number %" PRIu64 "), %zu bytes\n", path, segno, size);
    if (verbose) printf("  %12s  %20s  %10s  %s\n", "offset", "seq", "payload", "crc");
    size_t off = 0, n = 0, bad = 0;
    uint64_t payload = 0, lo = UINT64_MAX, hi = 0;
    while (off + 20 <= size) {
        const uint8_t *r = d + off;
        uint32_t len = rd32(r + 4);
        uint64_t seq = rd64(r + 8);
        int hok = wal_crc(segno, r + 4, 12) == rd32(r + 16);
        if (!hok || len > (1u << 30) || off + 20 + len > size) {
            printf("  record at offset %zu: %s; the rest (%zu bytes) is a torn or damaged tail\n",
                   off, hok ? "length past the end of the file" : "bad header CRC", size - off);
            bad++;
            off = size;
            break;
        }
        int ok = wal_crc(segno, r + 4, 16 + (size_t)len) == rd32(r);
        if (verbose) printf("  %12zu  %20" PRIu64 "  %10u  %s\n", off, seq, len, ok ? "ok" : "BAD");
        if (!ok) bad++;
        n++;
        payload += len;
        if (seq < lo) lo = seq;
        if (seq > hi) hi = seq;
        off += 20 + (size_t)len;
    }
    if (off < size) printf("  %zu trailing bytes (a torn record header)\n", size - off);
    printf("%zu records, %" PRIu64 " payload bytes", n, payload);
    if (n) printf(", sequence numbers %" PRIu64 "..%" PRIu64, lo, hi);
    printf(", %zu damaged\n", bad);
    return bad ? CLI_FAIL : CLI_OK;
}

/* Arrow metadata: int32 count, then (int32 len, key, int32 len, value) pairs. */
static void print_metadata(const char *md, const char *indent)
{
    if (!md) return;
    const uint8_t *p = (const uint8_t *)md;
    int32_t n = (int32_t)rd32(p);
    p += 4;
    for (int32_t k = 0; k < n && k < 1000; k++) {
        int32_t kl = (int32_t)rd32(p);
        const char *key = (const char *)p + 4;
        p += 4 + kl;
        int32_t vl = (int32_t)rd32(p);
        const char *val = (const char *)p + 4;
        p += 4 + vl;
        printf("%s%.*s = %.*s\n", indent, (int)kl, key, (int)vl, val);
    }
}

int marble_cli_dump(int argc, char **argv)
{
    const char *cmd = "dump", *path = NULL, *ftext = NULL, *ltext = NULL;
    for (int i = 1; i < argc; i++) {
        int m;
        if (cli_is_help(argv[i])) {
            printf("usage: marble dump FILE [--format table|csv|json] [--limit N]\n"
                   "Shows an SSTable (NNNNNN.arrow: an Arrow IPC file) -- its schema, metadata,\n"
                   "batches and rows, including the _seq and _op columns -- or a WAL segment\n"
                   "(wal/NNNNNN.log): its records with sequence numbers, sizes and CRC checks.\n"
                   "With --format csv or json only the rows are printed.\n"
                   "example: marble dump ./shop.db/000004.arrow --limit 20\n");
            return CLI_OK;
        }
        if ((m = cli_opt(cmd, argc, argv, &i, "--format", &ftext))) {
            if (m < 0) return CLI_USAGE;
        } else if ((m = cli_opt(cmd, argc, argv, &i, "--limit", &ltext))) {
            if (m < 0) return CLI_USAGE;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        } else if (path) {
            return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) return cli_usagef(cmd, "needs FILE");
    int fmt = CLI_FMT_TABLE;
    if (ftext && ((fmt = cli_format_parse(ftext)) < 0 || fmt == CLI_FMT_ARROW_FILE))
        return cli_usagef(cmd, "unknown --format '%s' (table, csv, json or arrow)", ftext);
    if ((fmt = cli_format_for_stdout(cmd, fmt)) < 0) return CLI_USAGE;
    int64_t limit = -1;
    if (ltext && cli_parse_count(cmd, "--limit", ltext, &limit)) return CLI_USAGE;
    marble_error err = {0};
    void *data;
    size_t size;
    if (cli_read_file(path, &data, &size, &err) != MARBLE_OK)
        return cli_fail(cmd, "cannot read the file", &err);
    size_t plen = strlen(path);
    if (plen > 4 && !strcmp(path + plen - 4, ".log")) {
        int rc = dump_wal(path, data, size, fmt == CLI_FMT_TABLE);
        free(data);
        return rc;
    }
    marble_ipc_source src = {data, size, NULL, NULL, NULL};
    marble_ipc_reader *rd;
    if (marble_ipc_reader_open(&src, &rd, &err) != MARBLE_OK) {
        free(data);
        cli_errorf(cmd,
                   "%s is not a readable Arrow IPC file or stream (SSTables are "
                   "NNNNNN.arrow, WAL segments NNNNNN.log): %s",
                   path, err.message);
        return CLI_FAIL;
    }
    struct ArrowSchema schema;
    int rc = CLI_OK;
    if (marble_ipc_reader_schema(rd, &schema, &err) != MARBLE_OK) {
        marble_ipc_reader_destroy(rd);
        free(data);
        return cli_fail(cmd, "reading the schema", &err);
    }
    int64_t nb = marble_ipc_reader_num_batches(rd);
    cli_writer *w = NULL;
    cli_out *o = NULL;
    int human = fmt == CLI_FMT_TABLE;
    if (human) {
        printf("%s: Arrow IPC %s, %zu bytes, %" PRId64 " batches\n", path,
               marble_ipc_reader_format(rd) == MARBLE_IPC_FILE ? "file" : "stream", size, nb);
        printf("schema:\n");
        for (int64_t c = 0; c < schema.n_children; c++) {
            marble_arrow_type ty;
            char tn[96] = "?";
            const char *tname = tn;
            if (marble_arrow_type_parse(schema.children[c]->format, &ty, NULL) == MARBLE_OK)
                tname = marble_arrow_type_name(&ty, tn, sizeof tn);
            printf("  %-20s %s%s\n", schema.children[c]->name, tname,
                   (schema.children[c]->flags & ARROW_FLAG_NULLABLE) ? "" : " not null");
        }
        if (schema.metadata) {
            printf("metadata:\n");
            print_metadata(schema.metadata, "  ");
        }
    }
    int64_t rows = 0;
    if (cli_writer_stdout(&w) || cli_out_begin(w, fmt, &schema, &o, &err)) {
        rc = cli_fail(cmd, "writing output", &err);
        nb = 0;
    }
    if (human) {
        for (int64_t b = 0; b < nb; b++) {
            struct ArrowArray a;
            if (marble_ipc_reader_read(rd, b, &a, &err) != MARBLE_OK) continue;
            rows += a.length;
            marble_arrow_array_release(&a);
        }
        printf("rows: %" PRId64 "\n\n", rows);
        fflush(stdout);
        rows = 0;
    }
    for (int64_t b = 0; b < nb && rc == CLI_OK && (limit < 0 || rows < limit); b++) {
        struct ArrowArray a;
        if (marble_ipc_reader_read(rd, b, &a, &err) != MARBLE_OK) {
            rc = cli_fail(cmd, "reading a batch", &err);
            break;
        }
        if (limit >= 0 && rows + a.length > limit) {
            /* the IPC writer needs whole batches; text formats print the first rows */
            int64_t keep = limit - rows;
            a.length = keep;
            for (int64_t c = 0; c < a.n_children; c++)
                if (a.children[c]->length > keep) a.children[c]->length = keep;
        }
        rows += a.length;
        if (cli_out_batch(o, &a, &err) != MARBLE_OK) rc = cli_fail(cmd, "writing output", &err);
        marble_arrow_array_release(&a);
    }
    if (o) {
        if (rc == CLI_OK && cli_out_end(o, &err) != MARBLE_OK)
            rc = cli_fail(cmd, "writing output", &err);
        else if (rc != CLI_OK)
            cli_out_free(o);
    }
    if (w && cli_writer_close(w, &err) != MARBLE_OK && rc == CLI_OK)
        rc = cli_fail(cmd, "writing output", &err);
    marble_arrow_schema_release(&schema);
    marble_ipc_reader_destroy(rd);
    free(data);
    return rc;
}
