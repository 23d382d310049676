#!/bin/sh
# examples/race_connect: Happy Eyeballs on loopback.
#  1. refused, blackhole, slow, fast, fast: the refused attempt fails at
#     once, a fast one wins after two 250 ms staggers, and every attempt
#     still running (blocked in connect, in read, or waiting for its turn)
#     is cancelled.
#  2. Nothing answers in time: the deadline on the race fires (ETIMEDOUT).
#  3. Everything refuses: no winner, the failure is reported.
set -u
. "${top_srcdir:-.}/tests/examples/common.sh"
prog=$b/examples/race_connect

# ms_of FILE PATTERN: the number before " ms" on the line matching PATTERN.
ms_of() {
    sed -n "/$2/s/.* after \([0-9][0-9]*\) ms.*/\1/p" "$1" | head -n 1
}

# --- 1. the default race
"$prog" >"$tmp/r1.out" 2>&1 &
pid=$!
pids="$pids $pid"
wait_exit "$pid" 30
[ "$status" -eq 0 ] || fail "exit status $status, expected 0"
expect "$tmp/r1.out" "^attempt 0 -> target 0 (refused): started at [0-9]* ms, failed at [0-9]* ms: connect: Connection refused$"
expect "$tmp/r1.out" "^attempt 1 -> target 1 (blackhole): started at [0-9]* ms, cancelled at [0-9]* ms while .*(ECANCELED)$"
expect "$tmp/r1.out" "^attempt 2 -> target 2 (slow): started at [0-9]* ms, cancelled at [0-9]* ms while waiting for the greeting (ECANCELED)$"
expect_count "$tmp/r1.out" " WON at " 1
expect "$tmp/r1.out" "WON at [0-9]* ms: \"hello from target [34] (fast)\"$"
expect "$tmp/r1.out" "^winner: attempt [34] (fast) after [0-9]* ms; 3 other attempts cancelled$"
# A fast target is tried only after two staggers (the refused attempt
# hands over at once, the blackhole and the slow one take 250 ms each).
ms=$(ms_of "$tmp/r1.out" "^winner")
[ "$ms" -ge 500 ] || fail "the winner came after $ms ms, expected at least 500"

# --- 2. the deadline fires first
"$prog" --deadline-ms 600 blackhole slow >"$tmp/r2.out" 2>&1 &
pid=$!
pids="$pids $pid"
wait_exit "$pid" 30
[ "$status" -eq 1 ] || fail "exit status $status, expected 1"
expect "$tmp/r2.out" "^attempt 0 -> target 0 (blackhole): .*cancelled at [0-9]* ms while .*(ETIMEDOUT)$"
expect "$tmp/r2.out" "^attempt 1 -> target 1 (slow): .*cancelled at [0-9]* ms while waiting for the greeting (ETIMEDOUT)$"
expect "$tmp/r2.out" "^no winner after [0-9]* ms: the deadline fired (ETIMEDOUT)$"
ms=$(ms_of "$tmp/r2.out" "^no winner")
[ "$ms" -ge 600 ] || fail "the deadline fired after $ms ms, expected at least 600"

# --- 3. every address refuses
"$prog" refused refused refused >"$tmp/r3.out" 2>&1 &
pid=$!
pids="$pids $pid"
wait_exit "$pid" 30
[ "$status" -eq 1 ] || fail "exit status $status, expected 1"
expect_count "$tmp/r3.out" "failed at [0-9]* ms: connect: Connection refused$" 3
expect "$tmp/r3.out" "^no winner after [0-9]* ms: Connection refused$"
echo PASS
