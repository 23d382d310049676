#!/bin/sh
# Installs the library three ways and, against each installed tree, builds
# and runs a program outside the source tree with nothing but
# `pkg-config --cflags --libs cancel` (no --define-prefix: the installed
# cancel.pc must work from where it landed):
#   A  a build configured with ./configure --prefix=A, then make install
#      (its Makefile installs the header, man pages and .pc files; the
#      libraries are this build's, installed into A, so nothing is
#      compiled twice),
#   B  this build, make install prefix=B,
#   C  this build, make install DESTDIR=C.
# Then: every .pc file installed is relocatable in the same way; a CMake
# project (tests/cmake/) finds the package with find_package(cancel) in
# tree B and links cancel::cancel; a Meson project (tests/meson/) finds it
# with dependency('cancel'); the installed library loads with dlopen.
set -e
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
srcdir_abs=$(cd "$top_srcdir" && pwd)
builddir_abs=$(cd "$top_builddir" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset PKG_CONFIG_SYSROOT_DIR DESTDIR

fail() { echo "FAIL: $*"; [ -f "$tmp/log" ] && tail -n 40 "$tmp/log"; exit 1; }

# consume NAME PCDIR: build examples/demo.c against the tree whose .pc
# files are in PCDIR and run it; the paths must point into that tree.
consume() {
    name=$1 pcdir=$2
    tree=$(cd "$pcdir/../.." && pwd)
    export PKG_CONFIG_PATH="$pcdir"
    cflags=$(pkg-config --cflags cancel) || fail "$name: pkg-config --cflags"
    libs=$(pkg-config --libs cancel) || fail "$name: pkg-config --libs"
    inc=$(pkg-config --variable=includedir cancel)
    lib=$(pkg-config --variable=libdir cancel)
    [ -f "$inc/cancel.h" ] || fail "$name: includedir $inc has no cancel.h"
    ls "$lib"/libcancel.so.* >/dev/null 2>&1 || fail "$name: libdir $lib has no libcancel.so.*"
    case "$(cd "$inc" && pwd)" in "$tree"/*) ;; *) fail "$name: includedir $inc is not in $tree" ;; esac
    mkdir -p "$tmp/app-$name"
    cp "$srcdir_abs/examples/demo.c" "$tmp/app-$name/app.c"
    (cd "$tmp/app-$name" && ${CC:-cc} -std=c11 -Wall -Werror ${TEST_CFLAGS_ALL:-} $cflags app.c \
        $libs ${TEST_LDFLAGS_ALL:-} -o app) >"$tmp/log" 2>&1 || fail "$name: build with pkg-config"
    LD_LIBRARY_PATH="$lib" "$tmp/app-$name/app" >"$tmp/app-$name/out" 2>&1 ||
        { cat "$tmp/app-$name/out"; fail "$name: the program failed"; }
    grep -q "nothing leaked" "$tmp/app-$name/out" || { cat "$tmp/app-$name/out"; fail "$name: wrong output"; }
    # Every .pc file installed (cancel-interpose.pc, cancel-glib.pc, ...)
    # resolves into the tree too.
    for pc in "$pcdir"/*.pc; do
        m=$(basename "$pc" .pc)
        for v in libdir includedir; do
            d=$(pkg-config --variable=$v "$m")
            [ -z "$d" ] || [ -d "$d" ] || fail "$name: $m.pc: $v $d does not exist"
        done
        pkg-config --cflags --libs "$m" >/dev/null || fail "$name: $m.pc does not resolve"
    done
    echo "$name: installed, built with pkg-config ($cflags $libs) and ran"
}

# A: ./configure --prefix=A.  The configure runs on a copy of the files
# it and the install rules read (the source tree may itself be configured
# in tree, which configure refuses for a second build).
A="$tmp/A"
mkdir -p "$tmp/srcA" "$tmp/bA"
(cd "$srcdir_abs" && cp -pR configure configure.ac aclocal.m4 Makefile.am Makefile.in \
    config.h.in build-aux m4 mk cmake include man src *.pc.in "$tmp/srcA/")
chmod -R u+w "$tmp/srcA"; rm -f "$tmp/srcA/config.status"
(cd "$tmp/bA" && "$tmp/srcA/configure" -q --prefix="$A" --disable-dependency-tracking \
    CC="${CC:-cc}" && make -s install-data) >"$tmp/log" 2>&1 || fail "A: configure --prefix && make install-data"
make -s -C "$builddir_abs" install-exec prefix="$A" >"$tmp/log" 2>&1 || fail "A: installing the libraries"
consume A "$A/lib/pkgconfig"

# B: make install prefix=B.
B="$tmp/B"
make -s -C "$builddir_abs" install prefix="$B" >"$tmp/log" 2>&1 || fail "B: make install prefix="
consume B "$B/lib/pkgconfig"

# C: make install DESTDIR=C (the configured prefix, under C).
C="$tmp/C"
make -s -C "$builddir_abs" install DESTDIR="$C" >"$tmp/log" 2>&1 || fail "C: make install DESTDIR="
pc=$(find "$C" -name cancel.pc | head -n 1)
[ -n "$pc" ] || fail "C: cancel.pc was not installed"
for page in cancel_token_new.3 cancel_read.3 cancel_scope_open.3 cancel.7; do
    find "$C" -name "$page" | grep -q . || fail "C: man page $page not installed"
done
consume C "$(dirname "$pc")"

# CMake: find_package(cancel) in tree B, cancel::cancel, built and run.
command -v cmake >/dev/null || fail "cmake is needed (Debian package cmake)"
cmake -S "$srcdir_abs/tests/cmake" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$B" \
    -DCMAKE_C_COMPILER="${CC:-cc}" -DCMAKE_C_FLAGS="${TEST_CFLAGS_ALL:-}" \
    -DCMAKE_EXE_LINKER_FLAGS="${TEST_LDFLAGS_ALL:-}" >"$tmp/log" 2>&1 || fail "cmake configure"
grep -q "cancel $(pkg-config --modversion cancel): $B/lib/cmake/cancel" "$tmp/log" ||
    fail "cmake did not find the package in $B"
cmake --build "$tmp/cmake" >"$tmp/log" 2>&1 || fail "cmake --build"
LD_LIBRARY_PATH="$B/lib" "$tmp/cmake/consumer" || fail "the CMake consumer failed"
echo "CMake: find_package(cancel) found $B/lib/cmake/cancel, cancel::cancel linked and ran"

# Meson: dependency('cancel') through pkg-config, tree B.
command -v meson >/dev/null || fail "meson is needed (Debian packages meson ninja-build)"
PKG_CONFIG_PATH="$B/lib/pkgconfig" CC="${CC:-cc}" CFLAGS="${TEST_CFLAGS_ALL:-}" \
    LDFLAGS="${TEST_LDFLAGS_ALL:-}" meson setup "$tmp/meson" "$srcdir_abs/tests/meson" \
    >"$tmp/log" 2>&1 || fail "meson setup"
meson compile -C "$tmp/meson" >"$tmp/log" 2>&1 || fail "meson compile"
LD_LIBRARY_PATH="$B/lib" "$tmp/meson/consumer" || fail "the Meson consumer failed"
echo "Meson: dependency('cancel') found through pkg-config, built and ran"

# The installed library loaded with dlopen, as a plugin would load it.
libdir="$B/lib"
${CC:-cc} -std=c11 -Wall -Werror ${TEST_CFLAGS_ALL:-} "$srcdir_abs/tests/dlopen_app.c" \
    ${TEST_LDFLAGS_ALL:-} -pthread -ldl -o "$tmp/dlopen_app"
soname=$(cd "$libdir" && ls libcancel.so.* | head -n 1)
"$tmp/dlopen_app" "$libdir/$soname" | grep -q "dlopen ok" ||
    fail "libcancel could not be used through dlopen"
echo "loaded with dlopen and used from two threads"
