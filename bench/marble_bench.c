/* marble-bench: Marble's benchmark driver (`sched`: task schedulers; `vfs`: file I/O; `arrow`:
 * Arrow IPC; `db`: the database beside RocksDB and LevelDB; `remote`: the HTTP and S3 backends
 * and the block cache beside local reads; `query`: SQL queries beside DuckDB; `interrupt`:
 * cancellation latency). */
#include "bench_db.h"
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
#define VFS_SEQ_MIB 256
#define VFS_RAND_MIB 64
#define VFS_RAND_OPS 100000u
#define VFS_CODEC_MIB 64

/* bench/query_bench.c, bench/interrupt_bench.c */
int bench_query_area(int argc, char **argv);
int bench_interrupt_area(int argc, char **argv);
/* bench/compact_bench.c */
int bench_compact_area(int argc, char **argv);

/* bench/remote_bench.c */
int bench_remote_run(int json, const char *http_url, const char *s3_endpoint, const char *s3_bucket,
                     uint64_t size_mb, uint64_t reads, int threads, int reps, uint64_t db_rows,
                     const char *tmp_parent);

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
        "  arrow   Arrow IPC write/read (uncompressed, LZ4, ZSTD) and zero-copy mapped reads\n"
        "          (marble-bench arrow --help)\n"
        "  vfs     file I/O through the VFS: sequential raw vs buffered, random 4 KiB reads\n"
        "          (pread, mmap, io_uring, open-read-close, handle pool), codecs, beside\n"
        "          memcpy as the ceiling\n"
        "  db      db_bench-style workloads on Marble, RocksDB and LevelDB with matched settings\n"
        "  remote  reads through the HTTP and S3 backends, without and with the block cache,\n"
        "          beside the same reads of a local file, and a database scan on S3 beside\n"
        "          local disk (bench/remote.sh starts nginx and s3rver on 127.0.0.1 and runs it)\n"
        "  query   four SQL queries over a 10M-row table on Marble beside DuckDB (node peer)\n"
        "          (marble-bench query --help)\n"
        "  interrupt  cancellation latency of long operations (marble-bench interrupt --help)\n"
        "  compact full manual compaction with 1 and 2 threads beside RocksDB's CompactRange\n"
        "          (marble-bench compact --help)\n"
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
        "\n"
        "options of vfs:\n"
        "  --json              one JSON object per line instead of the table\n"
        "  --reps R            timed runs per row after one warm-up run; the best is kept\n"
        "                      (default 3)\n"
        "  --dir DIR           where the data files go (default $TMPDIR, else /tmp); a private\n"
        "                      directory is made there and removed at the end\n"
        "  --only LIST         workloads to run (default all):\n"
        "                        memcpy      memcpy of %d MiB buffers: the ceiling\n"
        "                        seqwrite    a %d MiB file in 4 KiB writes (no fsync)\n"
        "                        seqread     the same file in 4 KiB reads (page cache warm)\n"
        "                        randread    %u random 4 KiB reads of a cached %d MiB file\n"
        "                        compress    %d MiB of text-like data through\n"
        "                                    marble_file_compress_wrap onto mem://\n"
        "                        decompress  the same, back\n"
        "  --impl LIST         implementations (default all):\n"
        "                        seq*:       raw (marble_file_read/write) and buffered\n"
        "                                    (marble_file_buffered_wrap around it)\n"
        "                        randread:   pread (marble_file_read), mmap (marble_file_map\n"
        "                                    once, then memcpy), uring (marble_aio, batches of\n"
        "                                    32), open_read_close (open, read, close per read),\n"
        "                                    pool (marble_handle_pool acquire, read, release)\n"
        "                        codecs:     zstd, lz4, gzip (default levels)\n"
        "\n"
        "MB/s counts 10^6 bytes (uncompressed bytes for the codecs). speedup is the row's MB/s\n"
        "divided by the MB/s of the row named in `vs` (randread: pread, except pool, which is\n"
        "compared with open_read_close; buffered: raw; codecs: memcpy). Targets: randread mmap\n"
        "at least 1.3x pread, pool at least 10x open_read_close.\n"
        "\n"
        "options of db:\n"
        "  --json              one JSON object per line instead of the table, and one per\n"
        "                      engine with its bytes on disk\n"
        "  --num N             keys (default 1000000)\n"
        "  --key-size K        key bytes: the key number in zero-padded decimal (default 16)\n"
        "  --value-size V      value bytes, about half compressible (default 100)\n"
        "  --engine LIST       marble, rocksdb, leveldb or all (default all; an engine that is\n"
        "                      not built in is skipped with a note unless named here)\n"
        "  --workloads LIST    (default all, in this order):\n"
        "                        fillseq      N puts in key order into a new database\n"
        "                        fillrandom   N puts in a random order (each key once) into a\n"
        "                                     new database, kept for the workloads below\n"
        "                        overwrite    N puts of uniformly random keys on it\n"
        "                        readrandom   N gets of random keys (all present), after a\n"
        "                                     flush and a full compaction\n"
        "                        readmissing  N gets of absent keys between present ones\n"
        "                        seekrandom   N/10 seeks to random keys, each reading 100\n"
        "                                     entries\n"
        "                        scan         one full scan in key order\n"
        "                        batchinsert  N rows in random order, 1000 per write batch, into\n"
        "                                     a new database (marble: an Arrow record batch per\n"
        "                                     marble_db_put into a key/value binary table)\n"
        "                        projscan     a table of an int64 key and 19 float64/int64\n"
        "                                     columns, compacted; marble scans one column, the\n"
        "                                     peers (rows stored as one value) whole entries\n"
        "  --dir DIR           where the databases go (default $TMPDIR, else /tmp); a private\n"
        "                      directory is made there and removed at the end\n"
        "  --compression C     none or lz4 for every engine (default none; LevelDB has no lz4\n"
        "                      and is skipped with it)\n"
        "  --sync S            none (WAL written, not synced; default) or every (each write\n"
        "                      synced)\n"
        "  --write-buffer-mb M memtable size (default 64)\n"
        "  --bloom-bits B      bloom filter bits per key, 0 for none (default 10)\n"
        "  --cache-mb M        RocksDB's and LevelDB's block cache (default 64; Marble has no\n"
        "                      block cache yet)\n"
        "\n"
        "options of remote (the servers must be running; bench/remote.sh starts them):\n"
        "  --json              one JSON object per line instead of the table\n"
        "  --http URL          an http:// URL of a file to read (it is downloaded once and\n"
        "                      copied to the local file and the S3 object, so every backend\n"
        "                      reads the same bytes); without it the http rows are skipped\n"
        "  --s3-endpoint URL   an S3 endpoint (e.g. http://127.0.0.1:4568; credentials from\n"
        "                      AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else s3rver's S3RVER)\n"
        "  --s3-bucket NAME    an existing bucket there; the bench uploads its file and\n"
        "                      database under a private prefix and removes them at the end\n"
        "  --size-mb N         the file's size when there is no --http (default 64)\n"
        "  --reads N           random 4 KiB reads per randread row (default 2000)\n"
        "  --threads N         threads of the parallel rows, beside 1 (default 4)\n"
        "  --reps R            runs per read row, the best is kept (default 3; cold rows\n"
        "                      invalidate the cache before each run)\n"
        "  --db-rows N         KV rows of the database scan, 0 to skip it (default 500000)\n"
        "  --dir DIR           where local files go (default $TMPDIR, else /tmp)\n"
        "  workloads (each on local, http and s3; http and s3 also through the block cache,\n"
        "  cold then warm): seqread (the whole file in 1 MiB reads), randread (random 4 KiB\n"
        "  reads), parallel (1 and N threads reading disjoint ranges), dbscan (a KV database\n"
        "  loaded, flushed, compacted and closed, then reopened and scanned in full).\n"
        "  requests_per_op counts the backend's HTTP requests (its stats control op) per read.\n"
        "\n"
        "Every result is checked; a wrong one is reported and the exit status is 1.\n"
        "Bad arguments exit with status 2.\n",
        FIB_N, SPAWN_TASKS, BENCH_TREE_NODES, SUM_ELEMENTS, IDLE_SECONDS, VFS_CODEC_MIB,
        VFS_SEQ_MIB, VFS_RAND_OPS, VFS_RAND_MIB, VFS_CODEC_MIB);
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

/* Reads the option at argv[*i] of an area: -h/--help prints usage and exits, --json sets *json;
 * otherwise the option must be one of `valued`, and its value is what follows '=' or the next
 * argument. Returns 1 with *name and *value set, 0 when the option was fully handled, or 2 (usage
 * error, already reported). */
static int next_option(const char *area, int argc, char **argv, int *i, const char *const *valued,
                       int *json, char **name, char **value)
{
    char *arg = argv[*i];
    if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
        usage(stdout);
        exit(0);
    }
    if (!strcmp(arg, "--json")) {
        *json = 1;
        return 0;
    }
    *value = NULL;
    char *eq = strchr(arg, '=');
    if (eq && !strncmp(arg, "--", 2)) {
        *eq = '\0';
        *value = eq + 1;
    }
    int known = 0;
    for (const char *const *v = valued; *v && !known; v++)
        known = !strcmp(arg, *v);
    if (!known) {
        fprintf(stderr, "marble-bench: %s: unknown option '%s' (see marble-bench --help)\n", area,
                arg);
        return 2;
    }
    if (!*value) {
        if (*i + 1 >= argc) {
            fprintf(stderr,
                    "marble-bench: %s: option '%s' needs a value (see marble-bench --help)\n", area,
                    arg);
            return 2;
        }
        *value = argv[++*i];
    }
    *name = arg;
    return 1;
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

    static const char *const valued[] = {"--threads", "--reps", "--only", "--impl", NULL};
    for (int i = 0; i < argc; i++) {
        char *arg, *value;
        int r = next_option("sched", argc, argv, &i, valued, &o->json, &arg, &value);
        if (r == 2) return 2;
        if (r == 0) continue;
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

/* ---- vfs ------------------------------------------------------------------------------------ */

enum vfs_bench { V_MEMCPY, V_SEQWRITE, V_SEQREAD, V_RANDREAD, V_COMPRESS, V_DECOMPRESS, V_COUNT };

static const char *const vfs_bench_names[V_COUNT] = {"memcpy",   "seqwrite", "seqread",
                                                     "randread", "compress", "decompress"};

/* The rows in the order they run; `vs` names the row of the same bench (or memcpy) that the
 * speedup divides by. */
typedef struct vfs_row_spec {
    int bench;
    const char *impl;
    const char *vs;
} vfs_row_spec;

static const vfs_row_spec vfs_rows[] = {
    {V_MEMCPY, "memcpy", NULL},
    {V_SEQWRITE, "raw", NULL},
    {V_SEQWRITE, "buffered", "raw"},
    {V_SEQREAD, "raw", NULL},
    {V_SEQREAD, "buffered", "raw"},
    {V_RANDREAD, "pread", NULL},
    {V_RANDREAD, "mmap", "pread"},
    {V_RANDREAD, "uring", "pread"},
    {V_RANDREAD, "open_read_close", "pread"},
    {V_RANDREAD, "pool", "open_read_close"},
    {V_COMPRESS, "zstd", "memcpy"},
    {V_COMPRESS, "lz4", "memcpy"},
    {V_COMPRESS, "gzip", "memcpy"},
    {V_DECOMPRESS, "zstd", "memcpy"},
    {V_DECOMPRESS, "lz4", "memcpy"},
    {V_DECOMPRESS, "gzip", "memcpy"},
};
#define VFS_ROW_COUNT ((int)(sizeof(vfs_rows) / sizeof(vfs_rows[0])))

static const char *const vfs_impl_names[] = {
    "raw", "buffered", "pread", "mmap", "uring", "open_read_close", "pool", "zstd", "lz4", "gzip"};
#define VFS_IMPL_COUNT ((int)(sizeof(vfs_impl_names) / sizeof(vfs_impl_names[0])))

typedef struct vfs_options {
    int json;
    int reps;
    const char *dir;
    int bench_on[V_COUNT];
    int impl_on[VFS_IMPL_COUNT];
} vfs_options;

static int vfs_impl_index(const char *name)
{
    for (int m = 0; m < VFS_IMPL_COUNT; m++)
        if (!strcmp(vfs_impl_names[m], name)) return m;
    return -1;
}

static int parse_vfs_args(int argc, char **argv, vfs_options *o)
{
    memset(o, 0, sizeof(*o));
    o->reps = 3;
    const char *tmp = getenv("TMPDIR");
    o->dir = tmp && *tmp ? tmp : "/tmp";
    for (int b = 0; b < V_COUNT; b++)
        o->bench_on[b] = 1;
    for (int m = 0; m < VFS_IMPL_COUNT; m++)
        o->impl_on[m] = 1;

    static const char *const valued[] = {"--reps", "--only", "--impl", "--dir", NULL};
    for (int i = 0; i < argc; i++) {
        char *arg, *value;
        int r = next_option("vfs", argc, argv, &i, valued, &o->json, &arg, &value);
        if (r == 2) return 2;
        if (r == 0) continue;
        if (!strcmp(arg, "--dir")) {
            if (!*value) return bad_args("vfs: --dir wants a directory%s", "");
            o->dir = value;
            continue;
        }
        char copy[1024];
        snprintf(copy, sizeof(copy), "%s", value);
        char *items[64];
        int n = split_list(copy, items, 64);
        if (n < 0) return bad_args("vfs: bad list '%s'", value);
        if (!strcmp(arg, "--reps")) {
            if (n != 1 || parse_int(items[0], 1, 1000, &o->reps))
                return bad_args("vfs: --reps wants a number from 1 to 1000, not '%s'", value);
        } else if (!strcmp(arg, "--only")) {
            memset(o->bench_on, 0, sizeof(o->bench_on));
            for (int k = 0; k < n; k++) {
                int b = 0;
                while (b < V_COUNT && strcmp(items[k], vfs_bench_names[b]))
                    b++;
                if (b == V_COUNT)
                    return bad_args("vfs: unknown workload '%s' (memcpy, seqwrite, seqread, "
                                    "randread, compress, decompress)",
                                    items[k]);
                o->bench_on[b] = 1;
            }
        } else {
            memset(o->impl_on, 0, sizeof(o->impl_on));
            for (int k = 0; k < n; k++) {
                int m = vfs_impl_index(items[k]);
                if (m < 0)
                    return bad_args("vfs: unknown impl '%s' (raw, buffered, pread, mmap, uring, "
                                    "open_read_close, pool, zstd, lz4, gzip)",
                                    items[k]);
                o->impl_on[m] = 1;
            }
        }
    }
    return 0;
}

typedef struct vfs_row {
    const char *bench;
    const char *impl;
    bench_vfs_result res;
    double mb_per_sec;
    double ops_per_sec;
    double speedup; /* < 0: no row to compare with */
    const char *vs;
} vfs_row;

static void print_vfs_header(const vfs_options *o, const bench_vfs *v)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("marble-bench vfs: %ld CPUs, files in %s (%s), best of %d runs after 1 warm-up\n", ncpu,
           bench_vfs_dir(v), bench_vfs_fs_type(v), o->reps);
    printf("seq: a %d MiB file in 4 KiB calls, writes without fsync, reads with the page cache "
           "warm (just written);\n",
           VFS_SEQ_MIB);
    printf("randread: %u random 4 KiB-aligned reads of a cached %d MiB file; codecs: %d MiB of "
           "text-like data on mem://\n",
           VFS_RAND_OPS, VFS_RAND_MIB, VFS_CODEC_MIB);
    printf("MB/s: 10^6 bytes per second; speedup: the row's MB/s / the `vs` row's\n\n");
    printf("%-10s %-15s %10s %10s %12s %8s %-15s %s\n", "bench", "impl", "seconds", "MB/s", "ops/s",
           "speedup", "vs", "note");
    fflush(stdout);
}

static void print_vfs_row(const vfs_options *o, const vfs_row *r)
{
    if (o->json) {
        printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"seconds\":%.9g,\"bytes\":%llu,\"ops\":%llu,"
               "\"mb_per_sec\":%.6g,\"ops_per_sec\":%.6g,",
               r->bench, r->impl, r->res.seconds, (unsigned long long)r->res.bytes,
               (unsigned long long)r->res.ops, r->mb_per_sec, r->ops_per_sec);
        if (r->speedup >= 0.0)
            printf("\"speedup\":%.6g,\"vs\":\"%s\",", r->speedup, r->vs);
        else
            printf("\"speedup\":null,\"vs\":null,");
        printf("\"note\":\"%s\",\"reps\":%d}\n", r->res.note, o->reps);
    } else {
        char ratio[32] = "-";
        if (r->speedup >= 0.0) snprintf(ratio, sizeof(ratio), "%.2f", r->speedup);
        printf("%-10s %-15s %10.6f %10.1f %12.0f %8s %-15s %s\n", r->bench, r->impl, r->res.seconds,
               r->mb_per_sec, r->ops_per_sec, ratio, r->speedup >= 0.0 ? r->vs : "-", r->res.note);
    }
    fflush(stdout);
}

static int run_vfs_row(const vfs_options *o, bench_vfs *v, const vfs_row_spec *spec, vfs_row *r)
{
    memset(r, 0, sizeof(*r));
    r->bench = vfs_bench_names[spec->bench];
    r->impl = spec->impl;
    r->speedup = -1.0;
    int buffered = !strcmp(spec->impl, "buffered");
    switch (spec->bench) {
    case V_MEMCPY:
        return bench_vfs_memcpy(v, o->reps, &r->res);
    case V_SEQWRITE:
        return bench_vfs_seqwrite(v, buffered, o->reps, &r->res);
    case V_SEQREAD:
        return bench_vfs_seqread(v, buffered, o->reps, &r->res);
    case V_RANDREAD:
        return bench_vfs_randread(v, spec->impl, o->reps, &r->res);
    case V_COMPRESS:
        return bench_vfs_codec(v, spec->impl, 0, o->reps, &r->res);
    default:
        return bench_vfs_codec(v, spec->impl, 1, o->reps, &r->res);
    }
}

/* The measured row that `r` compares with, or NULL. */
static const vfs_row *vfs_baseline(const vfs_row *rows, const int *done, const vfs_row_spec *spec)
{
    if (!spec->vs) return NULL;
    int bench = !strcmp(spec->vs, "memcpy") ? V_MEMCPY : spec->bench;
    for (int k = 0; k < VFS_ROW_COUNT; k++)
        if (done[k] && vfs_rows[k].bench == bench && !strcmp(vfs_rows[k].impl, spec->vs))
            return &rows[k];
    return NULL;
}

static void print_vfs_targets(const vfs_row *rows, const int *done)
{
    static const struct {
        const char *impl, *vs;
        double target;
    } targets[] = {{"mmap", "pread", 1.3}, {"pool", "open_read_close", 10.0}};
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k < VFS_ROW_COUNT; k++) {
            if (!done[k] || vfs_rows[k].bench != V_RANDREAD ||
                strcmp(vfs_rows[k].impl, targets[t].impl) || rows[k].speedup < 0.0)
                continue;
            printf("%srandread %s: %.2fx %s (target: at least %.1fx: %s)\n", t ? "" : "\n",
                   targets[t].impl, rows[k].speedup, targets[t].vs, targets[t].target,
                   rows[k].speedup >= targets[t].target ? "met" : "NOT met");
        }
    }
}

static int bench_vfs_area(int argc, char **argv)
{
    vfs_options o;
    int rc = parse_vfs_args(argc, argv, &o);
    if (rc) return rc;
    bench_vfs_config cfg = {o.dir, (size_t)VFS_SEQ_MIB << 20, (size_t)VFS_RAND_MIB << 20,
                            VFS_RAND_OPS, (size_t)VFS_CODEC_MIB << 20};
    bench_vfs *v = NULL;
    if (bench_vfs_create(&cfg, &v)) return 1;
    if (!o.json) print_vfs_header(&o, v);

    vfs_row rows[VFS_ROW_COUNT];
    int done[VFS_ROW_COUNT] = {0};
    int failed = 0;
    for (int k = 0; k < VFS_ROW_COUNT; k++) {
        const vfs_row_spec *spec = &vfs_rows[k];
        if (!o.bench_on[spec->bench]) continue;
        if (spec->bench != V_MEMCPY && !o.impl_on[vfs_impl_index(spec->impl)]) continue;
        if (run_vfs_row(&o, v, spec, &rows[k])) {
            failed = 1;
            continue;
        }
        vfs_row *r = &rows[k];
        if (r->res.seconds > 0.0) {
            r->mb_per_sec = (double)r->res.bytes / r->res.seconds / 1e6;
            r->ops_per_sec = (double)r->res.ops / r->res.seconds;
        }
        const vfs_row *base = vfs_baseline(rows, done, spec);
        if (base && base->mb_per_sec > 0.0) {
            r->speedup = r->mb_per_sec / base->mb_per_sec;
            r->vs = spec->vs;
        }
        done[k] = 1;
        print_vfs_row(&o, r);
    }
    if (!o.json) print_vfs_targets(rows, done);
    bench_vfs_destroy(v);
    return failed;
}

/* ---- db ------------------------------------------------------------------------------------- */

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (*s < '0' || *s > '9') return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_db_args(int argc, char **argv, bench_db_options *o)
{
    bench_db_options_init(o);
    static const char *const valued[] = {
        "--num",         "--key-size", "--value-size",      "--engine",     "--workloads", "--dir",
        "--compression", "--sync",     "--write-buffer-mb", "--bloom-bits", "--cache-mb",  NULL};
    for (int i = 0; i < argc; i++) {
        char *arg, *value;
        int r = next_option("db", argc, argv, &i, valued, &o->json, &arg, &value);
        if (r == 2) return 2;
        if (r == 0) continue;
        uint64_t u;
        if (!strcmp(arg, "--num")) {
            if (parse_u64(value, 1, 1000000000, &o->num))
                return bad_args("db: --num wants a number from 1 to 10^9, not '%s'", value);
        } else if (!strcmp(arg, "--key-size")) {
            if (parse_int(value, 1, 1024, &o->key_size))
                return bad_args("db: --key-size wants 1 to 1024 bytes, not '%s'", value);
        } else if (!strcmp(arg, "--value-size")) {
            if (parse_int(value, 0, 1 << 20, &o->value_size))
                return bad_args("db: --value-size wants 0 to 1048576 bytes, not '%s'", value);
        } else if (!strcmp(arg, "--dir")) {
            if (!*value) return bad_args("db: --dir wants a directory%s", "");
            o->dir = value;
        } else if (!strcmp(arg, "--compression")) {
            if (strcmp(value, "none") && strcmp(value, "lz4"))
                return bad_args("db: --compression wants none or lz4, not '%s'", value);
            o->settings.compression_lz4 = !strcmp(value, "lz4");
        } else if (!strcmp(arg, "--sync")) {
            if (strcmp(value, "none") && strcmp(value, "every"))
                return bad_args("db: --sync wants none or every, not '%s'", value);
            o->settings.sync_every = !strcmp(value, "every");
        } else if (!strcmp(arg, "--write-buffer-mb")) {
            if (parse_u64(value, 1, 65536, &u))
                return bad_args("db: --write-buffer-mb wants 1 to 65536, not '%s'", value);
            o->settings.write_buffer_bytes = (size_t)u << 20;
        } else if (!strcmp(arg, "--bloom-bits")) {
            if (parse_int(value, 0, 64, &o->settings.bloom_bits))
                return bad_args("db: --bloom-bits wants 0 to 64, not '%s'", value);
        } else if (!strcmp(arg, "--cache-mb")) {
            if (parse_u64(value, 1, 1048576, &u))
                return bad_args("db: --cache-mb wants 1 to 1048576, not '%s'", value);
            o->settings.cache_bytes = (size_t)u << 20;
        } else {
            char copy[1024];
            snprintf(copy, sizeof(copy), "%s", value);
            char *items[64];
            int n = split_list(copy, items, 64);
            if (n < 0) return bad_args("db: bad list '%s'", value);
            int engines = !strcmp(arg, "--engine");
            int count = engines ? BDB_ENGINES : BDB_COUNT;
            const char *const *names = engines ? bench_db_engine_names : bench_db_workload_names;
            int *on = engines ? o->engine_on : o->workload_on;
            memset(on, 0, (size_t)count * sizeof(int));
            for (int k = 0; k < n; k++) {
                if (!strcmp(items[k], "all")) {
                    for (int m = 0; m < count; m++)
                        on[m] = 1;
                    continue;
                }
                int m = 0;
                while (m < count && strcmp(items[k], names[m]))
                    m++;
                if (m == count)
                    return bad_args(engines ? "db: unknown engine '%s' (marble, rocksdb, "
                                              "leveldb, all)"
                                            : "db: unknown workload '%s' (fillseq, fillrandom, "
                                              "overwrite, readrandom, readmissing, seekrandom, "
                                              "scan, batchinsert, projscan, all)",
                                    items[k]);
                on[m] = 1;
                if (engines) o->engines_chosen = 1;
            }
        }
    }
    uint64_t digits = 1;
    for (uint64_t x = o->num - 1; x >= 10; x /= 10)
        digits++;
    if ((uint64_t)o->key_size < digits) {
        char msg[64];
        snprintf(msg, sizeof msg, "%d", o->key_size);
        return bad_args("db: --key-size %s is too short for the key numbers of --num", msg);
    }
    return 0;
}

static int bench_remote_area(int argc, char **argv)
{
    int json = 0, threads = 4, reps = 3;
    const char *http = NULL, *endpoint = NULL, *bucket = NULL;
    uint64_t size_mb = 64, reads = 2000, db_rows = 500000;
    const char *tmp = getenv("TMPDIR");
    const char *dir = tmp && *tmp ? tmp : "/tmp";
    static const char *const valued[] = {
        "--http",    "--s3-endpoint", "--s3-bucket", "--size-mb", "--reads",
        "--threads", "--db-rows",     "--dir",       "--reps",    NULL};
    for (int i = 0; i < argc; i++) {
        char *arg, *value;
        int r = next_option("remote", argc, argv, &i, valued, &json, &arg, &value);
        if (r == 2) return 2;
        if (r == 0) continue;
        if (!strcmp(arg, "--http")) {
            if (strncmp(value, "http://", 7))
                return bad_args("remote: --http wants an http:// URL, not '%s'", value);
            http = value;
        } else if (!strcmp(arg, "--s3-endpoint")) {
            if (strncmp(value, "http://", 7) && strncmp(value, "https://", 8))
                return bad_args("remote: --s3-endpoint wants an http(s):// URL, not '%s'", value);
            endpoint = value;
        } else if (!strcmp(arg, "--s3-bucket")) {
            if (!*value || strchr(value, '/'))
                return bad_args("remote: --s3-bucket wants a bucket name, not '%s'", value);
            bucket = value;
        } else if (!strcmp(arg, "--size-mb")) {
            if (parse_u64(value, 1, 65536, &size_mb))
                return bad_args("remote: --size-mb wants 1 to 65536, not '%s'", value);
        } else if (!strcmp(arg, "--reads")) {
            if (parse_u64(value, 1, 100000000, &reads))
                return bad_args("remote: --reads wants 1 to 10^8, not '%s'", value);
        } else if (!strcmp(arg, "--threads")) {
            if (parse_int(value, 1, 256, &threads))
                return bad_args("remote: --threads wants 1 to 256, not '%s'", value);
        } else if (!strcmp(arg, "--reps")) {
            if (parse_int(value, 1, 1000, &reps))
                return bad_args("remote: --reps wants 1 to 1000, not '%s'", value);
        } else if (!strcmp(arg, "--db-rows")) {
            if (parse_u64(value, 0, 1000000000, &db_rows))
                return bad_args("remote: --db-rows wants 0 to 10^9, not '%s'", value);
        } else {
            if (!*value) return bad_args("remote: --dir wants a directory%s", "");
            dir = value;
        }
    }
    if (!endpoint != !bucket)
        return bad_args("remote: --s3-endpoint and --s3-bucket go together%s", "");
    return bench_remote_run(json, http, endpoint, bucket, size_mb, reads, threads, reps, db_rows,
                            dir);
}

static int bench_db_area_args(int argc, char **argv)
{
    bench_db_options o;
    int rc = parse_db_args(argc, argv, &o);
    if (rc) return rc;
    return bench_db_area(&o);
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
    if (!strcmp(argv[1], "vfs")) return bench_vfs_area(argc - 2, argv + 2);
    if (!strcmp(argv[1], "arrow")) return bench_arrow_area(argc - 2, argv + 2);
    if (!strcmp(argv[1], "db")) return bench_db_area_args(argc - 2, argv + 2);
    if (!strcmp(argv[1], "remote")) return bench_remote_area(argc - 2, argv + 2);
    if (!strcmp(argv[1], "query")) return bench_query_area(argc - 2, argv + 2);
    if (!strcmp(argv[1], "interrupt")) return bench_interrupt_area(argc - 2, argv + 2);
    if (!strcmp(argv[1], "compact")) return bench_compact_area(argc - 2, argv + 2);
    fprintf(
        stderr,
        "marble-bench: unknown area '%s' (known: sched, vfs, arrow, db, remote, query, interrupt, compact; "
        "see marble-bench --help)\n",
        argv[1]);
    return 2;
}
