// Overhead benchmarks of the agent (docs/benchmarks.md):
//
//   sw_bench_overhead tick   [--samples=5000]
//       In-loop cost of one loop iteration, timed around event_base_loop(EVLOOP_NONBLOCK):
//       (a) no agent attached, (b) agent attached, no probe tick due, (c) agent attached and one
//       probe tick due (the loop reads the timerfd and records the delay). (c) - (b) is the
//       probe tick's cost on the loop thread, (b) - (a) the per-iteration cost of the loop
//       boundary hooks (epoll_wait and event_base_loop wrappers).
//   sw_bench_overhead idle   [--loops=1] [--threshold-ms=50] [--interval-ms=10] [--seconds=10]
//                            [--agent=on|off] [--bare-timer-ms=0]
//       (--agent=off --bare-timer-ms=10: the loop has a bare 10 ms timerfd event of its own
//       instead, the reference for what any periodic wake-up costs on this machine)
//       Idle loops on their own threads; CPU time (schedstat) of the loop threads and of the
//       agent's threads (watchdog + reporter) over the measured seconds, after 1 s warm-up.
//   sw_bench_overhead memory [--loops=1] [--sampling=on|off]
//       RssAnon / VmRSS of the process before attaching, after attaching `loops` loops (1.5 s,
//       threads and unwinder warmed up), and after one 150 ms CPU stall with stacks sampled.

#include <event2/event.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"

namespace sb = stallwatch::bench;
using stallwatch::MonotonicNanos;

namespace {

void SleepNs(int64_t ns) {
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
}

int64_t NonblockIteration(event_base* base) {
  const int64_t t0 = MonotonicNanos();
  event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_NO_EXIT_ON_EMPTY);
  return MonotonicNanos() - t0;
}

void OnBareTick(evutil_socket_t fd, short, void* arg) {
  uint64_t n;
  if (read(fd, &n, sizeof n) == sizeof n) *static_cast<uint64_t*>(arg) += n;
}

int Tick(int argc, char** argv) {
  const int samples = std::atoi(sb::Flag(argc, argv, "samples", "5000").c_str());
  sb::PrintHeader("overhead tick");
  // Every sample is preceded by a 1.2 ms busy wait (not a sleep, so the CPU stays awake and
  // the variants are compared in the same state); a 1 ms timer is due after it.
  constexpr int64_t kPause = 1'200'000;
  event_base* base = event_base_new();
  std::vector<int64_t> none, bare, no_tick, with_tick;
  for (int i = 0; i < 1000; ++i) NonblockIteration(base);  // warm-up
  for (int i = 0; i < samples; ++i) {
    sb::SpinFor(kPause);
    none.push_back(NonblockIteration(base));
  }
  {
    // Reference: the cheapest possible timerfd event of the host's own (read + count).
    uint64_t count = 0;
    const int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    event* ev = event_new(base, tfd, EV_READ | EV_PERSIST, OnBareTick, &count);
    event_add(ev, nullptr);
    itimerspec its{{0, 1'000'000}, {0, 1'000'000}};
    timerfd_settime(tfd, 0, &its, nullptr);
    for (int i = 0; i < samples; ++i) {
      sb::SpinFor(kPause);
      bare.push_back(NonblockIteration(base));
    }
    event_free(ev);
    close(tfd);
  }

  stallwatch::Options o;
  o.endpoint = "off";
  o.probe_interval = std::chrono::seconds(3600);  // never due: hooks only
  {
    auto agent = stallwatch::Agent::Attach(base, o);
    if (!agent.ok()) return 1;
    for (int i = 0; i < samples; ++i) {
      sb::SpinFor(kPause);
      no_tick.push_back(NonblockIteration(base));
    }
  }
  o.probe_interval = std::chrono::milliseconds(1);  // the tick's cost does not depend on it
  {
    auto agent = stallwatch::Agent::Attach(base, o);
    if (!agent.ok()) return 1;
    for (int i = 0; i < samples; ++i) {
      sb::SpinFor(kPause);
      with_tick.push_back(NonblockIteration(base));
    }
  }
  event_base_free(base);
  auto row = [](const char* what, const std::vector<int64_t>& v) {
    std::printf("| %s | %zu | %" PRId64 " | %" PRId64 " | %" PRId64 " |\n", what, v.size(),
                sb::Percentile(v, 0.5), sb::Percentile(v, 0.9), sb::Percentile(v, 0.99));
  };
  std::printf(
      "| event_base_loop(EVLOOP_NONBLOCK) iteration | n | p50 (ns) | p90 (ns) | p99 (ns) |\n");
  std::printf("|---|---|---|---|---|\n");
  row("(a) no agent, nothing due", none);
  row("(a') no agent, a bare timerfd event of the host's due (reference)", bare);
  row("(b) agent attached, no probe tick due", no_tick);
  row("(c) agent attached, one probe tick due", with_tick);
  std::printf("\nprobe tick on the loop thread, (c) - (b) at p50: %" PRId64 " ns\n",
              sb::Median(with_tick) - sb::Median(no_tick));
  std::printf("boundary hooks per iteration, (b) - (a) at p50: %" PRId64 " ns\n",
              sb::Median(no_tick) - sb::Median(none));
  std::printf("loadavg at end: %s\n", sb::LoadAvgLine().c_str());
  return 0;
}

// A loop on its own thread: attaches (optionally), runs until stopped.
struct LoopThread {
  std::thread thread;
  std::atomic<pid_t> tid{0};
  std::atomic<bool> attached{false};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> stall_ms{0};  // > 0: burn CPU that long on the loop once
  event_base* base = nullptr;
  std::unique_ptr<stallwatch::Agent> agent;

  static void OnPoll(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<LoopThread*>(arg);
    if (self->stop.load()) event_base_loopbreak(self->base);
    if (const int64_t ms = self->stall_ms.exchange(0); ms > 0) sb::SpinFor(ms * 1'000'000);
  }

  void Start(const stallwatch::Options* o, std::atomic<bool>* go, int64_t bare_timer_ns = 0) {
    thread = std::thread([this, o, go, bare_timer_ns] {
      tid = static_cast<pid_t>(syscall(SYS_gettid));
      base = event_base_new();
      // The host's own event: a slow poll for the stop flag (100 ms, so it barely wakes).
      event* ev = event_new(base, -1, EV_PERSIST, &LoopThread::OnPoll, this);
      timeval tv{0, 100'000};
      event_add(ev, &tv);
      // Reference: a bare periodic timerfd event of the host's, as cheap as a tick can be.
      uint64_t bare_count = 0;
      int bare_fd = -1;
      event* bare = nullptr;
      if (bare_timer_ns > 0) {
        bare_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        bare = event_new(base, bare_fd, EV_READ | EV_PERSIST, OnBareTick, &bare_count);
        event_add(bare, nullptr);
        const timespec p{static_cast<time_t>(bare_timer_ns / 1'000'000'000),
                         static_cast<long>(bare_timer_ns % 1'000'000'000)};
        itimerspec its{p, p};
        timerfd_settime(bare_fd, 0, &its, nullptr);
      }
      while (!go->load()) usleep(1000);
      if (o != nullptr) {
        auto a = stallwatch::Agent::Attach(base, *o);
        if (a.ok()) agent = std::move(*a);
      }
      attached = true;
      event_base_dispatch(base);
      agent.reset();
      if (bare != nullptr) {
        event_free(bare);
        close(bare_fd);
      }
      event_free(ev);
      event_base_free(base);
    });
  }
};

int Idle(int argc, char** argv) {
  const int loops = std::atoi(sb::Flag(argc, argv, "loops", "1").c_str());
  const double thr_ms = std::atof(sb::Flag(argc, argv, "threshold-ms", "50").c_str());
  const double interval_ms = std::atof(sb::Flag(argc, argv, "interval-ms", "10").c_str());
  const double seconds = std::atof(sb::Flag(argc, argv, "seconds", "10").c_str());
  const bool with_agent = sb::Flag(argc, argv, "agent", "on") == "on";
  const double bare_ms = std::atof(sb::Flag(argc, argv, "bare-timer-ms", "0").c_str());
  sb::PrintHeader("overhead idle");
  stallwatch::Options o;
  o.endpoint = "off";
  o.stall_threshold = std::chrono::nanoseconds(static_cast<int64_t>(thr_ms * 1e6));
  o.probe_interval = std::chrono::nanoseconds(static_cast<int64_t>(interval_ms * 1e6));
  std::atomic<bool> go{true};
  std::vector<std::unique_ptr<LoopThread>> ts;
  for (int i = 0; i < loops; ++i) {
    ts.push_back(std::make_unique<LoopThread>());
    ts.back()->Start(with_agent ? &o : nullptr, &go, static_cast<int64_t>(bare_ms * 1e6));
  }
  for (auto& t : ts) {
    while (!t->attached.load()) usleep(1000);
  }
  SleepNs(1'000'000'000);  // warm-up: watchdog started, unwinder initialised
  std::set<pid_t> loop_tids;
  for (auto& t : ts) loop_tids.insert(t->tid.load());
  const pid_t main_tid = static_cast<pid_t>(syscall(SYS_gettid));
  auto snap = [&] {
    std::vector<std::pair<pid_t, int64_t>> v;
    for (pid_t tid : sb::ThreadIds()) v.emplace_back(tid, sb::ThreadRunNs(tid));
    return v;
  };
  const auto before = snap();
  const int64_t t0 = MonotonicNanos();
  SleepNs(static_cast<int64_t>(seconds * 1e9));
  const int64_t wall = MonotonicNanos() - t0;
  const auto after = snap();
  int64_t loop_ns = 0, agent_ns = 0;
  int agent_threads = 0;
  for (const auto& [tid, run] : after) {
    int64_t prev = -1;
    for (const auto& [t, r] : before) {
      if (t == tid) prev = r;
    }
    if (prev < 0 || tid == main_tid) continue;
    if (loop_tids.count(tid)) {
      loop_ns += run - prev;
    } else {
      agent_ns += run - prev;
      ++agent_threads;
    }
  }
  for (auto& t : ts) t->stop = true;
  for (auto& t : ts) t->thread.join();
  const double ticks = with_agent    ? loops * wall / (interval_ms * 1e6)
                       : bare_ms > 0 ? loops * wall / (bare_ms * 1e6)
                                     : 0;
  std::printf(
      "| agent | loops | threshold | probe | seconds | loop threads CPU (ms) | per probe "
      "tick (µs) | agent threads | agent threads CPU (ms) | agent CPU (%% of one core) "
      "|\n|---|---|---|---|---|---|---|---|---|---|\n");
  char who[64];
  std::snprintf(who, sizeof who, "%s", with_agent ? "on" : "off");
  if (bare_ms > 0) std::snprintf(who, sizeof who, "off, bare %g ms timerfd", bare_ms);
  std::printf("| %s | %d | %g ms | %g ms | %.1f | %.2f | %.2f | %d | %.2f | %.3f %% |\n", who,
              loops, thr_ms, interval_ms, wall / 1e9, loop_ns / 1e6,
              ticks > 0 ? loop_ns / 1e3 / ticks : 0.0, agent_threads, agent_ns / 1e6,
              100.0 * agent_ns / wall);
  std::printf("loadavg at end: %s\n", sb::LoadAvgLine().c_str());
  return 0;
}

int Memory(int argc, char** argv) {
  const int loops = std::atoi(sb::Flag(argc, argv, "loops", "1").c_str());
  const bool sampling = sb::Flag(argc, argv, "sampling", "on") == "on";
  sb::PrintHeader("overhead memory");
  stallwatch::Options o;
  o.endpoint = "off";
  o.sampling = sampling ? stallwatch::SamplingMode::kOn : stallwatch::SamplingMode::kOff;
  std::atomic<bool> go{false};
  std::vector<std::unique_ptr<LoopThread>> ts;
  for (int i = 0; i < loops; ++i) {
    ts.push_back(std::make_unique<LoopThread>());
    ts.back()->Start(&o, &go);
  }
  SleepNs(300'000'000);  // loop threads and their bases exist, nothing attached yet
  const long anon0 = sb::StatusKb("RssAnon"), rss0 = sb::StatusKb("VmRSS");
  go = true;
  for (auto& t : ts) {
    while (!t->attached.load()) usleep(1000);
  }
  SleepNs(1'500'000'000);
  const long anon1 = sb::StatusKb("RssAnon"), rss1 = sb::StatusKb("VmRSS");
  ts[0]->stall_ms = 150;  // one CPU stall with stack samples and symbolization
  SleepNs(1'000'000'000);
  const long anon2 = sb::StatusKb("RssAnon"), rss2 = sb::StatusKb("VmRSS");
  const auto threads = sb::ThreadIds().size();
  uint64_t stalls = 0;
  size_t frames = 0;
  if (ts[0]->agent) {
    auto snap = ts[0]->agent->Snapshot();
    stalls = snap.recent_stalls.size();
    if (!snap.recent_stalls.empty() && !snap.recent_stalls.back().stacks.empty()) {
      frames = snap.recent_stalls.back().stacks.front().frames.size();
    }
  }
  for (auto& t : ts) t->stop = true;
  for (auto& t : ts) t->thread.join();
  std::printf(
      "| loops | sampling | threads | RssAnon before (KiB) | Δ attached (KiB) | Δ after a stall "
      "with "
      "stacks (KiB) | VmRSS Δ attached (KiB) | VmRSS Δ after stall (KiB) | stalls / frames "
      "|\n|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %d | %s | %zu | %ld | %+ld | %+ld | %+ld | %+ld | %" PRIu64 " / %zu |\n", loops,
              sampling ? "on" : "off", threads, anon0, anon1 - anon0, anon2 - anon0, rss1 - rss0,
              rss2 - rss0, stalls, frames);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "tick") return Tick(argc, argv);
  if (mode == "idle") return Idle(argc, argv);
  if (mode == "memory") return Memory(argc, argv);
  std::fprintf(stderr, "usage: %s tick|idle|memory [--flags]  (see the file's header)\n", argv[0]);
  return 2;
}
