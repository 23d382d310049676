# Shared helpers for the example tests (POSIX sh; sourced, not run).
# Every wait is bounded: a hung example is a failure, never a hung make check.

b=${top_builddir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cancel-example.XXXXXX") || exit 99
pids=

cleanup() {
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 99' HUP INT TERM

# fail MESSAGE: report, show every output file, exit 1.
fail() {
    echo "FAIL: $*"
    for f in "$tmp"/*.out; do
        [ -f "$f" ] || continue
        echo "--- $f"
        cat "$f"
    done
    exit 1
}

# nap: a short pause between two polls.
nap() {
    sleep 0.05 2>/dev/null || sleep 1
}

# wait_for FILE PATTERN: wait (at most about 20 s) for a line of FILE
# matching the basic regular expression PATTERN.
wait_for() {
    n=0
    while ! grep -q -- "$2" "$1" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -le 400 ] || fail "timed out waiting for '$2' in $1"
        nap
    done
}

# expect FILE PATTERN: FILE has a line matching PATTERN.
expect() {
    grep -q -- "$2" "$1" || fail "no '$2' in $1"
}

# expect_count FILE PATTERN N: exactly N lines of FILE match PATTERN.
expect_count() {
    c=$(grep -c -- "$2" "$1")
    [ "$c" -eq "$3" ] || fail "$c lines match '$2' in $1, expected $3"
}

# wait_exit PID SECONDS: wait for PID (a child of this shell), killing it
# with SIGKILL if it is still running after SECONDS; sets $status.  The
# watchdog polls, and leaves as soon as the wait below has reaped PID.
wait_exit() {
    (
        n=0
        while kill -0 "$1" 2>/dev/null; do
            n=$((n + 1))
            if [ "$n" -gt $(($2 * 20)) ]; then
                kill -KILL "$1" 2>/dev/null
                break
            fi
            nap
        done
    ) >/dev/null 2>&1 &
    wd=$!
    wait "$1"
    status=$?
    wait "$wd"
    [ "$status" -ne 137 ] || fail "pid $1 still running after $2 s (killed)"
}

# port_of FILE: the port in the "listening on 127.0.0.1:PORT" line of FILE.
port_of() {
    sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$1" | head -n 1
}
