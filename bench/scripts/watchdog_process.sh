#!/usr/bin/env bash
# What the watchdog process costs, measured on a real single-threaded libevent program
# (tests/integration/agent/single_thread_host, mode "forever": an idle loop with the agent
# attached, default settings, endpoint off):
#   - start-up: attach → watchdog running, over 100 attach/detach cycles (mode "cycle 100");
#   - idle CPU over DURATION s of the host's loop thread and of stallwatch-watchdog
#     (/proc/PID/task/*/schedstat);
#   - memory: the host's RssAnon/RssShmem and the watchdog's RssAnon/VmRSS.
# Bounded: one host, DURATION s (default 10), killed by PID at the end.
#
#   bench/scripts/watchdog_process.sh [BUILD_DIR]
set -euo pipefail
BUILD=${1:-$(dirname "$0")/../../build}
HOST=$BUILD/tests/integration/agent/single_thread_host
DURATION=${DURATION:-10}
[[ -x $HOST ]] || { echo "watchdog_process.sh: $HOST not built" >&2; exit 1; }
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'; }
field() { awk -v k="$2:" '$1 == k {print $2}' /proc/"$1"/status; }

echo "# watchdog_process.sh: $(date -u +%FT%TZ) loadavg=$(cat /proc/loadavg)"
t0=$(date +%s%N)
"$HOST" cycle 100 >/tmp/sw-cycle.$$
t1=$(date +%s%N)
echo "100 attach/detach cycles (each starts and reaps a watchdog process): $(( (t1 - t0) / 1000000 )) ms, $(cat /tmp/sw-cycle.$$)"
rm -f /tmp/sw-cycle.$$

exec 3< <("$HOST" forever)
host=$!
trap 'kill "$host" 2>/dev/null || true' EXIT
read -r line <&3
wd=$(echo "$line" | sed -n 's/.*"watchdog_pid":\([0-9]*\).*/\1/p')
[[ -n $wd && $wd != 0 ]] || { echo "no watchdog process: $line" >&2; exit 1; }
sleep 2
h0=$(cpu_ns "$host"); w0=$(cpu_ns "$wd")
sleep "$DURATION"
h1=$(cpu_ns "$host"); w1=$(cpu_ns "$wd")
echo "host threads: $(field "$host" Threads); watchdog process $wd threads: $(field "$wd" Threads)"
awk -v h=$((h1 - h0)) -v w=$((w1 - w0)) -v d="$DURATION" 'BEGIN {
  printf "idle %d s: host (loop thread, probe every 10 ms) %.1f ms CPU; watchdog process %.1f ms CPU = %.2f %% of a core\n",
    d, h / 1e6, w / 1e6, w / 1e7 / d }'
echo "host: RssAnon $(field "$host" RssAnon) kB, RssShmem $(field "$host" RssShmem) kB; watchdog: RssAnon $(field "$wd" RssAnon) kB, VmRSS $(field "$wd" VmRSS) kB"
kill "$host"; wait "$host" 2>/dev/null || true

# Memory after one 150 ms CPU stall with stacks (mode "stall-idle").
exec 4< <("$HOST" stall-idle)
host=$!
read -r line <&4  # printed 0.5 s after the stall
wd=$(echo "$line" | sed -n 's/.*"watchdog_pid":\([0-9]*\).*/\1/p')
echo "after a 150 ms CPU stall with stacks ($(echo "$line" | grep -o '"stalls_total":[0-9]*')): host RssAnon $(field "$host" RssAnon) kB, RssShmem $(field "$host" RssShmem) kB; watchdog RssAnon $(field "$wd" RssAnon) kB, VmRSS $(field "$wd" VmRSS) kB"
kill "$host"
