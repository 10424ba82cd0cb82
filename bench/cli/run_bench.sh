#!/bin/sh
# Benchmarks of the CLI on loopback (docs/cli.md#benchmarks):
#   1. `stallwatch load` vs wrk on the same hello route (QPS and median latency);
#   2. `stallwatch serve` hello (agent on / off) vs a minimal evhttp program, under wrk.
# Usage: bench/cli/run_bench.sh [BUILD_DIR] [DURATION_S] [CONNECTIONS]
# Needs wrk (Debian package wrk). Each server runs alone, pinned to CPU 0, the client to CPU 1.
set -eu
BUILD=${1:-build}
DUR=${2:-10}
CONN=${3:-50}
SW="$BUILD/cli/stallwatch"
PLAIN="$BUILD/bench/cli/plain_evhttp_hello"
command -v wrk >/dev/null || { echo "run_bench.sh: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -x "$SW" ] || { echo "run_bench.sh: $SW not built" >&2; exit 1; }
if [ ! -x "$PLAIN" ]; then
  PLAIN=$(mktemp -d)/plain_evhttp_hello
  cc -O2 -o "$PLAIN" "$(dirname "$0")/plain_evhttp_hello.c" $(pkg-config --cflags --libs libevent)
fi
PORT=18890
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

start() {  # start NAME CMD...: runs CMD on CPU 0 and waits for the port
  name=$1; shift
  taskset -c 0 "$@" >/dev/null 2>&1 &
  pid=$!
  pids="$pids $pid"
  for _ in $(seq 50); do
    "$SW" load "http://127.0.0.1:$PORT/" -n 1 -c 1 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "run_bench.sh: $name did not start" >&2; exit 1
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }

wrk_run() {  # prints "QPS P50_MS"
  taskset -c 1 wrk -t2 -c"$CONN" -d"${DUR}s" --latency "http://127.0.0.1:$PORT/" |
    awk '/Requests\/sec/ {q=$2} /^ +50%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000}
         else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p=v}
         END {printf "%.0f %.3f\n", q, p}'
}
load_run() {  # prints "QPS P50_MS"
  taskset -c 1 "$SW" load "http://127.0.0.1:$PORT/" -c "$CONN" -t "$1" -d "${DUR}s" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.3f" % (r["qps"], r["latency_s"]["p50"]*1e3))'
}

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, ${DUR}s runs, $CONN connections"
echo "server                         client                    req/s   p50 ms"
row() { printf "%-30s %-22s %8s %8s\n" "$1" "$2" "$3" "$4"; }

start plain "$PLAIN" "$PORT"
set -- $(wrk_run); row "plain evhttp" "wrk -t2" "$1" "$2"
stop
start serve-no-agent "$SW" serve --port "$PORT" --no-agent
set -- $(wrk_run); row "stallwatch serve --no-agent" "wrk -t2" "$1" "$2"
stop
start serve "$SW" serve --port "$PORT" --endpoint off
set -- $(wrk_run); row "stallwatch serve (agent)" "wrk -t2" "$1" "$2"
set -- $(load_run 1); row "stallwatch serve (agent)" "stallwatch load -t1" "$1" "$2"
set -- $(load_run 2); row "stallwatch serve (agent)" "stallwatch load -t2" "$1" "$2"
stop
start plain "$PLAIN" "$PORT"
set -- $(load_run 1); row "plain evhttp" "stallwatch load -t1" "$1" "$2"
stop
