#!/bin/sh
# bench/run.sh PROGRAM... - runs every benchmark program, prints its
# figures ("name value unit"), then the ratios listed in bench/ratios.txt
# whose two figures came from different programs.
set -e
here=$(dirname "$0")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for prog in "$@"; do
    ./"$prog" | tee -a "$out"
done
# ratios.txt: "ratio_name ours_figure anchor_figure" per line, # comments.
grep -v '^#' "$here"/ratios.txt 2>/dev/null | while read -r name ours anchor; do
    [ -n "$name" ] || continue
    a=$(awk -v n="$ours" '$1 == n { print $2 }' "$out" | tail -n 1)
    b=$(awk -v n="$anchor" '$1 == n { print $2 }' "$out" | tail -n 1)
    if [ -n "$a" ] && [ -n "$b" ]; then
        awk -v a="$a" -v b="$b" -v n="$name" 'BEGIN { printf "%s %.3f x\n", n, (b > 0 ? a / b : 0) }'
    fi
done
