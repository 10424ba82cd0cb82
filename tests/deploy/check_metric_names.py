#!/usr/bin/env python3
"""Every metric name used by the dashboards and the alert rules is one stallwatchd exports.

    check_metric_names.py SOURCE_DIR
Exits 1 naming each unknown metric and where it is used. Before checking, it proves it can fail:
a few known-bad expressions must be caught and known-good ones passed.
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promql_names as pn  # noqa: E402


def self_test():
    cases = {
        'sum(rate(stallwatch_stall_total{loop=~"$loop"}[5m]))': {"stallwatch_stall_total"},
        'histogram_quantile(0.99, sum by (le) (rate(stallwatch_loop_delay_seconds_bucket[5m])))':
            {"stallwatch_loop_delay_seconds_bucket"},
        'up{job="stallwatchd"} == 0': {"up"},
        'a_metric * on (process) group_left(pid) other_metric{class="cpu"} > bool 1e-3':
            {"a_metric", "other_metric"},
        '(changes(x_count[6m]) == 0 and on (a, b) x_count) unless on (a) (y > 0)':
            {"x_count", "y"},
        'max(stallwatch_loop_delay_seconds_max)': {"stallwatch_loop_delay_seconds_max"},
    }
    for expr, want in cases.items():
        got = pn.metric_names(expr)
        if got != want:
            print(f"self-test: {expr!r}: extracted {sorted(got)}, expected {sorted(want)}")
            return False
    if "stallwatch_loop_delay_seconds_max" in pn.ALLOWED or "stallwatch_stall_total" in pn.ALLOWED:
        print("self-test: allow-list accepts a metric the daemon does not export")
        return False
    return True


def rule_exprs(path):
    try:
        import yaml
    except ImportError:
        print("SKIP: python3-yaml is not installed (apt-get install python3-yaml)")
        sys.exit(77)
    with open(path) as f:
        doc = yaml.safe_load(f)
    for g in doc["groups"]:
        for r in g["rules"]:
            yield f'{os.path.basename(path)}: {r.get("alert") or r.get("record")}', r["expr"]


def main():
    src = sys.argv[1]
    if not self_test():
        return 1
    uses = []
    dashboards = sorted(glob.glob(os.path.join(src, "dashboards", "*.json")))
    rules = sorted(glob.glob(os.path.join(src, "deploy", "prometheus", "rules", "*.yml")))
    if not dashboards or not rules:
        print(f"no dashboards or rules found under {src}")
        return 1
    for d in dashboards:
        with open(d) as f:
            for where, expr in pn.dashboard_exprs(json.load(f)):
                uses.append((f"{os.path.basename(d)}: {where}", expr))
    for r in rules:
        uses.extend(rule_exprs(r))
    bad = 0
    used = set()
    for where, expr in uses:
        names = pn.metric_names(expr)
        if not names:
            print(f"{where}: no metric found in {expr!r}")
            bad += 1
        for n in sorted(names - pn.ALLOWED):
            print(f"{where}: {n} is not a metric stallwatchd exports")
            bad += 1
        used |= names
    print(f"{len(uses)} expressions, metrics used: {', '.join(sorted(used))}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
