/* The CSV writer (include/marble/csv.h): record batches to RFC 4180 text through a sink, with
 * a 64 KiB output buffer; one value formatter shared with the JSON lines exporter. */
#include <inttypes.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marble/csv.h"

#define OUT_BUF ((size_t)64 << 10)

struct marble_csv_writer {
    marble_ipc_sink sink;
    struct ArrowSchema schema;
    marble_arrow_type *types;
    int ncols;
    marble_csv_write_options o;
    int header_done;
    char *buf;
    size_t len;
    char *val;
    size_t val_cap;
};

void marble_csv_write_options_init(marble_csv_write_options *o)
{
    memset(o, 0, sizeof *o);
    o->delimiter = ',';
    o->quote = '"';
    o->header = 1;
}

static int supported(const marble_arrow_type *t)
{
    return t->id != MARBLE_ARROW_NA && t->id != MARBLE_ARROW_STRUCT;
}

static int flush_out(marble_csv_writer *w, marble_error *err)
{
    if (!w->len) return MARBLE_OK;
    int rc = w->sink.write(w->sink.ctx, w->buf, w->len, err);
    w->len = 0;
    return rc;
}

static int put(marble_csv_writer *w, const char *p, size_t n, marble_error *err)
{
    while (n) {
        if (w->len == OUT_BUF) MARBLE_RETURN_NOT_OK(flush_out(w, err));
        size_t k = OUT_BUF - w->len < n ? OUT_BUF - w->len : n;
        memcpy(w->buf + w->len, p, k);
        w->len += k;
        p += k;
        n -= k;
    }
    return MARBLE_OK;
}

static int put_field(marble_csv_writer *w, const char *p, size_t n, int is_null, int is_text,
                     marble_error *err)
{
    if (is_null) return MARBLE_OK;
    int quote = is_text && n == 0;
    for (size_t i = 0; i < n && !quote; i++)
        quote = p[i] == w->o.delimiter || p[i] == w->o.quote || p[i] == '\n' || p[i] == '\r';
    if (!quote) return put(w, p, n, err);
    char q = w->o.quote;
    MARBLE_RETURN_NOT_OK(put(w, &q, 1, err));
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != q) continue;
        MARBLE_RETURN_NOT_OK(put(w, p + start, i + 1 - start, err));
        MARBLE_RETURN_NOT_OK(put(w, &q, 1, err));
        start = i + 1;
    }
    MARBLE_RETURN_NOT_OK(put(w, p + start, n - start, err));
    return put(w, &q, 1, err);
}

/* Days since 1970-01-01 to a civil date (proleptic Gregorian). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    uint64_t doe = (uint64_t)(z - era * 146097);
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    uint64_t mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yy + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int fmt_date(char *buf, size_t cap, int64_t days)
{
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    return snprintf(buf, cap, "%04" PRId64 "-%02u-%02u", y, m, d);
}

static int fmt_timestamp(char *buf, size_t cap, const marble_arrow_type *t, int64_t v)
{
    static const int64_t per_sec[] = {1, 1000, 1000000, 1000000000};
    static const int digits[] = {0, 3, 6, 9};
    int64_t ps = per_sec[t->unit];
    int64_t secs = floor_div(v, ps);
    int64_t frac = v - secs * ps;
    int64_t days = floor_div(secs, 86400);
    int64_t sod = secs - days * 86400;
    int n = fmt_date(buf, cap, days);
    if (n < 0 || (size_t)n >= cap) return -1;
    int k = snprintf(buf + n, cap - (size_t)n, "T%02d:%02d:%02d", (int)(sod / 3600),
                     (int)(sod / 60 % 60), (int)(sod % 60));
    if (k < 0 || (size_t)(n + k) >= cap) return -1;
    n += k;
    if (digits[t->unit]) {
        k = snprintf(buf + n, cap - (size_t)n, ".%0*" PRId64, digits[t->unit], frac);
        if (k < 0 || (size_t)(n + k) >= cap) return -1;
        n += k;
    }
    if (t->timezone[0]) {
        if ((size_t)n + 2 > cap) return -1;
        buf[n++] = 'Z';
        buf[n] = 0;
    }
    return n;
}

static int fmt_double(char *buf, size_t cap, double d, int f32)
{
    if (d != d) return snprintf(buf, cap, "nan");
    if (d > DBL_MAX || d < -DBL_MAX) return snprintf(buf, cap, d < 0 ? "-inf" : "inf");
    static const int p32[] = {6, 7, 8, 9}, p64[] = {15, 17};
    const int *p = f32 ? p32 : p64;
    int np = f32 ? 4 : 2, n = -1;
    for (int i = 0; i < np; i++) {
        n = snprintf(buf, cap, "%.*g", p[i], d);
        if (n < 0 || (size_t)n >= cap) return -1;
        double back = strtod(buf, NULL);
        if (f32 ? (float)back == (float)d : back == d) break;
    }
    return n;
}

static int64_t format_typed(const marble_arrow_type *t, const struct ArrowArray *a, int64_t i,
                            char *buf, size_t cap, int *is_null, const char **text, size_t *tlen)
{
    *text = NULL;
    int64_t idx = a->offset + i;
    *is_null = a->null_count != 0 && a->buffers[0] &&
               !(((const uint8_t *)a->buffers[0])[idx >> 3] >> (idx & 7) & 1);
    if (*is_null) return 0;
    const uint8_t *d = a->n_buffers > 1 ? a->buffers[1] : NULL;
    int n = -1;
    static const char hex[] = "0123456789abcdef";
    const uint8_t *bytes = NULL;
    size_t blen = 0;
    switch (t->id) {
    case MARBLE_ARROW_BOOL:
        n = snprintf(buf, cap, "%s", (d[idx >> 3] >> (idx & 7) & 1) ? "true" : "false");
        break;
    case MARBLE_ARROW_INT8:
        n = snprintf(buf, cap, "%d", (int)((const int8_t *)d)[idx]);
        break;
    case MARBLE_ARROW_INT16:
        n = snprintf(buf, cap, "%d", (int)((const int16_t *)(const void *)d)[idx]);
        break;
    case MARBLE_ARROW_INT32:
        n = snprintf(buf, cap, "%" PRId32, ((const int32_t *)(const void *)d)[idx]);
        break;
    case MARBLE_ARROW_INT64:
        n = snprintf(buf, cap, "%" PRId64, ((const int64_t *)(const void *)d)[idx]);
        break;
    case MARBLE_ARROW_UINT8:
        n = snprintf(buf, cap, "%u", (unsigned)d[idx]);
        break;
    case MARBLE_ARROW_UINT16:
        n = snprintf(buf, cap, "%u", (unsigned)((const uint16_t *)(const void *)d)[idx]);
        break;
    case MARBLE_ARROW_UINT32:
        n = snprintf(buf, cap, "%" PRIu32, ((const uint32_t *)(const void *)d)[idx]);
        break;
    case MARBLE_ARROW_UINT64:
        n = snprintf(buf, cap, "%" PRIu64, ((const uint64_t *)(const void *)d)[idx]);
        break;
    case MARBLE_ARROW_FLOAT32:
        n = fmt_double(buf, cap, ((const float *)(const void *)d)[idx], 1);
        break;
    case MARBLE_ARROW_FLOAT64:
        n = fmt_double(buf, cap, ((const double *)(const void *)d)[idx], 0);
        break;
    case MARBLE_ARROW_DATE32:
        n = fmt_date(buf, cap, ((const int32_t *)(const void *)d)[idx]);
        break;
    case MARBLE_ARROW_TIMESTAMP:
        n = fmt_timestamp(buf, cap, t, ((const int64_t *)(const void *)d)[idx]);
        break;
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_BINARY: {
        const int32_t *o = (const int32_t *)(const void *)d;
        bytes = a->buffers[2] ? (const uint8_t *)a->buffers[2] + o[idx] : NULL;
        blen = (size_t)(o[idx + 1] - o[idx]);
        break;
    }
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_LARGE_BINARY: {
        const int64_t *o = (const int64_t *)(const void *)d;
        bytes = a->buffers[2] ? (const uint8_t *)a->buffers[2] + o[idx] : NULL;
        blen = (size_t)(o[idx + 1] - o[idx]);
        break;
    }
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        bytes = d + (size_t)idx * (size_t)t->byte_width;
        blen = (size_t)t->byte_width;
        break;
    default:
        return -1;
    }
    if (t->id == MARBLE_ARROW_UTF8 || t->id == MARBLE_ARROW_LARGE_UTF8) {
        *text = blen ? (const char *)bytes : "";
        *tlen = blen;
        return (int64_t)blen;
    }
    if (t->id == MARBLE_ARROW_BINARY || t->id == MARBLE_ARROW_LARGE_BINARY ||
        t->id == MARBLE_ARROW_FIXED_SIZE_BINARY) {
        if (2 * blen + 1 > cap) return -1;
        for (size_t j = 0; j < blen; j++) {
            buf[2 * j] = hex[bytes[j] >> 4];
            buf[2 * j + 1] = hex[bytes[j] & 15];
        }
        buf[2 * blen] = 0;
        return (int64_t)(2 * blen);
    }
    if (n < 0 || (size_t)n >= cap) return -1;
    return n;
}

int64_t marble_csv_format_value(const marble_arrow_type *t, const struct ArrowArray *a, int64_t i,
                                char *buf, size_t cap, int *is_null)
{
    *is_null = 0;
    if (!t || !a || !buf || i < 0 || i >= a->length || !supported(t)) return -2;
    const char *text;
    size_t tlen;
    int64_t n = format_typed(t, a, i, buf, cap, is_null, &text, &tlen);
    if (n < 0 || !text) return n;
    if (tlen + 1 > cap) return -1;
    memcpy(buf, text, tlen);
    buf[tlen] = 0;
    return (int64_t)tlen;
}

int marble_csv_writer_create(marble_ipc_sink sink, const struct ArrowSchema *schema,
                             const marble_csv_write_options *opts, marble_csv_writer **out,
                             marble_error *err)
{
    *out = NULL;
    if (!sink.write)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "csv writer: no sink");
    MARBLE_RETURN_NOT_OK(marble_arrow_schema_validate(schema, err));
    if (strcmp(schema->format, "+s") != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "csv writer: the schema is not a struct (\"+s\")");
    marble_csv_write_options o;
    if (opts)
        o = *opts;
    else
        marble_csv_write_options_init(&o);
    if (!o.quote || o.delimiter == o.quote || o.delimiter == '\n' || o.delimiter == '\r' ||
        o.quote == '\n' || o.quote == '\r' || !o.delimiter)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "csv writer: bad delimiter or quote character");
    marble_csv_writer *w = calloc(1, sizeof *w);
    if (!w) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    w->sink = sink;
    w->o = o;
    w->ncols = (int)schema->n_children;
    w->types = calloc((size_t)w->ncols + 1, sizeof *w->types);
    w->buf = malloc(OUT_BUF);
    w->val_cap = 256;
    w->val = malloc(w->val_cap);
    int rc = (!w->types || !w->buf || !w->val)
                 ? marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory")
                 : marble_arrow_schema_copy(schema, &w->schema, err);
    for (int c = 0; rc == MARBLE_OK && c < w->ncols; c++) {
        rc = marble_arrow_type_parse(schema->children[c]->format, &w->types[c], err);
        if (rc == MARBLE_OK && !supported(&w->types[c]))
            rc = marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                  "csv writer: column '%s' has type '%s', which CSV cannot hold",
                                  schema->children[c]->name ? schema->children[c]->name : "",
                                  schema->children[c]->format);
    }
    if (rc != MARBLE_OK) {
        marble_csv_writer_destroy(w);
        return rc;
    }
    *out = w;
    return MARBLE_OK;
}

static int write_header(marble_csv_writer *w, marble_error *err)
{
    w->header_done = 1;
    if (!w->o.header) return MARBLE_OK;
    for (int c = 0; c < w->ncols; c++) {
        const char *name = w->schema.children[c]->name ? w->schema.children[c]->name : "";
        if (c) MARBLE_RETURN_NOT_OK(put(w, &w->o.delimiter, 1, err));
        MARBLE_RETURN_NOT_OK(put_field(w, name, strlen(name), 0, 0, err));
    }
    return put(w, "\n", 1, err);
}

static int grow_val(marble_csv_writer *w, size_t need, marble_error *err)
{
    if (need <= w->val_cap) return MARBLE_OK;
    char *p = realloc(w->val, need);
    if (!p) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    w->val = p;
    w->val_cap = need;
    return MARBLE_OK;
}

int marble_csv_writer_write(marble_csv_writer *w, const struct ArrowArray *batch, marble_error *err)
{
    if (!w || !batch || !batch->release)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "csv writer: no batch");
    MARBLE_RETURN_NOT_OK(marble_arrow_array_validate(&w->schema, batch, 0, err));
    if (!w->header_done) MARBLE_RETURN_NOT_OK(write_header(w, err));
    for (int64_t r = 0; r < batch->length; r++) {
        for (int c = 0; c < w->ncols; c++) {
            const struct ArrowArray *a = batch->children[c];
            const marble_arrow_type *t = &w->types[c];
            if (c) MARBLE_RETURN_NOT_OK(put(w, &w->o.delimiter, 1, err));
            int is_null;
            const char *text;
            size_t tlen = 0;
            int64_t n;
            while ((n = format_typed(t, a, batch->offset + r, w->val, w->val_cap, &is_null, &text,
                                     &tlen)) < 0) {
                if (w->val_cap >= ((size_t)1 << 31))
                    return marble_error_set(err, MARBLE_ERR_LIMIT, "csv writer: value too long");
                MARBLE_RETURN_NOT_OK(grow_val(w, w->val_cap * 4, err));
            }
            int is_text = t->id == MARBLE_ARROW_UTF8 || t->id == MARBLE_ARROW_LARGE_UTF8 ||
                          t->id == MARBLE_ARROW_BINARY || t->id == MARBLE_ARROW_LARGE_BINARY ||
                          t->id == MARBLE_ARROW_FIXED_SIZE_BINARY;
            MARBLE_RETURN_NOT_OK(
                put_field(w, text ? text : w->val, text ? tlen : (size_t)n, is_null, is_text, err));
        }
        MARBLE_RETURN_NOT_OK(put(w, "\n", 1, err));
    }
    return MARBLE_OK;
}

int marble_csv_writer_finish(marble_csv_writer *w, marble_error *err)
{
    if (!w) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "csv writer is NULL");
    if (!w->header_done) MARBLE_RETURN_NOT_OK(write_header(w, err));
    return flush_out(w, err);
}

void marble_csv_writer_destroy(marble_csv_writer *w)
{
    if (!w) return;
    marble_arrow_schema_release(&w->schema);
    free(w->types);
    free(w->buf);
    free(w->val);
    free(w);
}
