"""Prints stallwatch JSON Lines findings (stdin) as short human lines; other lines pass through."""
import json
import sys


def top_frame(finding):
    for stack in finding.get("stacks", []):
        for frame in stack["frames"]:
            module = frame.get("module", "")
            if frame.get("function") and not any(
                    lib in module for lib in ("libc.so", "libstallwatch", "libevent")):
                return frame["function"]
    return "-"


for line in sys.stdin:
    if not line.startswith("{"):
        print(line.rstrip())
        continue
    f = json.loads(line)
    if f["kind"] == "stall" and not f["ongoing"]:
        print("STALL {:<9} {:7.1f} ms  syscall={}  top frame: {}".format(
            f["class"], f["duration_s"] * 1000, f["syscall"] or "-", top_frame(f)))
        print("      hint: " + f["hint"])
    elif f["kind"] == "stall":
        print("  ...ongoing {} stall, {:.0f} ms so far".format(f["class"], f["duration_s"] * 1000))
    elif f["kind"] == "delay":
        print("DELAY window {:.2f}s  p50={:.2f}ms p99={:.1f}ms max={:.1f}ms utilization={:.0%}".format(
            f["window_s"], f["p50_s"] * 1e3, f["p99_s"] * 1e3, f["max_s"] * 1e3, f["utilization"]))
