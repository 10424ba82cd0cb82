#!/usr/bin/env bash
# Throughput A/B for a noisy shared machine: the agent-on and agent-off servers run AT THE SAME
# TIME, both pinned to CPU 0, each loaded by its own wrk (both pinned to CPU 1), so whatever
# else runs on the machine hits both alike. Reported per round: req/s of each and the CPU time
# per request of each server process (all threads, schedstat, plus its child processes: the
# agent's watchdog and reporter — threads, or the stallwatch-watchdog process of a
# single-threaded server — are charged to the agent-on server). With both servers saturated, off/on CPU per
# request is the throughput ratio a CPU-bound server would see. Bounded: ROUNDS x DURATION s.
#
#   bench/scripts/http_concurrent.sh [BUILD_DIR]
#   env: ROUNDS=5 DURATION=10 CONNS=25 PORT=8899 AGENT_ARGS=""
#        WARMUP=3     seconds between start-up and measurement
#        OFF_ARGS="--host-thread=yes"  (the agent-off server is multi-threaded too)
#        ON_MODE=off  (A/A control: both servers without the agent)
#        AGENT_CPU=1  (experiment: move the agent's own threads — watchdog, reporter — off the
#                      server's CPU 0, to see what sharing the server's core costs)
#        OFF_ENV="" ON_ENV=""  (variables for each server's environment, e.g. the blocking-call
#                      ledger under the preload shim, on vs off, both servers without the
#                      linked agent: ON_MODE=off OFF_ENV="LD_PRELOAD=…/libstallwatch_preload.so
#                      STALLWATCH_ENDPOINT=off STALLWATCH_LEDGER=off" ON_ENV="LD_PRELOAD=…
#                      STALLWATCH_ENDPOINT=off"; docs/benchmarks.md §10)
set -euo pipefail
BUILD=${1:-$(dirname "$0")/../../build}
BIN=$BUILD/bench/sw_bench_http
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-25}
PORT=${PORT:-8899}
AGENT_ARGS=${AGENT_ARGS:-}
AGENT_CPU=${AGENT_CPU:-}
OFF_ARGS=${OFF_ARGS:-}
OFF_ENV=${OFF_ENV:-}
ON_ENV=${ON_ENV:-}
WARMUP=${WARMUP:-3}  # seconds after start-up before measuring (the agent's unwinder warms up)
[[ -x $BIN ]] || { echo "http_concurrent.sh: $BIN not built" >&2; exit 1; }
command -v wrk >/dev/null || { echo "http_concurrent.sh: wrk not installed" >&2; exit 1; }
[[ $(nproc) -ge 2 ]] || { echo "http_concurrent.sh: needs 2 CPUs" >&2; exit 1; }

main_cpu_ns() { awk '{printf "%.0f", $1}' /proc/"$1"/task/"$1"/schedstat 2>/dev/null; }
# All threads of the process and of its children (the agent's stallwatch-watchdog process).
proc_cpu_ns() {
  local p kids
  kids=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)
  for p in "$1" $kids; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done |
    awk '{s += $1} END {printf "%.0f", s}'
}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

tmp=$(mktemp -d)
echo "# http_concurrent: $(date -u +%FT%TZ) nproc=$(nproc) loadavg=$(cat /proc/loadavg)"
echo "# both servers taskset -c 0; per server: taskset -c 1 wrk -t1 -c$CONNS -d${DURATION}s; agent args: ${AGENT_ARGS:-defaults}; agent threads on CPU ${AGENT_CPU:-0 (inherited)}; agent-off server args: ${OFF_ARGS:-none}; env off: ${OFF_ENV:-none}; env on: ${ON_ENV:-none}"
echo
echo "| round | load 1-min | req/s off | req/s on | on/off | CPU µs/request off | on | off/on | on, loop thread only | agent CPU (ms): its threads or watchdog process |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for ((r = 1; r <= ROUNDS; r++)); do
  # Swap the ports every round so neither mode always gets the same one.
  if ((r % 2)); then p_off=$PORT; p_on=$((PORT + 1)); else p_on=$PORT; p_off=$((PORT + 1)); fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  # shellcheck disable=SC2086
  # shellcheck disable=SC2086
  taskset -c 0 env $OFF_ENV "$BIN" --port=$p_off --agent=off --seconds=$((DURATION + 30)) $OFF_ARGS 2>/dev/null &
  s_off=$!
  # shellcheck disable=SC2086
  taskset -c 0 env $ON_ENV "$BIN" --port=$p_on --agent="${ON_MODE:-on}" --seconds=$((DURATION + 30)) $AGENT_ARGS 2>"$tmp/on.log" &
  s_on=$!
  pids=("$s_off" "$s_on")
  wait_port "$p_off"; wait_port "$p_on"
  if [[ -n $AGENT_CPU ]]; then
    for t in /proc/"$s_on"/task/*; do
      tid=${t##*/}
      [[ $tid == "$s_on" ]] || taskset -p -c "$AGENT_CPU" "$tid" >/dev/null
    done
    for kid in $(cat /proc/"$s_on"/task/*/children 2>/dev/null || true); do
      taskset -a -p -c "$AGENT_CPU" "$kid" >/dev/null
    done
  fi
  wrk -t1 -c10 -d1s "http://127.0.0.1:$p_off/" >/dev/null
  wrk -t1 -c10 -d1s "http://127.0.0.1:$p_on/" >/dev/null
  sleep "$WARMUP"
  c_off0=$(proc_cpu_ns "$s_off"); c_on0=$(proc_cpu_ns "$s_on"); m_on0=$(main_cpu_ns "$s_on")
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$p_off/" >"$tmp/off.txt" &
  w1=$!
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$p_on/" >"$tmp/on.txt" &
  w2=$!
  wait "$w1" "$w2"
  c_off1=$(proc_cpu_ns "$s_off"); c_on1=$(proc_cpu_ns "$s_on"); m_on1=$(main_cpu_ns "$s_on")
  kill -TERM "$s_off" "$s_on"; wait "$s_off" "$s_on" || true
  pids=()
  rps_off=$(awk '/Requests\/sec/ {print $2}' "$tmp/off.txt")
  rps_on=$(awk '/Requests\/sec/ {print $2}' "$tmp/on.txt")
  n_off=$(awk '/requests in/ {print $1}' "$tmp/off.txt")
  n_on=$(awk '/requests in/ {print $1}' "$tmp/on.txt")
  awk -v r="$r" -v l="$load" -v a="$rps_off" -v b="$rps_on" -v co=$((c_off1 - c_off0)) \
      -v cn=$((c_on1 - c_on0)) -v mn=$((m_on1 - m_on0)) -v no="$n_off" -v nn="$n_on" 'BEGIN {
    uo = co / 1e3 / no; un = cn / 1e3 / nn
    printf "| %d | %s | %.0f | %.0f | %.4f | %.3f | %.3f | %.4f | %.3f | %.1f |\n", r, l, a, b, b / a,
      uo, un, uo / un, mn / 1e3 / nn, (cn - mn) / 1e6
  }' | tee -a "$tmp/rows"
done
echo
awk -F'|' '{ on_off[NR] = $6 + 0; cpu[NR] = $9 + 0; n = NR }
  END {
    for (k = 1; k <= 2; k++) {
      split("", v); for (i = 1; i <= n; i++) v[i] = (k == 1 ? on_off[i] : cpu[i])
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      med[k] = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    printf "median req/s on/off = %.4f; median CPU per request off/on = %.4f (target >= 0.99: %s)\n",
      med[1], med[2], (med[2] >= 0.99 ? "met" : "MISSED")
  }' "$tmp/rows"
grep -o 'agent: .*' "$tmp/on.log" | sed 's/^/# last agent-on server: /' || true
echo "# loadavg at end: $(cat /proc/loadavg)"
rm -rf "$tmp"
