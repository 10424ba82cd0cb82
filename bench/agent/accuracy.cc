// Accuracy benchmark: busy-CPU stalls of known length injected into a real libevent loop with
// the agent attached; the agent's closed-stall duration and loop-delay max are compared with
// the injected time. Also measures the idle loop's delay distribution.
//
//   sw_bench_accuracy [--reps=5] [--durations=2,5,20,50,200,1000] [--threshold-ms=1]
//                     [--interval-ms=10] [--idle-s=10] [--lead-us=1000] [--gap-ms=400] [--csv]
//                     [--sampling=on|off] [--debug=yes]
//
// Method (docs/benchmarks.md): each block starts `lead` before one of the probe's ticks (the
// probe's phase is learnt first from the ticks of an otherwise empty loop), so the tick it
// covers has a known true lateness (block end - tick due time). Blocks are spaced by `gap` so
// each stall and its delay window are reported before the next one begins.

#include <event2/event.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "bench_util.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/histogram.h"

namespace sb = stallwatch::bench;
using stallwatch::MonotonicNanos;

namespace {

struct Injection {
  int64_t want_ns = 0;
  int64_t start = 0, end = 0;  // measured spin span, monotonic
  int64_t due = 0;             // estimated due time of the probe tick the block covers
};

struct Collected {
  std::mutex mu;
  std::vector<stallwatch::StallFinding> stalls;                       // closed only
  std::vector<std::pair<int64_t, stallwatch::DelayFinding>> windows;  // (end mono, finding)
};

struct Driver {
  event_base* base = nullptr;
  event* ev = nullptr;
  int tfd = -1;
  std::vector<Injection> plan;
  size_t next = 0;
  int64_t phase = 0;  // a probe due time (monotonic); ticks are phase + k * interval
  int64_t interval = 0;
  int64_t lead = 0;
  int64_t gap = 0;
  bool debug = false;

  // Next probe due time at or after t.
  int64_t DueAtOrAfter(int64_t t) const {
    const int64_t k = (t - phase + interval - 1) / interval;
    return phase + k * interval;
  }
  void ArmNext(int64_t not_before) {
    if (next >= plan.size()) {
      // Keep the loop running a gap longer: the probe records the last block's delay only
      // when its tick is serviced inside dispatch.
      const timeval tv{static_cast<time_t>(gap / 1'000'000'000),
                       static_cast<suseconds_t>(gap % 1'000'000'000 / 1000)};
      event_base_loopexit(base, &tv);
      return;
    }
    const int64_t due = DueAtOrAfter(not_before + lead);
    plan[next].due = due;
    const int64_t fire = due - lead;
    itimerspec its{};
    its.it_value.tv_sec = fire / 1'000'000'000;
    its.it_value.tv_nsec = fire % 1'000'000'000;
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, nullptr);
  }
  static void OnFire(evutil_socket_t fd, short, void* arg) {
    auto* d = static_cast<Driver*>(arg);
    uint64_t exp;
    if (read(fd, &exp, sizeof exp) != sizeof exp) return;
    Injection& inj = d->plan[d->next];
    int64_t start = 0;
    const int64_t took = sb::SpinFor(inj.want_ns, &start);
    inj.start = start;
    inj.end = start + took;
    if (d->debug) std::fprintf(stderr, "block: %.3f .. %.3f ms\n", inj.start / 1e6, inj.end / 1e6);
    ++d->next;
    d->ArmNext(inj.end + d->gap);
  }
};

void OnKeepalive(evutil_socket_t, short, void* arg) {
  event_base_loopexit(static_cast<event_base*>(arg), nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = std::atoi(sb::Flag(argc, argv, "reps", "5").c_str());
  const auto durations_ms = sb::ParseList(sb::Flag(argc, argv, "durations", "2,5,20,50,200,1000"));
  const double threshold_ms = std::atof(sb::Flag(argc, argv, "threshold-ms", "1").c_str());
  const double interval_ms = std::atof(sb::Flag(argc, argv, "interval-ms", "10").c_str());
  const double idle_s = std::atof(sb::Flag(argc, argv, "idle-s", "10").c_str());
  const int64_t lead = std::atoll(sb::Flag(argc, argv, "lead-us", "1000").c_str()) * 1000;
  const int64_t gap = std::atoll(sb::Flag(argc, argv, "gap-ms", "400").c_str()) * 1'000'000;
  const bool csv =
      sb::Flag(argc, argv, "csv", "") != "" || std::find_if(argv, argv + argc, [](const char* a) {
                                                 return std::string(a) == "--csv";
                                               }) != argv + argc;

  sb::PrintHeader("accuracy");
  const int64_t mono_to_real = stallwatch::RealtimeNanos() - MonotonicNanos();

  event_base* base = event_base_new();
  Collected got;
  stallwatch::Options o;
  o.loop_name = "bench";
  o.endpoint = "off";
  o.stall_threshold = std::chrono::nanoseconds(static_cast<int64_t>(threshold_ms * 1e6));
  o.probe_interval = std::chrono::nanoseconds(static_cast<int64_t>(interval_ms * 1e6));
  o.report_interval = std::chrono::milliseconds(100);
  o.max_stack_reports_per_minute = 1000;
  o.sampling = sb::Flag(argc, argv, "sampling", "on") == "on" ? stallwatch::SamplingMode::kOn
                                                              : stallwatch::SamplingMode::kOff;
  const bool debug = sb::Flag(argc, argv, "debug", "no") != "no";
  o.on_stall = [&, debug](const stallwatch::StallFinding& f) {
    if (debug) {
      std::fprintf(stderr,
                   "finding: id %llu start %.3f ms dur %.3f ms ongoing %d class %s stacks %zu "
                   "note '%s' (hook at %.3f ms)\n",
                   static_cast<unsigned long long>(f.stall_id), (f.start_ns - mono_to_real) / 1e6,
                   f.duration_s * 1e3, f.ongoing, stallwatch::StallClassName(f.stall_class),
                   f.stacks.size(), f.sampling_note.c_str(), MonotonicNanos() / 1e6);
    }
    if (f.ongoing) return;
    std::lock_guard<std::mutex> l(got.mu);
    got.stalls.push_back(f);
  };
  o.on_delay = [&](const stallwatch::DelayFinding& f) {
    std::lock_guard<std::mutex> l(got.mu);
    got.windows.emplace_back(f.end_ns - mono_to_real, f);
  };
  auto agent = stallwatch::Agent::Attach(base, o);
  if (!agent.ok()) {
    std::fprintf(stderr, "attach: %s\n", agent.status().ToString().c_str());
    return 1;
  }

  // 1. Idle: the loop has only a keepalive timer.
  const int64_t idle_from = MonotonicNanos();
  {
    event* keep = evtimer_new(base, OnKeepalive, base);
    timeval tv{static_cast<time_t>(idle_s), static_cast<suseconds_t>(std::fmod(idle_s, 1.0) * 1e6)};
    evtimer_add(keep, &tv);
    event_base_dispatch(base);
    event_free(keep);
  }
  const int64_t idle_to = MonotonicNanos();

  // 2. The probe's phase, read from its timerfd (the process's only timerfd so far): fdinfo's
  // it_value is the time left to the next expiry, computed by the kernel when read.
  const int64_t interval = o.probe_interval->count();
  const int64_t phase = sb::TimerfdNextExpiry();
  if (phase < 0) {
    std::fprintf(stderr, "cannot find the probe's timerfd in /proc/self/fdinfo\n");
    return 1;
  }
  stallwatch::HistogramCounts idle_hist;
  double win_p50_max = 0;
  {
    // Delay windows that ended inside the idle phase (skip the first: attach + startup).
    std::lock_guard<std::mutex> l(got.mu);
    bool first = true;
    for (auto& [end, w] : got.windows) {
      if (end <= idle_from || end > idle_to + 50'000'000) continue;
      if (first) {
        first = false;
        continue;
      }
      idle_hist.Merge(stallwatch::HistogramCounts::FromSparse(w.delay_buckets));
      idle_hist.set_max_ns(std::max<uint64_t>(idle_hist.max_ns(), w.max_s * 1e9));
      win_p50_max = std::max(win_p50_max, w.p50_s);
    }
  }

  // 3. Injections, durations interleaved.
  Driver d;
  d.base = base;
  d.interval = interval;
  d.phase = phase;
  d.lead = lead;
  d.gap = gap;
  d.debug = debug;
  for (int r = 0; r < reps; ++r) {
    for (double ms : durations_ms) d.plan.push_back({static_cast<int64_t>(ms * 1e6)});
  }
  d.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  d.ev = event_new(base, d.tfd, EV_READ | EV_PERSIST, &Driver::OnFire, &d);
  event_add(d.ev, nullptr);
  d.ArmNext(MonotonicNanos() + 100'000'000);
  event_base_dispatch(base);
  event_free(d.ev);
  close(d.tfd);
  usleep(300'000);  // last window and stall reach the hooks

  std::vector<stallwatch::StallFinding> stalls;
  std::vector<std::pair<int64_t, stallwatch::DelayFinding>> windows;
  {
    std::lock_guard<std::mutex> l(got.mu);
    stalls = got.stalls;
    windows = got.windows;
  }
  agent->reset();
  event_base_free(base);

  // Match findings with injections.
  struct Row {
    double want_ms, inj_ms, stall_ms = NAN, delay_ms = NAN, truth_delay_ms;
    bool estimated = false;
  };
  std::vector<Row> rows;
  std::vector<bool> used(stalls.size(), false);
  int64_t inject_from = d.plan.empty() ? 0 : d.plan.front().start - 5'000'000;
  for (const auto& inj : d.plan) {
    Row row{inj.want_ns / 1e6, (inj.end - inj.start) / 1e6};
    row.truth_delay_ms = std::max<int64_t>(0, inj.end - inj.due) / 1e6;
    for (size_t i = 0; i < stalls.size(); ++i) {
      const int64_t s = stalls[i].start_ns - mono_to_real;
      if (!used[i] && s >= inj.start - 5'000'000 && s <= inj.end) {
        used[i] = true;
        row.stall_ms = stalls[i].duration_s * 1e3;
        row.estimated = stalls[i].estimated;
        break;
      }
    }
    double mx = -1;
    for (const auto& [end, w] : windows) {
      if (end >= inj.start && end <= inj.end + gap - 50'000'000) mx = std::max(mx, w.max_s);
    }
    if (mx >= 0) row.delay_ms = mx * 1e3;
    rows.push_back(row);
  }
  int false_stalls = 0;
  for (size_t i = 0; i < stalls.size(); ++i) {
    if (!used[i] && stalls[i].start_ns - mono_to_real >= inject_from) ++false_stalls;
  }

  if (csv) {
    std::printf(
        "want_ms,injected_ms,stall_ms,stall_err_ms,estimated,delay_max_ms,true_lateness_ms\n");
    for (const auto& r : rows) {
      std::printf("%.0f,%.3f,%.3f,%.3f,%d,%.3f,%.3f\n", r.want_ms, r.inj_ms, r.stall_ms,
                  r.stall_ms - r.inj_ms, r.estimated, r.delay_ms, r.truth_delay_ms);
    }
  }

  std::printf(
      "\nIdle loop (%.1f s, probe %.0f ms): delay p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, "
      "max %.3f ms, ticks %" PRIu64 "\n",
      (idle_to - idle_from) / 1e9, interval_ms, idle_hist.ValueAtQuantile(0.5) / 1e6,
      idle_hist.ValueAtQuantile(0.99) / 1e6, idle_hist.ValueAtQuantile(0.999) / 1e6,
      idle_hist.max_ns() / 1e6, idle_hist.total());
  std::printf("Threshold %.1f ms; stalls reported outside injections (false): %d\n\n", threshold_ms,
              false_stalls);
  std::printf(
      "| injected | n | stalls reported | stall duration error: median / worst (ms) | "
      "worst %% | within max(0.5 ms, 2 %%) | delay max (median, ms) | delay max − "
      "injected (median, ms) | delay max − true lateness: median / worst (ms) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (double ms : durations_ms) {
    std::vector<double> err, derr, dmax, dminus;
    int n = 0, reported = 0, within = 0, est = 0;
    double worst = 0, worst_pct = 0, worst_d = 0;
    for (const auto& r : rows) {
      if (r.want_ms != ms) continue;
      ++n;
      if (!std::isnan(r.stall_ms)) {
        ++reported;
        est += r.estimated;
        const double e = r.stall_ms - r.inj_ms;
        err.push_back(e);
        if (std::fabs(e) > std::fabs(worst)) worst = e;
        worst_pct = std::max(worst_pct, 100 * std::fabs(e) / r.inj_ms);
        if (std::fabs(e) <= std::max(0.5, 0.02 * r.inj_ms)) ++within;
      }
      if (!std::isnan(r.delay_ms)) {
        dmax.push_back(r.delay_ms);
        dminus.push_back(r.delay_ms - r.inj_ms);
        const double de = r.delay_ms - r.truth_delay_ms;
        derr.push_back(de);
        if (std::fabs(de) > std::fabs(worst_d)) worst_d = de;
      }
    }
    std::printf(
        "| %g ms | %d | %d%s | %+.3f / %+.3f | %.2f %% | %d/%d | %.3f | %+.3f | %+.3f / "
        "%+.3f |\n",
        ms, n, reported, est ? " (estimated)" : "", sb::Median(err), worst, worst_pct, within,
        reported, sb::Median(dmax), sb::Median(dminus), sb::Median(derr), worst_d);
  }
  std::printf("\nloadavg at end: %s\n", sb::LoadAvgLine().c_str());
  return 0;
}
