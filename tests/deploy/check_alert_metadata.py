#!/usr/bin/env python3
"""What promtool does not check about the alert rules.

    check_alert_metadata.py SOURCE_DIR

- the six alerts the product promises exist (loop delay high, stalls frequent, stall ongoing for
  long, agent silent, findings dropped, daemon down), each with severity critical or warning;
- summary and description annotations; a per-loop alert's summary names service and loop, a
  per-process one service and process (its slot: the series carry no pid), a daemon one the
  instance;
- runbook_url points into docs/runbooks.md at a heading that exists there;
- every rule has a unit test in deploy/prometheus/tests that expects it to fire.
"""
import glob
import os
import re
import sys

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(77)

REQUIRED = {
    "StallwatchLoopDelayHigh": "loop", "StallwatchStallsFrequent": "loop",
    "StallwatchStallOngoingLong": "loop", "StallwatchAgentSilent": "loop",
    "StallwatchFindingsDropped": "process", "StallwatchDaemonDown": "daemon",
}
# Alerts beyond the required ones, and what their summary can name.
OPTIONAL = {"StallwatchDaemonTargetMissing": "fleet",  # absent(): no target, so no labels
            "StallwatchBlockingCallsHigh": "loop"}
NAMES = {"loop": ["service", "loop"], "process": ["service", "process"], "daemon": ["instance"],
         "fleet": []}


def anchors(markdown):
    """GitHub-style anchors of the headings of a markdown text."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            a = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(a)
    return out


def main():
    src = sys.argv[1]
    problems = []
    with open(os.path.join(src, "docs", "runbooks.md")) as f:
        runbook_anchors = anchors(f.read())
    alerts = {}
    for path in glob.glob(os.path.join(src, "deploy", "prometheus", "rules", "*.yml")):
        with open(path) as f:
            for g in yaml.safe_load(f)["groups"]:
                for r in g["rules"]:
                    if "alert" in r:
                        alerts[r["alert"]] = r
    fired = set()
    for path in glob.glob(os.path.join(src, "deploy", "prometheus", "tests", "*.yml")):
        with open(path) as f:
            for t in yaml.safe_load(f)["tests"]:
                for a in t.get("alert_rule_test", []):
                    if a.get("exp_alerts"):
                        fired.add(a["alertname"])
    for name in REQUIRED:
        if name not in alerts:
            problems.append(f"{name}: missing")
    for name, r in sorted(alerts.items()):
        sev = r.get("labels", {}).get("severity")
        if sev not in ("critical", "warning"):
            problems.append(f"{name}: severity {sev!r} (critical or warning)")
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{name}: no {key}")
        for label in NAMES[REQUIRED.get(name) or OPTIONAL.get(name, "loop")]:
            if "$labels." + label not in ann.get("summary", ""):
                problems.append(f"{name}: summary does not name the {label}")
        url = ann.get("runbook_url", "")
        m = re.fullmatch(r"docs/runbooks\.md#([\w-]+)", url)
        if not m:
            problems.append(f"{name}: runbook_url {url!r} is not docs/runbooks.md#<anchor>")
        elif m.group(1) not in runbook_anchors:
            problems.append(f"{name}: docs/runbooks.md has no heading for #{m.group(1)}")
        if name not in fired:
            problems.append(f"{name}: no unit test expects it to fire")
    for p in problems:
        print(p)
    print(f"{len(alerts)} alerts, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
