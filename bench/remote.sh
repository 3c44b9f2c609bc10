#!/usr/bin/env bash
# Runs `marble-bench remote` against servers on 127.0.0.1: nginx (Debian nginx-light) serving a
# file of --size-mb random bytes (default 64) and s3rver (the npm package pinned in
# tests/remote/package-lock.json) with the bucket "bench". Both are started here on free ports
# under a private temporary directory and stopped on exit; the exit status is the bench's.
# Usage: bench/remote.sh [marble-bench remote options...]   (e.g. --json, --size-mb 16)
# MARBLE_BENCH names the binary (default build/marble-bench).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=${MARBLE_BENCH:-$root/build/marble-bench}
nginx=/usr/sbin/nginx
remote_dir=$root/tests/remote

die() {
  echo "remote.sh: $*" >&2
  exit 1
}

[ -x "$bench" ] || die "$bench is not built (make release, or set MARBLE_BENCH)"
[ -x "$nginx" ] || die "$nginx is missing: run scripts/deps.sh (installs nginx-light)"
command -v node >/dev/null 2>&1 || die "node is not installed: run scripts/deps.sh"
command -v npm >/dev/null 2>&1 || die "npm is not installed: run scripts/deps.sh"

size_mb=64
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
  --size-mb) size_mb=${args[i + 1]:-} ;;
  --size-mb=*) size_mb=${args[i]#--size-mb=} ;;
  esac
done
[[ $size_mb =~ ^[0-9]+$ ]] && [ "$size_mb" -ge 1 ] || die "--size-mb wants a positive number, not '$size_mb'"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/marble-remote-bench.XXXXXX") || die "mktemp failed"
nginx_pid= s3_pid=
stop() {
  local pid
  for pid in $nginx_pid $s3_pid; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in $nginx_pid $s3_pid; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap stop EXIT
trap 'exit 130' INT TERM

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# wait_port PORT PID: until 127.0.0.1:PORT accepts connections (20 s), or PID exits.
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# The file.
mkdir -p "$tmp/www" "$tmp/nginx/tmp" "$tmp/s3rver/data"
head -c "$((size_mb * 1048576))" /dev/urandom >"$tmp/www/file" || die "cannot write the test file"

# nginx: private prefix, one process in the foreground, logs inside the prefix.
for attempt in 1 2 3 4 5; do
  port=$(free_port)
  cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  default_type application/octet-stream;
  client_body_temp_path $tmp/nginx/tmp/body;
  proxy_temp_path $tmp/nginx/tmp/proxy;
  fastcgi_temp_path $tmp/nginx/tmp/fastcgi;
  uwsgi_temp_path $tmp/nginx/tmp/uwsgi;
  scgi_temp_path $tmp/nginx/tmp/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    root $tmp/www;
  }
}
EOF
  "$nginx" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e stderr >"$tmp/nginx/server.log" 2>&1 &
  nginx_pid=$!
  if wait_port "$port" "$nginx_pid"; then break; fi
  kill -KILL "$nginx_pid" 2>/dev/null
  wait "$nginx_pid" 2>/dev/null
  nginx_pid=
done
[ -n "$nginx_pid" ] || die "nginx did not start: $(cat "$tmp/nginx/server.log")"
http_port=$port

# s3rver: npm ci once per package-lock.json (flock: parallel runs and the tests install once).
want=$(sha256sum "$remote_dir/package-lock.json" | cut -d' ' -f1)
stamp="$remote_dir/node_modules/.marble-package-lock.sha256"
(
  flock 9
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if ! (cd "$remote_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$tmp/npm-ci.log" 2>&1; then
      cat "$tmp/npm-ci.log" >&2
      exit 1
    fi
    echo "$want" >"$stamp"
  fi
) 9<"$remote_dir/package-lock.json" || die "npm ci failed in $remote_dir (is the npm registry reachable?)"

for attempt in 1 2 3; do
  port=$(free_port)
  # --openssl-legacy-provider: s3rver 3.7.1's ListObjectsV2 tokens need OpenSSL 3's legacy cipher.
  node --openssl-legacy-provider "$remote_dir/node_modules/s3rver/bin/s3rver.js" -s \
    -a 127.0.0.1 -p "$port" -d "$tmp/s3rver/data" --configure-bucket bench \
    >"$tmp/s3rver/server.log" 2>&1 &
  s3_pid=$!
  if wait_port "$port" "$s3_pid"; then break; fi
  kill -KILL "$s3_pid" 2>/dev/null
  wait "$s3_pid" 2>/dev/null
  s3_pid=
done
[ -n "$s3_pid" ] || die "s3rver did not start: $(cat "$tmp/s3rver/server.log")"
s3_port=$port

"$bench" remote --http "http://127.0.0.1:$http_port/file" \
  --s3-endpoint "http://127.0.0.1:$s3_port" --s3-bucket bench "$@"
