"""Metric names used by PromQL expressions, and where stallwatch's expressions live.

Shared by check_metric_names.py and check_dashboards.py. Pure functions, no dependencies beyond
the standard library (the rules file is read by the caller).
"""
import re

# Every metric stallwatchd exports (PRODUCT.md, "Daemon"), plus Prometheus' own `up`.
HISTOGRAMS = {
    "stallwatch_loop_delay_seconds",
    "stallwatch_loop_iteration_seconds",
    "stallwatch_stall_duration_seconds",
    "stallwatch_blocking_call_seconds",
}
PLAIN = {
    "stallwatch_loop_utilization_ratio",
    "stallwatch_stalls_total",
    "stallwatch_stall_ongoing_seconds",
    "stallwatch_stack_samples_total",
    "stallwatch_reports_suppressed_total",
    "stallwatch_blocking_calls_total",
    "stallwatch_agent_findings_dropped_total",
    "stallwatch_process_info",
    "stallwatch_agents_connected",
    "stallwatch_daemon_frames_rejected_total",
    "stallwatch_daemon_call_sites_not_kept_total",
    "up",
}
ALLOWED = PLAIN | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
# Metrics without service/process/loop labels (one series per daemon or per reason), and
# per-process ones (service and process, no loop); every other one is per loop.
DAEMON_WIDE = {
    "stallwatch_agents_connected",
    "stallwatch_daemon_frames_rejected_total",
    "stallwatch_daemon_call_sites_not_kept_total",
    "up",
}
PER_PROCESS = {
    "stallwatch_agent_findings_dropped_total",
    "stallwatch_process_info",
}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2", "start", "end",
}


def metric_names(expr):
    """Returns the metric names an expression selects (bare identifiers that are neither
    functions, aggregation modifiers, keywords nor label names)."""
    s = expr
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', s)  # string literals
    s = re.sub(r"#[^\n]*", " ", s)                       # comments
    s = re.sub(r"\{[^{}]*\}", " ", s)                     # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)                   # ranges and subqueries
    # label lists of by/without/on/ignoring/group_left/group_right
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)                    # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        # Numbers like 1e-9 are excluded by the lookbehind on the digits; durations too.
        names.add(word)
    return names


def label_values_metric(query):
    """label_values(metric{...}, label) -> the PromQL inside, else the query itself."""
    m = re.match(r"\s*label_values\((.*),\s*\w+\s*\)\s*$", query, re.S)
    if m:
        return m.group(1)
    m = re.match(r"\s*(?:query_result|metrics)\((.*)\)\s*$", query, re.S)
    return m.group(1) if m else query


def dashboard_exprs(dash):
    """(where, expr) for every panel target, annotation query and query variable of a
    dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((f'panel "{p.get("title")}" {t.get("refId")}', t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f'annotation "{a.get("name")}"', a["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f'variable "{v["name"]}"', label_values_metric(query)))
    return out
