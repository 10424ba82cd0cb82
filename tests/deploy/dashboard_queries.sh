#!/usr/bin/env bash
# Evaluates every panel query and every template-variable query of every stallwatch dashboard
# through a Prometheus' HTTP API and fails on a parse error or an empty result.
#
#   dashboard_queries.sh PROMETHEUS_URL [DASHBOARD_DIR]
#
# Template variables are substituted: $instance, $service, $process, $loop by SW_VAR_<name> (a regex,
# default ".*"); Grafana's $__rate_interval, $__interval, $__range by SW_RATE_INTERVAL (1m),
# SW_INTERVAL (15s), SW_RANGE (5m). SW_WAIT (seconds, default 0): keep retrying queries that are
# still empty for this long (data may still be arriving). Each query's HTTP call times out after
# 10 s. Needs python3 (standard library only). Prints one line per query and
# "N passed, N failed"; exits 1 if any failed, 2 on bad usage.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 PROMETHEUS_URL [DASHBOARD_DIR]" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
export SW_PROM_URL="$1"
export SW_DASH_DIR="${2:-$here/../../dashboards}"
export SW_HERE="$here"
exec python3 - <<'PY'
import glob, json, os, re, sys, time, urllib.error, urllib.parse, urllib.request

sys.path.insert(0, os.environ["SW_HERE"])
import promql_names as pn

url = os.environ["SW_PROM_URL"].rstrip("/")
dash_dir = os.environ["SW_DASH_DIR"]
subst = {
    "__rate_interval": os.environ.get("SW_RATE_INTERVAL", "1m"),
    "__interval": os.environ.get("SW_INTERVAL", "15s"),
    "__range": os.environ.get("SW_RANGE", "5m"),
}
for var in ("instance", "service", "process", "loop"):
    subst[var] = os.environ.get("SW_VAR_" + var, ".*")
wait_s = float(os.environ.get("SW_WAIT", "0"))


def substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in subst:
            raise KeyError(name)
        return subst[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def query(expr):
    """Returns (ok, message)."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    try:
        with urllib.request.urlopen(url + "/api/v1/query", data=data, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except ValueError:
            return False, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return False, f"cannot query {url}: {e}"
    if body.get("status") != "success":
        return False, f"{body.get('errorType')}: {body.get('error')}"
    result = body["data"]["result"]
    n = len(result) if isinstance(result, list) else 1
    if n == 0:
        return False, "empty result"
    return True, f"{n} series"


files = sorted(glob.glob(os.path.join(dash_dir, "*.json")))
if not files:
    print(f"no dashboards in {dash_dir}")
    sys.exit(1)
todo = []
for f in files:
    with open(f) as fh:
        d = json.load(fh)
    for where, expr in pn.dashboard_exprs(d):
        todo.append((f"{d.get('uid')}: {where}", expr))

passed = failed = 0
deadline = time.monotonic() + wait_s
for where, expr in todo:
    try:
        q = substitute(expr)
    except KeyError as e:
        print(f"FAIL {where}: unknown template variable ${e.args[0]}")
        failed += 1
        continue
    while True:
        ok, msg = query(q)
        # Parse errors never get better; empty results may while data arrives.
        if ok or msg != "empty result" or time.monotonic() >= deadline:
            break
        time.sleep(1)
    if ok:
        passed += 1
        print(f"ok   {where}: {msg}")
    else:
        failed += 1
        print(f"FAIL {where}: {msg}\n     {q}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
