#!/usr/bin/env bash
# Runs the apache-arrow interop tests. Usage: run.sh MODE TOOL WORKDIR,
# MODE = marble_to_js | js_to_marble | sst_to_js | all.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ne 3 ]; then
  echo "usage: $0 marble_to_js|js_to_marble|sst_to_js|all path/to/marble-interop-tool WORKDIR" >&2
  exit 2
fi
mode=$1 tool=$2 work=$3

die() {
  echo "interop: $*" >&2
  exit 1
}

case $mode in marble_to_js | js_to_marble | sst_to_js | all) ;; *) die "unknown mode '$mode'" ;; esac
command -v node >/dev/null 2>&1 || die "node is not installed: run scripts/deps.sh (installs nodejs and npm)"
command -v npm >/dev/null 2>&1 || die "npm is not installed: run scripts/deps.sh (installs nodejs and npm)"
node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' ||
  die "node $(node --version) is too old (need >= 18): run scripts/deps.sh"
[ -x "$tool" ] || die "$tool is not built"
mkdir -p "$work" || die "cannot create $work"

# npm ci once per package-lock.json; flock on it serialises the runs that ctest -j (or a second
# build tree) starts together.
want=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
stamp="$here/node_modules/.marble-package-lock.sha256"
(
  flock 9
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log="$work/npm-ci.log"
    if ! (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
      cat "$log" >&2
      exit 1
    fi
    echo "$want" >"$stamp"
  fi
) 9<"$here/package-lock.json" || die "npm ci failed in $here (is the npm registry reachable?)"

summary=()
status=0

# step NAME COMMAND...: runs one step, keeps its result for the summary.
step() {
  local name=$1 rc
  shift
  echo "== $name"
  "$@"
  rc=$?
  if [ $rc -eq 0 ]; then
    summary+=("ok    $name")
  else
    [ $rc -gt 1 ] && echo "(exit status $rc)"
    summary+=("FAIL  $name")
    status=1
  fi
  echo
  return $rc
}

marble_to_js() {
  local dir="$work/marble"
  rm -rf "$dir"
  step "marble writes the files" "$tool" write "$dir" || return
  step "marble reads its own files (control)" "$tool" check "$dir" marble
  step "apache-arrow reads the files marble wrote" node "$here/js/check.mjs" "$dir" marble
}

js_to_marble() {
  local dir="$work/js"
  rm -rf "$dir"
  step "apache-arrow writes the files" node "$here/js/write.mjs" "$dir" || return
  step "apache-arrow reads its own files (control)" node "$here/js/check.mjs" "$dir" apache-arrow
  step "marble reads the files apache-arrow wrote" "$tool" check "$dir" apache-arrow
}

sst_to_js() {
  local dir="$work/sst"
  rm -rf "$dir"
  step "marble writes SSTables (and reads them back)" "$tool" sst "$dir" || return
  step "apache-arrow reads the SSTables" node "$here/js/check_sst.mjs" "$dir"
}

case $mode in
  all) marble_to_js; js_to_marble; sst_to_js ;;
  *) "$mode" ;;
esac

echo "== interop summary ($mode; node $(node --version), apache-arrow $(node -p 'require(process.argv[1]).version' "$here/node_modules/apache-arrow/package.json"))"
printf '   %s\n' "${summary[@]}"
exit $status
