/*
 * A streaming CSV reader producing Arrow record batches (part of the Arrow layer; it depends only
 * on marble/base and marble/arrow and reads from a callback, so any VFS file or memory works).
 *
 * Format (RFC 4180, tolerant): fields separated by `delimiter`; a field starting with `quote` is
 * quoted: it may hold delimiters, CR/LF line breaks and doubled quotes ("" = one quote), and must
 * be followed by a delimiter or a line end. A quote inside an unquoted field is a plain
 * character. Records end at LF, CRLF or a lone CR; the last record may lack a line end. A UTF-8
 * byte order mark at the start is skipped. Blank lines are skipped unless the table has exactly
 * one column (there a blank line is a null value).
 *
 * Columns: with a schema (a "+s" ArrowSchema, copied), the CSV fields map to its columns by
 * header name when every header name is a distinct column name, else by position; the number of
 * fields must match. Without one, the schema is inferred from the header (or "f0", "f1", ...)
 * and the first `infer_rows` records: a column is int64 if every non-null value is an integer
 * in int64's range, float64 if every one is a number (ints and floats mixed give float64), bool
 * if every one is true/false (any case), else utf8; a column of nulls only is utf8. All inferred
 * columns are nullable.
 *
 * Values: an unquoted field equal to `null_value` is null (in string and binary columns only
 * when `null_in_strings`); a quoted field is never null, so "" is an empty string. Fields of
 * numeric, bool, date and timestamp columns have surrounding spaces and tabs trimmed. Types:
 * int8..int64, uint8..uint64 (decimal, optional sign, range-checked), float32/float64 (strtod
 * syntax incl. inf/nan; float32 range-checked), bool (true/false/1/0, any case), utf8 and
 * large_utf8 (must be valid UTF-8), binary and large_binary (raw bytes), fixed_size_binary (the
 * length must be N), date32 (days as an integer, or YYYY-MM-DD), timestamp (an integer in the
 * column's unit, or ISO 8601 "YYYY-MM-DD[(T| )HH:MM:SS[.f{1,9}]][Z|(+|-)HH:MM]" converted to
 * the unit; a fraction finer than the unit is an error). Other types: MARBLE_ERR_UNSUPPORTED.
 *
 * Errors: bad options or schema are MARBLE_ERR_INVALID_ARGUMENT (MARBLE_ERR_UNSUPPORTED for a
 * type the reader cannot parse). Malformed input is MARBLE_ERR_CORRUPTION with a message
 * "line L, column C: ..." (L: 1-based line where the record starts; C: 1-based field index):
 * an unterminated quote, a character after a closing quote, a wrong number of fields, a value
 * that does not parse as its column's type or is out of its range. With `skip_bad_rows` such a
 * record is skipped and counted instead (marble_csv_reader_stats), except an unterminated quote
 * or a record over `max_record_bytes`, which end the input (the rest of the input is the bad
 * record). Errors of the source's read are returned as they are. After an error, the reader
 * keeps returning it; the batch being built is discarded.
 *
 * Memory: the reader holds one input buffer (64 KiB), the record being parsed (at most
 * max_record_bytes), the records kept for inference and one batch being built.
 *
 * Thread safety: a reader is for one thread at a time.
 */
#ifndef MARBLE_CSV_H
#define MARBLE_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "marble/arrow.h"
#include "marble/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where the bytes come from: read(ctx, buf, cap, &got, err) stores up to cap bytes into buf and
 * their number into *got (0 only at the end of the input); returns MARBLE_OK or a code (with a
 * message in err). */
typedef struct marble_csv_source {
    int (*read)(void *ctx, void *buf, size_t cap, size_t *got, marble_error *err);
    void *ctx;
} marble_csv_source;

typedef struct marble_csv_options {
    char delimiter;          /* ',' */
    char quote;              /* '"'; '\0' turns quoting off */
    int header;              /* 1: the first record holds column names (default 1) */
    int64_t batch_rows;      /* rows per batch (default 65536) */
    const char *null_value;  /* text of a null (default ""); copied */
    int null_in_strings;     /* 1: null_value is null in utf8/binary columns too (default 1) */
    int skip_bad_rows;       /* 1: skip and count malformed records instead of failing (0) */
    int64_t infer_rows;      /* records read to infer a schema (default 1000, at least 1) */
    size_t max_record_bytes; /* longest record (default 64 MiB) */
} marble_csv_options;

typedef struct marble_csv_stats {
    int64_t rows;           /* rows returned so far */
    int64_t bad_rows;       /* records skipped under skip_bad_rows */
    int64_t first_bad_line; /* line of the first skipped record (0: none) */
    char first_bad_message[MARBLE_ERROR_MESSAGE_SIZE]; /* its "line L, column C: ..." */
} marble_csv_stats;

typedef struct marble_csv_reader marble_csv_reader;

/* Fills *o with the defaults above. */
MARBLE_API void marble_csv_options_init(marble_csv_options *o);
/* Creates a reader over `src` (ctx must outlive the reader). `schema` (a "+s" schema, copied)
 * or NULL to infer one; `opts` NULL for the defaults. Reads the header and, when inferring, the
 * first infer_rows records at once. An empty input gives a schema with no columns when
 * inferring, and no batches. */
MARBLE_API int marble_csv_reader_create(const marble_csv_source *src,
                                        const struct ArrowSchema *schema,
                                        const marble_csv_options *opts, marble_csv_reader **out,
                                        marble_error *err);
/* A copy of the batches' schema (release it). */
MARBLE_API int marble_csv_reader_schema(marble_csv_reader *r, struct ArrowSchema *out,
                                        marble_error *err);
/* The next batch (a "+s" array of at most batch_rows rows, at least 1), or out->release == NULL
 * at the end of the input. */
MARBLE_API int marble_csv_reader_next(marble_csv_reader *r, struct ArrowArray *out,
                                      marble_error *err);
MARBLE_API void marble_csv_reader_stats(const marble_csv_reader *r, marble_csv_stats *out);
/* Accepts NULL. */
MARBLE_API void marble_csv_reader_destroy(marble_csv_reader *r);

/* ---- the CSV writer ----------------------------------------------------------------------------
 * Writes record batches as CSV (RFC 4180): a header row of the column names (unless header is
 * 0), one record per row, fields separated by `delimiter`, records ended by "\n". A field is
 * quoted (and quotes doubled inside) when it holds the delimiter, the quote, CR or LF, or when
 * it is an empty string (so that it does not read back as a null); a null is an empty unquoted
 * field. Values: bool true/false; integers in decimal; float64 as %.15g, or %.17g where that does
 * not read back exactly (float32: the first of %.6g..%.9g that does); "nan", "inf", "-inf"; utf8 as
 * is; binary, large_binary and fixed_size_binary as lowercase hex digits, two per byte, no prefix
 * (the CSV reader reads binary columns as raw bytes, so binary does not round-trip); date32 as
 * YYYY-MM-DD; timestamps as ISO 8601 "YYYY-MM-DDTHH:MM:SS" with 3, 6 or 9 fraction digits for
 * milli, micro and nano units, and "Z" when the type has a timezone; both read back through the
 * CSV reader. Other types: MARBLE_ERR_UNSUPPORTED at create. Output goes to a marble_ipc_sink in
 * pieces of up to 64 KiB. A writer is for one thread at a time. */
typedef struct marble_csv_write_options {
    char delimiter; /* ',' */
    char quote;     /* '"' */
    int header;     /* 1 */
} marble_csv_write_options;

typedef struct marble_csv_writer marble_csv_writer;

MARBLE_API void marble_csv_write_options_init(marble_csv_write_options *o);
/* `schema` is a "+s" schema (copied); `opts` NULL for the defaults. The header is written by the
 * first write or by finish. */
MARBLE_API int marble_csv_writer_create(marble_ipc_sink sink, const struct ArrowSchema *schema,
                                        const marble_csv_write_options *opts,
                                        marble_csv_writer **out, marble_error *err);
/* Writes the rows of `batch` (a "+s" array of the writer's schema; validated first). */
MARBLE_API int marble_csv_writer_write(marble_csv_writer *w, const struct ArrowArray *batch,
                                       marble_error *err);
/* Writes what is buffered (and the header if nothing was written). */
MARBLE_API int marble_csv_writer_finish(marble_csv_writer *w, marble_error *err);
/* Accepts NULL. */
MARBLE_API void marble_csv_writer_destroy(marble_csv_writer *w);
/* Formats element i of a column of type t (marble_arrow_type_parse of its format) as the writer
 * does, into buf (at most cap bytes): the length written; -1 when buf is too small; -2 when the
 * type is one CSV cannot hold (null, struct) or an argument is bad. *is_null is set for a null.
 * Used by the JSON lines exporter. */
MARBLE_API int64_t marble_csv_format_value(const marble_arrow_type *t, const struct ArrowArray *a,
                                           int64_t i, char *buf, size_t cap, int *is_null);

#ifdef __cplusplus
}
#endif
#endif
