#include "runtime.h"

#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "log.h"
#include "platform/proc.h"
#include "stallwatch/common/clock.h"
#include "wait_hook.h"

namespace stallwatch::internal {

using agent::internal::DetectorAction;
using agent::internal::DetectorEvent;
using agent::internal::Log;
using agent::internal::LoopObservation;
using agent::internal::RawSample;
namespace platform = agent::platform;

namespace {

constexpr size_t kRecentStalls = 64;
// The stack budget by signature: how many of a stack's innermost host frames make its
// signature, and how many signatures a loop remembers (the least recently seen is forgotten).
constexpr size_t kSignatureFrames = 8;
constexpr size_t kMaxKnownStacks = 256;
constexpr int kMaxStackAttemptsPerStall = 16;
constexpr auto kSignalTimeout = std::chrono::milliseconds(20);
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
constexpr std::chrono::nanoseconds kMaxSleep = std::chrono::seconds(1);
// Time the watchdog neither ran, waited for a CPU, nor meant to sleep: above this, the whole
// process is taken to have been suspended.
constexpr std::chrono::nanoseconds kSuspendedAtLeast = std::chrono::milliseconds(20);
// Looking for a loop's epoll fd again (attach could not bind it): every this long, and never
// sooner than kMinSleep from now.
constexpr std::chrono::nanoseconds kEpfdRetryEvery = std::chrono::seconds(1);

std::mutex g_runtime_mu;
std::weak_ptr<Runtime> g_runtime;
// Whether the calling thread is the watchdog (or its warm-up thread): only these may use the
// unwinder's and the watchdog's open files, which live in the watchdog's own file table.
thread_local bool t_watchdog_table = false;

std::string ProgramName() {
  std::string comm;
  if (platform::ReadSmallFile("/proc/self/comm", &comm)) {
    while (!comm.empty() && (comm.back() == '\n' || comm.back() == ' ')) comm.pop_back();
    if (!comm.empty()) return comm;
  }
  return "unknown";
}

int64_t TickFor(int64_t threshold_ns) {
  return std::clamp<int64_t>(threshold_ns / 5, kMinLoopTick.count(), kMaxLoopTick.count());
}

// Options reach the runtime resolved (Agent::Attach, the watchdog process's slots); the
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
    if (base.rfind(p, 0) == 0) return true;
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

// In stallwatch-watchdog: the host process it serves (0: none, this is the host).
pid_t g_serve_pid = 0;
int g_serve_signal = 0;

int64_t RunDelay(pid_t tid) {
  auto ss = platform::ReadThreadSchedstat(tid);
  return ss ? static_cast<int64_t>(ss->run_delay_ns) : -1;
}

// The fd a poll()/ppoll() waits on: the first pollfd of the array at args[0].
int FirstPollFd(uint64_t array_addr) {
  struct {
    int fd;
    short events, revents;
  } pfd{};
  iovec local{&pfd, sizeof(pfd)};
  iovec remote{reinterpret_cast<void*>(array_addr), sizeof(pfd)};
  if (::process_vm_readv(platform::TargetPid(), &local, 1, &remote, 1, 0) != sizeof(pfd)) {
    return -1;
  }
  return pfd.fd;
}

}  // namespace

// fork(): the child has no watchdog or reporter thread, and any lock one of them held stays
// held. The child abandons the inherited runtime (leaked on purpose, never locked or joined);
// a base it creates or attaches afterwards gets a fresh runtime with threads of its own.
void PrepareFork() { g_runtime_mu.lock(); }
void ParentAfterFork() { g_runtime_mu.unlock(); }
void ChildAfterFork() {
  if (auto rt = g_runtime.lock()) {
    rt->MarkForkedChild();
    // The loops' state of a watchdog process's host is shared with that process: the child's
    // copies of the loops must write into memory of their own.
    if (rt->watchdog_process() != nullptr) rt->watchdog_process()->PrivatizeInChild();
    new std::shared_ptr<Runtime>(rt);  // abandoned: its threads do not exist in this process
  }
  g_runtime.reset();
  agent::internal::UnregisterAllLoops();
  g_runtime_mu.unlock();
}

void Runtime::ServeHost(pid_t pid, int sample_signal) {
  g_serve_pid = pid;
  g_serve_signal = sample_signal;
  platform::SetTargetProcess(pid);
}

int64_t Runtime::LoopCpu(LoopContext& c) const {
  const auto& s = c.state;
  if (serving_) {
    // Another process's thread CPU clock cannot be read; its schedstat can (updated at each
    // scheduler tick and switch: a few ms behind for a thread that is running). Kept open and
    // re-read with pread, as the watchdog's own.
    const pid_t tid = s.tid.load(std::memory_order_acquire);
    if (tid == 0) return -1;
    if (c.schedstat_tid != tid) {
      c.schedstat_file = std::make_unique<platform::ProcFile>(
          std::string(platform::ProcRoot()) + "/task/" + std::to_string(tid) + "/schedstat");
      c.schedstat_tid = tid;
    }
    auto ss = platform::ReadSchedstat(*c.schedstat_file);
    return ss ? static_cast<int64_t>(ss->exec_ns) : -1;
  }
  if (!s.cpu_clock_ok.load(std::memory_order_acquire)) return -1;
  return CpuClockNanos(s.cpu_clock);
}

StatusOr<std::shared_ptr<Runtime>> Runtime::Acquire(const Options& options) {
  static const bool atfork = [] {
    pthread_atfork(PrepareFork, ParentAfterFork, ChildAfterFork);
    return true;
  }();
  (void)atfork;
  std::lock_guard<std::mutex> lock(g_runtime_mu);
  if (auto rt = g_runtime.lock()) return rt;
  std::shared_ptr<Runtime> rt(new Runtime());
  rt->service_ = options.service.empty() ? ProgramName() : options.service;
  rt->sampling_ = options.sampling.value_or(SamplingMode::kOn);
  rt->mono_to_real_ns_ = RealtimeNanos() - MonotonicNanos();
  rt->serving_ = g_serve_pid > 0;
  rt->remote_signal_ = g_serve_signal;
  const std::string endpoint_text = options.endpoint.empty() ? kDefaultEndpoint : options.endpoint;
  auto endpoint = agent::internal::ParseEndpoint(endpoint_text);
  if (!endpoint.ok()) return endpoint.status();
  endpoint->token_file = options.token_file;
  if (rt->sampling_ == SamplingMode::kOff) {
    rt->sampling_status_ = "off (STALLWATCH_SAMPLING=off)";
  } else if (rt->serving_) {
    if (rt->remote_signal_ == 0) {
      rt->sampling_status_ = "running-thread stacks unavailable: no sampling signal in the host";
    }
  } else {
    const int signo =
        options.sample_signal != 0 ? options.sample_signal : platform::DefaultSampleSignal();
    if (Status st = rt->sampler_.Install(signo); !st.ok()) {
      rt->sampling_status_ = "running-thread stacks unavailable: " + st.message();
      try {
        Log().warn("{}", rt->sampling_status_);
      } catch (...) {
      }
    }
  }
  if (!rt->serving_) {
    std::string why;
    if (WatchdogProcess::Wanted(options, &why)) {
      rt->watchdog_process_ = WatchdogProcess::Start(
          options, rt->service_, rt->sampler_.available() ? rt->sampler_.signo() : 0, &why);
      if (rt->watchdog_process_) {
        g_runtime = rt;
        return rt;
      }
      try {
        Log().warn("watchdog process unavailable ({}); the watchdog runs as a thread", why);
      } catch (...) {
      }
    }
  }
  rt->reporter_ = std::make_unique<agent::internal::Reporter>(
      agent::internal::MakeSink(*endpoint, options.queue_capacity), options.queue_capacity);
  if (rt->sampling_ != SamplingMode::kOff) {
    // file:line are resolved on the reporter thread with a libdw session of its own: indexing a
    // large debug file (e.g. libc's, ~100 ms) must not hold up stall detection.
    auto lines = std::make_shared<agent::internal::LineResolver>();
    rt->reporter_->SetEnricher([lines](agent::internal::Finding& f) {
      if (auto* s = std::get_if<StallFinding>(&f)) {
        for (auto& st : s->stacks) lines->AddLines(&st);
      }
    });
  }
  rt->thread_ = std::thread([raw = rt.get()] { raw->Run(); });
  g_runtime = rt;
  return rt;
}

Runtime::~Runtime() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  warm_cancel_.store(true);
  if (thread_.joinable()) thread_.join();
  if (warm_thread_.joinable()) warm_thread_.join();
  reporter_.reset();          // delivers what it can, joins its thread
  watchdog_process_.reset();  // stops it (no signal is sent after this) and reaps it
  sampler_.Uninstall();
}

void Runtime::Add(const std::shared_ptr<LoopContext>& ctx) {
  std::lock_guard<std::mutex> lock(mu_);
  if (watchdog_process_) {
    watchdog_process_->Activate(ctx->slot, ctx->name, ctx->options, ctx->probe.timer_fd(),
                                ctx->state.epfd.load() < 0 && ctx->epfd_tries < 1000);
    return;
  }
  const auto& o = ctx->options;
  agent::internal::DetectorConfig dc;
  dc.threshold_ns = StallThresholdNs(o);
  dc.first_resample_ns = std::max<int64_t>(dc.threshold_ns / 2, kMinFirstResample.count());
  dc.max_resample_ns = kMaxResample.count();
  ctx->detector.emplace(dc);
  const int64_t now = MonotonicNanos();
  ctx->window_start_ns = now;
  ctx->attached_ns = now;
  ctx->state.delay_hist.Snapshot(&ctx->prev_delay);
  ctx->state.iteration_hist.Snapshot(&ctx->prev_iter);
  ctx->stack_tokens = MaxStackReports(o);
  ctx->tokens_refilled_ns = now;
  if (o.on_stall || o.on_delay) {
    reporter_->SetHooks(ctx->name, {o.on_stall, o.on_delay});
  }
  loops_.push_back(ctx);
  cv_.notify_all();
}

void Runtime::Remove(LoopContext* ctx) {
  if (forked_child()) return;
  if (watchdog_process_) {
    watchdog_process_->Detach(ctx->slot);
    return;
  }
  std::string name;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = MonotonicNanos();
    // One last look, so a stall that ended just before detach closes with its exact end (and a
    // pause the watchdog has not woken up from yet is known).
    if (waiting_) {
      const OwnClocks at = ReadOwnClocks();
      AccountOwnTime(wait_start_, at, std::min(wait_tick_ns_, at.mono - wait_start_.mono));
      waiting_ = false;
    }
    try {
      ProcessLoop(*ctx, now);
    } catch (...) {
    }
    if (ctx->track && ctx->track->reported) CloseStall(*ctx, now, true, now);
    ctx->track.reset();
    EmitWindow(*ctx, now);
    std::erase_if(loops_, [&](const auto& p) { return p.get() == ctx; });
    std::lock_guard<std::mutex> snap(ctx->snap_mu);
    name = ctx->name;
  }
  // The loop's last findings go through its hooks before detach returns; after it, the hooks
  // are never called again (bounded: a hook that hangs delays detach by at most 1 s).
  if (ctx->options.on_stall || ctx->options.on_delay) {
    reporter_->FlushAndRemoveHooks(name, std::chrono::seconds(1));
  }
}

std::string Runtime::sampling_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (watchdog_process_ && sampling_status_ == "ok") {
    std::string remote = watchdog_process_->sampling_status();
    return remote.empty() ? sampling_status_ : remote;
  }
  return sampling_status_;
}

void Runtime::Run() {
  // The watchdog (and the warm-up thread it starts) leave the host's file table first: see
  // platform::DetachFileTable. Everything they open is used and closed on them.
  file_table_private_ = serving_ ? false : platform::DetachFileTable();
  t_watchdog_table = true;
  own_schedstat_ = std::make_unique<platform::ProcFile>("/proc/thread-self/schedstat");
  // Warm the unwinder up off the host's threads and off the watchdog's own loop (loading symbol
  // tables and DWARF indexes of large modules takes up to hundreds of ms; detection and
  // classification must not wait for it).
  if (sampling_ != SamplingMode::kOff) {
    warm_thread_ = std::thread([this] {
      t_watchdog_table = true;
      Status st = unwinder_.Init(&warm_cancel_);
      if (st.ok()) {
        unwinder_ok_.store(true, std::memory_order_release);
      } else {
        std::lock_guard<std::mutex> lock(mu_);
        sampling_status_ = "stacks unavailable: " + st.message();
      }
    });
  }
  std::unique_lock<std::mutex> lock(mu_);
  watchdog_tid_ = platform::GetTid();
  watchdog_cpu_clock_ok_ = pthread_getcpuclockid(pthread_self(), &watchdog_cpu_clock_) == 0;
  OwnClocks woke = ReadOwnClocks();
  int64_t next_look = woke.mono + kFirstLook.count();
  while (!stop_) {
    // Processing since the last wake-up: running, queued, or waiting for a signal sample.
    wait_start_ = ReadOwnClocks();
    AccountOwnTime(woke, wait_start_, intended_sleep_ns_);
    intended_sleep_ns_ = 0;
    // Sleep until the earliest time a loop needs a look (half the threshold when all are idle:
    // 25 ms at the default 50 ms), at least 1 ms and at most 1 s. Add() and Remove() wake it.
    const int64_t wait =
        std::clamp<int64_t>(next_look - wait_start_.mono, kMinSleep.count(), kMaxSleep.count());
    wait_tick_ns_ = wait;
    waiting_ = true;
    cv_.wait_for(lock, std::chrono::nanoseconds(wait));
    if (!waiting_) wait_start_ = ReadOwnClocks();  // Remove() accounted the wait so far
    waiting_ = false;
    if (stop_) break;
    woke = ReadOwnClocks();
    AccountOwnTime(wait_start_, woke, std::min(wait_tick_ns_, woke.mono - wait_start_.mono));
    const int64_t now = woke.mono;
    next_look = Tick(now);
  }
  // Close the files of the watchdog's table here, on a thread of that table.
  lock.unlock();
  warm_cancel_.store(true);
  if (warm_thread_.joinable()) warm_thread_.join();
  unwinder_ok_.store(false, std::memory_order_release);
  unwinder_.Shutdown();
  own_schedstat_.reset();
}

int64_t Runtime::Tick(int64_t now) {
  int64_t next = now + kMaxSleep.count();
  for (const auto& l : loops_) {
    try {
      next = std::min(next, ProcessLoop(*l, now));
    } catch (const std::exception& e) {
      next = std::min(next, now + TickFor(StallThresholdNs(l->options)));
      try {
        Log().error("watchdog: loop {}: {}", l->name, e.what());
      } catch (...) {
      }
    }
  }
  return next;
}

Runtime::OwnClocks Runtime::ReadOwnClocks() const {
  OwnClocks c;
  c.mono = MonotonicNanos();
  c.cpu = watchdog_cpu_clock_ok_ ? CpuClockNanos(watchdog_cpu_clock_) : 0;
  std::optional<platform::SchedStat> ss;
  if (t_watchdog_table && own_schedstat_) {
    ss = platform::ReadSchedstat(*own_schedstat_);
  } else if (watchdog_tid_ != 0) {
    ss = platform::ReadThreadSchedstat(watchdog_tid_);  // Remove(), on a host thread
  }
  c.run_delay = ss ? static_cast<int64_t>(ss->run_delay_ns) : 0;
  return c;
}

void Runtime::AccountOwnTime(const OwnClocks& from, const OwnClocks& to,
                             int64_t intended_sleep_ns) {
  const int64_t span = to.mono - from.mono;
  const int64_t unaccounted =
      span - (to.cpu - from.cpu) - (to.run_delay - from.run_delay) - intended_sleep_ns;
  if (unaccounted > kSuspendedAtLeast.count()) {
    suspended_.emplace_back(to.mono - unaccounted, to.mono);
    if (suspended_.size() > 32) suspended_.pop_front();
  }
}

int64_t Runtime::SuspendedOverlap(int64_t from, int64_t to) const {
  int64_t total = 0;
  for (const auto& [a, b] : suspended_) {
    const int64_t lo = std::max(a, from), hi = std::min(b, to);
    if (hi > lo) total += hi - lo;
  }
  return total;
}

bool Runtime::TakeStackToken(LoopContext& c, int64_t now) {
  const int budget = MaxStackReports(c.options);
  const double per_ns = budget / 60e9;
  c.stack_tokens = std::min<double>(budget, c.stack_tokens + (now - c.tokens_refilled_ns) * per_ns);
  c.tokens_refilled_ns = now;
  if (c.stack_tokens >= 1) {
    c.stack_tokens -= 1;
    return true;
  }
  return false;
}

uint64_t Runtime::StackSignature(const std::vector<agent::internal::RawFrame>& frames,
                                 std::string* top_frame) {
  // Functions, not pcs: a CPU-bound stall is sampled at a different instruction each time, but
  // in the same functions. Frames without a name count by module and offset.
  uint64_t h = 1469598103934665603ull;
  size_t used = 0;
  std::string first_named;
  top_frame->clear();
  for (const auto& rf : frames) {
    if (used == kSignatureFrames && !top_frame->empty()) break;
    Frame fr = unwinder_.Symbolize(rf);
    if (agent::internal::Unwinder::IsOwnModule(fr.module)) continue;
    if (first_named.empty() && !fr.function.empty()) first_named = fr.function;
    if (top_frame->empty() && !fr.function.empty() && !IsSystemModule(fr.module)) {
      *top_frame = fr.function;
    }
    if (used < kSignatureFrames) {
      h = Fnv1a(h, fr.module);
      h = Fnv1a(h, fr.function.empty() ? std::to_string(fr.offset) : fr.function);
      ++used;
    }
  }
  if (top_frame->empty()) *top_frame = first_named;
  return h;
}

void Runtime::DecideStackBudget(LoopContext& c, StallTrack& t, int64_t now) {
  const auto& first = t.stacks.begin()->second;
  std::string top;
  const uint64_t sig = StackSignature(first.frames, &top);
  auto it = std::find_if(c.known_stacks.begin(), c.known_stacks.end(),
                         [&](const KnownStack& k) { return k.signature == sig; });
  if (it == c.known_stacks.end()) {
    // A stack this loop has not seen: always reported, whatever the budget says (it may be the
    // one stall that names the culprit). It uses a token when one is left.
    (void)TakeStackToken(c, now);
    t.stacks_allowed = true;
    c.known_stacks.push_back({sig, t.id, top, 0});
    if (c.known_stacks.size() > kMaxKnownStacks) c.known_stacks.pop_front();
    return;
  }
  // Most recently seen last: a signature that keeps repeating is never the one forgotten.
  KnownStack known = *it;
  c.known_stacks.erase(it);
  if (TakeStackToken(c, now)) {
    t.stacks_allowed = true;
  } else {
    t.stacks_allowed = false;
    ++c.reports_suppressed_total;
    ++known.repeats_suppressed;
    const int budget = MaxStackReports(c.options);
    t.sampling_note = "stack repeats stall " + std::to_string(known.stall_id) +
                      (known.top_frame.empty() ? "" : " (in " + known.top_frame + ")") +
                      ": sampled, not re-sent (repeated stacks beyond " + std::to_string(budget) +
                      "/min per loop are counted; " + std::to_string(known.repeats_suppressed) +
                      " so far)";
  }
  c.known_stacks.push_back(std::move(known));
}

int64_t Runtime::ProcessLoop(LoopContext& c, int64_t now) {
  auto& s = c.state;
  // Bind the loop's epoll fd if attach could not (e.g. libevent applies epoll changes lazily).
  const int probe_fd = c.served ? c.served->probe_fd : c.probe.timer_fd();
  if (s.epfd.load(std::memory_order_relaxed) < 0 && c.epfd_tries < 10 &&
      now >= c.epfd_next_try_ns && probe_fd >= 0) {
    ++c.epfd_tries;
    c.epfd_next_try_ns = now + kEpfdRetryEvery.count();
    const int epfd =
        platform::FindEpollFdContaining(probe_fd, s.tid.load(std::memory_order_acquire));
    if (epfd >= 0 && c.served) {
      s.pending_epfd.store(epfd, std::memory_order_relaxed);  // the probe binds it in the host
    } else if (epfd >= 0) {
      agent::internal::BindEpollFd(&s, epfd);
    }
  }

  LoopObservation o;
  o.now_ns = now;
  const pid_t tid = s.tid.load(std::memory_order_acquire);
  // Programs often name a thread after it started (memcached names its workers from the main
  // thread): keep looking until a name appears or the loop's first finding goes out.
  if (tid != 0 && !c.named && !c.emitted_finding) NameFromThread(c, tid);
  if (!c.announced && (!c.options.loop_name_from_thread || c.named || c.emitted_finding ||
                       now - c.attached_ns >= kAnnounceAfter.count())) {
    c.announced = true;
    c.emitted_finding = true;  // the daemon knows the loop by this name from now on
    std::string name;
    {
      std::lock_guard<std::mutex> lock(c.snap_mu);
      name = c.name;
    }
    reporter_->Announce(service_, std::move(name));
  }
  o.running = tid != 0 && (!s.dispatch_hooked.load(std::memory_order_relaxed) ||
                           s.in_dispatch.load(std::memory_order_acquire));
  o.boundaries = s.boundaries_seen.load(std::memory_order_acquire);
  o.busy_since_ns = s.busy_since_ns.load(std::memory_order_acquire);
  {
    // New long busy periods since the last look (the ring keeps the last kLongRing).
    constexpr uint64_t kRing = agent::internal::LoopState::kLongRing;
    const uint64_t seq = s.long_seq.load(std::memory_order_acquire);
    uint64_t from = std::max(c.long_seq_seen, seq > kRing ? seq - kRing : 0);
    c.long_periods_lost += from - std::min(from, c.long_seq_seen);
    for (uint64_t i = from; i < seq; ++i) {
      const auto& slot = s.long_ring[i % kRing];
      const int64_t start = slot.start_ns.load(std::memory_order_relaxed);
      const int64_t end = slot.end_ns.load(std::memory_order_relaxed);
      // A slot overwritten while we read it is lost rather than mixed up.
      if (s.long_seq.load(std::memory_order_acquire) - i > kRing) {
        ++c.long_periods_lost;
        continue;
      }
      o.AddLongPeriod(start, end);
    }
    c.long_seq_seen = seq;
  }
  o.probe_runs = s.probe_runs.load(std::memory_order_acquire);
  o.probe_due_ns = s.probe_due_ns.load(std::memory_order_relaxed);
  o.probe_last_run_ns = s.probe_last_run_ns.load(std::memory_order_relaxed);

  auto events = c.detector->Observe(o);
  for (int i = 0; i < events.size; ++i) {
    const DetectorEvent& e = events.items[i];
    switch (e.action) {
      case DetectorAction::kBaseline:
        OnBaseline(c, e, now);
        break;
      case DetectorAction::kStarted:
        if (!c.track) OnBaseline(c, e, now);
        c.track->reported = true;
        c.track->start_mono_ns = e.start_ns;
        Sample(c, now, true);
        break;
      case DetectorAction::kResample:
        if (c.track) Sample(c, now, true);
        break;
      case DetectorAction::kEnded:
      case DetectorAction::kEndedShort:
        if (c.track) {
          c.track->reported = true;
          CloseStall(c, e.end_ns, e.estimated, now);
        }
        break;
      case DetectorAction::kCandidateGone:
        c.track.reset();
        break;
      case DetectorAction::kMissed:
        if (!c.track) {
          // Seen only afterwards: its CPU share comes from the loop thread's CPU clock at the
          // watchdog's previous look (at most the CPU it used; other iterations may add a bit).
          OnBaseline(c, e, now);
          c.track->base_cpu_ns = c.last_tick_cpu_ns;
          c.track->base_run_delay_ns = -1;
          c.track->base_mono_ns = e.start_ns;
          c.track->reported = true;
          CloseStall(c, e.end_ns, false, now);
        }
        break;
    }
  }
  c.last_tick_cpu_ns = LoopCpu(c);
  // A candidate that is not reported yet: note its syscall cheaply, so a stall that ends between
  // two ticks is still classified.
  if (c.track && !c.track->reported && tid != 0) Sample(c, now, false);

  if (now - c.window_start_ns >= ReportIntervalNs(c.options)) EmitWindow(c, now);

  int64_t next = c.detector->NextLookNs(o, TickFor(StallThresholdNs(c.options)));
  next = std::min(next, c.window_start_ns + ReportIntervalNs(c.options));
  if (!c.announced) next = std::min(next, c.attached_ns + kAnnounceAfter.count());
  if (s.epfd.load(std::memory_order_relaxed) < 0 && c.epfd_tries < 10) {
    next = std::min(next, std::max(c.epfd_next_try_ns, now + kMinSleep.count()));
  }
  return next;
}

void Runtime::NameFromThread(LoopContext& c, pid_t tid) {
  if (!c.options.loop_name_from_thread) {
    c.named = true;
    return;
  }
  std::string name;
  if (tid == platform::TargetPid()) {
    name = "main";
  } else {
    std::string comm, process;
    const std::string root = platform::ProcRoot();
    const std::string path = root + "/task/" + std::to_string(tid) + "/comm";
    if (platform::ReadSmallFile(path.c_str(), &comm) &&
        platform::ReadSmallFile((root + "/comm").c_str(), &process) && comm != process) {
      while (!comm.empty() && (comm.back() == '\n' || comm.back() == ' ')) comm.pop_back();
      name = comm;
    }
  }
  if (name.empty()) return;  // keep loop-N for now; the program may name the thread later
  c.named = true;
  // Unique within the process: "mc-worker", "mc-worker-2", ...
  std::string unique = name;
  for (int k = 2;; ++k) {
    bool taken = false;
    for (const auto& l : loops_) taken = taken || (l.get() != &c && l->name == unique);
    if (!taken) break;
    unique = name + "-" + std::to_string(k);
  }
  {
    std::lock_guard<std::mutex> lock(c.snap_mu);
    c.name = unique;
  }
  PublishSnapshot(c);
}

void Runtime::OnBaseline(LoopContext& c, const DetectorEvent& e, int64_t now) {
  StallTrack t;
  t.id = c.next_stall_id++;
  t.start_mono_ns = e.start_ns;
  t.estimated = e.estimated;
  t.base_mono_ns = now;
  t.base_cpu_ns = LoopCpu(c);
  const pid_t tid = c.state.tid.load(std::memory_order_acquire);
  t.base_run_delay_ns = tid != 0 ? RunDelay(tid) : -1;
  c.track = std::move(t);
}

void Runtime::Sample(LoopContext& c, int64_t now, bool with_stack) {
  StallTrack& t = *c.track;
  const pid_t tid = c.state.tid.load(std::memory_order_acquire);
  if (tid == 0) return;
  auto sys = platform::ReadThreadSyscall(tid);
  ++t.samples;
  if (serving_) {
    // A watchdog process keeps running when the host alone is stopped (SIGSTOP, a debugger):
    // the time the loop thread spends stopped is a suspension, not the loop's doing.
    if (auto ts = platform::ReadThreadStat(tid); ts && (ts->state == 'T' || ts->state == 't')) {
      const int64_t from = t.last_look_mono_ns ? t.last_look_mono_ns : t.start_mono_ns;
      suspended_.emplace_back(std::min(from, now), now);
      if (suspended_.size() > 32) suspended_.pop_front();
    }
  }
  const int64_t cpu_now = LoopCpu(c);
  const int64_t rd_now = RunDelay(tid);
  const int64_t since_mono = t.last_look_mono_ns ? t.last_look_mono_ns : t.base_mono_ns;
  const int64_t since_cpu = t.last_look_mono_ns ? t.last_look_cpu_ns : t.base_cpu_ns;
  const int64_t since_rd = t.last_look_mono_ns ? t.last_look_run_delay_ns : t.base_run_delay_ns;
  double recent_cpu = -1;
  if (cpu_now >= 0 && since_cpu >= 0 && now > since_mono) {
    int64_t busy = cpu_now - since_cpu;
    if (rd_now >= 0 && since_rd >= 0) busy += rd_now - since_rd;
    recent_cpu = static_cast<double>(busy) / static_cast<double>(now - since_mono);
  }
  if (sys) {
    const int loop_epfd = c.state.epfd.load(std::memory_order_relaxed);
    const bool own_wait = sys->nr >= 0 && loop_epfd >= 0 &&
                          static_cast<int>(sys->args[0]) == loop_epfd &&
                          platform::SyscallName(sys->nr).rfind("epoll_", 0) == 0;
    if (sys->running || own_wait) {
      // In the loop's own epoll_wait while its probe is late: the loop is not blocked by a call,
      // its thread is not getting to run (starved, or the process was paused).
      t.seen_running = true;
    } else if (sys->nr >= 0) {
      const std::string name = platform::SyscallName(sys->nr);
      ++t.syscalls[name];
      t.last_syscall = name;
      int fd = -1;
      if (platform::SyscallTakesFd(sys->nr)) {
        fd = static_cast<int>(sys->args[0]);
      } else if (name == "poll" || name == "ppoll") {
        fd = FirstPollFd(sys->args[0]);
      }
      if (fd >= 0)
        t.fd_target = platform::DescribeFd(tid, fd);
      else if (name == "futex")
        t.fd_target = "";
    }
  }
  // Stacks are taken on the watchdog only (the unwinder's files are in its file table); the last
  // look at detach runs on the host's thread.
  with_stack = with_stack && t_watchdog_table;
  if (with_stack && sampling_ != SamplingMode::kOff &&
      !unwinder_ok_.load(std::memory_order_acquire) && t.sampling_note.empty()) {
    t.sampling_note = "stack unwinder still warming up";
  }
  if (with_stack && sampling_ != SamplingMode::kOff &&
      unwinder_ok_.load(std::memory_order_acquire)) {
    if (!t.budget_checked) {
      // The budget goes by stack signature, so the first stack of the stall decides: take it,
      // then see whether this loop has seen the same stack before.
      if (t.stack_attempts < kMaxStackAttemptsPerStall) {
        TakeStack(c, t, sys ? &*sys : nullptr, recent_cpu);
      }
      if (!t.stacks.empty()) {
        t.budget_checked = true;
        DecideStackBudget(c, t, now);
      }
    } else if (t.stacks_allowed && t.stack_attempts < kMaxStackAttemptsPerStall) {
      TakeStack(c, t, sys ? &*sys : nullptr, recent_cpu);
    }
  }
  t.last_look_mono_ns = now;
  t.last_look_cpu_ns = cpu_now;
  t.last_look_run_delay_ns = rd_now;
  if (t.reported) {
    StallFinding f = BuildFinding(c, t, now, true, now);
    {
      std::lock_guard<std::mutex> lock(c.snap_mu);
      c.ongoing = f;
    }
    PublishSnapshot(c);
    c.emitted_finding = true;
    reporter_->Submit(std::move(f));
  }
}

void Runtime::TakeStack(LoopContext& c, StallTrack& t, const platform::SyscallInfo* sys,
                        double recent_cpu) {
  const pid_t tid = c.state.tid.load(std::memory_order_acquire);
  std::vector<agent::internal::RawFrame> frames;
  std::string method;
  const bool running = sys == nullptr || sys->running;
  if (running || sampling_ == SamplingMode::kSignalAll) {
    const bool can_signal =
        serving_ ? remote_signal_ > 0 && !c.state.handler_lost.load(std::memory_order_acquire)
                 : sampler_.available();
    if (!can_signal && serving_ && remote_signal_ > 0 && t.sampling_note.empty()) {
      t.sampling_note =
          "running-thread stacks unavailable: the host installed its own handler "
          "for signal " +
          std::to_string(remote_signal_) +
          " after the agent; set STALLWATCH_SIGNAL to a free signal";
    }
    if (!can_signal) {
      if (t.sampling_note.empty()) t.sampling_note = sampling_status_;
      return;
    }
    if (sampling_ != SamplingMode::kSignalAll) {
      // Signal only a thread that is burning CPU right now: one that is about to enter (or has
      // just left) a syscall could be inside it when the signal lands, and sleeps, poll and
      // epoll_wait would return EINTR. A thread queued for a CPU is left alone too.
      if (recent_cpu >= 0 && recent_cpu < 0.5) return;
      auto again = platform::ReadThreadSyscall(tid);
      if (!again || !again->running) return;
    }
    ++t.stack_attempts;
    RawSample& raw = c.state.sample;
    const int64_t capture_start = MonotonicNanos();
    Status st = serving_ ? platform::CaptureRemote(platform::TargetPid(), tid, remote_signal_,
                                                   c.state.handler_lost, &raw, kSignalTimeout)
                         : sampler_.Capture(tid, &raw, kSignalTimeout);
    intended_sleep_ns_ += MonotonicNanos() - capture_start;
    if (!st.ok()) {
      ++t.samples_failed;
      if (st.code() == StatusCode::kFailedPrecondition) {
        // The host took the signal over (for good) or blocks it in this thread (for now): no
        // signal was sent; blocked-thread (/proc) stacks go on.
        t.sampling_note = "running-thread stacks unavailable: " + st.message();
        const bool gone = serving_ ? c.state.handler_lost.load() : !sampler_.available();
        if (gone && sampling_status_.rfind("running-thread", 0) != 0) {
          sampling_status_ = t.sampling_note;
          try {
            Log().warn("{}", sampling_status_);
          } catch (...) {
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
    auto after = platform::ReadThreadSyscall(tid);
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
  ++c.stack_samples_total;
  std::vector<uint64_t> key;
  key.reserve(frames.size());
  for (const auto& f : frames) key.push_back(f.pc);
  auto& agg = t.stacks[key];
  if (agg.count == 0) {
    agg.frames = std::move(frames);
    agg.method = method;
  }
  ++agg.count;
}

StallFinding Runtime::BuildFinding(LoopContext& c, const StallTrack& t, int64_t end_mono,
                                   bool ongoing, int64_t now) {
  StallFinding f;
  f.service = service_;
  f.pid = platform::TargetPid();
  {
    std::lock_guard<std::mutex> lock(c.snap_mu);
    f.loop = c.name;
  }
  f.stall_id = t.id;
  f.start_ns = t.start_mono_ns + mono_to_real_ns_;
  f.duration_s = static_cast<double>(end_mono - t.start_mono_ns) / 1e9;
  f.ongoing = ongoing;
  f.estimated = t.estimated;
  agent::internal::ClassifierInput in;
  // Ratios over the stall itself: after its end the thread waits (no CPU, no run-queue wait),
  // so CPU read a little later still belongs to the stall, but wall time would not.
  in.wall_ns = std::min(now, end_mono) - t.base_mono_ns;
  const int64_t cpu = LoopCpu(c);
  in.cpu_ns = (cpu >= 0 && t.base_cpu_ns >= 0) ? cpu - t.base_cpu_ns : -1;
  const pid_t tid = c.state.tid.load(std::memory_order_acquire);
  const int64_t rd = tid != 0 ? RunDelay(tid) : -1;
  in.run_delay_ns = (rd >= 0 && t.base_run_delay_ns >= 0) ? rd - t.base_run_delay_ns : -1;
  in.suspended_ns = SuspendedOverlap(t.start_mono_ns, std::max(end_mono, now));
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
  for (const auto& [k, a] : t.stacks) aggs.push_back(&a);
  std::stable_sort(aggs.begin(), aggs.end(),
                   [](const auto* a, const auto* b) { return a->count > b->count; });
  // A repeated stack over the budget: its samples are counted, its frames are not re-sent (the
  // sampling note names the stall that has them).
  if (t.budget_checked && !t.stacks_allowed) aggs.clear();
  for (const auto* a : aggs) {
    Stack st;
    st.samples = a->count;
    st.method = a->method;
    for (const auto& rf : a->frames) {
      Frame fr = unwinder_.Symbolize(rf);
      // The agent's own frames (its wrappers of the dispatch functions) say nothing about the
      // host: leave them out.
      if (agent::internal::Unwinder::IsOwnModule(fr.module)) continue;
      st.frames.push_back(std::move(fr));
    }
    f.stacks.push_back(std::move(st));
  }
  // The stacks' functions are evidence for the hint (getaddrinfo under a poll: DNS).
  for (const Stack& st : f.stacks) {
    for (const Frame& fr : st.frames) in.functions.push_back(fr.function);
  }
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
  f.reports_suppressed = c.reports_suppressed_total;
  f.sampling_note = t.sampling_note;
  if (f.stacks.empty() && f.sampling_note.empty()) {
    if (sampling_ == SamplingMode::kOff)
      f.sampling_note = "sampling off";
    else if (!t.reported || t.stack_attempts == 0)
      f.sampling_note = "stall ended before a sample";
  }
  return f;
}

void Runtime::CloseStall(LoopContext& c, int64_t end_mono, bool estimated, int64_t now) {
  StallTrack& t = *c.track;
  t.estimated = t.estimated || estimated;
  StallFinding f = BuildFinding(c, t, end_mono, false, now);
  ++c.stalls_total;
  {
    std::lock_guard<std::mutex> lock(c.snap_mu);
    c.ongoing.reset();
    c.recent.push_back(f);
    if (c.recent.size() > kRecentStalls) c.recent.pop_front();
  }
  PublishSnapshot(c);
  c.emitted_finding = true;
  reporter_->Submit(std::move(f));
  c.track.reset();
}

void Runtime::EmitWindow(LoopContext& c, int64_t now) {
  auto& s = c.state;
  HistogramCounts delay, iter;
  s.delay_hist.Snapshot(&delay);
  s.iteration_hist.Snapshot(&iter);
  HistogramCounts wd = delay.Minus(c.prev_delay);
  HistogramCounts wi = iter.Minus(c.prev_iter);
  wd.set_max_ns(s.delay_hist.TakeWindowMax());
  wi.set_max_ns(s.iteration_hist.TakeWindowMax());
  c.max_delay_ever_ns = std::max<uint64_t>(c.max_delay_ever_ns, wd.max_ns());
  c.prev_delay = std::move(delay);
  c.prev_iter = std::move(iter);

  DelayFinding d;
  d.service = service_;
  d.pid = platform::TargetPid();
  {
    std::lock_guard<std::mutex> lock(c.snap_mu);
    d.loop = c.name;
  }
  d.end_ns = now + mono_to_real_ns_;
  const int64_t span = std::max<int64_t>(now - c.window_start_ns, 1);
  d.window_s = static_cast<double>(span) / 1e9;
  d.count = wd.total();
  d.p50_s = wd.ValueAtQuantile(0.5) / 1e9;
  d.p90_s = wd.ValueAtQuantile(0.9) / 1e9;
  d.p99_s = wd.ValueAtQuantile(0.99) / 1e9;
  d.p999_s = wd.ValueAtQuantile(0.999) / 1e9;
  d.max_s = wd.max_ns() / 1e9;
  d.sum_s = wd.sum_ns() / 1e9;
  const bool boundaries = s.boundaries_seen.load(std::memory_order_acquire);
  d.boundary_source = agent::internal::BoundarySource(s);
  if (boundaries) {
    const int64_t since = s.busy_since_ns.load(std::memory_order_acquire);
    const int64_t busy = s.busy_total_ns.load(std::memory_order_relaxed) +
                         (since > 0 && since < now ? now - since : 0);
    d.utilization = std::clamp(static_cast<double>(busy - c.prev_busy_ns) / span, 0.0, 1.0);
    c.prev_busy_ns = busy;
  } else {
    const int64_t est = s.probe_busy_est_ns.load(std::memory_order_relaxed);
    d.utilization = std::clamp(static_cast<double>(est - c.prev_probe_busy_ns) / span, 0.0, 1.0);
    d.utilization_estimated = true;
    c.prev_probe_busy_ns = est;
  }
  const uint64_t iterations = s.iterations.load(std::memory_order_relaxed);
  d.iterations = iterations - c.prev_iterations;
  c.prev_iterations = iterations;
  d.iteration_sum_s = wi.sum_ns() / 1e9;
  d.delay_buckets = wd.ToSparse();
  d.iteration_buckets = wi.ToSparse();
  d.stalls_total = c.stalls_total;
  d.stack_samples_total = c.stack_samples_total;
  d.reports_suppressed_total = c.reports_suppressed_total;
  d.findings_dropped_total = reporter_->dropped();
  c.window_start_ns = now;
  {
    std::lock_guard<std::mutex> lock(c.snap_mu);
    c.last_window = d;
  }
  PublishSnapshot(c);
  c.emitted_finding = true;
  reporter_->Submit(std::move(d));
}

}  // namespace stallwatch::internal
