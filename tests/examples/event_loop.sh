#!/bin/sh
# examples/event_loop: a token's descriptor in an epoll loop.
#  1. Echoes work; SIGINT cancels the token, its descriptor wakes the loop,
#     the open connection is closed, exit 0.
#  2. A deadline: the loop stops by itself (ETIMEDOUT), not before it.
set -u
. "${top_srcdir:-.}/tests/examples/common.sh"
prog=$b/examples/event_loop
client=$b/examples/echo_client

# --- 1. stopped by a signal
"$prog" >"$tmp/e1.out" 2>&1 &
pid=$!
pids="$pids $pid"
wait_for "$tmp/e1.out" "listening on"
port=$(port_of "$tmp/e1.out")
[ -n "$port" ] || fail "no port in $tmp/e1.out"
"$client" "$port" one "two words" >"$tmp/c1.out" 2>&1 || fail "client failed"
expect_count "$tmp/c1.out" "^echo ok: " 2
"$client" --idle "$port" idle >"$tmp/i1.out" 2>&1 &
i1=$!
pids="$pids $i1"
wait_for "$tmp/i1.out" "^idle$"
kill -INT "$pid"
wait_exit "$pid" 20
[ "$status" -eq 0 ] || fail "exit status $status after SIGINT, expected 0"
expect "$tmp/e1.out" "^stopped after [0-9]* ms: the token fired (ECANCELED: a signal)$"
expect "$tmp/e1.out" "^closing 1 open connection$"
expect "$tmp/e1.out" "^served 2 connections (1 closed by the client), echoed 19 bytes$"
wait_exit "$i1" 20
[ "$status" -eq 0 ] || fail "idle client exit status $status"
expect "$tmp/i1.out" "^closed by the server$"

# --- 2. stopped by a deadline
"$prog" --deadline-ms 300 >"$tmp/e2.out" 2>&1 &
pid=$!
pids="$pids $pid"
wait_exit "$pid" 20
[ "$status" -eq 0 ] || fail "exit status $status after the deadline, expected 0"
expect "$tmp/e2.out" "^stopped after [0-9]* ms: the token fired (ETIMEDOUT: the deadline)$"
expect "$tmp/e2.out" "^served 0 connections (0 closed by the client), echoed 0 bytes$"
ms=$(sed -n 's/^stopped after \([0-9][0-9]*\) ms.*/\1/p' "$tmp/e2.out")
[ "$ms" -ge 300 ] || fail "the deadline fired after $ms ms, expected at least 300"
echo PASS
