/*
 * Marble's test harness: TEST(name) registers a test; ASSERT_* fail the current test with the
 * file, line and both values. Each test binary runs one named test (as CTest invokes it, one
 * process per test) or, with no argument, all of its tests. Output ends with
 * "N passed, N failed".
 */
#ifndef MARBLE_TEST_H
#define MARBLE_TEST_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*marble_test_fn)(void);
void marble_test_register(const char *name, marble_test_fn fn);
void marble_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
/* A directory private to the running test (created on first use, removed afterwards). */
const char *marble_test_tmpdir(void);

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void register_##name(void)                                 \
    {                                                                                              \
        marble_test_register(#name, test_##name);                                                  \
    }                                                                                              \
    static void test_##name(void)

#define FAIL(...) marble_test_fail(__FILE__, __LINE__, __VA_ARGS__)

#define ASSERT_TRUE(c)                                                                             \
    do {                                                                                           \
        if (!(c)) FAIL("ASSERT_TRUE(%s)", #c);                                                     \
    } while (0)
#define ASSERT_FALSE(c)                                                                            \
    do {                                                                                           \
        if (c) FAIL("ASSERT_FALSE(%s)", #c);                                                       \
    } while (0)

#define MARBLE_TEST_CMP_(T, fmt, a, op, b)                                                         \
    do {                                                                                           \
        T va_ = (T)(a);                                                                            \
        T vb_ = (T)(b);                                                                            \
        if (!(va_ op vb_)) FAIL("%s %s %s: " fmt " vs " fmt, #a, #op, #b, va_, vb_);               \
    } while (0)

#define ASSERT_EQ_INT(a, b) MARBLE_TEST_CMP_(int64_t, "%" PRId64, a, ==, b)
#define ASSERT_NE_INT(a, b) MARBLE_TEST_CMP_(int64_t, "%" PRId64, a, !=, b)
#define ASSERT_LT_INT(a, b) MARBLE_TEST_CMP_(int64_t, "%" PRId64, a, <, b)
#define ASSERT_LE_INT(a, b) MARBLE_TEST_CMP_(int64_t, "%" PRId64, a, <=, b)
#define ASSERT_GT_INT(a, b) MARBLE_TEST_CMP_(int64_t, "%" PRId64, a, >, b)
#define ASSERT_GE_INT(a, b) MARBLE_TEST_CMP_(int64_t, "%" PRId64, a, >=, b)
#define ASSERT_EQ_U64(a, b) MARBLE_TEST_CMP_(uint64_t, "%" PRIu64, a, ==, b)
#define ASSERT_EQ_HEX(a, b) MARBLE_TEST_CMP_(uint64_t, "0x%" PRIx64, a, ==, b)
#define ASSERT_EQ_PTR(a, b) MARBLE_TEST_CMP_(const void *, "%p", a, ==, b)
#define ASSERT_NOT_NULL(p) MARBLE_TEST_CMP_(const void *, "%p", p, !=, NULL)
#define ASSERT_NULL(p) MARBLE_TEST_CMP_(const void *, "%p", p, ==, NULL)
#define ASSERT_OK(expr) ASSERT_EQ_INT(expr, 0)
#define ASSERT_EQ_STR(a, b)                                                                        \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0)                                                 \
            FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, sa_ ? sa_ : "(null)",                       \
                 sb_ ? sb_ : "(null)");                                                            \
    } while (0)
#define ASSERT_CONTAINS(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            FAIL("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);                        \
    } while (0)

#endif
