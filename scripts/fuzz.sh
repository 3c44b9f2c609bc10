#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, coverage on the whole library) and runs
# each for N seconds on its committed corpus (new inputs go to the build directory, never into the
# tree). A crash leaves its input under <build>/fuzz-<target>/artifacts/ and fails the script.
# Usage: scripts/fuzz.sh [seconds=60] [target...=ipc]; MARBLE_FUZZ_BUILD overrides the build dir,
# MARBLE_FUZZ_JOBS runs that many fuzzing processes in parallel.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(ipc)
build=${MARBLE_FUZZ_BUILD:-$root/build-fuzz}
jobs=${MARBLE_FUZZ_JOBS:-1}

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMARBLE_SANITIZE=address -DMARBLE_FUZZ=ON \
    -DMARBLE_BENCH=OFF -DMARBLE_WERROR=OFF >/dev/null

status=0
for t in "${targets[@]}"; do
    cmake --build "$build" --target "fuzz_$t"
    work="$build/fuzz-$t"
    mkdir -p "$work/corpus" "$work/artifacts"
    echo "fuzz_$t: ${seconds}s, corpus $root/tests/fuzz/corpus/$t, artifacts $work/artifacts"
    parallel=()
    [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
    if ! (cd "$work" && "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 ${parallel[@]+"${parallel[@]}"} \
        -artifact_prefix="$work/artifacts/" "$work/corpus" "$root/tests/fuzz/corpus/$t"); then
        echo "fuzz_$t FAILED; reproduce with: $build/tests/fuzz/fuzz_$t <artifact>" >&2
        ls -l "$work/artifacts" >&2 || true
        status=1
    fi
done
exit $status
