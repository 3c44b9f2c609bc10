/*
 * Constants shared by the IPC writer and reader (private to src/arrow/).
 *
 * Encapsulated message: uint32 0xFFFFFFFF (continuation), int32 metadata length (the flatbuffer
 * plus padding, so that the body starts aligned), the Message flatbuffer, padding, then the body
 * (bodyLength bytes). A pre-0.15 message omits the continuation word. End of stream: 0xFFFFFFFF
 * followed by a zero length (or a bare zero length).
 *
 * File: "ARROW1" + 2 zero bytes, the stream (schema, batches, end-of-stream marker), the Footer
 * flatbuffer, its int32 length, "ARROW1".
 */
#ifndef MARBLE_ARROW_IPC_INTERNAL_H
#define MARBLE_ARROW_IPC_INTERNAL_H

#include <stdint.h>

#define MARBLE_IPC_CONTINUATION 0xFFFFFFFFu
#define MARBLE_IPC_MAGIC "ARROW1"
#define MARBLE_IPC_MAGIC_LEN 6
#define MARBLE_IPC_FILE_HEADER_LEN 8 /* magic + 2 padding bytes */
/* The smallest file: header, an end-of-stream marker's worth of stream, footer length, magic. */
#define MARBLE_IPC_FILE_MIN_LEN (MARBLE_IPC_FILE_HEADER_LEN + 4 + MARBLE_IPC_MAGIC_LEN)

/* The length prefix of a compressed body buffer; -1: the bytes that follow are not compressed. */
#define MARBLE_IPC_COMPRESSED_PREFIX 8
#define MARBLE_IPC_UNCOMPRESSED_MARK (-1)

/* Nesting and size limits that protect the reader from hostile metadata. */
#define MARBLE_IPC_MAX_DEPTH 64
#define MARBLE_IPC_MAX_FIELDS 65536

#endif
