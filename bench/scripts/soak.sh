#!/usr/bin/env bash
# Soak benchmark (docs/benchmarks.md, "Soak: 50 agents, 10 minutes"): PROCS processes × LOOPS
# libevent loops, each loop with the real agent attached, report to one real stallwatchd over
# its Unix socket while injecting stalls for DURATION seconds. The daemon's RSS is sampled (and
# /metrics scraped, as Prometheus would) every INTERVAL seconds. At the end it checks:
#   - memory flat: last RSS within 20 % (and 4 MiB) of the RSS after warm-up;
#   - no unexplained drops: agents' findings_dropped_total = 0 on both sides, no rejected frame;
#   - every stall accounted for: each injected stall matches a closed stall the agent reported
#     on that loop (overlapping in time); per process, the daemon's stallwatch_stalls_total
#     equals the agent's own count; the stalls longer than 100 ms on /metrics equal those the
#     agent reported (the injected ones are 120 ms). Stalls the machine caused on its own (CPU
#     contention) are reported as such, not hidden.
# Exit 0 when every check passes. Bounded: the agents stop after DURATION, everything is
# killed by PID (only the processes this script started) at DURATION + 120 s at the latest.
#
#   bench/scripts/soak.sh [--duration 600] [--procs 10] [--loops 5] [--interval 10]
#                         [--build DIR] [--out DIR]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DURATION=600 PROCS=10 LOOPS=5 INTERVAL=10
BUILD=$HERE/../../build
OUT=""
usage() {
  echo "usage: soak.sh [--duration SECONDS] [--procs N] [--loops N] [--interval SECONDS] [--build DIR] [--out DIR]" >&2
  exit 2
}
while [[ $# -gt 0 ]]; do
  [[ $# -ge 2 ]] || usage
  case $1 in
    --duration) DURATION=$2 ;;
    --procs) PROCS=$2 ;;
    --loops) LOOPS=$2 ;;
    --interval) INTERVAL=$2 ;;
    --build) BUILD=$2 ;;
    --out) OUT=$2 ;;
    *) usage ;;
  esac
  shift 2
done
for v in "$DURATION" "$PROCS" "$LOOPS" "$INTERVAL"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: '$v' is not a positive integer" >&2; usage; }
done
DAEMON=$BUILD/daemon/stallwatchd
AGENT=$BUILD/bench/daemon/soak_agent
[[ -x $DAEMON && -x $AGENT ]] || { echo "soak.sh: build stallwatchd and soak_agent first (ninja -C $BUILD stallwatchd soak_agent)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/sw-soak.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK/run"
}
trap cleanup EXIT

SOCK=$WORK/run/agent.sock
"$DAEMON" --agent-socket "$SOCK" --http-listen 127.0.0.1:0 --expire-after 30m \
  --log-level info 2>"$OUT/stallwatchd.log" &
DPID=$!
PIDS+=("$DPID")
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n 's/.*serving .* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/stallwatchd.log" | head -1)
  [[ -n $PORT && -S $SOCK ]] && break
  sleep 0.1
done
[[ -n $PORT ]] || { echo "soak.sh: stallwatchd did not start:" >&2; cat "$OUT/stallwatchd.log" >&2; exit 1; }
URL=http://127.0.0.1:$PORT
echo "soak: stallwatchd pid $DPID on $URL; $PROCS processes x $LOOPS loops for ${DURATION}s; results in $OUT"

for i in $(seq "$PROCS"); do
  "$AGENT" --socket "$SOCK" --service "soak-$i" --loops "$LOOPS" --duration-s "$DURATION" \
    >"$OUT/agent-$i.json" 2>"$OUT/agent-$i.log" &
  PIDS+=("$!")
done
AGENT_PIDS=("${PIDS[@]:1}")

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$DPID/status"; }
echo "t_s,rss_kib,metrics_bytes,agents_connected,loadavg1" >"$OUT/rss.csv"
START=$(date +%s)
DEADLINE=$((START + DURATION + 120))
while :; do
  NOW=$(date +%s)
  M=$(curl -s --max-time 10 "$URL/metrics" || true)
  CONNECTED=$(awk '/^stallwatch_agents_connected / {print $2}' <<<"$M")
  echo "$((NOW - START)),$(rss_kib),${#M},${CONNECTED:-?},$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/rss.csv"
  alive=0
  for p in "${AGENT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
  [[ $alive -eq 0 ]] && break
  if [[ $NOW -ge $DEADLINE ]]; then
    echo "soak: agents still running at the deadline; stopping them" >&2
    break
  fi
  sleep "$INTERVAL"
done
for p in "${AGENT_PIDS[@]}"; do wait "$p" || echo "soak: agent pid $p exited with $?" >&2; done
sleep 2  # the last frames reach the daemon
echo "$(( $(date +%s) - START )),$(rss_kib),-,after,$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/rss.csv"
curl -s --max-time 10 "$URL/metrics" >"$OUT/metrics.txt"
curl -s --max-time 10 "$URL/api/v1/stalls?limit=1000" >"$OUT/stalls.json"
cat "$OUT"/agent-*.json >"$OUT/agents.jsonl"

python3 - "$OUT" "$INTERVAL" <<'EOF'
import csv, json, re, sys
out, interval = sys.argv[1], int(sys.argv[2])
agents = [json.loads(l) for l in open(f"{out}/agents.jsonl") if l.strip()]
metrics = open(f"{out}/metrics.txt").read()

def samples(name):
    for m in re.finditer(r"^" + name + r"\{([^}]*)\} (\S+)$", metrics, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        yield labels, float(m.group(2))

def plain(name):
    m = re.search(r"^" + name + r" (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else None

stalls_by_pid, long_by_pid, count_by_pid = {}, {}, {}
for l, v in samples("stallwatch_stalls_total"):
    stalls_by_pid[l["pid"]] = stalls_by_pid.get(l["pid"], 0) + v
for l, v in samples("stallwatch_stall_duration_seconds_count"):
    count_by_pid[l["pid"]] = count_by_pid.get(l["pid"], 0) + v
for l, v in samples("stallwatch_stall_duration_seconds_bucket"):
    if l.get("le") == "0.1":
        long_by_pid[l["pid"]] = long_by_pid.get(l["pid"], 0) + v  # stalls <= 100 ms
by_class = {}
for l, v in samples("stallwatch_stalls_total"):
    by_class[l["class"]] = by_class.get(l["class"], 0) + v
dropped_daemon = sum(v for _, v in samples("stallwatch_agent_findings_dropped_total"))
rejected = {l["reason"]: v for l, v in samples("stallwatch_daemon_frames_rejected_total")}

rows = [r for r in csv.DictReader(open(f"{out}/rss.csv"))]
rss = [int(r["rss_kib"]) for r in rows if r["rss_kib"]]
warm = rss[min(len(rss) - 1, max(1, 60 // interval))]  # after the first minute
first, last, peak = rss[0], rss[-1], max(rss)

ok = True
def check(cond, what):
    global ok
    ok = ok and cond
    print(("PASS " if cond else "FAIL ") + what)

injected = sum(a["injected"] for a in agents)
agent_total = sum(a["agent_stalls_total"] for a in agents)
daemon_total = sum(stalls_by_pid.get(str(a["pid"]), 0) for a in agents)
daemon_long = sum(count_by_pid.get(str(a["pid"]), 0) - long_by_pid.get(str(a["pid"]), 0) for a in agents)
agent_long = sum(a["agent_closed_over_100ms"] for a in agents)
agent_dropped = sum(a["agent_findings_dropped"] for a in agents)
matched = sum(a["injected_matched"] for a in agents)
extra = sum(a["reported_not_injected"] for a in agents)
loops = sum(a["loops"] for a in agents)
loadavg = [float(r["loadavg1"]) for r in rows if r.get("loadavg1")]
print(f"agents: {len(agents)} processes, {loops} loops; machine load average (1 min) min {min(loadavg)}, max {max(loadavg)}")
print(f"daemon RSS KiB: first {first}, after warm-up {warm}, last {last}, max {peak} ({len(rss)} samples)")
print(f"stalls: injected {injected}; agents counted {agent_total} (of which > 100 ms: {agent_long}); "
      f"daemon stallwatch_stalls_total {daemon_total:.0f}, of which > 100 ms {daemon_long:.0f}")
print(f"injected stalls matched by a reported stall: {matched} of {injected}; stalls not injected (the machine's own): {extra}")
print("daemon stalls by class: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(by_class.items()) if v))
print(f"drops: agents findings_dropped {agent_dropped}, daemon stallwatch_agent_findings_dropped_total {dropped_daemon:.0f}; "
      f"rejected frames {sum(rejected.values()):.0f} {dict((k, v) for k, v in rejected.items() if v)}")
check(len(agents) > 0 and all(str(a["pid"]) in stalls_by_pid for a in agents), "every agent process reached the daemon")
check(last <= warm * 1.2 + 4096, f"daemon memory flat: last {last} KiB <= 1.2 x {warm} KiB + 4 MiB")
check(agent_dropped == 0 and dropped_daemon == 0, "no findings dropped by any agent")
check(sum(rejected.values()) == 0, "no frame rejected by the daemon")
check(all(stalls_by_pid.get(str(a["pid"]), -1) == a["agent_stalls_total"] for a in agents),
      "per process, stallwatch_stalls_total == the agent's own stall count")
check(matched == injected, f"every injected stall was reported by its agent ({matched} of {injected})")
check(agent_total == daemon_total and agent_total == matched + extra,
      f"every reported stall reached the daemon ({daemon_total:.0f} == {agent_total} == {matched} injected + {extra} other)")
check(daemon_long == agent_long, f"stalls > 100 ms on /metrics ({daemon_long:.0f}) == the agents' ({agent_long})")
sys.exit(0 if ok else 1)
EOF
