/* Writes the seed corpus for fuzz_ipc (small IPC streams and files covering every type, codec and
 * alignment) into the directory given as the only argument. */
#include "marble/arrow.h"

#include "arrow/arrow_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const formats[] = {
    "n",       "b",   "c", "s", "i", "l", "C",   "S",   "I",    "L",
    "f",       "g",   "u", "U", "z", "Z", "w:3", "tdD", "tss:", "tsm:Europe/Paris",
    "tsu:UTC", "tsn:"};
#define N_FORMATS ((int)(sizeof formats / sizeof formats[0]))

static void die(const char *what, const marble_error *e)
{
    fprintf(stderr, "gen_ipc_corpus: %s: %s\n", what, e ? e->message : "");
    exit(1);
}

static void append_row(marble_batch_builder *b, const struct ArrowSchema *s, int r)
{
    marble_error e;
    for (int c = 0; c < (int)s->n_children; c++) {
        marble_arrow_type t;
        int rc;
        char buf[16];
        marble_arrow_type_parse(s->children[c]->format, &t, NULL);
        if (t.id == MARBLE_ARROW_NA || (r + c) % 3 == 0) {
            rc = marble_builder_append_null(b, c, &e);
        } else if (t.id == MARBLE_ARROW_FLOAT32 || t.id == MARBLE_ARROW_FLOAT64) {
            rc = marble_builder_append_double(b, c, r * 0.5, &e);
        } else if (t.id == MARBLE_ARROW_FIXED_SIZE_BINARY) {
            rc = marble_builder_append_bytes(b, c, "abc", 3, &e);
        } else if (t.id >= MARBLE_ARROW_UTF8 && t.id <= MARBLE_ARROW_LARGE_BINARY) {
            int n = snprintf(buf, sizeof buf, "v%d", r * 7);
            rc = marble_builder_append_bytes(b, c, buf, (size_t)n, &e);
        } else if (t.id >= MARBLE_ARROW_UINT8 && t.id <= MARBLE_ARROW_UINT64) {
            rc = marble_builder_append_uint(b, c, (uint64_t)r, &e);
        } else {
            rc = marble_builder_append_int(b, c, t.id == MARBLE_ARROW_BOOL ? r & 1 : r - 2, &e);
        }
        if (rc != MARBLE_OK) die("append", &e);
    }
}

static void batch(const struct ArrowSchema *s, int rows, struct ArrowArray *out)
{
    marble_batch_builder *b;
    marble_error e;
    if (marble_batch_builder_create(s, &b, &e) != MARBLE_OK) die("builder", &e);
    for (int r = 0; r < rows; r++)
        append_row(b, s, r);
    if (marble_batch_builder_finish(b, out, &e) != MARBLE_OK) die("finish", &e);
    marble_batch_builder_destroy(b);
}

static void emit(const char *dir, const char *name, const struct ArrowSchema *s,
                 const struct ArrowArray *batches, int n, marble_ipc_format f,
                 marble_ipc_compression c, int align)
{
    marble_ipc_buffer buf = {0};
    marble_ipc_writer *w;
    marble_error e;
    marble_ipc_write_options o = {f, c, 0, align};
    if (marble_ipc_writer_create(marble_ipc_buffer_sink(&buf), s, &o, &w, &e)) die(name, &e);
    for (int i = 0; i < n; i++)
        if (marble_ipc_writer_write(w, &batches[i], &e)) die(name, &e);
    if (marble_ipc_writer_finish(w, &e)) die(name, &e);
    marble_ipc_writer_destroy(w);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(buf.data, 1, buf.size, fp) != buf.size || fclose(fp) != 0) die(path, NULL);
    if (buf.size > 4096)
        fprintf(stderr, "gen_ipc_corpus: warning: %s is %zu bytes\n", name, buf.size);
    free(buf.data);
}

static void nested(struct ArrowSchema *s, struct ArrowArray *a)
{
    marble_error e;
    static const marble__arrow_kv kv[] = {{"k", 1, "v", 1}};
    char *meta;
    if (marble__arrow_metadata_encode(kv, 1, &meta, NULL, &e)) die("metadata", &e);
    if (marble__arrow_schema_init(s, "+s", "", meta, 0, 1, &e) ||
        marble__arrow_schema_init(s->children[0], "+s", "st", meta, ARROW_FLAG_NULLABLE, 2, &e) ||
        marble__arrow_schema_init(s->children[0]->children[0], "s", "a", NULL, ARROW_FLAG_NULLABLE,
                                  0, &e) ||
        marble__arrow_schema_init(s->children[0]->children[1], "Z", "b", NULL, 0, 0, &e))
        die("nested schema", &e);
    free(meta);
    if (marble__arrow_array_init(a, 1, 1, NULL, &e)) die("nested", &e);
    a->length = 4;
    struct ArrowArray *st = a->children[0];
    if (marble__arrow_array_init(st, 1, 2, NULL, &e)) die("nested", &e);
    st->length = 4;
    st->null_count = 1;
    uint8_t *v = marble__arrow_array_alloc_buffer(st, 0, 1);
    v[0] = 0x0B;
    struct ArrowArray *x = st->children[0], *y = st->children[1];
    if (marble__arrow_array_init(x, 2, 0, NULL, &e) || marble__arrow_array_init(y, 3, 0, NULL, &e))
        die("nested", &e);
    x->length = y->length = 4;
    int16_t *xs = marble__arrow_array_alloc_buffer(x, 1, 8);
    int64_t *yo = marble__arrow_array_alloc_buffer(y, 1, 40);
    char *yd = marble__arrow_array_alloc_buffer(y, 2, 8);
    for (int i = 0; i < 4; i++) {
        xs[i] = (int16_t)(i * 100);
        yo[i + 1] = yo[i] + i;
    }
    memcpy(yd, "xyzxyz", 6);
}

int main(int argc, char **argv)
{
    struct ArrowSchema all, small, ns, rs;
    struct ArrowArray b[3], nb;
    marble_error e;
    if (argc != 2) {
        fprintf(stderr, "usage: gen_ipc_corpus DIR\n");
        return 2;
    }
    marble_field_spec f[N_FORMATS];
    char names[N_FORMATS][8];
    for (int i = 0; i < N_FORMATS; i++) {
        snprintf(names[i], sizeof names[i], "c%d", i);
        f[i] = (marble_field_spec){names[i], formats[i], i != 3};
    }
    static const char *const keys[] = {"origin"}, *const vals[] = {"seed"};
    int half = N_FORMATS / 2;
    for (int h = 0; h < 2; h++) {
        char sname[64], fname[64];
        int first = h ? half : 0, n = h ? N_FORMATS - half : half;
        if (marble_arrow_schema_make(&all, f + first, (size_t)n, keys, vals, 1, &e))
            die("schema", &e);
        batch(&all, 3, &b[0]);
        batch(&all, 0, &b[1]);
        snprintf(sname, sizeof sname, "stream_types_%d.arrow", h);
        snprintf(fname, sizeof fname, "file_types_%d.arrow", h);
        emit(argv[1], sname, &all, b, 2, MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED, 8);
        emit(argv[1], fname, &all, b, 1, MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 8);
        b[0].release(&b[0]);
        b[1].release(&b[1]);
        all.release(&all);
    }
    marble_field_spec sf[] = {{"id", "l", 0}, {"name", "u", 1}, {"flag", "b", 1}, {"d", "tdD", 1}};
    if (marble_arrow_schema_make(&small, sf, 4, NULL, NULL, 0, &e)) die("schema", &e);
    batch(&small, 6, &b[0]);
    batch(&small, 1, &b[1]);
    struct ArrowArray sliced = b[0];
    sliced.offset = 3;
    sliced.length = 3;
    b[2] = sliced;
    emit(argv[1], "stream_lz4.arrow", &small, b, 3, MARBLE_IPC_STREAM, MARBLE_IPC_LZ4_FRAME, 8);
    emit(argv[1], "file_lz4.arrow", &small, b, 2, MARBLE_IPC_FILE, MARBLE_IPC_LZ4_FRAME, 8);
    emit(argv[1], "stream_zstd.arrow", &small, b, 2, MARBLE_IPC_STREAM, MARBLE_IPC_ZSTD, 8);
    emit(argv[1], "file_zstd_align64.arrow", &small, b, 3, MARBLE_IPC_FILE, MARBLE_IPC_ZSTD, 64);
    emit(argv[1], "file_align64.arrow", &small, b, 3, MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 64);
    emit(argv[1], "file_empty.arrow", &small, NULL, 0, MARBLE_IPC_FILE, MARBLE_IPC_UNCOMPRESSED, 8);
    emit(argv[1], "stream_empty.arrow", &small, NULL, 0, MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED,
         8);
    b[0].release(&b[0]);
    b[1].release(&b[1]);
    marble_field_spec rf[] = {{"zeros", "l", 1}, {"text", "U", 1}};
    if (marble_arrow_schema_make(&rs, rf, 2, NULL, NULL, 0, &e)) die("schema", &e);
    marble_batch_builder *rb;
    if (marble_batch_builder_create(&rs, &rb, &e)) die("builder", &e);
    for (int r = 0; r < 200; r++) {
        int rc = r % 50 == 7 ? marble_builder_append_null(rb, 0, &e)
                             : marble_builder_append_int(rb, 0, r / 100, &e);
        if (rc == MARBLE_OK)
            rc = marble_builder_append_bytes(rb, 1, "abcabcab", (size_t)(r % 8), &e);
        if (rc) die("append", &e);
    }
    if (marble_batch_builder_finish(rb, &b[0], &e)) die("finish", &e);
    marble_batch_builder_destroy(rb);
    emit(argv[1], "stream_lz4_compressible.arrow", &rs, b, 1, MARBLE_IPC_STREAM,
         MARBLE_IPC_LZ4_FRAME, 8);
    emit(argv[1], "file_zstd_compressible.arrow", &rs, b, 1, MARBLE_IPC_FILE, MARBLE_IPC_ZSTD, 64);
    b[0].release(&b[0]);
    rs.release(&rs);
    nested(&ns, &nb);
    emit(argv[1], "stream_nested.arrow", &ns, &nb, 1, MARBLE_IPC_STREAM, MARBLE_IPC_UNCOMPRESSED,
         8);
    emit(argv[1], "file_nested_zstd.arrow", &ns, &nb, 1, MARBLE_IPC_FILE, MARBLE_IPC_ZSTD, 8);
    nb.release(&nb);
    ns.release(&ns);
    small.release(&small);
    return 0;
}
