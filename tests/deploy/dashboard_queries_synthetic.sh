#!/usr/bin/env bash
# Runs dashboard_queries.sh against a real Prometheus (Debian's package) scraping
# fake_stallwatchd.py, an exposition with the daemon's metric names, labels and buckets: every
# panel and variable query must parse and return data. Loopback only, bounded to ~90 s.
# Usage: dashboard_queries_synthetic.sh PROMETHEUS_BINARY PYTHON
set -euo pipefail
prom="$1"; py="$2"
here="$(cd "$(dirname "$0")" && pwd)"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$py" "$here/fake_stallwatchd.py" "$work/exporter.port" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/exporter.port" ] && break; sleep 0.1; done
[ -s "$work/exporter.port" ] || { echo "fake exporter did not start"; exit 1; }
exporter_port=$(cat "$work/exporter.port")
prom_port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

source "$here/prometheus_lib.sh"
start_prometheus "$prom" "$work" "127.0.0.1:$exporter_port" "$prom_port"
url="http://127.0.0.1:$prom_port"
# rate() needs two samples; the script retries empty results for up to 40 s.
SW_WAIT=40 SW_RATE_INTERVAL=10s SW_RANGE=1m timeout 120 bash "$here/dashboard_queries.sh" "$url"
