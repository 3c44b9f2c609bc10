/* Buffered reader and writer: gathers small writes and reads ahead of sequential readers. */
#include <stdlib.h>
#include <string.h>

#include "vfs/vfs_internal.h"

#define DEFAULT_BUFFER ((size_t)1 << 20)
#define DEFAULT_READAHEAD ((size_t)4 << 20)

/* Thread safety: one thread at a time (vfs.h).
 * Invariants: wbuf[0, wlen) are bytes written through the wrapper and not yet to inner; with
 * wappend they go to the end of the file, else to [woff, woff + wlen). rbuf[0, rlen) equals the
 * file's bytes [roff, roff + rlen): writes that overlap it drop it, and it is only filled after
 * dirty bytes the fill could see were written back. next_seq is where the last read ended and
 * seq_run how many reads in a row started there. failed is a sticky write-back error (message in
 * last): the buffered bytes were lost, so every later call reports it.
 * Mapping: the wrapper has no MARBLE_CAP_MAP and map() is unsupported, so marble_file_map reads
 * through the buffer (which writes back dirty bytes first) into a copy. */
typedef struct bfile {
    marble_file base;
    marble_file *inner;
    size_t bufsize, readahead;
    int failed;
    marble_error last;

    uint8_t *wbuf;
    size_t wlen;
    uint64_t woff;
    int wappend;

    uint8_t *rbuf;
    size_t rlen;
    uint64_t roff;
    uint64_t next_seq;
    unsigned seq_run;
} bfile;

static int sticky(bfile *b, marble_error *err)
{
    if (err) *err = b->last;
    return b->failed;
}

static int flush(bfile *b, marble_error *err)
{
    if (b->wlen == 0) return MARBLE_OK;
    int rc = b->wappend ? marble_file_append(b->inner, b->wbuf, b->wlen, &b->last)
                        : marble_file_write(b->inner, b->woff, b->wbuf, b->wlen, &b->last);
    if (!b->wappend) b->woff += b->wlen;
    b->wlen = 0;
    if (rc != MARBLE_OK) {
        b->failed = rc;
        if (err) *err = b->last;
    }
    return rc;
}

static void drop_window_if_overlaps(bfile *b, uint64_t off, size_t n)
{
    if (b->rlen && off < b->roff + b->rlen && off + n > b->roff) b->rlen = 0;
}

/* Reads [off, off + n) from inner as the file would read after a write-back of the dirty bytes. */
static int inner_read(bfile *b, uint64_t off, uint8_t *buf, size_t n, size_t *got,
                      marble_error *err)
{
    *got = 0;
    if (b->wlen && (b->wappend || off + n > b->woff)) MARBLE_RETURN_NOT_OK(flush(b, err));
    int rc = marble_file_read(b->inner, off, buf, n, got, err);
    if (rc == MARBLE_OK && *got < n && b->wlen) {
        size_t more = 0;
        MARBLE_RETURN_NOT_OK(flush(b, err));
        rc = marble_file_read(b->inner, off + *got, buf + *got, n - *got, &more, err);
        *got += more;
    }
    return rc;
}

static int bf_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                   marble_error *err)
{
    bfile *b = (bfile *)f;
    uint8_t *dst = buf;
    *nread = 0;
    if (b->failed) return sticky(b, err);
    if (n == 0) return MARBLE_OK;
    size_t done = 0;
    if (b->rlen && off >= b->roff && off < b->roff + b->rlen) {
        size_t avail = (size_t)(b->roff + b->rlen - off);
        done = n < avail ? n : avail;
        memcpy(dst, b->rbuf + (off - b->roff), done);
    }
    int sequential = off == b->next_seq;
    int rc = MARBLE_OK;
    if (done < n) {
        uint64_t at = off + done;
        size_t left = n - done, got = 0;
        if (sequential && b->seq_run >= 1 && left < b->readahead) {
            if (!b->rbuf && !(b->rbuf = malloc(b->readahead)))
                return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                        "buffered read %s: %zu bytes of read-ahead",
                                        marble_file_uri(b->inner), b->readahead);
            b->rlen = 0;
            rc = inner_read(b, at, b->rbuf, b->readahead, &got, err);
            if (rc == MARBLE_OK) {
                b->roff = at;
                b->rlen = got;
            }
            if (got > left) got = left;
            memcpy(dst + done, b->rbuf, got);
        } else {
            rc = inner_read(b, at, dst + done, left, &got, err);
        }
        done += got;
    }
    b->seq_run = sequential ? b->seq_run + 1 : 0;
    b->next_seq = off + done;
    *nread = done;
    return rc;
}

static int gather(bfile *b, const uint8_t *src, size_t n, marble_error *err)
{
    while (n > 0) {
        if (b->wlen == 0 && n >= b->bufsize) {
            int rc = b->wappend ? marble_file_append(b->inner, src, n, err)
                                : marble_file_write(b->inner, b->woff, src, n, err);
            if (rc == MARBLE_OK && !b->wappend) b->woff += n;
            return rc;
        }
        if (!b->wbuf && !(b->wbuf = malloc(b->bufsize)))
            return marble_error_set(err, MARBLE_ERR_NO_MEMORY,
                                    "buffered write %s: %zu bytes of write buffer",
                                    marble_file_uri(b->inner), b->bufsize);
        size_t take = b->bufsize - b->wlen;
        if (take > n) take = n;
        memcpy(b->wbuf + b->wlen, src, take);
        b->wlen += take;
        src += take;
        n -= take;
        if (b->wlen == b->bufsize) MARBLE_RETURN_NOT_OK(flush(b, err));
    }
    return MARBLE_OK;
}

static int bf_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    bfile *b = (bfile *)f;
    if (b->failed) return sticky(b, err);
    if (b->wlen && (b->wappend || off != b->woff + b->wlen)) MARBLE_RETURN_NOT_OK(flush(b, err));
    drop_window_if_overlaps(b, off, n);
    if (b->wlen == 0) {
        b->woff = off;
        b->wappend = 0;
    }
    return gather(b, buf, n, err);
}

static int bf_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    bfile *b = (bfile *)f;
    if (b->failed) return sticky(b, err);
    if (b->wlen && !b->wappend) MARBLE_RETURN_NOT_OK(flush(b, err));
    b->wappend = 1;
    return gather(b, buf, n, err);
}

static int bf_size(marble_file *f, uint64_t *out, marble_error *err)
{
    bfile *b = (bfile *)f;
    if (b->failed) return sticky(b, err);
    MARBLE_RETURN_NOT_OK(flush(b, err));
    return marble_file_size(b->inner, out, err);
}

static int bf_sync(marble_file *f, int flags, marble_error *err)
{
    bfile *b = (bfile *)f;
    if (b->failed) return sticky(b, err);
    MARBLE_RETURN_NOT_OK(flush(b, err));
    return marble_file_sync(b->inner, flags, err);
}

static int bf_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    bfile *b = (bfile *)f;
    if (b->failed) return sticky(b, err);
    MARBLE_RETURN_NOT_OK(flush(b, err));
    b->rlen = 0;
    return marble_file_truncate(b->inner, size, err);
}

static int bf_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                  marble_error *err)
{
    bfile *b = (bfile *)f;
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                            "buffered map %s: buffered files are read, not mapped",
                            marble_file_uri(b->inner));
}

static void bf_unmap(marble_file *f, const void *addr, size_t len, void *cookie) {}

static int bf_control(marble_file *f, int op, void *arg)
{
    bfile *b = (bfile *)f;
    if (op == MARBLE_FCNTL_GET_INNER && arg) {
        *(marble_file **)arg = b->inner;
        return MARBLE_OK;
    }
    return MARBLE_ERR_UNSUPPORTED;
}

static int bf_close(marble_file *f, marble_error *err)
{
    bfile *b = (bfile *)f;
    int rc = b->failed ? sticky(b, err) : flush(b, err);
    marble_error inner_err;
    marble_error_clear(&inner_err);
    int rc2 = marble_file_close(b->inner, &inner_err);
    if (rc == MARBLE_OK && rc2 != MARBLE_OK) {
        rc = rc2;
        if (err) *err = inner_err;
    }
    free(b->wbuf);
    free(b->rbuf);
    free(b);
    return rc;
}

static const marble_file_methods bfile_methods = {
    MARBLE_FILE_METHODS_VERSION,
    bf_read,
    bf_write,
    bf_append,
    bf_size,
    bf_sync,
    bf_truncate,
    bf_map,
    bf_unmap,
    bf_close,
    bf_control,
};

int marble_file_buffered_wrap(marble_file *inner, const marble_buffer_options *opts,
                              marble_file **out, marble_error *err)
{
    if (out) *out = NULL;
    if (!inner)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "buffered wrap: the inner file is NULL");
    int rc;
    bfile *b = NULL;
    if (!out) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "buffered wrap %s: out is NULL",
                              marble_file_uri(inner));
    } else if (!(b = calloc(1, sizeof *b))) {
        rc =
            marble_error_set(err, MARBLE_ERR_NO_MEMORY, "buffered wrap %s", marble_file_uri(inner));
    } else {
        rc = MARBLE_OK;
    }
    if (rc != MARBLE_OK) {
        marble_file_close(inner, NULL);
        return rc;
    }
    b->inner = inner;
    b->bufsize = opts && opts->buffer_size ? opts->buffer_size : DEFAULT_BUFFER;
    b->readahead = opts && opts->readahead ? opts->readahead : DEFAULT_READAHEAD;
    b->next_seq = UINT64_MAX;
    b->base.methods = &bfile_methods;
    b->base.vfs = inner->vfs;
    b->base.caps = inner->caps & ~(uint32_t)(MARBLE_CAP_MAP | MARBLE_CAP_FD | MARBLE_CAP_DIRECT);
    b->base.flags = inner->flags;
    b->base.fs_record = NULL;
    *out = &b->base;
    return MARBLE_OK;
}
