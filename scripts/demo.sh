#!/usr/bin/env bash
# The main job: installs what is needed, builds what the demo runs, then runs the whole system
# and stops by itself: stallwatchd, the bundled libevent server with the agent attached, a
# short block/async/thread-pool experiment, and the stalls the daemon caught.
# Usage: scripts/demo.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
scripts/install-deps.sh --demo
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# Only the two binaries; they pull in the agent library, the preload shim and the watchdog
# executable. The tests, benchmarks and fuzz targets are built by scripts/test.sh.
cmake --build "$BUILD" -j2 --target stallwatchd stallwatch

work=$(mktemp -d /tmp/stallwatch-demo-XXXXXX)
port=$((19466 + RANDOM % 500))
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo
echo "== 1. stallwatchd: agent socket $work/agent.sock, metrics and API on 127.0.0.1:$port"
# The demo's agents run as this user: the socket (in a private temporary folder) is for it alone.
"$BUILD/daemon/stallwatchd" --agent-socket "$work/agent.sock" --agent-socket-mode 0600 \
  --http-listen "127.0.0.1:$port" --log-level warn &
daemon_pid=$!
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo
echo "== 2. experiment: the bundled server (agent attached) under load; handlers that sleep on"
echo "==    the loop (block), wait with a loop timer (async), or sleep on a thread pool (offload)"
"$BUILD/cli/stallwatch" experiment --quick --modes block,async,offload -c 5,10 \
  --endpoint "unix:$work/agent.sock"

echo
echo "== 3. what the daemon caught (stallwatch stalls), newest first"
"$BUILD/cli/stallwatch" stalls --daemon "http://127.0.0.1:$port" --limit 2

echo
echo "== 4. the same in Prometheus metrics (stallwatch_stalls_total by class)"
curl -fs "http://127.0.0.1:$port/metrics" | grep '^stallwatch_stalls_total' | grep -v ' 0$' | head -5
echo
echo "demo finished: the blocking mode stalled the loop (class blocked, in clock_nanosleep);"
echo "async and offload did not. Next: README.md, docs/cli.md, '$BUILD/cli/stallwatch --help'."
