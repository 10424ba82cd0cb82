#!/usr/bin/env bash
# Installs the built tree into a temporary prefix, as a user would with
# `cmake --install build --prefix P`, and checks that
#   - the installed binaries run without LD_LIBRARY_PATH (relative RUNPATH), and `stallwatch run`
#     uses the installed preload shim;
#   - nothing is written outside P (install_manifest.txt);
#   - the systemd unit and the service drop-in name P, not the prefix the tree was configured with;
# then builds two outside programs against it: a C program through pkg-config (stallwatch.pc) and
# a C++ program through find_package(stallwatch CONFIG) → stallwatch::agent. Both run and must
# catch a stall.
set -euo pipefail
build="$1"; here="$2"
work=$(mktemp -d /tmp/stallwatch-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
fail() { echo "install test: $*"; exit 1; }
unset LD_LIBRARY_PATH STALLWATCH_PRELOAD

cmake --install "$build" --prefix "$prefix" >/dev/null
test -f "$prefix/include/stallwatch/stallwatch.h"
test -f "$prefix/lib/pkgconfig/stallwatch.pc" || test -f "$prefix/lib/x86_64-linux-gnu/pkgconfig/stallwatch.pc"
libdir=$(dirname "$(find "$prefix" -name 'libstallwatch.so' | head -1)")

# Nothing outside the prefix: every installed path is under it.
manifest="$build/install_manifest.txt"
test -s "$manifest" || fail "no $manifest after cmake --install"
outside=$(grep -v "^$prefix/" "$manifest" || true)
[ -z "$outside" ] || fail "installed outside $prefix:"$'\n'"$outside"
test -f "$prefix/etc/stallwatch/stallwatchd.conf" || fail "daemon config not in $prefix/etc/stallwatch"

# The binaries start from the prefix alone (no LD_LIBRARY_PATH, no path into the build tree).
for exe in bin/stallwatch bin/stallwatchd libexec/stallwatch/stallwatch-watchdog; do
  test -x "$prefix/$exe" || fail "$exe not installed"
  if readelf -d "$prefix/$exe" | grep -E 'R(UN)?PATH' | grep -F "$build" >/dev/null; then
    fail "$exe has a RUNPATH into the build tree"
  fi
done
v=$("$prefix/bin/stallwatch" --version 2>&1) || fail "bin/stallwatch --version: $v"
[[ "$v" == "stallwatch "[0-9]* ]] || fail "bin/stallwatch --version printed: $v"
v=$("$prefix/bin/stallwatchd" --version 2>&1) || fail "bin/stallwatchd --version: $v"
[[ "$v" == "stallwatchd "[0-9]* ]] || fail "bin/stallwatchd --version printed: $v"
v=$("$prefix/libexec/stallwatch/stallwatch-watchdog" --help 2>&1) || fail "stallwatch-watchdog --help: $v"
# `stallwatch run` preloads the shim installed beside it.
preload=$(STALLWATCH_ENDPOINT=off timeout 30 "$prefix/bin/stallwatch" run -- \
  /bin/sh -c 'printf "%s\n" "$LD_PRELOAD"' 2>"$work/run.err") ||
  fail "stallwatch run failed: $(cat "$work/run.err")"
[ "$(realpath -m "${preload%% *}")" = "$(realpath -m "$libdir/libstallwatch_preload.so")" ] ||
  fail "stallwatch run preloaded '$preload', expected $libdir/libstallwatch_preload.so"

# The unit and the drop-in are rendered for this prefix, not the configured one.
unit="$prefix/lib/systemd/system/stallwatchd.service"
dropin="$prefix/share/stallwatch/systemd/service-agent.conf"
grep -qxF "ExecStart=$prefix/bin/stallwatchd --config $prefix/etc/stallwatch/stallwatchd.conf" \
  "$unit" || fail "unit does not start $prefix/bin/stallwatchd: $(grep ExecStart "$unit")"
grep -qF "LD_PRELOAD=$libdir/libstallwatch_preload.so" "$dropin" ||
  fail "drop-in does not name $libdir/libstallwatch_preload.so"
configured=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
if [ -n "$configured" ] && grep -qF "$configured/" "$unit" "$dropin"; then
  fail "unit or drop-in names the configured prefix $configured: $(grep -F "$configured/" "$unit" "$dropin")"
fi

# C, via pkg-config. The program has no RUNPATH of its own: LD_LIBRARY_PATH finds the library.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -O2 -o "$work/consumer_c" "$here/consumer_c/main.c" $(pkg-config --cflags --libs stallwatch)
out_c=$(LD_LIBRARY_PATH="$libdir" STALLWATCH_ENDPOINT=stderr "$work/consumer_c" 2>&1)
grep -q '"kind":"stall"' <<<"$out_c" || { echo "C consumer: no stall finding"; echo "$out_c"; exit 1; }
grep -q 'busy_in_c' <<<"$out_c" || { echo "C consumer: function not on the stack"; echo "$out_c"; exit 1; }
# The C consumer is single-threaded: its watchdog runs as the installed stallwatch-watchdog.
if grep -q 'watchdog process unavailable' <<<"$out_c"; then
  echo "C consumer: the installed library did not start its watchdog process"; echo "$out_c"; exit 1
fi

# C++, via find_package(stallwatch CONFIG).
cmake -S "$here/consumer_cpp" -B "$work/cpp-build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cpp-build" >/dev/null
out_cpp=$(LD_LIBRARY_PATH="$libdir" "$work/cpp-build/consumer_cpp" 2>&1)
grep -q 'caught cpu stall' <<<"$out_cpp" || { echo "C++ consumer failed"; echo "$out_cpp"; exit 1; }
echo "install test: binaries run from $prefix without LD_LIBRARY_PATH, nothing outside it," \
  "unit rendered for it; C (pkg-config) and C++ (find_package) consumers caught their stalls"
