#!/usr/bin/env python3
"""Python frames in stalls: how often the blocking Python function is named, and a stress run
(docs/benchmarks.md §11).

  bench/scripts/python_frames.py [--build build] [--stalls 1000] [--stress-seconds 120]
                                 [--off-seconds S] [--keep DIR] [--only named|stress|reads]

named: an asyncio program (/usr/bin/python3 under the preload shim, threshold 20 ms, no stack
  budget) alternates `blocked_step` (time.sleep 50 ms on the loop) and `running_step` (50 ms of
  Python: recursion, a generator, exceptions, dict building), --stalls of each, --gap-ms apart
  (the watchdog unwinds, reads and symbolizes each stall between them). For
  every closed stall: is the step's function (or, running, a function it calls) among the Python
  frames of its stacks (named), do
  its stacks have Python frames that do not include it (other), native frames only (native), or
  no stack (none)? Target: >= 99 % of blocked and >= 95 % of running stalls named.
stress: the same churn (running_step in 30 ms chunks, 1 ms apart, threshold 10 ms) for
  --stress-seconds under the shim and without it: the agent's captures (stack samples the
  findings carry), whether the host crashed, and whether the host's own result (a checksum of
  everything the churn computed) is the one the churn must give for the chunk count it reported.
  --off-seconds shortens (or, 0, skips) the agent-off run, which only gives the host's pace.
  A --build configured with SW_SANITIZE=address (build-asan) runs the host with the ASan
  runtime preloaded before the shim (leak detection off: the interpreter keeps its objects at
  exit) and counts the ASan/UBSan reports of the host and of the watchdog process.
reads: the in-process reader against a thread that churns frames, 10 000 reads without the GIL
  (tests/integration/agent/python_frames_embedded_test with SW_PY_READS), in --build and, when it
  exists, in build-asan (AddressSanitizer): reads that succeeded, errors (torn reads), wrong names
  (the test fails on any), and the cost of a read p50/p99.

Loopback only; every process it starts is stopped by its pid; bounded in count and time.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PY = "/usr/bin/python3"

CHURN = r'''
import asyncio, sys, time

def recurse(n):
    return leaf() if n == 0 else recurse(n - 1) + 1

def leaf():
    d = {i: [i] * 3 for i in range(20)}
    return len(d)

def gen(n):
    for i in range(n):
        yield i * i

def fail():
    raise ValueError("churn")

def catch():
    try:
        fail()
    except ValueError:
        return 1

def running_step(ms):
    end = time.perf_counter() + ms / 1000
    total = 0
    while time.perf_counter() < end:
        total += recurse(30) + sum(gen(30)) + catch() + len(list(range(50)))
    return total

def blocked_step(ms):
    time.sleep(ms / 1000)
    return 1
'''

NAMED = CHURN + r'''
async def main(n, gap):
    # The agent finds a Python loop at its first wait for events (and starts its watchdog
    # process then): the first step comes after one.
    await asyncio.sleep(0.5)
    for _ in range(n):
        print("blocked_step", time.time_ns())
        blocked_step(50)
        await asyncio.sleep(gap)
        print("running_step", time.time_ns())
        running_step(50)
        await asyncio.sleep(gap)
    sys.stdout.flush()
    await asyncio.sleep(0.6)

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
'''

STRESS = CHURN + r'''
import zlib
async def main(seconds):
    # The host's own result: a checksum of the work, the same whatever watches it (a fixed count
    # of fixed-size chunks; the chunk's time only decides how often the loop yields).
    crc = 0
    end = time.monotonic() + seconds
    chunks = 0
    while time.monotonic() < end:
        for _ in range(3000):  # ~30 ms of churn (~10 us an iteration)
            crc = zlib.crc32(str(recurse(30) + sum(gen(30)) + catch()).encode(), crc)
        chunks += 1
        await asyncio.sleep(0.001)
    print(json.dumps({"chunks": chunks, "crc": crc}), flush=True)

import json
asyncio.run(main(float(sys.argv[1])))
'''


def sanitizers(build):
    """The SW_SANITIZE a build directory was configured with ("" when none)."""
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            m = re.search(r"^SW_SANITIZE:\w+=(.*)$", f.read(), re.M)
    except OSError:
        return ""
    return m.group(1).strip() if m else ""


def agent_env(build, findings, threshold, report_dir=None):
    env = dict(os.environ)
    preload = os.path.join(build, "agent", "preload", "libstallwatch_preload.so")
    if "address" in sanitizers(build):
        # An uninstrumented interpreter: the ASan runtime must be the first library loaded. The
        # watchdog process inherits the runtime (only the shim is taken out of its LD_PRELOAD)
        # and the options: its reports land beside the host's (log_path.PID).
        runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                                 text=True).stdout.strip()
        preload = runtime + ":" + preload
        env["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=0:halt_on_error=1:"
                               f"log_path={report_dir}/asan")
        env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:log_path={report_dir}/ubsan"
    env.update({
        "LD_PRELOAD": preload,
        "STALLWATCH_ENDPOINT": "file:" + findings,
        "STALLWATCH_THRESHOLD": threshold,
        "STALLWATCH_MAX_STACK_REPORTS": "1000000",
        "STALLWATCH_REPORT_INTERVAL": "1s",
    })
    return env


def fresh(path):
    """`path` in an existing directory, without what an earlier run (--keep) left there."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.remove(path)
    return path


def closed_stalls(path):
    out = []
    with open(path) as f:
        for line in f:
            j = json.loads(line)
            if j.get("kind") == "stall" and not j.get("ongoing"):
                out.append(j)
    return out


# The functions each step runs: a running step is named by whichever of them the sample caught
# (the innermost Python frame is the function that was running; a torn read of a deep recursion
# can end before the step's own frame).
STEP_FUNCTIONS = {
    "blocked_step": {"blocked_step"},
    "running_step": {"running_step", "recurse", "leaf", "leaf.<locals>.<dictcomp>", "gen",
                     "fail", "catch"},
}


def outcome(stall, step):
    frames = [fr for st in stall.get("stacks", []) for fr in st.get("frames", [])]
    if not frames:
        return "none"
    python = [fr for fr in frames if fr.get("kind") == "python"]
    if any(fr.get("function") in STEP_FUNCTIONS[step] and fr.get("file") == "<string>"
           for fr in python):
        return "named"
    return "other" if python else "native"


def named(args):
    with tempfile.TemporaryDirectory() as tmp:
        report_dir = args.keep or tmp
        findings = fresh(os.path.join(report_dir, "named.jsonl"))
        t0 = time.monotonic()
        p = subprocess.run([PY, "-c", NAMED, str(args.stalls), str(args.gap_ms / 1000)],
                           env=agent_env(args.build, findings, "20ms", report_dir),
                           capture_output=True, text=True,
                           timeout=60 + args.stalls * (0.2 + 2 * args.gap_ms / 1000))
        took = time.monotonic() - t0
        stalls = closed_stalls(findings)
        with open(os.path.join(report_dir, "named.steps"), "w") as f:
            f.write(p.stdout)
        with open(os.path.join(report_dir, "named.stderr"), "w") as f:
            f.write(p.stderr)
    steps = [(int(t), name) for name, t in (l.split() for l in p.stdout.splitlines())]
    # Each stall belongs to the step whose stamp is nearest its start (a step's stall starts when
    # the loop came back from its wait just before the step's stamp; steps are >= 60 ms apart).
    by_step = {}
    for s in stalls:
        if steps:
            nearest = min(steps, key=lambda st: abs(st[0] - s["start_ns"]))
            by_step.setdefault(nearest, []).append(s)
    print(f"## named: {args.stalls} blocked + {args.stalls} running steps of 50 ms, "
          f"{args.gap_ms} ms apart, threshold 20 ms ({took:.0f} s, host exit {p.returncode})\n")
    print("| step | steps | stalls | classes | named | other Python frames | native only |"
          " no stack | named % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fn, want in (("blocked_step", 99.0), ("running_step", 95.0)):
        mine = [s for key, ss in by_step.items() if key[1] == fn for s in ss]
        counts = {"named": 0, "other": 0, "native": 0, "none": 0}
        classes = {}
        for s in mine:
            counts[outcome(s, fn)] += 1
            classes[s.get("class")] = classes.get(s.get("class"), 0) + 1
        pct = 100.0 * counts["named"] / max(1, len(mine))
        cls = ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
        print(f"| `{fn}` | {sum(1 for st in steps if st[1] == fn)} | {len(mine)} | {cls} | "
              f"{counts['named']} | {counts['other']} | {counts['native']} | {counts['none']} | "
              f"**{pct:.1f}** (target >= {want:.0f}: {'met' if pct >= want else 'MISSED'}) |")
    print()


def stress(args):
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        report_dir = args.keep or tmp
        os.makedirs(report_dir, exist_ok=True)
        for name in os.listdir(report_dir):  # an earlier run's sanitizer logs (--keep)
            if name.startswith(("asan.", "ubsan.")):
                os.remove(os.path.join(report_dir, name))
        for mode in ("off", "on"):
            seconds = args.stress_seconds if mode == "on" else args.off_seconds
            if seconds is None:
                seconds = args.stress_seconds
            if seconds <= 0:
                continue
            findings = fresh(os.path.join(report_dir, f"{mode}.jsonl"))
            env = (agent_env(args.build, findings, "10ms", report_dir) if mode == "on"
                   else dict(os.environ))
            t0 = time.monotonic()
            p = subprocess.run([PY, "-c", STRESS, str(seconds)], env=env,
                               capture_output=True, text=True, timeout=seconds * 3 + 60)
            took = time.monotonic() - t0
            host = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {}
            stalls = closed_stalls(findings) if mode == "on" else []
            captures = sum(st.get("samples", 0) for s in stalls for st in s.get("stacks", []))
            python = sum(st.get("samples", 0) for s in stalls for st in s.get("stacks", [])
                         if any(fr.get("kind") == "python" for fr in st.get("frames", [])))
            with open(os.path.join(report_dir, f"{mode}.stderr"), "w") as f:
                f.write(p.stderr)
            results[mode] = {"rc": p.returncode, "took": took, "host": host, "stalls": len(stalls),
                             "captures": captures, "python": python, "seconds": seconds,
                             "stderr": p.stderr}
        # Sanitizer reports: the logs of the host and of the watchdog process (log_path.PID),
        # and whatever reached the host's stderr.
        reports = 0
        report_files = [f for f in os.listdir(report_dir) if f.startswith(("asan.", "ubsan."))]
        for name in report_files:
            with open(os.path.join(report_dir, name), errors="replace") as f:
                reports += len(re.findall(r"ERROR: AddressSanitizer|runtime error:", f.read()))
        for r in results.values():
            reports += len(re.findall(r"ERROR: AddressSanitizer|runtime error:", r["stderr"]))
    on = results["on"]
    san = sanitizers(args.build)
    print(f"## stress: the churn for {args.stress_seconds:g} s, threshold 10 ms, agent "
          f"{'off then on' if 'off' in results else 'on'}"
          f" (`{os.path.relpath(args.build, ROOT)}`{', SW_SANITIZE=' + san if san else ''})\n")
    print("| run | seconds | host exit | chunks (host) | chunks/s | host checksum | checksum as "
          "recomputed | stalls | captures | with Python frames |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        chunks = r["host"].get("chunks")
        ok = verify_chunks(r) if chunks is not None else False
        r["checksum_ok"] = ok
        rate = f"{chunks / r['seconds']:.1f}" if chunks is not None else "-"
        print(f"| agent {mode} | {r['seconds']:g} | {r['rc']} | {chunks if chunks is not None else '-'} "
              f"| {rate} | {r['host'].get('crc', '-')} | {'equal' if ok else 'DIFFERS'} | "
              f"{r['stalls'] if mode == 'on' else '-'} | "
              f"{r['captures'] if mode == 'on' else '-'} | {r['python'] if mode == 'on' else '-'} |")
    crashes = sum(1 for r in results.values() if r["rc"] != 0)
    corrupted = sum(1 for r in results.values() if not r["checksum_ok"])
    print(f"\nhost crashes: {crashes}; corrupted host results: {corrupted}; "
          f"captures {on['captures']} in {on['took']:.0f} s (target >= 10000: "
          f"{'met' if on['captures'] >= 10000 else 'MISSED'})"
          + (f"; sanitizer reports: {reports} ({len(report_files)} log files)" if san else "")
          + "\n")


def verify_chunks(r):
    # Every iteration of the churn folds the same value into the CRC (the functions are pure), so
    # a chunk is one fixed byte string: compute it with the churn's own functions, then fold it
    # in once per chunk the host reported, and compare with the host's CRC.
    code = CHURN + ("\nimport zlib, sys\n"
                    "chunk = b''.join(str(recurse(30) + sum(gen(30)) + catch()).encode()"
                    " for _ in range(3000))\n"
                    "crc = 0\nfor _ in range(int(sys.argv[1])):\n"
                    "    crc = zlib.crc32(chunk, crc)\nprint(crc)\n")
    want = subprocess.run([PY, "-c", code, str(r["host"]["chunks"])], capture_output=True,
                          text=True, timeout=600).stdout.strip()
    return str(r["host"]["crc"]) == want


def reads(args):
    print("## reads: the in-process reader, 10 000 reads of a churning thread without the GIL\n")
    for build in (args.build, os.path.join(ROOT, "build-asan")):
        exe = os.path.join(build, "tests", "integration", "agent", "python_frames_embedded_test")
        if not os.path.exists(exe):
            print(f"- {build}: {exe} not built")
            continue
        env = dict(os.environ, SW_PY_READS="10000", SW_PY_READ_SECONDS="600",
                   ASAN_OPTIONS="detect_leaks=1:abort_on_error=1")
        p = subprocess.run([exe, "--gtest_filter=*Churning*"], env=env, capture_output=True,
                           text=True, timeout=1200)
        line = next((l for l in p.stdout.splitlines() if l.startswith("torn reads")), "no output")
        print(f"- `{os.path.relpath(build, ROOT)}`: exit {p.returncode}: {line}")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--stalls", type=int, default=1000)
    ap.add_argument("--gap-ms", type=int, default=100, help="named: the loop's wait between steps")
    ap.add_argument("--stress-seconds", type=float, default=120)
    ap.add_argument("--off-seconds", type=float, default=None,
                    help="stress: the agent-off run's length (default --stress-seconds; 0 skips)")
    ap.add_argument("--keep", help="stress/named: write findings, stderr and sanitizer logs here")
    ap.add_argument("--only", choices=["named", "stress", "reads"])
    args = ap.parse_args()
    if not os.path.exists(PY):
        sys.exit("python_frames: /usr/bin/python3 is needed")
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} nproc={os.cpu_count()} "
          f"loadavg={open('/proc/loadavg').read().strip()}\n")
    for name, fn in (("named", named), ("stress", stress), ("reads", reads)):
        if args.only in (None, name):
            fn(args)


if __name__ == "__main__":
    main()
