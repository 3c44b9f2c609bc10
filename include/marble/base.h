/*
 * Marble base utilities: CRC32C, hashing, a monotonic clock and leveled logging.
 *
 * Thread safety: every function here is thread-safe.
 */
#ifndef MARBLE_BASE_H
#define MARBLE_BASE_H

#include <stddef.h>
#include <stdint.h>

#include "marble/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ------------------------------------
 * marble_crc32c_extend continues a CRC: crc32c(a||b) == extend(crc32c(a), b, len(b)).
 * The start value is 0: marble_crc32c(data, n) == marble_crc32c_extend(0, data, n).
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at run time), otherwise a
 * portable table-driven implementation. Both are always compiled and give identical results. */
MARBLE_API uint32_t marble_crc32c_extend(uint32_t crc, const void *data, size_t n);
MARBLE_API uint32_t marble_crc32c(const void *data, size_t n);
/* The portable implementation, exposed so that tests can compare it with the hardware path. */
MARBLE_API uint32_t marble_crc32c_extend_portable(uint32_t crc, const void *data, size_t n);
/* 1 if marble_crc32c uses a hardware instruction on this CPU. */
MARBLE_API int marble_crc32c_hw(void);

/* ---- Hashing (XXH3 from Debian's libxxhash) --------------------------------------------------
 * Fast, non-cryptographic, stable across runs and platforms (the same input and seed always give
 * the same value), so it may be persisted (bloom filters). */
MARBLE_API uint64_t marble_hash64(const void *data, size_t n, uint64_t seed);

/* ---- Clock ----------------------------------------------------------------------------------
 * Monotonic nanoseconds since an unspecified start (CLOCK_MONOTONIC); never goes backwards. */
MARBLE_API uint64_t marble_now_ns(void);
/* Sleeps at least `ns` nanoseconds (restarts on EINTR). */
MARBLE_API void marble_sleep_ns(uint64_t ns);

/* ---- Logging --------------------------------------------------------------------------------
 * Lines go to stderr as "marble LEVEL [module] message". The threshold comes from the environment
 * variable MARBLE_LOG (error, warn, info, debug, trace, or off; case-insensitive), read once on
 * first use; the default is "warn". marble_log_set_level overrides it at run time. */
typedef enum marble_log_level {
    MARBLE_LOG_OFF = 0,
    MARBLE_LOG_ERROR = 1,
    MARBLE_LOG_WARN = 2,
    MARBLE_LOG_INFO = 3,
    MARBLE_LOG_DEBUG = 4,
    MARBLE_LOG_TRACE = 5
} marble_log_level;

MARBLE_API void marble_log_set_level(marble_log_level level);
MARBLE_API marble_log_level marble_log_get_level(void);
/* Parses a level name; returns MARBLE_ERR_INVALID_ARGUMENT (naming the text) if unknown. */
MARBLE_API int marble_log_parse_level(const char *name, marble_log_level *out, marble_error *err);
MARBLE_API void marble_log(marble_log_level level, const char *module, const char *fmt, ...)
    MARBLE_PRINTF(3, 4);

#define MARBLE_LOG_ENABLED(level) ((level) <= marble_log_get_level())

/* ---- Version --------------------------------------------------------------------------------- */
MARBLE_API const char *marble_version(void);
MARBLE_API int marble_version_number(void);

#ifdef __cplusplus
}
#endif
#endif
