#!/usr/bin/env bash
# Every panel and variable query of every dashboard, evaluated by a real Prometheus (Debian's
# package) scraping the real stallwatchd, while the bundled server with the agent attached
# stalls its loop on purpose (cpu and sleep) and a Python asyncio loop under the preload shim
# (`stallwatch run`) makes blocking calls on its thread (the blocking-call ledger's series).
# A parse error or an empty result fails the test.
# Loopback only; every process started here is ended by its PID; bounded to ~2 minutes.
# Usage: dashboards_real_daemon.sh STALLWATCHD STALLWATCH PROMETHEUS
set -euo pipefail
daemon_bin="$1"; cli="$2"; prom="$3"
here="$(cd "$(dirname "$0")" && pwd)"
queries="$here/../../deploy/dashboard_queries.sh"
work=$(mktemp -d /tmp/stallwatch-dash-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 100); do curl -fs --max-time 1 "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

daemon_port=$(free_port); serve_port=$(free_port); prom_port=$(free_port)
"$daemon_bin" --agent-socket "$work/agent.sock" --http-listen "127.0.0.1:$daemon_port" \
  --log-level warn >"$work/daemon.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$daemon_port/healthz" || { cat "$work/daemon.log"; exit 1; }

STALLWATCH_REPORT_INTERVAL=1s "$cli" serve --port "$serve_port" --service dashdemo \
  --endpoint "unix:$work/agent.sock" >"$work/serve.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$serve_port/" || { cat "$work/serve.log"; exit 1; }
# A 120 ms stall every 700 ms: cpu. One-off sleeps on the loop: blocked.
"$cli" block --url "http://127.0.0.1:$serve_port" --duration 120ms --period 700ms --kind cpu
for _ in 1 2 3; do curl -fs --max-time 5 "http://127.0.0.1:$serve_port/block?ms=150" >/dev/null; done

# An unmodified Python program whose asyncio loop sleeps 2 ms (time.sleep: clock_nanosleep) and
# resolves a name (getaddrinfo) in a callback every ~20 ms, for 60 s at most.
STALLWATCH_REPORT_INTERVAL=1s STALLWATCH_WATCHDOG=thread "$cli" run \
  --endpoint "unix:$work/agent.sock" --service dashcalls -- python3 -c '
import asyncio, socket, time
def tick(loop, end):
    time.sleep(0.002)
    socket.getaddrinfo("localhost", 80)
    if loop.time() < end:
        loop.call_later(0.02, tick, loop, end)
    else:
        loop.stop()
loop = asyncio.new_event_loop()
loop.call_soon(tick, loop, loop.time() + 60)
loop.run_forever()
' >"$work/calls.log" 2>&1 &
pids+=($!)

source "$here/../../deploy/prometheus_lib.sh"
start_prometheus "$prom" "$work" "127.0.0.1:$daemon_port" "$prom_port"

# rate() needs two samples; the script retries empty results for up to 40 s.
SW_WAIT=40 SW_RATE_INTERVAL=10s SW_RANGE=1m timeout 150 bash "$queries" "http://127.0.0.1:$prom_port"

# The series carry the process slot (`process`), never the pid: the pid is a label of
# stallwatch_process_info only, one series per process.
metrics=$(curl -fs --max-time 10 "http://127.0.0.1:$daemon_port/metrics")
with_pid=$(grep -v '^#' <<<"$metrics" | grep -v '^stallwatch_process_info{' | grep 'pid="' || true)
if [ -n "$with_pid" ]; then
  echo "FAIL: series with a pid label other than stallwatch_process_info:"
  head -5 <<<"$with_pid"
  exit 1
fi
info=$(grep '^stallwatch_process_info{' <<<"$metrics" || true)
if ! grep 'process="0",service="dashdemo"' <<<"$info" | grep -q 'start_time="[0-9][0-9]*"} 1$'; then
  echo "FAIL: no stallwatch_process_info of dashdemo's process 0: $info"
  exit 1
fi
echo "ok: no pid label on the series; stallwatch_process_info names the pid and start time"

# The ledger of dashcalls' loop: both calls counted in Prometheus, and their call sites ranked
# by `stallwatch calls`.
ledger=$(curl -fs --max-time 10 "http://127.0.0.1:$prom_port/api/v1/query" \
  --data-urlencode 'query=sum by (call) (stallwatch_blocking_calls_total{service="dashcalls"}) > 0')
for call in getaddrinfo clock_nanosleep; do
  if ! grep -q "\"call\":\"$call\"" <<<"$ledger"; then
    echo "FAIL: no $call of dashcalls in stallwatch_blocking_calls_total: $ledger"
    cat "$work/calls.log"
    exit 1
  fi
done
sites=$("$cli" calls --daemon "http://127.0.0.1:$daemon_port" --service dashcalls)
if ! grep -q "^  getaddrinfo from " <<<"$sites" || ! grep -q "^  clock_nanosleep from " <<<"$sites"; then
  echo "FAIL: stallwatch calls does not list dashcalls' getaddrinfo and clock_nanosleep sites:"
  echo "$sites"
  exit 1
fi
echo "ok: the ledger counts dashcalls' getaddrinfo and clock_nanosleep; stallwatch calls ranks their sites"
