#!/bin/sh
# examples/echo_server, the model server: real clients over loopback, real
# signals.
#  1. Echoes work; thousands of connections over its life leave its
#     resident memory flat; an idle client is dropped at its idle timeout
#     (not before); the first SIGINT with nothing open ends it with 0.
#  2. The first SIGTERM drains: the listener stops accepting, a client in
#     the middle of its requests is served to the end, and a stuck client
#     is cut when the grace ends (not before); exit 0.
#  3. A second signal during the grace kills the server (status 143).
set -u
. "${top_srcdir:-.}/tests/examples/common.sh"
server=$b/examples/echo_server
client=$b/examples/echo_client

# start_server OUT [ARGS...]: start the server, set $spid and $port.
start_server() {
    out=$1
    shift
    # Under AddressSanitizer freed memory waits in a quarantine, which
    # would read as growth: the memory check wants it returned at once
    # (harmless in other builds).
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0:thread_local_quarantine_size_kb=0" \
        "$server" "$@" >"$out" 2>&1 &
    spid=$!
    pids="$pids $spid"
    wait_for "$out" "listening on"
    port=$(port_of "$out")
    [ -n "$port" ] || fail "no port in $out"
}

rss_kib() {
    sed -n 's/^VmRSS:[^0-9]*\([0-9][0-9]*\) kB/\1/p' "/proc/$1/status"
}

now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# --- 1. echoes, flat memory, idle timeout, SIGINT
start_server "$tmp/s1.out" --idle-ms 400 --grace-ms 30000
"$client" "$port" hello "a longer line" "third line" >"$tmp/c1.out" 2>&1 ||
    fail "client 1 failed"
expect_count "$tmp/c1.out" "^echo ok: " 3
expect "$tmp/c1.out" "^echo ok: a longer line$"
wait_for "$tmp/s1.out" "connection 1: closed by the client"

"$client" --timeout-ms 120000 --connections 500 "$port" warm-up >"$tmp/c2.out" 2>&1 || fail "warm-up clients failed"
expect "$tmp/c2.out" "^500 connections ok$"
rss0=$(rss_kib "$spid")
"$client" --timeout-ms 120000 --connections 3000 "$port" ping >"$tmp/c3.out" 2>&1 || fail "load clients failed"
expect "$tmp/c3.out" "^3000 connections ok$"
wait_for "$tmp/s1.out" "connection 3501: closed by the client"
rss1=$(rss_kib "$spid")
# 1 MiB; ThreadSanitizer's own shadow and sync records grow by about
# 1-2 kB per connection (the plain build stays within 100 kB over 20,000),
# so under it the bound is 8 MiB.
limit=1024
grep -q libtsan "/proc/$spid/maps" && limit=8192
[ $((rss1 - rss0)) -lt "$limit" ] ||
    fail "resident memory grew from $rss0 kB to $rss1 kB over 3000 connections"

t0=$(now_ms)
"$client" --idle "$port" "then nothing" >"$tmp/i1.out" 2>&1 &
i1=$!
pids="$pids $i1"
wait_exit "$i1" 20
[ "$status" -eq 0 ] || fail "idle client exit status $status"
elapsed=$(($(now_ms) - t0))
expect "$tmp/i1.out" "^closed by the server$"
expect "$tmp/s1.out" "connection 3502: idle timeout, dropped"
[ "$elapsed" -ge 400 ] || fail "idle client dropped after $elapsed ms, before its 400 ms timeout"

kill -INT "$spid"
wait_exit "$spid" 20
[ "$status" -eq 0 ] || fail "server exit status $status after SIGINT, expected 0"
expect "$tmp/s1.out" "^signal: draining, 0 connections open"
expect "$tmp/s1.out" "^listener: draining, stopped accepting$"
expect "$tmp/s1.out" "^joined 3502 connections (3501 closed by the client, 1 idle, 0 cut at the grace, 0 failed)"

# --- 2. SIGTERM drains: mid-request client served, stuck client cut at the grace
start_server "$tmp/s2.out" --idle-ms 60000 --grace-ms 4000
"$client" --pause-file "$tmp/go" "$port" first second third >"$tmp/m.out" 2>&1 &
m=$!
pids="$pids $m"
wait_for "$tmp/m.out" "^paused$"
"$client" --idle "$port" stuck >"$tmp/st.out" 2>&1 &
st=$!
pids="$pids $st"
wait_for "$tmp/st.out" "^idle$"

t0=$(now_ms)
kill -TERM "$spid"
wait_for "$tmp/s2.out" "^signal: draining, 2 connections open, grace 4000 ms$"
wait_for "$tmp/s2.out" "^listener: draining, stopped accepting$"
# No new connection is served any more.
if "$client" --timeout-ms 2000 "$port" late >"$tmp/late.out" 2>&1; then
    fail "a connection made during the drain was served"
fi
# The client in the middle of its requests goes on and is served to the end.
: >"$tmp/go"
wait_exit "$m" 20
[ "$status" -eq 0 ] || fail "mid-request client exit status $status"
expect_count "$tmp/m.out" "^echo ok: " 3
expect "$tmp/m.out" "^echo ok: third$"
wait_for "$tmp/s2.out" "connection 1: closed by the client"
# The stuck client is cut when the grace ends, not before.
wait_exit "$st" 20
[ "$status" -eq 0 ] || fail "stuck client exit status $status"
elapsed=$(($(now_ms) - t0))
expect "$tmp/st.out" "^closed by the server$"
[ "$elapsed" -ge 4000 ] || fail "stuck client cut after $elapsed ms, before the 4000 ms grace"
wait_exit "$spid" 20
[ "$status" -eq 0 ] || fail "server exit status $status after the drain, expected 0"
expect "$tmp/s2.out" "connection 2: cut at the end of the grace"
expect "$tmp/s2.out" "^joined 2 connections (1 closed by the client, 0 idle, 1 cut at the grace, 0 failed)"

# --- 3. the second signal kills
start_server "$tmp/s3.out" --grace-ms 60000
"$client" --idle "$port" y >"$tmp/i4.out" 2>&1 &
i4=$!
pids="$pids $i4"
wait_for "$tmp/i4.out" "^idle$"
kill -TERM "$spid"
wait_for "$tmp/s3.out" "^signal: draining, 1 connection open"
kill -TERM "$spid"
wait_exit "$spid" 20
[ "$status" -eq 143 ] || fail "server exit status $status after the second SIGTERM, expected 143"
wait_exit "$i4" 20
[ "$status" -eq 0 ] || fail "idle client 4 exit status $status"
expect "$tmp/i4.out" "^closed by the server$"
echo "PASS"
