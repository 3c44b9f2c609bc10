/* Status codes (generated from MARBLE_ERROR_LIST) and marble_error helpers. */
#include "marble/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

const char *marble_strerror(int code)
{
    switch (code) {
#define X(name, value, desc)                                                                       \
    case value:                                                                                    \
        return desc;
        MARBLE_ERROR_LIST(X)
#undef X
    }
    return "unknown error";
}

const char *marble_status_name(int code)
{
    switch (code) {
#define X(name, value, desc)                                                                       \
    case value:                                                                                    \
        return "MARBLE_" #name;
        MARBLE_ERROR_LIST(X)
#undef X
    }
    return "MARBLE_ERR_UNKNOWN";
}

int marble_error_set(marble_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void marble_error_clear(marble_error *err)
{
    if (err) {
        err->code = MARBLE_OK;
        err->message[0] = '\0';
    }
}

int marble_error_to_errno(int code)
{
    switch (code) {
    case MARBLE_OK:
        return 0;
    case MARBLE_ERR_NO_MEMORY:
        return ENOMEM;
    case MARBLE_ERR_INVALID_ARGUMENT:
        return EINVAL;
    case MARBLE_ERR_UNSUPPORTED:
        return ENOTSUP;
    case MARBLE_ERR_CANCELLED:
        return ECANCELED;
    default:
        return EIO;
    }
}

int marble_error_from_errno(int e)
{
    switch (e) {
    case 0:
        return MARBLE_OK;
    case ENOMEM:
        return MARBLE_ERR_NO_MEMORY;
    case EINVAL:
        return MARBLE_ERR_INVALID_ARGUMENT;
    case ENOTSUP:
        return MARBLE_ERR_UNSUPPORTED;
    case ECANCELED:
        return MARBLE_ERR_CANCELLED;
    default:
        return MARBLE_ERR_IO;
    }
}
