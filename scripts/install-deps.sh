#!/usr/bin/env bash
# Installs the Debian packages stallwatch builds, tests and demos with. Skips apt entirely when
# everything is already installed. Run as root (or with sudo available).
#   --fuzz   also clang and its libFuzzer runtime (tests/fuzz/run.sh, CI)
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build pkg-config git ccache
  libevent-dev prometheus-cpp-dev libspdlog-dev libcli11-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libdw-dev libelf-dev libbenchmark-dev
  prometheus wrk tmux python3 python3-yaml curl systemd memcached libmemcached-tools
  redis-server python3-tornado nodejs libpython3.11-dev valgrind
  libprotobuf-dev protobuf-compiler zlib1g-dev golang-go chromium
)
# CI also checks formatting (clang-format) and runs the fuzzers (clang, libFuzzer).
if [ "${1:-}" = "--fuzz" ]; then PACKAGES+=(clang libclang-rt-14-dev clang-format); fi
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
