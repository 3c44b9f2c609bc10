/* Common interface of marble-bench's workloads: the scheduler impls and the vfs area. */
#ifndef MARBLE_BENCH_SCHED_H
#define MARBLE_BENCH_SCHED_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Outcome of one workload on one implementation. Each implementation sets up its pool outside
 * the timed region, runs the workload once to warm up, then `reps` timed times. */
typedef struct bench_result {
    double seconds; /* best (minimum) of the timed repetitions */
    uint64_t value; /* the workload's check value (fib result, tasks run, nodes, sum) */
    int consistent; /* 1 if every run, the warm-up included, gave the same value */
} bench_result;

/* Workloads return 0 on success, or -1 after printing why to stderr (a pool that could not be
 * created, a spawn that failed). "threads" is the number of threads that run tasks: worker
 * threads for marble and mutex_pool (the calling thread only submits and waits), the team or
 * arena size for openmp and tbb (the calling thread is one of them). */
typedef struct bench_sched_impl {
    const char *name;
    /* fib(n) with a task per call: spawn fib(n-1), compute fib(n-2) inline, join. */
    int (*fib)(int threads, int reps, int n, bench_result *out);
    /* `ntasks` empty tasks from one outside producer; value = tasks run (each counts itself). */
    int (*spawn)(int threads, int reps, uint64_t ntasks, bench_result *out);
    /* As spawn, through the implementation's producer-side submission path; NULL if it has
     * none. */
    int (*spawn_token)(int threads, int reps, uint64_t ntasks, bench_result *out);
    /* Fork-join over the children of every node of the tree in bench_tree.h; value = nodes. */
    int (*tree)(int threads, int reps, bench_result *out);
    /* Parallel sum of data[0..n); value = the sum. */
    int (*sum)(int threads, int reps, const uint32_t *data, size_t n, bench_result *out);
    /* Starts `threads` threads, runs a short burst of tasks, then leaves the pool idle for
     * `seconds`; returns the CPU time the process used meanwhile in percent of one core, or a
     * negative value on failure. NULL if not measured. */
    double (*idle)(int threads, double seconds);
} bench_sched_impl;

/* The implementations. bench_marble_impl is compiled only with MARBLE_BENCH_SCHED_MARBLE. */
extern const bench_sched_impl bench_marble_impl;
extern const bench_sched_impl bench_mutex_pool_impl;
extern const bench_sched_impl bench_openmp_impl;
extern const bench_sched_impl bench_tbb_impl;

/* Monotonic clock in seconds. */
double bench_now(void);
/* Process CPU time (user + system, all threads) in seconds. */
double bench_cpu_seconds(void);
/* Sleeps `seconds` and returns the process CPU time used meanwhile in percent of one core. */
double bench_idle_cpu_pct(double seconds);

/* Starts a result; then call bench_result_add once per run, rep = -1 for the warm-up run. */
void bench_result_init(bench_result *r);
void bench_result_add(bench_result *r, int rep, double seconds, uint64_t value);

/* Per-thread task counters, one cache line each, so that counting costs no shared write. */
typedef struct bench_slot {
    uint64_t n;
    unsigned char pad_[56];
} bench_slot;

/* Returns `n` zeroed slots (64-byte aligned), or NULL. */
bench_slot *bench_slots_new(int n);
void bench_slots_clear(bench_slot *s, int n);
uint64_t bench_slots_sum(const bench_slot *s, int n);
void bench_slots_free(bench_slot *s);

/* ---- the vfs area (bench/vfs_bench.c) -------------------------------------------------------
 * Each workload runs once to warm up, then `reps` timed times, checks what it read or wrote
 * against the data it was given, and returns 0, or -1 after printing why to stderr. */

typedef struct bench_vfs bench_vfs;

typedef struct bench_vfs_config {
    const char *dir;    /* a private directory is made (and removed) under it */
    size_t seq_bytes;   /* the sequential file (a multiple of 4 MiB) */
    size_t rand_bytes;  /* the random-read file (a multiple of 4 MiB) */
    size_t rand_ops;    /* 4 KiB reads per randread run */
    size_t codec_bytes; /* codec input and memcpy size (a multiple of 1 MiB) */
} bench_vfs_config;

typedef struct bench_vfs_result {
    double seconds; /* best of the timed runs */
    uint64_t bytes; /* moved by one run (uncompressed bytes for the codecs) */
    uint64_t ops;   /* I/O calls of one run */
    char note[96];
} bench_vfs_result;

/* Writes the data files through Marble (so the page cache holds them) and builds the buffers. */
int bench_vfs_create(const bench_vfs_config *cfg, bench_vfs **out);
/* Removes the files and the directory and frees everything. Accepts NULL. */
void bench_vfs_destroy(bench_vfs *v);
const char *bench_vfs_dir(const bench_vfs *v);
/* "ext4", "tmpfs", ... for the directory's file system. */
const char *bench_vfs_fs_type(const bench_vfs *v);
/* 4 KiB calls through marble_file_write/read, raw or through marble_file_buffered_wrap. */
int bench_vfs_seqwrite(bench_vfs *v, int buffered, int reps, bench_vfs_result *out);
int bench_vfs_seqread(bench_vfs *v, int buffered, int reps, bench_vfs_result *out);
/* impl: pread, mmap, uring, open_read_close or pool. */
int bench_vfs_randread(bench_vfs *v, const char *impl, int reps, bench_vfs_result *out);
/* codec: zstd, lz4 or gzip, through marble_file_compress_wrap on mem://. */
int bench_vfs_codec(bench_vfs *v, const char *codec, int decompress, int reps,
                    bench_vfs_result *out);
int bench_vfs_memcpy(bench_vfs *v, int reps, bench_vfs_result *out);

#ifdef __cplusplus
}
#endif
/* ---- the arrow area (bench/arrow_bench.c) -----------------------------------------------------
 */
int bench_arrow_area(int argc, char **argv);

#endif
