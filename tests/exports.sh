#!/bin/sh
# The shared library exports only cancel_* names (plus nothing else).
lib="${top_builddir:-.}/.libs/libcancel.so"
[ -f "$lib" ] || { echo "no $lib"; exit 1; }
# _init and _fini are the ELF constructor sections' entry points, exported
# by musl's crti.o (glibc hides them): not names of ours.
syms=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ && $3 != "_init" && $3 != "_fini" { print $3 }')
[ -n "$syms" ] || { echo "no exported symbols found"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -v '^cancel_' | grep -v '^cancel__never$' | grep -vx 'cancel__interpose_api' || true)
# interpose hook (issue 14): the function that hands the interposer its table is allowed.
inner=$(printf '%s\n' "$syms" | grep '^cancel__' | grep -vx 'cancel__interpose_api' || true)
echo "exported: $(printf '%s\n' "$syms" | wc -l) symbols"
if [ -n "$bad$inner" ]; then
    echo "symbols that must not be exported:"; printf '%s\n' $bad $inner
    exit 1
fi
# Every function the header declares is exported.
hdr="${top_srcdir:-.}/include/cancel.h"
missing=""
for f in $(grep -oE '\bcancel_[a-z0-9_]+\(' "$hdr" | tr -d '(' | sort -u); do
    case $f in cancel__*) continue ;; esac # internal (cancel__token_is_cancelled_inline)
    printf '%s\n' "$syms" | grep -qx "$f" || missing="$missing $f"
done
if [ -n "$missing" ]; then echo "declared but not exported:$missing"; exit 1; fi
exit 0
