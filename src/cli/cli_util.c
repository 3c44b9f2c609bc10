/* Shared helpers of the marble command: messages, options, Ctrl-C, the file registry, opening
 * databases, reading files, and parsing typed values from the command line. */
#include "cli/cli_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void cli_errorf(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "marble %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_usagef(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "marble %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (try 'marble %s --help')\n", cmd);
    va_end(ap);
    return CLI_USAGE;
}

int cli_fail(const char *cmd, const char *what, const marble_error *err)
{
    cli_errorf(cmd, "%s: %s", what,
               err && err->message[0] ? err->message : marble_strerror(err ? err->code : 0));
    return CLI_FAIL;
}

int cli_is_help(const char *arg)
{
    return !strcmp(arg, "-h") || !strcmp(arg, "--help");
}

int cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n)) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n]) return 0;
    if (*i + 1 >= argc) {
        cli_usagef(cmd, "%s needs a value", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

int cli_parse_count(const char *cmd, const char *opt, const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < 0) {
        return cli_usagef(cmd, "%s needs a whole number >= 0, got '%s'", opt, text);
    }
    *out = v;
    return CLI_OK;
}

/* ---- Ctrl-C ---------------------------------------------------------------------------------- */

volatile sig_atomic_t cli_interrupted = 0;

static void on_sigint(int sig)
{
    (void)sig;
    cli_interrupted = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends the process */
}

void cli_install_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

int cli_cancelled(const char *cmd)
{
    fprintf(stderr, "marble %s: cancelled\n", cmd);
    return CLI_CANCELLED;
}

/* ---- registry -------------------------------------------------------------------------------- */

static marble_fs *g_fs;

marble_fs *cli_fs(void)
{
    if (!g_fs) {
        marble_error err = {0};
        if (marble_fs_create(&g_fs, &err) != MARBLE_OK) {
            cli_errorf("fs", "cannot create the file registry: %s", err.message);
            exit(CLI_FAIL);
        }
    }
    return g_fs;
}

static int open_db(const char *cmd, const char *uri, int create, int verify, int threads,
                   marble_db **db);

int cli_open_db(const char *cmd, const char *uri, int create, int verify, marble_db **db)
{
    return open_db(cmd, uri, create, verify, 0, db);
}

int cli_open_db_threads(const char *cmd, const char *uri, int threads, marble_db **db)
{
    return open_db(cmd, uri, 0, 1, threads, db);
}

static int open_db(const char *cmd, const char *uri, int create, int verify, int threads,
                   marble_db **db)
{
    marble_error err = {0};
    marble_db_options o;
    marble_db_options_init(&o);
    o.fs = cli_fs();
    o.create_if_missing = create;
    o.verify_checksums = verify;
    if (threads > o.background_threads) o.background_threads = threads;
    const char *wal = getenv("MARBLE_WAL_URI");
    if (wal && *wal) o.wal_uri = wal;
    int rc = marble_db_open(uri, &o, db, &err);
    if (rc == MARBLE_OK) return CLI_OK;
    if (rc == MARBLE_ERR_NOT_FOUND && !create) {
        cli_errorf(cmd,
                   "no database at %s (%s); check the path, or create one with "
                   "'marble create %s TABLE --schema ... --key ...'",
                   uri, strstr(err.message, "CURRENT") ? "no CURRENT file there" : err.message,
                   uri);
    } else if (rc == MARBLE_ERR_BUSY) {
        cli_errorf(cmd, "cannot open %s: %s; stop the other process using it and retry", uri,
                   err.message);
    } else if (strstr(err.message, "wal_uri")) {
        cli_errorf(cmd,
                   "cannot open %s: %s (set the environment variable MARBLE_WAL_URI to a "
                   "local directory)",
                   uri, err.message);
    } else {
        cli_errorf(cmd, "cannot open database %s: %s", uri, err.message);
    }
    *db = NULL;
    return CLI_FAIL;
}

int cli_close_db(const char *cmd, marble_db *db)
{
    marble_error err = {0};
    if (marble_db_close(db, &err) != MARBLE_OK) return cli_fail(cmd, "closing the database", &err);
    return CLI_OK;
}

int cli_read_file(const char *uri, void **data, size_t *size, marble_error *err)
{
    marble_fs *fs = cli_fs();
    if (marble_codec_from_path(uri) == MARBLE_CODEC_NONE)
        return marble_fs_read_all(fs, uri, data, size, err);
    marble_file *f;
    MARBLE_RETURN_NOT_OK(
        marble_fs_open(fs, uri, MARBLE_OPEN_READ | MARBLE_OPEN_COMPRESSED, &f, err));
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    int rc = buf ? MARBLE_OK : marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    while (rc == MARBLE_OK) {
        if (cap - n < (1 << 20)) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory reading %s", uri);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = 0;
        rc = marble_file_read(f, n, buf + n, cap - n, &got, err);
        if (rc == MARBLE_OK && got == 0) break;
        n += got;
    }
    marble_error cerr = {0};
    int crc = marble_file_close(f, &cerr);
    if (rc == MARBLE_OK && crc != MARBLE_OK) {
        *err = cerr;
        rc = crc;
    }
    if (rc != MARBLE_OK) {
        free(buf);
        return rc;
    }
    *data = buf;
    *size = n;
    return MARBLE_OK;
}

/* ---- tables and values ----------------------------------------------------------------------- */

int cli_table_load(const char *cmd, marble_db *db, const char *name, cli_table *t)
{
    marble_error err = {0};
    memset(t, 0, sizeof *t);
    if (marble_db_describe_table(db, name, &t->schema, t->key, &t->nkey, &err) != MARBLE_OK) {
        if (err.code == MARBLE_ERR_NOT_FOUND)
            cli_errorf(cmd, "%s (list the tables with 'marble tables DB')", err.message);
        else
            cli_fail(cmd, "describing the table", &err);
        return CLI_FAIL;
    }
    return CLI_OK;
}

void cli_table_free(cli_table *t)
{
    marble_arrow_schema_release(&t->schema);
}

static int parse_int(const char *text, int64_t *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(text, &end, 10);
    if (errno || end == text || *end) return -1;
    *v = x;
    return 0;
}

static int parse_bool(const char *text, int64_t *v)
{
    if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "t") ||
        !strcasecmp(text, "yes")) {
        *v = 1;
        return 0;
    }
    if (!strcasecmp(text, "false") || !strcmp(text, "0") || !strcasecmp(text, "f") ||
        !strcasecmp(text, "no")) {
        *v = 0;
        return 0;
    }
    return -1;
}

/* Parses text as a value of `field`'s type. */
static int parse_value(const struct ArrowSchema *field, const char *text, marble_value *v,
                       marble_error *err)
{
    marble_arrow_type t;
    MARBLE_RETURN_NOT_OK(marble_arrow_type_parse(field->format, &t, err));
    memset(v, 0, sizeof *v);
    char tn[96];
    const char *tname = marble_arrow_type_name(&t, tn, sizeof tn);
    char *end;
    switch (t.id) {
    case MARBLE_ARROW_BOOL:
        v->kind = MARBLE_VALUE_INT;
        if (parse_bool(text, &v->i)) goto bad;
        return MARBLE_OK;
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64:
    case MARBLE_ARROW_DATE32:
    case MARBLE_ARROW_TIMESTAMP:
        v->kind = MARBLE_VALUE_INT;
        if (parse_int(text, &v->i)) goto bad;
        return MARBLE_OK;
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64:
        v->kind = MARBLE_VALUE_UINT;
        errno = 0;
        v->u = strtoull(text, &end, 10);
        if (errno || end == text || *end || text[0] == '-') goto bad;
        return MARBLE_OK;
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        v->kind = MARBLE_VALUE_DOUBLE;
        errno = 0;
        v->d = strtod(text, &end);
        if (errno == ERANGE || end == text || *end) goto bad;
        return MARBLE_OK;
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_BINARY:
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        v->kind = MARBLE_VALUE_BYTES;
        v->bytes = text;
        v->len = strlen(text);
        if (t.id == MARBLE_ARROW_FIXED_SIZE_BINARY && v->len != (size_t)t.byte_width)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "column '%s' (%s) needs exactly %d bytes, got %zu", field->name,
                                    tname, t.byte_width, v->len);
        return MARBLE_OK;
    default:
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "column '%s' has type %s, which the command line cannot parse",
                                field->name, tname);
    }
bad:
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                            "'%s' is not a valid %s value for column '%s'", text, tname,
                            field->name);
}

int cli_append_text(marble_batch_builder *b, const struct ArrowSchema *field, int col,
                    const char *text, marble_error *err)
{
    marble_value v;
    MARBLE_RETURN_NOT_OK(parse_value(field, text, &v, err));
    switch (v.kind) {
    case MARBLE_VALUE_INT:
        return marble_builder_append_int(b, col, v.i, err);
    case MARBLE_VALUE_UINT:
        return marble_builder_append_uint(b, col, v.u, err);
    case MARBLE_VALUE_DOUBLE:
        return marble_builder_append_double(b, col, v.d, err);
    default:
        return marble_builder_append_bytes(b, col, v.bytes, v.len, err);
    }
}

int cli_parse_key(const cli_table *t, char *text, marble_value *vals, size_t *n, marble_error *err)
{
    size_t k = 0;
    char *p = text;
    for (;;) {
        if (k == t->nkey)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "the key has %zu column%s, more values were given", t->nkey,
                                    t->nkey == 1 ? "" : "s");
        char *comma = t->nkey - k > 1 ? strchr(p, ',') : NULL;
        if (comma) *comma = 0;
        MARBLE_RETURN_NOT_OK(parse_value(t->schema.children[t->key[k]], p, &vals[k], err));
        k++;
        if (!comma) break;
        p = comma + 1;
    }
    *n = k;
    return MARBLE_OK;
}
