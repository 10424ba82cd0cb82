// Google Benchmark microbenchmarks of the agent's per-iteration path on the loop thread: the
// epoll_wait interposer (watched and unwatched epoll fds, a foreign epoll loop's) and a whole
// non-blocking event_base_loop iteration with and without the agent attached (no probe tick due).
//
//   sw_bench_hooks [--benchmark_repetitions=5 --benchmark_report_aggregates_only=true]

#include <benchmark/benchmark.h>
#include <event2/event.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <memory>

#include "bench_util.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"

namespace {

event_base* g_watched_base = nullptr;
event_base* g_plain_base = nullptr;
int g_watched_epfd = -1;
int g_plain_epfd = -1;
int g_foreign_epfd = -1;  // a plain epoll fd the agent watches as a foreign loop (AttachEpoll)

// The most recently opened epoll fd of the process (event_base_new just created it).
int NewestEpollFd() {
  int best = -1;
  for (int fd = 0; fd < 1024; ++fd) {
    char link[64] = {};
    const std::string p = "/proc/self/fd/" + std::to_string(fd);
    if (readlink(p.c_str(), link, sizeof link - 1) > 0 &&
        std::string(link) == "anon_inode:[eventpoll]") {
      best = fd;
    }
  }
  return best;
}

void BM_MonotonicNanos(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(stallwatch::MonotonicNanos());
  }
}
BENCHMARK(BM_MonotonicNanos);

void BM_EpollWait0_RawSyscall(benchmark::State& state) {
  epoll_event ev[8];
  for (auto _ : state) {
    benchmark::DoNotOptimize(syscall(SYS_epoll_wait, g_plain_epfd, ev, 8, 0));
  }
}
BENCHMARK(BM_EpollWait0_RawSyscall);

void BM_EpollWait0_Interposed_Unwatched(benchmark::State& state) {
  epoll_event ev[8];
  for (auto _ : state) {
    benchmark::DoNotOptimize(epoll_wait(g_plain_epfd, ev, 8, 0));
  }
}
BENCHMARK(BM_EpollWait0_Interposed_Unwatched);

void BM_EpollWait0_Interposed_Watched(benchmark::State& state) {
  epoll_event ev[8];
  for (auto _ : state) {
    benchmark::DoNotOptimize(epoll_wait(g_watched_epfd, ev, 8, 0));
  }
}
BENCHMARK(BM_EpollWait0_Interposed_Watched);

// A foreign (non-libevent) loop's wait: the agent waits on its own epoll fd holding the host's
// and the probe's timerfd (docs/design.md "Foreign loops"), then reads the host's events.
void BM_EpollWait0_Interposed_EpollLoop(benchmark::State& state) {
  epoll_event ev[8];
  for (auto _ : state) {
    benchmark::DoNotOptimize(epoll_wait(g_foreign_epfd, ev, 8, 0));
  }
}
BENCHMARK(BM_EpollWait0_Interposed_EpollLoop);

void BM_EpollPwait0_Interposed_EpollLoop(benchmark::State& state) {
  epoll_event ev[8];
  for (auto _ : state) {
    benchmark::DoNotOptimize(epoll_pwait(g_foreign_epfd, ev, 8, 0, nullptr));
  }
}
BENCHMARK(BM_EpollPwait0_Interposed_EpollLoop);

void BM_LoopNonblock_NoAgent(benchmark::State& state) {
  for (auto _ : state) {
    event_base_loop(g_plain_base, EVLOOP_NONBLOCK | EVLOOP_NO_EXIT_ON_EMPTY);
  }
}
BENCHMARK(BM_LoopNonblock_NoAgent);

void BM_LoopNonblock_Agent(benchmark::State& state) {
  for (auto _ : state) {
    event_base_loop(g_watched_base, EVLOOP_NONBLOCK | EVLOOP_NO_EXIT_ON_EMPTY);
  }
}
BENCHMARK(BM_LoopNonblock_Agent);

}  // namespace

int main(int argc, char** argv) {
  stallwatch::bench::PrintHeader("hooks micro");
  g_plain_base = event_base_new();
  g_plain_epfd = NewestEpollFd();
  g_watched_base = event_base_new();
  g_watched_epfd = NewestEpollFd();
  stallwatch::Options o;
  o.endpoint = "off";
  o.probe_interval = std::chrono::seconds(3600);  // no tick during the measurement
  auto agent = stallwatch::Agent::Attach(g_watched_base, o);
  if (!agent.ok()) {
    return 1;
  }
  g_foreign_epfd = epoll_create1(EPOLL_CLOEXEC);
  auto foreign = stallwatch::Agent::AttachEpoll(g_foreign_epfd, o);
  if (!foreign.ok()) {
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  agent->reset();
  foreign->reset();
  close(g_foreign_epfd);
  event_base_free(g_watched_base);
  event_base_free(g_plain_base);
  return 0;
}
