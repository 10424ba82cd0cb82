#!/usr/bin/env python3
"""Benchmarks of the CLI on loopback (docs/cli.md, "Benchmarks").

1. `stallwatch load` against wrk on the same hello route: QPS and median latency.
2. The hello route of `stallwatch serve` (agent attached, and --no-agent) against a minimal
   evhttp program (plain_evhttp_hello.c), under wrk.

Each configuration runs --repeat times, interleaved with the others, and the median is shown.
Usage: bench/cli/run_bench.py [--build build] [--duration 10] [--connections 50] [--repeat 3]
Needs wrk (Debian package wrk) and a C compiler for the baseline when it is not built.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PORT = 18890


def wait_ready(sw):
    for _ in range(100):
        r = subprocess.run([sw, "load", f"http://127.0.0.1:{PORT}/", "-n", "1", "-c", "1"],
                           capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    sys.exit("run_bench.py: the server did not start")


def timed(cmd):
    """Runs cmd; returns (stdout, CPU seconds it used)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, _, usage = os.wait4(p.pid, 0)
    return out, usage.ru_utime + usage.ru_stime


def wrk(threads, duration, conns):
    out, cpu = timed(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
                      f"http://127.0.0.1:{PORT}/"])
    qps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    v = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", out, re.M)
    p50 = float(v.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[v.group(2)]
    return qps, p50, cpu / (qps * duration) * 1e6


def load(sw, threads, duration, conns):
    out, cpu = timed([sw, "load", f"http://127.0.0.1:{PORT}/", "-c", str(conns), "-t",
                      str(threads), "-d", f"{duration}s", "--json"])
    r = json.loads(out)
    return r["qps"], r["latency_s"]["p50"] * 1e3, cpu / max(r["requests"], 1) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("run_bench.py: wrk is not installed (apt-get install wrk)")
    sw = os.path.join(a.build, "cli", "stallwatch")
    plain = os.path.join(a.build, "bench", "cli", "plain_evhttp_hello")
    if not os.path.exists(plain):
        plain = os.path.join(tempfile.mkdtemp(), "plain_evhttp_hello")
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libevent"],
                               capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["cc", "-O2", "-o", plain,
                        os.path.join(os.path.dirname(__file__), "plain_evhttp_hello.c")] + flags,
                       check=True)
    servers = {
        "plain evhttp": [plain, str(PORT)],
        "stallwatch serve --no-agent": [sw, "serve", "--port", str(PORT), "--no-agent"],
        "stallwatch serve (agent)": [sw, "serve", "--port", str(PORT), "--endpoint", "off"],
    }
    clients = {
        "plain evhttp": ["wrk -t1", "wrk -t2", "stallwatch load -t1", "stallwatch load -t2"],
        "stallwatch serve --no-agent": ["wrk -t2"],
        "stallwatch serve (agent)": ["wrk -t1", "wrk -t2", "stallwatch load -t1",
                                     "stallwatch load -t2"],
    }
    results = {}
    for _ in range(a.repeat):
        for name, cmd in servers.items():
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_ready(sw)
                for client in clients[name]:
                    if client.startswith("wrk"):
                        r = wrk(int(client[-1]), a.duration, a.connections)
                    else:
                        r = load(sw, int(client[-1]), a.duration, a.connections)
                    results.setdefault((name, client), []).append(r)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, {a.duration}s runs, {a.connections} "
          f"connections, median of {a.repeat}")
    print("| server | client | req/s | p50 ms | client CPU µs/req | runs (req/s) |")
    print("|---|---|---:|---:|---:|---|")
    for (name, client), rs in results.items():
        q = statistics.median(r[0] for r in rs)
        p = statistics.median(r[1] for r in rs)
        c = statistics.median(r[2] for r in rs)
        runs = ", ".join(f"{r[0]:.0f}" for r in rs)
        print(f"| {name} | {client} | {q:.0f} | {p:.3f} | {c:.1f} | {runs} |")


if __name__ == "__main__":
    main()
