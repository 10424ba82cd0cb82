#!/usr/bin/env node
// Peer comparison for the accuracy benchmark: Node's perf_hooks.monitorEventLoopDelay on the
// same injected busy-CPU blocks (docs/benchmarks.md).
//
//   node bench/peers/node_delay.js [--reps=5] [--durations=2,5,20,50,200,1000]
//                                  [--resolution=10] [--idle-s=10] [--gap-ms=400]
//
// Each block is a busy-wait of the given length on the event loop, started from a timer at a
// random phase (Node gives no way to align with the histogram's internal timer); the histogram
// is reset before each block and read `gap` ms after it. Idle p50/p99 come from an idle phase.
'use strict';
const { monitorEventLoopDelay } = require('perf_hooks');
const os = require('os');

function flag(name, def) {
  const p = `--${name}=`;
  const a = process.argv.find((x) => x.startsWith(p));
  return a ? a.slice(p.length) : def;
}
const reps = Number(flag('reps', '5'));
const durations = flag('durations', '2,5,20,50,200,1000').split(',').map(Number);
const resolution = Number(flag('resolution', '10'));
const idleS = Number(flag('idle-s', '10'));
const gapMs = Number(flag('gap-ms', '400'));

const nowNs = () => process.hrtime.bigint();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function spin(ms) {
  const start = nowNs();
  const want = BigInt(Math.round(ms * 1e6));
  let now = start;
  while (now - start < want) now = nowNs();
  return Number(now - start) / 1e6;
}
const median = (v) => {
  if (!v.length) return NaN;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.round(0.5 * (s.length - 1))];
};
const ms = (ns) => ns / 1e6;

async function main() {
  console.log(`# node ${process.version} monitorEventLoopDelay resolution=${resolution}ms ` +
              `loadavg=${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const h = monitorEventLoopDelay({ resolution });
  h.enable();
  await sleep(200);
  h.reset();
  await sleep(idleS * 1000);
  console.log(`Idle loop (${idleS} s): p50 ${ms(h.percentile(50)).toFixed(3)} ms, ` +
              `p99 ${ms(h.percentile(99)).toFixed(3)} ms, max ${ms(h.max).toFixed(3)} ms, ` +
              `min ${ms(h.min).toFixed(3)} ms, count ${h.count}`);
  const rows = [];
  for (let r = 0; r < reps; ++r) {
    for (const d of durations) {
      h.reset();
      await sleep(20 + Math.random() * resolution);  // random phase vs the sampling timer
      const injected = await new Promise((res) => setImmediate(() => res(spin(d))));
      await sleep(gapMs);
      rows.push({ d, injected, max: ms(h.max), p99: ms(h.percentile(99)) });
    }
  }
  h.disable();
  console.log('\n| injected | n | max (median, ms) | max − injected: median / worst (ms) | ' +
              'worst % |');
  console.log('|---|---|---|---|---|');
  for (const d of durations) {
    const rr = rows.filter((x) => x.d === d);
    const err = rr.map((x) => x.max - x.injected);
    const worst = err.reduce((a, b) => (Math.abs(b) > Math.abs(a) ? b : a), 0);
    const worstPct = Math.max(...rr.map((x) => (100 * Math.abs(x.max - x.injected)) / x.injected));
    console.log(`| ${d} ms | ${rr.length} | ${median(rr.map((x) => x.max)).toFixed(3)} | ` +
                `${median(err) >= 0 ? '+' : ''}${median(err).toFixed(3)} / ` +
                `${worst >= 0 ? '+' : ''}${worst.toFixed(3)} | ${worstPct.toFixed(1)} % |`);
  }
  console.log(`\nloadavg at end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}
main();
