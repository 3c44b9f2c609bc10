/* Timing, CPU accounting and per-thread counters shared by the scheduler benchmark's impls. */
#include "bench_sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bench_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

double bench_idle_cpu_pct(double seconds)
{
    double wall0 = bench_now();
    double cpu0 = bench_cpu_seconds();
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    double cpu1 = bench_cpu_seconds();
    double wall1 = bench_now();
    return 100.0 * (cpu1 - cpu0) / (wall1 - wall0);
}

void bench_result_init(bench_result *r)
{
    r->seconds = -1.0;
    r->value = 0;
    r->consistent = 1;
}

void bench_result_add(bench_result *r, int rep, double seconds, uint64_t value)
{
    if (rep < 0) {
        r->value = value;
        return;
    }
    if (value != r->value) r->consistent = 0;
    if (r->seconds < 0.0 || seconds < r->seconds) r->seconds = seconds;
}

bench_slot *bench_slots_new(int n)
{
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(bench_slot);
    bench_slot *s = aligned_alloc(64, bytes);
    if (s) memset(s, 0, bytes);
    return s;
}

void bench_slots_clear(bench_slot *s, int n)
{
    for (int i = 0; i < n; i++)
        s[i].n = 0;
}

uint64_t bench_slots_sum(const bench_slot *s, int n)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++)
        total += s[i].n;
    return total;
}

void bench_slots_free(bench_slot *s)
{
    free(s);
}
