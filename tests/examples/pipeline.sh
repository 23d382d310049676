#!/bin/sh
# examples/pipeline: bounded concurrency, a deadline, fail-fast.
#  1. Six 100 ms jobs, limit 2: all done, never more than 2 at once, so
#     the run takes at least 300 ms.
#  2. A deadline of 500 ms and one job of 5 s: that job is cancelled with
#     ETIMEDOUT, the short ones are done, and the run reports ETIMEDOUT.
#  3. Input that stays open and silent: the deadline wakes the reader
#     blocked in cancel_read on the pipe (a FIFO here).
#  4. A failing job cancels the running one (fail-fast) and fails the run.
set -u
. "${top_srcdir:-.}/tests/examples/common.sh"
prog=$b/examples/pipeline

# ms_of FILE: the run's duration, from the summary line.
ms_of() {
    sed -n 's/.*(limit [0-9]*); \([0-9][0-9]*\) ms$/\1/p' "$1" | head -n 1
}

# run OUT ARGS...: runs the pipeline in the background on $tmp/in.txt.
run() {
    out=$1
    shift
    "$prog" "$@" <"$tmp/in.txt" >"$out" 2>&1 &
    pid=$!
    pids="$pids $pid"
    wait_exit "$pid" 30
}

# --- 1. completion under a limit
printf 'j1 100\nj2 100\nj3 100\nj4 100\nj5 100\nj6 100\n' >"$tmp/in.txt"
run "$tmp/p1.out" --limit 2
[ "$status" -eq 0 ] || fail "exit status $status, expected 0"
expect_count "$tmp/p1.out" "^job [1-6] j[1-6]: done (100 ms of work)$" 6
expect "$tmp/p1.out" "^6 jobs: 6 done, 0 failed, 0 cancelled, 0 never started; at most [12] at once (limit 2); "
expect "$tmp/p1.out" "^pipeline: complete$"
ms=$(ms_of "$tmp/p1.out")
[ "$ms" -ge 300 ] || fail "six 100 ms jobs two at a time took $ms ms, expected at least 300"

# --- 2. the deadline fires while a job runs
printf 'a 50\nb 5000\nc 50\n' >"$tmp/in.txt"
run "$tmp/p2.out" --limit 2 --deadline-ms 500
[ "$status" -eq 1 ] || fail "exit status $status, expected 1"
expect "$tmp/p2.out" "^job 1 a: done (50 ms of work)$"
expect "$tmp/p2.out" "^job 2 b: cancelled (ETIMEDOUT)$"
expect "$tmp/p2.out" "^job 3 c: done (50 ms of work)$"
expect "$tmp/p2.out" "^3 jobs: 2 done, 0 failed, 1 cancelled, 0 never started; "
expect "$tmp/p2.out" "^pipeline: deadline of 500 ms exceeded (ETIMEDOUT)$"
ms=$(ms_of "$tmp/p2.out")
[ "$ms" -ge 500 ] || fail "the deadline fired after $ms ms, expected at least 500"
[ "$ms" -lt 4000 ] || fail "the run took $ms ms: the 5 s job was not cancelled"

# --- 3. the deadline wakes the reader of a silent pipe
mkfifo "$tmp/fifo" || fail "mkfifo"
"$prog" --deadline-ms 300 <"$tmp/fifo" >"$tmp/p3.out" 2>&1 &
pid=$!
pids="$pids $pid"
exec 3>"$tmp/fifo"
printf 'a 10\n' >&3
wait_exit "$pid" 30
exec 3>&-
[ "$status" -eq 1 ] || fail "exit status $status, expected 1"
expect "$tmp/p3.out" "^job 1 a: done (10 ms of work)$"
expect "$tmp/p3.out" "^input: reading stopped (ETIMEDOUT)$"
expect "$tmp/p3.out" "^pipeline: deadline of 300 ms exceeded (ETIMEDOUT)$"
ms=$(ms_of "$tmp/p3.out")
[ "$ms" -ge 300 ] || fail "the deadline fired after $ms ms, expected at least 300"

# --- 4. fail-fast
printf 'a 5000\nb fail\n' >"$tmp/in.txt"
run "$tmp/p4.out" --limit 2
[ "$status" -eq 1 ] || fail "exit status $status, expected 1"
expect "$tmp/p4.out" "^job 1 a: cancelled (ECANCELED)$"
expect "$tmp/p4.out" "^job 2 b: failed: \(Input/output\|I/O\) error$" # glibc, musl
expect "$tmp/p4.out" "^pipeline: failed: job b: \(Input/output\|I/O\) error$"
ms=$(ms_of "$tmp/p4.out")
[ "$ms" -lt 4000 ] || fail "the run took $ms ms: the 5 s job was not cancelled"
echo PASS
