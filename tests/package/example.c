/* The package test's example program: it is compiled against an installed copy of Marble (the
 * headers and libmarble from the install prefix, never the source tree). It opens a mem://
 * database, creates a table, puts a batch, reads one row back, prints it and closes. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <marble/marble.h>

static int fail(const char *what, const marble_error *err)
{
    fprintf(stderr, "example: %s: %s\n", what, err->message);
    return 1;
}

int main(void)
{
    marble_error err = {0};
    marble_db *db = NULL;
    marble_batch_builder *b = NULL;
    struct ArrowSchema schema = {0}, rs = {0};
    struct ArrowArray batch = {0}, row = {0};
    int rc = 1;

    if (strcmp(marble_version(), MARBLE_VERSION_STRING) != 0) {
        fprintf(stderr, "example: library %s, headers %s\n", marble_version(), MARBLE_VERSION_STRING);
        return 1;
    }
    if (marble_db_open("mem://example", NULL, &db, &err) != MARBLE_OK) return fail("open", &err);
    if (marble_arrow_schema_parse("id:int64!,name:utf8,v:float64", &schema, &err) != MARBLE_OK) {
        fail("schema", &err);
        goto cleanup;
    }
    const char *key[] = {"id"};
    if (marble_db_create_table(db, "t", &schema, key, 1, &err) != MARBLE_OK) {
        fail("create table", &err);
        goto cleanup;
    }

    static const char *names[] = {"ada", "grace", "edsger"};
    if (marble_batch_builder_create(&schema, &b, &err) != MARBLE_OK) {
        fail("builder", &err);
        goto cleanup;
    }
    for (int i = 0; i < 3; i++) {
        if (marble_builder_append_int(b, 0, i + 1, &err) != MARBLE_OK ||
            marble_builder_append_bytes(b, 1, names[i], strlen(names[i]), &err) != MARBLE_OK ||
            marble_builder_append_double(b, 2, 1.5 * (i + 1), &err) != MARBLE_OK) {
            fail("append", &err);
            goto cleanup;
        }
    }
    if (marble_batch_builder_finish(b, &batch, &err) != MARBLE_OK) {
        fail("finish", &err);
        goto cleanup;
    }
    if (marble_db_put(db, "t", &schema, &batch, NULL, &err) != MARBLE_OK) {
        fail("put", &err);
        goto cleanup;
    }

    marble_value k = {.kind = MARBLE_VALUE_INT, .i = 2};
    if (marble_db_get(db, "t", (marble_key){&k, 1}, NULL, &rs, &row, &err) != MARBLE_OK) {
        fail("get", &err);
        goto cleanup;
    }
    if (row.length != 1 || row.n_children != 3) {
        fprintf(stderr, "example: get returned %" PRId64 " rows, %" PRId64 " columns\n", row.length,
                row.n_children);
        goto cleanup;
    }
    const void *name;
    size_t len;
    if (marble_arrow_get_bytes(rs.children[1], row.children[1], 0, &name, &len) != MARBLE_OK) {
        fprintf(stderr, "example: name column unreadable\n");
        goto cleanup;
    }
    int64_t id = marble_arrow_get_int(rs.children[0], row.children[0], 0);
    double v = marble_arrow_get_double(rs.children[2], row.children[2], 0);
    printf("marble %s: id=%" PRId64 " name=%.*s v=%.1f\n", marble_version(), id, (int)len,
           (const char *)name, v);
    rc = (id == 2 && len == 5 && memcmp(name, "grace", 5) == 0 && v == 3.0) ? 0 : 1;
    if (rc != 0) fprintf(stderr, "example: unexpected row\n");

cleanup:
    marble_arrow_array_release(&row);
    marble_arrow_schema_release(&rs);
    marble_arrow_array_release(&batch);
    marble_arrow_schema_release(&schema);
    marble_batch_builder_destroy(b);
    if (marble_db_close(db, &err) != MARBLE_OK) return fail("close", &err);
    return rc;
}
