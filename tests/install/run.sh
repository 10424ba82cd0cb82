#!/usr/bin/env bash
set -euo pipefail
build="$1"; here="$2"
work=$(mktemp -d /tmp/stallwatch-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/stallwatch/stallwatch.h"
test -f "$work/prefix/lib/pkgconfig/stallwatch.pc" || test -f "$work/prefix/lib/x86_64-linux-gnu/pkgconfig/stallwatch.pc"
libdir=$(dirname "$(find "$work/prefix" -name 'libstallwatch.so' | head -1)")

# C, via pkg-config.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -O2 -o "$work/consumer_c" "$here/consumer_c/main.c" $(pkg-config --cflags --libs stallwatch)
out_c=$(LD_LIBRARY_PATH="$libdir" STALLWATCH_ENDPOINT=stderr "$work/consumer_c" 2>&1)
echo "$out_c" | grep -q '"kind":"stall"' || { echo "C consumer: no stall finding"; echo "$out_c"; exit 1; }
echo "$out_c" | grep -q 'busy_in_c' || { echo "C consumer: function not on the stack"; echo "$out_c"; exit 1; }
# The C consumer is single-threaded: its watchdog runs as the installed stallwatch-watchdog.
test -x "$work/prefix/libexec/stallwatch/stallwatch-watchdog" || { echo "stallwatch-watchdog not installed in libexec/stallwatch"; exit 1; }
if echo "$out_c" | grep -q 'watchdog process unavailable'; then
  echo "C consumer: the installed library did not start its watchdog process"; echo "$out_c"; exit 1
fi

# C++, via find_package(stallwatch CONFIG).
cmake -S "$here/consumer_cpp" -B "$work/cpp-build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cpp-build" >/dev/null
out_cpp=$(LD_LIBRARY_PATH="$libdir" "$work/cpp-build/consumer_cpp" 2>&1)
echo "$out_cpp" | grep -q 'caught cpu stall' || { echo "C++ consumer failed"; echo "$out_cpp"; exit 1; }
echo "install test: C (pkg-config) and C++ (find_package) consumers caught their stalls"
