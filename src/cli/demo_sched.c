/* `marble demo-sched`: a parallel workload on the work-stealing scheduler, with a short report.
 * Until the store exists this is the main job of `make demo`. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "marble/marble.h"

/* The workload: a histogram of 64 buckets over `n` pseudo-random events (key = splitmix64 of the
 * event number), computed by recursive fork-join splitting into ranges of GRAIN events, with
 * per-range partial histograms merged on the way back up. */
#define BUCKETS 64
#define GRAIN 16384

typedef struct range {
    uint64_t from, to;
    uint64_t hist[BUCKETS];
} range;

static inline uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static marble_task_status histogram_task(marble_task_ctx *ctx, void *p)
{
    range *r = p;
    memset(r->hist, 0, sizeof r->hist);
    if (marble_task_cancelled(ctx)) return MARBLE_TASK_DONE;
    if (r->to - r->from <= GRAIN) {
        for (uint64_t i = r->from; i < r->to; i++)
            r->hist[splitmix64(i) % BUCKETS]++;
        return MARBLE_TASK_DONE;
    }
    uint64_t mid = r->from + (r->to - r->from) / 2;
    range left = {.from = r->from, .to = mid}, right = {.from = mid, .to = r->to};
    marble_group g;
    marble_group_init(&g, marble_task_sched(ctx), marble_group_token(marble_task_group(ctx)));
    int rc = marble_group_spawn(&g, histogram_task, &left);
    if (rc != MARBLE_OK) return marble_task_fail(ctx, rc, "spawning a histogram range");
    histogram_task(ctx, &right);
    marble_error err;
    rc = marble_group_wait(&g, &err);
    if (rc != MARBLE_OK) return marble_task_fail(ctx, rc, "%s", err.message);
    for (int b = 0; b < BUCKETS; b++)
        r->hist[b] = left.hist[b] + right.hist[b];
    return MARBLE_TASK_DONE;
}

typedef struct run_result {
    double seconds;
    uint64_t hist[BUCKETS];
    marble_sched_stats stats;
} run_result;

static int run(int threads, uint64_t n, run_result *out)
{
    marble_sched_options o;
    marble_sched_options_init(&o);
    o.threads = threads;
    marble_sched *s = NULL;
    marble_error err;
    if (marble_sched_create(&o, &s, &err) != MARBLE_OK) {
        fprintf(stderr, "marble demo-sched: %s\n", err.message);
        return 1;
    }
    range root = {.from = 0, .to = n};
    marble_group g;
    marble_group_init(&g, s, NULL);
    uint64_t t0 = marble_now_ns();
    int rc = marble_group_spawn(&g, histogram_task, &root);
    if (rc == MARBLE_OK) rc = marble_group_wait(&g, &err);
    out->seconds = (double)(marble_now_ns() - t0) / 1e9;
    marble_sched_get_stats(s, &out->stats);
    marble_sched_destroy(s);
    if (rc != MARBLE_OK) {
        fprintf(stderr, "marble demo-sched: %s\n", err.message);
        return 1;
    }
    memcpy(out->hist, root.hist, sizeof out->hist);
    return 0;
}

static int parse_u64(const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = text ? strtoull(text, &end, 10) : 0;
    if (!text || errno || *end || end == text || v < min || v > max || text[0] == '-') {
        fprintf(stderr,
                "marble demo-sched: %s needs a whole number in [%" PRIu64 ", %" PRIu64
                "], got '%s'\n",
                flag, min, max, text ? text : "(nothing)");
        return 2;
    }
    *out = v;
    return 0;
}

int marble_cli_demo_sched(int argc, char **argv)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t threads = cpus > 0 ? (uint64_t)cpus : 1, n = 1000000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads")) {
            if (parse_u64("--threads", i + 1 < argc ? argv[++i] : NULL, 1, 1024, &threads))
                return 2;
        } else if (!strcmp(argv[i], "--size")) {
            if (parse_u64("--size", i + 1 < argc ? argv[++i] : NULL, 1, UINT64_C(1) << 40, &n))
                return 2;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf(
                "usage: marble demo-sched [--threads N] [--size EVENTS]\n"
                "Counts %d-bucket histograms of EVENTS pseudo-random events (default 1000000000)\n"
                "with fork-join tasks on 1 worker and on N workers (default: one per CPU),\n"
                "checks that both agree and prints the speed-up and the scheduler's counters.\n"
                "example: marble demo-sched --threads 2 --size 50000000\n",
                BUCKETS);
            return 0;
        } else {
            fprintf(stderr,
                    "marble demo-sched: unknown option '%s' (try 'marble demo-sched --help')\n",
                    argv[i]);
            return 2;
        }
    }
    printf("marble %s scheduler demo: histogram of %" PRIu64
           " events, fork-join down to ranges of %d events\n",
           marble_version(), n, GRAIN);
    run_result one, many;
    if (run(1, n, &one)) return 1;
    if (run((int)threads, n, &many)) return 1;
    if (memcmp(one.hist, many.hist, sizeof one.hist) != 0) {
        fprintf(stderr,
                "marble demo-sched: the parallel histogram differs from the sequential one\n");
        return 1;
    }
    uint64_t total = 0;
    for (int b = 0; b < BUCKETS; b++)
        total += many.hist[b];
    if (total != n) {
        fprintf(stderr,
                "marble demo-sched: histogram counts %" PRIu64 " events, expected %" PRIu64 "\n",
                total, n);
        return 1;
    }
    printf("\n  %-8s %10s %12s %10s %10s %8s %8s\n", "workers", "seconds", "events/s", "tasks",
           "stolen", "parks", "wakeups");
    const run_result *rs[2] = {&one, &many};
    uint64_t ws[2] = {1, threads};
    for (int i = 0; i < 2; i++)
        printf("  %-8" PRIu64 " %10.3f %12.3g %10" PRIu64 " %10" PRIu64 " %8" PRIu64 " %8" PRIu64
               "\n",
               ws[i], rs[i]->seconds, (double)n / rs[i]->seconds, rs[i]->stats.executed,
               rs[i]->stats.stolen, rs[i]->stats.parks, rs[i]->stats.wakeups);
    printf("\n  speed-up on %" PRIu64 " workers: %.2fx; both runs agree (bucket 0 holds %" PRIu64
           " events).\n",
           threads, one.seconds / many.seconds, many.hist[0]);
    return 0;
}
