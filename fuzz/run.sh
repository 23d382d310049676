#!/bin/sh
# fuzz/run.sh - build the libFuzzer target fuzz/fuzz_api.c with clang
# (-fsanitize=fuzzer,address,undefined) straight from the library sources
# (no configure needed), then either replay the committed corpus or fuzz.
#
#   fuzz/run.sh                 replay fuzz/corpus/* once (what CI runs)
#   FUZZ_SECONDS=600 fuzz/run.sh   fuzz for that long, new inputs in
#                                  $FUZZ_WORK/new (default /tmp/fuzz-cancel),
#                                  then merge (-merge=1) what adds coverage
#                                  into fuzz/corpus
#
# CLANG (default clang) must come with libFuzzer: on Debian, clang and
# libclang-rt-14-dev (or the libclang-rt-dev of your clang version).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
CLANG=${CLANG:-clang}
work=${FUZZ_WORK:-/tmp/fuzz-cancel}
mkdir -p "$work/include"

# internal.h includes config.h; the library needs nothing from it but
# _GNU_SOURCE (configure's other results are not used by the sources).
printf '#ifndef _GNU_SOURCE\n#define _GNU_SOURCE 1\n#endif\n' >"$work/include/config.h"

bin="$work/fuzz_api"
# The library's own sources: not the interposer (it would interpose the
# fuzzer's libc calls) nor libcancel-glib (it needs GLib), which are
# libraries of their own.
lib_sources=$(ls "$top"/src/*.c | grep -v -e '/interpose\.c$' -e '/glib[^/]*\.c$')
# Rebuild when any source is newer than the binary.
if [ ! -x "$bin" ] || [ -n "$(find "$top/src" "$top/include" "$here/fuzz_api.c" -newer "$bin" 2>/dev/null | head -n 1)" ]; then
    echo "fuzz: building $bin"
    # shellcheck disable=SC2086
    $CLANG -g -O1 -std=gnu11 -pthread -fno-omit-frame-pointer \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I"$work/include" -I"$top/include" -I"$top/src" \
        -o "$bin" "$here/fuzz_api.c" $lib_sources
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
corpus="$here/corpus"
mkdir -p "$corpus"

if [ -z "${FUZZ_SECONDS:-}" ]; then
    n=$(find "$corpus" -type f | wc -l)
    echo "fuzz: replaying $n corpus inputs"
    # With file arguments libFuzzer runs each once and exits non-zero on a crash.
    if [ "$n" -gt 0 ]; then
        find "$corpus" -type f -print0 | xargs -0 "$bin" -rss_limit_mb=4096 2>"$work/replay.log" ||
            { tail -n 60 "$work/replay.log"; echo "fuzz: replay FAILED"; exit 1; }
    fi
    echo "fuzz: replay passed ($n inputs)"
    exit 0
fi

new="$work/new"
mkdir -p "$new"
echo "fuzz: fuzzing for $FUZZ_SECONDS s (log: $work/fuzz.log)"
"$bin" -max_total_time="$FUZZ_SECONDS" -max_len=256 -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 "$new" "$corpus" >"$work/fuzz.log" 2>&1 ||
    { tail -n 80 "$work/fuzz.log"; echo "fuzz: FAILED (crash input in $(pwd))"; exit 1; }
tail -n 25 "$work/fuzz.log"
# Keep only what adds edge coverage (-use_counters=0: hit counts do not
# count, which keeps the committed corpus a few hundred tiny files): merge
# into a fresh directory, then swap.
merged="$work/merged"
rm -rf "$merged"
mkdir -p "$merged"
"$bin" -merge=1 -use_counters=0 "$merged" "$corpus" "$new" >"$work/merge.log" 2>&1
tail -n 3 "$work/merge.log"
rm -f "$corpus"/*
cp "$merged"/* "$corpus"/ 2>/dev/null || true
echo "fuzz: corpus now $(find "$corpus" -type f | wc -l) inputs"
