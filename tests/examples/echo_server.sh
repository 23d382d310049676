#!/bin/sh
# examples/echo_server: real clients over loopback, real SIGINTs.
#  1. Echoes work; the first SIGINT ends the server cleanly (exit 0) with
#     idle clients still connected: they are closed and all joined.
#  2. Two SIGINTs in a row still end the process (exit 0 or 130).
#  3. With --stubborn (tasks ignore cancellation) the first SIGINT cannot
#     finish the join: the server lists the late tasks, and the second
#     SIGINT kills it (status 130).
set -u
. "${top_srcdir:-.}/tests/examples/common.sh"
server=$b/examples/echo_server
client=$b/examples/echo_client

# start_server OUT [ARGS...]: start the server, set $spid and $port.
start_server() {
    out=$1
    shift
    "$server" "$@" >"$out" 2>&1 &
    spid=$!
    pids="$pids $spid"
    wait_for "$out" "listening on"
    port=$(port_of "$out")
    [ -n "$port" ] || fail "no port in $out"
}

# --- 1. clean shutdown with idle clients
start_server "$tmp/s1.out"
"$client" "$port" hello "a longer line" "third line" >"$tmp/c1.out" 2>&1 ||
    fail "client 1 failed"
expect_count "$tmp/c1.out" "^echo ok: " 3
expect "$tmp/c1.out" "^echo ok: a longer line$"
wait_for "$tmp/s1.out" "connection 1: closed by the client"

"$client" --idle "$port" one >"$tmp/i1.out" 2>&1 &
i1=$!
pids="$pids $i1"
"$client" --idle "$port" two >"$tmp/i2.out" 2>&1 &
i2=$!
pids="$pids $i2"
wait_for "$tmp/i1.out" "^idle$"
wait_for "$tmp/i2.out" "^idle$"

kill -INT "$spid"
wait_exit "$spid" 20
[ "$status" -eq 0 ] || fail "server exit status $status after SIGINT, expected 0"
expect "$tmp/s1.out" "^SIGINT: shutting down (2 connections open)$"
expect "$tmp/s1.out" "^listener: cancelled while blocked in cancel_accept$"
expect_count "$tmp/s1.out" "cancelled while blocked in cancel_read$" 2
expect "$tmp/s1.out" "^joined 3 connections (1 closed by the client, 2 cancelled while open), echoed 39 bytes$"

# The idle clients saw their connection closed by the server.
wait_exit "$i1" 20
[ "$status" -eq 0 ] || fail "idle client 1 exit status $status"
wait_exit "$i2" 20
[ "$status" -eq 0 ] || fail "idle client 2 exit status $status"
expect "$tmp/i1.out" "^closed by the server$"
expect "$tmp/i2.out" "^closed by the server$"

# --- 2. two SIGINTs in a row
start_server "$tmp/s2.out"
"$client" --idle "$port" x >"$tmp/i3.out" 2>&1 &
i3=$!
pids="$pids $i3"
wait_for "$tmp/i3.out" "^idle$"
kill -INT "$spid"
kill -INT "$spid" 2>/dev/null
wait_exit "$spid" 20
[ "$status" -eq 0 ] || [ "$status" -eq 130 ] ||
    fail "server exit status $status after two SIGINTs, expected 0 or 130"
wait_exit "$i3" 20
[ "$status" -eq 0 ] || fail "idle client 3 exit status $status"

# --- 3. a task that ignores cancellation: the second SIGINT kills
start_server "$tmp/s3.out" --stubborn
"$client" --idle "$port" y >"$tmp/i4.out" 2>&1 &
i4=$!
pids="$pids $i4"
wait_for "$tmp/i4.out" "^idle$"
kill -INT "$spid"
wait_for "$tmp/s3.out" "^press Ctrl-C again"
expect "$tmp/s3.out" "^listener: cancelled while blocked in cancel_accept$"
expect "$tmp/s3.out" "task .*\"connection 1\": running.*token cancelled"
kill -INT "$spid"
wait_exit "$spid" 20
[ "$status" -eq 130 ] || fail "server exit status $status after the second SIGINT, expected 130"
wait_exit "$i4" 20
[ "$status" -eq 0 ] || fail "idle client 4 exit status $status"
expect "$tmp/i4.out" "^closed by the server$"
echo "PASS"
