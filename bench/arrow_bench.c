/* marble-bench arrow: Arrow IPC write and read throughput (uncompressed, LZ4, ZSTD), zero-copy
 * reads of a memory-mapped file, beside memcpy as the ceiling. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "marble/marble.h"

/* The table: id int64, value float64, category int32, name utf8 (12-27 bytes). */
#define BATCH_ROWS 65536

typedef struct table {
    struct ArrowSchema schema;
    struct ArrowArray *batches;
    int nbatches;
    uint64_t bytes; /* bytes of column data (what MB/s counts) */
} table;

typedef struct arrow_opts {
    int json;
    int reps;
    uint64_t mb;
    const char *dir;
} arrow_opts;

static double now_s(void)
{
    return (double)marble_now_ns() / 1e9;
}

static int fail(const char *what, const marble_error *err)
{
    fprintf(stderr, "marble-bench arrow: %s: %s\n", what, err ? err->message : "");
    return 1;
}

static uint64_t batch_bytes(const struct ArrowArray *b)
{
    uint64_t n = (uint64_t)b->length;
    const struct ArrowArray *name = b->children[3];
    const int32_t *off = name->buffers[1];
    return n * 8 + n * 8 + n * 4 + (n + 1) * 4 + (uint64_t)(off[n] - off[0]);
}

static int make_table(uint64_t want_bytes, table *t)
{
    marble_error err;
    marble_field_spec fields[] = {
        {"id", "l", 0}, {"value", "g", 0}, {"category", "i", 0}, {"name", "u", 0}};
    memset(t, 0, sizeof *t);
    if (marble_arrow_schema_make(&t->schema, fields, 4, NULL, NULL, 0, &err))
        return fail("schema", &err);
    marble_batch_builder *b;
    if (marble_batch_builder_create(&t->schema, &b, &err)) return fail("builder", &err);
    int cap = 16;
    t->batches = calloc((size_t)cap, sizeof *t->batches);
    int64_t row = 0;
    char name[32];
    while (t->bytes < want_bytes) {
        for (int i = 0; i < BATCH_ROWS; i++, row++) {
            uint64_t h = marble_hash64(&row, sizeof row, 7);
            int len = snprintf(name, sizeof name, "user-%" PRIu64, h % UINT64_C(100000000000000));
            if (marble_builder_append_int(b, 0, row, &err) ||
                marble_builder_append_double(b, 1, (double)(h >> 11) / 9007199254740992.0, &err) ||
                marble_builder_append_int(b, 2, (int64_t)(h % 1000), &err) ||
                marble_builder_append_bytes(b, 3, name, (size_t)len, &err))
                return fail("append", &err);
        }
        if (t->nbatches == cap) {
            cap *= 2;
            t->batches = realloc(t->batches, (size_t)cap * sizeof *t->batches);
        }
        if (marble_batch_builder_finish(b, &t->batches[t->nbatches], &err))
            return fail("finish", &err);
        t->bytes += batch_bytes(&t->batches[t->nbatches]);
        t->nbatches++;
    }
    marble_batch_builder_destroy(b);
    return 0;
}

static void free_table(table *t)
{
    for (int i = 0; i < t->nbatches; i++)
        marble_arrow_array_release(&t->batches[i]);
    free(t->batches);
    marble_arrow_schema_release(&t->schema);
}

/* Reads every byte of a batch's column data (so zero-copy reads pay for touching the data). */
static uint64_t touch(const struct ArrowArray *b)
{
    uint64_t x = 0, n = (uint64_t)b->length;
    const uint64_t *ids = b->children[0]->buffers[1];
    const uint64_t *vals = b->children[1]->buffers[1];
    const uint32_t *cats = b->children[2]->buffers[1];
    const int32_t *off = b->children[3]->buffers[1];
    const unsigned char *data = b->children[3]->buffers[2];
    for (uint64_t i = 0; i < n; i++)
        x += ids[i] ^ vals[i] ^ cats[i] ^ (uint64_t)off[i];
    for (int32_t i = off[0]; i < off[n]; i += 8)
        x += data[i];
    return x;
}

static int write_ipc(const table *t, marble_ipc_format fmt, marble_ipc_compression c,
                     marble_ipc_buffer *buf)
{
    marble_error err;
    marble_ipc_write_options o = {fmt, c, 0, 8};
    marble_ipc_writer *w;
    buf->size = 0;
    if (marble_ipc_writer_create(marble_ipc_buffer_sink(buf), &t->schema, &o, &w, &err))
        return fail("writer", &err);
    for (int i = 0; i < t->nbatches; i++)
        if (marble_ipc_writer_write(w, &t->batches[i], &err)) return fail("write", &err);
    if (marble_ipc_writer_finish(w, &err)) return fail("finish", &err);
    marble_ipc_writer_destroy(w);
    return 0;
}

static int read_ipc(const marble_ipc_source *src, int nbatches, uint64_t *sink)
{
    marble_error err;
    marble_ipc_reader *r;
    if (marble_ipc_reader_open(src, &r, &err)) return fail("reader", &err);
    if (marble_ipc_reader_num_batches(r) != nbatches) {
        fprintf(stderr, "marble-bench arrow: read %" PRId64 " batches, wrote %d\n",
                marble_ipc_reader_num_batches(r), nbatches);
        return 1;
    }
    for (int i = 0; i < nbatches; i++) {
        struct ArrowArray a;
        if (marble_ipc_reader_read(r, i, &a, &err)) return fail("read", &err);
        *sink += touch(&a);
        marble_arrow_array_release(&a);
    }
    marble_ipc_reader_destroy(r);
    return 0;
}

static void row(const arrow_opts *o, const char *bench, const char *impl, double secs,
                uint64_t bytes, const char *note)
{
    double mbs = (double)bytes / 1e6 / secs;
    if (o->json)
        printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"seconds\":%.6f,\"mb_per_sec\":%.1f,"
               "\"bytes\":%" PRIu64 "}\n",
               bench, impl, secs, mbs, bytes);
    else
        printf("%-10s %-13s %10.4f %10.1f   %s\n", bench, impl, secs, mbs, note);
}

static void mapping_retain(void *m)
{
    marble_mapping_retain(m);
}

static void mapping_release(void *m)
{
    marble_mapping_release(m);
}

int bench_arrow_area(int argc, char **argv)
{
    arrow_opts o = {0, 3, 1024, NULL};
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            o.json = 1;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            o.reps = *end || end == argv[i] ? 0 : (int)v;
            if (o.reps < 1 || o.reps > 100) {
                fprintf(stderr, "marble-bench arrow: --reps wants 1 to 100\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--mb") && i + 1 < argc) {
            char *end;
            o.mb = strtoull(argv[++i], &end, 10);
            if (*end || o.mb < 1 || o.mb > 65536) {
                fprintf(stderr, "marble-bench arrow: --mb wants 1 to 65536\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            o.dir = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf(
                "usage: marble-bench arrow [--json] [--reps R] [--mb MiB] [--dir DIR]\n"
                "IPC file write and read of a table of MiB mebibytes (default 1024) of column\n"
                "data (int64, float64, int32, utf8) in 64Ki-row batches: uncompressed, LZ4 and\n"
                "ZSTD, into and out of memory; a zero-copy read of the uncompressed file mapped\n"
                "from DIR (default $TMPDIR or /tmp); memcpy of the same bytes as the ceiling.\n"
                "Reads touch every byte of column data. MB/s counts column-data bytes.\n");
            return 0;
        } else {
            fprintf(stderr, "marble-bench arrow: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!o.dir) o.dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    table t;
    if (make_table(o.mb << 20, &t)) return 1;
    if (!o.json) {
        printf("marble-bench arrow: %d batches of %d rows, %.1f MiB of column data, best of %d\n",
               t.nbatches, BATCH_ROWS, (double)t.bytes / 1048576.0, o.reps);
        printf("%-10s %-13s %10s %10s   %s\n", "bench", "impl", "seconds", "MB/s", "note");
    }
    uint64_t sink = 0;
    int rc = 0;

    /* The ceiling: copying the same bytes once. */
    {
        void *dst = malloc(t.bytes > (256u << 20) ? 256u << 20 : t.bytes);
        double best = 1e30;
        for (int r = 0; r < o.reps; r++) {
            double t0 = now_s();
            uint64_t left = t.bytes;
            int i = 0;
            while (left) {
                const struct ArrowArray *b = &t.batches[i++ % t.nbatches];
                size_t n = (size_t)b->length * 8;
                if (n > left) n = (size_t)left;
                memcpy(dst, b->children[0]->buffers[1], n);
                left -= n;
            }
            double s = now_s() - t0;
            if (s < best) best = s;
        }
        sink += ((unsigned char *)dst)[0];
        free(dst);
        row(&o, "memcpy", "memcpy", best, t.bytes, "the ceiling");
    }

    const char *names[] = {"uncompressed", "lz4", "zstd"};
    marble_ipc_compression codecs[] = {MARBLE_IPC_UNCOMPRESSED, MARBLE_IPC_LZ4_FRAME,
                                       MARBLE_IPC_ZSTD};
    marble_ipc_buffer buf = {NULL, 0, 0};
    for (int c = 0; c < 3 && !rc; c++) {
        double wbest = 1e30, rbest = 1e30;
        for (int r = 0; r < o.reps && !rc; r++) {
            double t0 = now_s();
            rc = write_ipc(&t, MARBLE_IPC_FILE, codecs[c], &buf);
            double s = now_s() - t0;
            if (s < wbest) wbest = s;
        }
        char note[96];
        snprintf(note, sizeof note, "file format in memory, %.2fx smaller",
                 (double)t.bytes / (double)(buf.size ? buf.size : 1));
        if (!rc) row(&o, "ipc_write", names[c], wbest, t.bytes, note);
        marble_ipc_source src = {buf.data, buf.size, NULL, NULL, NULL};
        for (int r = 0; r < o.reps && !rc; r++) {
            double t0 = now_s();
            rc = read_ipc(&src, t.nbatches, &sink);
            double s = now_s() - t0;
            if (s < rbest) rbest = s;
        }
        if (!rc)
            row(&o, "ipc_read", names[c], rbest, t.bytes,
                c == 0 ? "zero copy from memory, every byte touched"
                       : "decompressed, every byte touched");
    }

    /* Zero-copy read of a memory-mapped file. */
    if (!rc) {
        marble_error err;
        marble_fs *fs;
        char path[4096];
        snprintf(path, sizeof path, "%s/marble-bench-arrow-%d.arrow", o.dir, (int)getpid());
        rc = write_ipc(&t, MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, &buf);
        if (!rc && marble_fs_create(&fs, &err) == MARBLE_OK) {
            if (marble_fs_write_all(fs, path, buf.data, buf.size, 0, &err)) rc = fail(path, &err);
            double best = 1e30;
            for (int r = 0; r < o.reps && !rc; r++) {
                double t0 = now_s();
                marble_file *f;
                marble_mapping *m;
                if (marble_fs_open(fs, path, MARBLE_OPEN_READ, &f, &err) ||
                    marble_file_map(f, 0, 0, &m, &err)) {
                    rc = fail(path, &err);
                    break;
                }
                marble_file_close(f, NULL);
                marble_ipc_source src = {marble_mapping_data(m), marble_mapping_size(m), m,
                                         mapping_retain, mapping_release};
                rc = read_ipc(&src, t.nbatches, &sink);
                marble_mapping_release(m);
                double s = now_s() - t0;
                if (s < best) best = s;
            }
            if (!rc)
                row(&o, "mmap_read", "uncompressed", best, t.bytes,
                    "zero copy from a mapped file (page cache warm), every byte touched");
            marble_fs_remove(fs, path, NULL);
            marble_fs_destroy(fs, NULL);
        }
    }
    free(buf.data);
    free_table(&t);
    if (!o.json) printf("(checksum %" PRIu64 ")\n", sink);
    return rc;
}
