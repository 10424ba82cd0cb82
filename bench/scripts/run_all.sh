#!/usr/bin/env bash
# Runs every stallwatch benchmark and keeps each one's output in OUT (docs/benchmarks.md says
# how to read them). Every run is bounded in count and time; nothing listens beyond 127.0.0.1.
#
#   bench/scripts/run_all.sh [BUILD_DIR] [OUT_DIR]
#   QUICK=1   a short smoke run (CI): fewer repetitions, no wrk A/B
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-$HERE/../../build}
OUT=${2:-$BUILD/bench-results}
B=$BUILD/bench
mkdir -p "$OUT"
QUICK=${QUICK:-0}
run() {  # name, command...
  local name=$1; shift
  echo "== $name: $*  (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
  timeout 600 "$@" >"$OUT/$name.txt" 2>&1 || { echo "!! $name failed (exit $?)"; cat "$OUT/$name.txt"; return 1; }
  cat "$OUT/$name.txt"
  echo
}
if [[ $QUICK == 1 ]]; then
  run accuracy "$B/sw_bench_accuracy" --reps=1 --idle-s=2
  run detection "$B/sw_bench_detection" --reps=3 --thresholds=10,50
  run tick "$B/sw_bench_overhead" tick --samples=500
  run idle "$B/sw_bench_overhead" idle --seconds=2
  run memory "$B/sw_bench_overhead" memory --loops=1
  exit 0
fi
run accuracy "$B/sw_bench_accuracy" --reps=5 --idle-s=10
if command -v node >/dev/null; then run node_delay node "$HERE/../peers/node_delay.js" --reps=5 --idle-s=10; fi
run detection_sampling_on "$B/sw_bench_detection" --reps=10 --sampling=on --verbose=yes
run detection_sampling_off "$B/sw_bench_detection" --reps=10 --sampling=off --verbose=yes
run tick "$B/sw_bench_overhead" tick --samples=5000
[[ -x $B/sw_bench_hooks ]] && run hooks "$B/sw_bench_hooks" --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true
run idle_off_bare10 "$B/sw_bench_overhead" idle --agent=off --bare-timer-ms=10
run idle_1loop "$B/sw_bench_overhead" idle
run idle_1loop_thr1 "$B/sw_bench_overhead" idle --threshold-ms=1
run idle_4loops "$B/sw_bench_overhead" idle --loops=4
run memory_1 "$B/sw_bench_overhead" memory --loops=1
run memory_4 "$B/sw_bench_overhead" memory --loops=4
run memory_1_nosampling "$B/sw_bench_overhead" memory --loops=1 --sampling=off
run memory_4_nosampling "$B/sw_bench_overhead" memory --loops=4 --sampling=off
if command -v wrk >/dev/null; then
  run http_concurrent env ROUNDS=4 DURATION=5 "$HERE/http_concurrent.sh" "$BUILD"
  run http_concurrent_host_thread env ROUNDS=4 DURATION=5 OFF_ARGS=--host-thread=yes \
    "$HERE/http_concurrent.sh" "$BUILD"
  run http_ab env ROUNDS=6 DURATION=10 OFF_ARGS=--host-thread=yes "$HERE/http_ab.sh" "$BUILD"
fi
