#!/usr/bin/env bash
# Throughput and memory of Debian's memcached (-t 4) with and without libstallwatch_preload.so,
# under the same fixed memcslap load, alternating A/B runs in one session (loopback only).
#   bench/preload/memcached_bench.sh [build-dir] [pairs=3] [ops-per-thread=20000]
set -euo pipefail
build="${1:-build}"; pairs="${2:-3}"; ops="${3:-20000}"
preload="$(cd "$build" && pwd)/agent/preload/libstallwatch_preload.so"
port=$((22000 + $$ % 10000))

run_once() {  # $1 = with|without; prints "ops_per_s rss_kib"
  local env_preload=""
  [ "$1" = with ] && env_preload="LD_PRELOAD=$preload STALLWATCH_ENDPOINT=off"
  env $env_preload memcached -u root -t 4 -l 127.0.0.1 -p "$port" -U 0 &
  local mc=$!
  sleep 0.7
  local secs
  secs=$(timeout 120 memcslap --servers=127.0.0.1:$port --concurrency=8 --execute-number="$ops" \
           2>&1 | awk '/Time total/ {print $3}')
  local rss
  rss=$(awk '/VmRSS/ {print $2}' /proc/$mc/status)
  kill "$mc"; wait "$mc" 2>/dev/null || true
  awk -v s="$secs" -v n="$ops" -v r="$rss" 'BEGIN { printf "%.0f %d\n", 8 * n / s, r }'
}

echo "load: $(cut -d' ' -f1-3 /proc/loadavg)   memcslap --concurrency=8 --execute-number=$ops (sets)"
printf "%-5s %-8s %12s %10s\n" pair mode ops/s rss_KiB
for i in $(seq 1 "$pairs"); do
  for mode in without with; do
    read -r qps rss < <(run_once $mode)
    printf "%-5s %-8s %12s %10s\n" "$i" "$mode" "$qps" "$rss"
    echo "$mode $qps $rss" >> /tmp/stallwatch-mc-bench.$$
  done
done
awk '{q[$1]+=$2; r[$1]+=$3; n[$1]++} END {
  printf "mean: without %.0f ops/s, with %.0f ops/s, ratio %.3f; RSS +%.0f KiB\n",
         q["without"]/n["without"], q["with"]/n["with"], (q["with"]/n["with"])/(q["without"]/n["without"]),
         r["with"]/n["with"] - r["without"]/n["without"] }' /tmp/stallwatch-mc-bench.$$
rm -f /tmp/stallwatch-mc-bench.$$
