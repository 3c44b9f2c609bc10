/* Tests for the Arrow layer's non-IPC half: types, schemas, metadata, builders, validation,
 * value access, release and move semantics, and the private helpers in arrow_internal.h. */
#include "arrow/arrow_internal.h"
#include "marble/arrow.h"
#include "marble_test.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

/* ---- helpers --------------------------------------------------------------------------------- */

static marble_error err;

#define ASSERT_CODE(expr, want)                                                                    \
    do {                                                                                           \
        marble_error_clear(&err);                                                                  \
        ASSERT_EQ_INT((expr), (want));                                                             \
        ASSERT_EQ_INT(err.code, (want));                                                           \
    } while (0)

static void fail_with_message(int rc, const char *where)
{
    FAIL("%s: %s (%s)", where, marble_status_name(rc), err.message);
}

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != MARBLE_OK) fail_with_message(rc_, #expr);                                       \
    } while (0)

static void release_noop_schema(struct ArrowSchema *s)
{
    s->release = NULL;
}

static void release_noop_array(struct ArrowArray *a)
{
    a->release = NULL;
}

/* A foreign (caller-built) schema node. */
static struct ArrowSchema foreign_schema(const char *format, const char *name)
{
    struct ArrowSchema s;
    memset(&s, 0, sizeof s);
    s.format = format;
    s.name = name;
    s.flags = ARROW_FLAG_NULLABLE;
    s.release = release_noop_schema;
    return s;
}

/* A foreign array node. */
static struct ArrowArray foreign_array(int64_t length, int64_t null_count, int64_t n_buffers,
                                       const void **buffers)
{
    struct ArrowArray a;
    memset(&a, 0, sizeof a);
    a.length = length;
    a.null_count = null_count;
    a.n_buffers = n_buffers;
    a.buffers = buffers;
    a.release = release_noop_array;
    return a;
}

/* id:int64!, name:utf8, flag:bool; 5 rows; name[2] and flag[4] are null. */
static void make_batch(struct ArrowSchema *schema, struct ArrowArray *batch)
{
    marble_batch_builder *b;
    CHECK_OK(marble_arrow_schema_parse("id:int64!,name:utf8,flag:bool", schema, &err));
    CHECK_OK(marble_batch_builder_create(schema, &b, &err));
    const char *names[5] = {"alpha", "beta", NULL, "", "\xC3\xA9t\xC3\xA9"};
    for (int i = 0; i < 5; i++) {
        CHECK_OK(marble_builder_append_int(b, 0, 100 + i, &err));
        if (names[i])
            CHECK_OK(marble_builder_append_bytes(b, 1, names[i], strlen(names[i]), &err));
        else
            CHECK_OK(marble_builder_append_null(b, 1, &err));
        if (i == 4)
            CHECK_OK(marble_builder_append_null(b, 2, &err));
        else
            CHECK_OK(marble_builder_append_int(b, 2, i % 2, &err));
    }
    CHECK_OK(marble_batch_builder_finish(b, batch, &err));
    marble_batch_builder_destroy(b);
}

/* A one-column utf8 array over caller data. */
typedef struct utf8_fixture {
    struct ArrowSchema root, col;
    struct ArrowSchema *children[1];
    struct ArrowArray batch, arr;
    struct ArrowArray *achildren[1];
    const void *root_buffers[1];
    const void *buffers[3];
    int32_t offsets[4];
    uint8_t validity[1];
} utf8_fixture;

static void utf8_fixture_init(utf8_fixture *f, const char *v0, size_t n0, const char *v1, size_t n1,
                              char *data)
{
    memset(f, 0, sizeof *f);
    f->root = foreign_schema("+s", "");
    f->col = foreign_schema("u", "text");
    f->children[0] = &f->col;
    f->root.n_children = 1;
    f->root.children = f->children;
    memcpy(data, "ok", 2);
    memcpy(data + 2, v0, n0);
    memcpy(data + 2 + n0, v1, n1);
    f->offsets[0] = 0;
    f->offsets[1] = 2;
    f->offsets[2] = (int32_t)(2 + n0);
    f->offsets[3] = (int32_t)(2 + n0 + n1);
    f->validity[0] = 0x7;
    f->buffers[0] = f->validity;
    f->buffers[1] = f->offsets;
    f->buffers[2] = data;
    f->arr = foreign_array(3, 0, 3, f->buffers);
    f->achildren[0] = &f->arr;
    f->root_buffers[0] = NULL;
    f->batch = foreign_array(3, 0, 1, f->root_buffers);
    f->batch.n_children = 1;
    f->batch.children = f->achildren;
}

/* ---- types ----------------------------------------------------------------------------------- */

typedef struct type_case {
    const char *format;
    marble_arrow_type_id id;
    int32_t width;
    const char *name;
} type_case;

static const type_case type_cases[] = {
    {"n", MARBLE_ARROW_NA, 0, "null"},
    {"b", MARBLE_ARROW_BOOL, 0, "bool"},
    {"c", MARBLE_ARROW_INT8, 1, "int8"},
    {"s", MARBLE_ARROW_INT16, 2, "int16"},
    {"i", MARBLE_ARROW_INT32, 4, "int32"},
    {"l", MARBLE_ARROW_INT64, 8, "int64"},
    {"C", MARBLE_ARROW_UINT8, 1, "uint8"},
    {"S", MARBLE_ARROW_UINT16, 2, "uint16"},
    {"I", MARBLE_ARROW_UINT32, 4, "uint32"},
    {"L", MARBLE_ARROW_UINT64, 8, "uint64"},
    {"f", MARBLE_ARROW_FLOAT32, 4, "float32"},
    {"g", MARBLE_ARROW_FLOAT64, 8, "float64"},
    {"u", MARBLE_ARROW_UTF8, 0, "utf8"},
    {"U", MARBLE_ARROW_LARGE_UTF8, 0, "large_utf8"},
    {"z", MARBLE_ARROW_BINARY, 0, "binary"},
    {"Z", MARBLE_ARROW_LARGE_BINARY, 0, "large_binary"},
    {"w:1", MARBLE_ARROW_FIXED_SIZE_BINARY, 1, "fixed_size_binary[1]"},
    {"w:16", MARBLE_ARROW_FIXED_SIZE_BINARY, 16, "fixed_size_binary[16]"},
    {"w:268435455", MARBLE_ARROW_FIXED_SIZE_BINARY, 268435455, "fixed_size_binary[268435455]"},
    {"tdD", MARBLE_ARROW_DATE32, 4, "date32"},
    {"tss:", MARBLE_ARROW_TIMESTAMP, 8, "timestamp[s]"},
    {"tsm:", MARBLE_ARROW_TIMESTAMP, 8, "timestamp[ms]"},
    {"tsu:", MARBLE_ARROW_TIMESTAMP, 8, "timestamp[us]"},
    {"tsn:", MARBLE_ARROW_TIMESTAMP, 8, "timestamp[ns]"},
    {"tsu:UTC", MARBLE_ARROW_TIMESTAMP, 8, "timestamp[us, tz=UTC]"},
    {"tss:America/New_York", MARBLE_ARROW_TIMESTAMP, 8, "timestamp[s, tz=America/New_York]"},
    {"tsn:+01:00", MARBLE_ARROW_TIMESTAMP, 8, "timestamp[ns, tz=+01:00]"},
    {"+s", MARBLE_ARROW_STRUCT, 0, "struct"},
};
#define N_TYPE_CASES (sizeof type_cases / sizeof type_cases[0])

TEST(type_parse_format_roundtrip_every_type)
{
    for (size_t i = 0; i < N_TYPE_CASES; i++) {
        const type_case *c = &type_cases[i];
        marble_arrow_type t;
        char buf[128], nbuf[128];
        CHECK_OK(marble_arrow_type_parse(c->format, &t, &err));
        ASSERT_EQ_INT(t.id, c->id);
        ASSERT_EQ_INT(t.byte_width, c->width);
        CHECK_OK(marble_arrow_type_format(&t, buf, sizeof buf, &err));
        ASSERT_EQ_STR(buf, c->format);
        ASSERT_EQ_STR(marble_arrow_type_name(&t, nbuf, sizeof nbuf), c->name);
    }
}

TEST(type_parse_timestamp_units_and_timezone)
{
    marble_arrow_type t;
    const char *formats[4] = {"tss:", "tsm:", "tsu:", "tsn:"};
    for (int u = 0; u < 4; u++) {
        CHECK_OK(marble_arrow_type_parse(formats[u], &t, &err));
        ASSERT_EQ_INT(t.unit, u);
        ASSERT_EQ_STR(t.timezone, "");
    }
    CHECK_OK(marble_arrow_type_parse("tsm:Europe/Paris", &t, &err));
    ASSERT_EQ_INT(t.unit, MARBLE_TIME_MILLI);
    ASSERT_EQ_STR(t.timezone, "Europe/Paris");
    char tz[80] = "tsu:";
    memset(tz + 4, 'x', 63);
    tz[67] = 0;
    CHECK_OK(marble_arrow_type_parse(tz, &t, &err));
    ASSERT_EQ_INT(strlen(t.timezone), 63);
    tz[67] = 'x';
    tz[68] = 0;
    ASSERT_CODE(marble_arrow_type_parse(tz, &t, &err), MARBLE_ERR_UNSUPPORTED);
}

TEST(type_parse_fixed_width_is_strict)
{
    const char *bad[] = {"w:",
                         "w:0",
                         "w:-1",
                         "w:12x",
                         "w:x12",
                         "w: 12",
                         "w:+5",
                         "w:012",
                         "w:268435456",
                         "w:2147483648",
                         "w:99999999999999999999",
                         "w:1.5"};
    marble_arrow_type t;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_CODE(marble_arrow_type_parse(bad[i], &t, &err), MARBLE_ERR_INVALID_ARGUMENT);
        ASSERT_CONTAINS(err.message, bad[i]);
    }
}

TEST(type_parse_rejects_unsupported_formats)
{
    const char *bad[] = {
        "+l",          "+L",    "+w:4", "+m", "+us:0,1", "tdm", "tts", "tiM", "tDs", "d:10,2",
        "d:38,10,256", "e",     "vu",   "vz", "x",       "",    "ll",  "uu",  "ts",  "tss",
        "tsx:",        "tsss:", "+s ",  "w",  "+",       "N",   "a",   "A"};
    marble_arrow_type t;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_CODE(marble_arrow_type_parse(bad[i], &t, &err), MARBLE_ERR_UNSUPPORTED);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        ASSERT_CONTAINS(err.message, quoted);
    }
    ASSERT_CODE(marble_arrow_type_parse(NULL, &t, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_arrow_type_parse("l", NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
}

TEST(type_format_errors)
{
    marble_arrow_type t;
    char buf[64];
    CHECK_OK(marble_arrow_type_parse("tsu:Europe/Berlin", &t, &err));
    ASSERT_CODE(marble_arrow_type_format(&t, buf, 8, &err), MARBLE_ERR_LIMIT);
    CHECK_OK(marble_arrow_type_format(&t, buf, 18, &err));
    ASSERT_EQ_STR(buf, "tsu:Europe/Berlin");
    ASSERT_CODE(marble_arrow_type_format(&t, buf, 17, &err), MARBLE_ERR_LIMIT);
    memset(&t, 0, sizeof t);
    t.id = MARBLE_ARROW_FIXED_SIZE_BINARY;
    ASSERT_CODE(marble_arrow_type_format(&t, buf, sizeof buf, &err), MARBLE_ERR_INVALID_ARGUMENT);
    t.byte_width = -3;
    ASSERT_CODE(marble_arrow_type_format(&t, buf, sizeof buf, &err), MARBLE_ERR_INVALID_ARGUMENT);
    t.id = MARBLE_ARROW_TIMESTAMP;
    t.unit = (marble_time_unit)7;
    ASSERT_CODE(marble_arrow_type_format(&t, buf, sizeof buf, &err), MARBLE_ERR_INVALID_ARGUMENT);
    t.id = (marble_arrow_type_id)99;
    ASSERT_CODE(marble_arrow_type_format(&t, buf, sizeof buf, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_arrow_type_format(NULL, buf, sizeof buf, &err), MARBLE_ERR_INVALID_ARGUMENT);
}

TEST(type_name_without_buffer)
{
    marble_arrow_type t;
    CHECK_OK(marble_arrow_type_parse("w:8", &t, &err));
    ASSERT_EQ_STR(marble_arrow_type_name(&t, NULL, 0), "fixed_size_binary");
    CHECK_OK(marble_arrow_type_parse("tsu:UTC", &t, &err));
    ASSERT_EQ_STR(marble_arrow_type_name(&t, NULL, 0), "timestamp");
    char small[10];
    ASSERT_EQ_STR(marble_arrow_type_name(&t, small, sizeof small), "timestamp");
    CHECK_OK(marble_arrow_type_parse("l", &t, &err));
    ASSERT_EQ_STR(marble_arrow_type_name(&t, NULL, 0), "int64");
    ASSERT_EQ_STR(marble_arrow_type_name(NULL, NULL, 0), "unknown");
}

TEST(layout_per_type)
{
    marble_arrow_type t;
    marble__arrow_layout l;
    CHECK_OK(marble_arrow_type_parse("n", &t, &err));
    l = marble__arrow_layout_of(&t);
    ASSERT_EQ_INT(l.n_buffers, 0);
    ASSERT_EQ_INT(l.has_validity, 0);
    CHECK_OK(marble_arrow_type_parse("+s", &t, &err));
    ASSERT_EQ_INT(marble__arrow_layout_of(&t).n_buffers, 1);
    CHECK_OK(marble_arrow_type_parse("b", &t, &err));
    l = marble__arrow_layout_of(&t);
    ASSERT_EQ_INT(l.n_buffers, 2);
    ASSERT_EQ_INT(l.value_bits, 1);
    ASSERT_EQ_INT(marble__arrow_values_bytes(&l, 9), 2);
    CHECK_OK(marble_arrow_type_parse("w:12", &t, &err));
    l = marble__arrow_layout_of(&t);
    ASSERT_EQ_INT(l.value_bits, 96);
    ASSERT_EQ_INT(marble__arrow_values_bytes(&l, 3), 36);
    CHECK_OK(marble_arrow_type_parse("U", &t, &err));
    l = marble__arrow_layout_of(&t);
    ASSERT_EQ_INT(l.n_buffers, 3);
    ASSERT_EQ_INT(l.offset_bytes, 8);
    ASSERT_EQ_INT(l.is_utf8, 1);
    CHECK_OK(marble_arrow_type_parse("z", &t, &err));
    l = marble__arrow_layout_of(&t);
    ASSERT_EQ_INT(l.offset_bytes, 4);
    ASSERT_EQ_INT(l.is_utf8, 0);
    CHECK_OK(marble_arrow_type_parse("tsn:", &t, &err));
    ASSERT_EQ_INT(marble__arrow_layout_of(&t).value_bits, 64);
}

/* ---- schemas --------------------------------------------------------------------------------- */

TEST(schema_make_children_and_flags)
{
    marble_field_spec fields[] = {{"id", "l", 0}, {"name", "u", 1}, {"ts", "tsu:UTC", 1}};
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_make(&s, fields, 3, NULL, NULL, 0, &err));
    ASSERT_EQ_STR(s.format, "+s");
    ASSERT_EQ_INT(s.n_children, 3);
    ASSERT_NULL(s.metadata);
    ASSERT_NULL(s.dictionary);
    ASSERT_NOT_NULL(s.release);
    for (int i = 0; i < 3; i++) {
        ASSERT_NOT_NULL(s.children[i]);
        ASSERT_NOT_NULL(s.children[i]->release);
        ASSERT_EQ_STR(s.children[i]->name, fields[i].name);
        ASSERT_EQ_STR(s.children[i]->format, fields[i].format);
        ASSERT_EQ_INT(s.children[i]->flags & ARROW_FLAG_NULLABLE,
                      fields[i].nullable ? ARROW_FLAG_NULLABLE : 0);
        ASSERT_EQ_INT(s.children[i]->n_children, 0);
    }
    ASSERT_TRUE(s.children[0]->format != fields[0].format);
    CHECK_OK(marble_arrow_schema_validate(&s, &err));
    s.release(&s);
    ASSERT_NULL(s.release);
}

TEST(schema_make_with_metadata)
{
    marble_field_spec fields[] = {{"k", "i", 1}};
    const char *keys[] = {"owner", "empty", "unicode"};
    const char *values[] = {"marble", "", "\xE2\x82\xAC"};
    struct ArrowSchema s;
    char buf[32];
    CHECK_OK(marble_arrow_schema_make(&s, fields, 1, keys, values, 3, &err));
    ASSERT_NOT_NULL(s.metadata);
    int32_t n;
    memcpy(&n, s.metadata, 4);
    ASSERT_EQ_INT(n, 3);
    CHECK_OK(marble_arrow_metadata_get(s.metadata, "owner", buf, sizeof buf, &err));
    ASSERT_EQ_STR(buf, "marble");
    CHECK_OK(marble_arrow_metadata_get(s.metadata, "empty", buf, sizeof buf, &err));
    ASSERT_EQ_STR(buf, "");
    CHECK_OK(marble_arrow_metadata_get(s.metadata, "unicode", buf, sizeof buf, &err));
    ASSERT_EQ_STR(buf, "\xE2\x82\xAC");
    ASSERT_CODE(marble_arrow_metadata_get(s.metadata, "own", buf, sizeof buf, &err),
                MARBLE_ERR_NOT_FOUND);
    ASSERT_CONTAINS(err.message, "'own'");
    ASSERT_CODE(marble_arrow_metadata_get(s.metadata, "owner", buf, 6, &err), MARBLE_ERR_LIMIT);
    ASSERT_CODE(marble_arrow_metadata_get(NULL, "owner", buf, sizeof buf, &err),
                MARBLE_ERR_NOT_FOUND);
    ASSERT_EQ_INT(marble__arrow_metadata_size(s.metadata), 4 + (8 + 5 + 6) + (8 + 5) + (8 + 7 + 3));
    s.release(&s);
}

TEST(schema_make_rejects_bad_fields)
{
    struct ArrowSchema s;
    marble_field_spec unsupported[] = {{"ok", "l", 1}, {"lst", "+l", 1}};
    ASSERT_CODE(marble_arrow_schema_make(&s, unsupported, 2, NULL, NULL, 0, &err),
                MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(err.message, "'lst'");
    ASSERT_CONTAINS(err.message, "+l");
    ASSERT_NULL(s.release);
    marble_field_spec noname[] = {{NULL, "l", 1}};
    ASSERT_CODE(marble_arrow_schema_make(&s, noname, 1, NULL, NULL, 0, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    marble_field_spec noformat[] = {{"x", NULL, 1}};
    ASSERT_CODE(marble_arrow_schema_make(&s, noformat, 1, NULL, NULL, 0, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'x'");
    marble_field_spec nested[] = {{"st", "+s", 1}};
    ASSERT_CODE(marble_arrow_schema_make(&s, nested, 1, NULL, NULL, 0, &err),
                MARBLE_ERR_UNSUPPORTED);
    const char *keys[] = {"a"};
    const char *nullv[] = {NULL};
    marble_field_spec one[] = {{"x", "l", 1}};
    ASSERT_CODE(marble_arrow_schema_make(&s, one, 1, keys, nullv, 1, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_arrow_schema_make(&s, one, 1, NULL, NULL, 1, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    CHECK_OK(marble_arrow_schema_make(&s, NULL, 0, NULL, NULL, 0, &err));
    ASSERT_EQ_INT(s.n_children, 0);
    s.release(&s);
}

TEST(schema_metadata_malformed_lengths)
{
    char blob[64];
    int32_t v;
    struct ArrowSchema root = foreign_schema("+s", "");
    root.metadata = blob;
    char buf[16];

    v = -1;
    memcpy(blob, &v, 4);
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "metadata");
    ASSERT_CODE(marble_arrow_metadata_get(blob, "k", buf, sizeof buf, &err),
                MARBLE_ERR_INVALID_ARGUMENT);

    v = 1;
    memcpy(blob, &v, 4);
    v = -5;
    memcpy(blob + 4, &v, 4);
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "key 0");

    v = 1;
    memcpy(blob + 4, &v, 4);
    blob[8] = 'k';
    v = INT32_MIN;
    memcpy(blob + 9, &v, 4);
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "value 0");
    ASSERT_CODE(marble_arrow_metadata_get(blob, "k", buf, sizeof buf, &err),
                MARBLE_ERR_INVALID_ARGUMENT);

    v = INT32_MAX;
    memcpy(blob + 9, &v, 4);
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);

    v = INT32_MAX;
    memcpy(blob, &v, 4);
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);

    v = 1;
    memcpy(blob, &v, 4);
    v = 2;
    memcpy(blob + 9, &v, 4);
    memcpy(blob + 13, "ok", 2);
    CHECK_OK(marble_arrow_schema_validate(&root, &err));
    CHECK_OK(marble_arrow_metadata_get(blob, "k", buf, sizeof buf, &err));
    ASSERT_EQ_STR(buf, "ok");

    v = 0;
    memcpy(blob, &v, 4);
    CHECK_OK(marble_arrow_schema_validate(&root, &err));
    ASSERT_CODE(marble_arrow_metadata_get(blob, "k", buf, sizeof buf, &err), MARBLE_ERR_NOT_FOUND);
}

TEST(metadata_encode_decode_binary_values)
{
    marble__arrow_kv in[2] = {{"a\0b", 3, "\x00\x01\x02", 3}, {"", 0, "v", 1}};
    char *blob;
    int64_t size, n;
    marble__arrow_kv *out;
    CHECK_OK(marble__arrow_metadata_encode(in, 2, &blob, &size, &err));
    ASSERT_EQ_INT(size, 4 + 8 + 3 + 3 + 8 + 0 + 1);
    ASSERT_EQ_INT(marble__arrow_metadata_size(blob), size);
    CHECK_OK(marble__arrow_metadata_decode(blob, &out, &n, &err));
    ASSERT_EQ_INT(n, 2);
    ASSERT_EQ_INT(out[0].key_len, 3);
    ASSERT_TRUE(memcmp(out[0].key, "a\0b", 3) == 0);
    ASSERT_TRUE(memcmp(out[0].value, "\x00\x01\x02", 3) == 0);
    ASSERT_EQ_INT(out[1].key_len, 0);
    ASSERT_EQ_INT(out[1].value_len, 1);
    free(out);
    free(blob);
    CHECK_OK(marble__arrow_metadata_encode(in, 0, &blob, &size, &err));
    ASSERT_NULL(blob);
    marble__arrow_kv bad = {"k", -1, "v", 1};
    ASSERT_CODE(marble__arrow_metadata_encode(&bad, 1, &blob, &size, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
}

TEST(schema_parse_basic)
{
    struct ArrowSchema s;
    CHECK_OK(
        marble_arrow_schema_parse("id:int64!,name:utf8,v:float64,t:timestamp[us,UTC]", &s, &err));
    ASSERT_EQ_STR(s.format, "+s");
    ASSERT_EQ_INT(s.n_children, 4);
    const char *names[] = {"id", "name", "v", "t"};
    const char *formats[] = {"l", "u", "g", "tsu:UTC"};
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ_STR(s.children[i]->name, names[i]);
        ASSERT_EQ_STR(s.children[i]->format, formats[i]);
        ASSERT_EQ_INT(s.children[i]->flags & ARROW_FLAG_NULLABLE, i == 0 ? 0 : ARROW_FLAG_NULLABLE);
    }
    s.release(&s);
}

TEST(schema_parse_every_type_name_roundtrips)
{
    for (size_t i = 0; i < N_TYPE_CASES; i++) {
        const type_case *c = &type_cases[i];
        if (c->id == MARBLE_ARROW_STRUCT) continue;
        char text[160];
        struct ArrowSchema s;
        snprintf(text, sizeof text, "col:%s", c->name);
        CHECK_OK(marble_arrow_schema_parse(text, &s, &err));
        ASSERT_EQ_STR(s.children[0]->format, c->format);
        s.release(&s);
        snprintf(text, sizeof text, "col:%s!", c->format);
        CHECK_OK(marble_arrow_schema_parse(text, &s, &err));
        ASSERT_EQ_STR(s.children[0]->format, c->format);
        ASSERT_EQ_INT(s.children[0]->flags, 0);
        s.release(&s);
    }
}

TEST(schema_parse_aliases_and_spacing)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(
        " a : float , b:double,c:string ! ,d: timestamp[ns, tz=Asia/Tokyo] ,e:timestamp[ms],"
        "f:fixed_size_binary[ 4 ],g:large_string,h:boolean,i:w:3,j:tsu:,k:timestamp[s, UTC]",
        &s, &err));
    const char *expect[][2] = {
        {"a", "f"},    {"b", "g"},    {"c", "u"},      {"d", "tsn:Asia/Tokyo"},
        {"e", "tsm:"}, {"f", "w:4"},  {"g", "U"},      {"h", "b"},
        {"i", "w:3"},  {"j", "tsu:"}, {"k", "tss:UTC"}};
    ASSERT_EQ_INT(s.n_children, 11);
    for (int i = 0; i < 11; i++) {
        ASSERT_EQ_STR(s.children[i]->name, expect[i][0]);
        ASSERT_EQ_STR(s.children[i]->format, expect[i][1]);
    }
    ASSERT_EQ_INT(s.children[2]->flags, 0);
    s.release(&s);
}

TEST(schema_parse_errors_name_position)
{
    struct {
        const char *text;
        int code;
        const char *needle;
    } cases[] = {
        {"", MARBLE_ERR_INVALID_ARGUMENT, "empty"},
        {"   ", MARBLE_ERR_INVALID_ARGUMENT, "empty"},
        {"id", MARBLE_ERR_INVALID_ARGUMENT, "position 2: expected ':'"},
        {"id,x:l", MARBLE_ERR_INVALID_ARGUMENT, "position 2: expected ':'"},
        {"id:", MARBLE_ERR_INVALID_ARGUMENT, "position 3: expected a type"},
        {"id:!", MARBLE_ERR_INVALID_ARGUMENT, "expected a type"},
        {":int64", MARBLE_ERR_INVALID_ARGUMENT, "position 0: expected a column name"},
        {"a:int64,b:int65", MARBLE_ERR_UNSUPPORTED, "position 10"},
        {"a:int64,", MARBLE_ERR_INVALID_ARGUMENT, "expected a column after ','"},
        {"t:timestamp", MARBLE_ERR_INVALID_ARGUMENT, "timestamp[s|ms|us|ns]"},
        {"t:timestamp[xs]", MARBLE_ERR_INVALID_ARGUMENT, "timestamp[s|ms|us|ns]"},
        {"t:timestamp[us,]", MARBLE_ERR_INVALID_ARGUMENT, "'t'"},
        {"f:fixed_size_binary[0]", MARBLE_ERR_INVALID_ARGUMENT, "'f'"},
        {"f:fixed_size_binary[]", MARBLE_ERR_UNSUPPORTED, "'f'"},
        {"x:+s", MARBLE_ERR_UNSUPPORTED, "'x'"},
        {"x:+l", MARBLE_ERR_UNSUPPORTED, "'+l'"},
        {"x:decimal", MARBLE_ERR_UNSUPPORTED, "got 'decimal'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ArrowSchema s;
        marble_error_clear(&err);
        int rc = marble_arrow_schema_parse(cases[i].text, &s, &err);
        if (rc != cases[i].code)
            FAIL("\"%s\": %s (%s)", cases[i].text, marble_status_name(rc), err.message);
        ASSERT_CONTAINS(err.message, cases[i].needle);
        ASSERT_NULL(s.release);
    }
    ASSERT_CODE(marble_arrow_schema_parse(NULL, &(struct ArrowSchema){0}, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
}

TEST(schema_copy_is_deep)
{
    marble_field_spec fields[] = {{"a", "w:7", 0}, {"b", "tsn:UTC", 1}};
    const char *keys[] = {"k1", "k2"};
    const char *values[] = {"v1", "v2"};
    struct ArrowSchema s, c;
    CHECK_OK(marble_arrow_schema_make(&s, fields, 2, keys, values, 2, &err));
    s.children[1]->flags |= ARROW_FLAG_DICTIONARY_ORDERED;
    CHECK_OK(marble_arrow_schema_copy(&s, &c, &err));
    ASSERT_TRUE(c.format != s.format);
    ASSERT_TRUE(c.metadata != s.metadata);
    ASSERT_TRUE(c.children[0] != s.children[0]);
    s.release(&s);
    ASSERT_EQ_STR(c.format, "+s");
    ASSERT_EQ_INT(c.n_children, 2);
    ASSERT_EQ_STR(c.children[0]->name, "a");
    ASSERT_EQ_STR(c.children[0]->format, "w:7");
    ASSERT_EQ_INT(c.children[0]->flags, 0);
    ASSERT_EQ_STR(c.children[1]->format, "tsn:UTC");
    ASSERT_EQ_INT(c.children[1]->flags, ARROW_FLAG_NULLABLE | ARROW_FLAG_DICTIONARY_ORDERED);
    char buf[8];
    CHECK_OK(marble_arrow_metadata_get(c.metadata, "k2", buf, sizeof buf, &err));
    ASSERT_EQ_STR(buf, "v2");
    CHECK_OK(marble_arrow_schema_validate(&c, &err));
    c.release(&c);
}

TEST(schema_copy_foreign_nested)
{
    struct ArrowSchema root = foreign_schema("+s", NULL);
    struct ArrowSchema st = foreign_schema("+s", "st");
    struct ArrowSchema x = foreign_schema("l", "x");
    struct ArrowSchema y = foreign_schema("u", "y");
    struct ArrowSchema *inner[] = {&x, &y};
    struct ArrowSchema *outer[] = {&st};
    st.n_children = 2;
    st.children = inner;
    root.n_children = 1;
    root.children = outer;
    CHECK_OK(marble_arrow_schema_validate(&root, &err));
    struct ArrowSchema c;
    CHECK_OK(marble_arrow_schema_copy(&root, &c, &err));
    ASSERT_NULL(c.name);
    ASSERT_EQ_STR(c.children[0]->children[1]->name, "y");
    ASSERT_EQ_STR(c.children[0]->children[1]->format, "u");
    c.release(&c);
    y.release = NULL;
    ASSERT_CODE(marble_arrow_schema_copy(&root, &c, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(c.release);
    ASSERT_CODE(marble_arrow_schema_copy(NULL, &c, &err), MARBLE_ERR_INVALID_ARGUMENT);
}

TEST(schema_validate_foreign_defects)
{
    struct ArrowSchema root = foreign_schema("+s", "");
    struct ArrowSchema a = foreign_schema("l", "a");
    struct ArrowSchema b = foreign_schema("u", "b");
    struct ArrowSchema *kids[] = {&a, &b};
    root.n_children = 2;
    root.children = kids;
    CHECK_OK(marble_arrow_schema_validate(&root, &err));

    b.format = "+l";
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(err.message, "'b'");
    ASSERT_CONTAINS(err.message, "+l");
    b.format = NULL;
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'b'");
    b.format = "u";

    root.children = NULL;
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "children is NULL");
    root.children = kids;

    kids[1] = NULL;
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "child 1 is NULL");
    kids[1] = &b;

    root.n_children = -1;
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    root.n_children = 2;

    a.n_children = 1;
    a.children = kids;
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'a'");
    a.n_children = 0;
    a.children = NULL;

    a.release = NULL;
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "released");
    a.release = release_noop_schema;

    struct ArrowSchema dict = foreign_schema("u", NULL);
    a.dictionary = &dict;
    ASSERT_CODE(marble_arrow_schema_validate(&root, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(err.message, "dictionary");
    a.dictionary = NULL;

    CHECK_OK(marble_arrow_schema_validate(&root, &err));
    ASSERT_CODE(marble_arrow_schema_validate(NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
}

TEST(schema_release_and_move)
{
    struct ArrowSchema s, moved;
    CHECK_OK(marble_arrow_schema_parse("a:int8,b:utf8", &s, &err));
    marble_arrow_schema_move(&s, &moved);
    ASSERT_NULL(s.release);
    ASSERT_NOT_NULL(moved.release);
    marble_arrow_schema_release(&s);
    marble_arrow_schema_release(NULL);

    struct ArrowSchema child;
    marble_arrow_schema_move(moved.children[1], &child);
    ASSERT_NULL(moved.children[1]->release);
    marble_arrow_schema_release(&moved);
    ASSERT_NULL(moved.release);
    marble_arrow_schema_release(&moved);
    ASSERT_EQ_STR(child.name, "b");
    ASSERT_EQ_STR(child.format, "u");
    marble_arrow_schema_release(&child);
    ASSERT_NULL(child.release);
}

TEST(stream_move_and_release)
{
    struct ArrowArrayStream st, dst;
    memset(&st, 0, sizeof st);
    marble_arrow_stream_release(&st);
    marble_arrow_stream_release(NULL);
    marble_arrow_stream_move(&st, &dst);
    ASSERT_NULL(st.release);
    ASSERT_NULL(dst.release);
}

/* ---- builder --------------------------------------------------------------------------------- */

TEST(builder_every_type_with_nulls)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(
        "n:null,b:bool,i8:int8,i16:int16,i32:int32,i64:int64,u8:uint8,u16:uint16,u32:uint32,"
        "u64:uint64,f32:float32,f64:float64,s:utf8,ls:large_utf8,bin:binary,lb:large_binary,"
        "fx:fixed_size_binary[3],d:date32,ts:timestamp[ns,UTC]",
        &s, &err));
    enum { NCOL = 19, NROW = 20 };
    ASSERT_EQ_INT(s.n_children, NCOL);
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (int r = 0; r < NROW; r++) {
        for (int c = 0; c < NCOL; c++) {
            if (c == 0 || (r % 3 == 1)) {
                CHECK_OK(marble_builder_append_null(b, c, &err));
                continue;
            }
            char text[32];
            snprintf(text, sizeof text, "v%d\xC3\xB1", r);
            switch (c) {
            case 1:
                CHECK_OK(marble_builder_append_int(b, c, r & 1, &err));
                break;
            case 2:
                CHECK_OK(marble_builder_append_int(b, c, r % 2 ? -r : r, &err));
                break;
            case 3:
                CHECK_OK(marble_builder_append_int(b, c, -1000 * r, &err));
                break;
            case 4:
                CHECK_OK(marble_builder_append_int(b, c, INT32_MIN + r, &err));
                break;
            case 5:
                CHECK_OK(marble_builder_append_int(b, c, INT64_MAX - r, &err));
                break;
            case 6:
                CHECK_OK(marble_builder_append_uint(b, c, 255 - r, &err));
                break;
            case 7:
                CHECK_OK(marble_builder_append_int(b, c, 65535 - r, &err));
                break;
            case 8:
                CHECK_OK(marble_builder_append_uint(b, c, UINT32_MAX - r, &err));
                break;
            case 9:
                CHECK_OK(marble_builder_append_uint(b, c, UINT64_MAX - r, &err));
                break;
            case 10:
                CHECK_OK(marble_builder_append_double(b, c, r + 0.5, &err));
                break;
            case 11:
                CHECK_OK(marble_builder_append_double(b, c, -r * 1.25, &err));
                break;
            case 12:
            case 13:
            case 14:
            case 15:
                CHECK_OK(marble_builder_append_bytes(b, c, text, strlen(text), &err));
                break;
            case 16:
                CHECK_OK(marble_builder_append_bytes(b, c, "xyz", 3, &err));
                break;
            case 17:
                CHECK_OK(marble_builder_append_int(b, c, 19000 + r, &err));
                break;
            case 18:
                CHECK_OK(marble_builder_append_int(b, c, 1700000000000000000LL + r, &err));
                break;
            }
        }
    }
    ASSERT_EQ_INT(marble_batch_builder_rows(b), NROW);
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    ASSERT_EQ_INT(marble_batch_builder_rows(b), 0);
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_EQ_INT(a.length, NROW);
    ASSERT_EQ_INT(a.n_buffers, 1);
    ASSERT_NULL(a.buffers[0]);
    ASSERT_EQ_INT(a.n_children, NCOL);
    ASSERT_EQ_INT(a.children[0]->n_buffers, 0);
    ASSERT_EQ_INT(a.children[0]->null_count, NROW);
    for (int c = 1; c < NCOL; c++)
        ASSERT_EQ_INT(a.children[c]->null_count, 7);
    for (int r = 0; r < NROW; r++) {
        struct ArrowSchema **cs = s.children;
        struct ArrowArray **ca = a.children;
        ASSERT_TRUE(marble_arrow_is_null(ca[0], r));
        int null = r % 3 == 1;
        for (int c = 1; c < NCOL; c++)
            ASSERT_EQ_INT(marble_arrow_is_null(ca[c], r), null);
        if (null) continue;
        char text[32];
        snprintf(text, sizeof text, "v%d\xC3\xB1", r);
        ASSERT_EQ_INT(marble_arrow_get_int(cs[1], ca[1], r), r & 1);
        ASSERT_EQ_INT(marble_arrow_get_int(cs[2], ca[2], r), r % 2 ? -r : r);
        ASSERT_EQ_INT(marble_arrow_get_int(cs[3], ca[3], r), -1000 * r);
        ASSERT_EQ_INT(marble_arrow_get_int(cs[4], ca[4], r), INT32_MIN + r);
        ASSERT_EQ_INT(marble_arrow_get_int(cs[5], ca[5], r), INT64_MAX - r);
        ASSERT_EQ_U64(marble_arrow_get_uint(cs[6], ca[6], r), 255 - r);
        ASSERT_EQ_U64(marble_arrow_get_uint(cs[7], ca[7], r), 65535 - r);
        ASSERT_EQ_U64(marble_arrow_get_uint(cs[8], ca[8], r), UINT32_MAX - r);
        ASSERT_EQ_U64(marble_arrow_get_uint(cs[9], ca[9], r), UINT64_MAX - r);
        ASSERT_TRUE(marble_arrow_get_double(cs[10], ca[10], r) == r + 0.5);
        ASSERT_TRUE(marble_arrow_get_double(cs[11], ca[11], r) == -r * 1.25);
        for (int c = 12; c <= 15; c++) {
            const void *p;
            size_t n;
            CHECK_OK(marble_arrow_get_bytes(cs[c], ca[c], r, &p, &n));
            ASSERT_EQ_INT(n, strlen(text));
            ASSERT_TRUE(memcmp(p, text, n) == 0);
        }
        const void *p;
        size_t n;
        CHECK_OK(marble_arrow_get_bytes(cs[16], ca[16], r, &p, &n));
        ASSERT_EQ_INT(n, 3);
        ASSERT_TRUE(memcmp(p, "xyz", 3) == 0);
        ASSERT_EQ_INT(marble_arrow_get_int(cs[17], ca[17], r), 19000 + r);
        ASSERT_EQ_INT(marble_arrow_get_int(cs[18], ca[18], r), 1700000000000000000LL + r);
        CHECK_OK(marble_arrow_get_bytes(cs[5], ca[5], r, &p, &n));
        ASSERT_EQ_INT(n, 8);
    }
    const void *p;
    size_t n;
    ASSERT_EQ_INT(marble_arrow_get_bytes(s.children[1], a.children[1], 0, &p, &n),
                  MARBLE_ERR_UNSUPPORTED);
    marble_arrow_array_release(&a);
    ASSERT_NULL(a.release);
    marble_batch_builder_destroy(b);
    s.release(&s);
}

TEST(builder_empty_batch)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("a:int32,b:utf8,c:bool,d:large_binary,e:null", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    ASSERT_EQ_INT(a.length, 0);
    ASSERT_EQ_INT(a.n_children, 5);
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_NOT_NULL(a.children[0]->buffers[1]);
    ASSERT_NOT_NULL(a.children[1]->buffers[1]);
    ASSERT_NOT_NULL(a.children[1]->buffers[2]);
    ASSERT_EQ_INT(((const int32_t *)a.children[1]->buffers[1])[0], 0);
    ASSERT_EQ_INT(((const int64_t *)a.children[3]->buffers[1])[0], 0);
    ASSERT_NULL(a.children[0]->buffers[0]);
    marble_arrow_array_release(&a);

    struct ArrowSchema none;
    CHECK_OK(marble_arrow_schema_make(&none, NULL, 0, NULL, NULL, 0, &err));
    marble_batch_builder *b0;
    CHECK_OK(marble_batch_builder_create(&none, &b0, &err));
    ASSERT_EQ_INT(marble_batch_builder_rows(b0), 0);
    CHECK_OK(marble_batch_builder_finish(b0, &a, &err));
    ASSERT_EQ_INT(a.n_children, 0);
    CHECK_OK(marble_arrow_array_validate(&none, &a, 0, &err));
    marble_arrow_array_release(&a);
    marble_batch_builder_destroy(b0);
    none.release(&none);
    marble_batch_builder_destroy(b);
    marble_batch_builder_destroy(NULL);
    s.release(&s);
}

TEST(builder_validity_is_lazy)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("a:int16,b:bool", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (int i = 0; i < 13; i++) {
        CHECK_OK(marble_builder_append_int(b, 0, i, &err));
        CHECK_OK(marble_builder_append_int(b, 1, 1, &err));
    }
    CHECK_OK(marble_builder_append_null(b, 0, &err));
    CHECK_OK(marble_builder_append_int(b, 1, 0, &err));
    CHECK_OK(marble_builder_append_int(b, 0, 77, &err));
    CHECK_OK(marble_builder_append_int(b, 1, 1, &err));
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    CHECK_OK(marble_arrow_array_validate(&s, &a, 0, &err));
    ASSERT_NOT_NULL(a.children[0]->buffers[0]);
    ASSERT_NULL(a.children[1]->buffers[0]);
    const uint8_t *v = a.children[0]->buffers[0];
    ASSERT_EQ_HEX(v[0], 0xFF);
    ASSERT_EQ_HEX(v[1], 0x5F);
    ASSERT_EQ_INT(a.children[0]->null_count, 1);
    ASSERT_EQ_INT(a.children[1]->null_count, 0);
    const uint8_t *bits = a.children[1]->buffers[1];
    ASSERT_EQ_HEX(bits[0], 0xFF);
    ASSERT_EQ_HEX(bits[1], 0x5F);
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], a.children[0], 14), 77);
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[1], a.children[1], 13), 0);
    marble_arrow_array_release(&a);
    marble_batch_builder_destroy(b);
    s.release(&s);
}

TEST(builder_buffers_aligned_and_padded)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("a:int64,b:utf8,c:bool", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(marble_builder_append_int(b, 0, i, &err));
        if (i % 7 == 0)
            CHECK_OK(marble_builder_append_null(b, 1, &err));
        else
            CHECK_OK(marble_builder_append_bytes(b, 1, "abc", (size_t)(i % 4), &err));
        CHECK_OK(marble_builder_append_int(b, 2, i % 3 == 0, &err));
    }
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));
    for (int c = 0; c < 3; c++) {
        for (int64_t k = 0; k < a.children[c]->n_buffers; k++) {
            const void *p = a.children[c]->buffers[k];
            if (p) ASSERT_EQ_INT((uintptr_t)p % 64, 0);
        }
    }
    const uint8_t *bits = a.children[2]->buffers[1];
    ASSERT_EQ_HEX(bits[125], 0);
    ASSERT_EQ_HEX(bits[127], 0);
    const uint8_t *validity = a.children[1]->buffers[0];
    ASSERT_EQ_HEX(validity[126], 0);
    const int32_t *off = a.children[1]->buffers[1];
    ASSERT_EQ_INT(off[1000 + 1], 0);
    int64_t nulls = 0;
    for (int i = 0; i < 1000; i++) {
        ASSERT_EQ_INT(marble_arrow_is_null(a.children[1], i), i % 7 == 0);
        nulls += i % 7 == 0;
        ASSERT_EQ_INT(marble_arrow_get_int(s.children[2], a.children[2], i), i % 3 == 0);
        ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], a.children[0], i), i);
    }
    ASSERT_EQ_INT(a.children[1]->null_count, nulls);
    marble_arrow_array_release(&a);
    marble_batch_builder_destroy(b);
    s.release(&s);
}

TEST(builder_range_errors)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(
        "i8:int8,u8:uint8,i16:int16,u16:uint16,i32:int32,u32:uint32,i64:int64,u64:uint64,"
        "b:bool,d:date32,f:float32",
        &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    ASSERT_CODE(marble_builder_append_int(b, 0, 128, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'i8'");
    ASSERT_CONTAINS(err.message, "128");
    ASSERT_CODE(marble_builder_append_int(b, 0, -129, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "value -129 is out of range for int8");
    CHECK_OK(marble_builder_append_int(b, 0, -128, &err));
    CHECK_OK(marble_builder_append_int(b, 0, 127, &err));
    ASSERT_CODE(marble_builder_append_int(b, 1, -1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'u8'");
    ASSERT_CODE(marble_builder_append_uint(b, 1, 256, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 2, 32768, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 2, -32769, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 3, 65536, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 4, (int64_t)INT32_MAX + 1, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 4, (int64_t)INT32_MIN - 1, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 5, -1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_uint(b, 5, (uint64_t)UINT32_MAX + 1, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_uint(b, 6, (uint64_t)INT64_MAX + 1, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    CHECK_OK(marble_builder_append_int(b, 6, INT64_MIN, &err));
    ASSERT_CODE(marble_builder_append_int(b, 7, -1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 7, INT64_MIN, &err), MARBLE_ERR_INVALID_ARGUMENT);
    CHECK_OK(marble_builder_append_uint(b, 7, UINT64_MAX, &err));
    ASSERT_CODE(marble_builder_append_int(b, 8, 2, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'b'");
    ASSERT_CODE(marble_builder_append_int(b, 8, -1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 9, (int64_t)INT32_MAX + 1, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_double(b, 10, 1e300, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'f'");
    ASSERT_CODE(marble_builder_append_double(b, 10, -1e39, &err), MARBLE_ERR_INVALID_ARGUMENT);
    CHECK_OK(marble_builder_append_double(b, 10, INFINITY, &err));
    CHECK_OK(marble_builder_append_double(b, 10, FLT_MAX, &err));
    ASSERT_EQ_INT(marble_batch_builder_rows(b), 2);
    marble_batch_builder_destroy(b);
    s.release(&s);
}

TEST(builder_type_mismatch_names_column)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse(
        "id:int64,name:utf8,v:float64,fx:fixed_size_binary[4],bin:binary,nil:null", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    ASSERT_CODE(marble_builder_append_bytes(b, 0, "x", 1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'id'");
    ASSERT_CONTAINS(err.message, "int64");
    ASSERT_CODE(marble_builder_append_int(b, 1, 5, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'name'");
    ASSERT_CODE(marble_builder_append_double(b, 0, 1.0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_int(b, 2, 1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'v'");
    ASSERT_CODE(marble_builder_append_bytes(b, 3, "abc", 3, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'fx'");
    ASSERT_CODE(marble_builder_append_bytes(b, 3, "abcde", 5, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_bytes(b, 1, "\xC0\xAF", 2, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'name'");
    ASSERT_CONTAINS(err.message, "UTF-8");
    ASSERT_CODE(marble_builder_append_bytes(b, 1, NULL, 3, &err), MARBLE_ERR_INVALID_ARGUMENT);
    CHECK_OK(marble_builder_append_bytes(b, 1, NULL, 0, &err));
    CHECK_OK(marble_builder_append_bytes(b, 4, "\xC0\xAF", 2, &err));
    ASSERT_CODE(marble_builder_append_int(b, 5, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'nil'");
    ASSERT_CODE(marble_builder_append_int(b, 6, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "out of range");
    ASSERT_CODE(marble_builder_append_null(b, -1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_builder_append_null(NULL, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    marble_batch_builder_destroy(b);
    s.release(&s);
}

TEST(builder_uneven_columns_and_reuse)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("a:int32,b:utf8", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    CHECK_OK(marble_builder_append_int(b, 0, 1, &err));
    CHECK_OK(marble_builder_append_int(b, 0, 2, &err));
    CHECK_OK(marble_builder_append_bytes(b, 1, "x", 1, &err));
    struct ArrowArray a;
    ASSERT_CODE(marble_batch_builder_finish(b, &a, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'b'");
    ASSERT_NULL(a.release);
    CHECK_OK(marble_builder_append_null(b, 1, &err));
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    ASSERT_EQ_INT(a.length, 2);
    CHECK_OK(marble_builder_append_int(b, 0, 9, &err));
    CHECK_OK(marble_builder_append_bytes(b, 1, "second", 6, &err));
    struct ArrowArray a2;
    CHECK_OK(marble_batch_builder_finish(b, &a2, &err));
    ASSERT_EQ_INT(a2.length, 1);
    ASSERT_EQ_INT(a2.children[1]->null_count, 0);
    ASSERT_NULL(a2.children[1]->buffers[0]);
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));
    CHECK_OK(marble_arrow_array_validate(&s, &a2, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], a.children[0], 1), 2);
    ASSERT_EQ_INT(marble_arrow_is_null(a.children[1], 1), 1);
    const void *p;
    size_t n;
    CHECK_OK(marble_arrow_get_bytes(s.children[1], a2.children[1], 0, &p, &n));
    ASSERT_EQ_INT(n, 6);
    ASSERT_TRUE(memcmp(p, "second", 6) == 0);
    marble_arrow_array_release(&a);
    marble_arrow_array_release(&a2);
    marble_batch_builder_destroy(b);
    s.release(&s);
}

TEST(builder_rejects_bad_schemas)
{
    marble_batch_builder *b = (marble_batch_builder *)&b;
    struct ArrowSchema col = foreign_schema("l", "x");
    ASSERT_CODE(marble_batch_builder_create(&col, &b, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(b);
    struct ArrowSchema root = foreign_schema("+s", "");
    struct ArrowSchema st = foreign_schema("+s", "nested");
    struct ArrowSchema *kids[] = {&st};
    root.n_children = 1;
    root.children = kids;
    ASSERT_CODE(marble_batch_builder_create(&root, &b, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_CONTAINS(err.message, "'nested'");
    st.format = "+l";
    ASSERT_CODE(marble_batch_builder_create(&root, &b, &err), MARBLE_ERR_UNSUPPORTED);
    ASSERT_CODE(marble_batch_builder_create(NULL, &b, &err), MARBLE_ERR_INVALID_ARGUMENT);
}

TEST(builder_schema_is_copied)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("a:utf8", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    s.release(&s);
    CHECK_OK(marble_builder_append_bytes(b, 0, "still here", 10, &err));
    ASSERT_CODE(marble_builder_append_int(b, 0, 1, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "'a'");
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    marble_arrow_array_release(&a);
    marble_batch_builder_destroy(b);
}

/* ---- validation ------------------------------------------------------------------------------ */

TEST(validate_builder_batch_ok)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    make_batch(&s, &a);
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));
    CHECK_OK(marble_arrow_array_validate(s.children[1], a.children[1], MARBLE_VALIDATE_UTF8, &err));
    ASSERT_CODE(marble_arrow_array_validate(NULL, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CODE(marble_arrow_array_validate(&s, NULL, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    a.release(&a);
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "released");
    s.release(&s);
}

TEST(validate_wrong_n_buffers)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    make_batch(&s, &a);
    a.children[1]->n_buffers = 2;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'name'");
    ASSERT_CONTAINS(err.message, "n_buffers is 2");
    a.children[1]->n_buffers = 3;
    a.children[0]->n_buffers = 3;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'id'");
    a.children[0]->n_buffers = 2;
    a.n_buffers = 0;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "array: n_buffers is 0");
    a.n_buffers = 1;
    CHECK_OK(marble_arrow_array_validate(&s, &a, 0, &err));
    a.release(&a);
    s.release(&s);
}

TEST(validate_null_buffers)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    make_batch(&s, &a);
    const void **ib = a.children[0]->buffers;
    const void *saved = ib[1];
    ib[1] = NULL;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'id'");
    ASSERT_CONTAINS(err.message, "buffer 1");
    ib[1] = saved;

    const void **sb = a.children[1]->buffers;
    saved = sb[1];
    sb[1] = NULL;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'name'");
    ASSERT_CONTAINS(err.message, "buffer 1 (offsets) is NULL");
    sb[1] = saved;
    saved = sb[2];
    sb[2] = NULL;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "buffer 2 (data) is NULL");
    sb[2] = saved;
    saved = sb[0];
    sb[0] = NULL;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "buffer 0 (validity) is NULL but null_count is 1");
    sb[0] = saved;

    const void **fb = a.children[2]->buffers;
    a.children[2]->buffers = NULL;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'flag': buffers is NULL");
    a.children[2]->buffers = fb;
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));
    a.release(&a);
    s.release(&s);
}

TEST(validate_offsets_defects)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    make_batch(&s, &a);
    int32_t *off = (int32_t *)a.children[1]->buffers[1];
    int32_t saved = off[3];
    off[3] = off[2] - 1;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'name'");
    ASSERT_CONTAINS(err.message, "index 3");
    ASSERT_CONTAINS(err.message, "less than the previous");
    off[3] = saved;
    off[0] = -4;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "negative");
    ASSERT_CONTAINS(err.message, "index 0");
    off[0] = 0;
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));

    struct ArrowArray *c = a.children[1];
    c->offset = 2;
    c->length = 3;
    c->null_count = 1;
    CHECK_OK(marble_arrow_array_validate(s.children[1], c, 0, &err));
    c->null_count = 0;
    ASSERT_CODE(marble_arrow_array_validate(s.children[1], c, 0, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    c->offset = 3;
    c->length = 2;
    CHECK_OK(marble_arrow_array_validate(s.children[1], c, MARBLE_VALIDATE_UTF8, &err));
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'name'");
    ASSERT_CONTAINS(err.message, "shorter");
    c->offset = 0;
    c->length = 5;
    c->null_count = 1;
    a.release(&a);
    s.release(&s);
}

TEST(validate_large_offsets)
{
    struct ArrowSchema root = foreign_schema("+s", "");
    struct ArrowSchema col = foreign_schema("U", "big");
    struct ArrowSchema *kids[] = {&col};
    root.n_children = 1;
    root.children = kids;
    int64_t off[4] = {0, 2, 2, 5};
    const char *data = "abcde";
    const void *bufs[3] = {NULL, off, data};
    const void *rbufs[1] = {NULL};
    struct ArrowArray c = foreign_array(3, 0, 3, bufs);
    struct ArrowArray *akids[] = {&c};
    struct ArrowArray a = foreign_array(3, 0, 1, rbufs);
    a.n_children = 1;
    a.children = akids;
    CHECK_OK(marble_arrow_array_validate(&root, &a, MARBLE_VALIDATE_UTF8, &err));
    off[2] = 1;
    ASSERT_CODE(marble_arrow_array_validate(&root, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'big'");
    ASSERT_CONTAINS(err.message, "index 2");
    off[2] = 2;
    off[0] = -1;
    ASSERT_CODE(marble_arrow_array_validate(&root, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    off[0] = 0;
    c.length = 0;
    bufs[1] = NULL;
    bufs[2] = NULL;
    a.length = 0;
    CHECK_OK(marble_arrow_array_validate(&root, &a, 0, &err));
}

TEST(validate_lengths_offsets_null_counts)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    make_batch(&s, &a);
    struct ArrowArray *id = a.children[0];
    id->length = -1;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'id': length -1");
    id->length = 5;
    id->offset = -2;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'id': offset -2");
    id->offset = INT64_MAX;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "overflows");
    id->offset = 0;

    struct ArrowArray *name = a.children[1];
    name->null_count = 2;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'name': null_count is 2");
    ASSERT_CONTAINS(err.message, "1 nulls");
    name->null_count = 6;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "outside");
    name->null_count = -2;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    name->null_count = -1;
    CHECK_OK(marble_arrow_array_validate(&s, &a, MARBLE_VALIDATE_UTF8, &err));
    name->null_count = 1;

    a.children[2]->null_count = 0;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'flag'");
    a.children[2]->null_count = 1;

    a.null_count = 1;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "array: buffer 0 (validity) is NULL");
    a.null_count = 0;
    CHECK_OK(marble_arrow_array_validate(&s, &a, 0, &err));
    a.release(&a);
    s.release(&s);
}

TEST(validate_children_defects)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    make_batch(&s, &a);
    a.children[2]->length = 4;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'flag'");
    ASSERT_CONTAINS(err.message, "shorter than its parent's offset + length 5");
    a.children[2]->length = 5;
    a.offset = 1;
    a.length = 4;
    CHECK_OK(marble_arrow_array_validate(&s, &a, 0, &err));
    a.offset = 2;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "shorter");
    a.offset = 0;
    a.length = 5;
    a.n_children = 2;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "n_children is 2, the schema has 3");
    a.n_children = 3;
    struct ArrowArray *saved = a.children[1];
    a.children[1] = NULL;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'name': array is NULL");
    a.children[1] = saved;
    struct ArrowArray **kids = a.children;
    a.children = NULL;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    a.children = kids;
    a.children[0]->n_children = 1;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'id'");
    a.children[0]->n_children = 0;
    struct ArrowArray dict;
    a.children[0]->dictionary = &dict;
    ASSERT_CODE(marble_arrow_array_validate(&s, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "dictionary");
    a.children[0]->dictionary = NULL;
    CHECK_OK(marble_arrow_array_validate(&s, &a, 0, &err));
    a.release(&a);
    s.release(&s);
}

TEST(validate_nested_struct_path)
{
    struct ArrowSchema root = foreign_schema("+s", "");
    struct ArrowSchema st = foreign_schema("+s", "outer");
    struct ArrowSchema leaf = foreign_schema("i", "leaf");
    struct ArrowSchema *inner[] = {&leaf};
    struct ArrowSchema *outer[] = {&st};
    st.n_children = 1;
    st.children = inner;
    root.n_children = 1;
    root.children = outer;
    int32_t vals[3] = {1, 2, 3};
    const void *lb[2] = {NULL, vals};
    const void *sb[1] = {NULL};
    const void *rb[1] = {NULL};
    struct ArrowArray la = foreign_array(3, 0, 2, lb);
    struct ArrowArray *lk[] = {&la};
    struct ArrowArray sa = foreign_array(3, 0, 1, sb);
    sa.n_children = 1;
    sa.children = lk;
    struct ArrowArray *sk[] = {&sa};
    struct ArrowArray ra = foreign_array(3, 0, 1, rb);
    ra.n_children = 1;
    ra.children = sk;
    CHECK_OK(marble_arrow_array_validate(&root, &ra, 0, &err));
    la.null_count = 1;
    ASSERT_CODE(marble_arrow_array_validate(&root, &ra, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'outer.leaf'");
    la.null_count = 0;
    la.length = 2;
    ASSERT_CODE(marble_arrow_array_validate(&root, &ra, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'outer.leaf'");
}

TEST(validate_null_type_buffers)
{
    struct ArrowSchema col = foreign_schema("n", "nothing");
    const void *one[1] = {NULL};
    struct ArrowArray a = foreign_array(4, 4, 0, NULL);
    CHECK_OK(marble_arrow_array_validate(&col, &a, 0, &err));
    a.n_buffers = 1;
    a.buffers = one;
    CHECK_OK(marble_arrow_array_validate(&col, &a, 0, &err));
    a.n_buffers = 2;
    ASSERT_CODE(marble_arrow_array_validate(&col, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'nothing'");
    ASSERT_TRUE(marble_arrow_is_null(&a, 0));
    ASSERT_TRUE(marble_arrow_is_null(&a, 3));
}

TEST(validate_fixed_width_null_values_buffer)
{
    struct ArrowSchema col = foreign_schema("w:4", "fx");
    const void *bufs[2] = {NULL, NULL};
    struct ArrowArray a = foreign_array(0, 0, 2, bufs);
    CHECK_OK(marble_arrow_array_validate(&col, &a, 0, &err));
    a.length = 1;
    ASSERT_CODE(marble_arrow_array_validate(&col, &a, 0, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(err.message, "column 'fx': buffer 1 (values) is NULL");
}

static void expect_bad_utf8(const char *bytes, size_t n)
{
    char data[64];
    utf8_fixture f;
    utf8_fixture_init(&f, bytes, n, "fine", 4, data);
    CHECK_OK(marble_arrow_array_validate(&f.root, &f.batch, 0, &err));
    marble_error_clear(&err);
    int rc = marble_arrow_array_validate(&f.root, &f.batch, MARBLE_VALIDATE_UTF8, &err);
    if (rc != MARBLE_ERR_INVALID_ARGUMENT) FAIL("bad UTF-8 of %zu bytes accepted", n);
    ASSERT_CONTAINS(err.message, "column 'text'");
    ASSERT_CONTAINS(err.message, "index 1");
    ASSERT_CONTAINS(err.message, "UTF-8");
    f.validity[0] = 0x5;
    f.arr.null_count = 1;
    CHECK_OK(marble_arrow_array_validate(&f.root, &f.batch, MARBLE_VALIDATE_UTF8, &err));
    f.col.format = "z";
    f.validity[0] = 0x7;
    f.arr.null_count = 0;
    CHECK_OK(marble_arrow_array_validate(&f.root, &f.batch, MARBLE_VALIDATE_UTF8, &err));
}

TEST(validate_utf8_rejects_bad_sequences)
{
    expect_bad_utf8("\xC0\xAF", 2);
    expect_bad_utf8("\xC1\xBF", 2);
    expect_bad_utf8("\xE0\x80\xAF", 3);
    expect_bad_utf8("\xE0\x9F\xBF", 3);
    expect_bad_utf8("\xF0\x80\x80\xAF", 4);
    expect_bad_utf8("\xF0\x8F\xBF\xBF", 4);
    expect_bad_utf8("\xED\xA0\x80", 3);
    expect_bad_utf8("\xED\xBF\xBF", 3);
    expect_bad_utf8("\xF4\x90\x80\x80", 4);
    expect_bad_utf8("\xF5\x80\x80\x80", 4);
    expect_bad_utf8("\xFF", 1);
    expect_bad_utf8("\xFE", 1);
    expect_bad_utf8("\x80", 1);
    expect_bad_utf8("a\xBF", 2);
    expect_bad_utf8("\xC3", 1);
    expect_bad_utf8("\xE2\x82", 2);
    expect_bad_utf8("\xF0\x9F\x98", 3);
    expect_bad_utf8("\xC3(", 2);
    expect_bad_utf8("\xE2(\xA1", 3);
    expect_bad_utf8("\xF0\x9F(\x80", 4);
    expect_bad_utf8("abcdefgh\xC0\xAF", 10);
    expect_bad_utf8("abcdefghijklmnop\xED\xA0\x80xyz", 22);
}

TEST(utf8_validator_accepts_boundaries)
{
    const char *good[] = {
        "",
        "plain ascii long enough to take the eight-byte path",
        "\x7F",
        "\xC2\x80",
        "\xDF\xBF",
        "\xE0\xA0\x80",
        "\xED\x9F\xBF",
        "\xEE\x80\x80",
        "\xEF\xBF\xBF",
        "\xF0\x90\x80\x80",
        "\xF4\x8F\xBF\xBF",
        "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 mixed with ascii",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t bad = -1;
        if (!marble__arrow_utf8_valid((const uint8_t *)good[i], (int64_t)strlen(good[i]), &bad))
            FAIL("rejected case %zu at byte %lld", i, (long long)bad);
    }
    const char nul[3] = {'a', '\0', 'b'};
    ASSERT_TRUE(marble__arrow_utf8_valid((const uint8_t *)nul, 3, NULL));
    int64_t at = -1;
    ASSERT_FALSE(marble__arrow_utf8_valid((const uint8_t *)"abc\xE2\x82", 5, &at));
    ASSERT_EQ_INT(at, 3);
}

/* ---- values ---------------------------------------------------------------------------------- */

TEST(values_honour_array_offset)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    make_batch(&s, &a);
    struct ArrowArray *id = a.children[0], *name = a.children[1], *flag = a.children[2];
    id->offset = name->offset = flag->offset = 2;
    id->length = name->length = flag->length = 3;
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], id, 0), 102);
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], id, 2), 104);
    ASSERT_TRUE(marble_arrow_is_null(name, 0));
    ASSERT_FALSE(marble_arrow_is_null(name, 1));
    ASSERT_TRUE(marble_arrow_is_null(flag, 2));
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[2], flag, 1), 1);
    const void *p;
    size_t n;
    CHECK_OK(marble_arrow_get_bytes(s.children[1], name, 1, &p, &n));
    ASSERT_EQ_INT(n, 0);
    CHECK_OK(marble_arrow_get_bytes(s.children[1], name, 2, &p, &n));
    ASSERT_EQ_INT(n, 5);
    ASSERT_TRUE(memcmp(p, "\xC3\xA9t\xC3\xA9", 5) == 0);
    ASSERT_EQ_INT(marble_arrow_get_bytes(s.children[1], name, 3, &p, &n),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_arrow_get_bytes(s.children[1], name, -1, &p, &n),
                  MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_TRUE(marble_arrow_is_null(name, 3));
    ASSERT_TRUE(marble_arrow_is_null(name, -1));
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], id, 3), 0);
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[1], name, 1), 0);
    ASSERT_TRUE(marble_arrow_get_double(s.children[0], id, 1) == 103.0);
    ASSERT_EQ_U64(marble_arrow_get_uint(s.children[0], id, 1), 103);
    id->offset = name->offset = flag->offset = 0;
    id->length = name->length = flag->length = 5;
    a.release(&a);
    s.release(&s);
}

TEST(values_conversions)
{
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("f:float64,u:uint64,i:int8", &s, &err));
    marble_batch_builder *b;
    CHECK_OK(marble_batch_builder_create(&s, &b, &err));
    CHECK_OK(marble_builder_append_double(b, 0, -2.75, &err));
    CHECK_OK(marble_builder_append_uint(b, 1, UINT64_MAX, &err));
    CHECK_OK(marble_builder_append_int(b, 2, -5, &err));
    CHECK_OK(marble_builder_append_double(b, 0, NAN, &err));
    CHECK_OK(marble_builder_append_uint(b, 1, 7, &err));
    CHECK_OK(marble_builder_append_int(b, 2, 5, &err));
    struct ArrowArray a;
    CHECK_OK(marble_batch_builder_finish(b, &a, &err));
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], a.children[0], 0), -2);
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], a.children[0], 1), 0);
    ASSERT_TRUE(isnan(marble_arrow_get_double(s.children[0], a.children[0], 1)));
    ASSERT_TRUE(marble_arrow_get_double(s.children[1], a.children[1], 0) == 18446744073709551615.0);
    ASSERT_EQ_U64(marble_arrow_get_uint(s.children[1], a.children[1], 0), UINT64_MAX);
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[2], a.children[2], 0), -5);
    ASSERT_TRUE(marble_arrow_get_double(s.children[2], a.children[2], 1) == 5.0);
    ASSERT_EQ_INT(marble_arrow_get_bytes(NULL, a.children[0], 0, &(const void *){0}, &(size_t){0}),
                  MARBLE_ERR_INVALID_ARGUMENT);
    marble_arrow_array_release(&a);
    marble_batch_builder_destroy(b);
    s.release(&s);
}

/* ---- release and move ------------------------------------------------------------------------ */

TEST(array_release_and_move)
{
    struct ArrowSchema s;
    struct ArrowArray a, moved;
    make_batch(&s, &a);
    marble_arrow_array_move(&a, &moved);
    ASSERT_NULL(a.release);
    marble_arrow_array_release(&a);
    marble_arrow_array_release(NULL);
    ASSERT_EQ_INT(moved.length, 5);

    struct ArrowArray name;
    marble_arrow_array_move(moved.children[1], &name);
    ASSERT_NULL(moved.children[1]->release);
    moved.release(&moved);
    ASSERT_NULL(moved.release);
    CHECK_OK(marble_arrow_array_validate(s.children[1], &name, MARBLE_VALIDATE_UTF8, &err));
    const void *p;
    size_t n;
    CHECK_OK(marble_arrow_get_bytes(s.children[1], &name, 1, &p, &n));
    ASSERT_EQ_INT(n, 4);
    ASSERT_TRUE(memcmp(p, "beta", 4) == 0);
    marble_arrow_array_release(&name);
    ASSERT_NULL(name.release);
    s.release(&s);
}

static int owner_refs;
static void owner_retain(void *ctx)
{
    ASSERT_EQ_PTR(ctx, &owner_refs);
    owner_refs++;
}
static void owner_release(void *ctx)
{
    ASSERT_EQ_PTR(ctx, &owner_refs);
    owner_refs--;
}

TEST(owned_array_with_external_owner)
{
    static const int64_t external[4] = {10, 20, 30, 40};
    marble__arrow_owner owner = {&owner_refs, owner_retain, owner_release};
    struct ArrowArray a;
    owner_refs = 1;
    CHECK_OK(marble__arrow_array_init(&a, 1, 2, &owner, &err));
    ASSERT_EQ_INT(owner_refs, 2);
    ASSERT_EQ_INT(a.n_buffers, 1);
    ASSERT_EQ_INT(a.n_children, 2);
    ASSERT_NULL(a.buffers[0]);
    ASSERT_NULL(a.children[0]->release);
    ASSERT_NULL(a.dictionary);
    for (int i = 0; i < 2; i++) {
        struct ArrowArray *c = a.children[i];
        CHECK_OK(marble__arrow_array_init(c, 2, 0, &owner, &err));
        c->length = 4;
        marble__arrow_array_set_buffer(c, 1, external);
        uint8_t *bits = marble__arrow_array_alloc_buffer(c, 0, 1);
        ASSERT_NOT_NULL(bits);
        ASSERT_EQ_INT((uintptr_t)bits % 64, 0);
        bits[0] = 0x0B;
        c->null_count = 1;
    }
    a.length = 4;
    ASSERT_EQ_INT(owner_refs, 4);
    struct ArrowSchema s;
    CHECK_OK(marble_arrow_schema_parse("x:int64,y:timestamp[ns]", &s, &err));
    CHECK_OK(marble_arrow_array_validate(&s, &a, 0, &err));
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[1], a.children[1], 3), 40);
    ASSERT_TRUE(marble_arrow_is_null(a.children[1], 2));

    struct ArrowArray kept;
    marble_arrow_array_move(a.children[0], &kept);
    a.release(&a);
    ASSERT_EQ_INT(owner_refs, 2);
    ASSERT_EQ_INT(marble_arrow_get_int(s.children[0], &kept, 1), 20);
    kept.release(&kept);
    ASSERT_EQ_INT(owner_refs, 1);

    void *mem = marble__arrow_alloc(100);
    CHECK_OK(marble__arrow_array_init(&a, 2, 0, NULL, &err));
    marble__arrow_array_adopt_buffer(&a, 1, mem);
    marble__arrow_array_adopt_buffer(&a, 1, marble__arrow_alloc(8));
    a.release(&a);
    ASSERT_CODE(marble__arrow_array_init(&a, -1, 0, NULL, &err), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(a.release);
    s.release(&s);
}

TEST(schema_init_helper)
{
    marble__arrow_kv kv = {"key", 3, "value", 5};
    char *meta;
    struct ArrowSchema s;
    CHECK_OK(marble__arrow_metadata_encode(&kv, 1, &meta, NULL, &err));
    CHECK_OK(marble__arrow_schema_init(&s, "+s", NULL, meta, 0, 1, &err));
    free(meta);
    ASSERT_NULL(s.name);
    ASSERT_NULL(s.children[0]->release);
    CHECK_OK(marble__arrow_schema_init(s.children[0], "tsu:UTC", "when", NULL, ARROW_FLAG_NULLABLE,
                                       0, &err));
    CHECK_OK(marble_arrow_schema_validate(&s, &err));
    char buf[8];
    CHECK_OK(marble_arrow_metadata_get(s.metadata, "key", buf, sizeof buf, &err));
    ASSERT_EQ_STR(buf, "value");
    s.release(&s);
    ASSERT_CODE(marble__arrow_schema_init(&s, NULL, NULL, NULL, 0, 0, &err),
                MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_NULL(s.release);
}

/* ---- private helpers ------------------------------------------------------------------------- */

TEST(growable_buffer)
{
    marble__arrow_buffer b = {0};
    CHECK_OK(marble__arrow_buffer_append(&b, "hello", 5, &err));
    ASSERT_EQ_INT(b.size, 5);
    ASSERT_EQ_INT(b.cap % 64, 0);
    ASSERT_EQ_INT((uintptr_t)b.data % 64, 0);
    for (int i = 0; i < 100; i++)
        CHECK_OK(marble__arrow_buffer_append(&b, "0123456789", 10, &err));
    ASSERT_EQ_INT(b.size, 1005);
    ASSERT_EQ_INT(b.cap % 64, 0);
    ASSERT_TRUE(memcmp(b.data, "hello0123", 9) == 0);
    for (int64_t i = b.size; i < b.cap; i++)
        ASSERT_EQ_INT(b.data[i], 0);
    CHECK_OK(marble__arrow_buffer_append_zeros(&b, 3, &err));
    ASSERT_EQ_INT(b.size, 1008);
    ASSERT_CODE(marble__arrow_buffer_reserve(&b, -1, &err), MARBLE_ERR_LIMIT);
    void *p = marble__arrow_buffer_take(&b);
    ASSERT_NULL(b.data);
    ASSERT_EQ_INT(b.size, 0);
    marble__arrow_free(p);
    marble__arrow_buffer_free(&b);
    ASSERT_NULL(marble__arrow_alloc(-1));
    p = marble__arrow_alloc(0);
    ASSERT_NOT_NULL(p);
    marble__arrow_free(p);
}

TEST(bitmap_helpers)
{
    uint8_t bits[16], out[16];
    for (int i = 0; i < 16; i++)
        bits[i] = (uint8_t)(i * 37 + 11);
    for (int64_t off = 0; off < 20; off++) {
        for (int64_t len = 0; len + off <= 128; len += 7) {
            int64_t zeros = 0;
            for (int64_t i = off; i < off + len; i++)
                zeros += !marble__arrow_bit_get(bits, i);
            ASSERT_EQ_INT(marble__arrow_bitmap_count_zeros(bits, off, len), zeros);
            memset(out, 0xAA, sizeof out);
            marble__arrow_bitmap_copy(out, bits, off, len);
            for (int64_t i = 0; i < len; i++)
                ASSERT_EQ_INT(marble__arrow_bit_get(out, i), marble__arrow_bit_get(bits, off + i));
            for (int64_t i = len; i < marble__arrow_bitmap_bytes(len) * 8; i++)
                ASSERT_EQ_INT(marble__arrow_bit_get(out, i), 0);
        }
    }
    uint8_t x = 0;
    marble__arrow_bit_set(&x, 3, 1);
    ASSERT_EQ_HEX(x, 0x08);
    marble__arrow_bit_set(&x, 3, 0);
    ASSERT_EQ_HEX(x, 0);
}
