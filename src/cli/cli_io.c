/* `marble import` and `marble export`: the library's bulk import (marble_db_import_file: Arrow
 * IPC files and streams and CSV, streamed through the VFS into marble_db_ingest) and export
 * (marble_db_export_table), compressed by extension, with a progress bar and Ctrl-C. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_util.h"

typedef struct io_progress {
    cli_progress pg;
    uint64_t total; /* input bytes, 0 when unknown */
    marble_cancel_token *cancel;
} io_progress;

static void on_progress(void *ud, int64_t rows, int64_t bytes)
{
    io_progress *p = ud;
    if (cli_interrupted) marble_cancel_token_cancel(p->cancel);
    cli_progress_update(&p->pg, (uint64_t)rows, p->total ? (double)bytes / (double)p->total : -1.0);
}

static int import_file(const char *cmd, const char *dburi, const char *table, const char *path,
                       int csv, int skip_bad, int no_header)
{
    marble_error err = {0};
    marble_db *db = NULL;
    marble_cancel_token *tok = NULL;
    if (marble_cancel_token_create(NULL, &tok, &err) != MARBLE_OK)
        return cli_fail(cmd, "cannot import", &err);
    if (cli_open_db(cmd, dburi, 0, 1, &db)) {
        marble_cancel_token_destroy(tok);
        return CLI_FAIL;
    }
    io_progress p;
    memset(&p, 0, sizeof p);
    p.cancel = tok;
    if (marble_codec_from_path(path) == MARBLE_CODEC_NONE) {
        marble_stat st;
        if (marble_fs_stat(cli_fs(), path, &st, NULL) == MARBLE_OK) p.total = st.size;
    }
    marble_import_options o;
    marble_import_options_init(&o);
    /* Arrow files and streams are told apart by their magic bytes, whatever the extension */
    o.format = csv ? MARBLE_FORMAT_CSV : MARBLE_FORMAT_ARROW_STREAM;
    o.csv.header = !no_header;
    o.csv.skip_bad_rows = skip_bad;
    o.ingest.cancel = tok;
    o.ingest.progress = on_progress;
    o.ingest.progress_ud = &p;
    marble_import_stats st;
    cli_progress_start(&p.pg, "importing", "rows", 0);
    int irc = marble_db_import_file(db, table, path, &o, &st, &err);
    cli_progress_end(&p.pg);
    int rc = CLI_OK;
    if (irc == MARBLE_OK) {
        const marble_ingest_stats *is = &st.ingest;
        fprintf(stderr, "imported %" PRId64 " rows into %s", is->rows, table);
        if (is->wal_bypassed && is->files)
            fprintf(stderr, " (%" PRId64 " SSTable%s at level %d, no WAL)", is->files,
                    is->files == 1 ? "" : "s", is->level);
        else if (is->rows_put)
            fprintf(stderr, " (unsorted input: %" PRId64 " rows through the write path)",
                    is->rows_put);
        if (csv && st.bad_rows)
            fprintf(stderr, "; skipped %" PRId64 " bad row%s (first: %s)\n", st.bad_rows,
                    st.bad_rows == 1 ? "" : "s", st.first_bad_message);
        else if (csv)
            fprintf(stderr, "; skipped 0 bad rows\n");
        else
            fprintf(stderr, "\n");
    } else if (irc == MARBLE_ERR_CANCELLED) {
        if (st.ingest.rows_put) /* unsorted input goes through the write path: those rows stay */
            fprintf(stderr, "stopped; the %" PRId64 " rows written before it stay imported\n",
                    st.ingest.rows_put);
        else
            fprintf(stderr, "stopped; nothing was imported\n");
        rc = CLI_CANCELLED;
    } else if (irc == MARBLE_ERR_INVALID_ARGUMENT && strstr(err.message, "neither an Arrow")) {
        cli_errorf(cmd, "%s (name a CSV file .csv)", err.message);
        rc = CLI_USAGE;
    } else {
        cli_errorf(cmd, "%s", err.message);
        if (st.ingest.rows_put)
            fprintf(stderr, "the %" PRId64 " rows before it stay imported\n", st.ingest.rows_put);
        rc = CLI_FAIL;
    }
    if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    marble_cancel_token_destroy(tok);
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
                   "Adds every row of FILE to the table (upserts). FILE is an Arrow IPC file\n"
                   "(.arrow, .feather) or stream (.arrows), told apart by its magic bytes, or\n"
                   "CSV (.csv), optionally compressed (.zst, .lz4, .gz); any VFS URI. It is read\n"
                   "as a stream. Arrow columns must be the table's (by name and type, in any\n"
                   "order). CSV is read with the table's schema: a header row naming the columns\n"
                   "(matched by name, else by position; --no-header: none, columns in table\n"
                   "order), RFC 4180 quoting, empty unquoted fields as nulls. A malformed line\n"
                   "stops the import with its line and column; --skip-bad-rows skips and counts\n"
                   "such lines instead.\n"
                   "Rows sorted by key (strictly ascending) are written straight into new\n"
                   "SSTables, bypassing the WAL, and appear all at once when the import ends;\n"
                   "other input goes through the write path from the first row out of order.\n"
                   "Ctrl-C stops the import; an import of sorted rows then leaves nothing.\n"
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
    int csv = marble_data_format_from_path(pos[2]) == MARBLE_FORMAT_CSV;
    if (!csv && (skip_bad || no_header))
        return cli_usagef(cmd, "--skip-bad-rows and --no-header are for CSV files (.csv)");
    cli_install_sigint();
    return import_file(cmd, pos[0], pos[1], pos[2], csv, skip_bad, no_header);
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
                "IPC stream, .csv CSV with a header, .json/.jsonl JSON lines (one object per\n"
                "row); a further .zst, .lz4 or .gz compresses it. --format overrides the\n"
                "extension (arrow = IPC file). Ctrl-C stops it and removes the partial file.\n"
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
    marble_data_format fmt;
    if (ftext) {
        if (!strcmp(ftext, "arrow"))
            fmt = MARBLE_FORMAT_ARROW_FILE;
        else if (!strcmp(ftext, "arrows"))
            fmt = MARBLE_FORMAT_ARROW_STREAM;
        else if (!strcmp(ftext, "csv"))
            fmt = MARBLE_FORMAT_CSV;
        else if (!strcmp(ftext, "json"))
            fmt = MARBLE_FORMAT_JSON;
        else
            return cli_usagef(cmd, "unknown --format '%s' (arrow, arrows, csv or json)", ftext);
    } else {
        fmt = marble_data_format_from_path(pos[2]);
        if (fmt == MARBLE_FORMAT_AUTO)
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
    marble_cancel_token *tok = NULL;
    if (marble_cancel_token_create(NULL, &tok, &err) != MARBLE_OK) {
        rc = cli_fail(cmd, "cannot export", &err);
    } else {
        io_progress p;
        memset(&p, 0, sizeof p);
        p.cancel = tok;
        marble_export_options o;
        marble_export_options_init(&o);
        o.format = fmt;
        o.cancel = tok;
        o.progress = on_progress;
        o.progress_ud = &p;
        marble_export_stats st;
        cli_progress_start(&p.pg, "exporting", "rows", 0);
        int erc = marble_db_export_table(db, pos[1], pos[2], &o, &st, &err);
        cli_progress_end(&p.pg);
        if (erc == MARBLE_OK)
            fprintf(stderr,
                    "exported %" PRId64 " rows (%" PRId64 " bytes before compression) to %s\n",
                    st.rows, st.bytes, pos[2]);
        else if (erc == MARBLE_ERR_CANCELLED)
            rc = CLI_CANCELLED;
        else
            rc = cli_fail(cmd, "export failed", &err);
    }
    marble_cancel_token_destroy(tok);
    cli_table_free(&t);
    if (cli_close_db(cmd, db) != CLI_OK && rc == CLI_OK) rc = CLI_FAIL;
    if (rc == CLI_CANCELLED) return cli_cancelled(cmd);
    return rc;
}
