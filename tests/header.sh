#!/bin/sh
# The public header compiles on its own, as strict C11 and as C++.
set -e
hdr_dir="${top_srcdir:-.}/include"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#include <cancel.h>\nint main(void) { return cancel_token_is_cancelled((cancel_token_t *)0); }\n' > "$tmp/h.c"
${CC:-cc} -std=c11 -pedantic -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -I"$hdr_dir" -c "$tmp/h.c" -o "$tmp/h.o"
${CC:-cc} -std=c11 -pedantic -Wall -Wextra -Werror -D_GNU_SOURCE -I"$hdr_dir" -c "$tmp/h.c" -o "$tmp/h.o"
if command -v c++ >/dev/null 2>&1; then
    cp "$tmp/h.c" "$tmp/h.cpp"
    c++ -std=c++17 -Wall -Wextra -Werror -I"$hdr_dir" -c "$tmp/h.cpp" -o "$tmp/hpp.o"
fi
echo "header compiles standalone"
