/*
 * Private interface between src/vfs/aio.c (batches, the thread path) and the io_uring backend
 * (src/vfs/uring_linux.c, or src/vfs/uring_portable.c where io_uring is not available).
 *
 * aio.c decides which requests of a batch go to the ring (files with an OS descriptor), fills one
 * marble__aio_op per such request and hands them to marble__uring_submit as one run. The ring
 * code reads them (continuing short reads until the request is full or the file ends) and reports
 * each one exactly once through marble__aio_complete, from its completion thread or, when the
 * ring has failed, from the submitting thread.
 *
 * Thread safety: marble__uring_submit may be called from several threads at once, and from a
 * completion callback. marble__uring_destroy only once no op is in flight.
 */
#ifndef MARBLE_VFS_AIO_INTERNAL_H
#define MARBLE_VFS_AIO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "marble/vfs.h"

typedef struct marble__uring marble__uring;

/* One request on its way through the ring. `done` belongs to the ring code once submitted. */
typedef struct marble__aio_op {
    marble_aio_batch *batch;
    marble_aio_req *req;
    size_t index; /* of req in its batch */
    size_t done;  /* bytes read so far */
    int fd;
} marble__aio_op;

/* A batch's ring requests, queued first in first out while the ring is full. */
typedef struct marble__aio_run {
    marble__aio_op *ops;
    size_t n;
    size_t next; /* the first op not yet handed to the kernel */
    struct marble__aio_run *link;
} marble__aio_run;

/* The deepest ring marble_aio_create accepts (the kernel's limit, IORING_MAX_ENTRIES). */
#define MARBLE__URING_MAX_DEPTH 32768u

/* Creates a ring of `depth` entries and its completion thread. MARBLE_ERR_UNSUPPORTED (with the
 * reason) when io_uring is unavailable: not built in, or refused by the kernel. */
int marble__uring_create(unsigned depth, marble__uring **out, marble_error *err);
/* Stops the completion thread and frees the ring. No op may be in flight. Accepts NULL. */
void marble__uring_destroy(marble__uring *u);
/* 0 once the ring has failed (later requests should take the thread path), else 1. */
int marble__uring_usable(marble__uring *u);
/* Queues the run's ops (run->next must be 0) and submits as many as the ring has room for; the
 * rest follow as earlier ops complete. `run` must stay valid until every op has completed. */
void marble__uring_submit(marble__uring *u, marble__aio_run *run);

/* Defined in aio.c: records the outcome of request `index` of `b`, calls the batch's callback
 * and counts the request down. `err` carries the message of a failure (may be NULL). */
void marble__aio_complete(marble_aio_batch *b, size_t index, int status, size_t nread,
                          const marble_error *err);

#endif
