/* Compression streams: zstd, LZ4 frame and gzip files read and written as uncompressed bytes;
 * and a backend over another one whose every file is such a stream. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lz4frame.h>
#include <lz4hc.h>
#include <zlib.h>
#include <zstd.h>

#include "vfs/vfs_internal.h"

#define IN_CHUNK ((size_t)256 << 10)
#define OUT_CHUNK ((size_t)256 << 10)
#define LZ4_FEED ((size_t)64 << 10)
#define ZLIB_MAX_IO ((size_t)1 << 30)

enum { MODE_RUN, MODE_FLUSH, MODE_END };

/* Thread safety: one thread at a time (vfs.h).
 * Invariants: reading: pos is the count of bytes returned, ibuf[ipos, ilen) is input not yet
 * given to the decoder and in_off the count of bytes read from inner; frame_done is 1 between
 * frames. Writing: pos is the count of bytes accepted, obuf[0, olen) is output not yet written to
 * inner, out_off where it goes next. failed is the sticky error (its message in last). */
typedef struct cstream {
    marble_file base;
    marble_file *inner;
    marble_codec codec;
    int writing;
    int closing;
    int inner_closed;
    int failed;
    marble_error last;
    char *uri;
    uint64_t pos;

    uint8_t *ibuf;
    size_t ipos, ilen;
    uint64_t in_off;
    int in_eof;
    int frame_done;

    uint8_t *obuf;
    size_t olen, ocap;
    uint64_t out_off;
    int use_append;

    ZSTD_DCtx *zd;
    ZSTD_CCtx *zc;
    LZ4F_dctx *ld;
    LZ4F_cctx *lc;
    LZ4F_preferences_t lprefs;
    z_stream gz;
    int gz_ready;
    int gz_reset;
} cstream;

marble_codec marble_codec_from_path(const char *path)
{
    static const struct {
        const char *ext;
        marble_codec codec;
    } exts[] = {
        {".zst", MARBLE_CODEC_ZSTD}, {".lz4", MARBLE_CODEC_LZ4}, {".gz", MARBLE_CODEC_GZIP}};
    if (!path) return MARBLE_CODEC_NONE;
    size_t n = strlen(path);
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        size_t e = strlen(exts[i].ext);
        if (n > e && path[n - e - 1] != '/' && strcmp(path + n - e, exts[i].ext) == 0)
            return exts[i].codec;
    }
    return MARBLE_CODEC_NONE;
}

const char *marble_codec_name(marble_codec codec)
{
    switch (codec) {
    case MARBLE_CODEC_NONE:
        return "none";
    case MARBLE_CODEC_ZSTD:
        return "zstd";
    case MARBLE_CODEC_LZ4:
        return "lz4";
    case MARBLE_CODEC_GZIP:
        return "gzip";
    }
    return "unknown";
}

static void remember_uri(cstream *s)
{
    if (!s->uri && s->base.fs_record) s->uri = strdup(marble_file_uri(&s->base));
}

/* The wrapper's own URI once the registry tracks it, else the inner file's. marble_file_close
 * releases the record before calling close, so the name is cached on first use and the record is
 * not looked at once closing. */
static const char *stream_uri(cstream *s)
{
    if (!s->closing) remember_uri(s);
    if (s->uri) return s->uri;
    return s->inner_closed ? "(closed file)" : marble_file_uri(s->inner);
}

static const char *cname(const cstream *s)
{
    return marble_codec_name(s->codec);
}

static int stream_error(cstream *s, int code, const char *op, const char *fmt, ...)
    MARBLE_PRINTF(4, 5);

static int stream_error(cstream *s, int code, const char *op, const char *fmt, ...)
{
    char detail[MARBLE_ERROR_MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return marble_error_set(&s->last, code, "%s %s %s: %s", cname(s), op, stream_uri(s), detail);
}

/* Prefixes the message an inner call left in s->last with the stream's context. */
static int inner_error(cstream *s, int code, const char *op)
{
    char inner_msg[MARBLE_ERROR_MESSAGE_SIZE];
    memcpy(inner_msg, s->last.message, sizeof inner_msg);
    return stream_error(s, code, op, "%s", inner_msg);
}

static int report(cstream *s, int rc, marble_error *err)
{
    if (rc != MARBLE_OK) {
        s->failed = rc;
        if (err) *err = s->last;
    }
    return rc;
}

static int sticky(cstream *s, marble_error *err)
{
    if (err) *err = s->last;
    return s->failed;
}

/* ---- decoding ---------------------------------------------------------------------------- */

static int corrupt(cstream *s, const char *what)
{
    uint64_t at = s->in_off - (s->ilen - s->ipos);
    return stream_error(s, MARBLE_ERR_CORRUPTION, "read",
                        "corrupt input near compressed offset %llu: %s", (unsigned long long)at,
                        what);
}

static int dec_init(cstream *s)
{
    s->ibuf = malloc(IN_CHUNK);
    if (!s->ibuf) return stream_error(s, MARBLE_ERR_NO_MEMORY, "open", "input buffer");
    s->frame_done = 1;
    switch (s->codec) {
    case MARBLE_CODEC_ZSTD:
        s->zd = ZSTD_createDCtx();
        if (!s->zd) return stream_error(s, MARBLE_ERR_NO_MEMORY, "open", "decoder context");
        break;
    case MARBLE_CODEC_LZ4: {
        LZ4F_errorCode_t r = LZ4F_createDecompressionContext(&s->ld, LZ4F_VERSION);
        if (LZ4F_isError(r))
            return stream_error(s, MARBLE_ERR_NO_MEMORY, "open", "decoder context: %s",
                                LZ4F_getErrorName(r));
        break;
    }
    default: {
        int r = inflateInit2(&s->gz, 15 + 16);
        if (r != Z_OK)
            return stream_error(s, r == Z_MEM_ERROR ? MARBLE_ERR_NO_MEMORY : MARBLE_ERR_INTERNAL,
                                "open", "inflateInit2: %s", zError(r));
        s->gz_ready = 1;
        break;
    }
    }
    return MARBLE_OK;
}

/* One decoder call on the buffered input. *frame_end: the call finished a frame (or gzip
 * member) and flushed all of its output. */
static int dec_step(cstream *s, uint8_t *out, size_t cap, size_t *used, size_t *made,
                    int *frame_end)
{
    const uint8_t *in = s->ibuf + s->ipos;
    size_t avail = s->ilen - s->ipos;
    *used = *made = 0;
    *frame_end = 0;
    switch (s->codec) {
    case MARBLE_CODEC_ZSTD: {
        ZSTD_inBuffer ib = {in, avail, 0};
        ZSTD_outBuffer ob = {out, cap, 0};
        size_t r = ZSTD_decompressStream(s->zd, &ob, &ib);
        if (ZSTD_isError(r)) return corrupt(s, ZSTD_getErrorName(r));
        *used = ib.pos;
        *made = ob.pos;
        *frame_end = r == 0;
        return MARBLE_OK;
    }
    case MARBLE_CODEC_LZ4: {
        size_t dst = cap, src = avail;
        size_t r = LZ4F_decompress(s->ld, out, &dst, in, &src, NULL);
        if (LZ4F_isError(r)) return corrupt(s, LZ4F_getErrorName(r));
        *used = src;
        *made = dst;
        *frame_end = r == 0;
        return MARBLE_OK;
    }
    default: {
        if (s->gz_reset) {
            int r = inflateReset(&s->gz);
            if (r != Z_OK) return corrupt(s, zError(r));
            s->gz_reset = 0;
        }
        uInt in_n = (uInt)(avail < ZLIB_MAX_IO ? avail : ZLIB_MAX_IO);
        uInt out_n = (uInt)(cap < ZLIB_MAX_IO ? cap : ZLIB_MAX_IO);
        s->gz.next_in = (Bytef *)in;
        s->gz.avail_in = in_n;
        s->gz.next_out = out;
        s->gz.avail_out = out_n;
        int r = inflate(&s->gz, Z_NO_FLUSH);
        *used = in_n - s->gz.avail_in;
        *made = out_n - s->gz.avail_out;
        if (r == Z_STREAM_END) {
            *frame_end = 1;
            s->gz_reset = 1;
            return MARBLE_OK;
        }
        if (r == Z_OK || r == Z_BUF_ERROR) return MARBLE_OK;
        if (r == Z_MEM_ERROR) return stream_error(s, MARBLE_ERR_NO_MEMORY, "read", "inflate");
        return corrupt(s, s->gz.msg ? s->gz.msg : zError(r));
    }
    }
}

static int refill(cstream *s)
{
    size_t got = 0;
    int rc = marble_file_read(s->inner, s->in_off, s->ibuf, IN_CHUNK, &got, &s->last);
    if (rc != MARBLE_OK) return inner_error(s, rc, "read");
    s->ipos = 0;
    s->ilen = got;
    s->in_off += got;
    if (got == 0) s->in_eof = 1;
    return MARBLE_OK;
}

static int decode(cstream *s, uint8_t *dst, size_t n, size_t *nread)
{
    size_t done = 0;
    int rc = MARBLE_OK;
    while (done < n) {
        if (s->ipos == s->ilen && !s->in_eof) {
            rc = refill(s);
            if (rc != MARBLE_OK) break;
            continue;
        }
        if (s->ipos == s->ilen && s->frame_done) {
            if (s->in_off == 0)
                rc = stream_error(s, MARBLE_ERR_CORRUPTION, "read",
                                  "truncated input: the file is empty (no %s frame)", cname(s));
            break;
        }
        size_t used, made;
        int frame_end;
        rc = dec_step(s, dst + done, n - done, &used, &made, &frame_end);
        if (rc != MARBLE_OK) break;
        s->ipos += used;
        done += made;
        if (used == 0 && made == 0 && !(frame_end && !s->frame_done)) {
            if (s->ipos == s->ilen)
                rc = stream_error(s, MARBLE_ERR_CORRUPTION, "read",
                                  "truncated input: the file ends inside a %s frame after %llu "
                                  "compressed bytes",
                                  cname(s), (unsigned long long)s->in_off);
            else
                rc = corrupt(s, "the decoder makes no progress");
            break;
        }
        s->frame_done = frame_end;
    }
    *nread = done;
    return rc;
}

/* ---- encoding ---------------------------------------------------------------------------- */

static int drain(cstream *s)
{
    if (s->olen == 0) return MARBLE_OK;
    int rc = s->use_append ? marble_file_append(s->inner, s->obuf, s->olen, &s->last)
                           : marble_file_write(s->inner, s->out_off, s->obuf, s->olen, &s->last);
    if (rc != MARBLE_OK) return inner_error(s, rc, "write");
    s->out_off += s->olen;
    s->olen = 0;
    return MARBLE_OK;
}

static int check_level(marble_codec codec, int level, marble_error *err)
{
    int lo, hi;
    switch (codec) {
    case MARBLE_CODEC_ZSTD:
        lo = ZSTD_minCLevel();
        hi = ZSTD_maxCLevel();
        break;
    case MARBLE_CODEC_LZ4:
        lo = -(1 << 16);
        hi = LZ4HC_CLEVEL_MAX;
        break;
    default:
        lo = -1;
        hi = 9;
        break;
    }
    if (level < lo || level > hi)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "%s level %d is out of range [%d, %d] (0 for the default)",
                                marble_codec_name(codec), level, lo, hi);
    return MARBLE_OK;
}

static int enc_init(cstream *s, int level)
{
    s->use_append =
        (s->inner->flags & MARBLE_OPEN_APPEND) ||
        (!(s->inner->caps & MARBLE_CAP_RANDOM_WRITE) && (s->inner->caps & MARBLE_CAP_APPEND));
    if (!s->use_append) {
        uint64_t size = 0;
        int rc = marble_file_size(s->inner, &size, &s->last);
        if (rc == MARBLE_OK)
            s->out_off = size;
        else if (rc != MARBLE_ERR_UNSUPPORTED)
            return inner_error(s, rc, "open");
    }
    s->ocap = OUT_CHUNK;
    if (s->codec == MARBLE_CODEC_LZ4) {
        memset(&s->lprefs, 0, sizeof s->lprefs);
        s->lprefs.frameInfo.blockSizeID = LZ4F_max256KB;
        s->lprefs.frameInfo.blockMode = LZ4F_blockLinked;
        s->lprefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
        s->lprefs.compressionLevel = level;
        size_t bound = LZ4F_compressBound(LZ4_FEED, &s->lprefs) + LZ4F_HEADER_SIZE_MAX;
        if (bound > s->ocap) s->ocap = bound;
    }
    s->obuf = malloc(s->ocap);
    if (!s->obuf) return stream_error(s, MARBLE_ERR_NO_MEMORY, "open", "output buffer");
    switch (s->codec) {
    case MARBLE_CODEC_ZSTD: {
        s->zc = ZSTD_createCCtx();
        if (!s->zc) return stream_error(s, MARBLE_ERR_NO_MEMORY, "open", "encoder context");
        size_t r = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_compressionLevel, level);
        if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_checksumFlag, 1);
        if (ZSTD_isError(r))
            return stream_error(s, MARBLE_ERR_INVALID_ARGUMENT, "open", "level %d: %s", level,
                                ZSTD_getErrorName(r));
        break;
    }
    case MARBLE_CODEC_LZ4: {
        LZ4F_errorCode_t r = LZ4F_createCompressionContext(&s->lc, LZ4F_VERSION);
        if (LZ4F_isError(r))
            return stream_error(s, MARBLE_ERR_NO_MEMORY, "open", "encoder context: %s",
                                LZ4F_getErrorName(r));
        size_t h = LZ4F_compressBegin(s->lc, s->obuf, s->ocap, &s->lprefs);
        if (LZ4F_isError(h))
            return stream_error(s, MARBLE_ERR_INTERNAL, "open", "LZ4F_compressBegin: %s",
                                LZ4F_getErrorName(h));
        s->olen = h;
        break;
    }
    default: {
        int r = deflateInit2(&s->gz, level == 0 ? Z_DEFAULT_COMPRESSION : level, Z_DEFLATED,
                             15 + 16, 8, Z_DEFAULT_STRATEGY);
        if (r != Z_OK)
            return stream_error(s, r == Z_MEM_ERROR ? MARBLE_ERR_NO_MEMORY : MARBLE_ERR_INTERNAL,
                                "open", "deflateInit2: %s", zError(r));
        s->gz_ready = 1;
        break;
    }
    }
    return MARBLE_OK;
}

static int enc_zstd(cstream *s, const uint8_t *src, size_t n, int mode, const char *op)
{
    ZSTD_EndDirective d = mode == MODE_RUN     ? ZSTD_e_continue
                          : mode == MODE_FLUSH ? ZSTD_e_flush
                                               : ZSTD_e_end;
    ZSTD_inBuffer ib = {src, n, 0};
    for (;;) {
        if (s->olen == s->ocap) MARBLE_RETURN_NOT_OK(drain(s));
        ZSTD_outBuffer ob = {s->obuf, s->ocap, s->olen};
        size_t in_before = ib.pos;
        size_t r = ZSTD_compressStream2(s->zc, &ob, &ib, d);
        if (ZSTD_isError(r))
            return stream_error(s, MARBLE_ERR_INTERNAL, op, "ZSTD_compressStream2: %s",
                                ZSTD_getErrorName(r));
        int progress = ob.pos != s->olen || ib.pos != in_before;
        s->olen = ob.pos;
        if (d == ZSTD_e_continue ? ib.pos == ib.size : r == 0) return MARBLE_OK;
        if (!progress && s->olen < s->ocap)
            return stream_error(s, MARBLE_ERR_INTERNAL, op, "the encoder makes no progress");
    }
}

static int enc_lz4(cstream *s, const uint8_t *src, size_t n, int mode, const char *op)
{
    if (mode == MODE_RUN) {
        while (n > 0) {
            size_t piece = n < LZ4_FEED ? n : LZ4_FEED;
            if (s->ocap - s->olen < LZ4F_compressBound(piece, &s->lprefs))
                MARBLE_RETURN_NOT_OK(drain(s));
            size_t r =
                LZ4F_compressUpdate(s->lc, s->obuf + s->olen, s->ocap - s->olen, src, piece, NULL);
            if (LZ4F_isError(r))
                return stream_error(s, MARBLE_ERR_INTERNAL, op, "LZ4F_compressUpdate: %s",
                                    LZ4F_getErrorName(r));
            s->olen += r;
            src += piece;
            n -= piece;
        }
        return MARBLE_OK;
    }
    if (s->ocap - s->olen < LZ4F_compressBound(0, &s->lprefs)) MARBLE_RETURN_NOT_OK(drain(s));
    size_t r = mode == MODE_FLUSH
                   ? LZ4F_flush(s->lc, s->obuf + s->olen, s->ocap - s->olen, NULL)
                   : LZ4F_compressEnd(s->lc, s->obuf + s->olen, s->ocap - s->olen, NULL);
    if (LZ4F_isError(r))
        return stream_error(s, MARBLE_ERR_INTERNAL, op, "%s: %s",
                            mode == MODE_FLUSH ? "LZ4F_flush" : "LZ4F_compressEnd",
                            LZ4F_getErrorName(r));
    s->olen += r;
    return MARBLE_OK;
}

static int enc_gzip(cstream *s, const uint8_t *src, size_t n, int mode, const char *op)
{
    int flush = mode == MODE_RUN ? Z_NO_FLUSH : mode == MODE_FLUSH ? Z_SYNC_FLUSH : Z_FINISH;
    do {
        size_t piece = n < ZLIB_MAX_IO ? n : ZLIB_MAX_IO;
        int f = piece == n ? flush : Z_NO_FLUSH;
        s->gz.next_in = (Bytef *)src;
        s->gz.avail_in = (uInt)piece;
        for (;;) {
            if (s->olen == s->ocap) MARBLE_RETURN_NOT_OK(drain(s));
            uInt room = (uInt)(s->ocap - s->olen);
            uInt in_before = s->gz.avail_in;
            s->gz.next_out = s->obuf + s->olen;
            s->gz.avail_out = room;
            int r = deflate(&s->gz, f);
            s->olen += room - s->gz.avail_out;
            if (r == Z_STREAM_END) break;
            if (r != Z_OK && r != Z_BUF_ERROR)
                return stream_error(s, MARBLE_ERR_INTERNAL, op, "deflate: %s",
                                    s->gz.msg ? s->gz.msg : zError(r));
            if (f != Z_FINISH && s->gz.avail_in == 0 && s->gz.avail_out != 0) break;
            if (s->gz.avail_out == room && s->gz.avail_in == in_before)
                return stream_error(s, MARBLE_ERR_INTERNAL, op, "the encoder makes no progress");
        }
        src += piece;
        n -= piece;
    } while (n > 0);
    return MARBLE_OK;
}

static int encode(cstream *s, const void *src, size_t n, int mode, const char *op)
{
    switch (s->codec) {
    case MARBLE_CODEC_ZSTD:
        return enc_zstd(s, src, n, mode, op);
    case MARBLE_CODEC_LZ4:
        return enc_lz4(s, src, n, mode, op);
    default:
        return enc_gzip(s, src, n, mode, op);
    }
}

/* ---- the file methods -------------------------------------------------------------------- */

static int wrong_direction(cstream *s, const char *op, marble_error *err)
{
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED, "%s %s %s: the stream is open for %s",
                            cname(s), op, stream_uri(s), s->writing ? "writing" : "reading");
}

static int cs_read(marble_file *f, uint64_t off, void *buf, size_t n, size_t *nread,
                   marble_error *err)
{
    cstream *s = (cstream *)f;
    remember_uri(s);
    *nread = 0;
    if (s->writing) return wrong_direction(s, "read", err);
    if (s->failed) return sticky(s, err);
    if (off != s->pos)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "%s read %s: offset %llu is not the stream position %llu "
                                "(compressed streams are read sequentially)",
                                cname(s), stream_uri(s), (unsigned long long)off,
                                (unsigned long long)s->pos);
    size_t got = 0;
    int rc = decode(s, buf, n, &got);
    s->pos += got;
    *nread = got;
    return report(s, rc, err);
}

static int put(cstream *s, const void *buf, size_t n, const char *op, marble_error *err)
{
    int rc = encode(s, buf, n, MODE_RUN, op);
    if (rc == MARBLE_OK) s->pos += n;
    return report(s, rc, err);
}

static int cs_write(marble_file *f, uint64_t off, const void *buf, size_t n, marble_error *err)
{
    cstream *s = (cstream *)f;
    remember_uri(s);
    if (!s->writing) return wrong_direction(s, "write", err);
    if (s->failed) return sticky(s, err);
    if (off != s->pos)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "%s write %s: offset %llu is not the stream position %llu "
                                "(compressed streams are written sequentially)",
                                cname(s), stream_uri(s), (unsigned long long)off,
                                (unsigned long long)s->pos);
    return put(s, buf, n, "write", err);
}

static int cs_append(marble_file *f, const void *buf, size_t n, marble_error *err)
{
    cstream *s = (cstream *)f;
    remember_uri(s);
    if (!s->writing) return wrong_direction(s, "append", err);
    if (s->failed) return sticky(s, err);
    return put(s, buf, n, "append", err);
}

static int cs_size(marble_file *f, uint64_t *out, marble_error *err)
{
    cstream *s = (cstream *)f;
    if (!s->writing)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "%s size %s: the uncompressed size of a stream being read is "
                                "not known",
                                cname(s), stream_uri(s));
    *out = s->pos;
    return MARBLE_OK;
}

static int cs_sync(marble_file *f, int flags, marble_error *err)
{
    cstream *s = (cstream *)f;
    remember_uri(s);
    if (!s->writing) return wrong_direction(s, "sync", err);
    if (s->failed) return sticky(s, err);
    int rc = encode(s, NULL, 0, MODE_FLUSH, "sync");
    if (rc == MARBLE_OK) rc = drain(s);
    if (rc == MARBLE_OK) {
        rc = marble_file_sync(s->inner, flags, &s->last);
        if (rc != MARBLE_OK) inner_error(s, rc, "sync");
    }
    return report(s, rc, err);
}

static int cs_truncate(marble_file *f, uint64_t size, marble_error *err)
{
    cstream *s = (cstream *)f;
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                            "%s truncate %s: compressed streams cannot be truncated", cname(s),
                            stream_uri(s));
}

static int cs_map(marble_file *f, uint64_t off, size_t len, const void **addr, void **cookie,
                  marble_error *err)
{
    cstream *s = (cstream *)f;
    return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                            "%s map %s: compressed streams cannot be mapped", cname(s),
                            stream_uri(s));
}

static void cs_unmap(marble_file *f, const void *addr, size_t len, void *cookie) {}

static int cs_control(marble_file *f, int op, void *arg)
{
    cstream *s = (cstream *)f;
    if (op == MARBLE_FCNTL_GET_INNER && arg) {
        *(marble_file **)arg = s->inner;
        return MARBLE_OK;
    }
    return MARBLE_ERR_UNSUPPORTED;
}

static void free_stream(cstream *s)
{
    ZSTD_freeDCtx(s->zd);
    ZSTD_freeCCtx(s->zc);
    if (s->ld) LZ4F_freeDecompressionContext(s->ld);
    if (s->lc) LZ4F_freeCompressionContext(s->lc);
    if (s->gz_ready) {
        if (s->writing)
            deflateEnd(&s->gz);
        else
            inflateEnd(&s->gz);
    }
    free(s->ibuf);
    free(s->obuf);
    free(s->uri);
    free(s);
}

static int cs_close(marble_file *f, marble_error *err)
{
    cstream *s = (cstream *)f;
    s->closing = 1;
    int rc = s->writing ? s->failed : MARBLE_OK;
    if (s->writing && rc == MARBLE_OK) {
        rc = encode(s, NULL, 0, MODE_END, "close");
        if (rc == MARBLE_OK) rc = drain(s);
    }
    if (!s->uri) s->uri = strdup(marble_file_uri(s->inner));
    marble_error inner_err;
    marble_error_clear(&inner_err);
    int rc2 = marble_file_close(s->inner, &inner_err);
    s->inner_closed = 1;
    if (rc == MARBLE_OK && rc2 != MARBLE_OK) {
        s->last = inner_err;
        rc = inner_error(s, rc2, "close");
    }
    if (rc != MARBLE_OK && err) *err = s->last;
    free_stream(s);
    return rc;
}

static const marble_file_methods cstream_methods = {
    MARBLE_FILE_METHODS_VERSION,
    cs_read,
    cs_write,
    cs_append,
    cs_size,
    cs_sync,
    cs_truncate,
    cs_map,
    cs_unmap,
    cs_close,
    cs_control,
};

int marble_file_compress_wrap(marble_file *inner, marble_codec codec, int writing, int level,
                              marble_file **out, marble_error *err)
{
    if (out) *out = NULL;
    if (!inner)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "compress wrap: the inner file is NULL");
    int rc;
    if (!out) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT, "compress wrap %s: out is NULL",
                              marble_file_uri(inner));
        marble_file_close(inner, NULL);
        return rc;
    }
    if (codec != MARBLE_CODEC_ZSTD && codec != MARBLE_CODEC_LZ4 && codec != MARBLE_CODEC_GZIP) {
        rc = marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                              "compress wrap %s: codec %d (%s) is not a compression codec",
                              marble_file_uri(inner), (int)codec, marble_codec_name(codec));
        marble_file_close(inner, NULL);
        return rc;
    }
    if (writing && (rc = check_level(codec, level, err)) != MARBLE_OK) {
        marble_file_close(inner, NULL);
        return rc;
    }
    cstream *s = calloc(1, sizeof *s);
    if (!s) {
        rc = marble_error_set(err, MARBLE_ERR_NO_MEMORY, "compress wrap %s: %s stream",
                              marble_file_uri(inner), marble_codec_name(codec));
        marble_file_close(inner, NULL);
        return rc;
    }
    s->inner = inner;
    s->codec = codec;
    s->writing = writing != 0;
    s->base.methods = &cstream_methods;
    s->base.vfs = inner->vfs;
    s->base.flags = inner->flags | MARBLE_OPEN_COMPRESSED;
    s->base.fs_record = NULL;
    if (s->writing)
        s->base.caps = MARBLE_CAP_APPEND | (inner->caps & MARBLE_CAP_SYNC);
    else
        s->base.caps = 0;
    s->base.caps |=
        inner->caps & (MARBLE_CAP_ATOMIC_RENAME | MARBLE_CAP_SYNC_DIR | MARBLE_CAP_LIST);
    rc = s->writing ? enc_init(s, level) : dec_init(s);
    if (rc != MARBLE_OK) {
        if (err) *err = s->last;
        s->closing = 1;
        marble_file_close(inner, NULL);
        free_stream(s);
        return rc;
    }
    *out = &s->base;
    return MARBLE_OK;
}

/* ---- the compressing backend ------------------------------------------------------------- */

/* Thread safety: immutable after creation; each call goes to `parent`, which is thread-safe. */
typedef struct cvfs {
    marble_vfs base;
    marble_vfs *parent;
    marble_codec codec;
    int level;
    char name[];
} cvfs;

static marble_vfs *parent_of(marble_vfs *v)
{
    return ((cvfs *)v)->parent;
}

static int cv_open(marble_vfs *v, const char *path, int flags, marble_file **out, marble_error *err)
{
    cvfs *c = (cvfs *)v;
    *out = NULL;
    int writing = (flags & MARBLE_OPEN_WRITE) != 0;
    if (writing && (flags & MARBLE_OPEN_READ))
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "%s open %s: a compressed file is a stream, read or written but "
                                "not both (open it with READ or with WRITE)",
                                v->name, path);
    if (flags & MARBLE_OPEN_DIRECT)
        return marble_error_set(err, MARBLE_ERR_UNSUPPORTED,
                                "%s open %s: compressed files have no direct I/O", v->name, path);
    flags &= ~MARBLE_OPEN_COMPRESSED;
    marble_file *inner = NULL;
    MARBLE_RETURN_NOT_OK(c->parent->open(c->parent, path, flags, &inner, err));
    inner->vfs = c->parent;
    inner->flags = flags;
    inner->fs_record = NULL;
    marble_error e;
    marble_error_clear(&e);
    int rc = marble_file_compress_wrap(inner, c->codec, writing, c->level, out, &e);
    if (rc != MARBLE_OK)
        return marble_error_set(err, rc, "%s open %s: %s", v->name, path, e.message);
    return MARBLE_OK;
}

static int cv_stat(marble_vfs *v, const char *path, marble_stat *out, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->stat(p, path, out, err);
}

static int cv_list(marble_vfs *v, const char *dir, marble_dirent_fn fn, void *ud, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->list(p, dir, fn, ud, err);
}

static int cv_mkdir(marble_vfs *v, const char *path, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->mkdir(p, path, err);
}

static int cv_remove(marble_vfs *v, const char *path, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->remove(p, path, err);
}

static int cv_rename(marble_vfs *v, const char *from, const char *to, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->rename(p, from, to, err);
}

static int cv_sync_dir(marble_vfs *v, const char *path, marble_error *err)
{
    marble_vfs *p = parent_of(v);
    return p->sync_dir(p, path, err);
}

static int cv_control(marble_vfs *v, int op, void *arg)
{
    marble_vfs *p = parent_of(v);
    return p->control(p, op, arg);
}

static void cv_destroy(marble_vfs *v)
{
    free(v);
}

int marble_vfs_compress_create(marble_vfs *parent, marble_codec codec, int level, marble_vfs **out,
                               marble_error *err)
{
    if (out) *out = NULL;
    if (!out || !parent)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_compress_create: %s is NULL", !out ? "out" : "parent");
    if (codec != MARBLE_CODEC_ZSTD && codec != MARBLE_CODEC_LZ4 && codec != MARBLE_CODEC_GZIP)
        return marble_error_set(err, MARBLE_ERR_INVALID_ARGUMENT,
                                "marble_vfs_compress_create: codec %d (%s) is not a compression "
                                "codec",
                                (int)codec, marble_codec_name(codec));
    MARBLE_RETURN_NOT_OK(check_level(codec, level, err));
    const char *pname = parent->name ? parent->name : "?";
    size_t len = strlen(marble_codec_name(codec)) + strlen(pname) + 3;
    cvfs *c = calloc(1, sizeof *c + len);
    if (!c)
        return marble_error_set(err, MARBLE_ERR_NO_MEMORY, "allocating the %s backend over %s",
                                marble_codec_name(codec), pname);
    snprintf(c->name, len, "%s(%s)", marble_codec_name(codec), pname);
    c->parent = parent;
    c->codec = codec;
    c->level = level;
    marble_vfs *v = &c->base;
    v->version = MARBLE_VFS_VERSION;
    v->name = c->name;
    v->caps = parent->caps & (MARBLE_CAP_LIST | MARBLE_CAP_SYNC | MARBLE_CAP_SYNC_DIR |
                              MARBLE_CAP_ATOMIC_RENAME | MARBLE_CAP_APPEND);
    v->data = c;
    v->open = cv_open;
    v->stat = cv_stat;
    v->list = cv_list;
    v->mkdir = cv_mkdir;
    v->remove = cv_remove;
    v->rename = cv_rename;
    v->sync_dir = cv_sync_dir;
    v->control = cv_control;
    v->destroy = cv_destroy;
    *out = v;
    return MARBLE_OK;
}
