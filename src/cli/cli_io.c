/* `marble import` and `marble export`: Arrow IPC files and streams and CSV through the VFS,
 * compressed by extension, with a progress bar and Ctrl-C. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_util.h"

static int looks_like_csv(const char *path)
{
    int f = cli_format_from_path(path);
    return f == CLI_FMT_CSV;
}

typedef struct csv_input {
    marble_file *f;
    uint64_t off; /* bytes read (after decompression) */
} csv_input;

static int csv_input_read(void *ctx, void *buf, size_t cap, size_t *got, marble_error *err)
{
    csv_input *in = ctx;
    size_t n = 0;
    MARBLE_RETURN_NOT_OK(marble_file_read(in->f, in->off, buf, cap, &n, err));
    in->off += n;
    *got = n;
    return MARBLE_OK;
}

/* Imports a CSV file (read as a stream through the CSV reader, with the table's schema). */
static int import_csv(const char *cmd, const char *dburi, const char *table, const char *path,
                      int skip_bad, int no_header)
{
    marble_error err = {0};
    marble_db *db = NULL;
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    csv_input in = {NULL, 0};
    marble_csv_reader *rd = NULL;
    int rc = CLI_OK;
    if (cli_open_db(cmd, dburi, 0, 1, &db)) return CLI_FAIL;
    if (marble_db_describe_table(db, table, &schema, NULL, NULL, &err) != MARBLE_OK) {
        rc = cli_fail(cmd, "cannot import", &err);
        goto done;
    }
    int compressed = marble_codec_from_path(path) != MARBLE_CODEC_NONE;
    uint64_t total = 0;
    if (!compressed) {
        marble_stat st;
        if (marble_fs_stat(cli_fs(), path, &st, NULL) == MARBLE_OK) total = st.size;
    }
    if (marble_fs_open(cli_fs(), path, MARBLE_OPEN_READ | (compressed ? MARBLE_OPEN_COMPRESSED : 0),
                       &in.f, &err) != MARBLE_OK) {
        rc = cli_fail(cmd, "cannot read the input file", &err);
        goto done;
    }
    marble_csv_options o;
    marble_csv_options_init(&o);
    o.header = !no_header;
    o.skip_bad_rows = skip_bad;
    marble_csv_source src = {csv_input_read, &in};
    if (marble_csv_reader_create(&src, &schema, &o, &rd, &err) != MARBLE_OK) {
        cli_errorf(cmd, "%s: %s", path, err.message);
        rc = CLI_FAIL;
        goto done;
    }
    int64_t rows = 0, batches = 0;
    cli_progress pg;
    cli_progress_start(&pg, "importing", "rows", 0);
    marble_write_options wo = {0};
    for (;;) {
        if (cli_interrupted) {
            rc = CLI_CANCELLED;
            break;
        }
        struct ArrowArray a;
        if (marble_csv_reader_next(rd, &a, &err) != MARBLE_OK) {
            cli_progress_end(&pg);
            cli_errorf(cmd, "%s: %s", path, err.message);
            rc = CLI_FAIL;
            break;
        }
        if (!a.release) break;
        int prc = marble_db_put(db, table, &schema, &a, &wo, &err);
        int64_t len = a.length;
        marble_arrow_array_release(&a);
        if (prc != MARBLE_OK) {
            cli_progress_end(&pg);
            cli_errorf(cmd, "importing rows %" PRId64 "..%" PRId64 " of %s: %s", rows + 1,
                       rows + len, path, err.message);
            rc = CLI_FAIL;
            break;
        }
        rows += len;
        batches++;
        cli_progress_update(&pg, (uint64_t)rows, total ? (double)in.off / (double)total : -1.0);
    }
    cli_progress_end(&pg);
    marble_csv_stats st;
    marble_csv_reader_stats(rd, &st);
    if (rc == CLI_OK) {
        fprintf(stderr, "imported %" PRId64 " rows (%" PRId64 " batches) into %s", rows, batches,
                table);
        if (st.bad_rows)
            fprintf(stderr, "; skipped %" PRId64 " bad row%s (first: %s)\n", st.bad_rows,
                    st.bad_rows == 1 ? "" : "s", st.first_bad_message);
        else
            fprintf(stderr, "; skipped 0 bad rows\n");
    } else if (rc == CLI_CANCELLED) {
        fprintf(stderr, "stopped after %" PRId64 " rows; they stay imported\n", rows);
    } else if (rows > 0) {
        fprintf(stderr, "the %" PRId64 " rows before it stay imported\n", rows);
    }
done:
    marble_csv_reader_destroy(rd);
    if (in.f) marble_file_close(in.f, NULL);
    if (db && cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    marble_arrow_schema_release(&schema);
    if (rc == CLI_CANCELLED) return cli_cancelled(cmd);
    return rc;
}

int marble_cli_import(int argc, char **argv)
{
    const char *cmd = "import", *pos[3] = {0};
    int npos = 0, skip_bad = 0, no_header = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: marble import DB TABLE FILE [--skip-bad-rows] [--no-header]\n"
                   "Upserts every row of FILE into the table, batch by batch in file order.\n"
                   "FILE is an Arrow IPC file (.arrow, .feather) or stream (.arrows), told apart\n"
                   "by its magic bytes, or CSV (.csv), optionally compressed (.zst, .lz4, .gz);\n"
                   "any VFS URI. Arrow columns must be the table's (by name and type, in any\n"
                   "order). CSV is read with the table's schema: a header row naming the columns\n"
                   "(matched by name, else by position; --no-header: none, columns in table\n"
                   "order), RFC 4180 quoting, empty unquoted fields as nulls. A malformed line\n"
                   "stops the import with its line and column; --skip-bad-rows skips and counts\n"
                   "such lines instead.\n"
                   "Ctrl-C stops between batches; the rows imported so far stay.\n"
                   "example: marble import ./shop.db orders orders.arrow.zst\n"
                   "         marble import ./shop.db orders orders.csv.gz --skip-bad-rows\n");
            return CLI_OK;
        }
        if (!strcmp(argv[i], "--skip-bad-rows")) {
            skip_bad = 1;
            continue;
        }
        if (!strcmp(argv[i], "--no-header")) {
            no_header = 1;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        if (npos == 3) return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        pos[npos++] = argv[i];
    }
    if (npos < 3) return cli_usagef(cmd, "needs DB, TABLE and FILE");
    if (looks_like_csv(pos[2])) {
        cli_install_sigint();
        return import_csv(cmd, pos[0], pos[1], pos[2], skip_bad, no_header);
    }
    if (skip_bad || no_header)
        return cli_usagef(cmd, "--skip-bad-rows and --no-header are for CSV files (.csv)");
    cli_install_sigint();
    marble_error err = {0};
    void *data = NULL;
    size_t size = 0;
    if (cli_read_file(pos[2], &data, &size, &err) != MARBLE_OK)
        return cli_fail(cmd, "cannot read the input file", &err);
    const uint8_t *d = data;
    static const uint8_t cont[4] = {0xff, 0xff, 0xff, 0xff};
    if (!(size >= 6 && !memcmp(d, "ARROW1", 6)) && !(size >= 4 && !memcmp(d, cont, 4))) {
        free(data);
        cli_errorf(cmd,
                   "%s is neither an Arrow IPC file nor an Arrow IPC stream (name a CSV "
                   "file .csv)",
                   pos[2]);
        return CLI_USAGE;
    }
    marble_ipc_source src = {d, size, NULL, NULL, NULL};
    marble_ipc_reader *rd = NULL;
    if (marble_ipc_reader_open(&src, &rd, &err) != MARBLE_OK) {
        free(data);
        return cli_fail(cmd, "cannot read the Arrow data", &err);
    }
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    marble_db *db = NULL;
    int rc = CLI_OK;
    if (marble_ipc_reader_schema(rd, &schema, &err) != MARBLE_OK) {
        rc = cli_fail(cmd, "reading the schema", &err);
        goto done;
    }
    if (cli_open_db(cmd, pos[0], 0, 1, &db)) {
        rc = CLI_FAIL;
        goto done;
    }
    int64_t nb = marble_ipc_reader_num_batches(rd), rows = 0, b = 0;
    cli_progress pg;
    cli_progress_start(&pg, "importing", "rows", 0);
    marble_write_options wo = {0};
    for (b = 0; b < nb; b++) {
        if (cli_interrupted) {
            rc = CLI_CANCELLED;
            break;
        }
        struct ArrowArray a;
        if (marble_ipc_reader_read(rd, b, &a, &err) != MARBLE_OK) {
            cli_progress_end(&pg);
            rc = cli_fail(cmd, "reading a batch", &err);
            break;
        }
        int prc = marble_db_put(db, pos[1], &schema, &a, &wo, &err);
        int64_t len = a.length;
        marble_arrow_array_release(&a);
        if (prc != MARBLE_OK) {
            cli_progress_end(&pg);
            cli_errorf(cmd, "importing batch %" PRId64 " of %s: %s", b, pos[2], err.message);
            rc = CLI_FAIL;
            break;
        }
        rows += len;
        cli_progress_update(&pg, (uint64_t)rows, (double)(b + 1) / (double)nb);
    }
    cli_progress_end(&pg);
    if (rc == CLI_OK)
        fprintf(stderr, "imported %" PRId64 " rows (%" PRId64 " batches) into %s\n", rows, nb,
                pos[1]);
    else if (rc == CLI_CANCELLED)
        fprintf(stderr,
                "stopped after %" PRId64 " rows (%" PRId64 " of %" PRId64
                " batches); they stay imported\n",
                rows, b, nb);
done:
    if (db && cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    marble_arrow_schema_release(&schema);
    marble_ipc_reader_destroy(rd);
    free(data);
    if (rc == CLI_CANCELLED) return cli_cancelled(cmd);
    return rc;
}

int marble_cli_export(int argc, char **argv)
{
    const char *cmd = "export", *pos[3] = {0}, *ftext = NULL;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        int m;
        if (cli_is_help(argv[i])) {
            printf(
                "usage: marble export DB TABLE FILE [--format arrow|arrows|csv|json]\n"
                "Writes every row of the table, in key order, to FILE (any VFS URI). The format\n"
                "comes from the extension: .arrow/.feather an Arrow IPC file, .arrows an Arrow\n"
                "IPC stream, .csv CSV with a header, .json JSON; a further .zst, .lz4 or .gz\n"
                "compresses it. --format overrides the extension (arrow = IPC file).\n"
                "example: marble export ./shop.db orders orders.arrow.zst\n");
            return CLI_OK;
        }
        if ((m = cli_opt(cmd, argc, argv, &i, "--format", &ftext))) {
            if (m < 0) return CLI_USAGE;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usagef(cmd, "unknown option '%s'", argv[i]);
        } else if (npos == 3) {
            return cli_usagef(cmd, "unexpected argument '%s'", argv[i]);
        } else {
            pos[npos++] = argv[i];
        }
    }
    if (npos < 3) return cli_usagef(cmd, "needs DB, TABLE and FILE");
    int fmt;
    if (ftext) {
        if (!strcmp(ftext, "arrow"))
            fmt = CLI_FMT_ARROW_FILE;
        else if (!strcmp(ftext, "arrows"))
            fmt = CLI_FMT_ARROW;
        else
            fmt = cli_format_parse(ftext);
        if (fmt < 0 || fmt == CLI_FMT_TABLE)
            return cli_usagef(cmd, "unknown --format '%s' (arrow, arrows, csv or json)", ftext);
    } else {
        fmt = cli_format_from_path(pos[2]);
        if (fmt < 0)
            return cli_usagef(cmd,
                              "cannot tell the format of '%s' from its extension; use "
                              ".arrow, .arrows, .csv or .json, or --format",
                              pos[2]);
    }
    cli_install_sigint();
    marble_db *db;
    if (cli_open_db(cmd, pos[0], 0, 1, &db)) return CLI_FAIL;
    marble_error err = {0};
    cli_table t;
    int rc = cli_table_load(cmd, db, pos[1], &t);
    if (rc != CLI_OK) {
        cli_close_db(cmd, db);
        return rc;
    }
    struct ArrowArrayStream st;
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    memset(&st, 0, sizeof st);
    cli_writer *w = NULL;
    cli_out *o = NULL;
    if (marble_db_scan(db, pos[1], NULL, NULL, &st, &err) != MARBLE_OK) {
        rc = cli_fail(cmd, "scan failed", &err);
        goto done;
    }
    if (st.get_schema(&st, &schema) != 0) {
        cli_errorf(cmd, "reading the schema: %s", st.get_last_error(&st));
        rc = CLI_FAIL;
        goto done;
    }
    if (cli_writer_open(pos[2], &w, &err) != MARBLE_OK) {
        rc = cli_fail(cmd, "cannot create the output file", &err);
        goto done;
    }
    if (cli_out_begin(w, fmt, &schema, &o, &err) != MARBLE_OK) {
        rc = cli_fail(cmd, "writing the output file", &err);
        goto done;
    }
    cli_progress pg;
    cli_progress_start(&pg, "exporting", "rows", 0);
    for (;;) {
        if (cli_interrupted) {
            rc = CLI_CANCELLED;
            break;
        }
        struct ArrowArray a;
        if (st.get_next(&st, &a) != 0) {
            cli_progress_end(&pg);
            cli_errorf(cmd, "scan failed: %s", st.get_last_error(&st));
            rc = CLI_FAIL;
            break;
        }
        if (!a.release) break;
        int wrc = cli_out_batch(o, &a, &err);
        marble_arrow_array_release(&a);
        if (wrc != MARBLE_OK) {
            cli_progress_end(&pg);
            rc = cli_fail(cmd, "writing the output file", &err);
            break;
        }
        cli_progress_update(&pg, (uint64_t)cli_out_rows(o), -1);
    }
    cli_progress_end(&pg);
    int64_t rows = cli_out_rows(o);
    if (rc == CLI_OK) {
        rc = cli_out_end(o, &err) == MARBLE_OK ? CLI_OK
                                               : cli_fail(cmd, "writing the output file", &err);
        o = NULL;
    }
    if (rc == CLI_OK) {
        uint64_t bytes = cli_writer_bytes(w);
        if (cli_writer_close(w, &err) != MARBLE_OK)
            rc = cli_fail(cmd, "finishing the output file", &err);
        else
            fprintf(stderr,
                    "exported %" PRId64 " rows (%" PRIu64 " bytes before compression) to %s\n",
                    rows, bytes, pos[2]);
        w = NULL;
    }
done:
    cli_out_free(o);
    if (w) {
        cli_writer_close(w, NULL);
        if (rc != CLI_OK) marble_fs_remove(cli_fs(), pos[2], NULL); /* no partial file */
    }
    marble_arrow_schema_release(&schema);
    if (st.release) st.release(&st);
    cli_table_free(&t);
    if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    if (rc == CLI_CANCELLED) return cli_cancelled(cmd);
    return rc;
}
