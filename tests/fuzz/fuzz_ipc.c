/* libFuzzer target for the Arrow IPC reader: open, schema, every batch (validated, values touched)
 * and the ArrowArrayStream. */
#include "marble/arrow.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch_values(const struct ArrowSchema *s, const struct ArrowArray *a)
{
    for (int64_t c = 0; c < a->n_children; c++) {
        const struct ArrowArray *col = a->children[c];
        const struct ArrowSchema *cs = s->children[c];
        if (cs->n_children > 0) {
            touch_values(cs, col);
            continue;
        }
        for (int64_t i = 0; i < col->length && i < 4096; i++) {
            const void *d;
            size_t len;
            if (marble_arrow_is_null(col, i)) continue;
            if (marble_arrow_get_bytes(cs, col, i, &d, &len) == MARBLE_OK && len > 0) {
                volatile uint8_t first = ((const uint8_t *)d)[0];
                volatile uint8_t last = ((const uint8_t *)d)[len - 1];
                (void)first;
                (void)last;
            } else {
                volatile int64_t v = marble_arrow_get_int(cs, col, i);
                (void)v;
            }
        }
    }
}

static void check(int ok)
{
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    marble_ipc_source src = {data, size, NULL, NULL, NULL};
    marble_ipc_reader *r = NULL;
    marble_error err;
    if (marble_ipc_reader_open(&src, &r, &err) != MARBLE_OK) {
        check(r == NULL && err.message[0] != 0);
        return 0;
    }
    struct ArrowSchema schema;
    check(marble_ipc_reader_schema(r, &schema, &err) == MARBLE_OK);
    check(marble_arrow_schema_validate(&schema, &err) == MARBLE_OK);
    int64_t n = marble_ipc_reader_num_batches(r);
    for (int64_t i = 0; i < n; i++) {
        struct ArrowArray a;
        if (marble_ipc_reader_read(r, i, &a, &err) != MARBLE_OK) {
            check(a.release == NULL && err.message[0] != 0);
            continue;
        }
        check(marble_arrow_array_validate(&schema, &a, MARBLE_VALIDATE_DEFAULT, &err) == MARBLE_OK);
        marble_arrow_array_validate(&schema, &a, MARBLE_VALIDATE_UTF8, &err);
        touch_values(&schema, &a);
        a.release(&a);
    }
    struct ArrowArrayStream st;
    check(marble_ipc_reader_stream(r, &st, &err) == MARBLE_OK);
    marble_ipc_reader_destroy(r);
    struct ArrowSchema ss;
    check(st.get_schema(&st, &ss) == 0);
    ss.release(&ss);
    for (;;) {
        struct ArrowArray a;
        if (st.get_next(&st, &a) != 0) {
            check(st.get_last_error(&st) != NULL);
            break;
        }
        if (!a.release) break;
        a.release(&a);
    }
    st.release(&st);
    schema.release(&schema);
    return 0;
}
