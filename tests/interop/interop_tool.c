/* Writes the interop IPC files with Marble and checks every value of files apache-arrow wrote. */
#include <inttypes.h>
#include <math.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lsm/sst.h"
#include "marble/arrow.h"
#include "marble/vfs.h"

/* The data set below mirrors js/spec.mjs: same columns, value tables, cases and generator. */

typedef enum kind {
    K_NULL,
    K_BOOL,
    K_INT,
    K_UINT,
    K_F32,
    K_F64,
    K_UTF8,
    K_LARGE_UTF8,
    K_BINARY,
    K_LARGE_BINARY,
    K_FSB,
    K_DATE32,
    K_TS
} kind;

typedef struct bytes {
    const char *p;
    size_t n;
} bytes;

#define B(s)                                                                                       \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
#define TABLE(t) t, sizeof(t) / sizeof((t)[0])

static const int64_t BOOL_V[] = {0, 1, 1, 0, 1, 0, 0};
static const int64_t INT8_V[] = {0, 1, -1, 127, -128, 42, -100};
static const int64_t INT16_V[] = {0, 1, -1, 32767, -32768, 1234, -4321};
static const int64_t INT32_V[] = {0, 1, -1, INT32_MAX, INT32_MIN, 123456789, -987654321};
static const int64_t INT64_V[] = {
    0, 1, -1, INT64_MAX, INT64_MIN, INT64_C(9007199254740993), INT64_C(-1234567890123456789)};
static const uint64_t UINT8_V[] = {0, 1, 255, 128, 127, 200};
static const uint64_t UINT16_V[] = {0, 1, 65535, 32768, 12345};
static const uint64_t UINT32_V[] = {0, 1, UINT32_MAX, UINT32_C(2147483648), UINT32_C(3000000000)};
static const uint64_t UINT64_V[] = {0,
                                    1,
                                    UINT64_MAX,
                                    UINT64_C(9223372036854775808),
                                    UINT64_C(9007199254740993),
                                    UINT64_C(18446744073709551557)};
static const float F32_V[] = {0.0f,      -0.0f, 1.5f,    -2.25f,    INFINITY,
                              -INFINITY, NAN,   FLT_MAX, 0x1p-149f, 0.1f};
static const double F64_V[] = {0.0, -0.0,    1.5,       -1e300, INFINITY, -INFINITY,
                               NAN, DBL_MAX, 0x1p-1074, 0.1,    -123.456};
static const bytes UTF8_V[] = {B(""),
                               B("a"),
                               B("h\xc3\xa9"
                                 "llo"),
                               B("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"),
                               B("\xf0\x9f\x98\x80"),
                               B("\xc3\xbc\xe2\x82\xac\xf0\x9d\x84\x9e"),
                               B("line\nbreak\ttab"),
                               B("the quick brown fox jumps over the lazy dog")};
static const bytes BINARY_V[] = {B(""),
                                 B("\x00"),
                                 B("\x00\x01\x02\xff"),
                                 B("abc"),
                                 B("\xff\xfe\xfd\x00\x00"),
                                 B("\xde\xad\xbe\xef\xca\xfe\xba\xbe")};
static const bytes FSB3_V[] = {B("\x00\x00\x00"), B("abc"), B("\xff\x00\x7f"), B("\x80\x81\x82"),
                               B("xyz")};
static const bytes FSB16_V[] = {
    B("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"),
    B("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
    B("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), B("0123456789abcdef")};
static const int64_t DATE32_V[] = {0, 1, -1, 19000, -719162, 2932896, 11016};
static const int64_t TS_V[] = {
    0,         1,         -1,    1700000000, INT64_C(1700000000123), INT64_C(1700000000123456789),
    INT64_MAX, INT64_MIN, -86400};

typedef struct column {
    const char *name;
    const char *format;
    kind kind;
    int width; /* bytes per value of fixed-width kinds; N of fixed_size_binary */
    int nullable;
    const void *table;
    size_t n;
} column;

static const column COLUMNS[] = {
    {"null", "n", K_NULL, 0, 1, NULL, 1},
    {"bool", "b", K_BOOL, 0, 1, TABLE(BOOL_V)},
    {"int8", "c", K_INT, 1, 1, TABLE(INT8_V)},
    {"int16", "s", K_INT, 2, 1, TABLE(INT16_V)},
    {"int32", "i", K_INT, 4, 1, TABLE(INT32_V)},
    {"int64", "l", K_INT, 8, 1, TABLE(INT64_V)},
    {"uint8", "C", K_UINT, 1, 1, TABLE(UINT8_V)},
    {"uint16", "S", K_UINT, 2, 1, TABLE(UINT16_V)},
    {"uint32", "I", K_UINT, 4, 1, TABLE(UINT32_V)},
    {"uint64", "L", K_UINT, 8, 1, TABLE(UINT64_V)},
    {"float32", "f", K_F32, 4, 1, TABLE(F32_V)},
    {"float64", "g", K_F64, 8, 1, TABLE(F64_V)},
    {"utf8_\xc3\xa9", "u", K_UTF8, 0, 1, TABLE(UTF8_V)},
    {"large_utf8", "U", K_LARGE_UTF8, 0, 1, TABLE(UTF8_V)},
    {"binary", "z", K_BINARY, 0, 1, TABLE(BINARY_V)},
    {"large_binary", "Z", K_LARGE_BINARY, 0, 1, TABLE(BINARY_V)},
    {"fsb3", "w:3", K_FSB, 3, 1, TABLE(FSB3_V)},
    {"date32", "tdD", K_DATE32, 4, 1, TABLE(DATE32_V)},
    {"ts_s", "tss:", K_TS, 8, 1, TABLE(TS_V)},
    {"ts_ms", "tsm:", K_TS, 8, 1, TABLE(TS_V)},
    {"ts_us", "tsu:", K_TS, 8, 1, TABLE(TS_V)},
    {"ts_ns", "tsn:", K_TS, 8, 1, TABLE(TS_V)},
    {"ts_s_utc", "tss:UTC", K_TS, 8, 1, TABLE(TS_V)},
    {"ts_ms_paris", "tsm:Europe/Paris", K_TS, 8, 1, TABLE(TS_V)},
    {"ts_us_offset", "tsu:+05:30", K_TS, 8, 1, TABLE(TS_V)},
    {"ts_ns_ny", "tsn:America/New_York", K_TS, 8, 1, TABLE(TS_V)},
    {"int32_required", "i", K_INT, 4, 0, TABLE(INT32_V)},
    {"fsb16", "w:16", K_FSB, 16, 1, TABLE(FSB16_V)},
};
#define NCOL ((int)(sizeof(COLUMNS) / sizeof(COLUMNS[0])))

/* Batch {b, start, length} holds generator rows start .. start+length-1 of batch index b; a start
 * above 0 makes the writer slice a larger batch (child offsets, null_count -1). */
typedef struct batch_spec {
    int b, start, length;
} batch_spec;

typedef struct case_spec {
    const char *name;
    batch_spec batches[5];
    int n;
    int alignment; /* Marble's write option; apache-arrow always aligns to 8 */
} case_spec;

static const case_spec CASES[] = {
    {"types", {{0, 0, 9}, {1, 0, 0}, {2, 0, 1}, {3, 0, 700}, {4, 0, 64}}, 5, 8},
    {"no_batches", {{0, 0, 0}}, 0, 8},
    {"one_empty", {{0, 0, 0}}, 1, 8},
    {"sliced", {{0, 7, 43}, {5, 13, 100}}, 2, 8},
    {"aligned64", {{6, 0, 33}, {1, 0, 0}, {7, 0, 150}}, 3, 64},
};
#define NCASE ((int)(sizeof(CASES) / sizeof(CASES[0])))

static const char *const FORMATS[] = {"stream", "file"};
static const char *const CODECS[] = {"none", "lz4", "zstd"};

static int is_null(int c, int b, int r)
{
    if (COLUMNS[c].kind == K_NULL) return 1;
    if (!COLUMNS[c].nullable) return 0;
    return (r * 3 + b + c) % 7 == 2 || (b == 4 && c % 3 == 0);
}

static size_t value_index(int c, int b, int r)
{
    return (size_t)(r + 3 * b + c) % COLUMNS[c].n;
}

static int64_t int_value(int c, size_t i)
{
    return ((const int64_t *)COLUMNS[c].table)[i];
}

static uint64_t uint_value(int c, size_t i)
{
    return ((const uint64_t *)COLUMNS[c].table)[i];
}

static bytes bytes_value(int c, size_t i)
{
    return ((const bytes *)COLUMNS[c].table)[i];
}

static void file_name(char *buf, size_t cap, const char *dir, int cs, int fmt, int codec)
{
    snprintf(buf, cap, "%s/%s.%s.%s.arrow", dir, CASES[cs].name, FORMATS[fmt], CODECS[codec]);
}

/* ---- writing -------------------------------------------------------------------------------- */

static int append_row(marble_batch_builder *bld, int b, int r, marble_error *err)
{
    for (int c = 0; c < NCOL; c++) {
        size_t i = value_index(c, b, r);
        int rc;
        if (is_null(c, b, r)) {
            rc = marble_builder_append_null(bld, c, err);
        } else {
            switch (COLUMNS[c].kind) {
            case K_UINT:
                rc = marble_builder_append_uint(bld, c, uint_value(c, i), err);
                break;
            case K_F32:
                rc =
                    marble_builder_append_double(bld, c, ((const float *)COLUMNS[c].table)[i], err);
                break;
            case K_F64:
                rc = marble_builder_append_double(bld, c, ((const double *)COLUMNS[c].table)[i],
                                                  err);
                break;
            case K_UTF8:
            case K_LARGE_UTF8:
            case K_BINARY:
            case K_LARGE_BINARY:
            case K_FSB:
                rc = marble_builder_append_bytes(bld, c, bytes_value(c, i).p, bytes_value(c, i).n,
                                                 err);
                break;
            default:
                rc = marble_builder_append_int(bld, c, int_value(c, i), err);
                break;
            }
        }
        if (rc != MARBLE_OK) return rc;
    }
    return MARBLE_OK;
}

typedef struct slice_view {
    struct ArrowArray parent;
    struct ArrowArray children[NCOL];
    struct ArrowArray *child_ptrs[NCOL];
} slice_view;

static void release_view(struct ArrowArray *a)
{
    a->release = NULL;
}

/* A view of rows start .. start+length-1 of `full` (which must outlive it). */
static void make_slice(const struct ArrowArray *full, int start, int length, slice_view *v)
{
    for (int c = 0; c < NCOL; c++) {
        v->children[c] = *full->children[c];
        v->children[c].offset += start;
        v->children[c].length = length;
        v->children[c].null_count = -1;
        v->children[c].release = release_view;
        v->child_ptrs[c] = &v->children[c];
    }
    v->parent = *full;
    v->parent.length = length;
    v->parent.null_count = 0;
    v->parent.children = v->child_ptrs;
    v->parent.release = release_view;
}

static int write_all_to(const char *path, const marble_ipc_buffer *buf)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int rc = buf->size && fwrite(buf->data, 1, buf->size, f) != buf->size ? -1 : 0;
    if (fclose(f) != 0) rc = -1;
    return rc;
}

static int write_one(const char *path, int cs, int fmt, int codec, marble_error *err)
{
    marble_field_spec fields[NCOL];
    for (int c = 0; c < NCOL; c++)
        fields[c] = (marble_field_spec){COLUMNS[c].name, COLUMNS[c].format, COLUMNS[c].nullable};
    const char *keys[] = {"interop.case", "interop.writer"};
    const char *values[] = {CASES[cs].name, "marble"};
    struct ArrowSchema schema = {0};
    struct ArrowArray batch = {0};
    marble_batch_builder *bld = NULL;
    marble_ipc_writer *w = NULL;
    marble_ipc_buffer buf = {0};
    marble_ipc_write_options opts = {(marble_ipc_format)fmt, (marble_ipc_compression)codec, 0,
                                     CASES[cs].alignment};
    int rc = marble_arrow_schema_make(&schema, fields, NCOL, keys, values, 2, err);
    if (rc == MARBLE_OK) rc = marble_batch_builder_create(&schema, &bld, err);
    if (rc == MARBLE_OK)
        rc = marble_ipc_writer_create(marble_ipc_buffer_sink(&buf), &schema, &opts, &w, err);
    for (int k = 0; rc == MARBLE_OK && k < CASES[cs].n; k++) {
        const batch_spec *bs = &CASES[cs].batches[k];
        for (int r = 0; rc == MARBLE_OK && r < bs->start + bs->length; r++)
            rc = append_row(bld, bs->b, r, err);
        if (rc == MARBLE_OK) rc = marble_batch_builder_finish(bld, &batch, err);
        if (rc == MARBLE_OK) {
            if (bs->start > 0) {
                slice_view view;
                make_slice(&batch, bs->start, bs->length, &view);
                rc = marble_ipc_writer_write(w, &view.parent, err);
            } else {
                rc = marble_ipc_writer_write(w, &batch, err);
            }
            marble_arrow_array_release(&batch);
        }
    }
    if (rc == MARBLE_OK) rc = marble_ipc_writer_finish(w, err);
    if (rc == MARBLE_OK && write_all_to(path, &buf) != 0)
        rc = marble_error_set(err, MARBLE_ERR_IO, "cannot write %s", path);
    marble_ipc_writer_destroy(w);
    marble_batch_builder_destroy(bld);
    marble_arrow_schema_release(&schema);
    free(buf.data);
    return rc;
}

static int cmd_write(const char *dir)
{
    char path[4096];
    int failed = 0, files = 0;
    mkdir(dir, 0777);
    for (int cs = 0; cs < NCASE; cs++) {
        for (int fmt = 0; fmt < 2; fmt++) {
            for (int codec = 0; codec < 3; codec++) {
                marble_error err = {0};
                file_name(path, sizeof path, dir, cs, fmt, codec);
                files++;
                int rc = write_one(path, cs, fmt, codec, &err);
                if (rc != MARBLE_OK) {
                    failed++;
                    remove(path);
                    printf("FAIL write %s: %s: %s\n", strrchr(path, '/') + 1,
                           marble_status_name(rc), err.message);
                }
            }
        }
    }
    printf("marble wrote %d of %d files into %s\n", files - failed, files, dir);
    return failed ? 1 : 0;
}

/* ---- checking ------------------------------------------------------------------------------- */

#define MAX_REPORTS 12

typedef struct report {
    const char *file;
    const char *what; /* "read" (marble_ipc_reader_read) or "stream" (the ArrowArrayStream) */
    int count;
} report;

static void problem(report *rep, const char *fmt, ...) MARBLE_PRINTF(2, 3);

static void problem(report *rep, const char *fmt, ...)
{
    if (rep->count == 0) printf("FAIL %s\n", rep->file);
    if (rep->count++ >= MAX_REPORTS) return;
    va_list ap;
    va_start(ap, fmt);
    printf("       [%s] ", rep->what);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static void hex(char *out, size_t cap, const void *p, size_t n)
{
    size_t at = 0;
    at += (size_t)snprintf(out + at, cap - at, "[");
    for (size_t i = 0; i < n && i < 16 && at < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, i ? " %02x" : "%02x", ((const uint8_t *)p)[i]);
    if (at < cap) snprintf(out + at, cap - at, n > 16 ? " ... (%zu bytes)]" : "]", n);
}

static int bit(const void *buf, int64_t i)
{
    return (((const uint8_t *)buf)[i >> 3] >> (i & 7)) & 1;
}

static int meta_get(const char *meta, const char *key, char *buf, size_t cap)
{
    if (!meta) return -1;
    int32_t n, kl, vl;
    const char *p = meta;
    memcpy(&n, p, 4);
    p += 4;
    for (int32_t i = 0; i < n; i++) {
        memcpy(&kl, p, 4);
        p += 4;
        const char *k = p;
        p += kl;
        memcpy(&vl, p, 4);
        p += 4;
        if ((size_t)kl == strlen(key) && memcmp(k, key, (size_t)kl) == 0 && (size_t)vl < cap) {
            memcpy(buf, p, (size_t)vl);
            buf[vl] = '\0';
            return 0;
        }
        p += vl;
    }
    return -1;
}

static int check_schema(const struct ArrowSchema *s, int cs, const char *writer, report *rep)
{
    char buf[256];
    if (!s->format || strcmp(s->format, "+s") != 0) {
        problem(rep, "schema: format \"%s\", expected \"+s\"", s->format ? s->format : "(null)");
        return -1;
    }
    if (s->n_children != NCOL) {
        problem(rep, "schema: %" PRId64 " fields, expected %d", s->n_children, NCOL);
        return -1;
    }
    for (int c = 0; c < NCOL; c++) {
        const struct ArrowSchema *f = s->children[c];
        if (!f->name || strcmp(f->name, COLUMNS[c].name) != 0)
            problem(rep, "field %d: name \"%s\", expected \"%s\"", c, f->name ? f->name : "(null)",
                    COLUMNS[c].name);
        if (!f->format || strcmp(f->format, COLUMNS[c].format) != 0)
            problem(rep, "field %s: format \"%s\", expected \"%s\"", COLUMNS[c].name,
                    f->format ? f->format : "(null)", COLUMNS[c].format);
        if (((f->flags & ARROW_FLAG_NULLABLE) != 0) != COLUMNS[c].nullable)
            problem(rep, "field %s: nullable flag %d, expected %d", COLUMNS[c].name,
                    (f->flags & ARROW_FLAG_NULLABLE) != 0, COLUMNS[c].nullable);
        if (f->n_children != 0 || f->dictionary)
            problem(rep, "field %s: unexpected children or dictionary", COLUMNS[c].name);
    }
    if (meta_get(s->metadata, "interop.case", buf, sizeof buf) != 0 ||
        strcmp(buf, CASES[cs].name) != 0)
        problem(rep, "schema metadata interop.case missing or not \"%s\"", CASES[cs].name);
    if (meta_get(s->metadata, "interop.writer", buf, sizeof buf) != 0 || strcmp(buf, writer) != 0)
        problem(rep, "schema metadata interop.writer missing or not \"%s\"", writer);
    return 0;
}

static int expected_buffers(kind k)
{
    switch (k) {
    case K_NULL:
        return 0;
    case K_UTF8:
    case K_LARGE_UTF8:
    case K_BINARY:
    case K_LARGE_BINARY:
        return 3;
    default:
        return 2;
    }
}

/* Compares row j (absolute index into the child's buffers) with table entry i; writes a
 * description of the stored value into got and returns 0 on a match. */
static int compare_value(int c, const struct ArrowArray *a, int64_t j, size_t i, char *want,
                         char *got, size_t cap)
{
    const column *col = &COLUMNS[c];
    const uint8_t *data = a->buffers[1];
    switch (col->kind) {
    case K_BOOL: {
        int v = bit(data, j);
        snprintf(want, cap, "%" PRId64, int_value(c, i));
        snprintf(got, cap, "%d", v);
        return v != int_value(c, i);
    }
    case K_INT:
    case K_DATE32:
    case K_TS: {
        int64_t v;
        if (col->width == 1) {
            int8_t x;
            memcpy(&x, data + j, 1);
            v = x;
        } else if (col->width == 2) {
            int16_t x;
            memcpy(&x, data + j * 2, 2);
            v = x;
        } else if (col->width == 4) {
            int32_t x;
            memcpy(&x, data + j * 4, 4);
            v = x;
        } else {
            memcpy(&v, data + j * 8, 8);
        }
        snprintf(want, cap, "%" PRId64, int_value(c, i));
        snprintf(got, cap, "%" PRId64, v);
        return v != int_value(c, i);
    }
    case K_UINT: {
        uint64_t v = 0;
        if (col->width == 1) {
            v = data[j];
        } else if (col->width == 2) {
            uint16_t x;
            memcpy(&x, data + j * 2, 2);
            v = x;
        } else if (col->width == 4) {
            uint32_t x;
            memcpy(&x, data + j * 4, 4);
            v = x;
        } else {
            memcpy(&v, data + j * 8, 8);
        }
        snprintf(want, cap, "%" PRIu64, uint_value(c, i));
        snprintf(got, cap, "%" PRIu64, v);
        return v != uint_value(c, i);
    }
    case K_F32: {
        float v, e = ((const float *)col->table)[i];
        memcpy(&v, data + j * 4, 4);
        snprintf(want, cap, "%.9g", (double)e);
        snprintf(got, cap, "%.9g", (double)v);
        return isnan(e) ? !isnan(v) : memcmp(&v, &e, 4) != 0;
    }
    case K_F64: {
        double v, e = ((const double *)col->table)[i];
        memcpy(&v, data + j * 8, 8);
        snprintf(want, cap, "%.17g", e);
        snprintf(got, cap, "%.17g", v);
        return isnan(e) ? !isnan(v) : memcmp(&v, &e, 8) != 0;
    }
    case K_UTF8:
    case K_BINARY:
    case K_LARGE_UTF8:
    case K_LARGE_BINARY:
    case K_FSB: {
        bytes e = bytes_value(c, i);
        int64_t lo, hi;
        if (col->kind == K_FSB) {
            lo = j * col->width;
            hi = lo + col->width;
        } else if (col->kind == K_UTF8 || col->kind == K_BINARY) {
            int32_t o[2];
            memcpy(o, data + j * 4, 8);
            lo = o[0];
            hi = o[1];
        } else {
            memcpy(&lo, data + j * 8, 8);
            memcpy(&hi, data + j * 8 + 8, 8);
        }
        hex(want, cap, e.p, e.n);
        if (lo < 0 || hi < lo || hi - lo > (1 << 20)) {
            snprintf(got, cap, "offsets [%" PRId64 ", %" PRId64 ")", lo, hi);
            return 1;
        }
        const uint8_t *v = col->kind == K_FSB ? data : a->buffers[2];
        if (hi > lo && !v) {
            snprintf(got, cap, "a NULL data buffer");
            return 1;
        }
        hex(got, cap, v ? v + lo : NULL, (size_t)(hi - lo));
        return (size_t)(hi - lo) != e.n || (e.n && memcmp(v + lo, e.p, e.n) != 0);
    }
    default:
        snprintf(want, cap, "?");
        snprintf(got, cap, "?");
        return 1;
    }
}

static void check_batch(const struct ArrowSchema *schema, const struct ArrowArray *a,
                        const batch_spec *bs, int k, report *rep)
{
    marble_error err = {0};
    char want[160], got[160];
    if (a->length != bs->length)
        problem(rep, "batch %d: length %" PRId64 ", expected %d", k, a->length, bs->length);
    if (a->n_children != NCOL || a->n_buffers != 1) {
        problem(rep, "batch %d: %" PRId64 " children and %" PRId64 " buffers, expected %d and 1", k,
                a->n_children, a->n_buffers, NCOL);
        return;
    }
    if (a->null_count != 0 && a->null_count != -1)
        problem(rep, "batch %d: struct null_count %" PRId64 ", expected 0", k, a->null_count);
    int rc = marble_arrow_array_validate(schema, a, MARBLE_VALIDATE_UTF8, &err);
    if (rc != MARBLE_OK)
        problem(rep, "batch %d: marble_arrow_array_validate: %s: %s", k, marble_status_name(rc),
                err.message);
    int64_t rows = a->length < bs->length ? a->length : bs->length;
    for (int c = 0; c < NCOL; c++) {
        const struct ArrowArray *ch = a->children[c];
        const char *name = COLUMNS[c].name;
        int64_t nulls = 0;
        for (int r = bs->start; r < bs->start + bs->length; r++)
            nulls += is_null(c, bs->b, r);
        if (ch->n_buffers != expected_buffers(COLUMNS[c].kind)) {
            problem(rep, "batch %d column %s: %" PRId64 " buffers, expected %d", k, name,
                    ch->n_buffers, expected_buffers(COLUMNS[c].kind));
            continue;
        }
        if (ch->length < a->offset + a->length) {
            problem(rep, "batch %d column %s: length %" PRId64 " shorter than the batch", k, name,
                    ch->length);
            continue;
        }
        if (ch->null_count != -1 && ch->null_count != nulls && a->offset == 0 &&
            ch->length == a->length)
            problem(rep, "batch %d column %s: null_count %" PRId64 ", expected %" PRId64, k, name,
                    ch->null_count, nulls);
        if (COLUMNS[c].kind == K_NULL || rows == 0) continue;
        if (!ch->buffers[1]) {
            problem(rep, "batch %d column %s: NULL data buffer", k, name);
            continue;
        }
        for (int64_t i = 0; i < rows; i++) {
            int r = bs->start + (int)i;
            int64_t j = ch->offset + a->offset + i;
            int valid = ch->buffers[0] ? bit(ch->buffers[0], j) : 1;
            int want_null = is_null(c, bs->b, r);
            if (valid == want_null) {
                problem(rep, "batch %d row %" PRId64 " column %s: expected %s, got %s", k, i, name,
                        want_null ? "null" : "a value", valid ? "a value" : "null");
                continue;
            }
            if (want_null) continue;
            if (compare_value(c, ch, j, value_index(c, bs->b, r), want, got, sizeof want))
                problem(rep, "batch %d row %" PRId64 " column %s: expected %s, got %s", k, i, name,
                        want, got);
        }
    }
}

static void check_stream(marble_ipc_reader *r, int cs, const char *writer, report *rep)
{
    struct ArrowArrayStream st = {0};
    struct ArrowSchema schema = {0};
    marble_error err = {0};
    int rc = marble_ipc_reader_stream(r, &st, &err);
    marble_ipc_reader_destroy(r);
    if (rc != MARBLE_OK) {
        problem(rep, "marble_ipc_reader_stream: %s: %s", marble_status_name(rc), err.message);
        return;
    }
    rc = st.get_schema(&st, &schema);
    if (rc != 0) {
        problem(rep, "get_schema: %d: %s", rc, st.get_last_error(&st));
    } else if (check_schema(&schema, cs, writer, rep) == 0) {
        int k = 0;
        for (;;) {
            struct ArrowArray a = {0};
            rc = st.get_next(&st, &a);
            if (rc != 0) {
                problem(rep, "get_next: %d: %s", rc, st.get_last_error(&st));
                break;
            }
            if (!a.release) break;
            if (k < CASES[cs].n) check_batch(&schema, &a, &CASES[cs].batches[k], k, rep);
            k++;
            a.release(&a);
        }
        if (k != CASES[cs].n)
            problem(rep, "the stream gave %d batches, expected %d", k, CASES[cs].n);
    }
    marble_arrow_schema_release(&schema);
    st.release(&st);
}

static int check_one(const char *path, int cs, int fmt, const char *writer)
{
    report rep = {strrchr(path, '/') + 1, "read", 0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("FAIL %s: missing\n", rep.file);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc(size > 0 ? (size_t)size : 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(data);
        problem(&rep, "cannot read the file");
        return 1;
    }
    fclose(f);

    marble_ipc_source src = {data, (size_t)size, NULL, NULL, NULL};
    marble_ipc_reader *r = NULL;
    struct ArrowSchema schema = {0};
    marble_error err = {0};
    int rc = marble_ipc_reader_open(&src, &r, &err);
    if (rc != MARBLE_OK) {
        problem(&rep, "marble_ipc_reader_open: %s: %s", marble_status_name(rc), err.message);
        goto done;
    }
    if ((int)marble_ipc_reader_format(r) != fmt)
        problem(&rep, "detected format %d, expected %s", (int)marble_ipc_reader_format(r),
                FORMATS[fmt]);
    rc = marble_ipc_reader_schema(r, &schema, &err);
    if (rc != MARBLE_OK) {
        problem(&rep, "marble_ipc_reader_schema: %s: %s", marble_status_name(rc), err.message);
    } else if (check_schema(&schema, cs, writer, &rep) == 0) {
        int64_t n = marble_ipc_reader_num_batches(r);
        if (n != CASES[cs].n) problem(&rep, "num_batches %" PRId64 ", expected %d", n, CASES[cs].n);
        for (int k = 0; k < CASES[cs].n && k < n; k++) {
            struct ArrowArray a = {0};
            rc = marble_ipc_reader_read(r, k, &a, &err);
            if (rc != MARBLE_OK) {
                problem(&rep, "marble_ipc_reader_read(%d): %s: %s", k, marble_status_name(rc),
                        err.message);
                continue;
            }
            check_batch(&schema, &a, &CASES[cs].batches[k], k, &rep);
            a.release(&a);
        }
    }
    marble_arrow_schema_release(&schema);
    rep.what = "stream";
    check_stream(r, cs, writer, &rep);
    r = NULL;
done:
    marble_ipc_reader_destroy(r);
    free(data);
    if (rep.count > MAX_REPORTS) printf("       ... %d more\n", rep.count - MAX_REPORTS);
    if (rep.count == 0) printf("ok   %s\n", rep.file);
    return rep.count != 0;
}

static int cmd_check(const char *dir, const char *writer)
{
    char path[4096];
    int failed = 0, files = 0;
    for (int cs = 0; cs < NCASE; cs++) {
        for (int fmt = 0; fmt < 2; fmt++) {
            for (int codec = 0; codec < 3; codec++) {
                file_name(path, sizeof path, dir, cs, fmt, codec);
                files++;
                failed += check_one(path, cs, fmt, writer);
            }
        }
    }
    printf("marble read %d files written by %s: %d ok, %d failed\n", files, writer, files - failed,
           failed);
    return failed ? 1 : 0;
}

/* ---- SSTables --------------------------------------------------------------------------------
 * `sst DIR` writes DIR/sst-{none,lz4,zstd}.sst, SSTables of the table
 * "id:int64!,name:utf8,score:float64,day:date32" keyed by id, that js/check_sst.mjs reads. Key k
 * in [0, SST_KEYS): id 3k; 2 versions when k % 4 == 0, else 1; version j (0 newest) has seq
 * 10k + (versions - j); keys with k % 10 == 5 are one delete (name, score, day null); puts have
 * name "name-k-j", score k / 2 + j, day 19000 + k. 128 rows per batch. Marble then opens each
 * file back and looks up every key (a control). */

#define SST_KEYS 1000
#define SST_BATCH_ROWS 128

static int sst_fail(const char *what, const marble_error *e)
{
    fprintf(stderr, "interop sst: %s: %s\n", what, e->message);
    return 1;
}

static int sst_write_one(marble_fs *fs, const char *uri, const marble__row_codec *c,
                         marble_ipc_compression comp)
{
    marble_error e = {0};
    marble_batch_builder *b = NULL;
    marble__sst_writer *w = NULL;
    marble__sst *s = NULL;
    struct ArrowArray a = {0};
    marble__bytes key = {0}, val = {0};
    uint64_t *seqs = calloc(2 * SST_KEYS, sizeof *seqs);
    int *ops = calloc(2 * SST_KEYS, sizeof *ops);
    int rc = 1, n = 0;
    if (!seqs || !ops) goto done;
    if (marble_batch_builder_create(&c->schema, &b, &e) != MARBLE_OK) {
        sst_fail("builder", &e);
        goto done;
    }
    for (int k = 0; k < SST_KEYS; k++) {
        int nv = k % 4 == 0 ? 2 : 1;
        for (int j = 0; j < nv; j++, n++) {
            int del = k % 10 == 5;
            char name[32];
            snprintf(name, sizeof name, "name-%d-%d", k, j);
            seqs[n] = (uint64_t)(10 * k + (nv - j));
            ops[n] = !del;
            int r = marble_builder_append_int(b, 0, 3 * k, &e);
            if (r == MARBLE_OK)
                r = del ? marble_builder_append_null(b, 1, &e)
                        : marble_builder_append_bytes(b, 1, name, strlen(name), &e);
            if (r == MARBLE_OK)
                r = del ? marble_builder_append_null(b, 2, &e)
                        : marble_builder_append_double(b, 2, k / 2.0 + j, &e);
            if (r == MARBLE_OK)
                r = del ? marble_builder_append_null(b, 3, &e)
                        : marble_builder_append_int(b, 3, 19000 + k, &e);
            if (r != MARBLE_OK) {
                sst_fail("append", &e);
                goto done;
            }
        }
    }
    marble__sst_options o = {
        .batch_rows = SST_BATCH_ROWS, .compression = comp, .bloom_bits_per_key = 10};
    if (marble_batch_builder_finish(b, &a, &e) != MARBLE_OK ||
        marble__sst_writer_create(fs, uri, c, &o, &w, &e) != MARBLE_OK) {
        sst_fail(uri, &e);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        key.len = val.len = 0;
        int r = marble__key_encode_row(&c->keys, &a, i, &key, &e);
        if (r == MARBLE_OK && ops[i]) r = marble__row_encode(c, &a, i, &val, &e);
        if (r == MARBLE_OK)
            r = marble__sst_writer_add(w, key.data, key.len, seqs[i], ops[i], val.data, val.len,
                                       &e);
        if (r != MARBLE_OK) {
            sst_fail(uri, &e);
            goto done;
        }
    }
    if (marble__sst_writer_finish(w, NULL, &e) != MARBLE_OK ||
        marble__sst_open(fs, NULL, uri, c, 1, &s, &e) != MARBLE_OK) {
        sst_fail(uri, &e);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        uint64_t seq;
        int op;
        key.len = 0;
        if (marble__key_encode_row(&c->keys, &a, i, &key, &e) != MARBLE_OK ||
            marble__sst_get(s, key.data, key.len, seqs[i], &seq, &op, &val, &e) != MARBLE_OK) {
            sst_fail("control lookup", &e);
            goto done;
        }
        if (seq != seqs[i] || op != ops[i]) {
            fprintf(stderr, "interop sst: %s: row %d: seq %llu op %d, want %llu %d\n", uri, i,
                    (unsigned long long)seq, op, (unsigned long long)seqs[i], ops[i]);
            goto done;
        }
    }
    printf("ok   %s (%d rows, %lld batches, %llu bytes)\n", uri, n,
           (long long)marble__sst_num_batches(s), (unsigned long long)marble__sst_file_size(s));
    rc = 0;
done:
    marble__sst_unref(s);
    marble__sst_writer_destroy(w);
    marble_batch_builder_destroy(b);
    marble_arrow_array_release(&a);
    marble__bytes_free(&key);
    marble__bytes_free(&val);
    free(seqs);
    free(ops);
    return rc;
}

static int cmd_sst(const char *dir)
{
    marble_error e = {0};
    marble_fs *fs = NULL;
    struct ArrowSchema schema = {0};
    marble__row_codec c;
    int key = 0, failed = 0;
    if (marble_fs_create(&fs, &e) != MARBLE_OK || marble_fs_mkdir(fs, dir, 1, &e) != MARBLE_OK ||
        marble_arrow_schema_parse("id:int64!,name:utf8,score:float64,day:date32", &schema, &e) !=
            MARBLE_OK ||
        marble__row_codec_init(&c, &schema, &key, 1, &e) != MARBLE_OK) {
        marble_arrow_schema_release(&schema);
        marble_fs_destroy(fs, NULL);
        return sst_fail("setup", &e);
    }
    static const char *names[3] = {"none", "lz4", "zstd"};
    static const marble_ipc_compression comps[3] = {MARBLE_IPC_UNCOMPRESSED, MARBLE_IPC_LZ4_FRAME,
                                                    MARBLE_IPC_ZSTD};
    for (int i = 0; i < 3; i++) {
        char uri[4096];
        snprintf(uri, sizeof uri, "%s/sst-%s.sst", dir, names[i]);
        failed += sst_write_one(fs, uri, &c, comps[i]);
    }
    marble__row_codec_free(&c);
    marble_arrow_schema_release(&schema);
    if (marble_fs_destroy(fs, &e) != MARBLE_OK) return sst_fail("fs", &e);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "write") == 0) return cmd_write(argv[2]);
    if (argc == 4 && strcmp(argv[1], "check") == 0) return cmd_check(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "sst") == 0) return cmd_sst(argv[2]);
    fprintf(stderr, "usage: %s write DIR | check DIR WRITER | sst DIR\n", argv[0]);
    return 2;
}
