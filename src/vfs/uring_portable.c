/* Stand-in for the io_uring backend where it is not built: marble_aio falls back to threads. */
#include <stddef.h>

#include "vfs/aio_internal.h"

int marble__uring_create(unsigned depth, marble__uring **out, marble_error *err)
{
    (void)depth;
    *out = NULL;
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                            "io_uring is not available in this build (no liburing, or not Linux)");
}

void marble__uring_destroy(marble__uring *u)
{
    (void)u;
}

int marble__uring_usable(marble__uring *u)
{
    (void)u;
    return 0;
}

void marble__uring_submit(marble__uring *u, marble__aio_run *run)
{
    (void)u;
    while (run->next < run->n) {
        marble__aio_op *op = &run->ops[run->next++];
        marble_error e;
        marble_error_set(&e, MARBLE_ERR_UNSUPPORTED, "read %s: io_uring is not available",
                         marble_file_uri(op->req->file));
        marble__aio_complete(op->batch, op->index, MARBLE_ERR_UNSUPPORTED, 0, &e);
    }
}
