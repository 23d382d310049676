#!/bin/sh
# make install into a temporary root, then build and run a program outside
# the tree with nothing but `pkg-config --cflags --libs cancel`.
set -e
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s -C "$top_builddir" install DESTDIR="$tmp/root" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; exit 1; }
pc=$(find "$tmp/root" -name cancel.pc | head -n 1)
[ -n "$pc" ] || { echo "cancel.pc was not installed"; exit 1; }
hdr=$(find "$tmp/root" -name cancel.h | head -n 1)
[ -n "$hdr" ] || { echo "cancel.h was not installed"; exit 1; }
for page in cancel_token_new.3 cancel_read.3 cancel_scope_open.3 cancel.7; do
    find "$tmp/root" -name "$page" | grep -q . || { echo "man page $page not installed"; exit 1; }
done
export PKG_CONFIG_PATH="$(dirname "$pc")"
cflags=$(pkg-config --define-prefix --cflags cancel)
libs=$(pkg-config --define-prefix --libs cancel)
mkdir "$tmp/app"
cp "$top_srcdir/examples/demo.c" "$tmp/app/app.c"
(cd "$tmp/app" && ${CC:-cc} -std=c11 -Wall -Werror ${TEST_CFLAGS_ALL:-} $cflags app.c $libs ${TEST_LDFLAGS_ALL:-} -o app)
libdir=$(pkg-config --define-prefix --variable=libdir cancel)
LD_LIBRARY_PATH="$libdir" "$tmp/app/app" >"$tmp/app/out"
grep -q "nothing leaked" "$tmp/app/out" || { cat "$tmp/app/out"; exit 1; }
echo "installed, built with pkg-config ($cflags $libs) and ran"

# Loaded with dlopen, as a plugin would load it.
${CC:-cc} -std=c11 -Wall -Werror ${TEST_CFLAGS_ALL:-} "$top_srcdir/tests/dlopen_app.c" \
    ${TEST_LDFLAGS_ALL:-} -pthread -ldl -o "$tmp/app/dlopen_app"
soname=$(cd "$libdir" && ls libcancel.so.* | head -n 1)
"$tmp/app/dlopen_app" "$libdir/$soname" | grep -q "dlopen ok" ||
    { echo "libcancel could not be used through dlopen"; exit 1; }
echo "loaded with dlopen and used from two threads"
