/* marble-bench: Marble's benchmark driver; `marble-bench sched` compares task schedulers. */
#include "bench_sched.h"
#include "bench_tree.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIB_N 30
#define SPAWN_TASKS 1000000u
#define SUM_ELEMENTS 100000000u
#define IDLE_SECONDS 1.0
#define MAX_THREAD_COUNTS 32
#define MAX_THREADS 4096

enum bench_kind { B_FIB, B_SPAWN, B_SPAWN_TOKEN, B_TREE, B_SUM, B_IDLE, B_COUNT };

static const char *const bench_names[B_COUNT] = {"fib",  "spawn", "spawn_token",
                                                 "tree", "sum",   "idle"};

typedef struct impl_entry {
    const char *name;
    const bench_sched_impl *impl; /* NULL: not built in */
} impl_entry;

static const impl_entry impls[] = {
#ifdef MARBLE_BENCH_SCHED_MARBLE
    {"marble", &bench_marble_impl},
#else
    {"marble", NULL},
#endif
    {"mutex_pool", &bench_mutex_pool_impl},
    {"openmp", &bench_openmp_impl},
    {"tbb", &bench_tbb_impl},
};
#define IMPL_COUNT ((int)(sizeof(impls) / sizeof(impls[0])))

typedef struct options {
    int json;
    int reps;
    int nthreads;
    int threads[MAX_THREAD_COUNTS];
    int bench_on[B_COUNT];
    int impl_on[IMPL_COUNT];
} options;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: marble-bench <area> [options]\n"
        "\n"
        "areas:\n"
        "  sched   task schedulers: marble's work-stealing scheduler side by side with\n"
        "          mutex_pool (one global mutex+condvar FIFO queue, the design it replaces),\n"
        "          openmp (gcc's OpenMP tasks) and tbb (oneTBB task_group)\n"
        "\n"
        "options of sched:\n"
        "  --json              one JSON object per line instead of the table\n"
        "  --threads LIST      comma-separated thread counts (default 1,2 and the CPU count\n"
        "                      when it is above 2)\n"
        "  --reps R            timed runs per row after one warm-up run; the best is kept\n"
        "                      (default 3)\n"
        "  --only LIST         workloads to run (default all):\n"
        "                        fib          fib(%d), one task per call\n"
        "                        spawn        %u empty tasks from one outside thread\n"
        "                        spawn_token  the same through the impl's producer-side path\n"
        "                                     (marble: a producer token)\n"
        "                        tree         fork-join over an unbalanced tree of %u nodes\n"
        "                        sum          parallel sum of %u uint32 values\n"
        "                        idle         CPU used by an idle pool for %.0f s\n"
        "                                     (in %% of one core)\n"
        "  --impl LIST         implementations (default all): marble,mutex_pool,openmp,tbb\n"
        "                      spawn_token is marble's producer token, mutex_pool's batches\n"
        "                      of 64 tasks per lock; openmp and tbb have no such row\n"
        "  -h, --help          this text\n"
        "\n"
        "threads counts the threads that run tasks: marble's and mutex_pool's workers (the\n"
        "calling thread only submits and waits), the OpenMP team or the TBB arena (the\n"
        "calling thread is one of them).\n"
        "ns/task is seconds divided by the workload's task count: fib calls, spawned tasks,\n"
        "tree nodes, and for sum the summed elements. time/marble is the row's seconds divided\n"
        "by marble's at the same workload and thread count (above 1: marble is faster).\n"
        "Every result is checked; a wrong one is reported and the exit status is 1.\n"
        "Bad arguments exit with status 2.\n",
        FIB_N, SPAWN_TASKS, BENCH_TREE_NODES, SUM_ELEMENTS, IDLE_SECONDS);
}

static int bad_args(const char *fmt, const char *what)
{
    fprintf(stderr, "marble-bench: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (see marble-bench --help)\n");
    return 2;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* Splits a comma-separated list in place; returns the item count or -1 on an empty item. */
static int split_list(char *s, char **items, int max)
{
    int n = 0;
    for (char *p = s;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        if (!*p || n == max) return -1;
        items[n++] = p;
        if (!comma) return n;
        p = comma + 1;
    }
}

static int parse_sched_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof(*o));
    o->reps = 3;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads[o->nthreads++] = 1;
    o->threads[o->nthreads++] = 2;
    if (ncpu > 2) o->threads[o->nthreads++] = ncpu > MAX_THREADS ? MAX_THREADS : (int)ncpu;
    for (int b = 0; b < B_COUNT; b++)
        o->bench_on[b] = 1;
    for (int i = 0; i < IMPL_COUNT; i++)
        o->impl_on[i] = impls[i].impl != NULL;
    int impl_chosen = 0;

    for (int i = 0; i < argc; i++) {
        char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(arg, "--json")) {
            o->json = 1;
            continue;
        }
        char *value = NULL;
        char *eq = strchr(arg, '=');
        if (eq && !strncmp(arg, "--", 2)) {
            *eq = '\0';
            value = eq + 1;
        }
        int takes_value = !strcmp(arg, "--threads") || !strcmp(arg, "--reps") ||
                          !strcmp(arg, "--only") || !strcmp(arg, "--impl");
        if (!takes_value) return bad_args("sched: unknown option '%s'", arg);
        if (!value) {
            if (i + 1 >= argc) return bad_args("sched: option '%s' needs a value", arg);
            value = argv[++i];
        }
        char copy[1024];
        snprintf(copy, sizeof(copy), "%s", value);
        char *items[64];
        int n = split_list(copy, items, 64);
        if (n < 0) return bad_args("sched: bad list '%s'", value);
        if (!strcmp(arg, "--reps")) {
            if (n != 1 || parse_int(items[0], 1, 1000, &o->reps))
                return bad_args("sched: --reps wants a number from 1 to 1000, not '%s'", value);
        } else if (!strcmp(arg, "--threads")) {
            if (n > MAX_THREAD_COUNTS)
                return bad_args("sched: too many thread counts in '%s'", value);
            o->nthreads = n;
            for (int k = 0; k < n; k++)
                if (parse_int(items[k], 1, MAX_THREADS, &o->threads[k]))
                    return bad_args("sched: bad thread count '%s' (1 to 4096)", items[k]);
        } else if (!strcmp(arg, "--only")) {
            memset(o->bench_on, 0, sizeof(o->bench_on));
            for (int k = 0; k < n; k++) {
                int b = 0;
                while (b < B_COUNT && strcmp(items[k], bench_names[b]))
                    b++;
                if (b == B_COUNT)
                    return bad_args("sched: unknown workload '%s' (fib, spawn, spawn_token, "
                                    "tree, sum, idle)",
                                    items[k]);
                o->bench_on[b] = 1;
            }
        } else {
            impl_chosen = 1;
            memset(o->impl_on, 0, sizeof(o->impl_on));
            for (int k = 0; k < n; k++) {
                int m = 0;
                while (m < IMPL_COUNT && strcmp(items[k], impls[m].name))
                    m++;
                if (m == IMPL_COUNT)
                    return bad_args("sched: unknown impl '%s' (marble, mutex_pool, openmp, tbb)",
                                    items[k]);
                if (!impls[m].impl)
                    return bad_args("sched: impl '%s' is not built in (configured with "
                                    "-DMARBLE_BENCH_SCHED_MARBLE=OFF)",
                                    items[k]);
                o->impl_on[m] = 1;
            }
        }
    }
    if (!impl_chosen && !impls[0].impl)
        fprintf(stderr, "marble-bench: note: the marble impl is not built in "
                        "(MARBLE_BENCH_SCHED_MARBLE=OFF); running the peers only\n");
    return 0;
}

static uint64_t fib_seq(int n)
{
    uint64_t a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        uint64_t c = a + b;
        a = b;
        b = c;
    }
    return a;
}

static uint64_t tree_count_seq(uint64_t id)
{
    uint64_t nodes = 0;
    for (;;) {
        uint64_t h;
        uint32_t k = bench_tree_expand(id, &h);
        nodes++;
        if (k == 0) return nodes;
        for (uint32_t i = 0; i + 1 < k; i++)
            nodes += tree_count_seq(bench_tree_child(h, i));
        id = bench_tree_child(h, k - 1);
    }
}

static uint32_t *sum_data_new(size_t n, uint64_t *sum)
{
    uint32_t *data = malloc(n * sizeof(uint32_t));
    if (!data) return NULL;
    uint32_t x = 0x2545F491u;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        data[i] = x;
        s += x;
    }
    *sum = s;
    return data;
}

typedef struct row {
    const char *bench;
    const char *impl;
    int threads;
    double seconds;
    uint64_t tasks;
    double cpu_pct;   /* idle rows only */
    double vs_marble; /* < 0: no marble row to compare with */
} row;

static void print_header(const options *o, uint64_t tree_nodes)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("marble-bench sched: %ld CPUs, threads", ncpu);
    for (int i = 0; i < o->nthreads; i++)
        printf("%s%d", i ? "," : " ", o->threads[i]);
    printf(", best of %d runs after 1 warm-up\n", o->reps);
    printf("fib(%d): %llu calls; spawn: %u tasks; tree: %llu nodes; sum: %u uint32 "
           "(ns/task there is per element)\n",
           FIB_N, (unsigned long long)(2 * fib_seq(FIB_N + 1) - 1), SPAWN_TASKS,
           (unsigned long long)tree_nodes, SUM_ELEMENTS);
    printf("time/marble: the row's seconds / marble's at the same bench and threads "
           "(above 1: marble is faster); idle: cpu%% of one core\n\n");
    printf("%-12s %-11s %7s %11s %10s %12s %7s\n", "bench", "impl", "threads", "seconds", "ns/task",
           "time/marble", "cpu%");
    fflush(stdout);
}

/* ns/task divides by the workload's unit count; for sum the "task" is one summed element. */
static void print_row(const options *o, const row *r)
{
    int idle = !strcmp(r->bench, "idle");
    double ns = r->tasks ? r->seconds * 1e9 / (double)r->tasks : 0.0;
    if (o->json) {
        printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"threads\":%d,\"seconds\":%.9g,", r->bench,
               r->impl, r->threads, r->seconds);
        if (idle)
            printf("\"ns_per_task\":null,\"tasks\":0,\"cpu_pct\":%.3f,", r->cpu_pct);
        else
            printf("\"ns_per_task\":%.6g,\"tasks\":%llu,", ns, (unsigned long long)r->tasks);
        if (r->vs_marble >= 0.0)
            printf("\"time_vs_marble\":%.6g,", r->vs_marble);
        else
            printf("\"time_vs_marble\":null,");
        printf("\"reps\":%d}\n", o->reps);
    } else if (idle) {
        printf("%-12s %-11s %7d %11.6f %10s %12s %7.2f\n", r->bench, r->impl, r->threads,
               r->seconds, "-", "-", r->cpu_pct);
    } else {
        char ratio[32] = "-";
        if (r->vs_marble >= 0.0) snprintf(ratio, sizeof(ratio), "%.2f", r->vs_marble);
        printf("%-12s %-11s %7d %11.6f %10.2f %12s\n", r->bench, r->impl, r->threads, r->seconds,
               ns, ratio);
    }
    fflush(stdout);
}

typedef struct refs {
    uint64_t fib;
    uint64_t fib_calls;
    uint64_t tree_nodes;
    const uint32_t *data;
    uint64_t sum;
} refs;

/* Runs one workload on one impl; returns 0, or 1 after reporting a failure or a wrong result.
 * Returns -1 when the impl has no such workload. */
static int run_one(const options *o, const refs *ref, int b, const impl_entry *e, int threads,
                   double marble_seconds, double *seconds_out)
{
    const bench_sched_impl *im = e->impl;
    bench_result res;
    row r = {bench_names[b], e->name, threads, 0.0, 0, 0.0, -1.0};
    uint64_t expected = 0;
    int rc = 0;
    switch (b) {
    case B_FIB:
        rc = im->fib(threads, o->reps, FIB_N, &res);
        expected = ref->fib;
        r.tasks = ref->fib_calls;
        break;
    case B_SPAWN:
        rc = im->spawn(threads, o->reps, SPAWN_TASKS, &res);
        expected = r.tasks = SPAWN_TASKS;
        break;
    case B_SPAWN_TOKEN:
        if (!im->spawn_token) return -1;
        rc = im->spawn_token(threads, o->reps, SPAWN_TASKS, &res);
        expected = r.tasks = SPAWN_TASKS;
        break;
    case B_TREE:
        rc = im->tree(threads, o->reps, &res);
        expected = r.tasks = ref->tree_nodes;
        break;
    case B_SUM:
        rc = im->sum(threads, o->reps, ref->data, SUM_ELEMENTS, &res);
        expected = ref->sum;
        r.tasks = SUM_ELEMENTS;
        break;
    default:
        if (!im->idle) return -1;
        r.cpu_pct = im->idle(threads, IDLE_SECONDS);
        if (r.cpu_pct < 0.0) {
            fprintf(stderr, "marble-bench: FAILED idle %s threads=%d\n", e->name, threads);
            return 1;
        }
        r.seconds = IDLE_SECONDS;
        print_row(o, &r);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "marble-bench: FAILED %s %s threads=%d: the run failed\n", r.bench, e->name,
                threads);
        return 1;
    }
    if (res.value != expected || !res.consistent) {
        fprintf(stderr, "marble-bench: FAILED %s %s threads=%d: got %llu, expected %llu%s\n",
                r.bench, e->name, threads, (unsigned long long)res.value,
                (unsigned long long)expected, res.consistent ? "" : " (the runs disagreed)");
        return 1;
    }
    r.seconds = res.seconds;
    if (im == impls[0].impl)
        r.vs_marble = 1.0;
    else if (marble_seconds > 0.0)
        r.vs_marble = res.seconds / marble_seconds;
    *seconds_out = res.seconds;
    print_row(o, &r);
    return 0;
}

static int bench_sched(int argc, char **argv)
{
    options o;
    int rc = parse_sched_args(argc, argv, &o);
    if (rc) return rc;

    refs ref = {0};
    ref.fib = fib_seq(FIB_N);
    ref.fib_calls = 2 * fib_seq(FIB_N + 1) - 1;
    ref.tree_nodes = tree_count_seq(BENCH_TREE_ROOT);
    uint32_t *data = NULL;
    if (o.bench_on[B_SUM]) {
        data = sum_data_new(SUM_ELEMENTS, &ref.sum);
        if (!data) {
            fprintf(stderr, "marble-bench: out of memory for %u sum elements\n", SUM_ELEMENTS);
            return 1;
        }
        ref.data = data;
    }
    if (!o.json) print_header(&o, ref.tree_nodes);

    int failed = 0;
    for (int b = 0; b < B_COUNT; b++) {
        if (!o.bench_on[b]) continue;
        for (int t = 0; t < o.nthreads; t++) {
            double marble_seconds = 0.0;
            for (int m = 0; m < IMPL_COUNT; m++) {
                if (!o.impl_on[m]) continue;
                double secs = 0.0;
                int r = run_one(&o, &ref, b, &impls[m], o.threads[t], marble_seconds, &secs);
                if (r > 0) failed = 1;
                if (m == 0 && r == 0) marble_seconds = secs;
            }
        }
    }
    free(data);
    return failed;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "sched")) return bench_sched(argc - 2, argv + 2);
    fprintf(stderr, "marble-bench: unknown area '%s' (known: sched; see marble-bench --help)\n",
            argv[1]);
    return 2;
}
