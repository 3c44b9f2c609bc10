/*
 * Marble status codes and error reporting.
 *
 * Every fallible function returns an int: MARBLE_OK (0) or one of the MARBLE_ERR_* codes below.
 * Most also take an optional `marble_error *err` as their last argument (NULL allowed); on
 * failure it receives the code and a message that names the thing that failed. The library never
 * prints, exits or aborts on bad input.
 *
 * Thread safety: marble_strerror is thread-safe; a marble_error is written by one call at a time.
 */
#ifndef MARBLE_ERROR_H
#define MARBLE_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MARBLE_API __declspec(dllexport)
#elif defined(__GNUC__)
#define MARBLE_API __attribute__((visibility("default")))
#else
#define MARBLE_API
#endif

#if defined(__GNUC__)
#define MARBLE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define MARBLE_PRINTF(f, a)
#endif

/* X(name, value, description). Values are stable; new codes are added at the end. */
#define MARBLE_ERROR_LIST(X)                                                                       \
    X(OK, 0, "ok")                                                                                 \
    X(ERR_INVALID_ARGUMENT, 1, "invalid argument")                                                 \
    X(ERR_NO_MEMORY, 2, "out of memory")                                                           \
    X(ERR_IO, 3, "I/O error")                                                                      \
    X(ERR_NOT_FOUND, 4, "not found")                                                               \
    X(ERR_EXISTS, 5, "already exists")                                                             \
    X(ERR_CORRUPTION, 6, "corruption")                                                             \
    X(ERR_CANCELLED, 7, "cancelled")                                                               \
    X(ERR_BUSY, 8, "busy")                                                                         \
    X(ERR_LIMIT, 9, "limit exceeded")                                                              \
    X(ERR_UNSUPPORTED, 10, "not supported")                                                        \
    X(ERR_TIMEOUT, 11, "timed out")                                                                \
    X(ERR_SHUTDOWN, 12, "shut down")                                                               \
    X(ERR_TASK_FAILED, 13, "task failed")                                                          \
    X(ERR_INTERNAL, 14, "internal error")                                                          \
    X(ERR_PERMISSION, 15, "permission denied")                                                     \
    X(ERR_NO_SPACE, 16, "no space left")

enum marble_status_code {
#define MARBLE_X_ENUM(name, value, desc) MARBLE_##name = value,
    MARBLE_ERROR_LIST(MARBLE_X_ENUM)
#undef MARBLE_X_ENUM
};

#define MARBLE_ERROR_MESSAGE_SIZE 256

/* Caller-allocated value type. `code` is MARBLE_OK and `message` empty until a failure. */
typedef struct marble_error {
    int code;
    char message[MARBLE_ERROR_MESSAGE_SIZE];
} marble_error;

/* Static description of a code ("invalid argument"); "unknown error" for unknown codes. */
MARBLE_API const char *marble_strerror(int code);

/* Name of a code ("MARBLE_ERR_INVALID_ARGUMENT"); "MARBLE_ERR_UNKNOWN" for unknown codes. */
MARBLE_API const char *marble_status_name(int code);

/* Records `code` and a printf-style message into `err` (if not NULL) and returns `code`.
 * Messages longer than the buffer are truncated. */
MARBLE_API int marble_error_set(marble_error *err, int code, const char *fmt, ...)
    MARBLE_PRINTF(3, 4);

/* The errno value a C Stream Interface callback returns for a code: 0 for MARBLE_OK, ENOMEM,
 * EINVAL (invalid argument), ENOTSUP (unsupported), ECANCELED (cancelled), else EIO (I/O errors,
 * corruption, limits, ...).
 * marble_error_from_errno maps those back (other values: MARBLE_ERR_IO), for foreign streams. */
MARBLE_API int marble_error_to_errno(int code);
MARBLE_API int marble_error_from_errno(int e);

/* Resets `err` (if not NULL) to MARBLE_OK with an empty message. */
MARBLE_API void marble_error_clear(marble_error *err);

/* Evaluates `expr` (an int status) and returns it from the enclosing function unless MARBLE_OK. */
#define MARBLE_RETURN_NOT_OK(expr)                                                                 \
    do {                                                                                           \
        int marble_status_ = (expr);                                                               \
        if (marble_status_ != MARBLE_OK) return marble_status_;                                    \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
