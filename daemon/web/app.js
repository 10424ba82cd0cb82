// stallwatchd's web UI (docs/daemon.md, "Web UI"): views of the daemon's JSON API, each one
// reachable by URL with its state in the query string. Plain DOM, no framework, nothing fetched
// from anywhere but the daemon itself. Text from findings (function names, paths, hints) is only
// ever set as textContent or an attribute value, never parsed as HTML.
'use strict';

(function () {
  const params = new URLSearchParams(location.search);
  const view = params.get('view') || 'loops';
  const main = document.getElementById('main');
  const tooltip = document.getElementById('tooltip');
  const kRefreshMs = 5000;
  const kClasses = ['cpu', 'blocked', 'starved', 'suspended', 'unknown'];

  // ---- helpers -------------------------------------------------------------------------------

  // el('td', {class: 'num', text: '3', data: {pid: 4}}, child…)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }

  // A query string of the non-empty values: q({view: 'flame', service: ''}) → "view=flame".
  function q(obj) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(obj)) {
      if (v !== undefined && v !== null && v !== '') p.set(k, v);
    }
    return p.toString();
  }

  async function getJson(url) {
    const r = await fetch(url, {cache: 'no-store'});
    if (!r.ok) throw new Error((await r.text()).trim() || r.status + ' ' + r.statusText);
    return r.json();
  }

  function fmtSeconds(s) {
    if (s === undefined || s === null || isNaN(s)) return '';
    if (s < 1e-3) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + ' ms';
    if (s < 120) return s.toFixed(2) + ' s';
    return (s / 60).toFixed(1) + ' min';
  }

  function pad(n) { return String(n).padStart(2, '0'); }
  function fmtTime(ms) {
    const d = new Date(ms);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
        pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function fmtClock(ms) {
    const d = new Date(ms);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function pct(x) { return (x * 100).toFixed(x < 0.1 ? 1 : 0) + ' %'; }

  // A duration as the API's TIME takes it ("15m", "90s", "2h"), in ms; null when malformed.
  function parseSpan(text) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text || '');
    if (!m) return null;
    const unit = {ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3}[m[2]];
    return parseFloat(m[1]) * unit;
  }

  function frameName(f) {
    if (f.function) return f.function;
    const base = (f.module || '?').split('/').pop();
    return base + '+0x' + Number(f.offset || 0).toString(16);
  }
  function frameWhere(f) { return f.file ? f.file + ':' + f.line : ''; }

  function setStatus(text) { document.getElementById('status').textContent = text; }
  function setState(s) { document.body.dataset.state = s; }
  function showError(where, err) {
    const box = el('div', {class: 'error', text: String(err.message || err)});
    where.prepend(box);
    setState('error');
  }

  function classBadge(c) { return el('span', {class: 'badge cls-' + c, text: c}); }

  function stallHref(s) {
    return '/?' + q({view: 'stall', service: s.service, pid: s.pid, loop: s.loop, id: s.stall_id});
  }

  for (const v of ['loops', 'flame', 'diff']) {
    if (v === view) document.getElementById('nav-' + v).classList.add('current');
  }

  // Tooltip that follows the pointer; `text` may be several lines.
  function tip(e, text) {
    if (!text) {
      tooltip.hidden = true;
      return;
    }
    tooltip.textContent = text;
    tooltip.hidden = false;
    const x = Math.min(e.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
    const y = e.clientY + 18 + tooltip.offsetHeight > window.innerHeight ?
        e.clientY - tooltip.offsetHeight - 10 :
        e.clientY + 18;
    tooltip.style.left = Math.max(4, x) + 'px';
    tooltip.style.top = Math.max(4, y) + 'px';
  }

  // A filter form whose submission is a plain GET of "/": the view's state is its URL.
  function filterForm(viewName, fields, loops) {
    const form = el('form', {class: 'filters', method: 'get', action: '/'});
    form.append(el('input', {type: 'hidden', name: 'view', value: viewName}));
    const services = [...new Set(loops.map((l) => l.service))].sort();
    const loopNames = [...new Set(loops.map((l) => l.loop))].sort();
    form.append(el('datalist', {id: 'dl-services'},
        ...services.map((s) => el('option', {value: s}))));
    form.append(el('datalist', {id: 'dl-loops'}, ...loopNames.map((s) => el('option', {value: s}))));
    const input = (name, label, extra) => el('label', {text: label},
        el('input', Object.assign({name: name, value: params.get(name) || ''}, extra || {})));
    const timeAttrs = {placeholder: '10m, RFC 3339 or Unix ns', size: 22};
    for (const f of fields) {
      if (f === 'service') form.append(input('service', 'service', {list: 'dl-services'}));
      else if (f === 'loop') form.append(input('loop', 'loop', {list: 'dl-loops'}));
      else if (f === 'class') {
        const sel = el('select', {name: 'class'}, el('option', {value: '', text: 'any'}),
            ...kClasses.map((c) => el('option', {value: c, text: c})));
        sel.value = params.get('class') || '';
        form.append(el('label', {text: 'class'}, sel));
      } else if (Array.isArray(f)) {  // a time range: [legend, since name, until name]
        form.append(el('fieldset', {}, el('legend', {text: f[0]}),
            input(f[1], 'since', timeAttrs), input(f[2], 'until', timeAttrs)));
      }
    }
    form.append(el('button', {type: 'submit', text: 'Show'}));
    // Empty fields stay out of the URL (the API refuses an empty service or loop).
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const data = {};
      for (const [k, v] of new FormData(form)) data[k] = v.trim();
      location.href = '/?' + q(data);
    });
    return form;
  }

  // ---- flame graphs ----------------------------------------------------------------------------

  // A call tree of stacks: root → service → outermost frame → … → innermost. Frames of one
  // function under one parent merge; their file:line locations are kept with their samples.
  function newNode(name, kind) {
    return {name: name, kind: kind, children: new Map(), samples: [0, 0], where: new Map(),
      module: ''};
  }
  // Adds the stacks of one reply to the tree as series `i` (0 or 1; the diff has two).
  function addStacks(root, stacks, i) {
    for (const s of stacks) {
      const n = s.samples || 0;
      root.samples[i] += n;
      let node = root.children.get(s.service);
      if (!node) root.children.set(s.service, node = newNode(s.service, 'service'));
      node.samples[i] += n;
      for (let k = s.frames.length - 1; k >= 0; --k) {
        const f = s.frames[k];
        const name = frameName(f);
        let child = node.children.get(name);
        if (!child) {
          node.children.set(name, child = newNode(name, f.kind || 'native'));
          child.module = f.module || '';
        }
        child.samples[i] += n;
        const where = frameWhere(f);
        if (where) child.where.set(where, (child.where.get(where) || 0) + n);
        node = child;
      }
    }
  }

  function whereText(node) {
    const w = [...node.where.entries()].sort((a, b) => b[1] - a[1]).map((e) => e[0]);
    if (!w.length) return '';
    return w.slice(0, 3).join(', ') + (w.length > 3 ? ' (+' + (w.length - 3) + ' more)' : '');
  }

  // Hue from the name, so a function keeps its colour across renders.
  function hash(s) {
    let h = 0;
    for (let i = 0; i < s.length; ++i) h = (h * 31 + s.charCodeAt(i)) | 0;
    return Math.abs(h);
  }
  function kindColour(node) {
    const h = hash(node.name);
    if (node.kind === 'python') return 'hsl(' + (190 + h % 40) + ', 55%, ' + (62 + h % 14) + '%)';
    if (node.kind === 'jit') return 'hsl(' + (275 + h % 30) + ', 45%, ' + (68 + h % 12) + '%)';
    return 'hsl(' + (h % 45) + ', 85%, ' + (58 + h % 16) + '%)';
  }

  // Draws `root` into `box` as an icicle (root at the top). value(node) gives a node's width
  // (its children's sum to at most its own); decorate(div, node) colours a frame, info(node) is
  // its hover text. Clicking a frame zooms to it; clicking an ancestor (or the root) zooms out.
  // The zoom is part of the view's URL: `zoom` holds the names of the frames from the service
  // down to the zoomed one, separated by ';' (as in folded stacks). A click pushes it (Back
  // returns to the previous zoom) and a loaded URL opens zoomed.
  function drawFlame(box, root, value, decorate, info) {
    const kRow = 18, kMinPct = 0.05;
    let depthMax = 0;
    function zoomOf(path, focus) {
      return path.concat([focus]).slice(1).map((n) => n.name).join(';');
    }
    // The focus and its ancestors the URL names; the root when it names none, or a frame these
    // stacks do not have (box.dataset.zoomMissing says so).
    function fromUrl() {
      const zoom = new URLSearchParams(location.search).get('zoom');
      delete box.dataset.zoomMissing;
      const note = document.getElementById('zoom-missing');
      if (note) note.remove();
      if (!zoom) return [root, []];
      let node = root;
      const path = [];
      for (const name of zoom.split(';')) {
        const child = node.children.get(name);
        if (!child || !(value(child) > 0)) {
          box.dataset.zoomMissing = zoom;
          box.before(el('p', {class: 'muted', id: 'zoom-missing', text: 'The zoomed frame (' +
              zoom + ') is not in these stacks: showing them all.'}));
          return [root, []];
        }
        path.push(node);
        node = child;
      }
      return [node, path];
    }
    function render(focus, path, push) {
      box.textContent = '';
      const frames = [];
      // Ancestors of the focus, full width.
      path.forEach((n, d) => frames.push({node: n, x: 0, w: 100, d: d, ancestor: true}));
      const base = value(focus);
      function walk(node, x, w, d) {
        frames.push({node: node, x: x, w: w, d: d, ancestor: false});
        depthMax = Math.max(depthMax, d);
        const kids = [...node.children.values()].filter((c) => value(c) > 0)
            .sort((a, b) => value(b) - value(a));
        let cx = x;
        for (const c of kids) {
          const cw = base > 0 ? value(c) / base * 100 : 0;
          if (cw >= kMinPct) walk(c, cx, cw, d + 1);
          cx += cw;
        }
      }
      depthMax = 0;
      walk(focus, 0, 100, path.length);
      box.style.height = ((depthMax + 1) * kRow + 4) + 'px';
      const zoom = zoomOf(path, focus);
      box.dataset.zoom = zoom;
      if (push) {
        const p = new URLSearchParams(location.search);
        if (zoom) p.set('zoom', zoom);
        else p.delete('zoom');
        history.pushState(null, '', '?' + p.toString());
      }
      for (const f of frames) {
        const cls = 'frame kind-' + f.node.kind + (f.ancestor ? ' ancestor' : '') +
            (f.node === focus ? ' focus' : '');
        const div = el('div', {class: cls, text: f.node.name,
          data: {function: f.node.name, kind: f.node.kind, where: whereText(f.node)}});
        div.style.left = f.x + '%';
        div.style.width = f.w + '%';
        div.style.top = (f.d * kRow) + 'px';
        decorate(div, f.node);
        div.addEventListener('mousemove', (e) => tip(e, info(f.node)));
        div.addEventListener('mouseleave', (e) => tip(e, ''));
        div.addEventListener('click', () => {
          tip(null, '');
          if (f.ancestor) {
            const i = path.indexOf(f.node);
            render(f.node, path.slice(0, i), true);
          } else if (f.node === focus) {
            if (path.length) render(path[path.length - 1], path.slice(0, -1), true);
          } else {
            // The chain from the focus down to the clicked frame becomes ancestors.
            const chain = [];
            (function find(n, acc) {
              if (n === f.node) {
                chain.push(...acc);
                return true;
              }
              for (const c of n.children.values()) {
                if (find(c, acc.concat([n]))) return true;
              }
              return false;
            })(focus, []);
            render(f.node, path.concat(chain), true);
          }
        });
        box.append(div);
      }
    }
    const [focus, path] = fromUrl();
    render(focus, path, false);
    // Back and Forward between zooms: the URL changed, the page did not reload.
    window.addEventListener('popstate', () => {
      const [f, p] = fromUrl();
      render(f, p, false);
    });
  }

  function stackQuery(extra) {
    const o = {format: 'json'};
    for (const k of ['service', 'loop', 'class']) o[k] = params.get(k);
    return Object.assign(o, extra);
  }

  async function flameView(loops) {
    main.append(el('h1', {text: 'Flame graph of stall stacks'}));
    main.append(filterForm('flame', ['service', 'loop', 'class', ['time range', 'since', 'until']],
        loops));
    const r = await getJson('/api/v1/stacks?' +
        q(stackQuery({since: params.get('since'), until: params.get('until')})));
    const root = newNode('all', 'root');
    addStacks(root, r.stacks, 0);
    const total = root.samples[0];
    let note = total + ' samples in ' + r.stacks.length + ' stacks';
    if (r.samples_not_kept) note += '; ' + r.samples_not_kept + ' samples not kept';
    if (r.complete_since_ns) note += '; complete since ' + fmtTime(r.complete_since_ns / 1e6);
    main.append(el('p', {class: 'muted', text: note + '. Click a frame to zoom, click it again ' +
        '(or an ancestor) to zoom out (the zoom is in the address: Back zooms out); hover for ' +
        'samples and file:line.'}));
    if (!total) {
      main.append(el('p', {id: 'empty', text: 'No stall stacks match these filters.'}));
      return;
    }
    const box = el('div', {class: 'flame', id: 'flame'});
    main.append(box);
    drawFlame(box, root, (n) => n.samples[0], (div, n) => {
      div.dataset.samples = n.samples[0];
      if (n.kind !== 'root' && n.kind !== 'service') div.style.background = kindColour(n);
    }, (n) => {
      const lines = [n.name, n.samples[0] + ' samples, ' + pct(n.samples[0] / total) +
          ' of the stall samples'];
      const w = whereText(n);
      if (w) lines.push(w);
      if (n.module) lines.push(n.module + ' (' + n.kind + ')');
      return lines.join('\n');
    });
  }

  async function diffView(loops) {
    main.append(el('h1', {text: 'Differential flame graph'}));
    main.append(filterForm('diff', ['service', 'loop', 'class', ['range A (before)', 'a_since',
      'a_until'], ['range B (after)', 'b_since', 'b_until']], loops));
    const a = {since: params.get('a_since'), until: params.get('a_until')};
    const b = {since: params.get('b_since'), until: params.get('b_until')};
    if (!(a.since || a.until) || !(b.since || b.until)) {
      main.append(el('p', {id: 'empty', text: 'Give two time ranges, A (e.g. before a deploy) ' +
          'and B (after it): each a since and/or until, as Unix ns, RFC 3339 or a duration ago ' +
          '(2h, 30m). Frames are coloured by how their share of the stall samples changed ' +
          'from A to B.'}));
      return;
    }
    const [ra, rb] = await Promise.all([getJson('/api/v1/stacks?' + q(stackQuery(a))),
      getJson('/api/v1/stacks?' + q(stackQuery(b)))]);
    const root = newNode('all', 'root');
    addStacks(root, ra.stacks, 0);
    addStacks(root, rb.stacks, 1);
    const [ta, tb] = root.samples;
    main.append(el('div', {class: 'legend'},
        el('span', {}, el('span', {class: 'swatch sw-grew'}), 'share grew from A to B'),
        el('span', {}, el('span', {class: 'swatch sw-shrank'}), 'share shrank'),
        el('span', {}, el('span', {class: 'swatch sw-same'}), 'about the same (±0.5 points)'),
        el('span', {text: 'A: ' + ta + ' samples, B: ' + tb + ' samples; width: mean share'})));
    if (!ta && !tb) {
      main.append(el('p', {id: 'empty', text: 'No stall stacks in either range.'}));
      return;
    }
    const share = (n, i) => (root.samples[i] ? n.samples[i] / root.samples[i] : 0);
    const delta = (n) => share(n, 1) - share(n, 0);
    const box = el('div', {class: 'flame', id: 'flame'});
    main.append(box);
    drawFlame(box, root, (n) => (share(n, 0) + share(n, 1)) / 2, (div, n) => {
      const d = delta(n);
      div.dataset.delta = d > 0.005 ? 'grew' : d < -0.005 ? 'shrank' : 'same';
      div.dataset.deltaPoints = (d * 100).toFixed(1);
      if (n.kind === 'root' || n.kind === 'service' || div.dataset.delta === 'same') {
        div.style.background = '#e3e5e9';
        return;
      }
      // Saturation with the size of the change: a full swing is deep red or blue.
      const k = Math.min(1, Math.abs(d) / 0.3);
      const light = Math.round(85 - 35 * k);
      div.style.background = d > 0 ? 'hsl(4, 75%, ' + light + '%)' : 'hsl(220, 70%, ' + light + '%)';
      if (light < 62) div.style.color = '#fff';
    }, (n) => {
      const d = delta(n);
      const lines = [n.name,
        'A: ' + n.samples[0] + ' samples, ' + pct(share(n, 0)),
        'B: ' + n.samples[1] + ' samples, ' + pct(share(n, 1)),
        'delta: ' + (d >= 0 ? '+' : '') + (d * 100).toFixed(1) + ' points of the stall samples'];
      const w = whereText(n);
      if (w) lines.push(w);
      return lines.join('\n');
    });
  }

  // ---- loops and the stall timeline -----------------------------------------------------------

  function loopKey(o) { return o.service + '\u0000' + o.pid + '\u0000' + o.loop; }

  async function loopsView() {
    const title = el('h1', {text: 'Loops'});
    const tableBox = el('div', {id: 'loops-box'});
    const spanText = params.get('span') || '15m';
    const spanMs = parseSpan(spanText) || 15 * 60e3;
    const timelineBox = el('div', {id: 'timeline-box'});
    const spans = el('span', {class: 'spans'}, 'last: ', ...['5m', '15m', '1h', '6h'].map((t) =>
      t === spanText ? el('b', {text: t}) : el('a', {href: '/?' + q({view: 'loops', span: t}),
        text: t})));
    main.append(title, tableBox, el('h2', {text: 'Stall timeline, last ' + spanText}),
        el('div', {class: 'legend'}, ...kClasses.map((c) => el('span', {},
            el('span', {class: 'swatch cls-' + c}), c)),
        el('span', {text: 'click a bar for the stall'}), spans),
        timelineBox);
    async function refresh() {
      const [lr, sr] = await Promise.all([getJson('/api/v1/loops'),
        getJson('/api/v1/stalls?limit=1000')]);
      const now = Date.now();
      renderLoops(tableBox, lr.loops, sr.stalls, now);
      renderTimeline(timelineBox, lr.loops, sr.stalls, now, spanMs);
      setStatus('updated ' + fmtClock(now) + ', every ' + kRefreshMs / 1000 + ' s');
    }
    await refresh();
    setInterval(() => refresh().catch((e) => setStatus('refresh failed: ' + e.message)),
        kRefreshMs);
  }

  function renderLoops(box, loops, stalls, now) {
    const lastMinute = new Map();
    for (const s of stalls) {
      if (s.start_ns / 1e6 >= now - 60e3) {
        lastMinute.set(loopKey(s), (lastMinute.get(loopKey(s)) || 0) + 1);
      }
    }
    const head = el('tr', {}, ...['service', 'pid', 'loop', 'kind / runtime', 'delay p99',
      'utilization', 'stalls/min', 'ongoing stall', 'agent', ''].map((h, i) =>
      el('th', {class: i >= 4 && i <= 6 ? 'num' : null, text: h})));
    const rows = loops.slice().sort((a, b) => a.service.localeCompare(b.service) ||
        a.pid - b.pid || a.loop.localeCompare(b.loop)).map((l) => {
      const w = l.last_window;
      const state = !l.connected ? 'gone' : l.silent ? 'silent' : 'connected';
      let ongoing = el('span', {class: 'muted', text: '—'});
      if (l.ongoing) {
        ongoing = el('a', {href: stallHref(l.ongoing), class: 'ongoing'},
            classBadge(l.ongoing.class), ' for ' + fmtSeconds(l.ongoing.duration_s));
      }
      const util = w ? pct(w.utilization) + (w.utilization_estimated ? ' (est.)' : '') : '';
      return el('tr', {class: state, data: {service: l.service, pid: l.pid, loop: l.loop}},
          el('td', {text: l.service}),
          el('td', {class: 'mono', text: String(l.pid), title: l.executable}),
          el('td', {class: 'mono loop', text: l.loop}),
          el('td', {text: (l.kind || '—') + (l.runtime ? ' / ' + l.runtime : '')}),
          el('td', {class: 'num', text: w ? fmtSeconds(w.p99_s) : ''}),
          el('td', {class: 'num', text: util}),
          el('td', {class: 'num', text: String(lastMinute.get(loopKey(l)) || 0),
            title: l.stalls_total + ' stalls since attach'}),
          el('td', {}, ongoing),
          el('td', {class: 'state-' + state, text: state}),
          el('td', {}, el('a', {href: '/?' + q({view: 'flame', service: l.service,
            loop: l.loop, since: '1h'}), text: 'flame graph'})));
    });
    const table = el('table', {id: 'loops'}, el('thead', {}, head), el('tbody', {}, ...rows));
    box.textContent = '';
    if (!loops.length) {
      box.append(el('p', {class: 'muted', text: 'No agent has connected yet.'}));
    }
    box.append(table);
  }

  function renderTimeline(box, loops, stalls, now, spanMs) {
    const from = now - spanMs;
    const byLoop = new Map();
    for (const l of loops) byLoop.set(loopKey(l), {loop: l, stalls: []});
    for (const s of stalls) {
      const endMs = s.start_ns / 1e6 + s.duration_s * 1e3;
      if (endMs < from) continue;
      if (!byLoop.has(loopKey(s))) byLoop.set(loopKey(s), {loop: s, stalls: []});
      byLoop.get(loopKey(s)).stalls.push(s);
    }
    const rows = [];
    for (const {loop: l, stalls: ss} of byLoop.values()) {
      const track = el('div', {class: 'track'});
      for (const s of ss) {
        const startMs = Math.max(from, s.start_ns / 1e6);
        const endMs = Math.min(now, s.start_ns / 1e6 + s.duration_s * 1e3);
        const bar = el('a', {class: 'bar cls-' + s.class, href: stallHref(s),
          data: {stallId: s.stall_id, class: s.class}});
        bar.style.left = ((startMs - from) / spanMs * 100) + '%';
        bar.style.width = (Math.max(0, endMs - startMs) / spanMs * 100) + '%';
        const top = (s.stacks && s.stacks[0] && s.stacks[0].frames.find((f) => f.function)) || null;
        const text = [s.class + (s.ongoing ? ' (ongoing)' : '') + ', ' + fmtSeconds(s.duration_s),
          fmtTime(s.start_ns / 1e6), s.syscall ? 'in ' + s.syscall + (s.fd_target ?
            ' on ' + s.fd_target : '') : '', top ? top.function : ''].filter(Boolean).join('\n');
        bar.addEventListener('mousemove', (e) => tip(e, text));
        bar.addEventListener('mouseleave', (e) => tip(e, ''));
        track.append(bar);
      }
      rows.push(el('div', {class: 'track-row', data: {service: l.service, loop: l.loop}},
          el('div', {class: 'track-label mono', text: l.service + ' ' + l.pid + ' ' + l.loop,
            title: l.service + ' pid ' + l.pid + ' loop ' + l.loop}), track));
    }
    const axis = el('div', {class: 'axis'});
    for (let i = 0; i <= 4; ++i) {
      const t = el('span', {class: 'tick' + (i === 0 ? ' first' : i === 4 ? ' last' : ''),
        text: i === 4 ? 'now' : fmtClock(from + spanMs * i / 4)});
      t.style.left = (i * 25) + '%';
      axis.append(t);
    }
    box.textContent = '';
    box.append(el('div', {class: 'timeline', id: 'timeline'}, ...rows, axis));
    if (!rows.length) box.append(el('p', {class: 'muted', text: 'No loops.'}));
  }

  // ---- one stall ----------------------------------------------------------------------------

  async function stallView() {
    const sel = {service: params.get('service'), pid: params.get('pid'), loop: params.get('loop'),
      id: params.get('id')};
    main.append(el('h1', {text: 'Stall ' + (sel.id || '?') + ' of ' + (sel.service || '?') +
        (sel.pid ? ' pid ' + sel.pid : '') + (sel.loop ? ' loop ' + sel.loop : '')}));
    if (!sel.service || !sel.pid || !sel.id) {
      main.append(el('p', {id: 'empty', text: 'A stall is named by service, pid, loop and id: ' +
          '/?view=stall&service=NAME&pid=PID&loop=NAME&id=ID (the loops table and the timeline ' +
          'link to it).'}));
      return;
    }
    const r = await getJson('/api/v1/stalls?' + q(Object.assign({limit: 1}, sel)));
    if (!r.stalls.length) {
      main.append(el('p', {id: 'empty', text: 'No such stall: the daemon keeps the ongoing ' +
          'stalls and the last 1000 closed ones, and forgets a process some time after it ' +
          'is gone.'}));
      return;
    }
    const s = r.stalls[0];
    const dl = el('dl', {class: 'stall', id: 'stall'});
    const row = (k, v) => dl.append(el('dt', {text: k}), el('dd', {}, v));
    row('class', classBadge(s.class));
    row('state', s.ongoing ? 'ongoing (still stalling)' : 'closed');
    row('duration', fmtSeconds(s.duration_s) + (s.ongoing ? ' so far' : '') +
        (s.estimated ? ' (estimated: from the probe only)' : ''));
    row('started', fmtTime(s.start_ns / 1e6));
    row('syscall', s.syscall || '—');
    row('fd target', s.fd_target || '—');
    row('cpu ratio', pct(s.cpu_ratio) + ' of the stall on CPU');
    row('run-queue wait', pct(s.wait_ratio));
    row('loop', s.service + ' pid ' + s.pid + ' loop ' + s.loop);
    if (s.samples_failed) row('samples failed', String(s.samples_failed));
    if (s.sampling_note) row('sampling note', s.sampling_note);
    main.append(dl);
    main.append(el('div', {class: 'hint', id: 'hint', text: s.hint || 'No hint.'}));
    const untilNs = BigInt(Math.round(s.start_ns)) + BigInt(Math.round(s.duration_s * 1e9));
    main.append(el('p', {}, el('a', {href: '/?' + q({view: 'flame', service: s.service,
      loop: s.loop, since: String(BigInt(Math.round(s.start_ns))), until: String(untilNs)}),
    text: 'Flame graph of this loop during the stall'})));
    const stacks = (s.stacks || []).slice().sort((x, y) => y.samples - x.samples);
    main.append(el('h2', {text: stacks.length ? 'Stacks (' + stacks.length + ', most ' +
        'sampled first; innermost frame first)' : 'No stacks were sampled.'}));
    stacks.forEach((st, i) => {
      main.append(el('h3', {text: 'Stack ' + (i + 1) + ': ' + st.samples + ' sample' +
          (st.samples === 1 ? '' : 's') + (st.method ? ' (' + st.method + ')' : '')}));
      const rows = st.frames.map((f, k) => el('tr', {class: 'frame-row'},
          el('td', {class: 'num', text: String(k)}),
          el('td', {class: 'fn', text: frameName(f)}),
          el('td', {class: 'where', text: frameWhere(f) || '—'}),
          el('td', {class: 'module', text: f.module ? f.module + '+0x' +
              Number(f.offset || 0).toString(16) : '—'}),
          el('td', {class: 'kind', text: f.kind || 'native'})));
      main.append(el('table', {class: 'frames'}, el('thead', {}, el('tr', {},
          el('th', {class: 'num', text: '#'}), el('th', {text: 'function'}),
          el('th', {text: 'file:line'}), el('th', {text: 'module'}), el('th', {text: 'kind'}))),
      el('tbody', {}, ...rows)));
    });
  }

  // ---- start ----------------------------------------------------------------------------------

  async function start() {
    main.textContent = '';
    try {
      if (view === 'stall') {
        await stallView();
      } else if (view === 'flame' || view === 'diff') {
        const loops = (await getJson('/api/v1/loops')).loops;
        await (view === 'flame' ? flameView(loops) : diffView(loops));
      } else {
        await loopsView();
      }
      if (view !== 'loops') setStatus('loaded ' + fmtClock(Date.now()));
      setState('ready');
    } catch (e) {
      showError(main, e);
    }
  }
  start();
})();
