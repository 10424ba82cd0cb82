#!/usr/bin/env bash
# scripts/demo.sh builds only what the demo runs: the targets its build line names must pull in
# the two binaries, the agent library, the preload shim and the watchdog executable, and no test,
# benchmark or example. Reads the build graph (ninja -t commands); builds nothing.
set -euo pipefail
build="$1"; src="$2"
[ -f "$build/build.ninja" ] || { echo "not a Ninja build tree: skipped"; exit 77; }
line=$(grep -E '^cmake --build ' "$src/scripts/demo.sh") || { echo "demo.sh has no build line"; exit 1; }
[[ "$line" == *"--target "* ]] || { echo "demo.sh builds every target: $line"; exit 1; }
targets=${line##*--target }
cmds=$(ninja -C "$build" -t commands $targets)
for needed in stallwatchd stallwatch libstallwatch.so libstallwatch_preload.so stallwatch-watchdog; do
  # A here-string, not a pipe: grep -q leaves at the first match, and a writer still writing
  # would die of SIGPIPE and fail the pipeline (pipefail).
  grep -qE -- "-o ([^ ]*/)?${needed//./\\.}[.0-9]*( |$)" <<<"$cmds" || { echo "demo does not build $needed"; exit 1; }
done
extra=$(echo "$cmds" | grep -oE -- "-o [^ ]*(tests|bench|examples)/[^ ]*" | head -5 || true)
[ -z "$extra" ] || { echo "demo builds more than it runs:"; echo "$extra"; exit 1; }
echo "demo builds $(echo "$cmds" | wc -l) commands for: $targets"
