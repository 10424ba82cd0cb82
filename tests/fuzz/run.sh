#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DSW_FUZZ=ON, in build-fuzz/) and runs each one for N
# seconds on a copy of its seed corpus (tests/fuzz/corpus/<target>/). Prints executions, speed
# and coverage per target; exits non-zero when a target crashed (the reproducer is kept in
# build-fuzz/fuzz-out/<target>/artifacts/, the log beside it). See docs/fuzzing.md.
#
# Usage: tests/fuzz/run.sh [seconds-per-target] [target...]
#   SW_FUZZ_BUILD=dir  build directory (default build-fuzz)
#   SW_FUZZ_JOBS=n     build parallelism (default 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-30}"
[ $# -gt 0 ] && shift
ALL=(wire_codec duration env proc http_query daemon_frames)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
BUILD="${SW_FUZZ_BUILD:-build-fuzz}"
JOBS="${SW_FUZZ_JOBS:-2}"

for tool in clang clang++; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt-get install clang libclang-rt-14-dev)"; exit 2; }
done
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
build_start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSW_FUZZ=ON -DSW_BUILD_BENCH=OFF \
  "${launcher[@]}" >/dev/null
cmake --build "$BUILD" -j"$JOBS" --target fuzzers
echo "== fuzzers built in $(( $(date +%s) - build_start )) s; ${SECS} s per target"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
out="$BUILD/fuzz-out"
failed=()
summary=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD/tests/fuzz/fuzz_$t"
  [ -x "$bin" ] || { echo "run.sh: no fuzz target '$t' (known: ${ALL[*]})"; exit 2; }
  work="$out/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp tests/fuzz/corpus/"$t"/* "$work/corpus/"
  args=(-max_total_time="$SECS" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
        -use_value_profile=1 -artifact_prefix="$work/artifacts/")
  [ -f "tests/fuzz/dict/$t.dict" ] && args+=(-dict="tests/fuzz/dict/$t.dict")
  echo "== fuzz_$t"
  rc=0
  "$bin" "${args[@]}" "$work/corpus" >"$work/log" 2>&1 || rc=$?
  # The last status line: "#N DONE cov: C ft: F corp: X/Yb ... exec/s: E rss: RMb".
  last=$(grep -E '^#[0-9]+' "$work/log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/log")
  if [ "$rc" -ne 0 ]; then
    echo "-- fuzz_$t FAILED (exit $rc); reproducer: $(ls "$work/artifacts" | head -n 3 | tr '\n' ' ')"
    grep -E "ERROR|invariant failed|runtime error|SUMMARY" "$work/log" | head -n 10 || true
    echo "   full log: $work/log"
    failed+=("$t")
    result=CRASH
  else
    result=ok
  fi
  line=$(printf '%-14s %10s execs %8s exec/s  cov %5s  ft %6s  corpus %-12s rss %5s MB  %s' \
    "$t" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" "$result")
  echo "-- $line"
  summary+=("$line")
done
echo "== summary (${SECS} s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "== crashed: ${failed[*]}"
  exit 1
fi
