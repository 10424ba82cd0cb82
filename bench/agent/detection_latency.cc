// Detection-latency benchmark: how long after a stall crosses the threshold the agent delivers
// the `ongoing` finding to its hook.
//
//   sw_bench_detection [--thresholds=10,50,200] [--reps=10] [--sampling=on|off]
//                      [--extra-ms=150] [--gap-ms=300] [--verbose=yes]
//                      [--fail-on-miss=yes] [--endpoint=off]   (exit 2 when a target is missed)
//
// For each threshold a fresh agent is attached (endpoint off, hooks on); after a 1 s start-up
// grace the loop runs busy-CPU blocks of threshold + extra ms, started from a timer at a random
// phase relative to the watchdog. Latency = (monotonic time when the first ongoing finding of
// the stall reaches the hook) - (block start + threshold). The block start is taken inside the
// callback, a few microseconds after the agent's own start (the loop's return from epoll_wait),
// so the figure errs on the high side by that much.

#include <event2/event.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "bench_util.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"

namespace sb = stallwatch::bench;
using stallwatch::MonotonicNanos;

namespace {

struct Block {
  int64_t start = 0, end = 0;
};

struct Run {
  event_base* base = nullptr;
  event* ev = nullptr;
  int64_t block_ns = 0;
  int64_t gap_ns = 0;
  int left = 0;
  std::mt19937_64 rng{42};
  std::vector<Block> blocks;

  void Arm() {
    std::uniform_int_distribution<int64_t> jitter(0, 20'000'000);
    const int64_t after = gap_ns + jitter(rng);
    timeval tv{static_cast<time_t>(after / 1'000'000'000),
               static_cast<suseconds_t>(after % 1'000'000'000 / 1000)};
    evtimer_add(ev, &tv);
  }
  static void OnFire(evutil_socket_t, short, void* arg) {
    auto* r = static_cast<Run*>(arg);
    Block b;
    const int64_t took = sb::SpinFor(r->block_ns, &b.start);
    b.end = b.start + took;
    r->blocks.push_back(b);
    if (--r->left > 0) {
      r->Arm();
    } else {
      event_base_loopexit(r->base, nullptr);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  const auto thresholds = sb::ParseList(sb::Flag(argc, argv, "thresholds", "10,50,200"));
  const int reps = std::atoi(sb::Flag(argc, argv, "reps", "10").c_str());
  const bool sampling = sb::Flag(argc, argv, "sampling", "on") == "on";
  const int64_t extra = std::atoll(sb::Flag(argc, argv, "extra-ms", "150").c_str()) * 1'000'000;
  const int64_t gap = std::atoll(sb::Flag(argc, argv, "gap-ms", "300").c_str()) * 1'000'000;
  const bool verbose = sb::Flag(argc, argv, "verbose", "no") != "no";
  // "off" by default: with a daemon endpoint and no daemon the hooks stall (docs §4 E).
  const std::string endpoint = sb::Flag(argc, argv, "endpoint", "off");
  sb::PrintHeader("detection latency");
  const int64_t mono_to_real = stallwatch::RealtimeNanos() - MonotonicNanos();

  std::printf(
      "| threshold | sampling | n | detected | 1st stall after attach (ms) | later "
      "stalls: p50 (ms) | p90 | max | target 10 ms + thr/4 | met (all / later) | "
      "reported start − block start, median (ms) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  bool all_met = true;
  for (double thr_ms : thresholds) {
    const int64_t thr = static_cast<int64_t>(thr_ms * 1e6);
    std::mutex mu;
    std::map<uint64_t, std::pair<int64_t, int64_t>> first_ongoing;  // id → (hook mono, start)
    event_base* base = event_base_new();
    stallwatch::Options o;
    o.loop_name = "det";
    o.endpoint = endpoint;
    o.stall_threshold = std::chrono::nanoseconds(thr);
    o.sampling = sampling ? stallwatch::SamplingMode::kOn : stallwatch::SamplingMode::kOff;
    o.max_stack_reports_per_minute = 1000;  // every stall gets stacks, as the first one would
    o.on_stall = [&](const stallwatch::StallFinding& f) {
      const int64_t now = MonotonicNanos();
      if (!f.ongoing) return;
      std::lock_guard<std::mutex> l(mu);
      first_ongoing.emplace(f.stall_id, std::make_pair(now, f.start_ns - mono_to_real));
    };
    auto agent = stallwatch::Agent::Attach(base, o);
    if (!agent.ok()) {
      std::fprintf(stderr, "attach: %s\n", agent.status().ToString().c_str());
      return 1;
    }
    Run run;
    run.base = base;
    run.block_ns = thr + extra;
    run.gap_ns = gap;
    run.left = reps;
    run.ev = evtimer_new(base, &Run::OnFire, &run);
    run.gap_ns = 1'000'000'000;  // start-up grace before the first block
    run.Arm();
    run.gap_ns = gap;
    event_base_dispatch(base);
    usleep(200'000);
    agent->reset();
    event_free(run.ev);
    event_base_free(base);

    std::vector<double> lat, start_err;
    int detected = 0;
    std::string each;
    for (const auto& b : run.blocks) {
      for (const auto& [id, v] : first_ongoing) {
        if (v.second >= b.start - 5'000'000 && v.second <= b.end) {
          ++detected;
          lat.push_back((v.first - (b.start + thr)) / 1e6);
          char buf[32];
          std::snprintf(buf, sizeof buf, " %.2f", lat.back());
          each.append(buf);
          start_err.push_back((v.second - b.start) / 1e6);
          break;
        }
      }
    }
    const double target = 10 + thr_ms / 4;
    const double first = lat.empty() ? NAN : lat.front();
    std::vector<double> later(lat.begin() + (lat.empty() ? 0 : 1), lat.end());
    const double mx = sb::Percentile(later, 1.0);
    const bool all_detected = detected == static_cast<int>(run.blocks.size());
    const bool met_later = all_detected && mx <= target;
    const bool met = met_later && first <= target;
    all_met = all_met && met;
    std::printf(
        "| %g ms | %s | %zu | %d | %.2f | %.2f | %.2f | %.2f | %.1f ms | %s / %s | %+.3f "
        "|\n",
        thr_ms, sampling ? "on" : "off", run.blocks.size(), detected, first, sb::Median(later),
        sb::Percentile(later, 0.9), mx, target, met ? "yes" : "NO", met_later ? "yes" : "NO",
        sb::Median(start_err));
    if (verbose)
      std::fprintf(stderr, "threshold %g ms, latencies in order (ms):%s\n", thr_ms, each.c_str());
    std::fflush(stdout);
  }
  std::printf("\nloadavg at end: %s\n", sb::LoadAvgLine().c_str());
  const bool strict = sb::Flag(argc, argv, "fail-on-miss", "no") != "no";
  return (strict && !all_met) ? 2 : 0;
}
