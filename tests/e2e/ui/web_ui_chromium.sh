#!/usr/bin/env bash
# The daemon's web UI (docs/daemon.md, "Web UI") rendered by a real browser: the built
# stallwatchd, the bundled server with the agent attached (`stallwatch serve`) stalling its loop
# on purpose — sleeps (BlockingSleepOnLoop, class blocked) in range A, then CPU burns
# (BurnCpuOnLoop, class cpu) in range B — and Debian's headless Chromium loading each view from
# the daemon and dumping the DOM it built from the live API. Asserts: the loops table lists the
# loop, the timeline has its stalls, the flame graph's frames name the stalling function (and the
# class filter narrows them), the diff view marks BurnCpuOnLoop grown and BlockingSleepOnLoop
# shrunk, the stall page shows the hint and a frame's file:line; the page's headers; one
# screenshot. Chromium missing fails the test (scripts/install-deps.sh installs it).
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
  rm -rf "$work"
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

browse() {  # URL OUT: the DOM after the page's scripts ran against the live daemon
  timeout 40 "$chromium" --headless=new --no-sandbox --disable-gpu --no-first-run \
    --disable-extensions --disable-background-networking --disable-sync \
    --disable-component-update --user-data-dir="$work/profile" \
    --virtual-time-budget=8000 --dump-dom "$1" >"$2" 2>"$work/chromium.log" ||
    { tail -20 "$work/chromium.log"; fail "chromium failed on $1"; }
  grep -q 'data-state="ready"' "$2" ||
    { grep -o '<div class="error">[^<]*' "$2" || true; fail "$1 did not render (state not ready)"; }
}
shot() {  # URL PNG
  timeout 40 "$chromium" --headless=new --no-sandbox --disable-gpu --no-first-run \
    --disable-extensions --disable-background-networking --disable-sync \
    --disable-component-update --user-data-dir="$work/profile" --hide-scrollbars \
    --virtual-time-budget=8000 --window-size=1280,900 --screenshot="$2" "$1" \
    >/dev/null 2>"$work/chromium.log" || { tail -20 "$work/chromium.log"; fail "screenshot of $1"; }
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

# Loops view: the table lists the loop, the timeline has both classes of stall.
loop=$(curl -fs "$base/api/v1/loops" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loops"][0]["loop"])')
browse "$base/" "$work/loops.html"
grep -q "<table id=\"loops\"" "$work/loops.html" || fail "no loops table"
grep -q "<tr class=\"connected\" data-service=\"uidemo\" data-pid=\"[0-9]*\" data-loop=\"$loop\"" \
  "$work/loops.html" || fail "the loops table has no row for uidemo/$loop"
grep -q 'class="bar cls-blocked"' "$work/loops.html" || fail "no blocked stall on the timeline"
grep -q 'class="bar cls-cpu"' "$work/loops.html" || fail "no cpu stall on the timeline"

# Flame graph, filtered by service and loop: the stalling functions are frames; with class=cpu
# only the CPU burn is left.
browse "$base/?view=flame&service=uidemo&loop=$loop&since=10m" "$work/flame.html"
frames "$work/flame.html" >"$work/flame.tsv"
grep -q $'^stallwatch::cli::[^\t]*BlockingSleepOnLoop' "$work/flame.tsv" ||
  { cat "$work/flame.tsv"; fail "flame graph lacks BlockingSleepOnLoop"; }
grep -q $'^stallwatch::cli::[^\t]*BurnCpuOnLoop' "$work/flame.tsv" || fail "flame graph lacks BurnCpuOnLoop"
browse "$base/?view=flame&service=uidemo&class=cpu" "$work/flame_cpu.html"
frames "$work/flame_cpu.html" >"$work/flame_cpu.tsv"
grep -q 'BurnCpuOnLoop' "$work/flame_cpu.tsv" || fail "class=cpu flame graph lacks BurnCpuOnLoop"
if grep -q 'BlockingSleepOnLoop' "$work/flame_cpu.tsv"; then fail "class=cpu shows the sleeps"; fi

# Differential flame graph: A has only the sleeps, B only the burns.
diff_url="$base/?view=diff&service=uidemo&a_since=$a_since&a_until=$mid&b_since=$mid&b_until=$b_until"
browse "$diff_url" "$work/diff.html"
frames "$work/diff.html" >"$work/diff.tsv"
grep -q $'BurnCpuOnLoop[^\t]*\tgrew\t' "$work/diff.tsv" ||
  { cat "$work/diff.tsv"; fail "diff does not mark BurnCpuOnLoop grew"; }
grep -q $'BlockingSleepOnLoop[^\t]*\tshrank\t' "$work/diff.tsv" ||
  { cat "$work/diff.tsv"; fail "diff does not mark BlockingSleepOnLoop shrank"; }

# Stall page of one blocked stall: its hint, its stack's function and file:line.
read -r pid id hint < <(curl -fs "$base/api/v1/stalls?service=uidemo&limit=1000" | python3 -c '
import json, sys
s = [s for s in json.load(sys.stdin)["stalls"] if s["class"] == "blocked" and s["stacks"]][0]
print(s["pid"], s["stall_id"], s["hint"])')
[ -n "$hint" ] || fail "the blocked stall has no hint in the API"
browse "$base/?view=stall&service=uidemo&pid=$pid&loop=$loop&id=$id" "$work/stall.html"
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
shot "$base/?view=flame&service=uidemo&since=10m" "$work/page.png"
size=$(stat -c %s "$work/page.png" 2>/dev/null || echo 0)
[ "$(head -c 8 "$work/page.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
  fail "page.png is not a PNG"
[ "$size" -gt 20000 ] || fail "page.png is only $size bytes"
if [ -n "${SW_UI_SCREENSHOTS:-}" ]; then
  mkdir -p "$SW_UI_SCREENSHOTS"
  cp "$work/page.png" "$SW_UI_SCREENSHOTS/flame.png"
  shot "$base/" "$SW_UI_SCREENSHOTS/loops.png"
  shot "$diff_url" "$SW_UI_SCREENSHOTS/diff.png"
  shot "$base/?view=stall&service=uidemo&pid=$pid&loop=$loop&id=$id" "$SW_UI_SCREENSHOTS/stall.png"
fi
echo "PASS: loops table, timeline, flame graph (+class filter), diff, stall page; screenshot $size bytes"
