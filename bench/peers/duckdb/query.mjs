// The DuckDB peer of `marble-bench query` (bench/query_bench.c spawns it): builds the same table
// in an in-memory DuckDB with SQL over range(), warms it, times the same four queries (best of
// --reps after one warm-up run) and prints one JSON line per query and one for the load, with
// the same checksums marble-bench computes (bench/bench_query.h defines the data and them).
//
//   node query.mjs --rows N [--reps R] [--lookups L]
//
// Exit status 0, or 1 with a line on stderr.
import { DuckDBInstance } from '@duckdb/node-api';

const VMUL = 2654435761n;
const VMOD = 1000003n;
const LOOKUP_MUL = 2654435761n;
const LOOKUP_ADD = 12345n;

function parseArgs(argv) {
  const o = { rows: 10000000n, reps: 3, lookups: 1000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    if (a === '--rows' && v !== undefined && /^[0-9]+$/.test(v) && BigInt(v) > 0n) o.rows = BigInt(v);
    else if (a === '--reps' && v !== undefined && /^[0-9]+$/.test(v) && +v > 0) o.reps = +v;
    else if (a === '--lookups' && v !== undefined && /^[0-9]+$/.test(v)) o.lookups = +v;
    else throw new Error(`bad argument '${a}' (--rows N, --reps R, --lookups L)`);
    i++;
  }
  return o;
}

const big = (x) => (typeof x === 'bigint' ? x : BigInt(x));
const vScaled = (v) => BigInt(v * 1048576); // exact: v is a multiple of 2^-20 below 1

function strsum(s) {
  let t = 0n;
  const b = Buffer.from(s, 'utf8');
  for (let i = 0; i < b.length; i++) t += BigInt(i + 1) * BigInt(b[i]);
  return t;
}

async function timed(fn, reps) {
  await fn(); // warm-up
  let best = Infinity, out;
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    out = await fn();
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (s < best) best = s;
  }
  return { seconds: best, ...out };
}

function line(o) {
  const parts = Object.entries(o).map(([k, v]) => {
    if (typeof v === 'string') return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    if (typeof v === 'bigint') return `${JSON.stringify(k)}:"${v}"`;
    return `${JSON.stringify(k)}:${Number.isInteger(v) ? v : v.toPrecision(6)}`;
  });
  process.stdout.write(`{${parts.join(',')}}\n`);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const inst = await DuckDBInstance.create(':memory:');
  const con = await inst.connect();
  const threads = (await con.runAndReadAll("SELECT current_setting('threads')")).getRows()[0][0];

  let t0 = process.hrtime.bigint();
  await con.run('CREATE TABLE t (id BIGINT PRIMARY KEY, k BIGINT, v DOUBLE, s VARCHAR)');
  await con.run(
    `INSERT INTO t SELECT range, range % 1000, ` +
      `CAST((range * ${VMUL}) % ${VMOD} AS DOUBLE) / CAST(1048576 AS DOUBLE), ` +
      `'u' || CAST(range % 9973 AS VARCHAR) FROM range(0, ${o.rows})`);
  const load = Number(process.hrtime.bigint() - t0) / 1e9;
  line({ engine: 'duckdb', phase: 'load', rows: Number(o.rows), seconds: load, threads: Number(threads) });

  const one = async (sql) => (await con.runAndReadAll(sql)).getRows();

  const queries = [
    ['sum', 'SELECT sum(v) FROM t', async () => {
      const r = await one('SELECT sum(v) FROM t');
      return { result_rows: r.length, checksum: vScaled(r[0][0]) };
    }],
    ['count_where', 'SELECT count(*) FROM t WHERE v > 0.9', async () => {
      const r = await one('SELECT count(*) FROM t WHERE v > 0.9');
      return { result_rows: r.length, checksum: big(r[0][0]) };
    }],
    ['group_by', 'SELECT k, sum(v), count(*) FROM t WHERE id % 7 = 3 GROUP BY k', async () => {
      const r = await one('SELECT k, sum(v), count(*) FROM t WHERE id % 7 = 3 GROUP BY k');
      let c = 0n;
      for (const [k, sv, n] of r) c += (big(k) + 1n) * (31n * vScaled(sv) + big(n));
      return { result_rows: r.length, checksum: c };
    }],
  ];
  for (const [name, sql, fn] of queries) {
    const res = await timed(fn, o.reps);
    line({ engine: 'duckdb', query: name, sql, rows: Number(o.rows), seconds: res.seconds,
           result_rows: res.result_rows, checksum: res.checksum });
  }

  const ps = await con.prepare('SELECT * FROM t WHERE id = $1');
  const ids = [];
  for (let j = 0n; j < BigInt(o.lookups); j++) ids.push((j * LOOKUP_MUL + LOOKUP_ADD) % o.rows);
  const lookups = async () => {
    let c = 0n, found = 0;
    for (const id of ids) {
      ps.bindBigInt(1, id);
      const rows = (await ps.runAndReadAll()).getRows();
      for (const [rid, k, v, s] of rows) {
        c += big(rid) + 3n * big(k) + 7n * vScaled(v) + 11n * strsum(s);
        found++;
      }
    }
    return { result_rows: found, checksum: c };
  };
  const res = await timed(lookups, o.reps);
  line({ engine: 'duckdb', query: 'point_lookups', sql: 'SELECT * FROM t WHERE id = ?',
         rows: Number(o.rows), lookups: o.lookups, seconds: res.seconds,
         result_rows: res.result_rows, checksum: res.checksum });
  con.closeSync();
}

main().catch((e) => {
  process.stderr.write(`duckdb peer: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
