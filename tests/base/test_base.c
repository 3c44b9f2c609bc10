/* Tests for src/base: status codes and marble_error, CRC32C, hashing, the clock and logging. */
#include "marble/base.h"
#include "marble_test.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- status codes and marble_error ---------------------------------------------------------- */

TEST(strerror_known_and_unknown)
{
    ASSERT_EQ_STR(marble_strerror(MARBLE_OK), "ok");
    ASSERT_EQ_STR(marble_strerror(MARBLE_ERR_INVALID_ARGUMENT), "invalid argument");
    ASSERT_EQ_STR(marble_strerror(MARBLE_ERR_IO), "I/O error");
    ASSERT_EQ_STR(marble_strerror(MARBLE_ERR_INTERNAL), "internal error");
#define X(name, value, desc) ASSERT_EQ_STR(marble_strerror(value), desc);
    MARBLE_ERROR_LIST(X)
#undef X
    ASSERT_EQ_STR(marble_strerror(-1), "unknown error");
    ASSERT_EQ_STR(marble_strerror(1000), "unknown error");
    ASSERT_EQ_STR(marble_strerror(1 << 30), "unknown error");
}

TEST(status_name_known_and_unknown)
{
    ASSERT_EQ_STR(marble_status_name(MARBLE_OK), "MARBLE_OK");
    ASSERT_EQ_STR(marble_status_name(MARBLE_ERR_INVALID_ARGUMENT), "MARBLE_ERR_INVALID_ARGUMENT");
    ASSERT_EQ_STR(marble_status_name(MARBLE_ERR_TASK_FAILED), "MARBLE_ERR_TASK_FAILED");
#define X(name, value, desc) ASSERT_EQ_STR(marble_status_name(value), "MARBLE_" #name);
    MARBLE_ERROR_LIST(X)
#undef X
    ASSERT_EQ_STR(marble_status_name(-7), "MARBLE_ERR_UNKNOWN");
    ASSERT_EQ_STR(marble_status_name(1000), "MARBLE_ERR_UNKNOWN");
}

TEST(error_set_and_clear)
{
    marble_error err;
    marble_error_clear(&err);
    ASSERT_EQ_INT(err.code, MARBLE_OK);
    ASSERT_EQ_STR(err.message, "");
    ASSERT_EQ_INT(marble_error_set(&err, MARBLE_ERR_NOT_FOUND, "file %s (%d)", "a.mbl", 7),
                  MARBLE_ERR_NOT_FOUND);
    ASSERT_EQ_INT(err.code, MARBLE_ERR_NOT_FOUND);
    ASSERT_EQ_STR(err.message, "file a.mbl (7)");
    marble_error_clear(&err);
    ASSERT_EQ_INT(err.code, MARBLE_OK);
    ASSERT_EQ_STR(err.message, "");
}

TEST(error_set_truncates_long_message)
{
    char longtext[1000];
    memset(longtext, 'x', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = '\0';
    longtext[0] = 'A';
    marble_error err;
    ASSERT_EQ_INT(marble_error_set(&err, MARBLE_ERR_LIMIT, "%s", longtext), MARBLE_ERR_LIMIT);
    ASSERT_EQ_INT(err.code, MARBLE_ERR_LIMIT);
    ASSERT_EQ_INT(strlen(err.message), MARBLE_ERROR_MESSAGE_SIZE - 1);
    ASSERT_EQ_INT(strncmp(err.message, longtext, MARBLE_ERROR_MESSAGE_SIZE - 1), 0);
}

TEST(error_null_allowed)
{
    ASSERT_EQ_INT(marble_error_set(NULL, MARBLE_ERR_BUSY, "busy %d", 1), MARBLE_ERR_BUSY);
    marble_error_clear(NULL);
}

/* ---- CRC32C ------------------------------------------------------------------------------- */

/* Bit-at-a-time reference, independent of both library paths. */
static uint32_t crc32c_bitwise(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(rng_next(&seed) >> 56);
}

static void check_all_paths(const void *data, size_t n, uint32_t expect)
{
    ASSERT_EQ_HEX(marble_crc32c(data, n), expect);
    ASSERT_EQ_HEX(marble_crc32c_extend(0, data, n), expect);
    ASSERT_EQ_HEX(marble_crc32c_extend_portable(0, data, n), expect);
    ASSERT_EQ_HEX(crc32c_bitwise(data, n), expect);
}

TEST(crc32c_check_value)
{
    check_all_paths("123456789", 9, 0xE3069283u);
}

TEST(crc32c_empty)
{
    check_all_paths("", 0, 0);
    ASSERT_EQ_HEX(marble_crc32c(NULL, 0), 0);
    ASSERT_EQ_HEX(marble_crc32c_extend(0xE3069283u, NULL, 0), 0xE3069283u);
    ASSERT_EQ_HEX(marble_crc32c_extend_portable(0xE3069283u, NULL, 0), 0xE3069283u);
}

TEST(crc32c_rfc3720_vectors)
{
    unsigned char buf[32];
    memset(buf, 0, sizeof buf);
    check_all_paths(buf, sizeof buf, 0x8A9136AAu);
    memset(buf, 0xFF, sizeof buf);
    check_all_paths(buf, sizeof buf, 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)i;
    check_all_paths(buf, sizeof buf, 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)(31 - i);
    check_all_paths(buf, sizeof buf, 0x113FDB5Cu);
}

/* RFC 3720 B.4's SCSI Read (10) command PDU; bytes 20..23 are 00 00 04 00 as in the RFC. */
TEST(crc32c_rfc3720_iscsi_read_pdu)
{
    static const unsigned char pdu[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    check_all_paths(pdu, sizeof pdu, 0xD9963A56u);
}

TEST(crc32c_hw_matches_portable_unaligned)
{
    unsigned char buf[16 + 300];
    fprintf(stderr, "crc32c hardware path: %s\n", marble_crc32c_hw() ? "yes" : "no");
    for (size_t off = 0; off < 16; off++) {
        for (size_t n = 0; n <= 300; n++) {
            fill_random(buf, sizeof buf, 0x9E3779B97F4A7C15u ^ (off * 1000 + n));
            const unsigned char *p = buf + off;
            uint32_t ref = crc32c_bitwise(p, n);
            ASSERT_EQ_HEX(marble_crc32c(p, n), ref);
            ASSERT_EQ_HEX(marble_crc32c_extend_portable(0, p, n), ref);
            ASSERT_EQ_HEX(marble_crc32c_extend(0x12345678u, p, n),
                          marble_crc32c_extend_portable(0x12345678u, p, n));
        }
    }
}

TEST(crc32c_extend_composes)
{
    unsigned char buf[300];
    fill_random(buf, sizeof buf, 42);
    uint32_t whole = marble_crc32c(buf, sizeof buf);
    for (size_t i = 0; i <= sizeof buf; i++) {
        uint32_t a = marble_crc32c(buf, i);
        ASSERT_EQ_HEX(marble_crc32c_extend(a, buf + i, sizeof buf - i), whole);
        uint32_t pa = marble_crc32c_extend_portable(0, buf, i);
        ASSERT_EQ_HEX(marble_crc32c_extend_portable(pa, buf + i, sizeof buf - i), whole);
        size_t j = i + (sizeof buf - i) / 2;
        uint32_t ab = marble_crc32c_extend(a, buf + i, j - i);
        ASSERT_EQ_HEX(marble_crc32c_extend(ab, buf + j, sizeof buf - j), whole);
    }
}

/* ---- hashing ------------------------------------------------------------------------------ */

TEST(hash64_deterministic_and_seeded)
{
    static const char a[] = "marble storage engine", b[] = "marble storage enginf";
    uint64_t h = marble_hash64(a, sizeof a - 1, 0);
    ASSERT_EQ_HEX(marble_hash64(a, sizeof a - 1, 0), h);
    ASSERT_TRUE(marble_hash64(a, sizeof a - 1, 1) != h);
    ASSERT_TRUE(marble_hash64(b, sizeof b - 1, 0) != h);
    ASSERT_TRUE(marble_hash64(a, sizeof a - 2, 0) != h);
    ASSERT_EQ_HEX(marble_hash64(NULL, 0, 0), marble_hash64("", 0, 0));
}

/* xxHash's sanity-test input: byte i is the top byte of PRIME32 * PRIME64^i (mod 2^64). */
static void xxh_sanity_buffer(unsigned char *p, size_t n)
{
    uint64_t gen = 2654435761u;
    for (size_t i = 0; i < n; i++) {
        p[i] = (unsigned char)(gen >> 56);
        gen *= 11400714785074694797u;
    }
}

/* Pins the XXH3-64 algorithm and seed handling: the expected values are the XXH3_64bits
 * test vectors published in xxHash's tests/sanity_test_vectors.h, not values produced by this
 * build, so a change of algorithm or of how marble_hash64 passes the seed fails here. The direct
 * XXH3_64bits_withSeed call only checks that marble_hash64 adds nothing on top of the library. */
TEST(hash64_pinned_xxh3_vectors)
{
    static const struct {
        size_t len;
        uint64_t seed;
        uint64_t expect;
    } v[] = {
        {0, 0, 0x2D06800538D394C2u},
        {0, 11400714785074694797u, 0xA8A6B918B2F0364Au},
        {1, 0, 0xC44BDFF4074EECDBu},
        {1, 11400714785074694797u, 0x032BE332DD766EF8u},
        {12, 0, 0xA713DAF0DFBB77E7u},
        {48, 0, 0x397DA259ECBA1F11u},
        {80, 11400714785074694797u, 0xC6DD0CB699532E73u},
        {195, 0, 0xCD94217EE362EC3Au},
    };
    unsigned char buf[256];
    xxh_sanity_buffer(buf, sizeof buf);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ASSERT_EQ_HEX(marble_hash64(buf, v[i].len, v[i].seed), v[i].expect);
        ASSERT_EQ_HEX(XXH3_64bits_withSeed(buf, v[i].len, v[i].seed), v[i].expect);
    }
}

/* ---- clock -------------------------------------------------------------------------------- */

TEST(clock_monotonic)
{
    uint64_t prev = marble_now_ns();
    for (int i = 0; i < 200000; i++) {
        uint64_t now = marble_now_ns();
        if (now < prev) FAIL("clock went backwards: %" PRIu64 " after %" PRIu64, now, prev);
        prev = now;
    }
}

TEST(clock_sleep_lower_bound)
{
    uint64_t t0 = marble_now_ns();
    marble_sleep_ns(2000000);
    uint64_t t1 = marble_now_ns();
    ASSERT_TRUE(t1 - t0 >= 2000000u);
    marble_sleep_ns(0);
}

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

TEST(clock_sleep_restarts_on_eintr)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    ASSERT_OK(sigaction(SIGALRM, &sa, &old));
    struct itimerval every_2ms = {{0, 2000}, {0, 2000}}, off = {{0, 0}, {0, 0}};
    alarms = 0;
    ASSERT_OK(setitimer(ITIMER_REAL, &every_2ms, NULL));
    uint64_t t0 = marble_now_ns();
    marble_sleep_ns(30000000);
    uint64_t t1 = marble_now_ns();
    ASSERT_OK(setitimer(ITIMER_REAL, &off, NULL));
    ASSERT_OK(sigaction(SIGALRM, &old, NULL));
    ASSERT_GE_INT(alarms, 1);
    ASSERT_TRUE(t1 - t0 >= 30000000u);
}

/* ---- logging ------------------------------------------------------------------------------ */

TEST(log_parse_level_names)
{
    static const struct {
        const char *name;
        marble_log_level level;
    } v[] = {
        {"off", MARBLE_LOG_OFF},     {"OFF", MARBLE_LOG_OFF},     {"Off", MARBLE_LOG_OFF},
        {"error", MARBLE_LOG_ERROR}, {"ERROR", MARBLE_LOG_ERROR}, {"eRrOr", MARBLE_LOG_ERROR},
        {"warn", MARBLE_LOG_WARN},   {"WARN", MARBLE_LOG_WARN},   {"Warn", MARBLE_LOG_WARN},
        {"info", MARBLE_LOG_INFO},   {"INFO", MARBLE_LOG_INFO},   {"iNfO", MARBLE_LOG_INFO},
        {"debug", MARBLE_LOG_DEBUG}, {"DEBUG", MARBLE_LOG_DEBUG}, {"Debug", MARBLE_LOG_DEBUG},
        {"trace", MARBLE_LOG_TRACE}, {"TRACE", MARBLE_LOG_TRACE}, {"tRACE", MARBLE_LOG_TRACE},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        marble_error err;
        marble_log_level out = (marble_log_level)99;
        marble_error_clear(&err);
        ASSERT_OK(marble_log_parse_level(v[i].name, &out, &err));
        ASSERT_EQ_INT(out, v[i].level);
        ASSERT_EQ_INT(err.code, MARBLE_OK);
    }
}

TEST(log_parse_level_bad_name)
{
    static const char *const bad[] = {"verbose", "", "warning", "warn ", "infox", "3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        marble_error err;
        marble_log_level out = MARBLE_LOG_DEBUG;
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        ASSERT_EQ_INT(marble_log_parse_level(bad[i], &out, &err), MARBLE_ERR_INVALID_ARGUMENT);
        ASSERT_EQ_INT(err.code, MARBLE_ERR_INVALID_ARGUMENT);
        ASSERT_CONTAINS(err.message, quoted);
        ASSERT_EQ_INT(out, MARBLE_LOG_DEBUG);
    }
    ASSERT_EQ_INT(marble_log_parse_level("nope", NULL, NULL), MARBLE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ_INT(marble_log_parse_level(NULL, NULL, NULL), MARBLE_ERR_INVALID_ARGUMENT);
}

TEST(log_set_get_level)
{
    marble_log_level saved = marble_log_get_level();
    for (int l = MARBLE_LOG_OFF; l <= MARBLE_LOG_TRACE; l++) {
        marble_log_set_level((marble_log_level)l);
        ASSERT_EQ_INT(marble_log_get_level(), l);
        ASSERT_EQ_INT(MARBLE_LOG_ENABLED(MARBLE_LOG_ERROR), l >= MARBLE_LOG_ERROR);
        ASSERT_EQ_INT(MARBLE_LOG_ENABLED(MARBLE_LOG_TRACE), l >= MARBLE_LOG_TRACE);
    }
    marble_log_set_level(saved);
    ASSERT_EQ_INT(marble_log_get_level(), saved);
}

/* Runs `fn` with stderr redirected to a file and returns what it wrote (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
    char path[600];
    marble_log_get_level();
    snprintf(path, sizeof path, "%s/stderr.txt", marble_test_tmpdir());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    ASSERT_TRUE(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    ASSERT_TRUE(saved >= 0);
    ASSERT_TRUE(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
    fn();
    fflush(stderr);
    ASSERT_TRUE(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    FILE *f = fopen(path, "rb");
    ASSERT_TRUE(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    ASSERT_TRUE(text != NULL);
    ASSERT_EQ_INT(fread(text, 1, (size_t)size, f), size);
    text[size] = '\0';
    fclose(f);
    return text;
}

static void log_some_lines(void)
{
    marble_log_level saved = marble_log_get_level();
    marble_log_set_level(MARBLE_LOG_INFO);
    marble_log(MARBLE_LOG_INFO, "test", "hello %d", 42);
    marble_log(MARBLE_LOG_DEBUG, "test", "filtered");
    marble_log(MARBLE_LOG_TRACE, "test", "filtered");
    marble_log(MARBLE_LOG_ERROR, "sched", "boom: %s", "disk");
    marble_log(MARBLE_LOG_WARN, "vfs", "careful");
    marble_log(MARBLE_LOG_OFF, "test", "never");
    marble_log_set_level(MARBLE_LOG_OFF);
    marble_log(MARBLE_LOG_ERROR, "test", "silenced");
    marble_log_set_level(MARBLE_LOG_TRACE);
    marble_log(MARBLE_LOG_TRACE, "t", "%s", "deep");
    marble_log_set_level(saved);
}

TEST(log_writes_expected_lines)
{
    char *out = capture_stderr(log_some_lines);
    ASSERT_EQ_STR(out, "marble INFO [test] hello 42\n"
                       "marble ERROR [sched] boom: disk\n"
                       "marble WARN [vfs] careful\n"
                       "marble TRACE [t] deep\n");
    free(out);
}

static char long_message[5000];

static void log_long_line(void)
{
    marble_log_level saved = marble_log_get_level();
    marble_log_set_level(MARBLE_LOG_WARN);
    marble_log(MARBLE_LOG_WARN, "big", "%s|", long_message);
    marble_log_set_level(saved);
}

TEST(log_long_line_not_truncated)
{
    memset(long_message, 'q', sizeof long_message - 1);
    char *out = capture_stderr(log_long_line);
    ASSERT_EQ_INT(strlen(out), strlen("marble WARN [big] ") + sizeof long_message - 1 + 2);
    ASSERT_EQ_INT(strncmp(out, "marble WARN [big] qqq", 21), 0);
    ASSERT_EQ_STR(out + strlen(out) - 3, "q|\n");
    free(out);
}

#define LOG_THREADS 8
#define LOG_LINES 500

static void *log_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LOG_LINES; i++)
        marble_log(MARBLE_LOG_WARN, "mt", "thread %d line %d %s", id, i,
                   "padding-padding-padding-padding-padding-padding-padding-padding");
    return NULL;
}

static void log_from_threads(void)
{
    pthread_t t[LOG_THREADS];
    marble_log_level saved = marble_log_get_level();
    marble_log_set_level(MARBLE_LOG_WARN);
    for (int i = 0; i < LOG_THREADS; i++)
        ASSERT_OK(pthread_create(&t[i], NULL, log_thread, (void *)(intptr_t)i));
    for (int i = 0; i < LOG_THREADS; i++)
        ASSERT_OK(pthread_join(t[i], NULL));
    marble_log_set_level(saved);
}

TEST(log_concurrent_lines_do_not_interleave)
{
    char *out = capture_stderr(log_from_threads);
    int seen[LOG_THREADS] = {0};
    int lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int id, n, used = 0;
        if (sscanf(line,
                   "marble WARN [mt] thread %d line %d "
                   "padding-padding-padding-padding-padding-padding-padding-padding%n",
                   &id, &n, &used) != 2 ||
            used != (int)strlen(line))
            FAIL("mangled line: \"%s\"", line);
        ASSERT_TRUE(id >= 0 && id < LOG_THREADS);
        ASSERT_EQ_INT(n, seen[id]);
        seen[id]++;
        lines++;
    }
    ASSERT_EQ_INT(lines, LOG_THREADS * LOG_LINES);
    free(out);
}

/* ---- MARBLE_LOG, read once per process, checked in a fresh copy of this binary ------------- */

__attribute__((constructor)) static void log_env_probe(void)
{
    if (getenv("MARBLE_TEST_LOG_PROBE")) _exit((int)marble_log_get_level());
}

/* Runs this binary with MARBLE_LOG=value (unset if NULL); returns the level it reads and the
 * probe's stderr in `errbuf`. */
static int probe_env_level(const char *value, char *errbuf, size_t cap)
{
    int pipefd[2];
    ASSERT_OK(pipe(pipefd));
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], STDERR_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        setenv("MARBLE_TEST_LOG_PROBE", "1", 1);
        if (value)
            setenv("MARBLE_LOG", value, 1);
        else
            unsetenv("MARBLE_LOG");
        execl("/proc/self/exe", "test_base", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(pipefd[0], errbuf + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    errbuf[got] = '\0';
    close(pipefd[0]);
    int status;
    ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    return WEXITSTATUS(status);
}

TEST(log_level_from_environment)
{
    char errs[1024];
    ASSERT_EQ_INT(probe_env_level(NULL, errs, sizeof errs), MARBLE_LOG_WARN);
    ASSERT_EQ_STR(errs, "");
    ASSERT_EQ_INT(probe_env_level("debug", errs, sizeof errs), MARBLE_LOG_DEBUG);
    ASSERT_EQ_INT(probe_env_level("TRACE", errs, sizeof errs), MARBLE_LOG_TRACE);
    ASSERT_EQ_INT(probe_env_level("Off", errs, sizeof errs), MARBLE_LOG_OFF);
    ASSERT_EQ_INT(probe_env_level("error", errs, sizeof errs), MARBLE_LOG_ERROR);
    ASSERT_EQ_STR(errs, "");
    ASSERT_EQ_INT(probe_env_level("loud", errs, sizeof errs), MARBLE_LOG_WARN);
    ASSERT_CONTAINS(errs, "marble WARN [log] ");
    ASSERT_CONTAINS(errs, "\"loud\"");
    char *second = strstr(errs, "\n");
    ASSERT_TRUE(second != NULL);
    ASSERT_EQ_STR(second, "\n");
}
