#!/usr/bin/env bash
# A C program built against the build tree, without an install: pkg-config finds
# stallwatch-uninstalled.pc in build/pkgconfig. The program runs without LD_LIBRARY_PATH, starts
# the watchdog process built beside the library, and catches its stall with its function named.
set -euo pipefail
build="$1"; here="$2"
work=$(mktemp -d /tmp/stallwatch-buildtree-XXXXXX)
trap 'rm -rf "$work"' EXIT
unset LD_LIBRARY_PATH PKG_CONFIG_DISABLE_UNINSTALLED
export PKG_CONFIG_PATH="$build/pkgconfig"
flags=$(pkg-config --cflags --libs stallwatch) || { echo "pkg-config found no stallwatch in $PKG_CONFIG_PATH"; exit 1; }
cc -O2 -o "$work/consumer_c" "$here/consumer_c/main.c" $flags
out=$(STALLWATCH_ENDPOINT=stderr "$work/consumer_c" 2>&1) || { echo "consumer failed:"; echo "$out"; exit 1; }
grep -q '"kind":"stall"' <<<"$out" || { echo "no stall finding"; echo "$out"; exit 1; }
grep -q 'busy_in_c' <<<"$out" || { echo "function not on the stack"; echo "$out"; exit 1; }
if grep -q 'watchdog process unavailable' <<<"$out"; then
  echo "the build tree's library did not start its watchdog process"; echo "$out"; exit 1
fi
echo "build-tree test: a C program linked through stallwatch-uninstalled.pc caught its stall"
