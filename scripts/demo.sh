#!/usr/bin/env bash
# The main job: installs what is needed, builds, and runs a short demonstration of a caught stall.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2
if [ -x build/cli/stallwatch ] && build/cli/stallwatch demo --help >/dev/null 2>&1; then
  exec build/cli/stallwatch demo
fi
echo "== stall_demo: a libevent program with the agent attached (findings as JSON Lines) =="
build/examples/stall_demo 2>&1 | python3 scripts/format_findings.py
