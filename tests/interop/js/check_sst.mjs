// Reads the SSTables `marble-interop-tool sst DIR` wrote with apache-arrow: they are Arrow IPC
// files whose index apache-arrow must not see. Checks the schema (table columns + _seq, _op and
// the marble.sst.* metadata), the batch count and every value. The data set is the tool's (see
// cmd_sst in interop_tool.c). Usage: node check_sst.mjs DIR
import * as arrow from 'apache-arrow';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import './codecs.mjs';

const KEYS = 1000;
const BATCH_ROWS = 128;
const COLUMNS = ['id', 'name', 'score', 'day', '_seq', '_op'];

function expectedRows() {
    const rows = [];
    for (let k = 0; k < KEYS; k++) {
        const nv = k % 4 === 0 ? 2 : 1;
        for (let j = 0; j < nv; j++) {
            const del = k % 10 === 5;
            rows.push({
                id: BigInt(3 * k),
                name: del ? null : `name-${k}-${j}`,
                score: del ? null : k / 2 + j,
                day: del ? null : 19000 + k,
                _seq: BigInt(10 * k + (nv - j)),
                _op: del ? 0 : 1,
            });
        }
    }
    return rows;
}

// DateDay values come back as a Date, a number of milliseconds or days depending on the version.
function dayOf(v) {
    if (v === null || v === undefined) return v;
    if (v instanceof Date) return Math.round(v.getTime() / 86400000);
    if (typeof v === 'number' && Math.abs(v) > 1e7) return Math.round(v / 86400000);
    return Number(v);
}

function checkFile(path, want) {
    const errors = [];
    const bytes = new Uint8Array(readFileSync(path));
    const table = arrow.tableFromIPC(bytes);
    const names = table.schema.fields.map((f) => f.name);
    if (JSON.stringify(names) !== JSON.stringify(COLUMNS)) errors.push(`columns ${names}, expected ${COLUMNS}`);
    const meta = table.schema.metadata;
    if (meta.get('marble.sst.version') !== '1') errors.push(`marble.sst.version ${meta.get('marble.sst.version')}`);
    if (meta.get('marble.sst.key') !== 'id') errors.push(`marble.sst.key ${meta.get('marble.sst.key')}`);
    if (table.numRows !== want.length) errors.push(`${table.numRows} rows, expected ${want.length}`);
    const nb = Math.ceil(want.length / BATCH_ROWS);
    if (table.batches.length !== nb) errors.push(`${table.batches.length} batches, expected ${nb}`);
    const reader = arrow.RecordBatchReader.from(bytes);
    reader.open();
    if (!reader.isFile()) errors.push('not read as the file format');
    if (reader.numRecordBatches !== nb) errors.push(`footer lists ${reader.numRecordBatches} batches`);
    const seqType = table.schema.fields[4].type, opType = table.schema.fields[5].type;
    if (!(seqType.typeId === arrow.Type.Int && seqType.bitWidth === 64 && !seqType.isSigned)) errors.push('_seq is not uint64');
    if (!(opType.typeId === arrow.Type.Int && opType.bitWidth === 8 && !opType.isSigned)) errors.push('_op is not uint8');
    const cols = COLUMNS.map((c) => table.getChild(c));
    for (let i = 0; i < Math.min(table.numRows, want.length) && errors.length < 12; i++) {
        const w = want[i];
        const got = {
            id: cols[0].get(i),
            name: cols[1].get(i),
            score: cols[2].get(i),
            day: dayOf(cols[3].get(i)),
            _seq: cols[4].get(i),
            _op: cols[5].get(i),
        };
        for (const c of COLUMNS) {
            const g = got[c] === undefined ? null : got[c];
            if (g !== w[c]) errors.push(`row ${i} column ${c}: ${String(g)}, expected ${String(w[c])}`);
        }
    }
    return errors;
}

const dir = process.argv[2];
if (!dir) {
    console.error('usage: node check_sst.mjs DIR');
    process.exit(2);
}
const want = expectedRows();
let failed = 0;
for (const codec of ['none', 'lz4', 'zstd']) {
    const path = join(dir, `sst-${codec}.sst`);
    let errors;
    try {
        errors = checkFile(path, want);
    } catch (e) {
        errors = [`apache-arrow failed: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`];
    }
    if (errors.length) {
        failed++;
        console.log(`FAIL ${path}`);
        for (const e of errors.slice(0, 12)) console.log(`       ${e}`);
    } else {
        console.log(`ok   ${path} (${want.length} rows)`);
    }
}
console.log(`apache-arrow read 3 SSTables: ${3 - failed} ok, ${failed} failed`);
process.exit(failed ? 1 : 0);
