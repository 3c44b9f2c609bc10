/* The test runner behind marble_test.h. */
#include "marble_test.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_TESTS 512

static struct {
    const char *name;
    marble_test_fn fn;
} tests[MAX_TESTS];
static int ntests;
static const char *current;
static char tmpdir[512];

void marble_test_register(const char *name, marble_test_fn fn)
{
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "marble_test: more than %d tests in one binary\n", MAX_TESTS);
        exit(2);
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
                char child[1024];
                snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                rm_rf(child);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

const char *marble_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/marble-test-%s-XXXXXX", base ? base : "/tmp",
                 current ? current : "x");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return tmpdir;
}

static void cleanup_tmpdir(void)
{
    if (tmpdir[0]) rm_rf(tmpdir);
    tmpdir[0] = 0;
}

void marble_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s (%s:%d): ", current ? current : "?", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    cleanup_tmpdir();
    _exit(1);
}

static int run_one(int i)
{
    current = tests[i].name;
    fprintf(stderr, "RUN  %s\n", current);
    tests[i].fn();
    cleanup_tmpdir();
    fprintf(stderr, "OK   %s\n", current);
    return 0;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < ntests; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    for (int i = 0; i < ntests; i++) {
        int selected = argc <= 1;
        for (int a = 1; a < argc; a++)
            if (strcmp(argv[a], tests[i].name) == 0) selected = 1;
        if (!selected) continue;
        /* A failing assertion exits the process, so a passing run reaches here. */
        run_one(i);
        passed++;
    }
    if (passed == 0) {
        fprintf(stderr, "marble_test: no test matched\n");
        failed = 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
