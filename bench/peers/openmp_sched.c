/* Scheduler benchmark peer: the same workloads with gcc's OpenMP tasks (libgomp). */
#include "bench_sched.h"
#include "bench_tree.h"

#include <omp.h>
#include <stdio.h>

/*
 * Each timed run enters a parallel region of `threads` threads (libgomp keeps the team's threads
 * between regions, so after the warm-up no thread is created in the timed region). libgomp runs
 * a new task at once in the creating thread (undeferred) when the team has one thread, and while
 * more than 64 tasks per thread are queued; that is its behaviour and part of what is measured,
 * but it makes the one-thread rows, and much of spawn, plain function calls.
 */

static uint64_t omp_fib_rec(int n)
{
    if (n < 2) return (uint64_t)n;
    uint64_t a = 0;
#pragma omp task shared(a)
    a = omp_fib_rec(n - 1);
    uint64_t b = omp_fib_rec(n - 2);
#pragma omp taskwait
    return a + b;
}

static int omp_bench_fib(int threads, int reps, int n, bench_result *out)
{
    omp_set_dynamic(0);
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        uint64_t v = 0;
        double t0 = bench_now();
#pragma omp parallel num_threads(threads)
#pragma omp single
        v = omp_fib_rec(n);
        bench_result_add(out, r, bench_now() - t0, v);
    }
    return 0;
}

static int omp_bench_spawn(int threads, int reps, uint64_t ntasks, bench_result *out)
{
    bench_slot *slots = bench_slots_new(threads);
    if (!slots) {
        fprintf(stderr, "marble-bench: openmp: out of memory\n");
        return -1;
    }
    omp_set_dynamic(0);
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        bench_slots_clear(slots, threads);
        double t0 = bench_now();
#pragma omp parallel num_threads(threads)
#pragma omp single
        for (uint64_t i = 0; i < ntasks; i++) {
#pragma omp task
            slots[omp_get_thread_num()].n++;
        }
        double dt = bench_now() - t0;
        bench_result_add(out, r, dt, bench_slots_sum(slots, threads));
    }
    bench_slots_free(slots);
    return 0;
}

static void omp_tree_visit(bench_slot *slots, uint64_t id)
{
    for (;;) {
        uint64_t h;
        uint32_t k = bench_tree_expand(id, &h);
        slots[omp_get_thread_num()].n++;
        if (k == 0) return;
        if (k == 1) {
            id = bench_tree_child(h, 0);
            continue;
        }
        for (uint32_t i = 0; i + 1 < k; i++) {
            uint64_t c = bench_tree_child(h, i);
#pragma omp task firstprivate(c)
            omp_tree_visit(slots, c);
        }
        omp_tree_visit(slots, bench_tree_child(h, k - 1));
#pragma omp taskwait
        return;
    }
}

static int omp_bench_tree(int threads, int reps, bench_result *out)
{
    bench_slot *slots = bench_slots_new(threads);
    if (!slots) {
        fprintf(stderr, "marble-bench: openmp: out of memory\n");
        return -1;
    }
    omp_set_dynamic(0);
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        bench_slots_clear(slots, threads);
        double t0 = bench_now();
#pragma omp parallel num_threads(threads)
#pragma omp single
        omp_tree_visit(slots, BENCH_TREE_ROOT);
        double dt = bench_now() - t0;
        bench_result_add(out, r, dt, bench_slots_sum(slots, threads));
    }
    bench_slots_free(slots);
    return 0;
}

static int omp_bench_sum(int threads, int reps, const uint32_t *data, size_t n, bench_result *out)
{
    omp_set_dynamic(0);
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        uint64_t sum = 0;
        double t0 = bench_now();
#pragma omp parallel for num_threads(threads) reduction(+ : sum) schedule(static)
        for (size_t i = 0; i < n; i++)
            sum += data[i];
        bench_result_add(out, r, bench_now() - t0, sum);
    }
    return 0;
}

/* What libgomp's idle threads cost depends on OMP_WAIT_POLICY and GOMP_SPINCOUNT: by default
 * they spin for a while after a region ends, then sleep. */
static double omp_bench_idle(int threads, double seconds)
{
    bench_slot *slots = bench_slots_new(threads);
    if (!slots) return -1.0;
    omp_set_dynamic(0);
#pragma omp parallel num_threads(threads)
#pragma omp single
    for (int i = 0; i < 10000; i++) {
#pragma omp task
        slots[omp_get_thread_num()].n++;
    }
    double pct = bench_idle_cpu_pct(seconds);
    bench_slots_free(slots);
    return pct;
}

/* No spawn_token row: OpenMP has no producer token, and its batch submission, taskloop, is no
 * substitute here: libgomp runs a taskloop undeferred, as a plain loop in the encountering thread,
 * once it would queue more than 64 tasks per thread. */
const bench_sched_impl bench_openmp_impl = {
    .name = "openmp",
    .fib = omp_bench_fib,
    .spawn = omp_bench_spawn,
    .spawn_token = NULL,
    .tree = omp_bench_tree,
    .sum = omp_bench_sum,
    .idle = omp_bench_idle,
};
