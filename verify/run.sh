#!/bin/sh
# verify/run.sh - model-check the Promela models in verify/ with spin
# (`make verify`).
#
# For each model: a safety run (assertions and invalid end states, i.e.
# deadlocks) and a liveness run of its LTL property (acceptance cycles,
# with deadlocks counted by stuttering), both full state-space searches
# (no bitstate hashing, no depth truncation).  Then the seeded-bug
# variants, each of which must be caught.  One line per run:
#     callback states 3992854 errors 0
#     wakeup.BROKEN states 57 errors 1 (seeded bug caught: invalid end state)
# Exits non-zero if a correct model has an error, a search is incomplete,
# or a seeded bug goes unnoticed.  SPIN, PAN_CC and PAN_CFLAGS override the
# tools; VERIFY_KEEP=1 keeps the work directory (logs, pan, trails).
set -u

here=$(cd "$(dirname "$0")" && pwd)
SPIN=${SPIN:-spin}
PAN_CC=${PAN_CC:-gcc}
PAN_CFLAGS=${PAN_CFLAGS:--O2}
depth=100000

if ! command -v "$SPIN" >/dev/null 2>&1; then
    echo "verify: $SPIN not found (Debian: apt-get install spin)" >&2
    exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/verify.XXXXXX") || exit 1
status=0

# check NAME MODEL KIND EXPECT [SPIN-OPTIONS...]
#   KIND    safety (assertions, invalid end states) or ltl (the model's
#           LTL property, acceptance cycles)
#   EXPECT  ok, or a pattern that pan's first error line must match
check() {
    name=$1 model=$2 kind=$3 expect=$4
    shift 4
    dir=$work/$name
    mkdir -p "$dir" && cp "$here/$model" "$dir/" || { status=1; return; }
    case $kind in
    safety) ccflags="-DNOCLAIM -DSAFETY -DCOLLAPSE" panflags="-m$depth" ;;
    ltl)    ccflags="-DCOLLAPSE" panflags="-a -m$depth" ;;
    esac
    if ! (cd "$dir" && "$SPIN" "$@" -a "$model") >"$dir/spin.log" 2>&1; then
        echo "$name: spin -a failed:" >&2
        cat "$dir/spin.log" >&2
        status=1
        return
    fi
    # shellcheck disable=SC2086 # word splitting of the flag lists is meant
    if ! (cd "$dir" && $PAN_CC $PAN_CFLAGS $ccflags -o pan pan.c) >"$dir/cc.log" 2>&1; then
        echo "$name: compiling pan failed:" >&2
        cat "$dir/cc.log" >&2
        status=1
        return
    fi
    # A value too wide for its Promela variable (2 stored in a bit) only
    # shows as a gcc warning on the generated pan.c: treat it as a bug.
    if grep -q 'warning:' "$dir/cc.log"; then
        echo "$name: pan.c compiles with warnings (a model value overflows?):" >&2
        grep 'warning:' "$dir/cc.log" >&2
        status=1
        return
    fi
    # shellcheck disable=SC2086
    (cd "$dir" && ./pan $panflags) >"$dir/pan.log" 2>&1
    log=$dir/pan.log
    states=$(sed -n 's/^ *\([0-9][0-9]*\) states, stored.*/\1/p' "$log")
    errors=$(sed -n 's/.*errors: \([0-9][0-9]*\)$/\1/p' "$log")
    first=$(grep -m1 '^pan:1:' "$log")
    # pan stops at the first error ("Search not completed"): only a clean
    # run must have covered the whole state space.
    if [ -z "$states" ] || [ -z "$errors" ] || ! grep -q 'Full statespace search' "$log" ||
       grep -q -e 'max search depth too small' -e 'out of memory' "$log" ||
       { [ "$errors" = 0 ] && grep -q 'Search not completed' "$log"; }; then
        echo "$name: search incomplete or pan failed:" >&2
        tail -n 30 "$log" >&2
        status=1
        return
    fi
    if [ "$expect" = ok ]; then
        echo "$name states $states errors $errors"
        if [ "$errors" != 0 ]; then
            echo "$name: $first" >&2
            (cd "$dir" && "$SPIN" "$@" -t -p -g -l "$model") 2>&1 | tail -n 60 >&2
            status=1
        fi
    else
        if [ "$errors" != 0 ] && printf '%s\n' "$first" | grep -q -e "$expect"; then
            echo "$name states $states errors $errors (seeded bug caught: ${first#pan:1: })"
        else
            echo "$name states $states errors $errors (seeded bug NOT caught, expected: $expect)"
            [ -n "$first" ] && echo "$name: $first" >&2
            status=1
        fi
    fi
}

# The callback protocol: state CAS, record frames, GRAPH_WAITERS, the
# token's hold (callback.pml).
check callback callback.pml safety ok
check callback.ltl callback.pml ltl ok
check callback.BROKEN_LOCK_FIRST callback.pml safety 'assertion violated.*tok_valid' -DBROKEN_LOCK_FIRST
check callback.BROKEN_LATE_FRAME callback.pml safety 'assertion violated' -DBROKEN_LATE_FRAME
check callback.BROKEN_EARLY_WAITERS callback.pml safety 'invalid end state' -DBROKEN_EARLY_WAITERS
check callback.BROKEN_EARLY_WAITERS.ltl callback.pml ltl 'acceptance cycle' -DBROKEN_EARLY_WAITERS

# Cancel's flag and run walks against child create/release and an
# overlapping cancel (tree.pml).
check tree tree.pml safety ok
check tree.ltl tree.pml ltl ok
check tree.BROKEN_SKIP_FLAGGED tree.pml safety 'assertion violated' -DBROKEN_SKIP_FLAGGED
check tree.BROKEN_RELEASE_NO_PARENT_LOCK tree.pml safety 'assertion violated.*valid' -DBROKEN_RELEASE_NO_PARENT_LOCK

# A blocking wrapper against a concurrent cancel (wakeup.pml).
check wakeup wakeup.pml safety ok
check wakeup.ltl wakeup.pml ltl ok
check wakeup.BROKEN wakeup.pml safety 'invalid end state' -DBROKEN
check wakeup.BROKEN.ltl wakeup.pml ltl 'acceptance cycle' -DBROKEN

# The per-token lock under x86-TSO, two locks in one parking bucket (lock.pml).
check lock lock.pml safety ok
check lock.ltl lock.pml ltl ok
check lock.BROKEN_NO_BARRIER lock.pml safety 'invalid end state' -DBROKEN_NO_BARRIER
check lock.BROKEN_NO_BARRIER.ltl lock.pml ltl 'acceptance cycle' -DBROKEN_NO_BARRIER
check lock.BROKEN_FIRST_ONLY lock.pml safety 'invalid end state' -DBROKEN_FIRST_ONLY
check lock.BROKEN_LOAD_FIRST lock.pml safety 'invalid end state' -DBROKEN_LOAD_FIRST

# The fork gate under x86-TSO (fork.pml).
check fork fork.pml safety ok
check fork.ltl fork.pml ltl ok
check fork.BROKEN_NO_BARRIER fork.pml safety 'assertion violated' -DBROKEN_NO_BARRIER
check fork.BROKEN_GRAPH_NOT_TAKEN fork.pml safety 'assertion violated.*gmu' -DBROKEN_GRAPH_NOT_TAKEN

# The token slabs' give-back count (slab.pml).
check slab slab.pml safety ok
check slab.ltl slab.pml ltl ok
check slab.BROKEN_ABANDON_ALL slab.pml safety 'assertion violated' -DBROKEN_ABANDON_ALL
check slab.BROKEN_NO_ABANDON slab.pml safety 'assertion violated' -DBROKEN_NO_ABANDON
check slab.BROKEN_SPLIT_SUB slab.pml safety 'assertion violated' -DBROKEN_SPLIT_SUB

if [ "$status" = 0 ] && [ -z "${VERIFY_KEEP:-}" ]; then
    rm -rf "$work"
else
    echo "verify: logs kept in $work" >&2
fi
exit "$status"
