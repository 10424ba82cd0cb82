#include "wait_hook.h"

#include <dlfcn.h>
#include <errno.h>
#include <sys/epoll.h>

#include <mutex>
#include <new>

#include "platform/proc.h"
#include "stallwatch/common/clock.h"

namespace stallwatch::agent::internal {
namespace {

constexpr int kMaxLoops = 256;

std::atomic<int> g_high{0};  // slots [0, g_high) may be in use
std::atomic<int> g_epfd[kMaxLoops];
std::atomic<LoopState*> g_state[kMaxLoops];
std::atomic<event_base*> g_base[kMaxLoops];
std::mutex g_mu;

using EpollWaitFn = int (*)(int, epoll_event*, int, int);
using EpollPwaitFn = int (*)(int, epoll_event*, int, int, const sigset_t*);
using LoopFn = int (*)(event_base*, int);
using DispatchFn = int (*)(event_base*);

template <typename Fn>
Fn Next(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

EpollWaitFn g_real_epoll_wait = nullptr;
EpollPwaitFn g_real_epoll_pwait = nullptr;
LoopFn g_real_loop = nullptr;
DispatchFn g_real_dispatch = nullptr;

__attribute__((constructor)) void ResolveNext() {
  g_real_epoll_wait = Next<EpollWaitFn>("epoll_wait");
  g_real_epoll_pwait = Next<EpollPwaitFn>("epoll_pwait");
  g_real_loop = Next<LoopFn>("event_base_loop");
  g_real_dispatch = Next<DispatchFn>("event_base_dispatch");
}

inline LoopState* FindByEpfd(int epfd) {
  const int n = g_high.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    if (g_epfd[i].load(std::memory_order_relaxed) == epfd) {
      return g_state[i].load(std::memory_order_acquire);
    }
  }
  return nullptr;
}

inline LoopState* FindByBase(event_base* base) {
  const int n = g_high.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    if (g_base[i].load(std::memory_order_relaxed) == base) {
      return g_state[i].load(std::memory_order_acquire);
    }
  }
  return nullptr;
}

inline void BeforeWait(LoopState* s) {
  if (!s->boundaries_seen.load(std::memory_order_relaxed)) {
    EnsureLoopThread(s);
    s->boundaries_seen.store(true, std::memory_order_release);
  }
  EndBusyPeriod(s, MonotonicNanos());
}

inline void AfterWait(LoopState* s) {
  s->busy_since_ns.store(MonotonicNanos(), std::memory_order_release);
}

int RunLoop(event_base* base, int flags, bool dispatch) {
  LoopState* s = FindByBase(base);
  if (s == nullptr) {
    if (dispatch && g_real_dispatch) return g_real_dispatch(base);
    return g_real_loop ? g_real_loop(base, flags) : -1;
  }
  // event_base_dispatch may call event_base_loop through the PLT: only the outermost counts.
  static thread_local int depth = 0;
  if (depth++ == 0) {
    EnsureLoopThread(s);
    s->dispatch_hooked.store(true, std::memory_order_relaxed);
    const int64_t now = MonotonicNanos();
    s->dispatch_entered_ns.store(now, std::memory_order_relaxed);
    s->busy_since_ns.store(now, std::memory_order_release);
    s->in_dispatch.store(true, std::memory_order_release);
  }
  int r = dispatch && g_real_dispatch ? g_real_dispatch(base)
                                      : (g_real_loop ? g_real_loop(base, flags) : -1);
  if (--depth == 0) {
    const int saved = errno;
    EndBusyPeriod(s, MonotonicNanos());
    s->in_dispatch.store(false, std::memory_order_release);
    errno = saved;
  }
  return r;
}

}  // namespace

bool RegisterLoop(LoopState* s) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (int i = 0; i < kMaxLoops; ++i) {
    if (g_state[i].load(std::memory_order_relaxed) == nullptr) {
      g_epfd[i].store(-2, std::memory_order_relaxed);
      g_base[i].store(s->base, std::memory_order_relaxed);
      g_state[i].store(s, std::memory_order_release);
      if (i >= g_high.load(std::memory_order_relaxed)) {
        g_high.store(i + 1, std::memory_order_release);
      }
      return true;
    }
  }
  return false;
}

void UnregisterLoop(LoopState* s) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (int i = 0; i < kMaxLoops; ++i) {
    if (g_state[i].load(std::memory_order_relaxed) == s) {
      g_epfd[i].store(-2, std::memory_order_relaxed);
      g_base[i].store(nullptr, std::memory_order_relaxed);
      g_state[i].store(nullptr, std::memory_order_release);
    }
  }
}

void UnregisterAllLoops() {
  new (&g_mu) std::mutex();  // it may have been held by a thread that does not exist here
  for (int i = 0; i < kMaxLoops; ++i) {
    g_epfd[i].store(-2, std::memory_order_relaxed);
    g_base[i].store(nullptr, std::memory_order_relaxed);
    g_state[i].store(nullptr, std::memory_order_release);
  }
  g_high.store(0, std::memory_order_release);
}

void BindEpollFd(LoopState* s, int epfd) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (int i = 0; i < kMaxLoops; ++i) {
    if (g_state[i].load(std::memory_order_relaxed) == s) {
      s->epfd.store(epfd, std::memory_order_relaxed);
      g_epfd[i].store(epfd, std::memory_order_release);
    }
  }
}

RawSample* FindRequestedSample(pid_t tid) {
  const int n = g_high.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    LoopState* s = g_state[i].load(std::memory_order_acquire);
    if (s != nullptr && s->sample.tid == tid &&
        s->sample.state.load(std::memory_order_acquire) == RawSample::kRequested) {
      return &s->sample;
    }
  }
  return nullptr;
}

void EnsureLoopThread(LoopState* s) {
  if (s->tid.load(std::memory_order_acquire) != 0) return;
  s->thread = pthread_self();
  clockid_t id{};
  const bool ok = pthread_getcpuclockid(s->thread, &id) == 0;
  s->cpu_clock = id;
  // Published with release: the watchdog reads cpu_clock only after seeing cpu_clock_ok (acquire).
  s->cpu_clock_ok.store(ok, std::memory_order_release);
  s->tid.store(platform::GetTid(), std::memory_order_release);
}

}  // namespace stallwatch::agent::internal

using stallwatch::agent::internal::AfterWait;
using stallwatch::agent::internal::BeforeWait;
using stallwatch::agent::internal::FindByEpfd;
using stallwatch::agent::internal::LoopState;

extern "C" {

// Interposes libc's epoll_wait for the whole process; forwards to it.
__attribute__((visibility("default"))) int epoll_wait(int epfd, epoll_event* events, int maxevents,
                                                      int timeout) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_epoll_wait == nullptr, 0)) ResolveNext();
  LoopState* s = g_high.load(std::memory_order_relaxed) ? FindByEpfd(epfd) : nullptr;
  if (s == nullptr) return g_real_epoll_wait(epfd, events, maxevents, timeout);
  BeforeWait(s);
  const int r = g_real_epoll_wait(epfd, events, maxevents, timeout);
  const int saved = errno;
  AfterWait(s);
  errno = saved;
  return r;
}

__attribute__((visibility("default"))) int epoll_pwait(int epfd, epoll_event* events, int maxevents,
                                                       int timeout, const sigset_t* sigmask) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_epoll_pwait == nullptr, 0)) ResolveNext();
  LoopState* s = g_high.load(std::memory_order_relaxed) ? FindByEpfd(epfd) : nullptr;
  if (s == nullptr) return g_real_epoll_pwait(epfd, events, maxevents, timeout, sigmask);
  BeforeWait(s);
  const int r = g_real_epoll_pwait(epfd, events, maxevents, timeout, sigmask);
  const int saved = errno;
  AfterWait(s);
  errno = saved;
  return r;
}

__attribute__((visibility("default"))) int event_base_loop(event_base* base, int flags) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_loop == nullptr, 0)) ResolveNext();
  return RunLoop(base, flags, false);
}

__attribute__((visibility("default"))) int event_base_dispatch(event_base* base) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_dispatch == nullptr, 0)) ResolveNext();
  return RunLoop(base, 0, true);
}

}  // extern "C"
