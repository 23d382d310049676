#!/bin/sh
# examples/first_results: the first 3 of 8 results come in completion
# order (not spawn order), the other 5 are cancelled (or, on a machine
# slow enough, answered too late), and the whole run ends before the
# slowest replica would have answered (800 ms): it was cancelled.
set -u
. "${top_srcdir:-.}/tests/examples/common.sh"
"$b/examples/first_results" 8 3 >"$tmp/r.out" 2>&1 &
p=$!
pids="$pids $p"
wait_exit "$p" 20
[ "$status" -eq 0 ] || fail "first_results exit status $status"
expect "$tmp/r.out" "^result 1: replica 0 answered 0 after "
expect "$tmp/r.out" "^result 2: replica 3 answered 9 after "
expect "$tmp/r.out" "^result 3: replica 6 answered 36 after "
expect_count "$tmp/r.out" "^result " 3
expect "$tmp/r.out" "^took 3 of 8 results, cancelled [1-5] replicas ([0-4] answered too late), done after "
c=$(sed -n 's/.*cancelled \([0-9]*\) replicas (\([0-9]*\) answered.*/\1 \2/p' "$tmp/r.out")
set -- $c
[ $(($1 + $2)) -eq 5 ] || fail "$1 cancelled and $2 late: expected 5 in all"
ms=$(sed -n 's/.*done after \([0-9][0-9]*\) ms$/\1/p' "$tmp/r.out")
[ -n "$ms" ] && [ "$ms" -lt 800 ] || fail "done after ${ms:-?} ms: the cancelled replicas ran to the end"
echo "PASS"
