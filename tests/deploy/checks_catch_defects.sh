#!/usr/bin/env bash
# Proves the deploy checks can fail: copies dashboards/, deploy/ and docs/ to a scratch tree,
# plants one defect at a time and expects the matching check to reject it with the right message.
# Usage: checks_catch_defects.sh SOURCE_DIR PYTHON PROMTOOL
set -uo pipefail
src="$1"; py="$2"; promtool="$3"
here="$(cd "$(dirname "$0")" && pwd)"
"$py" -c 'import yaml' 2>/dev/null || { echo "SKIP: python3-yaml is not installed"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fresh() {
  rm -rf "$work/t"; mkdir -p "$work/t"
  cp -r "$src/dashboards" "$src/deploy" "$src/docs" "$work/t/"
}
# expect_reject NAME EXPECTED_TEXT COMMAND...: COMMAND must exit non-zero and print EXPECTED_TEXT.
expect_reject() {
  local name="$1" want="$2"; shift 2
  local out rc
  out=$(timeout 120 "$@" 2>&1); rc=$?
  if [ $rc -ne 0 ] && grep -qF -- "$want" <<<"$out"; then
    echo "ok: $name"
  else
    echo "NOT CAUGHT: $name (exit $rc, expected output containing: $want)"; echo "$out" | head -20
    failures=$((failures + 1))
  fi
}
edit() {  # edit FILE PYTHON_EXPR_ON_s  (s = file text)
  "$py" - "$1" "$2" <<'PY'
import sys
path, expr = sys.argv[1], sys.argv[2]
s = open(path).read()
t = eval(expr)
assert t != s, "edit changed nothing: " + expr
open(path, "w").write(t)
PY
}
T="$work/t"
dash="$T/dashboards/stallwatch-overview.json"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace(") > 0.1\n", ") > 0.6\n")'
expect_reject "rule test notices a delay threshold raised above the test's 496ms" \
  "StallwatchLoopDelayHigh" "$promtool" test rules "$T/deploy/prometheus/tests/stallwatch.rules.test.yml"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace("and on (instance, service, process, loop) stallwatch_loop_delay_seconds_count\n", "")'
expect_reject "rule test notices agent-silent firing for an exited process" \
  'loop="gone"' "$promtool" test rules "$T/deploy/prometheus/tests/stallwatch.rules.test.yml"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace("and on (instance, service, process, loop) (stallwatch_loop_delay_seconds_count offset 6m)\n", "")'
expect_reject "rule test notices agent-silent firing for a process that lived seconds" \
  'loop="main", process="0", service="cron"' "$promtool" test rules "$T/deploy/prometheus/tests/stallwatch.rules.test.yml"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace(") > 0.05\n", ") > 0.07\n")'
expect_reject "rule test notices a blocking-time threshold raised above the test's 6%" \
  "StallwatchBlockingCallsHigh" "$promtool" test rules "$T/deploy/prometheus/tests/stallwatch.rules.test.yml"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace("sum by (instance, service, process, loop) (\n            rate(stallwatch_blocking_call_seconds_sum[5m])", "max by (instance, service, process, loop) (\n            rate(stallwatch_blocking_call_seconds_sum[5m])")'
expect_reject "rule test notices blocking time judged per call, not per loop" \
  "StallwatchBlockingCallsHigh" "$promtool" test rules "$T/deploy/prometheus/tests/stallwatch.rules.test.yml"

# The series carry the process slot, not the pid (the pid is in stallwatch_process_info only).
fresh; edit "$dash" 's.replace("(process {{process}}, {{instance}})", "(pid {{pid}}, {{instance}})", 1)'
expect_reject "dashboard legend naming a pid label" "legendFormat uses a pid label" \
  "$py" "$here/check_dashboards.py" "$T"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace("max by (instance, service, process, loop) (stallwatch_stall_ongoing_seconds)", "max by (instance, service, pid, loop) (stallwatch_stall_ongoing_seconds)", 1)'
expect_reject "rule grouping by a pid label" "StallwatchStallOngoingLong" \
  "$promtool" test rules "$T/deploy/prometheus/tests/stallwatch.rules.test.yml"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace("summary: \"{{ $labels.service }} (process {{ $labels.process }})", "summary: \"{{ $labels.service }} (pid {{ $labels.pid }})", 1)'
expect_reject "per-process alert summary without the process slot" \
  "StallwatchFindingsDropped: summary does not name the process" \
  "$py" "$here/check_alert_metadata.py" "$T"

fresh; edit "$dash" 's.replace("\"description\": \"Event loops with an agent", "\"description\": \"\", \"x\": \"", 1)'
expect_reject "panel without a description" 'panel "Loops observed" has no description' \
  "$py" "$here/check_dashboards.py" "$T"

fresh; edit "$dash" 's.replace("\"unit\": \"percentunit\"", "\"unit\": \"\"", 1)'
expect_reject "panel without a unit" "has no unit" "$py" "$here/check_dashboards.py" "$T"

# The first four occurrences are the query variables'; the fifth is the first panel's.
fresh; edit "$dash" 's.replace("\"uid\": \"${datasource}\"", "\"uid\": \"P1809F7CD0C75ACF3\"", 5).replace("\"uid\": \"P1809F7CD0C75ACF3\"", "\"uid\": \"${datasource}\"", 4)'
expect_reject "panel with a fixed data source" "does not use the \${datasource} variable" \
  "$py" "$here/check_dashboards.py" "$T"

fresh; edit "$dash" 's.replace("/d/stallwatch-loop/", "http://grafana.internal:3000/d/stallwatch-loop/", 1)'
expect_reject "hard-coded host" "hard-coded host" "$py" "$here/check_dashboards.py" "$T"

fresh; edit "$dash" 's.replace("\"uid\": \"stallwatch-overview\"", "\"uid\": \"abc123\"", 1)'
expect_reject "changed uid" "uid 'abc123' changed" "$py" "$here/check_dashboards.py" "$T"

fresh; edit "$dash" 's.replace(", loop=~\\\"$loop\\\"}[5m])) * 60", "}[5m])) * 60", 1)'
expect_reject "query ignoring the loop variable" 'does not filter on $loop' \
  "$py" "$here/check_dashboards.py" "$T"

fresh; edit "$dash" 's.replace("stallwatch_stall_ongoing_seconds{", "stallwatch_stall_ongoing_secs{", 1)'
expect_reject "dashboard using a metric the daemon does not export" \
  "stallwatch_stall_ongoing_secs is not a metric stallwatchd exports" \
  "$py" "$here/check_metric_names.py" "$T"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace("rate(stallwatch_stalls_total{", "rate(stallwatch_stall_total{", 1)'
expect_reject "rule using a metric the daemon does not export" \
  "stallwatch_stall_total is not a metric" "$py" "$here/check_metric_names.py" "$T"

fresh; edit "$dash" 's.replace("stallwatch_blocking_call_seconds_sum{", "stallwatch_blocking_call_seconds_total{", 1)'
expect_reject "dashboard using a ledger metric the daemon does not export" \
  "stallwatch_blocking_call_seconds_total is not a metric stallwatchd exports" \
  "$py" "$here/check_metric_names.py" "$T"

fresh; edit "$T/docs/runbooks.md" 's.replace("## StallwatchAgentSilent", "## Agent silent", 1)'
expect_reject "runbook link to a missing section" "has no heading for #stallwatchagentsilent" \
  "$py" "$here/check_alert_metadata.py" "$T"

fresh; edit "$T/deploy/prometheus/rules/stallwatch.rules.yml" 's.replace("severity: critical", "severity: page", 1)'
expect_reject "unknown severity" "severity 'page'" "$py" "$here/check_alert_metadata.py" "$T"

fresh; edit "$T/deploy/k8s/daemonset.yaml" 's.replace("path: /run/stallwatch\n", "path: /var/run/other\n", 1)'
expect_reject "DaemonSet not sharing the socket directory" "no hostPath volume for /run/stallwatch" \
  "$py" "$here/check_manifests.py" "$T"

fresh; edit "$T/deploy/k8s/service.yaml" 's.replace("  clusterIP: None\n", "")'
expect_reject "Service not headless" "not headless" "$py" "$here/check_manifests.py" "$T"

fresh; edit "$T/deploy/compose/docker-compose.yml" 's.replace("\"127.0.0.1:3000:3000\"", "\"3000:3000\"", 1)'
expect_reject "compose port beyond loopback" "publishes 3000:3000 beyond loopback" \
  "$py" "$here/check_manifests.py" "$T"

if [ $failures -ne 0 ]; then
  echo "$failures planted defects were not caught"
  exit 1
fi
echo "every planted defect was caught"
