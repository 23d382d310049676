#!/bin/sh
# examples/first_results: the first 3 of 8 results come in completion
# order (not spawn order), the other 5 are cancelled, and the whole run
# ends before the slowest replica would have answered (480 ms).
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
expect "$tmp/r.out" "^took 3 of 8 results, cancelled 5 replicas, done after "
ms=$(sed -n 's/.*done after \([0-9][0-9]*\) ms$/\1/p' "$tmp/r.out")
[ -n "$ms" ] && [ "$ms" -lt 480 ] || fail "done after ${ms:-?} ms: the cancelled replicas ran to the end"
echo "PASS"
