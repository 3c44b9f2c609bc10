/* marble-bench db: db_bench-style workloads on Marble, RocksDB and LevelDB with matched settings.
 * Each engine is a table of function pointers (bench_db_engine) over an opaque handle; the
 * driver (bench/db_bench.c) times the workloads through it. */
#ifndef MARBLE_BENCH_DB_H
#define MARBLE_BENCH_DB_H

#include <stddef.h>
#include <stdint.h>

/* The settings every engine is opened with (the same for all; see each engine's `note` for what
 * it cannot match). */
typedef struct bench_db_settings {
    size_t write_buffer_bytes;  /* memtable size before it is flushed */
    int bloom_bits;             /* bloom filter bits per key; 0: no filter */
    size_t cache_bytes;         /* block cache (engines that have one) */
    int compression_lz4;        /* 0: no compression; 1: LZ4 for table files */
    int sync_every;             /* 0: WAL written, not synced; 1: every write synced */
    uint64_t target_file_bytes; /* compaction output file size */
} bench_db_settings;

/* Every function returns 0, or -1 with a message in err (errlen bytes). */
typedef struct bench_db_engine {
    const char *name;
    /* What this engine does not match, shown under the table (may be ""). */
    const char *note;
    /* NULL when the engine can run with these settings, else why not. */
    const char *(*unsupported)(const bench_db_settings *s);
    /* Creates a new database in `dir` (an empty directory that exists). */
    int (*open)(const char *dir, const bench_db_settings *s, void **h, char *err, size_t errlen);
    /* Closes; *h becomes invalid. */
    int (*close)(void *h, char *err, size_t errlen);
    int (*put)(void *h, const void *k, size_t klen, const void *v, size_t vlen, char *err,
               size_t errlen);
    /* *found = 1 and *vlen set (the value is read and dropped), or *found = 0. */
    int (*get)(void *h, const void *k, size_t klen, int *found, size_t *vlen, char *err,
               size_t errlen);
    int (*del)(void *h, const void *k, size_t klen, char *err, size_t errlen);

    /* Write batches: created empty, filled, written atomically, cleared for reuse. */
    int (*batch_create)(void *h, void **b, char *err, size_t errlen);
    int (*batch_put)(void *b, const void *k, size_t klen, const void *v, size_t vlen, char *err,
                     size_t errlen);
    int (*batch_write)(void *h, void *b, char *err, size_t errlen);
    void (*batch_clear)(void *b);
    void (*batch_destroy)(void *b);

    /* Iterators over the latest state. */
    int (*iter_create)(void *h, void **it, char *err, size_t errlen);
    void (*iter_seek)(void *it, const void *k, size_t klen);
    void (*iter_seek_first)(void *it);
    int (*iter_valid)(void *it);
    void (*iter_next)(void *it);
    const void *(*iter_key)(void *it, size_t *klen);
    const void *(*iter_value)(void *it, size_t *vlen);
    /* 0, or -1 with the error that ended the iteration. */
    int (*iter_status)(void *it, char *err, size_t errlen);
    void (*iter_destroy)(void *it);

    /* Full scan in key order: *rows entries, *bytes key + value bytes. */
    int (*scan)(void *h, uint64_t *rows, uint64_t *bytes, char *err, size_t errlen);
    /* Flushes the memtable and compacts everything into one sorted level, waiting. */
    int (*compact)(void *h, char *err, size_t errlen);
    /* Bytes of the database's live files, as the engine counts them. */
    uint64_t (*disk_size)(void *h);
} bench_db_engine;

/* The peers: NULL where the library was not found at configure time. */
extern const bench_db_engine *const bench_db_rocksdb;
extern const bench_db_engine *const bench_db_leveldb;

/* The workloads, in the order they run. */
enum {
    BDB_FILLSEQ,
    BDB_FILLRANDOM,
    BDB_OVERWRITE,
    BDB_READRANDOM,
    BDB_READMISSING,
    BDB_SEEKRANDOM,
    BDB_SCAN,
    BDB_BATCHINSERT,
    BDB_PROJSCAN,
    BDB_COUNT
};
extern const char *const bench_db_workload_names[BDB_COUNT];

/* Engines by index: marble, rocksdb, leveldb. */
enum { BDB_MARBLE, BDB_ROCKSDB, BDB_LEVELDB, BDB_ENGINES };
extern const char *const bench_db_engine_names[BDB_ENGINES];

typedef struct bench_db_options {
    int json;
    uint64_t num;
    int key_size;
    int value_size;
    int engine_on[BDB_ENGINES];
    int engines_chosen; /* 1: --engine named them (a missing one is an error, not a note) */
    int workload_on[BDB_COUNT];
    const char *dir; /* NULL: a private directory under $TMPDIR or /tmp, removed afterwards */
    bench_db_settings settings;
} bench_db_options;

/* Fills *o with the defaults. */
void bench_db_options_init(bench_db_options *o);
/* Runs the area; returns 0, or 1 after reporting an engine's error or a wrong result. */
int bench_db_area(const bench_db_options *o);

#endif
