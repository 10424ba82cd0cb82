#!/usr/bin/env bash
# Installs what is needed, builds with warnings as errors and runs every test (unit,
# integration, end-to-end). Usage: scripts/test.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
scripts/install-deps.sh
# ccache (cmake/ccache.cmake) keys on paths relative to the clone, so another clone of the same
# commit hits the cache; the objects' debug info keeps relative source paths.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
cmake -S . -B "$BUILD" -G Ninja -DSW_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
cmake --build "$BUILD" -j2
# A test that fails is run once more before the run counts as failed: several integration tests
# time real stalls on real loops, and a machine busy with other work can starve one of them.
# Every test that passed only on that rerun is listed under FLAKY: so that it gets fixed.
if ! ctest --test-dir "$BUILD" --output-on-failure; then
  failed_log="$BUILD/Testing/Temporary/LastTestsFailed.log"
  flaky=$(cut -d: -f2- "$failed_log")
  echo "== running the failed tests once more: $(echo $flaky)"
  ctest --test-dir "$BUILD" --rerun-failed --output-on-failure
  echo "FLAKY: these tests failed once and passed on the rerun:"
  echo "$flaky" | sed 's/^/  /'
fi
