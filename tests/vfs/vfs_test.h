/* Helpers shared by the VFS tests. */
#ifndef MARBLE_TEST_VFS_TEST_H
#define MARBLE_TEST_VFS_TEST_H

#include <stdint.h>

#include "marble/vfs.h"
#include "marble_test.h"

static inline marble_fs *new_fs(void)
{
    marble_fs *fs = NULL;
    marble_error err;
    if (marble_fs_create(&fs, &err) != MARBLE_OK) FAIL("marble_fs_create: %s", err.message);
    return fs;
}

/* Fails the test if anything is still open (marble_fs_destroy reports it as MARBLE_ERR_BUSY). */
static inline void close_fs(marble_fs *fs)
{
    marble_error err;
    if (marble_fs_destroy(fs, &err) != MARBLE_OK) FAIL("marble_fs_destroy: %s", err.message);
}

static inline uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#endif
