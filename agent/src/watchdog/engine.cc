#include "watchdog/engine.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "classifier.h"
#include "log.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/log_text.h"
#include "watchdog/region.h"

namespace stallwatch::internal {

using agent::internal::DetectorAction;
using agent::internal::OwnClocks;
using agent::internal::RawSample;
using agent::internal::SamplingState;
using agent::internal::SamplingStatus;
namespace platform = agent::platform;

namespace {

// The stack budget by signature (StackBudget): how many of a stack's innermost host frames make
// its signature.
constexpr size_t kSignatureFrames = 8;
constexpr int kMaxStackAttemptsPerStall = 16;
constexpr auto kSignalTimeout = std::chrono::milliseconds(20);
// The shortest span over which a watchdog process trusts the loop thread's CPU share: schedstat,
// its only reading of another process's thread, moves at scheduler ticks (4 ms at HZ=250), and a
// loop's tick while it is busy is a fifth of its threshold (4 ms at 20 ms).
constexpr std::chrono::nanoseconds kRemoteCpuSpan = std::chrono::milliseconds(20);
// A loop named after its thread is announced once the name is known, or this long after attach
// with the name it has then: visible in the daemon well within 1 s, before its first window.
constexpr std::chrono::nanoseconds kAnnounceAfter = std::chrono::milliseconds(500);
// A loop's tick (how often the watchdog looks at it while it is busy): a fifth of its
// threshold, within these bounds.
constexpr std::chrono::nanoseconds kMinLoopTick = std::chrono::milliseconds(1);
constexpr std::chrono::nanoseconds kMaxLoopTick = std::chrono::milliseconds(10);
// The detector's resampling of a stall that goes on: first after half the threshold (at least
// this), then backing off to at most this.
constexpr std::chrono::nanoseconds kMinFirstResample = std::chrono::milliseconds(1);
constexpr std::chrono::nanoseconds kMaxResample = std::chrono::seconds(2);
// The watchdog's first look after it starts, and the bounds of each of its sleeps.
constexpr std::chrono::nanoseconds kFirstLook = std::chrono::milliseconds(10);
constexpr std::chrono::nanoseconds kMinSleep = std::chrono::milliseconds(1);
// The watchdog's thread clocks (CPU time, run queue, context switches: three syscalls) are read
// where a span may hold a pause, and at least this often, so that the readings a later span
// starts from are never older (SelfClock: stale readings only shorten what looks like a pause).
constexpr std::chrono::nanoseconds kFreshClocks = std::chrono::milliseconds(100);
constexpr std::chrono::nanoseconds kMaxSleep = std::chrono::seconds(1);
// Looking for a loop's epoll fd again (attach could not bind it): every this long, and never
// sooner than kMinSleep from now.
constexpr std::chrono::nanoseconds kEpfdRetryEvery = std::chrono::seconds(1);

// Whether the calling thread is the watchdog (or its warm-up thread): only these may use the
// unwinder's and the watchdog's open files, which live in the watchdog's own file table.
thread_local bool t_watchdog_table = false;

int64_t TickFor(int64_t threshold_ns) {
  return std::clamp<int64_t>(threshold_ns / 5, kMinLoopTick.count(), kMaxLoopTick.count());
}

// Options reach the engine resolved (Agent::Attach, the watchdog process's slots); the
// defaults only guard a field that was left unset.
int64_t StallThresholdNs(const Options& o) {
  return std::chrono::nanoseconds(o.stall_threshold.value_or(kDefaultStallThreshold)).count();
}
int64_t ReportIntervalNs(const Options& o) {
  return std::chrono::nanoseconds(o.report_interval.value_or(kDefaultReportInterval)).count();
}
int MaxStackReports(const Options& o) {
  return std::max(0, o.max_stack_reports_per_minute.value_or(kDefaultMaxStackReportsPerMinute));
}

// A library every program's stack passes through (libc, the loader, libevent, the C++ runtime):
// the frame that names a stall is the first one outside them.
bool IsSystemModule(const std::string& module) {
  const size_t slash = module.rfind('/');
  const std::string base = slash == std::string::npos ? module : module.substr(slash + 1);
  for (const char* p : {"libc.so", "libc-", "ld-linux", "libpthread", "libevent", "libstdc++",
                        "libm.so", "libgcc_s", "libpython", "libuv", "linux-vdso", "[vdso]",
                        "libtsan", "libasan", "libubsan", "liblsan"}) {
    if (base.rfind(p, 0) == 0) {
      return true;
    }
  }
  return false;
}

uint64_t Fnv1a(uint64_t h, const std::string& s) {
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  h ^= 0xff;  // field separator
  h *= 1099511628211ull;
  return h;
}

}  // namespace

Watchdog::Watchdog(WatchdogConfig config, std::unique_ptr<agent::internal::TargetThreads> target,
                   agent::internal::Reporter* reporter)
    : config_(std::move(config)),
      target_(std::move(target)),
      reporter_(reporter),
      status_(config_.status) {
  // The machine's steal, summed over its CPUs (the target's reading is the average per CPU).
  self_clock_.SetStealReader([target = target_.get()] {
    static const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const int64_t per_cpu = target->StealPerCpu();
    return per_cpu < 0 || cpus <= 0 ? int64_t{-1} : per_cpu * cpus;
  });
}

Watchdog::~Watchdog() {
  warm_cancel_.store(true);
  if (warm_thread_.joinable()) {
    warm_thread_.join();
  }
}

SamplingStatus Watchdog::status() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return status_;
}

void Watchdog::set_status(SamplingStatus s) {
  std::lock_guard<std::mutex> lock(status_mu_);
  status_ = std::move(s);
}

std::string Watchdog::sampling_status() const { return SamplingStatusText(status()); }

void Watchdog::SetLookHookForTest(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  look_hook_for_test_ = std::move(hook);
}

int64_t Watchdog::LoopCpu(LoopWatch& w) const {
  return target_->LoopCpu(w.ctx->state, &w.thread_files);
}

void Watchdog::Add(const std::shared_ptr<LoopContext>& ctx) {
  const auto& o = ctx->options;
  agent::internal::DetectorConfig dc;
  dc.threshold_ns = StallThresholdNs(o);
  dc.first_resample_ns = std::max<int64_t>(dc.threshold_ns / 2, kMinFirstResample.count());
  dc.max_resample_ns = kMaxResample.count();
  auto w = std::make_unique<LoopWatch>(ctx, dc);
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = MonotonicNanos();
  w->attached_ns = now;
  HistogramCounts delay, iter;
  ctx->state.delay_hist.Snapshot(&delay);
  ctx->state.iteration_hist.Snapshot(&iter);
  w->window.Start(now, std::move(delay), std::move(iter));
  w->stack_budget.Start(MaxStackReports(o), now);
  loops_.push_back(std::move(w));
  cv_.notify_all();
}

void Watchdog::Remove(LoopContext* ctx) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(loops_.begin(), loops_.end(),
                         [&](const auto& w) { return w->ctx.get() == ctx; });
  if (it == loops_.end()) {
    return;
  }
  LoopWatch& w = **it;
  const int64_t now = MonotonicNanos();
  // One last look, so a stall that ended just before detach closes with its exact end (and a
  // pause the watchdog has not woken up from yet is known).
  if (waiting_) {
    const OwnClocks at = ReadOwnClocks();
    self_clock_.AccountWait(wait_start_, at, wait_tick_ns_);
    waiting_ = false;
  }
  try {
    ProcessLoop(w, now);
  } catch (...) {
  }
  if (w.track && w.track->reported) {
    CloseStall(w, now, true, now);
  }
  w.track.reset();
  EmitWindow(w, now);
  loops_.erase(it);
}

void Watchdog::FlushForExit() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = MonotonicNanos();
  if (waiting_) {
    const OwnClocks at = ReadOwnClocks();
    self_clock_.AccountWait(wait_start_, at, wait_tick_ns_);
    waiting_ = false;
  }
  for (auto& wp : loops_) {
    LoopWatch& w = *wp;
    if (w.ctx->options.on_stall || w.ctx->options.on_delay) {
      continue;
    }
    try {
      ProcessLoop(w, now);
    } catch (...) {
    }
    if (w.track && w.track->reported) {
      CloseStall(w, now, true, now);
    }
    w.track.reset();
    EmitWindow(w, now);
  }
}

void Watchdog::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  warm_cancel_.store(true);
}

void Watchdog::Run() {
  // The watchdog (and the warm-up thread it starts) leave the host's file table first: see
  // platform::DetachFileTable. Everything they open is used and closed on them. A watchdog
  // process has a table of its own already.
  const bool private_table = !target_->remote() && platform::DetachFileTable();
  t_watchdog_table = true;
  own_schedstat_ = std::make_unique<platform::ProcFile>("/proc/thread-self/schedstat");
  // Warm the unwinder up off the host's threads and off the watchdog's own loop (loading symbol
  // tables and DWARF indexes of large modules takes up to hundreds of ms; detection and
  // classification must not wait for it).
  if (config_.sampling != SamplingMode::kOff) {
    warm_thread_ = std::thread([this, private_table] {
      t_watchdog_table = true;
      if (private_table) {
        platform::SharesPrivateFileTable();  // the watchdog's table, inherited by this thread
      }
      Status st = unwinder_.Init(&warm_cancel_);
      if (st.ok()) {
        unwinder_ok_.store(true, std::memory_order_release);
      } else {
        set_status({SamplingState::kStacksUnavailable, st.message()});
      }
    });
  }
  std::unique_lock<std::mutex> lock(mu_);
  watchdog_tid_ = platform::GetTid();
  watchdog_cpu_clock_ok_ = pthread_getcpuclockid(pthread_self(), &watchdog_cpu_clock_) == 0;
  OwnClocks woke = ReadOwnClocks();
  clocks_read_ns_ = woke.mono_ns;
  int64_t next_look = woke.mono_ns + kFirstLook.count();
  bool full = false;
  while (!stop_) {
    // Processing since the last wake-up: running, queued, or waiting for a signal sample.
    wait_start_ =
        ReadOwnClocksIfUseful(woke, MonotonicNanos(), self_clock_.processing_sleep_ns(), &full);
    if (full) {
      self_clock_.AccountProcessing(woke, wait_start_);
    } else {
      self_clock_.SkipProcessing();
    }
    // Sleep until the earliest time a loop needs a look (half the threshold when all are idle:
    // 25 ms at the default 50 ms), at least 1 ms and at most 1 s. Add() and Remove() wake it.
    const int64_t wait =
        std::clamp<int64_t>(next_look - wait_start_.mono_ns, kMinSleep.count(), kMaxSleep.count());
    wait_tick_ns_ = wait;
    waiting_ = true;
    cv_.wait_for(lock, std::chrono::nanoseconds(wait));
    if (!waiting_) {
      wait_start_ = ReadOwnClocks();  // Remove() accounted the wait so far
    }
    waiting_ = false;
    if (stop_) {
      break;
    }
    const int64_t mono = MonotonicNanos();
    woke = ReadOwnClocksIfUseful(wait_start_, mono,
                                 std::min(wait_tick_ns_, mono - wait_start_.mono_ns), &full);
    if (full) {
      self_clock_.AccountWait(wait_start_, woke, wait_tick_ns_);
    }
    const int64_t now = woke.mono_ns;
    next_look = Tick(now);
  }
  // Close the files of the watchdog's table here, on a thread of that table.
  lock.unlock();
  warm_cancel_.store(true);
  if (warm_thread_.joinable()) {
    warm_thread_.join();
  }
  unwinder_ok_.store(false, std::memory_order_release);
  unwinder_.Shutdown();
  own_schedstat_.reset();
}

int64_t Watchdog::Tick(int64_t now) {
  int64_t next = now + kMaxSleep.count();
  for (const auto& w : loops_) {
    if (look_hook_for_test_) {
      look_hook_for_test_();
    }
    try {
      next = std::min(next, ProcessLoop(*w, now));
    } catch (const std::exception& e) {
      next = std::min(next, now + TickFor(StallThresholdNs(w->ctx->options)));
      agent::internal::LogError("watchdog: loop {}: {}", EscapeForLog(w->ctx->snapshot.Name()),
                                e.what());
    }
  }
  return next;
}

OwnClocks Watchdog::ReadOwnClocksIfUseful(const OwnClocks& last, int64_t mono_ns,
                                          int64_t intended_ns, bool* full) {
  *full = agent::internal::SelfClock::MayHoldPause(mono_ns - last.mono_ns, intended_ns) ||
          mono_ns - clocks_read_ns_ >= kFreshClocks.count();
  if (*full) {
    OwnClocks c = ReadOwnClocks();
    clocks_read_ns_ = c.mono_ns;
    return c;
  }
  // Its CPU time and queueing since `last` are counted in the next span that reads them: that
  // span's unaccounted time can only come out shorter, never a pause that was not there.
  OwnClocks c = last;
  c.mono_ns = mono_ns;
  return c;
}

OwnClocks Watchdog::ReadOwnClocks() const {
  OwnClocks c;
  c.mono_ns = MonotonicNanos();
  c.cpu_ns = watchdog_cpu_clock_ok_ ? CpuClockNanos(watchdog_cpu_clock_) : 0;
  std::optional<platform::SchedStat> ss;
  if (t_watchdog_table && own_schedstat_) {
    ss = platform::ReadSchedstat(*own_schedstat_);
  } else if (watchdog_tid_ != 0) {
    ss = platform::ReadThreadSchedstat(watchdog_tid_);  // Remove(), on a host thread
  }
  c.run_delay_ns = ss ? static_cast<int64_t>(ss->run_delay_ns) : 0;
  if (t_watchdog_table) {  // on the watchdog's own thread (RUSAGE_THREAD is the caller's)
    rusage ru{};
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
      c.voluntary_switches = ru.ru_nvcsw;
    }
  }
  return c;
}

uint64_t Watchdog::StackSignature(const std::vector<agent::internal::RawFrame>& frames,
                                  std::string* top_frame) {
  // Functions, not pcs: a CPU-bound stall is sampled at a different instruction each time, but
  // in the same functions. Frames without a name count by module and offset.
  uint64_t h = 1469598103934665603ull;
  size_t used = 0;
  std::string first_named;
  top_frame->clear();
  for (const auto& rf : frames) {
    if (used == kSignatureFrames && !top_frame->empty()) {
      break;
    }
    Frame fr = unwinder_.Symbolize(rf);
    if (agent::internal::Unwinder::IsOwnModule(fr.module)) {
      continue;
    }
    if (first_named.empty() && !fr.function.empty()) {
      first_named = fr.function;
    }
    if (top_frame->empty() && !fr.function.empty() && !IsSystemModule(fr.module)) {
      *top_frame = fr.function;
    }
    if (used < kSignatureFrames) {
      h = Fnv1a(h, fr.module);
      h = Fnv1a(h, fr.function.empty() ? std::to_string(fr.offset) : fr.function);
      ++used;
    }
  }
  if (top_frame->empty()) {
    *top_frame = first_named;
  }
  return h;
}

void Watchdog::DecideStackBudget(LoopWatch& w, StallTrack& t, int64_t now) {
  std::string top;
  const auto& first = t.stacks.begin()->second;
  uint64_t sig = StackSignature(first.frames, &top);
  // A Python loop's causes differ in their Python functions, not in the interpreter's frames.
  for (const auto& p : first.python) {
    sig = (sig ^ std::hash<std::string>{}(p.qualname + '\n' + p.filename)) * 1099511628211ull;
  }
  if (!first.python.empty()) {
    top = first.python.front().qualname;
  }
  auto d = w.stack_budget.Decide(sig, t.id, top, now);
  t.stacks_allowed = d.stacks_allowed;
  if (!d.stacks_allowed) {
    t.sampling_note = std::move(d.sampling_note);
  }
}

void Watchdog::BindEpollFd(LoopWatch& w, int64_t now) {
  // Bind the loop's epoll fd if attach could not (e.g. libevent applies epoll changes lazily).
  LoopContext& c = *w.ctx;
  auto& s = c.state;
  const int probe_fd = c.served ? c.served->probe_fd : c.probe.timer_fd();
  if (c.epfd_binding == EpfdBinding::kSearch && s.epfd.load(std::memory_order_relaxed) < 0 &&
      w.epfd_searches < LoopWatch::kMaxEpfdSearches && now >= w.epfd_next_search_ns &&
      probe_fd >= 0) {
    ++w.epfd_searches;
    w.epfd_next_search_ns = now + kEpfdRetryEvery.count();
    (void)target_->FindAndBindEpollFd(&s, probe_fd);
  }
}

void Watchdog::ReadLongPeriods(LoopWatch& w, LoopObservation* o) {
  // New long busy periods since the last look (the ring keeps the last kLongRing).
  const auto& s = w.ctx->state;
  constexpr uint64_t kRing = agent::internal::LoopState::kLongRing;
  const uint64_t seq = s.long_seq.load(std::memory_order_acquire);
  const uint64_t from = std::max(w.long_seq_seen, seq > kRing ? seq - kRing : 0);
  w.long_periods_lost += from - std::min(from, w.long_seq_seen);
  for (uint64_t i = from; i < seq; ++i) {
    const auto& slot = s.long_ring[i % kRing];
    const int64_t start = slot.start_ns.load(std::memory_order_relaxed);
    const int64_t end = slot.end_ns.load(std::memory_order_relaxed);
    // A slot overwritten while we read it is lost rather than mixed up.
    if (s.long_seq.load(std::memory_order_acquire) - i > kRing) {
      ++w.long_periods_lost;
      continue;
    }
    o->AddLongPeriod(start, end);
  }
  w.long_seq_seen = seq;
}

int64_t Watchdog::ProcessLoop(LoopWatch& w, int64_t now) {
  LoopContext& c = *w.ctx;
  auto& s = c.state;
  BindEpollFd(w, now);

  LoopObservation o;
  o.now_ns = now;
  const pid_t tid = s.tid.load(std::memory_order_acquire);
  // Programs often name a thread after it started (memcached names its workers from the main
  // thread): keep looking until a name appears or the loop's first finding goes out.
  if (tid != 0 && !w.named && !w.emitted_finding) {
    NameFromThread(w, tid);
  }
  if (!w.announced && (!c.options.loop_name_from_thread || w.named || w.emitted_finding ||
                       now - w.attached_ns >= kAnnounceAfter.count())) {
    w.announced = true;
    w.emitted_finding = true;  // the daemon knows the loop by this name from now on
    std::string what = agent::internal::KindName(s);
    if (s.runtime[0] != '\0') {
      what += std::string(", ") + s.runtime;
    }
    reporter_->Announce(config_.service, c.snapshot.Name(), std::move(what));
  }
  o.running = tid != 0 && (!s.dispatch_hooked.load(std::memory_order_relaxed) ||
                           s.in_dispatch.load(std::memory_order_acquire));
  o.boundaries = s.boundaries_seen.load(std::memory_order_acquire);
  o.busy_since_ns = s.busy_since_ns.load(std::memory_order_acquire);
  ReadLongPeriods(w, &o);
  o.probe_runs = s.probe_runs.load(std::memory_order_acquire);
  o.probe_due_ns = s.probe_due_ns.load(std::memory_order_relaxed);
  o.probe_last_run_ns = s.probe_last_run_ns.load(std::memory_order_relaxed);

  auto events = w.detector.Observe(o);
  for (int i = 0; i < events.size; ++i) {
    const DetectorEvent& e = events.items[i];
    switch (e.action) {
      case DetectorAction::kBaseline:
        OnBaseline(w, e, now);
        break;
      case DetectorAction::kStarted:
        if (!w.track) {
          OnBaseline(w, e, now);
        }
        w.track->reported = true;
        w.track->start_mono_ns = e.start_ns;
        Sample(w, now, true);
        break;
      case DetectorAction::kResample:
        if (w.track) {
          Sample(w, now, true);
        }
        break;
      case DetectorAction::kEnded:
      case DetectorAction::kEndedShort:
        if (w.track) {
          w.track->reported = true;
          CloseStall(w, e.end_ns, e.estimated, now);
        }
        break;
      case DetectorAction::kCandidateGone:
        w.track.reset();
        break;
      case DetectorAction::kMissed:
        if (!w.track) {
          // Seen only afterwards: its CPU share comes from the loop thread's CPU clock at the
          // watchdog's previous look (at most the CPU it used; other iterations may add a bit).
          OnBaseline(w, e, now);
          w.track->base_cpu_ns = w.last_tick_cpu_ns;
          w.track->base_run_delay_ns = -1;
          w.track->base_steal_ns = -1;
          w.track->base_mono_ns = e.start_ns;
          w.track->reported = true;
          CloseStall(w, e.end_ns, false, now);
        }
        break;
    }
  }
  w.last_tick_cpu_ns = LoopCpu(w);
  // A candidate that is not reported yet: note its syscall cheaply, so a stall that ends between
  // two ticks is still classified.
  if (w.track && !w.track->reported && tid != 0) {
    Sample(w, now, false);
  }

  if (now - w.window.start_ns() >= ReportIntervalNs(c.options)) {
    EmitWindow(w, now);
  }

  int64_t next = w.detector.NextLookNs(o, TickFor(StallThresholdNs(c.options)));
  next = std::min(next, w.window.start_ns() + ReportIntervalNs(c.options));
  if (!w.announced) {
    next = std::min(next, w.attached_ns + kAnnounceAfter.count());
  }
  if (c.epfd_binding == EpfdBinding::kSearch && s.epfd.load(std::memory_order_relaxed) < 0 &&
      w.epfd_searches < LoopWatch::kMaxEpfdSearches) {
    next = std::min(next, std::max(w.epfd_next_search_ns, now + kMinSleep.count()));
  }
  return next;
}

void Watchdog::NameFromThread(LoopWatch& w, pid_t tid) {
  LoopContext& c = *w.ctx;
  if (!c.options.loop_name_from_thread) {
    w.named = true;
    return;
  }
  const std::string name = target_->ThreadName(tid);
  if (name.empty()) {
    return;  // keep loop-N for now; the program may name the thread later
  }
  w.named = true;
  // Unique within the process: "mc-worker", "mc-worker-2", ...
  std::string unique = name;
  for (int k = 2;; ++k) {
    bool taken = false;
    for (const auto& l : loops_) {
      taken = taken || (l.get() != &w && l->ctx->snapshot.Name() == unique);
    }
    if (!taken) {
      break;
    }
    unique = name + "-" + std::to_string(k);
  }
  {
    std::lock_guard<std::mutex> lock(c.snapshot.mu);
    c.snapshot.name = unique;
  }
  Publish(w);
}

void Watchdog::OnBaseline(LoopWatch& w, const DetectorEvent& e, int64_t now) {
  StallTrack t;
  t.id = w.next_stall_id++;
  t.start_mono_ns = e.start_ns;
  t.estimated = e.estimated;
  t.base_mono_ns = now;
  t.base_cpu_ns = LoopCpu(w);
  const pid_t tid = w.ctx->state.tid.load(std::memory_order_acquire);
  t.base_run_delay_ns = tid != 0 ? target_->RunDelay(tid) : -1;
  t.base_steal_ns = target_->StealPerCpu();
  w.track = std::move(t);
}

void Watchdog::NoteSyscall(LoopWatch& w, StallTrack& t, pid_t tid,
                           const platform::SyscallInfo& sys) {
  const int loop_epfd = w.ctx->state.epfd.load(std::memory_order_relaxed);
  // An epoll loop blocks in the agent's epoll fd holding its own (epoll_loop.h).
  const int agent_wait_fd = w.ctx->state.wait_fd.load(std::memory_order_relaxed);
  const int waited_fd = static_cast<int>(sys.args[0]);
  const bool own_wait = sys.nr >= 0 &&
                        ((loop_epfd >= 0 && waited_fd == loop_epfd) ||
                         (agent_wait_fd >= 0 && waited_fd == agent_wait_fd)) &&
                        platform::SyscallName(sys.nr).rfind("epoll_", 0) == 0;
  if (sys.running || own_wait) {
    // In the loop's own epoll_wait while its probe is late: the loop is not blocked by a call,
    // its thread is not getting to run (starved, or the process was paused).
    t.seen_running = true;
  } else if (sys.nr >= 0) {
    const std::string name = platform::SyscallName(sys.nr);
    ++t.syscalls[name];
    t.last_syscall = name;
    int fd = -1;
    if (platform::SyscallTakesFd(sys.nr)) {
      fd = static_cast<int>(sys.args[0]);
    } else if (name == "poll" || name == "ppoll") {
      fd = target_->FirstPollFd(sys.args[0]);
    }
    if (fd >= 0) {
      t.fd_target = target_->DescribeFd(tid, fd);
    } else if (name == "futex") {
      t.fd_target = GilTarget(w, t, sys.args[0]);
    }
  }
}

void Watchdog::Sample(LoopWatch& w, int64_t now, bool with_stack) {
  StallTrack& t = *w.track;
  const pid_t tid = w.ctx->state.tid.load(std::memory_order_acquire);
  if (tid == 0) {
    return;
  }
  auto sys = target_->Syscall(tid);
  ++t.samples;
  // A watchdog process keeps running when the host alone is stopped (SIGSTOP, a debugger): the
  // time the loop thread spends stopped is a suspension, not the loop's doing.
  if (target_->remote() && target_->Stopped(tid)) {
    const int64_t from = t.last_look_mono_ns ? t.last_look_mono_ns : t.start_mono_ns;
    self_clock_.AddSuspension(std::min(from, now), now);
  }
  const int64_t cpu_now = LoopCpu(w);
  const int64_t rd_now = target_->RunDelay(tid);
  const int64_t since_mono = t.last_look_mono_ns ? t.last_look_mono_ns : t.base_mono_ns;
  const int64_t since_cpu = t.last_look_mono_ns ? t.last_look_cpu_ns : t.base_cpu_ns;
  const int64_t since_rd = t.last_look_mono_ns ? t.last_look_run_delay_ns : t.base_run_delay_ns;
  double recent_cpu = -1;
  // A watchdog process reads the loop thread's CPU from schedstat, which moves at scheduler
  // ticks (every 4 ms at HZ=250): over a span of a few ticks it reads 0 for a thread that ran all
  // along. The share is left unknown over a shorter span (the /proc "running" checks remain).
  const bool cpu_span_ok = !target_->remote() || now - since_mono >= kRemoteCpuSpan.count();
  if (cpu_now >= 0 && since_cpu >= 0 && now > since_mono && cpu_span_ok) {
    int64_t busy = cpu_now - since_cpu;
    if (rd_now >= 0 && since_rd >= 0) {
      busy += rd_now - since_rd;
    }
    recent_cpu = static_cast<double>(busy) / static_cast<double>(now - since_mono);
  }
  if (sys) {
    NoteSyscall(w, t, tid, *sys);
  }
  // Stacks are taken on the watchdog only (the unwinder's files are in its file table); the last
  // look at detach runs on the host's thread.
  with_stack = with_stack && t_watchdog_table;
  const bool sampling = config_.sampling != SamplingMode::kOff;
  if (with_stack && sampling && !unwinder_ok_.load(std::memory_order_acquire) &&
      t.sampling_note.empty()) {
    t.sampling_note = "stack unwinder still warming up";
  }
  if (with_stack && sampling && unwinder_ok_.load(std::memory_order_acquire)) {
    if (!t.budget_checked) {
      // The budget goes by stack signature, so the first stack of the stall decides: take it,
      // then see whether this loop has seen the same stack before.
      if (t.stack_attempts < kMaxStackAttemptsPerStall) {
        TakeStack(w, t, sys ? &*sys : nullptr, recent_cpu);
      }
      if (!t.stacks.empty()) {
        t.budget_checked = true;
        DecideStackBudget(w, t, now);
      }
    } else if (t.stacks_allowed && t.stack_attempts < kMaxStackAttemptsPerStall) {
      TakeStack(w, t, sys ? &*sys : nullptr, recent_cpu);
    }
  }
  t.last_look_mono_ns = now;
  t.last_look_cpu_ns = cpu_now;
  t.last_look_run_delay_ns = rd_now;
  if (t.reported) {
    StallFinding f = BuildFinding(w, t, now, true, now);
    {
      std::lock_guard<std::mutex> lock(w.ctx->snapshot.mu);
      w.ctx->snapshot.ongoing = f;
    }
    Publish(w);
    w.emitted_finding = true;
    reporter_->Submit(std::move(f));
  }
}

void Watchdog::TakeStack(LoopWatch& w, StallTrack& t, const platform::SyscallInfo* sys,
                         double recent_cpu) {
  auto& state = w.ctx->state;
  const pid_t tid = state.tid.load(std::memory_order_acquire);
  std::vector<agent::internal::RawFrame> frames;
  std::string method;
  const bool running = sys == nullptr || sys->running;
  if (running || config_.sampling == SamplingMode::kSignalAll) {
    const bool can_signal = target_->CanSignal(state);
    if (!can_signal && t.sampling_note.empty()) {
      t.sampling_note = target_->LostSignalNote(state);
    }
    if (!can_signal) {
      if (t.sampling_note.empty()) {
        t.sampling_note = sampling_status();
      }
      return;
    }
    if (config_.sampling != SamplingMode::kSignalAll) {
      // Signal only a thread that is burning CPU right now: one that is about to enter (or has
      // just left) a syscall could be inside it when the signal lands, and sleeps, poll and
      // epoll_wait would return EINTR. A thread queued for a CPU is left alone too.
      if (recent_cpu >= 0 && recent_cpu < 0.5) {
        return;
      }
      auto again = target_->Syscall(tid);
      if (!again || !again->running) {
        return;
      }
    }
    ++t.stack_attempts;
    RawSample& raw = state.sample;
    const int64_t capture_start = MonotonicNanos();
    Status st = target_->Capture(tid, &state, kSignalTimeout);
    self_clock_.AddIntendedSleep(MonotonicNanos() - capture_start);
    if (!st.ok()) {
      ++t.samples_failed;
      if (st.code() == StatusCode::kFailedPrecondition) {
        // The host took the signal over (for good) or blocks it in this thread (for now): no
        // signal was sent; blocked-thread (/proc) stacks go on.
        t.sampling_note = "running-thread stacks unavailable: " + st.message();
        if (target_->SignalGone(state)) {
          bool changed = false;
          {
            std::lock_guard<std::mutex> lock(status_mu_);
            if (!status_.running_stacks_unavailable()) {
              status_ = {SamplingState::kRunningStacksUnavailable, st.message()};
              changed = true;
            }
          }
          if (changed) {
            agent::internal::LogWarn("{}", t.sampling_note);
          }
        }
      } else {
        t.sampling_note = "signal sample failed: " + st.message();
      }
      return;
    }
    agent::internal::UnwindInput in;
    in.tid = tid;
    in.regs = raw.regs;
    in.stack = raw.stack;
    in.stack_base = raw.stack_base;
    in.stack_len = raw.stack_len;
    auto r = unwinder_.Unwind(in);
    raw.state.store(RawSample::kIdle, std::memory_order_release);
    if (!r.ok()) {
      ++t.samples_failed;
      t.sampling_note = r.status().message();
      return;
    }
    frames = std::move(*r);
    method = "signal";
  } else {
    ++t.stack_attempts;
    // Blocked in a syscall: never signalled. Unwind from the user sp/pc the kernel saved, on the
    // live stack, which is stable while the thread stays in the syscall.
    agent::internal::UnwindInput in;
    in.tid = tid;
    in.sp = sys->sp;
    in.pc = sys->pc;
    auto r = unwinder_.Unwind(in);
    auto after = target_->Syscall(tid);
    if (!after || after->running || after->sp != sys->sp || after->pc != sys->pc ||
        after->nr != sys->nr) {
      ++t.samples_failed;
      t.sampling_note = "the thread left the syscall while it was being unwound";
      return;
    }
    if (!r.ok()) {
      ++t.samples_failed;
      t.sampling_note = r.status().message();
      return;
    }
    frames = std::move(*r);
    method = "proc";
  }
  ++w.stack_samples_total;
  // A Python loop's frames, read now: a blocked thread's hold still; a running thread's were
  // sampled a moment ago and are read as they are now (a torn read gives fewer frames).
  std::vector<agent::PyFrameInfo> python;
  if (const uint64_t ts = state.py_tstate.load(std::memory_order_acquire); ts != 0) {
    python = ReadPythonStack(ts, t);
  }
  std::vector<uint64_t> key;
  key.reserve(frames.size() + python.size());
  for (const auto& f : frames) {
    key.push_back(f.pc);
  }
  // The same native pcs run different Python functions: the Python frames are part of the key.
  for (const auto& p : python) {
    key.push_back(std::hash<std::string>{}(p.qualname) ^
                  (std::hash<std::string>{}(p.filename) << 1) ^
                  (static_cast<uint64_t>(p.line) << 40));
  }
  auto& agg = t.stacks[key];
  if (agg.count == 0) {
    agg.frames = std::move(frames);
    agg.python = std::move(python);
    agg.method = method;
  }
  ++agg.count;
}

const agent::PythonFrameReader* Watchdog::PyReader(StallTrack& t) {
  const agent::PythonFrameReader* py = PyReaderOrNull();
  if (py == nullptr && t.sampling_note.empty()) {
    t.sampling_note = py_reader_error_;
  }
  return py;
}

const agent::PythonFrameReader* Watchdog::PyReaderOrNull() {
  if (!py_reader_tried_) {
    py_reader_tried_ = true;
    auto r = agent::PythonFrameReader::ForProcess(target_->pid());
    if (r.ok()) {
      py_reader_.emplace(std::move(*r));
    } else {
      py_reader_error_ = "Python frames unavailable: " + r.status().message();
      agent::internal::LogWarn("{}", py_reader_error_);
    }
  }
  return py_reader_ ? &*py_reader_ : nullptr;
}

std::string Watchdog::GilTarget(LoopWatch& w, StallTrack& t, uint64_t uaddr) {
  const uint64_t own = w.ctx->state.py_tstate.load(std::memory_order_acquire);
  const agent::PythonFrameReader* py = own != 0 ? PyReader(t) : nullptr;
  if (py == nullptr || !py->IsGilFutex(uaddr)) {
    return "";
  }
  auto gil = py->ReadGil();
  if (!gil.ok() || !gil->locked || gil->holder_tstate == own) {
    return "";  // being handed over: the loop thread is about to run
  }
  auto holder = py->NativeThreadId(gil->holder_tstate, own);
  if (!holder.ok()) {
    return "";
  }
  std::string out = "GIL held by thread " + std::to_string(*holder);
  if (const std::string name = target_->ThreadName(*holder); !name.empty()) {
    out += " (" + name + ")";
  }
  // Where the holder is: its innermost Python frame (it may be running: a torn read gives none).
  if (auto stack = py->Read(gil->holder_tstate, 1); stack.ok() && !stack->empty()) {
    const agent::PyFrameInfo& f = stack->front();
    const size_t slash = f.filename.rfind('/');
    out += " in " + f.qualname + " (" +
           (slash == std::string::npos ? f.filename : f.filename.substr(slash + 1)) + ":" +
           std::to_string(f.line) + ")";
  }
  return out;
}

std::vector<agent::PyFrameInfo> Watchdog::ReadPythonStack(uint64_t tstate, StallTrack& t) {
  const agent::PythonFrameReader* py = PyReader(t);
  if (py == nullptr) {
    return {};
  }
  auto stack = py->Read(tstate);
  if (!stack.ok()) {
    return {};  // a torn read of a running thread: this sample has its native frames only
  }
  return std::move(*stack);
}

StallFinding Watchdog::BuildFinding(LoopWatch& w, const StallTrack& t, int64_t end_mono,
                                    bool ongoing, int64_t now) {
  StallFinding f;
  f.service = config_.service;
  f.pid = target_->pid();
  f.loop = w.ctx->snapshot.Name();
  f.stall_id = t.id;
  f.start_ns = t.start_mono_ns + config_.mono_to_real_ns;
  f.duration_s = static_cast<double>(end_mono - t.start_mono_ns) / 1e9;
  f.ongoing = ongoing;
  f.estimated = t.estimated;
  agent::internal::ClassifierInput in;
  // Ratios over the stall itself: after its end the thread waits (no CPU, no run-queue wait),
  // so CPU read a little later still belongs to the stall, but wall time would not.
  in.wall_ns = std::min(now, end_mono) - t.base_mono_ns;
  const int64_t cpu = LoopCpu(w);
  in.cpu_ns = (cpu >= 0 && t.base_cpu_ns >= 0) ? cpu - t.base_cpu_ns : -1;
  const pid_t tid = w.ctx->state.tid.load(std::memory_order_acquire);
  const int64_t rd = tid != 0 ? target_->RunDelay(tid) : -1;
  in.run_delay_ns = (rd >= 0 && t.base_run_delay_ns >= 0) ? rd - t.base_run_delay_ns : -1;
  const int64_t steal = t.base_steal_ns >= 0 ? target_->StealPerCpu() : -1;
  in.steal_ns = steal >= 0 ? steal - t.base_steal_ns : -1;
  in.suspended_ns = self_clock_.Overlap(t.start_mono_ns, std::max(end_mono, now));
  // For the suspension share, compare with the whole stall, not only the measured span.
  in.suspended_ns = in.suspended_ns * std::max<int64_t>(in.wall_ns, 1) /
                    std::max<int64_t>(end_mono - t.start_mono_ns, 1);
  int best = 0;
  for (const auto& [name, n] : t.syscalls) {
    if (n > best || (n == best && name == t.last_syscall)) {
      best = n;
      in.syscall = name;
    }
  }
  in.fd_target = in.syscall == t.last_syscall ? t.fd_target : "";
  in.seen_running = t.seen_running;
  in.samples = t.samples;
  in.syscall_samples = best;
  // Most frequent stacks first.
  std::vector<const StallTrack::StackAgg*> aggs;
  for (const auto& [k, a] : t.stacks) {
    aggs.push_back(&a);
  }
  std::stable_sort(aggs.begin(), aggs.end(),
                   [](const auto* a, const auto* b) { return a->count > b->count; });
  // A repeated stack over the budget: its samples are counted, its frames are not re-sent (the
  // sampling note names the stall that has them).
  if (t.budget_checked && !t.stacks_allowed) {
    aggs.clear();
  }
  for (const auto* a : aggs) {
    Stack st;
    st.samples = a->count;
    st.method = a->method;
    // Python frames go just inside the interpreter's C call that runs them: each
    // _PyEval_EvalFrameDefault on the native stack runs the Python frames up to and including
    // the next entry frame (PyFrameInfo::entry). Frames left over (a native stack cut short)
    // go last.
    size_t py = 0;
    auto python_run = [&] {
      while (py < a->python.size()) {
        const agent::PyFrameInfo& p = a->python[py++];
        Frame pf;
        pf.function = p.qualname;
        pf.file = p.filename;
        pf.line = p.line;
        pf.kind = "python";
        st.frames.push_back(std::move(pf));
        if (p.entry) {
          break;
        }
      }
    };
    for (const auto& rf : a->frames) {
      Frame fr = unwinder_.Symbolize(rf);
      // The agent's own frames (its wrappers of the dispatch functions) say nothing about the
      // host: leave them out.
      if (agent::internal::Unwinder::IsOwnModule(fr.module)) {
        continue;
      }
      if (fr.function == "_PyEval_EvalFrameDefault") {
        python_run();
      }
      st.frames.push_back(std::move(fr));
    }
    while (py < a->python.size()) {
      python_run();
    }
    f.stacks.push_back(std::move(st));
  }
  // The stacks' functions and places are evidence for the hint (getaddrinfo under a poll: DNS;
  // http/client.py under it: a blocking HTTP client).
  for (const Stack& st : f.stacks) {
    for (const Frame& fr : st.frames) {
      in.functions.push_back(fr.function);
      in.places.push_back(fr.kind == "python" ? fr.file : fr.module);
    }
  }
  in.runtime = w.ctx->state.runtime;
  auto cls = agent::internal::Classify(in);
  f.stall_class = cls.stall_class;
  f.cpu_ratio = cls.cpu_ratio;
  f.wait_ratio = cls.wait_ratio;
  f.hint = cls.hint;
  // A frame removed by a tail call cannot be recovered; say so where the stack shows it.
  if (!aggs.empty()) {
    if (std::string note = unwinder_.TailCallNote(aggs.front()->frames); !note.empty()) {
      f.hint += " " + note;
    }
  }
  if (f.stall_class == StallClass::kBlocked || f.stall_class == StallClass::kUnknown) {
    f.syscall = in.syscall;
    f.fd_target = in.fd_target;
  } else if (f.stall_class != StallClass::kCpu) {
    f.syscall = in.syscall;
  }
  f.samples_failed = t.samples_failed;
  f.reports_suppressed = w.stack_budget.reports_suppressed_total();
  f.sampling_note = t.sampling_note;
  if (f.stacks.empty() && f.sampling_note.empty()) {
    if (config_.sampling == SamplingMode::kOff) {
      f.sampling_note = "sampling off";
    } else if (!t.reported || t.stack_attempts == 0) {
      f.sampling_note = "stall ended before a sample";
    }
  }
  return f;
}

void Watchdog::CloseStall(LoopWatch& w, int64_t end_mono, bool estimated, int64_t now) {
  StallTrack& t = *w.track;
  t.estimated = t.estimated || estimated;
  StallFinding f = BuildFinding(w, t, end_mono, false, now);
  ++w.stalls_total;
  {
    auto& snap = w.ctx->snapshot;
    std::lock_guard<std::mutex> lock(snap.mu);
    snap.ongoing.reset();
    snap.recent.push_back(f);
    if (snap.recent.size() > agent::internal::PublishedSnapshot::kRecentStalls) {
      snap.recent.pop_front();
    }
  }
  Publish(w);
  w.emitted_finding = true;
  reporter_->Submit(std::move(f));
  w.track.reset();
}

void Watchdog::EmitWindow(LoopWatch& w, int64_t now) {
  auto& s = w.ctx->state;
  agent::internal::WindowReading r;
  r.now_ns = now;
  s.delay_hist.Snapshot(&r.delay);
  s.iteration_hist.Snapshot(&r.iter);
  r.delay_window_max_ns = s.delay_hist.TakeWindowMax();
  r.iter_window_max_ns = s.iteration_hist.TakeWindowMax();
  r.boundaries = s.boundaries_seen.load(std::memory_order_acquire);
  r.busy_since_ns = s.busy_since_ns.load(std::memory_order_acquire);
  r.busy_total_ns = s.busy_total_ns.load(std::memory_order_relaxed);
  r.probe_busy_est_ns = s.probe_busy_est_ns.load(std::memory_order_relaxed);
  r.iterations = s.iterations.load(std::memory_order_relaxed);

  DelayFinding d;
  d.service = config_.service;
  d.pid = target_->pid();
  d.loop = w.ctx->snapshot.Name();
  d.end_ns = now + config_.mono_to_real_ns;
  d.boundary_source = agent::internal::BoundarySource(s);
  d.loop_kind = agent::internal::KindName(s);
  d.runtime = s.runtime;
  w.window.Close(r, &d);
  d.stalls_total = w.stalls_total;
  d.stack_samples_total = w.stack_samples_total;
  d.reports_suppressed_total = w.stack_budget.reports_suppressed_total();
  d.findings_dropped_total = reporter_->dropped();
  {
    std::lock_guard<std::mutex> lock(w.ctx->snapshot.mu);
    w.ctx->snapshot.last_window = d;
  }
  Publish(w);
  w.emitted_finding = true;
  const double window_s = d.window_s;
  reporter_->Submit(std::move(d));
  EmitCalls(w, now, window_s);
}

void Watchdog::EmitCalls(LoopWatch& w, int64_t now, double window_s) {
  uint64_t overflow = 0;
  std::vector<agent::internal::LedgerRow> rows =
      w.ledger_cursor.Take(w.ctx->state.ledger, &overflow);
  if (rows.empty() && overflow == 0) {
    return;
  }
  constexpr double kNsPerSecond = 1e9;
  CallsFinding c;
  c.service = config_.service;
  c.pid = target_->pid();
  c.loop = w.ctx->snapshot.Name();
  c.end_ns = now + config_.mono_to_real_ns;
  c.window_s = window_s;
  c.overflow = overflow;
  const bool symbolize = unwinder_ok_.load(std::memory_order_acquire);
  for (const auto& row : rows) {
    CallSiteStats e;
    e.call = agent::internal::BlockingCallName(row.call);
    if (auto it = w.ledger_sites.find(row.site); it != w.ledger_sites.end()) {
      e.site = it->second;
    } else if (row.py_code != 0 && PythonCallSite(row, &e.site)) {
      w.ledger_sites.emplace(row.site, e.site);
    } else if (row.py_code != 0 && symbolize) {
      // The Python caller is not readable (its code object gone): the interpreter's C code.
      e.site = unwinder_.Symbolize(agent::internal::RawFrame{row.native, false});
    } else if (row.py_code != 0) {
      e.site.offset = row.native;
    } else if (symbolize) {
      // The return address into the caller: symbolized as a return address (pc - 1), file:line
      // added on the reporter thread.
      e.site = unwinder_.Symbolize(agent::internal::RawFrame{row.site, false});
      w.ledger_sites.emplace(row.site, e.site);
    } else {
      e.site.offset = row.site;  // not symbolized yet: the raw address
    }
    e.count = row.count;
    e.total_s = static_cast<double>(row.total_ns) / kNsPerSecond;
    e.max_s = static_cast<double>(row.max_ns) / kNsPerSecond;
    e.p99_s = static_cast<double>(row.p99_ns) / kNsPerSecond;
    e.buckets = row.buckets;
    c.calls.push_back(std::move(e));
  }
  reporter_->Submit(std::move(c));
}

bool Watchdog::PythonCallSite(const agent::internal::LedgerRow& row, Frame* site) {
  const agent::PythonFrameReader* py = PyReaderOrNull();
  if (py == nullptr) {
    return false;
  }
  auto where = py->Locate(row.py_code, row.site);
  if (!where.ok()) {
    return false;
  }
  site->function = std::move(where->qualname);
  site->file = std::move(where->filename);
  site->line = where->line;
  site->kind = "python";
  return true;
}

void Watchdog::Publish(LoopWatch& w) {
  const LoopContext& c = *w.ctx;
  if (c.served != nullptr) {
    w.snapshot_writer.Publish(c.snapshot, &c.served->snapshot);
  }
}

}  // namespace stallwatch::internal
