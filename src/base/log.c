/* Leveled logging to stderr, one write(2) per line, threshold from MARBLE_LOG. */
#include "marble/base.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

static const char *const names[] = {"off", "error", "warn", "info", "debug", "trace"};
static const char *const labels[] = {"OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

/* Relaxed: the level is a standalone value that orders no other data; pthread_once publishes the
 * initial one. */
static atomic_int threshold = MARBLE_LOG_WARN;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void write_all(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static size_t format_line(char *buf, size_t cap, marble_log_level level, const char *module,
                          const char *fmt, va_list ap)
{
    int h = snprintf(buf, cap, "marble %s [%s] ", labels[level], module ? module : "");
    if (h < 0) return 0;
    size_t off = (size_t)h < cap ? (size_t)h : cap - 1;
    int b = vsnprintf(buf + off, cap - off, fmt, ap);
    return b < 0 ? off : (size_t)h + (size_t)b;
}

static void emit(marble_log_level level, const char *module, const char *fmt, va_list ap)
{
    char stack[1024];
    char *buf = stack;
    va_list again;
    va_copy(again, ap);
    size_t n = format_line(stack, sizeof stack, level, module, fmt, ap);
    if (n + 1 > sizeof stack) {
        buf = malloc(n + 1);
        if (buf) {
            format_line(buf, n + 1, level, module, fmt, again);
        } else {
            buf = stack;
            n = sizeof stack - 1;
        }
    }
    va_end(again);
    buf[n] = '\n';
    write_all(buf, n + 1);
    if (buf != stack) free(buf);
}

static void emitf(marble_log_level level, const char *module, const char *fmt, ...)
    MARBLE_PRINTF(3, 4);

static void emitf(marble_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(level, module, fmt, ap);
    va_end(ap);
}

static void env_init(void)
{
    const char *v = getenv("MARBLE_LOG");
    marble_log_level level = MARBLE_LOG_WARN;
    if (!v || !*v) return;
    if (marble_log_parse_level(v, &level, NULL) != MARBLE_OK) {
        emitf(MARBLE_LOG_WARN, "log", "invalid MARBLE_LOG value \"%s\"; using warn", v);
        return;
    }
    atomic_store_explicit(&threshold, (int)level, memory_order_relaxed);
}

void marble_log_set_level(marble_log_level level)
{
    int v = (int)level;
    if (v < MARBLE_LOG_OFF) v = MARBLE_LOG_OFF;
    if (v > MARBLE_LOG_TRACE) v = MARBLE_LOG_TRACE;
    pthread_once(&env_once, env_init);
    atomic_store_explicit(&threshold, v, memory_order_relaxed);
}

marble_log_level marble_log_get_level(void)
{
    pthread_once(&env_once, env_init);
    return (marble_log_level)atomic_load_explicit(&threshold, memory_order_relaxed);
}

int marble_log_parse_level(const char *name, marble_log_level *out, marble_error *err)
{
    if (!name) return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "log level name is NULL");
    for (int i = MARBLE_LOG_OFF; i <= MARBLE_LOG_TRACE; i++) {
        if (strcasecmp(name, names[i]) == 0) {
            if (out) *out = (marble_log_level)i;
            return MARBLE_OK;
        }
    }
    return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                            "unknown log level \"%s\" (expected error, warn, info, debug, trace "
                            "or off)",
                            name);
}

void marble_log(marble_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    if (level <= MARBLE_LOG_OFF || level > MARBLE_LOG_TRACE || level > marble_log_get_level())
        return;
    va_start(ap, fmt);
    emit(level, module, fmt, ap);
    va_end(ap);
}
