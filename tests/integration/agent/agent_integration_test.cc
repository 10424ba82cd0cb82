// The agent on real libevent loops: real timers, pipes, sleeps and threads; no mocks.
#include <dirent.h>
#include <event2/event.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/stallwatch.h"

using namespace std::chrono_literals;

namespace stallwatch {
namespace {

// Collects the findings of one loop (hooks run on the agent's reporter thread).
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<StallFinding> stalls;
  std::vector<DelayFinding> delays;

  Options Hooked(Options o) {
    o.endpoint = "off";
    o.on_stall = [this](const StallFinding& f) {
      std::lock_guard<std::mutex> l(mu);
      stalls.push_back(f);
      cv.notify_all();
    };
    o.on_delay = [this](const DelayFinding& d) {
      std::lock_guard<std::mutex> l(mu);
      delays.push_back(d);
      cv.notify_all();
    };
    return o;
  }
  std::vector<StallFinding> Closed() {
    std::lock_guard<std::mutex> l(mu);
    std::vector<StallFinding> out;
    for (const auto& s : stalls) {
      if (!s.ongoing) {
        out.push_back(s);
      }
    }
    return out;
  }
  // Waits until `n` closed stalls arrived (or the timeout).
  bool WaitClosed(size_t n, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, timeout, [&] {
      size_t c = 0;
      for (const auto& s : stalls) {
        c += !s.ongoing;
      }
      return c >= n;
    });
  }
};

bool StackHas(const StallFinding& f, const std::string& fn) {
  for (const auto& s : f.stacks) {
    for (const auto& fr : s.frames) {
      if (fr.function.find(fn) != std::string::npos) {
        return true;
      }
    }
  }
  return false;
}

std::string Describe(const StallFinding& f) {
  std::string s = std::string(StallClassName(f.stall_class)) +
                  (f.estimated ? " estimated " : " exact ") + std::to_string(f.duration_s) +
                  "s syscall=" + f.syscall + " fd=" + f.fd_target + " note=" + f.sampling_note +
                  " stacks:";
  for (const auto& st : f.stacks) {
    s += "\n  [" + st.method + " x" + std::to_string(st.samples) + "]";
    for (const auto& fr : st.frames) {
      s += " " + fr.function;
    }
  }
  return s;
}

// A CPU-bound stall: class cpu, unless other processes took the cores and the finding shows
// that the thread queued for a CPU (then starved is the honest answer).
void ExpectCpuBound(const StallFinding& f) {
  if (f.stall_class == StallClass::kStarved) {
    EXPECT_GE(f.wait_ratio, 0.3) << Describe(f);
  } else {
    EXPECT_EQ(f.stall_class, StallClass::kCpu) << Describe(f);
    EXPECT_GT(f.cpu_ratio, 0.5) << Describe(f);
  }
  EXPECT_GT(f.cpu_ratio + f.wait_ratio, 0.8) << "running or runnable all along: " << Describe(f);
}

// Wall time of the last RunOnce callback, as the callback itself measured it.
std::atomic<int64_t> g_last_callback_ns{0};

// Runs one callback on a fresh loop after `delay`, with the agent attached; returns when the
// loop has nothing left to do (the probe must not keep it alive).
void RunOnce(Collector& c, Options o, std::function<void()> work,
             std::chrono::milliseconds delay = 100ms) {
  event_base* base = event_base_new();
  ASSERT_NE(base, nullptr);
  auto agent = Agent::Attach(base, c.Hooked(std::move(o)));
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  struct Ctx {
    std::function<void()> work;
  } ctx{std::move(work)};
  event* ev = evtimer_new(
      base,
      [](evutil_socket_t, short, void* arg) {
        const int64_t t0 = MonotonicNanos();
        static_cast<Ctx*>(arg)->work();
        g_last_callback_ns = MonotonicNanos() - t0;
      },
      &ctx);
  timeval tv{0, static_cast<suseconds_t>(delay.count() * 1000)};
  evtimer_add(ev, &tv);
  const int64_t t0 = MonotonicNanos();
  EXPECT_EQ(event_base_dispatch(base), 1);  // 1 = no events left: returned on its own
  EXPECT_LT(MonotonicNanos() - t0, 30'000'000'000);
  event_free(ev);
  agent->reset();
  event_base_free(base);
}

__attribute__((noinline)) void CrunchNumbersForAWhile(std::chrono::milliseconds d) {
  static thread_local volatile uint64_t sink;
  const int64_t end = MonotonicNanos() + std::chrono::nanoseconds(d).count();
  while (MonotonicNanos() < end) {
    for (int i = 0; i < 1000; ++i) {
      sink = sink * 6364136223846793005ull + 1442695040888963407ull;
    }
  }
}

__attribute__((noinline)) int64_t SleepLikeASyncDriver(std::chrono::milliseconds d) {
  const int64_t t0 = MonotonicNanos();
  std::this_thread::sleep_for(d);
  return MonotonicNanos() - t0;
}

__attribute__((noinline)) ssize_t ReadFromSlowPipe(int fd, char* buf) { return read(fd, buf, 1); }

TEST(AgentIntegration, CpuStallIsOneCpuStallWithExactDurationAndTheFunctionOnTheStack) {
  Collector c;
  RunOnce(c, {.stall_threshold = 50ms}, [] { CrunchNumbersForAWhile(150ms); });
  ASSERT_TRUE(c.WaitClosed(1));
  auto closed = c.Closed();
  ASSERT_EQ(closed.size(), 1u);
  const auto& f = closed[0];
  ExpectCpuBound(f);
  // Within 5 % of the stall, and in fact exact: the callback's own wall time (~150 ms; more
  // under a sanitizer) plus libevent's bookkeeping around it (well under a millisecond).
  const double stall_s = g_last_callback_ns.load() / 1e9;
  EXPECT_GE(stall_s, 0.150);
  EXPECT_NEAR(f.duration_s, stall_s, stall_s * 0.05) << Describe(f);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr double kBookkeeping = 0.020;  // instrumented libevent and hooks around the callback
#else
  // libevent's bookkeeping is well under a millisecond; the margin is for a preemption of the
  // loop thread between the callback's return and the next epoll_wait on a busy 2-core machine.
  // The measured figure lives in docs/benchmarks.md (bench/agent).
  constexpr double kBookkeeping = 0.005;
#endif
  EXPECT_NEAR(f.duration_s, stall_s, kBookkeeping) << Describe(f);
  EXPECT_FALSE(f.estimated) << Describe(f);
  EXPECT_TRUE(StackHas(f, "CrunchNumbersForAWhile")) << Describe(f);
  EXPECT_TRUE(StackHas(f, "event_base_loop")) << Describe(f);
  EXPECT_EQ(f.stacks[0].method, "signal");
  EXPECT_FALSE(f.hint.empty());
}

TEST(AgentIntegration, SleepIsBlockedInANamedSyscallAndIsNotShortened) {
  Collector c;
  int64_t slept = 0;
  RunOnce(c, {.stall_threshold = 50ms}, [&] { slept = SleepLikeASyncDriver(300ms); });
  EXPECT_GE(slept, 300'000'000) << "the agent interrupted the sleep";
  ASSERT_TRUE(c.WaitClosed(1));
  auto closed = c.Closed();
  ASSERT_EQ(closed.size(), 1u);
  const auto& f = closed[0];
  EXPECT_EQ(f.stall_class, StallClass::kBlocked) << Describe(f);
  EXPECT_EQ(f.syscall, "clock_nanosleep") << Describe(f);
  EXPECT_NEAR(f.duration_s, 0.300, 0.300 * 0.05) << Describe(f);
  EXPECT_LT(f.cpu_ratio, 0.2);
  // Several ongoing updates came while it lasted, all without a signal.
  size_t ongoing = 0;
  {
    std::lock_guard<std::mutex> l(c.mu);
    for (const auto& s : c.stalls) {
      ongoing += s.ongoing;
    }
  }
  EXPECT_GE(ongoing, 2u);
  for (const auto& s : f.stacks) {
    EXPECT_EQ(s.method, "proc");
  }
}

TEST(AgentIntegration, BlockingReadOnAPipeNamesThePipe) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(350ms);  // 100 ms until the callback + 250 ms blocked
    ASSERT_EQ(write(p[1], "x", 1), 1);
  });
  Collector c;
  char buf[1];
  ssize_t got = 0;
  RunOnce(c, {.stall_threshold = 50ms}, [&] { got = ReadFromSlowPipe(p[0], buf); });
  writer.join();
  EXPECT_EQ(got, 1);
  ASSERT_TRUE(c.WaitClosed(1));
  const auto f = c.Closed().at(0);
  EXPECT_EQ(f.stall_class, StallClass::kBlocked) << Describe(f);
  EXPECT_EQ(f.syscall, "read");
  char want[64];
  snprintf(want, sizeof(want), "/proc/self/fd/%d", p[0]);
  char link[64] = {};
  ASSERT_GT(readlink(want, link, sizeof(link) - 1), 0);
  EXPECT_EQ(f.fd_target, "pipe " + std::string(link).substr(5)) << Describe(f);
  close(p[0]);
  close(p[1]);
}

// Runs an idle loop (one 2 s timer, nothing else) with the agent; returns its snapshot.
LoopSnapshot IdleTwoSeconds(Collector& c) {
  event_base* base = event_base_new();
  auto agent = Agent::Attach(base, c.Hooked({.report_interval = 1s}));
  EXPECT_TRUE(agent.ok());
  event* stop = evtimer_new(
      base, [](evutil_socket_t, short, void*) {}, nullptr);
  timeval tv{2, 0};
  evtimer_add(stop, &tv);
  event_base_dispatch(base);
  auto snap = (*agent)->Snapshot();
  event_free(stop);
  agent->reset();
  event_base_free(base);
  return snap;
}

// The machine's own scheduling noise: the lateness p99 of a bare 10 ms timerfd on a thread of
// its own, over `duration`, without any agent or libevent.
std::chrono::nanoseconds SchedulingNoiseP99(std::chrono::milliseconds duration) {
  const int fd = timerfd_create(CLOCK_MONOTONIC, 0);
  const int64_t period = 10'000'000;
  int64_t due = MonotonicNanos() + period;
  itimerspec its{};
  its.it_value = {due / 1'000'000'000, due % 1'000'000'000};
  its.it_interval = {0, period};
  timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, nullptr);
  std::vector<int64_t> late;
  const int64_t end = MonotonicNanos() + std::chrono::nanoseconds(duration).count();
  while (MonotonicNanos() < end) {
    uint64_t n = 0;
    if (read(fd, &n, sizeof(n)) != sizeof(n)) {
      break;
    }
    const int64_t now = MonotonicNanos();
    for (uint64_t k = 0; k < n; ++k) {
      late.push_back(now - (due + int64_t(k) * period));
    }
    due += int64_t(n) * period;
  }
  close(fd);
  if (late.empty()) {
    return std::chrono::nanoseconds(0);
  }
  std::sort(late.begin(), late.end());
  return std::chrono::nanoseconds(late[late.size() * 99 / 100]);
}

TEST(AgentIntegration, IdleLoopHasNoStallAndALowDelay) {
  // The bound is about the agent, not about other processes on this machine's two cores: a bare
  // timer thread measures the scheduler's own lateness at the same time. Under a sanitizer the
  // margin is wider (instrumented libevent on 2 busy cores). The quiet-machine figure (p99 ~0.2
  // ms) is a benchmark's claim, in docs/benchmarks.md.
  std::chrono::nanoseconds noise{0};
  std::thread noise_thread([&] { noise = SchedulingNoiseP99(2s); });
  Collector c;
  const LoopSnapshot snap = IdleTwoSeconds(c);
  noise_thread.join();
  // Nothing is blamed on the idle loop; on a machine so busy that the thread did not get a CPU
  // for longer than the threshold, the only stall allowed is one classified as that.
  for (const auto& f : c.Closed()) {
    EXPECT_TRUE(f.stall_class == StallClass::kStarved || f.stall_class == StallClass::kSuspended)
        << Describe(f);
  }
  EXPECT_GE(snap.since_attach.count, 150u);  // ~200 ticks of 10 ms
  EXPECT_EQ(snap.boundary_source, "epoll_wait");
  {
    std::lock_guard<std::mutex> l(c.mu);
    ASSERT_FALSE(c.delays.empty());
    EXPECT_LT(c.delays.front().utilization, 0.2);
  }
  // What the agent must get right is the kind of figure, not the machine's scheduling: the delay
  // is the lateness of each tick, so an idle loop's median is far below the 10 ms period (a probe
  // that reported period + lateness, as Node's does, would show >= 10 ms), and its p99 stays well
  // under the stall threshold. The bound on p99 follows the bare timer measured at the same time,
  // with room for the two threads not being late at the same moments (observed under 4 busy
  // processes on 2 cores: agent 3.3 ms vs bare timer 1.8 ms). The quiet-machine figures
  // (p50 ~80 us, p99 ~0.2 ms) are benchmarks' claims, in docs/benchmarks.md.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  const auto p50_bound = 4ms;
  const auto p99_bound = std::max<std::chrono::nanoseconds>(10ms, 3 * noise + 4ms);
#else
  const auto p50_bound = 2ms;
  const auto p99_bound = std::max<std::chrono::nanoseconds>(5ms, 3 * noise + 2ms);
#endif
  EXPECT_LT(snap.since_attach.p50, p50_bound) << "agent p50 " << snap.since_attach.p50.count();
  EXPECT_LT(snap.since_attach.p99, p99_bound) << "agent p99 " << snap.since_attach.p99.count()
                                              << " ns, bare timer p99 " << noise.count() << " ns";
}

TEST(AgentIntegration, NeverEndingStallIsVisibleAsOngoingWhileItLasts) {
  Collector c;
  event_base* base = event_base_new();
  auto agent = Agent::Attach(base, c.Hooked({.stall_threshold = 50ms}));
  ASSERT_TRUE(agent.ok());
  std::atomic<bool> release{false};
  struct Ctx {
    std::atomic<bool>* release;
  } ctx{&release};
  event* ev = evtimer_new(
      base,
      [](evutil_socket_t, short, void* arg) {
        auto* x = static_cast<Ctx*>(arg);
        while (!x->release->load()) CrunchNumbersForAWhile(5ms);  // "infinite" loop
      },
      &ctx);
  timeval tv{0, 10000};
  evtimer_add(ev, &tv);
  std::thread loop([&] { event_base_dispatch(base); });
  // Seen as ongoing through the snapshot, from another thread, long before it ends.
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    std::this_thread::sleep_for(20ms);
    auto s = (*agent)->Snapshot();
    seen = s.ongoing.has_value() && s.ongoing->ongoing && s.ongoing->duration_s > 0.05;
  }
  EXPECT_TRUE(seen);
  std::this_thread::sleep_for(300ms);
  auto s = (*agent)->Snapshot();
  ASSERT_TRUE(s.ongoing.has_value());
  EXPECT_GT(s.ongoing->duration_s, 0.3);
  ExpectCpuBound(*s.ongoing);
  release = true;
  loop.join();
  ASSERT_TRUE(c.WaitClosed(1));
  event_free(ev);
  agent->reset();
  event_base_free(base);
}

TEST(AgentIntegration, FourLoopsOnFourThreadsAreIndependent) {
  constexpr int kLoops = 4;
  Collector c[kLoops];
  std::atomic<int64_t> wall_ns[kLoops] = {};
  std::vector<std::thread> threads;
  threads.reserve(kLoops);
  for (int i = 0; i < kLoops; ++i) {
    threads.emplace_back([&, i] {
      Options o{.loop_name = "worker-" + std::to_string(i), .stall_threshold = 50ms};
      // Loop i stalls for 100 ms * (i + 1); loop 0 sleeps, the others burn CPU.
      RunOnce(c[i], o, [&, i] {
        const int64_t t0 = MonotonicNanos();
        if (i == 0) {
          SleepLikeASyncDriver(100ms);
        } else {
          CrunchNumbersForAWhile(std::chrono::milliseconds(100 * (i + 1)));
        }
        wall_ns[i] = MonotonicNanos() - t0;
      });
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  for (int i = 0; i < kLoops; ++i) {
    ASSERT_TRUE(c[i].WaitClosed(1)) << i;
    auto closed = c[i].Closed();
    ASSERT_EQ(closed.size(), 1u) << i;
    EXPECT_EQ(closed[0].loop, "worker-" + std::to_string(i));
    // Each loop's stall is its own callback's, not another loop's: at least the callback's
    // wall time (which grows with contention: three burners and a sleeper on two cores), and
    // not much more (the margin allows a preemption before the loop waits again).
    const double wall_s = wall_ns[i].load() / 1e9;
    EXPECT_GE(wall_s, 0.1 * (i + 1)) << i;
    EXPECT_GE(closed[0].duration_s, wall_s * 0.99) << i << " " << Describe(closed[0]);
    EXPECT_LT(closed[0].duration_s, wall_s + 0.030) << i << " " << Describe(closed[0]);
    EXPECT_EQ(closed[0].stall_class, i == 0 ? StallClass::kBlocked : closed[0].stall_class);
    EXPECT_NE(closed[0].stall_class, StallClass::kUnknown) << Describe(closed[0]);
  }
}

int CountDir(const char* path) {
  int n = 0;
  if (DIR* d = opendir(path)) {
    while (readdir(d)) {
      ++n;
    }
    closedir(d);
  }
  return n;
}

TEST(AgentIntegration, AttachDetachThousandTimesLeaksNothing) {
  const int sig = SIGRTMIN + 3;
  struct sigaction before {};
  sigaction(sig, nullptr, &before);
  // Warm-up (first-use allocations of libc/libdw), then measure.
  {
    event_base* base = event_base_new();
    auto a = Agent::Attach(base, {.endpoint = "off"});
    ASSERT_TRUE(a.ok());
    a->reset();
    event_base_free(base);
  }
  const int fds = CountDir("/proc/self/fd");
  const int threads = CountDir("/proc/self/task");
  for (int i = 0; i < 1000; ++i) {
    event_base* base = event_base_new();
    auto a = Agent::Attach(base, {.endpoint = "off"});
    ASSERT_TRUE(a.ok()) << i;
    event_base_loop(base, EVLOOP_NONBLOCK);
    a->reset();
    event_base_free(base);
  }
  EXPECT_EQ(CountDir("/proc/self/fd"), fds);
  // A joined thread's /proc entry goes a moment after pthread_join returns (the kernel wakes the
  // joiner before it has released the task, e.g. while it closes the thread's own file table).
  int now_threads = CountDir("/proc/self/task");
  for (int i = 0; i < 200 && now_threads != threads; ++i) {
    std::this_thread::sleep_for(10ms);
    now_threads = CountDir("/proc/self/task");
  }
  EXPECT_EQ(now_threads, threads);
  struct sigaction after {};
  sigaction(sig, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);  // handler removed with the last agent
}

std::map<int, std::string> HostFds() {
  std::map<int, std::string> out;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') {
        continue;
      }
      char path[300], target[4096];
      std::snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
      const ssize_t n = readlink(path, target, sizeof(target) - 1);
      if (n > 0) {
        out[std::atoi(e->d_name)] = std::string(target, static_cast<size_t>(n));
      }
    }
    closedir(d);
  }
  return out;
}

// The agent's threads keep their files (ELF files of the unwinder, the sink's file or socket)
// in file tables of their own: attaching adds exactly one fd to the host's table, the probe's
// timerfd, even after stacks were unwound and findings written. Hooks run on a thread that does
// share the host's table, so a hook can write to the host's fds.
TEST(AgentIntegration, TheHostSeesOnlyTheProbesFdAndHooksCanUseTheHostsFds) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP()
      << "under ThreadSanitizer the agent keeps the host's file table (see DetachFileTable)";
#endif
  char dir[] = "/tmp/sw-fds-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string out_path = std::string(dir) + "/findings.jsonl";
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  event_base* base = event_base_new();
  const auto before = HostFds();
  Collector c;
  Options o = c.Hooked({.stall_threshold = 50ms});
  o.endpoint = "file:" + out_path;
  auto hooked_stall = o.on_stall;
  o.on_stall = [&, hooked_stall](const StallFinding& f) {
    if (!f.ongoing) {
      EXPECT_EQ(write(p[1], "s", 1), 1) << "a hook cannot write to a host fd";
    }
    hooked_stall(f);
  };
  auto agent = Agent::Attach(base, o);
  ASSERT_TRUE(agent.ok());
  event* ev = evtimer_new(
      base, [](evutil_socket_t, short, void*) { CrunchNumbersForAWhile(150ms); }, nullptr);
  timeval tv{1, 0};  // after the unwinder's warm-up, so the stall comes with a stack
  evtimer_add(ev, &tv);
  EXPECT_EQ(event_base_dispatch(base), 1);
  ASSERT_TRUE(c.WaitClosed(1));
  const auto closed = c.Closed();
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_FALSE(closed[0].stacks.empty()) << Describe(closed[0]);
  char byte = 0;
  EXPECT_EQ(read(p[0], &byte, 1), 1);
  EXPECT_EQ(byte, 's');
  std::vector<std::string> added;
  for (const auto& [fd, target] : HostFds()) {
    auto it = before.find(fd);
    if (it == before.end() || it->second != target) {
      added.push_back(target);
    }
  }
  ASSERT_EQ(added.size(), 2u) << ::testing::PrintToString(added);  // + the listing's own fd
  EXPECT_EQ(std::count(added.begin(), added.end(), "anon_inode:[timerfd]"), 1)
      << ::testing::PrintToString(added);
  event_free(ev);
  agent->reset();
  event_base_free(base);
  std::string findings;
  if (FILE* f = std::fopen(out_path.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
      findings.append(buf, n);
    }
    std::fclose(f);
  }
  EXPECT_NE(findings.find("\"kind\":\"stall\""), std::string::npos) << findings;
  close(p[0]);
  close(p[1]);
  std::remove(out_path.c_str());
  rmdir(dir);
}

std::atomic<int> g_host_handler_calls{0};
void HostHandler(int) { g_host_handler_calls.fetch_add(1); }

// One CPU stall of 150 ms, 1 s after attach (the unwinder is warm by then).
std::vector<StallFinding> OneCpuStallOnThisThread(event_base* base, Collector& c) {
  event* ev = evtimer_new(
      base, [](evutil_socket_t, short, void*) { CrunchNumbersForAWhile(150ms); }, nullptr);
  timeval tv{1, 0};
  evtimer_add(ev, &tv);
  EXPECT_EQ(event_base_dispatch(base), 1);
  event_free(ev);
  EXPECT_TRUE(c.WaitClosed(1));
  return c.Closed();
}

// A host that installs its own handler for the agent's signal after the agent did: the agent
// notices before it would signal, never runs the host's handler, says why stacks of running
// threads are missing, and leaves the host's handler in place when it detaches.
// A hook may attach and detach loops itself (here: an idle loop of its own, attached with hooks
// and detached again, from inside the first loop's stall hook). Hooks run with no agent lock
// held, so this neither deadlocks nor stops the first loop's findings.
TEST(AgentIntegration, AHookCanAttachAndDetachALoopWithHooksOfItsOwn) {
  Collector c;
  std::atomic<int> inner_attached{0};
  std::atomic<bool> inner_done{false};
  Options o = c.Hooked({.stall_threshold = 50ms});
  auto collect = o.on_stall;
  o.on_stall = [&, collect](const StallFinding& f) {
    if (!f.ongoing && !inner_done.load()) {
      event_base* inner = event_base_new();
      Options io{.loop_name = "inner-loop", .endpoint = "off"};
      io.on_delay = [](const DelayFinding&) {};
      {
        auto a = Agent::Attach(inner, io);  // SetHooks, on the hook thread
        if (a.ok()) {
          inner_attached.fetch_add(1);
        }
      }  // detach: FlushAndRemoveHooks, on the hook thread
      event_base_free(inner);
      inner_done.store(true);
    }
    collect(f);
  };
  event_base* base = event_base_new();
  ASSERT_NE(base, nullptr);
  auto agent = Agent::Attach(base, o);  // not RunOnce: it would set the collector's hooks
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  event* ev = evtimer_new(
      base, [](evutil_socket_t, short, void*) { CrunchNumbersForAWhile(120ms); }, nullptr);
  timeval tv{0, 100'000};
  evtimer_add(ev, &tv);
  EXPECT_EQ(event_base_dispatch(base), 1);
  ASSERT_TRUE(c.WaitClosed(1)) << "the stall did not reach the hooks";
  for (int i = 0; i < 100 && !inner_done.load(); ++i) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(inner_done.load()) << "the hook did not return: attaching from a hook deadlocked";
  EXPECT_EQ(inner_attached.load(), 1);
  event_free(ev);
  agent->reset();
  event_base_free(base);
}

TEST(AgentIntegration, HostHandlerForTheSamplingSignalIsNeverRunAndStaysInstalled) {
  const int sig = SIGRTMIN + 3;  // the default sampling signal
  Collector c;
  event_base* base = event_base_new();
  auto agent = Agent::Attach(base, c.Hooked({.stall_threshold = 50ms}));
  ASSERT_TRUE(agent.ok());
  struct sigaction host {
  }, original{};
  host.sa_handler = HostHandler;
  sigemptyset(&host.sa_mask);
  ASSERT_EQ(sigaction(sig, &host, &original), 0);
  g_host_handler_calls = 0;
  const auto closed = OneCpuStallOnThisThread(base, c);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(g_host_handler_calls.load(), 0) << "the agent signalled into the host's handler";
  EXPECT_TRUE(closed[0].stacks.empty()) << Describe(closed[0]);
  EXPECT_NE(closed[0].sampling_note.find("handler"), std::string::npos) << Describe(closed[0]);
  EXPECT_NE((*agent)->Snapshot().sampling_status.find("handler"), std::string::npos);
  agent->reset();
  event_base_free(base);
  struct sigaction after {};
  ASSERT_EQ(sigaction(sig, nullptr, &after), 0);
  EXPECT_EQ(after.sa_handler, &HostHandler) << "detaching removed the host's handler";
  sigaction(sig, &original, nullptr);
}

// A loop thread that blocks the agent's signal (e.g. to take it with sigwait or signalfd) is
// never sent it: nothing is left pending for the host to receive as its own.
TEST(AgentIntegration, LoopThreadThatBlocksTheSamplingSignalIsNeverSignalled) {
  const int sig = SIGRTMIN + 3;
  sigset_t block, before;
  sigemptyset(&block);
  sigaddset(&block, sig);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &before), 0);
  Collector c;
  event_base* base = event_base_new();
  auto agent = Agent::Attach(base, c.Hooked({.stall_threshold = 50ms}));
  ASSERT_TRUE(agent.ok());
  const auto closed = OneCpuStallOnThisThread(base, c);
  ASSERT_EQ(closed.size(), 1u);
  sigset_t pending;
  sigemptyset(&pending);
  ASSERT_EQ(sigpending(&pending), 0);
  EXPECT_FALSE(sigismember(&pending, sig)) << "the agent left its signal pending for the host";
  EXPECT_NE(closed[0].sampling_note.find("blocked"), std::string::npos) << Describe(closed[0]);
  ExpectCpuBound(closed[0]);  // classified all the same
  agent->reset();
  event_base_free(base);
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

TEST(AgentIntegration, CApiAttachesAndSnapshots) {
  setenv("STALLWATCH_ENDPOINT", "off", 1);
  event_base* base = event_base_new();
  stallwatch_agent* a = stallwatch_attach(base, "c-loop");
  ASSERT_NE(a, nullptr);
  event_base_loop(base, EVLOOP_NONBLOCK);
  char buf[4096];
  const size_t n = stallwatch_snapshot_json(a, buf, sizeof(buf));
  EXPECT_GT(n, 0u);
  EXPECT_NE(std::string(buf).find("\"loop\":\"c-loop\""), std::string::npos) << buf;
  stallwatch_detach(a);
  stallwatch_detach(nullptr);
  EXPECT_EQ(stallwatch_attach(nullptr, "x"), nullptr);
  event_base_free(base);
  unsetenv("STALLWATCH_ENDPOINT");
}

TEST(AgentIntegration, JsonLinesFileEndpointGetsFindings) {
  char path[] = "/tmp/stallwatch-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    event_base* base = event_base_new();
    auto a = Agent::Attach(base, {.stall_threshold = 30ms,
                                  .report_interval = 200ms,
                                  .endpoint = std::string("file:") + path});
    ASSERT_TRUE(a.ok());
    event* ev = evtimer_new(
        base, [](evutil_socket_t, short, void*) { CrunchNumbersForAWhile(80ms); }, nullptr);
    timeval tv{0, 50000};
    evtimer_add(ev, &tv);
    event_base_dispatch(base);
    event_free(ev);
    a->reset();  // the reporter flushes what it has
    event_base_free(base);
  }
  FILE* f = fopen(path, "r");
  ASSERT_NE(f, nullptr);
  char line[65536];
  int stalls = 0, delays = 0;
  while (fgets(line, sizeof(line), f)) {
    std::string s(line);
    stalls += s.find("\"kind\":\"stall\"") != std::string::npos &&
              s.find("\"ongoing\":false") != std::string::npos;
    delays += s.find("\"kind\":\"delay\"") != std::string::npos;
  }
  fclose(f);
  unlink(path);
  EXPECT_EQ(stalls, 1);
  EXPECT_GE(delays, 1);
}

TEST(AgentIntegration, SuspendedProcessIsNotBlamedOnTheLoop) {
  Collector c;
  const pid_t self = getpid();
  RunOnce(c, {.stall_threshold = 50ms}, [&] {
    // A child stops this whole process for 400 ms while the loop is in a short CPU burst.
    const pid_t child = fork();
    if (child == 0) {
      kill(self, SIGSTOP);
      usleep(400 * 1000);
      kill(self, SIGCONT);
      _exit(0);
    }
    CrunchNumbersForAWhile(100ms);
    waitpid(child, nullptr, 0);
  });
  ASSERT_TRUE(c.WaitClosed(1));
  const auto f = c.Closed().at(0);
  EXPECT_EQ(f.stall_class, StallClass::kSuspended) << Describe(f);
  EXPECT_GT(f.duration_s, 0.4);
}

}  // namespace
}  // namespace stallwatch

namespace stallwatch {
namespace {

// The opt-in mode signals blocked threads too: stacks come from the signal, and the documented
// caveat is real — a sleeping loop thread is woken with EINTR.
TEST(AgentIntegrationSignalAll, BlockedThreadIsSignalledAndItsSleepIsInterrupted) {
  Collector c;
  int rc = 0, err = 0;
  RunOnce(c, {.stall_threshold = 50ms, .sampling = SamplingMode::kSignalAll}, [&] {
    rc = usleep(400 * 1000);
    err = errno;
  });
  ASSERT_TRUE(c.WaitClosed(1));
  const auto f = c.Closed().at(0);
  ASSERT_FALSE(f.stacks.empty()) << Describe(f);
  EXPECT_EQ(f.stacks[0].method, "signal") << Describe(f);
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, EINTR);
  EXPECT_LT(f.duration_s, 0.4);  // the host's sleep was cut short: why it is not the default
}

}  // namespace
}  // namespace stallwatch

namespace stallwatch {
namespace {

// A daemon that is not there holds findings in the (bounded) queue, but in-process consumers get
// every finding at once.
TEST(AgentIntegrationEndpoint, HooksGetFindingsWhileTheDaemonIsAbsent) {
  Collector c;
  Options o{.stall_threshold = 50ms};
  o = c.Hooked(o);
  o.endpoint = "unix:/tmp/stallwatch-no-daemon-here.sock";
  event_base* base = event_base_new();
  auto agent = Agent::Attach(base, o);
  ASSERT_TRUE(agent.ok());
  event* ev = evtimer_new(
      base,
      [](evutil_socket_t, short, void*) {
        CrunchNumbersForAWhile(80ms);
        SleepLikeASyncDriver(80ms);
      },
      nullptr);
  timeval tv{0, 20000};
  evtimer_add(ev, &tv);
  event_base_dispatch(base);
  EXPECT_TRUE(c.WaitClosed(1, 3s));
  event_free(ev);
  agent->reset();
  event_base_free(base);
}

}  // namespace
}  // namespace stallwatch
