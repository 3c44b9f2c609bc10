/* Workloads of `marble-bench vfs`: sequential and random file I/O, codecs and memcpy. */
#include "bench_sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>

#include "marble/vfs.h"

#define PATTERN_BYTES ((size_t)4 << 20)
#define BLOCK 4096
#define URING_BATCH 32
#define CODEC_CHUNK ((size_t)1 << 20)
#define FILL_CHUNK ((size_t)1 << 20)

struct bench_vfs {
    marble_fs *fs;
    char dir[512];
    char seq_uri[600];
    char rand_uri[600];
    bench_vfs_config cfg;
    uint8_t *pattern; /* the files repeat these PATTERN_BYTES */
    uint64_t *offsets;
    uint64_t seq_sum; /* expected checksums */
    uint64_t rand_sum;
    uint8_t *text; /* semi-compressible codec input */
    uint8_t *out;  /* as large: decompressed bytes, memcpy target */
    uint64_t text_sum;
    marble_file *rand_file;
    marble_mapping *map;
    marble_handle_pool *pool;
    marble_aio *aio;
    uint8_t *bufs; /* URING_BATCH blocks */
};

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t word_at(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    return w;
}

static uint64_t block_sum(const uint8_t *p)
{
    return word_at(p) * 3 + word_at(p + BLOCK - 8);
}

static uint64_t buffer_sum(const uint8_t *p, size_t n)
{
    uint64_t s = 0;
    for (size_t off = 0; off + BLOCK <= n; off += BLOCK)
        s += block_sum(p + off);
    return s;
}

static int failed(const char *bench, const char *impl, const char *what, const marble_error *e)
{
    fprintf(stderr, "marble-bench: FAILED vfs %s %s: %s%s%s\n", bench, impl, what, e ? ": " : "",
            e ? e->message : "");
    return -1;
}

static marble_codec codec_of(const char *name)
{
    if (!strcmp(name, "zstd")) return MARBLE_CODEC_ZSTD;
    if (!strcmp(name, "lz4")) return MARBLE_CODEC_LZ4;
    if (!strcmp(name, "gzip")) return MARBLE_CODEC_GZIP;
    return MARBLE_CODEC_NONE;
}

static void codec_uri(char *uri, size_t cap, const char *name)
{
    snprintf(uri, cap, "mem://marble-bench-%s", name);
}

static int write_pattern_file(bench_vfs *v, const char *uri, size_t bytes)
{
    marble_file *f;
    marble_error err;
    if (marble_fs_open(v->fs, uri, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE,
                       &f, &err) != MARBLE_OK)
        return failed("setup", "-", "creating a data file", &err);
    int rc = MARBLE_OK;
    for (size_t off = 0; off < bytes && rc == MARBLE_OK; off += FILL_CHUNK)
        rc = marble_file_write(f, off, v->pattern + off % PATTERN_BYTES, FILL_CHUNK, &err);
    if (rc == MARBLE_OK) rc = marble_file_sync(f, MARBLE_SYNC_DATA, &err);
    if (rc == MARBLE_OK)
        rc = marble_file_close(f, &err);
    else
        marble_file_close(f, NULL);
    return rc == MARBLE_OK ? 0 : failed("setup", "-", "writing a data file", &err);
}

/* Words, numbers and line breaks from a small vocabulary: compresses a few times over. */
static void make_text(uint8_t *p, size_t n)
{
    char vocab[256][12];
    uint64_t s = 0x5DEECE66Dull;
    for (int w = 0; w < 256; w++) {
        int len = 2 + (int)(xorshift(&s) % 9);
        for (int k = 0; k < len; k++)
            vocab[w][k] = (char)('a' + xorshift(&s) % 26);
        vocab[w][len] = '\0';
    }
    size_t i = 0;
    while (i < n) {
        uint64_t r = xorshift(&s);
        char word[24];
        int len;
        if (r % 8 == 0)
            len = snprintf(word, sizeof(word), "%u ", (unsigned)(r >> 20) % 100000u);
        else
            len = snprintf(word, sizeof(word), "%s%c", vocab[(r >> 8) & 255],
                           r % 13 == 0 ? '\n' : ' ');
        for (int k = 0; k < len && i < n; k++)
            p[i++] = (uint8_t)word[k];
    }
}

int bench_vfs_create(const bench_vfs_config *cfg, bench_vfs **out)
{
    *out = NULL;
    if (cfg->seq_bytes % PATTERN_BYTES || cfg->rand_bytes % PATTERN_BYTES ||
        cfg->codec_bytes % CODEC_CHUNK) {
        fprintf(stderr, "marble-bench: vfs sizes must be multiples of 4 MiB\n");
        return -1;
    }
    bench_vfs *v = calloc(1, sizeof(*v));
    if (!v) return failed("setup", "-", "out of memory", NULL);
    v->cfg = *cfg;
    snprintf(v->dir, sizeof(v->dir), "%s/marble-bench-vfs-XXXXXX", cfg->dir);
    v->cfg.dir = v->dir;
    if (!mkdtemp(v->dir)) {
        fprintf(stderr, "marble-bench: cannot create a directory under %s\n", cfg->dir);
        free(v);
        return -1;
    }
    marble_error err;
    if (marble_fs_create(&v->fs, &err) != MARBLE_OK) {
        failed("setup", "-", "marble_fs_create", &err);
        bench_vfs_destroy(v);
        return -1;
    }
    snprintf(v->seq_uri, sizeof(v->seq_uri), "%s/seq", v->dir);
    snprintf(v->rand_uri, sizeof(v->rand_uri), "%s/rand", v->dir);
    v->pattern = malloc(PATTERN_BYTES);
    v->offsets = malloc(cfg->rand_ops * sizeof(uint64_t));
    v->text = malloc(cfg->codec_bytes);
    v->out = malloc(cfg->codec_bytes);
    v->bufs = malloc((size_t)URING_BATCH * BLOCK);
    if (!v->pattern || !v->offsets || !v->text || !v->out || !v->bufs) {
        failed("setup", "-", "out of memory", NULL);
        bench_vfs_destroy(v);
        return -1;
    }
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < PATTERN_BYTES; i += 8) {
        uint64_t w = xorshift(&s);
        memcpy(v->pattern + i, &w, 8);
    }
    for (size_t off = 0; off < cfg->seq_bytes; off += BLOCK)
        v->seq_sum += block_sum(v->pattern + off % PATTERN_BYTES);
    size_t blocks = cfg->rand_bytes / BLOCK;
    for (size_t i = 0; i < cfg->rand_ops; i++) {
        v->offsets[i] = (xorshift(&s) % blocks) * BLOCK;
        v->rand_sum += block_sum(v->pattern + v->offsets[i] % PATTERN_BYTES);
    }
    make_text(v->text, cfg->codec_bytes);
    v->text_sum = buffer_sum(v->text, cfg->codec_bytes);
    memset(v->out, 0, cfg->codec_bytes);
    if (write_pattern_file(v, v->seq_uri, cfg->seq_bytes) ||
        write_pattern_file(v, v->rand_uri, cfg->rand_bytes)) {
        bench_vfs_destroy(v);
        return -1;
    }
    *out = v;
    return 0;
}

void bench_vfs_destroy(bench_vfs *v)
{
    if (!v) return;
    marble_aio_destroy(v->aio);
    marble_handle_pool_destroy(v->pool, NULL);
    marble_mapping_release(v->map);
    marble_file_close(v->rand_file, NULL);
    if (v->fs) {
        marble_fs_remove(v->fs, v->seq_uri, NULL);
        marble_fs_remove(v->fs, v->rand_uri, NULL);
        marble_fs_remove(v->fs, v->dir, NULL);
        static const char *const codecs[] = {"zstd", "lz4", "gzip"};
        for (int i = 0; i < 3; i++) {
            char uri[64];
            codec_uri(uri, sizeof(uri), codecs[i]);
            marble_fs_remove(v->fs, uri, NULL);
        }
        marble_fs_destroy(v->fs, NULL);
    }
    free(v->pattern);
    free(v->offsets);
    free(v->text);
    free(v->out);
    free(v->bufs);
    free(v);
}

const char *bench_vfs_dir(const bench_vfs *v)
{
    return v->dir;
}

const char *bench_vfs_fs_type(const bench_vfs *v)
{
    struct statfs st;
    if (statfs(v->dir, &st) != 0) return "unknown";
    switch ((unsigned long)st.f_type) {
    case 0xEF53UL:
        return "ext4";
    case 0x01021994UL:
        return "tmpfs";
    case 0x58465342UL:
        return "xfs";
    case 0x9123683EUL:
        return "btrfs";
    case 0x794C7630UL:
        return "overlayfs";
    default:
        return "other";
    }
}

/* ---- sequential ------------------------------------------------------------------------------ */

static int open_maybe_buffered(bench_vfs *v, int flags, int buffered, marble_file **out,
                               marble_error *err)
{
    marble_file *f;
    int rc = marble_fs_open(v->fs, v->seq_uri, flags, &f, err);
    if (rc != MARBLE_OK || !buffered) {
        *out = rc == MARBLE_OK ? f : NULL;
        return rc;
    }
    return marble_file_buffered_wrap(f, NULL, out, err);
}

/* Untimed: writes the file back so that later rows do not share the CPUs with writeback. */
static int sync_file(bench_vfs *v, const char *uri, marble_error *err)
{
    marble_file *f;
    MARBLE_RETURN_NOT_OK(marble_fs_open(v->fs, uri, MARBLE_OPEN_READ | MARBLE_OPEN_WRITE, &f, err));
    int rc = marble_file_sync(f, MARBLE_SYNC_DATA, err);
    int crc = marble_file_close(f, rc == MARBLE_OK ? err : NULL);
    return rc == MARBLE_OK ? crc : rc;
}

int bench_vfs_seqwrite(bench_vfs *v, int buffered, int reps, bench_vfs_result *out)
{
    const char *impl = buffered ? "buffered" : "raw";
    bench_result res;
    bench_result_init(&res);
    marble_error err;
    for (int rep = -1; rep < reps; rep++) {
        int rc = marble_fs_remove(v->fs, v->seq_uri, &err);
        if (rc != MARBLE_OK && rc != MARBLE_ERR_NOT_FOUND)
            return failed("seqwrite", impl, "removing the file", &err);
        double t0 = bench_now();
        marble_file *f;
        if (open_maybe_buffered(v, MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE, buffered, &f, &err))
            return failed("seqwrite", impl, "open", &err);
        rc = MARBLE_OK;
        for (size_t off = 0; off < v->cfg.seq_bytes && rc == MARBLE_OK; off += BLOCK)
            rc = marble_file_write(f, off, v->pattern + off % PATTERN_BYTES, BLOCK, &err);
        if (rc != MARBLE_OK) {
            marble_file_close(f, NULL);
            return failed("seqwrite", impl, "write", &err);
        }
        if (marble_file_close(f, &err) != MARBLE_OK) return failed("seqwrite", impl, "close", &err);
        double t = bench_now() - t0;
        marble_stat st;
        if (marble_fs_stat(v->fs, v->seq_uri, &st, &err) != MARBLE_OK)
            return failed("seqwrite", impl, "stat", &err);
        if (st.size != v->cfg.seq_bytes) return failed("seqwrite", impl, "wrong file size", NULL);
        bench_result_add(&res, rep, t, st.size);
    }
    if (sync_file(v, v->seq_uri, &err) != MARBLE_OK)
        return failed("seqwrite", impl, "sync after the runs", &err);
    out->seconds = res.seconds;
    out->bytes = v->cfg.seq_bytes;
    out->ops = v->cfg.seq_bytes / BLOCK;
    snprintf(out->note, sizeof(out->note), "no fsync (synced after the runs)");
    return 0;
}

int bench_vfs_seqread(bench_vfs *v, int buffered, int reps, bench_vfs_result *out)
{
    const char *impl = buffered ? "buffered" : "raw";
    uint8_t *buf = v->bufs;
    bench_result res;
    bench_result_init(&res);
    marble_error err;
    for (int rep = -1; rep < reps; rep++) {
        double t0 = bench_now();
        marble_file *f;
        if (open_maybe_buffered(v, MARBLE_OPEN_READ, buffered, &f, &err))
            return failed("seqread", impl, "open", &err);
        uint64_t sum = 0, off = 0;
        for (;;) {
            size_t got;
            if (marble_file_read(f, off, buf, BLOCK, &got, &err) != MARBLE_OK) {
                marble_file_close(f, NULL);
                return failed("seqread", impl, "read", &err);
            }
            if (got < BLOCK) break;
            sum += block_sum(buf);
            off += got;
        }
        if (marble_file_close(f, &err) != MARBLE_OK) return failed("seqread", impl, "close", &err);
        double t = bench_now() - t0;
        if (off != v->cfg.seq_bytes || sum != v->seq_sum)
            return failed("seqread", impl, "the bytes read differ from those written", NULL);
        bench_result_add(&res, rep, t, sum);
    }
    out->seconds = res.seconds;
    out->bytes = v->cfg.seq_bytes;
    out->ops = v->cfg.seq_bytes / BLOCK;
    snprintf(out->note, sizeof(out->note), "page cache warm");
    return 0;
}

/* ---- random reads ---------------------------------------------------------------------------- */

typedef enum rr_impl { RR_PREAD, RR_MMAP, RR_URING, RR_OPEN_READ_CLOSE, RR_POOL } rr_impl;

static int rr_prepare(bench_vfs *v, rr_impl impl, const char *name, char *note, size_t cap)
{
    marble_error err;
    if (!v->rand_file &&
        marble_fs_open(v->fs, v->rand_uri, MARBLE_OPEN_READ, &v->rand_file, &err) != MARBLE_OK)
        return failed("randread", name, "open", &err);
    if (impl == RR_MMAP && !v->map) {
        if (marble_file_map(v->rand_file, 0, 0, &v->map, &err) != MARBLE_OK)
            return failed("randread", name, "marble_file_map", &err);
    }
    if (impl == RR_MMAP)
        snprintf(note, cap, "%s", marble_mapping_is_mapped(v->map) ? "mapped once" : "a copy");
    if (impl == RR_POOL && !v->pool) {
        if (marble_handle_pool_create(v->fs, NULL, &v->pool, &err) != MARBLE_OK)
            return failed("randread", name, "marble_handle_pool_create", &err);
    }
    if (impl == RR_URING && !v->aio) {
        marble_aio_options o = {MARBLE_AIO_URING, 0, NULL};
        if (marble_aio_create(&o, &v->aio, &err) != MARBLE_OK) {
            o.backend = MARBLE_AIO_AUTO;
            if (marble_aio_create(&o, &v->aio, &err) != MARBLE_OK)
                return failed("randread", name, "marble_aio_create", &err);
        }
    }
    if (impl == RR_URING)
        snprintf(note, cap, "batches of %d, %s", URING_BATCH,
                 marble_aio_get_backend(v->aio) == MARBLE_AIO_URING ? "io_uring"
                                                                    : "threads (no io_uring)");
    return 0;
}

static int rr_read_one(marble_file *f, uint64_t off, uint8_t *buf, const char *name)
{
    marble_error err;
    size_t got;
    if (marble_file_read(f, off, buf, BLOCK, &got, &err) != MARBLE_OK)
        return failed("randread", name, "read", &err);
    if (got != BLOCK) return failed("randread", name, "short read", NULL);
    return 0;
}

/* One pass over the offsets; *sum receives the checksum of what was read. */
static int rr_pass(bench_vfs *v, rr_impl impl, const char *name, uint64_t *sum)
{
    uint8_t *buf = v->bufs;
    uint64_t s = 0;
    marble_error err;
    size_t n = v->cfg.rand_ops;
    switch (impl) {
    case RR_PREAD:
        for (size_t i = 0; i < n; i++) {
            if (rr_read_one(v->rand_file, v->offsets[i], buf, name)) return -1;
            s += block_sum(buf);
        }
        break;
    case RR_MMAP: {
        const uint8_t *base = marble_mapping_data(v->map);
        for (size_t i = 0; i < n; i++) {
            memcpy(buf, base + v->offsets[i], BLOCK);
            s += block_sum(buf);
        }
        break;
    }
    case RR_URING: {
        marble_aio_req reqs[URING_BATCH];
        for (size_t i = 0; i < n; i += URING_BATCH) {
            size_t k = n - i < URING_BATCH ? n - i : URING_BATCH;
            for (size_t j = 0; j < k; j++) {
                marble_aio_req r = {
                    v->rand_file, v->offsets[i + j], v->bufs + j * BLOCK, BLOCK, NULL, 0, 0};
                reqs[j] = r;
            }
            marble_aio_batch *b;
            if (marble_aio_submit(v->aio, reqs, k, NULL, NULL, &b, &err) != MARBLE_OK)
                return failed("randread", name, "marble_aio_submit", &err);
            if (marble_aio_wait(b, &err) != MARBLE_OK)
                return failed("randread", name, "marble_aio_wait", &err);
            for (size_t j = 0; j < k; j++) {
                if (reqs[j].nread != BLOCK) return failed("randread", name, "short read", NULL);
                s += block_sum(v->bufs + j * BLOCK);
            }
        }
        break;
    }
    case RR_OPEN_READ_CLOSE:
        for (size_t i = 0; i < n; i++) {
            marble_file *f;
            if (marble_fs_open(v->fs, v->rand_uri, MARBLE_OPEN_READ, &f, &err) != MARBLE_OK)
                return failed("randread", name, "open", &err);
            int rc = rr_read_one(f, v->offsets[i], buf, name);
            if (marble_file_close(f, &err) != MARBLE_OK && !rc)
                return failed("randread", name, "close", &err);
            if (rc) return -1;
            s += block_sum(buf);
        }
        break;
    case RR_POOL:
        for (size_t i = 0; i < n; i++) {
            marble_file *f;
            if (marble_handle_pool_acquire(v->pool, v->rand_uri, MARBLE_OPEN_READ, &f, &err) !=
                MARBLE_OK)
                return failed("randread", name, "marble_handle_pool_acquire", &err);
            int rc = rr_read_one(f, v->offsets[i], buf, name);
            marble_handle_pool_release(v->pool, f);
            if (rc) return -1;
            s += block_sum(buf);
        }
        break;
    }
    *sum = s;
    return 0;
}

int bench_vfs_randread(bench_vfs *v, const char *impl, int reps, bench_vfs_result *out)
{
    static const char *const names[] = {"pread", "mmap", "uring", "open_read_close", "pool"};
    int which = 0;
    while (which < 5 && strcmp(names[which], impl))
        which++;
    if (which == 5) return failed("randread", impl, "unknown impl", NULL);
    out->note[0] = '\0';
    if (rr_prepare(v, (rr_impl)which, impl, out->note, sizeof(out->note))) return -1;
    bench_result res;
    bench_result_init(&res);
    for (int rep = -1; rep < reps; rep++) {
        uint64_t sum = 0;
        double t0 = bench_now();
        if (rr_pass(v, (rr_impl)which, impl, &sum)) return -1;
        double t = bench_now() - t0;
        if (sum != v->rand_sum)
            return failed("randread", impl, "the bytes read differ from those written", NULL);
        bench_result_add(&res, rep, t, sum);
    }
    out->seconds = res.seconds;
    out->bytes = (uint64_t)v->cfg.rand_ops * BLOCK;
    out->ops = v->cfg.rand_ops;
    return 0;
}

/* ---- codecs and memcpy ----------------------------------------------------------------------- */

/* Compresses the text into `uri`, or decompresses it back into v->out; *csize receives the
 * compressed size. */
static int codec_pass(bench_vfs *v, const char *name, int writing, double *seconds, uint64_t *csize)
{
    const char *bench = writing ? "compress" : "decompress";
    char uri[64];
    codec_uri(uri, sizeof(uri), name);
    size_t n = v->cfg.codec_bytes;
    marble_error err;
    double t0 = bench_now();
    marble_file *inner, *f;
    int flags =
        writing ? MARBLE_OPEN_WRITE | MARBLE_OPEN_CREATE | MARBLE_OPEN_TRUNCATE : MARBLE_OPEN_READ;
    if (marble_fs_open(v->fs, uri, flags, &inner, &err) != MARBLE_OK)
        return failed(bench, name, "open", &err);
    if (marble_file_compress_wrap(inner, codec_of(name), writing, 0, &f, &err) != MARBLE_OK)
        return failed(bench, name, "marble_file_compress_wrap", &err);
    int rc = MARBLE_OK;
    size_t off = 0;
    if (writing) {
        for (; off < n && rc == MARBLE_OK; off += CODEC_CHUNK)
            rc = marble_file_write(f, off, v->text + off, CODEC_CHUNK, &err);
    } else {
        size_t got = 1;
        while (rc == MARBLE_OK && got && off < n) {
            size_t want = n - off < CODEC_CHUNK ? n - off : CODEC_CHUNK;
            rc = marble_file_read(f, off, v->out + off, want, &got, &err);
            off += got;
        }
    }
    if (rc != MARBLE_OK) {
        marble_file_close(f, NULL);
        return failed(bench, name, writing ? "write" : "read", &err);
    }
    if (marble_file_close(f, &err) != MARBLE_OK) return failed(bench, name, "close", &err);
    *seconds = bench_now() - t0;
    if (off != n) return failed(bench, name, "the stream ended early", NULL);
    marble_stat st;
    if (marble_fs_stat(v->fs, uri, &st, &err) != MARBLE_OK)
        return failed(bench, name, "stat", &err);
    *csize = st.size;
    return 0;
}

int bench_vfs_codec(bench_vfs *v, const char *name, int decompress, int reps, bench_vfs_result *out)
{
    const char *bench = decompress ? "decompress" : "compress";
    if (codec_of(name) == MARBLE_CODEC_NONE) return failed(bench, name, "unknown codec", NULL);
    size_t n = v->cfg.codec_bytes;
    double t;
    uint64_t csize = 0;
    if (decompress && codec_pass(v, name, 1, &t, &csize)) return -1;
    bench_result res;
    bench_result_init(&res);
    for (int rep = -1; rep < reps; rep++) {
        if (codec_pass(v, name, !decompress, &t, &csize)) return -1;
        uint64_t value = csize;
        if (decompress) {
            value = buffer_sum(v->out, n);
            if (value != v->text_sum || memcmp(v->out, v->text, n) != 0)
                return failed(bench, name, "the decompressed bytes differ", NULL);
            memset(v->out, 0, n);
        }
        bench_result_add(&res, rep, t, value);
    }
    out->seconds = res.seconds;
    out->bytes = n;
    out->ops = n / CODEC_CHUNK;
    snprintf(out->note, sizeof(out->note), "ratio %.2f, mem://",
             csize ? (double)n / (double)csize : 0.0);
    return 0;
}

int bench_vfs_memcpy(bench_vfs *v, int reps, bench_vfs_result *out)
{
    size_t n = v->cfg.codec_bytes;
    bench_result res;
    bench_result_init(&res);
    for (int rep = -1; rep < reps; rep++) {
        double t0 = bench_now();
        memcpy(v->out, v->text, n);
        double t = bench_now() - t0;
        uint64_t sum = buffer_sum(v->out, n);
        if (sum != v->text_sum) return failed("memcpy", "memcpy", "the copy differs", NULL);
        bench_result_add(&res, rep, t, sum);
    }
    memset(v->out, 0, n);
    out->seconds = res.seconds;
    out->bytes = n;
    out->ops = 1;
    snprintf(out->note, sizeof(out->note), "the ceiling");
    return 0;
}
