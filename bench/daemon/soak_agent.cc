// soak_agent: one process of the soak benchmark (bench/scripts/soak.sh). Runs L libevent loops,
// one thread each, with the real agent attached (reporting to stallwatchd over its Unix socket),
// and injects stalls on them for a while; then prints one JSON line with what it injected and
// what its agent counted, for the script to reconcile with the daemon.
//
//   soak_agent --socket PATH [--service NAME] [--loops 5] [--duration-s 600] [--stall-ms 120]
//              [--period-ms 5000] [--cpu-every 5] [--threshold-ms 50]
//
// Every loop injects a stall every period (±25 % jitter, so loops do not fire in step): a
// blocking sleep, or every cpu-every-th time a CPU burn, of stall-ms on the loop thread.
#include <event2/event.h>
#include <event2/thread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "stallwatch/agent.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Config {
  std::string socket;
  std::string service = "soak";
  int loops = 5;
  int duration_s = 600;
  int stall_ms = 120;
  int period_ms = 5000;
  int cpu_every = 5;
  int threshold_ms = 50;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "soak_agent: %s\nusage: soak_agent --socket PATH [--service NAME] [--loops N] "
               "[--duration-s S] [--stall-ms MS] [--period-ms MS] [--cpu-every N] "
               "[--threshold-ms MS]\n",
               why);
  std::exit(2);
}

int PositiveInt(const char* flag, const char* v) {
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n <= 0 || n > 1'000'000) {
    Usage((std::string("bad ") + flag + " '" + v + "': expected a positive integer").c_str());
  }
  return static_cast<int>(n);
}

Config Parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Usage(("missing value after " + a).c_str());
    const char* v = argv[++i];
    if (a == "--socket") {
      c.socket = v;
    } else if (a == "--service") {
      c.service = v;
    } else if (a == "--loops") {
      c.loops = PositiveInt("--loops", v);
    } else if (a == "--duration-s") {
      c.duration_s = PositiveInt("--duration-s", v);
    } else if (a == "--stall-ms") {
      c.stall_ms = PositiveInt("--stall-ms", v);
    } else if (a == "--period-ms") {
      c.period_ms = PositiveInt("--period-ms", v);
    } else if (a == "--cpu-every") {
      c.cpu_every = PositiveInt("--cpu-every", v);
    } else if (a == "--threshold-ms") {
      c.threshold_ms = PositiveInt("--threshold-ms", v);
    } else {
      Usage(("unknown flag " + a).c_str());
    }
  }
  if (c.socket.empty()) Usage("--socket is required");
  if (c.stall_ms <= c.threshold_ms) Usage("--stall-ms must exceed --threshold-ms");
  return c;
}

volatile uint64_t g_sink;

int64_t UnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

__attribute__((noinline)) void BurnCpu(int ms) {
  const auto end = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < end) {
    for (int i = 0; i < 10000; ++i) g_sink = g_sink + static_cast<uint64_t>(i) * 2654435761u;
  }
}

__attribute__((noinline)) void SlowBackendCall(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
}

struct Loop {
  const Config* config = nullptr;
  int index = 0;
  event_base* base = nullptr;
  event* timer = nullptr;
  std::unique_ptr<stallwatch::Agent> agent;
  std::thread thread;
  std::mt19937 rng;
  std::atomic<bool> injecting{true};
  std::atomic<uint64_t> injected{0};
  uint64_t fired = 0;
  std::mutex mu;
  // Closed stalls the agent reported longer than 100 ms: the complement of the daemon's
  // stallwatch_stall_duration_seconds_bucket{le="0.1"}.
  uint64_t closed_long = 0;
  // Wall-clock intervals [start, end) of the injected stalls (loop thread) and of the closed
  // stalls the agent reported (reporter thread), to match one against the other at the end.
  std::vector<std::pair<int64_t, int64_t>> injections;
  std::vector<std::pair<int64_t, int64_t>> reported;

  void Schedule() {
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    const auto us = static_cast<int64_t>(config->period_ms * 1000.0 * jitter(rng));
    const timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
    event_add(timer, &tv);
  }

  static void OnTimer(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Loop*>(arg);
    if (!self->injecting.load()) return;
    ++self->fired;
    const int64_t start = UnixNs();
    if (self->fired % static_cast<uint64_t>(self->config->cpu_every) == 0) {
      BurnCpu(self->config->stall_ms);
    } else {
      SlowBackendCall(self->config->stall_ms);
    }
    const int64_t end = UnixNs();
    {
      std::lock_guard<std::mutex> lock(self->mu);
      self->injections.emplace_back(start, end);
    }
    self->injected.fetch_add(1);
    self->Schedule();
  }
};

void KeepAlive(evutil_socket_t, short, void*) {}

}  // namespace

int main(int argc, char** argv) {
  const Config config = Parse(argc, argv);
  evthread_use_pthreads();
  std::vector<std::unique_ptr<Loop>> loops;
  for (int i = 0; i < config.loops; ++i) {
    auto l = std::make_unique<Loop>();
    l->config = &config;
    l->index = i;
    l->rng.seed(static_cast<uint32_t>(::getpid()) * 7919u + static_cast<uint32_t>(i));
    l->base = event_base_new();
    l->timer = evtimer_new(l->base, &Loop::OnTimer, l.get());
    stallwatch::Options o;
    o.service = config.service;
    o.loop_name = "loop-" + std::to_string(i);
    o.endpoint = "unix:" + config.socket;
    o.stall_threshold = std::chrono::milliseconds(config.threshold_ms);
    Loop* raw = l.get();
    o.on_stall = [raw](const stallwatch::StallFinding& f) {
      if (f.ongoing) return;
      std::lock_guard<std::mutex> lock(raw->mu);
      raw->reported.emplace_back(f.start_ns, f.start_ns + static_cast<int64_t>(f.duration_s * 1e9));
      if (f.duration_s > 0.1) ++raw->closed_long;
    };
    auto agent = stallwatch::Agent::Attach(l->base, o);
    if (!agent.ok()) {
      std::fprintf(stderr, "soak_agent: attach failed: %s\n", agent.status().message().c_str());
      return 1;
    }
    l->agent = std::move(*agent);
    loops.push_back(std::move(l));
  }
  for (auto& l : loops) {
    l->Schedule();
    Loop* raw = l.get();
    l->thread = std::thread([raw] {
      // Keeps the loop running between stalls (the agent's probe does not, by design).
      event* keep = event_new(raw->base, -1, EV_PERSIST, &KeepAlive, nullptr);
      const timeval second{1, 0};
      event_add(keep, &second);
      event_base_dispatch(raw->base);
      event_free(keep);
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(config.duration_s));
  for (auto& l : loops) l->injecting.store(false);
  // Let the last stalls close and be reported, then stop the loops.
  std::this_thread::sleep_for(2s);
  uint64_t injected = 0, agent_stalls = 0, closed_long = 0, dropped = 0;
  for (auto& l : loops) {
    event_base_loopbreak(l->base);
    l->thread.join();
    const stallwatch::LoopSnapshot s = l->agent->Snapshot();
    injected += l->injected.load();
    agent_stalls += s.stalls_total;
    if (s.last_window) dropped = std::max(dropped, s.last_window->findings_dropped_total);
  }
  // Detaching sends each loop's final window (its cumulative counters) and flushes the queue.
  for (auto& l : loops) {
    event_free(l->timer);
    l->agent.reset();
  }
  // An injected stall is accounted for when a closed stall the agent reported on the same loop
  // overlaps it; reported stalls that overlap none are the machine's own (e.g. CPU contention).
  uint64_t matched = 0, unmatched_reported = 0;
  for (auto& l : loops) {
    std::lock_guard<std::mutex> lock(l->mu);
    closed_long += l->closed_long;
    std::sort(l->reported.begin(), l->reported.end());
    std::vector<bool> used(l->reported.size(), false);
    for (const auto& [start, end] : l->injections) {
      auto it = std::lower_bound(l->reported.begin(), l->reported.end(),
                                 std::make_pair(start - int64_t{5'000'000'000}, int64_t{0}));
      for (; it != l->reported.end() && it->first < end; ++it) {
        if (it->second > start) {
          used[static_cast<size_t>(it - l->reported.begin())] = true;
          ++matched;
          break;
        }
      }
    }
    for (bool u : used) unmatched_reported += u ? 0 : 1;
  }
  std::printf(
      "{\"pid\":%d,\"service\":\"%s\",\"loops\":%d,\"injected\":%llu,\"agent_stalls_total\":%llu,"
      "\"agent_closed_over_100ms\":%llu,\"agent_findings_dropped\":%llu,\"injected_matched\":%llu,"
      "\"reported_not_injected\":%llu}\n",
      static_cast<int>(::getpid()), config.service.c_str(), config.loops,
      static_cast<unsigned long long>(injected), static_cast<unsigned long long>(agent_stalls),
      static_cast<unsigned long long>(closed_long), static_cast<unsigned long long>(dropped),
      static_cast<unsigned long long>(matched),
      static_cast<unsigned long long>(unmatched_reported));
  std::fflush(stdout);
  for (auto& l : loops) event_base_free(l->base);
  return 0;
}
