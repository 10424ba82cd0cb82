#!/usr/bin/env python3
"""Structural check of every Grafana dashboard in dashboards/.

    check_dashboards.py SOURCE_DIR

- valid JSON, generated from dashboards/generate.py (no hand edits that the generator would undo);
- a stable, unique uid (the one links and provisioning rely on) and a title;
- template variables datasource, instance, service, process and loop, the query ones on
  ${datasource};
- no query, legend or variable uses a `pid` label: the series carry the process slot
  (`process`), the pid is a label of stallwatch_process_info only;
- every panel has a title and a description; every non-row panel its datasource set to the
  ${datasource} variable, at least one query, a unit; every query a refId (unique per panel) and
  an expression that uses the variables it should;
- no hard-coded host, address or data source uid anywhere;
- the Grafana provisioning file points at a folder and the k8s ConfigMap carries the same JSON.
Exits 1 with one line per problem.
"""
import glob
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promql_names as pn  # noqa: E402

EXPECTED_UIDS = {"stallwatch-overview.json": "stallwatch-overview",
                 "stallwatch-loop.json": "stallwatch-loop"}
REQUIRED_VARS = ["datasource", "instance", "service", "process", "loop"]
DS_VAR = "${datasource}"
# A pid label in a selector, a grouping, a legend or a variable: {pid=…}, by (…pid…), {{pid}},
# $pid, label_values(…, pid).
PID_RE = re.compile(r"\bpid\s*(?:=|!=|=~|!~)|[(,]\s*pid\s*[,)]|\{\{\s*pid\s*\}\}|\$\{?pid\b")
# Hosts: URLs with a host part, IPv4 addresses, host:port pairs, localhost. A URL whose host is a
# template variable (the daemon's page at http://${instance}/) names no host.
HOST_RE = re.compile(r"https?://(?!\$\{)|\b\d{1,3}(?:\.\d{1,3}){3}\b|\blocalhost\b|"
                     r"\b[a-z][\w.-]*\.[a-z]{2,}:\d{2,5}\b", re.I)


def check_dashboard(path, problems):
    name = os.path.basename(path)

    def bad(msg):
        problems.append(f"{name}: {msg}")

    try:
        with open(path) as f:
            text = f.read()
        d = json.loads(text)
    except (OSError, ValueError) as e:
        bad(f"not valid JSON: {e}")
        return None
    uid = d.get("uid")
    if not uid or not re.fullmatch(r"[a-z0-9-]{1,40}", uid):
        bad(f"uid {uid!r} is missing or not a stable slug")
    if name in EXPECTED_UIDS and uid != EXPECTED_UIDS[name]:
        bad(f"uid {uid!r} changed (links and bookmarks use {EXPECTED_UIDS[name]!r})")
    if not d.get("title"):
        bad("no title")
    if d.get("id") not in (None,):
        bad("has a numeric id (instance-specific; leave it out)")
    for m in HOST_RE.finditer(text):
        bad(f"hard-coded host or address {m.group(0)!r}")

    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    for v in REQUIRED_VARS:
        if v not in variables:
            bad(f"template variable {v!r} missing")
    dsv = variables.get("datasource", {})
    if dsv and (dsv.get("type") != "datasource" or dsv.get("query") != "prometheus"):
        bad("variable datasource is not a Prometheus data source variable")
    for v in variables.values():
        if v.get("name") == "pid" or PID_RE.search(v.get("query") or ""):
            bad(f"variable {v.get('name')!r} uses a pid label (the series carry `process`)")
        if not v.get("description"):
            bad(f"variable {v.get('name')!r} has no description")
        if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") != DS_VAR:
            bad(f"variable {v.get('name')!r} does not query ${{datasource}}")

    panels = []

    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))

    walk(d.get("panels", []))
    if len(panels) < 5:
        bad(f"only {len(panels)} panels")
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        bad("duplicate panel ids")
    for p in panels:
        title = p.get("title") or "?"
        where = f'panel "{title}"'
        if not p.get("title"):
            bad(f"panel {p.get('id')} has no title")
        if not (p.get("description") or "").strip():
            bad(f"{where} has no description")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != DS_VAR:
            bad(f"{where} does not use the ${{datasource}} variable")
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        if not defaults.get("unit"):
            bad(f"{where} has no unit")
        targets = p.get("targets") or []
        if not targets:
            bad(f"{where} has no query")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or None in refs:
            bad(f"{where} has missing or duplicate refIds")
        for t in targets:
            expr = t.get("expr", "")
            if (t.get("datasource") or {}).get("uid") != DS_VAR:
                bad(f"{where} {t.get('refId')}: query does not use ${{datasource}}")
            if not expr.strip():
                bad(f"{where} {t.get('refId')}: empty expression")
                continue
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                bad(f"{where} {t.get('refId')}: unbalanced brackets")
            names = pn.metric_names(expr)
            # Per-loop metrics must honour every loop variable; per-process ones service/process;
            # daemon-wide ones at least the instance.
            needs = ["$instance"]
            if names & (pn.ALLOWED - pn.DAEMON_WIDE):
                needs += ["$service", "$process"]
            if names - pn.DAEMON_WIDE - pn.PER_PROCESS:
                needs += ["$loop"]
            for var in needs:
                if var not in expr:
                    bad(f"{where} {t.get('refId')}: does not filter on {var}")
            if "stallwatch_process_info" not in names:
                for field in ("expr", "legendFormat"):
                    if PID_RE.search(t.get(field) or ""):
                        bad(f"{where} {t.get('refId')}: {field} uses a pid label (the series "
                            "carry `process`; the pid is in stallwatch_process_info)")
    return d


def main():
    src = sys.argv[1]
    problems = []
    files = sorted(glob.glob(os.path.join(src, "dashboards", "*.json")))
    if sorted(map(os.path.basename, files)) != sorted(EXPECTED_UIDS):
        problems.append(f"expected dashboards {sorted(EXPECTED_UIDS)}, found "
                        f"{sorted(map(os.path.basename, files))}")
    uids = {}
    for f in files:
        d = check_dashboard(f, problems)
        if d:
            uids.setdefault(d.get("uid"), []).append(f)
    for uid, fs in uids.items():
        if len(fs) > 1:
            problems.append(f"uid {uid!r} used by {fs}")

    gen = subprocess.run([sys.executable, os.path.join(src, "dashboards", "generate.py"),
                          "--check"], capture_output=True, text=True, timeout=60)
    if gen.returncode:
        problems.append("generated files differ: " + (gen.stdout + gen.stderr).strip())

    try:
        import yaml
    except ImportError:
        print("SKIP (partly): python3-yaml missing, provisioning and ConfigMap not checked")
        yaml = None
    if yaml:
        with open(os.path.join(src, "dashboards", "provisioning",
                               "stallwatch-dashboards.yaml")) as f:
            prov = yaml.safe_load(f)
        provs = prov.get("providers") or []
        if prov.get("apiVersion") != 1 or not provs or provs[0].get("type") != "file" or \
                not provs[0].get("options", {}).get("path"):
            problems.append("provisioning: expected apiVersion 1 and a file provider with a path")
        with open(os.path.join(src, "deploy", "k8s", "dashboards-configmap.yaml")) as f:
            cm = yaml.safe_load(f)
        for path in files:
            key = os.path.basename(path)
            with open(path) as f:
                if json.loads(cm.get("data", {}).get(key, "null")) != json.load(f):
                    problems.append(f"dashboards-configmap.yaml: {key} differs from {path}")

    for p in problems:
        print(p)
    print(f"{len(files)} dashboards, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
