#!/bin/sh
# Every function the header declares has a man page (or a .so link) named
# after it, and every page is lint-clean.
top="${top_srcdir:-.}"
status=0
for f in $(grep -oE '\bcancel_[a-z0-9_]+\(' "$top/include/cancel.h" | tr -d '(' | sort -u); do
    case $f in cancel__*) continue ;; esac # internal (cancel__token_is_cancelled_inline)
    [ -f "$top/man/$f.3" ] || { echo "no man page for $f"; status=1; }
done
for page in "$top"/man/*.[37]; do
    [ -f "$page" ] || continue
    if head -n 1 "$page" | grep -q '^\.so '; then
        target="$top/man/$(head -n 1 "$page" | sed 's|^\.so man[37]/||')"
        [ -f "$target" ] || { echo "$page: dangling .so"; status=1; }
        continue
    fi
    out=$(groff -ww -z -man "$page" 2>&1)
    [ -z "$out" ] || { echo "$page (groff): $out"; status=1; }
    if command -v mandoc >/dev/null 2>&1; then
        out=$(mandoc -Tlint -W warning "$page" 2>&1)
        [ -z "$out" ] || { echo "$page (mandoc): $out"; status=1; }
    fi
done
exit $status
