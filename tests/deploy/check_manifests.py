#!/usr/bin/env python3
"""Structural check of the Kubernetes manifests (deploy/k8s) and the compose file.

    check_manifests.py SOURCE_DIR

Kubernetes: every file is valid YAML with apiVersion/kind/metadata; the expected kinds are there;
the DaemonSet shares the node's socket directory through a hostPath mounted at /run/stallwatch,
listens on the agent socket and 9466, runs as non-root without privilege escalation, probes
/healthz; the Service is headless with port http-metrics, its selector matches the pods; the
ServiceMonitor scrapes that port with job="stallwatchd"; the kustomization lists every manifest.
Compose: the four services, the shared socket volume, ports on loopback only, mounted files exist.
Exits 1 with one line per problem (77 if python3-yaml is missing).
"""
import os
import sys

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(77)

SOCKET_DIR = "/run/stallwatch"
PORT = 9466
EXPECTED_KINDS = {"Namespace", "DaemonSet", "Service", "ServiceMonitor", "ConfigMap",
                  "NetworkPolicy", "PrometheusRule"}


def load_k8s(k8s_dir, problems):
    docs = []
    for name in sorted(os.listdir(k8s_dir)):
        if not name.endswith((".yaml", ".yml")) or name == "kustomization.yaml":
            continue
        try:
            with open(os.path.join(k8s_dir, name)) as f:
                for d in yaml.safe_load_all(f):
                    if d is None:
                        continue
                    for key in ("apiVersion", "kind", "metadata"):
                        if key not in d:
                            problems.append(f"{name}: no {key}")
                    if d.get("kind") != "Namespace" and \
                            d.get("metadata", {}).get("namespace") != "stallwatch":
                        problems.append(f"{name}: {d.get('kind')} not in namespace stallwatch")
                    docs.append((name, d))
        except yaml.YAMLError as e:
            problems.append(f"{name}: invalid YAML: {e}")
    return docs


def check_k8s(src, problems):
    k8s_dir = os.path.join(src, "deploy", "k8s")
    docs = load_k8s(k8s_dir, problems)
    by_kind = {}
    for name, d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    missing = EXPECTED_KINDS - set(by_kind)
    if missing:
        problems.append(f"k8s: missing kinds {sorted(missing)}")
    with open(os.path.join(k8s_dir, "kustomization.yaml")) as f:
        kz = yaml.safe_load(f)
    listed = set(kz.get("resources", []))
    files = {n for n, _ in docs}
    if listed != files:
        problems.append(f"kustomization.yaml lists {sorted(listed)}, files are {sorted(files)}")

    for ds in by_kind.get("DaemonSet", []):
        spec = ds["spec"]
        tmpl = spec["template"]
        pod = tmpl["spec"]
        labels = tmpl["metadata"].get("labels", {})
        sel = spec["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            problems.append("DaemonSet: selector does not match the pod labels")
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        host_vols = [n for n, v in vols.items()
                     if v.get("hostPath", {}).get("path") == SOCKET_DIR]
        if not host_vols:
            problems.append(f"DaemonSet: no hostPath volume for {SOCKET_DIR}")
        if pod.get("hostNetwork") or pod.get("hostPID"):
            problems.append("DaemonSet: hostNetwork/hostPID are not needed")
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot"):
            problems.append("DaemonSet: pod does not set runAsNonRoot")
        main = [c for c in pod["containers"] if c["name"] == "stallwatchd"]
        if not main:
            problems.append("DaemonSet: no container named stallwatchd")
            continue
        c = main[0]
        args = " ".join(c.get("command", []) + c.get("args", []))
        if f"--agent-socket={SOCKET_DIR}/agent.sock" not in args:
            problems.append("DaemonSet: stallwatchd does not listen on the agent socket")
        if f"--http-listen=0.0.0.0:{PORT}" not in args:
            problems.append(f"DaemonSet: stallwatchd does not serve HTTP on {PORT}")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        if ports.get("http-metrics") != PORT:
            problems.append(f"DaemonSet: no containerPort http-metrics {PORT}")
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        if not any(mounts.get(v) == SOCKET_DIR for v in host_vols):
            problems.append(f"DaemonSet: stallwatchd does not mount {SOCKET_DIR}")
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
            problems.append("DaemonSet: stallwatchd may escalate privileges")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append("DaemonSet: stallwatchd does not drop all capabilities")
        if not sc.get("readOnlyRootFilesystem"):
            problems.append("DaemonSet: root filesystem is writable")
        for probe in ("readinessProbe", "livenessProbe"):
            if c.get(probe, {}).get("httpGet", {}).get("path") != "/healthz":
                problems.append(f"DaemonSet: {probe} is not GET /healthz")
        if "memory" not in c.get("resources", {}).get("limits", {}):
            problems.append("DaemonSet: no memory limit")
        pod_labels = labels

    for svc in by_kind.get("Service", []):
        s = svc["spec"]
        if s.get("clusterIP") != "None":
            problems.append("Service: not headless (every node's daemon must be scraped)")
        ports = {p.get("name"): p for p in s.get("ports", [])}
        if ports.get("http-metrics", {}).get("port") != PORT:
            problems.append(f"Service: no port http-metrics {PORT}")
        if by_kind.get("DaemonSet") and \
                any(pod_labels.get(k) != v for k, v in s.get("selector", {}).items()):
            problems.append("Service: selector does not match the DaemonSet's pods")
        svc_labels = svc["metadata"].get("labels", {})

    for sm in by_kind.get("ServiceMonitor", []):
        if sm.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append("ServiceMonitor: apiVersion is not monitoring.coreos.com/v1")
        s = sm["spec"]
        if by_kind.get("Service") and any(svc_labels.get(k) != v for k, v in
                                          s["selector"].get("matchLabels", {}).items()):
            problems.append("ServiceMonitor: selector does not match the Service")
        eps = s.get("endpoints", [])
        if not eps or eps[0].get("port") != "http-metrics" or eps[0].get("path") != "/metrics":
            problems.append("ServiceMonitor: does not scrape http-metrics /metrics")
        if not any(r.get("targetLabel") == "job" and r.get("replacement") == "stallwatchd"
                   for e in eps for r in e.get("relabelings", [])):
            problems.append('ServiceMonitor: job is not set to "stallwatchd" (alert rules)')

    for np_ in by_kind.get("NetworkPolicy", []):
        ports = [p.get("port") for i in np_["spec"].get("ingress", []) for p in i.get("ports", [])]
        if ports != [PORT]:
            problems.append(f"NetworkPolicy: should admit port {PORT} only, admits {ports}")

    for pr in by_kind.get("PrometheusRule", []):
        with open(os.path.join(src, "deploy", "prometheus", "rules", "stallwatch.rules.yml")) as f:
            if pr.get("spec") != yaml.safe_load(f):
                problems.append("PrometheusRule: differs from deploy/prometheus/rules/stallwatch.rules.yml")

    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
            problems.append("ConfigMap: no grafana_dashboard label for the sidecar")
        if not any(k.endswith(".json") for k in cm.get("data", {})):
            problems.append("ConfigMap: carries no dashboard")


def check_compose(src, problems):
    cdir = os.path.join(src, "deploy", "compose")
    path = os.path.join(cdir, "docker-compose.yml")
    try:
        with open(path) as f:
            c = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"docker-compose.yml: {e}")
        return
    services = c.get("services", {})
    for s in ("stallwatchd", "demo", "prometheus", "grafana"):
        if s not in services:
            problems.append(f"compose: no service {s}")
    for s in ("stallwatchd", "demo"):
        vols = services.get(s, {}).get("volumes", [])
        if f"agent-socket:{SOCKET_DIR}" not in vols:
            problems.append(f"compose: {s} does not share the agent socket volume")
    if "--endpoint" not in services.get("demo", {}).get("command", []):
        problems.append("compose: demo does not name the agent endpoint")
    for name, s in services.items():
        for p in s.get("ports", []):
            if not str(p).startswith("127.0.0.1:"):
                problems.append(f"compose: {name} publishes {p} beyond loopback")
        for v in s.get("volumes", []):
            host = str(v).split(":")[0]
            if host.startswith("."):
                if not os.path.exists(os.path.normpath(os.path.join(cdir, host))):
                    problems.append(f"compose: {name} mounts missing {host}")
        build = s.get("build")
        if build:
            df = os.path.normpath(os.path.join(cdir, build["context"], build["dockerfile"]))
            if not os.path.exists(df):
                problems.append(f"compose: {name} builds from missing {df}")


def main():
    src = sys.argv[1]
    problems = []
    check_k8s(src, problems)
    check_compose(src, problems)
    for p in problems:
        print(p)
    print(f"manifests: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
