#!/usr/bin/env python3
"""A stand-in for stallwatchd's /metrics: the metric names, labels and buckets the daemon
exports (PRODUCT.md; docs of the daemon), with values that move every second as a live host's
would (two loops of one process stalling now and then and making blocking calls). Used only to prove that every
dashboard query parses and returns data through a real Prometheus before the daemon is there.

    fake_stallwatchd.py PORT_FILE    # listens on 127.0.0.1:<free port>, writes the port to PORT_FILE
Stops by itself after 120 s.
"""
import http.server
import os
import sys
import threading
import time

START = time.monotonic()
DELAY = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5]
ITER = [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]
STALL = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
# The blocking-call ledger's buckets: 2^10 ... 2^34 ns by powers of 4, in seconds.
BLOCKING = [2 ** e / 1e9 for e in range(10, 35, 2)]
LOOPS = [("demo", "0", "main"), ("demo", "0", "worker-1")]  # service, process slot, loop
# Blocking calls per loop: (call, calls per second, bucket index). Series exist only for the
# calls a loop made: main resolves names and sleeps, worker-1 syncs a file.
CALLS = [[("getaddrinfo", 20, 4), ("clock_nanosleep", 5, 6)], [("fsync", 2, 7)]]
REASONS = ["bad_magic", "bad_version", "bad_length", "bad_json", "not_object", "unknown_kind",
           "bad_field", "no_hello", "identity_mismatch", "truncated", "limit", "handshake_timeout",
           "frame_timeout", "auth"]


def histogram(out, name, labels, bounds, t, per_s, at):
    """Cumulative buckets: per_s observations a second, all landing in bucket index `at`."""
    n = int(t * per_s)
    for i, b in enumerate(bounds):
        out.append(f'{name}_bucket{{{labels},le="{b}"}} {n if i >= at else 0}')
    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {n}')
    out.append(f"{name}_sum{{{labels}}} {n * bounds[at] * 0.7}")
    out.append(f"{name}_count{{{labels}}} {n}")


def render():
    t = time.monotonic() - START + 60  # as if running for a minute already
    out = ["# TYPE stallwatch_agents_connected gauge", "stallwatch_agents_connected 1"]
    for kind, name in (("histogram", "stallwatch_loop_delay_seconds"),
                       ("histogram", "stallwatch_loop_iteration_seconds"),
                       ("histogram", "stallwatch_stall_duration_seconds"),
                       ("gauge", "stallwatch_loop_utilization_ratio"),
                       ("counter", "stallwatch_stalls_total"),
                       ("gauge", "stallwatch_stall_ongoing_seconds"),
                       ("counter", "stallwatch_stack_samples_total"),
                       ("counter", "stallwatch_reports_suppressed_total")):
        out.append(f"# TYPE {name} {kind}")
        for i, (svc, process, loop) in enumerate(LOOPS):
            lab = f'loop="{loop}",process="{process}",service="{svc}"'
            if name == "stallwatch_loop_delay_seconds":
                histogram(out, name, lab, DELAY, t, 100, 3 + i)
            elif name == "stallwatch_loop_iteration_seconds":
                histogram(out, name, lab, ITER, t, 50, 1 + i)
            elif name == "stallwatch_stall_duration_seconds":
                histogram(out, name, lab, STALL, t, 0.5, 1 + i)
            elif name == "stallwatch_loop_utilization_ratio":
                out.append(f"{name}{{{lab}}} {0.2 + 0.3 * i}")
            elif name == "stallwatch_stalls_total":
                for c in ("cpu", "blocked", "starved", "suspended"):
                    v = int(t * 0.5) if c == ("blocked", "cpu")[i] else 0
                    out.append(f'{name}{{class="{c}",{lab}}} {v}')
            elif name == "stallwatch_stall_ongoing_seconds":
                out.append(f"{name}{{{lab}}} {t % 3 if i == 0 else 0}")
            elif name == "stallwatch_stack_samples_total":
                out.append(f"{name}{{{lab}}} {int(t * 2)}")
            else:
                out.append(f"{name}{{{lab}}} {int(t * 0.1)}")
    for kind, name in (("counter", "stallwatch_blocking_calls_total"),
                       ("histogram", "stallwatch_blocking_call_seconds")):
        out.append(f"# TYPE {name} {kind}")
        for i, (svc, process, loop) in enumerate(LOOPS):
            for call, per_s, at in CALLS[i]:
                lab = f'call="{call}",loop="{loop}",process="{process}",service="{svc}"'
                if kind == "counter":
                    out.append(f"{name}{{{lab}}} {int(t * per_s)}")
                else:
                    histogram(out, name, lab, BLOCKING, t, per_s, at)
    out.append("# TYPE stallwatch_daemon_call_sites_not_kept_total counter")
    out.append("stallwatch_daemon_call_sites_not_kept_total 0")
    out.append("# TYPE stallwatch_agent_findings_dropped_total counter")
    out.append('stallwatch_agent_findings_dropped_total{process="0",service="demo"} 0')
    out.append("# TYPE stallwatch_process_info gauge")
    out.append('stallwatch_process_info{agent_version="0.1.0",executable="/usr/bin/demo",'
               'host="demo-host",pid="4242",process="0",service="demo"} 1')
    out.append("# TYPE stallwatch_daemon_frames_rejected_total counter")
    for r in REASONS:
        out.append(f'stallwatch_daemon_frames_rejected_total{{reason="{r}"}} 0')
    return ("\n".join(out) + "\n").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = render() if self.path == "/metrics" else b"ok\n"
        self.send_response(200 if self.path in ("/metrics", "/healthz") else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, sys.argv[1])
    threading.Timer(120, srv.shutdown).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
