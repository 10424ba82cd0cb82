// Injects N blocked stalls (usleep in a named function, from an event callback) on a real loop
// with the agent attached and reports: the share of stalls whose stack is complete (the named
// function and libevent's dispatch below it), the host's sleeps that were shortened or
// interrupted (EINTR), and the time to capture one blocked stack (unwind + symbolize).
//
//   blocked_stacks_bench [stalls=1000] [stall_ms=12] [threshold_ms=4]
#include <errno.h>
#include <event2/event.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "platform/proc.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"
#include "unwinder.h"

using namespace std::chrono_literals;

namespace {

struct State {
  int remaining = 0;
  int stall_ms = 0;
  int eintr = 0;
  int shortened = 0;
  event* ev = nullptr;
};

__attribute__((noinline)) int QueryLegacyDatabase(int ms, State* s) {
  const int64_t t0 = stallwatch::MonotonicNanos();
  const int rc = usleep(ms * 1000);
  if (rc != 0 && errno == EINTR) ++s->eintr;
  if (stallwatch::MonotonicNanos() - t0 < int64_t{ms} * 1'000'000) ++s->shortened;
  return rc;
}

void OnTimer(evutil_socket_t, short, void* arg) {
  auto* s = static_cast<State*>(arg);
  if (QueryLegacyDatabase(s->stall_ms, s) != 0) std::fprintf(stderr, "usleep failed\n");
  if (--s->remaining > 0) {
    timeval tv{0, 3000};  // 3 ms idle between stalls
    evtimer_add(s->ev, &tv);
  }
}

bool Complete(const stallwatch::StallFinding& f) {
  for (const auto& st : f.stacks) {
    int fn = -1, loop = -1;
    for (size_t i = 0; i < st.frames.size(); ++i) {
      if (fn < 0 && st.frames[i].function.find("QueryLegacyDatabase") != std::string::npos) {
        fn = static_cast<int>(i);
      }
      if (st.frames[i].function == "event_base_loop") loop = static_cast<int>(i);
    }
    if (st.method == "proc" && fn >= 0 && loop > fn) return true;
  }
  return false;
}

// Time to capture one blocked stack, measured directly: a thread blocked in usleep is unwound
// from its /proc sp/pc and symbolized, `n` times.
void CaptureTiming(int n) {
  std::atomic<bool> stop{false};
  std::atomic<pid_t> tid{0};
  std::thread blocked([&] {
    tid = stallwatch::agent::platform::GetTid();
    while (!stop) usleep(200 * 1000);
  });
  while (tid == 0) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);
  stallwatch::agent::internal::Unwinder u;
  if (!u.Init().ok()) return;
  std::vector<double> us;
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    auto sys = stallwatch::agent::platform::ReadThreadSyscall(tid);
    if (!sys || sys->running) continue;
    const int64_t t0 = stallwatch::MonotonicNanos();
    stallwatch::agent::internal::UnwindInput in;
    in.tid = tid;
    in.sp = sys->sp;
    in.pc = sys->pc;
    auto frames = u.Unwind(in);
    if (frames.ok()) {
      for (const auto& f : *frames) (void)u.Symbolize(f);
      ++ok;
    }
    us.push_back((stallwatch::MonotonicNanos() - t0) / 1e3);
  }
  stop = true;
  blocked.join();
  std::sort(us.begin(), us.end());
  if (us.empty()) return;
  std::printf(
      "capture (unwind + symbolize, warm caches): n=%zu ok=%d p50=%.1f us p99=%.1f us max=%.1f "
      "us\n",
      us.size(), ok, us[us.size() / 2], us[us.size() * 99 / 100], us.back());
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 1000;
  const int stall_ms = argc > 2 ? std::atoi(argv[2]) : 12;
  const int threshold_ms = argc > 3 ? std::atoi(argv[3]) : 4;

  std::mutex mu;
  std::vector<stallwatch::StallFinding> closed;
  event_base* base = event_base_new();
  stallwatch::Options o;
  o.stall_threshold = std::chrono::milliseconds(threshold_ms);
  o.endpoint = "off";
  o.max_stack_reports_per_minute = 1'000'000;  // measure capture, not the rate limit
  o.on_stall = [&](const stallwatch::StallFinding& f) {
    if (f.ongoing) return;
    std::lock_guard<std::mutex> l(mu);
    closed.push_back(f);
  };
  auto agent = stallwatch::Agent::Attach(base, o);
  if (!agent.ok()) {
    std::fprintf(stderr, "%s\n", agent.status().ToString().c_str());
    return 1;
  }
  State s;
  s.remaining = n;
  s.stall_ms = stall_ms;
  s.ev = evtimer_new(base, OnTimer, &s);
  timeval tv{0, 50000};
  evtimer_add(s.ev, &tv);
  const int64_t t0 = stallwatch::MonotonicNanos();
  event_base_dispatch(base);
  const double secs = (stallwatch::MonotonicNanos() - t0) / 1e9;
  std::this_thread::sleep_for(300ms);
  event_free(s.ev);
  agent->reset();
  event_base_free(base);

  int complete = 0, blocked = 0, with_stack = 0;
  uint64_t failed = 0;
  for (const auto& f : closed) {
    blocked += f.stall_class == stallwatch::StallClass::kBlocked;
    with_stack += !f.stacks.empty();
    complete += Complete(f);
    failed += f.samples_failed;
  }
  std::printf("injected %d blocked stalls of %d ms (threshold %d ms) in %.1f s\n", n, stall_ms,
              threshold_ms, secs);
  std::printf(
      "reported %zu closed stalls: blocked %d, with a stack %d, complete stack %d (%.2f %% of "
      "injected)\n",
      closed.size(), blocked, with_stack, complete, 100.0 * complete / n);
  std::printf("capture failures counted: %lu\n", static_cast<unsigned long>(failed));
  std::printf("host sleeps interrupted (EINTR): %d, shortened: %d\n", s.eintr, s.shortened);
  CaptureTiming(1000);
  return 0;
}
