#!/usr/bin/env python3
"""Foreign event loops under the preload shim: cost and accuracy (docs/benchmarks.md).

  bench/scripts/foreign_loops.py [--build build] [--rounds 3] [--seconds 8] [--only cost|accuracy]
                               [--targets tornado,redis,node]

cost: for Tornado hello (examples/tornado_seed.py, /usr/bin/python3), redis-server (GET/SET from
  redis-benchmark) and a Node http hello, an agent-off and an agent-on server (LD_PRELOAD of the
  shim) run AT THE SAME TIME, both pinned to CPU 0, each loaded by its own client pinned to CPU 1,
  so whatever else runs on the machine hits both alike. Per round: requests/s of each and the CPU
  time per request of each server (every thread, schedstat, plus child processes: the
  stallwatch-watchdog process of a single-threaded host is charged to the agent-on server).
  Redis's load runs until stopped (redis-benchmark -l) and its requests are the commands Redis
  itself counted (INFO stats) over the same window as the CPU: a fixed request count would
  leave the slower server running alone at the end, on a CPU it no longer shares, where each
  wait finds fewer requests — a cost per request the other server never pays.
  off/on CPU per request is the throughput ratio a CPU-bound server would see (target >= 0.99).
  The agent runs with its default settings (threshold 50 ms, a report every 10 s), its findings
  written to a file.
accuracy: injected blocks of known length on the loop — Redis `DEBUG SLEEP`, `time.sleep` in an
  asyncio callback, a busy loop in Node — and what the agent reports for each: the closed stall's
  duration against the injected one (error), and the detection latency (the duration of the
  first ongoing report of the stall: how long after the stall began the agent said so). The
  error is taken against the host's own timing of each block where it has one: Redis's SLOWLOG
  (µs), the asyncio script's perf_counter around time.sleep, Node's hrtime around the busy loop.
  On Node the same blocks are also measured by perf_hooks.monitorEventLoopDelay (resolution
  10 ms).

Loopback only, bounded (rounds x seconds per target, a fixed count of blocks); every process it
starts is stopped by its pid.
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PY = "/usr/bin/python3"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def proc_cpu_ns(pid):
    """CPU of every thread of pid and of its child processes (schedstat, ns)."""
    total = 0
    pids = [pid]
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def agent_env(shim, findings, threshold="50ms", report_interval="1s"):
    """The agent's environment: findings to a file; report_interval None keeps the default."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = shim
    env["STALLWATCH_ENDPOINT"] = "file:" + findings
    env["STALLWATCH_THRESHOLD"] = threshold
    if report_interval is not None:
        env["STALLWATCH_REPORT_INTERVAL"] = report_interval
    return env


NODE_HELLO = ("require('http').createServer((q, r) => r.end('hello world'))"
              ".listen(Number(process.argv[1]), '127.0.0.1')")


def server_cmd(target, port):
    if target == "tornado":
        return [PY, os.path.join(ROOT, "examples", "tornado_seed.py"), "--port", str(port)]
    if target == "redis":
        return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                "--enable-debug-command", "local", "--slowlog-log-slower-than", "0",
                "--slowlog-max-len", "1000"]
    return ["node", "-e", NODE_HELLO, str(port)]


def run_load(target, port, seconds, out):
    """Starts the load (pinned to CPU 1); returns the Popen."""
    if target == "redis":
        # Until stopped: the round's window is measured from Redis's own command count.
        cmd = ["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-t", "get,set", "-l",
               "-c", "25", "-q", "--csv"]
    else:
        cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c25", f"-d{seconds}s",
               f"http://127.0.0.1:{port}/"]
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def requests_done(text):
    m = re.search(r"(\d+) requests in", text)
    return int(m.group(1)) if m else 0


def redis_commands(port):
    """Commands Redis has processed so far (INFO stats), or -1."""
    r = subprocess.run(["redis-cli", "-p", str(port), "info", "stats"], capture_output=True,
                       text=True, timeout=10)
    m = re.search(r"total_commands_processed:(\d+)", r.stdout)
    return int(m.group(1)) if m else -1


def cost(args, shim):
    print("## cost: agent off and on side by side (both servers on CPU 0, clients on CPU 1)")
    print(f"# {time.strftime('%FT%TZ', time.gmtime())} nproc={os.cpu_count()} "
          f"loadavg={open('/proc/loadavg').read().strip()}")
    print()
    print("| target | round | req/s off | req/s on | CPU µs/request off | on | off/on |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for target in args.targets.split(","):
        ratios = []
        for r in range(1, args.rounds + 1):
            tmp = tempfile.mkdtemp(prefix="sw-foreign-")
            p_off, p_on = free_port(), free_port()
            if target == "tornado":  # the app's upstream takes port + 1
                while p_on in (p_off, p_off + 1) or p_off in (p_on, p_on + 1):
                    p_on = free_port()
            off = subprocess.Popen(["taskset", "-c", "0"] + server_cmd(target, p_off),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            on = subprocess.Popen(["taskset", "-c", "0"] + server_cmd(target, p_on),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=agent_env(shim, os.path.join(tmp, "findings.jsonl"),
                                                report_interval=None))
            try:
                if not (wait_port(p_off) and wait_port(p_on)):
                    print(f"foreign_loops: {target} did not start", file=sys.stderr)
                    return 1
                time.sleep(2)  # the agent's unwinder warms up; the loops are found
                with open(os.path.join(tmp, "off.txt"), "w") as fo, \
                        open(os.path.join(tmp, "on.txt"), "w") as fn:
                    if target == "redis":
                        lo = run_load(target, p_off, args.seconds, fo)
                        ln = run_load(target, p_on, args.seconds, fn)
                        try:
                            time.sleep(1)  # both loads connected and running
                            k0 = (redis_commands(p_off), redis_commands(p_on))
                            c0 = (proc_cpu_ns(off.pid), proc_cpu_ns(on.pid))
                            t0 = time.monotonic()
                            time.sleep(args.seconds)
                            c1 = (proc_cpu_ns(off.pid), proc_cpu_ns(on.pid))
                            k1 = (redis_commands(p_off), redis_commands(p_on))
                            window = time.monotonic() - t0
                        finally:
                            stop(lo)
                            stop(ln)
                        n_off = k1[0] - k0[0] if min(k0[0], k1[0]) >= 0 else 0
                        n_on = k1[1] - k0[1] if min(k0[1], k1[1]) >= 0 else 0
                        rps_off, rps_on = n_off / window, n_on / window
                    else:
                        c0 = (proc_cpu_ns(off.pid), proc_cpu_ns(on.pid))
                        lo = run_load(target, p_off, args.seconds, fo)
                        ln = run_load(target, p_on, args.seconds, fn)
                        lo.wait()
                        ln.wait()
                        c1 = (proc_cpu_ns(off.pid), proc_cpu_ns(on.pid))
            finally:
                stop(off)
                stop(on)
            text_off = open(os.path.join(tmp, "off.txt")).read()
            text_on = open(os.path.join(tmp, "on.txt")).read()
            if target != "redis":
                n_off, n_on = requests_done(text_off), requests_done(text_on)
                rps_off, rps_on = n_off / args.seconds, n_on / args.seconds
            if n_off == 0 or n_on == 0:
                print(f"foreign_loops: {target}: the load did not run:\n{text_off}\n{text_on}",
                      file=sys.stderr)
                return 1
            u_off = (c1[0] - c0[0]) / 1e3 / n_off
            u_on = (c1[1] - c0[1]) / 1e3 / n_on
            ratios.append(u_off / u_on)
            print(f"| {target} | {r} | {rps_off:.0f} | {rps_on:.0f} | {u_off:.2f} | {u_on:.2f} "
                  f"| {u_off / u_on:.4f} |", flush=True)
            subprocess.run(["rm", "-rf", tmp])
        summary[target] = statistics.median(ratios)
    print()
    for t, m in summary.items():
        print(f"{t}: median CPU per request off/on = {m:.4f} "
              f"(target >= 0.99: {'met' if m >= 0.99 else 'MISSED'})")
    print(f"# loadavg at end: {open('/proc/loadavg').read().strip()}")
    print()
    return 0


def read_findings(path):
    stalls, first_ongoing = {}, {}
    try:
        with open(path) as f:
            for line in f:
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if j.get("kind") != "stall":
                    continue
                key = (j.get("pid"), j.get("loop"), j.get("stall_id"))
                if j.get("ongoing"):
                    first_ongoing.setdefault(key, j["duration_s"])
                else:
                    stalls[key] = j
    except OSError:
        pass
    return stalls, first_ongoing


def summarize(name, injected_s, stalls, first_ongoing, measured=None):
    """Matches closed stalls to injected blocks in order of start; prints one row per length.
    The error is against the block's length as the host timed it (`measured`), else the
    nominal length."""
    closed = sorted(stalls.items(), key=lambda kv: kv[1]["start_ns"])
    measured = measured or injected_s
    by_len = {}
    for (key, s), d, m in zip(closed, injected_s, measured):
        by_len.setdefault(d, []).append((s, first_ongoing.get(key), m))
    for d in sorted(by_len):
        v = by_len[d]
        errs = [abs(s["duration_s"] - m) * 1e3 for s, _, m in v]
        lat = [o * 1e3 for _, o, _ in v if o is not None]
        cls = sorted({s["class"] for s, _, _ in v})
        print(f"| {name} | {d * 1e3:.0f} | {len(v)} | {statistics.median(errs):.2f} | "
              f"{max(errs):.2f} | {statistics.median(lat) if lat else float('nan'):.1f} | "
              f"{max(lat) if lat else float('nan'):.1f} | {','.join(cls)} |")
    missing = len(injected_s) - len(closed)
    if missing:
        print(f"| {name} | - | {missing} blocks without a stall | | | | | |")


ASYNCIO_BLOCKS = r"""
import asyncio, json, sys, time
lengths = [float(x) for x in sys.argv[1].split(",")]
reps = int(sys.argv[2])
out = []
async def main():
    for d in lengths:
        for _ in range(reps):
            await asyncio.sleep(0.25)
            t = time.perf_counter(); time.sleep(d); out.append(time.perf_counter() - t)
    await asyncio.sleep(1.5)
asyncio.run(main())
print(json.dumps(out))
"""

NODE_BLOCKS = r"""
const { monitorEventLoopDelay } = require('perf_hooks');
const lengths = process.argv[1].split(',').map(Number), reps = Number(process.argv[2]);
const h = monitorEventLoopDelay({ resolution: 10 }); h.enable();
const out = [], peer = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  for (const d of lengths) for (let i = 0; i < reps; i++) {
    h.reset();
    await sleep(250 + Math.random() * 10);  // a random phase against the histogram's timer
    // From setImmediate, as bench/peers/node_delay.js does (a block inside the timers phase is
    // not seen by the histogram's own timer).
    out.push(await new Promise((res) => setImmediate(() => {
      const t = process.hrtime.bigint(); while (process.hrtime.bigint() - t < BigInt(d * 1e9));
      res(Number(process.hrtime.bigint() - t) / 1e9);
    })));
    await sleep(100); peer.push(h.max / 1e9);
  }
  await sleep(1500);
  console.log(JSON.stringify({ out, peer }));
})();
"""


def accuracy(args, shim):
    lengths = [0.1, 0.2, 0.5]
    reps = args.reps
    print("## accuracy: injected blocks, threshold 50 ms")
    print()
    print("| host | block ms | stalls | duration error median ms | max ms | "
          "detection latency median ms | max ms | class |")
    print("|---|---|---|---|---|---|---|---|")
    tmp = tempfile.mkdtemp(prefix="sw-foreign-acc-")
    # Redis DEBUG SLEEP.
    port = free_port()
    findings = os.path.join(tmp, "redis.jsonl")
    srv = subprocess.Popen(server_cmd("redis", port), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=agent_env(shim, findings))
    injected = []
    try:
        if not wait_port(port):
            print("foreign_loops: redis-server did not start", file=sys.stderr)
            return 1
        subprocess.run(["redis-cli", "-p", str(port), "ping"], stdout=subprocess.DEVNULL)
        time.sleep(1.5)
        for d in lengths:
            for _ in range(reps):
                r = subprocess.run(["redis-cli", "-p", str(port), "DEBUG", "SLEEP", str(d)],
                                   capture_output=True, text=True, check=True)
                if r.stdout.strip() != "OK":
                    print(f"foreign_loops: DEBUG SLEEP: {r.stdout.strip()}", file=sys.stderr)
                    return 1
                injected.append(d)
                time.sleep(0.25)
        time.sleep(1.5)
        # Redis's own timing of each command (SLOWLOG, µs): the host's view of the block.
        r = subprocess.run(["redis-cli", "-p", str(port), "--json", "SLOWLOG", "GET", "1000"],
                           capture_output=True, text=True, check=True)
        entries = sorted(json.loads(r.stdout), key=lambda e: e[0])
        redis_timed = [e[2] / 1e6 for e in entries if e[3] and e[3][0].upper() == "DEBUG"]
    finally:
        stop(srv)
    if len(redis_timed) != len(injected):
        print(f"foreign_loops: SLOWLOG has {len(redis_timed)} DEBUG entries, "
              f"{len(injected)} were sent", file=sys.stderr)
        redis_timed = None
    summarize("redis DEBUG SLEEP", injected, *read_findings(findings), measured=redis_timed)
    # asyncio: time.sleep in a coroutine.
    findings = os.path.join(tmp, "asyncio.jsonl")
    r = subprocess.run([PY, "-c", ASYNCIO_BLOCKS, ",".join(map(str, lengths)), str(reps)],
                       capture_output=True, text=True, env=agent_env(shim, findings), check=True)
    measured = json.loads(r.stdout.strip().splitlines()[-1])
    summarize("asyncio time.sleep", [d for d in lengths for _ in range(reps)],
              *read_findings(findings), measured=measured)
    # Node: a busy loop; the same blocks through monitorEventLoopDelay.
    findings = os.path.join(tmp, "node.jsonl")
    r = subprocess.run(["node", "-e", NODE_BLOCKS, ",".join(map(str, lengths)), str(reps)],
                       capture_output=True, text=True, env=agent_env(shim, findings), check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    summarize("node busy loop", [d for d in lengths for _ in range(reps)],
              *read_findings(findings), measured=res["out"])
    print()
    print("Node's own monitorEventLoopDelay (resolution 10 ms) on the same blocks: max of the "
          "histogram minus the block's length as the script timed it")
    print()
    print("| block ms | median error ms | max error ms |")
    print("|---|---|---|")
    inj = [d for d in lengths for _ in range(reps)]
    for d in lengths:
        e = [abs(p - m) * 1e3 for p, m, i in zip(res["peer"], res["out"], inj) if i == d]
        print(f"| {d * 1e3:.0f} | {statistics.median(e):.2f} | {max(e):.2f} |")
    subprocess.run(["rm", "-rf", tmp])
    print()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10, help="blocks of each length (accuracy)")
    ap.add_argument("--only", choices=["cost", "accuracy"])
    ap.add_argument("--targets", default="tornado,redis,node", help="cost: which hosts")
    args = ap.parse_args()
    shim = os.path.join(args.build, "agent", "preload", "libstallwatch_preload.so")
    if not os.path.exists(shim):
        print(f"foreign_loops: {shim} not built (cmake --build {args.build})", file=sys.stderr)
        return 1
    for tool in ("wrk", "redis-server", "redis-benchmark", "redis-cli", "node", "taskset"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], stdout=subprocess.DEVNULL).returncode:
            print(f"foreign_loops: {tool} not installed (scripts/install-deps.sh, apt-get install "
                  "wrk redis-server nodejs)", file=sys.stderr)
            return 1
    if (os.cpu_count() or 1) < 2:
        print("foreign_loops: needs 2 CPUs", file=sys.stderr)
        return 1
    rc = 0
    if args.only in (None, "accuracy"):
        rc |= accuracy(args, shim)
    if args.only in (None, "cost"):
        rc |= cost(args, shim)
    return rc


if __name__ == "__main__":
    sys.exit(main())
