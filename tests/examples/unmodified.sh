#!/bin/sh
# examples/unmodified: plain blocking clients (connect, send, recv, usleep;
# no libcancel call) run as tasks under the interposer, half of them
# blocked in recv on a server that never answers, all stopped by one
# cancel_scope_cancel within the 2 s guard, each ending with ECANCELED.
set -u
. "${top_srcdir:-.}/tests/examples/common.sh"
case "${TEST_CFLAGS_ALL:-}" in
*sanitize=thread*)
    # See cancel_interpose(7): ThreadSanitizer's interceptors come first
    # and hide the library's synchronisation inside them.
    echo "SKIP: the interposer does not run under ThreadSanitizer"
    exit 77 ;;
esac
prog=$b/examples/unmodified
"$prog" --clients 8 --run-ms 300 >"$tmp/u.out" 2>&1 &
pid=$!
pids="$pids $pid"
wait_exit "$pid" 30
[ "$status" -eq 0 ] || fail "exit status $status, expected 0"
expect_count "$tmp/u.out" "^client [0-9]* (echo): stopped after [1-9][0-9]* round trips: Operation canceled$" 4
expect_count "$tmp/u.out" "^client [0-9]* (black hole): stopped after 0 round trips: Operation canceled$" 4
expect "$tmp/u.out" "^8 of 8 plain blocking clients stopped by one cancel_scope_cancel in "
ms=$(sed -n 's/.* in \([0-9]*\)\.[0-9] ms$/\1/p' "$tmp/u.out")
[ "$ms" -lt 2000 ] || fail "the cancel took $ms ms"
echo PASS
