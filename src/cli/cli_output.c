/* Output of the marble command: a buffered writer (stdout or a VFS file, compressed by
 * extension) and record batches written as an aligned table, CSV (RFC 4180 quoting), JSON (an
 * array of objects, one per line) or Arrow IPC (stream or file). */
#include "cli/cli_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- formats --------------------------------------------------------------------------------- */

int cli_format_parse(const char *text)
{
    if (!strcmp(text, "table")) return CLI_FMT_TABLE;
    if (!strcmp(text, "csv")) return CLI_FMT_CSV;
    if (!strcmp(text, "json")) return CLI_FMT_JSON;
    if (!strcmp(text, "arrow") || !strcmp(text, "arrows")) return CLI_FMT_ARROW;
    if (!strcmp(text, "arrow-file") || !strcmp(text, "feather")) return CLI_FMT_ARROW_FILE;
    return -1;
}

int cli_format_for_stdout(const char *cmd, int fmt)
{
    int tty = isatty(1);
    if (fmt == CLI_FMT_AUTO) return tty ? CLI_FMT_TABLE : CLI_FMT_CSV;
    if ((fmt == CLI_FMT_ARROW || fmt == CLI_FMT_ARROW_FILE) && tty) {
        cli_errorf(cmd, "refusing to write binary Arrow data to a terminal; pipe it into a "
                        "program or redirect it to a file ('> out.arrows')");
        return -1;
    }
    return fmt;
}

/* ---- writer ---------------------------------------------------------------------------------- */

/* Standard output behind a buffer, so that errors (a full disk, a closed pipe) surface as
 * MARBLE_ERR_IO from the write that met them. */
struct cli_writer {
    FILE *stream;
    char *buf;
    size_t n, cap;
};

#define WRITER_BUF (1u << 16)

int cli_writer_stdout(cli_writer **out)
{
    cli_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->buf = malloc(WRITER_BUF))) {
        free(w);
        return MARBLE_ERR_NO_MEMORY;
    }
    w->cap = WRITER_BUF;
    w->stream = stdout;
    *out = w;
    return MARBLE_OK;
}

static int put_out(cli_writer *w, const void *p, size_t n, marble_error *err)
{
    if (n && fwrite(p, 1, n, w->stream) != n)
        return marble_error_set(err, MARBLE_ERR_IO, "writing to standard output failed");
    return MARBLE_OK;
}

static int writer_flush(cli_writer *w, marble_error *err)
{
    int rc = put_out(w, w->buf, w->n, err);
    w->n = 0;
    return rc;
}

int cli_writer_write(cli_writer *w, const void *p, size_t n, marble_error *err)
{
    if (w->n + n > w->cap) {
        MARBLE_RETURN_NOT_OK(writer_flush(w, err));
        if (n > w->cap) return put_out(w, p, n, err); /* a large write goes straight through */
    }
    memcpy(w->buf + w->n, p, n);
    w->n += n;
    return MARBLE_OK;
}

int cli_writer_printf(cli_writer *w, marble_error *err, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return marble_error_set(err, MARBLE_ERR_INTERNAL, "formatting failed");
    if ((size_t)n < sizeof small) return cli_writer_write(w, small, (size_t)n, err);
    char *big = malloc((size_t)n + 1);
    if (!big) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = cli_writer_write(w, big, (size_t)n, err);
    free(big);
    return rc;
}

int cli_writer_close(cli_writer *w, marble_error *err)
{
    if (!w) return MARBLE_OK;
    int rc = writer_flush(w, err);
    if (fflush(w->stream) != 0 && rc == MARBLE_OK)
        rc = marble_error_set(err, MARBLE_ERR_IO, "writing to standard output failed");
    free(w->buf);
    free(w);
    return rc;
}

/* ---- formatted output ------------------------------------------------------------------------ */

#define TABLE_CHUNK 2000

struct cli_out {
    cli_writer *w;
    cli_format fmt;
    struct ArrowSchema schema;
    int64_t rows;
    int ncols;
    int numeric[1024]; /* per column: 1 if numeric (right-aligned, bare in JSON) */
    marble_arrow_type types[1024];
    char *val; /* a value's text (marble_csv_format_value: the CSV export's formatting) */
    size_t val_cap;
    /* arrow */
    marble_ipc_writer *ipc;
    /* table: buffered cells of up to TABLE_CHUNK rows */
    char **cells;
    int64_t nbuf;
    size_t *width;
    int header_done;
};

static int csv_field(cli_writer *w, const char *p, size_t n, int is_null, marble_error *err);

static int writer_sink(void *ctx, const void *data, size_t n, marble_error *err)
{
    return cli_writer_write(ctx, data, n, err);
}

static int is_numeric(const char *format)
{
    marble_arrow_type t;
    if (marble_arrow_type_parse(format, &t, NULL) != MARBLE_OK) return 0;
    return t.id >= MARBLE_ARROW_INT8 && t.id <= MARBLE_ARROW_FLOAT64;
}

int cli_out_begin(cli_writer *w, cli_format fmt, const struct ArrowSchema *schema, cli_out **out,
                  marble_error *err)
{
    cli_out *o = calloc(1, sizeof *o);
    if (!o) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    o->w = w;
    o->fmt = fmt;
    o->ncols = (int)schema->n_children;
    if (o->ncols > 1024) {
        free(o);
        return marble_error_set(err, MARBLE_ERR_LIMIT, "too many columns (%d)",
                                (int)schema->n_children);
    }
    int rc = marble_arrow_schema_copy(schema, &o->schema, err);
    if (rc != MARBLE_OK) {
        free(o);
        return rc;
    }
    for (int c = 0; c < o->ncols; c++) {
        o->numeric[c] = is_numeric(schema->children[c]->format);
        if (marble_arrow_type_parse(schema->children[c]->format, &o->types[c], NULL) != MARBLE_OK)
            o->types[c].id = MARBLE_ARROW_NA; /* printed as "?" */
    }
    if (fmt == CLI_FMT_ARROW || fmt == CLI_FMT_ARROW_FILE) {
        marble_ipc_write_options wo = {0};
        wo.format = fmt == CLI_FMT_ARROW ? MARBLE_IPC_STREAM : MARBLE_IPC_FILE;
        marble_ipc_sink sink = {writer_sink, w};
        rc = marble_ipc_writer_create(sink, schema, &wo, &o->ipc, err);
    } else if (fmt == CLI_FMT_CSV) {
        for (int c = 0; c < o->ncols && rc == MARBLE_OK; c++) {
            const char *name = schema->children[c]->name ? schema->children[c]->name : "";
            if (c) rc = cli_writer_write(w, ",", 1, err);
            if (rc == MARBLE_OK) rc = csv_field(w, name, strlen(name), 0, err);
        }
        if (rc == MARBLE_OK) rc = cli_writer_write(w, "\n", 1, err);
    } else if (fmt == CLI_FMT_JSON) {
        rc = cli_writer_write(w, "[", 1, err);
    } else {
        o->cells = calloc((size_t)TABLE_CHUNK * (size_t)(o->ncols ? o->ncols : 1), sizeof(char *));
        o->width = calloc((size_t)(o->ncols ? o->ncols : 1), sizeof(size_t));
        if (!o->cells || !o->width)
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    }
    if (rc != MARBLE_OK) {
        cli_out_free(o);
        return rc;
    }
    *out = o;
    return MARBLE_OK;
}

static int csv_field(cli_writer *w, const char *p, size_t n, int is_null, marble_error *err)
{
    if (is_null) return MARBLE_OK;
    int quote = n == 0 || memchr(p, ',', n) || memchr(p, '"', n) || memchr(p, '\n', n) ||
                memchr(p, '\r', n) || p[0] == ' ' || p[n - 1] == ' ';
    if (!quote) return cli_writer_write(w, p, n, err);
    MARBLE_RETURN_NOT_OK(cli_writer_write(w, "\"", 1, err));
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"') {
            MARBLE_RETURN_NOT_OK(cli_writer_write(w, p + start, i + 1 - start, err));
            MARBLE_RETURN_NOT_OK(cli_writer_write(w, "\"", 1, err));
            start = i + 1;
        }
    }
    MARBLE_RETURN_NOT_OK(cli_writer_write(w, p + start, n - start, err));
    return cli_writer_write(w, "\"", 1, err);
}

static int json_string(cli_writer *w, const char *p, size_t n, marble_error *err)
{
    MARBLE_RETURN_NOT_OK(cli_writer_write(w, "\"", 1, err));
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        MARBLE_RETURN_NOT_OK(cli_writer_write(w, p + start, i - start, err));
        char esc[8];
        int k;
        switch (ch) {
        case '"':
            k = snprintf(esc, sizeof esc, "\\\"");
            break;
        case '\\':
            k = snprintf(esc, sizeof esc, "\\\\");
            break;
        case '\n':
            k = snprintf(esc, sizeof esc, "\\n");
            break;
        case '\r':
            k = snprintf(esc, sizeof esc, "\\r");
            break;
        case '\t':
            k = snprintf(esc, sizeof esc, "\\t");
            break;
        default:
            k = snprintf(esc, sizeof esc, "\\u%04x", ch);
            break;
        }
        MARBLE_RETURN_NOT_OK(cli_writer_write(w, esc, (size_t)k, err));
        start = i + 1;
    }
    MARBLE_RETURN_NOT_OK(cli_writer_write(w, p + start, n - start, err));
    return cli_writer_write(w, "\"", 1, err);
}

/* Display width: UTF-8 code points. */
static size_t text_width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* A table cell: control characters escaped so rows stay on one line. */
static char *cell_dup(const char *p, size_t n, int is_null)
{
    if (is_null) return strdup("NULL");
    char *c = malloc(4 * n + 1), *q = c;
    if (!c) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\n')
            *q++ = '\\', *q++ = 'n';
        else if (ch == '\t')
            *q++ = '\\', *q++ = 't';
        else if (ch == '\r')
            *q++ = '\\', *q++ = 'r';
        else if (ch < 0x20)
            q += sprintf(q, "\\x%02x", ch);
        else
            *q++ = (char)ch;
    }
    *q = 0;
    return c;
}

static int pad(cli_writer *w, size_t n, marble_error *err)
{
    static const char spaces[] = "                                                                ";
    while (n) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        MARBLE_RETURN_NOT_OK(cli_writer_write(w, spaces, k, err));
        n -= k;
    }
    return MARBLE_OK;
}

static int table_line(cli_out *o, char *const *cells, int header, marble_error *err)
{
    for (int c = 0; c < o->ncols; c++) {
        size_t wd = text_width(cells[c]);
        size_t fill = o->width[c] > wd ? o->width[c] - wd : 0;
        if (c) MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, "  ", 2, err));
        int right = !header && o->numeric[c];
        if (right) MARBLE_RETURN_NOT_OK(pad(o->w, fill, err));
        MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, cells[c], strlen(cells[c]), err));
        if (!right && c + 1 < o->ncols) MARBLE_RETURN_NOT_OK(pad(o->w, fill, err));
    }
    return cli_writer_write(o->w, "\n", 1, err);
}

static int table_flush(cli_out *o, marble_error *err)
{
    int rc = MARBLE_OK;
    if (!o->header_done) {
        for (int c = 0; c < o->ncols; c++) {
            size_t wd = text_width(o->schema.children[c]->name);
            if (wd > o->width[c]) o->width[c] = wd;
        }
        for (int64_t r = 0; r < o->nbuf; r++)
            for (int c = 0; c < o->ncols; c++) {
                size_t wd = text_width(o->cells[r * o->ncols + c]);
                if (wd > o->width[c]) o->width[c] = wd;
            }
        char *names[1024];
        for (int c = 0; c < o->ncols; c++)
            names[c] = (char *)o->schema.children[c]->name;
        rc = table_line(o, names, 1, err);
        for (int c = 0; c < o->ncols && rc == MARBLE_OK; c++) {
            if (c) rc = cli_writer_write(o->w, "  ", 2, err);
            for (size_t k = 0; k < o->width[c] && rc == MARBLE_OK; k++)
                rc = cli_writer_write(o->w, "-", 1, err);
        }
        if (rc == MARBLE_OK) rc = cli_writer_write(o->w, "\n", 1, err);
        o->header_done = 1;
    }
    for (int64_t r = 0; r < o->nbuf; r++) {
        if (rc == MARBLE_OK) rc = table_line(o, o->cells + r * o->ncols, 0, err);
        for (int c = 0; c < o->ncols; c++) {
            free(o->cells[r * o->ncols + c]);
            o->cells[r * o->ncols + c] = NULL;
        }
    }
    o->nbuf = 0;
    return rc;
}

/* Element i of column c as text, formatted as CSV export formats it (whole: no truncation);
 * NULL with err set when out of memory. */
static const char *value_text(cli_out *o, int c, const struct ArrowArray *a, int64_t i, size_t *len,
                              int *is_null, marble_error *err)
{
    if (!o->val) {
        o->val_cap = 256;
        if (!(o->val = malloc(o->val_cap))) {
            marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
            return NULL;
        }
    }
    int64_t n;
    while ((n = marble_csv_format_value(&o->types[c], a, i, o->val, o->val_cap, is_null)) == -1) {
        char *p = o->val_cap < ((size_t)1 << 31) ? realloc(o->val, o->val_cap * 4) : NULL;
        if (!p) {
            marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory formatting a value");
            return NULL;
        }
        o->val = p;
        o->val_cap *= 4;
    }
    if (n < 0) { /* a type CSV cannot hold (null) */
        *is_null = marble_arrow_is_null(a, i);
        *len = *is_null ? 0 : 1;
        return *is_null ? "" : "?";
    }
    *len = (size_t)n;
    return o->val;
}

int cli_out_batch(cli_out *o, const struct ArrowArray *batch, marble_error *err)
{
    if (o->ipc) {
        MARBLE_RETURN_NOT_OK(marble_ipc_writer_write(o->ipc, batch, err));
        o->rows += batch->length;
        return MARBLE_OK;
    }
    for (int64_t i = 0; i < batch->length; i++) {
        if (o->fmt == CLI_FMT_JSON)
            MARBLE_RETURN_NOT_OK(
                cli_writer_write(o->w, o->rows ? ",\n{" : "\n{", 2 + (o->rows != 0), err));
        for (int c = 0; c < o->ncols; c++) {
            const struct ArrowSchema *s = o->schema.children[c];
            const struct ArrowArray *a = batch->children[c];
            size_t n;
            int is_null;
            const char *p = value_text(o, c, a, i, &n, &is_null, err);
            if (!p) return err->code;
            if (o->fmt == CLI_FMT_CSV) {
                if (c) MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, ",", 1, err));
                MARBLE_RETURN_NOT_OK(csv_field(o->w, p, n, is_null, err));
            } else if (o->fmt == CLI_FMT_JSON) {
                if (c) MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, ",", 1, err));
                MARBLE_RETURN_NOT_OK(json_string(o->w, s->name, strlen(s->name), err));
                MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, ":", 1, err));
                int bare = o->numeric[c] || !strcmp(s->format, "b");
                if (is_null || (bare && (strstr(p, "nan") || strstr(p, "inf"))))
                    MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, "null", 4, err));
                else if (bare)
                    MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, p, n, err));
                else
                    MARBLE_RETURN_NOT_OK(json_string(o->w, p, n, err));
            } else {
                char *cell = cell_dup(p, n, is_null);
                if (!cell) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
                o->cells[o->nbuf * o->ncols + c] = cell;
            }
        }
        if (o->fmt == CLI_FMT_CSV) MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, "\n", 1, err));
        if (o->fmt == CLI_FMT_JSON) MARBLE_RETURN_NOT_OK(cli_writer_write(o->w, "}", 1, err));
        if (o->fmt == CLI_FMT_TABLE && ++o->nbuf == TABLE_CHUNK)
            MARBLE_RETURN_NOT_OK(table_flush(o, err));
        o->rows++;
    }
    return MARBLE_OK;
}

int64_t cli_out_rows(const cli_out *o)
{
    return o->rows;
}

int cli_out_end(cli_out *o, marble_error *err)
{
    int rc = MARBLE_OK;
    if (o->ipc)
        rc = marble_ipc_writer_finish(o->ipc, err);
    else if (o->fmt == CLI_FMT_JSON)
        rc = cli_writer_write(o->w, o->rows ? "\n]\n" : "]\n", o->rows ? 3 : 2, err);
    else if (o->fmt == CLI_FMT_TABLE) {
        rc = table_flush(o, err);
        if (rc == MARBLE_OK)
            rc = cli_writer_printf(o->w, err, "(%" PRId64 " row%s)\n", o->rows,
                                   o->rows == 1 ? "" : "s");
    }
    cli_out_free(o);
    return rc;
}

void cli_out_free(cli_out *o)
{
    if (!o) return;
    marble_ipc_writer_destroy(o->ipc);
    if (o->cells) {
        for (int64_t k = 0; k < o->nbuf * o->ncols; k++)
            free(o->cells[k]);
        free(o->cells);
    }
    free(o->width);
    free(o->val);
    marble_arrow_schema_release(&o->schema);
    free(o);
}

/* ---- JSON pretty printing -------------------------------------------------------------------- */

void cli_json_pretty(FILE *f, const char *json)
{
    int depth = 0, in_str = 0;
    for (const char *p = json; *p; p++) {
        char ch = *p;
        if (in_str) {
            fputc(ch, f);
            if (ch == '\\' && p[1])
                fputc(*++p, f);
            else if (ch == '"')
                in_str = 0;
            continue;
        }
        switch (ch) {
        case '"':
            in_str = 1;
            fputc(ch, f);
            break;
        case '{':
        case '[': {
            /* a flat object or array (no nesting) that fits on a line stays on one line */
            const char *q = p + 1;
            int str = 0, flat = 1;
            for (; *q; q++) {
                if (str) {
                    if (*q == '\\' && q[1])
                        q++;
                    else if (*q == '"')
                        str = 0;
                } else if (*q == '"') {
                    str = 1;
                } else if (*q == '{' || *q == '[') {
                    flat = 0;
                    break;
                } else if (*q == '}' || *q == ']') {
                    break;
                }
            }
            if (flat && *q && q - p < 100) {
                for (const char *r = p; r <= q; r++) {
                    fputc(*r, f);
                    if ((*r == ',' || *r == ':') && !str) fputc(' ', f);
                    if (*r == '"') str = !str;
                    if (*r == '\\' && str && r < q) fputc(*++r, f);
                }
                str = 0;
                p = q;
                break;
            }
            fputc(ch, f);
            fprintf(f, "\n%*s", 2 * ++depth, "");
            break;
        }
        case '}':
        case ']':
            fprintf(f, "\n%*s%c", 2 * --depth, "", ch);
            break;
        case ',':
            fprintf(f, ",\n%*s", 2 * depth, "");
            break;
        case ':':
            fputs(": ", f);
            break;
        case ' ':
        case '\n':
        case '\t':
        case '\r':
            break;
        default:
            fputc(ch, f);
        }
    }
    fputc('\n', f);
}
