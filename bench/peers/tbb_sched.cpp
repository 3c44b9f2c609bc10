// Scheduler benchmark peer: the same workloads with oneTBB's task_group in a task_arena.
#include "bench_sched.h"
#include "bench_tree.h"

#include <cstdio>
#include <functional>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_reduce.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

// Each workload runs inside arena.execute(): the arena has `threads` slots, one of them taken by
// the calling thread, which spawns and then helps while it waits. A global_control lets the
// arena have more threads than CPUs when asked. TBB has no producer token or batch spawn from
// one thread, so spawn_token has no tbb row.

namespace
{

constexpr int kIdleBurst = 10000;

struct Env {
    explicit Env(int threads)
        : control(tbb::global_control::max_allowed_parallelism, static_cast<size_t>(threads)),
          arena(threads)
    {
        arena.initialize();
    }
    tbb::global_control control;
    tbb::task_arena arena;
};

inline void count(bench_slot *slots)
{
    slots[tbb::this_task_arena::current_thread_index()].n++;
}

uint64_t fib_rec(int n)
{
    if (n < 2) return static_cast<uint64_t>(n);
    uint64_t a = 0;
    tbb::task_group g;
    g.run([&a, n] { a = fib_rec(n - 1); });
    uint64_t b = fib_rec(n - 2);
    g.wait();
    return a + b;
}

void tree_visit(bench_slot *slots, uint64_t id)
{
    for (;;) {
        uint64_t h;
        uint32_t k = bench_tree_expand(id, &h);
        count(slots);
        if (k == 0) return;
        if (k == 1) {
            id = bench_tree_child(h, 0);
            continue;
        }
        tbb::task_group g;
        for (uint32_t i = 0; i + 1 < k; i++) {
            uint64_t c = bench_tree_child(h, i);
            g.run([slots, c] { tree_visit(slots, c); });
        }
        tree_visit(slots, bench_tree_child(h, k - 1));
        g.wait();
        return;
    }
}

template <typename Body> void timed(Env &env, int reps, bench_result *out, Body body)
{
    bench_result_init(out);
    for (int r = -1; r < reps; r++) {
        uint64_t v = 0;
        double t0 = bench_now();
        env.arena.execute([&] { v = body(); });
        bench_result_add(out, r, bench_now() - t0, v);
    }
}

bench_slot *new_slots(int threads)
{
    bench_slot *slots = bench_slots_new(threads);
    if (!slots) std::fprintf(stderr, "marble-bench: tbb: out of memory\n");
    return slots;
}

} // namespace

extern "C" {

static int tbb_bench_fib(int threads, int reps, int n, bench_result *out)
{
    Env env(threads);
    timed(env, reps, out, [n] { return fib_rec(n); });
    return 0;
}

static int tbb_bench_spawn(int threads, int reps, uint64_t ntasks, bench_result *out)
{
    bench_slot *slots = new_slots(threads);
    if (!slots) return -1;
    {
        Env env(threads);
        timed(env, reps, out, [&] {
            bench_slots_clear(slots, threads);
            tbb::task_group g;
            for (uint64_t i = 0; i < ntasks; i++)
                g.run([slots] { count(slots); });
            g.wait();
            return bench_slots_sum(slots, threads);
        });
    }
    bench_slots_free(slots);
    return 0;
}

static int tbb_bench_tree(int threads, int reps, bench_result *out)
{
    bench_slot *slots = new_slots(threads);
    if (!slots) return -1;
    {
        Env env(threads);
        timed(env, reps, out, [&] {
            bench_slots_clear(slots, threads);
            tree_visit(slots, BENCH_TREE_ROOT);
            return bench_slots_sum(slots, threads);
        });
    }
    bench_slots_free(slots);
    return 0;
}

static int tbb_bench_sum(int threads, int reps, const uint32_t *data, size_t n, bench_result *out)
{
    Env env(threads);
    timed(env, reps, out, [data, n] {
        return tbb::parallel_reduce(
            tbb::blocked_range<size_t>(0, n), uint64_t{0},
            [data](const tbb::blocked_range<size_t> &r, uint64_t acc) {
                for (size_t i = r.begin(); i != r.end(); ++i)
                    acc += data[i];
                return acc;
            },
            std::plus<uint64_t>());
    });
    return 0;
}

static double tbb_bench_idle(int threads, double seconds)
{
    bench_slot *slots = new_slots(threads);
    if (!slots) return -1.0;
    double pct;
    {
        Env env(threads);
        env.arena.execute([&] {
            tbb::task_group g;
            for (int i = 0; i < kIdleBurst; i++)
                g.run([slots] { count(slots); });
            g.wait();
        });
        pct = bench_idle_cpu_pct(seconds);
    }
    bench_slots_free(slots);
    return pct;
}

extern const bench_sched_impl bench_tbb_impl;
const bench_sched_impl bench_tbb_impl = {
    "tbb", tbb_bench_fib, tbb_bench_spawn, nullptr, tbb_bench_tree, tbb_bench_sum, tbb_bench_idle,
};

} // extern "C"
