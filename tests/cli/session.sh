#!/usr/bin/env bash
# A whole session with the marble command, as a person would type it: create, put, get, scan
# in every format, export and import (Arrow and CSV, plain and compressed, malformed CSV),
# delete, compact, stats, check (and check finding a corrupted SSTable), dump, and the exit
# codes of usage errors and missing databases. Usage: session.sh MARBLE_BINARY WORKDIR
set -uo pipefail
M=$(realpath "$1")
W=$2
rm -rf "$W" && mkdir -p "$W" && cd "$W" || exit 1
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# expect RC CMD...: runs CMD, stdout to out.txt, stderr to err.txt, and checks its exit status
expect() {
  local want=$1; shift
  "$@" >out.txt 2>err.txt
  local rc=$?
  if [ "$rc" != "$want" ]; then
    fail "'$*' exited $rc, expected $want"; sed 's/^/  out: /' out.txt; sed 's/^/  err: /' err.txt
  fi
}
has() { grep -qF -- "$1" "${2:-out.txt}" || { fail "expected '$1' in ${2:-out.txt}:"; cat "${2:-out.txt}" >&2; }; }

S='id:int64,name:utf8,v:float64'
expect 0 "$M" create db orders --schema "$S" --key id
has "created table orders"
expect 0 "$M" put db orders id=1 name='blue chair' v=129.5
expect 0 "$M" put db orders id=2 'name=a,"quoted"'
expect 0 "$M" put db orders id=3 name=ZZCORRUPTMEZZ v=-2.25
for i in $(seq 10 40); do "$M" put db orders id=$i name=row$i v=$i.5 || fail "put $i"; done
expect 0 "$M" tables db
has orders
expect 0 "$M" describe db orders
has "primary key: (id)"; has float64

# get: typed keys, formats, missing rows
expect 0 "$M" get db orders 1 --format csv
has "1,blue chair,129.5"
expect 0 "$M" get db orders 1 --format json
has '{"id":1,"name":"blue chair","v":129.5}'
expect 1 "$M" get db orders 99
has "no row with key 99" err.txt
expect 2 "$M" get db orders notanumber
has "not a valid int64" err.txt

# scan: table, csv (quoting, nulls), json, ranges, projection, limit
expect 0 "$M" scan db orders --format table
has "blue chair"; has "(34 rows)"; has "NULL"
expect 0 "$M" scan db orders --format csv
has 'id,name,v'; has '2,"a,""quoted""",'; head -1 out.txt | grep -qx 'id,name,v' || fail "csv header"
[ "$(wc -l <out.txt)" = 35 ] || fail "csv scan has $(wc -l <out.txt) lines, expected 35"
expect 0 "$M" scan db orders --format json
has '{"id":2,"name":"a,\"quoted\"","v":null}'
expect 0 "$M" scan db orders --from 10 --to 12 --columns id,v --format csv
[ "$(cat out.txt | tr '\n' ' ')" = "id,v 10,10.5 11,11.5 12,12.5 " ] || { fail "range scan"; cat out.txt; }
expect 0 "$M" scan db orders --limit 2 --format csv
[ "$(wc -l <out.txt)" = 3 ] || fail "--limit 2"
expect 0 "$M" scan db orders --format arrow
cp out.txt piped.arrows
expect 0 "$M" dump piped.arrows --format csv
[ "$(wc -l <out.txt)" = 35 ] || fail "scan --format arrow | dump"
# scan prints values as export writes them: long binary whole (hex), timestamps in ISO 8601
expect 0 "$M" create db bins --schema 'id:int64,b:binary,t:timestamp[us, tz=UTC]' --key id
long=$(head -c 3000 /dev/zero | tr '\0' 'x')
expect 0 "$M" put db bins id=1 "b=$long" t=1000000
expect 0 "$M" scan db bins --format csv
cp out.txt bins-scan.csv
[ "$(sed -n 2p bins-scan.csv | cut -d, -f2 | wc -c)" = 6001 ] || fail "binary value cut in scan output"
has "1970-01-01T00:00:01"
expect 0 "$M" export db bins bins-export.csv
cmp -s bins-scan.csv bins-export.csv || fail "scan --format csv differs from export .csv for binary/timestamp"
# scan --where and query: filters, aggregates, ordering, errors with positions
expect 0 "$M" scan db orders --where 'v > 30 AND id < 33 AND id > 1' --columns id,v --format csv
[ "$(cat out.txt | tr '\n' ' ')" = "id,v 30,30.5 31,31.5 32,32.5 " ] || { fail "scan --where"; cat out.txt; }
expect 0 "$M" scan db orders --where 'v IS NULL' --format csv
[ "$(cat out.txt | tr '\n' ' ')" = 'id,name,v 2,"a,""quoted""", ' ] || { fail "scan --where IS NULL"; cat out.txt; }
expect 2 "$M" scan db orders --where 'v >'
has "expected" err.txt
expect 2 "$M" scan db orders --where 'nosuch = 1'
has "nosuch" err.txt
expect 0 "$M" query db 'SELECT count(*) AS n, sum(v) AS total, min(id), max(id) FROM orders WHERE id >= 10' --format csv
[ "$(cat out.txt | tr '\n' ' ')" = "n,total,min(id),max(id) 31,790.5,10,40 " ] || { fail "query aggregate"; cat out.txt; }
expect 0 "$M" query db 'SELECT id % 3 AS g, count(*) AS n FROM orders WHERE id >= 10 GROUP BY id % 3 ORDER BY g' --format csv
[ "$(cat out.txt | tr '\n' ' ')" = "g,n 0,10 1,11 2,10 " ] || { fail "query group by"; cat out.txt; }
expect 0 "$M" query db 'SELECT id, name FROM orders ORDER BY v DESC LIMIT 2' --format csv
[ "$(cat out.txt | tr '\n' ' ')" = "id,name 1,blue chair 40,row40 " ] || { fail "query order by"; cat out.txt; }
expect 0 "$M" query db 'SELECT * FROM orders WHERE id = 12' --explain
has "point lookup"
expect 2 "$M" query db 'SELECT id FORM orders'
has "expected" err.txt
expect 2 "$M" query db 'SELECT a.id FROM orders a JOIN orders b ON a.id = b.id'
has "not supported" err.txt
expect 2 "$M" query db 'SELECT id FROM nosuch'
has "nosuch" err.txt

# export and import
expect 0 "$M" export db orders out.arrow
expect 0 "$M" export db orders out.csv
expect 0 "$M" export db orders out.arrow.zst
expect 0 "$M" export db orders out.arrows --format arrows
head -c 6 out.arrow | grep -q ARROW1 || fail "out.arrow is not an Arrow IPC file"
head -c 4 out.arrow.zst | od -An -tx1 | grep -q '28 b5 2f fd' || fail "out.arrow.zst is not zstd"
"$M" scan db orders --format csv >scan-orders.csv
cmp -s out.csv scan-orders.csv || fail "export .csv differs from scan --format csv"
expect 0 "$M" create db copy --schema "$S" --key id
expect 0 "$M" import db copy out.arrow
has "imported 34 rows" err.txt
"$M" scan db copy --format csv >scan-copy.csv
cmp -s scan-orders.csv scan-copy.csv || fail "imported .arrow scans differently"
expect 0 "$M" create db copyz --schema "$S" --key id
expect 0 "$M" import db copyz out.arrow.zst
expect 0 "$M" import db copyz out.arrows
"$M" scan db copyz --format csv >scan-copyz.csv
cmp -s scan-orders.csv scan-copyz.csv || fail "imported .arrow.zst scans differently"
expect 2 "$M" import db copy out.arrow --skip-bad-rows
has "are for CSV files" err.txt

# CSV import (into another database, so the counts below stay): export -> import -> same scan
expect 0 "$M" create csvdb copycsv --schema "$S" --key id
expect 0 "$M" import csvdb copycsv out.csv
has "imported 34 rows" err.txt; has "skipped 0 bad rows" err.txt
"$M" scan csvdb copycsv --format csv >scan-copycsv.csv
cmp -s scan-orders.csv scan-copycsv.csv || fail "imported .csv scans differently"
expect 0 "$M" export db orders out.csv.zst
expect 0 "$M" export db orders out.csv.gz
expect 0 "$M" create csvdb copycsvz --schema "$S" --key id
expect 0 "$M" import csvdb copycsvz out.csv.zst
has "imported 34 rows" err.txt
"$M" scan csvdb copycsvz --format csv >scan-copycsvz.csv
cmp -s scan-orders.csv scan-copycsvz.csv || fail "imported .csv.zst scans differently"
expect 0 "$M" create csvdb copycsvgz --schema "$S" --key id
expect 0 "$M" import csvdb copycsvgz out.csv.gz
"$M" scan csvdb copycsvgz --format csv >scan-copycsvgz.csv
cmp -s scan-orders.csv scan-copycsvgz.csv || fail "imported .csv.gz scans differently"
# columns matched by header name, CRLF, quoting, --no-header
printf 'v,name,id\r\n1.5,"a,""b""",100\r\n' >byname.csv
expect 0 "$M" import csvdb copycsv byname.csv
expect 0 "$M" get csvdb copycsv 100 --format csv
has '100,"a,""b""",1.5'
printf '101,plain,2.5\n' >nohead.csv
expect 0 "$M" import csvdb copycsv nohead.csv --no-header
has "imported 1 rows" err.txt
# a malformed line: exit 1 naming the line and column; --skip-bad-rows skips and counts it
printf 'id,name,v\n200,ok,1.5\n201,bad,notanumber\n202,"fine, quoted",2\n203,"unterminated,3\n' >bad.csv
expect 0 "$M" create csvdb bad --schema "$S" --key id
expect 1 "$M" import csvdb bad bad.csv
has "bad.csv: line 3, column 3: \"notanumber\" is not a valid float64 (column 'v')" err.txt
expect 0 "$M" import csvdb bad bad.csv --skip-bad-rows
has "imported 2 rows" err.txt
has "skipped 2 bad rows (first: line 3, column 3:" err.txt
expect 0 "$M" scan csvdb bad --format csv
[ "$(cat out.txt | tr '\n' ' ')" = 'id,name,v 200,ok,1.5 202,"fine, quoted",2 ' ] || { fail "csv skip import"; cat out.txt; }

# delete, compact, stats, check
expect 0 "$M" delete db orders 2
expect 1 "$M" get db orders 2
expect 0 "$M" compact db
has "compacted"
expect 0 "$M" stats db
has '"levels"'
expect 0 "$M" stats db --format json
[ "$(wc -l <out.txt)" = 1 ] || fail "stats --format json is not one line"
expect 0 "$M" check db
has "OK: 4 tables, 102 rows"

# dump an SSTable and a WAL segment
sst=$(grep -l ZZCORRUPTMEZZ db/*.arrow | head -1)
[ -n "$sst" ] || fail "no SSTable holds the marker row"
expect 0 "$M" dump "$sst"
has "marble.sst.key = id"; has "_seq"; has "ZZCORRUPTMEZZ"
expect 0 "$M" dump "$sst" --format json
has '"name":"ZZCORRUPTMEZZ"'
expect 0 "$M" put db orders id=50 name=late
wal=$(ls db/wal/*.log | tail -1)
expect 0 "$M" dump "$wal"
has "records"

# corrupt one byte inside a batch of the SSTable: check must report it and exit 1
off=$(grep -obUa ZZCORRUPTMEZZ "$sst" | head -1 | cut -d: -f1)
printf 'Y' | dd of="$sst" bs=1 seek="$((off + 2))" conv=notrunc status=none
expect 1 "$M" check db
has "PROBLEM"; has "table orders"

# usage errors exit 2, failures 1 with a clear message
expect 2 "$M"
expect 2 "$M" nosuchcommand
expect 2 "$M" scan
expect 2 "$M" scan db orders --limit lots
expect 2 "$M" create db t2 --schema 'id:int64'
expect 2 "$M" put db copy name=x
expect 2 "$M" scan db copy --bogus
expect 1 "$M" scan missing.db orders
has "no database at missing.db" err.txt
[ ! -e missing.db ] || fail "a read-only command created missing.db"
expect 1 "$M" tables mem://nothing
expect 1 "$M" describe db nosuchtable
has "does not exist" err.txt
for c in create tables describe put get delete scan import export compact stats check dump; do
  expect 0 "$M" "$c" --help
  has "example" 
done
if [ -t 1 ]; then :; else
  # binary output to a terminal is refused; script(1) gives us a terminal when present
  if command -v script >/dev/null; then
    script -qec "$M scan db copy --format arrow" /dev/null >tty.txt 2>&1
    grep -q "refusing to write binary" tty.txt || fail "arrow to a terminal was not refused"
  fi
fi

if [ $fails -ne 0 ]; then echo "cli session: $fails failure(s)"; exit 1; fi
echo "cli session: ok"
