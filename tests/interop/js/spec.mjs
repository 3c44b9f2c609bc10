// The interop data set: columns, value tables, cases and the value generator (mirrors interop_tool.c).
import * as arrow from 'apache-arrow';
import { readFileSync } from 'node:fs';

const I64_MAX = 9223372036854775807n;
const I64_MIN = -9223372036854775808n;
const U64_MAX = 18446744073709551615n;

const INT8 = [0, 1, -1, 127, -128, 42, -100];
const INT16 = [0, 1, -1, 32767, -32768, 1234, -4321];
const INT32 = [0, 1, -1, 2147483647, -2147483648, 123456789, -987654321];
const INT64 = [0n, 1n, -1n, I64_MAX, I64_MIN, 9007199254740993n, -1234567890123456789n];
const UINT8 = [0, 1, 255, 128, 127, 200];
const UINT16 = [0, 1, 65535, 32768, 12345];
const UINT32 = [0, 1, 4294967295, 2147483648, 3000000000];
const UINT64 = [0n, 1n, U64_MAX, 9223372036854775808n, 9007199254740993n, 18446744073709551557n];
const FLOAT32 = [0, -0, 1.5, -2.25, Infinity, -Infinity, NaN, 3.4028234663852886e38,
                 1.401298464324817e-45, Math.fround(0.1)];
const FLOAT64 = [0, -0, 1.5, -1e300, Infinity, -Infinity, NaN, 1.7976931348623157e308, 5e-324, 0.1,
                 -123.456];
const BOOL = [0, 1, 1, 0, 1, 0, 0];
const UTF8 = ['', 'a', 'h\u00e9llo', '\u65e5\u672c\u8a9e', '\u{1F600}', '\u00fc\u20ac\u{1D11E}',
              'line\nbreak\ttab', 'the quick brown fox jumps over the lazy dog'];
const BINARY = [[], [0x00], [0x00, 0x01, 0x02, 0xff], [0x61, 0x62, 0x63], [0xff, 0xfe, 0xfd, 0x00, 0x00],
                [0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe]];
const FSB3 = [[0, 0, 0], [0x61, 0x62, 0x63], [0xff, 0x00, 0x7f], [0x80, 0x81, 0x82], [0x78, 0x79, 0x7a]];
const FSB16 = [Array.from({ length: 16 }, (_, i) => i), Array(16).fill(0xff), Array(16).fill(0),
               Array.from('0123456789abcdef', (ch) => ch.charCodeAt(0))];
const DATE32 = [0, 1, -1, 19000, -719162, 2932896, 11016];
const TS = [0n, 1n, -1n, 1700000000n, 1700000000123n, 1700000000123456789n, I64_MAX, I64_MIN, -86400n];

const enc = new TextEncoder();
const bytesOf = (rows) => rows.map((r) => Uint8Array.from(r));
const utf8Bytes = UTF8.map((s) => enc.encode(s));

// kind: how values are stored and compared; format: the C Data Interface format Marble must report;
// type(): the apache-arrow type; table: the values the generator cycles through.
function col(name, format, kind, table, type, extra = {}) {
    return { name, format, kind, table, type, nullable: true, ...extra };
}
const ts = (unit, tz) => () => new arrow.Timestamp(unit, tz);

export const COLUMNS = [
    col('null', 'n', 'null', [null], () => new arrow.Null()),
    col('bool', 'b', 'bool', BOOL, () => new arrow.Bool()),
    col('int8', 'c', 'int', INT8, () => new arrow.Int8(), { bits: 8, signed: true }),
    col('int16', 's', 'int', INT16, () => new arrow.Int16(), { bits: 16, signed: true }),
    col('int32', 'i', 'int', INT32, () => new arrow.Int32(), { bits: 32, signed: true }),
    col('int64', 'l', 'int', INT64, () => new arrow.Int64(), { bits: 64, signed: true }),
    col('uint8', 'C', 'int', UINT8, () => new arrow.Uint8(), { bits: 8, signed: false }),
    col('uint16', 'S', 'int', UINT16, () => new arrow.Uint16(), { bits: 16, signed: false }),
    col('uint32', 'I', 'int', UINT32, () => new arrow.Uint32(), { bits: 32, signed: false }),
    col('uint64', 'L', 'int', UINT64, () => new arrow.Uint64(), { bits: 64, signed: false }),
    col('float32', 'f', 'float', FLOAT32, () => new arrow.Float32(), { bits: 32 }),
    col('float64', 'g', 'float', FLOAT64, () => new arrow.Float64(), { bits: 64 }),
    col('utf8_\u00e9', 'u', 'utf8', utf8Bytes, () => new arrow.Utf8(), { strings: UTF8 }),
    col('large_utf8', 'U', 'large_utf8', utf8Bytes, () => new arrow.LargeUtf8(), { strings: UTF8 }),
    col('binary', 'z', 'binary', bytesOf(BINARY), () => new arrow.Binary()),
    col('large_binary', 'Z', 'large_binary', bytesOf(BINARY), () => new arrow.LargeBinary()),
    col('fsb3', 'w:3', 'fsb', bytesOf(FSB3), () => new arrow.FixedSizeBinary(3), { width: 3 }),
    col('date32', 'tdD', 'date32', DATE32, () => new arrow.DateDay()),
    col('ts_s', 'tss:', 'timestamp', TS, ts(arrow.TimeUnit.SECOND, null), { unit: 'SECOND', tz: null }),
    col('ts_ms', 'tsm:', 'timestamp', TS, ts(arrow.TimeUnit.MILLISECOND, null), { unit: 'MILLISECOND', tz: null }),
    col('ts_us', 'tsu:', 'timestamp', TS, ts(arrow.TimeUnit.MICROSECOND, null), { unit: 'MICROSECOND', tz: null }),
    col('ts_ns', 'tsn:', 'timestamp', TS, ts(arrow.TimeUnit.NANOSECOND, null), { unit: 'NANOSECOND', tz: null }),
    col('ts_s_utc', 'tss:UTC', 'timestamp', TS, ts(arrow.TimeUnit.SECOND, 'UTC'), { unit: 'SECOND', tz: 'UTC' }),
    col('ts_ms_paris', 'tsm:Europe/Paris', 'timestamp', TS, ts(arrow.TimeUnit.MILLISECOND, 'Europe/Paris'),
        { unit: 'MILLISECOND', tz: 'Europe/Paris' }),
    col('ts_us_offset', 'tsu:+05:30', 'timestamp', TS, ts(arrow.TimeUnit.MICROSECOND, '+05:30'),
        { unit: 'MICROSECOND', tz: '+05:30' }),
    col('ts_ns_ny', 'tsn:America/New_York', 'timestamp', TS, ts(arrow.TimeUnit.NANOSECOND, 'America/New_York'),
        { unit: 'NANOSECOND', tz: 'America/New_York' }),
    col('int32_required', 'i', 'int', INT32, () => new arrow.Int32(), { bits: 32, signed: true, nullable: false }),
    col('fsb16', 'w:16', 'fsb', bytesOf(FSB16), () => new arrow.FixedSizeBinary(16), { width: 16 }),
];

// A case is a list of batches; batch [b, start, length] holds generator rows start .. start+length-1
// of batch index b (a start > 0 makes the writer slice a larger batch). `alignment` is Marble's
// buffer alignment option (apache-arrow always aligns to 8); Marble's files must honour it.
export const CASES = [
    { name: 'types', batches: [[0, 0, 9], [1, 0, 0], [2, 0, 1], [3, 0, 700], [4, 0, 64]] },
    { name: 'no_batches', batches: [] },
    { name: 'one_empty', batches: [[0, 0, 0]] },
    { name: 'sliced', batches: [[0, 7, 43], [5, 13, 100]] },
    { name: 'aligned64', batches: [[6, 0, 33], [1, 0, 0], [7, 0, 150]], alignment: 64 },
];

export const FORMATS = ['stream', 'file'];
export const CODECS = ['none', 'lz4', 'zstd'];
export const fileName = (c, fmt, codec) => `${c}.${fmt}.${codec}.arrow`;

export function isNull(c, b, r) {
    const column = COLUMNS[c];
    if (column.kind === 'null') return true;
    if (!column.nullable) return false;
    return (r * 3 + b + c) % 7 === 2 || (b === 4 && c % 3 === 0);
}

export const valueIndex = (c, b, r) => (r + 3 * b + c) % COLUMNS[c].table.length;
export const value = (c, b, r) => COLUMNS[c].table[valueIndex(c, b, r)];

export const arrowVersion = () =>
    JSON.parse(readFileSync(new URL('../node_modules/apache-arrow/package.json', import.meta.url))).version;
