// Reads every interop file in DIR with apache-arrow and compares framing, schema and every value.
// Usage: node check.mjs DIR WRITER   (WRITER: the expected "interop.writer" metadata value)
import * as arrow from 'apache-arrow';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import './codecs.mjs';
import { COLUMNS, CASES, FORMATS, CODECS, fileName, isNull, valueIndex, arrowVersion } from './spec.mjs';

const MAX_REPORTS = 12;
const CODEC_TYPE = { none: null, lz4: arrow.CompressionType.LZ4_FRAME, zstd: arrow.CompressionType.ZSTD };
const CODEC_MAGIC = {
    [arrow.CompressionType.LZ4_FRAME]: [0x04, 0x22, 0x4d, 0x18],
    [arrow.CompressionType.ZSTD]: [0x28, 0xb5, 0x2f, 0xfd],
};
const ARROW_MAGIC = [0x41, 0x52, 0x52, 0x4f, 0x57, 0x31];

class Failures {
    constructor() { this.lines = []; this.count = 0; }
    add(msg) {
        if (this.count++ < MAX_REPORTS) this.lines.push(msg);
    }
}

const show = (v) => {
    if (v instanceof Uint8Array) {
        const hex = Array.from(v.subarray(0, 16), (x) => x.toString(16).padStart(2, '0')).join(' ');
        return v.length > 16 ? `[${hex} ... (${v.length} bytes)]` : `[${hex}]`;
    }
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'string') return JSON.stringify(v);
    if (Object.is(v, -0)) return '-0';
    return String(v);
};
const bytesEqual = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

function bufferCount(kind) {
    if (kind === 'null') return 0;
    if (['utf8', 'large_utf8', 'binary', 'large_binary'].includes(kind)) return 3;
    return 2;
}

function expectedNullCount(c, b, start, length) {
    let n = 0;
    for (let r = start; r < start + length; r++) n += isNull(c, b, r) ? 1 : 0;
    return n;
}

// Walks the encapsulated messages (continuation, length, flatbuffer, body) and checks framing,
// alignment, field nodes, buffer regions and the body compression of every record batch.
// apache-arrow 21's file writer puts the schema only in the footer, not as the first message after
// the magic as the spec's file layout has it; that is tolerated for files apache-arrow wrote.
function checkFraming(bytes, fmt, codec, caseSpec, writer, fail) {
    const batches = caseSpec.batches;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let pos = 0;
    let end = bytes.length;
    if (fmt === 'file') {
        if (bytes.length < 22 || !ARROW_MAGIC.every((x, i) => bytes[i] === x) || bytes[6] !== 0 || bytes[7] !== 0 ||
            !ARROW_MAGIC.every((x, i) => bytes[bytes.length - 6 + i] === x)) {
            fail.add('file magic: expected "ARROW1\\0\\0" at the start and "ARROW1" at the end');
            return;
        }
        const footerLen = view.getInt32(bytes.length - 10, true);
        end = bytes.length - 10 - footerLen;
        if (footerLen <= 0 || end < 8) {
            fail.add(`file footer length ${footerLen} out of range`);
            return;
        }
        pos = 8;
    } else if (ARROW_MAGIC.every((x, i) => bytes[i] === x)) {
        fail.add('stream starts with the file magic');
        return;
    }
    let sawSchema = false;
    let sawEos = false;
    let batchIndex = 0;
    while (pos < end) {
        if (pos % 8 !== 0) fail.add(`message at byte ${pos} is not 8-byte aligned`);
        if (pos + 8 > end) {
            fail.add(`truncated message prefix at byte ${pos}`);
            return;
        }
        if (view.getUint32(pos, true) !== 0xffffffff) {
            fail.add(`message at byte ${pos}: no 0xFFFFFFFF continuation marker`);
            return;
        }
        const metaLen = view.getInt32(pos + 4, true);
        if (metaLen === 0) {
            sawEos = true;
            pos += 8;
            break;
        }
        if (metaLen < 0 || (8 + metaLen) % 8 !== 0 || pos + 8 + metaLen > end) {
            fail.add(`message at byte ${pos}: metadata length ${metaLen} not a multiple of 8 or out of range`);
            return;
        }
        const message = arrow.Message.decode(bytes.subarray(pos + 8, pos + 8 + metaLen));
        const bodyLength = Number(message.bodyLength);
        if (bodyLength % 8 !== 0) fail.add(`message at byte ${pos}: body length ${bodyLength} not a multiple of 8`);
        if (message.isSchema()) {
            if (sawSchema || batchIndex > 0) fail.add(`unexpected schema message at byte ${pos}`);
            sawSchema = true;
            checkSchema(message.header(), caseSpec.name, writer, fail, 'schema message: ');
        } else if (message.isRecordBatch()) {
            if (!sawSchema && fmt === 'stream') fail.add('record batch before the schema message');
            const body = bytes.subarray(pos + 8 + metaLen, pos + 8 + metaLen + bodyLength);
            const align = writer === 'apache-arrow' ? 8 : caseSpec.alignment || 8;
            checkBatchMessage(message.header(), body, codec, batches[batchIndex], batchIndex, align, fail);
            batchIndex++;
        } else {
            fail.add(`unexpected message type ${message.headerType} at byte ${pos}`);
        }
        pos += 8 + metaLen + bodyLength;
    }
    if (!sawSchema && (fmt === 'stream' || writer !== 'apache-arrow')) fail.add(`${fmt}: no schema message after the magic`);
    if (fmt === 'stream' && (!sawEos || pos !== bytes.length)) {
        fail.add(`stream does not end with the 8-byte end-of-stream marker (stopped at byte ${pos} of ${bytes.length})`);
    }
    if (fmt === 'file' && pos !== end) fail.add(`file: the messages end at byte ${pos}, the footer starts at byte ${end}`);
    if (batchIndex !== batches.length) {
        fail.add(`${batchIndex} record batch messages, expected ${batches.length}`);
    }
}

function checkBatchMessage(header, body, codec, spec, batchIndex, align, fail) {
    if (!spec) return;
    const [b, start, length] = spec;
    const where = `batch ${batchIndex} message`;
    if (header.length !== length) fail.add(`${where}: length ${header.length}, expected ${length}`);
    const compression = header.compression ? header.compression.type : null;
    if (compression !== CODEC_TYPE[codec]) {
        fail.add(`${where}: body compression ${compression === null ? 'none' : arrow.CompressionType[compression]}, expected ${codec}`);
    }
    if (header.nodes.length !== COLUMNS.length) {
        fail.add(`${where}: ${header.nodes.length} field nodes, expected ${COLUMNS.length}`);
        return;
    }
    let buf = 0;
    for (let c = 0; c < COLUMNS.length; c++) {
        const node = header.nodes[c];
        const kind = COLUMNS[c].kind;
        const nulls = expectedNullCount(c, b, start, length);
        if (node.length !== length) fail.add(`${where}: column ${COLUMNS[c].name} field node length ${node.length}, expected ${length}`);
        if (node.nullCount !== nulls) fail.add(`${where}: column ${COLUMNS[c].name} field node null_count ${node.nullCount}, expected ${nulls}`);
        buf += bufferCount(kind);
    }
    if (header.buffers.length !== buf) {
        fail.add(`${where}: ${header.buffers.length} buffers, expected ${buf}`);
        return;
    }
    header.buffers.forEach((region, i) => {
        if (region.length > 0 && region.offset % align !== 0) fail.add(`${where}: buffer ${i} offset ${region.offset} not ${align}-byte aligned`);
        if (region.offset + region.length > body.length) {
            fail.add(`${where}: buffer ${i} [${region.offset}, +${region.length}) past the body (${body.length} bytes)`);
            return;
        }
        if (compression === null || region.length === 0) return;
        if (region.length < 8) {
            fail.add(`${where}: compressed buffer ${i} is ${region.length} bytes, shorter than its 8-byte length prefix`);
            return;
        }
        const dv = new DataView(body.buffer, body.byteOffset + region.offset, region.length);
        const raw = dv.getBigInt64(0, true);
        if (raw === -1n) return;
        const name = arrow.CompressionType[compression];
        if (!CODEC_MAGIC[compression].every((x, k) => region.length > 8 + k && body[region.offset + 8 + k] === x)) {
            fail.add(`${where}: compressed buffer ${i} (uncompressed length ${raw}) does not start with the ${name} frame magic`);
            return;
        }
        try {
            const size = arrow.compressionRegistry.get(compression).decode(body.subarray(region.offset + 8, region.offset + region.length)).length;
            if (BigInt(size) !== raw) fail.add(`${where}: compressed buffer ${i} prefix says ${raw} bytes, the ${name} frame holds ${size}`);
        } catch (e) {
            fail.add(`${where}: compressed buffer ${i}: ${name} decode failed: ${e.message}`);
        }
    });
}

function checkType(column, t) {
    const T = arrow.Type;
    switch (column.kind) {
    case 'null': return t.typeId === T.Null;
    case 'bool': return t.typeId === T.Bool;
    case 'int': return t.typeId === T.Int && t.bitWidth === column.bits && t.isSigned === column.signed;
    case 'float':
        return t.typeId === T.Float && t.precision === (column.bits === 32 ? arrow.Precision.SINGLE : arrow.Precision.DOUBLE);
    case 'utf8': return t.typeId === T.Utf8;
    case 'large_utf8': return t.typeId === T.LargeUtf8;
    case 'binary': return t.typeId === T.Binary;
    case 'large_binary': return t.typeId === T.LargeBinary;
    case 'fsb': return t.typeId === T.FixedSizeBinary && t.byteWidth === column.width;
    case 'date32': return t.typeId === T.Date && t.unit === arrow.DateUnit.DAY;
    case 'timestamp':
        return t.typeId === T.Timestamp && t.unit === arrow.TimeUnit[column.unit] &&
            (column.tz === null ? t.timezone === null || t.timezone === '' || t.timezone === undefined : t.timezone === column.tz);
    default: return false;
    }
}

const ARRAY_TYPE = {
    8: [Int8Array, Uint8Array], 16: [Int16Array, Uint16Array], 32: [Int32Array, Uint32Array],
    64: [BigInt64Array, BigUint64Array],
};

// The stored value of row i from the raw buffers, and the value apache-arrow's accessor returns.
function readValue(column, data, vector, i) {
    const j = data.offset + i;
    switch (column.kind) {
    case 'bool': return { raw: (data.values[j >> 3] >> (j & 7)) & 1, got: vector.get(i) };
    case 'int': {
        const want = ARRAY_TYPE[column.bits][column.signed ? 0 : 1];
        if (!(data.values instanceof want)) return { error: `values are a ${data.values.constructor.name}, expected ${want.name}` };
        return { raw: data.values[j], got: vector.get(i) };
    }
    case 'float': {
        const want = column.bits === 32 ? Float32Array : Float64Array;
        if (!(data.values instanceof want)) return { error: `values are a ${data.values.constructor.name}, expected ${want.name}` };
        return { raw: data.values[j], got: vector.get(i) };
    }
    case 'utf8': case 'large_utf8': case 'binary': case 'large_binary': {
        const lo = Number(data.valueOffsets[j]);
        const hi = Number(data.valueOffsets[j + 1]);
        if (!(lo >= 0 && hi >= lo && hi <= data.values.length)) return { error: `offsets [${lo}, ${hi}) out of range` };
        return { raw: data.values.subarray(lo, hi), got: vector.get(i) };
    }
    case 'fsb': return { raw: data.values.subarray(j * column.width, (j + 1) * column.width), got: vector.get(i) };
    case 'date32':
        if (!(data.values instanceof Int32Array)) return { error: `values are a ${data.values.constructor.name}` };
        return { raw: data.values[j] };
    case 'timestamp':
        if (!(data.values instanceof BigInt64Array)) return { error: `values are a ${data.values.constructor.name}` };
        return { raw: data.values[j] };
    default: return { error: `unknown kind ${column.kind}` };
    }
}

function sameFloat(a, b, bits) {
    if (bits === 32) b = Math.fround(b);
    return Number.isNaN(b) ? Number.isNaN(a) : Object.is(a, b);
}

function compareValue(column, idx, v) {
    const expected = column.table[idx];
    switch (column.kind) {
    case 'bool':
        if (v.raw !== expected) return `bit ${v.raw}`;
        if (v.got !== (expected === 1)) return `get() ${show(v.got)}`;
        return null;
    case 'int':
        if (v.raw !== expected) return show(v.raw);
        if (v.got !== expected) return `get() ${show(v.got)}`;
        return null;
    case 'float':
        if (!sameFloat(v.raw, expected, column.bits)) return show(v.raw);
        if (!sameFloat(v.got, expected, column.bits)) return `get() ${show(v.got)}`;
        return null;
    case 'utf8': case 'large_utf8':
        if (!bytesEqual(v.raw, expected)) return show(v.raw);
        if (v.got !== column.strings[idx]) return `get() ${show(v.got)}`;
        return null;
    case 'binary': case 'large_binary': case 'fsb':
        if (!bytesEqual(v.raw, expected)) return show(v.raw);
        if (!(v.got instanceof Uint8Array) || !bytesEqual(v.got, expected)) return `get() ${show(v.got)}`;
        return null;
    case 'date32': case 'timestamp':
        return v.raw === expected ? null : show(v.raw);
    default: return 'unknown kind';
    }
}

function checkBatch(batch, spec, index, fail) {
    const [b, start, length] = spec;
    if (batch.numRows !== length) fail.add(`batch ${index}: ${batch.numRows} rows, expected ${length}`);
    if (batch.numCols !== COLUMNS.length) {
        fail.add(`batch ${index}: ${batch.numCols} columns, expected ${COLUMNS.length}`);
        return;
    }
    const rows = Math.min(batch.numRows, length);
    COLUMNS.forEach((column, c) => {
        const vector = batch.getChildAt(c);
        if (vector.data.length !== 1) {
            fail.add(`batch ${index} column ${column.name}: ${vector.data.length} chunks`);
            return;
        }
        const data = vector.data[0];
        const nulls = expectedNullCount(c, b, start, length);
        if (data.nullCount !== nulls) {
            fail.add(`batch ${index} column ${column.name}: null_count ${data.nullCount}, expected ${nulls}`);
        }
        if (column.kind === 'null') return;
        const bitmap = data.nullBitmap && data.nullBitmap.length > 0 ? data.nullBitmap : null;
        for (let i = 0; i < rows; i++) {
            const r = start + i;
            const where = `batch ${index} row ${i} column ${column.name}`;
            const j = data.offset + i;
            const valid = bitmap ? ((bitmap[j >> 3] >> (j & 7)) & 1) === 1 : true;
            const wantNull = isNull(c, b, r);
            if (valid === wantNull) {
                fail.add(`${where}: expected ${wantNull ? 'null' : 'a value'}, got ${valid ? 'a value' : 'null'}`);
                continue;
            }
            if (data.getValid(i) !== valid) fail.add(`${where}: getValid() disagrees with the validity bitmap`);
            if (wantNull) continue;
            const idx = valueIndex(c, b, r);
            const v = readValue(column, data, vector, i);
            if (v.error) {
                fail.add(`${where}: ${v.error}`);
                return;
            }
            const bad = compareValue(column, idx, v);
            if (bad !== null) fail.add(`${where}: expected ${show(column.table[idx])}, got ${bad}`);
        }
    });
}

function checkSchema(schema, caseName, writer, fail, where = '') {
    if (schema.fields.length !== COLUMNS.length) {
        fail.add(`${where}schema: ${schema.fields.length} fields, expected ${COLUMNS.length}`);
        return false;
    }
    COLUMNS.forEach((column, c) => {
        const f = schema.fields[c];
        if (f.name !== column.name) fail.add(`${where}field ${c}: name ${show(f.name)}, expected ${show(column.name)}`);
        if (f.nullable !== column.nullable) fail.add(`${where}field ${column.name}: nullable ${f.nullable}, expected ${column.nullable}`);
        if (!checkType(column, f.type)) fail.add(`${where}field ${column.name}: type ${f.type}, expected ${column.type()} (${column.format})`);
    });
    const meta = schema.metadata;
    if (meta.get('interop.case') !== caseName) fail.add(`${where}schema metadata interop.case = ${show(meta.get('interop.case'))}, expected ${show(caseName)}`);
    if (meta.get('interop.writer') !== writer) fail.add(`${where}schema metadata interop.writer = ${show(meta.get('interop.writer'))}, expected ${show(writer)}`);
    return true;
}

function checkFile(path, caseSpec, fmt, codec, writer) {
    const fail = new Failures();
    const bytes = new Uint8Array(readFileSync(path));
    try {
        checkFraming(bytes, fmt, codec, caseSpec, writer, fail);
    } catch (e) {
        fail.add(`framing: ${e && e.message}`);
    }
    try {
        const reader = arrow.RecordBatchReader.from(bytes);
        reader.open();
        if (fmt === 'file' ? !reader.isFile() : !reader.isStream()) fail.add(`apache-arrow does not read it as the ${fmt} format`);
        if (!reader.schema) {
            fail.add('apache-arrow found no schema');
            return fail;
        }
        if (!checkSchema(reader.schema, caseSpec.name, writer, fail)) return fail;
        if (fmt === 'file' && reader.numRecordBatches !== caseSpec.batches.length) {
            fail.add(`footer lists ${reader.numRecordBatches} record batches, expected ${caseSpec.batches.length}`);
        }
        let n = 0;
        for (const batch of reader) {
            if (batch.constructor !== arrow.RecordBatch) continue;
            if (n < caseSpec.batches.length) checkBatch(batch, caseSpec.batches[n], n, fail);
            n++;
        }
        if (n !== caseSpec.batches.length) fail.add(`apache-arrow read ${n} record batches, expected ${caseSpec.batches.length}`);
    } catch (e) {
        fail.add(`apache-arrow failed: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
    }
    return fail;
}

function main() {
    const [dir, writer] = process.argv.slice(2);
    if (!dir || !writer) {
        console.error('usage: node check.mjs DIR WRITER');
        process.exit(2);
    }
    let files = 0;
    let failed = 0;
    for (const caseSpec of CASES) {
        for (const fmt of FORMATS) {
            for (const codec of CODECS) {
                const name = fileName(caseSpec.name, fmt, codec);
                const path = join(dir, name);
                files++;
                if (!existsSync(path)) {
                    failed++;
                    console.log(`FAIL ${name}: missing`);
                    continue;
                }
                const fail = checkFile(path, caseSpec, fmt, codec, writer);
                if (fail.count === 0) {
                    console.log(`ok   ${name}`);
                } else {
                    failed++;
                    console.log(`FAIL ${name}: ${fail.count} problem(s)`);
                    for (const line of fail.lines) console.log(`       ${line}`);
                    if (fail.count > fail.lines.length) console.log(`       ... ${fail.count - fail.lines.length} more`);
                }
            }
        }
    }
    console.log(`apache-arrow ${arrowVersion()} read ${files} files written by ${writer}: ${files - failed} ok, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
}

main();
