#include "epoll_loop.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <new>
#include <optional>

#include "ledger.h"
#include "log.h"
#include "probe.h"
#include "python_frames.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"
#include "wait_hook.h"

namespace stallwatch::agent::internal {

bool WaitTracker::Observe(int epfd) {
  if (gave_up_) {
    return false;
  }
  for (int i = 0; i < kTracked; ++i) {
    if (fds_[i] == epfd) {
      return ++counts_[i] >= 2;
    }
    if (fds_[i] < 0) {
      fds_[i] = epfd;
      counts_[i] = 1;
      return false;
    }
  }
  gave_up_ = true;
  return false;
}

namespace {

std::string_view Basename(std::string_view p) {
  const size_t slash = p.rfind('/');
  return slash == std::string_view::npos ? p : p.substr(slash + 1);
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

}  // namespace

std::string LoopRuntimeFrom(const std::vector<std::string>& program_names,
                            const std::vector<std::string>& modules) {
  for (const auto& name : program_names) {
    const std::string_view exe = Basename(name);
    if (StartsWith(exe, "python")) {
      return "python";
    }
    if (exe == "node" || exe == "nodejs") {
      return "node";
    }
    if (StartsWith(exe, "redis-server") || StartsWith(exe, "redis-sentinel")) {
      return "redis";
    }
    if (exe == "nginx" || StartsWith(exe, "nginx:")) {
      return "nginx";
    }
    if (exe == "memcached") {
      return "memcached";
    }
  }
  for (const auto& m : modules) {
    const std::string_view b = Basename(m);
    if (StartsWith(b, "libpython")) {
      return "python";
    }
    if (StartsWith(b, "libnode")) {
      return "node";
    }
  }
  return "";
}

std::string ThisProcessRuntime() {
  std::vector<std::string> names;
  char buf[4096];
  if (const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1); n > 0) {
    names.emplace_back(buf, static_cast<size_t>(n));
  }
  std::string text;
  if (std::ifstream cmdline("/proc/self/cmdline"); std::getline(cmdline, text, '\0')) {
    names.push_back(text);
  }
  if (std::ifstream comm("/proc/self/comm"); std::getline(comm, text)) {
    names.push_back(text);
  }
  std::vector<std::string> modules;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line) && modules.size() < 4096) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) {
      continue;
    }
    std::string path = line.substr(slash);
    if (modules.empty() || modules.back() != path) {
      modules.push_back(std::move(path));
    }
  }
  return LoopRuntimeFrom(names, modules);
}

// ---------------------------------------------------------------------------------------------
// The probe.

namespace {

// The agent's own fds are closed with the raw syscall: the interposed close() would take them
// for the host closing them.
void CloseOwn(int fd) {
  if (fd >= 0) {
    syscall(SYS_close, fd);
  }
}

// STALLWATCH_EPOLL_PROBE=own-fd keeps every probe out of the hosts' sets (docs/design.md
// "Foreign loops": for comparison, and for a host that enumerates its own set).
bool InlineProbeAllowed() {
  static const bool allowed = [] {
    const char* v = std::getenv("STALLWATCH_EPOLL_PROBE");
    return v == nullptr || std::strcmp(v, "own-fd") != 0;
  }();
  return allowed;
}

// An epoll fd of the agent's holding the host's epoll fd and the probe's timerfd, or -errno.
int MakeOwnWaitFd(int host_epfd, int tfd) {
  const int wfd = epoll_create1(EPOLL_CLOEXEC);
  if (wfd < 0) {
    return -errno;
  }
  epoll_event host{};
  host.events = EPOLLIN;
  host.data.u64 = kHostKey;
  epoll_event probe{};
  probe.events = EPOLLIN;
  probe.data.u64 = kProbeKey;
  if (epoll_ctl(wfd, EPOLL_CTL_ADD, host_epfd, &host) != 0 ||
      epoll_ctl(wfd, EPOLL_CTL_ADD, tfd, &probe) != 0) {
    const int e = errno;
    CloseOwn(wfd);
    return -e;
  }
  return wfd;
}

std::atomic<uint32_t> g_probe_serial{0};

}  // namespace

uint64_t NewProbeKey() {
  const uint32_t serial = g_probe_serial.fetch_add(1, std::memory_order_relaxed);
  const auto pid = static_cast<uint32_t>(getpid()) & 0x3F'FFFFu;
  const uint64_t high = (kProbeKeyTag << 12) | ((serial >> 8) & 0xFFFu);
  const uint64_t low = 0xC000'0000u | (pid << 8) | (serial & 0xFFu);
  return (high << 32) | low;
}

EpollProbe::~EpollProbe() { Stop(); }

Status EpollProbe::Start(LoopState* state, int host_epfd) {
  state_ = state;
  const int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) {
    return UnavailableError(std::string("timerfd_create: ") + std::strerror(errno));
  }
  bool in_host_set = false;
  if (InlineProbeAllowed() && EpfdCreatedHere(host_epfd)) {
    const uint64_t key = NewProbeKey();
    epoll_event probe{};
    probe.events = EPOLLIN | EPOLLET;  // one event per tick, to one waiter: never a busy wake
    probe.data.u64 = key;
    if (epoll_ctl(host_epfd, EPOLL_CTL_ADD, tfd, &probe) == 0) {
      state->probe_key = key;
      SetProbeKey(state, key);
      state->probe_inline.store(true, std::memory_order_relaxed);
      in_host_set = true;
    }
  }
  if (!in_host_set) {
    const int wfd = MakeOwnWaitFd(host_epfd, tfd);
    if (wfd < 0) {
      CloseOwn(tfd);
      return UnavailableError(std::string("epoll_ctl on the agent's epoll fd: ") +
                              std::strerror(-wfd));
    }
    state->wait_fd.store(wfd, std::memory_order_release);
  }
  if (Status st = ArmProbeTimer(tfd, state); !st.ok()) {
    CloseOwn(state->wait_fd.exchange(-1));
    CloseOwn(tfd);  // out of the host's set with it
    return st;
  }
  state->probe_fd.store(tfd, std::memory_order_release);
  return OkStatus();
}

void EpollProbe::Stop() {
  if (state_ == nullptr) {
    return;
  }
  CloseOwn(state_->wait_fd.exchange(-1));
  CloseOwn(state_->probe_fd.exchange(-1));  // a timerfd closed leaves every epoll set
  state_->probe_inline.store(false, std::memory_order_relaxed);
  state_ = nullptr;
}

// ---------------------------------------------------------------------------------------------
// The wait.

namespace {

using EpollWaitFn = int (*)(int, epoll_event*, int, int);
using EpollPwaitFn = int (*)(int, epoll_event*, int, int, const sigset_t*);
using EpollPwait2Fn = int (*)(int, epoll_event*, int, const timespec*, const sigset_t*);

// The next definitions after the agent's (libc's, or another preloaded interposer's: chained).
EpollWaitFn NextWait() {
  static auto* fn = reinterpret_cast<EpollWaitFn>(dlsym(RTLD_NEXT, "epoll_wait"));
  return fn;
}
EpollPwaitFn NextPwait() {
  static auto* fn = reinterpret_cast<EpollPwaitFn>(dlsym(RTLD_NEXT, "epoll_pwait"));
  return fn;
}
EpollPwait2Fn NextPwait2() {
  static auto* fn = reinterpret_cast<EpollPwait2Fn>(dlsym(RTLD_NEXT, "epoll_pwait2"));
  return fn;
}

// One wait through the variant the host called, with a timeout in nanoseconds (< 0: none). The
// millisecond variants round a partial millisecond up: the kernel does not wait less than asked.
int NextWaitCall(WaitCall call, int fd, epoll_event* ev, int max, int64_t timeout_ns,
                 const sigset_t* mask) {
  if (call == WaitCall::kPwait2) {
    if (timeout_ns < 0) {
      return NextPwait2()(fd, ev, max, nullptr, mask);
    }
    const timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000),
                      static_cast<long>(timeout_ns % 1'000'000'000)};
    return NextPwait2()(fd, ev, max, &ts, mask);
  }
  int ms = -1;
  if (timeout_ns >= 0) {
    const int64_t up = (timeout_ns + 999'999) / 1'000'000;
    ms = static_cast<int>(std::min<int64_t>(up, INT32_MAX));
  }
  if (call == WaitCall::kWait) {
    return NextWait()(fd, ev, max, ms);
  }
  return NextPwait()(fd, ev, max, ms, mask);
}

// Between two waits that the host sees as one call, every signal is held: one that comes then
// stays pending and interrupts the next wait, which runs with the mask the host's call had, so
// the host gets EINTR as if it had come during its wait. Loop thread; only after a wake the
// host does not see (once per probe tick at most).
class SignalsHeld {
 public:
  SignalsHeld() {
    sigset_t all;
    sigfillset(&all);
    held_ = pthread_sigmask(SIG_BLOCK, &all, &before_) == 0;
  }
  ~SignalsHeld() {
    if (held_) {
      const int saved = errno;
      pthread_sigmask(SIG_SETMASK, &before_, nullptr);
      errno = saved;
    }
  }
  SignalsHeld(const SignalsHeld&) = delete;
  SignalsHeld& operator=(const SignalsHeld&) = delete;

  // The next wait: the host's variant with its mask; epoll_wait becomes epoll_pwait with the
  // mask the thread had.
  int Wait(WaitCall call, int fd, epoll_event* ev, int max, int64_t timeout_ns,
           const sigset_t* host_mask) const {
    if (!held_) {
      return NextWaitCall(call, fd, ev, max, timeout_ns, host_mask);
    }
    if (call == WaitCall::kWait) {
      return NextWaitCall(WaitCall::kPwait, fd, ev, max, timeout_ns, &before_);
    }
    return NextWaitCall(call, fd, ev, max, timeout_ns, host_mask != nullptr ? host_mask : &before_);
  }

 private:
  sigset_t before_{};
  bool held_ = false;
};

// False when the probe is gone (its timerfd closed by the host): the caller stops using it.
bool ServiceProbe(LoopState* s, int64_t now) {
  const int tfd = s->probe_fd.load(std::memory_order_relaxed);
  if (tfd < 0) {
    s->probe_lost.store(true, std::memory_order_relaxed);
    return false;
  }
  uint64_t expirations = 0;
  if (::read(tfd, &expirations, sizeof(expirations)) == static_cast<ssize_t>(sizeof(expirations)) &&
      expirations > 0) {
    OnProbeExpired(s, expirations, now);
  }
  return true;
}

// A blocking wait from `began` to `now` that returned `r` events without the probe's, though a
// tick was due inside it (`due`) and there was room for it: another waiter of the set took the
// tick. Its lateness is unknown (the loop was idle): it is skipped, not recorded. A tick due in
// the last kMissSlackNs may have expired after the kernel collected the events: not a miss.
void NoteMissedTick(LoopState* s, int64_t due, int64_t began, int64_t now, int r, int maxevents) {
  constexpr int64_t kMissSlackNs = 2'000'000;
  if (r >= maxevents || due <= began || now - due < kMissSlackNs) {
    return;
  }
  const int tfd = s->probe_fd.load(std::memory_order_relaxed);
  uint64_t expirations = 0;
  if (tfd >= 0 &&
      ::read(tfd, &expirations, sizeof(expirations)) == static_cast<ssize_t>(sizeof(expirations))) {
    SkipProbeTicks(s, expirations);
  }
  if (++s->probe_misses >= kMissesToMoveOut) {
    s->probe_shared.store(true, std::memory_order_relaxed);
  }
}

// The probe leaves the host's set for an epoll fd of the agent's (see the top of epoll_loop.h).
// Loop thread, between waits.
void MoveProbeOut(LoopState* s, int epfd) {
  s->probe_inline.store(false, std::memory_order_relaxed);
  const int tfd = s->probe_fd.load(std::memory_order_relaxed);
  if (tfd < 0) {
    return;
  }
  (void)epoll_ctl(epfd, EPOLL_CTL_DEL, tfd, nullptr);
  const int wfd = MakeOwnWaitFd(epfd, tfd);
  if (wfd < 0) {
    s->probe_lost.store(true, std::memory_order_relaxed);
    LogWarn("the delay probe of the loop on epoll fd {} is lost: {}", epfd, std::strerror(-wfd));
    return;
  }
  s->wait_fd.store(wfd, std::memory_order_release);
  LogInfo(
      "epoll fd {} has other waiters (another thread, or a forked process): its loop's probe "
      "now waits beside it, in an epoll fd of the agent's",
      epfd);
}

// The executable segment of the loaded object that holds `addr`: [*lo, *hi).
bool TextSegmentOf(uint64_t addr, uint64_t* lo, uint64_t* hi) {
  struct Find {
    uint64_t addr = 0;
    uint64_t lo = 0;
    uint64_t hi = 0;
  } find{addr};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* arg) -> int {
        auto* f = static_cast<Find*>(arg);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          const uint64_t start = info->dlpi_addr + ph.p_vaddr;
          if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) != 0 && f->addr >= start &&
              f->addr < start + ph.p_memsz) {
            f->lo = start;
            f->hi = start + ph.p_memsz;
            return 1;
          }
        }
        return 0;
      },
      &find);
  *lo = find.lo;
  *hi = find.hi;
  return find.lo != 0;
}

// Once per process, on a Python loop's thread: what the ledger needs to name a call's Python
// caller (ledger.h, PyCallerSource) — CPython 3.11 only, the layout it reads.
void NotePythonCallerSource(void* get_tstate) {
  static std::atomic<bool> done{false};
  if (done.exchange(true)) {
    return;
  }
  const auto* version = static_cast<const uint32_t*>(dlsym(RTLD_DEFAULT, "Py_Version"));
  void* runtime = dlsym(RTLD_DEFAULT, "_PyRuntime");
  if (version == nullptr || runtime == nullptr || !PyLayoutForVersion(*version).ok()) {
    return;  // another version: its calls keep their native sites
  }
  uint64_t lo = 0;
  uint64_t hi = 0;
  if (!TextSegmentOf(reinterpret_cast<uint64_t>(get_tstate), &lo, &hi)) {
    return;
  }
  g_py_caller.finalizing.store(
      reinterpret_cast<uint64_t>(runtime) + kPy311Layout.runtime_finalizing,
      std::memory_order_relaxed);
  g_py_caller.text_hi.store(hi, std::memory_order_relaxed);
  g_py_caller.get_tstate.store(reinterpret_cast<PyThreadStateFn>(get_tstate),
                               std::memory_order_relaxed);
  g_py_caller.text_lo.store(lo, std::memory_order_release);  // published last
}

// Once per loop, on its thread: a Python loop's thread state (LoopState::py_tstate).
void NotePythonThread(LoopState* s) {
  s->py_checked = true;
  if (std::strcmp(s->runtime, "python") != 0) {
    return;
  }
  using Fn = void* (*)();
  static auto* get = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "PyGILState_GetThisThreadState"));
  if (get == nullptr) {
    return;
  }
  s->py_tstate.store(reinterpret_cast<uint64_t>(get()), std::memory_order_release);
  NotePythonCallerSource(reinterpret_cast<void*>(get));
}

int64_t Left(int64_t deadline) {
  return deadline < 0 ? -1 : std::max<int64_t>(0, deadline - MonotonicNanos());
}

// The probe in the host's set: the host's own call, its probe events dropped; a wake by the
// probe alone is serviced and the wait goes on for the rest of the host's timeout.
int WaitInHostSet(LoopState* s, int epfd, epoll_event* events, int maxevents, int64_t timeout_ns,
                  const sigset_t* sigmask, WaitCall call, int64_t start, int64_t* woke_ns) {
  const int64_t deadline = timeout_ns < 0 ? -1 : start + timeout_ns;
  int64_t left = timeout_ns;
  int64_t began = start;
  std::optional<SignalsHeld> held;  // from the first wake the host does not see
  for (;;) {
    const int64_t due = s->probe_due_ns.load(std::memory_order_relaxed);
    const int r = held ? held->Wait(call, epfd, events, maxevents, left, sigmask)
                       : NextWaitCall(call, epfd, events, maxevents, left, sigmask);
    if (r < 0) {
      return r;  // EINTR as the host's own wait would have returned it
    }
    bool fired = false;
    const int kept = r == 0 ? 0 : DropProbeEvents(events, r, s->probe_key, &fired);
    if (left == 0) {
      if (!fired) {
        return kept;
      }
      ServiceProbe(s, MonotonicNanos());
      if (kept > 0 || r < maxevents) {
        return kept;
      }
      // The probe took the only room there was (maxevents 1): the host's events are asked for
      // again (the tick is read: it is not among them).
      const int again = NextWaitCall(call, epfd, events, maxevents, 0, sigmask);
      return again <= 0 ? again : DropProbeEvents(events, again, s->probe_key, &fired);
    }
    const int64_t now = MonotonicNanos();
    *woke_ns = now;
    if (!fired) {
      NoteMissedTick(s, due, began, now, r, maxevents);
      return kept;
    }
    s->probe_misses = 0;
    if (kept > 0) {
      ServiceProbe(s, now);
      return kept;
    }
    if (!held) {
      held.emplace();  // before the tick is serviced: a signal from here on interrupts the wait
    }
    ServiceProbe(s, now);
    if (deadline >= 0) {
      left = deadline - MonotonicNanos();
      if (left <= 0) {
        return 0;  // the host's timeout
      }
    }
    began = now;
  }
}

// The probe beside the host's set, in the agent's epoll fd.
int WaitBesideHostSet(LoopState* s, int wfd, int epfd, epoll_event* events, int maxevents,
                      int64_t timeout_ns, const sigset_t* sigmask, WaitCall call, int64_t start) {
  // Events already there: exactly the call the host made, without blocking.
  bool fired = false;
  int r = NextWaitCall(call, epfd, events, maxevents, 0, sigmask);
  if (r > 0) {
    r = DropProbeEvents(events, r, 0, &fired);  // a parent's probe in an inherited set
  }
  if (r != 0 || timeout_ns == 0) {
    return r;
  }
  const int64_t deadline = timeout_ns < 0 ? -1 : start + timeout_ns;
  std::optional<SignalsHeld> held;
  for (;;) {
    int64_t left = -1;
    if (deadline >= 0) {
      left = deadline - MonotonicNanos();
      if (left <= 0) {
        return 0;
      }
    }
    epoll_event got[2];
    const int n = held ? held->Wait(call, wfd, got, 2, left, sigmask)
                       : NextWaitCall(call, wfd, got, 2, left, sigmask);
    if (n < 0) {
      if (errno == EBADF || errno == EINVAL) {
        // The program closed the agent's fd (or put something else there): no probe from now.
        s->probe_lost.store(true, std::memory_order_relaxed);
        return PassThroughWait(epfd, events, maxevents, Left(deadline), sigmask, call, 0);
      }
      return n;  // EINTR as the host's own wait would have returned it
    }
    if (n == 0) {
      return 0;  // the host's timeout
    }
    bool host_ready = false;
    bool probe_gone = false;
    for (int i = 0; i < n; ++i) {
      if (got[i].data.u64 == kProbeKey) {
        if (!held) {
          held.emplace();
        }
        probe_gone = !ServiceProbe(s, MonotonicNanos());
      } else {
        host_ready = true;
      }
    }
    if (probe_gone && !host_ready) {
      return PassThroughWait(epfd, events, maxevents, Left(deadline), sigmask, call, 0);
    }
    if (host_ready) {
      r = NextWaitCall(call, epfd, events, maxevents, 0, sigmask);
      if (r > 0) {
        r = DropProbeEvents(events, r, 0, &fired);
      }
      if (r != 0) {
        return r;
      }
      // Another thread or process took the events first: wait again for the rest of the time.
      if (!held) {
        held.emplace();
      }
    }
  }
}

}  // namespace

int DropProbeEvents(epoll_event* events, int n, uint64_t key, bool* own_fired) {
  const bool inherited = HaveInheritedProbeKeys();
  int out = 0;
  for (int i = 0; i < n; ++i) {
    const uint64_t d = events[i].data.u64;
    if ((d >> 44) == kProbeKeyTag) {
      if (key != 0 && d == key) {
        *own_fired = true;
        continue;
      }
      if (inherited && IsInheritedProbeKey(d)) {
        continue;
      }
    }
    if (out != i) {
      events[out] = events[i];
    }
    ++out;
  }
  return out;
}

int PassThroughWait(int epfd, epoll_event* events, int maxevents, int64_t timeout_ns,
                    const sigset_t* sigmask, WaitCall call, uint64_t key) {
  const int64_t deadline = timeout_ns < 0 ? -1 : MonotonicNanos() + timeout_ns;
  int64_t left = timeout_ns;
  std::optional<SignalsHeld> held;
  for (;;) {
    const int r = held ? held->Wait(call, epfd, events, maxevents, left, sigmask)
                       : NextWaitCall(call, epfd, events, maxevents, left, sigmask);
    if (r <= 0) {
      return r;
    }
    bool fired = false;
    const int kept = DropProbeEvents(events, r, key, &fired);
    if (kept > 0 || left == 0) {
      return kept;
    }
    if (!held) {
      held.emplace();
    }
    if (deadline >= 0) {
      left = deadline - MonotonicNanos();
      if (left <= 0) {
        return 0;
      }
    }
  }
}

int LoopWait(LoopState* s, int epfd, epoll_event* events, int maxevents, int64_t timeout_ns,
             const sigset_t* sigmask, WaitCall call, int64_t now_ns, int64_t* woke_ns) {
  *woke_ns = 0;
  if (!s->py_checked) {
    NotePythonThread(s);
  }
  if (s->probe_lost.load(std::memory_order_relaxed)) {
    return PassThroughWait(epfd, events, maxevents, timeout_ns, sigmask, call, s->probe_key);
  }
  if (s->probe_shared.load(std::memory_order_relaxed) &&
      s->probe_inline.load(std::memory_order_relaxed)) {
    MoveProbeOut(s, epfd);
  }
  const int64_t start = now_ns;
  if (start >= s->probe_due_ns.load(std::memory_order_relaxed)) {
    ServiceProbe(s, start);  // a busy loop comes back here late: this is its lateness
  }
  if (s->probe_inline.load(std::memory_order_relaxed)) {
    return WaitInHostSet(s, epfd, events, maxevents, timeout_ns, sigmask, call, start, woke_ns);
  }
  const int wfd = s->wait_fd.load(std::memory_order_relaxed);
  if (wfd < 0) {
    return PassThroughWait(epfd, events, maxevents, timeout_ns, sigmask, call, s->probe_key);
  }
  return WaitBesideHostSet(s, wfd, epfd, events, maxevents, timeout_ns, sigmask, call, start);
}

// ---------------------------------------------------------------------------------------------
// Discovery.

namespace {

std::atomic<bool> g_discovery{false};
std::atomic<uint64_t> g_generation{1};  // bumped in a forked child: every thread starts again

struct Discovered {
  std::unique_ptr<Agent> agent;
  LoopState* state = nullptr;
};

std::mutex& DiscoveredMu() {
  static auto* mu = new std::mutex();  // never destroyed: loops may end during exit
  return *mu;
}
std::vector<Discovered>& DiscoveredLoops() {
  static auto* v = new std::vector<Discovered>();
  return *v;
}

struct ThreadWaits {
  uint64_t generation = 0;
  WaitTracker tracker;
  LoopState* loop = nullptr;  // this thread's loop (may have been closed since)
  bool refused = false;       // an attach failed here: the reason was logged, not tried again
  bool attaching = false;
  ~ThreadWaits() {
    // The thread ends: so does its loop. Its slot is reaped at the next attach.
    if (loop != nullptr) {
      MarkLoopClosed(loop);
      loop->released.store(true, std::memory_order_release);
    }
  }
};

thread_local ThreadWaits t_waits;

// Detaches the loops whose epoll fd was closed or whose thread ended. Not on a loop's own
// thread's critical path: only when another loop attaches.
void ReapClosed() {
  std::vector<std::unique_ptr<Agent>> gone;
  {
    std::lock_guard<std::mutex> lock(DiscoveredMu());
    auto& v = DiscoveredLoops();
    for (auto it = v.begin(); it != v.end();) {
      // Closed, and its thread no longer refers to it: the state may be freed.
      if (it->state->closed.load(std::memory_order_acquire) &&
          it->state->released.load(std::memory_order_acquire)) {
        gone.push_back(std::move(it->agent));
        it = v.erase(it);
      } else {
        ++it;
      }
    }
  }
  gone.clear();  // outside the lock: a detach flushes the loop's last window
}

}  // namespace

void EnableEpollDiscovery() { g_discovery.store(true, std::memory_order_release); }
bool EpollDiscoveryEnabled() { return g_discovery.load(std::memory_order_relaxed); }

void ForgetDiscoveredLoops() {
  g_generation.fetch_add(1, std::memory_order_relaxed);
  // The parent's agents are abandoned, as the parent's runtime is (their locks may be held by
  // threads that do not exist here): the list is replaced, never destroyed.
  new (&DiscoveredMu()) std::mutex();
  new (&DiscoveredLoops()) std::vector<Discovered>();
}

LoopState* ThisThreadsLoop(int epfd) {
  const ThreadWaits& t = t_waits;
  LoopState* loop = t.loop;
  if (loop == nullptr || t.generation != g_generation.load(std::memory_order_relaxed) ||
      loop->epfd.load(std::memory_order_relaxed) != epfd ||
      loop->closed.load(std::memory_order_acquire)) {
    return nullptr;
  }
  return loop;
}

LoopState* DiscoverLoop(int epfd) {
  ThreadWaits& t = t_waits;
  const uint64_t gen = g_generation.load(std::memory_order_relaxed);
  if (t.generation != gen) {
    t.generation = gen;
    t.tracker.Reset();
    t.loop = nullptr;
    t.refused = false;
  }
  if (t.refused || t.attaching || t.tracker.gave_up()) {
    return nullptr;
  }
  if (t.loop != nullptr) {
    if (!t.loop->closed.load(std::memory_order_acquire)) {
      return nullptr;  // a nested wait
    }
    t.loop->released.store(true, std::memory_order_release);
    t.loop = nullptr;
    t.tracker.Reset();
  }
  if (InWatchedDispatch()) {
    return nullptr;  // a libevent loop of the agent's own
  }
  if (!t.tracker.Observe(epfd)) {
    return nullptr;
  }
  t.attaching = true;
  LoopState* out = nullptr;
  try {
    ReapClosed();
    Options o = Options::FromEnvironment();
    o.loop_name_from_thread = true;
    auto agent = Agent::AttachEpoll(epfd, std::move(o));
    if (agent.ok()) {
      out = FindLoopByEpfd(epfd);
      std::lock_guard<std::mutex> lock(DiscoveredMu());
      DiscoveredLoops().push_back({std::move(*agent), out});
      t.loop = out;
    } else {
      t.refused = true;
      LogWarn("not watching the event loop on epoll fd {} of thread {}: {}", epfd,
              static_cast<int>(syscall(SYS_gettid)), agent.status().ToString());
    }
  } catch (...) {
    t.refused = true;
  }
  t.attaching = false;
  return out;
}

}  // namespace stallwatch::agent::internal
