#!/usr/bin/env bash
# The daemon's web UI (docs/daemon.md, "Web UI") rendered by a real browser: the built
# stallwatchd, the bundled server with the agent attached (`stallwatch serve`) stalling its loop
# on purpose — sleeps (BlockingSleepOnLoop, class blocked) in range A, then CPU burns
# (BurnCpuOnLoop, class cpu) in range B — and Debian's headless Chromium loading each view from
# the daemon and dumping the DOM it built from the live API. Asserts: the loops table lists the
# loop, the timeline has a bar of the right class for every stall, the flame graph's frames name
# the stalling function (and the class filter narrows them), a click's zoom is in the address and
# restored from it (flame_zoom_cdp.py), the diff view marks BurnCpuOnLoop grown and
# BlockingSleepOnLoop shrunk, the stall page shows the hint and a frame's file:line; the page's
# headers; one screenshot. Chromium missing fails the test (scripts/install-deps.sh installs it).
# Loopback only; every process started here is ended by its PID; bounded to about a minute.
# Usage: web_ui_chromium.sh STALLWATCHD STALLWATCH CHROMIUM
# SW_UI_SCREENSHOTS=DIR keeps a screenshot of every view there (to look at; never in the repo).
set -euo pipefail
daemon_bin="$1"; cli="$2"; chromium="$3"
if ! command -v "$chromium" >/dev/null 2>&1; then
  echo "FAIL: no Chromium at '$chromium': install Debian's chromium (scripts/install-deps.sh)"
  exit 1
fi
work=$(mktemp -d /tmp/stallwatch-ui-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${SW_UI_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 100); do curl -fs --max-time 1 "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
now_ns() { date +%s%N; }

daemon_port=$(free_port); serve_port=$(free_port)
base="http://127.0.0.1:$daemon_port"
"$daemon_bin" --agent-socket "$work/agent.sock" --http-listen "127.0.0.1:$daemon_port" \
  --log-level warn >"$work/daemon.log" 2>&1 &
pids+=($!)
wait_http "$base/healthz" || { cat "$work/daemon.log"; fail "daemon did not start"; }

STALLWATCH_REPORT_INTERVAL=1s "$cli" serve --port "$serve_port" --service uidemo \
  --endpoint "unix:$work/agent.sock" >"$work/serve.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$serve_port/" || { cat "$work/serve.log"; fail "serve did not start"; }

# Range A: three sleeps on the loop. Range B, a second later: three CPU burns.
a_since=$(now_ns)
for _ in 1 2 3; do curl -fs --max-time 5 "http://127.0.0.1:$serve_port/block?ms=250" >/dev/null; done
sleep 1
mid=$(now_ns)
sleep 0.5
for _ in 1 2 3; do curl -fs --max-time 5 "http://127.0.0.1:$serve_port/cpu?ms=250" >/dev/null; done
sleep 0.5
b_until=$(now_ns)

# Both ranges' stacks reached the daemon (a closed stall is reported when the loop is back).
for i in $(seq 100); do
  if curl -fs "$base/api/v1/stacks?since=$mid&until=$b_until" | grep -q BurnCpuOnLoop &&
     curl -fs "$base/api/v1/stacks?since=$a_since&until=$mid" | grep -q BlockingSleepOnLoop; then
    break
  fi
  [ "$i" -lt 100 ] || { curl -s "$base/api/v1/stalls"; fail "stalls never reached the daemon"; }
  sleep 0.2
done

# The page's headers: HTML with a strict policy; the script a file of its own; unknown paths 404.
curl -fsS -D "$work/h_page" -o "$work/page.html" "$base/"
grep -qi '^content-type: text/html; charset=utf-8' "$work/h_page" || fail "page content type"
grep -qi "^content-security-policy: default-src 'none'; script-src 'self'" "$work/h_page" ||
  fail "page policy: $(cat "$work/h_page")"
grep -qi '^cache-control: no-cache' "$work/h_page" || fail "page cache control"
curl -fsS -D "$work/h_js" -o /dev/null "$base/ui/app.js"
grep -qi '^content-type: text/javascript' "$work/h_js" || fail "app.js content type"
code=$(curl -s -o "$work/404" -w '%{http_code}' "$base/ui/nope.js")
[ "$code" = 404 ] && [ "$(wc -l <"$work/404")" = 1 ] || fail "/ui/nope.js: $code $(cat "$work/404")"

# Chromium runs for every view at once (each start-up takes seconds on a busy machine), each
# with a profile of its own; `finish` waits for them all.
bpids=(); bnames=(); burls=()
chrome() {  # NAME URL ARGS…: one headless Chromium in the background, output in $work/NAME.*
  local name=$1 url=$2; shift 2
  timeout 40 "$chromium" --headless=new --no-sandbox --disable-gpu --no-first-run \
    --disable-extensions --disable-background-networking --disable-sync \
    --disable-component-update --user-data-dir="$work/profile-$name" \
    --virtual-time-budget=8000 "$@" "$url" >"$work/$name.html" 2>"$work/$name.log" &
  pids+=($!); bpids+=($!); bnames+=("$name"); burls+=("$url")
}
browse() { chrome "$1" "$2" --dump-dom; }  # NAME URL: the DOM the page's script built
shot() { chrome "$1" "$2" --hide-scrollbars --window-size=1280,900 --screenshot="$3"; }  # NAME URL PNG
finish() {
  for i in "${!bpids[@]}"; do
    wait "${bpids[$i]}" || { tail -20 "$work/${bnames[$i]}.log"; fail "chromium failed on ${burls[$i]}"; }
  done
  for i in "${!bpids[@]}"; do
    case "${bnames[$i]}" in shot*) continue ;; esac
    grep -q 'data-state="ready"' "$work/${bnames[$i]}.html" || {
      grep -o '<div class="error">[^<]*' "$work/${bnames[$i]}.html" || true
      fail "${burls[$i]} did not render (state not ready)"
    }
  done
  bpids=(); bnames=(); burls=()
}
# Frames of a dumped flame graph: "function<TAB>delta<TAB>where" per frame.
frames() {
  python3 - "$1" <<'PY'
import sys
from html.parser import HTMLParser
class P(HTMLParser):
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "frame" in (a.get("class") or "").split() and "data-function" in a:
            print(a["data-function"], a.get("data-delta", ""), a.get("data-where", ""), sep="\t")
P().feed(open(sys.argv[1], encoding="utf-8").read())
PY
}

# What the views should show, from the API.
loop=$(curl -fs "$base/api/v1/loops" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loops"][0]["loop"])')
curl -fs "$base/api/v1/stalls?service=uidemo&limit=1000" >"$work/stalls.json"
# The burns' class: cpu, or starved when the machine is busy (sleeps are always blocked).
burn_class=$(python3 -c '
import json, sys
print([s["class"] for s in json.load(open(sys.argv[1]))["stalls"]
       if any("BurnCpuOnLoop" in f["function"] for st in s["stacks"] for f in st["frames"])][0])' \
  "$work/stalls.json")
read -r pid id hint < <(python3 -c '
import json, sys
s = [s for s in json.load(open(sys.argv[1]))["stalls"] if s["class"] == "blocked" and s["stacks"]][0]
print(s["pid"], s["stall_id"], s["hint"])' "$work/stalls.json")
[ -n "$hint" ] || fail "the blocked stall has no hint in the API"
diff_url="$base/?view=diff&service=uidemo&a_since=$a_since&a_until=$mid&b_since=$mid&b_until=$b_until"
stall_url="$base/?view=stall&service=uidemo&pid=$pid&loop=$loop&id=$id"
flame_url="$base/?view=flame&service=uidemo&loop=$loop&since=10m"
browse loops "$base/"
browse flame "$flame_url"
browse flame_cls "$base/?view=flame&service=uidemo&class=$burn_class"
browse diff "$diff_url"
browse stall "$stall_url"
shot shot "$flame_url" "$work/page.png"
finish

# Loops view: the table lists the loop; every stall of the API is a bar of its class.
grep -q "<table id=\"loops\"" "$work/loops.html" || fail "no loops table"
grep -q "<tr class=\"connected\" data-service=\"uidemo\" data-pid=\"[0-9]*\" data-loop=\"$loop\"" \
  "$work/loops.html" || fail "the loops table has no row for uidemo/$loop"
python3 - "$work/loops.html" "$work/stalls.json" <<'PY' || fail "timeline"
import json, sys
from html.parser import HTMLParser
bars = set()
class P(HTMLParser):
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "bar" in (a.get("class") or "").split():
            bars.add((a.get("data-stall-id"), a.get("data-class")))
P().feed(open(sys.argv[1], encoding="utf-8").read())
want = {(str(s["stall_id"]), s["class"]) for s in json.load(open(sys.argv[2]))["stalls"]}
assert len(want) >= 6, want
assert want <= bars, f"stalls of the API missing on the timeline: {want - bars}"
print("timeline:", len(bars), "bars, classes", sorted({c for _, c in bars}))
PY

# Flame graph, filtered by service and loop: the stalling functions are frames; with the burns'
# class only the burn is left.
frames "$work/flame.html" >"$work/flame.tsv"
grep -q $'^stallwatch::cli::[^\t]*BlockingSleepOnLoop' "$work/flame.tsv" ||
  { cat "$work/flame.tsv"; fail "flame graph lacks BlockingSleepOnLoop"; }
grep -q $'^stallwatch::cli::[^\t]*BurnCpuOnLoop' "$work/flame.tsv" || fail "flame graph lacks BurnCpuOnLoop"
frames "$work/flame_cls.html" >"$work/flame_cls.tsv"
grep -q 'BurnCpuOnLoop' "$work/flame_cls.tsv" || fail "class=$burn_class flame graph lacks BurnCpuOnLoop"
if grep -q 'BlockingSleepOnLoop' "$work/flame_cls.tsv"; then fail "class=$burn_class shows the sleeps"; fi

# Differential flame graph: A has only the sleeps, B only the burns.
frames "$work/diff.html" >"$work/diff.tsv"
grep -q $'BurnCpuOnLoop[^\t]*\tgrew\t' "$work/diff.tsv" ||
  { cat "$work/diff.tsv"; fail "diff does not mark BurnCpuOnLoop grew"; }
grep -q $'BlockingSleepOnLoop[^\t]*\tshrank\t' "$work/diff.tsv" ||
  { cat "$work/diff.tsv"; fail "diff does not mark BlockingSleepOnLoop shrank"; }

# The flame graph's zoom is in the address (flame_zoom_cdp.py drives Chromium over the DevTools
# protocol): a click on BlockingSleepOnLoop's frame puts zoom=… in the URL, a reload and a new tab
# at that URL show the same zoom (BurnCpuOnLoop gone), Back zooms out.
here="$(cd "$(dirname "$0")" && pwd)"
timeout 90 python3 "$here/flame_zoom_cdp.py" "$chromium" "$work/profile-zoom" "$flame_url" \
  BlockingSleepOnLoop BurnCpuOnLoop || fail "the flame graph's zoom is not in its address"

# Stall page of one blocked stall: its hint, its stack's function and file:line.
python3 - "$work/stall.html" "$hint" <<'PY' || fail "stall page"
import re, sys
from html.parser import HTMLParser
class P(HTMLParser):
    def __init__(self):
        super().__init__(); self.cur = None; self.text = {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        key = a.get("id") if a.get("id") == "hint" else a.get("class") if tag == "td" else None
        self.cur = key
        if key: self.text.setdefault(key, []).append("")
    def handle_endtag(self, tag): self.cur = None
    def handle_data(self, data):
        if self.cur: self.text[self.cur][-1] += data
p = P(); p.feed(open(sys.argv[1], encoding="utf-8").read())
hint = p.text.get("hint", [""])[0]
assert hint == sys.argv[2], f"hint {hint!r} != {sys.argv[2]!r}"
assert any("BlockingSleepOnLoop" in f for f in p.text.get("fn", [])), p.text.get("fn")
where = [w for w in p.text.get("where", []) if re.search(r"\S+\.(cc|h|c|cpp):\d+$", w)]
assert any("routes.cc" in w for w in where), p.text.get("where")
print("stall page: hint", repr(hint), "and", len(where), "frames with file:line, e.g.", where[0])
PY

# One screenshot (the flame graph), a real PNG of some size.
size=$(stat -c %s "$work/page.png" 2>/dev/null || echo 0)
[ "$(head -c 8 "$work/page.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
  fail "page.png is not a PNG"
[ "$size" -gt 20000 ] || fail "page.png is only $size bytes"
if [ -n "${SW_UI_SCREENSHOTS:-}" ]; then
  mkdir -p "$SW_UI_SCREENSHOTS"
  cp "$work/page.png" "$SW_UI_SCREENSHOTS/flame.png"
  shot shot_loops "$base/" "$SW_UI_SCREENSHOTS/loops.png"
  shot shot_diff "$diff_url" "$SW_UI_SCREENSHOTS/diff.png"
  shot shot_stall "$stall_url" "$SW_UI_SCREENSHOTS/stall.png"
  finish
fi
echo "PASS: loops table, timeline, flame graph (+class=$burn_class filter, zoom in the address), diff, stall page; screenshot $size bytes"
