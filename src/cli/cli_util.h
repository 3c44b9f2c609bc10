/* Helpers shared by the marble command's subcommands: option parsing, opening databases and
 * files, typed value parsing, output formats, progress bars and Ctrl-C handling. Private to
 * src/cli. */
#ifndef MARBLE_CLI_UTIL_H
#define MARBLE_CLI_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "marble/marble.h"

/* Exit codes of every subcommand. */
#define CLI_OK 0
#define CLI_FAIL 1
#define CLI_USAGE 2
#define CLI_CANCELLED 130

/* ---- messages -------------------------------------------------------------------------------- */

/* "marble CMD: message\n" on stderr. */
void cli_errorf(const char *cmd, const char *fmt, ...) MARBLE_PRINTF(2, 3);
/* A usage error: the message and "(try 'marble CMD --help')"; returns CLI_USAGE. */
int cli_usagef(const char *cmd, const char *fmt, ...) MARBLE_PRINTF(2, 3);
/* "marble CMD: WHAT: err->message"; returns CLI_FAIL. */
int cli_fail(const char *cmd, const char *what, const marble_error *err);

/* ---- options --------------------------------------------------------------------------------- */

/* 1 if argv[i] is -h or --help. */
int cli_is_help(const char *arg);
/* Matches "--name VALUE" or "--name=VALUE" at argv[*i]; on a match stores the value, advances *i
 * past it and returns 1; a missing value is a usage error (returns -1 after printing). */
int cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name, const char **val);
/* Parses a non-negative integer option value; prints and returns CLI_USAGE on error. */
int cli_parse_count(const char *cmd, const char *opt, const char *text, int64_t *out);

/* ---- Ctrl-C ---------------------------------------------------------------------------------- */

extern volatile sig_atomic_t cli_interrupted;
/* Installs a SIGINT handler that only sets cli_interrupted (a second Ctrl-C kills the process
 * the usual way). */
void cli_install_sigint(void);
/* Prints "cancelled" on stderr and returns CLI_CANCELLED. */
int cli_cancelled(const char *cmd);

/* ---- databases and files --------------------------------------------------------------------- */

/* The registry used for databases and files: local, mem, s3, http, https. Created once. */
marble_fs *cli_fs(void);
/* Opens the database at uri. create: create it if missing; otherwise a missing database is an
 * error naming the path. Prints errors; returns CLI_OK or CLI_FAIL. */
int cli_open_db(const char *cmd, const char *uri, int create, int verify, marble_db **db);
/* The same for an existing database whose scheduler gets at least `threads` threads. */
int cli_open_db_threads(const char *cmd, const char *uri, int threads, marble_db **db);
/* Closes the database; prints and returns CLI_FAIL on error. */
int cli_close_db(const char *cmd, marble_db *db);
/* Reads a whole file (decompressing by extension .zst/.lz4/.gz) into malloc'd memory. */
int cli_read_file(const char *uri, void **data, size_t *size, marble_error *err);

/* ---- tables and values ----------------------------------------------------------------------- */

typedef struct cli_table {
    struct ArrowSchema schema; /* the table's schema */
    int key[32];               /* key column indexes */
    size_t nkey;
} cli_table;

/* Describes a table; prints and returns CLI_FAIL on error. */
int cli_table_load(const char *cmd, marble_db *db, const char *name, cli_table *t);
void cli_table_free(cli_table *t);
/* Appends text parsed as a value of column col's type. */
int cli_append_text(marble_batch_builder *b, const struct ArrowSchema *field, int col,
                    const char *text, marble_error *err);
/* Parses "v1,v2,..." (up to nkey values, at least 1) as key values of the table. `vals` must
 * have room for 32; strings point into `text` (modified in place). */
int cli_parse_key(const cli_table *t, char *text, marble_value *vals, size_t *n, marble_error *err);

/* ---- output ---------------------------------------------------------------------------------- */

typedef enum cli_format {
    CLI_FMT_AUTO = 0,
    CLI_FMT_TABLE,
    CLI_FMT_CSV,
    CLI_FMT_JSON,
    CLI_FMT_ARROW,     /* IPC stream */
    CLI_FMT_ARROW_FILE /* IPC file */
} cli_format;

/* "table", "csv", "json", "arrow" (stream), "arrows" (stream), "arrow-file"; -1 if unknown. */
int cli_format_parse(const char *text);
/* CLI_FMT_AUTO resolved for stdout (table on a terminal, csv otherwise); refuses (prints,
 * returns -1) arrow on a terminal. */
int cli_format_for_stdout(const char *cmd, int fmt);

/* A buffered byte sink on standard output. */
typedef struct cli_writer cli_writer;
int cli_writer_stdout(cli_writer **out);
int cli_writer_write(cli_writer *w, const void *p, size_t n, marble_error *err);
int cli_writer_printf(cli_writer *w, marble_error *err, const char *fmt, ...) MARBLE_PRINTF(3, 4);
/* Flushes and closes; also frees on error. */
int cli_writer_close(cli_writer *w, marble_error *err);

/* Record batches written in a format. */
typedef struct cli_out cli_out;
int cli_out_begin(cli_writer *w, cli_format fmt, const struct ArrowSchema *schema, cli_out **out,
                  marble_error *err);
int cli_out_batch(cli_out *o, const struct ArrowArray *batch, marble_error *err);
/* Finishes the format (table: prints buffered rows and a row count); frees. */
int cli_out_end(cli_out *o, marble_error *err);
void cli_out_free(cli_out *o);
int64_t cli_out_rows(const cli_out *o);

/* Pretty-prints a JSON document with two-space indentation. */
void cli_json_pretty(FILE *f, const char *json);

/* ---- progress -------------------------------------------------------------------------------- */

typedef struct cli_progress {
    int on;
    const char *label;
    const char *unit;
    uint64_t total; /* 0: unknown */
    uint64_t t0, last_draw;
    int width;
} cli_progress;

/* On only when stderr is a terminal. `unit` is "rows" or "bytes"; total 0 when unknown. */
void cli_progress_start(cli_progress *p, const char *label, const char *unit, uint64_t total);
/* done: work done in `unit`; frac (0..1, or negative if unknown) overrides done/total for the
 * bar and ETA. Redraws at most 10 times a second. */
void cli_progress_update(cli_progress *p, uint64_t done, double frac);
/* Clears the line. */
void cli_progress_end(cli_progress *p);

#endif
