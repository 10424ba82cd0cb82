#!/usr/bin/env python3
"""Detection latency with the watchdog in a process of its own.

Runs tests/integration/agent/single_thread_host in mode "repeat N" (a single-threaded libevent
program, default agent settings: threshold 50 ms; N CPU stalls of 200 ms, 600 ms apart) with
STALLWATCH_ENDPOINT=file:F, and polls F every 0.2 ms. For each stall, latency = the moment the
first `ongoing` finding of that stall is seen in the file - (its start_ns + threshold). This
includes the reporter's queue and the file write, so it bounds the detection latency from
above. Bounded: one host, about 1.5 + 0.8 N s.

    bench/scripts/watchdog_process_detection.py [BUILD_DIR] [N]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../build")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
host = os.path.join(build, "tests/integration/agent/single_thread_host")
threshold_s = 0.050
path = tempfile.mktemp(prefix="sw-detect-", suffix=".jsonl")
env = {k: v for k, v in os.environ.items() if not k.startswith("STALLWATCH_")}
env["STALLWATCH_ENDPOINT"] = "file:" + path
proc = subprocess.Popen([host, "repeat", str(n)], stdout=subprocess.PIPE, env=env, text=True)
first = json.loads(proc.stdout.readline())
if first.get("watchdog") != "process":
    sys.exit("the host did not get a watchdog process: %s" % first)
seen = {}
offset = 0
buf = ""
while proc.poll() is None:
    try:
        with open(path) as f:
            f.seek(offset)
            chunk = f.read()
            offset = f.tell()
    except FileNotFoundError:
        chunk = ""
    now = time.time()
    buf += chunk
    while "\n" in buf:
        line, buf = buf.split("\n", 1)
        j = json.loads(line)
        if j.get("kind") == "stall" and j.get("ongoing") and j["stall_id"] not in seen:
            seen[j["stall_id"]] = now - (j["start_ns"] / 1e9 + threshold_s)
    time.sleep(0.0002)
os.unlink(path)
lat = sorted(v * 1000 for v in seen.values())
if not lat:
    sys.exit("no ongoing finding seen")
print("watchdog process, threshold 50 ms: %d of %d stalls seen ongoing; latency after the "
      "threshold (ms): p50 %.2f, max %.2f (in stall order: %s); loadavg %s" % (
          len(lat), n, lat[len(lat) // 2], lat[-1], " ".join("%.2f" % (seen[k] * 1000) for k in sorted(seen)),
          open("/proc/loadavg").read().split()[0]))
