#!/usr/bin/env python3
"""Generates stallwatch's Grafana dashboards, and the Kubernetes objects that carry the
dashboards (a ConfigMap) and the alert rules (a PrometheusRule) so they never drift apart.

    python3 dashboards/generate.py          # rewrite the JSON files and the ConfigMap
    python3 dashboards/generate.py --check  # exit 1 if a committed file differs (used by tests)

The dashboards are written as code so that every panel follows the same conventions: the
datasource is the `datasource` template variable, every query filters on the template variables,
every panel has a unit and a description. Edit this file, not the JSON.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DS = {"type": "prometheus", "uid": "${datasource}"}

# Label selectors built from the template variables.
LOOP_SEL = 'instance=~"$instance", service=~"$service", process=~"$process", loop=~"$loop"'
PROC_SEL = 'instance=~"$instance", service=~"$service", process=~"$process"'
DAEMON_SEL = 'instance=~"$instance"'
BY_LOOP = "instance, service, process, loop"
LOOP_LEGEND = "{{service}}/{{loop}} (process {{process}}, {{instance}})"


def q(expr, legend="", ref="A", instant=False, fmt="time_series", exemplar=False):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend,
         "range": not instant, "instant": instant, "format": fmt}
    if exemplar:
        # Prometheus's exemplars of the query's series (stored with
        # --enable-feature=exemplar-storage): stallwatch_stall_duration_seconds_bucket carries
        # each bucket's latest stall, {pid, stall_id}.
        t["exemplar"] = True
    return t


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, panel, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel

    def row(self, title, description):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        p = {"type": "row", "title": title, "description": description, "collapsed": False,
             "panels": []}
        self.place(p, 24, 1)
        self.x, self.y, self.row_h = 0, self.y + 1, 0
        return p


def thresholds(*steps):
    """steps: (value, color) pairs after the base green."""
    s = [{"color": "green", "value": None}]
    s += [{"color": c, "value": v} for v, c in steps]
    return {"mode": "absolute", "steps": s}


def stat(title, description, targets, unit, thr=None, decimals=None):
    d = {"unit": unit, "thresholds": thr or thresholds(), "color": {"mode": "thresholds"}}
    if decimals is not None:
        d["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description, "datasource": DS,
            "targets": targets, "fieldConfig": {"defaults": d, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto",
                        "justifyMode": "auto", "orientation": "auto"}}


def timeseries(title, description, targets, unit, stack=False, bars=False, min0=True, max1=False,
               thr=None):
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1,
              "fillOpacity": 60 if bars else 10, "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
              "axisSoftMin": 0 if min0 else None}
    d = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if max1:
        d["max"] = 1
        d["min"] = 0
    if thr:
        d["thresholds"] = thr
        custom["thresholdsStyle"] = {"mode": "dashed"}
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS,
            "targets": targets, "fieldConfig": {"defaults": d, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["mean", "max", "lastNotNull"], "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def heatmap(title, description, targets, y_unit):
    return {"type": "heatmap", "title": title, "description": description, "datasource": DS,
            "targets": targets, "maxDataPoints": 60,
            "fieldConfig": {"defaults": {"unit": "short", "custom": {
                "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                "scaleDistribution": {"type": "linear"}}}, "overrides": []},
            "options": {"calculate": False, "cellGap": 1,
                        "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5,
                                  "fill": "dark-orange", "scale": "exponential", "steps": 64,
                                  "reverse": False},
                        "yAxis": {"axisPlacement": "left", "unit": y_unit, "reverse": False},
                        "rowsFrame": {"layout": "le"},
                        "cellValues": {"unit": "short"},
                        "tooltip": {"show": True, "yHistogram": True},
                        "legend": {"show": True},
                        "filterValues": {"le": 1e-9},
                        "exemplars": {"color": "rgba(255,0,255,0.7)"}}}


# The daemon's own web page (docs/daemon.md "Web UI"): stallwatchd serves it on the address
# Prometheus scrapes it at, the `instance` label. Times go from Grafana's Unix ms to the page's ns.
DAEMON_PAGE = "http://{instance}/?view={view}&service={service}&loop={loop}" \
              "&since=${{__from}}000000&until=${{__to}}000000"


def daemon_link(title, view, instance="${instance}", service="${service}", loop="${loop}"):
    return {"title": title, "targetBlank": True,
            "url": DAEMON_PAGE.format(instance=instance, view=view, service=service, loop=loop)}


# The exemplars' link to the stall's own page on stallwatchd. Exemplar links belong to the data
# source in Grafana (jsonData.exemplarTraceIdDestinations), not to a dashboard: the link is on the
# exemplar label `stall_id` (${__value.raw}); the exemplar's other fields are its series' labels
# (instance, service, loop) and its `pid`, which together name the stall
# (docs/daemon.md, "Web UI": /?view=stall&service=&pid=&loop=&id=).
EXEMPLAR_DESTINATION = {
    "name": "stall_id",
    "urlDisplayLabel": "Stall page (stallwatchd)",
    "url": "http://${__data.fields.instance}/?view=stall&service=${__data.fields.service}"
           "&pid=${__data.fields.pid}&loop=${__data.fields.loop}&id=${__value.raw}",
}


def grafana_datasource():
    """The compose stack's Grafana data source, with the exemplar link. Grafana expands $VAR and
    ${VAR} in provisioning files from its environment: a literal $ is written $$."""
    url = EXEMPLAR_DESTINATION["url"].replace("$", "$$")
    return "\n".join([
        "# Generated by dashboards/generate.py: do not edit. Grafana data source of the compose",
        "# stack. The dashboards pick it through their `datasource` variable (any Prometheus), so",
        "# its name and uid are free. exemplarTraceIdDestinations turns the stall id exemplar of",
        "# stallwatch_stall_duration_seconds_bucket into a link to the stall's page on stallwatchd",
        "# (copy it into your own Prometheus data source; there, too, $ is written $$).",
        "apiVersion: 1",
        "datasources:",
        "  - name: Prometheus",
        "    uid: prometheus",
        "    type: prometheus",
        "    access: proxy",
        "    url: http://prometheus:9090",
        "    isDefault: true",
        "    jsonData:",
        "      timeInterval: 5s",
        "      exemplarTraceIdDestinations:",
        f"        - name: {EXEMPLAR_DESTINATION['name']}",
        f"          urlDisplayLabel: {json.dumps(EXEMPLAR_DESTINATION['urlDisplayLabel'])}",
        f"          url: {json.dumps(url)}",
    ]) + "\n"


def with_links(panel, *links):
    panel["links"] = list(links)
    return panel


def variables(single_loop):
    def var(name, label, query, description, multi=True):
        v = {"type": "query", "name": name, "label": label, "description": description,
             "datasource": DS, "query": query, "definition": query, "refresh": 2, "sort": 1,
             "multi": multi, "includeAll": True, "allValue": ".*",
             "current": {"selected": True, "text": ["All"] if multi else "All",
                         "value": ["$__all"] if multi else "$__all"},
             "options": [], "hide": 0, "regex": ""}
        return v

    ds = {"type": "datasource", "name": "datasource", "label": "Data source",
          "description": "The Prometheus that scrapes stallwatchd (job stallwatchd).",
          "query": "prometheus", "refresh": 1, "regex": "", "hide": 0,
          "current": {}, "options": []}
    inst = var("instance", "Host (daemon)",
               "label_values(stallwatch_agents_connected, instance)",
               "The stallwatchd instance, one per host (or node).")
    svc = var("service", "Service",
              'label_values(stallwatch_loop_utilization_ratio{instance=~"$instance"}, service)',
              "STALLWATCH_SERVICE of the process (default: its program name).",
              multi=not single_loop)
    proc = var("process", "Process",
               'label_values(stallwatch_loop_utilization_ratio{instance=~"$instance", '
               'service=~"$service"}, process)',
               "Process slot of the service (0 ... N-1): one per process running at once, kept "
               "across restarts (a restarted process continues its slot's series). The pid is in "
               "stallwatch_process_info.")
    loop = var("loop", "Loop",
               'label_values(stallwatch_loop_utilization_ratio{instance=~"$instance", '
               'service=~"$service", process=~"$process"}, loop)',
               "The loop name given to stallwatch_attach (with the preload shim: the thread's "
               "name).", multi=not single_loop)
    if single_loop:
        # The drill-down shows one service/loop: no "All" for these two.
        for v in (svc, loop):
            v["includeAll"] = False
            v["current"] = {}
    return {"list": [ds, inst, svc, proc, loop]}


# Stalls as annotations on every time panel of the loop dashboard: a mark in each slot in which
# stalls of a class closed (the counter rose).
STALL_ANNOTATION = {
    "name": "Stalls", "enable": True, "hide": False, "iconColor": "red", "datasource": DS,
    "expr": f"sum by (class) (increase(stallwatch_stalls_total{{{LOOP_SEL}}}[1m])) > 0",
    "step": "60s", "titleFormat": "stall", "textFormat": "{{class}}: {{value}} closed",
    "tagKeys": "class", "useValueForTime": False,
}


def dashboard(uid, title, description, panels, single_loop):
    return {
        "__inputs": [],
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["stallwatch"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 38,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["stallwatch"], "title": "stallwatch",
                   "asDropdown": False, "includeVars": True, "keepTime": True,
                   "targetBlank": False, "icon": "external link", "tooltip": "", "url": ""}],
        "templating": variables(single_loop),
        "panels": panels,
    }


def delay_q(quantile, by=BY_LOOP, sel=LOOP_SEL, metric="stallwatch_loop_delay_seconds",
            window="$__rate_interval"):
    return (f"histogram_quantile({quantile}, sum by ({by + ', ' if by else ''}le) "
            f"(rate({metric}_bucket{{{sel}}}[{window}])))")


STALLS_PER_MIN = "suffix: stalls/min"

D_DELAY = ("Loop delay is how late the agent's probe timer fires: the time an event that became "
           "ready had to wait because the loop was busy. A healthy loop stays well under a "
           "millisecond; every millisecond here is added to the latency of whatever the loop "
           "serves.")
D_UTIL = ("Share of wall time the loop spent running callbacks (busy) rather than waiting for "
          "events. Near 1 (100%) the loop is saturated: queues grow and delay follows. A "
          "single-threaded loop cannot use more than one core; spread work over more loops or "
          "threads.")
D_STALLS = ("Stalls are episodes in which the loop made no progress for longer than the agent's "
            "threshold (STALLWATCH_THRESHOLD, 50ms by default). Class: cpu = the loop burned CPU "
            "(move the work to a worker); blocked = it waited in a syscall (use an async API or "
            "a thread pool); starved = it was runnable but not scheduled (CPU contention on the "
            "host); suspended = the whole process or VM was paused; unknown = closing reports "
            "lost while the daemon was away. `stallwatch stalls` shows each with its stacks.")
D_ONGOING = ("Age of the stall going on now, 0 when the loop is making progress. It keeps "
             "growing while the loop is stuck (deadlock, infinite loop, a call that never "
             "returns); the alert StallwatchStallOngoingLong fires past 30 s. See it live with "
             "`stallwatch stalls --ongoing`.")
D_STALL_HEAT = ("How long stalls lasted, counted per time slot by duration bucket (closed stalls "
                "only, exact durations from the loop's own iteration boundaries). A band near "
                "the threshold is many short stalls (chatty blocking calls); isolated cells high "
                "up are rare long ones (a lock, a DNS lookup, a big synchronous write).")
D_EXEMPLARS = (" Exemplars (the dots; Prometheus with --enable-feature=exemplar-storage) are the "
               "latest stall of each duration bucket: hover one for its pid and stall id, follow "
               "its link to the stall's page on stallwatchd (the data source's "
               "exemplarTraceIdDestinations, see deploy/compose/grafana-datasource.yaml).")


def d_calls(cmd):
    """The ledger's description; cmd: the `stallwatch calls` command line to show."""
    return ("The blocking-call ledger: every call of a known-blocking libc function that a "
            "watched loop's thread makes while the loop is busy, counted and timed however short "
            "(far below the stall threshold): name resolution (getaddrinfo, gethostbyname*, "
            "getnameinfo), sleeps (nanosleep, clock_nanosleep, usleep, sleep), disk syncs "
            "(fsync, fdatasync, sync_file_range, syncfs), connect on a blocking socket, waits "
            "(waitpid, system, pthread_join) and flock. Needs the preload shim (`stallwatch "
            "run`, LD_PRELOAD); series exist only for the calls a loop made. Time in these calls "
            "is time the loop serves nothing: 0.05 s/s is 5% of the loop's time (the alert "
            "StallwatchBlockingCallsHigh fires above that for 10 minutes). Which code makes "
            f"them (call sites, ranked by total time): `{cmd}`, or the daemon's /api/v1/calls "
            "(the panel's links).")


D_CALLS = d_calls("stallwatch calls --service SERVICE --loop LOOP")
# Where the loop's blocking calls are made: the daemon's JSON API (docs/daemon.md "JSON API").
CALLS_API = "http://{instance}/api/v1/calls?service={service}&loop={loop}{extra}"


def calls_link(title, instance="${instance}", service="${service}", loop="${loop}", extra=""):
    return {"title": title, "targetBlank": True,
            "url": CALLS_API.format(instance=instance, service=service, loop=loop, extra=extra)}


def with_data_links(panel, *links):
    """Links on each series of a panel (Grafana's data links, in the series' own labels)."""
    panel["fieldConfig"]["defaults"]["links"] = list(links)
    return panel


def overview():
    L = Layout()
    P = []
    P.append(L.row("Fleet", "What the daemons see right now."))
    P.append(L.place(stat(
        "Agents connected",
        "Agent connections open on the selected daemons (one per process with the agent, "
        "whatever its number of loops). A drop means processes exited or lost the daemon's "
        "socket.",
        [q(f"sum(stallwatch_agents_connected{{{DAEMON_SEL}}})", instant=True)], "none",
        decimals=0), 4, 4))
    P.append(L.place(stat(
        "Loops observed",
        "Event loops with an agent attached (one stallwatch_attach each). Series of a process "
        "stay for the daemon's --expire-after (5m) after it exits.",
        [q(f"count(stallwatch_loop_utilization_ratio{{{LOOP_SEL}}})", instant=True)], "none",
        decimals=0), 4, 4))
    P.append(L.place(stat(
        "Worst p99 loop delay",
        "The highest p99 loop delay among the selected loops over the last 5 minutes. " + D_DELAY,
        [q(f"max({delay_q(0.99, window='5m')})", instant=True)], "s",
        thresholds((0.01, "orange"), (0.1, "red"))), 4, 4))
    P.append(L.place(stat(
        "Stalls per minute",
        "Stalls of all selected loops per minute, over the last 5 minutes. " + D_STALLS,
        [q(f"sum(rate(stallwatch_stalls_total{{{LOOP_SEL}}}[5m])) * 60", instant=True)],
        STALLS_PER_MIN, thresholds((1, "orange"), (10, "red")), decimals=1), 4, 4))
    P.append(L.place(stat(
        "Longest ongoing stall",
        D_ONGOING,
        [q(f"max(stallwatch_stall_ongoing_seconds{{{LOOP_SEL}}})", instant=True)], "s",
        thresholds((1, "orange"), (30, "red"))), 4, 4))
    P.append(L.place(stat(
        "Findings dropped (time range)",
        "Findings (stall reports, delay windows) the agents threw away because their bounded "
        "queue to the daemon was full: the daemon was down, slow or unreachable. Counters stay "
        "exact; stall details are lost. Should be 0.",
        [q(f"sum(increase(stallwatch_agent_findings_dropped_total{{{PROC_SEL}}}[$__range]))",
           instant=True)], "none", thresholds((1, "red")), decimals=0), 4, 4))

    P.append(L.row("Loops", "One line per loop; click a loop for its drill-down."))
    table = {
        "type": "table", "title": "Loops",
        "description": (
            "Every selected loop over the last 5 minutes. Delay p50/p99 and max come from the "
            "loop delay histogram (max is the upper bound of the highest bucket hit). "
            "Utilization is the busy share of the last reporting window. Ongoing is the age "
            "of the stall going on now. Click a loop name for its drill-down dashboard."),
        "datasource": DS,
        "targets": [
            q(delay_q(0.5, window="5m"), ref="A", instant=True, fmt="table"),
            q(delay_q(0.99, window="5m"), ref="B", instant=True, fmt="table"),
            q(delay_q(1, window="5m"), ref="C", instant=True, fmt="table"),
            q(f"max by ({BY_LOOP}) (stallwatch_loop_utilization_ratio{{{LOOP_SEL}}})", ref="D",
              instant=True, fmt="table"),
            q(f"sum by ({BY_LOOP}) (rate(stallwatch_stalls_total{{{LOOP_SEL}}}[5m])) * 60",
              ref="E", instant=True, fmt="table"),
            q(f"max by ({BY_LOOP}) (stallwatch_stall_ongoing_seconds{{{LOOP_SEL}}})", ref="F",
              instant=True, fmt="table"),
        ],
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True},
                "indexByName": {"service": 0, "loop": 1, "process": 2, "instance": 3,
                                "Value #A": 4, "Value #B": 5, "Value #C": 6, "Value #D": 7,
                                "Value #E": 8, "Value #F": 9},
                "renameByName": {"Value #A": "delay p50", "Value #B": "delay p99",
                                 "Value #C": "delay max", "Value #D": "utilization",
                                 "Value #E": "stalls/min", "Value #F": "ongoing stall"}}},
        ],
        "fieldConfig": {
            "defaults": {"unit": "s", "custom": {"align": "auto", "filterable": True},
                         "thresholds": thresholds((0.01, "orange"), (0.1, "red"))},
            "overrides": [
                {"matcher": {"id": "byName", "options": "delay p99"}, "properties": [
                    {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
                {"matcher": {"id": "byName", "options": "utilization"}, "properties": [
                    {"id": "unit", "value": "percentunit"},
                    {"id": "thresholds", "value": thresholds((0.7, "orange"), (0.9, "red"))},
                    {"id": "custom.cellOptions",
                     "value": {"type": "gauge", "mode": "basic"}},
                    {"id": "min", "value": 0}, {"id": "max", "value": 1}]},
                {"matcher": {"id": "byName", "options": "stalls/min"}, "properties": [
                    {"id": "unit", "value": STALLS_PER_MIN}, {"id": "decimals", "value": 1},
                    {"id": "thresholds", "value": thresholds((1, "orange"), (10, "red"))},
                    {"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
                {"matcher": {"id": "byName", "options": "ongoing stall"}, "properties": [
                    {"id": "thresholds", "value": thresholds((0.001, "orange"), (30, "red"))},
                    {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
                {"matcher": {"id": "byName", "options": "loop"}, "properties": [
                    {"id": "links", "value": [{
                        "title": "Drill down into ${__data.fields.service}/${__data.fields.loop}",
                        "url": ("/d/stallwatch-loop/stallwatch-loop?${__url_time_range}"
                                "&var-datasource=${datasource}"
                                "&var-instance=${__data.fields.instance}"
                                "&var-service=${__data.fields.service}"
                                "&var-process=${__data.fields.process}"
                                "&var-loop=${__data.fields.loop}")},
                        daemon_link("Flame graph of its stalls (stallwatchd)", "flame",
                                    instance="${__data.fields.instance}",
                                    service="${__data.fields.service}",
                                    loop="${__data.fields.loop}")]}]},
            ]},
        "options": {"showHeader": True, "cellHeight": "sm",
                    "sortBy": [{"displayName": "delay p99", "desc": True}],
                    "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
    }
    P.append(L.place(table, 24, 9))

    P.append(L.row("Loop delay and utilization", D_DELAY))
    P.append(L.place(timeseries(
        "Loop delay percentiles (selected loops together)",
        D_DELAY + " p50 is the typical wait, p99 and p99.9 the tail that users notice.",
        [q(delay_q(0.5, by=""), "p50", "A"), q(delay_q(0.9, by=""), "p90", "B"),
         q(delay_q(0.99, by=""), "p99", "C"), q(delay_q(0.999, by=""), "p99.9", "D")],
        "s", thr=thresholds((0.1, "red"))), 12, 8))
    P.append(L.place(timeseries(
        "Loop delay p99 by loop",
        "p99 loop delay of each selected loop; the alert StallwatchLoopDelayHigh fires when it "
        "stays above 100ms for 10 minutes. " + D_DELAY,
        [q(delay_q(0.99), LOOP_LEGEND)], "s", thr=thresholds((0.1, "red"))), 12, 8))
    P.append(L.place(timeseries(
        "Loop utilization by loop", D_UTIL,
        [q(f"max by ({BY_LOOP}) (stallwatch_loop_utilization_ratio{{{LOOP_SEL}}})",
           LOOP_LEGEND)], "percentunit", max1=True), 12, 8))
    P.append(L.place(timeseries(
        "Ongoing stall age by loop", D_ONGOING,
        [q(f"max by ({BY_LOOP}) (stallwatch_stall_ongoing_seconds{{{LOOP_SEL}}})",
           LOOP_LEGEND)], "s", thr=thresholds((30, "red"))), 12, 8))

    P.append(L.row("Stalls", D_STALLS))
    P.append(L.place(timeseries(
        "Stalls by class", D_STALLS,
        [q(f"sum by (class) (rate(stallwatch_stalls_total{{{LOOP_SEL}}}[$__rate_interval]))"
           " * 60", "{{class}}")], STALLS_PER_MIN, stack=True, bars=True), 12, 8))
    P.append(L.place(heatmap(
        "Stall durations", D_STALL_HEAT,
        [q("sum by (le) (increase(stallwatch_stall_duration_seconds_bucket"
           f"{{{LOOP_SEL}}}[$__rate_interval]))", "{{le}}", fmt="heatmap")], "s"), 12, 8))
    P.append(L.place(timeseries(
        "Stalls per minute by loop",
        "Stalls per minute of each selected loop (all classes except suspended, as the alert "
        "StallwatchStallsFrequent counts them; it fires above 1/min for 10 minutes).",
        [q(f'sum by ({BY_LOOP}) (rate(stallwatch_stalls_total{{{LOOP_SEL}, '
           f'class!="suspended"}}[$__rate_interval])) * 60', LOOP_LEGEND)],
        STALLS_PER_MIN, thr=thresholds((1, "red"))), 12, 8))
    P.append(L.place(timeseries(
        "Stack samples and suppressed reports",
        "Stacks the agents sampled from stalled loops, and stall reports their rate limit "
        "suppressed (counted, never lost from the counters). Many suppressed reports mean a "
        "loop stalls so often that only a sample of the stalls carry stacks.",
        [q(f"sum(rate(stallwatch_stack_samples_total{{{LOOP_SEL}}}[$__rate_interval]))",
           "stack samples", "A"),
         q(f"sum(rate(stallwatch_reports_suppressed_total{{{LOOP_SEL}}}[$__rate_interval]))",
           "suppressed reports", "B")], "cps"), 12, 8))

    P.append(L.row("Blocking calls", D_CALLS))
    P.append(L.place(with_data_links(timeseries(
        "Time in blocking calls by loop (top 10)",
        "The 10 selected loops whose threads spent the most time in known-blocking calls, in "
        "seconds per second (5% = 50 ms of every second). The alert "
        "StallwatchBlockingCallsHigh fires above 5% for 10 minutes. Click a line for the loop's "
        "drill-down (its Blocking calls row) or its call sites. " + D_CALLS,
        [q(f"topk(10, sum by ({BY_LOOP}) (rate(stallwatch_blocking_call_seconds_sum"
           f"{{{LOOP_SEL}}}[$__rate_interval])))", LOOP_LEGEND)], "percentunit",
        thr=thresholds((0.05, "red"))),
        {"title": "Drill down into ${__field.labels.service}/${__field.labels.loop}",
         "url": ("/d/stallwatch-loop/stallwatch-loop?${__url_time_range}"
                 "&var-datasource=${datasource}"
                 "&var-instance=${__field.labels.instance}"
                 "&var-service=${__field.labels.service}"
                 "&var-process=${__field.labels.process}"
                 "&var-loop=${__field.labels.loop}")},
        calls_link("Call sites of ${__field.labels.service}/${__field.labels.loop} "
                   "(stallwatchd /api/v1/calls)", instance="${__field.labels.instance}",
                   service="${__field.labels.service}", loop="${__field.labels.loop}")),
        12, 8))
    P.append(L.place(timeseries(
        "Blocking calls per second by call",
        "Known-blocking calls per second made on the selected loops' threads, by call, all "
        "loops together. " + D_CALLS,
        [q(f"sum by (call) (rate(stallwatch_blocking_calls_total{{{LOOP_SEL}}}"
           f"[$__rate_interval]))", "{{call}}")], "cps"), 8, 8))
    P.append(L.place(stat(
        "Call sites not kept (time range)",
        "Blocking calls whose call site the daemon had no room to keep for /api/v1/calls and "
        "`stallwatch calls` (--max-call-sites, --max-call-sites-per-loop). They are still "
        "counted in the panels beside; only the ranking by call site misses them. Should be 0.",
        [q(f"sum(increase(stallwatch_daemon_call_sites_not_kept_total{{{DAEMON_SEL}}}"
           f"[$__range]))", instant=True)], "none", thresholds((1, "orange")), decimals=0),
        4, 8))

    P.append(L.row("Pipeline health", "Is everything the agents see reaching Prometheus?"))
    P.append(L.place(timeseries(
        "Agents connected",
        "Agent connections per daemon. Steps down are processes exiting (or losing the socket); "
        "a daemon restart drops to 0 until the agents reconnect (they retry with backoff).",
        [q(f"stallwatch_agents_connected{{{DAEMON_SEL}}}", "{{instance}}")], "none"), 8, 8))
    P.append(L.place(timeseries(
        "Findings dropped by the agents",
        "Findings per second an agent dropped from its bounded queue because the daemon did not "
        "take them (down, restarting, too slow). The host is never blocked; the details are "
        "lost. The alert StallwatchFindingsDropped fires when this lasts 5 minutes.",
        [q(f"sum by (instance, service, process) (rate(stallwatch_agent_findings_dropped_total"
           f"{{{PROC_SEL}}}[$__rate_interval]))",
           "{{service}} (process {{process}}, {{instance}})")],
        "cps"), 8, 8))
    P.append(L.place(timeseries(
        "Frames rejected by the daemon",
        "Frames from agents the daemon refused, by reason (bad header, bad body, identity "
        "mismatch, connection limit, ...). Non-zero means a version mismatch between agents and "
        "daemon, a misbehaving client on the socket, or --max-agents reached.",
        [q(f"sum by (instance, reason) (rate(stallwatch_daemon_frames_rejected_total"
           f"{{{DAEMON_SEL}}}[$__rate_interval]))", "{{reason}} ({{instance}})")], "cps"), 8, 8))
    P.append(L.place({
        "type": "table", "title": "Processes",
        "description": (
            "One line per process of the selected services, connected or gone but not yet "
            "expired (stallwatch_process_info): its slot in the service (the `process` label of "
            "every series, kept across restarts), its pid and executable, the agent's version "
            "and the host name it reported. A restarted process takes over the slot of the one "
            "it replaces, so its pid changes here while its series continue. Join the pid onto "
            "any series with `* on (instance, service, process) group_left (pid) "
            "stallwatch_process_info`."),
        "datasource": DS,
        "targets": [q(f"max by (instance, service, process, pid, executable, agent_version, "
                      f"host) (stallwatch_process_info{{{PROC_SEL}}})", instant=True,
                      fmt="table")],
        "transformations": [
            {"id": "organize", "options": {
                "excludeByName": {"Time": True, "Value": True},
                "indexByName": {"service": 0, "process": 1, "pid": 2, "executable": 3,
                                "agent_version": 4, "host": 5, "instance": 6}}},
        ],
        "fieldConfig": {"defaults": {"unit": "none",
                                     "custom": {"align": "auto", "filterable": True}},
                        "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm",
                    "sortBy": [{"displayName": "service", "desc": False}],
                    "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
    }, 24, 8))
    return dashboard(
        "stallwatch-overview", "stallwatch / Overview",
        "Event-loop delay, utilization and stalls of every service with the stallwatch agent.",
        P, single_loop=False)


def drilldown():
    L = Layout()
    P = []
    P.append(L.row("$service / $loop", "One event loop of one service. Keep Process on All to see "
                   "every process of the service (pre-forked workers: one slot each)."))
    P.append(L.place(stat(
        "p99 loop delay (5m)", D_DELAY,
        [q(delay_q(0.99, by="", window="5m"), instant=True)], "s",
        thresholds((0.01, "orange"), (0.1, "red"))), 5, 4))
    P.append(L.place(stat(
        "Utilization", D_UTIL,
        [q(f"max(stallwatch_loop_utilization_ratio{{{LOOP_SEL}}})", instant=True)],
        "percentunit", thresholds((0.7, "orange"), (0.9, "red"))), 5, 4))
    P.append(L.place(stat(
        "Stalls (time range)", D_STALLS,
        [q(f"sum(increase(stallwatch_stalls_total{{{LOOP_SEL}}}[$__range]))", instant=True)],
        "none", thresholds((1, "orange")), decimals=0), 5, 4))
    P.append(L.place(stat(
        "Ongoing stall", D_ONGOING,
        [q(f"max(stallwatch_stall_ongoing_seconds{{{LOOP_SEL}}})", instant=True)], "s",
        thresholds((0.001, "orange"), (30, "red"))), 5, 4))
    P.append(L.place(stat(
        "Stack samples (time range)",
        "Stacks sampled from this loop while it stalled. Read them with `stallwatch stalls "
        "--service $service --loop $loop` or as a flame graph with `stallwatch stacks --format "
        "folded`.",
        [q(f"sum(increase(stallwatch_stack_samples_total{{{LOOP_SEL}}}[$__range]))",
           instant=True)], "none", decimals=0), 4, 4))

    P.append(L.row("Loop delay", D_DELAY))
    P.append(L.place(timeseries(
        "Loop delay percentiles",
        D_DELAY + " max is the upper bound of the highest histogram bucket hit.",
        [q(delay_q(0.5, by=""), "p50", "A"), q(delay_q(0.9, by=""), "p90", "B"),
         q(delay_q(0.99, by=""), "p99", "C"), q(delay_q(0.999, by=""), "p99.9", "D"),
         q(delay_q(1, by=""), "max (bucket bound)", "E")], "s",
        thr=thresholds((0.1, "red"))), 12, 9))
    P.append(L.place(heatmap(
        "Loop delay distribution",
        "Probe lateness per time slot by bucket (0.1ms ... 5s). A healthy loop is a dark band at "
        "the bottom; stalls show as cells high up, CPU contention as the band thickening.",
        [q("sum by (le) (increase(stallwatch_loop_delay_seconds_bucket"
           f"{{{LOOP_SEL}}}[$__rate_interval]))", "{{le}}", fmt="heatmap")], "s"), 12, 9))
    P.append(L.place(timeseries(
        "Mean loop delay by process",
        "Average probe lateness per process slot (sum/count of the histogram). A restarted "
        "process continues its slot's line; its pid is in stallwatch_process_info.",
        [q(f"sum by (process) (rate(stallwatch_loop_delay_seconds_sum{{{LOOP_SEL}}}"
           f"[$__rate_interval])) / sum by (process) (rate(stallwatch_loop_delay_seconds_count"
           f"{{{LOOP_SEL}}}[$__rate_interval]))", "process {{process}}")], "s"), 12, 8))
    P.append(L.place(timeseries(
        "Utilization", D_UTIL,
        [q(f"max by (process) (stallwatch_loop_utilization_ratio{{{LOOP_SEL}}})",
           "process {{process}}")],
        "percentunit", max1=True), 12, 8))

    P.append(L.row("Busy periods", "How long each loop iteration ran callbacks before going back "
                   "to wait for events."))
    P.append(L.place(timeseries(
        "Busy period percentiles",
        "Duration of the loop's busy periods (from the return of the event wait to the next "
        "wait), exact from the loop's own boundaries. Long busy periods are the cause, loop "
        "delay the effect: a p99 here near the stall threshold means callbacks that do too much "
        "per event.",
        [q(delay_q(0.5, by="", metric="stallwatch_loop_iteration_seconds"), "p50", "A"),
         q(delay_q(0.99, by="", metric="stallwatch_loop_iteration_seconds"), "p99", "B"),
         q(delay_q(1, by="", metric="stallwatch_loop_iteration_seconds"), "max (bucket bound)",
           "C")], "s"), 12, 8))
    P.append(L.place(timeseries(
        "Iterations per second",
        "Loop iterations (busy periods) per second: how often the loop woke up to do work.",
        [q(f"sum by (process) (rate(stallwatch_loop_iteration_seconds_count{{{LOOP_SEL}}}"
           f"[$__rate_interval]))", "process {{process}}")], "ops"), 12, 8))

    P.append(L.row("Stalls", D_STALLS))
    flame = daemon_link("Flame graph of these stalls (stallwatchd)", "flame")
    timeline = daemon_link("Each stall: class, syscall, hint, stack (stallwatchd)", "loops")
    P.append(L.place(with_links(timeseries(
        "Stalls by class", D_STALLS + " The panel's links open the stalls' flame graph and "
        "each stall on stallwatchd's own page.",
        [q(f"sum by (class) (rate(stallwatch_stalls_total{{{LOOP_SEL}}}[$__rate_interval]))"
           " * 60", "{{class}}")], STALLS_PER_MIN, stack=True, bars=True), flame, timeline),
        12, 8))
    P.append(L.place(with_links(heatmap("Stall durations", D_STALL_HEAT + D_EXEMPLARS,
        [q("sum by (le) (increase(stallwatch_stall_duration_seconds_bucket"
           f"{{{LOOP_SEL}}}[$__rate_interval]))", "{{le}}", fmt="heatmap", exemplar=True)], "s"),
        flame, timeline), 12, 8))
    P.append(L.place(timeseries(
        "Stall duration percentiles",
        "p50 and p99 of the durations of stalls that closed in each slot, and the mean. Empty "
        "slots had no stall. Bounded by the histogram's buckets (50ms ... 60s); "
        "`stallwatch stalls` has the exact durations." + D_EXEMPLARS,
        [q(delay_q(0.5, by="", metric="stallwatch_stall_duration_seconds", window="5m"), "p50",
           "A"),
         q(delay_q(0.99, by="", metric="stallwatch_stall_duration_seconds", window="5m"), "p99",
           "B", exemplar=True),
         q(f"sum(rate(stallwatch_stall_duration_seconds_sum{{{LOOP_SEL}}}[5m])) / "
           f"sum(rate(stallwatch_stall_duration_seconds_count{{{LOOP_SEL}}}[5m]))", "mean",
           "C")], "s"), 12, 8))
    P.append(L.place(timeseries(
        "Ongoing stall age", D_ONGOING,
        [q(f"max by (process) (stallwatch_stall_ongoing_seconds{{{LOOP_SEL}}})",
           "process {{process}}")],
        "s", thr=thresholds((30, "red"))), 12, 8))

    d_loop_calls = d_calls("stallwatch calls --service $service --loop $loop")
    P.append(L.row("Blocking calls", d_loop_calls))
    sites = calls_link("Call sites of these calls, most total time first (stallwatchd "
                       "/api/v1/calls)")
    site_of_call = calls_link("Call sites of ${__field.labels.call} (stallwatchd /api/v1/calls)",
                              extra="&call=${__field.labels.call}")
    P.append(L.place(with_data_links(with_links(timeseries(
        "Time in blocking calls by call",
        "Seconds per second the loop's thread spent inside known-blocking calls, by call "
        "(the rate of the histogram's _sum): 5% is 50 ms of every second during which the loop "
        "served nothing else. " + d_loop_calls,
        [q(f"sum by (call) (rate(stallwatch_blocking_call_seconds_sum{{{LOOP_SEL}}}"
           f"[$__rate_interval]))", "{{call}}")], "percentunit", stack=True,
        thr=thresholds((0.05, "red"))), sites), site_of_call), 8, 8))
    P.append(L.place(with_data_links(with_links(timeseries(
        "Blocking calls per second by call",
        "How often the loop's thread made each known-blocking call. Many cheap calls (a DNS "
        "lookup per request answered from a local cache) add up: compare with the time panel "
        "beside. " + d_loop_calls,
        [q(f"sum by (call) (rate(stallwatch_blocking_calls_total{{{LOOP_SEL}}}"
           f"[$__rate_interval]))", "{{call}}")], "cps"), sites), site_of_call), 8, 8))
    P.append(L.place(with_data_links(with_links(timeseries(
        "Blocking call p99 by call",
        "99th percentile of each call's duration, from the histogram "
        "stallwatch_blocking_call_seconds (buckets by powers of 4 from 1 µs to 17 s, so "
        "within a factor of 4; /api/v1/calls has each call site's p99 and max within a "
        "factor of 1.41). A p99 near the stall threshold means single calls that stall the "
        "loop. Empty slots had no call. " + d_loop_calls,
        [q(delay_q(0.99, by="call", metric="stallwatch_blocking_call_seconds"), "{{call}}")],
        "s"), sites), site_of_call), 8, 8))

    P.append(L.row("Agent", "The agent inside the process: sampling and its queue."))
    P.append(L.place(timeseries(
        "Stack samples and suppressed reports",
        "Stacks sampled from this loop during stalls, and stall reports suppressed by the "
        "agent's rate limit (the counters still count every stall).",
        [q(f"sum(rate(stallwatch_stack_samples_total{{{LOOP_SEL}}}[$__rate_interval]))",
           "stack samples", "A"),
         q(f"sum(rate(stallwatch_reports_suppressed_total{{{LOOP_SEL}}}[$__rate_interval]))",
           "suppressed reports", "B")], "cps"), 12, 8))
    P.append(L.place(timeseries(
        "Findings dropped (whole process)",
        "Findings this process's agent dropped because the daemon did not take them. Per "
        "process, not per loop: all loops of a process share one queue and one connection.",
        [q(f"sum by (process) (rate(stallwatch_agent_findings_dropped_total{{{PROC_SEL}}}"
           f"[$__rate_interval]))", "process {{process}}")], "cps"), 12, 8))
    d = dashboard(
        "stallwatch-loop", "stallwatch / Loop",
        "One event loop in depth: delay, busy periods, stalls by class and duration, blocking "
        "calls, agent.",
        P, single_loop=True)
    d["annotations"]["list"].append(STALL_ANNOTATION)
    d["links"].append(daemon_link("Flame graph of this loop's stalls (stallwatchd)", "flame"))
    return d


def configmap(files):
    out = ["# Generated by dashboards/generate.py from dashboards/*.json: do not edit.",
           "# The grafana_dashboard label is what Grafana's dashboard sidecar (e.g. the Helm",
           "# chart's sidecar.dashboards) watches for.",
           "apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: stallwatch-dashboards",
           "  namespace: stallwatch", "  labels:", "    app.kubernetes.io/name: stallwatch",
           "    app.kubernetes.io/component: dashboards", '    grafana_dashboard: "1"',
           "data:"]
    for name, text in files:
        out.append(f"  {name}: |")
        out += ["    " + line if line else "" for line in text.rstrip("\n").split("\n")]
    return "\n".join(out) + "\n"


def prometheus_rule(rules_text):
    out = ["# Generated by dashboards/generate.py from deploy/prometheus/rules/stallwatch.rules.yml:",
           "# do not edit. For the Prometheus Operator (its ruleSelector must match the labels).",
           "apiVersion: monitoring.coreos.com/v1", "kind: PrometheusRule", "metadata:",
           "  name: stallwatch", "  namespace: stallwatch", "  labels:",
           "    app.kubernetes.io/name: stallwatch", "    app.kubernetes.io/component: alerts",
           "spec:"]
    out += ["  " + line if line else "" for line in rules_text.rstrip("\n").split("\n")]
    return "\n".join(out) + "\n"


def main():
    check = "--check" in sys.argv[1:]
    outputs = {}
    dash_files = []
    for name, d in (("stallwatch-overview.json", overview()), ("stallwatch-loop.json",
                                                                drilldown())):
        text = json.dumps(d, indent=2, ensure_ascii=False) + "\n"
        outputs[ROOT / "dashboards" / name] = text
        dash_files.append((name, text))
    outputs[ROOT / "deploy" / "k8s" / "dashboards-configmap.yaml"] = configmap(dash_files)
    outputs[ROOT / "deploy" / "compose" / "grafana-datasource.yaml"] = grafana_datasource()
    rules = (ROOT / "deploy" / "prometheus" / "rules" / "stallwatch.rules.yml").read_text()
    outputs[ROOT / "deploy" / "k8s" / "prometheusrule.yaml"] = prometheus_rule(rules)
    stale = []
    for path, text in outputs.items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python3 dashboards/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
