/*
 * Crash tests: a writer process is killed with SIGKILL while it writes, and every write it had
 * acknowledged must be there when the database is opened again.
 *
 * crash.sigkill_writer: a child process (fork) opens a database in a temp directory with a small
 * write buffer, small SSTables and a small level 1, so that flushes and compactions run all the
 * time, and writes the workload of workload.h (KV puts and deletes, table puts and deletes as
 * Arrow batches, atomic write batches across the KV table and table "t"), with MARBLE_SYNC_EVERY
 * and one writer thread or MARBLE_SYNC_GROUP and two (alternating by cycle). After each write
 * returns MARBLE_OK it sends a fixed-size record to the parent through a pipe. The parent kills
 * it after a random delay (0-30 ms after the open, every 5th cycle 30-300 ms, every 7th cycle
 * 0-30 ms after the fork, so during recovery), reads the complete records, rebuilds each
 * thread's acknowledged operations from the seed and checks the database: each thread's keys
 * hold exactly the state after its acknowledged operations, or after one more (the operation in
 * flight when the kill came, applied whole or not at all); a full scan and a full KV iteration
 * are ordered and agree with the point reads; marble_db_compact succeeds and changes nothing.
 * The next cycle goes on with the same database.
 *
 * Environment: MARBLE_CRASH_CYCLES sets the number of cycles (default 100; e.g. 2000 for a long
 * run), MARBLE_CRASH_SEED the seed of the operation streams (default: from the clock; it is
 * printed, and every failure message repeats it with the cycle).
 *
 * crash.second_writer_busy: a second process (a fork, except under TSan, and an exec of this
 * binary) that opens a database another process holds gets MARBLE_ERR_BUSY naming the holder
 * ("pid N"); once the holder closes it, another process opens it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "marble_test.h"
#include "workload.h"

#define ACK_MAGIC 0x4b43414du /* "MACK" */
#define ACK_OPENED 1
#define ACK_DONE 2

/* One record per acknowledged write (or the child's "opened"), written with one write(2). */
typedef struct ack_rec {
    uint32_t magic;
    uint32_t kind;
    uint32_t cycle;
    uint32_t thread;
    uint64_t idx;
} ack_rec;

static uint64_t g_seed;
static uint32_t g_cycle;

#define CFAIL(...)                                                                                 \
    do {                                                                                           \
        fprintf(stderr, "seed %" PRIu64 " (MARBLE_CRASH_SEED), cycle %u:\n", g_seed, g_cycle);     \
        FAIL(__VA_ARGS__);                                                                         \
    } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static marble_db_options crash_opts(marble_sync_mode sync)
{
    marble_db_options o;
    marble_db_options_init(&o);
    o.sync = sync;
    o.write_buffer_size = 64 << 10;
    o.target_file_size = 32 << 10;
    o.level1_max_bytes = 96 << 10;
    o.level0_compaction_trigger = 2;
    o.wal_segment_size = 48 << 10;
    o.batch_rows = 64;
    return o;
}

/* ---- the child ----------------------------------------------------------------------------------
 */

typedef struct child_ctx {
    marble_db *db;
    int fd;
    uint32_t cycle;
    int thread;
} child_ctx;

static void child_die(const char *what, const marble_error *err)
{
    char msg[1200];
    int n = snprintf(msg, sizeof msg, "crash child (pid %d): %s: %s\n", (int)getpid(), what,
                     err ? err->message : "");
    if (write(2, msg, (size_t)n) < 0) {
    }
    _exit(3);
}

static void send_rec(int fd, uint32_t kind, uint32_t cycle, int thread, uint64_t idx)
{
    ack_rec r = {ACK_MAGIC, kind, cycle, (uint32_t)thread, idx};
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) child_die("writing to the pipe", NULL);
}

static void *child_writer(void *arg)
{
    child_ctx *c = arg;
    uint64_t rng = wl_seed(g_seed, c->cycle, c->thread);
    uint64_t deadline = now_ns() + 20ull * 1000000000ull;
    for (uint64_t idx = 0; now_ns() < deadline; idx++) {
        wl_op op;
        wl_gen(&rng, wl_version(c->cycle, idx), &op);
        marble_error err = {0};
        int rc = wl_exec(c->db, c->thread, &op, &err);
        if (rc != MARBLE_OK) child_die("write", &err);
        send_rec(c->fd, ACK_DONE, c->cycle, c->thread, idx);
    }
    _exit(4); /* the parent should have killed us long ago */
    return NULL;
}

static void child_main(const char *dir, uint32_t cycle, marble_sync_mode sync, int nthreads, int fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    marble_db_options o = crash_opts(sync);
    o.create_if_missing = 0;
    marble_db *db = NULL;
    marble_error err = {0};
    if (marble_db_open(dir, &o, &db, &err) != MARBLE_OK) child_die("open", &err);
    send_rec(fd, ACK_OPENED, cycle, 0, 0);
    static child_ctx ctx[WL_THREADS];
    pthread_t th[WL_THREADS];
    for (int t = 0; t < nthreads; t++) {
        ctx[t] = (child_ctx){db, fd, cycle, t};
        if (t > 0 && pthread_create(&th[t], NULL, child_writer, &ctx[t]) != 0)
            child_die("pthread_create", NULL);
    }
    child_writer(&ctx[0]);
    _exit(4);
}

/* ---- the parent ---------------------------------------------------------------------------------
 */

/* Waits up to timeout_ms for the child to end; kills it if it does not. Returns the status. */
static int reap(pid_t pid, int timeout_ms)
{
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (r < 0 && errno != EINTR) CFAIL("waitpid: %s", strerror(errno));
        if (now_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            CFAIL("child %d did not end within %d ms", (int)pid, timeout_ms);
        }
        sleep_ns(1000000);
    }
}

typedef struct acks {
    uint64_t n[WL_THREADS];
    int opened;
    unsigned char partial[sizeof(ack_rec)];
    size_t npartial;
} acks;

static void take_records(acks *a, const unsigned char *buf, size_t n)
{
    for (size_t off = 0; off < n; off++) {
        a->partial[a->npartial++] = buf[off];
        if (a->npartial < sizeof(ack_rec)) continue;
        ack_rec r;
        memcpy(&r, a->partial, sizeof r);
        a->npartial = 0;
        if (r.magic != ACK_MAGIC || r.cycle != g_cycle || r.thread >= WL_THREADS)
            CFAIL("bad ack record (magic %x, cycle %u, thread %u)", r.magic, r.cycle, r.thread);
        if (r.kind == ACK_OPENED) {
            a->opened = 1;
        } else if (r.kind == ACK_DONE) {
            if (r.idx != a->n[r.thread])
                CFAIL("thread %u acknowledged operation %" PRIu64 " after %" PRIu64, r.thread,
                      r.idx, a->n[r.thread]);
            a->n[r.thread]++;
        } else {
            CFAIL("bad ack record kind %u", r.kind);
        }
    }
}

/* Reads what is in the pipe, waiting up to wait_ms for more; returns 0 at end of file. */
static int pump(int fd, acks *a, int wait_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    int pr = poll(&p, 1, wait_ms);
    if (pr < 0 && errno != EINTR) CFAIL("poll: %s", strerror(errno));
    if (pr <= 0) return 1;
    unsigned char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) return 1;
        CFAIL("read: %s", strerror(errno));
    }
    if (n == 0) return 0;
    take_records(a, buf, (size_t)n);
    return 1;
}

/* Returns how many threads' in-flight operations were found applied. */
static int check_db(const char *dir, marble_sync_mode sync, wl_model *model, const acks *a,
                    int nthreads)
{
    /* each thread: acknowledged ops applied (model), and the model with the op in flight */
    wl_model with_next = *model;
    for (int t = 0; t < nthreads; t++) {
        uint64_t rng = wl_seed(g_seed, g_cycle, t);
        wl_op op;
        for (uint64_t i = 0; i < a->n[t]; i++) {
            wl_gen(&rng, wl_version(g_cycle, i), &op);
            wl_apply(model, t, &op);
            wl_apply(&with_next, t, &op);
        }
        wl_gen(&rng, wl_version(g_cycle, a->n[t]), &op);
        wl_apply(&with_next, t, &op);
    }

    marble_db_options o = crash_opts(sync);
    o.create_if_missing = 0;
    marble_db *db = NULL;
    marble_error err = {0};
    int rc = marble_db_open(dir, &o, &db, &err);
    if (rc != MARBLE_OK) CFAIL("reopen after the kill: %s (%d)", err.message, rc);
    wl_model obs;
    char why[1024];
    if (wl_read(db, &obs, why, sizeof why) != 0) CFAIL("after the kill: %s", why);
    int applied = 0;
    for (int t = 0; t < WL_THREADS; t++) {
        char why2[512] = "";
        if (!wl_diff(&obs, model, t, why, sizeof why)) continue;
        if (t < nthreads && !wl_diff(&obs, &with_next, t, why2, sizeof why2)) {
            /* the operation in flight was applied whole */
            memcpy(model->kv[t], with_next.kv[t], sizeof model->kv[t]);
            memcpy(model->row[t], with_next.row[t], sizeof model->row[t]);
            applied++;
            continue;
        }
        CFAIL("thread %d (%" PRIu64 " acknowledged operations): %s%s%s", t,
              t < nthreads ? a->n[t] : 0, why, t < nthreads ? "; with the next one applied: " : "",
              t < nthreads ? why2 : "");
    }
    rc = marble_db_compact(db, NULL, &err);
    if (rc != MARBLE_OK) CFAIL("compact after the kill: %s (%d)", err.message, rc);
    wl_model obs2;
    if (wl_read(db, &obs2, why, sizeof why) != 0) CFAIL("after compact: %s", why);
    for (int t = 0; t < WL_THREADS; t++)
        if (wl_diff(&obs2, &obs, t, why, sizeof why))
            CFAIL("compact changed thread %d: %s", t, why);
    rc = marble_db_close(db, &err);
    if (rc != MARBLE_OK) CFAIL("close: %s (%d)", err.message, rc);
    return applied;
}

TEST(sigkill_writer)
{
    const char *env = getenv("MARBLE_CRASH_SEED");
    g_seed = env ? strtoull(env, NULL, 0) : (now_ns() ^ (uint64_t)getpid() << 32);
    env = getenv("MARBLE_CRASH_CYCLES");
    uint32_t cycles = env ? (uint32_t)strtoul(env, NULL, 0) : 100;
    fprintf(stderr, "crash.sigkill_writer: seed %" PRIu64 ", %u cycles\n", g_seed, cycles);

    char dir[700];
    snprintf(dir, sizeof dir, "%s/db", marble_test_tmpdir());
    marble_db_options o = crash_opts(MARBLE_SYNC_EVERY);
    o.create_if_missing = 1;
    marble_db *db = NULL;
    marble_error err = {0};
    if (marble_db_open(dir, &o, &db, &err) != MARBLE_OK) CFAIL("create: %s", err.message);
    if (wl_create_table(db, &err) != MARBLE_OK) CFAIL("create table: %s", err.message);
    if (marble_db_close(db, &err) != MARBLE_OK) CFAIL("close: %s", err.message);

    static wl_model model;
    memset(&model, 0, sizeof model);
    uint64_t timing = g_seed ^ 0xabcdef;
    uint64_t total_acks = 0, in_flight_applied = 0;
    for (g_cycle = 0; g_cycle < cycles; g_cycle++) {
        marble_sync_mode sync = g_cycle % 2 ? MARBLE_SYNC_GROUP : MARBLE_SYNC_EVERY;
        int nthreads = sync == MARBLE_SYNC_GROUP ? 2 : 1;
        int early = g_cycle % 7 == 3;
        uint64_t delay_us = wl_rng(&timing) % 30000;
        if (g_cycle % 5 == 4) delay_us = 30000 + wl_rng(&timing) % 270000;
        int fds[2];
        if (pipe(fds) != 0) CFAIL("pipe: %s", strerror(errno));
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) CFAIL("fork: %s", strerror(errno));
        if (pid == 0) {
            close(fds[0]);
            child_main(dir, g_cycle, sync, nthreads, fds[1]);
            _exit(5);
        }
        close(fds[1]);
        acks a;
        memset(&a, 0, sizeof a);
        uint64_t t0 = now_ns();
        int open = 1;
        if (!early) {
            while (!a.opened && open) {
                if (now_ns() - t0 > 60ull * 1000000000ull) {
                    kill(pid, SIGKILL);
                    reap(pid, 10000);
                    CFAIL("the child did not open the database within 60 s");
                }
                open = pump(fds[0], &a, 100);
            }
            t0 = now_ns();
        }
        uint64_t until = t0 + delay_us * 1000;
        while (open && now_ns() < until) {
            uint64_t left_ms = (until - now_ns()) / 1000000;
            open = pump(fds[0], &a, (int)(left_ms > 0 ? left_ms : 0));
        }
        kill(pid, SIGKILL);
        int status = reap(pid, 10000);
        while (open)
            open = pump(fds[0], &a, 1000);
        close(fds[0]);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            CFAIL("the child ended by itself (status %d) before it was killed: see its message",
                  status);
        for (int t = 0; t < nthreads; t++)
            total_acks += a.n[t];
        in_flight_applied += (uint64_t)check_db(dir, sync, &model, &a, nthreads);
    }
    fprintf(stderr,
            "crash.sigkill_writer: %u cycles, %" PRIu64 " acknowledged writes, %" PRIu64
            " writes in flight at the kill found applied\n",
            cycles, total_acks, in_flight_applied);
}

/* ---- a second writer ----------------------------------------------------------------------------
 */

/* Run in a second process: opens dir and reports what happened on stdout/exit status. */
static int second_open(const char *dir, pid_t holder)
{
    marble_db_options o;
    marble_db_options_init(&o);
    marble_db *db = NULL;
    marble_error err = {0};
    int rc = marble_db_open(dir, &o, &db, &err);
    char want[64];
    snprintf(want, sizeof want, "pid %d", (int)holder);
    if (rc == MARBLE_ERR_BUSY && strstr(err.message, want)) return 0;
    fprintf(stderr, "second open of %s: rc %d, \"%s\" (wanted MARBLE_ERR_BUSY naming %s)\n", dir,
            rc, err.message, want);
    if (rc == MARBLE_OK) marble_db_close(db, NULL);
    return 1;
}

/* The exec'd child: this binary with MARBLE_CRASH_SECOND_OPEN=dir:pid runs only this. */
__attribute__((constructor)) static void second_open_main(void)
{
    const char *env = getenv("MARBLE_CRASH_SECOND_OPEN");
    if (!env) return;
    char dir[700];
    snprintf(dir, sizeof dir, "%s", env);
    char *colon = strrchr(dir, ':');
    if (!colon) _exit(2);
    *colon = 0;
    _exit(second_open(dir, (pid_t)atoi(colon + 1)));
}

TEST(second_writer_busy)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s/db", marble_test_tmpdir());
    marble_db_options o;
    marble_db_options_init(&o);
    marble_db *db = NULL;
    marble_error err = {0};
    if (marble_db_open(dir, &o, &db, &err) != MARBLE_OK) FAIL("open: %s", err.message);
    if (marble_db_kv_put(db, "a", 1, "b", 1, NULL, &err) != MARBLE_OK) FAIL("put: %s", err.message);

    pid_t pid;
    int status;
#ifndef MARBLE_TSAN /* TSan cannot start threads in the fork of a multi-threaded process */
    /* a fork: it inherits this process's memory, but not its lock */
    fflush(NULL);
    pid = fork();
    if (pid < 0) FAIL("fork: %s", strerror(errno));
    if (pid == 0) _exit(second_open(dir, getppid()));
    status = reap(pid, 60000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("forked second writer: status %d (see its message)", status);
#endif

    /* an exec of this binary: a process that shares nothing with this one */
    char env[800];
    snprintf(env, sizeof env, "MARBLE_CRASH_SECOND_OPEN=%s:%d", dir, (int)getpid());
    fflush(NULL);
    pid = fork();
    if (pid < 0) FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        char *argv[] = {(char *)"test_crash", (char *)"--list", NULL};
        char *envp[] = {env, NULL};
        execve("/proc/self/exe", argv, envp);
        _exit(6);
    }
    status = reap(pid, 60000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("exec'd second writer: status %d (see its message)", status);

    /* once the holder closes, another process may open it */
    if (marble_db_close(db, &err) != MARBLE_OK) FAIL("close: %s", err.message);
    fflush(NULL);
    pid = fork();
    if (pid < 0) FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        marble_db *d2 = NULL;
        marble_error e2 = {0};
        if (marble_db_open(dir, &o, &d2, &e2) != MARBLE_OK) _exit(1);
        void *v = NULL;
        size_t vl = 0;
        int ok = marble_db_kv_get(d2, NULL, "a", 1, &v, &vl, &e2) == MARBLE_OK && vl == 1;
        marble_free(v);
        _exit(marble_db_close(d2, &e2) == MARBLE_OK && ok ? 0 : 1);
    }
    status = reap(pid, 60000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("open after the holder closed: status %d", status);
}
