/* ArrowSchema construction, parsing, copying and validation; metadata; move and release. */
#include "arrow/arrow_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define METADATA_MAX_BYTES ((int64_t)INT32_MAX)

/* ---- owned schemas --------------------------------------------------------------------------- */

struct schema_private {
    char *format;
    char *name;
    char *metadata;
    int64_t n_children;
    struct ArrowSchema **children;
};

static void schema_release(struct ArrowSchema *s)
{
    if (!s || !s->release) return;
    struct schema_private *p = s->private_data;
    for (int64_t i = 0; i < p->n_children; i++) {
        struct ArrowSchema *c = p->children[i];
        if (!c) continue;
        if (c->release) c->release(c);
        free(c);
    }
    if (s->dictionary) {
        if (s->dictionary->release) s->dictionary->release(s->dictionary);
        free(s->dictionary);
    }
    free(p->children);
    free(p->format);
    free(p->name);
    free(p->metadata);
    free(p);
    s->release = NULL;
    s->private_data = NULL;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int marble__arrow_schema_init(struct ArrowSchema *out, const char *format, const char *name,
                              const char *metadata, int64_t flags, int64_t n_children,
                              marble_error *err)
{
    memset(out, 0, sizeof *out);
    if (!format || n_children < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "schema needs a format and a non-negative child count");
    struct schema_private *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    p->format = dup_str(format);
    if (!p->format) goto oom;
    if (name) {
        p->name = dup_str(name);
        if (!p->name) goto oom;
    }
    if (metadata) {
        int64_t size = marble__arrow_metadata_size(metadata);
        p->metadata = malloc((size_t)size);
        if (!p->metadata) goto oom;
        memcpy(p->metadata, metadata, (size_t)size);
    }
    if (n_children > 0) {
        p->children = calloc((size_t)n_children, sizeof *p->children);
        if (!p->children) goto oom;
        p->n_children = n_children;
        for (int64_t i = 0; i < n_children; i++) {
            p->children[i] = calloc(1, sizeof(struct ArrowSchema));
            if (!p->children[i]) goto oom;
        }
    }
    out->format = p->format;
    out->name = p->name;
    out->metadata = p->metadata;
    out->flags = flags;
    out->n_children = n_children;
    out->children = p->children;
    out->dictionary = NULL;
    out->private_data = p;
    out->release = schema_release;
    return MARBLE_OK;
oom:
    if (p) {
        out->private_data = p;
        out->release = schema_release;
        schema_release(out);
    }
    memset(out, 0, sizeof *out);
    return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory making schema");
}

/* ---- metadata -------------------------------------------------------------------------------- */

static int32_t read_i32(const char *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void write_i32(char *p, int32_t v)
{
    memcpy(p, &v, sizeof v);
}

int marble__arrow_metadata_encode(const marble__arrow_kv *kv, int64_t n, char **out, int64_t *size,
                                  marble_error *err)
{
    *out = NULL;
    if (size) *size = 0;
    if (n < 0 || n > INT32_MAX)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "bad metadata pair count %lld",
                                (long long)n);
    if (n == 0) return MARBLE_OK;
    int64_t total = 4;
    for (int64_t i = 0; i < n; i++) {
        if (kv[i].key_len < 0 || kv[i].value_len < 0 || (!kv[i].key && kv[i].key_len) ||
            (!kv[i].value && kv[i].value_len))
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "metadata pair %lld has a bad key or value", (long long)i);
        total += 8 + (int64_t)kv[i].key_len + kv[i].value_len;
        if (total > METADATA_MAX_BYTES)
            return marble_error_set(err, MARBLE_ERR_LIMIT, "metadata larger than %lld bytes",
                                    (long long)METADATA_MAX_BYTES);
    }
    char *buf = malloc((size_t)total);
    if (!buf) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory for metadata");
    char *p = buf;
    write_i32(p, (int32_t)n);
    p += 4;
    for (int64_t i = 0; i < n; i++) {
        write_i32(p, kv[i].key_len);
        p += 4;
        if (kv[i].key_len) memcpy(p, kv[i].key, (size_t)kv[i].key_len);
        p += kv[i].key_len;
        write_i32(p, kv[i].value_len);
        p += 4;
        if (kv[i].value_len) memcpy(p, kv[i].value, (size_t)kv[i].value_len);
        p += kv[i].value_len;
    }
    *out = buf;
    if (size) *size = total;
    return MARBLE_OK;
}

int marble__arrow_metadata_decode(const char *metadata, marble__arrow_kv **out, int64_t *n,
                                  marble_error *err)
{
    *out = NULL;
    *n = 0;
    if (!metadata) return MARBLE_OK;
    int32_t count = read_i32(metadata);
    if (count < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "metadata: negative pair count %d", (int)count);
    if (count == 0) return MARBLE_OK;
    if ((int64_t)count * 8 + 4 > METADATA_MAX_BYTES)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "metadata: pair count %d is too large", (int)count);
    marble__arrow_kv *kv = calloc((size_t)count, sizeof *kv);
    if (!kv) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory for metadata");
    int64_t pos = 4;
    for (int32_t i = 0; i < count; i++) {
        int32_t klen = read_i32(metadata + pos);
        if (klen < 0 || pos + 4 + (int64_t)klen + 4 > METADATA_MAX_BYTES) {
            free(kv);
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "metadata: key %d at byte %lld has bad length %d", (int)i,
                                    (long long)pos, (int)klen);
        }
        kv[i].key = metadata + pos + 4;
        kv[i].key_len = klen;
        pos += 4 + (int64_t)klen;
        int32_t vlen = read_i32(metadata + pos);
        if (vlen < 0 || pos + 4 + (int64_t)vlen > METADATA_MAX_BYTES) {
            free(kv);
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "metadata: value %d at byte %lld has bad length %d", (int)i,
                                    (long long)pos, (int)vlen);
        }
        kv[i].value = metadata + pos + 4;
        kv[i].value_len = vlen;
        pos += 4 + (int64_t)vlen;
    }
    *out = kv;
    *n = count;
    return MARBLE_OK;
}

int64_t marble__arrow_metadata_size(const char *metadata)
{
    if (!metadata) return 0;
    int32_t count = read_i32(metadata);
    int64_t pos = 4;
    for (int32_t i = 0; i < count; i++) {
        pos += 4 + (int64_t)read_i32(metadata + pos);
        pos += 4 + (int64_t)read_i32(metadata + pos);
    }
    return pos;
}

int marble_arrow_metadata_get(const char *metadata, const char *key, char *buf, size_t cap,
                              marble_error *err)
{
    marble__arrow_kv *kv;
    int64_t n;
    if (!key) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "metadata key is NULL");
    MARBLE_RETURN_NOT_OK(marble__arrow_metadata_decode(metadata, &kv, &n, err));
    size_t klen = strlen(key);
    int rc = marble_error_set(err, MARBLE_ERR_NOT_FOUND, "metadata key '%.64s' not found", key);
    for (int64_t i = 0; i < n; i++) {
        if ((size_t)kv[i].key_len != klen || memcmp(kv[i].key, key, klen) != 0) continue;
        size_t vlen = (size_t)kv[i].value_len;
        if (!buf || vlen >= cap) {
            rc = marble_error_set(err, MARBLE_ERR_LIMIT,
                                  "metadata value of '%.64s' is %zu bytes, buffer holds %zu", key,
                                  vlen, cap);
        } else {
            memcpy(buf, kv[i].value, vlen);
            buf[vlen] = '\0';
            marble_error_clear(err);
            rc = MARBLE_OK;
        }
        break;
    }
    free(kv);
    return rc;
}

/* ---- make ------------------------------------------------------------------------------------ */

int marble_arrow_schema_make(struct ArrowSchema *out, const marble_field_spec *fields, size_t n,
                             const char *const *meta_keys, const char *const *meta_values,
                             size_t n_metadata, marble_error *err)
{
    marble__arrow_kv *kv = NULL;
    char *meta = NULL;
    int rc;
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "output schema is NULL");
    memset(out, 0, sizeof *out);
    if (n > 0 && !fields)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "fields is NULL");
    if (n > (size_t)INT32_MAX)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "%zu fields is too many", n);
    for (size_t i = 0; i < n; i++) {
        marble_arrow_type t;
        if (!fields[i].name)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "field %zu has no name", i);
        if (!fields[i].format)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "field '%.64s' has no format",
                                    fields[i].name);
        struct ArrowSchema probe = {.format = fields[i].format, .name = fields[i].name};
        MARBLE_RETURN_NOT_OK(marble__arrow_schema_type(&probe, &t, err));
        if (t.id == MARBLE_ARROW_STRUCT)
            return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                    "column '%.64s': nested struct columns are not supported",
                                    fields[i].name);
    }
    if (n_metadata > 0) {
        if (!meta_keys || !meta_values)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "metadata keys or values are NULL");
        if (n_metadata > (size_t)INT32_MAX)
            return marble_error_set(err, MARBLE_ERR_LIMIT, "too many metadata pairs");
        kv = calloc(n_metadata, sizeof *kv);
        if (!kv) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory for metadata");
        for (size_t i = 0; i < n_metadata; i++) {
            size_t kl = meta_keys[i] ? strlen(meta_keys[i]) : 0;
            size_t vl = meta_values[i] ? strlen(meta_values[i]) : 0;
            if (!meta_keys[i] || !meta_values[i] || kl > INT32_MAX || vl > INT32_MAX) {
                free(kv);
                return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                        "metadata pair %zu has a NULL or oversized key or value",
                                        i);
            }
            kv[i] = (marble__arrow_kv){meta_keys[i], (int32_t)kl, meta_values[i], (int32_t)vl};
        }
        rc = marble__arrow_metadata_encode(kv, (int64_t)n_metadata, &meta, NULL, err);
        free(kv);
        if (rc != MARBLE_OK) return rc;
    }
    rc = marble__arrow_schema_init(out, "+s", "", meta, 0, (int64_t)n, err);
    free(meta);
    if (rc != MARBLE_OK) return rc;
    for (size_t i = 0; i < n; i++) {
        rc = marble__arrow_schema_init(out->children[i], fields[i].format, fields[i].name, NULL,
                                       fields[i].nullable ? ARROW_FLAG_NULLABLE : 0, 0, err);
        if (rc != MARBLE_OK) {
            out->release(out);
            return rc;
        }
    }
    return MARBLE_OK;
}

/* ---- parse ----------------------------------------------------------------------------------- */

typedef struct type_alias {
    const char *name;
    const char *format;
} type_alias;

static const type_alias aliases[] = {
    {"null", "n"},         {"bool", "b"},       {"boolean", "b"},      {"int8", "c"},
    {"int16", "s"},        {"int32", "i"},      {"int64", "l"},        {"uint8", "C"},
    {"uint16", "S"},       {"uint32", "I"},     {"uint64", "L"},       {"float32", "f"},
    {"float", "f"},        {"float64", "g"},    {"double", "g"},       {"utf8", "u"},
    {"string", "u"},       {"large_utf8", "U"}, {"large_string", "U"}, {"binary", "z"},
    {"large_binary", "Z"}, {"date32", "tdD"},
};

static int span_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(s, word, n) == 0;
}

static const char *skip_ws(const char *s, const char *end)
{
    while (s < end && isspace((unsigned char)*s))
        s++;
    return s;
}

static const char *trim_end(const char *s, const char *end)
{
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    return end;
}

/* "[N]" or "[unit]" / "[unit,TZ]" / "[unit, tz=TZ]" after a parametric type name. */
static int parse_params(const char *kind, const char *p, const char *end, char *format, size_t cap)
{
    if (p >= end || *p != '[' || end[-1] != ']') return 0;
    p++;
    end--;
    if (!strcmp(kind, "fixed_size_binary")) {
        p = skip_ws(p, end);
        end = trim_end(p, end);
        if (p == end || (size_t)(end - p) + 3 > cap) return 0;
        memcpy(format, "w:", 2);
        memcpy(format + 2, p, (size_t)(end - p));
        format[2 + (end - p)] = '\0';
        return 1;
    }
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *uend = trim_end(p, comma ? comma : end);
    p = skip_ws(p, uend);
    char unit;
    if (span_is(p, (size_t)(uend - p), "s"))
        unit = 's';
    else if (span_is(p, (size_t)(uend - p), "ms"))
        unit = 'm';
    else if (span_is(p, (size_t)(uend - p), "us"))
        unit = 'u';
    else if (span_is(p, (size_t)(uend - p), "ns"))
        unit = 'n';
    else
        return 0;
    const char *tz = end, *tzend = end;
    if (comma) {
        tz = skip_ws(comma + 1, end);
        tzend = trim_end(tz, end);
        if (tzend - tz >= 3 && memcmp(tz, "tz=", 3) == 0) tz += 3;
        if (tz == tzend) return 0;
    }
    if ((size_t)(tzend - tz) + 5 > cap) return 0;
    format[0] = 't';
    format[1] = 's';
    format[2] = unit;
    format[3] = ':';
    memcpy(format + 4, tz, (size_t)(tzend - tz));
    format[4 + (tzend - tz)] = '\0';
    return 1;
}

/* Maps a type token to a format string; 0 if it is not a type name (it may be a format). */
static int type_token_format(const char *p, const char *end, char *format, size_t cap)
{
    size_t n = (size_t)(end - p);
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) {
        if (span_is(p, n, aliases[i].name)) {
            snprintf(format, cap, "%s", aliases[i].format);
            return 1;
        }
    }
    const char *br = memchr(p, '[', n);
    if (!br) return span_is(p, n, "timestamp") ? -1 : 0;
    if (span_is(p, (size_t)(br - p), "fixed_size_binary"))
        return parse_params("fixed_size_binary", br, end, format, cap);
    if (span_is(p, (size_t)(br - p), "timestamp"))
        return parse_params("timestamp", br, end, format, cap) ? 1 : -1;
    return 0;
}

int marble_arrow_schema_parse(const char *text, struct ArrowSchema *out, marble_error *err)
{
    enum { MAX_FIELDS = 4096 };
    marble_field_spec *fields = NULL;
    char *storage = NULL;
    size_t n = 0, cap_fields = 0;
    int rc = MARBLE_OK;
    if (!out) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "output schema is NULL");
    memset(out, 0, sizeof *out);
    if (!text) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "schema text is NULL");
    size_t len = strlen(text);
    /* Names and formats are copied here: per field at most its text plus 7 bytes. */
    storage = malloc(5 * len + 64);
    if (!storage) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
    char *sp = storage;
    const char *p = text, *end = text + len;
    if (skip_ws(p, end) == end) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "schema text is empty: expected \"name:type,...\"");
        goto cleanup;
    }
    while (p <= end) {
        const char *fstart = skip_ws(p, end);
        const char *colon = fstart;
        while (colon < end && *colon != ':' && *colon != ',')
            colon++;
        const char *nend = trim_end(fstart, colon);
        if (colon == end || *colon != ':') {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "schema text position %zu: expected ':' after column name",
                                  (size_t)(colon - text));
            goto cleanup;
        }
        if (nend == fstart) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "schema text position %zu: expected a column name",
                                  (size_t)(fstart - text));
            goto cleanup;
        }
        const char *tstart = skip_ws(colon + 1, end);
        const char *tend = tstart;
        int depth = 0;
        while (tend < end && (depth > 0 || *tend != ',')) {
            if (*tend == '[') depth++;
            if (*tend == ']' && depth > 0) depth--;
            tend++;
        }
        const char *next = tend;
        tend = trim_end(tstart, tend);
        int nullable = 1;
        if (tend > tstart && tend[-1] == '!') {
            nullable = 0;
            tend = trim_end(tstart, tend - 1);
        }
        if (tend == tstart) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "schema text position %zu: expected a type for column '%.*s'",
                                  (size_t)(tstart - text), (int)(nend - fstart), fstart);
            goto cleanup;
        }
        if (n == MAX_FIELDS) {
            rc = marble_error_set(err, MARBLE_ERR_LIMIT, "schema text has more than %d columns",
                                  (int)MAX_FIELDS);
            goto cleanup;
        }
        char *name = sp;
        memcpy(sp, fstart, (size_t)(nend - fstart));
        sp += nend - fstart;
        *sp++ = '\0';
        char *format = sp;
        size_t fcap = (size_t)(tend - tstart) + 16;
        int known = type_token_format(tstart, tend, format, fcap);
        if (known < 0) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "schema text position %zu: expected timestamp[s|ms|us|ns] or "
                                  "timestamp[unit,TZ] for column '%s', got '%.*s'",
                                  (size_t)(tstart - text), name, (int)(tend - tstart), tstart);
            goto cleanup;
        }
        if (!known) {
            memcpy(format, tstart, (size_t)(tend - tstart));
            format[tend - tstart] = '\0';
        }
        sp = format + strlen(format) + 1;
        marble_arrow_type t;
        marble_error sub;
        int trc = marble_arrow_type_parse(format, &t, &sub);
        if (trc == MARBLE_OK && t.id == MARBLE_ARROW_STRUCT) trc = MARBLE_ERR_UNSUPPORTED;
        if (trc != MARBLE_OK) {
            rc = marble_error_set(err, trc,
                                  "schema text position %zu: expected a type name (int8..uint64, "
                                  "float32, float64, bool, utf8, binary, large_utf8, large_binary, "
                                  "fixed_size_binary[N], date32, timestamp[unit(,TZ)]) or a format "
                                  "string for column '%s', got '%.*s'",
                                  (size_t)(tstart - text), name, (int)(tend - tstart), tstart);
            goto cleanup;
        }
        if (n == cap_fields) {
            size_t nc = cap_fields ? cap_fields * 2 : 8;
            marble_field_spec *nf = realloc(fields, nc * sizeof *nf);
            if (!nf) {
                rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory");
                goto cleanup;
            }
            fields = nf;
            cap_fields = nc;
        }
        fields[n].name = name;
        fields[n].format = format;
        fields[n].nullable = nullable;
        n++;
        if (next == end) break;
        p = next + 1;
        if (skip_ws(p, end) == end) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "schema text position %zu: expected a column after ','",
                                  (size_t)(end - text));
            goto cleanup;
        }
    }
    rc = marble_arrow_schema_make(out, fields, n, NULL, NULL, 0, err);
cleanup:
    free(fields);
    free(storage);
    return rc;
}

/* ---- copy and validate ----------------------------------------------------------------------- */

static int copy_rec(const struct ArrowSchema *src, struct ArrowSchema *dst, int depth,
                    marble_error *err)
{
    marble__arrow_kv *kv;
    int64_t nkv;
    if (depth > MAX_DEPTH)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "schema nested deeper than %d", MAX_DEPTH);
    if (!src->release)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "schema '%.64s' is released",
                                marble__arrow_field_name(src));
    if (!src->format || src->n_children < 0 || (src->n_children > 0 && !src->children))
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "schema '%.64s' has no format or bad children",
                                marble__arrow_field_name(src));
    MARBLE_RETURN_NOT_OK(marble__arrow_metadata_decode(src->metadata, &kv, &nkv, err));
    free(kv);
    MARBLE_RETURN_NOT_OK(marble__arrow_schema_init(dst, src->format, src->name, src->metadata,
                                                   src->flags, src->n_children, err));
    int rc = MARBLE_OK;
    for (int64_t i = 0; i < src->n_children && rc == MARBLE_OK; i++) {
        if (!src->children[i])
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "schema '%.64s': child %lld is NULL",
                                  marble__arrow_field_name(src), (long long)i);
        else
            rc = copy_rec(src->children[i], dst->children[i], depth + 1, err);
    }
    if (rc == MARBLE_OK && src->dictionary) {
        dst->dictionary = calloc(1, sizeof *dst->dictionary);
        if (!dst->dictionary)
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "out of memory copying schema");
        else
            rc = copy_rec(src->dictionary, dst->dictionary, depth + 1, err);
    }
    if (rc != MARBLE_OK) dst->release(dst);
    return rc;
}

int marble_arrow_schema_copy(const struct ArrowSchema *src, struct ArrowSchema *dst,
                             marble_error *err)
{
    if (!src || !dst)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "source or destination is NULL");
    memset(dst, 0, sizeof *dst);
    return copy_rec(src, dst, 0, err);
}

static int validate_rec(const struct ArrowSchema *s, const char *path, int depth, marble_error *err)
{
    marble_arrow_type t;
    marble__arrow_kv *kv;
    int64_t nkv;
    const char *name = path[0] ? path : "(root)";
    if (depth > MAX_DEPTH)
        return marble_error_set(err, MARBLE_ERR_LIMIT, "schema nested deeper than %d", MAX_DEPTH);
    if (!s->release)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "schema field '%.64s' is released (release is NULL)", name);
    if (!s->format)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "schema field '%.64s' has no format", name);
    int rc = marble_arrow_type_parse(s->format, &t, err);
    if (rc != MARBLE_OK) {
        char msg[MARBLE_ERROR_MESSAGE_SIZE];
        memcpy(msg, err ? err->message : "", err ? sizeof msg : 1);
        return marble_error_set(err, rc, "schema field '%.64s': %s", name, msg);
    }
    if (s->dictionary)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "schema field '%.64s': dictionary-encoded columns are not "
                                "supported",
                                name);
    if (s->n_children < 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "schema field '%.64s': negative n_children %lld", name,
                                (long long)s->n_children);
    if (t.id != MARBLE_ARROW_STRUCT && s->n_children != 0)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "schema field '%.64s': type %s has %lld children, expected 0", name,
                                marble_arrow_type_name(&t, NULL, 0), (long long)s->n_children);
    if (s->n_children > 0 && !s->children)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "schema field '%.64s': n_children is %lld but children is NULL",
                                name, (long long)s->n_children);
    rc = marble__arrow_metadata_decode(s->metadata, &kv, &nkv, err);
    if (rc != MARBLE_OK) {
        char msg[MARBLE_ERROR_MESSAGE_SIZE];
        memcpy(msg, err ? err->message : "", err ? sizeof msg : 1);
        return marble_error_set(err, rc, "schema field '%.64s': %s", name, msg);
    }
    free(kv);
    for (int64_t i = 0; i < s->n_children; i++) {
        const struct ArrowSchema *c = s->children[i];
        if (!c)
            return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                    "schema field '%.64s': child %lld is NULL", name, (long long)i);
        char sub[192];
        if (path[0])
            snprintf(sub, sizeof sub, "%s.%s", path, c->name ? c->name : "");
        else
            snprintf(sub, sizeof sub, "%s", c->name ? c->name : "");
        if (!sub[0]) snprintf(sub, sizeof sub, "%s#%lld", path, (long long)i);
        MARBLE_RETURN_NOT_OK(validate_rec(c, sub, depth + 1, err));
    }
    return MARBLE_OK;
}

int marble_arrow_schema_validate(const struct ArrowSchema *schema, marble_error *err)
{
    if (!schema) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "schema is NULL");
    return validate_rec(schema, schema->name ? schema->name : "", 0, err);
}

/* ---- move and release ------------------------------------------------------------------------ */

void marble_arrow_schema_move(struct ArrowSchema *src, struct ArrowSchema *dst)
{
    *dst = *src;
    src->release = NULL;
}

void marble_arrow_array_move(struct ArrowArray *src, struct ArrowArray *dst)
{
    *dst = *src;
    src->release = NULL;
}

void marble_arrow_stream_move(struct ArrowArrayStream *src, struct ArrowArrayStream *dst)
{
    *dst = *src;
    src->release = NULL;
}

void marble_arrow_schema_release(struct ArrowSchema *s)
{
    if (s && s->release) s->release(s);
}

void marble_arrow_array_release(struct ArrowArray *a)
{
    if (a && a->release) a->release(a);
}

void marble_arrow_stream_release(struct ArrowArrayStream *st)
{
    if (st && st->release) st->release(st);
}
