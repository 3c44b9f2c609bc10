/*
 * Test servers for the remote backends: start a real server process on 127.0.0.1 on a free port,
 * wait until it accepts connections, stop it (bounded), and count lines of its logs.
 *
 * test_server_spawn runs any command (nginx here; s3rver or another emulator for the S3 tests):
 * the child dies with the test process (PR_SET_PDEATHSIG), its stdout and stderr go to a log
 * file, and test_server_stop sends SIGTERM, waits up to a bound, then SIGKILLs and reaps it.
 * test_nginx_start writes an nginx configuration under a private prefix (daemon off, a single
 * process, logs, pid and temporary directories inside the prefix: no root needed) that serves a
 * directory, plus any extra `location` blocks. test_silent_listener gives a port that accepts
 * connections and never answers.
 */
#ifndef MARBLE_TEST_REMOTE_SERVERS_H
#define MARBLE_TEST_REMOTE_SERVERS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "marble_test.h"

typedef struct test_server {
    pid_t pid;
    int port;
    char prefix[512]; /* private directory of the server (config, logs) */
    char log[600];    /* its stdout and stderr */
} test_server;

static inline int64_t test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A listening socket on 127.0.0.1 with a kernel-chosen port (*port); the caller closes it. */
static inline int test_listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) FAIL("socket: %s", strerror(errno));
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        FAIL("bind/listen on 127.0.0.1: %s", strerror(errno));
    *port = ntohs(a.sin_port);
    return fd;
}

/* A port that is free now (a server started right after can usually take it). */
static inline int test_free_port(void)
{
    int port;
    int fd = test_listen_any(&port);
    close(fd);
    return port;
}

/* A port that accepts connections (the kernel completes them from the backlog) and never
 * answers: for timeouts. Close the returned descriptor when done. */
static inline int test_silent_listener(int *port)
{
    return test_listen_any(port);
}

static inline int test_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static inline void test_server_stop(test_server *s)
{
    if (!s || s->pid <= 0) return;
    kill(s->pid, SIGTERM);
    int64_t deadline = test_now_ms() + 5000;
    int status;
    while (waitpid(s->pid, &status, WNOHANG) == 0) {
        if (test_now_ms() > deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            break;
        }
        test_sleep_ms(10);
    }
    s->pid = 0;
}

/* Runs argv (argv[0] a path) as a server that listens on s->port (set by the caller); waits up
 * to timeout_ms for the port to accept connections. Returns 0, or -1 if it exited or never
 * listened (its log then says why). s->prefix must be set: the log goes there. */
static inline int test_server_spawn(test_server *s, char *const argv[], int timeout_ms)
{
    snprintf(s->log, sizeof s->log, "%s/server.log", s->prefix);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    s->pid = pid;
    int64_t deadline = test_now_ms() + timeout_ms;
    while (test_now_ms() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            return -1;
        }
        if (test_port_open(s->port)) return 0;
        test_sleep_ms(10);
    }
    test_server_stop(s);
    return -1;
}

static inline void test_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) FAIL("fopen %s: %s", path, strerror(errno));
    if (n && fwrite(data, 1, n, f) != n) FAIL("fwrite %s", path);
    if (fclose(f) != 0) FAIL("fclose %s", path);
}

static inline void test_mkdir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) FAIL("mkdir %s: %s", path, strerror(errno));
}

#define TEST_NGINX "/usr/sbin/nginx"

static inline int test_have_nginx(void)
{
    return access(TEST_NGINX, X_OK) == 0;
}

/* Starts nginx serving `root` on 127.0.0.1 (a free port, s->port) with `extra` (nginx
 * directives inside the server block, e.g. location blocks; may be NULL). Its prefix is a new
 * directory `<parent>/nginx`. Fails the test if it does not come up (with its log). Access log:
 * <prefix>/access.log, one line per request. Retries a few times in case the port was taken. */
static inline void test_nginx_start(test_server *s, const char *parent, const char *root,
                                    const char *extra)
{
    memset(s, 0, sizeof *s);
    snprintf(s->prefix, sizeof s->prefix, "%s/nginx", parent);
    test_mkdir(s->prefix);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/tmp", s->prefix);
    test_mkdir(tmp);
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = test_free_port();
        char conf[700];
        snprintf(conf, sizeof conf, "%s/nginx.conf", s->prefix);
        FILE *f = fopen(conf, "w");
        if (!f) FAIL("fopen %s: %s", conf, strerror(errno));
        fprintf(f,
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid %s/nginx.pid;\n"
                "error_log %s/error.log info;\nevents { worker_connections 256; }\n"
                "http {\n  access_log %s/access.log;\n  default_type application/octet-stream;\n"
                "  client_body_temp_path %s/body;\n  proxy_temp_path %s/proxy;\n"
                "  fastcgi_temp_path %s/fastcgi;\n  uwsgi_temp_path %s/uwsgi;\n"
                "  scgi_temp_path %s/scgi;\n  keepalive_requests 100000;\n"
                "  server {\n    listen 127.0.0.1:%d;\n    root %s;\n%s\n  }\n}\n",
                s->prefix, s->prefix, s->prefix, tmp, tmp, tmp, tmp, tmp, s->port, root,
                extra ? extra : "");
        fclose(f);
        char *argv[] = {(char *)TEST_NGINX, (char *)"-p",     s->prefix, (char *)"-c", conf,
                        (char *)"-e",       (char *)"stderr", NULL};
        if (test_server_spawn(s, argv, 10000) == 0) return;
    }
    char buf[2048] = "";
    FILE *lf = fopen(s->log, "r");
    if (lf) {
        size_t n = fread(buf, 1, sizeof buf - 1, lf);
        buf[n] = 0;
        fclose(lf);
    }
    FAIL("nginx did not start: %s", buf);
}

/* Lines of `path` that contain `needle`. */
static inline int test_count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

/* Waits (up to timeout_ms) until `path` has at least `want` lines containing `needle` (a server
 * logs a request after answering it), then returns the count. */
static inline int test_wait_lines(const char *path, const char *needle, int want, int timeout_ms)
{
    int64_t deadline = test_now_ms() + timeout_ms;
    int n;
    while ((n = test_count_lines(path, needle)) < want && test_now_ms() < deadline)
        test_sleep_ms(10);
    return n;
}

#endif
