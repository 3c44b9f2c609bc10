#!/usr/bin/env bash
# package.install: installs a Marble build into a temporary prefix (cmake --install --prefix),
# checks what was installed and what the shared library exports, then builds example.c against
# the installed copy three ways and runs each program:
#   pkg-config (shared), pkg-config --static (libmarble.a), and find_package(marble) from
#   cmake/CMakeLists.txt (marble::marble and marble::marble_static).
# Everything it writes goes under one mktemp -d directory, removed at the end (kept on failure).
#
# Usage: run.sh --build DIR --cmake CMAKE --generator GEN --make-program PROG --cc CC
#               --pkg-config PKGCONF --libdir LIBDIR [--sanitize-flags FLAGS]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build= cmake=cmake generator= make_program= cc=cc pkgconf=pkg-config libdir=lib san=
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2 ;;
    --cmake) cmake=$2 ;;
    --generator) generator=$2 ;;
    --make-program) make_program=$2 ;;
    --cc) cc=$2 ;;
    --pkg-config) pkgconf=$2 ;;
    --libdir) libdir=$2 ;;
    --sanitize-flags) san=$2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
[ -n "$build" ] || { echo "run.sh: --build DIR is required" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/marble-package.XXXXXX")
ok=0
cleanup() {
    if [ $ok = 1 ]; then rm -rf "$tmp"; else echo "package: FAILED; files kept in $tmp" >&2; fi
}
trap cleanup EXIT
fail() { echo "package: $*" >&2; exit 1; }
step() { echo "== $*"; }

prefix=$tmp/prefix
lib=$prefix/$libdir
read -r -a sanflags <<<"$san"
# The headers must compile cleanly in a user's strict build, without the library's own defines.
cflags=(-std=c11 -Wall -Wextra -Wpedantic -Werror -O1 "${sanflags[@]}")

step "install into $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }

step "installed files"
version=$(sed -n 's/^#define MARBLE_VERSION_STRING "\(.*\)"$/\1/p' "$here/../../include/marble/version.h")
major=${version%%.*}
for f in "$lib/libmarble.a" "$lib/libmarble.so.$version" "$prefix/bin/marble" \
    "$lib/pkgconfig/marble.pc" "$lib/cmake/marble/marbleConfig.cmake" \
    "$lib/cmake/marble/marbleConfigVersion.cmake" "$lib/cmake/marble/marbleTargets.cmake"; do
    [ -f "$f" ] || fail "not installed: ${f#"$prefix"/}"
done
[ "$(readlink "$lib/libmarble.so")" = "libmarble.so.$major" ] || fail "libmarble.so is not a link to libmarble.so.$major"
[ "$(readlink "$lib/libmarble.so.$major")" = "libmarble.so.$version" ] || fail "libmarble.so.$major is not a link to libmarble.so.$version"
soname=$(readelf -d "$lib/libmarble.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libmarble.so.$major" ] || fail "SONAME is '$soname', expected libmarble.so.$major"
for h in "$here"/../../include/marble/*.h; do
    cmp -s "$h" "$prefix/include/marble/$(basename "$h")" || fail "header not installed: marble/$(basename "$h")"
done
"$prefix/bin/marble" version | grep -qx "marble $version" || fail "installed marble version does not print $version"

step "exported symbols of libmarble.so"
nm -D --defined-only "$lib/libmarble.so.$version" | awk '{print $NF}' | sort -u >"$tmp/exported"
[ -s "$tmp/exported" ] || fail "libmarble.so exports nothing"
if grep -v '^marble_' "$tmp/exported" >"$tmp/bad" || grep '^marble__' "$tmp/exported" >>"$tmp/bad"; then
    [ ! -s "$tmp/bad" ] || { cat "$tmp/bad" >&2; fail "libmarble.so exports non-public symbols (above)"; }
fi
# Every function the installed headers declare must be exported (a missing MARBLE_API).
echo '#include <marble/marble.h>' | "$cc" -E -P -I"$prefix/include" -x c - |
    grep -oP '\bmarble_\w+(?=\s*\((?!\s*\*))' | sort -u >"$tmp/declared"
comm -23 "$tmp/declared" "$tmp/exported" >"$tmp/unexported"
[ ! -s "$tmp/unexported" ] || { cat "$tmp/unexported" >&2; fail "declared in the headers but not exported (no MARBLE_API?)"; }
echo "$(wc -l <"$tmp/exported") symbols, all marble_*, every declared function exported"

needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
expect_output() {  # the example prints the row it read back
    grep -q "id=2 name=grace v=3.0" "$1" || { cat "$1" >&2; fail "$2: unexpected output"; }
    sed 's/^/   /' "$1"
}

export PKG_CONFIG_PATH=$lib/pkgconfig
step "pkg-config, shared"
read -r -a pc <<<"$("$pkgconf" --cflags --libs marble)"
echo "   ${pc[*]}"
"$cc" "${cflags[@]}" -o "$tmp/ex_pc_shared" "$here/example.c" "${pc[@]}"
needed "$tmp/ex_pc_shared" | grep -qx "libmarble.so.$major" || fail "ex_pc_shared does not need libmarble.so.$major"
LD_LIBRARY_PATH=$lib "$tmp/ex_pc_shared" >"$tmp/out" || fail "ex_pc_shared exited $?"
expect_output "$tmp/out" ex_pc_shared

step "pkg-config --static"
read -r -a pc <<<"$("$pkgconf" --static --cflags --libs marble)"
echo "   ${pc[*]}"
# -lmarble would pick libmarble.so next to libmarble.a; name the archive.
pc=("${pc[@]/#-lmarble/-l:libmarble.a}")
if ! "$cc" "${cflags[@]}" -o "$tmp/ex_pc_static" "$here/example.c" "${pc[@]}" 2>"$tmp/ld.log"; then
    # --static also lists the Libs.private of the modules marble requires (Debian's libcurl.pc
    # names every library a static libcurl needs), whose -dev packages need not be installed. Then
    # link libmarble.a against the shared system libraries: marble's own Libs.private plus the
    # required modules' plain --libs. Anything marble itself lists must still be found.
    missing=$(sed -n 's/.*cannot find -l\([^:]*\):.*/\1/p' "$tmp/ld.log" | sort -u | tr '\n' ' ')
    [ -n "$missing" ] || { cat "$tmp/ld.log" >&2; fail "ex_pc_static did not link"; }
    requires=$("$pkgconf" --print-requires-private marble | awk '{print $1}' | tr '\n' ' ')
    read -r -a own <<<"$("$pkgconf" --libs marble) $(sed -n 's/^Libs.private: //p' "$lib/pkgconfig/marble.pc")"
    read -r -a deps <<<"$("$pkgconf" --libs $requires)"
    for m in $missing; do
        for f in "${own[@]}" "${deps[@]}"; do
            [ "$f" != "-l$m" ] || { cat "$tmp/ld.log" >&2; fail "-l$m, named by marble.pc or its Requires.private modules, is missing"; }
        done
    done
    echo "   (not installed here: $missing- from the required modules' own Libs.private;"
    echo "    linking libmarble.a against their shared libraries instead)"
    pc=($("$pkgconf" --cflags marble) "${own[@]/#-lmarble/-l:libmarble.a}" "${deps[@]}")
    echo "   ${pc[*]}"
    "$cc" "${cflags[@]}" -o "$tmp/ex_pc_static" "$here/example.c" "${pc[@]}"
fi
! needed "$tmp/ex_pc_static" | grep -q '^libmarble' || fail "ex_pc_static needs a shared libmarble"
"$tmp/ex_pc_static" >"$tmp/out" || fail "ex_pc_static exited $?"
expect_output "$tmp/out" ex_pc_static
unset PKG_CONFIG_PATH

step "find_package(marble)"
gen=()
[ -z "$generator" ] || gen=(-G "$generator")
[ -z "$make_program" ] || gen+=("-DCMAKE_MAKE_PROGRAM=$make_program")
"$cmake" -S "$here/cmake" -B "$tmp/cmake-build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
    -DCMAKE_C_FLAGS="${cflags[*]}" -DCMAKE_EXE_LINKER_FLAGS="$san" \
    >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log" >&2; fail "configuring the CMake example failed"; }
grep -F -- "-- marble $version from $lib/cmake/marble" "$tmp/cmake.log" ||
    { cat "$tmp/cmake.log" >&2; fail "find_package(marble) did not find the installed copy"; }
"$cmake" --build "$tmp/cmake-build" >"$tmp/cmake-build.log" 2>&1 ||
    { cat "$tmp/cmake-build.log" >&2; fail "building the CMake example failed"; }
needed "$tmp/cmake-build/example_shared" | grep -qx "libmarble.so.$major" || fail "example_shared does not need libmarble.so.$major"
! needed "$tmp/cmake-build/example_static" | grep -q '^libmarble' || fail "example_static needs a shared libmarble"
# example_shared finds the installed libmarble.so through the build tree's RPATH.
"$tmp/cmake-build/example_shared" >"$tmp/out" || fail "example_shared exited $?"
expect_output "$tmp/out" example_shared
"$tmp/cmake-build/example_static" >"$tmp/out" || fail "example_static exited $?"
expect_output "$tmp/out" example_static

ok=1
echo "package: ok (installed, exports checked, 4 example builds ran)"
