#!/usr/bin/env bash
# Checks that stallwatchd stays inside the system-call filter of its systemd unit: runs the daemon
# under strace on a scratch socket and a free loopback port, lets an optional agent program
# report to it, reads every HTTP endpoint, stops it with SIGTERM, and compares every system call
# it made with the unit's SystemCallFilter= lines (groups expanded by systemd-analyze). A call
# outside the filter would kill the daemon under systemd (SystemCallErrorNumber makes it EPERM).
#
#   syscall_filter_check.sh STALLWATCHD UNIT_FILE [AGENT_COMMAND...]
#     AGENT_COMMAND runs with STALLWATCH_ENDPOINT set to the daemon's socket (e.g. a demo that
#     stalls); it is bounded to 60 s.
# Needs strace, systemd-analyze, curl, python3. Exit 77 when a tool is missing. Not registered
# with CTest: it needs the built daemon (the end-to-end suite can call it).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 STALLWATCHD UNIT_FILE [AGENT_COMMAND...]" >&2; exit 2; }
daemon="$1"; unit="$2"; shift 2
for tool in strace systemd-analyze curl python3; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
done
work=$(mktemp -d)
dpid=""
cleanup() {
  if [ -n "$dpid" ]; then
    pkids=$(pgrep -P "$dpid" || true)
    kill -KILL $pkids "$dpid" 2>/dev/null || true
    wait "$dpid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

strace -f -qq -o "$work/trace" "$daemon" --agent-socket "$work/agent.sock" \
  --http-listen "127.0.0.1:$port" --log-level warn >"$work/daemon.log" 2>&1 &
dpid=$!
for _ in $(seq 100); do curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
if [ $# -gt 0 ]; then
  STALLWATCH_ENDPOINT="unix:$work/agent.sock" timeout 60 "$@" >"$work/agent.log" 2>&1 || true
fi
for path in /metrics /api/v1/loops "/api/v1/stalls?limit=5" "/api/v1/stacks?format=folded" \
            /api/v1/stacks /healthz "/api/v1/stalls?limit=x"; do
  curl -sS --max-time 10 -o /dev/null "http://127.0.0.1:$port$path" || true
done
# SIGTERM to the daemon itself (strace, its parent, would only detach), then strace exits too.
target=$(pgrep -P "$dpid" | head -1 || true)
kill -TERM "${target:-$dpid}" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$dpid" "${target:-$dpid}" 2>/dev/null || true
wait "$dpid" 2>/dev/null || true; dpid=""

sed -E -n 's/^[0-9]+ +([a-z_0-9]+)\(.*/\1/p; s/^[0-9]+ +<\.\.\. ([a-z_0-9]+) resumed>.*/\1/p' \
  "$work/trace" | grep -vx execve | sort -u >"$work/used"
expand() {  # a syscall or @group -> syscalls
  case "$1" in
    @*) systemd-analyze syscall-filter "$1" | sed -n '2,$p' | tr -d ' ' | grep -v '^#' | grep . |
          while read -r x; do expand "$x"; done ;;
    *) echo "$1" ;;
  esac
}
: >"$work/allow"; : >"$work/deny"
while IFS= read -r line; do
  value="${line#SystemCallFilter=}"
  if [ "${value#\~}" != "$value" ]; then
    for g in ${value#\~}; do expand "$g"; done >>"$work/deny"
  else
    for g in $value; do expand "$g"; done >>"$work/allow"
  fi
done < <(grep '^SystemCallFilter=' "$unit")
sort -u -o "$work/allow" "$work/allow"; sort -u -o "$work/deny" "$work/deny"
[ -s "$work/allow" ] || { echo "no SystemCallFilter= allow-list in $unit"; exit 1; }
outside=$( { comm -23 "$work/used" "$work/allow"; comm -12 "$work/used" "$work/deny"; } | sort -u)
echo "stallwatchd made $(wc -l <"$work/used") distinct system calls"
if [ -n "$outside" ]; then
  echo "outside the unit's SystemCallFilter:"; echo "$outside"; exit 1
fi
echo "all within the unit's SystemCallFilter"
