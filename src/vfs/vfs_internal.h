/* Helpers shared by the VFS backends and layers (private to src/vfs/). */
#ifndef MARBLE_VFS_INTERNAL_H
#define MARBLE_VFS_INTERNAL_H

#include "marble/vfs.h"

/* Records an OS error: maps os_errno to a MARBLE_ERR_* code (see vfs.h) and writes
 * "<op> <what>: <strerror>" into err. Returns the code. */
int marble__vfs_os_error(marble_error *err, int os_errno, const char *op, const char *what);

/* The code marble__vfs_os_error would use for os_errno. */
int marble__vfs_errno_code(int os_errno);

/* An "unsupported" method for backends and files that lack one: returns MARBLE_ERR_UNSUPPORTED
 * with a message naming `what` and the backend. */
int marble__vfs_unsupported(marble_error *err, const char *what, const char *backend);

/* The directory part of a backend path, into out: "a/b/c" -> "a/b", "/x" -> "/", "x" -> ".". */
void marble__vfs_parent(const char *path, char *out, size_t cap);

/* curl_global_init, once per process (src/vfs/http.c); returns its CURLcode. */
int marble__curl_global_init(void);

#endif
