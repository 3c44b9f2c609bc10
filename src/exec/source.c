/* Pipeline sources over record batches in memory (one morsel per batch, handed out as zero-copy
 * views of reference-counted batches) and over an ArrowArrayStream (one sequential morsel). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "exec/pipeline_internal.h"

typedef struct mem_src {
    struct ArrowSchema schema;
    marble__shared **batches;
    size_t n;
} mem_src;

typedef struct mem_cursor {
    int64_t i;
    int done;
} mem_cursor;

static int mem_get_schema(void *ud, struct ArrowSchema *out, marble_error *err)
{
    return marble_arrow_schema_copy(&((mem_src *)ud)->schema, out, err);
}

static int mem_open(void *ud, int64_t i, void **cursor, marble_error *err)
{
    mem_src *m = ud;
    if (i < 0 || (size_t)i >= m->n)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "batch source: morsel %lld out of range", (long long)i);
    mem_cursor *c = calloc(1, sizeof *c);
    if (!c) return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "batch source: out of memory");
    c->i = i;
    *cursor = c;
    return MARBLE_OK;
}

static int mem_next(void *ud, void *cursor, struct ArrowArray *out, marble_error *err)
{
    mem_src *m = ud;
    mem_cursor *c = cursor;
    if (c->done) return MARBLE_ERR_NOT_FOUND;
    c->done = 1;
    marble__shared *s = m->batches[c->i];
    return marble__batch_slice(s, 0, marble__shared_batch(s)->length, out, err);
}

static void mem_close(void *ud, void *cursor)
{
    (void)ud;
    free(cursor);
}

static void mem_release(void *ud)
{
    mem_src *m = ud;
    if (!m) return;
    for (size_t i = 0; i < m->n; i++)
        marble__shared_unref(m->batches[i]);
    free(m->batches);
    marble_arrow_schema_release(&m->schema);
    free(m);
}

int marble_source_from_batches(struct ArrowSchema *schema, struct ArrowArray *batches, size_t n,
                               marble_source *out, marble_error *err)
{
    int rc = MARBLE_OK;
    mem_src *m = NULL;
    if (!schema || !schema->release || !out || (n && !batches)) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "batch source: schema, batches or out missing");
        goto fail;
    }
    if (strcmp(schema->format, "+s") != 0) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "batch source: schema format is '%s', not a struct ('+s')",
                              schema->format);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (!batches[i].release) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "batch source: batch %zu is released", i);
            goto fail;
        }
        marble_error e;
        marble_error_clear(&e);
        if (marble_arrow_array_validate(schema, &batches[i], MARBLE_VALIDATE_DEFAULT, &e) != 0) {
            rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                  "batch source: batch %zu does not match the schema: %s", i,
                                  e.message);
            goto fail;
        }
    }
    m = calloc(1, sizeof *m);
    if (!m || !(m->batches = calloc(n ? n : 1, sizeof *m->batches))) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "batch source: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        m->batches[i] = marble__shared_new(&batches[i]);
        if (!m->batches[i]) {
            rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "batch source: out of memory");
            goto fail;
        }
        m->n = i + 1;
    }
    marble_arrow_schema_move(schema, &m->schema);
    memset(out, 0, sizeof *out);
    out->ud = m;
    out->n_morsels = (int64_t)n;
    out->get_schema = mem_get_schema;
    out->open = mem_open;
    out->next = mem_next;
    out->close = mem_close;
    out->release = mem_release;
    return MARBLE_OK;
fail:
    if (m) mem_release(m);
    marble_arrow_schema_release(schema);
    for (size_t i = 0; batches && i < n; i++)
        marble_arrow_array_release(&batches[i]);
    return rc;
}

typedef struct stream_src {
    struct ArrowArrayStream stream;
    struct ArrowSchema schema;
    int opened;
} stream_src;

static int stream_get_schema(void *ud, struct ArrowSchema *out, marble_error *err)
{
    return marble_arrow_schema_copy(&((stream_src *)ud)->schema, out, err);
}

static int stream_open(void *ud, int64_t i, void **cursor, marble_error *err)
{
    stream_src *s = ud;
    if (i != 0 || s->opened)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "stream source: morsel %lld cannot be opened (one morsel, once)",
                                (long long)i);
    s->opened = 1;
    *cursor = s;
    return MARBLE_OK;
}

static int stream_next(void *ud, void *cursor, struct ArrowArray *out, marble_error *err)
{
    stream_src *s = ud;
    (void)cursor;
    memset(out, 0, sizeof *out);
    int e = s->stream.get_next(&s->stream, out);
    if (e != 0) {
        int code = marble_stream_last_code(&s->stream);
        const char *msg = s->stream.get_last_error ? s->stream.get_last_error(&s->stream) : NULL;
        return marble_error_set(err, code ? code : marble_error_from_errno(e), "stream source: %s",
                                msg && *msg ? msg : strerror(e));
    }
    if (!out->release) return MARBLE_ERR_NOT_FOUND;
    marble_error e2;
    marble_error_clear(&e2);
    if (marble_arrow_array_validate(&s->schema, out, MARBLE_VALIDATE_DEFAULT, &e2) != MARBLE_OK) {
        marble_arrow_array_release(out);
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "stream source: a batch does not match the schema: %s", e2.message);
    }
    return MARBLE_OK;
}

static void stream_close(void *ud, void *cursor)
{
    (void)ud;
    (void)cursor;
}

static void stream_release(void *ud)
{
    stream_src *s = ud;
    if (!s) return;
    marble_arrow_stream_release(&s->stream);
    marble_arrow_schema_release(&s->schema);
    free(s);
}

int marble_source_from_stream(struct ArrowArrayStream *stream, marble_source *out,
                              marble_error *err)
{
    if (!stream || !stream->release || !out) {
        if (stream) marble_arrow_stream_release(stream);
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "stream source: stream or out missing");
    }
    stream_src *s = calloc(1, sizeof *s);
    if (!s) {
        marble_arrow_stream_release(stream);
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "stream source: out of memory");
    }
    marble_arrow_stream_move(stream, &s->stream);
    int e = s->stream.get_schema(&s->stream, &s->schema);
    if (e != 0 || !s->schema.release) {
        const char *msg = s->stream.get_last_error ? s->stream.get_last_error(&s->stream) : NULL;
        int rc = marble_error_set(err, marble_error_from_errno(e ? e : EIO),
                                  "stream source: reading the schema failed: %s",
                                  msg && *msg ? msg : strerror(e ? e : EIO));
        stream_release(s);
        return rc;
    }
    memset(out, 0, sizeof *out);
    out->ud = s;
    out->n_morsels = 1;
    out->get_schema = stream_get_schema;
    out->open = stream_open;
    out->next = stream_next;
    out->close = stream_close;
    out->release = stream_release;
    return MARBLE_OK;
}
