#!/usr/bin/env bash
# Drives `marble import` of a large Arrow file in a tmux pane, as a person at a terminal would:
# the progress bar must show (capture-pane), Ctrl-C (send-keys C-c) must stop the import with
# "cancelled" and exit status 130, and the database must then open and check OK.
# Usage: tmux.sh MARBLE_BINARY WORKDIR. Exit 77 (skipped) without tmux.
set -uo pipefail
M=$(realpath "$1")
W=$2
if ! command -v tmux >/dev/null 2>&1; then
  echo "cli tmux: skipped: tmux is not installed (scripts/deps.sh installs it)"
  exit 77
fi
rm -rf "$W" && mkdir -p "$W" && cd "$W" || exit 1
sock="marble-cli-test-$$"
T="tmux -L $sock -f /dev/null"
cleanup() { $T kill-server >/dev/null 2>&1; }
trap cleanup EXIT
die() { echo "FAIL: $*" >&2; echo "--- pane:" >&2; $T capture-pane -p -t cli >&2 2>/dev/null; exit 1; }

# a large input: the demo's events, exported as CSV (parsing keeps the import running for a few
# seconds, long enough to see the bar and press Ctrl-C on any machine)
"$M" demo --rows 2000000 --dir src.db >/dev/null || die "demo failed"
"$M" export src.db events big.csv 2>/dev/null || die "export failed"
"$M" create dst.db events --key user_id,ts \
  --schema 'user_id:int64!,ts:timestamp[us, tz=UTC]!,category:utf8,amount:float64,clicks:int64' \
  >/dev/null || die "create failed"

$T new-session -d -s cli -x 150 -y 20 -c "$W" bash --norc --noprofile || die "tmux new-session"
$T send-keys -t cli "'$M' import dst.db events big.csv; echo EXIT=\$?" Enter

seen=0
for _ in $(seq 1 300); do
  if $T capture-pane -p -t cli | grep -q 'importing \[.*rows/s'; then seen=1; break; fi
  if $T capture-pane -p -t cli | grep -q 'EXIT=[0-9]'; then break; fi
  sleep 0.05
done
[ $seen = 1 ] || die "no progress bar appeared in the pane"
echo "progress bar seen: $($T capture-pane -p -t cli | grep -o 'importing \[.*' | head -1)"
$T send-keys -t cli C-c

for _ in $(seq 1 600); do
  $T capture-pane -p -t cli | grep -q 'EXIT=[0-9]' && break
  sleep 0.1
done
pane=$($T capture-pane -p -t cli)
echo "$pane" | grep -q 'EXIT=[0-9]' || die "the import did not stop after Ctrl-C"
echo "$pane" | grep -q 'marble import: cancelled' || die "no 'cancelled' message"
echo "$pane" | grep -q 'EXIT=130' || die "exit status was not 130"
cleanup

"$M" check dst.db >check.txt 2>&1 || { cat check.txt; die "check after the cancelled import failed"; }
grep -q '^OK' check.txt || die "check did not say OK"
echo "after Ctrl-C: $(tail -1 check.txt)"
echo "cli tmux: ok"
