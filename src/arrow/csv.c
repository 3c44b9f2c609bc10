/* The CSV reader: a byte-level RFC 4180 record parser over a read callback, schema inference over
 * the first records, and conversion of fields into record batches through the batch builder. */
#include "marble/csv.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arrow/arrow_internal.h"

#define IN_CAP (64 * 1024)

typedef struct csv_fld {
    size_t off, len;
    int quoted;
} csv_fld;

/* One record: its unescaped bytes, its fields, the line it starts on and, when malformed, the
 * field where it went wrong (1-based) and why. */
typedef struct csv_rec {
    char *data;
    size_t len, cap;
    csv_fld *f;
    int nf, fcap;
    int64_t line;
    int bad_col; /* 0: well-formed */
    char bad[160];
} csv_rec;

typedef struct csv_val {
    int kind; /* 0 null, 1 int, 2 uint, 3 double, 4 bytes */
    int64_t i;
    uint64_t u;
    double d;
    const char *p;
    size_t n;
} csv_val;

struct marble_csv_reader {
    marble_csv_source src;
    marble_csv_options o;
    char *null_value;
    size_t null_len;
    int quote; /* byte value, or -2 when quoting is off */
    uint8_t *in;
    size_t in_pos, in_len;
    int in_eof;
    int64_t line;
    csv_rec rec;
    csv_rec *pend; /* records read for inference, replayed first */
    size_t npend, pend_cap, pend_pos;
    struct ArrowSchema schema;
    int ncols;
    marble_arrow_type *types;
    int *col_of_field;
    csv_val *vals;
    marble_batch_builder *b;
    marble_csv_stats st;
    int failed, done;
    marble_error fail_err;
};

void marble_csv_options_init(marble_csv_options *o)
{
    memset(o, 0, sizeof *o);
    o->delimiter = ',';
    o->quote = '"';
    o->header = 1;
    o->batch_rows = 65536;
    o->null_value = "";
    o->null_in_strings = 1;
    o->skip_bad_rows = 0;
    o->infer_rows = 1000;
    o->max_record_bytes = (size_t)64 << 20;
}

/* ---- input ----------------------------------------------------------------------------------- */

/* Reads more input after what is buffered; sets in_eof at the end. */
static int refill(marble_csv_reader *r, marble_error *err)
{
    if (r->in_pos > 0) {
        memmove(r->in, r->in + r->in_pos, r->in_len - r->in_pos);
        r->in_len -= r->in_pos;
        r->in_pos = 0;
    }
    size_t cap = IN_CAP - r->in_len, got = 0;
    if (cap == 0) return MARBLE_OK;
    MARBLE_RETURN_NOT_OK(r->src.read(r->src.ctx, r->in + r->in_len, cap, &got, err));
    if (got > cap)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "csv: the source returned %zu bytes for a %zu-byte buffer", got,
                                cap);
    if (got == 0) r->in_eof = 1;
    r->in_len += got;
    return MARBLE_OK;
}

/* *c = the next byte, or -1 at the end; advance: consume it. */
static int next_byte(marble_csv_reader *r, int *c, int advance, marble_error *err)
{
    while (r->in_pos == r->in_len) {
        if (r->in_eof) {
            *c = -1;
            return MARBLE_OK;
        }
        MARBLE_RETURN_NOT_OK(refill(r, err));
    }
    *c = r->in[r->in_pos];
    if (advance) r->in_pos++;
    return MARBLE_OK;
}

/* ---- records --------------------------------------------------------------------------------- */

/* Appends n bytes (a run without special characters) to the record. */
static int rec_append(marble_csv_reader *r, csv_rec *rec, const uint8_t *p, size_t n,
                      marble_error *err)
{
    if (n > r->o.max_record_bytes - rec->len)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "line %lld, column %d: record longer than %zu bytes (an "
                                "unterminated quote?)",
                                (long long)rec->line, rec->nf, r->o.max_record_bytes);
    if (rec->cap - rec->len < n) {
        size_t ncap = rec->cap ? rec->cap : 256;
        while (ncap - rec->len < n)
            ncap *= 2;
        char *nd = realloc(rec->data, ncap);
        if (!nd) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
        rec->data = nd;
        rec->cap = ncap;
    }
    memcpy(rec->data + rec->len, p, n);
    rec->len += n;
    return MARBLE_OK;
}

/* Appends the buffered bytes up to the next delimiter, line end or (quoted) quote. */
static int rec_run(marble_csv_reader *r, csv_rec *rec, int quoted, marble_error *err)
{
    const int delim = quoted ? r->quote : (unsigned char)r->o.delimiter;
    size_t s = r->in_pos, e = s;
    while (e < r->in_len && r->in[e] != delim && r->in[e] != '\n' && r->in[e] != '\r')
        e++;
    if (e == s) return MARBLE_OK;
    MARBLE_RETURN_NOT_OK(rec_append(r, rec, r->in + s, e - s, err));
    r->in_pos = e;
    return MARBLE_OK;
}

static int rec_put(marble_csv_reader *r, csv_rec *rec, int c, marble_error *err)
{
    if (rec->len >= r->o.max_record_bytes)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "line %lld, column %d: record longer than %zu bytes (an "
                                "unterminated quote?)",
                                (long long)rec->line, rec->nf, r->o.max_record_bytes);
    if (rec->len == rec->cap) {
        size_t ncap = rec->cap ? rec->cap * 2 : 256;
        char *nd = realloc(rec->data, ncap);
        if (!nd) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
        rec->data = nd;
        rec->cap = ncap;
    }
    rec->data[rec->len++] = (char)c;
    return MARBLE_OK;
}

static int rec_field(csv_rec *rec, marble_error *err)
{
    if (rec->nf == rec->fcap) {
        if (rec->fcap >= (1 << 20))
            return marble_error_set(err, MARBLE_ERR_CORRUPTION, "line %lld: more than %d fields",
                                    (long long)rec->line, 1 << 20);
        int ncap = rec->fcap ? rec->fcap * 2 : 16;
        csv_fld *nf = realloc(rec->f, (size_t)ncap * sizeof *nf);
        if (!nf) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
        rec->f = nf;
        rec->fcap = ncap;
    }
    rec->f[rec->nf].off = rec->len;
    rec->f[rec->nf].len = 0;
    rec->f[rec->nf].quoted = 0;
    rec->nf++;
    return MARBLE_OK;
}

static void rec_bad(csv_rec *rec, const char *why)
{
    if (rec->bad_col) return;
    rec->bad_col = rec->nf;
    snprintf(rec->bad, sizeof rec->bad, "%s", why);
}

static void rec_free(csv_rec *rec)
{
    free(rec->data);
    free(rec->f);
    memset(rec, 0, sizeof *rec);
}

/* Parses the next record into r->rec; *got = 0 at the end of the input. */
static int parse_record(marble_csv_reader *r, int *got, marble_error *err)
{
    csv_rec *rec = &r->rec;
    const int delim = (unsigned char)r->o.delimiter, q = r->quote;
    int c, c2;
    rec->len = 0;
    rec->nf = 0;
    rec->bad_col = 0;
    rec->bad[0] = 0;
    rec->line = r->line;
    MARBLE_RETURN_NOT_OK(next_byte(r, &c, 1, err));
    if (c < 0) {
        *got = 0;
        return MARBLE_OK;
    }
    *got = 1;
    for (;;) {
        MARBLE_RETURN_NOT_OK(rec_field(rec, err));
        csv_fld *f = &rec->f[rec->nf - 1];
        if (c == q) {
            f->quoted = 1;
            for (;;) {
                MARBLE_RETURN_NOT_OK(rec_run(r, rec, 1, err));
                MARBLE_RETURN_NOT_OK(next_byte(r, &c, 1, err));
                if (c < 0) {
                    rec_bad(rec, "unterminated quoted field");
                    break;
                }
                if (c == q) {
                    MARBLE_RETURN_NOT_OK(next_byte(r, &c2, 0, err));
                    if (c2 != q) break;
                    r->in_pos++;
                } else if (c == '\n') {
                    r->line++;
                } else if (c == '\r') {
                    MARBLE_RETURN_NOT_OK(next_byte(r, &c2, 0, err));
                    if (c2 != '\n') r->line++;
                }
                MARBLE_RETURN_NOT_OK(rec_put(r, rec, c, err));
            }
            if (c >= 0) {
                MARBLE_RETURN_NOT_OK(next_byte(r, &c, 1, err));
                if (c >= 0 && c != delim && c != '\n' && c != '\r')
                    rec_bad(rec, "unexpected character after a closing quote");
            }
        }
        while (c >= 0 && c != delim && c != '\n' && c != '\r') {
            MARBLE_RETURN_NOT_OK(rec_put(r, rec, c, err));
            MARBLE_RETURN_NOT_OK(rec_run(r, rec, 0, err));
            MARBLE_RETURN_NOT_OK(next_byte(r, &c, 1, err));
        }
        f = &rec->f[rec->nf - 1];
        f->len = rec->len - f->off;
        if (c == delim) {
            MARBLE_RETURN_NOT_OK(next_byte(r, &c, 1, err));
            continue;
        }
        if (c == '\r') {
            MARBLE_RETURN_NOT_OK(next_byte(r, &c2, 0, err));
            if (c2 == '\n') r->in_pos++;
        }
        if (c >= 0) r->line++;
        return MARBLE_OK;
    }
}

static int rec_blank(const csv_rec *rec)
{
    return rec->nf == 1 && rec->f[0].len == 0 && !rec->f[0].quoted && !rec->bad_col;
}

/* The next record: a kept one, else a parsed one; blank lines skipped unless one column. */
static int next_record(marble_csv_reader *r, int *got, marble_error *err)
{
    for (;;) {
        if (r->pend_pos < r->npend) {
            csv_rec t = r->rec;
            r->rec = r->pend[r->pend_pos];
            r->pend[r->pend_pos++] = t;
            *got = 1;
        } else {
            MARBLE_RETURN_NOT_OK(parse_record(r, got, err));
        }
        if (!*got || r->ncols == 1 || !rec_blank(&r->rec)) return MARBLE_OK;
    }
}

/* ---- values ---------------------------------------------------------------------------------- */

/* 0 ok, 1 syntax, 2 range. */
static int parse_u64(const char *p, size_t n, uint64_t *out, int *neg)
{
    size_t i = 0;
    *neg = 0;
    if (i < n && (p[i] == '+' || p[i] == '-')) *neg = p[i++] == '-';
    if (i == n) return 1;
    uint64_t v = 0;
    int over = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 1;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            over = 1;
        else
            v = v * 10 + d;
    }
    *out = v;
    return over ? 2 : 0;
}

static int parse_i64(const char *p, size_t n, int64_t *out)
{
    uint64_t u;
    int neg, rc = parse_u64(p, n, &u, &neg);
    if (rc) return rc;
    if (neg) {
        if (u > (uint64_t)INT64_MAX + 1) return 2;
        *out = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    } else {
        if (u > (uint64_t)INT64_MAX) return 2;
        *out = (int64_t)u;
    }
    return 0;
}

static int parse_double(const char *p, size_t n, double *out)
{
    char buf[128];
    if (n == 0 || n >= sizeof buf) return 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    char *end;
    *out = strtod(buf, &end);
    return end == buf + n ? 0 : 1;
}

static int ieq(const char *p, size_t n, const char *w)
{
    size_t m = strlen(w);
    if (n != m) return 0;
    for (size_t i = 0; i < n; i++) {
        char a = p[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != w[i]) return 0;
    }
    return 1;
}

static int parse_bool(const char *p, size_t n, int *out)
{
    if (ieq(p, n, "true") || (n == 1 && p[0] == '1')) {
        *out = 1;
        return 0;
    }
    if (ieq(p, n, "false") || (n == 1 && p[0] == '0')) {
        *out = 0;
        return 0;
    }
    return 1;
}

static int digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DD" at p (exactly 10 bytes). */
static int parse_date(const char *p, size_t n, int64_t *days)
{
    int y, m, d;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 10 || p[4] != '-' || p[7] != '-' || digits(p, 4, &y) || digits(p + 5, 2, &m) ||
        digits(p + 8, 2, &d))
        return 1;
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1]) return 1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (m == 2 && d == 29 && !leap) return 1;
    *days = days_from_civil(y, m, d);
    return 0;
}

/* ISO 8601 into the unit; 0 ok, 1 syntax, 2 range, 3 fraction finer than the unit. */
static int parse_timestamp(const char *p, size_t n, marble_time_unit unit, int64_t *out)
{
    static const int64_t mult[4] = {1, 1000, 1000000, 1000000000};
    int64_t days, secs = 0, frac_ns = 0;
    if (n < 10 || parse_date(p, 10, &days)) return 1;
    size_t i = 10;
    if (i < n && (p[i] == 'T' || p[i] == 't' || p[i] == ' ')) {
        int hh, mm, ss;
        if (n - i < 9 || p[i + 3] != ':' || p[i + 6] != ':' || digits(p + i + 1, 2, &hh) ||
            digits(p + i + 4, 2, &mm) || digits(p + i + 7, 2, &ss) || hh > 23 || mm > 59 || ss > 59)
            return 1;
        secs = hh * 3600 + mm * 60 + ss;
        i += 9;
        if (i < n && p[i] == '.') {
            int nd = 0;
            int64_t scale = 100000000;
            for (i++; i < n && p[i] >= '0' && p[i] <= '9'; i++, nd++) {
                if (nd == 9) return 1;
                frac_ns += (p[i] - '0') * scale;
                scale /= 10;
            }
            if (nd == 0) return 1;
        }
        if (i < n && (p[i] == 'Z' || p[i] == 'z')) {
            i++;
        } else if (i < n && (p[i] == '+' || p[i] == '-')) {
            int oh, om;
            if (n - i != 6 || p[i + 3] != ':' || digits(p + i + 1, 2, &oh) ||
                digits(p + i + 4, 2, &om) || oh > 23 || om > 59)
                return 1;
            int64_t off = oh * 3600 + om * 60;
            secs -= p[i] == '+' ? off : -off;
            i += 6;
        }
    }
    if (i != n) return 1;
    int64_t unit_div = 1000000000 / mult[unit];
    if (frac_ns % unit_div) return 3;
    int64_t v;
    if (__builtin_mul_overflow(days, 86400, &v) || __builtin_add_overflow(v, secs, &v) ||
        __builtin_mul_overflow(v, mult[unit], &v) ||
        __builtin_add_overflow(v, frac_ns / unit_div, &v))
        return 2;
    *out = v;
    return 0;
}

static void trim(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t'))
        (*p)++, (*n)--;
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

static int is_string_type(marble_arrow_type_id id)
{
    return id == MARBLE_ARROW_UTF8 || id == MARBLE_ARROW_LARGE_UTF8 || id == MARBLE_ARROW_BINARY ||
           id == MARBLE_ARROW_LARGE_BINARY || id == MARBLE_ARROW_FIXED_SIZE_BINARY;
}

static int supported_type(marble_arrow_type_id id)
{
    return id != MARBLE_ARROW_NA && id != MARBLE_ARROW_STRUCT;
}

/* Writes "line L, column C: <what> (column 'name')" into rec->bad; returns 1. */
static int value_bad(marble_csv_reader *r, int field, int col, const char *p, size_t n,
                     const char *what)
{
    char shown[40], tn[64];
    size_t k = n < 32 ? n : 32;
    for (size_t i = 0; i < k; i++)
        shown[i] = (unsigned char)p[i] < 0x20 || (unsigned char)p[i] == 0x7f ? '?' : p[i];
    shown[k] = 0;
    const char *tname = marble_arrow_type_name(&r->types[col], tn, sizeof tn);
    r->rec.bad_col = field + 1;
    snprintf(r->rec.bad, sizeof r->rec.bad, "\"%s%s\" %s %s (column '%.40s')", shown,
             n > k ? "..." : "", what, tname, r->schema.children[col]->name);
    return 1;
}

/* Converts field `field` into r->vals[col]; 1 (and rec.bad set) if it does not parse. */
static int convert(marble_csv_reader *r, int field, int col)
{
    const csv_fld *f = &r->rec.f[field];
    const char *p = r->rec.data + f->off;
    size_t n = f->len;
    const marble_arrow_type *t = &r->types[col];
    csv_val *v = &r->vals[col];
    memset(v, 0, sizeof *v);
    int str = is_string_type(t->id);
    if (!f->quoted && n == r->null_len && (!n || !memcmp(p, r->null_value, n)) &&
        (!str || r->o.null_in_strings)) {
        v->kind = 0;
        return 0;
    }
    if (!str) trim(&p, &n);
    int rc;
    switch (t->id) {
    case MARBLE_ARROW_BOOL: {
        int b;
        if (parse_bool(p, n, &b)) return value_bad(r, field, col, p, n, "is not a valid");
        v->kind = 1;
        v->i = b;
        return 0;
    }
    case MARBLE_ARROW_INT8:
    case MARBLE_ARROW_INT16:
    case MARBLE_ARROW_INT32:
    case MARBLE_ARROW_INT64: {
        rc = parse_i64(p, n, &v->i);
        if (rc == 1) return value_bad(r, field, col, p, n, "is not a valid");
        int bits = t->byte_width * 8;
        if (rc == 2 || (bits < 64 && (v->i < -((int64_t)1 << (bits - 1)) ||
                                      v->i > ((int64_t)1 << (bits - 1)) - 1)))
            return value_bad(r, field, col, p, n, "is out of range for");
        v->kind = 1;
        return 0;
    }
    case MARBLE_ARROW_UINT8:
    case MARBLE_ARROW_UINT16:
    case MARBLE_ARROW_UINT32:
    case MARBLE_ARROW_UINT64: {
        int neg;
        rc = parse_u64(p, n, &v->u, &neg);
        if (rc == 1) return value_bad(r, field, col, p, n, "is not a valid");
        int bits = t->byte_width * 8;
        if (rc == 2 || (neg && v->u) || (bits < 64 && v->u >> bits))
            return value_bad(r, field, col, p, n, "is out of range for");
        v->kind = 2;
        return 0;
    }
    case MARBLE_ARROW_FLOAT32:
    case MARBLE_ARROW_FLOAT64:
        if (parse_double(p, n, &v->d)) return value_bad(r, field, col, p, n, "is not a valid");
        if (t->id == MARBLE_ARROW_FLOAT32 && isfinite(v->d) && fabs(v->d) > FLT_MAX)
            return value_bad(r, field, col, p, n, "is out of range for");
        v->kind = 3;
        return 0;
    case MARBLE_ARROW_DATE32: {
        int64_t d;
        rc = parse_i64(p, n, &d);
        if (rc == 1) {
            rc = parse_date(p, n, &d);
            if (rc) return value_bad(r, field, col, p, n, "is not a valid");
        }
        if (rc == 2 || d < INT32_MIN || d > INT32_MAX)
            return value_bad(r, field, col, p, n, "is out of range for");
        v->kind = 1;
        v->i = d;
        return 0;
    }
    case MARBLE_ARROW_TIMESTAMP:
        rc = parse_i64(p, n, &v->i);
        if (rc == 1) rc = parse_timestamp(p, n, t->unit, &v->i);
        if (rc == 1) return value_bad(r, field, col, p, n, "is not a valid");
        if (rc == 2) return value_bad(r, field, col, p, n, "is out of range for");
        if (rc == 3) return value_bad(r, field, col, p, n, "has a fraction finer than");
        v->kind = 1;
        return 0;
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_LARGE_UTF8:
        if (!marble__arrow_utf8_valid((const uint8_t *)p, (int64_t)n, NULL))
            return value_bad(r, field, col, p, n, "is not valid UTF-8 for");
        if (t->id == MARBLE_ARROW_UTF8 && n > (size_t)INT32_MAX / 2)
            return value_bad(r, field, col, p, n, "is too long for");
        v->kind = 4;
        v->p = p;
        v->n = n;
        return 0;
    case MARBLE_ARROW_FIXED_SIZE_BINARY:
        if (n != (size_t)t->byte_width)
            return value_bad(r, field, col, p, n, "has the wrong length for");
        v->kind = 4;
        v->p = p;
        v->n = n;
        return 0;
    default:
        if (t->id == MARBLE_ARROW_BINARY && n > (size_t)INT32_MAX / 2)
            return value_bad(r, field, col, p, n, "is too long for");
        v->kind = 4;
        v->p = p;
        v->n = n;
        return 0;
    }
}

static int append_row(marble_csv_reader *r, marble_error *err)
{
    for (int c = 0; c < r->ncols; c++) {
        const csv_val *v = &r->vals[c];
        int rc;
        switch (v->kind) {
        case 0:
            rc = marble_builder_append_null(r->b, c, err);
            break;
        case 1:
            rc = marble_builder_append_int(r->b, c, v->i, err);
            break;
        case 2:
            rc = marble_builder_append_uint(r->b, c, v->u, err);
            break;
        case 3:
            rc = marble_builder_append_double(r->b, c, v->d, err);
            break;
        default:
            rc = marble_builder_append_bytes(r->b, c, v->p, v->n, err);
            break;
        }
        MARBLE_RETURN_NOT_OK(rc);
    }
    return MARBLE_OK;
}

/* Checks r->rec against the schema and converts it into r->vals; 1 if malformed. */
static int check_record(marble_csv_reader *r)
{
    csv_rec *rec = &r->rec;
    if (rec->bad_col) return 1;
    if (rec->nf != r->ncols) {
        rec->bad_col = rec->nf > r->ncols ? r->ncols + 1 : rec->nf + 1;
        snprintf(rec->bad, sizeof rec->bad, "expected %d fields, found %d", r->ncols, rec->nf);
        return 1;
    }
    for (int i = 0; i < rec->nf; i++)
        if (convert(r, i, r->col_of_field[i])) return 1;
    return 0;
}

/* ---- inference ------------------------------------------------------------------------------- */

enum { SEEN_INT = 1, SEEN_FLOAT = 2, SEEN_BOOL = 4, SEEN_OTHER = 8 };

static const char *inferred_format(int seen)
{
    if (seen & SEEN_OTHER) return "u";
    if (seen & SEEN_BOOL) return seen == SEEN_BOOL ? "b" : "u";
    if (seen & SEEN_FLOAT) return "g";
    if (seen & SEEN_INT) return "l";
    return "u";
}

static void infer_field(const marble_csv_reader *r, const csv_rec *rec, int i, int *seen)
{
    const char *p = rec->data + rec->f[i].off;
    size_t n = rec->f[i].len;
    if (!rec->f[i].quoted && n == r->null_len && (!n || !memcmp(p, r->null_value, n))) return;
    trim(&p, &n);
    int64_t iv;
    double d;
    int b;
    if (parse_i64(p, n, &iv) == 0)
        *seen |= SEEN_INT;
    else if (parse_double(p, n, &d) == 0)
        *seen |= SEEN_FLOAT;
    else if (parse_bool(p, n, &b) == 0)
        *seen |= SEEN_BOOL;
    else
        *seen |= SEEN_OTHER;
}

static int keep_record(marble_csv_reader *r, marble_error *err)
{
    if (r->npend == r->pend_cap) {
        size_t ncap = r->pend_cap ? r->pend_cap * 2 : 64;
        csv_rec *np = realloc(r->pend, ncap * sizeof *np);
        if (!np) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
        r->pend = np;
        r->pend_cap = ncap;
    }
    r->pend[r->npend++] = r->rec;
    memset(&r->rec, 0, sizeof r->rec);
    return MARBLE_OK;
}

/* Reads up to infer_rows records (kept for replay) and builds r->schema from them. `names`:
 * the header record or NULL. */
static int infer_schema(marble_csv_reader *r, const csv_rec *names, marble_error *err)
{
    int rc = MARBLE_OK, got = 1;
    int *seen = NULL;
    char **fnames = NULL;
    marble_field_spec *specs = NULL;
    if (!names) {
        do
            MARBLE_RETURN_NOT_OK(parse_record(r, &got, err));
        while (got && rec_blank(&r->rec));
        if (!got) {
            r->ncols = 0;
            return marble_arrow_schema_make(&r->schema, NULL, 0, NULL, NULL, 0, err);
        }
        r->ncols = r->rec.nf;
        MARBLE_RETURN_NOT_OK(keep_record(r, err));
    } else {
        r->ncols = names->nf;
    }
    seen = calloc((size_t)r->ncols, sizeof *seen);
    fnames = calloc((size_t)r->ncols, sizeof *fnames);
    specs = calloc((size_t)r->ncols, sizeof *specs);
    if (!seen || !fnames || !specs) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
        goto done;
    }
    while ((int64_t)r->npend < r->o.infer_rows) {
        rc = parse_record(r, &got, err);
        if (rc != MARBLE_OK) goto done;
        if (!got) break;
        if (r->ncols != 1 && rec_blank(&r->rec)) continue;
        rc = keep_record(r, err);
        if (rc != MARBLE_OK) goto done;
    }
    for (size_t k = 0; k < r->npend; k++) {
        const csv_rec *rec = &r->pend[k];
        if (rec->bad_col || rec->nf != r->ncols) continue;
        for (int i = 0; i < rec->nf; i++)
            infer_field(r, rec, i, &seen[i]);
    }
    for (int i = 0; i < r->ncols; i++) {
        size_t n = names ? names->f[i].len : 0;
        fnames[i] = malloc(n + 24);
        if (!fnames[i]) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
            goto done;
        }
        if (n) {
            memcpy(fnames[i], names->data + names->f[i].off, n);
            fnames[i][n] = 0;
        } else {
            snprintf(fnames[i], n + 24, "f%d", i);
        }
        specs[i].name = fnames[i];
        specs[i].format = inferred_format(seen[i]);
        specs[i].nullable = 1;
    }
    rc = marble_arrow_schema_make(&r->schema, specs, (size_t)r->ncols, NULL, NULL, 0, err);
done:
    if (fnames)
        for (int i = 0; i < r->ncols; i++)
            free(fnames[i]);
    free(fnames);
    free(specs);
    free(seen);
    return rc;
}

/* ---- the reader ------------------------------------------------------------------------------ */

static int check_options(const marble_csv_options *o, marble_error *err)
{
    const char d = o->delimiter, q = o->quote;
    if (d == '\n' || d == '\r' || d == 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "csv: the delimiter cannot be NUL, CR or LF");
    if (q == '\n' || q == '\r' || q == d)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "csv: the quote cannot be CR, LF or the delimiter");
    if (o->batch_rows < 1 || o->batch_rows > ((int64_t)1 << 30))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "csv: batch_rows must be 1..2^30 (got %lld)",
                                (long long)o->batch_rows);
    if (o->infer_rows < 1)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "csv: infer_rows must be at least 1 (got %lld)",
                                (long long)o->infer_rows);
    if (o->max_record_bytes < 16)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "csv: max_record_bytes must be at least 16");
    if (!o->null_value)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "csv: null_value is NULL");
    return MARBLE_OK;
}

/* Maps header fields to schema columns: by name when every name is a distinct column. */
static int map_header(marble_csv_reader *r, const csv_rec *h, marble_error *err)
{
    if (h->bad_col)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION, "line %lld, column %d: %s",
                                (long long)h->line, h->bad_col, h->bad);
    if (h->nf != r->ncols)
        return marble_error_set(err, MARBLE_ERR_CORRUPTION,
                                "line %lld: the header has %d fields, the schema %d columns",
                                (long long)h->line, h->nf, r->ncols);
    int by_name = 1;
    for (int i = 0; i < h->nf && by_name; i++) {
        const char *p = h->data + h->f[i].off;
        size_t n = h->f[i].len;
        r->col_of_field[i] = -1;
        for (int c = 0; c < r->ncols; c++) {
            const char *name = r->schema.children[c]->name;
            if (name && strlen(name) == n && !memcmp(name, p, n)) {
                for (int j = 0; j < i; j++)
                    if (r->col_of_field[j] == c) by_name = 0;
                r->col_of_field[i] = c;
                break;
            }
        }
        if (r->col_of_field[i] < 0) by_name = 0;
    }
    if (!by_name)
        for (int i = 0; i < r->ncols; i++)
            r->col_of_field[i] = i;
    return MARBLE_OK;
}

static int reader_init(marble_csv_reader *r, const struct ArrowSchema *schema, marble_error *err)
{
    int got = 0;
    /* byte order mark */
    while (r->in_len < 3 && !r->in_eof)
        MARBLE_RETURN_NOT_OK(refill(r, err));
    if (r->in_len >= 3 && !memcmp(r->in, "\xEF\xBB\xBF", 3)) r->in_pos = 3;
    csv_rec header;
    memset(&header, 0, sizeof header);
    int have_header = 0;
    if (r->o.header) {
        do
            MARBLE_RETURN_NOT_OK(parse_record(r, &got, err));
        while (got && rec_blank(&r->rec));
        if (got) {
            header = r->rec;
            memset(&r->rec, 0, sizeof r->rec);
            have_header = 1;
        }
    }
    int rc = MARBLE_OK;
    if (schema) {
        rc = marble_arrow_schema_copy(schema, &r->schema, err);
        if (rc == MARBLE_OK) r->ncols = (int)r->schema.n_children;
    } else if (have_header && header.bad_col) {
        rc = marble_error_set(err, MARBLE_ERR_CORRUPTION, "line %lld, column %d: %s",
                              (long long)header.line, header.bad_col, header.bad);
    } else if (r->o.header && !have_header) {
        r->ncols = 0;
        rc = marble_arrow_schema_make(&r->schema, NULL, 0, NULL, NULL, 0, err);
    } else {
        rc = infer_schema(r, have_header ? &header : NULL, err);
    }
    if (rc == MARBLE_OK && r->ncols > 0) {
        r->types = calloc((size_t)r->ncols, sizeof *r->types);
        r->col_of_field = calloc((size_t)r->ncols, sizeof *r->col_of_field);
        r->vals = calloc((size_t)r->ncols, sizeof *r->vals);
        if (!r->types || !r->col_of_field || !r->vals)
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
        for (int c = 0; c < r->ncols && rc == MARBLE_OK; c++) {
            r->col_of_field[c] = c;
            rc = marble_arrow_type_parse(r->schema.children[c]->format, &r->types[c], err);
        }
        if (rc == MARBLE_OK && schema && have_header) rc = map_header(r, &header, err);
        if (rc == MARBLE_OK) rc = marble_batch_builder_create(&r->schema, &r->b, err);
    }
    rec_free(&header);
    return rc;
}

int marble_csv_reader_create(const marble_csv_source *src, const struct ArrowSchema *schema,
                             const marble_csv_options *opts, marble_csv_reader **out,
                             marble_error *err)
{
    marble_csv_options defaults;
    if (!opts) {
        marble_csv_options_init(&defaults);
        opts = &defaults;
    }
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "csv: out is NULL");
    *out = NULL;
    if (!src || !src->read)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "csv: no read callback");
    MARBLE_RETURN_NOT_OK(check_options(opts, err));
    if (schema) {
        MARBLE_RETURN_NOT_OK(marble_arrow_schema_validate(schema, err));
        if (strcmp(schema->format, "+s") != 0 || schema->n_children < 1)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "csv: the schema must be a struct (\"+s\") with columns");
        for (int64_t c = 0; c < schema->n_children; c++) {
            marble_arrow_type t;
            MARBLE_RETURN_NOT_OK(marble_arrow_type_parse(schema->children[c]->format, &t, err));
            if (!supported_type(t.id) || schema->children[c]->n_children)
                return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                        "csv: column '%.64s': type '%s' cannot be read from CSV",
                                        schema->children[c]->name, schema->children[c]->format);
        }
    }
    marble_csv_reader *r = calloc(1, sizeof *r);
    if (!r) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
    r->src = *src;
    r->o = *opts;
    r->null_len = strlen(opts->null_value);
    r->null_value = malloc(r->null_len + 1);
    r->in = malloc(IN_CAP);
    r->quote = opts->quote ? (unsigned char)opts->quote : -2;
    r->line = 1;
    if (!r->null_value || !r->in) {
        marble_csv_reader_destroy(r);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "csv: out of memory");
    }
    memcpy(r->null_value, opts->null_value, r->null_len + 1);
    r->o.null_value = r->null_value;
    int rc = reader_init(r, schema, err);
    if (rc != MARBLE_OK) {
        marble_csv_reader_destroy(r);
        return rc;
    }
    *out = r;
    return MARBLE_OK;
}

int marble_csv_reader_schema(marble_csv_reader *r, struct ArrowSchema *out, marble_error *err)
{
    return marble_arrow_schema_copy(&r->schema, out, err);
}

static int fail(marble_csv_reader *r, int rc, marble_error *err)
{
    r->failed = rc;
    r->fail_err = *err;
    return rc;
}

int marble_csv_reader_next(marble_csv_reader *r, struct ArrowArray *out, marble_error *err)
{
    memset(out, 0, sizeof *out);
    if (r->failed) {
        if (err) *err = r->fail_err;
        return r->failed;
    }
    if (r->done || r->ncols == 0) return MARBLE_OK;
    marble_error lerr = {0};
    marble_error *e = err ? err : &lerr;
    while (marble_batch_builder_rows(r->b) < r->o.batch_rows) {
        int got, rc = next_record(r, &got, e);
        if (rc != MARBLE_OK) return fail(r, rc, e);
        if (!got) {
            r->done = 1;
            break;
        }
        if (check_record(r)) {
            marble_error bad;
            marble_error_set(&bad, MARBLE_ERR_CORRUPTION, "line %lld, column %d: %s",
                             (long long)r->rec.line, r->rec.bad_col, r->rec.bad);
            if (!r->o.skip_bad_rows) {
                *e = bad;
                return fail(r, MARBLE_ERR_CORRUPTION, e);
            }
            if (!r->st.bad_rows++) {
                r->st.first_bad_line = r->rec.line;
                memcpy(r->st.first_bad_message, bad.message, sizeof bad.message);
            }
            continue;
        }
        rc = append_row(r, e);
        if (rc != MARBLE_OK) return fail(r, rc, e);
        r->st.rows++;
    }
    if (marble_batch_builder_rows(r->b) == 0) return MARBLE_OK;
    int rc = marble_batch_builder_finish(r->b, out, e);
    if (rc != MARBLE_OK) return fail(r, rc, e);
    return MARBLE_OK;
}

void marble_csv_reader_stats(const marble_csv_reader *r, marble_csv_stats *out)
{
    *out = r->st;
}

void marble_csv_reader_destroy(marble_csv_reader *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->npend; i++)
        rec_free(&r->pend[i]);
    free(r->pend);
    rec_free(&r->rec);
    marble_batch_builder_destroy(r->b);
    marble_arrow_schema_release(&r->schema);
    free(r->types);
    free(r->col_of_field);
    free(r->vals);
    free(r->in);
    free(r->null_value);
    free(r);
}
