/* Export (marble_export_stream, marble_db_export_table): a stream of batches written through
 * the VFS as an Arrow IPC file or stream, CSV or JSON lines, compressed by extension, with
 * progress and cancellation; a failed or cancelled export removes its partial file. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/db_internal.h"
#include "marble/csv.h"

#define EXPORT_BUF ((size_t)256 << 10)

typedef struct out_file {
    marble_file *f;
    uint64_t off;
    uint8_t *buf;
    size_t len;
    int64_t bytes;
} out_file;

static int out_flush(out_file *o, marble_error *err)
{
    if (!o->len) return MARBLE_OK;
    int rc = marble_file_write(o->f, o->off, o->buf, o->len, err);
    o->off += o->len;
    o->len = 0;
    return rc;
}

static int out_write(void *ctx, const void *data, size_t n, marble_error *err)
{
    out_file *o = ctx;
    o->bytes += (int64_t)n;
    if (n >= EXPORT_BUF) {
        MARBLE_RETURN_NOT_OK(out_flush(o, err));
        int rc = marble_file_write(o->f, o->off, data, n, err);
        o->off += n;
        return rc;
    }
    if (o->len + n > EXPORT_BUF) MARBLE_RETURN_NOT_OK(out_flush(o, err));
    memcpy(o->buf + o->len, data, n);
    o->len += n;
    return MARBLE_OK;
}

void marble_export_options_init(marble_export_options *o)
{
    memset(o, 0, sizeof *o);
    marble_csv_write_options_init(&o->csv);
}

/* JSON lines: one object per row. */
typedef struct json_writer {
    marble_ipc_sink sink;
    const struct ArrowSchema *schema;
    marble_arrow_type *types;
    char *val;
    size_t cap;
    marble__bytes line;
} json_writer;

static int jput(json_writer *j, const void *p, size_t n, marble_error *err)
{
    return marble__bytes_append(&j->line, p, n, err);
}

static int jstring(json_writer *j, const char *p, size_t n, marble_error *err)
{
    static const char hex[] = "0123456789abcdef";
    MARBLE_RETURN_NOT_OK(jput(j, "\"", 1, err));
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        MARBLE_RETURN_NOT_OK(jput(j, p + start, i - start, err));
        char esc[8];
        size_t k = 2;
        esc[0] = '\\';
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            k = 6;
        }
        MARBLE_RETURN_NOT_OK(jput(j, esc, k, err));
        start = i + 1;
    }
    MARBLE_RETURN_NOT_OK(jput(j, p + start, n - start, err));
    return jput(j, "\"", 1, err);
}

static int json_batch(json_writer *j, const struct ArrowArray *batch, marble_error *err)
{
    int64_t nc = j->schema->n_children;
    for (int64_t r = 0; r < batch->length; r++) {
        j->line.len = 0;
        MARBLE_RETURN_NOT_OK(jput(j, "{", 1, err));
        for (int64_t c = 0; c < nc; c++) {
            const struct ArrowSchema *s = j->schema->children[c];
            const struct ArrowArray *a = batch->children[c];
            if (c) MARBLE_RETURN_NOT_OK(jput(j, ",", 1, err));
            MARBLE_RETURN_NOT_OK(
                jstring(j, s->name ? s->name : "", s->name ? strlen(s->name) : 0, err));
            MARBLE_RETURN_NOT_OK(jput(j, ":", 1, err));
            int is_null;
            int64_t n;
            while ((n = marble_csv_format_value(&j->types[c], a, batch->offset + r, j->val,
                                                j->cap, &is_null)) == -1) {
                if (j->cap >= ((size_t)1 << 31))
                    return marble_error_set(err, MARBLE_ERR_LIMIT, "export: value too long");
                char *p = realloc(j->val, j->cap * 4);
                if (!p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
                j->val = p;
                j->cap *= 4;
            }
            if (n < 0)
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "export: column '%s': row %" PRId64 " is out of range",
                                        s->name ? s->name : "", r);
            marble_arrow_type_id id = j->types[c].id;
            int bare =
                id == MARBLE_ARROW_BOOL || (id >= MARBLE_ARROW_INT8 && id <= MARBLE_ARROW_FLOAT64);
            int number = id == MARBLE_ARROW_FLOAT32 || id == MARBLE_ARROW_FLOAT64;
            if (is_null || (number && (strstr(j->val, "nan") || strstr(j->val, "inf"))))
                MARBLE_RETURN_NOT_OK(jput(j, "null", 4, err));
            else if (bare)
                MARBLE_RETURN_NOT_OK(jput(j, j->val, (size_t)n, err));
            else
                MARBLE_RETURN_NOT_OK(jstring(j, j->val, (size_t)n, err));
        }
        MARBLE_RETURN_NOT_OK(jput(j, "}\n", 2, err));
        MARBLE_RETURN_NOT_OK(j->sink.write(j->sink.ctx, j->line.data, j->line.len, err));
    }
    return MARBLE_OK;
}

static int stream_fail(struct ArrowArrayStream *in, int e, marble_error *err)
{
    const char *m = in->get_last_error ? in->get_last_error(in) : NULL;
    return marble_error_set(err, e == ENOMEM ? MARBLE_ERR_NO_MEMORY : MARBLE_ERR_IO,
                            "export: reading the input: %s", m && *m ? m : strerror(e));
}

int marble_export_stream(marble_fs *fs, struct ArrowArrayStream *input, const char *uri,
                         const marble_export_options *o, marble_export_stats *stats,
                         marble_error *err)
{
    marble_export_stats st = {0, 0, 0};
    if (stats) *stats = st;
    if (!input || !input->release)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "export: no input stream");
    marble_export_options opts;
    if (o)
        opts = *o;
    else
        marble_export_options_init(&opts);
    int rc = MARBLE_OK;
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    out_file of = {0};
    marble_ipc_writer *ipc = NULL;
    marble_csv_writer *csv = NULL;
    json_writer js;
    memset(&js, 0, sizeof js);
    int created = 0;
    char *tmp = NULL; /* written here, renamed over uri once complete: a failed export leaves
                         what was at uri before */
    marble_data_format fmt = opts.format ? opts.format : marble_data_format_from_path(uri);
    if (!fs || !uri) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "export: fs or uri is NULL");
        goto done;
    }
    const char *slash = strrchr(uri, '/');
    size_t dlen = slash ? (size_t)(slash - uri + 1) : 0;
    tmp = malloc(strlen(uri) + 32);
    if (!tmp) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    /* the same directory and extension (which picks the compression) as uri */
    snprintf(tmp, strlen(uri) + 32, "%.*s.marble-export-%s", (int)dlen, uri, uri + dlen);
    if (fmt < MARBLE_FORMAT_ARROW_FILE || fmt > MARBLE_FORMAT_JSON) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "export: cannot tell the format of '%s' (.arrow, .feather, .arrows, "
                              ".csv, .json or .jsonl, optionally + .zst, .gz or .lz4)",
                              uri);
        goto done;
    }
    int e = input->get_schema(input, &schema);
    if (e != 0) {
        rc = stream_fail(input, e, err);
        goto done;
    }
    of.buf = malloc(EXPORT_BUF);
    if (!of.buf) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    int compressed = marble_codec_from_path(uri) != MARBLE_CODEC_NONE;
    rc = marble_fs_open(fs, tmp,
                        MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE |
                            (compressed ? MARBLE_OPEN_COMPRESSED : 0),
                        &of.f, err);
    if (rc != MARBLE_OK) goto done;
    created = 1;
    marble_ipc_sink sink = {out_write, &of};
    if (fmt == MARBLE_FORMAT_ARROW_FILE || fmt == MARBLE_FORMAT_ARROW_STREAM) {
        marble_ipc_write_options wo = {fmt == MARBLE_FORMAT_ARROW_FILE ? MARBLE_IPC_FILE
                                                                       : MARBLE_IPC_STREAM,
                                       opts.compression, 0, 0};
        rc = marble_ipc_writer_create(sink, &schema, &wo, &ipc, err);
    } else if (fmt == MARBLE_FORMAT_CSV) {
        rc = marble_csv_writer_create(sink, &schema, &opts.csv, &csv, err);
    } else {
        rc = marble_arrow_schema_validate(&schema, err);
        js.sink = sink;
        js.schema = &schema;
        js.cap = 256;
        js.val = malloc(js.cap);
        js.types = calloc((size_t)schema.n_children + 1, sizeof *js.types);
        if (rc == MARBLE_OK && (!js.val || !js.types))
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
        for (int64_t c = 0; rc == MARBLE_OK && c < schema.n_children; c++) {
            rc = marble_arrow_type_parse(schema.children[c]->format, &js.types[c], err);
            if (rc == MARBLE_OK && (js.types[c].id == MARBLE_ARROW_NA ||
                                    js.types[c].id == MARBLE_ARROW_STRUCT))
                rc = marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                      "export: column '%s' has type '%s', which JSON lines export "
                                      "does not hold",
                                      schema.children[c]->name ? schema.children[c]->name : "",
                                      schema.children[c]->format);
        }
    }
    while (rc == MARBLE_OK) {
        if (marble_cancel_token_is_cancelled(opts.cancel)) {
            rc = marble_error_set(err, MARBLE_ERR_CANCELLED, "export to %s cancelled", uri);
            break;
        }
        struct ArrowArray a;
        memset(&a, 0, sizeof a);
        e = input->get_next(input, &a);
        if (e != 0) {
            rc = stream_fail(input, e, err);
            break;
        }
        if (!a.release) break;
        if (ipc)
            rc = marble_ipc_writer_write(ipc, &a, err);
        else if (csv)
            rc = marble_csv_writer_write(csv, &a, err);
        else {
            rc = marble_arrow_array_validate(&schema, &a, 0, err);
            if (rc == MARBLE_OK) rc = json_batch(&js, &a, err);
        }
        st.rows += a.length;
        st.batches++;
        marble_arrow_array_release(&a);
        st.bytes = of.bytes;
        if (rc == MARBLE_OK && opts.progress) opts.progress(opts.progress_ud, st.rows, st.bytes);
    }
    if (rc == MARBLE_OK && ipc) rc = marble_ipc_writer_finish(ipc, err);
    if (rc == MARBLE_OK && csv) rc = marble_csv_writer_finish(csv, err);
    if (rc == MARBLE_OK) rc = out_flush(&of, err);
    if (rc == MARBLE_OK) rc = marble_file_sync(of.f, MARBLE_SYNC_FULL, err);
    st.bytes = of.bytes;
done:
    marble_ipc_writer_destroy(ipc);
    marble_csv_writer_destroy(csv);
    free(js.val);
    free(js.types);
    marble__bytes_free(&js.line);
    if (of.f) {
        int crc = marble_file_close(of.f, rc == MARBLE_OK ? err : NULL);
        if (rc == MARBLE_OK) rc = crc;
    }
    of.f = NULL;
    if (rc == MARBLE_OK) rc = marble_fs_rename(fs, tmp, uri, 1, err);
    if (rc != MARBLE_OK && created) marble_fs_remove(fs, tmp, NULL);
    free(tmp);
    free(of.buf);
    marble_arrow_schema_release(&schema);
    marble_arrow_stream_release(input);
    if (stats) *stats = st;
    return rc;
}

int marble_db_export_table(marble_db *db, const char *table, const char *uri,
                           const marble_export_options *o, marble_export_stats *stats,
                           marble_error *err)
{
    if (stats) memset(stats, 0, sizeof *stats);
    if (!db) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "db is NULL");
    struct ArrowArrayStream st;
    memset(&st, 0, sizeof st);
    MARBLE_RETURN_NOT_OK(marble_db_scan(db, table, NULL, NULL, &st, err));
    return marble_export_stream(db->fs, &st, uri, o, stats, err);
}
