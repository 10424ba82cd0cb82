#include "wait_hook.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <new>

#include "epoll_loop.h"
#include "ledger.h"
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
// Bases watched in the parent, forgotten by a forked child (UnregisterAllLoops); cleared as the
// child re-attaches them.
std::atomic<event_base*> g_forgotten[kMaxLoops];
std::atomic<void (*)(event_base*)> g_reattach{nullptr};
// Each slot's probe key while its probe is in the host's epoll set (0: none), read without a
// ScanGuard (a number, never a state).
std::atomic<uint64_t> g_probe_key[kMaxLoops];
// A forked child's inherited keys (UnregisterAllLoops); the oldest is replaced when full.
constexpr int kMaxInheritedKeys = 256;
std::atomic<uint64_t> g_inherited_keys[kMaxInheritedKeys];
std::atomic<int> g_inherited_n{0};
std::atomic<int> g_inherited_next{0};
// Epoll fds this process created (one bit per fd number below kBornFds), cleared on close() and
// in a forked child.
constexpr int kBornFds = 1 << 16;
std::atomic<uint64_t> g_born[kBornFds / 64];

void MarkBorn(int fd, bool born) {
  // The agent's own threads have file tables of their own: their fd numbers are not the host's.
  if (fd < 0 || fd >= kBornFds || platform::HasPrivateFileTable()) {
    return;
  }
  const uint64_t bit = uint64_t{1} << (fd % 64);
  if (born) {
    g_born[fd / 64].fetch_or(bit, std::memory_order_relaxed);
  } else if ((g_born[fd / 64].load(std::memory_order_relaxed) & bit) != 0) {
    g_born[fd / 64].fetch_and(~bit, std::memory_order_relaxed);
  }
}

// Threads that read states they do not own from the table (close() on any thread, a wait on an
// epoll fd another thread's loop is bound to, the sampling signal's handler) count themselves in
// while they do; UnregisterLoop waits for the count to drain, so its caller frees a state no one
// is reading. Sequentially consistent: either a scan counts itself in before UnregisterLoop
// reads the count, or it reads the slot after UnregisterLoop emptied it. Async-signal safe.
std::atomic<int> g_scanners{0};

class ScanGuard {
 public:
  ScanGuard() { g_scanners.fetch_add(1, std::memory_order_seq_cst); }
  ~ScanGuard() { g_scanners.fetch_sub(1, std::memory_order_release); }
  ScanGuard(const ScanGuard&) = delete;
  ScanGuard& operator=(const ScanGuard&) = delete;
};

using EpollWaitFn = int (*)(int, epoll_event*, int, int);
using EpollPwaitFn = int (*)(int, epoll_event*, int, int, const sigset_t*);
using EpollPwait2Fn = int (*)(int, epoll_event*, int, const timespec*, const sigset_t*);
using CloseFn = int (*)(int);
using EpollCreateFn = int (*)(int);
using LoopFn = int (*)(event_base*, int);
using DispatchFn = int (*)(event_base*);

template <typename Fn>
Fn Next(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

EpollWaitFn g_real_epoll_wait = nullptr;
EpollPwaitFn g_real_epoll_pwait = nullptr;
EpollPwait2Fn g_real_epoll_pwait2 = nullptr;
CloseFn g_real_close = nullptr;
EpollCreateFn g_real_epoll_create = nullptr;
EpollCreateFn g_real_epoll_create1 = nullptr;
LoopFn g_real_loop = nullptr;
DispatchFn g_real_dispatch = nullptr;

// In a forked child every epoll set open is the parent's too: none was created here. Registered
// at load, whether or not a loop was ever attached (a parent that only forks has no runtime).
void ForgetBornFds() {
  for (auto& word : g_born) {
    word.store(0, std::memory_order_relaxed);
  }
}

__attribute__((constructor)) void ResolveNext() {
  static const bool atfork = pthread_atfork(nullptr, nullptr, ForgetBornFds) == 0;
  (void)atfork;
  g_real_epoll_wait = Next<EpollWaitFn>("epoll_wait");
  g_real_epoll_pwait = Next<EpollPwaitFn>("epoll_pwait");
  g_real_epoll_pwait2 = Next<EpollPwait2Fn>("epoll_pwait2");
  g_real_close = Next<CloseFn>("close");
  g_real_epoll_create = Next<EpollCreateFn>("epoll_create");
  g_real_epoll_create1 = Next<EpollCreateFn>("epoll_create1");
  g_real_loop = Next<LoopFn>("event_base_loop");
  g_real_dispatch = Next<DispatchFn>("event_base_dispatch");
}

// The slot holding `epfd`, or -1. Reads fd numbers only, never a state: it needs no ScanGuard.
inline int SlotOfEpfd(int epfd) {
  const int n = g_high.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    if (g_epfd[i].load(std::memory_order_relaxed) == epfd) {
      return i;
    }
  }
  return -1;
}

// Under a ScanGuard when the state may be another thread's.
inline LoopState* FindByEpfd(int epfd) {
  const int i = SlotOfEpfd(epfd);
  return i < 0 ? nullptr : g_state[i].load(std::memory_order_seq_cst);
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

// Returns the time it read (the end of the busy period, the start of the wait).
inline int64_t BeforeWait(LoopState* s) {
  if (!s->boundaries_seen.load(std::memory_order_relaxed)) {
    EnsureLoopThread(s);
    s->boundaries_seen.store(true, std::memory_order_release);
  }
  const int64_t now = MonotonicNanos();
  EndBusyPeriod(s, now);
  return now;
}

// `woke_ns`: the time read after the wait returned, or 0 when none was read.
inline void AfterWait(LoopState* s, int64_t woke_ns = 0) {
  s->busy_since_ns.store(woke_ns != 0 ? woke_ns : MonotonicNanos(), std::memory_order_release);
  t_ledger.loop = LedgerEnabled() ? s : nullptr;  // busy again: its calls go to its ledger
}

// Depth of watched libevent dispatches on this thread: their waits are never discovered as
// epoll loops of their own.
thread_local int t_dispatch_depth = 0;

// The loop this wait is a boundary of, or nullptr: a loop bound to `epfd` and run by this
// thread, else one that discovery attaches now. A wait on an fd no slot holds (any thread that
// is not a loop) takes no ScanGuard: no atomic read-modify-write on that path. `*probe_key`:
// the key of a probe in that epoll set, whose events a wait passed through must drop (0: none).
inline LoopState* LoopOfWait(int epfd, uint64_t* probe_key) {
  LoopState* s = nullptr;
  if (const int slot = SlotOfEpfd(epfd); slot >= 0) {
    if (LoopState* own = ThisThreadsLoop(epfd); own != nullptr) {
      return own;  // the common case: a discovered loop's own wait, no table read, no guard
    }
    *probe_key = g_probe_key[slot].load(std::memory_order_acquire);
    const ScanGuard guard;  // the state may be another thread's loop, detaching now
    // The slot is read again under the guard: it may have been emptied or reused meanwhile.
    s = g_epfd[slot].load(std::memory_order_relaxed) == epfd
            ? g_state[slot].load(std::memory_order_seq_cst)
            : FindByEpfd(epfd);
    if (s != nullptr && s->kind == LoopState::kEpoll &&
        s->tid.load(std::memory_order_acquire) != 0 && !pthread_equal(s->thread, pthread_self())) {
      // An epoll fd shared by threads: the loop is the thread that found it, and its probe
      // leaves the shared set at the loop's next wait (this thread would take its ticks).
      if (s->probe_inline.load(std::memory_order_relaxed)) {
        s->probe_shared.store(true, std::memory_order_relaxed);
      }
      return nullptr;
    }
  }
  if (s == nullptr) {
    return EpollDiscoveryEnabled() ? DiscoverLoop(epfd) : nullptr;
  }
  return s;
}

// An epoll loop's wait (epoll_loop.h), between its busy periods. timeout_ns < 0: none.
int EpollLoopWait(LoopState* s, int epfd, epoll_event* events, int maxevents, int64_t timeout_ns,
                  const sigset_t* sigmask, WaitCall call) {
  const int64_t now = BeforeWait(s);
  int64_t woke = 0;
  const int r = LoopWait(s, epfd, events, maxevents, timeout_ns, sigmask, call, now, &woke);
  const int saved = errno;
  AfterWait(s, woke);
  errno = saved;
  return r;
}

int64_t MillisToNanos(int timeout_ms) {
  return timeout_ms < 0 ? -1 : int64_t{timeout_ms} * 1'000'000;
}

// A base the parent watched, run by a forked child: attached again, now, for the child.
LoopState* Reattached(event_base* base) {
  auto* hook = g_reattach.load(std::memory_order_acquire);
  if (hook == nullptr || base == nullptr) {
    return nullptr;
  }
  for (auto& f : g_forgotten) {
    event_base* expected = base;
    if (f.load(std::memory_order_relaxed) == base && f.compare_exchange_strong(expected, nullptr)) {
      hook(base);
      return FindByBase(base);
    }
  }
  return nullptr;
}

int RunLoop(event_base* base, int flags, bool dispatch) {
  LoopState* s = FindByBase(base);
  if (s == nullptr) {
    s = Reattached(base);
  }
  if (s == nullptr) {
    if (dispatch && g_real_dispatch) {
      return g_real_dispatch(base);
    }
    return g_real_loop ? g_real_loop(base, flags) : -1;
  }
  // event_base_dispatch may call event_base_loop through the PLT: only the outermost counts.
  int& depth = t_dispatch_depth;
  if (depth++ == 0) {
    EnsureLoopThread(s);
    s->dispatch_hooked.store(true, std::memory_order_relaxed);
    const int64_t now = MonotonicNanos();
    s->dispatch_entered_ns.store(now, std::memory_order_relaxed);
    s->busy_since_ns.store(now, std::memory_order_release);
    s->in_dispatch.store(true, std::memory_order_release);
    t_ledger.loop = LedgerEnabled() ? s : nullptr;
  }
  int r = dispatch && g_real_dispatch ? g_real_dispatch(base)
                                      : (g_real_loop ? g_real_loop(base, flags) : -1);
  if (--depth == 0) {
    const int saved = errno;
    EndBusyPeriod(s, MonotonicNanos());
    s->in_dispatch.store(false, std::memory_order_release);
    t_ledger.loop = nullptr;
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
      g_probe_key[i].store(0, std::memory_order_relaxed);
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
      g_probe_key[i].store(0, std::memory_order_relaxed);
      g_state[i].store(nullptr, std::memory_order_seq_cst);
    }
  }
  if (t_ledger.loop == s) {
    t_ledger.loop = nullptr;  // detached on its own thread: nothing is recorded into it again
  }
  while (g_scanners.load(std::memory_order_seq_cst) != 0) {
    sched_yield();  // a scan is short: no blocking call in it
  }
}

void UnregisterAllLoops() {
  new (&g_mu) std::mutex();  // it may have been held by a thread that does not exist here
  // Every epoll fd open now is the parent's too; the parent's probes in them stay there (the
  // parent holds their timerfds) and are dropped from this process's waits.
  ForgetBornFds();
  for (int i = 0; i < kMaxLoops; ++i) {
    if (const uint64_t key = g_probe_key[i].exchange(0, std::memory_order_relaxed); key != 0) {
      const int at = g_inherited_next.fetch_add(1, std::memory_order_relaxed) % kMaxInheritedKeys;
      g_inherited_keys[at].store(key, std::memory_order_relaxed);
      if (g_inherited_n.load(std::memory_order_relaxed) < kMaxInheritedKeys) {
        g_inherited_n.fetch_add(1, std::memory_order_release);
      }
    }
  }
  for (int i = 0; i < kMaxLoops; ++i) {
    // An epoll loop's own fds are the parent's (a timerfd shared with it would hand the parent's
    // ticks to whichever process reads first): the child closes its copies.
    g_forgotten[i].store(g_base[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
    if (LoopState* s = g_state[i].load(std::memory_order_relaxed);
        s != nullptr && s->kind == LoopState::kEpoll) {
      if (const int fd = s->wait_fd.exchange(-1); fd >= 0) {
        syscall(SYS_close, fd);
      }
      if (const int fd = s->probe_fd.exchange(-1); fd >= 0) {
        syscall(SYS_close, fd);
      }
    }
    g_epfd[i].store(-2, std::memory_order_relaxed);
    g_base[i].store(nullptr, std::memory_order_relaxed);
    g_state[i].store(nullptr, std::memory_order_release);
  }
  g_high.store(0, std::memory_order_release);
  g_scanners.store(0, std::memory_order_seq_cst);  // counted in by threads that do not exist here
  ForgetDiscoveredLoops();
}

LoopState* FindLoopByEpfd(int epfd) {
  const ScanGuard guard;
  return FindByEpfd(epfd);
}

void SetProbeKey(LoopState* s, uint64_t key) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (int i = 0; i < kMaxLoops; ++i) {
    if (g_state[i].load(std::memory_order_relaxed) == s) {
      g_probe_key[i].store(key, std::memory_order_release);
    }
  }
}

bool HaveInheritedProbeKeys() { return g_inherited_n.load(std::memory_order_relaxed) != 0; }

bool IsInheritedProbeKey(uint64_t data) {
  const int n = g_inherited_n.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    if (g_inherited_keys[i].load(std::memory_order_relaxed) == data) {
      return true;
    }
  }
  return false;
}

bool EpfdCreatedHere(int epfd) {
  if (epfd < 0 || epfd >= kBornFds) {
    return false;
  }
  return (g_born[epfd / 64].load(std::memory_order_relaxed) & (uint64_t{1} << (epfd % 64))) != 0;
}

void SetReattachHook(void (*hook)(event_base* base)) {
  g_reattach.store(hook, std::memory_order_release);
}

bool InWatchedDispatch() { return t_dispatch_depth > 0; }

void MarkLoopClosed(LoopState* s) {
  if (t_ledger.loop == s) {
    t_ledger.loop = nullptr;  // the loop ended on its own thread: later calls are not its
  }
  s->in_dispatch.store(false, std::memory_order_release);
  s->busy_since_ns.store(0, std::memory_order_release);
  s->closed.store(true, std::memory_order_release);
  // Its fd number may be reused for another loop: the table forgets it (no lock: an atomic
  // store, as this may run in a signal handler's close()).
  const int n = g_high.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    if (g_state[i].load(std::memory_order_acquire) == s) {
      g_epfd[i].store(-2, std::memory_order_release);
    }
  }
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
  const ScanGuard guard;
  const int n = g_high.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    LoopState* s = g_state[i].load(std::memory_order_seq_cst);
    if (s != nullptr && s->sample.tid == tid &&
        s->sample.state.load(std::memory_order_acquire) == RawSample::kRequested) {
      return &s->sample;
    }
  }
  return nullptr;
}

void EnsureLoopThread(LoopState* s) {
  if (s->tid.load(std::memory_order_acquire) != 0) {
    return;
  }
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
using stallwatch::agent::internal::LoopState;

extern "C" {

// Interposes libc's epoll_wait for the whole process; forwards to it.
__attribute__((visibility("default"))) int epoll_wait(int epfd, epoll_event* events, int maxevents,
                                                      int timeout) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_epoll_wait == nullptr, 0)) {
    ResolveNext();
  }
  t_ledger.loop = nullptr;  // waiting: not busy in a loop (AfterWait sets it again)
  uint64_t key = 0;
  LoopState* s = LoopOfWait(epfd, &key);
  if (s == nullptr) {
    if (__builtin_expect(key == 0 && !HaveInheritedProbeKeys(), 1)) {
      return g_real_epoll_wait(epfd, events, maxevents, timeout);
    }
    return PassThroughWait(epfd, events, maxevents, MillisToNanos(timeout), nullptr,
                           WaitCall::kWait, key);
  }
  if (s->kind == LoopState::kEpoll) {
    return EpollLoopWait(s, epfd, events, maxevents, MillisToNanos(timeout), nullptr,
                         WaitCall::kWait);
  }
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
  if (__builtin_expect(g_real_epoll_pwait == nullptr, 0)) {
    ResolveNext();
  }
  t_ledger.loop = nullptr;  // waiting: not busy in a loop (AfterWait sets it again)
  uint64_t key = 0;
  LoopState* s = LoopOfWait(epfd, &key);
  if (s == nullptr) {
    if (__builtin_expect(key == 0 && !HaveInheritedProbeKeys(), 1)) {
      return g_real_epoll_pwait(epfd, events, maxevents, timeout, sigmask);
    }
    return PassThroughWait(epfd, events, maxevents, MillisToNanos(timeout), sigmask,
                           WaitCall::kPwait, key);
  }
  if (s->kind == LoopState::kEpoll) {
    return EpollLoopWait(s, epfd, events, maxevents, MillisToNanos(timeout), sigmask,
                         WaitCall::kPwait);
  }
  BeforeWait(s);
  const int r = g_real_epoll_pwait(epfd, events, maxevents, timeout, sigmask);
  const int saved = errno;
  AfterWait(s);
  errno = saved;
  return r;
}

__attribute__((visibility("default"))) int epoll_pwait2(int epfd, epoll_event* events,
                                                        int maxevents, const timespec* timeout,
                                                        const sigset_t* sigmask) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_epoll_pwait2 == nullptr, 0)) {
    ResolveNext();
  }
  t_ledger.loop = nullptr;  // waiting: not busy in a loop (AfterWait sets it again)
  if (g_real_epoll_pwait2 == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  uint64_t key = 0;
  LoopState* s = LoopOfWait(epfd, &key);
  const bool filter = key != 0 || HaveInheritedProbeKeys();
  if (s == nullptr && !filter) {
    return g_real_epoll_pwait2(epfd, events, maxevents, timeout, sigmask);
  }
  if (s == nullptr || s->kind == LoopState::kEpoll) {
    if (timeout != nullptr &&
        (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1'000'000'000)) {
      return g_real_epoll_pwait2(epfd, events, maxevents, timeout, sigmask);  // its EINVAL
    }
    const int64_t ns =
        timeout == nullptr ? -1 : int64_t{timeout->tv_sec} * 1'000'000'000 + timeout->tv_nsec;
    if (s == nullptr) {
      return PassThroughWait(epfd, events, maxevents, ns, sigmask, WaitCall::kPwait2, key);
    }
    return EpollLoopWait(s, epfd, events, maxevents, ns, sigmask, WaitCall::kPwait2);
  }
  BeforeWait(s);
  const int r = g_real_epoll_pwait2(epfd, events, maxevents, timeout, sigmask);
  const int saved = errno;
  AfterWait(s);
  errno = saved;
  return r;
}

// Interposes close(): an epoll loop whose epoll fd the host closes has ended; an agent fd the
// host closes (programs that close every fd) loses the probe. Every call costs one relaxed load
// while no loop is attached, and a short scan otherwise. Async-signal safe, as close() is.
__attribute__((visibility("default"))) int close(int fd) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_close == nullptr, 0)) {
    ResolveNext();
  }
  // The agent's own threads have file tables of their own (platform::DetachFileTable): their fd
  // numbers are not the host's.
  if (g_high.load(std::memory_order_relaxed) != 0 && fd >= 0 &&
      !stallwatch::agent::platform::HasPrivateFileTable()) {
    const ScanGuard guard;  // the states may be other threads' loops, detaching now
    const int n = g_high.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) {
      LoopState* s = g_state[i].load(std::memory_order_seq_cst);
      if (s == nullptr || s->kind != LoopState::kEpoll) {
        continue;
      }
      if (g_epfd[i].load(std::memory_order_relaxed) == fd) {
        MarkLoopClosed(s);
        g_probe_key[i].store(0, std::memory_order_release);  // the set is gone with the fd
      } else {
        // Forgotten first: the number is the host's once closed, never to be read or closed.
        int mine = fd;
        if (s->wait_fd.compare_exchange_strong(mine, -1) ||
            s->probe_fd.compare_exchange_strong(mine = fd, -1)) {
          s->probe_lost.store(true, std::memory_order_relaxed);
        }
      }
    }
  }
  MarkBorn(fd, false);
  const int r =
      g_real_close != nullptr ? g_real_close(fd) : static_cast<int>(syscall(SYS_close, fd));
  g_fd_modes.Forget(fd);  // after: a classification racing with the close does not stick
  return r;
}

// Interpose epoll_create and epoll_create1: the agent learns which epoll sets are this
// process's own (EpfdCreatedHere), the only ones its probe may join.
__attribute__((visibility("default"))) int epoll_create(int size) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_epoll_create == nullptr, 0)) {
    ResolveNext();
  }
  const int fd = g_real_epoll_create != nullptr ? g_real_epoll_create(size)
                                                : static_cast<int>(syscall(SYS_epoll_create, size));
  MarkBorn(fd, true);
  g_fd_modes.Forget(fd);  // a new descriptor: whatever the ledger knew of its number is gone
  return fd;
}

__attribute__((visibility("default"))) int epoll_create1(int flags) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_epoll_create1 == nullptr, 0)) {
    ResolveNext();
  }
  const int fd = g_real_epoll_create1 != nullptr
                     ? g_real_epoll_create1(flags)
                     : static_cast<int>(syscall(SYS_epoll_create1, flags));
  MarkBorn(fd, true);
  g_fd_modes.Forget(fd);  // a new descriptor: whatever the ledger knew of its number is gone
  return fd;
}

__attribute__((visibility("default"))) int event_base_loop(event_base* base, int flags) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_loop == nullptr, 0)) {
    ResolveNext();
  }
  return RunLoop(base, flags, false);
}

__attribute__((visibility("default"))) int event_base_dispatch(event_base* base) {
  using namespace stallwatch::agent::internal;
  if (__builtin_expect(g_real_dispatch == nullptr, 0)) {
    ResolveNext();
  }
  return RunLoop(base, 0, true);
}

}  // extern "C"
