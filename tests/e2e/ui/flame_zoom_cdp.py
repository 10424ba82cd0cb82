#!/usr/bin/env python3
"""The flame graph's zoom lives in the URL, driven in a real headless Chromium through the
DevTools protocol over a pipe (--remote-debugging-pipe: no port, nothing but the standard
library). On the flame graph at URL: a click on the frame of FUNCTION zooms to it and puts the
zoom in the address (`zoom=SERVICE;…;FUNCTION`); a reload, and a new tab opened at that address,
show the same zoom (FUNCTION the focus, the other stalling function OTHER gone); Back returns to
the unzoomed graph. Exit 0 and one line on success; else the failure on stdout, exit 1.

Usage: flame_zoom_cdp.py CHROMIUM PROFILE_DIR URL FUNCTION OTHER
"""
import fcntl
import json
import os
import select
import subprocess
import sys
import time

chromium, profile, url, function, other = sys.argv[1:6]
deadline = time.monotonic() + 60


def fail(msg):
    print("FAIL: flame zoom: " + msg)
    sys.exit(1)


# Chromium reads commands from its fd 3 and writes replies and events to its fd 4. Its ends of
# the pipes go above 9 first, so that moving them to 3 and 4 never closes one of them.
cmd_r, cmd_w = os.pipe()
res_r, res_w = os.pipe()
for name in ("cmd_r", "res_w"):
    high = fcntl.fcntl(globals()[name], fcntl.F_DUPFD, 10)
    os.close(globals()[name])
    globals()[name] = high
proc = subprocess.Popen(
    ["bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{res_w} {cmd_r}<&- {res_w}>&-', chromium,
     "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
     "--disable-extensions", "--disable-background-networking", "--disable-sync",
     "--disable-component-update", "--user-data-dir=" + profile, "--remote-debugging-pipe",
     "about:blank"],
    pass_fds=(cmd_r, res_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
os.close(cmd_r)
os.close(res_w)
buf = b""
next_id = 0


def read_message():
    global buf
    while b"\0" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([res_r], [], [], left)[0]:
            fail("no reply from Chromium in time")
        chunk = os.read(res_r, 1 << 16)
        if not chunk:
            fail("Chromium closed the pipe")
        buf += chunk
    msg, buf = buf.split(b"\0", 1)
    return json.loads(msg)


def send(method, params=None, session=None):
    global next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    os.write(cmd_w, json.dumps(msg).encode() + b"\0")
    while True:
        reply = read_message()
        if reply.get("id") == next_id:
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]


def evaluate(session, expr):
    """The value of expr in the page (a promise is awaited); None while a navigation replaces
    the page's context."""
    try:
        r = send("Runtime.evaluate", {"expression": expr, "awaitPromise": True,
                                      "returnByValue": True}, session)
    except RuntimeError:
        return None
    if "exceptionDetails" in r:
        return None
    return r["result"].get("value")


def wait(session, cond, what):
    while time.monotonic() < deadline:
        if evaluate(session, f"(() => {{ try {{ return !!({cond}); }} catch (e) {{ return false; }} }})()"):
            return
        time.sleep(0.1)
    state = evaluate(session, "document.body && document.body.dataset.state")
    fail(f"{what} (page state {state!r}, address {evaluate(session, 'location.href')!r})")


def open_tab(address):
    target = send("Target.createTarget", {"url": address})["targetId"]
    return send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]


FRAMES = "[...document.querySelectorAll('#flame .frame')]"
ZOOM = "new URLSearchParams(location.search).get('zoom')"


def has(name):
    return f"{FRAMES}.some((d) => d.dataset.function.includes({json.dumps(name)}))"


def focus_is(name):
    return (f"document.querySelector('#flame .frame.focus') && document.querySelector("
            f"'#flame .frame.focus').dataset.function.includes({json.dumps(name)})")


try:
    s = open_tab(url)
    wait(s, "document.body.dataset.state === 'ready'", "the flame graph did not render")
    if evaluate(s, ZOOM) is not None:
        fail("the unzoomed graph's address has a zoom")
    if not evaluate(s, has(function)) or not evaluate(s, has(other)):
        fail(f"the graph lacks {function} or {other}")
    # A click on the function's frame (the widest one: frames are drawn widest first).
    depth = evaluate(s, f"""(() => {{
        const d = {FRAMES}.find((x) => x.dataset.function.includes({json.dumps(function)}));
        d.click();
        return Math.round(parseFloat(d.style.top) / 18);
    }})()""")
    wait(s, f"({ZOOM} || '').split(';').pop().includes({json.dumps(function)})",
         "the click did not put the zoom in the address")
    zoom = evaluate(s, ZOOM)
    names = zoom.split(";")
    # The path from the service (depth 1; the root "all" is depth 0) down to the frame.
    if len(names) != depth or names[0] != evaluate(s, "new URLSearchParams(location.search)"
                                                      ".get('service')"):
        fail(f"zoom {zoom!r} is not the path of the clicked frame (depth {depth})")
    wait(s, focus_is(function) + " && !" + has(other), "the click did not zoom")
    zoomed_url = evaluate(s, "location.href")

    # Reload: the zoom comes back from the address.
    evaluate(s, "window.beforeReload = true; setTimeout(() => location.reload(), 0); true")
    wait(s, "!window.beforeReload && document.body.dataset.state === 'ready'",
         "the reloaded page did not render")
    if evaluate(s, ZOOM) != zoom:
        fail("the reload lost the zoom")
    wait(s, focus_is(function) + " && !" + has(other), "the reloaded page is not zoomed")

    # A new tab at the address: zoomed from the start.
    t = open_tab(zoomed_url)
    wait(t, "document.body.dataset.state === 'ready'", "the zoomed address did not render")
    wait(t, focus_is(function) + " && !" + has(other) +
         f" && document.getElementById('flame').dataset.zoom === {json.dumps(zoom)}",
         "a new tab at the zoomed address is not zoomed")

    # Back, in the first tab: the unzoomed graph again, without a reload.
    evaluate(s, "window.sameDocument = true; history.back(); true")
    wait(s, f"window.sameDocument && {ZOOM} === null && {has(other)} && {has(function)}",
         "Back did not zoom out")
    print(f"flame zoom: click → zoom={zoom!r} in the address; restored by a reload and in a new "
          "tab; Back zooms out")
finally:
    try:
        send("Browser.close")
    except (RuntimeError, SystemExit):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
