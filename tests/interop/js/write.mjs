// Writes every interop file into DIR with apache-arrow (stream and file, uncompressed, LZ4_FRAME, ZSTD).
// Usage: node write.mjs DIR
import * as arrow from 'apache-arrow';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import './codecs.mjs';
import { COLUMNS, CASES, FORMATS, CODECS, fileName, isNull, value } from './spec.mjs';

const CODEC_TYPE = { none: null, lz4: arrow.CompressionType.LZ4_FRAME, zstd: arrow.CompressionType.ZSTD };
const WRITER = { stream: arrow.RecordBatchStreamWriter, file: arrow.RecordBatchFileWriter };

function makeSchema(caseName) {
    const fields = COLUMNS.map((column) => new arrow.Field(column.name, column.type(), column.nullable));
    return new arrow.Schema(fields, new Map([['interop.case', caseName], ['interop.writer', 'apache-arrow']]));
}

function makeColumn(c, type, b, n) {
    const column = COLUMNS[c];
    if (column.kind === 'null') return arrow.makeData({ type, length: n });
    const nullBitmap = new Uint8Array((n + 7) >> 3);
    let nullCount = 0;
    for (let r = 0; r < n; r++) {
        if (isNull(c, b, r)) nullCount++;
        else nullBitmap[r >> 3] |= 1 << (r & 7);
    }
    const base = { type, length: n, nullCount, nullBitmap };
    switch (column.kind) {
    case 'bool': {
        const data = new Uint8Array((n + 7) >> 3);
        for (let r = 0; r < n; r++) if (!isNull(c, b, r) && value(c, b, r)) data[r >> 3] |= 1 << (r & 7);
        return arrow.makeData({ ...base, data });
    }
    case 'int': case 'float': case 'date32': case 'timestamp': {
        const data = new type.ArrayType(n);
        for (let r = 0; r < n; r++) if (!isNull(c, b, r)) data[r] = value(c, b, r);
        return arrow.makeData({ ...base, data });
    }
    case 'fsb': {
        const data = new Uint8Array(n * column.width);
        for (let r = 0; r < n; r++) if (!isNull(c, b, r)) data.set(value(c, b, r), r * column.width);
        return arrow.makeData({ ...base, data });
    }
    default: {
        const large = column.kind === 'large_utf8' || column.kind === 'large_binary';
        const valueOffsets = large ? new BigInt64Array(n + 1) : new Int32Array(n + 1);
        const parts = [];
        let size = 0;
        for (let r = 0; r < n; r++) {
            if (!isNull(c, b, r)) {
                parts.push(value(c, b, r));
                size += value(c, b, r).length;
            }
            valueOffsets[r + 1] = large ? BigInt(size) : size;
        }
        const data = new Uint8Array(size);
        let at = 0;
        for (const p of parts) {
            data.set(p, at);
            at += p.length;
        }
        return arrow.makeData({ ...base, valueOffsets, data });
    }
    }
}

// A start > 0 slices each column; a sliced Null column is rebuilt instead, because apache-arrow
// 21 writes the sliced one's null_count as -1 (unknown) into the IPC field node.
function makeBatch(schema, [b, start, length]) {
    const n = start + length;
    const children = COLUMNS.map((column, c) => {
        const data = makeColumn(c, schema.fields[c].type, b, n);
        if (start === 0) return data;
        return column.kind === 'null' ? arrow.makeData({ type: data.type, length }) : data.slice(start, length);
    });
    const struct = arrow.makeData({ type: new arrow.Struct(schema.fields), length, nullCount: 0, children });
    return new arrow.RecordBatch(schema, struct);
}

// apache-arrow 21.2.0 writes the compressed length, not the uncompressed one, into the 8-byte prefix
// of each compressed body buffer (fixed upstream by apache/arrow-js#470, not yet released). This
// rewrites those prefixes as the spec has them and returns how many it rewrote (0 once fixed).
function fixCompressedPrefixes(bytes, fmt) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let pos = fmt === 'file' ? 8 : 0;
    const end = fmt === 'file' ? bytes.length - 10 - view.getInt32(bytes.length - 10, true) : bytes.length;
    let fixed = 0;
    while (pos + 8 <= end) {
        const metaLen = view.getInt32(pos + 4, true);
        if (metaLen === 0) break;
        const message = arrow.Message.decode(bytes.subarray(pos + 8, pos + 8 + metaLen));
        const bodyStart = pos + 8 + metaLen;
        const compression = message.isRecordBatch() ? message.header().compression : null;
        if (compression) {
            const codec = arrow.compressionRegistry.get(compression.type);
            for (const region of message.header().buffers) {
                if (region.length <= 8) continue;
                const at = bodyStart + region.offset;
                const stated = view.getBigInt64(at, true);
                if (stated === -1n) continue;
                const size = BigInt(codec.decode(bytes.subarray(at + 8, at + region.length)).length);
                if (size !== stated) {
                    view.setBigInt64(at, size, true);
                    fixed++;
                }
            }
        }
        pos = bodyStart + Number(message.bodyLength);
    }
    return fixed;
}

function main() {
    const [dir] = process.argv.slice(2);
    if (!dir) {
        console.error('usage: node write.mjs DIR');
        process.exit(2);
    }
    mkdirSync(dir, { recursive: true });
    let files = 0;
    let fixed = 0;
    for (const caseSpec of CASES) {
        const schema = makeSchema(caseSpec.name);
        for (const fmt of FORMATS) {
            for (const codec of CODECS) {
                const writer = new WRITER[fmt]({ compressionType: CODEC_TYPE[codec] });
                writer.reset(undefined, schema);
                for (const spec of caseSpec.batches) writer.write(makeBatch(schema, spec));
                writer.finish();
                const bytes = writer.toUint8Array(true);
                fixed += fixCompressedPrefixes(bytes, fmt);
                writeFileSync(join(dir, fileName(caseSpec.name, fmt, codec)), bytes);
                files++;
            }
        }
    }
    console.log(`apache-arrow wrote ${files} files into ${dir}`);
    if (fixed > 0) {
        console.log(`(rewrote ${fixed} compressed-buffer length prefixes that hold the compressed instead of ` +
                    'the uncompressed length: apache/arrow-js#470)');
    }
}

main();
