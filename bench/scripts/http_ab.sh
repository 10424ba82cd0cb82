#!/usr/bin/env bash
# Throughput of a libevent evhttp "hello" server with the agent attached vs not, measured with
# wrk side by side in one run: the same binary (sw_bench_http --agent=on|off), alternating
# A/B then B/A per round, server pinned to CPU 0 and wrk to CPU 1. Bounded: ROUNDS x 2 runs of
# DURATION seconds; the server also exits by itself after DURATION+30 s.
# Besides req/s it reports the server's CPU time per request (all its threads, schedstat): on a
# shared machine req/s swings with other processes' load, CPU per request much less.
#
#   bench/scripts/http_ab.sh [BUILD_DIR]
#   env: ROUNDS=3 DURATION=10 CONNS=50 THREADS=2 PORT=8899 PIN=1 AGENT_ARGS="" (e.g.
#        AGENT_ARGS="--threshold-ms=1 --interval-ms=1") OFF_ARGS="" (e.g. "--host-thread=yes")
set -euo pipefail
BUILD=${1:-$(dirname "$0")/../../build}
BIN=$BUILD/bench/sw_bench_http
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
PORT=${PORT:-8899}
PIN=${PIN:-1}
AGENT_ARGS=${AGENT_ARGS:-}
OFF_ARGS=${OFF_ARGS:-}
[[ -x $BIN ]] || { echo "http_ab.sh: $BIN not built" >&2; exit 1; }
command -v wrk >/dev/null || { echo "http_ab.sh: wrk not installed" >&2; exit 1; }

# On-CPU time (ns) of all threads of a process, from schedstat: the agent's threads included.
proc_cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'; }

server_pid=""
cleanup() { [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

srv_pin=(); cli_pin=()
if [[ $PIN == 1 ]] && command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
  srv_pin=(taskset -c 0); cli_pin=(taskset -c 1)
fi
log=$(mktemp)
results=$(mktemp)
echo "# http_ab: $(date -u +%FT%TZ) nproc=$(nproc) loadavg=$(cat /proc/loadavg)"
echo "# wrk -t$THREADS -c$CONNS -d${DURATION}s, server ${srv_pin[*]:-unpinned}, wrk ${cli_pin[*]:-unpinned}, agent args: ${AGENT_ARGS:-defaults}"
echo
echo "| round | agent | load 1-min | req/s | server CPU µs/request | latency p50 | p99 | server's agent summary |"
echo "|---|---|---|---|---|---|---|---|"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(off on); else order=(on off); fi
  for mode in "${order[@]}"; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2086
    args=$AGENT_ARGS; [[ $mode == off ]] && args=$OFF_ARGS
    # shellcheck disable=SC2086
    "${srv_pin[@]}" "$BIN" --port="$PORT" --agent="$mode" --seconds=$((DURATION + 30)) $args \
      2>"$log" &
    server_pid=$!
    for _ in $(seq 50); do
      (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
      sleep 0.1
    done
    wrk -t1 -c10 -d1s "http://127.0.0.1:$PORT/" >/dev/null  # warm-up
    cpu0=$(proc_cpu_ns "$server_pid")
    out=$("${cli_pin[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
      "http://127.0.0.1:$PORT/")
    cpu1=$(proc_cpu_ns "$server_pid")
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=""
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errs=$(awk '/Socket errors|Non-2xx/ {printf "%s ", $0}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$reqs" 'BEGIN {printf "%.3f", (b - a) / 1e3 / n}')
    summary=$(grep -o 'agent: .*' "$log" || echo "-")
    echo "| $r | $mode | $load | $rps | $cpu_us | $p50 | $p99 | ${summary}${errs:+ ERR: $errs} |"
    echo "$r $mode $rps $cpu_us" >>"$results"
  done
done
echo
awk '
  { rps[$1, $2] = $3; cpu[$1, $2] = $4; if ($1 > n) n = $1 }
  END {
    for (i = 1; i <= n; i++) {
      x[1, i] = rps[i, "on"]; x[2, i] = rps[i, "off"]; x[3, i] = rps[i, "on"] / rps[i, "off"]
      x[4, i] = cpu[i, "on"]; x[5, i] = cpu[i, "off"]; x[6, i] = cpu[i, "off"] / cpu[i, "on"]
      printf "round %d: req/s on/off = %.4f; CPU per request off/on = %.4f\n", i, x[3, i], x[6, i]
    }
    for (k = 1; k <= 6; k++) {  # medians (n is small: exchange sort)
      split("", v); for (i = 1; i <= n; i++) v[i] = x[k, i]
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      med[k] = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    printf "median req/s: agent on %.0f, off %.0f; median per-round ratio on/off = %.4f (target >= 0.99: %s)\n",
      med[1], med[2], med[3], (med[3] >= 0.99 ? "met" : "MISSED")
    printf "median server CPU per request: on %.3f us, off %.3f us; median per-round off/on = %.4f " \
      "(the throughput ratio of a CPU-bound server; target >= 0.99: %s)\n",
      med[4], med[5], med[6], (med[6] >= 0.99 ? "met" : "MISSED")
  }' "$results"
echo "# loadavg at end: $(cat /proc/loadavg)"
rm -f "$log" "$results"
