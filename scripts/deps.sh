#!/usr/bin/env bash
# Installs every build and test dependency of Marble that is missing, from Debian packages.
# Idempotent and silent when everything is present. Needs root (or sudo) only when something is missing.
set -euo pipefail

pkgs=(
  cmake ninja-build gcc g++ make pkg-config
  libxxhash-dev   # fast hashing (src/base/hash.c)
  libzstd-dev liblz4-dev zlib1g-dev  # compression (src/vfs/compress.c, Arrow IPC bodies)
  liburing-dev    # io_uring async reads (src/vfs/uring_linux.c)
  libcurl4-openssl-dev  # HTTP(S) and S3 backends (src/vfs/http.c, src/vfs/s3.c)
  libxml2-dev     # S3 XML responses (src/vfs/s3.c)
  nginx-light     # test server for the HTTP backend (started on 127.0.0.1 by tests/remote)
  tmux            # tests/cli/tmux.sh drives the marble command in a terminal
  libtbb-dev      # oneTBB: benchmark peer only (bench/peers/tbb_sched.cpp)
  librocksdb-dev libleveldb-dev  # benchmark peers only (bench/peers/rocksdb_db.c, leveldb_db.c)
  clang libclang-rt-14-dev  # libFuzzer for scripts/fuzz.sh (tests/fuzz)
)

# Node.js >= 18 and npm for tests/interop (apache-arrow JS), checked by command rather than by
# package: NodeSource's nodejs bundles npm and conflicts with Debian's npm package.
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "deps.sh: missing packages (${missing[*]}) and not root; install them with apt-get" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
