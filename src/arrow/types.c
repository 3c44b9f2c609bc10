/* Format strings of the C Data Interface <-> marble_arrow_type, type names, buffer layouts. */
#include "arrow/arrow_internal.h"

#include <stdio.h>
#include <string.h>

static const char unit_chars[4] = {'s', 'm', 'u', 'n'};
static const char *const unit_names[4] = {"s", "ms", "us", "ns"};

static int unsupported(marble_error *err, const char *format)
{
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                            "unsupported Arrow format string \"%.64s\"", format);
}

/* Per type id: its format string (NULL for parametric types), name and value width in bytes. */
static const struct type_info {
    const char *format;
    const char *name;
    int32_t width;
} type_infos[] = {
    [MARBLE_ARROW_NA] = {"n", "null", 0},
    [MARBLE_ARROW_BOOL] = {"b", "bool", 0},
    [MARBLE_ARROW_INT8] = {"c", "int8", 1},
    [MARBLE_ARROW_INT16] = {"s", "int16", 2},
    [MARBLE_ARROW_INT32] = {"i", "int32", 4},
    [MARBLE_ARROW_INT64] = {"l", "int64", 8},
    [MARBLE_ARROW_UINT8] = {"C", "uint8", 1},
    [MARBLE_ARROW_UINT16] = {"S", "uint16", 2},
    [MARBLE_ARROW_UINT32] = {"I", "uint32", 4},
    [MARBLE_ARROW_UINT64] = {"L", "uint64", 8},
    [MARBLE_ARROW_FLOAT32] = {"f", "float32", 4},
    [MARBLE_ARROW_FLOAT64] = {"g", "float64", 8},
    [MARBLE_ARROW_UTF8] = {"u", "utf8", 0},
    [MARBLE_ARROW_LARGE_UTF8] = {"U", "large_utf8", 0},
    [MARBLE_ARROW_BINARY] = {"z", "binary", 0},
    [MARBLE_ARROW_LARGE_BINARY] = {"Z", "large_binary", 0},
    [MARBLE_ARROW_FIXED_SIZE_BINARY] = {NULL, "fixed_size_binary", 0},
    [MARBLE_ARROW_DATE32] = {"tdD", "date32", 4},
    [MARBLE_ARROW_TIMESTAMP] = {NULL, "timestamp", 8},
    [MARBLE_ARROW_STRUCT] = {"+s", "struct", 0},
};
#define N_TYPE_IDS ((int)(sizeof type_infos / sizeof type_infos[0]))

static void set_simple(marble_arrow_type *out, marble_arrow_type_id id)
{
    out->id = id;
    out->byte_width = type_infos[id].width;
}

static int parse_fixed_width(const char *format, marble_arrow_type *out, marble_error *err)
{
    const char *p = format + 2;
    int64_t n = 0;
    if (*p < '1' || *p > '9') goto bad;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') goto bad;
        n = n * 10 + (*p - '0');
        if (n > INT32_MAX / 8) goto bad; /* the width in bits must fit an int */
    }
    set_simple(out, MARBLE_ARROW_FIXED_SIZE_BINARY);
    out->byte_width = (int32_t)n;
    return MARBLE_OK;
bad:
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                            "bad Arrow format string \"%.64s\": expected \"w:N\" with N from 1 to "
                            "268435455",
                            format);
}

int marble_arrow_type_parse(const char *format, marble_arrow_type *out, marble_error *err)
{
    marble_arrow_type t;
    memset(&t, 0, sizeof t);
    if (!format)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "Arrow format string is NULL");
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "output type is NULL");
    for (int id = 0; id < N_TYPE_IDS; id++) {
        if (type_infos[id].format && !strcmp(format, type_infos[id].format)) {
            set_simple(&t, (marble_arrow_type_id)id);
            *out = t;
            return MARBLE_OK;
        }
    }
    if (format[0] == 'w' && format[1] == ':') {
        int rc = parse_fixed_width(format, &t, err);
        if (rc == MARBLE_OK) *out = t;
        return rc;
    }
    if (format[0] == 't' && format[1] == 's' && format[2] && format[3] == ':') {
        const char *u = memchr(unit_chars, format[2], sizeof unit_chars);
        size_t tzlen = strlen(format + 4);
        if (!u || tzlen >= sizeof t.timezone) return unsupported(err, format);
        set_simple(&t, MARBLE_ARROW_TIMESTAMP);
        t.unit = (marble_time_unit)(u - unit_chars);
        memcpy(t.timezone, format + 4, tzlen + 1);
        *out = t;
        return MARBLE_OK;
    }
    return unsupported(err, format);
}

static const struct type_info *info_of(marble_arrow_type_id id)
{
    return (int)id >= 0 && (int)id < N_TYPE_IDS ? &type_infos[id] : NULL;
}

static int tz_ok(const marble_arrow_type *t)
{
    return memchr(t->timezone, '\0', sizeof t->timezone) != NULL;
}

int marble_arrow_type_format(const marble_arrow_type *t, char *buf, size_t cap, marble_error *err)
{
    int n;
    if (!t || !buf)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "type or buffer is NULL");
    const struct type_info *info = info_of(t->id);
    if (!info)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "unknown type id %d", (int)t->id);
    if (info->format) {
        n = snprintf(buf, cap, "%s", info->format);
    } else if (t->id == MARBLE_ARROW_FIXED_SIZE_BINARY) {
        if (t->byte_width <= 0)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "fixed_size_binary byte width %d is not positive",
                                    (int)t->byte_width);
        n = snprintf(buf, cap, "w:%d", (int)t->byte_width);
    } else if (t->id == MARBLE_ARROW_TIMESTAMP) {
        if ((unsigned)t->unit > MARBLE_TIME_NANO)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "bad timestamp unit %d",
                                    (int)t->unit);
        if (!tz_ok(t))
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "timestamp timezone is not NUL-terminated");
        n = snprintf(buf, cap, "ts%c:%s", unit_chars[t->unit], t->timezone);
    } else {
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "unknown type id %d", (int)t->id);
    }
    if (n < 0 || (size_t)n >= cap)
        return marble_error_set(err, MARBLE_ERR_LIMIT,
                                "format string needs %d bytes, buffer holds %zu", n + 1, cap);
    return MARBLE_OK;
}

const char *marble_arrow_type_name(const marble_arrow_type *t, char *buf, size_t cap)
{
    if (!t) return "unknown";
    const struct type_info *info = info_of(t->id);
    if (!info) return "unknown";
    const char *base = info->name;
    if (!buf || cap == 0) return base;
    if (t->id == MARBLE_ARROW_FIXED_SIZE_BINARY) {
        snprintf(buf, cap, "fixed_size_binary[%d]", (int)t->byte_width);
        return buf;
    }
    if (t->id == MARBLE_ARROW_TIMESTAMP && (unsigned)t->unit <= MARBLE_TIME_NANO) {
        if (!tz_ok(t) || !t->timezone[0])
            snprintf(buf, cap, "timestamp[%s]", unit_names[t->unit]);
        else
            snprintf(buf, cap, "timestamp[%s, tz=%s]", unit_names[t->unit], t->timezone);
        return buf;
    }
    return base;
}

marble__arrow_layout marble__arrow_layout_of(const marble_arrow_type *t)
{
    marble__arrow_layout l = {0, 1, 0, 0, 0};
    switch (t->id) {
    case MARBLE_ARROW_NA:
        l.has_validity = 0;
        break;
    case MARBLE_ARROW_STRUCT:
        l.n_buffers = 1;
        break;
    case MARBLE_ARROW_BOOL:
        l.n_buffers = 2;
        l.value_bits = 1;
        break;
    case MARBLE_ARROW_UTF8:
    case MARBLE_ARROW_BINARY:
    case MARBLE_ARROW_LARGE_UTF8:
    case MARBLE_ARROW_LARGE_BINARY:
        l.n_buffers = 3;
        l.offset_bytes = (t->id == MARBLE_ARROW_UTF8 || t->id == MARBLE_ARROW_BINARY) ? 4 : 8;
        l.is_utf8 = t->id == MARBLE_ARROW_UTF8 || t->id == MARBLE_ARROW_LARGE_UTF8;
        break;
    default:
        l.n_buffers = 2;
        l.value_bits = t->byte_width * 8;
        break;
    }
    return l;
}

int64_t marble__arrow_values_bytes(const marble__arrow_layout *l, int64_t n)
{
    if (l->value_bits == 1) return marble__arrow_bitmap_bytes(n);
    int64_t w = l->value_bits / 8;
    if (w && n > INT64_MAX / w) return INT64_MAX; /* saturate: callers compare, never allocate */
    return n * w;
}

const char *marble__arrow_field_name(const struct ArrowSchema *schema)
{
    return schema && schema->name ? schema->name : "";
}

int marble__arrow_schema_type(const struct ArrowSchema *schema, marble_arrow_type *out,
                              marble_error *err)
{
    int rc = marble_arrow_type_parse(schema ? schema->format : NULL, out, err);
    if (rc != MARBLE_OK && err) {
        char msg[MARBLE_ERROR_MESSAGE_SIZE];
        memcpy(msg, err->message, sizeof msg);
        marble_error_set(err, rc, "column '%.64s': %s", marble__arrow_field_name(schema), msg);
    }
    return rc;
}
