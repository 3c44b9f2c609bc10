/*
 * s3rver (the npm package pinned in tests/remote/package.json) for the S3 backend tests:
 * installs it with `npm ci` once per package-lock.json (under a flock, so parallel tests and
 * build trees install once), then starts it on 127.0.0.1 on a free port with a private data
 * directory and the bucket "test-bucket". Process and port helpers come from servers.h.
 * s3rver's credentials are S3RVER / S3RVER; it checks the access key id but not SigV4
 * signatures. Node runs with --openssl-legacy-provider: s3rver 3.7.1 makes its ListObjectsV2
 * continuation tokens with a cipher that OpenSSL 3 only has in the legacy provider.
 */
#ifndef MARBLE_TEST_REMOTE_S3RVER_H
#define MARBLE_TEST_REMOTE_S3RVER_H

#include <libgen.h>

#include "servers.h"

typedef struct test_s3rver {
    test_server srv;
    char data[600];     /* the storage directory */
    char endpoint[64];  /* "http://127.0.0.1:PORT" */
} test_s3rver;

/* The directory of this header (tests/remote in the source tree). */
static inline void s3rver_dir(char *out, size_t cap)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", __FILE__);
    snprintf(out, cap, "%s", dirname(tmp));
}

/* Returns 1 when s3rver can run (node and npm present, install done), 0 to skip (with a line
 * on stderr saying why). Fails the test if npm ci fails. */
static inline int s3rver_prepare(void)
{
    if (system("command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP: node and npm are needed for the S3 tests (scripts/deps.sh "
                        "installs them)\n");
        return 0;
    }
    char dir[1024], cmd[4096];
    s3rver_dir(dir, sizeof dir);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && want=$(sha256sum package-lock.json | cut -d' ' -f1) && "
             "stamp=node_modules/.marble-package-lock.sha256 && "
             "( flock 9; if [ \"$(cat $stamp 2>/dev/null)\" != \"$want\" ]; then "
             "npm ci --no-audit --no-fund --loglevel=error >&2 && echo $want > $stamp; fi ) "
             "9<package-lock.json",
             dir);
    if (system(cmd) != 0) FAIL("npm ci failed in %s (is the npm registry reachable?)", dir);
    return 1;
}

/* Starts s3rver; FAILs if it does not listen within 20 s. */
static inline void s3rver_start(test_s3rver *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->srv.prefix, sizeof t->srv.prefix, "%s/s3rver", marble_test_tmpdir());
    snprintf(t->data, sizeof t->data, "%s/data", t->srv.prefix);
    test_mkdir(t->srv.prefix);
    test_mkdir(t->data);
    char dir[1024], script[1200], port[16];
    s3rver_dir(dir, sizeof dir);
    snprintf(script, sizeof script, "%s/node_modules/s3rver/bin/s3rver.js", dir);
    const char *node = access("/usr/bin/node", X_OK) == 0 ? "/usr/bin/node" : "/usr/local/bin/node";
    for (int attempt = 0; attempt < 3; attempt++) {
        t->srv.port = test_free_port();
        snprintf(port, sizeof port, "%d", t->srv.port);
        char *argv[] = {(char *)node, "--openssl-legacy-provider", script, "-s", "-a", "127.0.0.1", "-p", port, "-d", t->data,
                        "--configure-bucket", "test-bucket", NULL};
        if (test_server_spawn(&t->srv, argv, 20000) == 0) {
            snprintf(t->endpoint, sizeof t->endpoint, "http://127.0.0.1:%d", t->srv.port);
            return;
        }
    }
    FAIL("s3rver did not start (log: %s)", t->srv.log);
}

static inline void s3rver_stop(test_s3rver *t)
{
    test_server_stop(&t->srv);
}

#endif
