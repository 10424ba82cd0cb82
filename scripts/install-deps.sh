#!/usr/bin/env bash
# Installs the Debian packages stallwatch builds, tests and demos with. Skips apt entirely when
# everything is already installed. Run as root (or with sudo available).
#   --fuzz   also clang and its libFuzzer runtime (tests/fuzz/run.sh, CI)
#   --demo   only what scripts/demo.sh builds and runs with (no browser, Go, Prometheus or the
#            real programs the tests watch): a newcomer's first run fetches the least
set -euo pipefail
# What the daemon, the CLI and the agent build with (tests configure with GoogleTest).
BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ccache
  libevent-dev prometheus-cpp-dev libspdlog-dev libcli11-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libdw-dev libelf-dev libbenchmark-dev
  libprotobuf-dev protobuf-compiler zlib1g-dev curl python3
)
# What the tests and benchmarks run: a real Prometheus, real event loops to watch, a browser for
# the web page, Go's pprof, valgrind.
TEST_PACKAGES=(
  prometheus wrk tmux python3-yaml systemd memcached libmemcached-tools
  redis-server python3-tornado nodejs libpython3.11-dev valgrind golang-go chromium
)
PACKAGES=("${BUILD_PACKAGES[@]}")
case "${1:-}" in
  --demo) ;;
  --fuzz) PACKAGES+=("${TEST_PACKAGES[@]}" clang libclang-rt-14-dev clang-format) ;;
  *) PACKAGES+=("${TEST_PACKAGES[@]}") ;;
esac
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
